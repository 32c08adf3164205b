//! Statistics: internal counters and the public [`Stats`] snapshot.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

/// A snapshot of the client's counters ([`VuerClient::stats`](crate::VuerClient::stats)).
///
/// The outgoing counters always satisfy
/// `published == sent + coalesced + expired + rejected + dropped + pending`
/// (they are read under one lock), so every event offered to the client is
/// accounted for:
///
/// * `sent`: written to a socket (a reconnect may write a value twice:
///   restored keyed values and `resent` reliable events count as published
///   and sent again; see the crate documentation on delivery);
/// * `coalesced`: replaced by a newer value of the same key before it was
///   written (the design's only silent drop, and it is counted);
/// * `expired`: older than its maximum age when its turn came;
/// * `rejected`: refused by `publish` (queue full, or too large); the caller
///   was told and still owns it;
/// * `dropped`: accepted and then given up: by the
///   [`Overflow::DropOldest`](crate::Overflow::DropOldest) policy, or still
///   queued when the client closed for good;
/// * `pending`: queued or being written now.
#[derive(Debug, Clone, Default, PartialEq)]
#[non_exhaustive]
pub struct Stats {
    /// Events offered to `publish`/`send` (plus, after a reconnect, the
    /// restored values and the reliable events written again).
    pub published: u64,
    /// Events written to a socket.
    pub sent: u64,
    /// Keyed events superseded by a newer value before being written.
    pub coalesced: u64,
    /// Events not written because they outlived their maximum age.
    pub expired: u64,
    /// Events refused by `publish` (full or too large).
    pub rejected: u64,
    /// Accepted events given up (drop-oldest policy, or closed for good).
    pub dropped: u64,
    /// Events queued or in the write in progress.
    pub pending: u64,
    /// Events queued (not counting the write in progress).
    pub queue_depth: u64,
    /// Bytes queued.
    pub queue_bytes: u64,
    /// Bytes written to sockets (frame headers included).
    pub bytes_sent: u64,
    /// Frames written (events plus control frames).
    pub frames_sent: u64,
    /// Write rounds: one write (and one flush) per round, however many
    /// frames it carries.
    pub flushes: u64,
    /// Events `publish` wrote itself because the sender had been idle
    /// (sparse events; no hand-off to the sender task). Included in
    /// `sent` and `flushes`.
    pub direct_writes: u64,
    /// Events per write round (`sent / flushes`).
    pub frames_per_flush: f64,
    /// Events received and decoded.
    pub received: u64,
    /// Bytes of messages received.
    pub received_bytes: u64,
    /// Inbound messages that failed to decode (skipped; the connection goes
    /// on).
    pub decode_errors: u64,
    /// Inbound events dropped because the application did not read them
    /// (drop-oldest inbound policy).
    pub inbound_dropped: u64,
    /// Events waiting in the main inbound queue.
    pub inbound_queued: u64,
    /// RPC requests answered by a registered answerer.
    pub rpc_answered: u64,
    /// Reliable events written and not yet confirmed by the server (its
    /// answer to a later ping proves it read them). If the connection is
    /// lost, they are written again on the next one.
    pub unconfirmed: u64,
    /// Retained last values dropped from the state restore (the next
    /// reconnect does not send them again) to keep what is retained within
    /// `max_queued_bytes`. Not events: not part of the identity above.
    pub retained_evicted: u64,
    /// Reliable events written and never confirmed when the client closed
    /// for good (the server may or may not have read them; see
    /// [`CloseError`](crate::CloseError)). They count as `sent`.
    pub unconfirmed_lost: u64,
    /// Reliable events written again after a reconnect because the lost
    /// connection had not confirmed them (each counts in `published` again;
    /// the server may have read some of them already: duplicates).
    pub resent: u64,
    /// Pings sent.
    pub pings_sent: u64,
    /// Pongs received.
    pub pongs_received: u64,
    /// Successful connections (the first one included).
    pub connects: u64,
    /// Connections lost.
    pub disconnects: u64,
    /// Total time spent disconnected while the client was open.
    pub downtime: Duration,
    /// Age of the values written in the last second, at the moment they
    /// were written (time since `publish`): median.
    pub age_p50: Duration,
    /// The same, 99th percentile.
    pub age_p99: Duration,
    /// The same, maximum.
    pub age_max: Duration,
    /// Bytes written and not yet confirmed read by the server (pacing's
    /// estimate of what is in the pipe), as of the last second.
    pub pipe_bytes: u64,
    /// Bytes in the kernel's send queue (unsent plus unacknowledged), as of
    /// the last second (Linux).
    pub kernel_queued_bytes: u64,
    /// The server's read rate measured by pacing, bytes per second.
    pub server_read_rate: f64,
    /// Times pacing held the sender back because the server had not read
    /// what was written.
    pub pacing_holds: u64,
    /// Total time pacing held the sender back.
    pub pacing_hold_time: Duration,
    /// The last round-trip time measured with a ping.
    pub rtt: Duration,
    /// True while connected.
    pub connected: bool,
    /// The most recent error (connection lost, decode error, ...).
    pub last_error: Option<String>,
}

/// Counters updated by the tasks (outgoing event counters live in the ring,
/// under its lock).
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub bytes_sent: AtomicU64,
    pub frames_sent: AtomicU64,
    pub flushes: AtomicU64,
    pub direct_writes: AtomicU64,
    pub received: AtomicU64,
    pub received_bytes: AtomicU64,
    pub decode_errors: AtomicU64,
    pub inbound_dropped: AtomicU64,
    pub rpc_answered: AtomicU64,
    pub pings_sent: AtomicU64,
    pub pongs_received: AtomicU64,
    pub resent: AtomicU64,
    pub unconfirmed_lost: AtomicU64,
    pub connects: AtomicU64,
    pub disconnects: AtomicU64,
    pub downtime_ns: AtomicU64,
    pub age_p50_ns: AtomicU64,
    pub age_p99_ns: AtomicU64,
    pub age_max_ns: AtomicU64,
    pub pipe_bytes: AtomicU64,
    pub kernel_queued: AtomicU64,
    pub read_rate_bits: AtomicU64,
    pub pacing_holds: AtomicU64,
    pub pacing_hold_ns: AtomicU64,
    pub rtt_ns: AtomicU64,
}

impl Counters {
    #[inline]
    pub(crate) fn add(c: &AtomicU64, n: u64) {
        c.fetch_add(n, Relaxed);
    }

    pub(crate) fn get(c: &AtomicU64) -> u64 {
        c.load(Relaxed)
    }
}

/// A log-linear histogram with three significant bits (within 12.5 %),
/// cheap enough to record every event the sender writes: one
/// leading-zero count and an increment. Used for the age telemetry.
#[derive(Debug, Clone)]
pub(crate) struct LogHistogram {
    counts: Box<[u32; 512]>,
    total: u64,
    max: u64,
}

impl Default for LogHistogram {
    fn default() -> Self {
        LogHistogram {
            counts: Box::new([0; 512]),
            total: 0,
            max: 0,
        }
    }
}

impl LogHistogram {
    #[inline]
    fn index(v: u64) -> usize {
        if v < 8 {
            return v as usize;
        }
        let b = 63 - v.leading_zeros() as usize; // >= 3
        (b - 2) * 8 + ((v >> (b - 3)) & 7) as usize
    }

    /// The middle of bucket `i`.
    fn value(i: usize) -> u64 {
        if i < 8 {
            return i as u64;
        }
        let (b, sub) = (i / 8 + 2, (i % 8) as u64);
        let lo = (8 + sub) << (b - 3);
        lo + (1u64 << (b - 3)) / 2
    }

    /// Records one value.
    #[inline]
    pub(crate) fn record(&mut self, v: u64) {
        self.counts[Self::index(v)] += 1;
        self.total += 1;
        self.max = self.max.max(v);
    }

    /// True when nothing was recorded.
    pub(crate) fn is_empty(&self) -> bool {
        self.total == 0
    }

    /// The largest value recorded (exact).
    pub(crate) fn max(&self) -> u64 {
        self.max
    }

    /// The value at quantile `q` (0..=1), within 12.5 %.
    pub(crate) fn quantile(&self, q: f64) -> u64 {
        if self.total == 0 {
            return 0;
        }
        let rank = ((q * self.total as f64).ceil() as u64).clamp(1, self.total);
        let mut seen = 0u64;
        for (i, &c) in self.counts.iter().enumerate() {
            seen += c as u64;
            if seen >= rank {
                return Self::value(i).min(self.max);
            }
        }
        self.max
    }

    /// Forgets everything.
    pub(crate) fn reset(&mut self) {
        self.counts.fill(0);
        self.total = 0;
        self.max = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::LogHistogram;

    #[test]
    fn quantiles_are_within_an_eighth() {
        let mut h = LogHistogram::default();
        for v in 1..=100_000u64 {
            h.record(v * 1000);
        }
        for (q, want) in [
            (0.5, 50_000_000f64),
            (0.99, 99_000_000.0),
            (0.01, 1_000_000.0),
        ] {
            let got = h.quantile(q) as f64;
            assert!((got - want).abs() / want < 0.125, "q {q}: {got} vs {want}");
        }
        assert_eq!(h.max(), 100_000_000);
        h.reset();
        assert!(h.is_empty());
        h.record(0);
        h.record(5);
        assert_eq!(h.quantile(1.0), 5);
        h.record(u64::MAX);
        assert_eq!(h.max(), u64::MAX);
    }
}
