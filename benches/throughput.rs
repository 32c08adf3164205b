//! End-to-end throughput of reliable events to an in-process sink, every
//! event delivered and counted by the sink, against a tokio-tungstenite +
//! rmp-serde baseline sending the same events to the same sink in the same
//! run.
//!
//! ```text
//! cargo bench --bench throughput
//! ```
//!
//! After the criterion groups, the same two contenders that decide the
//! headline ratio (`publish` from a thread, and the baseline feeding 64
//! then flushing) run again as interleaved pairs: this machine kind's speed
//! drifts by ±50 % over seconds, so criterion's groups, which run one after
//! the other, can catch the two at different speeds. Each pair runs both
//! within a second, alternating which goes first; the bench prints each
//! pair's ratio and their median.

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

/// Events/s of one `publish`-from-a-thread run of `n` reliable events.
fn ours_once(
    rt: &tokio::runtime::Runtime,
    server: &vuer_client::server::LocalServer,
    n: u64,
) -> f64 {
    n as f64 / from_thread(rt, server, n, Producer::PublishRetry).as_secs_f64()
}

/// Events/s of one baseline run (feed 64, then flush) of `n` events.
fn baseline_once(
    rt: &tokio::runtime::Runtime,
    server: &vuer_client::server::LocalServer,
    n: u64,
) -> f64 {
    n as f64 / baseline_run(rt, server, n, 64).as_secs_f64()
}

/// Interleaved pairs of the headline contenders (see the module docs).
fn pairs(quick: bool) {
    let rt = runtime();
    let server = rt.block_on(sink());
    // About a third of a second each at the usual rates.
    let (pairs, ours_n, base_n) = if quick {
        (1, 20_000, 10_000)
    } else {
        (9, 3_000_000, 800_000)
    };
    // Warm both paths once, unmeasured (as criterion's warm-up does): the
    // first second of a process runs slower (the allocator settles).
    ours_once(&rt, &server, ours_n);
    baseline_once(&rt, &server, base_n);
    let (mut ours, mut base, mut ratios) = (Vec::new(), Vec::new(), Vec::new());
    println!("interleaved pairs, reliable 60-byte events, M events/s");
    println!(
        "{:>5} {:>10} {:>16} {:>7}",
        "pair", "publish", "tt feed64+flush", "ratio"
    );
    for i in 0..pairs {
        let (o, b) = if i % 2 == 0 {
            let o = ours_once(&rt, &server, ours_n);
            (o, baseline_once(&rt, &server, base_n))
        } else {
            let b = baseline_once(&rt, &server, base_n);
            (ours_once(&rt, &server, ours_n), b)
        };
        println!(
            "{:>5} {:>10.2} {:>16.2} {:>6.2}x",
            i + 1,
            o / 1e6,
            b / 1e6,
            o / b
        );
        ours.push(o);
        base.push(b);
        ratios.push(o / b);
    }
    let (mo, mb, mr) = (median(&mut ours), median(&mut base), median(&mut ratios));
    println!(
        "median {:>10.2} {:>16.2} {:>6.2}x (median of the pair ratios; ratio of the medians {:.2}x)",
        mo / 1e6,
        mb / 1e6,
        mr,
        mo / mb
    );
    {
        write_result(
            "throughput_pairs.json",
            &format!(
                "{{\"pairs\":{pairs},\"publish_median_eps\":{mo:.0},\"feed64_median_eps\":{mb:.0},\"median_pair_ratio\":{mr:.3},\"min_pair_ratio\":{:.3},\"max_pair_ratio\":{:.3}}}",
                ratios[0],
                ratios[ratios.len() - 1]
            ),
        );
    }
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
