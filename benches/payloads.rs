//! Throughput by payload size, side by side in the same run: reliable
//! events `{"position": [f32; 3], "t_ns": u64, "pad": bin(P)}` to one
//! counting sink (on a runtime and thread of its own), from
//!
//! * vuer-client: a plain thread calling `send_blocking` (it waits for
//!   room like the baselines' `.await`s, rather than spinning on `Full`);
//! * tokio-tungstenite 0.30 + rmp-serde, feeding 64 messages per flush;
//! * fastwebsockets as its docs show it: one task, `rmp_serde::to_vec_named`
//!   per event, `WebSocket::write_frame` over a 64 KiB `BufWriter`, one
//!   flush at the end;
//! * the ceiling: the same frames pre-encoded (and pre-masked), written in
//!   64 KiB writes: what this loopback and sink take at best.
//!
//! Each size runs in interleaved rounds (all four within a few seconds,
//! rotating which goes first), because this machine's speed drifts by
//! ±50 % over seconds; the bench prints every round and the medians:
//! events/s, MB/s, the ratios to both baselines and to the ceiling, and the
//! client's CPU per MB (user+system time of the client's threads, the
//! producing thread and the client runtime's workers; the sink's thread is
//! not counted).
//!
//! ```text
//! cargo bench --bench payloads
//! ```

mod common;

use std::time::{Duration, Instant};

use common::*;
use serde::Serialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use vuer_client::{Coalesce, Event, VuerClient};
use vuer_client_testkit::server::LocalServer;

/// The event every contender sends.
#[derive(Serialize)]
struct Bulk<'a> {
    position: [f32; 3],
    t_ns: u64,
    #[serde(with = "serde_bytes")]
    pad: &'a [u8],
}

impl Event for Bulk<'_> {
    const ETYPE: &'static str = "SET_POSITION";
    fn coalesce(&self) -> Coalesce<'_> {
        Coalesce::Never
    }
}

/// The baseline's envelope, as `rmp_serde::to_vec_named` writes it.
#[derive(Serialize)]
struct Envelope<'a> {
    ts: u64,
    etype: &'static str,
    value: Bulk<'a>,
}

fn envelope(pad: &[u8], i: u64) -> Vec<u8> {
    rmp_serde::to_vec_named(&Envelope {
        ts: now_ms(),
        etype: "SET_POSITION",
        value: Bulk {
            position: [i as f32, 0.5, 0.0],
            t_ns: i,
            pad,
        },
    })
    .unwrap()
}

/// CPU time of this process's threads whose name starts with one of
/// `prefixes`, from the scheduler's nanosecond account
/// (`/proc/<tid>/schedstat`; `stat`'s 10 ms ticks were too coarse for
/// runs of a third of a second).
fn threads_cpu(prefixes: &[&str]) -> Duration {
    let mut total = 0u64;
    for task in std::fs::read_dir("/proc/self/task").unwrap().flatten() {
        let comm = std::fs::read_to_string(task.path().join("comm")).unwrap_or_default();
        if prefixes.iter().any(|p| comm.starts_with(p)) {
            total += schedstat(&task.path().join("schedstat"));
        }
    }
    Duration::from_nanos(total)
}

/// Nanoseconds on the CPU from a `schedstat` file (0 if unreadable).
fn schedstat(path: &std::path::Path) -> u64 {
    std::fs::read_to_string(path)
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

/// The calling thread's CPU time so far.
fn own_cpu() -> Duration {
    Duration::from_nanos(schedstat(std::path::Path::new(
        "/proc/thread-self/schedstat",
    )))
}

/// The client runtime's threads (the producer thread counts its own).
const CLIENT_THREADS: &[&str] = &["client-rt"];

#[derive(Clone, Copy, Debug)]
enum Who {
    Ours,
    Tungstenite,
    Fastwebsockets,
    Ceiling,
}

const WHO: [Who; 4] = [
    Who::Ours,
    Who::Tungstenite,
    Who::Fastwebsockets,
    Who::Ceiling,
];

/// One run: (events/s, client CPU seconds).
fn run(
    who: Who,
    client_rt: &tokio::runtime::Runtime,
    sink: &LocalServer,
    pad: &'static [u8],
    n: u64,
) -> (f64, f64) {
    let base = sink.stats().frames;
    let cpu0 = threads_cpu(CLIENT_THREADS);
    let start = Instant::now();
    let uri = sink.uri();
    #[allow(clippy::let_unit_value)]
    match who {
        Who::Ours => {
            let client = client_rt.block_on(tuned(&uri)).unwrap();
            let p = client.publisher();
            let producer = std::thread::Builder::new()
                .name("producer".into())
                .spawn(move || {
                    let cpu0 = own_cpu();
                    for i in 0..n {
                        let ev = Bulk {
                            position: [i as f32, 0.5, 0.0],
                            t_ns: i,
                            pad,
                        };
                        p.send_blocking(&ev).unwrap();
                    }
                    own_cpu() - cpu0
                })
                .unwrap();
            // The producer's CPU time is read by the thread itself: an
            // exited thread leaves /proc/self/task.
            let producer_cpu = producer.join().unwrap();
            client_rt.block_on(wait_frames(sink, base + 1 + n));
            let elapsed = start.elapsed();
            let rt_cpu = threads_cpu(CLIENT_THREADS) - cpu0;
            let cpu = (rt_cpu + producer_cpu).as_secs_f64();
            if std::env::var("PAYLOADS_STATS").is_ok() {
                let s = client.stats();
                println!(
                    "  producer {:?} sender {:?} in {:?}; flushes {} frames/flush {:.1} direct {} pings {} holds {} hold {:?} rate {:.0} MB/s",
                    producer_cpu,
                    rt_cpu,
                    elapsed,
                    s.flushes,
                    s.frames_per_flush,
                    s.direct_writes,
                    s.pings_sent,
                    s.pacing_holds,
                    s.pacing_hold_time,
                    s.server_read_rate / 1e6
                );
            }
            client_rt.block_on(client.close()).unwrap();
            return (n as f64 / elapsed.as_secs_f64(), cpu);
        }
        // The baselines run on the client runtime's worker, like ours.
        Who::Tungstenite => client_rt
            .block_on(client_rt.spawn(async move {
                use futures_util::SinkExt;
                use tokio_tungstenite::tungstenite::Message;
                let mut ws = baseline_connect(&uri).await;
                for i in 0..n {
                    ws.feed(Message::Binary(envelope(pad, i).into()))
                        .await
                        .unwrap();
                    if (i + 1) % 64 == 0 {
                        ws.flush().await.unwrap();
                    }
                }
                ws.flush().await.unwrap();
                let _ = ws.close(None).await;
            }))
            .unwrap(),
        Who::Fastwebsockets => client_rt
            .block_on(client_rt.spawn(async move {
                let tcp = upgraded(&uri).await;
                let mut ws = fastwebsockets::WebSocket::after_handshake(
                    tokio::io::BufWriter::with_capacity(64 << 10, tcp),
                    fastwebsockets::Role::Client,
                );
                for i in 0..n {
                    let frame = fastwebsockets::Frame::binary(fastwebsockets::Payload::Owned(
                        envelope(pad, i),
                    ));
                    ws.write_frame(frame).await.unwrap();
                }
                let mut inner = ws.into_inner();
                inner.flush().await.unwrap();
            }))
            .unwrap(),
        Who::Ceiling => client_rt
            .block_on(client_rt.spawn(async move {
                // One frame, encoded and masked once (mask 0x01020304).
                let msg = envelope(pad, 0);
                let mut frame = vec![0x82];
                match msg.len() {
                    l if l < 126 => frame.push(0x80 | l as u8),
                    l if l <= 0xffff => {
                        frame.push(0x80 | 126);
                        frame.extend_from_slice(&(l as u16).to_be_bytes());
                    }
                    l => {
                        frame.push(0x80 | 127);
                        frame.extend_from_slice(&(l as u64).to_be_bytes());
                    }
                }
                let mask = [1u8, 2, 3, 4];
                frame.extend_from_slice(&mask);
                frame.extend(msg.iter().enumerate().map(|(i, b)| b ^ mask[i & 3]));
                let mut tcp = upgraded(&uri).await;
                // The stream of n frames, written in 64 KiB writes.
                let mut window = Vec::with_capacity(64 << 10);
                let mut left = n;
                let mut at = 0usize;
                while left > 0 {
                    while window.len() < 64 << 10 && left > 0 {
                        let take = (frame.len() - at).min((64 << 10) - window.len());
                        window.extend_from_slice(&frame[at..at + take]);
                        at += take;
                        if at == frame.len() {
                            at = 0;
                            left -= 1;
                        }
                    }
                    tcp.write_all(&window).await.unwrap();
                    window.clear();
                }
            }))
            .unwrap(),
    }
    client_rt.block_on(wait_frames(sink, base + n));
    let elapsed = start.elapsed();
    let cpu = (threads_cpu(CLIENT_THREADS) - cpu0).as_secs_f64();
    (n as f64 / elapsed.as_secs_f64(), cpu)
}

/// Our client with the defaults, or with the experiment switches of the
/// environment: `PAYLOADS_PACING=off`, `PAYLOADS_LOWAT=off`.
async fn tuned(uri: &str) -> Result<VuerClient, vuer_client::ConnectError> {
    let mut b = VuerClient::builder().uri(uri);
    if std::env::var("PAYLOADS_PACING").as_deref() == Ok("off") {
        b = b.pacing(None);
    }
    if let Some(mib) = std::env::var("PAYLOADS_PIPE_MIB")
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
    {
        b = b.pacing(Some(vuer_client::Pacing {
            max_pipe_bytes: mib << 20,
            ..Default::default()
        }));
    }
    if std::env::var("PAYLOADS_LOWAT").as_deref() == Ok("off") {
        b = b.notsent_lowat(None);
    }
    b.connect().await
}

/// A TCP connection to `uri` upgraded to a websocket by hand.
async fn upgraded(uri: &str) -> tokio::net::TcpStream {
    let addr = uri.trim_start_matches("ws://").trim_end_matches('/');
    let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    tcp.set_nodelay(true).unwrap();
    let req = format!(
        "GET / HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    );
    tcp.write_all(req.as_bytes()).await.unwrap();
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        head.push(tcp.read_u8().await.unwrap());
    }
    assert!(head.starts_with(b"HTTP/1.1 101"));
    tcp
}

fn main() {
    let quick = smoke_run();
    let sink_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("sink")
        .enable_all()
        .build()
        .unwrap();
    let client_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("client-rt")
        .enable_all()
        .build()
        .unwrap();
    let sink = sink_rt.block_on(async {
        LocalServer::start(vuer_client_testkit::server::ServerOptions {
            decode: false,
            scene_on_init: false,
            ..Default::default()
        })
        .await
        .unwrap()
    });
    // `PAYLOADS_SIZES=1048576,...` and `PAYLOADS_ROUNDS=n` narrow a run
    // (for a profile, say).
    let env_sizes: Option<Vec<usize>> = std::env::var("PAYLOADS_SIZES")
        .ok()
        .map(|s| s.split(',').filter_map(|x| x.trim().parse().ok()).collect());
    let sizes: Vec<usize> = match env_sizes {
        Some(s) => s,
        None if quick => vec![0, 100 << 10],
        None => vec![0, 1 << 10, 10 << 10, 100 << 10, 1 << 20, (4 << 20) - 1024],
    };
    let rounds = std::env::var("PAYLOADS_ROUNDS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(if quick { 1 } else { 5 });
    let mut json = Vec::new();
    println!("reliable events by payload size; per round: M events/s (ratio to tokio-tungstenite feed 64)");
    for &size in &sizes {
        let pad: &'static [u8] = Box::leak(vec![0x5a; size].into_boxed_slice());
        let frame = envelope(pad, 0).len() + 14;
        // About a third of a second per contender at the faster rates.
        let n = if quick {
            20
        } else {
            ((300usize << 20) / frame).clamp(40, 1_500_000) as u64
        };
        // `PAYLOADS_ONLY=ours` runs vuer-client alone (for a profile).
        if std::env::var("PAYLOADS_ONLY").as_deref() == Ok("ours") {
            for _ in 0..rounds {
                let (rate, cpu) = run(Who::Ours, &client_rt, &sink, pad, n);
                println!(
                    "vuer-client alone: {rate:.0} events/s, {:.0} MB/s, client CPU {:.3} ms per MB",
                    rate * frame as f64 / 1e6,
                    cpu * 1e3 / (n as f64 * frame as f64 / 1e6)
                );
            }
            continue;
        }
        // Warm each path once.
        for who in WHO {
            run(who, &client_rt, &sink, pad, n / 4 + 1);
        }
        let mut rates: [Vec<f64>; 4] = Default::default();
        let mut cpu_per_mb: [Vec<f64>; 4] = Default::default();
        println!("\npayload {size} B ({frame} B frames), {n} events per run");
        println!(
            "{:>5} {:>18} {:>18} {:>18} {:>18}",
            "round", "vuer-client", "tt feed64", "fastwebsockets", "ceiling"
        );
        for r in 0..rounds {
            let mut line = [0.0; 4];
            for k in 0..4 {
                let i = (k + r) % 4;
                let (rate, cpu) = run(WHO[i], &client_rt, &sink, pad, n);
                line[i] = rate;
                rates[i].push(rate);
                cpu_per_mb[i].push(cpu * 1e3 / (n as f64 * frame as f64 / 1e6));
            }
            println!(
                "{:>5} {:>9.4} ({:>5.2}x) {:>18.4} {:>9.4} ({:>5.2}x) {:>9.4} ({:>5.2}x)",
                r + 1,
                line[0] / 1e6,
                line[0] / line[1],
                line[1] / 1e6,
                line[2] / 1e6,
                line[2] / line[1],
                line[3] / 1e6,
                line[3] / line[1],
            );
        }
        let ratio = |a: usize, b: usize| {
            let mut v: Vec<f64> = rates[a].iter().zip(&rates[b]).map(|(x, y)| x / y).collect();
            median(&mut v)
        };
        let med: Vec<f64> = (0..4).map(|i| median(&mut rates[i].clone())).collect();
        let cpu: Vec<f64> = (0..4).map(|i| median(&mut cpu_per_mb[i].clone())).collect();
        let mbs = |r: f64| r * frame as f64 / 1e6;
        println!(
            "median: vuer-client {:.0} ev/s {:.0} MB/s, {:.2}x tt feed64, {:.2}x fastwebsockets, {:.0} % of the ceiling ({:.0} MB/s); client CPU per MB: ours {:.3} ms, tt {:.3} ms, fws {:.3} ms",
            med[0],
            mbs(med[0]),
            ratio(0, 1),
            ratio(0, 2),
            100.0 * ratio(0, 3),
            mbs(med[3]),
            cpu[0],
            cpu[1],
            cpu[2],
        );
        json.push(format!(
            "{{\"payload\":{size},\"frame\":{frame},\"ours\":{},\"tt\":{},\"fws\":{},\"ceiling\":{},\"ratio_tt\":{},\"ratio_fws\":{},\"of_ceiling\":{},\"cpu_ms_per_mb\":[{},{},{}]}}",
            med[0], med[1], med[2], med[3], ratio(0, 1), ratio(0, 2), ratio(0, 3), cpu[0], cpu[1], cpu[2]
        ));
    }
    write_result("payloads.json", &format!("[{}]", json.join(",")));
    drop(sink);
    client_rt.shutdown_timeout(Duration::from_secs(1));
    sink_rt.shutdown_timeout(Duration::from_secs(1));
}
