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
use std::fmt;

use serde::de::{self, DeserializeOwned, DeserializeSeed, IntoDeserializer, Visitor};
use serde::Serialize;

use crate::error::{Error, Result};

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
    let mut walker = Walker { objs: &objs, budget, depth: 0, active: vec![false; objs.len()] };
    walker
        .charge(root)
        .and_then(|()| T::deserialize(Node { w: &mut walker, item: root }))
        .map_err(|e| Error::Codec(format!("pickle: {e}")))
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

// ---------------------------------------------------------------------------------------
// The pickle machine.

/// Opcodes, named as in CPython's `pickle.py`.
mod op {
    pub const MARK: u8 = b'(';
    pub const STOP: u8 = b'.';
    pub const POP: u8 = b'0';
    pub const POP_MARK: u8 = b'1';
    pub const DUP: u8 = b'2';
    pub const FLOAT: u8 = b'F';
    pub const INT: u8 = b'I';
    pub const BININT: u8 = b'J';
    pub const BININT1: u8 = b'K';
    pub const LONG: u8 = b'L';
    pub const BININT2: u8 = b'M';
    pub const NONE: u8 = b'N';
    pub const PERSID: u8 = b'P';
    pub const BINPERSID: u8 = b'Q';
    pub const REDUCE: u8 = b'R';
    pub const STRING: u8 = b'S';
    pub const BINSTRING: u8 = b'T';
    pub const SHORT_BINSTRING: u8 = b'U';
    pub const UNICODE: u8 = b'V';
    pub const BINUNICODE: u8 = b'X';
    pub const APPEND: u8 = b'a';
    pub const BUILD: u8 = b'b';
    pub const GLOBAL: u8 = b'c';
    pub const DICT: u8 = b'd';
    pub const EMPTY_DICT: u8 = b'}';
    pub const APPENDS: u8 = b'e';
    pub const GET: u8 = b'g';
    pub const BINGET: u8 = b'h';
    pub const INST: u8 = b'i';
    pub const LONG_BINGET: u8 = b'j';
    pub const LIST: u8 = b'l';
    pub const EMPTY_LIST: u8 = b']';
    pub const OBJ: u8 = b'o';
    pub const PUT: u8 = b'p';
    pub const BINPUT: u8 = b'q';
    pub const LONG_BINPUT: u8 = b'r';
    pub const SETITEM: u8 = b's';
    pub const TUPLE: u8 = b't';
    pub const EMPTY_TUPLE: u8 = b')';
    pub const SETITEMS: u8 = b'u';
    pub const BINFLOAT: u8 = b'G';
    pub const PROTO: u8 = 0x80;
    pub const NEWOBJ: u8 = 0x81;
    pub const EXT1: u8 = 0x82;
    pub const EXT2: u8 = 0x83;
    pub const EXT4: u8 = 0x84;
    pub const TUPLE1: u8 = 0x85;
    pub const TUPLE2: u8 = 0x86;
    pub const TUPLE3: u8 = 0x87;
    pub const NEWTRUE: u8 = 0x88;
    pub const NEWFALSE: u8 = 0x89;
    pub const LONG1: u8 = 0x8a;
    pub const LONG4: u8 = 0x8b;
    pub const BINBYTES: u8 = b'B';
    pub const SHORT_BINBYTES: u8 = b'C';
    pub const SHORT_BINUNICODE: u8 = 0x8c;
    pub const BINUNICODE8: u8 = 0x8d;
    pub const BINBYTES8: u8 = 0x8e;
    pub const EMPTY_SET: u8 = 0x8f;
    pub const ADDITEMS: u8 = 0x90;
    pub const FROZENSET: u8 = 0x91;
    pub const NEWOBJ_EX: u8 = 0x92;
    pub const STACK_GLOBAL: u8 = 0x93;
    pub const MEMOIZE: u8 = 0x94;
    pub const FRAME: u8 = 0x95;
    pub const BYTEARRAY8: u8 = 0x96;
    pub const NEXT_BUFFER: u8 = 0x97;
    pub const READONLY_BUFFER: u8 = 0x98;
}

/// The name of an opcode this decoder refuses, or `None` if it is not one of them.
fn refused_opcode(code: u8) -> Option<&'static str> {
    Some(match code {
        op::INST => "INST",
        op::OBJ => "OBJ",
        op::NEWOBJ => "NEWOBJ",
        op::NEWOBJ_EX => "NEWOBJ_EX",
        op::BUILD => "BUILD",
        op::PERSID => "PERSID",
        op::BINPERSID => "BINPERSID",
        op::EXT1 => "EXT1",
        op::EXT2 => "EXT2",
        op::EXT4 => "EXT4",
        op::NEXT_BUFFER => "NEXT_BUFFER",
        op::READONLY_BUFFER => "READONLY_BUFFER",
        _ => return None,
    })
}

/// A parse error's message; the position is added by [`Machine::run`].
type Fail = String;

/// Runs a pickle's opcodes, without executing anything, into an arena of [`Obj`]s.
///
/// Memory: every opcode reads at least one byte and adds at most one stack slot (8 bytes),
/// one arena object (32 bytes) and one memo slot (8 bytes); strings are borrowed from the
/// input. The only copies (of `str`, `bytes` and lists handed to the whitelisted
/// constructors) are charged to `copy_budget`, one input length in all.
struct Machine<'a> {
    /// The whole pickle.
    input: &'a [u8],
    /// Offset of the next byte to read.
    pos: usize,
    /// The stack; items above `marks.last()` form the current frame.
    stack: Vec<Item>,
    /// Stack lengths at each open `MARK`.
    marks: Vec<usize>,
    /// The memo; indices are bounded by the input's length.
    memo: Vec<Option<Item>>,
    /// Number of filled memo slots (where `MEMOIZE` stores).
    memo_count: usize,
    /// All objects built so far.
    objs: Vec<Obj<'a>>,
    /// Bytes (or items) that may still be copied by `REDUCE`.
    copy_budget: usize,
}

impl<'a> Machine<'a> {
    /// A machine about to read `input`.
    fn new(input: &'a [u8]) -> Machine<'a> {
        Machine {
            input,
            pos: 0,
            stack: Vec::new(),
            marks: Vec::new(),
            memo: Vec::new(),
            memo_count: 0,
            objs: Vec::new(),
            copy_budget: input.len().saturating_add(1024),
        }
    }

    /// Runs the pickle to its `STOP`; returns the arena and the pickled value.
    fn run(mut self) -> std::result::Result<(Vec<Obj<'a>>, Item), String> {
        loop {
            let at = self.pos;
            let Some(&code) = self.input.get(at) else {
                return Err(if at == 0 {
                    "pickle: empty input".to_string()
                } else {
                    format!("pickle: truncated: no STOP opcode in {at} bytes")
                });
            };
            self.pos += 1;
            match self.step(code) {
                Ok(false) => {}
                Ok(true) => {
                    let root = self.finish().map_err(|e| format!("pickle: {e}"))?;
                    return Ok((self.objs, root));
                }
                Err(e) => {
                    return Err(format!("pickle: {e} (opcode 0x{code:02x} at byte {at})"));
                }
            }
        }
    }

    /// Checks the machine's state at `STOP` and returns the value.
    fn finish(&self) -> std::result::Result<Item, Fail> {
        if !self.marks.is_empty() {
            return Err(format!("STOP with {} unclosed MARKs", self.marks.len()));
        }
        if self.stack.len() != 1 {
            return Err(format!("STOP with {} items on the stack instead of 1", self.stack.len()));
        }
        if self.pos != self.input.len() {
            return Err(format!("{} trailing bytes after STOP", self.input.len() - self.pos));
        }
        Ok(self.stack[0])
    }

    /// Executes one opcode; `Ok(true)` at `STOP`.
    fn step(&mut self, code: u8) -> std::result::Result<bool, Fail> {
        match code {
            op::STOP => return Ok(true),
            op::PROTO => {
                let version = self.byte()?;
                if version > HIGHEST_PROTOCOL {
                    return Err(format!("unsupported pickle protocol {version}"));
                }
            }
            op::FRAME => {
                // Frames only help buffered readers; check the length and go on.
                let len = self.u64le()?;
                self.check_len(len)?;
            }
            op::MARK => self.marks.push(self.stack.len()),
            op::POP => {
                if self.stack.len() > self.floor() {
                    self.stack.pop();
                } else {
                    self.pop_mark()?;
                }
            }
            op::POP_MARK => {
                self.pop_mark()?;
            }
            op::DUP => {
                let top = self.top()?;
                self.stack.push(top);
            }

            // Memo.
            op::PUT => {
                let line = self.line()?;
                let index = parse_index(line)?;
                self.put(index)?;
            }
            op::BINPUT => {
                let index = self.byte()?;
                self.put(index.into())?;
            }
            op::LONG_BINPUT => {
                let index = self.u32le()?;
                self.put(index.into())?;
            }
            op::MEMOIZE => self.put(self.memo_count as u64)?,
            op::GET => {
                let line = self.line()?;
                let index = parse_index(line)?;
                self.get(index)?;
            }
            op::BINGET => {
                let index = self.byte()?;
                self.get(index.into())?;
            }
            op::LONG_BINGET => {
                let index = self.u32le()?;
                self.get(index.into())?;
            }

            // Constants and numbers.
            op::NONE => self.stack.push(Item::None),
            op::NEWTRUE => self.stack.push(Item::Bool(true)),
            op::NEWFALSE => self.stack.push(Item::Bool(false)),
            op::INT => {
                let line = trim_cr(self.line()?);
                match line {
                    b"01" => self.stack.push(Item::Bool(true)),
                    b"00" => self.stack.push(Item::Bool(false)),
                    _ => {
                        let value = parse_text_int(line)?;
                        self.push_int(value)?;
                    }
                }
            }
            op::LONG => {
                let mut line = trim_cr(self.line()?);
                if let Some(rest) = line.strip_suffix(b"L") {
                    line = rest;
                }
                let value = parse_text_int(line)?;
                self.push_int(value)?;
            }
            op::BININT => {
                let value = i32::from_le_bytes(self.array()?);
                self.stack.push(Item::Int(value));
            }
            op::BININT1 => {
                let value = self.byte()?;
                self.stack.push(Item::Int(value.into()));
            }
            op::BININT2 => {
                let value = u16::from_le_bytes(self.array()?);
                self.stack.push(Item::Int(value.into()));
            }
            op::LONG1 => {
                let len = self.byte()?;
                let bytes = self.take(len.into())?;
                self.push_int(decode_long(bytes))?;
            }
            op::LONG4 => {
                let len = self.i32_len()?;
                let bytes = self.take(len)?;
                self.push_int(decode_long(bytes))?;
            }
            op::FLOAT => {
                let line = self.line()?;
                let value = std::str::from_utf8(line)
                    .ok()
                    .and_then(|s| s.trim().parse::<f64>().ok())
                    .ok_or_else(|| format!("invalid FLOAT literal {:?}", printable(line)))?;
                self.push_obj(Obj::Float(value))?;
            }
            op::BINFLOAT => {
                let value = f64::from_be_bytes(self.array()?);
                self.push_obj(Obj::Float(value))?;
            }

            // Strings.
            op::SHORT_BINUNICODE => {
                let len = self.byte()?;
                self.push_utf8(len.into())?;
            }
            op::BINUNICODE => {
                let len = self.u32le()?;
                self.push_utf8(len.into())?;
            }
            op::BINUNICODE8 => {
                let len = self.u64le()?;
                self.push_utf8(len)?;
            }
            op::UNICODE => {
                let line = self.line()?;
                let text = raw_unicode_escape_decode(line)?;
                self.push_obj(Obj::Str(text))?;
            }
            op::SHORT_BINBYTES | op::SHORT_BINSTRING => {
                let len = self.byte()?;
                let bytes = self.take(len.into())?;
                self.push_obj(Obj::Bytes(Cow::Borrowed(bytes)))?;
            }
            op::BINBYTES => {
                let len = self.u32le()?;
                let bytes = self.take(len.into())?;
                self.push_obj(Obj::Bytes(Cow::Borrowed(bytes)))?;
            }
            op::BINSTRING => {
                let len = self.i32_len()?;
                let bytes = self.take(len)?;
                self.push_obj(Obj::Bytes(Cow::Borrowed(bytes)))?;
            }
            op::BINBYTES8 | op::BYTEARRAY8 => {
                let len = self.u64le()?;
                let bytes = self.take(len)?;
                self.push_obj(Obj::Bytes(Cow::Borrowed(bytes)))?;
            }
            op::STRING => {
                let line = trim_cr(self.line()?);
                let bytes = string_escape_decode(line)?;
                self.push_obj(Obj::Bytes(Cow::Owned(bytes)))?;
            }

            // Tuples.
            op::EMPTY_TUPLE => self.push_obj(Obj::Tuple(Vec::new()))?,
            op::TUPLE1 | op::TUPLE2 | op::TUPLE3 => {
                let n = usize::from(code - op::TUPLE1) + 1;
                let floor = self.floor();
                if self.stack.len() < floor + n {
                    return Err("stack underflow".into());
                }
                let items = self.stack.split_off(self.stack.len() - n);
                self.push_obj(Obj::Tuple(items))?;
            }
            op::TUPLE => {
                let items = self.pop_mark()?;
                self.push_obj(Obj::Tuple(items))?;
            }

            // Lists.
            op::EMPTY_LIST => self.push_obj(Obj::List(Vec::new()))?,
            op::LIST => {
                let items = self.pop_mark()?;
                self.push_obj(Obj::List(items))?;
            }
            op::APPEND => {
                let value = self.pop()?;
                let target = self.top()?;
                match self.obj_mut(target) {
                    Some(Obj::List(list)) => list.push(value),
                    _ => return Err("APPEND to something that is not a list".into()),
                }
            }
            op::APPENDS => {
                let items = self.pop_mark()?;
                let target = self.top()?;
                match self.obj_mut(target) {
                    Some(Obj::List(list)) => list.extend(items),
                    _ => return Err("APPENDS to something that is not a list".into()),
                }
            }

            // Dicts.
            op::EMPTY_DICT => self.push_obj(Obj::Dict(Vec::new()))?,
            op::DICT => {
                let items = self.pop_mark()?;
                let pairs = pairs(items)?;
                self.push_obj(Obj::Dict(pairs))?;
            }
            op::SETITEM => {
                let value = self.pop()?;
                let key = self.pop()?;
                let target = self.top()?;
                match self.obj_mut(target) {
                    Some(Obj::Dict(dict)) => dict.push((key, value)),
                    _ => return Err("SETITEM on something that is not a dict".into()),
                }
            }
            op::SETITEMS => {
                let items = self.pop_mark()?;
                let new = pairs(items)?;
                let target = self.top()?;
                match self.obj_mut(target) {
                    Some(Obj::Dict(dict)) => dict.extend(new),
                    _ => return Err("SETITEMS on something that is not a dict".into()),
                }
            }

            // Sets.
            op::EMPTY_SET => self.push_obj(Obj::Set(Vec::new()))?,
            op::ADDITEMS => {
                let items = self.pop_mark()?;
                let target = self.top()?;
                match self.obj_mut(target) {
                    Some(Obj::Set(set)) => set.extend(items),
                    _ => return Err("ADDITEMS to something that is not a set".into()),
                }
            }
            op::FROZENSET => {
                let items = self.pop_mark()?;
                self.push_obj(Obj::Set(items))?;
            }

            // The few globals CPython uses for data, and their application.
            op::GLOBAL => {
                let module = self.line()?;
                let name = self.line()?;
                let global = Global::find(module, name)?;
                self.push_obj(Obj::Global(global))?;
            }
            op::STACK_GLOBAL => {
                let name = self.pop()?;
                let module = self.pop()?;
                let global = match (self.obj(module), self.obj(name)) {
                    (Some(Obj::Str(module)), Some(Obj::Str(name))) => {
                        Global::find(module.as_bytes(), name.as_bytes())?
                    }
                    _ => return Err("STACK_GLOBAL needs two str".into()),
                };
                self.push_obj(Obj::Global(global))?;
            }
            op::REDUCE => {
                let args = self.pop()?;
                let callable = self.pop()?;
                let global = match self.obj(callable) {
                    Some(Obj::Global(global)) => *global,
                    _ => return Err("REDUCE on something that is not an allowed global".into()),
                };
                let result = self.reduce(global, args)?;
                self.push_obj(result)?;
            }

            code => {
                return Err(match refused_opcode(code) {
                    Some(name) => format!(
                        "refusing opcode {name}: it builds objects by calling code, and only \
                         plain data can be decoded"
                    ),
                    None => format!("unknown opcode 0x{code:02x}"),
                })
            }
        }
        Ok(false)
    }

    /// What `global(*args)` would return, for the whitelisted globals and data arguments.
    fn reduce(&mut self, global: Global, args: Item) -> std::result::Result<Obj<'a>, Fail> {
        let args: Vec<Item> = match self.obj(args) {
            Some(Obj::Tuple(args)) => args.clone(),
            _ => return Err("REDUCE arguments are not a tuple".into()),
        };
        let bad = || format!("unexpected arguments to {}", global.name());
        match (global, args.as_slice()) {
            (Global::Bytes | Global::Bytearray, []) => Ok(Obj::Bytes(Cow::Borrowed(&[]))),
            (Global::Bytes | Global::Bytearray, [arg]) => match self.obj(*arg) {
                Some(Obj::Bytes(bytes)) => {
                    let bytes = bytes.clone();
                    self.charge_copy(bytes.len())?;
                    Ok(Obj::Bytes(bytes))
                }
                _ => Err(bad()),
            },
            (Global::CodecsEncode | Global::Bytearray, [text, encoding]) => {
                let encoding = match self.obj(*encoding) {
                    Some(Obj::Str(e)) => e.to_ascii_lowercase().replace('_', "-"),
                    _ => return Err(bad()),
                };
                let text = match self.obj(*text) {
                    Some(Obj::Str(text)) => text.clone(),
                    _ => return Err(bad()),
                };
                self.charge_copy(text.len())?;
                let bytes = match encoding.as_str() {
                    "latin1" | "latin-1" | "iso-8859-1" | "iso8859-1" | "l1" => text
                        .chars()
                        .map(|c| u8::try_from(u32::from(c)))
                        .collect::<std::result::Result<Vec<u8>, _>>()
                        .map_err(|_| "a latin-1 string holds a character above U+00FF")?,
                    "utf-8" | "utf8" => text.into_owned().into_bytes(),
                    _ => {
                        return Err(format!(
                            "unsupported encoding {}",
                            printable(encoding.as_bytes())
                        ))
                    }
                };
                Ok(Obj::Bytes(Cow::Owned(bytes)))
            }
            (Global::Set | Global::FrozenSet, []) => Ok(Obj::Set(Vec::new())),
            (Global::Set | Global::FrozenSet, [arg]) => match self.obj(*arg) {
                Some(Obj::List(items) | Obj::Tuple(items) | Obj::Set(items)) => {
                    let items = items.clone();
                    self.charge_copy(items.len())?;
                    Ok(Obj::Set(items))
                }
                _ => Err(bad()),
            },
            _ => Err(bad()),
        }
    }

    /// Charges `n` to the copy budget.
    fn charge_copy(&mut self, n: usize) -> std::result::Result<(), Fail> {
        self.copy_budget =
            self.copy_budget.checked_sub(n).ok_or("the pickle copies more data than it holds")?;
        Ok(())
    }

    /// The object `item` refers to, if it is one.
    fn obj(&self, item: Item) -> Option<&Obj<'a>> {
        match item {
            Item::Obj(id) => self.objs.get(id as usize),
            _ => None,
        }
    }

    /// The object `item` refers to, mutably.
    fn obj_mut(&mut self, item: Item) -> Option<&mut Obj<'a>> {
        match item {
            Item::Obj(id) => self.objs.get_mut(id as usize),
            _ => None,
        }
    }

    /// Adds `obj` to the arena and pushes a reference to it.
    fn push_obj(&mut self, obj: Obj<'a>) -> std::result::Result<(), Fail> {
        let id = u32::try_from(self.objs.len()).map_err(|_| "too many objects")?;
        self.objs.push(obj);
        self.stack.push(Item::Obj(id));
        Ok(())
    }

    /// Pushes an int, inline when it fits in 32 bits.
    fn push_int(&mut self, value: BigInt) -> std::result::Result<(), Fail> {
        if let BigInt::Signed(v) = value {
            if let Ok(small) = i32::try_from(v) {
                self.stack.push(Item::Int(small));
                return Ok(());
            }
        }
        self.push_obj(Obj::Int(value))
    }

    /// Reads `len` bytes of UTF-8 and pushes them as a `str`.
    fn push_utf8(&mut self, len: u64) -> std::result::Result<(), Fail> {
        let bytes = self.take(len)?;
        let text = std::str::from_utf8(bytes).map_err(|e| format!("str is not UTF-8: {e}"))?;
        self.push_obj(Obj::Str(Cow::Borrowed(text)))
    }

    /// The stack length below which the current frame cannot reach.
    fn floor(&self) -> usize {
        self.marks.last().copied().unwrap_or(0)
    }

    /// Pops the top of the current frame.
    fn pop(&mut self) -> std::result::Result<Item, Fail> {
        if self.stack.len() > self.floor() {
            self.stack.pop().ok_or_else(|| "stack underflow".into())
        } else {
            Err("stack underflow".into())
        }
    }

    /// The top of the current frame.
    fn top(&self) -> std::result::Result<Item, Fail> {
        if self.stack.len() > self.floor() {
            self.stack.last().copied().ok_or_else(|| "stack underflow".into())
        } else {
            Err("stack underflow".into())
        }
    }

    /// Pops the current frame and its `MARK`; returns the frame's items.
    fn pop_mark(&mut self) -> std::result::Result<Vec<Item>, Fail> {
        let mark = self.marks.pop().ok_or("no MARK to pop to")?;
        if mark > self.stack.len() {
            return Err("stack underflow".into());
        }
        Ok(self.stack.split_off(mark))
    }

    /// Checks a memo index: no honest pickle has more memo entries than bytes.
    fn memo_index(&self, index: u64) -> std::result::Result<usize, Fail> {
        match usize::try_from(index) {
            Ok(i) if i < self.input.len() => Ok(i),
            _ => Err(format!("memo index {index} is out of range")),
        }
    }

    /// Stores the stack top in memo slot `index`.
    fn put(&mut self, index: u64) -> std::result::Result<(), Fail> {
        let index = self.memo_index(index)?;
        let top = self.top()?;
        if index >= self.memo.len() {
            self.memo.resize(index + 1, None);
        }
        if self.memo[index].replace(top).is_none() {
            self.memo_count += 1;
        }
        Ok(())
    }

    /// Pushes memo slot `index`.
    fn get(&mut self, index: u64) -> std::result::Result<(), Fail> {
        let i = self.memo_index(index)?;
        let item = self
            .memo
            .get(i)
            .copied()
            .flatten()
            .ok_or_else(|| format!("memo index {index} was never stored"))?;
        self.stack.push(item);
        Ok(())
    }

    /// Errors unless `len` more bytes are there.
    fn check_len(&self, len: u64) -> std::result::Result<usize, Fail> {
        let left = self.input.len() - self.pos;
        match usize::try_from(len) {
            Ok(n) if n <= left => Ok(n),
            _ => Err(format!("truncated: {len} bytes announced, {left} left in the input")),
        }
    }

    /// Reads `len` bytes, after checking that they are there.
    fn take(&mut self, len: u64) -> std::result::Result<&'a [u8], Fail> {
        let n = self.check_len(len)?;
        let bytes = &self.input[self.pos..self.pos + n];
        self.pos += n;
        Ok(bytes)
    }

    /// Reads `N` bytes.
    fn array<const N: usize>(&mut self) -> std::result::Result<[u8; N], Fail> {
        let bytes = self.take(N as u64)?;
        let mut out = [0; N];
        out.copy_from_slice(bytes);
        Ok(out)
    }

    /// Reads one byte.
    fn byte(&mut self) -> std::result::Result<u8, Fail> {
        Ok(self.array::<1>()?[0])
    }

    /// Reads a little-endian `u32`.
    fn u32le(&mut self) -> std::result::Result<u32, Fail> {
        Ok(u32::from_le_bytes(self.array()?))
    }

    /// Reads a little-endian `u64`.
    fn u64le(&mut self) -> std::result::Result<u64, Fail> {
        Ok(u64::from_le_bytes(self.array()?))
    }

    /// Reads a little-endian `i32` length, which must not be negative.
    fn i32_len(&mut self) -> std::result::Result<u64, Fail> {
        let len = i32::from_le_bytes(self.array()?);
        u64::try_from(len).map_err(|_| format!("negative length {len}"))
    }

    /// Reads up to the next `\n`, which is consumed but not returned.
    fn line(&mut self) -> std::result::Result<&'a [u8], Fail> {
        let rest = &self.input[self.pos..];
        let end =
            rest.iter().position(|&b| b == b'\n').ok_or("truncated: a line without its newline")?;
        self.pos += end + 1;
        Ok(&rest[..end])
    }
}

/// Pairs up a `DICT`/`SETITEMS` frame's items: key, value, key, value…
fn pairs(items: Vec<Item>) -> std::result::Result<Vec<(Item, Item)>, Fail> {
    if items.len() % 2 != 0 {
        return Err("odd number of items for a dict".into());
    }
    Ok(items.chunks_exact(2).map(|kv| (kv[0], kv[1])).collect())
}

/// Removes one trailing `\r` (pickles written on Windows in text mode).
fn trim_cr(line: &[u8]) -> &[u8] {
    line.strip_suffix(b"\r").unwrap_or(line)
}

/// Parses a decimal memo index (`PUT`, `GET`).
fn parse_index(line: &[u8]) -> std::result::Result<u64, Fail> {
    std::str::from_utf8(trim_cr(line))
        .ok()
        .and_then(|s| s.trim().parse::<u64>().ok())
        .ok_or_else(|| format!("invalid memo index {:?}", printable(line)))
}

/// Parses a decimal int (`INT`, `LONG`), of any length; linear time.
fn parse_text_int(line: &[u8]) -> std::result::Result<BigInt, Fail> {
    let invalid = || format!("invalid int literal {:?}", printable(line));
    let text = std::str::from_utf8(line).map_err(|_| invalid())?.trim();
    let (negative, digits) = match text.as_bytes().first() {
        Some(b'-') => (true, &text[1..]),
        Some(b'+') => (false, &text[1..]),
        _ => (false, text),
    };
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(invalid());
    }
    let significant = digits.trim_start_matches('0');
    let too_big = || BigInt::TooBig {
        // log2(10) ≈ 3.32
        bits: (significant.len() as u64).saturating_mul(332) / 100,
    };
    if significant.len() > 39 {
        return Ok(too_big());
    }
    let Ok(magnitude) =
        significant.parse::<u128>().or_else(
            |e| {
                if significant.is_empty() {
                    Ok(0)
                } else {
                    Err(e)
                }
            },
        )
    else {
        return Ok(too_big());
    };
    Ok(from_sign_magnitude(negative, magnitude).unwrap_or_else(too_big))
}

/// The int `±magnitude`, if it fits in 128 bits.
fn from_sign_magnitude(negative: bool, magnitude: u128) -> Option<BigInt> {
    if negative {
        if magnitude <= i128::MAX as u128 {
            Some(BigInt::Signed(-(magnitude as i128)))
        } else if magnitude == i128::MIN.unsigned_abs() {
            Some(BigInt::Signed(i128::MIN))
        } else {
            None
        }
    } else if let Ok(v) = i128::try_from(magnitude) {
        Some(BigInt::Signed(v))
    } else {
        Some(BigInt::Unsigned(magnitude))
    }
}

/// Decodes `LONG1`/`LONG4` data: little-endian two's complement of any length.
fn decode_long(bytes: &[u8]) -> BigInt {
    let Some(&last) = bytes.last() else {
        return BigInt::Signed(0);
    };
    let negative = last & 0x80 != 0;
    let fill = if negative { 0xff } else { 0x00 };
    // Drop redundant sign-extension bytes.
    let mut n = bytes.len();
    while n > 0 && bytes[n - 1] == fill {
        n -= 1;
    }
    let too_big = BigInt::TooBig { bits: (n as u64).saturating_mul(8) };
    if n > 16 {
        return too_big;
    }
    let mut buf = [fill; 16];
    buf[..n].copy_from_slice(&bytes[..n]);
    if negative {
        let value = i128::from_le_bytes(buf);
        // With 16 significant bytes the top one must carry the sign itself.
        if value < 0 {
            BigInt::Signed(value)
        } else {
            too_big
        }
    } else {
        let value = u128::from_le_bytes(buf);
        match i128::try_from(value) {
            Ok(v) => BigInt::Signed(v),
            Err(_) => BigInt::Unsigned(value),
        }
    }
}

/// Decodes a `UNICODE` argument like CPython's `raw-unicode-escape` codec: `\uXXXX` and
/// `\UXXXXXXXX` are escapes, any other byte is a Latin-1 character.
fn raw_unicode_escape_decode(line: &[u8]) -> std::result::Result<Cow<'static, str>, Fail> {
    let mut out = String::with_capacity(line.len());
    let mut i = 0;
    while i < line.len() {
        let b = line[i];
        i += 1;
        if b != b'\\' || i >= line.len() {
            out.push(char::from(b));
            continue;
        }
        let digits = match line[i] {
            b'u' => 4,
            b'U' => 8,
            other => {
                out.push('\\');
                out.push(char::from(other));
                i += 1;
                continue;
            }
        };
        i += 1;
        let hex = line.get(i..i + digits).ok_or("truncated \\u escape in UNICODE")?;
        let code = std::str::from_utf8(hex)
            .ok()
            .and_then(|h| u32::from_str_radix(h, 16).ok())
            .filter(|_| hex.iter().all(u8::is_ascii_hexdigit))
            .ok_or("invalid \\u escape in UNICODE")?;
        let c = char::from_u32(code)
            .ok_or_else(|| format!("UNICODE holds U+{code:04X}, which Rust strings cannot"))?;
        out.push(c);
        i += digits;
    }
    Ok(Cow::Owned(out))
}

/// Decodes a `STRING` argument (a quoted Python 2 `str` literal) like CPython's
/// `codecs.escape_decode`.
fn string_escape_decode(line: &[u8]) -> std::result::Result<Vec<u8>, Fail> {
    let body = match line {
        [q, body @ .., q2] if q == q2 && (*q == b'\'' || *q == b'"') => body,
        _ => return Err("the STRING argument must be quoted".into()),
    };
    let mut out = Vec::with_capacity(body.len());
    let mut i = 0;
    while i < body.len() {
        let b = body[i];
        i += 1;
        if b != b'\\' {
            out.push(b);
            continue;
        }
        let c = *body.get(i).ok_or("STRING ends with a backslash")?;
        i += 1;
        match c {
            b'\n' => {}
            b'\\' | b'\'' | b'"' => out.push(c),
            b'a' => out.push(0x07),
            b'b' => out.push(0x08),
            b'f' => out.push(0x0c),
            b'n' => out.push(b'\n'),
            b'r' => out.push(b'\r'),
            b't' => out.push(b'\t'),
            b'v' => out.push(0x0b),
            b'0'..=b'7' => {
                let mut value = u32::from(c - b'0');
                for _ in 0..2 {
                    match body.get(i) {
                        Some(&d @ b'0'..=b'7') => {
                            value = value * 8 + u32::from(d - b'0');
                            i += 1;
                        }
                        _ => break,
                    }
                }
                out.push((value & 0xff) as u8);
            }
            b'x' => {
                let value = body
                    .get(i..i + 2)
                    .and_then(|h| std::str::from_utf8(h).ok())
                    .filter(|h| h.bytes().all(|b| b.is_ascii_hexdigit()))
                    .and_then(|h| u8::from_str_radix(h, 16).ok())
                    .ok_or("invalid \\x escape in STRING")?;
                out.push(value);
                i += 2;
            }
            other => {
                out.push(b'\\');
                out.push(other);
            }
        }
    }
    Ok(out)
}

// ---------------------------------------------------------------------------------------
// From the arena to serde.

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
/// Kept out of [`Node::deserialize_any`] so that each level of nesting costs less stack.
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
