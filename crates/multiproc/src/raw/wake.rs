//! Sleeping until another party changes a condition, without a lost wake-up and without
//! a system call when nobody sleeps.
//!
//! A sleeper reads the sequence word, registers in the `asleep` count, fences, re-checks its
//! condition and sleeps on the sequence word only if it still holds. A waker changes the
//! condition, fences, and bumps the sequence and wakes only if someone is registered.
//! Between the two fences one side sees the other: either the waker sees the registration
//! (and its bump makes the sleep return), or the sleeper's re-check sees the change (and it
//! does not sleep). When nobody sleeps, the waker touches no shared line but its own.

use super::atomic::{fence, AtomicU32};
use std::sync::atomic::Ordering::{Relaxed, SeqCst};
use std::time::Duration;

use super::Platform;

/// Wakes up to `n` sleepers on `seq` after the caller changed what they wait for.
#[inline]
pub(crate) fn wake<P: Platform>(seq: &AtomicU32, asleep: &AtomicU32, n: u32) {
    fence(SeqCst);
    if asleep.load(Relaxed) > 0 {
        seq.fetch_add(1, SeqCst);
        P::wake(seq, n);
    }
}

/// Wakes up to `n` sleepers on `seq` whether or not any registered (for rare events such
/// as closing a queue).
#[inline]
pub(crate) fn wake_always<P: Platform>(seq: &AtomicU32, n: u32) {
    seq.fetch_add(1, SeqCst);
    P::wake(seq, n);
}

/// Sleeps on `seq` while `still_waiting()` holds, at most `timeout`. May return early
/// (callers re-check their condition).
#[inline]
pub(crate) fn sleep<P: Platform>(
    seq: &AtomicU32,
    asleep: &AtomicU32,
    timeout: Option<Duration>,
    still_waiting: impl FnOnce() -> bool,
) {
    let seen = seq.load(SeqCst);
    asleep.fetch_add(1, SeqCst);
    fence(SeqCst);
    if still_waiting() {
        P::wait(seq, seen, timeout);
    }
    asleep.fetch_sub(1, SeqCst);
}
