//! [`Worker`]: runs the tasks of a distributed [`Pool`](super::Pool) in local processes.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::link::{Link, Settings};
use super::pool::{results_prefix, tasks_stream};
use super::tasks::{Registry, ResultMsg, TaskMsg};
use super::JoinableQueue;
use crate::context::StartMethod;
use crate::error::{Error, Result};
use crate::process::Process;

/// The default visibility timeout of tasks: how long a task may run before another
/// worker takes it over.
const DEFAULT_VISIBILITY_TIMEOUT: Duration = Duration::from_secs(30);
/// The default most deliveries of one task.
const DEFAULT_MAX_DELIVERIES: u64 = 5;
/// How long a worker process waits for a task in one round.
const TAKE_WAIT: Duration = Duration::from_secs(5);
/// How often the supervising process looks at its workers, and how long a worker process
/// pauses after the server could not be reached.
const PAUSE: Duration = Duration::from_millis(200);
/// How long a result stream seen to exist is taken to exist still.
const SEEN_FOR: Duration = Duration::from_secs(1);
/// The most result queues a worker process keeps open (one per submitter).
const MAX_REPLY_HANDLES: usize = 64;

/// The registry the worker processes run, set before they are forked.
static REGISTRY: Mutex<Option<Arc<Registry>>> = Mutex::new(None);

/// A worker host: `n` local processes that take tasks of the pool `name` at the Redis
/// server of `url`, run them with the functions of a [`Registry`], and send their results
/// back to each task's submitter. It is what `multiproc worker --redis URL --name NAME
/// --processes N` runs with the CLI's own registry; a program with its own task functions
/// runs the same in its own binary (typically behind a `worker` subcommand), with the
/// registry its submitters use:
///
/// ```no_run
/// use multiproc::distributed::{Registry, Worker};
///
/// fn square(x: u64) -> u64 {
///     x * x
/// }
/// fn registry() -> Registry {
///     Registry::new().task("square", square)
/// }
/// // On each worker machine:
/// Worker::new("redis://broker:6379/0", "work", registry()).processes(4).run()?;
/// # Ok::<(), multiproc::Error>(())
/// ```
///
/// Each process takes one task at a time (a chunk of items), runs it, sends its result
/// and then acknowledges it (a task whose submitter is gone, its result stream deleted, is
/// acknowledged without running). A task held longer than the visibility timeout (its process
/// died, its host was cut off, or it is slow) is taken over by another process; a task
/// delivered more than `max_deliveries` times is dead-lettered (its submitter gets an
/// error for its items). A task that names a function this registry does not have, or
/// that comes from a submitter whose registry has another identity, is refused: its
/// result is an error, and nothing runs. An entry of the task stream that is not a task
/// is dead-lettered and the process goes on.
///
/// The processes are forked from the calling process (they inherit the registry), as
/// daemons: they die with it. One that exits is replaced. Call [`run`](Self::run) from a
/// program that has started no other threads (a worker binary's `main`), as for any
/// [`StartMethod::Fork`] process.
#[derive(Debug)]
pub struct Worker {
    url: String,
    name: String,
    registry: Registry,
    processes: usize,
    visibility_timeout: Duration,
    max_deliveries: u64,
}

/// What a forked worker process is started with (the registry comes through [`REGISTRY`]).
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Job {
    url: String,
    name: String,
    visibility_ms: u64,
    max_deliveries: u64,
}

impl Worker {
    /// A worker host for the pool `name` at `url`, running `registry`'s functions in one
    /// process until [`processes`](Self::processes) says otherwise.
    ///
    /// ```
    /// use multiproc::distributed::{Registry, Worker};
    /// let w = Worker::new("redis://127.0.0.1/", "work", Registry::new()).processes(2);
    /// ```
    pub fn new(url: &str, name: &str, registry: Registry) -> Worker {
        Worker {
            url: url.to_string(),
            name: name.to_string(),
            registry,
            processes: 1,
            visibility_timeout: DEFAULT_VISIBILITY_TIMEOUT,
            max_deliveries: DEFAULT_MAX_DELIVERIES,
        }
    }

    /// How many local processes run tasks (1 by default).
    ///
    /// ```
    /// let w = multiproc::distributed::Worker::new("redis://127.0.0.1/", "w", Default::default())
    ///     .processes(4);
    /// ```
    pub fn processes(mut self, n: usize) -> Worker {
        self.processes = n;
        self
    }

    /// How long a task may be held before another worker takes it over (30 s by default;
    /// longer than the slowest task, or such tasks run more than once). All the workers
    /// of a pool should use the same.
    ///
    /// ```
    /// use std::time::{Duration, Instant};
    /// let w = multiproc::distributed::Worker::new("redis://127.0.0.1/", "w", Default::default())
    ///     .visibility_timeout(Duration::from_secs(120));
    /// ```
    pub fn visibility_timeout(mut self, timeout: Duration) -> Worker {
        self.visibility_timeout = timeout;
        self
    }

    /// After how many deliveries a task is dead-lettered instead of taken again (5 by
    /// default).
    ///
    /// ```
    /// let w = multiproc::distributed::Worker::new("redis://127.0.0.1/", "w", Default::default())
    ///     .max_deliveries(3);
    /// ```
    pub fn max_deliveries(mut self, n: u64) -> Worker {
        self.max_deliveries = n;
        self
    }

    /// Runs the worker processes, replacing any that exits, for as long as this process
    /// lives. Returns only with an error: [`Error::InvalidArgument`] for no processes, a
    /// bad URL or name; the error of starting a process.
    ///
    /// ```no_run
    /// use multiproc::distributed::{Registry, Worker};
    /// Worker::new("redis://127.0.0.1/", "work", Registry::new().task("id", |x: u8| x)).run()?;
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn run(self) -> Result<()> {
        if self.processes == 0 {
            return Err(Error::InvalidArgument("a worker needs at least one process".into()));
        }
        if self.name.is_empty() {
            return Err(Error::InvalidArgument("a pool on Redis needs a name".into()));
        }
        // Checks the URL before anything starts.
        redis::Client::open(self.url.as_str())
            .map_err(|e| Error::InvalidArgument(format!("redis URL: {e}")))?;
        let job = Job {
            url: self.url.clone(),
            name: self.name.clone(),
            visibility_ms: self.visibility_timeout.as_millis().max(1) as u64,
            max_deliveries: self.max_deliveries,
        };
        *REGISTRY.lock().unwrap_or_else(|p| p.into_inner()) = Some(Arc::new(self.registry));
        let start = |i: usize| {
            Process::builder(work, job.clone())
                .name(format!("multiproc-worker-{i}"))
                .daemon(true)
                .start_method(StartMethod::Fork)
                .start()
        };
        let mut children = (0..self.processes).map(start).collect::<Result<Vec<_>>>()?;
        loop {
            for (i, child) in children.iter_mut().enumerate() {
                if !child.is_alive() {
                    let _ = child.join();
                    eprintln!(
                        "multiproc worker: process {} exited ({:?}); starting another",
                        child.pid().unwrap_or(0),
                        child.exitcode()
                    );
                    *child = start(i)?;
                }
            }
            std::thread::sleep(PAUSE);
        }
    }
}

/// The loop of one worker process: take a task, run it, send its result, acknowledge it.
fn work(job: Job) -> Result<()> {
    let registry = REGISTRY
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .clone()
        .ok_or(Error::ProcessState("a worker process without a registry"))?;
    let tasks = JoinableQueue::<TaskMsg>::builder(&job.url, &tasks_stream(&job.name))
        .visibility_timeout(Duration::from_millis(job.visibility_ms))
        .max_deliveries(job.max_deliveries)
        .build()?;
    let who = tasks.consumer().to_string();
    let link = Link::open(&job.url, Settings::default())?;
    let results_prefix = results_prefix(&job.name);
    let mut replies: HashMap<String, JoinableQueue<ResultMsg>> = HashMap::new();
    let mut seen: HashMap<String, Instant> = HashMap::new();
    loop {
        let task = match tasks.get_timeout(TAKE_WAIT) {
            Ok(task) => task,
            // Nothing to do; or an entry that is not a task, dead-lettered by the get.
            Err(Error::Empty | Error::Codec(_)) => continue,
            Err(e) => {
                eprintln!("multiproc worker {who}: {e}");
                std::thread::sleep(PAUSE);
                continue;
            }
        };
        // Results go only to result streams of this pool, whatever a task says.
        if !task.reply.starts_with(&results_prefix) {
            eprintln!(
                "multiproc worker {who}: a task whose result stream `{}` is not one of this \
                 pool's; dropped",
                task.reply
            );
            acknowledge(&tasks, &who)?;
            continue;
        }
        // A submitter that is gone deleted its result stream: its tasks are dropped (a
        // result sent now would make the stream again, for no one). A stream seen lately
        // is not looked at again for a while.
        let fresh = seen.get(&task.reply).is_some_and(|t| t.elapsed() < SEEN_FOR);
        let exists = if fresh {
            Ok(1)
        } else {
            link.run(None, |con| redis::cmd("EXISTS").arg(&task.reply).query::<i64>(con))
        };
        if let Ok(1..) = exists {
            if seen.len() >= MAX_REPLY_HANDLES {
                seen.clear();
            }
            seen.insert(task.reply.clone(), Instant::now());
        }
        if matches!(exists, Ok(0)) {
            acknowledge(&tasks, &who)?;
            continue;
        }
        let outcome = registry.execute(&task, &who);
        if !replies.contains_key(&task.reply) {
            if replies.len() >= MAX_REPLY_HANDLES {
                replies.clear();
            }
            replies.insert(task.reply.clone(), JoinableQueue::connect(&job.url, &task.reply)?);
        }
        let reply = &replies[&task.reply];
        let result = ResultMsg { job: task.job, chunk: task.chunk, outcome };
        match reply.put(result) {
            // Acknowledged only once its result is on its way: a process that dies before
            // leaves the task to be taken over.
            Ok(()) => acknowledge(&tasks, &who)?,
            Err(e) => {
                // Not acknowledged: it comes back after the visibility timeout. The
                // delivery stays this handle's oldest, so it is forgotten here by
                // starting over with a fresh handle.
                eprintln!("multiproc worker {who}: sending a result: {}", e.error());
                return Err(Error::from(e));
            }
        }
    }
}

/// Acknowledges the task this process took. A failure ends the process (its replacement
/// starts with a fresh handle), since this handle would acknowledge this delivery in place
/// of its next one; the task comes back after the visibility timeout.
fn acknowledge(tasks: &JoinableQueue<TaskMsg>, who: &str) -> Result<()> {
    tasks
        .task_done()
        .inspect_err(|e| eprintln!("multiproc worker {who}: acknowledging a task: {e}"))
}
