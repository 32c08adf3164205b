//! One clock read per event.
//!
//! Every published event needs a monotonic time (for its maximum age and the
//! staleness telemetry) and a wall-clock time in milliseconds (the `ts` on the
//! wire). Reading both system clocks costs ≈ 65 ns on the machines this crate
//! was measured on, `std::time::Instant` alone ≈ 25 ns. This module reads the
//! CPU's time-stamp counter through `quanta` (≈ 10 ns; it falls back to the
//! OS's monotonic clock where the TSC is not reliable) and derives the wall
//! clock from a cached offset, refreshed by the sender task (see [`resync`])
//! so that wall-clock steps (NTP) are followed within a second.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::{SystemTime, UNIX_EPOCH};

struct Clock {
    tsc: quanta::Clock,
    anchor: u64,
    /// Wall-clock milliseconds at `anchor`, adjusted by resyncs.
    wall_ms_at_anchor: AtomicI64,
    last_resync_ns: AtomicU64,
}

fn clock() -> &'static Clock {
    static CLOCK: OnceLock<Clock> = OnceLock::new();
    CLOCK.get_or_init(|| {
        let tsc = quanta::Clock::new();
        let anchor = tsc.raw();
        Clock {
            tsc,
            anchor,
            wall_ms_at_anchor: AtomicI64::new(wall_now_ms() as i64),
            last_resync_ns: AtomicU64::new(0),
        }
    })
}

fn wall_now_ms() -> u64 {
    let ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0);
    #[cfg(test)]
    let ms = ms.saturating_add_signed(STEP_MS.load(Ordering::Relaxed));
    ms
}

/// Tests: re-reads the wall clock now.
#[cfg(test)]
pub(crate) fn force_resync() {
    let c = clock();
    let now = now_ns();
    c.last_resync_ns.store(now, Ordering::Relaxed);
    c.wall_ms_at_anchor.store(
        wall_now_ms() as i64 - (now / 1_000_000) as i64,
        Ordering::Relaxed,
    );
}

/// Tests: a step of the wall clock (as NTP makes), in milliseconds.
#[cfg(test)]
pub(crate) static STEP_MS: AtomicI64 = AtomicI64::new(0);

/// Nanoseconds since the process's clock anchor (monotonic).
#[inline]
pub(crate) fn now_ns() -> u64 {
    let c = clock();
    c.tsc.delta_as_nanos(c.anchor, c.tsc.raw())
}

/// Wall-clock milliseconds since the Unix epoch for a [`now_ns`] value.
#[inline]
pub(crate) fn wall_ms(ns: u64) -> u64 {
    let base = clock().wall_ms_at_anchor.load(Ordering::Relaxed);
    (base + (ns / 1_000_000) as i64).max(0) as u64
}

/// Re-reads the wall clock if the last resync is more than a second old.
pub(crate) fn resync(now_ns: u64) {
    let c = clock();
    let last = c.last_resync_ns.load(Ordering::Relaxed);
    if now_ns.saturating_sub(last) < 1_000_000_000 {
        return;
    }
    c.last_resync_ns.store(now_ns, Ordering::Relaxed);
    let wall = wall_now_ms() as i64;
    c.wall_ms_at_anchor
        .store(wall - (now_ns / 1_000_000) as i64, Ordering::Relaxed);
}
