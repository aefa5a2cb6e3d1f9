//! [`ShareableList`]: a fixed-length list of [`ListItem`]s (Python's `int`, `float`,
//! `bool`, `str`, `bytes`, `None`) in a [`SharedMemory`] block, laid out byte for byte as
//! CPython's `ShareableList`, with the struct formats that layout uses.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::{SharedMemory, SharedMemoryBuilder};
use crate::error::{Error, Result};

/// One item of a [`ShareableList`]: the types CPython's `ShareableList` stores.
///
/// `==` ([`PartialEq`]) compares variants strictly; [`py_eq`](Self::py_eq) is Python's
/// `==`, where `1 == 1.0 == True`.
///
/// ```
/// use multiproc::shared_memory::ListItem;
/// let items: Vec<ListItem> = vec![3.into(), 2.5.into(), true.into(), "hi".into(), ListItem::None];
/// assert_eq!(items[0], ListItem::Int(3));
/// assert!(ListItem::Int(1).py_eq(&ListItem::Bool(true)));
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum ListItem {
    /// Python `int` (64-bit, as CPython's format `q`).
    Int(i64),
    /// Python `float` (`d`).
    Float(f64),
    /// Python `bool` (`xxxxxxx?`).
    Bool(bool),
    /// Python `str`, stored as UTF-8 (`Ns`). Trailing NUL characters do not survive.
    Str(String),
    /// Python `bytes` (`Ns`). Trailing NUL bytes do not survive.
    Bytes(Vec<u8>),
    /// Python `None` (`xxxxxx?x`).
    None,
}

impl ListItem {
    /// Python's `==` between two items: numbers (`Int`, `Float`, `Bool`) compare by value
    /// (exactly, as Python compares `int` with `float`), `Str` with `Str`, `Bytes` with
    /// `Bytes`, `None` with `None`; anything else is unequal. Used by
    /// [`ShareableList::count`] and [`ShareableList::index`].
    ///
    /// ```
    /// use multiproc::shared_memory::ListItem;
    /// assert!(ListItem::Float(2.0).py_eq(&ListItem::Int(2)));
    /// assert!(ListItem::Bool(false).py_eq(&ListItem::Int(0)));
    /// assert!(!ListItem::Float(f64::NAN).py_eq(&ListItem::Float(f64::NAN)));
    /// assert!(!ListItem::Str("a".into()).py_eq(&ListItem::Bytes(b"a".to_vec())));
    /// ```
    pub fn py_eq(&self, other: &ListItem) -> bool {
        match (self.number(), other.number()) {
            (Some(a), Some(b)) => a.eq(b),
            (Some(_), None) | (None, Some(_)) => false,
            (None, None) => match (self, other) {
                (ListItem::Str(a), ListItem::Str(b)) => a == b,
                (ListItem::Bytes(a), ListItem::Bytes(b)) => a == b,
                (ListItem::None, ListItem::None) => true,
                _ => false,
            },
        }
    }

    fn number(&self) -> Option<Number> {
        match *self {
            ListItem::Int(i) => Some(Number::Int(i)),
            ListItem::Bool(b) => Some(Number::Int(i64::from(b))),
            ListItem::Float(f) => Some(Number::Float(f)),
            _ => None,
        }
    }

    /// Python's type name: `int`, `float`, `bool`, `str`, `bytes` or `NoneType`.
    ///
    /// ```
    /// assert_eq!(multiproc::shared_memory::ListItem::None.type_name(), "NoneType");
    /// ```
    pub fn type_name(&self) -> &'static str {
        match self {
            ListItem::Int(_) => "int",
            ListItem::Float(_) => "float",
            ListItem::Bool(_) => "bool",
            ListItem::Str(_) => "str",
            ListItem::Bytes(_) => "bytes",
            ListItem::None => "NoneType",
        }
    }
}

#[derive(Clone, Copy)]
enum Number {
    Int(i64),
    Float(f64),
}

impl Number {
    fn eq(self, other: Number) -> bool {
        match (self, other) {
            (Number::Int(a), Number::Int(b)) => a == b,
            (Number::Float(a), Number::Float(b)) => a == b,
            (Number::Int(i), Number::Float(f)) | (Number::Float(f), Number::Int(i)) => {
                // Exact, as Python: the float must be integral and in i64's range.
                let limit = 2f64.powi(63);
                f.fract() == 0.0 && (-limit..limit).contains(&f) && f as i64 == i
            }
        }
    }
}

/// Python's repr: `1`, `2.5`, `True`, `'text'`, `b'bytes'`, `None`.
///
/// ```
/// use multiproc::shared_memory::ListItem;
/// assert_eq!(ListItem::Float(3.0).to_string(), "3.0");
/// assert_eq!(ListItem::Str("it's".into()).to_string(), "\"it's\"");
/// assert_eq!(ListItem::Bytes(b"a\x00".to_vec()).to_string(), "b'a\\x00'");
/// ```
impl fmt::Display for ListItem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ListItem::Int(i) => write!(f, "{i}"),
            ListItem::Float(x) => f.write_str(&py_float_repr(*x)),
            ListItem::Bool(true) => f.write_str("True"),
            ListItem::Bool(false) => f.write_str("False"),
            ListItem::None => f.write_str("None"),
            ListItem::Str(s) => {
                let quote = if s.contains('\'') && !s.contains('"') { '"' } else { '\'' };
                write!(f, "{quote}")?;
                for c in s.chars() {
                    match c {
                        '\\' => f.write_str("\\\\")?,
                        '\n' => f.write_str("\\n")?,
                        '\r' => f.write_str("\\r")?,
                        '\t' => f.write_str("\\t")?,
                        c if c == quote => write!(f, "\\{c}")?,
                        c if (c as u32) < 0x20 || c as u32 == 0x7f => {
                            write!(f, "\\x{:02x}", c as u32)?
                        }
                        c => write!(f, "{c}")?,
                    }
                }
                write!(f, "{quote}")
            }
            ListItem::Bytes(b) => {
                let quote = if b.contains(&b'\'') && !b.contains(&b'"') { '"' } else { '\'' };
                write!(f, "b{quote}")?;
                for &byte in b {
                    match byte {
                        b'\\' => f.write_str("\\\\")?,
                        b'\n' => f.write_str("\\n")?,
                        b'\r' => f.write_str("\\r")?,
                        b'\t' => f.write_str("\\t")?,
                        c if c as char == quote => write!(f, "\\{quote}")?,
                        0x20..=0x7e => write!(f, "{}", byte as char)?,
                        _ => write!(f, "\\x{byte:02x}")?,
                    }
                }
                write!(f, "{quote}")
            }
        }
    }
}

fn py_float_repr(x: f64) -> String {
    if x.is_nan() {
        "nan".into()
    } else if x.is_infinite() {
        if x > 0.0 { "inf" } else { "-inf" }.into()
    } else if x.fract() == 0.0 && x.abs() < 1e16 {
        format!("{x:.1}")
    } else {
        // Rust's shortest round-trip digits; Python switches to exponents at 1e16.
        let s = format!("{x:?}");
        match s.split_once('e') {
            Some((m, e)) if !e.starts_with('-') => format!("{m}e+{e:0>2}"),
            Some((m, e)) => format!("{m}e-{:0>2}", &e[1..]),
            None => s,
        }
    }
}

macro_rules! list_item_from {
    ($($t:ty => $v:ident $(as $c:ty)?),* $(,)?) => {$(
        impl From<$t> for ListItem {
            fn from(value: $t) -> ListItem {
                ListItem::$v(value $(as $c)?)
            }
        }
    )*};
}

list_item_from!(i64 => Int, i32 => Int as i64, u32 => Int as i64, f64 => Float, bool => Bool,
    String => Str, Vec<u8> => Bytes);

/// `"text".into()` is a `Str`.
///
/// ```
/// let item: multiproc::shared_memory::ListItem = "hi".into();
/// assert_eq!(item, multiproc::shared_memory::ListItem::Str("hi".into()));
/// ```
impl From<&str> for ListItem {
    fn from(value: &str) -> ListItem {
        ListItem::Str(value.to_string())
    }
}

/// `b"raw".as_slice().into()` is a `Bytes`.
///
/// ```
/// let item: multiproc::shared_memory::ListItem = b"raw".as_slice().into();
/// assert_eq!(item, multiproc::shared_memory::ListItem::Bytes(b"raw".to_vec()));
/// ```
impl From<&[u8]> for ListItem {
    fn from(value: &[u8]) -> ListItem {
        ListItem::Bytes(value.to_vec())
    }
}

/// `Some(v).into()` is `v`, `None.into()` is Python's `None`.
///
/// ```
/// use multiproc::shared_memory::ListItem;
/// assert_eq!(ListItem::from(Some(1i64)), ListItem::Int(1));
/// assert_eq!(ListItem::from(None::<i64>), ListItem::None);
/// ```
impl<T: Into<ListItem>> From<Option<T>> for ListItem {
    fn from(value: Option<T>) -> ListItem {
        value.map_or(ListItem::None, Into::into)
    }
}

const ALIGN: usize = 8;
const FMT_INT: &str = "q";
const FMT_FLOAT: &str = "d";
const FMT_BOOL: &str = "xxxxxxx?";
const FMT_NONE: &str = "xxxxxx?x";

/// CPython's back-transform codes.
const CODE_PLAIN: u8 = 0;
const CODE_STR: u8 = 1;
const CODE_BYTES: u8 = 2;
const CODE_NONE: u8 = 3;

/// A fixed-length list of [`ListItem`]s in a shared memory block, with CPython's
/// `ShareableList` layout byte for byte, so either side can create and the other attach.
///
/// The layout (native byte order; offsets in bytes): the item count `N` (`i64`); `N + 1`
/// `i64` offsets of the items from the start of the data area; the data area (8 bytes for
/// a number, `bool` or `None`; for `str`/`bytes` the encoded length rounded up to the next
/// multiple of 8, always leaving at least one NUL); `N` struct formats of 8 bytes each
/// (`q`, `d`, `xxxxxxx?`, `xxxxxx?x`, `16s`, …); `N` back-transform codes (0 plain, 1
/// `str`, 2 `bytes`, 3 `None`).
///
/// One deliberate difference: CPython sizes a `str` slot by its number of *characters*
/// and so truncates non-ASCII text that needs more bytes; this module sizes it by its
/// UTF-8 length. The layout is the same and CPython reads such lists correctly.
///
/// Reads and writes copy: [`get`](Self::get) returns an owned [`ListItem`] and
/// [`set`](Self::set) copies the new bytes in, so no reference into the block ever
/// escapes, and another process rewriting an item meanwhile can make a read fail or see
/// a mix of old and new bytes, never unsound.
///
/// As with CPython, an item can be replaced by any other type, but a `str`/`bytes` value
/// must fit the slot allocated when the list was made, and the length is fixed.
///
/// ```
/// use multiproc::shared_memory::{ListItem, ShareableList};
///
/// let mut sl = ShareableList::create(&[1.into(), 2.5.into(), "howdy".into(), ListItem::None])?;
/// assert_eq!(sl.len(), 4);
/// assert_eq!(sl.get(2)?, ListItem::Str("howdy".into()));
/// sl.set(0, "text!!".into())?; // replaces an int with a str of at most 8 bytes
/// assert!(sl.set(2, "far too long for this slot".into()).is_err());
/// assert_eq!(sl.format()?, "8sd8sxxxxxx?x");
///
/// let other = ShareableList::attach(sl.name())?; // as another process would
/// assert_eq!(other.to_vec()?, sl.to_vec()?);
/// assert!(sl.name().starts_with("psm_") && sl.shm().is_owner() && !other.shm().is_owner());
///
/// // One `int`: the count, two offsets, 8 bytes of data, a format and a code.
/// let one = ShareableList::create(&[1.into()])?;
/// assert_eq!(one.shm().size(), 8 + 16 + 8 + 9);
/// assert!(ShareableList::create(&[])?.is_empty());
/// one.close()?; // the creator: closes and unlinks, as `SharedMemory::close`
/// # Ok::<(), multiproc::Error>(())
/// ```
pub struct ShareableList {
    shm: SharedMemory,
    len: usize,
    /// Offsets of the items from the start of the data area, `len + 1` of them.
    offsets: Vec<usize>,
}

impl ShareableList {
    /// Creates a list holding `items` in a new block with a generated name; the list owns
    /// the block (unlinked when dropped). Python: `ShareableList(items)`.
    pub fn create(items: &[ListItem]) -> Result<ShareableList> {
        ShareableList::create_with(SharedMemory::builder(), items)
    }

    /// Creates a list with the block options of `builder` (name, keep); its size is
    /// computed from `items`. Python: `ShareableList(items, name=name)`.
    ///
    /// ```
    /// use multiproc::shared_memory::{ShareableList, SharedMemory};
    /// let name = format!("sl_create_with_doc_{}", std::process::id());
    /// let sl = ShareableList::create_with(SharedMemory::builder().name(&name), &[7.into()])?;
    /// assert_eq!(sl.name(), name);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn create_with(builder: SharedMemoryBuilder, items: &[ListItem]) -> Result<ShareableList> {
        let n = items.len();
        let mut formats = Vec::with_capacity(n);
        let mut offsets = Vec::with_capacity(n + 1);
        offsets.push(0usize);
        let too_big = || Error::InvalidArgument("the ShareableList is too large".into());
        for (i, item) in items.iter().enumerate() {
            let (format, alloc) = match item {
                ListItem::Str(s) => string_slot(s.len()),
                ListItem::Bytes(b) => string_slot(b.len()),
                other => (fixed_format(other).to_string(), ALIGN),
            };
            if format.len() > 8 {
                return Err(Error::InvalidArgument(format!(
                    "item {i}: a {} of {alloc} bytes needs the format {format:?}, longer than \
                     the 8 bytes CPython's ShareableList allows",
                    item.type_name()
                )));
            }
            let last = offsets[offsets.len() - 1];
            offsets.push(last.checked_add(alloc).ok_or_else(too_big)?);
            formats.push(format);
        }
        let data_start = (n + 2).checked_mul(8).ok_or_else(too_big)?;
        let size = data_start
            .checked_add(offsets[n])
            .and_then(|s| s.checked_add(n.checked_mul(9)?))
            .ok_or_else(too_big)?;
        let shm = builder.size(size).create()?;
        let mut list = ShareableList { shm, len: n, offsets };
        let mut header = Vec::with_capacity(data_start);
        header.extend_from_slice(&(n as i64).to_ne_bytes());
        for off in &list.offsets {
            header.extend_from_slice(&(*off as i64).to_ne_bytes());
        }
        list.shm.write_at(0, &header)?;
        for (i, (item, format)) in items.iter().zip(&formats).enumerate() {
            list.write(i, item, format)?;
        }
        Ok(list)
    }

    /// Attaches to the list in block `name` (made by this library or by CPython). The
    /// handle never unlinks the block. Python: `ShareableList(name=name)`.
    ///
    /// ```
    /// use multiproc::shared_memory::{ListItem, ShareableList, SharedMemory};
    /// let sl = ShareableList::create(&["a".into(), "b".into()])?;
    /// let other = ShareableList::attach(sl.name())?;
    /// assert_eq!(other.get(1)?, ListItem::Str("b".into()));
    /// // A block that does not hold a list is an error, not garbage.
    /// let junk = SharedMemory::create(4)?;
    /// assert!(ShareableList::attach(junk.name()).is_err());
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn attach(name: &str) -> Result<ShareableList> {
        ShareableList::from_shared_memory(SharedMemory::attach(name)?)
    }

    /// Reads the list held by `shm`, which it takes over (an owner handle stays the
    /// owner).
    pub fn from_shared_memory(shm: SharedMemory) -> Result<ShareableList> {
        let not_a_list = |why: String| {
            Error::InvalidArgument(format!(
                "shared memory block {:?} does not hold a ShareableList: {why}",
                shm.name()
            ))
        };
        let size = shm.size();
        let n = read_i64(&shm, 0).ok_or_else(|| not_a_list(format!("{size} bytes")))?;
        let n = usize::try_from(n).map_err(|_| not_a_list(format!("length {n}")))?;
        let data_start = n
            .checked_add(2)
            .and_then(|k| k.checked_mul(8))
            .filter(|&d| d <= size)
            .ok_or_else(|| not_a_list(format!("length {n} in a block of {size} bytes")))?;
        let mut offsets = Vec::with_capacity(n + 1);
        for i in 0..=n {
            let off = read_i64(&shm, 8 + 8 * i).unwrap_or(-1);
            let off = usize::try_from(off)
                .ok()
                .filter(|&o| offsets.last().is_none_or(|&prev| o >= prev))
                .ok_or_else(|| not_a_list(format!("item offset {i} is {off}")))?;
            offsets.push(off);
        }
        let fits = data_start
            .checked_add(offsets[n])
            .and_then(|s| s.checked_add(n.checked_mul(9)?))
            .is_some_and(|s| s <= size);
        if !fits {
            return Err(not_a_list(format!("{n} items need more than {size} bytes")));
        }
        Ok(ShareableList { shm, len: n, offsets })
    }

    /// The name of the block (Python's `sl.shm.name`).
    pub fn name(&self) -> &str {
        self.shm.name()
    }

    /// The block (Python's `sl.shm`).
    pub fn shm(&self) -> &SharedMemory {
        &self.shm
    }

    /// Gives back the block.
    pub fn into_shared_memory(self) -> SharedMemory {
        self.shm
    }

    /// Ends this handle, as [`SharedMemory::close`]: the creator also unlinks the block.
    pub fn close(self) -> Result<()> {
        self.shm.close()
    }

    /// The number of items (fixed when the list was made).
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the list has no items.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The item at `index`. Errors: index out of range, or bytes that do not form an item
    /// (a foreign writer), or a `str` that is not UTF-8.
    ///
    /// ```
    /// use multiproc::shared_memory::{ListItem, ShareableList};
    /// let sl = ShareableList::create(&[(-5).into(), 0.5.into(), false.into()])?;
    /// assert_eq!(sl.get(0)?, ListItem::Int(-5));
    /// assert_eq!(sl.get(1)?, ListItem::Float(0.5));
    /// assert_eq!(sl.get(2)?, ListItem::Bool(false));
    /// assert!(sl.get(3).is_err());
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn get(&self, index: usize) -> Result<ListItem> {
        self.check_index(index)?;
        let format = self.format_at(index)?;
        let code = self.code_at(index)?;
        let start = self.data_start() + self.offsets[index];
        let bad = |why: &str| {
            Error::InvalidArgument(format!(
                "item {index} of ShareableList {:?} ({format:?}, code {code}): {why}",
                self.name()
            ))
        };
        let (kind, at, len) = parse_format(&format).ok_or_else(|| bad("unknown format"))?;
        let mut raw = vec![0u8; len.min(self.shm.size())];
        start
            .checked_add(at)
            .filter(|_| raw.len() == len)
            .and_then(|s| self.shm.read_at(s, &mut raw).ok())
            .ok_or_else(|| bad("outside the block"))?;
        let raw = raw.as_slice();
        let plain = match kind {
            Kind::Int => {
                ListItem::Int(i64::from_ne_bytes(raw.try_into().map_err(|_| bad("size"))?))
            }
            Kind::Float => {
                ListItem::Float(f64::from_ne_bytes(raw.try_into().map_err(|_| bad("size"))?))
            }
            Kind::Bool => ListItem::Bool(raw[0] != 0),
            Kind::Bytes => ListItem::Bytes(raw.to_vec()),
        };
        Ok(match (code, plain) {
            (CODE_PLAIN, item) => item,
            (CODE_STR, ListItem::Bytes(b)) => {
                let text = std::str::from_utf8(trim_nul(&b)).map_err(|_| bad("not UTF-8"))?;
                ListItem::Str(text.to_string())
            }
            (CODE_BYTES, ListItem::Bytes(b)) => ListItem::Bytes(trim_nul(&b).to_vec()),
            (CODE_NONE, _) => ListItem::None,
            _ => return Err(bad("format and code do not agree")),
        })
    }

    /// Replaces the item at `index` (Python's `sl[index] = value`). Any type may replace
    /// any other, but a `str`/`bytes` may not exceed the slot allocated when the list was
    /// made (CPython's `ValueError: bytes/str item exceeds available storage`).
    ///
    /// ```
    /// use multiproc::shared_memory::{ListItem, ShareableList};
    /// let mut sl = ShareableList::create(&["abc".into(), 1.into()])?;
    /// sl.set(0, 2.5.into())?; // a float where a str was
    /// sl.set(1, b"8 bytes!".as_slice().into())?; // bytes where an int was: 8 bytes fit
    /// assert_eq!(sl.to_vec()?, [ListItem::Float(2.5), ListItem::Bytes(b"8 bytes!".to_vec())]);
    /// // "abc" got a slot of 8 bytes (the length rounded up, plus room for a NUL):
    /// assert!(sl.set(0, "nine char".into()).is_err());
    /// assert!(sl.set(5, ListItem::None).is_err()); // out of range
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn set(&mut self, index: usize, item: ListItem) -> Result<()> {
        self.check_index(index)?;
        let alloc = self.offsets[index + 1] - self.offsets[index];
        let format = match &item {
            ListItem::Str(s) => self.string_format(index, s.len(), alloc)?,
            ListItem::Bytes(b) => self.string_format(index, b.len(), alloc)?,
            other => {
                if alloc < 8 {
                    return Err(Error::InvalidArgument(format!(
                        "item {index} has a slot of {alloc} bytes, too small for a {}",
                        other.type_name()
                    )));
                }
                fixed_format(other).to_string()
            }
        };
        self.write(index, &item, &format)
    }

    /// How many items are equal to `item` under Python's `==` ([`ListItem::py_eq`]).
    ///
    /// ```
    /// use multiproc::shared_memory::ShareableList;
    /// let sl = ShareableList::create(&[1.into(), 1.0.into(), true.into(), "1".into()])?;
    /// assert_eq!(sl.count(&1.into())?, 3); // as Python: 1 == 1.0 == True
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn count(&self, item: &ListItem) -> Result<usize> {
        let mut n = 0;
        for i in 0..self.len {
            n += usize::from(self.get(i)?.py_eq(item));
        }
        Ok(n)
    }

    /// The first index of an item equal to `item` (Python's `==`), or `None` (where Python
    /// raises `ValueError`).
    ///
    /// ```
    /// use multiproc::shared_memory::ShareableList;
    /// let sl = ShareableList::create(&["a".into(), "b".into()])?;
    /// assert_eq!(sl.index(&"b".into())?, Some(1));
    /// assert_eq!(sl.index(&"c".into())?, None);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn index(&self, item: &ListItem) -> Result<Option<usize>> {
        for i in 0..self.len {
            if self.get(i)?.py_eq(item) {
                return Ok(Some(i));
            }
        }
        Ok(None)
    }

    /// The struct formats of all items, joined (Python's `sl.format`).
    pub fn format(&self) -> Result<String> {
        let mut all = String::new();
        for i in 0..self.len {
            all.push_str(&self.format_at(i)?);
        }
        Ok(all)
    }

    /// All items (Python's `list(sl)`).
    pub fn to_vec(&self) -> Result<Vec<ListItem>> {
        (0..self.len).map(|i| self.get(i)).collect()
    }

    fn check_index(&self, index: usize) -> Result<()> {
        if index < self.len {
            Ok(())
        } else {
            Err(Error::InvalidArgument(format!(
                "index {index} out of range for a ShareableList of {} items",
                self.len
            )))
        }
    }

    fn data_start(&self) -> usize {
        (self.len + 2) * 8
    }

    fn formats_start(&self) -> usize {
        self.data_start() + self.offsets[self.len]
    }

    /// The format stored for item `index` (checked to be in range and ASCII).
    fn format_at(&self, index: usize) -> Result<String> {
        let at = self.formats_start() + 8 * index;
        let mut raw = [0u8; 8];
        self.shm.read_at(at, &mut raw)?;
        let raw = trim_nul(&raw);
        match std::str::from_utf8(raw) {
            Ok(s) if s.is_ascii() => Ok(s.to_string()),
            _ => Err(Error::InvalidArgument(format!(
                "item {index} of ShareableList {:?} has a malformed format {raw:?}",
                self.name()
            ))),
        }
    }

    fn code_at(&self, index: usize) -> Result<u8> {
        self.shm.read_volatile::<u8>(self.formats_start() + 8 * self.len + index)
    }

    /// The format for a `str`/`bytes` of `len` bytes in slot `index`, as CPython chooses
    /// it: the slot's current `Ns` format, or `{alloc}s`.
    fn string_format(&self, index: usize, len: usize, alloc: usize) -> Result<String> {
        if len > alloc {
            return Err(Error::InvalidArgument(format!(
                "bytes/str item exceeds available storage: {len} bytes into item {index}, \
                 whose slot holds {alloc}"
            )));
        }
        let current = self.format_at(index)?;
        if !current.ends_with('s') {
            return Ok(format!("{alloc}s"));
        }
        // CPython keeps a slot's `Ns` format; it holds N bytes.
        match parse_format(&current) {
            Some((Kind::Bytes, 0, n)) if len > n => Err(Error::InvalidArgument(format!(
                "bytes/str item exceeds available storage: {len} bytes into item {index}, \
                 whose format {current:?} holds {n}"
            ))),
            Some((Kind::Bytes, 0, _)) => Ok(current),
            _ => Err(Error::InvalidArgument(format!(
                "item {index} has the malformed format {current:?}"
            ))),
        }
    }

    /// Writes item `index` with `format` (already checked to fit): format, code, value.
    fn write(&mut self, index: usize, item: &ListItem, format: &str) -> Result<()> {
        let (kind, at, len) = parse_format(format)
            .filter(|_| format.len() <= 8)
            .ok_or_else(|| Error::InvalidArgument(format!("bad item format {format:?}")))?;
        let value_at = self.data_start() + self.offsets[index];
        let format_at = self.formats_start() + 8 * index;
        let code_at = self.formats_start() + 8 * self.len + index;
        let code = match item {
            ListItem::Str(_) => CODE_STR,
            ListItem::Bytes(_) => CODE_BYTES,
            ListItem::None => CODE_NONE,
            _ => CODE_PLAIN,
        };
        // The whole struct (pads included) is written, as struct.pack_into does.
        let total = format_size(format).unwrap_or(at + len);
        let does_not_fit =
            || Error::InvalidArgument(format!("item {index} does not fit in the block"));
        if at.checked_add(len).is_none_or(|end| end > total)
            || value_at.checked_add(total).is_none_or(|end| end > self.shm.size())
        {
            return Err(does_not_fit());
        }
        let mut region = vec![0u8; total];
        let value = &mut region[at..at + len];
        match (kind, item) {
            (Kind::Int, ListItem::Int(i)) => value.copy_from_slice(&i.to_ne_bytes()),
            (Kind::Float, ListItem::Float(f)) => value.copy_from_slice(&f.to_ne_bytes()),
            (Kind::Bool, ListItem::Bool(b)) => value[0] = u8::from(*b),
            (Kind::Bool, ListItem::None) => value[0] = 0,
            (Kind::Bytes, ListItem::Str(s)) => value[..s.len()].copy_from_slice(s.as_bytes()),
            (Kind::Bytes, ListItem::Bytes(b)) => value[..b.len()].copy_from_slice(b),
            _ => {
                return Err(Error::InvalidArgument(format!(
                    "a {} cannot be stored with format {format:?}",
                    item.type_name()
                )))
            }
        }
        let mut fmt = [0u8; 8];
        fmt[..format.len()].copy_from_slice(format.as_bytes());
        self.shm.write_at(value_at, &region)?;
        self.shm.write_at(format_at, &fmt)?;
        self.shm.write_at(code_at, &[code])?;
        Ok(())
    }
}

impl fmt::Debug for ShareableList {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ShareableList").field("name", &self.name()).field("len", &self.len).finish()
    }
}

/// Serialized by name, like a [`SharedMemory`]; deserializing attaches (never unlinks).
///
/// ```
/// use multiproc::shared_memory::{ListItem, ShareableList};
///
/// fn child(mut sl: ShareableList) {
///     sl.set(0, 42.into()).unwrap();
/// }
///
/// let sl = ShareableList::create(&[0.into()])?;
/// let p = multiproc::Process::new(child, ShareableList::attach(sl.name())?);
/// p.start()?;
/// p.join()?;
/// assert_eq!(sl.get(0)?, ListItem::Int(42));
/// # Ok::<(), multiproc::Error>(())
/// ```
impl Serialize for ShareableList {
    fn serialize<S: Serializer>(&self, serializer: S) -> std::result::Result<S::Ok, S::Error> {
        self.shm.serialize(serializer)
    }
}

/// Attaches by name; see [`SharedMemory`]'s `Deserialize`.
///
/// ```
/// use multiproc::shared_memory::ShareableList;
/// use multiproc::Codec;
/// let sl = ShareableList::create(&["x".into()])?;
/// let mut bytes = Vec::new();
/// Codec::Postcard.encode_into(&sl, &mut bytes)?;
/// let back: ShareableList = Codec::Postcard.decode(&bytes)?;
/// assert_eq!(back.to_vec()?, sl.to_vec()?);
/// # Ok::<(), multiproc::Error>(())
/// ```
impl<'de> Deserialize<'de> for ShareableList {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> std::result::Result<Self, D::Error> {
        let shm = SharedMemory::deserialize(deserializer)?;
        ShareableList::from_shared_memory(shm).map_err(crate::codec::de_error)
    }
}

/// The slot of a `str`/`bytes` of `len` bytes: CPython's `8 * (len // 8 + 1)`.
fn string_slot(len: usize) -> (String, usize) {
    let alloc = ALIGN.saturating_mul(len / ALIGN + 1);
    (format!("{alloc}s"), alloc)
}

fn fixed_format(item: &ListItem) -> &'static str {
    match item {
        ListItem::Int(_) => FMT_INT,
        ListItem::Float(_) => FMT_FLOAT,
        ListItem::Bool(_) => FMT_BOOL,
        _ => FMT_NONE,
    }
}

fn trim_nul(b: &[u8]) -> &[u8] {
    let end = b.iter().rposition(|&c| c != 0).map_or(0, |p| p + 1);
    &b[..end]
}

/// The `i64` at byte `at` of `shm` (a copy), or `None` past its end.
fn read_i64(shm: &SharedMemory, at: usize) -> Option<i64> {
    let mut bytes = [0u8; 8];
    shm.read_at(at, &mut bytes).ok()?;
    Some(i64::from_ne_bytes(bytes))
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Kind {
    Int,
    Float,
    Bool,
    Bytes,
}

/// Parses a one-value struct format in native mode (`q`, `d`, `?`, `Ns`, with `x`
/// padding, counts allowed): the value's kind, offset and size.
fn parse_format(format: &str) -> Option<(Kind, usize, usize)> {
    let mut value = None;
    walk_format(format, |kind, at, len| {
        if value.is_some() {
            return false;
        }
        value = Some((kind, at, len));
        true
    })?;
    value
}

/// The total size of a struct format in native mode.
fn format_size(format: &str) -> Option<usize> {
    walk_format(format, |_, _, _| true)
}

/// Walks the tokens of `format`, calling `each(kind, offset, size)` for every value;
/// returns the total size, or `None` for a format outside the subset above.
fn walk_format(format: &str, mut each: impl FnMut(Kind, usize, usize) -> bool) -> Option<usize> {
    let bytes = format.as_bytes();
    let (mut i, mut pos) = (0usize, 0usize);
    while i < bytes.len() {
        let digits = bytes[i..].iter().take_while(|b| b.is_ascii_digit()).count();
        let count: Option<usize> =
            if digits > 0 { Some(format[i..i + digits].parse().ok()?) } else { None };
        i += digits;
        let c = *bytes.get(i)?;
        i += 1;
        match c {
            b'x' => pos = pos.checked_add(count.unwrap_or(1))?,
            b's' => {
                let len = count.unwrap_or(1);
                if !each(Kind::Bytes, pos, len) {
                    return None;
                }
                pos = pos.checked_add(len)?;
            }
            b'q' | b'd' | b'?' => {
                let (kind, size) = match c {
                    b'q' => (Kind::Int, 8),
                    b'd' => (Kind::Float, 8),
                    _ => (Kind::Bool, 1),
                };
                pos = pos.checked_next_multiple_of(size)?;
                for _ in 0..count.unwrap_or(1) {
                    if !each(kind, pos, size) {
                        return None;
                    }
                    pos = pos.checked_add(size)?;
                }
            }
            _ => return None,
        }
    }
    Some(pos)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_parse() {
        assert_eq!(parse_format("q"), Some((Kind::Int, 0, 8)));
        assert_eq!(parse_format("d"), Some((Kind::Float, 0, 8)));
        assert_eq!(parse_format("xxxxxxx?"), Some((Kind::Bool, 7, 1)));
        assert_eq!(parse_format("xxxxxx?x"), Some((Kind::Bool, 6, 1)));
        assert_eq!(parse_format("16s"), Some((Kind::Bytes, 0, 16)));
        assert_eq!(parse_format("xq"), Some((Kind::Int, 8, 8)));
        assert_eq!(format_size("xxxxxx?x"), Some(8));
        assert_eq!(parse_format("qq"), None);
        assert_eq!(parse_format("2q"), None);
        assert_eq!(parse_format("z"), None);
        assert_eq!(parse_format(""), None);
        assert_eq!(parse_format("99999999999999999999999s"), None);
    }

    #[test]
    fn float_repr_is_pythons() {
        assert_eq!(py_float_repr(1.0), "1.0");
        assert_eq!(py_float_repr(-0.0), "-0.0");
        assert_eq!(py_float_repr(2.5), "2.5");
        assert_eq!(py_float_repr(1e16), "1e+16");
        assert_eq!(py_float_repr(1.5e-7), "1.5e-07");
        assert_eq!(py_float_repr(f64::INFINITY), "inf");
    }
}
