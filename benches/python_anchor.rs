//! The Python anchor: times the real `vuer.VuerClient` (vuer 0.1.6) sending
//! SET_POSITION events to the same in-process sink as the other benches,
//! then vuer-client sending as many in the same run (`send().await` per
//! event, the Python loop's shape, and `publish` from a plain thread), so
//! BENCHMARKS.md can state the ratio. Needs a Python with vuer 0.1.6
//! (`VUER_PYTHON`, else `.venv/bin/python`, which `tests/run.sh` creates);
//! without one it says so and skips.
//!
//! ```text
//! cargo bench --bench python_anchor             # 100 000 events
//! cargo bench --bench python_anchor -- --quick  # 2 000 events
//! ```

mod common;

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;

fn python() -> Option<PathBuf> {
    let py = std::env::var("VUER_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|_| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".venv/bin/python"));
    let ok = Command::new(&py)
        .args([
            "-c",
            "import importlib.metadata as m; assert m.version('vuer') == '0.1.6'",
        ])
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    ok.then_some(py)
}

fn main() {
    let quick = smoke_run();
    let n: u64 = if quick { 2_000 } else { 100_000 };
    let Some(py) = python() else {
        println!("python anchor skipped: no Python with vuer 0.1.6 (set VUER_PYTHON, or run tests/run.sh to create .venv)");
        return;
    };
    let rt = runtime();
    let server = rt.block_on(sink());
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("benches/python_anchor.py");
    let start = Instant::now();
    let out = Command::new(py)
        .arg(script)
        .arg(server.uri())
        .arg(n.to_string())
        .output()
        .expect("run the python anchor");
    assert!(
        out.status.success(),
        "python anchor failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The sink has counted INIT and every event (the loop awaited each send).
    assert!(rt.block_on(server.wait_until(|s| s.frames > n, Duration::from_secs(60))));
    let total = start.elapsed();
    let line = String::from_utf8_lossy(&out.stdout);
    let v: serde_json::Value = serde_json::from_str(line.trim()).expect("one JSON line");
    let secs = v["seconds"].as_f64().unwrap();
    let cpu = v["cpu_seconds"].as_f64().unwrap();
    let rate = n as f64 / secs;
    println!(
        "python vuer.VuerClient, await send(e) per event: {n} events in {secs:.2} s = {rate:.0} events/s, \
         {:.1} µs of Python CPU per event (process total {total:.1?} incl. start-up)",
        cpu / n as f64 * 1e6
    );
    // vuer-client, same events, same sink, same run (median of three). Reliable (never
    // coalesced), as the Python client sends them; 20x as many, so the run
    // lasts long enough to time.
    let ours_n = 20 * n;
    // Each run against a fresh sink.
    let send_once = || {
        let server = rt.block_on(sink());
        ours_n as f64 / send_await(&rt, &server, ours_n).as_secs_f64()
    };
    let publish_once = || {
        let server = rt.block_on(sink());
        ours_n as f64 / from_thread(&rt, &server, ours_n, Producer::PublishRetry).as_secs_f64()
    };
    // Three runs each, alternating; the median (a shared machine is noisy).
    let (mut sends, mut publishes) = (Vec::new(), Vec::new());
    for _ in 0..3 {
        sends.push(send_once());
        publishes.push(publish_once());
    }
    let (send_rate, publish_rate) = (median(&mut sends), median(&mut publishes));
    println!(
        "vuer-client, send().await per event:          {send_rate:.0} events/s = {:.0}x the Python client",
        send_rate / rate
    );
    println!(
        "vuer-client, publish from a thread:           {publish_rate:.0} events/s = {:.0}x the Python client",
        publish_rate / rate
    );
    write_result(
        "python_anchor.json",
        &format!(
            "{{\"events\":{n},\"seconds\":{secs},\"events_per_sec\":{rate},\"cpu_us_per_event\":{},\
             \"ours_send_per_sec\":{send_rate},\"ours_publish_per_sec\":{publish_rate}}}",
            cpu / n as f64 * 1e6
        ),
    );
}
