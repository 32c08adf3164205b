//! A serde serializer that writes msgpack the way Vuer expects it.
//!
//! * Structs become **maps** with their field names (never arrays, which the
//!   Vuer server rejects by closing the session).
//! * `f32` stays `f32` and `f64` stays `f64`, unless the serializer runs in
//!   *all-f32* mode (the Python client's `use_single_float=True`), where every
//!   float is written as `f32` and a finite `f64` outside the `f32` range is an
//!   error, as it is for Python's `packb`.
//! * Byte strings (`serde_bytes`, `bytes::Bytes`) become `bin`.
//! * Map keys must be strings; anything else is rejected before it reaches
//!   the wire.
//! * Every header uses the smallest form, so the bytes match Python's.

use serde::ser::{self, Serialize};

use super::write::*;
use crate::error::EncodeError;

/// Writes `value` as msgpack into `out`.
pub(crate) fn to_msgpack<T: Serialize + ?Sized>(
    out: &mut Vec<u8>,
    value: &T,
    all_f32: bool,
) -> Result<(), EncodeError> {
    let mut s = Ser { out, all_f32 };
    value.serialize(&mut s)
}

pub(crate) struct Ser<'a> {
    out: &'a mut Vec<u8>,
    all_f32: bool,
}

impl ser::Error for EncodeError {
    fn custom<T: std::fmt::Display>(msg: T) -> Self {
        EncodeError::Custom(msg.to_string())
    }
}

impl<'a> Ser<'a> {
    #[inline]
    fn f64(&mut self, v: f64) -> Result<(), EncodeError> {
        if self.all_f32 {
            if v.is_finite() && v.abs() > f32::MAX as f64 {
                return Err(EncodeError::F32Overflow(v));
            }
            write_f32(self.out, v as f32);
        } else {
            write_f64(self.out, v);
        }
        Ok(())
    }

    #[inline]
    fn compound<'s>(&'s mut self, kind: Kind, len: Option<usize>) -> Compound<'s, 'a> {
        let start = self.out.len();
        match (kind, len) {
            (Kind::Array, Some(n)) => write_array_len(self.out, n),
            (Kind::Map, Some(n)) => write_map_len(self.out, n),
            // Unknown length: reserve the largest header and shrink it in `end`.
            (Kind::Array, None) => self.out.extend_from_slice(&[0xdd, 0, 0, 0, 0]),
            (Kind::Map, None) => self.out.extend_from_slice(&[0xdf, 0, 0, 0, 0]),
        }
        let header_len = self.out.len() - start;
        Compound {
            ser: self,
            kind,
            start,
            header_len,
            declared: len,
            count: 0,
        }
    }
}

#[derive(Clone, Copy)]
enum Kind {
    Array,
    Map,
}

pub(crate) struct Compound<'s, 'a> {
    ser: &'s mut Ser<'a>,
    kind: Kind,
    start: usize,
    header_len: usize,
    declared: Option<usize>,
    count: usize,
}

impl Compound<'_, '_> {
    #[inline]
    fn finish(self) -> Result<(), EncodeError> {
        if self.declared == Some(self.count) {
            return Ok(());
        }
        self.fix_header()
    }

    #[cold]
    fn fix_header(self) -> Result<(), EncodeError> {
        // The element count differs from the header written up front (unknown
        // length, or skipped fields): rewrite the header in canonical form.
        let mut header = Vec::with_capacity(5);
        match self.kind {
            Kind::Array => write_array_len(&mut header, self.count),
            Kind::Map => write_map_len(&mut header, self.count),
        }
        let range = self.start..self.start + self.header_len;
        if header.len() == self.header_len {
            self.ser.out[range].copy_from_slice(&header);
        } else {
            self.ser.out.splice(range, header);
        }
        Ok(())
    }

    /// Wraps a variant's content in a one-entry map `{variant: content}`.
    fn variant_prefix(ser: &mut Ser<'_>, variant: &str) {
        write_map_len(ser.out, 1);
        write_str(ser.out, variant);
    }
}

impl<'s, 'a> ser::Serializer for &'s mut Ser<'a> {
    type Ok = ();
    type Error = EncodeError;
    type SerializeSeq = Compound<'s, 'a>;
    type SerializeTuple = Compound<'s, 'a>;
    type SerializeTupleStruct = Compound<'s, 'a>;
    type SerializeTupleVariant = Compound<'s, 'a>;
    type SerializeMap = Compound<'s, 'a>;
    type SerializeStruct = Compound<'s, 'a>;
    type SerializeStructVariant = Compound<'s, 'a>;

    #[inline]
    fn serialize_bool(self, v: bool) -> Result<(), EncodeError> {
        write_bool(self.out, v);
        Ok(())
    }
    #[inline]
    fn serialize_i8(self, v: i8) -> Result<(), EncodeError> {
        write_int(self.out, v as i64);
        Ok(())
    }
    #[inline]
    fn serialize_i16(self, v: i16) -> Result<(), EncodeError> {
        write_int(self.out, v as i64);
        Ok(())
    }
    #[inline]
    fn serialize_i32(self, v: i32) -> Result<(), EncodeError> {
        write_int(self.out, v as i64);
        Ok(())
    }
    #[inline]
    fn serialize_i64(self, v: i64) -> Result<(), EncodeError> {
        write_int(self.out, v);
        Ok(())
    }
    #[inline]
    fn serialize_i128(self, v: i128) -> Result<(), EncodeError> {
        if let Ok(i) = i64::try_from(v) {
            write_int(self.out, i);
        } else if let Ok(u) = u64::try_from(v) {
            write_uint(self.out, u);
        } else {
            return Err(EncodeError::Custom(format!(
                "integer {v} does not fit in msgpack"
            )));
        }
        Ok(())
    }
    #[inline]
    fn serialize_u8(self, v: u8) -> Result<(), EncodeError> {
        write_uint(self.out, v as u64);
        Ok(())
    }
    #[inline]
    fn serialize_u16(self, v: u16) -> Result<(), EncodeError> {
        write_uint(self.out, v as u64);
        Ok(())
    }
    #[inline]
    fn serialize_u32(self, v: u32) -> Result<(), EncodeError> {
        write_uint(self.out, v as u64);
        Ok(())
    }
    #[inline]
    fn serialize_u64(self, v: u64) -> Result<(), EncodeError> {
        write_uint(self.out, v);
        Ok(())
    }
    #[inline]
    fn serialize_u128(self, v: u128) -> Result<(), EncodeError> {
        let u = u64::try_from(v)
            .map_err(|_| EncodeError::Custom(format!("integer {v} does not fit in msgpack")))?;
        write_uint(self.out, u);
        Ok(())
    }
    #[inline]
    fn serialize_f32(self, v: f32) -> Result<(), EncodeError> {
        write_f32(self.out, v);
        Ok(())
    }
    #[inline]
    fn serialize_f64(self, v: f64) -> Result<(), EncodeError> {
        self.f64(v)
    }
    #[inline]
    fn serialize_char(self, v: char) -> Result<(), EncodeError> {
        let mut buf = [0u8; 4];
        write_str(self.out, v.encode_utf8(&mut buf));
        Ok(())
    }
    #[inline]
    fn serialize_str(self, v: &str) -> Result<(), EncodeError> {
        write_str(self.out, v);
        Ok(())
    }
    #[inline]
    fn serialize_bytes(self, v: &[u8]) -> Result<(), EncodeError> {
        write_bin(self.out, v);
        Ok(())
    }
    #[inline]
    fn serialize_none(self) -> Result<(), EncodeError> {
        write_nil(self.out);
        Ok(())
    }
    #[inline]
    fn serialize_some<T: Serialize + ?Sized>(self, value: &T) -> Result<(), EncodeError> {
        value.serialize(self)
    }
    #[inline]
    fn serialize_unit(self) -> Result<(), EncodeError> {
        write_nil(self.out);
        Ok(())
    }
    #[inline]
    fn serialize_unit_struct(self, _name: &'static str) -> Result<(), EncodeError> {
        write_nil(self.out);
        Ok(())
    }
    #[inline]
    fn serialize_unit_variant(
        self,
        _name: &'static str,
        _index: u32,
        variant: &'static str,
    ) -> Result<(), EncodeError> {
        write_str(self.out, variant);
        Ok(())
    }
    #[inline]
    fn serialize_newtype_struct<T: Serialize + ?Sized>(
        self,
        _name: &'static str,
        value: &T,
    ) -> Result<(), EncodeError> {
        value.serialize(self)
    }
    #[inline]
    fn serialize_newtype_variant<T: Serialize + ?Sized>(
        self,
        _name: &'static str,
        _index: u32,
        variant: &'static str,
        value: &T,
    ) -> Result<(), EncodeError> {
        Compound::variant_prefix(self, variant);
        value.serialize(self)
    }
    #[inline]
    fn serialize_seq(self, len: Option<usize>) -> Result<Compound<'s, 'a>, EncodeError> {
        Ok(self.compound(Kind::Array, len))
    }
    #[inline]
    fn serialize_tuple(self, len: usize) -> Result<Compound<'s, 'a>, EncodeError> {
        Ok(self.compound(Kind::Array, Some(len)))
    }
    #[inline]
    fn serialize_tuple_struct(
        self,
        _name: &'static str,
        len: usize,
    ) -> Result<Compound<'s, 'a>, EncodeError> {
        Ok(self.compound(Kind::Array, Some(len)))
    }
    #[inline]
    fn serialize_tuple_variant(
        self,
        _name: &'static str,
        _index: u32,
        variant: &'static str,
        len: usize,
    ) -> Result<Compound<'s, 'a>, EncodeError> {
        Compound::variant_prefix(self, variant);
        Ok(self.compound(Kind::Array, Some(len)))
    }
    #[inline]
    fn serialize_map(self, len: Option<usize>) -> Result<Compound<'s, 'a>, EncodeError> {
        Ok(self.compound(Kind::Map, len))
    }
    #[inline]
    fn serialize_struct(
        self,
        _name: &'static str,
        len: usize,
    ) -> Result<Compound<'s, 'a>, EncodeError> {
        Ok(self.compound(Kind::Map, Some(len)))
    }
    #[inline]
    fn serialize_struct_variant(
        self,
        _name: &'static str,
        _index: u32,
        variant: &'static str,
        len: usize,
    ) -> Result<Compound<'s, 'a>, EncodeError> {
        Compound::variant_prefix(self, variant);
        Ok(self.compound(Kind::Map, Some(len)))
    }
    #[inline]
    fn collect_str<T: std::fmt::Display + ?Sized>(self, value: &T) -> Result<(), EncodeError> {
        write_str(self.out, &value.to_string());
        Ok(())
    }
}

macro_rules! seq_impl {
    ($trait:ident, $method:ident) => {
        impl ser::$trait for Compound<'_, '_> {
            type Ok = ();
            type Error = EncodeError;
            #[inline]
            fn $method<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), EncodeError> {
                self.count += 1;
                value.serialize(&mut *self.ser)
            }
            fn end(self) -> Result<(), EncodeError> {
                self.finish()
            }
        }
    };
}
seq_impl!(SerializeSeq, serialize_element);
seq_impl!(SerializeTuple, serialize_element);
seq_impl!(SerializeTupleStruct, serialize_field);
seq_impl!(SerializeTupleVariant, serialize_field);

impl ser::SerializeMap for Compound<'_, '_> {
    type Ok = ();
    type Error = EncodeError;
    #[inline]
    fn serialize_key<T: Serialize + ?Sized>(&mut self, key: &T) -> Result<(), EncodeError> {
        self.count += 1;
        key.serialize(KeySer {
            out: &mut *self.ser.out,
        })
    }
    #[inline]
    fn serialize_value<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), EncodeError> {
        value.serialize(&mut *self.ser)
    }
    #[inline]
    fn end(self) -> Result<(), EncodeError> {
        self.finish()
    }
}

macro_rules! struct_impl {
    ($trait:ident) => {
        impl ser::$trait for Compound<'_, '_> {
            type Ok = ();
            type Error = EncodeError;
            #[inline]
            fn serialize_field<T: Serialize + ?Sized>(
                &mut self,
                key: &'static str,
                value: &T,
            ) -> Result<(), EncodeError> {
                self.count += 1;
                write_str(self.ser.out, key);
                value.serialize(&mut *self.ser)
            }
            fn end(self) -> Result<(), EncodeError> {
                self.finish()
            }
        }
    };
}
struct_impl!(SerializeStruct);
struct_impl!(SerializeStructVariant);

/// Serializes map keys: strings only (a Vuer server closes the session on any
/// other key type), plus `char` and unit variants, which render as strings.
struct KeySer<'a> {
    out: &'a mut Vec<u8>,
}

fn non_string_key<T>(what: &'static str) -> Result<T, EncodeError> {
    Err(EncodeError::NonStringKey(what))
}

impl ser::Serializer for KeySer<'_> {
    type Ok = ();
    type Error = EncodeError;
    type SerializeSeq = ser::Impossible<(), EncodeError>;
    type SerializeTuple = ser::Impossible<(), EncodeError>;
    type SerializeTupleStruct = ser::Impossible<(), EncodeError>;
    type SerializeTupleVariant = ser::Impossible<(), EncodeError>;
    type SerializeMap = ser::Impossible<(), EncodeError>;
    type SerializeStruct = ser::Impossible<(), EncodeError>;
    type SerializeStructVariant = ser::Impossible<(), EncodeError>;

    #[inline]
    fn serialize_str(self, v: &str) -> Result<(), EncodeError> {
        write_str(self.out, v);
        Ok(())
    }
    #[inline]
    fn serialize_char(self, v: char) -> Result<(), EncodeError> {
        let mut buf = [0u8; 4];
        write_str(self.out, v.encode_utf8(&mut buf));
        Ok(())
    }
    #[inline]
    fn serialize_unit_variant(
        self,
        _: &'static str,
        _: u32,
        variant: &'static str,
    ) -> Result<(), EncodeError> {
        write_str(self.out, variant);
        Ok(())
    }
    #[inline]
    fn serialize_newtype_struct<T: Serialize + ?Sized>(
        self,
        _: &'static str,
        value: &T,
    ) -> Result<(), EncodeError> {
        value.serialize(self)
    }
    #[inline]
    fn collect_str<T: std::fmt::Display + ?Sized>(self, value: &T) -> Result<(), EncodeError> {
        write_str(self.out, &value.to_string());
        Ok(())
    }
    #[inline]
    fn serialize_bool(self, _: bool) -> Result<(), EncodeError> {
        non_string_key("bool")
    }
    #[inline]
    fn serialize_i8(self, _: i8) -> Result<(), EncodeError> {
        non_string_key("integer")
    }
    #[inline]
    fn serialize_i16(self, _: i16) -> Result<(), EncodeError> {
        non_string_key("integer")
    }
    #[inline]
    fn serialize_i32(self, _: i32) -> Result<(), EncodeError> {
        non_string_key("integer")
    }
    #[inline]
    fn serialize_i64(self, _: i64) -> Result<(), EncodeError> {
        non_string_key("integer")
    }
    #[inline]
    fn serialize_u8(self, _: u8) -> Result<(), EncodeError> {
        non_string_key("integer")
    }
    #[inline]
    fn serialize_u16(self, _: u16) -> Result<(), EncodeError> {
        non_string_key("integer")
    }
    #[inline]
    fn serialize_u32(self, _: u32) -> Result<(), EncodeError> {
        non_string_key("integer")
    }
    #[inline]
    fn serialize_u64(self, _: u64) -> Result<(), EncodeError> {
        non_string_key("integer")
    }
    #[inline]
    fn serialize_f32(self, _: f32) -> Result<(), EncodeError> {
        non_string_key("float")
    }
    #[inline]
    fn serialize_f64(self, _: f64) -> Result<(), EncodeError> {
        non_string_key("float")
    }
    #[inline]
    fn serialize_bytes(self, _: &[u8]) -> Result<(), EncodeError> {
        non_string_key("bytes")
    }
    #[inline]
    fn serialize_none(self) -> Result<(), EncodeError> {
        non_string_key("nil")
    }
    #[inline]
    fn serialize_some<T: Serialize + ?Sized>(self, _: &T) -> Result<(), EncodeError> {
        non_string_key("option")
    }
    #[inline]
    fn serialize_unit(self) -> Result<(), EncodeError> {
        non_string_key("nil")
    }
    #[inline]
    fn serialize_unit_struct(self, _: &'static str) -> Result<(), EncodeError> {
        non_string_key("nil")
    }
    #[inline]
    fn serialize_newtype_variant<T: Serialize + ?Sized>(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        _: &T,
    ) -> Result<(), EncodeError> {
        non_string_key("enum")
    }
    #[inline]
    fn serialize_seq(self, _: Option<usize>) -> Result<Self::SerializeSeq, EncodeError> {
        non_string_key("array")
    }
    #[inline]
    fn serialize_tuple(self, _: usize) -> Result<Self::SerializeTuple, EncodeError> {
        non_string_key("array")
    }
    #[inline]
    fn serialize_tuple_struct(
        self,
        _: &'static str,
        _: usize,
    ) -> Result<Self::SerializeTupleStruct, EncodeError> {
        non_string_key("array")
    }
    #[inline]
    fn serialize_tuple_variant(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        _: usize,
    ) -> Result<Self::SerializeTupleVariant, EncodeError> {
        non_string_key("enum")
    }
    #[inline]
    fn serialize_map(self, _: Option<usize>) -> Result<Self::SerializeMap, EncodeError> {
        non_string_key("map")
    }
    #[inline]
    fn serialize_struct(
        self,
        _: &'static str,
        _: usize,
    ) -> Result<Self::SerializeStruct, EncodeError> {
        non_string_key("map")
    }
    #[inline]
    fn serialize_struct_variant(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        _: usize,
    ) -> Result<Self::SerializeStructVariant, EncodeError> {
        non_string_key("enum")
    }
}
