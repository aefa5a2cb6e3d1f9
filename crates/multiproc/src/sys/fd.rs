//! Plain descriptors: pipes, eventfds, reads and writes, status flags, sizes, the
//! process's descriptor limit, and which errors say that descriptors or memory ran out.
//!
//! Every function returns `io::Result` and retries nothing: an interrupted call comes back
//! as [`io::ErrorKind::Interrupted`], a full non-blocking one as
//! [`io::ErrorKind::WouldBlock`], for the caller's own loop to decide. Linux-only here:
//! pipe sizes (`F_SETPIPE_SZ`) and `eventfd`; a second backend would make
//! [`set_pipe_size`] a no-op and build [`eventfd`] from a non-blocking pipe.

use std::io::{self, IoSlice};
use std::os::fd::{AsFd, OwnedFd};

/// A pipe, both ends close-on-exec: (read end, write end).
pub(crate) fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    Ok(rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC)?)
}

/// Asks for a pipe buffer of `bytes` (the system limit may refuse); returns the size set.
pub(crate) fn set_pipe_size(fd: impl AsFd, bytes: usize) -> io::Result<usize> {
    Ok(rustix::pipe::fcntl_setpipe_size(fd, bytes)?)
}

/// Makes reads and writes on `fd` non-blocking (its other status flags are replaced:
/// what a fresh pipe or socket end has, none, stays so).
pub(crate) fn set_nonblocking(fd: impl AsFd) -> io::Result<()> {
    Ok(rustix::fs::fcntl_setfl(fd, rustix::fs::OFlags::NONBLOCK)?)
}

/// An `eventfd` counter, close-on-exec and non-blocking: written to wake a poller, read
/// to reset.
pub(crate) fn eventfd() -> io::Result<OwnedFd> {
    use rustix::event::EventfdFlags;
    Ok(rustix::event::eventfd(0, EventfdFlags::CLOEXEC | EventfdFlags::NONBLOCK)?)
}

/// `read(2)` into `buf`; 0 at end of stream.
pub(crate) fn read(fd: impl AsFd, buf: &mut [u8]) -> io::Result<usize> {
    Ok(rustix::io::read(fd, buf)?)
}

/// `read(2)` into the spare capacity of `vec`, which grows by the bytes read (never
/// reallocating); 0 at end of stream.
pub(crate) fn read_spare(fd: impl AsFd, vec: &mut Vec<u8>) -> io::Result<usize> {
    Ok(rustix::io::read(fd, rustix::buffer::spare_capacity(vec))?)
}

/// `write(2)` of `buf`; returns how much was written.
pub(crate) fn write(fd: impl AsFd, buf: &[u8]) -> io::Result<usize> {
    Ok(rustix::io::write(fd, buf)?)
}

/// `writev(2)` of `bufs`, in order; returns how much was written.
pub(crate) fn writev(fd: impl AsFd, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
    Ok(rustix::io::writev(fd, bufs)?)
}

/// Sets the size of the file `fd` refers to (tests shrink segments with it).
#[cfg(test)]
pub(crate) fn ftruncate(fd: impl AsFd, len: u64) -> io::Result<()> {
    Ok(rustix::fs::ftruncate(fd, len)?)
}

/// This process's soft limit on open descriptors (`RLIMIT_NOFILE`); `None`: unlimited.
pub(crate) fn descriptor_limit() -> Option<u64> {
    rustix::process::getrlimit(rustix::process::Resource::Nofile).current
}

/// Whether `e` says the process or the system ran out of descriptors or memory (a
/// condition that may pass: `EMFILE`, `ENFILE`, `ENOBUFS`, `ENOMEM`).
pub(crate) fn is_out_of_resources(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM))
}
