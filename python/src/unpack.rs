//! msgpack to Python objects, as `msgpack.unpackb(msg, raw=False)` gives
//! them (what `vuer.VuerClient.recv` builds its events from): str as `str`,
//! bin as `bytes`, arrays as lists, maps as dicts, float32 and float64 as
//! `float`. An extension value becomes a `(code, bytes)` tuple (Vuer sends
//! none). Nesting is bounded like msgpack-python's (511 levels).

use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyList, PyString, PyTuple};

const NEST_LIMIT: usize = 511;

struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

fn truncated() -> PyErr {
    PyValueError::new_err("truncated msgpack message")
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> PyResult<&'a [u8]> {
        let end = self.pos.checked_add(n).ok_or_else(truncated)?;
        let s = self.buf.get(self.pos..end).ok_or_else(truncated)?;
        self.pos = end;
        Ok(s)
    }
    fn byte(&mut self) -> PyResult<u8> {
        Ok(self.take(1)?[0])
    }
    fn be(&mut self, n: usize) -> PyResult<u64> {
        Ok(self
            .take(n)?
            .iter()
            .fold(0u64, |a, b| (a << 8) | u64::from(*b)))
    }
}

/// Decodes one msgpack object (the whole of `buf`).
pub(crate) fn unpack<'py>(py: Python<'py>, buf: &[u8]) -> PyResult<Bound<'py, PyAny>> {
    let mut r = Reader { buf, pos: 0 };
    let v = read(py, &mut r, 0)?;
    if r.pos != buf.len() {
        return Err(PyValueError::new_err(
            "extra data after the msgpack message",
        ));
    }
    Ok(v)
}

fn read<'py>(py: Python<'py>, r: &mut Reader<'_>, depth: usize) -> PyResult<Bound<'py, PyAny>> {
    if depth > NEST_LIMIT {
        return Err(PyValueError::new_err("msgpack nesting too deep"));
    }
    let m = r.byte()?;
    let any = |v: Bound<'py, PyAny>| Ok(v);
    match m {
        0x00..=0x7f => any(m.into_pyobject(py)?.into_any()),
        0xe0..=0xff => any((m as i8).into_pyobject(py)?.into_any()),
        0x80..=0x8f => map(py, r, usize::from(m & 0x0f), depth),
        0x90..=0x9f => array(py, r, usize::from(m & 0x0f), depth),
        0xa0..=0xbf => string(py, r, usize::from(m & 0x1f)),
        0xc0 => any(py.None().into_bound(py)),
        0xc2 => any(false.into_pyobject(py)?.to_owned().into_any()),
        0xc3 => any(true.into_pyobject(py)?.to_owned().into_any()),
        0xc4..=0xc6 => {
            let n = r.be(1 << (m - 0xc4))? as usize;
            any(PyBytes::new(py, r.take(n)?).into_any())
        }
        0xc7..=0xc9 => {
            let n = r.be(1 << (m - 0xc7))? as usize;
            ext(py, r, n)
        }
        0xca => {
            let b = r.take(4)?;
            let v = f32::from_be_bytes([b[0], b[1], b[2], b[3]]);
            any(f64::from(v).into_pyobject(py)?.into_any())
        }
        0xcb => any(f64::from_bits(r.be(8)?).into_pyobject(py)?.into_any()),
        0xcc..=0xcf => any(r.be(1 << (m - 0xcc))?.into_pyobject(py)?.into_any()),
        0xd0 => any((r.be(1)? as u8 as i8).into_pyobject(py)?.into_any()),
        0xd1 => any((r.be(2)? as u16 as i16).into_pyobject(py)?.into_any()),
        0xd2 => any((r.be(4)? as u32 as i32).into_pyobject(py)?.into_any()),
        0xd3 => any((r.be(8)? as i64).into_pyobject(py)?.into_any()),
        0xd4..=0xd8 => ext(py, r, 1 << (m - 0xd4)),
        0xd9..=0xdb => {
            let n = r.be(1 << (m - 0xd9))? as usize;
            string(py, r, n)
        }
        0xdc | 0xdd => {
            let n = r.be(2 << (m - 0xdc))? as usize;
            array(py, r, n, depth)
        }
        0xde | 0xdf => {
            let n = r.be(2 << (m - 0xde))? as usize;
            map(py, r, n, depth)
        }
        0xc1 => Err(PyValueError::new_err("invalid msgpack byte 0xc1")),
    }
}

fn string<'py>(py: Python<'py>, r: &mut Reader<'_>, n: usize) -> PyResult<Bound<'py, PyAny>> {
    let b = r.take(n)?;
    let s = std::str::from_utf8(b)
        .map_err(|e| PyValueError::new_err(format!("invalid UTF-8 in a msgpack str: {e}")))?;
    Ok(PyString::new(py, s).into_any())
}

fn ext<'py>(py: Python<'py>, r: &mut Reader<'_>, n: usize) -> PyResult<Bound<'py, PyAny>> {
    let code = r.byte()? as i8;
    let data = PyBytes::new(py, r.take(n)?);
    Ok(PyTuple::new(py, [code.into_pyobject(py)?.into_any(), data.into_any()])?.into_any())
}

fn array<'py>(
    py: Python<'py>,
    r: &mut Reader<'_>,
    n: usize,
    depth: usize,
) -> PyResult<Bound<'py, PyAny>> {
    // Every element takes at least a byte: a length beyond what is left is
    // a lie, refused before anything is allocated for it.
    if n > r.buf.len() - r.pos {
        return Err(truncated());
    }
    let list = PyList::empty(py);
    for _ in 0..n {
        list.append(read(py, r, depth + 1)?)?;
    }
    Ok(list.into_any())
}

fn map<'py>(
    py: Python<'py>,
    r: &mut Reader<'_>,
    n: usize,
    depth: usize,
) -> PyResult<Bound<'py, PyAny>> {
    if n > (r.buf.len() - r.pos) / 2 {
        return Err(truncated());
    }
    let d = PyDict::new(py);
    for _ in 0..n {
        let k = read(py, r, depth + 1)?;
        let v = read(py, r, depth + 1)?;
        d.set_item(k, v)?;
    }
    Ok(d.into_any())
}
