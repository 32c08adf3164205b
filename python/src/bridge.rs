//! Tokio futures as asyncio futures, without a tokio thread ever taking the
//! GIL.
//!
//! Why not `pyo3_async_runtimes::tokio::future_into_py`: with it, a script
//! that connects and closes (`asyncio.run(main())`, then exit) died at
//! interpreter exit in about one run in three here ("Fatal Python error:
//! PyGILState_Release", a segfault, or an abort). The backtrace (gdb): a
//! tokio worker, holding the GIL to complete the future, was in
//! `call_soon_threadsafe`'s write to the loop's self-pipe, which releases
//! the GIL; meanwhile the main thread took the result, finished, and began
//! finalizing; the worker then tried to take the GIL back, and CPython ends
//! such a thread with `pthread_exit`, which aborts the process when the
//! thread is a Rust one. Any GIL acquisition from a background thread can
//! race with the interpreter's exit that way, so here there is none:
//!
//! * each event loop gets one [`Bridge`]: a socket pair whose read end the
//!   loop watches (`loop.add_reader`) and a queue of finished results;
//! * a finished tokio future pushes its **Rust** result (no Python object
//!   is made on that thread) with the asyncio future into the queue, and
//!   writes one byte to the socket: no GIL;
//! * the loop, on its own thread, drains the queue: it turns each result
//!   into Python objects and sets the future's result or exception;
//! * cancelling the asyncio future (`asyncio.wait_for`, a cancelled task)
//!   stops the tokio side too (a `Notify` from a done-callback), so a
//!   cancelled `recv` consumes no event.
//!
//! Python references moved to a tokio thread (the asyncio future) are only
//! moved, never used there; if one is dropped there (the runtime shutting
//! down), PyO3 defers the decrement to the next GIL holder.
//!
//! The runtime is pyo3-async-runtimes' (a multi-thread tokio runtime,
//! created on first use); the Rust client's tasks run on it.

use std::future::Future;
use std::io::{ErrorKind, Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::sync::Arc;

use parking_lot::Mutex;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::BoundObject;
use tokio::sync::Notify;

use crate::errors::Failure;

/// A result made on a tokio thread, turned into Python on the loop's when
/// the future still wants it (`true`), or given back (`false`: the future
/// was cancelled meanwhile, see [`spawn_undoable`]).
type Finish = Box<dyn FnOnce(Python<'_>, bool) -> Option<PyResult<Py<PyAny>>> + Send>;

/// One event loop's wake-up socket and queue of finished futures.
pub(crate) struct Bridge {
    /// Written by tokio threads (one byte per batch of results).
    wake: UnixStream,
    /// Read by the loop (`add_reader`).
    watch: UnixStream,
    /// Finished futures, pushed by tokio threads, drained by the loop.
    done: Mutex<Vec<(Py<PyAny>, Option<Finish>)>>,
}

impl Bridge {
    fn finish(&self, future: Py<PyAny>, result: Option<Finish>) {
        let was_empty = {
            let mut q = self.done.lock();
            q.push((future, result));
            q.len() == 1
        };
        if was_empty {
            // Non-blocking: a full socket already holds a wake-up.
            let _ = (&self.wake).write(&[1]);
        }
    }
}

/// The loop's reader callback: sets the results of finished futures.
#[pyclass(module = "vuer_client._native", frozen)]
struct Drain {
    bridge: Arc<Bridge>,
}

#[pymethods]
impl Drain {
    fn __call__(&self, py: Python<'_>) -> PyResult<()> {
        let mut sink = [0u8; 256];
        loop {
            match (&self.bridge.watch).read(&mut sink) {
                Ok(n) if n == sink.len() => continue,
                Ok(_) => break,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(_) => break, // WouldBlock: drained
            }
        }
        let batch = std::mem::take(&mut *self.bridge.done.lock());
        for (future, result) in batch {
            let future = future.into_bound(py);
            let Some(result) = result else { continue };
            let wanted = !future.call_method0("done")?.is_truthy()?;
            match result(py, wanted) {
                None => {} // cancelled meanwhile: given back
                Some(Ok(v)) => {
                    future.call_method1("set_result", (v,))?;
                }
                Some(Err(e)) => {
                    future.call_method1("set_exception", (e.into_value(py),))?;
                }
            }
        }
        Ok(())
    }
}

/// The done-callback of a bridged future: wakes the task when the asyncio
/// future is done first (cancelled).
#[pyclass(module = "vuer_client._native", frozen)]
struct OnDone {
    notify: Arc<Notify>,
}

#[pymethods]
impl OnDone {
    fn __call__(&self, _future: &Bound<'_, PyAny>) {
        self.notify.notify_one();
    }
}

/// Bridges by event loop, weakly keyed (a closed, collected loop drops its
/// entry).
static BRIDGES: PyOnceLock<Py<PyAny>> = PyOnceLock::new();

fn bridge_for(py: Python<'_>, event_loop: &Bound<'_, PyAny>) -> PyResult<Arc<Bridge>> {
    let registry = BRIDGES
        .get_or_try_init(py, || -> PyResult<_> {
            Ok(py
                .import("weakref")?
                .getattr("WeakKeyDictionary")?
                .call0()?
                .unbind())
        })?
        .bind(py);
    if let Ok(d) = registry.get_item(event_loop) {
        if let Ok(drain) = d.cast::<Drain>() {
            return Ok(drain.get().bridge.clone());
        }
    }
    let (wake, watch) = UnixStream::pair()?;
    wake.set_nonblocking(true)?;
    watch.set_nonblocking(true)?;
    let fd = watch.as_raw_fd();
    let bridge = Arc::new(Bridge {
        wake,
        watch,
        done: Mutex::new(Vec::new()),
    });
    let drain = Bound::new(
        py,
        Drain {
            bridge: bridge.clone(),
        },
    )?;
    event_loop.call_method1("add_reader", (fd, drain.clone()))?;
    registry.set_item(event_loop, drain)?;
    Ok(bridge)
}

/// Runs `fut` on the runtime; returns an asyncio future of the running loop
/// that gets its result. `fut` runs on a tokio thread and must not touch
/// Python; its output is turned into Python objects on the loop's thread.
/// A result that arrives after the future was cancelled is dropped.
pub(crate) fn spawn<'py, F, T>(py: Python<'py>, fut: F) -> PyResult<Bound<'py, PyAny>>
where
    F: Future<Output = Result<T, Failure>> + Send + 'static,
    T: for<'a> IntoPyObject<'a> + Send + 'static,
{
    spawn_undoable(py, fut, drop)
}

/// [`spawn`], and when the future was cancelled after `fut` finished but
/// before the loop could hand the result over, `undo(result)` runs (on the
/// loop's thread) instead of dropping it: `recv` puts the event back, so a
/// cancelled `recv` loses nothing.
pub(crate) fn spawn_undoable<'py, F, T, U>(
    py: Python<'py>,
    fut: F,
    undo: U,
) -> PyResult<Bound<'py, PyAny>>
where
    F: Future<Output = Result<T, Failure>> + Send + 'static,
    T: for<'a> IntoPyObject<'a> + Send + 'static,
    U: FnOnce(T) + Send + 'static,
{
    let event_loop = py.import("asyncio")?.call_method0("get_running_loop")?;
    let bridge = bridge_for(py, &event_loop)?;
    let future = event_loop.call_method0("create_future")?;
    let cancelled = Arc::new(Notify::new());
    future.call_method1(
        "add_done_callback",
        (OnDone {
            notify: cancelled.clone(),
        },),
    )?;
    let target = future.clone().unbind();
    pyo3_async_runtimes::tokio::get_runtime().spawn(async move {
        let result = tokio::select! {
            r = fut => Some(r),
            _ = cancelled.notified() => None,
        };
        let finish: Option<Finish> = result.map(|r| -> Finish {
            Box::new(move |py: Python<'_>, wanted: bool| match r {
                Ok(v) if !wanted => {
                    undo(v);
                    None
                }
                Ok(v) => Some(
                    v.into_pyobject(py)
                        .map(|v| v.into_bound().into_any().unbind())
                        .map_err(Into::into),
                ),
                Err(_) if !wanted => None,
                Err(f) => Some(Err(f.into_pyerr())),
            })
        });
        bridge.finish(target, finish);
    });
    Ok(future)
}
