//! Client configuration: a builder with every option, each documented with
//! its default and the reason for it.

use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::CertificateDer;

use crate::connection::socket::SocketOptions;
use crate::connection::tls::TlsOptions;
use crate::connection::ConnectOptions;
use crate::error::ConnectError;
use crate::pacing::Pacing;
use crate::reconnect::Reconnect;
use crate::ring::{Overflow, RingLimits};
use crate::value::Value;

/// The longest duration a setting takes; longer ones are clamped to it (100
/// years), so that no deadline computed from a setting overflows.
pub(crate) const MAX_DURATION: Duration = Duration::from_secs(100 * 365 * 86_400);

fn clamp_duration(d: Duration) -> Duration {
    d.min(MAX_DURATION)
}

/// The largest [`ClientBuilder::max_queued_bytes`]: 1 GiB. The ring
/// addresses queued bodies with 32-bit offsets, and its arena holds up to
/// twice what is live before it compacts.
pub const MAX_QUEUED_BYTES_LIMIT: usize = 1 << 30;

/// Default server URI, as in the Python client.
pub const DEFAULT_URI: &str = "ws://localhost:8012";
/// Default inbound message limit (Python client's `WEBSOCKET_MAX_SIZE`).
pub const DEFAULT_MAX_INBOUND_MESSAGE: usize = 256 << 20;
/// The Vuer server's limit for one inbound message (aiohttp's default); it
/// closes the connection with 1009 above it.
pub const DEFAULT_MAX_OUTGOING_MESSAGE: usize = 4 << 20;

/// What to do with inbound events when the application does not read them
/// fast enough.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum InboundPolicy {
    /// Drop the oldest queued event (counted in
    /// [`Stats::inbound_dropped`](crate::Stats::inbound_dropped)) to make
    /// room. The default: a streaming client often never reads what the
    /// server sends back (Vuer answers many events with an `UPSERT`), and it
    /// must neither stall nor grow.
    #[default]
    DropOldest,
    /// Stop reading the socket until the application makes room. Nothing is
    /// dropped, and the server is slowed down by TCP flow control instead.
    /// Keepalive does not declare the server dead while reading is paused.
    Backpressure,
}

/// The full configuration (built by [`ClientBuilder`]).
#[derive(Clone)]
pub(crate) struct Config {
    pub uri: String,
    /// What opening a connection needs (timeout, TCP and TLS options,
    /// headers).
    pub connect: ConnectOptions,
    pub init: Option<Vec<(String, Value)>>,
    pub max_inbound_message: usize,
    pub max_outgoing_message: usize,
    pub all_f32: bool,
    pub queue: RingLimits,
    pub overflow: Overflow,
    pub max_age: Option<Duration>,
    pub batch_max_events: usize,
    pub batch_max_bytes: usize,
    pub max_flush_rate: Option<f64>,
    pub inbound_max_events: usize,
    pub inbound_max_bytes: usize,
    pub inbound_policy: InboundPolicy,
    pub ping_interval: Option<Duration>,
    pub keepalive_timeout: Option<Duration>,
    pub close_timeout: Duration,
    pub reconnect: Option<Reconnect>,
    pub restore_state: bool,
    pub retry_first_connect: bool,
    pub pacing: Option<Pacing>,
    pub realtime_poll: Option<Duration>,
}

impl std::fmt::Debug for Config {
    /// The URI redacted ([`redact_uri`](crate::redact_uri)) and header
    /// values hidden: they may carry credentials.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let headers: Vec<(&str, &str)> = self
            .connect
            .headers
            .iter()
            .map(|(k, _)| (k.as_str(), "<redacted>"))
            .collect();
        f.debug_struct("Config")
            .field("uri", &crate::redact_uri(&self.uri))
            .field("headers", &headers)
            .field("tls", &self.connect.tls)
            .field("queue", &self.queue)
            .field("overflow", &self.overflow)
            .field("pacing", &self.pacing)
            .field("reconnect", &self.reconnect)
            .field("close_timeout", &self.close_timeout)
            .finish_non_exhaustive()
    }
}

impl Default for Config {
    fn default() -> Self {
        Config {
            uri: DEFAULT_URI.to_owned(),
            connect: ConnectOptions {
                connect_timeout: Duration::from_secs(10),
                tcp_nodelay: true,
                headers: Vec::new(),
                tls: TlsOptions {
                    verify: true,
                    ..Default::default()
                },
                socket: SocketOptions::default(),
            },
            init: Some(default_init_info()),
            max_inbound_message: DEFAULT_MAX_INBOUND_MESSAGE,
            max_outgoing_message: DEFAULT_MAX_OUTGOING_MESSAGE,
            all_f32: false,
            queue: RingLimits {
                max_items: 65_536,
                max_bytes: 64 << 20,
                max_keys: 65_536,
            },
            overflow: Overflow::Reject,
            max_age: None,
            batch_max_events: 16_384,
            batch_max_bytes: 256 << 10,
            max_flush_rate: None,
            inbound_max_events: 4096,
            inbound_max_bytes: 8 << 20,
            inbound_policy: InboundPolicy::DropOldest,
            ping_interval: Some(Duration::from_secs(5)),
            keepalive_timeout: Some(Duration::from_secs(15)),
            close_timeout: Duration::from_secs(5),
            reconnect: Some(Reconnect::default()),
            restore_state: true,
            retry_first_connect: false,
            pacing: Some(Pacing::default()),
            realtime_poll: None,
        }
    }
}

/// Builds a [`VuerClient`](crate::VuerClient). Every option has a default; the three the Python
/// client reads from the environment are read here too.
///
/// ```no_run
/// # async fn run() -> Result<(), vuer_client::ConnectError> {
/// use std::time::Duration;
/// let client = vuer_client::VuerClient::builder()
///     .uri("ws://localhost:8012")
///     .max_age(Duration::from_millis(100))
///     .init_field("robot", "ur5e")
///     .connect()
///     .await?;
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct ClientBuilder {
    pub(crate) config: Config,
    errors: Vec<String>,
}

impl Default for ClientBuilder {
    fn default() -> Self {
        Self::new()
    }
}

fn parse_bool(s: &str) -> Option<bool> {
    match s.trim().to_ascii_lowercase().as_str() {
        "1" | "true" | "yes" | "on" => Some(true),
        "0" | "false" | "no" | "off" => Some(false),
        _ => None,
    }
}

impl ClientBuilder {
    /// Defaults, then the environment: `VUER_CLIENT_URI` (default
    /// `ws://localhost:8012`), `WEBSOCKET_MAX_SIZE` (default 256 MiB) and
    /// `VUER_SSL_VERIFY` (default true), as the Python client reads them.
    /// An invalid environment value makes [`connect`](Self::connect) fail
    /// with [`ConnectError::InvalidConfig`].
    pub fn new() -> Self {
        let mut b = ClientBuilder {
            config: Config::default(),
            errors: Vec::new(),
        };
        if let Ok(uri) = std::env::var("VUER_CLIENT_URI") {
            if !uri.is_empty() {
                b.config.uri = uri;
            }
        }
        if let Ok(v) = std::env::var("WEBSOCKET_MAX_SIZE") {
            match v.trim().parse::<usize>() {
                Ok(n) if n > 0 => b.config.max_inbound_message = n,
                _ => b.errors.push(format!(
                    "WEBSOCKET_MAX_SIZE={v:?} is not a positive integer"
                )),
            }
        }
        if let Ok(v) = std::env::var("VUER_SSL_VERIFY") {
            match parse_bool(&v) {
                Some(on) => b.config.connect.tls.verify = on,
                None => b
                    .errors
                    .push(format!("VUER_SSL_VERIFY={v:?} is not a boolean")),
            }
        }
        b
    }

    /// The server URI, `ws://host:port[/path]` or `wss://...`.
    /// Default: `VUER_CLIENT_URI`, else `ws://localhost:8012`.
    pub fn uri(mut self, uri: impl Into<String>) -> Self {
        self.config.uri = uri.into();
        self
    }

    /// Time allowed for each stage of connecting (resolution, TCP, TLS, the
    /// upgrade). Default: 10 s.
    pub fn connect_timeout(mut self, t: Duration) -> Self {
        self.config.connect.connect_timeout = clamp_duration(t);
        self
    }

    /// `TCP_NODELAY`. Default: on. With Nagle's algorithm a paced 1 kHz
    /// stream measured a p99 one-way latency of 23 ms instead of 0.3 ms;
    /// the sender batches by itself, so there is nothing to gain from it.
    pub fn tcp_nodelay(mut self, on: bool) -> Self {
        self.config.connect.tcp_nodelay = on;
        self
    }

    /// An extra HTTP header on the upgrade request (e.g. for a proxy).
    pub fn header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.config
            .connect
            .headers
            .push((name.into(), value.into()));
        self
    }

    /// Verify the server's TLS certificate. Default: `VUER_SSL_VERIFY`,
    /// else true. `false` is the counterpart of Python's `ssl_verify=False`
    /// for self-signed tunnels: the connection is still encrypted, but the
    /// server is not authenticated.
    pub fn tls_verify(mut self, on: bool) -> Self {
        self.config.connect.tls.verify = on;
        self
    }

    /// Trusts an extra root certificate (DER), besides the webpki roots.
    pub fn add_root_certificate(mut self, der: impl Into<Vec<u8>>) -> Self {
        self.config
            .connect
            .tls
            .extra_roots
            .push(CertificateDer::from(der.into()));
        self
    }

    /// Trusts extra root certificates given as PEM text. An invalid PEM
    /// makes [`connect`](Self::connect) fail.
    pub fn add_root_certificates_pem(mut self, pem: &[u8]) -> Self {
        match crate::connection::tls::certs_from_pem(pem) {
            Ok(certs) => self.config.connect.tls.extra_roots.extend(certs),
            Err(e) => self.errors.push(e),
        }
        self
    }

    /// Trusts exactly this certificate (DER) when the server shows it,
    /// whatever signed it and whatever names it lists: the certificate's
    /// bytes are the server's identity (pinning). For a self-signed
    /// certificate made the usual way (`openssl req -x509 ...`), which is
    /// flagged as a CA and so refused by [`add_root_certificate`]
    /// (`CaUsedAsEndEntity`). Other certificates are still verified against
    /// the roots. Requires [`tls_verify`](Self::tls_verify) on (the
    /// default).
    ///
    /// [`add_root_certificate`]: Self::add_root_certificate
    pub fn trust_certificate(mut self, der: impl Into<Vec<u8>>) -> Self {
        self.config
            .connect
            .tls
            .pinned
            .push(CertificateDer::from(der.into()));
        self
    }

    /// [`trust_certificate`](Self::trust_certificate) for certificates given
    /// as PEM text (e.g. the `cert.pem` of `openssl req -x509`). An invalid
    /// PEM makes [`connect`](Self::connect) fail.
    pub fn trust_certificates_pem(mut self, pem: &[u8]) -> Self {
        match crate::connection::tls::certs_from_pem(pem) {
            Ok(certs) => self.config.connect.tls.pinned.extend(certs),
            Err(e) => self.errors.push(e),
        }
        self
    }

    /// Uses a rustls configuration built by the caller (client
    /// certificates, other roots); it replaces the options above.
    pub fn tls_config(mut self, config: Arc<rustls::ClientConfig>) -> Self {
        self.config.connect.tls.custom = Some(config);
        self
    }

    /// Largest inbound message accepted. A bigger one closes the connection
    /// with 1009 and a typed error. Default: `WEBSOCKET_MAX_SIZE`, else
    /// 256 MiB (Vuer's own client limit; the server sends big point clouds
    /// and meshes as single frames). Text (JSON) messages, which Vuer never
    /// sends, are limited to a sixteenth of it, but at least 1 MiB (16 MiB
    /// by default): decoding JSON takes up to ~18 times the text's size.
    pub fn max_inbound_message(mut self, bytes: usize) -> Self {
        self.config.max_inbound_message = bytes;
        self
    }

    /// Largest outgoing message accepted by `publish`/`send`; bigger ones
    /// are refused with [`PublishError::TooLarge`](crate::PublishError::TooLarge).
    /// Default: 4 MiB, the Vuer server's receive limit (it closes the
    /// session with 1009 above it).
    pub fn max_outgoing_message(mut self, bytes: usize) -> Self {
        self.config.max_outgoing_message = bytes;
        self
    }

    /// Writes every float as `f32`, as the Python client does
    /// (`use_single_float=True`), and refuses finite `f64` values outside
    /// the `f32` range as Python does. Default: off (`f32` stays `f32`,
    /// `f64` stays `f64`; the server accepts both).
    pub fn all_f32(mut self, on: bool) -> Self {
        self.config.all_f32 = on;
        self
    }

    /// Replaces the INIT `value` (the client info). Default: `client:
    /// "rust"`, `clientVersion`, `timezone`, `timezoneOffset` (an int),
    /// `platform`, `platformVersion`, `machine`, `pkg`.
    pub fn init_value(mut self, fields: Vec<(String, Value)>) -> Self {
        self.config.init = Some(fields);
        self
    }

    /// Sets one INIT field, replacing a default of the same name or adding
    /// it (e.g. `client = "rust-teleop"` for `@app.spawn(client="rust*")`).
    pub fn init_field(mut self, name: impl Into<String>, value: impl Into<Value>) -> Self {
        let name = name.into();
        let value = value.into();
        let fields = self.config.init.get_or_insert_with(Vec::new);
        match fields.iter_mut().find(|(k, _)| *k == name) {
            Some(slot) => slot.1 = value,
            None => fields.push((name, value)),
        }
        self
    }

    /// Sends no INIT. A Vuer server then never starts its `@app.spawn`
    /// handlers for this connection; only for servers that do not expect it.
    pub fn no_init(mut self) -> Self {
        self.config.init = None;
        self
    }

    /// Most events queued for sending. Default: 65 536 (about a second of a
    /// fast reliable stream; keyed streams need one slot per key).
    pub fn max_queued_events(mut self, n: usize) -> Self {
        self.config.queue.max_items = n.max(1);
        self
    }

    /// Most bytes queued for sending. Default: 64 MiB (a few large point
    /// clouds); with `max_queued_events`, this bounds the client's memory
    /// whatever the producer or the server does. An event larger than this
    /// alone is refused at once with
    /// [`PublishError::LargerThanQueue`](crate::PublishError::LargerThanQueue),
    /// by `send().await` and `send_blocking` too (it could never fit). At
    /// most [`MAX_QUEUED_BYTES_LIMIT`] (1 GiB); more is refused when
    /// connecting. The last values kept for state restore are bounded by it
    /// too (the least recently retained are dropped first, counted in
    /// [`Stats::retained_evicted`](crate::Stats::retained_evicted)).
    pub fn max_queued_bytes(mut self, n: usize) -> Self {
        self.config.queue.max_bytes = n.max(1);
        self
    }

    /// Most distinct coalescing keys remembered. Default: 65 536. When full,
    /// a new key makes the client forget the key whose value was written
    /// longest ago and that has nothing queued (with its last value, which
    /// is then not restored after a reconnect); when every key has a value
    /// queued, an event with a new key is refused
    /// ([`PublishError::Full`](crate::PublishError::Full)).
    pub fn max_keys(mut self, n: usize) -> Self {
        self.config.queue.max_keys = n.max(1);
        self
    }

    /// What `publish` does when the queue is full. Default:
    /// [`Overflow::Reject`] (the event is refused with
    /// [`PublishError::Full`](crate::PublishError::Full); nothing accepted is
    /// ever dropped). [`Overflow::DropOldest`] drops the oldest queued events
    /// instead (counted in [`Stats::dropped`](crate::Stats::dropped)).
    /// `send().await` always waits for room instead.
    pub fn overflow(mut self, policy: Overflow) -> Self {
        self.config.overflow = policy;
        self
    }

    /// Default maximum age of events: an event not written this long after
    /// it was published is not sent, and is counted as expired. Events can
    /// set their own ([`Event::max_age`](crate::Event::max_age)). Default:
    /// none (events never expire).
    pub fn max_age(mut self, age: Duration) -> Self {
        self.config.max_age = Some(clamp_duration(age));
        self
    }

    /// Most events and bytes the sender takes in one round (one write).
    /// Default: 16 384 events / 256 KiB: large enough that a fast stream
    /// pays one syscall per thousands of events, small enough that one
    /// round does not hold a runtime thread for long.
    pub fn batch_limits(mut self, max_events: usize, max_bytes: usize) -> Self {
        self.config.batch_max_events = max_events.max(1);
        self.config.batch_max_bytes = max_bytes.max(1);
        self
    }

    /// Paces the sender to at most `per_second` writes per second; keyed
    /// values coalesce in between. Default: none (write as soon as anything
    /// is queued: lowest latency).
    pub fn max_flush_rate(mut self, per_second: f64) -> Self {
        self.config.max_flush_rate = Some(per_second);
        self
    }

    /// Bounds of the inbound queue (and of each subscription). Default:
    /// 4096 events / 8 MiB, a few MB of typical scene events.
    pub fn inbound_limits(mut self, max_events: usize, max_bytes: usize) -> Self {
        self.config.inbound_max_events = max_events.max(1);
        self.config.inbound_max_bytes = max_bytes.max(1);
        self
    }

    /// What happens when inbound events are not read fast enough. Default:
    /// [`InboundPolicy::DropOldest`].
    pub fn inbound_policy(mut self, policy: InboundPolicy) -> Self {
        self.config.inbound_policy = policy;
        self
    }

    /// Interval between the client's pings (the Vuer server never pings):
    /// one goes out at least this often, with data or alone, so that an
    /// idle or a busy connection gets pongs, which keepalive counts.
    /// While a ping is unanswered, the next ones back off (each waits as
    /// long as the last one had waited for the answer: 1, 1, 2, 4, ...
    /// intervals, at most half of `keepalive_timeout`), so that pings never
    /// crowd out the data of a server that reads fewer frames than one per
    /// interval (they pass pacing).
    /// Default: 5 s. `None` sends no keepalive pings (pacing and
    /// confirmation still send theirs; without those, keepalive then
    /// depends on the server sending something).
    pub fn ping_interval(mut self, every: Option<Duration>) -> Self {
        self.config.ping_interval = every.map(clamp_duration);
        self
    }

    /// The connection is declared dead when no frame has arrived from the
    /// server for this long (a server shut down with a client connected
    /// sends no close frame; one whose process hangs stops answering the
    /// client's pings). Only frames count, not acknowledgements by the
    /// server's TCP stack (its kernel goes on acknowledging for as long as
    /// its receive buffer has room, which made detection take more than
    /// twice the timeout), so detection takes this long, checked every
    /// eighth of it, whatever the send buffer holds; while inbound
    /// backpressure has paused reading, the timeout does not run. The
    /// server must answer a ping within it: pacing keeps its backlog far
    /// shorter, but with pacing off and a slow server, raise it. Default:
    /// 15 s (three ping intervals). `None` never times out.
    pub fn keepalive_timeout(mut self, t: Option<Duration>) -> Self {
        self.config.keepalive_timeout = t.map(clamp_duration);
        self
    }

    /// The whole time [`close`](crate::VuerClient::close) (or dropping the
    /// client) may take: delivering what was accepted and having reliable
    /// events confirmed (reconnecting at once if needed) until a tenth of it
    /// before the end (at most 250 ms, kept for the close handshake), then
    /// the close frame and the server's answer. `close()` returns within it
    /// (plus scheduling slack), and says what it could not deliver.
    /// Default: 5 s.
    pub fn close_timeout(mut self, t: Duration) -> Self {
        self.config.close_timeout = clamp_duration(t);
        self
    }

    /// `TCP_NOTSENT_LOWAT`: how many bytes may wait in the kernel unsent
    /// before the socket stops accepting writes (Linux; ignored elsewhere).
    /// Default: 128 KiB ([`DEFAULT_NOTSENT_LOWAT`](crate::DEFAULT_NOTSENT_LOWAT)).
    ///
    /// Why: bytes the kernel holds unsent are out of the ring's reach; a
    /// newer pose cannot replace them. With a limit, the socket stops
    /// taking writes once the peer's window is full and the link falls
    /// behind, so new values wait in the ring, where they coalesce. The
    /// limit covers only what is not yet sent: data in flight (the
    /// window) is not limited, so throughput on a fast link is not
    /// capped; the cost is one more wake-up of the sender per 128 KiB
    /// drained, which showed no difference within the noise on loopback
    /// (BENCHMARKS.md). Bytes already sent but unread by the server are
    /// bounded by pacing ([`pacing`](Self::pacing)), not by this option.
    ///
    /// `None` leaves the kernel's default (no limit: up to the send
    /// buffer), which only suits bulk transfers where staleness does not
    /// matter.
    pub fn notsent_lowat(mut self, bytes: Option<u32>) -> Self {
        self.config.connect.socket.notsent_lowat = bytes;
        self
    }

    /// `SO_SNDBUF`: the kernel send buffer. Default: none (the kernel's
    /// auto-tuning).
    pub fn send_buffer(mut self, bytes: Option<u32>) -> Self {
        self.config.connect.socket.send_buffer = bytes;
        self
    }

    /// Reconnects automatically when the connection is lost, with this
    /// policy. Default: [`Reconnect::default()`] (100 ms doubling to 5 s,
    /// ± 20 % jitter, forever). `None`: the client closes when the
    /// connection ends. The first connection is not retried:
    /// [`connect`](Self::connect) reports its error (see
    /// [`retry_first_connect`](Self::retry_first_connect)).
    pub fn reconnect(mut self, policy: Option<Reconnect>) -> Self {
        self.config.reconnect = policy.map(|mut p| {
            p.initial_delay = clamp_duration(p.initial_delay);
            p.max_delay = clamp_duration(p.max_delay);
            p
        });
        self
    }

    /// Paces the sender to the server's reading, so that while the server
    /// or the link is slow, values wait in the ring (where keyed values
    /// coalesce) instead of in socket buffers (where they age): see
    /// [`Pacing`]. Default: [`Pacing::default()`] (at most 50 ms of data
    /// unconfirmed at the server's measured read rate). `None` turns it off:
    /// then a slow server's buffers fill with old values, and ages grow with
    /// the length of the run.
    pub fn pacing(mut self, pacing: Option<Pacing>) -> Self {
        self.config.pacing = pacing.map(|mut p| {
            p.max_delay = clamp_duration(p.max_delay);
            p.probe_interval = clamp_duration(p.probe_interval);
            p.probe_timeout = clamp_duration(p.probe_timeout);
            p
        });
        self
    }

    /// Makes publishing safe on a real-time thread: `publish` never makes a
    /// system call. It writes nothing to the socket itself (no direct
    /// writes) and wakes nothing (no futex): the sender task looks at the
    /// queue every `poll` instead, so an event waits up to `poll` before it
    /// is written. Default: `None` (publishers write sparse events
    /// themselves and wake an idle sender: the lowest latency). From 10 µs
    /// to 1 s; 500 µs is a good start for a 1 kHz loop.
    ///
    /// What a publishing thread still does: read the clock (the TSC, no
    /// system call), take the outbox lock, spinning while the sender holds
    /// it (to move a batch in or out: the longest wait measured is in
    /// `tests/realtime.rs` and the README; if the OS preempts the sender
    /// while it holds the lock, the publisher spins until it runs again, so
    /// give the sender a core the real-time thread does not monopolize),
    /// and encode into the ring (no allocation once warm, for messages up
    /// to 16 KiB). `tests/realtime.rs` runs a million publishes on a thread
    /// under strict seccomp (any system call but read/write/exit kills the
    /// process) with a counting allocator.
    pub fn realtime_publish(mut self, poll: Option<Duration>) -> Self {
        self.config.realtime_poll = poll;
        self
    }

    /// Retries the first connection too, with the reconnect policy (until
    /// it succeeds or `max_attempts` is reached), instead of failing at
    /// once. Default: off, so that a wrong URI is reported immediately.
    pub fn retry_first_connect(mut self, on: bool) -> Self {
        self.config.retry_first_connect = on;
        self
    }

    /// After a reconnect, sends the latest written value of every key again
    /// (after INIT, before anything still queued), because a Vuer session
    /// keeps no state across connections. A restored value is a new message
    /// about the current state: its `ts` is the time it is sent again
    /// (unless the event set its own `ts`). Reliable events written again
    /// because the lost connection had not confirmed them keep theirs: they
    /// are the same messages, possibly duplicates. Default: on.
    pub fn restore_state(mut self, on: bool) -> Self {
        self.config.restore_state = on;
        self
    }

    /// Refuses the settings that cannot work, with a message naming the
    /// setting (and never echoing a header's value). Durations over 100
    /// years were clamped by their setters.
    pub(crate) fn check(&self) -> Result<(), ConnectError> {
        if let Some(p) = self.config.realtime_poll {
            if p < Duration::from_micros(10) || p > Duration::from_secs(1) {
                return Err(ConnectError::InvalidConfig(format!(
                    "realtime_publish poll interval must be from 10 µs to 1 s, not {p:?}"
                )));
            }
        }
        if let Some(e) = self.errors.first() {
            return Err(ConnectError::InvalidConfig(e.clone()));
        }
        let c = &self.config;
        let bad = |m: String| Err(ConnectError::InvalidConfig(m));
        if c.connect.connect_timeout.is_zero() {
            return bad("connect_timeout is zero: every connection would time out".into());
        }
        if c.ping_interval
            .is_some_and(|p| p < Duration::from_millis(1))
        {
            return bad("ping_interval is under 1 ms (None sends no pings)".into());
        }
        if c.keepalive_timeout.is_some_and(|k| k.is_zero()) {
            return bad("keepalive_timeout is zero (None never times out)".into());
        }
        if c.max_inbound_message == 0 || c.max_outgoing_message == 0 {
            return bad(
                "max_inbound_message and max_outgoing_message must be at least 1 byte".into(),
            );
        }
        if c.queue.max_bytes > MAX_QUEUED_BYTES_LIMIT {
            return bad(format!(
                "max_queued_bytes is {}, over the limit of {MAX_QUEUED_BYTES_LIMIT}",
                c.queue.max_bytes
            ));
        }
        if let Some(rate) = c.max_flush_rate {
            if !(rate.is_finite() && rate >= 1e-3) {
                return bad(format!(
                    "max_flush_rate is {rate}: it must be a finite number of writes per second, at least 0.001"
                ));
            }
        }
        if let Some(r) = &c.reconnect {
            if !(r.multiplier.is_finite() && r.multiplier >= 1.0) {
                return bad(format!(
                    "Reconnect::multiplier is {}: it must be finite and at least 1",
                    r.multiplier
                ));
            }
            if !(0.0..=1.0).contains(&r.jitter) {
                return bad(format!(
                    "Reconnect::jitter is {}: it must be within 0 and 1",
                    r.jitter
                ));
            }
        }
        for (name, value) in &c.connect.headers {
            if hyper::header::HeaderName::from_bytes(name.as_bytes()).is_err() {
                return bad(format!("header {name:?} is not a valid HTTP header name"));
            }
            if hyper::header::HeaderValue::from_str(value).is_err() {
                return bad(format!(
                    "the value of header {name:?} is not a valid HTTP header value"
                ));
            }
        }
        Ok(())
    }
}

/// The default INIT value: what Python's `get_client_info()` sends, for a
/// Rust client. `timezoneOffset` is minutes west of UTC (the browser's
/// convention) and is an int even on a UTC machine (Python sends nil there).
pub fn default_init_info() -> Vec<(String, Value)> {
    let (tz, offset) = local_timezone();
    let (release, machine) = uname();
    vec![
        ("client".into(), "rust".into()),
        ("clientVersion".into(), env!("CARGO_PKG_VERSION").into()),
        ("timezone".into(), tz.map_or(Value::Nil, Value::from)),
        ("timezoneOffset".into(), Value::Int(offset)),
        ("platform".into(), platform_name().into()),
        (
            "platformVersion".into(),
            release.map_or(Value::Nil, Value::from),
        ),
        ("machine".into(), machine.into()),
        ("pkg".into(), "vuer-client".into()),
    ]
}

/// Python's `platform.system()` names.
fn platform_name() -> &'static str {
    match std::env::consts::OS {
        "linux" => "Linux",
        "macos" => "Darwin",
        "windows" => "Windows",
        "freebsd" => "FreeBSD",
        other => other,
    }
}

fn uname() -> (Option<String>, String) {
    #[cfg(unix)]
    {
        // SAFETY: uname fills the struct; the fields are NUL-terminated.
        let mut u: libc::utsname = unsafe { std::mem::zeroed() };
        if unsafe { libc::uname(&mut u) } == 0 {
            let field = |f: &[libc::c_char]| {
                let bytes: Vec<u8> = f
                    .iter()
                    .take_while(|&&c| c != 0)
                    .map(|&c| c as u8)
                    .collect();
                String::from_utf8_lossy(&bytes).into_owned()
            };
            return (Some(field(&u.release)), field(&u.machine));
        }
    }
    (None, std::env::consts::ARCH.to_owned())
}

/// IANA name (when it can be found) and offset in minutes west of UTC.
fn local_timezone() -> (Option<String>, i64) {
    let offset = utc_offset_minutes_west();
    let name = std::env::var("TZ")
        .ok()
        .map(|s| s.trim_start_matches(':').to_owned())
        .filter(|s| !s.is_empty() && !s.starts_with('/'))
        .or_else(|| {
            std::fs::read_to_string("/etc/timezone")
                .ok()
                .map(|s| s.trim().to_owned())
                .filter(|s| !s.is_empty())
        })
        .or_else(|| {
            std::fs::read_link("/etc/localtime").ok().and_then(|p| {
                let s = p.to_string_lossy().into_owned();
                s.split_once("zoneinfo/").map(|(_, z)| z.to_owned())
            })
        })
        .or_else(|| (offset == 0).then(|| "UTC".to_owned()));
    (name, offset)
}

fn utc_offset_minutes_west() -> i64 {
    #[cfg(unix)]
    {
        // SAFETY: localtime_r writes into the provided struct.
        unsafe {
            let t = libc::time(std::ptr::null_mut());
            let mut tm: libc::tm = std::mem::zeroed();
            if !libc::localtime_r(&t, &mut tm).is_null() {
                return -(tm.tm_gmtoff as i64) / 60;
            }
        }
    }
    0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn init_has_the_python_fields_with_an_int_offset() {
        let info = default_init_info();
        let names: Vec<_> = info.iter().map(|(k, _)| k.as_str()).collect();
        for f in [
            "client",
            "clientVersion",
            "timezone",
            "timezoneOffset",
            "platform",
            "platformVersion",
            "machine",
        ] {
            assert!(names.contains(&f), "{f}");
        }
        let get = |n: &str| info.iter().find(|(k, _)| k == n).unwrap().1.clone();
        assert_eq!(get("client"), Value::from("rust"));
        assert!(matches!(get("timezoneOffset"), Value::Int(_)));
    }

    #[test]
    fn init_field_overrides_or_extends() {
        let b = ClientBuilder::new()
            .init_field("client", "rust-teleop")
            .init_field("robot", "g1");
        let init = b.config.init.unwrap();
        assert_eq!(init[0], ("client".into(), Value::from("rust-teleop")));
        assert_eq!(init.last().unwrap(), &("robot".into(), Value::from("g1")));
    }
}
