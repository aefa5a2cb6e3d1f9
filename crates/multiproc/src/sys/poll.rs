//! `poll(2)`: waiting until descriptors are ready, with a timeout or a deadline.
//!
//! [`PollFd`] and [`PollFlags`] are rustix's (safe, `#[repr(C)]` `pollfd`s borrowing their
//! descriptors); a second backend on another Unix keeps them, since `poll` is POSIX.

use std::io;
use std::time::{Duration, Instant};

pub(crate) use rustix::event::{PollFd, PollFlags};

/// One `poll` call: waits at most `timeout` (`None`: without limit) until one of `fds` is
/// ready; returns how many are. A signal ends it early with [`io::ErrorKind::Interrupted`].
pub(crate) fn poll(fds: &mut [PollFd<'_>], timeout: Option<Duration>) -> io::Result<usize> {
    let timespec = timeout.map(|left| rustix::event::Timespec {
        tv_sec: left.as_secs() as i64,
        tv_nsec: left.subsec_nanos() as i64,
    });
    Ok(rustix::event::poll(fds, timespec.as_ref())?)
}

/// `poll` until one of `fds` is ready or `deadline` passes (`None`: no deadline), resumed
/// after signals; returns how many are ready (0 at the deadline).
pub(crate) fn poll_until(fds: &mut [PollFd<'_>], deadline: Option<Instant>) -> io::Result<usize> {
    loop {
        let timeout = deadline.map(|d| d.saturating_duration_since(Instant::now()));
        match poll(fds, timeout) {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            other => return other,
        }
    }
}

/// Whether `fd` is ready for `events` (or hung up) right now, without waiting.
pub(crate) fn ready_now(fd: std::os::fd::BorrowedFd<'_>, events: PollFlags) -> bool {
    let mut fds = [PollFd::from_borrowed_fd(fd, events)];
    matches!(poll(&mut fds, Some(Duration::ZERO)), Ok(n) if n > 0)
}
