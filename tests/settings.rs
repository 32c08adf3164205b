//! Settings: every builder value is either accepted and works or refused
//! with a typed error (never a panic).

use vuer_client_testkit as common;

use std::time::Duration;

use vuer_client::{ConnectError, DynEvent, VuerClient};

mod builder_values {
    use super::*;
    use proptest::prelude::*;
    use vuer_client::{Pacing, PublishError, Reconnect};

    fn duration() -> impl Strategy<Value = Duration> {
        // Extremes now and then, mostly values that work: every field is
        // set in each case, and one refused field refuses the whole case.
        prop_oneof![
            1 => Just(Duration::ZERO),
            1 => Just(Duration::from_nanos(1)),
            2 => Just(Duration::from_millis(1)),
            12 => (1u64..3_000).prop_map(Duration::from_millis),
            1 => Just(Duration::from_secs(1 << 40)),
            1 => Just(Duration::MAX),
        ]
    }

    fn count() -> impl Strategy<Value = usize> {
        prop_oneof![
            Just(0usize),
            Just(1),
            1usize..100_000,
            Just(1 << 31),
            Just(usize::MAX)
        ]
    }

    fn float() -> impl Strategy<Value = f64> {
        prop_oneof![
            1 => Just(f64::NAN),
            1 => Just(f64::INFINITY),
            1 => Just(-1.0),
            1 => Just(0.0),
            1 => Just(1e-300),
            12 => 0.001f64..1e6,
        ]
    }

    #[derive(Debug, Clone)]
    struct Settings {
        connect_timeout: Duration,
        ping: Option<Duration>,
        keepalive: Option<Duration>,
        close: Duration,
        max_age: Option<Duration>,
        flush_rate: Option<f64>,
        events: usize,
        bytes: usize,
        keys: usize,
        batch: (usize, usize),
        inbound: (usize, usize),
        max_in: usize,
        max_out: usize,
        lowat: Option<u32>,
        sndbuf: Option<u32>,
        reconnect: Option<(Duration, Duration, f64, f64, Option<u32>)>,
        pacing: Option<(Duration, u64, Duration, Duration)>,
    }

    fn settings() -> impl Strategy<Value = Settings> {
        let a = (
            duration(),
            proptest::option::of(duration()),
            proptest::option::of(duration()),
            duration(),
            proptest::option::of(duration()),
            proptest::option::of(float()),
            count(),
            count(),
        );
        let b = (
            count(),
            (count(), count()),
            (count(), count()),
            count(),
            count(),
            proptest::option::of(any::<u32>()),
            proptest::option::of(prop_oneof![Just(0u32), 1024u32..1 << 24, Just(u32::MAX)]),
            proptest::option::of((
                duration(),
                duration(),
                float(),
                float(),
                proptest::option::of(0u32..5),
            )),
            proptest::option::of((
                duration(),
                prop_oneof![Just(0u64), 1u64..1 << 24, Just(u64::MAX)],
                duration(),
                duration(),
            )),
        );
        (a, b).prop_map(|(a, b)| Settings {
            connect_timeout: a.0,
            ping: a.1,
            keepalive: a.2,
            close: a.3,
            max_age: a.4,
            flush_rate: a.5,
            events: a.6,
            bytes: a.7,
            keys: b.0,
            batch: b.1,
            inbound: b.2,
            max_in: b.3,
            max_out: b.4,
            lowat: b.5,
            sndbuf: b.6,
            reconnect: b.7,
            pacing: b.8,
        })
    }

    fn apply(s: &Settings, uri: String) -> vuer_client::ClientBuilder {
        let mut b = VuerClient::builder()
            .uri(uri)
            .connect_timeout(s.connect_timeout)
            .ping_interval(s.ping)
            .keepalive_timeout(s.keepalive)
            .close_timeout(s.close)
            .max_queued_events(s.events)
            .max_queued_bytes(s.bytes)
            .max_keys(s.keys)
            .batch_limits(s.batch.0, s.batch.1)
            .inbound_limits(s.inbound.0, s.inbound.1)
            .max_inbound_message(s.max_in)
            .max_outgoing_message(s.max_out)
            .notsent_lowat(s.lowat)
            .send_buffer(s.sndbuf);
        if let Some(a) = s.max_age {
            b = b.max_age(a);
        }
        if let Some(r) = s.flush_rate {
            b = b.max_flush_rate(r);
        }
        b = b.reconnect(s.reconnect.map(|(i, m, mult, j, n)| Reconnect {
            initial_delay: i,
            max_delay: m,
            multiplier: mult,
            jitter: j,
            max_attempts: n,
        }));
        b.pacing(s.pacing.map(|(d, pipe, iv, to)| Pacing {
            max_delay: d,
            max_pipe_bytes: pipe,
            probe_interval: iv,
            probe_timeout: to,
        }))
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 48, failure_persistence: None, ..ProptestConfig::default() })]

        /// Issue 14, item 5: `ping_interval(Some(ZERO))` panicked the
        /// sender, `close_timeout * 2`, a tiny `max_flush_rate`, `Reconnect`
        /// with `Duration::MAX`, a huge `probe_timeout` overflowed or spun.
        /// Now any value is accepted and works, or is refused with
        /// `InvalidConfig`; nothing panics, and the client's calls return.
        #[test]
        fn every_builder_value_works_or_is_refused(s in settings()) {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async {
                let server = common::quiet_server().await;
                let connected = tokio::time::timeout(
                    Duration::from_secs(20),
                    apply(&s, server.uri()).connect(),
                )
                .await
                .expect("connect returns");
                let client = match connected {
                    Ok(c) => {
                        c
                    }
                    Err(ConnectError::InvalidConfig(m)) => {
                        assert!(!m.is_empty());
                        return;
                    }
                    // A zero-ish connect timeout may time out for real.
                    Err(ConnectError::Timeout { .. }) => return,
                    Err(e) => panic!("{e:?} for {s:?}"),
                };
                let work = async {
                    for i in 0..5i64 {
                        match client.publish(&DynEvent::new("V").value(i).latest()) {
                            Ok(()) | Err(PublishError::Full { .. }) | Err(PublishError::Closed(_))
                            | Err(PublishError::TooLarge { .. }) | Err(PublishError::LargerThanQueue { .. }) => {}
                            Err(e) => panic!("{e:?}"),
                        }
                    }
                    let _ = client.send(&DynEvent::new("R").value(1)).await;
                    let _ = client.stats();
                    let _ = client.close().await;
                };
                // A close may legitimately wait for its (clamped) timeout
                // when nothing can be delivered; the point is that it
                // returns, panics nothing, and the process stays sound.
                let _ = tokio::time::timeout(Duration::from_secs(20), work).await;
                drop(client);
            });
            rt.shutdown_timeout(Duration::from_secs(1));
        }

        /// Values at the edges that must be accepted (the longest
        /// durations, the largest counts, pacing at zero or at its
        /// maximum): the client connects, delivers and closes cleanly.
        #[test]
        fn extreme_values_that_are_accepted_work(
            long in prop_oneof![(1u64..3).prop_map(Duration::from_secs), Just(Duration::from_secs(1 << 40)), Just(Duration::MAX)],
            ping in prop_oneof![Just(Duration::from_millis(1)), Just(Duration::from_secs(1)), Just(Duration::MAX)],
            big in prop_oneof![4096usize..100_000, Just(usize::MAX)],
            bytes in prop_oneof![Just(65_536usize), Just(vuer_client::MAX_QUEUED_BYTES_LIMIT)],
            rate in proptest::option::of(prop_oneof![Just(1_000.0f64), Just(1e12)]),
            pacing in proptest::option::of((duration(), prop_oneof![Just(0u64), Just(u64::MAX)], duration(), duration())),
            backoff in (duration(), duration(), 1.0f64..10.0, 0.0f64..=1.0),
        ) {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async {
                let server = common::quiet_server().await;
                let mut b = VuerClient::builder()
                    .uri(server.uri())
                    .connect_timeout(long)
                    .keepalive_timeout(Some(long))
                    .close_timeout(long)
                    .ping_interval(Some(ping))
                    .max_age(long)
                    .max_queued_events(big)
                    .max_queued_bytes(bytes)
                    .max_keys(big)
                    .batch_limits(big, big)
                    .inbound_limits(big, big)
                    .max_inbound_message(big)
                    .max_outgoing_message(big)
                    .reconnect(Some(Reconnect {
                        initial_delay: backoff.0,
                        max_delay: backoff.1,
                        multiplier: backoff.2,
                        jitter: backoff.3,
                        max_attempts: None,
                    }))
                    .pacing(pacing.map(|(d, pipe, iv, to)| Pacing {
                        max_delay: d,
                        max_pipe_bytes: pipe,
                        probe_interval: iv,
                        probe_timeout: to,
                    }));
                if let Some(r) = rate {
                    b = b.max_flush_rate(r);
                }
                let client = b.connect().await.expect("accepted values connect");
                let done = async {
                    for i in 0..5i64 {
                        client.publish(&DynEvent::new("V").value(i).latest()).unwrap();
                    }
                    client.send(&DynEvent::new("R").value(1)).await.unwrap();
                    // A lost connection: the backoff is computed from the
                    // policy's values (Duration::MAX overflowed it), and
                    // close() ends the wait.
                    let mut states = client.watch_state();
                    server.abort_all();
                    while !matches!(
                        *states.borrow_and_update(),
                        vuer_client::ConnectionState::Reconnecting { .. }
                    ) {
                        states.changed().await.unwrap();
                    }
                    client.close().await
                };
                let closed = tokio::time::timeout(Duration::from_secs(20), done)
                    .await
                    .expect("delivered and closed within 20 s");
                closed.expect("a clean close");
                assert!(server.received().iter().any(|r| r.event.etype() == "R"));
            });
            rt.shutdown_timeout(Duration::from_secs(1));
        }
    }
}
