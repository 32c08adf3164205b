//! The Rust side of `capi/bench/run.sh`: the same loop as `publish.c`
//! (a 3-float pose, latest value wins, key "box"), through the blocking
//! client's `publish` of an `EventRef`, from a plain thread. Prints the
//! median ns per call over rounds of 100 000.
//!
//!     cargo run --release -p vuer-client-c --example publish_rust -- URI ROUNDS REALTIME

use std::time::{Duration, Instant};

use vuer_client::{ClientBuilder, EventRef};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let (uri, rounds, realtime) = (&args[1], args[2].parse::<usize>().unwrap(), args[3] == "1");
    let mut b = ClientBuilder::new().uri(uri.as_str());
    if realtime {
        b = b
            .realtime_publish(Some(Duration::from_micros(500)))
            .max_queued_bytes(1 << 20);
    }
    let client = b.connect_blocking().expect("connect");
    let n = 100_000;
    let mut per = Vec::new();
    let mut pose = [0.0f32, 0.5, 0.0];
    for r in 0..=rounds {
        let t0 = Instant::now();
        for i in 0..n {
            pose[0] = i as f32 * 1e-6;
            client
                .publish(&EventRef::floats("SET_POSITION", &pose).key("box").latest())
                .expect("publish");
        }
        if r > 0 {
            per.push(t0.elapsed().as_nanos() as f64 / n as f64);
        }
    }
    per.sort_by(|a, b| a.partial_cmp(b).unwrap());
    println!("{:.1}", per[per.len() / 2]);
    client.close().ok();
}
