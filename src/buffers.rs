//! Large message buffers, handed back by the sender task to publishing
//! threads once their bytes are on the wire (and confirmed), so that a
//! stream of large events encodes into memory that is already mapped.
//!
//! # Why (measured)
//!
//! A message larger than 16 KiB is encoded on the publishing thread into a
//! buffer that then moves into the ring as the slot's shared tail (no
//! copy). Before this pool, each such message got a fresh buffer: 1 MB
//! reliable events (`PAYLOADS_ONLY=ours PAYLOADS_SIZES=1000000 cargo bench
//! --bench payloads`, under `perf`) spent ~20 % of the publishing thread in
//! page faults and most of the rest in a `memcpy` into those fresh pages,
//! and the sender unmapped them again when it dropped the batch.
//!
//! With 4 buffers kept, 1 MB events still spent ~30 % of the publishing
//! thread zeroing fresh pages (`clear_page_erms`): a confirmation releases
//! dozens of buffers at once, and the next dozens were new. With 64 kept,
//! that entry is gone from the profile.
//!
//! Only buffers nobody else holds come back (a keyed value's buffer also
//! kept for state restore does not), and the pool is bounded
//! ([`MAX_BUFFERS`], and [`MAX_BYTES`] or half the queue's byte bound if
//! that is less): memory stays bounded whatever the sizes published.

use std::sync::Mutex;

use bytes::Bytes;

/// Most buffers kept: about what one confirmation releases in a stream of
/// large reliable events (the sender holds them until the server confirms
/// them).
pub(crate) const MAX_BUFFERS: usize = 64;
/// Most bytes (capacity) kept in all, at most: 32 MiB (eight 4 MiB images,
/// thirty 1 MB point clouds), and never more than half the queue's byte
/// bound (`max_queued_bytes`, 64 MiB by default).
pub(crate) const MAX_BYTES: usize = 32 << 20;
/// Buffers smaller than this are not worth keeping (small messages are
/// encoded into the ring's chunks).
const MIN_BYTES: usize = 16 << 10;

/// The pool. Publishing threads take from it; the sender gives back.
#[derive(Debug)]
pub(crate) struct Buffers {
    /// Kept buffers (empty, capacity at least [`MIN_BYTES`]).
    kept: Mutex<Vec<Vec<u8>>>,
    /// Most bytes kept in all.
    max_bytes: usize,
}

impl Buffers {
    /// A pool for a queue of at most `queue_bytes` bytes.
    pub(crate) fn new(queue_bytes: usize) -> Self {
        Buffers {
            kept: Mutex::new(Vec::new()),
            max_bytes: MAX_BYTES.min(queue_bytes / 2),
        }
    }

    /// A buffer of at least `min_capacity` bytes, if one is kept.
    pub(crate) fn take(&self, min_capacity: usize) -> Option<Vec<u8>> {
        let mut kept = self.kept.lock().unwrap_or_else(|e| e.into_inner());
        let i = kept.iter().position(|b| b.capacity() >= min_capacity)?;
        Some(kept.swap_remove(i))
    }

    /// Takes back the buffer behind `tail` if nothing else shares it and it
    /// fits the bounds; otherwise just drops it.
    pub(crate) fn give(&self, tail: Bytes) {
        if tail.len() < MIN_BYTES {
            return;
        }
        let Ok(buf) = tail.try_into_mut() else {
            return;
        };
        let mut buf = Vec::from(buf);
        if buf.capacity() > self.max_bytes {
            return;
        }
        buf.clear();
        let mut kept = self.kept.lock().unwrap_or_else(|e| e.into_inner());
        let held: usize = kept.iter().map(Vec::capacity).sum();
        if kept.len() < MAX_BUFFERS && held + buf.capacity() <= self.max_bytes {
            kept.push(buf);
        }
    }

    /// Buffers kept now.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.kept.lock().unwrap().len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_buffer_comes_back_once_nobody_shares_it() {
        let pool = Buffers::new(64 << 20);
        let mut v = Vec::with_capacity(100 << 10);
        v.resize(80 << 10, 7);
        let ptr = v.as_ptr();
        let tail = Bytes::from(v);
        let shared = tail.clone();
        pool.give(tail);
        assert_eq!(pool.len(), 0, "still shared: not taken back");
        pool.give(shared);
        assert_eq!(pool.len(), 1);
        assert!(pool.take(200 << 10).is_none(), "too small for that");
        let back = pool.take(50 << 10).expect("kept");
        assert_eq!(back.as_ptr(), ptr, "the same memory, not a copy");
        assert!(back.is_empty());
    }

    #[test]
    fn the_pool_is_bounded_and_ignores_small_buffers() {
        let pool = Buffers::new(1 << 30);
        pool.give(Bytes::from(vec![0u8; 100]));
        assert_eq!(pool.len(), 0);
        for _ in 0..100 {
            pool.give(Bytes::from(vec![0u8; 64 << 10]));
        }
        assert_eq!(pool.len(), MAX_BUFFERS);
        for _ in 0..100 {
            pool.take(0);
        }
        for _ in 0..6 {
            pool.give(Bytes::from(vec![0u8; 6 << 20]));
        }
        assert_eq!(pool.len(), 5, "32 MiB hold five of 6 MiB");
        for _ in 0..10 {
            pool.take(0);
        }
        pool.give(Bytes::from(vec![0u8; MAX_BYTES + 1]));
        assert_eq!(pool.len(), 0, "larger than the whole bound");
        // A small queue bound makes a small pool.
        let small = Buffers::new(4 << 20);
        for _ in 0..4 {
            small.give(Bytes::from(vec![0u8; 1 << 20]));
        }
        assert_eq!(small.len(), 2, "half of 4 MiB");
    }
}
