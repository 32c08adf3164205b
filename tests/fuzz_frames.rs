//! Property-based fuzzing of the frame layer (proptest): arbitrary bytes,
//! and mutated streams of well-formed frames, through the frame reader the
//! client uses for the server's frames and the one the embedded server uses
//! for the client's (`vuer_client::fuzzing`, shared with the `cargo fuzz`
//! targets in `fuzz/`). Nothing may panic, memory follows the bytes that
//! arrived, and well-formed frames come out whole however the stream is cut.
//!
//! CI runs this for a bounded time. `VUER_FUZZ_SCALE=N` multiplies every
//! case count by N.

use proptest::prelude::*;
use proptest::test_runner::Config;
use vuer_client::fuzzing::{client_to_server, server_to_client};

fn config(cases: u32) -> Config {
    let scale: u32 = std::env::var("VUER_FUZZ_SCALE")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1);
    Config {
        cases: cases.saturating_mul(scale.max(1)),
        ..Config::default()
    }
}

/// One frame: FIN and opcode byte, then length and payload (masked when
/// `mask` is given).
fn frame(first: u8, payload: &[u8], mask: Option<[u8; 4]>) -> Vec<u8> {
    let mut f = vec![first];
    let m = if mask.is_some() { 0x80 } else { 0 };
    match payload.len() {
        n if n < 126 => f.push(m | n as u8),
        n if n <= 0xffff => {
            f.push(m | 126);
            f.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            f.push(m | 127);
            f.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    match mask {
        Some(k) => {
            f.extend_from_slice(&k);
            f.extend(payload.iter().enumerate().map(|(i, b)| b ^ k[i & 3]));
        }
        None => f.extend_from_slice(payload),
    }
    f
}

/// A well-formed stream: data messages (some fragmented) with control
/// frames between, and how many frames and messages it holds.
fn stream(masked: bool) -> impl Strategy<Value = (Vec<u8>, usize, usize)> {
    let part = (
        0usize..3,
        prop::collection::vec(any::<u8>(), 0..300),
        any::<[u8; 4]>(),
        any::<bool>(),
    );
    prop::collection::vec(part, 1..20).prop_map(move |parts| {
        let mut out = Vec::new();
        let (mut frames, mut messages) = (0, 0);
        for (kind, payload, key, text) in parts {
            let mask = masked.then_some(key);
            match kind {
                0 => {
                    let first = if text { 0x81 } else { 0x82 };
                    out.extend(frame(first, &payload, mask));
                    frames += 1;
                    messages += 1;
                }
                1 => {
                    // Three fragments, a ping between.
                    let third = payload.len() / 3;
                    out.extend(frame(0x02, &payload[..third], mask));
                    out.extend(frame(0x89, &payload[..third.min(125)], mask));
                    out.extend(frame(0x00, &payload[third..2 * third], mask));
                    out.extend(frame(0x80, &payload[2 * third..], mask));
                    frames += 4;
                    messages += 1;
                }
                _ => {
                    out.extend(frame(0x8a, &payload[..payload.len().min(125)], mask));
                    frames += 1;
                }
            }
        }
        (out, frames, messages)
    })
}

proptest! {
    #![proptest_config(config(3000))]

    /// Arbitrary bytes, either way: never a panic, memory bounded by what
    /// arrived.
    #[test]
    fn arbitrary_bytes(data in prop::collection::vec(any::<u8>(), 0..4096)) {
        let _ = server_to_client(&data);
        let _ = client_to_server(&data);
    }

    /// Well-formed streams come out whole however they are cut into reads.
    #[test]
    fn well_formed_streams_read_whole(s in stream(false), m in stream(true), step in any::<u8>()) {
        let mut input = vec![step];
        input.extend_from_slice(&s.0);
        let out = server_to_client(&input);
        prop_assert!(!out.refused);
        prop_assert_eq!((out.frames, out.messages), (s.1, s.2));
        let mut input = vec![step];
        input.extend_from_slice(&m.0);
        let out = client_to_server(&input);
        prop_assert!(!out.refused);
        prop_assert_eq!((out.frames, out.messages), (m.1, m.2));
        // The wrong side's frames are refused at the first one.
        let mut input = vec![step];
        input.extend_from_slice(&m.0);
        prop_assert!(server_to_client(&input).refused);
    }

    /// Mutated well-formed streams: header bytes changed, lengths declared
    /// far beyond what follows. Never a panic; a declared length costs
    /// nothing until its bytes arrive.
    #[test]
    fn mutated_streams(s in stream(false), edits in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8), step in any::<u8>()) {
        let mut data = s.0;
        for (at, byte) in edits {
            let i = at.index(data.len());
            data[i] = byte;
        }
        let mut input = vec![step];
        input.extend_from_slice(&data);
        let out = server_to_client(&input);
        prop_assert!(out.peak_capacity <= 2 * (data.len() + (128 << 10)) + (16 << 10));
        let _ = client_to_server(&input);
    }
}

#[test]
fn a_declared_length_beyond_the_input_is_cheap() {
    // 250 MiB declared (the reader's limit here is 64 KiB: refused), and
    // 60 KiB declared with 10 bytes sent (waits, holding little).
    let mut huge = vec![0u8, 0x82, 127];
    huge.extend_from_slice(&(250u64 << 20).to_be_bytes());
    assert!(server_to_client(&huge).refused);
    let mut partial = vec![0u8, 0x82, 126, 0xf0, 0x00];
    partial.extend_from_slice(&[0; 10]);
    let out = server_to_client(&partial);
    assert!(!out.refused && out.frames == 0);
    assert!(out.peak_capacity < 128 << 10, "{}", out.peak_capacity);
}
