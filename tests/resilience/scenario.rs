//! The resilience tests' fixtures, in one place: a [`Scenario`] (a
//! server, optionally behind a fault proxy, a client with a short backoff,
//! a producer of keyed and reliable events, the client's state changes)
//! whose methods are the steps of a fault script: start, kill, restart,
//! fault the link, wait for the reconnect, finish and check the delivery
//! contract. Measurements print only when `VUER_TEST_REPORT` is set
//! ([`report!`]).

#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{broadcast, watch};
use vuer_client::{
    ConnectionState, Disconnect, DynEvent, PublishError, Publisher, Reconnect, VuerClient,
};
use vuer_client_testkit::check_identity;
use vuer_client_testkit::proxy::{Proxy, ProxyOptions};
use vuer_client_testkit::server::{LocalServer, Received, ServerOptions};

/// Prints a measurement when `VUER_TEST_REPORT` is set (a percentile
/// report, a timing); otherwise nothing, so that a test's output is its
/// verdict.
macro_rules! report {
    ($($arg:tt)*) => {
        if std::env::var_os("VUER_TEST_REPORT").is_some() {
            eprintln!($($arg)*);
        }
    };
}
pub(crate) use report;

/// Keys of the keyed (latest value wins) stream.
pub(crate) const KEYS: usize = 4;

/// Short backoff for tests: 20 ms doubling to 200 ms, ± 20 %.
pub(crate) fn fast_reconnect() -> Reconnect {
    Reconnect {
        initial_delay: Duration::from_millis(20),
        max_delay: Duration::from_millis(200),
        multiplier: 2.0,
        jitter: 0.2,
        max_attempts: None,
    }
}

/// The longest a reconnect may take once the server is back: one full
/// backoff delay (plus jitter) and the connect itself, with slack for a
/// loaded 2-core CI machine.
pub(crate) const RECONNECT_BOUND: Duration = Duration::from_millis(240 + 760);

/// Tests in this file run one at a time: they measure time and memory, and
/// the machine has two cores.
pub(crate) async fn serial() -> tokio::sync::MutexGuard<'static, ()> {
    static LOCK: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
    LOCK.lock().await
}

pub(crate) fn key_name(k: usize) -> String {
    format!("k{k}")
}

pub(crate) fn pose(k: usize, v: i64) -> DynEvent {
    DynEvent::new("POSE").key(key_name(k)).value(v).latest()
}

pub(crate) fn cmd(seq: i64) -> DynEvent {
    DynEvent::new("CMD").value(seq).reliable()
}

/// What a producer got accepted.
#[derive(Debug, Default, Clone)]
pub(crate) struct Published {
    /// Latest accepted value of each key.
    pub(crate) last: Vec<Option<i64>>,
    /// Reliable events accepted (by sequence number).
    pub(crate) reliable: Vec<i64>,
    /// Reliable events refused with `Full` (not accepted: not owed).
    pub(crate) reliable_full: u64,
}

/// A producer publishing, every `period`, one value for each of the
/// `KEYS` keys (values increase) and one reliable event, until stopped.
pub(crate) struct Producer {
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<Published>,
}

impl Producer {
    pub(crate) fn start(p: Publisher, period: Duration) -> Producer {
        Self::start_from(p, period, 0, 0)
    }

    pub(crate) fn start_from(
        p: Publisher,
        period: Duration,
        first_value: i64,
        first_seq: i64,
    ) -> Producer {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let task = tokio::spawn(async move {
            let mut out = Published {
                last: vec![None; KEYS],
                ..Default::default()
            };
            let mut tick = tokio::time::interval(period);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
            let mut v = first_value;
            let mut seq = first_seq;
            while !flag.load(Ordering::Relaxed) {
                tick.tick().await;
                for k in 0..KEYS {
                    match p.publish(&pose(k, v)) {
                        Ok(()) => out.last[k] = Some(v),
                        Err(PublishError::Full { .. }) => {}
                        Err(e) => panic!("publish: {e}"),
                    }
                }
                v += 1;
                match p.publish(&cmd(seq)) {
                    Ok(()) => out.reliable.push(seq),
                    Err(PublishError::Full { .. }) => out.reliable_full += 1,
                    Err(e) => panic!("publish: {e}"),
                }
                seq += 1;
            }
            out
        });
        Producer { stop, task }
    }

    pub(crate) async fn stop(self) -> Published {
        self.stop.store(true, Ordering::Relaxed);
        self.task.await.expect("producer panicked")
    }
}

/// Every state the client goes through ([`VuerClient::state_changes`]),
/// and the latest one ([`VuerClient::watch_state`]) to wait on.
pub(crate) struct StateLog {
    rx: watch::Receiver<ConnectionState>,
    changes: broadcast::Receiver<ConnectionState>,
}

impl StateLog {
    pub(crate) fn follow(client: &VuerClient) -> StateLog {
        StateLog {
            changes: client.state_changes(),
            rx: client.watch_state(),
        }
    }

    /// Waits until the state satisfies `pred`.
    pub(crate) async fn wait(&mut self, what: &str, pred: impl Fn(&ConnectionState) -> bool) {
        let ok = tokio::time::timeout(Duration::from_secs(20), self.rx.wait_for(|s| pred(s)))
            .await
            .is_ok_and(|r| r.is_ok());
        assert!(ok, "state never became {what}; now {:?}", *self.rx.borrow());
    }

    pub(crate) async fn connected(&mut self) {
        self.wait("Connected", |s| matches!(s, ConnectionState::Connected))
            .await
    }

    pub(crate) async fn not_connected(&mut self) {
        self.wait("not Connected", |s| {
            !matches!(s, ConnectionState::Connected)
        })
        .await
    }

    /// Consumes changes until one satisfies `pred`; returns it and what
    /// came before it.
    pub(crate) async fn until(
        &mut self,
        what: &str,
        pred: impl Fn(&ConnectionState) -> bool,
    ) -> (ConnectionState, Vec<ConnectionState>) {
        let mut before = Vec::new();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        loop {
            match tokio::time::timeout_at(deadline, self.changes.recv()).await {
                Ok(Ok(s)) if pred(&s) => return (s, before),
                Ok(Ok(s)) => before.push(s),
                Ok(Err(e)) => panic!("state changes: {e}"),
                Err(_) => panic!("no state change {what} within 20 s; saw {before:?}"),
            }
        }
    }

    /// The changes since the last call.
    pub(crate) fn take(&mut self) -> Vec<ConnectionState> {
        let mut out = Vec::new();
        loop {
            match self.changes.try_recv() {
                Ok(s) => out.push(s),
                Err(broadcast::error::TryRecvError::Empty) => return out,
                Err(e) => panic!("state changes: {e}"),
            }
        }
    }
}

/// Events received by the server(s), grouped per session (one websocket
/// connection), in the order the sessions happened.
pub(crate) fn sessions(logs: &[Vec<Received>]) -> Vec<Vec<Received>> {
    let mut out = Vec::new();
    for log in logs {
        let mut by_conn: BTreeMap<u64, Vec<Received>> = BTreeMap::new();
        for r in log {
            by_conn.entry(r.conn).or_default().push(r.clone());
        }
        out.extend(by_conn.into_values());
    }
    out
}

pub(crate) fn int(r: &Received) -> i64 {
    r.event
        .data()
        .ok()
        .and_then(|v| v.as_i64())
        .unwrap_or_else(|| panic!("not an int: {:?}", r.event.data()))
}

pub(crate) fn pose_key(r: &Received) -> Option<usize> {
    if r.event.etype() != "POSE" {
        return None;
    }
    let k = r.event.key()?;
    k.strip_prefix('k')?.parse().ok()
}

/// The delivery contract over the sessions a server saw:
/// INIT first in each session; reliable events in order within a session;
/// every accepted reliable event delivered; each new session starts every
/// key at (or after) the latest value of the sessions before it; the last
/// session ends with the latest value of every key.
///
/// Returns (sessions, duplicate reliable deliveries).
pub(crate) fn check_delivery(sessions: &[Vec<Received>], published: &Published) -> (usize, usize) {
    let mut seen_reliable: BTreeMap<i64, usize> = BTreeMap::new();
    let mut latest: Vec<Option<i64>> = vec![None; KEYS];
    for (i, s) in sessions.iter().enumerate() {
        assert_eq!(
            s[0].event.etype(),
            "INIT",
            "session {i} does not start with INIT"
        );
        assert!(
            s.iter().skip(1).all(|r| r.event.etype() != "INIT"),
            "session {i}: a second INIT"
        );
        let mut prev_cmd = None;
        let mut first: Vec<Option<i64>> = vec![None; KEYS];
        let mut last_in_session: Vec<Option<i64>> = vec![None; KEYS];
        for r in s.iter().skip(1) {
            match r.event.etype() {
                "CMD" => {
                    let seq = int(r);
                    assert!(
                        prev_cmd.map_or(true, |p| seq > p),
                        "session {i}: reliable events out of order: {seq} after {prev_cmd:?}"
                    );
                    prev_cmd = Some(seq);
                    *seen_reliable.entry(seq).or_default() += 1;
                }
                "POSE" => {
                    let k = pose_key(r).expect("POSE key");
                    let v = int(r);
                    if let Some(p) = last_in_session[k] {
                        assert!(v > p, "session {i}: key {k} went back from {p} to {v}");
                    }
                    first[k].get_or_insert(v);
                    last_in_session[k] = Some(v);
                }
                "MARK" => {}
                other => panic!("unexpected etype {other}"),
            }
        }
        if i > 0 {
            for k in 0..KEYS {
                if let (Some(f), Some(l)) = (first[k], latest[k]) {
                    assert!(
                        f >= l,
                        "session {i} starts key {k} at {f}, older than {l} already delivered: \
                         the state restore sent a stale value"
                    );
                }
            }
        }
        for k in 0..KEYS {
            if last_in_session[k].is_some() {
                latest[k] = last_in_session[k];
            }
        }
    }
    let missing: Vec<i64> = published
        .reliable
        .iter()
        .copied()
        .filter(|s| !seen_reliable.contains_key(s))
        .collect();
    assert!(
        missing.is_empty(),
        "{} of {} accepted reliable events never delivered (first: {:?})",
        missing.len(),
        published.reliable.len(),
        &missing[..missing.len().min(20)]
    );
    let last = sessions.last().expect("at least one session");
    for k in 0..KEYS {
        if let Some(want) = published.last[k] {
            let got = last.iter().rev().find(|r| pose_key(r) == Some(k)).map(int);
            assert_eq!(
                got,
                Some(want),
                "the last session does not end with the latest value of key {k}"
            );
        }
    }
    let dups = seen_reliable.values().map(|n| n - 1).sum();
    (sessions.len(), dups)
}

/// True once `conn` has sent INIT and a value of every key.
pub(crate) fn session_has_all_keys(log: &[Received], conn: u64) -> bool {
    let keys: BTreeSet<usize> = log
        .iter()
        .filter(|r| r.conn == conn)
        .filter_map(pose_key)
        .collect();
    keys.len() == KEYS
}

/// Waits until the server's current connection (the latest accepted) has
/// received INIT and a value of every key: the session is up and restored.
pub(crate) async fn wait_session_ready(server: &LocalServer) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let st = server.stats();
        if st.connections > 0 && session_has_all_keys(&server.received(), st.connections - 1) {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the current session never got every key: {st:?}"
        );
        server
            .wait_until(
                |s| s.events > st.events || s.connections > st.connections,
                Duration::from_millis(100),
            )
            .await;
    }
}

/// Waits until `pred` holds for what the server received.
pub(crate) async fn wait_received(
    server: &LocalServer,
    what: &str,
    pred: impl Fn(&[Received]) -> bool,
) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let n = server.stats().events;
        if pred(&server.received()) {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "server never received {what}"
        );
        server
            .wait_until(|s| s.events > n, Duration::from_millis(100))
            .await;
    }
}

/// Binds `addr` again for a restarted server (`SO_REUSEADDR`, retried
/// while the old listener is still being closed by its task).
pub(crate) async fn rebind(addr: SocketAddr) -> LocalServer {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.set_reuseaddr(true).unwrap();
        match socket.bind(addr).and_then(|()| socket.listen(128)) {
            Ok(listener) => return LocalServer::from_listener(listener, ServerOptions::default()),
            Err(e) if e.kind() == std::io::ErrorKind::AddrInUse && Instant::now() < deadline => {
                tokio::task::yield_now().await;
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            Err(e) => panic!("cannot bind {addr} again: {e}"),
        }
    }
}

pub(crate) fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

pub(crate) fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// Checks the states of one disconnect–reconnect cycle: Disconnected(reason),
/// Reconnecting with attempts counting up by one (from 1 after a connection
/// that stayed up 2 s; after a shorter one the count, and the backoff, go
/// on), then Connected.
pub(crate) fn check_cycle(states: &[ConnectionState], want: impl Fn(&Disconnect) -> bool) {
    let mut it = states.iter();
    match it.next() {
        Some(ConnectionState::Disconnected(r)) => assert!(want(r), "unexpected reason {r:?}"),
        other => panic!("cycle does not start with Disconnected: {other:?} in {states:?}"),
    }
    let mut next_attempt: Option<u32> = None;
    let mut connected = false;
    for s in it {
        match s {
            ConnectionState::Reconnecting { attempt, delay, .. } => {
                assert!(!connected, "{states:?}");
                assert_eq!(*attempt, next_attempt.unwrap_or(*attempt), "{states:?}");
                assert!(*attempt >= 1, "{states:?}");
                assert!(*delay <= Duration::from_millis(200), "{delay:?}");
                next_attempt = Some(attempt + 1);
            }
            ConnectionState::Connected => {
                assert!(!connected && next_attempt.is_some(), "{states:?}");
                connected = true;
            }
            other => panic!("unexpected state {other:?} in {states:?}"),
        }
    }
    assert!(connected, "cycle did not end Connected: {states:?}");
}

pub(crate) async fn client_for(uri: String) -> VuerClient {
    VuerClient::builder()
        .uri(uri)
        .reconnect(Some(fast_reconnect()))
        .ping_interval(Some(Duration::from_millis(200)))
        .keepalive_timeout(Some(Duration::from_secs(1)))
        .connect()
        .await
        .unwrap()
}

/// Stops the producer, then checks that everything owed reached `server`
/// (a marker sent last is read), the counts add up, and the delivery
/// contract holds over `earlier` logs and the server's.
pub(crate) async fn finish_and_check(
    client: &VuerClient,
    server: &LocalServer,
    producer: Producer,
    earlier: Vec<Vec<Received>>,
) -> (Published, usize, usize) {
    let published = producer.stop().await;
    client
        .send(&DynEvent::new("MARK").reliable())
        .await
        .unwrap();
    client.flush().await.unwrap();
    wait_received(server, "the marker", |log| {
        log.iter().any(|r| r.event.etype() == "MARK")
    })
    .await;
    let s = client.stats();
    check_identity(&s);
    let mut logs = earlier;
    logs.push(server.received());
    let (n, dups) = check_delivery(&sessions(&logs), &published);
    assert!(
        dups as u64 <= s.resent,
        "{dups} duplicates, {} resent",
        s.resent
    );
    (published, n, dups)
}

/// A fault script's world: the server (behind `proxy`, when the link is
/// to be faulted), the client (short backoff, 200 ms pings, 1 s
/// keepalive), a producer publishing keyed values and reliable events
/// every millisecond, and the client's state changes.
pub(crate) struct Scenario {
    server: Option<LocalServer>,
    pub(crate) proxy: Option<Proxy>,
    pub(crate) client: VuerClient,
    pub(crate) states: StateLog,
    producer: Option<Producer>,
    /// What servers killed earlier received (their sessions count too).
    pub(crate) earlier: Vec<Vec<Received>>,
    addr: SocketAddr,
}

impl Scenario {
    /// A server, a client connected to it directly, the producer running,
    /// the first session ready (INIT and every key received).
    pub(crate) async fn start() -> Scenario {
        Self::start_with(None).await
    }

    /// The same, through a fault proxy.
    pub(crate) async fn through_proxy() -> Scenario {
        Self::through_proxy_with(ProxyOptions::default()).await
    }

    /// The same, through a fault proxy with these options.
    pub(crate) async fn through_proxy_with(options: ProxyOptions) -> Scenario {
        Self::start_with(Some(options)).await
    }

    async fn start_with(proxied: Option<ProxyOptions>) -> Scenario {
        let server = LocalServer::start(ServerOptions::default()).await.unwrap();
        let proxy = match proxied {
            Some(options) => Some(Proxy::start_with(server.addr(), options).await.unwrap()),
            None => None,
        };
        let uri = proxy.as_ref().map_or_else(|| server.uri(), |p| p.uri());
        let client = client_for(uri).await;
        let states = StateLog::follow(&client);
        let producer = Producer::start(client.publisher(), Duration::from_millis(1));
        let addr = server.addr();
        let s = Scenario {
            server: Some(server),
            proxy,
            client,
            states,
            producer: Some(producer),
            earlier: Vec::new(),
            addr,
        };
        wait_session_ready(s.server()).await;
        s
    }

    /// The server running now.
    pub(crate) fn server(&self) -> &LocalServer {
        self.server.as_ref().expect("a server is running")
    }

    /// The proxy (for a scenario started [`through_proxy`](Self::through_proxy)).
    pub(crate) fn proxy(&self) -> &Proxy {
        self.proxy.as_ref().expect("a scenario through a proxy")
    }

    /// Waits a moment so that the next fault lands mid-stream, and forgets
    /// the state changes so far.
    pub(crate) async fn mid_stream(&mut self) {
        self.stream_for(Duration::from_millis(30)).await;
    }

    /// Once the session is ready, lets the stream run for `d`, and forgets
    /// the state changes so far.
    pub(crate) async fn stream_for(&mut self, d: Duration) {
        wait_session_ready(self.server()).await;
        tokio::time::sleep(d).await;
        self.states.take();
    }

    /// Kills the server: its connections dropped without a close frame,
    /// its listener closed (its log is kept); returns once the client has
    /// noticed.
    pub(crate) async fn kill(&mut self) {
        let dead = self.server.take().expect("a server is running");
        dead.abort_all();
        dead.shutdown();
        self.states.not_connected().await;
        self.earlier.push(dead.take_received());
    }

    /// Starts a server on the killed one's address again.
    pub(crate) async fn restart(&mut self) {
        self.server = Some(rebind(self.addr).await);
    }

    /// Waits for the reconnect that follows a fault injected at `since`:
    /// within [`RECONNECT_BOUND`], through the states `check_cycle`
    /// allows, having been disconnected for a reason `want` accepts.
    /// Returns how long it took.
    pub(crate) async fn reconnected(
        &mut self,
        since: Instant,
        want: impl Fn(&Disconnect) -> bool,
    ) -> Duration {
        let (_, mut cycle) = self
            .states
            .until("Connected", |s| matches!(s, ConnectionState::Connected))
            .await;
        cycle.push(ConnectionState::Connected);
        let took = since.elapsed();
        assert!(took <= RECONNECT_BOUND, "reconnected after {took:?}");
        check_cycle(&cycle, want);
        took
    }

    /// Stops the producer and checks the delivery contract over every
    /// session (see [`finish_and_check`]); returns what was published,
    /// the number of sessions and the duplicate deliveries.
    pub(crate) async fn finish(&mut self) -> (Published, usize, usize) {
        let server = self.server.as_ref().expect("a server is running");
        wait_session_ready(server).await;
        let producer = self.producer.take().expect("finished once");
        let earlier = std::mem::take(&mut self.earlier);
        finish_and_check(&self.client, server, producer, earlier).await
    }
}
