//! Queue rows: [`Queue`] and [`SimpleQueue`] between processes (throughput with one or
//! two producers and consumers, a ping-pong over two queues, 1/16/64 MiB items, batches), their
//! CPython counterparts (`multiprocessing.Queue` / `SimpleQueue`) and floors.
//!
//! Every producer and consumer is a child process of its own, pinned to its CPU; each
//! reports ready, waits for a shared start `Event`, works, and reports done, so process
//! start-up is never timed: a row's time runs from the start to the last one done. The
//! parent only waits.

use std::hint::black_box;
use std::os::fd::AsFd;
use std::time::{Duration, Instant};

use multiproc::queues::{Queue, SimpleQueue};
use multiproc::synchronize::Event;
use multiproc::{Connection, Process};
use rustix::io::Errno;
use serde::de::DeserializeOwned;
use serde::Serialize;

use super::measure::{self_cpu, Sample};
use super::ours::{pin, BoxError, Placement};
use super::{Floor, Row, IDLE_WARM, MIB, WARM_ROUND_TRIPS};

/// Which queue workload a row runs.
#[derive(Clone, Copy, Debug)]
pub enum Op {
    /// `queue_tput_1p1c_64B`: `Queue<Vec<u8>>`, 64-byte items, 1 producer → 1 consumer.
    Tput1p1c64,
    /// `queue_tput_2p2c_64B`: the same with 2 producers → 2 consumers.
    Tput2p2c64,
    /// `queue_tput_1p1c_tuple`: `(u32, String, f64)` items, 1 → 1.
    TputTuple,
    /// `queue_pingpong`: a 64-byte item out on one queue and back on another.
    PingPong,
    /// `queue_pingpong_idle`: the same with a pause before each round trip, so that both
    /// sides park.
    PingPongIdle,
    /// `queue_1MiB`, `queue_16MiB`, `queue_64MiB`: `Vec<u8>` items of this many MiB, 1 → 1
    /// (each in a shared memory block, not in the ring).
    Big(usize),
    /// `queue_get_many_64B`: 64-byte items, `put_many` batches → `get_many(1024)`.
    GetMany64,
    /// `simplequeue_tput_1p1c_64B`: `SimpleQueue<Vec<u8>>`, 64-byte items, 1 → 1.
    SimpleTput64,
}

/// Items of a 64-byte row.
const SIZE: usize = 64;
/// Large items that pass untimed before the clock starts (both sides, CPython too): a
/// stream's first items pay for fresh shared memory, the rows measure the steady stream.
const WARM_BIG: u64 = 2;
/// `put_many` batch and `get_many` maximum of `queue_get_many_64B`.
const BATCH: usize = 1024;

/// The notes printed under the table when any of these rows ran.
pub const NOTES: &[&str] = &[
    "queue rows: each producer and consumer is a process of its own (started untimed), timed from a",
    "common start Event to the last one done; producers on the pipe benchmarks' parent CPU, consumers on",
    "the child CPU (2p2c: four distinct CPUs when there are 4+). CPython: multiprocessing.Queue /",
    "SimpleQueue the same way, 'fork' start method (its Queue pickles and writes in a feeder thread).",
    "queue ceilings: throughput rows, a bare single-producer single-consumer ring in shared memory per",
    "producer/consumer pair on the same CPUs (records of the queue's size: 8-byte header + encoding padded",
    "to 8; 4 MiB of slots; no lock, no encoding; a waiter spins, then yields: on 2 CPUs the 2p2c workers",
    "share them); queue_pingpong: a spinning hand-off of one cache line; queue_pingpong_idle: a raw futex",
    "wake of the parked echo, its answer awaited spinning; queue_*MiB: in-process memcpy.",
    "queue baselines: the same bytes, one write() per item, into a raw socketpair drained in big reads",
    "(2p2c: two writers, two readers); queue_pingpong: a raw socketpair round trip of 64 bytes;",
    "queue_pingpong_idle: a raw futex round trip with both sides parked, and the socketpair, same pause.",
    "queue_tput_1p1c_tuple: (1u32, \"abc\".to_string(), 2.5f64) vs (1, \"abc\", 2.5); its baseline",
    "writes the 13 bytes of the postcard encoding. queue_*MiB: a stream",
    "of Vec<u8>s built untimed (put takes them by value), timed after 2 untimed items on both sides",
    "(CPython too): a stream's first large items pay for fresh shared memory blocks, later ones reuse them.",
    "queue_get_many_64B: put_many batches of 1024, get_many(1024); CPython has no batch API, so its",
    "column is its plain Queue, one item per put/get (the queue_tput_1p1c_64B workload).",
];

// --------------------------------------------------------------------------------------
// Items

/// An item type of a throughput row.
trait Item: Serialize + DeserializeOwned + 'static {
    fn make(size: usize) -> Self;
    fn is_ok(&self, size: usize) -> bool;
}

impl Item for Vec<u8> {
    fn make(size: usize) -> Self {
        vec![0x5a; size]
    }
    fn is_ok(&self, size: usize) -> bool {
        self.len() == size
    }
}

type Tuple = (u32, String, f64);

impl Item for Tuple {
    fn make(_: usize) -> Self {
        (1, "abc".to_string(), 2.5)
    }
    fn is_ok(&self, _: usize) -> bool {
        self.0 == 1 && self.1 == "abc" && self.2 == 2.5
    }
}

// --------------------------------------------------------------------------------------
// Workers: started, ready, go, done

/// A worker's control: the start event, its pipe to the parent, its CPU.
pub(super) type Ctl = (Event, Connection, Option<usize>);

/// Pins the worker, reports ready and waits for the start; returns this process's CPU
/// time at the start (see [`done`]).
pub(super) fn ready(ctl: &Ctl) -> f64 {
    pin(ctl.2).unwrap();
    ctl.1.send_bytes(b"r").unwrap();
    ctl.0.wait();
    self_cpu()
}

/// Reports done, with a number (a worker's own timing, or 0) and the CPU time this
/// process has used since `stamp` (what [`ready`] returned, or a later stamp).
pub(super) fn done(ctl: &Ctl, secs: f64, stamp: f64) {
    ctl.1.send(&(secs, self_cpu() - stamp)).unwrap();
}

/// Workers started but not yet run; killed and reaped if the run fails half-way.
pub(super) struct Team {
    go: Event,
    procs: Vec<Process>,
    conns: Vec<Connection>,
}

impl Team {
    pub(super) fn new() -> Result<Team, BoxError> {
        Ok(Team { go: Event::new()?, procs: Vec::new(), conns: Vec::new() })
    }

    pub(super) fn start<A>(
        &mut self,
        target: fn((Ctl, A)),
        cpu: Option<usize>,
        args: A,
    ) -> Result<(), BoxError>
    where
        A: Serialize + DeserializeOwned + Send + 'static,
    {
        let (ours, theirs) = multiproc::pipe(true)?;
        let p = Process::new(target, ((self.go.clone(), theirs, cpu), args));
        p.start()?;
        self.procs.push(p);
        self.conns.push(ours);
        Ok(())
    }

    /// Waits until every worker is ready, starts them, and waits until each is done.
    /// Returns the seconds from the start to the last done, each worker's number, and the
    /// CPU seconds of every worker and of this process over the run.
    pub(super) fn run(mut self) -> Result<(f64, Vec<f64>, f64), BoxError> {
        for c in &self.conns {
            let got = c.recv_bytes()?;
            if got != b"r" {
                return Err(format!("benchmark child sent {got:?} instead of ready").into());
            }
        }
        let (t0, cpu0) = (Instant::now(), self_cpu());
        self.go.set();
        let mut reported = Vec::with_capacity(self.conns.len());
        let mut cpu = 0.0;
        for c in &self.conns {
            let (secs, worker_cpu) = c.recv::<(f64, f64)>()?;
            reported.push(secs);
            cpu += worker_cpu;
        }
        let elapsed = t0.elapsed().as_secs_f64();
        cpu += self_cpu() - cpu0;
        for p in std::mem::take(&mut self.procs) {
            p.join()?;
            if p.exitcode() != Some(0) {
                return Err(format!(
                    "benchmark child failed (exit code {:?}){}",
                    p.exitcode(),
                    p.panic_message().map(|m| format!(": {m}")).unwrap_or_default()
                )
                .into());
            }
        }
        Ok((elapsed, reported, cpu))
    }
}

impl Drop for Team {
    fn drop(&mut self) {
        for p in &self.procs {
            if p.is_alive() {
                let _ = p.kill();
            }
            let _ = p.join();
        }
    }
}

/// The CPUs of `k` producers and `k` consumers: producers where the pipe benchmarks put
/// the parent, consumers where they put the child; with two distinct CPUs pinned and at
/// least `2k` allowed, every worker gets a CPU of its own.
pub(super) fn cpus(place: Placement, k: usize) -> (Vec<Option<usize>>, Vec<Option<usize>>) {
    if let (Some(a), Some(b)) = (place.parent, place.child) {
        let allowed = super::allowed_cpus();
        if a != b && k > 1 && allowed.len() >= 2 * k {
            let mut order = vec![a, b];
            order.extend(allowed.iter().copied().filter(|&c| c != a && c != b));
            let producers = (0..k).map(|i| Some(order[2 * i])).collect();
            let consumers = (0..k).map(|i| Some(order[2 * i + 1])).collect();
            return (producers, consumers);
        }
    }
    (vec![place.parent; k], vec![place.child; k])
}

// --------------------------------------------------------------------------------------
// multiproc's workers

fn producer<T: Item>((ctl, (q, n, size)): (Ctl, (Queue<T>, u64, usize))) {
    let stamp = ready(&ctl);
    for _ in 0..n {
        // A fresh item per put, as a real producer makes (put takes it by value).
        q.put(T::make(size)).unwrap();
    }
    done(&ctl, 0.0, stamp);
}

fn consumer<T: Item>((ctl, (q, n, size)): (Ctl, (Queue<T>, u64, usize))) {
    let stamp = ready(&ctl);
    for _ in 0..n {
        let item = q.get().unwrap();
        assert!(item.is_ok(size), "the queue delivered a wrong item");
        black_box(item);
    }
    done(&ctl, 0.0, stamp);
}

fn batch_producer((ctl, (q, n)): (Ctl, (Queue<Vec<u8>>, u64))) {
    let stamp = ready(&ctl);
    let mut left = n;
    while left > 0 {
        let k = left.min(BATCH as u64);
        q.put_many((0..k).map(|_| vec![0x5a; SIZE])).unwrap();
        left -= k;
    }
    done(&ctl, 0.0, stamp);
}

fn batch_consumer((ctl, (q, n)): (Ctl, (Queue<Vec<u8>>, u64))) {
    let stamp = ready(&ctl);
    let mut got = 0;
    while got < n {
        let items = q.get_many(BATCH).unwrap();
        assert!(items.iter().all(|m| m.len() == SIZE), "the queue delivered a wrong item");
        got += items.len() as u64;
        black_box(items);
    }
    assert_eq!(got, n, "the queue delivered too many items");
    done(&ctl, 0.0, stamp);
}

fn simple_producer((ctl, (q, n)): (Ctl, (SimpleQueue<Vec<u8>>, u64))) {
    let stamp = ready(&ctl);
    for _ in 0..n {
        q.put(vec![0x5a; SIZE]).unwrap();
    }
    done(&ctl, 0.0, stamp);
}

fn simple_consumer((ctl, (q, n)): (Ctl, (SimpleQueue<Vec<u8>>, u64))) {
    let stamp = ready(&ctl);
    for _ in 0..n {
        let item = q.get().unwrap();
        assert_eq!(item.len(), SIZE, "the queue delivered a wrong item");
        black_box(item);
    }
    done(&ctl, 0.0, stamp);
}

fn big_producer((ctl, (q, n, size)): (Ctl, (Queue<Vec<u8>>, u64, usize))) {
    // Built (and every page touched) before the clock: put takes its item by value.
    let mut items = (0..n + WARM_BIG).map(|_| vec![0x5a; size]);
    pin(ctl.2).unwrap();
    for item in items.by_ref().take(WARM_BIG as usize) {
        q.put(item).unwrap();
    }
    let items: Vec<Vec<u8>> = items.collect();
    let stamp = ready(&ctl);
    for item in items {
        q.put(item).unwrap();
    }
    done(&ctl, 0.0, stamp);
}

fn big_consumer((ctl, (q, n, size)): (Ctl, (Queue<Vec<u8>>, u64, usize))) {
    pin(ctl.2).unwrap();
    let mut stamp = 0.0;
    for i in 0..n + WARM_BIG {
        if i == WARM_BIG {
            stamp = ready(&ctl);
        }
        let item = q.get().unwrap();
        assert!(item.len() == size && item[size - 1] == 0x5a, "the queue delivered a wrong item");
        drop(black_box(item));
    }
    done(&ctl, 0.0, stamp);
}

/// A ping-pong's queues (out, back), its timed round trips, untimed warm-up round trips,
/// and the pause before each round trip in µs (0: none).
type PingArgs = (Queue<Vec<u8>>, Queue<Vec<u8>>, u64, u64, u64);

fn echo((ctl, (out, back, n, warm, _)): (Ctl, PingArgs)) {
    let mut stamp = ready(&ctl);
    for i in 0..n + warm {
        if i == warm {
            stamp = self_cpu();
        }
        back.put(out.get().unwrap()).unwrap();
    }
    done(&ctl, 0.0, stamp);
}

/// Reports its own time for the `n` round trips after the warm-up (pauses excluded).
fn pinger((ctl, (out, back, n, warm, pause_us)): (Ctl, PingArgs)) {
    let msg = vec![0x5au8; SIZE];
    let mut stamp = ready(&ctl);
    let mut total = Duration::ZERO;
    for i in 0..n + warm {
        if i == warm {
            (total, stamp) = (Duration::ZERO, self_cpu());
        }
        pause(pause_us);
        let t = Instant::now();
        out.put(msg.clone()).unwrap();
        let m = back.get().unwrap();
        total += t.elapsed();
        assert_eq!(m.len(), SIZE, "the queue delivered a wrong item");
        black_box(m);
    }
    done(&ctl, total.as_secs_f64(), stamp);
}

/// Sleeps `us` µs (nothing for 0): the pause of an idle ping-pong, long enough for both
/// sides to park.
fn pause(us: u64) {
    if us > 0 {
        std::thread::sleep(Duration::from_micros(us));
    }
}

// --------------------------------------------------------------------------------------
// Raw socketpair workers, for the floors

use super::ours::{read_exact, write_all};

/// Writes `n` items of `size` bytes, one `write` each.
fn raw_writer((ctl, (conn, n, size)): (Ctl, (Connection, u64, usize))) {
    let msg = vec![0x5au8; size];
    let stamp = ready(&ctl);
    for _ in 0..n {
        write_all(conn.as_fd(), &msg).unwrap();
    }
    done(&ctl, 0.0, stamp);
}

/// Reads and discards exactly `total` bytes, in big reads.
fn raw_reader((ctl, (conn, total)): (Ctl, (Connection, u64))) {
    let mut buf = vec![0u8; 64 * 1024];
    let stamp = ready(&ctl);
    let mut left = total;
    while left > 0 {
        let want = buf.len().min(left as usize);
        match rustix::io::read(conn.as_fd(), &mut buf[..want]) {
            Ok(0) => panic!("the socket closed early"),
            Ok(n) => left -= n as u64,
            Err(Errno::INTR) => {}
            Err(e) => panic!("read: {e}"),
        }
    }
    done(&ctl, 0.0, stamp);
}

/// A raw ping-pong's socket, timed round trips, warm-up round trips and pause (µs).
type RawPingArgs = (Connection, u64, u64, u64);

fn raw_echo((ctl, (conn, n, warm, _)): (Ctl, RawPingArgs)) {
    let mut buf = [0u8; SIZE];
    let mut stamp = ready(&ctl);
    for i in 0..n + warm {
        if i == warm {
            stamp = self_cpu();
        }
        read_exact(conn.as_fd(), &mut buf).unwrap();
        write_all(conn.as_fd(), &buf).unwrap();
    }
    done(&ctl, 0.0, stamp);
}

fn raw_pinger((ctl, (conn, n, warm, pause_us)): (Ctl, RawPingArgs)) {
    let msg = [0x5au8; SIZE];
    let mut back = [0u8; SIZE];
    let mut stamp = ready(&ctl);
    let mut total = Duration::ZERO;
    for i in 0..n + warm {
        if i == warm {
            (total, stamp) = (Duration::ZERO, self_cpu());
        }
        pause(pause_us);
        let t = Instant::now();
        write_all(conn.as_fd(), &msg).unwrap();
        read_exact(conn.as_fd(), &mut back).unwrap();
        total += t.elapsed();
    }
    done(&ctl, total.as_secs_f64(), stamp);
}

// --------------------------------------------------------------------------------------
// Workloads

/// Items per second of `n` items through `k` producers and `k` consumers (each moving
/// `n / k`).
fn tput<T: Item>(n: u64, k: usize, size: usize, place: Placement) -> Result<Sample, BoxError> {
    let n = n / k as u64 * k as u64;
    let q = Queue::<T>::new(0)?;
    let (pcpus, ccpus) = cpus(place, k);
    let mut team = Team::new()?;
    for cpu in ccpus {
        team.start(consumer::<T>, cpu, (q.clone(), n / k as u64, size))?;
    }
    for cpu in pcpus {
        team.start(producer::<T>, cpu, (q.clone(), n / k as u64, size))?;
    }
    let (secs, _, cpu) = team.run()?;
    Ok(Sample::new(n as f64 / secs, n, secs, Some(cpu)))
}

/// Seconds and CPU seconds of a one producer → one consumer run of `producer` and
/// `consumer` on `args`.
fn one_to_one<A>(
    producer: fn((Ctl, A)),
    consumer: fn((Ctl, A)),
    args: A,
    place: Placement,
) -> Result<(f64, f64), BoxError>
where
    A: Clone + Serialize + DeserializeOwned + Send + 'static,
{
    let mut team = Team::new()?;
    team.start(consumer, place.child, args.clone())?;
    team.start(producer, place.parent, args)?;
    let (secs, _, cpu) = team.run()?;
    Ok((secs, cpu))
}

/// µs per round trip (pauses excluded) of `n` round trips of a 64-byte item out on one
/// queue and back on another, `pause_us` apart.
fn pingpong(n: u64, warm: u64, pause_us: u64, place: Placement) -> Result<Sample, BoxError> {
    let (out, back) = (Queue::new(0)?, Queue::new(0)?);
    let mut team = Team::new()?;
    team.start(echo, place.child, (out.clone(), back.clone(), n, warm, pause_us))?;
    team.start(pinger, place.parent, (out, back, n, warm, pause_us))?;
    let (_, reported, cpu) = team.run()?;
    Ok(Sample::new(reported[1] * 1e6 / n as f64, n, reported[1], Some(cpu)))
}

/// multiproc's side of `op`: `n` items (round trips for ping-pongs).
pub fn ours(op: Op, n: u64, place: Placement) -> Result<Sample, BoxError> {
    match op {
        Op::Tput1p1c64 => tput::<Vec<u8>>(n, 1, SIZE, place),
        Op::Tput2p2c64 => tput::<Vec<u8>>(n, 2, SIZE, place),
        Op::TputTuple => tput::<Tuple>(n, 1, 0, place),
        Op::PingPong => pingpong(n, WARM_ROUND_TRIPS, 0, place),
        Op::PingPongIdle => pingpong(n, IDLE_WARM, super::IDLE_PAUSE_US, place),
        Op::Big(mib) => {
            let size = mib * MIB;
            let args = (Queue::new(0)?, n, size);
            let (secs, cpu) = one_to_one(big_producer, big_consumer, args, place)?;
            Ok(Sample::new((n * size as u64) as f64 / secs / 1e9, n, secs, Some(cpu)))
        }
        Op::GetMany64 => {
            let args = (Queue::new(0)?, n);
            let (secs, cpu) = one_to_one(batch_producer, batch_consumer, args, place)?;
            Ok(Sample::new(n as f64 / secs, n, secs, Some(cpu)))
        }
        Op::SimpleTput64 => {
            let q = SimpleQueue::new()?;
            let (secs, cpu) = one_to_one(simple_producer, simple_consumer, (q, n), place)?;
            Ok(Sample::new(n as f64 / secs, n, secs, Some(cpu)))
        }
    }
}

/// The bytes of one item of a raw-socketpair floor.
fn raw_size(op: Op) -> Result<usize, BoxError> {
    Ok(match op {
        Op::TputTuple => encoded_size(op)?,
        _ => SIZE,
    })
}

/// The bytes of one item's postcard encoding.
fn encoded_size(op: Op) -> Result<usize, BoxError> {
    let mut out = Vec::new();
    match op {
        Op::TputTuple => multiproc::Codec::Postcard.encode_into(&Tuple::make(0), &mut out)?,
        _ => multiproc::Codec::Postcard.encode_into(&vec![0x5au8; SIZE], &mut out)?,
    }
    Ok(out.len())
}

/// The bytes of one item's record in the queue's ring: an 8-byte header (length, kind)
/// and the encoding, padded to 8 bytes.
fn record_size(op: Op) -> Result<usize, BoxError> {
    Ok(8 + encoded_size(op)?.div_ceil(8) * 8)
}

/// Items per second of `n` items of `size` bytes written by `k` writers into one raw
/// socketpair and drained by `k` readers.
fn raw_tput(n: u64, k: usize, size: usize, place: Placement) -> Result<f64, BoxError> {
    let n = n / k as u64 * k as u64;
    let (w, r) = multiproc::pipe(true)?;
    let (pcpus, ccpus) = cpus(place, k);
    let mut team = Team::new()?;
    for cpu in ccpus {
        team.start(raw_reader, cpu, (r.try_clone()?, n / k as u64 * size as u64))?;
    }
    for cpu in pcpus {
        team.start(raw_writer, cpu, (w.try_clone()?, n / k as u64, size))?;
    }
    drop((w, r));
    let (secs, _, _) = team.run()?;
    Ok(n as f64 / secs)
}

/// µs per round trip (pauses excluded) of 64 bytes on a raw socketpair.
fn raw_pingpong(n: u64, warm: u64, pause_us: u64, place: Placement) -> Result<f64, BoxError> {
    let (a, b) = multiproc::pipe(true)?;
    let mut team = Team::new()?;
    team.start(raw_echo, place.child, (b, n, warm, pause_us))?;
    team.start(raw_pinger, place.parent, (a, n, warm, pause_us))?;
    let (_, reported, _) = team.run()?;
    Ok(reported[1] * 1e6 / n as f64)
}

/// What the ring ceiling of a throughput row measures.
const RING: &str = "bare SPSC ring in shared memory between the same CPUs: the same record bytes, \
                    no lock, no encoding";
/// What the socketpair baseline of a throughput row measures.
const SOCKETPAIR: &str =
    "the item's bytes (a tuple: its 13-byte encoding), one write() each, into a \
                          raw socketpair drained in big reads";

/// The floors of `op`, ceiling first: the ceilings move `rows_n` items (the row's own
/// count: they are fast), the baselines `n`.
pub fn floors(op: Op, rows_n: u64, n: u64, place: Placement) -> Result<Vec<Floor>, BoxError> {
    use super::ceilings::{futex_pingpong, ring_tput, spin_pingpong};
    Ok(match op {
        Op::Tput1p1c64 | Op::TputTuple | Op::GetMany64 | Op::SimpleTput64 => vec![
            Floor::ceiling(RING, ring_tput(rows_n, 1, record_size(op)?, place)?),
            Floor::baseline(SOCKETPAIR, raw_tput(n, 1, raw_size(op)?, place)?),
        ],
        Op::Tput2p2c64 => vec![
            Floor::ceiling(
                "two bare SPSC rings in shared memory (one per producer/consumer pair), \
                 the same record bytes, no lock, no encoding",
                ring_tput(rows_n, 2, record_size(op)?, place)?,
            ),
            Floor::baseline(
                "two writers, two readers on one raw socketpair, one write() per item",
                raw_tput(n, 2, raw_size(op)?, place)?,
            ),
        ],
        Op::PingPong => vec![
            Floor::ceiling(
                "spinning hand-off of one cache line between the same two CPUs",
                spin_pingpong(rows_n, place)?,
            ),
            Floor::baseline(
                "raw socketpair round trip of 64 bytes",
                raw_pingpong(n, WARM_ROUND_TRIPS, 0, place)?,
            ),
        ],
        Op::PingPongIdle => vec![
            Floor::ceiling(
                super::FUTEX_SPIN,
                futex_pingpong(n, super::IDLE_PAUSE_US, true, place)?,
            ),
            Floor::baseline(
                super::FUTEX_PARKED,
                futex_pingpong(n, super::IDLE_PAUSE_US, false, place)?,
            ),
            Floor::baseline(
                "raw socketpair round trip of 64 bytes, same pause",
                raw_pingpong(n, IDLE_WARM, super::IDLE_PAUSE_US, place)?,
            ),
        ],
        Op::Big(mib) => vec![Floor::ceiling(
            "in-process memcpy of the same size",
            super::ours::memcpy(n, mib * MIB),
        )],
    })
}

/// CPython's request for `op` (`n`: its own count): its operation name and arguments.
pub fn cpython_request(op: Op, n: u64, place: Placement) -> (&'static str, serde_json::Value) {
    let bytes = |k: usize, queue: &str| {
        let (pcpus, ccpus) = cpus(place, k);
        serde_json::json!({"n": n, "item": "bytes", "size": SIZE, "queue": queue,
            "pcpus": pcpus, "ccpus": ccpus, "gbps": false, "method": "fork"})
    };
    match op {
        // No batch API in CPython: get_many compares with its plain Queue.
        Op::Tput1p1c64 | Op::GetMany64 => ("queue_tput", bytes(1, "Queue")),
        Op::Tput2p2c64 => ("queue_tput", bytes(2, "Queue")),
        Op::SimpleTput64 => ("queue_tput", bytes(1, "SimpleQueue")),
        Op::TputTuple => (
            "queue_tput",
            serde_json::json!({"n": n, "item": "tuple", "size": 0, "queue": "Queue",
                "pcpus": [place.parent], "ccpus": [place.child], "gbps": false, "method": "fork"}),
        ),
        Op::Big(mib) => (
            "queue_tput",
            serde_json::json!({"n": n, "item": "bytes", "size": mib * MIB, "queue": "Queue",
                "pcpus": [place.parent], "ccpus": [place.child], "gbps": true, "method": "fork",
                "warm": WARM_BIG}),
        ),
        Op::PingPong => (
            "queue_pingpong",
            serde_json::json!({"n": n, "warm": WARM_ROUND_TRIPS, "size": SIZE,
                "pcpu": place.parent, "ccpu": place.child, "method": "fork"}),
        ),
        Op::PingPongIdle => (
            "queue_pingpong",
            serde_json::json!({"n": n, "warm": IDLE_WARM, "size": SIZE,
                "pcpu": place.parent, "ccpu": place.child, "method": "fork",
                "pause": super::IDLE_PAUSE_US as f64 * 1e-6}),
        ),
    }
}

/// The queue targets, checked against this run.
pub fn targets(rows: &[Row]) -> Vec<String> {
    let find = |name: &str| super::find_row(rows, name);
    let mut out = Vec::new();
    if let Some(r) = find("queue_tput_1p1c_64B") {
        out.push(format!(
            "[{}] Queue 1 -> 1, 64 B items >= 5M msg/s: {:.2}M msg/s",
            super::mark(r.multiproc >= 5e6),
            r.multiproc / 1e6
        ));
    }
    if let Some(r) = find("queue_tput_2p2c_64B") {
        out.push(format!(
            "[{}] Queue 2 -> 2, 64 B items >= 3M msg/s: {:.2}M msg/s",
            super::mark(r.multiproc >= 3e6),
            r.multiproc / 1e6
        ));
    }
    if let Some(r) = find("queue_pingpong") {
        out.push(format!(
            "[{}] Queue ping-pong <= 2 µs per round trip: {:.2} µs",
            super::mark(r.multiproc <= 2.0),
            r.multiproc
        ));
    }
    if let Some(r) = find("queue_64MiB") {
        out.push(format!(
            "[{}] Queue 64 MiB items >= 3 GB/s: {:.2} GB/s",
            super::mark(r.multiproc >= 3.0),
            r.multiproc
        ));
    }
    out
}
