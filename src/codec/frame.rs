//! Client-side websocket framing into a buffer we own: header, 4-byte mask
//! and in-place XOR, so a whole batch of frames is one contiguous buffer and
//! one write.
//!
//! fastwebsockets' own write path copies every payload twice, which for
//! 60-byte frames costs more than encoding the event (see
//! `PERF_NOTES.md`).
//!
//! Masks come from a cryptographic generator: RFC 6455 §10.3 requires
//! masking keys that an attacker cannot predict from earlier frames (it
//! protects intermediaries from cache poisoning by hostile scripts). An
//! earlier xorshift64* seeded once per connection did not meet that (its
//! state follows from a few outputs). `rand`'s `StdRng` (ChaCha12, seeded
//! from the operating system per connection) generates 64 words per block,
//! so a mask costs a buffer read most of the time: 2.59–2.64 ns against
//! 1.85 ns for the xorshift (`cargo bench --bench engine -- mask`, same
//! run), well under 1 % of what an event costs end to end (~60 ns).

use rand::{rngs::StdRng, RngCore, SeedableRng};

/// Websocket opcodes we write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub(crate) enum Opcode {
    Binary = 0x2,
    Close = 0x8,
    Ping = 0x9,
    Pong = 0xa,
}

/// Size of the header for a payload of `len` bytes (client, masked).
#[cfg(test)]
fn header_len(len: usize) -> usize {
    if len < 126 {
        6
    } else if len <= u16::MAX as usize {
        8
    } else {
        14
    }
}

/// Masking keys from a cryptographic generator (see the module docs).
pub(crate) struct MaskRng(StdRng);

// The generator must stay a cryptographic one (RFC 6455 §10.3): this does
// not compile for one that is not.
const _: fn() = || {
    fn cryptographic<R: rand::CryptoRng>() {}
    cryptographic::<StdRng>();
};

impl std::fmt::Debug for MaskRng {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Its state would predict every mask: never shown.
        f.write_str("MaskRng")
    }
}

impl MaskRng {
    /// Seeded from the operating system's randomness.
    pub(crate) fn from_os() -> Self {
        MaskRng(StdRng::from_entropy())
    }

    #[inline]
    pub(crate) fn next_mask(&mut self) -> [u8; 4] {
        self.0.next_u32().to_ne_bytes()
    }
}

/// Appends a frame header (FIN set) for a payload of `len` bytes with
/// `mask`, and returns where the payload will start.
#[inline]
pub(crate) fn write_header(out: &mut Vec<u8>, opcode: Opcode, len: usize, mask: [u8; 4]) -> usize {
    out.push(0x80 | opcode as u8);
    if len < 126 {
        out.push(0x80 | len as u8);
    } else if len <= u16::MAX as usize {
        out.push(0x80 | 126);
        out.extend_from_slice(&(len as u16).to_be_bytes());
    } else {
        out.push(0x80 | 127);
        out.extend_from_slice(&(len as u64).to_be_bytes());
    }
    out.extend_from_slice(&mask);
    out.len()
}

/// Masks `out[start..]` in place: 8 bytes at a time (the compiler turns
/// the loop into vector code), then the few bytes left.
#[inline]
pub(crate) fn mask_tail(out: &mut [u8], start: usize, mask: [u8; 4]) {
    let payload = &mut out[start..];
    let m = u32::from_ne_bytes(mask) as u64;
    let m64 = m | (m << 32);
    let mut chunks = payload.chunks_exact_mut(8);
    for c in &mut chunks {
        let v = u64::from_ne_bytes((&*c).try_into().expect("8 bytes")) ^ m64;
        c.copy_from_slice(&v.to_ne_bytes());
    }
    let rest = chunks.into_remainder();
    if !rest.is_empty() {
        // The last 1-7 bytes: one 8-byte XOR on a padded copy.
        let mut tmp = [0u8; 8];
        tmp[..rest.len()].copy_from_slice(rest);
        let v = u64::from_ne_bytes(tmp) ^ m64;
        rest.copy_from_slice(&v.to_ne_bytes()[..rest.len()]);
    }
}

/// Appends `src` masked with `mask` as if it started `phase` bytes into a
/// frame's payload. Copied and masked a cache-sized piece at a time, so
/// each byte is read from memory once (copying the whole payload and then
/// masking it read a large payload twice).
#[inline]
pub(crate) fn extend_masked(out: &mut Vec<u8>, src: &[u8], mask: [u8; 4], phase: usize) {
    const PIECE: usize = 16 << 10;
    let mask = [
        mask[phase & 3],
        mask[(phase + 1) & 3],
        mask[(phase + 2) & 3],
        mask[(phase + 3) & 3],
    ];
    out.reserve(src.len());
    // Pieces are a multiple of 4 bytes: the mask's phase is the same for
    // each.
    for piece in src.chunks(PIECE) {
        let start = out.len();
        out.extend_from_slice(piece);
        mask_tail(out, start, mask);
    }
}

/// Appends a whole masked control frame (payload at most 125 bytes).
pub(crate) fn write_control(out: &mut Vec<u8>, opcode: Opcode, payload: &[u8], mask: [u8; 4]) {
    let payload = &payload[..payload.len().min(125)];
    let start = write_header(out, opcode, payload.len(), mask);
    out.extend_from_slice(payload);
    mask_tail(out, start, mask);
}

/// Appends a masked close frame with `code` and `reason` (truncated to fit).
pub(crate) fn write_close(out: &mut Vec<u8>, code: u16, reason: &str, mask: [u8; 4]) {
    let mut payload = Vec::with_capacity(2 + reason.len());
    payload.extend_from_slice(&code.to_be_bytes());
    // At most 123 bytes, cut at a character boundary (slicing a `str`
    // inside a character panics).
    let mut end = reason.len().min(123);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    let r = &reason[..end];
    payload.extend_from_slice(r.as_bytes());
    write_control(out, Opcode::Close, &payload, mask);
}

/// Test helper: checks that `frame` is exactly one final, masked client
/// frame and returns its (opcode, unmasked payload).
#[cfg(test)]
pub(crate) fn unframe(frame: &[u8]) -> (u8, Vec<u8>) {
    let op = frame[0] & 0x0f;
    assert_eq!(frame[0] & 0x80, 0x80, "FIN");
    assert_eq!(frame[1] & 0x80, 0x80, "masked");
    let (len, off) = match frame[1] & 0x7f {
        126 => (u16::from_be_bytes([frame[2], frame[3]]) as usize, 4),
        127 => (
            u64::from_be_bytes(frame[2..10].try_into().unwrap()) as usize,
            10,
        ),
        n => (n as usize, 2),
    };
    let mask = &frame[off..off + 4];
    assert_eq!(frame.len(), off + 4 + len, "one frame exactly");
    let data = frame[off + 4..]
        .iter()
        .enumerate()
        .map(|(i, b)| b ^ mask[i & 3])
        .collect();
    (op, data)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_of_every_length_class_round_trip() {
        let mut rng = MaskRng::from_os();
        for len in [0usize, 1, 3, 16, 17, 125, 126, 65535, 65536, 70000] {
            let payload: Vec<u8> = (0..len).map(|i| (i * 7) as u8).collect();
            let mut out = Vec::new();
            let mask = rng.next_mask();
            let start = write_header(&mut out, Opcode::Binary, len, mask);
            assert_eq!(start, header_len(len));
            out.extend_from_slice(&payload);
            mask_tail(&mut out, start, mask);
            let (op, data) = unframe(&out);
            assert_eq!(op, 2);
            assert_eq!(data, payload);
        }
    }

    #[test]
    fn close_frame_carries_code_and_reason() {
        let mut out = Vec::new();
        write_close(&mut out, 1000, "bye", [1, 2, 3, 4]);
        let (op, data) = unframe(&out);
        assert_eq!(op, 8);
        assert_eq!(&data[..2], &1000u16.to_be_bytes());
        assert_eq!(&data[2..], b"bye");
    }

    #[test]
    fn a_long_close_reason_is_cut_at_a_character_boundary() {
        // Issue 14, item 13: the reason was sliced at byte 123, inside a
        // character: a panic.
        let reason = "é".repeat(100);
        let mut out = Vec::new();
        write_close(&mut out, 1000, &reason, [1, 2, 3, 4]);
        let (_, data) = unframe(&out);
        assert!(data.len() <= 125);
        let cut = std::str::from_utf8(&data[2..]).unwrap();
        assert!(reason.starts_with(cut) && cut.len() >= 122, "{}", cut.len());
    }

    #[test]
    fn masks_vary() {
        let mut rng = MaskRng::from_os();
        let a = rng.next_mask();
        let b = rng.next_mask();
        assert_ne!(a, b);
    }
}
