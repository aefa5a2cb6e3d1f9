//! The pickle machine: runs a pickle's opcodes, without executing anything, into a flat
//! arena of objects that refer to each other by index (the object model of
//! [`super`]); [`walk`](super::walk) then hands that arena to serde.

use std::borrow::Cow;

use super::{printable, BigInt, Global, Item, Obj, HIGHEST_PROTOCOL};

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
pub(super) struct Machine<'a> {
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
    pub(super) fn new(input: &'a [u8]) -> Machine<'a> {
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
    pub(super) fn run(mut self) -> std::result::Result<(Vec<Obj<'a>>, Item), String> {
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
