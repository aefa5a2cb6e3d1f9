//! Model checking of the lock and semaphore algorithms (`src/raw/`) with loom: every
//! interleaving of a few threads, up to loom's bounds. The futex of the model really
//! sleeps (until a wake), so a lost wake-up shows as a deadlock, and the critical sections
//! touch a loom `UnsafeCell`, so an acquire or release with too weak an ordering shows as
//! a data race.
//!
//! The algorithm files are compiled here as they are, with loom's atomics in place of
//! std's (they take `AtomicU32` from `super::atomic`). Run:
//!
//! ```text
//! RUSTFLAGS="--cfg loom" cargo test -p multiproc --test loom_raw --release
//! ```
#![cfg(loom)]

use std::sync::atomic::Ordering::SeqCst;
use std::time::{Duration, Instant};

use loom::cell::UnsafeCell;
use loom::sync::atomic::AtomicU32;
use loom::sync::Arc;

#[path = "../src/raw/lock.rs"]
#[allow(dead_code)]
mod lock;
#[path = "../src/raw/semaphore.rs"]
#[allow(dead_code)]
mod semaphore;

// What the algorithm files take from their parent module.

mod atomic {
    pub(crate) use loom::sync::atomic::{fence, AtomicU32};
}

trait Platform {
    fn wait(word: &AtomicU32, expected: u32, timeout: Option<Duration>);
    fn wake(word: &AtomicU32, n: u32);
    fn alive(pid: u32) -> bool;
}

/// One round of spinning keeps the models small; the sleeping path is the one to check.
const SPIN_ROUNDS: u32 = 1;

fn spin_pause(_: u32) {
    loom::thread::yield_now();
}

fn remaining(deadline: Option<Instant>) -> Option<Duration> {
    deadline.map(|d| d.saturating_duration_since(Instant::now()))
}

/// Owners never die in these models: liveness checks never come due.
fn check_interval(_: u32) -> Duration {
    Duration::from_secs(3600)
}

/// A futex: `wait` checks the word and sleeps under one mutex, `wake` bumps a generation
/// under it, as the kernel's hash-bucket lock orders them. Timeouts are ignored, so
/// nothing can hide a lost wake-up behind one.
struct Futex {
    generation: loom::sync::Mutex<u64>,
    wakeup: loom::sync::Condvar,
}

loom::lazy_static! {
    static ref FUTEX: Futex =
        Futex { generation: loom::sync::Mutex::new(0), wakeup: loom::sync::Condvar::new() };
}

struct Model;

impl Platform for Model {
    fn wait(word: &AtomicU32, expected: u32, _: Option<Duration>) {
        let mut generation = FUTEX.generation.lock().unwrap();
        if word.load(SeqCst) != expected {
            return;
        }
        let seen = *generation;
        while *generation == seen {
            generation = FUTEX.wakeup.wait(generation).unwrap();
        }
    }

    fn wake(_: &AtomicU32, _: u32) {
        *FUTEX.generation.lock().unwrap() += 1;
        FUTEX.wakeup.notify_all();
    }

    fn alive(_: u32) -> bool {
        true
    }
}

fn model(f: impl Fn() + Sync + Send + 'static) {
    let mut builder = loom::model::Builder::new();
    builder.preemption_bound = Some(3);
    builder.check(f);
}

/// Threads `1..=n` each take the lock once and add to a plain cell inside it.
fn lock_round(n: u32) {
    let word = Arc::new(AtomicU32::new(0));
    let cell = Arc::new(UnsafeCell::new(0u32));
    let threads: Vec<_> = (1..=n)
        .map(|me| {
            let (word, cell) = (word.clone(), cell.clone());
            loom::thread::spawn(move || {
                assert_eq!(lock::acquire::<Model>(&word, me, None), Some(lock::Acquired::Normally));
                // SAFETY: the access is exclusive if the lock is correct, which is what
                // loom checks: an overlapping or unordered access fails the model.
                cell.with_mut(|v| unsafe { *v += 1 });
                assert!(lock::release::<Model>(&word));
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    // SAFETY: every thread has been joined.
    assert_eq!(cell.with(|v| unsafe { *v }), n);
    assert_eq!(word.load(SeqCst), 0);
}

#[test]
fn the_lock_excludes_and_publishes_with_two_threads() {
    model(|| lock_round(2));
}

#[test]
fn the_lock_wakes_every_sleeper_with_three_threads() {
    model(|| lock_round(3));
}

#[test]
fn the_lock_can_be_released_by_another_thread() {
    // Python's Lock: any thread may release it, and a waiter must then get it.
    model(|| {
        let word = Arc::new(AtomicU32::new(0));
        assert!(lock::try_acquire(&word, 1));
        let waiter = {
            let word = word.clone();
            loom::thread::spawn(move || {
                lock::acquire::<Model>(&word, 2, None).unwrap();
                lock::owner(&word)
            })
        };
        let releaser = {
            let word = word.clone();
            loom::thread::spawn(move || assert!(lock::release::<Model>(&word)))
        };
        releaser.join().unwrap();
        assert_eq!(waiter.join().unwrap(), Some(2));
    });
}

#[test]
fn the_semaphore_never_lends_more_than_it_has() {
    model(|| {
        let count = Arc::new(AtomicU32::new(1));
        let sleepers = Arc::new(AtomicU32::new(0));
        let cell = Arc::new(UnsafeCell::new(0u32));
        let threads: Vec<_> = (0..2)
            .map(|_| {
                let (count, sleepers, cell) = (count.clone(), sleepers.clone(), cell.clone());
                loom::thread::spawn(move || {
                    assert!(semaphore::acquire::<Model>(&count, &sleepers, None));
                    // SAFETY: one unit, so exclusive if the semaphore is correct (checked).
                    cell.with_mut(|v| unsafe { *v += 1 });
                    assert!(semaphore::release::<Model>(&count, &sleepers, 1, 1));
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        // SAFETY: every thread has been joined.
        assert_eq!(cell.with(|v| unsafe { *v }), 2);
        assert_eq!(count.load(SeqCst), 1);
    });
}

#[test]
fn a_semaphore_release_wakes_a_sleeping_acquirer() {
    model(|| {
        let count = Arc::new(AtomicU32::new(0));
        let sleepers = Arc::new(AtomicU32::new(0));
        let taker = {
            let (count, sleepers) = (count.clone(), sleepers.clone());
            loom::thread::spawn(move || {
                assert!(semaphore::acquire::<Model>(&count, &sleepers, None));
                assert!(semaphore::acquire::<Model>(&count, &sleepers, None));
            })
        };
        assert!(semaphore::release::<Model>(&count, &sleepers, 1, u32::MAX));
        assert!(semaphore::release::<Model>(&count, &sleepers, 1, u32::MAX));
        taker.join().unwrap();
        assert_eq!(count.load(SeqCst), 0);
    });
}
