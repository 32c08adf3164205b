//! Entry points for fuzzing the frame layer: the `cargo fuzz` targets in
//! `fuzz/` and the bounded property tests in `tests/fuzz_frames.rs` feed
//! arbitrary bytes through the same readers the client and the embedded
//! server use. Not part of the API.

use crate::codec::inframe::{op, parse_head, FrameError, FrameReader, Sender, READ_CHUNK};

/// What one run over an input saw.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Outcome {
    /// Whole frames read.
    pub frames: usize,
    /// Whole messages (a data frame with FIN, or a fragmented message's
    /// last continuation) reassembled.
    pub messages: usize,
    /// The input was refused (a close with 1002 or 1009 would follow).
    pub refused: bool,
    /// The reader's largest buffer capacity, bytes.
    pub peak_capacity: usize,
}

/// Frames a client reads from a server (unmasked), out of `data` cut into
/// reads whose sizes the first byte picks. Panics if an invariant breaks:
/// a frame's form not checked, or memory beyond what the input justifies.
pub fn server_to_client(data: &[u8]) -> Outcome {
    read_all(data, Sender::Server)
}

/// The same for what a server reads from a client (masked frames), and the
/// embedded server's counting sink's header scan on the same input.
pub fn client_to_server(data: &[u8]) -> Outcome {
    let out = read_all(data, Sender::Client);
    // The counting sink parses headers straight from its reads.
    let Some((_, rest)) = data.split_first() else {
        return out;
    };
    let mut pos = 0usize;
    while pos < rest.len() {
        match parse_head(&rest[pos..], Sender::Client, 1 << 20) {
            Ok(Some(h)) => {
                let skip = h.head_len.saturating_add(h.len as usize);
                assert!(h.len <= 1 << 20);
                pos = pos.saturating_add(skip);
            }
            Ok(None) | Err(_) => break,
        }
    }
    out
}

fn read_all(data: &[u8], from: Sender) -> Outcome {
    let Some((&selector, stream)) = data.split_first() else {
        return Outcome::default();
    };
    // Reads of 1 to 256 bytes, or of everything at once.
    let step = match selector {
        0 => stream.len().max(1),
        s => s as usize,
    };
    let limit = 64 << 10;
    let mut reader = FrameReader::new(from, limit);
    let mut out = Outcome::default();
    let mut partial: Option<usize> = None;
    let mut fed = 0usize;
    for chunk in stream.chunks(step) {
        reader.reserve_for_read();
        reader.buffer().extend_from_slice(chunk);
        fed += chunk.len();
        out.peak_capacity = out.peak_capacity.max(reader.capacity());
        // Memory follows what arrived (a chunk of read-ahead, and the
        // buffer's doubling), never what a header declared.
        assert!(
            reader.capacity() <= 2 * (fed + 2 * READ_CHUNK) + (16 << 10),
            "capacity {} after {fed} bytes",
            reader.capacity()
        );
        loop {
            match reader.next_frame() {
                Ok(Some(f)) => {
                    out.frames += 1;
                    assert!(f.payload.len() <= limit);
                    match f.opcode {
                        op::CLOSE | op::PING | op::PONG => {
                            assert!(f.fin && f.payload.len() <= 125);
                        }
                        op::CONTINUATION => match partial.as_mut() {
                            Some(len) => {
                                *len += f.payload.len();
                                if f.fin {
                                    partial = None;
                                    out.messages += 1;
                                }
                            }
                            None => {
                                out.refused = true;
                                return out;
                            }
                        },
                        op::TEXT | op::BINARY => {
                            if partial.is_some() {
                                out.refused = true;
                                return out;
                            }
                            if f.fin {
                                out.messages += 1;
                            } else {
                                partial = Some(f.payload.len());
                            }
                        }
                        other => panic!("opcode {other:#x} got through"),
                    }
                }
                Ok(None) => break,
                Err(FrameError::Protocol(_) | FrameError::TooBig { .. }) => {
                    out.refused = true;
                    return out;
                }
            }
        }
    }
    assert!(reader.buffered() <= stream.len());
    out
}
