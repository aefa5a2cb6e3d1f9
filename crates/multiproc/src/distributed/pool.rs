//! [`Pool`]: the local pool's mapping methods, with the tasks run by
//! [`Worker`](super::Worker)s on any machine that reaches the same Redis server.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::marker::PhantomData;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde::de::DeserializeOwned;
use serde::Serialize;

use super::link::{Link, Settings};
use super::scripts;
use super::tasks::{Outcome, Registry, ResultMsg, TaskMsg, TaskName};
use super::JoinableQueue;
use crate::codec::Codec;
use crate::error::{Error, Result};
use crate::sync_util::{lock, wait_deadline};

/// `map` without a chunk size cuts its input into about this many chunks…
const DEFAULT_CHUNKS: usize = 64;
/// …of at most this many items each.
const MAX_DEFAULT_CHUNKSIZE: usize = 1024;
/// The most chunks an `imap` has in flight (submitted and not yet consumed).
const IMAP_WINDOW: u32 = 64;
/// How long the collector waits for results in one round (and so how late it sees a stop).
const COLLECT_WAIT: Duration = Duration::from_millis(200);
/// How often the collector looks for dead-lettered tasks of its jobs.
const DEAD_LOOK_PERIOD: Duration = Duration::from_millis(250);
/// The most results the collector takes at once.
const RESULT_BATCH: usize = 256;
/// When a result taken by the collector and not acknowledged (its reply lost in a broken
/// connection) is taken again; results are never dead-lettered.
const RESULT_VISIBILITY: Duration = Duration::from_secs(2);
/// How long dropping a pool waits for the server to delete its result stream.
const DROP_TIMEOUT: Duration = Duration::from_millis(500);

/// The stream of a pool's tasks.
pub(super) fn tasks_stream(name: &str) -> String {
    format!("{name}:tasks")
}

/// The start of the name of every result stream of a pool's submitters.
pub(super) fn results_prefix(name: &str) -> String {
    format!("{name}:results:")
}

/// One job's chunks as their results arrive.
#[derive(Default)]
struct Job {
    /// Each submitted chunk's item count.
    sizes: Vec<usize>,
    /// Whether each chunk's result arrived (a later copy of it is a duplicate).
    filled: Vec<bool>,
    /// Results arrived and not yet taken, by chunk.
    ready: BTreeMap<u32, Outcome>,
    /// Chunks in the order their results arrived (kept for `imap_unordered` only).
    arrived: VecDeque<u32>,
    /// Whether `arrived` is kept.
    unordered: bool,
    /// Submitted chunks whose result has not arrived.
    unfilled: usize,
}

/// The jobs of a pool, shared by its handle, its results and its collector thread.
#[derive(Default)]
struct Shared {
    jobs: Mutex<HashMap<u64, Job>>,
    cond: Condvar,
}

impl Shared {
    /// Records a result: the first copy of each chunk's result counts, later ones (a task
    /// run twice) and those of forgotten jobs are dropped.
    fn deliver(&self, msg: ResultMsg) {
        let mut jobs = lock(&self.jobs);
        let Some(job) = jobs.get_mut(&msg.job) else { return };
        let i = msg.chunk as usize;
        if i >= job.filled.len() || job.filled[i] {
            return;
        }
        let outcome = match msg.outcome {
            Ok(items) if items.len() != job.sizes[i] => Err(format!(
                "a worker returned {} results for a chunk of {} items",
                items.len(),
                job.sizes[i]
            )),
            other => other,
        };
        job.filled[i] = true;
        job.unfilled -= 1;
        job.ready.insert(msg.chunk, outcome);
        if job.unordered {
            job.arrived.push_back(msg.chunk);
        }
        self.cond.notify_all();
    }

    /// Whether any job waits for results.
    fn waiting(&self) -> bool {
        lock(&self.jobs).values().any(|j| j.unfilled > 0)
    }

    /// Waits until `take` finds what it looks for in the jobs (`None` when `deadline`
    /// passes first).
    fn wait<T>(
        &self,
        deadline: Option<Instant>,
        mut take: impl FnMut(&mut HashMap<u64, Job>) -> Option<T>,
    ) -> Option<T> {
        let mut jobs = lock(&self.jobs);
        loop {
            if let Some(found) = take(&mut jobs) {
                return Some(found);
            }
            jobs = match wait_deadline(&self.cond, jobs, deadline) {
                Ok(jobs) => jobs,
                Err(mut jobs) => return take(&mut jobs),
            };
        }
    }
}

/// What the handle, its results and iterators share.
struct Inner {
    registry: Arc<Registry>,
    tasks: JoinableQueue<TaskMsg>,
    /// This submitter's result queue.
    reply: String,
    shared: Arc<Shared>,
    next_job: AtomicU64,
}

impl Inner {
    /// A new job with no chunks yet.
    fn start_job(&self, unordered: bool) -> u64 {
        let job = self.next_job.fetch_add(1, Ordering::Relaxed);
        lock(&self.shared.jobs).insert(job, Job { unordered, ..Job::default() });
        job
    }

    /// Forgets a job: its later results are dropped.
    fn forget(&self, job: u64) {
        lock(&self.shared.jobs).remove(&job);
    }

    /// Submits `chunks` of `job` as its chunks `first..`.
    fn submit<A: Serialize>(
        &self,
        job: u64,
        function: &str,
        first: u32,
        chunks: Vec<Vec<A>>,
    ) -> Result<()> {
        let identity = self.registry.identity();
        let mut msgs = Vec::with_capacity(chunks.len());
        let mut sizes = Vec::with_capacity(chunks.len());
        for (i, chunk) in chunks.iter().enumerate() {
            let mut args = Vec::with_capacity(chunk.len());
            for item in chunk {
                let mut bytes = Vec::new();
                Codec::Postcard.encode_into(item, &mut bytes)?;
                args.push(bytes);
            }
            sizes.push(chunk.len());
            msgs.push(TaskMsg {
                reply: self.reply.clone(),
                job,
                chunk: first + i as u32,
                function: function.to_string(),
                identity,
                args,
            });
        }
        {
            let mut jobs = lock(&self.shared.jobs);
            let state = jobs.entry(job).or_default();
            state.sizes.extend(&sizes);
            state.filled.resize(state.sizes.len(), false);
            state.unfilled += sizes.len();
        }
        let Err(failed) = self.tasks.put_many(msgs) else { return Ok(()) };
        // The chunks not queued (or perhaps not: a reply lost) get the error as their
        // result, so that nobody waits for them; should one run after all, its result
        // comes second and is dropped.
        let (unsent, error) = failed.into_parts();
        for msg in unsent {
            self.shared.deliver(ResultMsg {
                job,
                chunk: msg.chunk,
                outcome: Err(format!("task `{function}` was not submitted: {error}")),
            });
        }
        Err(error)
    }
}

/// Python's `multiprocessing.Pool`, with its workers on other machines: tasks go through
/// Redis to every [`Worker`](super::Worker) serving the same name, and results come back
/// in order. The methods are the local [`pool::Pool`](crate::pool::Pool)'s, with a task
/// function named in a [`Registry`] instead of passed as a `fn`: by a
/// [`Task`](super::Task) constant (which carries its types) or by its name as a `&str`
/// (then name the types: `pool.map::<u64, u64>("square", items)`).
///
/// | local | on Redis |
/// |---|---|
/// | `pool.map(square, items)` | `pool.map("square", items)` |
/// | `pool.chunksize(k).imap(square, items)` | `pool.chunksize(k).imap("square", items)` |
/// | `pool.apply_async(square, 3)?.get()` | `pool.apply_async("square", 3)?.get()` |
///
/// # Guarantees
/// A task (a chunk of items) is **at-least-once**: a worker acknowledges it after its result
/// is sent; a task held by a worker that dies, or that takes longer than the workers'
/// visibility timeout, is run again by another worker. Each result carries its task's id
/// (job and chunk), and the pool keeps the first result of each task only: **every
/// result is seen exactly once** by the caller, in input order (`imap_unordered`: in the
/// order they arrive). A task function may therefore run twice for one item, and must
/// tolerate it (be idempotent, or have effects that may repeat). A task delivered more
/// than the workers' `max_deliveries` times moves to the dead-letter stream
/// `NAME:tasks:dead`, and its items' results are an [`Error::Task`] saying so. A worker
/// that does not know the function, or whose registry's identity differs from this pool's,
/// refuses the task without running it: [`Error::Task`] in those items' results.
///
/// Results travel on a stream of this pool's own (`NAME:results:<random id>`), deleted when
/// the pool is dropped.
///
/// ```no_run
/// use multiproc::distributed::{Pool, Registry, Task};
///
/// fn square(x: u64) -> u64 {
///     x * x
/// }
/// const SQUARE: Task<u64, u64> = Task::new("square");
/// let registry = Registry::new().register(SQUARE, square);
/// let pool = Pool::connect("redis://127.0.0.1:6379/0", "work", registry)?;
/// assert_eq!(pool.map(SQUARE, 0..5)?, [0, 1, 4, 9, 16]);
/// // A plain name works too, with the types named:
/// assert_eq!(pool.map::<u64, u64>("square", [3])?, [9]);
/// # Ok::<(), multiproc::Error>(())
/// ```
pub struct Pool {
    /// The mapping methods, without a chunk size (the pool derefs to it).
    mapper: Mapper,
    stop: Arc<AtomicBool>,
    collector: Option<JoinHandle<()>>,
    /// For deleting the result stream on drop.
    link: Link,
}

impl std::fmt::Debug for Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pool")
            .field("tasks", &self.mapper.inner.tasks.name())
            .field("reply", &self.mapper.inner.reply)
            .finish_non_exhaustive()
    }
}

impl Pool {
    /// A pool submitting to the workers of `name` at the Redis server of `url`, with the
    /// task functions of `registry` (the same as the workers'). It reaches the server once
    /// now: [`Error::Io`] when it cannot, [`Error::InvalidArgument`] for a malformed URL or
    /// an empty name.
    ///
    /// ```no_run
    /// use multiproc::distributed::{Pool, Registry};
    /// let pool = Pool::connect("redis://127.0.0.1/", "work", Registry::new().task("id", |x: u8| x))?;
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn connect(url: &str, name: &str, registry: Registry) -> Result<Pool> {
        if name.is_empty() {
            return Err(Error::InvalidArgument("a pool on Redis needs a name".into()));
        }
        let tasks = JoinableQueue::<TaskMsg>::connect(url, &tasks_stream(name))?;
        let reply = format!("{}{}", results_prefix(name), random_id());
        let results = JoinableQueue::<ResultMsg>::builder(url, &reply)
            .visibility_timeout(RESULT_VISIBILITY)
            .max_deliveries(u64::from(u32::MAX))
            .build()?;
        // Makes the result stream (workers send results only to a stream that exists),
        // and reaches the server once.
        match results.try_get() {
            Err(Error::Empty) => {}
            Err(e) => return Err(e),
            Ok(_) => return Err(Error::Protocol(format!("a result in the new stream {reply}"))),
        }
        let link = Link::open(url, Settings::default())?;
        let dead = DeadWatch::start(link.fresh(), tasks.dead_letter_name(), &reply)?;
        let inner = Arc::new(Inner {
            registry: Arc::new(registry),
            tasks,
            reply,
            shared: Arc::new(Shared::default()),
            next_job: AtomicU64::new(0),
        });
        let stop = Arc::new(AtomicBool::new(false));
        let collector = {
            let (shared, stop) = (inner.shared.clone(), stop.clone());
            std::thread::Builder::new()
                .name("multiproc-redis-results".into())
                .spawn(move || collect(results, dead, &shared, &stop))?
        };
        let mapper = Mapper { inner, chunksize: None };
        Ok(Pool { mapper, stop, collector: Some(collector), link })
    }
}

impl std::ops::Deref for Pool {
    type Target = Mapper;

    /// The mapping methods ([`Mapper`]): `pool.map(…)`, `pool.chunksize(k).map(…)`, ….
    fn deref(&self) -> &Mapper {
        &self.mapper
    }
}

/// The methods that submit tasks, which a [`Pool`] has through `Deref` (`pool.map(…)`)
/// and [`Mapper::chunksize`]`(k)` has with a chunk size (`pool.chunksize(k).map(…)`).
///
/// ```no_run
/// use multiproc::distributed::{Pool, Registry};
/// let pool = Pool::connect("redis://127.0.0.1/", "work", Registry::new().task("inc", |x: u32| x + 1))?;
/// assert_eq!(pool.map::<u32, u32>("inc", [1, 2])?, [2, 3]);
/// assert_eq!(pool.chunksize(1).map::<u32, u32>("inc", [1, 2])?, [2, 3]);
/// # Ok::<(), multiproc::Error>(())
/// ```
#[derive(Clone)]
pub struct Mapper {
    inner: Arc<Inner>,
    /// The chunk size of every mapping method (`None`: each method's default).
    chunksize: Option<usize>,
}

impl std::fmt::Debug for Mapper {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mapper").field("chunksize", &self.chunksize).finish_non_exhaustive()
    }
}

impl Mapper {
    /// The registry whose functions this pool's tasks name.
    ///
    /// ```no_run
    /// use multiproc::distributed::{Pool, Registry};
    /// let pool = Pool::connect("redis://127.0.0.1/", "work", Registry::new().task("id", |x: u8| x))?;
    /// assert!(pool.registry().contains("id"));
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn registry(&self) -> &Registry {
        &self.inner.registry
    }

    /// Runs `function(args)` on a worker and waits for its result (Python's `apply`).
    ///
    /// ```no_run
    /// use multiproc::distributed::{Pool, Registry};
    /// let pool = Pool::connect("redis://127.0.0.1/", "work", Registry::new().task("inc", |x: u8| x + 1))?;
    /// assert_eq!(pool.apply::<u8, u8>("inc", 1)?, 2);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn apply<A, R>(&self, function: impl TaskName<A, R>, args: A) -> Result<R>
    where
        A: Serialize + DeserializeOwned + 'static,
        R: Serialize + DeserializeOwned + 'static,
    {
        self.apply_async(function, args)?.get()
    }

    /// Runs `function(args)` on a worker; the value arrives in the returned
    /// [`AsyncResult`] (Python's `apply_async`). [`Error::InvalidArgument`] at once when
    /// this pool's registry has no `function` taking `A` and returning `R`.
    ///
    /// ```no_run
    /// use std::time::Duration;
    /// use multiproc::distributed::{Pool, Registry};
    /// let pool = Pool::connect("redis://127.0.0.1/", "work", Registry::new().task("inc", |x: u8| x + 1))?;
    /// let r = pool.apply_async::<u8, u8>("inc", 41)?;
    /// assert_eq!(r.get_timeout(Duration::from_secs(30))?, 42);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn apply_async<A, R>(
        &self,
        function: impl TaskName<A, R>,
        args: A,
    ) -> Result<AsyncResult<R>>
    where
        A: Serialize + DeserializeOwned + 'static,
        R: Serialize + DeserializeOwned + 'static,
    {
        self.inner.registry.check::<A, R>(function.task_name())?;
        self.submit_all(function.task_name(), vec![vec![args]], assemble_one::<R>)
    }

    /// Runs `function` on every item on the workers and returns the results in input
    /// order (Python's `map`); the first item's error, in input order, if any failed.
    /// Without a chunk size, the input is cut into about 64 chunks (of at most 1024
    /// items); choose one with [`chunksize`](Self::chunksize).
    ///
    /// ```no_run
    /// use multiproc::distributed::{Pool, Registry};
    /// let pool = Pool::connect("redis://127.0.0.1/", "work", Registry::new().task("inc", |x: u8| x + 1))?;
    /// assert_eq!(pool.map::<u8, u8>("inc", [1, 2])?, [2, 3]);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn map<A, R>(
        &self,
        function: impl TaskName<A, R>,
        iterable: impl IntoIterator<Item = A>,
    ) -> Result<Vec<R>>
    where
        A: Serialize + DeserializeOwned + 'static,
        R: Serialize + DeserializeOwned + 'static,
    {
        self.map_async(function, iterable)?.get()
    }

    /// [`map`](Self::map) whose results arrive in the returned [`AsyncResult`] (Python's
    /// `map_async`).
    ///
    /// ```no_run
    /// use multiproc::distributed::{Pool, Registry};
    /// let pool = Pool::connect("redis://127.0.0.1/", "work", Registry::new().task("inc", |x: u8| x + 1))?;
    /// let r = pool.map_async::<u8, u8>("inc", [1, 2])?;
    /// assert_eq!(r.get()?, [2, 3]);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn map_async<A, R>(
        &self,
        function: impl TaskName<A, R>,
        iterable: impl IntoIterator<Item = A>,
    ) -> Result<AsyncResult<Vec<R>>>
    where
        A: Serialize + DeserializeOwned + 'static,
        R: Serialize + DeserializeOwned + 'static,
    {
        self.map_chunked(function.task_name(), iterable, self.chunksize)
    }

    /// Python's `starmap`: the items are argument tuples and the function takes a tuple.
    /// In Rust this is [`map`](Self::map) with tuple items; the name is kept for Python
    /// users.
    ///
    /// ```no_run
    /// use multiproc::distributed::{Pool, Registry};
    /// let registry = Registry::new().task("pow", |(b, e): (u64, u32)| b.pow(e));
    /// let pool = Pool::connect("redis://127.0.0.1/", "work", registry)?;
    /// assert_eq!(pool.starmap::<(u64, u32), u64>("pow", [(2, 3), (3, 2)])?, [8, 9]);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn starmap<A, R>(
        &self,
        function: impl TaskName<A, R>,
        iterable: impl IntoIterator<Item = A>,
    ) -> Result<Vec<R>>
    where
        A: Serialize + DeserializeOwned + 'static,
        R: Serialize + DeserializeOwned + 'static,
    {
        self.map(function, iterable)
    }

    /// Python's `starmap_async`: [`map_async`](Self::map_async) with tuple items.
    ///
    /// ```no_run
    /// use multiproc::distributed::{Pool, Registry};
    /// let registry = Registry::new().task("mul", |(a, b): (i32, i32)| a * b);
    /// let pool = Pool::connect("redis://127.0.0.1/", "work", registry)?;
    /// assert_eq!(pool.starmap_async::<_, i32>("mul", [(2, 5), (3, 3)])?.get()?, [10, 9]);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn starmap_async<A, R>(
        &self,
        function: impl TaskName<A, R>,
        iterable: impl IntoIterator<Item = A>,
    ) -> Result<AsyncResult<Vec<R>>>
    where
        A: Serialize + DeserializeOwned + 'static,
        R: Serialize + DeserializeOwned + 'static,
    {
        self.map_async(function, iterable)
    }

    /// A lazy [`map`](Self::map): an iterator of each item's result, in input order
    /// (Python's `imap`). Items travel one per task unless a chunk size is chosen with
    /// [`chunksize`](Self::chunksize); at most 64 tasks are in flight, more are submitted
    /// as results are consumed, so the input may be endless.
    ///
    /// ```no_run
    /// use multiproc::distributed::{Pool, Registry};
    /// let pool = Pool::connect("redis://127.0.0.1/", "work", Registry::new().task("sq", |x: u64| x * x))?;
    /// let first: Vec<u64> = pool.imap("sq", 0u64..)?.take(3).collect::<Result<_, _>>()?;
    /// assert_eq!(first, [0, 1, 4]);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn imap<A, R, I>(
        &self,
        function: impl TaskName<A, R>,
        iterable: I,
    ) -> Result<IMapIterator<R, I::IntoIter>>
    where
        I: IntoIterator<Item = A>,
        A: Serialize + DeserializeOwned + 'static,
        R: Serialize + DeserializeOwned + 'static,
    {
        let chunksize = self.chunksize.unwrap_or(1);
        IMapIterator::start(self, function.task_name(), iterable.into_iter(), chunksize, false)
    }

    /// Like [`imap`](Self::imap), but the results come in the order they arrive (Python's
    /// `imap_unordered`).
    ///
    /// ```no_run
    /// use multiproc::distributed::{Pool, Registry};
    /// let pool = Pool::connect("redis://127.0.0.1/", "work", Registry::new().task("sq", |x: u64| x * x))?;
    /// let mut v: Vec<u64> = pool.imap_unordered("sq", 0..3u64)?.collect::<Result<_, _>>()?;
    /// v.sort();
    /// assert_eq!(v, [0, 1, 4]);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn imap_unordered<A, R, I>(
        &self,
        function: impl TaskName<A, R>,
        iterable: I,
    ) -> Result<IMapIterator<R, I::IntoIter>>
    where
        I: IntoIterator<Item = A>,
        A: Serialize + DeserializeOwned + 'static,
        R: Serialize + DeserializeOwned + 'static,
    {
        let chunksize = self.chunksize.unwrap_or(1);
        IMapIterator::start(self, function.task_name(), iterable.into_iter(), chunksize, true)
    }

    /// The mapping methods with an explicit chunk size, as locally:
    /// `pool.chunksize(n).map("f", items)` sends `n` items per task. `0` is an
    /// [`Error::InvalidArgument`], reported by the call.
    ///
    /// ```no_run
    /// use multiproc::distributed::{Pool, Registry};
    /// let pool = Pool::connect("redis://127.0.0.1/", "work", Registry::new().task("inc", |x: u32| x + 1))?;
    /// assert_eq!(pool.chunksize(100).map::<u32, u32>("inc", 0..1000)?.len(), 1000);
    /// assert!(pool.chunksize(0).map::<u32, u32>("inc", [1]).is_err());
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn chunksize(&self, chunksize: usize) -> Chunked<'_> {
        let mapper = Mapper { inner: self.inner.clone(), chunksize: Some(chunksize) };
        Chunked { mapper, pool: PhantomData }
    }

    /// `map_async` with a chunk size (`None`: the default).
    fn map_chunked<A, R>(
        &self,
        function: &str,
        iterable: impl IntoIterator<Item = A>,
        chunksize: Option<usize>,
    ) -> Result<AsyncResult<Vec<R>>>
    where
        A: Serialize + DeserializeOwned + 'static,
        R: Serialize + DeserializeOwned + 'static,
    {
        self.inner.registry.check::<A, R>(function)?;
        let items: Vec<A> = iterable.into_iter().collect();
        let size = match chunksize {
            Some(0) => return Err(Error::InvalidArgument("chunksize must be at least 1".into())),
            Some(n) => n,
            None => items.len().div_ceil(DEFAULT_CHUNKS).clamp(1, MAX_DEFAULT_CHUNKSIZE),
        };
        let mut chunks = Vec::with_capacity(items.len().div_ceil(size));
        let mut items = items.into_iter().peekable();
        while items.peek().is_some() {
            chunks.push(items.by_ref().take(size).collect::<Vec<A>>());
        }
        self.submit_all(function, chunks, assemble_vec::<R>)
    }

    /// Submits a whole job; its result is put together by `assemble`.
    fn submit_all<A: Serialize, T>(
        &self,
        function: &str,
        chunks: Vec<Vec<A>>,
        assemble: Assemble<T>,
    ) -> Result<AsyncResult<T>> {
        let job = self.inner.start_job(false);
        let result =
            AsyncResult { inner: self.inner.clone(), job, assemble, taken: AtomicBool::new(false) };
        self.inner.submit(job, function, 0, chunks)?;
        Ok(result)
    }
}

impl Drop for Pool {
    /// Stops the collector and deletes this pool's result stream (best effort, briefly).
    /// Results still pending are dropped.
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(collector) = self.collector.take() {
            let _ = collector.join();
        }
        let reply = &self.mapper.inner.reply;
        let _ = self.link.run(crate::deadline::after(DROP_TIMEOUT), |con| {
            redis::cmd("DEL")
                .arg(reply)
                .arg(format!("{reply}:room"))
                .arg(format!("{reply}:dead"))
                .arg(format!("{reply}:joined"))
                .query::<redis::Value>(con)
        });
    }
}

/// The mapping methods of a [`Pool`] with an explicit chunk size
/// ([`Mapper::chunksize`]`(n)`): a [`Mapper`] through `Deref`.
///
/// ```no_run
/// use multiproc::distributed::{Pool, Registry};
/// let pool = Pool::connect("redis://127.0.0.1/", "work", Registry::new().task("inc", |x: u32| x + 1))?;
/// let v: Vec<u32> = pool.chunksize(10).imap("inc", 0..100u32)?.collect::<Result<_, _>>()?;
/// assert_eq!(v.len(), 100);
/// # Ok::<(), multiproc::Error>(())
/// ```
#[derive(Debug, Clone)]
pub struct Chunked<'p> {
    mapper: Mapper,
    /// The pool, whose collector thread brings the results, outlives this.
    pool: PhantomData<&'p Pool>,
}

impl std::ops::Deref for Chunked<'_> {
    type Target = Mapper;

    /// The mapping methods with this chunk size.
    fn deref(&self) -> &Mapper {
        &self.mapper
    }
}

/// Puts a job's item results together into its value.
type Assemble<T> = fn(Vec<std::result::Result<Vec<u8>, String>>) -> Result<T>;

/// One item's value, or its error.
fn decode_item<R: DeserializeOwned>(item: std::result::Result<Vec<u8>, String>) -> Result<R> {
    match item {
        Ok(bytes) => Codec::Postcard.decode(&bytes),
        Err(why) => Err(Error::Task(why)),
    }
}

/// The value of a one-item job.
fn assemble_one<R: DeserializeOwned>(
    items: Vec<std::result::Result<Vec<u8>, String>>,
) -> Result<R> {
    let item = items.into_iter().next();
    decode_item(item.ok_or_else(|| Error::Protocol("a task without a result".into()))?)
}

/// The values of a job, in order (the first error if any).
fn assemble_vec<R: DeserializeOwned>(
    items: Vec<std::result::Result<Vec<u8>, String>>,
) -> Result<Vec<R>> {
    items.into_iter().map(decode_item).collect()
}

/// A chunk's outcome as one result per item.
fn expand(outcome: Outcome, size: usize) -> Vec<std::result::Result<Vec<u8>, String>> {
    match outcome {
        Ok(items) => items,
        Err(why) => vec![Err(why); size],
    }
}

/// The result of [`Mapper::apply_async`] or [`Mapper::map_async`], as the local pool's
/// [`AsyncResult`](crate::pool::AsyncResult): `get`, `get_timeout`, `try_get`, `ready`.
///
/// ```no_run
/// use std::time::Duration;
/// use multiproc::distributed::{Pool, Registry};
/// let pool = Pool::connect("redis://127.0.0.1/", "work", Registry::new().task("inc", |x: u8| x + 1))?;
/// let r = pool.apply_async::<u8, u8>("inc", 1)?;
/// assert_eq!(r.get_timeout(Duration::from_secs(30))?, 2);
/// # Ok::<(), multiproc::Error>(())
/// ```
pub struct AsyncResult<T> {
    inner: Arc<Inner>,
    job: u64,
    assemble: Assemble<T>,
    taken: AtomicBool,
}

impl<T> std::fmt::Debug for AsyncResult<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AsyncResult").field("job", &self.job).finish_non_exhaustive()
    }
}

impl<T> AsyncResult<T> {
    /// Waits for the result as long as it takes and returns it: the value, or the first
    /// failed item's error. The value is moved out: a second `get` returns
    /// [`Error::ProcessState`].
    ///
    /// ```no_run
    /// use multiproc::distributed::{Pool, Registry};
    /// let pool = Pool::connect("redis://127.0.0.1/", "work", Registry::new().task("inc", |x: u8| x + 1))?;
    /// let r = pool.apply_async::<u8, u8>("inc", 1)?;
    /// assert_eq!(r.get()?, 2);
    /// assert!(r.get().is_err());
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn get(&self) -> Result<T> {
        self.get_until(None, Duration::MAX)
    }

    /// [`get`](Self::get), waiting at most `timeout`: [`Error::Timeout`] then, and the
    /// result stays pending.
    ///
    /// ```no_run
    /// use std::time::Duration;
    /// use multiproc::distributed::{Pool, Registry};
    /// let pool = Pool::connect("redis://127.0.0.1/", "work", Registry::new().task("inc", |x: u8| x + 1))?;
    /// let r = pool.apply_async::<u8, u8>("inc", 1)?;
    /// assert_eq!(r.get_timeout(Duration::from_secs(30))?, 2);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn get_timeout(&self, timeout: Duration) -> Result<T> {
        self.get_until(crate::deadline::after(timeout), timeout)
    }

    /// The result if it is ready now ([`Error::WouldBlock`] otherwise, and it stays
    /// pending).
    ///
    /// ```no_run
    /// use multiproc::distributed::{Pool, Registry};
    /// let pool = Pool::connect("redis://127.0.0.1/", "work", Registry::new().task("inc", |x: u8| x + 1))?;
    /// let r = pool.apply_async::<u8, u8>("inc", 1)?;
    /// if let Ok(v) = r.try_get() { assert_eq!(v, 2); }
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn try_get(&self) -> Result<T> {
        self.get_timeout(Duration::ZERO).map_err(Error::not_waiting)
    }

    /// Whether the result has arrived (or been taken).
    ///
    /// ```no_run
    /// use multiproc::distributed::{Pool, Registry};
    /// let pool = Pool::connect("redis://127.0.0.1/", "work", Registry::new().task("inc", |x: u8| x + 1))?;
    /// let r = pool.apply_async::<u8, u8>("inc", 1)?;
    /// r.get()?;
    /// assert!(r.ready());
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn ready(&self) -> bool {
        self.taken.load(Ordering::Relaxed)
            || lock(&self.inner.shared.jobs).get(&self.job).is_some_and(|j| j.unfilled == 0)
    }

    fn get_until(&self, deadline: Option<Instant>, timeout: Duration) -> Result<T> {
        if self.taken.load(Ordering::Relaxed) {
            return Err(Error::ProcessState("the result was already taken"));
        }
        let job = self.job;
        // `Some(None)`: another thread took the result meanwhile.
        let found = self.inner.shared.wait(deadline, |jobs| match jobs.get(&job) {
            None => Some(None),
            Some(j) if j.unfilled > 0 => None,
            Some(_) => Some(jobs.remove(&job)),
        });
        let done = match found {
            None => return Err(Error::Timeout(timeout)),
            Some(None) => return Err(Error::ProcessState("the result was already taken")),
            Some(Some(done)) => done,
        };
        self.taken.store(true, Ordering::Relaxed);
        // Another `get` of this result waiting in another thread sees it taken.
        self.inner.shared.cond.notify_all();
        let mut items = Vec::new();
        let Job { sizes, mut ready, .. } = done;
        for (i, size) in sizes.into_iter().enumerate() {
            let outcome = ready.remove(&(i as u32)).unwrap_or_else(|| Err("no result".into()));
            items.extend(expand(outcome, size));
        }
        (self.assemble)(items)
    }
}

impl<T> Drop for AsyncResult<T> {
    fn drop(&mut self) {
        self.inner.forget(self.job);
    }
}

/// The iterator of [`Mapper::imap`] and [`Mapper::imap_unordered`], as the local pool's
/// [`IMapIterator`](crate::pool::IMapIterator): each item yields `Ok(value)` or its own
/// error, and [`next_timeout`](Self::next_timeout) bounds a wait.
///
/// ```no_run
/// use multiproc::distributed::{Pool, Registry};
/// let pool = Pool::connect("redis://127.0.0.1/", "work", Registry::new().task("inc", |x: u8| x + 1))?;
/// let mut it = pool.imap::<_, u8, _>("inc", [1u8, 2])?;
/// assert_eq!(it.next().transpose()?, Some(2));
/// # Ok::<(), multiproc::Error>(())
/// ```
pub struct IMapIterator<R, I> {
    inner: Arc<Inner>,
    job: u64,
    function: String,
    /// The input not yet submitted (`None` once it ran out).
    input: Option<I>,
    chunksize: usize,
    submitted: u32,
    consumed: u32,
    unordered: bool,
    /// Results of the chunk being handed out.
    items: VecDeque<Result<R>>,
}

impl<R, I> std::fmt::Debug for IMapIterator<R, I> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IMapIterator")
            .field("job", &self.job)
            .field("submitted", &self.submitted)
            .field("consumed", &self.consumed)
            .finish_non_exhaustive()
    }
}

impl<R, I, A> IMapIterator<R, I>
where
    I: Iterator<Item = A>,
    A: Serialize + DeserializeOwned + 'static,
    R: Serialize + DeserializeOwned + 'static,
{
    /// Starts an `imap` and submits its first window.
    fn start(
        pool: &Mapper,
        function: &str,
        input: I,
        chunksize: usize,
        unordered: bool,
    ) -> Result<IMapIterator<R, I>> {
        pool.inner.registry.check::<A, R>(function)?;
        if chunksize == 0 {
            return Err(Error::InvalidArgument("chunksize must be at least 1".into()));
        }
        let mut it = IMapIterator {
            inner: pool.inner.clone(),
            job: pool.inner.start_job(unordered),
            function: function.to_string(),
            input: Some(input),
            chunksize,
            submitted: 0,
            consumed: 0,
            unordered,
            items: VecDeque::new(),
        };
        it.fill()?;
        Ok(it)
    }

    /// Submits input until the window is full or the input runs out.
    fn fill(&mut self) -> Result<()> {
        let room = IMAP_WINDOW.saturating_sub(self.submitted - self.consumed);
        let Some(input) = self.input.as_mut() else { return Ok(()) };
        let mut chunks = Vec::new();
        for _ in 0..room {
            let chunk: Vec<A> = input.by_ref().take(self.chunksize).collect();
            if chunk.is_empty() {
                self.input = None;
                break;
            }
            chunks.push(chunk);
        }
        if chunks.is_empty() {
            return Ok(());
        }
        let first = self.submitted;
        let submitted = self.inner.submit(self.job, &self.function, first, chunks);
        self.submitted =
            lock(&self.inner.shared.jobs).get(&self.job).map_or(first, |j| j.sizes.len() as u32);
        if let Err(e) = submitted {
            self.input = None;
            // An item that does not encode: nothing was submitted, the error is this
            // call's. A failed put: the chunks not queued have the error as their items'
            // results, and the iterator ends after them.
            if self.submitted == first {
                return Err(e);
            }
        }
        Ok(())
    }

    /// The next result, waiting until `deadline` (`timeout` names it in the error).
    fn next_until(&mut self, deadline: Option<Instant>, timeout: Duration) -> Option<Result<R>> {
        loop {
            if let Some(item) = self.items.pop_front() {
                return Some(item);
            }
            if let Err(e) = self.fill() {
                return Some(Err(e));
            }
            if self.consumed == self.submitted && self.input.is_none() {
                return None;
            }
            let (job, next, unordered) = (self.job, self.consumed, self.unordered);
            let got = self.inner.shared.wait(deadline, |jobs| {
                let job = jobs.get_mut(&job)?;
                let chunk = if unordered { job.arrived.pop_front()? } else { next };
                let outcome = job.ready.remove(&chunk)?;
                Some((outcome, job.sizes[chunk as usize]))
            });
            let Some((outcome, size)) = got else { return Some(Err(Error::Timeout(timeout))) };
            self.consumed += 1;
            self.items.extend(expand(outcome, size).into_iter().map(decode_item));
        }
    }

    /// The next result, waiting at most `timeout`: `Some(Err(Error::Timeout))` then (the
    /// result stays pending), `None` when the iterator is done.
    ///
    /// ```no_run
    /// use std::time::Duration;
    /// use multiproc::distributed::{Pool, Registry};
    /// let pool = Pool::connect("redis://127.0.0.1/", "work", Registry::new().task("inc", |x: u8| x + 1))?;
    /// let mut it = pool.imap::<_, u8, _>("inc", [1u8])?;
    /// assert_eq!(it.next_timeout(Duration::from_secs(30)).transpose()?, Some(2));
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn next_timeout(&mut self, timeout: Duration) -> Option<Result<R>> {
        self.next_until(crate::deadline::after(timeout), timeout)
    }

    /// The next result if it is ready now (`Some(Err(Error::WouldBlock))` otherwise).
    ///
    /// ```no_run
    /// use multiproc::distributed::{Pool, Registry};
    /// let pool = Pool::connect("redis://127.0.0.1/", "work", Registry::new().task("inc", |x: u8| x + 1))?;
    /// let mut it = pool.imap::<_, u8, _>("inc", [1u8])?;
    /// let _ = it.try_next();
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn try_next(&mut self) -> Option<Result<R>> {
        self.next_timeout(Duration::ZERO).map(|r| r.map_err(Error::not_waiting))
    }
}

impl<R, I, A> Iterator for IMapIterator<R, I>
where
    I: Iterator<Item = A>,
    A: Serialize + DeserializeOwned + 'static,
    R: Serialize + DeserializeOwned + 'static,
{
    type Item = Result<R>;

    fn next(&mut self) -> Option<Result<R>> {
        self.next_until(None, Duration::MAX)
    }
}

impl<R, I> Drop for IMapIterator<R, I> {
    fn drop(&mut self) {
        self.inner.forget(self.job);
    }
}

/// 64 random bits in hex (a submitter's id).
fn random_id() -> String {
    let mut random = [0u8; 8];
    let nonce = match getrandom::fill(&mut random) {
        Ok(()) => u64::from_le_bytes(random),
        // Without randomness, the pid and the time still tell submitters apart.
        Err(_) => {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos() as u64);
            now ^ u64::from(std::process::id()) << 32
        }
    };
    format!("{nonce:016x}")
}

/// The collector thread: takes this pool's results and records them, and turns its
/// dead-lettered tasks into errors, until `stop`.
fn collect(
    results: JoinableQueue<ResultMsg>,
    mut dead: DeadWatch,
    shared: &Shared,
    stop: &AtomicBool,
) {
    let mut last_look: Option<Instant> = None;
    while !stop.load(Ordering::Relaxed) {
        match results.get_many_timeout(RESULT_BATCH, COLLECT_WAIT) {
            Ok(msgs) => {
                let taken = msgs.len();
                for msg in msgs {
                    shared.deliver(msg);
                }
                // Recorded, so acknowledged, all in one round trip. A result not
                // acknowledged comes again after the visibility timeout, and is dropped as
                // a duplicate then.
                let _ = results.task_done_many(taken);
            }
            // Nothing came, or an entry that is not a result (dead-lettered by the get).
            Err(Error::Empty | Error::Codec(_)) => {}
            // The server is away: the next round tries again.
            Err(_) => std::thread::sleep(COLLECT_WAIT),
        }
        if last_look.is_none_or(|t| t.elapsed() >= DEAD_LOOK_PERIOD) && shared.waiting() {
            dead.look(shared);
            last_look = Some(Instant::now());
        }
    }
}

/// Reads the task stream's dead letters, from where they stood when the pool started, for
/// tasks of this pool.
struct DeadWatch {
    link: Link,
    key: String,
    reply: String,
    /// The id of the last dead letter looked at.
    last: String,
}

impl DeadWatch {
    /// Starts after the newest dead letter there is now.
    fn start(link: Link, key: &str, reply: &str) -> Result<DeadWatch> {
        let newest = link.run(None, |con| {
            redis::cmd("XREVRANGE").arg(key).arg("+").arg("-").arg("COUNT").arg(1).query(con)
        })?;
        let last = match scripts::array("XREVRANGE", &newest)?.first() {
            Some(entry) => scripts::string("XREVRANGE", &scripts::array("XREVRANGE", entry)?[0])?,
            None => "0-0".to_string(),
        };
        Ok(DeadWatch { link, key: key.to_string(), reply: reply.to_string(), last })
    }

    /// Turns the new dead letters of this pool's tasks into their error results.
    fn look(&mut self, shared: &Shared) {
        let Ok(reply) = self.link.run(crate::deadline::after(COLLECT_WAIT), |con| {
            redis::cmd("XRANGE")
                .arg(&self.key)
                .arg(format!("({}", self.last))
                .arg("+")
                .arg("COUNT")
                .arg(RESULT_BATCH)
                .query::<redis::Value>(con)
        }) else {
            return;
        };
        let Ok(entries) = scripts::array("XRANGE", &reply) else { return };
        for entry in entries {
            let Some((id, fields)) = dead_entry(entry) else { continue };
            self.last = id;
            let Some(task) =
                fields.get("d").and_then(|d| Codec::Postcard.decode::<TaskMsg>(d).ok())
            else {
                continue;
            };
            if task.reply != self.reply {
                continue;
            }
            let text = |k: &str| fields.get(k).map(|v| String::from_utf8_lossy(v).into_owned());
            let reason = text("reason").unwrap_or_default();
            shared.deliver(ResultMsg {
                job: task.job,
                chunk: task.chunk,
                outcome: Err(format!(
                    "task `{}` was dead-lettered to {} ({reason}); not run to completion",
                    task.function, self.key
                )),
            });
        }
    }
}

/// A dead letter's id and fields.
fn dead_entry(entry: &redis::Value) -> Option<(String, HashMap<String, Vec<u8>>)> {
    let parts = scripts::array("XRANGE", entry).ok()?;
    let id = scripts::string("XRANGE", parts.first()?).ok()?;
    let mut fields = HashMap::new();
    let list = scripts::array("XRANGE", parts.get(1)?).ok()?;
    for pair in list.chunks(2) {
        if let [redis::Value::BulkString(k), redis::Value::BulkString(v)] = pair {
            fields.insert(String::from_utf8_lossy(k).into_owned(), v.clone());
        }
    }
    Some((id, fields))
}
