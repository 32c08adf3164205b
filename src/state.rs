//! The connection's state as the handles show it ([`ConnectionState`]):
//! set by the supervisor, read by the handles.

use std::time::Duration;

use crate::error::Disconnect;

/// The connection's state, observable with
/// [`VuerClient::state`](crate::VuerClient::state) and
/// [`VuerClient::watch_state`](crate::VuerClient::watch_state).
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum ConnectionState {
    /// Connecting for the first time.
    Connecting,
    /// Connected: INIT was sent and events flow.
    Connected,
    /// The connection was lost; a reconnect follows if the policy allows.
    Disconnected(Disconnect),
    /// Waiting `delay` before reconnect attempt `attempt` (1-based).
    Reconnecting {
        /// Attempt number since the connection was lost.
        attempt: u32,
        /// Backoff before this attempt.
        delay: Duration,
        /// Why the previous attempt failed (for the first attempt: why the
        /// connection was lost), e.g. "connection refused".
        error: String,
    },
    /// Closed for good.
    Closed(Disconnect),
}

impl std::fmt::Display for ConnectionState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ConnectionState::Connecting => f.write_str("connecting"),
            ConnectionState::Connected => f.write_str("connected"),
            ConnectionState::Disconnected(r) => write!(f, "disconnected: {r}"),
            ConnectionState::Reconnecting {
                attempt,
                delay,
                error,
            } => {
                write!(
                    f,
                    "reconnecting (attempt {attempt}, in {delay:?}) after: {error}"
                )
            }
            ConnectionState::Closed(r) => write!(f, "closed: {r}"),
        }
    }
}
