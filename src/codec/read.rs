//! A bounds-checked msgpack reader for inbound messages.
//!
//! Everything here treats the input as hostile: every declared length is
//! checked against the bytes that are actually there before anything is
//! allocated, nesting is limited, strings must be UTF-8 and map keys must be
//! strings. Errors are values ([`DecodeError`]), never panics.

use std::ops::Range;

use crate::error::DecodeError;

/// Deepest nesting accepted in an inbound message. Vuer scenes nest a few
/// dozen levels at most; the limit only exists so that a hostile message
/// cannot exhaust the stack.
pub(crate) const MAX_DEPTH: usize = 256;

pub(crate) struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

/// What a marker byte announces.
pub(crate) enum Head {
    Nil,
    Bool(bool),
    UInt(u64),
    Int(i64),
    F32(f32),
    F64(f64),
    Str(usize),
    Bin(usize),
    Array(usize),
    Map(usize),
    Ext(i8, usize),
}

impl<'a> Reader<'a> {
    pub(crate) fn new(buf: &'a [u8]) -> Self {
        Reader { buf, pos: 0 }
    }

    pub(crate) fn pos(&self) -> usize {
        self.pos
    }

    pub(crate) fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    /// The byte at the cursor, if any (not consumed).
    pub(crate) fn peek(&self) -> Option<u8> {
        self.buf.get(self.pos).copied()
    }

    #[inline]
    pub(crate) fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        if self.remaining() < n {
            return Err(DecodeError::Truncated {
                offset: self.pos,
                needed: n,
            });
        }
        let s = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }

    #[inline]
    fn u8(&mut self) -> Result<u8, DecodeError> {
        Ok(self.take(1)?[0])
    }

    #[inline]
    fn be<const N: usize>(&mut self) -> Result<[u8; N], DecodeError> {
        let s = self.take(N)?;
        let mut a = [0u8; N];
        a.copy_from_slice(s);
        Ok(a)
    }

    fn len8(&mut self) -> Result<usize, DecodeError> {
        Ok(self.u8()? as usize)
    }
    fn len16(&mut self) -> Result<usize, DecodeError> {
        Ok(u16::from_be_bytes(self.be()?) as usize)
    }
    fn len32(&mut self) -> Result<usize, DecodeError> {
        Ok(u32::from_be_bytes(self.be()?) as usize)
    }

    pub(crate) fn head(&mut self) -> Result<Head, DecodeError> {
        let at = self.pos;
        let m = self.u8()?;
        Ok(match m {
            0x00..=0x7f => Head::UInt(m as u64),
            0x80..=0x8f => Head::Map((m & 0x0f) as usize),
            0x90..=0x9f => Head::Array((m & 0x0f) as usize),
            0xa0..=0xbf => Head::Str((m & 0x1f) as usize),
            0xc0 => Head::Nil,
            0xc2 => Head::Bool(false),
            0xc3 => Head::Bool(true),
            0xc4 => Head::Bin(self.len8()?),
            0xc5 => Head::Bin(self.len16()?),
            0xc6 => Head::Bin(self.len32()?),
            0xc7 => {
                let n = self.len8()?;
                Head::Ext(self.u8()? as i8, n)
            }
            0xc8 => {
                let n = self.len16()?;
                Head::Ext(self.u8()? as i8, n)
            }
            0xc9 => {
                let n = self.len32()?;
                Head::Ext(self.u8()? as i8, n)
            }
            0xca => Head::F32(f32::from_bits(u32::from_be_bytes(self.be()?))),
            0xcb => Head::F64(f64::from_bits(u64::from_be_bytes(self.be()?))),
            0xcc => Head::UInt(self.u8()? as u64),
            0xcd => Head::UInt(u16::from_be_bytes(self.be()?) as u64),
            0xce => Head::UInt(u32::from_be_bytes(self.be()?) as u64),
            0xcf => Head::UInt(u64::from_be_bytes(self.be()?)),
            0xd0 => Head::Int(self.u8()? as i8 as i64),
            0xd1 => Head::Int(i16::from_be_bytes(self.be()?) as i64),
            0xd2 => Head::Int(i32::from_be_bytes(self.be()?) as i64),
            0xd3 => Head::Int(i64::from_be_bytes(self.be()?)),
            0xd4 => Head::Ext(self.u8()? as i8, 1),
            0xd5 => Head::Ext(self.u8()? as i8, 2),
            0xd6 => Head::Ext(self.u8()? as i8, 4),
            0xd7 => Head::Ext(self.u8()? as i8, 8),
            0xd8 => Head::Ext(self.u8()? as i8, 16),
            0xd9 => Head::Str(self.len8()?),
            0xda => Head::Str(self.len16()?),
            0xdb => Head::Str(self.len32()?),
            0xdc => Head::Array(self.len16()?),
            0xdd => Head::Array(self.len32()?),
            0xde => Head::Map(self.len16()?),
            0xdf => Head::Map(self.len32()?),
            0xe0..=0xff => Head::Int(m as i8 as i64),
            0xc1 => {
                return Err(DecodeError::InvalidMarker {
                    offset: at,
                    byte: m,
                })
            }
        })
    }

    pub(crate) fn str_body(&mut self, n: usize) -> Result<&'a str, DecodeError> {
        let at = self.pos;
        let b = self.take(n)?;
        std::str::from_utf8(b).map_err(|_| DecodeError::InvalidUtf8 { offset: at })
    }

    /// Reads a map key, which must be a string.
    pub(crate) fn key(&mut self) -> Result<&'a str, DecodeError> {
        let at = self.pos;
        match self.head()? {
            Head::Str(n) => self.str_body(n),
            _ => Err(DecodeError::NonStringKey { offset: at }),
        }
    }

    /// Reads a map header; anything else is an error.
    pub(crate) fn map_header(&mut self) -> Result<usize, DecodeError> {
        let at = self.pos;
        match self.head()? {
            Head::Map(n) => self.check_count(n, 2).map(|_| n),
            _ => Err(DecodeError::NotAMap { offset: at }),
        }
    }

    /// Each array element takes at least one byte and each map entry two, so
    /// a declared count larger than what remains is a lie: reject it before
    /// anything is allocated for it.
    pub(crate) fn check_count(&self, n: usize, min_bytes_each: usize) -> Result<(), DecodeError> {
        if n.saturating_mul(min_bytes_each) > self.remaining() {
            return Err(DecodeError::Truncated {
                offset: self.pos,
                needed: n.saturating_mul(min_bytes_each),
            });
        }
        Ok(())
    }

    /// Skips one value, validating it as reading it into a `Value` would (UTF-8,
    /// string keys, nesting, lengths) without allocating.
    pub(crate) fn skip(&mut self, depth: usize) -> Result<(), DecodeError> {
        if depth > MAX_DEPTH {
            return Err(DecodeError::TooDeep { limit: MAX_DEPTH });
        }
        match self.head()? {
            Head::Nil
            | Head::Bool(_)
            | Head::UInt(_)
            | Head::Int(_)
            | Head::F32(_)
            | Head::F64(_) => {}
            Head::Str(n) => {
                self.str_body(n)?;
            }
            Head::Bin(n) | Head::Ext(_, n) => {
                self.take(n)?;
            }
            Head::Array(n) => {
                self.check_count(n, 1)?;
                for _ in 0..n {
                    self.skip(depth + 1)?;
                }
            }
            Head::Map(n) => {
                self.check_count(n, 2)?;
                for _ in 0..n {
                    self.key()?;
                    self.skip(depth + 1)?;
                }
            }
        }
        Ok(())
    }

    /// Skips one value and returns the byte range it occupied.
    pub(crate) fn span(&mut self, depth: usize) -> Result<Range<usize>, DecodeError> {
        let start = self.pos;
        self.skip(depth)?;
        Ok(start..self.pos)
    }

    /// A string or nil at the cursor: `Ok(Some(range))` for a string,
    /// `Ok(None)` for nil, `Err(())` (cursor unchanged) for anything else.
    pub(crate) fn opt_str_span(&mut self) -> Result<Option<Range<usize>>, Option<DecodeError>> {
        let start = self.pos;
        match self.head().map_err(Some)? {
            Head::Nil => Ok(None),
            Head::Str(n) => {
                let at = self.pos;
                self.str_body(n).map_err(Some)?;
                Ok(Some(at..self.pos))
            }
            _ => {
                self.pos = start;
                Err(None)
            }
        }
    }

    /// A number at the cursor, as `(int, float)`; cursor unchanged if it is
    /// not a number.
    pub(crate) fn number(&mut self) -> Option<Number> {
        let start = self.pos;
        match self.head() {
            Ok(Head::UInt(u)) => Some(Number::UInt(u)),
            Ok(Head::Int(i)) => Some(Number::Int(i)),
            Ok(Head::F32(f)) => Some(Number::Float(f as f64)),
            Ok(Head::F64(f)) => Some(Number::Float(f)),
            _ => {
                self.pos = start;
                None
            }
        }
    }

    /// A bool at the cursor; cursor unchanged otherwise.
    pub(crate) fn bool(&mut self) -> Option<bool> {
        let start = self.pos;
        match self.head() {
            Ok(Head::Bool(b)) => Some(b),
            _ => {
                self.pos = start;
                None
            }
        }
    }
}

#[derive(Debug, Clone, Copy)]
pub(crate) enum Number {
    UInt(u64),
    Int(i64),
    Float(f64),
}

/// Checks that `bytes` hold exactly one well-formed value.
pub(crate) fn validate_value(bytes: &[u8]) -> Result<(), DecodeError> {
    let mut r = Reader::new(bytes);
    r.skip(0)?;
    if r.remaining() != 0 {
        return Err(DecodeError::TrailingBytes {
            count: r.remaining(),
        });
    }
    Ok(())
}
