//! Model checking of the synchronisation algorithms (`src/raw/`: lock, semaphore, event,
//! condition, barrier, the queue ring and its sleep/wake handshake) with loom: every
//! interleaving of a few threads, up to loom's bounds. The futex of the model really
//! sleeps (until a wake), so a lost wake-up shows as a deadlock, and critical sections and
//! ring records live in loom `UnsafeCell`s, so an acquire or release with too weak an
//! ordering shows as a data race.
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
use loom::sync::atomic::{AtomicU32, AtomicU64};
use loom::sync::Arc;

#[path = "../src/raw/barrier.rs"]
#[allow(dead_code)]
mod barrier;
#[path = "../src/raw/condition.rs"]
#[allow(dead_code)]
mod condition;
#[path = "../src/raw/event.rs"]
#[allow(dead_code)]
mod event;
#[path = "../src/raw/lock.rs"]
#[allow(dead_code)]
mod lock;
#[path = "../src/raw/ring.rs"]
#[allow(dead_code)]
mod ring;
#[path = "../src/raw/semaphore.rs"]
#[allow(dead_code)]
mod semaphore;
#[path = "../src/raw/wake.rs"]
#[allow(dead_code)]
mod wake;

// What the algorithm files take from their parent module.

mod atomic {
    pub(crate) use loom::sync::atomic::{fence, AtomicU32, AtomicU64};
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
    model_bounded(3, f);
}

/// A model with at most `preemptions` preemptions per execution (the larger models need a
/// smaller bound to finish in seconds).
fn model_bounded(preemptions: usize, f: impl Fn() + Sync + Send + 'static) {
    let mut builder = loom::model::Builder::new();
    builder.preemption_bound = Some(preemptions);
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

// --------------------------------------------------------------------------------------
// The sleep/wake handshake

#[test]
fn a_waker_never_misses_a_sleeper() {
    model(|| {
        let ready = Arc::new(AtomicU32::new(0));
        let seq = Arc::new(AtomicU32::new(0));
        let asleep = Arc::new(AtomicU32::new(0));
        let sleeper = {
            let (ready, seq, asleep) = (ready.clone(), seq.clone(), asleep.clone());
            loom::thread::spawn(move || {
                while ready.load(SeqCst) == 0 {
                    wake::sleep::<Model>(&seq, &asleep, None, || ready.load(SeqCst) == 0);
                }
            })
        };
        ready.store(1, SeqCst);
        wake::wake::<Model>(&seq, &asleep, 1);
        sleeper.join().unwrap();
        assert_eq!(asleep.load(SeqCst), 0);
    });
}

// --------------------------------------------------------------------------------------
// Event

#[test]
fn an_event_set_wakes_its_waiter_and_publishes() {
    model(|| {
        let flag = Arc::new(AtomicU32::new(0));
        let sleepers = Arc::new(AtomicU32::new(0));
        let cell = Arc::new(UnsafeCell::new(0u32));
        let waiter = {
            let (flag, sleepers, cell) = (flag.clone(), sleepers.clone(), cell.clone());
            loom::thread::spawn(move || {
                assert!(event::wait::<Model>(&flag, &sleepers, None));
                // SAFETY: written before `set`, read after `wait` saw it: ordered if the
                // event is correct (loom checks).
                cell.with(|v| unsafe { *v })
            })
        };
        // SAFETY: the waiter reads the cell only after the event is set.
        cell.with_mut(|v| unsafe { *v = 7 });
        event::set::<Model>(&flag, &sleepers);
        assert_eq!(waiter.join().unwrap(), 7);
    });
}

#[test]
fn an_event_set_wakes_two_waiters() {
    model(|| {
        let flag = Arc::new(AtomicU32::new(0));
        let sleepers = Arc::new(AtomicU32::new(0));
        let waiters: Vec<_> = (0..2)
            .map(|_| {
                let (flag, sleepers) = (flag.clone(), sleepers.clone());
                loom::thread::spawn(move || assert!(event::wait::<Model>(&flag, &sleepers, None)))
            })
            .collect();
        event::set::<Model>(&flag, &sleepers);
        for w in waiters {
            w.join().unwrap();
        }
        assert!(event::is_set(&flag));
    });
}

// --------------------------------------------------------------------------------------
// Condition

/// A condition's words, for the model.
#[derive(Default)]
struct ModelCondition {
    waiters: AtomicU32,
    signals: AtomicU32,
    next: AtomicU32,
    eligible: AtomicU32,
}

impl ModelCondition {
    fn words(&self) -> condition::Words<'_> {
        condition::Words {
            waiters: &self.waiters,
            signals: &self.signals,
            next: &self.next,
            eligible: &self.eligible,
        }
    }
}

/// A waiter loops "lock; while !ready: wait; unlock" on a condition over a `lock` word;
/// the notifier sets `ready` under the lock and notifies `n`, then (if `n` left waiters
/// unsignalled) notifies the rest, each time under the lock.
fn condition_round(waiters: u32, n: u32) {
    let word = Arc::new(AtomicU32::new(0));
    let cond = Arc::new(ModelCondition::default());
    let ready = Arc::new(UnsafeCell::new(false));
    let threads: Vec<_> = (1..=waiters)
        .map(|me| {
            let (word, cond, ready) = (word.clone(), cond.clone(), ready.clone());
            loom::thread::spawn(move || {
                lock::acquire::<Model>(&word, me, None).unwrap();
                // SAFETY: `ready` is touched only with the lock held (loom checks).
                while !ready.with(|r| unsafe { *r }) {
                    let ticket = condition::prepare(&cond.words());
                    assert!(lock::release::<Model>(&word));
                    assert!(condition::wait::<Model>(&cond.words(), ticket, None));
                    lock::acquire::<Model>(&word, me, None).unwrap();
                }
                assert!(lock::release::<Model>(&word));
            })
        })
        .collect();
    let notifier = waiters + 1;
    lock::acquire::<Model>(&word, notifier, None).unwrap();
    // SAFETY: under the lock.
    ready.with_mut(|r| unsafe { *r = true });
    condition::notify::<Model>(&cond.words(), n);
    assert!(lock::release::<Model>(&word));
    if n < waiters {
        lock::acquire::<Model>(&word, notifier, None).unwrap();
        condition::notify::<Model>(&cond.words(), u32::MAX);
        assert!(lock::release::<Model>(&word));
    }
    for t in threads {
        t.join().unwrap();
    }
    // Every signal given was taken, and no waiter is left registered.
    assert_eq!(cond.waiters.load(SeqCst), 0);
    assert_eq!(cond.signals.load(SeqCst), 0);
}

/// Two waiters register; `notify(1)` signals exactly one; a waiter that registers after
/// the notification cannot take its signal; the second waiter, out of time, withdraws.
#[test]
fn a_condition_notify_one_signals_exactly_one_earlier_waiter() {
    model(|| {
        let cond = Arc::new(ModelCondition::default());
        let first = condition::prepare(&cond.words());
        let second = condition::prepare(&cond.words());
        condition::notify::<Model>(&cond.words(), 1);
        let late = condition::prepare(&cond.words());
        assert!(!condition::wait::<Model>(&cond.words(), late, Some(Instant::now())));
        let c = cond.clone();
        let taker = loom::thread::spawn(move || condition::wait::<Model>(&c.words(), first, None));
        assert!(taker.join().unwrap());
        assert!(!condition::wait::<Model>(&cond.words(), second, Some(Instant::now())));
        assert!(!condition::timed_out(&cond.words(), second));
        assert!(!condition::timed_out(&cond.words(), late));
        assert_eq!((cond.waiters.load(SeqCst), cond.signals.load(SeqCst)), (0, 0));
    });
}

#[test]
fn a_condition_notify_wakes_the_waiter() {
    model(|| condition_round(1, 1));
}

#[test]
fn a_condition_notify_all_wakes_both_waiters() {
    model(|| condition_round(2, u32::MAX));
}

#[test]
fn a_condition_notify_one_then_the_rest_wakes_both_waiters() {
    model(|| condition_round(2, 1));
}

// --------------------------------------------------------------------------------------
// Barrier

struct ModelBarrier {
    words: [AtomicU32; 7],
    pids: [AtomicU32; 2],
}

impl ModelBarrier {
    fn new(parties: u32) -> ModelBarrier {
        let b = ModelBarrier {
            words: std::array::from_fn(|_| AtomicU32::new(0)),
            pids: std::array::from_fn(|_| AtomicU32::new(0)),
        };
        b.words[barrier::Word::Parties as usize].store(parties, SeqCst);
        b
    }
}

impl barrier::Layout for ModelBarrier {
    fn word(&self, word: barrier::Word) -> &AtomicU32 {
        &self.words[word as usize]
    }

    fn pid(&self, index: usize) -> &AtomicU32 {
        &self.pids[index]
    }
}

#[test]
fn a_barrier_lets_every_party_pass_twice() {
    // Two parties, two generations: each party passes both, with arrival indices 0 and 1
    // in each generation, and the action runs once per generation before anyone passes.
    model(|| {
        let b = Arc::new(ModelBarrier::new(2));
        let actions = Arc::new(AtomicU32::new(0));
        let party = |me: u32| {
            let (b, actions) = (b.clone(), actions.clone());
            move || {
                let mut indices = Vec::new();
                for round in 1..=2 {
                    let action = || {
                        actions.fetch_add(1, SeqCst);
                        true
                    };
                    indices.push(barrier::wait::<Model, _>(&*b, me, action, None).unwrap());
                    assert!(actions.load(SeqCst) >= round);
                }
                indices
            }
        };
        let other = loom::thread::spawn(party(2));
        let mine = party(1)();
        let theirs = other.join().unwrap();
        for round in 0..2 {
            let mut pair = [mine[round], theirs[round]];
            pair.sort();
            assert_eq!(pair, [0, 1]);
        }
        assert_eq!(actions.load(SeqCst), 2);
        assert_eq!(barrier::n_waiting(&*b), 0);
        assert!(!barrier::broken(&*b));
    });
}

#[test]
fn an_aborted_barrier_releases_its_waiter() {
    model(|| {
        let b = Arc::new(ModelBarrier::new(2));
        let waiter = {
            let b = b.clone();
            loom::thread::spawn(move || barrier::wait::<Model, _>(&*b, 1, || true, None))
        };
        barrier::abort::<Model, _>(&*b, 2);
        assert_eq!(waiter.join().unwrap(), Err(barrier::Broken));
        assert!(barrier::broken(&*b));
    });
}

// --------------------------------------------------------------------------------------
// The queue ring

struct ModelRing {
    words: [AtomicU32; 7],
    words64: [AtomicU64; 4],
    data: Vec<UnsafeCell<u8>>,
    maxsize: u64,
}

impl ModelRing {
    fn new(capacity: usize, maxsize: u64) -> ModelRing {
        assert!(capacity.is_power_of_two());
        ModelRing {
            words: std::array::from_fn(|_| AtomicU32::new(0)),
            words64: std::array::from_fn(|_| AtomicU64::new(0)),
            data: (0..capacity).map(|_| UnsafeCell::new(0)).collect(),
            maxsize,
        }
    }
}

impl ring::Layout for ModelRing {
    fn word(&self, word: ring::Word) -> &AtomicU32 {
        &self.words[word as usize]
    }

    fn word64(&self, word: ring::Word64) -> &AtomicU64 {
        &self.words64[word as usize]
    }

    fn capacity(&self) -> usize {
        self.data.len()
    }

    fn maxsize(&self) -> u64 {
        self.maxsize
    }

    fn write_u32(&self, at: usize, value: u32) {
        self.copy_in(at, &value.to_ne_bytes());
    }

    fn read_u32(&self, at: usize) -> u32 {
        let mut bytes = [0; 4];
        self.copy_out(at, &mut bytes);
        u32::from_ne_bytes(bytes)
    }

    fn copy_in(&self, at: usize, src: &[u8]) {
        for (i, &byte) in src.iter().enumerate() {
            // SAFETY: the ring's protocol makes this byte the writer's alone; loom reports
            // any access that is not ordered with this one.
            self.data[at + i].with_mut(|b| unsafe { *b = byte });
        }
    }

    fn copy_out(&self, at: usize, dst: &mut [u8]) {
        for (i, byte) in dst.iter_mut().enumerate() {
            // SAFETY: as in `copy_in`.
            *byte = self.data[at + i].with(|b| unsafe { *b });
        }
    }
}

/// A record of `len` bytes all equal to `tag` (its kind is inline).
struct Rec(Vec<u8>);

impl ring::Outbound for Rec {
    fn kind(&self) -> u32 {
        ring::KIND_INLINE
    }

    fn payload(&self) -> &[u8] {
        &self.0
    }
}

#[derive(Default)]
struct Taken(Vec<Vec<u8>>);

impl ring::Sink for Taken {
    fn record(&mut self, kind: u32, len: usize) -> &mut [u8] {
        assert_eq!(kind, ring::KIND_INLINE);
        self.0.push(vec![0; len]);
        self.0.last_mut().unwrap()
    }
}

fn put_all(r: &ModelRing, me: u32, records: &[Rec]) {
    let mut done = 0;
    ring::put::<Model, _, _>(r, me, records, None, &mut done).unwrap();
    assert_eq!(done, records.len());
}

#[test]
fn the_ring_delivers_two_producers_records_once_each_in_order() {
    // A 32-byte ring holds two 16-byte records; producer 1's second record (24 bytes)
    // must wait for room and wrap. The consumer sees every record once, whole, and each
    // producer's records in the order it put them. (Two preemptions: three take minutes.)
    model_bounded(2, || {
        let r = Arc::new(ModelRing::new(32, 0));
        let producers: Vec<_> =
            [(1u32, vec![vec![0x11u8; 1], vec![0x12; 9]]), (2, vec![vec![0x21; 1]])]
                .into_iter()
                .map(|(me, payloads)| {
                    let r = r.clone();
                    loom::thread::spawn(move || {
                        for payload in payloads {
                            put_all(&r, me, &[Rec(payload)]);
                        }
                    })
                })
                .collect();
        let mut taken = Taken::default();
        while taken.0.len() < 3 {
            assert_eq!(ring::get::<Model, _, _>(&*r, 3, 2, &mut taken, None), Ok(true));
        }
        for p in producers {
            p.join().unwrap();
        }
        for record in &taken.0 {
            assert!(record.iter().all(|&b| b == record[0]), "torn record {record:?}");
        }
        let tags: Vec<u8> = taken.0.iter().map(|r| r[0]).collect();
        let mut sorted = tags.clone();
        sorted.sort();
        assert_eq!(sorted, [0x11, 0x12, 0x21], "lost or duplicated: {tags:x?}");
        let first = tags.iter().position(|&t| t == 0x11).unwrap();
        let second = tags.iter().position(|&t| t == 0x12).unwrap();
        assert!(first < second, "out of order: {tags:x?}");
        assert_eq!(ring::len(&*r), 0);
    });
}

#[test]
fn two_consumers_never_take_the_same_record() {
    model_bounded(2, || {
        let r = Arc::new(ModelRing::new(32, 0));
        let consumers: Vec<_> = (2..=3)
            .map(|me| {
                let r = r.clone();
                loom::thread::spawn(move || {
                    let mut taken = Taken::default();
                    assert_eq!(ring::get::<Model, _, _>(&*r, me, 1, &mut taken, None), Ok(true));
                    taken.0
                })
            })
            .collect();
        put_all(&r, 1, &[Rec(vec![1; 1]), Rec(vec![2; 1])]);
        let mut got: Vec<Vec<u8>> = consumers.into_iter().flat_map(|c| c.join().unwrap()).collect();
        got.sort();
        assert_eq!(got, [vec![1], vec![2]]);
    });
}

#[test]
fn a_full_ring_wakes_its_putter() {
    // maxsize 1: the second put sleeps until the consumer takes the first.
    model(|| {
        let r = Arc::new(ModelRing::new(32, 1));
        let producer = {
            let r = r.clone();
            loom::thread::spawn(move || put_all(&r, 1, &[Rec(vec![1; 1]), Rec(vec![2; 1])]))
        };
        let mut taken = Taken::default();
        while taken.0.len() < 2 {
            assert_eq!(ring::get::<Model, _, _>(&*r, 2, 1, &mut taken, None), Ok(true));
        }
        producer.join().unwrap();
        assert_eq!(taken.0, [vec![1], vec![2]]);
    });
}

#[test]
fn a_closed_ring_is_drained_before_it_reports_closed() {
    model(|| {
        let r = Arc::new(ModelRing::new(32, 0));
        let producer = {
            let r = r.clone();
            loom::thread::spawn(move || {
                put_all(&r, 1, &[Rec(vec![5; 1])]);
                ring::close::<Model, _>(&*r);
            })
        };
        let mut taken = Taken::default();
        loop {
            match ring::get::<Model, _, _>(&*r, 2, 1, &mut taken, None) {
                Ok(got) => assert!(got),
                Err(failure) => {
                    assert_eq!(failure, ring::Failure::Closed);
                    break;
                }
            }
        }
        producer.join().unwrap();
        assert_eq!(taken.0, [vec![5]], "an item put before close was not delivered");
    });
}
