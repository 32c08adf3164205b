//! One-way latency of a paced stream at 60 Hz, 1 kHz and 10 kHz: the time
//! from just before `publish` to the in-process server reading the frame
//! (both clocks are the same process's), against a tokio-tungstenite +
//! rmp-serde client sending the same events (one `send`, i.e. feed and
//! flush, per event: batching would only add latency at these rates).
//!
//! ```text
//! cargo bench --bench latency            # full run (about 40 s)
//! cargo bench --bench latency -- --quick # a short smoke run
//! ```
//!
//! Prints a table and writes `target/bench-results/latency.json`.

mod common;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use futures_util::SinkExt;
use hdrhistogram::Histogram;
use serde::Serialize;
use tokio_tungstenite::tungstenite::Message;
use vuer_client::{Coalesce, Event, VuerClient};
use vuer_client_testkit::server::{now_unix_ns, EventHook, LocalServer, Received, ServerOptions};

/// A pose stamped with its send time (ns since the Unix epoch).
#[derive(Serialize)]
struct Stamped {
    t: u64,
    p: [f32; 3],
}

impl Event for Stamped {
    const ETYPE: &'static str = "STAMPED";
    fn coalesce(&self) -> Coalesce<'_> {
        Coalesce::Never
    }
}

#[derive(Serialize)]
struct BaselineEnvelope {
    ts: u64,
    etype: &'static str,
    value: Stamped,
}

type Hist = Arc<Mutex<Histogram<u64>>>;

async fn stamping_server(hist: Hist) -> LocalServer {
    let hook: EventHook = Arc::new(move |r: &Received| {
        if r.event.etype() == "STAMPED" {
            if let Some(t) = r
                .event
                .data()
                .ok()
                .and_then(|d| d.get("t").and_then(|v| v.as_u64()))
            {
                let _ = hist
                    .lock()
                    .unwrap()
                    .record(r.at_unix_ns.saturating_sub(t) / 1000);
            }
        }
    });
    LocalServer::start(ServerOptions {
        scene_on_init: false,
        on_event: Some(hook),
        ..Default::default()
    })
    .await
    .unwrap()
}

fn new_hist() -> Hist {
    Arc::new(Mutex::new(
        Histogram::new_with_bounds(1, 60_000_000, 3).unwrap(),
    ))
}

/// Sleeps until `deadline`, spinning for the last 100 µs for precision.
fn wait_until(deadline: Instant) {
    loop {
        let now = Instant::now();
        if now >= deadline {
            return;
        }
        let left = deadline - now;
        if left > Duration::from_micros(200) {
            std::thread::sleep(left - Duration::from_micros(100));
        } else {
            std::hint::spin_loop();
        }
    }
}

struct Row {
    client: &'static str,
    rate_hz: u64,
    events: u64,
    p50_us: u64,
    p99_us: u64,
    max_us: u64,
    /// Share of events the publishing thread wrote itself (ours only).
    direct_pct: Option<f64>,
}

async fn ours(rate_hz: u64, n: u64) -> Row {
    let hist = new_hist();
    let server = stamping_server(hist.clone()).await;
    let client = VuerClient::connect(&server.uri()).await.unwrap();
    let p = client.publisher();
    let period = Duration::from_nanos(1_000_000_000 / rate_hz);
    tokio::task::spawn_blocking(move || {
        let start = Instant::now();
        for i in 0..n {
            wait_until(start + period * i as u32);
            p.publish(&Stamped {
                t: now_unix_ns(),
                p: [i as f32, 0.5, 0.0],
            })
            .unwrap();
        }
    })
    .await
    .unwrap();
    wait_events(&server, n + 1).await;
    let direct = client.stats().direct_writes;
    client.close().await.unwrap();
    let mut r = row("vuer-client", rate_hz, &hist);
    r.direct_pct = Some(100.0 * direct as f64 / n as f64);
    r
}

async fn baseline(rate_hz: u64, n: u64) -> Row {
    let hist = new_hist();
    let server = stamping_server(hist.clone()).await;
    let mut ws = baseline_connect(&server.uri()).await;
    let period = Duration::from_nanos(1_000_000_000 / rate_hz);
    let start = tokio::time::Instant::now();
    for i in 0..n {
        // tokio's timer has 1 ms resolution: spin for the last stretch.
        let deadline = start + period * i as u32;
        if deadline > tokio::time::Instant::now() + Duration::from_millis(2) {
            tokio::time::sleep_until(deadline - Duration::from_millis(1)).await;
        }
        while tokio::time::Instant::now() < deadline {
            std::hint::spin_loop();
        }
        let env = BaselineEnvelope {
            ts: now_ms(),
            etype: "STAMPED",
            value: Stamped {
                t: now_unix_ns(),
                p: [i as f32, 0.5, 0.0],
            },
        };
        ws.send(Message::Binary(
            rmp_serde::to_vec_named(&env).unwrap().into(),
        ))
        .await
        .unwrap();
    }
    wait_events(&server, n).await;
    let _ = ws.close(None).await;
    row("tokio-tungstenite", rate_hz, &hist)
}

async fn wait_events(server: &LocalServer, n: u64) {
    assert!(
        server
            .wait_until(|s| s.events >= n, Duration::from_secs(60))
            .await
    );
}

fn row(client: &'static str, rate_hz: u64, hist: &Hist) -> Row {
    let h = hist.lock().unwrap();
    Row {
        client,
        rate_hz,
        events: h.len(),
        p50_us: h.value_at_quantile(0.5),
        p99_us: h.value_at_quantile(0.99),
        max_us: h.max(),
        direct_pct: None,
    }
}

fn main() {
    let quick = smoke_run();
    let rt = runtime();
    let mut rows = Vec::new();
    for (rate, secs) in [(60u64, 10u64), (1_000, 10), (10_000, 5)] {
        let n = rate * if quick { 1 } else { secs };
        // Alternate which client goes first, run each twice, keep both.
        rows.push(rt.block_on(ours(rate, n)));
        rows.push(rt.block_on(baseline(rate, n)));
        if !quick {
            rows.push(rt.block_on(baseline(rate, n)));
            rows.push(rt.block_on(ours(rate, n)));
        }
    }
    println!("one-way latency, publish -> server read (µs)");
    println!(
        "{:<18} {:>8} {:>8} {:>8} {:>8} {:>8} {:>8}",
        "client", "rate Hz", "events", "p50", "p99", "max", "direct"
    );
    for r in &rows {
        let direct = r.direct_pct.map_or("-".to_owned(), |d| format!("{d:.0}%"));
        println!(
            "{:<18} {:>8} {:>8} {:>8} {:>8} {:>8} {:>8}",
            r.client, r.rate_hz, r.events, r.p50_us, r.p99_us, r.max_us, direct
        );
    }
    let json: Vec<String> = rows
        .iter()
        .map(|r| {
            format!(
                "{{\"client\":\"{}\",\"rate_hz\":{},\"events\":{},\"p50_us\":{},\"p99_us\":{},\"max_us\":{}}}",
                r.client, r.rate_hz, r.events, r.p50_us, r.p99_us, r.max_us
            )
        })
        .collect();
    write_result("latency.json", &format!("[{}]", json.join(",")));
}
