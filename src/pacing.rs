//! Pacing to the reader: keep the bytes written but not yet *read by the
//! server* within a budget, so that while the server (or the link) is slow,
//! values wait in the ring, where they coalesce, instead of in socket
//! buffers, where they age.
//!
//! # Why pings, and what the kernel tells
//!
//! A prototype that only coalesced in its own queue, publishing 10 keys to a
//! server that read 60 messages/s, delivered values 4.5 s old at p50 and 8 s
//! old at the end of an 8 s run: the backlog was in the kernel, mostly in
//! the *server's* receive buffer (autotuned up to 32 MiB here), which our
//! `TCP_INFO` can only see through the advertised window. On loopback that
//! window moves in large steps and counts buffer overhead, not payload, so it
//! cannot tell "10 frames waiting" from "1000 frames waiting".
//!
//! The sender therefore clocks itself on the server's own reading: after a
//! write it sends a ping whose payload carries the byte offset written so
//! far. A websocket peer answers pings in order, when it reads them, so the
//! pong proves that the server has read everything up to that offset, and
//! successive pongs measure the rate at which it reads. While a probe is
//! unanswered, the sender holds back once the unconfirmed bytes exceed what
//! the server reads in [`Pacing::max_delay`] at its measured rate (nothing
//! before the first measurement: stop-and-wait), or the probe is older than
//! `max_delay`, or more than [`Pacing::max_pipe_bytes`] are unconfirmed.
//! When the server keeps up, probes come back within a round trip, the
//! measured rate is high and pacing never holds, at the cost of at most one
//! 20-byte ping per [`Pacing::probe_interval`].
//!
//! What the kernel reports is still used: `TCP_NOTSENT_LOWAT` keeps our own
//! unsent queue short, `TCP_INFO`/`SIOCOUTQ` feed the telemetry, and a
//! server that never answers pings (so its probes time out while TCP shows
//! it alive) makes pacing switch itself off for that connection rather than
//! stall the stream.
//!
//! This module is the pacing state machine; it knows nothing of tokio.

use std::time::Duration;

/// Pacing configuration ([`ClientBuilder::pacing`](crate::ClientBuilder::pacing)).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pacing {
    /// Hold new writes while the oldest unconfirmed probe is older than
    /// this. It bounds how stale the data in flight can get beyond one
    /// batch. Default: 50 ms (three frames at 60 Hz).
    pub max_delay: Duration,
    /// Hold new writes while more than this many bytes are unconfirmed,
    /// whatever their age. Default: 4 MiB (room for a large point cloud in
    /// flight; it caps what a fast server can have in its buffers).
    pub max_pipe_bytes: u64,
    /// Fewest time between probes. Default: 1 ms (at most 1000 pings/s when
    /// the server keeps up; each is 20 bytes on the wire).
    pub probe_interval: Duration,
    /// If a probe stays unanswered this long while the connection is
    /// otherwise alive, the server is taken not to answer pings and pacing
    /// is switched off for the connection (with a warning). Default: 10 s.
    pub probe_timeout: Duration,
}

impl Default for Pacing {
    fn default() -> Self {
        Pacing {
            max_delay: Duration::from_millis(50),
            max_pipe_bytes: 4 << 20,
            probe_interval: Duration::from_millis(1),
            probe_timeout: Duration::from_secs(10),
        }
    }
}

/// With pacing off, reliable events written are still confirmed by a probe,
/// at most this often: after a crash, at most about this much of a reliable
/// stream (plus a round trip) is written twice.
const CONFIRM_EVERY: Duration = Duration::from_millis(10);

/// The shortest span of a read-rate sample.
const MIN_SAMPLE_NS: u64 = 2_000_000;
/// How long a read-rate sample counts: twice the default `max_delay`.
const RATE_WINDOW_NS: u64 = 100_000_000;
/// Samples kept: enough for the window at one sample per `MIN_SAMPLE_NS`.
const RATE_SAMPLES: usize = (RATE_WINDOW_NS / MIN_SAMPLE_NS) as usize + 1;

/// [`CONFIRM_EVERY`] in nanoseconds.
pub(crate) const CONFIRM_EVERY_NS: u64 = CONFIRM_EVERY.as_nanos() as u64;

/// Encodes a probe's ping payload: when it was sent and the byte offset it
/// follows.
pub(crate) fn probe_payload(sent_ns: u64, offset: u64) -> [u8; 16] {
    let mut p = [0u8; 16];
    p[..8].copy_from_slice(&sent_ns.to_be_bytes());
    p[8..].copy_from_slice(&offset.to_be_bytes());
    p
}

/// Reads a pong's payload back: `(sent_ns, offset)`.
pub(crate) fn parse_probe(payload: &[u8]) -> Option<(u64, u64)> {
    let p: &[u8; 16] = payload.try_into().ok()?;
    Some((
        u64::from_be_bytes(p[..8].try_into().ok()?),
        u64::from_be_bytes(p[8..].try_into().ok()?),
    ))
}

/// What the sender should do now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Decision {
    /// Write what is queued.
    Go,
    /// Hold: wait for a pong (or re-check at `recheck_ns`).
    Hold { recheck_ns: u64 },
}

/// The pacing state of one connection.
#[derive(Debug)]
pub(crate) struct Pacer {
    cfg: Option<Pacing>,
    /// Bytes written on this connection.
    written: u64,
    /// Offset confirmed by the latest pong.
    acked: u64,
    /// Where the current rate sample started: (offset confirmed, when);
    /// `None` until the first pong.
    sample_base: Option<(u64, u64)>,
    /// The pipe was empty after the latest pong: the next sample starts
    /// when data goes out again, not during the idle time.
    idle: bool,
    /// Read-rate samples, bytes per nanosecond, with when they were taken
    /// (a ring; `n_samples` valid).
    samples: [(u64, f64); RATE_SAMPLES],
    n_samples: usize,
    next_sample: usize,
    /// The read rate believed now (bytes per nanosecond; 0 until known):
    /// the largest sample of the last [`RATE_WINDOW_NS`].
    rate: f64,
    /// The outstanding probe: (offset it follows, when it was sent).
    probe: Option<(u64, u64)>,
    last_probe_ns: Option<u64>,
    /// When the current hold began.
    holding_since: Option<u64>,
    /// Holds so far, and their total time.
    pub holds: u64,
    pub hold_ns: u64,
}

impl Pacer {
    pub(crate) fn new(cfg: Option<Pacing>) -> Self {
        Pacer {
            cfg,
            written: 0,
            acked: 0,
            sample_base: None,
            idle: false,
            samples: [(0, 0.0); RATE_SAMPLES],
            n_samples: 0,
            next_sample: 0,
            rate: 0.0,
            probe: None,
            last_probe_ns: None,
            holding_since: None,
            holds: 0,
            hold_ns: 0,
        }
    }

    /// True while pacing is on for this connection.
    #[cfg(test)]
    pub(crate) fn enabled(&self) -> bool {
        self.cfg.is_some()
    }

    /// Bytes written and not yet confirmed read.
    pub(crate) fn in_pipe(&self) -> u64 {
        self.written.saturating_sub(self.acked)
    }

    /// Bytes written so far.
    #[cfg(test)]
    pub(crate) fn written(&self) -> u64 {
        self.written
    }

    /// Sets the total committed to the connection (written by the sender
    /// or by publishers directly, or about to be written).
    pub(crate) fn set_written(&mut self, total: u64) {
        self.written = self.written.max(total);
    }

    /// The server's measured read rate, bytes per second (0 until known).
    pub(crate) fn rate_bytes_per_sec(&self) -> f64 {
        self.rate * 1e9
    }

    /// A pong (seen at `now_ns`) confirmed everything up to `offset`.
    ///
    /// Rate samples span at least [`MIN_SAMPLE_NS`] (pongs that come close
    /// together say little), start when data goes out into an empty pipe
    /// (idle time is not the server's), and the rate believed is the
    /// largest of the last [`RATE_WINDOW_NS`]: a sample taken while the
    /// producer had little to send (app-limited) is low without the server
    /// being slow, and believing it made the sender hold against a server
    /// that keeps up (seen as bimodal throughput). A server that really
    /// slows down is believed within the window, and meanwhile its probes
    /// age past `max_delay`, which holds the sender anyway.
    pub(crate) fn acked(&mut self, offset: u64, now_ns: u64) {
        let offset = offset.min(self.written);
        if offset > self.acked {
            self.acked = offset;
            match self.sample_base {
                None => self.sample_base = Some((offset, now_ns)),
                // The first sample is taken as soon as it can be: until
                // then the sender is stop-and-wait.
                Some((base, since))
                    if now_ns > since
                        && (self.n_samples == 0 || now_ns - since >= MIN_SAMPLE_NS) =>
                {
                    let sample = (offset - base) as f64 / (now_ns - since) as f64;
                    self.samples[self.next_sample] = (now_ns, sample);
                    self.next_sample = (self.next_sample + 1) % RATE_SAMPLES;
                    self.n_samples = (self.n_samples + 1).min(RATE_SAMPLES);
                    self.sample_base = Some((offset, now_ns));
                }
                Some(_) => {}
            }
            self.idle = self.acked >= self.written;
        }
        self.update_rate(now_ns);
        if let Some((off, _)) = self.probe {
            if self.acked >= off {
                self.probe = None;
            }
        }
    }

    /// The largest sample of the window (the latest one if none is that
    /// recent).
    fn update_rate(&mut self, now_ns: u64) {
        if self.n_samples == 0 {
            return;
        }
        let latest = self.samples[(self.next_sample + RATE_SAMPLES - 1) % RATE_SAMPLES].1;
        let from = now_ns.saturating_sub(RATE_WINDOW_NS);
        self.rate = self.samples[..self.n_samples]
            .iter()
            .filter(|(t, _)| *t >= from)
            .map(|(_, r)| *r)
            .fold(latest, f64::max);
    }

    /// The least time between probes: pacing's interval, or, with pacing
    /// off, the confirmation interval (probes are then sent only to confirm
    /// reliable events).
    fn interval_ns(&self) -> u64 {
        self.cfg
            .map_or(CONFIRM_EVERY, |c| c.probe_interval)
            .as_nanos() as u64
    }

    /// Whether to append a probe now after everything committed up to
    /// stream offset `offset` (`confirm`: reliable events wait for
    /// confirmation; `urgent`: so many that the probe interval is not waited
    /// for); if so, the probe is recorded as sent and its offset returned.
    pub(crate) fn take_probe(
        &mut self,
        now_ns: u64,
        offset: u64,
        confirm: bool,
        urgent: bool,
    ) -> Option<u64> {
        if self.cfg.is_none() && !confirm {
            return None;
        }
        let too_soon = !urgent
            && self
                .last_probe_ns
                .is_some_and(|last| now_ns.saturating_sub(last) < self.interval_ns());
        if self.probe.is_some() || too_soon {
            return None;
        }
        Some(self.force_probe(now_ns, offset))
    }

    /// True while a probe is unanswered.
    pub(crate) fn has_probe(&self) -> bool {
        self.probe.is_some()
    }

    /// Records a probe sent now after everything committed up to stream
    /// offset `offset` (keepalive pings are probes too); returns `offset`.
    pub(crate) fn force_probe(&mut self, now_ns: u64, offset: u64) -> u64 {
        self.set_written(offset);
        if self.idle && offset > self.acked {
            // Data goes out into an empty pipe: the next sample starts now.
            self.idle = false;
            if self.sample_base.is_some() {
                self.sample_base = Some((self.acked, now_ns));
            }
        }
        if self.probe.is_none() {
            self.probe = Some((offset, now_ns));
        }
        self.last_probe_ns = Some(now_ns);
        offset
    }

    /// When the idle sender should send a probe to confirm what it wrote
    /// (`awaiting`: reliable events wait for confirmation), if it should.
    pub(crate) fn probe_due(&self, awaiting: bool, urgent: bool) -> Option<u64> {
        if !awaiting || self.probe.is_some() {
            return None;
        }
        if urgent {
            return Some(0);
        }
        Some(self.last_probe_ns.map_or(0, |l| l + self.interval_ns()))
    }

    /// May the sender write now? Switches pacing off when probes time out
    /// (returns `Go` then).
    pub(crate) fn decide(&mut self, now_ns: u64) -> Decision {
        let Some(cfg) = self.cfg else {
            return Decision::Go;
        };
        let hold = match self.probe {
            Some((_, sent)) => {
                let age = now_ns.saturating_sub(sent);
                if age > cfg.probe_timeout.as_nanos() as u64 {
                    tracing::warn!(
                        after = ?cfg.probe_timeout,
                        "the server does not answer pings; pacing is off for this connection"
                    );
                    self.cfg = None;
                    self.end_hold(now_ns);
                    return Decision::Go;
                }
                let limit = cfg.max_delay.as_nanos() as u64;
                // What the server reads in `max_delay` at its measured rate.
                self.update_rate(now_ns);
                let budget = (self.rate * limit as f64) as u64;
                let in_pipe = self.in_pipe();
                age > limit || in_pipe > budget || in_pipe > cfg.max_pipe_bytes
            }
            None => false,
        };
        match hold {
            true => {
                if self.holding_since.is_none() {
                    self.holding_since = Some(now_ns);
                    self.holds += 1;
                }
                // Re-check at the probe timeout at the latest; a pong wakes
                // the sender earlier.
                let (_, sent) = self.probe.expect("holding on a probe");
                Decision::Hold {
                    recheck_ns: sent + cfg.probe_timeout.as_nanos() as u64 + 1,
                }
            }
            false => {
                self.end_hold(now_ns);
                Decision::Go
            }
        }
    }

    fn end_hold(&mut self, now_ns: u64) {
        if let Some(since) = self.holding_since.take() {
            self.hold_ns += now_ns.saturating_sub(since);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: u64 = 1_000_000;

    impl Pacer {
        /// What the sender does in a round: `n` bytes committed, then a
        /// probe after them if one is due.
        fn probe_then_write(&mut self, now_ns: u64, n: u64) -> Option<u64> {
            let end = self.written + n;
            let probe = self.take_probe(now_ns, end, false, false);
            self.set_written(end);
            probe
        }
    }

    #[test]
    fn probe_payload_round_trips() {
        assert_eq!(parse_probe(&probe_payload(7, 9)), Some((7, 9)));
        assert_eq!(parse_probe(&[1, 2, 3]), None);
    }

    #[test]
    fn a_fast_server_is_rarely_held() {
        let mut p = Pacer::new(Some(Pacing::default()));
        let mut now = MS;
        let mut holds_after_warmup = 0;
        for i in 0..1000 {
            // A write every 0.1 ms; probes answered 0.2 ms after they leave.
            if p.decide(now) == Decision::Go {
                if let Some(off) = p.probe_then_write(now, 100) {
                    now += MS / 5;
                    p.acked(off, now);
                    continue;
                }
            } else if i > 10 {
                holds_after_warmup += 1;
            }
            now += MS / 10;
        }
        assert_eq!(holds_after_warmup, 0);
        assert!(
            p.rate_bytes_per_sec() > 100_000.0,
            "{}",
            p.rate_bytes_per_sec()
        );
    }

    #[test]
    fn a_sample_taken_while_the_producer_was_quiet_does_not_hold_a_fast_server() {
        let mut p = Pacer::new(Some(Pacing::default()));
        // The server reads 1 MB per ms.
        let off = p.probe_then_write(0, 1 << 20).unwrap();
        p.acked(off, MS);
        let off = p.probe_then_write(MS, 1 << 20).unwrap();
        p.acked(off, 2 * MS);
        assert!(p.rate_bytes_per_sec() > 5e8, "{}", p.rate_bytes_per_sec());
        // The producer has one event; its pong comes late (a scheduling
        // hiccup): 60 bytes in 2.5 ms is not what the server can read.
        let off = p.probe_then_write(2 * MS + MS / 2, 60).unwrap();
        p.acked(off, 5 * MS);
        // A burst follows: written at once, not held.
        p.probe_then_write(5 * MS + MS / 10, 1 << 20).unwrap();
        assert_eq!(p.decide(5 * MS + MS / 5), Decision::Go);
        // A server that really slows down is believed within the window.
        let mut now = 5 * MS + MS / 5;
        let mut off = p.written();
        for _ in 0..20 {
            now += 10 * MS;
            p.acked(off, now);
            off = p.probe_then_write(now, 6000).unwrap();
        }
        assert!(p.rate_bytes_per_sec() < 1e6, "{}", p.rate_bytes_per_sec());
    }

    #[test]
    fn before_the_rate_is_known_it_is_stop_and_wait() {
        let mut p = Pacer::new(Some(Pacing::default()));
        p.probe_then_write(MS, 600).unwrap();
        assert!(matches!(p.decide(2 * MS), Decision::Hold { .. }));
    }

    #[test]
    fn a_60_message_per_second_reader_gets_one_batch_at_a_time() {
        // 10 frames of 60 bytes per round; the server reads 3.6 kB/s.
        let mut p = Pacer::new(Some(Pacing::default()));
        let mut now = MS;
        let mut off = p.probe_then_write(now, 600).unwrap();
        for _ in 0..20 {
            // Held until the server has read the round (167 ms later).
            assert!(matches!(p.decide(now + 10 * MS), Decision::Hold { .. }));
            now += 167 * MS;
            p.acked(off, now);
            assert_eq!(p.decide(now), Decision::Go);
            off = p.probe_then_write(now, 600).unwrap();
        }
        let rate = p.rate_bytes_per_sec();
        assert!((3000.0..4000.0).contains(&rate), "{rate}");
    }

    #[test]
    fn a_slow_server_holds_until_it_answers() {
        let mut p = Pacer::new(Some(Pacing::default()));
        let off = p.probe_then_write(0, 600).unwrap();
        assert!(matches!(p.decide(10 * MS), Decision::Hold { .. }));
        assert!(matches!(p.decide(60 * MS), Decision::Hold { .. }));
        // Only one probe at a time.
        assert_eq!(p.take_probe(61 * MS, p.written(), false, false), None);
        p.acked(off, 170 * MS);
        assert_eq!(p.decide(170 * MS), Decision::Go);
        assert_eq!(p.holds, 1);
        assert_eq!(p.hold_ns, 160 * MS);
        assert_eq!(p.in_pipe(), 0);
    }

    #[test]
    fn unconfirmed_bytes_are_capped() {
        let mut p = Pacer::new(Some(Pacing {
            max_pipe_bytes: 1000,
            ..Pacing::default()
        }));
        p.probe_then_write(0, 10).unwrap();
        p.set_written(5000);
        assert!(matches!(p.decide(MS), Decision::Hold { .. }));
    }

    #[test]
    fn a_server_that_never_pongs_turns_pacing_off() {
        let mut p = Pacer::new(Some(Pacing::default()));
        p.probe_then_write(0, 10).unwrap();
        assert!(matches!(p.decide(100 * MS), Decision::Hold { .. }));
        assert_eq!(p.decide(11_000 * MS), Decision::Go);
        assert!(!p.enabled());
    }

    #[test]
    fn pacing_off_always_goes() {
        let mut p = Pacer::new(None);
        p.set_written(1 << 30);
        assert_eq!(p.decide(u64::MAX / 2), Decision::Go);
        assert_eq!(p.take_probe(0, p.written(), false, false), None);
    }
}
