//! The operating-system calls of the manager's server, gathered in one place: the pid of
//! a local client (`SO_PEERCRED`), and the CPU affinity a fast-lane thread narrows and
//! restores. These are the only rustix calls of `managers/`; they move to `sys/` with the
//! rest of the platform layer.

use crate::connection::Connection;

/// A thread's CPU set, and the calls that read and change it (see `fast_lane::Steering`).
pub(super) use rustix::thread::{sched_getaffinity, sched_setaffinity, CpuSet};

/// The process on the other end of a client connection, when the kernel can tell (a Unix
/// socket on this machine); `None` over TCP.
pub(super) fn peer_pid(client: &Connection) -> Option<i32> {
    rustix::net::sockopt::socket_peercred(client).ok().map(|c| c.pid.as_raw_nonzero().get())
}
