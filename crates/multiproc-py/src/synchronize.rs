//! `Lock`, `RLock`, `Semaphore`, `BoundedSemaphore` and `Event` on the crate's
//! process-shared primitives, with the stdlib's methods: `acquire(block, timeout)` returns
//! whether it got the lock, `release()` stands apart from it, `with` works.
//!
//! Each class takes `fd=` to open the primitive whose `export_fd()` that is (the Python
//! layer rebuilds objects sent to a child this way) and ignores the stdlib's `ctx=`.

use std::os::fd::{AsRawFd, RawFd};
use std::time::Duration;

use multiproc::synchronize as core;
use multiproc::Error;
use pyo3::exceptions::{PyAssertionError, PyValueError};
use pyo3::prelude::*;

use crate::{deadline, dup_fd, to_pyerr, try_then_wait_sliced, wait_sliced, Slice};

/// Python's `acquire(block, timeout)` over one slice-sized acquire: `true` once acquired
/// (the guard is leaked: `release()` gives the primitive back).
fn acquire_with(
    py: Python<'_>,
    block: bool,
    timeout: Option<f64>,
    acquire_for: impl Fn(Duration) -> multiproc::Result<()> + Send + Sync,
) -> PyResult<bool> {
    let end = deadline(block, timeout)?;
    let got = try_then_wait_sliced(py, end, to_pyerr, |slice| match acquire_for(slice) {
        Ok(()) => Ok(Slice::Done(())),
        Err(Error::Timeout(_)) => Ok(Slice::Again),
        Err(e) => Err(e),
    })?;
    Ok(got.is_some())
}

/// `value` as a semaphore count (the stdlib refuses negative ones with `ValueError`).
fn sem_value(value: i64) -> PyResult<u32> {
    u32::try_from(value).map_err(|_| {
        PyValueError::new_err("semaphore initial value must be >= 0 and fit in 32 bits")
    })
}

/// `export_fd` and the context-manager protocol of a primitive, inside its `#[pymethods]`.
macro_rules! primitive {
    ($name:ident, $core:ty, { $($methods:tt)* }) => {
        impl $name {
            /// The class around the crate's primitive `made`, or the error as an exception.
            fn wrap(py: Python<'_>, made: multiproc::Result<$core>) -> PyResult<$name> {
                Ok($name { inner: made.map_err(|e| to_pyerr(py, e))? })
            }
        }

        #[pymethods]
        impl $name {
            $($methods)*

            /// The segment's descriptor, for `DupFd`.
            fn export_fd(&self) -> RawFd {
                self.inner.export_fd().as_raw_fd()
            }

            /// `with` acquires, waiting as long as it takes.
            fn __enter__(&self, py: Python<'_>) -> PyResult<bool> {
                self.acquire(py, true, None)
            }

            /// Leaving `with` releases.
            #[pyo3(signature = (*_args))]
            fn __exit__(
                &self,
                py: Python<'_>,
                _args: &Bound<'_, pyo3::types::PyTuple>,
            ) -> PyResult<()> {
                self.release(py)
            }
        }
    };
}

/// A non-recursive lock (`multiproc.Lock` subclasses it).
#[pyclass(module = "multiproc._native", frozen, subclass)]
struct Lock {
    inner: core::Lock,
}

primitive!(Lock, core::Lock, {
    /// A new lock, or (with `fd`) the lock whose `export_fd()` that is.
    #[new]
    #[pyo3(signature = (*, ctx = None, fd = None))]
    fn new(py: Python<'_>, ctx: Option<Bound<'_, PyAny>>, fd: Option<RawFd>) -> PyResult<Self> {
        let _ = ctx;
        match fd {
            Some(fd) => Lock::wrap(py, core::Lock::from_fd(dup_fd(fd)?)),
            None => Lock::wrap(py, core::Lock::new()),
        }
    }

    /// Acquires the lock; `False` if `block` is false or `timeout` passed first.
    #[pyo3(signature = (block = true, timeout = None))]
    fn acquire(&self, py: Python<'_>, block: bool, timeout: Option<f64>) -> PyResult<bool> {
        let lock = &self.inner;
        acquire_with(py, block, timeout, |d| lock.acquire_timeout(d).map(|g| g.leak()))
    }

    /// Releases the lock (any process or thread may); `ValueError` if it is not locked.
    fn release(&self, py: Python<'_>) -> PyResult<()> {
        self.inner.release().map_err(|e| match e {
            Error::InvalidRelease(_) => {
                PyValueError::new_err("semaphore or lock released too many times")
            }
            other => to_pyerr(py, other),
        })
    }
});

/// A recursive lock (`multiproc.RLock` subclasses it).
#[pyclass(module = "multiproc._native", frozen, subclass)]
struct RLock {
    inner: core::RLock,
}

primitive!(RLock, core::RLock, {
    /// A new recursive lock, or (with `fd`) the one whose `export_fd()` that is.
    #[new]
    #[pyo3(signature = (*, ctx = None, fd = None))]
    fn new(py: Python<'_>, ctx: Option<Bound<'_, PyAny>>, fd: Option<RawFd>) -> PyResult<Self> {
        let _ = ctx;
        match fd {
            Some(fd) => RLock::wrap(py, core::RLock::from_fd(dup_fd(fd)?)),
            None => RLock::wrap(py, core::RLock::new()),
        }
    }

    /// Acquires one level (at once if this thread holds the lock).
    #[pyo3(signature = (block = true, timeout = None))]
    fn acquire(&self, py: Python<'_>, block: bool, timeout: Option<f64>) -> PyResult<bool> {
        let lock = &self.inner;
        acquire_with(py, block, timeout, |d| lock.acquire_timeout(d).map(|g| g.leak()))
    }

    /// Releases one level; `AssertionError` if this thread does not hold the lock.
    fn release(&self, py: Python<'_>) -> PyResult<()> {
        self.inner.release().map_err(|e| match e {
            Error::InvalidRelease(_) => {
                PyAssertionError::new_err("attempt to release recursive lock not owned by thread")
            }
            other => to_pyerr(py, other),
        })
    }
});

/// A counting semaphore (`multiproc.Semaphore` subclasses it).
#[pyclass(module = "multiproc._native", frozen, subclass)]
struct Semaphore {
    inner: core::Semaphore,
}

primitive!(Semaphore, core::Semaphore, {
    /// A semaphore with `value` units, or (with `fd`) the one whose `export_fd()` that is.
    #[new]
    #[pyo3(signature = (value = 1, *, ctx = None, fd = None))]
    fn new(
        py: Python<'_>,
        value: i64,
        ctx: Option<Bound<'_, PyAny>>,
        fd: Option<RawFd>,
    ) -> PyResult<Self> {
        let _ = ctx;
        match fd {
            Some(fd) => Semaphore::wrap(py, core::Semaphore::from_fd(dup_fd(fd)?)),
            None => Semaphore::wrap(py, core::Semaphore::new(sem_value(value)?)),
        }
    }

    /// Takes a unit; `False` if `block` is false or `timeout` passed first.
    #[pyo3(signature = (block = true, timeout = None))]
    fn acquire(&self, py: Python<'_>, block: bool, timeout: Option<f64>) -> PyResult<bool> {
        let sem = &self.inner;
        acquire_with(py, block, timeout, |d| sem.acquire_timeout(d).map(|g| g.leak()))
    }

    /// Gives a unit back.
    fn release(&self, py: Python<'_>) -> PyResult<()> {
        self.inner.release().map_err(|e| to_pyerr(py, e))
    }

    /// The units available now.
    fn get_value(&self) -> u32 {
        self.inner.get_value()
    }
});

/// A semaphore that refuses to go above its initial value (`multiproc.BoundedSemaphore`).
#[pyclass(module = "multiproc._native", frozen, subclass)]
struct BoundedSemaphore {
    inner: core::BoundedSemaphore,
}

primitive!(BoundedSemaphore, core::BoundedSemaphore, {
    /// A bounded semaphore with `value` units, or (with `fd`) the one whose `export_fd()`
    /// that is.
    #[new]
    #[pyo3(signature = (value = 1, *, ctx = None, fd = None))]
    fn new(
        py: Python<'_>,
        value: i64,
        ctx: Option<Bound<'_, PyAny>>,
        fd: Option<RawFd>,
    ) -> PyResult<Self> {
        let _ = ctx;
        match fd {
            Some(fd) => BoundedSemaphore::wrap(py, core::BoundedSemaphore::from_fd(dup_fd(fd)?)),
            None => BoundedSemaphore::wrap(py, core::BoundedSemaphore::new(sem_value(value)?)),
        }
    }

    /// Takes a unit; `False` if `block` is false or `timeout` passed first.
    #[pyo3(signature = (block = true, timeout = None))]
    fn acquire(&self, py: Python<'_>, block: bool, timeout: Option<f64>) -> PyResult<bool> {
        let sem = &self.inner;
        acquire_with(py, block, timeout, |d| sem.acquire_timeout(d).map(|g| g.leak()))
    }

    /// Gives a unit back; `ValueError` above the initial value.
    fn release(&self, py: Python<'_>) -> PyResult<()> {
        self.inner.release().map_err(|e| match e {
            Error::InvalidRelease(_) => {
                PyValueError::new_err("semaphore or lock released too many times")
            }
            other => to_pyerr(py, other),
        })
    }

    /// The units available now.
    fn get_value(&self) -> u32 {
        self.inner.get_value()
    }
});

/// A flag that processes wait for (`multiproc.Event` subclasses it).
#[pyclass(module = "multiproc._native", frozen, subclass)]
struct Event {
    inner: core::Event,
}

#[pymethods]
impl Event {
    /// A new event, not set, or (with `fd`) the one whose `export_fd()` that is.
    #[new]
    #[pyo3(signature = (*, ctx = None, fd = None))]
    fn new(py: Python<'_>, ctx: Option<Bound<'_, PyAny>>, fd: Option<RawFd>) -> PyResult<Self> {
        let _ = ctx;
        let made = match fd {
            Some(fd) => core::Event::from_fd(dup_fd(fd)?),
            None => core::Event::new(),
        };
        Ok(Event { inner: made.map_err(|e| to_pyerr(py, e))? })
    }

    /// The segment's descriptor, for `DupFd`.
    fn export_fd(&self) -> RawFd {
        self.inner.export_fd().as_raw_fd()
    }

    /// Whether the flag is set.
    fn is_set(&self) -> bool {
        self.inner.is_set()
    }

    /// Sets the flag and wakes every waiter.
    fn set(&self) {
        self.inner.set()
    }

    /// Clears the flag.
    fn clear(&self) {
        self.inner.clear()
    }

    /// Waits until the flag is set, at most `timeout` seconds (`None`: as long as it
    /// takes); returns the flag.
    #[pyo3(signature = (timeout = None))]
    fn wait(&self, py: Python<'_>, timeout: Option<f64>) -> PyResult<bool> {
        let event = &self.inner;
        let end = deadline(true, timeout)?;
        wait_sliced(py, end, to_pyerr, |slice| match event.wait_timeout(slice) {
            Ok(()) => Ok(Slice::Done(())),
            Err(Error::Timeout(_)) => Ok(Slice::Again),
            Err(e) => Err(e),
        })?;
        Ok(event.is_set())
    }
}

/// A condition variable over a `Lock` or `RLock` of this module (`multiproc.Condition`
/// subclasses it, and acquires and releases through that lock).
#[pyclass(module = "multiproc._native", frozen, subclass)]
struct Condition {
    inner: core::Condition,
}

/// The stdlib's `AssertionError` for a wait or notify without the lock.
fn not_held(py: Python<'_>, error: Error, what: &'static str) -> PyErr {
    match error {
        Error::InvalidRelease(_) => PyAssertionError::new_err(what),
        other => to_pyerr(py, other),
    }
}

#[pymethods]
impl Condition {
    /// A condition over `lock` (a `Lock` or `RLock` of this module), or (with `fd`) the
    /// one whose `export_fd()` that is, over the same lock.
    #[new]
    #[pyo3(signature = (lock, *, ctx = None, fd = None))]
    fn new(
        py: Python<'_>,
        lock: &Bound<'_, PyAny>,
        ctx: Option<Bound<'_, PyAny>>,
        fd: Option<RawFd>,
    ) -> PyResult<Self> {
        let _ = ctx;
        let made = if let Ok(lock) = lock.cast::<Lock>() {
            let lock = lock.get().inner.clone();
            match fd {
                Some(fd) => core::Condition::from_fd_with_lock(dup_fd(fd)?, lock),
                None => core::Condition::with_lock(lock),
            }
        } else if let Ok(rlock) = lock.cast::<RLock>() {
            let rlock = rlock.get().inner.clone();
            match fd {
                Some(fd) => core::Condition::from_fd_with_rlock(dup_fd(fd)?, rlock),
                None => core::Condition::with_rlock(rlock),
            }
        } else {
            return Err(pyo3::exceptions::PyTypeError::new_err(
                "a Condition's lock must be a multiproc Lock or RLock",
            ));
        };
        Ok(Condition { inner: made.map_err(|e| to_pyerr(py, e))? })
    }

    /// The condition's own segment descriptor, for `DupFd` (its lock travels apart).
    fn export_fd(&self) -> RawFd {
        self.inner.export_fd().as_raw_fd()
    }

    /// Releases the lock, waits for a notification at most `timeout` seconds (`None`: as
    /// long as it takes), and takes the lock back; whether it was notified. One wait in
    /// the core from start to end, checking for signals every `SLICE` (a
    /// `KeyboardInterrupt` leaves with the lock held again, as the stdlib's does).
    #[pyo3(signature = (timeout = None))]
    fn wait(&self, py: Python<'_>, timeout: Option<f64>) -> PyResult<bool> {
        let cond = &self.inner;
        let end = deadline(true, timeout)?;
        let mut interrupted: Option<PyErr> = None;
        let waited = py.detach(|| {
            cond.wait_held_in_stretches(end, crate::SLICE, || {
                Python::attach(|py| match py.check_signals() {
                    Ok(()) => true,
                    Err(e) => {
                        interrupted = Some(e);
                        false
                    }
                })
            })
        });
        match waited {
            Ok(_) if interrupted.is_some() => Err(interrupted.take().expect("checked")),
            Ok(notified) => Ok(notified),
            Err(Error::InvalidRelease(_)) => {
                Err(PyAssertionError::new_err("must acquire() condition before using wait()"))
            }
            Err(e) => Err(to_pyerr(py, e)),
        }
    }

    /// Wakes at most `n` waiters.
    #[pyo3(signature = (n = 1))]
    fn notify(&self, py: Python<'_>, n: i64) -> PyResult<()> {
        let n = u32::try_from(n.max(0)).unwrap_or(u32::MAX);
        self.inner.notify_held(n).map_err(|e| not_held(py, e, "lock is not owned"))
    }

    /// Wakes every waiter.
    fn notify_all(&self, py: Python<'_>) -> PyResult<()> {
        self.inner.notify_held(u32::MAX).map_err(|e| not_held(py, e, "lock is not owned"))
    }
}

/// Adds the classes to the module.
pub(crate) fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<Lock>()?;
    m.add_class::<RLock>()?;
    m.add_class::<Semaphore>()?;
    m.add_class::<BoundedSemaphore>()?;
    m.add_class::<Event>()?;
    m.add_class::<Condition>()?;
    Ok(())
}
