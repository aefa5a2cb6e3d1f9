//! [`Listener`] and [`Client`]: connections between unrelated processes over TCP or Unix
//! sockets, with CPython's framing and CPython's authkey handshake
//! (`multiprocessing.connection.Listener` / `Client`).
//!
//! A CPython program can be on either side:
//!
//! ```python
//! from multiprocessing.connection import Client
//! conn = Client(("127.0.0.1", 6000), authkey=b"secret password")
//! conn.send_bytes(b"hello from Python")
//! ```
//!
//! ```
//! use multiproc::connection::{Client, Listener};
//!
//! let listener = Listener::bind("127.0.0.1:0", Some(b"secret password"))?;
//! let address = listener.address().to_string(); // the real port, not 0
//! let client = std::thread::spawn(move || -> multiproc::Result<()> {
//!     let conn = Client::connect(&address, Some(b"secret password"))?;
//!     conn.send_bytes(b"hello from Rust")?;
//!     Ok(())
//! });
//! let conn = listener.accept()?;
//! assert_eq!(conn.recv_bytes()?, b"hello from Rust");
//! client.join().unwrap()?;
//! # Ok::<(), multiproc::Error>(())
//! ```

use std::fmt;
use std::io;
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::auth::{self, AuthDialect};
use super::{poll_until, wait_fd, Connection, Waitable};
use crate::error::{Error, Result};
use crate::sync_util::lock;
use crate::sys::poll::{PollFd, PollFlags};
use crate::sys::socket::{self, Family, SocketName, UnixAddr};

/// How long [`Listener::accept`] waits for a client to complete the authentication
/// handshake, unless changed with [`Listener::with_handshake_timeout`].
const DEFAULT_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// How many handshakes a [`Listener`] runs at once unless changed with
/// [`Listener::with_max_pending`].
const DEFAULT_MAX_PENDING: usize = 64;
/// Pending connections the kernel queues for a listener (CPython uses 1; a bigger queue
/// costs nothing and spares clients that arrive together a retry).
const BACKLOG: i32 = 128;

// --------------------------------------------------------------------------------------
// Address

/// Where a [`Listener`] listens and a [`Client`] connects: a TCP address, a Unix socket
/// path, or a Linux abstract socket name.
///
/// Parsed from a string ([`FromStr`]):
///
/// | string | address |
/// | --- | --- |
/// | `127.0.0.1:6000`, `[::1]:6000` | TCP ([`Address::Tcp`]) |
/// | `localhost:6000` | TCP, the host name resolved now (IPv4 preferred, as CPython's `AF_INET`) |
/// | `/tmp/app.sock`, `./app.sock` | Unix socket path: any string containing `/` ([`Address::Unix`]) |
/// | `@app`, `\0app` | Linux abstract socket `\0app` ([`Address::Abstract`]) |
/// | `@` | (to bind only) an abstract name chosen by the kernel |
///
/// [`Display`](fmt::Display) writes the same syntax (`@name` for abstract names), so the
/// text of an address can be parsed back. A CPython peer spells the same addresses
/// `("127.0.0.1", 6000)`, `"/tmp/app.sock"` and `"\0app"`.
///
/// ```
/// use multiproc::connection::Address;
/// use std::path::PathBuf;
///
/// let tcp: Address = "127.0.0.1:6000".parse()?;
/// assert_eq!(tcp, Address::Tcp("127.0.0.1:6000".parse().unwrap()));
/// assert_eq!(tcp.port(), Some(6000));
/// let unix: Address = "/tmp/app.sock".parse()?;
/// assert_eq!(unix, Address::Unix(PathBuf::from("/tmp/app.sock")));
/// let abstract_: Address = "\0app".parse()?;
/// assert_eq!(abstract_, Address::Abstract(b"app".to_vec()));
/// assert_eq!(abstract_.to_string(), "@app");
/// assert!("no port here".parse::<Address>().is_err());
/// # Ok::<(), multiproc::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Address {
    /// A TCP address (IPv4 or IPv6).
    ///
    /// ```
    /// use multiproc::connection::Address;
    /// let a: Address = "[::1]:5000".parse()?;
    /// assert!(matches!(a, Address::Tcp(s) if s.is_ipv6() && s.port() == 5000));
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    Tcp(SocketAddr),
    /// A Unix socket in the file system.
    ///
    /// ```
    /// use multiproc::connection::Address;
    /// let a: Address = "./relative.sock".parse()?;
    /// assert_eq!(a, Address::Unix("./relative.sock".into()));
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    Unix(PathBuf),
    /// A Linux abstract Unix socket: the name without its leading NUL byte. An empty name
    /// asks [`Listener::bind`] to let the kernel choose a free one.
    ///
    /// ```
    /// use multiproc::connection::Address;
    /// let a: Address = "@my-service".parse()?;
    /// assert_eq!(a, Address::Abstract(b"my-service".to_vec()));
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    Abstract(Vec<u8>),
}

impl Address {
    /// The TCP port, for a TCP address.
    ///
    /// ```
    /// use multiproc::connection::Listener;
    /// let listener = Listener::bind("127.0.0.1:0", None)?;
    /// assert_ne!(listener.address().port(), Some(0)); // the port the system chose
    /// assert_eq!("@name".parse::<multiproc::connection::Address>()?.port(), None);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn port(&self) -> Option<u16> {
        match self {
            Address::Tcp(a) => Some(a.port()),
            _ => None,
        }
    }

    fn unix_socket_address(&self) -> Result<UnixAddr> {
        let result = match self {
            Address::Unix(path) => UnixAddr::path(path.as_path()),
            Address::Abstract(name) if name.is_empty() => Ok(UnixAddr::unnamed()),
            Address::Abstract(name) => UnixAddr::abstract_name(name),
            Address::Tcp(_) => Err(socket::family_not_supported()),
        };
        result.map_err(|e| {
            Error::InvalidArgument(format!(
                "{self} is not a valid Unix socket address ({e}): at most 107 bytes, without NUL bytes in a path",
            ))
        })
    }

    fn from_socket_name(name: SocketName) -> Address {
        match name {
            SocketName::Inet(a) => Address::Tcp(a),
            SocketName::Path(path) => Address::Unix(path),
            SocketName::Abstract(name) => Address::Abstract(name),
        }
    }
}

impl FromStr for Address {
    type Err = Error;

    /// Parses an address; see [`Address`] for the syntax.
    ///
    /// ```
    /// use multiproc::connection::Address;
    /// let a: Address = "localhost:6000".parse()?;
    /// assert!(matches!(a, Address::Tcp(s) if s.ip().is_loopback()));
    /// assert!("".parse::<Address>().is_err());
    /// assert!("host:notaport".parse::<Address>().is_err());
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    fn from_str(s: &str) -> Result<Address> {
        let invalid = |why: &str| Error::InvalidArgument(format!("invalid address {s:?}: {why}"));
        if s.is_empty() {
            return Err(invalid("the address is empty"));
        }
        let address = if let Some(name) = s.strip_prefix('\0').or_else(|| s.strip_prefix('@')) {
            Address::Abstract(name.as_bytes().to_vec())
        } else if s.contains('/') {
            Address::Unix(PathBuf::from(s))
        } else if let Ok(tcp) = s.parse::<SocketAddr>() {
            Address::Tcp(tcp)
        } else if s.starts_with('[') {
            return Err(invalid("expected [IPv6]:PORT"));
        } else if let Some((host, port)) = s.rsplit_once(':') {
            if host.contains(':') {
                return Err(invalid("write an IPv6 address in brackets: [::1]:PORT"));
            }
            if host.is_empty() {
                return Err(invalid("the host is missing: HOST:PORT"));
            }
            let port: u16 =
                port.parse().map_err(|_| invalid("the port must be a number from 0 to 65535"))?;
            let resolved: Vec<SocketAddr> = (host, port)
                .to_socket_addrs()
                .map_err(|e| invalid(&format!("cannot resolve host {host:?}: {e}")))?
                .collect();
            let chosen = resolved
                .iter()
                .find(|a| a.is_ipv4())
                .or_else(|| resolved.first())
                .copied()
                .ok_or_else(|| invalid(&format!("host {host:?} has no address")))?;
            Address::Tcp(chosen)
        } else {
            return Err(invalid(
                "expected HOST:PORT, a socket path containing '/' (./name for a relative one), \
                 or an abstract socket name starting with '@' or '\\0'",
            ));
        };
        if !matches!(address, Address::Tcp(_)) {
            address.unix_socket_address()?;
        }
        Ok(address)
    }
}

impl fmt::Display for Address {
    /// Writes the address in the syntax [`FromStr`] reads.
    ///
    /// ```
    /// use multiproc::connection::Address;
    /// for text in ["127.0.0.1:80", "[::1]:80", "/run/x.sock", "./x.sock", "@x"] {
    ///     assert_eq!(text.parse::<Address>()?.to_string(), text);
    /// }
    /// assert_eq!(Address::Unix("x.sock".into()).to_string(), "./x.sock");
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Address::Tcp(a) => write!(f, "{a}"),
            Address::Unix(p) => {
                let shown = p.display().to_string();
                if shown.contains('/') {
                    f.write_str(&shown)
                } else {
                    write!(f, "./{shown}")
                }
            }
            Address::Abstract(name) => write!(f, "@{}", String::from_utf8_lossy(name)),
        }
    }
}

impl From<SocketAddr> for Address {
    /// A TCP address.
    ///
    /// ```
    /// use multiproc::connection::Address;
    /// let a = Address::from(std::net::SocketAddr::from(([127, 0, 0, 1], 80)));
    /// assert_eq!(a.to_string(), "127.0.0.1:80");
    /// ```
    fn from(a: SocketAddr) -> Address {
        Address::Tcp(a)
    }
}

// --------------------------------------------------------------------------------------
// Listener

/// A socket that accepts connections from [`Client`]s (ours or CPython's
/// `multiprocessing.connection.Client`), Python's `multiprocessing.connection.Listener`.
///
/// With an authkey, every accepted connection first completes CPython's mutual HMAC
/// handshake; a client with another key, without a key, or that does not finish the
/// handshake within the [handshake timeout](Listener::with_handshake_timeout) makes
/// [`accept`](Listener::accept) return [`Error::Authentication`], and the listener goes on
/// accepting other clients.
///
/// Handshakes run side by side: [`accept`](Listener::accept) takes every client that
/// connects, sends each its challenge at once, and returns whichever client completes its
/// handshake first, each against its own deadline. A client that connects and then says
/// nothing holds up no one but itself (CPython's `Listener.accept()`, which runs the
/// handshake of one client at a time, waits for it). At most
/// [`max_pending`](Listener::with_max_pending) handshakes (64 by default) are under way at
/// once; a connection beyond that closes the oldest pending one, so a flood of silent
/// connections cannot pile up descriptors, while a real client, which answers within a
/// round trip, is rarely the oldest. Handshakes advance while a thread is in `accept`,
/// so serve each accepted connection on another thread (or quickly) and call `accept`
/// again, as a server does anyway:
///
/// ```
/// use multiproc::connection::{Client, Listener};
/// use std::net::TcpStream;
///
/// let listener = Listener::bind("127.0.0.1:0", Some(b"key"))?;
/// let address = listener.address().to_string();
/// // A peer that connects and never answers its challenge...
/// let _silent = TcpStream::connect(&address)?;
/// // ...does not stop the clients behind it.
/// let server = std::thread::spawn(move || -> multiproc::Result<()> {
///     for _ in 0..2 {
///         let conn = listener.accept()?;
///         std::thread::spawn(move || conn.send(&"served"));
///     }
///     Ok(())
/// });
/// for _ in 0..2 {
///     let conn = Client::connect(&address, Some(b"key"))?;
///     assert_eq!(conn.recv::<String>()?, "served");
/// }
/// server.join().unwrap()?;
/// # Ok::<(), multiproc::Error>(())
/// ```
///
/// A Unix-socket listener removes its socket file when it is dropped (unless another
/// socket has replaced it meanwhile). TCP listeners set `SO_REUSEADDR`; accepted TCP
/// connections set `TCP_NODELAY`.
///
/// ```
/// use multiproc::connection::{Client, Listener};
/// use std::time::Duration;
///
/// let name = format!("@multiproc-doc-{}", std::process::id());
/// let listener = Listener::bind(&name, Some(b"key"))?;
/// // The client's handshake needs the listener to be in `accept`: connect from a thread.
/// let client = std::thread::spawn(move || Client::connect(&name, Some(b"key")));
/// let conn = listener.accept_timeout(Duration::from_secs(30))?;
/// let client = client.join().unwrap()?;
/// client.send(&"hi")?;
/// assert_eq!(conn.recv::<String>()?, "hi");
/// # Ok::<(), multiproc::Error>(())
/// ```
pub struct Listener {
    fd: OwnedFd,
    address: Address,
    authkey: Option<Vec<u8>>,
    dialect: AuthDialect,
    handshake_timeout: Option<Duration>,
    max_pending: usize,
    /// Connections accepted whose handshake is under way, oldest first.
    pending: Mutex<Vec<Pending>>,
    last_accepted: Mutex<Option<Address>>,
    socket_file: Option<SocketFile>,
}

/// A connection whose authentication handshake is under way.
struct Pending {
    fd: OwnedFd,
    peer: Option<Address>,
    accepted: Instant,
    /// `None`: no handshake timeout.
    deadline: Option<Instant>,
    handshake: auth::ServerHandshake,
    /// The events the handshake waits for.
    events: PollFlags,
}

/// The socket file a Unix listener created, identified so that drop removes only it.
struct SocketFile {
    path: PathBuf,
    dev: u64,
    ino: u64,
}

impl Listener {
    /// Binds a listening socket to `address` (see [`Address`] for the syntax; port `0` and
    /// the abstract name `@` let the system choose). With `Some(authkey)`, every connection
    /// must pass CPython's authentication handshake with the same key; an empty key is a
    /// key too (HMAC over an empty key), unlike CPython's `Listener`, which treats `b""`
    /// as no key.
    ///
    /// Binding a Unix path that already exists fails (as in CPython): remove a stale
    /// socket file first.
    ///
    /// ```
    /// use multiproc::connection::{Address, Listener};
    /// let listener = Listener::bind("127.0.0.1:0", None)?;
    /// assert!(matches!(listener.address(), Address::Tcp(a) if a.port() != 0));
    /// assert!(matches!(Listener::bind("not an address", None), Err(multiproc::Error::InvalidArgument(_))));
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn bind(address: &str, authkey: Option<&[u8]>) -> Result<Listener> {
        let address: Address = address.parse()?;
        let (fd, bound) = match &address {
            Address::Tcp(tcp) => {
                let family = if tcp.is_ipv4() { Family::Inet } else { Family::Inet6 };
                let fd = socket::stream_socket(family, true)?;
                socket::set_reuse_address(&fd)?;
                socket::bind_inet(&fd, tcp).map_err(|e| context(e, "cannot bind", &address))?;
                let bound = match socket::local_name(&fd) {
                    Some(SocketName::Inet(a)) => Address::Tcp(a),
                    _ => address.clone(),
                };
                (fd, bound)
            }
            Address::Unix(_) | Address::Abstract(_) => {
                let unix = address.unix_socket_address()?;
                let fd = socket::stream_socket(Family::Unix, true)?;
                socket::bind_unix(&fd, &unix).map_err(|e| context(e, "cannot bind", &address))?;
                let bound = match &address {
                    // The kernel chose a name: ask which.
                    Address::Abstract(name) if name.is_empty() => socket::local_name(&fd)
                        .map(Address::from_socket_name)
                        .unwrap_or_else(|| address.clone()),
                    _ => address.clone(),
                };
                (fd, bound)
            }
        };
        let socket_file = match &bound {
            Address::Unix(path) => SocketFile::of(path),
            _ => None,
        };
        // From here on, dropping `listener` removes the socket file if listen fails.
        let listener = Listener {
            fd,
            address: bound,
            authkey: authkey.map(<[u8]>::to_vec),
            dialect: AuthDialect::default(),
            handshake_timeout: Some(DEFAULT_HANDSHAKE_TIMEOUT),
            max_pending: DEFAULT_MAX_PENDING,
            pending: Mutex::new(Vec::new()),
            last_accepted: Mutex::new(None),
            socket_file,
        };
        socket::listen(&listener.fd, BACKLOG)
            .map_err(|e| context(e, "cannot listen on", &listener.address))?;
        Ok(listener)
    }

    /// This listener, sending challenges of `dialect` to its clients
    /// ([`AuthDialect::Modern`] by default).
    ///
    /// ```
    /// use multiproc::connection::{AuthDialect, Listener};
    /// let l = Listener::bind("127.0.0.1:0", Some(b"k"))?.with_dialect(AuthDialect::Legacy);
    /// assert_eq!(l.dialect(), AuthDialect::Legacy);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn with_dialect(mut self, dialect: AuthDialect) -> Listener {
        self.dialect = dialect;
        self
    }

    /// The dialect of the challenges this listener sends.
    ///
    /// ```
    /// use multiproc::connection::{AuthDialect, Listener};
    /// assert_eq!(Listener::bind("127.0.0.1:0", None)?.dialect(), AuthDialect::Modern);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn dialect(&self) -> AuthDialect {
        self.dialect
    }

    /// This listener, giving each client `timeout` to complete the authentication handshake
    /// (10 seconds by default; `None` waits forever, as CPython does). A client that takes
    /// longer makes [`accept`](Self::accept) fail with [`Error::Authentication`].
    ///
    /// ```
    /// use multiproc::connection::Listener;
    /// use std::time::Duration;
    /// let l = Listener::bind("127.0.0.1:0", Some(b"k"))?
    ///     .with_handshake_timeout(Some(Duration::from_secs(2)));
    /// assert_eq!(l.handshake_timeout(), Some(Duration::from_secs(2)));
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn with_handshake_timeout(mut self, timeout: Option<Duration>) -> Listener {
        self.handshake_timeout = timeout;
        self
    }

    /// How long a client may take to complete the authentication handshake.
    ///
    /// ```
    /// use multiproc::connection::Listener;
    /// use std::time::Duration;
    /// let l = Listener::bind("127.0.0.1:0", None)?;
    /// assert_eq!(l.handshake_timeout(), Some(Duration::from_secs(10)));
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn handshake_timeout(&self) -> Option<Duration> {
        self.handshake_timeout
    }

    /// This listener, running at most `handshakes` authentication handshakes at once (64 by
    /// default; `0` counts as `1`). When one more client connects, the oldest pending
    /// handshake is given up: its connection is closed and [`accept`](Self::accept) reports
    /// it as [`Error::Authentication`]. The oldest goes, not the newest, because a silent
    /// peer is what grows old there: refusing newcomers would let a few silent connections
    /// keep every real client out until their timeouts.
    ///
    /// The bound holds per call of `accept` in progress: threads that accept on the same
    /// listener at once each run up to `handshakes`.
    ///
    /// ```
    /// use multiproc::{connection::{Client, Listener}, Error};
    ///
    /// let address = format!("@multiproc-doc-pending-{}", std::process::id());
    /// let listener = Listener::bind(&address, Some(b"key"))?.with_max_pending(1);
    /// assert_eq!(listener.max_pending(), 1);
    /// // Without a key, a client does not take part in the handshake: it stays silent.
    /// // (Unix sockets queue connections in the order they are made.)
    /// let _silent = Client::connect(&address, None)?;
    /// let client = std::thread::spawn(move || Client::connect(&address, Some(b"key")));
    /// // The silent connection gives way to the client...
    /// let first = listener.accept();
    /// assert!(matches!(first, Err(Error::Authentication(ref m)) if m.contains("longest")), "{first:?}");
    /// // ...which is then accepted.
    /// let conn = listener.accept()?;
    /// client.join().unwrap()?.send(&1u8)?;
    /// assert_eq!(conn.recv::<u8>()?, 1);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn with_max_pending(mut self, handshakes: usize) -> Listener {
        self.max_pending = handshakes.max(1);
        self
    }

    /// How many authentication handshakes run at once at most.
    ///
    /// ```
    /// use multiproc::connection::Listener;
    /// assert_eq!(Listener::bind("127.0.0.1:0", Some(b"k"))?.max_pending(), 64);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn max_pending(&self) -> usize {
        self.max_pending
    }

    /// Waits for a client and returns the connection to it, after the authentication
    /// handshake when the listener has an authkey (Python's `Listener.accept()`).
    ///
    /// A client that fails the handshake gives [`Error::Authentication`] (its connection
    /// is closed); call `accept` again for the next client. The handshakes of all clients
    /// that have connected run side by side (see [`Listener`]): the first to complete its
    /// handshake is returned, the others go on at the next call.
    ///
    /// ```
    /// use multiproc::connection::{Client, Listener};
    /// let listener = Listener::bind("127.0.0.1:0", Some(b"right"))?;
    /// let address = listener.address().to_string();
    /// let clients = std::thread::spawn(move || {
    ///     let wrong = Client::connect(&address, Some(b"wrong"));
    ///     let right = Client::connect(&address, Some(b"right"));
    ///     (wrong.is_err(), right.map(|c| c.send_bytes(b"ok")))
    /// });
    /// assert!(matches!(listener.accept(), Err(multiproc::Error::Authentication(_))));
    /// let conn = listener.accept()?;
    /// assert_eq!(conn.recv_bytes()?, b"ok");
    /// let (wrong_failed, right_sent) = clients.join().unwrap();
    /// assert!(wrong_failed);
    /// right_sent??;
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn accept(&self) -> Result<Connection> {
        self.accept_deadline(None)
    }

    /// Like [`accept`](Self::accept), but fails with [`Error::Timeout`] when no client
    /// connects and completes (or fails) its handshake within `timeout`. Handshakes still
    /// under way then go on at the next call, each against its own
    /// [timeout](Self::with_handshake_timeout).
    ///
    /// ```
    /// use multiproc::{connection::Listener, Error};
    /// use std::time::Duration;
    /// let listener = Listener::bind("127.0.0.1:0", None)?;
    /// let r = listener.accept_timeout(Duration::from_millis(10));
    /// assert!(matches!(r, Err(Error::Timeout(_))));
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn accept_timeout(&self, timeout: Duration) -> Result<Connection> {
        // Too far to represent: no deadline at all.
        self.accept_deadline(crate::deadline::after(timeout).map(|d| (d, timeout)))
    }

    /// Like [`accept`](Self::accept) without waiting: [`Error::WouldBlock`] when no client is
    /// ready now. With an authkey, each call advances the handshakes under way, so a loop
    /// of `try_accept` (between other work) accepts every client in turn.
    ///
    /// ```
    /// use multiproc::{connection::{wait, Client, Listener}, Error};
    /// let listener = Listener::bind("127.0.0.1:0", None)?;
    /// assert!(matches!(listener.try_accept(), Err(Error::WouldBlock)));
    /// let client = Client::connect(&listener.address().to_string(), None)?;
    /// wait(&[&listener])?; // a client is waiting to be accepted
    /// let conn = listener.try_accept()?;
    /// client.send(&1u8)?;
    /// assert_eq!(conn.recv::<u8>()?, 1);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn try_accept(&self) -> Result<Connection> {
        self.accept_timeout(Duration::ZERO).map_err(Error::not_waiting)
    }

    fn accept_deadline(&self, deadline: Option<(Instant, Duration)>) -> Result<Connection> {
        let Some(key) = &self.authkey else {
            loop {
                if let Some((fd, peer)) = self.accept_one()? {
                    return Ok(self.deliver(fd, peer));
                }
                if !wait_fd(self.fd.as_fd(), PollFlags::IN, deadline.map(|d| d.0))? {
                    return Err(Error::Timeout(deadline.map_or(Duration::ZERO, |d| d.1)));
                }
            }
        };
        // This call drives the pending handshakes; another thread accepting meanwhile
        // starts from an empty set and keeps its own.
        let mut pending = std::mem::take(&mut *lock(&self.pending));
        let result = self.handshake_until(&mut pending, key, deadline);
        let mut parked = lock(&self.pending);
        parked.append(&mut pending);
        parked.sort_by_key(|p| p.accepted);
        result
    }

    /// Accepts and advances handshakes until one completes or fails, or `deadline` passes.
    fn handshake_until(
        &self,
        pending: &mut Vec<Pending>,
        key: &[u8],
        deadline: Option<(Instant, Duration)>,
    ) -> Result<Connection> {
        let mut ready: Vec<bool> = Vec::new();
        loop {
            let now = Instant::now();
            if let Some(i) = pending.iter().position(|p| p.deadline.is_some_and(|d| d <= now)) {
                let late = pending.remove(i);
                return Err(Error::Authentication(format!(
                    "the client{} did not complete the handshake within {:?}",
                    from(&late.peer),
                    self.handshake_timeout.unwrap_or_default()
                )));
            }
            // Wake for the listener, for any handshake that can go on, or for the first
            // deadline: the caller's or a handshake's.
            let wake = pending.iter().filter_map(|p| p.deadline).chain(deadline.map(|d| d.0)).min();
            {
                let mut fds = Vec::with_capacity(1 + pending.len());
                fds.push(PollFd::from_borrowed_fd(self.fd.as_fd(), PollFlags::IN));
                fds.extend(
                    pending.iter().map(|p| PollFd::from_borrowed_fd(p.fd.as_fd(), p.events)),
                );
                poll_until(&mut fds, wake)?;
                ready.clear();
                ready.extend(fds.iter().map(|f| !f.revents().is_empty()));
            }
            // Oldest first. A ready handshake that has not finished just waits again.
            for i in 0..pending.len() {
                if !ready[i + 1] {
                    continue;
                }
                let p = &mut pending[i];
                match p.handshake.advance(p.fd.as_fd(), key) {
                    auth::Progress::Wait(events) => p.events = events,
                    auth::Progress::Done => {
                        let done = pending.remove(i);
                        return Ok(self.deliver(done.fd, done.peer));
                    }
                    auth::Progress::Failed(e) => {
                        pending.remove(i);
                        return Err(e);
                    }
                }
            }
            if ready[0] {
                while let Some((fd, peer)) = self.accept_one()? {
                    let mut handshake = auth::ServerHandshake::new(self.dialect)?;
                    let events = match handshake.advance(fd.as_fd(), key) {
                        auth::Progress::Wait(events) => events,
                        // Only a very quick client gets this far at once.
                        auth::Progress::Done => return Ok(self.deliver(fd, peer)),
                        auth::Progress::Failed(e) => return Err(e),
                    };
                    let accepted = Instant::now();
                    let deadline = self.handshake_timeout.and_then(|t| accepted.checked_add(t));
                    let evicted = (pending.len() >= self.max_pending).then(|| pending.remove(0));
                    pending.push(Pending { fd, peer, accepted, deadline, handshake, events });
                    if let Some(old) = evicted {
                        return Err(Error::Authentication(format!(
                            "closed the connection{} that waited longest for its handshake, \
                             to make room: this listener runs at most {} at once",
                            from(&old.peer),
                            self.max_pending
                        )));
                    }
                }
            }
            if let Some((at, timeout)) = deadline {
                if Instant::now() >= at {
                    return Err(Error::Timeout(timeout));
                }
            }
        }
    }

    /// Accepts one connection if one is waiting.
    fn accept_one(&self) -> Result<Option<(OwnedFd, Option<Address>)>> {
        // A client that gave up before we accepted it is skipped: `accept` looks for the next.
        let Some((fd, peer)) = socket::accept(&self.fd)? else { return Ok(None) };
        let peer = peer.map(Address::from_socket_name);
        if matches!(peer, Some(Address::Tcp(_))) {
            // Only latency is at stake if this fails.
            let _ = socket::set_nodelay(&fd);
        }
        Ok(Some((fd, peer)))
    }

    /// The connection to a client that is accepted (and authenticated).
    fn deliver(&self, fd: OwnedFd, peer: Option<Address>) -> Connection {
        *lock(&self.last_accepted) = peer;
        Connection::from_fd(fd)
    }

    /// The address the listener is bound to, with the port (or abstract name) the system
    /// chose when asked for port `0` (or `@`). Python's `Listener.address`.
    ///
    /// ```
    /// use multiproc::connection::{Address, Listener};
    /// let listener = Listener::bind("@", None)?; // the kernel picks an abstract name
    /// assert!(matches!(listener.address(), Address::Abstract(name) if !name.is_empty()));
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn address(&self) -> &Address {
        &self.address
    }

    /// The address of the last client accepted, if it has one (a Unix-socket client
    /// usually is unnamed: `None`). Python's `Listener.last_accepted`.
    ///
    /// ```
    /// use multiproc::connection::{Address, Client, Listener};
    /// let listener = Listener::bind("127.0.0.1:0", None)?;
    /// assert_eq!(listener.last_accepted(), None);
    /// let client = Client::connect(&listener.address().to_string(), None)?;
    /// let _conn = listener.accept()?;
    /// assert!(matches!(listener.last_accepted(), Some(Address::Tcp(a)) if a.ip().is_loopback()));
    /// # drop(client);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn last_accepted(&self) -> Option<Address> {
        lock(&self.last_accepted).clone()
    }

    /// Closes the listening socket (and removes a Unix socket file). Connections already
    /// accepted stay open. Dropping the listener does the same.
    ///
    /// ```
    /// use multiproc::connection::Listener;
    /// let dir = std::env::temp_dir().join(format!("multiproc-doc-close-{}", std::process::id()));
    /// std::fs::create_dir_all(&dir)?;
    /// let path = dir.join("s.sock");
    /// let listener = Listener::bind(path.to_str().unwrap(), None)?;
    /// assert!(path.exists());
    /// listener.close();
    /// assert!(!path.exists());
    /// std::fs::remove_dir(&dir)?;
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn close(self) {
        drop(self);
    }
}

/// `" from ADDRESS"`, or nothing for an unnamed peer.
fn from(peer: &Option<Address>) -> String {
    peer.as_ref().map_or_else(String::new, |a| format!(" from {a}"))
}

impl SocketFile {
    fn of(path: &Path) -> Option<SocketFile> {
        let meta = std::fs::symlink_metadata(path).ok()?;
        let absolute = if path.is_absolute() {
            path.to_path_buf()
        } else {
            std::env::current_dir().map_or_else(|_| path.to_path_buf(), |d| d.join(path))
        };
        Some(SocketFile { path: absolute, dev: meta.dev(), ino: meta.ino() })
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        if let Some(file) = &self.socket_file {
            if let Ok(meta) = std::fs::symlink_metadata(&file.path) {
                if meta.dev() == file.dev && meta.ino() == file.ino {
                    let _ = std::fs::remove_file(&file.path);
                }
            }
        }
    }
}

impl AsFd for Listener {
    /// The listening socket, for example to wait on it with `poll(2)`.
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

impl Waitable for Listener {
    /// A listener is ready when a client is waiting to be accepted. With an authkey,
    /// [`accept`](Listener::accept) then still waits for a handshake to complete: that
    /// client's, or one already under way.
    fn wait_fd(&self) -> Option<BorrowedFd<'_>> {
        Some(self.fd.as_fd())
    }
}

impl fmt::Debug for Listener {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Listener")
            .field("address", &self.address)
            .field("authenticated", &self.authkey.is_some())
            .field("dialect", &self.dialect)
            .field("handshake_timeout", &self.handshake_timeout)
            .field("max_pending", &self.max_pending)
            .finish()
    }
}

// --------------------------------------------------------------------------------------
// Client

/// Connects to a [`Listener`] (ours or CPython's `multiprocessing.connection.Listener`),
/// Python's `multiprocessing.connection.Client`.
///
/// [`Client::connect`] and [`Client::connect_timeout`] cover the usual cases; the builder
/// ([`Client::new`]) also chooses the dialect of the challenge the client sends back.
///
/// ```
/// use multiproc::connection::{AuthDialect, Client, Listener};
/// use std::time::Duration;
///
/// let listener = Listener::bind("127.0.0.1:0", Some(b"key"))?;
/// let client = Client::new(&listener.address().to_string(), Some(b"key"))?
///     .with_dialect(AuthDialect::Legacy)
///     .with_timeout(Some(Duration::from_secs(30)));
/// let server = std::thread::spawn(move || listener.accept());
/// let conn = client.open()?;
/// conn.send(&7u32)?;
/// assert_eq!(server.join().unwrap()?.recv::<u32>()?, 7);
/// # Ok::<(), multiproc::Error>(())
/// ```
pub struct Client {
    address: Address,
    authkey: Option<Vec<u8>>,
    dialect: AuthDialect,
    timeout: Option<Duration>,
}

impl Client {
    /// Connects to `address` and, with `Some(authkey)`, runs the authentication handshake
    /// (an empty key is a key too). Waits as long as the listener takes to accept, as
    /// CPython does; a listener that goes away gives an error.
    ///
    /// ```
    /// use multiproc::connection::{Client, Listener};
    /// let listener = Listener::bind("127.0.0.1:0", None)?;
    /// let conn = Client::connect(&listener.address().to_string(), None)?;
    /// listener.accept()?.send_bytes(b"welcome")?;
    /// assert_eq!(conn.recv_bytes()?, b"welcome");
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn connect(address: &str, authkey: Option<&[u8]>) -> Result<Connection> {
        Client::new(address, authkey)?.open()
    }

    /// Like [`connect`](Self::connect), but fails with [`Error::Timeout`] when connecting
    /// and authenticating take longer than `timeout` in all.
    ///
    /// ```
    /// use multiproc::{connection::{Client, Listener}, Error};
    /// use std::time::Duration;
    /// // A listener that never accepts, so the handshake never starts:
    /// let listener = Listener::bind("127.0.0.1:0", Some(b"key"))?;
    /// let r = Client::connect_timeout(&listener.address().to_string(), Some(b"key"),
    ///                                 Duration::from_millis(50));
    /// assert!(matches!(r, Err(Error::Timeout(_))));
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn connect_timeout(
        address: &str,
        authkey: Option<&[u8]>,
        timeout: Duration,
    ) -> Result<Connection> {
        Client::new(address, authkey)?.with_timeout(Some(timeout)).open()
    }

    /// A client for `address` with `authkey`, to be configured and then
    /// [`open`](Self::open)ed. Fails only if `address` does not parse.
    ///
    /// ```
    /// use multiproc::connection::Client;
    /// let client = Client::new("127.0.0.1:6000", Some(b"key"))?;
    /// assert_eq!(client.address().port(), Some(6000));
    /// assert!(Client::new("nonsense", None).is_err());
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn new(address: &str, authkey: Option<&[u8]>) -> Result<Client> {
        Ok(Client {
            address: address.parse()?,
            authkey: authkey.map(<[u8]>::to_vec),
            dialect: AuthDialect::default(),
            timeout: None,
        })
    }

    /// The dialect of the challenge this client sends the listener (the client answers the
    /// listener's challenge in whatever dialect it comes).
    ///
    /// ```
    /// use multiproc::connection::{AuthDialect, Client};
    /// let c = Client::new("127.0.0.1:6000", Some(b"k"))?.with_dialect(AuthDialect::Legacy);
    /// assert_eq!(c.dialect(), AuthDialect::Legacy);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn with_dialect(mut self, dialect: AuthDialect) -> Client {
        self.dialect = dialect;
        self
    }

    /// The dialect of the challenge this client sends.
    ///
    /// ```
    /// use multiproc::connection::{AuthDialect, Client};
    /// assert_eq!(Client::new("@x", None)?.dialect(), AuthDialect::Modern);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn dialect(&self) -> AuthDialect {
        self.dialect
    }

    /// The limit on connecting plus authenticating (`None`, the default: no limit).
    ///
    /// ```
    /// use multiproc::connection::Client;
    /// use std::time::Duration;
    /// let c = Client::new("@x", None)?.with_timeout(Some(Duration::from_secs(5)));
    /// assert_eq!(c.timeout(), Some(Duration::from_secs(5)));
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn with_timeout(mut self, timeout: Option<Duration>) -> Client {
        self.timeout = timeout;
        self
    }

    /// The limit on connecting plus authenticating.
    ///
    /// ```
    /// assert_eq!(multiproc::connection::Client::new("@x", None)?.timeout(), None);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn timeout(&self) -> Option<Duration> {
        self.timeout
    }

    /// The address this client connects to.
    ///
    /// ```
    /// use multiproc::connection::{Address, Client};
    /// let c = Client::new("@svc", None)?;
    /// assert_eq!(c.address(), &Address::Abstract(b"svc".to_vec()));
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn address(&self) -> &Address {
        &self.address
    }

    /// Connects and authenticates; each call opens a new connection.
    ///
    /// ```
    /// use multiproc::connection::{Client, Listener};
    /// let listener = Listener::bind("@", None)?;
    /// let client = Client::new(&listener.address().to_string(), None)?;
    /// let (c1, c2) = (client.open()?, client.open()?);
    /// let (s1, s2) = (listener.accept()?, listener.accept()?);
    /// c1.send_bytes(b"1")?;
    /// c2.send_bytes(b"2")?;
    /// assert_eq!((s1.recv_bytes()?, s2.recv_bytes()?), (b"1".to_vec(), b"2".to_vec()));
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn open(&self) -> Result<Connection> {
        let deadline = crate::deadline::within(self.timeout);
        let timed_out = || Error::Timeout(self.timeout.unwrap_or_default());
        let fd = match &self.address {
            Address::Tcp(tcp) => {
                let stream = match deadline {
                    None => TcpStream::connect(tcp),
                    Some(deadline) => {
                        let left = deadline.saturating_duration_since(Instant::now());
                        if left.is_zero() {
                            return Err(timed_out());
                        }
                        TcpStream::connect_timeout(tcp, left)
                    }
                };
                let stream = match stream {
                    Ok(s) => s,
                    Err(e) if e.kind() == io::ErrorKind::TimedOut && deadline.is_some() => {
                        return Err(timed_out())
                    }
                    Err(e) => return Err(io_context(e, "cannot connect to", &self.address)),
                };
                let _ = stream.set_nodelay(true);
                OwnedFd::from(stream)
            }
            Address::Abstract(name) if name.is_empty() => return Err(Error::InvalidArgument(
                "cannot connect to the empty abstract name '@': it only asks bind for a free name"
                    .into(),
            )),
            Address::Unix(_) | Address::Abstract(_) => {
                let unix = self.address.unix_socket_address()?;
                let fd = socket::stream_socket(Family::Unix, false)?;
                if let Some(deadline) = deadline {
                    // A Unix connect blocks while the listener's queue is full; the send
                    // timeout bounds that wait.
                    let left = deadline.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        return Err(timed_out());
                    }
                    socket::set_send_timeout(&fd, Some(left))?;
                }
                match socket::connect_unix(&fd, &unix) {
                    Ok(()) => {}
                    Err(e) if e.kind() == io::ErrorKind::TimedOut => return Err(timed_out()),
                    Err(e) => return Err(context(e, "cannot connect to", &self.address)),
                }
                if deadline.is_some() {
                    socket::set_send_timeout(&fd, None)?;
                }
                fd
            }
        };
        let conn = Connection::from_fd(fd);
        if let Some(key) = &self.authkey {
            auth::client_handshake(&conn, key, self.dialect, deadline).map_err(|e| match e {
                Error::Timeout(_) => timed_out(),
                other => other,
            })?;
        }
        Ok(conn)
    }
}

impl fmt::Debug for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Client")
            .field("address", &self.address)
            .field("authenticated", &self.authkey.is_some())
            .field("dialect", &self.dialect)
            .field("timeout", &self.timeout)
            .finish()
    }
}

// --------------------------------------------------------------------------------------
// Helpers

fn context(e: io::Error, what: &str, address: &Address) -> Error {
    io_context(e, what, address)
}

fn io_context(e: io::Error, what: &str, address: &Address) -> Error {
    Error::Io(io::Error::new(e.kind(), format!("{what} {address}: {e}")))
}
