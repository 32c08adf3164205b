//! Bounded staleness: the newest pose arrives within a time bound even when
//! the server or the link is slow. 10 keys, each published at 10 kHz
//! (100 k events/s), against an in-process server that reads 60
//! messages/s, and through a TCP proxy that forwards 20 kB/s; the age of
//! each value the server reads is its receive time minus the event's `ts`.

use vuer_client_testkit as common;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{bounded, PyServer};
use vuer_client::{DynEvent, Value, VuerClient};
use vuer_client_testkit::server::{EventHook, LocalServer, Received, ServerOptions};

/// (seconds since start, age in ms) of every POSE the server read.
type Ages = Arc<Mutex<Vec<(f64, f64)>>>;

async fn slow_server(reads_per_sec: Option<f64>, ages: Ages) -> LocalServer {
    let t0 = Instant::now();
    let hook: EventHook = Arc::new(move |r: &Received| {
        if r.event.etype() == "POSE" {
            let age = (r.at_unix_ns / 1_000_000) as f64 - r.event.ts().unwrap() as f64;
            ages.lock().unwrap().push((t0.elapsed().as_secs_f64(), age));
        }
    });
    let server = LocalServer::start(ServerOptions {
        scene_on_init: false,
        on_event: Some(hook),
        ..Default::default()
    })
    .await
    .unwrap();
    server.set_read_rate(reads_per_sec);
    server
}

/// Publishes 10 keys at 10 kHz each from a plain thread for `secs`.
fn produce(client: &VuerClient, secs: u64) -> std::thread::JoinHandle<u64> {
    let p = client.publisher();
    std::thread::spawn(move || {
        let keys: Vec<String> = (0..10).map(|k| format!("joint/{k}")).collect();
        let start = Instant::now();
        let mut i = 0u64;
        while start.elapsed() < Duration::from_secs(secs) {
            for k in &keys {
                p.publish(
                    &DynEvent::new("POSE")
                        .key(k.as_str())
                        .value(Value::from([i as f32, 0.5, 0.0]))
                        .latest(),
                )
                .expect("keyed publish never fails");
            }
            i += 1;
            let next = start + Duration::from_micros(100 * i);
            while Instant::now() < next {
                std::thread::yield_now();
            }
        }
        i * 10
    })
}

fn p99(ages: &[(f64, f64)], from: f64, to: f64) -> f64 {
    quantile(ages, from, to, 0.99)
}

fn quantile(ages: &[(f64, f64)], from: f64, to: f64, q: f64) -> f64 {
    let mut v: Vec<f64> = ages
        .iter()
        .filter(|a| a.0 >= from && a.0 < to)
        .map(|a| a.1)
        .collect();
    assert!(
        v.len() > 20,
        "too few samples in [{from}, {to}): {}",
        v.len()
    );
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[((v.len() as f64 * q) as usize).min(v.len() - 1)]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ages_stay_bounded_against_a_60_message_per_second_reader() {
    bounded(90, async {
        let ages: Ages = Arc::default();
        let server = slow_server(Some(60.0), ages.clone()).await;
        let client = VuerClient::connect(&server.uri()).await.unwrap();
        let published = produce(&client, 20).join().unwrap();
        let s = client.stats();
        let ages = ages.lock().unwrap().clone();
        let early = p99(&ages, 2.0, 7.0);
        let late = p99(&ages, 15.0, 20.0);
        let all = p99(&ages, 0.0, 20.0);
        eprintln!(
            "60 msg/s reader, pacing on: p99 age {early:.0} ms (2-7 s), {late:.0} ms (15-20 s), {all:.0} ms overall; \
             published {published}, sent {}, coalesced {}, holds {}, measured read rate {:.0} B/s",
            s.sent, s.coalesced, s.pacing_holds, s.server_read_rate
        );
        assert!(late <= 2.0 * early, "ages grow: {early} ms then {late} ms");
        assert!(all <= 500.0, "p99 age {all} ms over 500 ms");
        assert!(s.pacing_holds > 0);
        assert!(s.coalesced > 0);
        assert_eq!(s.published, s.sent + s.coalesced + s.expired + s.rejected + s.dropped + s.pending);
        client.close().await.ok();
    })
    .await;
}

/// The same without pacing: the coalescing ring alone is not enough, values
/// age in socket buffers and the age grows with the length of the run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_pacing_ages_grow() {
    bounded(60, async {
        let ages: Ages = Arc::default();
        let server = slow_server(Some(60.0), ages.clone()).await;
        let client = VuerClient::builder()
            .uri(server.uri())
            .pacing(None)
            .connect()
            .await
            .unwrap();
        produce(&client, 8).join().unwrap();
        let ages = ages.lock().unwrap().clone();
        let early = p99(&ages, 1.0, 3.0);
        let late = p99(&ages, 6.0, 8.0);
        eprintln!(
            "60 msg/s reader, pacing off: p99 age {early:.0} ms (1-3 s), {late:.0} ms (6-8 s)"
        );
        assert!(
            late > 2.0 * early,
            "expected growing ages: {early} ms then {late} ms"
        );
        client.close().await.ok();
    })
    .await;
}

/// A slow link instead of a slow server: a proxy that forwards 20 kB/s
/// (about 330 frames/s of 60 bytes) to a server that reads as fast as it
/// can. The backlog would pile up in the proxy and the kernel buffers on
/// the way; pacing keeps it in the ring, where keyed values coalesce.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ages_stay_bounded_through_a_bandwidth_limited_link() {
    bounded(90, async {
        let ages: Ages = Arc::default();
        let server = slow_server(None, ages.clone()).await;
        let proxy = common::proxy::Proxy::start_with(
            server.addr(),
            common::proxy::ProxyOptions {
                socket_buffer: Some(16 << 10),
                up_bandwidth: Some(20_000),
                down_bandwidth: None,
            },
        )
        .await
        .unwrap();
        let client = VuerClient::connect(&proxy.uri()).await.unwrap();
        let published = produce(&client, 20).join().unwrap();
        let s = client.stats();
        let ages = ages.lock().unwrap().clone();
        let early = p99(&ages, 2.0, 7.0);
        let late = p99(&ages, 15.0, 20.0);
        let p50 = quantile(&ages, 0.0, 20.0, 0.5);
        eprintln!(
            "20 kB/s link, pacing on: p99 age {early:.0} ms (2-7 s), {late:.0} ms (15-20 s), p50 {p50:.0} ms; \
             published {published}, sent {}, coalesced {}, holds {}, measured read rate {:.0} B/s",
            s.sent, s.coalesced, s.pacing_holds, s.server_read_rate
        );
        assert!(late <= 2.0 * early, "ages grow: {early} ms then {late} ms");
        assert!(late <= 1000.0, "p99 age {late} ms");
        assert_eq!(s.published, s.sent + s.coalesced + s.expired + s.rejected + s.dropped + s.pending);
        client.close().await.ok();
    })
    .await;
}

/// The same against a reader that is not this crate: Python's `websockets`
/// (tests/py/slow_reader.py) reading 60 messages/s with `max_queue=1`. It
/// answers a round of pings as soon as its transport reads it, then stops
/// reading until its application has drained its queue: its answers come
/// in bursts, which once made pacing believe a fast reader, fill the
/// socket, and then switch itself off (issue 13, item 10: p99 ages of
/// 11.9 s, growing by a second per second). The reader reports the age of
/// what it read each second (its clock minus the value's `t_ns`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ages_stay_bounded_and_flat_against_python_websockets_reading_60_messages_per_second() {
    let _py = common::python_lock().await;
    bounded(90, async {
        let port = common::free_port();
        let mut reader = PyServer::run_plain("slow_reader.py", &["60"], port).await;
        let client = VuerClient::connect(&reader.uri()).await.unwrap();
        let p = client.publisher();
        let secs = 8;
        let producer = std::thread::spawn(move || {
            let start = Instant::now();
            let mut i = 0u64;
            while start.elapsed() < Duration::from_secs(secs) {
                for k in 0..10 {
                    let t_ns = std::time::SystemTime::now()
                        .duration_since(std::time::UNIX_EPOCH)
                        .unwrap()
                        .as_nanos() as u64;
                    let v = Value::map([("t_ns", t_ns.into()), ("i", i.into())]);
                    p.publish(&DynEvent::new("POSE").key(format!("joint/{k}")).value(v).latest())
                        .expect("keyed publish never fails");
                }
                i += 1;
                std::thread::sleep(Duration::from_micros(100));
            }
        });
        let lines = reader
            .collect(secs as usize - 1, |l| l["kind"] == "age", Duration::from_secs(secs + 10))
            .await;
        producer.join().unwrap();
        let p99s: Vec<f64> = lines.iter().map(|l| l["p99_ms"].as_f64().unwrap()).collect();
        let s = client.stats();
        eprintln!(
            "python websockets, 60 msg/s: p99 age per second {p99s:.0?} ms; sent {}, coalesced {}, holds {}, measured read rate {:.0} B/s",
            s.sent, s.coalesced, s.pacing_holds, s.server_read_rate
        );
        assert!(
            p99s.iter().all(|p| *p <= 500.0),
            "p99 age over 500 ms in some second: {p99s:?}"
        );
        client.close().await.ok();
    })
    .await;
}
