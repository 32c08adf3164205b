//! Shared pieces of the benches: the event they all send, the sink, and the
//! baseline client (tokio-tungstenite + rmp-serde, TCP_NODELAY).
#![allow(dead_code)]

use std::time::{Duration, Instant};

use futures_util::SinkExt;
use serde::Serialize;
use tokio_tungstenite::tungstenite::Message;
use vuer_client::{Coalesce, Event, PublishError, Publisher, VuerClient};
use vuer_client_testkit::server::{LocalServer, ServerOptions};

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
    vuer_client_testkit::server::now_unix_ns() / 1_000_000
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

/// A short smoke run (`cargo bench -- --test`, as CI runs, or `--quick`)
/// rather than a real measurement.
pub fn smoke_run() -> bool {
    std::env::args().any(|a| a == "--test" || a == "--quick")
}

/// Writes a result file to `target/bench-results/<name>` (for the plots in
/// BENCHMARKS.md).
pub fn write_result(name: &str, contents: &str) {
    // A smoke run's tiny samples must not replace a real run's results
    // (the plots in BENCHMARKS.md are drawn from them).
    if smoke_run() {
        println!("smoke run: {name} not written");
        return;
    }
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/bench-results");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join(name), contents).unwrap();
    println!("wrote {}", dir.join(name).display());
}

/// How the producing thread hands events over.
#[derive(Clone, Copy)]
pub enum Producer {
    /// `publish`, retrying (after a yield) when the queue is full.
    PublishRetry,
    /// `send_blocking`, parking while the queue is full.
    SendBlocking,
    /// `publish_many` with this many events per call (the counterpart of
    /// the baseline's feed 64, then flush), retrying the rest after a
    /// yield when the queue is full.
    PublishMany(usize),
}

/// Time for a plain thread to get `n` reliable events to the sink through
/// a fresh client.
pub fn from_thread(
    rt: &tokio::runtime::Runtime,
    server: &LocalServer,
    n: u64,
    how: Producer,
) -> Duration {
    from_threads(rt, server, n, how, 1)
}

/// Time for `threads` plain threads, each with its own `Publisher` handle
/// of one fresh client, to get `n` reliable events (split between them)
/// to the sink.
pub fn from_threads(
    rt: &tokio::runtime::Runtime,
    server: &LocalServer,
    n: u64,
    how: Producer,
    threads: u64,
) -> Duration {
    let base = server.stats().frames + 1; // + INIT
    let client = rt.block_on(VuerClient::connect(&server.uri())).unwrap();
    let start = Instant::now();
    let producers: Vec<_> = (0..threads)
        .map(|t| {
            let publisher = client.publisher();
            // The first thread takes the remainder.
            let count = n / threads + if t == 0 { n % threads } else { 0 };
            std::thread::spawn(move || produce(&publisher, count, how))
        })
        .collect();
    rt.block_on(wait_frames(server, base + n));
    let elapsed = start.elapsed();
    for p in producers {
        p.join().unwrap();
    }
    rt.block_on(client.close()).unwrap();
    elapsed
}

/// One producing thread's loop: `n` reliable events, handed over `how`.
fn produce(publisher: &Publisher, n: u64, how: Producer) {
    if let Producer::PublishMany(per_call) = how {
        let mut batch = Vec::with_capacity(per_call);
        let mut i = 0;
        while i < n {
            let k = (per_call as u64).min(n - i);
            batch.clear();
            batch.extend((i..i + k).map(|j| SetPosition([j as f32, 0.5, 0.0])));
            let mut done = 0;
            while let Err(e) = publisher.publish_many(&batch[done..]) {
                match e.error {
                    PublishError::Full { .. } => std::thread::yield_now(),
                    other => panic!("{other}"),
                }
                done += e.accepted;
            }
            i += k;
        }
        return;
    }
    for i in 0..n {
        let ev = SetPosition([i as f32, 0.5, 0.0]);
        match how {
            Producer::PublishRetry => loop {
                match publisher.publish(&ev) {
                    Ok(()) => break,
                    Err(PublishError::Full { .. }) => std::thread::yield_now(),
                    Err(e) => panic!("{e}"),
                }
            },
            Producer::SendBlocking => publisher.send_blocking(&ev).unwrap(),
            Producer::PublishMany(_) => unreachable!("handled above"),
        }
    }
}

/// Time for an async producer awaiting room (`send().await`) to get `n`
/// reliable events to the sink through a fresh client.
pub fn send_await(rt: &tokio::runtime::Runtime, server: &LocalServer, n: u64) -> Duration {
    rt.block_on(async {
        let base = server.stats().frames + 1; // + INIT
        let client = VuerClient::connect(&server.uri()).await.unwrap();
        let start = Instant::now();
        for i in 0..n {
            client
                .send(&SetPosition([i as f32, 0.5, 0.0]))
                .await
                .unwrap();
        }
        wait_frames(server, base + n).await;
        let elapsed = start.elapsed();
        client.close().await.unwrap();
        elapsed
    })
}

/// Time for the baseline to get `n` events to the sink, flushing every
/// `batch` events, through a fresh connection.
pub fn baseline_run(
    rt: &tokio::runtime::Runtime,
    server: &LocalServer,
    n: u64,
    batch: u64,
) -> Duration {
    rt.block_on(async {
        let mut ws = baseline_connect(&server.uri()).await;
        let base = server.stats().frames;
        let start = Instant::now();
        baseline_send(&mut ws, n, batch).await;
        wait_frames(server, base + n).await;
        let elapsed = start.elapsed();
        let _ = ws.close(None).await;
        elapsed
    })
}

/// The median (the mean of the middle two for an even count).
pub fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    let m = v.len() / 2;
    if v.len() % 2 == 1 {
        v[m]
    } else {
        (v[m - 1] + v[m]) / 2.0
    }
}
