//! The ceilings of the queue, manager and ping-pong rows, measured between the same CPUs
//! in the same run, written on the library's public [`SharedMemory`] (its atomic and copy
//! accessors) with no lock and no encoding:
//!
//! - a bare single-producer single-consumer ring (one per producer/consumer pair) moving
//!   records of the queue's own size: the most a cross-process queue can move;
//! - a spinning hand-off of one cache line: the fastest a round trip between two
//!   processes can be;
//! - a futex wake of a parked process, whose answer the waker awaits spinning: the least
//!   a round trip to a sleeping process costs (and, as a baseline, the same with both
//!   sides parking on the futex).
//!
//! Workers run in processes of their own, started untimed, like the queue rows' (they use
//! the same [`Team`]).

use std::hint::spin_loop;
use std::sync::atomic::Ordering::{Acquire, Release};
use std::sync::atomic::{AtomicU32, AtomicU64};
use std::time::{Duration, Instant};

use multiproc::shared_memory::SharedMemory;
use rustix::io::Errno;
use rustix::thread::futex;

use super::measure::{self_cpu, Sample};
use super::ours::{BoxError, Placement};
use super::queues::{cpus, done, ready, Ctl, Team};

/// Index (in `u64`s) of the consumer's position: its own cache line.
const HEAD: usize = 0;
/// Index (in `u64`s) of the producer's position: byte 128, a cache line of its own.
const TAIL: usize = 16;
/// Byte offset of a ring's records.
const DATA: usize = 256;
/// Bytes of a ring's records: the queue's default ring capacity.
const CAPACITY: usize = multiproc::queues::DEFAULT_CAPACITY;
/// Spins before a waiter starts yielding its CPU (a peer may be waiting for it).
const SPINS: u32 = 200;

/// The spins of a waiter in `place`: none when both peers share one CPU (spinning there
/// only delays the peer), else [`SPINS`].
fn spins_for(place: Placement) -> u32 {
    match (place.parent, place.child) {
        (Some(a), Some(b)) if a == b => 0,
        _ => SPINS,
    }
}
/// How long any wait may last before the bench gives up loudly.
const PATIENCE: Duration = Duration::from_secs(60);

/// Waits until `ready()` holds: spins `spins` times, then yields the CPU between checks
/// (two workers may share one); panics after [`PATIENCE`].
fn spin_until(spins: u32, mut ready: impl FnMut() -> bool) {
    for _ in 0..spins {
        if ready() {
            return;
        }
        spin_loop();
    }
    let deadline = Instant::now() + PATIENCE;
    while !ready() {
        std::thread::yield_now();
        assert!(Instant::now() < deadline, "the ceiling's peer did not answer in {PATIENCE:?}");
    }
}

/// A ring worker's arguments: its block, items to move, record bytes, ring slots, spins.
type RingArgs = (SharedMemory, u64, usize, u64, u32);

/// Writes `n` records, each published with one release store of the producer's position.
fn ring_producer((ctl, (shm, n, record, slots, spins)): (Ctl, RingArgs)) {
    let head = shm.atomic::<AtomicU64>(HEAD).unwrap();
    let tail = shm.atomic::<AtomicU64>(TAIL).unwrap();
    let mut rec = vec![0x5au8; record];
    rec[..4].copy_from_slice(&((record - 8) as u32).to_le_bytes());
    rec[4..8].copy_from_slice(&0u32.to_le_bytes());
    // Every page of the ring mapped and written before the clock starts.
    shm.fill_of::<u64>(DATA / 8.., 0).unwrap();
    let stamp = ready(&ctl);
    let mut seen_head = 0;
    for i in 0..n {
        if i - seen_head >= slots {
            spin_until(spins, || {
                seen_head = head.load(Acquire);
                i - seen_head < slots
            });
        }
        shm.write_at(DATA + (i % slots) as usize * record, &rec).unwrap();
        tail.store(i + 1, Release);
    }
    done(&ctl, 0.0, stamp);
}

/// Copies `n` records out, each retired with one release store of the consumer's position.
fn ring_consumer((ctl, (shm, n, record, slots, spins)): (Ctl, RingArgs)) {
    let head = shm.atomic::<AtomicU64>(HEAD).unwrap();
    let tail = shm.atomic::<AtomicU64>(TAIL).unwrap();
    let mut buf = vec![0u8; record];
    let want = ((record - 8) as u32).to_le_bytes();
    // Every page of the ring mapped before the clock starts.
    for page in (DATA..shm.size()).step_by(4096) {
        shm.read_at(page, &mut buf[..1]).unwrap();
    }
    let stamp = ready(&ctl);
    let mut seen_tail = 0;
    for i in 0..n {
        if seen_tail <= i {
            spin_until(spins, || {
                seen_tail = tail.load(Acquire);
                seen_tail > i
            });
        }
        shm.read_at(DATA + (i % slots) as usize * record, &mut buf).unwrap();
        head.store(i + 1, Release);
        assert!(buf[..4] == want, "the ring delivered a wrong record");
    }
    done(&ctl, 0.0, stamp);
}

/// Items per second of `n` records of `record` bytes through `k` bare rings, one producer
/// and one consumer each, on the CPUs the queue rows use; the rings' pages are mapped
/// untimed.
pub fn ring_tput(n: u64, k: usize, record: usize, place: Placement) -> Result<Sample, BoxError> {
    let each = n / k as u64;
    let slots = (CAPACITY / record) as u64;
    let (pcpus, ccpus) = cpus(place, k);
    let spins = spins_for(place);
    let blocks = (0..k)
        .map(|_| SharedMemory::create(DATA + slots as usize * record))
        .collect::<Result<Vec<_>, _>>()?;
    let mut team = Team::new()?;
    for (shm, cpu) in blocks.iter().zip(ccpus) {
        team.start(ring_consumer, cpu, (shm.try_clone()?, each, record, slots, spins))?;
    }
    for (shm, cpu) in blocks.iter().zip(pcpus) {
        team.start(ring_producer, cpu, (shm.try_clone()?, each, record, slots, spins))?;
    }
    let (secs, _, cpu) = team.run()?;
    let n = each * k as u64;
    Ok(Sample::new(n as f64 / secs, n, secs, Some(cpu)))
}

/// Round trips before the clock starts.
const WARM: u64 = 200;

/// Answers `n + WARM` hand-offs of the cache line holding word 0: odd values are the
/// pinger's, even ones its answers.
fn spin_echo((ctl, (shm, n, spins)): (Ctl, (SharedMemory, u64, u32))) {
    let word = shm.atomic::<AtomicU64>(0).unwrap();
    let mut stamp = ready(&ctl);
    for i in 0..n + WARM {
        if i == WARM {
            stamp = self_cpu();
        }
        spin_until(spins, || word.load(Acquire) == 2 * i + 1);
        word.store(2 * i + 2, Release);
    }
    done(&ctl, 0.0, stamp);
}

/// Hands the line over `n + WARM` times and reports the seconds of the last `n`.
fn spin_pinger((ctl, (shm, n, spins)): (Ctl, (SharedMemory, u64, u32))) {
    let word = shm.atomic::<AtomicU64>(0).unwrap();
    let mut stamp = ready(&ctl);
    let mut t0 = Instant::now();
    for i in 0..n + WARM {
        if i == WARM {
            (t0, stamp) = (Instant::now(), self_cpu());
        }
        word.store(2 * i + 1, Release);
        spin_until(spins, || word.load(Acquire) == 2 * i + 2);
    }
    done(&ctl, t0.elapsed().as_secs_f64(), stamp);
}

/// µs per round trip of a spinning hand-off of one cache line between two processes.
pub fn spin_pingpong(n: u64, place: Placement) -> Result<Sample, BoxError> {
    let shm = SharedMemory::create(64)?;
    let mut team = Team::new()?;
    let spins = spins_for(place);
    team.start(spin_echo, place.child, (shm.try_clone()?, n, spins))?;
    team.start(spin_pinger, place.parent, (shm.try_clone()?, n, spins))?;
    let (_, reported, cpu) = team.run()?;
    Ok(Sample::new(reported[1] * 1e6 / n as f64, n, reported[1], Some(cpu)))
}

/// Waits, parked in the kernel (no spinning), until `word` holds `want`.
fn futex_wait_for(word: &AtomicU32, want: u32) {
    let deadline = Instant::now() + PATIENCE;
    let second = rustix::time::Timespec { tv_sec: 1, tv_nsec: 0 };
    loop {
        let seen = word.load(Acquire);
        if seen == want {
            return;
        }
        match futex::wait(word, futex::Flags::empty(), seen, Some(&second)) {
            Ok(()) | Err(Errno::AGAIN | Errno::INTR | Errno::TIMEDOUT) => {}
            Err(e) => panic!("futex wait: {e}"),
        }
        assert!(Instant::now() < deadline, "the ceiling's peer did not answer in {PATIENCE:?}");
    }
}

/// Stores `value` into `word` and wakes its waiter.
fn futex_set(word: &AtomicU32, value: u32) {
    word.store(value, Release);
    futex::wake(word, futex::Flags::empty(), 1).expect("futex wake");
}

/// Round trips of the futex ceiling before the clock starts.
const FUTEX_WARM: u64 = 20;

/// Answers `n + FUTEX_WARM` wake-ups, parking in between.
fn futex_echo((ctl, (shm, n)): (Ctl, (SharedMemory, u64))) {
    let word = shm.atomic::<AtomicU32>(0).unwrap();
    let mut stamp = ready(&ctl);
    for i in 0..(n + FUTEX_WARM) as u32 {
        if i == FUTEX_WARM as u32 {
            stamp = self_cpu();
        }
        futex_wait_for(word, 2 * i + 1);
        futex_set(word, 2 * i + 2);
    }
    done(&ctl, 0.0, stamp);
}

/// Waits for `word` to hold `want`, spinning (without yielding) for up to a second, then
/// parked.
fn spin_then_wait_for(word: &AtomicU32, want: u32) {
    let start = Instant::now();
    loop {
        for _ in 0..SPINS {
            if word.load(Acquire) == want {
                return;
            }
            spin_loop();
        }
        if start.elapsed() > Duration::from_secs(1) {
            return futex_wait_for(word, want);
        }
    }
}

/// Pauses `pause_us`, then wakes the echo and waits until it answers (spinning if
/// `spin`, else parked), `n + FUTEX_WARM` times; reports the summed seconds of the last
/// `n` round trips (pauses excluded).
fn futex_pinger((ctl, (shm, n, pause_us, spin)): (Ctl, (SharedMemory, u64, u64, bool))) {
    let word = shm.atomic::<AtomicU32>(0).unwrap();
    let mut stamp = ready(&ctl);
    let mut total = Duration::ZERO;
    for i in 0..(n + FUTEX_WARM) as u32 {
        if i == FUTEX_WARM as u32 {
            (total, stamp) = (Duration::ZERO, self_cpu());
        }
        std::thread::sleep(Duration::from_micros(pause_us));
        let t = Instant::now();
        futex_set(word, 2 * i + 1);
        if spin {
            spin_then_wait_for(word, 2 * i + 2);
        } else {
            futex_wait_for(word, 2 * i + 2);
        }
        total += t.elapsed();
    }
    done(&ctl, total.as_secs_f64(), stamp);
}

/// µs per round trip through a raw futex in shared memory, `pause_us` apart: the pinger
/// wakes the parked echo and awaits its answer spinning (`spin`, unless both share a CPU)
/// or parked too (the echo always parks, and so does the pinger during the pause).
pub fn futex_pingpong(
    n: u64,
    pause_us: u64,
    spin: bool,
    place: Placement,
) -> Result<Sample, BoxError> {
    let shm = SharedMemory::create(64)?;
    let mut team = Team::new()?;
    team.start(futex_echo, place.child, (shm.try_clone()?, n))?;
    let spin = spin && spins_for(place) > 0;
    team.start(futex_pinger, place.parent, (shm.try_clone()?, n, pause_us, spin))?;
    let (_, reported, cpu) = team.run()?;
    Ok(Sample::new(reported[1] * 1e6 / n as f64, n, reported[1], Some(cpu)))
}
