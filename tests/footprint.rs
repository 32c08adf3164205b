//! Memory that hostile input can make the client take, measured as the
//! process's resident memory: this file's tests run one at a time, alone in
//! their process (other test binaries would blur the figure).

use vuer_client_testkit as common;
use vuer_client_testkit::rss_bytes;

use std::time::{Duration, Instant};

use bytes::Bytes;
use common::bounded;
use vuer_client::VuerClient;

async fn serial() -> tokio::sync::MutexGuard<'static, ()> {
    static LOCK: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
    LOCK.lock().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_declared_frame_length_costs_only_the_bytes_that_arrive() {
    // Issue 14, item 2: a header declaring 250 MiB (under the 256 MiB
    // limit) followed by 1 000 bytes cost 262 MB of resident memory: the
    // buffer was allocated from the declared length.
    let _serial = serial().await;
    bounded(30, async {
        let server = common::quiet_server().await;
        let client = VuerClient::connect(&server.uri()).await.unwrap();
        assert!(
            server
                .wait_until(|s| s.inits == 1, Duration::from_secs(5))
                .await
        );
        let before = rss_bytes();
        // An unmasked binary frame header declaring 250 MiB, then 1 000
        // bytes of it.
        let mut raw = vec![0x82, 127];
        raw.extend_from_slice(&(250u64 << 20).to_be_bytes());
        raw.extend(vec![0u8; 1000]);
        assert_eq!(server.send_raw(Bytes::from(raw)), 1);
        // The client reads what arrived and waits for the rest.
        let t = Instant::now();
        while t.elapsed() < Duration::from_millis(300) {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let grown = rss_bytes().saturating_sub(before);
        eprintln!(
            "RSS grew by {} KiB for a declared 250 MiB frame",
            grown >> 10
        );
        assert!(grown < 8 << 20, "RSS grew by {grown} bytes");
        assert!(client.is_connected());
    })
    .await;
}
