//! [`RawValue`] and [`RawArray`]: one number, or a fixed-length run of numbers, in a
//! shared cell, without a lock (Python's `RawValue` and `RawArray`). Every element read
//! and write is atomic; integers also have lock-free read-modify-write operations. The
//! synchronized [`Value`](super::Value) and [`Array`](super::Array) wrap these.

use std::fmt;
use std::ops::RangeBounds;
use std::sync::atomic::Ordering::{Acquire, Release, SeqCst};

use serde::{Deserialize, Serialize};

use super::cell::{Shared, ARRAY_KIND, VALUE_KIND};
use super::{CInt, CType};
use crate::error::Result;

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
/// for w in &workers { w.join()?; }
/// assert_eq!(hits.get(), 2000);
///
/// hits.set(5);
/// assert_eq!(hits.swap(6), 5);
/// assert_eq!(hits.compare_exchange(6, 7), Ok(6));
/// assert_eq!(hits.compare_exchange(6, 8), Err(7));
/// assert_eq!(hits.fetch_sub(8), 7); // wrapping, as C's unsigned arithmetic
/// assert_eq!(hits.load(), u64::MAX);
/// assert_eq!(hits.typecode(), 'Q');
/// # Ok::<(), multiproc::Error>(())
/// ```
pub struct RawValue<T> {
    pub(super) shared: Shared<T>,
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
    /// The descriptor of the shared segment, for a transport of descriptors that the
    /// crate does not drive itself (the Python package hands it to a child with
    /// `multiprocessing.reduction.DupFd`); the receiver opens it with `from_fd`.
    ///
    /// ```
    /// use multiproc::sharedctypes::RawValue;
    /// let a = RawValue::new(7_i32)?;
    /// let b = RawValue::<i32>::from_fd(a.export_fd().try_clone_to_owned()?)?;
    /// assert_eq!(b.get(), 7);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn export_fd(&self) -> std::os::fd::BorrowedFd<'_> {
        self.shared.fd()
    }

    /// Opens the value whose descriptor [`RawValue::export_fd`] exported; a descriptor
    /// of anything else, or of elements of another type, is [`Error::Codec`](crate::Error::Codec).
    ///
    /// ```
    /// use multiproc::sharedctypes::RawValue;
    /// let a = RawValue::new(7_i32)?;
    /// assert!(RawValue::<u8>::from_fd(a.export_fd().try_clone_to_owned()?).is_err());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn from_fd(fd: std::os::fd::OwnedFd) -> Result<RawValue<T>> {
        let shared = Shared::open_fd(fd, VALUE_KIND, "Value")?;
        if shared.len != 1 {
            return Err(crate::Error::Codec(
                "Value: the shared segment does not hold one value".into(),
            ));
        }
        Ok(RawValue { shared })
    }
    /// A new shared value holding `value`.
    pub fn new(value: T) -> Result<RawValue<T>> {
        Ok(RawValue { shared: Shared::from_iter(VALUE_KIND, "Value", [value])? })
    }

    /// The value (Python's `.value`).
    pub fn get(&self) -> T {
        self.shared.load(0, Acquire)
    }

    /// Sets the value (Python's `.value = x`).
    pub fn set(&self, value: T) {
        self.shared.store(0, value, Release)
    }

    /// Python's type code of the value (`'i'`, `'d'`, …).
    pub fn typecode(&self) -> char {
        T::TYPECODE
    }
}

impl<T: CInt> RawValue<T> {
    /// Reads the value (sequentially consistent; the same as [`get`](Self::get) but for
    /// the ordering).
    pub fn load(&self) -> T {
        self.shared.load(0, SeqCst)
    }

    /// Writes the value (sequentially consistent).
    pub fn store(&self, value: T) {
        self.shared.store(0, value, SeqCst)
    }

    /// Adds `value` (wrapping) without a lock; returns the previous value.
    pub fn fetch_add(&self, value: T) -> T {
        self.shared.fetch_add(0, value)
    }

    /// Subtracts `value` (wrapping) without a lock; returns the previous value.
    pub fn fetch_sub(&self, value: T) -> T {
        self.shared.fetch_sub(0, value)
    }

    /// Replaces the value; returns the previous one.
    pub fn swap(&self, value: T) -> T {
        self.shared.swap(0, value)
    }

    /// Stores `new` if the value is `current`: `Ok(current)` if it did, `Err(actual)` if
    /// the value was something else.
    pub fn compare_exchange(&self, current: T, new: T) -> std::result::Result<T, T> {
        self.shared.compare_exchange(0, current, new)
    }
}

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
///
/// let squares = RawArray::from_iter((0..5).map(|i: u16| i * i))?; // Python: range(5)
/// squares.set_range(3, &[0, 0])?;
/// assert_eq!(squares.get_range(1..)?, [1, 4, 0, 0]);
/// assert!(squares.set_range(4, &[1, 2]).is_err()); // does not fit: nothing written
/// assert_eq!(RawArray::<f64>::new(2)?.to_vec(), [0.0, 0.0]);
/// # Ok::<(), multiproc::Error>(())
/// ```
pub struct RawArray<T> {
    pub(super) shared: Shared<T>,
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
    /// The descriptor of the shared segment, for a transport of descriptors that the
    /// crate does not drive itself (the Python package hands it to a child with
    /// `multiprocessing.reduction.DupFd`); the receiver opens it with `from_fd`.
    ///
    /// ```
    /// use multiproc::sharedctypes::RawArray;
    /// let a = RawArray::from_values(&[1.5_f64, 2.5])?;
    /// let b = RawArray::<f64>::from_fd(a.export_fd().try_clone_to_owned()?)?;
    /// assert_eq!(b.to_vec(), [1.5, 2.5]);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn export_fd(&self) -> std::os::fd::BorrowedFd<'_> {
        self.shared.fd()
    }

    /// Opens the array whose descriptor [`RawArray::export_fd`] exported; a descriptor
    /// of anything else, or of elements of another type, is [`Error::Codec`](crate::Error::Codec).
    ///
    /// ```
    /// use multiproc::sharedctypes::RawArray;
    /// let a = RawArray::from_values(&[1.5_f64, 2.5])?;
    /// assert!(RawArray::<u8>::from_fd(a.export_fd().try_clone_to_owned()?).is_err());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn from_fd(fd: std::os::fd::OwnedFd) -> Result<RawArray<T>> {
        let shared = Shared::open_fd(fd, ARRAY_KIND, "Array")?;
        Ok(RawArray { shared })
    }
    /// A new array of `size` zeros (Python's `RawArray(typecode, size)`).
    pub fn new(size: usize) -> Result<RawArray<T>> {
        Ok(RawArray { shared: Shared::create(ARRAY_KIND, "Array", size)? })
    }

    /// A new array holding a copy of `values`.
    pub fn from_values(values: &[T]) -> Result<RawArray<T>> {
        RawArray::from_iter(values.iter().copied())
    }

    /// A new array holding the items of `values` (Python's `RawArray('i', range(5))`).
    #[allow(clippy::should_implement_trait)] // fallible: it creates a shared segment
    pub fn from_iter(values: impl IntoIterator<Item = T>) -> Result<RawArray<T>> {
        Ok(RawArray { shared: Shared::from_iter(ARRAY_KIND, "Array", values)? })
    }

    /// The number of elements (Python's `len(arr)`).
    pub fn len(&self) -> usize {
        self.shared.len
    }

    /// Whether the array has no elements.
    pub fn is_empty(&self) -> bool {
        self.shared.len == 0
    }

    /// Element `i` (Python's `arr[i]`);
    /// [`Error::InvalidArgument`](crate::Error::InvalidArgument) if `i` is out of range.
    pub fn get(&self, i: usize) -> Result<T> {
        self.shared.check(i)?;
        Ok(self.shared.load(i, Acquire))
    }

    /// Sets element `i` (Python's `arr[i] = x`);
    /// [`Error::InvalidArgument`](crate::Error::InvalidArgument) if `i` is out of range.
    pub fn set(&self, i: usize, value: T) -> Result<()> {
        self.shared.check(i)?;
        self.shared.store(i, value, Release);
        Ok(())
    }

    /// All elements (Python's `arr[:]` or `list(arr)`), each read atomically.
    pub fn to_vec(&self) -> Vec<T> {
        self.shared.to_vec(0, self.shared.len)
    }

    /// The elements in `range` (Python's `arr[a:b]`);
    /// [`Error::InvalidArgument`](crate::Error::InvalidArgument) if the range does not lie
    /// within the array.
    pub fn get_range(&self, range: impl RangeBounds<usize>) -> Result<Vec<T>> {
        let (start, end) = self.shared.range(range)?;
        Ok(self.shared.to_vec(start, end))
    }

    /// Writes `values` from index `start` on (Python's `arr[start:start+len(values)] =
    /// values`); [`Error::InvalidArgument`](crate::Error::InvalidArgument) (and nothing
    /// written) if they do not fit.
    pub fn set_range(&self, start: usize, values: &[T]) -> Result<()> {
        self.shared.set_range(start, values)
    }

    /// Python's type code of the elements.
    pub fn typecode(&self) -> char {
        T::TYPECODE
    }
}

impl<T: CInt> RawArray<T> {
    /// Adds `value` (wrapping) to element `i` without a lock; returns its previous value.
    pub fn fetch_add(&self, i: usize, value: T) -> Result<T> {
        self.shared.check(i)?;
        Ok(self.shared.fetch_add(i, value))
    }

    /// Subtracts `value` (wrapping) from element `i` without a lock; returns its previous
    /// value.
    pub fn fetch_sub(&self, i: usize, value: T) -> Result<T> {
        self.shared.check(i)?;
        Ok(self.shared.fetch_sub(i, value))
    }

    /// Replaces element `i` without a lock; returns its previous value.
    pub fn swap(&self, i: usize, value: T) -> Result<T> {
        self.shared.check(i)?;
        Ok(self.shared.swap(i, value))
    }

    /// Stores `new` in element `i` if it is `current`, without a lock: `Ok(Ok(current))`,
    /// or `Ok(Err(actual))` if it was something else.
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
