//! The embedded server (`vuer_client_testkit::server`, used by the CLI's `serve`
//! and `bench` and by users' tests) against hostile clients: its memory and
//! its tasks stay bounded, and a bad frame closes one connection, not the
//! server (issue 14, item 12).

use vuer_client_testkit as common;

use std::time::{Duration, Instant};

use common::bounded;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use vuer_client::{DynEvent, Value, VuerClient};
use vuer_client_testkit::server::{LocalServer, ServerOptions};

/// Connects and completes a websocket upgrade by hand.
async fn raw_client(server: &LocalServer) -> TcpStream {
    let mut s = TcpStream::connect(server.addr()).await.unwrap();
    let req = format!(
        "GET / HTTP/1.1\r\nHost: {}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
        server.addr()
    );
    s.write_all(req.as_bytes()).await.unwrap();
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let b = s.read_u8().await.unwrap();
        head.push(b);
    }
    assert!(
        head.starts_with(b"HTTP/1.1 101"),
        "{}",
        String::from_utf8_lossy(&head)
    );
    s
}

/// A masked client frame header declaring `len` bytes (mask 0).
fn header(first: u8, len: u64) -> Vec<u8> {
    let mut h = vec![first, 0x80 | 127];
    h.extend_from_slice(&len.to_be_bytes());
    h.extend_from_slice(&[0, 0, 0, 0]);
    h
}

/// Reads until the server's close frame; returns its code.
async fn close_code(s: &mut TcpStream) -> u16 {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 1024];
    loop {
        if let Some(i) = buf.windows(1).position(|w| w[0] == 0x88) {
            if buf.len() >= i + 4 {
                return u16::from_be_bytes([buf[i + 2], buf[i + 3]]);
            }
        }
        let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut chunk))
            .await
            .expect("a close frame within 5 s")
            .unwrap();
        assert!(n > 0, "closed without a close frame");
        buf.extend_from_slice(&chunk[..n]);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hostile_frame_header_closes_one_connection_not_the_server() {
    // The counting sink computed `hdr + len` on a declared length: an
    // overflow, a panicked task, and its connection entry, writer task and
    // socket left behind.
    bounded(30, async {
        for decode in [false, true] {
            let server = LocalServer::start(ServerOptions {
                decode,
                scene_on_init: false,
                ..Default::default()
            })
            .await
            .unwrap();
            for (first, len, code) in [
                (0x82, (1u64 << 63) - 1, 1009),
                (0x82, 1 << 40, 1009),
                (0x82, u64::MAX, 1002),
                (0xf2, 5, 1002),
            ] {
                let mut s = raw_client(&server).await;
                s.write_all(&header(first, len)).await.unwrap();
                assert_eq!(close_code(&mut s).await, code, "decode {decode}, len {len}");
                assert!(
                    server
                        .wait_until(|st| st.open == 0, Duration::from_secs(5))
                        .await,
                    "the connection is gone: {:?}",
                    server.stats()
                );
            }
            // The server goes on.
            let client = VuerClient::connect(&server.uri()).await.unwrap();
            client.publish(&DynEvent::new("STILL_UP")).unwrap();
            assert!(
                server
                    .wait_until(|s| s.frames >= 2, Duration::from_secs(5))
                    .await
            );
            client.close().await.unwrap();
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_event_log_is_bounded_in_bytes() {
    // It was bounded by count only: 100 000 events of 4 MiB.
    bounded(30, async {
        let server = LocalServer::start(ServerOptions {
            scene_on_init: false,
            record_bytes: 1 << 20,
            ..Default::default()
        })
        .await
        .unwrap();
        let client = VuerClient::connect(&server.uri()).await.unwrap();
        for i in 0..12i64 {
            let ev = DynEvent::new("BIG").value(Value::map([
                ("i", i.into()),
                ("pad", Value::Bin(vec![0; 200 << 10])),
            ]));
            client.send(&ev).await.unwrap();
        }
        client.close().await.unwrap();
        let log = server.received();
        let bytes: usize = log.iter().map(|r| r.event.as_msgpack().len()).sum();
        assert!(bytes <= 1 << 20, "{bytes}");
        // The newest are kept.
        let last = log.last().unwrap();
        assert_eq!(last.event.data().unwrap()["i"], Value::from(11i64));
        assert_eq!(server.stats().events, 13);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_are_limited_and_a_slow_request_is_dropped() {
    bounded(30, async {
        let server = LocalServer::start(ServerOptions {
            scene_on_init: false,
            max_connections: 2,
            header_timeout: Duration::from_millis(300),
            ..Default::default()
        })
        .await
        .unwrap();
        let a = raw_client(&server).await;
        let b = raw_client(&server).await;
        assert!(
            server
                .wait_until(|s| s.open == 2, Duration::from_secs(5))
                .await
        );
        let refused = VuerClient::connect(&server.uri()).await.unwrap_err();
        assert!(refused.to_string().contains("503"), "{refused}");
        drop((a, b));
        assert!(
            server
                .wait_until(|s| s.open == 0, Duration::from_secs(5))
                .await
        );
        // Half a request, then nothing: dropped after the header timeout.
        let mut slow = TcpStream::connect(server.addr()).await.unwrap();
        slow.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n")
            .await
            .unwrap();
        let t = Instant::now();
        let mut buf = [0u8; 256];
        let n = tokio::time::timeout(Duration::from_secs(5), slow.read(&mut buf))
            .await
            .expect("dropped within 5 s")
            .unwrap_or(0);
        let took = t.elapsed();
        assert!(
            took >= Duration::from_millis(250) && took < Duration::from_secs(2),
            "{took:?}, {n} bytes: {}",
            String::from_utf8_lossy(&buf[..n])
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn close_codes_are_bounded() {
    // They grew with every connection ever closed.
    bounded(60, async {
        let server = LocalServer::start(ServerOptions {
            scene_on_init: false,
            ..Default::default()
        })
        .await
        .unwrap();
        for i in 0..1100u16 {
            let mut s = raw_client(&server).await;
            // A masked close frame with code 4000 + i % 1000.
            let code = 4000 + i % 1000;
            let c = code.to_be_bytes();
            s.write_all(&[0x88, 0x82, 0, 0, 0, 0, c[0], c[1]])
                .await
                .unwrap();
            assert_eq!(close_code(&mut s).await, code);
        }
        let codes = server.close_codes();
        assert_eq!(codes.len(), 1024);
        // The latest are kept.
        assert_eq!(codes.last().unwrap().0, 4000 + 1099 % 1000);
    })
    .await;
}
