//! The CLI's errors: one line each on stderr, and the exit code that goes
//! with them (listed in `vuer-client --help`).

use vuer_client::{CloseError, ConnectError, Disconnect, PublishError};

/// Why a command failed.
#[derive(Debug)]
pub enum CliError {
    /// An argument value is invalid (exit 2, like clap's own errors).
    Usage(String),
    /// Connecting failed (exit 3).
    Connect(ConnectError),
    /// The connection was lost while the command ran (exit 4).
    Lost(String),
    /// A line of an input file is invalid (exit 5).
    Input(String),
    /// `--timeout` passed before `--count` events arrived (exit 6).
    Timeout(String),
    /// Ctrl-C ended a command that had more to do (exit 130; the command
    /// already printed what it had).
    Interrupted,
    /// Anything else at run time (exit 1).
    Runtime(String),
}

impl CliError {
    /// The process exit code.
    pub fn exit_code(&self) -> u8 {
        match self {
            CliError::Runtime(_) => 1,
            CliError::Usage(_) => 2,
            CliError::Connect(_) => 3,
            CliError::Lost(_) => 4,
            CliError::Input(_) => 5,
            CliError::Timeout(_) => 6,
            CliError::Interrupted => 130,
        }
    }

    /// A runtime failure with context.
    pub fn io(what: impl std::fmt::Display, e: std::io::Error) -> CliError {
        CliError::Runtime(format!("{what}: {e}"))
    }
}

impl std::fmt::Display for CliError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CliError::Usage(m) | CliError::Runtime(m) | CliError::Input(m) => f.write_str(m),
            CliError::Timeout(m) => f.write_str(m),
            CliError::Connect(e) => write!(f, "{e}"),
            CliError::Lost(m) => write!(f, "connection lost: {m}"),
            CliError::Interrupted => f.write_str("interrupted"),
        }
    }
}

impl From<ConnectError> for CliError {
    fn from(e: ConnectError) -> Self {
        match e {
            ConnectError::InvalidUri { .. } | ConnectError::InvalidConfig(_) => {
                CliError::Usage(e.to_string())
            }
            other => CliError::Connect(other),
        }
    }
}

impl From<PublishError> for CliError {
    fn from(e: PublishError) -> Self {
        match e {
            PublishError::Closed(reason) => CliError::from(reason),
            other => CliError::Runtime(format!("event refused: {other}")),
        }
    }
}

impl From<CloseError> for CliError {
    /// A close that lost events or a connection: exit 4, with the counts.
    fn from(e: CloseError) -> Self {
        CliError::Lost(e.to_string())
    }
}

impl From<Disconnect> for CliError {
    fn from(d: Disconnect) -> Self {
        CliError::Lost(d.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_codes_follow_the_documented_table() {
        let refused = ConnectError::Refused {
            uri: "ws://localhost:1".into(),
        };
        let e = CliError::from(refused);
        assert_eq!(e.exit_code(), 3);
        assert_eq!(
            e.to_string(),
            "cannot connect to ws://localhost:1: connection refused — is a Vuer server running?"
        );
        let bad = ConnectError::InvalidUri {
            uri: "http://x".into(),
            reason: "scheme".into(),
        };
        assert_eq!(CliError::from(bad).exit_code(), 2);
        let lost = CliError::from(PublishError::Closed(Disconnect::Eof));
        assert_eq!(lost.exit_code(), 4);
        assert!(lost.to_string().starts_with("connection lost: "));
        let full = CliError::from(PublishError::Full {
            queued: 1,
            bytes: 2,
        });
        assert_eq!(full.exit_code(), 1);
    }
}
