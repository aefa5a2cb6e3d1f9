//! Process-shared synchronisation: [`Lock`], [`RLock`], [`Semaphore`],
//! [`BoundedSemaphore`], [`Condition`], [`Event`], [`Barrier`] (Python's
//! `multiprocessing.synchronize`).
//!
//! # How they work
//! Each primitive is a few 32-bit words in an anonymous shared memory segment (a `memfd`),
//! operated on with atomics and futexes (the algorithms are in `raw`). A blocking call spins
//! briefly, then sleeps in the kernel; an idle waiter uses no CPU.
//!
//! # Blocking calls
//! Every blocking call comes in three forms, as in `std` and crossbeam, keeping Python's
//! verbs: [`acquire`](Lock::acquire) waits as long as it takes,
//! [`acquire_timeout(d)`](Lock::acquire_timeout) at most `d` (any [`Duration`], `ZERO` and
//! `MAX` included), and [`try_acquire`](Lock::try_acquire) not at all; running out of time
//! is [`Error::Timeout`], and finding the primitive taken without waiting is
//! [`Error::WouldBlock`]. Every acquire returns a guard that releases on drop; `wait` (of
//! [`Event`], [`Barrier`] and a [`ConditionGuard`]) comes as `wait` and `wait_timeout`.
//!
//! | Python | multiproc |
//! |---|---|
//! | `with lock:`, `lock.acquire()` | `let _guard = lock.acquire()?;` |
//! | `lock.acquire(timeout=t)`, `lock.acquire(False)` | [`lock.acquire_timeout(t)?`](Lock::acquire_timeout), [`lock.try_acquire()?`](Lock::try_acquire) |
//! | `sem.acquire()` here, `sem.release()` elsewhere | [`sem.acquire()?.leak()`](SemaphoreGuard::leak), [`sem.release()?`](Semaphore::release) |
//! | `event.wait()`, `event.wait(t)` (a `bool`) | [`event.wait()`](Event::wait), [`event.wait_timeout(t)`](Event::wait_timeout) (`Err(Error::Timeout)`) |
//! | `with cond: cond.wait(t)`, `cond.wait_for(p, t)` | [`cond.acquire()?.wait_timeout(t)`](ConditionGuard::wait_timeout), [`guard.wait_for_timeout(p, t)`](ConditionGuard::wait_for_timeout) |
//! | `Barrier(n)`, `Barrier(n, action=f, timeout=t)` | [`Barrier::new(n)?`](Barrier::new), [`Barrier::builder(n).action(f).timeout(t).build()?`](Barrier::builder) |
//! | `barrier.wait()`, `barrier.wait(t)` | [`barrier.wait()?`](Barrier::wait), [`barrier.wait_timeout(t)?`](Barrier::wait_timeout) |
//!
//! Handles are cheap to clone (clones are the same primitive), and they travel to child
//! processes as arguments: the segment's descriptor is passed, so nothing is left in
//! `/dev/shm` when processes die, however they die.
//!
//! # A dead holder never hangs anyone
//! A [`Lock`] or [`RLock`] records its holder's pid. A waiter that has slept a few
//! milliseconds checks whether the holder still lives; if it was killed while holding the
//! lock, the waiter takes the lock over and its guard reports
//! [`owner_died`](LockGuard::owner_died), so the program can repair what the dead holder
//! left half-done. [`Condition`] waits re-acquire through the same path, and a
//! [`Barrier`] whose waiting party dies breaks (its other parties get
//! [`Error::BrokenBarrier`]) instead of waiting forever.
//!
//! ```
//! use multiproc::synchronize::Lock;
//! use multiproc::Process;
//!
//! fn worker((lock, name): (Lock, String)) {
//!     let _guard = lock.acquire().unwrap();
//!     println!("{name} is alone in its critical section");
//! }
//!
//! let lock = Lock::new()?;
//! let workers: Vec<Process> =
//!     (0..3).map(|i| Process::new(worker, (lock.clone(), format!("worker {i}")))).collect();
//! for w in &workers {
//!     w.start()?;
//! }
//! for w in &workers {
//!     w.join()?;
//! }
//! # Ok::<(), multiproc::Error>(())
//! ```

use std::fmt;
use std::sync::atomic::AtomicU32;
use std::sync::atomic::Ordering::{Relaxed, SeqCst};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::raw::{self, lock::Acquired, Os, Platform};
use crate::reduction;
/// The shared segment of a primitive (it lives in `segment`; the pool and the shared
/// values still name it here).
pub(crate) use crate::segment::Segment;

fn my_pid() -> u32 {
    crate::sys::pid::pid()
}

fn my_tid() -> u32 {
    crate::sys::pid::tid()
}

fn deadline(timeout: Duration) -> Option<Instant> {
    crate::deadline::after(timeout)
}

/// The error of a `try_` form that found the primitive taken.
fn would_block() -> Error {
    Error::WouldBlock
}

// --------------------------------------------------------------------------------------
// Segments

/// Identifies what a segment holds, so a handle of one kind cannot be decoded as another.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u32)]
enum Kind {
    Lock = 0x4d50_4c4b,
    RLock = 0x4d50_524c,
    Semaphore = 0x4d50_534d,
    Event = 0x4d50_4556,
    Condition = 0x4d50_434e,
    Barrier = 0x4d50_4252,
}

/// Creates the segment of a primitive of `kind`.
fn create(kind: Kind, len: usize) -> Result<Arc<Segment>> {
    Segment::new(&format!("{kind:?}").to_lowercase(), kind as u32, len)
}

/// Maps a received segment of a primitive of `kind`.
fn import_kind(handle: reduction::Handle, kind: Kind, min_len: usize) -> Result<Arc<Segment>> {
    Segment::import(handle, &format!("{kind:?}"), kind as u32, min_len)
}

/// The serialized form of a primitive: its segment's handle and kind-specific constants.
#[derive(Serialize, Deserialize)]
struct Sent<E> {
    handle: reduction::Handle,
    extra: E,
}

fn serialize_segment<S: serde::Serializer, E: Serialize>(
    segment: &Segment,
    what: &str,
    extra: E,
    serializer: S,
) -> std::result::Result<S::Ok, S::Error> {
    use serde::ser::Error as _;
    let handle = segment.export(what).map_err(S::Error::custom)?;
    Sent { handle, extra }.serialize(serializer)
}

fn deserialize_segment<'de, D: serde::Deserializer<'de>, E: Deserialize<'de>>(
    deserializer: D,
    kind: Kind,
    min_len: usize,
) -> std::result::Result<(Arc<Segment>, E), D::Error> {
    let sent = Sent::<E>::deserialize(deserializer)?;
    let segment = import_kind(sent.handle, kind, min_len).map_err(crate::codec::de_error)?;
    Ok((segment, sent.extra))
}

macro_rules! shared_handle {
    ($ty:ident, $kind:expr, $min_len:expr, $example:literal) => {
        impl Serialize for $ty {
            fn serialize<S: serde::Serializer>(
                &self,
                s: S,
            ) -> std::result::Result<S::Ok, S::Error> {
                serialize_segment(&self.segment, stringify!($ty), (), s)
            }
        }

        impl<'de> Deserialize<'de> for $ty {
            fn deserialize<D: serde::Deserializer<'de>>(
                d: D,
            ) -> std::result::Result<Self, D::Error> {
                let (segment, ()) = deserialize_segment(d, $kind, $min_len)?;
                Ok($ty { segment })
            }
        }

        impl fmt::Debug for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.debug_struct(stringify!($ty)).finish_non_exhaustive()
            }
        }

        impl $ty {
            #[doc = concat!("The descriptor of the ", stringify!($ty), "'s shared segment, for a")]
            /// transport of descriptors that the crate does not drive itself (the Python
            /// package hands it to a child with `multiprocessing.reduction.DupFd`). The
            /// receiver opens the same primitive with `from_fd` on its own duplicate.
            ///
            /// ```
            #[doc = concat!("use multiproc::synchronize::", stringify!($ty), ";")]
            #[doc = concat!("let a = ", stringify!($ty), "::", $example, "?;")]
            #[doc = concat!("let b = ", stringify!($ty), "::from_fd(a.export_fd().try_clone_to_owned()?)?;")]
            /// # drop(b);
            /// # Ok::<(), Box<dyn std::error::Error>>(())
            /// ```
            pub fn export_fd(&self) -> std::os::fd::BorrowedFd<'_> {
                self.segment.fd()
            }

            #[doc = concat!("Opens the ", stringify!($ty), " whose descriptor `export_fd` exported. The")]
            #[doc = concat!("descriptor must be a sealed ", stringify!($ty), " segment: anything else")]
            /// is [`Error::Codec`].
            ///
            /// ```
            /// use multiproc::queues::Queue;
            #[doc = concat!("use multiproc::synchronize::", stringify!($ty), ";")]
            /// let q = Queue::<u8>::new(0)?;
            #[doc = concat!("assert!(", stringify!($ty), "::from_fd(q.export_fd().try_clone_to_owned()?).is_err());")]
            /// # Ok::<(), Box<dyn std::error::Error>>(())
            /// ```
            pub fn from_fd(fd: std::os::fd::OwnedFd) -> Result<$ty> {
                let segment =
                    Segment::open_fd(fd, stringify!($ty), $kind as u32, $min_len)?;
                Ok($ty { segment })
            }
        }
    };
}

// --------------------------------------------------------------------------------------
// Lock

const LOCK_WORD: usize = 4;
const LOCK_LEN: usize = 8;

/// A non-recursive lock shared between processes (Python's `multiprocessing.Lock`).
///
/// Any process (or thread) may release it, as in Python. If its holder dies, the next
/// acquirer gets it with [`LockGuard::owner_died`] set.
///
/// ```
/// use multiproc::synchronize::Lock;
/// use std::time::Duration;
///
/// let lock = Lock::new()?;
/// let guard = lock.acquire()?;
/// assert!(lock.try_acquire().is_err());
/// drop(guard);
/// assert!(!lock.acquire_timeout(Duration::from_secs(1))?.owner_died());
/// # Ok::<(), multiproc::Error>(())
/// ```
#[derive(Clone)]
pub struct Lock {
    segment: Arc<Segment>,
}

shared_handle!(Lock, Kind::Lock, LOCK_LEN, "new()");

/// Holds a [`Lock`] until dropped.
#[must_use = "the lock is released when the guard is dropped"]
pub struct LockGuard<'a> {
    lock: &'a Lock,
    owner_died: bool,
}

impl Lock {
    /// A new, unlocked lock.
    ///
    /// ```
    /// let lock = multiproc::synchronize::Lock::new()?;
    /// assert!(!lock.is_locked());
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn new() -> Result<Lock> {
        Ok(Lock { segment: create(Kind::Lock, LOCK_LEN)? })
    }

    fn word(&self) -> &AtomicU32 {
        self.segment.word(LOCK_WORD)
    }

    /// Acquires the lock, waiting as long as it takes (Python's `acquire()`).
    ///
    /// ```
    /// let lock = multiproc::synchronize::Lock::new()?;
    /// let held = lock.acquire()?;
    /// assert!(lock.is_locked());
    /// # drop(held);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn acquire(&self) -> Result<LockGuard<'_>> {
        self.acquire_until(None, Duration::MAX)
    }

    /// Acquires the lock, waiting at most `timeout` (Python's `acquire(timeout=t)`);
    /// [`Error::Timeout`] if it stays taken.
    ///
    /// ```
    /// use multiproc::{synchronize::Lock, Error};
    /// use std::time::Duration;
    /// let lock = Lock::new()?;
    /// let _held = lock.acquire()?;
    /// assert!(matches!(lock.acquire_timeout(Duration::from_millis(10)), Err(Error::Timeout(_))));
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn acquire_timeout(&self, timeout: Duration) -> Result<LockGuard<'_>> {
        self.acquire_until(deadline(timeout), timeout)
    }

    fn acquire_until(&self, deadline: Option<Instant>, timeout: Duration) -> Result<LockGuard<'_>> {
        match raw::lock::acquire::<Os>(self.word(), my_pid(), deadline) {
            Some(how) => Ok(LockGuard { lock: self, owner_died: how != Acquired::Normally }),
            None => Err(Error::Timeout(timeout)),
        }
    }

    /// Acquires the lock if it is free (Python's `acquire(block=False)`);
    /// [`Error::WouldBlock`] if it is taken. A holder found dead is taken over, as by
    /// [`acquire`](Self::acquire) (that may take a few milliseconds).
    ///
    /// ```
    /// let lock = multiproc::synchronize::Lock::new()?;
    /// let held = lock.try_acquire()?;
    /// assert!(lock.try_acquire().is_err());
    /// drop(held);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn try_acquire(&self) -> Result<LockGuard<'_>> {
        if raw::lock::try_acquire(self.word(), my_pid()) {
            return Ok(LockGuard { lock: self, owner_died: false });
        }
        // Free the lock of a dead holder rather than report it taken forever.
        if let Some(owner) = raw::lock::owner(self.word()) {
            if !Os::alive(owner) {
                return self.acquire_timeout(Duration::from_millis(50)).map_err(|_| would_block());
            }
        }
        Err(would_block())
    }

    /// Releases the lock, whoever acquired it (Python's `release()`): for a lock taken
    /// with [`LockGuard::leak`], or in another process. [`Error::InvalidRelease`] if it
    /// is not locked.
    ///
    /// ```
    /// let lock = multiproc::synchronize::Lock::new()?;
    /// lock.acquire()?.leak();
    /// assert!(lock.is_locked());
    /// lock.release()?;
    /// assert!(lock.release().is_err());
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn release(&self) -> Result<()> {
        if raw::lock::release::<Os>(self.word()) {
            Ok(())
        } else {
            Err(Error::InvalidRelease("release of an unlocked lock"))
        }
    }

    /// Whether the lock is held (by anyone).
    ///
    /// ```
    /// let lock = multiproc::synchronize::Lock::new()?;
    /// let g = lock.acquire()?;
    /// assert!(lock.is_locked());
    /// # drop(g);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn is_locked(&self) -> bool {
        raw::lock::owner(self.word()).is_some()
    }
}

impl LockGuard<'_> {
    /// Whether the previous holder died holding the lock: the data it protects may be
    /// half-updated.
    ///
    /// ```
    /// let lock = multiproc::synchronize::Lock::new()?;
    /// assert!(!lock.acquire()?.owner_died());
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn owner_died(&self) -> bool {
        self.owner_died
    }

    /// Keeps the lock held after the guard is gone; release it with [`Lock::release`],
    /// here or in another process (Python's pattern of acquiring and releasing apart).
    ///
    /// ```
    /// let lock = multiproc::synchronize::Lock::new()?;
    /// lock.acquire()?.leak();
    /// lock.release()?;
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn leak(self) {
        std::mem::forget(self);
    }
}

impl Drop for LockGuard<'_> {
    fn drop(&mut self) {
        raw::lock::release::<Os>(self.lock.word());
    }
}

// --------------------------------------------------------------------------------------
// RLock

const RLOCK_OWNER_TID: usize = 8;
const RLOCK_COUNT: usize = 12;
const RLOCK_LEN: usize = 16;

/// A recursive lock shared between processes (Python's `multiprocessing.RLock`): the
/// thread that holds it may acquire it again; it is free once released as often.
///
/// ```
/// let rlock = multiproc::synchronize::RLock::new()?;
/// let outer = rlock.acquire()?;
/// let inner = rlock.acquire()?; // same thread: no deadlock
/// drop(inner);
/// drop(outer);
/// # Ok::<(), multiproc::Error>(())
/// ```
#[derive(Clone)]
pub struct RLock {
    segment: Arc<Segment>,
}

shared_handle!(RLock, Kind::RLock, RLOCK_LEN, "new()");

/// Holds one level of an [`RLock`] until dropped.
#[must_use = "the lock is released when the guard is dropped"]
pub struct RLockGuard<'a> {
    lock: &'a RLock,
    owner_died: bool,
}

impl RLock {
    /// A new, unlocked recursive lock.
    ///
    /// ```
    /// let rlock = multiproc::synchronize::RLock::new()?;
    /// assert_eq!(rlock.count(), 0);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn new() -> Result<RLock> {
        Ok(RLock { segment: create(Kind::RLock, RLOCK_LEN)? })
    }

    fn word(&self) -> &AtomicU32 {
        self.segment.word(LOCK_WORD)
    }

    fn owner_tid(&self) -> &AtomicU32 {
        self.segment.word(RLOCK_OWNER_TID)
    }

    fn count_word(&self) -> &AtomicU32 {
        self.segment.word(RLOCK_COUNT)
    }

    fn held_by_me(&self) -> bool {
        raw::lock::owner(self.word()) == Some(my_pid())
            && self.owner_tid().load(Relaxed) == my_tid()
    }

    /// Acquires one level, waiting as long as it takes (at once if this thread holds it).
    ///
    /// ```
    /// let rlock = multiproc::synchronize::RLock::new()?;
    /// let a = rlock.acquire()?;
    /// let b = rlock.acquire()?;
    /// assert_eq!(rlock.count(), 2);
    /// # drop((a, b));
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn acquire(&self) -> Result<RLockGuard<'_>> {
        let owner_died = self.acquire_levels(1, None, Duration::MAX)?;
        Ok(RLockGuard { lock: self, owner_died })
    }

    /// Acquires one level, waiting at most `timeout`; [`Error::Timeout`] if another
    /// thread or process keeps it.
    ///
    /// ```
    /// use std::time::Duration;
    /// let rlock = multiproc::synchronize::RLock::new()?;
    /// let a = rlock.acquire_timeout(Duration::from_secs(1))?;
    /// # drop(a);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn acquire_timeout(&self, timeout: Duration) -> Result<RLockGuard<'_>> {
        let owner_died = self.acquire_levels(1, deadline(timeout), timeout)?;
        Ok(RLockGuard { lock: self, owner_died })
    }

    /// Acquires one level without waiting; [`Error::WouldBlock`] if another thread
    /// or process holds it.
    ///
    /// ```
    /// let rlock = multiproc::synchronize::RLock::new()?;
    /// let a = rlock.try_acquire()?;
    /// let b = rlock.try_acquire()?; // this thread holds it already
    /// # drop((a, b));
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn try_acquire(&self) -> Result<RLockGuard<'_>> {
        if self.held_by_me() {
            self.count_word().fetch_add(1, Relaxed);
            return Ok(RLockGuard { lock: self, owner_died: false });
        }
        if raw::lock::try_acquire(self.word(), my_pid()) {
            self.owner_tid().store(my_tid(), Relaxed);
            self.count_word().store(1, Relaxed);
            return Ok(RLockGuard { lock: self, owner_died: false });
        }
        // A dead holder is taken over, as by `acquire`; a live one makes us fail.
        match raw::lock::owner(self.word()) {
            Some(owner) if !Os::alive(owner) => {
                self.acquire_timeout(Duration::from_millis(50)).map_err(|_| would_block())
            }
            _ => Err(would_block()),
        }
    }

    /// Acquires `levels` levels at once (used to restore a [`Condition`] wait).
    fn acquire_levels(
        &self,
        levels: u32,
        deadline: Option<Instant>,
        timeout: Duration,
    ) -> Result<bool> {
        if self.held_by_me() {
            self.count_word().fetch_add(levels, Relaxed);
            return Ok(false);
        }
        match raw::lock::acquire::<Os>(self.word(), my_pid(), deadline) {
            Some(how) => {
                self.owner_tid().store(my_tid(), Relaxed);
                self.count_word().store(levels, Relaxed);
                Ok(how != Acquired::Normally)
            }
            None => Err(Error::Timeout(timeout)),
        }
    }

    /// Releases every level this thread holds and returns how many there were.
    fn release_all(&self) -> Result<u32> {
        if !self.held_by_me() {
            return Err(Error::InvalidRelease("cannot release an RLock this thread does not hold"));
        }
        let levels = self.count_word().swap(0, Relaxed);
        self.owner_tid().store(0, Relaxed);
        raw::lock::release::<Os>(self.word());
        Ok(levels)
    }

    /// Releases one level held by this thread without a guard (Python's `release()`, for
    /// a level whose guard was [leaked](RLockGuard::leak)); [`Error::InvalidRelease`] if
    /// this thread does not hold the lock.
    ///
    /// ```
    /// let rlock = multiproc::synchronize::RLock::new()?;
    /// rlock.acquire()?.leak();
    /// rlock.release()?;
    /// assert!(rlock.release().is_err());
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn release(&self) -> Result<()> {
        self.release_one()
    }

    fn release_one(&self) -> Result<()> {
        if !self.held_by_me() {
            return Err(Error::InvalidRelease("cannot release an RLock this thread does not hold"));
        }
        // Only the holding thread changes the count: no read-modify-write needed.
        let count = self.count_word().load(Relaxed);
        self.count_word().store(count.saturating_sub(1), Relaxed);
        if count <= 1 {
            self.owner_tid().store(0, Relaxed);
            raw::lock::release::<Os>(self.word());
        }
        Ok(())
    }

    /// How many levels the holder has acquired (0 when free).
    ///
    /// ```
    /// let rlock = multiproc::synchronize::RLock::new()?;
    /// let g = rlock.acquire()?;
    /// assert_eq!(rlock.count(), 1);
    /// # drop(g);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn count(&self) -> u32 {
        if raw::lock::owner(self.word()).is_some() {
            self.count_word().load(Relaxed)
        } else {
            0
        }
    }
}

impl RLockGuard<'_> {
    /// Whether the previous holder died holding the lock.
    ///
    /// ```
    /// let rlock = multiproc::synchronize::RLock::new()?;
    /// assert!(!rlock.acquire()?.owner_died());
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn owner_died(&self) -> bool {
        self.owner_died
    }

    /// Keeps this level held after the guard is gone; release it with
    /// [`RLock::release`] on the same thread (Python's pattern of acquiring and releasing
    /// apart).
    ///
    /// ```
    /// let rlock = multiproc::synchronize::RLock::new()?;
    /// rlock.acquire()?.leak();
    /// assert_eq!(rlock.count(), 1);
    /// rlock.release()?;
    /// assert_eq!(rlock.count(), 0);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn leak(self) {
        std::mem::forget(self);
    }
}

impl Drop for RLockGuard<'_> {
    fn drop(&mut self) {
        let _ = self.lock.release_one();
    }
}

// --------------------------------------------------------------------------------------
// Semaphore and BoundedSemaphore

const SEM_COUNT: usize = 4;
const SEM_SLEEPERS: usize = 8;
const SEM_MAX: usize = 12;
const SEM_LEN: usize = 16;

/// A counting semaphore shared between processes (Python's `multiprocessing.Semaphore`).
///
/// An acquire returns a [`SemaphoreGuard`] that gives its unit back when dropped. For
/// Python's pattern of taking a unit here and giving it back elsewhere (another thread or
/// process), [`leak`](SemaphoreGuard::leak) the guard and call [`release`](Self::release)
/// there.
///
/// ```
/// let sem = multiproc::synchronize::Semaphore::new(2)?;
/// let a = sem.acquire()?;
/// sem.acquire()?.leak();
/// assert!(sem.try_acquire().is_err());
/// drop(a);
/// assert_eq!(sem.get_value(), 1);
/// sem.release()?; // the leaked unit
/// assert_eq!(sem.get_value(), 2);
/// # Ok::<(), multiproc::Error>(())
/// ```
#[derive(Clone)]
pub struct Semaphore {
    segment: Arc<Segment>,
}

shared_handle!(Semaphore, Kind::Semaphore, SEM_LEN, "new(2)");

impl Semaphore {
    /// A semaphore with `value` units.
    ///
    /// ```
    /// assert_eq!(multiproc::synchronize::Semaphore::new(3)?.get_value(), 3);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn new(value: u32) -> Result<Semaphore> {
        Semaphore::with_max(value, u32::MAX)
    }

    fn with_max(value: u32, max: u32) -> Result<Semaphore> {
        let segment = create(Kind::Semaphore, SEM_LEN)?;
        segment.word(SEM_COUNT).store(value, SeqCst);
        segment.word(SEM_MAX).store(max, SeqCst);
        Ok(Semaphore { segment })
    }

    /// Takes a unit, waiting as long as it takes for one.
    ///
    /// ```
    /// let sem = multiproc::synchronize::Semaphore::new(1)?;
    /// let unit = sem.acquire()?;
    /// assert_eq!(sem.get_value(), 0);
    /// drop(unit);
    /// assert_eq!(sem.get_value(), 1);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn acquire(&self) -> Result<SemaphoreGuard<'_>> {
        self.acquire_until(None, Duration::MAX)
    }

    /// Takes a unit, waiting at most `timeout` for one; [`Error::Timeout`] otherwise.
    ///
    /// ```
    /// use std::time::Duration;
    /// let sem = multiproc::synchronize::Semaphore::new(0)?;
    /// assert!(sem.acquire_timeout(Duration::from_millis(10)).is_err());
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn acquire_timeout(&self, timeout: Duration) -> Result<SemaphoreGuard<'_>> {
        self.acquire_until(deadline(timeout), timeout)
    }

    fn acquire_until(
        &self,
        deadline: Option<Instant>,
        timeout: Duration,
    ) -> Result<SemaphoreGuard<'_>> {
        let s = &self.segment;
        if raw::semaphore::acquire::<Os>(s.word(SEM_COUNT), s.word(SEM_SLEEPERS), deadline) {
            Ok(SemaphoreGuard { sem: self })
        } else {
            Err(Error::Timeout(timeout))
        }
    }

    /// Takes a unit if one is available; [`Error::WouldBlock`] otherwise.
    ///
    /// ```
    /// let sem = multiproc::synchronize::Semaphore::new(1)?;
    /// let unit = sem.try_acquire()?;
    /// assert!(sem.try_acquire().is_err());
    /// # drop(unit);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn try_acquire(&self) -> Result<SemaphoreGuard<'_>> {
        if raw::semaphore::try_acquire(self.segment.word(SEM_COUNT)) {
            Ok(SemaphoreGuard { sem: self })
        } else {
            Err(would_block())
        }
    }

    /// Returns a unit (Python's `release()`): one whose guard was
    /// [leaked](SemaphoreGuard::leak), here or in another process, or a new one.
    ///
    /// ```
    /// let sem = multiproc::synchronize::Semaphore::new(0)?;
    /// sem.release()?;
    /// assert_eq!(sem.get_value(), 1);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn release(&self) -> Result<()> {
        self.release_n(1)
    }

    /// Returns `n` units at once (Python 3.9's `release(n)`).
    ///
    /// ```
    /// let sem = multiproc::synchronize::Semaphore::new(0)?;
    /// sem.release_n(3)?;
    /// assert_eq!(sem.get_value(), 3);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn release_n(&self, n: u32) -> Result<()> {
        let s = &self.segment;
        let max = s.word(SEM_MAX).load(Relaxed);
        if raw::semaphore::release::<Os>(s.word(SEM_COUNT), s.word(SEM_SLEEPERS), n, max) {
            Ok(())
        } else {
            Err(Error::InvalidRelease("semaphore released too many times"))
        }
    }

    /// The current number of units (Python's `get_value()`).
    ///
    /// ```
    /// assert_eq!(multiproc::synchronize::Semaphore::new(5)?.get_value(), 5);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn get_value(&self) -> u32 {
        self.segment.word(SEM_COUNT).load(SeqCst)
    }
}

/// One unit of a [`Semaphore`] or [`BoundedSemaphore`], given back when dropped.
#[must_use = "the unit is given back when the guard is dropped"]
pub struct SemaphoreGuard<'a> {
    sem: &'a Semaphore,
}

impl SemaphoreGuard<'_> {
    /// Keeps the unit taken after the guard is gone; give it back with
    /// [`Semaphore::release`] (or [`BoundedSemaphore::release`]), here or in another
    /// process.
    ///
    /// ```
    /// let sem = multiproc::synchronize::Semaphore::new(1)?;
    /// sem.acquire()?.leak();
    /// assert_eq!(sem.get_value(), 0);
    /// sem.release()?;
    /// assert_eq!(sem.get_value(), 1);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn leak(self) {
        std::mem::forget(self);
    }
}

impl Drop for SemaphoreGuard<'_> {
    fn drop(&mut self) {
        // Only a bounded semaphore released past its bound by someone else refuses.
        let _ = self.sem.release();
    }
}

impl fmt::Debug for SemaphoreGuard<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SemaphoreGuard").finish_non_exhaustive()
    }
}

/// A semaphore that refuses to be released above its initial value (Python's
/// `multiprocessing.BoundedSemaphore`).
///
/// ```
/// use multiproc::{synchronize::BoundedSemaphore, Error};
/// let sem = BoundedSemaphore::new(1)?;
/// drop(sem.acquire()?);
/// assert!(matches!(sem.release(), Err(Error::InvalidRelease(_))));
/// # Ok::<(), multiproc::Error>(())
/// ```
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct BoundedSemaphore {
    inner: Semaphore,
}

impl BoundedSemaphore {
    /// The descriptor of the semaphore's shared segment (see [`Semaphore::export_fd`]).
    ///
    /// ```
    /// use multiproc::synchronize::BoundedSemaphore;
    /// let a = BoundedSemaphore::new(1)?;
    /// let b = BoundedSemaphore::from_fd(a.export_fd().try_clone_to_owned()?)?;
    /// assert!(b.release().is_err()); // the bound travels with the segment
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn export_fd(&self) -> std::os::fd::BorrowedFd<'_> {
        self.inner.export_fd()
    }

    /// Opens the bounded semaphore whose descriptor [`BoundedSemaphore::export_fd`]
    /// exported (see [`Semaphore::from_fd`]).
    ///
    /// ```
    /// use multiproc::synchronize::BoundedSemaphore;
    /// let a = BoundedSemaphore::new(2)?;
    /// let b = BoundedSemaphore::from_fd(a.export_fd().try_clone_to_owned()?)?;
    /// assert_eq!(b.get_value(), 2);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn from_fd(fd: std::os::fd::OwnedFd) -> Result<BoundedSemaphore> {
        Ok(BoundedSemaphore { inner: Semaphore::from_fd(fd)? })
    }

    /// A bounded semaphore with `value` units, which is also its maximum.
    ///
    /// ```
    /// assert_eq!(multiproc::synchronize::BoundedSemaphore::new(2)?.get_value(), 2);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn new(value: u32) -> Result<BoundedSemaphore> {
        Ok(BoundedSemaphore { inner: Semaphore::with_max(value, value)? })
    }

    /// Takes a unit, waiting as long as it takes for one.
    ///
    /// ```
    /// let sem = multiproc::synchronize::BoundedSemaphore::new(1)?;
    /// let unit = sem.acquire()?;
    /// # drop(unit);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn acquire(&self) -> Result<SemaphoreGuard<'_>> {
        self.inner.acquire()
    }

    /// Takes a unit, waiting at most `timeout`; [`Error::Timeout`] otherwise.
    ///
    /// ```
    /// use std::time::Duration;
    /// let sem = multiproc::synchronize::BoundedSemaphore::new(1)?;
    /// let unit = sem.acquire_timeout(Duration::from_secs(1))?;
    /// # drop(unit);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn acquire_timeout(&self, timeout: Duration) -> Result<SemaphoreGuard<'_>> {
        self.inner.acquire_timeout(timeout)
    }

    /// Takes a unit if one is available; [`Error::WouldBlock`] otherwise.
    ///
    /// ```
    /// let sem = multiproc::synchronize::BoundedSemaphore::new(1)?;
    /// let unit = sem.try_acquire()?;
    /// assert!(sem.try_acquire().is_err());
    /// # drop(unit);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn try_acquire(&self) -> Result<SemaphoreGuard<'_>> {
        self.inner.try_acquire()
    }

    /// Returns a unit (one whose guard was [leaked](SemaphoreGuard::leak));
    /// [`Error::InvalidRelease`] past the initial value.
    ///
    /// ```
    /// let sem = multiproc::synchronize::BoundedSemaphore::new(1)?;
    /// assert!(sem.release().is_err());
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn release(&self) -> Result<()> {
        self.inner.release()
    }

    /// The current number of units.
    ///
    /// ```
    /// assert_eq!(multiproc::synchronize::BoundedSemaphore::new(4)?.get_value(), 4);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn get_value(&self) -> u32 {
        self.inner.get_value()
    }
}

// --------------------------------------------------------------------------------------
// Event

const EVENT_FLAG: usize = 4;
const EVENT_SLEEPERS: usize = 8;
const EVENT_LEN: usize = 12;

/// A flag that processes can wait for (Python's `multiprocessing.Event`).
///
/// ```
/// use std::time::Duration;
/// let event = multiproc::synchronize::Event::new()?;
/// assert!(event.wait_timeout(Duration::from_millis(5)).is_err());
/// event.set();
/// event.wait();
/// assert!(event.is_set());
/// event.clear();
/// assert!(!event.is_set());
/// # Ok::<(), multiproc::Error>(())
/// ```
#[derive(Clone)]
pub struct Event {
    segment: Arc<Segment>,
}

shared_handle!(Event, Kind::Event, EVENT_LEN, "new()");

impl Event {
    /// A new event, not set.
    ///
    /// ```
    /// assert!(!multiproc::synchronize::Event::new()?.is_set());
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn new() -> Result<Event> {
        Ok(Event { segment: create(Kind::Event, EVENT_LEN)? })
    }

    fn flag(&self) -> &AtomicU32 {
        self.segment.word(EVENT_FLAG)
    }

    fn sleepers(&self) -> &AtomicU32 {
        self.segment.word(EVENT_SLEEPERS)
    }

    /// Whether the flag is set.
    ///
    /// ```
    /// let e = multiproc::synchronize::Event::new()?;
    /// e.set();
    /// assert!(e.is_set());
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn is_set(&self) -> bool {
        raw::event::is_set(self.flag())
    }

    /// Sets the flag and wakes every waiter.
    ///
    /// ```
    /// let e = multiproc::synchronize::Event::new()?;
    /// e.set();
    /// e.wait();
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn set(&self) {
        raw::event::set::<Os>(self.flag(), self.sleepers());
    }

    /// Clears the flag.
    ///
    /// ```
    /// let e = multiproc::synchronize::Event::new()?;
    /// e.set();
    /// e.clear();
    /// assert!(!e.is_set());
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn clear(&self) {
        raw::event::clear(self.flag());
    }

    /// Waits until the flag is set, as long as it takes (Python's `wait()`).
    ///
    /// ```
    /// let e = multiproc::synchronize::Event::new()?;
    /// e.set();
    /// e.wait();
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn wait(&self) {
        // Without a deadline the wait returns only once the flag is set.
        let _set = raw::event::wait::<Os>(self.flag(), self.sleepers(), None);
    }

    /// Waits until the flag is set, at most `timeout` (Python's `wait(timeout)`);
    /// [`Error::Timeout`] if it is still clear. `Duration::ZERO` checks without waiting,
    /// as [`is_set`](Self::is_set) does.
    ///
    /// ```
    /// use multiproc::{synchronize::Event, Error};
    /// use std::time::Duration;
    /// let e = Event::new()?;
    /// assert!(matches!(e.wait_timeout(Duration::ZERO), Err(Error::Timeout(_))));
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn wait_timeout(&self, timeout: Duration) -> Result<()> {
        if raw::event::wait::<Os>(self.flag(), self.sleepers(), deadline(timeout)) {
            Ok(())
        } else {
            Err(Error::Timeout(timeout))
        }
    }
}

// --------------------------------------------------------------------------------------
// Condition

const COND_WAITERS: usize = 4;
const COND_SIGNALS: usize = 8;
const COND_NEXT: usize = 12;
const COND_ELIGIBLE: usize = 16;
const COND_LEN: usize = 20;

/// The lock under a [`Condition`].
#[derive(Clone, Debug, Serialize, Deserialize)]
enum CondLock {
    Lock(Lock),
    RLock(RLock),
}

/// A condition variable shared between processes (Python's `multiprocessing.Condition`),
/// over a [`Lock`] or an [`RLock`] (the default, as in Python).
///
/// Waiting and notifying happen through the guard, which proves the lock is held.
///
/// ```
/// use multiproc::synchronize::Condition;
/// use std::time::Duration;
///
/// let cond = Condition::new()?;
/// let mut guard = cond.acquire()?;
/// // Nobody notifies: the wait times out (and holds the lock again).
/// assert!(guard.wait_timeout(Duration::from_millis(10)).is_err());
/// guard.notify_all();
/// # Ok::<(), multiproc::Error>(())
/// ```
#[derive(Clone)]
pub struct Condition {
    lock: CondLock,
    segment: Arc<Segment>,
}

impl Serialize for Condition {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        serialize_segment(&self.segment, "Condition", &self.lock, s)
    }
}

impl<'de> Deserialize<'de> for Condition {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let (segment, lock) = deserialize_segment(d, Kind::Condition, COND_LEN)?;
        Ok(Condition { lock, segment })
    }
}

impl fmt::Debug for Condition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Condition").field("lock", &self.lock).finish_non_exhaustive()
    }
}

/// Holds a [`Condition`]'s lock; waits and notifies.
#[must_use = "the lock is released when the guard is dropped"]
pub struct ConditionGuard<'a> {
    cond: &'a Condition,
    /// RLock levels held by this guard (1 for a Lock).
    levels: u32,
    owner_died: bool,
}

impl Condition {
    /// A condition over a new [`RLock`].
    ///
    /// ```
    /// let cond = multiproc::synchronize::Condition::new()?;
    /// drop(cond.acquire()?);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn new() -> Result<Condition> {
        Condition::with_rlock(RLock::new()?)
    }

    /// A condition over an existing [`Lock`].
    ///
    /// ```
    /// use multiproc::synchronize::{Condition, Lock};
    /// let lock = Lock::new()?;
    /// let cond = Condition::with_lock(lock.clone())?;
    /// let g = cond.acquire()?;
    /// assert!(lock.is_locked());
    /// # drop(g);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn with_lock(lock: Lock) -> Result<Condition> {
        Ok(Condition { lock: CondLock::Lock(lock), segment: create(Kind::Condition, COND_LEN)? })
    }

    /// A condition over an existing [`RLock`].
    ///
    /// ```
    /// use multiproc::synchronize::{Condition, RLock};
    /// let cond = Condition::with_rlock(RLock::new()?)?;
    /// # drop(cond);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn with_rlock(lock: RLock) -> Result<Condition> {
        Ok(Condition { lock: CondLock::RLock(lock), segment: create(Kind::Condition, COND_LEN)? })
    }

    /// The words of `raw::condition`.
    fn words(&self) -> raw::condition::Words<'_> {
        raw::condition::Words {
            waiters: self.segment.word(COND_WAITERS),
            signals: self.segment.word(COND_SIGNALS),
            next: self.segment.word(COND_NEXT),
            eligible: self.segment.word(COND_ELIGIBLE),
        }
    }

    /// Acquires the underlying lock, waiting as long as it takes.
    ///
    /// ```
    /// let cond = multiproc::synchronize::Condition::new()?;
    /// let guard = cond.acquire()?;
    /// assert!(!guard.owner_died());
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn acquire(&self) -> Result<ConditionGuard<'_>> {
        let owner_died = self.lock_levels(1, None, Duration::MAX)?;
        Ok(ConditionGuard { cond: self, levels: 1, owner_died })
    }

    /// Acquires the underlying lock, waiting at most `timeout`; [`Error::Timeout`] if it
    /// stays taken.
    ///
    /// ```
    /// use std::time::Duration;
    /// let cond = multiproc::synchronize::Condition::new()?;
    /// let guard = cond.acquire_timeout(Duration::from_secs(1))?;
    /// # drop(guard);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn acquire_timeout(&self, timeout: Duration) -> Result<ConditionGuard<'_>> {
        let owner_died = self.lock_levels(1, deadline(timeout), timeout)?;
        Ok(ConditionGuard { cond: self, levels: 1, owner_died })
    }

    /// Acquires the underlying lock if it is free (or, for an [`RLock`], held by this
    /// thread); [`Error::WouldBlock`] otherwise.
    ///
    /// ```
    /// use multiproc::synchronize::{Condition, Lock};
    /// let cond = Condition::with_lock(Lock::new()?)?;
    /// let guard = cond.try_acquire()?;
    /// assert!(cond.try_acquire().is_err());
    /// # drop(guard);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn try_acquire(&self) -> Result<ConditionGuard<'_>> {
        let owner_died = match &self.lock {
            CondLock::Lock(lock) => {
                let guard = lock.try_acquire()?;
                let died = guard.owner_died();
                guard.leak();
                died
            }
            CondLock::RLock(rlock) => {
                let guard = rlock.try_acquire()?;
                let died = guard.owner_died();
                // The condition's guard releases this level.
                std::mem::forget(guard);
                died
            }
        };
        Ok(ConditionGuard { cond: self, levels: 1, owner_died })
    }

    fn lock_levels(
        &self,
        levels: u32,
        deadline: Option<Instant>,
        timeout: Duration,
    ) -> Result<bool> {
        match &self.lock {
            CondLock::Lock(lock) => {
                let guard = lock.acquire_until(deadline, timeout)?;
                let died = guard.owner_died();
                guard.leak();
                Ok(died)
            }
            CondLock::RLock(rlock) => rlock.acquire_levels(levels, deadline, timeout),
        }
    }

    /// Releases the lock completely; returns the levels to restore.
    fn unlock_all(&self, levels: u32) -> u32 {
        match &self.lock {
            CondLock::Lock(lock) => {
                let _ = lock.release();
                levels
            }
            CondLock::RLock(rlock) => rlock.release_all().unwrap_or(levels),
        }
    }
}

/// Python's `Condition` API, for a caller that holds the lock without a guard: it took
/// the condition's [`Lock`] or [`RLock`] itself and [leaked](LockGuard::leak) the guard,
/// as Python's `acquire()` / `release()` do. Nothing proves the lock is held, so each
/// call checks it: [`Error::InvalidRelease`] when this thread (for an `RLock`) or process
/// (for a `Lock`) does not hold it.
impl Condition {
    /// The descriptor of the condition's own segment (its lock has its own, see
    /// [`Lock::export_fd`]), for a transport of descriptors that the crate does not drive
    /// itself.
    ///
    /// ```
    /// use multiproc::synchronize::{Condition, RLock};
    /// let lock = RLock::new()?;
    /// let a = Condition::with_rlock(lock.clone())?;
    /// let b = Condition::from_fd_with_rlock(a.export_fd().try_clone_to_owned()?, lock)?;
    /// # drop(b);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn export_fd(&self) -> std::os::fd::BorrowedFd<'_> {
        self.segment.fd()
    }

    /// Opens the condition whose descriptor [`Condition::export_fd`] exported, over
    /// `lock` (the same lock it was made with, received apart).
    ///
    /// ```
    /// use multiproc::synchronize::{Condition, Lock};
    /// let lock = Lock::new()?;
    /// let a = Condition::with_lock(lock.clone())?;
    /// let b = Condition::from_fd_with_lock(a.export_fd().try_clone_to_owned()?, lock)?;
    /// # drop(b);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn from_fd_with_lock(fd: std::os::fd::OwnedFd, lock: Lock) -> Result<Condition> {
        let segment = Segment::open_fd(fd, "Condition", Kind::Condition as u32, COND_LEN)?;
        Ok(Condition { lock: CondLock::Lock(lock), segment })
    }

    /// As [`Condition::from_fd_with_lock`], over an [`RLock`].
    ///
    /// ```
    /// use multiproc::synchronize::{Condition, RLock};
    /// let lock = RLock::new()?;
    /// let a = Condition::with_rlock(lock.clone())?;
    /// let b = Condition::from_fd_with_rlock(a.export_fd().try_clone_to_owned()?, lock)?;
    /// # drop(b);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn from_fd_with_rlock(fd: std::os::fd::OwnedFd, lock: RLock) -> Result<Condition> {
        let segment = Segment::open_fd(fd, "Condition", Kind::Condition as u32, COND_LEN)?;
        Ok(Condition { lock: CondLock::RLock(lock), segment })
    }

    /// The levels of the lock the caller holds, or [`Error::InvalidRelease`].
    fn held_levels(&self) -> Result<u32> {
        let held = match &self.lock {
            CondLock::Lock(lock) => raw::lock::owner(lock.word()) == Some(my_pid()),
            CondLock::RLock(rlock) => rlock.held_by_me(),
        };
        if !held {
            return Err(Error::InvalidRelease("the condition's lock is not held by the caller"));
        }
        Ok(match &self.lock {
            CondLock::Lock(_) => 1,
            CondLock::RLock(rlock) => rlock.count_word().load(Relaxed),
        })
    }

    /// [`ConditionGuard::wait_timeout`] for a caller holding the lock without a guard:
    /// releases the lock (every level of an `RLock`), waits at most `timeout` for a
    /// notification ([`Error::Timeout`] otherwise), and takes the lock back as it was.
    ///
    /// ```
    /// use std::time::Duration;
    /// use multiproc::synchronize::{Condition, Lock};
    ///
    /// let lock = Lock::new()?;
    /// let cond = Condition::with_lock(lock.clone())?;
    /// assert!(cond.wait_held_timeout(Duration::ZERO).is_err()); // not held
    /// lock.acquire()?.leak();
    /// assert!(matches!(
    ///     cond.wait_held_timeout(Duration::from_millis(5)),
    ///     Err(multiproc::Error::Timeout(_))
    /// ));
    /// assert!(lock.is_locked()); // held again
    /// lock.release()?;
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn wait_held_timeout(&self, timeout: Duration) -> Result<()> {
        let levels = self.held_levels()?;
        let mut guard = ConditionGuard { cond: self, levels, owner_died: false };
        let waited = guard.wait_timeout(timeout);
        // The caller holds the lock again, as it did before: no guard releases it.
        std::mem::forget(guard);
        waited
    }

    /// [`Condition::wait_held_timeout`] until `deadline` (`None`: as long as it takes), in
    /// stretches of at most `stretch`: between two, `go_on()` runs with nothing held and
    /// ends the wait early (as a timeout) by returning `false`. One wait from start to end,
    /// so no notification is missed or taken twice between stretches (a binding checks
    /// for signals there). `Ok(true)` when notified; the caller holds the lock again either
    /// way.
    ///
    /// ```
    /// use std::time::{Duration, Instant};
    /// use multiproc::synchronize::{Condition, Lock};
    ///
    /// let lock = Lock::new()?;
    /// let cond = Condition::with_lock(lock.clone())?;
    /// lock.acquire()?.leak();
    /// let mut stretches = 0;
    /// let notified = cond.wait_held_in_stretches(None, Duration::from_millis(1), || {
    ///     stretches += 1;
    ///     stretches < 3
    /// })?;
    /// assert!(!notified && stretches == 3);
    /// let soon = Some(Instant::now() + Duration::from_millis(5));
    /// assert!(!cond.wait_held_in_stretches(soon, Duration::from_millis(1), || true)?);
    /// assert!(lock.is_locked()); // held again
    /// lock.release()?;
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn wait_held_in_stretches(
        &self,
        deadline: Option<Instant>,
        stretch: Duration,
        go_on: impl FnMut() -> bool,
    ) -> Result<bool> {
        let levels = self.held_levels()?;
        let mut guard = ConditionGuard { cond: self, levels, owner_died: false };
        let waited = guard.wait_in_stretches(deadline, Some(stretch), go_on);
        // The caller holds the lock again, as it did before: no guard releases it.
        std::mem::forget(guard);
        waited
    }

    /// [`ConditionGuard::notify`] for a caller holding the lock without a guard.
    ///
    /// ```
    /// let cond = multiproc::synchronize::Condition::new()?;
    /// assert!(cond.notify_held(1).is_err()); // not held
    /// cond.acquire()?.leak();
    /// cond.notify_held(u32::MAX)?;
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn notify_held(&self, n: u32) -> Result<()> {
        self.held_levels()?;
        raw::condition::notify::<Os>(&self.words(), n);
        Ok(())
    }
}

impl ConditionGuard<'_> {
    /// Releases the lock, waits for a notification, re-acquires the lock (Python's
    /// `wait()`). Like every condition variable, it may return without a notification:
    /// re-check the condition, or use [`wait_for`](Self::wait_for).
    ///
    /// ```
    /// let cond = multiproc::synchronize::Condition::new()?;
    /// let mut g = cond.acquire()?;
    /// let c = cond.clone();
    /// // It gets the lock once `wait` has released it.
    /// std::thread::spawn(move || c.acquire().unwrap().notify_all());
    /// g.wait()?;
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn wait(&mut self) -> Result<()> {
        self.wait_until(None, Duration::MAX)
    }

    /// Releases the lock, waits for a notification at most `timeout`, re-acquires the
    /// lock (Python's `wait(timeout)`); [`Error::Timeout`] if the time ran out. The guard
    /// holds the lock again either way.
    ///
    /// ```
    /// use std::time::Duration;
    /// let cond = multiproc::synchronize::Condition::new()?;
    /// let mut g = cond.acquire()?;
    /// assert!(g.wait_timeout(Duration::from_millis(5)).is_err());
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn wait_timeout(&mut self, timeout: Duration) -> Result<()> {
        self.wait_until(deadline(timeout), timeout)
    }

    fn wait_until(&mut self, deadline: Option<Instant>, timeout: Duration) -> Result<()> {
        if self.wait_in_stretches(deadline, None, || true)? {
            Ok(())
        } else {
            Err(Error::Timeout(timeout))
        }
    }

    /// Registers, releases the lock, waits for a signal until `deadline` in stretches of
    /// at most `stretch` (`None`: one), calling `go_on()` between them (a `false` ends the
    /// wait as a timeout), and takes the lock back; whether it was notified.
    fn wait_in_stretches(
        &mut self,
        deadline: Option<Instant>,
        stretch: Option<Duration>,
        mut go_on: impl FnMut() -> bool,
    ) -> Result<bool> {
        let words = self.cond.words();
        let ticket = raw::condition::prepare(&words);
        let levels = self.cond.unlock_all(self.levels);
        let notified = loop {
            let end = match stretch.and_then(|s| Instant::now().checked_add(s)) {
                Some(end) => Some(deadline.map_or(end, |d| d.min(end))),
                None => deadline,
            };
            if raw::condition::wait::<Os>(&words, ticket, end) {
                break true;
            }
            if deadline.is_some_and(|d| Instant::now() >= d) || !go_on() {
                break false;
            }
        };
        // Re-acquire without a deadline, as Python does: the caller holds the lock again
        // when `wait` returns, whatever happened.
        self.owner_died |= self.cond.lock_levels(levels, None, Duration::MAX)?;
        self.levels = levels;
        Ok(notified || raw::condition::timed_out(&words, ticket))
    }

    /// Waits until `predicate()` is true, as long as it takes (Python's `wait_for`).
    ///
    /// ```
    /// let cond = multiproc::synchronize::Condition::new()?;
    /// let mut g = cond.acquire()?;
    /// g.wait_for(|| true)?;
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn wait_for(&mut self, predicate: impl FnMut() -> bool) -> Result<()> {
        self.wait_for_until(predicate, None, Duration::MAX)
    }

    /// Waits until `predicate()` is true, at most `timeout` in all (Python's
    /// `wait_for(predicate, timeout)`); [`Error::Timeout`] if it is still false.
    ///
    /// ```
    /// use std::time::Duration;
    /// let cond = multiproc::synchronize::Condition::new()?;
    /// let mut g = cond.acquire()?;
    /// assert!(g.wait_for_timeout(|| false, Duration::from_millis(5)).is_err());
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn wait_for_timeout(
        &mut self,
        predicate: impl FnMut() -> bool,
        timeout: Duration,
    ) -> Result<()> {
        self.wait_for_until(predicate, deadline(timeout), timeout)
    }

    fn wait_for_until(
        &mut self,
        mut predicate: impl FnMut() -> bool,
        deadline: Option<Instant>,
        timeout: Duration,
    ) -> Result<()> {
        loop {
            if predicate() {
                return Ok(());
            }
            match raw::remaining(deadline) {
                Some(left) if left.is_zero() => return Err(Error::Timeout(timeout)),
                // A wait that times out is one more look at the predicate.
                Some(_) => match self.wait_until(deadline, timeout) {
                    Ok(()) | Err(Error::Timeout(_)) => {}
                    Err(e) => return Err(e),
                },
                None => self.wait_until(None, timeout)?,
            }
        }
    }

    /// Wakes up to `n` waiters.
    ///
    /// ```
    /// let cond = multiproc::synchronize::Condition::new()?;
    /// cond.acquire()?.notify(1);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn notify(&self, n: u32) {
        raw::condition::notify::<Os>(&self.cond.words(), n);
    }

    /// Wakes every waiter.
    ///
    /// ```
    /// let cond = multiproc::synchronize::Condition::new()?;
    /// cond.acquire()?.notify_all();
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn notify_all(&self) {
        self.notify(u32::MAX);
    }

    /// Whether the lock was taken over from a holder that died.
    ///
    /// ```
    /// let cond = multiproc::synchronize::Condition::new()?;
    /// assert!(!cond.acquire()?.owner_died());
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn owner_died(&self) -> bool {
        self.owner_died
    }

    /// Keeps the lock held after the guard is gone (Python's pattern of acquiring and
    /// releasing apart); wait and notify with [`Condition::wait_held_timeout`] and
    /// [`Condition::notify_held`], release through the condition's lock.
    ///
    /// ```
    /// use multiproc::synchronize::{Condition, Lock};
    /// let lock = Lock::new()?;
    /// let cond = Condition::with_lock(lock.clone())?;
    /// cond.acquire()?.leak();
    /// cond.notify_held(1)?;
    /// lock.release()?;
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn leak(self) {
        std::mem::forget(self);
    }
}
impl Drop for ConditionGuard<'_> {
    fn drop(&mut self) {
        match &self.cond.lock {
            CondLock::Lock(lock) => {
                let _ = lock.release();
            }
            CondLock::RLock(rlock) => {
                for _ in 0..self.levels {
                    let _ = rlock.release_one();
                }
            }
        }
    }
}

// --------------------------------------------------------------------------------------
// Barrier

const BAR_LOCK: usize = 4;
const BAR_PARTIES: usize = 8;
const BAR_COUNT: usize = 12;
const BAR_GENERATION: usize = 16;
const BAR_BROKEN: usize = 20;
/// Generation whose waiters were released by `reset`/`abort` rather than by the last party.
const BAR_FAILED_GEN: usize = 24;
const BAR_SLEEPERS: usize = 28;
const BAR_PIDS: usize = 32;

/// A barrier for a fixed number of processes (Python's `multiprocessing.Barrier`).
///
/// Each of `parties` callers of [`wait`](Self::wait) blocks until all have arrived; then
/// the last one runs the optional action and all return their arrival index. A party that
/// times out (it gets [`Error::Timeout`]), or dies while waiting, breaks the barrier: the
/// others get [`Error::BrokenBarrier`] until [`reset`](Self::reset). The action and a
/// default timeout are set with [`Barrier::builder`].
///
/// ```
/// use multiproc::synchronize::Barrier;
/// let barrier = Barrier::new(1)?;
/// assert_eq!(barrier.wait()?, 0);
/// assert_eq!(barrier.parties(), 1);
/// # Ok::<(), multiproc::Error>(())
/// ```
#[derive(Clone)]
pub struct Barrier {
    segment: Arc<Segment>,
    action: Option<fn()>,
    timeout: Option<Duration>,
}

#[derive(Serialize, Deserialize)]
struct BarrierExtra {
    action: Option<(isize, isize)>,
    timeout: Option<Duration>,
}

impl Serialize for Barrier {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        let action = self.action.map(crate::sys::spawn::action_offsets).transpose();
        let extra = BarrierExtra {
            action: action.map_err(|e| serde::ser::Error::custom(format!("Barrier: {e}")))?,
            timeout: self.timeout,
        };
        serialize_segment(&self.segment, "Barrier", extra, s)
    }
}

impl<'de> Deserialize<'de> for Barrier {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let (segment, extra): (_, BarrierExtra) = deserialize_segment(d, Kind::Barrier, BAR_PIDS)?;
        let parties = segment.word(BAR_PARTIES).load(Relaxed) as usize;
        if segment.mapping().len() < BAR_PIDS + 4 * parties {
            return Err(crate::codec::de_error(
                "Barrier: shared segment too small for its parties",
            ));
        }
        let action = match extra.action {
            None => None,
            Some((layout, offset)) => {
                Some(crate::sys::spawn::resolve_action(layout, offset).ok_or_else(|| {
                    crate::codec::de_error("Barrier: the action comes from another executable")
                })?)
            }
        };
        Ok(Barrier { segment, action, timeout: extra.timeout })
    }
}

impl fmt::Debug for Barrier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Barrier")
            .field("parties", &self.parties())
            .field("n_waiting", &self.n_waiting())
            .finish()
    }
}

/// Sets up a [`Barrier`] with an action or a default timeout (Python's
/// `Barrier(parties, action, timeout)`); made by [`Barrier::builder`].
///
/// ```
/// use std::time::Duration;
/// fn announce() { println!("all here"); }
/// let barrier = multiproc::synchronize::Barrier::builder(2)
///     .action(announce)
///     .timeout(Duration::from_secs(30))
///     .build()?;
/// assert_eq!(barrier.parties(), 2);
/// # Ok::<(), multiproc::Error>(())
/// ```
#[derive(Debug, Clone)]
#[must_use = "a builder does nothing until `build` is called"]
pub struct BarrierBuilder {
    parties: u32,
    action: Option<fn()>,
    timeout: Option<Duration>,
}

impl BarrierBuilder {
    /// A function the last party to arrive runs before any is released (in its own
    /// process). If it panics, the barrier breaks. It must be a plain function of this
    /// executable, so that the barrier can travel to child processes.
    ///
    /// ```
    /// fn announce() { println!("all here"); }
    /// let b = multiproc::synchronize::Barrier::builder(1).action(announce).build()?;
    /// b.wait()?; // prints "all here"
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn action(mut self, action: fn()) -> BarrierBuilder {
        self.action = Some(action);
        self
    }

    /// How long [`Barrier::wait`] waits (by default, as long as it takes).
    ///
    /// ```
    /// use std::time::Duration;
    /// use multiproc::{synchronize::Barrier, Error};
    /// let b = Barrier::builder(2).timeout(Duration::from_millis(10)).build()?;
    /// assert!(matches!(b.wait(), Err(Error::Timeout(_))));
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn timeout(mut self, timeout: Duration) -> BarrierBuilder {
        self.timeout = Some(timeout);
        self
    }

    /// The barrier; [`Error::InvalidArgument`] unless it has 1 to 1000 parties.
    ///
    /// ```
    /// let b = multiproc::synchronize::Barrier::builder(3).build()?;
    /// assert_eq!(b.parties(), 3);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn build(self) -> Result<Barrier> {
        let parties = self.parties;
        if !(1..=1000).contains(&parties) {
            return Err(Error::InvalidArgument(format!(
                "a barrier needs 1 to 1000 parties, not {parties}"
            )));
        }
        let segment = create(Kind::Barrier, BAR_PIDS + 4 * parties as usize)?;
        segment.word(BAR_PARTIES).store(parties, SeqCst);
        Ok(Barrier { segment, action: self.action, timeout: self.timeout })
    }
}

impl Barrier {
    /// A barrier for `parties` participants (at least 1, at most 1000), with no action and
    /// no default timeout (see [`Barrier::builder`] for those).
    ///
    /// ```
    /// let barrier = multiproc::synchronize::Barrier::new(2)?;
    /// assert_eq!(barrier.parties(), 2);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn new(parties: u32) -> Result<Barrier> {
        Barrier::builder(parties).build()
    }

    /// A builder for a barrier of `parties` participants with an action or a default
    /// timeout.
    ///
    /// ```
    /// use std::time::Duration;
    /// let b = multiproc::synchronize::Barrier::builder(2)
    ///     .timeout(Duration::from_secs(5))
    ///     .build()?;
    /// # drop(b);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn builder(parties: u32) -> BarrierBuilder {
        BarrierBuilder { parties, action: None, timeout: None }
    }

    /// The number of parties.
    ///
    /// ```
    /// assert_eq!(multiproc::synchronize::Barrier::new(3)?.parties(), 3);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn parties(&self) -> u32 {
        raw::barrier::parties(self)
    }

    /// How many parties are waiting now.
    ///
    /// ```
    /// assert_eq!(multiproc::synchronize::Barrier::new(3)?.n_waiting(), 0);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn n_waiting(&self) -> u32 {
        raw::barrier::n_waiting(self)
    }

    /// Whether the barrier is broken.
    ///
    /// ```
    /// let b = multiproc::synchronize::Barrier::new(2)?;
    /// b.abort();
    /// assert!(b.broken());
    /// b.reset();
    /// assert!(!b.broken());
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn broken(&self) -> bool {
        raw::barrier::broken(self)
    }

    /// Waits until all parties have arrived, as long as it takes or the barrier's default
    /// timeout ([`BarrierBuilder::timeout`]); returns this party's arrival index,
    /// `0..parties`. [`Error::BrokenBarrier`] if the barrier is or becomes broken;
    /// [`Error::Timeout`] if the default timeout ran out, which breaks it (as in Python).
    ///
    /// ```
    /// let b = multiproc::synchronize::Barrier::new(1)?;
    /// assert_eq!(b.wait()?, 0);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn wait(&self) -> Result<u32> {
        match self.timeout {
            Some(timeout) => self.wait_timeout(timeout),
            None => self.wait_until(None, Duration::MAX),
        }
    }

    /// Waits until all parties have arrived, at most `timeout`; returns this party's
    /// arrival index. [`Error::Timeout`] if the time ran out, which breaks the barrier
    /// for the other parties (as in Python); [`Error::BrokenBarrier`] if it is or becomes
    /// broken otherwise.
    ///
    /// ```
    /// use std::time::Duration;
    /// use multiproc::{synchronize::Barrier, Error};
    /// let b = Barrier::new(2)?;
    /// assert!(matches!(b.wait_timeout(Duration::from_millis(10)), Err(Error::Timeout(_))));
    /// assert!(matches!(b.wait_timeout(Duration::from_millis(10)), Err(Error::BrokenBarrier)));
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn wait_timeout(&self, timeout: Duration) -> Result<u32> {
        self.wait_until(deadline(timeout), timeout)
    }

    fn wait_until(&self, deadline: Option<Instant>, timeout: Duration) -> Result<u32> {
        let action = || match self.action {
            Some(action) => std::panic::catch_unwind(action).is_ok(),
            None => true,
        };
        let was_broken = self.broken();
        raw::barrier::wait::<Os, _>(self, my_pid(), action, deadline).map_err(
            |raw::barrier::Broken| {
                // The party whose time ran out (and so broke it) is told so.
                if !was_broken && deadline.is_some_and(|d| Instant::now() >= d) {
                    Error::Timeout(timeout)
                } else {
                    Error::BrokenBarrier
                }
            },
        )
    }

    /// Breaks the barrier: current and future waiters get [`Error::BrokenBarrier`] until
    /// [`reset`](Self::reset) (Python's `abort()`).
    ///
    /// ```
    /// let b = multiproc::synchronize::Barrier::new(2)?;
    /// b.abort();
    /// assert!(b.wait().is_err());
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn abort(&self) {
        raw::barrier::abort::<Os, _>(self, my_pid());
    }

    /// Returns the barrier to its empty, unbroken state; parties waiting now get
    /// [`Error::BrokenBarrier`] (Python's `reset()`).
    ///
    /// ```
    /// let b = multiproc::synchronize::Barrier::new(1)?;
    /// b.abort();
    /// b.reset();
    /// assert_eq!(b.wait()?, 0);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn reset(&self) {
        raw::barrier::reset::<Os, _>(self, my_pid());
    }
}

impl raw::barrier::Layout for Barrier {
    fn word(&self, word: raw::barrier::Word) -> &AtomicU32 {
        use raw::barrier::Word;
        self.segment.word(match word {
            Word::Lock => BAR_LOCK,
            Word::Parties => BAR_PARTIES,
            Word::Count => BAR_COUNT,
            Word::Generation => BAR_GENERATION,
            Word::Broken => BAR_BROKEN,
            Word::FailedGen => BAR_FAILED_GEN,
            Word::Sleepers => BAR_SLEEPERS,
        })
    }

    fn pid(&self, index: usize) -> &AtomicU32 {
        self.segment.word(BAR_PIDS + 4 * index)
    }
}
