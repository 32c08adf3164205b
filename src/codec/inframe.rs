//! Reading websocket frames: a parser over a buffer (no I/O), used by the
//! client's decoder for the server's frames and by the embedded server for
//! the client's.
//!
//! Written by hand because fastwebsockets' `read_frame` reserves a frame's
//! declared length before any of its payload has arrived: a header
//! declaring 250 MiB followed by 1 000 bytes cost 262 MB of resident memory
//! (under a 256 MiB limit). Here the buffer grows with the bytes that
//! actually arrive ([`FrameReader::reserve_for_read`] asks for at most
//! [`READ_CHUNK`] more at a time), so memory follows what the peer sent,
//! not what it claimed. Every length is checked before any arithmetic on
//! it, and every rule RFC 6455 sets on a frame's form is checked here, in
//! one place: reserved bits, known opcodes, unfragmented control frames of
//! at most 125 bytes, the mask (required from clients, forbidden from
//! servers), the 64-bit length's top bit, and the size limit.

use bytes::{Buf, BytesMut};

/// Most bytes the reader asks to grow by for one read.
pub const READ_CHUNK: usize = 64 << 10;

/// Websocket opcodes (RFC 6455 §5.2).
pub mod op {
    pub const CONTINUATION: u8 = 0x0;
    pub const TEXT: u8 = 0x1;
    pub const BINARY: u8 = 0x2;
    pub const CLOSE: u8 = 0x8;
    pub const PING: u8 = 0x9;
    pub const PONG: u8 = 0xa;
}

/// Who sends the frames being read: clients must mask them, servers must
/// not (RFC 6455 §5.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sender {
    Client,
    Server,
}

/// A frame whose form breaks RFC 6455, or one over the size limit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FrameError {
    /// A rule of the frame's form (close with 1002).
    Protocol(&'static str),
    /// The frame's payload is over the limit (close with 1009).
    TooBig { len: u64, limit: usize },
}

/// A frame's header, parsed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Head {
    pub fin: bool,
    pub opcode: u8,
    pub mask: Option<[u8; 4]>,
    /// Payload length, as declared.
    pub len: u64,
    /// Bytes of the header.
    pub head_len: usize,
}

/// Parses the header at the front of `b`: `Ok(None)` when more bytes are
/// needed. Checks everything the header alone can tell.
pub fn parse_head(b: &[u8], from: Sender, limit: usize) -> Result<Option<Head>, FrameError> {
    if b.len() < 2 {
        return Ok(None);
    }
    let fin = b[0] & 0x80 != 0;
    if b[0] & 0x70 != 0 {
        return Err(FrameError::Protocol(
            "reserved bits set (no extension was negotiated)",
        ));
    }
    let opcode = b[0] & 0x0f;
    let control = match opcode {
        op::CONTINUATION | op::TEXT | op::BINARY => false,
        op::CLOSE | op::PING | op::PONG => true,
        _ => return Err(FrameError::Protocol("unknown opcode")),
    };
    let masked = b[1] & 0x80 != 0;
    match (from, masked) {
        (Sender::Server, true) => return Err(FrameError::Protocol("masked frame from the server")),
        (Sender::Client, false) => {
            return Err(FrameError::Protocol("unmasked frame from the client"))
        }
        _ => {}
    }
    let (len, mut head_len) = match b[1] & 0x7f {
        126 => {
            if b.len() < 4 {
                return Ok(None);
            }
            (u64::from(u16::from_be_bytes([b[2], b[3]])), 4)
        }
        127 => {
            if b.len() < 10 {
                return Ok(None);
            }
            let len = u64::from_be_bytes(b[2..10].try_into().expect("8 bytes"));
            if len >> 63 != 0 {
                return Err(FrameError::Protocol("64-bit length with its top bit set"));
            }
            (len, 10)
        }
        n => (u64::from(n), 2),
    };
    if control && (!fin || len > 125) {
        return Err(FrameError::Protocol(if fin {
            "control frame payload over 125 bytes"
        } else {
            "fragmented control frame"
        }));
    }
    if len > limit as u64 {
        return Err(FrameError::TooBig { len, limit });
    }
    let mask = if masked {
        if b.len() < head_len + 4 {
            return Ok(None);
        }
        let m = [
            b[head_len],
            b[head_len + 1],
            b[head_len + 2],
            b[head_len + 3],
        ];
        head_len += 4;
        Some(m)
    } else {
        None
    };
    Ok(Some(Head {
        fin,
        opcode,
        mask,
        len,
        head_len,
    }))
}

/// A whole frame, its payload unmasked.
#[derive(Debug)]
pub struct Frame {
    pub fin: bool,
    pub opcode: u8,
    pub payload: BytesMut,
}

/// Frames out of a byte stream: feed it with [`FrameReader::reserve_for_read`]
/// and a read into [`FrameReader::buffer`], take frames with
/// [`FrameReader::next_frame`].
#[derive(Debug)]
pub struct FrameReader {
    buf: BytesMut,
    from: Sender,
    limit: usize,
    /// Bytes the frame at the front needs in all (header and payload),
    /// once its header is known.
    need: usize,
}

impl FrameReader {
    /// A reader of frames sent by `from`, each at most `limit` bytes of
    /// payload.
    pub fn new(from: Sender, limit: usize) -> Self {
        FrameReader {
            buf: BytesMut::with_capacity(8 << 10),
            from,
            limit,
            need: 0,
        }
    }

    /// Bytes received and not yet returned as frames.
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    /// The buffer's capacity (memory it holds).
    pub fn capacity(&self) -> usize {
        self.buf.capacity()
    }

    /// Makes room for the next read: what the current frame still needs
    /// (at most [`READ_CHUNK`]), or a chunk for the next headers.
    pub fn reserve_for_read(&mut self) {
        let missing = self.need.saturating_sub(self.buf.len());
        let want = if missing > 0 {
            missing.min(READ_CHUNK)
        } else {
            8 << 10
        };
        self.buf.reserve(want);
    }

    /// The buffer to read into (after [`FrameReader::reserve_for_read`]).
    pub fn buffer(&mut self) -> &mut BytesMut {
        &mut self.buf
    }

    /// The next whole frame, `Ok(None)` if more bytes are needed.
    pub fn next_frame(&mut self) -> Result<Option<Frame>, FrameError> {
        let Some(head) = parse_head(&self.buf, self.from, self.limit)? else {
            self.need = 0;
            return Ok(None);
        };
        // `len` is at most `limit`, a `usize`: no overflow below.
        let total = head.head_len + head.len as usize;
        if self.buf.len() < total {
            self.need = total;
            return Ok(None);
        }
        self.need = 0;
        self.buf.advance(head.head_len);
        let mut payload = self.buf.split_to(head.len as usize);
        if let Some(mask) = head.mask {
            crate::codec::mask_tail(&mut payload, 0, mask);
        }
        Ok(Some(Frame {
            fin: head.fin,
            opcode: head.opcode,
            payload,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    impl FrameReader {
        fn push(&mut self, bytes: &[u8]) {
            self.buf.extend_from_slice(bytes);
        }
    }
    use crate::codec::{write_frame, Header, MaskRng, WHOLE};

    fn server_frame(first: u8, payload: &[u8]) -> Vec<u8> {
        let mut f = vec![first];
        match payload.len() {
            n if n < 126 => f.push(n as u8),
            n if n <= 0xffff => {
                f.push(126);
                f.extend_from_slice(&(n as u16).to_be_bytes());
            }
            n => {
                f.push(127);
                f.extend_from_slice(&(n as u64).to_be_bytes());
            }
        }
        f.extend_from_slice(payload);
        f
    }

    #[test]
    fn frames_split_anywhere_come_out_whole() {
        let mut stream = Vec::new();
        for len in [0usize, 1, 125, 126, 65535, 65536, 200_000] {
            stream.extend(server_frame(0x82, &vec![len as u8; len]));
        }
        for step in [1usize, 7, 4096, 1 << 20] {
            let mut r = FrameReader::new(Sender::Server, 1 << 20);
            let mut got = Vec::new();
            for chunk in stream.chunks(step) {
                r.push(chunk);
                while let Some(f) = r.next_frame().unwrap() {
                    got.push(f.payload.len());
                }
            }
            assert_eq!(got, vec![0, 1, 125, 126, 65535, 65536, 200_000]);
            assert_eq!(r.buffered(), 0);
        }
    }

    #[test]
    fn client_frames_are_unmasked() {
        let mut f = Vec::new();
        let h = Header {
            ts_ms: 0,
            entries: WHOLE,
            own_ts: false,
            tail_mask: [0; 4],
        };
        write_frame(&mut f, h, &[], b"hello", MaskRng::from_os().next_mask());
        let mut r = FrameReader::new(Sender::Client, 100);
        r.push(&f);
        let frame = r.next_frame().unwrap().unwrap();
        assert_eq!(
            (frame.fin, frame.opcode, &frame.payload[..]),
            (true, op::BINARY, &b"hello"[..])
        );
        let mut r = FrameReader::new(Sender::Server, 100);
        r.push(&f);
        assert_eq!(
            r.next_frame().unwrap_err(),
            FrameError::Protocol("masked frame from the server")
        );
    }

    #[test]
    fn a_huge_declared_length_costs_only_what_arrives() {
        // Issue 14, item 2: 250 MiB declared, 1 000 bytes sent.
        let mut head = vec![0x82, 127];
        head.extend_from_slice(&(250u64 << 20).to_be_bytes());
        let mut r = FrameReader::new(Sender::Server, 256 << 20);
        r.push(&head);
        assert!(r.next_frame().unwrap().is_none());
        for _ in 0..10 {
            r.reserve_for_read();
            let b = r.buffer();
            b.extend_from_slice(&[0u8; 100]);
            assert!(r.next_frame().unwrap().is_none());
        }
        assert!(r.capacity() < 256 << 10, "{}", r.capacity());
    }

    #[test]
    fn form_errors() {
        let e = |b: &[u8], from| parse_head(b, from, 1000).unwrap_err();
        let p = FrameError::Protocol;
        assert_eq!(
            e(&[0xc2, 0], Sender::Server),
            p("reserved bits set (no extension was negotiated)")
        );
        assert_eq!(e(&[0x83, 0], Sender::Server), p("unknown opcode"));
        assert_eq!(e(&[0x09, 0], Sender::Server), p("fragmented control frame"));
        assert_eq!(
            e(&[0x89, 126, 0, 126], Sender::Server),
            p("control frame payload over 125 bytes")
        );
        assert_eq!(
            e(&[0x82, 0], Sender::Client),
            p("unmasked frame from the client")
        );
        let mut top = vec![0x82, 127];
        top.extend_from_slice(&u64::MAX.to_be_bytes());
        assert_eq!(
            e(&top, Sender::Server),
            p("64-bit length with its top bit set")
        );
        let mut big = vec![0x82, 127];
        big.extend_from_slice(&(1u64 << 40).to_be_bytes());
        assert_eq!(
            e(&big, Sender::Server),
            FrameError::TooBig {
                len: 1 << 40,
                limit: 1000
            }
        );
        assert_eq!(parse_head(&[0x82], Sender::Server, 1000), Ok(None));
        assert_eq!(parse_head(&[0x82, 127, 0], Sender::Server, 1000), Ok(None));
    }
}
