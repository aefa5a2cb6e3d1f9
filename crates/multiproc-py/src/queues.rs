//! `Queue` and `JoinableQueue` of bytes, on the crate's shared-memory ring (the Python
//! layer pickles items into these bytes and `SimpleQueue` is a `Queue` without a bound).
//! The rings are made with the crate's pickle codec and every record is one pickle, as it
//! is: a Rust process opens the same queue as a `Queue<T>` of its own values (`None`,
//! `bool`, `int`, `float`, `str`, `bytes`, `list`, `tuple`, `dict`) and the other way round.
//!
//! `close()` is local, as in the stdlib: it drops this object's handle on the ring, so
//! that later calls on it raise `ValueError`, and leaves the queue open for every other
//! handle and process. The stdlib waits for ever in a `get` that nobody will answer;
//! so does this binding (the crate's `Disconnected` only makes it look again), because a
//! thread of the waiting process may still put.

use std::os::fd::{AsRawFd, RawFd};
use std::sync::Mutex;
use std::time::Duration;

use multiproc::queues::{JoinableQueue as CoreJoinable, Pickled, Queue as CoreQueue};
use multiproc::{Codec, Error};
use pyo3::buffer::PyBuffer;
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::PyBytes;

use crate::{deadline, dup_fd, stdlib_error, to_pyerr, try_then_wait_sliced, wait_sliced, Slice};

/// The operations both native queues share, on the crate's two queue types.
trait BytesQueue: Clone + Send + Sync + 'static {
    /// The crate's `put_timeout`.
    fn put_timeout(&self, item: Pickled, t: Duration) -> Result<(), multiproc::PutError<Pickled>>;
    /// The crate's `get_timeout`.
    fn get_timeout(&self, t: Duration) -> multiproc::Result<Pickled>;
    /// The crate's `export_fd`, as a number.
    fn export_raw_fd(&self) -> RawFd;
}

impl BytesQueue for CoreQueue<Pickled> {
    fn put_timeout(&self, item: Pickled, t: Duration) -> Result<(), multiproc::PutError<Pickled>> {
        CoreQueue::put_timeout(self, item, t)
    }
    fn get_timeout(&self, t: Duration) -> multiproc::Result<Pickled> {
        CoreQueue::get_timeout(self, t)
    }
    fn export_raw_fd(&self) -> RawFd {
        self.export_fd().as_raw_fd()
    }
}

impl BytesQueue for CoreJoinable<Pickled> {
    fn put_timeout(&self, item: Pickled, t: Duration) -> Result<(), multiproc::PutError<Pickled>> {
        CoreJoinable::put_timeout(self, item, t)
    }
    fn get_timeout(&self, t: Duration) -> multiproc::Result<Pickled> {
        CoreJoinable::get_timeout(self, t)
    }
    fn export_raw_fd(&self) -> RawFd {
        self.export_fd().as_raw_fd()
    }
}

/// This object's handle, or `ValueError` once it was closed.
fn handle<Q: BytesQueue>(slot: &Mutex<Option<Q>>) -> PyResult<Q> {
    slot.lock()
        .unwrap_or_else(|p| p.into_inner())
        .clone()
        .ok_or_else(|| PyValueError::new_err("Queue is closed"))
}

/// The stdlib's exception for a queue's error.
fn queue_error(py: Python<'_>, error: Error) -> PyErr {
    match error {
        Error::Closed(_) => PyValueError::new_err("Queue is closed"),
        other => to_pyerr(py, other),
    }
}

/// Python's `put(obj, block, timeout)` on bytes; `queue.Full` when no room came in time.
fn put<Q: BytesQueue>(
    py: Python<'_>,
    q: &Q,
    data: &PyBuffer<u8>,
    block: bool,
    timeout: Option<f64>,
) -> PyResult<()> {
    let end = deadline(block, timeout)?;
    let mut item = Some(Pickled(data.to_vec(py)?));
    let done = try_then_wait_sliced(py, end, queue_error, |slice| {
        let Some(bytes) = item.take() else {
            return Ok(Slice::Done(()));
        };
        match q.put_timeout(bytes, slice) {
            Ok(()) => Ok(Slice::Done(())),
            Err(e) => {
                let (bytes, error) = e.into_parts();
                match error {
                    Error::Full | Error::Disconnected(_) => {
                        item = Some(bytes);
                        Ok(Slice::Again)
                    }
                    other => Err(other),
                }
            }
        }
    })?;
    match done {
        Some(()) => Ok(()),
        None => Err(stdlib_error(py, "queue", "Full", String::new())),
    }
}

/// Python's `get(block, timeout)` as bytes; `queue.Empty` when nothing came in time.
fn get<'py, Q: BytesQueue>(
    py: Python<'py>,
    q: &Q,
    block: bool,
    timeout: Option<f64>,
) -> PyResult<Bound<'py, PyBytes>> {
    let end = deadline(block, timeout)?;
    let got = try_then_wait_sliced(py, end, queue_error, |slice| match q.get_timeout(slice) {
        Ok(bytes) => Ok(Slice::Done(bytes)),
        Err(Error::Empty | Error::Disconnected(_)) => Ok(Slice::Again),
        Err(other) => Err(other),
    })?;
    match got {
        Some(Pickled(bytes)) => Ok(PyBytes::new(py, &bytes)),
        None => Err(stdlib_error(py, "queue", "Empty", String::new())),
    }
}

macro_rules! queue_methods {
    ($name:ident, $core:ty, { $($methods:tt)* }) => {
        #[pymethods]
        impl $name {
            $($methods)*

            /// A new queue holding at most `maxsize` items (0 or less: no bound); with
            /// `fd`, the queue whose segment descriptor that is (see `export_fd`; the
            /// caller keeps and closes `fd`). `ctx` is the stdlib's and is not needed.
            #[new]
            #[pyo3(signature = (maxsize = 0, *, ctx = None, fd = None))]
            fn new(
                py: Python<'_>,
                maxsize: i64,
                ctx: Option<Bound<'_, PyAny>>,
                fd: Option<RawFd>,
            ) -> PyResult<Self> {
                let _ = ctx;
                let q = match fd {
                    Some(fd) => <$core>::from_fd(dup_fd(fd)?),
                    None => {
                        let maxsize = usize::try_from(maxsize.max(0))
                            .map_err(|_| PyValueError::new_err("maxsize is too large"))?;
                        <$core>::with_codec(maxsize, Codec::Pickle)
                    }
                }
                .map_err(|e| queue_error(py, e))?;
                if q.codec() != Codec::Pickle {
                    return Err(PyValueError::new_err(
                        "the descriptor is a queue of Rust values in postcard, not of pickles: \
                         make it with Queue::with_codec(maxsize, Codec::Pickle) to share it with Python",
                    ));
                }
                Ok($name { inner: Mutex::new(Some(q)) })
            }

            /// The segment's descriptor, for `DupFd`; counts one hand-off.
            fn export_fd(&self) -> PyResult<RawFd> {
                Ok(handle(&self.inner)?.export_raw_fd())
            }

            /// Puts `data` (any contiguous bytes-like object), waiting for room as the stdlib's `put` does.
            #[pyo3(signature = (data, block = true, timeout = None))]
            fn put(
                &self,
                py: Python<'_>,
                data: PyBuffer<u8>,
                block: bool,
                timeout: Option<f64>,
            ) -> PyResult<()> {
                put(py, &handle(&self.inner)?, &data, block, timeout)
            }

            /// Takes the next item's bytes, waiting as the stdlib's `get` does.
            #[pyo3(signature = (block = true, timeout = None))]
            fn get<'py>(
                &self,
                py: Python<'py>,
                block: bool,
                timeout: Option<f64>,
            ) -> PyResult<Bound<'py, PyBytes>> {
                get(py, &handle(&self.inner)?, block, timeout)
            }

            /// Items in the queue now.
            fn qsize(&self) -> PyResult<usize> {
                Ok(handle(&self.inner)?.qsize())
            }

            /// Whether the queue is empty now.
            fn empty(&self) -> PyResult<bool> {
                Ok(handle(&self.inner)?.empty())
            }

            /// Whether the queue holds `maxsize` items now (never, without a bound).
            fn full(&self) -> PyResult<bool> {
                let q = handle(&self.inner)?;
                Ok(q.maxsize() > 0 && q.qsize() >= q.maxsize())
            }

            /// The item bound (0: none).
            #[getter]
            fn maxsize(&self) -> PyResult<usize> {
                Ok(handle(&self.inner)?.maxsize())
            }

            /// Drops this object's handle (the queue stays open for every other one).
            fn close(&self) {
                self.inner.lock().unwrap_or_else(|p| p.into_inner()).take();
            }

            /// Whether `close` was called on this object.
            #[getter]
            fn closed(&self) -> bool {
                self.inner.lock().unwrap_or_else(|p| p.into_inner()).is_none()
            }
        }
    };
}

/// A queue of bytes (`multiproc.Queue` and `SimpleQueue` pickle on top of it).
#[pyclass(module = "multiproc._native", frozen, subclass)]
struct Queue {
    inner: Mutex<Option<CoreQueue<Pickled>>>,
}

queue_methods!(Queue, CoreQueue<Pickled>, {});

/// A queue of bytes that counts unfinished tasks (`multiproc.JoinableQueue`).
#[pyclass(module = "multiproc._native", frozen, subclass)]
struct JoinableQueue {
    inner: Mutex<Option<CoreJoinable<Pickled>>>,
}

queue_methods!(JoinableQueue, CoreJoinable<Pickled>, {
    /// Marks one task done; `ValueError` if none is unfinished.
    fn task_done(&self, py: Python<'_>) -> PyResult<()> {
        handle(&self.inner)?.task_done().map_err(|e| queue_error(py, e))
    }

    /// Waits until every item put has been marked done.
    fn join(&self, py: Python<'_>) -> PyResult<()> {
        let q = handle(&self.inner)?;
        wait_sliced(py, None, queue_error, |slice| match q.join_timeout(slice) {
            Ok(()) => Ok(Slice::Done(())),
            Err(Error::Timeout(_)) => Ok(Slice::Again),
            Err(other) => Err(other),
        })?;
        Ok(())
    }
});

/// Adds the classes to the module.
pub(crate) fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<Queue>()?;
    m.add_class::<JoinableQueue>()?;
    Ok(())
}
