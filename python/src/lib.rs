//! `vuer_client._native`: the Rust half of the `vuer_client` Python
//! package (PyO3). The protocol, the queues and the connection are the
//! `vuer-client` crate's; this crate only turns Python events into its
//! messages (`event`, `pack`), its events back into Python (`unpack`), and
//! exposes the client to the Python half (`client`), which adds vuer's
//! `VuerClient` API (`vuer_client/_client.py`).

mod bridge;
mod client;
mod errors;
mod event;
mod pack;
mod unpack;

use pyo3::prelude::*;

/// Encodes `event` as the message `vuer.VuerClient` would send (bytes):
/// for tests and for users who want to see the bytes.
#[pyfunction]
fn encode(event: &Bound<'_, PyAny>) -> PyResult<Vec<u8>> {
    let mut out = Vec::with_capacity(64);
    event::encode_event(event, &mut out)?;
    Ok(out)
}

/// Decodes one msgpack message as `msgpack.unpackb(msg, raw=False)` does.
#[pyfunction]
fn decode<'py>(py: Python<'py>, message: &[u8]) -> PyResult<Bound<'py, PyAny>> {
    unpack::unpack(py, message)
}

#[pymodule]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<client::Native>()?;
    m.add_class::<client::Sender>()?;
    m.add_class::<client::Inbox>()?;
    m.add_class::<client::Request>()?;
    m.add_function(wrap_pyfunction!(encode, m)?)?;
    m.add_function(wrap_pyfunction!(decode, m)?)?;
    Ok(())
}
