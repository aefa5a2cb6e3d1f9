//! `multiproc worker`: a worker host for a [`multiproc::distributed::Pool`] on Redis, running
//! this command's own small registry of task functions (`square`, `sleep_ms`, `echo`: for
//! the benchmarks, the example and trying a setup out).
//!
//! A program with task functions of its own does the same in its own binary, with the
//! registry its submitters use (the registries must match: a worker refuses the tasks of a
//! submitter whose registry has another identity):
//!
//! ```text
//! fn registry() -> Registry { Registry::new().task("resize", resize) }
//! // `myprog worker`:
//! Worker::new(&url, "images", registry()).processes(8).run()?;
//! // `myprog submit`:
//! let pool = Pool::connect(&url, "images", registry())?;
//! ```

use std::time::Duration;

use multiproc::distributed::{Registry, Worker};

/// Options of `multiproc worker`.
#[derive(clap::Args)]
pub struct WorkerArgs {
    /// The Redis server: redis://[user:password@]host[:port][/db], or rediss:// for TLS.
    #[arg(long)]
    redis: String,
    /// The pool's name (the submitters use the same).
    #[arg(long, default_value = "multiproc")]
    name: String,
    /// Local worker processes (default: one per CPU).
    #[arg(long)]
    processes: Option<usize>,
    /// Seconds a task may be held before another worker takes it over.
    #[arg(long, default_value_t = 30.0)]
    visibility_timeout: f64,
    /// Deliveries after which a task is dead-lettered.
    #[arg(long, default_value_t = 5)]
    max_deliveries: u64,
}

/// `square(x) = x * x`.
fn square(x: u64) -> u64 {
    x.wrapping_mul(x)
}

/// Sleeps `ms` milliseconds and returns `ms`.
fn sleep_ms(ms: u64) -> u64 {
    std::thread::sleep(Duration::from_millis(ms));
    ms
}

/// Returns its argument.
fn echo(s: String) -> String {
    s
}

/// The task functions `multiproc worker` runs; a submitter uses the same registry.
pub fn registry() -> Registry {
    Registry::new().task("square", square).task("sleep_ms", sleep_ms).task("echo", echo)
}

pub fn run(args: WorkerArgs) -> Result<(), Box<dyn std::error::Error>> {
    let processes = args
        .processes
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    let visibility = Duration::try_from_secs_f64(args.visibility_timeout)
        .map_err(|e| format!("--visibility-timeout: {e}"))?;
    let registry = registry();
    eprintln!(
        "multiproc worker: pool `{}`, {processes} processes, tasks {} (registry {:016x})",
        args.name,
        registry.names().collect::<Vec<_>>().join(", "),
        registry.identity()
    );
    Worker::new(&args.redis, &args.name, registry)
        .processes(processes)
        .visibility_timeout(visibility)
        .max_deliveries(args.max_deliveries)
        .run()?;
    Ok(())
}
