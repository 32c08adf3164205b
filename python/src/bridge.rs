//! Tokio futures as asyncio futures, and the runtime they run on.
//!
//! Why not `pyo3_async_runtimes::tokio::future_into_py`: with it, a script
//! that connects and closes (`asyncio.run(main())`, then exit) died at
//! interpreter exit in about one run in three here ("Fatal Python error:
//! PyGILState_Release: thread state ... must be current", or a segfault):
//! after completing the asyncio future, its task drops its references to
//! the loop and the future in later, separate GIL acquisitions on a tokio
//! thread, which may come while the interpreter is finalizing. Here:
//!
//! * the task hands the result to the loop (`call_soon_threadsafe`) and
//!   drops every Python reference it holds **within that one GIL
//!   acquisition**, so once the awaiting coroutine can go on, no tokio
//!   thread touches Python for that call again;
//! * once the interpreter begins to exit (an `atexit` hook sets
//!   [`EXITING`]), tasks and RPC handlers no longer acquire the GIL; their
//!   references are leaked (the process is ending);
//! * cancelling the asyncio future (`asyncio.wait_for`, a cancelled task)
//!   stops the tokio side too (a `Notify` from a done-callback), so a
//!   cancelled `recv` consumes no event.
//!
//! The runtime is pyo3-async-runtimes' (a multi-thread tokio runtime,
//! created on first use); the Rust client's tasks run on it.

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use pyo3::prelude::*;
use pyo3::BoundObject;
use pyo3::sync::PyOnceLock;
use tokio::sync::Notify;

/// Set by an `atexit` hook: from then on no background thread acquires
/// the GIL.
pub(crate) static EXITING: AtomicBool = AtomicBool::new(false);

pub(crate) fn exiting() -> bool {
    EXITING.load(Ordering::Acquire)
}

/// Runs `f` with the GIL unless the interpreter is exiting.
pub(crate) fn attach<R>(f: impl for<'py> FnOnce(Python<'py>) -> R) -> Option<R> {
    if exiting() {
        return None;
    }
    Some(Python::attach(f))
}

#[pyfunction]
fn _mark_exiting() {
    EXITING.store(true, Ordering::Release);
}

/// Registers the exit hook (module init).
pub(crate) fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let f = wrap_pyfunction!(_mark_exiting, m)?;
    m.py().import("atexit")?.call_method1("register", (f,))?;
    Ok(())
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

static RESOLVE: PyOnceLock<Py<PyAny>> = PyOnceLock::new();

/// Runs `fut` on the runtime; returns an asyncio future of the running loop
/// that gets its result.
pub(crate) fn spawn<'py, F, T>(py: Python<'py>, fut: F) -> PyResult<Bound<'py, PyAny>>
where
    F: Future<Output = PyResult<T>> + Send + 'static,
    T: for<'a> IntoPyObject<'a> + Send + 'static,
{
    let event_loop = py.import("asyncio")?.call_method0("get_running_loop")?;
    let future = event_loop.call_method0("create_future")?;
    let cancelled = Arc::new(Notify::new());
    future.call_method1(
        "add_done_callback",
        (OnDone {
            notify: cancelled.clone(),
        },),
    )?;
    let resolve = RESOLVE
        .get_or_try_init(py, || -> PyResult<_> {
            Ok(py
                .import("vuer_client._client")?
                .getattr("_resolve")?
                .unbind())
        })?
        .clone_ref(py);
    let target = (event_loop.unbind(), future.clone().unbind(), resolve);
    pyo3_async_runtimes::tokio::get_runtime().spawn(async move {
        let result = tokio::select! {
            r = fut => Some(r),
            _ = cancelled.notified() => None,
        };
        if exiting() {
            // The process is ending: leak the references rather than take
            // the GIL from a finalizing interpreter.
            std::mem::forget(target);
            return;
        }
        Python::attach(|py| {
            let (event_loop, future, resolve) = target;
            if let Some(result) = result {
                let (ok, value) = match result {
                    Ok(v) => match v.into_pyobject(py) {
                        Ok(v) => (true, v.into_bound().into_any().unbind()),
                        Err(e) => (false, Into::<PyErr>::into(e).into_value(py).into_any()),
                    },
                    Err(e) => (false, e.into_value(py).into_any()),
                };
                // The loop may be closed already: nobody waits any more.
                let _ = event_loop.call_method1(
                    py,
                    "call_soon_threadsafe",
                    (resolve, future, ok, value),
                );
            }
            // Every Python reference of this call is dropped here, with
            // the GIL.
        });
    });
    Ok(future)
}
