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
use crate::codec::{encode_dyn, Header, Opcode, Payload};
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
        }
        drop(ob);
        self.shared.written.notify_waiters();
    }
}

/// Keepalive: the server is alive if a frame arrived (decoder) or the peer
/// acknowledged more of our bytes (`TCP_INFO`) within the timeout.
struct Liveness {
    timeout: Option<Duration>,
    last_acked: u64,
    last_ack_ns: u64,
    /// At the previous check, a write was blocked or bytes waited unsent.
    backlog: bool,
}

impl Liveness {
    /// `blocked`: called while a write is waiting for the socket.
    fn check(&mut self, ctx: &ConnCtx, blocked: bool) -> Option<Duration> {
        let timeout = self.timeout?;
        let now = clock::now_ns();
        if let Some(info) = ctx.socket.info() {
            if info.bytes_acked != self.last_acked {
                // Acknowledgements show a slow server draining what we
                // wrote (its pong waits behind that data) only while we had
                // more to send than it took. Otherwise they may be our own
                // pings, acknowledged by the kernel of a server whose
                // application is stuck: then only a frame counts.
                if self.backlog {
                    self.last_ack_ns = now;
                }
                self.last_acked = info.bytes_acked;
            }
            self.backlog = blocked || info.notsent_bytes > 0;
        }
        if ctx.paused.load(Ordering::Relaxed) {
            // We stopped reading ourselves (inbound backpressure).
            self.last_ack_ns = now;
            return None;
        }
        let last = ctx.last_rx_ns.load(Ordering::Relaxed).max(self.last_ack_ns);
        (now.saturating_sub(last) > timeout.as_nanos() as u64).then_some(timeout)
    }
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
    let mut tick = ticker(cfg.ping_interval.unwrap_or(Duration::from_secs(1)));
    let mut alive = Liveness {
        timeout: cfg.keepalive_timeout,
        last_acked: 0,
        last_ack_ns: clock::now_ns(),
        backlog: false,
    };
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
            if std::mem::take(&mut probe_wanted) {
                let offset = pacer.force_probe(now, wire.pending.committed());
                if wire
                    .pending
                    .control(Opcode::Ping, &crate::pacing::probe_payload(now, offset))
                {
                    control_frames += 1;
                    Counters::add(&counters.pings_sent, 1);
                }
            }
            // Pacing: may we write more, or has the server not read enough
            // of what it has? Control frames go out either way.
            pacer.set_written(wire.pending.committed());
        }
        pacer.acked(ctx.acked_offset.load(Relaxed), now);
        let decision = pacer.decide(now);
        let hold = matches!(decision, Decision::Hold { .. });
        telemetry.maybe_publish(now, &pacer, &ctx, counters);

        let (pong, close_reply, closing, settled, awaiting, urgent, hold, parked) = {
            let mut ob = shared.outbox();
            let mut settled = inflight.settle(&mut ob);
            // Batches emptied since the last round go back to the pool.
            ob.unconfirmed.give_back(&mut released);
            // What the server confirmed reading no longer counts against
            // the bounds (its batches are emptied below, outside the lock).
            if ob
                .unconfirmed
                .confirm(ctx.acked_offset.load(Relaxed), &mut released)
            {
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
            if close_reply.is_none() && !hold {
                // No more than the confirmation budget has room for (all of
                // it, in O(1), except right after a reconnect).
                ob.ring.take_up_to(&mut inflight.batch, room.0, room.1);
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
        released.iter_mut().for_each(Batch::clear);
        if settled {
            shared.written.notify_waiters();
            shared.room.notify_waiters();
        }
        let wire = match held.as_mut() {
            Some(w) if !parked => w,
            _ => {
                probe_wanted = match wait(
                    &shared, &ctx, &mut tick, &mut alive, &pacer, decision, hold, awaiting, urgent,
                    now,
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
        if hold && awaiting && !pacer.has_probe() {
            // Waiting for confirmations needs a probe in flight to answer.
            let offset = pacer.force_probe(now, wire.pending.committed());
            wire.pending
                .control(Opcode::Ping, &crate::pacing::probe_payload(now, offset));
            control_frames += 1;
            Counters::add(&counters.pings_sent, 1);
        }
        if let Some((code, reason)) = close_reply {
            let frames = control_frames as u64 + u64::from(wire.pending.close(code, &reason));
            if let Err(exit) = write_all(wire, &mut tick, &mut alive, &ctx, counters).await {
                return exit;
            }
            Counters::add(&counters.frames_sent, frames);
            tracing::debug!(code, %reason, "close frame sent in reply");
            return SenderExit::CloseReplied;
        }
        if inflight.batch.is_empty() && wire.pending.is_empty() {
            if closing && !hold {
                ctx.local_close.store(true, Relaxed);
                let frames = u64::from(wire.pending.close(1000, ""));
                if let Err(exit) = write_all(wire, &mut tick, &mut alive, &ctx, counters).await {
                    return exit;
                }
                Counters::add(&counters.frames_sent, frames);
                return SenderExit::CloseSent;
            }
            // Holding (pacing, or the confirmation budget): wait for a pong
            // or a timer, wire in hand.
            probe_wanted = match wait(
                &shared, &ctx, &mut tick, &mut alive, &pacer, decision, hold, awaiting, urgent, now,
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
                if let Err(exit) = write_all(wire, &mut tick, &mut alive, &ctx, counters).await {
                    return exit;
                }
            }
        }
        // A probe after the data: its pong says the server read all of it
        // (pacing, and confirmation of the reliable events written).
        let end_offset = wire.pending.committed();
        pacer.set_written(end_offset);
        let reliable = awaiting || batch.slots().iter().any(|s| !s.is_keyed());
        if let Some(offset) = pacer.take_probe(now, end_offset, reliable, urgent) {
            let probe = crate::pacing::probe_payload(now, offset);
            wire.pending.control(Opcode::Ping, &probe);
            control_frames += 1;
            Counters::add(&counters.pings_sent, 1);
        }
        if let Err(exit) = write_all(wire, &mut tick, &mut alive, &ctx, counters).await {
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

/// Waits (parked, or holding the wire while pacing holds) until something
/// may be done: a wake-up, a pong, a timer. Returns whether a probe is due.
#[allow(clippy::too_many_arguments)]
async fn wait(
    shared: &Shared,
    ctx: &ConnCtx,
    tick: &mut Interval,
    alive: &mut Liveness,
    pacer: &Pacer,
    decision: Decision,
    hold: bool,
    awaiting: bool,
    urgent: bool,
    now: u64,
) -> Result<bool, SenderExit> {
    // While holding, wake at least once a second so the telemetry (and its
    // hold counters) stays current. Reliable events written since the last
    // probe get one soon (confirmation).
    let recheck = match decision {
        Decision::Hold { recheck_ns } => Some(recheck_ns.min(now + 1_000_000_000)),
        Decision::Go if hold => Some(now + 1_000_000_000),
        Decision::Go => pacer.probe_due(awaiting, urgent),
    };
    tokio::select! {
        biased;
        _ = ctx.cancel.cancelled() => Err(SenderExit::Cancelled),
        // A pong: pacing may go on, and confirmations free room.
        _ = ctx.pong.notified() => Ok(false),
        _ = shared.wake_sender.notified() => Ok(false),
        _ = sleep_until_ns(recheck.unwrap_or(0)), if recheck.is_some() => Ok(!hold),
        _ = tick.tick() => {
            if let Some(t) = alive.check(ctx, false) {
                return Err(SenderExit::Keepalive(t));
            }
            Ok(shared.config.ping_interval.is_some())
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
    alive: &mut Liveness,
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
    alive: &mut Liveness,
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
                if let Some(t) = alive.check(ctx, true) {
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
                if let Some(t) = alive.check(ctx, true) {
                    return Err(SenderExit::Keepalive(t));
                }
            }
        }
    }
}
