//! The Vuer wire format: msgpack envelopes and client websocket frames.
//!
//! Nothing here knows about tokio or sockets, nor about the event and value
//! types: encoding and decoding are plain functions over byte buffers (the
//! envelope reader, msgpack primitives, framing, masking), unit-tested
//! against the golden vectors made by the real Python package and benched
//! on their own. The value type's msgpack form is in `value/msgpack.rs`, and
//! each event type's body encoder in `event.rs`, both built on these.
//!
//! Outgoing events are encoded in two steps. When an event is published, its
//! envelope *without `ts`* is encoded into a [`Payload`] (that is the part
//! that depends on the event); when the sender task writes a batch, it puts
//! the map header and `ts` in front and frames and masks the result straight
//! into its write buffer.

mod frame;
// Public items, reachable only through `internals::frames` (the test kit's
// server reads frames with the client's own reader).
#[cfg_attr(not(feature = "internals"), allow(unreachable_pub))]
#[cfg_attr(feature = "internals", allow(missing_docs))]
pub(crate) mod inframe;
mod json;
mod read;
mod ser;
mod write;

use std::ops::Range;

use bytes::Bytes;

#[cfg(test)]
pub(crate) use frame::unframe;
pub(crate) use frame::{
    extend_masked, mask_tail, write_close, write_control, write_header, MaskRng, Opcode,
};
pub(crate) use json::json_to_msgpack;
pub(crate) use read::{validate_value, Head, Number, Reader, MAX_DEPTH};
pub(crate) use ser::to_msgpack;
pub(crate) use write::{
    write_array_len, write_bin, write_bool, write_ext, write_f32, write_f64, write_int,
    write_map_len, write_nil, write_str, write_uint,
};

use crate::error::{DecodeError, EncodeError};
use write::*;

/// An encoded outgoing message, minus its `ts` (written at send time from
/// `ts_ms`), or a complete pre-encoded message: what `publish` encodes into
/// (a per-thread scratch buffer) before the ring copies it.
#[derive(Debug, Clone, Default)]
pub struct Payload {
    /// `ts` in milliseconds.
    pub ts_ms: u64,
    /// Map entries in `head`/`tail` (not counting `ts`); [`WHOLE`] when
    /// `tail` is a complete message written as is.
    pub entries: u32,
    /// Encoded map entries.
    pub head: Vec<u8>,
    /// Bytes that follow `head` unchanged (a pre-encoded value, or a whole
    /// message).
    pub tail: Bytes,
}

/// What the ring keeps beside an encoded body to write it later.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Header {
    /// `ts` in milliseconds.
    pub ts_ms: u64,
    /// Map entries in the body and tail, not counting `ts` ([`WHOLE`]: the
    /// tail is a complete message).
    pub entries: u32,
    /// The event set its own `ts` (else the client stamped it when it
    /// accepted the event, and stamps a restored value again).
    pub own_ts: bool,
    /// The tail is stored masked with this key, as if it began a frame's
    /// payload (all zero: stored plain). A large message is masked by the
    /// thread that encoded it, while its bytes are in that thread's cache,
    /// and then written from where it lies (see [`write_frame_head`]).
    pub tail_mask: [u8; 4],
}

/// `entries` for a complete pre-encoded message.
pub(crate) const WHOLE: u32 = u32::MAX;

pub(crate) const TS_KEY: &[u8] = &[0xa2, b't', b's'];
pub(crate) const KEY_KEY: &[u8] = &[0xa3, b'k', b'e', b'y'];
pub(crate) const VALUE_KEY: &[u8] = &[0xa5, b'v', b'a', b'l', b'u', b'e'];
pub(crate) const ETYPE_KEY: &[u8] = &[0xa5, b'e', b't', b'y', b'p', b'e'];

/// Size of the msgpack message made of `h`, a body and a tail.
#[inline]
pub(crate) fn message_len(h: Header, body: usize, tail: usize) -> usize {
    if h.entries == WHOLE {
        return tail;
    }
    container_header_len(h.entries as usize + 1) + TS_KEY.len() + uint_len(h.ts_ms) + body + tail
}

/// Appends the msgpack message: `{ts, <body entries>, <tail>}`.
#[inline]
pub(crate) fn write_message(out: &mut Vec<u8>, h: Header, body: &[u8], tail: &[u8]) {
    if h.entries != WHOLE {
        write_map_len(out, h.entries as usize + 1);
        out.extend_from_slice(TS_KEY);
        write_uint(out, h.ts_ms);
        out.extend_from_slice(body);
    }
    out.extend_from_slice(tail);
}

/// Appends the message as one masked binary frame.
///
/// This is the sender's per-event work, so it is written for speed: one
/// reservation, the frame header, map header and `ts` assembled on the stack
/// and copied at once, then the body, then the mask applied in place.
#[inline]
pub(crate) fn write_frame(out: &mut Vec<u8>, h: Header, body: &[u8], tail: &[u8], mask: [u8; 4]) {
    let len = message_len(h, body.len(), tail.len());
    out.reserve(len + 14);
    // The common case (a pose): short message, few entries, a current `ts`
    // (above 2^32 ms): a fixed 19-byte prefix, copied at once.
    if len < 126 && h.entries < 15 && h.ts_ms > u32::MAX as u64 && tail.is_empty() {
        let t = h.ts_ms.to_be_bytes();
        let [m0, m1, m2, m3] = mask;
        let pre = [
            0x82,
            0x80 | len as u8,
            m0,
            m1,
            m2,
            m3,
            0x80 | (h.entries as u8 + 1),
            0xa2,
            b't',
            b's',
            0xcf,
            t[0],
            t[1],
            t[2],
            t[3],
            t[4],
            t[5],
            t[6],
            t[7],
        ];
        let start = out.len() + 6;
        out.extend_from_slice(&pre);
        out.extend_from_slice(body);
        mask_tail(out, start, mask);
        return;
    }
    let at = write_frame_head(out, h, body, tail.len(), mask);
    extend_masked(out, tail, mask, at);
}

/// Appends a masked binary frame for the message made of `h`, `body` and a
/// tail of `tail_len` bytes, all but the tail (written after it, from
/// elsewhere). Returns the tail's offset in the payload.
pub(crate) fn write_frame_head(
    out: &mut Vec<u8>,
    h: Header,
    body: &[u8],
    tail_len: usize,
    mask: [u8; 4],
) -> usize {
    let len = message_len(h, body.len(), tail_len);
    if h.entries == WHOLE {
        write_header(out, Opcode::Binary, len, mask);
        return 0;
    }
    let mut pre = Prefix::default();
    // Frame header (FIN, binary; masked length) and the mask.
    if len < 126 {
        pre.put(&[0x82, 0x80 | len as u8]);
    } else if len <= u16::MAX as usize {
        let l = (len as u16).to_be_bytes();
        pre.put(&[0x82, 0x80 | 126, l[0], l[1]]);
    } else {
        let l = (len as u64).to_be_bytes();
        pre.put(&[
            0x82,
            0x80 | 127,
            l[0],
            l[1],
            l[2],
            l[3],
            l[4],
            l[5],
            l[6],
            l[7],
        ]);
    }
    pre.put(&mask);
    let payload_at = pre.len;
    // Map header, then `ts`.
    let entries = h.entries as usize + 1;
    if entries < 16 {
        pre.put(&[0x80 | entries as u8]);
    } else if entries <= u16::MAX as usize {
        let e = (entries as u16).to_be_bytes();
        pre.put(&[0xde, e[0], e[1]]);
    } else {
        let e = (entries as u32).to_be_bytes();
        pre.put(&[0xdf, e[0], e[1], e[2], e[3]]);
    }
    pre.put(TS_KEY);
    let (ts, ts_len) = uint_bytes(h.ts_ms);
    pre.put(&ts[..ts_len]);
    let start = out.len() + payload_at;
    out.extend_from_slice(&pre.buf[..pre.len]);
    let prefix = out.len() - start;
    mask_tail(out, start, mask);
    // The body copied and masked in one pass.
    extend_masked(out, body, mask, prefix);
    debug_assert_eq!(out.len() - start + tail_len, len);
    prefix + body.len()
}

/// The frame mask under which a tail stored masked with `key` (as if it
/// began a payload) is correctly masked when it starts at payload offset
/// `at`: byte `j` of the tail is masked with `key[j % 4]`, and the frame
/// masks payload byte `at + j` with `mask[(at + j) % 4]`.
#[inline]
pub(crate) fn aligned_mask(key: [u8; 4], at: usize) -> [u8; 4] {
    let r = at % 4;
    [
        key[(4 - r) % 4],
        key[(5 - r) % 4],
        key[(6 - r) % 4],
        key[(7 - r) % 4],
    ]
}

/// Up to 32 bytes assembled on the stack.
#[derive(Default)]
struct Prefix {
    buf: [u8; 32],
    len: usize,
}

impl Prefix {
    #[inline]
    fn put(&mut self, bytes: &[u8]) {
        self.buf[self.len..self.len + bytes.len()].copy_from_slice(bytes);
        self.len += bytes.len();
    }
}

impl Payload {
    /// The ring header for this payload.
    #[inline]
    pub(crate) fn header(&self) -> Header {
        Header {
            ts_ms: self.ts_ms,
            entries: self.entries,
            own_ts: false,
            tail_mask: [0; 4],
        }
    }

    /// Size of the msgpack message.
    #[cfg(test)]
    pub(crate) fn message_len(&self) -> usize {
        message_len(self.header(), self.head.len(), self.tail.len())
    }

    /// Appends the msgpack message.
    #[inline]
    pub(crate) fn write_message(&self, out: &mut Vec<u8>) {
        write_message(out, self.header(), &self.head, &self.tail)
    }

    /// Appends the message as one masked binary frame.
    #[inline]
    pub(crate) fn write_frame(&self, out: &mut Vec<u8>, mask: [u8; 4]) {
        write_frame(out, self.header(), &self.head, &self.tail, mask)
    }

    /// The message as a new buffer.
    #[cfg(test)]
    pub(crate) fn to_message(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.message_len());
        self.write_message(&mut out);
        out
    }
}

/// Byte ranges of the envelope's parts inside the frame.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct Envelope {
    pub(crate) etype: Range<usize>,
    pub(crate) ts_ms: Option<i64>,
    pub(crate) data: Option<Range<usize>>,
    pub(crate) value: Option<Range<usize>>,
    pub(crate) uuid: Option<Range<usize>>,
    pub(crate) rtype: Option<Range<usize>>,
    pub(crate) key: Option<Range<usize>>,
    pub(crate) strict: Option<bool>,
    /// How many other top-level entries there are (found again on demand
    /// by [`crate::codec::envelope_extras`]: storing their ranges would cost
    /// 16 times the message's size for a message made of empty entries).
    pub(crate) extras: usize,
}

/// What a body encoder produces besides the bytes it appended: the number
/// of map entries it wrote (not counting `ts`; [`WHOLE`] for a complete
/// message) and the bytes that follow unchanged.
pub(crate) type BodyParts = (u32, Bytes);

/// Encodes into a [`Payload`] with one of the body encoders.
pub(crate) fn encode_into(
    out: &mut Payload,
    f: impl FnOnce(&mut Vec<u8>) -> Result<BodyParts, EncodeError>,
) -> Result<(), EncodeError> {
    out.head.clear();
    let (entries, tail) = f(&mut out.head)?;
    out.entries = entries;
    out.tail = tail;
    Ok(())
}

/// True if a top-level entry named `key`, whose value starts with the byte
/// `marker`, is not one of the envelope's own fields: unknown names, and
/// known names with a value of the wrong type (`ts` that is not a number,
/// `uuid`/`rtype`/`key` neither string nor nil, `strict` not a bool). Such
/// entries are the event's extras. [`read_envelope`] and
/// [`envelope_extras`] both decide with this function, so they agree.
fn is_extra(key: &str, marker: u8) -> bool {
    let number = matches!(marker, 0x00..=0x7f | 0xe0..=0xff | 0xca | 0xcb | 0xcc..=0xd3);
    let str_or_nil = matches!(marker, 0xa0..=0xbf | 0xd9..=0xdb | 0xc0);
    match key {
        "etype" | "data" | "value" => false,
        "ts" => !number,
        "uuid" | "rtype" | "key" => !str_or_nil,
        "strict" => !matches!(marker, 0xc2 | 0xc3),
        _ => true,
    }
}

/// Reads the envelope of one inbound message: a map with string keys and a
/// string `etype`. Everything is validated (see [`Reader`]); values other
/// than the envelope's own fields are only located, not decoded, and extras
/// are only counted (a message can hold millions of them; see
/// [`envelope_extras`]).
pub(crate) fn read_envelope(msg: &[u8]) -> Result<Envelope, DecodeError> {
    let mut r = Reader::new(msg);
    let n = r.map_header()?;
    let mut env = Envelope::default();
    let mut etype = None;
    for _ in 0..n {
        let key = r.key()?;
        let Some(marker) = r.peek() else {
            return Err(DecodeError::Truncated {
                offset: r.pos(),
                needed: 1,
            });
        };
        if is_extra(key, marker) {
            r.span(1)?;
            env.extras += 1;
            continue;
        }
        match key {
            "etype" => match r.opt_str_span() {
                Ok(Some(s)) => etype = Some(s),
                Ok(None) | Err(None) => return Err(DecodeError::MissingEtype),
                Err(Some(e)) => return Err(e),
            },
            "ts" => match r.number() {
                Some(Number::UInt(u)) => env.ts_ms = i64::try_from(u).ok(),
                Some(Number::Int(i)) => env.ts_ms = Some(i),
                Some(Number::Float(f)) => {
                    env.ts_ms = f.is_finite().then_some((f * 1000.0) as i64);
                }
                // A number marker that does not read (truncated).
                None => {
                    r.span(1)?;
                }
            },
            "data" => env.data = Some(r.span(1)?),
            "value" => env.value = Some(r.span(1)?),
            "uuid" | "rtype" | "key" => {
                let s = match r.opt_str_span() {
                    Ok(s) => s,
                    Err(Some(e)) => return Err(e),
                    // Not reached: is_extra lets only strings and nil by.
                    Err(None) => {
                        r.span(1)?;
                        continue;
                    }
                };
                let slot = match key {
                    "uuid" => &mut env.uuid,
                    "rtype" => &mut env.rtype,
                    _ => &mut env.key,
                };
                *slot = s;
            }
            "strict" => match r.bool() {
                Some(b) => env.strict = Some(b),
                // Not reached: is_extra lets only bools by.
                None => {
                    r.span(1)?;
                }
            },
            // Not reached: is_extra takes every other name.
            _ => {
                r.span(1)?;
            }
        }
    }
    if r.remaining() != 0 {
        return Err(DecodeError::TrailingBytes {
            count: r.remaining(),
        });
    }
    env.etype = etype.ok_or(DecodeError::MissingEtype)?;
    Ok(env)
}

/// The extras of a message [`read_envelope`] accepted, in wire order:
/// (key range, value range) pairs, found by walking the top-level map again.
pub(crate) fn envelope_extras(
    msg: &[u8],
) -> impl Iterator<Item = (Range<usize>, Range<usize>)> + '_ {
    let mut r = Reader::new(msg);
    let mut left = r.map_header().unwrap_or(0);
    std::iter::from_fn(move || {
        while left > 0 {
            left -= 1;
            // Validated by read_envelope: none of these fail.
            let key = r.key().ok()?;
            let key_range = r.pos() - key.len()..r.pos();
            let extra = is_extra(key, r.peek()?);
            let value = r.span(1).ok()?;
            if extra {
                return Some((key_range, value));
            }
        }
        None
    })
}

#[cfg(test)]
mod tests;
