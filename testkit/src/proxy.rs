//! An in-process TCP proxy for fault injection.
//!
//! It listens on `127.0.0.1:0` and forwards every accepted connection to a
//! target address, one task per connection. While it runs, the test can
//! break the link the ways real networks break:
//!
//! * [`stall`](Proxy::stall) / [`resume`](Proxy::resume): stop forwarding
//!   in one or both directions without closing (bytes wait, the kernel
//!   buffers fill, the peer's writes block); resuming delivers them.
//! * [`cut`](Proxy::cut): close both sides of every open connection, with a
//!   FIN ([`Cut::Fin`]) or an RST ([`Cut::Reset`], via `SO_LINGER 0`).
//! * [`black_hole`](Proxy::black_hole): every open connection stops
//!   forwarding in both directions for good and is never closed: a
//!   half-open link (the peer's host or Wi-Fi is gone). Nothing is read any
//!   more, so once the proxy's small kernel buffers are full
//!   ([`ProxyOptions::socket_buffer`]) nothing the client writes is
//!   acknowledged either.
//! * [`set_bandwidth`](Proxy::set_bandwidth): limit a direction to so many
//!   bytes per second (a slow link).
//!
//! Stall and bandwidth settings apply to open connections and to the ones
//! accepted later; cut and black hole apply to the connections open at the
//! time of the call. New connections work normally after a cut or a black
//! hole (the network came back). Dropping the proxy closes everything.
//!
//! ```ignore
//! let proxy = Proxy::start(server.addr()).await?;
//! let client = VuerClient::connect(&proxy.uri()).await?;
//! proxy.stall(Direction::Both);   // the link freezes
//! proxy.resume(Direction::Both);  // and recovers
//! proxy.cut(Cut::Reset);          // the connection is reset
//! ```

use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// A direction of traffic through the proxy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// Client to target (what the client writes).
    Up,
    /// Target to client (what the server writes).
    Down,
    /// Both directions.
    Both,
}

impl Direction {
    fn has_up(self) -> bool {
        matches!(self, Direction::Up | Direction::Both)
    }
    fn has_down(self) -> bool {
        matches!(self, Direction::Down | Direction::Both)
    }
}

/// How [`Proxy::cut`] closes a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cut {
    /// An orderly close (FIN) on both sides.
    Fin,
    /// An abortive close (RST) on both sides (`SO_LINGER` 0).
    Reset,
}

/// Options of a [`Proxy`].
#[derive(Debug, Clone, Default)]
pub struct ProxyOptions {
    /// `SO_RCVBUF` and `SO_SNDBUF` of the proxy's own sockets, both sides.
    /// Small buffers make stalls and black holes bite sooner (less data
    /// disappears into the proxy) and make bandwidth limits realistic.
    /// Default: `None` (the kernel's auto-tuning).
    pub socket_buffer: Option<u32>,
    /// Initial bandwidth limit client → target, bytes per second.
    pub up_bandwidth: Option<u64>,
    /// Initial bandwidth limit target → client, bytes per second.
    pub down_bandwidth: Option<u64>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq)]
struct Settings {
    up_stalled: bool,
    down_stalled: bool,
    up_rate: Option<u64>,
    down_rate: Option<u64>,
}

struct Link {
    id: u64,
    /// Cancelled to cut; the flag says how.
    cut: CancellationToken,
    reset: Arc<AtomicBool>,
    /// Set once: the link forwards nothing any more and is never closed.
    black_hole: Arc<watch::Sender<bool>>,
}

struct Inner {
    target: Mutex<SocketAddr>,
    opts: ProxyOptions,
    settings: watch::Sender<Settings>,
    links: Mutex<Vec<Link>>,
    accepted: AtomicU64,
    open: AtomicU64,
    up_bytes: AtomicU64,
    down_bytes: AtomicU64,
    stop: CancellationToken,
}

/// A running proxy. Dropping it closes the listener and every connection.
pub struct Proxy {
    addr: SocketAddr,
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Proxy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Proxy")
            .field("addr", &self.addr)
            .field("target", &*self.inner.target.lock().unwrap())
            .finish()
    }
}

impl Proxy {
    /// Starts a proxy to `target` with default options; it is accepting
    /// when this returns.
    pub async fn start(target: SocketAddr) -> io::Result<Proxy> {
        Self::start_with(target, ProxyOptions::default()).await
    }

    /// Starts a proxy to `target` with `opts`.
    pub async fn start_with(target: SocketAddr, opts: ProxyOptions) -> io::Result<Proxy> {
        let socket = TcpSocket::new_v4()?;
        if let Some(b) = opts.socket_buffer {
            // Accepted sockets inherit the listener's buffer sizes.
            socket.set_recv_buffer_size(b)?;
            socket.set_send_buffer_size(b)?;
        }
        socket.bind(SocketAddr::from(([127, 0, 0, 1], 0)))?;
        let listener = socket.listen(128)?;
        let addr = listener.local_addr()?;
        let settings = Settings {
            up_rate: opts.up_bandwidth,
            down_rate: opts.down_bandwidth,
            ..Settings::default()
        };
        let inner = Arc::new(Inner {
            target: Mutex::new(target),
            opts,
            settings: watch::Sender::new(settings),
            links: Mutex::new(Vec::new()),
            accepted: AtomicU64::new(0),
            open: AtomicU64::new(0),
            up_bytes: AtomicU64::new(0),
            down_bytes: AtomicU64::new(0),
            stop: CancellationToken::new(),
        });
        tokio::spawn(accept_loop(listener, inner.clone()));
        Ok(Proxy { addr, inner })
    }

    /// The address the proxy listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `ws://127.0.0.1:PORT`, the URI a client connects to.
    pub fn uri(&self) -> String {
        format!("ws://{}", self.addr)
    }

    /// Forwards new connections to `target` from now on (open ones keep
    /// theirs).
    pub fn set_target(&self, target: SocketAddr) {
        *self.inner.target.lock().unwrap() = target;
    }

    /// Stops forwarding in `dir` without closing anything: bytes already
    /// read are held, nothing more is read, so the kernel buffers fill and
    /// the sender's writes eventually block. Applies to new connections too.
    pub fn stall(&self, dir: Direction) {
        self.inner.settings.send_modify(|s| {
            s.up_stalled |= dir.has_up();
            s.down_stalled |= dir.has_down();
        });
    }

    /// Forwards again in `dir` after [`stall`](Self::stall); held bytes are
    /// delivered in order.
    pub fn resume(&self, dir: Direction) {
        self.inner.settings.send_modify(|s| {
            s.up_stalled &= !dir.has_up();
            s.down_stalled &= !dir.has_down();
        });
    }

    /// Limits `dir` to `bytes_per_second` (`None`: unlimited), for open and
    /// new connections.
    pub fn set_bandwidth(&self, dir: Direction, bytes_per_second: Option<u64>) {
        self.inner.settings.send_modify(|s| {
            if dir.has_up() {
                s.up_rate = bytes_per_second;
            }
            if dir.has_down() {
                s.down_rate = bytes_per_second;
            }
        });
    }

    /// Closes both sides of every open connection (bytes held by the proxy
    /// are discarded); returns how many were cut.
    pub fn cut(&self, how: Cut) -> usize {
        let links = std::mem::take(&mut *self.inner.links.lock().unwrap());
        for l in &links {
            l.reset.store(how == Cut::Reset, Ordering::Relaxed);
            l.cut.cancel();
        }
        links.len()
    }

    /// Turns every open connection into a half-open one: nothing more is
    /// forwarded or even read in either direction, bytes held are
    /// discarded, and neither side is ever closed (until [`cut`](Self::cut)
    /// or the proxy is dropped). Returns how many connections it hit.
    pub fn black_hole(&self) -> usize {
        let links = self.inner.links.lock().unwrap();
        for l in links.iter() {
            l.black_hole.send_replace(true);
        }
        links.len()
    }

    /// Connections accepted so far.
    pub fn accepted(&self) -> u64 {
        self.inner.accepted.load(Ordering::Relaxed)
    }

    /// Connections open now (black-holed ones included).
    pub fn open(&self) -> u64 {
        self.inner.open.load(Ordering::Relaxed)
    }

    /// Bytes forwarded so far: (client → target, target → client).
    pub fn forwarded(&self) -> (u64, u64) {
        (
            self.inner.up_bytes.load(Ordering::Relaxed),
            self.inner.down_bytes.load(Ordering::Relaxed),
        )
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.inner.stop.cancel();
    }
}

async fn accept_loop(listener: TcpListener, inner: Arc<Inner>) {
    let mut next_id = 0u64;
    loop {
        let client = tokio::select! {
            _ = inner.stop.cancelled() => return,
            r = listener.accept() => match r {
                Ok((s, _)) => s,
                Err(_) => continue,
            },
        };
        let id = next_id;
        next_id += 1;
        inner.accepted.fetch_add(1, Ordering::Relaxed);
        let link = Link {
            id,
            cut: inner.stop.child_token(),
            reset: Arc::new(AtomicBool::new(false)),
            black_hole: Arc::new(watch::Sender::new(false)),
        };
        let (cut, reset, hole) = (
            link.cut.clone(),
            link.reset.clone(),
            link.black_hole.clone(),
        );
        inner.links.lock().unwrap().push(link);
        tokio::spawn(run_link(inner.clone(), id, client, cut, reset, hole));
    }
}

async fn connect_target(inner: &Inner) -> io::Result<TcpStream> {
    let target = *inner.target.lock().unwrap();
    let socket = if target.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    if let Some(b) = inner.opts.socket_buffer {
        socket.set_recv_buffer_size(b)?;
        socket.set_send_buffer_size(b)?;
    }
    socket.connect(target).await
}

async fn run_link(
    inner: Arc<Inner>,
    id: u64,
    mut client: TcpStream,
    cut: CancellationToken,
    reset: Arc<AtomicBool>,
    hole: Arc<watch::Sender<bool>>,
) {
    inner.open.fetch_add(1, Ordering::Relaxed);
    let _ = client.set_nodelay(true);
    let server = tokio::select! {
        _ = cut.cancelled() => None,
        r = connect_target(&inner) => r.ok(),
    };
    if let Some(mut server) = server {
        let _ = server.set_nodelay(true);
        {
            let (cr, cw) = client.split();
            let (sr, sw) = server.split();
            let up = pump(cr, sw, &inner, true, hole.subscribe());
            let down = pump(sr, cw, &inner, false, hole.subscribe());
            tokio::select! {
                _ = cut.cancelled() => {}
                // One side closed: close the other (after the surviving
                // direction has nothing more to say, as a real path would).
                _ = async { tokio::join!(up, down) } => {}
            }
        }
        if reset.load(Ordering::Relaxed) {
            let _ = server.set_zero_linger();
        }
        drop(server);
    }
    if reset.load(Ordering::Relaxed) {
        let _ = client.set_zero_linger();
    }
    drop(client);
    inner.links.lock().unwrap().retain(|l| l.id != id);
    inner.open.fetch_sub(1, Ordering::Relaxed);
}

/// Copies one direction until EOF or an error, obeying stalls, bandwidth
/// limits and the black hole. At EOF the write side is shut down (FIN
/// passes through).
async fn pump(
    mut from: tokio::net::tcp::ReadHalf<'_>,
    mut to: tokio::net::tcp::WriteHalf<'_>,
    inner: &Inner,
    up: bool,
    mut hole: watch::Receiver<bool>,
) {
    let mut settings = inner.settings.subscribe();
    let stalled = |s: &Settings| if up { s.up_stalled } else { s.down_stalled };
    let rate = |s: &Settings| if up { s.up_rate } else { s.down_rate };
    let counter = if up {
        &inner.up_bytes
    } else {
        &inner.down_bytes
    };
    let mut buf = vec![0u8; 64 << 10];
    let mut next_send = Instant::now();
    loop {
        // Wait while stalled (nothing is read: backpressure reaches the
        // sender). A black hole never returns.
        wait_open(&mut settings, &mut hole, &stalled).await;
        let limit = rate(&settings.borrow());
        // Small reads under a bandwidth limit keep the flow smooth.
        let chunk = limit.map_or(buf.len(), |r| (r as usize / 50).clamp(1, buf.len()));
        let n = tokio::select! {
            r = from.read(&mut buf[..chunk]) => match r {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            },
            _ = until_black_hole(&mut hole) => std::future::pending().await,
        };
        // A stall that began during the read holds these bytes.
        wait_open(&mut settings, &mut hole, &stalled).await;
        let limit = rate(&settings.borrow());
        if let Some(r) = limit.filter(|r| *r > 0) {
            let now = Instant::now();
            next_send = next_send.max(now) + Duration::from_secs_f64(n as f64 / r as f64);
            tokio::select! {
                _ = tokio::time::sleep_until(next_send) => {}
                _ = until_black_hole(&mut hole) => std::future::pending().await,
            }
        }
        let written = tokio::select! {
            r = to.write_all(&buf[..n]) => r.is_ok(),
            _ = until_black_hole(&mut hole) => std::future::pending().await,
        };
        if !written {
            break;
        }
        counter.fetch_add(n as u64, Ordering::Relaxed);
    }
    let _ = to.shutdown().await;
}

/// Returns once the link is black-holed.
async fn until_black_hole(hole: &mut watch::Receiver<bool>) {
    if hole.wait_for(|h| *h).await.is_err() {
        std::future::pending::<()>().await;
    }
}

async fn wait_open(
    settings: &mut watch::Receiver<Settings>,
    hole: &mut watch::Receiver<bool>,
    stalled: &impl Fn(&Settings) -> bool,
) {
    loop {
        if *hole.borrow_and_update() {
            // Half-open for good: hold everything, never close.
            std::future::pending::<()>().await;
        }
        if !stalled(&settings.borrow_and_update()) {
            return;
        }
        tokio::select! {
            r = settings.changed() => if r.is_err() { std::future::pending::<()>().await },
            _ = hole.changed() => {}
        }
    }
}
