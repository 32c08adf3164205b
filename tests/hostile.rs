//! The inbound path against a hostile server: malformed messages, broken
//! websocket framing, floods, and the keepalive, close and RPC paths.
//!
//! Frames are built by hand (server frames are unmasked) and written to the
//! client with [`LocalServer::send_raw`], or by a raw TCP peer that does the
//! websocket upgrade itself when the test needs to see the client's frames.
//!
//! The rule under test: a message that does not decode is counted, reported
//! and skipped, and the connection goes on (a good event after it still
//! arrives); a protocol violation closes the connection with the matching
//! close code and a typed [`Disconnect`]. Nothing panics, nothing grows
//! without bound.

use vuer_client_testkit as common;

use std::time::{Duration, Instant};

use bytes::Bytes;
use common::{bounded, RawPeer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use vuer_client::{
    ClientBuilder, ConnectionState, Disconnect, DynEvent, InboundPolicy, ServerEvent, Value,
    VuerClient,
};
use vuer_client_testkit::server::{server_event, LocalServer};

// ---------------------------------------------------------------------------
// Building server frames and messages by hand
// ---------------------------------------------------------------------------

const FIN: u8 = 0x80;
const OP_CONT: u8 = 0x0;
const OP_TEXT: u8 = 0x1;
const OP_BIN: u8 = 0x2;
const OP_CLOSE: u8 = 0x8;
const OP_PING: u8 = 0x9;
const OP_PONG: u8 = 0xA;

/// A frame header (first byte as given, unmasked) declaring `len` bytes.
fn header(b0: u8, len: u64) -> Vec<u8> {
    let mut out = vec![b0];
    if len < 126 {
        out.push(len as u8);
    } else if len <= u16::MAX as u64 {
        out.push(126);
        out.extend_from_slice(&(len as u16).to_be_bytes());
    } else {
        out.push(127);
        out.extend_from_slice(&len.to_be_bytes());
    }
    out
}

/// One unmasked server frame.
fn frame(b0: u8, payload: &[u8]) -> Vec<u8> {
    let mut out = header(b0, payload.len() as u64);
    out.extend_from_slice(payload);
    out
}

fn binary(payload: &[u8]) -> Vec<u8> {
    frame(FIN | OP_BIN, payload)
}

fn text(payload: &[u8]) -> Vec<u8> {
    frame(FIN | OP_TEXT, payload)
}

fn close_payload(code: u16, reason: &[u8]) -> Vec<u8> {
    let mut p = code.to_be_bytes().to_vec();
    p.extend_from_slice(reason);
    p
}

/// A msgpack str header for `n` bytes.
fn mp_str_header(out: &mut Vec<u8>, n: usize) {
    if n < 32 {
        out.push(0xa0 | n as u8);
    } else if n < 256 {
        out.extend_from_slice(&[0xd9, n as u8]);
    } else {
        out.push(0xda);
        out.extend_from_slice(&(n as u16).to_be_bytes());
    }
}

fn mp_str(out: &mut Vec<u8>, s: &[u8]) {
    mp_str_header(out, s.len());
    out.extend_from_slice(s);
}

/// `{ts, data: <raw>, etype}` with `data` given as raw msgpack bytes.
fn event_with_raw_data(etype: &[u8], data: &[u8]) -> Vec<u8> {
    let mut out = vec![0x83];
    mp_str(&mut out, b"ts");
    out.extend_from_slice(&[0xcf, 0, 0, 1, 0x8b, 0xcf, 0xe5, 0x69, 0xf4]);
    mp_str(&mut out, b"data");
    out.extend_from_slice(data);
    mp_str(&mut out, b"etype");
    mp_str(&mut out, etype);
    out
}

/// A well-formed event frame carrying `n` as data.
fn good(etype: &str, n: i64) -> Vec<u8> {
    binary(&server_event(etype, Value::Int(n)))
}

// ---------------------------------------------------------------------------
// Client, server and state helpers
// ---------------------------------------------------------------------------

/// A local server that sends nothing by itself, and a client connected to
/// it that does not reconnect (so a wrongly closed connection shows as a
/// `Closed` state and the test fails). Returns once the server has the
/// connection (it received INIT).
async fn start_with(
    configure: impl FnOnce(ClientBuilder) -> ClientBuilder,
) -> (LocalServer, VuerClient) {
    let server = common::quiet_server().await;
    let builder = VuerClient::builder()
        .uri(server.uri())
        .reconnect(None)
        .close_timeout(Duration::from_secs(2));
    let client = configure(builder).connect().await.unwrap();
    assert!(
        server
            .wait_until(|s| s.inits == 1, Duration::from_secs(5))
            .await,
        "the server never saw INIT"
    );
    (server, client)
}

async fn start() -> (LocalServer, VuerClient) {
    start_with(|b| b).await
}

/// Waits until the client is closed for good; returns why.
async fn closed(client: &VuerClient) -> Disconnect {
    let mut states = client.watch_state();
    loop {
        if let ConnectionState::Closed(r) = &*states.borrow_and_update() {
            return r.clone();
        }
        states.changed().await.expect("state channel closed");
    }
}

/// Writes `bad`, then a good event; the good event must arrive on an
/// unbroken connection, and the bad one must be counted as one more decode
/// error (returned: the client's `last_error`).
async fn skipped(server: &LocalServer, client: &mut VuerClient, bad: Vec<u8>) -> String {
    let before = client.stats();
    assert_eq!(server.send_raw(Bytes::from(bad)), 1);
    let marker = before.received as i64 + 1_000_000;
    server.send_raw(Bytes::from(good("GOOD", marker)));
    let ev = client
        .recv_timeout(Duration::from_secs(5))
        .await
        .expect("the good event after a bad one did not arrive");
    assert_eq!(ev.etype(), "GOOD");
    assert_eq!(ev.data().unwrap(), Value::Int(marker));
    let after = client.stats();
    assert_eq!(
        after.decode_errors,
        before.decode_errors + 1,
        "one decode error counted: {after:?}"
    );
    assert_eq!(after.received, before.received + 1);
    assert!(client.is_connected());
    assert_eq!(after.disconnects, 0);
    assert_eq!(server.stats().connections, 1);
    let err = after.last_error.expect("last_error is set");
    assert!(err.starts_with("inbound "), "{err}");
    assert!(err.contains("skipped"), "{err}");
    err
}

/// Writes `raw` and expects the client to close with `code`: the server
/// receives a close frame with that code, and the client ends with the
/// returned reason.
async fn closes_with(
    server: &LocalServer,
    client: &VuerClient,
    raw: Vec<u8>,
    code: u16,
) -> Disconnect {
    assert_eq!(server.send_raw(Bytes::from(raw)), 1);
    let reason = closed(client).await;
    assert!(
        server
            .wait_until(|s| s.closes >= 1, Duration::from_secs(5))
            .await,
        "no close frame from the client ({reason:?})"
    );
    assert_eq!(
        server.close_codes()[0].0,
        code,
        "close code sent by the client ({reason:?})"
    );
    assert_eq!(client.stats().disconnects, 1);
    assert!(client.stats().last_error.is_some());
    reason
}

/// A new client and server for each raw input, each closing with `code`
/// and a `Disconnect::Protocol` reason.
async fn each_closes_with_protocol(cases: Vec<(&str, Vec<u8>)>, code: u16) {
    for (what, raw) in cases {
        let (server, client) = start().await;
        let reason = closes_with(&server, &client, raw, code).await;
        match &reason {
            Disconnect::Protocol(msg) => assert!(
                msg.contains(&format!("(closed with {code})")),
                "{what}: {msg}"
            ),
            other => panic!("{what}: expected a protocol error, got {other:?}"),
        }
    }
}

// ---------------------------------------------------------------------------
// Messages that do not decode: counted, skipped, the connection goes on
// ---------------------------------------------------------------------------

#[tokio::test]
async fn truncated_msgpack_is_skipped_and_the_connection_goes_on() {
    bounded(30, async {
        let (server, mut client) = start().await;
        let whole = server_event("UPSERT", Value::map([("nodes", Value::Array(vec![]))]));
        // Every proper prefix of a valid event, the empty frame included.
        for cut in [0, 1, 5, whole.len() / 2, whole.len() - 1] {
            let err = skipped(&server, &mut client, binary(&whole[..cut])).await;
            assert!(err.contains("truncated") || err.contains("map"), "{err}");
        }
        assert_eq!(client.stats().decode_errors, 5);
        // A string that claims more bytes than the message has.
        let mut bad = vec![0x81];
        mp_str(&mut bad, b"etype");
        bad.extend_from_slice(&[0xa5, b'S', b'E']);
        skipped(&server, &mut client, binary(&bad)).await;
    })
    .await;
}

#[tokio::test]
async fn invalid_msgpack_is_skipped() {
    bounded(30, async {
        let (server, mut client) = start().await;
        // 0xc1 is never used by msgpack: as the message, and inside data.
        let err = skipped(&server, &mut client, binary(&[0xc1])).await;
        assert!(err.contains("0xc1"), "{err}");
        let err = skipped(
            &server,
            &mut client,
            binary(&event_with_raw_data(b"SET", &[0x92, 0x01, 0xc1])),
        )
        .await;
        assert!(err.contains("0xc1"), "{err}");
        // Two messages in one frame.
        let mut two = server_event("A", Value::Nil).to_vec();
        two.extend_from_slice(&server_event("B", Value::Nil));
        let err = skipped(&server, &mut client, binary(&two)).await;
        assert!(err.contains("trailing"), "{err}");
        // Random bytes.
        skipped(
            &server,
            &mut client,
            binary(&[0xde, 0xad, 0xbe, 0xef, 0x00]),
        )
        .await;
    })
    .await;
}

#[tokio::test]
async fn non_map_payloads_are_skipped() {
    bounded(30, async {
        let (server, mut client) = start().await;
        for msg in [
            Value::Array(vec![Value::from("etype"), Value::from("SET")]),
            Value::Int(42),
            Value::from("SET"),
            Value::Nil,
            Value::Bin(vec![0x81, 0xa5]),
            Value::F64(1.5),
        ] {
            let err = skipped(&server, &mut client, binary(&msg.to_msgpack())).await;
            assert!(err.contains("expected a msgpack map"), "{err}");
        }
        // Maps without a string etype.
        for msg in [
            Value::map([("data", Value::Nil)]),
            Value::map([("etype", Value::Nil)]),
            Value::map([("etype", Value::Int(3))]),
            Value::map([("etype", Value::Array(vec![Value::from("SET")]))]),
        ] {
            let err = skipped(&server, &mut client, binary(&msg.to_msgpack())).await;
            assert!(err.contains("etype"), "{err}");
        }
    })
    .await;
}

#[tokio::test]
async fn non_string_keys_are_skipped() {
    bounded(30, async {
        let (server, mut client) = start().await;
        // A top-level int key: {1: "x", "etype": "SET"}.
        let mut top = vec![0x82, 0x01, 0xa1, b'x'];
        mp_str(&mut top, b"etype");
        mp_str(&mut top, b"SET");
        let err = skipped(&server, &mut client, binary(&top)).await;
        assert!(err.contains("not a string"), "{err}");
        // A bin key, and a nested int key inside data, and a nil key deeper.
        let mut bin_key = vec![0x82, 0xc4, 0x01, b'k', 0xc0];
        mp_str(&mut bin_key, b"etype");
        mp_str(&mut bin_key, b"SET");
        skipped(&server, &mut client, binary(&bin_key)).await;
        let nested = event_with_raw_data(b"UPSERT", &[0x81, 0x07, 0xc3]);
        let err = skipped(&server, &mut client, binary(&nested)).await;
        assert!(err.contains("not a string"), "{err}");
        let deeper = event_with_raw_data(b"UPSERT", &[0x91, 0x91, 0x81, 0xc0, 0xc0]);
        skipped(&server, &mut client, binary(&deeper)).await;
    })
    .await;
}

#[tokio::test]
async fn invalid_utf8_in_msgpack_strings_is_skipped() {
    bounded(30, async {
        let (server, mut client) = start().await;
        // In etype.
        let err = skipped(
            &server,
            &mut client,
            binary(&event_with_raw_data(b"SE\xffT", &[0xc0])),
        )
        .await;
        assert!(err.contains("UTF-8"), "{err}");
        // In a key inside data, in a string value deep in data, an overlong
        // encoding and a lone surrogate.
        let mut key = vec![0x81];
        mp_str(&mut key, b"k\xc3");
        key.push(0xc0);
        for data in [
            key,
            {
                let mut v = vec![0x91, 0x91];
                mp_str(&mut v, b"abc\x80");
                v
            },
            {
                let mut v = vec![];
                mp_str(&mut v, b"\xc0\xaf");
                v
            },
            {
                let mut v = vec![];
                mp_str(&mut v, b"\xed\xa0\x80");
                v
            },
        ] {
            let err = skipped(
                &server,
                &mut client,
                binary(&event_with_raw_data(b"SET", &data)),
            )
            .await;
            assert!(err.contains("UTF-8"), "{err}");
        }
        // In the top-level key of an RPC field.
        let mut rpc = vec![0x82];
        mp_str(&mut rpc, b"etype");
        mp_str(&mut rpc, b"RPC");
        mp_str(&mut rpc, b"uuid");
        mp_str(&mut rpc, b"\xfe\xfe");
        skipped(&server, &mut client, binary(&rpc)).await;
    })
    .await;
}

#[tokio::test]
async fn deep_nesting_is_refused_without_recursing() {
    bounded(30, async {
        let (server, mut client) = start().await;
        // 255 levels inside data: accepted, and decodable every way.
        let mut ok = vec![0x91; 255];
        ok.push(0xc0);
        server.send_raw(Bytes::from(binary(&event_with_raw_data(b"DEEP", &ok))));
        let ev = client.recv_timeout(Duration::from_secs(5)).await.unwrap();
        assert_eq!(ev.etype(), "DEEP");
        let mut v = ev.data().unwrap();
        for _ in 0..255 {
            v = v.as_array().unwrap()[0].clone();
        }
        assert!(v.is_nil());
        ev.data_as::<serde_json::Value>().unwrap();
        ev.to_value().unwrap();
        // 256 levels, then a million (arrays and maps): refused.
        for levels in [256usize, 1_000_000] {
            let mut deep = vec![0x91; levels];
            deep.push(0xc0);
            let err = skipped(
                &server,
                &mut client,
                binary(&event_with_raw_data(b"DEEP", &deep)),
            )
            .await;
            assert!(err.contains("nesting deeper than 256"), "{err}");
        }
        let mut maps = Vec::new();
        for _ in 0..100_000 {
            maps.extend_from_slice(&[0x81, 0xa1, b'a']);
        }
        maps.push(0xc0);
        let err = skipped(
            &server,
            &mut client,
            binary(&event_with_raw_data(b"DEEP", &maps)),
        )
        .await;
        assert!(err.contains("nesting"), "{err}");
        // The same in JSON: a million nested arrays in a text frame.
        let json = format!(
            r#"{{"etype": "DEEP", "data": {}0{}}}"#,
            "[".repeat(1_000_000),
            "]".repeat(1_000_000)
        );
        skipped(&server, &mut client, text(json.as_bytes())).await;
    })
    .await;
}

#[tokio::test]
async fn millions_of_top_level_entries_are_accepted_without_a_per_entry_cost() {
    bounded(60, async {
        // 1 M empty extras ({"": nil} repeated, 2 MiB): the envelope keeps a
        // count, not a list (a list took 16 times the message's size).
        let (server, mut client) = start().await;
        const N: u32 = 1 << 20;
        let mut msg = vec![0xdf];
        msg.extend_from_slice(&(N + 1).to_be_bytes());
        for _ in 0..N {
            msg.extend_from_slice(&[0xa0, 0xc0]);
        }
        mp_str(&mut msg, b"etype");
        mp_str(&mut msg, b"MANY");
        server.send_raw(Bytes::from(binary(&msg)));
        let ev = client.recv_timeout(Duration::from_secs(20)).await.unwrap();
        assert_eq!(ev.etype(), "MANY");
        assert_eq!(ev.extra_names().count(), N as usize);
        assert_eq!(ev.extra("").unwrap().unwrap(), Value::Nil);
        assert!(ev.extra("other").is_none());
    })
    .await;
}

#[tokio::test]
async fn absurd_declared_msgpack_lengths_are_refused_before_allocating() {
    bounded(30, async {
        let (server, mut client) = start().await;
        let max32 = [0xff, 0xff, 0xff, 0xff];
        let cases: Vec<Vec<u8>> = vec![
            // str32, bin32, ext32, array32, map32 of 4 G inside data
            [&[0xdb][..], &max32].concat(),
            [&[0xc6][..], &max32].concat(),
            [&[0xc9][..], &max32, &[0x01]].concat(),
            [&[0xdd][..], &max32].concat(),
            [&[0xdf][..], &max32].concat(),
            // array16 / map16 claiming more entries than there are bytes
            vec![0xdc, 0xff, 0xff, 0xc0, 0xc0],
            vec![0xde, 0xff, 0xff, 0xa1, b'a', 0xc0],
        ];
        for data in cases {
            let t = Instant::now();
            let err = skipped(
                &server,
                &mut client,
                binary(&event_with_raw_data(b"SET", &data)),
            )
            .await;
            assert!(err.contains("truncated"), "{err}");
            assert!(t.elapsed() < Duration::from_secs(2));
        }
        // The message itself: a map32 header claiming 4 G entries.
        let err = skipped(
            &server,
            &mut client,
            binary(&[0xdf, 0xff, 0xff, 0xff, 0xff]),
        )
        .await;
        assert!(err.contains("truncated"), "{err}");
    })
    .await;
}

#[tokio::test]
async fn text_frames_that_are_not_events_are_skipped() {
    bounded(30, async {
        let (server, mut client) = start().await;
        for bad in [
            &b"not json"[..],
            b"{\"etype\": ",
            b"[\"etype\", \"SET\"]",
            b"\"SET\"",
            b"{\"data\": 1}",
            b"{\"etype\": 7}",
            b"",
            b"{\"etype\": \"SET\"} {\"etype\": \"SET\"}",
        ] {
            skipped(&server, &mut client, text(bad)).await;
        }
        // A good JSON event still decodes afterwards.
        server.send_raw(Bytes::from(text(
            br#"{"etype": "J", "data": {"a": [1, 2.5]}}"#,
        )));
        let ev = client.recv_timeout(Duration::from_secs(5)).await.unwrap();
        assert!(ev.was_json());
        assert_eq!(ev.data().unwrap()["a"][1], Value::F64(2.5));
    })
    .await;
}

// ---------------------------------------------------------------------------
// Size limits
// ---------------------------------------------------------------------------

const LIMIT: usize = 1024;

/// An event of exactly `size` bytes of msgpack.
fn event_of_size(size: usize) -> Vec<u8> {
    let empty = event_with_raw_data(b"BIG", &[0xc5, 0, 0]);
    let pad = size - empty.len();
    let mut data = vec![0xc5];
    data.extend_from_slice(&(pad as u16).to_be_bytes());
    data.resize(3 + pad, 0x5a);
    let ev = event_with_raw_data(b"BIG", &data);
    assert_eq!(ev.len(), size);
    ev
}

fn assert_too_big(reason: &Disconnect) {
    assert_eq!(*reason, Disconnect::MessageTooBig { limit: LIMIT });
    assert!(reason.to_string().contains("1009"), "{reason}");
}

#[tokio::test]
async fn a_message_over_the_size_limit_closes_with_1009() {
    bounded(30, async {
        let (server, mut client) = start_with(|b| b.max_inbound_message(LIMIT)).await;
        // Exactly at the limit: accepted.
        server.send_raw(Bytes::from(binary(&event_of_size(LIMIT))));
        let ev = client.recv_timeout(Duration::from_secs(5)).await.unwrap();
        assert_eq!(ev.len(), LIMIT);
        // One byte over: closed with 1009, reported as MessageTooBig.
        let reason = closes_with(&server, &client, binary(&event_of_size(LIMIT + 1)), 1009).await;
        assert_too_big(&reason);
        assert!(matches!(
            client.state(),
            ConnectionState::Closed(Disconnect::MessageTooBig { limit: LIMIT })
        ));
        assert!(client.stats().last_error.unwrap().contains("1009"));
        assert!(client.recv().await.is_none());
    })
    .await;
}

#[tokio::test]
async fn an_enormous_declared_frame_length_closes_with_1009() {
    bounded(30, async {
        // Headers alone, payload never sent: refused on the header, before
        // anything is allocated or awaited.
        for len in [LIMIT as u64 + 1, 1 << 40, 1 << 62] {
            let (server, client) = start_with(|b| b.max_inbound_message(LIMIT)).await;
            let reason = closes_with(&server, &client, header(FIN | OP_BIN, len), 1009).await;
            assert_too_big(&reason);
        }
        // A 64-bit length with its top bit set breaks the form (RFC 6455
        // §5.2): a protocol error.
        let (server, client) = start_with(|b| b.max_inbound_message(LIMIT)).await;
        let reason = closes_with(&server, &client, header(FIN | OP_BIN, u64::MAX), 1002).await;
        assert!(matches!(reason, Disconnect::Protocol(_)), "{reason:?}");
        // With the default limit (256 MiB) too.
        let (server, client) = start().await;
        let reason = closes_with(&server, &client, header(FIN | OP_BIN, 1 << 62), 1009).await;
        assert!(
            matches!(reason, Disconnect::MessageTooBig { limit } if limit == 256 << 20),
            "{reason:?}"
        );
    })
    .await;
}

/// A JSON event of exactly `size` bytes.
fn json_of_size(size: usize) -> Vec<u8> {
    let head = br#"{"etype": "TXT", "data": ""#;
    let mut out = head.to_vec();
    out.resize(size - 2, b'a');
    out.extend_from_slice(b"\"}");
    out
}

#[tokio::test]
async fn text_messages_have_a_sixteenth_of_the_limit() {
    bounded(60, async {
        // JSON costs up to ~18 times its size to decode: with a 32 MiB
        // limit, text messages get 2 MiB (binary ones the full 32 MiB).
        const BIG: usize = 32 << 20;
        const TEXT: usize = 2 << 20;
        let (server, mut client) = start_with(|b| b.max_inbound_message(BIG)).await;
        server.send_raw(Bytes::from(text(&json_of_size(TEXT))));
        let ev = client.recv_timeout(Duration::from_secs(10)).await.unwrap();
        assert!(ev.was_json());
        assert_eq!(ev.data().unwrap().as_str().unwrap().len(), TEXT - 28);
        server.send_raw(Bytes::from(binary(&event_with_raw_data(
            b"BIN",
            &Value::Bin(vec![0; TEXT * 2]).to_msgpack(),
        ))));
        assert_eq!(
            client
                .recv_timeout(Duration::from_secs(10))
                .await
                .unwrap()
                .etype(),
            "BIN"
        );
        let reason = closes_with(&server, &client, text(&json_of_size(TEXT + 1)), 1009).await;
        assert_eq!(reason, Disconnect::MessageTooBig { limit: TEXT });

        // Over fragments too; and the floor: with a 1 KiB limit, text gets
        // the whole 1 KiB.
        let (server, client) = start_with(|b| b.max_inbound_message(BIG)).await;
        let msg = json_of_size(TEXT + 1);
        let mut raw = frame(OP_TEXT, &msg[..TEXT / 2]);
        raw.extend(frame(FIN | OP_CONT, &msg[TEXT / 2..]));
        let reason = closes_with(&server, &client, raw, 1009).await;
        assert_eq!(reason, Disconnect::MessageTooBig { limit: TEXT });
        let (server, mut client) = start_with(|b| b.max_inbound_message(LIMIT)).await;
        server.send_raw(Bytes::from(text(&json_of_size(LIMIT))));
        assert!(client
            .recv_timeout(Duration::from_secs(5))
            .await
            .unwrap()
            .was_json());
        let reason = closes_with(&server, &client, text(&json_of_size(LIMIT + 1)), 1009).await;
        assert_too_big(&reason);
    })
    .await;
}

// ---------------------------------------------------------------------------
// Fragmentation
// ---------------------------------------------------------------------------

#[tokio::test]
async fn fragmented_messages_are_reassembled() {
    bounded(30, async {
        let (server, mut client) = start_with(|b| b.max_inbound_message(LIMIT)).await;
        // A binary message of exactly the limit in four fragments, with a
        // ping and a pong between them.
        let msg = event_of_size(LIMIT);
        let mut raw = frame(OP_BIN, &msg[..1]);
        raw.extend(frame(FIN | OP_PING, b"mid"));
        raw.extend(frame(OP_CONT, &msg[1..500]));
        raw.extend(frame(FIN | OP_PONG, b"unsolicited"));
        raw.extend(frame(OP_CONT, &[]));
        raw.extend(frame(FIN | OP_CONT, &msg[500..]));
        server.send_raw(Bytes::from(raw));
        let ev = client.recv_timeout(Duration::from_secs(5)).await.unwrap();
        assert_eq!(ev.as_msgpack().as_ref(), &msg[..]);
        assert_eq!(ev.etype(), "BIG");
        // A text message split inside a multi-byte character.
        let json = r#"{"etype": "TXT", "data": "héllo wörld"}"#.as_bytes();
        let cut = json.iter().position(|&b| b == 0xc3).unwrap() + 1;
        let mut raw = frame(OP_TEXT, &json[..cut]);
        raw.extend(frame(FIN | OP_CONT, &json[cut..]));
        server.send_raw(Bytes::from(raw));
        let ev = client.recv_timeout(Duration::from_secs(5)).await.unwrap();
        assert!(ev.was_json());
        assert_eq!(ev.data().unwrap(), Value::from("héllo wörld"));
        let s = client.stats();
        assert_eq!((s.received, s.decode_errors), (2, 0));
        assert!(client.is_connected());
    })
    .await;
}

#[tokio::test]
async fn fragments_over_the_limit_close_with_1009() {
    bounded(30, async {
        let (server, client) = start_with(|b| b.max_inbound_message(LIMIT)).await;
        let msg = event_of_size(LIMIT + 1);
        let mut raw = frame(OP_BIN, &msg[..600]);
        raw.extend(frame(OP_CONT, &msg[600..1000]));
        raw.extend(frame(FIN | OP_CONT, &msg[1000..]));
        let reason = closes_with(&server, &client, raw, 1009).await;
        assert_too_big(&reason);
        assert_eq!(client.stats().received, 0);
    })
    .await;
}

#[tokio::test]
async fn broken_fragmentation_closes_with_1002() {
    bounded(30, async {
        let mut nested = frame(OP_BIN, b"\x81");
        nested.extend(frame(FIN | OP_BIN, &server_event("X", Value::Nil)));
        let mut text_in_binary = frame(OP_BIN, b"\x81");
        text_in_binary.extend(frame(OP_TEXT, b"{"));
        each_closes_with_protocol(
            vec![
                ("continuation without a start", frame(FIN | OP_CONT, b"x")),
                (
                    "non-final continuation without a start",
                    frame(OP_CONT, b"x"),
                ),
                ("a new message inside a fragmented one", nested),
                ("a text start inside a binary message", text_in_binary),
            ],
            1002,
        )
        .await;
    })
    .await;
}

// ---------------------------------------------------------------------------
// Websocket protocol violations: closed with 1002 (or 1007)
// ---------------------------------------------------------------------------

#[tokio::test]
async fn reserved_bits_close_with_1002() {
    bounded(30, async {
        let msg = server_event("X", Value::Nil);
        each_closes_with_protocol(
            vec![
                ("RSV1", frame(FIN | 0x40 | OP_BIN, &msg)),
                ("RSV2", frame(FIN | 0x20 | OP_BIN, &msg)),
                ("RSV3", frame(FIN | 0x10 | OP_BIN, &msg)),
                ("RSV1 on a ping", frame(FIN | 0x40 | OP_PING, b"")),
            ],
            1002,
        )
        .await;
    })
    .await;
}

#[tokio::test]
async fn unknown_opcodes_close_with_1002() {
    bounded(60, async {
        let cases = [3u8, 4, 5, 6, 7, 0xb, 0xc, 0xd, 0xe, 0xf]
            .into_iter()
            .map(|op| ("reserved opcode", frame(FIN | op, b"x")))
            .collect();
        each_closes_with_protocol(cases, 1002).await;
    })
    .await;
}

#[tokio::test]
async fn fragmented_control_frames_close_with_1002() {
    bounded(30, async {
        each_closes_with_protocol(
            vec![
                ("ping without FIN", frame(OP_PING, b"p")),
                ("pong without FIN", frame(OP_PONG, b"p")),
                (
                    "close without FIN",
                    frame(OP_CLOSE, &close_payload(1000, b"")),
                ),
            ],
            1002,
        )
        .await;
    })
    .await;
}

#[tokio::test]
async fn oversized_control_frames_close_with_1002() {
    bounded(30, async {
        let big = vec![b'p'; 126];
        each_closes_with_protocol(
            vec![
                ("126-byte ping", frame(FIN | OP_PING, &big)),
                ("64 KiB ping", frame(FIN | OP_PING, &vec![0; 65_535])),
                ("126-byte pong", frame(FIN | OP_PONG, &big)),
                (
                    "126-byte close",
                    frame(FIN | OP_CLOSE, &close_payload(1000, &big[..124])),
                ),
            ],
            1002,
        )
        .await;
    })
    .await;
}

#[tokio::test]
async fn masked_server_frames_close_with_1002() {
    bounded(30, async {
        // RFC 6455 §5.1: a client must close on a masked frame.
        let msg = server_event("X", Value::Nil);
        let mask = [0x11, 0x22, 0x33, 0x44];
        let mut raw = vec![FIN | OP_BIN, 0x80 | msg.len() as u8];
        raw.extend_from_slice(&mask);
        raw.extend(msg.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
        let mut ping = vec![FIN | OP_PING, 0x80 | 4];
        ping.extend_from_slice(&mask);
        ping.extend(b"ping".iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
        each_closes_with_protocol(
            vec![("masked binary frame", raw), ("masked ping", ping)],
            1002,
        )
        .await;
    })
    .await;
}

#[tokio::test]
async fn malformed_close_frames_close_with_a_protocol_error() {
    bounded(30, async {
        each_closes_with_protocol(
            vec![("1-byte close payload", frame(FIN | OP_CLOSE, &[0x03]))],
            1002,
        )
        .await;
        each_closes_with_protocol(
            vec![(
                "close reason not UTF-8",
                frame(FIN | OP_CLOSE, &close_payload(1000, b"\xff\xfe")),
            )],
            1007,
        )
        .await;
        // Issue 14, item 11: codes that may not appear on the wire (RFC
        // 6455 §7.4) were accepted as ordinary closes.
        let invalid = [0u16, 999, 1004, 1005, 1006, 1015, 2999, 5000, 65535];
        each_closes_with_protocol(
            invalid
                .iter()
                .map(|&c| {
                    (
                        "a close code that may not be sent",
                        frame(FIN | OP_CLOSE, &close_payload(c, b"")),
                    )
                })
                .collect(),
            1002,
        )
        .await;
    })
    .await;
}

#[tokio::test]
async fn invalid_utf8_text_frames_close_with_1007() {
    bounded(30, async {
        let bad = br#"{"etype": "T", "data": "caf"#;
        let mut single = bad.to_vec();
        single.extend_from_slice(b"\xe9\"}");
        // The same split over fragments (each fragment alone could still be
        // the start of a valid message).
        let mut fragmented = frame(OP_TEXT, bad);
        fragmented.extend(frame(FIN | OP_CONT, b"\xe9\"}"));
        each_closes_with_protocol(
            vec![
                ("invalid UTF-8 in a text frame", text(&single)),
                ("invalid UTF-8 in a fragmented text message", fragmented),
            ],
            1007,
        )
        .await;
    })
    .await;
}

// ---------------------------------------------------------------------------
// Floods: memory bounded by the inbound queue limits
// ---------------------------------------------------------------------------

/// Writes `n` events (`etype`, data = index, `pad` bytes of padding) in one
/// go, then an `END` event.
fn flood(n: usize, etype: &str, pad: usize) -> Bytes {
    let mut raw = Vec::new();
    for i in 0..n {
        let data = Value::map([
            ("i", Value::from(i as u64)),
            ("pad", Value::Bin(vec![0; pad])),
        ]);
        raw.extend(binary(&server_event(etype, data)));
    }
    raw.extend(good("END", n as i64));
    Bytes::from(raw)
}

#[tokio::test]
async fn a_message_flood_is_bounded_by_the_inbound_queue() {
    bounded(60, async {
        // Bounded in events (drop-oldest is the default policy).
        let (server, mut client) = start_with(|b| b.inbound_limits(16, 1 << 20)).await;
        let mut end = client.subscribe("END");
        const N: usize = 20_000;
        server.send_raw(flood(N, "FLOOD", 0));
        assert_eq!(
            end.recv().await.unwrap().data().unwrap(),
            Value::Int(N as i64)
        );
        let s = client.stats();
        assert_eq!(s.received, N as u64 + 1);
        assert_eq!(s.inbound_queued, 16);
        assert_eq!(s.inbound_dropped, (N - 16) as u64);
        assert_eq!(s.decode_errors, 0);
        // What is left is the newest, in order.
        for i in N - 16..N {
            let ev = client.try_recv().unwrap();
            assert_eq!(ev.data().unwrap()["i"], Value::from(i as u64));
        }
        assert!(client.try_recv().is_none());
        assert!(client.is_connected());
        drop(end);

        // Bounded in bytes: 4 KiB events into a 64 KiB queue.
        let (server, mut client) = start_with(|b| b.inbound_limits(100_000, 64 << 10)).await;
        let mut end = client.subscribe("END");
        server.send_raw(flood(2_000, "BIG", 4096));
        end.recv().await.unwrap();
        let s = client.stats();
        assert!(s.inbound_queued <= 16, "{s:?}");
        assert_eq!(s.inbound_dropped, 2_000 - s.inbound_queued);
        let mut bytes = 0;
        while let Some(ev) = client.try_recv() {
            bytes += ev.len();
        }
        assert!(bytes <= 64 << 10, "{bytes}");

        // Subscriptions are bounded the same way.
        let (server, client) = start_with(|b| b.inbound_limits(8, 1 << 20)).await;
        let mut sub = client.subscribe("FLOOD");
        let mut end = client.subscribe("END");
        server.send_raw(flood(5_000, "FLOOD", 0));
        end.recv().await.unwrap();
        let s = client.stats();
        assert_eq!(s.inbound_dropped, 5_000 - 8);
        let mut left = 0;
        while sub.try_recv().is_some() {
            left += 1;
        }
        assert_eq!(left, 8);
    })
    .await;
}

#[tokio::test]
async fn backpressure_stops_reading_and_resumes_without_a_keepalive_timeout() {
    bounded(60, async {
        let keepalive = Duration::from_millis(400);
        let (server, mut client) = start_with(|b| {
            b.inbound_policy(InboundPolicy::Backpressure)
                .inbound_limits(4, 1 << 20)
                // No pings: nothing but inbound frames keeps the connection
                // alive, so only the paused state can explain surviving.
                .ping_interval(None)
                .keepalive_timeout(Some(keepalive))
        })
        .await;
        const N: usize = 200;
        server.send_raw(flood(N, "BP", 0));
        // The queue fills, then reading stops.
        let t = Instant::now();
        while client.stats().inbound_queued < 4 {
            assert!(t.elapsed() < Duration::from_secs(5));
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        // Well past the keepalive timeout (the check runs every second):
        // still connected, nothing dropped, reading still paused.
        tokio::time::sleep(keepalive * 6).await;
        let s = client.stats();
        assert!(client.is_connected(), "{:?}", client.state());
        assert_eq!((s.inbound_queued, s.inbound_dropped), (4, 0));
        assert!(s.received <= 5, "{s:?}");
        // Reading resumes as the application reads: everything arrives, in
        // order.
        for i in 0..N {
            let ev = client.recv_timeout(Duration::from_secs(5)).await.unwrap();
            assert_eq!(ev.data().unwrap()["i"], Value::from(i as u64));
        }
        assert_eq!(
            client
                .recv_timeout(Duration::from_secs(5))
                .await
                .unwrap()
                .etype(),
            "END"
        );
        assert_eq!(client.stats().inbound_dropped, 0);
        // Once nothing arrives any more and reading is not paused, keepalive
        // applies again: the test can tell the difference.
        assert_eq!(
            bounded(10, closed(&client)).await,
            Disconnect::KeepaliveTimeout(keepalive)
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backpressure_does_not_stall_the_outgoing_stream() {
    // Issue 13, item 2: with reading paused, the pongs that confirm
    // reliable events wait unread; once the confirmation budget (here 300
    // events) was full, the client stopped writing while still
    // `connected`. Now what the server's TCP stack acknowledged counts.
    bounded(60, async {
        let (server, mut client) = start_with(|b| {
            b.inbound_policy(InboundPolicy::Backpressure)
                .inbound_limits(4, 1 << 20)
                .max_queued_events(300)
        })
        .await;
        server.send_raw(flood(200, "BP", 0));
        let t = Instant::now();
        while client.stats().inbound_queued < 4 {
            assert!(t.elapsed() < Duration::from_secs(5));
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        const N: u64 = 3_000;
        for i in 0..N {
            let ev = DynEvent::new("OUT").value(Value::from(i)).reliable();
            client.send(&ev).await.unwrap();
        }
        assert!(
            server
                .wait_until(|s| s.events > N, Duration::from_secs(20))
                .await,
            "the server got {} of {N} while the client's reading was paused: {:?}",
            server.stats().events.saturating_sub(1),
            client.stats()
        );
        let s = client.stats();
        assert!(client.is_connected());
        assert_eq!(s.inbound_dropped, 0);
        assert!(s.received <= 5, "reading stayed paused: {s:?}");
        // The application reads again: everything inbound arrives too.
        for i in 0..200u64 {
            let ev = client.recv_timeout(Duration::from_secs(5)).await.unwrap();
            assert_eq!(ev.data().unwrap()["i"], Value::from(i));
        }
        client.close().await.unwrap();
    })
    .await;
}

/// CPU time used by this process's threads whose name starts with `prefix`.
fn thread_cpu(prefix: &str) -> Duration {
    let tick = 100.0; // USER_HZ
    let mut total = 0.0;
    for task in std::fs::read_dir("/proc/self/task").unwrap().flatten() {
        let comm = std::fs::read_to_string(task.path().join("comm")).unwrap_or_default();
        if !comm.starts_with(prefix) {
            continue;
        }
        let stat = std::fs::read_to_string(task.path().join("stat")).unwrap_or_default();
        // Fields after the command (which is in parentheses).
        let rest = &stat[stat.rfind(')').map_or(0, |i| i + 2)..];
        let f: Vec<&str> = rest.split_whitespace().collect();
        if f.len() > 12 {
            let utime: f64 = f[11].parse().unwrap_or(0.0);
            let stime: f64 = f[12].parse().unwrap_or(0.0);
            total += (utime + stime) / tick;
        }
    }
    Duration::from_secs_f64(total)
}

#[test]
fn backpressure_waits_for_room_for_the_whole_event() {
    // A queue with room for more events but not for the next event's bytes
    // must make the decoder wait, not spin. Its own runtime, with named
    // threads, so that its CPU time can be measured.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("bp-spin-check")
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(bounded(60, async {
        let (server, mut client) = start_with(|b| {
            b.inbound_policy(InboundPolicy::Backpressure)
                .inbound_limits(100, 10_000)
        })
        .await;
        let mut raw = Vec::new();
        for i in 0..3u64 {
            let data = Value::map([("i", Value::from(i)), ("pad", Value::Bin(vec![1; 4000]))]);
            raw.extend(binary(&server_event("BP", data)));
        }
        server.send_raw(Bytes::from(raw));
        let t = Instant::now();
        while client.stats().received < 2 {
            assert!(t.elapsed() < Duration::from_secs(5));
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        // Two events (8 kB) are queued; the third does not fit. Give the
        // decoder time: waiting costs no CPU, spinning costs all of it.
        tokio::time::sleep(Duration::from_millis(100)).await;
        let before = thread_cpu("bp-spin-check");
        tokio::time::sleep(Duration::from_millis(600)).await;
        let used = thread_cpu("bp-spin-check") - before;
        let queued = client.stats().inbound_queued;
        // Drain before asserting, so that a spinning decoder stops and the
        // runtime can shut down even when the test fails.
        for i in 0..3u64 {
            let ev = client.recv_timeout(Duration::from_secs(5)).await.unwrap();
            assert_eq!(ev.data().unwrap()["i"], Value::from(i));
        }
        assert!(
            used < Duration::from_millis(200),
            "the decoder spins: {used:?} of CPU in 600 ms"
        );
        assert_eq!(queued, 2);
        assert_eq!(client.stats().inbound_dropped, 0);
    }));
}

/// Reads one (masked) client frame: (first byte, unmasked payload).
async fn read_client_frame(s: &mut TcpStream) -> std::io::Result<(u8, Vec<u8>)> {
    let mut h = [0u8; 2];
    s.read_exact(&mut h).await?;
    assert!(h[1] & 0x80 != 0, "client frames must be masked");
    let len = match h[1] & 0x7f {
        126 => {
            let mut b = [0u8; 2];
            s.read_exact(&mut b).await?;
            u16::from_be_bytes(b) as usize
        }
        127 => {
            let mut b = [0u8; 8];
            s.read_exact(&mut b).await?;
            u64::from_be_bytes(b) as usize
        }
        n => n as usize,
    };
    let mut mask = [0u8; 4];
    s.read_exact(&mut mask).await?;
    let mut payload = vec![0u8; len];
    s.read_exact(&mut payload).await?;
    for (i, b) in payload.iter_mut().enumerate() {
        *b ^= mask[i % 4];
    }
    Ok((h[0], payload))
}

/// Reads client frames until one with `opcode` arrives.
async fn next_client_frame(s: &mut TcpStream, opcode: u8) -> Vec<u8> {
    loop {
        let (b0, payload) = read_client_frame(s).await.unwrap();
        if b0 & 0x0f == opcode {
            return payload;
        }
    }
}

#[tokio::test(flavor = "current_thread")]
async fn a_ping_flood_is_answered_with_the_latest_ping_only() {
    bounded(30, async {
        let peer = RawPeer::bind().await;
        let (client, mut s) = tokio::join!(
            VuerClient::builder()
                .uri(peer.uri())
                .reconnect(None)
                .ping_interval(None)
                .connect(),
            peer.accept()
        );
        let mut client = client.unwrap();
        const N: u64 = 20_000;
        let mut raw = Vec::new();
        for i in 0..N {
            raw.extend(frame(FIN | OP_PING, &i.to_be_bytes()));
        }
        raw.extend(good("AFTER", 1));
        s.write_all(&raw).await.unwrap();
        // Pongs arrive, each for a ping at least as recent as the one
        // before, the last for the last ping.
        let mut pongs = 0u64;
        let mut last = None;
        loop {
            let p = next_client_frame(&mut s, OP_PONG).await;
            let n = u64::from_be_bytes(p.try_into().expect("pong echoes an 8-byte ping"));
            assert!(n < N);
            assert!(last.map_or(true, |l| n > l), "{n} after {last:?}");
            last = Some(n);
            pongs += 1;
            if n == N - 1 {
                break;
            }
        }
        assert!(pongs < N / 10, "{pongs} pongs for {N} pings: not coalesced");
        // The connection is fine.
        let ev = client.recv_timeout(Duration::from_secs(5)).await.unwrap();
        assert_eq!(ev.etype(), "AFTER");
        assert!(client.is_connected());
        assert_eq!(client.stats().decode_errors, 0);
    })
    .await;
}

// ---------------------------------------------------------------------------
// Keepalive and close
// ---------------------------------------------------------------------------

#[tokio::test]
async fn pings_are_sent_at_the_ping_interval() {
    bounded(30, async {
        let every = Duration::from_millis(100);
        let t = Instant::now();
        // Pacing off: its probes (pings after writes) would add to the
        // keepalive pings this test counts.
        let (server, client) = start_with(|b| b.ping_interval(Some(every)).pacing(None)).await;
        assert!(
            server
                .wait_until(|s| s.pings >= 4, Duration::from_secs(10))
                .await
        );
        // The fourth ping leaves no earlier than four intervals after
        // connecting.
        assert!(t.elapsed() >= every * 4, "{:?}", t.elapsed());
        // The server answers each; the client counts them.
        let t = Instant::now();
        while client.stats().pongs_received < 3 {
            assert!(t.elapsed() < Duration::from_secs(5));
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let s = client.stats();
        assert!(s.pings_sent >= 4, "{s:?}");
        assert!(client.is_connected());
        // Without keepalive pings (and pacing, whose probes follow
        // writes), none are sent.
        let (server, _client) = start_with(|b| b.ping_interval(None).pacing(None)).await;
        tokio::time::sleep(every * 4).await;
        assert_eq!(server.stats().pings, 0);
    })
    .await;
}

#[tokio::test]
async fn a_silent_peer_is_declared_dead_after_the_keepalive_timeout() {
    bounded(30, async {
        // The peer upgrades, then neither reads nor answers: its kernel
        // still acknowledges the client's pings, but no frame ever arrives.
        let peer = RawPeer::bind().await;
        let timeout = Duration::from_millis(600);
        let (client, s) = tokio::join!(
            VuerClient::builder()
                .uri(peer.uri())
                .reconnect(None)
                .ping_interval(Some(Duration::from_millis(100)))
                .keepalive_timeout(Some(timeout))
                .connect(),
            peer.accept()
        );
        let client = client.unwrap();
        let t = Instant::now();
        let reason = closed(&client).await;
        assert_eq!(reason, Disconnect::KeepaliveTimeout(timeout));
        assert!(t.elapsed() >= timeout, "{:?}", t.elapsed());
        assert!(client.stats().pings_sent >= 3);
        assert!(matches!(
            client.state(),
            ConnectionState::Closed(Disconnect::KeepaliveTimeout(_))
        ));
        drop(s);
    })
    .await;
}

#[tokio::test]
async fn server_pings_are_answered_with_their_payload() {
    bounded(30, async {
        let peer = RawPeer::bind().await;
        let (client, mut s) = tokio::join!(
            VuerClient::builder()
                .uri(peer.uri())
                .reconnect(None)
                .ping_interval(None)
                .connect(),
            peer.accept()
        );
        let client = client.unwrap();
        // INIT comes first.
        let (b0, init) = read_client_frame(&mut s).await.unwrap();
        assert_eq!(b0, FIN | OP_BIN);
        assert_eq!(
            ServerEvent::from_msgpack(init.into()).unwrap().etype(),
            "INIT"
        );
        for payload in [&b"hello"[..], b"", &[0xff; 125]] {
            s.write_all(&frame(FIN | OP_PING, payload)).await.unwrap();
            // The client's own pings (pacing probes) may come first.
            let (b0, pong) = loop {
                let (b0, p) = read_client_frame(&mut s).await.unwrap();
                if b0 != FIN | OP_PING {
                    break (b0, p);
                }
            };
            assert_eq!(b0, FIN | OP_PONG);
            assert_eq!(pong, payload);
        }
        assert!(client.is_connected());
    })
    .await;
}

#[tokio::test]
async fn server_close_frames_are_answered_and_reported() {
    bounded(60, async {
        // (payload sent, reason reported, code of the client's answer)
        let cases = [
            (close_payload(1000, b"done"), 1000, "done", 1000),
            (close_payload(1001, b"going away"), 1001, "going away", 1001),
            (
                close_payload(1011, b"internal error"),
                1011,
                "internal error",
                1011,
            ),
            (close_payload(4001, b""), 4001, "", 4001),
            // No code at all is allowed (reported as 1005).
            (vec![], 1005, "", 1000),
        ];
        for (payload, code, reason, answer) in cases {
            let (server, mut client) = start().await;
            let got = closes_with(&server, &client, frame(FIN | OP_CLOSE, &payload), answer).await;
            assert_eq!(
                got,
                Disconnect::ServerClosed {
                    code,
                    reason: reason.into()
                }
            );
            assert!(client.recv().await.is_none());
        }
    })
    .await;
}

// ---------------------------------------------------------------------------
// RPC
// ---------------------------------------------------------------------------

/// An RPC request as `ServerRPC` sends it (`uuid, ts, data, etype, key,
/// rtype`), without `rtype` or `key` when `None`.
fn rpc_request(etype: &str, uuid: &str, key: Option<&str>, rtype: Option<&str>) -> Bytes {
    let mut entries = vec![
        ("uuid", Value::from(uuid)),
        ("ts", Value::from(1_700_000_000_500u64)),
        ("data", Value::map([("quality", Value::F32(0.9))])),
        ("etype", Value::from(etype)),
    ];
    if let Some(k) = key {
        entries.push(("key", Value::from(k)));
    }
    if let Some(r) = rtype {
        entries.push(("rtype", Value::from(r)));
    }
    Bytes::from(Value::map(entries).to_msgpack())
}

/// The next event the server receives after INIT with etype `etype`.
async fn server_got(server: &LocalServer, etype: &str) -> ServerEvent {
    let etype = etype.to_owned();
    let t = Instant::now();
    loop {
        if let Some(r) = server
            .received()
            .into_iter()
            .find(|r| r.event.etype() == etype)
        {
            return r.event;
        }
        assert!(
            t.elapsed() < Duration::from_secs(5),
            "the server never got {etype}"
        );
        let n = server.stats().events;
        server
            .wait_until(|s| s.events > n, Duration::from_millis(200))
            .await;
    }
}

#[tokio::test]
async fn rpc_without_rtype_is_answered_on_the_fallback_etype() {
    bounded(30, async {
        let (server, mut client) = start().await;
        let uuid = "00000000-0000-4000-8000-000000000001";
        server.broadcast(rpc_request("RPC", uuid, Some("cam"), None));
        let req = client.recv_timeout(Duration::from_secs(5)).await.unwrap();
        assert!(req.is_rpc());
        assert_eq!(req.uuid(), Some(uuid));
        assert_eq!(req.rtype(), None);
        assert_eq!(req.key(), Some("cam"));
        let fallback = format!("RPC_RESPONSE@{uuid}");
        assert_eq!(req.reply_etype().as_deref(), Some(fallback.as_str()));
        assert_eq!(req.data().unwrap()["quality"], Value::F32(0.9));
        client
            .respond(&req, Value::map([("ok", true.into())]))
            .unwrap();
        let answer = server_got(&server, &fallback).await;
        assert_eq!(answer.key(), Some("cam"));
        assert_eq!(answer.data().unwrap(), Value::map([("ok", true.into())]));

        // Without a key, none is echoed.
        let uuid2 = "00000000-0000-4000-8000-000000000002";
        server.broadcast(rpc_request("GET_THING", uuid2, None, None));
        let req = client.recv_timeout(Duration::from_secs(5)).await.unwrap();
        client.respond(&req, 7).unwrap();
        let answer = server_got(&server, &format!("GET_THING_RESPONSE@{uuid2}")).await;
        assert_eq!(answer.key(), None);
        assert_eq!(answer.data().unwrap(), Value::Int(7));

        // Not an RPC: no reply etype.
        server.broadcast_event("SET", Value::Nil);
        let ev = client.recv_timeout(Duration::from_secs(5)).await.unwrap();
        assert!(!ev.is_rpc());
        assert_eq!(ev.reply_etype(), None);
    })
    .await;
}

#[tokio::test]
async fn rpc_answerers_use_rtype_or_the_fallback_and_echo_the_key() {
    bounded(30, async {
        let (server, mut client) = start().await;
        client.answer_rpc("GRAB_*", |req| {
            Some(Value::map([(
                "asked",
                Value::from(req.data().ok()?["quality"].as_f64()? > 0.5),
            )]))
        });
        client.answer_rpc("IGNORED", |_| None);
        let u1 = "11111111-0000-4000-8000-000000000001";
        let rtype = format!("GRAB_RENDER_RESPONSE@{u1}");
        server.broadcast(rpc_request(
            "GRAB_RENDER",
            u1,
            Some("DEFAULT"),
            Some(&rtype),
        ));
        let answer = server_got(&server, &rtype).await;
        assert_eq!(answer.key(), Some("DEFAULT"));
        assert_eq!(answer.data().unwrap()["asked"], Value::Bool(true));

        // No rtype: the fallback etype; key echoed.
        let u2 = "11111111-0000-4000-8000-000000000002";
        server.broadcast(rpc_request("GRAB_DEPTH", u2, Some("cam-2"), None));
        let answer = server_got(&server, &format!("GRAB_DEPTH_RESPONSE@{u2}")).await;
        assert_eq!(answer.key(), Some("cam-2"));

        // An answerer that declines sends nothing; the request is consumed.
        server.broadcast(rpc_request("IGNORED", "u3", None, None));
        server.broadcast_event("AFTER", Value::Nil);
        assert_eq!(
            client
                .recv_timeout(Duration::from_secs(5))
                .await
                .unwrap()
                .etype(),
            "AFTER"
        );
        assert_eq!(client.stats().rpc_answered, 2);
        // Answered requests were not queued for recv.
        assert!(client.try_recv().is_none());
        // A request the answerers do not match still reaches recv.
        server.broadcast(rpc_request("OTHER", "u4", None, Some("OTHER_RESPONSE@u4")));
        let req = client.recv_timeout(Duration::from_secs(5)).await.unwrap();
        assert_eq!(req.reply_etype().as_deref(), Some("OTHER_RESPONSE@u4"));
        client.respond(&req, "by hand").unwrap();
        // Everything the client sent before DONE has arrived once DONE has:
        // nothing answered the declined request.
        client.publish(&DynEvent::new("DONE")).unwrap();
        server_got(&server, "DONE").await;
        let etypes: Vec<String> = server
            .received()
            .iter()
            .map(|r| r.event.etype().to_owned())
            .collect();
        assert_eq!(
            etypes,
            [
                "INIT".to_owned(),
                rtype,
                format!("GRAB_DEPTH_RESPONSE@{u2}"),
                "OTHER_RESPONSE@u4".to_owned(),
                "DONE".to_owned()
            ]
        );
    })
    .await;
}

#[tokio::test]
async fn a_panicking_rpc_answerer_is_reported_and_the_connection_goes_on() {
    // Issue 14, item 5: a panic in an RPC answerer ended the connection as
    // "closed by the client".
    bounded(30, async {
        let (server, mut client) = start().await;
        client.answer_rpc("GRAB_*", |_| panic!("the answerer's own bug"));
        server.broadcast(rpc_request("GRAB_RENDER", "u1", None, None));
        server.broadcast_event("AFTER", Value::Nil);
        let ev = client.recv_timeout(Duration::from_secs(5)).await.unwrap();
        assert_eq!(ev.etype(), "AFTER");
        assert!(client.is_connected(), "{:?}", client.state());
        let s = client.stats();
        assert_eq!(s.rpc_answered, 0);
        let err = s.last_error.unwrap_or_default();
        assert!(
            err.contains("panicked") && err.contains("the answerer's own bug"),
            "{err}"
        );
        client.close().await.unwrap();
    })
    .await;
}
