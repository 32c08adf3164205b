//! A small Vuer-compatible websocket server that runs in the same process.
//!
//! It speaks the Vuer wire protocol as vuer 0.1.6 does (binary msgpack
//! frames, one event per frame, path `/` only, a 4 MiB inbound limit closed
//! with 1009, pongs for pings, no pings of its own) and records what it
//! receives. It exists so that tests, benchmarks and the `vuer-client bench`
//! command have a peer without Python, and it can misbehave on purpose:
//! stall, read slowly, close with any code, drop connections, or send raw
//! bytes.
//!
//! Against hostile clients it stays bounded: frames are read with the
//! client's own reader (`codec::inframe`: lengths checked before any
//! arithmetic, memory following the bytes that arrive), a bad frame closes
//! that connection with 1002 or 1009, the event log is bounded in events
//! and bytes, the close codes kept are the latest 1024, connections are
//! limited ([`ServerOptions::max_connections`]) and a request must arrive
//! within [`ServerOptions::header_timeout`].
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use vuer_client_testkit::server::{LocalServer, ServerOptions};
//! let server = LocalServer::start(ServerOptions::default()).await?;
//! let mut client = vuer_client::VuerClient::connect(&server.uri()).await?;
//! client.publish(&vuer_client::DynEvent::new("HELLO").value("hi"))?;
//! // INIT first, then the event.
//! assert!(server.wait_until(|s| s.events >= 2, std::time::Duration::from_secs(5)).await);
//! assert_eq!(server.received()[1].event.etype(), "HELLO");
//! # Ok(()) }
//! ```

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::{Bytes, BytesMut};
use fastwebsockets::OpCode;
use http_body_util::{Either, Empty, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch, Notify};
use tokio_util::sync::CancellationToken;

use vuer_client::internals::frames::{op, parse_head, FrameError, FrameReader, Sender};
use vuer_client::{ServerEvent, Value};

/// A callback for every event the server decodes.
pub type EventHook = Arc<dyn Fn(&Received) + Send + Sync>;

/// What the server does, beyond recording.
#[derive(Clone)]
pub struct ServerOptions {
    /// Address to listen on. Default: `127.0.0.1:0` (a free port).
    pub addr: SocketAddr,
    /// Answer INIT with a `SET` of a small scene, as a Vuer app's spawn
    /// handler would. Default: true.
    pub scene_on_init: bool,
    /// Answer each event of this etype with an `UPSERT` of a Box whose
    /// position is the event's value (Vuer's remote-control example).
    /// Default: none.
    pub upsert_on: Option<String>,
    /// Decode and record events. Off: a counting sink for benchmarks: frame
    /// headers are parsed straight from large reads and payloads are
    /// skipped (not unmasked, not decoded), pings answered, close frames
    /// echoed; only the counters move. Default: true.
    pub decode: bool,
    /// Most events kept in [`LocalServer::received`] (counting goes on).
    /// Default: 100 000.
    pub record_limit: usize,
    /// Most bytes of events kept in [`LocalServer::received`] (the oldest
    /// are dropped first). Default: 256 MiB (with `record_limit` alone,
    /// 100 000 events of 4 MiB could be kept).
    pub record_bytes: usize,
    /// Most connections open at once; more are refused with 503.
    /// Default: 1024.
    pub max_connections: usize,
    /// Time a client has to send its whole upgrade request. Default: 10 s.
    pub header_timeout: Duration,
    /// Largest message accepted; bigger ones are closed with 1009, as
    /// aiohttp does. Default: 4 MiB.
    pub max_message: usize,
    /// Serve `wss://` with this configuration.
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// Called for every decoded event, on the connection's task.
    pub on_event: Option<EventHook>,
}

impl Default for ServerOptions {
    fn default() -> Self {
        ServerOptions {
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            scene_on_init: true,
            upsert_on: None,
            decode: true,
            record_limit: 100_000,
            record_bytes: 256 << 20,
            max_connections: 1024,
            header_timeout: Duration::from_secs(10),
            max_message: 4 << 20,
            tls: None,
            on_event: None,
        }
    }
}

impl std::fmt::Debug for ServerOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerOptions")
            .field("addr", &self.addr)
            .field("scene_on_init", &self.scene_on_init)
            .field("upsert_on", &self.upsert_on)
            .field("decode", &self.decode)
            .field("tls", &self.tls.is_some())
            .finish()
    }
}

/// An event the server received.
#[derive(Debug, Clone)]
pub struct Received {
    /// Which connection (counted from 0 in accept order).
    pub conn: u64,
    /// The decoded envelope; `data()` gives the event's `value`.
    pub event: ServerEvent,
    /// When it was read, nanoseconds since the Unix epoch.
    pub at_unix_ns: u64,
}

/// Counters of the server.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ServerStats {
    /// Connections accepted.
    pub connections: u64,
    /// Connections open now.
    pub open: u64,
    /// Data frames (binary or text messages) received.
    pub frames: u64,
    /// Events decoded.
    pub events: u64,
    /// Bytes of messages received.
    pub bytes: u64,
    /// Messages that did not decode as Vuer events.
    pub bad_messages: u64,
    /// INIT events received.
    pub inits: u64,
    /// Pings received.
    pub pings: u64,
    /// Close frames received from clients.
    pub closes: u64,
}

#[derive(Default)]
struct Counters {
    connections: AtomicU64,
    open: AtomicU64,
    frames: AtomicU64,
    events: AtomicU64,
    bytes: AtomicU64,
    bad_messages: AtomicU64,
    inits: AtomicU64,
    pings: AtomicU64,
    closes: AtomicU64,
}

enum Command {
    Frame(OpCode, Bytes),
    Raw(Bytes),
    Close(u16, String),
    Abort,
}

struct Conn {
    id: u64,
    tx: mpsc::Sender<Command>,
}

struct State {
    opts: ServerOptions,
    counters: Counters,
    /// Recorded events with their sizes, and the sizes' total.
    log: Mutex<(VecDeque<(Received, usize)>, usize)>,
    /// The latest close codes received ([`CLOSE_CODES_KEPT`] at most).
    close_codes: Mutex<VecDeque<(u16, String)>>,
    conns: Mutex<Vec<Conn>>,
    changed: Notify,
    /// Reading is paused while true.
    paused: watch::Sender<bool>,
    /// Messages per second each connection reads (0: unlimited), as f64 bits.
    read_rate: AtomicU64,
    refuse: AtomicBool,
    cancel: CancellationToken,
}

/// A running in-process server. Dropping it stops it.
pub struct LocalServer {
    addr: SocketAddr,
    tls: bool,
    state: Arc<State>,
}

impl std::fmt::Debug for LocalServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalServer")
            .field("addr", &self.addr)
            .finish()
    }
}

/// Nanoseconds since the Unix epoch, the clock [`Received::at_unix_ns`] uses.
pub fn now_unix_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

impl LocalServer {
    /// Binds and starts serving; the server is ready when this returns.
    pub async fn start(opts: ServerOptions) -> std::io::Result<LocalServer> {
        let listener = TcpListener::bind(opts.addr).await?;
        Ok(Self::from_listener(listener, opts))
    }

    /// Serves on an already bound listener.
    pub fn from_listener(listener: TcpListener, opts: ServerOptions) -> LocalServer {
        let addr = listener
            .local_addr()
            .expect("bound listener has an address");
        let tls = opts.tls.is_some();
        let state = Arc::new(State {
            opts,
            counters: Counters::default(),
            log: Mutex::new((VecDeque::new(), 0)),
            close_codes: Mutex::new(VecDeque::new()),
            conns: Mutex::new(Vec::new()),
            changed: Notify::new(),
            paused: watch::Sender::new(false),
            read_rate: AtomicU64::new(0f64.to_bits()),
            refuse: AtomicBool::new(false),
            cancel: CancellationToken::new(),
        });
        tokio::spawn(accept_loop(listener, state.clone()));
        LocalServer { addr, tls, state }
    }

    /// The address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `ws://127.0.0.1:PORT` (or `wss://localhost:PORT` with TLS).
    pub fn uri(&self) -> String {
        if self.tls {
            format!("wss://localhost:{}", self.addr.port())
        } else {
            format!("ws://{}", self.addr)
        }
    }

    /// The counters.
    pub fn stats(&self) -> ServerStats {
        let c = &self.state.counters;
        let g = |a: &AtomicU64| a.load(Ordering::Relaxed);
        ServerStats {
            connections: g(&c.connections),
            open: g(&c.open),
            frames: g(&c.frames),
            events: g(&c.events),
            bytes: g(&c.bytes),
            bad_messages: g(&c.bad_messages),
            inits: g(&c.inits),
            pings: g(&c.pings),
            closes: g(&c.closes),
        }
    }

    /// The events received so far (up to the record limit; oldest dropped).
    pub fn received(&self) -> Vec<Received> {
        self.state
            .log
            .lock()
            .unwrap()
            .0
            .iter()
            .map(|(r, _)| r.clone())
            .collect()
    }

    /// Removes and returns the recorded events.
    pub fn take_received(&self) -> Vec<Received> {
        let mut log = self.state.log.lock().unwrap();
        log.1 = 0;
        log.0.drain(..).map(|(r, _)| r).collect()
    }

    /// Close frames received from clients: (code, reason).
    pub fn close_codes(&self) -> Vec<(u16, String)> {
        self.state
            .close_codes
            .lock()
            .unwrap()
            .iter()
            .cloned()
            .collect()
    }

    /// Waits until `pred` holds for the stats (checked on every change),
    /// or `timeout` passes; returns whether it held.
    pub async fn wait_until(&self, pred: impl Fn(&ServerStats) -> bool, timeout: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let changed = self.state.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            if pred(&self.stats()) {
                return true;
            }
            // Counters also move without a notification (frames are
            // counted before decoding), so re-check at least every 50 ms.
            let step = (tokio::time::Instant::now() + Duration::from_millis(50)).min(deadline);
            tokio::select! {
                _ = &mut changed => {}
                _ = tokio::time::sleep_until(step) => {}
            }
            if tokio::time::Instant::now() >= deadline {
                return pred(&self.stats());
            }
        }
    }

    /// Stops reading from every connection (the kernel buffers fill, then
    /// the client's writes block): a stalled server.
    pub fn pause_reading(&self) {
        self.state.paused.send_replace(true);
    }

    /// Reads again after [`pause_reading`](Self::pause_reading).
    pub fn resume_reading(&self) {
        self.state.paused.send_replace(false);
    }

    /// Reads at most `per_second` messages per second per connection
    /// (`None`: as fast as possible): a slow server.
    pub fn set_read_rate(&self, per_second: Option<f64>) {
        self.state
            .read_rate
            .store(per_second.unwrap_or(0.0).to_bits(), Ordering::Relaxed);
    }

    /// Refuses new websocket upgrades with HTTP 503 while true.
    pub fn refuse_upgrades(&self, on: bool) {
        self.state.refuse.store(on, Ordering::Relaxed);
    }

    fn each_conn(&self, mut f: impl FnMut() -> Command) -> usize {
        let conns = self.state.conns.lock().unwrap();
        let mut n = 0;
        for c in conns.iter() {
            if c.tx.try_send(f()).is_ok() {
                n += 1;
            }
        }
        n
    }

    /// Sends a binary message (one frame) to every connection; returns how
    /// many got it.
    pub fn broadcast(&self, msg: Bytes) -> usize {
        self.each_conn(|| Command::Frame(OpCode::Binary, msg.clone()))
    }

    /// Sends a server event (`{ts, data, etype}`) to every connection.
    pub fn broadcast_event(&self, etype: &str, data: Value) -> usize {
        self.broadcast(server_event(etype, data))
    }

    /// Sends a text frame to every connection.
    pub fn broadcast_text(&self, text: &str) -> usize {
        self.each_conn(|| Command::Frame(OpCode::Text, Bytes::copy_from_slice(text.as_bytes())))
    }

    /// Writes raw bytes to every connection's socket, as they are (for
    /// tests of malformed frames).
    pub fn send_raw(&self, bytes: Bytes) -> usize {
        self.each_conn(|| Command::Raw(bytes.clone()))
    }

    /// Sends a close frame with `code` and `reason` to every connection,
    /// then closes it.
    pub fn close_all(&self, code: u16, reason: &str) -> usize {
        self.each_conn(|| Command::Close(code, reason.to_owned()))
    }

    /// Drops every connection without a close frame (the TCP connection is
    /// closed as if the server process had died).
    pub fn abort_all(&self) -> usize {
        self.each_conn(|| Command::Abort)
    }

    /// Stops the server: no more connections, every open one dropped.
    pub fn shutdown(&self) {
        self.state.cancel.cancel();
    }
}

impl Drop for LocalServer {
    fn drop(&mut self) {
        self.state.cancel.cancel();
    }
}

/// Encodes a server event the way `VuerSession.send` does:
/// `{ts, data, etype}` with `ts` in integer milliseconds.
pub fn server_event(etype: &str, data: Value) -> Bytes {
    let ms = now_unix_ns() / 1_000_000;
    Value::map([
        ("ts", Value::from(ms)),
        ("data", data),
        ("etype", Value::from(etype)),
    ])
    .to_msgpack()
    .into()
}

fn default_scene() -> Value {
    let node =
        |key: &str, tag: &str| Value::map([("key", Value::from(key)), ("tag", Value::from(tag))]);
    Value::map([
        (
            "children",
            Value::Array(vec![Value::map([
                ("key", Value::from("box")),
                ("tag", Value::from("Box")),
                ("args", Value::from([0.3f32, 0.3, 0.3])),
                (
                    "position",
                    Value::Array(vec![Value::Int(0), Value::F32(0.5), Value::Int(0)]),
                ),
            ])]),
        ),
        ("key", Value::from("scene")),
        ("tag", Value::from("Scene")),
        ("up", Value::from([0, 1, 0])),
        ("bgChildren", Value::Array(vec![node("grid", "Grid")])),
    ])
}

async fn accept_loop(listener: TcpListener, state: Arc<State>) {
    let acceptor = state.opts.tls.clone().map(tokio_rustls::TlsAcceptor::from);
    loop {
        let (tcp, _) = tokio::select! {
            _ = state.cancel.cancelled() => return,
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    tracing::debug!(error = %e, "accept failed");
                    continue;
                }
            },
        };
        let _ = tcp.set_nodelay(true);
        let state = state.clone();
        let acceptor = acceptor.clone();
        tokio::spawn(async move {
            match acceptor {
                Some(a) => match a.accept(tcp).await {
                    Ok(tls) => serve_http(tls, state).await,
                    Err(e) => tracing::debug!(error = %e, "TLS accept failed"),
                },
                None => serve_http(tcp, state).await,
            }
        });
    }
}

async fn serve_http<S>(io: S, state: Arc<State>)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let header_timeout = state.opts.header_timeout;
    let service = service_fn(move |req| handle(req, state.clone()));
    // A client that never finishes its request is dropped after the
    // header timeout.
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(header_timeout)
        .serve_connection(TokioIo::new(io), service)
        .with_upgrades();
    if let Err(e) = conn.await {
        tracing::debug!(error = %e, "http connection ended");
    }
}

type Body = Either<Empty<Bytes>, Full<Bytes>>;

async fn handle(
    mut req: Request<Incoming>,
    state: Arc<State>,
) -> Result<Response<Body>, std::convert::Infallible> {
    let text = |status: StatusCode, body: &'static str| {
        Response::builder()
            .status(status)
            .body(Either::Right(Full::new(Bytes::from_static(
                body.as_bytes(),
            ))))
            .expect("static response")
    };
    if req.uri().path() != "/" {
        return Ok(text(StatusCode::NOT_FOUND, "404: Not Found"));
    }
    if !fastwebsockets::upgrade::is_upgrade_request(&req) {
        return Ok(text(StatusCode::OK, "vuer-client local server"));
    }
    if state.refuse.load(Ordering::Relaxed) {
        return Ok(text(StatusCode::SERVICE_UNAVAILABLE, "refusing upgrades"));
    }
    if state.counters.open.load(Ordering::Relaxed) >= state.opts.max_connections as u64 {
        return Ok(text(
            StatusCode::SERVICE_UNAVAILABLE,
            "too many connections",
        ));
    }
    match fastwebsockets::upgrade::upgrade(&mut req) {
        Ok((resp, fut)) => {
            tokio::spawn(async move {
                match fut.await {
                    Ok(ws) => run_conn(ws.into_inner(), state).await,
                    Err(e) => tracing::debug!(error = %e, "upgrade failed"),
                }
            });
            let (parts, _) = resp.into_parts();
            Ok(Response::from_parts(parts, Either::Left(Empty::new())))
        }
        Err(e) => {
            tracing::debug!(error = %e, "bad upgrade request");
            Ok(text(StatusCode::BAD_REQUEST, "bad websocket upgrade"))
        }
    }
}

fn server_frame(out: &mut Vec<u8>, opcode: OpCode, payload: &[u8]) {
    out.push(0x80 | opcode as u8);
    let n = payload.len();
    if n < 126 {
        out.push(n as u8);
    } else if n <= u16::MAX as usize {
        out.push(126);
        out.extend_from_slice(&(n as u16).to_be_bytes());
    } else {
        out.push(127);
        out.extend_from_slice(&(n as u64).to_be_bytes());
    }
    out.extend_from_slice(payload);
}

fn close_payload(code: u16, reason: &str) -> Vec<u8> {
    let mut p = code.to_be_bytes().to_vec();
    p.extend_from_slice(reason.as_bytes());
    p
}

async fn run_conn(io: TokioIo<hyper::upgrade::Upgraded>, state: Arc<State>) {
    let id = state.counters.connections.fetch_add(1, Ordering::Relaxed);
    state.counters.open.fetch_add(1, Ordering::Relaxed);
    let (tx, mut rx) = mpsc::channel::<Command>(4096);
    state
        .conns
        .lock()
        .unwrap()
        .push(Conn { id, tx: tx.clone() });
    state.changed.notify_waiters();

    let (r, mut w) = tokio::io::split(io);
    let conn_cancel = state.cancel.child_token();
    let writer_cancel = conn_cancel.clone();
    let writer = tokio::spawn(async move {
        let mut buf = Vec::new();
        loop {
            // Commands first: a close reply queued just before the reader
            // ended (and cancelled the connection) still goes out.
            let cmd = tokio::select! {
                biased;
                c = rx.recv() => match c { Some(c) => c, None => return },
                _ = writer_cancel.cancelled() => return,
            };
            buf.clear();
            match cmd {
                Command::Frame(op, payload) => server_frame(&mut buf, op, &payload),
                Command::Raw(bytes) => buf.extend_from_slice(&bytes),
                Command::Close(code, reason) => {
                    server_frame(&mut buf, OpCode::Close, &close_payload(code, &reason));
                    let _ = w.write_all(&buf).await;
                    let _ = w.flush().await;
                    writer_cancel.cancel();
                    return;
                }
                Command::Abort => {
                    writer_cancel.cancel();
                    return;
                }
            }
            if w.write_all(&buf).await.is_err() || w.flush().await.is_err() {
                writer_cancel.cancel();
                return;
            }
        }
    });

    tokio::select! {
        _ = conn_cancel.cancelled() => {}
        _ = async {
            if state.opts.decode {
                read_loop(r, &state, id, &tx).await
            } else {
                count_loop(r, &state, &tx).await
            }
        } => {}
    }
    conn_cancel.cancel();
    let _ = writer.await;
    state.conns.lock().unwrap().retain(|c| c.id != id);
    state.counters.open.fetch_sub(1, Ordering::Relaxed);
    state.changed.notify_waiters();
}

/// The latest close codes a server keeps.
const CLOSE_CODES_KEPT: usize = 1024;

fn record_close(state: &State, code: u16, reason: String) {
    let mut codes = state.close_codes.lock().unwrap();
    if codes.len() >= CLOSE_CODES_KEPT {
        codes.pop_front();
    }
    codes.push_back((code, reason));
}

/// The close frame's answer to a frame reader's refusal.
fn refusal(e: FrameError) -> Command {
    match e {
        FrameError::Protocol(reason) => Command::Close(1002, reason.into()),
        FrameError::TooBig { .. } => Command::Close(1009, "message too big".into()),
    }
}

async fn read_loop<R: AsyncRead + Unpin>(
    mut r: R,
    state: &Arc<State>,
    id: u64,
    tx: &mpsc::Sender<Command>,
) {
    use tokio::io::AsyncReadExt;
    let mut reader = FrameReader::new(Sender::Client, state.opts.max_message);
    let mut paused = state.paused.subscribe();
    let mut partial: Option<(u8, BytesMut)> = None;
    let mut next_read = tokio::time::Instant::now();
    let c = &state.counters;
    loop {
        // Stall and rate limit before the next frame.
        while *paused.borrow_and_update() {
            if paused.changed().await.is_err() {
                return;
            }
        }
        let rate = f64::from_bits(state.read_rate.load(Ordering::Relaxed));
        if rate > 0.0 {
            tokio::time::sleep_until(next_read).await;
            next_read = next_read.max(tokio::time::Instant::now() - Duration::from_millis(100))
                + Duration::from_secs_f64(1.0 / rate);
        }
        let frame = loop {
            match reader.next_frame() {
                Ok(Some(f)) => break f,
                Ok(None) => {
                    reader.reserve_for_read();
                    match r.read_buf(reader.buffer()).await {
                        Ok(0) | Err(_) => {
                            tracing::debug!(conn = id, "server read ended");
                            return;
                        }
                        Ok(_) => {}
                    }
                }
                Err(e) => {
                    tracing::debug!(error = ?e, conn = id, "client frame refused");
                    let _ = tx.try_send(refusal(e));
                    return;
                }
            }
        };
        let (op, data) = match frame.opcode {
            op::PING => {
                c.pings.fetch_add(1, Ordering::Relaxed);
                let _ = tx.try_send(Command::Frame(OpCode::Pong, frame.payload.freeze()));
                continue;
            }
            op::PONG => continue,
            op::CLOSE => {
                c.closes.fetch_add(1, Ordering::Relaxed);
                let (code, reason) = if frame.payload.len() >= 2 {
                    (
                        u16::from_be_bytes([frame.payload[0], frame.payload[1]]),
                        String::from_utf8_lossy(&frame.payload[2..]).into_owned(),
                    )
                } else {
                    (1005, String::new())
                };
                record_close(state, code, reason);
                let reply = if code == 1005 { 1000 } else { code };
                let _ = tx.try_send(Command::Close(reply, String::new()));
                state.changed.notify_waiters();
                return;
            }
            op::CONTINUATION => {
                let Some((op, mut buf)) = partial.take() else {
                    let _ = tx.try_send(Command::Close(
                        1002,
                        "continuation without a message".into(),
                    ));
                    return;
                };
                if buf.len() + frame.payload.len() > state.opts.max_message {
                    let _ = tx.try_send(Command::Close(1009, "message too big".into()));
                    return;
                }
                buf.extend_from_slice(&frame.payload);
                if !frame.fin {
                    partial = Some((op, buf));
                    continue;
                }
                (op, buf)
            }
            op => {
                if partial.is_some() {
                    let _ = tx.try_send(Command::Close(
                        1002,
                        "new message before the last ended".into(),
                    ));
                    return;
                }
                if !frame.fin {
                    partial = Some((op, frame.payload));
                    continue;
                }
                (op, frame.payload)
            }
        };
        c.frames.fetch_add(1, Ordering::Relaxed);
        c.bytes.fetch_add(data.len() as u64, Ordering::Relaxed);
        if !state.opts.decode {
            continue;
        }
        let at_unix_ns = now_unix_ns();
        let decoded = if op == op::TEXT {
            // Vuer 0.1.6 closes the session on any text frame.
            Err(())
        } else {
            ServerEvent::from_msgpack(data.freeze()).map_err(|_| ())
        };
        let Ok(event) = decoded else {
            c.bad_messages.fetch_add(1, Ordering::Relaxed);
            state.changed.notify_waiters();
            // Like the real server: a bad message ends the session with 1000.
            let _ = tx.try_send(Command::Close(1000, String::new()));
            return;
        };
        c.events.fetch_add(1, Ordering::Relaxed);
        if event.etype() == "INIT" {
            c.inits.fetch_add(1, Ordering::Relaxed);
            if state.opts.scene_on_init {
                let _ = tx.try_send(Command::Frame(
                    OpCode::Binary,
                    server_event("SET", default_scene()),
                ));
            }
        }
        if state.opts.upsert_on.as_deref() == Some(event.etype()) {
            let pos = event.data().unwrap_or(Value::Nil);
            let pos = match pos.get("position") {
                Some(p) => p.clone(),
                None => pos,
            };
            let node = Value::map([
                ("key", Value::from("box")),
                ("tag", Value::from("Box")),
                ("args", Value::from([0.3f32, 0.3, 0.3])),
                ("position", pos),
            ]);
            let data = Value::map([("nodes", Value::Array(vec![node])), ("to", Value::Nil)]);
            let _ = tx.try_send(Command::Frame(OpCode::Binary, server_event("UPSERT", data)));
        }
        let received = Received {
            conn: id,
            event,
            at_unix_ns,
        };
        if let Some(cb) = &state.opts.on_event {
            cb(&received);
        }
        {
            // Bounded in events and in bytes, the oldest dropped first.
            let size = received.event.as_msgpack().len();
            let mut log = state.log.lock().unwrap();
            let (events, bytes) = &mut *log;
            events.push_back((received, size));
            *bytes += size;
            while events.len() > state.opts.record_limit || *bytes > state.opts.record_bytes {
                match events.pop_front() {
                    Some((_, s)) => *bytes -= s,
                    None => break,
                }
            }
        }
        state.changed.notify_waiters();
    }
}

/// The counting sink: parses client frame headers out of 256 KiB reads and
/// skips payloads, so it costs a few nanoseconds per frame and a benchmark
/// measures the client, not the server.
async fn count_loop<R: AsyncRead + Unpin>(
    mut r: R,
    state: &Arc<State>,
    tx: &mpsc::Sender<Command>,
) {
    use tokio::io::AsyncReadExt;
    let c = &state.counters;
    let mut buf = vec![0u8; 256 << 10];
    let mut filled = 0usize;
    // Bytes of the current frame's payload still to skip.
    let mut skip = 0usize;
    let mut paused = state.paused.subscribe();
    loop {
        while *paused.borrow_and_update() {
            if paused.changed().await.is_err() {
                return;
            }
        }
        let n = match r.read(&mut buf[filled..]).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        filled += n;
        let mut pos = 0usize;
        let mut frames = 0u64;
        let mut bytes = 0u64;
        loop {
            if skip > 0 {
                let k = skip.min(filled - pos);
                skip -= k;
                pos += k;
                if skip > 0 {
                    break;
                }
            }
            let avail = &buf[pos..filled];
            // The shared parser checks the form and the lengths before any
            // arithmetic on them (a hostile header once overflowed here).
            let head = match parse_head(avail, Sender::Client, state.opts.max_message) {
                Ok(Some(h)) => h,
                Ok(None) => break,
                Err(e) => {
                    let _ = tx.try_send(refusal(e));
                    c.frames.fetch_add(frames, Ordering::Relaxed);
                    c.bytes.fetch_add(bytes, Ordering::Relaxed);
                    return;
                }
            };
            let (op, hdr, len) = (head.opcode, head.head_len, head.len as usize);
            if op >= 0x8 {
                // Control frame: needs its payload (at most 125 bytes).
                if avail.len() < hdr + len {
                    break;
                }
                let mut payload = avail[hdr..hdr + len].to_vec();
                if let Some(m) = head.mask {
                    for (i, b) in payload.iter_mut().enumerate() {
                        *b ^= m[i & 3];
                    }
                }
                match op {
                    0x9 => {
                        c.pings.fetch_add(1, Ordering::Relaxed);
                        let _ = tx.try_send(Command::Frame(OpCode::Pong, payload.into()));
                    }
                    0x8 => {
                        c.closes.fetch_add(1, Ordering::Relaxed);
                        let code = if payload.len() >= 2 {
                            u16::from_be_bytes([payload[0], payload[1]])
                        } else {
                            1005
                        };
                        record_close(state, code, String::new());
                        let _ = tx.try_send(Command::Close(
                            if code == 1005 { 1000 } else { code },
                            String::new(),
                        ));
                        c.frames.fetch_add(frames, Ordering::Relaxed);
                        c.bytes.fetch_add(bytes, Ordering::Relaxed);
                        state.changed.notify_waiters();
                        return;
                    }
                    _ => {}
                }
                pos += hdr + len;
                continue;
            }
            if head.fin {
                frames += 1;
                bytes += len as u64;
            }
            pos += hdr;
            skip = len;
        }
        buf.copy_within(pos..filled, 0);
        filled -= pos;
        if frames > 0 {
            c.frames.fetch_add(frames, Ordering::Relaxed);
            c.events.fetch_add(frames, Ordering::Relaxed);
            c.bytes.fetch_add(bytes, Ordering::Relaxed);
            state.changed.notify_waiters();
        }
    }
}
