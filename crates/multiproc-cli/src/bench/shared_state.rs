//! Shared-state rows: a `Value` incremented under its lock by two processes, an
//! uncontended `Lock`, and lock-free `fetch_add` by two processes; their CPython
//! counterparts and floors.
//!
//! The two workers of a two-process row are pinned to the two CPUs of the placement (the
//! parent only waits); each reports ready, waits for a shared start `Event`, works, and
//! reports done, so process start-up is never timed.

use std::hint::black_box;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Barrier, Mutex};
use std::time::Instant;

use multiproc::synchronize::{Event, Lock};
use multiproc::{Connection, Process, Value};

use super::measure::{self_cpu, Sample};
use super::ours::{pin, BoxError, Placement};
use super::Row;

/// Which shared-state workload a row runs.
#[derive(Clone, Copy, Debug)]
pub enum Op {
    /// `value_incr_locked_2proc`: increments/s of `with v.get_lock(): v.value += 1`.
    ValueIncrLocked,
    /// `lock_uncontended`: ns per `acquire` + `release` of a `Lock`, one process.
    LockUncontended,
    /// `atomic_add_2proc`: adds/s of lock-free `fetch_add(1)` on one `Value`.
    AtomicAdd,
}

/// The notes printed under the table when any of these rows ran.
pub const NOTES: &[&str] = &[
    "value_incr_locked_2proc: two processes (pinned like a pipe's peers) doing \
     `with v.get_lock(): v.value += 1` on Value('i'); floor = two threads incrementing \
     under a std::sync::Mutex",
    "lock_uncontended: Lock acquire+release in one process; floor = std::sync::Mutex \
     lock+unlock",
    "atomic_add_2proc: two processes doing Value.fetch_add(1), no lock; floor = two threads \
     doing AtomicU64::fetch_add on one cache line; CPython has no lock-free add, so its \
     column is its locked increment (what a Python user must write for the same result)",
];

// --------------------------------------------------------------------------------------
// Child targets

fn incr_locked_child((v, go, conn, n, cpu): WorkerArgs<Value<i32>>) {
    pin(cpu).unwrap();
    conn.send_bytes(b"r").unwrap();
    go.wait();
    let stamp = self_cpu();
    for _ in 0..n {
        let _g = v.get_lock().acquire().unwrap();
        v.set(v.get().wrapping_add(1));
    }
    conn.send(&(self_cpu() - stamp)).unwrap(); // done, with this worker's CPU seconds
}

fn atomic_add_child((v, go, conn, n, cpu): WorkerArgs<Value<i64>>) {
    pin(cpu).unwrap();
    conn.send_bytes(b"r").unwrap();
    go.wait();
    let stamp = self_cpu();
    for _ in 0..n {
        v.fetch_add(1);
    }
    conn.send(&(self_cpu() - stamp)).unwrap(); // done, with this worker's CPU seconds
}

/// A worker's arguments: the shared object, the start event, its pipe end, its operation
/// count and its CPU.
type WorkerArgs<V> = (V, Event, Connection, u64, Option<usize>);

/// Two started workers, killed and reaped if the run fails half-way.
struct Workers(Vec<Process>);

impl Workers {
    fn finish(mut self) -> Result<(), BoxError> {
        for p in std::mem::take(&mut self.0) {
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
        Ok(())
    }
}

impl Drop for Workers {
    fn drop(&mut self) {
        for p in &self.0 {
            if p.is_alive() {
                let _ = p.kill();
            }
            let _ = p.join();
        }
    }
}

/// Runs `target` in two processes (one per placement CPU) from a common start, and returns
/// the seconds from the start to the last one done, and the CPU seconds of both workers
/// and this process in that time.
fn two_workers<V: Clone + serde::Serialize + serde::de::DeserializeOwned + Send + 'static>(
    target: fn(WorkerArgs<V>),
    v: &V,
    n: u64,
    place: Placement,
) -> Result<(f64, f64), BoxError> {
    let go = Event::new()?;
    let mut conns = Vec::new();
    let mut workers = Workers(Vec::new());
    for cpu in [place.parent, place.child] {
        let (ours, theirs) = multiproc::pipe(true)?;
        let p = Process::new(target, (v.clone(), go.clone(), theirs, n, cpu));
        p.start()?;
        workers.0.push(p);
        conns.push(ours);
    }
    for c in &conns {
        expect(&c.recv_bytes()?, b"r")?;
    }
    let (t0, cpu0) = (Instant::now(), self_cpu());
    go.set();
    let mut cpu = 0.0;
    for c in &conns {
        cpu += c.recv::<f64>()?;
    }
    let elapsed = t0.elapsed().as_secs_f64();
    cpu += self_cpu() - cpu0;
    workers.finish()?;
    Ok((elapsed, cpu))
}

fn expect(got: &[u8], want: &[u8]) -> Result<(), BoxError> {
    if got == want {
        Ok(())
    } else {
        Err(format!("benchmark child sent {got:?} instead of {want:?}").into())
    }
}

// --------------------------------------------------------------------------------------
// Workloads

/// multiproc's side of `op`: `n` operations per worker.
pub fn ours(op: Op, n: u64, place: Placement) -> Result<Sample, BoxError> {
    match op {
        Op::ValueIncrLocked => {
            let v = Value::new(0_i32)?;
            let (secs, cpu) = two_workers(incr_locked_child, &v, n, place)?;
            check(v.get() as u32 as u64, (2 * n) as u32 as u64)?;
            Ok(Sample::new(2.0 * n as f64 / secs, 2 * n, secs, Some(cpu)))
        }
        Op::LockUncontended => {
            let lock = Lock::new()?;
            for _ in 0..n.min(10_000) {
                drop(lock.acquire()?);
            }
            let (t0, cpu0) = (Instant::now(), self_cpu());
            for _ in 0..n {
                drop(black_box(lock.acquire()?));
            }
            let (secs, cpu) = (t0.elapsed().as_secs_f64(), self_cpu() - cpu0);
            Ok(Sample::new(secs * 1e9 / n as f64, n, secs, Some(cpu)))
        }
        Op::AtomicAdd => {
            let v = Value::new(0_i64)?;
            let (secs, cpu) = two_workers(atomic_add_child, &v, n, place)?;
            check(v.get() as u64, 2 * n)?;
            Ok(Sample::new(2.0 * n as f64 / secs, 2 * n, secs, Some(cpu)))
        }
    }
}

fn check(got: u64, want: u64) -> Result<(), BoxError> {
    if got == want {
        Ok(())
    } else {
        Err(format!("lost updates: the counter is {got}, not {want}").into())
    }
}

/// The floor of `op`: the same work between threads of one process, without multiproc.
pub fn floor(op: Op, n: u64, place: Placement) -> Result<f64, BoxError> {
    match op {
        Op::ValueIncrLocked => {
            let counter = Arc::new(Mutex::new(0_i32));
            let secs = two_threads(n, place, {
                let counter = counter.clone();
                move || {
                    let mut c = counter.lock().unwrap_or_else(|e| e.into_inner());
                    *c = c.wrapping_add(1);
                }
            })?;
            let got = *counter.lock().unwrap_or_else(|e| e.into_inner());
            check(got as u32 as u64, (2 * n) as u32 as u64)?;
            Ok(2.0 * n as f64 / secs)
        }
        Op::LockUncontended => {
            let m = Mutex::new(());
            let t0 = Instant::now();
            for _ in 0..n {
                drop(black_box(m.lock().unwrap_or_else(|e| e.into_inner())));
            }
            Ok(t0.elapsed().as_secs_f64() * 1e9 / n as f64)
        }
        Op::AtomicAdd => {
            let counter = Arc::new(AtomicU64::new(0));
            let secs = two_threads(n, place, {
                let counter = counter.clone();
                move || {
                    counter.fetch_add(1, Ordering::SeqCst);
                }
            })?;
            check(counter.load(Ordering::SeqCst), 2 * n)?;
            Ok(2.0 * n as f64 / secs)
        }
    }
}

/// Runs `step` `n` times in each of two threads pinned like the two workers; seconds from
/// the common start to the last one done.
fn two_threads(
    n: u64,
    place: Placement,
    step: impl Fn() + Clone + Send + 'static,
) -> Result<f64, BoxError> {
    let start = Arc::new(Barrier::new(3));
    let threads: Vec<_> = [place.parent, place.child]
        .into_iter()
        .map(|cpu| {
            let (start, step) = (start.clone(), step.clone());
            std::thread::spawn(move || -> Result<Instant, String> {
                pin(cpu).map_err(|e| e.to_string())?;
                start.wait();
                for _ in 0..n {
                    step();
                }
                Ok(Instant::now())
            })
        })
        .collect();
    start.wait();
    let t0 = Instant::now();
    let mut last = t0;
    for t in threads {
        let done = t.join().map_err(|_| "benchmark thread panicked")??;
        last = last.max(done);
    }
    Ok((last - t0).as_secs_f64())
}

/// CPython's request for `op`: its operation name and arguments.
pub fn cpython_request(op: Op, py_n: u64, place: Placement) -> (&'static str, serde_json::Value) {
    let cpus = serde_json::json!([place.parent, place.child]);
    match op {
        // No lock-free add in CPython: AtomicAdd compares with its locked increment.
        Op::ValueIncrLocked | Op::AtomicAdd => {
            ("value_incr_2proc", serde_json::json!({"n": py_n, "cpus": cpus, "method": "fork"}))
        }
        Op::LockUncontended => ("lock_uncontended", serde_json::json!({"n": py_n})),
    }
}

/// The issue's targets for these rows, checked against this run.
pub fn targets(rows: &[Row]) -> Vec<String> {
    let find = |name: &str| super::find_row(rows, name);
    let mut out = Vec::new();
    if let Some(r) = find("value_incr_locked_2proc") {
        out.push(format!(
            "[{}] Value increment under its lock, 2 processes >= 10M/s: {:.2}M/s",
            super::mark(r.multiproc >= 10e6),
            r.multiproc / 1e6
        ));
    }
    if let Some(r) = find("lock_uncontended") {
        out.push(format!(
            "[{}] uncontended Lock acquire+release <= 20 ns: {:.1} ns",
            super::mark(r.multiproc <= 20.0),
            r.multiproc
        ));
    }
    out
}
