//! Futexes on process-shared words: sleep while a word holds a value, wake sleepers.
//!
//! The words live in memory that several processes map (a `memfd` segment, a `/dev/shm`
//! block), so the futexes are *shared* ones (not `FUTEX_PRIVATE_FLAG`): the kernel keys
//! them by the backing page, not by this process's address. Linux-only; a second backend
//! would use `__ulock_wait`/`__ulock_wake` (macOS) or `WaitOnAddress` with a shared key.

use std::sync::atomic::AtomicU32;
use std::time::Duration;

use rustix::thread::futex;

/// Sleeps while `*word == expected`, at most `timeout` (`None`: until woken); may return
/// early for any reason (a signal, a spurious wake-up, a changed word), so callers re-check.
pub(crate) fn wait(word: &AtomicU32, expected: u32, timeout: Option<Duration>) {
    let timespec = timeout.map(|t| futex::Timespec {
        tv_sec: t.as_secs().min(i64::MAX as u64) as i64,
        tv_nsec: t.subsec_nanos() as i64,
    });
    // Shared (not PRIVATE) futex: waiters in other processes map the same page.
    let _ = futex::wait(word, futex::Flags::empty(), expected, timespec.as_ref());
}

/// Wakes up to `n` sleepers on `word` (`u32::MAX`: all of them).
pub(crate) fn wake(word: &AtomicU32, n: u32) {
    // The kernel reads the count as a signed int: "all" is i32::MAX, not u32::MAX.
    let n = n.min(i32::MAX as u32);
    let _ = futex::wake(word, futex::Flags::empty(), n);
}
