//! Model checking (loom) of the hand-offs in real-time mode
//! (`ClientBuilder::realtime_publish`): publishers that neither write, nor
//! wake, nor park, a sender that polls, and the ring's chunks going round
//! from the ring to a batch, to the socket, and back to the ring.
//!
//! The threads run the steps of `Shared::hand_off` / `push_locked` (in
//! real-time mode: `would_allocate`, push, nothing after), of
//! `sender::run` (take the wire back, return the last batch's chunks, take
//! up to the bound, park, poll; write; settle; empty the batch outside the
//! lock) and of the decoder queuing a pong, under one lock that every
//! thread spins for (`Shared::outbox_spin`), with the real [`Ring`] in
//! real-time mode, its real [`Batch`]es and chunk recycling, the real
//! [`Pending`] and [`Slot`] and the real framing. The ring holds at most
//! two items and its test-sized chunks (64 bytes) take one or two bodies,
//! so the publisher is refused and publishes again (as a control loop
//! would), and every round moves and returns chunks; one variant takes a
//! single item per round (a budget), so takes end inside chunks and copy.
//! Not modelled here: keyed values (replaced in place), the confirmation
//! pool's route for chunks (the batch is emptied at once), more than one
//! timer probe.
//!
//! Afterwards the stream must split into whole frames, every event must
//! appear exactly once, in order, with every byte of its body as
//! published (a chunk handed back to the ring while a batch still wrote
//! from it would show here as a body overwritten by a later one), and the
//! ring must hold nothing: a sender that polls instead of being woken
//! misses no event.

use bytes::Bytes;

use loom::sync::{Arc, Mutex, MutexGuard};
use loom::thread;

use super::model::frames_in;
use super::{Pending, Slot};
use crate::codec::{Header, MaskRng, Opcode};
use crate::ring::{Batch, Overflow, Ring, RingLimits};

struct Outbox {
    slot: Slot<Pending>,
    ring: Ring<u8>,
    /// A pong owed to the server.
    pong: bool,
    /// The publisher has published everything.
    done: bool,
}

struct Model {
    outbox: Mutex<Outbox>,
}

/// Every thread spins for the lock, never parks (`Shared::outbox_spin`).
fn lock(m: &Model) -> MutexGuard<'_, Outbox> {
    loop {
        if let Ok(guard) = m.outbox.try_lock() {
            return guard;
        }
        thread::yield_now();
    }
}

/// An event's message: its id, repeated; 28 to 49 bytes, so a 64-byte
/// chunk holds one or two.
fn body(id: u8) -> Vec<u8> {
    vec![id; 21 + 7 * id as usize]
}

/// Its header: the message is `{ts: id, <body>}` (the body stands for its
/// entries), so a header written with another event's body shows.
fn header(id: u8) -> Header {
    Header {
        ts_ms: id as u64,
        entries: 0,
        own_ts: true,
        tail_mask: [0; 4],
    }
}

/// The message's first bytes: a one-entry map, `"ts"`, the id.
fn prefix(id: u8) -> [u8; 5] {
    [0x81, 0xa2, b't', b's', id]
}

/// `Shared::hand_off` in real-time mode: push under the lock, neither write
/// nor wake. A refused event is published again after a yield.
fn publish(m: &Model, id: u8) {
    loop {
        {
            let mut ob = lock(m);
            if !ob.ring.would_allocate() {
                let pushed = ob.ring.push(None, id, &body(id), Bytes::new(), 0, u64::MAX);
                if pushed.is_ok() {
                    return;
                }
            }
        }
        thread::yield_now();
    }
}

/// The decoder got a ping: a pong is owed. The sender finds it when it
/// polls.
fn ping_arrives(m: &Model) {
    lock(m).pong = true;
}

/// `sender::run` in real-time mode, with its probe timer firing once right
/// after it first parks. Returns what it wrote to the socket.
fn sender(m: &Model, wire: Pending, take: usize) -> Vec<u8> {
    let mut socket = Vec::new();
    let mut held = Some(wire);
    let mut batch: Batch<u8> = Batch::default();
    let mut probe_wanted = false;
    let mut timer_fired = false;
    loop {
        if held.is_none() {
            let back = lock(m).slot.take_back();
            held = Some(back.expect("the connection lives"));
        }
        let wire = held.as_mut().unwrap();
        if std::mem::take(&mut probe_wanted) {
            wire.control(Opcode::Ping, b"timer");
        }
        let (pong, parked, done) = {
            let mut ob = lock(m);
            // The last batch was emptied outside the lock: its chunks go
            // back to the ring, where the publisher needs them.
            ob.ring.reclaim(&mut batch);
            ob.ring.take_up_to(&mut batch, take, usize::MAX);
            let pong = std::mem::take(&mut ob.pong);
            let done = ob.done && batch.is_empty();
            let parked = held.as_ref().unwrap().is_empty() && batch.is_empty() && !pong;
            if parked && !done {
                ob.slot.park(held.take().unwrap());
            }
            (pong, parked, done)
        };
        if parked {
            if done {
                return socket;
            }
            if !timer_fired {
                // The probe timer: it fires at any point loom chooses
                // relative to the other threads.
                timer_fired = true;
                probe_wanted = true;
            } else {
                // The poll interval.
                thread::yield_now();
            }
            continue;
        }
        let wire = held.as_mut().unwrap();
        if pong {
            wire.control(Opcode::Pong, b"");
        }
        for slot in batch.slots() {
            let id = slot.header;
            assert_eq!(
                batch.body(slot),
                &body(id)[..],
                "a body changed in the batch"
            );
            wire.data_frame(header(id), batch.body(slot), &slot.tail);
        }
        wire.control(Opcode::Ping, b"probe");
        while !wire.is_empty() {
            wire.write_vectored_with(|pieces| {
                let mut n = 0;
                for p in pieces {
                    socket.extend_from_slice(p);
                    n += p.len();
                }
                Ok(n)
            })
            .unwrap();
        }
        if !batch.is_empty() {
            // Written and (in this model) confirmed at once: released
            // under the lock, emptied outside it.
            lock(m).ring.settle(&batch, false, |_| false);
            batch.clear();
        }
    }
}

/// The event ids of the stream's data frames, each checked whole: its
/// prefix and body belong to the same event, byte for byte.
fn events_in(stream: &[u8]) -> Vec<u8> {
    frames_in(stream, |payload| {
        let id = payload[4];
        assert_eq!(payload[..5], prefix(id), "a torn frame: {stream:?}");
        assert_eq!(
            payload[5..],
            body(id),
            "a torn or overwritten body: {stream:?}"
        );
        id
    })
}

/// `take`: most items a round takes (the confirmation budget or pacing):
/// 1 makes every take a partial one, ending inside or at the edge of a
/// chunk.
fn run_model(events: u8, with_ping: bool, take: usize) {
    let mut b = loom::model::Builder::new();
    b.preemption_bound = Some(3);
    b.check(move || {
        let mut ring = Ring::new(
            RingLimits {
                max_items: 2,
                max_bytes: 128,
                max_keys: 4,
            },
            Overflow::Reject,
        );
        ring.set_realtime();
        let m = Arc::new(Model {
            outbox: Mutex::new(Outbox {
                slot: Slot::WithSender,
                ring,
                pong: false,
                done: false,
            }),
        });
        // Generous stacks: loom runs threads as coroutines, and debug
        // builds (CI's `cargo test`) need more than the default.
        let spawn = |f: Box<dyn FnOnce() -> Vec<u8> + Send>| {
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
                lock(&m).done = true;
                Vec::new()
            }))
        };
        let decoder = with_ping.then(|| {
            let m = m.clone();
            spawn(Box::new(move || {
                ping_arrives(&m);
                Vec::new()
            }))
        });
        let sender_thread = {
            let m = m.clone();
            spawn(Box::new(move || {
                let mut initial = Pending::new(MaskRng::from_os());
                // INIT, written by the sender before anything else.
                initial.data_frame(header(0), &body(0), &Bytes::new());
                sender(&m, initial, take)
            }))
        };
        let stream = sender_thread.join().unwrap();
        publisher.join().unwrap();
        if let Some(d) = decoder {
            d.join().unwrap();
        }
        let ids = events_in(&stream);
        let expected: Vec<u8> = (0..=events).collect();
        assert_eq!(ids, expected, "every event once, in order: {stream:?}");
        let ob = lock(&m);
        assert_eq!(ob.ring.held(), (0, 0), "nothing left queued or in flight");
    });
}

#[test]
fn realtime_publishers_are_refused_until_chunks_come_back_and_nothing_is_missed() {
    run_model(4, false, usize::MAX);
}

#[test]
fn realtime_takes_of_one_item_move_or_copy_every_body_intact() {
    run_model(4, false, 1);
}

#[test]
fn realtime_a_pong_queued_meanwhile_never_splits_a_frame() {
    run_model(2, true, usize::MAX);
}
