//! The codecs on untrusted bytes: `Codec::Pickle.decode` (our own pickle machine, which a
//! hostile CPython peer feeds) and `Codec::Postcard.decode`, into several target types,
//! among them a self-describing `Any` that takes whatever the pickle holds. A value that
//! decodes must encode again and decode to the same value.
#![no_main]

use std::collections::{BTreeMap, HashMap};
use std::fmt;

use libfuzzer_sys::fuzz_target;
use multiproc::Codec;
use serde::de::{self, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::{Deserialize, Serialize, Serializer};

fuzz_target!(|data: &[u8]| {
    let Some((&selector, bytes)) = data.split_first() else { return };
    let codec = if selector & 0x80 == 0 { Codec::Pickle } else { Codec::Postcard };
    match selector % 8 {
        0 => round_trip::<Any>(codec, bytes),
        1 => round_trip::<(i64, String, Option<f64>)>(codec, bytes),
        2 => round_trip::<Vec<Vec<u8>>>(codec, bytes),
        3 => round_trip::<HashMap<String, Vec<i32>>>(codec, bytes),
        4 => round_trip::<BTreeMap<i64, Option<bool>>>(codec, bytes),
        5 => round_trip::<(u128, i128, u64, i8, char)>(codec, bytes),
        6 => round_trip::<Shape>(codec, bytes),
        _ => round_trip::<Vec<(String, Any)>>(codec, bytes),
    }
});

fn round_trip<T>(codec: Codec, bytes: &[u8])
where
    T: serde::de::DeserializeOwned + Serialize + PartialEq + fmt::Debug,
{
    let Ok(value) = codec.decode::<T>(bytes) else { return };
    let mut encoded = Vec::new();
    // Some values cannot be written back in every codec (a map with non-string keys in
    // pickle is fine, but e.g. a `u128` above `i64` may not be); that is not a decoder bug.
    if codec.encode_into(&value, &mut encoded).is_err() {
        return;
    }
    match codec.decode::<T>(&encoded) {
        // `Debug` equality covers NaNs inside ordinary types.
        Ok(again) => assert!(
            value == again || format!("{value:?}") == format!("{again:?}"),
            "a decoded value changed after a round trip: {value:?} became {again:?}"
        ),
        Err(e) => panic!("{value:?} encoded as {encoded:?} does not decode: {e}"),
    }
}

#[derive(Debug, PartialEq, Serialize, Deserialize)]
enum Shape {
    Unit,
    Newtype(u16),
    Tuple(String, Vec<u8>),
    Struct { name: String, children: Vec<Shape> },
}

/// Any value, as the decoder presents it through `deserialize_any`.
#[derive(Debug, Clone)]
enum Any {
    Unit,
    Bool(bool),
    Int(i128),
    UInt(u128),
    Float(f64),
    Str(String),
    Bytes(Vec<u8>),
    Seq(Vec<Any>),
    Map(Vec<(Any, Any)>),
    Some(Box<Any>),
}

impl PartialEq for Any {
    fn eq(&self, other: &Any) -> bool {
        use Any::*;
        match (self, other) {
            (Unit, Unit) => true,
            (Bool(a), Bool(b)) => a == b,
            (Int(a), Int(b)) => a == b,
            (UInt(a), UInt(b)) => a == b,
            (Int(a), UInt(b)) | (UInt(b), Int(a)) => u128::try_from(*a).is_ok_and(|a| a == *b),
            (Float(a), Float(b)) => a.to_bits() == b.to_bits() || (a.is_nan() && b.is_nan()),
            (Str(a), Str(b)) => a == b,
            (Bytes(a), Bytes(b)) => a == b,
            (Seq(a), Seq(b)) => a == b,
            (Map(a), Map(b)) => a == b,
            // `None`/`Some` only exist in formats that mark them.
            (Some(a), b) | (b, Some(a)) => **a == *b,
            _ => false,
        }
    }
}

impl Serialize for Any {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Any::Unit => s.serialize_unit(),
            Any::Bool(b) => s.serialize_bool(*b),
            Any::Int(i) => match i64::try_from(*i) {
                Ok(i) => s.serialize_i64(i),
                Err(_) => s.serialize_i128(*i),
            },
            Any::UInt(u) => match u64::try_from(*u) {
                Ok(u) => s.serialize_u64(u),
                Err(_) => s.serialize_u128(*u),
            },
            Any::Float(f) => s.serialize_f64(*f),
            Any::Str(v) => s.serialize_str(v),
            Any::Bytes(v) => s.serialize_bytes(v),
            Any::Seq(v) => v.serialize(s),
            Any::Map(v) => {
                use serde::ser::SerializeMap;
                let mut m = s.serialize_map(Some(v.len()))?;
                for (k, v) in v {
                    m.serialize_entry(k, v)?;
                }
                m.end()
            }
            Any::Some(v) => s.serialize_some(v),
        }
    }
}

impl<'de> Deserialize<'de> for Any {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Any, D::Error> {
        d.deserialize_any(AnyVisitor)
    }
}

struct AnyVisitor;

impl<'de> Visitor<'de> for AnyVisitor {
    type Value = Any;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any value")
    }
    fn visit_unit<E>(self) -> Result<Any, E> {
        Ok(Any::Unit)
    }
    fn visit_none<E>(self) -> Result<Any, E> {
        Ok(Any::Unit)
    }
    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Any, D::Error> {
        Ok(Any::Some(Box::new(Any::deserialize(d)?)))
    }
    fn visit_bool<E>(self, v: bool) -> Result<Any, E> {
        Ok(Any::Bool(v))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Any, E> {
        Ok(Any::Int(v.into()))
    }
    fn visit_i128<E>(self, v: i128) -> Result<Any, E> {
        Ok(Any::Int(v))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Any, E> {
        Ok(Any::UInt(v.into()))
    }
    fn visit_u128<E>(self, v: u128) -> Result<Any, E> {
        Ok(Any::UInt(v))
    }
    fn visit_f64<E>(self, v: f64) -> Result<Any, E> {
        Ok(Any::Float(v))
    }
    fn visit_str<E>(self, v: &str) -> Result<Any, E> {
        Ok(Any::Str(v.to_owned()))
    }
    fn visit_string<E>(self, v: String) -> Result<Any, E> {
        Ok(Any::Str(v))
    }
    fn visit_bytes<E>(self, v: &[u8]) -> Result<Any, E> {
        Ok(Any::Bytes(v.to_owned()))
    }
    fn visit_byte_buf<E>(self, v: Vec<u8>) -> Result<Any, E> {
        Ok(Any::Bytes(v))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Any, A::Error> {
        let mut out = Vec::new();
        while let Some(v) = seq.next_element()? {
            out.push(v);
        }
        Ok(Any::Seq(out))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Any, A::Error> {
        let mut out = Vec::new();
        while let Some(kv) = map.next_entry()? {
            out.push(kv);
        }
        Ok(Any::Map(out))
    }
    fn visit_enum<A: de::EnumAccess<'de>>(self, _: A) -> Result<Any, A::Error> {
        Err(de::Error::custom("enums are not values"))
    }
}
