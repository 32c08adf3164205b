//! The write path: the one place where bytes enter a connection's stream.
//!
//! Two parties write frames: the sender task (batches, pongs, probes, the
//! close frame) and, while events are sparse and the sender is parked, a
//! publishing thread (one event at a time, see `Shared::try_direct`). Both
//! go through the connection's one [`Wire`]: it owns the write half and
//! every byte committed to the stream but not yet written ([`Pending`]).
//! Frames are only ever appended whole, behind everything committed before
//! them, and bytes only ever leave from the front. So the rule *the bytes of
//! a frame that went out in part are followed by the rest of that frame
//! before any other byte* holds by construction, whoever appends and
//! whenever: nobody can put a byte on the socket except by writing the
//! front of the pending bytes, and nobody can put a frame anywhere but at
//! their end.
//!
//! # Ownership
//!
//! A wire has one owner at a time, and handing it over is a move under the
//! outbox lock ([`Slot`]):
//!
//! * the **sender task** holds it while it works (from the round it takes
//!   it back to the round it finds nothing to do), and writes with `.await`
//!   without any lock;
//! * while the sender is **parked** (idle), the wire sits in the outbox, and
//!   a publishing thread that holds the outbox lock may *borrow* it for one
//!   non-blocking write. What that write leaves unwritten stays at the front
//!   of the pending bytes, and the sender, woken, takes the wire back with
//!   it and writes it before anything of its own.
//!
//! An earlier design let the direct path keep the rest of a partial write
//! in a side buffer that the sender copied into its own buffer at the start
//! of a round, while a flag said who may write: a sender woken by its probe
//! timer appended a ping to its buffer before it cleared the flag, a direct
//! write went out in part meanwhile, and the ping landed in the middle of
//! that frame (1 run in 3 of 1 MB events at 300/s lost the connection).
//! With one buffer and one owner there is no window to get wrong.
//!
//! # Large messages: written from where they lie
//!
//! A large message's tail (see `Header::tail_mask`) arrives masked already,
//! in a buffer of its own. Its frame's first bytes (header, prefix, body)
//! are appended to the pending buffer as usual, masked so that the tail's
//! masking lines up (`codec::aligned_mask`), and the tail itself is kept as
//! a shared [`Bytes`] at that point of the stream: writes gather the
//! pending buffer and the tails in stream order (`writev`), so the sender
//! never copies a large payload. Before, the sender's masked copy of each
//! megabyte into its buffer took ~30 % of its time (`perf`, 1 MB events),
//! and the sender was the bottleneck. The rule above is unchanged: a tail
//! is a piece of the stream like any other, and bytes leave only from the
//! front.
//!
//! [`Pending`] and [`Slot`] know nothing of tokio or sockets (the model
//! checking tests in `wire/model.rs` and, for real-time publishers,
//! `wire/model_realtime.rs` drive them with loom threads);
//! [`Wire`] adds the socket.

use std::collections::VecDeque;
use std::io::{self, IoSlice};
use std::sync::Arc;

use bytes::{Buf, Bytes};

use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use crate::codec::{self, Header, MaskRng, Opcode};
use crate::connection::WriteHalf;

/// Most pieces one write gathers: the pending buffer between large tails,
/// and the tails.
pub(crate) const MAX_SLICES: usize = 64;

/// Where [`Pending::unappend`] may take the stream back to.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Mark {
    /// Stream offset of the first byte appended after the mark.
    offset: u64,
    buf: usize,
    tails: usize,
}

/// Bytes committed to a connection's stream and not yet written, in stream
/// order, with the offsets that confirmation and pacing use.
#[derive(Debug)]
pub(crate) struct Pending {
    buf: Vec<u8>,
    /// Bytes at the front of `buf` already written.
    head: usize,
    /// Large tails, in stream order, each with the position in `buf` it
    /// follows (the stream is `buf[..p0]`, tail 0, `buf[p0..p1]`, tail 1,
    /// ..., the rest of `buf`). The front tail is advanced as it is
    /// written.
    tails: VecDeque<(usize, Bytes)>,
    /// Unwritten bytes in `tails`.
    tail_bytes: usize,
    /// Bytes written on this connection: the stream offset of `buf[head]`.
    written: u64,
    /// Write calls that wrote something.
    writes: u64,
    rng: MaskRng,
    /// A close frame was appended: nothing may follow it.
    closed: bool,
}

impl Pending {
    /// Empty, with masks from `rng`.
    pub(crate) fn new(rng: MaskRng) -> Self {
        Pending {
            buf: Vec::new(),
            head: 0,
            tails: VecDeque::new(),
            tail_bytes: 0,
            written: 0,
            writes: 0,
            rng,
            closed: false,
        }
    }

    /// Stream offset just past everything committed (written or not): the
    /// offset a probe appended now follows.
    pub(crate) fn committed(&self) -> u64 {
        self.written + self.unwritten() as u64
    }

    /// Bytes written to the socket on this connection.
    pub(crate) fn written(&self) -> u64 {
        self.written
    }

    /// Write calls that wrote something on this connection.
    pub(crate) fn writes(&self) -> u64 {
        self.writes
    }

    /// Bytes committed and not yet written.
    pub(crate) fn unwritten(&self) -> usize {
        self.buf.len() - self.head + self.tail_bytes
    }

    /// True when everything committed has been written.
    pub(crate) fn is_empty(&self) -> bool {
        self.head == self.buf.len() && self.tails.is_empty()
    }

    /// Where the next frame will start: pass it to [`Pending::unappend`]
    /// to take back frames none of whose bytes were written.
    pub(crate) fn mark(&self) -> Mark {
        Mark {
            offset: self.committed(),
            buf: self.buf.len(),
            tails: self.tails.len(),
        }
    }

    /// Takes back everything appended since `mark`, if none of it was
    /// written; returns false (and changes nothing) otherwise.
    pub(crate) fn unappend(&mut self, mark: Mark) -> bool {
        if self.written > mark.offset || mark.offset > self.committed() {
            return false;
        }
        self.buf.truncate(mark.buf);
        for (_, t) in self.tails.drain(mark.tails..) {
            self.tail_bytes -= t.len();
        }
        true
    }

    /// Appends one message as a masked binary frame. Returns false (and
    /// appends nothing) after a close frame. A tail stored masked
    /// ([`Header::tail_mask`]) is not copied: it follows in the stream as
    /// it is (see the [module documentation](self)).
    #[inline]
    pub(crate) fn data_frame(&mut self, header: Header, body: &[u8], tail: &Bytes) -> bool {
        if self.closed {
            return false;
        }
        if header.tail_mask == [0; 4] || tail.is_empty() {
            let mask = self.rng.next_mask();
            codec::write_frame(&mut self.buf, header, body, tail, mask);
            return true;
        }
        let at = codec::message_len(header, body.len(), tail.len()) - tail.len();
        let mask = codec::aligned_mask(header.tail_mask, at);
        codec::write_frame_head(&mut self.buf, header, body, tail.len(), mask);
        self.tails.push_back((self.buf.len(), tail.clone()));
        self.tail_bytes += tail.len();
        true
    }

    /// Appends a masked control frame (ping or pong; at most 125 bytes of
    /// payload). Returns false after a close frame.
    pub(crate) fn control(&mut self, opcode: Opcode, payload: &[u8]) -> bool {
        debug_assert!(opcode != Opcode::Close, "use close()");
        if self.closed {
            return false;
        }
        let mask = self.rng.next_mask();
        codec::write_control(&mut self.buf, opcode, payload, mask);
        true
    }

    /// Appends a probe: a ping whose payload says when it was sent and the
    /// stream offset just past it (see `pacing`). Returns that offset, or
    /// `None` after a close frame.
    pub(crate) fn probe(&mut self, sent_ns: u64) -> Option<u64> {
        let end = self.committed() + crate::pacing::PROBE_FRAME_LEN;
        if !self.control(Opcode::Ping, &crate::pacing::probe_payload(sent_ns, end)) {
            return None;
        }
        debug_assert_eq!(self.committed(), end);
        Some(end)
    }

    /// Appends a close frame; nothing can be appended after it. Returns
    /// false if one was appended already.
    pub(crate) fn close(&mut self, code: u16, reason: &str) -> bool {
        if self.closed {
            return false;
        }
        let mask = self.rng.next_mask();
        codec::write_close(&mut self.buf, code, reason, mask);
        self.closed = true;
        true
    }

    /// Appends a whole message built by `write` (e.g. INIT from a
    /// [`Payload`](crate::codec::Payload)) with the next mask.
    pub(crate) fn frame_with(&mut self, write: impl FnOnce(&mut Vec<u8>, [u8; 4])) -> bool {
        if self.closed {
            return false;
        }
        let mask = self.rng.next_mask();
        write(&mut self.buf, mask);
        true
    }

    /// The bytes to write next: the first contiguous piece of the stream.
    pub(crate) fn front(&self) -> &[u8] {
        match self.tails.front() {
            Some((at, _)) if self.head < *at => &self.buf[self.head..*at],
            Some((_, t)) => t,
            None => &self.buf[self.head..],
        }
    }

    /// The unwritten stream as pieces, in order, into `out`; returns how
    /// many (at most `out.len()`, and no empty ones).
    pub(crate) fn slices<'a>(&'a self, out: &mut [IoSlice<'a>]) -> usize {
        let mut n = 0;
        let mut from = self.head;
        for (at, t) in &self.tails {
            for piece in [&self.buf[from..*at], &t[..]] {
                if n == out.len() {
                    return n;
                }
                if !piece.is_empty() {
                    out[n] = IoSlice::new(piece);
                    n += 1;
                }
            }
            from = *at;
        }
        if n < out.len() && from < self.buf.len() {
            out[n] = IoSlice::new(&self.buf[from..]);
            n += 1;
        }
        n
    }

    /// Records that the first `n` unwritten bytes were written.
    pub(crate) fn advance(&mut self, n: usize) {
        debug_assert!(n <= self.unwritten());
        let mut n = n.min(self.unwritten());
        if n == 0 {
            return;
        }
        self.written += n as u64;
        self.writes += 1;
        while n > 0 {
            match self.tails.front_mut() {
                Some((at, t)) if self.head == *at => {
                    let k = n.min(t.len());
                    t.advance(k);
                    self.tail_bytes -= k;
                    n -= k;
                    if t.is_empty() {
                        self.tails.pop_front();
                    }
                }
                Some((at, _)) => {
                    let k = n.min(*at - self.head);
                    self.head += k;
                    n -= k;
                }
                None => {
                    self.head += n;
                    n = 0;
                }
            }
        }
        if self.is_empty() {
            // Everything out: start again at the front of the buffer.
            self.buf.clear();
            self.head = 0;
        }
    }

    /// One write of the front through `write` (which returns how many bytes
    /// it took); the bytes taken are marked written.
    pub(crate) fn write_with(
        &mut self,
        write: impl FnOnce(&[u8]) -> io::Result<usize>,
    ) -> io::Result<usize> {
        if self.is_empty() {
            return Ok(0);
        }
        let n = write(self.front())?;
        self.advance(n);
        Ok(n)
    }

    /// One gathering write of the unwritten stream (up to [`MAX_SLICES`]
    /// pieces) through `write`; the bytes taken are marked written.
    pub(crate) fn write_vectored_with(
        &mut self,
        write: impl FnOnce(&[IoSlice<'_>]) -> io::Result<usize>,
    ) -> io::Result<usize> {
        if self.is_empty() {
            return Ok(0);
        }
        let n = {
            let mut slices = [IoSlice::new(&[]); MAX_SLICES];
            let k = self.slices(&mut slices);
            write(&slices[..k])?
        };
        self.advance(n);
        Ok(n)
    }
}

/// Who holds a connection's wire now (the state under the outbox lock).
#[derive(Debug, Default)]
pub(crate) enum Slot<W> {
    /// No connection (or it is ending): nobody may write.
    #[default]
    Gone,
    /// The sender task holds the wire.
    WithSender,
    /// The sender is parked and left the wire here: a publisher holding the
    /// lock may borrow it.
    Parked(W),
}

impl<W> Slot<W> {
    /// The parked wire, for a publisher's one non-blocking write (under the
    /// lock). `None` while the sender holds it.
    pub(crate) fn borrow(&mut self) -> Option<&mut W> {
        match self {
            Slot::Parked(w) => Some(w),
            _ => None,
        }
    }

    /// The sender takes the wire back. `None` if there is no connection any
    /// more (the sender must stop).
    pub(crate) fn take_back(&mut self) -> Option<W> {
        match std::mem::replace(self, Slot::WithSender) {
            Slot::Parked(w) => Some(w),
            Slot::Gone => {
                *self = Slot::Gone;
                None
            }
            Slot::WithSender => panic!("the sender took back a wire it holds"),
        }
    }

    /// The sender parks: it leaves the wire here until it takes it back.
    pub(crate) fn park(&mut self, wire: W) {
        match self {
            Slot::WithSender => *self = Slot::Parked(wire),
            // The connection ended meanwhile: the wire goes with it.
            Slot::Gone => drop(wire),
            Slot::Parked(_) => panic!("two wires for one connection"),
        }
    }
}

/// A connection's write half with its pending bytes.
pub(crate) struct Wire {
    pub pending: Pending,
    sink: WriteHalf,
    /// The plain TCP stream, for non-blocking writes by publishers (none
    /// over TLS, whose writer is not shared).
    direct: Option<Arc<TcpStream>>,
}

impl std::fmt::Debug for Wire {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Wire")
            .field("pending", &self.pending)
            .field("direct", &self.direct.is_some())
            .finish()
    }
}

impl Wire {
    pub(crate) fn new(sink: WriteHalf, direct: Option<Arc<TcpStream>>) -> Self {
        Wire {
            pending: Pending::new(MaskRng::from_os()),
            sink,
            direct,
        }
    }

    /// True if publishers may write through it without blocking (plain TCP).
    pub(crate) fn has_direct(&self) -> bool {
        self.direct.is_some()
    }

    /// One non-blocking write of the pending bytes (the direct path).
    /// `WouldBlock` when the socket has no room; `Unsupported` over TLS.
    pub(crate) fn try_write(&mut self) -> io::Result<usize> {
        let Some(tcp) = &self.direct else {
            return Err(io::ErrorKind::Unsupported.into());
        };
        if self.pending.tails.is_empty() {
            self.pending.write_with(|b| tcp.try_write(b))
        } else {
            self.pending
                .write_vectored_with(|s| tcp.try_write_vectored(s))
        }
    }

    /// Writes some of the pending bytes, waiting for the socket. Cancel
    /// safe: when the future is dropped, the bytes it wrote (if any) are
    /// accounted for, and nothing else was written.
    pub(crate) async fn write_some(&mut self) -> io::Result<usize> {
        if self.pending.is_empty() {
            return Ok(0);
        }
        let n = if self.pending.tails.is_empty() {
            self.sink.write(self.pending.front()).await?
        } else {
            let mut slices = [IoSlice::new(&[]); MAX_SLICES];
            let k = self.pending.slices(&mut slices);
            self.sink.write_vectored(&slices[..k]).await?
        };
        if n == 0 {
            return Err(io::ErrorKind::WriteZero.into());
        }
        self.pending.advance(n);
        Ok(n)
    }

    /// Pushes what the write half buffers itself (TLS records); a no-op on
    /// plain TCP.
    pub(crate) async fn flush(&mut self) -> io::Result<()> {
        self.sink.flush().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::unframe;

    fn header() -> Header {
        Header {
            ts_ms: 1_700_000_000_000,
            entries: 1,
            own_ts: false,
            tail_mask: [0; 4],
        }
    }

    /// Splits a byte stream into frames, checking each one's form.
    fn frames(mut s: &[u8]) -> Vec<(u8, Vec<u8>)> {
        let mut out = Vec::new();
        while !s.is_empty() {
            let len7 = (s[1] & 0x7f) as usize;
            let (len, off) = match len7 {
                126 => (u16::from_be_bytes([s[2], s[3]]) as usize, 4),
                127 => (
                    u64::from_be_bytes(s[2..10].try_into().unwrap()) as usize,
                    10,
                ),
                n => (n, 2),
            };
            let end = off + 4 + len;
            out.push(unframe(&s[..end]));
            s = &s[end..];
        }
        out
    }

    #[test]
    fn a_partial_write_is_finished_before_anything_appended_after_it() {
        let mut p = Pending::new(MaskRng::from_os());
        let mut stream = Vec::new();
        let body = Bytes::from(vec![0xc0; 1000]);
        assert!(p.data_frame(header(), &[0xa1, b'v'], &body));
        // 100 bytes go out; then a ping is appended (the sender's probe).
        p.write_with(|b| {
            stream.extend_from_slice(&b[..100]);
            Ok(100)
        })
        .unwrap();
        assert!(p.control(Opcode::Ping, b"probe"));
        while !p.is_empty() {
            p.write_with(|b| {
                let n = b.len().min(333);
                stream.extend_from_slice(&b[..n]);
                Ok(n)
            })
            .unwrap();
        }
        let f = frames(&stream);
        assert_eq!(f.len(), 2);
        assert_eq!(f[0].0, 2);
        assert_eq!(f[1], (9, b"probe".to_vec()));
        assert_eq!(p.written(), stream.len() as u64);
        assert_eq!(p.committed(), p.written());
    }

    #[test]
    fn unappend_takes_back_only_what_was_not_written() {
        let mut p = Pending::new(MaskRng::from_os());
        let m = p.mark();
        let tail = Bytes::from_static(&[0xc0]);
        p.data_frame(header(), &[0xa1, b'v'], &tail);
        let committed = p.committed();
        assert!(committed > 0);
        assert!(p.unappend(m));
        assert_eq!(p.committed(), 0);
        p.data_frame(header(), &[0xa1, b'v'], &tail);
        p.write_with(|_| Ok(3)).unwrap();
        assert!(!p.unappend(m), "3 bytes of it are on the wire");
        assert_eq!(p.committed(), committed);
    }

    #[test]
    fn nothing_follows_a_close_frame() {
        let mut p = Pending::new(MaskRng::from_os());
        assert!(p.close(1000, ""));
        let n = p.committed();
        assert!(!p.data_frame(header(), &[], &Bytes::new()));
        assert!(!p.control(Opcode::Pong, b""));
        assert!(!p.close(1000, ""));
        assert_eq!(p.committed(), n);
    }

    /// A message as the ring stores it: `tail` stored masked when `masked`.
    fn stored(h: Header, tail: &[u8], masked: bool, key: [u8; 4]) -> (Header, Bytes) {
        let mut t = tail.to_vec();
        let mut h = h;
        if masked {
            h.tail_mask = key;
            codec::mask_tail(&mut t, 0, key);
        }
        (h, Bytes::from(t))
    }

    /// One gathering write that takes at most `n` bytes into `stream`.
    fn write_at_most(p: &mut Pending, stream: &mut Vec<u8>, n: usize) {
        p.write_vectored_with(|s| {
            let mut k = 0;
            for piece in s {
                let take = piece.len().min(n - k);
                stream.extend_from_slice(&piece[..take]);
                k += take;
            }
            Ok(k)
        })
        .unwrap();
    }

    proptest::proptest! {
        /// Frames with tails stored masked (written from where they lie) and
        /// plain ones, pings between them, some taken back unwritten, all
        /// written by gathering writes that end anywhere: the stream is the
        /// frames, whole and in order, each payload the message.
        #[test]
        fn gathered_writes_carry_every_frame_whole(
            msgs in proptest::collection::vec(
                (0u32..3, 0usize..9, 0usize..300, proptest::bool::ANY, 1u32..u32::MAX,
                 proptest::bool::ANY),
                1..12),
            writes in proptest::collection::vec(1usize..200, 1..40),
            undo in proptest::option::of(0usize..12),
        ) {
            let mut p = Pending::new(MaskRng::from_os());
            let mut stream = Vec::new();
            let mut want = Vec::new();
            let mut w = writes.iter().cycle();
            for (i, &(entries, body_len, tail_len, masked, key, ping)) in msgs.iter().enumerate() {
                let h = Header {
                    ts_ms: 1_700_000_000_000 + i as u64,
                    entries: if entries == 0 { codec::WHOLE } else { entries },
                    own_ts: false,
                    tail_mask: [0; 4],
                };
                let body: Vec<u8> = (0..body_len).map(|j| (j * 31 + i) as u8).collect();
                let tail: Vec<u8> = (0..tail_len).map(|j| (j * 7 + i) as u8).collect();
                let (h, t) = stored(h, &tail, masked, key.to_ne_bytes());
                let mark = p.mark();
                proptest::prop_assert!(p.data_frame(h, &body, &t));
                if undo == Some(i) && p.unappend(mark) {
                    continue;
                }
                let mut msg = Vec::new();
                codec::write_message(&mut msg, Header { tail_mask: [0; 4], ..h }, &body, &tail);
                want.push((2u8, msg));
                if ping {
                    p.control(Opcode::Ping, b"probe");
                    want.push((9, b"probe".to_vec()));
                }
                // Some of it goes out now, in a write of any size.
                let n = *w.next().unwrap();
                write_at_most(&mut p, &mut stream, n);
            }
            while !p.is_empty() {
                let n = *w.next().unwrap();
                write_at_most(&mut p, &mut stream, n);
            }
            proptest::prop_assert_eq!(p.written(), stream.len() as u64);
            proptest::prop_assert_eq!(p.committed(), p.written());
            proptest::prop_assert_eq!(frames(&stream), want);
        }
    }

    #[test]
    fn a_stored_masked_tail_is_written_from_its_own_buffer() {
        let mut p = Pending::new(MaskRng::from_os());
        let (h, t) = stored(header(), &[7u8; 5000], true, [1, 2, 3, 4]);
        p.data_frame(h, &[0xa1, b'v'], &t);
        let mut slices = [IoSlice::new(&[]); MAX_SLICES];
        assert_eq!(p.slices(&mut slices), 2, "the frame's head, then the tail");
        assert_eq!(slices[1].as_ptr(), t.as_ptr(), "not a copy");
        assert_eq!(p.unwritten(), p.buf.len() + 5000);
    }

    #[test]
    fn the_slot_hands_the_wire_over() {
        let mut s: Slot<u8> = Slot::WithSender;
        assert!(s.borrow().is_none());
        s.park(7);
        assert_eq!(s.borrow(), Some(&mut 7));
        assert_eq!(s.take_back(), Some(7));
        assert!(matches!(s, Slot::WithSender));
        let mut gone: Slot<u8> = Slot::Gone;
        assert_eq!(gone.take_back(), None);
        gone.park(1);
        assert!(matches!(gone, Slot::Gone));
    }
}

#[cfg(test)]
mod model;
#[cfg(test)]
mod model_realtime;
