//! The decoder task: it owns the read half of one connection.
//!
//! It reads frames (`codec::inframe`, whose buffer grows with the bytes
//! that arrive, not with the lengths frames declare), reassembles
//! fragmented messages within
//! the size limit (lower for text messages, see [`text_limit`]), decodes
//! binary frames as msgpack and text frames as JSON, answers RPC requests that have a registered answerer, and feeds the
//! bounded inbound queues. Pings and close frames are answered through the
//! sender task, which owns the write half. A message that fails to decode is
//! counted and skipped; only protocol violations end the connection.
//!
//! Reading has a task of its own and is only ever cancelled together with
//! the connection.

use std::io;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use tokio::io::AsyncReadExt;

use crate::clock;
use crate::codec::inframe::{op, FrameError, FrameReader, Sender};
use crate::connection::ReadHalf;
use crate::error::DecodeError;
use crate::inbound::Routed;
use crate::shared::{ConnCtx, Shared};
use crate::stats::Counters;
use crate::ServerEvent;

/// Why the decoder task stopped.
#[derive(Debug)]
pub(crate) enum DecoderExit {
    /// The server sent a close frame (our reply is queued for the sender).
    ServerClosed { code: u16, reason: String },
    /// The server answered our close frame.
    CloseAcked,
    /// The stream ended without a close frame.
    Eof,
    /// Reading failed.
    Io(io::Error),
    /// The server broke the protocol; a close frame with `code` is queued.
    Protocol { code: u16, reason: String },
    /// A message exceeded the inbound limit; a 1009 close frame is queued.
    TooBig { limit: usize },
    /// The connection was cancelled.
    Cancelled,
}

/// The limit for text (JSON) messages: a sixteenth of the inbound limit,
/// but at least 1 MiB (or the inbound limit, if lower). Decoding JSON takes
/// up to ~18 times the text's size at once (simd-json's structural index
/// and tape, then the msgpack transcoding): 17.5 times measured for a
/// 64 MiB array of zeros. Binary messages decode lazily, and their envelope
/// costs nothing per byte.
fn text_limit(limit: usize) -> usize {
    (limit / 16).max(1 << 20).min(limit)
}

/// A message being reassembled from fragments.
struct Partial {
    text: bool,
    data: BytesMut,
}

/// Runs the decoder for one connection.
pub(crate) async fn run(shared: Arc<Shared>, ctx: Arc<ConnCtx>, read: ReadHalf) -> DecoderExit {
    let cancel = ctx.cancel.clone();
    tokio::select! {
        biased;
        _ = cancel.cancelled() => DecoderExit::Cancelled,
        exit = read_loop(&shared, &ctx, read) => exit,
    }
}

async fn read_loop(shared: &Shared, ctx: &ConnCtx, mut read: ReadHalf) -> DecoderExit {
    let limit = shared.config.max_inbound_message;
    let text_limit = text_limit(limit);
    let mut reader = FrameReader::new(Sender::Server, limit);
    let mut partial: Option<Partial> = None;
    let mut warned = false;

    loop {
        let frame = match reader.next_frame() {
            Ok(Some(f)) => f,
            Ok(None) => {
                reader.reserve_for_read();
                match read.read_buf(reader.buffer()).await {
                    Ok(0) => return DecoderExit::Eof,
                    // Bytes from the server: a sign of life, also midway
                    // through a large frame.
                    Ok(_) => ctx.last_rx_ns.store(clock::now_ns(), Ordering::Relaxed),
                    Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return DecoderExit::Eof,
                    Err(e) => return DecoderExit::Io(e),
                }
                continue;
            }
            Err(FrameError::Protocol(reason)) => return protocol(shared, 1002, reason),
            Err(FrameError::TooBig { .. }) => return too_big(shared, limit),
        };
        ctx.last_rx_ns.store(clock::now_ns(), Ordering::Relaxed);
        let (fin, opcode) = (frame.fin, frame.opcode);
        let message = match opcode {
            op::BINARY | op::TEXT => {
                if partial.is_some() {
                    return protocol(shared, 1002, "new message before the fragmented one ended");
                }
                let text = opcode == op::TEXT;
                if text && frame.payload.len() > text_limit {
                    return too_big(shared, text_limit);
                }
                let data = frame.payload;
                if fin && text && std::str::from_utf8(&data).is_err() {
                    return protocol(shared, 1007, "text frame is not UTF-8");
                }
                if fin {
                    Some((text, data))
                } else {
                    partial = Some(Partial { text, data });
                    None
                }
            }
            op::CONTINUATION => {
                let Some(p) = partial.as_mut() else {
                    return protocol(shared, 1002, "continuation frame without a message");
                };
                let max = if p.text { text_limit } else { limit };
                if p.data.len() + frame.payload.len() > max {
                    return too_big(shared, max);
                }
                p.data.extend_from_slice(&frame.payload);
                if !fin {
                    None
                } else if p.text && std::str::from_utf8(&p.data).is_err() {
                    return protocol(shared, 1007, "text message is not UTF-8");
                } else {
                    partial.take().map(|p| (p.text, p.data))
                }
            }
            op::PING => {
                let payload = Bytes::copy_from_slice(&frame.payload);
                let wake = {
                    let mut ob = shared.outbox();
                    // Only the latest ping needs an answer (RFC 6455 §5.5.3),
                    // so a ping flood cannot grow anything.
                    ob.control.pong = Some(payload);
                    shared.poke_sender(&mut ob)
                };
                if wake {
                    shared.wake_sender.notify_one();
                }
                None
            }
            op::PONG => {
                Counters::add(&shared.counters.pongs_received, 1);
                ctx.pongs.fetch_add(1, Ordering::Relaxed);
                // Our pings carry (sent time, byte offset): the pong says
                // the server has read everything up to that offset.
                if let Some((sent_ns, offset)) = crate::pacing::parse_probe(&frame.payload) {
                    let rtt_ns = clock::now_ns().saturating_sub(sent_ns);
                    shared.counters.rtt_ns.store(rtt_ns, Ordering::Relaxed);
                    ctx.acked_offset.fetch_max(offset, Ordering::Relaxed);
                    ctx.pong.notify_one();
                }
                None
            }
            op::CLOSE => return closed(shared, ctx, &frame.payload),
            _ => unreachable!("the reader refuses unknown opcodes"),
        };
        let Some((text, data)) = message else {
            continue;
        };
        Counters::add(&shared.counters.received_bytes, data.len() as u64);
        let decoded = if text {
            ServerEvent::from_json(data)
        } else {
            ServerEvent::from_msgpack(data.freeze())
        };
        match decoded {
            Ok(ev) => {
                Counters::add(&shared.counters.received, 1);
                if let Some(exit) = dispatch(shared, ctx, ev).await {
                    return exit;
                }
            }
            Err(e) => decode_failed(shared, e, text, &mut warned),
        }
    }
}

fn decode_failed(shared: &Shared, e: DecodeError, text: bool, warned: &mut bool) {
    Counters::add(&shared.counters.decode_errors, 1);
    let kind = if text { "text" } else { "binary" };
    if !*warned {
        tracing::warn!(error = %e, kind, "skipping an inbound message that does not decode (further ones are logged at debug level)");
        *warned = true;
    } else {
        tracing::debug!(error = %e, kind, "skipping an inbound message that does not decode");
    }
    shared.set_last_error(format!("inbound {kind} message skipped: {e}"));
}

/// Answers RPCs with a registered answerer; queues everything else.
async fn dispatch(shared: &Shared, ctx: &ConnCtx, ev: ServerEvent) -> Option<DecoderExit> {
    if ev.is_rpc() {
        if let Some(handler) = shared.inbound.rpc_handler_for(ev.etype()) {
            // The application's code: a panic in it is reported and the
            // request left unanswered (the server times out, as with a
            // browser that cannot answer); the connection goes on.
            let answer = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| handler(&ev)));
            let answer = match answer {
                Ok(a) => a,
                Err(p) => {
                    let message = p
                        .downcast_ref::<&str>()
                        .map(|s| s.to_string())
                        .or_else(|| p.downcast_ref::<String>().cloned())
                        .unwrap_or_default();
                    tracing::error!(etype = ev.etype(), %message, "an RPC answerer panicked; the request is not answered");
                    shared.set_last_error(format!(
                        "the RPC answerer for {} panicked: {message}",
                        ev.etype()
                    ));
                    None
                }
            };
            if let Some(value) = answer {
                match shared.publish(&ev.reply(value)) {
                    Ok(()) => Counters::add(&shared.counters.rpc_answered, 1),
                    Err(e) => {
                        tracing::warn!(error = %e, etype = ev.etype(), "cannot queue RPC answer")
                    }
                }
            }
            return None;
        }
    }
    let mut ev = ev;
    let mut delivered = 0;
    loop {
        match shared.inbound.route(ev, delivered) {
            Routed::Delivered { dropped } => {
                if dropped > 0 {
                    Counters::add(&shared.counters.inbound_dropped, dropped);
                }
                return None;
            }
            Routed::Blocked(queue, back, so_far) => {
                // Backpressure: stop reading until the application makes room.
                ctx.paused.store(true, Ordering::Relaxed);
                queue.room(back.len()).await;
                ctx.paused.store(false, Ordering::Relaxed);
                ctx.last_rx_ns.store(clock::now_ns(), Ordering::Relaxed);
                ev = *back;
                delivered = so_far;
            }
        }
    }
}

/// Reassembles a close frame's code and reason and queues our answer.
fn closed(shared: &Shared, ctx: &ConnCtx, payload: &[u8]) -> DecoderExit {
    let (code, reason) = match payload.len() {
        0 => (1005, String::new()),
        1 => return protocol(shared, 1002, "close frame with a 1-byte payload"),
        _ => {
            let code = u16::from_be_bytes([payload[0], payload[1]]);
            if !valid_close_code(code) {
                // RFC 6455 §7.4: a code that may not appear on the wire.
                return protocol(
                    shared,
                    1002,
                    &format!("close frame with invalid code {code}"),
                );
            }
            match std::str::from_utf8(&payload[2..]) {
                Ok(r) => (code, r.to_owned()),
                Err(_) => return protocol(shared, 1007, "close reason is not UTF-8"),
            }
        }
    };
    if ctx.local_close.load(Ordering::Relaxed) {
        return DecoderExit::CloseAcked;
    }
    // Echo the code when it may appear on the wire; answer 1000 otherwise.
    let reply = if matches!(code, 1000..=1003 | 1007..=1014 | 3000..=4999) {
        code
    } else {
        1000
    };
    queue_close(shared, reply, "");
    DecoderExit::ServerClosed { code, reason }
}

/// Whether a peer may send `code` in a close frame (RFC 6455 §7.4.1 and
/// the IANA registry): the defined codes except those reserved for local
/// use (1004, 1005, 1006, 1015), and the 3000–4999 range for libraries and
/// applications.
fn valid_close_code(code: u16) -> bool {
    matches!(code, 1000..=1003 | 1007..=1014 | 3000..=4999)
}

fn queue_close(shared: &Shared, code: u16, reason: &str) {
    let wake = {
        let mut ob = shared.outbox();
        ob.control.close = Some((code, reason.to_owned()));
        shared.poke_sender(&mut ob)
    };
    if wake {
        shared.wake_sender.notify_one();
    }
    shared.wake_sender.notify_one();
}

fn protocol(shared: &Shared, code: u16, reason: &str) -> DecoderExit {
    queue_close(shared, code, reason);
    DecoderExit::Protocol {
        code,
        reason: reason.to_owned(),
    }
}

fn too_big(shared: &Shared, limit: usize) -> DecoderExit {
    queue_close(shared, 1009, "message too big");
    DecoderExit::TooBig { limit }
}

/// The read loop over an in-memory stream (`tokio::io::duplex`): the bytes a
/// server sends, in any cuts, and what the loop makes of them.
#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tokio::io::{AsyncWriteExt, DuplexStream};
    use tokio_util::sync::CancellationToken;

    use super::*;
    use crate::config::Config;
    use crate::connection::socket::SocketHandle;
    use crate::Value;

    /// A server frame (unmasked, final).
    fn frame(opcode: u8, payload: &[u8]) -> Vec<u8> {
        let mut f = vec![0x80 | opcode];
        if payload.len() < 126 {
            f.push(payload.len() as u8);
        } else {
            f.push(126);
            f.extend_from_slice(&(payload.len() as u16).to_be_bytes());
        }
        f.extend_from_slice(payload);
        f
    }

    fn event(etype: &str, data: Value) -> Vec<u8> {
        Value::map([
            ("ts", Value::Int(1_700_000_000_000)),
            ("etype", Value::from(etype)),
            ("data", data),
        ])
        .to_msgpack()
    }

    /// The decoder's task over one end of a duplex; the other end plays the
    /// server.
    fn start(
        config: Config,
    ) -> (
        Arc<Shared>,
        tokio::task::JoinHandle<DecoderExit>,
        DuplexStream,
    ) {
        let shared = Arc::new(Shared::new(config));
        let ctx = Arc::new(ConnCtx::new(
            SocketHandle::detached(),
            CancellationToken::new(),
        ));
        let (ours, theirs) = tokio::io::duplex(1 << 16);
        let task = tokio::spawn(run(shared.clone(), ctx, Box::new(ours)));
        (shared, task, theirs)
    }

    async fn exit(task: tokio::task::JoinHandle<DecoderExit>) -> DecoderExit {
        tokio::time::timeout(Duration::from_secs(5), task)
            .await
            .expect("the read loop ended")
            .expect("no panic")
    }

    #[tokio::test]
    async fn events_in_any_cuts_are_queued_in_order_a_ping_is_answered_and_a_close_reported() {
        let (shared, task, mut server) = start(Config::default());
        let set = frame(0x2, &event("SET", Value::map([("x", Value::Int(1))])));
        let big = frame(0x2, &event("UPSERT", Value::Bin(vec![7; 300])));
        server.write_all(&set).await.unwrap();
        // A frame cut into three reads, a ping between two events.
        server.write_all(&big[..1]).await.unwrap();
        server.flush().await.unwrap();
        tokio::task::yield_now().await;
        server.write_all(&big[1..5]).await.unwrap();
        server.flush().await.unwrap();
        tokio::task::yield_now().await;
        server.write_all(&big[5..]).await.unwrap();
        server
            .write_all(&frame(0x9, b"are you there"))
            .await
            .unwrap();
        server
            .write_all(&frame(0x8, &[0x03, 0xe8, b'b', b'y', b'e']))
            .await
            .unwrap();
        match exit(task).await {
            DecoderExit::ServerClosed { code, reason } => {
                assert_eq!((code, reason.as_str()), (1000, "bye"));
            }
            other => panic!("{other:?}"),
        }
        let q = &shared.inbound.main;
        let first = q.try_pop().expect("SET queued");
        assert_eq!(first.etype(), "SET");
        assert_eq!(first.data().unwrap()["x"], Value::Int(1));
        let second = q.try_pop().expect("UPSERT queued");
        assert_eq!(second.etype(), "UPSERT");
        assert_eq!(second.data().unwrap(), Value::Bin(vec![7; 300]));
        assert!(q.try_pop().is_err(), "nothing else");
        let ob = shared.outbox();
        assert_eq!(ob.control.pong.as_deref(), Some(&b"are you there"[..]));
    }

    #[tokio::test]
    async fn a_masked_server_frame_is_a_protocol_error_and_eof_is_reported() {
        // RFC 6455 §5.1: a client closes on a masked frame from the server.
        let (_, task, mut server) = start(Config::default());
        server
            .write_all(&[0x82, 0x80 | 2, 1, 2, 3, 4, 0, 0])
            .await
            .unwrap();
        match exit(task).await {
            DecoderExit::Protocol { code, .. } => assert_eq!(code, 1002),
            other => panic!("{other:?}"),
        }
        // The stream ends mid-frame: end of file, not a hang.
        let (_, task, mut server) = start(Config::default());
        server
            .write_all(&frame(0x2, &event("SET", Value::Nil))[..4])
            .await
            .unwrap();
        drop(server);
        assert!(matches!(exit(task).await, DecoderExit::Eof), "EOF");
    }

    #[tokio::test]
    async fn a_message_over_the_inbound_limit_is_refused_before_it_is_read() {
        let (_, task, mut server) = start(Config {
            max_inbound_message: 1024,
            ..Config::default()
        });
        // Only the header of a 60 000-byte frame: refused on its length.
        server.write_all(&[0x82, 126, 0xea, 0x60]).await.unwrap();
        match exit(task).await {
            DecoderExit::TooBig { limit } => assert_eq!(limit, 1024),
            other => panic!("{other:?}"),
        }
    }
}
