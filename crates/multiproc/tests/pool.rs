//! Pool behaviour: results and order, laziness, callbacks, initializers, task limits,
//! close/terminate/join, and above all death: tasks that panic, workers that are killed
//! (by themselves or from outside) in the middle of a map, with every other task checked.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use multiproc::pool::Pool;
use multiproc::synchronize::Event;
use multiproc::{pipe, Connection, Error, RawValue, StartMethod};
use rustix::process::{getpid, kill_process, Pid, Signal};

const LONG: Option<Duration> = Some(Duration::from_secs(120));
const WAIT: Duration = Duration::from_secs(120);

fn both_methods(test: impl Fn(StartMethod)) {
    test(StartMethod::Spawn);
    test(StartMethod::Fork);
}

/// A pool whose `n` workers have all started (after the first, they start in the
/// background).
fn pool(n: usize, method: StartMethod) -> Pool {
    let pool = Pool::builder().processes(n).start_method(method).build().expect("pool");
    wait_workers(&pool, n);
    pool
}

fn wait_workers(pool: &Pool, n: usize) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while pool.pids().len() != n {
        assert!(Instant::now() < deadline, "{:?}", pool.pids());
        std::thread::sleep(Duration::from_millis(2));
    }
}

fn square(x: u64) -> u64 {
    x * x
}

/// Kills its own process with `signal` when `x == victim`; otherwise doubles `x`.
fn die_at((x, victim, signal): (u64, u64, i32)) -> u64 {
    if x == victim {
        let signal = Signal::from_named_raw(signal).expect("signal");
        kill_process(getpid(), signal).expect("kill");
        std::thread::sleep(Duration::from_secs(60));
    }
    x * 2
}

/// Sleeps `ms` milliseconds, then returns `x` (a task long enough to be caught running).
fn slow((x, ms): (u64, u64)) -> u64 {
    std::thread::sleep(Duration::from_millis(ms));
    x
}

fn pid_exists(pid: i32) -> bool {
    std::path::Path::new(&format!("/proc/{pid}")).exists()
        && std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .map(|s| !s.contains(") Z"))
            .unwrap_or(false)
}

fn wait_gone(pids: &[i32]) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while pids.iter().any(|&p| pid_exists(p)) {
        assert!(Instant::now() < deadline, "workers {pids:?} still exist");
        std::thread::sleep(Duration::from_millis(10));
    }
}

// --------------------------------------------------------------------------------------
// Results

#[test]
fn map_keeps_input_order_for_every_chunksize() {
    both_methods(|m| {
        let pool = pool(2, m);
        let expected: Vec<u64> = (0..1000).map(square).collect();
        for chunksize in [None, Some(1), Some(3), Some(64), Some(1000), Some(5000)] {
            let got = match chunksize {
                None => pool.map(square, 0..1000),
                Some(n) => pool.chunksize(n).map(square, 0..1000),
            };
            assert_eq!(got.unwrap(), expected, "{chunksize:?}");
        }
        // An iterator without an exact length is collected first.
        let odd = (0..1000u64).filter(|x| x % 2 == 1);
        let expected: Vec<u64> = (0..1000).filter(|x| x % 2 == 1).map(square).collect();
        assert_eq!(pool.map(square, odd).unwrap(), expected);
        assert_eq!(pool.map(square, Vec::<u64>::new()).unwrap(), Vec::<u64>::new());
    });
}

#[test]
fn apply_starmap_and_async_variants() {
    let pool = Pool::new(2).unwrap();
    assert_eq!(
        pool.apply(|(a, b): (String, usize)| a.repeat(b), ("ab".into(), 3)).unwrap(),
        "ababab"
    );
    let powers = pool.starmap(|(b, e): (u64, u32)| b.pow(e), [(2, 10), (3, 3), (10, 0)]);
    assert_eq!(powers.unwrap(), [1024, 27, 1]);
    let r =
        pool.chunksize(1).starmap_async(|(a, b): (i64, i64)| a - b, vec![(5, 7), (7, 5)]).unwrap();
    assert_eq!(r.get_timeout(WAIT).unwrap(), [-2, 2]);
    let many: Vec<_> = (0..50u64).map(|i| pool.apply_async(square, i).unwrap()).collect();
    for (i, r) in many.iter().enumerate() {
        assert_eq!(r.get_timeout(WAIT).unwrap(), (i * i) as u64);
    }
}

#[test]
fn large_arguments_and_results_travel_whole() {
    let pool = Pool::new(2).unwrap();
    let big: Vec<Vec<u8>> = (0..4u8).map(|i| vec![i; 3 << 20]).collect();
    let sums =
        pool.chunksize(1).map(|v: Vec<u8>| v.iter().map(|&b| u64::from(b)).sum::<u64>(), big);
    let expected: Vec<u64> = (0..4u64).map(|i| i * (3 << 20)).collect();
    assert_eq!(sums.unwrap(), expected);
    let blobs = pool.map(|n: usize| vec![7u8; n], [0, 1, 5 << 20, 100]).unwrap();
    assert_eq!(blobs.iter().map(Vec::len).collect::<Vec<_>>(), [0, 1, 5 << 20, 100]);
    assert!(blobs[2].iter().all(|&b| b == 7));
}

/// Items and values of every size around the one-byte length limit (127/128 bytes), long
/// ones after short ones and the other way round, in every chunk size.
#[test]
fn short_and_long_items_mix_in_a_chunk() {
    let pool = Pool::new(2).unwrap();
    let lens: Vec<usize> =
        [0, 1, 126, 127, 128, 129, 3, 5000, 4999, 2, 0, 70_000, 127, 300, 1, 128, 125]
            .into_iter()
            .cycle()
            .take(200)
            .collect();
    let items: Vec<String> = lens.iter().enumerate().map(|(i, &n)| "x".repeat(n + i % 3)).collect();
    // Values half as long as their items: value sizes mix differently from item sizes.
    let expected: Vec<String> = items.iter().map(|s| "y".repeat(s.len() / 2)).collect();
    for chunksize in [None, Some(1), Some(2), Some(7), Some(200)] {
        let half = |s: String| "y".repeat(s.len() / 2);
        let got = match chunksize {
            None => pool.map(half, items.clone()),
            Some(n) => pool.chunksize(n).map(half, items.clone()),
        };
        let got = got.unwrap();
        assert_eq!(got, expected, "{chunksize:?}");
    }
}

/// A worker killed in the middle of a chunk of mixed short and long items: the items
/// around the running one are cut at the right places and complete elsewhere.
#[test]
fn a_worker_killed_among_long_items_fails_only_its_task() {
    fn die_at_long((x, pad): (u64, String)) -> usize {
        if x == 23 {
            kill_process(getpid(), Signal::KILL).expect("kill");
            std::thread::sleep(Duration::from_secs(60));
        }
        pad.len()
    }
    let pool = pool(2, StartMethod::Spawn);
    let items: Vec<(u64, String)> =
        (0..60u64).map(|x| (x, "p".repeat([3, 200, 0, 127, 128, 1000][x as usize % 6]))).collect();
    let results: Vec<_> = pool.chunksize(30).imap(die_at_long, items.clone()).unwrap().collect();
    for (x, r) in results.iter().enumerate() {
        if x == 23 {
            assert!(matches!(r, Err(Error::ProcessFailed { exitcode: -9, .. })), "{r:?}");
        } else {
            assert_eq!(r.as_ref().ok(), Some(&items[x].1.len()), "item {x}");
        }
    }
}

#[test]
fn many_threads_submit_at_once() {
    let pool = Arc::new(Pool::new(2).unwrap());
    let threads: Vec<_> = (0..8u64)
        .map(|t| {
            let pool = pool.clone();
            std::thread::spawn(move || {
                for round in 0..20u64 {
                    let base = t * 1000 + round * 10;
                    let got = pool.chunksize(2).map(square, base..base + 10).unwrap();
                    assert_eq!(got, (base..base + 10).map(square).collect::<Vec<_>>());
                    assert_eq!(pool.apply(square, base).unwrap(), base * base);
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
}

#[test]
fn a_task_runs_in_a_worker_not_in_the_parent() {
    let pool = Pool::new(2).unwrap();
    let pids: BTreeSet<i32> = pool
        .chunksize(1)
        .map(|_: u32| std::process::id() as i32, 0..200)
        .unwrap()
        .into_iter()
        .collect();
    assert!(!pids.contains(&(std::process::id() as i32)));
    let workers: BTreeSet<i32> = pool.pids().into_iter().collect();
    assert!(pids.is_subset(&workers), "{pids:?} not in {workers:?}");
    let name = pool.apply(|_: ()| multiproc::current_process().name, ()).unwrap();
    assert!(name.starts_with("SpawnPoolWorker-"), "{name}");
}

// --------------------------------------------------------------------------------------
// imap

#[test]
fn imap_is_lazy_and_bounded_on_an_endless_input() {
    let pool = Pool::new(2).unwrap();
    let pulled = Arc::new(AtomicUsize::new(0));
    let counter = pulled.clone();
    let endless = (0u64..).inspect(move |_| {
        counter.fetch_add(1, Ordering::Relaxed);
    });
    let mut it = pool.imap(square, endless).unwrap();
    for i in 0..5000u64 {
        assert_eq!(it.next().unwrap().unwrap(), i * i);
    }
    let taken = pulled.load(Ordering::Relaxed);
    assert!(taken < 5000 + 70_000, "pulled {taken} items for 5000 results");
    drop(it);
    // A million-item input with large chunks: the window bounds it too.
    let pulled = Arc::new(AtomicUsize::new(0));
    let counter = pulled.clone();
    let million = (0..1_000_000u64).inspect(move |_| {
        counter.fetch_add(1, Ordering::Relaxed);
    });
    let mut it = pool.chunksize(1000).imap(square, million).unwrap();
    assert_eq!(it.next().unwrap().unwrap(), 0);
    let taken = pulled.load(Ordering::Relaxed);
    assert!(taken <= 70_000, "pulled {taken} of a million items for one result");
    // The rest, in order.
    for i in 1..1_000_000u64 {
        assert_eq!(it.next().unwrap().unwrap(), i * i);
    }
    assert!(it.next().is_none());
    assert!(it.next().is_none());
    // The pool is still fine after an abandoned iterator.
    assert_eq!(pool.map(square, 0..3).unwrap(), [0, 1, 4]);
}

#[test]
fn imap_unordered_gives_every_result_once() {
    both_methods(|m| {
        let pool = pool(3, m);
        for chunksize in [1, 7] {
            let got: Vec<u64> = pool
                .chunksize(chunksize)
                .imap_unordered(square, 0..500)
                .unwrap()
                .map(|r| r.unwrap())
                .collect();
            let set: BTreeSet<u64> = got.iter().copied().collect();
            assert_eq!(got.len(), 500);
            assert_eq!(set, (0..500).map(square).collect());
        }
    });
}

#[test]
fn imap_reports_each_failure_on_its_own_item() {
    let pool = Pool::new(2).unwrap();
    let results: Vec<_> = pool
        .chunksize(3)
        .imap(|x: i32| if x % 5 == 0 { panic!("bad item {x}") } else { x }, 1..=20)
        .unwrap()
        .collect();
    assert_eq!(results.len(), 20);
    for (i, r) in results.iter().enumerate() {
        let x = i as i32 + 1;
        match r {
            Ok(v) => assert_eq!(*v, x),
            Err(Error::ProcessFailed { message, exitcode: 1, .. }) => {
                assert_eq!(x % 5, 0);
                assert!(message.contains(&format!("bad item {x}")), "{message}");
            }
            Err(e) => panic!("item {x}: {e}"),
        }
    }
    assert_eq!(results.iter().filter(|r| r.is_err()).count(), 4);
}

#[test]
fn imap_next_timeout_waits_then_delivers() {
    let pool = Pool::new(1).unwrap();
    let mut it = pool.imap(slow, [(1, 300), (2, 0)]).unwrap();
    assert!(matches!(it.next_timeout(Duration::from_millis(10)), Some(Err(Error::Timeout(_)))));
    assert_eq!(it.next_timeout(Duration::from_secs(60)).unwrap().unwrap(), 1);
    assert_eq!(it.next().unwrap().unwrap(), 2);
    assert!(it.next_timeout(Duration::ZERO).is_none());
}

/// An argument whose encoding fails.
#[derive(Debug, serde::Deserialize)]
struct Refuses;

impl serde::Serialize for Refuses {
    fn serialize<S: serde::Serializer>(&self, _: S) -> Result<S::Ok, S::Error> {
        Err(serde::ser::Error::custom("this argument refuses to be encoded"))
    }
}

#[test]
fn imap_item_that_cannot_be_encoded_fails_alone() {
    let pool = Pool::new(1).unwrap();
    let items = vec![None, Some(Refuses), None];
    let results: Vec<_> =
        pool.chunksize(2).imap(|c: Option<Refuses>| c.is_some(), items).unwrap().collect();
    assert!(matches!(results[0], Ok(false)));
    assert!(matches!(&results[1], Err(Error::Codec(_))), "{results:?}");
    assert!(matches!(results[2], Ok(false)));
}

fn send_five(c: Connection) -> bool {
    c.send(&5u8).is_ok()
}

#[test]
fn a_task_can_take_a_connection() {
    let pool = Pool::new(1).unwrap();
    let (a, b) = pipe(true).unwrap();
    assert!(pool.apply(send_five, a).unwrap());
    assert_eq!(b.recv::<u8>().unwrap(), 5);
}

// --------------------------------------------------------------------------------------
// Failures that leave the worker alive

#[test]
fn a_panicking_task_fails_alone_and_the_pool_goes_on() {
    both_methods(|m| {
        let pool = pool(2, m);
        let err = pool.apply(|_: ()| -> u8 { panic!("oops") }, ()).unwrap_err();
        match err {
            Error::ProcessFailed { pid, exitcode, message } => {
                assert!(pool.pids().contains(&pid));
                assert_eq!(exitcode, 1);
                assert_eq!(message, "panicked: oops");
            }
            e => panic!("{e}"),
        }
        // map gives the (first) error…
        let err = pool.chunksize(10).map(|x: u32| if x == 77 { panic!("77!") } else { x }, 0..100);
        assert!(err.unwrap_err().to_string().contains("77!"));
        // …and the same workers keep serving.
        let before = pool.pids();
        assert_eq!(pool.map(square, 0..10).unwrap(), (0..10).map(square).collect::<Vec<_>>());
        assert_eq!(pool.pids(), before);
    });
}

#[test]
fn undecodable_results_and_arguments_are_errors() {
    let pool = Pool::new(1).unwrap();
    // A result of the wrong shape for the caller's type cannot happen through the typed
    // API; what can happen is a value that serde refuses to encode.
    #[derive(Debug)]
    struct Unencodable;
    impl serde::Serialize for Unencodable {
        fn serialize<S: serde::Serializer>(&self, _: S) -> Result<S::Ok, S::Error> {
            Err(serde::ser::Error::custom("this value refuses to be encoded"))
        }
    }
    impl<'de> serde::Deserialize<'de> for Unencodable {
        fn deserialize<D: serde::Deserializer<'de>>(_: D) -> Result<Self, D::Error> {
            Ok(Unencodable)
        }
    }
    let err = pool.apply(|_: ()| Unencodable, ()).unwrap_err();
    assert!(matches!(err, Error::Codec(_)), "{err}");
    let err = pool.apply(|_: Unencodable| 1u8, Unencodable).unwrap_err();
    assert!(matches!(err, Error::Codec(_)), "{err}");
    assert_eq!(pool.apply(square, 9).unwrap(), 81);
}

// --------------------------------------------------------------------------------------
// Workers that die

/// The heart of it: a task SIGKILLs its own worker in the middle of a map. Exactly that
/// task fails (naming the pid and the signal); every other task completes with the right
/// value; a new worker takes the dead one's place.
#[test]
fn a_worker_killed_mid_map_fails_only_its_task() {
    both_methods(|m| {
        for chunksize in [1, 10, 100] {
            let pool = pool(2, m);
            let before: BTreeSet<i32> = pool.pids().into_iter().collect();
            let items: Vec<(u64, u64, i32)> = (0..1000).map(|x| (x, 537, libc::SIGKILL)).collect();
            let results: Vec<_> = pool.chunksize(chunksize).imap(die_at, items).unwrap().collect();
            assert_eq!(results.len(), 1000);
            for (x, r) in results.iter().enumerate() {
                if x == 537 {
                    match r {
                        Err(Error::ProcessFailed { pid, exitcode, message }) => {
                            assert!(before.contains(pid), "{pid} not in {before:?}");
                            assert_eq!(*exitcode, -9);
                            assert!(message.contains("SIGKILL"), "{message}");
                        }
                        other => panic!("chunksize {chunksize}: item 537 gave {other:?}"),
                    }
                } else {
                    assert_eq!(
                        r.as_ref().ok(),
                        Some(&(x as u64 * 2)),
                        "chunksize {chunksize}, item {x}"
                    );
                }
            }
            // The dead worker was replaced.
            wait_workers(&pool, 2);
            let after: BTreeSet<i32> = pool.pids().into_iter().collect();
            assert_eq!(before.intersection(&after).count(), 1, "{before:?} {after:?}");
            assert_eq!(pool.map(square, 0..100).unwrap(), (0..100).map(square).collect::<Vec<_>>());
        }
    });
}

#[test]
fn map_with_a_killed_worker_returns_its_error() {
    let pool = Pool::new(2).unwrap();
    let items: Vec<(u64, u64, i32)> = (0..200).map(|x| (x, 50, libc::SIGKILL)).collect();
    match pool.chunksize(4).map(die_at, items) {
        Err(Error::ProcessFailed { exitcode: -9, message, .. }) => {
            assert!(message.contains("killed by SIGKILL"), "{message}")
        }
        other => panic!("{other:?}"),
    }
    // apply: the same.
    let err = pool.apply(die_at, (1, 1, libc::SIGKILL)).unwrap_err();
    assert!(matches!(err, Error::ProcessFailed { exitcode: -9, .. }), "{err}");
    assert_eq!(pool.apply(square, 5).unwrap(), 25);
}

#[test]
fn abort_segfault_and_exit_are_reported_with_their_codes() {
    let pool = Pool::new(2).unwrap();
    let cases = [
        (libc::SIGABRT, -6, "SIGABRT"),
        (libc::SIGSEGV, -11, "SIGSEGV"),
        (libc::SIGBUS, -7, "SIGBUS"),
    ];
    for (signal, code, name) in cases {
        let items: Vec<(u64, u64, i32)> = (0..40).map(|x| (x, 13, signal)).collect();
        let results: Vec<_> = pool.chunksize(3).imap(die_at, items).unwrap().collect();
        for (x, r) in results.iter().enumerate() {
            if x == 13 {
                match r {
                    Err(Error::ProcessFailed { exitcode, message, .. }) => {
                        assert_eq!(*exitcode, code);
                        assert!(message.contains(name), "{message}");
                    }
                    other => panic!("{other:?}"),
                }
            } else {
                assert_eq!(r.as_ref().ok(), Some(&(x as u64 * 2)));
            }
        }
    }
    let results: Vec<_> =
        pool.imap(|x: i32| if x == 3 { std::process::exit(3) } else { x }, 0..8).unwrap().collect();
    match &results[3] {
        Err(Error::ProcessFailed { exitcode: 3, message, .. }) => {
            assert!(message.contains("exited with code 3"), "{message}")
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(results.iter().filter(|r| r.is_ok()).count(), 7);
    // A real abort (not a signal sent by hand).
    let err = pool.apply(|_: ()| -> u8 { std::process::abort() }, ()).unwrap_err();
    assert!(matches!(err, Error::ProcessFailed { exitcode: -6, .. }), "{err}");
}

#[test]
fn several_killers_in_one_map() {
    let pool = Pool::new(2).unwrap();
    let victims = [3u64, 99, 100, 250, 499];
    let kill_victims = |x: u64| -> u64 {
        if [3u64, 99, 100, 250, 499].contains(&x) {
            let _ = kill_process(getpid(), Signal::KILL);
            std::thread::sleep(Duration::from_secs(60));
        }
        x + 1
    };
    let results: Vec<_> = pool.chunksize(7).imap(kill_victims, 0..500u64).unwrap().collect();
    for (x, r) in results.iter().enumerate() {
        if victims.contains(&(x as u64)) {
            assert!(matches!(r, Err(Error::ProcessFailed { exitcode: -9, .. })), "{x}: {r:?}");
        } else {
            assert_eq!(r.as_ref().ok(), Some(&(x as u64 + 1)), "{x}");
        }
    }
    wait_workers(&pool, 2);
}

/// The test kills workers from outside while they run slow tasks: the tasks running at
/// that moment fail (naming pid and signal), every other task completes.
#[test]
fn workers_killed_from_outside_are_replaced_and_the_rest_completes() {
    both_methods(|m| {
        let pool = pool(2, m);
        let items: Vec<(u64, u64)> = (0..60).map(|x| (x, 20)).collect();
        let mut it = pool.imap(slow, items).unwrap();
        let mut results = Vec::new();
        let mut killed = Vec::new();
        while let Some(r) = it.next_timeout(Duration::from_secs(60)) {
            results.push(r);
            if matches!(results.len(), 10 | 30) {
                let victim = pool.pids()[0];
                kill_process(Pid::from_raw(victim).unwrap(), Signal::KILL).unwrap();
                killed.push(victim);
            }
        }
        assert_eq!(results.len(), 60);
        let mut failures = 0;
        for (x, r) in results.iter().enumerate() {
            match r {
                Ok(v) => assert_eq!(*v, x as u64),
                Err(Error::ProcessFailed { pid, exitcode: -9, message }) => {
                    assert!(killed.contains(pid), "{pid} {killed:?}");
                    assert!(message.contains("SIGKILL"));
                    failures += 1;
                }
                Err(e) => panic!("{x}: {e}"),
            }
        }
        // A worker killed between two tasks loses none.
        assert!(failures <= killed.len(), "{failures} failures for {} kills", killed.len());
        wait_workers(&pool, 2);
        let now = pool.pids();
        assert!(killed.iter().all(|k| !now.contains(k)));
    });
}

/// Counts its start in shared memory, waits for `gate` (at most a minute), returns `x`.
fn counted_gate((started, gate, x): (RawValue<u32>, Event, u64)) -> u64 {
    started.fetch_add(1);
    gate.wait_timeout(Duration::from_secs(60)).expect("the gate never opened");
    x
}

#[test]
fn killing_every_worker_at_once_loses_only_their_running_tasks() {
    let pool = pool(3, StartMethod::Spawn);
    let started = RawValue::new(0u32).unwrap();
    let gate = Event::new().unwrap();
    let tasks: Vec<_> = (0..30).map(|x| (started.clone(), gate.clone(), x)).collect();
    let mut it = pool.imap(counted_gate, tasks).unwrap();
    // Every worker is in the middle of a task, which cannot end before the gate opens…
    let deadline = Instant::now() + Duration::from_secs(60);
    while started.get() < 3 {
        assert!(Instant::now() < deadline, "{} tasks started", started.get());
        std::thread::sleep(Duration::from_millis(1));
    }
    assert_eq!(started.get(), 3, "a worker ran two tasks at once");
    let victims = pool.pids();
    assert_eq!(victims.len(), 3);
    for &pid in &victims {
        kill_process(Pid::from_raw(pid).unwrap(), Signal::KILL).unwrap();
    }
    wait_gone(&victims);
    gate.set();
    // …so exactly the three running tasks are lost, and the 27 others complete.
    let results: Vec<_> = it.by_ref().collect();
    assert_eq!(results.len(), 30);
    let lost: Vec<usize> = (0..30).filter(|&i| results[i].is_err()).collect();
    assert_eq!(lost.len(), 3, "{results:?}");
    for (x, r) in results.iter().enumerate() {
        match r {
            Ok(v) => assert_eq!(*v, x as u64),
            Err(Error::ProcessFailed { pid, exitcode: -9, .. }) => assert!(victims.contains(pid)),
            Err(e) => panic!("{x}: {e}"),
        }
    }
    // The pool recovered.
    assert_eq!(
        pool.chunksize(1).map(square, 0..50).unwrap(),
        (0..50).map(square).collect::<Vec<_>>()
    );
    wait_workers(&pool, 3);
    assert!(pool.pids().iter().all(|p| !victims.contains(p)));
}

// --------------------------------------------------------------------------------------
// Callbacks

#[test]
fn callbacks_run_in_the_parent_before_get_returns() {
    let pool = Pool::new(2).unwrap();
    let (tx, rx) = mpsc::channel();
    let (etx, erx) = mpsc::channel();
    let me = std::process::id();
    let r = pool
        .apply_async_with(
            square,
            12,
            move |v: &u64| tx.send((*v, std::process::id())).unwrap(),
            move |e: &Error| etx.send(e.to_string()).unwrap(),
        )
        .unwrap();
    assert_eq!(r.get_timeout(WAIT).unwrap(), 144);
    assert_eq!(rx.try_recv().unwrap(), (144, me));
    assert!(erx.try_recv().is_err());

    let (tx, rx) = mpsc::channel();
    let (etx, erx) = mpsc::channel();
    let r = pool
        .chunksize(1)
        .map_async_with(
            |x: u32| if x == 2 { panic!("two") } else { x },
            0..5,
            move |v: &Vec<u32>| tx.send(v.clone()).unwrap(),
            move |e: &Error| etx.send(e.to_string()).unwrap(),
        )
        .unwrap();
    assert!(r.get_timeout(WAIT).is_err());
    assert!(erx.try_recv().unwrap().contains("two"));
    assert!(rx.try_recv().is_err());
    assert!(!r.successful().unwrap());
}

#[test]
fn a_callback_waiting_for_its_own_pool_gets_an_error_not_a_deadlock() {
    let pool = pool(2, StartMethod::Spawn);
    let slow_one = pool.apply_async(slow, (7, 2000)).unwrap();
    let (tx, rx) = mpsc::channel();
    let r = pool
        .apply_async_with(
            square,
            2,
            move |_: &u64| {
                let got = slow_one.get();
                tx.send(format!("{got:?}")).unwrap();
            },
            |_: &Error| {},
        )
        .unwrap();
    assert_eq!(r.get_timeout(WAIT).unwrap(), 4);
    let seen = rx.recv_timeout(Duration::from_secs(60)).unwrap();
    assert!(seen.contains("ProcessState"), "{seen}");
}

#[test]
fn a_panicking_callback_does_not_break_the_pool() {
    let pool = Pool::new(1).unwrap();
    let r = pool
        .apply_async_with(square, 3, |_: &u64| panic!("callback panics"), |_: &Error| {})
        .unwrap();
    assert_eq!(r.get_timeout(WAIT).unwrap(), 9);
    assert_eq!(pool.apply(square, 4).unwrap(), 16);
}

// --------------------------------------------------------------------------------------
// AsyncResult

#[test]
fn async_result_get_wait_ready_successful() {
    let pool = Pool::new(1).unwrap();
    let r = pool.apply_async(slow, (5, 300)).unwrap();
    assert!(!r.ready());
    assert!(matches!(r.successful(), Err(Error::ProcessState(_))));
    assert!(matches!(r.get_timeout(Duration::from_millis(5)), Err(Error::Timeout(_))));
    assert!(matches!(r.try_get(), Err(Error::WouldBlock)));
    assert!(matches!(r.wait_timeout(Duration::from_millis(5)), Err(Error::Timeout(_))));
    r.wait_timeout(WAIT).unwrap();
    assert!(r.ready());
    assert!(r.successful().unwrap());
    assert_eq!(r.try_get().unwrap(), 5);
    assert!(matches!(r.get(), Err(Error::ProcessState(_))));
    assert!(format!("{r:?}").contains("ready: true"));
}

// --------------------------------------------------------------------------------------
// Initializer, maxtasksperchild, start methods

/// Set by the initializer in each worker. Not an environment variable: a forked worker
/// that calls `set_var` can deadlock on the environment lock, which another thread of
/// this multi-threaded test process may have held at the moment of the fork (the fork
/// hazard the `Fork` start method documents). The parent never touches this cell.
static MARKER: std::sync::OnceLock<String> = std::sync::OnceLock::new();

fn set_marker(value: String) {
    MARKER.set(value).expect("the initializer runs once per worker");
}

fn read_marker(_: ()) -> String {
    MARKER.get().cloned().unwrap_or_default()
}

#[test]
fn the_initializer_runs_once_in_every_worker() {
    both_methods(|m| {
        let pool = Pool::builder()
            .processes(2)
            .start_method(m)
            .initializer(set_marker, "ready".to_string())
            .build()
            .unwrap();
        let markers = pool.chunksize(1).map(read_marker, vec![(); 50]).unwrap();
        assert!(markers.iter().all(|s| s == "ready"), "{markers:?}");
    });
}

fn report_pid(conn: Connection) {
    conn.send(&std::process::id()).unwrap();
}

#[test]
fn the_initializer_can_take_a_connection() {
    let (parent, child) = pipe(true).unwrap();
    let pool = Pool::builder().processes(2).initializer(report_pid, child).build().unwrap();
    wait_workers(&pool, 2);
    let mut reported = BTreeSet::new();
    for _ in 0..2 {
        reported.insert(parent.recv_timeout::<u32>(Duration::from_secs(60)).unwrap() as i32);
    }
    assert_eq!(reported, pool.pids().into_iter().collect());
}

fn failing_init(_: ()) {
    panic!("cannot initialize");
}

#[test]
fn a_failing_initializer_breaks_the_pool_with_its_message() {
    let pool = Pool::builder().processes(2).initializer(failing_init, ()).build().unwrap();
    let err = pool.apply(square, 2).unwrap_err();
    assert!(err.to_string().contains("cannot initialize"), "{err}");
    let err = pool.map(square, 0..10).unwrap_err();
    assert!(err.to_string().contains("cannot initialize"), "{err}");
    pool.close();
    pool.join_timeout(WAIT).unwrap();
}

fn kill_in_init(_: ()) {
    let _ = kill_process(getpid(), Signal::KILL);
}

#[test]
fn workers_that_die_before_ready_break_the_pool_instead_of_looping() {
    let pool = Pool::builder().processes(1).initializer(kill_in_init, ()).build().unwrap();
    let err = pool.apply(square, 2).unwrap_err();
    assert!(matches!(err, Error::ProcessFailed { exitcode: -9, .. }), "{err}");
    assert!(err.to_string().contains("before they were ready"), "{err}");
}

#[test]
fn maxtasksperchild_replaces_workers() {
    both_methods(|m| {
        let pool =
            Pool::builder().processes(2).maxtasksperchild(3).start_method(m).build().unwrap();
        let pids: Vec<u32> =
            pool.chunksize(1).map(|_: u8| std::process::id(), vec![0; 30]).unwrap();
        let distinct: BTreeSet<u32> = pids.iter().copied().collect();
        assert!(distinct.len() >= 10, "{} workers for 30 tasks of 3 each", distinct.len());
        for pid in &distinct {
            assert!(pids.iter().filter(|p| *p == pid).count() <= 3);
        }
        // Chunks count as tasks, as in Python.
        let r = pool.chunksize(100).map(square, 0..1000).unwrap();
        assert_eq!(r, (0..1000).map(square).collect::<Vec<_>>());
        // Retiring workers leave the list at once; their replacements join it.
        wait_workers(&pool, 2);
    });
}

// --------------------------------------------------------------------------------------
// Lifecycle

#[test]
fn close_lets_work_finish_then_join_reaps_the_workers() {
    let pool = pool(2, StartMethod::Spawn);
    let pids = pool.pids();
    let r = pool.chunksize(1).map_async(slow, (0..8).map(|x| (x, 20)).collect::<Vec<_>>()).unwrap();
    assert!(matches!(pool.join_timeout(Duration::ZERO), Err(Error::ProcessState(_))));
    pool.close();
    assert!(matches!(pool.apply(square, 1), Err(Error::Closed(_))));
    assert!(matches!(pool.map_async(square, 0..2), Err(Error::Closed(_))));
    assert!(pool.imap(square, 0..2).is_err());
    pool.join_timeout(WAIT).unwrap();
    assert_eq!(r.get_timeout(Duration::ZERO).unwrap(), (0..8).collect::<Vec<_>>());
    assert!(pool.pids().is_empty());
    wait_gone(&pids);
    pool.join().unwrap(); // again: fine
}

#[test]
fn an_imap_started_before_close_still_runs() {
    let pool = Pool::new(2).unwrap();
    let it = pool.imap(square, 0..20_000).unwrap();
    pool.close();
    let v: Vec<u64> = it.map(|r| r.unwrap()).collect();
    assert_eq!(v, (0..20_000).map(square).collect::<Vec<_>>());
    pool.join_timeout(WAIT).unwrap();
}

#[test]
fn join_times_out_while_work_runs() {
    let pool = Pool::new(1).unwrap();
    let _r = pool.apply_async(slow, (0, 2000)).unwrap();
    pool.close();
    assert!(matches!(pool.join_timeout(Duration::from_millis(50)), Err(Error::Timeout(_))));
    pool.terminate();
    pool.join_timeout(WAIT).unwrap();
}

#[test]
fn terminate_fails_pending_work_and_stops_the_workers() {
    let pool = pool(2, StartMethod::Spawn);
    let pids = pool.pids();
    let running = pool.apply_async(slow, (0, 60_000)).unwrap();
    let queued = pool.chunksize(1).map_async(slow, (0..100).map(|x| (x, 1000)).collect::<Vec<_>>());
    let mut it = pool.imap(slow, (0..100).map(|x| (x, 1000))).unwrap();
    let t = Instant::now();
    pool.terminate();
    pool.join_timeout(WAIT).unwrap();
    assert!(t.elapsed() < Duration::from_secs(30));
    assert!(matches!(running.get_timeout(WAIT), Err(Error::Closed(_))));
    assert!(matches!(queued.unwrap().get_timeout(WAIT), Err(Error::Closed(_))));
    assert!(matches!(it.next(), Some(Err(Error::Closed(_)))));
    assert!(it.next().is_none());
    assert!(matches!(pool.apply(square, 1), Err(Error::Closed(_))));
    wait_gone(&pids);
}

#[test]
fn dropping_the_pool_leaves_no_process_behind() {
    both_methods(|m| {
        let pool = pool(3, m);
        let pids = pool.pids();
        let r = pool.apply_async(slow, (1, 60_000)).unwrap();
        assert!(pids.iter().all(|&p| pid_exists(p)));
        drop(pool);
        wait_gone(&pids);
        assert!(matches!(r.get_timeout(WAIT), Err(Error::Closed(_))));
        let children: Vec<i32> = multiproc::active_children().iter().map(|c| c.pid).collect();
        assert!(pids.iter().all(|p| !children.contains(p)), "{children:?}");
    });
}

#[test]
fn a_pool_can_be_made_inside_a_worker() {
    fn nested(n: u64) -> Vec<u64> {
        let inner = Pool::new(2).expect("inner pool");
        inner.map(|x: u64| x + 1, 0..n).expect("inner map")
    }
    let pool = Pool::new(1).unwrap();
    assert_eq!(pool.apply(nested, 4).unwrap(), [1, 2, 3, 4]);
}

#[test]
fn a_forked_child_cannot_use_its_copy_of_the_pool() {
    use std::sync::OnceLock;
    static POOL: OnceLock<Pool> = OnceLock::new();
    fn child(_: ()) {
        let pool = POOL.get().expect("the pool, copied by fork");
        assert!(matches!(pool.apply(square, 3), Err(Error::ProcessState(_))));
    }
    let pool = POOL.get_or_init(|| Pool::new(1).unwrap());
    assert_eq!(pool.apply(square, 3).unwrap(), 9);
    let p = multiproc::Process::builder(child, ()).start_method(StartMethod::Fork).build();
    p.start().unwrap();
    p.join_timeout(LONG.unwrap()).unwrap();
    assert_eq!(p.exitcode(), Some(0), "{:?}", p.panic_message());
    // A static pool is never dropped: stop it by hand.
    pool.terminate();
    pool.join_timeout(WAIT).unwrap();
}

#[test]
fn bad_arguments_are_errors_not_panics() {
    assert!(matches!(Pool::new(0), Err(Error::InvalidArgument(_))));
    assert!(matches!(Pool::builder().maxtasksperchild(0).build(), Err(Error::InvalidArgument(_))));
    let pool = Pool::new(1).unwrap();
    assert!(matches!(pool.chunksize(0).map(square, 0..3), Err(Error::InvalidArgument(_))));
    assert!(matches!(pool.chunksize(0).imap(square, 0..3), Err(Error::InvalidArgument(_))));
    assert!(matches!(
        pool.chunksize(0).imap_unordered(square, 0..3),
        Err(Error::InvalidArgument(_))
    ));
    assert!(matches!(pool.apply(|_: Refuses| 0, Refuses), Err(Error::Codec(_))));
    assert!(format!("{pool:?}").contains("processes: 1"));
}

#[test]
fn every_mapping_method_takes_its_chunk_size_the_same_way() {
    let pool = Pool::new(2).unwrap();
    let expected: Vec<u64> = (0..100).map(square).collect();
    for n in [1, 7, 100, 1000] {
        let by = pool.chunksize(n);
        assert_eq!(by.map(square, 0..100).unwrap(), expected, "map {n}");
        assert_eq!(by.map_async(square, 0..100).unwrap().get().unwrap(), expected, "{n}");
        assert_eq!(by.starmap(square, 0..100).unwrap(), expected, "starmap {n}");
        assert_eq!(by.starmap_async(square, 0..100).unwrap().get().unwrap(), expected);
        let (tx, rx) = mpsc::channel();
        let r = by.map_async_with(
            square,
            0..100,
            move |v: &Vec<u64>| tx.send(v.len()).unwrap(),
            |_| {},
        );
        assert_eq!(r.unwrap().get().unwrap(), expected);
        assert_eq!(rx.recv().unwrap(), 100);
        let got: Vec<u64> = by.imap(square, 0..100).unwrap().map(Result::unwrap).collect();
        assert_eq!(got, expected, "imap {n}");
        let mut got: Vec<u64> =
            by.imap_unordered(square, 0..100).unwrap().map(Result::unwrap).collect();
        got.sort();
        assert_eq!(got, expected, "imap_unordered {n}");
    }
    // A zero chunk size fails in every method, before any work is submitted.
    let zero = pool.chunksize(0);
    assert!(matches!(zero.map_async(square, 0..3), Err(Error::InvalidArgument(_))));
    assert!(matches!(zero.starmap(square, 0..3), Err(Error::InvalidArgument(_))));
    assert!(matches!(zero.starmap_async(square, 0..3), Err(Error::InvalidArgument(_))));
    assert!(matches!(
        zero.map_async_with(square, 0..3, |_| {}, |_| {}),
        Err(Error::InvalidArgument(_))
    ));
    assert_eq!(pool.map(square, 0..3).unwrap(), [0, 1, 4]);
}

#[test]
fn timed_forms_time_out_and_the_plain_forms_wait() {
    let pool = Pool::new(1).unwrap();
    let r = pool.apply_async(slow, (3, 1000)).unwrap();
    let mut it = pool.imap(slow, [(4, 0)]).unwrap();
    assert!(matches!(r.try_get(), Err(Error::WouldBlock)));
    assert!(matches!(r.wait_timeout(Duration::ZERO), Err(Error::Timeout(d)) if d.is_zero()));
    assert!(matches!(it.try_next(), Some(Err(Error::Timeout(_)))));
    pool.close();
    let t = Duration::from_millis(5);
    assert!(matches!(pool.join_timeout(t), Err(Error::Timeout(d)) if d == t));
    r.wait().unwrap();
    assert_eq!(r.get().unwrap(), 3);
    assert_eq!(it.next().unwrap().unwrap(), 4);
    assert!(it.try_next().is_none());
    pool.join().unwrap();
    pool.join_timeout(Duration::ZERO).unwrap();
}

// --------------------------------------------------------------------------------------
// The seed examples (their output is asserted by the tour's tests)

#[path = "../examples/pool_map_squares.rs"]
mod pool_map_squares;
#[path = "../examples/pool_squares_tasks.rs"]
mod pool_squares_tasks;

#[test]
fn the_seed_examples_run() {
    pool_squares_tasks::main().unwrap();
    pool_map_squares::main().unwrap();
}
