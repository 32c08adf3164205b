//! The ring's body storage: a line of fixed-size chunks, so that bodies are
//! handed from the ring to the sender by moving whole chunks, never by
//! copying or compacting the bytes in them.
//!
//! # Why chunks (measured)
//!
//! The ring first kept every body in one `Vec<u8>`. When pacing or the
//! confirmation budget let the sender take only part of the line
//! ([`super::Ring::take_up_to`]), it copied the taken bodies out and left a
//! dead prefix that the publishing thread then compacted (a second copy,
//! into a freshly allocated `Vec`). Streaming 1 kB reliable events
//! (`PAYLOADS_ONLY=ours cargo bench --bench payloads`), `perf` put ~20 % of
//! the publishing thread in that compaction and ~25 % in page faults of the
//! fresh buffers, with the publishing thread the bottleneck (85–90 % busy).
//!
//! Here a partial take moves the chunks that only the taken bodies use to
//! the batch (the boundary chunk stays, and the take ends before it when
//! that leaves something to take); emptied chunks are kept as spares and
//! reused, so the steady state allocates nothing and faults no pages. Bytes
//! move only when keyed values of changing sizes leave most of the stored
//! bytes dead (compaction, as before), when a take cannot end on a chunk
//! boundary, and on the rare paths that rebuild the line (requeue, resend,
//! restore).
//!
//! Chunks have consecutive ids (wrapping `u32`), so a body is found by its
//! chunk id, offset and length in O(1). Each chunk counts the queued bodies
//! it holds (`live`): a front chunk with none is released at once.

use std::collections::VecDeque;

/// Size of a chunk. A body is never split: one larger than the room left
/// opens a new chunk, and one larger than a chunk grows it. 64 KiB: large
/// enough that a chunk holds many small events (one lock-held push never
/// allocates), small enough that the boundary chunk a partial take leaves
/// behind is little memory.
pub(crate) const CHUNK: usize = if cfg!(test) { 64 } else { 64 << 10 };

/// A new body goes into a new chunk when less than this is free in the
/// last one, so that encoding a body rarely grows (reallocates and copies)
/// a chunk. Bodies larger than 16 KiB are normally encoded outside the ring
/// and shared, not copied (see `shared::LARGE_MESSAGE`).
const ROOM: usize = if cfg!(test) { 16 } else { 16 << 10 };

/// Emptied chunks kept for reuse, per arena: 128 × 64 KiB = 8 MiB, what a
/// full default pacing pipe of small events holds. Chunks grown past four
/// times [`CHUNK`] are freed instead.
const SPARE_CHUNKS: usize = if cfg!(test) { 4 } else { 128 };

#[derive(Debug, Default)]
struct Chunk {
    buf: Vec<u8>,
    /// Queued bodies stored here.
    live: u32,
}

/// Where a body lies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Place {
    pub(crate) chunk: u32,
    pub(crate) off: u32,
}

/// Chunked body storage. See the [module documentation](self).
#[derive(Debug, Default)]
pub(crate) struct Arena {
    chunks: VecDeque<Chunk>,
    /// Id of `chunks[0]`.
    front_id: u32,
    /// Bytes in every chunk but the last (the last grows as bodies are
    /// encoded into it).
    sealed: usize,
    spare: Vec<Vec<u8>>,
    /// An empty chunk list with the capacity of a previous one, for the
    /// next [`Arena::rebuilt`] (so rebuilding allocates nothing once warm).
    shell: VecDeque<Chunk>,
}

impl Arena {
    /// Bytes stored (live bodies and dead ones not yet released).
    pub(crate) fn len(&self) -> usize {
        self.sealed + self.chunks.back().map_or(0, |c| c.buf.len())
    }

    /// Memory held (chunk and spare capacity), in bytes.
    pub(crate) fn capacity_bytes(&self) -> usize {
        self.chunks.iter().map(|c| c.buf.capacity()).sum::<usize>()
            + self.spare.iter().map(Vec::capacity).sum::<usize>()
    }

    #[inline]
    fn index(&self, id: u32) -> usize {
        id.wrapping_sub(self.front_id) as usize
    }

    /// A body's bytes.
    #[inline]
    pub(crate) fn get(&self, at: Place, len: u32) -> &[u8] {
        let buf = &self.chunks[self.index(at.chunk)].buf;
        &buf[at.off as usize..at.off as usize + len as usize]
    }

    /// The id of the last chunk.
    #[inline]
    pub(crate) fn back_id(&self) -> u32 {
        debug_assert!(!self.chunks.is_empty());
        self.front_id
            .wrapping_add(self.chunks.len() as u32)
            .wrapping_sub(1)
    }

    /// The last chunk, to encode a body at its end, opening a new one when
    /// there is little room left (the body then starts at its offset 0).
    pub(crate) fn open(&mut self) -> &mut Vec<u8> {
        let full = match self.chunks.back() {
            Some(c) => c.buf.capacity() - c.buf.len() < ROOM && !c.buf.is_empty(),
            None => true,
        };
        if full {
            self.push_chunk();
        }
        &mut self.chunks.back_mut().expect("opened").buf
    }

    fn push_chunk(&mut self) {
        self.sealed += self.chunks.back().map_or(0, |c| c.buf.len());
        let buf = self
            .spare
            .pop()
            .unwrap_or_else(|| Vec::with_capacity(CHUNK));
        self.chunks.push_back(Chunk { buf, live: 0 });
    }

    /// The last chunk's bytes so far (0 when there is none).
    pub(crate) fn back_len(&self) -> usize {
        self.chunks.back().map_or(0, |c| c.buf.len())
    }

    /// Drops the last chunk's bytes from `start` (a body that will not be
    /// queued). A chunk grown by a huge refused body gives the memory back.
    pub(crate) fn truncate_back(&mut self, start: usize) {
        if let Some(c) = self.chunks.back_mut() {
            c.buf.truncate(start);
            if c.buf.capacity() > 4 * CHUNK {
                c.buf.shrink_to(c.buf.len().max(CHUNK));
            }
        }
    }

    /// Counts one more queued body in the last chunk (where a body was just
    /// encoded) and returns where it starts (`start`): the push's one
    /// lookup of the last chunk.
    #[inline]
    pub(crate) fn place_in_back(&mut self, start: usize) -> Place {
        let chunk = self.back_id();
        let back = self.chunks.back_mut().expect("opened");
        back.live += 1;
        Place {
            chunk,
            off: start as u32,
        }
    }

    /// Counts one more queued body in chunk `id`.
    #[inline]
    pub(crate) fn add_live(&mut self, id: u32) {
        let i = self.index(id);
        self.chunks[i].live += 1;
    }

    /// Counts one queued body less in chunk `id` (see
    /// [`Arena::release_front`]).
    #[inline]
    pub(crate) fn sub_live(&mut self, id: u32) {
        let i = self.index(id);
        self.chunks[i].live -= 1;
    }

    /// Releases the front chunks left with no live body, as spares (never
    /// the last chunk: a body may be being encoded into it).
    pub(crate) fn release_front(&mut self) {
        while self.chunks.len() > 1 && self.chunks[0].live == 0 {
            let c = self.chunks.pop_front().expect("checked");
            self.sealed -= c.buf.len();
            self.front_id = self.front_id.wrapping_add(1);
            self.keep_spare(c.buf);
        }
    }

    fn keep_spare(&mut self, mut buf: Vec<u8>) {
        if self.spare.len() < SPARE_CHUNKS && (CHUNK..=4 * CHUNK).contains(&buf.capacity()) {
            buf.clear();
            self.spare.push(buf);
        }
    }

    /// Copies `body` in (opening a chunk as needed) and counts it as live.
    pub(crate) fn append(&mut self, body: &[u8]) -> Place {
        let buf = self.open();
        let off = buf.len() as u32;
        buf.extend_from_slice(body);
        let chunk = self.back_id();
        self.add_live(chunk);
        Place { chunk, off }
    }

    /// Overwrites a body of the same length at `at` with the `len` bytes at
    /// `start` of the last chunk, then drops those bytes from the last
    /// chunk (an in-place replacement of a fixed-size value).
    pub(crate) fn overwrite_from_back(&mut self, at: Place, start: usize, len: usize) {
        let i = self.index(at.chunk);
        let last = self.chunks.len() - 1;
        let off = at.off as usize;
        if i == last {
            let buf = &mut self.chunks[last].buf;
            buf.copy_within(start..start + len, off);
        } else {
            let (front, back) = self.chunks.as_mut_slices();
            // Two distinct chunks: borrow both through the deque's slices.
            let (dst, src) = two_mut(front, back, i, last);
            dst.buf[off..off + len].copy_from_slice(&src.buf[start..start + len]);
        }
        self.chunks[last].buf.truncate(start);
    }

    /// Moves the front chunks with no live body (never the last chunk) to
    /// the end of `to`, keeping their ids: `to` must hold no chunk, or end
    /// just before them. Returns how many moved.
    pub(crate) fn move_dead_front(&mut self, to: &mut Arena) -> usize {
        let mut moved = 0;
        while self.chunks.len() > 1 && self.chunks[0].live == 0 {
            let c = self.chunks.pop_front().expect("checked");
            self.sealed -= c.buf.len();
            if to.chunks.is_empty() {
                to.front_id = self.front_id;
            }
            debug_assert_eq!(
                to.front_id.wrapping_add(to.chunks.len() as u32),
                self.front_id
            );
            to.sealed += to.chunks.back().map_or(0, |c| c.buf.len());
            to.chunks.push_back(c);
            self.front_id = self.front_id.wrapping_add(1);
            moved += 1;
        }
        moved
    }

    /// The id of the first chunk.
    pub(crate) fn front_id(&self) -> u32 {
        self.front_id
    }

    /// Moves one spare of `from` here if this arena has none (so that a
    /// copy into it reuses memory).
    pub(crate) fn take_spare(&mut self, from: &mut Arena) {
        if self.spare.is_empty() {
            if let Some(b) = from.spare.pop() {
                self.spare.push(b);
            }
        }
    }

    /// True if [`Arena::open`] would allocate a chunk (no spare left).
    pub(crate) fn would_allocate(&self) -> bool {
        let full = match self.chunks.back() {
            Some(c) => c.buf.capacity() - c.buf.len() < ROOM && !c.buf.is_empty(),
            None => true,
        };
        full && self.spare.is_empty()
    }

    /// Makes `n` spare chunks (at most as many as an arena keeps) and room
    /// for `n` chunks in its lists, so that filling it allocates nothing.
    pub(crate) fn prefill(&mut self, n: usize) {
        let n = n.min(SPARE_CHUNKS);
        self.chunks.reserve(n);
        self.shell.reserve(n);
        self.spare.reserve(SPARE_CHUNKS);
        while self.spare.len() < n {
            self.spare.push(Vec::with_capacity(CHUNK));
        }
    }

    /// A new, empty arena made of this one's storage: its spare chunks,
    /// its spare list and its chunk list shell. Fill it, then call
    /// [`Arena::retire_into`] on this one. Together they rebuild an arena
    /// (compaction) without allocating once capacities have grown.
    pub(crate) fn rebuilt(&mut self) -> Arena {
        Arena {
            chunks: std::mem::take(&mut self.shell),
            front_id: 0,
            sealed: 0,
            spare: std::mem::take(&mut self.spare),
            shell: VecDeque::new(),
        }
    }

    /// Hands this (old) arena's chunks to `new` as spares, and its emptied
    /// chunk list as `new`'s shell; this arena is left empty.
    pub(crate) fn retire_into(&mut self, new: &mut Arena) {
        while let Some(c) = self.chunks.pop_front() {
            new.keep_spare(c.buf);
        }
        self.sealed = 0;
        new.shell = std::mem::take(&mut self.chunks);
        new.take_spares(self);
    }

    /// Moves spare buffers of `from` here (as many as are kept).
    pub(crate) fn take_spare_bufs(&mut self, from: &mut Vec<Vec<u8>>) {
        while self.spare.len() < SPARE_CHUNKS {
            match from.pop() {
                Some(b) => self.spare.push(b),
                None => break,
            }
        }
    }

    /// Moves this arena's spares to `into` (up to as many as are kept).
    pub(crate) fn give_spare_bufs(&mut self, into: &mut Vec<Vec<u8>>) {
        while into.len() < SPARE_CHUNKS {
            match self.spare.pop() {
                Some(b) => into.push(b),
                None => break,
            }
        }
    }

    /// Moves the spares of `from` here (as many as are kept).
    pub(crate) fn take_spares(&mut self, from: &mut Arena) {
        while self.spare.len() < SPARE_CHUNKS {
            match from.spare.pop() {
                Some(b) => self.spare.push(b),
                None => break,
            }
        }
    }

    /// For a line with nothing queued (no body referenced): every chunk
    /// but the last becomes a spare, and the last is emptied in place
    /// (warm in cache for the next body). Moving it to the spares and
    /// taking another instead cost `publish` throughput: the throughput
    /// bench's interleaved rounds, that build and the one before either,
    /// run alternately, gave median ratios to the baseline of 3.6× vs 4.4×
    /// over 6 runs each; emptied in place, 4.5× vs 4.2× over 4 runs each.
    pub(crate) fn reset(&mut self) {
        self.release_front();
        debug_assert!(self.chunks.iter().all(|c| c.live == 0));
        if self.chunks.len() == 1 {
            self.truncate_back(0);
        }
    }

    /// True when it holds no chunk (spares aside).
    pub(crate) fn has_no_chunks(&self) -> bool {
        self.chunks.is_empty()
    }

    /// Empties the arena, keeping its chunks as spares.
    pub(crate) fn clear(&mut self) {
        while let Some(c) = self.chunks.pop_front() {
            self.keep_spare(c.buf);
        }
        self.sealed = 0;
    }
}

/// Mutable references to elements `i` and `j` (`i != j`) of a deque split
/// into its two slices.
fn two_mut<'a, T>(
    front: &'a mut [T],
    back: &'a mut [T],
    i: usize,
    j: usize,
) -> (&'a mut T, &'a mut T) {
    debug_assert!(i < j);
    let n = front.len();
    if j < n {
        let (a, b) = front.split_at_mut(j);
        (&mut a[i], &mut b[0])
    } else if i >= n {
        let (a, b) = back.split_at_mut(j - n);
        (&mut a[i - n], &mut b[0])
    } else {
        (&mut front[i], &mut back[j - n])
    }
}
