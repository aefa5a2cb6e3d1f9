//! `Connection`: one end of a pipe or socket, framed as CPython frames it, on the crate's
//! `Connection`. The Python layer pickles objects into `send_bytes` and out of
//! `recv_bytes`, and fills buffers for `recv_bytes_into`.

use std::os::fd::RawFd;
use std::sync::{Arc, Mutex};

use multiproc::{Connection as CoreConnection, Error};
use pyo3::buffer::PyBuffer;
use pyo3::exceptions::{PyOSError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::PyBytes;

use crate::{deadline, dup_fd, to_pyerr, wait_sliced, Slice};

/// A connection end (`multiproc.connection.Connection` subclasses it).
#[pyclass(module = "multiproc._native", frozen, subclass)]
pub(crate) struct Connection {
    /// `None` once closed; calls in flight keep the descriptor open until they return.
    inner: Mutex<Option<Arc<CoreConnection>>>,
    readable: bool,
    writable: bool,
}

impl Connection {
    /// The open connection, or the stdlib's `OSError` once closed.
    fn open(&self) -> PyResult<Arc<CoreConnection>> {
        self.inner
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
            .ok_or_else(|| PyOSError::new_err("handle is closed"))
    }

    /// The open connection if it can receive, else the stdlib's `OSError`.
    fn readable_end(&self) -> PyResult<Arc<CoreConnection>> {
        let c = self.open()?;
        if !self.readable {
            return Err(PyOSError::new_err("connection is write-only"));
        }
        Ok(c)
    }

    /// The open connection if it can send, else the stdlib's `OSError`.
    fn writable_end(&self) -> PyResult<Arc<CoreConnection>> {
        let c = self.open()?;
        if !self.writable {
            return Err(PyOSError::new_err("connection is read-only"));
        }
        Ok(c)
    }
}

#[pymethods]
impl Connection {
    /// A connection on a duplicate of `fd` (the caller keeps and closes `fd`).
    #[new]
    #[pyo3(signature = (fd, readable = true, writable = true))]
    fn new(fd: RawFd, readable: bool, writable: bool) -> PyResult<Self> {
        if !readable && !writable {
            return Err(PyValueError::new_err(
                "at least one of `readable` and `writable` must be True",
            ));
        }
        let c = CoreConnection::with_direction(dup_fd(fd)?, readable, writable);
        Ok(Connection { inner: Mutex::new(Some(Arc::new(c))), readable, writable })
    }

    /// Sends `data` (any contiguous bytes-like object) as one message. A large message waits for the reader with
    /// the GIL released.
    fn send_bytes(&self, py: Python<'_>, data: PyBuffer<u8>) -> PyResult<()> {
        let c = self.writable_end()?;
        let bytes = data.to_vec(py)?;
        py.detach(|| c.send_bytes(&bytes)).map_err(|e| to_pyerr(py, e))
    }

    /// Receives one message's bytes, waiting as long as it takes; `OSError` when it is
    /// longer than `maxlength`, `EOFError` when the other end is closed.
    #[pyo3(signature = (maxlength = None))]
    fn recv_bytes<'py>(
        &self,
        py: Python<'py>,
        maxlength: Option<i64>,
    ) -> PyResult<Bound<'py, PyBytes>> {
        let maxlength = match maxlength {
            Some(m) if m < 0 => return Err(PyValueError::new_err("negative maxlength")),
            Some(m) => Some(usize::try_from(m).unwrap_or(usize::MAX)),
            None => None,
        };
        let c = self.readable_end()?;
        let got = wait_sliced(py, None, to_pyerr, |slice| {
            let received = match maxlength {
                Some(max) => c.recv_bytes_max_timeout(max, slice),
                None => c.recv_bytes_timeout(slice),
            };
            match received {
                Ok(bytes) => Ok(Slice::Done(bytes)),
                Err(Error::Timeout(_)) => Ok(Slice::Again),
                Err(other) => Err(other),
            }
        })?;
        // No deadline: only a completed receive ends the wait.
        let bytes = got.unwrap_or_default();
        Ok(PyBytes::new(py, &bytes))
    }

    /// Whether a message (or the end of the stream) is ready, waiting at most `timeout`
    /// seconds (`None`: as long as it takes).
    #[pyo3(signature = (timeout = 0.0))]
    fn poll(&self, py: Python<'_>, timeout: Option<f64>) -> PyResult<bool> {
        let c = self.readable_end()?;
        let end = deadline(true, timeout)?;
        let ready = wait_sliced(py, end, to_pyerr, |slice| match c.poll_timeout(slice) {
            Ok(true) => Ok(Slice::Done(())),
            Ok(false) => Ok(Slice::Again),
            Err(e) => Err(e),
        })?;
        Ok(ready.is_some())
    }

    /// The descriptor (for `select`, `multiprocessing.connection.wait`, `DupFd`).
    fn fileno(&self) -> PyResult<RawFd> {
        Ok(self.open()?.fileno())
    }

    /// Closes this end (at once, or when the calls in flight on it return).
    fn close(&self) {
        self.inner.lock().unwrap_or_else(|p| p.into_inner()).take();
    }

    /// Whether `close` was called.
    #[getter]
    fn closed(&self) -> bool {
        self.inner.lock().unwrap_or_else(|p| p.into_inner()).is_none()
    }

    /// Whether this end can receive.
    #[getter]
    fn readable(&self) -> bool {
        self.readable
    }

    /// Whether this end can send.
    #[getter]
    fn writable(&self) -> bool {
        self.writable
    }
}

/// Adds the class to the module.
pub(crate) fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<Connection>()
}
