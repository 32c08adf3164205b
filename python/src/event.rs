//! A Python event to one complete Vuer message, as `vuer.VuerClient` would
//! send it (see `pack` for the value rules).
//!
//! Accepted events:
//! * any object with an `etype` attribute and a `__dict__`: vuer's
//!   `ClientEvent` and its subclasses, this package's `ClientEvent`, or a
//!   class of your own shaped like them. The message is vuer's
//!   `_serialize()`: the `__dict__` entries in order (a float `ts` as
//!   integer milliseconds, `value` through vuer's `serializer`), then
//!   `etype` and `value` when the dict has none;
//! * a dict with a str `etype`: its entries in order, with the same rules
//!   for `ts` and `value`; `ts` (now, in milliseconds) is put first when it
//!   has none.
//!
//! Anything else is an `EncodeError` (a `TypeError`) naming what was given.

use std::time::{SystemTime, UNIX_EPOCH};

use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyFloat, PyString};

use crate::errors;
use crate::pack::{pack, pack_serialized, with_utf8, write_len, write_str_bytes};

enum Name {
    Ts,
    Etype,
    Value,
    Other,
}

fn name_of(key: &[u8]) -> Name {
    match key {
        b"ts" => Name::Ts,
        b"etype" => Name::Etype,
        b"value" => Name::Value,
        _ => Name::Other,
    }
}

/// Appends the message for `event` to `out`.
pub(crate) fn encode_event(event: &Bound<'_, PyAny>, out: &mut Vec<u8>) -> PyResult<()> {
    if let Ok(d) = event.cast::<PyDict>() {
        return encode_dict(d, out);
    }
    let py = event.py();
    let etype = match event.getattr_opt(pyo3::intern!(py, "etype"))? {
        Some(e) => e,
        None => return Err(not_an_event(event)),
    };
    let dict = match event.getattr_opt(pyo3::intern!(py, "__dict__"))? {
        Some(d) => d.cast_into::<PyDict>().map_err(|_| not_an_event(event))?,
        None => return Err(not_an_event(event)),
    };
    let etype = etype.cast_into::<PyString>().map_err(|e| {
        errors::encode_error(format!(
            "the event's etype must be a str, not {}",
            type_name(&e.into_inner())
        ))
    })?;
    // One pass: the map header is written for the common case (at most 15
    // entries: a fixmap byte) and fixed afterwards if it was more.
    let (mut has_etype, mut has_value) = (false, false);
    let header_at = out.len();
    out.push(0x80);
    for (k, v) in dict.iter() {
        let name = write_key(k, "event attribute names", out)?;
        match name {
            Name::Ts => write_ts(&v, out)?,
            // `{**d, "etype": self.etype}`: the attribute (an instance
            // attribute is what `self.etype` reads anyway).
            Name::Etype => {
                has_etype = true;
                pack(etype.as_any(), out)?
            }
            Name::Value => {
                has_value = true;
                pack_serialized(&v, out)?
            }
            Name::Other => pack(&v, out)?,
        }
    }
    if !has_etype {
        write_str_bytes(out, b"etype")?;
        pack(etype.as_any(), out)?;
    }
    if !has_value {
        write_str_bytes(out, b"value")?;
        let value = event.getattr(pyo3::intern!(py, "value"))?;
        pack_serialized(&value, out)?;
    }
    let entries = dict.len() + usize::from(!has_etype) + usize::from(!has_value);
    fix_map_header(out, header_at, entries)
}

/// Rewrites the one-byte map header at `at` for `entries` entries.
fn fix_map_header(out: &mut Vec<u8>, at: usize, entries: usize) -> PyResult<()> {
    if entries <= 15 {
        out[at] = 0x80 | entries as u8;
        return Ok(());
    }
    let mut header = Vec::with_capacity(5);
    write_len(&mut header, entries, [0x80, 0xde, 0xdf], 15)?;
    out.splice(at..at + 1, header);
    Ok(())
}

fn encode_dict(d: &Bound<'_, PyDict>, out: &mut Vec<u8>) -> PyResult<()> {
    match d.get_item("etype")? {
        Some(e) if e.is_instance_of::<PyString>() => {}
        Some(e) => {
            return Err(errors::encode_error(format!(
                "the event's etype must be a str, not {}",
                type_name(&e)
            )))
        }
        None => {
            return Err(errors::encode_error(
                "a dict event needs an 'etype' (a str)".to_string(),
            ))
        }
    }
    let has_ts = d.contains("ts")?;
    write_len(out, d.len() + usize::from(!has_ts), [0x80, 0xde, 0xdf], 15)?;
    if !has_ts {
        write_str_bytes(out, b"ts")?;
        rmp::encode::write_uint(out, now_ms()).expect("a Vec does not fail");
    }
    for (k, v) in d.iter() {
        let name = write_key(k, "event keys", out)?;
        match name {
            Name::Ts => write_ts(&v, out)?,
            Name::Value => pack_serialized(&v, out)?,
            Name::Etype | Name::Other => pack(&v, out)?,
        }
    }
    Ok(())
}

/// Writes a map key (it must be a str: `what` names it in the error) and
/// says which known field it is.
fn write_key(k: Bound<'_, PyAny>, what: &str, out: &mut Vec<u8>) -> PyResult<Name> {
    let k = k.cast_into::<PyString>().map_err(|k| {
        errors::encode_error(format!(
            "{what} must be str, not {}",
            type_name(&k.into_inner())
        ))
    })?;
    with_utf8(&k, |name| {
        write_str_bytes(out, name)?;
        Ok(name_of(name))
    })
}

/// vuer's client: a float `ts` (seconds) goes out as `int(ts * 1000)`;
/// anything else as it is.
fn write_ts(v: &Bound<'_, PyAny>, out: &mut Vec<u8>) -> PyResult<()> {
    if let Ok(f) = v.cast::<PyFloat>() {
        let ms = (f.value() * 1000.0).trunc();
        if !ms.is_finite() || ms < i64::MIN as f64 || ms >= i64::MAX as f64 {
            return Err(PyValueError::new_err(format!(
                "the event's ts ({}) is not a time",
                f.value()
            )));
        }
        rmp::encode::write_sint(out, ms as i64).expect("a Vec does not fail");
        return Ok(());
    }
    pack(v, out)
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

pub(crate) fn type_name(obj: &Bound<'_, PyAny>) -> String {
    obj.get_type()
        .name()
        .map(|n| n.to_string())
        .unwrap_or_else(|_| "?".into())
}

fn not_an_event(obj: &Bound<'_, PyAny>) -> PyErr {
    errors::encode_error(format!(
        "Expected ClientEvent (an object with an etype, or a dict with an 'etype'), got {}",
        type_name(obj)
    ))
}
