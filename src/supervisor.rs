//! The connection supervisor: one task per client that runs a connection's
//! sender and decoder, decides what their exit means, and reconnects (with
//! backoff) or closes the client for good.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::clock;
use crate::connection::{self, Connection, Target};
use crate::decoder::{self, DecoderExit};
use crate::error::{ConnectError, Disconnect};
use crate::reconnect::Reconnect;
use crate::sender::{self, SenderExit};
use crate::shared::{ConnCtx, Control, Direct, Outbox, Shared};
use crate::state::ConnectionState;
use crate::stats::Counters;
use crate::wire::{Slot, Wire};

/// Marks the supervisor task's end: if the task is dropped before it
/// closed the client (its runtime shut down, e.g. when `main` returned with
/// the client still open, even before the task first ran), what was
/// undelivered is counted and logged rather than lost silently. Made
/// before the task is spawned and moved into it, so that it is dropped
/// with the task's future whether or not that was ever polled.
pub(crate) struct Watch {
    shared: Arc<Shared>,
    done: bool,
}

impl Watch {
    pub(crate) fn new(shared: Arc<Shared>) -> Self {
        Watch {
            shared,
            done: false,
        }
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        self.shared.supervisor_gone.cancel();
        if !self.done && std::thread::panicking() {
            tracing::error!("the client's supervisor task panicked; the client is closed");
            finish(
                &self.shared,
                Disconnect::TaskPanicked {
                    task: "supervisor",
                    message: "see the log".into(),
                },
            );
        } else if !self.done {
            tracing::warn!(
                "the client's tasks were stopped (their runtime shut down) before it closed"
            );
            finish(&self.shared, Disconnect::Local);
        }
    }
}

/// Runs until the client is closed for good.
pub(crate) async fn run(mut watch: Watch, target: Target, first: Connection) {
    let shared = watch.shared.clone();
    supervise(&shared, target, first).await;
    watch.done = true;
}

/// Sleeps until `at_ns` ([`clock::now_ns`] time).
async fn sleep_until_ns(at_ns: u64) {
    let left = at_ns.saturating_sub(clock::now_ns());
    tokio::time::sleep(Duration::from_nanos(left)).await
}

/// Waits for `close()`, then until its deadline.
async fn close_deadline(shared: &Shared) {
    shared.close_requested.cancelled().await;
    if let Some((_, over)) = shared.close_deadlines() {
        sleep_until_ns(over).await;
    }
}

/// A connection must stay up this long before a loss of it starts the
/// backoff again from `initial_delay`; one lost sooner goes on where the
/// backoff was. Resetting after every handshake let a server that closes
/// each connection at once get 99 connections in 10 s, each "attempt 1".
const HEALTHY_AFTER: Duration = Duration::from_secs(2);

async fn supervise(shared: &Arc<Shared>, target: Target, first: Connection) {
    let mut next = Some(first);
    let mut attempts_total = 0u64;
    // Attempts since the last connection that stayed up `HEALTHY_AFTER`.
    let mut attempt = 0u32;
    while let Some(conn) = next.take() {
        Counters::add(&shared.counters.connects, 1);
        tracing::info!(uri = %target.shown, peer = %conn.peer, "connected");
        if !matches!(*shared.state.borrow(), ConnectionState::Connected) {
            shared.set_state(ConnectionState::Connected);
        }
        let up_since = Instant::now();
        let reason = run_connection(shared, conn).await;
        if up_since.elapsed() >= HEALTHY_AFTER {
            attempt = 0;
        }
        let closing = shared.close_requested.is_cancelled();
        if reason == Disconnect::Local && (closing || shared.shutdown.is_cancelled()) {
            finish(shared, reason);
            return;
        }
        Counters::add(&shared.counters.disconnects, 1);
        tracing::warn!(%reason, "connection lost");
        resend_unconfirmed(shared);
        shared.set_last_error(&reason);
        shared.set_state(ConnectionState::Disconnected(reason.clone()));
        let down_since = Instant::now();
        let Some(policy) = shared.config.reconnect.clone() else {
            finish(shared, reason);
            return;
        };
        let mut last_error = reason.to_string();
        loop {
            // Closing with events still to deliver: try at once, until the
            // close's deadline; with nothing to deliver, close now.
            if shared.close_requested.is_cancelled() {
                let over = shared.close_deadlines().map_or(0, |(_, over)| over);
                if !shared.has_undelivered() || clock::now_ns() >= over {
                    add_downtime(shared, down_since);
                    let reason = if shared.has_undelivered() {
                        reason.clone()
                    } else {
                        Disconnect::Local
                    };
                    finish(shared, reason);
                    return;
                }
            }
            attempt += 1;
            attempts_total += 1;
            // Read once: a close() from now on ends the backoff below.
            let closing = shared.close_requested.is_cancelled();
            let Some(delay) = next_attempt(
                shared,
                &policy,
                attempt,
                attempts_total,
                closing,
                &last_error,
            ) else {
                add_downtime(shared, down_since);
                finish(
                    shared,
                    Disconnect::GaveUp {
                        attempts: attempt - 1,
                        last_error,
                    },
                );
                return;
            };
            let close_called = tokio::select! {
                biased;
                _ = shared.close_requested.cancelled(), if !closing => true,
                _ = tokio::time::sleep(delay) => false,
            };
            if close_called {
                // `close()` during the backoff: decide again (above).
                continue;
            }
            let connect = connection::connect(&target, &shared.config.connect);
            let result = tokio::select! {
                biased;
                _ = close_deadline(shared) => {
                    add_downtime(shared, down_since);
                    finish(shared, reason);
                    return;
                }
                r = connect => r,
            };
            match result {
                Ok(conn) => {
                    add_downtime(shared, down_since);
                    prepare_reconnect(shared);
                    next = Some(conn);
                    break;
                }
                Err(e) => {
                    tracing::debug!(attempt, error = %e, "reconnect attempt failed");
                    last_error = e.to_string();
                    shared.set_last_error(&e);
                }
            }
        }
    }
}

/// One step of the backoff, for the reconnect loop and the first connect
/// alike: `None` when the policy's attempts are used up; else the delay
/// before attempt `attempt` (1-based; `total` counts every attempt, to vary
/// the jitter), announced as [`ConnectionState::Reconnecting`] with the
/// previous attempt's `error`. While closing with events to deliver, the
/// pause is short ([`CLOSING_RETRY`]), not the backoff.
fn next_attempt(
    shared: &Shared,
    policy: &Reconnect,
    attempt: u32,
    total: u64,
    closing: bool,
    error: &str,
) -> Option<Duration> {
    if policy.max_attempts.is_some_and(|m| attempt > m) {
        return None;
    }
    let backoff = policy.delay(attempt, total);
    let delay = if closing {
        CLOSING_RETRY.min(backoff)
    } else {
        backoff
    };
    shared.set_state(ConnectionState::Reconnecting {
        attempt,
        delay,
        error: error.to_owned(),
    });
    Some(delay)
}

/// The first connection: one attempt, or, with `retry_first_connect`, the
/// reconnect policy's attempts (the same backoff as after a loss).
pub(crate) async fn first_connect(
    shared: &Arc<Shared>,
    target: &Target,
) -> Result<Connection, ConnectError> {
    let policy = shared
        .config
        .reconnect
        .clone()
        .filter(|_| shared.config.retry_first_connect);
    let mut attempt = 0u32;
    loop {
        match connection::connect(target, &shared.config.connect).await {
            Ok(c) => return Ok(c),
            Err(e) => {
                let Some(p) = &policy else { return Err(e) };
                attempt += 1;
                let error = e.to_string();
                let Some(delay) = next_attempt(shared, p, attempt, attempt as u64, false, &error)
                else {
                    return Err(e);
                };
                tracing::info!(attempt, ?delay, %error, "first connect failed; retrying");
                tokio::time::sleep(delay).await;
            }
        }
    }
}

/// While closing with events to deliver, the pause between reconnect
/// attempts (instead of the backoff).
const CLOSING_RETRY: Duration = Duration::from_millis(50);

/// Right after a connection is lost: the reliable events it did not
/// confirm go back to the front of the line, ahead of the interrupted batch
/// (already requeued when the sender stopped) and everything queued, to be
/// written again on the next connection (see `confirm`).
fn resend_unconfirmed(shared: &Shared) {
    let mut ob = shared.outbox();
    let mut n = 0;
    for mut batch in ob.unconfirmed.take_all() {
        n += ob.ring.resend(&mut batch);
    }
    let head = ob.ring.head_seq();
    ob.written_through = ob.written_through.min(head);
    drop(ob);
    if n > 0 {
        Counters::add(&shared.counters.resent, n as u64);
        tracing::info!(
            resent = n,
            "reliable events not confirmed by the lost connection will be written again"
        );
    }
}

fn add_downtime(shared: &Shared, since: Instant) {
    Counters::add(
        &shared.counters.downtime_ns,
        crate::pacing::nanos(since.elapsed()),
    );
}

/// Before a new connection's tasks start: stale control frames are
/// dropped, and (unless turned off) the last written value of every key
/// with nothing queued goes back in line (state restore: the new session
/// knows nothing of the old one).
fn prepare_reconnect(shared: &Shared) {
    let mut ob = shared.outbox();
    ob.control = Control::default();
    if shared.config.restore_state {
        let Outbox {
            ring,
            written_through,
            ..
        } = &mut *ob;
        // A restored value is a new message about the current state: it
        // gets the time it is sent again, unless it carries its own `ts`.
        let now_ms = clock::wall_ms(clock::now_ns());
        let n = ring.restore(|h| {
            if !h.own_ts {
                h.ts_ms = now_ms;
            }
        });
        *written_through = (*written_through).min(ring.head_seq());
        if n > 0 {
            tracing::info!(restored = n, "restoring the latest value of each key");
        }
    }
}

fn finish(shared: &Shared, reason: Disconnect) {
    shared.finish(reason.clone());
    shared.set_state(ConnectionState::Closed(reason));
}

/// How long a failed write waits for the decoder to report the server's
/// close frame.
const CLOSE_FRAME_GRACE: Duration = Duration::from_millis(100);

/// Runs one connection until it ends; returns why.
async fn run_connection(shared: &Arc<Shared>, conn: Connection) -> Disconnect {
    let ctx = Arc::new(ConnCtx::new(conn.socket, shared.shutdown.child_token()));
    {
        let mut ob = shared.outbox();
        // Not idle until the new sender says so: INIT goes first, and only the
        // sender writes it. The sender starts with the wire in hand.
        ob.sender_idle = false;
        ob.wire = Slot::WithSender;
        ob.direct = conn.direct.is_some().then(|| Direct {
            ctx: ctx.clone(),
            batch: Default::default(),
            last_probe_ns: 0,
            last_probe_offset: 0,
        });
    }
    let wire = Wire::new(conn.write, conn.direct);
    // Each in a task of its own, so that a panic in one (a bug) ends this
    // connection with its own reason instead of taking the supervisor down.
    let mut decoder = tokio::spawn(decoder::run(shared.clone(), ctx.clone(), conn.read));
    let mut sender = tokio::spawn(sender::run(shared.clone(), ctx.clone(), wire));
    let close_timeout = shared.config.close_timeout;
    // Waiting for the server's answer to our close frame: until the
    // close's deadline.
    let close_wait = || {
        shared.close_deadlines().map_or(close_timeout, |(_, over)| {
            Duration::from_nanos(over.saturating_sub(clock::now_ns()))
        })
    };

    // Which task has been awaited to completion (a JoinHandle must not be
    // polled again after it returned).
    let (mut sender_done, mut decoder_done) = (false, false);
    let reason = tokio::select! {
        // `close()` ran out of time: the connection goes.
        _ = close_deadline(shared) => {
            tracing::debug!("close deadline reached; dropping the connection");
            Disconnect::Local
        }
        s = &mut sender => {
            sender_done = true;
            match s {
                Err(e) => panicked("sender", e),
                Ok(SenderExit::CloseSent) => {
                    // Wait for the server's close frame (or the end of the stream).
                    match tokio::time::timeout(close_wait(), &mut decoder).await {
                        Ok(_) => decoder_done = true,
                        Err(_) => tracing::debug!("no close reply from the server within the close timeout"),
                    }
                    Disconnect::Local
                }
                Ok(SenderExit::CloseReplied) => match tokio::time::timeout(close_timeout, &mut decoder).await {
                    Ok(d) => {
                        decoder_done = true;
                        match d {
                            Ok(d) => decoder_reason(d),
                            Err(e) => panicked("decoder", e),
                        }
                    }
                    Err(_) => Disconnect::Protocol("close reply sent".into()),
                },
                Ok(SenderExit::Io(e)) => {
                    // A server that closes with a close frame and then drops the
                    // connection makes our next write fail, often before the
                    // decoder has read that frame: its code says more than the
                    // write error, so give the decoder a moment (it ends at
                    // once on a dead socket).
                    match tokio::time::timeout(CLOSE_FRAME_GRACE.min(close_timeout), &mut decoder).await {
                        Ok(d) => {
                            decoder_done = true;
                            match d {
                                Ok(DecoderExit::ServerClosed { code, reason }) => {
                                    Disconnect::ServerClosed { code, reason }
                                }
                                _ => Disconnect::from(e),
                            }
                        }
                        Err(_) => Disconnect::from(e),
                    }
                }
                Ok(SenderExit::Keepalive(t)) => Disconnect::KeepaliveTimeout(t),
                Ok(SenderExit::Cancelled) => Disconnect::Local,
            }
        }
        d = &mut decoder => {
            decoder_done = true;
            match d {
                Err(e) => panicked("decoder", e),
                Ok(d) => {
                    if matches!(d, DecoderExit::ServerClosed { .. } | DecoderExit::Protocol { .. } | DecoderExit::TooBig { .. }) {
                        // The sender writes the queued close frame, then stops.
                        if tokio::time::timeout(close_timeout, &mut sender).await.is_ok() {
                            sender_done = true;
                        }
                    }
                    decoder_reason(d)
                }
            }
        }
    };
    ctx.cancel.cancel();
    {
        // No more direct writes: the socket is going away, and what its
        // wire did not write belongs to this connection's stream only.
        let mut ob = shared.outbox();
        ob.direct = None;
        ob.wire = Slot::Gone;
    }
    // The tasks are stopped, and waited for: once the sender's future is
    // dropped, its in-flight batch (if any) is back in the ring, and the
    // write half is closed.
    sender.abort();
    decoder.abort();
    if !sender_done {
        if let Err(e) = sender.await {
            if e.is_panic() {
                tracing::error!(error = %panic_text(e), "the sender task panicked while it was stopped");
            }
        }
    }
    if !decoder_done {
        let _ = decoder.await;
    }
    reason
}

/// The reason for a connection whose task panicked (a bug): logged, and
/// the connection is dropped (and, with reconnect on, opened again).
fn panicked(task: &'static str, e: tokio::task::JoinError) -> Disconnect {
    if !e.is_panic() {
        return Disconnect::Local;
    }
    let message = panic_text(e);
    tracing::error!(task, %message, "a task of the client panicked; dropping the connection");
    Disconnect::TaskPanicked { task, message }
}

fn panic_text(e: tokio::task::JoinError) -> String {
    match e.try_into_panic() {
        Ok(p) => p
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| p.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "(no message)".into()),
        Err(e) => e.to_string(),
    }
}

fn decoder_reason(d: DecoderExit) -> Disconnect {
    match d {
        DecoderExit::ServerClosed { code, reason } => Disconnect::ServerClosed { code, reason },
        DecoderExit::CloseAcked | DecoderExit::Cancelled => Disconnect::Local,
        DecoderExit::Eof => Disconnect::Eof,
        DecoderExit::Io(e) => Disconnect::from(e),
        DecoderExit::Protocol { code, reason } => {
            Disconnect::Protocol(format!("{reason} (closed with {code})"))
        }
        DecoderExit::TooBig { limit } => Disconnect::MessageTooBig { limit },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_task_that_panics_is_its_own_reason_and_the_client_reconnects() {
        // Issue 14, item 5: a panic in the sender left a client that said
        // `connected` forever.
        let server = vuer_client_testkit::server::LocalServer::start(Default::default())
            .await
            .unwrap();
        let client = crate::VuerClient::builder()
            .uri(server.uri())
            .reconnect(Some(Reconnect {
                initial_delay: Duration::from_millis(10),
                ..Reconnect::default()
            }))
            .connect()
            .await
            .unwrap();
        let mut changes = client.state_changes();
        client
            .shared
            .panic_sender
            .store(true, std::sync::atomic::Ordering::Relaxed);
        client.publish(&crate::DynEvent::new("WAKE")).unwrap();
        let mut seen = Vec::new();
        let reconnected = tokio::time::timeout(Duration::from_secs(10), async {
            loop {
                let s = changes.recv().await.unwrap();
                seen.push(s.clone());
                if matches!(s, ConnectionState::Connected) && seen.len() > 1 {
                    return;
                }
            }
        })
        .await;
        assert!(reconnected.is_ok(), "{seen:?}");
        assert!(
            matches!(
                &seen[0],
                ConnectionState::Disconnected(Disconnect::TaskPanicked { task: "sender", message })
                    if message.contains("injected")
            ),
            "{seen:?}"
        );
        // The event published as the sender panicked is delivered on the
        // new connection.
        let wake_seen = || server.received().iter().any(|r| r.event.etype() == "WAKE");
        let t = std::time::Instant::now();
        while !wake_seen() {
            assert!(t.elapsed() < Duration::from_secs(5), "{:?}", server.stats());
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        client.close().await.unwrap();
    }

    #[test]
    fn backoff_grows_and_is_bounded() {
        let p = Reconnect {
            jitter: 0.0,
            ..Reconnect::default()
        };
        assert_eq!(p.delay(1, 0), Duration::from_millis(100));
        assert_eq!(p.delay(2, 0), Duration::from_millis(200));
        assert_eq!(p.delay(4, 0), Duration::from_millis(800));
        assert_eq!(p.delay(30, 0), Duration::from_secs(5));
        let j = Reconnect::default();
        for i in 0..100 {
            let d = j.delay(1, i);
            assert!(
                d >= Duration::from_millis(80) && d <= Duration::from_millis(120),
                "{d:?}"
            );
        }
    }
}
