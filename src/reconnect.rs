//! The reconnect policy ([`Reconnect`]) and its backoff: a setting of the
//! client (`ClientBuilder::reconnect`), followed by the supervisor and by
//! the first connect.

use std::time::Duration;

#[cfg(doc)]
use crate::error::Disconnect;

/// Reconnect policy: exponential backoff with jitter.
///
/// The delay before attempt `n` (1-based) is
/// `min(initial * multiplier^(n-1), max)`, randomised by ± `jitter`
/// (a fraction), so that many clients do not reconnect in lockstep.
#[derive(Debug, Clone, PartialEq)]
pub struct Reconnect {
    /// Delay before the first attempt. Default: 100 ms (a restarted server
    /// is usually back within a second; a first quick retry finds it).
    pub initial_delay: Duration,
    /// Upper bound of the delay. Default: 5 s (the stream is never more
    /// than that away from resuming once the server is back).
    pub max_delay: Duration,
    /// Growth factor per failed attempt. Default: 2.
    pub multiplier: f64,
    /// Random spread of each delay, as a fraction. Default: 0.2 (± 20 %).
    pub jitter: f64,
    /// Attempts after a connection is lost before the client gives up and
    /// closes ([`Disconnect::GaveUp`]). Default: `None` (forever).
    ///
    /// The count (and the backoff) start again only after a connection
    /// stayed up for 2 s: against a server that accepts and closes at
    /// once, attempts go on growing, and so does the delay.
    pub max_attempts: Option<u32>,
}

impl Default for Reconnect {
    fn default() -> Self {
        Reconnect {
            initial_delay: Duration::from_millis(100),
            max_delay: Duration::from_secs(5),
            multiplier: 2.0,
            jitter: 0.2,
            max_attempts: None,
        }
    }
}

impl Reconnect {
    /// The delay before attempt `attempt` (1-based); `salt` varies the jitter.
    pub(crate) fn delay(&self, attempt: u32, salt: u64) -> Duration {
        let base = self.initial_delay.as_secs_f64()
            * self
                .multiplier
                .max(1.0)
                .powi(attempt.saturating_sub(1).min(64) as i32);
        let capped = base.min(self.max_delay.as_secs_f64());
        let r = jitter_unit(salt); // in [-1, 1)
        let j = self.jitter.clamp(0.0, 1.0);
        // Whatever the fields hold (the builder refuses a NaN multiplier or
        // jitter, but the struct is public), no panic: an unrepresentable
        // delay is the maximum.
        Duration::try_from_secs_f64((capped * (1.0 + j * r)).max(0.0))
            .unwrap_or(self.max_delay)
            .min(self.max_delay)
    }
}

fn jitter_unit(salt: u64) -> f64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(salt);
    (h.finish() >> 11) as f64 / (1u64 << 53) as f64 * 2.0 - 1.0
}
