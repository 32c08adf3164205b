//! Errors, one type per operation, each saying what happened.

use std::time::Duration;

/// Connecting failed. Every variant names the URI and what went wrong, so
/// `err.to_string()` is a complete one-line diagnosis.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConnectError {
    /// The URI could not be used (bad syntax, unsupported scheme, ...).
    #[error("invalid URI {uri:?}: {reason}")]
    InvalidUri {
        /// The URI as given.
        uri: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A configuration value (e.g. from the environment) is invalid.
    #[error("invalid configuration: {0}")]
    InvalidConfig(String),
    /// Nothing listens at the address.
    #[error("cannot connect to {uri}: connection refused — is a Vuer server running?")]
    Refused {
        /// The URI.
        uri: String,
    },
    /// The host name did not resolve.
    #[error("cannot connect to {uri}: cannot resolve host {host:?}: {source}")]
    Resolve {
        /// The URI.
        uri: String,
        /// The host that failed to resolve.
        host: String,
        /// The resolver's error.
        #[source]
        source: std::io::Error,
    },
    /// Another I/O error while connecting or upgrading.
    #[error("cannot connect to {uri}: {source}")]
    Io {
        /// The URI.
        uri: String,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// A stage of connecting took longer than the connect timeout.
    #[error("cannot connect to {uri}: timed out after {after:?} during {stage}")]
    Timeout {
        /// The URI.
        uri: String,
        /// Which stage: "TCP connect", "TLS handshake" or "websocket upgrade".
        stage: &'static str,
        /// The timeout that elapsed.
        after: Duration,
    },
    /// The TLS handshake failed (bad certificate, wrong name, ...).
    #[error("TLS handshake with {uri} failed: {source}")]
    Tls {
        /// The URI.
        uri: String,
        /// The TLS error.
        #[source]
        source: std::io::Error,
    },
    /// The server answered the upgrade request with something other than
    /// `101 Switching Protocols`.
    #[error("{uri} refused the websocket upgrade: HTTP {status}{}", body_suffix(.body))]
    Status {
        /// The URI.
        uri: String,
        /// The HTTP status code.
        status: u16,
        /// The start of the response body (at most 256 bytes, lossy UTF-8).
        body: String,
    },
    /// The server's `101` answer was not a valid websocket upgrade.
    #[error("{uri}: invalid websocket upgrade response: {reason}")]
    Upgrade {
        /// The URI.
        uri: String,
        /// What was wrong.
        reason: String,
    },
    /// The HTTP exchange of the upgrade failed.
    #[error("{uri}: websocket upgrade failed: {source}")]
    Http {
        /// The URI.
        uri: String,
        /// hyper's error.
        #[source]
        source: hyper::Error,
    },
}

fn body_suffix(body: &str) -> String {
    if body.is_empty() {
        String::new()
    } else {
        format!(" ({body:?})")
    }
}

/// Encoding an outgoing event failed; nothing was queued.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum EncodeError {
    /// A map key is not a string; the Vuer server closes the session on such
    /// a message, so it is refused here.
    #[error("map key is a {0}; Vuer accepts string map keys only")]
    NonStringKey(&'static str),
    /// In all-f32 mode, a finite `f64` is outside the `f32` range (Python's
    /// `packb` raises `OverflowError` for the same value).
    #[error("{0} does not fit in an f32 (all-f32 mode)")]
    F32Overflow(f64),
    /// A pre-encoded message is not a msgpack map with a string `etype`.
    #[error("pre-encoded message is not a Vuer event: {0}")]
    NotAnEvent(String),
    /// The value's `Serialize` implementation reported an error.
    #[error("{0}")]
    Custom(String),
}

/// Why [`publish`](crate::VuerClient::publish) or
/// [`send`](crate::VuerClient::send) did not accept an event.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum PublishError {
    /// The outgoing ring is full (in events or bytes). The event was not
    /// accepted; the caller still owns it and may retry, drop it, or use
    /// `send().await`, which waits for room. What counts: events queued and
    /// being written (reliable events written but not yet confirmed by the
    /// server have a budget of their own; when it is full the sender waits,
    /// and the queue fills).
    #[error("outgoing queue is full ({queued} events, {bytes} bytes held)")]
    Full {
        /// Events held when the event was refused (queued or being
        /// written).
        queued: usize,
        /// Bytes held when the event was refused.
        bytes: usize,
    },
    /// The encoded message is larger than the limit for outgoing messages
    /// (the Vuer server closes the connection with 1009 above 4 MiB).
    #[error("encoded message is {size} bytes, over the {limit}-byte limit for outgoing messages")]
    TooLarge {
        /// Encoded size.
        size: usize,
        /// The limit ([`ClientBuilder::max_outgoing_message`](crate::ClientBuilder::max_outgoing_message)).
        limit: usize,
    },
    /// The event alone is larger than the outgoing queue's byte bound
    /// ([`ClientBuilder::max_queued_bytes`](crate::ClientBuilder::max_queued_bytes)):
    /// it could never be queued, so `send().await` and `send_blocking`
    /// fail at once instead of waiting for room that never comes.
    #[error(
        "event of {size} bytes can never fit in the outgoing queue (max_queued_bytes is {limit})"
    )]
    LargerThanQueue {
        /// The event's size (encoded body and shared tail).
        size: usize,
        /// The queue's byte bound.
        limit: usize,
    },
    /// The event could not be encoded.
    #[error("cannot encode event: {0}")]
    Encode(#[from] EncodeError),
    /// The client is closed (by [`close`](crate::VuerClient::close), or for
    /// good after the connection was lost).
    #[error("client is closed: {0}")]
    Closed(Disconnect),
}

/// [`publish_many`](crate::VuerClient::publish_many) stopped at an event it
/// could not accept: the events before it were accepted, it and the ones
/// after were not (the caller still owns them).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{accepted} events accepted, then: {error}")]
#[non_exhaustive]
pub struct PartialPublish {
    /// Events accepted, from the start of the slice.
    pub accepted: usize,
    /// Why the next one was refused.
    #[source]
    pub error: PublishError,
}

/// An inbound message could not be decoded. The message is skipped and
/// counted; the connection goes on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// The message ends before a value it announces.
    #[error("truncated: {needed} more bytes announced at offset {offset}")]
    Truncated {
        /// Where the value starts.
        offset: usize,
        /// Bytes it needs.
        needed: usize,
    },
    /// `0xc1`, the one byte msgpack never uses.
    #[error("invalid msgpack marker 0x{byte:02x} at offset {offset}")]
    InvalidMarker {
        /// Where.
        offset: usize,
        /// The byte.
        byte: u8,
    },
    /// The message (or a part that must be one) is not a map.
    #[error("expected a msgpack map at offset {offset}")]
    NotAMap {
        /// Where.
        offset: usize,
    },
    /// A map key is not a string.
    #[error("map key at offset {offset} is not a string")]
    NonStringKey {
        /// Where.
        offset: usize,
    },
    /// A string is not valid UTF-8.
    #[error("invalid UTF-8 in string at offset {offset}")]
    InvalidUtf8 {
        /// Where.
        offset: usize,
    },
    /// Nesting deeper than the limit.
    #[error("nesting deeper than {limit} levels")]
    TooDeep {
        /// The limit.
        limit: usize,
    },
    /// Bytes left after the message.
    #[error("{count} trailing bytes after the message")]
    TrailingBytes {
        /// How many.
        count: usize,
    },
    /// The envelope has no string `etype`.
    #[error("message has no string `etype`")]
    MissingEtype,
    /// A text frame is not valid JSON (or not a JSON object).
    #[error("invalid JSON: {0}")]
    Json(String),
    /// Typed access ([`ServerEvent::data_as`](crate::ServerEvent::data_as))
    /// did not match the data.
    #[error("data does not match the requested type: {0}")]
    Type(String),
}

/// [`close`](crate::VuerClient::close) could not deliver everything the
/// client had accepted, or the connection had ended otherwise: what was
/// lost, and why the connection ended.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", close_error_text(.reason, *.unsent, *.unconfirmed))]
#[non_exhaustive]
pub struct CloseError {
    /// Why the connection ended ([`Disconnect::Local`] when the close ran
    /// out of time).
    pub reason: Disconnect,
    /// Events accepted and never written (counted as
    /// [`Stats::dropped`](crate::Stats::dropped)).
    pub unsent: u64,
    /// Reliable events written and never confirmed read by the server
    /// (counted as [`Stats::unconfirmed_lost`](crate::Stats::unconfirmed_lost)):
    /// the server may or may not have them.
    pub unconfirmed: u64,
}

fn close_error_text(reason: &Disconnect, unsent: u64, unconfirmed: u64) -> String {
    if unsent == 0 && unconfirmed == 0 {
        return format!("close: {reason}");
    }
    format!(
        "close: {unsent} accepted events never sent, {unconfirmed} written but not confirmed by the server ({reason})"
    )
}

/// Why a connection ended (or why the client is closed).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Disconnect {
    /// [`close`](crate::VuerClient::close) was called or the client was dropped.
    #[error("closed by the client")]
    Local,
    /// The server sent a close frame.
    #[error("server closed the connection with code {code}{}", reason_suffix(.reason))]
    ServerClosed {
        /// The close code (1005 when the frame carried none).
        code: u16,
        /// The close reason.
        reason: String,
    },
    /// The connection ended without a close frame (EOF).
    #[error("server closed the TCP connection without a close frame")]
    Eof,
    /// Nothing arrived from the server, and nothing written was acknowledged,
    /// for longer than the keepalive timeout.
    #[error("no sign of life from the server for {0:?} (keepalive timeout)")]
    KeepaliveTimeout(Duration),
    /// A socket error.
    #[error("I/O error: {message}")]
    Io {
        /// The error kind.
        kind: std::io::ErrorKind,
        /// The error text.
        message: String,
    },
    /// The server broke the websocket protocol; the client closed the
    /// connection with the matching close code.
    #[error("protocol error: {0}")]
    Protocol(String),
    /// An inbound message was larger than the configured maximum; the client
    /// closed the connection with 1009.
    #[error("inbound message larger than the {limit}-byte limit; closed with 1009")]
    MessageTooBig {
        /// The limit ([`ClientBuilder::max_inbound_message`](crate::ClientBuilder::max_inbound_message),
        /// or the lower limit of text messages for a text message).
        limit: usize,
    },
    /// A task of the client panicked (a bug; please report it with the
    /// message). The connection was dropped and, with reconnect on, is
    /// opened again.
    #[error("the client's {task} task panicked: {message}")]
    TaskPanicked {
        /// Which task: "sender", "decoder" or "supervisor".
        task: &'static str,
        /// The panic's message.
        message: String,
    },
    /// Reconnecting failed and the client gave up.
    #[error("gave up reconnecting after {attempts} attempts: {last_error}")]
    GaveUp {
        /// Attempts made.
        attempts: u32,
        /// The last connect error.
        last_error: String,
    },
}

fn reason_suffix(reason: &str) -> String {
    if reason.is_empty() {
        String::new()
    } else {
        format!(": {reason}")
    }
}

impl From<std::io::Error> for Disconnect {
    fn from(e: std::io::Error) -> Self {
        if e.kind() == std::io::ErrorKind::UnexpectedEof {
            return Disconnect::Eof;
        }
        Disconnect::Io {
            kind: e.kind(),
            message: e.to_string(),
        }
    }
}
