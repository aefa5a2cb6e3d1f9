//! The queue under fire: producers and consumers SIGKILLed at random moments, hundreds of
//! times, while the same queue stays in use; once with mostly small items, once with only
//! large ones (each in a shared memory block that its producer reuses). Checked invariants:
//! - every delivered item is whole (its checksum matches) — consumers verify each one;
//! - nothing is delivered twice;
//! - each producer's items are delivered in its order: every consumer gets a producer's
//!   items in increasing sequence, and together they got a prefix of what it put (a
//!   killed producer's last item may be missing), minus at most one item per killed
//!   consumer (an item it had taken when it died);
//! - every item of a producer that survived is delivered, under the same allowance;
//! - no survivor blocks forever, and the queue keeps working afterwards.
//!
//! Afterwards the test removes the blocks its killed producers left (and nobody else's).

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use multiproc::connection::wait_timeout;
use multiproc::queues::Queue;
use multiproc::synchronize::Event;
use multiproc::{pipe, Connection, Error, Process};

const ITEMS_PER_PRODUCER: u32 = 400;

/// An item: (producer, sequence number, payload, checksum of the payload).
type Item = (u32, u32, Vec<u8>, u64);

fn checksum(bytes: &[u8]) -> u64 {
    bytes
        .iter()
        .fold(0xcbf2_9ce4_8422_2325u64, |h, &b| (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3))
}

/// Item `seq` of `producer`. Small load: mostly small items; every 37th is larger than a
/// quarter of the ring and travels in a block. Big load: every item travels in a block
/// (16 KiB to 216 KiB), so kills land in the middle of copies and blocks get reused.
fn payload(producer: u32, seq: u32, big: bool) -> Vec<u8> {
    let len = if big {
        16_384 + (seq as usize * 7919 + producer as usize * 104_729) % 200_000
    } else if seq % 37 == 36 {
        3000
    } else {
        8 + (seq as usize * 7 + producer as usize) % 120
    };
    (0..len).map(|i| (i as u32 ^ producer.wrapping_mul(31) ^ seq) as u8).collect()
}

/// Items each producer puts.
fn items(big: bool) -> u32 {
    if big {
        40
    } else {
        ITEMS_PER_PRODUCER
    }
}

fn producer((q, id, big): (Queue<Item>, u32, bool)) {
    for seq in 0..items(big) {
        let data = payload(id, seq, big);
        let sum = checksum(&data);
        q.put_timeout((id, seq, data, sum), Duration::from_secs(60)).expect("put");
    }
}

fn consumer((q, done, report, big): (Queue<Item>, Event, Connection, bool)) {
    loop {
        match q.get_timeout(Duration::from_millis(50)) {
            Ok((id, seq, data, sum)) => {
                assert_eq!(checksum(&data), sum, "item {id}/{seq} arrived damaged");
                assert!(data == payload(id, seq, big), "item {id}/{seq} arrived altered");
                report.send(&(id, seq)).expect("report");
            }
            // Done only once nothing is queued: a get can come back empty-handed while
            // items wait behind a killed consumer's lock (on a loaded machine, its
            // takeover can take longer than the get's timeout).
            Err(Error::Empty) if done.is_set() && q.empty() => return,
            Err(Error::Empty) => {}
            Err(e) => panic!("get failed: {e}"),
        }
    }
}

/// A small deterministic generator for the kill schedule.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

struct Consumer {
    process: Process,
    report: Connection,
    /// What it reported, in the order it got them.
    got: Vec<(u32, u32)>,
}

fn start_consumer(q: &Queue<Item>, done: &Event, big: bool) -> Consumer {
    let (report, child_end) = pipe(true).unwrap();
    // Spawned, not forked: a forked child would inherit the other consumers' report
    // pipes and keep them open after those consumers die. Daemons: none outlives the test.
    let process =
        Process::builder(consumer, (q.clone(), done.clone(), child_end, big)).daemon(true).build();
    process.start().unwrap();
    Consumer { process, report, got: Vec::new() }
}

/// Reads every report that is ready now (or until `timeout` for the first).
fn collect(consumers: &mut [Consumer], timeout: Duration) {
    let objects: Vec<&dyn multiproc::connection::Waitable> =
        consumers.iter().map(|c| &c.report as &dyn multiproc::connection::Waitable).collect();
    let ready = match wait_timeout(&objects, timeout) {
        Ok(ready) => ready,
        Err(Error::Timeout(_)) => Vec::new(),
        Err(e) => panic!("wait: {e}"),
    };
    for i in ready {
        while consumers[i].report.poll().unwrap_or(false) {
            match consumers[i].report.recv::<(u32, u32)>() {
                Ok(item) => consumers[i].got.push(item),
                Err(_) => break,
            }
        }
    }
}

#[test]
fn killing_producers_and_consumers_at_random_never_corrupts_the_queue() {
    run_faults(60, false, 200, 0x9e37_79b9_7f4a_7c15);
}

#[test]
fn killing_them_in_the_middle_of_large_items_never_corrupts_the_queue() {
    run_faults(25, true, 80, 0x2545_f491_4f6c_dd1d);
}

/// Rounds of 3 producers and 2 consumers, 6 random kills each, then the invariants.
fn run_faults(rounds: u32, big: bool, min_kills: usize, seed: u64) {
    let q: Queue<Item> = Queue::with_capacity(64, 4096).unwrap();
    let mut rng = Rng(seed);
    let mut kills = 0;
    let mut next_id = 0;
    // Every producer this test started: a killed one leaves the block it was filling, and
    // one that exited may leave a block whose reader was killed mid-read.
    let mut our_producers = Vec::new();
    for _round in 0..rounds {
        let done = Event::new().unwrap();
        let mut producers: Vec<(u32, Process, bool)> = Vec::new();
        for _ in 0..3 {
            let p = Process::builder(producer, (q.clone(), next_id, big)).daemon(true).build();
            p.start().unwrap();
            our_producers.push(p.pid().unwrap());
            producers.push((next_id, p, false));
            next_id += 1;
        }
        let mut consumers: Vec<Consumer> = (0..2).map(|_| start_consumer(&q, &done, big)).collect();
        let mut finished_consumers: Vec<Consumer> = Vec::new();
        let mut consumer_kills = 0;

        // Kill someone at random moments while the round runs.
        for _ in 0..6 {
            let pause = Duration::from_micros(rng.below(3000));
            let until = Instant::now() + pause;
            while Instant::now() < until {
                collect(&mut consumers, Duration::from_micros(200));
            }
            if rng.below(2) == 0 {
                let victim = rng.below(producers.len() as u64) as usize;
                if producers[victim].1.is_alive() {
                    producers[victim].1.kill().unwrap();
                    producers[victim].2 = true;
                    kills += 1;
                }
            } else {
                let victim = rng.below(consumers.len() as u64) as usize;
                let c = consumers.remove(victim);
                c.process.kill().unwrap();
                c.process.join_timeout(Duration::from_secs(60)).unwrap();
                finished_consumers.push(c);
                consumer_kills += 1;
                kills += 1;
                consumers.push(start_consumer(&q, &done, big));
            }
        }

        // Let the survivors finish; nobody may block forever.
        let deadline = Instant::now() + Duration::from_secs(120);
        for (_, p, _) in &producers {
            while p.join_timeout(Duration::from_millis(10)).is_err() {
                assert!(Instant::now() < deadline, "a producer is stuck");
                collect(&mut consumers, Duration::from_millis(1));
            }
        }
        done.set();
        for i in 0..consumers.len() {
            while consumers[i].process.join_timeout(Duration::from_millis(10)).is_err() {
                assert!(Instant::now() < deadline, "a consumer is stuck");
                collect(&mut consumers, Duration::from_millis(1));
            }
        }
        for c in &consumers {
            assert_eq!(
                c.process.exitcode(),
                Some(0),
                "consumer failed: {:?}",
                c.process.panic_message()
            );
        }
        finished_consumers.append(&mut consumers);
        // Drain every report pipe to its end.
        for c in &mut finished_consumers {
            while let Ok(item) = c.report.recv_timeout::<(u32, u32)>(Duration::from_secs(10)) {
                c.got.push(item);
            }
        }

        // Invariants. Each consumer got each producer's items in the producer's order.
        for c in &finished_consumers {
            let mut last: BTreeMap<u32, u32> = BTreeMap::new();
            for &(id, seq) in &c.got {
                if let Some(previous) = last.insert(id, seq) {
                    assert!(
                        seq > previous,
                        "a consumer got item {seq} of producer {id} after its item {previous}"
                    );
                }
            }
        }
        let delivered: Vec<(u32, u32)> =
            finished_consumers.iter().flat_map(|c| c.got.iter().copied()).collect();
        let mut seen = BTreeSet::new();
        for item in &delivered {
            assert!(seen.insert(*item), "item {item:?} delivered twice");
        }
        let mut per_producer: BTreeMap<u32, Vec<u32>> = BTreeMap::new();
        for (id, seq) in delivered {
            per_producer.entry(id).or_default().push(seq);
        }
        for (id, p, killed) in &producers {
            let mut seqs = per_producer.remove(id).unwrap_or_default();
            seqs.sort_unstable();
            let highest = seqs.last().map_or(0, |&s| s + 1);
            let expected = if *killed { highest } else { items(big) };
            if !killed {
                assert_eq!(p.exitcode(), Some(0), "producer {id} failed: {:?}", p.panic_message());
            }
            let missing = expected as usize - seqs.len();
            assert!(
                missing <= consumer_kills,
                "producer {id}: {missing} items missing below {expected}, but only {consumer_kills} consumers were killed"
            );
        }
        assert!(per_producer.is_empty(), "items from unknown producers: {per_producer:?}");
    }
    assert!(kills >= min_kills, "only {kills} kills");
    println!("{kills} kills over {rounds} rounds");

    // The queue still works: the item put now comes out whole (after any a killed
    // producer left that no consumer took, each whole too).
    let data = payload(9999, 1, big);
    q.put((9999, 1, data.clone(), checksum(&data))).unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let (id, seq, got, sum) =
            q.get_timeout(left).unwrap_or_else(|e| panic!("the queue lost the last item: {e}"));
        assert_eq!(checksum(&got), sum, "item {id}/{seq} arrived damaged");
        if id == 9999 {
            assert!(got == data, "the last item arrived altered");
            break;
        }
        assert!(got == payload(id, seq, big), "item {id}/{seq} arrived altered");
    }
    // Blocks left by this test's producers belong to dead processes: remove those, and
    // only those (others' orphans are not ours to clean).
    // While this process holds the queue they are still reachable (a block may carry a
    // queued item), so the queue goes first.
    drop(q);
    for &pid in &our_producers {
        let report = multiproc::shared_memory::clean_orphans_of(pid).unwrap();
        assert!(report.failed.is_empty(), "{:?}", report.failed);
    }
    let left: Vec<_> = multiproc::shared_memory::list_blocks()
        .unwrap()
        .into_iter()
        .filter(|b| our_producers.contains(&b.owner_pid))
        .map(|b| b.name)
        .collect();
    assert!(left.is_empty(), "blocks of this test's producers left behind: {left:?}");
}
