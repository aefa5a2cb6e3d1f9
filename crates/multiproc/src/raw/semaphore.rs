//! A counting semaphore: a count word and a sleeper count.
//!
//! `acquire` decrements a positive count with a compare-and-swap, or registers as a
//! sleeper and sleeps on the count word while it is zero. `release(n)` adds `n` and wakes
//! up to `n` sleepers if there are any.

use super::atomic::{fence, AtomicU32};
use std::sync::atomic::Ordering::{Acquire, Relaxed, Release, SeqCst};
use std::time::Instant;

use super::{remaining, spin_pause, Platform, SPIN_ROUNDS};

/// One attempt, no waiting.
pub(crate) fn try_acquire(count: &AtomicU32) -> bool {
    let mut c = count.load(Relaxed);
    while c > 0 {
        match count.compare_exchange_weak(c, c - 1, Acquire, Relaxed) {
            Ok(_) => return true,
            Err(now) => c = now,
        }
    }
    false
}

/// Takes one unit, waiting until `deadline`; `false` if the deadline passed first.
pub(crate) fn acquire<P: Platform>(
    count: &AtomicU32,
    sleepers: &AtomicU32,
    deadline: Option<Instant>,
) -> bool {
    for round in 0..SPIN_ROUNDS {
        if try_acquire(count) {
            return true;
        }
        spin_pause(round);
    }
    loop {
        if try_acquire(count) {
            return true;
        }
        let left = remaining(deadline);
        if left.is_some_and(|l| l.is_zero()) {
            return false;
        }
        // Register, fence, re-check; `release` adds, fences, looks for sleepers. Between
        // the two fences one side sees the other: a release that missed the registration
        // made its increment visible to this load.
        sleepers.fetch_add(1, Relaxed);
        fence(SeqCst);
        if count.load(Relaxed) == 0 {
            P::wait(count, 0, left);
        }
        sleepers.fetch_sub(1, Relaxed);
    }
}

/// Adds `n` units, failing (and adding nothing) if that would pass `max`.
pub(crate) fn release<P: Platform>(
    count: &AtomicU32,
    sleepers: &AtomicU32,
    n: u32,
    max: u32,
) -> bool {
    let mut c = count.load(Relaxed);
    loop {
        let Some(next) = c.checked_add(n).filter(|&next| next <= max) else {
            return false;
        };
        match count.compare_exchange_weak(c, next, Release, Relaxed) {
            Ok(_) => break,
            Err(now) => c = now,
        }
    }
    fence(SeqCst);
    if sleepers.load(Relaxed) > 0 {
        P::wake(count, n);
    }
    true
}
