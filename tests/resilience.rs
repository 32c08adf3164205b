//! Resilience under faults: servers killed and restarted, servers that stop
//! reading, stalled, cut and half-open links (through an in-process proxy,
//! the test kit's proxy), close codes, and the reconnect options. Every
//! test checks the same contract:
//!
//! * no panic, bounded memory;
//! * a reconnect within the backoff bound;
//! * the new session gets INIT first, then the latest value of every key
//!   (state restore);
//! * every reliable event accepted is delivered (duplicates across a
//!   reconnect allowed, losses not), in order within each session;
//! * `published == sent + coalesced + expired + rejected + dropped + pending`.
//!
//! Run with `VUER_PYTHON=/path/to/python cargo test --test resilience`.

#[path = "resilience/scenario.rs"]
mod scenario;

use vuer_client_testkit as common;
use vuer_client_testkit::check_identity;
use vuer_client_testkit::rss_bytes;

use scenario::*;

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::bounded;
use common::proxy::{Cut, Direction, ProxyOptions};
use vuer_client::{
    ConnectionState, Disconnect, DynEvent, PublishError, Reconnect, Value, VuerClient,
};
use vuer_client_testkit::server::{LocalServer, Received, ServerOptions};

// ---------------------------------------------------------------------------
// (a) The server is killed mid-stream and restarted on the same address.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_killed_and_restarted_many_times() {
    let _serial = serial().await;
    bounded(60, async {
        const CYCLES: usize = 20;
        let mut sc = Scenario::start().await;
        let mut rss_start = rss_bytes();
        let (mut reconnect, mut downtime, mut detect) = (Vec::new(), Vec::new(), Vec::new());
        for cycle in 0..CYCLES {
            if cycle == 5 {
                // Settled: from here on, memory must not grow with cycles.
                rss_start = rss_bytes();
            }
            // Streams for 20..100 ms, then the kill lands mid-stream.
            sc.stream_for(Duration::from_millis(20 + (cycle as u64 * 29) % 80))
                .await;
            let before = sc.client.stats();
            let killed = Instant::now();
            sc.kill().await;
            detect.push(killed.elapsed());
            // Down for 40..250 ms, so that some reconnects find nothing.
            tokio::time::sleep(Duration::from_millis(40 + (cycle as u64 * 37) % 210)).await;
            sc.restart().await;
            let up = Instant::now();
            reconnect.push(
                sc.reconnected(up, |r| matches!(r, Disconnect::Eof | Disconnect::Io { .. }))
                    .await,
            );
            downtime.push(killed.elapsed());
            let after = sc.client.stats();
            assert_eq!(after.connects, before.connects + 1);
            assert_eq!(after.disconnects, before.disconnects + 1);
            assert!(after.downtime > before.downtime);
        }
        let (published, sessions, dups) = sc.finish().await;
        assert_eq!(sessions, CYCLES + 1);
        let s = sc.client.stats();
        assert_eq!(
            (s.connects, s.disconnects),
            (CYCLES as u64 + 1, CYCLES as u64)
        );
        let grown = rss_bytes().saturating_sub(rss_start);
        // (The test keeps every received event: ~1 MB over 15 cycles.)
        assert!(
            grown < 16 << 20,
            "RSS grew {} KiB over 15 cycles",
            grown / 1024
        );

        for v in [&mut reconnect, &mut downtime, &mut detect] {
            v.sort();
        }
        report!(
            "kill-restart x{CYCLES}: server up -> Connected p50 {:.1} ms, max {:.1} ms; \
             downtime (kill -> Connected) p50 {:.1} ms, max {:.1} ms; \
             kill detected p50 {:.2} ms, max {:.2} ms; stats.downtime {:?}; \
             {} reliable events, {} resent, {dups} duplicates; RSS +{} KiB over cycles 5..20",
            ms(percentile(&reconnect, 0.5)),
            ms(*reconnect.last().unwrap()),
            ms(percentile(&downtime, 0.5)),
            ms(*downtime.last().unwrap()),
            ms(percentile(&detect, 0.5)),
            ms(*detect.last().unwrap()),
            s.downtime,
            published.reliable.len(),
            s.resent,
            grown / 1024,
        );
        sc.client.close().await.unwrap();
    })
    .await;
}

// ---------------------------------------------------------------------------
// (b) A server that accepts and never reads.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_that_never_reads() {
    let _serial = serial().await;
    bounded(60, async {
        const LIMIT: usize = 256;
        const LIMIT_BYTES: usize = 64 << 10;
        let server = LocalServer::start(ServerOptions::default()).await.unwrap();
        server.pause_reading();
        let client = VuerClient::builder()
            .uri(server.uri())
            .reconnect(Some(fast_reconnect()))
            .max_queued_events(LIMIT)
            .max_queued_bytes(LIMIT_BYTES)
            .ping_interval(Some(Duration::from_millis(200)))
            .keepalive_timeout(Some(Duration::from_secs(1)))
            .connect()
            .await
            .unwrap();
        let mut states = StateLog::follow(&client);
        // Fast: 5 000 rounds a second (4 keyed values and 1 reliable each).
        let producer = Producer::start(client.publisher(), Duration::from_micros(200));
        let start = Instant::now();

        // Memory and queue bounds are sampled while the server stays silent.
        let sampler = {
            let p = client.publisher();
            tokio::spawn(async move {
                let mut max_depth = 0;
                let mut max_bytes = 0;
                let mut rss = Vec::new();
                for i in 0.. {
                    let s = p.stats();
                    max_depth = max_depth.max(s.queue_depth);
                    max_bytes = max_bytes.max(s.queue_bytes);
                    check_identity(&s);
                    if i % 10 == 0 {
                        rss.push(rss_bytes());
                    }
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    if s.disconnects >= 3 {
                        return (max_depth, max_bytes, rss);
                    }
                }
                unreachable!()
            })
        };
        // Keepalive declares the silent server dead (nothing acknowledged,
        // no pong), three times over; the client reconnects each time.
        let mut detected = Vec::new();
        for _ in 0..3 {
            let (s, _) = states
                .until("Disconnected", |s| {
                    matches!(s, ConnectionState::Disconnected(_))
                })
                .await;
            assert_eq!(
                s,
                ConnectionState::Disconnected(Disconnect::KeepaliveTimeout(Duration::from_secs(1)))
            );
            detected.push(start.elapsed());
            states
                .until("Connected", |s| matches!(s, ConnectionState::Connected))
                .await;
        }
        let (max_depth, max_bytes, rss) = sampler.await.unwrap();
        let s = client.stats();
        check_identity(&s);
        // Queued and in flight hold at most LIMIT, and unconfirmed reliable
        // events at most LIMIT more; right after a reconnect the line holds
        // both (the unconfirmed ones are put back to be resent), plus one
        // restored value per key.
        assert!(
            max_depth <= (2 * LIMIT + KEYS) as u64,
            "queue depth {max_depth} > 2 x {LIMIT}"
        );
        assert!(
            max_bytes <= 2 * LIMIT_BYTES as u64,
            "queue bytes {max_bytes}"
        );
        assert!(s.coalesced > 10_000, "keyed values coalesce: {s:?}");
        assert!(s.rejected > 0, "reliable events are refused when full");
        // RSS steady: after the first reconnect, no growth beyond noise.
        let settled = rss[rss.len() / 3];
        let last = *rss.last().unwrap();
        assert!(
            last < settled + (8 << 20),
            "RSS grew from {} KiB to {} KiB",
            settled / 1024,
            last / 1024
        );

        // The server reads again: everything owed arrives.
        server.resume_reading();
        states.connected().await;
        let published = producer.stop().await;
        client
            .send(&DynEvent::new("MARK").reliable())
            .await
            .unwrap();
        client.flush().await.unwrap();
        wait_received(&server, "the marker", |log| {
            log.iter().any(|r| r.event.etype() == "MARK")
        })
        .await;
        let s = client.stats();
        check_identity(&s);
        let (n, dups) = check_delivery(&sessions(&[server.received()]), &published);
        report!(
            "never-reading server: keepalive fired at {:?}; max queue depth {max_depth}/{LIMIT}, \
             {max_bytes}/{LIMIT_BYTES} bytes; RSS {} -> {} KiB; {} sessions; \
             {} reliable accepted, {} refused; {} coalesced; {} resent, {dups} duplicates",
            detected,
            settled / 1024,
            last / 1024,
            n,
            published.reliable.len(),
            published.reliable_full,
            s.coalesced,
            s.resent,
        );
        client.close().await.unwrap();
    })
    .await;
}

/// A client for fault tests: fast reconnect, 200 ms pings, 1 s keepalive.
// ---------------------------------------------------------------------------
// (c) The link stalls, recovers, then is cut.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn link_stalls_resumes_then_is_cut() {
    let _serial = serial().await;
    bounded(60, async {
        let mut sc = Scenario::through_proxy().await;

        // A stall shorter than the keepalive timeout: no reconnect, and
        // what was written meanwhile arrives once the link moves again.
        sc.proxy().stall(Direction::Both);
        // Frames already past the proxy still land (later on a loaded
        // machine): sample once the count has settled.
        let mut frames = sc.server().stats().frames;
        loop {
            tokio::time::sleep(Duration::from_millis(100)).await;
            let now = sc.server().stats().frames;
            if now == frames {
                break;
            }
            frames = now;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
        let during = sc.server().stats().frames;
        assert!(during <= frames + 2, "frames crossed a stalled link");
        sc.proxy().resume(Direction::Both);
        let sent = sc.client.stats().sent;
        assert!(
            sc.server()
                .wait_until(|s| s.frames > sent, Duration::from_secs(10)) // + INIT
                .await,
            "what was written during the stall never arrived"
        );
        let s = sc.client.stats();
        assert_eq!(
            (s.connects, s.disconnects),
            (1, 0),
            "a short stall reconnected"
        );

        // Cut with an RST, then with a FIN: a reconnect after each.
        for how in [Cut::Reset, Cut::Fin] {
            sc.mid_stream().await;
            let t = Instant::now();
            assert_eq!(sc.proxy().cut(how), 1);
            // A FIN may arrive as an RST when the proxy had unread bytes.
            let took = sc
                .reconnected(t, |r| matches!(r, Disconnect::Eof | Disconnect::Io { .. }))
                .await;
            report!("cut ({how:?}): reconnected in {:.1} ms", ms(took));
        }
        let (published, sessions, dups) = sc.finish().await;
        assert_eq!(sessions, 3);
        let s = sc.client.stats();
        assert_eq!((s.connects, s.disconnects), (3, 2));
        report!(
            "stall/resume/cut: {} reliable events delivered, {} resent, {dups} duplicates",
            published.reliable.len(),
            s.resent
        );
        sc.client.close().await.unwrap();
    })
    .await;
}

// ---------------------------------------------------------------------------
// (d) The server closes with 1000, 1009 and 1011.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_close_codes_are_reported_and_followed_by_a_reconnect() {
    let _serial = serial().await;
    bounded(60, async {
        let mut sc = Scenario::start().await;
        for (code, reason) in [
            (1000, "session over"),
            (1009, "message too big"),
            (1011, "internal error"),
        ] {
            sc.mid_stream().await;
            let t = Instant::now();
            assert_eq!(sc.server().close_all(code, reason), 1);
            let want = Disconnect::ServerClosed {
                code,
                reason: reason.to_owned(),
            };
            sc.reconnected(t, |r| *r == want).await;
            // The reason outlives the short Disconnected state.
            let last_error = sc.client.stats().last_error.unwrap_or_default();
            assert!(
                last_error.contains(&format!("code {code}: {reason}")),
                "{last_error}"
            );
        }
        let (_, sessions, _) = sc.finish().await;
        assert_eq!(sessions, 4);
        let s = sc.client.stats();
        assert_eq!((s.connects, s.disconnects), (4, 3));
        sc.client.close().await.unwrap();
    })
    .await;
}

// ---------------------------------------------------------------------------
// (e) A half-open link: the proxy black-holes both directions.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn half_open_link_is_found_by_keepalive() {
    let _serial = serial().await;
    bounded(60, async {
        const PING: Duration = Duration::from_millis(200);
        const KEEPALIVE: Duration = Duration::from_secs(1);
        // Small proxy buffers: once black-holed, it acknowledges almost
        // nothing more, as a vanished peer would.
        let mut sc = Scenario::through_proxy_with(ProxyOptions {
            socket_buffer: Some(4096),
            ..Default::default()
        })
        .await;
        let mut detect = Vec::new();
        for round in 0..2 {
            sc.stream_for(Duration::from_millis(50)).await;
            let t = Instant::now();
            // Earlier black-holed connections are still open too.
            assert_eq!(sc.proxy().black_hole(), round + 1);
            let (dead, _) = sc
                .states
                .until("Disconnected", |s| {
                    matches!(s, ConnectionState::Disconnected(_))
                })
                .await;
            let found = t.elapsed();
            assert_eq!(
                dead,
                ConnectionState::Disconnected(Disconnect::KeepaliveTimeout(KEEPALIVE))
            );
            // Declared dead once the timeout has passed without a sign of
            // life, at a check (one per ping interval). Acknowledgements are
            // sampled at checks and count only after a check saw a backlog,
            // so the proxy's last one (the rest of its window, just after
            // the black hole) is noticed up to two checks late: at most
            // timeout + 3 intervals, plus slack.
            assert!(
                found >= KEEPALIVE - PING
                    && found <= KEEPALIVE + 3 * PING + Duration::from_millis(300),
                "half-open link found after {found:?}"
            );
            sc.states
                .until("Connected", |s| matches!(s, ConnectionState::Connected))
                .await;
            detect.push((found, t.elapsed()));
        }
        // The black-holed connections are still open at the proxy: nothing
        // ever closed them from that side.
        assert_eq!(sc.proxy().open(), 3);
        let (published, n, dups) = sc.finish().await;
        assert_eq!(n, 3);
        let s = sc.client.stats();
        report!(
            "half-open: found after {:?} (keepalive {KEEPALIVE:?}, pings {PING:?}); \
             {} reliable events delivered, {} resent, {dups} duplicates",
            detect,
            published.reliable.len(),
            s.resent
        );
        sc.client.close().await.unwrap();
    })
    .await;
}

/// A server whose application froze while its kernel still acknowledges:
/// an idle client sends only pings, and their acknowledgements must not
/// count as signs of life (the pongs never come).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_server_is_found_by_an_idle_client() {
    let _serial = serial().await;
    bounded(30, async {
        let server = LocalServer::start(ServerOptions::default()).await.unwrap();
        server.pause_reading();
        let client = client_for(server.uri()).await;
        let mut states = StateLog::follow(&client);
        let t = Instant::now();
        let (dead, _) = states
            .until("Disconnected", |s| {
                matches!(s, ConnectionState::Disconnected(_))
            })
            .await;
        assert_eq!(
            dead,
            ConnectionState::Disconnected(Disconnect::KeepaliveTimeout(Duration::from_secs(1)))
        );
        let found = t.elapsed();
        assert!(found < Duration::from_millis(1700), "{found:?}");
        let s = client.stats();
        // Pings at 0, 250 and 500 ms, acknowledged by the server's kernel,
        // none answered (then they back off: the next would be at 1 s).
        assert!(s.pings_sent >= 3 && s.pongs_received == 0, "{s:?}");
        report!("frozen server, idle client: found after {found:?}");
        client.close().await.ok();
    })
    .await;
}

/// A peer that is not this crate and never answers a ping: Python's
/// `websockets` with its pongs dropped (tests/py/slow_reader.py), reading
/// as fast as it can and sending nothing. Issue 13, item 2: the first probe
/// was never cleared, the confirmation budget filled, and the client stayed
/// `connected` with nothing moving. Now the stream goes on (what the
/// server's TCP stack acknowledges counts) until keepalive, which counts
/// frames only, declares the peer dead, within its timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_that_never_answers_pings_neither_stalls_nor_stays_connected() {
    let _serial = serial().await;
    let _py = common::python_lock().await;
    bounded(60, async {
        const KEEPALIVE: Duration = Duration::from_secs(2);
        let port = common::free_port();
        let reader = common::PyServer::run_plain("slow_reader.py", &["100000", "nopong"], port).await;
        let client = VuerClient::builder()
            .uri(reader.uri())
            .max_queued_events(200)
            .keepalive_timeout(Some(KEEPALIVE))
            .reconnect(None)
            .connect()
            .await
            .unwrap();
        let t = Instant::now();
        let p = client.publisher();
        let producer = std::thread::spawn(move || {
            let mut i = 0i64;
            while p.send_blocking(&cmd(i)).is_ok() {
                i += 1;
                if i % 50 == 0 {
                    std::thread::sleep(Duration::from_millis(1));
                }
            }
            i
        });
        let reason = loop {
            if let ConnectionState::Closed(r) = client.state() {
                break r;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        };
        let found = t.elapsed();
        let accepted = producer.join().unwrap();
        let s = client.stats();
        report!(
            "no pongs: {} sent ({accepted} accepted) before keepalive ended it after {found:?}; pongs {}",
            s.sent, s.pongs_received
        );
        assert_eq!(reason, Disconnect::KeepaliveTimeout(KEEPALIVE));
        assert!(
            found <= KEEPALIVE + KEEPALIVE / 8 + Duration::from_millis(300),
            "found after {found:?}"
        );
        assert_eq!(s.pongs_received, 0);
        assert!(
            s.sent > 1_000,
            "the stream stalled at the confirmation budget: {s:?}"
        );
    })
    .await;
}

/// A server that reads fewer frames per second than the client pings
/// (here: the checking sink reading one frame per millisecond, pings every
/// millisecond). Keepalive pings went out every interval whether or not the
/// last one was answered, and control frames pass pacing: the pipe filled
/// with pings, pacing held the data behind them, and the stream stalled
/// without an error (3 of these 2000 events in 30 s). Unanswered pings now
/// back off (`Pacer::timer_ping_allowed`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_slower_than_the_ping_rate_still_gets_the_data() {
    // Also one that answers no ping (what its TCP stack acknowledges then
    // confirms, and clears the probe).
    for no_pongs in [false, true] {
        slower_than_the_pings(no_pongs).await;
    }
}

async fn slower_than_the_pings(no_pongs: bool) {
    use common::checker::{Checker, CheckerOptions, Stress};
    bounded(60, async {
        let checker = Checker::start(
            None,
            CheckerOptions {
                no_pongs,
                read_bytes_per_ms: Some(64 << 10),
            },
        )
        .await;
        let client = VuerClient::builder()
            .uri(checker.uri())
            .ping_interval(Some(Duration::from_millis(1)))
            .reconnect(None)
            .connect()
            .await
            .unwrap();
        const N: u64 = 2_000;
        let t = Instant::now();
        for seq in 0..N {
            client.send(&Stress::new(seq, 200)).await.unwrap();
        }
        let all = checker
            .wait_until(|r| r.stress.len() as u64 >= N, Duration::from_secs(30))
            .await;
        let report = checker.report();
        let s = client.stats();
        report!(
            "slower than the pings (no pongs: {no_pongs}): {} of {N} events in {:?}; {} pings sent, {} pongs",
            report.stress.len(),
            t.elapsed(),
            s.pings_sent,
            s.pongs_received
        );
        assert!(all, "the stream stalled behind pings: {s:?}");
        assert_eq!(report.stress, (0..N).collect::<Vec<_>>());
        assert!(report.violations.is_empty(), "{:?}", report.violations);
        client.close().await.unwrap();
        check_identity(&client.stats());
    })
    .await;
}

/// Issue 13, item 5: `close()` while the client waited to reconnect
/// returned at once with `Local` and dropped what was queued. Now it
/// reconnects at once (not after the backoff) and delivers within the close
/// timeout, or says what it could not deliver.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn close_while_reconnecting_delivers_within_its_timeout() {
    let _serial = serial().await;
    bounded(60, async {
        const CLOSE: Duration = Duration::from_secs(2);
        let slow_backoff = Reconnect {
            initial_delay: Duration::from_secs(30),
            max_delay: Duration::from_secs(30),
            ..Reconnect::default()
        };
        for server_back in [true, false] {
            let server = LocalServer::start(ServerOptions::default()).await.unwrap();
            let addr = server.addr();
            let client = VuerClient::builder()
                .uri(server.uri())
                .reconnect(Some(slow_backoff.clone()))
                .close_timeout(CLOSE)
                .connect()
                .await
                .unwrap();
            assert!(
                server
                    .wait_until(|s| s.inits == 1, Duration::from_secs(5))
                    .await
            );
            let mut states = StateLog::follow(&client);
            drop(server);
            states
                .until("Reconnecting", |s| {
                    matches!(s, ConnectionState::Reconnecting { .. })
                })
                .await;
            for i in 0..11 {
                client.publish(&cmd(i)).unwrap();
            }
            let restarted = if server_back {
                Some(rebind(addr).await)
            } else {
                None
            };
            let t = Instant::now();
            let closed = client.close().await;
            let took = t.elapsed();
            assert!(took <= CLOSE + Duration::from_millis(300), "{took:?}");
            match restarted {
                Some(server) => {
                    closed.unwrap();
                    let cmds = server
                        .received()
                        .iter()
                        .filter(|r| r.event.etype() == "CMD")
                        .count();
                    assert_eq!(cmds, 11);
                    report!("close while reconnecting, server back: delivered 11 in {took:?}");
                }
                None => {
                    let e = closed.unwrap_err();
                    assert_eq!((e.unsent, e.unconfirmed), (11, 0), "{e}");
                    assert!(took >= CLOSE - Duration::from_millis(100), "{took:?}");
                    report!("close while reconnecting, server gone: {e} after {took:?}");
                }
            }
            check_identity(&client.stats());
        }
    })
    .await;
}

/// Issue 13, item 9: a restored value kept the `ts` it was first sent with,
/// seconds old after a reconnect, which skewed latencies computed from it.
/// A restored value is a new message about the current state: it gets the
/// time it is sent again, unless the event set its own `ts`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restored_values_carry_the_time_they_are_sent_again() {
    let _serial = serial().await;
    bounded(30, async {
        let server = LocalServer::start(ServerOptions::default()).await.unwrap();
        let addr = server.addr();
        let client = client_for(server.uri()).await;
        client.publish(&pose(1, 10)).unwrap();
        client
            .publish(
                &DynEvent::new("POSE")
                    .key(key_name(2))
                    .value(20)
                    .ts(12_345)
                    .latest(),
            )
            .unwrap();
        wait_received(&server, "both poses", |log| {
            log.iter().filter(|r| r.event.etype() == "POSE").count() == 2
        })
        .await;
        let first_ts = |log: &[Received], k: usize| {
            log.iter()
                .find(|r| pose_key(r) == Some(k))
                .map(|r| r.event.ts().unwrap())
                .unwrap()
        };
        let before = first_ts(&server.received(), 1);
        let mut states = StateLog::follow(&client);
        drop(server);
        states
            .until("Reconnecting", |s| {
                matches!(s, ConnectionState::Reconnecting { .. })
            })
            .await;
        tokio::time::sleep(Duration::from_millis(400)).await;
        let server = rebind(addr).await;
        wait_received(&server, "both poses restored", |log| {
            log.iter().filter(|r| r.event.etype() == "POSE").count() == 2
        })
        .await;
        let log = server.received();
        let after = first_ts(&log, 1);
        assert!(after >= before + 400, "restamped: {before} then {after}");
        assert_eq!(first_ts(&log, 2), 12_345, "an event's own ts is kept");
        client.close().await.unwrap();
    })
    .await;
}

/// Large values (encoded outside the lock, masked by the publishing thread
/// and written from their own buffers) come through a reconnect intact:
/// the keyed ones restored with a new `ts` (so their frames are masked to
/// line up at another offset), the reliable ones that were not confirmed
/// written again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_values_are_restored_and_resent_intact() {
    let _serial = serial().await;
    bounded(30, async {
        let server = LocalServer::start(ServerOptions::default()).await.unwrap();
        let addr = server.addr();
        let client = client_for(server.uri()).await;
        let blob = |k: usize, len: usize| -> Vec<u8> {
            (0..len).map(|i| (i * 31 + k * 7) as u8).collect()
        };
        // Sizes that leave the tail at every offset modulo 4.
        let sizes = [40_000usize, 40_001, 40_002, 40_003];
        for (k, &len) in sizes.iter().enumerate() {
            let ev = DynEvent::new("BLOB")
                .key(key_name(k))
                .value(Value::Bin(blob(k, len)))
                .latest();
            client.send(&ev).await.unwrap();
        }
        wait_received(&server, "every blob", |log| {
            log.iter().filter(|r| r.event.etype() == "BLOB").count() == sizes.len()
        })
        .await;
        let check = |log: &[Received]| {
            for (k, &len) in sizes.iter().enumerate() {
                let r = log
                    .iter()
                    .find(|r| r.event.etype() == "BLOB" && r.event.key() == Some(&key_name(k)))
                    .expect("a value of every key");
                assert_eq!(r.event.data().unwrap(), Value::Bin(blob(k, len)), "key {k}");
            }
        };
        check(&server.received());
        let mut states = StateLog::follow(&client);
        drop(server);
        states
            .until("Reconnecting", |s| {
                matches!(s, ConnectionState::Reconnecting { .. })
            })
            .await;
        // Reliable blobs published while disconnected wait in the ring.
        for seq in 0..3i64 {
            let ev = DynEvent::new("RBLOB").value(Value::Bin(blob(100 + seq as usize, 50_001)));
            client.publish(&ev).unwrap();
        }
        let server = rebind(addr).await;
        wait_received(&server, "blobs restored and sent", |log| {
            log.iter().filter(|r| r.event.etype() == "BLOB").count() == sizes.len()
                && log.iter().filter(|r| r.event.etype() == "RBLOB").count() == 3
        })
        .await;
        let log = server.received();
        check(&log);
        let rblobs: Vec<Value> = log
            .iter()
            .filter(|r| r.event.etype() == "RBLOB")
            .map(|r| r.event.data().unwrap())
            .collect();
        let want: Vec<Value> = (0..3).map(|s| Value::Bin(blob(100 + s, 50_001))).collect();
        assert_eq!(rblobs, want);
        client.close().await.unwrap();
    })
    .await;
}

/// Issue 14, item 1: the backoff started again after every handshake, so a
/// server that closes each connection right after the upgrade got 99
/// connections in 10 s, each "attempt 1, in ~100 ms". Now it starts again
/// only after a connection stayed up 2 s. (Scaled: 10 ms doubling to
/// 400 ms, for 4 s; with the defaults, BENCHMARKS.md has the 10 s run.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_that_closes_every_connection_at_once_gets_no_storm() {
    let _serial = serial().await;
    bounded(30, async {
        let peer = common::RawPeer::bind().await;
        let uri = peer.uri();
        let accepted = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let counter = accepted.clone();
        let server = tokio::spawn(async move {
            loop {
                let s = peer.accept().await;
                counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                drop(s);
            }
        });
        let client = VuerClient::builder()
            .uri(uri)
            .reconnect(Some(Reconnect {
                initial_delay: Duration::from_millis(10),
                max_delay: Duration::from_millis(400),
                ..Reconnect::default()
            }))
            .connect()
            .await
            .unwrap();
        let mut states = client.state_changes();
        tokio::time::sleep(Duration::from_secs(4)).await;
        let n = accepted.load(std::sync::atomic::Ordering::Relaxed);
        let mut attempts = Vec::new();
        while let Ok(s) = states.try_recv() {
            if let ConnectionState::Reconnecting { attempt, .. } = s {
                attempts.push(attempt);
            }
        }
        report!("closed at once: {n} connections in 4 s; attempts {attempts:?}");
        // 10+20+40+80+160+320 ms, then every 400 ms: about 14 (the storm
        // was several hundred).
        assert!(n <= 20, "{n} connections in 4 s");
        assert!(attempts.windows(2).all(|w| w[1] > w[0]), "{attempts:?}");
        server.abort();
        drop(client);
    })
    .await;
}

/// Issue 14, item 9: with a full send buffer, a server whose application
/// froze was declared dead only once its kernel stopped acknowledging (35 s
/// for a 15 s timeout). Only frames count now: detection takes the timeout
/// (checked every eighth of it), whatever the send buffer holds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_server_is_found_in_time_whatever_the_send_buffer_holds() {
    let _serial = serial().await;
    bounded(60, async {
        const KEEPALIVE: Duration = Duration::from_secs(2);
        let server = LocalServer::start(ServerOptions::default()).await.unwrap();
        let client = VuerClient::builder()
            .uri(server.uri())
            .keepalive_timeout(Some(KEEPALIVE))
            .ping_interval(Some(Duration::from_millis(500)))
            .reconnect(None)
            .pacing(None)
            .connect()
            .await
            .unwrap();
        assert!(
            server
                .wait_until(|s| s.inits == 1, Duration::from_secs(5))
                .await
        );
        // A reliable stream of 256 KiB events: the kernel buffers on both
        // sides fill while the server's kernel goes on acknowledging.
        let p = client.publisher();
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let halt = stop.clone();
        let producer = std::thread::spawn(move || {
            let ev = DynEvent::new("BULK").value(vuer_client::Value::Bin(vec![7; 256 << 10]));
            while !halt.load(std::sync::atomic::Ordering::Relaxed) {
                if p.publish(&ev).is_err() {
                    std::thread::sleep(Duration::from_millis(1));
                }
            }
        });
        tokio::time::sleep(Duration::from_millis(200)).await;
        server.pause_reading();
        let t = Instant::now();
        let reason = loop {
            if let ConnectionState::Closed(r) = client.state() {
                break r;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        };
        let found = t.elapsed();
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        producer.join().unwrap();
        report!("frozen server, full send buffer: found after {found:?} (timeout {KEEPALIVE:?})");
        assert_eq!(reason, Disconnect::KeepaliveTimeout(KEEPALIVE));
        assert!(
            found <= KEEPALIVE + KEEPALIVE / 8 + Duration::from_millis(500),
            "{found:?}"
        );
    })
    .await;
}

// ---------------------------------------------------------------------------
// Reconnect options.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_attempts_gives_up_and_closes() {
    let _serial = serial().await;
    bounded(30, async {
        let server = LocalServer::start(ServerOptions::default()).await.unwrap();
        let client = VuerClient::builder()
            .uri(server.uri())
            .reconnect(Some(Reconnect {
                max_attempts: Some(3),
                ..fast_reconnect()
            }))
            .connect()
            .await
            .unwrap();
        let mut states = StateLog::follow(&client);
        for i in 0..10 {
            client.publish(&cmd(i)).unwrap();
        }
        client.flush().await.unwrap();
        assert!(
            server
                .wait_until(|s| s.events == 11, Duration::from_secs(5))
                .await
        );
        // The server goes away for good.
        server.abort_all();
        server.shutdown();
        drop(server);
        states
            .until("Disconnected", |s| {
                matches!(s, ConnectionState::Disconnected(_))
            })
            .await;
        // Accepted while disconnected: queued, then given up.
        for i in 10..20 {
            client.publish(&cmd(i)).unwrap();
        }
        let (closed, before) = states
            .until("Closed", |s| matches!(s, ConnectionState::Closed(_)))
            .await;
        let attempts: Vec<(u32, String)> = before
            .iter()
            .map(|s| match s {
                ConnectionState::Reconnecting { attempt, error, .. } => (*attempt, error.clone()),
                other => panic!("unexpected {other:?}"),
            })
            .collect();
        assert_eq!(
            attempts.iter().map(|a| a.0).collect::<Vec<_>>(),
            vec![1, 2, 3]
        );
        // Each state says why the previous try failed: the lost connection,
        // then the refused attempts.
        assert!(!attempts[0].1.is_empty(), "{attempts:?}");
        assert!(
            attempts[1..].iter().all(|a| a.1.contains("refused")),
            "{attempts:?}"
        );
        let ConnectionState::Closed(Disconnect::GaveUp {
            attempts,
            last_error,
        }) = &closed
        else {
            panic!("{closed:?}");
        };
        assert_eq!(*attempts, 3);
        assert!(last_error.contains("refused"), "{last_error}");
        assert_eq!(client.state(), closed);
        assert!(matches!(
            client.publish(&cmd(99)),
            Err(PublishError::Closed(Disconnect::GaveUp { .. }))
        ));
        assert!(matches!(
            client.send(&cmd(99)).await,
            Err(PublishError::Closed(Disconnect::GaveUp { .. }))
        ));
        let s = client.stats();
        check_identity(&s);
        assert_eq!(s.pending, 0);
        // Dropped: the 10 accepted while disconnected, and the ones the dead
        // server had not confirmed (put back in line to be resent).
        assert_eq!(s.dropped, 10 + s.resent, "{s:?}");
        assert_eq!((s.connects, s.disconnects), (1, 1));
        // The time spent trying counts as downtime.
        assert!(s.downtime >= Duration::from_millis(16 + 32 + 64), "{s:?}");
        // close() says why, and what was lost.
        match client.close().await {
            Err(e) => {
                assert!(matches!(e.reason, Disconnect::GaveUp { .. }), "{e}");
                assert_eq!(e.unsent, s.dropped, "{e}");
            }
            Ok(()) => panic!("a client that gave up closed cleanly"),
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_first_connect_finds_a_server_that_starts_later() {
    let _serial = serial().await;
    bounded(30, async {
        let port = common::free_port();
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let uri = format!("ws://{addr}");
        // Without the option, the first failure is reported at once.
        let err = VuerClient::builder()
            .uri(&uri)
            .reconnect(Some(fast_reconnect()))
            .connect()
            .await
            .unwrap_err();
        assert!(
            matches!(err, vuer_client::ConnectError::Refused { .. }),
            "{err:?}"
        );

        let late = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(300)).await;
            LocalServer::start(ServerOptions {
                addr,
                ..Default::default()
            })
            .await
            .unwrap()
        });
        let t = Instant::now();
        let client = VuerClient::builder()
            .uri(&uri)
            .reconnect(Some(fast_reconnect()))
            .retry_first_connect(true)
            .connect()
            .await
            .unwrap();
        let waited = t.elapsed();
        let server = late.await.unwrap();
        assert!(waited >= Duration::from_millis(300), "{waited:?}");
        assert!(
            waited <= Duration::from_millis(300) + RECONNECT_BOUND,
            "{waited:?}"
        );
        assert!(client.is_connected());
        client.publish(&cmd(1)).unwrap();
        client.flush().await.unwrap();
        wait_received(&server, "INIT and the event", |log| {
            log.iter().map(|r| r.event.etype()).collect::<Vec<_>>() == ["INIT", "CMD"]
        })
        .await;
        assert_eq!(client.stats().connects, 1);
        report!(
            "retry_first_connect: connected {waited:?} after the first try (server up at 300 ms)"
        );
        client.close().await.unwrap();

        // With max_attempts, the retries end with the last error.
        let port = common::free_port();
        let err = VuerClient::builder()
            .uri(format!("ws://127.0.0.1:{port}"))
            .reconnect(Some(Reconnect {
                max_attempts: Some(2),
                ..fast_reconnect()
            }))
            .retry_first_connect(true)
            .connect()
            .await
            .unwrap_err();
        assert!(
            matches!(err, vuer_client::ConnectError::Refused { .. }),
            "{err:?}"
        );
    })
    .await;
}

/// After a reconnect, the session gets INIT and then the latest value of
/// every key (restore_state on, the default), or only INIT (off).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restore_state_off_does_not_resend_old_values() {
    let _serial = serial().await;
    bounded(30, async {
        for restore in [true, false] {
            let server = LocalServer::start(ServerOptions::default()).await.unwrap();
            let client = VuerClient::builder()
                .uri(server.uri())
                .reconnect(Some(fast_reconnect()))
                .restore_state(restore)
                .connect()
                .await
                .unwrap();
            let mut states = StateLog::follow(&client);
            for v in 1..=3 {
                for k in 0..KEYS {
                    client.publish(&pose(k, v)).unwrap();
                }
                client.flush().await.unwrap();
            }
            wait_session_ready(&server).await;
            server.abort_all();
            states
                .until("Connected", |s| matches!(s, ConnectionState::Connected))
                .await;
            client
                .send(&DynEvent::new("MARK").reliable())
                .await
                .unwrap();
            client.flush().await.unwrap();
            wait_received(&server, "the marker", |log| {
                log.iter().any(|r| r.event.etype() == "MARK")
            })
            .await;
            let log = server.received();
            let second: Vec<(String, Option<i64>)> = log
                .iter()
                .filter(|r| r.conn == 1)
                .map(|r| {
                    let v = pose_key(r).map(|_| int(r));
                    (r.event.etype().to_owned(), v)
                })
                .collect();
            let mut want = vec![("INIT".to_owned(), None)];
            if restore {
                // Restored in the order the values were first written.
                want.extend((0..KEYS).map(|_| ("POSE".to_owned(), Some(3))));
            }
            want.push(("MARK".to_owned(), None));
            assert_eq!(second, want, "restore_state({restore})");
            check_identity(&client.stats());
            client.close().await.unwrap();
        }
    })
    .await;
}

/// While disconnected: keyed values coalesce (one per key), reliable ones
/// fill the bounds and are then refused (publish) or wait (send().await);
/// all of it is delivered after the reconnect.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publishing_while_disconnected_is_bounded_then_delivered() {
    let _serial = serial().await;
    bounded(30, async {
        const LIMIT: usize = 64;
        let server = LocalServer::start(ServerOptions::default()).await.unwrap();
        let addr = server.addr();
        let client = VuerClient::builder()
            .uri(server.uri())
            .reconnect(Some(fast_reconnect()))
            .max_queued_events(LIMIT)
            .connect()
            .await
            .unwrap();
        let mut states = StateLog::follow(&client);
        client.publish(&pose(0, 0)).unwrap();
        client.flush().await.unwrap();
        wait_received(&server, "the first value", |log| log.len() == 2).await;
        let first_log = server.take_received();
        server.abort_all();
        server.shutdown();
        drop(server);
        states
            .until("Reconnecting", |s| {
                matches!(s, ConnectionState::Reconnecting { .. })
            })
            .await;

        let mut published = Published {
            last: vec![None; KEYS],
            ..Default::default()
        };
        for v in 1..=1000 {
            for k in 0..KEYS {
                client.publish(&pose(k, v)).unwrap();
                published.last[k] = Some(v);
            }
        }
        let s = client.stats();
        assert_eq!(s.queue_depth, KEYS as u64, "keyed values coalesce: {s:?}");
        let mut seq = 0;
        let full = loop {
            match client.publish(&cmd(seq)) {
                Ok(()) => published.reliable.push(seq),
                Err(e) => break e,
            }
            seq += 1;
            assert!(seq < 10 * LIMIT as i64, "never full");
        };
        assert_eq!(
            full,
            PublishError::Full {
                queued: LIMIT,
                bytes: client.stats().queue_bytes as usize
            }
        );
        assert_eq!(published.reliable.len(), LIMIT - KEYS);
        // A keyed value still replaces its queued one.
        client.publish(&pose(0, 1001)).unwrap();
        published.last[0] = Some(1001);
        let s = client.stats();
        assert_eq!(s.queue_depth, LIMIT as u64);
        assert_eq!(s.rejected, 1);
        check_identity(&s);
        // send().await waits for room...
        let last = cmd(seq);
        let waiting = client.send(&last);
        tokio::pin!(waiting);
        assert!(
            tokio::time::timeout(Duration::from_millis(300), &mut waiting)
                .await
                .is_err(),
            "send() returned while the queue was full"
        );
        // ...which the restarted server makes.
        let server = rebind(addr).await;
        waiting.await.unwrap();
        published.reliable.push(seq);
        states.connected().await;
        client
            .send(&DynEvent::new("MARK").reliable())
            .await
            .unwrap();
        client.flush().await.unwrap();
        wait_received(&server, "the marker", |log| {
            log.iter().any(|r| r.event.etype() == "MARK")
        })
        .await;
        let s = client.stats();
        check_identity(&s);
        assert_eq!(s.rejected, 1, "a send that waited is not a rejection");
        let (n, dups) = check_delivery(&sessions(&[first_log, server.received()]), &published);
        assert_eq!((n, dups), (2, 0));
        // The new session got the latest value of every key, then the
        // reliable events in order.
        let second = server.received();
        assert_eq!(second[0].event.etype(), "INIT");
        client.close().await.unwrap();
    })
    .await;
}

// ---------------------------------------------------------------------------
// Interop: the real Python vuer 0.1.6 server, killed (no close frame) and
// started again on the same port.

fn py_event(etype: &'static str) -> impl Fn(&serde_json::Value) -> bool {
    move |v| v["kind"] == "event" && v["etype"] == etype
}

/// Every line `py` printed: those already seen and the rest, until its
/// output ends (after `kill`) or stays quiet for `quiet`.
async fn drain_lines(py: &mut common::PyServer, quiet: Duration) -> Vec<serde_json::Value> {
    while py.next(quiet).await.is_some() {}
    py.seen.clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_server_killed_and_restarted_on_the_same_port() {
    let _serial = serial().await;
    let _py = common::python_lock().await;
    bounded(100, async {
        const T: Duration = Duration::from_secs(30);
        const ETYPES: [&str; 4] = ["INIT", "POSE", "CMD", "MARK"];
        let port = common::free_port();
        let mut py = common::PyServer::start_on(port, "record", &ETYPES).await;
        let client = client_for(py.uri()).await;
        let mut states = StateLog::follow(&client);
        assert_eq!(
            py.expect(|v| v["kind"] == "spawn", T).await["handler"],
            "rust"
        );
        py.expect(py_event("INIT"), T).await;

        // 1. Killed mid-stream (100 rounds a second), started again.
        let producer = Producer::start(client.publisher(), Duration::from_millis(10));
        py.collect(30, py_event("CMD"), T).await;
        states.take();
        let killed = Instant::now();
        py.kill();
        let first = drain_lines(&mut py, Duration::from_millis(200)).await;
        let (lost, _) = states
            .until("Disconnected", |s| {
                matches!(s, ConnectionState::Disconnected(_))
            })
            .await;
        let mut py2 = common::PyServer::start_on(port, "record", &ETYPES).await;
        let up = Instant::now();
        let (_, mut cycle) = states
            .until("Connected", |s| matches!(s, ConnectionState::Connected))
            .await;
        let reconnect1 = up.elapsed();
        let down1 = killed.elapsed();
        cycle.insert(0, lost);
        cycle.push(ConnectionState::Connected);
        check_cycle(&cycle, |r| {
            matches!(r, Disconnect::Eof | Disconnect::Io { .. })
        });
        // The new session's spawn handler runs and gets INIT first.
        let spawn = py2.expect(|v| v["kind"] == "spawn", T).await;
        assert_eq!(spawn["handler"], "rust");
        let events: Vec<serde_json::Value> = py2.collect(1, |v| v["kind"] == "event", T).await;
        assert_eq!(events[0]["etype"], "INIT", "{events:?}");
        // The stream goes on.
        py2.collect(30, py_event("CMD"), T).await;
        let published = producer.stop().await;
        client
            .send(&DynEvent::new("MARK").reliable())
            .await
            .unwrap();
        client.flush().await.unwrap();
        py2.expect(py_event("MARK"), T).await;
        let second = py2.seen.clone();

        // Reliable events: none lost across the kill.
        let cmds: BTreeSet<i64> = first
            .iter()
            .chain(&second)
            .filter(|v| py_event("CMD")(v))
            .map(|v| v["value"].as_i64().unwrap())
            .collect();
        let missing: Vec<i64> = published
            .reliable
            .iter()
            .copied()
            .filter(|s| !cmds.contains(s))
            .collect();
        assert!(missing.is_empty(), "reliable events lost: {missing:?}");
        // Keyed values: the new session starts each key at the latest
        // value or later, and ends with the latest published.
        let by_key = |lines: &[serde_json::Value]| {
            let mut m: BTreeMap<String, Vec<i64>> = BTreeMap::new();
            for v in lines.iter().filter(|v| py_event("POSE")(v)) {
                m.entry(v["key"].as_str().unwrap().to_owned())
                    .or_default()
                    .push(v["value"].as_i64().unwrap());
            }
            m
        };
        let (before, after) = (by_key(&first), by_key(&second));
        for k in 0..KEYS {
            let name = key_name(k);
            let old = before[&name].last().unwrap();
            let new = &after[&name];
            assert!(new[0] >= *old, "key {name} restarted at {} < {old}", new[0]);
            assert_eq!(Some(*new.last().unwrap()), published.last[k], "key {name}");
        }

        // 2. Killed while idle: the next session gets exactly the latest
        // value of every key (restored), with nothing published meanwhile.
        states.take();
        let killed = Instant::now();
        py2.kill();
        states
            .until("Disconnected", |s| {
                matches!(s, ConnectionState::Disconnected(_))
            })
            .await;
        let mut py3 = common::PyServer::start_on(port, "record", &ETYPES).await;
        let up = Instant::now();
        states
            .until("Connected", |s| matches!(s, ConnectionState::Connected))
            .await;
        let reconnect2 = up.elapsed();
        let down2 = killed.elapsed();
        py3.expect(|v| v["kind"] == "spawn", T).await;
        let events = py3.collect(1 + KEYS, |v| v["kind"] == "event", T).await;
        assert_eq!(events[0]["etype"], "INIT");
        let restored: BTreeMap<String, i64> = events[1..]
            .iter()
            .map(|v| {
                assert_eq!(v["etype"], "POSE", "{events:?}");
                (
                    v["key"].as_str().unwrap().to_owned(),
                    v["value"].as_i64().unwrap(),
                )
            })
            .collect();
        let want: BTreeMap<String, i64> = (0..KEYS)
            .map(|k| (key_name(k), published.last[k].unwrap()))
            .collect();
        assert_eq!(restored, want);

        let s = client.stats();
        check_identity(&s);
        assert_eq!((s.connects, s.disconnects), (3, 2));
        report!(
            "python kill/restart: server ready -> Connected {:.1} ms and {:.1} ms; \
             downtime (kill -> Connected, includes the ~python start) {:.0} ms and {:.0} ms; \
             {} reliable events, none lost, {} resent",
            ms(reconnect1),
            ms(reconnect2),
            ms(down1),
            ms(down2),
            published.reliable.len(),
            s.resent
        );
        assert!(reconnect1 <= RECONNECT_BOUND && reconnect2 <= RECONNECT_BOUND);
        client.close().await.unwrap();
    })
    .await;
}
