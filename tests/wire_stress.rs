//! The write path under stress, checked byte by byte by an independent
//! sink (`common::checker`): large reliable events (100 KiB to 4 MiB) at
//! sparse and dense rates, small keyed poses from another thread at 1 kHz
//! (direct writes), pings every millisecond, over ws and wss. The sink
//! checks every frame's form and every payload byte; every event must
//! arrive once, in order, and the client's byte count must equal the
//! sink's.
//!
//! The same runs in real-time mode (`ClientBuilder::realtime_publish`:
//! publishing threads never write or wake, the sender polls, the ring
//! recycles its chunks and refuses rather than allocate) use small and
//! medium reliable events (16 B to 24 KiB, most of them encoded into the
//! ring's chunks, the largest shared as tails) published as fast as the
//! ring takes them, a refused one published again, as a control loop
//! would: every byte of every one is checked, with a fast and with a slow
//! reader (so pacing holds the sender and chunks come back late).
//!
//! The short variants run in CI; `cargo test --release --test wire_stress
//! -- --ignored` runs the long ones.

use vuer_client_testkit as common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::checker::{Checker, CheckerOptions, Pose, Stress};
use common::{bounded, self_signed_tls};
use vuer_client::{PublishError, VuerClient};

/// Sizes from 100 KiB to just under the 4 MiB message limit, a
/// deterministic spread.
fn size_of(seq: u64) -> usize {
    const MIN: usize = 100 << 10;
    const MAX: usize = (4 << 20) - 512;
    let x = seq.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 40;
    match seq % 4 {
        // A quarter near each end, the rest anywhere between.
        0 => MIN + (x as usize % 4096),
        1 => MAX - (x as usize % 4096),
        _ => MIN + (x as usize % (MAX - MIN)),
    }
}

/// Sizes from 16 B to 24 KiB (mostly under 2 KiB, as poses and joint
/// states are; an eighth above `LARGE_MESSAGE`, 16 KiB, shared as tails).
fn small_size_of(seq: u64) -> usize {
    let x = (seq.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 40) as usize;
    match seq % 8 {
        0 => (16 << 10) + x % (8 << 10),
        1 | 2 => 2048 + x % (14 << 10),
        _ => 16 + x % 2032,
    }
}

struct Run {
    tls: bool,
    events: u64,
    /// Pad bytes of event `seq`.
    size: fn(u64) -> usize,
    /// `ClientBuilder::realtime_publish`: events are published (a refused
    /// one again after a yield) instead of sent.
    realtime: Option<Duration>,
    reader: CheckerOptions,
    /// Pause between large events (`None`: as fast as the client takes
    /// them).
    gap: Option<Duration>,
    /// Time allowed for the whole run.
    secs: u64,
}

async fn stress(run: Run) {
    let (tls, der) = if run.tls {
        let (cfg, der) = self_signed_tls();
        (Some(cfg), Some(der))
    } else {
        (None, None)
    };
    let checker = Checker::start(tls, run.reader).await;
    let mut b = VuerClient::builder()
        .uri(checker.uri())
        .ping_interval(Some(Duration::from_millis(1)))
        .realtime_publish(run.realtime)
        .reconnect(None);
    if let Some(der) = der {
        b = b.tls_verify(true).add_root_certificate(der);
    }
    let client = b.connect().await.unwrap();

    let started = Instant::now();
    let stop = Arc::new(AtomicBool::new(false));
    // Small keyed values at 1 kHz: sparse enough to be written directly by
    // the publishing thread while the sender is parked.
    let poses = {
        let publisher = client.publisher();
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut seq = 0u64;
            let mut last = [0u64; 4];
            while !stop.load(Ordering::Relaxed) {
                seq += 1;
                let k = (seq % 4) as usize;
                let pose = Pose {
                    key: format!("p{k}"),
                    seq,
                };
                match publisher.publish(&pose) {
                    Ok(()) => last[k] = seq,
                    Err(PublishError::Full { .. }) => {}
                    Err(e) => panic!("{e}"),
                }
                std::thread::sleep(Duration::from_millis(1));
            }
            last
        })
    };
    let big = {
        let publisher = client.publisher();
        let (n, gap, size, realtime) = (run.events, run.gap, run.size, run.realtime.is_some());
        std::thread::spawn(move || {
            let mut refused = 0u64;
            for seq in 0..n {
                let event = Stress::new(seq, size(seq));
                if realtime {
                    loop {
                        match publisher.publish(&event) {
                            Ok(()) => break,
                            Err(PublishError::Full { .. }) => {
                                refused += 1;
                                std::thread::yield_now();
                            }
                            Err(e) => panic!("{e}"),
                        }
                    }
                } else {
                    publisher.send_blocking(&event).unwrap();
                }
                if let Some(g) = gap {
                    std::thread::sleep(g);
                }
            }
            refused
        })
    };
    let refused = tokio::task::spawn_blocking(move || big.join().unwrap())
        .await
        .unwrap();
    let n = run.events;
    let all = checker
        .wait_until(
            |r| r.stress.len() as u64 >= n || !r.violations.is_empty(),
            Duration::from_secs(run.secs),
        )
        .await;
    stop.store(true, Ordering::Relaxed);
    let last_poses = tokio::task::spawn_blocking(move || poses.join().unwrap())
        .await
        .unwrap();
    client.flush().await.unwrap();
    let closed = client.close().await;
    assert!(
        checker
            .wait_until(|r| !r.close_codes.is_empty(), Duration::from_secs(5))
            .await
    );
    let report = checker.report();
    let stats = client.stats();
    eprintln!(
        "{} {} events of {}-{} B {}{} in {:.2?}: {} frames, {} pings, {} MiB checked, {} direct writes, {} writes, {} refused (published again)",
        if run.tls { "wss" } else { "ws" },
        n,
        (0..n).map(run.size).min().unwrap_or(0),
        (0..n).map(run.size).max().unwrap_or(0),
        if run.gap.is_some() { "sparse" } else { "dense" },
        if run.realtime.is_some() { ", real-time" } else { "" },
        started.elapsed(),
        report.frames,
        report.pings,
        report.stress_bytes >> 20,
        stats.direct_writes,
        stats.flushes,
        refused,
    );
    if run.realtime.is_some() {
        assert_eq!(stats.direct_writes, 0, "real-time publishers never write");
    }
    assert!(report.violations.is_empty(), "{:?}", report.violations);
    assert!(all, "received {} of {n} events", report.stress.len());
    assert_eq!(
        report.stress,
        (0..n).collect::<Vec<_>>(),
        "each once, in order"
    );
    assert_eq!(report.connections, 1, "no reconnect");
    for (k, last) in last_poses.iter().enumerate() {
        if *last > 0 {
            assert_eq!(
                report.poses.get(&format!("p{k}")),
                Some(last),
                "the latest value of every key arrives"
            );
        }
    }
    closed.unwrap();
    assert_eq!(report.close_codes, vec![1000]);
    assert_eq!(
        stats.bytes_sent, report.bytes,
        "the client counts the bytes the server read"
    );
}

/// Large events through the normal (not real-time) path.
const LARGE: Run = Run {
    tls: false,
    events: 0,
    size: size_of,
    realtime: None,
    reader: CheckerOptions {
        no_pongs: false,
        read_bytes_per_ms: None,
    },
    gap: None,
    secs: 60,
};

/// Small events in real-time mode, polled every 100 µs.
const REALTIME: Run = Run {
    size: small_size_of,
    realtime: Some(Duration::from_micros(100)),
    ..LARGE
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn realtime_small_events_arrive_intact() {
    bounded(
        120,
        stress(Run {
            events: 20_000,
            ..REALTIME
        }),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn realtime_small_events_to_a_slow_reader_arrive_intact() {
    bounded(
        120,
        stress(Run {
            events: 2_500,
            // 8 KiB per millisecond and at most one frame per
            // millisecond: far below what the publisher offers, so pacing
            // holds the sender and the ring fills and refuses. Pinged
            // every millisecond, as fast as it reads frames (unanswered
            // pings back off; before, they were all it read).
            reader: CheckerOptions {
                no_pongs: false,
                read_bytes_per_ms: Some(8 << 10),
            },
            ..REALTIME
        }),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn realtime_small_events_over_wss_arrive_intact() {
    bounded(
        120,
        stress(Run {
            tls: true,
            events: 10_000,
            ..REALTIME
        }),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sparse_large_events_over_ws_arrive_intact() {
    bounded(
        120,
        stress(Run {
            tls: false,
            events: 24,
            gap: Some(Duration::from_millis(15)),
            secs: 60,
            ..LARGE
        }),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dense_large_events_over_ws_arrive_intact() {
    bounded(
        120,
        stress(Run {
            tls: false,
            events: 24,
            gap: None,
            secs: 60,
            ..LARGE
        }),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sparse_large_events_over_wss_arrive_intact() {
    bounded(
        120,
        stress(Run {
            tls: true,
            events: 16,
            gap: Some(Duration::from_millis(15)),
            secs: 60,
            ..LARGE
        }),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dense_large_events_over_wss_arrive_intact() {
    bounded(
        120,
        stress(Run {
            tls: true,
            events: 16,
            gap: None,
            secs: 60,
            ..LARGE
        }),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "long: run with --ignored"]
async fn long_sparse_and_dense_over_ws_and_wss() {
    for tls in [false, true] {
        for gap in [
            Some(Duration::from_millis(3)),
            Some(Duration::from_millis(20)),
            None,
        ] {
            bounded(
                600,
                stress(Run {
                    tls,
                    events: 600,
                    gap,
                    secs: 300,
                    ..LARGE
                }),
            )
            .await;
        }
    }
}
