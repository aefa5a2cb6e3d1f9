//! An event: a flag word (`0` clear, `1` set) and a sleeper count.
//!
//! `set` stores the flag, fences and wakes every sleeper if any registered; a waiter
//! registers, fences and sleeps on the flag word only while it reads `0`. Between the two
//! fences one side sees the other, so a `set` never misses a waiter.

use super::atomic::{fence, AtomicU32};
use std::sync::atomic::Ordering::{Acquire, Relaxed, SeqCst};
use std::time::Instant;

use super::{remaining, spin_pause, Platform, SPIN_ROUNDS};

/// Whether the flag is set (an acquire: what the setter wrote before `set` is visible).
#[inline]
pub(crate) fn is_set(flag: &AtomicU32) -> bool {
    flag.load(Acquire) != 0
}

/// Sets the flag and wakes every waiter.
pub(crate) fn set<P: Platform>(flag: &AtomicU32, sleepers: &AtomicU32) {
    flag.store(1, SeqCst);
    fence(SeqCst);
    if sleepers.load(Relaxed) > 0 {
        P::wake(flag, u32::MAX);
    }
}

/// Clears the flag.
pub(crate) fn clear(flag: &AtomicU32) {
    flag.store(0, SeqCst);
}

/// Waits until the flag is set, at most until `deadline`; returns whether it is set.
pub(crate) fn wait<P: Platform>(
    flag: &AtomicU32,
    sleepers: &AtomicU32,
    deadline: Option<Instant>,
) -> bool {
    for round in 0..SPIN_ROUNDS {
        if is_set(flag) {
            return true;
        }
        if deadline.is_some_and(|d| Instant::now() >= d) {
            return false;
        }
        spin_pause(round);
    }
    loop {
        if is_set(flag) {
            return true;
        }
        let left = remaining(deadline);
        if left.is_some_and(|l| l.is_zero()) {
            return false;
        }
        sleepers.fetch_add(1, SeqCst);
        fence(SeqCst);
        if flag.load(Relaxed) == 0 {
            P::wait(flag, 0, left);
        }
        sleepers.fetch_sub(1, SeqCst);
    }
}
