//! The sender task: it owns the write half of one connection.
//!
//! Each round it takes everything ready from the ring (up to the batch
//! budget), encodes every event straight into one buffer it owns (msgpack
//! envelope, frame header, mask applied in place) and writes that buffer in
//! one go: many frames, one syscall. It waits only when the ring is empty,
//! so at low rates each event leaves at once, and at high rates events batch
//! by themselves (whatever arrives during a write goes out in the next).

use std::io;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::time::{Instant, Interval, MissedTickBehavior};

use crate::clock;
use crate::codec::{encode_dyn, write_close, write_control, MaskRng, Opcode, Payload};
use crate::connection::WriteHalf;
use crate::event::DynEvent;
use crate::ring::Slot;
use crate::shared::{recycle, ConnCtx, Outbox, Shared};
use crate::stats::Counters;
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

/// The batch being written. If the task stops before the write completed,
/// the batch goes back to the front of the ring (it may have been partly
/// written: such events can reach the server twice, never zero times).
struct InFlight<'a> {
    shared: &'a Shared,
    batch: Vec<Slot<Payload>>,
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        if self.batch.is_empty() {
            return;
        }
        let batch = std::mem::take(&mut self.batch);
        let mut ob = self.shared.outbox();
        let Outbox { ring, pool, .. } = &mut *ob;
        ring.requeue(batch, |p| recycle(pool, p));
    }
}

/// Keepalive: the server is alive if a frame arrived (decoder) or the peer
/// acknowledged more of our event bytes (`TCP_INFO`) within the timeout.
///
/// Control frames (our pings and pongs) do not count: the peer's kernel
/// acknowledges them whether or not the server reads, so a hung server would
/// look alive forever on pings alone. Their bytes are subtracted from
/// `bytes_acked`, and only a new maximum of the difference is progress (a
/// ping written but not yet acknowledged lowers it; its acknowledgment only
/// brings it back).
struct Liveness {
    timeout: Option<Duration>,
    /// Bytes of control frames written so far.
    control_written: u64,
    /// Largest `bytes_acked - control_written` seen.
    data_acked: u64,
    last_ack_ns: u64,
}

impl Liveness {
    fn check(&mut self, ctx: &ConnCtx) -> Option<Duration> {
        let timeout = self.timeout?;
        let now = clock::now_ns();
        if let Some(info) = ctx.socket.info() {
            let data = info.bytes_acked.saturating_sub(self.control_written);
            if data > self.data_acked {
                self.data_acked = data;
                self.last_ack_ns = now;
            }
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

/// Runs the sender for one connection.
pub(crate) async fn run(shared: Arc<Shared>, ctx: Arc<ConnCtx>, mut w: WriteHalf) -> SenderExit {
    let cfg = &shared.config;
    let counters = &shared.counters;
    let mut buf: Vec<u8> = Vec::with_capacity(cfg.batch_max_bytes + 4096);
    let mut rng = MaskRng::from_os();
    let mut inflight = InFlight {
        shared: &shared,
        batch: Vec::with_capacity(cfg.batch_max_events.min(16_384)),
    };
    // Ticks drive pings and keepalive checks; without pings, keepalive is
    // still checked every second.
    let mut tick = ticker(cfg.ping_interval.unwrap_or(Duration::from_secs(1)));
    let mut alive = Liveness {
        timeout: cfg.keepalive_timeout,
        control_written: 0,
        data_acked: 0,
        last_ack_ns: clock::now_ns(),
    };
    let min_round = cfg.max_flush_rate.map(|r| Duration::from_secs_f64(1.0 / r));
    let mut next_round = Instant::now();
    let retain = true;

    // INIT goes first, before anything queued (PROTOCOL.md §5).
    if let Some(fields) = &cfg.init {
        let init = DynEvent::new("INIT").value(Value::Map(fields.clone()));
        let mut p = Payload::default();
        if let Err(e) = encode_dyn(&init, &mut p, cfg.all_f32) {
            tracing::error!(error = %e, "cannot encode INIT");
        } else {
            p.ts_ms = clock::wall_ms(clock::now_ns());
            p.write_frame(&mut buf, rng.next_mask());
        }
    }
    let mut control_frames = usize::from(!buf.is_empty());

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

        let (pong, close_reply, closing, drained_through) = {
            let mut ob = shared.outbox();
            let pong = ob.control.pong.take();
            let close_reply = ob.control.close.take();
            let closing = ob.closing;
            let Outbox { ring, pool, .. } = &mut *ob;
            if close_reply.is_none() {
                ring.drain(
                    clock::now_ns(),
                    cfg.batch_max_events,
                    cfg.batch_max_bytes,
                    &mut inflight.batch,
                    |p| recycle(pool, p),
                );
            }
            let drained_through = ring.head_seq();
            if buf.is_empty()
                && inflight.batch.is_empty()
                && pong.is_none()
                && close_reply.is_none()
                && !closing
            {
                ob.sender_idle = true;
            }
            (pong, close_reply, closing, drained_through)
        };
        if !inflight.batch.is_empty() {
            shared.room.notify_waiters();
        }
        if let Some(p) = pong {
            let start = buf.len();
            write_control(&mut buf, Opcode::Pong, &p, rng.next_mask());
            alive.control_written += (buf.len() - start) as u64;
            control_frames += 1;
        }
        if let Some((code, reason)) = close_reply {
            write_close(&mut buf, code, &reason, rng.next_mask());
            let n = buf.len();
            if let Err(exit) = write_watched(&mut w, &buf, &mut tick, &mut alive, &ctx).await {
                return exit;
            }
            Counters::add(&counters.bytes_sent, n as u64);
            Counters::add(&counters.frames_sent, control_frames as u64 + 1);
            tracing::debug!(code, %reason, "close frame sent in reply");
            return SenderExit::CloseReplied;
        }
        if inflight.batch.is_empty() && buf.is_empty() {
            if closing {
                ctx.local_close.store(true, Ordering::Relaxed);
                write_close(&mut buf, 1000, "", rng.next_mask());
                let n = buf.len();
                if let Err(exit) = write_watched(&mut w, &buf, &mut tick, &mut alive, &ctx).await {
                    return exit;
                }
                Counters::add(&counters.bytes_sent, n as u64);
                Counters::add(&counters.frames_sent, 1);
                return SenderExit::CloseSent;
            }
            tokio::select! {
                biased;
                _ = ctx.cancel.cancelled() => return SenderExit::Cancelled,
                _ = shared.wake_sender.notified() => {}
                _ = tick.tick() => {
                    if let Some(t) = alive.check(&ctx) {
                        return SenderExit::Keepalive(t);
                    }
                    if cfg.ping_interval.is_some() {
                        let ts = clock::now_ns().to_be_bytes();
                        let start = buf.len();
                        write_control(&mut buf, Opcode::Ping, &ts, rng.next_mask());
                        alive.control_written += (buf.len() - start) as u64;
                        control_frames += 1;
                        Counters::add(&counters.pings_sent, 1);
                    }
                }
            }
            // Whatever woke us, the lock above decides what to do next; a
            // stale idle flag only costs a spurious wake-up.
            shared.outbox().sender_idle = false;
            continue;
        }

        // Encode the batch. Values past their deadline are not written.
        let now = clock::now_ns();
        clock::resync(now);
        let mut expired = Vec::new();
        inflight.batch.retain_mut(|slot| {
            if slot.deadline < now {
                expired.push(std::mem::take(&mut slot.item));
                return false;
            }
            true
        });
        for slot in &inflight.batch {
            slot.item.write_frame(&mut buf, rng.next_mask());
        }
        if !expired.is_empty() {
            let mut ob = shared.outbox();
            ob.ring.expire_in_flight(expired.len() as u64);
            for p in expired {
                recycle(&mut ob.pool, p);
            }
        }

        let events = inflight.batch.len();
        let bytes = buf.len();
        if let Err(exit) = write_watched(&mut w, &buf, &mut tick, &mut alive, &ctx).await {
            return exit;
        }
        buf.clear();
        Counters::add(&counters.bytes_sent, bytes as u64);
        Counters::add(&counters.frames_sent, (events + control_frames) as u64);
        Counters::add(&counters.flushes, 1);
        control_frames = 0;
        {
            let mut ob = shared.outbox();
            let Outbox {
                ring,
                pool,
                written_through,
                ..
            } = &mut *ob;
            ring.complete(inflight.batch.drain(..), retain, |p| recycle(pool, p));
            *written_through = (*written_through).max(drained_through);
        }
        shared.written.notify_waiters();
        tracing::debug!(events, bytes, "batch written");
    }
}

/// Writes all of `buf`, watching for cancellation and keepalive while the
/// socket is blocked. Each `write` call is cancel-safe (it either wrote
/// bytes and returned, or wrote nothing).
async fn write_watched(
    w: &mut WriteHalf,
    buf: &[u8],
    tick: &mut Interval,
    alive: &mut Liveness,
    ctx: &ConnCtx,
) -> Result<(), SenderExit> {
    let mut off = 0;
    while off < buf.len() {
        tokio::select! {
            biased;
            _ = ctx.cancel.cancelled() => return Err(SenderExit::Cancelled),
            r = w.write(&buf[off..]) => match r {
                Ok(0) => return Err(SenderExit::Io(io::ErrorKind::WriteZero.into())),
                Ok(n) => off += n,
                Err(e) => return Err(SenderExit::Io(e)),
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
            r = w.flush() => return r.map_err(SenderExit::Io),
            _ = tick.tick() => {
                if let Some(t) = alive.check(ctx) {
                    return Err(SenderExit::Keepalive(t));
                }
            }
        }
    }
}
