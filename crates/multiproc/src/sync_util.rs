//! The crate's in-process mutexes and condition variables, used without poisoning: every
//! `std::sync::Mutex` of the crate is locked, and every `Condvar` waited on, through here.
//!
//! A mutex is poisoned when a thread panics while holding it. Here that panic is a user's
//! (a pool callback, a manager's user object, a test thread) or a bug already reported by
//! its own panic; the state behind each of the crate's mutexes (a process's state, the
//! children registry, a pool's results, a manager's objects) is kept consistent at every
//! point a panic can unwind from. Refusing the state afterwards would wedge every other
//! thread of the process that shares it, turning one failed call into a hung program, so
//! these helpers take the state as it is. (Python's locks have no poisoning either.)
//!
//! A leaf module: it names nothing of the crate, so every layer, `sys/` included, uses it.

use std::sync::{Condvar, Mutex, MutexGuard, WaitTimeoutResult};
use std::time::{Duration, Instant};

/// Locks `m`, recovering the state if another thread panicked while holding it.
pub(crate) fn lock<T: ?Sized>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// The state of a mutex held exclusively, recovered if a thread panicked while holding it.
pub(crate) fn get_mut<T: ?Sized>(m: &mut Mutex<T>) -> &mut T {
    m.get_mut().unwrap_or_else(|p| p.into_inner())
}

/// Waits on `cond` until notified, relocking (and recovering) the state.
pub(crate) fn wait<'a, T>(cond: &Condvar, guard: MutexGuard<'a, T>) -> MutexGuard<'a, T> {
    cond.wait(guard).unwrap_or_else(|p| p.into_inner())
}

/// Waits on `cond` until notified or `timeout` has passed, relocking (and recovering) the
/// state.
pub(crate) fn wait_timeout<'a, T>(
    cond: &Condvar,
    guard: MutexGuard<'a, T>,
    timeout: Duration,
) -> (MutexGuard<'a, T>, WaitTimeoutResult) {
    cond.wait_timeout(guard, timeout).unwrap_or_else(|p| p.into_inner())
}

/// One wait of a condition-variable loop with a deadline (`None`: none): `Ok` with the
/// state after a wait on `cond` (notified, spuriously woken, or at the deadline; the caller
/// checks its condition again), `Err` with it, without waiting, once `deadline` has passed.
///
/// ```text
/// while !state.ready {
///     state = wait_deadline(&cond, state, deadline).map_err(|_| Error::Timeout(t))?;
/// }
/// ```
pub(crate) fn wait_deadline<'a, T>(
    cond: &Condvar,
    guard: MutexGuard<'a, T>,
    deadline: Option<Instant>,
) -> Result<MutexGuard<'a, T>, MutexGuard<'a, T>> {
    match deadline {
        None => Ok(wait(cond, guard)),
        Some(d) => {
            let left = d.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(guard);
            }
            Ok(wait_timeout(cond, guard, left).0)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    /// A mutex poisoned by a thread that panicked while holding it.
    fn poisoned(value: u32) -> Arc<Mutex<u32>> {
        let m = Arc::new(Mutex::new(value));
        let held = m.clone();
        let joined = std::thread::spawn(move || {
            let _guard = held.lock().unwrap();
            panic!("poisoning the mutex on purpose");
        })
        .join();
        assert!(joined.is_err(), "the thread was meant to panic");
        assert!(m.is_poisoned());
        m
    }

    #[test]
    fn a_poisoned_mutex_still_gives_its_state() {
        let m = poisoned(7);
        *lock(&m) += 1;
        assert_eq!(*lock(&m), 8);
        let mut m = Arc::try_unwrap(m).expect("the only handle");
        *get_mut(&mut m) += 1;
        assert_eq!(*lock(&m), 9);
    }

    #[test]
    fn a_wait_on_a_poisoned_mutex_returns_its_state() {
        let m = poisoned(1);
        let cond = Condvar::new();
        let (guard, result) = wait_timeout(&cond, lock(&m), Duration::from_millis(1));
        assert!(result.timed_out());
        assert_eq!(*guard, 1);
    }

    #[test]
    fn a_past_deadline_gives_the_state_back_without_waiting() {
        let m = Mutex::new(3);
        let cond = Condvar::new();
        let past = Instant::now();
        let guard = wait_deadline(&cond, lock(&m), Some(past)).expect_err("the deadline passed");
        assert_eq!(*guard, 3);
    }

    #[test]
    fn a_wait_with_a_deadline_wakes_on_a_notification() {
        let shared = Arc::new((Mutex::new(false), Condvar::new()));
        let setter = shared.clone();
        let t = std::thread::spawn(move || {
            *lock(&setter.0) = true;
            setter.1.notify_all();
        });
        // Bounded: the deadline ends the loop with a failure if the notification never comes.
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut ready = lock(&shared.0);
        while !*ready {
            ready = wait_deadline(&shared.1, ready, Some(deadline))
                .unwrap_or_else(|_| panic!("no notification within 30 s"));
        }
        drop(ready);
        t.join().unwrap();
    }
}
