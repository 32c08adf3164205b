//! The HTTP/1.1 websocket upgrade, through hyper's client connection.
//!
//! fastwebsockets' `handshake::client` would do the same exchange, but it
//! reports a refused upgrade as a bare status code (we want the start of the
//! body too, e.g. Vuer's 404 page for a wrong path), it does not check
//! `Sec-WebSocket-Accept`, and it prints driver errors to stderr. The request
//! is built the way it builds it; the key is 16 random bytes in base64 as
//! RFC 6455 §4.1 asks (what its `generate_key` does: the library no longer
//! depends on fastwebsockets, whose `upgrade` feature also switched on
//! hyper's server half).

use std::time::Duration;

use base64::Engine;
use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper::header::{HeaderValue, CONNECTION, HOST, SEC_WEBSOCKET_ACCEPT, UPGRADE};
use hyper::{Request, StatusCode};
use hyper_util::rt::TokioIo;
use sha1::{Digest, Sha1};

use super::{Target, Transport};
use crate::error::ConnectError;

const GUID: &str = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";
const BODY_PREFIX: usize = 256;

/// Performs the upgrade on `io`; returns the stream and any bytes the server
/// sent after its `101` response (early frames).
pub(crate) async fn upgrade(
    io: Transport,
    target: &Target,
    headers: &[(String, String)],
    timeout: Duration,
) -> Result<(Transport, Bytes), ConnectError> {
    let uri = target.shown.clone();
    let key = base64::engine::general_purpose::STANDARD.encode(rand::random::<[u8; 16]>());
    let mut req = Request::builder()
        .method("GET")
        .uri(&target.path_and_query)
        .header(HOST, &target.host_header)
        .header(UPGRADE, "websocket")
        .header(CONNECTION, "Upgrade")
        .header("Sec-WebSocket-Key", &key)
        .header("Sec-WebSocket-Version", "13");
    for (name, value) in headers {
        req = req.header(name.as_str(), value.as_str());
    }
    let req = req
        .body(Empty::<Bytes>::new())
        .map_err(|e| ConnectError::InvalidUri {
            uri: uri.clone(),
            reason: e.to_string(),
        })?;

    let exchange = async {
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io))
            .await
            .map_err(|e| ConnectError::Http {
                uri: uri.clone(),
                source: e,
            })?;
        // The connection future drives the HTTP exchange and hands the
        // socket back on upgrade; errors surface through `send_request`.
        let driver = tokio::spawn(async move {
            if let Err(e) = conn.with_upgrades().await {
                tracing::debug!(error = %e, "upgrade connection driver ended");
            }
        });
        let mut resp = sender
            .send_request(req)
            .await
            .map_err(|e| ConnectError::Http {
                uri: uri.clone(),
                source: e,
            })?;
        if resp.status() != StatusCode::SWITCHING_PROTOCOLS {
            let status = resp.status().as_u16();
            let mut body = Vec::new();
            let read_body = async {
                while body.len() < BODY_PREFIX {
                    match resp.body_mut().frame().await {
                        Some(Ok(frame)) => {
                            if let Some(d) = frame.data_ref() {
                                body.extend_from_slice(d);
                            }
                        }
                        _ => break,
                    }
                }
            };
            let _ = tokio::time::timeout(Duration::from_millis(500), read_body).await;
            driver.abort();
            body.truncate(BODY_PREFIX);
            return Err(ConnectError::Status {
                uri: uri.clone(),
                status,
                body: String::from_utf8_lossy(&body).trim().to_owned(),
            });
        }
        check_header(&resp, UPGRADE, "websocket", &uri)?;
        check_header(&resp, CONNECTION, "upgrade", &uri)?;
        let expected = accept_key(&key);
        if resp
            .headers()
            .get(SEC_WEBSOCKET_ACCEPT)
            .map(HeaderValue::as_bytes)
            != Some(expected.as_bytes())
        {
            return Err(ConnectError::Upgrade {
                uri: uri.clone(),
                reason: "missing or wrong Sec-WebSocket-Accept".into(),
            });
        }
        if let Some(ext) = resp.headers().get("Sec-WebSocket-Extensions") {
            // We offered none; a server that imposes one is not speaking
            // plain websocket frames.
            return Err(ConnectError::Upgrade {
                uri: uri.clone(),
                reason: format!("server imposed extensions {ext:?} that were not offered"),
            });
        }
        let upgraded = hyper::upgrade::on(&mut resp)
            .await
            .map_err(|e| ConnectError::Http {
                uri: uri.clone(),
                source: e,
            })?;
        let parts =
            upgraded
                .downcast::<TokioIo<Transport>>()
                .map_err(|_| ConnectError::Upgrade {
                    uri: uri.clone(),
                    reason: "upgraded stream has an unexpected type".into(),
                })?;
        Ok((parts.io.into_inner(), parts.read_buf))
    };
    match tokio::time::timeout(timeout, exchange).await {
        Ok(r) => r,
        Err(_) => Err(ConnectError::Timeout {
            uri,
            stage: "websocket upgrade",
            after: timeout,
        }),
    }
}

fn check_header(
    resp: &hyper::Response<hyper::body::Incoming>,
    name: hyper::header::HeaderName,
    expected: &str,
    uri: &str,
) -> Result<(), ConnectError> {
    let ok = resp
        .headers()
        .get(&name)
        .and_then(|v| v.to_str().ok())
        .map(|v| {
            v.split(',')
                .any(|t| t.trim().eq_ignore_ascii_case(expected))
        })
        .unwrap_or(false);
    if ok {
        Ok(())
    } else {
        Err(ConnectError::Upgrade {
            uri: uri.to_owned(),
            reason: format!("missing `{name}: {expected}` header"),
        })
    }
}

/// `Sec-WebSocket-Accept` for a key (RFC 6455 §4.2.2).
pub(crate) fn accept_key(key: &str) -> String {
    let mut h = Sha1::new();
    h.update(key.as_bytes());
    h.update(GUID.as_bytes());
    base64::engine::general_purpose::STANDARD.encode(h.finalize())
}

#[cfg(test)]
mod tests {
    #[test]
    fn accept_key_matches_rfc_example() {
        assert_eq!(
            super::accept_key("dGhlIHNhbXBsZSBub25jZQ=="),
            "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
    }
}
