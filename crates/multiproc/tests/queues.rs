//! Queues: Python's semantics, batches, large items, many processes.

use std::collections::BTreeSet;
use std::time::Duration;

use multiproc::queues::{JoinableQueue, Queue, SimpleQueue};
use multiproc::{Error, Process, StartMethod};

const LONG: Option<Duration> = Some(Duration::from_secs(60));

#[test]
fn fifo_nowait_and_bounds() {
    let q = Queue::new(2).unwrap();
    assert!(q.empty() && !q.full());
    q.put_nowait(1u32).unwrap();
    q.put(2).unwrap();
    assert!(q.full());
    assert!(matches!(q.put_nowait(3).map_err(Error::from), Err(Error::Full)));
    assert!(matches!(
        q.put_timeout(3, Duration::from_millis(20)).map_err(Error::from),
        Err(Error::Full)
    ));
    assert_eq!(q.qsize(), 2);
    assert_eq!(q.get_nowait().unwrap(), 1);
    assert_eq!(q.get().unwrap(), 2);
    assert!(matches!(q.get_nowait(), Err(Error::Empty)));
    assert!(matches!(q.get_timeout(Duration::from_millis(20)), Err(Error::Empty)));
}

#[test]
fn the_ring_wraps_around_many_times() {
    let q = Queue::with_capacity(0, 256).unwrap();
    for i in 0..10_000u32 {
        let item = vec![i as u8; (i % 40) as usize];
        q.put((i, item.clone())).unwrap();
        assert_eq!(q.get().unwrap(), (i, item));
    }
}

#[test]
fn a_byte_bound_blocks_until_a_consumer_makes_room() {
    let q: Queue<Vec<u8>> = Queue::with_capacity(0, 1024).unwrap();
    let mut put = 0;
    while q.put_timeout(vec![0; 100], Duration::ZERO).is_ok() {
        put += 1;
    }
    assert!(put >= 5, "only {put} items fit");
    let consumer = multiproc::spawn(
        |(q, n): (Queue<Vec<u8>>, usize)| {
            (0..n).map(|_| q.get_timeout(LONG.unwrap()).unwrap().len()).sum::<usize>()
        },
        (q.clone(), put + 20),
    )
    .unwrap();
    for _ in 0..20 {
        q.put_timeout(vec![0; 100], LONG.unwrap()).unwrap();
    }
    assert_eq!(consumer.join().unwrap(), (put + 20) * 100);
}

#[test]
fn items_of_any_size_travel_and_large_ones_leave_nothing_behind() {
    let q: Queue<Vec<u8>> = Queue::with_capacity(0, 4096).unwrap();
    let sizes = [0usize, 10, 1000, 1023, 5000, 1 << 20, 64 << 20];
    let consumer = multiproc::spawn(
        |(q, n): (Queue<Vec<u8>>, usize)| {
            (0..n)
                .map(|_| {
                    let item = q.get_timeout(LONG.unwrap()).unwrap();
                    (item.len(), item.iter().enumerate().all(|(i, &b)| b == (i % 251) as u8))
                })
                .collect::<Vec<_>>()
        },
        (q.clone(), sizes.len()),
    )
    .unwrap();
    for size in sizes {
        q.put_timeout((0..size).map(|i| (i % 251) as u8).collect(), LONG.unwrap()).unwrap();
    }
    let got = consumer.join().unwrap();
    assert_eq!(got, sizes.iter().map(|&s| (s, true)).collect::<Vec<_>>());
}

/// The large-item blocks in `/dev/shm` created by process `pid`.
fn blocks_of(pid: u32) -> Vec<String> {
    std::fs::read_dir("/dev/shm")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        // Owned blocks, and queues' large items (named for their producer and queue).
        .filter(|n| {
            n.starts_with(&format!("psm_mp{pid}_")) || n.starts_with(&format!("psm_mq{pid}_"))
        })
        .collect()
}

/// Item `i` of `len` bytes: a pattern that differs between items, so that a block reused
/// before its reader finished, or read twice, shows.
fn large_item(i: u32, len: usize) -> Vec<u8> {
    (0..len).map(|j| (j as u32).wrapping_mul(7).wrapping_add(i.wrapping_mul(131)) as u8).collect()
}

/// Runs in a process of its own, so that only its own blocks count: large items go one
/// at a time (each acknowledged before the next), then as a stream. Returns the most
/// blocks that existed at once in lock-step with equal sizes, in lock-step with changing
/// sizes, the blocks kept once the stream was read, and the blocks left after the queue
/// was dropped.
fn large_items_reuse_blocks(_: ()) -> (usize, usize, usize, usize) {
    let me = std::process::id();
    let q: Queue<Vec<u8>> = Queue::with_capacity(0, 4096).unwrap();
    let acks: Queue<bool> = Queue::new(0).unwrap();
    let reader = multiproc::spawn(
        |(q, acks, n): (Queue<Vec<u8>>, Queue<bool>, u32)| {
            for i in 0..n {
                let item = q.get_timeout(LONG.unwrap()).unwrap();
                let ok = item == large_item(i, item.len());
                acks.put_timeout(ok, LONG.unwrap()).unwrap();
            }
        },
        (q.clone(), acks.clone(), 60),
    )
    .unwrap();
    let sizes = |i: u32| [100_000, 30_000, 250_000, 1 << 20, 5000, 700_000][i as usize % 6];
    let (mut equal, mut changing) = (0, 0);
    for i in 0..60u32 {
        let len = if i < 20 { 200_000 } else { sizes(i) };
        q.put_timeout(large_item(i, len), LONG.unwrap()).unwrap();
        assert!(acks.get_timeout(LONG.unwrap()).unwrap(), "item {i} arrived altered");
        let now = blocks_of(me).len();
        if i < 20 {
            equal = equal.max(now);
        } else {
            changing = changing.max(now);
        }
    }
    reader.join().unwrap();
    let reader = multiproc::spawn(
        |(q, n): (Queue<Vec<u8>>, u32)| {
            (0..n).all(|i| {
                q.get_timeout(LONG.unwrap()).unwrap() == large_item(i, 50_000 + 1000 * i as usize)
            })
        },
        (q.clone(), 100),
    )
    .unwrap();
    for i in 0..100u32 {
        q.put_timeout(large_item(i, 50_000 + 1000 * i as usize), LONG.unwrap()).unwrap();
    }
    assert!(reader.join().unwrap(), "a streamed item arrived altered");
    let kept = blocks_of(me).len();
    drop(q);
    (equal, changing, kept, blocks_of(me).len())
}

#[test]
fn large_items_reuse_a_few_blocks_and_leave_nothing_behind() {
    let child = multiproc::spawn(large_items_reuse_blocks, ()).unwrap();
    let pid = child.process().pid().unwrap() as u32;
    let (equal, changing, kept, left) = child.join().unwrap();
    assert_eq!(equal, 1, "equal items one at a time should share one block");
    assert!((1..=4).contains(&changing), "{changing} blocks for items of changing sizes");
    assert!((1..=4).contains(&kept), "{kept} blocks kept");
    assert_eq!(left, 0, "blocks left after the queue was dropped");
    assert_eq!(blocks_of(pid), Vec::<String>::new());
}

fn put_large_items_then((q, ready, die): (Queue<Vec<u8>>, multiproc::synchronize::Event, bool)) {
    for i in 0..3 {
        q.put_timeout(large_item(i, 300_000), LONG.unwrap()).unwrap();
    }
    ready.set();
    if die {
        std::thread::sleep(Duration::from_secs(600)); // killed by the test
    }
}

#[test]
fn large_items_outlive_their_producer_whether_it_exits_or_is_killed() {
    for die in [false, true] {
        let q: Queue<Vec<u8>> = Queue::with_capacity(0, 4096).unwrap();
        let ready = multiproc::synchronize::Event::new().unwrap();
        let p = Process::new(put_large_items_then, (q.clone(), ready.clone(), die));
        p.start().unwrap();
        ready.wait_timeout(Duration::from_secs(60)).unwrap();
        let pid = p.pid().unwrap() as u32;
        if die {
            p.kill().unwrap();
        }
        p.join_timeout(LONG.unwrap()).unwrap();
        assert_eq!(p.exitcode(), Some(if die { -9 } else { 0 }));
        for i in 0..3 {
            assert!(
                q.get_timeout(LONG.unwrap()).unwrap() == large_item(i, 300_000),
                "item {i} altered"
            );
        }
        drop(q);
        assert_eq!(blocks_of(pid), Vec::<String>::new(), "blocks left by the producer");
    }
}

#[test]
fn a_large_item_whose_put_timed_out_leaves_its_block_reusable() {
    let q: Queue<Vec<u8>> = Queue::with_capacity(1, 4096).unwrap();
    q.put(large_item(0, 100_000)).unwrap();
    for i in 1..5 {
        assert!(matches!(
            q.put_timeout(large_item(i, 100_000), Duration::ZERO).map_err(Error::from),
            Err(Error::Full)
        ));
    }
    assert!(q.get().unwrap() == large_item(0, 100_000));
    for i in 5..10 {
        q.put(large_item(i, 100_000)).unwrap();
        assert!(q.get().unwrap() == large_item(i, 100_000), "item {i} altered");
    }
}

#[test]
fn a_large_item_does_not_block_small_ones_behind_it_forever() {
    // A ring of 4 KiB: a 1 MiB item never enters it, so small items keep flowing.
    let q: Queue<Vec<u8>> = Queue::with_capacity(0, 4096).unwrap();
    q.put(vec![1; 1 << 20]).unwrap();
    for i in 0..100u8 {
        q.put(vec![i]).unwrap();
        assert_eq!(q.qsize(), 2);
        let first = q.get().unwrap();
        // FIFO: the big one first, then the small ones one by one.
        if i == 0 {
            assert_eq!(first.len(), 1 << 20);
        } else {
            assert_eq!(first, vec![i - 1]);
        }
    }
}

/// An item whose encoding fails half-way.
#[derive(serde::Deserialize)]
struct Unencodable;

impl serde::Serialize for Unencodable {
    fn serialize<S: serde::Serializer>(&self, _: S) -> Result<S::Ok, S::Error> {
        Err(serde::ser::Error::custom("this item refuses to be encoded"))
    }
}

#[test]
fn an_unencodable_item_is_an_error_from_put() {
    let q: Queue<Unencodable> = Queue::new(0).unwrap();
    match q.put(Unencodable).map_err(Error::from) {
        // The item's own message, though postcard itself keeps none.
        Err(Error::Codec(why)) => assert!(why.contains("refuses"), "{why}"),
        other => panic!("{other:?}"),
    }
    assert!(q.empty());
}

#[test]
fn batches_keep_order() {
    let q = Queue::new(0).unwrap();
    q.put_many(0..1000u32).unwrap();
    let mut got = Vec::new();
    while got.len() < 1000 {
        got.extend(q.get_many(64).unwrap());
    }
    assert_eq!(got, (0..1000).collect::<Vec<_>>());
    let bounded = Queue::new(3).unwrap();
    assert!(matches!(
        bounded.put_many_timeout(0..5u8, Duration::from_millis(10)).map_err(Error::from),
        Err(Error::Full)
    ));
    assert_eq!(bounded.qsize(), 3);
    assert_eq!(bounded.get_many(10).unwrap(), vec![0, 1, 2]);
}

#[test]
fn close_drains_then_reports_closed() {
    let q: Queue<String> = Queue::new(0).unwrap();
    q.put_many(["a".to_string(), "b".to_string()]).unwrap();
    let waiter = multiproc::spawn(
        |q: Queue<String>| {
            let mut got = Vec::new();
            loop {
                match q.get_timeout(LONG.unwrap()) {
                    Ok(item) => got.push(item),
                    Err(Error::Closed(_)) => return got,
                    Err(e) => panic!("{e}"),
                }
            }
        },
        q.clone(),
    )
    .unwrap();
    q.close();
    assert!(matches!(q.put("c".to_string()).map_err(Error::from), Err(Error::Closed(_))));
    assert_eq!(waiter.join().unwrap(), ["a", "b"]);
}

fn produce((q, id, n): (Queue<(u32, u32)>, u32, u32)) {
    for i in 0..n {
        q.put((id, i)).unwrap();
    }
}

fn consume((q, n): (Queue<(u32, u32)>, usize)) -> Vec<(u32, u32)> {
    (0..n).map(|_| q.get_timeout(LONG.unwrap()).unwrap()).collect()
}

#[test]
fn many_producers_and_consumers_deliver_everything_once_in_per_producer_order() {
    for method in [StartMethod::Spawn, StartMethod::Fork] {
        let q = Queue::with_capacity(16, 2048).unwrap();
        let producers: Vec<Process> = (0..3)
            .map(|id| Process::builder(produce, (q.clone(), id, 3000)).start_method(method).build())
            .collect();
        for p in &producers {
            p.start().unwrap();
        }
        let consumers: Vec<_> =
            (0..3).map(|_| multiproc::spawn(consume, (q.clone(), 3000)).unwrap()).collect();
        let mut all = BTreeSet::new();
        for c in consumers {
            let got = c.join().unwrap();
            for id in 0..3 {
                let mine: Vec<u32> =
                    got.iter().filter(|(p, _)| *p == id).map(|&(_, i)| i).collect();
                assert!(mine.windows(2).all(|w| w[0] < w[1]), "producer {id}'s items out of order");
            }
            for item in got {
                assert!(all.insert(item), "{item:?} delivered twice");
            }
        }
        assert_eq!(all.len(), 9000);
        for p in &producers {
            p.join_timeout(LONG.unwrap()).unwrap();
            assert_eq!(p.exitcode(), Some(0));
        }
    }
}

#[test]
fn queues_and_locks_travel_through_queues_and_pipes() {
    use multiproc::synchronize::Lock;
    let outer: Queue<(Queue<String>, Lock)> = Queue::new(0).unwrap();
    let inner: Queue<String> = Queue::new(0).unwrap();
    let lock = Lock::new().unwrap();
    let child = multiproc::spawn(
        |outer: Queue<(Queue<String>, Lock)>| {
            let (inner, lock) = outer.get_timeout(LONG.unwrap()).unwrap();
            let _guard = lock.acquire().unwrap();
            inner.put("through the queue".to_string()).unwrap();
        },
        outer.clone(),
    )
    .unwrap();
    outer.put((inner.clone(), lock.clone())).unwrap();
    assert_eq!(inner.get_timeout(LONG.unwrap()).unwrap(), "through the queue");
    child.join().unwrap();

    // And through a pipe.
    let (a, b) = multiproc::pipe(true).unwrap();
    let child = multiproc::spawn(
        |b: multiproc::Connection| {
            let q: Queue<u32> = b.recv().unwrap();
            q.put(42).unwrap();
        },
        b,
    )
    .unwrap();
    let q: Queue<u32> = Queue::new(0).unwrap();
    a.send(&q).unwrap();
    assert_eq!(q.get_timeout(LONG.unwrap()).unwrap(), 42);
    child.join().unwrap();
}

#[test]
fn a_queue_lent_by_a_process_that_exited_cannot_be_received() {
    let carrier: Queue<Queue<u8>> = Queue::new(0).unwrap();
    multiproc::spawn(
        |carrier: Queue<Queue<u8>>| carrier.put(Queue::new(0).unwrap()).unwrap(),
        carrier.clone(),
    )
    .unwrap()
    .join()
    .unwrap();
    match carrier.get_timeout(LONG.unwrap()) {
        Err(Error::Codec(why)) => assert!(why.contains("has it exited"), "{why}"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn simple_queue_and_joinable_queue() {
    let sq = SimpleQueue::new().unwrap();
    sq.put("x".to_string()).unwrap();
    assert_eq!(sq.get().unwrap(), "x");
    assert!(sq.empty());

    let jq: JoinableQueue<u32> = JoinableQueue::new(0).unwrap();
    for i in 0..10 {
        jq.put(i).unwrap();
    }
    let worker = multiproc::spawn(
        |jq: JoinableQueue<u32>| {
            let mut sum = 0;
            for _ in 0..10 {
                sum += jq.get_timeout(LONG.unwrap()).unwrap();
                jq.task_done().unwrap();
            }
            sum
        },
        jq.clone(),
    )
    .unwrap();
    jq.join_timeout(LONG.unwrap()).unwrap();
    assert_eq!(worker.join().unwrap(), 45);
    assert!(matches!(jq.task_done(), Err(Error::InvalidRelease(_))));
}

/// CPU time of this process in clock ticks.
fn cpu_ticks() -> u64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap();
    let fields: Vec<&str> = stat[stat.rfind(')').unwrap() + 2..].split(' ').collect();
    fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap()
}

#[test]
fn an_idle_consumer_uses_no_cpu() {
    let q: Queue<u8> = Queue::new(0).unwrap();
    let ticks = multiproc::spawn(
        |q: Queue<u8>| {
            let before = cpu_ticks();
            assert!(matches!(q.get_timeout(Duration::from_millis(1500)), Err(Error::Empty)));
            cpu_ticks() - before
        },
        q.clone(), // kept here: a queue nobody else holds would be disconnected
    )
    .unwrap()
    .join()
    .unwrap();
    assert!(ticks <= 3, "an idle get used {ticks} ticks of CPU in 1.5 s");
}

#[test]
fn a_one_gib_item_travels_through_a_small_ring() {
    use serde_bytes::ByteBuf;
    const GIB: usize = 1 << 30;
    let q: Queue<ByteBuf> = Queue::with_capacity(0, 64 * 1024).unwrap();
    // Making and copying 1 GiB in a debug build on a loaded machine can take minutes: the
    // consumer waits for as long as the item takes (a hang still ends at the deadline).
    const VERY_LONG: Option<Duration> = Some(Duration::from_secs(900));
    let consumer = multiproc::spawn(
        |q: Queue<ByteBuf>| {
            let item = q.get_timeout(VERY_LONG.unwrap()).unwrap();
            let sample: Vec<u8> = (0..item.len()).step_by(4093).map(|i| item[i]).collect();
            (item.len(), sample)
        },
        q.clone(),
    )
    .unwrap();
    // A sparse pattern (every 4093rd byte) keeps the debug build fast.
    let mut item = vec![7u8; GIB];
    for i in (0..GIB).step_by(4093) {
        item[i] = (i % 251) as u8;
    }
    let expected: Vec<u8> = (0..GIB).step_by(4093).map(|i| item[i]).collect();
    q.put_timeout(ByteBuf::from(item), VERY_LONG.unwrap()).unwrap();
    let (len, sample) = consumer.join().unwrap();
    assert_eq!(len, GIB);
    assert!(sample == expected, "the 1 GiB item arrived altered");
}

// --------------------------------------------------------------------------------------
// Failed puts and disconnection

#[test]
fn failed_puts_hand_their_items_back() {
    let q: Queue<String> = Queue::new(1).unwrap();
    q.try_put("a".to_string()).unwrap();
    let full = q.try_put("b".to_string()).unwrap_err();
    assert!(matches!(full.error(), Error::Full));
    assert_eq!(full.into_item(), "b");
    let timed_out = q.put_timeout("c".to_string(), Duration::from_millis(5)).unwrap_err();
    assert_eq!(timed_out.into_parts().0, "c");
    let rest = q.try_put_many(["d".to_string(), "e".to_string()]).unwrap_err();
    assert_eq!(rest.into_item(), ["d", "e"]);
    assert_eq!(q.get().unwrap(), "a");
    let rest = q.put_many_timeout(["f".to_string(), "g".to_string()], Duration::ZERO).unwrap_err();
    assert!(matches!(rest.error(), Error::Full));
    assert_eq!(rest.into_item(), ["g"], "the first went in");
    q.close();
    let closed = q.put("h".to_string()).unwrap_err();
    assert!(matches!(closed.error(), Error::Closed(_)));
    assert_eq!(closed.into_item(), "h");
    // `?` still works in functions returning multiproc::Result.
    let with_question_mark = || -> multiproc::Result<()> { Ok(q.put("i".to_string())?) };
    assert!(matches!(with_question_mark(), Err(Error::Closed(_))));
}

mod common;
use common::waits::{futex_waits, wait_until};

/// Puts one item, then holds the queue until killed.
fn put_one_then_hold(q: Queue<u32>) {
    q.put(1).unwrap();
    std::thread::sleep(Duration::from_secs(600)); // killed by the test
}

/// Puts one item and lets go of the queue, then waits for `go` to end.
fn put_one_then_let_go((q, go): (Queue<u32>, multiproc::synchronize::Event)) {
    q.put(1).unwrap();
    drop(q);
    go.wait_timeout(LONG.unwrap()).unwrap();
}

/// Runs `get` on a thread of its own and, once that thread sleeps in the queue (or has
/// returned already), `meanwhile`; returns what `get` returned, failing the test if it did
/// not return within a minute.
fn get_on_a_thread<T: Send + 'static>(
    get: impl FnOnce() -> multiproc::Result<T> + Send + 'static,
    meanwhile: impl FnOnce(),
) -> multiproc::Result<T> {
    use std::sync::atomic::{AtomicBool, AtomicU32, Ordering::SeqCst};
    use std::sync::Arc;
    let (tx, rx) = std::sync::mpsc::channel();
    let (tid, done) = (Arc::new(AtomicU32::new(0)), Arc::new(AtomicBool::new(false)));
    let (getter_tid, getter_done) = (tid.clone(), done.clone());
    std::thread::spawn(move || {
        let link = std::fs::read_link("/proc/thread-self").unwrap();
        getter_tid.store(link.file_name().unwrap().to_str().unwrap().parse().unwrap(), SeqCst);
        let result = get();
        getter_done.store(true, SeqCst);
        let _ = tx.send(result);
    });
    let me = std::process::id();
    wait_until("the getter asleep in the queue", || {
        done.load(SeqCst) || futex_waits(me).iter().any(|w| !w.private && w.tid == tid.load(SeqCst))
    });
    meanwhile();
    rx.recv_timeout(Duration::from_secs(60)).expect("the get returned")
}

#[test]
fn a_get_whose_only_other_holder_was_killed_is_disconnected() {
    let q: Queue<u32> = Queue::new(0).unwrap();
    let p = Process::new(put_one_then_hold, q.clone());
    p.start().unwrap();
    // The child has attached (it put), and stays alive: a get waits for it.
    assert_eq!(q.get_timeout(LONG.unwrap()).unwrap(), 1);
    assert!(matches!(q.get_timeout(Duration::from_millis(600)), Err(Error::Empty)));
    let getter = q.clone();
    let got = get_on_a_thread(move || getter.get(), || p.kill().unwrap());
    assert!(matches!(got, Err(Error::Disconnected("queue"))), "{got:?}");
    p.join_timeout(LONG.unwrap()).unwrap();
    assert_eq!(p.exitcode(), Some(-9));
    // The same for a put that waits for room, which hands its item back.
    let bounded: Queue<u32> = Queue::new(1).unwrap();
    let p = Process::new(put_one_then_hold, bounded.clone());
    p.start().unwrap();
    wait_until("the child's item", || bounded.full());
    let putter = bounded.clone();
    let put = get_on_a_thread(
        move || match putter.put(2) {
            Err(e) => Ok(e.into_parts()),
            Ok(()) => Err(Error::Protocol("the put went in".into())),
        },
        || p.kill().unwrap(),
    );
    assert!(matches!(put, Ok((2, Error::Disconnected("queue")))), "{put:?}");
    p.join_timeout(LONG.unwrap()).unwrap();
    // Items already queued are still taken before the queue reports it.
    assert_eq!(bounded.get().unwrap(), 1);
    assert!(matches!(bounded.get(), Err(Error::Disconnected(_))));
}

/// Takes one task and never finishes it, until killed.
fn take_a_task_then_hold(q: JoinableQueue<u32>) {
    q.get().unwrap();
    std::thread::sleep(Duration::from_secs(600)); // killed by the test
}

#[test]
fn a_join_whose_only_consumer_was_killed_mid_task_is_disconnected() {
    let q: JoinableQueue<u32> = JoinableQueue::new(0).unwrap();
    q.put(1).unwrap();
    let p = Process::new(take_a_task_then_hold, q.clone());
    p.start().unwrap();
    wait_until("the consumer's get", || q.empty());
    let joiner = q.clone();
    let joined = get_on_a_thread(move || joiner.join(), || p.kill().unwrap());
    assert!(matches!(joined, Err(Error::Disconnected("queue"))), "{joined:?}");
    p.join_timeout(LONG.unwrap()).unwrap();
    assert_eq!(p.exitcode(), Some(-9));
    // The task is still unfinished: the queue did not pretend otherwise.
    assert!(matches!(
        q.join_timeout(Duration::ZERO),
        Err(Error::Disconnected(_) | Error::Timeout(_))
    ));
}

#[test]
fn a_get_whose_other_holder_let_go_or_exited_is_disconnected() {
    // The child lets go of its handle and lives on.
    let q: Queue<u32> = Queue::new(0).unwrap();
    let go = multiproc::synchronize::Event::new().unwrap();
    let p = Process::new(put_one_then_let_go, (q.clone(), go.clone()));
    p.start().unwrap();
    assert_eq!(q.get_timeout(LONG.unwrap()).unwrap(), 1);
    let getter = q.clone();
    let got = get_on_a_thread(move || getter.get(), || {});
    assert!(matches!(got, Err(Error::Disconnected("queue"))), "{got:?}");
    assert!(p.is_alive());
    go.set();
    p.join_timeout(LONG.unwrap()).unwrap();
    assert_eq!(p.exitcode(), Some(0));

    // The child exits normally, its handle dropped on the way out.
    let q: Queue<u32> = Queue::new(0).unwrap();
    let go = multiproc::synchronize::Event::new().unwrap();
    go.set();
    let p = Process::new(put_one_then_let_go, (q.clone(), go));
    p.start().unwrap();
    p.join_timeout(LONG.unwrap()).unwrap();
    assert_eq!(q.get().unwrap(), 1);
    assert!(matches!(q.get(), Err(Error::Disconnected("queue"))));
    // A queue that never left this process is never disconnected: its threads may put.
    let local: Queue<u32> = Queue::new(0).unwrap();
    assert!(matches!(local.get_timeout(Duration::from_millis(300)), Err(Error::Empty)));
}

/// Waits for `go`, then puts 7.
fn put_when_told((q, go): (Queue<u32>, multiproc::synchronize::Event)) {
    go.wait_timeout(LONG.unwrap()).unwrap();
    q.put(7).unwrap();
}

#[test]
fn a_get_waits_as_long_as_another_holder_lives() {
    let q: Queue<u32> = Queue::new(0).unwrap();
    let go = multiproc::synchronize::Event::new().unwrap();
    let p = Process::new(put_when_told, (q.clone(), go.clone()));
    p.start().unwrap();
    // Long enough for a sleeping getter to look for other holders several times.
    assert!(matches!(q.get_timeout(Duration::from_millis(800)), Err(Error::Empty)));
    let getter = q.clone();
    let got = get_on_a_thread(move || getter.get(), || go.set());
    assert_eq!(got.unwrap(), 7);
    p.join_timeout(LONG.unwrap()).unwrap();
}

#[test]
fn a_queue_its_own_process_received_is_not_disconnected() {
    // As a manager server on a thread of the client's process receives the fast lane: the
    // process holds the queue twice, and its other thread may still put.
    let q: Queue<u32> = Queue::new(0).unwrap();
    let (a, b) = multiproc::pipe(true).unwrap();
    a.send(&q).unwrap();
    let received: Queue<u32> = b.recv().unwrap();
    assert!(matches!(q.get_timeout(Duration::from_millis(300)), Err(Error::Empty)));
    received.put(3).unwrap();
    assert_eq!(q.get().unwrap(), 3);
    // Once it lets go of the second handle, the queue has been shared and nobody else
    // holds it.
    drop(received);
    assert!(matches!(q.get(), Err(Error::Disconnected("queue"))));
}

#[test]
fn a_forked_holder_counts_from_its_first_put_until_it_is_gone() {
    let q: Queue<u32> = Queue::new(0).unwrap();
    let p = Process::builder(put_one_then_hold, q.clone()).start_method(StartMethod::Fork).build();
    p.start().unwrap();
    assert_eq!(q.get_timeout(LONG.unwrap()).unwrap(), 1);
    // Alive, the child holds the queue (it inherited its handle and put): a get waits.
    assert!(matches!(q.get_timeout(Duration::from_millis(600)), Err(Error::Empty)));
    let getter = q.clone();
    let got = get_on_a_thread(move || getter.get(), || p.kill().unwrap());
    assert!(matches!(got, Err(Error::Disconnected("queue"))), "{got:?}");
    p.join_timeout(LONG.unwrap()).unwrap();
}

/// The nine kinds of value a pickle queue carries between Rust and Python, in one item.
type Kinds = (
    Option<i64>,
    bool,
    i64,
    f64,
    String,
    serde_bytes::ByteBuf,
    Vec<i64>,
    (i64, String),
    std::collections::BTreeMap<String, i64>,
);

fn kinds(n: i64) -> Kinds {
    (
        (n % 2 == 0).then_some(n),
        n % 3 == 0,
        i64::MIN + n,
        n as f64 + 0.25,
        format!("héllo ✓ {n}"),
        serde_bytes::ByteBuf::from(vec![0, 0xff, n as u8]),
        vec![n, -n],
        (n, "n".repeat(n as usize % 5)),
        [("a".to_string(), n), ("b".to_string(), -n)].into_iter().collect(),
    )
}

fn pickle_child((q, back): (Queue<Kinds>, Queue<Kinds>)) {
    for _ in 0..3 {
        let item = q.get_timeout(Duration::from_secs(60)).expect("an item from the parent");
        back.put(item).expect("put it back");
    }
}

#[test]
fn a_pickle_queue_carries_values_between_processes_and_keeps_its_codec() {
    use multiproc::Codec;
    let (q, back) = (
        Queue::<Kinds>::with_codec(0, Codec::Pickle).unwrap(),
        Queue::<Kinds>::with_codec(0, Codec::Pickle).unwrap(),
    );
    assert_eq!((q.codec(), back.codec()), (Codec::Pickle, Codec::Pickle));
    let p = Process::new(pickle_child, (q.clone(), back.clone()));
    p.start().unwrap();
    let sent = [kinds(1), kinds(2), kinds(3)];
    q.put_many(sent.clone()).unwrap();
    let got = back.get_many_timeout(3, Duration::from_secs(60)).unwrap();
    let mut got = got.into_iter().collect::<Vec<_>>();
    while got.len() < 3 {
        got.push(back.get_timeout(Duration::from_secs(60)).unwrap());
    }
    assert_eq!(got, sent);
    p.join_timeout(Duration::from_secs(60)).unwrap();
    assert_eq!(p.exitcode(), Some(0));
    // A handle opened from the descriptor reads the codec from the queue itself.
    let fd = q.export_fd().try_clone_to_owned().unwrap();
    assert_eq!(Queue::<u8>::from_fd(fd).unwrap().codec(), Codec::Pickle);
    assert_eq!(Queue::<u8>::new(0).unwrap().codec(), Codec::Postcard);
}

#[test]
fn pickled_items_are_pickles_as_they_are_and_large_ones_travel_in_blocks() {
    use multiproc::queues::Pickled;
    use multiproc::Codec;
    let q = Queue::<Pickled>::with_codec(0, Codec::Pickle).unwrap();
    let typed = Queue::<(String, serde_bytes::ByteBuf)>::from_fd(
        q.export_fd().try_clone_to_owned().unwrap(),
    )
    .unwrap();
    // Typed in, pickle out: a pickle CPython loads (protocol 3, starting with PROTO 3).
    let big = serde_bytes::ByteBuf::from(vec![0x5a; 3 << 20]); // larger than a quarter ring
    typed.put(("small".into(), serde_bytes::ByteBuf::from(vec![1, 2]))).unwrap();
    typed.put(("big".into(), big.clone())).unwrap();
    let small = q.get().unwrap();
    assert_eq!(&small.0[..2], &[0x80, 3]);
    let large = q.get().unwrap();
    assert!(large.0.len() > 3 << 20);
    // Pickle in, typed out, inline and through a block: the same bytes come back whole.
    q.put(small).unwrap();
    q.put(large).unwrap();
    assert_eq!(typed.get().unwrap(), ("small".into(), serde_bytes::ByteBuf::from(vec![1, 2])));
    assert_eq!(typed.get().unwrap(), ("big".into(), big));
}

#[test]
fn a_bad_pickle_is_an_error_for_that_item_and_the_queue_goes_on() {
    use multiproc::queues::Pickled;
    use multiproc::Codec;
    let raw = Queue::<Pickled>::with_codec(0, Codec::Pickle).unwrap();
    let typed = Queue::<i64>::from_fd(raw.export_fd().try_clone_to_owned().unwrap()).unwrap();
    raw.put(Pickled(b"not a pickle".to_vec())).unwrap();
    // A pickle that would run code: GLOBAL os.system, REDUCE.
    raw.put(Pickled(b"cos\nsystem\n(S'true'\ntR.".to_vec())).unwrap();
    raw.put(Pickled(vec![0x80, 2, b'K', 42, b'.'])).unwrap();
    assert!(matches!(typed.get(), Err(Error::Codec(_))));
    match typed.get() {
        Err(Error::Codec(m)) => assert!(m.contains("system") || m.contains("GLOBAL"), "{m}"),
        other => panic!("a pickle naming os.system must be refused, got {other:?}"),
    }
    assert_eq!(typed.get().unwrap(), 42);
}
