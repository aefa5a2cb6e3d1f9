//! A condition variable's four words: registered waiters not yet signalled, signals not
//! yet taken, the next waiter's ticket, and the ticket below which waiters may take a
//! signal.
//!
//! A waiter registers ([`prepare`]) while it holds the condition's lock and gets a ticket;
//! it releases the lock and takes a signal ([`wait`]) once a notification came after its
//! registration. A notifier, holding the lock, turns up to `n` registered waiters into
//! signals, makes every waiter registered so far eligible for them, and wakes ([`notify`]).
//! So `notify(n)` lets exactly `min(n, waiters)` waits return, and only waits that began
//! before it: a waiter that registers afterwards (the notifier itself, say) cannot take
//! those signals. A waiter whose time ran out takes the lock back and then either takes a
//! signal that came meanwhile or withdraws ([`timed_out`]), both under the lock, so no
//! signal is left to a waiter that is gone.
//!
//! Among the eligible waiters a signal goes to whichever takes it first. A waiter that
//! dies while registered leaves its registration behind; a later `notify` may turn it into
//! a signal that the next eligible waiter takes at once (a spurious wake-up, which a
//! condition variable allows), never into a lost one.

use super::atomic::AtomicU32;
use std::sync::atomic::Ordering::{Acquire, Relaxed, Release};
use std::time::Instant;

use super::{remaining, spin_pause, Platform, SPIN_ROUNDS};

/// Where a condition's words are.
pub(crate) struct Words<'a> {
    /// Registered waiters not yet signalled (changed under the lock only).
    pub(crate) waiters: &'a AtomicU32,
    /// Signals not yet taken: the futex word eligible waiters sleep on.
    pub(crate) signals: &'a AtomicU32,
    /// The next waiter's ticket (changed under the lock only).
    pub(crate) next: &'a AtomicU32,
    /// Waiters whose ticket is below this may take a signal: the futex word the others
    /// sleep on (changed under the lock only).
    pub(crate) eligible: &'a AtomicU32,
}

/// Whether `ticket` is below `eligible` (tickets wrap around).
fn below(ticket: u32, eligible: u32) -> bool {
    let ahead = eligible.wrapping_sub(ticket);
    ahead != 0 && ahead < 1 << 31
}

/// With the lock held: registers the caller as a waiter; its ticket, for [`wait`].
pub(crate) fn prepare(w: &Words<'_>) -> u32 {
    w.waiters.fetch_add(1, Relaxed);
    w.next.fetch_add(1, Relaxed)
}

/// Takes one signal if there is one.
fn try_take(signals: &AtomicU32) -> bool {
    let mut s = signals.load(Relaxed);
    while s > 0 {
        match signals.compare_exchange_weak(s, s - 1, Acquire, Relaxed) {
            Ok(_) => return true,
            Err(now) => s = now,
        }
    }
    false
}

/// One attempt: a signal taken if `ticket` is eligible and one is there.
fn attempt(w: &Words<'_>, ticket: u32) -> bool {
    below(ticket, w.eligible.load(Acquire)) && try_take(w.signals)
}

/// With the lock released, after [`prepare`]: takes a signal, waiting until `deadline`.
/// `false` if the deadline passed first: the caller takes the lock back and calls
/// [`timed_out`] (or calls this again, still registered).
pub(crate) fn wait<P: Platform>(w: &Words<'_>, ticket: u32, deadline: Option<Instant>) -> bool {
    for round in 0..SPIN_ROUNDS {
        if attempt(w, ticket) {
            return true;
        }
        spin_pause(round);
    }
    loop {
        let eligible = w.eligible.load(Acquire);
        if below(ticket, eligible) && try_take(w.signals) {
            return true;
        }
        let left = remaining(deadline);
        if left.is_some_and(|l| l.is_zero()) {
            return false;
        }
        // Each sleep lasts only while its word is as read: a `notify` that changes it after
        // the check above wakes the sleep, or keeps it from starting.
        if below(ticket, eligible) {
            P::wait(w.signals, 0, left);
        } else {
            P::wait(w.eligible, eligible, left);
        }
    }
}

/// With the lock held again, after [`wait`] returned `false`: takes a signal that came
/// while the lock was being taken back (`true`: the wait was notified after all), or
/// withdraws the registration.
pub(crate) fn timed_out(w: &Words<'_>, ticket: u32) -> bool {
    if attempt(w, ticket) {
        return true;
    }
    // Under the lock, every registered waiter that holds no signal is counted in
    // `waiters`, this one included.
    let _ = w.waiters.fetch_update(Relaxed, Relaxed, |n| n.checked_sub(1));
    false
}

/// With the lock held: signals up to `n` registered waiters, makes every waiter
/// registered so far eligible, and wakes them.
pub(crate) fn notify<P: Platform>(w: &Words<'_>, n: u32) {
    let k = w.waiters.load(Relaxed).min(n);
    if k == 0 {
        return;
    }
    w.waiters.fetch_sub(k, Relaxed);
    w.signals.fetch_add(k, Release);
    let next = w.next.load(Relaxed);
    if w.eligible.swap(next, Release) != next {
        // Waiters that were not eligible sleep on `eligible`: wake them all to look.
        P::wake(w.eligible, u32::MAX);
    }
    P::wake(w.signals, k);
}
