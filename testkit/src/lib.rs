//! Test kit for [`vuer_client`]: what its own tests, benches and CLI use
//! to exercise a client, and what your tests can use too.
//!
//! * [`server::LocalServer`]: a Vuer-compatible websocket server in
//!   process, on port 0: answers INIT with a scene, records what it
//!   receives (or only counts frames), answers RPCs, and can pause reading,
//!   drop pongs, close with a code, or stop, to put a client under the
//!   conditions a real server creates.
//! * [`proxy::Proxy`]: a TCP proxy that injects faults (stalls, black
//!   holes, cuts, bandwidth limits) between a client and a server.
//! * [`checker::Checker`]: a strict sink that checks every frame's form and
//!   every payload byte of the stress test's events.
//! * [`PyServer`]: the real Python `vuer` server (0.1.6, in a virtualenv
//!   created on first use) on a free port.
//! * Helpers: [`bounded`] (a test that cannot hang), [`quiet_server`],
//!   [`self_signed_tls`], [`check_identity`] (the stats' accounting
//!   identity), [`rss_bytes`].
//!
//! ```
//! use std::time::Duration;
//! use vuer_client::{DynEvent, VuerClient};
//! use vuer_client_testkit::{bounded, server::{LocalServer, ServerOptions}};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! bounded(10, async {
//!     let server = LocalServer::start(ServerOptions::default()).await.unwrap();
//!     let client = VuerClient::connect(&server.uri()).await.unwrap();
//!     client.send(&DynEvent::new("SET_POSITION").value([0.0f32, 1.0, 0.0])).await.unwrap();
//!     client.flush().await.unwrap();
//!     assert!(
//!         server
//!             .wait_until(|s| s.events >= 2, Duration::from_secs(5))
//!             .await,
//!         "INIT and the position"
//!     );
//!     let got = server.received();
//!     assert_eq!(got.last().unwrap().event.etype(), "SET_POSITION");
//!     client.close().await.unwrap();
//! })
//! .await;
//! # }
//! ```
#![allow(dead_code)]

pub mod checker;
pub mod proxy;
pub mod server;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

use serde_json::Value as Json;
use tokio::sync::mpsc;

use crate::server::{LocalServer, ServerOptions};

/// The accounting identity every client's stats keep: each event offered
/// is sent, coalesced, expired, rejected, dropped, or still pending.
pub fn check_identity(s: &vuer_client::Stats) {
    assert_eq!(
        s.published,
        s.sent + s.coalesced + s.expired + s.rejected + s.dropped + s.pending,
        "published != sent + coalesced + expired + rejected + dropped + pending: {s:#?}"
    );
}

/// This process's resident memory (`VmRSS` of `/proc/self/status`), bytes;
/// 0 where there is no `/proc`.
pub fn rss_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
        })
        .unwrap_or(0)
        * 1024
}

/// An example of the workspace root package, built by `cargo test` next
/// to the running test binary (`target/<profile>/examples/<name>`).
pub fn example_binary(name: &str) -> PathBuf {
    // Test binaries run from target/<profile>/deps.
    let exe = std::env::current_exe().unwrap();
    let path = exe
        .parent()
        .and_then(Path::parent)
        .unwrap()
        .join("examples")
        .join(name);
    assert!(
        path.exists(),
        "{} not built (cargo test builds the examples)",
        path.display()
    );
    path
}

/// The vuer version the interop tests run against.
pub const VUER_VERSION: &str = "0.1.6";

/// The repository (the workspace root: `.venv` and `tests/py` live there).
pub fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the test kit lives in the workspace")
}

/// Runs `fut` with a deadline, failing the test if it passes.
pub async fn bounded<F: std::future::Future>(secs: u64, fut: F) -> F::Output {
    tokio::time::timeout(Duration::from_secs(secs), fut)
        .await
        .unwrap_or_else(|_| panic!("test did not finish within {secs} s"))
}

/// An in-process server on port 0 that does not answer INIT with a scene,
/// so only the test's own events reach the client, recording what it gets.
pub async fn quiet_server() -> LocalServer {
    LocalServer::start(ServerOptions {
        scene_on_init: false,
        ..Default::default()
    })
    .await
    .unwrap()
}

/// A free TCP port on 127.0.0.1 (bound, then released).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn has_vuer(python: &Path) -> bool {
    Command::new(python)
        .args(["-c", &format!("import vuer, importlib.metadata as m; assert m.version('vuer') == '{VUER_VERSION}'")])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

/// The Python with vuer 0.1.6: `VUER_PYTHON`, else `.venv/bin/python`,
/// created (`python3 -m venv .venv; pip install vuer==0.1.6`) when missing.
/// A file lock keeps concurrent test binaries from racing.
pub fn python() -> PathBuf {
    static PY: OnceLock<PathBuf> = OnceLock::new();
    PY.get_or_init(|| {
        if let Ok(p) = std::env::var("VUER_PYTHON") {
            let p = PathBuf::from(p);
            assert!(
                has_vuer(&p),
                "VUER_PYTHON={} has no vuer {VUER_VERSION}",
                p.display()
            );
            return p;
        }
        let venv = repo().join(".venv");
        let py = venv.join("bin/python");
        if has_vuer(&py) {
            return py;
        }
        let lock_path = repo().join("target/.venv.lock");
        std::fs::create_dir_all(lock_path.parent().unwrap()).unwrap();
        let lock = std::fs::File::create(&lock_path).unwrap();
        use std::os::fd::AsRawFd;
        // SAFETY: flock on a file we own; released when `lock` is dropped.
        assert_eq!(
            unsafe { libc_flock(lock.as_raw_fd()) },
            0,
            "cannot lock {}",
            lock_path.display()
        );
        if !has_vuer(&py) {
            eprintln!(
                "creating {} with vuer=={VUER_VERSION} (first run only)",
                venv.display()
            );
            let ok = Command::new("python3")
                .args(["-m", "venv"])
                .arg(&venv)
                .status()
                .map(|s| s.success())
                .unwrap_or(false);
            assert!(ok, "python3 -m venv failed: is Python 3 installed?");
            let ok = Command::new(venv.join("bin/pip"))
                .args(["install", "--quiet", &format!("vuer=={VUER_VERSION}")])
                .status()
                .map(|s| s.success())
                .unwrap_or(false);
            assert!(ok, "pip install vuer=={VUER_VERSION} failed");
            assert!(has_vuer(&py));
        }
        drop(lock);
        py
    })
    .clone()
}

extern "C" {
    fn flock(fd: i32, op: i32) -> i32;
}
unsafe fn libc_flock(fd: i32) -> i32 {
    const LOCK_EX: i32 = 2;
    flock(fd, LOCK_EX)
}

/// One test at a time talks to a Python server: each open vuer session
/// keeps a CPU core busy (its uplink loop polls), and there are two.
pub async fn python_lock() -> tokio::sync::MutexGuard<'static, ()> {
    static LOCK: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
    LOCK.lock().await
}

/// A running Python process that prints JSON lines (tests/py/vuer_app.py).
pub struct PyServer {
    child: Child,
    pub port: u16,
    lines: mpsc::UnboundedReceiver<Json>,
    pub seen: Vec<Json>,
}

impl PyServer {
    /// Starts `tests/py/vuer_app.py PORT MODE ETYPES...` on a free port.
    pub async fn start(mode: &str, etypes: &[&str]) -> PyServer {
        Self::start_on(free_port(), mode, etypes).await
    }

    pub async fn start_on(port: u16, mode: &str, etypes: &[&str]) -> PyServer {
        let script = repo().join("tests/py/vuer_app.py");
        let mut args = vec![port.to_string(), mode.to_owned()];
        args.extend(etypes.iter().map(|s| s.to_string()));
        Self::run_script(&script, &args, &[], port).await
    }

    /// Runs a vuer script through `tests/py/ready.py`, which announces
    /// `{"kind": "ready"}` once the server is bound; every stdout line is
    /// then available as JSON (or as a string when it is not JSON).
    pub async fn run_script(
        script: &Path,
        args: &[String],
        env: &[(&str, String)],
        port: u16,
    ) -> PyServer {
        let mut cmd = Command::new(python());
        cmd.arg(repo().join("tests/py/ready.py"))
            .arg(script)
            .args(args);
        for (k, v) in env {
            cmd.env(k, v);
        }
        Self::spawn(cmd, port).await
    }

    /// The repository's `examples/server.py` (the remote-control example)
    /// on a free port of 127.0.0.1 (`VUER_PORT`, `VUER_HOST`); the port is
    /// [`PyServer::port`].
    pub async fn example_server() -> PyServer {
        let port = free_port();
        let env = [
            ("VUER_PORT", port.to_string()),
            ("VUER_HOST", "127.0.0.1".to_owned()),
        ];
        Self::run_script(&repo().join("examples/server.py"), &[], &env, port).await
    }

    /// Runs a script of `tests/py` that prints `{"kind": "ready"}` itself
    /// once it listens (not a vuer app), with `port` as its first argument.
    pub async fn run_plain(script: &str, args: &[&str], port: u16) -> PyServer {
        let mut cmd = Command::new(python());
        cmd.arg(repo().join("tests/py").join(script))
            .arg(port.to_string())
            .args(args);
        Self::spawn(cmd, port).await
    }

    async fn spawn(mut cmd: Command, port: u16) -> PyServer {
        cmd.stdout(Stdio::piped())
            .stderr(Stdio::null())
            .stdin(Stdio::null());
        cmd.env("PYTHONUNBUFFERED", "1");
        let mut child = cmd.spawn().expect("spawn python");
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::unbounded_channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                let v = serde_json::from_str(&line).unwrap_or(Json::String(line));
                if tx.send(v).is_err() {
                    break;
                }
            }
        });
        let mut s = PyServer {
            child,
            port,
            lines: rx,
            seen: Vec::new(),
        };
        s.expect(|v| v["kind"] == "ready", Duration::from_secs(60))
            .await;
        s
    }

    pub fn uri(&self) -> String {
        format!("ws://127.0.0.1:{}", self.port)
    }

    /// The next line, waiting at most `timeout`.
    pub async fn next(&mut self, timeout: Duration) -> Option<Json> {
        let v = tokio::time::timeout(timeout, self.lines.recv())
            .await
            .ok()
            .flatten()?;
        self.seen.push(v.clone());
        Some(v)
    }

    /// Waits for a line matching `pred`; panics (with what was seen) on timeout.
    pub async fn expect(&mut self, pred: impl Fn(&Json) -> bool, timeout: Duration) -> Json {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match self.next(left).await {
                Some(v) if pred(&v) => return v,
                Some(_) => continue,
                None => panic!(
                    "expected line not seen within {timeout:?}; seen: {:#?}",
                    self.seen
                ),
            }
        }
    }

    /// Collects `n` lines matching `pred`.
    pub async fn collect(
        &mut self,
        n: usize,
        pred: impl Fn(&Json) -> bool,
        timeout: Duration,
    ) -> Vec<Json> {
        let mut out = Vec::new();
        let deadline = tokio::time::Instant::now() + timeout;
        while out.len() < n {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match self.next(left).await {
                Some(v) if pred(&v) => out.push(v),
                Some(_) => {}
                None => panic!("got {} of {n} lines within {timeout:?}", out.len()),
            }
        }
        out
    }

    /// Kills the process (as a crash would: no close frames).
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for PyServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A TLS server configuration with a fresh self-signed certificate for
/// `localhost`, and that certificate (DER) for a client to trust.
pub fn self_signed_tls() -> (std::sync::Arc<rustls::ServerConfig>, Vec<u8>) {
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    let der = cert.cert.der().to_vec();
    let config = tls_server_config(&der, &cert.signing_key.serialize_der());
    (config, der)
}

/// A TLS server configuration showing one certificate (DER) with its
/// private key (PKCS#8 DER).
pub fn tls_server_config(cert_der: &[u8], key_der: &[u8]) -> std::sync::Arc<rustls::ServerConfig> {
    let key = rustls::pki_types::PrivateKeyDer::try_from(key_der.to_vec()).unwrap();
    let config = rustls::ServerConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(vec![cert_der.to_vec().into()], key)
    .unwrap();
    std::sync::Arc::new(config)
}

/// Completes a websocket upgrade by hand on the server side: reads the
/// request, answers `101` with the right `Sec-WebSocket-Accept`.
pub async fn accept_upgrade<R, W>(r: &mut R, w: &mut W) -> Result<(), String>
where
    R: tokio::io::AsyncRead + Unpin,
    W: tokio::io::AsyncWrite + Unpin,
{
    use base64::Engine;
    use sha1::Digest;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let b = r.read_u8().await.map_err(|e| format!("handshake: {e}"))?;
        head.push(b);
        if head.len() > 16 << 10 {
            return Err("handshake too long".into());
        }
    }
    let text = String::from_utf8_lossy(&head).into_owned();
    let key = text
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.trim()
                .eq_ignore_ascii_case("sec-websocket-key")
                .then(|| v.trim().to_owned())
        })
        .ok_or("no Sec-WebSocket-Key")?;
    let mut h = sha1::Sha1::new();
    h.update(key.as_bytes());
    h.update(b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11");
    let accept = base64::engine::general_purpose::STANDARD.encode(h.finalize());
    let resp = format!(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {accept}\r\n\r\n"
    );
    w.write_all(resp.as_bytes())
        .await
        .map_err(|e| e.to_string())?;
    w.flush().await.map_err(|e| e.to_string())
}

/// Listens on 127.0.0.1; `accept` completes one websocket upgrade by hand
/// and hands over the socket, for tests that write and read bytes as they
/// want.
pub struct RawPeer {
    pub listener: tokio::net::TcpListener,
}

impl RawPeer {
    pub async fn bind() -> RawPeer {
        RawPeer {
            listener: tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap(),
        }
    }

    pub fn uri(&self) -> String {
        format!("ws://{}", self.listener.local_addr().unwrap())
    }

    pub async fn accept(&self) -> tokio::net::TcpStream {
        let (mut s, _) = self.listener.accept().await.unwrap();
        let (mut r, mut w) = s.split();
        accept_upgrade(&mut r, &mut w).await.unwrap();
        s
    }
}
