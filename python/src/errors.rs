//! The Rust client's errors as the package's Python exceptions.
//!
//! The classes are defined in Python (`vuer_client/_errors.py`), because
//! they derive from two bases (`ConnectError` is also a `ConnectionError`,
//! `EncodeError` also a `TypeError`, ...), so that code written for
//! `vuer.VuerClient`'s built-in exceptions keeps catching them. They are
//! looked up once.

use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::PyType;
use vuer_client::{CloseError, ConnectError, PublishError};

static MODULE: PyOnceLock<Py<PyModule>> = PyOnceLock::new();

fn class<'py>(py: Python<'py>, name: &str) -> Bound<'py, PyType> {
    let module = MODULE
        .get_or_try_init(py, || -> PyResult<_> {
            Ok(py.import("vuer_client._errors")?.unbind())
        })
        .expect("vuer_client._errors is part of the package");
    module
        .bind(py)
        .getattr(name)
        .and_then(|c| c.cast_into::<PyType>().map_err(Into::into))
        .expect("the exception classes are defined in vuer_client._errors")
}

fn new_err(name: &str, msg: String) -> PyErr {
    Python::attach(|py| PyErr::from_type(class(py, name), msg))
}

/// Not an event, or a value msgpack cannot carry (`TypeError` too).
pub(crate) fn encode_error(msg: String) -> PyErr {
    new_err("EncodeError", msg)
}

/// The client has not connected yet (`ConnectionError` too).
pub(crate) fn not_connected() -> PyErr {
    new_err(
        "NotConnectedError",
        "Not connected to server. Call connect() first.".to_string(),
    )
}

/// An error made on a tokio thread, turned into a Python exception on the
/// loop's thread (no GIL on tokio threads: see `bridge`).
pub(crate) enum Failure {
    Connect(ConnectError),
    Publish(PublishError),
    Close(CloseError),
}

impl Failure {
    pub(crate) fn into_pyerr(self) -> PyErr {
        match self {
            Failure::Connect(e) => connect_error(e),
            Failure::Publish(e) => publish_error(e),
            Failure::Close(e) => close_error(&e),
        }
    }
}

pub(crate) fn connect_error(e: ConnectError) -> PyErr {
    new_err("ConnectError", e.to_string())
}

pub(crate) fn publish_error(e: PublishError) -> PyErr {
    match e {
        PublishError::Full { .. } => new_err("QueueFullError", e.to_string()),
        PublishError::TooLarge { .. } | PublishError::LargerThanQueue { .. } => {
            new_err("TooLargeError", e.to_string())
        }
        PublishError::Encode(_) => new_err("EncodeError", e.to_string()),
        PublishError::Closed(_) => new_err("ClosedError", e.to_string()),
        _ => new_err("VuerClientError", e.to_string()),
    }
}

pub(crate) fn close_error(e: &CloseError) -> PyErr {
    Python::attach(|py| {
        let err = PyErr::from_type(class(py, "DeliveryError"), e.to_string());
        let v = err.value(py);
        let _ = v.setattr("unsent", e.unsent);
        let _ = v.setattr("unconfirmed", e.unconfirmed);
        let _ = v.setattr("reason", e.reason.to_string());
        err
    })
}
