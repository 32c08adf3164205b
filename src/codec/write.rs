//! Canonical msgpack writers: the smallest form for every integer, string,
//! binary, array and map header, exactly as Python's `msgpack.packb` chooses
//! it (non-negative integers use the unsigned families).
//!
//! Every function appends to a `Vec<u8>` and cannot fail, so the hot path has
//! no `Result` plumbing.

#[inline]
pub(crate) fn write_nil(out: &mut Vec<u8>) {
    out.push(0xc0);
}

#[inline]
pub(crate) fn write_bool(out: &mut Vec<u8>, v: bool) {
    out.push(if v { 0xc3 } else { 0xc2 });
}

/// Non-negative integers: positive fixint, uint8/16/32/64.
#[inline]
pub(crate) fn write_uint(out: &mut Vec<u8>, v: u64) {
    // Each form is written with one fixed-size copy (no per-byte pushes).
    if v < 128 {
        out.push(v as u8);
    } else if v <= u8::MAX as u64 {
        out.extend_from_slice(&[0xcc, v as u8]);
    } else if v <= u16::MAX as u64 {
        let b = (v as u16).to_be_bytes();
        out.extend_from_slice(&[0xcd, b[0], b[1]]);
    } else if v <= u32::MAX as u64 {
        let b = (v as u32).to_be_bytes();
        out.extend_from_slice(&[0xce, b[0], b[1], b[2], b[3]]);
    } else {
        let b = v.to_be_bytes();
        out.extend_from_slice(&[0xcf, b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]);
    }
}

/// Signed integers: non-negative ones go through [`write_uint`], negative
/// ones use negative fixint, int8/16/32/64.
#[inline]
pub(crate) fn write_int(out: &mut Vec<u8>, v: i64) {
    if v >= 0 {
        write_uint(out, v as u64);
    } else if v >= -32 {
        out.push(v as i8 as u8);
    } else if v >= i8::MIN as i64 {
        out.extend_from_slice(&[0xd0, v as i8 as u8]);
    } else if v >= i16::MIN as i64 {
        out.push(0xd1);
        out.extend_from_slice(&(v as i16).to_be_bytes());
    } else if v >= i32::MIN as i64 {
        out.push(0xd2);
        out.extend_from_slice(&(v as i32).to_be_bytes());
    } else {
        out.push(0xd3);
        out.extend_from_slice(&v.to_be_bytes());
    }
}

/// The encoding of a non-negative integer, on the stack.
#[inline]
pub(crate) fn uint_bytes(v: u64) -> ([u8; 9], usize) {
    let mut b = [0u8; 9];
    let n = if v < 128 {
        b[0] = v as u8;
        1
    } else if v <= u8::MAX as u64 {
        b[..2].copy_from_slice(&[0xcc, v as u8]);
        2
    } else if v <= u16::MAX as u64 {
        b[0] = 0xcd;
        b[1..3].copy_from_slice(&(v as u16).to_be_bytes());
        3
    } else if v <= u32::MAX as u64 {
        b[0] = 0xce;
        b[1..5].copy_from_slice(&(v as u32).to_be_bytes());
        5
    } else {
        b[0] = 0xcf;
        b[1..9].copy_from_slice(&v.to_be_bytes());
        9
    };
    (b, n)
}

/// Size in bytes of the encoding of a non-negative integer.
#[inline]
pub(crate) fn uint_len(v: u64) -> usize {
    if v < 128 {
        1
    } else if v <= u8::MAX as u64 {
        2
    } else if v <= u16::MAX as u64 {
        3
    } else if v <= u32::MAX as u64 {
        5
    } else {
        9
    }
}

#[inline]
pub(crate) fn write_f32(out: &mut Vec<u8>, v: f32) {
    let b = v.to_bits().to_be_bytes();
    out.extend_from_slice(&[0xca, b[0], b[1], b[2], b[3]]);
}

#[inline]
pub(crate) fn write_f64(out: &mut Vec<u8>, v: f64) {
    let b = v.to_bits().to_be_bytes();
    out.extend_from_slice(&[0xcb, b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]);
}

#[inline]
pub(crate) fn write_str(out: &mut Vec<u8>, s: &str) {
    let n = s.len();
    if n < 32 {
        out.push(0xa0 | n as u8);
    } else if n <= u8::MAX as usize {
        out.extend_from_slice(&[0xd9, n as u8]);
    } else if n <= u16::MAX as usize {
        out.push(0xda);
        out.extend_from_slice(&(n as u16).to_be_bytes());
    } else {
        out.push(0xdb);
        out.extend_from_slice(&(n as u32).to_be_bytes());
    }
    out.extend_from_slice(s.as_bytes());
}

#[inline]
pub(crate) fn write_bin(out: &mut Vec<u8>, b: &[u8]) {
    let n = b.len();
    if n <= u8::MAX as usize {
        out.extend_from_slice(&[0xc4, n as u8]);
    } else if n <= u16::MAX as usize {
        out.push(0xc5);
        out.extend_from_slice(&(n as u16).to_be_bytes());
    } else {
        out.push(0xc6);
        out.extend_from_slice(&(n as u32).to_be_bytes());
    }
    out.extend_from_slice(b);
}

#[inline]
pub(crate) fn write_array_len(out: &mut Vec<u8>, n: usize) {
    if n < 16 {
        out.push(0x90 | n as u8);
    } else if n <= u16::MAX as usize {
        out.push(0xdc);
        out.extend_from_slice(&(n as u16).to_be_bytes());
    } else {
        out.push(0xdd);
        out.extend_from_slice(&(n as u32).to_be_bytes());
    }
}

#[inline]
pub(crate) fn write_map_len(out: &mut Vec<u8>, n: usize) {
    if n < 16 {
        out.push(0x80 | n as u8);
    } else if n <= u16::MAX as usize {
        out.push(0xde);
        out.extend_from_slice(&(n as u16).to_be_bytes());
    } else {
        out.push(0xdf);
        out.extend_from_slice(&(n as u32).to_be_bytes());
    }
}

/// Size of an array or map header for `n` entries.
#[inline]
pub(crate) fn container_header_len(n: usize) -> usize {
    if n < 16 {
        1
    } else if n <= u16::MAX as usize {
        3
    } else {
        5
    }
}

pub(crate) fn write_ext(out: &mut Vec<u8>, tag: i8, data: &[u8]) {
    let n = data.len();
    match n {
        1 => out.push(0xd4),
        2 => out.push(0xd5),
        4 => out.push(0xd6),
        8 => out.push(0xd7),
        16 => out.push(0xd8),
        _ if n <= u8::MAX as usize => out.extend_from_slice(&[0xc7, n as u8]),
        _ if n <= u16::MAX as usize => {
            out.push(0xc8);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        }
        _ => {
            out.push(0xc9);
            out.extend_from_slice(&(n as u32).to_be_bytes());
        }
    }
    out.push(tag as u8);
    out.extend_from_slice(data);
}
