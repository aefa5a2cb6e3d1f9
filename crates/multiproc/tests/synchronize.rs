//! Process-shared synchronisation: mutual exclusion, waking, and dead participants.

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

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
        let _guard = lock.acquire(None).unwrap();
        assert!(occupancy.try_acquire(), "two processes inside the lock at once");
        std::hint::spin_loop();
        occupancy.release().unwrap();
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
    lock.acquire(None).unwrap().leak();
    let a = rlock.acquire(None).unwrap();
    let b = rlock.acquire(None).unwrap();
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
    assert!(lock.try_acquire().unwrap().is_none(), "the live holder keeps it");
    p.kill().unwrap();
    p.join_timeout(LONG.unwrap()).unwrap();

    let started = Instant::now();
    let guard = lock.acquire(Some(Duration::from_secs(30))).unwrap();
    assert!(guard.owner_died());
    drop(guard);
    let guard = rlock.acquire(Some(Duration::from_secs(30))).unwrap();
    assert!(guard.owner_died());
    assert_eq!(rlock.count(), 1, "the dead holder's levels are gone");
    drop(guard);
    assert!(started.elapsed() < Duration::from_secs(30));

    // Both stay usable, with no trace of the death.
    assert!(!lock.acquire(None).unwrap().owner_died());
    assert!(!rlock.acquire(None).unwrap().owner_died());
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
        |lock: Lock| lock.acquire(Some(Duration::from_secs(60))).map(|g| g.owner_died()).unwrap(),
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
        std::thread::spawn(move || rlock.acquire(None).map(std::mem::forget))
    };
    other_thread.join().unwrap().unwrap();
    // Held by another thread: this thread may neither release nor take it.
    assert!(rlock.acquire(Some(Duration::from_millis(10))).is_err());
    let bounded = BoundedSemaphore::new(2).unwrap();
    bounded.acquire(None).unwrap();
    bounded.release().unwrap();
    assert!(matches!(bounded.release(), Err(Error::InvalidRelease(_))));
    assert_eq!(bounded.get_value(), 2);
}

fn take_and_report((sem, report): (Semaphore, Connection)) {
    sem.acquire(Some(Duration::from_secs(60))).unwrap();
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
    report.send(&event.wait(Some(Duration::from_secs(60)))).unwrap();
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
    let mut guard = cond.acquire(None).unwrap();
    let mut first = true;
    let predicate = || {
        let ready = ready.get_value() > 0;
        if !ready && std::mem::take(&mut first) {
            entered.release().unwrap();
        }
        ready
    };
    let ok = guard.wait_for(predicate, Some(Duration::from_secs(60))).unwrap();
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
        entered.acquire(LONG).unwrap();
        entered.acquire(LONG).unwrap();
        {
            let guard = cond.acquire(None).unwrap();
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
    let mut guard = cond.acquire(None).unwrap();
    report.send(&"waiting").unwrap();
    loop {
        guard.wait(None).unwrap();
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
    let mut guard = cond.acquire(Some(Duration::from_secs(30))).unwrap();
    wait_asleep(&p, "the condition");
    p.kill().unwrap();
    p.join_timeout(LONG.unwrap()).unwrap();
    guard.notify_all();
    assert!(!guard.wait(Some(Duration::from_millis(10))).unwrap());
}

fn hold_condition_lock_until_killed((cond, report): (Condition, Connection)) {
    std::mem::forget(cond.acquire(None).unwrap());
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
    let guard = cond.acquire(Some(Duration::from_secs(30))).unwrap();
    assert!(guard.owner_died());
}

fn barrier_party(barrier: Barrier) -> u32 {
    barrier.wait(Some(Duration::from_secs(60))).unwrap()
}

#[test]
fn a_barrier_releases_all_parties_with_distinct_indices() {
    let barrier = Barrier::new(3, None, None).unwrap();
    let a = multiproc::spawn(barrier_party, barrier.clone()).unwrap();
    let b = multiproc::spawn(barrier_party, barrier.clone()).unwrap();
    let mine = barrier.wait(Some(Duration::from_secs(60))).unwrap();
    let mut indices = vec![mine, a.join().unwrap(), b.join().unwrap()];
    indices.sort();
    assert_eq!(indices, [0, 1, 2]);
    // And it can be used again.
    let a = multiproc::spawn(barrier_party, barrier.clone()).unwrap();
    let b = multiproc::spawn(barrier_party, barrier.clone()).unwrap();
    barrier.wait(Some(Duration::from_secs(60))).unwrap();
    a.join().unwrap();
    b.join().unwrap();
}

static ACTIONS: AtomicU32 = AtomicU32::new(0);

fn count_action() {
    ACTIONS.fetch_add(1, Ordering::SeqCst);
}

#[test]
fn the_barrier_action_runs_once_per_trip() {
    let barrier = Barrier::new(2, Some(count_action), None).unwrap();
    let other = {
        let barrier = barrier.clone();
        std::thread::spawn(move || barrier.wait(Some(Duration::from_secs(60))))
    };
    barrier.wait(Some(Duration::from_secs(60))).unwrap();
    other.join().unwrap().unwrap();
    assert_eq!(ACTIONS.load(Ordering::SeqCst), 1);
}

fn wait_at_barrier_forever(barrier: Barrier) {
    let _ = barrier.wait(None);
    std::thread::sleep(Duration::from_secs(120));
}

#[test]
fn a_party_killed_at_the_barrier_breaks_it_instead_of_hanging_the_rest() {
    let barrier = Barrier::new(3, None, None).unwrap();
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
    assert!(matches!(barrier.wait(Some(Duration::from_secs(30))), Err(Error::BrokenBarrier)));
    assert!(started.elapsed() < Duration::from_secs(30), "broke by timeout, not by death");
    assert!(barrier.broken());
    barrier.reset();
    assert!(!barrier.broken());
}

#[test]
fn abort_and_reset_wake_waiters_with_broken_barrier() {
    let barrier = Barrier::new(2, None, None).unwrap();
    let waiter = {
        let barrier = barrier.clone();
        std::thread::spawn(move || barrier.wait(Some(Duration::from_secs(60))))
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

fn idle_wait((event, lock): (Event, Lock)) -> (u64, u64) {
    let before = cpu_ticks();
    assert!(!event.wait(Some(Duration::from_millis(1500))));
    let after_event = cpu_ticks();
    assert!(lock.acquire(Some(Duration::from_millis(1500))).is_err());
    (after_event - before, cpu_ticks() - after_event)
}

#[test]
fn an_idle_waiter_uses_no_cpu() {
    let event = Event::new().unwrap();
    let lock = Lock::new().unwrap();
    let held = lock.acquire(None).unwrap();
    let (event_ticks, lock_ticks) =
        multiproc::spawn(idle_wait, (event, lock.clone())).unwrap().join().unwrap();
    drop(held);
    // A tick is 10 ms: 1.5 s of waiting may cost at most a few ticks of bookkeeping
    // (liveness checks), not a spinning core (150 ticks).
    assert!(event_ticks <= 3, "an Event wait used {event_ticks} ticks of CPU in 1.5 s");
    assert!(lock_ticks <= 3, "a Lock wait used {lock_ticks} ticks of CPU in 1.5 s");
}
