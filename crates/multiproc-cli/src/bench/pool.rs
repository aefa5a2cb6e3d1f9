//! Pool rows: the cost per task of [`Pool::map`] with `chunksize` 1 and with Python's
//! default chunk size, and the time until a new two-worker pool has run its first task;
//! CPython's `multiprocessing.Pool` doing the same in the same run.
//!
//! The task is `x + 1` on an integer: what is measured is the pool, not the work. Task
//! rows start their pool and run a warm-up map untimed, so that only the map itself is
//! timed. Nothing is pinned: the workers, the pool's thread and the caller share the CPUs
//! as they would in a program.

use std::time::{Duration, Instant};

use multiproc::pool::Pool;

use super::measure::{pids_cpu, self_cpu, Sample};
use super::ours::BoxError;
use super::Row;

/// Which pool workload a row runs.
#[derive(Clone, Copy, Debug)]
pub enum Op {
    /// `pool_task_chunk1`: µs per task of `pool.map(inc, 0..n, chunksize=1)`.
    TaskChunk1,
    /// `pool_task_default_chunk`: µs per task of `pool.map(inc, 0..n)` (default chunks).
    TaskDefaultChunk,
    /// `pool_startup`: ms from `Pool(2)` until its first `apply` has returned.
    Startup,
}

/// Workers of every pool row.
const WORKERS: usize = 2;

/// The notes printed under the table when any of these rows ran.
pub const NOTES: &[&str] = &[
    "pool_task_*: µs per task of `x + 1` through a 2-worker Pool.map (chunksize 1, or Python's default",
    "ceil(n / (4 * workers))), pool started and warmed up untimed, nothing pinned; CPython: Pool(2).map",
    "of the same function, its default start method. pool_startup: ms from creating a 2-worker pool to",
    "its first apply() returning (teardown untimed); multiproc spawns (re-executes this binary), CPython",
    "uses its default start method. No floors: the pool is the thing measured.",
];

fn inc(x: u64) -> u64 {
    x.wrapping_add(1)
}

/// Our side of a row: `n` tasks (pool starts for [`Op::Startup`]).
pub fn ours(op: Op, n: u64) -> Result<Sample, BoxError> {
    match op {
        Op::TaskChunk1 => tasks(n, Some(1)),
        Op::TaskDefaultChunk => tasks(n, None),
        Op::Startup => startup(n),
    }
}

/// µs per task; CPU of this process and of the workers (`/proc`) meanwhile.
fn tasks(n: u64, chunksize: Option<usize>) -> Result<Sample, BoxError> {
    let pool = Pool::new(WORKERS)?;
    map_inc(&pool, 0..1000u64, chunksize)?;
    let workers = pool.pids();
    let (t0, cpu0, workers0) = (Instant::now(), self_cpu(), pids_cpu(&workers));
    let out = map_inc(&pool, 0..n, chunksize)?;
    let secs = t0.elapsed().as_secs_f64();
    let cpu = workers0.zip(pids_cpu(&workers)).map(|(a, b)| b - a + self_cpu() - cpu0);
    if out.len() as u64 != n || out.last().copied() != n.checked_sub(1).map(inc) {
        return Err(format!("pool.map gave {} wrong results", out.len()).into());
    }
    pool.close();
    pool.join_timeout(Duration::from_secs(60))?;
    Ok(Sample::new(secs * 1e6 / n as f64, n, secs, cpu))
}

/// `pool.map(inc, items)`, in chunks of `chunksize` if given (Python's rule otherwise).
fn map_inc(
    pool: &Pool,
    items: std::ops::Range<u64>,
    chunksize: Option<usize>,
) -> multiproc::Result<Vec<u64>> {
    match chunksize {
        Some(n) => pool.chunksize(n).map(inc, items),
        None => pool.map(inc, items),
    }
}

/// ms per pool start; CPU of this process over the timed part and of the workers (`/proc`)
/// from their start until the first task is done (teardown untimed and uncounted).
fn startup(k: u64) -> Result<Sample, BoxError> {
    let mut total = Duration::ZERO;
    let mut cpu = Some(0.0);
    for _ in 0..k {
        let (t0, cpu0) = (Instant::now(), self_cpu());
        let pool = Pool::new(WORKERS)?;
        let v = pool.apply(inc, 41)?;
        total += t0.elapsed();
        let mine = self_cpu() - cpu0;
        cpu = cpu.zip(pids_cpu(&pool.pids())).map(|(sum, workers)| sum + mine + workers);
        if v != 42 {
            return Err(format!("apply gave {v}, not 42").into());
        }
        drop(pool); // terminates and reaps the workers, untimed
    }
    let secs = total.as_secs_f64();
    Ok(Sample::new(secs * 1e3 / k as f64, k, secs, cpu))
}

/// The request for `cpython_side.py`: `pool_tasks` or `pool_startup`.
pub fn cpython_request(op: Op, n: u64) -> (&'static str, serde_json::Value) {
    match op {
        Op::TaskChunk1 => {
            ("pool_tasks", serde_json::json!({"n": n, "chunksize": 1, "processes": WORKERS}))
        }
        Op::TaskDefaultChunk => {
            ("pool_tasks", serde_json::json!({"n": n, "chunksize": null, "processes": WORKERS}))
        }
        Op::Startup => ("pool_startup", serde_json::json!({"k": n, "processes": WORKERS})),
    }
}

/// The targets of these rows, checked against this run.
pub fn targets(rows: &[Row]) -> Vec<String> {
    let mut out = Vec::new();
    for (name, limit, what) in [
        ("pool_task_chunk1", 2.0, "pool task, chunksize 1 <= 2 µs"),
        ("pool_task_default_chunk", 0.05, "pool task, default chunksize <= 0.05 µs"),
        ("pool_startup", 5.0, "2-worker pool ready (first task done) <= 5 ms"),
    ] {
        if let Some(r) = rows.iter().find(|r| r.bench == name) {
            let unit = if name == "pool_startup" { "ms" } else { "µs" };
            out.push(format!(
                "[{}] {what}: {:.3} {unit}",
                super::mark(r.multiproc <= limit),
                r.multiproc
            ));
        }
    }
    out
}
