//! A [`Value`] to and from msgpack, on the codec's reader and writers (the
//! codec knows bytes; this module knows the value type).

use crate::codec::{
    write_array_len, write_bin, write_bool, write_ext, write_f32, write_f64, write_int,
    write_map_len, write_nil, write_str, write_uint, Head, Reader, MAX_DEPTH,
};
use crate::error::DecodeError;
use crate::Value;

/// Reads one value into a [`Value`].
pub(crate) fn read_value(r: &mut Reader<'_>, depth: usize) -> Result<Value, DecodeError> {
    if depth > MAX_DEPTH {
        return Err(DecodeError::TooDeep { limit: MAX_DEPTH });
    }
    Ok(match r.head()? {
        Head::Nil => Value::Nil,
        Head::Bool(b) => Value::Bool(b),
        Head::UInt(u) => Value::from(u),
        Head::Int(i) => Value::Int(i),
        Head::F32(f) => Value::F32(f),
        Head::F64(f) => Value::F64(f),
        Head::Str(n) => Value::Str(r.str_body(n)?.to_owned()),
        Head::Bin(n) => Value::Bin(r.take(n)?.to_vec()),
        Head::Ext(t, n) => Value::Ext(t, r.take(n)?.to_vec()),
        Head::Array(n) => {
            r.check_count(n, 1)?;
            let mut a = Vec::with_capacity(n);
            for _ in 0..n {
                a.push(read_value(r, depth + 1)?);
            }
            Value::Array(a)
        }
        Head::Map(n) => {
            r.check_count(n, 2)?;
            let mut m = Vec::with_capacity(n);
            for _ in 0..n {
                let k = r.key()?.to_owned();
                m.push((k, read_value(r, depth + 1)?));
            }
            Value::Map(m)
        }
    })
}

/// Decodes exactly one value filling all of `bytes`.
pub(crate) fn decode_value(bytes: &[u8]) -> Result<Value, DecodeError> {
    let mut r = Reader::new(bytes);
    let v = read_value(&mut r, 0)?;
    if r.remaining() != 0 {
        return Err(DecodeError::TrailingBytes {
            count: r.remaining(),
        });
    }
    Ok(v)
}

/// Writes a [`Value`] in canonical form.
pub(crate) fn write_value(out: &mut Vec<u8>, v: &Value) {
    match v {
        Value::Nil => write_nil(out),
        Value::Bool(b) => write_bool(out, *b),
        Value::Int(i) => write_int(out, *i),
        Value::UInt(u) => write_uint(out, *u),
        Value::F32(f) => write_f32(out, *f),
        Value::F64(f) => write_f64(out, *f),
        Value::Str(s) => write_str(out, s),
        Value::Bin(b) => write_bin(out, b),
        Value::Array(a) => {
            write_array_len(out, a.len());
            for x in a {
                write_value(out, x);
            }
        }
        Value::Map(m) => {
            write_map_len(out, m.len());
            for (k, x) in m {
                write_str(out, k);
                write_value(out, x);
            }
        }
        Value::Ext(tag, data) => write_ext(out, *tag, data),
    }
}
