//! From the arena to serde: walks the objects the [`machine`](super::machine) built and
//! feeds them to a `Deserialize` implementation, refusing nesting deeper than
//! [`MAX_DEPTH`], containers that contain themselves and values that expand beyond the
//! budget.

use std::fmt;

use serde::de::{self, DeserializeOwned, DeserializeSeed, IntoDeserializer, Visitor};

use super::{BigInt, Global, Item, Obj, EXPANSION_FACTOR, MAX_DEPTH};

/// The error of the serde side of decoding.
#[derive(Debug)]
struct DeError(String);

impl fmt::Display for DeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for DeError {}

impl de::Error for DeError {
    fn custom<T: fmt::Display>(msg: T) -> Self {
        DeError(msg.to_string())
    }
}

/// Hands the value at `root` of the arena `objs` to `T`'s `Deserialize`, with `budget`
/// units of expansion (see [`EXPANSION_FACTOR`]).
pub(super) fn deserialize<T: DeserializeOwned>(
    objs: &[Obj<'_>],
    root: Item,
    budget: usize,
) -> std::result::Result<T, String> {
    let mut walker = Walker { objs, budget, depth: 0, active: vec![false; objs.len()] };
    walker
        .charge(root)
        .and_then(|()| T::deserialize(Node { w: &mut walker, item: root }))
        .map_err(|e| e.0)
}

/// Serde-side result.
type DeResult<T> = std::result::Result<T, DeError>;

/// Walks the arena for serde, with the depth, cycle and expansion guards.
struct Walker<'g, 'a> {
    /// The arena.
    objs: &'g [Obj<'a>],
    /// Units of expansion left (see [`EXPANSION_FACTOR`]).
    budget: usize,
    /// Containers currently entered.
    depth: usize,
    /// Which containers are being visited (a container inside itself is an error).
    active: Vec<bool>,
}

impl<'g, 'a> Walker<'g, 'a> {
    /// Charges the visit of `item`: one unit, plus its length for `str` and `bytes`.
    fn charge(&mut self, item: Item) -> DeResult<()> {
        let size = match item {
            Item::Obj(id) => match self.objs.get(id as usize) {
                Some(Obj::Str(s)) => s.len(),
                Some(Obj::Bytes(b)) => b.len(),
                _ => 0,
            },
            _ => 0,
        };
        self.budget = self.budget.checked_sub(size.saturating_add(1)).ok_or_else(|| {
            DeError(format!(
                "the value expands to more than {EXPANSION_FACTOR} times the pickle's \
                     size through shared references; refusing it"
            ))
        })?;
        Ok(())
    }

    /// Enters container `id`.
    fn enter(&mut self, id: u32) -> DeResult<()> {
        if self.depth >= MAX_DEPTH {
            return Err(DeError(format!("containers nested deeper than {MAX_DEPTH} levels")));
        }
        let slot = self
            .active
            .get_mut(id as usize)
            .ok_or_else(|| DeError("dangling object reference".into()))?;
        if *slot {
            return Err(DeError("a container contains itself (a recursive structure)".into()));
        }
        *slot = true;
        self.depth += 1;
        Ok(())
    }

    /// Leaves container `id`.
    fn leave(&mut self, id: u32) {
        if let Some(slot) = self.active.get_mut(id as usize) {
            *slot = false;
        }
        self.depth = self.depth.saturating_sub(1);
    }

    /// The object `item` refers to, if it is one.
    fn obj(&self, item: Item) -> Option<&'g Obj<'a>> {
        match item {
            Item::Obj(id) => self.objs.get(id as usize),
            _ => None,
        }
    }

    /// The integer value of `item`, if it is an int (not a bool, as in serde).
    fn int(&self, item: Item) -> Option<BigInt> {
        match item {
            Item::Int(i) => Some(BigInt::Signed(i.into())),
            Item::Obj(id) => match self.objs.get(id as usize) {
                Some(Obj::Int(i)) => Some(*i),
                _ => None,
            },
            _ => None,
        }
    }
}

/// One item, as a serde `Deserializer`.
struct Node<'w, 'g, 'a> {
    /// The walker, with the guards.
    w: &'w mut Walker<'g, 'a>,
    /// The item to hand over.
    item: Item,
}

/// Visits a Python int, choosing the serde method by its range.
fn visit_int<'de, V: Visitor<'de>>(value: BigInt, visitor: V) -> DeResult<V::Value> {
    match value {
        BigInt::Signed(v) => {
            if let Ok(v) = i64::try_from(v) {
                visitor.visit_i64(v)
            } else if let Ok(v) = u64::try_from(v) {
                visitor.visit_u64(v)
            } else {
                visitor.visit_i128(v)
            }
        }
        BigInt::Unsigned(v) => visitor.visit_u128(v),
        BigInt::TooBig { bits } => Err(too_big(bits)),
    }
}

/// The error for ints beyond 128 bits.
fn too_big(bits: u64) -> DeError {
    DeError(format!(
        "Python int of about {bits} bits is too large for any Rust integer (at most 128 bits)"
    ))
}

/// `deserialize_<int type>` methods: exact conversion or a clear error.
macro_rules! deserialize_int {
    ($($method:ident $visit:ident $ty:ty,)*) => {$(
        fn $method<V: Visitor<'de>>(self, visitor: V) -> DeResult<V::Value> {
            let Some(value) = self.w.int(self.item) else {
                return self.deserialize_any(visitor);
            };
            let converted = match value {
                BigInt::Signed(v) => <$ty>::try_from(v).map_err(|_| v.to_string()),
                BigInt::Unsigned(v) => <$ty>::try_from(v).map_err(|_| v.to_string()),
                BigInt::TooBig { bits } => return Err(too_big(bits)),
            };
            match converted {
                Ok(v) => visitor.$visit(v),
                Err(v) => Err(DeError(format!(
                    "Python int {v} does not fit in {}", stringify!($ty)
                ))),
            }
        }
    )*};
}

/// Hands the elements of list, tuple or set `id` to `visitor`, inside the guards.
///
/// Kept out of `Node::deserialize_any` so that each level of nesting costs less stack.
fn visit_items<'de, 'g, V: Visitor<'de>>(
    w: &mut Walker<'g, '_>,
    id: u32,
    items: &'g [Item],
    visitor: V,
) -> DeResult<V::Value> {
    w.enter(id)?;
    let mut seq = Seq { w: &mut *w, items: items.iter() };
    let value = visitor.visit_seq(&mut seq)?;
    let left = seq.items.len();
    w.leave(id);
    if left > 0 {
        return Err(leftover(items.len(), left, "elements"));
    }
    Ok(value)
}

/// Hands the entries of dict `id` to `visitor`, inside the guards.
fn visit_pairs<'de, 'g, V: Visitor<'de>>(
    w: &mut Walker<'g, '_>,
    id: u32,
    pairs: &'g [(Item, Item)],
    visitor: V,
) -> DeResult<V::Value> {
    w.enter(id)?;
    let mut map = Map { w: &mut *w, pairs: pairs.iter(), value: None };
    let value = visitor.visit_map(&mut map)?;
    let left = map.pairs.len();
    w.leave(id);
    if left > 0 {
        return Err(leftover(pairs.len(), left, "entries"));
    }
    Ok(value)
}

/// Hands `bytes` to `visitor` as a sequence of `u8` (for `Vec<u8>` and `[u8; N]`).
fn visit_bytes_as_seq<'de, V: Visitor<'de>>(bytes: &[u8], visitor: V) -> DeResult<V::Value> {
    let mut seq = de::value::SeqDeserializer::<_, DeError>::new(
        bytes.iter().copied().map(IntoDeserializer::into_deserializer),
    );
    let value = visitor.visit_seq(&mut seq)?;
    seq.end()?;
    Ok(value)
}

/// The error for a container with more elements than the target type takes.
#[cold]
fn leftover(len: usize, left: usize, what: &str) -> DeError {
    de::Error::invalid_length(len, &format!("{} {what}", len - left).as_str())
}

/// The error for a whitelisted global that reaches serde without being called.
#[cold]
fn uncalled(global: Global) -> DeError {
    DeError(format!("{} appears as a value (it may only be called)", global.name()))
}

impl<'de> de::Deserializer<'de> for Node<'_, '_, '_> {
    type Error = DeError;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> DeResult<V::Value> {
        let id = match self.item {
            Item::None => return visitor.visit_unit(),
            Item::Bool(b) => return visitor.visit_bool(b),
            Item::Int(i) => return visitor.visit_i64(i.into()),
            Item::Obj(id) => id,
        };
        let objs = self.w.objs;
        match objs.get(id as usize) {
            Some(Obj::Float(f)) => visitor.visit_f64(*f),
            Some(Obj::Int(i)) => visit_int(*i, visitor),
            Some(Obj::Str(s)) => visitor.visit_str(s),
            Some(Obj::Bytes(b)) => visitor.visit_bytes(b),
            Some(Obj::List(items) | Obj::Tuple(items) | Obj::Set(items)) => {
                visit_items(self.w, id, items, visitor)
            }
            Some(Obj::Dict(pairs)) => visit_pairs(self.w, id, pairs, visitor),
            Some(Obj::Global(g)) => Err(uncalled(*g)),
            None => Err(DeError("dangling object reference".into())),
        }
    }

    deserialize_int! {
        deserialize_i8 visit_i8 i8,
        deserialize_i16 visit_i16 i16,
        deserialize_i32 visit_i32 i32,
        deserialize_i64 visit_i64 i64,
        deserialize_i128 visit_i128 i128,
        deserialize_u8 visit_u8 u8,
        deserialize_u16 visit_u16 u16,
        deserialize_u32 visit_u32 u32,
        deserialize_u64 visit_u64 u64,
        deserialize_u128 visit_u128 u128,
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> DeResult<V::Value> {
        match self.item {
            Item::None => visitor.visit_none(),
            _ => visitor.visit_some(self),
        }
    }

    fn deserialize_unit<V: Visitor<'de>>(self, visitor: V) -> DeResult<V::Value> {
        match self.w.obj(self.item) {
            // Python's `()` is as empty as `None`.
            Some(Obj::Tuple(items)) if items.is_empty() => visitor.visit_unit(),
            _ => self.deserialize_any(visitor),
        }
    }

    fn deserialize_unit_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> DeResult<V::Value> {
        self.deserialize_unit(visitor)
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> DeResult<V::Value> {
        visitor.visit_newtype_struct(self)
    }

    fn deserialize_seq<V: Visitor<'de>>(self, visitor: V) -> DeResult<V::Value> {
        match self.w.obj(self.item) {
            // `bytes` into a `Vec<u8>` or `[u8; N]`: a sequence of small ints.
            Some(Obj::Bytes(bytes)) => visit_bytes_as_seq(bytes, visitor),
            _ => self.deserialize_any(visitor),
        }
    }

    fn deserialize_tuple<V: Visitor<'de>>(self, _len: usize, visitor: V) -> DeResult<V::Value> {
        self.deserialize_seq(visitor)
    }

    fn deserialize_tuple_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _len: usize,
        visitor: V,
    ) -> DeResult<V::Value> {
        self.deserialize_seq(visitor)
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _variants: &'static [&'static str],
        visitor: V,
    ) -> DeResult<V::Value> {
        // What serde-pickle writes: 'Unit', {'Variant': value}; and its older form:
        // ('Unit',), ('Variant', value).
        let (id, variant, value) = match (self.item, self.w.obj(self.item)) {
            (_, Some(Obj::Str(_))) => {
                return visitor.visit_enum(Enum { w: self.w, variant: self.item, value: None })
            }
            (Item::Obj(id), Some(Obj::Dict(pairs))) if pairs.len() == 1 => {
                (id, pairs[0].0, Some(pairs[0].1))
            }
            (Item::Obj(id), Some(Obj::Tuple(items))) if matches!(items.len(), 1 | 2) => {
                (id, items[0], items.get(1).copied())
            }
            _ => return Err(DeError("an enum must be a str or a dict with one entry".into())),
        };
        self.w.enter(id)?;
        self.w.charge(variant)?;
        if let Some(value) = value {
            self.w.charge(value)?;
        }
        let result = visitor.visit_enum(Enum { w: &mut *self.w, variant, value })?;
        self.w.leave(id);
        Ok(result)
    }

    fn deserialize_ignored_any<V: Visitor<'de>>(self, visitor: V) -> DeResult<V::Value> {
        // Nothing to check or build: skip without walking.
        visitor.visit_unit()
    }

    serde::forward_to_deserialize_any! {
        bool f32 f64 char str string bytes byte_buf map struct identifier
    }
}

/// The elements of a list, tuple or set.
struct Seq<'s, 'g, 'a> {
    /// The walker.
    w: &'s mut Walker<'g, 'a>,
    /// Elements not yet handed out.
    items: std::slice::Iter<'g, Item>,
}

impl<'de> de::SeqAccess<'de> for Seq<'_, '_, '_> {
    type Error = DeError;

    fn next_element_seed<T: DeserializeSeed<'de>>(
        &mut self,
        seed: T,
    ) -> DeResult<Option<T::Value>> {
        let Some(&item) = self.items.next() else {
            return Ok(None);
        };
        self.w.charge(item)?;
        seed.deserialize(Node { w: &mut *self.w, item }).map(Some)
    }

    fn size_hint(&self) -> Option<usize> {
        Some(self.items.len())
    }
}

/// The entries of a dict.
struct Map<'s, 'g, 'a> {
    /// The walker.
    w: &'s mut Walker<'g, 'a>,
    /// Entries not yet handed out.
    pairs: std::slice::Iter<'g, (Item, Item)>,
    /// The value of the entry whose key was just handed out.
    value: Option<Item>,
}

impl<'de> de::MapAccess<'de> for Map<'_, '_, '_> {
    type Error = DeError;

    fn next_key_seed<K: DeserializeSeed<'de>>(&mut self, seed: K) -> DeResult<Option<K::Value>> {
        let Some(&(key, value)) = self.pairs.next() else {
            return Ok(None);
        };
        self.value = Some(value);
        self.w.charge(key)?;
        seed.deserialize(Node { w: &mut *self.w, item: key }).map(Some)
    }

    fn next_value_seed<T: DeserializeSeed<'de>>(&mut self, seed: T) -> DeResult<T::Value> {
        let item = self
            .value
            .take()
            .ok_or_else(|| DeError("a dict value was asked for before its key".into()))?;
        self.w.charge(item)?;
        seed.deserialize(Node { w: &mut *self.w, item })
    }

    fn size_hint(&self) -> Option<usize> {
        Some(self.pairs.len())
    }
}

/// An enum: the variant's name and its value, if any.
struct Enum<'s, 'g, 'a> {
    /// The walker.
    w: &'s mut Walker<'g, 'a>,
    /// The variant's name.
    variant: Item,
    /// The variant's value.
    value: Option<Item>,
}

impl<'de, 's, 'g, 'a> de::EnumAccess<'de> for Enum<'s, 'g, 'a> {
    type Error = DeError;
    type Variant = Self;

    fn variant_seed<V: DeserializeSeed<'de>>(self, seed: V) -> DeResult<(V::Value, Self)> {
        let variant = seed.deserialize(Node { w: &mut *self.w, item: self.variant })?;
        Ok((variant, self))
    }
}

impl<'de> de::VariantAccess<'de> for Enum<'_, '_, '_> {
    type Error = DeError;

    fn unit_variant(self) -> DeResult<()> {
        match self.value {
            None | Some(Item::None) => Ok(()),
            Some(_) => Err(DeError("a unit variant with a value".into())),
        }
    }

    fn newtype_variant_seed<T: DeserializeSeed<'de>>(self, seed: T) -> DeResult<T::Value> {
        let item =
            self.value.ok_or_else(|| DeError("a newtype variant without its value".into()))?;
        seed.deserialize(Node { w: self.w, item })
    }

    fn tuple_variant<V: Visitor<'de>>(self, len: usize, visitor: V) -> DeResult<V::Value> {
        let item =
            self.value.ok_or_else(|| DeError("a tuple variant without its fields".into()))?;
        de::Deserializer::deserialize_tuple(Node { w: self.w, item }, len, visitor)
    }

    fn struct_variant<V: Visitor<'de>>(
        self,
        _fields: &'static [&'static str],
        visitor: V,
    ) -> DeResult<V::Value> {
        let item =
            self.value.ok_or_else(|| DeError("a struct variant without its fields".into()))?;
        de::Deserializer::deserialize_any(Node { w: self.w, item }, visitor)
    }
}
