//! Python objects to msgpack, byte for byte as `vuer.VuerClient` sends them.
//!
//! vuer 0.1.6 sends `packb(event._serialize(), use_single_float=True,
//! use_bin_type=True, default=_default_encoder)` after turning a float `ts`
//! into integer milliseconds (`int(ts * 1000)`), where `_serialize()` is
//! `{**self.__dict__, "etype": self.etype, "value": serializer(self.value)}`.
//! This module does the same in one pass over the objects, without building
//! the intermediate dict or calling Python code (except an element's own
//! `_serialize()`, `ndarray.tolist()` and numpy scalars' `item()`, as vuer
//! does):
//!
//! * the map's entries are the instance's `__dict__` in its order, then
//!   `etype` and `value` when the dict has none (a subclass with class
//!   attributes: `{ts, value, etype}`; the keyword form
//!   `ClientEvent(etype=..., value=...)`: `{ts, etype, value}`);
//! * `value` goes through vuer's `serializer` (an object with `_serialize`
//!   is replaced by its result; lists and tuples are walked for such
//!   objects), everything else straight to msgpack;
//! * msgpack as msgpack-python writes it: the smallest integer form
//!   (unsigned for non-negative values), every float as float32, `str` as
//!   str, `bytes`/`bytearray`/`memoryview` as bin, tuples as arrays, dict
//!   and list subclasses as maps and arrays, numpy arrays and scalars as
//!   their `tolist()`/`item()`, anything else a `TypeError`; nesting deeper
//!   than msgpack-python's limit (511) a `ValueError`.
//!
//! The golden vectors (`tests/data/vectors.json`, made by the real Python
//! package) and `python/tests/test_wire.py` (our bytes against vuer's
//! `packb` for many events) hold it to that.
//!
//! Written by hand rather than through serde: a `Serialize` impl for
//! Python objects would need the same type dispatch, plus serde's
//! indirection, and msgpack-python's choices (float32 everywhere, bin for
//! bytes) are options rmp-serde does not all have. The primitives are
//! rmp's.

use std::ffi::c_char;
use std::sync::OnceLock;

use pyo3::exceptions::{PyOverflowError, PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{
    PyBool, PyByteArray, PyBytes, PyDict, PyFloat, PyInt, PyList, PyMemoryView, PyString, PyTuple,
    PyType,
};

use crate::errors;

/// msgpack-python's `DEFAULT_RECURSE_LIMIT`.
const NEST_LIMIT: usize = 511;

/// numpy's types, looked up once numpy has been imported by someone (the
/// module is never imported here: a user without numpy pays nothing).
struct Numpy {
    ndarray: Py<PyType>,
    integer: Py<PyType>,
    floating: Py<PyType>,
}

static NUMPY: PyOnceLock<Option<Numpy>> = PyOnceLock::new();

fn numpy(py: Python<'_>) -> Option<&'static Numpy> {
    if let Some(n) = NUMPY.get(py) {
        return n.as_ref();
    }
    // Only once numpy is loaded (an array cannot exist before): until
    // then, look again next time.
    let loaded = py
        .import("sys")
        .and_then(|s| s.getattr("modules"))
        .and_then(|m| m.contains("numpy"))
        .unwrap_or(false);
    if !loaded {
        return None;
    }
    NUMPY
        .get_or_init(py, || {
            let np = py.import("numpy").ok()?;
            let ty = |name: &str| -> Option<Py<PyType>> {
                Some(np.getattr(name).ok()?.cast_into::<PyType>().ok()?.unbind())
            };
            Some(Numpy {
                ndarray: ty("ndarray")?,
                integer: ty("integer")?,
                floating: ty("floating")?,
            })
        })
        .as_ref()
}

/// Appends `obj` as msgpack, as `packb(obj, use_single_float=True,
/// use_bin_type=True, default=vuer's _default_encoder)` would.
pub(crate) fn pack(obj: &Bound<'_, PyAny>, out: &mut Vec<u8>) -> PyResult<()> {
    pack_at(obj, out, 0, false)
}

/// Appends vuer's `serializer(value)` as msgpack.
pub(crate) fn pack_serialized(obj: &Bound<'_, PyAny>, out: &mut Vec<u8>) -> PyResult<()> {
    pack_at(obj, out, 0, true)
}

fn pack_at(
    obj: &Bound<'_, PyAny>,
    out: &mut Vec<u8>,
    depth: usize,
    serialize: bool,
) -> PyResult<()> {
    if depth > NEST_LIMIT {
        return Err(PyValueError::new_err("recursion limit exceeded"));
    }
    // The common exact types first: none of them can have `_serialize`.
    if obj.is_none() {
        out.push(0xc0);
        return Ok(());
    }
    if let Ok(f) = obj.cast_exact::<PyFloat>() {
        return write_f32(out, f.value());
    }
    if let Ok(s) = obj.cast_exact::<PyString>() {
        write_str(out, s)?;
        return Ok(());
    }
    if obj.is_exact_instance_of::<PyBool>() {
        out.push(if obj.is_truthy()? { 0xc3 } else { 0xc2 });
        return Ok(());
    }
    if obj.is_exact_instance_of::<PyInt>() {
        return write_int(obj, out);
    }
    if serialize {
        // vuer's serializer: an object's own `_serialize()` first (exact
        // builtin containers have none: no attribute lookup for them), then
        // lists and tuples walked; anything else packed as it is.
        let exact = obj.cast_exact::<PyList>().is_ok()
            || obj.cast_exact::<PyTuple>().is_ok()
            || obj.cast_exact::<PyDict>().is_ok()
            || obj.cast_exact::<PyBytes>().is_ok();
        if !exact {
            if let Some(s) = own_serialize(obj)? {
                return pack_at(&s, out, depth + 1, false);
            }
        }
        if obj.cast::<PyList>().is_ok() || obj.cast::<PyTuple>().is_ok() {
            return pack_sequence(obj, out, depth, true);
        }
    }
    // msgpack-python's order of checks (subclasses included).
    if obj.is_instance_of::<PyBool>() {
        out.push(if obj.is_truthy()? { 0xc3 } else { 0xc2 });
        return Ok(());
    }
    if obj.is_instance_of::<PyInt>() {
        return write_int(obj, out);
    }
    if let Ok(f) = obj.cast::<PyFloat>() {
        return write_f32(out, f.value());
    }
    if let Ok(b) = obj.cast::<PyBytes>() {
        write_bin(out, b.as_bytes())?;
        return Ok(());
    }
    if let Ok(b) = obj.cast::<PyByteArray>() {
        // Copied out under the GIL: nothing can resize it meanwhile.
        write_bin(out, &b.to_vec())?;
        return Ok(());
    }
    if let Ok(s) = obj.cast::<PyString>() {
        write_str(out, s)?;
        return Ok(());
    }
    if let Ok(d) = obj.cast::<PyDict>() {
        write_len(out, d.len(), [0x80, 0xde, 0xdf], 15)?;
        for (k, v) in d.iter() {
            pack_at(&k, out, depth + 1, false)?;
            pack_at(&v, out, depth + 1, false)?;
        }
        return Ok(());
    }
    if obj.cast::<PyList>().is_ok() || obj.cast::<PyTuple>().is_ok() {
        return pack_sequence(obj, out, depth, false);
    }
    if obj.cast::<PyMemoryView>().is_ok() {
        let bytes: Vec<u8> = obj.call_method0("tobytes")?.extract()?;
        write_bin(out, &bytes)?;
        return Ok(());
    }
    // vuer's `_default_encoder`: numpy arrays and scalars.
    if let Some(np) = numpy(obj.py()) {
        if obj.is_instance(np.ndarray.bind(obj.py()))? {
            let list = obj.call_method0("tolist")?;
            return pack_at(&list, out, depth + 1, false);
        }
        if obj.is_instance(np.integer.bind(obj.py()))?
            || obj.is_instance(np.floating.bind(obj.py()))?
        {
            let item = obj.call_method0("item")?;
            return pack_at(&item, out, depth + 1, false);
        }
    }
    Err(errors::encode_error(format!(
        "Cannot serialize object of type {}",
        obj.get_type()
            .name()
            .map(|n| n.to_string())
            .unwrap_or_else(|_| "?".into())
    )))
}

fn pack_sequence(
    obj: &Bound<'_, PyAny>,
    out: &mut Vec<u8>,
    depth: usize,
    serialize: bool,
) -> PyResult<()> {
    if let Ok(l) = obj.cast::<PyList>() {
        write_len(out, l.len(), [0x90, 0xdc, 0xdd], 15)?;
        // A list can change size while a `_serialize()` runs: read each
        // item by index and stop where the header said.
        let n = l.len();
        for i in 0..n {
            let item = l.get_item(i).map_err(|_| {
                PyValueError::new_err("list changed size while it was being encoded")
            })?;
            pack_at(&item, out, depth + 1, serialize)?;
        }
        return Ok(());
    }
    let t = obj
        .cast::<PyTuple>()
        .map_err(|_| PyTypeError::new_err("not a sequence"))?;
    write_len(out, t.len(), [0x90, 0xdc, 0xdd], 15)?;
    for item in t.iter() {
        pack_at(&item, out, depth + 1, serialize)?;
    }
    Ok(())
}

/// `obj._serialize()` if `obj` has one.
fn own_serialize<'py>(obj: &Bound<'py, PyAny>) -> PyResult<Option<Bound<'py, PyAny>>> {
    static NAME: PyOnceLock<Py<PyString>> = PyOnceLock::new();
    let name = NAME.get_or_init(obj.py(), || {
        PyString::intern(obj.py(), "_serialize").unbind()
    });
    match obj.getattr_opt(name.bind(obj.py()))? {
        Some(f) => Ok(Some(f.call0()?)),
        None => Ok(None),
    }
}

fn write_int(obj: &Bound<'_, PyAny>, out: &mut Vec<u8>) -> PyResult<()> {
    if let Ok(v) = obj.extract::<i64>() {
        // rmp's write_sint picks msgpack-python's forms: positive fixint,
        // uint8..uint64 for non-negative values, int8..int64 below zero.
        rmp::encode::write_sint(out, v).expect("a Vec does not fail");
        return Ok(());
    }
    if let Ok(v) = obj.extract::<u64>() {
        rmp::encode::write_uint(out, v).expect("a Vec does not fail");
        return Ok(());
    }
    Err(PyOverflowError::new_err("Integer value out of range"))
}

/// Every float as float32, as `use_single_float=True`; a finite value
/// beyond float32's range is an `OverflowError`, as msgpack-python's
/// (CPython's `PyFloat_Pack4`).
fn write_f32(out: &mut Vec<u8>, v: f64) -> PyResult<()> {
    let f = v as f32;
    if f.is_infinite() && v.is_finite() {
        return Err(PyOverflowError::new_err(
            "float too large to pack with f format",
        ));
    }
    out.push(0xca);
    out.extend_from_slice(&f.to_be_bytes());
    Ok(())
}

fn write_str(out: &mut Vec<u8>, s: &Bound<'_, PyString>) -> PyResult<()> {
    with_utf8(s, |b| write_str_bytes(out, b))
}

type AsUtf8AndSize =
    unsafe extern "C" fn(*mut pyo3::ffi::PyObject, *mut pyo3::ffi::Py_ssize_t) -> *const c_char;

/// CPython's `PyUnicode_AsUTF8AndSize`, found at run time.
///
/// It is in the stable ABI only from 3.10, so the abi3-py39 build of PyO3
/// does not offer it, and `PyString::to_cow` then makes a bytes object per
/// string (`PyUnicode_AsUTF8String`): four or five allocations per event,
/// about half of the encoding's time (measured with perf on `publish`).
/// CPython has exported the function since 3.3 and caches the UTF-8 in the
/// str object, so it is looked up once with `dlsym` and used when present
/// (every CPython), `to_cow` otherwise.
fn as_utf8_and_size() -> Option<AsUtf8AndSize> {
    static F: OnceLock<Option<AsUtf8AndSize>> = OnceLock::new();
    *F.get_or_init(|| {
        // SAFETY: dlsym with a NUL-terminated name; the symbol, when
        // present, is CPython's function of that exact signature.
        unsafe {
            let p = libc::dlsym(libc::RTLD_DEFAULT, c"PyUnicode_AsUTF8AndSize".as_ptr());
            if p.is_null() {
                None
            } else {
                Some(std::mem::transmute::<*mut libc::c_void, AsUtf8AndSize>(p))
            }
        }
    })
}

/// Runs `f` on the UTF-8 bytes of `s` (without copying them when the
/// interpreter allows).
pub(crate) fn with_utf8<R>(
    s: &Bound<'_, PyString>,
    f: impl FnOnce(&[u8]) -> PyResult<R>,
) -> PyResult<R> {
    if let Some(as_utf8) = as_utf8_and_size() {
        let mut n: pyo3::ffi::Py_ssize_t = 0;
        // SAFETY: `s` is a live str (held by the Bound); the buffer it
        // returns is owned by the str and lives as long as it does.
        let p = unsafe { as_utf8(s.as_ptr(), &mut n) };
        if p.is_null() {
            // Not encodable (a lone surrogate): the exception is set.
            return Err(PyErr::fetch(s.py()));
        }
        // SAFETY: CPython guarantees `n` bytes at `p`.
        let bytes = unsafe { std::slice::from_raw_parts(p.cast::<u8>(), n as usize) };
        return f(bytes);
    }
    let text = s.to_cow()?;
    f(text.as_bytes())
}

pub(crate) fn write_str_bytes(out: &mut Vec<u8>, b: &[u8]) -> PyResult<()> {
    let n = b.len();
    if n < 32 {
        out.push(0xa0 | n as u8);
    } else if n <= 0xff {
        out.extend_from_slice(&[0xd9, n as u8]);
    } else {
        write_len(out, n, [0, 0xda, 0xdb], 0)?;
    }
    out.extend_from_slice(b);
    Ok(())
}

fn write_bin(out: &mut Vec<u8>, b: &[u8]) -> PyResult<()> {
    let n = b.len();
    if n <= 0xff {
        out.extend_from_slice(&[0xc4, n as u8]);
    } else if n <= 0xffff {
        out.push(0xc5);
        out.extend_from_slice(&(n as u16).to_be_bytes());
    } else if n <= u32::MAX as usize {
        out.push(0xc6);
        out.extend_from_slice(&(n as u32).to_be_bytes());
    } else {
        return Err(PyValueError::new_err("bytes object is too large"));
    }
    out.extend_from_slice(b);
    Ok(())
}

/// A map, array or str length: `fix | n` up to `fix_max`, else the 16- or
/// 32-bit form (`markers` = `[fix, 16-bit, 32-bit]`).
pub(crate) fn write_len(
    out: &mut Vec<u8>,
    n: usize,
    markers: [u8; 3],
    fix_max: usize,
) -> PyResult<()> {
    if n <= fix_max {
        out.push(markers[0] | n as u8);
    } else if n <= 0xffff {
        out.push(markers[1]);
        out.extend_from_slice(&(n as u16).to_be_bytes());
    } else if n <= u32::MAX as usize {
        out.push(markers[2]);
        out.extend_from_slice(&(n as u32).to_be_bytes());
    } else {
        return Err(PyValueError::new_err("object is too large for msgpack"));
    }
    Ok(())
}
