//! The one error type of the crate.
//!
//! Variants carry the names a Python user knows from `multiprocessing`: [`Error::Eof`] is
//! `EOFError`, [`Error::Authentication`] is `AuthenticationError`, [`Error::BufferTooShort`]
//! is `BufferTooShort` (and, like Python's, it hands back the whole message), and so on.

use std::io;
use std::time::Duration;

/// Everything that can go wrong in multiproc.
///
/// It implements serde's `Serialize` and `Deserialize`, so it crosses process boundaries:
/// a child can return `Result<T, multiproc::Error>` to [`spawn`](crate::spawn)'s
/// `join()??`, or send one through a queue or a pipe. An [`Error::Io`] travels as its
/// kind and message (and OS error code, when it has one).
///
/// ```
/// fn child(n: u32) -> multiproc::Result<u32> {
///     let (a, b) = multiproc::pipe(true)?;
///     a.send(&n)?;
///     drop(a);
///     let got: u32 = b.recv()?;
///     b.recv::<u32>()?; // the other end is closed: Error::Eof
///     Ok(got)
/// }
/// let result = multiproc::spawn(child, 7)?.join()?;
/// assert!(matches!(result, Err(multiproc::Error::Eof)));
/// # Ok::<(), multiproc::Error>(())
/// ```
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
#[derive(Debug, thiserror::Error, serde::Serialize, serde::Deserialize)]
#[non_exhaustive]
pub enum Error {
    /// The other end of a connection was closed (Python's `EOFError`).
    #[error("end of stream: the other end of the connection was closed")]
    Eof,

    /// A blocking call ran out of time.
    #[error("timed out after {0:?}")]
    Timeout(Duration),

    /// A `try_` form found nothing ready and did not wait: a lock or semaphore held by
    /// another, no message yet on a connection, a process still running (std's
    /// `TryLockError::WouldBlock`, crossbeam's `TryRecvError::Empty`). A queue's `try_get`
    /// and `try_put` say [`Error::Empty`] and [`Error::Full`] instead, as Python's `queue`
    /// module does.
    ///
    /// ```
    /// use multiproc::{synchronize::Lock, Error};
    /// let lock = Lock::new()?;
    /// let _held = lock.acquire()?;
    /// assert!(matches!(lock.try_acquire(), Err(Error::WouldBlock)));
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    #[error("not ready: the call would have to wait")]
    WouldBlock,

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
    Disconnected(#[serde(with = "static_str")] &'static std::primitive::str),

    /// The object was closed by this process ([`crate::Connection::close`], …).
    #[error("{0} is closed")]
    Closed(#[serde(with = "static_str")] &'static std::primitive::str),

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
    ProcessState(#[serde(with = "static_str")] &'static std::primitive::str),

    /// A barrier was aborted or reset, a party timed out or died while others waited
    /// (Python's `BrokenBarrierError`).
    #[error("the barrier is broken")]
    BrokenBarrier,

    /// A lock or semaphore was released when it must not be: an unlocked `Lock`, an
    /// `RLock` the caller does not own, a `BoundedSemaphore` beyond its initial value.
    #[error("invalid release: {0}")]
    InvalidRelease(#[serde(with = "static_str")] &'static std::primitive::str),

    /// An argument was out of range or malformed (an address, a size, …).
    #[error("invalid argument: {0}")]
    InvalidArgument(String),

    /// An error raised by a manager's server (a `KeyError`, an unknown object or method, …),
    /// or a manager server that cannot be reached any more.
    #[error("manager: {0}")]
    Remote(String),

    /// An operating-system error.
    #[error(transparent)]
    Io(
        #[from]
        #[serde(with = "io_error")]
        io::Error,
    ),

    /// A task of a [`distributed::Pool`](crate::distributed::Pool) (feature `redis`) that
    /// did not give a value: it panicked on its worker, its worker refused it (an unknown
    /// function, another registry identity: not run), or it was dead-lettered after too
    /// many deliveries. The text says which, and names the worker.
    #[error("task: {0}")]
    Task(String),
}

/// Serde for the `&'static str` that some variants carry: a deserialized message is
/// interned (each distinct text leaked once), within a bound so that a peer sending
/// endless distinct texts cannot grow memory without limit.
///
/// Those fields spell their type `&'static std::primitive::str`: serde's derive takes a
/// field written `&'static str` as borrowed from the input and would then implement only
/// `Deserialize<'static>`, not `DeserializeOwned`.
mod static_str {
    use std::collections::HashSet;
    use std::sync::Mutex;

    use serde::{Deserialize, Deserializer, Serializer};

    use crate::sync_util::lock;

    /// At most this many distinct texts are interned; later new ones share one text.
    const MAX_INTERNED: usize = 1024;
    /// A longer text is cut (at a character boundary) before it is interned.
    const MAX_LEN: usize = 256;

    pub(super) fn serialize<S: Serializer>(
        s: &&'static str,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(s)
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<&'static str, D::Error> {
        let text = String::deserialize(deserializer)?;
        Ok(intern(&text))
    }

    fn intern(text: &str) -> &'static str {
        static INTERNED: Mutex<Option<HashSet<&'static str>>> = Mutex::new(None);
        let mut end = text.len().min(MAX_LEN);
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        let text = &text[..end];
        let mut interned = lock(&INTERNED);
        let set = interned.get_or_insert_with(HashSet::new);
        if let Some(known) = set.get(text) {
            return known;
        }
        if set.len() >= MAX_INTERNED {
            return "(a message not kept: too many distinct ones)";
        }
        let leaked: &'static str = Box::leak(text.to_owned().into_boxed_str());
        set.insert(leaked);
        leaked
    }
}

/// Serde for [`io::Error`]: its kind (by name), its message and its OS error code.
mod io_error {
    use std::io::{self, ErrorKind};

    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    #[derive(Serialize, Deserialize)]
    struct Wire {
        kind: String,
        message: String,
        os_code: Option<i32>,
    }

    /// The kinds that travel by name; any other arrives as `ErrorKind::Other`.
    const KINDS: &[ErrorKind] = &[
        ErrorKind::NotFound,
        ErrorKind::PermissionDenied,
        ErrorKind::ConnectionRefused,
        ErrorKind::ConnectionReset,
        ErrorKind::HostUnreachable,
        ErrorKind::NetworkUnreachable,
        ErrorKind::ConnectionAborted,
        ErrorKind::NotConnected,
        ErrorKind::AddrInUse,
        ErrorKind::AddrNotAvailable,
        ErrorKind::NetworkDown,
        ErrorKind::BrokenPipe,
        ErrorKind::AlreadyExists,
        ErrorKind::WouldBlock,
        ErrorKind::NotADirectory,
        ErrorKind::IsADirectory,
        ErrorKind::DirectoryNotEmpty,
        ErrorKind::ReadOnlyFilesystem,
        ErrorKind::StaleNetworkFileHandle,
        ErrorKind::InvalidInput,
        ErrorKind::InvalidData,
        ErrorKind::TimedOut,
        ErrorKind::WriteZero,
        ErrorKind::StorageFull,
        ErrorKind::NotSeekable,
        ErrorKind::FileTooLarge,
        ErrorKind::ResourceBusy,
        ErrorKind::ExecutableFileBusy,
        ErrorKind::Deadlock,
        ErrorKind::CrossesDevices,
        ErrorKind::TooManyLinks,
        ErrorKind::ArgumentListTooLong,
        ErrorKind::Interrupted,
        ErrorKind::Unsupported,
        ErrorKind::UnexpectedEof,
        ErrorKind::OutOfMemory,
        ErrorKind::Other,
    ];

    pub(super) fn serialize<S: Serializer>(
        e: &io::Error,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        Wire { kind: format!("{:?}", e.kind()), message: e.to_string(), os_code: e.raw_os_error() }
            .serialize(serializer)
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<io::Error, D::Error> {
        let wire = Wire::deserialize(deserializer)?;
        if let Some(code) = wire.os_code {
            return Ok(io::Error::from_raw_os_error(code));
        }
        let kind = KINDS
            .iter()
            .copied()
            .find(|k| format!("{k:?}") == wire.kind)
            .unwrap_or(ErrorKind::Other);
        Ok(io::Error::new(kind, wire.message))
    }
}

impl Error {
    /// A timeout error reported by an inner deadline, relabelled with the caller's timeout.
    pub(crate) fn with_timeout(self, timeout: Duration) -> Error {
        match self {
            Error::Timeout(_) => Error::Timeout(timeout),
            other => other,
        }
    }

    /// The error of a `try_` form: a timeout of its zero wait becomes [`Error::WouldBlock`].
    pub(crate) fn not_waiting(self) -> Error {
        match self {
            Error::Timeout(_) => Error::WouldBlock,
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

#[cfg(test)]
mod tests {
    use super::Error;

    fn round_trip(e: &Error) -> Error {
        let bytes = postcard::to_stdvec(e).expect("encode");
        postcard::from_bytes(&bytes).expect("decode")
    }

    #[test]
    fn static_texts_round_trip_and_interning_is_bounded() {
        assert!(matches!(round_trip(&Error::Closed("queue")), Error::Closed("queue")));
        let long = "x".repeat(10_000);
        let leaked: &'static str = Box::leak(long.into_boxed_str());
        match round_trip(&Error::ProcessState(leaked)) {
            Error::ProcessState(s) => assert_eq!(s.len(), 256),
            other => panic!("{other:?}"),
        }
        // A peer sending endless distinct texts fills the table once, then shares one text.
        let mut last = "";
        for i in 0..2_000 {
            let text: &'static str = Box::leak(format!("distinct {i}").into_boxed_str());
            if let Error::InvalidRelease(s) = round_trip(&Error::InvalidRelease(text)) {
                last = s;
            }
        }
        assert_eq!(last, "(a message not kept: too many distinct ones)");
        assert!(matches!(round_trip(&Error::Closed("queue")), Error::Closed("queue")));
    }

    #[test]
    fn io_errors_travel_as_kind_message_and_code() {
        let os = Error::Io(std::io::Error::from_raw_os_error(13));
        match round_trip(&os) {
            Error::Io(e) => {
                assert_eq!(e.raw_os_error(), Some(13));
                assert_eq!(e.kind(), std::io::ErrorKind::PermissionDenied);
            }
            other => panic!("{other:?}"),
        }
        let custom = Error::Io(std::io::Error::new(std::io::ErrorKind::TimedOut, "slow peer"));
        match round_trip(&custom) {
            Error::Io(e) => {
                assert_eq!(e.kind(), std::io::ErrorKind::TimedOut);
                assert_eq!(e.to_string(), "slow peer");
            }
            other => panic!("{other:?}"),
        }
    }
}
