//! Sockets: stream socket pairs, listening and connecting (TCP and Unix, including Linux's
//! abstract names), non-blocking sends and receives, socket options, the peer's
//! credentials, and descriptors passed as `SCM_RIGHTS`.
//!
//! Linux-only here: abstract Unix names, `SO_PEERCRED` (a second backend would use
//! `getpeereid` and `LOCAL_PEERPID` on macOS), `MSG_CMSG_CLOEXEC` (elsewhere: set
//! close-on-exec on each received descriptor right after `recvmsg`), and the limit of
//! [`MAX_FDS`] descriptors per message.

use std::io::{self, IoSlice, IoSliceMut};
use std::mem::MaybeUninit;
use std::net::SocketAddr;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::time::Duration;

use rustix::io::Errno;
use rustix::net::{
    AddressFamily, RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, SendAncillaryBuffer,
    SendAncillaryMessage, SendFlags, SocketAddrAny, SocketAddrUnix, SocketFlags, SocketType,
};

/// A connected pair of Unix stream sockets, close-on-exec.
pub(crate) fn pair() -> io::Result<(OwnedFd, OwnedFd)> {
    Ok(rustix::net::socketpair(
        AddressFamily::UNIX,
        SocketType::STREAM,
        SocketFlags::CLOEXEC,
        None,
    )?)
}

/// The address family of a new stream socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Family {
    /// TCP over IPv4.
    Inet,
    /// TCP over IPv6.
    Inet6,
    /// A Unix stream socket.
    Unix,
}

/// A new stream socket of `family`, close-on-exec, non-blocking if asked.
pub(crate) fn stream_socket(family: Family, nonblocking: bool) -> io::Result<OwnedFd> {
    let family = match family {
        Family::Inet => AddressFamily::INET,
        Family::Inet6 => AddressFamily::INET6,
        Family::Unix => AddressFamily::UNIX,
    };
    let mut flags = SocketFlags::CLOEXEC;
    if nonblocking {
        flags |= SocketFlags::NONBLOCK;
    }
    Ok(rustix::net::socket_with(family, SocketType::STREAM, flags, None)?)
}

/// A Unix socket address, checked (a path of at most 107 bytes without NUL bytes, an
/// abstract name, or none: the kernel chooses an abstract name at bind).
#[derive(Debug, Clone)]
pub(crate) struct UnixAddr(SocketAddrUnix);

impl UnixAddr {
    /// A path in the file system.
    pub(crate) fn path(path: &Path) -> io::Result<UnixAddr> {
        Ok(UnixAddr(SocketAddrUnix::new(path)?))
    }

    /// A Linux abstract name (without its leading NUL byte).
    pub(crate) fn abstract_name(name: &[u8]) -> io::Result<UnixAddr> {
        Ok(UnixAddr(SocketAddrUnix::new_abstract_name(name)?))
    }

    /// No name: binding it lets the kernel choose a free abstract name.
    pub(crate) fn unnamed() -> UnixAddr {
        UnixAddr(SocketAddrUnix::new_unnamed())
    }
}

/// The name of a socket or of its peer, as the kernel reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum SocketName {
    /// A TCP address.
    Inet(SocketAddr),
    /// A Unix socket in the file system.
    Path(PathBuf),
    /// A Linux abstract Unix name (never empty).
    Abstract(Vec<u8>),
}

impl SocketName {
    /// The name of `addr`; `None` for an unnamed Unix socket or an unknown family.
    fn of(addr: &SocketAddrAny) -> Option<SocketName> {
        match addr.address_family() {
            AddressFamily::INET | AddressFamily::INET6 => {
                SocketAddr::try_from(addr.clone()).ok().map(SocketName::Inet)
            }
            AddressFamily::UNIX => {
                let unix = SocketAddrUnix::try_from(addr.clone()).ok()?;
                if unix.is_unnamed() {
                    None
                } else if let Some(name) = unix.abstract_name() {
                    // An unnamed peer may also come back as an empty abstract name.
                    if name.is_empty() {
                        return None;
                    }
                    Some(SocketName::Abstract(name.to_vec()))
                } else {
                    use std::os::unix::ffi::OsStrExt;
                    let path = unix.path_bytes()?;
                    Some(SocketName::Path(PathBuf::from(std::ffi::OsStr::from_bytes(path))))
                }
            }
            _ => None,
        }
    }
}

/// Binds `fd` to a TCP address.
pub(crate) fn bind_inet(fd: impl AsFd, addr: &SocketAddr) -> io::Result<()> {
    Ok(rustix::net::bind(fd, addr)?)
}

/// Binds `fd` to a Unix address.
pub(crate) fn bind_unix(fd: impl AsFd, addr: &UnixAddr) -> io::Result<()> {
    Ok(rustix::net::bind(fd, &addr.0)?)
}

/// Marks `fd` as listening, with a queue of `backlog` pending connections.
pub(crate) fn listen(fd: impl AsFd, backlog: i32) -> io::Result<()> {
    Ok(rustix::net::listen(fd, backlog)?)
}

/// The name `fd` is bound to, if it has one the kernel can tell.
pub(crate) fn local_name(fd: impl AsFd) -> Option<SocketName> {
    rustix::net::getsockname(fd).ok().and_then(|a| SocketName::of(&a))
}

/// Accepts one connection from the listening socket `fd` if one is waiting (`None` when
/// none is, on a non-blocking socket): the new socket (close-on-exec) and its peer's name,
/// when it has one. A client that gave up before it was accepted is skipped, and a signal
/// resumes the call.
pub(crate) fn accept(fd: impl AsFd) -> io::Result<Option<(OwnedFd, Option<SocketName>)>> {
    loop {
        match rustix::net::acceptfrom_with(fd.as_fd(), SocketFlags::CLOEXEC) {
            Ok((socket, peer)) => {
                return Ok(Some((socket, peer.as_ref().and_then(SocketName::of))))
            }
            Err(Errno::INTR) | Err(Errno::CONNABORTED) => continue,
            Err(Errno::AGAIN) => return Ok(None),
            Err(e) => return Err(e.into()),
        }
    }
}

/// Connects `fd` to a Unix address, resumed after signals. A connect that the socket's
/// send timeout ended (the listener's queue stayed full) fails with
/// [`io::ErrorKind::TimedOut`].
pub(crate) fn connect_unix(fd: impl AsFd, addr: &UnixAddr) -> io::Result<()> {
    loop {
        match rustix::net::connect(fd.as_fd(), &addr.0) {
            Ok(()) => return Ok(()),
            Err(Errno::INTR) => continue,
            Err(Errno::AGAIN) | Err(Errno::INPROGRESS) | Err(Errno::TIMEDOUT) => {
                return Err(io::Error::new(io::ErrorKind::TimedOut, "connect timed out"))
            }
            Err(e) => return Err(e.into()),
        }
    }
}

/// The error for a Unix-only operation asked of another family (`EAFNOSUPPORT`).
pub(crate) fn family_not_supported() -> io::Error {
    Errno::AFNOSUPPORT.into()
}

/// Lets a TCP listener bind an address that connections of an earlier one still hold.
pub(crate) fn set_reuse_address(fd: impl AsFd) -> io::Result<()> {
    Ok(rustix::net::sockopt::set_socket_reuseaddr(fd, true)?)
}

/// Turns Nagle's algorithm off on a TCP socket.
pub(crate) fn set_nodelay(fd: impl AsFd) -> io::Result<()> {
    Ok(rustix::net::sockopt::set_tcp_nodelay(fd, true)?)
}

/// Bounds how long a blocking send (or a Unix connect) waits; `None`: without limit.
pub(crate) fn set_send_timeout(fd: impl AsFd, timeout: Option<Duration>) -> io::Result<()> {
    Ok(rustix::net::sockopt::set_socket_timeout(fd, rustix::net::sockopt::Timeout::Send, timeout)?)
}

/// Sends what the socket takes of `buf` without blocking and without `SIGPIPE`.
pub(crate) fn send_nonblocking(fd: impl AsFd, buf: &[u8]) -> io::Result<usize> {
    Ok(rustix::net::send(fd, buf, SendFlags::DONTWAIT | SendFlags::NOSIGNAL)?)
}

/// Receives what the socket holds, up to `buf.len()` bytes, without blocking; 0 at end of
/// stream.
pub(crate) fn recv_nonblocking(fd: impl AsFd, buf: &mut [u8]) -> io::Result<usize> {
    Ok(rustix::net::recv(fd, buf, RecvFlags::DONTWAIT)?.0)
}

/// Whether `fd` is a Unix socket.
pub(crate) fn is_unix(fd: impl AsFd) -> bool {
    rustix::net::sockopt::socket_domain(fd).is_ok_and(|d| d == AddressFamily::UNIX)
}

/// Who is on the other end of a Unix socket, as the kernel recorded it at connect time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct PeerCredentials {
    /// The peer's pid.
    pub(crate) pid: i32,
    /// The peer's user id.
    pub(crate) uid: u32,
}

/// The credentials of the peer of the Unix socket `fd` (`SO_PEERCRED`); an error for any
/// other kind of socket.
pub(crate) fn peer_credentials(fd: impl AsFd) -> io::Result<PeerCredentials> {
    let creds = rustix::net::sockopt::socket_peercred(fd)?;
    Ok(PeerCredentials { pid: creds.pid.as_raw_nonzero().get(), uid: creds.uid.as_raw() })
}

/// The most descriptors one `SCM_RIGHTS` message carries (Linux's `SCM_MAX_FD`).
pub(crate) const MAX_FDS: usize = 253;

/// Sends `data` with `fds` attached (`SCM_RIGHTS`), without `SIGPIPE`, resumed after
/// signals; returns how much of `data` was sent (the descriptors go with the first byte).
pub(crate) fn send_with_fds(
    socket: BorrowedFd<'_>,
    data: &[u8],
    fds: &[BorrowedFd<'_>],
) -> io::Result<usize> {
    if fds.len() > MAX_FDS {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, "too many handles"));
    }
    let mut space = vec![MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(MAX_FDS))];
    let mut control = SendAncillaryBuffer::new(&mut space);
    if !fds.is_empty() && !control.push(SendAncillaryMessage::ScmRights(fds)) {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, "too many handles"));
    }
    loop {
        match rustix::net::sendmsg(socket, &[IoSlice::new(data)], &mut control, SendFlags::NOSIGNAL)
        {
            Err(Errno::INTR) => continue,
            other => return Ok(other?),
        }
    }
}

/// Receives into `buf`, appending the descriptors that came with it (`SCM_RIGHTS`,
/// close-on-exec) to `fds`; resumed after signals. Returns how many bytes came (0 at end
/// of stream).
pub(crate) fn recv_with_fds(
    socket: BorrowedFd<'_>,
    buf: &mut [u8],
    fds: &mut Vec<OwnedFd>,
) -> io::Result<usize> {
    let mut space = vec![MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(MAX_FDS))];
    let mut control = RecvAncillaryBuffer::new(&mut space);
    let mut iov = [IoSliceMut::new(buf)];
    let received = loop {
        match rustix::net::recvmsg(socket, &mut iov, &mut control, RecvFlags::CMSG_CLOEXEC) {
            Err(Errno::INTR) => continue,
            other => break other?,
        }
    };
    for message in control.drain() {
        if let RecvAncillaryMessage::ScmRights(rights) = message {
            fds.extend(rights);
        }
    }
    Ok(received.bytes)
}
