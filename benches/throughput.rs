//! End-to-end throughput of reliable events to an in-process sink, every
//! event delivered and counted by the sink, against a tokio-tungstenite +
//! rmp-serde baseline sending the same events to the same sink in the same
//! run.
//!
//! ```text
//! cargo bench --bench throughput
//! ```
//!
//! After the criterion groups, the headline contenders (`publish` and
//! `publish_many` with 64 events per call, from a thread, and the baseline
//! feeding 64 then flushing) run again in interleaved rounds: this machine
//! kind's speed drifts by ±50 % over seconds, so criterion's groups, which
//! run one after the other, can catch them at different speeds. Each round
//! runs all three within a second, rotating which goes first; the bench
//! prints each round's ratios to the baseline and their medians.

mod common;

use std::time::Duration;

use common::*;
use criterion::{criterion_group, Criterion, Throughput};

fn throughput(c: &mut Criterion) {
    let rt = runtime();
    let server = rt.block_on(sink());
    let mut g = c.benchmark_group("throughput_reliable_60B");
    g.throughput(Throughput::Elements(1));
    g.sample_size(10);
    g.measurement_time(Duration::from_secs(5));
    g.warm_up_time(Duration::from_secs(1));

    // A plain thread publishes (a control loop needs no runtime); the
    // client's tasks and the sink share the runtime's two workers.
    g.bench_function("vuer_client_publish_from_thread", |b| {
        b.iter_custom(|iters| from_thread(&rt, &server, iters, Producer::PublishRetry))
    });

    // The same thread, parking while the queue is full (`send_blocking`)
    // instead of spinning on `Full`.
    g.bench_function("vuer_client_send_blocking_from_thread", |b| {
        b.iter_custom(|iters| from_thread(&rt, &server, iters, Producer::SendBlocking))
    });

    // The same thread handing over 64 events per call (`publish_many`),
    // as the baseline feeds 64 per flush.
    g.bench_function("vuer_client_publish_many64_from_thread", |b| {
        b.iter_custom(|iters| from_thread(&rt, &server, iters, Producer::PublishMany(64)))
    });

    // Four threads publishing through clones of one client's `Publisher`
    // (they share the outbox lock; this machine has 2 cores).
    g.bench_function("vuer_client_publish_from_4_threads", |b| {
        b.iter_custom(|iters| from_threads(&rt, &server, iters, Producer::PublishRetry, 4))
    });

    // An async producer awaiting room (`send().await`).
    g.bench_function("vuer_client_send_await", |b| {
        b.iter_custom(|iters| send_await(&rt, &server, iters))
    });

    g.bench_function("tokio_tungstenite_feed64_flush", |b| {
        b.iter_custom(|iters| baseline_run(&rt, &server, iters, 64))
    });

    g.bench_function("tokio_tungstenite_flush_each", |b| {
        b.iter_custom(|iters| baseline_run(&rt, &server, iters, 1))
    });
    g.finish();
}

/// Events/s of one run of `n` reliable events from a thread.
fn ours_once(
    rt: &tokio::runtime::Runtime,
    server: &vuer_client_testkit::server::LocalServer,
    n: u64,
    how: Producer,
) -> f64 {
    n as f64 / from_thread(rt, server, n, how).as_secs_f64()
}

/// Events/s of one baseline run (feed 64, then flush) of `n` events.
fn baseline_once(
    rt: &tokio::runtime::Runtime,
    server: &vuer_client_testkit::server::LocalServer,
    n: u64,
) -> f64 {
    n as f64 / baseline_run(rt, server, n, 64).as_secs_f64()
}

/// Interleaved rounds of the headline contenders (see the module docs):
/// `publish` and `publish_many` (64 per call) from a thread, and the
/// baseline feeding 64 per flush; each round runs all three within a
/// second, rotating which goes first.
fn pairs(quick: bool) {
    let rt = runtime();
    let server = rt.block_on(sink());
    // About a third of a second each at the usual rates.
    let (rounds, ours_n, base_n) = if quick {
        (1, 20_000, 10_000)
    } else {
        (9, 3_000_000, 800_000)
    };
    let ours = [Producer::PublishRetry, Producer::PublishMany(64)];
    // Warm every path once, unmeasured (as criterion's warm-up does): the
    // first second of a process runs slower (the allocator settles).
    for how in ours {
        ours_once(&rt, &server, ours_n, how);
    }
    baseline_once(&rt, &server, base_n);
    let mut rates: [Vec<f64>; 3] = Default::default();
    let mut ratios: [Vec<f64>; 2] = Default::default();
    println!("interleaved rounds, reliable 60-byte events, M events/s (ratio to the baseline of the same round)");
    println!(
        "{:>5} {:>17} {:>24} {:>16}",
        "round", "publish", "publish_many(64)", "tt feed64+flush"
    );
    for i in 0..rounds {
        let mut r = [0.0; 3];
        for k in 0..3 {
            let which = (i + k) % 3;
            r[which] = match which {
                2 => baseline_once(&rt, &server, base_n),
                w => ours_once(&rt, &server, ours_n, ours[w]),
            };
        }
        println!(
            "{:>5} {:>9.2} ({:>5.2}x) {:>16.2} ({:>5.2}x) {:>16.2}",
            i + 1,
            r[0] / 1e6,
            r[0] / r[2],
            r[1] / 1e6,
            r[1] / r[2],
            r[2] / 1e6
        );
        for k in 0..3 {
            rates[k].push(r[k]);
        }
        ratios[0].push(r[0] / r[2]);
        ratios[1].push(r[1] / r[2]);
    }
    let m: Vec<f64> = rates.iter_mut().map(|v| median(v)).collect();
    let mr: Vec<f64> = ratios.iter_mut().map(|v| median(v)).collect();
    println!(
        "median {:>8.2} ({:>5.2}x) {:>16.2} ({:>5.2}x) {:>16.2}   (medians of the round ratios; ratios of the medians {:.2}x and {:.2}x)",
        m[0] / 1e6,
        mr[0],
        m[1] / 1e6,
        mr[1],
        m[2] / 1e6,
        m[0] / m[2],
        m[1] / m[2]
    );
    // `median` sorted the ratios: first and last are the extremes.
    let (r0, r1) = (&ratios[0], &ratios[1]);
    write_result(
        "throughput_pairs.json",
        &format!(
            "{{\"rounds\":{rounds},\"publish_median_eps\":{:.0},\"publish_many64_median_eps\":{:.0},\"feed64_median_eps\":{:.0},\"publish_median_ratio\":{:.3},\"publish_min_ratio\":{:.3},\"publish_max_ratio\":{:.3},\"publish_many64_median_ratio\":{:.3},\"publish_many64_min_ratio\":{:.3},\"publish_many64_max_ratio\":{:.3}}}",
            m[0],
            m[1],
            m[2],
            mr[0],
            r0[0],
            r0[r0.len() - 1],
            mr[1],
            r1[0],
            r1[r1.len() - 1]
        ),
    );
}

criterion_group!(benches, throughput);

fn main() {
    benches();
    Criterion::default().configure_from_args().final_summary();
    let args: Vec<String> = std::env::args().collect();
    if args.iter().any(|a| a == "--list" || a == "--profile-time") {
        return;
    }
    pairs(smoke_run());
}
