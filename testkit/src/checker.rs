//! A strict websocket sink written for the tests, independent of the crate's
//! codec and server: it parses every client frame by hand and checks its
//! form (FIN, no reserved bits, masked, a known opcode, control payloads of
//! at most 125 bytes, the shortest length encoding), answers pings with
//! pongs, and checks every byte of `STRESS` events (a deterministic pattern
//! and a checksum inside each event) and the order of `POSE` values per key.
//! Any violation is recorded and the connection is closed with 1002, so a
//! torn frame cannot pass unnoticed. Plain TCP or TLS.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;

/// A reliable event whose payload the checker verifies byte by byte.
#[derive(Debug, Serialize, Deserialize)]
pub struct Stress {
    pub seq: u64,
    pub len: u64,
    pub sum: u64,
    #[serde(with = "serde_bytes")]
    pub pad: Vec<u8>,
}

impl Stress {
    /// Event `seq` with `len` pad bytes.
    pub fn new(seq: u64, len: usize) -> Stress {
        let pad = pattern(seq, len);
        Stress {
            seq,
            len: len as u64,
            sum: fnv1a(&pad),
            pad,
        }
    }
}

impl vuer_client::Event for Stress {
    const ETYPE: &'static str = "STRESS";
    fn coalesce(&self) -> vuer_client::Coalesce<'_> {
        vuer_client::Coalesce::Never
    }
}

/// A small keyed value (latest wins per key): values of one key must
/// arrive in increasing order.
#[derive(Debug, Serialize, Deserialize)]
pub struct Pose {
    #[serde(skip)]
    pub key: String,
    pub seq: u64,
}

impl vuer_client::Event for Pose {
    const ETYPE: &'static str = "POSE";
    fn key(&self) -> Option<&str> {
        Some(&self.key)
    }
    fn coalesce(&self) -> vuer_client::Coalesce<'_> {
        vuer_client::Coalesce::Key(&self.key)
    }
}

/// The pad bytes of event `seq`: no period short enough to hide a shifted
/// or spliced block.
pub fn pattern(seq: u64, len: usize) -> Vec<u8> {
    let mut x = seq.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// FNV-1a, 64 bits.
pub fn fnv1a(b: &[u8]) -> u64 {
    b.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, &c| {
        (h ^ c as u64).wrapping_mul(0x0100_0000_01b3)
    })
}

/// What the checker saw, over all connections.
#[derive(Debug, Default, Clone)]
pub struct Report {
    pub connections: u64,
    /// Bytes read after the upgrade.
    pub bytes: u64,
    pub frames: u64,
    pub pings: u64,
    /// `STRESS` sequence numbers in arrival order.
    pub stress: Vec<u64>,
    pub stress_bytes: u64,
    /// The latest `POSE` value per key.
    pub poses: HashMap<String, u64>,
    pub close_codes: Vec<u16>,
    pub violations: Vec<String>,
}

/// How the checker reads.
#[derive(Debug, Clone, Copy, Default)]
pub struct CheckerOptions {
    /// Do not answer pings (a peer that never pongs).
    pub no_pongs: bool,
    /// Read at most this many bytes per millisecond (a slow reader).
    pub read_bytes_per_ms: Option<usize>,
}

pub struct Checker {
    pub port: u16,
    tls: bool,
    report: Arc<Mutex<Report>>,
}

impl Checker {
    /// Starts on 127.0.0.1, port 0; TLS with `tls` (a server config).
    pub async fn start(tls: Option<Arc<rustls::ServerConfig>>, opts: CheckerOptions) -> Checker {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let report = Arc::new(Mutex::new(Report::default()));
        let r = report.clone();
        let is_tls = tls.is_some();
        tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    return;
                };
                tcp.set_nodelay(true).unwrap();
                let r = r.clone();
                let tls = tls.clone();
                tokio::spawn(async move {
                    r.lock().unwrap().connections += 1;
                    let result = match tls {
                        Some(cfg) => {
                            let acceptor = tokio_rustls::TlsAcceptor::from(cfg);
                            match acceptor.accept(tcp).await {
                                Ok(s) => serve(s, &r, opts).await,
                                Err(e) => Err(format!("TLS accept: {e}")),
                            }
                        }
                        None => serve(tcp, &r, opts).await,
                    };
                    if let Err(v) = result {
                        r.lock().unwrap().violations.push(v);
                    }
                });
            }
        });
        Checker {
            port,
            tls: is_tls,
            report,
        }
    }

    pub fn uri(&self) -> String {
        if self.tls {
            format!("wss://localhost:{}", self.port)
        } else {
            format!("ws://127.0.0.1:{}", self.port)
        }
    }

    pub fn report(&self) -> Report {
        self.report.lock().unwrap().clone()
    }

    /// Waits until `pred` holds (checked every 5 ms) or `timeout` passes.
    pub async fn wait_until(&self, pred: impl Fn(&Report) -> bool, timeout: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if pred(&self.report.lock().unwrap()) {
                return true;
            }
            if tokio::time::Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
}

async fn serve<S: AsyncRead + AsyncWrite + Unpin>(
    stream: S,
    report: &Mutex<Report>,
    opts: CheckerOptions,
) -> Result<(), String> {
    let (r, mut w) = tokio::io::split(stream);
    let mut r = BufReader::with_capacity(64 << 10, r);
    super::accept_upgrade(&mut r, &mut w).await?;

    let mut frame_no = 0u64;
    loop {
        let (op, payload, size) = match read_frame(&mut r, opts).await {
            Ok(Some(f)) => f,
            Ok(None) => return Ok(()),
            Err(e) => {
                let _ = w.write_all(&[0x88, 0x02, 0x03, 0xea]).await;
                let _ = w.flush().await;
                return Err(format!("frame {frame_no}: {e}"));
            }
        };
        frame_no += 1;
        {
            let mut rep = report.lock().unwrap();
            rep.bytes += size as u64;
            rep.frames += 1;
        }
        match op {
            0x2 => {
                if let Err(e) = check_event(&payload, report) {
                    let _ = w.write_all(&[0x88, 0x02, 0x03, 0xea]).await;
                    let _ = w.flush().await;
                    return Err(format!("frame {frame_no}: {e}"));
                }
            }
            0x9 => {
                report.lock().unwrap().pings += 1;
                if !opts.no_pongs {
                    let mut pong = vec![0x8a, payload.len() as u8];
                    pong.extend_from_slice(&payload);
                    w.write_all(&pong).await.map_err(|e| e.to_string())?;
                    w.flush().await.map_err(|e| e.to_string())?;
                }
            }
            0xa => {}
            0x8 => {
                let code = if payload.len() >= 2 {
                    u16::from_be_bytes([payload[0], payload[1]])
                } else {
                    1005
                };
                report.lock().unwrap().close_codes.push(code);
                let mut reply = vec![0x88, 0x02];
                reply.extend_from_slice(&1000u16.to_be_bytes());
                let _ = w.write_all(&reply).await;
                let _ = w.flush().await;
                return Ok(());
            }
            other => return Err(format!("frame {frame_no}: opcode {other:#x}")),
        }
    }
}

/// One client frame, checked for form: `(opcode, unmasked payload, bytes
/// on the wire)`; `None` at a clean end of stream between frames.
async fn read_frame<R: AsyncRead + Unpin>(
    r: &mut R,
    opts: CheckerOptions,
) -> Result<Option<(u8, Vec<u8>, usize)>, String> {
    let mut h = [0u8; 2];
    match r.read_exact(&mut h[..1]).await {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e.to_string()),
    }
    r.read_exact(&mut h[1..]).await.map_err(|e| e.to_string())?;
    let fin = h[0] & 0x80 != 0;
    let rsv = h[0] & 0x70;
    let op = h[0] & 0x0f;
    let masked = h[1] & 0x80 != 0;
    if !fin {
        return Err("FIN not set (the client never fragments)".into());
    }
    if rsv != 0 {
        return Err(format!("reserved bits {rsv:#x}"));
    }
    if !masked {
        return Err("unmasked client frame".into());
    }
    if !matches!(op, 0x2 | 0x8 | 0x9 | 0xa) {
        return Err(format!("unexpected opcode {op:#x} (a torn frame?)"));
    }
    let len7 = (h[1] & 0x7f) as usize;
    let mut size = 2;
    let len = match len7 {
        126 => {
            let n = r.read_u16().await.map_err(|e| e.to_string())? as usize;
            size += 2;
            if n < 126 {
                return Err(format!("length {n} in the 16-bit form"));
            }
            n
        }
        127 => {
            let n = r.read_u64().await.map_err(|e| e.to_string())?;
            size += 8;
            if n <= u16::MAX as u64 || n >> 63 != 0 {
                return Err(format!("length {n} in the 64-bit form"));
            }
            if n > 8 << 20 {
                return Err(format!("length {n}: over any message the test sends"));
            }
            n as usize
        }
        n => n,
    };
    if op >= 0x8 && len > 125 {
        return Err(format!("control frame of {len} bytes"));
    }
    let mut mask = [0u8; 4];
    r.read_exact(&mut mask).await.map_err(|e| e.to_string())?;
    let mut payload = vec![0u8; len];
    match opts.read_bytes_per_ms {
        Some(rate) => {
            for chunk in payload.chunks_mut(rate.max(1)) {
                r.read_exact(chunk).await.map_err(|e| e.to_string())?;
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        }
        None => {
            r.read_exact(&mut payload)
                .await
                .map_err(|e| e.to_string())?;
        }
    }
    for (i, b) in payload.iter_mut().enumerate() {
        *b ^= mask[i & 3];
    }
    size += 4 + len;
    Ok(Some((op, payload, size)))
}

#[derive(Deserialize)]
struct Envelope<V> {
    #[allow(dead_code)]
    ts: u64,
    etype: String,
    #[serde(default)]
    key: Option<String>,
    value: V,
}

fn check_event(payload: &[u8], report: &Mutex<Report>) -> Result<(), String> {
    let env: Envelope<serde::de::IgnoredAny> =
        rmp_serde::from_slice(payload).map_err(|e| format!("not a Vuer event: {e}"))?;
    match env.etype.as_str() {
        "STRESS" => {
            let e: Envelope<Stress> =
                rmp_serde::from_slice(payload).map_err(|e| format!("STRESS: {e}"))?;
            let s = e.value;
            if s.pad.len() as u64 != s.len {
                return Err(format!(
                    "STRESS {}: {} pad bytes, says {}",
                    s.seq,
                    s.pad.len(),
                    s.len
                ));
            }
            if fnv1a(&s.pad) != s.sum {
                return Err(format!("STRESS {}: checksum", s.seq));
            }
            if s.pad != pattern(s.seq, s.pad.len()) {
                return Err(format!(
                    "STRESS {}: pad bytes differ from the pattern",
                    s.seq
                ));
            }
            let mut rep = report.lock().unwrap();
            rep.stress.push(s.seq);
            rep.stress_bytes += s.len;
        }
        "POSE" => {
            let e: Envelope<Pose> =
                rmp_serde::from_slice(payload).map_err(|e| format!("POSE: {e}"))?;
            let key = e.key.ok_or("POSE without a key")?;
            let mut rep = report.lock().unwrap();
            let last = rep.poses.entry(key.clone()).or_insert(0);
            if e.value.seq < *last {
                return Err(format!("POSE {key}: {} after {}", e.value.seq, last));
            }
            *last = e.value.seq;
        }
        _ => {}
    }
    Ok(())
}
