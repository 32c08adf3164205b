//! State shared by the handles and the background tasks.
//!
//! Handles never wait on the socket. They encode an event, then take the
//! outbox lock for a few dozen nanoseconds to put it in the ring, and wake
//! the sender task only if it is idle; when events are sparse and the
//! sender is parked, the publishing thread writes the frame itself with one
//! non-blocking write (the direct path, see `wire`), leaving any rest to
//! the sender. The lock is a blocking mutex: it is
//! never held across an `.await`, every critical section is a handful of
//! pointer moves, and it can be taken from any thread (a control loop that
//! is not a tokio task), which an async mutex could not. It is
//! `parking_lot`'s rather than std's: when the publisher and the sender
//! meet on it, it spins a little longer before parking and wakes parked
//! threads more cheaply, which measured ≈ 11 % more end-to-end throughput
//! (interleaved pairs vs the feed-64 baseline, medians 5.04/5.09/4.85× with
//! std, 5.67/5.66/5.44× with parking_lot, run alternately).

use std::cell::{Cell, RefCell};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::{watch, Notify};
use tokio_util::sync::CancellationToken;

use crate::clock;
use crate::codec::{BodyParts, Header};
use crate::config::Config;
use crate::connection::socket::SocketHandle;
use crate::error::{Disconnect, EncodeError, PublishError};
use crate::event::{Coalesce, Meta, Outgoing};
use crate::inbound::Inbound;
use crate::ring::{KeyRef, Ring};
use crate::state::ConnectionState;
use crate::stats::{Counters, Stats};
use crate::wire::{Slot, Wire};

/// `publish` writes a frame itself (instead of handing it to the sender
/// task) only when the sender has been idle at least this long: then events
/// are sparse, the socket has room, and waking the sender's thread would
/// cost more (50-100 µs measured) than the write. At higher rates the
/// hand-off batches events and `publish` stays a memory operation.
const DIRECT_AFTER_IDLE_NS: u64 = 50_000;

/// State changes kept for [`Shared::changes`] receivers that fall behind.
const STATE_CHANGES_KEPT: usize = 64;

/// A thread's scratch buffer is shrunk back to this after encoding a
/// larger event, so one big message does not pin memory per thread.
const SCRATCH_KEEP: usize = 64 << 10;

/// Control frames the sender owes the server.
#[derive(Debug, Default)]
pub(crate) struct Control {
    /// Payload of the latest ping to answer (older ones need no answer).
    pub pong: Option<Bytes>,
    /// A close frame to send; after it the sender sends nothing more.
    pub close: Option<(u16, String)>,
}

/// What `publish` needs, besides the parked wire, to write a frame itself
/// (one per connection over plain TCP).
pub(crate) struct Direct {
    pub ctx: std::sync::Arc<ConnCtx>,
    pub batch: crate::ring::Batch<Header>,
    /// When this path last appended a probe ([`clock::now_ns`]; 0: never).
    pub last_probe_ns: u64,
    /// The byte offset that probe follows.
    pub last_probe_offset: u64,
}

/// What the direct-write path did.
enum DirectOutcome {
    /// Nothing: the sender takes the event.
    No,
    /// Written; nothing more to do.
    Written,
    /// Written in part; the sender must write the rest.
    WrittenWakeSender,
}

/// Everything behind the outbox lock.
pub(crate) struct Outbox {
    pub ring: Ring<Header>,
    /// The sender is waiting for a wake-up (set by it under the lock, so a
    /// publisher that sees it knows a notify is needed).
    pub sender_idle: bool,
    /// The idle sender had reliable events awaiting confirmation when it
    /// went idle, so it will wake by itself (its probe's pong, or its probe
    /// timer) and confirm whatever is written meanwhile.
    pub sender_armed: bool,
    pub control: Control,
    /// `close()` was called: deliver what is queued, then close.
    pub closing: bool,
    /// Closed for good; publishing fails with this reason.
    pub terminal: Option<Disconnect>,
    /// What closing for good gave up: (events never written, reliable
    /// events written and never confirmed).
    pub lost: (u64, u64),
    /// Every sequence number below this has been written (or resolved).
    pub written_through: u64,
    /// When events were last written, by the sender before it went idle or
    /// by a direct write ([`clock::now_ns`]).
    pub idle_since_ns: u64,
    /// The current connection's wire while the sender is parked (see
    /// [`crate::wire`]): who may write, and the bytes not yet written.
    pub wire: Slot<Wire>,
    /// The current connection's direct-write state (plain TCP only).
    pub direct: Option<Direct>,
    /// Reliable events written and not yet confirmed by the server.
    pub unconfirmed: crate::confirm::Unconfirmed,
}

/// Per-connection state shared by that connection's sender and decoder.
#[derive(Debug)]
pub(crate) struct ConnCtx {
    pub socket: SocketHandle,
    /// When the last frame arrived ([`clock::now_ns`]).
    pub last_rx_ns: AtomicU64,
    /// The decoder is waiting for the application (backpressure): the
    /// silence is ours, not the server's.
    pub paused: AtomicBool,
    /// We sent a close frame; the server's close frame is its answer.
    pub local_close: AtomicBool,
    /// Stops this connection's tasks.
    pub cancel: CancellationToken,
    /// Byte offset confirmed read by the server (from probe pongs).
    pub acked_offset: AtomicU64,
    /// Pongs received on this connection.
    pub pongs: AtomicU64,
    /// Wakes the sender when a pong arrives (pacing).
    pub pong: tokio::sync::Notify,
}

impl ConnCtx {
    pub(crate) fn new(socket: SocketHandle, cancel: CancellationToken) -> Self {
        ConnCtx {
            socket,
            last_rx_ns: AtomicU64::new(clock::now_ns()),
            paused: AtomicBool::new(false),
            local_close: AtomicBool::new(false),
            cancel,
            acked_offset: AtomicU64::new(0),
            pongs: AtomicU64::new(0),
            pong: tokio::sync::Notify::new(),
        }
    }
}

pub(crate) struct Shared {
    pub config: Config,
    /// The URI as it may be shown ([`crate::redact_uri`]).
    pub uri_shown: String,
    pub outbox: parking_lot::Mutex<Outbox>,
    /// Wakes the sender task.
    pub wake_sender: Notify,
    /// Wakes `send().await` callers waiting for room.
    pub room: Notify,
    /// Wakes `flush().await` callers after each write.
    pub written: Notify,
    pub inbound: Inbound,
    pub counters: Counters,
    pub state: watch::Sender<ConnectionState>,
    /// Every state change, in order (the watch keeps only the latest).
    pub changes: tokio::sync::broadcast::Sender<ConnectionState>,
    /// Stops everything at once (drop after the close timeout).
    pub shutdown: CancellationToken,
    /// `close()` was called (or the client dropped).
    pub close_requested: CancellationToken,
    /// Set by the first `close()`: until when the sender delivers
    /// ([`clock::now_ns`]; 0 before), and when the close is over, whatever
    /// happened (see [`Shared::begin_close`]).
    pub close_deliver_by_ns: AtomicU64,
    pub close_deadline_ns: AtomicU64,
    /// The supervisor task has ended (closed the client, or was dropped
    /// with its runtime).
    pub supervisor_gone: CancellationToken,
    /// Tests: the sender panics at its next round.
    #[cfg(test)]
    pub panic_sender: AtomicBool,
    pub last_error: Mutex<Option<String>>,
    /// Large message buffers the sender gave back, for publishing threads
    /// to encode into.
    pub buffers: crate::buffers::Buffers,
}

/// A message above this size makes its thread encode the next one outside
/// the lock.
const LARGE_MESSAGE: usize = 16 << 10;

thread_local! {
    /// A thread whose last message was large encodes into this buffer,
    /// outside the lock.
    static SCRATCH: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
    /// Whether this thread's last message was larger than [`LARGE_MESSAGE`].
    static LAST_WAS_LARGE: Cell<bool> = const { Cell::new(false) };
    /// The size of the last large message this thread encoded (the next
    /// one's scratch buffer is sized from it).
    static LAST_LARGE_LEN: Cell<usize> = const { Cell::new(0) };
    /// Masking keys for the large messages this thread encodes (seeded from
    /// the operating system once per thread, as each connection's own).
    static MASKS: RefCell<crate::codec::MaskRng> = RefCell::new(crate::codec::MaskRng::from_os());
}

/// How an event is queued: its coalescing key, when it was published
/// ([`clock::now_ns`]), when it expires, and its `ts`.
#[derive(Clone, Copy)]
struct Stamp<'k> {
    key: Option<KeyRef<'k>>,
    now: u64,
    deadline: u64,
    ts_ms: u64,
    /// `ts_ms` is the event's own (not the time it was accepted).
    own_ts: bool,
    /// The tail is stored masked with this key ([`Header::tail_mask`]).
    tail_mask: [u8; 4],
}

impl Shared {
    pub(crate) fn new(config: Config) -> Self {
        let mut ring = Ring::new(config.queue, config.overflow);
        if config.realtime_poll.is_some() {
            ring.set_realtime();
        }
        let inbound = Inbound::new(
            config.inbound_max_events,
            config.inbound_max_bytes,
            config.inbound_policy,
        );
        let written_through = ring.head_seq();
        Shared {
            outbox: parking_lot::Mutex::new(Outbox {
                ring,
                sender_idle: false,
                sender_armed: false,
                control: Control::default(),
                closing: false,
                terminal: None,
                lost: (0, 0),
                written_through,
                idle_since_ns: 0,
                wire: Slot::Gone,
                direct: None,
                unconfirmed: crate::confirm::Unconfirmed::new(config.queue),
            }),
            wake_sender: Notify::new(),
            room: Notify::new(),
            written: Notify::new(),
            inbound,
            counters: Counters::default(),
            state: watch::Sender::new(ConnectionState::Connecting),
            changes: tokio::sync::broadcast::channel(STATE_CHANGES_KEPT).0,
            shutdown: CancellationToken::new(),
            close_requested: CancellationToken::new(),
            close_deliver_by_ns: AtomicU64::new(0),
            close_deadline_ns: AtomicU64::new(0),
            supervisor_gone: CancellationToken::new(),
            #[cfg(test)]
            panic_sender: AtomicBool::new(false),
            last_error: Mutex::new(None),
            buffers: crate::buffers::Buffers::new(config.queue.max_bytes),
            uri_shown: crate::redact_uri(&config.uri),
            config,
        }
    }

    /// Locks the outbox. (`parking_lot`'s mutex does not poison: a panic
    /// while holding it cannot leave the ring in a state worse than "some
    /// counters off".)
    pub(crate) fn outbox(&self) -> parking_lot::MutexGuard<'_, Outbox> {
        if self.config.realtime_poll.is_some() {
            // Nobody parks on the lock, so a real-time publisher's unlock
            // never has a thread to wake (a futex call).
            return self.outbox_spin();
        }
        self.outbox.lock()
    }

    /// The outbox lock with real-time publishers: spun for, never parked
    /// on, by every thread (parking_lot's lock yields and parks, both system
    /// calls, when it is held longer than its short spin, and a parked
    /// waiter makes the unlocking publisher wake it, a third). Critical
    /// sections are a handful of pointer moves (`tests/realtime.rs`
    /// measures the publisher's longest wait); if the OS preempts a holder,
    /// the others spin until it runs again.
    fn outbox_spin(&self) -> parking_lot::MutexGuard<'_, Outbox> {
        loop {
            if let Some(guard) = self.outbox.try_lock() {
                return guard;
            }
            std::hint::spin_loop();
        }
    }

    pub(crate) fn set_last_error(&self, e: impl ToString) {
        *self.last_error.lock().unwrap_or_else(|e| e.into_inner()) = Some(e.to_string());
    }

    /// Wakes the sender if it is idle.
    pub(crate) fn poke_sender(&self, ob: &mut Outbox) -> bool {
        std::mem::replace(&mut ob.sender_idle, false)
    }

    /// Queues one event of any kind ([`Outgoing`]): what the handles'
    /// `publish` and the decoder's RPC answers call.
    pub(crate) fn publish<E: Outgoing + ?Sized>(&self, event: &E) -> Result<(), PublishError> {
        self.publish_with(event.meta(), |b, f32| event.encode_body(b, f32))
    }

    /// Encodes and queues one event. Never blocks, safe from any thread. A
    /// small message allocates nothing in the steady state (the ring's
    /// chunks are recycled); a large one takes a buffer the sender gave
    /// back when one is free (`buffers`), and its shared handle.
    pub(crate) fn publish_with(
        &self,
        meta: Meta<'_>,
        encode: impl FnOnce(&mut Vec<u8>, bool) -> Result<BodyParts, EncodeError>,
    ) -> Result<(), PublishError> {
        let now = clock::now_ns();
        let stamp = self.stamp(&meta, now, clock::wall_ms(now));
        let all_f32 = self.config.all_f32;
        if !LAST_WAS_LARGE.with(Cell::get) {
            // Small messages (the common case) are encoded straight into the
            // ring's arena under the lock: no second buffer, no copy.
            return self.queue(stamp, |arena| encode(arena, all_f32));
        }
        // After a large message, this thread encodes outside the lock (into
        // its scratch buffer): a large value does not hold the lock while it
        // is serialized. A large result is then moved into the ring as the
        // slot's shared tail (not copied: the sender's masked copy into its
        // write buffer is the only other pass over it); a small one is
        // copied into the arena.
        SCRATCH.with(|scratch| {
            let mut scratch = scratch.borrow_mut();
            scratch.clear();
            let last = LAST_LARGE_LEN.with(Cell::get);
            if scratch.capacity() < last + last / 16 {
                // Sized like the last large message, with room for it to
                // grow a little (no doubling copies): one the sender gave
                // back when there is one (its pages are mapped already: see
                // `buffers`), else a fresh one an eighth larger.
                match self.buffers.take(last + last / 16) {
                    Some(buf) => *scratch = buf,
                    None => scratch.reserve(last + last / 8),
                }
            }
            let (entries, tail) = encode(&mut scratch, all_f32)?;
            if tail.is_empty() && scratch.len() > LARGE_MESSAGE {
                LAST_LARGE_LEN.with(|l| l.set(scratch.len()));
                // Masked here, while its bytes are in this thread's cache,
                // with a key of this thread's own cryptographic generator;
                // the sender then writes it from this buffer, untouched
                // (see `wire`).
                let key = MASKS.with(|m| m.borrow_mut().next_mask());
                crate::codec::mask_tail(&mut scratch, 0, key);
                let body = Bytes::from(std::mem::take(&mut *scratch));
                let stamp = Stamp {
                    tail_mask: key,
                    ..stamp
                };
                return self.queue(stamp, |_arena| Ok((entries, body)));
            }
            let result = self.queue(stamp, |arena| {
                arena.extend_from_slice(&scratch);
                Ok((entries, tail))
            });
            if scratch.capacity() > SCRATCH_KEEP {
                *scratch = Vec::new();
            }
            result
        })
    }

    /// Queues one message whose body `append` writes into the ring's arena,
    /// under the outbox lock.
    fn queue(
        &self,
        stamp: Stamp<'_>,
        append: impl FnOnce(&mut Vec<u8>) -> Result<BodyParts, EncodeError>,
    ) -> Result<(), PublishError> {
        self.hand_off(stamp.now, |ob| {
            let result = Self::push_locked(&self.config, ob, stamp, append);
            (result.is_ok(), result)
        })
        .and_then(|result| result)
    }

    /// Encodes and queues several events under one clock read and one
    /// lock (see [`VuerClient::publish_many`](crate::VuerClient::publish_many)).
    /// Returns how many were accepted, and the refusal that stopped the
    /// batch, if one did.
    pub(crate) fn publish_many<T>(
        &self,
        items: &[T],
        meta: impl Fn(&T) -> Meta<'_>,
        encode: impl Fn(&T, &mut Vec<u8>, bool) -> Result<BodyParts, EncodeError>,
    ) -> (usize, Result<(), PublishError>) {
        if items.is_empty() {
            return (0, Ok(()));
        }
        // One instant for the whole batch: its events are published
        // together (and `ts` is in milliseconds).
        let now = clock::now_ns();
        let wall_ms = clock::wall_ms(now);
        let all_f32 = self.config.all_f32;
        let handed = self.hand_off(now, |ob| {
            let mut accepted = 0;
            for item in items {
                let stamp = self.stamp(&meta(item), now, wall_ms);
                let pushed =
                    Self::push_locked(&self.config, ob, stamp, |a| encode(item, a, all_f32));
                if let Err(e) = pushed {
                    return (accepted > 0, (accepted, Err(e)));
                }
                accepted += 1;
            }
            (accepted > 0, (accepted, Ok(())))
        });
        handed.unwrap_or_else(|closed| (0, Err(closed)))
    }

    /// Runs `push` under the outbox lock unless the client is closed (then
    /// `Closed`). If it queued anything (the flag it returns), the event is
    /// written directly when events are sparse, or else the sender is woken
    /// if it is idle.
    fn hand_off<R>(
        &self,
        now: u64,
        push: impl FnOnce(&mut Outbox) -> (bool, R),
    ) -> Result<R, PublishError> {
        // Real-time publishers neither park, nor write, nor wake: the
        // sender polls (`ClientBuilder::realtime_publish`).
        let quiet = self.config.realtime_poll.is_some();
        let (wake, result) = {
            let mut ob = self.outbox();
            if let Some(reason) = &ob.terminal {
                return Err(PublishError::Closed(reason.clone()));
            }
            let (queued, result) = push(&mut ob);
            (queued && !quiet && self.after_push(&mut ob, now), result)
        };
        if wake {
            self.wake_sender.notify_one();
        }
        Ok(result)
    }

    /// How an event published at `now` is queued: its coalescing key, its
    /// deadline and its `ts` (its own, or `wall_ms`).
    fn stamp<'m>(&self, meta: &Meta<'m>, now: u64, wall_ms: u64) -> Stamp<'m> {
        let deadline = meta
            .max_age
            .or(self.config.max_age)
            .map_or(u64::MAX, |a| now.saturating_add(crate::pacing::nanos(a)));
        let key = match meta.coalesce {
            Coalesce::Never => None,
            Coalesce::Etype => Some(KeyRef {
                etype: meta.etype,
                key: "",
            }),
            Coalesce::Key(k) => Some(KeyRef {
                etype: meta.etype,
                key: k,
            }),
        };
        Stamp {
            key,
            now,
            deadline,
            ts_ms: meta.ts.unwrap_or(wall_ms),
            own_ts: meta.ts.is_some(),
            tail_mask: [0; 4],
        }
    }

    /// Encodes one message into the ring's arena and queues it (the caller
    /// holds the lock and checked that the client is not closed).
    fn push_locked(
        config: &Config,
        ob: &mut Outbox,
        stamp: Stamp<'_>,
        append: impl FnOnce(&mut Vec<u8>) -> Result<BodyParts, EncodeError>,
    ) -> Result<(), PublishError> {
        if ob.ring.would_allocate() {
            // A real-time ring never allocates on a publishing thread: with
            // no spare chunk left (every one queued or being written), the
            // event waits its turn like in a full queue.
            ob.ring_reject();
            let (queued, bytes) = ob.ring.held();
            return Err(PublishError::Full { queued, bytes });
        }
        let arena = ob.ring.arena_mut();
        let start = arena.len();
        let (entries, tail) = match append(arena) {
            Ok(parts) => parts,
            Err(e) => {
                ob.ring.truncate_arena(start);
                return Err(e.into());
            }
        };
        let body_len = ob.ring.arena_end() - start;
        LAST_WAS_LARGE.with(|l| l.set(body_len + tail.len() > LARGE_MESSAGE));
        let header = Header {
            ts_ms: stamp.ts_ms,
            entries,
            own_ts: stamp.own_ts,
            tail_mask: stamp.tail_mask,
        };
        let size = crate::codec::message_len(header, body_len, tail.len());
        if size > config.max_outgoing_message {
            ob.ring.truncate_arena(start);
            ob.ring_reject();
            return Err(PublishError::TooLarge {
                size,
                limit: config.max_outgoing_message,
            });
        }
        let queue_limit = ob.ring.limits().max_bytes;
        if body_len + tail.len() > queue_limit {
            // It could never fit: refused for good, not "full for now".
            ob.ring.truncate_arena(start);
            ob.ring_reject();
            return Err(PublishError::LargerThanQueue {
                size: body_len + tail.len(),
                limit: queue_limit,
            });
        }
        if ob
            .ring
            .push_appended(stamp.key, header, start, tail, stamp.now, stamp.deadline)
            .is_err()
        {
            let (queued, bytes) = ob.ring.held();
            return Err(PublishError::Full { queued, bytes });
        }
        Ok(())
    }

    /// After queueing: writes directly if events are sparse, or else says
    /// whether the sender must be woken.
    fn after_push(&self, ob: &mut Outbox, now: u64) -> bool {
        match self.try_direct(ob, now) {
            DirectOutcome::Written => false,
            DirectOutcome::WrittenWakeSender | DirectOutcome::No => self.poke_sender(ob),
        }
    }

    /// The direct-write path: when the sender has been idle a while and the
    /// event just queued is the only one, the publishing thread does the
    /// sender's work for it (take, frame, non-blocking write, settle) instead
    /// of waking the sender's thread (see [`DIRECT_AFTER_IDLE_NS`]). It
    /// borrows the wire the parked sender left in the outbox, under the
    /// outbox lock, so the frame goes behind every byte committed before it
    /// (see [`crate::wire`]).
    fn try_direct(&self, ob: &mut Outbox, now: u64) -> DirectOutcome {
        if ob.ring.len() != 1
            || !ob.sender_idle
            || now.saturating_sub(ob.idle_since_ns) < DIRECT_AFTER_IDLE_NS
        {
            return DirectOutcome::No;
        }
        let ob_armed = ob.sender_armed;
        let Outbox {
            ring,
            wire,
            direct,
            unconfirmed,
            written_through,
            idle_since_ns,
            ..
        } = ob;
        let (Some(d), Some(wire)) = (direct.as_mut(), wire.borrow()) else {
            return DirectOutcome::No;
        };
        // The rest of an earlier partial write is still pending: the
        // sender, woken for it, writes it and this event after it.
        if !wire.pending.is_empty() || !wire.has_direct() {
            return DirectOutcome::No;
        }
        // The sender follows wall-clock steps when it writes; a stream whose
        // every event goes this way must too.
        clock::resync(now);
        let mark = wire.pending.mark();
        ring.take_all(&mut d.batch);
        for slot in d.batch.slots() {
            wire.pending
                .data_frame(slot.header, d.batch.body(slot), &slot.tail);
        }
        let end_offset = wire.pending.committed();
        // A reliable event stays unconfirmed until a probe's pong covers it.
        // At sparse rates the probe rides in the same write (no wake-up of
        // the sender); more often than the confirmation interval, the
        // sender's timer sends one for the lot.
        let reliable = d.batch.slots().iter().any(|s| !s.is_keyed());
        let probe = (reliable
            && now.saturating_sub(d.last_probe_ns) >= crate::pacing::CONFIRM_EVERY_NS)
            .then(|| wire.pending.probe(now))
            .flatten();
        let len = wire.pending.unwritten();
        let n = match wire.try_write() {
            Ok(n) if n > 0 => n,
            // WouldBlock, or an error the sender will meet: its job then.
            _ => {
                let taken_back = wire.pending.unappend(mark);
                debug_assert!(taken_back, "nothing was written");
                ring.requeue(&mut d.batch);
                return DirectOutcome::No;
            }
        };
        if let Some(offset) = probe {
            d.last_probe_ns = now;
            d.last_probe_offset = offset;
        }
        // Written (if only in part, the rest stays at the front of the
        // wire's pending bytes, and the sender writes it before anything
        // else): settled as the sender would, reliable events kept until
        // the server confirms them.
        let end = d.batch.end_seq();
        ring.settle(&d.batch, true, |_| false);
        unconfirmed.keep(&mut d.batch, end_offset, |_| true);
        *written_through = (*written_through).max(end);
        // The next event within the idle threshold goes through the sender:
        // at higher rates the hand-off batches, and `publish` stays cheap.
        *idle_since_ns = now;
        let c = &self.counters;
        Counters::add(&c.bytes_sent, n as u64);
        Counters::add(&c.frames_sent, 1 + u64::from(probe.is_some()));
        Counters::add(&c.pings_sent, u64::from(probe.is_some()));
        Counters::add(&c.flushes, 1);
        Counters::add(&c.direct_writes, 1);
        if n < len {
            return DirectOutcome::WrittenWakeSender;
        }
        // Without a probe of its own, a reliable event is confirmed by the
        // sender: woken by the pong of our last probe if that is still on
        // its way (it then finds this event unconfirmed and probes for it),
        // by its own pong or timer if it went idle awaiting confirmations
        // (`sender_armed`), or else woken now. The decoder stores the offset
        // before it notifies, and the sender reads its state under the lock
        // we hold, so one of the two always sees the other.
        if reliable
            && probe.is_none()
            && !ob_armed
            && d.ctx.acked_offset.load(Ordering::Relaxed) >= d.last_probe_offset
        {
            return DirectOutcome::WrittenWakeSender;
        }
        DirectOutcome::Written
    }

    /// Waits for room, then queues (the `send().await` path).
    pub(crate) async fn send_with<'m>(
        &self,
        meta: impl Fn() -> Meta<'m>,
        encode: impl Fn(&mut Vec<u8>, bool) -> Result<BodyParts, EncodeError>,
    ) -> Result<(), PublishError> {
        loop {
            let room = self.room.notified();
            tokio::pin!(room);
            room.as_mut().enable();
            let meta = meta();
            if self.plainly_full(&meta) {
                room.await;
                continue;
            }
            match self.publish_with(meta, &encode) {
                Err(PublishError::Full { .. }) => {
                    // The refused attempt was counted as rejected; waiting
                    // and retrying is the same event, so take it back.
                    self.outbox().ring_unreject();
                    room.await;
                }
                other => return other,
            }
        }
    }

    /// True if a large reliable message from this thread plainly does not
    /// fit now (something is held, and the held bytes plus the size of this
    /// thread's last large message exceed the bound): a waiting sender then
    /// waits for room before encoding it again. Measured: with 1 MB events
    /// and a full queue, each refused attempt encoded the megabyte for
    /// nothing.
    fn plainly_full(&self, meta: &Meta<'_>) -> bool {
        if !matches!(meta.coalesce, Coalesce::Never) || !LAST_WAS_LARGE.with(Cell::get) {
            return false;
        }
        let need = LAST_LARGE_LEN.with(Cell::get);
        let ob = self.outbox();
        if ob.terminal.is_some() {
            return false;
        }
        let (items, bytes) = ob.ring.held();
        let limits = ob.ring.limits();
        items > 0 && (items >= limits.max_items || bytes + need > limits.max_bytes)
    }

    /// Waits until everything queued before the call has been written.
    pub(crate) async fn flush(&self) -> Result<(), PublishError> {
        let target = self.outbox().ring.tail_seq();
        loop {
            let written = self.written.notified();
            tokio::pin!(written);
            written.as_mut().enable();
            {
                let ob = self.outbox();
                if ob.written_through >= target
                    || (ob.ring.is_empty() && ob.ring.counters().in_flight == 0)
                {
                    return Ok(());
                }
                if let Some(reason) = &ob.terminal {
                    return Err(PublishError::Closed(reason.clone()));
                }
            }
            written.await;
        }
    }

    pub(crate) fn set_state(&self, s: ConnectionState) {
        tracing::info!(state = %s, "connection state");
        // The watch first: whoever hears of a change from `changes` finds
        // `state()` at least as new. No receiver is not an error.
        self.state.send_replace(s.clone());
        let _ = self.changes.send(s);
    }

    pub(crate) fn stats(&self) -> Stats {
        let c = &self.counters;
        let (ring, depth, bytes, unconfirmed) = {
            let ob = self.outbox();
            (
                ob.ring.counters(),
                ob.ring.len(),
                ob.ring.bytes(),
                ob.unconfirmed.len(),
            )
        };
        let g = Counters::get;
        let flushes = g(&c.flushes);
        Stats {
            published: ring.published,
            sent: ring.sent,
            coalesced: ring.coalesced,
            expired: ring.expired,
            rejected: ring.rejected,
            dropped: ring.dropped,
            pending: depth as u64 + ring.in_flight,
            queue_depth: depth as u64,
            queue_bytes: bytes as u64,
            bytes_sent: g(&c.bytes_sent),
            frames_sent: g(&c.frames_sent),
            flushes,
            direct_writes: g(&c.direct_writes),
            frames_per_flush: if flushes == 0 {
                0.0
            } else {
                ring.sent as f64 / flushes as f64
            },
            received: g(&c.received),
            received_bytes: g(&c.received_bytes),
            decode_errors: g(&c.decode_errors),
            inbound_dropped: g(&c.inbound_dropped),
            inbound_queued: self.inbound.main.len() as u64,
            rpc_answered: g(&c.rpc_answered),
            unconfirmed: unconfirmed as u64,
            resent: g(&c.resent),
            retained_evicted: ring.retained_evicted,
            unconfirmed_lost: g(&c.unconfirmed_lost),
            pings_sent: g(&c.pings_sent),
            pongs_received: g(&c.pongs_received),
            connects: g(&c.connects),
            disconnects: g(&c.disconnects),
            downtime: Duration::from_nanos(g(&c.downtime_ns)),
            age_p50: Duration::from_nanos(g(&c.age_p50_ns)),
            age_p99: Duration::from_nanos(g(&c.age_p99_ns)),
            age_max: Duration::from_nanos(g(&c.age_max_ns)),
            pipe_bytes: g(&c.pipe_bytes),
            kernel_queued_bytes: g(&c.kernel_queued),
            server_read_rate: f64::from_bits(g(&c.read_rate_bits)),
            pacing_holds: g(&c.pacing_holds),
            pacing_hold_time: Duration::from_nanos(g(&c.pacing_hold_ns)),
            rtt: Duration::from_nanos(g(&c.rtt_ns)),
            connected: matches!(*self.state.borrow(), ConnectionState::Connected),
            last_error: self
                .last_error
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clone(),
        }
    }

    /// True while accepted events wait to be written or confirmed.
    pub(crate) fn has_undelivered(&self) -> bool {
        let ob = self.outbox();
        !ob.ring.is_empty() || ob.ring.counters().in_flight > 0 || !ob.unconfirmed.is_empty()
    }

    /// Time left until the close's deadline (the close timeout before
    /// `close()`).
    pub(crate) fn close_time_left(&self) -> Duration {
        match self.close_deadlines() {
            Some((_, over)) => Duration::from_nanos(over.saturating_sub(clock::now_ns())),
            None => self.config.close_timeout,
        }
    }

    /// The close's deadlines ([`Shared::begin_close`]): (deliver by, over
    /// by), in [`clock::now_ns`] time; `None` before `close()`.
    pub(crate) fn close_deadlines(&self) -> Option<(u64, u64)> {
        match self.close_deadline_ns.load(Ordering::Acquire) {
            0 => None,
            d => Some((self.close_deliver_by_ns.load(Ordering::Acquire).min(d), d)),
        }
    }

    /// Starts a graceful close: the sender delivers what is queued, then
    /// sends a close frame.
    ///
    /// The first call sets the close's deadline, `close_timeout` from now:
    /// what was accepted is delivered (and reliable events confirmed) until
    /// a tenth of the timeout before it (at most 250 ms, kept for the close
    /// handshake); then the close frame goes out whatever is left, and at
    /// the deadline the connection is dropped.
    pub(crate) fn begin_close(&self) {
        let now = clock::now_ns();
        let timeout = crate::pacing::nanos(self.config.close_timeout);
        let deadline = now.saturating_add(timeout);
        let grace = (timeout / 10).min(250_000_000);
        // The first call wins; the deadline is published after the
        // delivery deadline, so whoever sees it sees both.
        if self
            .close_deliver_by_ns
            .compare_exchange(0, deadline - grace, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
        {
            self.close_deadline_ns.store(deadline, Ordering::Release);
        }
        self.close_requested.cancel();
        let wake = {
            let mut ob = self.outbox();
            ob.closing = true;
            self.poke_sender(&mut ob)
        };
        if wake {
            self.wake_sender.notify_one();
        }
        // Wake even a sender that is not idle (pacing, backoff).
        self.wake_sender.notify_one();
    }

    /// Closes for good: nothing more is accepted; what is still queued is
    /// counted as dropped; readers see the end of the inbound stream.
    pub(crate) fn finish(&self, reason: Disconnect) {
        let (abandoned, unconfirmed) = {
            let mut ob = self.outbox();
            if ob.terminal.is_none() {
                ob.terminal = Some(reason.clone());
            }
            // Written already; nothing more can be done for them.
            let unconfirmed = ob.unconfirmed.len() as u64;
            ob.unconfirmed.clear();
            let abandoned = ob.ring.abandon_all();
            ob.lost.0 += abandoned;
            ob.lost.1 += unconfirmed;
            (abandoned, unconfirmed)
        };
        Counters::add(&self.counters.unconfirmed_lost, unconfirmed);
        if abandoned > 0 || unconfirmed > 0 {
            tracing::warn!(
                never_sent = abandoned,
                unconfirmed,
                %reason,
                "client closed for good with events undelivered (never sent: counted as dropped; written but unconfirmed: the server may not have them)"
            );
        }
        self.inbound.close_all();
        self.room.notify_waiters();
        self.written.notify_waiters();
    }
}

impl Outbox {
    /// Counts a refusal that happened before the ring saw the event.
    pub(crate) fn ring_reject(&mut self) {
        self.ring.count_rejected();
    }

    /// Takes back a refusal that `send().await` turns into a wait.
    pub(crate) fn ring_unreject(&mut self) {
        self.ring.uncount_rejected();
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::Ordering;
    use std::time::Duration;

    use crate::clock;

    /// The one test that steps the wall clock (a process-wide switch), so
    /// it also checks the derived clock on its own.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_sparse_direct_stream_follows_a_wall_clock_step() {
        clock::force_resync();
        let real = || {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_millis() as u64
        };
        let derived = clock::wall_ms(clock::now_ns());
        assert!(
            derived.abs_diff(real()) < 50,
            "derived {derived} real {}",
            real()
        );

        // Issue 14, item 13: only the sender's batch path resynced, so a
        // stream whose every event was written directly never followed a
        // step of the wall clock.
        let server = vuer_client_testkit::server::LocalServer::start(Default::default())
            .await
            .unwrap();
        let client = crate::VuerClient::connect(&server.uri()).await.unwrap();
        let sparse = |i: i64| crate::DynEvent::new("SPARSE").value(i);
        client.publish(&sparse(0)).unwrap();
        const HOUR: i64 = 3_600_000;
        clock::STEP_MS.store(HOUR, Ordering::Relaxed);
        for i in 1..=30 {
            tokio::time::sleep(Duration::from_millis(50)).await;
            client.publish(&sparse(i)).unwrap();
        }
        assert!(
            server
                .wait_until(|s| s.events >= 32, Duration::from_secs(5))
                .await,
            "{:?}",
            server.stats()
        );
        clock::STEP_MS.store(0, Ordering::Relaxed);
        clock::force_resync();
        let ts: Vec<i64> = server
            .received()
            .iter()
            .filter(|r| r.event.etype() == "SPARSE")
            .map(|r| r.event.ts().unwrap())
            .collect();
        let s = client.stats();
        assert!(s.direct_writes >= 25, "{s:?}");
        let last = *ts.last().unwrap();
        assert!(
            last >= ts[0] + HOUR,
            "the last ts {last} did not follow the step from {}",
            ts[0]
        );
        client.close().await.unwrap();
    }
}
