//! A client for programs without an async runtime: [`VuerClient`] owns a
//! small tokio runtime (one worker thread, named `vuer-client`) on which
//! the connection's tasks run, and every call blocks the calling thread
//! instead of returning a future. For control software written as plain
//! threads, and for the C API.
//!
//! # Who owns what
//! The runtime is this handle's: it lives as long as the handle and is shut
//! down when it is dropped (after a bounded close). The asynchronous client
//! lives on it; `publish` goes straight to its queue from the calling
//! thread (no hop through the runtime), `recv*`, `flush` and `close` run on
//! the calling thread with the runtime's `block_on`. So these must not be
//! called from inside an async runtime (tokio panics: "Cannot start a
//! runtime from within a runtime"); use the async [`crate::VuerClient`]
//! there.
//!
//! ```no_run
//! use vuer_client::{blocking::VuerClient, EventRef};
//! use std::time::Duration;
//!
//! let mut client = VuerClient::connect("ws://localhost:8012")?;
//! for i in 0..200 {
//!     let t = i as f32 * 0.05;
//!     let pose = [t.sin() * 2.0, 0.5 + (t * 2.0).sin() * 0.3, 0.0];
//!     client.send(&EventRef::floats("SET_POSITION", &pose))?; // waits for room
//!     std::thread::sleep(Duration::from_millis(16));
//! }
//! while let Some(event) = client.recv_timeout(Duration::from_secs(1)) {
//!     println!("{}", event.etype());
//! }
//! client.close()?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::time::Duration;

use tokio::runtime::Runtime;

use crate::config::ClientBuilder;
use crate::error::{CloseError, ConnectError, PublishError};
use crate::event::Outgoing;
use crate::state::ConnectionState;
use crate::stats::Stats;
use crate::ServerEvent;

/// A blocking handle on a connection: see the [module docs](self).
pub struct VuerClient {
    // Dropped after `client` (fields drop in order): the tasks stop with
    // the runtime.
    client: Option<crate::VuerClient>,
    runtime: Option<Runtime>,
}

impl std::fmt::Debug for VuerClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("blocking::VuerClient")
            .field(&self.client)
            .finish()
    }
}

fn runtime() -> Result<Runtime, ConnectError> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("vuer-client")
        .enable_all()
        .build()
        .map_err(|e| ConnectError::InvalidConfig(format!("cannot start the client's runtime: {e}")))
}

impl ClientBuilder {
    /// Connects, blocking the calling thread, and returns a
    /// [`blocking::VuerClient`](VuerClient) with its own runtime. Must not
    /// be called from inside an async runtime.
    pub fn connect_blocking(self) -> Result<VuerClient, ConnectError> {
        let runtime = runtime()?;
        let client = runtime.block_on(self.connect())?;
        Ok(VuerClient {
            client: Some(client),
            runtime: Some(runtime),
        })
    }
}

impl VuerClient {
    /// Connects to `uri` with the default options (and the environment,
    /// as [`ClientBuilder::new`] reads it).
    pub fn connect(uri: &str) -> Result<VuerClient, ConnectError> {
        ClientBuilder::new().uri(uri).connect_blocking()
    }

    fn inner(&self) -> &crate::VuerClient {
        self.client.as_ref().expect("present until dropped")
    }

    fn block_on<F: std::future::Future>(&self, f: F) -> F::Output {
        self.runtime
            .as_ref()
            .expect("present until dropped")
            .block_on(f)
    }

    /// Queues an event without waiting (see [`crate::VuerClient::publish`]):
    /// from any thread, never blocks. With
    /// [`realtime_publish`](ClientBuilder::realtime_publish) and an
    /// allocation-free event ([`crate::EventRef`], or a typed [`crate::Event`]
    /// of fixed size), it neither allocates nor makes a system call.
    pub fn publish<E: Outgoing + ?Sized>(&self, event: &E) -> Result<(), PublishError> {
        self.inner().publish(event)
    }

    /// Queues an event, blocking while the queue is full (every event
    /// delivered; see [`crate::VuerClient::send`]).
    pub fn send<E: Outgoing + ?Sized>(&self, event: &E) -> Result<(), PublishError> {
        self.block_on(self.inner().send(event))
    }

    /// Blocks until every event queued so far has been written.
    pub fn flush(&self) -> Result<(), PublishError> {
        self.block_on(self.inner().flush())
    }

    /// The next event from the server, waiting at most `timeout`; `None` on
    /// timeout or once the client is closed and drained.
    pub fn recv_timeout(&mut self, timeout: Duration) -> Option<ServerEvent> {
        let runtime = self.runtime.as_ref().expect("present until dropped");
        let client = self.client.as_mut().expect("present until dropped");
        runtime.block_on(client.recv_timeout(timeout))
    }

    /// An event if one is queued now.
    pub fn try_recv(&mut self) -> Option<ServerEvent> {
        self.client
            .as_mut()
            .expect("present until dropped")
            .try_recv()
    }

    /// A [`Publisher`](crate::Publisher) for other threads (it needs no
    /// runtime either).
    pub fn publisher(&self) -> crate::Publisher {
        self.inner().publisher()
    }

    /// Answers the server's RPC requests (see
    /// [`crate::VuerClient::answer_rpc`]).
    pub fn answer_rpc<F>(&self, pattern: &str, answer: F)
    where
        F: Fn(&ServerEvent) -> Option<crate::Value> + Send + Sync + 'static,
    {
        self.inner().answer_rpc(pattern, answer)
    }

    /// A snapshot of the counters.
    pub fn stats(&self) -> Stats {
        self.inner().stats()
    }

    /// True while connected.
    pub fn is_connected(&self) -> bool {
        self.inner().is_connected()
    }

    /// The connection's state now.
    pub fn state(&self) -> ConnectionState {
        self.inner().state()
    }

    /// The URI as it may be shown (credentials and query redacted).
    pub fn uri(&self) -> &str {
        self.inner().uri()
    }

    /// Delivers what is queued and closes (see
    /// [`crate::VuerClient::close`]), blocking at most the close timeout.
    pub fn close(&self) -> Result<(), CloseError> {
        self.block_on(self.inner().close())
    }
}

impl Drop for VuerClient {
    /// Closes (delivering what is queued, within the close timeout) if
    /// `close` was not called, then stops the runtime.
    fn drop(&mut self) {
        if let (Some(client), Some(rt)) = (self.client.as_ref(), self.runtime.as_ref()) {
            // Not from inside a runtime (block_on would panic): there the
            // tasks are just stopped with the runtime.
            if tokio::runtime::Handle::try_current().is_err() {
                let _ = rt.block_on(client.close());
            }
        }
        self.client = None;
        if let Some(rt) = self.runtime.take() {
            // Joins the worker thread (its tasks are done: the client is
            // closed), so that nothing of it outlives the handle.
            rt.shutdown_timeout(Duration::from_secs(1));
        }
    }
}
