//! Process-shared synchronisation: mutual exclusion, waking, and dead participants.

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use multiproc::queues::Queue;
use multiproc::synchronize::{Barrier, BoundedSemaphore, Condition, Event, Lock, RLock, Semaphore};
use multiproc::{pipe, Connection, Error, Process, StartMethod};

mod common;
use common::waits::{shared_futex_sleepers, wait_until};

const LONG: Option<Duration> = Some(Duration::from_secs(60));

/// Waits until `process` sleeps on a process-shared futex (a lock, semaphore, event or
/// condition of this library); fails the test after a long deadline.
fn wait_asleep(process: &Process, on: &str) {
    let pid = process.pid().expect("started") as u32;
    wait_until(&format!("process {pid} to sleep on {on}"), || shared_futex_sleepers(pid) > 0);
}

fn run_all(processes: &[Process]) {
    for p in processes {
        p.start().unwrap();
    }
    for p in processes {
        p.join_timeout(LONG.unwrap()).unwrap();
        assert_eq!(p.exitcode(), Some(0), "{:?}", p.panic_message());
    }
}

/// Inside the lock, the occupancy semaphore (of one unit) must always be free.
fn exclusive((lock, occupancy, rounds): (Lock, Semaphore, u32)) {
    for _ in 0..rounds {
        let _guard = lock.acquire().unwrap();
        let unit = occupancy.try_acquire().expect("two processes inside the lock at once");
        std::hint::spin_loop();
        drop(unit);
    }
}

#[test]
fn a_lock_excludes_other_processes() {
    for method in [StartMethod::Spawn, StartMethod::Fork] {
        let lock = Lock::new().unwrap();
        let occupancy = Semaphore::new(1).unwrap();
        let workers: Vec<Process> = (0..3)
            .map(|_| {
                Process::builder(exclusive, (lock.clone(), occupancy.clone(), 20_000))
                    .start_method(method)
                    .build()
            })
            .collect();
        run_all(&workers);
        assert!(!lock.is_locked());
    }
}

/// Takes the lock (or an RLock twice), reports, and waits to be killed.
fn hold_until_killed((lock, rlock, report): (Lock, RLock, Connection)) {
    lock.acquire().unwrap().leak();
    let a = rlock.acquire().unwrap();
    let b = rlock.acquire().unwrap();
    std::mem::forget((a, b));
    report.send(&"holding").unwrap();
    std::thread::sleep(Duration::from_secs(120));
}

#[test]
fn a_lock_whose_holder_was_killed_is_taken_over_with_owner_died() {
    let lock = Lock::new().unwrap();
    let rlock = RLock::new().unwrap();
    let (parent, child) = pipe(true).unwrap();
    let p = Process::new(hold_until_killed, (lock.clone(), rlock.clone(), child));
    p.start().unwrap();
    assert_eq!(parent.recv_timeout::<String>(Duration::from_secs(60)).unwrap(), "holding");
    assert!(lock.try_acquire().is_err(), "the live holder keeps it");
    p.kill().unwrap();
    p.join_timeout(LONG.unwrap()).unwrap();

    let started = Instant::now();
    let guard = lock.acquire_timeout(Duration::from_secs(30)).unwrap();
    assert!(guard.owner_died());
    drop(guard);
    let guard = rlock.acquire_timeout(Duration::from_secs(30)).unwrap();
    assert!(guard.owner_died());
    assert_eq!(rlock.count(), 1, "the dead holder's levels are gone");
    drop(guard);
    assert!(started.elapsed() < Duration::from_secs(30));

    // Both stay usable, with no trace of the death.
    assert!(!lock.acquire().unwrap().owner_died());
    assert!(!rlock.acquire().unwrap().owner_died());
}

#[test]
fn a_waiter_blocked_on_a_dead_holder_gets_the_lock() {
    // The waiter is already asleep when the holder dies.
    let lock = Lock::new().unwrap();
    let rlock = RLock::new().unwrap();
    let (parent, child) = pipe(true).unwrap();
    let holder = Process::new(hold_until_killed, (lock.clone(), rlock, child));
    holder.start().unwrap();
    parent.recv_timeout::<String>(Duration::from_secs(60)).unwrap();
    let waiter = multiproc::spawn(
        |lock: Lock| lock.acquire_timeout(Duration::from_secs(60)).map(|g| g.owner_died()).unwrap(),
        lock.clone(),
    )
    .unwrap();
    wait_asleep(waiter.process(), "the held lock");
    assert!(matches!(waiter.join_timeout(Duration::from_millis(10)), Err(Error::Timeout(_))));
    holder.kill().unwrap();
    holder.join_timeout(LONG.unwrap()).unwrap();
    assert!(waiter.join().unwrap(), "the waiter saw owner_died");
}

#[test]
fn release_rules_follow_python() {
    let lock = Lock::new().unwrap();
    assert!(matches!(lock.release(), Err(Error::InvalidRelease(_))));
    let rlock = RLock::new().unwrap();
    let other_thread = {
        let rlock = rlock.clone();
        std::thread::spawn(move || rlock.acquire().map(std::mem::forget))
    };
    other_thread.join().unwrap().unwrap();
    // Held by another thread: this thread may neither release nor take it.
    assert!(rlock.acquire_timeout(Duration::from_millis(10)).is_err());
    let bounded = BoundedSemaphore::new(2).unwrap();
    bounded.acquire().unwrap().leak();
    bounded.release().unwrap();
    assert!(matches!(bounded.release(), Err(Error::InvalidRelease(_))));
    assert_eq!(bounded.get_value(), 2);
}

fn take_and_report((sem, report): (Semaphore, Connection)) {
    sem.acquire_timeout(Duration::from_secs(60)).unwrap().leak();
    report.send(&multiproc::current_process().pid).unwrap();
}

#[test]
fn a_semaphore_wakes_processes_one_unit_at_a_time() {
    let sem = Semaphore::new(0).unwrap();
    let (parent, child) = pipe(true).unwrap();
    let waiters: Vec<Process> = (0..3)
        .map(|_| Process::new(take_and_report, (sem.clone(), child.try_clone().unwrap())))
        .collect();
    for w in &waiters {
        w.start().unwrap();
    }
    for w in &waiters {
        wait_asleep(w, "the semaphore");
    }
    for expected in 1..=3 {
        sem.release().unwrap();
        parent.recv_timeout::<i32>(Duration::from_secs(60)).unwrap();
        assert!(
            !parent.poll_timeout(Duration::from_millis(20)).unwrap(),
            "one release woke more than one process (after {expected})"
        );
    }
    for w in &waiters {
        w.join_timeout(LONG.unwrap()).unwrap();
        assert_eq!(w.exitcode(), Some(0));
    }
}

fn wait_for_event((event, report): (Event, Connection)) {
    report.send(&event.wait_timeout(Duration::from_secs(60)).is_ok()).unwrap();
}

#[test]
fn an_event_releases_every_waiting_process() {
    let event = Event::new().unwrap();
    let (parent, child) = pipe(true).unwrap();
    let waiters: Vec<Process> = (0..3)
        .map(|_| Process::new(wait_for_event, (event.clone(), child.try_clone().unwrap())))
        .collect();
    for w in &waiters {
        w.start().unwrap();
    }
    for w in &waiters {
        wait_asleep(w, "the event");
    }
    assert!(!parent.poll().unwrap());
    event.set();
    for _ in 0..3 {
        assert!(parent.recv_timeout::<bool>(Duration::from_secs(60)).unwrap());
    }
    for w in &waiters {
        w.join_timeout(LONG.unwrap()).unwrap();
    }
}

/// Waits for the shared "ready" predicate, kept in a semaphore's value; releases
/// `entered` once, when it first finds the predicate false (holding the lock, just before
/// it waits).
fn consume((cond, ready, entered, report): (Condition, Semaphore, Semaphore, Connection)) {
    let mut guard = cond.acquire().unwrap();
    let mut first = true;
    let predicate = || {
        let ready = ready.get_value() > 0;
        if !ready && std::mem::take(&mut first) {
            entered.release().unwrap();
        }
        ready
    };
    let ok = guard.wait_for_timeout(predicate, Duration::from_secs(60)).is_ok();
    report.send(&ok).unwrap();
}

#[test]
fn a_condition_notifies_waiting_processes() {
    for cond in [Condition::new().unwrap(), Condition::with_lock(Lock::new().unwrap()).unwrap()] {
        let ready = Semaphore::new(0).unwrap();
        let entered = Semaphore::new(0).unwrap();
        let (parent, child) = pipe(true).unwrap();
        let waiters: Vec<Process> = (0..2)
            .map(|_| {
                let args =
                    (cond.clone(), ready.clone(), entered.clone(), child.try_clone().unwrap());
                Process::new(consume, args)
            })
            .collect();
        for w in &waiters {
            w.start().unwrap();
        }
        // Both found the predicate false under the lock; once this process holds the lock
        // too, both are inside their wait (which gives the lock up only once waiting).
        entered.acquire_timeout(Duration::from_secs(60)).unwrap().leak();
        entered.acquire_timeout(Duration::from_secs(60)).unwrap().leak();
        {
            let guard = cond.acquire().unwrap();
            assert!(!parent.poll().unwrap());
            ready.release().unwrap();
            guard.notify_all();
        }
        for _ in 0..2 {
            assert!(parent.recv_timeout::<bool>(Duration::from_secs(60)).unwrap());
        }
        for w in &waiters {
            w.join_timeout(LONG.unwrap()).unwrap();
            assert_eq!(w.exitcode(), Some(0));
        }
    }
}

fn wait_on_condition_forever((cond, report): (Condition, Connection)) {
    let mut guard = cond.acquire().unwrap();
    report.send(&"waiting").unwrap();
    loop {
        guard.wait().unwrap();
    }
}

#[test]
fn a_process_killed_inside_a_condition_wait_blocks_nobody() {
    let cond = Condition::new().unwrap();
    let (parent, child) = pipe(true).unwrap();
    let p = Process::new(wait_on_condition_forever, (cond.clone(), child));
    p.start().unwrap();
    parent.recv_timeout::<String>(Duration::from_secs(60)).unwrap();
    // The child held the lock when it reported: holding it now means the child is inside
    // its wait, where it dies.
    let mut guard = cond.acquire_timeout(Duration::from_secs(30)).unwrap();
    wait_asleep(&p, "the condition");
    p.kill().unwrap();
    p.join_timeout(LONG.unwrap()).unwrap();
    guard.notify_all();
    assert!(matches!(guard.wait_timeout(Duration::from_millis(10)), Err(Error::Timeout(_))));
}

fn hold_condition_lock_until_killed((cond, report): (Condition, Connection)) {
    std::mem::forget(cond.acquire().unwrap());
    report.send(&"holding").unwrap();
    std::thread::sleep(Duration::from_secs(120));
}

#[test]
fn a_condition_whose_lock_holder_was_killed_recovers() {
    let cond = Condition::new().unwrap();
    let (parent, child) = pipe(true).unwrap();
    let p = Process::new(hold_condition_lock_until_killed, (cond.clone(), child));
    p.start().unwrap();
    parent.recv_timeout::<String>(Duration::from_secs(60)).unwrap();
    p.kill().unwrap();
    p.join_timeout(LONG.unwrap()).unwrap();
    let guard = cond.acquire_timeout(Duration::from_secs(30)).unwrap();
    assert!(guard.owner_died());
}

fn barrier_party(barrier: Barrier) -> u32 {
    barrier.wait_timeout(Duration::from_secs(60)).unwrap()
}

#[test]
fn a_barrier_releases_all_parties_with_distinct_indices() {
    let barrier = Barrier::new(3).unwrap();
    let a = multiproc::spawn(barrier_party, barrier.clone()).unwrap();
    let b = multiproc::spawn(barrier_party, barrier.clone()).unwrap();
    let mine = barrier.wait_timeout(Duration::from_secs(60)).unwrap();
    let mut indices = vec![mine, a.join().unwrap(), b.join().unwrap()];
    indices.sort();
    assert_eq!(indices, [0, 1, 2]);
    // And it can be used again.
    let a = multiproc::spawn(barrier_party, barrier.clone()).unwrap();
    let b = multiproc::spawn(barrier_party, barrier.clone()).unwrap();
    barrier.wait_timeout(Duration::from_secs(60)).unwrap();
    a.join().unwrap();
    b.join().unwrap();
}

static ACTIONS: AtomicU32 = AtomicU32::new(0);

fn count_action() {
    ACTIONS.fetch_add(1, Ordering::SeqCst);
}

#[test]
fn the_barrier_action_runs_once_per_trip() {
    let barrier = Barrier::builder(2).action(count_action).build().unwrap();
    let other = {
        let barrier = barrier.clone();
        std::thread::spawn(move || barrier.wait_timeout(Duration::from_secs(60)))
    };
    barrier.wait_timeout(Duration::from_secs(60)).unwrap();
    other.join().unwrap().unwrap();
    assert_eq!(ACTIONS.load(Ordering::SeqCst), 1);
}

fn wait_at_barrier_forever(barrier: Barrier) {
    let _ = barrier.wait();
    std::thread::sleep(Duration::from_secs(120));
}

#[test]
fn a_party_killed_at_the_barrier_breaks_it_instead_of_hanging_the_rest() {
    let barrier = Barrier::new(3).unwrap();
    let p = Process::new(wait_at_barrier_forever, barrier.clone());
    p.start().unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while barrier.n_waiting() < 1 {
        assert!(Instant::now() < deadline, "the child never reached the barrier");
        std::thread::yield_now();
    }
    p.kill().unwrap();
    p.join_timeout(LONG.unwrap()).unwrap();
    let started = Instant::now();
    assert!(matches!(barrier.wait_timeout(Duration::from_secs(30)), Err(Error::BrokenBarrier)));
    assert!(started.elapsed() < Duration::from_secs(30), "broke by timeout, not by death");
    assert!(barrier.broken());
    barrier.reset();
    assert!(!barrier.broken());
}

#[test]
fn abort_and_reset_wake_waiters_with_broken_barrier() {
    let barrier = Barrier::new(2).unwrap();
    let waiter = {
        let barrier = barrier.clone();
        std::thread::spawn(move || barrier.wait_timeout(Duration::from_secs(60)))
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    while barrier.n_waiting() < 1 {
        assert!(Instant::now() < deadline);
        std::thread::yield_now();
    }
    barrier.reset();
    assert!(matches!(waiter.join().unwrap(), Err(Error::BrokenBarrier)));
    assert!(!barrier.broken());
}

/// The process's own CPU time (user + system), from /proc/self/stat, in clock ticks.
fn cpu_ticks() -> u64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap();
    let fields: Vec<&str> = stat[stat.rfind(')').unwrap() + 2..].split(' ').collect();
    fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap()
}

fn idle_wait((event, lock, queue): (Event, Lock, Queue<u32>)) -> (u64, u64, u64) {
    let before = cpu_ticks();
    assert!(event.wait_timeout(Duration::from_millis(1500)).is_err());
    let after_event = cpu_ticks();
    assert!(lock.acquire_timeout(Duration::from_millis(1500)).is_err());
    let after_lock = cpu_ticks();
    // The parent holds the queue too: the get asks every 250 ms whether it was deserted.
    assert!(matches!(queue.get_timeout(Duration::from_millis(1500)), Err(Error::Empty)));
    (after_event - before, after_lock - after_event, cpu_ticks() - after_lock)
}

#[test]
fn an_idle_waiter_uses_no_cpu() {
    let event = Event::new().unwrap();
    let lock = Lock::new().unwrap();
    let queue = Queue::new(0).unwrap();
    let held = lock.acquire().unwrap();
    let (event_ticks, lock_ticks, queue_ticks) =
        multiproc::spawn(idle_wait, (event, lock.clone(), queue.clone())).unwrap().join().unwrap();
    drop(held);
    // A tick is 10 ms: 1.5 s of waiting may cost at most a few ticks of bookkeeping
    // (liveness checks), not a spinning core (150 ticks).
    assert!(event_ticks <= 3, "an Event wait used {event_ticks} ticks of CPU in 1.5 s");
    assert!(lock_ticks <= 3, "a Lock wait used {lock_ticks} ticks of CPU in 1.5 s");
    assert!(queue_ticks <= 3, "a queue get used {queue_ticks} ticks of CPU in 1.5 s");
}

#[test]
fn every_acquire_returns_a_guard_and_try_forms_fail_with_would_block() {
    let would_block = |r: Result<(), Error>| matches!(r, Err(Error::WouldBlock));

    let sem = Semaphore::new(1).unwrap();
    let unit = sem.try_acquire().unwrap();
    assert_eq!(sem.get_value(), 0);
    assert!(would_block(sem.try_acquire().map(drop)));
    drop(unit);
    assert_eq!(sem.get_value(), 1, "a dropped guard gives its unit back");
    sem.acquire().unwrap().leak();
    assert_eq!(sem.get_value(), 0, "a leaked guard keeps its unit");
    sem.release().unwrap();

    let bounded = BoundedSemaphore::new(1).unwrap();
    drop(bounded.acquire_timeout(Duration::from_secs(30)).unwrap());
    assert_eq!(bounded.get_value(), 1);
    assert!(matches!(bounded.release(), Err(Error::InvalidRelease(_))));

    let lock = Lock::new().unwrap();
    let held = lock.try_acquire().unwrap();
    assert!(would_block(lock.try_acquire().map(drop)));
    drop(held);
    assert!(!lock.is_locked());

    // An RLock: the holding thread may take it again without waiting, another may not.
    let rlock = RLock::new().unwrap();
    let a = rlock.try_acquire().unwrap();
    let b = rlock.try_acquire().unwrap();
    assert_eq!(rlock.count(), 2);
    let other = rlock.clone();
    assert!(std::thread::spawn(move || would_block(other.try_acquire().map(drop))).join().unwrap());
    drop((a, b));
    assert_eq!(rlock.count(), 0);

    let cond = Condition::with_lock(Lock::new().unwrap()).unwrap();
    let guard = cond.try_acquire().unwrap();
    assert!(would_block(cond.try_acquire().map(drop)));
    drop(guard);
    let cond = Condition::new().unwrap();
    let outer = cond.try_acquire().unwrap();
    drop(cond.try_acquire().unwrap()); // recursive: same thread
    drop(outer);
    drop(cond.try_acquire().unwrap());
}

#[test]
fn the_party_whose_barrier_wait_times_out_gets_timeout_and_the_others_broken() {
    let barrier = Barrier::builder(3).timeout(Duration::from_millis(200)).build().unwrap();
    let patient = {
        let barrier = barrier.clone();
        std::thread::spawn(move || barrier.wait_timeout(Duration::from_secs(60)))
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    while barrier.n_waiting() < 1 {
        assert!(Instant::now() < deadline, "the other party never reached the barrier");
        std::thread::yield_now();
    }
    // Its default timeout runs out: this party is told so, the patient one sees it broken.
    assert!(matches!(barrier.wait(), Err(Error::Timeout(d)) if d == Duration::from_millis(200)));
    assert!(matches!(patient.join().unwrap(), Err(Error::BrokenBarrier)));
    assert!(matches!(barrier.wait_timeout(Duration::ZERO), Err(Error::BrokenBarrier)));
    barrier.reset();
    assert!(!barrier.broken());
}

#[test]
fn event_and_condition_waits_report_timeout_as_an_error() {
    let event = Event::new().unwrap();
    let wanted = Duration::from_millis(10);
    assert!(matches!(event.wait_timeout(wanted), Err(Error::Timeout(d)) if d == wanted));
    event.set();
    event.wait();
    event.wait_timeout(Duration::ZERO).unwrap();

    let cond = Condition::new().unwrap();
    let mut guard = cond.acquire().unwrap();
    assert!(matches!(guard.wait_timeout(wanted), Err(Error::Timeout(d)) if d == wanted));
    assert!(taken_for_other_threads(&cond), "the guard holds the lock again after a timeout");
    let mut polls = 0;
    let timed_out = guard.wait_for_timeout(
        || {
            polls += 1;
            false
        },
        wanted,
    );
    assert!(matches!(timed_out, Err(Error::Timeout(d)) if d == wanted));
    assert!(polls >= 2, "the predicate is checked again once the time is out");
    guard.wait_for(|| true).unwrap();
}

/// Whether another thread finds a condition's lock taken.
fn taken_for_other_threads(cond: &Condition) -> bool {
    let other = cond.clone();
    std::thread::spawn(move || other.try_acquire().is_err()).join().unwrap()
}
