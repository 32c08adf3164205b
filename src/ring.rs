//! The coalescing ring: a bounded queue of encoded messages where keyed
//! values replace each other (latest value wins) and unkeyed values are
//! delivered first in, first out.
//!
//! This module knows nothing of tokio, sockets or msgpack: it stores opaque
//! message bodies (bytes, plus an optional shared tail and a small `Copy`
//! header), so it is unit-tested, property-tested and benched on its own.
//! The client wraps it in a mutex; the sender task takes batches from it.
//!
//! # Semantics
//!
//! * **Line order.** Items leave in the order they first entered the line.
//! * **Keyed items** (latest value wins): a new value for a key whose older
//!   value is still queued replaces that value *in place*: it keeps the old
//!   value's place in line, and the old value is counted as `coalesced`. So
//!   per key, values leave in the order published (the newest one wins), and
//!   a key updated faster than the sender drains still leaves at the
//!   position of its first pending update: it is never starved.
//! * **Unkeyed items** (reliable) are never replaced or dropped by the ring
//!   (unless the [`Overflow::DropOldest`] policy is chosen); when the ring is
//!   full, [`Ring::push`] refuses them with [`Full`].
//! * **Across keys**, the order is the order in which each key's *pending*
//!   value first entered the line. A key updated after another key may
//!   therefore leave before it (its slot was older). Unkeyed items keep their
//!   order relative to each other and to the slots around them. Code that
//!   needs strict order between two kinds of events should send them
//!   unkeyed.
//! * **Maximum age.** Every item carries a deadline; the taker checks it when
//!   it writes, and reports expired items in [`Ring::complete`].
//! * **Bounds.** At most `max_items` items and `max_bytes` bytes are queued,
//!   and at most `max_keys` keys are remembered. To make room for a new key,
//!   the key whose value was written longest ago and that has nothing queued
//!   is forgotten, with its retained value (found in amortized O(1), not by
//!   a scan of the table); when every key has a value queued, a new key is
//!   refused. A forgotten key's value still being written is not retained
//!   under its id, which another key may get.
//!
//! # Cost
//!
//! Bodies are encoded (or copied) into a chunked arena (a keyed value of
//! the same size is overwritten in place), so a push costs a hash lookup
//! for keyed items and a small copy, and allocates nothing in the steady
//! state. [`Ring::take_all`] swaps the whole line with the taker's empty
//! batch: O(1) under the caller's lock however many items are queued;
//! [`Ring::take_up_to`] moves whole chunks (see the `arena` module for why
//! and what it measured). A key's pending slot is found by sequence number
//! and checked against the slot's key, so taking items never has to touch
//! the key table.

use std::collections::VecDeque;
use std::hash::{Hash, Hasher};

use bytes::Bytes;
use hashbrown::{Equivalent, HashTable};
use rustc_hash::FxBuildHasher;

mod arena;

use arena::{Arena, Place};

/// Limits of a [`Ring`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RingLimits {
    /// Most items queued at once.
    pub max_items: usize,
    /// Most payload bytes queued at once.
    pub max_bytes: usize,
    /// Most distinct keys remembered.
    pub max_keys: usize,
}

/// What to do when a new item does not fit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Overflow {
    /// Refuse the new item (the publish fails with `Full`); nothing queued is touched. The
    /// default: nothing accepted is ever dropped.
    #[default]
    Reject,
    /// Drop the oldest queued items (counted as `dropped`) until the new one
    /// fits. For streams where the newest data matters more than the oldest.
    DropOldest,
}

/// The new item did not fit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Full;

/// What [`Ring::push`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pushed {
    /// Queued at the end of the line.
    Queued,
    /// Replaced a pending value of the same key in place.
    Replaced,
}

/// A coalescing key: the event type plus an optional sub-key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeyRef<'a> {
    /// The event type.
    pub etype: &'a str,
    /// A sub-key (e.g. a component key), empty for "the etype alone".
    pub key: &'a str,
}

impl Hash for KeyRef<'_> {
    fn hash<H: Hasher>(&self, h: &mut H) {
        h.write(self.etype.as_bytes());
        h.write_u8(0xff);
        h.write(self.key.as_bytes());
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct OwnedKey {
    etype: Box<str>,
    key: Box<str>,
}

impl Hash for OwnedKey {
    fn hash<H: Hasher>(&self, h: &mut H) {
        KeyRef {
            etype: &self.etype,
            key: &self.key,
        }
        .hash(h)
    }
}

impl Equivalent<OwnedKey> for KeyRef<'_> {
    fn equivalent(&self, k: &OwnedKey) -> bool {
        *self.etype == *k.etype && *self.key == *k.key
    }
}

const NO_KEY: u32 = u32::MAX;

#[inline]
fn hash_key(key: KeyRef<'_>) -> u64 {
    use std::hash::BuildHasher;
    FxBuildHasher.hash_one(key)
}

/// A queued item: where its body is in the arena, plus bookkeeping.
#[derive(Debug, Clone)]
pub struct Slot<H> {
    /// The caller's per-item header (e.g. timestamp and entry count).
    pub header: H,
    at: Place,
    len: u32,
    /// Bytes that follow the body unchanged (shared, never copied).
    pub tail: Bytes,
    /// When it was published (caller's clock, e.g. nanoseconds).
    pub born: u64,
    /// When it expires (`u64::MAX`: never).
    pub deadline: u64,
    key: u32,
    /// The key's generation when queued: a key id can be reused after the
    /// key is forgotten, and must not inherit the old key's items.
    gen: u32,
}

impl<H> Slot<H> {
    /// True if the item is keyed (latest value wins).
    pub fn is_keyed(&self) -> bool {
        self.key != NO_KEY
    }

    /// Body plus tail length.
    pub fn size(&self) -> usize {
        self.len as usize + self.tail.len()
    }
}

/// Copies the bodies of `slots` out of `arena` into a new arena (built on
/// `arena`'s spare chunks), in order and without the dropped ones between,
/// and points each slot at its new place. The new arena is made of
/// `arena`'s storage, and `arena`'s chunks become its spares (as many as
/// an arena keeps): a batch of keyed values, emptied after it is written,
/// hands its chunk back to the ring instead of to the allocator, and a
/// compaction of the ring on a publishing thread allocates nothing once
/// warm (`tests/realtime.rs`; before: a chunk per sender round in a keyed
/// stream, and a fresh chunk list per compaction).
fn repack<H>(slots: &mut VecDeque<Slot<H>>, arena: &mut Arena) -> Arena {
    // Built from `arena`'s own storage (spare chunks, chunk list): nothing
    // allocated once warm.
    let mut out = arena.rebuilt();
    for slot in slots.iter_mut() {
        slot.at = out.append(arena.get(slot.at, slot.len));
    }
    arena.retire_into(&mut out);
    out
}

/// Items taken from the ring, with the arena their bodies live in.
#[derive(Debug)]
pub struct Batch<H> {
    slots: VecDeque<Slot<H>>,
    arena: Arena,
    /// Sequence number of `slots[0]` when taken.
    first_seq: u64,
    /// Set by [`Batch::mark_plain`]: the total size of its items, all of
    /// them unkeyed and written (none expired).
    plain: Option<usize>,
}

impl<H> Default for Batch<H> {
    fn default() -> Self {
        Batch {
            slots: VecDeque::new(),
            arena: Arena::default(),
            first_seq: 0,
            plain: None,
        }
    }
}

impl<H> Batch<H> {
    /// The items, in line order.
    pub fn slots(&self) -> &VecDeque<Slot<H>> {
        &self.slots
    }

    /// An item's body.
    pub fn body(&self, slot: &Slot<H>) -> &[u8] {
        self.arena.get(slot.at, slot.len)
    }

    /// Number of items.
    pub fn len(&self) -> usize {
        self.slots.len()
    }

    /// True when empty.
    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    /// Sequence number just past the last item: once this batch is written,
    /// everything numbered below it has left the ring.
    pub fn end_seq(&self) -> u64 {
        self.first_seq + self.slots.len() as u64
    }

    /// Keeps only the items `keep` accepts. When they hold less than half
    /// of the arena, the arena is compacted so that dropped bodies do not
    /// stay in memory.
    pub fn retain(&mut self, keep: impl Fn(&Slot<H>) -> bool) {
        self.plain = None;
        self.slots.retain(|s| keep(s));
        let live: usize = self.slots.iter().map(|s| s.len as usize).sum();
        if live * 2 < self.arena.len() {
            self.arena = repack(&mut self.slots, &mut self.arena);
        }
    }

    /// Bytes of the items (bodies and tails).
    pub fn bytes(&self) -> usize {
        match self.plain {
            Some(bytes) => bytes,
            None => self.slots.iter().map(Slot::size).sum(),
        }
    }

    /// Records that every item is unkeyed and was written (none expired),
    /// and that their sizes total `bytes` (the writer saw each item once
    /// already): settling the batch ([`Ring::settle`]) and counting its
    /// bytes then take no pass over the items. Cleared by any change.
    pub fn mark_plain(&mut self, bytes: usize) {
        debug_assert!(self.slots.iter().all(|s| !s.is_keyed()));
        debug_assert_eq!(bytes, self.slots.iter().map(Slot::size).sum::<usize>());
        self.plain = Some(bytes);
    }

    /// True if [`Batch::mark_plain`] applies.
    pub fn is_plain(&self) -> bool {
        self.plain.is_some()
    }

    /// An empty batch with room for `items` items (its bodies come in
    /// chunks from the ring).
    pub fn with_capacity(items: usize) -> Self {
        Batch {
            slots: VecDeque::with_capacity(items),
            arena: Arena::default(),
            first_seq: 0,
            plain: None,
        }
    }

    /// Bytes in its arena (bodies, including any dropped by
    /// [`Batch::retain`] and not yet compacted).
    pub fn arena_len(&self) -> usize {
        self.arena.len()
    }

    /// Memory its buffers hold (their capacity), in bytes.
    pub fn capacity_bytes(&self) -> usize {
        self.slots.capacity() * std::mem::size_of::<Slot<H>>() + self.arena.capacity_bytes()
    }

    /// Empties the batch like [`Batch::clear`], handing every item's
    /// non-empty tail to `tail` (e.g. to reuse its buffer).
    pub fn clear_with(&mut self, mut tail: impl FnMut(Bytes)) {
        for slot in self.slots.iter_mut() {
            if !slot.tail.is_empty() {
                tail(std::mem::take(&mut slot.tail));
            }
        }
        self.clear();
    }

    /// Moves the batch's spare chunks to `into` (as many as an arena
    /// keeps).
    pub fn give_spares(&mut self, into: &mut Vec<Vec<u8>>) {
        self.arena.give_spare_bufs(into);
    }

    /// Empties the batch, keeping its buffers for reuse.
    pub fn clear(&mut self) {
        self.plain = None;
        self.slots.clear();
        self.arena.clear();
    }
}

#[derive(Debug)]
struct Retained<H> {
    header: H,
    body: Vec<u8>,
    tail: Bytes,
    born: u64,
}

#[derive(Debug)]
struct KeyState<H> {
    /// Bumped each time the id is given to a new key.
    gen: u32,
    /// Sequence number of the queued value, valid while that slot is still
    /// in line and carries this key.
    pending: u64,
    /// The last value written, kept for state restore after a reconnect.
    last: Option<Retained<H>>,
    /// The key while the id is given to one (`None`: the id is free).
    name: Option<OwnedKey>,
    /// The id is in `Ring::written_keys`.
    listed: bool,
    /// The id is in `Ring::retained_lru`.
    in_lru: bool,
    /// A value was retained since the id was last looked at for eviction
    /// (second chance).
    referenced: bool,
}

/// Counters kept by the ring. At every moment
/// `published == sent + coalesced + expired + rejected + dropped + pending`,
/// where `pending` is queued plus in flight (taken, not yet completed).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RingCounters {
    /// Items offered to `push`.
    pub published: u64,
    /// Items confirmed written ([`Ring::complete`]).
    pub sent: u64,
    /// Keyed items replaced by a newer value before they were written.
    pub coalesced: u64,
    /// Items whose deadline passed before they were written.
    pub expired: u64,
    /// Items refused because the ring was full.
    pub rejected: u64,
    /// Items dropped by the [`Overflow::DropOldest`] policy or abandoned
    /// ([`Ring::abandon_all`]).
    pub dropped: u64,
    /// Items taken and not yet completed or requeued.
    pub in_flight: u64,
    /// Retained last values dropped (not events: the state restore of
    /// their keys) to keep retained values within the byte bound.
    pub retained_evicted: u64,
}

/// What the ring holds for the server besides its queue, counted against
/// its bounds: the batch being written.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Held {
    in_flight_items: usize,
    in_flight_bytes: usize,
}

/// The coalescing ring. See the module documentation.
#[derive(Debug)]
pub struct Ring<H> {
    queue: VecDeque<Slot<H>>,
    arena: Arena,
    /// Sequence number of `queue[0]`.
    head_seq: u64,
    /// Live bytes queued (bodies and tails).
    bytes: usize,
    /// Key ids, found by the hash of their key (the key itself is stored
    /// once, in `keys`).
    index: HashTable<u32>,
    keys: Vec<KeyState<H>>,
    free_keys: Vec<u32>,
    /// Ids of keys whose value was written (or expired or dropped), least
    /// recently first, each at most once: the keys forgotten first when
    /// the table is full. A key with a value queued again is skipped (and
    /// listed again when that value is written).
    written_keys: VecDeque<u32>,
    /// Ids with a retained value, each at most once, in the order of a
    /// clock ("second chance"): when retained values exceed the byte bound,
    /// the oldest not retained again since it was last looked at loses its
    /// value. Amortized O(1) per value retained.
    retained_lru: VecDeque<u32>,
    retained_bytes: usize,
    held: Held,
    limits: RingLimits,
    overflow: Overflow,
    counters: RingCounters,
    /// Publishers must not allocate (`ClientBuilder::realtime_publish`):
    /// takes never swap the line and arena out (see [`Ring::set_realtime`]).
    realtime: bool,
}

/// Start of the sequence numbers: high, so that items put back in front of
/// the line (requeue, restore) never wrap below zero.
const FIRST_SEQ: u64 = 1 << 62;

impl<H: Copy> Ring<H> {
    /// An empty ring with these limits and overflow policy.
    pub fn new(limits: RingLimits, overflow: Overflow) -> Self {
        Ring {
            queue: VecDeque::new(),
            arena: Arena::default(),
            head_seq: FIRST_SEQ,
            bytes: 0,
            index: HashTable::new(),
            keys: Vec::new(),
            free_keys: Vec::new(),
            written_keys: VecDeque::new(),
            retained_lru: VecDeque::new(),
            retained_bytes: 0,
            held: Held::default(),
            limits,
            overflow,
            counters: RingCounters::default(),
            realtime: false,
        }
    }

    /// Takes the spare chunks of an emptied batch (as many as the ring
    /// keeps).
    pub fn reclaim(&mut self, batch: &mut Batch<H>) {
        self.arena.take_spares(&mut batch.arena);
    }

    /// A real-time ring that would have to allocate a chunk for the next
    /// body (the last one is nearly full and no spare is left).
    pub fn would_allocate(&self) -> bool {
        self.realtime && self.arena.would_allocate()
    }

    /// Takes spare chunks from `from` (as many as the ring keeps).
    pub fn reclaim_chunks(&mut self, from: &mut Vec<Vec<u8>>) {
        self.arena.take_spare_bufs(from);
    }

    /// For real-time publishers: the line is allocated to its bound now,
    /// and a take moves items and whole chunks out instead of swapping the
    /// ring's line and arena with the batch's (O(1), but the ring would then
    /// go on with the batch's containers, which may be smaller, and grow
    /// them on a publishing thread). So once warm (every chunk a round needs
    /// has come back as a spare), publishing allocates nothing:
    /// `tests/realtime.rs` counts it under a CPU hog too.
    pub fn set_realtime(&mut self) {
        self.realtime = true;
        self.queue.reserve(self.limits.max_items.min(1 << 20));
        // The chunks the line can need (live bodies, and as many dead ones
        // before a compaction), the unconfirmed events' and a round's: made
        // now rather than on a publishing thread (as many as an arena keeps).
        let chunks = 4 * self.limits.max_bytes.div_ceil(arena::CHUNK) + 8;
        self.arena.prefill(chunks);
    }

    /// Items queued (not counting those in flight).
    pub fn len(&self) -> usize {
        self.queue.len()
    }

    /// True when nothing is queued.
    pub fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }

    /// Live bytes queued.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Bytes the arena holds (live plus overwritten values not yet
    /// compacted).
    pub fn arena_bytes(&self) -> usize {
        self.arena.len()
    }

    /// Distinct keys remembered.
    pub fn key_count(&self) -> usize {
        self.index.len()
    }

    /// Bytes held as last-written values for state restore.
    pub fn retained_bytes(&self) -> usize {
        self.retained_bytes
    }

    /// The counters.
    pub fn counters(&self) -> RingCounters {
        self.counters
    }

    /// The limits.
    pub fn limits(&self) -> RingLimits {
        self.limits
    }

    /// Sequence number of the first queued item.
    pub fn head_seq(&self) -> u64 {
        self.head_seq
    }

    /// Sequence number the next queued item will get.
    pub fn tail_seq(&self) -> u64 {
        self.head_seq + self.queue.len() as u64
    }

    /// Items and bytes held against the bounds: queued and being written.
    pub fn held(&self) -> (usize, usize) {
        let h = &self.held;
        (
            self.queue.len() + h.in_flight_items,
            self.bytes + h.in_flight_bytes,
        )
    }

    fn fits(&self, extra_items: usize, extra_bytes: usize) -> bool {
        let (items, bytes) = self.held();
        items + extra_items <= self.limits.max_items && bytes + extra_bytes <= self.limits.max_bytes
    }

    /// The queue position of key `id`'s pending value, if it has one.
    #[inline]
    fn pending_pos(&self, id: u32) -> Option<usize> {
        let seq = self.keys[id as usize].pending;
        let pos = seq.checked_sub(self.head_seq)? as usize;
        (pos < self.queue.len() && self.queue[pos].key == id).then_some(pos)
    }

    /// Offers an item: `body` is copied into the ring, `tail` is shared.
    /// `key: None` is an unkeyed (reliable) item. An item larger than
    /// `max_bytes` never fits.
    pub fn push(
        &mut self,
        key: Option<KeyRef<'_>>,
        header: H,
        body: &[u8],
        tail: Bytes,
        born: u64,
        deadline: u64,
    ) -> Result<Pushed, Full> {
        let buf = self.arena.open();
        let start = buf.len();
        buf.extend_from_slice(body);
        self.push_appended(key, header, start, tail, born, deadline)
    }

    /// The arena's open chunk, to encode a body straight onto its end
    /// (remember its length first as `start`; then call
    /// [`Ring::push_appended`], or [`Ring::truncate_arena`] to give up).
    /// Call it once per body: it may open a new chunk.
    pub fn arena_mut(&mut self) -> &mut Vec<u8> {
        self.arena.open()
    }

    /// The open chunk's length (where the body encoded into the buffer
    /// [`Ring::arena_mut`] gave ends).
    pub fn arena_end(&self) -> usize {
        self.arena.back_len()
    }

    /// Drops the open chunk's bytes from `start` (a body that will not be
    /// queued). A refused huge body does not pin its memory.
    pub fn truncate_arena(&mut self, start: usize) {
        self.arena.truncate_back(start);
    }

    /// Offers the body just appended to the open chunk from `start` (see
    /// [`Ring::arena_mut`]). On refusal the body is removed again.
    pub fn push_appended(
        &mut self,
        key: Option<KeyRef<'_>>,
        header: H,
        start: usize,
        tail: Bytes,
        born: u64,
        deadline: u64,
    ) -> Result<Pushed, Full> {
        self.counters.published += 1;
        let len = self.arena.back_len() - start;
        let size = len + tail.len();
        if size > self.limits.max_bytes || len > u32::MAX as usize || start > u32::MAX as usize {
            return self.refuse(start);
        }
        let mut existing = None;
        if let Some(k) = key {
            if let Some(id) = self.find_key(k) {
                if let Some(pos) = self.pending_pos(id) {
                    return self.replace(pos, header, start, tail, born, deadline);
                }
                existing = Some(id);
            }
        }
        if !self.make_room(1, size) {
            return self.refuse(start);
        }
        let id = match (key, existing) {
            (None, _) => NO_KEY,
            (Some(_), Some(id)) => id,
            (Some(k), None) => match self.intern(k) {
                Some(id) => id,
                None => return self.refuse(start),
            },
        };
        let seq = self.tail_seq();
        let gen = if id == NO_KEY {
            0
        } else {
            self.keys[id as usize].gen
        };
        let at = self.arena.place_in_back(start);
        self.queue.push_back(Slot {
            header,
            at,
            len: len as u32,
            tail,
            born,
            deadline,
            key: id,
            gen,
        });
        self.bytes += size;
        if id != NO_KEY {
            self.keys[id as usize].pending = seq;
        }
        self.maybe_compact();
        Ok(Pushed::Queued)
    }

    fn refuse(&mut self, start: usize) -> Result<Pushed, Full> {
        self.counters.rejected += 1;
        self.truncate_arena(start);
        Err(Full)
    }

    /// True if `slot` still belongs to the key its id names now.
    #[inline]
    fn owns_key(&self, slot: &Slot<H>) -> bool {
        slot.key != NO_KEY && self.keys[slot.key as usize].gen == slot.gen
    }

    fn replace(
        &mut self,
        pos: usize,
        header: H,
        start: usize,
        tail: Bytes,
        born: u64,
        deadline: u64,
    ) -> Result<Pushed, Full> {
        let len = self.arena.back_len() - start;
        let old_size = self.queue[pos].size();
        let size = len + tail.len();
        if size > old_size && self.bytes + (size - old_size) > self.limits.max_bytes {
            // Growing in place would break the byte bound; dropping the
            // oldest could evict this very slot, so refuse.
            return self.refuse(start);
        }
        let slot = &self.queue[pos];
        let (old_at, old_len) = (slot.at, slot.len as usize);
        let at = if old_len == len {
            // Same size (a fixed-size pose): overwrite in place.
            self.arena.overwrite_from_back(old_at, start, len);
            old_at
        } else {
            // The old body stays as garbage until its chunk is released or
            // the arena is compacted.
            let at = self.arena.place_in_back(start);
            self.arena.sub_live(old_at.chunk);
            self.arena.release_front();
            at
        };
        let slot = &mut self.queue[pos];
        slot.header = header;
        slot.at = at;
        slot.len = len as u32;
        slot.tail = tail;
        slot.born = born;
        slot.deadline = deadline;
        self.bytes = self.bytes - old_size + size;
        self.counters.coalesced += 1;
        self.maybe_compact();
        Ok(Pushed::Replaced)
    }

    /// Compacts the arena when overwritten values (keyed values replaced
    /// by ones of another size) have made it much larger than what is live.
    /// Streams of reliable or fixed-size keyed values never get here: their
    /// chunks are released or moved whole.
    #[inline]
    fn maybe_compact(&mut self) {
        if self.arena.len() > 2 * self.bytes.max(4 * arena::CHUNK) {
            self.compact();
        }
    }

    fn compact(&mut self) {
        self.arena = repack(&mut self.queue, &mut self.arena);
    }

    /// Ensures `items`/`bytes` more fit, applying the overflow policy.
    fn make_room(&mut self, items: usize, bytes: usize) -> bool {
        if self.fits(items, bytes) {
            return true;
        }
        if self.overflow == Overflow::Reject {
            return false;
        }
        while !self.fits(items, bytes) {
            match self.queue.pop_front() {
                Some(slot) => {
                    self.head_seq += 1;
                    self.bytes -= slot.size();
                    self.arena.sub_live(slot.at.chunk);
                    self.counters.dropped += 1;
                    if self.owns_key(&slot) {
                        self.note_written(slot.key);
                    }
                }
                None => {
                    self.arena.release_front();
                    return false;
                }
            }
        }
        self.arena.release_front();
        true
    }

    /// The id of `key`, if it has one.
    #[inline]
    fn find_key(&self, key: KeyRef<'_>) -> Option<u32> {
        let keys = &self.keys;
        self.index
            .find(hash_key(key), |&id| {
                keys[id as usize]
                    .name
                    .as_ref()
                    .is_some_and(|n| key.equivalent(n))
            })
            .copied()
    }

    fn intern(&mut self, key: KeyRef<'_>) -> Option<u32> {
        if self.index.len() >= self.limits.max_keys && !self.forget_one() {
            return None;
        }
        let id = match self.free_keys.pop() {
            Some(id) => id,
            None => {
                self.keys.push(KeyState {
                    gen: 0,
                    pending: 0,
                    last: None,
                    name: None,
                    listed: false,
                    in_lru: false,
                    referenced: false,
                });
                (self.keys.len() - 1) as u32
            }
        };
        let st = &mut self.keys[id as usize];
        // (`in_lru` may still be set: a stale place in `retained_lru`,
        // which the new key then uses.)
        debug_assert!(st.last.is_none() && st.name.is_none() && !st.listed);
        st.gen = st.gen.wrapping_add(1);
        st.pending = 0;
        st.name = Some(OwnedKey {
            etype: key.etype.into(),
            key: key.key.into(),
        });
        let keys = &self.keys;
        self.index.insert_unique(hash_key(key), id, |&i| {
            let n = keys[i as usize]
                .name
                .as_ref()
                .expect("indexed keys are named");
            hash_key(KeyRef {
                etype: &n.etype,
                key: &n.key,
            })
        });
        Some(id)
    }

    /// Notes that key `id`'s value left the line for good (written,
    /// expired or dropped): the key may be forgotten when room is needed.
    #[inline]
    fn note_written(&mut self, id: u32) {
        let st = &mut self.keys[id as usize];
        if !st.listed {
            st.listed = true;
            self.written_keys.push_back(id);
        }
    }

    /// Forgets the key whose value was written longest ago and that has
    /// nothing queued (with its retained value). Amortized O(1): each id
    /// looked at was listed by a write. Returns false if there is none.
    fn forget_one(&mut self) -> bool {
        while let Some(id) = self.written_keys.pop_front() {
            self.keys[id as usize].listed = false;
            if self.pending_pos(id).is_some() {
                // Queued again: listed again once that value is written.
                continue;
            }
            self.forget(id);
            return true;
        }
        false
    }

    /// Frees key `id`. Its generation moves on, so a value of it still
    /// being written no longer belongs to it (nor to the next key given the
    /// id): it is neither retained nor coalesced under the id again.
    fn forget(&mut self, id: u32) {
        let st = &mut self.keys[id as usize];
        st.gen = st.gen.wrapping_add(1);
        if let Some(r) = st.last.take() {
            self.retained_bytes -= r.body.len() + r.tail.len();
        }
        let name = st.name.take().expect("a key in use");
        let hash = hash_key(KeyRef {
            etype: &name.etype,
            key: &name.key,
        });
        if let Ok(entry) = self.index.find_entry(hash, |&i| i == id) {
            entry.remove();
        }
        self.free_keys.push(id);
    }

    /// Takes everything queued, in O(1): the line and its arena are swapped
    /// with `batch`, which must be empty (a completed batch is). The items
    /// count as in flight until [`Ring::complete`] or [`Ring::requeue`].
    pub fn take_all(&mut self, batch: &mut Batch<H>) {
        if self.take_nothing(batch) {
            return;
        }
        std::mem::swap(&mut self.queue, &mut batch.slots);
        std::mem::swap(&mut self.arena, &mut batch.arena);
        batch.first_seq = self.head_seq;
        self.head_seq += batch.slots.len() as u64;
        self.counters.in_flight += batch.slots.len() as u64;
        self.held.in_flight_items += batch.slots.len();
        self.held.in_flight_bytes += self.bytes;
        self.bytes = 0;
    }

    /// Readies `batch` for a take; true if there is nothing to take.
    ///
    /// A take that takes no item gives the batch no bytes either. Before,
    /// one that found the line empty swapped in (or, in real-time mode,
    /// moved) the ring's dead bytes: the bodies a partial take had copied
    /// out of the last chunk (it takes one item larger than its byte budget
    /// whole, so it can empty the line), or a chunk a refused push had
    /// opened. The batch then held bytes but no item, and the next partial
    /// take appended the ring's chunks behind them, where their ids named
    /// other chunks: in release builds, events went out with other events'
    /// bodies (`tests.rs`: `a_take_of_an_empty_line_leaves_the_batch_without_bytes`,
    /// found by a debug assertion in a CI run; the real-time case by
    /// `wire/model_realtime.rs`).
    fn take_nothing(&mut self, batch: &mut Batch<H>) -> bool {
        debug_assert!(
            batch.is_empty() && batch.arena.has_no_chunks(),
            "a take needs an empty batch"
        );
        if batch.slots.is_empty() && !batch.arena.has_no_chunks() {
            // Never in tests (the assertion above); in a release build,
            // chunks without items are dropped rather than mislabelled.
            // (Chunks, not bytes: a large message's body can be empty.)
            batch.arena.clear();
        }
        batch.plain = None;
        batch.first_seq = self.head_seq;
        if self.queue.is_empty() {
            // Nothing queued: no body in the arena is referenced (taken
            // ones were moved or copied to their batch), so dead chunks
            // become spares and the last one is emptied (a real-time ring
            // counted its dead bytes as used and could refuse publishes
            // with nothing queued).
            self.arena.reset();
            return true;
        }
        false
    }

    /// Takes items from the front of the line: all of them (O(1), as
    /// [`Ring::take_all`]) when they fit in `max_items`/`max_bytes`, else as
    /// many as fit (at least one). The rest stay queued. The chunks only
    /// taken items use move to the batch; the take stops before a chunk it
    /// would share with what stays, unless that leaves nothing to take
    /// (then those bodies are copied).
    pub fn take_up_to(&mut self, batch: &mut Batch<H>, max_items: usize, max_bytes: usize) {
        if self.take_nothing(batch) {
            return;
        }
        if !self.realtime && self.queue.len() <= max_items && self.bytes <= max_bytes {
            return self.take_all(batch);
        }
        // The longest prefix within the limits (at least one item)...
        let mut n = 0;
        let mut bytes = 0;
        for slot in self.queue.iter() {
            if n > 0 && (n >= max_items || bytes + slot.size() > max_bytes) {
                break;
            }
            n += 1;
            bytes += slot.size();
        }
        // ...ending before the chunk it shares with the first item left.
        if n < self.queue.len() {
            let shared = self.queue[n].at.chunk;
            let mut m = n;
            while m > 0 && self.queue[m - 1].at.chunk == shared {
                m -= 1;
            }
            if m > 0 {
                n = m;
            }
        }
        let mut bytes = 0;
        for _ in 0..n {
            let slot = self.queue.pop_front().expect("counted");
            self.arena.sub_live(slot.at.chunk);
            bytes += slot.size();
            batch.slots.push_back(slot);
        }
        self.head_seq += n as u64;
        self.bytes -= bytes;
        // Chunks left with no queued body move, bodies and ids unchanged;
        // bodies in chunks that stay are copied.
        let first = self.arena.front_id();
        let moved = self.arena.move_dead_front(&mut batch.arena);
        for slot in batch.slots.iter_mut() {
            if slot.at.chunk.wrapping_sub(first) as usize >= moved {
                batch.arena.take_spare(&mut self.arena);
                slot.at = batch.arena.append(self.arena.get(slot.at, slot.len));
            } else {
                batch.arena.add_live(slot.at.chunk);
            }
        }
        self.arena.release_front();
        self.arena.take_spares(&mut batch.arena);
        self.counters.in_flight += n as u64;
        self.held.in_flight_items += n;
        self.held.in_flight_bytes += bytes;
    }

    /// Confirms that a taken batch was written, except the items whose
    /// deadline passed before the write (`expired(slot)` says which; they
    /// count as expired). When `retain` is set, each written keyed item
    /// becomes its key's last value (for [`Ring::restore`]). The batch is
    /// emptied, ready for the next [`Ring::take_all`].
    pub fn complete(
        &mut self,
        batch: &mut Batch<H>,
        retain: bool,
        expired: impl Fn(&Slot<H>) -> bool,
    ) {
        self.settle(batch, retain, expired);
        batch.clear();
    }

    /// Like [`Ring::complete`], but leaves the batch as it is (the caller
    /// keeps its reliable items until the server confirms them, then
    /// [`Batch::clear`]s it).
    pub fn settle(&mut self, batch: &Batch<H>, retain: bool, expired: impl Fn(&Slot<H>) -> bool) {
        let n = batch.slots.len() as u64;
        self.release_in_flight(batch);
        // A plain batch has nothing to retain and nothing expired (the
        // writer said so): no pass over it.
        debug_assert!(!batch.is_plain() || !batch.slots.iter().any(&expired));
        let mut n_expired = 0;
        if !batch.is_plain() {
            for slot in batch.slots.iter() {
                let owned = self.owns_key(slot);
                if owned {
                    self.note_written(slot.key);
                }
                if expired(slot) {
                    n_expired += 1;
                    continue;
                }
                if retain && owned {
                    let body = batch.arena.get(slot.at, slot.len);
                    self.retain(slot.key, slot.header, body, &slot.tail, slot.born);
                }
            }
        }
        self.counters.in_flight -= n;
        self.counters.expired += n_expired;
        self.counters.sent += n - n_expired;
    }

    fn release_in_flight(&mut self, batch: &Batch<H>) {
        let bytes = batch.bytes();
        self.held.in_flight_items = self.held.in_flight_items.saturating_sub(batch.slots.len());
        self.held.in_flight_bytes = self.held.in_flight_bytes.saturating_sub(bytes);
    }

    /// Puts a batch that could not be written back at the front of the
    /// line, in its original order, ahead of anything queued since. A keyed
    /// item whose key has a newer value queued is counted as coalesced (the
    /// newer value wins). Requeued items may exceed the bounds briefly: they
    /// were accepted already and are never dropped for lack of room. The
    /// batch is emptied.
    pub fn requeue(&mut self, batch: &mut Batch<H>) {
        self.counters.in_flight -= batch.slots.len() as u64;
        self.release_in_flight(batch);
        let mut line: VecDeque<Slot<H>> =
            VecDeque::with_capacity(batch.slots.len() + self.queue.len());
        batch.plain = None;
        for mut slot in batch.slots.drain(..) {
            if self.owns_key(&slot) {
                if self.pending_pos(slot.key).is_some() {
                    self.counters.coalesced += 1;
                    continue;
                }
            } else {
                slot.key = NO_KEY;
            }
            line.push_back(slot);
        }
        let front = line.len();
        let mut arena = repack(&mut line, &mut batch.arena);
        batch.clear();
        self.append_line(&mut line, &mut arena);
        self.head_seq -= front as u64;
        self.install(line, arena);
    }

    /// Moves the current line to the end of `line`, copying its bodies into
    /// `arena`.
    fn append_line(&mut self, line: &mut VecDeque<Slot<H>>, arena: &mut Arena) {
        for mut slot in self.queue.drain(..) {
            slot.at = arena.append(self.arena.get(slot.at, slot.len));
            line.push_back(slot);
        }
        arena.take_spares(&mut self.arena);
    }

    /// Installs `line` (over `arena`) as the queue, numbered from
    /// `head_seq`, and points every queued key at its slot.
    fn install(&mut self, line: VecDeque<Slot<H>>, arena: Arena) {
        self.arena = arena;
        self.queue = line;
        self.bytes = self.queue.iter().map(Slot::size).sum();
        for (i, slot) in self.queue.iter().enumerate() {
            if slot.key != NO_KEY {
                self.keys[slot.key as usize].pending = self.head_seq + i as u64;
            }
        }
    }

    /// Puts items that were written but may not have been read (the
    /// connection was lost before the server confirmed them) back at the
    /// front of the line, in order, as unkeyed items, to be written again.
    /// They count as published again. Returns how many.
    pub fn resend(&mut self, batch: &mut Batch<H>) -> usize {
        let n = batch.slots.len();
        if n == 0 {
            return 0;
        }
        self.counters.published += n as u64;
        let mut line: VecDeque<Slot<H>> = VecDeque::with_capacity(n + self.queue.len());
        batch.plain = None;
        for mut slot in batch.slots.drain(..) {
            slot.key = NO_KEY;
            line.push_back(slot);
        }
        let mut arena = repack(&mut line, &mut batch.arena);
        batch.clear();
        self.append_line(&mut line, &mut arena);
        self.head_seq -= n as u64;
        self.install(line, arena);
        n
    }

    /// Prepares the line for a new connection (state restore): the retained
    /// last value of every key that has nothing queued is put at the front
    /// of the line, oldest first, ahead of everything already queued (which
    /// keeps its order). `restamp` may change each restored value's header
    /// (e.g. its timestamp). Returns how many values were restored; they
    /// count as published again.
    pub fn restore(&mut self, mut restamp: impl FnMut(&mut H)) -> usize {
        let mut restored: Vec<(u32, u64)> = Vec::new();
        for &id in self.index.iter() {
            if self.pending_pos(id).is_none() {
                if let Some(r) = &self.keys[id as usize].last {
                    restored.push((id, r.born));
                }
            }
        }
        if restored.is_empty() {
            return 0;
        }
        restored.sort_by_key(|&(_, born)| born);
        let n = restored.len();
        self.counters.published += n as u64;
        let mut arena = Arena::default();
        let mut line: VecDeque<Slot<H>> = VecDeque::with_capacity(self.queue.len() + n);
        for (id, _) in restored {
            let st = &self.keys[id as usize];
            let r = st.last.as_ref().expect("retained");
            let at = arena.append(&r.body);
            let mut header = r.header;
            restamp(&mut header);
            line.push_back(Slot {
                header,
                at,
                len: r.body.len() as u32,
                tail: r.tail.clone(),
                born: r.born,
                deadline: u64::MAX,
                key: id,
                gen: st.gen,
            });
        }
        self.append_line(&mut line, &mut arena);
        self.head_seq -= n as u64;
        self.install(line, arena);
        n
    }

    /// Drops everything queued, counting it as dropped (the client gave up
    /// for good). Returns how many items were dropped.
    pub fn abandon_all(&mut self) -> u64 {
        let n = self.queue.len() as u64;
        self.head_seq += n;
        self.queue.clear();
        self.arena.clear();
        self.bytes = 0;
        self.counters.dropped += n;
        n
    }

    /// Makes this the last written value of key `id` (reusing its buffer).
    fn retain(&mut self, id: u32, header: H, body: &[u8], tail: &Bytes, born: u64) {
        let st = &mut self.keys[id as usize];
        let mut r = st.last.take().unwrap_or(Retained {
            header,
            body: Vec::new(),
            tail: Bytes::new(),
            born: 0,
        });
        self.retained_bytes -= r.body.len() + r.tail.len();
        r.header = header;
        r.body.clear();
        if r.body.capacity() > 2 * body.len() + (4 << 10) {
            // A large value replaced by a small one does not pin memory.
            r.body.shrink_to(body.len());
        }
        r.body.extend_from_slice(body);
        r.tail = tail.clone();
        r.born = born;
        self.retained_bytes += r.body.len() + r.tail.len();
        st.last = Some(r);
        st.referenced = true;
        if !st.in_lru {
            st.in_lru = true;
            self.retained_lru.push_back(id);
        }
        self.trim_retained(id);
    }

    /// Drops retained values (not `keep`'s) until they fit in the byte
    /// bound: retained values are memory like the queue, and `restore`
    /// queues all of them. Without it, 64 keys of 512 KiB kept 32 MiB with
    /// a 1 MiB bound.
    fn trim_retained(&mut self, keep: u32) {
        // Each id is looked at most twice (once to clear its mark).
        let mut budget = 2 * self.retained_lru.len() + 1;
        while self.retained_bytes > self.limits.max_bytes && budget > 0 {
            budget -= 1;
            let Some(id) = self.retained_lru.pop_front() else {
                break;
            };
            let st = &mut self.keys[id as usize];
            if st.last.is_none() {
                // Forgotten meanwhile.
                st.in_lru = false;
                continue;
            }
            if id == keep || std::mem::take(&mut st.referenced) {
                self.retained_lru.push_back(id);
                continue;
            }
            st.in_lru = false;
            let r = st.last.take().expect("checked");
            self.retained_bytes -= r.body.len() + r.tail.len();
            self.counters.retained_evicted += 1;
        }
    }

    /// Counts an item refused before it reached the ring (e.g. too large to
    /// encode within the message limit), so the identity still holds.
    pub fn count_rejected(&mut self) {
        self.counters.published += 1;
        self.counters.rejected += 1;
    }

    /// Takes back one refusal (the caller retries the same item later).
    pub fn uncount_rejected(&mut self) {
        self.counters.published -= 1;
        self.counters.rejected -= 1;
    }
}

#[cfg(test)]
mod tests;
