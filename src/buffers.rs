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
//! Only buffers nobody else holds come back (a keyed value's buffer also
//! kept for state restore does not), and the pool is bounded
//! ([`MAX_BUFFERS`], [`MAX_BYTES`]): memory stays bounded whatever the
//! sizes published.

use std::sync::Mutex;

use bytes::Bytes;

/// Most buffers kept: enough for the messages of one round trip of a
/// stream of large events (the sender holds reliable ones until the server
/// confirms them), few enough that idle memory stays small.
pub(crate) const MAX_BUFFERS: usize = 4;
/// Most bytes (capacity) kept in all: 16 MiB, four 4 MiB images.
pub(crate) const MAX_BYTES: usize = 16 << 20;
/// Buffers smaller than this are not worth keeping (small messages are
/// encoded into the ring's chunks).
const MIN_BYTES: usize = 16 << 10;

/// The pool. Publishing threads take from it; the sender gives back.
#[derive(Debug, Default)]
pub(crate) struct Buffers {
    /// Kept buffers (empty, capacity at least [`MIN_BYTES`]).
    kept: Mutex<Vec<Vec<u8>>>,
}

impl Buffers {
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
        if buf.capacity() > MAX_BYTES {
            return;
        }
        buf.clear();
        let mut kept = self.kept.lock().unwrap_or_else(|e| e.into_inner());
        let held: usize = kept.iter().map(Vec::capacity).sum();
        if kept.len() < MAX_BUFFERS && held + buf.capacity() <= MAX_BYTES {
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
        let pool = Buffers::default();
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
        let pool = Buffers::default();
        pool.give(Bytes::from(vec![0u8; 100]));
        assert_eq!(pool.len(), 0);
        for _ in 0..10 {
            pool.give(Bytes::from(vec![0u8; 1 << 20]));
        }
        assert_eq!(pool.len(), MAX_BUFFERS);
        for _ in 0..10 {
            pool.take(0);
        }
        for _ in 0..3 {
            pool.give(Bytes::from(vec![0u8; 6 << 20]));
        }
        assert_eq!(pool.len(), 2, "16 MiB hold two of 6 MiB");
        pool.give(Bytes::from(vec![0u8; MAX_BYTES + 1]));
        assert_eq!(pool.len(), 2);
    }
}
