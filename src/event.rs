//! Outgoing events (typed, dynamic, pre-encoded) and inbound server events.

use std::borrow::Cow;
use std::ops::Range;
use std::time::Duration;

use bytes::Bytes;
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::codec::{
    encode_into, to_msgpack, write_str, BodyParts, Envelope, Payload, ETYPE_KEY, KEY_KEY,
    VALUE_KEY, WHOLE,
};
use crate::error::{DecodeError, EncodeError};
use crate::Value;

/// How an outgoing event is queued. Events are delivered reliably
/// ([`Coalesce::Never`]) unless they ask for latest-value-wins: nothing is
/// dropped that the application did not ask to coalesce.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Coalesce<'a> {
    /// Latest value wins per event type: a newer event of the same `etype`
    /// replaces one still queued.
    Etype,
    /// Latest value wins per `(etype, key)`.
    Key(&'a str),
    /// Reliable: never replaced or dropped, first in first out.
    Never,
}

/// A typed outgoing event: the Rust counterpart of subclassing Python's
/// `ClientEvent` with an `etype` class attribute.
///
/// The implementing type **is the value**: it is serialized with serde as
/// the event's `value` (structs become msgpack maps, `f32` stays `f32`,
/// `serde_bytes` become `bin`). A default value is simply `Default`.
///
/// The shape of the type is the shape the server sees in `event.value`:
///
/// | Rust type | `event.value` on the server |
/// |---|---|
/// | `struct SetPosition([f32; 3]);` (a tuple struct of one field) | `[x, y, z]`: a bare list, what `Box(position=event.value)` expects |
/// | `#[serde(transparent)] struct SetPosition { position: [f32; 3] }` | `[x, y, z]` too (one named field, serialized as that field alone) |
/// | `struct SetPosition { position: [f32; 3] }` | `{"position": [x, y, z]}`: a dict |
/// | `struct Joints(Vec<f32>);` | `[q0, q1, ...]` |
/// | `struct Grip(f32);` | a bare number |
///
/// ```
/// use serde::Serialize;
/// use vuer_client::Event;
///
/// // The server's handler does `Box(position=event.value)`: send a list.
/// #[derive(Serialize)]
/// struct SetPosition([f32; 3]);
/// impl Event for SetPosition {
///     const ETYPE: &'static str = "SET_POSITION";
/// }
///
/// // The same list, with a named field for your own code.
/// #[derive(Serialize)]
/// #[serde(transparent)]
/// struct MoveTo {
///     position: [f32; 3],
/// }
/// impl Event for MoveTo {
///     const ETYPE: &'static str = "SET_POSITION";
/// }
///
/// let (mut a, mut b) = (Vec::new(), Vec::new());
/// vuer_client::encode_message(&SetPosition([1.0, 2.0, 3.0]), true, &mut a).unwrap();
/// vuer_client::encode_message(&MoveTo { position: [1.0, 2.0, 3.0] }, true, &mut b).unwrap();
/// let value = |m: &[u8]| vuer_client::Value::from_msgpack(m).unwrap()["value"].clone();
/// assert_eq!(value(&a), value(&b));
/// assert_eq!(value(&a), vuer_client::Value::from([1.0f32, 2.0, 3.0]));
/// ```
///
/// By default every event is delivered (reliably, in order), as Python's
/// client does. A stream of states where only the newest matters (a pose,
/// joint angles, a camera) opts in to **latest value wins**: override
/// [`Event::coalesce`] (per `etype`, or per a key of your choice), or wrap
/// the event in [`Latest`] (per `(etype, key)`). When the link is slower
/// than the producer, only the newest value of each key is then sent, and
/// every superseded one is counted ([`Stats::coalesced`](crate::Stats::coalesced)).
///
/// ```
/// use serde::Serialize;
/// use vuer_client::{Coalesce, Event};
///
/// /// `class SetPosition(ClientEvent): etype = "SET_POSITION"; value = [0, 0, 0]`:
/// /// every one is delivered.
/// #[derive(Serialize, Default)]
/// struct SetPosition([f32; 3]);
///
/// impl Event for SetPosition {
///     const ETYPE: &'static str = "SET_POSITION";
/// }
///
/// /// A hand pose: a stream, the newest per hand wins.
/// #[derive(Serialize)]
/// struct HandMove {
///     #[serde(skip)]
///     hand: &'static str,
///     matrix: [f32; 16],
/// }
///
/// impl Event for HandMove {
///     const ETYPE: &'static str = "HAND_MOVE";
///     fn key(&self) -> Option<&str> {
///         Some(self.hand)
///     }
///     fn coalesce(&self) -> Coalesce<'_> {
///         Coalesce::Key(self.hand)
///     }
/// }
/// # let _ = SetPosition::default();
/// ```
pub trait Event: Serialize {
    /// The event type (`etype` on the wire), e.g. `"SET_POSITION"`.
    const ETYPE: &'static str;

    /// A top-level `key` sent beside `value` (Vuer's component key, e.g.
    /// `"defaultCamera"`). Default: none. It does not make the event
    /// coalesce by itself (see [`Event::coalesce`]).
    fn key(&self) -> Option<&str> {
        None
    }

    /// How the event is queued. Default: [`Coalesce::Never`], every event
    /// delivered. Return [`Coalesce::Etype`] or [`Coalesce::Key`] for a
    /// latest-value-wins stream (or wrap the event in [`Latest`]).
    fn coalesce(&self) -> Coalesce<'_> {
        Coalesce::Never
    }

    /// An explicit `ts` in milliseconds since the Unix epoch. Default: the
    /// time the client accepts the event.
    fn ts(&self) -> Option<u64> {
        None
    }

    /// A maximum age: if the event has not been written this long after it
    /// was published, it is not sent (and is counted as expired). Default:
    /// the client's [`max_age`](crate::ClientBuilder::max_age).
    fn max_age(&self) -> Option<Duration> {
        None
    }
}

/// Wraps an event so that it is delivered reliably (never coalesced), for a
/// type that coalesces by default.
///
/// ```
/// # use serde::Serialize;
/// # use vuer_client::{Coalesce, Event, Reliable};
/// # #[derive(Serialize)] struct Pose([f32; 3]);
/// # impl Event for Pose { const ETYPE: &'static str = "POSE"; fn coalesce(&self) -> Coalesce<'_> { Coalesce::Etype } }
/// let last_pose_before_stop = Reliable(Pose([0.0, 0.5, 0.0]));
/// ```
#[derive(Debug, Clone, Copy, Default)]
pub struct Reliable<E>(pub E);

impl<E: Event> Serialize for Reliable<E> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.0.serialize(s)
    }
}

impl<E: Event> Event for Reliable<E> {
    const ETYPE: &'static str = E::ETYPE;
    fn key(&self) -> Option<&str> {
        self.0.key()
    }
    fn coalesce(&self) -> Coalesce<'_> {
        Coalesce::Never
    }
    fn ts(&self) -> Option<u64> {
        self.0.ts()
    }
    fn max_age(&self) -> Option<Duration> {
        self.0.max_age()
    }
}

/// Wraps an event so that it coalesces: latest value wins per `(etype,
/// key)` (per `etype` when it has no key). For streams of states where a
/// stale value is worse than a dropped one.
///
/// ```
/// # use serde::Serialize;
/// # use vuer_client::{Event, Latest};
/// # #[derive(Serialize)] struct SetPosition([f32; 3]);
/// # impl Event for SetPosition { const ETYPE: &'static str = "SET_POSITION"; }
/// let pose = Latest(SetPosition([0.0, 0.5, 0.0]));
/// ```
#[derive(Debug, Clone, Copy, Default)]
pub struct Latest<E>(pub E);

impl<E: Event> Serialize for Latest<E> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.0.serialize(s)
    }
}

impl<E: Event> Event for Latest<E> {
    const ETYPE: &'static str = E::ETYPE;
    fn key(&self) -> Option<&str> {
        self.0.key()
    }
    fn coalesce(&self) -> Coalesce<'_> {
        match self.0.key() {
            Some(k) => Coalesce::Key(k),
            None => Coalesce::Etype,
        }
    }
    fn ts(&self) -> Option<u64> {
        self.0.ts()
    }
    fn max_age(&self) -> Option<Duration> {
        self.0.max_age()
    }
}

/// An event whose type is chosen at run time: the counterpart of
/// `ClientEvent(etype=..., key=..., value=...)`.
///
/// On the wire its keys are `ts, etype, key?, <extras>..., value`, the order
/// Python's keyword-argument form produces.
///
/// ```
/// use vuer_client::{DynEvent, Value};
/// // Delivered, every one (the default).
/// let click = DynEvent::new("CLICK").value(Value::map([("button", 0.into())]));
/// // A stream: the newest camera pose per (etype, key) wins.
/// let camera = DynEvent::new("CAMERA_MOVE")
///     .key("defaultCamera")
///     .value(Value::map([("camera", Value::map([("fov", 50.into())]))]))
///     .latest();
/// # let _ = (click, camera);
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct DynEvent {
    pub(crate) etype: Cow<'static, str>,
    pub(crate) key: Option<String>,
    pub(crate) extras: Vec<(String, Value)>,
    pub(crate) value: DynValue,
    pub(crate) ts: Option<u64>,
    /// Latest value wins (else delivered reliably).
    pub(crate) latest: bool,
    pub(crate) coalesce_key: Option<String>,
    pub(crate) max_age: Option<Duration>,
}

/// An event type name for [`DynEvent::new`]: from a `&str` (copied), a
/// `String`, or a `Cow<'static, str>` (a `&'static str` in a `Cow` is not
/// copied).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Etype(Cow<'static, str>);

impl From<&str> for Etype {
    fn from(s: &str) -> Self {
        Etype(Cow::Owned(s.to_owned()))
    }
}

impl From<String> for Etype {
    fn from(s: String) -> Self {
        Etype(Cow::Owned(s))
    }
}

impl From<&String> for Etype {
    fn from(s: &String) -> Self {
        Etype(Cow::Owned(s.clone()))
    }
}

impl From<Cow<'static, str>> for Etype {
    fn from(s: Cow<'static, str>) -> Self {
        Etype(s)
    }
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) enum DynValue {
    Value(Value),
    /// Already-encoded msgpack, written as is (no re-encoding).
    Encoded(Bytes),
}

impl DynEvent {
    /// A new event of type `etype` with a nil value. Any string will do
    /// (`"SET_POSITION"`, a `String`, a `&str` borrowed from elsewhere).
    pub fn new(etype: impl Into<Etype>) -> Self {
        DynEvent {
            etype: etype.into().0,
            key: None,
            extras: Vec::new(),
            value: DynValue::Value(Value::Nil),
            ts: None,
            latest: false,
            coalesce_key: None,
            max_age: None,
        }
    }

    /// Sets the value.
    pub fn value(mut self, value: impl Into<Value>) -> Self {
        self.value = DynValue::Value(value.into());
        self
    }

    /// Sets the value from anything serde can serialize.
    pub fn value_from<T: Serialize + ?Sized>(mut self, value: &T) -> Result<Self, EncodeError> {
        self.value = DynValue::Value(Value::from_serialize(value)?);
        Ok(self)
    }

    /// Sets the value to already-encoded msgpack bytes, sent without
    /// re-encoding: encode a large payload (a point cloud, an image) once
    /// and send it to several servers or many times. The bytes are checked
    /// once here.
    pub fn value_msgpack(mut self, encoded: Bytes) -> Result<Self, EncodeError> {
        crate::codec::validate_value(&encoded)
            .map_err(|e| EncodeError::NotAnEvent(format!("pre-encoded value: {e}")))?;
        self.value = DynValue::Encoded(encoded);
        Ok(self)
    }

    /// Sets the top-level `key` (Vuer's component key). With
    /// [`latest`](Self::latest), the event coalesces per `(etype, key)`.
    pub fn key(mut self, key: impl Into<String>) -> Self {
        self.key = Some(key.into());
        self
    }

    /// Adds another top-level entry (the server turns each into an
    /// attribute of the event). `ts`, `etype`, `key` and `value` are
    /// reserved and ignored here.
    pub fn extra(mut self, name: impl Into<String>, value: impl Into<Value>) -> Self {
        let name = name.into();
        if !matches!(name.as_str(), "ts" | "etype" | "key" | "value") {
            self.extras.push((name, value.into()));
        }
        self
    }

    /// Sets `ts` (milliseconds since the Unix epoch) instead of the time of
    /// publishing.
    pub fn ts(mut self, ts_ms: u64) -> Self {
        self.ts = Some(ts_ms);
        self
    }

    /// Delivers this event reliably, never coalesced: the default; it
    /// undoes [`latest`](Self::latest) and [`coalesce_on`](Self::coalesce_on).
    pub fn reliable(mut self) -> Self {
        self.latest = false;
        self.coalesce_key = None;
        self
    }

    /// Latest value wins: a newer event of the same `(etype, key)` (of the
    /// same etype when there is no key) replaces this one while it is
    /// queued. For streams of states (poses, joint angles, cameras).
    pub fn latest(mut self) -> Self {
        self.latest = true;
        self
    }

    /// Latest value wins per `(etype, key)` with this key instead of the
    /// top-level `key` (which stays as it is on the wire).
    pub fn coalesce_on(mut self, key: impl Into<String>) -> Self {
        self.latest = true;
        self.coalesce_key = Some(key.into());
        self
    }

    /// A maximum age (see [`Event::max_age`]).
    pub fn max_age(mut self, age: Duration) -> Self {
        self.max_age = Some(age);
        self
    }

    /// The event type.
    pub fn etype(&self) -> &str {
        &self.etype
    }

    pub(crate) fn coalesce(&self) -> Coalesce<'_> {
        if !self.latest {
            Coalesce::Never
        } else if let Some(k) = &self.coalesce_key {
            Coalesce::Key(k)
        } else if let Some(k) = &self.key {
            Coalesce::Key(k)
        } else {
            Coalesce::Etype
        }
    }
}

/// A complete, already-encoded msgpack message, sent byte for byte.
///
/// Use it to forward recorded traffic or to send the same large message to
/// several servers without re-encoding. The bytes are validated once, when
/// the `RawEvent` is made: a Vuer server closes the session on a message
/// that is not a map with string keys and an `etype`.
///
/// ```
/// use bytes::Bytes;
/// use vuer_client::RawEvent;
/// let msg = Bytes::from_static(&[0x82, 0xa5, b'e', b't', b'y', b'p', b'e', 0xa4, b'P', b'I', b'N', b'G', 0xa5, b'v', b'a', b'l', b'u', b'e', 0xc0]);
/// let ev = RawEvent::from_msgpack(msg).unwrap();
/// assert_eq!(ev.etype(), "PING");
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct RawEvent {
    pub(crate) bytes: Bytes,
    pub(crate) etype: Range<usize>,
    pub(crate) key: Option<Range<usize>>,
    /// Latest value wins (else delivered reliably).
    pub(crate) latest: bool,
}

impl RawEvent {
    /// Validates `bytes` as one Vuer event message.
    pub fn from_msgpack(bytes: Bytes) -> Result<Self, EncodeError> {
        let env = crate::codec::read_envelope(&bytes)
            .map_err(|e| EncodeError::NotAnEvent(e.to_string()))?;
        Ok(RawEvent {
            etype: env.etype,
            key: env.key,
            bytes,
            latest: false,
        })
    }

    /// Delivers this message reliably, never coalesced: the default; it
    /// undoes [`latest`](Self::latest).
    pub fn reliable(mut self) -> Self {
        self.latest = false;
        self
    }

    /// Latest value wins per `(etype, key)` (per etype without a key).
    pub fn latest(mut self) -> Self {
        self.latest = true;
        self
    }

    /// The event type.
    pub fn etype(&self) -> &str {
        std::str::from_utf8(&self.bytes[self.etype.clone()]).unwrap_or("")
    }

    /// The top-level `key`, if any.
    pub fn key(&self) -> Option<&str> {
        self.key
            .clone()
            .and_then(|r| std::str::from_utf8(&self.bytes[r]).ok())
    }

    /// The message bytes.
    pub fn as_bytes(&self) -> &Bytes {
        &self.bytes
    }

    pub(crate) fn coalesce(&self) -> Coalesce<'_> {
        if !self.latest {
            Coalesce::Never
        } else if let Some(k) = self.key() {
            Coalesce::Key(k)
        } else {
            Coalesce::Etype
        }
    }
}

/// An event that borrows everything it sends: its type, key and value are
/// the caller's, and publishing it allocates nothing (the message is
/// written straight into the ring). For control loops that must not
/// allocate, and for the C API, where the type and key come as C strings.
///
/// On the wire its keys are `ts, etype, [key], value`, as
/// [`DynEvent`]'s. The value is a list of `f32` (a pose, joint angles) or
/// one msgpack value encoded by the caller (checked at each publish).
///
/// ```
/// use vuer_client::EventRef;
/// let pose = [0.0f32, 0.5, 0.0];
/// // Latest value wins per (etype, key): only the newest pose is sent when
/// // the link is slow.
/// let ev = EventRef::floats("SET_POSITION", &pose).key("box").latest();
/// let mut msg = Vec::new();
/// vuer_client::encode_message(&ev, false, &mut msg).unwrap();
/// assert_eq!(vuer_client::Value::from_msgpack(&msg).unwrap()["value"], vuer_client::Value::from([0.0f32, 0.5, 0.0]));
/// ```
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct EventRef<'a> {
    etype: &'a str,
    key: Option<&'a str>,
    value: ValueRef<'a>,
    latest: bool,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum ValueRef<'a> {
    F32s(&'a [f32]),
    Msgpack(&'a [u8]),
}

impl<'a> EventRef<'a> {
    /// An event whose value is the list `values` (each an msgpack float32),
    /// delivered reliably unless [`latest`](Self::latest).
    pub fn floats(etype: &'a str, values: &'a [f32]) -> Self {
        EventRef {
            etype,
            key: None,
            value: ValueRef::F32s(values),
            latest: false,
        }
    }

    /// An event whose value is `msgpack`, one msgpack value encoded by the
    /// caller (checked when the event is published: anything else is
    /// refused with [`EncodeError::NotAnEvent`]).
    pub fn msgpack(etype: &'a str, msgpack: &'a [u8]) -> Self {
        EventRef {
            etype,
            key: None,
            value: ValueRef::Msgpack(msgpack),
            latest: false,
        }
    }

    /// Sets the top-level `key`.
    pub fn key(mut self, key: &'a str) -> Self {
        self.key = Some(key);
        self
    }

    /// Latest value wins per `(etype, key)` (per etype without a key).
    pub fn latest(mut self) -> Self {
        self.latest = true;
        self
    }

    /// Delivered reliably (the default): undoes [`latest`](Self::latest).
    pub fn reliable(mut self) -> Self {
        self.latest = false;
        self
    }

    /// The event type.
    pub fn etype(&self) -> &'a str {
        self.etype
    }

    fn coalesce(&self) -> Coalesce<'a> {
        match (self.latest, self.key) {
            (false, _) => Coalesce::Never,
            (true, Some(k)) => Coalesce::Key(k),
            (true, None) => Coalesce::Etype,
        }
    }
}

/// Appends a borrowed event's body: `etype, [key], value` after `ts`.
pub(crate) fn body_ref(ev: &EventRef<'_>, out: &mut Vec<u8>) -> Result<BodyParts, EncodeError> {
    if let ValueRef::Msgpack(m) = ev.value {
        crate::codec::validate_value(m)
            .map_err(|e| EncodeError::NotAnEvent(format!("pre-encoded value: {e}")))?;
    }
    let mut entries = 2;
    out.extend_from_slice(ETYPE_KEY);
    write_str(out, ev.etype);
    if let Some(k) = ev.key {
        out.extend_from_slice(KEY_KEY);
        write_str(out, k);
        entries += 1;
    }
    out.extend_from_slice(VALUE_KEY);
    match ev.value {
        ValueRef::F32s(v) => {
            crate::codec::write_array_len(out, v.len());
            for x in v {
                crate::codec::write_f32(out, *x);
            }
        }
        ValueRef::Msgpack(m) => out.extend_from_slice(m),
    }
    Ok((entries, Bytes::new()))
}

/// An event received from the server (or relayed through it).
///
/// The envelope (`etype`, `ts`, `uuid`, `rtype`, `key`, `strict`) is read
/// when the message arrives; `data` stays as raw msgpack inside the frame's
/// buffer until it is asked for, so an event nobody reads costs little.
/// Cloning is cheap (the frame buffer is shared).
///
/// ```
/// # fn show(event: vuer_client::ServerEvent) -> Result<(), vuer_client::DecodeError> {
/// if event.etype() == "UPSERT" {
///     let data = event.data()?;
///     for node in data["nodes"].as_array().unwrap_or_default() {
///         println!("{} {}", node["tag"], node["key"]);
///     }
/// }
/// # Ok(()) }
/// ```
#[derive(Clone, PartialEq)]
pub struct ServerEvent {
    pub(crate) frame: Bytes,
    pub(crate) env: Envelope,
    pub(crate) from_text: bool,
}

impl ServerEvent {
    /// Decodes one binary (msgpack) message.
    pub fn from_msgpack(frame: Bytes) -> Result<Self, DecodeError> {
        let env = crate::codec::read_envelope(&frame)?;
        Ok(ServerEvent {
            frame,
            env,
            from_text: false,
        })
    }

    /// Decodes one text (JSON) message. The buffer is parsed in place.
    pub fn from_json(mut text: bytes::BytesMut) -> Result<Self, DecodeError> {
        let mut out = Vec::with_capacity(text.len());
        crate::codec::json_to_msgpack(&mut text, &mut out)?;
        let mut ev = Self::from_msgpack(Bytes::from(out))?;
        ev.from_text = true;
        Ok(ev)
    }

    fn str_at(&self, r: &Range<usize>) -> &str {
        // Validated as UTF-8 when the envelope was read.
        std::str::from_utf8(&self.frame[r.clone()]).unwrap_or("")
    }

    /// The event type, e.g. `"SET"`, `"UPSERT"`, `"GRAB_RENDER"`.
    pub fn etype(&self) -> &str {
        self.str_at(&self.env.etype)
    }

    /// `ts` in milliseconds since the Unix epoch. Integers are taken as
    /// milliseconds (what the Vuer server sends); floats as seconds (what
    /// browsers and Python's `ClientEvent` use), converted.
    pub fn ts(&self) -> Option<i64> {
        self.env.ts_ms
    }

    /// The RPC request id, if any.
    pub fn uuid(&self) -> Option<&str> {
        self.env.uuid.as_ref().map(|r| self.str_at(r))
    }

    /// The etype an RPC answer must carry, as the request gives it.
    pub fn rtype(&self) -> Option<&str> {
        self.env.rtype.as_ref().map(|r| self.str_at(r))
    }

    /// The top-level `key` (the component an RPC is addressed to, or the
    /// component key of a relayed client event).
    pub fn key(&self) -> Option<&str> {
        self.env.key.as_ref().map(|r| self.str_at(r))
    }

    /// `UPDATE`'s top-level `strict` flag.
    pub fn strict(&self) -> Option<bool> {
        self.env.strict
    }

    /// True if this is an RPC request (it carries an `rtype` or a `uuid`).
    pub fn is_rpc(&self) -> bool {
        self.env.rtype.is_some() || self.env.uuid.is_some()
    }

    /// The etype of the answer to this RPC request: its `rtype`, else
    /// `<etype>_RESPONSE@<uuid>` (PROTOCOL.md §7). `None` if it is not a
    /// request.
    pub fn reply_etype(&self) -> Option<String> {
        if let Some(r) = self.rtype() {
            return Some(r.to_owned());
        }
        self.uuid()
            .map(|u| format!("{}_RESPONSE@{}", self.etype(), u))
    }

    /// The answer to this event as an RPC request (PROTOCOL.md §7): a
    /// reliable event of etype [`ServerEvent::reply_etype`] (else
    /// `<etype>_RESPONSE`) carrying `value`, with this event's key.
    /// [`VuerClient::respond`](crate::VuerClient::respond) publishes it;
    /// build it yourself to send it another way.
    pub fn reply(&self, value: impl Into<Value>) -> DynEvent {
        let etype = self
            .reply_etype()
            .unwrap_or_else(|| format!("{}_RESPONSE", self.etype()));
        let mut ev = DynEvent::new(etype).value(value).reliable();
        if let Some(k) = self.key() {
            ev = ev.key(k);
        }
        ev
    }

    /// The envelope field the payload came in: `"data"` (what a server
    /// sends), `"value"` (a client's event, e.g. relayed or seen by a
    /// server), or `None` if it has neither.
    pub fn payload_name(&self) -> Option<&'static str> {
        if self.env.data.is_some() {
            Some("data")
        } else if self.env.value.is_some() {
            Some("value")
        } else {
            None
        }
    }

    fn payload_range(&self) -> Option<&Range<usize>> {
        self.env.data.as_ref().or(self.env.value.as_ref())
    }

    /// The raw msgpack of `data` (or of `value`, for relayed client events),
    /// `None` when the message has neither.
    pub fn data_raw(&self) -> Option<&[u8]> {
        self.payload_range().map(|r| &self.frame[r.clone()])
    }

    /// `data` (or `value`) as a dynamic [`Value`]; nil when absent.
    ///
    /// A [`Value`] takes up to 32 times the bytes of its msgpack (an array
    /// of nils is one byte per element on the wire, a 32-byte `Value` in
    /// memory), so a message of the maximum inbound size from an untrusted
    /// peer can decode into that much more. For large messages prefer
    /// [`data_as`](Self::data_as) into a typed struct, or
    /// [`data_raw`](Self::data_raw).
    pub fn data(&self) -> Result<Value, DecodeError> {
        match self.data_raw() {
            Some(raw) => crate::value::decode_value(raw),
            None => Ok(Value::Nil),
        }
    }

    /// `data` (or `value`) deserialized into `T` with serde. Numbers convert
    /// between int, f32 and f64 as serde allows; `bin` fits `serde_bytes`
    /// and `Vec<u8>`.
    ///
    /// ```
    /// # fn f(event: vuer_client::ServerEvent) -> Result<(), vuer_client::DecodeError> {
    /// #[derive(serde::Deserialize)]
    /// struct Nodes { nodes: Vec<vuer_client::Value>, to: Option<String> }
    /// let upsert: Nodes = event.data_as()?;
    /// # Ok(()) }
    /// ```
    pub fn data_as<T: DeserializeOwned>(&self) -> Result<T, DecodeError> {
        let raw = self.data_raw().unwrap_or(&[0xc0]);
        rmp_serde::from_slice(raw).map_err(|e| DecodeError::Type(e.to_string()))
    }

    /// Another top-level entry by name (the first of that name), decoded.
    /// Top-level entries other than the envelope's fields are rare; each
    /// call walks the message's top level.
    pub fn extra(&self, name: &str) -> Option<Result<Value, DecodeError>> {
        if self.env.extras == 0 {
            return None;
        }
        crate::codec::envelope_extras(&self.frame)
            .find(|(k, _)| &self.frame[k.clone()] == name.as_bytes())
            .map(|(_, v)| crate::value::decode_value(&self.frame[v]))
    }

    /// Names of the other top-level entries, in wire order.
    pub fn extra_names(&self) -> impl Iterator<Item = &str> {
        let frame = &self.frame;
        crate::codec::envelope_extras(frame)
            .take(self.env.extras)
            .map(move |(k, _)| std::str::from_utf8(&frame[k]).unwrap_or(""))
    }

    /// The whole message as msgpack (for a text frame: its msgpack
    /// transcoding).
    pub fn as_msgpack(&self) -> &Bytes {
        &self.frame
    }

    /// The whole message as a [`Value`] map.
    pub fn to_value(&self) -> Result<Value, DecodeError> {
        crate::value::decode_value(&self.frame)
    }

    /// True if this event arrived in a text (JSON) frame.
    pub fn was_json(&self) -> bool {
        self.from_text
    }

    /// Size of the message in bytes.
    pub fn len(&self) -> usize {
        self.frame.len()
    }

    /// Always false: an event has at least an etype.
    pub fn is_empty(&self) -> bool {
        self.frame.is_empty()
    }
}

impl std::fmt::Debug for ServerEvent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut d = f.debug_struct("ServerEvent");
        d.field("etype", &self.etype()).field("ts", &self.ts());
        if let Some(k) = self.key() {
            d.field("key", &k);
        }
        if let Some(u) = self.uuid() {
            d.field("uuid", &u);
        }
        if let Some(r) = self.rtype() {
            d.field("rtype", &r);
        }
        d.field("bytes", &self.frame.len()).finish()
    }
}

/// What an outgoing event says about itself to be queued: its etype, how
/// it coalesces, its own `ts` and maximum age, if any.
/// (Named by the sealed encoding trait; not constructible outside the
/// crate in any useful way.)
pub struct Meta<'a> {
    /// The event type.
    pub etype: &'a str,
    /// How it coalesces.
    pub coalesce: Coalesce<'a>,
    /// Its own `ts`, if it sets one.
    pub ts: Option<u64>,
    /// Its own maximum age, if it sets one.
    pub max_age: Option<Duration>,
}

pub(crate) mod sealed {
    use super::*;
    use crate::codec::Payload;

    /// How an outgoing event is queued and encoded.
    pub trait Encode {
        fn meta(&self) -> Meta<'_>;
        /// Appends the body (the envelope without `ts`) to `out`.
        fn encode_body(&self, out: &mut Vec<u8>, all_f32: bool) -> Result<BodyParts, EncodeError>;
        fn encode(&self, out: &mut Payload, all_f32: bool) -> Result<(), EncodeError> {
            encode_into(out, |b| self.encode_body(b, all_f32))
        }
    }

    impl<E: Event> Encode for E {
        fn meta(&self) -> Meta<'_> {
            Meta {
                etype: E::ETYPE,
                coalesce: self.coalesce(),
                ts: Event::ts(self),
                max_age: Event::max_age(self),
            }
        }
        fn encode_body(&self, out: &mut Vec<u8>, all_f32: bool) -> Result<BodyParts, EncodeError> {
            body_typed(self, out, all_f32)
        }
    }

    impl Encode for DynEvent {
        fn meta(&self) -> Meta<'_> {
            Meta {
                etype: &self.etype,
                coalesce: self.coalesce(),
                ts: self.ts,
                max_age: self.max_age,
            }
        }
        fn encode_body(&self, out: &mut Vec<u8>, all_f32: bool) -> Result<BodyParts, EncodeError> {
            body_dyn(self, out, all_f32)
        }
    }

    impl Encode for EventRef<'_> {
        fn meta(&self) -> Meta<'_> {
            Meta {
                etype: self.etype,
                coalesce: self.coalesce(),
                ts: None,
                max_age: None,
            }
        }
        fn encode_body(&self, out: &mut Vec<u8>, _all_f32: bool) -> Result<BodyParts, EncodeError> {
            body_ref(self, out)
        }
    }

    impl Encode for RawEvent {
        fn meta(&self) -> Meta<'_> {
            Meta {
                etype: self.etype(),
                coalesce: self.coalesce(),
                ts: None,
                max_age: None,
            }
        }
        fn encode_body(
            &self,
            _out: &mut Vec<u8>,
            _all_f32: bool,
        ) -> Result<BodyParts, EncodeError> {
            Ok(body_raw(self))
        }
    }
}

/// Anything the client can send: a typed [`Event`], a [`DynEvent`] or a
/// [`RawEvent`]. Sealed; implement [`Event`] for your own types.
pub trait Outgoing: sealed::Encode {}
impl<T: sealed::Encode + ?Sized> Outgoing for T {}

// The bodies of outgoing events: each event type's fields in the order the
// Python client writes them, on the codec's primitives.

/// Appends a typed event's body: `[key], value, etype` after `ts`, the
/// order Python gives a `ClientEvent` subclass with a class-attribute
/// `etype`.
pub(crate) fn body_typed<E: Event + ?Sized>(
    ev: &E,
    out: &mut Vec<u8>,
    all_f32: bool,
) -> Result<BodyParts, EncodeError> {
    out.reserve(64);
    let mut entries = 2;
    if let Some(k) = ev.key() {
        out.extend_from_slice(KEY_KEY);
        write_str(out, k);
        entries += 1;
    }
    out.extend_from_slice(VALUE_KEY);
    to_msgpack(out, ev, all_f32)?;
    out.extend_from_slice(ETYPE_KEY);
    write_str(out, E::ETYPE);
    Ok((entries, Bytes::new()))
}

/// Appends a dynamic event's body: `etype, [key], extras..., value` after
/// `ts`, the order of Python's keyword form `ClientEvent(etype=..., key=...,
/// value=...)`.
pub(crate) fn body_dyn(
    ev: &DynEvent,
    out: &mut Vec<u8>,
    all_f32: bool,
) -> Result<BodyParts, EncodeError> {
    let mut entries = 2;
    let mut tail = Bytes::new();
    out.extend_from_slice(ETYPE_KEY);
    write_str(out, &ev.etype);
    if let Some(k) = &ev.key {
        out.extend_from_slice(KEY_KEY);
        write_str(out, k);
        entries += 1;
    }
    for (name, v) in &ev.extras {
        write_str(out, name);
        to_msgpack(out, v, all_f32)?;
        entries += 1;
    }
    out.extend_from_slice(VALUE_KEY);
    match &ev.value {
        DynValue::Value(v) => to_msgpack(out, v, all_f32)?,
        DynValue::Encoded(b) => tail = b.clone(),
    }
    Ok((entries, tail))
}

/// A pre-encoded message is sent as is.
pub(crate) fn body_raw(ev: &RawEvent) -> BodyParts {
    (WHOLE, ev.bytes.clone())
}

/// Encodes a typed event into a [`Payload`].
#[cfg(test)]
pub(crate) fn encode_typed<E: Event + ?Sized>(
    ev: &E,
    out: &mut Payload,
    all_f32: bool,
) -> Result<(), EncodeError> {
    encode_into(out, |b| body_typed(ev, b, all_f32))
}

/// Encodes a dynamic event into a [`Payload`].
pub(crate) fn encode_dyn(
    ev: &DynEvent,
    out: &mut Payload,
    all_f32: bool,
) -> Result<(), EncodeError> {
    encode_into(out, |b| body_dyn(ev, b, all_f32))
}

/// Encodes a pre-encoded message into a [`Payload`].
#[cfg(test)]
pub(crate) fn encode_raw(ev: &RawEvent, out: &mut Payload) {
    let _ = encode_into(out, |_| Ok(body_raw(ev)));
}
