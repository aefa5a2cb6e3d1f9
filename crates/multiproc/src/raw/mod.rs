//! Synchronisation algorithms on 32- and 64-bit words, apart from the operating system:
//! the lock, the semaphore, Event, Condition, Barrier, the sleep/wake handshake, and the
//! queue ring (its indices, records and waiting).
//!
//! Each algorithm works on atomics that may live in memory shared between processes (laid
//! out by its caller, through a small `Layout` trait where there are several), and reaches
//! the OS only through a [`Platform`]: how to sleep on a word, how to wake sleepers,
//! whether a process is alive. The real platform, [`Os`] (futexes and `/proc`, through
//! `sys`), is in `os.rs`, and the real types (`synchronize`, `queues`) are thin layers over these
//! functions; tests substitute their own liveness to simulate dead owners, and
//! `tests/loom_raw.rs` compiles these very files with loom's atomics and a model futex.
//!
//! The orderings that pair two sides through a fence are written with explicit
//! `fence(SeqCst)`s on both sides (not only `SeqCst` accesses): equivalent in Rust's
//! memory model, and the form loom checks exactly (it treats `SeqCst` accesses as
//! acquire/release, but models `SeqCst` fences).
//!
//! # Owner-died recovery
//! A lock word holds its owner's pid. A waiter that sleeps for a while re-checks that the
//! owner is alive; if the owner is dead (SIGKILLed in its critical section, say), the
//! waiter takes the lock over with a compare-and-swap from the exact word it saw, so at
//! most one waiter inherits a dead owner's lock, and reports that it did.

use std::sync::atomic::AtomicU32;
use std::time::{Duration, Instant};

pub(crate) mod barrier;
pub(crate) mod condition;
pub(crate) mod event;
pub(crate) mod lock;
mod os;
pub(crate) mod ring;
pub(crate) mod semaphore;
pub(crate) mod wake;

pub(crate) use os::Os;

/// The atomics the algorithms use: std's here; the loom model checker's when
/// `tests/loom_raw.rs` compiles these files under `--cfg loom`.
pub(crate) mod atomic {
    pub(crate) use std::sync::atomic::{fence, AtomicU32, AtomicU64};
}

/// What the algorithms need from the operating system.
pub(crate) trait Platform {
    /// Sleeps while `*word == expected`, at most `timeout`; may return early for any
    /// reason (callers re-check).
    fn wait(word: &AtomicU32, expected: u32, timeout: Option<Duration>);
    /// Wakes up to `n` sleepers on `word`.
    fn wake(word: &AtomicU32, n: u32);
    /// Whether the process `pid` still runs (a zombie does not).
    fn alive(pid: u32) -> bool;
}

/// How often a sleeping waiter re-checks its owner's liveness: the first check comes
/// soon, later ones back off so a long wait costs almost nothing.
pub(crate) fn check_interval(round: u32) -> Duration {
    Duration::from_millis(match round {
        0 => 5,
        1 => 20,
        2 => 100,
        _ => 250,
    })
}

/// The time left until `deadline`, or `None` for "no deadline".
pub(crate) fn remaining(deadline: Option<Instant>) -> Option<Duration> {
    deadline.map(|d| d.saturating_duration_since(Instant::now()))
}

/// Spin iterations before a waiter sleeps. Short: on a VM a futex hand-off costs tens of
/// microseconds, a spinning one well under one, but a spinner whose peer shares its CPU
/// only delays it; every few rounds the spinner yields the CPU.
pub(crate) const SPIN_ROUNDS: u32 = 100;

/// One round of a bounded spin: a pause, and every 4th round a yield (which returns at
/// once when nothing else wants this CPU, and lets a peer on the same CPU run).
pub(crate) fn spin_pause(round: u32) {
    if round % 4 == 3 {
        std::thread::yield_now();
    } else {
        for _ in 0..8 {
            std::hint::spin_loop();
        }
    }
}
