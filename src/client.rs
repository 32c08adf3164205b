//! The public handles: [`VuerClient`] (owns the connection and the inbound
//! stream), [`Publisher`] (a clonable producer handle) and [`Subscription`].

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::sync::watch;
use tokio_util::sync::ReusableBoxFuture;

use crate::codec::Payload;
use crate::config::ClientBuilder;
use crate::connection::Target;
use crate::error::{
    CloseError, ConnectError, Disconnect, EncodeError, PartialPublish, PublishError,
};
use crate::event::Outgoing;
use crate::inbound::Queue;
use crate::shared::Shared;
use crate::state::ConnectionState;
use crate::stats::Stats;
use crate::{ServerEvent, Value};

impl ClientBuilder {
    /// Connects and starts the client's tasks. Must be called within a
    /// tokio runtime.
    pub async fn connect(self) -> Result<VuerClient, ConnectError> {
        VuerClient::connect_with(self).await
    }
}

/// A connection to a Vuer server.
///
/// Connecting spawns the client's tasks: a sender that owns the write half
/// and drains the outgoing ring, a decoder that owns the read half and fills
/// the inbound queue, and a supervisor that reconnects. A publishing call
/// may write one frame to the socket itself, without blocking, when events
/// are sparse and the sender is idle (the direct path: lower latency at
/// 60 Hz–10 kHz); it never waits on the socket.
///
/// ```no_run
/// use serde::Serialize;
/// use vuer_client::{Event, VuerClient};
///
/// #[derive(Serialize)]
/// struct SetPosition([f32; 3]);
/// impl Event for SetPosition {
///     const ETYPE: &'static str = "SET_POSITION";
/// }
///
/// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
/// let mut client = VuerClient::connect("ws://localhost:8012").await?;
/// client.publish(&SetPosition([0.0, 0.5, 0.0]))?; // never blocks
/// client.send(&SetPosition([1.0, 0.5, 0.0])).await?; // waits for room
/// if let Some(event) = client.recv_timeout(std::time::Duration::from_secs(1)).await {
///     println!("{} {:?}", event.etype(), event.data()?);
/// }
/// client.close().await?;
/// # Ok(()) }
/// ```
pub struct VuerClient {
    pub(crate) shared: Arc<Shared>,
    pending_pop: ReusableBoxFuture<'static, Option<ServerEvent>>,
    next_armed: bool,
}

impl std::fmt::Debug for VuerClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VuerClient")
            .field("uri", &self.shared.uri_shown)
            .field("state", &*self.shared.state.borrow())
            .finish()
    }
}

async fn pop(q: Arc<Queue>) -> Option<ServerEvent> {
    q.pop().await
}

impl VuerClient {
    /// A builder with every option (defaults and environment applied).
    pub fn builder() -> ClientBuilder {
        ClientBuilder::new()
    }

    /// Connects to `uri` with the default options (other settings from the
    /// environment, as [`ClientBuilder::new`] reads them).
    pub async fn connect(uri: &str) -> Result<VuerClient, ConnectError> {
        ClientBuilder::new().uri(uri).connect().await
    }

    pub(crate) async fn connect_with(builder: ClientBuilder) -> Result<VuerClient, ConnectError> {
        builder.check()?;
        let config = builder.config;
        let target = Target::parse(&config.uri)?;
        let shared = Arc::new(Shared::new(config));
        let conn = crate::supervisor::first_connect(&shared, &target).await?;
        // Connected from the caller's point of view as soon as this returns.
        shared.set_state(ConnectionState::Connected);
        let watch = crate::supervisor::Watch::new(shared.clone());
        tokio::spawn(crate::supervisor::run(watch, target, conn));
        let queue = shared.inbound.main.clone();
        Ok(VuerClient {
            pending_pop: ReusableBoxFuture::new(pop(queue)),
            next_armed: false,
            shared,
        })
    }

    /// Queues an event without waiting; callable from any thread (no
    /// runtime needed), it never blocks. Keyed events replace a queued value
    /// of the same key; unkeyed ones fail with [`PublishError::Full`] when
    /// the queue is full (or follow the configured
    /// [`Overflow`](crate::Overflow) policy). The counterpart of Python's
    /// `client.send @ event`, but errors are returned, not hidden.
    pub fn publish<E: Outgoing + ?Sized>(&self, event: &E) -> Result<(), PublishError> {
        self.shared.publish(event)
    }

    /// Queues several events at once: one clock read and one lock for the
    /// whole slice, so each event costs little more than its encoding. For
    /// a control loop that publishes many events per tick (every joint, both
    /// hands) or a producer that has events ready in bulk. Each event is
    /// treated as [`publish`](Self::publish) would treat it (keyed ones
    /// coalesce, reliable ones keep their order); all get the same
    /// timestamp unless they carry their own.
    ///
    /// If an event is refused (queue full, too large, not encodable, or the
    /// client closed), the batch stops there: the events before it are
    /// queued, the rest are not, and the error says how many were accepted.
    /// Never blocks. Events are encoded under the lock, so very large events
    /// are better published one by one.
    ///
    /// ```no_run
    /// # use vuer_client::{DynEvent, VuerClient};
    /// # fn f(client: &VuerClient, joints: &[f32; 7]) {
    /// let events: Vec<DynEvent> = joints
    ///     .iter()
    ///     .enumerate()
    ///     .map(|(i, q)| DynEvent::new("JOINT").key(format!("j{i}")).value(*q))
    ///     .collect();
    /// if let Err(e) = client.publish_many(&events) {
    ///     tracing::warn!(accepted = e.accepted, of = events.len(), error = %e.error, "partly queued");
    /// }
    /// # }
    /// ```
    pub fn publish_many<E: Outgoing>(&self, events: &[E]) -> Result<(), PartialPublish> {
        publish_many(&self.shared, events)
    }

    /// Queues an event, waiting for room when the queue is full (the
    /// counterpart of `await client.send(event)`). It returns when the event
    /// is queued; [`flush`](Self::flush) waits until it is written.
    ///
    /// Cancel-safe: if the future is dropped, the event was either queued or
    /// not, never half-queued.
    pub async fn send<E: Outgoing + ?Sized>(&self, event: &E) -> Result<(), PublishError> {
        send(&self.shared, event).await
    }

    /// [`send`](Self::send) for plain threads: queues an event, blocking
    /// the calling thread while the queue is full (no runtime needed). For
    /// a thread that must deliver every event (a logger, a replay) and may
    /// wait; a control loop that must never wait uses
    /// [`publish`](Self::publish).
    ///
    /// # Panics
    ///
    /// When called from async code (inside a tokio runtime), where blocking
    /// could stall the very tasks that make room; use `send().await` there.
    /// The same rule as tokio's `blocking_send`.
    pub fn send_blocking<E: Outgoing + ?Sized>(&self, event: &E) -> Result<(), PublishError> {
        send_blocking(&self.shared, event)
    }

    /// Waits until every event queued before the call has been written to
    /// the socket (or resolved: coalesced, expired, dropped).
    pub async fn flush(&self) -> Result<(), PublishError> {
        self.shared.flush().await
    }

    /// A clonable handle for other producers (threads or tasks).
    pub fn publisher(&self) -> Publisher {
        Publisher {
            shared: self.shared.clone(),
        }
    }

    /// The next inbound event; `None` once the client is closed and every
    /// queued event has been read. Cancel-safe.
    pub async fn recv(&mut self) -> Option<ServerEvent> {
        std::future::poll_fn(|cx| self.poll_next_event(cx)).await
    }

    /// The same as [`recv`](Self::recv), under the name a `Stream` user
    /// reaches for: `while let Some(ev) = client.next().await` works with
    /// no import. The client is also a [`futures_core::Stream`] of
    /// [`ServerEvent`]s: with `futures::StreamExt` (crate `futures` or
    /// `futures-util`) or `tokio_stream::StreamExt` in scope you get their
    /// combinators (`filter`, `take`, `timeout`, ...).
    ///
    /// ```no_run
    /// # async fn run() -> Result<(), vuer_client::ConnectError> {
    /// let mut client = vuer_client::VuerClient::connect("ws://localhost:8012").await?;
    /// while let Some(event) = client.next().await {
    ///     println!("{} {:?}", event.etype(), event.data());
    /// }
    /// # Ok(()) }
    /// ```
    #[allow(clippy::should_implement_trait)]
    pub async fn next(&mut self) -> Option<ServerEvent> {
        self.recv().await
    }

    /// Like [`recv`](Self::recv), but `None` also after `timeout` (as
    /// Python's `recv(timeout=...)`).
    pub async fn recv_timeout(&mut self, timeout: Duration) -> Option<ServerEvent> {
        tokio::time::timeout(timeout, self.recv())
            .await
            .ok()
            .flatten()
    }

    /// An inbound event if one is queued now.
    pub fn try_recv(&mut self) -> Option<ServerEvent> {
        self.shared.inbound.main.try_pop().ok()
    }

    fn poll_next_event(&mut self, cx: &mut Context<'_>) -> Poll<Option<ServerEvent>> {
        if !self.next_armed {
            self.pending_pop.set(pop(self.shared.inbound.main.clone()));
            self.next_armed = true;
        }
        let r = self.pending_pop.poll(cx);
        if r.is_ready() {
            self.next_armed = false;
        }
        r
    }

    /// A stream of just the events whose `etype` matches `pattern` (`*` and
    /// `?` globs, as in Vuer's `fnmatch` filters), e.g. `"UPSERT"` or
    /// `"GRAB_*"`. Matching events go to every matching subscription and not
    /// to [`recv`](Self::recv); the others are left for `recv`. Each
    /// subscription has the inbound queue's bounds and policy.
    pub fn subscribe(&self, pattern: &str) -> Subscription {
        let queue = self.shared.inbound.subscribe(pattern);
        Subscription {
            pending_pop: ReusableBoxFuture::new(pop(queue.clone())),
            next_armed: false,
            queue,
        }
    }

    /// Answers RPC requests whose `etype` matches `pattern` (e.g.
    /// `"GRAB_RENDER"`). `answer` runs on the decoder task, so it must be
    /// quick; it returns the answer's `value`, or `None` to not answer (the
    /// server then times out, as with a browser that has no such camera).
    /// The answer is sent with the request's `rtype` as etype (or
    /// `<etype>_RESPONSE@<uuid>`) and echoes its `key`. For slow answers,
    /// [`subscribe`](Self::subscribe) and [`respond`](Self::respond) instead.
    /// If `answer` panics, the panic is logged (and shown in
    /// [`Stats::last_error`](crate::Stats::last_error)), the request is not
    /// answered, and the connection goes on.
    pub fn answer_rpc<F>(&self, pattern: &str, answer: F)
    where
        F: Fn(&ServerEvent) -> Option<Value> + Send + Sync + 'static,
    {
        self.shared
            .inbound
            .add_rpc_handler(pattern, Arc::new(answer));
    }

    /// Sends the answer to an RPC request (reliably): etype = the request's
    /// `rtype` (or `<etype>_RESPONSE@<uuid>`), `key` echoed, `value` as
    /// given. Vuer waits 2 s by default for an answer.
    pub fn respond(
        &self,
        request: &ServerEvent,
        value: impl Into<Value>,
    ) -> Result<(), PublishError> {
        self.shared.publish(&request.reply(value))
    }

    /// True while connected.
    pub fn is_connected(&self) -> bool {
        matches!(*self.shared.state.borrow(), ConnectionState::Connected)
    }

    /// The connection's state now.
    pub fn state(&self) -> ConnectionState {
        self.shared.state.borrow().clone()
    }

    /// A watch of the connection's state: it holds the latest state, so a
    /// receiver sees every change that lasts long enough for it to look,
    /// but may miss short-lived ones (`Disconnected(reason)` is followed at
    /// once by `Reconnecting`). Use [`state_changes`](Self::state_changes)
    /// to see every transition.
    pub fn watch_state(&self) -> watch::Receiver<ConnectionState> {
        self.shared.state.subscribe()
    }

    /// Every change of the connection's state from now on, in order, none
    /// skipped: `Connected`, `Disconnected(reason)`, `Reconnecting { attempt,
    /// .. }` for each attempt (with the previous attempt's error), `Connected` again, and finally `Closed(reason)`.
    /// A receiver that falls more than 64 changes behind gets
    /// [`RecvError::Lagged`](tokio::sync::broadcast::error::RecvError::Lagged)
    /// once and goes on with the oldest change still kept.
    pub fn state_changes(&self) -> tokio::sync::broadcast::Receiver<ConnectionState> {
        self.shared.changes.subscribe()
    }

    /// A snapshot of the counters.
    pub fn stats(&self) -> Stats {
        self.shared.stats()
    }

    /// The URI this client connects to, as it may be shown: credentials
    /// and the query redacted ([`redact_uri`](crate::redact_uri)).
    pub fn uri(&self) -> &str {
        &self.shared.uri_shown
    }

    /// Closes the connection gracefully and says whether everything
    /// accepted was delivered. Within [`close_timeout`](crate::ClientBuilder::close_timeout)
    /// (5 s by default) of the first call, whatever happens:
    ///
    /// * what is queued is written, and the reliable events written are
    ///   confirmed by the server (a pong after them), until a tenth of the
    ///   timeout before its end (at most 250 ms); if the connection is lost
    ///   meanwhile (or was being re-established), the client reconnects at
    ///   once, without backoff, to deliver;
    /// * then a close frame is sent and the server's answer awaited until
    ///   the timeout's end, when the connection is dropped.
    ///
    /// Returns `Ok(())` only when the close was clean and every accepted
    /// event was written and confirmed. Otherwise [`CloseError`] says why the
    /// connection ended and how many events were never sent (counted as
    /// [`Stats::dropped`]) or written without confirmation (counted as
    /// [`Stats::unconfirmed_lost`]). Later calls return the same outcome.
    pub async fn close(&self) -> Result<(), CloseError> {
        self.shared.begin_close();
        let slack = Duration::from_millis(250);
        let reason = match tokio::time::timeout(
            self.shared.close_time_left().saturating_add(slack),
            wait_closed(&self.shared),
        )
        .await
        {
            Ok(r) => r,
            Err(_) => {
                // The tasks did not finish in time (a blocked runtime?):
                // stop them, and account for what is left.
                self.shared.shutdown.cancel();
                self.shared.finish(Disconnect::Local);
                Disconnect::Local
            }
        };
        close_outcome(&self.shared, reason)
    }
}

/// The state's `Closed` reason, once there is one (`Local` if the client's
/// tasks are gone without one).
async fn wait_closed(shared: &Shared) -> Disconnect {
    let mut state = shared.state.subscribe();
    loop {
        if let ConnectionState::Closed(r) = &*state.borrow_and_update() {
            return r.clone();
        }
        tokio::select! {
            changed = state.changed() => if changed.is_err() {
                return Disconnect::Local;
            },
            _ = shared.supervisor_gone.cancelled() => {
                if let ConnectionState::Closed(r) = &*state.borrow() {
                    return r.clone();
                }
                return Disconnect::Local;
            }
        }
    }
}

/// `Ok` for a clean close with nothing lost; otherwise what was lost.
fn close_outcome(shared: &Shared, reason: Disconnect) -> Result<(), CloseError> {
    let (unsent, unconfirmed) = shared.outbox().lost;
    match reason {
        Disconnect::Local if unsent == 0 && unconfirmed == 0 => Ok(()),
        reason => Err(CloseError {
            reason,
            unsent,
            unconfirmed,
        }),
    }
}

impl Drop for VuerClient {
    /// Starts a graceful close. If events accepted are still undelivered,
    /// the dropping thread waits for the close to deliver them, at most
    /// `close_timeout`, when it can: outside async code, or on a
    /// multi-threaded tokio runtime (through `block_in_place`). On a
    /// current-thread runtime it cannot wait (the close needs that very
    /// thread): the close goes on in the background, and if the runtime
    /// stops first (e.g. `main` returns), the events still undelivered are
    /// counted and logged as a warning. Call [`close`](Self::close) to know
    /// the outcome.
    fn drop(&mut self) {
        let shared = &self.shared;
        shared.begin_close();
        if shared.supervisor_gone.is_cancelled() || !shared.has_undelivered() {
            return;
        }
        let wait = || {
            let now = std::time::Instant::now();
            let deadline = now.checked_add(shared.close_time_left()).unwrap_or(now);
            let _ = block_on_until(wait_closed(shared), deadline);
        };
        match tokio::runtime::Handle::try_current() {
            Err(_) => wait(),
            Ok(h) if h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
                tokio::task::block_in_place(wait)
            }
            Ok(_) => tracing::debug!(
                "client dropped on a current-thread runtime with events undelivered; closing in the background"
            ),
        }
    }
}

impl futures_core::Stream for VuerClient {
    type Item = ServerEvent;
    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<ServerEvent>> {
        self.get_mut().poll_next_event(cx)
    }
}

/// A clonable handle for producers: publish from many threads or tasks.
///
/// ```no_run
/// # async fn f(client: vuer_client::VuerClient) {
/// let publisher = client.publisher();
/// std::thread::spawn(move || {
///     // A 1 kHz control loop: publish never blocks and needs no runtime.
///     let pose = vuer_client::DynEvent::new("ROBOT_STATE").value(vec![0.1f32, 0.2, 0.3]);
///     publisher.publish(&pose).ok();
/// });
/// # }
/// ```
#[derive(Clone)]
pub struct Publisher {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for Publisher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Publisher")
            .field("uri", &self.shared.uri_shown)
            .finish()
    }
}

impl Publisher {
    /// See [`VuerClient::publish`].
    pub fn publish<E: Outgoing + ?Sized>(&self, event: &E) -> Result<(), PublishError> {
        self.shared.publish(event)
    }

    /// See [`VuerClient::publish_many`].
    pub fn publish_many<E: Outgoing>(&self, events: &[E]) -> Result<(), PartialPublish> {
        publish_many(&self.shared, events)
    }

    /// See [`VuerClient::send`].
    pub async fn send<E: Outgoing + ?Sized>(&self, event: &E) -> Result<(), PublishError> {
        send(&self.shared, event).await
    }

    /// See [`VuerClient::send_blocking`].
    ///
    /// ```no_run
    /// # async fn f(client: vuer_client::VuerClient) {
    /// let publisher = client.publisher();
    /// std::thread::spawn(move || {
    ///     // Every event delivered: wait for room rather than drop.
    ///     for i in 0..10_000 {
    ///         let e = vuer_client::DynEvent::new("LOG").value(i).reliable();
    ///         if publisher.send_blocking(&e).is_err() {
    ///             break; // closed
    ///         }
    ///     }
    /// });
    /// # }
    /// ```
    pub fn send_blocking<E: Outgoing + ?Sized>(&self, event: &E) -> Result<(), PublishError> {
        send_blocking(&self.shared, event)
    }

    /// See [`VuerClient::flush`].
    pub async fn flush(&self) -> Result<(), PublishError> {
        self.shared.flush().await
    }

    /// See [`VuerClient::stats`].
    pub fn stats(&self) -> Stats {
        self.shared.stats()
    }

    /// True while connected.
    pub fn is_connected(&self) -> bool {
        matches!(*self.shared.state.borrow(), ConnectionState::Connected)
    }
}

/// Inbound events of the etypes one [`VuerClient::subscribe`] asked for.
/// Dropping it unsubscribes.
pub struct Subscription {
    queue: Arc<Queue>,
    pending_pop: ReusableBoxFuture<'static, Option<ServerEvent>>,
    next_armed: bool,
}

impl std::fmt::Debug for Subscription {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Subscription")
            .field("queued", &self.queue.len())
            .finish()
    }
}

impl Subscription {
    /// The next matching event; `None` once the client is closed and the
    /// subscription drained. Cancel-safe.
    pub async fn recv(&mut self) -> Option<ServerEvent> {
        std::future::poll_fn(|cx| self.poll_next_event(cx)).await
    }

    /// The same as [`recv`](Self::recv) (see [`VuerClient::next`]).
    #[allow(clippy::should_implement_trait)]
    pub async fn next(&mut self) -> Option<ServerEvent> {
        self.recv().await
    }

    /// Like [`recv`](Self::recv), with a timeout.
    pub async fn recv_timeout(&mut self, timeout: Duration) -> Option<ServerEvent> {
        tokio::time::timeout(timeout, self.recv())
            .await
            .ok()
            .flatten()
    }

    /// A matching event if one is queued now.
    pub fn try_recv(&mut self) -> Option<ServerEvent> {
        self.queue.try_pop().ok()
    }

    fn poll_next_event(&mut self, cx: &mut Context<'_>) -> Poll<Option<ServerEvent>> {
        if !self.next_armed {
            self.pending_pop.set(pop(self.queue.clone()));
            self.next_armed = true;
        }
        let r = self.pending_pop.poll(cx);
        if r.is_ready() {
            self.next_armed = false;
        }
        r
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        self.queue.close();
    }
}

impl futures_core::Stream for Subscription {
    type Item = ServerEvent;
    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<ServerEvent>> {
        self.get_mut().poll_next_event(cx)
    }
}

/// Encodes `event` as the client writes it: one msgpack message (the
/// websocket frame's payload), appended to `out`. `ts` is the event's own or
/// now. Use it to pre-encode a message once for [`RawEvent`](crate::RawEvent), to record
/// traffic, or to compare bytes with another implementation.
///
/// ```
/// use vuer_client::{encode_message, DynEvent};
/// let mut buf = Vec::new();
/// encode_message(&DynEvent::new("PING").ts(1_700_000_000_500), false, &mut buf).unwrap();
/// assert_eq!(buf[0], 0x83); // a map of ts, etype, value
/// ```
pub fn encode_message<E: Outgoing + ?Sized>(
    event: &E,
    all_f32: bool,
    out: &mut Vec<u8>,
) -> Result<(), EncodeError> {
    let mut p = Payload::default();
    event.encode(&mut p, all_f32)?;
    p.ts_ms = event
        .meta()
        .ts
        .unwrap_or_else(|| crate::clock::wall_ms(crate::clock::now_ns()));
    p.write_message(out);
    Ok(())
}

pub(crate) fn publish_many<E: Outgoing>(
    shared: &Shared,
    events: &[E],
) -> Result<(), PartialPublish> {
    match shared.publish_many(events, |e| e.meta(), |e, b, f32| e.encode_body(b, f32)) {
        (_, Ok(())) => Ok(()),
        (accepted, Err(error)) => Err(PartialPublish { accepted, error }),
    }
}

pub(crate) async fn send<E: Outgoing + ?Sized>(
    shared: &Shared,
    event: &E,
) -> Result<(), PublishError> {
    shared
        .send_with(|| event.meta(), |b, f32| event.encode_body(b, f32))
        .await
}

fn send_blocking<E: Outgoing + ?Sized>(shared: &Shared, event: &E) -> Result<(), PublishError> {
    // Checked on every call, not only when the queue is full, so the misuse
    // shows in the first test rather than under load.
    assert!(
        tokio::runtime::Handle::try_current().is_err(),
        "send_blocking called from async code; use send().await"
    );
    // The common case costs what `publish` costs.
    match shared.publish(event) {
        Err(PublishError::Full { .. }) => {
            // Taken back: the wait below retries the same event.
            shared.outbox().ring_unreject();
        }
        other => return other,
    }
    block_on(send(shared, event))
}

/// Runs a future to completion on this thread, parking between polls. The
/// futures it runs wait only on `tokio::sync::Notify`, which needs no
/// runtime.
fn block_on<F: std::future::Future>(f: F) -> F::Output {
    poll_parked(f, None).expect("no deadline")
}

/// [`block_on`] until `deadline`: `None` if it passed first.
fn block_on_until<F: std::future::Future>(f: F, deadline: std::time::Instant) -> Option<F::Output> {
    poll_parked(f, Some(deadline))
}

fn poll_parked<F: std::future::Future>(
    f: F,
    deadline: Option<std::time::Instant>,
) -> Option<F::Output> {
    struct Unpark(std::thread::Thread);
    impl std::task::Wake for Unpark {
        fn wake(self: Arc<Self>) {
            self.0.unpark();
        }
        fn wake_by_ref(self: &Arc<Self>) {
            self.0.unpark();
        }
    }
    let waker = std::task::Waker::from(Arc::new(Unpark(std::thread::current())));
    let mut cx = Context::from_waker(&waker);
    let mut f = std::pin::pin!(f);
    loop {
        if let Poll::Ready(v) = f.as_mut().poll(&mut cx) {
            return Some(v);
        }
        match deadline {
            None => std::thread::park(),
            Some(d) => {
                let left = d.saturating_duration_since(std::time::Instant::now());
                if left.is_zero() {
                    return None;
                }
                std::thread::park_timeout(left);
            }
        }
    }
}
