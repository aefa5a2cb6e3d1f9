//! Shared ctypes objects: [`Value`], [`Array`], [`RawValue`], [`RawArray`] (Python's
//! `multiprocessing.Value`, `multiprocessing.Array` and `multiprocessing.sharedctypes`).
//!
//! A `Value` is one number, an `Array` a fixed-length run of numbers, in memory shared by
//! every process that holds a handle. Handles are cheap to clone (clones are the same
//! memory) and travel to child processes as arguments, with the lock they use, under both
//! start methods.
//!
//! | Python | multiproc |
//! |---|---|
//! | `Value('i', 0)` | [`Value::new(0_i32)`](Value::new) |
//! | `Value('i', 0, lock=my_lock)` | [`Value::with_lock(0_i32, my_lock)`](Value::with_lock) |
//! | `Value('i', 0, lock=False)`, `RawValue('i', 0)` | [`Value::raw(0_i32)`](Value::raw), [`RawValue::new(0_i32)`](RawValue::new) |
//! | `Array('d', 5)` | [`Array::<f64>::new(5)`](Array::new) |
//! | `Array('i', [1, 2, 3])`, `Array('i', range(5))` | [`Array::from_values(&[1, 2, 3])`](Array::from_values), [`Array::from_iter(0..5)`](Array::from_iter) |
//! | `RawArray('i', 5)` | [`RawArray::<i32>::new(5)`](RawArray::new) |
//! | `v.value`, `v.value = x` | [`v.get()`](Value::get), [`v.set(x)`](Value::set) |
//! | `arr[i]`, `arr[i] = x`, `len(arr)` | [`arr.get(i)?`](Array::get), [`arr.set(i, x)?`](Array::set), [`arr.len()`](Array::len) |
//! | `arr[:]`, `list(arr)`, `arr[a:b]`, `arr[a:b] = xs` | [`arr.to_vec()`](Array::to_vec), [`arr.get_range(a..b)?`](Array::get_range), [`arr.set_range(a, &xs)?`](Array::set_range) |
//! | `with v.get_lock(): v.value += 1` | `let _g = v.get_lock().acquire(None)?; v.set(v.get() + 1);`, or [`*v.lock(None)? += 1`](Value::lock) |
//! | `v.get_obj()` | [`v.get_obj()`](Value::get_obj) |
//! | — | [`fetch_add`](RawValue::fetch_add), [`compare_exchange`](RawValue::compare_exchange), … lock-free |
//!
//! # Type codes
//! The element type is a Rust type implementing [`CType`]:
//!
//! | code | C type | Rust |
//! |---|---|---|
//! | `'b'` / `'B'` | `signed char` / `unsigned char` | `i8` / `u8` |
//! | `'c'` | `char` (a byte) | `u8` |
//! | `'?'` (Python: `ctypes.c_bool`) | `_Bool` | `bool` |
//! | `'h'` / `'H'` | `short` / `unsigned short` | `i16` / `u16` |
//! | `'i'` / `'I'` | `int` / `unsigned int` | `i32` / `u32` |
//! | `'l'` / `'L'`, `'q'` / `'Q'` | `long` / `unsigned long` (64-bit Linux), `long long` / … | `i64` / `u64` |
//! | `'f'` / `'d'` | `float` / `double` | `f32` / `f64` |
//!
//! # What is atomic, and what needs the lock
//! Every single read or write of one element is one atomic operation: it is never torn,
//! never blocks, and — unlike Python, whose `.value` takes the lock each time — never
//! deadlocks when you already hold a non-recursive lock. A read-modify-write such as
//! `v.set(v.get() + 1)` is two operations, and loses updates when processes race, exactly
//! as `v.value += 1` does in Python: hold the lock around it (as the seeds do), or use
//! the lock-free [`fetch_add`](RawValue::fetch_add) family on integers.
//!
//! [`Value::lock`] and [`Array::lock`] take the lock and hand out a guard that
//! dereferences to the value (`&mut T`) or the elements (`&mut [T]`): a private copy made
//! under the lock, whose changed elements are written back when the guard drops, still
//! under the lock. Elements the holder did not change are not written, so lock-free
//! writers to other elements are never overwritten; a panic while the guard is held
//! writes nothing back.
//!
//! # No references into shared memory
//! No method of this module returns a reference into the shared segment: reads and
//! writes are atomic operations that copy one element, [`get_obj`](Value::get_obj) and
//! [`get_lock`](Value::get_lock) return references to this process's *handles*, and the
//! guards of [`Value::lock`] and [`Array::lock`] dereference to a private copy in this
//! process's own memory, which no other handle or process can write. So clones,
//! [`get_obj`](Value::get_obj) writers that skip the lock, and other processes can never
//! break Rust's aliasing rules through these types, whatever they do; at worst a write
//! that skips the lock is overwritten by a guard's write-back (or the other way round),
//! which is the lost update the lock exists to prevent.
//!
//! # A dead holder never hangs anyone
//! The lock of a `Value` or `Array` is a [`Lock`] or [`RLock`]: if a process is killed
//! while holding it, the next acquirer gets it, and its guard reports
//! [`owner_died`](SyncGuard::owner_died) so the program can check what the dead process
//! left half-done.
//!
//! ```
//! use multiproc::sharedctypes::{Array, Value};
//! use multiproc::Process;
//!
//! fn worker((counter, arr): (Value<i32>, Array<i32>)) {
//!     for i in 0..arr.len() {
//!         arr.set(i, arr.get(i).unwrap() * 2).unwrap();
//!     }
//!     *counter.lock(None).unwrap() += 10;
//! }
//!
//! let arr = Array::from_values(&[1, 2, 3, 4, 5])?;
//! let counter = Value::new(0)?;
//! let p = Process::new(worker, (counter.clone(), arr.clone()));
//! p.start()?;
//! p.join(None)?;
//! assert_eq!(arr.to_vec(), [2, 4, 6, 8, 10]);
//! assert_eq!(counter.get(), 10);
//! # Ok::<(), multiproc::Error>(())
//! ```

use std::fmt;
use std::marker::PhantomData;
use std::ops::{Deref, DerefMut, RangeBounds};
use std::sync::atomic::Ordering::{self, Acquire, Relaxed, Release, SeqCst};
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::synchronize::{Lock, LockGuard, RLock, RLockGuard, Segment};

// --------------------------------------------------------------------------------------
// Element types

mod sealed {
    /// Conversions between an element and the bytes it occupies in shared memory, kept
    /// out of the public API so that only the types listed in [`super::CType`] qualify.
    pub trait Sealed: Copy {
        /// The element's native-endian bytes in the first `size_of::<Self>()` bytes.
        fn to_ne(self) -> [u8; 8];
        /// The element from the first `size_of::<Self>()` bytes (any bit pattern).
        fn from_ne(bytes: [u8; 8]) -> Self;
    }

    /// Wrapping arithmetic of the integer element types.
    pub trait Int: Sealed {
        fn wrapping_add(self, other: Self) -> Self;
        fn wrapping_sub(self, other: Self) -> Self;
    }
}

/// An element type of a [`Value`] or [`Array`]: the Rust type of one of Python's ctypes
/// type codes (see the [module documentation](self#type-codes)). Sealed: implemented for
/// `i8 u8 i16 u16 i32 u32 i64 u64 f32 f64 bool` only.
///
/// ```
/// use multiproc::sharedctypes::CType;
/// assert_eq!(<i32 as CType>::TYPECODE, 'i');
/// assert_eq!(<f64 as CType>::CTYPE, "c_double");
/// ```
pub trait CType: sealed::Sealed + PartialEq + fmt::Debug + Send + Sync + 'static {
    /// Python's type code (`'i'` for `i32`, …); `u8` reports `'B'` and also serves `'c'`.
    const TYPECODE: char;
    /// The ctypes name (`"c_int"` for `i32`, …).
    const CTYPE: &'static str;
}

/// The integer element types, which have lock-free read-modify-write operations
/// ([`RawValue::fetch_add`] and friends). Sealed.
///
/// ```
/// use multiproc::sharedctypes::{CInt, RawValue};
/// fn bump<T: CInt>(v: &RawValue<T>, by: T) -> T { v.fetch_add(by) }
/// let v = RawValue::new(1_u16)?;
/// assert_eq!(bump(&v, 2), 1);
/// assert_eq!(v.get(), 3);
/// # Ok::<(), multiproc::Error>(())
/// ```
pub trait CInt: CType + sealed::Int {}

macro_rules! ctype_num {
    ($($ty:ty => $code:literal, $ctype:literal, $int:tt;)*) => {$(
        impl sealed::Sealed for $ty {
            fn to_ne(self) -> [u8; 8] {
                let mut out = [0u8; 8];
                out[..size_of::<$ty>()].copy_from_slice(&self.to_ne_bytes());
                out
            }
            fn from_ne(bytes: [u8; 8]) -> Self {
                let mut own = [0u8; size_of::<$ty>()];
                own.copy_from_slice(&bytes[..size_of::<$ty>()]);
                <$ty>::from_ne_bytes(own)
            }
        }
        impl CType for $ty {
            const TYPECODE: char = $code;
            const CTYPE: &'static str = $ctype;
        }
        ctype_num!(@int $ty, $int);
    )*};
    (@int $ty:ty, int) => {
        impl sealed::Int for $ty {
            fn wrapping_add(self, other: Self) -> Self {
                <$ty>::wrapping_add(self, other)
            }
            fn wrapping_sub(self, other: Self) -> Self {
                <$ty>::wrapping_sub(self, other)
            }
        }
        impl CInt for $ty {}
    };
    (@int $ty:ty, float) => {};
}

ctype_num! {
    i8 => 'b', "c_byte", int;
    u8 => 'B', "c_ubyte", int;
    i16 => 'h', "c_short", int;
    u16 => 'H', "c_ushort", int;
    i32 => 'i', "c_int", int;
    u32 => 'I', "c_uint", int;
    i64 => 'q', "c_longlong", int;
    u64 => 'Q', "c_ulonglong", int;
    f32 => 'f', "c_float", float;
    f64 => 'd', "c_double", float;
}

impl sealed::Sealed for bool {
    fn to_ne(self) -> [u8; 8] {
        [self as u8, 0, 0, 0, 0, 0, 0, 0]
    }
    fn from_ne(bytes: [u8; 8]) -> Self {
        // ctypes reads any non-zero byte as True.
        bytes[0] != 0
    }
}

impl CType for bool {
    const TYPECODE: char = '?';
    const CTYPE: &'static str = "c_bool";
}

// --------------------------------------------------------------------------------------
// The shared segment: a header, then the elements, each naturally aligned.

/// Kind tag of a `Value` segment ("MPVA").
const VALUE_KIND: u32 = 0x4d50_5641;
/// Kind tag of an `Array` segment ("MPAR").
const ARRAY_KIND: u32 = 0x4d50_4152;
/// Offset of the element type code (a `u32` holding the code's `char`).
const TYPECODE: usize = 4;
/// Offset of the element count (a `u64`).
const LEN: usize = 8;
/// Offset of element 0: 16-aligned, so every element (at most 8 bytes) is naturally
/// aligned and can be accessed atomically.
const DATA: usize = 16;

/// The elements of one segment, with the count and type checked once, at creation or
/// import, so that no later access can fall outside the mapping.
struct Shared<T> {
    segment: Arc<Segment>,
    len: usize,
    _type: PhantomData<fn() -> T>,
}

impl<T> Clone for Shared<T> {
    fn clone(&self) -> Self {
        Shared { segment: self.segment.clone(), len: self.len, _type: PhantomData }
    }
}

/// The segment size for `len` elements of `size` bytes: a whole number of 8-byte words,
/// so that the 4-byte word around a 1- or 2-byte element is always inside it.
fn segment_len(len: usize, size: usize) -> Option<usize> {
    let bytes = len.checked_mul(size)?.checked_add(DATA)?.checked_next_multiple_of(8)?;
    (bytes <= isize::MAX as usize).then_some(bytes)
}

#[derive(Serialize, Deserialize)]
struct SentSegment {
    handle: crate::reduction::Handle,
}

impl<T: CType> Shared<T> {
    fn create(kind: u32, what: &str, len: usize) -> Result<Shared<T>> {
        let bytes = segment_len(len, size_of::<T>()).ok_or_else(|| {
            Error::InvalidArgument(format!("{what}: {len} {} elements are too many", T::CTYPE))
        })?;
        let segment = Segment::new(&what.to_lowercase(), kind, bytes)?;
        segment.word(TYPECODE).store(T::TYPECODE as u32, Release);
        segment.word64(LEN).store(len as u64, Release);
        // The memfd is zero-filled: every element starts as 0, 0.0 or false.
        Ok(Shared { segment, len, _type: PhantomData })
    }

    fn from_iter(kind: u32, what: &str, values: impl IntoIterator<Item = T>) -> Result<Shared<T>> {
        let values: Vec<T> = values.into_iter().collect();
        let shared = Shared::create(kind, what, values.len())?;
        for (i, v) in values.into_iter().enumerate() {
            shared.store(i, v, Relaxed);
        }
        Ok(shared)
    }

    fn import(handle: crate::reduction::Handle, kind: u32, what: &str) -> Result<Shared<T>> {
        let segment = Segment::import(handle, what, kind, DATA)?;
        let code = segment.word(TYPECODE).load(Acquire);
        if code != T::TYPECODE as u32 {
            let theirs =
                char::from_u32(code).map_or_else(|| format!("{code:#x}"), |c| format!("{c:?}"));
            return Err(Error::Codec(format!(
                "{what}: the handle holds type code {theirs}, expected {:?} ({})",
                T::TYPECODE,
                T::CTYPE
            )));
        }
        let len = usize::try_from(segment.word64(LEN).load(Acquire)).ok();
        let fits = len
            .and_then(|len| segment_len(len, size_of::<T>()))
            .is_some_and(|bytes| bytes <= segment.mapping().len());
        match len {
            Some(len) if fits => Ok(Shared { segment, len, _type: PhantomData }),
            _ => Err(Error::Codec(format!(
                "{what}: the shared segment is smaller than its elements"
            ))),
        }
    }

    fn serialize<S: serde::Serializer>(
        &self,
        what: &str,
        s: S,
    ) -> std::result::Result<S::Ok, S::Error> {
        use serde::ser::Error as _;
        let handle = self.segment.export(what).map_err(S::Error::custom)?;
        SentSegment { handle }.serialize(s)
    }

    fn deserialize<'de, D: serde::Deserializer<'de>>(
        d: D,
        kind: u32,
        what: &str,
    ) -> std::result::Result<Shared<T>, D::Error> {
        let sent = SentSegment::deserialize(d)?;
        Shared::import(sent.handle, kind, what).map_err(crate::codec::de_error)
    }

    fn check(&self, i: usize) -> Result<usize> {
        if i < self.len {
            Ok(DATA + i * size_of::<T>())
        } else {
            Err(Error::InvalidArgument(format!(
                "index {i} is out of range for {} elements",
                self.len
            )))
        }
    }

    /// Reads element `i` (in range) atomically.
    fn load(&self, i: usize, order: Ordering) -> T {
        let offset = DATA + i * size_of::<T>();
        let s = &self.segment;
        match size_of::<T>() {
            8 => T::from_ne(s.word64(offset).load(order).to_ne_bytes()),
            4 => T::from_ne(widen(s.word(offset).load(order).to_ne_bytes())),
            size => {
                // A 1- or 2-byte element: read the aligned 4-byte word that contains it.
                let lane = offset % 4;
                let word = s.word(offset - lane).load(order).to_ne_bytes();
                let mut bytes = [0u8; 8];
                bytes[..size].copy_from_slice(&word[lane..lane + size]);
                T::from_ne(bytes)
            }
        }
    }

    /// Writes element `i` (in range) atomically.
    fn store(&self, i: usize, value: T, order: Ordering) {
        let offset = DATA + i * size_of::<T>();
        let s = &self.segment;
        match size_of::<T>() {
            8 => s.word64(offset).store(u64::from_ne_bytes(value.to_ne()), order),
            4 => s.word(offset).store(narrow(value.to_ne()), order),
            _ => {
                let _ = self.update(i, |_| Some(value));
            }
        }
    }

    /// Replaces element `i` (in range) by `f(old)` atomically, retrying if another writer
    /// got in between; returns the old value, or `Err(old)` when `f` declines. Elements
    /// narrower than 4 bytes are updated within their 4-byte word, so a neighbour's
    /// concurrent update is never lost.
    fn update(&self, i: usize, mut f: impl FnMut(T) -> Option<T>) -> std::result::Result<T, T> {
        let offset = DATA + i * size_of::<T>();
        let s = &self.segment;
        match size_of::<T>() {
            8 => s
                .word64(offset)
                .fetch_update(SeqCst, SeqCst, |w| {
                    f(T::from_ne(w.to_ne_bytes())).map(|n| u64::from_ne_bytes(n.to_ne()))
                })
                .map(|w| T::from_ne(w.to_ne_bytes()))
                .map_err(|w| T::from_ne(w.to_ne_bytes())),
            4 => s
                .word(offset)
                .fetch_update(SeqCst, SeqCst, |w| {
                    f(T::from_ne(widen(w.to_ne_bytes()))).map(|n| narrow(n.to_ne()))
                })
                .map(|w| T::from_ne(widen(w.to_ne_bytes())))
                .map_err(|w| T::from_ne(widen(w.to_ne_bytes()))),
            size => {
                let lane = offset % 4;
                let extract = |w: u32| {
                    let mut bytes = [0u8; 8];
                    bytes[..size].copy_from_slice(&w.to_ne_bytes()[lane..lane + size]);
                    T::from_ne(bytes)
                };
                s.word(offset - lane)
                    .fetch_update(SeqCst, SeqCst, |w| {
                        f(extract(w)).map(|n| {
                            let mut word = w.to_ne_bytes();
                            word[lane..lane + size].copy_from_slice(&n.to_ne()[..size]);
                            u32::from_ne_bytes(word)
                        })
                    })
                    .map(extract)
                    .map_err(extract)
            }
        }
    }

    fn swap(&self, i: usize, value: T) -> T {
        let offset = DATA + i * size_of::<T>();
        let s = &self.segment;
        match size_of::<T>() {
            8 => T::from_ne(
                s.word64(offset).swap(u64::from_ne_bytes(value.to_ne()), SeqCst).to_ne_bytes(),
            ),
            4 => {
                T::from_ne(widen(s.word(offset).swap(narrow(value.to_ne()), SeqCst).to_ne_bytes()))
            }
            _ => self.update(i, |_| Some(value)).unwrap_or_else(|old| old),
        }
    }

    fn compare_exchange(&self, i: usize, current: T, new: T) -> std::result::Result<T, T> {
        let offset = DATA + i * size_of::<T>();
        let s = &self.segment;
        match size_of::<T>() {
            8 => s
                .word64(offset)
                .compare_exchange(
                    u64::from_ne_bytes(current.to_ne()),
                    u64::from_ne_bytes(new.to_ne()),
                    SeqCst,
                    SeqCst,
                )
                .map(|w| T::from_ne(w.to_ne_bytes()))
                .map_err(|w| T::from_ne(w.to_ne_bytes())),
            4 => s
                .word(offset)
                .compare_exchange(narrow(current.to_ne()), narrow(new.to_ne()), SeqCst, SeqCst)
                .map(|w| T::from_ne(widen(w.to_ne_bytes())))
                .map_err(|w| T::from_ne(widen(w.to_ne_bytes()))),
            _ => self.update(i, |old| (old.to_ne() == current.to_ne()).then_some(new)),
        }
    }

    fn to_vec(&self, start: usize, end: usize) -> Vec<T> {
        (start..end).map(|i| self.load(i, Acquire)).collect()
    }

    fn range(&self, range: impl RangeBounds<usize>) -> Result<(usize, usize)> {
        crate::error::range_within(range, self.len)
    }

    fn set_range(&self, start: usize, values: &[T]) -> Result<()> {
        match start.checked_add(values.len()) {
            Some(end) if end <= self.len => {
                for (i, v) in values.iter().enumerate() {
                    self.store(start + i, *v, Release);
                }
                Ok(())
            }
            _ => Err(Error::InvalidArgument(format!(
                "{} elements from index {start} do not fit in {} elements",
                values.len(),
                self.len
            ))),
        }
    }
}

impl<T: CInt> Shared<T> {
    fn fetch_add(&self, i: usize, value: T) -> T {
        let offset = DATA + i * size_of::<T>();
        let s = &self.segment;
        // Two's complement: adding the bit patterns wraps the same for signed and unsigned.
        match size_of::<T>() {
            8 => T::from_ne(
                s.word64(offset).fetch_add(u64::from_ne_bytes(value.to_ne()), SeqCst).to_ne_bytes(),
            ),
            4 => T::from_ne(widen(
                s.word(offset).fetch_add(narrow(value.to_ne()), SeqCst).to_ne_bytes(),
            )),
            _ => self.update(i, |old| Some(old.wrapping_add(value))).unwrap_or_else(|old| old),
        }
    }

    fn fetch_sub(&self, i: usize, value: T) -> T {
        let offset = DATA + i * size_of::<T>();
        let s = &self.segment;
        match size_of::<T>() {
            8 => T::from_ne(
                s.word64(offset).fetch_sub(u64::from_ne_bytes(value.to_ne()), SeqCst).to_ne_bytes(),
            ),
            4 => T::from_ne(widen(
                s.word(offset).fetch_sub(narrow(value.to_ne()), SeqCst).to_ne_bytes(),
            )),
            _ => self.update(i, |old| Some(old.wrapping_sub(value))).unwrap_or_else(|old| old),
        }
    }
}

fn widen(bytes: [u8; 4]) -> [u8; 8] {
    let mut out = [0u8; 8];
    out[..4].copy_from_slice(&bytes);
    out
}

fn narrow(bytes: [u8; 8]) -> u32 {
    let mut out = [0u8; 4];
    out.copy_from_slice(&bytes[..4]);
    u32::from_ne_bytes(out)
}

// --------------------------------------------------------------------------------------
// The lock of a synchronized object

/// The lock of a [`Value`] or [`Array`]: a [`Lock`] or an [`RLock`] (Python's
/// `lock=` argument). Convert either into it with `.into()`.
///
/// ```
/// use multiproc::sharedctypes::{SyncLock, Value};
/// use multiproc::synchronize::Lock;
///
/// let lock = Lock::new()?;
/// let v = Value::with_lock(0_i32, lock.clone())?;
/// let guard = v.get_lock().acquire(None)?;
/// assert!(lock.is_locked()); // the same lock
/// drop(guard);
/// assert!(matches!(v.get_lock(), SyncLock::Lock(_)));
/// # Ok::<(), multiproc::Error>(())
/// ```
#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum SyncLock {
    /// A non-recursive lock.
    Lock(Lock),
    /// A recursive lock (the default of [`Value::new`] and [`Array::new`], as in Python).
    RLock(RLock),
}

impl From<Lock> for SyncLock {
    /// ```
    /// let lock: multiproc::sharedctypes::SyncLock = multiproc::synchronize::Lock::new()?.into();
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    fn from(lock: Lock) -> SyncLock {
        SyncLock::Lock(lock)
    }
}

impl From<RLock> for SyncLock {
    /// ```
    /// let lock: multiproc::sharedctypes::SyncLock = multiproc::synchronize::RLock::new()?.into();
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    fn from(lock: RLock) -> SyncLock {
        SyncLock::RLock(lock)
    }
}

impl SyncLock {
    /// Acquires the lock, waiting at most `timeout` (`None`: as long as it takes);
    /// [`Error::Timeout`] if it stays taken. A holder that died is taken over and reported
    /// by [`SyncGuard::owner_died`].
    ///
    /// ```
    /// let counter = multiproc::Value::new(0_i32)?;
    /// {
    ///     let _g = counter.get_lock().acquire(None)?;
    ///     counter.set(counter.get() + 1);
    /// }
    /// assert_eq!(counter.get(), 1);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn acquire(&self, timeout: Option<Duration>) -> Result<SyncGuard<'_>> {
        Ok(SyncGuard(match self {
            SyncLock::Lock(lock) => HeldLock::Lock(lock.acquire(timeout)?),
            SyncLock::RLock(rlock) => HeldLock::RLock(rlock.acquire(timeout)?),
        }))
    }
}

enum HeldLock<'a> {
    Lock(LockGuard<'a>),
    RLock(RLockGuard<'a>),
}

/// Holds a [`SyncLock`] until dropped.
///
/// ```
/// let v = multiproc::Value::new(1.5_f64)?;
/// let guard = v.get_lock().acquire(None)?;
/// assert!(!guard.owner_died());
/// # Ok::<(), multiproc::Error>(())
/// ```
#[must_use = "the lock is released when the guard is dropped"]
pub struct SyncGuard<'a>(HeldLock<'a>);

impl SyncGuard<'_> {
    /// Whether the previous holder died holding the lock: what it protects may be
    /// half-updated.
    ///
    /// ```
    /// let v = multiproc::Value::new(0_u8)?;
    /// assert!(!v.get_lock().acquire(None)?.owner_died());
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn owner_died(&self) -> bool {
        match &self.0 {
            HeldLock::Lock(g) => g.owner_died(),
            HeldLock::RLock(g) => g.owner_died(),
        }
    }
}

impl fmt::Debug for SyncGuard<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SyncGuard").field("owner_died", &self.owner_died()).finish()
    }
}

// --------------------------------------------------------------------------------------
// RawValue and Value

/// One number in shared memory, without a lock (Python's `RawValue`, or `Value(…,
/// lock=False)`). Reads and writes are atomic; integers also have lock-free
/// read-modify-write operations.
///
/// ```
/// use multiproc::sharedctypes::RawValue;
/// use multiproc::Process;
///
/// let hits = RawValue::new(0_u64)?;
/// let workers: Vec<Process> = (0..2)
///     .map(|_| Process::new(|h: RawValue<u64>| for _ in 0..1000 { h.fetch_add(1); }, hits.clone()))
///     .collect();
/// for w in &workers { w.start()?; }
/// for w in &workers { w.join(None)?; }
/// assert_eq!(hits.get(), 2000);
/// # Ok::<(), multiproc::Error>(())
/// ```
pub struct RawValue<T> {
    shared: Shared<T>,
}

impl<T> Clone for RawValue<T> {
    fn clone(&self) -> Self {
        RawValue { shared: self.shared.clone() }
    }
}

impl<T: CType> Serialize for RawValue<T> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        self.shared.serialize("Value", s)
    }
}

impl<'de, T: CType> Deserialize<'de> for RawValue<T> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let shared = Shared::deserialize(d, VALUE_KIND, "Value")?;
        if shared.len != 1 {
            return Err(crate::codec::de_error(
                "Value: the shared segment does not hold one value",
            ));
        }
        Ok(RawValue { shared })
    }
}

impl<T: CType> fmt::Debug for RawValue<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RawValue<{}>({:?})", T::CTYPE, self.get())
    }
}

impl<T: CType> RawValue<T> {
    /// A new shared value holding `value`.
    ///
    /// ```
    /// let v = multiproc::RawValue::new(3.5_f32)?;
    /// assert_eq!(v.get(), 3.5);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn new(value: T) -> Result<RawValue<T>> {
        Ok(RawValue { shared: Shared::from_iter(VALUE_KIND, "Value", [value])? })
    }

    /// The value (Python's `.value`).
    ///
    /// ```
    /// assert_eq!(multiproc::RawValue::new(b'x')?.get(), b'x');
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn get(&self) -> T {
        self.shared.load(0, Acquire)
    }

    /// Sets the value (Python's `.value = x`).
    ///
    /// ```
    /// let v = multiproc::RawValue::new(false)?;
    /// v.set(true);
    /// assert!(v.get());
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn set(&self, value: T) {
        self.shared.store(0, value, Release)
    }

    /// Python's type code of the value (`'i'`, `'d'`, …).
    ///
    /// ```
    /// assert_eq!(multiproc::RawValue::new(0_i16)?.typecode(), 'h');
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn typecode(&self) -> char {
        T::TYPECODE
    }
}

impl<T: CInt> RawValue<T> {
    /// Reads the value (sequentially consistent; the same as [`get`](Self::get) but for
    /// the ordering).
    ///
    /// ```
    /// assert_eq!(multiproc::RawValue::new(7_i64)?.load(), 7);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn load(&self) -> T {
        self.shared.load(0, SeqCst)
    }

    /// Writes the value (sequentially consistent).
    ///
    /// ```
    /// let v = multiproc::RawValue::new(0_u32)?;
    /// v.store(9);
    /// assert_eq!(v.load(), 9);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn store(&self, value: T) {
        self.shared.store(0, value, SeqCst)
    }

    /// Adds `value` (wrapping) without a lock; returns the previous value.
    ///
    /// ```
    /// let v = multiproc::RawValue::new(i32::MAX)?;
    /// assert_eq!(v.fetch_add(1), i32::MAX);
    /// assert_eq!(v.get(), i32::MIN);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn fetch_add(&self, value: T) -> T {
        self.shared.fetch_add(0, value)
    }

    /// Subtracts `value` (wrapping) without a lock; returns the previous value.
    ///
    /// ```
    /// let v = multiproc::RawValue::new(0_u8)?;
    /// assert_eq!(v.fetch_sub(1), 0);
    /// assert_eq!(v.get(), 255);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn fetch_sub(&self, value: T) -> T {
        self.shared.fetch_sub(0, value)
    }

    /// Replaces the value; returns the previous one.
    ///
    /// ```
    /// let v = multiproc::RawValue::new(1_u64)?;
    /// assert_eq!(v.swap(2), 1);
    /// assert_eq!(v.get(), 2);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn swap(&self, value: T) -> T {
        self.shared.swap(0, value)
    }

    /// Stores `new` if the value is `current`: `Ok(current)` if it did, `Err(actual)` if
    /// the value was something else.
    ///
    /// ```
    /// let v = multiproc::RawValue::new(5_i16)?;
    /// assert_eq!(v.compare_exchange(5, 6), Ok(5));
    /// assert_eq!(v.compare_exchange(5, 7), Err(6));
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn compare_exchange(&self, current: T, new: T) -> std::result::Result<T, T> {
        self.shared.compare_exchange(0, current, new)
    }
}

/// One number in shared memory with a lock (Python's `multiprocessing.Value`).
///
/// The lock is for read-modify-write sequences; single reads and writes are atomic by
/// themselves and do not take it (see the [module documentation](self#what-is-atomic-and-what-needs-the-lock)).
///
/// ```
/// use multiproc::{Process, Value};
///
/// // Seed 002, "Value with Built-in Lock".
/// fn increment((counter, n): (Value<i32>, u32)) {
///     for _ in 0..n {
///         let _g = counter.get_lock().acquire(None).unwrap();
///         counter.set(counter.get() + 1);
///     }
/// }
///
/// let counter = Value::new(0)?;
/// let p1 = Process::new(increment, (counter.clone(), 1000));
/// let p2 = Process::new(increment, (counter.clone(), 1000));
/// p1.start()?;
/// p2.start()?;
/// p1.join(None)?;
/// p2.join(None)?;
/// assert_eq!(counter.get(), 2000);
/// # Ok::<(), multiproc::Error>(())
/// ```
#[derive(Clone, Serialize, Deserialize)]
#[serde(bound = "")]
pub struct Value<T: CType> {
    raw: RawValue<T>,
    lock: SyncLock,
}

impl<T: CType> fmt::Debug for Value<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Value<{}>({:?})", T::CTYPE, self.get())
    }
}

impl<T: CType> Value<T> {
    /// A new value with a new [`RLock`] (Python's `Value(typecode, value)`).
    ///
    /// ```
    /// let num = multiproc::Value::new(0.0_f64)?;
    /// num.set(3.14159);
    /// assert_eq!(num.get(), 3.14159);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn new(value: T) -> Result<Value<T>> {
        Value::with_lock(value, RLock::new()?)
    }

    /// A new value guarded by an existing [`Lock`] or [`RLock`] (Python's `lock=` argument).
    ///
    /// ```
    /// use multiproc::{synchronize::Lock, Value};
    /// let lock = Lock::new()?;
    /// let a = Value::with_lock(1_i32, lock.clone())?;
    /// let b = Value::with_lock(2_i32, lock)?;
    /// let _g = a.get_lock().acquire(None)?;
    /// // One lock guards both values.
    /// assert!(matches!(b.get_lock().acquire(Some(std::time::Duration::ZERO)), Err(multiproc::Error::Timeout(_))));
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn with_lock(value: T, lock: impl Into<SyncLock>) -> Result<Value<T>> {
        Ok(Value { raw: RawValue::new(value)?, lock: lock.into() })
    }

    /// A new value without a lock (Python's `Value(typecode, value, lock=False)`).
    ///
    /// ```
    /// let v = multiproc::Value::raw(1_u32)?;
    /// assert_eq!(v.fetch_add(1), 1);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn raw(value: T) -> Result<RawValue<T>> {
        RawValue::new(value)
    }

    /// Puts a lock beside an existing raw value (Python's `synchronized(obj, lock)`).
    ///
    /// ```
    /// use multiproc::{RawValue, Value, synchronize::RLock};
    /// let raw = RawValue::new(4_i8)?;
    /// let v = Value::from_raw(raw.clone(), RLock::new()?);
    /// raw.set(5);
    /// assert_eq!(v.get(), 5);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn from_raw(raw: RawValue<T>, lock: impl Into<SyncLock>) -> Value<T> {
        Value { raw, lock: lock.into() }
    }

    /// The value (Python's `.value`). Atomic; does not take the lock.
    ///
    /// ```
    /// assert_eq!(multiproc::Value::new(42_i32)?.get(), 42);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn get(&self) -> T {
        self.raw.get()
    }

    /// Sets the value (Python's `.value = x`). Atomic; does not take the lock.
    ///
    /// ```
    /// let v = multiproc::Value::new(0_i32)?;
    /// v.set(-3);
    /// assert_eq!(v.get(), -3);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn set(&self, value: T) {
        self.raw.set(value)
    }

    /// The lock (Python's `get_lock()`).
    ///
    /// ```
    /// let counter = multiproc::Value::new(0_i32)?;
    /// let _g = counter.get_lock().acquire(None)?;
    /// counter.set(counter.get() + 1);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn get_lock(&self) -> &SyncLock {
        &self.lock
    }

    /// The value without its lock (Python's `get_obj()`).
    ///
    /// ```
    /// let v = multiproc::Value::new(2_u16)?;
    /// assert_eq!(v.get_obj().fetch_add(1), 2);
    /// assert_eq!(v.get(), 3);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn get_obj(&self) -> &RawValue<T> {
        &self.raw
    }

    /// Acquires the lock (waiting at most `timeout`) and returns a guard that
    /// dereferences to the value. A change made through the guard is written back when it
    /// drops, before the lock is released; a panic while it is held writes nothing.
    ///
    /// ```
    /// let counter = multiproc::Value::new(0_i32)?;
    /// *counter.lock(None)? += 1;
    /// {
    ///     let mut v = counter.lock(None)?;
    ///     *v *= 10;
    ///     assert!(!v.owner_died());
    /// }
    /// assert_eq!(counter.get(), 10);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn lock(&self, timeout: Option<Duration>) -> Result<ValueGuard<'_, T>> {
        let lock = self.lock.acquire(timeout)?;
        let value = self.raw.get();
        Ok(ValueGuard { raw: &self.raw, original: value, value, lock })
    }

    /// Python's type code of the value (`'i'`, `'d'`, …).
    ///
    /// ```
    /// assert_eq!(multiproc::Value::new(0.0_f64)?.typecode(), 'd');
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn typecode(&self) -> char {
        T::TYPECODE
    }
}

impl<T: CInt> Value<T> {
    /// Reads the value, sequentially consistent, without the lock.
    ///
    /// ```
    /// assert_eq!(multiproc::Value::new(3_u8)?.load(), 3);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn load(&self) -> T {
        self.raw.load()
    }

    /// Writes the value, sequentially consistent, without the lock.
    ///
    /// ```
    /// let v = multiproc::Value::new(0_i64)?;
    /// v.store(-1);
    /// assert_eq!(v.load(), -1);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn store(&self, value: T) {
        self.raw.store(value)
    }

    /// Adds `value` (wrapping) atomically, without the lock; returns the previous value.
    /// Much faster than a locked increment, and as safe against lost updates.
    ///
    /// ```
    /// let counter = multiproc::Value::new(0_i32)?;
    /// assert_eq!(counter.fetch_add(5), 0);
    /// assert_eq!(counter.get(), 5);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn fetch_add(&self, value: T) -> T {
        self.raw.fetch_add(value)
    }

    /// Subtracts `value` (wrapping) atomically, without the lock; returns the previous
    /// value.
    ///
    /// ```
    /// let v = multiproc::Value::new(5_u64)?;
    /// assert_eq!(v.fetch_sub(2), 5);
    /// assert_eq!(v.get(), 3);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn fetch_sub(&self, value: T) -> T {
        self.raw.fetch_sub(value)
    }

    /// Replaces the value atomically, without the lock; returns the previous one.
    ///
    /// ```
    /// let v = multiproc::Value::new(1_i32)?;
    /// assert_eq!(v.swap(0), 1);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn swap(&self, value: T) -> T {
        self.raw.swap(value)
    }

    /// Stores `new` if the value is `current`, atomically, without the lock:
    /// `Ok(current)` or `Err(actual)`.
    ///
    /// ```
    /// let v = multiproc::Value::new(0_u32)?;
    /// assert_eq!(v.compare_exchange(0, 1), Ok(0));
    /// assert_eq!(v.compare_exchange(0, 2), Err(1));
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn compare_exchange(&self, current: T, new: T) -> std::result::Result<T, T> {
        self.raw.compare_exchange(current, new)
    }
}

/// The lock of a [`Value`] and a private copy of the value, from [`Value::lock`].
/// Dereferences to the value; a change is written back when the guard drops.
///
/// `&T` and `&mut T` from the guard point to that private copy, not into shared memory:
/// no other handle (a clone, [`Value::get_obj`], another process) can write it while the
/// reference lives. Writers that skip the lock change the shared value, not the copy.
///
/// ```
/// let v = multiproc::Value::new(1.0_f64)?;
/// let mut g = v.lock(None)?;
/// *g += 0.5;
/// assert_eq!(v.get(), 1.0); // not yet written
/// drop(g);
/// assert_eq!(v.get(), 1.5);
/// # Ok::<(), multiproc::Error>(())
/// ```
#[must_use = "the lock is released when the guard is dropped"]
pub struct ValueGuard<'a, T: CType> {
    raw: &'a RawValue<T>,
    original: T,
    value: T,
    // Dropped after `Drop::drop` has written the value back.
    lock: SyncGuard<'a>,
}

impl<T: CType> ValueGuard<'_, T> {
    /// Whether the lock's previous holder died holding it.
    ///
    /// ```
    /// let v = multiproc::Value::new(0_i32)?;
    /// assert!(!v.lock(None)?.owner_died());
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn owner_died(&self) -> bool {
        self.lock.owner_died()
    }
}

impl<T: CType> Deref for ValueGuard<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.value
    }
}

impl<T: CType> DerefMut for ValueGuard<'_, T> {
    fn deref_mut(&mut self) -> &mut T {
        &mut self.value
    }
}

impl<T: CType> Drop for ValueGuard<'_, T> {
    fn drop(&mut self) {
        if !std::thread::panicking() && self.value.to_ne() != self.original.to_ne() {
            self.raw.set(self.value);
        }
    }
}

impl<T: CType> fmt::Debug for ValueGuard<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("ValueGuard").field(&self.value).finish()
    }
}

// --------------------------------------------------------------------------------------
// RawArray and Array

/// A fixed-length array of numbers in shared memory, without a lock (Python's
/// `RawArray`, or `Array(…, lock=False)`). Element reads and writes are atomic; integer
/// elements also have lock-free read-modify-write operations.
///
/// ```
/// use multiproc::RawArray;
/// let arr = RawArray::from_values(&[1_i32, 2, 3])?;
/// arr.set(0, 10)?;
/// assert_eq!(arr.fetch_add(1, 5)?, 2);
/// assert_eq!(arr.to_vec(), [10, 7, 3]);
/// assert!(arr.get(3).is_err());
/// # Ok::<(), multiproc::Error>(())
/// ```
pub struct RawArray<T> {
    shared: Shared<T>,
}

impl<T> Clone for RawArray<T> {
    fn clone(&self) -> Self {
        RawArray { shared: self.shared.clone() }
    }
}

impl<T: CType> Serialize for RawArray<T> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        self.shared.serialize("Array", s)
    }
}

impl<'de, T: CType> Deserialize<'de> for RawArray<T> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        Ok(RawArray { shared: Shared::deserialize(d, ARRAY_KIND, "Array")? })
    }
}

impl<T: CType> fmt::Debug for RawArray<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RawArray<{}>({:?})", T::CTYPE, self.to_vec())
    }
}

impl<T: CType> RawArray<T> {
    /// A new array of `size` zeros (Python's `RawArray(typecode, size)`).
    ///
    /// ```
    /// let arr = multiproc::RawArray::<f64>::new(3)?;
    /// assert_eq!(arr.to_vec(), [0.0, 0.0, 0.0]);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn new(size: usize) -> Result<RawArray<T>> {
        Ok(RawArray { shared: Shared::create(ARRAY_KIND, "Array", size)? })
    }

    /// A new array holding a copy of `values`.
    ///
    /// ```
    /// let arr = multiproc::RawArray::from_values(&[1_u8, 2])?;
    /// assert_eq!(arr.len(), 2);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn from_values(values: &[T]) -> Result<RawArray<T>> {
        RawArray::from_iter(values.iter().copied())
    }

    /// A new array holding the items of `values` (Python's `RawArray('i', range(5))`).
    ///
    /// ```
    /// let arr = multiproc::RawArray::from_iter(0..5_i32)?;
    /// assert_eq!(arr.to_vec(), [0, 1, 2, 3, 4]);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    #[allow(clippy::should_implement_trait)] // fallible: it creates a shared segment
    pub fn from_iter(values: impl IntoIterator<Item = T>) -> Result<RawArray<T>> {
        Ok(RawArray { shared: Shared::from_iter(ARRAY_KIND, "Array", values)? })
    }

    /// The number of elements (Python's `len(arr)`).
    ///
    /// ```
    /// assert_eq!(multiproc::RawArray::<i32>::new(4)?.len(), 4);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn len(&self) -> usize {
        self.shared.len
    }

    /// Whether the array has no elements.
    ///
    /// ```
    /// assert!(multiproc::RawArray::<i32>::new(0)?.is_empty());
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn is_empty(&self) -> bool {
        self.shared.len == 0
    }

    /// Element `i` (Python's `arr[i]`); [`Error::InvalidArgument`] if `i` is out of range.
    ///
    /// ```
    /// let arr = multiproc::RawArray::from_values(&[5_i64, 6])?;
    /// assert_eq!(arr.get(1)?, 6);
    /// assert!(matches!(arr.get(2), Err(multiproc::Error::InvalidArgument(_))));
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn get(&self, i: usize) -> Result<T> {
        self.shared.check(i)?;
        Ok(self.shared.load(i, Acquire))
    }

    /// Sets element `i` (Python's `arr[i] = x`); [`Error::InvalidArgument`] if `i` is out
    /// of range.
    ///
    /// ```
    /// let arr = multiproc::RawArray::<f32>::new(2)?;
    /// arr.set(1, 2.5)?;
    /// assert_eq!(arr.to_vec(), [0.0, 2.5]);
    /// assert!(arr.set(2, 1.0).is_err());
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn set(&self, i: usize, value: T) -> Result<()> {
        self.shared.check(i)?;
        self.shared.store(i, value, Release);
        Ok(())
    }

    /// All elements (Python's `arr[:]` or `list(arr)`), each read atomically.
    ///
    /// ```
    /// let arr = multiproc::RawArray::from_values(&[true, false])?;
    /// assert_eq!(arr.to_vec(), [true, false]);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn to_vec(&self) -> Vec<T> {
        self.shared.to_vec(0, self.shared.len)
    }

    /// The elements in `range` (Python's `arr[a:b]`); [`Error::InvalidArgument`] if the
    /// range does not lie within the array.
    ///
    /// ```
    /// let arr = multiproc::RawArray::from_iter(0..10_u16)?;
    /// assert_eq!(arr.get_range(2..5)?, [2, 3, 4]);
    /// assert_eq!(arr.get_range(8..)?, [8, 9]);
    /// assert!(arr.get_range(5..11).is_err());
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn get_range(&self, range: impl RangeBounds<usize>) -> Result<Vec<T>> {
        let (start, end) = self.shared.range(range)?;
        Ok(self.shared.to_vec(start, end))
    }

    /// Writes `values` from index `start` on (Python's `arr[start:start+len(values)] =
    /// values`); [`Error::InvalidArgument`] (and nothing written) if they do not fit.
    ///
    /// ```
    /// let arr = multiproc::RawArray::<i8>::new(4)?;
    /// arr.set_range(1, &[7, 8])?;
    /// assert_eq!(arr.to_vec(), [0, 7, 8, 0]);
    /// assert!(arr.set_range(3, &[1, 2]).is_err());
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn set_range(&self, start: usize, values: &[T]) -> Result<()> {
        self.shared.set_range(start, values)
    }

    /// Python's type code of the elements.
    ///
    /// ```
    /// assert_eq!(multiproc::RawArray::<u64>::new(1)?.typecode(), 'Q');
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn typecode(&self) -> char {
        T::TYPECODE
    }
}

impl<T: CInt> RawArray<T> {
    /// Adds `value` (wrapping) to element `i` without a lock; returns its previous value.
    ///
    /// ```
    /// let arr = multiproc::RawArray::<u32>::new(2)?;
    /// assert_eq!(arr.fetch_add(1, 3)?, 0);
    /// assert_eq!(arr.to_vec(), [0, 3]);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn fetch_add(&self, i: usize, value: T) -> Result<T> {
        self.shared.check(i)?;
        Ok(self.shared.fetch_add(i, value))
    }

    /// Subtracts `value` (wrapping) from element `i` without a lock; returns its previous
    /// value.
    ///
    /// ```
    /// let arr = multiproc::RawArray::from_values(&[5_i16])?;
    /// assert_eq!(arr.fetch_sub(0, 6)?, 5);
    /// assert_eq!(arr.get(0)?, -1);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn fetch_sub(&self, i: usize, value: T) -> Result<T> {
        self.shared.check(i)?;
        Ok(self.shared.fetch_sub(i, value))
    }

    /// Replaces element `i` without a lock; returns its previous value.
    ///
    /// ```
    /// let arr = multiproc::RawArray::from_values(&[1_u8, 2])?;
    /// assert_eq!(arr.swap(1, 9)?, 2);
    /// assert_eq!(arr.to_vec(), [1, 9]);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn swap(&self, i: usize, value: T) -> Result<T> {
        self.shared.check(i)?;
        Ok(self.shared.swap(i, value))
    }

    /// Stores `new` in element `i` if it is `current`, without a lock: `Ok(Ok(current))`,
    /// or `Ok(Err(actual))` if it was something else.
    ///
    /// ```
    /// let arr = multiproc::RawArray::from_values(&[0_i64])?;
    /// assert_eq!(arr.compare_exchange(0, 0, 1)?, Ok(0));
    /// assert_eq!(arr.compare_exchange(0, 0, 2)?, Err(1));
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn compare_exchange(
        &self,
        i: usize,
        current: T,
        new: T,
    ) -> Result<std::result::Result<T, T>> {
        self.shared.check(i)?;
        Ok(self.shared.compare_exchange(i, current, new))
    }
}

/// A fixed-length array of numbers in shared memory with a lock (Python's
/// `multiprocessing.Array`).
///
/// The lock is for sequences of operations; single element reads and writes are atomic
/// by themselves and do not take it (see the [module
/// documentation](self#what-is-atomic-and-what-needs-the-lock)).
///
/// ```
/// use multiproc::{Array, Process};
///
/// // Seed 002, "Basic Array".
/// fn fill_array((arr, start): (Array<f64>, f64)) {
///     for i in 0..arr.len() {
///         arr.set(i, start + i as f64).unwrap();
///     }
/// }
///
/// let arr = Array::new(5)?;
/// let p = Process::new(fill_array, (arr.clone(), 10.0));
/// p.start()?;
/// p.join(None)?;
/// assert_eq!(format!("{:?}", arr.to_vec()), "[10.0, 11.0, 12.0, 13.0, 14.0]");
/// # Ok::<(), multiproc::Error>(())
/// ```
#[derive(Clone, Serialize, Deserialize)]
#[serde(bound = "")]
pub struct Array<T: CType> {
    raw: RawArray<T>,
    lock: SyncLock,
}

impl<T: CType> fmt::Debug for Array<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Array<{}>({:?})", T::CTYPE, self.to_vec())
    }
}

impl<T: CType> Array<T> {
    /// A new array of `size` zeros with a new [`RLock`] (Python's `Array(typecode, size)`).
    ///
    /// ```
    /// let arr2 = multiproc::Array::<f64>::new(10)?;
    /// assert_eq!(arr2.to_vec(), [0.0; 10]);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn new(size: usize) -> Result<Array<T>> {
        Ok(Array { raw: RawArray::new(size)?, lock: RLock::new()?.into() })
    }

    /// A new array holding a copy of `values`, with a new [`RLock`] (Python's
    /// `Array('i', [1, 2, 3])`).
    ///
    /// ```
    /// let arr1 = multiproc::Array::from_values(&[1_i32, 2, 3, 4, 5])?;
    /// assert_eq!(format!("{:?}", arr1.to_vec()), "[1, 2, 3, 4, 5]");
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn from_values(values: &[T]) -> Result<Array<T>> {
        Array::with_lock(values, RLock::new()?)
    }

    /// A new array holding the items of `values`, with a new [`RLock`] (Python's
    /// `Array('i', range(5))`).
    ///
    /// ```
    /// let arr = multiproc::Array::from_iter((0..5).map(|i: i32| i * i))?;
    /// assert_eq!(arr.to_vec(), [0, 1, 4, 9, 16]);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    #[allow(clippy::should_implement_trait)] // fallible: it creates a shared segment
    pub fn from_iter(values: impl IntoIterator<Item = T>) -> Result<Array<T>> {
        Ok(Array { raw: RawArray::from_iter(values)?, lock: RLock::new()?.into() })
    }

    /// A new array holding a copy of `values`, guarded by an existing [`Lock`] or
    /// [`RLock`] (Python's `lock=` argument). For zeros, pass `&[0; n]`.
    ///
    /// ```
    /// use multiproc::{synchronize::Lock, Array};
    /// let arr = Array::with_lock(&[0_i32; 5], Lock::new()?)?;
    /// assert_eq!(arr.len(), 5);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn with_lock(values: &[T], lock: impl Into<SyncLock>) -> Result<Array<T>> {
        Ok(Array { raw: RawArray::from_values(values)?, lock: lock.into() })
    }

    /// Puts a lock beside an existing raw array (Python's `synchronized(obj, lock)`).
    ///
    /// ```
    /// use multiproc::{Array, RawArray, synchronize::RLock};
    /// let raw = RawArray::<i32>::new(2)?;
    /// let arr = Array::from_raw(raw.clone(), RLock::new()?);
    /// raw.set(0, 1)?;
    /// assert_eq!(arr.get(0)?, 1);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn from_raw(raw: RawArray<T>, lock: impl Into<SyncLock>) -> Array<T> {
        Array { raw, lock: lock.into() }
    }

    /// The number of elements (Python's `len(arr)`).
    ///
    /// ```
    /// assert_eq!(multiproc::Array::<i32>::new(3)?.len(), 3);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn len(&self) -> usize {
        self.raw.len()
    }

    /// Whether the array has no elements.
    ///
    /// ```
    /// assert!(!multiproc::Array::<i32>::new(3)?.is_empty());
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn is_empty(&self) -> bool {
        self.raw.is_empty()
    }

    /// Element `i` (Python's `arr[i]`); [`Error::InvalidArgument`] if out of range.
    /// Atomic; does not take the lock.
    ///
    /// ```
    /// let arr = multiproc::Array::from_values(&[1.5_f32])?;
    /// assert_eq!(arr.get(0)?, 1.5);
    /// assert!(arr.get(1).is_err());
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn get(&self, i: usize) -> Result<T> {
        self.raw.get(i)
    }

    /// Sets element `i` (Python's `arr[i] = x`); [`Error::InvalidArgument`] if out of
    /// range. Atomic; does not take the lock.
    ///
    /// ```
    /// let arr = multiproc::Array::<i32>::new(2)?;
    /// arr.set(0, 7)?;
    /// assert_eq!(arr.to_vec(), [7, 0]);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn set(&self, i: usize, value: T) -> Result<()> {
        self.raw.set(i, value)
    }

    /// All elements (Python's `arr[:]`, `list(arr)`). Each element is read atomically;
    /// for a snapshot that no lock holder is half-way through changing, read under the
    /// lock: `arr.lock(None)?.to_vec()`.
    ///
    /// ```
    /// let arr = multiproc::Array::from_values(&[3_u64, 4])?;
    /// assert_eq!(arr.to_vec(), [3, 4]);
    /// assert_eq!(arr.lock(None)?.to_vec(), [3, 4]);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn to_vec(&self) -> Vec<T> {
        self.raw.to_vec()
    }

    /// The elements in `range` (Python's `arr[a:b]`); [`Error::InvalidArgument`] if the
    /// range does not lie within the array.
    ///
    /// ```
    /// let arr = multiproc::Array::from_iter(0..5_i32)?;
    /// assert_eq!(arr.get_range(1..=2)?, [1, 2]);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn get_range(&self, range: impl RangeBounds<usize>) -> Result<Vec<T>> {
        self.raw.get_range(range)
    }

    /// Writes `values` from index `start` on; [`Error::InvalidArgument`] (and nothing
    /// written) if they do not fit.
    ///
    /// ```
    /// let arr = multiproc::Array::<i32>::new(3)?;
    /// arr.set_range(0, &[1, 2, 3])?;
    /// assert_eq!(arr.to_vec(), [1, 2, 3]);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn set_range(&self, start: usize, values: &[T]) -> Result<()> {
        self.raw.set_range(start, values)
    }

    /// The lock (Python's `get_lock()`).
    ///
    /// ```
    /// let arr = multiproc::Array::<i32>::new(5)?;
    /// {
    ///     let _g = arr.get_lock().acquire(None)?;
    ///     for i in 0..arr.len() {
    ///         arr.set(i, arr.get(i)? + 1)?;
    ///     }
    /// }
    /// assert_eq!(arr.to_vec(), [1; 5]);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn get_lock(&self) -> &SyncLock {
        &self.lock
    }

    /// The array without its lock (Python's `get_obj()`).
    ///
    /// ```
    /// let arr = multiproc::Array::<u8>::new(1)?;
    /// arr.get_obj().fetch_add(0, 1)?;
    /// assert_eq!(arr.get(0)?, 1);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn get_obj(&self) -> &RawArray<T> {
        &self.raw
    }

    /// Acquires the lock (waiting at most `timeout`) and returns a guard that
    /// dereferences to the elements (`&mut [T]`): a copy read under the lock. Elements
    /// changed through the guard are written back when it drops, before the lock is
    /// released; a panic while it is held writes nothing back.
    ///
    /// ```
    /// let arr = multiproc::Array::from_values(&[1_i32, 2, 3])?;
    /// {
    ///     let mut elems = arr.lock(None)?;
    ///     for e in elems.iter_mut() {
    ///         *e *= 2;
    ///     }
    /// }
    /// assert_eq!(arr.to_vec(), [2, 4, 6]);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn lock(&self, timeout: Option<Duration>) -> Result<ArrayGuard<'_, T>> {
        let lock = self.lock.acquire(timeout)?;
        let original = self.raw.to_vec();
        let elems = original.clone();
        Ok(ArrayGuard { raw: &self.raw, original, elems, lock })
    }

    /// Python's type code of the elements.
    ///
    /// ```
    /// assert_eq!(multiproc::Array::<i8>::new(1)?.typecode(), 'b');
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn typecode(&self) -> char {
        T::TYPECODE
    }
}

impl<T: CInt> Array<T> {
    /// Adds `value` (wrapping) to element `i` atomically, without the lock; returns its
    /// previous value.
    ///
    /// ```
    /// let arr = multiproc::Array::<i32>::new(5)?;
    /// for i in 0..arr.len() {
    ///     arr.fetch_add(i, 10)?;
    /// }
    /// assert_eq!(arr.to_vec(), [10; 5]);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn fetch_add(&self, i: usize, value: T) -> Result<T> {
        self.raw.fetch_add(i, value)
    }

    /// Subtracts `value` (wrapping) from element `i` atomically, without the lock;
    /// returns its previous value.
    ///
    /// ```
    /// let arr = multiproc::Array::from_values(&[3_u16])?;
    /// assert_eq!(arr.fetch_sub(0, 1)?, 3);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn fetch_sub(&self, i: usize, value: T) -> Result<T> {
        self.raw.fetch_sub(i, value)
    }

    /// Replaces element `i` atomically, without the lock; returns its previous value.
    ///
    /// ```
    /// let arr = multiproc::Array::from_values(&[3_i8])?;
    /// assert_eq!(arr.swap(0, 4)?, 3);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn swap(&self, i: usize, value: T) -> Result<T> {
        self.raw.swap(i, value)
    }

    /// Stores `new` in element `i` if it is `current`, atomically, without the lock.
    ///
    /// ```
    /// let arr = multiproc::Array::from_values(&[0_u32, 0])?;
    /// assert_eq!(arr.compare_exchange(1, 0, 5)?, Ok(0));
    /// assert_eq!(arr.to_vec(), [0, 5]);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn compare_exchange(
        &self,
        i: usize,
        current: T,
        new: T,
    ) -> Result<std::result::Result<T, T>> {
        self.raw.compare_exchange(i, current, new)
    }
}

/// The lock of an [`Array`] and a private copy of its elements, from [`Array::lock`].
/// Dereferences to `[T]`; changed elements are written back when the guard drops.
///
/// `&[T]` and `&mut [T]` from the guard point to that private copy, not into shared
/// memory: no other handle (a clone, [`Array::get_obj`], another process) can write it
/// while the reference lives. Writers that skip the lock change the shared elements, not
/// the copy.
///
/// ```
/// let arr = multiproc::Array::<i32>::new(3)?;
/// let mut g = arr.lock(None)?;
/// g[1] = 5;
/// assert!(!g.owner_died());
/// drop(g);
/// assert_eq!(arr.to_vec(), [0, 5, 0]);
/// # Ok::<(), multiproc::Error>(())
/// ```
#[must_use = "the lock is released when the guard is dropped"]
pub struct ArrayGuard<'a, T: CType> {
    raw: &'a RawArray<T>,
    original: Vec<T>,
    elems: Vec<T>,
    // Dropped after `Drop::drop` has written the elements back.
    lock: SyncGuard<'a>,
}

impl<T: CType> ArrayGuard<'_, T> {
    /// Whether the lock's previous holder died holding it.
    ///
    /// ```
    /// let arr = multiproc::Array::<i32>::new(1)?;
    /// assert!(!arr.lock(None)?.owner_died());
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn owner_died(&self) -> bool {
        self.lock.owner_died()
    }
}

impl<T: CType> Deref for ArrayGuard<'_, T> {
    type Target = [T];
    fn deref(&self) -> &[T] {
        &self.elems
    }
}

impl<T: CType> DerefMut for ArrayGuard<'_, T> {
    fn deref_mut(&mut self) -> &mut [T] {
        &mut self.elems
    }
}

impl<T: CType> Drop for ArrayGuard<'_, T> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            return;
        }
        for (i, (new, old)) in self.elems.iter().zip(&self.original).enumerate() {
            if new.to_ne() != old.to_ne() {
                self.raw.shared.store(i, *new, Release);
            }
        }
    }
}

impl<T: CType> fmt::Debug for ArrayGuard<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("ArrayGuard").field(&self.elems).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reduction;

    /// Exports `shared`'s segment and imports it again as `Shared<U>` of `kind`.
    fn reimport<T: CType, U: CType>(shared: &Shared<T>, kind: u32) -> Result<Shared<U>> {
        let (handle, fds) = reduction::export_handles(|| shared.segment.export("Value"));
        reduction::import_handles(fds, || Shared::<U>::import(handle?, kind, "Value"))
    }

    #[test]
    fn import_checks_kind_type_code_and_size() {
        let v = RawValue::new(7_i32).unwrap();
        let same = reimport::<i32, i32>(&v.shared, VALUE_KIND).unwrap();
        assert_eq!((same.len, same.load(0, SeqCst)), (1, 7));

        let err = reimport::<i32, u32>(&v.shared, VALUE_KIND).err().unwrap().to_string();
        assert!(err.contains("type code 'i', expected 'I' (c_uint)"), "{err}");
        let err = reimport::<i32, i32>(&v.shared, ARRAY_KIND).err().unwrap().to_string();
        assert!(err.contains("not a Value"), "{err}");

        // A count that claims more elements than the segment holds is refused.
        v.shared.segment.word64(LEN).store(1 << 40, SeqCst);
        let err = reimport::<i32, i32>(&v.shared, VALUE_KIND).err().unwrap().to_string();
        assert!(err.contains("smaller than its elements"), "{err}");
        v.shared.segment.word64(LEN).store(u64::MAX, SeqCst);
        assert!(reimport::<i32, i32>(&v.shared, VALUE_KIND).is_err());
    }

    #[test]
    fn narrow_elements_share_words_without_disturbing_neighbours() {
        let a = RawArray::from_values(&[1_u8, 2, 3, 4, 5, 6, 7]).unwrap();
        a.set(2, 30).unwrap();
        assert_eq!(a.swap(3, 40).unwrap(), 4);
        assert_eq!(a.compare_exchange(6, 7, 70).unwrap(), Ok(7));
        assert_eq!(a.to_vec(), [1, 2, 30, 40, 5, 6, 70]);
        let h = RawArray::from_values(&[-1_i16, 2, -3]).unwrap();
        assert_eq!(h.fetch_add(1, -5).unwrap(), 2);
        assert_eq!(h.to_vec(), [-1, -3, -3]);
        assert_eq!(segment_len(7, 1), Some(24));
        assert_eq!(segment_len(0, 8), Some(16));
        assert_eq!(segment_len(usize::MAX, 2), None);
    }
}
