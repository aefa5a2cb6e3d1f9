//! A condition variable's sequence word.
//!
//! A waiter reads the sequence while it holds the condition's lock ([`prepare`]), releases
//! the lock, and sleeps while the sequence still has that value ([`wait`]). A notifier,
//! holding the lock, bumps the sequence and wakes ([`notify`]). A notification that comes
//! after the waiter's `prepare` changes the sequence, so the waiter's sleep returns (or
//! never starts) even if the notification came before it slept.

use super::atomic::AtomicU32;
use std::sync::atomic::Ordering::SeqCst;
use std::time::Instant;

use super::{remaining, spin_pause, Platform, SPIN_ROUNDS};

/// With the lock held: the sequence value that a later [`wait`] waits to change.
#[inline]
pub(crate) fn prepare(seq: &AtomicU32) -> u32 {
    seq.load(SeqCst)
}

/// With the lock released: waits until the sequence differs from `seen` (a notification
/// since [`prepare`]) or `deadline` passes; may return early. Returns `false` if the time
/// ran out without a notification.
pub(crate) fn wait<P: Platform>(seq: &AtomicU32, seen: u32, deadline: Option<Instant>) -> bool {
    for round in 0..SPIN_ROUNDS {
        if seq.load(SeqCst) != seen {
            return true;
        }
        spin_pause(round);
    }
    P::wait(seq, seen, remaining(deadline));
    seq.load(SeqCst) != seen || deadline.is_none_or(|d| Instant::now() < d)
}

/// With the lock held: wakes up to `n` waiters.
#[inline]
pub(crate) fn notify<P: Platform>(seq: &AtomicU32, n: u32) {
    seq.fetch_add(1, SeqCst);
    P::wake(seq, n);
}
