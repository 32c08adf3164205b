//! The native half of `vuer_client.VuerClient`: one Rust [`VuerClient`]
//! per connection, and the `send` object (`client.send(e)`,
//! `client.send @ e`, `await client.send @ e`).
//!
//! # Who owns what
//! * [`Slot`] owns the current connection (`Arc<Conn>`), behind a
//!   read-write lock written only by `connect` (a reconnect by the Rust
//!   client keeps the same `Conn`). Publishing threads take the read lock
//!   for a clone of the `Arc`, then release it; they never hold it across
//!   the hand-off.
//! * [`Conn`] owns the Rust client (its tasks run on the package's tokio
//!   runtime), a [`Publisher`] for the hand-off, and the subscription that
//!   `recv` reads, behind an async mutex (one reader at a time).
//! * The ring, the socket and the inbound queue are the Rust client's, with
//!   the ownership its own docs state.
//!
//! # Cost of a call (why `send` usually returns a finished awaitable)
//! `await client.send(e)` encodes `e` on the calling thread, then hands the
//! message to the ring with the GIL released. When the ring has room (the
//! usual case) the call returns a shared, already-finished awaitable: the
//! `await` costs one `__next__`, no asyncio future, no task and no wake-up
//! from another thread. Only when the ring is full does it return an
//! asyncio future that the tokio side completes when room is made
//! (backpressure), at the price of a cross-thread wake-up of the event loop
//! (tens of microseconds: more than vuer's whole send, so it must not be
//! the common path). Measured in `python/bench/bench_send.py`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use parking_lot::{Mutex, RwLock};
use pyo3::exceptions::{PyStopIteration, PyValueError};
use pyo3::prelude::*;
use pyo3::types::PyDict;
use vuer_client::{
    ClientBuilder, PublishError, Publisher, RawEvent, Reconnect, ServerEvent, Subscription, Value,
    VuerClient,
};

use crate::errors::{self, Failure};
use crate::event::encode_event;
use crate::pack::pack;
use crate::unpack::unpack;

/// The current connection, if any. See the module doc for ownership.
#[derive(Default)]
pub(crate) struct Slot {
    conn: RwLock<Option<Arc<Conn>>>,
    /// `client.send @ e` calls whose event was refused (queue full, client
    /// closed, too large): never raised (the `@` form cannot be awaited),
    /// so counted here and logged.
    fire_errors: AtomicU64,
    last_fire_error: Mutex<Option<String>>,
}

pub(crate) struct Conn {
    client: VuerClient,
    publisher: Publisher,
    /// What `recv` reads. Its lock is held from the moment a `recv` starts
    /// waiting until the loop has handed its event to Python or put it
    /// back in `returned` (a `recv` cancelled in between), so events come
    /// out once each and in order.
    inbox: Arc<tokio::sync::Mutex<Subscription>>,
    /// Events taken for a `recv` that was cancelled before it got them;
    /// read first. Only touched with `inbox` locked.
    returned: Arc<parking_lot::Mutex<std::collections::VecDeque<ServerEvent>>>,
}

impl Slot {
    fn get(&self) -> PyResult<Arc<Conn>> {
        self.conn.read().clone().ok_or_else(errors::not_connected)
    }
}

/// Encodes a Python event into one validated message.
fn message(event: &Bound<'_, PyAny>) -> PyResult<RawEvent> {
    let mut out = Vec::with_capacity(64);
    encode_event(event, &mut out)?;
    RawEvent::from_msgpack(Bytes::from(out))
        .map_err(|e| errors::encode_error(format!("not a Vuer event: {e}")))
}

fn seconds(name: &str, s: f64) -> PyResult<Duration> {
    Duration::try_from_secs_f64(s).map_err(|_| {
        PyValueError::new_err(format!("{name} must be a number of seconds >= 0, not {s}"))
    })
}

/// The options of `VuerClient(...)` that reach the Rust builder.
#[derive(FromPyObject)]
#[pyo3(from_item_all)]
pub(crate) struct Options {
    uri: String,
    max_size: Option<usize>,
    ssl_verify: Option<bool>,
    headers: Vec<(String, String)>,
    init: Option<Py<PyDict>>,
    reconnect: bool,
    reconnect_max_attempts: Option<u32>,
    reconnect_max_delay: Option<f64>,
    retry_first_connect: bool,
    restore_state: bool,
    max_queued_events: Option<usize>,
    max_queued_bytes: Option<usize>,
    max_age: Option<f64>,
    connect_timeout: Option<f64>,
    close_timeout: Option<f64>,
}

fn builder(py: Python<'_>, o: Options) -> PyResult<ClientBuilder> {
    let mut b = VuerClient::builder().uri(o.uri);
    if let Some(n) = o.max_size {
        b = b.max_inbound_message(n);
    }
    if let Some(v) = o.ssl_verify {
        b = b.tls_verify(v);
    }
    for (k, v) in o.headers {
        b = b.header(k, v);
    }
    if let Some(init) = o.init {
        let mut buf = Vec::new();
        pack(init.bind(py).as_any(), &mut buf)?;
        match Value::from_msgpack(&buf) {
            Ok(Value::Map(fields)) => b = b.init_value(fields),
            _ => {
                return Err(PyValueError::new_err(
                    "the INIT value must be a dict with str keys",
                ))
            }
        }
    }
    if o.reconnect {
        let mut policy = Reconnect {
            max_attempts: o.reconnect_max_attempts,
            ..Reconnect::default()
        };
        if let Some(d) = o.reconnect_max_delay {
            policy.max_delay = seconds("reconnect_max_delay", d)?;
        }
        b = b.reconnect(Some(policy));
    } else {
        b = b.reconnect(None);
    }
    b = b
        .retry_first_connect(o.retry_first_connect)
        .restore_state(o.restore_state);
    if let Some(n) = o.max_queued_events {
        b = b.max_queued_events(n);
    }
    if let Some(n) = o.max_queued_bytes {
        b = b.max_queued_bytes(n);
    }
    if let Some(s) = o.max_age {
        b = b.max_age(seconds("max_age", s)?);
    }
    if let Some(s) = o.connect_timeout {
        b = b.connect_timeout(seconds("connect_timeout", s)?);
    }
    if let Some(s) = o.close_timeout {
        b = b.close_timeout(seconds("close_timeout", s)?);
    }
    Ok(b)
}

/// A received event's message as a dict (`unpackb(msg, raw=False)`),
/// with the inbox lock held until it is handed over (see [`Conn::inbox`]).
struct Payload {
    event: Option<ServerEvent>,
    _inbox: tokio::sync::OwnedMutexGuard<Subscription>,
}

impl<'py> IntoPyObject<'py> for Payload {
    type Target = PyAny;
    type Output = Bound<'py, PyAny>;
    type Error = PyErr;
    fn into_pyobject(self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        match self.event {
            None => Ok(py.None().into_bound(py)),
            Some(ev) => unpack(py, ev.as_msgpack()),
        }
    }
}

/// The native client. `vuer_client.VuerClient` wraps it.
#[pyclass(module = "vuer_client._native", frozen)]
pub(crate) struct Native {
    slot: Arc<Slot>,
}

#[pymethods]
impl Native {
    #[new]
    fn new() -> Self {
        Native {
            slot: Arc::new(Slot::default()),
        }
    }

    /// The `send` object sharing this client's connection.
    fn sender(&self, py: Python<'_>) -> PyResult<Sender> {
        Ok(Sender {
            slot: self.slot.clone(),
            ready: Py::new(py, Ready)?,
        })
    }

    /// Connects (an awaitable). Replaces a previous, closed connection.
    fn connect<'py>(&self, py: Python<'py>, options: Options) -> PyResult<Bound<'py, PyAny>> {
        let b = builder(py, options)?;
        let slot = self.slot.clone();
        crate::bridge::spawn(py, async move {
            let client = b.connect().await.map_err(Failure::Connect)?;
            let conn = Conn {
                publisher: client.publisher(),
                inbox: Arc::new(tokio::sync::Mutex::new(client.subscribe("*"))),
                returned: Arc::default(),
                client,
            };
            *slot.conn.write() = Some(Arc::new(conn));
            Ok(())
        })
    }

    /// Queues `event` without waiting: latest value wins per `(etype,
    /// key)` unless `reliable`. Raises when it is refused.
    #[pyo3(signature = (event, reliable = false))]
    fn publish(&self, py: Python<'_>, event: &Bound<'_, PyAny>, reliable: bool) -> PyResult<()> {
        let conn = self.slot.get()?;
        let msg = message(event)?;
        let msg = if reliable { msg } else { msg.latest() };
        py.detach(|| conn.publisher.publish(&msg))
            .map_err(errors::publish_error)
    }

    /// The next event's message as a dict, or `None` (timeout, or closed
    /// and drained). An awaitable.
    #[pyo3(signature = (timeout = None))]
    fn recv<'py>(&self, py: Python<'py>, timeout: Option<f64>) -> PyResult<Bound<'py, PyAny>> {
        let conn = self.slot.get()?;
        let timeout = timeout.map(|t| seconds("timeout", t)).transpose()?;
        let returned = conn.returned.clone();
        crate::bridge::spawn_undoable(
            py,
            async move {
                let mut inbox = conn.inbox.clone().lock_owned().await;
                if let Some(ev) = conn.returned.lock().pop_front() {
                    return Ok(Payload {
                        event: Some(ev),
                        _inbox: inbox,
                    });
                }
                let ev = match timeout {
                    Some(t) => inbox.recv_timeout(t).await,
                    None => inbox.recv().await,
                };
                Ok(Payload {
                    event: ev,
                    _inbox: inbox,
                })
            },
            move |p: Payload| {
                if let Some(ev) = p.event {
                    returned.lock().push_front(ev);
                }
                // The inbox lock is released here, after the event is back.
            },
        )
    }

    /// Waits until everything queued has been written (an awaitable).
    fn flush<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let conn = self.slot.get()?;
        crate::bridge::spawn(py, async move {
            conn.publisher.flush().await.map_err(Failure::Publish)
        })
    }

    /// Closes (an awaitable): delivers what is queued, then closes. Raises
    /// `DeliveryError` if accepted events were not delivered; otherwise the
    /// result is `None`, or, when the close was not clean (the server gone,
    /// say) though nothing was lost, a str saying why.
    fn close<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let conn = self.slot.conn.read().clone();
        crate::bridge::spawn(py, async move {
            let Some(conn) = conn else { return Ok(None) };
            match conn.client.close().await {
                Ok(()) => Ok(None),
                Err(e) if e.unsent + e.unconfirmed > 0 => Err(Failure::Close(e)),
                Err(e) => Ok(Some(e.to_string())),
            }
        })
    }

    /// True while connected (false while reconnecting, or once closed).
    #[getter]
    fn connected(&self) -> bool {
        self.slot
            .conn
            .read()
            .as_ref()
            .is_some_and(|c| c.client.is_connected())
    }

    /// The connection's state: "connected", "reconnecting", "closed", ...
    fn state(&self) -> String {
        match self.slot.conn.read().as_ref() {
            None => "not connected".to_string(),
            Some(c) => c.client.state().to_string(),
        }
    }

    /// The URI as it may be shown (credentials and query redacted).
    #[getter]
    fn shown_uri(&self) -> Option<String> {
        self.slot
            .conn
            .read()
            .as_ref()
            .map(|c| c.client.uri().to_string())
    }

    /// The counters, as a dict.
    fn stats<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let d = PyDict::new(py);
        d.set_item(
            "send_at_errors",
            self.slot.fire_errors.load(Ordering::Relaxed),
        )?;
        d.set_item(
            "send_at_last_error",
            self.slot.last_fire_error.lock().clone(),
        )?;
        let conn = self.slot.conn.read().clone();
        let Some(conn) = conn else {
            d.set_item("connected", false)?;
            return Ok(d);
        };
        let s = conn.client.stats();
        macro_rules! put {
            ($($f:ident),*) => { $( d.set_item(stringify!($f), s.$f)?; )* };
        }
        put!(
            published,
            sent,
            coalesced,
            expired,
            rejected,
            dropped,
            pending,
            queue_depth,
            queue_bytes,
            bytes_sent,
            frames_sent,
            flushes,
            direct_writes,
            frames_per_flush,
            received,
            received_bytes,
            decode_errors,
            inbound_dropped,
            inbound_queued,
            rpc_answered,
            unconfirmed,
            retained_evicted,
            unconfirmed_lost,
            resent,
            pings_sent,
            pongs_received,
            connects,
            disconnects,
            pipe_bytes,
            kernel_queued_bytes,
            server_read_rate,
            pacing_holds,
            connected
        );
        d.set_item("downtime", s.downtime.as_secs_f64())?;
        d.set_item("age_max", s.age_max.as_secs_f64())?;
        d.set_item("pacing_hold_time", s.pacing_hold_time.as_secs_f64())?;
        d.set_item("rtt", s.rtt.as_secs_f64())?;
        d.set_item("last_error", s.last_error)?;
        Ok(d)
    }

    /// The inbound events whose etype matches `pattern` (globs), taken
    /// from `recv`: for the server's RPC requests (`answer_rpc` in Python).
    fn subscribe(&self, pattern: &str) -> PyResult<Inbox> {
        let conn = self.slot.get()?;
        Ok(Inbox {
            sub: Arc::new(tokio::sync::Mutex::new(conn.client.subscribe(pattern))),
        })
    }

    /// Sends the answer to an RPC request (reliably): etype = the request's
    /// `rtype` (or `<etype>_RESPONSE@<uuid>`), its `key` echoed.
    fn respond(&self, request: &Request, value: &Bound<'_, PyAny>) -> PyResult<()> {
        let conn = self.slot.get()?;
        let mut buf = Vec::new();
        pack(value, &mut buf)?;
        let value = Value::from_msgpack(&buf)
            .map_err(|e| errors::encode_error(format!("cannot send this answer: {e}")))?;
        conn.client
            .respond(&request.event, value)
            .map_err(errors::publish_error)
    }
}

/// A subscription's events, one awaited at a time.
#[pyclass(module = "vuer_client._native", frozen)]
pub(crate) struct Inbox {
    sub: Arc<tokio::sync::Mutex<Subscription>>,
}

#[pymethods]
impl Inbox {
    /// The next matching event (a `Request`), or `None` once closed.
    fn recv<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let sub = self.sub.clone();
        crate::bridge::spawn(py, async move {
            let ev = sub.lock().await.recv().await;
            Ok(ev.map(|event| Request { event }))
        })
    }
}

/// An inbound event kept whole, to answer it.
#[pyclass(module = "vuer_client._native", frozen)]
pub(crate) struct Request {
    event: ServerEvent,
}

#[pymethods]
impl Request {
    /// The message as a dict.
    #[getter]
    fn payload<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        unpack(py, self.event.as_msgpack())
    }
}

fn log_warning(py: Python<'_>, msg: &str) {
    let _ = py
        .import("logging")
        .and_then(|l| l.call_method1("getLogger", ("vuer_client",)))
        .and_then(|l| l.call_method1("warning", ("%s", msg)));
}

/// `client.send`: `await client.send(e)` (waits for room),
/// `client.send @ e` (never waits; a refusal is counted and logged), and
/// `await client.send @ e` (`await client.send` gives the object back).
#[pyclass(module = "vuer_client._native", frozen)]
pub(crate) struct Sender {
    slot: Arc<Slot>,
    ready: Py<Ready>,
}

#[pymethods]
impl Sender {
    /// Queues `event` reliably; returns an awaitable that is already done
    /// when there was room, else one that waits for room.
    fn __call__<'py>(
        &self,
        py: Python<'py>,
        event: &Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let conn = self.slot.get()?;
        let msg = message(event)?;
        match py.detach(|| conn.publisher.publish(&msg)) {
            Ok(()) => Ok(self.ready.bind(py).clone().into_any()),
            Err(PublishError::Full { .. }) => crate::bridge::spawn(py, async move {
                conn.publisher.send(&msg).await.map_err(Failure::Publish)
            }),
            Err(e) => Err(errors::publish_error(e)),
        }
    }

    /// Fire and forget: queues `event` reliably, never waits. A refused
    /// event is counted (`stats()["send_at_errors"]`) and logged; an object
    /// that is not an event raises at once.
    fn __matmul__(&self, py: Python<'_>, event: &Bound<'_, PyAny>) -> PyResult<()> {
        let conn = self.slot.get()?;
        let msg = message(event)?;
        if let Err(e) = py.detach(|| conn.publisher.publish(&msg)) {
            self.slot.fire_errors.fetch_add(1, Ordering::Relaxed);
            let text = format!("client.send @ {}: event not sent: {e}", msg.etype());
            *self.slot.last_fire_error.lock() = Some(text.clone());
            log_warning(py, &text);
        }
        Ok(())
    }

    /// `await client.send` is the object itself, so that `await client.send
    /// @ e` (as vuer's docs write it) sends.
    fn __await__(slf: Py<Self>, py: Python<'_>) -> PyResult<Resolved> {
        Ok(Resolved {
            value: slf.into_any().clone_ref(py),
        })
    }
}

/// An awaitable that is already done, with result `None`.
#[pyclass(module = "vuer_client._native", frozen)]
pub(crate) struct Ready;

#[pymethods]
impl Ready {
    fn __await__(slf: PyRef<'_, Self>) -> PyRef<'_, Self> {
        slf
    }
    fn __iter__(slf: PyRef<'_, Self>) -> PyRef<'_, Self> {
        slf
    }
    fn __next__(&self) -> Option<()> {
        None
    }
}

/// An awaitable that is already done, with a result.
#[pyclass(module = "vuer_client._native", frozen)]
pub(crate) struct Resolved {
    value: Py<PyAny>,
}

#[pymethods]
impl Resolved {
    fn __iter__(slf: PyRef<'_, Self>) -> PyRef<'_, Self> {
        slf
    }
    fn __next__(&self, py: Python<'_>) -> PyResult<()> {
        Err(PyStopIteration::new_err((self.value.clone_ref(py),)))
    }
}
