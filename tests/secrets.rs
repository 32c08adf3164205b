//! Secrets: credentials in the URI or in headers reach no log, error or
//! `Debug` output, and a connection that does not authenticate its server
//! says so in the log. Every log line of this binary is captured (one
//! global subscriber at TRACE level: the client's tasks log from the
//! runtime's threads), which is why these tests have a binary of their own.

use vuer_client_testkit as common;

use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use common::bounded;
use vuer_client::{ConnectError, DynEvent, VuerClient};

/// Everything logged by this test binary, at every level (one global
/// subscriber: the client's tasks log from the runtime's threads).
fn logs() -> Arc<Mutex<Vec<u8>>> {
    static LOGS: OnceLock<Arc<Mutex<Vec<u8>>>> = OnceLock::new();
    LOGS.get_or_init(|| {
        let buf = Arc::new(Mutex::new(Vec::new()));
        let w = buf.clone();
        tracing_subscriber::fmt()
            .with_writer(move || Captured(w.clone()))
            .with_max_level(tracing::Level::TRACE)
            .with_ansi(false)
            .init();
        buf
    })
    .clone()
}

struct Captured(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

const SECRETS: [&str; 4] = ["hunter2", "s3cr3t", "t0ken", "robot:"];

#[track_caller]
fn assert_no_secret(what: &str, text: &str) {
    for s in SECRETS {
        assert!(!text.contains(s), "{what} shows {s:?}: {text}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uri_credentials_and_tokens_reach_no_log_error_or_debug_output() {
    // Issue 14, item 6: `ws://user:pass@host/?token=...` was accepted, the
    // credentials silently unused, and the whole URI appeared in INFO logs,
    // every ConnectError, the Debug of VuerClient and Publisher.
    let logs = logs();
    bounded(60, async {
        // A user name and password: refused, without echoing them.
        let err = VuerClient::connect("ws://robot:hunter2@127.0.0.1:9/")
            .await
            .unwrap_err();
        assert!(matches!(err, ConnectError::InvalidUri { .. }), "{err:?}");
        assert!(err.to_string().contains("user name or password"), "{err}");
        assert_no_secret("the error", &format!("{err} {err:?}"));

        // A token in the query, to a server that is not there.
        let port = common::free_port();
        let err = VuerClient::connect(&format!("ws://127.0.0.1:{port}/ws?token=s3cr3t"))
            .await
            .unwrap_err();
        assert!(matches!(err, ConnectError::Refused { .. }), "{err:?}");
        assert!(err.to_string().contains("?<redacted>"), "{err}");
        assert_no_secret("the error", &format!("{err} {err:?}"));

        // And to one that is: the query and a header reach the server (the
        // client uses them), but nothing shows them.
        let server = common::quiet_server().await;
        let builder = VuerClient::builder()
            .uri(format!(
                "{}/?token=s3cr3t",
                server.uri().trim_end_matches('/')
            ))
            .header("Authorization", "Bearer t0ken");
        assert_no_secret("the builder's Debug", &format!("{builder:?}"));
        let client = builder.connect().await.unwrap();
        client.publish(&DynEvent::new("HELLO")).unwrap();
        let publisher = client.publisher();
        assert_no_secret("the client's Debug", &format!("{client:?}"));
        assert_no_secret("the publisher's Debug", &format!("{publisher:?}"));
        assert_no_secret("uri()", client.uri());
        assert!(client.uri().ends_with("/?<redacted>"), "{}", client.uri());
        // A lost connection and its reconnect log the URI too.
        server.abort_all();
        assert!(
            server
                .wait_until(|s| s.connections >= 2, Duration::from_secs(20))
                .await
        );
        client.close().await.unwrap();
        assert_no_secret("the stats", &format!("{:?}", client.stats()));
    })
    .await;
    let text = String::from_utf8(logs.lock().unwrap().clone()).unwrap();
    assert!(text.contains("connected"), "logs were captured: {text}");
    assert_no_secret("the logs", &text);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_without_certificate_verification_is_logged() {
    // Issue 14, item 8: VUER_SSL_VERIFY=0 turned verification off with
    // nothing logged.
    let logs = logs();
    bounded(30, async {
        let (config, _) = common::self_signed_tls();
        let server = vuer_client_testkit::server::LocalServer::start(
            vuer_client_testkit::server::ServerOptions {
                tls: Some(config),
                ..Default::default()
            },
        )
        .await
        .unwrap();
        let client = VuerClient::builder()
            .uri(server.uri())
            .tls_verify(false)
            .connect()
            .await
            .unwrap();
        client.close().await.unwrap();
    })
    .await;
    let text = String::from_utf8(logs.lock().unwrap().clone()).unwrap();
    assert!(
        text.contains("WARN") && text.contains("TLS certificate verification is off"),
        "{text}"
    );
}
