//! The streaming engine end to end: a server that stops reading, memory that
//! stays flat, and what arrives when it reads again or when the client
//! closes.

use vuer_client_testkit as common;
use vuer_client_testkit::check_identity;
use vuer_client_testkit::rss_bytes;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::bounded;
use vuer_client::{DynEvent, PublishError, Value, VuerClient};
use vuer_client_testkit::server::{LocalServer, ServerOptions};

const KEYS: usize = 10;

/// The latest value the server saw for each key, and the reliable sequence.
fn seen(server: &LocalServer) -> (HashMap<String, i64>, Vec<i64>) {
    let mut latest = HashMap::new();
    let mut reliable = Vec::new();
    for r in server.received() {
        match r.event.etype() {
            "POSE" => {
                let v = r.event.data().unwrap().as_i64().unwrap();
                latest.insert(r.event.key().unwrap().to_owned(), v);
            }
            "MARK" => reliable.push(r.event.data().unwrap().as_i64().unwrap()),
            _ => {}
        }
    }
    (latest, reliable)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_server_keeps_memory_flat_then_gets_the_latest_values() {
    bounded(120, async {
        let server = LocalServer::start(ServerOptions {
            scene_on_init: false,
            record_limit: 10_000_000,
            ..Default::default()
        })
        .await
        .unwrap();
        let client = VuerClient::builder()
            .uri(server.uri())
            .max_queued_events(256)
            .max_queued_bytes(64 << 10)
            // Keepalive would (rightly) give up on a server silent this
            // long; this test is about the ring, not the reconnect.
            .keepalive_timeout(None)
            .connect()
            .await
            .unwrap();
        assert!(server.wait_until(|s| s.events >= 1, Duration::from_secs(5)).await);
        server.pause_reading();

        // 10 keys at 100 kHz (10 kHz each) and a reliable event every 10
        // rounds, from a plain thread, for 6 s.
        let stop = Arc::new(AtomicBool::new(false));
        let publisher = client.publisher();
        let producer = {
            let stop = stop.clone();
            std::thread::spawn(move || {
                let keys: Vec<String> = (0..KEYS).map(|k| format!("joint/{k}")).collect();
                let mut latest = vec![0i64; KEYS];
                let mut reliable = Vec::new();
                let start = Instant::now();
                let mut round = 0i64;
                while !stop.load(Ordering::Relaxed) {
                    for (k, key) in keys.iter().enumerate() {
                        let ev = DynEvent::new("POSE")
                            .key(key.as_str())
                            .value(round)
                            .latest();
                        // A key whose value is still queued is replaced in
                        // place and never refused; once the sender has taken
                        // it, the new value needs a slot, and the reliable
                        // marks may hold them all: then it is refused too
                        // (counted), and the value owed is the last accepted.
                        match publisher.publish(&ev) {
                            Ok(()) => latest[k] = round,
                            Err(PublishError::Full { .. }) => {}
                            Err(e) => panic!("{e}"),
                        }
                    }
                    // A reliable mark every 10 rounds (6000 in the run):
                    // far more than the queue (256) and what kernel
                    // buffers absorb before the stall bites (in a loaded
                    // CI run about 2000 frames went out first, and marks
                    // every 100 rounds then never filled the queue).
                    if round % 10 == 0 {
                        let mark = DynEvent::new("MARK").value(round).reliable();
                        match publisher.publish(&mark) {
                            Ok(()) => reliable.push(round),
                            Err(PublishError::Full { .. }) => {} // refused, counted, not owed
                            Err(e) => panic!("{e}"),
                        }
                    }
                    round += 1;
                    let next = start + Duration::from_micros(100 * round as u64);
                    while Instant::now() < next {
                        std::thread::yield_now();
                    }
                }
                (latest, reliable)
            })
        };

        // Memory and queue are sampled while the server reads nothing.
        let mut rss = Vec::new();
        let t = Instant::now();
        while t.elapsed() < Duration::from_secs(6) {
            tokio::time::sleep(Duration::from_millis(200)).await;
            let s = client.stats();
            check_identity(&s);
            assert!(s.queue_depth <= 256, "{s:?}");
            assert!(s.queue_bytes <= 64 << 10, "{s:?}");
            rss.push(rss_bytes());
        }
        stop.store(true, Ordering::Relaxed);
        let (latest, reliable) = producer.join().unwrap();
        let s = client.stats();
        assert!(s.coalesced > 100_000, "keyed values coalesce: {s:?}");
        assert!(s.rejected > 0, "reliable events meet the bound: {s:?}");
        // Flat: the last half of the run grew by less than 8 MiB.
        let mid = rss[rss.len() / 2];
        let last = *rss.last().unwrap();
        assert!(last < mid + (8 << 20), "RSS grew from {mid} to {last}");
        eprintln!(
            "stalled 6 s: published {}, coalesced {}, rejected {}, queue {} events; RSS {} -> {} KiB",
            s.published,
            s.coalesced,
            s.rejected,
            s.queue_depth,
            rss[0] / 1024,
            last / 1024
        );

        // The server reads again: the latest value of every key and every
        // accepted reliable event arrive.
        server.resume_reading();
        client.flush().await.unwrap();
        let want_marks = reliable.len() as u64;
        assert!(
            server
                .wait_until(
                    |_| {
                        let (l, r) = seen(&server);
                        l.len() == KEYS
                            && l.values().zip(0..).all(|(v, _)| *v >= 0)
                            && r.len() as u64 >= want_marks
                    },
                    Duration::from_secs(30)
                )
                .await
        );
        let (got_latest, got_reliable) = seen(&server);
        for (k, want) in latest.iter().enumerate() {
            assert_eq!(got_latest[&format!("joint/{k}")], *want, "key {k}");
        }
        assert_eq!(got_reliable, reliable, "every accepted reliable event, in order");
        client.close().await.unwrap();
        check_identity(&client.stats());
    })
    .await;
}

#[tokio::test]
async fn the_last_value_of_every_key_reaches_the_server_before_close() {
    bounded(30, async {
        let server = common::quiet_server().await;
        let client = VuerClient::connect(&server.uri()).await.unwrap();
        for round in 0..5_000i64 {
            for k in 0..KEYS {
                client
                    .publish(
                        &DynEvent::new("POSE")
                            .key(format!("joint/{k}"))
                            .value(round)
                            .latest(),
                    )
                    .unwrap();
            }
        }
        client.close().await.unwrap();
        let (latest, _) = seen(&server);
        assert_eq!(latest.len(), KEYS);
        assert!(latest.values().all(|v| *v == 4_999), "{latest:?}");
        let s = client.stats();
        assert_eq!(s.pending, 0);
        check_identity(&s);
    })
    .await;
}

#[tokio::test]
async fn values_older_than_their_maximum_age_are_not_sent() {
    bounded(30, async {
        let server = common::quiet_server().await;
        let client = VuerClient::builder()
            .uri(server.uri())
            .keepalive_timeout(None)
            .connect()
            .await
            .unwrap();
        assert!(
            server
                .wait_until(|s| s.events >= 1, Duration::from_secs(5))
                .await
        );
        server.pause_reading();
        // Fill the kernel buffers so that later values wait in the ring.
        let big = DynEvent::new("BIG")
            .value(Value::Bin(vec![0; 1 << 20]))
            .reliable();
        while client.stats().queue_depth == 0 {
            client.send(&big).await.unwrap();
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let stale = DynEvent::new("POSE")
            .key("k")
            .value(1)
            .latest()
            .max_age(Duration::from_millis(50));
        client.publish(&stale).unwrap();
        tokio::time::sleep(Duration::from_millis(200)).await;
        server.resume_reading();
        client.flush().await.unwrap();
        let s = client.stats();
        assert_eq!(s.expired, 1, "{s:?}");
        assert!(seen(&server).0.is_empty(), "an expired value was sent");
        check_identity(&s);
        client.close().await.unwrap();
    })
    .await;
}
