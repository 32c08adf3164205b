//! The engine's parts on their own: ring operations, encoding (against
//! rmp-serde in the same run), and the cost of `publish` from a plain thread
//! while the client drains to a sink.
//!
//! ```text
//! cargo bench --bench engine
//! ```

mod common;

use std::hint::black_box;
use std::time::Duration;

use bytes::Bytes;
use common::*;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use vuer_client::internals::ring::{Batch, KeyRef, Overflow, Ring, RingLimits};
use vuer_client::{encode_message, DynEvent, Value, VuerClient};

const LIMITS: RingLimits = RingLimits {
    max_items: 65_536,
    max_bytes: 64 << 20,
    max_keys: 65_536,
};

/// A 40-byte body, the size of a SET_POSITION envelope without `ts`.
const BODY: [u8; 40] = [7; 40];

fn ring_ops(c: &mut Criterion) {
    let mut g = c.benchmark_group("ring");
    g.throughput(Throughput::Elements(1));

    g.bench_function("push_unkeyed", |b| {
        let mut r: Ring<u64> = Ring::new(LIMITS, Overflow::Reject);
        let mut batch = Batch::default();
        let mut i = 0u64;
        b.iter(|| {
            i += 1;
            if r.len() == LIMITS.max_items {
                r.take_all(&mut batch);
                r.complete(&mut batch, false, |_| false);
            }
            r.push(None, i, black_box(&BODY), Bytes::new(), i, u64::MAX)
                .unwrap()
        })
    });

    g.bench_function("push_keyed_replace_10_keys", |b| {
        let mut r: Ring<u64> = Ring::new(LIMITS, Overflow::Reject);
        let keys: Vec<String> = (0..10).map(|k| format!("hand/{k}")).collect();
        let mut i = 0usize;
        b.iter(|| {
            i += 1;
            let key = KeyRef {
                etype: "HAND_MOVE",
                key: &keys[i % 10],
            };
            r.push(
                Some(key),
                i as u64,
                black_box(&BODY),
                Bytes::new(),
                0,
                u64::MAX,
            )
            .unwrap()
        })
    });

    for n in [64usize, 4096] {
        g.throughput(Throughput::Elements(n as u64));
        g.bench_function(format!("take_all_and_complete_{n}"), |b| {
            let mut r: Ring<u64> = Ring::new(LIMITS, Overflow::Reject);
            let mut batch = Batch::default();
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    for i in 0..n {
                        r.push(None, i as u64, &BODY, Bytes::new(), 0, u64::MAX)
                            .unwrap();
                    }
                    let t = std::time::Instant::now();
                    r.take_all(&mut batch);
                    r.complete(&mut batch, true, |_| false);
                    total += t.elapsed();
                }
                total
            })
        });
    }
    g.finish();
}

fn encode(c: &mut Criterion) {
    let mut g = c.benchmark_group("encode_set_position");
    g.throughput(Throughput::Elements(1));
    let mut buf = Vec::with_capacity(256);
    g.bench_function("vuer_client_typed", |b| {
        b.iter(|| {
            buf.clear();
            encode_message(black_box(&SetPosition([0.1, 0.5, -2.25])), false, &mut buf).unwrap();
        })
    });
    let dynamic = DynEvent::new("SET_POSITION").value(Value::from([0.1f32, 0.5, -2.25]));
    g.bench_function("vuer_client_dynamic", |b| {
        b.iter(|| {
            buf.clear();
            encode_message(black_box(&dynamic), false, &mut buf).unwrap();
        })
    });
    g.bench_function("rmp_serde_to_vec_named", |b| {
        b.iter(|| {
            rmp_serde::to_vec_named(black_box(&Envelope {
                ts: now_ms(),
                etype: "SET_POSITION",
                value: [0.1, 0.5, -2.25],
            }))
            .unwrap()
        })
    });
    g.finish();
}

/// `publish` from a plain thread (no runtime on it), the way a control loop
/// calls it, while the client's sender drains to an in-process sink.
fn publish(c: &mut Criterion) {
    let rt = runtime();
    let server = rt.block_on(sink());
    let client = rt.block_on(VuerClient::connect(&server.uri())).unwrap();
    let mut g = c.benchmark_group("publish_from_thread");
    g.throughput(Throughput::Elements(1));
    g.measurement_time(Duration::from_secs(3));
    let keys = ["hand/left", "hand/right", "head", "robot/ee"];
    let mut i = 0usize;
    g.bench_function("keyed_4_keys", |b| {
        b.iter(|| {
            i += 1;
            client.publish(&Pose {
                key: keys[i % 4],
                p: [i as f32, 0.5, 0.0],
            })
        })
    });
    // Reliable events: the ring may fill; a refusal is cheap and counted,
    // and the bench keeps calling, as a control loop would.
    g.bench_function("reliable", |b| {
        b.iter(|| {
            i += 1;
            let _ = client.publish(&SetPosition([i as f32, 0.5, 0.0]));
        })
    });
    g.finish();
    rt.block_on(client.close()).ok();
}

/// The masking key of every frame: the cryptographic generator the client
/// uses (`rand`'s `StdRng`, ChaCha12, block-buffered) against the xorshift64*
/// it replaced (RFC 6455 §10.3 wants keys an attacker cannot predict).
fn mask(c: &mut Criterion) {
    use rand::{rngs::StdRng, RngCore, SeedableRng};
    let mut g = c.benchmark_group("mask");
    g.throughput(Throughput::Elements(1));
    let mut chacha = StdRng::from_entropy();
    g.bench_function("chacha12_stdrng", |b| {
        b.iter(|| black_box(chacha.next_u32().to_ne_bytes()))
    });
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    g.bench_function("xorshift64star_previous", |b| {
        b.iter(|| {
            x ^= x >> 12;
            x ^= x << 25;
            x ^= x >> 27;
            black_box(((x.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 32) as u32).to_ne_bytes())
        })
    });
    g.finish();
}

criterion_group!(benches, ring_ops, encode, publish, mask);
criterion_main!(benches);
