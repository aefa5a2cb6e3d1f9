//! The real [`Platform`]: futexes on shared memory (`sys::futex`) and liveness from the
//! process table (`sys::proc`). The algorithms of this module run on it in the crate; the
//! tests and `tests/loom_raw.rs` substitute their own.

use std::sync::atomic::AtomicU32;
use std::time::Duration;

use super::Platform;
use crate::sys;

/// The operating system, as the algorithms need it.
pub(crate) struct Os;

impl Platform for Os {
    fn wait(word: &AtomicU32, expected: u32, timeout: Option<Duration>) {
        sys::futex::wait(word, expected, timeout);
    }

    fn wake(word: &AtomicU32, n: u32) {
        sys::futex::wake(word, n);
    }

    fn alive(pid: u32) -> bool {
        sys::proc::pid_is_alive(pid as i32)
    }
}
