//! Connections: [`pipe`], [`Connection`], [`wait`], and (in [`Listener`] / [`Client`])
//! connections between unrelated processes, with CPython's wire protocol.
//!
//! # Framing
//! Every message is a frame as CPython writes it: a 4-byte big-endian signed length and
//! the payload; a payload longer than `0x7fffffff` bytes is announced by the length `-1`
//! followed by an 8-byte big-endian unsigned length. A CPython peer therefore reads what
//! [`Connection::send_bytes`] writes, and the other way round.
//!
//! # Reading
//! Each connection keeps a small read buffer, so that a small message costs one `read`
//! system call (header and payload arrive together). A large message is read straight into
//! its own allocation, which grows with the bytes that actually arrive: a peer that
//! announces 2^63 bytes gets an error or a timeout, never a 2^63-byte allocation.
//!
//! A frame that breaks the protocol (a negative length, a length above the reader's limit,
//! a stream that ends mid-frame) leaves the stream at an unknown position; the connection
//! then reports the same error for every later read instead of decoding garbage.
//!
//! ```
//! use multiproc::pipe;
//!
//! let (parent, child) = pipe(true)?;
//! parent.send(&"hello")?;
//! assert_eq!(child.recv::<String>()?, "hello");
//! child.send_bytes(b"raw bytes")?;
//! assert_eq!(parent.recv_bytes()?, b"raw bytes");
//! # Ok::<(), multiproc::Error>(())
//! ```

use std::fmt;
use std::io::IoSlice;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::codec::Codec;
use crate::error::{Error, Result};
use crate::reduction;
use crate::sync_util::{get_mut, lock};
use crate::sys;
use crate::sys::poll::{PollFd, PollFlags};

pub(crate) mod auth;
mod listener;

pub use auth::AuthDialect;
pub use listener::{Address, Client, Listener};

/// Size of the per-connection read buffer. Frames up to this size are decoded in place.
const READ_BUFFER: usize = 64 * 1024;
/// A large frame's allocation starts at most this big and then grows with the data.
const PREALLOCATE_AT_MOST: usize = 64 * 1024 * 1024;
/// The longest frame the protocol can announce (CPython's 8-byte length is unsigned, but
/// no peer can send more than `isize::MAX` bytes).
const PROTOCOL_MAX: u64 = i64::MAX as u64;

/// One end of a pipe or socket carrying CPython-framed messages.
///
/// Methods take `&self` and are safe to call from several threads: concurrent senders
/// never interleave their frames, concurrent receivers each get whole messages.
///
/// A `Connection` can be given to a child process as (part of) its arguments; the child
/// receives its own descriptor for the same channel.
///
/// ```
/// use multiproc::{pipe, Process};
///
/// fn child(conn: multiproc::Connection) {
///     conn.send(&"Hello from Process").unwrap();
/// }
///
/// let (parent_conn, child_conn) = pipe(true)?;
/// let p = Process::new(child, child_conn);
/// p.start()?;
/// assert_eq!(parent_conn.recv::<String>()?, "Hello from Process");
/// p.join()?;
/// # Ok::<(), multiproc::Error>(())
/// ```
///
/// It can also be sent through another connection or a [`Queue`](crate::queues::Queue),
/// as in CPython: the sender keeps a duplicate of the descriptor and hands it out once, to
/// the first process (of the same user) that decodes the message; the sender may close its
/// own end right away. Received after the sender has exited, or a second time, it is an
/// [`Error::Codec`].
///
/// ```
/// use multiproc::{pipe, spawn, Connection};
///
/// fn child(channel: Connection) -> u32 {
///     let conn: Connection = channel.recv().unwrap(); // a connection inside a message
///     conn.recv::<u32>().unwrap() + 1
/// }
///
/// let (channel, child_channel) = pipe(true)?;
/// let worker = spawn(child, child_channel)?;
/// let (mine, theirs) = pipe(true)?;
/// channel.send(&theirs)?;
/// drop(theirs);
/// mine.send(&41u32)?;
/// assert_eq!(worker.join()?, 42);
/// # Ok::<(), multiproc::Error>(())
/// ```
pub struct Connection {
    fd: OwnedFd,
    readable: bool,
    writable: bool,
    codec: Codec,
    reader: Mutex<Reader>,
    /// Scratch buffer for encoding; its lock also serializes writers.
    writer: Mutex<Vec<u8>>,
}

struct Reader {
    /// Bytes read but not yet consumed: `buf[pos..]`.
    buf: Vec<u8>,
    pos: usize,
    /// A large frame being received: the bytes so far and the announced length.
    partial: Option<(Vec<u8>, usize)>,
    /// Set when the stream lost its framing; every later read fails with it.
    broken: Option<String>,
    /// How long to poll before blocking in `read`.
    spin: Spinner,
}

/// Spin-then-block for receivers.
///
/// Waking a thread that sleeps in `read` costs tens of microseconds on a virtual machine
/// (the idle CPU halts and must be woken by the hypervisor), while a receiver that is still
/// polling when the message arrives sees it within a microsecond. So before blocking, a
/// receiver polls its descriptor for a short budget, yielding the CPU between polls so a
/// peer on the same CPU can run.
///
/// The budget follows the traffic: after a wait that ended within [`SPIN_MAX`] (counting
/// the time spent blocked) the budget becomes twice that wait, so a steady request/reply
/// rhythm is caught by the spin; after a longer wait it halves, down to zero. An idle
/// receiver therefore sleeps in the kernel and costs no CPU.
#[derive(Debug, Clone, Copy)]
struct Spinner {
    budget_ns: u32,
}

const SPIN_MIN_NS: u32 = 1_000;
const SPIN_MAX: Duration = Duration::from_micros(50);

impl Spinner {
    const fn new() -> Spinner {
        Spinner { budget_ns: SPIN_MIN_NS * 8 }
    }

    /// Polls `fd` until it is readable or the budget (or `deadline`) runs out; returns
    /// whether it became readable.
    fn spin(&mut self, fd: BorrowedFd<'_>, deadline: Option<Instant>) -> bool {
        if self.budget_ns == 0 {
            return false;
        }
        let mut until = Instant::now() + Duration::from_nanos(self.budget_ns.into());
        if let Some(deadline) = deadline {
            until = until.min(deadline);
        }
        loop {
            if sys::poll::ready_now(fd, PollFlags::IN) {
                return true;
            }
            if Instant::now() >= until {
                return false;
            }
            sys::cpu::yield_now();
        }
    }

    /// Adapts the budget to a wait that spinning did not cover and that took `waited`.
    fn blocked_for(&mut self, waited: Duration) {
        self.budget_ns = if waited <= SPIN_MAX {
            (waited.as_nanos() as u32)
                .saturating_mul(2)
                .clamp(SPIN_MIN_NS, SPIN_MAX.as_nanos() as u32)
        } else if self.budget_ns / 2 < SPIN_MIN_NS {
            0
        } else {
            self.budget_ns / 2
        };
    }
}

/// A received payload: in the read buffer, or in its own allocation.
enum Payload<'a> {
    Borrowed(&'a [u8]),
    Owned(Vec<u8>),
}

impl Payload<'_> {
    fn as_slice(&self) -> &[u8] {
        match self {
            Payload::Borrowed(b) => b,
            Payload::Owned(v) => v,
        }
    }

    fn into_vec(self) -> Vec<u8> {
        match self {
            Payload::Borrowed(b) => b.to_vec(),
            Payload::Owned(v) => v,
        }
    }
}

/// Creates a pair of connected [`Connection`]s, as Python's `multiprocessing.Pipe(duplex)`.
///
/// With `duplex = true` both ends can send and receive (a Unix socket pair). With
/// `duplex = false` the first end can only receive and the second can only send (a pipe).
///
/// ```
/// use multiproc::pipe;
///
/// let (reader, writer) = pipe(false)?;
/// writer.send(&[1, 2, 3])?;
/// assert_eq!(reader.recv::<[i32; 3]>()?, [1, 2, 3]);
/// assert!(reader.send(&0).is_err()); // the receiving end of a one-way pipe
/// # Ok::<(), multiproc::Error>(())
/// ```
pub fn pipe(duplex: bool) -> Result<(Connection, Connection)> {
    if duplex {
        let (a, b) = sys::socket::pair()?;
        Ok((Connection::from_fd(a), Connection::from_fd(b)))
    } else {
        let (r, w) = sys::fd::pipe()?;
        // A bigger pipe halves the number of wake-ups for large messages; the system limit
        // may refuse, which only costs speed.
        let _ = sys::fd::set_pipe_size(&w, 1 << 20);
        Ok((Connection::with_direction(r, true, false), Connection::with_direction(w, false, true)))
    }
}

impl Connection {
    /// Wraps a connected stream socket or a pipe end that can both read and write.
    ///
    /// ```
    /// use multiproc::Connection;
    /// use std::os::unix::net::UnixStream;
    ///
    /// let (a, b) = UnixStream::pair()?;
    /// let (a, b) = (Connection::from_fd(a.into()), Connection::from_fd(b.into()));
    /// a.send_bytes(b"x")?;
    /// assert_eq!(b.recv_bytes()?, b"x");
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn from_fd(fd: OwnedFd) -> Connection {
        Connection::with_direction(fd, true, true)
    }

    /// Wraps a descriptor that is only `readable`, only `writable`, or both: a pipe end
    /// received from another process keeps the direction it had there (Python's
    /// `Connection(fd, readable, writable)`).
    ///
    /// ```
    /// use multiproc::{pipe, Connection};
    /// use std::os::fd::AsFd;
    ///
    /// let (r, w) = pipe(false)?;
    /// let w2 = Connection::with_direction(w.as_fd().try_clone_to_owned()?, false, true);
    /// assert!(!w2.readable() && w2.writable());
    /// w2.send_bytes(b"x")?;
    /// assert_eq!(r.recv_bytes()?, b"x");
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn with_direction(fd: OwnedFd, readable: bool, writable: bool) -> Connection {
        Connection {
            fd,
            readable,
            writable,
            codec: Codec::default(),
            reader: Mutex::new(Reader {
                buf: Vec::new(),
                pos: 0,
                partial: None,
                broken: None,
                spin: Spinner::new(),
            }),
            writer: Mutex::new(Vec::new()),
        }
    }

    /// A second handle on the same channel (a duplicated descriptor), as
    /// `UnixStream::try_clone`. Useful to give one end to several child processes. Bytes
    /// that one handle has already read into its buffer are not seen by the other.
    ///
    /// ```
    /// let (a, b) = multiproc::pipe(true)?;
    /// let a2 = a.try_clone()?;
    /// a2.send(&1u8)?;
    /// a.send(&2u8)?;
    /// assert_eq!((b.recv::<u8>()?, b.recv::<u8>()?), (1, 2));
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn try_clone(&self) -> Result<Connection> {
        let mut clone =
            Connection::with_direction(self.fd.try_clone()?, self.readable, self.writable);
        clone.codec = self.codec;
        Ok(clone)
    }

    /// This connection, using `codec` for [`send`](Self::send) and [`recv`](Self::recv).
    ///
    /// ```
    /// use multiproc::{pipe, Codec};
    /// let (a, _b) = pipe(true)?;
    /// let a = a.with_codec(Codec::Pickle);
    /// assert_eq!(a.codec(), Codec::Pickle);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn with_codec(mut self, codec: Codec) -> Connection {
        self.codec = codec;
        self
    }

    /// Changes the codec of [`send`](Self::send) and [`recv`](Self::recv).
    ///
    /// ```
    /// use multiproc::{pipe, Codec};
    /// let (mut a, _b) = pipe(true)?;
    /// a.set_codec(Codec::Pickle);
    /// assert_eq!(a.codec(), Codec::Pickle);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn set_codec(&mut self, codec: Codec) {
        self.codec = codec;
    }

    /// The codec of [`send`](Self::send) and [`recv`](Self::recv).
    ///
    /// ```
    /// use multiproc::{pipe, Codec};
    /// let (a, _b) = pipe(true)?;
    /// assert_eq!(a.codec(), Codec::Postcard);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn codec(&self) -> Codec {
        self.codec
    }

    /// Whether this end can receive.
    ///
    /// ```
    /// let (r, w) = multiproc::pipe(false)?;
    /// assert!(r.readable() && !w.readable());
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn readable(&self) -> bool {
        self.readable
    }

    /// Whether this end can send.
    ///
    /// ```
    /// let (r, w) = multiproc::pipe(false)?;
    /// assert!(w.writable() && !r.writable());
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn writable(&self) -> bool {
        self.writable
    }

    /// The file descriptor (Python's `fileno()`); it stays owned by the connection.
    ///
    /// ```
    /// let (a, _b) = multiproc::pipe(true)?;
    /// assert!(a.fileno() >= 0);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn fileno(&self) -> RawFd {
        self.fd.as_raw_fd()
    }

    /// Closes the connection. The peer's next receive reports [`Error::Eof`] once it has
    /// read what was sent before. Dropping a connection closes it too.
    ///
    /// ```
    /// use multiproc::{pipe, Error};
    /// let (a, b) = pipe(true)?;
    /// a.send(&1u8)?;
    /// a.close();
    /// assert_eq!(b.recv::<u8>()?, 1);
    /// assert!(matches!(b.recv::<u8>(), Err(Error::Eof)));
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn close(self) {
        drop(self);
    }

    // ----------------------------------------------------------------------------------
    // Sending

    /// Sends a value, encoded with this connection's [`Codec`].
    ///
    /// ```
    /// let (a, b) = multiproc::pipe(true)?;
    /// a.send(&vec![Some(1), None])?;
    /// assert_eq!(b.recv::<Vec<Option<i32>>>()?, vec![Some(1), None]);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn send<T: Serialize + ?Sized>(&self, value: &T) -> Result<()> {
        self.send_value(value, None)
    }

    /// Like [`send`](Self::send), but fails with [`Error::Timeout`] if the peer does not
    /// make room for the message in time. On a timeout the stream may hold part of the
    /// message, so the connection is then unusable for sending.
    ///
    /// ```
    /// use std::time::Duration;
    /// let (a, b) = multiproc::pipe(true)?;
    /// a.send_timeout(&42u64, Duration::from_secs(1))?;
    /// assert_eq!(b.recv::<u64>()?, 42);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn send_timeout<T: Serialize + ?Sized>(&self, value: &T, timeout: Duration) -> Result<()> {
        self.send_value(value, crate::deadline::after(timeout)).map_err(|e| e.with_timeout(timeout))
    }

    fn send_value<T: Serialize + ?Sized>(
        &self,
        value: &T,
        deadline: Option<Instant>,
    ) -> Result<()> {
        self.check_writable()?;
        let mut scratch = lock(&self.writer);
        scratch.clear();
        scratch.extend_from_slice(&[0; 4]);
        if let Err(e) = self.codec.encode_into(value, &mut scratch) {
            scratch.clear();
            return Err(e);
        }
        let len = scratch.len() - 4;
        let result = if len <= i32::MAX as usize {
            scratch[..4].copy_from_slice(&(len as i32).to_be_bytes());
            write_all(self.fd.as_fd(), &scratch, &[], deadline)
        } else {
            let header = long_header(len);
            write_all(self.fd.as_fd(), &header, &scratch[4..], deadline)
        };
        if scratch.capacity() > READ_BUFFER * 16 {
            *scratch = Vec::new();
        }
        result
    }

    /// Sends `buf` as one message of raw bytes (Python's `send_bytes(buf)`).
    ///
    /// ```
    /// let (a, b) = multiproc::pipe(true)?;
    /// a.send_bytes(&[0u8; 100_000])?; // larger than a socket buffer: b reads it later
    /// # let t = std::thread::spawn(move || b.recv_bytes());
    /// # assert_eq!(t.join().unwrap()?.len(), 100_000);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn send_bytes(&self, buf: &[u8]) -> Result<()> {
        self.check_writable()?;
        let _writer = lock(&self.writer);
        send_frame(self.fd.as_fd(), buf, None)
    }

    /// Sends `size` bytes of `buf` starting at `offset` (all the rest when `size` is
    /// `None`), as Python's `send_bytes(buf, offset, size)`.
    ///
    /// ```
    /// let (a, b) = multiproc::pipe(true)?;
    /// a.send_bytes_range(b"abcdef", 2, Some(3))?;
    /// assert_eq!(b.recv_bytes()?, b"cde");
    /// assert!(a.send_bytes_range(b"abc", 4, None).is_err());
    /// assert!(a.send_bytes_range(b"abc", 1, Some(3)).is_err());
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn send_bytes_range(&self, buf: &[u8], offset: usize, size: Option<usize>) -> Result<()> {
        if offset > buf.len() {
            return Err(Error::InvalidArgument(format!(
                "offset {offset} is beyond the buffer's {} bytes",
                buf.len()
            )));
        }
        let size = size.unwrap_or(buf.len() - offset);
        if size > buf.len() - offset {
            return Err(Error::InvalidArgument(format!(
                "offset {offset} + size {size} is beyond the buffer's {} bytes",
                buf.len()
            )));
        }
        self.send_bytes(&buf[offset..offset + size])
    }

    // ----------------------------------------------------------------------------------
    // Receiving

    /// Receives one value, decoded with this connection's [`Codec`]. Blocks until a
    /// message arrives; [`Error::Eof`] when the peer closed its end.
    ///
    /// ```
    /// let (a, b) = multiproc::pipe(true)?;
    /// a.send(&(1u8, 'x'))?;
    /// assert_eq!(b.recv::<(u8, char)>()?, (1, 'x'));
    /// // Bytes that are not a `String` give a codec error, not a panic:
    /// a.send(&[0xffu8, 0xfe])?;
    /// assert!(matches!(b.recv::<String>(), Err(multiproc::Error::Codec(_))));
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn recv<T: DeserializeOwned>(&self) -> Result<T> {
        self.recv_value(None)
    }

    /// Like [`recv`](Self::recv), with a timeout ([`Error::Timeout`]); a message that was
    /// partly received when time ran out is completed by the next call.
    ///
    /// ```
    /// use std::time::Duration;
    /// let (a, _b) = multiproc::pipe(true)?;
    /// let r = a.recv_timeout::<u8>(Duration::from_millis(10));
    /// assert!(matches!(r, Err(multiproc::Error::Timeout(_))));
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn recv_timeout<T: DeserializeOwned>(&self, timeout: Duration) -> Result<T> {
        self.recv_value(crate::deadline::after(timeout)).map_err(|e| e.with_timeout(timeout))
    }

    /// Like [`recv`](Self::recv) without waiting: [`Error::WouldBlock`] when no whole
    /// message is there yet.
    ///
    /// ```
    /// let (a, b) = multiproc::pipe(true)?;
    /// assert!(matches!(b.try_recv::<u8>(), Err(multiproc::Error::WouldBlock)));
    /// a.send(&7u8)?;
    /// assert!(b.poll_timeout(std::time::Duration::from_secs(30))?);
    /// assert_eq!(b.try_recv::<u8>()?, 7);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn try_recv<T: DeserializeOwned>(&self) -> Result<T> {
        self.recv_timeout(Duration::ZERO).map_err(Error::not_waiting)
    }

    fn recv_value<T: DeserializeOwned>(&self, deadline: Option<Instant>) -> Result<T> {
        let codec = self.codec;
        self.with_frame(PROTOCOL_MAX, deadline, |payload| codec.decode(payload.as_slice()))?
    }

    /// Receives one message of raw bytes (Python's `recv_bytes()`).
    ///
    /// ```
    /// let (a, b) = multiproc::pipe(true)?;
    /// a.send_bytes(b"hello")?;
    /// assert_eq!(b.recv_bytes()?, b"hello");
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn recv_bytes(&self) -> Result<Vec<u8>> {
        self.recv_bytes_deadline(PROTOCOL_MAX, None)
    }

    /// Receives one message of at most `maxlength` bytes (Python's `recv_bytes(maxlength)`).
    /// A longer message is an error ([`Error::MessageTooLong`]), after which the connection
    /// is unusable, as in CPython.
    ///
    /// ```
    /// use multiproc::Error;
    /// let (a, b) = multiproc::pipe(true)?;
    /// a.send_bytes(b"0123456789")?;
    /// assert!(matches!(b.recv_bytes_max(4), Err(Error::MessageTooLong { len: 10, limit: 4 })));
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn recv_bytes_max(&self, maxlength: usize) -> Result<Vec<u8>> {
        self.recv_bytes_deadline(u64::try_from(maxlength).unwrap_or(u64::MAX), None)
    }

    /// Like [`recv_bytes`](Self::recv_bytes), with a timeout.
    ///
    /// ```
    /// use std::time::Duration;
    /// let (a, b) = multiproc::pipe(true)?;
    /// a.send_bytes(b"hi")?;
    /// assert_eq!(b.recv_bytes_timeout(Duration::from_secs(5))?, b"hi");
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn recv_bytes_timeout(&self, timeout: Duration) -> Result<Vec<u8>> {
        self.recv_bytes_deadline(PROTOCOL_MAX, crate::deadline::after(timeout))
            .map_err(|e| e.with_timeout(timeout))
    }

    /// Like [`recv_bytes_max`](Self::recv_bytes_max), with a timeout.
    ///
    /// ```
    /// use std::time::Duration;
    /// let (a, b) = multiproc::pipe(true)?;
    /// a.send_bytes(b"hi")?;
    /// assert_eq!(b.recv_bytes_max_timeout(16, Duration::from_secs(5))?, b"hi");
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn recv_bytes_max_timeout(&self, maxlength: usize, timeout: Duration) -> Result<Vec<u8>> {
        let limit = u64::try_from(maxlength).unwrap_or(u64::MAX);
        self.recv_bytes_deadline(limit, crate::deadline::after(timeout))
            .map_err(|e| e.with_timeout(timeout))
    }

    /// Like [`recv_bytes`](Self::recv_bytes) without waiting: [`Error::WouldBlock`] when no
    /// whole message is there yet.
    ///
    /// ```
    /// let (a, b) = multiproc::pipe(true)?;
    /// assert!(matches!(b.try_recv_bytes(), Err(multiproc::Error::WouldBlock)));
    /// a.send_bytes(b"hi")?;
    /// assert!(b.poll_timeout(std::time::Duration::from_secs(30))?);
    /// assert_eq!(b.try_recv_bytes()?, b"hi");
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn try_recv_bytes(&self) -> Result<Vec<u8>> {
        self.recv_bytes_timeout(Duration::ZERO).map_err(Error::not_waiting)
    }

    fn recv_bytes_deadline(&self, limit: u64, deadline: Option<Instant>) -> Result<Vec<u8>> {
        self.with_frame(limit, deadline, |payload| payload.into_vec())
    }

    /// Receives one message into `buf` and returns its length (Python's
    /// `recv_bytes_into`; pass `&mut buf[offset..]` for an offset). A message longer than
    /// `buf` is returned whole inside [`Error::BufferTooShort`].
    ///
    /// ```
    /// use multiproc::Error;
    /// let (a, b) = multiproc::pipe(true)?;
    /// let mut buf = [0u8; 4];
    /// a.send_bytes(b"abc")?;
    /// assert_eq!(b.recv_bytes_into(&mut buf)?, 3);
    /// a.send_bytes(b"too long")?;
    /// match b.recv_bytes_into(&mut buf) {
    ///     Err(Error::BufferTooShort(message)) => assert_eq!(message, b"too long"),
    ///     other => panic!("{other:?}"),
    /// }
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn recv_bytes_into(&self, buf: &mut [u8]) -> Result<usize> {
        self.recv_bytes_into_blocking(buf)
    }

    /// Like [`recv_bytes_into`](Self::recv_bytes_into), waiting at most `timeout`
    /// ([`Error::Timeout`]); a message partly received when time ran out is completed by
    /// the next call.
    ///
    /// ```
    /// use std::time::Duration;
    /// let (a, b) = multiproc::pipe(true)?;
    /// let mut buf = [0u8; 8];
    /// assert!(matches!(b.recv_bytes_into_timeout(&mut buf, Duration::from_millis(10)), Err(multiproc::Error::Timeout(_))));
    /// a.send_bytes(b"abc")?;
    /// assert_eq!(b.recv_bytes_into_timeout(&mut buf, Duration::from_secs(30))?, 3);
    /// assert_eq!(&buf[..3], b"abc");
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn recv_bytes_into_timeout(&self, buf: &mut [u8], timeout: Duration) -> Result<usize> {
        self.with_frame(PROTOCOL_MAX, crate::deadline::after(timeout), |payload| {
            let message = payload.as_slice();
            if message.len() <= buf.len() {
                buf[..message.len()].copy_from_slice(message);
                Ok(message.len())
            } else {
                Err(Error::BufferTooShort(payload.into_vec()))
            }
        })
        .map_err(|e| e.with_timeout(timeout))?
    }

    /// Like [`recv_bytes_into`](Self::recv_bytes_into) without waiting: [`Error::WouldBlock`]
    /// when no whole message is there yet.
    ///
    /// ```
    /// let (a, b) = multiproc::pipe(true)?;
    /// let mut buf = [0u8; 8];
    /// assert!(matches!(b.try_recv_bytes_into(&mut buf), Err(multiproc::Error::WouldBlock)));
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn try_recv_bytes_into(&self, buf: &mut [u8]) -> Result<usize> {
        self.recv_bytes_into_timeout(buf, Duration::ZERO).map_err(Error::not_waiting)
    }

    fn recv_bytes_into_blocking(&self, buf: &mut [u8]) -> Result<usize> {
        self.check_readable()?;
        let mut guard = lock(&self.reader);
        let reader = &mut *guard;
        let fd = self.fd.as_fd();
        if let Some(why) = &reader.broken {
            return Err(Error::Protocol(why.clone()));
        }
        if reader.partial.is_some() {
            let message = reader.finish_large(fd, None)?;
            return copy_or_hand_back(message, buf);
        }
        let (header, len) = reader.begin_frame(fd, PROTOCOL_MAX, None)?;
        if header + len <= READ_BUFFER {
            reader.fill(fd, header + len, None)?;
            let start = reader.pos + header;
            reader.pos += header + len;
            let message = &reader.buf[start..start + len];
            let result = if len <= buf.len() {
                buf[..len].copy_from_slice(message);
                Ok(len)
            } else {
                Err(Error::BufferTooShort(message.to_vec()))
            };
            reader.compact_if_drained();
            return result;
        }
        reader.pos += header;
        let take = (reader.buf.len() - reader.pos).min(len);
        if len > buf.len() {
            // Read the message whole (it is the caller's) and hand it back in the error.
            let mut vec = Vec::with_capacity(len.min(PREALLOCATE_AT_MOST));
            vec.extend_from_slice(&reader.buf[reader.pos..reader.pos + take]);
            reader.pos += take;
            reader.compact_if_drained();
            reader.partial = Some((vec, len));
            let message = reader.finish_large(fd, None)?;
            return copy_or_hand_back(message, buf);
        }
        // A large message that fits: straight from the socket into the caller's buffer.
        buf[..take].copy_from_slice(&reader.buf[reader.pos..reader.pos + take]);
        reader.pos += take;
        reader.compact_if_drained();
        let mut got = take;
        while got < len {
            match retry(|| sys::fd::read(fd, &mut buf[got..len])) {
                Ok(0) => {
                    let e = Error::Protocol(format!(
                        "the stream ended in the middle of a message ({got} of {len} bytes received)"
                    ));
                    reader.broken = Some(e.to_string());
                    return Err(e);
                }
                Ok(n) => got += n,
                Err(e) => {
                    reader.broken = Some(format!("a read failed in the middle of a message: {e}"));
                    return Err(e);
                }
            }
        }
        Ok(len)
    }

    /// Whether a message (or the end of the stream) is ready to be received, without
    /// waiting. Python's `poll()`.
    ///
    /// ```
    /// let (a, b) = multiproc::pipe(true)?;
    /// assert!(!b.poll()?);
    /// a.send(&1u8)?;
    /// # b.poll_timeout(std::time::Duration::from_secs(30))?;
    /// assert!(b.poll()?);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn poll(&self) -> Result<bool> {
        self.poll_deadline(crate::deadline::after(Duration::ZERO))
    }

    /// Whether a message (or the end of the stream) is ready to be received, waiting up
    /// to `timeout` for one: `false` when time ran out (a question, not a failure; pass
    /// `Duration::MAX` to wait without limit). Python's `poll(timeout)`.
    ///
    /// ```
    /// use std::time::Duration;
    /// let (a, b) = multiproc::pipe(true)?;
    /// assert!(!b.poll_timeout(Duration::from_millis(10))?);
    /// a.send(&1u8)?;
    /// assert!(b.poll_timeout(Duration::from_secs(30))?);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn poll_timeout(&self, timeout: Duration) -> Result<bool> {
        self.poll_deadline(crate::deadline::after(timeout))
    }

    fn poll_deadline(&self, deadline: Option<Instant>) -> Result<bool> {
        self.check_readable()?;
        if self.has_buffered_data() {
            return Ok(true);
        }
        wait_fd(self.fd.as_fd(), PollFlags::IN, deadline)
    }

    fn has_buffered_data(&self) -> bool {
        match self.reader.try_lock() {
            Ok(r) => r.pos < r.buf.len() || r.partial.is_some() || r.broken.is_some(),
            Err(_) => false,
        }
    }

    fn check_writable(&self) -> Result<()> {
        if self.writable {
            Ok(())
        } else {
            Err(Error::InvalidArgument("this connection is read-only".into()))
        }
    }

    fn check_readable(&self) -> Result<()> {
        if self.readable {
            Ok(())
        } else {
            Err(Error::InvalidArgument("this connection is write-only".into()))
        }
    }

    /// Receives one frame of at most `limit` bytes and gives its payload to `f`.
    fn with_frame<R>(
        &self,
        limit: u64,
        deadline: Option<Instant>,
        f: impl FnOnce(Payload<'_>) -> R,
    ) -> Result<R> {
        self.check_readable()?;
        let mut guard = lock(&self.reader);
        let reader = &mut *guard;
        if let Some(why) = &reader.broken {
            return Err(Error::Protocol(why.clone()));
        }
        let fd = self.fd.as_fd();
        if reader.partial.is_some() {
            let vec = reader.finish_large(fd, deadline)?;
            return Ok(f(Payload::Owned(vec)));
        }
        let (header, len) = reader.begin_frame(fd, limit, deadline)?;
        let total = header + len;
        if total <= READ_BUFFER {
            reader.fill(fd, total, deadline)?;
            let start = reader.pos + header;
            reader.pos += total;
            let out = f(Payload::Borrowed(&reader.buf[start..start + len]));
            reader.compact_if_drained();
            Ok(out)
        } else {
            reader.pos += header;
            let mut vec = Vec::with_capacity(len.min(PREALLOCATE_AT_MOST));
            advise_huge_pages(&mut vec);
            let take = (reader.buf.len() - reader.pos).min(len);
            vec.extend_from_slice(&reader.buf[reader.pos..reader.pos + take]);
            reader.pos += take;
            reader.compact_if_drained();
            reader.partial = Some((vec, len));
            let vec = reader.finish_large(fd, deadline)?;
            Ok(f(Payload::Owned(vec)))
        }
    }
}

impl Reader {
    /// Reads the next frame's header and checks its length against `limit`; a bad header
    /// breaks the stream. Returns (header size, payload length).
    fn begin_frame(
        &mut self,
        fd: BorrowedFd<'_>,
        limit: u64,
        deadline: Option<Instant>,
    ) -> Result<(usize, usize)> {
        let result = self.read_header(fd, deadline).and_then(|(header, len)| {
            if len > limit {
                return Err(Error::MessageTooLong { len, limit });
            }
            let len = usize::try_from(len)
                .map_err(|_| Error::MessageTooLong { len, limit: usize::MAX as u64 })?;
            Ok((header, len))
        });
        match result {
            Err(e @ (Error::Timeout(_) | Error::Eof | Error::Io(_))) => Err(e),
            Err(e) => {
                self.broken = Some(e.to_string());
                Err(e)
            }
            ok => ok,
        }
    }

    /// Ensures `buf[pos..]` holds a frame header and returns (header size, payload length).
    fn read_header(
        &mut self,
        fd: BorrowedFd<'_>,
        deadline: Option<Instant>,
    ) -> Result<(usize, u64)> {
        self.fill(fd, 4, deadline)?;
        let short =
            i32::from_be_bytes(self.buf[self.pos..self.pos + 4].try_into().unwrap_or([0; 4]));
        match short {
            n if n >= 0 => Ok((4, n as u64)),
            -1 => {
                self.fill(fd, 12, deadline)?;
                let long = u64::from_be_bytes(
                    self.buf[self.pos + 4..self.pos + 12].try_into().unwrap_or([0; 8]),
                );
                if long > PROTOCOL_MAX {
                    return Err(Error::MessageTooLong { len: long, limit: PROTOCOL_MAX });
                }
                Ok((12, long))
            }
            n => Err(Error::Protocol(format!("invalid frame length {n}"))),
        }
    }

    /// Reads until `buf[pos..]` holds at least `want` (≤ READ_BUFFER) bytes.
    fn fill(&mut self, fd: BorrowedFd<'_>, want: usize, deadline: Option<Instant>) -> Result<()> {
        if self.buf.capacity() < READ_BUFFER {
            self.buf.reserve_exact(READ_BUFFER - self.buf.len());
        }
        while self.buf.len() - self.pos < want {
            if self.pos + want > self.buf.capacity() {
                self.buf.drain(..self.pos);
                self.pos = 0;
            }
            let started = Instant::now();
            let spun = self.spin.spin(fd, deadline);
            if !spun {
                if let Some(deadline) = deadline {
                    wait_readable_until(fd, deadline)?;
                }
            }
            let room = self.buf.capacity() - self.buf.len();
            let n = retry(|| sys::fd::read_spare(fd, &mut self.buf))?;
            if !spun {
                self.spin.blocked_for(started.elapsed());
            }
            debug_assert!(n <= room);
            if n == 0 {
                let have = self.buf.len() - self.pos;
                if have == 0 {
                    return Err(Error::Eof);
                }
                let e = Error::Protocol(format!(
                    "the stream ended in the middle of a message ({have} bytes of a frame received)"
                ));
                self.broken = Some(e.to_string());
                return Err(e);
            }
        }
        Ok(())
    }

    fn compact_if_drained(&mut self) {
        if self.pos == self.buf.len() {
            self.buf.clear();
            self.pos = 0;
        }
    }

    /// Completes the large frame in `partial`, reading straight into its allocation.
    fn finish_large(&mut self, fd: BorrowedFd<'_>, deadline: Option<Instant>) -> Result<Vec<u8>> {
        let (mut vec, len) = self.partial.take().unwrap_or_default();
        while vec.len() < len {
            if let Some(deadline) = deadline {
                if let Err(e) = wait_readable_until(fd, deadline) {
                    self.partial = Some((vec, len));
                    return Err(e);
                }
            }
            if vec.len() == vec.capacity() {
                let grow = vec.capacity().max(READ_BUFFER).min(len - vec.len());
                vec.reserve_exact(grow);
                advise_huge_pages(&mut vec);
            }
            let result = retry(|| sys::fd::read_spare(fd, &mut vec));
            match result {
                Ok(0) => {
                    let e = Error::Protocol(format!(
                        "the stream ended in the middle of a message ({} of {len} bytes received)",
                        vec.len()
                    ));
                    self.broken = Some(e.to_string());
                    return Err(e);
                }
                Ok(_) => {
                    if vec.len() > len {
                        // The read ran past this frame: the rest starts the next one.
                        self.buf = vec.split_off(len);
                        self.pos = 0;
                    }
                }
                Err(e) => {
                    self.partial = Some((vec, len));
                    return Err(e);
                }
            }
        }
        Ok(vec)
    }
}

/// `Ok(len)` after copying `message` into `buf`, or the message back if it does not fit.
fn copy_or_hand_back(message: Vec<u8>, buf: &mut [u8]) -> Result<usize> {
    if message.len() <= buf.len() {
        buf[..message.len()].copy_from_slice(&message);
        Ok(message.len())
    } else {
        Err(Error::BufferTooShort(message))
    }
}

fn advise_huge_pages(vec: &mut Vec<u8>) {
    if vec.capacity() >= 4 << 20 {
        crate::sys::mem::advise_huge_pages(vec);
    }
}

fn long_header(len: usize) -> [u8; 12] {
    let mut header = [0u8; 12];
    header[..4].copy_from_slice(&(-1i32).to_be_bytes());
    header[4..].copy_from_slice(&(len as u64).to_be_bytes());
    header
}

/// Writes one frame holding `payload`.
pub(crate) fn send_frame(
    fd: BorrowedFd<'_>,
    payload: &[u8],
    deadline: Option<Instant>,
) -> Result<()> {
    if payload.len() <= i32::MAX as usize {
        let header = (payload.len() as i32).to_be_bytes();
        write_all(fd, &header, payload, deadline)
    } else {
        let header = long_header(payload.len());
        write_all(fd, &header, payload, deadline)
    }
}

/// Writes all of `first` then all of `second`, resuming after partial writes.
fn write_all(
    fd: BorrowedFd<'_>,
    mut first: &[u8],
    mut second: &[u8],
    deadline: Option<Instant>,
) -> Result<()> {
    while !first.is_empty() || !second.is_empty() {
        if let Some(deadline) = deadline {
            if !wait_fd(fd, PollFlags::OUT, Some(deadline))? {
                return Err(Error::Timeout(Duration::ZERO));
            }
        }
        let written = if first.is_empty() {
            retry(|| sys::fd::write(fd, second))
        } else if second.is_empty() {
            retry(|| sys::fd::write(fd, first))
        } else {
            retry(|| sys::fd::writev(fd, &[IoSlice::new(first), IoSlice::new(second)]))
        };
        let mut n = match written {
            Ok(n) => n,
            Err(Error::Io(e)) if is_peer_gone(&e) => return Err(Error::Eof),
            Err(e) => return Err(e),
        };
        let from_first = n.min(first.len());
        first = &first[from_first..];
        n -= from_first;
        second = &second[n..];
    }
    Ok(())
}

fn is_peer_gone(e: &std::io::Error) -> bool {
    matches!(e.kind(), std::io::ErrorKind::BrokenPipe | std::io::ErrorKind::ConnectionReset)
}

/// Retries a system call interrupted by a signal.
fn retry<T>(mut f: impl FnMut() -> std::io::Result<T>) -> Result<T> {
    loop {
        match f() {
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return Err(Error::Eof),
            other => return other.map_err(Error::from),
        }
    }
}

fn wait_readable_until(fd: BorrowedFd<'_>, deadline: Instant) -> Result<()> {
    if wait_fd(fd, PollFlags::IN, Some(deadline))? {
        Ok(())
    } else {
        Err(Error::Timeout(Duration::ZERO))
    }
}

/// Waits until `fd` is ready for `flags` (or hung up), or until `deadline`.
pub(crate) fn wait_fd(
    fd: BorrowedFd<'_>,
    flags: PollFlags,
    deadline: Option<Instant>,
) -> Result<bool> {
    let mut fds = [PollFd::from_borrowed_fd(fd, flags)];
    Ok(poll_until(&mut fds, deadline)? > 0)
}

/// `poll(2)` with a deadline, resumed after signals.
pub(crate) fn poll_until(fds: &mut [PollFd<'_>], deadline: Option<Instant>) -> Result<usize> {
    Ok(sys::poll::poll_until(fds, deadline)?)
}

impl AsFd for Connection {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

impl fmt::Debug for Connection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Connection")
            .field("fd", &self.fd.as_raw_fd())
            .field("readable", &self.readable)
            .field("writable", &self.writable)
            .field("codec", &self.codec)
            .finish()
    }
}

// --------------------------------------------------------------------------------------
// Handle passing

#[derive(Serialize, serde::Deserialize)]
struct SentConnection {
    handle: reduction::Handle,
    readable: bool,
    writable: bool,
    codec: Codec,
    /// Bytes this end had read but not yet consumed; they belong to the receiver now.
    pending: Vec<u8>,
}

impl Serialize for Connection {
    fn serialize<S: serde::Serializer>(
        &self,
        serializer: S,
    ) -> std::result::Result<S::Ok, S::Error> {
        use serde::ser::Error as _;
        let reader = lock(&self.reader);
        if reader.partial.is_some() {
            return Err(S::Error::custom(
                "cannot send a Connection in the middle of receiving a large message",
            ));
        }
        let handle =
            reduction::export_socket(self.fd.as_fd(), "Connection").map_err(S::Error::custom)?;
        SentConnection {
            handle,
            readable: self.readable,
            writable: self.writable,
            codec: self.codec,
            pending: reader.buf[reader.pos..].to_vec(),
        }
        .serialize(serializer)
    }
}

impl<'de> serde::Deserialize<'de> for Connection {
    fn deserialize<D: serde::Deserializer<'de>>(
        deserializer: D,
    ) -> std::result::Result<Self, D::Error> {
        let sent = SentConnection::deserialize(deserializer)?;
        let fd =
            reduction::import_socket(sent.handle, "Connection").map_err(crate::codec::de_error)?;
        let mut conn = Connection::with_direction(fd, sent.readable, sent.writable);
        conn.codec = sent.codec;
        if !sent.pending.is_empty() {
            let reader = get_mut(&mut conn.reader);
            reader.buf = sent.pending;
        }
        Ok(conn)
    }
}

// --------------------------------------------------------------------------------------
// wait()

/// Something [`wait`] can wait for: a [`Connection`] (readable or closed), a
/// [`Process`](crate::Process) (ended), or any readable descriptor.
pub trait Waitable {
    /// The descriptor that becomes readable when the object is ready; `None` for an
    /// object that can never become ready (a process that was not started).
    fn wait_fd(&self) -> Option<BorrowedFd<'_>>;

    /// Whether the object is ready without looking at the descriptor (for example, a
    /// connection that already buffered a message).
    fn ready_now(&self) -> bool {
        false
    }
}

impl Waitable for Connection {
    fn wait_fd(&self) -> Option<BorrowedFd<'_>> {
        Some(self.fd.as_fd())
    }

    fn ready_now(&self) -> bool {
        self.has_buffered_data()
    }
}

impl Waitable for BorrowedFd<'_> {
    fn wait_fd(&self) -> Option<BorrowedFd<'_>> {
        Some(*self)
    }
}

/// Waits until at least one of `objects` is ready and returns the indices of the ready
/// ones (never empty). Python's `multiprocessing.connection.wait(object_list)`.
///
/// ```
/// use multiproc::connection::wait;
///
/// let (a1, b1) = multiproc::pipe(true)?;
/// let (a2, b2) = multiproc::pipe(true)?;
/// b2.send(&"ready")?;
/// assert_eq!(wait(&[&a1, &a2])?, vec![1]);
/// # drop(b1);
/// # Ok::<(), multiproc::Error>(())
/// ```
pub fn wait(objects: &[&dyn Waitable]) -> Result<Vec<usize>> {
    wait_deadline(objects, None, Duration::MAX)
}

/// Like [`wait`], waiting at most `timeout`: [`Error::Timeout`] when none became ready
/// (where Python's `wait(object_list, timeout)` returns an empty list).
///
/// ```
/// use multiproc::{connection::wait_timeout, Error};
/// use std::time::Duration;
///
/// let (a, b) = multiproc::pipe(true)?;
/// assert!(matches!(wait_timeout(&[&a], Duration::from_millis(10)), Err(Error::Timeout(_))));
/// b.send(&1u8)?;
/// assert_eq!(wait_timeout(&[&a], Duration::from_secs(30))?, vec![0]);
/// # Ok::<(), multiproc::Error>(())
/// ```
pub fn wait_timeout(objects: &[&dyn Waitable], timeout: Duration) -> Result<Vec<usize>> {
    wait_deadline(objects, crate::deadline::after(timeout), timeout)
}

/// Like [`wait`] without waiting: the indices of the objects ready now, or
/// [`Error::Timeout`] when there is none.
///
/// ```
/// use multiproc::{connection::try_wait, Error};
///
/// let (a, _b) = multiproc::pipe(true)?;
/// assert!(matches!(try_wait(&[&a]), Err(Error::Timeout(_))));
/// # Ok::<(), multiproc::Error>(())
/// ```
pub fn try_wait(objects: &[&dyn Waitable]) -> Result<Vec<usize>> {
    wait_timeout(objects, Duration::ZERO)
}

fn wait_deadline(
    objects: &[&dyn Waitable],
    deadline: Option<Instant>,
    timeout: Duration,
) -> Result<Vec<usize>> {
    let ready: Vec<usize> = (0..objects.len()).filter(|&i| objects[i].ready_now()).collect();
    if !ready.is_empty() {
        return Ok(ready);
    }
    let (indices, mut fds): (Vec<usize>, Vec<PollFd<'_>>) = objects
        .iter()
        .enumerate()
        .filter_map(|(i, o)| Some((i, PollFd::from_borrowed_fd(o.wait_fd()?, PollFlags::IN))))
        .unzip();
    poll_until(&mut fds, deadline)?;
    let ready: Vec<usize> = indices
        .into_iter()
        .zip(&fds)
        .filter(|(_, p)| !p.revents().is_empty())
        .map(|(i, _)| i)
        .collect();
    if ready.is_empty() {
        return Err(Error::Timeout(timeout));
    }
    Ok(ready)
}
