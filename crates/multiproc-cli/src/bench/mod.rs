//! `multiproc bench`: multiproc against CPython's `multiprocessing`, on this machine, in
//! the same run.
//!
//! Each benchmark runs a few repetitions; every repetition runs multiproc's side, then
//! CPython's, then the floors, so that drift in the machine's speed hits all alike. The
//! table shows medians over the repetitions.
//!
//! A row has up to two floors, each of a kind: a *ceiling*, which no implementation can
//! beat (a bare ring in shared memory, a spinning cache-line hand-off, a futex round trip,
//! memcpy), and a *baseline*, a simpler mechanism (raw system calls on a socketpair, a
//! `std::sync::Mutex`, an exec). Every row also reports the wall time and the CPU time
//! (user + system, every participating process) per operation, so that spinning shows.
//!
//! The two peers of a pipe benchmark are pinned to different CPUs when there are two or
//! more (`--same-cpu`: both on the first CPU; `--no-pin`: left to the scheduler). Start-up
//! benchmarks are never pinned: a child inherits its parent's CPU set.

use std::io::IsTerminal;

use multiproc::StartMethod;
use serde::Serialize;

mod ceilings;
mod cpython;
mod managers;
mod measure;
mod ours;
mod pool;
mod python_pkg;
mod queues;
mod redis;
mod report;
mod shared_state;
mod shm_fill;

use cpython::CPython;
use measure::Sample;
use ours::{Api, BoxError, Placement};
use report::{find_row, mark, print_table};

/// Options of `multiproc bench`.
#[derive(clap::Args)]
pub struct BenchArgs {
    /// Print one JSON object per line instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Run only the benchmarks whose name starts with this prefix.
    #[arg(long)]
    pub only: Option<String>,
    /// Pin both peers of a pipe benchmark to the same (first) CPU.
    #[arg(long, conflicts_with = "no_pin")]
    pub same_cpu: bool,
    /// Do not pin the peers; let the scheduler place them.
    #[arg(long)]
    pub no_pin: bool,
    /// One short repetition of each benchmark (a smoke test; the numbers are noisy).
    #[arg(long)]
    pub quick: bool,
    /// Repetitions per benchmark (default 5, or 1 with --quick); medians are reported.
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=100))]
    pub reps: Option<u32>,
    /// Skip the CPython comparison even when python3 is available.
    #[arg(long)]
    pub no_python: bool,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Better {
    Lower,
    Higher,
}

impl Better {
    fn as_str(self) -> &'static str {
        match self {
            Better::Lower => "lower",
            Better::Higher => "higher",
        }
    }
}

/// What a benchmark runs; counts are for a full run (divided for `--quick`).
#[derive(Clone, Copy)]
enum Work {
    /// Round trips of `size` bytes, `pause_us` apart (0: back to back).
    PingPong {
        n: u64,
        size: usize,
        pause_us: u64,
    },
    Tput {
        n: u64,
        size: usize,
        api: Api,
    },
    SendBytes {
        count: u64,
        size: usize,
    },
    /// Our `method` against CPython's `py_method` (`None`: its default), the parent holding
    /// `ballast_mib` MiB of touched memory.
    StartJoin {
        k: u64,
        py_k: u64,
        method: StartMethod,
        py_method: Option<&'static str>,
        ballast_mib: usize,
    },
    /// A shared-state row: `n` operations per worker (CPython: `py_n`).
    SharedState {
        op: shared_state::Op,
        n: u64,
        py_n: u64,
    },
    /// Filling a `size`-byte shared memory block with f64s, `reps` times.
    ShmFill {
        reps: u64,
        size: usize,
    },
    /// A queue row: `n` items (round trips for ping-pong) for us, `py_n` for CPython,
    /// `floor_n` for the floor.
    Queue {
        op: queues::Op,
        n: u64,
        py_n: u64,
        floor_n: u64,
    },
    /// A manager row: `n` operations for us, `py_n` for CPython.
    Manager {
        op: managers::Op,
        n: u64,
        py_n: u64,
    },
    /// A pool row: `n` tasks (pool starts) for us, `py_n` for CPython.
    Pool {
        op: pool::Op,
        n: u64,
        py_n: u64,
    },
    /// A Redis row: `n` items or tasks for us, `py_n` jobs for RQ (0: no RQ side).
    Redis {
        op: redis::Op,
        n: u64,
        py_n: u64,
    },
}

struct Spec {
    name: &'static str,
    unit: &'static str,
    better: Better,
    work: Work,
}

const MIB: usize = 1024 * 1024;
const WARM_ROUND_TRIPS: u64 = 200;
/// The pause before each round trip of an idle ping-pong row: long enough for both
/// sides to park.
const IDLE_PAUSE_US: u64 = 1000;
/// Untimed round trips of an idle ping-pong row.
const IDLE_WARM: u64 = 20;
/// The ceiling of an idle ping-pong row.
const FUTEX_SPIN: &str =
    "raw futex wake of the parked peer, its answer awaited spinning, same pause (one wake-up)";
/// The futex baseline of an idle ping-pong row.
const FUTEX_PARKED: &str =
    "raw futex wake round trip, both sides parked on the futex, same pause (two wake-ups)";

fn specs() -> Vec<Spec> {
    use Better::*;
    vec![
        Spec {
            name: "pipe_pingpong_64B",
            unit: "µs",
            better: Lower,
            work: Work::PingPong { n: 20_000, size: 64, pause_us: 0 },
        },
        Spec {
            name: "pipe_pingpong_idle",
            unit: "µs",
            better: Lower,
            work: Work::PingPong { n: 1000, size: 64, pause_us: IDLE_PAUSE_US },
        },
        Spec {
            name: "pipe_tput_64B",
            unit: "msg/s",
            better: Higher,
            work: Work::Tput { n: 200_000, size: 64, api: Api::Send },
        },
        Spec {
            name: "pipe_tput_64B_bytes",
            unit: "msg/s",
            better: Higher,
            work: Work::Tput { n: 200_000, size: 64, api: Api::SendBytes },
        },
        Spec {
            name: "pipe_send_bytes_1MiB",
            unit: "GB/s",
            better: Higher,
            work: Work::SendBytes { count: 128, size: MIB },
        },
        Spec {
            name: "pipe_send_bytes_16MiB",
            unit: "GB/s",
            better: Higher,
            work: Work::SendBytes { count: 12, size: 16 * MIB },
        },
        Spec {
            name: "pipe_send_bytes_64MiB",
            unit: "GB/s",
            better: Higher,
            work: Work::SendBytes { count: 4, size: 64 * MIB },
        },
        Spec {
            name: "spawn_join",
            unit: "ms",
            better: Lower,
            work: Work::StartJoin {
                k: 20,
                py_k: 20,
                method: StartMethod::Spawn,
                py_method: None,
                ballast_mib: 0,
            },
        },
        Spec {
            name: "spawn_join_1GiB_parent",
            unit: "ms",
            better: Lower,
            work: Work::StartJoin {
                k: 10,
                py_k: 4,
                method: StartMethod::Spawn,
                py_method: None,
                ballast_mib: 1024,
            },
        },
        Spec {
            name: "spawn_join_py_spawn",
            unit: "ms",
            better: Lower,
            work: Work::StartJoin {
                k: 20,
                py_k: 4,
                method: StartMethod::Spawn,
                py_method: Some("spawn"),
                ballast_mib: 0,
            },
        },
        Spec {
            name: "fork_join",
            unit: "ms",
            better: Lower,
            work: Work::StartJoin {
                k: 20,
                py_k: 20,
                method: StartMethod::Fork,
                py_method: Some("fork"),
                ballast_mib: 0,
            },
        },
        Spec {
            name: "value_incr_locked_2proc",
            unit: "incr/s",
            better: Higher,
            work: Work::SharedState {
                op: shared_state::Op::ValueIncrLocked,
                n: 2_000_000,
                py_n: 200_000,
            },
        },
        Spec {
            name: "lock_uncontended",
            unit: "ns",
            better: Lower,
            work: Work::SharedState {
                op: shared_state::Op::LockUncontended,
                n: 20_000_000,
                py_n: 2_000_000,
            },
        },
        Spec {
            name: "atomic_add_2proc",
            unit: "adds/s",
            better: Higher,
            work: Work::SharedState {
                op: shared_state::Op::AtomicAdd,
                n: 10_000_000,
                py_n: 200_000,
            },
        },
        Spec {
            name: "shm_fill",
            unit: "GB/s",
            better: Higher,
            work: Work::ShmFill { reps: 40, size: 64 * MIB },
        },
        Spec {
            name: "queue_tput_1p1c_64B",
            unit: "msg/s",
            better: Higher,
            work: Work::Queue {
                op: queues::Op::Tput1p1c64,
                n: 250_000,
                py_n: 15_000,
                floor_n: 30_000,
            },
        },
        Spec {
            name: "queue_tput_2p2c_64B",
            unit: "msg/s",
            better: Higher,
            work: Work::Queue {
                op: queues::Op::Tput2p2c64,
                n: 250_000,
                py_n: 15_000,
                floor_n: 30_000,
            },
        },
        Spec {
            name: "queue_tput_1p1c_tuple",
            unit: "msg/s",
            better: Higher,
            work: Work::Queue {
                op: queues::Op::TputTuple,
                n: 250_000,
                py_n: 15_000,
                floor_n: 30_000,
            },
        },
        Spec {
            name: "queue_pingpong",
            unit: "µs",
            better: Lower,
            work: Work::Queue { op: queues::Op::PingPong, n: 20_000, py_n: 2_000, floor_n: 5_000 },
        },
        Spec {
            name: "queue_pingpong_idle",
            unit: "µs",
            better: Lower,
            work: Work::Queue { op: queues::Op::PingPongIdle, n: 1000, py_n: 1000, floor_n: 1000 },
        },
        Spec {
            name: "queue_1MiB",
            unit: "GB/s",
            better: Higher,
            work: Work::Queue { op: queues::Op::Big(1), n: 1000, py_n: 100, floor_n: 500 },
        },
        Spec {
            name: "queue_16MiB",
            unit: "GB/s",
            better: Higher,
            work: Work::Queue { op: queues::Op::Big(16), n: 64, py_n: 8, floor_n: 32 },
        },
        Spec {
            name: "queue_64MiB",
            unit: "GB/s",
            better: Higher,
            work: Work::Queue { op: queues::Op::Big(64), n: 16, py_n: 3, floor_n: 8 },
        },
        Spec {
            name: "queue_get_many_64B",
            unit: "msg/s",
            better: Higher,
            work: Work::Queue {
                op: queues::Op::GetMany64,
                n: 500_000,
                py_n: 15_000,
                floor_n: 30_000,
            },
        },
        Spec {
            name: "simplequeue_tput_1p1c_64B",
            unit: "msg/s",
            better: Higher,
            work: Work::Queue {
                op: queues::Op::SimpleTput64,
                n: 250_000,
                py_n: 15_000,
                floor_n: 30_000,
            },
        },
        Spec {
            name: "manager_dict_op_local",
            unit: "µs",
            better: Lower,
            work: Work::Manager { op: managers::Op::DictOpLocal, n: 20_000, py_n: 5_000 },
        },
        Spec {
            name: "manager_dict_op_tcp",
            unit: "µs",
            better: Lower,
            work: Work::Manager { op: managers::Op::DictOpTcp, n: 20_000, py_n: 5_000 },
        },
        Spec {
            name: "manager_startup",
            unit: "ms",
            better: Lower,
            work: Work::Manager { op: managers::Op::Startup, n: 10, py_n: 5 },
        },
        Spec {
            name: "pool_task_chunk1",
            unit: "µs",
            better: Lower,
            work: Work::Pool { op: pool::Op::TaskChunk1, n: 200_000, py_n: 20_000 },
        },
        Spec {
            name: "pool_task_default_chunk",
            unit: "µs",
            better: Lower,
            work: Work::Pool { op: pool::Op::TaskDefaultChunk, n: 1_000_000, py_n: 1_000_000 },
        },
        Spec {
            name: "pool_startup",
            unit: "ms",
            better: Lower,
            work: Work::Pool { op: pool::Op::Startup, n: 10, py_n: 10 },
        },
        Spec {
            name: "redis_queue_tput_64B",
            unit: "msg/s",
            better: Higher,
            work: Work::Redis { op: redis::Op::QueueTput64, n: 500_000, py_n: 0 },
        },
        Spec {
            name: "redis_pool_task_chunk1",
            unit: "µs",
            better: Lower,
            work: Work::Redis { op: redis::Op::PoolTaskChunk1, n: 20_000, py_n: 1000 },
        },
        Spec {
            name: "redis_pool_task_default_chunk",
            unit: "µs",
            better: Lower,
            work: Work::Redis { op: redis::Op::PoolTaskDefaultChunk, n: 500_000, py_n: 1000 },
        },
    ]
}

/// Scales a count down for `--quick`, keeping at least one.
fn scaled(n: u64, quick: bool) -> u64 {
    if quick {
        (n / 10).max(1)
    } else {
        n
    }
}

/// What a floor is: a limit no implementation can beat, or a simpler mechanism.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
enum FloorKind {
    /// No implementation can beat it.
    Ceiling,
    /// A simpler mechanism than the library's.
    Baseline,
    /// Another library doing the same job (faster-fifo, for the Python package's rows).
    Peer,
}

/// One floor measurement of a row.
#[derive(Clone, Debug, Serialize)]
struct Floor {
    kind: FloorKind,
    value: f64,
    what: &'static str,
    /// CPU nanoseconds per operation, where counted (the ceilings written in this crate).
    cpu_ns_per_op: Option<f64>,
}

impl Floor {
    /// A ceiling measuring `what`: a figure, or a [`Sample`] with its CPU time.
    fn ceiling(what: &'static str, measured: impl Into<Sample>) -> Floor {
        Floor::new(FloorKind::Ceiling, what, measured.into())
    }

    /// A baseline measuring `what`: a figure, or a [`Sample`] with its CPU time.
    fn baseline(what: &'static str, measured: impl Into<Sample>) -> Floor {
        Floor::new(FloorKind::Baseline, what, measured.into())
    }

    /// A floor of `kind` from sample `s` (its figure, and its CPU time if counted).
    fn new(kind: FloorKind, what: &'static str, s: Sample) -> Floor {
        Floor { kind, value: s.value, what, cpu_ns_per_op: s.cpu_per_op().map(|c| c * 1e9) }
    }
}

/// One benchmark's medians.
#[derive(Serialize)]
struct Row {
    bench: &'static str,
    unit: &'static str,
    better: &'static str,
    multiproc: f64,
    cpython: Option<f64>,
    /// The first of `floors`: the ceiling when the row has one.
    floor: Option<f64>,
    floor_kind: Option<FloorKind>,
    /// Every floor (medians), the ceiling first.
    floors: Vec<Floor>,
    /// Wall and CPU (user + system, every participating process) nanoseconds per
    /// operation (round trip, item, start, task…), medians.
    multiproc_wall_ns_per_op: f64,
    multiproc_cpu_ns_per_op: Option<f64>,
    cpython_wall_ns_per_op: Option<f64>,
    cpython_cpu_ns_per_op: Option<f64>,
    /// What was pinned, how CPU time was counted, what each floor is.
    notes: Vec<String>,
}

impl Row {
    /// The median of the row's floor of `kind`, if it has one.
    fn floor_of(&self, kind: FloorKind) -> Option<f64> {
        self.floors.iter().find(|f| f.kind == kind).map(|f| f.value)
    }
}

struct Runner {
    quick: bool,
    pipes: Placement,
    python: Option<CPython>,
    /// The Redis rows' server (started only when one of them runs).
    redis: Option<redis::Broker>,
}

impl Runner {
    fn ours(&self, work: Work) -> Result<Sample, BoxError> {
        let q = self.quick;
        match work {
            Work::PingPong { n, size, pause_us } => {
                let warm = if pause_us > 0 { IDLE_WARM } else { WARM_ROUND_TRIPS };
                ours::pingpong(scaled(n, q), warm, size, pause_us, self.pipes)
            }
            Work::Tput { n, size, api } => ours::tput(scaled(n, q), size, api, self.pipes),
            Work::SendBytes { count, size } => ours::send_bytes(scaled(count, q), size, self.pipes),
            Work::StartJoin { k, method, ballast_mib, .. } => {
                ours::start_join(scaled(k, q), method, ballast_mib)
            }
            Work::SharedState { op, n, .. } => shared_state::ours(op, scaled(n, q), self.pipes),
            Work::ShmFill { reps, size } => shm_fill::ours(scaled(reps, q), size),
            Work::Queue { op, n, .. } => queues::ours(op, scaled(n, q), self.pipes),
            Work::Manager { op, n, .. } => managers::ours(op, scaled(n, q)),
            Work::Pool { op, n, .. } => pool::ours(op, scaled(n, q)),
            Work::Redis { op, n, .. } => redis::ours(op, scaled(n, q), self.broker()?),
        }
    }

    /// The Redis rows' server (they run only when there is one).
    fn broker(&self) -> Result<&redis::Broker, BoxError> {
        self.redis.as_ref().ok_or_else(|| "no redis-server".into())
    }

    /// The floors of `work`, the ceiling first.
    fn floors(&self, work: Work) -> Result<Vec<Floor>, BoxError> {
        let q = self.quick;
        let place = self.pipes;
        Ok(match work {
            Work::PingPong { n, size, pause_us: 0 } => vec![Floor::baseline(
                "plain write/read of the same bytes on the same socketpair",
                ours::raw_pingpong(scaled(n, q), WARM_ROUND_TRIPS, size, 0, place)?,
            )],
            Work::PingPong { n, size, pause_us } => vec![
                Floor::ceiling(
                    FUTEX_SPIN,
                    ceilings::futex_pingpong(scaled(n, q), pause_us, true, place)?,
                ),
                Floor::baseline(
                    FUTEX_PARKED,
                    ceilings::futex_pingpong(scaled(n, q), pause_us, false, place)?,
                ),
                Floor::baseline(
                    "plain write/read of the same bytes on the same socketpair, same pause",
                    ours::raw_pingpong(scaled(n, q), IDLE_WARM, size, pause_us, place)?,
                ),
            ],
            Work::Tput { n, size, .. } => vec![Floor::baseline(
                "one plain write() per message into the same socketpair, drained in big reads",
                ours::raw_tput(scaled(n, q), size, place)?,
            )],
            Work::SendBytes { count, size } => {
                // Enough copies for a stable number even for small sizes.
                let copies = scaled(count, q).max((256 * MIB / size) as u64);
                vec![Floor::ceiling(
                    "in-process memcpy of the same size",
                    ours::memcpy(copies, size),
                )]
            }
            Work::StartJoin { k, method: StartMethod::Spawn, .. } => vec![Floor::baseline(
                "exec of this binary (`multiproc --version`) and wait",
                ours::exec_self(scaled(k, q))?,
            )],
            Work::StartJoin { .. } => Vec::new(),
            Work::SharedState { op, n, .. } => {
                let value = shared_state::floor(op, scaled(n, q), place)?;
                vec![match op {
                    shared_state::Op::ValueIncrLocked => {
                        Floor::baseline("two threads incrementing under a std::sync::Mutex", value)
                    }
                    shared_state::Op::LockUncontended => {
                        Floor::baseline("std::sync::Mutex lock + unlock", value)
                    }
                    shared_state::Op::AtomicAdd => Floor::ceiling(
                        "two threads doing AtomicU64::fetch_add on one cache line",
                        value,
                    ),
                }]
            }
            Work::ShmFill { reps, size } => vec![Floor::ceiling(
                "slice::fill of a private buffer of the same size",
                shm_fill::floor(scaled(reps, q), size),
            )],
            Work::Queue { op, n, floor_n, .. } => {
                queues::floors(op, scaled(n, q), scaled(floor_n, q), place)?
            }
            Work::Manager { op, n, .. } => managers::floors(op, scaled(n, q), place)?,
            Work::Pool { .. } => Vec::new(),
            Work::Redis { op, n, .. } => redis::floors(op, scaled(n, q), self.broker()?)?,
        })
    }

    fn cpython(&mut self, work: Work) -> Option<Sample> {
        let q = self.quick;
        if let Work::Redis { py_n, .. } = work {
            // RQ, in its own python3 per sample, only when CPython is in use.
            self.python.as_ref().filter(|_| py_n > 0)?;
            return redis::rq(scaled(py_n, q), self.broker().ok()?);
        }
        if let Work::Manager { op, py_n, .. } = work {
            // Its own python3 per sample (see managers.rs), only when CPython is in use.
            self.python.as_ref()?;
            return managers::cpython(op, scaled(py_n, q))
                .map_err(|e| eprintln!("\nmultiproc bench: CPython's manager row failed: {e}"))
                .ok();
        }
        let (pcpu, ccpu) = (self.pipes.parent, self.pipes.child);
        let (op, args) = match work {
            Work::PingPong { n, size, pause_us } => (
                "pingpong",
                serde_json::json!({"n": scaled(n, q),
                    "warm": if pause_us > 0 { IDLE_WARM } else { WARM_ROUND_TRIPS },
                    "size": size, "pcpu": pcpu, "ccpu": ccpu, "method": "fork",
                    "pause": pause_us as f64 * 1e-6}),
            ),
            Work::Tput { n, size, api } => (
                "tput",
                serde_json::json!({"n": scaled(n, q), "size": size,
                    "api": match api { Api::Send => "send", Api::SendBytes => "send_bytes" },
                    "pcpu": pcpu, "ccpu": ccpu, "method": "fork"}),
            ),
            Work::SendBytes { count, size } => (
                "send_bytes",
                serde_json::json!({"count": scaled(count, q), "size": size,
                    "pcpu": pcpu, "ccpu": ccpu, "method": "fork"}),
            ),
            Work::StartJoin { py_k, py_method, ballast_mib, .. } => (
                "start_join",
                serde_json::json!({"k": scaled(py_k, q), "method": py_method,
                    "ballast_mib": ballast_mib}),
            ),
            Work::SharedState { op, py_n, .. } => {
                shared_state::cpython_request(op, scaled(py_n, q), self.pipes)
            }
            Work::ShmFill { reps, size } => shm_fill::cpython_request(scaled(reps, q), size),
            Work::Queue { op, py_n, .. } => {
                queues::cpython_request(op, scaled(py_n, q), self.pipes)
            }
            Work::Manager { .. } | Work::Redis { .. } => return None, // answered above
            Work::Pool { op, py_n, .. } => pool::cpython_request(op, scaled(py_n, q)),
        };
        let py = self.python.as_mut()?;
        match py.call(op, args) {
            Ok(v) => Some(v),
            Err(e) => {
                eprintln!("\nmultiproc bench: CPython's {op} failed: {e}");
                if e.contains("python3") {
                    // The interpreter is gone or unusable: stop asking it.
                    self.python = None;
                }
                None
            }
        }
    }

    /// One untimed round of start-up workloads, so that the first sample does not pay for
    /// cold caches (or CPython's forkserver start).
    fn warm_up(&mut self, work: Work) -> Result<(), BoxError> {
        if let Work::StartJoin { method, py_method, .. } = work {
            ours::start_join(1, method, 0)?;
            if let Some(py) = self.python.as_mut() {
                let _ = py.call("start_join", serde_json::json!({"k": 1, "method": py_method}));
            }
        }
        if let Work::Pool { op: op @ pool::Op::Startup, .. } = work {
            pool::ours(op, 1)?;
            if let Some(py) = self.python.as_mut() {
                let (name, args) = pool::cpython_request(op, 1);
                let _ = py.call(name, args);
            }
        }
        Ok(())
    }
}

/// The median of each floor over the repetitions (every repetition measures the same
/// floors, in the same order).
fn median_floors(reps: Vec<Vec<Floor>>) -> Vec<Floor> {
    let Some(first) = reps.first() else { return Vec::new() };
    (0..first.len())
        .map(|i| {
            let of_all = || reps.iter().filter_map(|r| r.get(i));
            Floor {
                value: median(of_all().map(|f| f.value).collect()).unwrap_or(f64::NAN),
                cpu_ns_per_op: median(of_all().filter_map(|f| f.cpu_ns_per_op).collect()),
                ..first[i].clone()
            }
        })
        .collect()
}

/// A row's notes on what was pinned and how its CPU time was counted.
fn notes_of(work: Work, pipes: &str) -> Vec<String> {
    let (pinned, cpu) = match work {
        Work::PingPong { pause_us, .. } if pause_us > 0 => (
            format!("{pipes}; a {pause_us} µs pause before each round trip (so that both sides park)"),
            "CPU: parent + child over the timed round trips, pauses included; time per round trip \
             excludes the pauses",
        ),
        Work::PingPong { .. } | Work::Tput { .. } | Work::SendBytes { .. } => (
            pipes.to_string(),
            "CPU: parent + child, each counting its own over the timed window",
        ),
        Work::SharedState { op: shared_state::Op::LockUncontended, .. } => {
            ("one process, unpinned".into(), "CPU: this process")
        }
        Work::SharedState { .. } => (
            format!("two workers pinned like a pipe's peers ({pipes})"),
            "CPU: both workers (each its own) + the waiting parent",
        ),
        Work::ShmFill { .. } => ("one process, unpinned".into(), "CPU: this process"),
        Work::Queue { op: queues::Op::PingPongIdle, .. } => (
            format!("{pipes}; a {IDLE_PAUSE_US} µs pause before each round trip (so that both sides park)"),
            "CPU: every worker (each its own) + the waiting parent, pauses included; time per \
             round trip excludes the pauses",
        ),
        Work::Queue { .. } => (
            format!("producers as the parent, consumers as the child ({pipes})"),
            "CPU: every worker (each its own) + the waiting parent over the timed window",
        ),
        Work::StartJoin { .. } => (
            "unpinned (a child inherits its parent's CPU set)".into(),
            "CPU: this process + each child, read from /proc once it has exited, before it is reaped \
             (CPython: its reaped children's rusage)",
        ),
        Work::Manager { op: managers::Op::Startup, .. } => (
            "unpinned".into(),
            "CPU: this process + the server (/proc schedstat) until just before its shutdown",
        ),
        Work::Pool { op: pool::Op::Startup, .. } => (
            "unpinned".into(),
            "CPU: this process + the workers (/proc schedstat) until the first task is done",
        ),
        Work::Manager { .. } => (
            "unpinned (its ceiling pinned like a pipe's peers)".into(),
            "CPU: this process + the server process (/proc schedstat) over the timed operations",
        ),
        Work::Pool { .. } => (
            "unpinned".into(),
            "CPU: this process + the workers (/proc schedstat) over the timed map",
        ),
        Work::Redis { .. } => (
            "unpinned".into(),
            "CPU: this process + the workers (/proc), redis-server not counted",
        ),
    };
    vec![format!("pinning: {pinned}"), cpu.to_string()]
}

fn median(mut v: Vec<f64>) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    let m = v.len() / 2;
    Some(if v.len() % 2 == 1 { v[m] } else { (v[m - 1] + v[m]) / 2.0 })
}

/// The CPUs this thread may run on.
fn allowed_cpus() -> Vec<usize> {
    match rustix::thread::sched_getaffinity(None) {
        Ok(set) => (0..rustix::thread::CpuSet::MAX_CPU).filter(|&c| set.is_set(c)).collect(),
        Err(_) => Vec::new(),
    }
}

fn placement(args: &BenchArgs) -> (Placement, String) {
    let cpus = allowed_cpus();
    let none = Placement { parent: None, child: None };
    if args.no_pin {
        return (none, "unpinned (--no-pin)".into());
    }
    match cpus.as_slice() {
        [] => (none, "unpinned (the CPU set is unknown)".into()),
        [first, ..] if args.same_cpu => (
            Placement { parent: Some(*first), child: Some(*first) },
            format!("both peers on CPU {first} (--same-cpu)"),
        ),
        [only] => (
            Placement { parent: Some(*only), child: Some(*only) },
            format!("both peers on CPU {only} (the only one available)"),
        ),
        [a, b, ..] => (
            Placement { parent: Some(*a), child: Some(*b) },
            format!("parent on CPU {a}, child on CPU {b}"),
        ),
    }
}

pub fn run(args: BenchArgs) -> Result<(), Box<dyn std::error::Error>> {
    let mut selected: Vec<Spec> = specs()
        .into_iter()
        .filter(|s| args.only.as_deref().is_none_or(|p| s.name.starts_with(p)))
        .collect();
    let python_rows = !args.no_python && python_pkg::selected(args.only.as_deref());
    if selected.is_empty() && !python_pkg::selected(args.only.as_deref()) {
        let mut names: Vec<&str> = specs().iter().map(|s| s.name).collect();
        names.extend(python_pkg::ROWS.iter().map(|(name, ..)| *name));
        return Err(format!(
            "no benchmark name starts with {:?}; the benchmarks are: {}",
            args.only.as_deref().unwrap_or(""),
            names.join(", ")
        )
        .into());
    }
    let reps = args.reps.unwrap_or(if args.quick { 1 } else { 5 }) as usize;
    let (pipes, where_) = placement(&args);
    let python = if args.no_python {
        None
    } else {
        match CPython::start() {
            Ok(p) => p,
            Err(e) => {
                eprintln!("multiproc bench: CPython comparison unavailable: {e}");
                None
            }
        }
    };
    let mut notes = vec![
        format!("pipe benchmarks: {where_}; start-up benchmarks unpinned"),
        format!("{reps} repetition(s), medians; each repetition runs multiproc, CPython, then the floors"),
    ];
    if selected.iter().any(|s| matches!(s.work, Work::SharedState { .. })) {
        notes.extend(shared_state::NOTES.iter().map(|n| n.to_string()));
    }
    if selected.iter().any(|s| matches!(s.work, Work::ShmFill { .. })) {
        notes.extend(shm_fill::NOTES.iter().map(|n| n.to_string()));
    }
    if selected.iter().any(|s| matches!(s.work, Work::Queue { .. })) {
        notes.extend(queues::NOTES.iter().map(|n| n.to_string()));
    }
    if selected.iter().any(|s| matches!(s.work, Work::Manager { .. })) {
        notes.extend(managers::NOTES.iter().map(|n| n.to_string()));
    }
    if selected.iter().any(|s| matches!(s.work, Work::Pool { .. })) {
        notes.extend(pool::NOTES.iter().map(|n| n.to_string()));
    }
    let mut redis = None;
    if selected.iter().any(|s| matches!(s.work, Work::Redis { .. })) {
        redis = redis::Broker::start()?;
        if redis.is_some() {
            notes.extend(redis::NOTES.iter().map(|n| n.to_string()));
        } else {
            selected.retain(|s| !matches!(s.work, Work::Redis { .. }));
            eprintln!("multiproc bench: no redis-server: the redis_* rows are skipped");
            notes.push("redis_*: skipped (no redis-server: $REDIS_SERVER, PATH, /usr/bin)".into());
        }
    }
    match &python {
        Some(py) => {
            eprintln!(
                "multiproc bench: CPython {} (default start method {:?}); {where_}",
                py.hello.version, py.hello.default_method
            );
            notes.push(format!(
                "CPython {}: pipe benchmarks use its 'fork' start method (start-up is not timed); \
                 spawn_join compares with its default, {:?}; spawn_join_py_spawn with its 'spawn'",
                py.hello.version, py.hello.default_method
            ));
        }
        None => {
            eprintln!("multiproc bench: no python3 (or --no-python): multiproc only; {where_}");
            notes.push("cpython: not measured (no python3 on PATH, or --no-python)".into());
        }
    }
    let mut runner = Runner { quick: args.quick, pipes, python, redis };
    let progress = Progress { tty: std::io::stderr().is_terminal() };
    let mut rows = Vec::new();
    for (i, spec) in selected.iter().enumerate() {
        progress.show(&format!("running {} ({}/{})…", spec.name, i + 1, selected.len()));
        runner.warm_up(spec.work)?;
        let (mut mine, mut theirs, mut floors) = (Vec::new(), Vec::new(), Vec::<Vec<Floor>>::new());
        for rep in 0..reps {
            if reps > 1 {
                progress.update(&format!(
                    "running {} ({}/{}), repetition {}/{reps}…",
                    spec.name,
                    i + 1,
                    selected.len(),
                    rep + 1
                ));
            }
            mine.push(runner.ours(spec.work).map_err(|e| format!("{}: {e}", spec.name))?);
            if let Some(v) = runner.cpython(spec.work) {
                theirs.push(v);
            }
            floors
                .push(runner.floors(spec.work).map_err(|e| format!("{} (floor): {e}", spec.name))?);
        }
        // A comparison from fewer repetitions than ours would not be interleaved.
        if theirs.len() != reps {
            theirs.clear();
        }
        let floors = median_floors(floors);
        let mut row_notes = notes_of(spec.work, &where_);
        row_notes.extend(floors.iter().map(|f| {
            let kind = match f.kind {
                FloorKind::Ceiling => "ceiling",
                FloorKind::Baseline => "baseline",
                FloorKind::Peer => "peer",
            };
            format!("{kind}: {}", f.what)
        }));
        let ns = |v: Vec<f64>| median(v).map(|s| s * 1e9);
        rows.push(Row {
            bench: spec.name,
            unit: spec.unit,
            better: spec.better.as_str(),
            multiproc: median(mine.iter().map(|s| s.value).collect()).unwrap_or(f64::NAN),
            cpython: median(theirs.iter().map(|s| s.value).collect()),
            floor: floors.first().map(|f| f.value),
            floor_kind: floors.first().map(|f| f.kind),
            floors,
            multiproc_wall_ns_per_op: ns(mine.iter().map(Sample::wall_per_op).collect())
                .unwrap_or(f64::NAN),
            multiproc_cpu_ns_per_op: ns(mine.iter().filter_map(Sample::cpu_per_op).collect()),
            cpython_wall_ns_per_op: ns(theirs.iter().map(Sample::wall_per_op).collect()),
            cpython_cpu_ns_per_op: ns(theirs.iter().filter_map(Sample::cpu_per_op).collect()),
            notes: row_notes,
        });
        if args.json {
            progress.finish_line();
            println!("{}", serde_json::to_string(rows.last().unwrap_or_else(|| unreachable!()))?);
        }
    }
    progress.finish_line();
    drop(runner);
    if python_rows {
        progress.show("running the Python package's rows (python3 -m multiproc.bench)…");
        match python_pkg::run(&args) {
            Ok(py) => {
                if args.json {
                    for row in &py.rows {
                        println!("{}", serde_json::to_string(row)?);
                    }
                }
                rows.extend(py.rows);
                notes.extend(py.notes);
            }
            Err(note) => {
                eprintln!("multiproc bench: {note}");
                notes.push(note);
            }
        }
        progress.finish_line();
    }
    if !args.json {
        print_table(&rows, &notes);
    }
    Ok(())
}

/// The progress line on stderr: rewritten in place on a terminal, one line per
/// benchmark otherwise.
struct Progress {
    tty: bool,
}

impl Progress {
    fn show(&self, msg: &str) {
        if self.tty {
            eprint!("\r\x1b[K{msg}");
        } else {
            eprintln!("{msg}");
        }
    }

    fn update(&self, msg: &str) {
        if self.tty {
            eprint!("\r\x1b[K{msg}");
        }
    }

    fn finish_line(&self) {
        if self.tty {
            eprint!("\r\x1b[K");
        }
    }
}
