//! Model checking (loom) of the hand-offs around the write path: a
//! publishing thread's direct write, the sender task's rounds (taking the
//! wire back, a probe from its timer, pongs, batches, parking) and the
//! decoder queuing a pong, in every interleaving loom explores.
//!
//! The threads run the same steps, in the same order and under the same
//! lock, as `Shared::try_direct`, `sender::run` and the decoder, with the
//! real [`Pending`] and [`Slot`] and the real framing; the socket is a
//! buffer that takes at most a few bytes per write, so every frame goes out
//! in parts. Afterwards the byte stream must split into whole frames, and
//! every event must appear exactly once, in order.
//!
//! Odd-numbered events carry their payload as a large message does: a tail
//! stored masked, which the wire writes from where it lies, between pieces
//! of its own buffer (gathering writes that may end anywhere in a piece).
//!
//! The sender's old bug (a probe appended before it took the wire back,
//! i.e. into a buffer of its own while a direct write was in progress)
//! shows here as a ping inside a data frame: `sender_appends_only_what_it_holds`
//! would fail.

use std::collections::VecDeque;
use std::io::IoSlice;

use bytes::Bytes;

use loom::sync::{Arc, Mutex, Notify};
use loom::thread;

use super::{Pending, Slot};
use crate::codec::{mask_tail, unframe, Header, MaskRng, Opcode, WHOLE};

/// The socket: each write takes at most this many bytes.
const WRITE_CHUNK: usize = 5;

struct Outbox {
    slot: Slot<Pending>,
    /// The sender waits for a wake-up.
    idle: bool,
    /// Events queued: their ids.
    queue: VecDeque<u8>,
    /// A pong owed to the server.
    pong: bool,
    /// The publisher has published everything.
    done: bool,
}

struct Model {
    outbox: Mutex<Outbox>,
    wake: Notify,
    socket: Mutex<Vec<u8>>,
}

/// An event's message: its id, repeated.
fn body(id: u8) -> Vec<u8> {
    vec![id; 3 + id as usize]
}

/// An event's header and tail: the message as a plain tail (even ids) or
/// stored masked (odd ids).
fn message(id: u8) -> (Header, Bytes) {
    let mut h = Header {
        ts_ms: 0,
        entries: WHOLE,
        own_ts: false,
        tail_mask: [0; 4],
    };
    let mut tail = body(id);
    if id % 2 == 1 {
        h.tail_mask = [0x5a ^ id, 0x33, 0xc3, 0x0f];
        mask_tail(&mut tail, 0, h.tail_mask);
    }
    (h, Bytes::from(tail))
}

fn append(w: &mut Pending, id: u8) {
    let (h, tail) = message(id);
    w.data_frame(h, &[], &tail);
}

/// One gathering write: the socket takes at most [`WRITE_CHUNK`] bytes,
/// across the pieces.
fn socket_write(m: &Model, pieces: &[IoSlice<'_>]) -> std::io::Result<usize> {
    let mut socket = m.socket.lock().unwrap();
    let mut n = 0;
    for p in pieces {
        let k = p.len().min(WRITE_CHUNK - n);
        socket.extend_from_slice(&p[..k]);
        n += k;
        if n == WRITE_CHUNK {
            break;
        }
    }
    Ok(n)
}

/// `Shared::publish_with` → `after_push` → `try_direct`, under one lock.
fn publish(m: &Model, id: u8) {
    let wake = {
        let mut ob = m.outbox.lock().unwrap();
        ob.queue.push_back(id);
        let direct = ob.queue.len() == 1 && ob.idle;
        let mut written = false;
        if direct {
            let ob = &mut *ob;
            if let Some(w) = ob.slot.borrow() {
                if w.is_empty() {
                    let mark = w.mark();
                    let id = ob.queue.pop_front().unwrap();
                    append(w, id);
                    w.control(Opcode::Ping, b"probe");
                    match w.write_vectored_with(|s| socket_write(m, s)) {
                        Ok(n) if n > 0 => written = w.is_empty(),
                        _ => {
                            assert!(w.unappend(mark));
                            ob.queue.push_front(id);
                        }
                    }
                }
            }
        }
        // Written whole: nothing for the sender. Otherwise (queued, or
        // written in part) it is woken if idle.
        !written && std::mem::replace(&mut ob.idle, false)
    };
    if wake {
        m.wake.notify();
    }
}

/// The decoder got a ping: a pong is owed (`decoder.rs`, `OpCode::Ping`).
fn ping_arrives(m: &Model) {
    let wake = {
        let mut ob = m.outbox.lock().unwrap();
        ob.pong = true;
        std::mem::replace(&mut ob.idle, false)
    };
    if wake {
        m.wake.notify();
    }
}

/// `sender::run`, with its timer firing once right after it first parks.
fn sender(m: &Model, wire: Pending) {
    let mut held = Some(wire);
    let mut probe_wanted = false;
    let mut timer_fired = false;
    loop {
        if held.is_none() {
            let back = {
                let mut ob = m.outbox.lock().unwrap();
                ob.idle = false;
                ob.slot.take_back()
            };
            held = Some(back.expect("the connection lives"));
        }
        let wire = held.as_mut().unwrap();
        if std::mem::take(&mut probe_wanted) {
            wire.control(Opcode::Ping, b"timer");
        }
        let (batch, pong, parked, done) = {
            let mut ob = m.outbox.lock().unwrap();
            let batch: Vec<u8> = ob.queue.drain(..).collect();
            let pong = std::mem::take(&mut ob.pong);
            let done = ob.done;
            let parked = held.as_ref().unwrap().is_empty() && batch.is_empty() && !pong;
            if parked && !done {
                ob.idle = true;
                ob.slot.park(held.take().unwrap());
            }
            (batch, pong, parked, done)
        };
        if parked {
            if done {
                return;
            }
            if timer_fired {
                m.wake.wait();
            } else {
                // The probe timer: it fires at any point loom chooses
                // relative to the other threads.
                timer_fired = true;
                probe_wanted = true;
            }
            continue;
        }
        let wire = held.as_mut().unwrap();
        if pong {
            wire.control(Opcode::Pong, b"");
        }
        for id in batch {
            append(wire, id);
        }
        wire.control(Opcode::Ping, b"probe");
        while !wire.is_empty() {
            wire.write_vectored_with(|s| socket_write(m, s)).unwrap();
        }
    }
}

/// Splits the stream into frames (each checked by `unframe`) and returns
/// the event ids of the data frames, in order: `data_id` checks a data
/// frame's payload and says whose it is. Pings and pongs may carry
/// `probe`, `timer` or nothing. Shared with `model_realtime`.
pub(super) fn frames_in(stream: &[u8], data_id: impl Fn(&[u8]) -> u8) -> Vec<u8> {
    let mut ids = Vec::new();
    let mut s = stream;
    while !s.is_empty() {
        assert!(s.len() >= 2, "a frame cut short: {stream:?}");
        let len = (s[1] & 0x7f) as usize;
        assert!(len < 126, "no long frames in this model");
        let end = 2 + 4 + len;
        assert!(s.len() >= end, "a frame cut short: {stream:?}");
        let (op, payload) = unframe(&s[..end]);
        match op {
            0x2 => ids.push(data_id(&payload)),
            0x9 | 0xa => assert!(matches!(&payload[..], b"probe" | b"timer" | b"")),
            other => panic!("opcode {other:#x}: a torn frame in {stream:?}"),
        }
        s = &s[end..];
    }
    ids
}

/// The event ids of the stream's data frames, each checked whole.
fn events_in(stream: &[u8]) -> Vec<u8> {
    frames_in(stream, |payload| {
        let id = payload[0];
        assert_eq!(payload, body(id), "a torn data frame: {stream:?}");
        id
    })
}

fn run_model(events: u8, with_ping: bool) {
    let mut b = loom::model::Builder::new();
    b.preemption_bound = Some(3);
    b.check(move || {
        let m = Arc::new(Model {
            outbox: Mutex::new(Outbox {
                slot: Slot::WithSender,
                idle: false,
                queue: VecDeque::new(),
                pong: false,
                done: false,
            }),
            wake: Notify::new(),
            socket: Mutex::new(Vec::new()),
        });
        // Generous stacks: loom runs threads as coroutines, and debug
        // builds (CI's `cargo test`) need more than the default.
        let spawn = |f: Box<dyn FnOnce() + Send>| {
            thread::Builder::new()
                .stack_size(4 << 20)
                .spawn(f)
                .expect("spawn")
        };
        let publisher = {
            let m = m.clone();
            spawn(Box::new(move || {
                for id in 1..=events {
                    publish(&m, id);
                }
                let wake = {
                    let mut ob = m.outbox.lock().unwrap();
                    ob.done = true;
                    std::mem::replace(&mut ob.idle, false)
                };
                if wake {
                    m.wake.notify();
                }
            }))
        };
        let decoder = with_ping.then(|| {
            let m = m.clone();
            spawn(Box::new(move || ping_arrives(&m)))
        });
        let sender_thread = {
            let m = m.clone();
            spawn(Box::new(move || {
                let mut initial = Pending::new(MaskRng::from_os());
                // INIT, written by the sender before anything else.
                append(&mut initial, 0);
                sender(&m, initial)
            }))
        };
        sender_thread.join().unwrap();
        publisher.join().unwrap();
        if let Some(d) = decoder {
            d.join().unwrap();
        }
        // The sender may have parked with a pong owed after the
        // publisher finished: it is written on its next round.
        let check = {
            let m = m.clone();
            spawn(Box::new(move || {
                let stream = m.socket.lock().unwrap().clone();
                let ids = events_in(&stream);
                let expected: Vec<u8> = (0..=events).collect();
                assert_eq!(ids, expected, "every event once, in order: {stream:?}");
            }))
        };
        check.join().unwrap();
    });
}

#[test]
fn sender_appends_only_what_it_holds() {
    run_model(2, false);
}

#[test]
fn a_pong_queued_meanwhile_never_splits_a_frame() {
    run_model(1, true);
}
