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
//! the server reads in [`Pacing::max_delay`] at its measured rate, or the
//! probe is older than `max_delay`, or more than [`Pacing::max_pipe_bytes`]
//! are unconfirmed. When the server keeps up, probes come back within a
//! round trip, the measured rate is high and pacing never holds, at the cost
//! of at most one 20-byte ping per [`Pacing::probe_interval`].
//!
//! # Measuring the read rate
//!
//! The rate is the bytes confirmed over the time the pipe was *busy* (bytes
//! written and not yet confirmed), summed over the samples of the last
//! [`RATE_WINDOW_NS`]: a ratio of sums, not the largest sample. Two kinds
//! of reader taught this:
//!
//! * A reader that reads in bursts, as Python's `websockets` does (its
//!   transport reads what the kernel has, answers every ping in it, then
//!   stops reading until the application has drained its queue), answers a
//!   round of pings within a fraction of a millisecond and the next one
//!   170 ms later. Believing the largest sample (1.2 MB/s there, for a
//!   reader of 3.6 kB/s) let the sender write 80 kB before the probe aged
//!   past `max_delay`, which the reader then took 20 s to work through; in
//!   1 run of 4 the probe behind it timed out and pacing switched itself
//!   off (p99 age 11.9 s, growing by a second per second). Summed over the
//!   busy time, the same samples give 7.6 kB/s, and the sender keeps about
//!   one round in flight (p99 age about 350 ms).
//! * A producer that has little to send (app-limited) leaves the pipe empty
//!   most of the time; counting only busy time keeps its idle gaps from
//!   passing for a slow server.
//!
//! Until it has watched the server read for `max_delay` of busy time, the
//! sender is stop-and-wait (one round in flight): it does not fill the
//! socket before it knows the reader. (With 5 ms, the first rounds, which
//! a bursty reader answers at once, made it believe 142 kB/s and write
//! 5.5 kB, 1.5 s of that reader's work, before the first slow answer.)
//!
//! # When pongs do not come
//!
//! A late pong is a slow reader: the sender holds, never switches pacing
//! off (that turned one late pong into a backlog growing by a second per
//! second), and keepalive decides whether the server is dead. Two kinds of
//! connection cannot have pongs at all: while inbound backpressure has
//! paused reading (they wait unread), and with a server that has answered
//! no ping since the connection opened, although one has been out for
//! [`Pacing::probe_timeout`]. For those, the sender counts what the
//! server's TCP stack acknowledged (the bytes written minus the socket's
//! send queue) as confirmed, for pacing and for reliable events, until a
//! pong arrives: the stream goes on, bounded by [`Pacing::max_pipe_bytes`]
//! and the server's receive buffer rather than by its reading.
//!
//! This module is the pacing state machine; it knows nothing of tokio.

use std::collections::VecDeque;
use std::time::Duration;

/// Pacing configuration ([`ClientBuilder::pacing`](crate::ClientBuilder::pacing)).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pacing {
    /// Hold new writes while the oldest unconfirmed probe is older than
    /// this, or the unconfirmed bytes exceed what the server reads in this
    /// long at its measured rate. It bounds how stale the data in flight
    /// can get beyond one batch. Default: 50 ms (three frames at 60 Hz).
    pub max_delay: Duration,
    /// Hold new writes while more than this many bytes are unconfirmed,
    /// whatever their age. Default: 4 MiB (room for a large point cloud in
    /// flight; it caps what a fast server can have in its buffers).
    pub max_pipe_bytes: u64,
    /// Fewest time between probes. Default: 1 ms (at most 1000 pings/s when
    /// the server keeps up; each is 20 bytes on the wire).
    pub probe_interval: Duration,
    /// A first probe unanswered this long means a server that does not
    /// answer pings: for that connection, what its TCP stack acknowledged
    /// counts as confirmed (see the module documentation). Default: 1 s
    /// (twenty times `max_delay`; a server that reads at all answers far
    /// sooner while pacing bounds its backlog).
    pub probe_timeout: Duration,
}

impl Default for Pacing {
    fn default() -> Self {
        Pacing {
            max_delay: Duration::from_millis(50),
            max_pipe_bytes: 4 << 20,
            probe_interval: Duration::from_millis(1),
            probe_timeout: Duration::from_secs(1),
        }
    }
}

/// With pacing off, reliable events written are still confirmed by a probe,
/// at most this often: after a crash, at most about this much of a reliable
/// stream (plus a round trip) is written twice.
const CONFIRM_EVERY: Duration = Duration::from_millis(10);

/// How long a read-rate sample counts: ten times the default `max_delay`,
/// long enough to span a bursty reader's pauses.
pub(crate) const RATE_WINDOW_NS: u64 = 500_000_000;
/// Samples kept at most (one per pong; older ones fall out of the sums).
const RATE_SAMPLES: usize = 256;

/// [`CONFIRM_EVERY`] in nanoseconds.
pub(crate) const CONFIRM_EVERY_NS: u64 = CONFIRM_EVERY.as_nanos() as u64;

/// A duration in nanoseconds, saturating (a `Duration` can exceed `u64`
/// nanoseconds).
#[inline]
pub(crate) fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// Bytes of a probe's ping frame (header, mask, 16 bytes of payload).
pub(crate) const PROBE_FRAME_LEN: u64 = 2 + 4 + 16;

/// Encodes a probe's ping payload: when it was sent and the stream offset
/// just past the ping itself (a pong then confirms everything up to and
/// including the ping, and no byte of ours stays unconfirmed: with the
/// offset before the ping, its own 22 bytes always looked unread, which
/// kept a sender that did not yet know the rate holding for good).
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

/// One confirmation: when, how many bytes, over how much busy time.
#[derive(Debug, Clone, Copy)]
struct Sample {
    at_ns: u64,
    bytes: u64,
    busy_ns: u64,
}

/// The pacing state of one connection.
#[derive(Debug)]
pub(crate) struct Pacer {
    cfg: Option<Pacing>,
    /// When a probe is late (also with pacing off, for confirmations).
    probe_timeout_ns: u64,
    /// Busy time measured before the rate is believed: `max_delay`.
    min_busy_ns: u64,
    /// Bytes committed on this connection.
    written: u64,
    /// Offset confirmed (by pongs, or by TCP while pongs are late).
    acked: u64,
    /// Since when the pipe has held unconfirmed bytes not yet counted in a
    /// sample (`None` while it is empty).
    busy_since: Option<u64>,
    samples: VecDeque<Sample>,
    /// The read rate believed now (bytes per nanosecond; 0 until
    /// `min_busy_ns` of busy time was measured).
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
            probe_timeout_ns: nanos(cfg.unwrap_or_default().probe_timeout),
            min_busy_ns: nanos(cfg.unwrap_or_default().max_delay).max(1_000_000),
            written: 0,
            acked: 0,
            busy_since: None,
            samples: VecDeque::with_capacity(RATE_SAMPLES),
            rate: 0.0,
            probe: None,
            last_probe_ns: None,
            holding_since: None,
            holds: 0,
            hold_ns: 0,
        }
    }

    /// Bytes written and not yet confirmed read.
    pub(crate) fn in_pipe(&self) -> u64 {
        self.written.saturating_sub(self.acked)
    }

    /// Bytes committed so far.
    #[cfg(test)]
    pub(crate) fn written(&self) -> u64 {
        self.written
    }

    /// Sets the total committed to the connection at `now_ns` (written by
    /// the sender or by publishers directly, or about to be written).
    pub(crate) fn set_written(&mut self, total: u64, now_ns: u64) {
        if total > self.written {
            if self.busy_since.is_none() {
                // Data goes out into an empty pipe: busy from now.
                self.busy_since = Some(now_ns);
            }
            self.written = total;
        }
    }

    /// The server's measured read rate, bytes per second (0 until known).
    pub(crate) fn rate_bytes_per_sec(&self) -> f64 {
        self.rate * 1e9
    }

    /// Everything up to `offset` is confirmed (seen at `now_ns`): by a
    /// pong, or by the server's TCP stack while pongs are late.
    pub(crate) fn acked(&mut self, offset: u64, now_ns: u64) {
        let offset = offset.min(self.written);
        if offset > self.acked {
            let busy_ns = self.busy_since.map_or(0, |t| now_ns.saturating_sub(t));
            if self.samples.len() == RATE_SAMPLES {
                self.samples.pop_front();
            }
            self.samples.push_back(Sample {
                at_ns: now_ns,
                bytes: offset - self.acked,
                busy_ns,
            });
            tracing::trace!(
                bytes = offset - self.acked,
                busy_us = busy_ns / 1000,
                in_pipe = self.written - offset,
                "read-rate sample"
            );
            self.acked = offset;
            // Still busy: the next sample starts now.
            self.busy_since = (self.written > self.acked).then_some(now_ns);
        }
        self.update_rate(now_ns);
        if let Some((off, _)) = self.probe {
            if self.acked >= off {
                self.probe = None;
            }
        }
    }

    /// Bytes confirmed over busy time, summed over the window (the rate
    /// believed so far stays while the window has too little busy time).
    fn update_rate(&mut self, now_ns: u64) {
        let from = now_ns.saturating_sub(RATE_WINDOW_NS);
        while self.samples.front().is_some_and(|s| s.at_ns < from) {
            self.samples.pop_front();
        }
        let (bytes, busy) = self
            .samples
            .iter()
            .fold((0u64, 0u64), |(b, t), s| (b + s.bytes, t + s.busy_ns));
        if busy >= self.min_busy_ns {
            self.rate = bytes as f64 / busy as f64;
        }
    }

    /// The least time between probes: pacing's interval, or, with pacing
    /// off, the confirmation interval (probes are then sent only to confirm
    /// reliable events and as keepalive pings).
    fn interval_ns(&self) -> u64 {
        nanos(self.cfg.map_or(CONFIRM_EVERY, |c| c.probe_interval))
    }

    /// Whether to append a probe now (`confirm`: reliable events wait for
    /// confirmation, or a keepalive ping is due; `urgent`: so many that the
    /// probe interval is not waited for). One is out at a time.
    pub(crate) fn should_probe(&self, now_ns: u64, confirm: bool, urgent: bool) -> bool {
        if self.cfg.is_none() && !confirm {
            return false;
        }
        let too_soon = !urgent
            && self
                .last_probe_ns
                .is_some_and(|last| now_ns.saturating_sub(last) < self.interval_ns());
        self.probe.is_none() && !too_soon
    }

    /// [`Pacer::should_probe`], and if so [`Pacer::probe_sent`] at `offset`.
    #[cfg(test)]
    pub(crate) fn take_probe(
        &mut self,
        now_ns: u64,
        offset: u64,
        confirm: bool,
        urgent: bool,
    ) -> Option<u64> {
        self.should_probe(now_ns, confirm, urgent)
            .then(|| self.probe_sent(now_ns, offset))
    }

    /// True while a probe is unanswered.
    pub(crate) fn has_probe(&self) -> bool {
        self.probe.is_some()
    }

    /// Whether a timer's ping (keepalive, or a probe the sender's timer
    /// asked for) may go out at `now_ns`, the last one having gone out at
    /// `last_ping_ns`, with pings due every `interval_ns`.
    ///
    /// While a probe is unanswered, pings back off: the next one waits as
    /// long as the last one had waited for the answer (1, 1, 2, 4, ...
    /// intervals), at most `max_gap_ns`. Pings pass pacing, so pings sent
    /// every interval to a server that reads fewer frames than one per
    /// interval filled the pipe, and pacing held the data behind them: the
    /// stream stalled with no error (`tests/resilience.rs`:
    /// `a_server_slower_than_the_ping_rate_still_gets_the_data`). The cap
    /// (half the keepalive timeout) matters when the answers do come, late:
    /// they come as far apart as the pings went, and keepalive must not
    /// take those gaps for a dead server. A silent peer still gets pings
    /// (a dead link shows as a write error). Timers fire on the interval's
    /// grid, a little late: half an interval of slack keeps a wake-up a few
    /// µs early from skipping a whole step.
    pub(crate) fn timer_ping_allowed(
        &self,
        now_ns: u64,
        last_ping_ns: u64,
        interval_ns: u64,
        max_gap_ns: u64,
    ) -> bool {
        let Some((_, sent)) = self.probe else {
            return true;
        };
        let gap = last_ping_ns.saturating_sub(sent).min(max_gap_ns);
        now_ns.saturating_sub(last_ping_ns) + interval_ns / 2 >= gap
    }

    /// True when the outstanding probe has waited longer than the probe
    /// timeout (its pong is late or will never come).
    pub(crate) fn probe_late(&self, now_ns: u64) -> bool {
        self.probe
            .is_some_and(|(_, sent)| now_ns.saturating_sub(sent) > self.probe_timeout_ns)
    }

    /// Records a probe sent now whose pong confirms everything up to stream
    /// offset `offset` (keepalive pings are probes too); returns `offset`.
    pub(crate) fn probe_sent(&mut self, now_ns: u64, offset: u64) -> u64 {
        self.set_written(offset, now_ns);
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

    /// How many more bytes the sender may put in the pipe now (`None`: no
    /// limit, pacing is off); it takes at least one event whatever this
    /// says. Before the rate is known, twice what the server has confirmed
    /// on this connection (slow start: the allowance doubles with every
    /// round the server confirms, from one event); then what the server
    /// reads in `max_delay` at its measured rate. Without it, the first
    /// round after a hold took everything queued: against a reader of one
    /// message per second, 5 000 reliable events, whose pong came long
    /// after keepalive had given up.
    pub(crate) fn allowance(&mut self, now_ns: u64) -> Option<u64> {
        let cfg = self.cfg?;
        self.update_rate(now_ns);
        let limit = if self.rate > 0.0 {
            ((self.rate * nanos(cfg.max_delay) as f64) as u64).min(cfg.max_pipe_bytes)
        } else {
            self.acked.saturating_mul(2).min(cfg.max_pipe_bytes)
        };
        Some(limit.saturating_sub(self.in_pipe()))
    }

    /// May the sender write now? When it must hold and no probe is out,
    /// it sends one at once (see [`Pacer::has_probe`]): nothing else would
    /// confirm what is in the pipe.
    pub(crate) fn decide(&mut self, now_ns: u64) -> Decision {
        let Some(cfg) = self.cfg else {
            return Decision::Go;
        };
        let limit = nanos(cfg.max_delay);
        // What the server reads in `max_delay` at its measured rate
        // (nothing before the rate is known: stop-and-wait).
        self.update_rate(now_ns);
        let budget = (self.rate * limit as f64) as u64;
        let in_pipe = self.in_pipe();
        let over = in_pipe > budget || in_pipe > cfg.max_pipe_bytes;
        let hold = match self.probe {
            Some((_, sent)) => over || now_ns.saturating_sub(sent) > limit,
            // Written since the last pong and not yet probed (the probe
            // interval had not passed): over the budget, hold too.
            None => over,
        };
        if !hold {
            self.end_hold(now_ns);
            return Decision::Go;
        }
        if self.holding_since.is_none() {
            self.holding_since = Some(now_ns);
            self.holds += 1;
        }
        // Re-check when the probe becomes late at the latest; a pong wakes
        // the sender earlier.
        let sent = self.probe.map_or(now_ns, |(_, sent)| sent);
        Decision::Hold {
            recheck_ns: sent.saturating_add(self.probe_timeout_ns).saturating_add(1),
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
            self.set_written(end, now_ns);
            self.take_probe(now_ns, end, false, false)
        }
    }

    #[test]
    fn unanswered_pings_back_off_up_to_the_cap() {
        let mut p = Pacer::new(Some(Pacing::default()));
        let interval = 100 * MS;
        let cap = 1000 * MS;
        // A probe at 0 that is never answered; the timer ticks every
        // interval, a few µs late or early.
        p.probe_sent(0, 10);
        let mut last = 0;
        let mut sent = vec![0];
        for tick in 1..=60u64 {
            let now = tick * interval + if tick % 2 == 0 { 3_000 } else { 0 } - 1_000;
            if p.timer_ping_allowed(now, last, interval, cap) {
                p.probe_sent(now, 10 + tick);
                last = now;
                sent.push(tick);
            }
        }
        // Gaps of 1, 1, 2, 4, 8 intervals, then the cap (10).
        assert_eq!(sent, vec![0, 1, 2, 4, 8, 16, 26, 36, 46, 56]);
        // Answered: every interval again.
        p.acked(100, 61 * interval);
        assert!(p.timer_ping_allowed(61 * interval, last, interval, cap));
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
        for i in 0..3000 {
            // A write every 0.1 ms; probes answered 0.2 ms after they leave.
            if let Some((off, sent)) = p.probe {
                if now >= sent + MS / 5 {
                    p.acked(off, now);
                }
            }
            match p.decide(now) {
                Decision::Go => {
                    p.probe_then_write(now, 100);
                }
                Decision::Hold { .. } => {
                    // What the sender does: a probe, if none is out.
                    if !p.has_probe() {
                        p.probe_sent(now, p.written());
                    }
                    // Stop-and-wait until 50 ms of busy time was seen.
                    if i > 1500 {
                        holds_after_warmup += 1;
                    }
                }
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
    fn a_quiet_producer_does_not_make_a_fast_server_look_slow() {
        let mut p = Pacer::new(Some(Pacing::default()));
        // The server reads 1 MB per ms.
        let mut now = 0;
        for _ in 0..60 {
            let off = p.probe_then_write(now, 1 << 20).unwrap();
            now += MS;
            p.acked(off, now);
        }
        assert!(p.rate_bytes_per_sec() > 5e8, "{}", p.rate_bytes_per_sec());
        // 100 ms of nothing, then one event whose pong comes late (a
        // scheduling hiccup): 60 bytes in 2.5 ms is not what the server
        // can read, and the idle time is not counted at all.
        now += 100 * MS;
        let off = p.probe_then_write(now, 60).unwrap();
        now += 5 * MS / 2;
        p.acked(off, now);
        // A burst follows: written at once, not held.
        p.probe_then_write(now + MS / 10, 1 << 20).unwrap();
        assert_eq!(p.decide(now + MS / 5), Decision::Go);
        // A server that really slows down is believed within the window.
        let mut off = p.written();
        for _ in 0..60 {
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
    fn a_bursty_reader_is_measured_over_its_pauses() {
        // Python's `websockets` with max_queue=1, reading 60 messages/s:
        // a round is answered 0.5 ms after it is written when the reader
        // had drained its queue, else when it has (170 ms later).
        let mut p = Pacer::new(Some(Pacing::default()));
        let mut now = MS;
        let mut max_in_pipe_on_go = 0;
        for round in 0..40 {
            let off = p.probe_then_write(now, 600).unwrap();
            now += if round % 2 == 0 { MS / 2 } else { 170 * MS };
            p.acked(off, now);
            // More rounds go out as long as pacing lets them: those are
            // what the reader will have queued.
            let mut extra = 0;
            while p.decide(now) == Decision::Go && extra < 1000 {
                max_in_pipe_on_go = max_in_pipe_on_go.max(p.in_pipe());
                p.probe_then_write(now, 600);
                extra += 1;
            }
            // Whatever went out is read before the next round's pong.
            now += 170 * MS;
            let w = p.written();
            p.acked(w, now);
        }
        // The largest sample (600 B in 0.5 ms) would allow 60 kB in flight.
        assert!(
            max_in_pipe_on_go <= 1200,
            "{max_in_pipe_on_go} bytes in flight"
        );
        let rate = p.rate_bytes_per_sec();
        assert!(rate < 10_000.0, "{rate}");
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
        p.set_written(5000, 0);
        assert!(matches!(p.decide(MS), Decision::Hold { .. }));
    }

    #[test]
    fn a_late_probe_is_reported_and_pacing_stays_on() {
        // Issue 13, items 2 and 10: a probe that timed out switched pacing
        // off for good and was never cleared.
        let mut p = Pacer::new(Some(Pacing::default()));
        p.probe_then_write(0, 10).unwrap();
        assert!(matches!(p.decide(100 * MS), Decision::Hold { .. }));
        assert!(!p.probe_late(900 * MS));
        assert!(p.probe_late(1_100 * MS));
        assert!(matches!(p.decide(11_000 * MS), Decision::Hold { .. }));
        // What TCP acknowledged counts instead: the probe is answered.
        p.acked(10, 11_000 * MS);
        assert!(!p.has_probe());
        assert_eq!(p.decide(11_000 * MS), Decision::Go);
        assert!(p.take_probe(11_001 * MS, 20, false, false).is_some());
    }

    #[test]
    fn pacing_off_always_goes() {
        let mut p = Pacer::new(None);
        p.set_written(1 << 30, 0);
        assert_eq!(p.decide(u64::MAX / 2), Decision::Go);
        assert_eq!(p.take_probe(0, p.written(), false, false), None);
    }
}
