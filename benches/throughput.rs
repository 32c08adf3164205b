//! End-to-end throughput of reliable events to an in-process sink, every
//! event delivered and counted by the sink, against a tokio-tungstenite +
//! rmp-serde baseline sending the same events to the same sink in the same
//! run.
//!
//! ```text
//! cargo bench --bench throughput
//! ```

mod common;

use std::time::{Duration, Instant};

use common::*;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use vuer_client::{PublishError, VuerClient};

fn throughput(c: &mut Criterion) {
    let rt = runtime();
    let server = rt.block_on(sink());
    let uri = server.uri();
    let mut g = c.benchmark_group("throughput_reliable_60B");
    g.throughput(Throughput::Elements(1));
    g.sample_size(10);
    g.measurement_time(Duration::from_secs(5));
    g.warm_up_time(Duration::from_secs(1));

    // A plain thread publishes (a control loop needs no runtime); the
    // client's tasks and the sink share the runtime's two workers.
    g.bench_function("vuer_client_publish_from_thread", |b| {
        b.iter_custom(|iters| {
            let base = server.stats().frames + 1; // + INIT
            let client = rt.block_on(VuerClient::connect(&uri)).unwrap();
            let publisher = client.publisher();
            let start = Instant::now();
            let producer = std::thread::spawn(move || {
                for i in 0..iters {
                    let ev = SetPosition([i as f32, 0.5, 0.0]);
                    loop {
                        match publisher.publish(&ev) {
                            Ok(()) => break,
                            Err(PublishError::Full { .. }) => std::thread::yield_now(),
                            Err(e) => panic!("{e}"),
                        }
                    }
                }
            });
            rt.block_on(wait_frames(&server, base + iters));
            let elapsed = start.elapsed();
            producer.join().unwrap();
            rt.block_on(client.close()).unwrap();
            elapsed
        })
    });

    // The same thread, parking while the queue is full (`send_blocking`)
    // instead of spinning on `Full`.
    g.bench_function("vuer_client_send_blocking_from_thread", |b| {
        b.iter_custom(|iters| {
            let base = server.stats().frames + 1; // + INIT
            let client = rt.block_on(VuerClient::connect(&uri)).unwrap();
            let publisher = client.publisher();
            let start = Instant::now();
            let producer = std::thread::spawn(move || {
                for i in 0..iters {
                    publisher
                        .send_blocking(&SetPosition([i as f32, 0.5, 0.0]))
                        .unwrap();
                }
            });
            rt.block_on(wait_frames(&server, base + iters));
            let elapsed = start.elapsed();
            producer.join().unwrap();
            rt.block_on(client.close()).unwrap();
            elapsed
        })
    });

    // An async producer awaiting room (`send().await`).
    g.bench_function("vuer_client_send_await", |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let base = server.stats().frames + 1; // + INIT
                let client = VuerClient::connect(&uri).await.unwrap();
                let start = Instant::now();
                for i in 0..iters {
                    client
                        .send(&SetPosition([i as f32, 0.5, 0.0]))
                        .await
                        .unwrap();
                }
                wait_frames(&server, base + iters).await;
                let elapsed = start.elapsed();
                client.close().await.unwrap();
                elapsed
            })
        })
    });

    g.bench_function("tokio_tungstenite_feed64_flush", |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let mut ws = baseline_connect(&uri).await;
                let base = server.stats().frames;
                let start = Instant::now();
                baseline_send(&mut ws, iters, 64).await;
                wait_frames(&server, base + iters).await;
                let elapsed = start.elapsed();
                let _ = ws.close(None).await;
                elapsed
            })
        })
    });

    g.bench_function("tokio_tungstenite_flush_each", |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let mut ws = baseline_connect(&uri).await;
                let base = server.stats().frames;
                let start = Instant::now();
                baseline_send(&mut ws, iters, 1).await;
                wait_frames(&server, base + iters).await;
                let elapsed = start.elapsed();
                let _ = ws.close(None).await;
                elapsed
            })
        })
    });
    g.finish();
}

criterion_group!(benches, throughput);
criterion_main!(benches);
