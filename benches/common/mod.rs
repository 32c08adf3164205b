//! Shared pieces of the benches: the event they all send, the sink, and the
//! baseline client (tokio-tungstenite + rmp-serde, TCP_NODELAY).
#![allow(dead_code)]

use std::time::Duration;

use futures_util::SinkExt;
use serde::Serialize;
use tokio_tungstenite::tungstenite::Message;
use vuer_client::server::{LocalServer, ServerOptions};
use vuer_client::{Coalesce, Event};

/// The event of PERF_NOTES.md: `{ts, etype: "SET_POSITION", value: [f32; 3]}`,
/// 54 bytes of msgpack, 60 on the wire.
#[derive(Serialize, Clone, Copy)]
pub struct SetPosition(pub [f32; 3]);

impl Event for SetPosition {
    const ETYPE: &'static str = "SET_POSITION";
    fn coalesce(&self) -> Coalesce<'_> {
        Coalesce::Never
    }
}

/// The same event, keyed (latest value wins) per `key`.
#[derive(Serialize, Clone, Copy)]
pub struct Pose {
    #[serde(skip)]
    pub key: &'static str,
    pub p: [f32; 3],
}

impl Event for Pose {
    const ETYPE: &'static str = "POSE";
    fn key(&self) -> Option<&str> {
        Some(self.key)
    }
}

/// The envelope the baseline encodes with `rmp_serde::to_vec_named`.
#[derive(Serialize)]
pub struct Envelope {
    pub ts: u64,
    pub etype: &'static str,
    pub value: [f32; 3],
}

pub fn now_ms() -> u64 {
    vuer_client::server::now_unix_ns() / 1_000_000
}

/// The counting sink (frames counted from raw reads, payloads skipped).
pub async fn sink() -> LocalServer {
    LocalServer::start(ServerOptions {
        decode: false,
        scene_on_init: false,
        ..Default::default()
    })
    .await
    .unwrap()
}

/// Waits until the sink has counted `frames` data frames in total.
pub async fn wait_frames(server: &LocalServer, frames: u64) {
    assert!(
        server
            .wait_until(|s| s.frames >= frames, Duration::from_secs(120))
            .await,
        "sink saw {} of {frames} frames",
        server.stats().frames
    );
}

/// The baseline: a tokio-tungstenite client with TCP_NODELAY.
pub type Baseline =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

pub async fn baseline_connect(uri: &str) -> Baseline {
    let (ws, _) = tokio_tungstenite::connect_async_with_config(uri, None, true)
        .await
        .unwrap();
    ws
}

/// Sends `n` events with rmp-serde, feeding `batch` messages per flush.
pub async fn baseline_send(ws: &mut Baseline, n: u64, batch: u64) {
    for i in 0..n {
        let env = Envelope {
            ts: now_ms(),
            etype: "SET_POSITION",
            value: [i as f32, 0.5, 0.0],
        };
        let bytes = rmp_serde::to_vec_named(&env).unwrap();
        ws.feed(Message::Binary(bytes.into())).await.unwrap();
        if (i + 1) % batch == 0 {
            ws.flush().await.unwrap();
        }
    }
    ws.flush().await.unwrap();
}

/// A two-worker runtime: this machine kind has two cores, shared by the
/// producer, the client's tasks and the sink.
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

/// Writes a result file to `target/bench-results/<name>` (for the plots in
/// BENCHMARKS.md).
pub fn write_result(name: &str, contents: &str) {
    // A smoke run's tiny samples must not replace a real run's results
    // (the plots in BENCHMARKS.md are drawn from them).
    if std::env::args().any(|a| a == "--test" || a == "--quick") {
        println!("smoke run: {name} not written");
        return;
    }
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/bench-results");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join(name), contents).unwrap();
    println!("wrote {}", dir.join(name).display());
}
