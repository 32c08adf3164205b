//! Opening a connection: TCP (with `TCP_NODELAY`), optional TLS, and the
//! websocket upgrade. The result is a read half for the decoder task and a
//! write half for the sender task; nothing else touches the socket.

mod handshake;
pub(crate) mod socket;
pub(crate) mod tls;

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::{Buf, Bytes};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

use crate::error::ConnectError;
use socket::SocketOptions;
use tls::TlsOptions;

/// What opening a connection needs (the part of the client's
/// configuration this module reads; the rest of it is none of its
/// business).
#[derive(Clone)]
pub(crate) struct ConnectOptions {
    /// For the whole of resolving, connecting, TLS and the upgrade.
    pub connect_timeout: std::time::Duration,
    pub tcp_nodelay: bool,
    /// Extra headers of the upgrade request (their values are never shown).
    pub headers: Vec<(String, String)>,
    pub tls: TlsOptions,
    pub socket: SocketOptions,
}

impl std::fmt::Debug for ConnectOptions {
    /// Header values hidden: they may carry credentials.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let headers: Vec<(&str, &str)> = self
            .headers
            .iter()
            .map(|(k, _)| (k.as_str(), "<redacted>"))
            .collect();
        f.debug_struct("ConnectOptions")
            .field("connect_timeout", &self.connect_timeout)
            .field("tcp_nodelay", &self.tcp_nodelay)
            .field("headers", &headers)
            .field("tls", &self.tls)
            .field("socket", &self.socket)
            .finish()
    }
}

/// A URI as it may be shown in logs, errors and `Debug` output: a user
/// name and password (`user:pass@`) become `***@`, a query (`?token=...`)
/// becomes `?<redacted>`, and a fragment is dropped. The client uses the
/// URI as given to connect; this is only for showing it.
///
/// ```
/// assert_eq!(
///     vuer_client::redact_uri("wss://me:pw@robot:8012/ws?token=s3cr3t#x"),
///     "wss://***@robot:8012/ws?<redacted>"
/// );
/// ```
pub fn redact_uri(uri: &str) -> String {
    let (scheme, rest) = match uri.find("://") {
        Some(i) => uri.split_at(i + 3),
        None => ("", uri),
    };
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(authority_end);
    let authority = match authority.rfind('@') {
        Some(i) => format!("***@{}", &authority[i + 1..]),
        None => authority.to_owned(),
    };
    let tail = tail.split('#').next().unwrap_or("");
    let tail = match tail.find('?') {
        Some(i) => format!("{}?<redacted>", &tail[..i]),
        None => tail.to_owned(),
    };
    format!("{scheme}{authority}{tail}")
}

/// Where to connect, parsed from a `ws://` or `wss://` URI.
#[derive(Debug, Clone)]
pub(crate) struct Target {
    /// The URI as shown in logs and errors ([`redact_uri`]).
    pub shown: String,
    pub tls: bool,
    pub host: String,
    pub port: u16,
    pub host_header: String,
    pub path_and_query: String,
}

impl Target {
    pub(crate) fn parse(uri: &str) -> Result<Target, ConnectError> {
        let shown = redact_uri(uri);
        let bad = |reason: &str| ConnectError::InvalidUri {
            uri: shown.clone(),
            reason: reason.to_owned(),
        };
        let parsed: hyper::Uri = uri
            .parse()
            .map_err(|e: hyper::http::uri::InvalidUri| bad(&e.to_string()))?;
        if parsed.authority().is_some_and(|a| a.as_str().contains('@')) {
            // Neither Vuer nor this client use them: refused rather than
            // silently dropped, and never echoed.
            return Err(bad(
                "a user name or password in the URI is not supported (pass credentials with ClientBuilder::header)",
            ));
        }
        let tls = match parsed.scheme_str() {
            Some("ws") | Some("http") => false,
            Some("wss") | Some("https") => true,
            Some(other) => {
                return Err(bad(&format!(
                    "unsupported scheme {other:?} (use ws:// or wss://)"
                )))
            }
            None => return Err(bad("missing scheme (use ws:// or wss://)")),
        };
        let host = parsed.host().ok_or_else(|| bad("missing host"))?;
        let default_port = if tls { 443 } else { 80 };
        let port = parsed.port_u16().unwrap_or(default_port);
        let host_header = match parsed.port_u16() {
            Some(p) if p != default_port => format!("{host}:{p}"),
            _ => host.to_owned(),
        };
        let path_and_query = parsed
            .path_and_query()
            .map(|p| p.as_str().to_owned())
            .filter(|p| !p.is_empty())
            .unwrap_or_else(|| "/".to_owned());
        Ok(Target {
            shown,
            tls,
            // IPv6 literals come bracketed; sockets and TLS want them bare.
            host: host
                .trim_start_matches('[')
                .trim_end_matches(']')
                .to_owned(),
            port,
            host_header,
            path_and_query,
        })
    }
}

/// The byte stream under the websocket: plain TCP or TLS over TCP.
pub(crate) enum Transport {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
}

impl AsyncRead for Transport {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Transport::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Transport::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Transport {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Transport::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Transport::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }
    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Transport::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Transport::Tls(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
        }
    }
    fn is_write_vectored(&self) -> bool {
        match self {
            Transport::Plain(s) => s.is_write_vectored(),
            Transport::Tls(s) => s.is_write_vectored(),
        }
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Transport::Plain(s) => Pin::new(s).poll_flush(cx),
            Transport::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Transport::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Transport::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

/// The read half given to the decoder task.
pub(crate) type ReadHalf = Box<dyn AsyncRead + Send + Unpin>;
/// The write half given to the sender task.
pub(crate) type WriteHalf = Box<dyn AsyncWrite + Send + Unpin>;

/// An open websocket connection, split.
pub(crate) struct Connection {
    pub read: ReadHalf,
    pub write: WriteHalf,
    /// The TCP socket, for socket options and `TCP_INFO` (Linux).
    pub socket: socket::SocketHandle,
    pub peer: SocketAddr,
    /// The plain TCP stream, shared so that `publish` can write a frame
    /// directly when the sender is idle (not for TLS).
    pub direct: Option<Arc<TcpStream>>,
}

/// Connects, upgrades and splits.
pub(crate) async fn connect(
    target: &Target,
    config: &ConnectOptions,
) -> Result<Connection, ConnectError> {
    let uri = &target.shown;
    let timeout = config.connect_timeout;
    let addrs = tokio::time::timeout(
        timeout,
        tokio::net::lookup_host((target.host.as_str(), target.port)),
    )
    .await
    .map_err(|_| ConnectError::Timeout {
        uri: uri.clone(),
        stage: "name resolution",
        after: timeout,
    })?
    .map_err(|e| ConnectError::Resolve {
        uri: uri.clone(),
        host: target.host.clone(),
        source: e,
    })?;
    let mut last_err = None;
    let mut tcp = None;
    for addr in addrs {
        match tokio::time::timeout(timeout, TcpStream::connect(addr)).await {
            Ok(Ok(s)) => {
                tcp = Some(s);
                break;
            }
            Ok(Err(e)) => last_err = Some(e),
            Err(_) => {
                return Err(ConnectError::Timeout {
                    uri: uri.clone(),
                    stage: "TCP connect",
                    after: timeout,
                })
            }
        }
    }
    let tcp = match (tcp, last_err) {
        (Some(s), _) => s,
        (None, Some(e)) if e.kind() == io::ErrorKind::ConnectionRefused => {
            return Err(ConnectError::Refused { uri: uri.clone() })
        }
        (None, Some(e)) => {
            return Err(ConnectError::Io {
                uri: uri.clone(),
                source: e,
            })
        }
        (None, None) => {
            return Err(ConnectError::Resolve {
                uri: uri.clone(),
                host: target.host.clone(),
                source: io::Error::new(io::ErrorKind::NotFound, "no addresses"),
            })
        }
    };
    // Nagle would hold small frames back for up to an ACK round trip (p99
    // 23 ms at 1 kHz measured); batching comes from the sender's own rounds.
    tcp.set_nodelay(config.tcp_nodelay)
        .map_err(|e| ConnectError::Io {
            uri: uri.clone(),
            source: e,
        })?;
    let peer = tcp.peer_addr().map_err(|e| ConnectError::Io {
        uri: uri.clone(),
        source: e,
    })?;
    let socket = socket::SocketHandle::new(&tcp);
    socket.apply(&config.socket);

    if target.tls && !config.tls.verify && config.tls.custom.is_none() {
        // Said on every connection: whoever reads the log should not have
        // to know that VUER_SSL_VERIFY=0 was set somewhere.
        tracing::warn!(
            uri = %target.shown,
            "TLS certificate verification is off (VUER_SSL_VERIFY=0 or tls_verify(false)): the connection is encrypted, but the server is not authenticated"
        );
    }
    let transport = if target.tls {
        let tls_config = tls::client_config(&config.tls).map_err(|e| ConnectError::Tls {
            uri: uri.clone(),
            source: io::Error::other(e),
        })?;
        let name = rustls::pki_types::ServerName::try_from(target.host.clone()).map_err(|e| {
            ConnectError::InvalidUri {
                uri: uri.clone(),
                reason: format!("host is not a valid TLS server name: {e}"),
            }
        })?;
        let connector = tokio_rustls::TlsConnector::from(tls_config);
        let stream = tokio::time::timeout(timeout, connector.connect(name, tcp))
            .await
            .map_err(|_| ConnectError::Timeout {
                uri: uri.clone(),
                stage: "TLS handshake",
                after: timeout,
            })?
            .map_err(|e| ConnectError::Tls {
                uri: uri.clone(),
                source: tls::explain(e),
            })?;
        Transport::Tls(Box::new(stream))
    } else {
        Transport::Plain(tcp)
    };

    let (transport, early) =
        handshake::upgrade(transport, target, &config.headers, timeout).await?;
    let (read, write, direct): (ReadHalf, WriteHalf, _) = match transport {
        Transport::Plain(tcp) => {
            let tcp = Arc::new(tcp);
            (
                Box::new(Prefixed::new(early, SharedTcp(tcp.clone()))),
                Box::new(SharedTcp(tcp.clone())),
                Some(tcp),
            )
        }
        Transport::Tls(tls) => {
            let (r, w) = tokio::io::split(*tls);
            (Box::new(Prefixed::new(early, r)), Box::new(w), None)
        }
    };
    Ok(Connection {
        read,
        write,
        socket,
        peer,
        direct,
    })
}

/// A TCP stream shared by the decoder (reads), the sender (writes) and the
/// publishers' direct-write path (writes, only while the sender is idle and
/// under the outbox lock). tokio's readiness API works through `&TcpStream`,
/// so no lock is needed between the reading and the writing side.
struct SharedTcp(Arc<TcpStream>);

impl AsyncRead for SharedTcp {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        loop {
            std::task::ready!(self.0.poll_read_ready(cx))?;
            let dst = buf.initialize_unfilled();
            match self.0.try_read(dst) {
                Ok(n) => {
                    buf.advance(n);
                    return Poll::Ready(Ok(()));
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
    }
}

impl AsyncWrite for SharedTcp {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        loop {
            std::task::ready!(self.0.poll_write_ready(cx))?;
            match self.0.try_write(buf) {
                Ok(n) => return Poll::Ready(Ok(n)),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
    }
    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        loop {
            std::task::ready!(self.0.poll_write_ready(cx))?;
            match self.0.try_write_vectored(bufs) {
                Ok(n) => return Poll::Ready(Ok(n)),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
    }
    fn is_write_vectored(&self) -> bool {
        true
    }
    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(socket2_shutdown(&self.0))
    }
}

fn socket2_shutdown(s: &TcpStream) -> io::Result<()> {
    #[cfg(unix)]
    {
        use std::os::fd::AsRawFd;
        // SAFETY: shutdown(2) on a live socket descriptor.
        if unsafe { libc::shutdown(s.as_raw_fd(), libc::SHUT_WR) } == 0 {
            Ok(())
        } else {
            Err(io::Error::last_os_error())
        }
    }
    #[cfg(not(unix))]
    {
        let _ = s;
        Ok(())
    }
}

/// A reader that first yields bytes already read past the HTTP response.
struct Prefixed<R> {
    prefix: Bytes,
    inner: R,
}

impl<R> Prefixed<R> {
    fn new(prefix: Bytes, inner: R) -> Self {
        Prefixed { prefix, inner }
    }
}

impl<R: AsyncRead + Unpin> AsyncRead for Prefixed<R> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.prefix.has_remaining() {
            let n = this.prefix.len().min(buf.remaining());
            buf.put_slice(&this.prefix[..n]);
            this.prefix.advance(n);
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut this.inner).poll_read(cx, buf)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_vuer_uris() {
        let t = Target::parse("ws://localhost:8012").unwrap();
        assert!(!t.tls);
        assert_eq!((t.host.as_str(), t.port), ("localhost", 8012));
        assert_eq!(t.host_header, "localhost:8012");
        assert_eq!(t.path_and_query, "/");
        let t = Target::parse("wss://example.org/ws?x=1").unwrap();
        assert!(t.tls);
        assert_eq!(t.port, 443);
        assert_eq!(t.host_header, "example.org");
        assert_eq!(t.path_and_query, "/ws?x=1");
        let t = Target::parse("ws://[::1]:9000/").unwrap();
        assert_eq!(t.host, "::1");
        assert!(matches!(
            Target::parse("ftp://x"),
            Err(ConnectError::InvalidUri { .. })
        ));
        assert!(matches!(
            Target::parse("localhost:8012"),
            Err(ConnectError::InvalidUri { .. })
        ));
        assert!(matches!(
            Target::parse("ws://"),
            Err(ConnectError::InvalidUri { .. })
        ));
    }
}
