//! The pickle codec: what CPython's `multiprocessing.connection.Connection.send` and `recv`
//! put on the wire.
//!
//! **Encoding** goes through [serde-pickle](https://docs.rs/serde-pickle) with pickle
//! protocol 3, which every CPython since 3.0 loads: `()` and `None` become `None`, Rust tuples
//! become Python tuples, sequences become lists, maps and structs become dicts, strings
//! become `str` and `serde_bytes` values become `bytes`. Unit enum variants become the
//! variant's name, other variants a one-entry dict `{name: value}`.
//!
//! **Decoding** is our own, because CPython may be a hostile peer and serde-pickle 1.2's
//! decoder is not built for that (it recurses once per nesting level while converting and
//! dropping values, so a deeply nested pickle overflows the stack; it turns class instances
//! into empty dicts; it cannot load `b''` from protocols 0–2, ints in `2**63..2**64` into
//! `u64`, or a shared list nested twice). This decoder:
//!
//! - reads protocols 0 to 5 for `None`, `bool`, `int`, `float`, `str`, `bytes`,
//!   `bytearray`, `list`, `tuple`, `dict`, `set` and `frozenset`;
//! - executes nothing: `GLOBAL`/`STACK_GLOBAL` are refused except for the five names
//!   CPython itself uses to spell bytes, bytearrays and sets in old protocols
//!   (`_codecs.encode`, `bytes`, `bytearray`, `set`, `frozenset`), and `REDUCE` only applies
//!   those, to data; `INST`, `OBJ`, `NEWOBJ`, `NEWOBJ_EX`, `BUILD`, `PERSID`, `BINPERSID`,
//!   `EXT1`/`EXT2`/`EXT4`, `NEXT_BUFFER` and `READONLY_BUFFER` are refused;
//! - checks every announced length against the bytes that are left before using it, and
//!   every memo index against the input's length, so a lie costs nothing;
//! - runs the pickle machine in a loop (no recursion) into a flat arena of objects that
//!   refer to each other by index, so nothing recurses while building or dropping it;
//! - then hands the result to serde, refusing nesting deeper than [`MAX_DEPTH`],
//!   containers that contain themselves, and values that memo references expand beyond
//!   [`EXPANSION_FACTOR`] times the pickle's length.
//!
//! Ints are exact up to 128 bits: a value reaches an integer type if it fits and is a
//! clear error otherwise (`Python int 18446744073709551616 does not fit in i64`).
//!
//! Costs, measured: decoding takes time linear in the input; its bookkeeping peaks at about
//! 42 bytes per input byte for the worst input (ten million `EMPTY_LIST` opcodes), about 10
//! for floods of `NONE` or `MEMOIZE` (CPython 3.11 needs about 70 and 8 for the same). The
//! [`MAX_DEPTH`] levels of nesting need about 640 KiB of stack in a debug build and 200 KiB
//! in a release build for simple target types, well within a thread's default 2 MiB.

use std::borrow::Cow;

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::error::{Error, Result};

mod machine;
mod walk;

use machine::Machine;

/// The deepest nesting of containers a decoded value may have (CPython's own default
/// recursion limit, 1000, is the same order of magnitude).
pub(crate) const MAX_DEPTH: usize = 256;

/// How many times the pickle's length the decoded value may add up to, counting one unit
/// per value and one per byte of `str` and `bytes`. Only memo references (the same object
/// appearing more than once) can make a value larger than its pickle, so this is what stops
/// a "billion laughs".
pub(crate) const EXPANSION_FACTOR: usize = 32;

/// Expansion allowed to any pickle, however short.
const EXPANSION_FLOOR: usize = 4096;

/// The highest protocol CPython writes (3.8 and later).
const HIGHEST_PROTOCOL: u8 = 5;

/// Appends the pickle (protocol 3) of `value` to `out`; on error `out` is left as it was.
pub(crate) fn encode_into<T: Serialize + ?Sized>(value: &T, out: &mut Vec<u8>) -> Result<()> {
    let start = out.len();
    serde_pickle::to_writer(out, &value, serde_pickle::SerOptions::new()).map_err(|e| {
        out.truncate(start);
        Error::Codec(format!("pickle: {e}"))
    })
}

/// Decodes one pickled value from `bytes`, which must hold exactly one pickle.
pub(crate) fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T> {
    let (objs, root) = Machine::new(bytes).run().map_err(Error::Codec)?;
    let budget = bytes.len().saturating_mul(EXPANSION_FACTOR).saturating_add(EXPANSION_FLOOR);
    walk::deserialize(&objs, root, budget).map_err(|e| Error::Codec(format!("pickle: {e}")))
}

// ---------------------------------------------------------------------------------------
// The object model.

/// A value on the machine's stack, in the memo or inside a container: small values inline,
/// everything else an index into the arena, so that sharing (the memo) and mutation
/// (`APPEND` to a memoized list) behave as in Python without reference counting.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Item {
    /// `None`.
    None,
    /// `True` or `False`.
    Bool(bool),
    /// An int that fits in 32 bits.
    Int(i32),
    /// Index of an [`Obj`] in the arena.
    Obj(u32),
}

/// An integer wider than 32 bits.
#[derive(Clone, Copy, Debug, PartialEq)]
enum BigInt {
    /// Any value in `i128`'s range.
    Signed(i128),
    /// A value above `i128::MAX` that fits in `u128`.
    Unsigned(u128),
    /// Anything wider than 128 bits; `bits` is roughly its width.
    TooBig {
        /// Approximate number of bits.
        bits: u64,
    },
}

/// A Python object built by the pickle machine.
#[derive(Debug)]
enum Obj<'a> {
    /// `float`.
    Float(f64),
    /// `int` that does not fit in 32 bits.
    Int(BigInt),
    /// `str`, borrowed from the input when it was UTF-8 there.
    Str(Cow<'a, str>),
    /// `bytes` or `bytearray` (and Python 2 `str`).
    Bytes(Cow<'a, [u8]>),
    /// `list`.
    List(Vec<Item>),
    /// `tuple`.
    Tuple(Vec<Item>),
    /// `dict`, in insertion order.
    Dict(Vec<(Item, Item)>),
    /// `set` or `frozenset`.
    Set(Vec<Item>),
    /// One of the few callables a pickle may name (see [`Global`]).
    Global(Global),
}

/// The only module globals a pickle may name: the constructors CPython uses to spell
/// `bytes`, `bytearray`, `set` and `frozenset` in protocols that lack opcodes for them.
/// They are never called; [`Machine::reduce`] computes their result for data arguments.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Global {
    /// `_codecs.encode(str, 'latin1')`: bytes in protocols 0–2.
    CodecsEncode,
    /// `bytes()`: empty bytes in protocols 0–2.
    Bytes,
    /// `bytearray(...)`.
    Bytearray,
    /// `set(list)`.
    Set,
    /// `frozenset(list)`.
    FrozenSet,
}

impl Global {
    /// Looks a `module.name` pair up; anything not listed is refused.
    fn find(module: &[u8], name: &[u8]) -> std::result::Result<Global, String> {
        let builtins = module == b"builtins" || module == b"__builtin__";
        match (module, name) {
            (b"_codecs", b"encode") => Ok(Global::CodecsEncode),
            (_, b"bytes") if builtins => Ok(Global::Bytes),
            (_, b"bytearray") if builtins => Ok(Global::Bytearray),
            (_, b"set") if builtins => Ok(Global::Set),
            (_, b"frozenset") if builtins => Ok(Global::FrozenSet),
            _ => Err(format!(
                "refusing to load global {}.{}: only plain data (None, bool, int, float, str, \
                 bytes, list, tuple, dict, set) can be decoded",
                printable(module),
                printable(name)
            )),
        }
    }

    /// The Python spelling, for messages.
    fn name(self) -> &'static str {
        match self {
            Global::CodecsEncode => "_codecs.encode",
            Global::Bytes => "builtins.bytes",
            Global::Bytearray => "builtins.bytearray",
            Global::Set => "builtins.set",
            Global::FrozenSet => "builtins.frozenset",
        }
    }
}

/// At most 60 characters of `bytes`, lossily decoded, for error messages.
fn printable(bytes: &[u8]) -> String {
    let cut = &bytes[..bytes.len().min(60)];
    let mut s = String::from_utf8_lossy(cut).escape_debug().to_string();
    if bytes.len() > cut.len() {
        s.push('…');
    }
    s
}
