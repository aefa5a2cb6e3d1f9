//! [`Value`] and [`Array`]: a [`RawValue`] or [`RawArray`] with the lock that guards
//! read-modify-write sequences on it (Python's `multiprocessing.Value` and
//! `multiprocessing.Array`); [`SyncLock`], that lock (a [`Lock`] or an [`RLock`]); and the
//! guards of [`Value::lock`] and [`Array::lock`], which hand out a private copy and write
//! back what changed.

use std::fmt;
use std::ops::{Deref, DerefMut, RangeBounds};
use std::sync::atomic::Ordering::Release;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{CInt, CType, RawArray, RawValue};
use crate::error::Result;
use crate::synchronize::{Lock, LockGuard, RLock, RLockGuard};

/// The lock of a [`Value`] or [`Array`]: a [`Lock`] or an [`RLock`] (Python's
/// `lock=` argument). Convert either into it with `.into()`.
///
/// ```
/// use multiproc::sharedctypes::{SyncLock, Value};
/// use multiproc::synchronize::Lock;
///
/// let lock = Lock::new()?;
/// let v = Value::with_lock(0_i32, lock.clone())?;
/// let guard = v.get_lock().acquire()?;
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
    fn from(lock: Lock) -> SyncLock {
        SyncLock::Lock(lock)
    }
}

impl From<RLock> for SyncLock {
    fn from(lock: RLock) -> SyncLock {
        SyncLock::RLock(lock)
    }
}

impl SyncLock {
    /// Acquires the lock, waiting as long as it takes. A holder that died is taken over
    /// and reported by [`SyncGuard::owner_died`].
    ///
    /// ```
    /// let v = multiproc::Value::new(0_u8)?;
    /// let guard = v.get_lock().acquire()?;
    /// # drop(guard);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn acquire(&self) -> Result<SyncGuard<'_>> {
        Ok(SyncGuard(match self {
            SyncLock::Lock(lock) => HeldLock::Lock(lock.acquire()?),
            SyncLock::RLock(rlock) => HeldLock::RLock(rlock.acquire()?),
        }))
    }

    /// Acquires the lock, waiting at most `timeout`;
    /// [`Error::Timeout`](crate::Error::Timeout) if it stays taken.
    ///
    /// ```
    /// use std::time::Duration;
    /// let v = multiproc::Value::new(0_u8)?;
    /// let guard = v.get_lock().acquire_timeout(Duration::from_secs(1))?;
    /// # drop(guard);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn acquire_timeout(&self, timeout: Duration) -> Result<SyncGuard<'_>> {
        Ok(SyncGuard(match self {
            SyncLock::Lock(lock) => HeldLock::Lock(lock.acquire_timeout(timeout)?),
            SyncLock::RLock(rlock) => HeldLock::RLock(rlock.acquire_timeout(timeout)?),
        }))
    }

    /// Acquires the lock without waiting (an [`RLock`] this thread holds is acquired
    /// again); [`Error::WouldBlock`](crate::Error::WouldBlock) if it is taken.
    ///
    /// ```
    /// use multiproc::{synchronize::Lock, Value};
    /// let v = Value::with_lock(0_u8, Lock::new()?)?;
    /// let guard = v.get_lock().try_acquire()?;
    /// assert!(v.get_lock().try_acquire().is_err());
    /// # drop(guard);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn try_acquire(&self) -> Result<SyncGuard<'_>> {
        Ok(SyncGuard(match self {
            SyncLock::Lock(lock) => HeldLock::Lock(lock.try_acquire()?),
            SyncLock::RLock(rlock) => HeldLock::RLock(rlock.try_acquire()?),
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
/// let guard = v.get_lock().acquire()?;
/// assert!(!guard.owner_died());
/// # Ok::<(), multiproc::Error>(())
/// ```
#[must_use = "the lock is released when the guard is dropped"]
pub struct SyncGuard<'a>(HeldLock<'a>);

impl SyncGuard<'_> {
    /// Whether the previous holder died holding the lock: what it protects may be
    /// half-updated.
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

/// One number in shared memory with a lock (Python's `multiprocessing.Value`).
///
/// The lock is for read-modify-write sequences; single reads and writes are atomic by
/// themselves and do not take it (see the [module
/// documentation](crate::sharedctypes#what-is-atomic-and-what-needs-the-lock)).
///
/// ```
/// use multiproc::{Process, Value};
///
/// // Seed 002, "Value with Built-in Lock".
/// fn increment((counter, n): (Value<i32>, u32)) {
///     for _ in 0..n {
///         let _g = counter.get_lock().acquire().unwrap();
///         counter.set(counter.get() + 1);
///     }
/// }
///
/// let counter = Value::new(0)?;
/// let p1 = Process::new(increment, (counter.clone(), 1000));
/// let p2 = Process::new(increment, (counter.clone(), 1000));
/// p1.start()?;
/// p2.start()?;
/// p1.join()?;
/// p2.join()?;
/// assert_eq!(counter.get(), 2000);
///
/// // A guard over a private copy, written back when it drops:
/// *counter.lock()? += 1;
/// // Lock-free, for integers (as its raw value, `get_obj()`, has them too):
/// assert_eq!(counter.fetch_add(9), 2001);
/// assert_eq!(counter.swap(7), 2010);
/// assert_eq!(counter.compare_exchange(7, 8), Ok(7));
/// assert_eq!(counter.get_obj().compare_exchange(7, 9), Err(8));
/// assert_eq!(counter.typecode(), 'i');
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
    pub fn new(value: T) -> Result<Value<T>> {
        Value::with_lock(value, RLock::new()?)
    }

    /// A new value guarded by an existing [`Lock`] or [`RLock`] (Python's `lock=` argument).
    pub fn with_lock(value: T, lock: impl Into<SyncLock>) -> Result<Value<T>> {
        Ok(Value { raw: RawValue::new(value)?, lock: lock.into() })
    }

    /// A new value without a lock (Python's `Value(typecode, value, lock=False)`).
    pub fn raw(value: T) -> Result<RawValue<T>> {
        RawValue::new(value)
    }

    /// Puts a lock beside an existing raw value (Python's `synchronized(obj, lock)`).
    pub fn from_raw(raw: RawValue<T>, lock: impl Into<SyncLock>) -> Value<T> {
        Value { raw, lock: lock.into() }
    }

    /// The value (Python's `.value`). Atomic; does not take the lock.
    pub fn get(&self) -> T {
        self.raw.get()
    }

    /// Sets the value (Python's `.value = x`). Atomic; does not take the lock.
    pub fn set(&self, value: T) {
        self.raw.set(value)
    }

    /// The lock (Python's `get_lock()`).
    pub fn get_lock(&self) -> &SyncLock {
        &self.lock
    }

    /// The value without its lock (Python's `get_obj()`).
    pub fn get_obj(&self) -> &RawValue<T> {
        &self.raw
    }

    /// Acquires the lock (waiting as long as it takes) and returns a guard that
    /// dereferences to the value. A change made through the guard is written back when it
    /// drops, before the lock is released; a panic while it is held writes nothing.
    ///
    /// ```
    /// let v = multiproc::Value::new(1_i32)?;
    /// *v.lock()? *= 5;
    /// assert_eq!(v.get(), 5);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn lock(&self) -> Result<ValueGuard<'_, T>> {
        self.guard(self.lock.acquire()?)
    }

    /// [`lock`](Self::lock), waiting at most `timeout` for the lock;
    /// [`Error::Timeout`](crate::Error::Timeout) if it stays taken.
    ///
    /// ```
    /// use std::time::Duration;
    /// let v = multiproc::Value::new(1_i32)?;
    /// *v.lock_timeout(Duration::from_secs(1))? += 1;
    /// assert_eq!(v.get(), 2);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn lock_timeout(&self, timeout: Duration) -> Result<ValueGuard<'_, T>> {
        self.guard(self.lock.acquire_timeout(timeout)?)
    }

    /// [`lock`](Self::lock) without waiting; [`Error::WouldBlock`](crate::Error::WouldBlock)
    /// if the lock is taken.
    ///
    /// ```
    /// use multiproc::{synchronize::Lock, Value};
    /// let v = Value::with_lock(1_i32, Lock::new()?)?;
    /// let g = v.try_lock()?;
    /// assert!(v.try_lock().is_err());
    /// # drop(g);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn try_lock(&self) -> Result<ValueGuard<'_, T>> {
        self.guard(self.lock.try_acquire()?)
    }

    fn guard<'a>(&'a self, lock: SyncGuard<'a>) -> Result<ValueGuard<'a, T>> {
        let value = self.raw.get();
        Ok(ValueGuard { raw: &self.raw, original: value, value, lock })
    }

    /// Python's type code of the value (`'i'`, `'d'`, …).
    pub fn typecode(&self) -> char {
        T::TYPECODE
    }
}

impl<T: CInt> Value<T> {
    /// Reads the value, sequentially consistent, without the lock.
    pub fn load(&self) -> T {
        self.raw.load()
    }

    /// Writes the value, sequentially consistent, without the lock.
    pub fn store(&self, value: T) {
        self.raw.store(value)
    }

    /// Adds `value` (wrapping) atomically, without the lock; returns the previous value.
    /// Much faster than a locked increment, and as safe against lost updates.
    pub fn fetch_add(&self, value: T) -> T {
        self.raw.fetch_add(value)
    }

    /// Subtracts `value` (wrapping) atomically, without the lock; returns the previous
    /// value.
    pub fn fetch_sub(&self, value: T) -> T {
        self.raw.fetch_sub(value)
    }

    /// Replaces the value atomically, without the lock; returns the previous one.
    pub fn swap(&self, value: T) -> T {
        self.raw.swap(value)
    }

    /// Stores `new` if the value is `current`, atomically, without the lock:
    /// `Ok(current)` or `Err(actual)`.
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
/// let mut g = v.lock()?;
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

/// A fixed-length array of numbers in shared memory with a lock (Python's
/// `multiprocessing.Array`).
///
/// The lock is for sequences of operations; single element reads and writes are atomic
/// by themselves and do not take it (see the [module
/// documentation](crate::sharedctypes#what-is-atomic-and-what-needs-the-lock)).
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
/// p.join()?;
/// assert_eq!(format!("{:?}", arr.to_vec()), "[10.0, 11.0, 12.0, 13.0, 14.0]");
///
/// // Python's `Array('i', [1, 2, 3])`, `arr[0] = 5`, `arr[1:3]`:
/// let ints = Array::from_values(&[1_i32, 2, 3])?;
/// ints.set(0, 5)?;
/// assert_eq!(ints.get_range(1..3)?, [2, 3]);
/// assert!(ints.get(3).is_err()); // out of range: an error, not a panic
/// {
///     // A guard over a private copy of the elements, written back when it drops.
///     let mut elems = ints.lock()?;
///     for e in elems.iter_mut() {
///         *e *= 2;
///     }
/// }
/// assert_eq!(ints.to_vec(), [10, 4, 6]);
/// assert_eq!(ints.fetch_add(1, 1)?, 4); // lock-free, for integers
/// assert_eq!((ints.len(), ints.typecode()), (3, 'i'));
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
    pub fn new(size: usize) -> Result<Array<T>> {
        Ok(Array { raw: RawArray::new(size)?, lock: RLock::new()?.into() })
    }

    /// A new array holding a copy of `values`, with a new [`RLock`] (Python's
    /// `Array('i', [1, 2, 3])`).
    pub fn from_values(values: &[T]) -> Result<Array<T>> {
        Array::with_lock(values, RLock::new()?)
    }

    /// A new array holding the items of `values`, with a new [`RLock`] (Python's
    /// `Array('i', range(5))`).
    #[allow(clippy::should_implement_trait)] // fallible: it creates a shared segment
    pub fn from_iter(values: impl IntoIterator<Item = T>) -> Result<Array<T>> {
        Ok(Array { raw: RawArray::from_iter(values)?, lock: RLock::new()?.into() })
    }

    /// A new array holding a copy of `values`, guarded by an existing [`Lock`] or
    /// [`RLock`] (Python's `lock=` argument). For zeros, pass `&[0; n]`.
    pub fn with_lock(values: &[T], lock: impl Into<SyncLock>) -> Result<Array<T>> {
        Ok(Array { raw: RawArray::from_values(values)?, lock: lock.into() })
    }

    /// Puts a lock beside an existing raw array (Python's `synchronized(obj, lock)`).
    pub fn from_raw(raw: RawArray<T>, lock: impl Into<SyncLock>) -> Array<T> {
        Array { raw, lock: lock.into() }
    }

    /// The number of elements (Python's `len(arr)`).
    pub fn len(&self) -> usize {
        self.raw.len()
    }

    /// Whether the array has no elements.
    pub fn is_empty(&self) -> bool {
        self.raw.is_empty()
    }

    /// Element `i` (Python's `arr[i]`);
    /// [`Error::InvalidArgument`](crate::Error::InvalidArgument) if out of range. Atomic;
    /// does not take the lock.
    pub fn get(&self, i: usize) -> Result<T> {
        self.raw.get(i)
    }

    /// Sets element `i` (Python's `arr[i] = x`);
    /// [`Error::InvalidArgument`](crate::Error::InvalidArgument) if out of range. Atomic;
    /// does not take the lock.
    pub fn set(&self, i: usize, value: T) -> Result<()> {
        self.raw.set(i, value)
    }

    /// All elements (Python's `arr[:]`, `list(arr)`). Each element is read atomically;
    /// for a snapshot that no lock holder is half-way through changing, read under the
    /// lock: `arr.lock()?.to_vec()`.
    pub fn to_vec(&self) -> Vec<T> {
        self.raw.to_vec()
    }

    /// The elements in `range` (Python's `arr[a:b]`);
    /// [`Error::InvalidArgument`](crate::Error::InvalidArgument) if the range does not lie
    /// within the array.
    pub fn get_range(&self, range: impl RangeBounds<usize>) -> Result<Vec<T>> {
        self.raw.get_range(range)
    }

    /// Writes `values` from index `start` on;
    /// [`Error::InvalidArgument`](crate::Error::InvalidArgument) (and nothing written) if
    /// they do not fit.
    pub fn set_range(&self, start: usize, values: &[T]) -> Result<()> {
        self.raw.set_range(start, values)
    }

    /// The lock (Python's `get_lock()`).
    pub fn get_lock(&self) -> &SyncLock {
        &self.lock
    }

    /// The array without its lock (Python's `get_obj()`).
    pub fn get_obj(&self) -> &RawArray<T> {
        &self.raw
    }

    /// Acquires the lock (waiting as long as it takes) and returns a guard that
    /// dereferences to the elements (`&mut [T]`): a copy read under the lock. Elements
    /// changed through the guard are written back when it drops, before the lock is
    /// released; a panic while it is held writes nothing back.
    ///
    /// ```
    /// let a = multiproc::Array::from_values(&[1_i32, 2, 3])?;
    /// a.lock()?.reverse();
    /// assert_eq!(a.to_vec(), [3, 2, 1]);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn lock(&self) -> Result<ArrayGuard<'_, T>> {
        self.guard(self.lock.acquire()?)
    }

    /// [`lock`](Self::lock), waiting at most `timeout` for the lock;
    /// [`Error::Timeout`](crate::Error::Timeout) if it stays taken.
    ///
    /// ```
    /// use std::time::Duration;
    /// let a = multiproc::Array::from_values(&[1_i32, 2])?;
    /// a.lock_timeout(Duration::from_secs(1))?[0] = 7;
    /// assert_eq!(a.to_vec(), [7, 2]);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn lock_timeout(&self, timeout: Duration) -> Result<ArrayGuard<'_, T>> {
        self.guard(self.lock.acquire_timeout(timeout)?)
    }

    /// [`lock`](Self::lock) without waiting; [`Error::WouldBlock`](crate::Error::WouldBlock)
    /// if the lock is taken.
    ///
    /// ```
    /// use multiproc::{synchronize::Lock, Array};
    /// let a = Array::with_lock(&[0_u8; 4], Lock::new()?)?;
    /// let g = a.try_lock()?;
    /// assert!(a.try_lock().is_err());
    /// # drop(g);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn try_lock(&self) -> Result<ArrayGuard<'_, T>> {
        self.guard(self.lock.try_acquire()?)
    }

    fn guard<'a>(&'a self, lock: SyncGuard<'a>) -> Result<ArrayGuard<'a, T>> {
        let original = self.raw.to_vec();
        let elems = original.clone();
        Ok(ArrayGuard { raw: &self.raw, original, elems, lock })
    }

    /// Python's type code of the elements.
    pub fn typecode(&self) -> char {
        T::TYPECODE
    }
}

impl<T: CInt> Array<T> {
    /// Adds `value` (wrapping) to element `i` atomically, without the lock; returns its
    /// previous value.
    pub fn fetch_add(&self, i: usize, value: T) -> Result<T> {
        self.raw.fetch_add(i, value)
    }

    /// Subtracts `value` (wrapping) from element `i` atomically, without the lock;
    /// returns its previous value.
    pub fn fetch_sub(&self, i: usize, value: T) -> Result<T> {
        self.raw.fetch_sub(i, value)
    }

    /// Replaces element `i` atomically, without the lock; returns its previous value.
    pub fn swap(&self, i: usize, value: T) -> Result<T> {
        self.raw.swap(i, value)
    }

    /// Stores `new` in element `i` if it is `current`, atomically, without the lock.
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
/// let mut g = arr.lock()?;
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
