//! Delivery confirmation of reliable events.
//!
//! A write completes when the bytes are in the kernel. They can still be
//! lost with the connection: in the kernel buffers, in a proxy, or read by
//! the server's TCP stack but not yet by a server process that is being
//! killed. Vuer 0.1.6 acknowledges nothing, but it answers pings in order:
//! aiohttp's `WebSocketResponse.receive()` sends the pong when the
//! application's receive loop reaches the ping, after it has returned every
//! earlier message, and vuer's `downlink` dispatches each message before it
//! asks for the next. The in-process server answers the same way. The
//! sender's pings carry the byte offset written before them (see
//! `pacing`), so a pong confirms everything written up to that offset.
//!
//! The sender keeps each written batch that holds reliable events here
//! (only those events; the batch is moved, not copied, when it holds
//! nothing else) until a pong confirms its end offset. When the connection
//! is lost first, the supervisor puts the unconfirmed events back at the
//! front of the line ([`Ring::resend`]) and they are written again on the
//! next connection: reliable events arrive at least once. Keyed events are
//! not kept: state restore sends the latest value of every key again.
//!
//! Bounded: the events kept have a budget of their own, the ring's limits
//! again. When it is full the sender writes nothing more (it waits for a
//! pong), so the ring fills and `publish` refuses reliable events (and
//! `send().await` waits): a server that stops reading cannot make the client
//! forget what it owes it, and the client holds at most twice the
//! configured bounds. The budget is separate from the ring's so that the
//! time a confirmation takes (a round trip and the probe interval) does not
//! cap the rate: a probe goes out at once when an eighth of it is used.
//!
//! [`Ring::resend`]: crate::ring::Ring::resend

use std::collections::VecDeque;

use crate::codec::Header;
use crate::ring::Batch;

/// Emptied batches kept for reuse: at most this many...
const SPARE_BATCHES: usize = 64;
/// ...holding at most this much memory in all. A confirmation takes a
/// round trip and up to a probe interval, so at high rates dozens of small
/// batches wait for it at once; reusing their buffers spares the producer
/// growing a fresh queue from empty in every round.
/// 8 MiB: with the ring's chunks (64 KiB each) kept in emptied batches, a
/// round of a full default pacing pipe (8 MiB) returns its chunks here
/// instead of to the allocator, so the next rounds fault no fresh pages.
const SPARE_BYTES: usize = 8 << 20;
/// The most items a fresh batch is given room for up front; beyond it, it
/// grows as needed (bodies come in chunks from the ring).
const HINT_ITEMS: usize = 4096;

struct Entry {
    /// Byte offset just past the batch's frames on the connection.
    end: u64,
    batch: Batch<Header>,
}

/// Reliable events written and not yet confirmed, oldest first.
#[derive(Default)]
pub(crate) struct Unconfirmed {
    entries: VecDeque<Entry>,
    items: usize,
    bytes: usize,
    spare: Vec<Batch<Header>>,
    /// Capacity held by `spare`, bytes.
    spare_bytes: usize,
    /// Items of the latest batch kept: a new batch is allocated at this
    /// size rather than grown from empty.
    size_hint: usize,
    max_items: usize,
    max_bytes: usize,
    /// Body chunks of recycled batches, for the ring
    /// ([`Ring::reclaim_chunks`](crate::ring::Ring::reclaim_chunks)):
    /// left in pooled batches, they were not where publishers need them,
    /// and the ring allocated new ones.
    pub(crate) chunks: Vec<Vec<u8>>,
}

impl Unconfirmed {
    /// A tracker with this budget.
    pub(crate) fn new(limits: crate::ring::RingLimits) -> Self {
        Unconfirmed {
            max_items: limits.max_items,
            max_bytes: limits.max_bytes,
            ..Default::default()
        }
    }

    /// Room left in the budget: (items, bytes). The sender takes no more
    /// than this from the ring (keyed items, which are not kept, count
    /// too: the bound is conservative), and nothing when it is zero.
    pub(crate) fn room(&self) -> (usize, usize) {
        (
            self.max_items.saturating_sub(self.items),
            self.max_bytes.saturating_sub(self.bytes),
        )
    }

    /// An eighth of the budget is used: confirm now, whatever the probe
    /// interval.
    pub(crate) fn is_urgent(&self) -> bool {
        self.items * 8 >= self.max_items || self.bytes * 8 >= self.max_bytes
    }

    /// Reliable events waiting for confirmation.
    pub(crate) fn len(&self) -> usize {
        self.items
    }

    /// Bytes of the events waiting for confirmation.
    #[cfg(test)]
    pub(crate) fn bytes(&self) -> usize {
        self.bytes
    }

    /// True when nothing waits for confirmation.
    pub(crate) fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// An empty batch (reused when possible).
    pub(crate) fn spare(&mut self) -> Batch<Header> {
        match self.spare.pop() {
            Some(b) => {
                self.spare_bytes -= b.capacity_bytes();
                b
            }
            None => Batch::with_capacity(self.size_hint),
        }
    }

    fn recycle(&mut self, mut b: Batch<Header>) {
        let cap = b.capacity_bytes();
        if self.spare.len() < SPARE_BATCHES && self.spare_bytes + cap <= SPARE_BYTES {
            b.clear();
            b.give_spares(&mut self.chunks);
            let cap = b.capacity_bytes();
            self.spare_bytes += cap;
            self.spare.push(b);
        }
    }

    /// Takes the reliable events of a batch just written (those for which
    /// `written` holds) to keep until a pong confirms `end`. `batch` is left
    /// empty (a spare one takes its place).
    pub(crate) fn keep(
        &mut self,
        batch: &mut Batch<Header>,
        end: u64,
        written: impl Fn(&crate::ring::Slot<Header>) -> bool,
    ) {
        // A fresh batch is sized like this one (capped): round sizes change
        // slowly, and a batch holds at most twice what its predecessor
        // needed, as growing by doubling would.
        self.size_hint = batch.len().min(HINT_ITEMS);
        let mut b = std::mem::replace(batch, self.spare());
        if !b.is_plain() {
            b.retain(|s| !s.is_keyed() && written(s));
        }
        if b.is_empty() {
            self.recycle(b);
            return;
        }
        self.items += b.len();
        self.bytes += b.bytes();
        self.entries.push_back(Entry { end, batch: b });
    }

    /// The server has read everything up to byte `acked`: releases the
    /// batches that end there or before into `released`, still full: the
    /// caller empties them after letting go of the outbox lock (dropping
    /// thousands of events is not work to do while publishers wait) and
    /// hands them back with [`Unconfirmed::give_back`]. Returns true if any
    /// was released.
    pub(crate) fn confirm(&mut self, acked: u64, released: &mut Vec<Batch<Header>>) -> bool {
        let mut freed = false;
        while self.entries.front().is_some_and(|e| e.end <= acked) {
            let e = self.entries.pop_front().expect("front exists");
            self.items -= e.batch.len();
            self.bytes -= e.batch.bytes();
            released.push(e.batch);
            freed = true;
        }
        freed
    }

    /// Takes back released batches (emptied by the caller) into the pool
    /// of spares, within its bounds.
    pub(crate) fn give_back(&mut self, emptied: &mut Vec<Batch<Header>>) {
        for b in emptied.drain(..) {
            self.recycle(b);
        }
    }

    /// Every unconfirmed batch, newest first (putting each at the front of
    /// the line in this order leaves them oldest first); the tracker is left
    /// empty.
    pub(crate) fn take_all(&mut self) -> Vec<Batch<Header>> {
        self.items = 0;
        self.bytes = 0;
        self.entries.drain(..).rev().map(|e| e.batch).collect()
    }

    /// Forgets everything (the client is closed for good).
    pub(crate) fn clear(&mut self) {
        for b in self.take_all() {
            self.recycle(b);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ring::{KeyRef, Overflow, Ring, RingLimits};
    use bytes::Bytes;

    fn written_batch(ring: &mut Ring<Header>, values: &[(bool, u8)]) -> Batch<Header> {
        for &(keyed, v) in values {
            let key = keyed.then_some(KeyRef {
                etype: "E",
                key: "k",
            });
            ring.push(key, Header::default(), &[v; 4], Bytes::new(), 0, u64::MAX)
                .unwrap();
        }
        let mut b = Batch::default();
        ring.take_all(&mut b);
        ring.settle(&b, true, |_| false);
        b
    }

    fn ring() -> Ring<Header> {
        Ring::new(
            RingLimits {
                max_items: 100,
                max_bytes: 10_000,
                max_keys: 10,
            },
            Overflow::Reject,
        )
    }

    #[test]
    fn a_pong_releases_what_ended_before_its_offset() {
        let mut r = ring();
        let mut u = Unconfirmed::default();
        let mut b = written_batch(&mut r, &[(false, 1), (true, 9), (false, 2)]);
        u.keep(&mut b, 100, |_| true);
        assert!(b.is_empty());
        assert_eq!((u.len(), u.bytes()), (2, 8)); // keyed items are not kept
        let mut b = written_batch(&mut r, &[(false, 3)]);
        u.keep(&mut b, 200, |_| true);
        let mut released = Vec::new();
        assert!(!u.confirm(99, &mut released));
        assert!(u.confirm(150, &mut released));
        assert_eq!(released.len(), 1);
        assert_eq!(released[0].len(), 2, "released full, emptied by the caller");
        assert_eq!(u.len(), 1);
        let mut rest = u.take_all();
        assert_eq!(rest.len(), 1);
        assert_eq!(r.resend(&mut rest[0]), 1);
        assert!(u.is_empty());
    }

    #[test]
    fn spare_batches_are_sized_like_the_last_one_and_the_pool_is_bounded() {
        let mut r = Ring::new(
            RingLimits {
                max_items: 100_000,
                max_bytes: 100 << 20,
                max_keys: 10,
            },
            Overflow::Reject,
        );
        let mut u = Unconfirmed::default();
        // Many batches await confirmation at once, as at high rates.
        for i in 0..200u64 {
            let mut b = written_batch(&mut r, &[(false, 1); 300]);
            u.keep(&mut b, (i + 1) * 1000, |_| true);
            // The batch handed back for the next round is pre-sized.
            assert!(b.capacity_bytes() >= 300 * std::mem::size_of::<crate::ring::Slot<Header>>());
        }
        let mut released = Vec::new();
        assert!(u.confirm(u64::MAX, &mut released));
        assert_eq!(released.len(), 200);
        released.iter_mut().for_each(Batch::clear);
        u.give_back(&mut released);
        assert!(released.is_empty());
        assert!(u.spare.len() <= SPARE_BATCHES);
        let held: usize = u.spare.iter().map(Batch::capacity_bytes).sum();
        assert_eq!(held, u.spare_bytes);
        assert!(held <= SPARE_BYTES, "{held}");
        // A huge round does not make every later batch huge.
        let mut big = written_batch(&mut r, &[(false, 1); 20_000]);
        u.keep(&mut big, u64::MAX - 1, |_| true);
        let fresh = Unconfirmed {
            size_hint: u.size_hint,
            ..Default::default()
        }
        .spare();
        assert!(
            fresh.capacity_bytes()
                <= HINT_ITEMS * std::mem::size_of::<crate::ring::Slot<Header>>() * 2
        );
    }

    #[test]
    fn keyed_only_batches_are_not_kept() {
        let mut r = ring();
        let mut u = Unconfirmed::default();
        let mut b = written_batch(&mut r, &[(true, 1)]);
        u.keep(&mut b, 10, |_| true);
        assert!(u.is_empty());
    }
}
