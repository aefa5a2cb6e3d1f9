//! `multiproc tour`: runs every example ported from the seed texts, in order, and prints
//! what each shows. The examples live in `crates/multiproc/examples/` (each runs alone
//! with `cargo run -p multiproc --example NAME`) and are compiled into this binary too.

use std::io::Write;

#[path = "../../multiproc/examples/memory_isolation.rs"]
mod memory_isolation;
#[path = "../../multiproc/examples/pipe_basic.rs"]
mod pipe_basic;
#[path = "../../multiproc/examples/pipe_echo.rs"]
mod pipe_echo;
#[path = "../../multiproc/examples/pipe_eof.rs"]
mod pipe_eof;
#[path = "../../multiproc/examples/pipe_hello.rs"]
mod pipe_hello;
#[path = "../../multiproc/examples/pipe_ping_pong.rs"]
mod pipe_ping_pong;
#[path = "../../multiproc/examples/process_class.rs"]
mod process_class;

#[path = "../../multiproc/examples/queue_basic.rs"]
mod queue_basic;
#[path = "../../multiproc/examples/queue_bounded.rs"]
mod queue_bounded;
#[path = "../../multiproc/examples/queue_collect.rs"]
mod queue_collect;
#[path = "../../multiproc/examples/queue_hello.rs"]
mod queue_hello;
#[path = "../../multiproc/examples/queue_pipeline.rs"]
mod queue_pipeline;
#[path = "../../multiproc/examples/queue_workers.rs"]
mod queue_workers;

#[path = "../../multiproc/examples/shm_basic.rs"]
mod shm_basic;
#[path = "../../multiproc/examples/shm_numpy_chunks.rs"]
mod shm_numpy_chunks;

#[path = "../../multiproc/examples/array_concurrent.rs"]
mod array_concurrent;
#[path = "../../multiproc/examples/array_fill.rs"]
mod array_fill;
#[path = "../../multiproc/examples/array_init.rs"]
mod array_init;
#[path = "../../multiproc/examples/locked_counter_2m.rs"]
mod locked_counter_2m;
#[path = "../../multiproc/examples/value_array_double.rs"]
mod value_array_double;
#[path = "../../multiproc/examples/value_builtin_lock.rs"]
mod value_builtin_lock;
#[path = "../../multiproc/examples/value_pi_array_squares.rs"]
mod value_pi_array_squares;
#[path = "../../multiproc/examples/value_race.rs"]
mod value_race;
#[path = "../../multiproc/examples/value_with_lock.rs"]
mod value_with_lock;

#[path = "../../multiproc/examples/manager_dict.rs"]
mod manager_dict;
#[path = "../../multiproc/examples/manager_list.rs"]
mod manager_list;
#[path = "../../multiproc/examples/manager_namespace.rs"]
mod manager_namespace;
#[path = "../../multiproc/examples/manager_shared_dict.rs"]
mod manager_shared_dict;
#[path = "../../multiproc/examples/manager_value.rs"]
mod manager_value;
#[path = "../../multiproc/examples/manager_work_queue.rs"]
mod manager_work_queue;

#[path = "../../multiproc/examples/pool_map_squares.rs"]
mod pool_map_squares;
#[path = "../../multiproc/examples/pool_squares_tasks.rs"]
mod pool_squares_tasks;

/// One stop of the tour.
struct Stop {
    name: &'static str,
    seed: &'static str,
    snippet: &'static str,
    run: fn() -> multiproc::Result<()>,
}

const STOPS: &[Stop] = &[
    Stop { name: "pipe_hello", seed: "001", snippet: "2. Pipes", run: pipe_hello::main },
    Stop {
        name: "pipe_echo",
        seed: "000",
        snippet: "multiprocessing.Pipe: Bidirectional Channels",
        run: pipe_echo::main,
    },
    Stop {
        name: "memory_isolation",
        seed: "002",
        snippet: "The Challenge: Memory Isolation",
        run: memory_isolation::main,
    },
    Stop { name: "pipe_basic", seed: "002", snippet: "Basic Pipe", run: pipe_basic::main },
    Stop {
        name: "pipe_ping_pong",
        seed: "002",
        snippet: "Bidirectional Pipe",
        run: pipe_ping_pong::main,
    },
    Stop {
        name: "process_class",
        seed: "003",
        snippet: "The Process Class",
        run: process_class::main,
    },
    Stop {
        name: "pipe_eof",
        seed: "003",
        snippet: "Low-Level Communication with Pipe",
        run: pipe_eof::main,
    },
    Stop { name: "queue_hello", seed: "001", snippet: "1. Queues", run: queue_hello::main },
    Stop {
        name: "queue_workers",
        seed: "000",
        snippet: "multiprocessing.Queue: Safe Task Passing",
        run: queue_workers::main,
    },
    Stop {
        name: "queue_pipeline",
        seed: "000",
        snippet: "Real-World Example: Producer-Consumer Pipeline",
        run: queue_pipeline::main,
    },
    Stop { name: "queue_basic", seed: "002", snippet: "Basic Queue", run: queue_basic::main },
    Stop {
        name: "queue_collect",
        seed: "002",
        snippet: "Collecting Results with Queue",
        run: queue_collect::main,
    },
    Stop {
        name: "queue_bounded",
        seed: "003",
        snippet: "Inter-Process Communication with Queue",
        run: queue_bounded::main,
    },
    Stop { name: "shm_basic", seed: "002", snippet: "Basic SharedMemory", run: shm_basic::main },
    Stop {
        name: "shm_numpy_chunks",
        seed: "002",
        snippet: "SharedMemory with NumPy",
        run: shm_numpy_chunks::main,
    },
    Stop {
        name: "value_array_double",
        seed: "000",
        snippet: "Shared Memory: Ctypes Arrays and Values",
        run: value_array_double::main,
    },
    Stop {
        name: "locked_counter_2m",
        seed: "000",
        snippet: "safe_increment with a Lock",
        run: locked_counter_2m::main,
    },
    Stop {
        name: "value_pi_array_squares",
        seed: "001",
        snippet: "3. Shared Memory",
        run: value_pi_array_squares::main,
    },
    Stop {
        name: "value_race",
        seed: "002",
        snippet: "Shared Value: Basic Usage",
        run: value_race::main,
    },
    Stop {
        name: "value_with_lock",
        seed: "002",
        snippet: "Shared Value: With Lock",
        run: value_with_lock::main,
    },
    Stop {
        name: "value_builtin_lock",
        seed: "002",
        snippet: "Shared Value: Value with Built-in Lock",
        run: value_builtin_lock::main,
    },
    Stop {
        name: "array_fill",
        seed: "002",
        snippet: "Shared Array: Basic Array",
        run: array_fill::main,
    },
    Stop {
        name: "array_init",
        seed: "002",
        snippet: "Shared Array: Initialize with Values",
        run: array_init::main,
    },
    Stop {
        name: "array_concurrent",
        seed: "002",
        snippet: "Shared Array: Concurrent Array Access",
        run: array_concurrent::main,
    },
    Stop { name: "manager_dict", seed: "001", snippet: "4. Managers", run: manager_dict::main },
    Stop {
        name: "manager_list",
        seed: "002",
        snippet: "Manager: Shared List",
        run: manager_list::main,
    },
    Stop {
        name: "manager_shared_dict",
        seed: "002",
        snippet: "Manager: Shared Dictionary",
        run: manager_shared_dict::main,
    },
    Stop {
        name: "manager_namespace",
        seed: "002",
        snippet: "Manager: Shared Namespace",
        run: manager_namespace::main,
    },
    Stop {
        name: "manager_value",
        seed: "002",
        snippet: "Manager Performance Warning: manager.Value",
        run: manager_value::main,
    },
    Stop {
        name: "manager_work_queue",
        seed: "000",
        snippet: "Manager: works across network sockets (a distributed work queue)",
        run: manager_work_queue::main,
    },
    Stop {
        name: "pool_squares_tasks",
        seed: "000",
        snippet: "multiprocessing.Queue: Safe Task Passing, with a Pool",
        run: pool_squares_tasks::main,
    },
    Stop {
        name: "pool_map_squares",
        seed: "002",
        snippet: "Collecting Results with Queue, with Pool.map",
        run: pool_map_squares::main,
    },
];

/// Options of `multiproc tour`.
#[derive(clap::Args)]
pub struct TourArgs {
    /// Run only the examples whose name starts with this prefix.
    pub only: Option<String>,
    /// List the examples instead of running them.
    #[arg(long)]
    pub list: bool,
}

pub fn run(args: TourArgs) -> Result<(), Box<dyn std::error::Error>> {
    let selected: Vec<&Stop> = STOPS
        .iter()
        .filter(|s| args.only.as_deref().is_none_or(|p| s.name.starts_with(p)))
        .collect();
    if selected.is_empty() {
        return Err(
            format!("no example matches {:?}; try `multiproc tour --list`", args.only).into()
        );
    }
    for stop in selected {
        if args.list {
            println!("{:<20} seed {} — {}", stop.name, stop.seed, stop.snippet);
            continue;
        }
        println!("=== {} (seed {}: {})", stop.name, stop.seed, stop.snippet);
        std::io::stdout().flush()?;
        (stop.run)().map_err(|e| format!("example {} failed: {e}", stop.name))?;
        std::io::stdout().flush()?;
        println!();
    }
    Ok(())
}
