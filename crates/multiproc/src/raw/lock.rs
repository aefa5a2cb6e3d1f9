//! A mutual-exclusion word with owner-died recovery.
//!
//! The word is `0` when free, otherwise `owner_pid | CONTENDED?`. `CONTENDED` is set by a
//! waiter before it sleeps, so that release knows to wake someone. Any process may release
//! (as with Python's `Lock`): release swaps the word to `0` and wakes one sleeper if the
//! old word had `CONTENDED`.

use super::atomic::AtomicU32;
use std::sync::atomic::Ordering::{Acquire, Relaxed, Release};
use std::time::Instant;

use super::{check_interval, remaining, spin_pause, Platform, SPIN_ROUNDS};

/// Set in the lock word when a waiter may be asleep.
pub(crate) const CONTENDED: u32 = 1 << 31;

/// How an acquisition went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Acquired {
    /// The lock was free or released normally.
    Normally,
    /// The previous owner (this pid) died holding it; the caller now owns it.
    FromDeadOwner(u32),
}

/// One attempt, no waiting.
pub(crate) fn try_acquire(word: &AtomicU32, me: u32) -> bool {
    word.compare_exchange(0, me, Acquire, Relaxed).is_ok()
}

/// Acquires the lock for `me` (a pid, non-zero, below `CONTENDED`), waiting until
/// `deadline`; `None` if the deadline passed first.
pub(crate) fn acquire<P: Platform>(
    word: &AtomicU32,
    me: u32,
    deadline: Option<Instant>,
) -> Option<Acquired> {
    debug_assert!(me != 0 && me & CONTENDED == 0);
    if try_acquire(word, me) {
        return Some(Acquired::Normally);
    }
    for round in 0..SPIN_ROUNDS {
        let v = word.load(Relaxed);
        if v == 0 && try_acquire(word, me) {
            return Some(Acquired::Normally);
        }
        if v & CONTENDED != 0 {
            break;
        }
        spin_pause(round);
    }
    let mut check_round = 0;
    let mut next_check = Instant::now() + check_interval(0);
    loop {
        let v = word.load(Relaxed);
        if v == 0 {
            // Others may still sleep: keep CONTENDED so our release wakes them.
            if word.compare_exchange(0, me | CONTENDED, Acquire, Relaxed).is_ok() {
                return Some(Acquired::Normally);
            }
            continue;
        }
        if v & CONTENDED == 0 && word.compare_exchange(v, v | CONTENDED, Relaxed, Relaxed).is_err()
        {
            continue;
        }
        let now = Instant::now();
        if deadline.is_some_and(|d| now >= d) {
            return None;
        }
        if now >= next_check {
            let owner = v & !CONTENDED;
            if !P::alive(owner) {
                // Take over from exactly the word we judged; if it changed, someone else
                // did (or the owner released), and we go round again.
                if word.compare_exchange(v | CONTENDED, me | CONTENDED, Acquire, Relaxed).is_ok() {
                    return Some(Acquired::FromDeadOwner(owner));
                }
                continue;
            }
            check_round += 1;
            next_check = now + check_interval(check_round);
        }
        let until_check = next_check.saturating_duration_since(now);
        let timeout = match remaining(deadline) {
            Some(left) => left.min(until_check),
            None => until_check,
        };
        P::wait(word, v | CONTENDED, Some(timeout));
    }
}

/// Releases the lock, whoever holds it; `false` if it was not locked.
pub(crate) fn release<P: Platform>(word: &AtomicU32) -> bool {
    let previous = word.swap(0, Release);
    if previous & CONTENDED != 0 {
        P::wake(word, 1);
    }
    previous != 0
}

/// The owner's pid, if locked.
pub(crate) fn owner(word: &AtomicU32) -> Option<u32> {
    match word.load(Relaxed) & !CONTENDED {
        0 => None,
        pid => Some(pid),
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;
    use std::sync::Arc;
    use std::time::Duration;

    /// Futex-free platform for the algorithm alone: sleeping is a yield, pid 999 is dead.
    struct Fake;

    impl Platform for Fake {
        fn wait(_: &AtomicU32, _: u32, _: Option<Duration>) {
            std::thread::yield_now();
        }
        fn wake(_: &AtomicU32, _: u32) {}
        fn alive(pid: u32) -> bool {
            pid != 999
        }
    }

    #[test]
    fn a_dead_owner_is_taken_over_once() {
        let word = AtomicU32::new(999);
        let got = acquire::<Fake>(&word, 5, None);
        assert_eq!(got, Some(Acquired::FromDeadOwner(999)));
        assert_eq!(owner(&word), Some(5));
        assert!(release::<Fake>(&word));
        assert!(!release::<Fake>(&word));
    }

    #[test]
    fn a_live_owner_makes_waiters_time_out() {
        let word = AtomicU32::new(7);
        let deadline = Instant::now() + Duration::from_millis(30);
        assert_eq!(acquire::<Fake>(&word, 5, Some(deadline)), None);
        assert_eq!(owner(&word), Some(7));
    }

    #[test]
    fn threads_never_overlap_inside_the_lock() {
        let word = Arc::new(AtomicU32::new(0));
        let inside = Arc::new(AtomicUsize::new(0));
        let threads: Vec<_> = (1..=4u32)
            .map(|me| {
                let (word, inside) = (word.clone(), inside.clone());
                std::thread::spawn(move || {
                    for _ in 0..20_000 {
                        acquire::<Fake>(&word, me, None).unwrap();
                        assert_eq!(inside.fetch_add(1, Relaxed), 0);
                        inside.fetch_sub(1, Relaxed);
                        assert!(release::<Fake>(&word));
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(word.load(Relaxed), 0);
    }
}
