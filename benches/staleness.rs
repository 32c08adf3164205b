//! Staleness under a slow reader: 10 keys, each published at 10 kHz, to an
//! in-process server that reads 60 messages/s. The age of each value the
//! server reads (its receive time minus the event's `ts`) is recorded per
//! second, for:
//!
//! * vuer-client, keyed (latest value wins), pacing on (the default);
//! * vuer-client, keyed, pacing off (the coalescing ring alone);
//! * vuer-client, reliable (no coalescing), pacing on;
//! * tokio-tungstenite + rmp-serde sending every event (`send` per event).
//!
//! ```text
//! cargo bench --bench staleness             # 20 s per case
//! cargo bench --bench staleness -- --quick  # 3 s per case
//! ```
//!
//! Prints p50/p99 per second and the process RSS growth, and writes
//! `target/bench-results/staleness.json` for the plots.

mod common;

use vuer_client_testkit::proxy;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use futures_util::SinkExt;
use serde::Serialize;
use tokio_tungstenite::tungstenite::Message;
use vuer_client::{DynEvent, Pacing, Value, VuerClient};
use vuer_client_testkit::server::{EventHook, LocalServer, Received, ServerOptions};

type Ages = Arc<Mutex<Vec<(f64, f64)>>>;
/// A case to run: its name and a function returning (time, age) samples.
type Case<'a> = (&'static str, Box<dyn Fn() -> Vec<(f64, f64)> + 'a>);

const KEYS: usize = 10;
const PER_KEY_HZ: u64 = 10_000;

/// The peer a case talks to: a server reading 60 messages/s, or a fast
/// server behind a 20 kB/s link.
#[derive(Clone, Copy, PartialEq)]
enum Peer {
    SlowReader,
    SlowLink,
}

/// Starts the peer; returns the server (to keep) and the URI to connect to.
async fn peer(kind: Peer, ages: Ages, t0: Instant) -> (LocalServer, Option<proxy::Proxy>, String) {
    match kind {
        Peer::SlowReader => {
            let s = slow_server(Some(60.0), ages, t0).await;
            let uri = s.uri();
            (s, None, uri)
        }
        Peer::SlowLink => {
            let s = slow_server(None, ages, t0).await;
            let p = proxy::Proxy::start_with(
                s.addr(),
                proxy::ProxyOptions {
                    socket_buffer: Some(16 << 10),
                    up_bandwidth: Some(20_000),
                    down_bandwidth: None,
                },
            )
            .await
            .unwrap();
            let uri = p.uri();
            (s, Some(p), uri)
        }
    }
}

async fn slow_server(rate: Option<f64>, ages: Ages, t0: Instant) -> LocalServer {
    let hook: EventHook = Arc::new(move |r: &Received| {
        if r.event.etype() == "POSE" {
            let age = (r.at_unix_ns / 1_000_000) as f64 - r.event.ts().unwrap_or(0) as f64;
            ages.lock().unwrap().push((t0.elapsed().as_secs_f64(), age));
        }
    });
    let s = LocalServer::start(ServerOptions {
        scene_on_init: false,
        on_event: Some(hook),
        ..Default::default()
    })
    .await
    .unwrap();
    s.set_read_rate(rate);
    s
}

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

/// Paces a loop at `PER_KEY_HZ` rounds per second for `secs`.
fn rounds(secs: u64, mut f: impl FnMut(u64)) {
    let start = Instant::now();
    let mut i = 0u64;
    while start.elapsed() < Duration::from_secs(secs) {
        f(i);
        i += 1;
        let next = start + Duration::from_nanos(1_000_000_000 / PER_KEY_HZ * i);
        while Instant::now() < next {
            std::thread::yield_now();
        }
    }
}

async fn ours(kind: Peer, secs: u64, keyed: bool, pacing: Option<Pacing>) -> Vec<(f64, f64)> {
    let ages: Ages = Arc::default();
    let t0 = Instant::now();
    let (server, _proxy, uri) = peer(kind, ages.clone(), t0).await;
    let client = VuerClient::builder()
        .uri(uri)
        .pacing(pacing)
        .connect()
        .await
        .unwrap();
    let p = client.publisher();
    tokio::task::spawn_blocking(move || {
        let keys: Vec<String> = (0..KEYS).map(|k| format!("joint/{k}")).collect();
        rounds(secs, |i| {
            for k in &keys {
                let mut ev = DynEvent::new("POSE")
                    .key(k.as_str())
                    .value(Value::from([i as f32, 0.5, 0.0]))
                    .latest();
                if !keyed {
                    ev = ev.reliable();
                }
                let _ = p.publish(&ev); // reliable events past the bound are refused (counted)
            }
        })
    })
    .await
    .unwrap();
    let s = client.stats();
    println!(
        "  published {} sent {} coalesced {} rejected {} holds {} queue {} events",
        s.published, s.sent, s.coalesced, s.rejected, s.pacing_holds, s.queue_depth
    );
    drop(client);
    server.shutdown();
    let v = ages.lock().unwrap().clone();
    v
}

#[derive(Serialize)]
struct Env {
    ts: u64,
    etype: &'static str,
    key: String,
    value: [f32; 3],
}

async fn baseline(kind: Peer, secs: u64) -> Vec<(f64, f64)> {
    let ages: Ages = Arc::default();
    let t0 = Instant::now();
    let (server, _proxy, uri) = peer(kind, ages.clone(), t0).await;
    let mut ws = baseline_connect(&uri).await;
    let start = Instant::now();
    let mut i = 0u64;
    // The same schedule; `send` waits when the socket is full, so the
    // producer falls behind instead of growing memory without bound.
    while start.elapsed() < Duration::from_secs(secs) {
        for k in 0..KEYS {
            let env = Env {
                ts: now_ms(),
                etype: "POSE",
                key: format!("joint/{k}"),
                value: [i as f32, 0.5, 0.0],
            };
            let msg = Message::Binary(rmp_serde::to_vec_named(&env).unwrap().into());
            let _ = tokio::time::timeout(Duration::from_secs(1), ws.send(msg)).await;
        }
        i += 1;
        let next = start + Duration::from_nanos(1_000_000_000 / PER_KEY_HZ * i);
        let now = Instant::now();
        if next > now {
            tokio::time::sleep(next - now).await;
        }
    }
    drop(ws);
    server.shutdown();
    let v = ages.lock().unwrap().clone();
    v
}

fn per_second(ages: &[(f64, f64)], secs: u64) -> Vec<(u64, f64, f64)> {
    (0..secs)
        .filter_map(|w| {
            let mut v: Vec<f64> = ages
                .iter()
                .filter(|a| a.0 >= w as f64 && a.0 < (w + 1) as f64)
                .map(|a| a.1)
                .collect();
            if v.is_empty() {
                return None;
            }
            v.sort_by(|a, b| a.partial_cmp(b).unwrap());
            Some((w, v[v.len() / 2], v[(v.len() * 99 / 100).min(v.len() - 1)]))
        })
        .collect()
}

fn leak(s: String) -> &'static str {
    Box::leak(s.into_boxed_str())
}

fn main() {
    let quick = smoke_run();
    let secs = if quick { 3 } else { 20 };
    let rt = runtime();
    let mut out = Vec::new();
    let mut cases: Vec<Case> = Vec::new();
    for (kind, peer_name) in [
        (Peer::SlowReader, "60 msg/s reader"),
        (Peer::SlowLink, "20 kB/s link"),
    ] {
        let rt = &rt;
        cases.push((
            leak(format!("{peer_name}: vuer-client keyed, pacing on")),
            Box::new(move || rt.block_on(ours(kind, secs, true, Some(Pacing::default())))),
        ));
        cases.push((
            leak(format!("{peer_name}: vuer-client keyed, pacing off")),
            Box::new(move || rt.block_on(ours(kind, secs, true, None))),
        ));
        cases.push((
            leak(format!("{peer_name}: vuer-client reliable, pacing on")),
            Box::new(move || rt.block_on(ours(kind, secs, false, Some(Pacing::default())))),
        ));
        cases.push((
            leak(format!("{peer_name}: tokio-tungstenite (every event)")),
            Box::new(move || rt.block_on(baseline(kind, secs))),
        ));
    }
    for (name, run) in &cases {
        // The peer is named at the start of the case's name.
        println!("{name}: {KEYS} keys x {PER_KEY_HZ} Hz for {secs} s");
        let rss0 = rss_kib();
        let ages = run();
        let rss1 = rss_kib();
        let series = per_second(&ages, secs);
        for (w, p50, p99) in &series {
            println!("  t={w:>2}s  p50 {p50:>7.0} ms  p99 {p99:>7.0} ms");
        }
        println!("  RSS {rss0} KiB -> {rss1} KiB");
        let pts: Vec<String> = series
            .iter()
            .map(|(w, p50, p99)| format!("[{w},{p50:.1},{p99:.1}]"))
            .collect();
        out.push(format!(
            "{{\"case\":\"{name}\",\"rss_before_kib\":{rss0},\"rss_after_kib\":{rss1},\"per_second\":[{}]}}",
            pts.join(",")
        ));
    }
    write_result("staleness.json", &format!("[{}]", out.join(",")));
}
