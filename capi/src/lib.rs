//! The C API of vuer-client (`capi/include/vuer_client.h`, generated from
//! this file by cbindgen; `vuer_client.hpp` wraps it for C++17).
//!
//! # Design
//! * Opaque handles (`vuer_client`, `vuer_event`), created and freed by
//!   this library only.
//! * Every function returns a `vuer_status`; on an error other than
//!   `VUER_ERR_FULL` a message is kept for the calling thread
//!   (`vuer_last_error`). `VUER_ERR_FULL` sets none, so that a refused
//!   real-time publish stays allocation-free.
//! * No Rust panic crosses the boundary: each function runs under
//!   `catch_unwind`, and a panic becomes `VUER_ERR_PANIC` with its message.
//! * A `vuer_client` is the blocking client of the Rust crate
//!   (`vuer_client::blocking::VuerClient`, with its own one-thread runtime)
//!   plus a publisher: `vuer_publish_*` may be called from any number of
//!   threads at once, without a lock; `vuer_recv` takes the handle's
//!   receive lock (one receiver at a time).
//! * Real-time safety: with `vuer_options.realtime_poll_us` set,
//!   `vuer_publish_floats` neither allocates nor makes a system call once
//!   warm (the crate's `tests/realtime.rs` proves it for the same publish
//!   path under a seccomp filter; `capi/tests/examples.rs` counts it from
//!   C++ too).

#![allow(non_camel_case_types)]
// Every exported function checks its pointers for NULL; the caller's
// contract for the rest is in the header's comments.
#![allow(clippy::missing_safety_doc)]

use std::cell::RefCell;
use std::ffi::{c_char, CStr, CString};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Mutex;
use std::time::Duration;

use ::vuer_client::{
    blocking, ClientBuilder, ConnectionState, EventRef, PublishError, Publisher, Reconnect,
    ServerEvent,
};

/// Status of a call. `VUER_OK` is 0; anything else is an error, described
/// by `vuer_last_error()` (except `VUER_ERR_FULL` and `VUER_ERR_TIMEOUT`).
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum vuer_status {
    /// Success.
    VUER_OK = 0,
    /// A NULL pointer where one is required, a string that is not UTF-8, an
    /// invalid option.
    VUER_ERR_ARGUMENT = 1,
    /// The connection could not be made (refused, bad URI, TLS, timeout).
    VUER_ERR_CONNECT = 2,
    /// The outgoing queue is full: the event was not queued (retry, drop
    /// it, or use reliable sends with a larger queue). No message is set.
    VUER_ERR_FULL = 3,
    /// The client is closed (by `vuer_close`, or for good after the
    /// connection was lost).
    VUER_ERR_CLOSED = 4,
    /// The encoded event is larger than the outgoing limit (4 MiB) or the
    /// queue.
    VUER_ERR_TOO_LARGE = 5,
    /// The msgpack value is not one valid msgpack object.
    VUER_ERR_ENCODE = 6,
    /// Nothing arrived in time (`vuer_recv`, `vuer_flush`). No message is
    /// set.
    VUER_ERR_TIMEOUT = 7,
    /// `vuer_close` could not deliver every accepted event.
    VUER_ERR_DELIVERY = 8,
    /// A bug: a panic inside the library (the message says where).
    VUER_ERR_PANIC = 9,
}

/// Connection options. Initialize with `vuer_options_init`, then change
/// fields. Zero means "the default" for every numeric field.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct vuer_options {
    /// Most events queued (default 65536).
    pub max_queued_events: u32,
    /// Most bytes queued (default 64 MiB; with `realtime_poll_us`, keep it
    /// to a few MiB: the queue's memory is then made up front).
    pub max_queued_bytes: u64,
    /// Reconnect when the connection is lost (1, the default) or close (0).
    pub reconnect: i32,
    /// Reconnect attempts before giving up (0: forever).
    pub reconnect_max_attempts: u32,
    /// Verify the server's TLS certificate for `wss://` (1, the default;
    /// env `VUER_SSL_VERIFY`) or not (0).
    pub tls_verify: i32,
    /// Time allowed for each stage of connecting, ms (default 10000).
    pub connect_timeout_ms: u32,
    /// Time `vuer_close` may take to deliver what is queued, ms (default
    /// 5000).
    pub close_timeout_ms: u32,
    /// Real-time publishing (0: off, the default): publishing threads never
    /// write, wake or park; the sender looks at the queue every this many
    /// microseconds (10 to 1000000; 500 suits a 1 kHz loop).
    pub realtime_poll_us: u32,
}

/// An event received from the server. Free it with `vuer_event_free`.
pub struct vuer_event {
    event: ServerEvent,
    etype: CString,
}

/// A connection. Create it with `vuer_connect`, free it with `vuer_free`.
pub struct vuer_client {
    publisher: Publisher,
    inner: Mutex<Option<blocking::VuerClient>>,
}

/// Counters of a client (a subset of the Rust `Stats`).
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct vuer_stats {
    /// Events offered to publish/send.
    pub published: u64,
    /// Events written to the socket.
    pub sent: u64,
    /// Keyed events replaced by a newer value before they were written.
    pub coalesced: u64,
    /// Events refused (queue full, too large).
    pub rejected: u64,
    /// Events accepted and then given up.
    pub dropped: u64,
    /// Events queued or being written now.
    pub pending: u64,
    /// Events received from the server.
    pub received: u64,
    /// Connections made (1 + reconnects).
    pub connects: u64,
    /// Connections lost.
    pub disconnects: u64,
    /// 1 while connected.
    pub connected: i32,
}

thread_local! {
    static LAST_ERROR: RefCell<CString> = RefCell::new(CString::default());
}

fn set_error(msg: impl std::fmt::Display) {
    let text = msg.to_string().replace('\0', " ");
    LAST_ERROR.with(|e| *e.borrow_mut() = CString::new(text).unwrap_or_default());
}

/// Runs `f`, turning a panic into `VUER_ERR_PANIC`.
fn guard(f: impl FnOnce() -> vuer_status) -> vuer_status {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(s) => s,
        Err(p) => {
            let what = p
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| p.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "unknown panic".into());
            set_error(format!("internal error (panic): {what}"));
            vuer_status::VUER_ERR_PANIC
        }
    }
}

fn fail(status: vuer_status, msg: impl std::fmt::Display) -> vuer_status {
    set_error(msg);
    status
}

fn publish_status(e: PublishError) -> vuer_status {
    match e {
        // No message: a refused real-time publish allocates nothing.
        PublishError::Full { .. } => vuer_status::VUER_ERR_FULL,
        PublishError::TooLarge { .. } | PublishError::LargerThanQueue { .. } => {
            fail(vuer_status::VUER_ERR_TOO_LARGE, e)
        }
        PublishError::Encode(_) => fail(vuer_status::VUER_ERR_ENCODE, e),
        PublishError::Closed(_) => fail(vuer_status::VUER_ERR_CLOSED, e),
        _ => fail(vuer_status::VUER_ERR_CLOSED, e),
    }
}

/// A C string argument as `&str` (no copy).
unsafe fn text<'a>(p: *const c_char, what: &str) -> Result<&'a str, vuer_status> {
    if p.is_null() {
        return Err(fail(
            vuer_status::VUER_ERR_ARGUMENT,
            format!("{what} is NULL"),
        ));
    }
    // SAFETY: the caller passes a NUL-terminated string (header contract).
    unsafe { CStr::from_ptr(p) }.to_str().map_err(|_| {
        fail(
            vuer_status::VUER_ERR_ARGUMENT,
            format!("{what} is not UTF-8"),
        )
    })
}

/// An optional C string argument (NULL: none).
unsafe fn opt_text<'a>(p: *const c_char, what: &str) -> Result<Option<&'a str>, vuer_status> {
    if p.is_null() {
        Ok(None)
    } else {
        // SAFETY: as `text`.
        unsafe { text(p, what) }.map(Some)
    }
}

/// The message of the last failed call on this thread ("" if none). The
/// pointer stays valid until the next call of this library on the same
/// thread; do not free it. Thread-safe (each thread has its own).
#[no_mangle]
pub extern "C" fn vuer_last_error() -> *const c_char {
    LAST_ERROR.with(|e| e.borrow().as_ptr())
}

/// Fills `options` with the defaults (every field 0 but `reconnect` and
/// `tls_verify`, 1). Does nothing if `options` is NULL.
#[no_mangle]
pub unsafe extern "C" fn vuer_options_init(options: *mut vuer_options) {
    if options.is_null() {
        return;
    }
    // SAFETY: non-NULL, the caller's struct.
    unsafe { *options = DEFAULT_OPTIONS };
}

/// What `vuer_options_init` fills in, and what a NULL `options` means.
const DEFAULT_OPTIONS: vuer_options = vuer_options {
    max_queued_events: 0,
    max_queued_bytes: 0,
    reconnect: 1,
    reconnect_max_attempts: 0,
    tls_verify: 1,
    connect_timeout_ms: 0,
    close_timeout_ms: 0,
    realtime_poll_us: 0,
};

/// Connects to `uri` (`ws://host:port` or `wss://...`; NULL: env
/// `VUER_CLIENT_URI`, else `ws://localhost:8012`) with `options` (NULL:
/// defaults), sends INIT, and stores a new handle in `*out`. Blocks until
/// connected or failed. The handle owns a background thread; free it with
/// `vuer_free`. `*out` is set to NULL on failure.
#[no_mangle]
pub unsafe extern "C" fn vuer_connect(
    uri: *const c_char,
    options: *const vuer_options,
    out: *mut *mut vuer_client,
) -> vuer_status {
    guard(|| {
        if out.is_null() {
            return fail(vuer_status::VUER_ERR_ARGUMENT, "out is NULL");
        }
        // SAFETY: non-NULL.
        unsafe { *out = std::ptr::null_mut() };
        let uri = match unsafe { opt_text(uri, "uri") } {
            Ok(u) => u,
            Err(s) => return s,
        };
        let o = if options.is_null() {
            DEFAULT_OPTIONS
        } else {
            // SAFETY: non-NULL, the caller's struct.
            unsafe { *options }
        };
        let mut b = ClientBuilder::new();
        if let Some(u) = uri {
            b = b.uri(u);
        }
        if o.max_queued_events > 0 {
            b = b.max_queued_events(o.max_queued_events as usize);
        }
        if o.max_queued_bytes > 0 {
            b = b.max_queued_bytes(usize::try_from(o.max_queued_bytes).unwrap_or(usize::MAX));
        }
        b = b.reconnect(if o.reconnect != 0 {
            Some(Reconnect {
                max_attempts: (o.reconnect_max_attempts > 0).then_some(o.reconnect_max_attempts),
                ..Reconnect::default()
            })
        } else {
            None
        });
        if o.tls_verify == 0 {
            b = b.tls_verify(false);
        }
        if o.connect_timeout_ms > 0 {
            b = b.connect_timeout(Duration::from_millis(o.connect_timeout_ms.into()));
        }
        if o.close_timeout_ms > 0 {
            b = b.close_timeout(Duration::from_millis(o.close_timeout_ms.into()));
        }
        if o.realtime_poll_us > 0 {
            b = b.realtime_publish(Some(Duration::from_micros(o.realtime_poll_us.into())));
        }
        match b.connect_blocking() {
            Ok(client) => {
                let handle = Box::new(vuer_client {
                    publisher: client.publisher(),
                    inner: Mutex::new(Some(client)),
                });
                // SAFETY: non-NULL.
                unsafe { *out = Box::into_raw(handle) };
                vuer_status::VUER_OK
            }
            Err(e) => fail(vuer_status::VUER_ERR_CONNECT, e),
        }
    })
}

unsafe fn handle<'a>(c: *const vuer_client) -> Result<&'a vuer_client, vuer_status> {
    if c.is_null() {
        return Err(fail(vuer_status::VUER_ERR_ARGUMENT, "client is NULL"));
    }
    // SAFETY: a handle from `vuer_connect`, not freed (header contract).
    Ok(unsafe { &*c })
}

fn floats<'a>(values: *const f32, n: usize) -> Result<&'a [f32], vuer_status> {
    if n == 0 {
        return Ok(&[]);
    }
    if values.is_null() {
        return Err(fail(vuer_status::VUER_ERR_ARGUMENT, "values is NULL"));
    }
    // SAFETY: `n` floats at `values` (header contract).
    Ok(unsafe { std::slice::from_raw_parts(values, n) })
}

/// Queues an event whose value is the list of `n` floats at `values`
/// (msgpack float32s: a position, a pose, joint angles), with etype
/// `etype` and top-level `key` (NULL: none). `reliable` 0: latest value
/// wins per (etype, key) (a newer event replaces one still queued);
/// non-zero: every event delivered, in order. Never blocks.
///
/// Thread-safe: any number of threads may publish at once. With
/// `realtime_poll_us` set it neither allocates nor makes a system call once
/// warm. Returns `VUER_ERR_FULL` when the queue is full (no message set).
/// The strings and floats are read during the call only.
#[no_mangle]
pub unsafe extern "C" fn vuer_publish_floats(
    client: *const vuer_client,
    etype: *const c_char,
    key: *const c_char,
    values: *const f32,
    n: usize,
    reliable: i32,
) -> vuer_status {
    // SAFETY: the header's contract for every pointer.
    unsafe {
        publish_ref(client, etype, key, reliable, |etype| {
            Ok(EventRef::floats(etype, floats(values, n)?))
        })
    }
}

/// Queues an event whose value is `len` bytes of msgpack at `value` (one
/// msgpack object, encoded by the caller: checked, `VUER_ERR_ENCODE`
/// otherwise), with etype `etype` and top-level `key` (NULL: none);
/// `reliable` as for `vuer_publish_floats`. Never blocks; thread-safe.
/// The bytes are copied during the call.
#[no_mangle]
pub unsafe extern "C" fn vuer_publish_msgpack(
    client: *const vuer_client,
    etype: *const c_char,
    key: *const c_char,
    value: *const u8,
    len: usize,
    reliable: i32,
) -> vuer_status {
    // SAFETY: the header's contract for every pointer.
    unsafe {
        publish_ref(client, etype, key, reliable, |etype| {
            if value.is_null() {
                return Err(fail(vuer_status::VUER_ERR_ARGUMENT, "value is NULL"));
            }
            // SAFETY: `len` bytes at `value` (header contract).
            let bytes = std::slice::from_raw_parts(value, len);
            Ok(EventRef::msgpack(etype, bytes))
        })
    }
}

/// What both publish functions share: the handle, etype and key checked,
/// the event made by `make` from the etype, keyed and coalescing as asked,
/// published; no allocation on the way.
unsafe fn publish_ref<'a>(
    client: *const vuer_client,
    etype: *const c_char,
    key: *const c_char,
    reliable: i32,
    make: impl FnOnce(&'a str) -> Result<EventRef<'a>, vuer_status>,
) -> vuer_status {
    guard(|| {
        let run = || -> Result<vuer_status, vuer_status> {
            let c = unsafe { handle(client) }?;
            let etype = unsafe { text(etype, "etype") }?;
            let key = unsafe { opt_text(key, "key") }?;
            let mut ev = make(etype)?;
            if let Some(k) = key {
                ev = ev.key(k);
            }
            if reliable == 0 {
                ev = ev.latest();
            }
            Ok(match c.publisher.publish(&ev) {
                Ok(()) => vuer_status::VUER_OK,
                Err(e) => publish_status(e),
            })
        };
        run().unwrap_or_else(|s| s)
    })
}

/// Blocks until every event queued so far has been written, at most
/// `timeout_ms` (`VUER_ERR_TIMEOUT` then). Thread-safe.
#[no_mangle]
pub unsafe extern "C" fn vuer_flush(client: *const vuer_client, timeout_ms: u32) -> vuer_status {
    guard(|| {
        let c = match unsafe { handle(client) } {
            Ok(c) => c,
            Err(s) => return s,
        };
        let deadline = std::time::Instant::now() + Duration::from_millis(timeout_ms.into());
        loop {
            let s = c.publisher.stats();
            if s.pending == 0 {
                return vuer_status::VUER_OK;
            }
            if !s.connected && c.inner.lock().map(|g| g.is_none()).unwrap_or(true) {
                return fail(vuer_status::VUER_ERR_CLOSED, "client is closed");
            }
            if std::time::Instant::now() >= deadline {
                return vuer_status::VUER_ERR_TIMEOUT;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
    })
}

/// Waits at most `timeout_ms` for an event from the server and stores it
/// in `*out` (free it with `vuer_event_free`); `VUER_ERR_TIMEOUT` (and
/// `*out` NULL) if none came, `VUER_ERR_CLOSED` once the client is closed
/// and every event was read. One receiving thread at a time (others wait).
#[no_mangle]
pub unsafe extern "C" fn vuer_recv(
    client: *const vuer_client,
    timeout_ms: u32,
    out: *mut *mut vuer_event,
) -> vuer_status {
    guard(|| {
        if out.is_null() {
            return fail(vuer_status::VUER_ERR_ARGUMENT, "out is NULL");
        }
        // SAFETY: non-NULL.
        unsafe { *out = std::ptr::null_mut() };
        let c = match unsafe { handle(client) } {
            Ok(c) => c,
            Err(s) => return s,
        };
        let mut guard = c.inner.lock().unwrap_or_else(|e| e.into_inner());
        let Some(inner) = guard.as_mut() else {
            return fail(vuer_status::VUER_ERR_CLOSED, "client is closed");
        };
        match inner.recv_timeout(Duration::from_millis(timeout_ms.into())) {
            Some(event) => {
                let etype = CString::new(event.etype().replace('\0', " ")).unwrap_or_default();
                // SAFETY: non-NULL.
                unsafe { *out = Box::into_raw(Box::new(vuer_event { event, etype })) };
                vuer_status::VUER_OK
            }
            None if matches!(inner.state(), ConnectionState::Closed(_)) => {
                fail(vuer_status::VUER_ERR_CLOSED, "client is closed")
            }
            None => vuer_status::VUER_ERR_TIMEOUT,
        }
    })
}

/// The event's etype (NUL-terminated), valid until `vuer_event_free`.
/// NULL if `event` is NULL.
#[no_mangle]
pub unsafe extern "C" fn vuer_event_etype(event: *const vuer_event) -> *const c_char {
    if event.is_null() {
        return std::ptr::null();
    }
    // SAFETY: an event from `vuer_recv`, not freed.
    unsafe { (*event).etype.as_ptr() }
}

/// The event's `data` (or, for events that have none, its `value`) as
/// msgpack: stores its length in `*len` and returns a pointer valid until
/// `vuer_event_free` (NULL and 0 if it has neither).
#[no_mangle]
pub unsafe extern "C" fn vuer_event_data(event: *const vuer_event, len: *mut usize) -> *const u8 {
    let set = |n: usize| {
        if !len.is_null() {
            // SAFETY: non-NULL.
            unsafe { *len = n };
        }
    };
    if event.is_null() {
        set(0);
        return std::ptr::null();
    }
    // SAFETY: an event from `vuer_recv`, not freed.
    match unsafe { (*event).event.data_raw() } {
        Some(d) => {
            set(d.len());
            d.as_ptr()
        }
        None => {
            set(0);
            std::ptr::null()
        }
    }
}

/// The whole message (msgpack map) of the event: length in `*len`,
/// pointer valid until `vuer_event_free`.
#[no_mangle]
pub unsafe extern "C" fn vuer_event_msgpack(
    event: *const vuer_event,
    len: *mut usize,
) -> *const u8 {
    if event.is_null() {
        if !len.is_null() {
            // SAFETY: non-NULL.
            unsafe { *len = 0 };
        }
        return std::ptr::null();
    }
    // SAFETY: an event from `vuer_recv`, not freed.
    let bytes = unsafe { (*event).event.as_msgpack() };
    if !len.is_null() {
        // SAFETY: non-NULL.
        unsafe { *len = bytes.len() };
    }
    bytes.as_ptr()
}

/// Frees an event from `vuer_recv`. NULL is ignored.
#[no_mangle]
pub unsafe extern "C" fn vuer_event_free(event: *mut vuer_event) {
    if !event.is_null() {
        // SAFETY: from `Box::into_raw` in `vuer_recv`, freed once.
        drop(unsafe { Box::from_raw(event) });
    }
}

/// Fills `*out` with the client's counters. Thread-safe.
#[no_mangle]
pub unsafe extern "C" fn vuer_get_stats(
    client: *const vuer_client,
    out: *mut vuer_stats,
) -> vuer_status {
    guard(|| {
        let c = match unsafe { handle(client) } {
            Ok(c) => c,
            Err(s) => return s,
        };
        if out.is_null() {
            return fail(vuer_status::VUER_ERR_ARGUMENT, "out is NULL");
        }
        let s = c.publisher.stats();
        // SAFETY: non-NULL, the caller's struct.
        unsafe {
            *out = vuer_stats {
                published: s.published,
                sent: s.sent,
                coalesced: s.coalesced,
                rejected: s.rejected,
                dropped: s.dropped,
                pending: s.pending,
                received: s.received,
                connects: s.connects,
                disconnects: s.disconnects,
                connected: i32::from(s.connected),
            }
        };
        vuer_status::VUER_OK
    })
}

/// Delivers what is queued (within the close timeout) and closes the
/// connection; `VUER_ERR_DELIVERY` if accepted events were not delivered.
/// The handle stays valid (publishing then returns `VUER_ERR_CLOSED`)
/// until `vuer_free`. Calling it again returns `VUER_OK`.
#[no_mangle]
pub unsafe extern "C" fn vuer_close(client: *const vuer_client) -> vuer_status {
    guard(|| {
        let c = match unsafe { handle(client) } {
            Ok(c) => c,
            Err(s) => return s,
        };
        let inner = c.inner.lock().unwrap_or_else(|e| e.into_inner()).take();
        let Some(inner) = inner else {
            return vuer_status::VUER_OK;
        };
        let result = inner.close();
        drop(inner); // stops the background thread
        match result {
            Ok(()) => vuer_status::VUER_OK,
            Err(e) if e.unsent + e.unconfirmed > 0 => fail(vuer_status::VUER_ERR_DELIVERY, e),
            Err(_) => vuer_status::VUER_OK,
        }
    })
}

/// Closes (as `vuer_close`, if it was not called) and frees the handle.
/// NULL is ignored. No other call may use the handle during or after it.
#[no_mangle]
pub unsafe extern "C" fn vuer_free(client: *mut vuer_client) {
    if client.is_null() {
        return;
    }
    let _ = guard(|| {
        // SAFETY: from `Box::into_raw` in `vuer_connect`, freed once.
        drop(unsafe { Box::from_raw(client) });
        vuer_status::VUER_OK
    });
}
