//! The one error type of the crate.
//!
//! Variants carry the names a Python user knows from `multiprocessing`: [`Error::Eof`] is
//! `EOFError`, [`Error::Authentication`] is `AuthenticationError`, [`Error::BufferTooShort`]
//! is `BufferTooShort` (and, like Python's, it hands back the whole message), and so on.

use std::io;
use std::time::Duration;

/// Everything that can go wrong in multiproc.
///
/// ```
/// use multiproc::{Error, pipe};
///
/// let (a, b) = pipe(true)?;
/// drop(b);
/// // The peer is gone: Python raises EOFError here, we return Error::Eof.
/// assert!(matches!(a.recv::<String>(), Err(Error::Eof)));
/// # Ok::<(), multiproc::Error>(())
/// ```
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The other end of a connection was closed (Python's `EOFError`).
    #[error("end of stream: the other end of the connection was closed")]
    Eof,

    /// A blocking call ran out of time.
    #[error("timed out after {0:?}")]
    Timeout(Duration),

    /// A queue stayed empty for the whole timeout (Python's `queue.Empty`).
    #[error("the queue is empty")]
    Empty,

    /// A queue stayed full for the whole timeout (Python's `queue.Full`).
    #[error("the queue is full")]
    Full,

    /// Nobody is left on the other side: every other process that held the queue (or the
    /// channel) is gone, so a `get` would wait for ever (crossbeam's `RecvError`, std's
    /// `Disconnected`).
    #[error("disconnected: no other process holds the {0} any more")]
    Disconnected(&'static str),

    /// The object was closed by this process ([`crate::Connection::close`], …).
    #[error("{0} is closed")]
    Closed(&'static str),

    /// The handshake failed: wrong key, a peer without a key, or a malformed challenge.
    #[error("authentication failed: {0}")]
    Authentication(String),

    /// A message did not fit the buffer given to
    /// [`recv_bytes_into`](crate::Connection::recv_bytes_into); the message is returned whole.
    #[error("buffer too short: the message has {} bytes", .0.len())]
    BufferTooShort(Vec<u8>),

    /// A frame announced more bytes than the reader allows (`maxlength`, or the platform).
    #[error("message of {len} bytes exceeds the limit of {limit} bytes")]
    MessageTooLong {
        /// Length announced by the frame header.
        len: u64,
        /// The limit that was in force.
        limit: u64,
    },

    /// Bytes on the wire that do not follow the protocol.
    #[error("protocol error: {0}")]
    Protocol(String),

    /// A value could not be encoded, or bytes could not be decoded as the requested type.
    #[error("codec error: {0}")]
    Codec(String),

    /// A child process ended without producing its result: it panicked, exited with a
    /// non-zero code, or was killed by a signal.
    #[error("process {pid} failed with exit code {exitcode}: {message}")]
    ProcessFailed {
        /// The child's pid.
        pid: i32,
        /// Python's exit code: N for `exit(N)`, 1 for a panic, -N for signal N.
        exitcode: i32,
        /// The panic message, or a description of the exit.
        message: String,
    },

    /// An operation that needs a started process was called before [`crate::Process::start`],
    /// or `start` was called twice, and similar misuse of a process object.
    #[error("invalid process state: {0}")]
    ProcessState(&'static str),

    /// A barrier was aborted or reset, a party timed out or died while others waited
    /// (Python's `BrokenBarrierError`).
    #[error("the barrier is broken")]
    BrokenBarrier,

    /// A lock or semaphore was released when it must not be: an unlocked `Lock`, an
    /// `RLock` the caller does not own, a `BoundedSemaphore` beyond its initial value.
    #[error("invalid release: {0}")]
    InvalidRelease(&'static str),

    /// An argument was out of range or malformed (an address, a size, …).
    #[error("invalid argument: {0}")]
    InvalidArgument(String),

    /// An error raised by a manager's server (a `KeyError`, an unknown object or method, …),
    /// or a manager server that cannot be reached any more.
    #[error("manager: {0}")]
    Remote(String),

    /// An operating-system error.
    #[error(transparent)]
    Io(#[from] io::Error),
}

impl Error {
    /// A timeout error reported by an inner deadline, relabelled with the caller's timeout.
    pub(crate) fn with_timeout(self, timeout: Duration) -> Error {
        match self {
            Error::Timeout(_) => Error::Timeout(timeout),
            other => other,
        }
    }
}

/// The `(start, end)` that `range` selects among `len` elements, or an
/// [`Error::InvalidArgument`] for a reversed, overflowing or out-of-range one.
pub(crate) fn range_within(
    range: impl std::ops::RangeBounds<usize>,
    len: usize,
) -> Result<(usize, usize)> {
    use std::ops::Bound;
    let start = match range.start_bound() {
        Bound::Included(&s) => Some(s),
        Bound::Excluded(&s) => s.checked_add(1),
        Bound::Unbounded => Some(0),
    };
    let end = match range.end_bound() {
        Bound::Included(&e) => e.checked_add(1),
        Bound::Excluded(&e) => Some(e),
        Bound::Unbounded => Some(len),
    };
    match (start, end) {
        (Some(s), Some(e)) if s <= e && e <= len => Ok((s, e)),
        _ => Err(Error::InvalidArgument(format!(
            "range {:?}..{:?} is out of range for {len} elements",
            range.start_bound(),
            range.end_bound(),
        ))),
    }
}

/// A put that did not happen, with its item handed back (as crossbeam's
/// `SendTimeoutError<T>` does): the queue stayed full ([`Error::Full`]), was closed
/// ([`Error::Closed`]), or the item could not be encoded ([`Error::Codec`]), and so on.
///
/// `?` turns it into an [`Error`] (dropping the item), so functions that return
/// [`Result`] need nothing special.
///
/// ```
/// use multiproc::{Error, PutError};
///
/// let e = PutError::new(7u32, Error::Full);
/// assert!(matches!(e.error(), Error::Full));
/// assert_eq!(e.to_string(), "the queue is full");
/// let (item, error) = e.into_parts();
/// assert_eq!(item, 7);
/// assert!(matches!(error, Error::Full));
/// let plain: Error = PutError::new("x", Error::Closed("queue")).into();
/// assert!(matches!(plain, Error::Closed("queue")));
/// ```
pub struct PutError<T> {
    item: T,
    error: Error,
}

impl<T> PutError<T> {
    /// `item` was not put, because of `error`.
    pub fn new(item: T, error: Error) -> PutError<T> {
        PutError { item, error }
    }

    /// Why the item was not put.
    pub fn error(&self) -> &Error {
        &self.error
    }

    /// The item that was not put.
    pub fn item(&self) -> &T {
        &self.item
    }

    /// The item back, for another try.
    pub fn into_item(self) -> T {
        self.item
    }

    /// The item and the error.
    pub fn into_parts(self) -> (T, Error) {
        (self.item, self.error)
    }

    /// The same error with the item mapped (a proxy hands back the caller's item).
    pub fn map_item<U>(self, f: impl FnOnce(T) -> U) -> PutError<U> {
        PutError { item: f(self.item), error: self.error }
    }
}

impl<T> std::fmt::Debug for PutError<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PutError").field("error", &self.error).finish_non_exhaustive()
    }
}

impl<T> std::fmt::Display for PutError<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Display::fmt(&self.error, f)
    }
}

impl<T> std::error::Error for PutError<T> {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.error)
    }
}

impl<T> From<PutError<T>> for Error {
    fn from(e: PutError<T>) -> Error {
        e.error
    }
}

/// `Result<T, multiproc::Error>`.
pub type Result<T, E = Error> = std::result::Result<T, E>;
