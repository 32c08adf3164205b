//! A dynamic msgpack value that keeps the wire types Vuer uses.
//!
//! Vuer mixes number types freely (`[int 0, f32 0.5, int 0]` is a normal
//! position), sends binary node properties as msgpack `bin`, and relies on map
//! order only for byte-exact tests. [`Value`] keeps all of that: integers stay
//! integers, `f32` stays `f32`, `f64` stays `f64`, `bin` stays bytes, and maps
//! keep their order.

use std::fmt;

mod msgpack;

pub(crate) use msgpack::{decode_value, write_value};

use serde::de::{self, MapAccess, SeqAccess, Visitor};
use serde::ser::{SerializeMap, SerializeSeq};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A dynamic msgpack value.
///
/// Integers that fit in `i64` are always [`Value::Int`]; only values above
/// `i64::MAX` use [`Value::UInt`] (the decoder and the `From` impls keep that
/// rule, so equal numbers compare equal).
///
/// ```
/// use vuer_client::Value;
/// let v = Value::map([("position", Value::from(vec![0.0f32, 0.5, 0.0])), ("fps", 30.into())]);
/// assert_eq!(v.get("fps").and_then(Value::as_i64), Some(30));
/// assert_eq!(v["position"][1].as_f64(), Some(0.5));
/// ```
#[derive(Debug, Clone, PartialEq, Default)]
pub enum Value {
    /// msgpack nil (Python `None`).
    #[default]
    Nil,
    /// msgpack bool.
    Bool(bool),
    /// An integer in `i64` range.
    Int(i64),
    /// An integer above `i64::MAX`.
    UInt(u64),
    /// A 32-bit float (what Python's `use_single_float=True` writes).
    F32(f32),
    /// A 64-bit float (what browsers write).
    F64(f64),
    /// A UTF-8 string.
    Str(String),
    /// Raw bytes (msgpack `bin`).
    Bin(Vec<u8>),
    /// An array.
    Array(Vec<Value>),
    /// A map with string keys, in wire order.
    Map(Vec<(String, Value)>),
    /// A msgpack extension value (type tag, payload). Vuer never sends one,
    /// but a relay could; it is kept rather than rejected.
    Ext(i8, Vec<u8>),
}

static NIL: Value = Value::Nil;

impl Value {
    /// Builds a map from `(key, value)` pairs, keeping their order.
    pub fn map<K: Into<String>, I: IntoIterator<Item = (K, Value)>>(entries: I) -> Value {
        Value::Map(entries.into_iter().map(|(k, v)| (k.into(), v)).collect())
    }

    /// Looks up `key` in a map (first match); `None` for other variants.
    pub fn get(&self, key: &str) -> Option<&Value> {
        match self {
            Value::Map(entries) => entries.iter().find(|(k, _)| k == key).map(|(_, v)| v),
            _ => None,
        }
    }

    /// True for [`Value::Nil`].
    pub fn is_nil(&self) -> bool {
        matches!(self, Value::Nil)
    }

    /// The number as `f64`, whatever its wire type (int, f32 or f64).
    pub fn as_f64(&self) -> Option<f64> {
        match *self {
            Value::Int(i) => Some(i as f64),
            Value::UInt(u) => Some(u as f64),
            Value::F32(f) => Some(f as f64),
            Value::F64(f) => Some(f),
            _ => None,
        }
    }

    /// The integer as `i64` (ints only; floats are not truncated).
    pub fn as_i64(&self) -> Option<i64> {
        match *self {
            Value::Int(i) => Some(i),
            Value::UInt(u) => i64::try_from(u).ok(),
            _ => None,
        }
    }

    /// The integer as `u64` (non-negative ints only).
    pub fn as_u64(&self) -> Option<u64> {
        match *self {
            Value::Int(i) => u64::try_from(i).ok(),
            Value::UInt(u) => Some(u),
            _ => None,
        }
    }

    /// The bool, if this is one.
    pub fn as_bool(&self) -> Option<bool> {
        match *self {
            Value::Bool(b) => Some(b),
            _ => None,
        }
    }

    /// The string, if this is one.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::Str(s) => Some(s),
            _ => None,
        }
    }

    /// The bytes, if this is a `bin`.
    pub fn as_bytes(&self) -> Option<&[u8]> {
        match self {
            Value::Bin(b) => Some(b),
            _ => None,
        }
    }

    /// The elements, if this is an array.
    pub fn as_array(&self) -> Option<&[Value]> {
        match self {
            Value::Array(a) => Some(a),
            _ => None,
        }
    }

    /// The entries, if this is a map.
    pub fn as_map(&self) -> Option<&[(String, Value)]> {
        match self {
            Value::Map(m) => Some(m),
            _ => None,
        }
    }

    /// Converts anything serde can serialize into a [`Value`] (through
    /// msgpack, so the result has exactly the wire types).
    pub fn from_serialize<T: serde::Serialize + ?Sized>(
        value: &T,
    ) -> Result<Value, crate::EncodeError> {
        let mut buf = Vec::new();
        crate::codec::to_msgpack(&mut buf, value, false)?;
        decode_value(&buf).map_err(|e| crate::EncodeError::Custom(e.to_string()))
    }

    /// Decodes one msgpack value from `bytes` (the whole slice must be used).
    pub fn from_msgpack(bytes: &[u8]) -> Result<Value, crate::DecodeError> {
        decode_value(bytes)
    }

    /// Encodes this value as msgpack, choosing the smallest form for every
    /// integer, string, binary, array and map header (the same bytes
    /// Python's `msgpack.packb` writes).
    pub fn to_msgpack(&self) -> Vec<u8> {
        let mut out = Vec::new();
        write_value(&mut out, self);
        out
    }
}

impl std::ops::Index<&str> for Value {
    type Output = Value;
    /// Map lookup; [`Value::Nil`] when the key is absent or this is not a map.
    fn index(&self, key: &str) -> &Value {
        self.get(key).unwrap_or(&NIL)
    }
}

impl std::ops::Index<usize> for Value {
    type Output = Value;
    /// Array indexing; [`Value::Nil`] when out of range or not an array.
    fn index(&self, i: usize) -> &Value {
        match self {
            Value::Array(a) => a.get(i).unwrap_or(&NIL),
            _ => &NIL,
        }
    }
}

macro_rules! from_signed {
    ($($t:ty),*) => {$(
        impl From<$t> for Value { fn from(v: $t) -> Self { Value::Int(v as i64) } }
    )*};
}
from_signed!(i8, i16, i32, i64);
macro_rules! from_unsigned {
    ($($t:ty),*) => {$(
        impl From<$t> for Value { fn from(v: $t) -> Self { Value::Int(v as i64) } }
    )*};
}
from_unsigned!(u8, u16, u32);
impl From<u64> for Value {
    fn from(v: u64) -> Self {
        match i64::try_from(v) {
            Ok(i) => Value::Int(i),
            Err(_) => Value::UInt(v),
        }
    }
}
impl From<usize> for Value {
    fn from(v: usize) -> Self {
        Value::from(v as u64)
    }
}
impl From<f32> for Value {
    fn from(v: f32) -> Self {
        Value::F32(v)
    }
}
impl From<f64> for Value {
    fn from(v: f64) -> Self {
        Value::F64(v)
    }
}
impl From<bool> for Value {
    fn from(v: bool) -> Self {
        Value::Bool(v)
    }
}
impl From<&str> for Value {
    fn from(v: &str) -> Self {
        Value::Str(v.to_owned())
    }
}
impl From<String> for Value {
    fn from(v: String) -> Self {
        Value::Str(v)
    }
}
impl From<()> for Value {
    fn from(_: ()) -> Self {
        Value::Nil
    }
}
impl<T: Into<Value>> From<Option<T>> for Value {
    fn from(v: Option<T>) -> Self {
        v.map_or(Value::Nil, Into::into)
    }
}
impl<T: Into<Value>> From<Vec<T>> for Value {
    fn from(v: Vec<T>) -> Self {
        Value::Array(v.into_iter().map(Into::into).collect())
    }
}
impl<T: Into<Value> + Clone> From<&[T]> for Value {
    fn from(v: &[T]) -> Self {
        Value::Array(v.iter().cloned().map(Into::into).collect())
    }
}
impl<T: Into<Value> + Clone> From<&Vec<T>> for Value {
    fn from(v: &Vec<T>) -> Self {
        Value::from(v.as_slice())
    }
}
impl<T: Into<Value> + Copy, const N: usize> From<&[T; N]> for Value {
    fn from(v: &[T; N]) -> Self {
        Value::Array(v.iter().map(|x| (*x).into()).collect())
    }
}
impl<T: Into<Value> + Copy, const N: usize> From<[T; N]> for Value {
    fn from(v: [T; N]) -> Self {
        Value::Array(v.iter().map(|x| (*x).into()).collect())
    }
}

impl Serialize for Value {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Value::Nil => s.serialize_unit(),
            Value::Bool(b) => s.serialize_bool(*b),
            Value::Int(i) => s.serialize_i64(*i),
            Value::UInt(u) => s.serialize_u64(*u),
            Value::F32(f) => s.serialize_f32(*f),
            Value::F64(f) => s.serialize_f64(*f),
            Value::Str(v) => s.serialize_str(v),
            Value::Bin(b) => s.serialize_bytes(b),
            Value::Array(a) => {
                let mut seq = s.serialize_seq(Some(a.len()))?;
                for v in a {
                    seq.serialize_element(v)?;
                }
                seq.end()
            }
            Value::Map(m) => {
                let mut map = s.serialize_map(Some(m.len()))?;
                for (k, v) in m {
                    map.serialize_entry(k, v)?;
                }
                map.end()
            }
            // serde has no extension type; a (tag, bytes) pair is the most
            // faithful general rendering. Our own encoder writes real ext.
            Value::Ext(tag, data) => {
                use serde::ser::SerializeTuple;
                let mut t = s.serialize_tuple(2)?;
                t.serialize_element(tag)?;
                t.serialize_element(&serde_bytes_ref(data))?;
                t.end()
            }
        }
    }
}

struct BytesRef<'a>(&'a [u8]);
impl Serialize for BytesRef<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(self.0)
    }
}
fn serde_bytes_ref(b: &[u8]) -> BytesRef<'_> {
    BytesRef(b)
}

impl<'de> Deserialize<'de> for Value {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Value, D::Error> {
        d.deserialize_any(ValueVisitor)
    }
}

struct ValueVisitor;

impl<'de> Visitor<'de> for ValueVisitor {
    type Value = Value;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any msgpack value")
    }
    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::Int(v))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::from(v))
    }
    fn visit_f32<E>(self, v: f32) -> Result<Value, E> {
        Ok(Value::F32(v))
    }
    fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
        Ok(Value::F64(v))
    }
    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::Str(v.to_owned()))
    }
    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::Str(v))
    }
    fn visit_bytes<E>(self, v: &[u8]) -> Result<Value, E> {
        Ok(Value::Bin(v.to_vec()))
    }
    fn visit_byte_buf<E>(self, v: Vec<u8>) -> Result<Value, E> {
        Ok(Value::Bin(v))
    }
    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Nil)
    }
    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::Nil)
    }
    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        Value::deserialize(d)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut out = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(4096));
        while let Some(v) = seq.next_element()? {
            out.push(v);
        }
        Ok(Value::Array(out))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut out = Vec::with_capacity(map.size_hint().unwrap_or(0).min(4096));
        while let Some(k) = map.next_key::<KeyString>()? {
            out.push((k.0, map.next_value()?));
        }
        Ok(Value::Map(out))
    }
}

/// A map key: Vuer maps have string keys only.
struct KeyString(String);
impl<'de> Deserialize<'de> for KeyString {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = KeyString;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a string map key")
            }
            fn visit_str<E>(self, v: &str) -> Result<KeyString, E> {
                Ok(KeyString(v.to_owned()))
            }
            fn visit_string<E>(self, v: String) -> Result<KeyString, E> {
                Ok(KeyString(v))
            }
            fn visit_bytes<E: de::Error>(self, v: &[u8]) -> Result<KeyString, E> {
                String::from_utf8(v.to_vec())
                    .map(KeyString)
                    .map_err(|_| E::custom("map key is not valid UTF-8"))
            }
        }
        d.deserialize_str(V)
    }
}

impl fmt::Display for Value {
    /// A compact JSON-like rendering (bin as `<N bytes>`), for logs.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::Nil => f.write_str("null"),
            Value::Bool(b) => write!(f, "{b}"),
            Value::Int(i) => write!(f, "{i}"),
            Value::UInt(u) => write!(f, "{u}"),
            Value::F32(x) => write!(f, "{x}"),
            Value::F64(x) => write!(f, "{x}"),
            Value::Str(s) => write!(f, "{s:?}"),
            Value::Bin(b) => write!(f, "<{} bytes>", b.len()),
            Value::Ext(t, b) => write!(f, "<ext {t}: {} bytes>", b.len()),
            Value::Array(a) => {
                f.write_str("[")?;
                for (i, v) in a.iter().enumerate() {
                    if i > 0 {
                        f.write_str(", ")?;
                    }
                    write!(f, "{v}")?;
                }
                f.write_str("]")
            }
            Value::Map(m) => {
                f.write_str("{")?;
                for (i, (k, v)) in m.iter().enumerate() {
                    if i > 0 {
                        f.write_str(", ")?;
                    }
                    write!(f, "{k:?}: {v}")?;
                }
                f.write_str("}")
            }
        }
    }
}
