//! Pools of worker processes: [`Pool`] (Python's `multiprocessing.Pool`), [`AsyncResult`]
//! and [`IMapIterator`].
//!
//! | Python | multiproc |
//! |---|---|
//! | `Pool(processes)` | [`Pool::new`] |
//! | `Pool()` (one worker per CPU) | [`Pool::builder`]`().build()` |
//! | `Pool(processes, initializer, initargs, maxtasksperchild, context)` | [`Pool::builder`] |
//! | `apply(f, args)` | [`Pool::apply`] |
//! | `apply_async(f, args, callback=, error_callback=)` | [`Pool::apply_async`], [`Pool::apply_async_with`] |
//! | `map(f, iterable)`, `map_async(…)` | [`Pool::map`], [`Pool::map_async`], [`Pool::map_async_with`] |
//! | `starmap(f, iterable)`, `starmap_async(…)` | [`Pool::starmap`], [`Pool::starmap_async`] |
//! | `imap(f, iterable)`, `imap_unordered(…)` | [`Pool::imap`], [`Pool::imap_unordered`] |
//! | any of those with `chunksize=n` | the same method on [`Pool::chunksize`]`(n)` ([`Chunked`]) |
//! | `close()`, `terminate()`, `join()` | [`Pool::close`], [`Pool::terminate`], [`Pool::join`], [`Pool::join_timeout`] |
//! | `with Pool() as p:` (terminates on exit) | dropping the [`Pool`] |
//! | `AsyncResult.get()`, `get(timeout)` | [`AsyncResult::get`], [`AsyncResult::get_timeout`], [`AsyncResult::try_get`] |
//! | `AsyncResult.wait()`, `wait(timeout)`, `ready()`, `successful()` | [`AsyncResult::wait`], [`AsyncResult::wait_timeout`], [`AsyncResult::ready`], [`AsyncResult::successful`] |
//! | `IMapIterator.next(timeout)` | [`IMapIterator::next_timeout`], [`IMapIterator::try_next`] |
//!
//! # Chunk sizes
//! Every mapping method comes in one form without a chunk size: [`Pool::map`] (and
//! `map_async`, `starmap`, …) cut the input as Python does when `chunksize` is not given
//! (`ceil(len / (4 × processes))`), [`Pool::imap`] and [`Pool::imap_unordered`] send one
//! item per chunk (Python's default there). To choose the chunk size, call the same method
//! on [`Pool::chunksize`]`(n)`: `pool.chunksize(100).map(f, items)` is Python's
//! `pool.map(f, items, chunksize=100)`.
//!
//! ```
//! use multiproc::pool::Pool;
//!
//! fn square(x: u64) -> u64 {
//!     x * x
//! }
//!
//! let pool = Pool::new(2)?;
//! assert_eq!(pool.map(square, 0..5)?, [0, 1, 4, 9, 16]);
//! assert_eq!(pool.apply(square, 12)?, 144);
//! let squares: Vec<u64> = pool.imap(square, 0..3)?.collect::<Result<_, _>>()?;
//! assert_eq!(squares, [0, 1, 4]);
//! # Ok::<(), multiproc::Error>(())
//! ```
//!
//! # How it works
//! Each worker is a child process (started like [`Process`], as a daemon) with two pipes
//! to the parent: tasks in, results out. A dispatcher thread in the parent owns the other
//! ends. Work is cut into *chunks* (`chunksize` items of one call); the dispatcher keeps a
//! few chunks in flight per worker, written as one message, so a worker never waits for a
//! round trip between two tasks. The number in flight adapts to how long a chunk takes:
//! many for microsecond tasks, one or two for long ones. A worker runs its chunks in order
//! and sends their results back in batches (at the latest 50 µs after the oldest one was
//! ready). The dispatcher waits on the pipes, the workers' pidfds and a wake-up
//! descriptor, all in one `poll`. A worker's whole chunk is decoded, run and encoded by one
//! monomorphised function (no allocation per item), so a task costs tens of nanoseconds
//! plus the function itself.
//!
//! Results are delivered in the parent: [`AsyncResult`]s are completed, callbacks run on
//! the dispatcher thread (they must not block), and [`IMapIterator`]s are fed.
//! [`Pool::imap`] takes its input lazily as results are consumed: at most a bounded window
//! of items is ever in flight, so an endless iterator works.
//!
//! # When a task fails
//! A task that panics gives an error for that task ([`Error::ProcessFailed`] with exit
//! code 1 and the panic message); the worker goes on with the next task.
//!
//! A worker that dies (killed by a signal, `abort`, a segfault, `exit`) is replaced by a
//! new one. Each worker publishes in shared memory which item it is running, so the
//! parent knows which task was running when it died: that task, and only that one, gets
//! [`Error::ProcessFailed`] naming the worker's pid and its exit code (`-9` for `SIGKILL`).
//! The tasks that the dead worker had received but not started are given to other
//! workers, and so are tasks that it had finished but whose results it had not yet sent
//! (such a task then runs twice). Every other task completes. (CPython's pool waits
//! forever in this case.)
//!
//! If workers keep dying before they are ready (the initializer panics or kills the
//! process), the pool stops trying: every pending task and every later call fails with
//! the reason.
//!
//! # Arguments and results
//! Functions are plain `fn(A) -> R` (a closure that captures nothing coerces to one), with
//! `A` and `R` serde types; use a tuple for several arguments. Values that own shared
//! memory ([`Queue`](crate::queues::Queue), [`Value`](crate::Value), locks …) and
//! [`Connection`]s can be arguments of tasks (a connection is handed to the worker that
//! decodes the task, once).
//!
//! [`Process`]: crate::Process
//! [`Connection`]: crate::Connection
//!
//! # Layout
//! | file | what it holds |
//! |---|---|
//! | `mod.rs` | [`Pool`] and [`PoolBuilder`], the tuning constants, and the state the pool handle, its results and the dispatcher share (`Inner`) |
//! | `chunked.rs` | [`Chunked`]: the mapping methods with an explicit chunk size |
//! | `results.rs` | [`AsyncResult`] and [`IMapIterator`], and the sinks through which the dispatcher feeds them |
//! | `chunks.rs` | how a job's items are encoded into chunks and groups of chunks before they are submitted |
//! | `dispatcher.rs` | the thread that hands chunks to workers, reads their results, replaces dead workers; the pool's only operating-system calls |
//! | `worker.rs` | a worker: what it is started with, the parent's handle on it, and the loop that runs its chunks in the child |
//! | `wire.rs` | the records and items that travel between the dispatcher and a worker, and their encoding |

use std::fmt;
use std::os::fd::OwnedFd;
use std::sync::{mpsc, Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::context::{self, StartMethod};
use crate::error::{Error, Result};
use crate::sync_util::{lock, wait_deadline};
use crate::sys;

mod chunked;
mod chunks;
mod dispatcher;
mod results;
mod wire;
mod worker;

pub use chunked::Chunked;
pub use results::{AsyncResult, IMapIterator};

use chunks::{ChunkEncoder, FnRef, Group};
use dispatcher::{Config, Dispatcher};
use results::{Callbacks, Cell, CollectSink, Sink};
use worker::Initializer;

// --------------------------------------------------------------------------------------
// Tuning

/// The capacity asked for each pipe between the pool and a worker (Linux's default limit
/// for unprivileged processes).
const PIPE_BYTES: usize = 1 << 20;
/// Chunks in flight per worker, at most.
const WINDOW_MAX: usize = 256;
/// How much work (in time) the dispatcher tries to keep queued at each worker, so that a
/// worker does not run dry while its results travel back and new chunks travel out.
const PIPELINE_NS: f64 = 300_000.0;
/// Above this time per chunk, a worker gets one chunk at a time (best load balance; the
/// round trip is negligible next to the work).
const SLOW_CHUNK_NS: f64 = 10_000_000.0;
/// Encoded bytes in flight per worker, at most (but always at least one chunk).
const WORKER_BYTES_MAX: usize = 8 << 20;
/// A worker sends the results it holds at the latest after this long.
const FLUSH_AFTER: Duration = Duration::from_micros(50);
/// … or once they are this big.
const FLUSH_BYTES: usize = 1 << 20;
/// Items an [`IMapIterator`] keeps in flight, at most (also bounded per worker and by bytes).
const IMAP_ITEMS_MAX: usize = 1 << 16;
/// Encoded bytes an [`IMapIterator`] keeps in flight, at most (but at least one chunk).
const IMAP_BYTES_MAX: usize = 64 << 20;
/// How many workers in a row may die before they are ready before the pool gives up.
const START_FAILURES_MAX: u32 = 3;
/// How long `terminate` lets workers react to `SIGTERM` before it sends `SIGKILL`.
const TERMINATE_GRACE: Duration = Duration::from_secs(1);

// --------------------------------------------------------------------------------------
// The public API: Pool and its builder

/// A pool of worker processes (Python's `multiprocessing.Pool`).
///
/// Dropping a pool terminates it (like leaving Python's `with Pool() as pool:` block):
/// the workers are stopped and reaped, and tasks that did not finish fail with
/// [`Error::Closed`]. To let submitted work finish, call [`close`](Self::close) and
/// [`join`](Self::join) first.
///
/// ```
/// use multiproc::pool::Pool;
///
/// fn cube(x: i64) -> i64 {
///     x * x * x
/// }
///
/// let pool = Pool::new(2)?;
/// let cubes = pool.map(cube, [1, 2, 3])?;
/// assert_eq!(cubes, [1, 8, 27]);
/// pool.close();
/// pool.join()?;
/// # Ok::<(), multiproc::Error>(())
/// ```
pub struct Pool {
    inner: Arc<Inner>,
    thread: Mutex<Option<std::thread::JoinHandle<()>>>,
}

/// Options for a [`Pool`]: Python's `Pool(processes, initializer, initargs,
/// maxtasksperchild, context)`.
///
/// ```
/// use multiproc::pool::Pool;
/// use multiproc::StartMethod;
///
/// fn hello(greeting: String) {
///     assert_eq!(greeting, "hi");
/// }
///
/// let pool = Pool::builder()
///     .processes(2)
///     .initializer(hello, "hi".to_string())
///     .maxtasksperchild(100)
///     .start_method(StartMethod::Spawn)
///     .build()?;
/// assert_eq!(pool.processes(), 2);
/// # Ok::<(), multiproc::Error>(())
/// ```
pub struct PoolBuilder {
    processes: Option<usize>,
    initializer: Option<Result<Initializer>>,
    maxtasks: Option<usize>,
    method: Option<StartMethod>,
}

impl Pool {
    /// A pool of `processes` workers (Python's `Pool(processes)`); `0` is an
    /// [`Error::InvalidArgument`]. For one worker per CPU this process may use
    /// ([`process_cpu_count`](crate::process_cpu_count), Python's `Pool()`), use
    /// `Pool::builder().build()`.
    ///
    /// Returns once the first worker is started (an error if it cannot be); the others
    /// start in the background while the first already takes tasks.
    ///
    /// ```
    /// use multiproc::pool::Pool;
    /// let pool = Pool::new(2)?;
    /// assert_eq!(pool.processes(), 2);
    /// assert!(Pool::new(0).is_err());
    /// let per_cpu = Pool::builder().build()?;
    /// assert_eq!(per_cpu.processes(), multiproc::process_cpu_count());
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn new(processes: usize) -> Result<Pool> {
        Pool::builder().processes(processes).build()
    }

    /// Options beyond the number of workers: initializer, `maxtasksperchild`, start method.
    /// Without [`processes`](PoolBuilder::processes), the pool has one worker per CPU this
    /// process may use.
    ///
    /// ```
    /// let pool = multiproc::pool::Pool::builder().processes(1).build()?;
    /// assert_eq!(pool.apply(|x: u8| x + 1, 1)?, 2);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn builder() -> PoolBuilder {
        PoolBuilder { processes: None, initializer: None, maxtasks: None, method: None }
    }

    /// The number of workers.
    ///
    /// ```
    /// let pool = multiproc::pool::Pool::new(3)?;
    /// assert_eq!(pool.processes(), 3);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn processes(&self) -> usize {
        self.inner.processes
    }

    /// The pids of the workers started so far. Workers start in the background after the
    /// first, and those that die or reach `maxtasksperchild` are replaced, so the list
    /// changes over time.
    ///
    /// ```
    /// let pool = multiproc::pool::Pool::new(2)?;
    /// let pids = pool.pids();
    /// assert!((1..=2).contains(&pids.len()));
    /// assert!(pids.iter().all(|&p| p > 0 && p != std::process::id() as i32));
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn pids(&self) -> Vec<i32> {
        lock(&self.inner.shared).pids.clone()
    }

    /// Runs `f(args)` in a worker and waits for its value (Python's `apply`).
    ///
    /// It waits as long as the task takes (a worker that dies gives an error, never a
    /// hang); for a deadline, use [`apply_async`](Self::apply_async) and
    /// [`AsyncResult::get_timeout`].
    ///
    /// ```
    /// let pool = multiproc::pool::Pool::new(1)?;
    /// assert_eq!(pool.apply(|(a, b): (u32, u32)| a + b, (2, 3))?, 5);
    /// let err = pool.apply(|_: ()| -> u8 { panic!("no") }, ()).unwrap_err();
    /// assert!(err.to_string().contains("panicked: no"));
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn apply<A, R>(&self, f: fn(A) -> R, args: A) -> Result<R>
    where
        A: Serialize + DeserializeOwned,
        R: Serialize + DeserializeOwned + Send + 'static,
    {
        self.apply_async(f, args)?.get()
    }

    /// Runs `f(args)` in a worker; the value arrives in the returned [`AsyncResult`]
    /// (Python's `apply_async`).
    ///
    /// ```
    /// use std::time::Duration;
    /// let pool = multiproc::pool::Pool::new(2)?;
    /// let r = pool.apply_async(|s: String| s.len(), "four".to_string())?;
    /// assert_eq!(r.get_timeout(Duration::from_secs(30))?, 4);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn apply_async<A, R>(&self, f: fn(A) -> R, args: A) -> Result<AsyncResult<R>>
    where
        A: Serialize + DeserializeOwned,
        R: Serialize + DeserializeOwned + Send + 'static,
    {
        self.submit_collect(f, std::iter::once(args), Some(1), single, Callbacks::none())
    }

    /// [`apply_async`](Self::apply_async) with Python's `callback` and `error_callback`:
    /// one of them runs in the parent, on the pool's dispatcher thread, when the task ends
    /// (before [`AsyncResult::get`] returns). They must not block: the pool delivers no
    /// other result while they run (waiting there for another result of the same pool
    /// returns [`Error::ProcessState`] at once instead of hanging). A callback that panics
    /// is ignored.
    ///
    /// ```
    /// use std::sync::mpsc;
    /// let pool = multiproc::pool::Pool::new(1)?;
    /// let (tx, rx) = mpsc::channel();
    /// let tx2 = tx.clone();
    /// pool.apply_async_with(
    ///     |x: u32| x * 10,
    ///     4,
    ///     move |v: &u32| tx.send(format!("got {v}")).unwrap(),
    ///     move |e: &multiproc::Error| tx2.send(format!("failed: {e}")).unwrap(),
    /// )?
    /// .wait()?;
    /// assert_eq!(rx.recv().unwrap(), "got 40");
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn apply_async_with<A, R>(
        &self,
        f: fn(A) -> R,
        args: A,
        callback: impl FnOnce(&R) + Send + 'static,
        error_callback: impl FnOnce(&Error) + Send + 'static,
    ) -> Result<AsyncResult<R>>
    where
        A: Serialize + DeserializeOwned,
        R: Serialize + DeserializeOwned + Send + 'static,
    {
        let callbacks = Callbacks::new(callback, error_callback);
        self.submit_collect(f, std::iter::once(args), Some(1), single, callbacks)
    }

    /// Applies `f` to every item, in parallel, and returns the values in input order
    /// (Python's `map`).
    ///
    /// The items are cut into chunks by Python's rule, `ceil(len / (4 × processes))` items
    /// each; a chunk is what a worker receives at once. To choose the size, use
    /// [`chunksize`](Self::chunksize)`(n).map(…)`. If a task fails, `map` returns the first
    /// error that arrives.
    ///
    /// It waits as long as the tasks take (a worker that dies gives an error, never a
    /// hang); for a deadline, use [`map_async`](Self::map_async) and
    /// [`AsyncResult::get_timeout`].
    ///
    /// ```
    /// let pool = multiproc::pool::Pool::new(2)?;
    /// let lengths = pool.map(|s: String| s.len(), ["a", "bb", "ccc"].map(String::from))?;
    /// assert_eq!(lengths, [1, 2, 3]);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn map<A, R>(&self, f: fn(A) -> R, iterable: impl IntoIterator<Item = A>) -> Result<Vec<R>>
    where
        A: Serialize + DeserializeOwned,
        R: Serialize + DeserializeOwned + Send + 'static,
    {
        self.map_async(f, iterable)?.get()
    }

    /// [`map`](Self::map) without waiting (Python's `map_async`). The items are encoded
    /// before this returns; encoding errors are returned here.
    ///
    /// ```
    /// let pool = multiproc::pool::Pool::new(2)?;
    /// let r = pool.map_async(|x: i32| -x, vec![1, 2, 3])?;
    /// assert_eq!(r.get()?, [-1, -2, -3]);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn map_async<A, R>(
        &self,
        f: fn(A) -> R,
        iterable: impl IntoIterator<Item = A>,
    ) -> Result<AsyncResult<Vec<R>>>
    where
        A: Serialize + DeserializeOwned,
        R: Serialize + DeserializeOwned + Send + 'static,
    {
        self.submit_collect(f, iterable, None, identity, Callbacks::none())
    }

    /// [`map_async`](Self::map_async) with Python's `callback` (given all the values) and
    /// `error_callback` (given the first error); see
    /// [`apply_async_with`](Self::apply_async_with) for where they run.
    ///
    /// ```
    /// use std::sync::mpsc;
    /// let pool = multiproc::pool::Pool::new(2)?;
    /// let (tx, rx) = mpsc::channel();
    /// let r = pool.map_async_with(
    ///     |x: u64| x * 2,
    ///     0..4,
    ///     move |values: &Vec<u64>| tx.send(values.iter().sum::<u64>()).unwrap(),
    ///     |_e: &multiproc::Error| {},
    /// )?;
    /// assert_eq!(r.get()?, [0, 2, 4, 6]);
    /// assert_eq!(rx.recv().unwrap(), 12);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn map_async_with<A, R>(
        &self,
        f: fn(A) -> R,
        iterable: impl IntoIterator<Item = A>,
        callback: impl FnOnce(&Vec<R>) + Send + 'static,
        error_callback: impl FnOnce(&Error) + Send + 'static,
    ) -> Result<AsyncResult<Vec<R>>>
    where
        A: Serialize + DeserializeOwned,
        R: Serialize + DeserializeOwned + Send + 'static,
    {
        let callbacks = Callbacks::new(callback, error_callback);
        self.submit_collect(f, iterable, None, identity, callbacks)
    }

    /// Python's `starmap`: the items are argument tuples and `f` takes a tuple. In Rust
    /// this is [`map`](Self::map) with tuple items; the name is kept for Python users.
    ///
    /// ```
    /// let pool = multiproc::pool::Pool::new(2)?;
    /// let powers = pool.starmap(|(b, e): (u64, u32)| b.pow(e), [(2, 3), (3, 2)])?;
    /// assert_eq!(powers, [8, 9]);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn starmap<A, R>(
        &self,
        f: fn(A) -> R,
        iterable: impl IntoIterator<Item = A>,
    ) -> Result<Vec<R>>
    where
        A: Serialize + DeserializeOwned,
        R: Serialize + DeserializeOwned + Send + 'static,
    {
        self.map(f, iterable)
    }

    /// Python's `starmap_async`: [`map_async`](Self::map_async) with tuple items.
    ///
    /// ```
    /// let pool = multiproc::pool::Pool::new(2)?;
    /// let r = pool.starmap_async(|(a, b): (i32, i32)| a * b, vec![(2, 5), (3, 3)])?;
    /// assert_eq!(r.get()?, [10, 9]);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn starmap_async<A, R>(
        &self,
        f: fn(A) -> R,
        iterable: impl IntoIterator<Item = A>,
    ) -> Result<AsyncResult<Vec<R>>>
    where
        A: Serialize + DeserializeOwned,
        R: Serialize + DeserializeOwned + Send + 'static,
    {
        self.map_async(f, iterable)
    }

    /// A lazy [`map`](Self::map): an iterator of each item's result, in input order
    /// (Python's `imap`). Each item yields `Ok(value)` or that task's own error.
    ///
    /// A first window of input is taken at once (the work starts), more as results are
    /// consumed: only a bounded window of items is ever in flight, so the input may be
    /// endless. Items travel one per chunk (Python's default); larger chunks cut overhead
    /// for tiny tasks: [`chunksize`](Self::chunksize)`(n).imap(…)`.
    ///
    /// ```
    /// let pool = multiproc::pool::Pool::new(2)?;
    /// // An endless input: only what is consumed (plus a bounded window) is computed.
    /// let first: Vec<u64> = pool
    ///     .imap(|x: u64| x * x, 0..)?
    ///     .take(5)
    ///     .collect::<Result<_, _>>()?;
    /// assert_eq!(first, [0, 1, 4, 9, 16]);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn imap<A, R, I>(&self, f: fn(A) -> R, iterable: I) -> Result<IMapIterator<R, I::IntoIter>>
    where
        I: IntoIterator<Item = A>,
        A: Serialize + DeserializeOwned,
        R: Serialize + DeserializeOwned + Send + 'static,
    {
        IMapIterator::start(self, f, iterable.into_iter(), 1, true)
    }

    /// Like [`imap`](Self::imap), but results come in the order they are ready (Python's
    /// `imap_unordered`).
    ///
    /// ```
    /// let pool = multiproc::pool::Pool::new(2)?;
    /// let mut v: Vec<u32> = pool
    ///     .imap_unordered(|x: u32| x + 100, 0..10)?
    ///     .collect::<Result<_, _>>()?;
    /// v.sort();
    /// assert_eq!(v, (100..110).collect::<Vec<_>>());
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn imap_unordered<A, R, I>(
        &self,
        f: fn(A) -> R,
        iterable: I,
    ) -> Result<IMapIterator<R, I::IntoIter>>
    where
        I: IntoIterator<Item = A>,
        A: Serialize + DeserializeOwned,
        R: Serialize + DeserializeOwned + Send + 'static,
    {
        IMapIterator::start(self, f, iterable.into_iter(), 1, false)
    }

    /// The mapping methods with an explicit chunk size: `pool.chunksize(n).map(f, items)`
    /// is Python's `pool.map(f, items, chunksize=n)` (likewise `map_async`,
    /// `map_async_with`, `starmap`, `starmap_async`, `imap`, `imap_unordered`). A chunk of
    /// `n` items is what a worker receives at once. `0` is an [`Error::InvalidArgument`],
    /// reported by the call.
    ///
    /// ```
    /// let pool = multiproc::pool::Pool::new(2)?;
    /// assert_eq!(pool.chunksize(7).map(|x: u32| x + 1, 0..1000)?.len(), 1000);
    /// assert!(pool.chunksize(0).map(|x: u32| x, [1]).is_err());
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn chunksize(&self, chunksize: usize) -> Chunked<'_> {
        Chunked { pool: self, chunksize }
    }

    /// Accepts no new work; the workers exit once the submitted work is done (Python's
    /// `close`). [`IMapIterator`]s already created keep working until consumed or dropped.
    ///
    /// ```
    /// let pool = multiproc::pool::Pool::new(1)?;
    /// let r = pool.apply_async(|x: u8| x, 7)?;
    /// pool.close();
    /// assert!(matches!(pool.apply(|x: u8| x, 1), Err(multiproc::Error::Closed(_))));
    /// assert_eq!(r.get()?, 7);
    /// pool.join()?;
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn close(&self) {
        self.inner.close();
    }

    /// Stops the workers at once (`SIGTERM`, then `SIGKILL` after a grace period); tasks
    /// that did not finish fail with [`Error::Closed`] (Python's `terminate`). Does not
    /// wait; [`join`](Self::join) does.
    ///
    /// ```
    /// use std::time::Duration;
    /// let pool = multiproc::pool::Pool::new(1)?;
    /// let r = pool.apply_async(|_: ()| std::thread::sleep(Duration::from_secs(60)), ())?;
    /// pool.terminate();
    /// pool.join()?;
    /// assert!(matches!(r.get(), Err(multiproc::Error::Closed(_))));
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn terminate(&self) {
        self.inner.set_phase(Phase::Terminated);
    }

    /// Waits until the workers have exited; call [`close`](Self::close) or
    /// [`terminate`](Self::terminate) first ([`Error::ProcessState`] otherwise; Python's
    /// `join`). After `close`, this waits for the submitted work, including
    /// [`IMapIterator`]s not yet consumed or dropped.
    ///
    /// ```
    /// let pool = multiproc::pool::Pool::new(2)?;
    /// assert!(pool.join().is_err()); // neither closed nor terminated
    /// pool.close();
    /// pool.join()?;
    /// assert!(pool.pids().is_empty());
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn join(&self) -> Result<()> {
        self.join_until(None, Duration::MAX)
    }

    /// [`join`](Self::join), waiting at most `timeout` ([`Error::Timeout`] then; the pool
    /// goes on stopping).
    ///
    /// ```
    /// use std::time::Duration;
    /// let pool = multiproc::pool::Pool::new(1)?;
    /// let _busy = pool.apply_async(|_: ()| std::thread::sleep(Duration::from_millis(300)), ())?;
    /// pool.close();
    /// assert!(matches!(pool.join_timeout(Duration::ZERO), Err(multiproc::Error::Timeout(_))));
    /// pool.join_timeout(Duration::from_secs(30))?;
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn join_timeout(&self, timeout: Duration) -> Result<()> {
        self.join_until(crate::deadline::after(timeout), timeout)
    }

    fn join_until(&self, deadline: Option<Instant>, timeout: Duration) -> Result<()> {
        {
            let mut shared = lock(&self.inner.shared);
            if shared.phase == Phase::Running {
                return Err(Error::ProcessState("join() needs close() or terminate() first"));
            }
            if std::thread::current().id() == shared.dispatcher {
                return Err(Error::ProcessState(
                    "join() cannot be called from a pool callback (it runs on the pool's thread)",
                ));
            }
            while !shared.finished {
                shared = wait_deadline(&self.inner.changed, shared, deadline)
                    .map_err(|_| Error::Timeout(timeout))?;
            }
        }
        if let Some(thread) = lock(&self.thread).take() {
            let _ = thread.join();
        }
        Ok(())
    }

    /// Encodes the items in chunks and submits them as one job whose values are collected
    /// (in order) into `finish(values)`.
    fn submit_collect<A, R, T>(
        &self,
        f: fn(A) -> R,
        iterable: impl IntoIterator<Item = A>,
        chunksize: Option<usize>,
        finish: fn(Vec<R>) -> T,
        callbacks: Callbacks<T>,
    ) -> Result<AsyncResult<T>>
    where
        A: Serialize + DeserializeOwned,
        R: Serialize + DeserializeOwned + Send + 'static,
        T: Send + 'static,
    {
        if chunksize == Some(0) {
            return Err(Error::InvalidArgument("chunksize must be at least 1".into()));
        }
        let iter = iterable.into_iter();
        // Python makes a list first to know the length; an iterator that knows its length
        // exactly is streamed instead (the length only sets the default chunk size).
        match iter.size_hint() {
            (low, Some(high)) if low == high => {
                self.submit_items(f, low, iter, chunksize, finish, callbacks)
            }
            _ => {
                let items: Vec<A> = iter.collect();
                self.submit_items(f, items.len(), items.into_iter(), chunksize, finish, callbacks)
            }
        }
    }

    fn submit_items<A, R, T>(
        &self,
        f: fn(A) -> R,
        len: usize,
        mut items: impl Iterator<Item = A>,
        chunksize: Option<usize>,
        finish: fn(Vec<R>) -> T,
        callbacks: Callbacks<T>,
    ) -> Result<AsyncResult<T>>
    where
        A: Serialize + DeserializeOwned,
        R: Serialize + DeserializeOwned + Send + 'static,
        T: Send + 'static,
    {
        let func = FnRef::task(f)?;
        let chunksize = chunksize
            .unwrap_or_else(|| len.div_ceil(4 * self.inner.processes))
            .clamp(1, u32::MAX as usize);
        let cell = Arc::new(Cell::new(pool_id(&self.inner)));
        let sink = CollectSink::new(cell.clone(), len, finish, callbacks);
        let job = self.inner.new_job(Box::new(sink))?;
        // If encoding fails or the input iterator panics, the job must not stay open.
        let mut guard = CancelOnDrop { inner: &self.inner, job: Some(job) };
        let mut encoder = ChunkEncoder::new(job, func, 0);
        let mut group_limit = 1usize;
        let mut more = true;
        while more {
            // An item that cannot be encoded fails the whole job.
            more = encoder.fill_chunk(&mut items, chunksize, |_, e| Err(e))?;
            // The first chunk goes at once, so the workers start; later ones in growing
            // groups, so that a million tiny chunks do not wake the dispatcher a million
            // times.
            if encoder.chunk_count() >= group_limit || encoder.bytes() >= 1 << 20 {
                if let Some(group) = encoder.take_group() {
                    self.inner.submit(vec![Submission::Chunks(group)]);
                }
                group_limit = (group_limit * 4).min(1024);
            }
        }
        let mut last = Vec::with_capacity(2);
        if let Some(group) = encoder.take_group() {
            last.push(Submission::Chunks(group));
        }
        last.push(Submission::InputDone { job });
        guard.job = None;
        self.inner.submit(last);
        Ok(AsyncResult { cell })
    }
}

/// Cancels a job whose submission did not complete.
struct CancelOnDrop<'a> {
    inner: &'a Inner,
    job: Option<u64>,
}

impl Drop for CancelOnDrop<'_> {
    fn drop(&mut self) {
        if let Some(job) = self.job {
            self.inner.submit(vec![Submission::Cancel { job }]);
        }
    }
}

fn identity<R>(v: Vec<R>) -> Vec<R> {
    v
}

/// The value of a one-item job. The sink checks that the item count matches the
/// submitted one before it calls this, so the vector holds exactly one value.
fn single<R>(v: Vec<R>) -> R {
    let mut values = v.into_iter();
    match values.next() {
        Some(r) => r,
        None => unreachable!("a job completes only with all of its values"),
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        self.terminate();
        let _ = self.join_timeout(TERMINATE_GRACE * 10);
    }
}

impl fmt::Debug for Pool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let shared = lock(&self.inner.shared);
        f.debug_struct("Pool")
            .field("processes", &self.inner.processes)
            .field("state", &shared.phase)
            .field("pids", &shared.pids)
            .finish()
    }
}

impl PoolBuilder {
    /// The number of workers (default: [`process_cpu_count`](crate::process_cpu_count)).
    ///
    /// ```
    /// let pool = multiproc::pool::Pool::builder().processes(2).build()?;
    /// assert_eq!(pool.processes(), 2);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn processes(mut self, processes: usize) -> PoolBuilder {
        self.processes = Some(processes);
        self
    }

    /// A function each worker runs once, with `args`, before its first task (Python's
    /// `initializer` and `initargs`). If it panics, the worker reports it and the pool
    /// fails every task with that message.
    ///
    /// ```
    /// use multiproc::pool::Pool;
    ///
    /// fn setup(level: u32) {
    ///     std::env::set_var("WORKER_LEVEL", level.to_string());
    /// }
    /// fn level(_: ()) -> String {
    ///     std::env::var("WORKER_LEVEL").unwrap_or_default()
    /// }
    ///
    /// let pool = Pool::builder().processes(1).initializer(setup, 3).build()?;
    /// assert_eq!(pool.apply(level, ())?, "3");
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn initializer<I>(mut self, f: fn(I), args: I) -> PoolBuilder
    where
        I: Serialize + DeserializeOwned,
    {
        self.initializer = Some(Initializer::new(f, &args));
        self
    }

    /// Replaces each worker after it has completed this many chunks (Python's
    /// `maxtasksperchild`; as in Python, a chunk of a `map` counts as one task).
    ///
    /// ```
    /// let pool = multiproc::pool::Pool::builder().processes(1).maxtasksperchild(1).build()?;
    /// let a = pool.apply(|_: ()| std::process::id(), ())?;
    /// let b = pool.apply(|_: ()| std::process::id(), ())?;
    /// assert_ne!(a, b); // a fresh worker for each task
    /// assert!(multiproc::pool::Pool::builder().maxtasksperchild(0).build().is_err());
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn maxtasksperchild(mut self, tasks: usize) -> PoolBuilder {
        self.maxtasks = Some(tasks);
        self
    }

    /// How workers are started (default: [`get_start_method`](crate::get_start_method)).
    /// Under [`StartMethod::Fork`], replacement workers are forked from the pool's own
    /// thread.
    ///
    /// ```
    /// use multiproc::{pool::Pool, StartMethod};
    /// let pool = Pool::builder().processes(2).start_method(StartMethod::Fork).build()?;
    /// assert_eq!(pool.map(|x: u8| x * 2, [1, 2])?, [2, 4]);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn start_method(mut self, method: StartMethod) -> PoolBuilder {
        self.method = Some(method);
        self
    }

    /// Starts the pool.
    ///
    /// ```
    /// let pool = multiproc::pool::Pool::builder().build()?;
    /// assert!(pool.processes() >= 1);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn build(self) -> Result<Pool> {
        let processes = match self.processes {
            Some(0) => {
                return Err(Error::InvalidArgument("a pool needs at least one process".into()))
            }
            Some(n) => n,
            None => context::process_cpu_count().max(1),
        };
        let maxtasks = match self.maxtasks {
            Some(0) => {
                return Err(Error::InvalidArgument("maxtasksperchild must be at least 1".into()))
            }
            other => other.map(|n| n as u64),
        };
        let init = self.initializer.transpose()?;
        let config = Config {
            processes,
            method: self.method.unwrap_or_else(context::get_start_method),
            maxtasks,
            init,
        };
        let inner = Arc::new(Inner::new(processes)?);
        let (started_tx, started_rx) = mpsc::channel();
        let for_thread = inner.clone();
        let thread = std::thread::Builder::new()
            .name("multiproc-pool".into())
            .spawn(move || Dispatcher::thread_main(for_thread, config, started_tx))?;
        match started_rx.recv() {
            Ok(Ok(())) => Ok(Pool { inner, thread: Mutex::new(Some(thread)) }),
            Ok(Err(e)) => {
                let _ = thread.join();
                Err(e)
            }
            Err(_) => {
                let _ = thread.join();
                Err(Error::ProcessState("the pool's thread ended while starting the workers"))
            }
        }
    }
}

impl fmt::Debug for PoolBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PoolBuilder")
            .field("processes", &self.processes)
            .field("initializer", &self.initializer.is_some())
            .field("maxtasksperchild", &self.maxtasks)
            .field("start_method", &self.method)
            .finish()
    }
}

// --------------------------------------------------------------------------------------
// The state shared by the pool handle, iterators and the dispatcher

/// The state the pool handle, its results and the dispatcher share.
struct Inner {
    shared: Mutex<Shared>,
    /// Notified when `finished` is set.
    changed: Condvar,
    /// An eventfd that wakes the dispatcher.
    wake: OwnedFd,
    processes: usize,
    /// The pid of the process that made the pool.
    owner: u32,
}

/// Whether the pool takes work, finishes it, or stops at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Running,
    Closed,
    Terminated,
}

/// The part of [`Inner`] behind its mutex.
struct Shared {
    phase: Phase,
    /// Submissions the dispatcher has not taken yet, in order.
    inbox: Vec<Submission>,
    /// The dispatcher is (about to be) asleep in `poll`: wake it through the eventfd.
    sleeping: bool,
    pids: Vec<i32>,
    /// The dispatcher has ended and every worker is reaped.
    finished: bool,
    next_job: u64,
    /// Why the pool cannot work any more (workers die before they are ready).
    broken: Option<Broken>,
    /// The dispatcher thread (to refuse `join` from a callback).
    dispatcher: std::thread::ThreadId,
}

/// Why the pool cannot work any more, as the error every task gets.
#[derive(Clone, Debug)]
struct Broken {
    pid: i32,
    exitcode: i32,
    message: String,
}

impl Broken {
    fn error(&self) -> Error {
        Error::ProcessFailed {
            pid: self.pid,
            exitcode: self.exitcode,
            message: self.message.clone(),
        }
    }
}

/// What the pool handle and its iterators hand the dispatcher, through `Shared::inbox`.
enum Submission {
    NewJob {
        job: u64,
        sink: Box<dyn Sink>,
    },
    Chunks(Group),
    /// No more chunks will come for this job.
    InputDone {
        job: u64,
    },
    /// Abandon this job.
    Cancel {
        job: u64,
    },
}

impl Inner {
    fn new(processes: usize) -> Result<Inner> {
        let wake = dispatcher::wake_fd()?;
        Ok(Inner {
            shared: Mutex::new(Shared {
                phase: Phase::Running,
                inbox: Vec::new(),
                sleeping: false,
                pids: Vec::new(),
                finished: false,
                next_job: 1,
                broken: None,
                dispatcher: std::thread::current().id(),
            }),
            changed: Condvar::new(),
            wake,
            processes,
            owner: sys::pid::pid(),
        })
    }

    /// Accepts no more work (a terminated pool stays terminated).
    fn close(&self) {
        let mut shared = lock(&self.shared);
        if shared.phase == Phase::Running {
            shared.phase = Phase::Closed;
        }
        self.wake_locked(&mut shared);
    }

    fn set_phase(&self, phase: Phase) {
        let mut shared = lock(&self.shared);
        shared.phase = phase;
        self.wake_locked(&mut shared);
    }

    /// Registers a job; fails unless the pool accepts work.
    fn new_job(&self, sink: Box<dyn Sink>) -> Result<u64> {
        if sys::pid::pid() != self.owner {
            // A forked child holds a copy of the pool, but not its thread or workers.
            return Err(Error::ProcessState("a pool can only be used by the process that made it"));
        }
        let mut shared = lock(&self.shared);
        if let Some(broken) = &shared.broken {
            return Err(broken.error());
        }
        if shared.phase != Phase::Running {
            return Err(Error::Closed("pool"));
        }
        let job = shared.next_job;
        shared.next_job += 1;
        // No wake-up: the job's first chunks (or its end) follow at once and wake the
        // dispatcher; one wake-up per `apply` instead of two.
        shared.inbox.push(Submission::NewJob { job, sink });
        Ok(job)
    }

    /// Hands submissions to the dispatcher (after the pool ended they are dropped, which
    /// completes their jobs with an error).
    fn submit(&self, subs: Vec<Submission>) {
        let mut shared = lock(&self.shared);
        if shared.finished {
            return;
        }
        shared.inbox.extend(subs);
        self.wake_locked(&mut shared);
    }

    fn wake_locked(&self, shared: &mut Shared) {
        if shared.sleeping {
            shared.sleeping = false;
            dispatcher::wake(&self.wake);
        }
    }
}

thread_local! {
    /// On a pool's dispatcher thread: that pool's id (0 elsewhere).
    static DISPATCHER_OF: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

/// Identifies a pool (the address of its shared state).
fn pool_id(inner: &Arc<Inner>) -> usize {
    Arc::as_ptr(inner) as usize
}

/// Whether this thread is the dispatcher of pool `pool`: waiting there for one of the
/// pool's results (from a callback) could never end.
fn on_dispatcher_of(pool: usize) -> bool {
    DISPATCHER_OF.with(|d| d.get() == pool)
}

/// The error of a wait for a result from the pool's own dispatcher thread.
const CALLBACK_WAIT: &str =
    "a pool callback cannot wait for a result of its own pool (it runs on the thread that \
     delivers them)";
