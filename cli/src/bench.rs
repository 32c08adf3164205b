//! `bench`: throughput, client CPU per event and one-way latency.
//!
//! **Events.** A producer thread publishes `SET_POSITION` events whose value
//! is `{"position": [x, y, z] (f32), "t_ns": <u64>}` (plus `"pad": <bin>`
//! with `--payload-bytes`), round robin over `--keys` keys, as fast as
//! possible or paced at `--rate` events/s in total. They are typed
//! [`Event`]s (the fast path) keyed per key, so a producer faster than the
//! link coalesces; `--reliable` delivers every one (a full queue makes the
//! producer wait). `t_ns` is read from the wall clock when the event is
//! encoded inside `publish` (and again if a full queue made it wait), so it
//! is the moment the event entered the client.
//!
//! **Local mode** (no `--uri`): the crate's [`LocalServer`] runs on its own
//! tokio runtime and OS threads; its `on_event` hook computes
//! `receive time - t_ns` into an HDR histogram and counts the events. The
//! client runs on another runtime, so the CPU figures are the client's
//! alone.
//!
//! **Remote mode** (`--uri`): the server cannot report; the figures are the
//! client's, plus the count of `--ack-etype` events the server sent back
//! (Vuer's remote-control example answers each SET_POSITION with an
//! UPSERT), reported as "acknowledged".
//!
//! **CPU** is the user+system time of the client runtime's threads and the
//! producer thread ([`crate::cpu`]), between the producer's start and the
//! end of the drain; the in-process server and the thread that prints the
//! live line and waits are excluded.

use std::io::IsTerminal;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize, Serializer};
use serde_json::json;
use tokio::runtime::Runtime;
use vuer_client::{Coalesce, Event, PublishError, Publisher, Stats};
use vuer_client_testkit::server::{now_unix_ns, LocalServer, Received, ServerOptions};

use crate::cli::{BenchArgs, Common};
use crate::connect;
use crate::cpu::Threads;
use crate::error::CliError;
use crate::output;
use crate::report::{bytes, count};
use crate::signal::Interrupt;

/// The etype of the bench events.
const ETYPE: &str = "SET_POSITION";

/// Runs `bench`.
pub fn run(common: &Common, args: BenchArgs) -> Result<(), CliError> {
    // The envelope and the other fields take well under 256 bytes.
    let max_pad = vuer_client::DEFAULT_MAX_OUTGOING_MESSAGE - 256;
    if args.payload_bytes > max_pad {
        return Err(CliError::Usage(format!(
            "--payload-bytes {}: at most {max_pad} (a Vuer server closes the connection on messages over {} bytes)",
            args.payload_bytes,
            vuer_client::DEFAULT_MAX_OUTGOING_MESSAGE
        )));
    }
    let client_cpu = Arc::new(Threads::new());
    let client_rt = runtime("vuer-client", args.client_threads, &client_cpu)?;
    let local = match common.uri {
        None => Some(Local::start(&args)?),
        Some(_) => None,
    };
    let uri = match &local {
        Some(l) => l.server.uri(),
        None => connect::uri(common),
    };
    let result = client_rt.block_on(bench(common, &args, &uri, local.as_ref(), &client_cpu));
    client_rt.shutdown_timeout(Duration::from_secs(1));
    if let Some(l) = local {
        l.stop();
    }
    let (report, verdict) = result?;
    if args.json {
        output::out(&report.to_json())?;
    } else {
        output::out(&report.to_text())?;
    }
    verdict
}

fn runtime(name: &str, threads: u16, cpu: &Arc<Threads>) -> Result<Runtime, CliError> {
    let (start, stop) = (cpu.clone(), cpu.clone());
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads as usize)
        .thread_name(name)
        .enable_all()
        .on_thread_start(move || start.enter())
        .on_thread_stop(move || stop.leave())
        .build()
        .map_err(|e| CliError::io("cannot start a tokio runtime", e))
}

/// What the in-process server measures.
#[derive(Debug)]
struct Probe {
    latency_ns: Mutex<Histogram<u64>>,
    received: AtomicU64,
    last_recv_unix_ns: AtomicU64,
}

impl Probe {
    fn new() -> Result<Probe, CliError> {
        // 1 ns to 1 hour, 3 significant digits.
        let h = Histogram::new_with_bounds(1, 3_600_000_000_000, 3)
            .map_err(|e| CliError::Runtime(format!("cannot create the histogram: {e}")))?;
        Ok(Probe {
            latency_ns: Mutex::new(h),
            received: AtomicU64::new(0),
            last_recv_unix_ns: AtomicU64::new(0),
        })
    }

    fn on_event(&self, r: &Received) {
        #[derive(Deserialize)]
        struct Stamp {
            t_ns: u64,
        }
        // Only bench events carry t_ns (INIT does not).
        let Ok(Stamp { t_ns }) = r.event.data_as::<Stamp>() else {
            return;
        };
        self.latency_ns
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .saturating_record(r.at_unix_ns.saturating_sub(t_ns));
        self.last_recv_unix_ns.fetch_max(r.at_unix_ns, Relaxed);
        self.received.fetch_add(1, Relaxed);
    }
}

/// The in-process server, on its own runtime.
struct Local {
    rt: Runtime,
    server: LocalServer,
    probe: Arc<Probe>,
    cpu: Arc<Threads>,
}

impl Local {
    fn start(args: &BenchArgs) -> Result<Local, CliError> {
        let cpu = Arc::new(Threads::new());
        let rt = runtime("vuer-server", args.server_threads, &cpu)?;
        let probe = Arc::new(Probe::new()?);
        let hook = probe.clone();
        let opts = ServerOptions {
            upsert_on: args.echo.then(|| ETYPE.to_owned()),
            // The hook measures; keep no history.
            record_limit: 1,
            on_event: Some(Arc::new(move |r: &Received| hook.on_event(r))),
            ..ServerOptions::default()
        };
        let server = rt
            .block_on(LocalServer::start(opts))
            .map_err(|e| CliError::io("cannot start the local server", e))?;
        Ok(Local {
            rt,
            server,
            probe,
            cpu,
        })
    }

    fn stop(self) {
        self.server.shutdown();
        drop(self.server);
        self.rt.shutdown_timeout(Duration::from_secs(1));
    }
}

/// `t_ns`: the wall clock, read when the event is serialized.
struct StampNow;

impl Serialize for StampNow {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(now_unix_ns())
    }
}

/// `pad`: msgpack bin.
struct Pad<'a>(&'a [u8]);

impl Pad<'_> {
    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl Serialize for Pad<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(self.0)
    }
}

/// One bench event.
#[derive(Serialize)]
struct Pose<'a> {
    #[serde(skip)]
    key: &'a str,
    #[serde(skip)]
    reliable: bool,
    position: [f32; 3],
    t_ns: StampNow,
    #[serde(skip_serializing_if = "Pad::is_empty")]
    pad: Pad<'a>,
}

impl Event for Pose<'_> {
    const ETYPE: &'static str = ETYPE;
    fn key(&self) -> Option<&str> {
        Some(self.key)
    }
    fn coalesce(&self) -> Coalesce<'_> {
        if self.reliable {
            Coalesce::Never
        } else {
            Coalesce::Key(self.key)
        }
    }
}

/// The producer's settings.
struct Producer {
    publisher: Publisher,
    handle: tokio::runtime::Handle,
    keys: Vec<String>,
    reliable: bool,
    pad: Vec<u8>,
    rate: Option<f64>,
    events: Option<u64>,
    duration: Option<Duration>,
    stop: Arc<AtomicBool>,
    cpu: Arc<Threads>,
}

/// What the producer did.
#[derive(Debug, Default)]
struct Produced {
    published: u64,
    full_waits: u64,
    elapsed: Duration,
    error: Option<CliError>,
}

/// Positions along the docs' sine path, computed once.
fn path() -> Vec<[f32; 3]> {
    (0..1024)
        .map(|i| {
            let t = i as f32 * 0.05;
            [t.sin() * 2.0, 0.5 + (2.0 * t).sin() * 0.3, 0.0]
        })
        .collect()
}

impl Producer {
    fn run(self) -> Produced {
        self.cpu.enter();
        let out = self.produce();
        self.cpu.leave();
        out
    }

    fn produce(&self) -> Produced {
        let path = path();
        let mut out = Produced::default();
        let start = Instant::now();
        let deadline = self.duration.map(|d| start + d);
        let nkeys = self.keys.len();
        let mut i = 0u64;
        loop {
            if self.events.is_some_and(|n| i >= n) {
                break;
            }
            if let Some(rate) = self.rate {
                let due = start + Duration::from_secs_f64(i as f64 / rate);
                if deadline.is_some_and(|d| due >= d) || self.stop.load(Relaxed) {
                    break;
                }
                let now = Instant::now();
                if due > now {
                    std::thread::sleep(due - now);
                }
            } else if i % 256 == 0
                && (self.stop.load(Relaxed) || deadline.is_some_and(|d| Instant::now() >= d))
            {
                break;
            }
            let ev = Pose {
                key: &self.keys[(i % nkeys as u64) as usize],
                reliable: self.reliable,
                position: path[(i % path.len() as u64) as usize],
                t_ns: StampNow,
                pad: Pad(&self.pad),
            };
            match self.publisher.publish(&ev) {
                Ok(()) => {}
                Err(PublishError::Full { .. }) => {
                    // Wait for room (re-encoding, so t_ns is fresh).
                    out.full_waits += 1;
                    if let Err(e) = self.handle.block_on(self.publisher.send(&ev)) {
                        out.error = Some(e.into());
                        break;
                    }
                }
                Err(e) => {
                    out.error = Some(e.into());
                    break;
                }
            }
            i += 1;
        }
        out.published = i;
        out.elapsed = start.elapsed();
        out
    }
}

/// Everything measured, for the summary.
#[derive(Debug)]
struct Report {
    uri: String,
    local: bool,
    reliable: bool,
    keys: u32,
    rate: Option<f64>,
    payload_bytes: usize,
    client_threads: u16,
    interrupted: bool,
    producing_s: f64,
    sent_done_s: f64,
    elapsed_s: f64,
    published: u64,
    full_waits: u64,
    stats: Stats,
    client_cpu_ns: Option<u64>,
    client_cpu_threads: usize,
    server: Option<ServerSide>,
    acks: Option<Acks>,
}

#[derive(Debug)]
struct ServerSide {
    received: u64,
    recv_span_s: f64,
    latency: Option<Latency>,
    cpu_ns: Option<u64>,
}

#[derive(Debug)]
struct Latency {
    count: u64,
    p50_us: f64,
    p90_us: f64,
    p99_us: f64,
    max_us: f64,
}

#[derive(Debug)]
struct Acks {
    etype: String,
    count: u64,
}

fn per_s(n: u64, s: f64) -> f64 {
    if s > 0.0 {
        n as f64 / s
    } else {
        0.0
    }
}

impl Report {
    fn cpu_us_per(&self, n: u64) -> Option<f64> {
        let ns = self.client_cpu_ns?;
        (n > 0).then(|| ns as f64 / 1e3 / n as f64)
    }

    fn cpu_note(&self) -> String {
        format!(
            "user+system time of the client's {} tokio worker thread(s) and the producer thread ({} threads seen), from the producer's start to the end of the drain; {}",
            self.client_threads,
            self.client_cpu_threads,
            if self.local {
                "the in-process server runs on its own runtime and threads and is excluded"
            } else {
                "the server is another process"
            }
        )
    }

    fn to_json(&self) -> String {
        let s = &self.stats;
        let mut v = json!({
            "mode": if self.local { "local" } else { "remote" },
            "uri": self.uri,
            "delivery": if self.reliable { "reliable" } else { "keyed" },
            "keys": self.keys,
            "rate_target": self.rate,
            "payload_bytes": self.payload_bytes,
            "client_threads": self.client_threads,
            "interrupted": self.interrupted,
            "producing_s": self.producing_s,
            "elapsed_s": self.elapsed_s,
            "published": self.published,
            "published_per_s": per_s(self.published, self.producing_s),
            "sent": s.sent,
            "sent_per_s": per_s(s.sent, self.sent_done_s),
            "bytes_sent": s.bytes_sent,
            "bytes_per_s": per_s(s.bytes_sent, self.sent_done_s),
            "writes": s.flushes,
            "events_per_write": s.frames_per_flush,
            "coalesced": s.coalesced,
            "expired": s.expired,
            "dropped": s.dropped,
            "queue_full_waits": self.full_waits,
            "client_cpu_s": self.client_cpu_ns.map(|n| n as f64 / 1e9),
            "client_cpu_us_per_published": self.cpu_us_per(self.published),
            "client_cpu_us_per_sent": self.cpu_us_per(s.sent),
            "client_cpu_includes": self.cpu_note(),
        });
        let m = v.as_object_mut().expect("object");
        match &self.server {
            Some(sv) => {
                m.insert("server_received".into(), json!(sv.received));
                m.insert(
                    "server_received_per_s".into(),
                    json!(per_s(sv.received, sv.recv_span_s)),
                );
                m.insert(
                    "server_cpu_s".into(),
                    json!(sv.cpu_ns.map(|n| n as f64 / 1e9)),
                );
                m.insert(
                    "latency_us".into(),
                    match &sv.latency {
                        Some(l) => json!({
                            "count": l.count, "p50": l.p50_us, "p90": l.p90_us,
                            "p99": l.p99_us, "max": l.max_us,
                        }),
                        None => json!(null),
                    },
                );
            }
            None => {
                m.insert(
                    "server_side".into(),
                    json!("not measured: server-side receive counts and latency need the local server (run bench without --uri)"),
                );
            }
        }
        if let Some(a) = &self.acks {
            m.insert("acknowledged".into(), json!(a.count));
            m.insert("ack_etype".into(), json!(a.etype));
        }
        v.to_string()
    }

    fn to_text(&self) -> String {
        let s = &self.stats;
        let mut o = String::new();
        let mut line = |l: String| {
            o.push_str(&l);
            o.push('\n');
        };
        line(format!(
            "bench: {} server {}, {} {ETYPE}, {} key(s), rate {}, payload +{} B{}",
            if self.local { "in-process" } else { "remote" },
            self.uri,
            if self.reliable {
                "reliable"
            } else {
                "keyed (coalescing)"
            },
            self.keys,
            self.rate
                .map_or("unlimited".to_owned(), |r| format!("{r}/s")),
            self.payload_bytes,
            if self.interrupted {
                " (interrupted)"
            } else {
                ""
            },
        ));
        line(format!(
            "  published  {:>12}  in {:.3} s  {:>10}/s",
            self.published,
            self.producing_s,
            count(per_s(self.published, self.producing_s))
        ));
        line(format!(
            "  sent       {:>12}  in {:.3} s  {:>10}/s  {}/s ({} in {} writes, {:.1} events/write)",
            s.sent,
            self.sent_done_s,
            count(per_s(s.sent, self.sent_done_s)),
            bytes(per_s(s.bytes_sent, self.sent_done_s)),
            bytes(s.bytes_sent as f64),
            s.flushes,
            s.frames_per_flush
        ));
        match &self.server {
            Some(sv) => {
                line(format!(
                    "  received   {:>12}  in {:.3} s  {:>10}/s  (by the server)",
                    sv.received,
                    sv.recv_span_s,
                    count(per_s(sv.received, sv.recv_span_s))
                ));
            }
            None => line(
                "  received   not measured: server-side receive counts and latency need the local server (run bench without --uri)".into(),
            ),
        }
        if let Some(a) = &self.acks {
            line(format!(
                "  acknowledged {:>10}  ({} events the server sent back)",
                a.count, a.etype
            ));
        }
        line(format!(
            "  coalesced {} · expired {} · dropped {} · queue-full waits {}",
            s.coalesced, s.expired, s.dropped, self.full_waits
        ));
        match self.client_cpu_ns {
            Some(ns) => line(format!(
                "  client CPU {:.3} s ({:.0} % of one core): {} µs/published event, {} µs/sent event",
                ns as f64 / 1e9,
                100.0 * ns as f64 / 1e9 / self.elapsed_s.max(1e-9),
                fmt_us(self.cpu_us_per(self.published)),
                fmt_us(self.cpu_us_per(s.sent)),
            )),
            None => line("  client CPU not measurable on this system".into()),
        }
        line(format!("    ({})", self.cpu_note()));
        if let Some(sv) = &self.server {
            match &sv.latency {
                Some(l) => line(format!(
                    "  latency    p50 {:.1} µs · p90 {:.1} µs · p99 {:.1} µs · max {:.1} µs  (one-way, publish → server read, {} events)",
                    l.p50_us, l.p90_us, l.p99_us, l.max_us, l.count
                )),
                None => line("  latency    no events received".into()),
            }
            if let Some(ns) = sv.cpu_ns {
                line(format!(
                    "  server CPU {:.3} s (in-process server, not included above)",
                    ns as f64 / 1e9
                ));
            }
        }
        o.pop();
        o
    }
}

fn fmt_us(v: Option<f64>) -> String {
    match v {
        Some(v) if v < 0.1 => format!("{v:.4}"),
        Some(v) => format!("{v:.3}"),
        None => "n/a".into(),
    }
}

/// The live line on stderr (a terminal only).
struct Live {
    on: bool,
    last: Instant,
    last_sent: u64,
    last_published: u64,
}

impl Live {
    fn tick(&mut self, t0: Instant, stats: &Stats, received: Option<u64>) {
        if !self.on {
            return;
        }
        let now = Instant::now();
        let dt = now.duration_since(self.last).as_secs_f64().max(1e-9);
        let sent_rate = (stats.sent - self.last_sent) as f64 / dt;
        let pub_rate = stats.published.saturating_sub(self.last_published) as f64 / dt;
        self.last = now;
        self.last_sent = stats.sent;
        self.last_published = stats.published;
        let recv = received.map_or(String::new(), |r| format!("  received {}", count(r as f64)));
        output::err(format_args!(
            "\r\x1b[2K{:6.1} s  publishing {}/s  sending {}/s  sent {}  coalesced {}  queue {}{recv}",
            t0.elapsed().as_secs_f64(),
            count(pub_rate),
            count(sent_rate),
            count(stats.sent as f64),
            count(stats.coalesced as f64),
            stats.queue_depth,
        ));
    }

    fn clear(&self) {
        if self.on {
            output::err(format_args!("\r\x1b[2K"));
        }
    }
}

/// The run, on the client's runtime: returns the report, and whether the
/// run itself succeeded (printed after the report).
async fn bench(
    common: &Common,
    args: &BenchArgs,
    uri: &str,
    local: Option<&Local>,
    client_cpu: &Arc<Threads>,
) -> Result<(Report, Result<(), CliError>), CliError> {
    let client = connect::builder(common)?.uri(uri).connect().await?;
    // Count the server's answers (Vuer's example server sends an UPSERT per
    // SET_POSITION) on the client's runtime: that work is the client's.
    let count_acks = local.is_none() || args.echo;
    let acks = Arc::new(AtomicU64::new(0));
    let ack_seen = Arc::new(tokio::sync::Notify::new());
    if count_acks {
        let mut sub = client.subscribe(&args.ack_etype);
        let (acks, seen) = (acks.clone(), ack_seen.clone());
        tokio::spawn(async move {
            while sub.recv().await.is_some() {
                acks.fetch_add(1, Relaxed);
                seen.notify_one();
            }
        });
    }
    let duration = match (args.duration, args.events) {
        (Some(d), _) => Some(Duration::from_secs_f64(d)),
        (None, Some(_)) => None,
        (None, None) => Some(Duration::from_secs(5)),
    };
    let stop = Arc::new(AtomicBool::new(false));
    let producer = Producer {
        publisher: client.publisher(),
        handle: tokio::runtime::Handle::current(),
        keys: (0..args.keys).map(|k| format!("k{k}")).collect(),
        reliable: args.reliable,
        pad: vec![0xa5; args.payload_bytes],
        rate: args.rate,
        events: args.events,
        duration,
        stop: stop.clone(),
        cpu: client_cpu.clone(),
    };
    let mut interrupt = Interrupt::install();
    let mut interrupted = false;
    let mut live = Live {
        on: std::io::stderr().is_terminal(),
        last: Instant::now(),
        last_sent: 0,
        last_published: 0,
    };
    let received = || local.map(|l| l.probe.received.load(Relaxed));

    let (done_tx, mut done_rx) = tokio::sync::oneshot::channel();
    let cpu0 = client_cpu.total_ns();
    let t0 = Instant::now();
    let t0_unix = now_unix_ns();
    std::thread::Builder::new()
        .name("bench-producer".into())
        .spawn(move || {
            let _ = done_tx.send(producer.run());
        })
        .map_err(|e| CliError::io("cannot start the producer thread", e))?;
    let mut ticker = tokio::time::interval(Duration::from_millis(250));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let produced = loop {
        tokio::select! {
            r = &mut done_rx => break r.unwrap_or_else(|_| Produced {
                error: Some(CliError::Runtime("the producer thread failed".into())),
                ..Produced::default()
            }),
            _ = ticker.tick() => live.tick(t0, &client.stats(), received()),
            _ = interrupt.wait(), if !interrupted => {
                interrupted = true;
                stop.store(true, Relaxed);
            }
        }
    };
    let producing = t0.elapsed();

    // Drain: everything written, then received (local) or acknowledged.
    let drain_deadline = tokio::time::Instant::now() + Duration::from_secs_f64(args.drain_timeout);
    let mut verdict = produced.error.map_or(Ok(()), Err);
    let lost = matches!(verdict, Err(CliError::Lost(_)));
    if !lost {
        let flushed = async {
            loop {
                tokio::select! {
                    r = client.flush() => return r.map_err(CliError::from),
                    _ = ticker.tick() => live.tick(t0, &client.stats(), received()),
                }
            }
        };
        tokio::select! {
            r = flushed => if let Err(e) = r { verdict = verdict.and(Err(e)) },
            _ = tokio::time::sleep_until(drain_deadline) => {
                verdict = verdict.and(Err(CliError::Runtime(format!(
                    "the queue did not drain within {} s", args.drain_timeout
                ))));
            }
            _ = interrupt.wait() => interrupted = true,
        }
    }
    let sent_done = t0.elapsed();
    let sent = client.stats().sent;
    if let Some(l) = local {
        if !lost && !interrupted {
            let probe = l.probe.clone();
            let left = drain_deadline.saturating_duration_since(tokio::time::Instant::now());
            l.server
                .wait_until(move |_| probe.received.load(Relaxed) >= sent, left)
                .await;
        }
    }
    if count_acks && !lost && !interrupted {
        // Answers keep coming after the last send; stop when they reach the
        // number sent or stop arriving for a second.
        loop {
            if acks.load(Relaxed) >= sent {
                break;
            }
            let quiet = tokio::time::sleep(Duration::from_secs(1));
            tokio::select! {
                _ = ack_seen.notified() => {}
                _ = quiet => break,
                _ = tokio::time::sleep_until(drain_deadline) => break,
            }
        }
    }
    let elapsed = t0.elapsed();
    let cpu1 = client_cpu.total_ns();
    let stats = client.stats();
    live.clear();
    let client_threads_seen = client_cpu.seen();
    let closed = connect::close(&client).await;
    if !lost {
        verdict = verdict.and(closed);
    }

    let server = local.map(|l| {
        let h = l.probe.latency_ns.lock().unwrap_or_else(|e| e.into_inner());
        let received = l.probe.received.load(Relaxed);
        let last = l.probe.last_recv_unix_ns.load(Relaxed);
        let us = |ns: u64| ns as f64 / 1e3;
        ServerSide {
            received,
            recv_span_s: last.saturating_sub(t0_unix) as f64 / 1e9,
            latency: (!h.is_empty()).then(|| Latency {
                count: h.len(),
                p50_us: us(h.value_at_quantile(0.50)),
                p90_us: us(h.value_at_quantile(0.90)),
                p99_us: us(h.value_at_quantile(0.99)),
                max_us: us(h.max()),
            }),
            cpu_ns: l.cpu.total_ns(),
        }
    });
    if let Some(sv) = &server {
        if verdict.is_ok() && !interrupted && sv.received < stats.sent {
            verdict = Err(CliError::Runtime(format!(
                "the server received {} of the {} events sent within {} s",
                sv.received, stats.sent, args.drain_timeout
            )));
        }
    }
    if interrupted && verdict.is_ok() {
        verdict = Err(CliError::Interrupted);
    }
    let report = Report {
        // Shown, so without credentials or a query.
        uri: vuer_client::redact_uri(uri),
        local: local.is_some(),
        reliable: args.reliable,
        keys: args.keys,
        rate: args.rate,
        payload_bytes: args.payload_bytes,
        client_threads: args.client_threads,
        interrupted,
        producing_s: producing.as_secs_f64(),
        sent_done_s: sent_done.as_secs_f64(),
        elapsed_s: elapsed.as_secs_f64(),
        published: produced.published,
        full_waits: produced.full_waits,
        stats,
        client_cpu_ns: cpu0.zip(cpu1).map(|(a, b)| b.saturating_sub(a)),
        client_cpu_threads: client_threads_seen,
        server,
        acks: count_acks.then(|| Acks {
            etype: args.ack_etype.clone(),
            count: acks.load(Relaxed),
        }),
    };
    Ok((report, verdict))
}
