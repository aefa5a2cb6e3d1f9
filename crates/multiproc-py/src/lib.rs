//! `multiproc._native`: the Python bindings of the `multiproc` crate.
//!
//! Bindings only: every object here wraps one of the crate's, converts Python's arguments
//! (`block`, `timeout` in seconds) into the crate's blocking shape, maps the crate's
//! errors to the exceptions the stdlib raises, and releases the GIL while it waits. The
//! pure-Python package (`python/multiproc/`) pickles values and reduces objects for
//! child processes; this module moves bytes and descriptors.
//!
//! # Waiting
//! A wait never holds the GIL, and never lasts longer than [`SLICE`] at a time: between
//! slices the GIL is taken back and pending signals run their handlers, so Ctrl-C raises
//! `KeyboardInterrupt` in a blocked `get` or `acquire` within one slice.

use std::os::fd::{BorrowedFd, OwnedFd, RawFd};
use std::time::{Duration, Instant};

use pyo3::exceptions::{PyEOFError, PyOSError, PyRuntimeError, PyValueError};
use pyo3::prelude::*;

mod connection;
mod queues;
mod sharedctypes;
mod synchronize;

/// The longest stretch a wait spends without checking for signals.
const SLICE: Duration = Duration::from_millis(50);

/// The end of a wait given Python's `block` and `timeout` (seconds): `None` waits for
/// ever; a negative or non-blocking timeout is "now", as in the stdlib.
fn deadline(block: bool, timeout: Option<f64>) -> PyResult<Option<Instant>> {
    if !block {
        return Ok(Some(Instant::now()));
    }
    match timeout {
        None => Ok(None),
        Some(t) if t.is_nan() => Err(PyValueError::new_err("timeout must not be NaN")),
        Some(t) if t <= 0.0 => Ok(Some(Instant::now())),
        // Beyond what an Instant can hold: as good as for ever.
        Some(t) => {
            Ok(Duration::try_from_secs_f64(t).ok().and_then(|d| Instant::now().checked_add(d)))
        }
    }
}

/// What one slice of a wait came to.
enum Slice<R> {
    /// The operation completed.
    Done(R),
    /// The slice ran out; try again if time is left.
    Again,
}

/// [`wait_sliced`] for an operation whose attempt with a slice of zero never waits on
/// another party (a queue's put or get, a lock's acquire): that first attempt keeps the
/// GIL, so an operation that need not wait (an item is there, the lock is free) costs no
/// hand-over of the GIL.
fn try_then_wait_sliced<R: Send>(
    py: Python<'_>,
    deadline: Option<Instant>,
    convert: fn(Python<'_>, multiproc::Error) -> PyErr,
    mut attempt: impl FnMut(Duration) -> multiproc::Result<Slice<R>> + Send,
) -> PyResult<Option<R>> {
    match attempt(Duration::ZERO) {
        Ok(Slice::Done(r)) => Ok(Some(r)),
        Ok(Slice::Again) if deadline.is_some_and(|end| end <= Instant::now()) => Ok(None),
        Ok(Slice::Again) => wait_sliced(py, deadline, convert, attempt),
        Err(e) => Err(convert(py, e)),
    }
}

/// Runs `attempt(slice)` without the GIL, slice after slice, until it completes or
/// `deadline` passes (`Ok(None)`); checks for signals between slices. The first attempt
/// is made even when the deadline has passed already, with a slice of zero. The crate's
/// errors become exceptions through `convert`.
fn wait_sliced<R: Send>(
    py: Python<'_>,
    deadline: Option<Instant>,
    convert: fn(Python<'_>, multiproc::Error) -> PyErr,
    mut attempt: impl FnMut(Duration) -> multiproc::Result<Slice<R>> + Send,
) -> PyResult<Option<R>> {
    loop {
        let slice = match deadline {
            None => SLICE,
            Some(end) => end.saturating_duration_since(Instant::now()).min(SLICE),
        };
        let last = deadline.is_some_and(|end| end <= Instant::now() + slice);
        match py.detach(|| attempt(slice)) {
            Ok(Slice::Done(r)) => return Ok(Some(r)),
            Ok(Slice::Again) if last => return Ok(None),
            Ok(Slice::Again) => py.check_signals()?,
            Err(e) => return Err(convert(py, e)),
        }
    }
}

/// An exception class of the stdlib, by module and name.
fn stdlib_error(py: Python<'_>, module: &str, name: &str, message: String) -> PyErr {
    match py.import(module).and_then(|m| m.getattr(name)) {
        Ok(class) => match class.cast_into::<pyo3::types::PyType>() {
            Ok(class) => PyErr::from_type(class, message),
            Err(e) => e.into(),
        },
        Err(e) => e,
    }
}

/// The exception the stdlib raises for the crate's `error`.
fn to_pyerr(py: Python<'_>, error: multiproc::Error) -> PyErr {
    use multiproc::Error;
    match error {
        Error::Empty => stdlib_error(py, "queue", "Empty", String::new()),
        Error::Full => stdlib_error(py, "queue", "Full", String::new()),
        Error::Eof => PyEOFError::new_err("the other end of the connection was closed"),
        Error::BufferTooShort(message) => {
            match py.import("multiprocessing").and_then(|m| m.getattr("BufferTooShort")) {
                Ok(class) => match class.call1((pyo3::types::PyBytes::new(py, &message),)) {
                    Ok(instance) => PyErr::from_value(instance),
                    Err(e) => e,
                },
                Err(e) => e,
            }
        }
        Error::BrokenBarrier => stdlib_error(py, "threading", "BrokenBarrierError", String::new()),
        Error::MessageTooLong { .. } => PyOSError::new_err("bad message length"),
        Error::Closed(what) => PyOSError::new_err(format!("{what} is closed")),
        Error::InvalidRelease(why) => PyValueError::new_err(why),
        Error::InvalidArgument(why) => PyValueError::new_err(why),
        Error::Io(e) => e.into(),
        other => PyRuntimeError::new_err(other.to_string()),
    }
}

/// A duplicate of the descriptor `fd`, which the caller keeps open while this runs (the
/// package's Python layer passes the number `multiprocessing.reduction.DupFd` gave it,
/// and closes its own copy afterwards).
fn dup_fd(fd: RawFd) -> PyResult<OwnedFd> {
    if fd < 0 {
        return Err(PyValueError::new_err(format!("not a file descriptor: {fd}")));
    }
    // SAFETY: the descriptor is borrowed only for the `dup` below, while the caller holds
    // it open (its Python owner closes it after this returns). A number that is not open
    // makes `dup` fail with EBADF; nothing is read or written through it.
    let borrowed = unsafe { BorrowedFd::borrow_raw(fd) };
    Ok(borrowed.try_clone_to_owned()?)
}

/// The extension module.
#[pymodule]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    queues::register(m)?;
    connection::register(m)?;
    synchronize::register(m)?;
    sharedctypes::register(m)?;
    Ok(())
}
