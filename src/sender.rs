//! The sender task: it owns the write half of one connection.
//!
//! Each round it takes everything queued from the ring (an O(1) swap under
//! the lock), encodes every event straight into one buffer it owns (msgpack
//! envelope, frame header, mask applied in place) and writes that buffer in
//! one go: many frames, one syscall (a very large round is written in
//! chunks of the batch byte budget). It waits only when the ring is empty,
//! so at low rates each event leaves at once, and at high rates events batch
//! by themselves (whatever arrives during a write goes out in the next).

use std::io;
use std::sync::atomic::Ordering::{self, Relaxed};
use std::sync::Arc;
use std::time::Duration;

use tokio::time::{Instant, Interval, MissedTickBehavior};

use crate::clock;
use crate::codec::{Header, Opcode, Payload};
use crate::event::encode_dyn;
use crate::event::DynEvent;
use crate::pacing::{Decision, Pacer};
use crate::ring::Batch;
use crate::shared::{ConnCtx, Outbox, Shared};
use crate::stats::{Counters, LogHistogram};
use crate::wire::Wire;
use crate::Value;

/// Why the sender task stopped.
#[derive(Debug)]
pub(crate) enum SenderExit {
    /// Everything queued was written, then our close frame (graceful close).
    CloseSent,
    /// We sent the close frame the decoder asked for (answering the
    /// server's, or closing on a protocol error).
    CloseReplied,
    /// Writing failed.
    Io(io::Error),
    /// No sign of life from the server within the keepalive timeout.
    Keepalive(Duration),
    /// The connection was cancelled.
    Cancelled,
}

/// The batch being written. Once written, it is settled (counted as sent,
/// keyed values retained) under the same lock that takes the next batch.
/// If the task stops before the write completed, the batch goes back to the
/// front of the ring (it may have been partly written: such events can reach
/// the server twice, never zero times).
struct InFlight<'a> {
    shared: &'a Shared,
    batch: Batch<Header>,
    /// Set once the batch is written: the time its deadlines were checked.
    written_at: Option<u64>,
    /// Byte offset just past the batch's frames (for confirmation).
    end_offset: u64,
}

impl InFlight<'_> {
    /// Settles a written batch: counted as sent (keyed values retained),
    /// and its reliable events kept until the server confirms them. Returns
    /// true if there was one.
    fn settle(&mut self, ob: &mut Outbox) -> bool {
        let Some(now) = self.written_at.take() else {
            return false;
        };
        let end = self.batch.end_seq();
        ob.ring.settle(&self.batch, true, |s| s.deadline < now);
        ob.unconfirmed
            .keep(&mut self.batch, self.end_offset, |s| s.deadline >= now);
        ob.written_through = ob.written_through.max(end);
        true
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        let mut ob = self.shared.outbox();
        if !self.settle(&mut ob) && !self.batch.is_empty() {
            ob.ring.requeue(&mut self.batch);
            if ob.terminal.is_some() {
                // The client closed for good while this was being written.
                let n = ob.ring.abandon_all();
                ob.lost.0 += n;
            }
        }
        drop(ob);
        self.shared.written.notify_waiters();
    }
}

/// Keepalive: the server is alive while its frames arrive (the decoder
/// stamps each one; our pings, sent every ping interval, get pongs), or
/// while we are not reading (inbound backpressure), when its frames wait
/// unread. Acknowledgements by the server's TCP stack do not count: the
/// kernel of a server whose process is stuck goes on acknowledging until
/// its receive buffer is full, which made detection take twice the
/// timeout and more (35 s for 15 s with a full send buffer). Checked at
/// an eighth of the timeout, so the peer is declared dead within 1.125
/// times the setting.
struct Liveness {
    timeout: Option<Duration>,
}

impl Liveness {
    fn check(&self, ctx: &ConnCtx) -> Option<Duration> {
        let timeout = self.timeout?;
        if ctx.paused.load(Ordering::Relaxed) {
            // We stopped reading ourselves; the decoder stamps the time it
            // reads again.
            return None;
        }
        let now = clock::now_ns();
        let last = ctx.last_rx_ns.load(Ordering::Relaxed);
        (now.saturating_sub(last) > crate::pacing::nanos(timeout)).then_some(timeout)
    }
}

/// How often the sender's timer ticks: often enough to send pings at the
/// ping interval and to check keepalive at an eighth of its timeout (at
/// most once a second, at least once a millisecond).
fn tick_period(ping: Option<Duration>, keepalive: Option<Duration>) -> Duration {
    [ping, keepalive.map(|k| k / 8)]
        .into_iter()
        .flatten()
        .min()
        .unwrap_or(Duration::from_secs(1))
        .clamp(Duration::from_millis(1), Duration::from_secs(1))
}

fn ticker(every: Duration) -> Interval {
    let mut t = tokio::time::interval_at(Instant::now() + every, every);
    t.set_missed_tick_behavior(MissedTickBehavior::Delay);
    t
}

/// Age of written values over the last second, published to the stats.
struct Telemetry {
    ages: LogHistogram,
    since_ns: u64,
    holds: u64,
    hold_ns: u64,
}

impl Telemetry {
    fn new(now_ns: u64) -> Self {
        Telemetry {
            ages: LogHistogram::default(),
            since_ns: now_ns,
            holds: 0,
            hold_ns: 0,
        }
    }

    #[inline]
    fn record(&mut self, age_ns: u64) {
        self.ages.record(age_ns);
    }

    /// Once a second: publishes the window to the stats and to tracing.
    fn maybe_publish(&mut self, now_ns: u64, pacer: &Pacer, ctx: &ConnCtx, c: &Counters) {
        if now_ns.saturating_sub(self.since_ns) < 1_000_000_000 {
            return;
        }
        let (p50, p99, max) = (
            self.ages.quantile(0.5),
            self.ages.quantile(0.99),
            self.ages.max(),
        );
        c.age_p50_ns.store(p50, Relaxed);
        c.age_p99_ns.store(p99, Relaxed);
        c.age_max_ns.store(max, Relaxed);
        c.pipe_bytes.store(pacer.in_pipe(), Relaxed);
        let queued = ctx.socket.outq().unwrap_or(0) as u64;
        c.kernel_queued.store(queued, Relaxed);
        c.read_rate_bits
            .store(pacer.rate_bytes_per_sec().to_bits(), Relaxed);
        Counters::add(&c.pacing_holds, pacer.holds - self.holds);
        Counters::add(&c.pacing_hold_ns, pacer.hold_ns - self.hold_ns);
        self.holds = pacer.holds;
        self.hold_ns = pacer.hold_ns;
        if !self.ages.is_empty() {
            tracing::debug!(
                age_p50_us = p50 / 1000,
                age_p99_us = p99 / 1000,
                age_max_us = max / 1000,
                pipe_bytes = pacer.in_pipe(),
                kernel_queued = queued,
                read_rate = pacer.rate_bytes_per_sec() as u64,
                holds = pacer.holds,
                "staleness"
            );
        }
        self.ages.reset();
        self.since_ns = now_ns;
    }
}

/// Runs the sender for one connection. It holds the connection's wire
/// except while parked (idle), when the wire waits in the outbox for a
/// publisher's direct write or for this task to take it back (see `wire`).
pub(crate) async fn run(shared: Arc<Shared>, ctx: Arc<ConnCtx>, wire: Wire) -> SenderExit {
    let cfg = &shared.config;
    let counters = &shared.counters;
    let mut inflight = InFlight {
        shared: &shared,
        batch: Batch::default(),
        written_at: None,
        end_offset: 0,
    };
    // Ticks drive pings and keepalive checks; without pings, keepalive is
    // still checked every second.
    let mut tick = ticker(tick_period(cfg.ping_interval, cfg.keepalive_timeout));
    let alive = Liveness {
        timeout: cfg.keepalive_timeout,
    };
    let ping_every = cfg.ping_interval.map(crate::pacing::nanos);
    // Unanswered pings back off to at most half the keepalive timeout.
    let max_ping_gap = cfg
        .keepalive_timeout
        .map_or(u64::MAX, |k| crate::pacing::nanos(k) / 2);
    // When a ping (every probe is one) was last appended.
    let mut last_ping_ns = clock::now_ns();
    // The server has answered no ping on this connection although one has
    // been out for the probe timeout: then what its TCP stack acknowledged
    // counts as confirmed (see `pacing`).
    let mut no_pongs = false;
    let min_round = cfg.max_flush_rate.map(|r| Duration::from_secs_f64(1.0 / r));
    let mut next_round = Instant::now();
    let mut pacer = Pacer::new(cfg.pacing);
    let mut telemetry = Telemetry::new(clock::now_ns());
    // Confirmed batches being emptied outside the lock (see
    // `Unconfirmed::confirm`).
    let mut released: Vec<Batch<Header>> = Vec::new();
    // `Some` while this task holds the wire; `None` while it is parked.
    let mut held = Some(wire);

    // INIT goes first, before anything queued (PROTOCOL.md §5).
    let mut control_frames = 0usize;
    if let Some(fields) = &cfg.init {
        let init = DynEvent::new("INIT").value(Value::Map(fields.clone()));
        let mut p = Payload::default();
        if let Err(e) = encode_dyn(&init, &mut p, cfg.all_f32) {
            tracing::error!(error = %e, "cannot encode INIT");
        } else {
            p.ts_ms = clock::wall_ms(clock::now_ns());
            let wire = held.as_mut().expect("held at the start");
            wire.pending
                .frame_with(|buf, mask| p.write_frame(buf, mask));
            control_frames += 1;
        }
    }
    // When this task last wrote events (not only control frames).
    let mut last_data_ns = 0u64;
    // A timer asked for a probe while this task waited.
    let mut probe_wanted = false;

    loop {
        if let Some(min) = min_round {
            if Instant::now() < next_round {
                tokio::select! {
                    biased;
                    _ = ctx.cancel.cancelled() => return SenderExit::Cancelled,
                    _ = tokio::time::sleep_until(next_round) => {}
                }
            }
            next_round = Instant::now() + min;
        }

        #[cfg(test)]
        if shared.panic_sender.swap(false, Ordering::Relaxed) {
            panic!("injected by a test");
        }
        // Back from parking: take the wire, with whatever a direct write
        // left unwritten at its front (it goes out before anything else).
        if held.is_none() {
            let back = {
                let mut ob = shared.outbox();
                ob.sender_idle = false;
                ob.wire.take_back()
            };
            match back {
                Some(w) => held = Some(w),
                None => return SenderExit::Cancelled,
            }
        }
        let now = clock::now_ns();
        {
            let wire = held.as_mut().expect("held");
            // While a probe is unanswered, a timer's pings back off (see
            // `Pacer::timer_ping_allowed`).
            let allowed =
                pacer.timer_ping_allowed(now, last_ping_ns, ping_every.unwrap_or(0), max_ping_gap);
            if std::mem::take(&mut probe_wanted) && allowed {
                if let Some(offset) = wire.pending.probe(now) {
                    pacer.probe_sent(now, offset);
                    control_frames += 1;
                    last_ping_ns = now;
                    Counters::add(&counters.pings_sent, 1);
                }
            }
            // Pacing: may we write more, or has the server not read enough
            // of what it has? Control frames go out either way.
            pacer.set_written(wire.pending.committed(), now);
        }
        let pong_acked = ctx.acked_offset.load(Relaxed);
        let ponged = ctx.pongs.load(Relaxed) > 0;
        if no_pongs && ponged {
            no_pongs = false;
            tracing::info!("the server answers pings after all; confirming by its pongs");
        } else if !no_pongs && !ponged && pacer.probe_late(now) {
            no_pongs = true;
            tracing::warn!(
                after = ?cfg.pacing.unwrap_or_default().probe_timeout,
                "the server answers no ping; what its TCP stack acknowledges counts as confirmed"
            );
        }
        // Pongs cannot come while we do not read (inbound backpressure), or
        // from a server that answers none: then what TCP acknowledged
        // counts (see `pacing`).
        let tcp_fallback = no_pongs || ctx.paused.load(Relaxed);
        let acked = match (tcp_fallback, held.as_ref(), ctx.socket.outq()) {
            (true, Some(w), Some(queued)) => pong_acked
                .max(w.pending.written().saturating_sub(queued as u64))
                .min(w.pending.written()),
            _ => pong_acked,
        };
        pacer.acked(acked, now);
        let decision = pacer.decide(now);
        let hold = matches!(decision, Decision::Hold { .. });
        let allowance = pacer
            .allowance(now)
            .map_or(usize::MAX, |a| usize::try_from(a).unwrap_or(usize::MAX));
        telemetry.maybe_publish(now, &pacer, &ctx, counters);

        // Closing: what was accepted is delivered (and confirmed) until the
        // close's delivery deadline, then the close frame goes out.
        let deliver_by = shared.close_deadlines().map(|(by, _)| by);
        let out_of_time = deliver_by.is_some_and(|by| now >= by);
        let (pong, close_reply, closing, settled, awaiting, urgent, hold, parked) = {
            let mut ob = shared.outbox();
            let mut settled = inflight.settle(&mut ob);
            // Batches emptied since the last round go back to the pool,
            // their chunks to the ring (where publishers need them; parked
            // in pooled batches, they made the ring allocate new ones).
            for b in released.iter_mut() {
                ob.ring.reclaim(b);
            }
            ob.unconfirmed.give_back(&mut released);
            let mut chunks = std::mem::take(&mut ob.unconfirmed.chunks);
            ob.ring.reclaim_chunks(&mut chunks);
            ob.unconfirmed.chunks = chunks;
            // What the server confirmed reading no longer counts against
            // the bounds (its batches are emptied below, outside the lock).
            if ob.unconfirmed.confirm(acked, &mut released) {
                settled = true;
            }
            let awaiting = !ob.unconfirmed.is_empty();
            let urgent = ob.unconfirmed.is_urgent();
            // The confirmation budget is used up: write nothing more until
            // the server confirms (the ring fills meanwhile; keyed values
            // coalesce, reliable ones meet backpressure).
            let room = ob.unconfirmed.room();
            let hold = hold || room.0 == 0 || room.1 == 0;
            let pong = ob.control.pong.take();
            let close_reply = ob.control.close.take();
            let closing = ob.closing;
            if close_reply.is_none() && !hold && !out_of_time {
                // No more than the confirmation budget has room for, nor
                // than pacing allows (at least one event; all of what is
                // queued, in O(1), when it fits).
                ob.ring
                    .take_up_to(&mut inflight.batch, room.0, room.1.min(allowance));
            }
            let parked = held.as_ref().is_some_and(|w| w.pending.is_empty())
                && inflight.batch.is_empty()
                && pong.is_none()
                && close_reply.is_none()
                && !closing
                && !hold;
            if parked {
                ob.sender_idle = true;
                // Reliable events await confirmation: a pong or the probe
                // timer wakes this task, so direct writes need not.
                ob.sender_armed = awaiting;
                // Idle since events were last written, by this task or by
                // `publish` directly: a wake-up that wrote nothing (a pong, a
                // probe to confirm a direct write) does not make the next
                // sparse event wait for this task.
                ob.idle_since_ns = ob.idle_since_ns.max(last_data_ns);
                ob.wire.park(held.take().expect("held"));
            }
            (
                pong,
                close_reply,
                closing,
                settled,
                awaiting,
                urgent,
                hold,
                parked,
            )
        };
        for b in released.iter_mut() {
            b.clear_with(|tail| shared.buffers.give(tail));
        }
        if settled {
            shared.written.notify_waiters();
            shared.room.notify_waiters();
        }
        let wire = match held.as_mut() {
            Some(w) if !parked => w,
            _ => {
                probe_wanted = match wait(
                    &shared,
                    &ctx,
                    &mut tick,
                    &alive,
                    &pacer,
                    Waiting {
                        decision,
                        hold,
                        awaiting,
                        urgent,
                        now,
                        ping_due_ns: ping_every.map(|p| last_ping_ns.saturating_add(p)),
                        tcp_fallback,
                        deliver_by,
                    },
                )
                .await
                {
                    Ok(probe) => probe,
                    Err(exit) => return exit,
                };
                continue;
            }
        };
        if let Some(p) = pong {
            if wire.pending.control(Opcode::Pong, &p) {
                control_frames += 1;
            }
        }
        if (hold || (closing && awaiting)) && !pacer.has_probe() && !out_of_time {
            // Waiting for confirmations (pacing, the confirmation budget,
            // or a close) needs a probe in flight to answer.
            if let Some(offset) = wire.pending.probe(now) {
                pacer.probe_sent(now, offset);
                control_frames += 1;
                last_ping_ns = now;
                Counters::add(&counters.pings_sent, 1);
            }
        }
        if let Some((code, reason)) = close_reply {
            let frames = control_frames as u64 + u64::from(wire.pending.close(code, &reason));
            if let Err(exit) = write_all(wire, &mut tick, &alive, &ctx, counters).await {
                return exit;
            }
            Counters::add(&counters.frames_sent, frames);
            tracing::debug!(code, %reason, "close frame sent in reply");
            return SenderExit::CloseReplied;
        }
        if inflight.batch.is_empty() && wire.pending.is_empty() {
            if closing && (out_of_time || (!hold && !awaiting)) {
                ctx.local_close.store(true, Relaxed);
                let frames = u64::from(wire.pending.close(1000, ""));
                if let Err(exit) = write_all(wire, &mut tick, &alive, &ctx, counters).await {
                    return exit;
                }
                Counters::add(&counters.frames_sent, frames);
                return SenderExit::CloseSent;
            }
            // Holding (pacing, or the confirmation budget): wait for a pong
            // or a timer, wire in hand.
            probe_wanted = match wait(
                &shared,
                &ctx,
                &mut tick,
                &alive,
                &pacer,
                Waiting {
                    decision,
                    hold,
                    awaiting,
                    urgent,
                    now,
                    ping_due_ns: ping_every.map(|p| last_ping_ns.saturating_add(p)),
                    tcp_fallback,
                    deliver_by,
                },
            )
            .await
            {
                Ok(probe) => probe,
                Err(exit) => return exit,
            };
            continue;
        }

        // Encode the batch; values past their deadline are not written.
        // A very large round goes out in chunks of the byte budget.
        let now = clock::now_ns();
        clock::resync(now);
        let mut events = 0u64;
        let batch = &inflight.batch;
        // Whether every event is reliable and written, and their size: then
        // settling and confirming the batch take no pass over its events.
        let mut plain = true;
        let mut plain_bytes = 0;
        for slot in batch.slots() {
            if slot.deadline < now {
                plain = false;
                continue;
            }
            plain &= !slot.is_keyed();
            plain_bytes += slot.size();
            telemetry.record(now.saturating_sub(slot.born));
            wire.pending
                .data_frame(slot.header, batch.body(slot), &slot.tail);
            events += 1;
            if wire.pending.unwritten() >= cfg.batch_max_bytes {
                if let Err(exit) = write_all(wire, &mut tick, &alive, &ctx, counters).await {
                    return exit;
                }
            }
        }
        // A probe after the data: its pong says the server read all of it
        // (pacing, and confirmation of the reliable events written).
        let end_offset = wire.pending.committed();
        pacer.set_written(end_offset, now);
        // Reliable events want confirmation; a stream that never waits
        // still sends a ping every ping interval (keepalive needs pongs).
        let reliable = awaiting || batch.slots().iter().any(|s| !s.is_keyed());
        let ping_due = ping_every.is_some_and(|p| now.saturating_sub(last_ping_ns) >= p);
        if pacer.should_probe(now, reliable || ping_due, urgent) {
            if let Some(offset) = wire.pending.probe(now) {
                pacer.probe_sent(now, offset);
                control_frames += 1;
                last_ping_ns = now;
                Counters::add(&counters.pings_sent, 1);
            }
        }
        if let Err(exit) = write_all(wire, &mut tick, &alive, &ctx, counters).await {
            return exit;
        }
        Counters::add(&counters.frames_sent, events + control_frames as u64);
        control_frames = 0;
        if events > 0 {
            last_data_ns = clock::now_ns();
        }
        if plain && !inflight.batch.is_empty() {
            inflight.batch.mark_plain(plain_bytes);
        }
        // Settled when the next batch is taken (one lock per round).
        inflight.written_at = Some(now);
        inflight.end_offset = end_offset;
        tracing::debug!(events, "batch written");
    }
}

/// What a wait depends on.
struct Waiting {
    decision: Decision,
    hold: bool,
    awaiting: bool,
    urgent: bool,
    now: u64,
    /// When the next keepalive ping is due, if pings are on.
    ping_due_ns: Option<u64>,
    /// Confirmations come from TCP (pongs late or unread): nothing wakes
    /// the sender when they do, so it looks often.
    tcp_fallback: bool,
    /// A close's delivery deadline: the close frame goes out then.
    deliver_by: Option<u64>,
}

/// How often a sender that counts on TCP acknowledgements looks at them.
const TCP_RECHECK_NS: u64 = 10_000_000;

/// Waits (parked, or holding the wire while pacing holds) until something
/// may be done: a wake-up, a pong, a timer. Returns whether a probe (or
/// keepalive ping) is due.
async fn wait(
    shared: &Shared,
    ctx: &ConnCtx,
    tick: &mut Interval,
    alive: &Liveness,
    pacer: &Pacer,
    w: Waiting,
) -> Result<bool, SenderExit> {
    // While holding, wake at least once a second so the telemetry (and its
    // hold counters) stays current. Reliable events written since the last
    // probe get one soon (confirmation).
    let second = w.now + 1_000_000_000;
    let mut recheck = match w.decision {
        Decision::Hold { recheck_ns } => Some(recheck_ns.min(second)),
        Decision::Go if w.hold => Some(second),
        Decision::Go => pacer.probe_due(w.awaiting, w.urgent),
    };
    let sooner = |r: Option<u64>, at: u64| Some(r.map_or(at, |r| r.min(at)));
    if w.tcp_fallback && (w.hold || w.awaiting) {
        recheck = sooner(recheck, w.now + TCP_RECHECK_NS);
    }
    if let Some(by) = w.deliver_by {
        recheck = sooner(recheck, by);
    }
    // Real-time publishers do not wake this task: it looks at the queue
    // every poll interval.
    let poll = shared.config.realtime_poll;
    tokio::select! {
        biased;
        _ = ctx.cancel.cancelled() => Err(SenderExit::Cancelled),
        // A pong: pacing may go on, and confirmations free room.
        _ = ctx.pong.notified() => Ok(false),
        _ = shared.wake_sender.notified() => Ok(false),
        _ = tokio::time::sleep(poll.unwrap_or_default()), if poll.is_some() => Ok(false),
        _ = sleep_until_ns(recheck.unwrap_or(0)), if recheck.is_some() => Ok(!w.hold),
        _ = tick.tick() => {
            if let Some(t) = alive.check(ctx) {
                return Err(SenderExit::Keepalive(t));
            }
            Ok(w.ping_due_ns.is_some_and(|due| clock::now_ns() >= due))
        }
    }
}

async fn sleep_until_ns(at_ns: u64) {
    let now = clock::now_ns();
    tokio::time::sleep(Duration::from_nanos(at_ns.saturating_sub(now))).await
}

/// Writes everything pending on the wire, watching for cancellation and
/// keepalive while the socket is blocked, and counts the bytes and writes
/// that reached the socket.
async fn write_all(
    wire: &mut Wire,
    tick: &mut Interval,
    alive: &Liveness,
    ctx: &ConnCtx,
    counters: &Counters,
) -> Result<(), SenderExit> {
    let (bytes0, writes0) = (wire.pending.written(), wire.pending.writes());
    let result = write_pending(wire, tick, alive, ctx).await;
    Counters::add(&counters.bytes_sent, wire.pending.written() - bytes0);
    Counters::add(&counters.flushes, wire.pending.writes() - writes0);
    result
}

async fn write_pending(
    wire: &mut Wire,
    tick: &mut Interval,
    alive: &Liveness,
    ctx: &ConnCtx,
) -> Result<(), SenderExit> {
    while !wire.pending.is_empty() {
        tokio::select! {
            biased;
            _ = ctx.cancel.cancelled() => return Err(SenderExit::Cancelled),
            r = wire.write_some() => if let Err(e) = r {
                return Err(SenderExit::Io(e));
            },
            _ = tick.tick() => {
                if let Some(t) = alive.check(ctx) {
                    return Err(SenderExit::Keepalive(t));
                }
            }
        }
    }
    // A no-op on TCP; TLS pushes its buffered records here.
    loop {
        tokio::select! {
            biased;
            _ = ctx.cancel.cancelled() => return Err(SenderExit::Cancelled),
            r = wire.flush() => return r.map_err(SenderExit::Io),
            _ = tick.tick() => {
                if let Some(t) = alive.check(ctx) {
                    return Err(SenderExit::Keepalive(t));
                }
            }
        }
    }
}

/// The sender's rounds over an in-memory stream (`tokio::io::duplex`): what
/// it takes from the ring is what the peer reads, frame by frame.
#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, DuplexStream};
    use tokio_util::sync::CancellationToken;

    use super::*;
    use crate::codec::unframe;
    use crate::config::Config;
    use crate::connection::socket::SocketHandle;
    use crate::event::DynEvent;
    use crate::wire::Slot;
    use crate::ServerEvent;

    /// The sender's task with the wire in hand (as the supervisor starts
    /// it), writing into one end of a duplex.
    fn start(
        config: Config,
    ) -> (
        Arc<Shared>,
        Arc<ConnCtx>,
        tokio::task::JoinHandle<SenderExit>,
        DuplexStream,
    ) {
        let shared = Arc::new(Shared::new(config));
        let ctx = Arc::new(ConnCtx::new(
            SocketHandle::detached(),
            CancellationToken::new(),
        ));
        {
            let mut ob = shared.outbox();
            ob.sender_idle = false;
            ob.wire = Slot::WithSender;
        }
        let (ours, theirs) = tokio::io::duplex(1 << 20);
        let wire = Wire::new(Box::new(ours), None);
        let task = tokio::spawn(run(shared.clone(), ctx.clone(), wire));
        (shared, ctx, task, theirs)
    }

    /// Reads `n` whole client frames (each checked: final, masked) and
    /// returns the data frames' messages.
    async fn read_messages(peer: &mut DuplexStream, n: usize) -> Vec<ServerEvent> {
        let mut buf = Vec::new();
        let mut out = Vec::new();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while out.len() < n {
            // Whole frames at the front of `buf`.
            loop {
                if buf.len() < 2 {
                    break;
                }
                let (len, off) = match buf[1] & 0x7f {
                    126 if buf.len() >= 4 => (u16::from_be_bytes([buf[2], buf[3]]) as usize, 4),
                    127 if buf.len() >= 10 => (
                        u64::from_be_bytes(buf[2..10].try_into().unwrap()) as usize,
                        10,
                    ),
                    126 | 127 => break,
                    l => (l as usize, 2),
                };
                let end = off + 4 + len;
                if buf.len() < end {
                    break;
                }
                let (op, payload) = unframe(&buf[..end]);
                buf.drain(..end);
                if op == 0x2 {
                    out.push(ServerEvent::from_msgpack(payload.into()).unwrap());
                }
            }
            if out.len() >= n {
                break;
            }
            let mut chunk = [0u8; 4096];
            let got = tokio::time::timeout_at(deadline, peer.read(&mut chunk))
                .await
                .expect("frames in time")
                .unwrap();
            assert!(got > 0, "the stream ended early");
            buf.extend_from_slice(&chunk[..got]);
        }
        out
    }

    fn quiet() -> Config {
        // No pacing (nothing would answer its probes) and no pings.
        Config {
            pacing: None,
            ping_interval: None,
            ..Config::default()
        }
    }

    #[tokio::test]
    async fn init_goes_first_then_the_line_in_order_with_keyed_values_coalesced() {
        let (shared, ctx, task, mut peer) = start(quiet());
        let pose = |v: i64| DynEvent::new("POSE").key("hand").value(v).latest();
        shared.publish(&DynEvent::new("A").value(1)).unwrap();
        shared.publish(&pose(1)).unwrap();
        shared.publish(&DynEvent::new("B").value(2)).unwrap();
        shared.publish(&pose(2)).unwrap();
        let got = read_messages(&mut peer, 4).await;
        let seen: Vec<(String, String)> = got
            .iter()
            .map(|e| (e.etype().to_owned(), format!("{}", e.data().unwrap())))
            .collect();
        assert_eq!(seen[0].0, "INIT");
        // (A current-thread test: the sender first runs at the first
        // `.await`, after all four were queued.) The keyed value kept the
        // place of its first update, with its newest value.
        let rest: Vec<(&str, &str)> = seen[1..]
            .iter()
            .map(|(e, v)| (e.as_str(), v.as_str()))
            .collect();
        assert_eq!(rest, [("A", "1"), ("POSE", "2"), ("B", "2")], "{seen:?}");
        assert_eq!(shared.stats().coalesced, 1);
        // Later events follow, in order.
        shared.publish(&DynEvent::new("C").value(3)).unwrap();
        shared.wake_sender.notify_one();
        let more = read_messages(&mut peer, 1).await;
        let all: Vec<String> = got
            .iter()
            .chain(&more)
            .map(|e| e.etype().to_owned())
            .collect();
        assert!(all.ends_with(&["C".to_owned()]), "{all:?}");
        ctx.cancel.cancel();
        let exit = tokio::time::timeout(Duration::from_secs(5), task)
            .await
            .unwrap()
            .unwrap();
        assert!(matches!(exit, SenderExit::Cancelled), "{exit:?}");
        let s = shared.stats();
        assert_eq!(s.published, s.sent + s.coalesced + s.pending, "{s:?}");
    }

    #[tokio::test]
    async fn a_peer_that_goes_away_ends_the_round_with_an_io_error() {
        let (shared, _ctx, task, peer) = start(quiet());
        drop(peer);
        shared.publish(&DynEvent::new("A").value(1)).unwrap();
        shared.wake_sender.notify_one();
        let exit = tokio::time::timeout(Duration::from_secs(5), task)
            .await
            .unwrap()
            .unwrap();
        assert!(matches!(exit, SenderExit::Io(_)), "{exit:?}");
    }
}
