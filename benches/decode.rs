//! Inbound decode throughput: what the decoder task and the application pay
//! per received event.
//!
//! Two events, as the Vuer server sends them (`{ts, data, etype}`):
//!
//! * `small`: an UPSERT of one Box, the `s2c_upsert_box` golden vector
//!   (77 bytes);
//! * `large`: a SET of a scene holding a 100k-point PointCloud whose
//!   `vertices` are bin (100k × 3 float16 = 600 kB) and `colors` bin
//!   (300 kB), about 900 kB of msgpack.
//!
//! For each, msgpack (our path): the envelope only
//! (`ServerEvent::from_msgpack`), the envelope then `data()` (a dynamic
//! `Value`), and the envelope then `data_as::<T>()` into a typed struct.
//! And JSON, the same event as a relay would send it in a text frame, with
//! every bin as an **array of ints** (what serde_json makes of bytes): our
//! simd-json path (`ServerEvent::from_json`, which parses and transcodes
//! to msgpack) against `serde_json::from_slice::<serde_json::Value>` in the
//! same run. Throughput is in bytes of the input message.
//!
//! Smoke run: `cargo bench --bench decode -- --quick`.

use std::hint::black_box;

use bytes::{Bytes, BytesMut};
use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use serde::Deserialize;
use serde_json::{json, Value as Json};
use vuer_client::{ServerEvent, Value};

const VECTORS: &str = include_str!("../tests/data/vectors.json");

fn vector(name: &str) -> Vec<u8> {
    let doc: Json = serde_json::from_str(VECTORS).unwrap();
    let hex = doc["cases"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == name)
        .unwrap()["msgpack_hex"]
        .as_str()
        .unwrap()
        .to_owned();
    (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
        .collect()
}

/// `s2c_upsert_box`'s data.
#[derive(Deserialize)]
#[allow(dead_code)]
struct Upsert {
    nodes: Vec<BoxNode>,
    to: Option<String>,
}

#[derive(Deserialize)]
#[allow(dead_code)]
struct BoxNode {
    key: String,
    tag: String,
    position: Option<[f32; 3]>,
}

/// The large scene's data.
#[derive(Deserialize)]
#[allow(dead_code)]
struct Scene {
    key: String,
    tag: String,
    up: [f32; 3],
    children: Vec<PointCloud>,
}

#[derive(Deserialize)]
#[allow(dead_code)]
struct PointCloud {
    key: String,
    tag: String,
    #[serde(with = "serde_bytes")]
    vertices: Vec<u8>,
    #[serde(with = "serde_bytes")]
    colors: Vec<u8>,
    size: f32,
}

const POINTS: usize = 100_000;

/// Deterministic filler bytes.
fn noise(n: usize, mut seed: u64) -> Vec<u8> {
    (0..n)
        .map(|_| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed as u8
        })
        .collect()
}

/// The large SET: (msgpack, JSON text with the bins as arrays of ints).
fn large_scene() -> (Vec<u8>, Vec<u8>) {
    let vertices = noise(POINTS * 3 * 2, 1);
    let colors = noise(POINTS * 3, 2);
    let scene = Value::map([
        (
            "children",
            Value::Array(vec![Value::map([
                ("key", Value::from("pc")),
                ("tag", Value::from("PointCloud")),
                ("vertices", Value::Bin(vertices.clone())),
                ("colors", Value::Bin(colors.clone())),
                ("size", Value::F32(0.01)),
            ])]),
        ),
        ("key", Value::from("scene")),
        ("tag", Value::from("Scene")),
        ("up", Value::from([0, 1, 0])),
    ]);
    let msgpack = Value::map([
        ("ts", Value::from(1_700_000_000_500u64)),
        ("data", scene),
        ("etype", Value::from("SET")),
    ])
    .to_msgpack();
    let text = serde_json::to_vec(&json!({
        "ts": 1_700_000_000_500u64,
        "data": {
            "children": [{
                "key": "pc",
                "tag": "PointCloud",
                "vertices": vertices,
                "colors": colors,
                "size": 0.01,
            }],
            "key": "scene",
            "tag": "Scene",
            "up": [0, 1, 0],
        },
        "etype": "SET",
    }))
    .unwrap();
    (msgpack, text)
}

/// The small UPSERT: (msgpack, the same as JSON text).
fn small_upsert() -> (Vec<u8>, Vec<u8>) {
    let msgpack = vector("s2c_upsert_box");
    let text = serde_json::to_vec(&json!({
        "ts": 1_700_000_000_500u64,
        "data": {"nodes": [{"key": "box", "tag": "Box", "position": [0, 0.5, 0]}], "to": null},
        "etype": "UPSERT",
    }))
    .unwrap();
    (msgpack, text)
}

fn bench_event<T: for<'de> Deserialize<'de>>(
    c: &mut Criterion,
    name: &str,
    msgpack: Vec<u8>,
    text: Vec<u8>,
    batch: BatchSize,
) {
    // Check once that every path decodes this event.
    let ev = ServerEvent::from_msgpack(Bytes::from(msgpack.clone())).unwrap();
    ev.data().unwrap();
    ev.data_as::<T>().unwrap();
    assert!(ServerEvent::from_json(BytesMut::from(&text[..])).is_ok());
    serde_json::from_slice::<Json>(&text).unwrap();

    let mut g = c.benchmark_group(format!("decode/{name}"));
    let bytes = Bytes::from(msgpack);
    g.throughput(Throughput::Bytes(bytes.len() as u64));
    g.bench_function("msgpack_envelope", |b| {
        b.iter(|| ServerEvent::from_msgpack(black_box(bytes.clone())).unwrap())
    });
    g.bench_function("msgpack_envelope+data", |b| {
        b.iter(|| {
            let ev = ServerEvent::from_msgpack(black_box(bytes.clone())).unwrap();
            ev.data().unwrap()
        })
    });
    g.bench_function("msgpack_envelope+data_as_typed", |b| {
        b.iter(|| {
            let ev = ServerEvent::from_msgpack(black_box(bytes.clone())).unwrap();
            ev.data_as::<T>().unwrap()
        })
    });
    g.throughput(Throughput::Bytes(text.len() as u64));
    // from_json parses in place: each iteration gets a fresh copy, made
    // outside the timing.
    g.bench_function("json_simd_from_json", |b| {
        b.iter_batched(
            || BytesMut::from(&text[..]),
            |t| ServerEvent::from_json(t).unwrap(),
            batch,
        )
    });
    g.bench_function("json_serde_json_value", |b| {
        b.iter(|| serde_json::from_slice::<Json>(black_box(&text)).unwrap())
    });
    g.finish();
}

fn decode(c: &mut Criterion) {
    let (msgpack, text) = small_upsert();
    bench_event::<Upsert>(c, "small", msgpack, text, BatchSize::SmallInput);
    let (msgpack, text) = large_scene();
    bench_event::<Scene>(c, "large", msgpack, text, BatchSize::LargeInput);
}

criterion_group!(benches, decode);
criterion_main!(benches);
