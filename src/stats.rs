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
/// * `sent`: written to a socket (a reconnect may write a value twice: see
///   the crate documentation on delivery);
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
    /// Events offered to `publish`/`send` (plus values restored after a
    /// reconnect).
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
    pub received: AtomicU64,
    pub received_bytes: AtomicU64,
    pub decode_errors: AtomicU64,
    pub inbound_dropped: AtomicU64,
    pub rpc_answered: AtomicU64,
    pub pings_sent: AtomicU64,
    pub pongs_received: AtomicU64,
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
