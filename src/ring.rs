//! The coalescing ring: a bounded queue where keyed values replace each other
//! (latest value wins) and unkeyed values are delivered first in, first out.
//!
//! This module knows nothing of tokio, sockets or msgpack: it moves opaque
//! items with a byte size, so it is unit-tested, property-tested and benched
//! on its own. The client wraps it in a mutex; the sender task drains it.
//!
//! # Semantics
//!
//! * **Line order.** Items leave in the order they first entered the line.
//! * **Keyed items** (latest value wins): a new value for a key whose older
//!   value is still queued replaces that value *in place*: it keeps the old
//!   value's place in line, and the old value is counted as `coalesced`. So
//!   per key, values leave in the order published (the newest one wins), and
//!   a key that is updated faster than the sender drains still leaves at the
//!   position of its first pending update: it is never starved.
//! * **Unkeyed items** (reliable) are never replaced or dropped by the ring;
//!   when the ring is full, [`Ring::push`] hands them back in [`Full`].
//! * **Across keys**, the order is the order in which each key's *pending*
//!   value first entered the line. A key updated after another key may
//!   therefore leave before it (its slot was older). Unkeyed items keep
//!   their order relative to each other and to the slots around them. Code
//!   that needs strict order between two kinds of events should send them
//!   unkeyed.
//! * **Maximum age.** An item may carry a deadline; an item whose deadline
//!   has passed when it is drained is not returned but counted as `expired`.
//! * **Bounds.** The ring holds at most `max_items` items and `max_bytes`
//!   bytes, and knows at most `max_keys` keys. When the key table is full,
//!   keys with nothing queued are forgotten to make room.

use std::collections::VecDeque;
use std::hash::{Hash, Hasher};

use hashbrown::{Equivalent, HashMap};
use rustc_hash::FxBuildHasher;

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
    /// Refuse the new item and hand it back ([`Full`]); nothing queued is
    /// touched. The default: nothing accepted is ever dropped.
    #[default]
    Reject,
    /// Drop the oldest queued items (counted as `dropped`) until the new one
    /// fits. For streams where the newest data matters more than the oldest.
    DropOldest,
}

/// The new item did not fit; it is handed back.
#[derive(Debug)]
pub struct Full<T>(pub T);

/// What [`Ring::push`] did.
#[derive(Debug)]
pub enum Pushed<T> {
    /// Queued at the end of the line.
    Queued,
    /// Replaced a pending value of the same key in place; the old value is
    /// returned so its storage can be reused.
    Replaced(T),
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

/// A queued item with its bookkeeping.
#[derive(Debug)]
pub struct Slot<T> {
    /// The item.
    pub item: T,
    /// Its size in bytes, as given to `push`.
    pub bytes: usize,
    /// When it was published (caller's clock, e.g. nanoseconds).
    pub born: u64,
    /// When it expires (`u64::MAX`: never).
    pub deadline: u64,
    key: u32,
}

impl<T> Slot<T> {
    /// True if the item is keyed (latest value wins).
    pub fn is_keyed(&self) -> bool {
        self.key != NO_KEY
    }
}

#[derive(Debug)]
struct KeyState<T> {
    /// Sequence number of the queued value, if any.
    pending: Option<u64>,
    /// The last value handed to the writer and confirmed written, kept for
    /// state restore after a reconnect.
    last: Option<(T, usize, u64)>,
}

/// Counters kept by the ring. At every moment
/// `published == sent + coalesced + expired + rejected + dropped + pending`,
/// where `pending` is queued plus in flight (drained, not yet completed).
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
    /// Items drained and not yet completed or requeued.
    pub in_flight: u64,
}

/// The coalescing ring. See the [module documentation](self).
#[derive(Debug)]
pub struct Ring<T> {
    queue: VecDeque<Slot<T>>,
    /// Sequence number of `queue[0]`.
    head_seq: u64,
    bytes: usize,
    index: HashMap<OwnedKey, u32, FxBuildHasher>,
    keys: Vec<KeyState<T>>,
    free_keys: Vec<u32>,
    retained_bytes: usize,
    limits: RingLimits,
    overflow: Overflow,
    counters: RingCounters,
}

impl<T> Ring<T> {
    /// An empty ring with these limits and overflow policy.
    pub fn new(limits: RingLimits, overflow: Overflow) -> Self {
        Ring {
            queue: VecDeque::with_capacity(limits.max_items.min(1024)),
            // Starts high so that restored values (numbered below the head)
            // never wrap.
            head_seq: 1 << 62,
            bytes: 0,
            index: HashMap::with_hasher(FxBuildHasher),
            keys: Vec::new(),
            free_keys: Vec::new(),
            retained_bytes: 0,
            limits,
            overflow,
            counters: RingCounters::default(),
        }
    }

    /// Items queued (not counting those in flight).
    pub fn len(&self) -> usize {
        self.queue.len()
    }

    /// True when nothing is queued.
    pub fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }

    /// Payload bytes queued.
    pub fn bytes(&self) -> usize {
        self.bytes
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

    fn fits(&self, extra_items: usize, extra_bytes: usize) -> bool {
        self.queue.len() + extra_items <= self.limits.max_items
            && self.bytes + extra_bytes <= self.limits.max_bytes
    }

    /// Offers an item. `key: None` is an unkeyed (reliable) item.
    ///
    /// An item larger than `max_bytes` on its own never fits and is always
    /// handed back.
    pub fn push(
        &mut self,
        key: Option<KeyRef<'_>>,
        item: T,
        bytes: usize,
        born: u64,
        deadline: u64,
    ) -> Result<Pushed<T>, Full<T>> {
        self.counters.published += 1;
        if bytes > self.limits.max_bytes {
            self.counters.rejected += 1;
            return Err(Full(item));
        }
        let Some(key) = key else {
            if !self.make_room(1, bytes) {
                self.counters.rejected += 1;
                return Err(Full(item));
            }
            self.enqueue(item, bytes, born, deadline, NO_KEY);
            return Ok(Pushed::Queued);
        };

        let existing = self.index.get(&key).copied();
        if let Some(id) = existing {
            if let Some(seq) = self.keys[id as usize].pending {
                let pos = (seq - self.head_seq) as usize;
                let old_bytes = self.queue[pos].bytes;
                if bytes > old_bytes && !self.fits(0, bytes - old_bytes) {
                    // Growing in place would break the byte bound; DropOldest
                    // must not evict the slot being replaced, so refuse.
                    self.counters.rejected += 1;
                    return Err(Full(item));
                }
                let slot = &mut self.queue[pos];
                let old = std::mem::replace(&mut slot.item, item);
                slot.bytes = bytes;
                slot.born = born;
                slot.deadline = deadline;
                self.bytes = self.bytes - old_bytes + bytes;
                self.counters.coalesced += 1;
                return Ok(Pushed::Replaced(old));
            }
        }
        if !self.make_room(1, bytes) {
            self.counters.rejected += 1;
            return Err(Full(item));
        }
        let id = match existing {
            Some(id) => id,
            None => match self.intern(key) {
                Some(id) => id,
                None => {
                    self.counters.rejected += 1;
                    return Err(Full(item));
                }
            },
        };
        let seq = self.enqueue(item, bytes, born, deadline, id);
        self.keys[id as usize].pending = Some(seq);
        Ok(Pushed::Queued)
    }

    fn enqueue(&mut self, item: T, bytes: usize, born: u64, deadline: u64, key: u32) -> u64 {
        let seq = self.head_seq + self.queue.len() as u64;
        self.queue.push_back(Slot {
            item,
            bytes,
            born,
            deadline,
            key,
        });
        self.bytes += bytes;
        seq
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
            match self.pop_front() {
                Some(_) => self.counters.dropped += 1,
                None => return false,
            }
        }
        true
    }

    fn pop_front(&mut self) -> Option<Slot<T>> {
        let slot = self.queue.pop_front()?;
        self.head_seq += 1;
        self.bytes -= slot.bytes;
        if slot.key != NO_KEY {
            self.keys[slot.key as usize].pending = None;
        }
        Some(slot)
    }

    fn intern(&mut self, key: KeyRef<'_>) -> Option<u32> {
        if self.index.len() >= self.limits.max_keys {
            self.forget_idle_keys();
            if self.index.len() >= self.limits.max_keys {
                return None;
            }
        }
        let id = match self.free_keys.pop() {
            Some(id) => id,
            None => {
                self.keys.push(KeyState {
                    pending: None,
                    last: None,
                });
                (self.keys.len() - 1) as u32
            }
        };
        let owned = OwnedKey {
            etype: key.etype.into(),
            key: key.key.into(),
        };
        self.index.insert(owned, id);
        Some(id)
    }

    /// Forgets every key with nothing queued (and its retained value).
    fn forget_idle_keys(&mut self) {
        let keys = &mut self.keys;
        let free = &mut self.free_keys;
        let mut released = 0usize;
        self.index.retain(|_, id| {
            let st = &mut keys[*id as usize];
            if st.pending.is_some() {
                return true;
            }
            if let Some((_, b, _)) = st.last.take() {
                released += b;
            }
            free.push(*id);
            false
        });
        self.retained_bytes -= released;
    }

    /// Moves up to `max_items` items / about `max_bytes` bytes (at least one
    /// item when any is queued) from the front of the line into `out`.
    /// Items whose deadline is before `now` are counted as expired and passed
    /// to `on_expired` instead. Drained items count as in flight until
    /// [`Ring::complete`] or [`Ring::requeue`].
    pub fn drain(
        &mut self,
        now: u64,
        max_items: usize,
        max_bytes: usize,
        out: &mut Vec<Slot<T>>,
        mut on_expired: impl FnMut(T),
    ) {
        let mut taken_bytes = 0usize;
        let mut taken = 0usize;
        while taken < max_items {
            let Some(front) = self.queue.front() else {
                break;
            };
            if taken > 0 && taken_bytes + front.bytes > max_bytes {
                break;
            }
            let slot = self.pop_front().expect("front exists");
            if slot.deadline < now {
                self.counters.expired += 1;
                on_expired(slot.item);
                continue;
            }
            taken += 1;
            taken_bytes += slot.bytes;
            self.counters.in_flight += 1;
            out.push(slot);
        }
    }

    /// Counts an in-flight item as expired after all (its deadline passed
    /// between [`Ring::drain`] and the write).
    pub fn expire_in_flight(&mut self, n: u64) {
        self.counters.in_flight -= n;
        self.counters.expired += n;
    }

    /// Confirms that drained items were written. Keyed items become their
    /// key's retained last value (when `retain` is true and the key is still
    /// known), and the value they displace is passed to `recycle`, as are
    /// all unkeyed items.
    pub fn complete(
        &mut self,
        batch: impl IntoIterator<Item = Slot<T>>,
        retain: bool,
        mut recycle: impl FnMut(T),
    ) {
        for slot in batch {
            self.counters.in_flight -= 1;
            self.counters.sent += 1;
            if retain && slot.key != NO_KEY {
                let st = &mut self.keys[slot.key as usize];
                self.retained_bytes += slot.bytes;
                if let Some((old, b, _)) = st.last.replace((slot.item, slot.bytes, slot.born)) {
                    self.retained_bytes -= b;
                    recycle(old);
                }
            } else {
                recycle(slot.item);
            }
        }
    }

    /// Puts drained items that could not be written back at the front of the
    /// line, in their original order. A keyed item whose key has a newer
    /// value queued is counted as coalesced (the newer value wins) and passed
    /// to `recycle`. Requeued items may exceed the bounds briefly: they were
    /// accepted already and are never dropped for lack of room.
    pub fn requeue(&mut self, batch: Vec<Slot<T>>, mut recycle: impl FnMut(T)) {
        for slot in batch.into_iter().rev() {
            self.counters.in_flight -= 1;
            if slot.key != NO_KEY && self.keys[slot.key as usize].pending.is_some() {
                self.counters.coalesced += 1;
                recycle(slot.item);
                continue;
            }
            self.head_seq -= 1;
            self.bytes += slot.bytes;
            if slot.key != NO_KEY {
                self.keys[slot.key as usize].pending = Some(self.head_seq);
            }
            self.queue.push_front(slot);
        }
    }

    /// Prepares the line for a new connection (state restore): the retained
    /// last value of every key that has nothing queued is put at the front
    /// of the line, oldest first, ahead of everything already queued (which
    /// keeps its order). `clone` copies a retained value. Returns how many
    /// values were restored; they count as published again.
    pub fn restore(&mut self, mut clone: impl FnMut(&T) -> T) -> usize {
        let mut restored: Vec<Slot<T>> = Vec::new();
        for &id in self.index.values() {
            let st = &self.keys[id as usize];
            if st.pending.is_none() {
                if let Some((item, bytes, born)) = &st.last {
                    restored.push(Slot {
                        item: clone(item),
                        bytes: *bytes,
                        born: *born,
                        deadline: u64::MAX,
                        key: id,
                    });
                }
            }
        }
        // Newest first into push_front, so the line starts with the oldest.
        restored.sort_by_key(|s| std::cmp::Reverse(s.born));
        let n = restored.len();
        self.counters.published += n as u64;
        for slot in restored {
            self.head_seq -= 1;
            self.bytes += slot.bytes;
            self.keys[slot.key as usize].pending = Some(self.head_seq);
            self.queue.push_front(slot);
        }
        n
    }

    /// Sequence number of the first queued item: every item with a lower
    /// number has left the line.
    pub fn head_seq(&self) -> u64 {
        self.head_seq
    }

    /// Sequence number the next queued item will get.
    pub fn tail_seq(&self) -> u64 {
        self.head_seq + self.queue.len() as u64
    }

    /// Drops everything queued, counting it as dropped (used when the client
    /// gives up for good). Items are passed to `recycle`.
    pub fn abandon_all(&mut self, mut recycle: impl FnMut(T)) -> u64 {
        let mut n = 0;
        while let Some(slot) = self.pop_front() {
            self.counters.dropped += 1;
            n += 1;
            recycle(slot.item);
        }
        n
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

    /// Counts in-flight items as dropped (their write failed and they will
    /// not be retried).
    pub fn drop_in_flight(&mut self, n: u64) {
        self.counters.in_flight -= n;
        self.counters.dropped += n;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ring(max_items: usize, max_bytes: usize) -> Ring<u32> {
        Ring::new(
            RingLimits {
                max_items,
                max_bytes,
                max_keys: 16,
            },
            Overflow::Reject,
        )
    }

    fn k(key: &str) -> Option<KeyRef<'_>> {
        Some(KeyRef { etype: "E", key })
    }

    fn drain_all(r: &mut Ring<u32>, now: u64) -> Vec<u32> {
        let mut out = Vec::new();
        r.drain(now, usize::MAX, usize::MAX, &mut out, |_| {});
        let items = out.iter().map(|s| s.item).collect();
        r.complete(out, true, |_| {});
        items
    }

    fn check_identity(r: &Ring<u32>) {
        let c = r.counters();
        assert_eq!(
            c.published,
            c.sent
                + c.coalesced
                + c.expired
                + c.rejected
                + c.dropped
                + c.in_flight
                + r.len() as u64
        );
    }

    #[test]
    fn keyed_value_replaces_in_place_and_keeps_its_place() {
        let mut r = ring(10, 100);
        r.push(k("a"), 1, 1, 0, u64::MAX).unwrap();
        r.push(None, 2, 1, 0, u64::MAX).unwrap();
        r.push(k("b"), 3, 1, 0, u64::MAX).unwrap();
        assert!(matches!(
            r.push(k("a"), 4, 1, 0, u64::MAX),
            Ok(Pushed::Replaced(1))
        ));
        assert_eq!(drain_all(&mut r, 0), vec![4, 2, 3]);
        assert_eq!(r.counters().coalesced, 1);
        check_identity(&r);
    }

    #[test]
    fn unkeyed_full_hands_item_back() {
        let mut r = ring(2, 100);
        r.push(None, 1, 1, 0, u64::MAX).unwrap();
        r.push(None, 2, 1, 0, u64::MAX).unwrap();
        let Err(Full(v)) = r.push(None, 3, 1, 0, u64::MAX) else {
            panic!("expected Full")
        };
        assert_eq!(v, 3);
        // A pending key can still be updated when full.
        assert_eq!(r.counters().rejected, 1);
        check_identity(&r);
    }

    #[test]
    fn byte_bound_is_enforced() {
        let mut r = ring(100, 10);
        r.push(None, 1, 6, 0, u64::MAX).unwrap();
        assert!(r.push(None, 2, 5, 0, u64::MAX).is_err());
        assert!(r.push(None, 3, 11, 0, u64::MAX).is_err());
        r.push(k("a"), 4, 4, 0, u64::MAX).unwrap();
        // Growing a keyed value beyond the bound is refused.
        assert!(r.push(k("a"), 5, 5, 0, u64::MAX).is_err());
        assert_eq!(r.bytes(), 10);
        check_identity(&r);
    }

    #[test]
    fn expired_values_are_counted_not_returned() {
        let mut r = ring(10, 100);
        r.push(k("a"), 1, 1, 0, 5).unwrap();
        r.push(None, 2, 1, 0, u64::MAX).unwrap();
        assert_eq!(drain_all(&mut r, 6), vec![2]);
        assert_eq!(r.counters().expired, 1);
        check_identity(&r);
    }

    #[test]
    fn drop_oldest_policy_counts_drops() {
        let mut r: Ring<u32> = Ring::new(
            RingLimits {
                max_items: 2,
                max_bytes: 100,
                max_keys: 4,
            },
            Overflow::DropOldest,
        );
        for i in 0..5 {
            r.push(None, i, 1, 0, u64::MAX).unwrap();
        }
        assert_eq!(drain_all(&mut r, 0), vec![3, 4]);
        assert_eq!(r.counters().dropped, 3);
        check_identity(&r);
    }

    #[test]
    fn requeue_puts_batch_back_in_order_and_newer_values_win() {
        let mut r = ring(10, 100);
        r.push(k("a"), 1, 1, 0, u64::MAX).unwrap();
        r.push(None, 2, 1, 0, u64::MAX).unwrap();
        let mut out = Vec::new();
        r.drain(0, usize::MAX, usize::MAX, &mut out, |_| {});
        r.push(k("a"), 3, 1, 0, u64::MAX).unwrap();
        r.push(None, 4, 1, 0, u64::MAX).unwrap();
        r.requeue(out, |_| {});
        assert_eq!(drain_all(&mut r, 0), vec![2, 3, 4]);
        check_identity(&r);
    }

    #[test]
    fn restore_puts_last_values_first() {
        let mut r = ring(10, 100);
        r.push(k("a"), 1, 1, 1, u64::MAX).unwrap();
        r.push(k("b"), 2, 1, 2, u64::MAX).unwrap();
        assert_eq!(drain_all(&mut r, 0), vec![1, 2]);
        r.push(None, 7, 1, 3, u64::MAX).unwrap();
        r.push(k("b"), 5, 1, 4, u64::MAX).unwrap();
        assert_eq!(r.restore(|v| *v), 1);
        // a's last value is restored first; b has a newer pending value, so
        // its old one is not; the queued items keep their order.
        assert_eq!(drain_all(&mut r, 0), vec![1, 7, 5]);
        check_identity(&r);
    }

    #[test]
    fn idle_keys_are_forgotten_when_the_table_is_full() {
        let mut r: Ring<u32> = Ring::new(
            RingLimits {
                max_items: 100,
                max_bytes: 1000,
                max_keys: 2,
            },
            Overflow::Reject,
        );
        r.push(k("a"), 1, 1, 0, u64::MAX).unwrap();
        r.push(k("b"), 2, 1, 0, u64::MAX).unwrap();
        assert!(r.push(k("c"), 3, 1, 0, u64::MAX).is_err());
        drain_all(&mut r, 0);
        r.push(k("c"), 3, 1, 0, u64::MAX).unwrap();
        assert_eq!(r.key_count(), 1);
        check_identity(&r);
    }

    #[test]
    fn drain_respects_budgets_but_takes_at_least_one() {
        let mut r = ring(10, 1000);
        for i in 0..5 {
            r.push(None, i, 100, 0, u64::MAX).unwrap();
        }
        let mut out = Vec::new();
        r.drain(0, 2, usize::MAX, &mut out, |_| {});
        assert_eq!(out.len(), 2);
        out.clear();
        r.drain(0, usize::MAX, 50, &mut out, |_| {});
        assert_eq!(out.len(), 1);
    }
}
