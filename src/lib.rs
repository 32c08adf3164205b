//! # vuer-client
//!
//! A fast streaming client for [Vuer](https://github.com/vuer-ai/vuer)
//! servers, wire-compatible with vuer 0.1.6, for robotics control loops that
//! stream poses at 60 Hz and far above.
//!
//! * **Every event delivered, or latest value wins: the event says which.**
//!   By default every event is delivered, in order. A stream of states
//!   opts in to latest-value-wins per key ([`Latest`],
//!   [`DynEvent::latest`], or an [`Event`] whose `coalesce()` says so):
//!   when the link or the server is slower than the producer, only the
//!   newest value of each key is sent, and every superseded value is
//!   counted ([`Stats::coalesced`]).
//! * **Bounded.** The outgoing ring and the inbound queues are bounded in
//!   events and bytes; memory does not grow whatever the producer or the
//!   server does.
//! * **Cheap to publish.** [`VuerClient::publish`] encodes the event on the
//!   caller's thread, swaps a buffer into the ring under a short lock and
//!   returns; it never blocks and needs no runtime, so a plain control-loop
//!   thread can call it. [`VuerClient::publish_many`] hands over a whole
//!   tick's events under one lock. Where every event must get through and
//!   waiting is fine, [`VuerClient::send`] (async) and
//!   [`VuerClient::send_blocking`] (plain threads) wait for room instead of
//!   returning `Full`.
//! * **Batched writes.** A sender task drains whatever is ready and writes
//!   it as one buffer (msgpack, frame headers and masks written in place):
//!   one syscall for many frames, no added latency at low rates.
//! * **Errors are values.** Connecting, publishing, decoding and closing all
//!   return typed errors; a malformed inbound message is counted and
//!   skipped.
//! * **Survives restarts.** The client reconnects with backoff, sends INIT
//!   again and restores the latest value of every key.
//!
//! ## Quick start
//!
//! ```no_run
//! use serde::Serialize;
//! use vuer_client::{Event, VuerClient};
//!
//! /// `class SetPosition(ClientEvent): etype = "SET_POSITION"`
//! #[derive(Serialize)]
//! struct SetPosition([f32; 3]);
//!
//! impl Event for SetPosition {
//!     const ETYPE: &'static str = "SET_POSITION";
//! }
//!
//! #[tokio::main]
//! async fn main() -> Result<(), Box<dyn std::error::Error>> {
//!     let mut client = VuerClient::connect("ws://localhost:8012").await?;
//!     for i in 0..200 {
//!         let t = i as f32 * 0.05;
//!         client.publish(&SetPosition([t.sin() * 2.0, 0.5 + (2.0 * t).sin() * 0.3, 0.0]))?;
//!         tokio::time::sleep(std::time::Duration::from_millis(16)).await;
//!     }
//!     while let Some(event) = client.recv_timeout(std::time::Duration::from_millis(200)).await {
//!         println!("{} {}", event.etype(), event.data()?);
//!     }
//!     client.close().await?;
//!     Ok(())
//! }
//! ```
//!
//! ## Delivery semantics
//!
//! * **What is delivered** is decided by the event, not by the call:
//!   `publish`, `publish_many`, `send().await` and `send_blocking` differ
//!   only in what they do when the queue is full. Nothing is coalesced
//!   unless the event asks for it ([`Coalesce`]).
//! * **Ordering.** Events leave in the order they entered the outgoing
//!   queue. A keyed event that replaces a queued one takes that one's place
//!   in line, so per key, values are sent in the order published (only the
//!   newest of those queued together); across keys, a key's place is that
//!   of its oldest pending value. Reliable (unkeyed) events keep their order
//!   among themselves. Send two kinds of events reliably if their relative
//!   order matters.
//! * **At most once per connection, at least once across a reconnect.** An
//!   event is written once. If the connection breaks while a batch is being
//!   written, the whole batch goes back to the front of the queue and is
//!   written again on the next connection, so an event the server already
//!   read may arrive twice (never zero times).
//! * **After a reconnect**, the new session gets INIT, then the last
//!   written value of every key that has nothing queued (state restore, see
//!   [`ClientBuilder::restore_state`]), then everything still queued, in
//!   order.
//! * **Drops are counted.** `published = sent + coalesced + expired +
//!   rejected + dropped + pending` at every moment (see [`Stats`]).
//!
//! ## Architecture
//!
//! * `ring`: the coalescing ring (no tokio inside).
//! * `codec`: msgpack envelopes and client frames (no tokio inside).
//! * `wire`: the write path: one owner of a connection's unwritten bytes.
//! * `sender`: the task that drains the ring into the wire.
//! * `decoder`: the task that owns the read half.
//! * `supervisor`: runs a connection's tasks, reconnects.
//! * `connection`: TCP, TLS, the websocket upgrade.
//! * `client`, `config`, `error`, `stats`, `event`, `value`, `state`: the
//!   public surface.
//! * The crate `vuer-client-testkit` (workspace member `testkit/`): a
//!   Vuer-compatible in-process server, a fault proxy and helpers for tests,
//!   benchmarks and the CLI (`vuer-client-cli`, `cli/`).

#![warn(missing_docs)]
#![deny(unreachable_pub)]

pub mod blocking;
mod buffers;
mod client;
pub(crate) mod clock;
pub(crate) mod codec;
mod config;
mod confirm;
mod connection;
mod decoder;
mod error;
mod event;
#[doc(hidden)]
pub mod fuzzing;
mod inbound;
mod pacing;
mod reconnect;
// Public items, reachable only through `internals` (a feature for the test
// kit and the ring's bench).
#[cfg_attr(not(feature = "internals"), allow(unreachable_pub, dead_code))]
mod ring;
mod sender;
mod shared;
mod state;
mod stats;
mod supervisor;
mod value;
mod wire;

/// Internals for `vuer-client-testkit` and the ring's bench: the coalescing
/// ring and the frame reader. Not public API: behind the `internals`
/// feature, with no stability promised.
#[cfg(feature = "internals")]
#[doc(hidden)]
pub mod internals {
    /// The coalescing ring, for its bench.
    pub mod ring {
        pub use crate::ring::*;
    }
    /// The websocket frame reader the client uses, for the test kit's
    /// server.
    pub mod frames {
        pub use crate::codec::inframe::{
            op, parse_head, Frame, FrameError, FrameReader, Head, Sender, READ_CHUNK,
        };
    }
}

pub use client::{encode_message, Publisher, Subscription, VuerClient};
pub use config::{
    default_init_info, ClientBuilder, InboundPolicy, DEFAULT_MAX_INBOUND_MESSAGE,
    DEFAULT_MAX_OUTGOING_MESSAGE, DEFAULT_URI, MAX_QUEUED_BYTES_LIMIT,
};
pub use connection::redact_uri;
pub use connection::socket::{SocketOptions, DEFAULT_NOTSENT_LOWAT};
pub use error::{
    CloseError, ConnectError, DecodeError, Disconnect, EncodeError, PartialPublish, PublishError,
};
pub use event::{
    Coalesce, DynEvent, Etype, Event, EventRef, Latest, Outgoing, RawEvent, Reliable, ServerEvent,
};
pub use inbound::etype_matches;
pub use pacing::Pacing;
pub use reconnect::Reconnect;
pub use ring::Overflow;
pub use state::ConnectionState;
pub use stats::Stats;
pub use value::Value;

/// The README's examples, compiled as doctests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;

/// The rustls version this crate uses, to build a
/// [`ClientBuilder::tls_config`].
pub use rustls;
