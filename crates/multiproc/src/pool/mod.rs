//! Pools of worker processes: [`Pool`] (Python's `multiprocessing.Pool`), [`AsyncResult`]
//! and [`IMapIterator`].
//!
//! | Python | multiproc |
//! |---|---|
//! | `Pool(processes)` | [`Pool::new`] |
//! | `Pool(processes, initializer, initargs, maxtasksperchild, context)` | [`Pool::builder`] |
//! | `apply(f, args)` | [`Pool::apply`] |
//! | `apply_async(f, args, callback=, error_callback=)` | [`Pool::apply_async`], [`Pool::apply_async_with`] |
//! | `map(f, iterable, chunksize)`, `map_async(…)` | [`Pool::map`], [`Pool::map_async`], [`Pool::map_async_with`] |
//! | `starmap(f, iterable)`, `starmap_async(…)` | [`Pool::starmap`], [`Pool::starmap_async`] |
//! | `imap(f, iterable, chunksize)`, `imap_unordered(…)` | [`Pool::imap`], [`Pool::imap_unordered`] |
//! | `close()`, `terminate()`, `join()` | [`Pool::close`], [`Pool::terminate`], [`Pool::join`] |
//! | `with Pool() as p:` (terminates on exit) | dropping the [`Pool`] |
//! | `AsyncResult.get(timeout)`, `wait`, `ready`, `successful` | [`AsyncResult::get`], [`AsyncResult::wait`], [`AsyncResult::ready`], [`AsyncResult::successful`] |
//!
//! ```
//! use multiproc::pool::Pool;
//!
//! fn square(x: u64) -> u64 {
//!     x * x
//! }
//!
//! let pool = Pool::new(Some(2))?;
//! assert_eq!(pool.map(square, 0..5, None)?, [0, 1, 4, 9, 16]);
//! assert_eq!(pool.apply(square, 12)?, 144);
//! let squares: Vec<u64> = pool.imap(square, 0..3, 1)?.collect::<Result<_, _>>()?;
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

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::fmt;
use std::marker::PhantomData;
use std::ops::Range;
use std::os::fd::{AsFd, OwnedFd};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use rustix::event::{PollFd, PollFlags};
use rustix::io::Errno;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::codec::Codec;
use crate::connection::{poll_until, Connection};
use crate::context::{self, StartMethod};
use crate::error::{Error, Result};
use crate::process::{ChildOutcome, Process};
use crate::synchronize::Segment;
use crate::{reduction, sys};

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
/// let pool = Pool::new(Some(2))?;
/// let cubes = pool.map(cube, [1, 2, 3], None)?;
/// assert_eq!(cubes, [1, 8, 27]);
/// pool.close();
/// pool.join(None)?;
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
    /// A pool of `processes` workers (`None`: one per CPU this process may use,
    /// [`process_cpu_count`](crate::process_cpu_count)).
    ///
    /// Returns once the first worker is started (an error if it cannot be); the others
    /// start in the background while the first already takes tasks.
    ///
    /// ```
    /// let pool = multiproc::pool::Pool::new(None)?;
    /// assert_eq!(pool.processes(), multiproc::process_cpu_count());
    /// assert!(multiproc::pool::Pool::new(Some(0)).is_err());
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn new(processes: Option<usize>) -> Result<Pool> {
        let mut builder = Pool::builder();
        builder.processes = processes;
        builder.build()
    }

    /// Options beyond the number of workers: initializer, `maxtasksperchild`, start method.
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
    /// let pool = multiproc::pool::Pool::new(Some(3))?;
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
    /// let pool = multiproc::pool::Pool::new(Some(2))?;
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
    /// [`AsyncResult::get`] with a timeout.
    ///
    /// ```
    /// let pool = multiproc::pool::Pool::new(Some(1))?;
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
        self.apply_async(f, args)?.get(None)
    }

    /// Runs `f(args)` in a worker; the value arrives in the returned [`AsyncResult`]
    /// (Python's `apply_async`).
    ///
    /// ```
    /// use std::time::Duration;
    /// let pool = multiproc::pool::Pool::new(Some(2))?;
    /// let r = pool.apply_async(|s: String| s.len(), "four".to_string())?;
    /// assert_eq!(r.get(Some(Duration::from_secs(30)))?, 4);
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
    /// let pool = multiproc::pool::Pool::new(Some(1))?;
    /// let (tx, rx) = mpsc::channel();
    /// let tx2 = tx.clone();
    /// pool.apply_async_with(
    ///     |x: u32| x * 10,
    ///     4,
    ///     move |v: &u32| tx.send(format!("got {v}")).unwrap(),
    ///     move |e: &multiproc::Error| tx2.send(format!("failed: {e}")).unwrap(),
    /// )?
    /// .wait(None);
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
    /// The items are cut into chunks of `chunksize` (`None`: Python's rule,
    /// `ceil(len / (4 × processes))`); a chunk is what a worker receives at once. If a task
    /// fails, `map` returns the first error that arrives.
    ///
    /// It waits as long as the tasks take (a worker that dies gives an error, never a
    /// hang); for a deadline, use [`map_async`](Self::map_async) and [`AsyncResult::get`]
    /// with a timeout.
    ///
    /// ```
    /// let pool = multiproc::pool::Pool::new(Some(2))?;
    /// let lengths = pool.map(|s: String| s.len(), ["a", "bb", "ccc"].map(String::from), None)?;
    /// assert_eq!(lengths, [1, 2, 3]);
    /// assert_eq!(pool.map(|x: u32| x + 1, 0..1000, Some(7))?.len(), 1000);
    /// assert!(pool.map(|x: u32| x, [1], Some(0)).is_err());
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn map<A, R>(
        &self,
        f: fn(A) -> R,
        iterable: impl IntoIterator<Item = A>,
        chunksize: Option<usize>,
    ) -> Result<Vec<R>>
    where
        A: Serialize + DeserializeOwned,
        R: Serialize + DeserializeOwned + Send + 'static,
    {
        self.map_async(f, iterable, chunksize)?.get(None)
    }

    /// [`map`](Self::map) without waiting (Python's `map_async`). The items are encoded
    /// before this returns; encoding errors are returned here.
    ///
    /// ```
    /// let pool = multiproc::pool::Pool::new(Some(2))?;
    /// let r = pool.map_async(|x: i32| -x, vec![1, 2, 3], None)?;
    /// assert_eq!(r.get(None)?, [-1, -2, -3]);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn map_async<A, R>(
        &self,
        f: fn(A) -> R,
        iterable: impl IntoIterator<Item = A>,
        chunksize: Option<usize>,
    ) -> Result<AsyncResult<Vec<R>>>
    where
        A: Serialize + DeserializeOwned,
        R: Serialize + DeserializeOwned + Send + 'static,
    {
        self.submit_collect(f, iterable, chunksize, identity, Callbacks::none())
    }

    /// [`map_async`](Self::map_async) with Python's `callback` (given all the values) and
    /// `error_callback` (given the first error); see
    /// [`apply_async_with`](Self::apply_async_with) for where they run.
    ///
    /// ```
    /// use std::sync::mpsc;
    /// let pool = multiproc::pool::Pool::new(Some(2))?;
    /// let (tx, rx) = mpsc::channel();
    /// let r = pool.map_async_with(
    ///     |x: u64| x * 2,
    ///     0..4,
    ///     None,
    ///     move |values: &Vec<u64>| tx.send(values.iter().sum::<u64>()).unwrap(),
    ///     |_e: &multiproc::Error| {},
    /// )?;
    /// assert_eq!(r.get(None)?, [0, 2, 4, 6]);
    /// assert_eq!(rx.recv().unwrap(), 12);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn map_async_with<A, R>(
        &self,
        f: fn(A) -> R,
        iterable: impl IntoIterator<Item = A>,
        chunksize: Option<usize>,
        callback: impl FnOnce(&Vec<R>) + Send + 'static,
        error_callback: impl FnOnce(&Error) + Send + 'static,
    ) -> Result<AsyncResult<Vec<R>>>
    where
        A: Serialize + DeserializeOwned,
        R: Serialize + DeserializeOwned + Send + 'static,
    {
        let callbacks = Callbacks::new(callback, error_callback);
        self.submit_collect(f, iterable, chunksize, identity, callbacks)
    }

    /// Python's `starmap`: the items are argument tuples and `f` takes a tuple. In Rust
    /// this is [`map`](Self::map) with tuple items; the name is kept for Python users.
    ///
    /// ```
    /// let pool = multiproc::pool::Pool::new(Some(2))?;
    /// let powers = pool.starmap(|(b, e): (u64, u32)| b.pow(e), [(2, 3), (3, 2)], None)?;
    /// assert_eq!(powers, [8, 9]);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn starmap<A, R>(
        &self,
        f: fn(A) -> R,
        iterable: impl IntoIterator<Item = A>,
        chunksize: Option<usize>,
    ) -> Result<Vec<R>>
    where
        A: Serialize + DeserializeOwned,
        R: Serialize + DeserializeOwned + Send + 'static,
    {
        self.map(f, iterable, chunksize)
    }

    /// Python's `starmap_async`: [`map_async`](Self::map_async) with tuple items.
    ///
    /// ```
    /// let pool = multiproc::pool::Pool::new(Some(2))?;
    /// let r = pool.starmap_async(|(a, b): (i32, i32)| a * b, vec![(2, 5), (3, 3)], None)?;
    /// assert_eq!(r.get(None)?, [10, 9]);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn starmap_async<A, R>(
        &self,
        f: fn(A) -> R,
        iterable: impl IntoIterator<Item = A>,
        chunksize: Option<usize>,
    ) -> Result<AsyncResult<Vec<R>>>
    where
        A: Serialize + DeserializeOwned,
        R: Serialize + DeserializeOwned + Send + 'static,
    {
        self.map_async(f, iterable, chunksize)
    }

    /// A lazy [`map`](Self::map): an iterator of each item's result, in input order
    /// (Python's `imap`). Each item yields `Ok(value)` or that task's own error.
    ///
    /// A first window of input is taken at once (the work starts), more as results are
    /// consumed: only a bounded window of items is ever in flight, so the input may be
    /// endless. `chunksize` items travel together (Python's default is 1; larger chunks cut
    /// overhead for tiny tasks).
    ///
    /// ```
    /// let pool = multiproc::pool::Pool::new(Some(2))?;
    /// // An endless input: only what is consumed (plus a bounded window) is computed.
    /// let first: Vec<u64> = pool
    ///     .imap(|x: u64| x * x, 0.., 4)?
    ///     .take(5)
    ///     .collect::<Result<_, _>>()?;
    /// assert_eq!(first, [0, 1, 4, 9, 16]);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn imap<A, R, I>(
        &self,
        f: fn(A) -> R,
        iterable: I,
        chunksize: usize,
    ) -> Result<IMapIterator<R, I::IntoIter>>
    where
        I: IntoIterator<Item = A>,
        A: Serialize + DeserializeOwned,
        R: Serialize + DeserializeOwned + Send + 'static,
    {
        IMapIterator::start(self, f, iterable.into_iter(), chunksize, true)
    }

    /// Like [`imap`](Self::imap), but results come in the order they are ready (Python's
    /// `imap_unordered`).
    ///
    /// ```
    /// let pool = multiproc::pool::Pool::new(Some(2))?;
    /// let mut v: Vec<u32> = pool
    ///     .imap_unordered(|x: u32| x + 100, 0..10, 1)?
    ///     .collect::<Result<_, _>>()?;
    /// v.sort();
    /// assert_eq!(v, (100..110).collect::<Vec<_>>());
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn imap_unordered<A, R, I>(
        &self,
        f: fn(A) -> R,
        iterable: I,
        chunksize: usize,
    ) -> Result<IMapIterator<R, I::IntoIter>>
    where
        I: IntoIterator<Item = A>,
        A: Serialize + DeserializeOwned,
        R: Serialize + DeserializeOwned + Send + 'static,
    {
        IMapIterator::start(self, f, iterable.into_iter(), chunksize, false)
    }

    /// Accepts no new work; the workers exit once the submitted work is done (Python's
    /// `close`). [`IMapIterator`]s already created keep working until consumed or dropped.
    ///
    /// ```
    /// let pool = multiproc::pool::Pool::new(Some(1))?;
    /// let r = pool.apply_async(|x: u8| x, 7)?;
    /// pool.close();
    /// assert!(matches!(pool.apply(|x: u8| x, 1), Err(multiproc::Error::Closed(_))));
    /// assert_eq!(r.get(None)?, 7);
    /// pool.join(None)?;
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
    /// let pool = multiproc::pool::Pool::new(Some(1))?;
    /// let r = pool.apply_async(|_: ()| std::thread::sleep(Duration::from_secs(60)), ())?;
    /// pool.terminate();
    /// pool.join(None)?;
    /// assert!(matches!(r.get(None), Err(multiproc::Error::Closed(_))));
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn terminate(&self) {
        self.inner.set_phase(Phase::Terminated);
    }

    /// Waits until the workers have exited, at most `timeout` (`None`: as long as it
    /// takes); call [`close`](Self::close) or [`terminate`](Self::terminate) first
    /// (Python's `join`). After `close`, this waits for the submitted work, including
    /// [`IMapIterator`]s not yet consumed or dropped.
    ///
    /// ```
    /// use std::time::Duration;
    /// let pool = multiproc::pool::Pool::new(Some(2))?;
    /// assert!(pool.join(Some(Duration::ZERO)).is_err()); // neither closed nor terminated
    /// pool.close();
    /// pool.join(Some(Duration::from_secs(30)))?;
    /// assert!(pool.pids().is_empty());
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn join(&self, timeout: Option<Duration>) -> Result<()> {
        let deadline = crate::deadline::within(timeout);
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
                shared = match deadline {
                    None => self.inner.changed.wait(shared).unwrap_or_else(|p| p.into_inner()),
                    Some(d) => {
                        let left = d.saturating_duration_since(Instant::now());
                        if left.is_zero() {
                            return Err(Error::Timeout(timeout.unwrap_or_default()));
                        }
                        self.inner
                            .changed
                            .wait_timeout(shared, left)
                            .unwrap_or_else(|p| p.into_inner())
                            .0
                    }
                };
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
        items: impl Iterator<Item = A>,
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
        let sink = CollectSink {
            cell: cell.clone(),
            submitted: 0,
            expected: len,
            in_order: Vec::new(),
            parts: BTreeMap::new(),
            spare: Vec::new(),
            finish,
            callbacks,
            done: false,
        };
        let job = self.inner.new_job(Box::new(sink))?;
        // If encoding fails or the input iterator panics, the job must not stay open.
        let mut guard = CancelOnDrop { inner: &self.inner, job: Some(job) };
        let mut encoder = ChunkEncoder::new(job, func, 0);
        let mut group_limit = 1usize;
        let mut items = items.peekable();
        while items.peek().is_some() {
            for item in items.by_ref().take(chunksize) {
                encoder.push(&item)?;
            }
            encoder.end_chunk();
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
        let _ = self.join(Some(TERMINATE_GRACE * 10));
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
    /// assert_eq!(pool.map(|x: u8| x * 2, [1, 2], None)?, [2, 4]);
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
// AsyncResult

/// The pending result of [`Pool::apply_async`] or [`Pool::map_async`] (Python's
/// `AsyncResult`).
///
/// ```
/// use std::time::Duration;
/// let pool = multiproc::pool::Pool::new(Some(1))?;
/// let r = pool.apply_async(|x: u32| x + 1, 41)?;
/// assert!(r.wait(Some(Duration::from_secs(30))));
/// assert!(r.ready());
/// assert!(r.successful()?);
/// assert_eq!(r.get(Some(Duration::ZERO))?, 42);
/// # Ok::<(), multiproc::Error>(())
/// ```
pub struct AsyncResult<T> {
    cell: Arc<Cell<T>>,
}

impl<T> AsyncResult<T> {
    /// Waits for the result, at most `timeout` (`None`: as long as it takes), and returns
    /// it: the value, or the task's error. On timeout, [`Error::Timeout`] and the result
    /// stays pending. The value is moved out: a second successful `get` returns
    /// [`Error::ProcessState`].
    ///
    /// ```
    /// use std::time::Duration;
    /// use multiproc::Error;
    /// let pool = multiproc::pool::Pool::new(Some(1))?;
    /// let slow = pool.apply_async(|_: ()| std::thread::sleep(Duration::from_millis(300)), ())?;
    /// assert!(matches!(slow.get(Some(Duration::from_millis(1))), Err(Error::Timeout(_))));
    /// slow.get(None)?;
    /// assert!(matches!(slow.get(None), Err(Error::ProcessState(_))));
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn get(&self, timeout: Option<Duration>) -> Result<T> {
        let mut state = self.cell.wait(timeout);
        if !state.ready {
            if on_dispatcher_of(self.cell.pool) {
                return Err(Error::ProcessState(CALLBACK_WAIT));
            }
            return Err(Error::Timeout(timeout.unwrap_or_default()));
        }
        state
            .outcome
            .take()
            .unwrap_or(Err(Error::ProcessState("the result was already taken by an earlier get()")))
    }

    /// Waits until the result is ready, at most `timeout`; returns whether it is.
    ///
    /// ```
    /// use std::time::Duration;
    /// let pool = multiproc::pool::Pool::new(Some(1))?;
    /// let r = pool.apply_async(|_: ()| std::thread::sleep(Duration::from_millis(200)), ())?;
    /// assert!(!r.wait(Some(Duration::ZERO)));
    /// assert!(r.wait(None));
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn wait(&self, timeout: Option<Duration>) -> bool {
        self.cell.wait(timeout).ready
    }

    /// Whether the result is ready (the task ended, one way or the other).
    ///
    /// ```
    /// let pool = multiproc::pool::Pool::new(Some(1))?;
    /// let r = pool.apply_async(|x: u8| x, 1)?;
    /// r.wait(None);
    /// assert!(r.ready());
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn ready(&self) -> bool {
        lock(&self.cell.state).ready
    }

    /// Whether the task succeeded; [`Error::ProcessState`] while it is not ready (Python
    /// raises `ValueError`).
    ///
    /// ```
    /// let pool = multiproc::pool::Pool::new(Some(1))?;
    /// let r = pool.apply_async(|_: ()| -> u8 { panic!("no") }, ())?;
    /// r.wait(None);
    /// assert!(!r.successful()?);
    /// assert!(r.get(None).unwrap_err().to_string().contains("no"));
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn successful(&self) -> Result<bool> {
        let state = lock(&self.cell.state);
        if state.ready {
            Ok(state.success)
        } else {
            Err(Error::ProcessState("the result is not ready"))
        }
    }
}

impl<T> fmt::Debug for AsyncResult<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = lock(&self.cell.state);
        f.debug_struct("AsyncResult")
            .field("ready", &state.ready)
            .field("successful", &(state.ready && state.success))
            .finish()
    }
}

/// Where one [`AsyncResult`]'s outcome lands.
struct Cell<T> {
    state: Mutex<CellState<T>>,
    cond: Condvar,
    /// The pool (see [`pool_id`]), so that its own thread never waits for it.
    pool: usize,
}

struct CellState<T> {
    ready: bool,
    success: bool,
    outcome: Option<Result<T>>,
}

impl<T> Cell<T> {
    fn new(pool: usize) -> Cell<T> {
        Cell {
            state: Mutex::new(CellState { ready: false, success: false, outcome: None }),
            cond: Condvar::new(),
            pool,
        }
    }

    fn set(&self, outcome: Result<T>) {
        let mut state = lock(&self.state);
        if state.ready {
            return;
        }
        state.ready = true;
        state.success = outcome.is_ok();
        state.outcome = Some(outcome);
        drop(state);
        self.cond.notify_all();
    }

    fn wait(&self, timeout: Option<Duration>) -> MutexGuard<'_, CellState<T>> {
        let deadline = crate::deadline::within(timeout);
        let mut state = lock(&self.state);
        while !state.ready && !on_dispatcher_of(self.pool) {
            state = match deadline {
                None => self.cond.wait(state).unwrap_or_else(|p| p.into_inner()),
                Some(d) => {
                    let left = d.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        break;
                    }
                    self.cond.wait_timeout(state, left).unwrap_or_else(|p| p.into_inner()).0
                }
            };
        }
        state
    }
}

type SuccessCallback<T> = Box<dyn FnOnce(&T) + Send>;
type ErrorCallback = Box<dyn FnOnce(&Error) + Send>;

/// Python's `callback` and `error_callback`.
struct Callbacks<T> {
    success: Option<SuccessCallback<T>>,
    error: Option<ErrorCallback>,
}

impl<T> Callbacks<T> {
    fn none() -> Callbacks<T> {
        Callbacks { success: None, error: None }
    }

    fn new(
        success: impl FnOnce(&T) + Send + 'static,
        error: impl FnOnce(&Error) + Send + 'static,
    ) -> Callbacks<T> {
        Callbacks { success: Some(Box::new(success)), error: Some(Box::new(error)) }
    }
}

// --------------------------------------------------------------------------------------
// IMapIterator

/// The iterator of [`Pool::imap`] and [`Pool::imap_unordered`] (Python's `IMapIterator`
/// and `IMapUnorderedIterator`): one `Result` per input item.
///
/// It takes a first window of input when it is created (the work starts at once) and more
/// as results are consumed, so a bounded window of items is in flight.
/// [`next`](Iterator::next) waits as long as the next result takes (a dead worker gives
/// an error, never a hang); [`next_timeout`](Self::next_timeout) gives up after a while.
/// Dropping it abandons the items not yet delivered.
///
/// ```
/// let pool = multiproc::pool::Pool::new(Some(2))?;
/// let mut it = pool.imap(|x: i32| 10 / x, [5, 0, 2], 1)?;
/// assert_eq!(it.next().unwrap()?, 2);
/// assert!(it.next().unwrap().is_err()); // division by zero panicked in the worker
/// assert_eq!(it.next().unwrap()?, 5);
/// assert!(it.next().is_none());
/// # Ok::<(), multiproc::Error>(())
/// ```
pub struct IMapIterator<R, I: Iterator> {
    inner: Arc<Inner>,
    stream: Arc<Stream<R>>,
    job: u64,
    func: FnRef,
    input: Option<I>,
    chunksize: usize,
    /// Items taken from the input so far (the next item's index).
    taken: usize,
    /// Items handed to the caller so far.
    yielded: usize,
    /// Encoded bytes so far, to estimate the bytes in flight.
    encoded_bytes: usize,
    window_items: usize,
    ordered: bool,
    /// Set once the iterator has returned `None` (or a pool-wide error).
    finished: bool,
}

impl<R, I, A> IMapIterator<R, I>
where
    I: Iterator<Item = A>,
    A: Serialize + DeserializeOwned,
    R: Serialize + DeserializeOwned + Send + 'static,
{
    fn start(
        pool: &Pool,
        f: fn(A) -> R,
        input: I,
        chunksize: usize,
        ordered: bool,
    ) -> Result<IMapIterator<R, I>> {
        if chunksize == 0 {
            return Err(Error::InvalidArgument("chunksize must be at least 1".into()));
        }
        let chunksize = chunksize.min(u32::MAX as usize);
        let func = FnRef::task(f)?;
        let stream = Arc::new(Stream {
            state: Mutex::new(StreamState {
                ordered: BTreeMap::new(),
                unordered: VecDeque::new(),
                failure: None,
                waiting: false,
            }),
            cond: Condvar::new(),
            pool: pool_id(&pool.inner),
        });
        let sink = StreamSink { stream: stream.clone(), ordered, _r: PhantomData };
        let job = pool.inner.new_job(Box::new(sink))?;
        // Enough chunks to keep every worker's pipeline full (bounded in items), and at
        // least two chunks per worker.
        let processes = pool.inner.processes;
        let window_items = processes
            .saturating_mul(WINDOW_MAX)
            .saturating_mul(chunksize)
            .min(IMAP_ITEMS_MAX)
            .max(processes.saturating_mul(2).saturating_mul(chunksize));
        let mut it = IMapIterator {
            inner: pool.inner.clone(),
            stream,
            job,
            func,
            input: Some(input),
            chunksize,
            taken: 0,
            yielded: 0,
            encoded_bytes: 0,
            window_items,
            ordered,
            finished: false,
        };
        // The work starts now, as in Python, not at the first `next`.
        it.top_up();
        Ok(it)
    }

    /// Takes more input while the items in flight are below the window (with some
    /// hysteresis, so that submissions come in batches).
    fn top_up(&mut self) {
        let Some(input) = self.input.as_mut() else { return };
        let avg_bytes = self.encoded_bytes.checked_div(self.taken).unwrap_or(0);
        let by_bytes = IMAP_BYTES_MAX.checked_div(avg_bytes).unwrap_or(usize::MAX);
        let window = self.window_items.min(by_bytes).max(self.chunksize);
        if self.taken - self.yielded > window / 2 {
            return;
        }
        let mut failures = Vec::new();
        let mut encoder = ChunkEncoder::new(self.job, self.func, self.taken);
        let mut exhausted = false;
        while self.taken - self.yielded < window && !exhausted {
            while (encoder.count as usize) < self.chunksize {
                let Some(item) = input.next() else {
                    exhausted = true;
                    break;
                };
                self.taken += 1;
                if let Err(e) = encoder.push(&item) {
                    // This item fails alone: the chunk so far goes, a new one starts after it.
                    failures.push((self.taken - 1, e));
                    encoder.skip();
                }
            }
            encoder.end_chunk();
        }
        let group = encoder.take_group();
        self.encoded_bytes += group.as_ref().map_or(0, |g| g.data.len());
        if !failures.is_empty() {
            let mut state = lock(&self.stream.state);
            for (index, e) in failures {
                if self.ordered {
                    state.ordered.insert(index, Err(e));
                } else {
                    state.unordered.push_back(Err(e));
                }
            }
        }
        let mut subs = Vec::with_capacity(2);
        if let Some(group) = group {
            subs.push(Submission::Chunks(group));
        }
        if exhausted {
            self.input = None;
            subs.push(Submission::InputDone { job: self.job });
        }
        if !subs.is_empty() {
            self.inner.submit(subs);
        }
    }

    /// The next result, waiting at most `timeout`: `None` at the end, `Some(Err(`
    /// [`Error::Timeout`]`))` if nothing arrived in time (the item stays pending), or the
    /// item's result. Python's `IMapIterator.next(timeout)`.
    ///
    /// ```
    /// use std::time::Duration;
    /// use multiproc::Error;
    /// let pool = multiproc::pool::Pool::new(Some(1))?;
    /// let mut it = pool.imap(|ms: u64| std::thread::sleep(Duration::from_millis(ms)), [300], 1)?;
    /// assert!(matches!(it.next_timeout(Duration::from_millis(1)), Some(Err(Error::Timeout(_)))));
    /// assert!(it.next_timeout(Duration::from_secs(30)).unwrap().is_ok());
    /// assert!(it.next_timeout(Duration::from_secs(30)).is_none());
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn next_timeout(&mut self, timeout: Duration) -> Option<Result<R>> {
        self.next_until(crate::deadline::after(timeout), timeout)
    }

    fn next_until(&mut self, deadline: Option<Instant>, timeout: Duration) -> Option<Result<R>> {
        if self.finished {
            return None;
        }
        self.top_up();
        if self.input.is_none() && self.yielded == self.taken {
            self.finished = true;
            return None;
        }
        let mut state = lock(&self.stream.state);
        loop {
            let next = if self.ordered {
                state.ordered.remove(&self.yielded)
            } else {
                state.unordered.pop_front()
            };
            if let Some(result) = next {
                state.waiting = false;
                drop(state);
                self.yielded += 1;
                return Some(result);
            }
            if let Some(e) = state.failure.take() {
                self.finished = true;
                return Some(Err(e));
            }
            if on_dispatcher_of(self.stream.pool) {
                return Some(Err(Error::ProcessState(CALLBACK_WAIT)));
            }
            state.waiting = true;
            state = match deadline {
                None => self.stream.cond.wait(state).unwrap_or_else(|p| p.into_inner()),
                Some(d) => {
                    let left = d.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        state.waiting = false;
                        return Some(Err(Error::Timeout(timeout)));
                    }
                    self.stream.cond.wait_timeout(state, left).unwrap_or_else(|p| p.into_inner()).0
                }
            };
        }
    }
}

impl<R, I, A> Iterator for IMapIterator<R, I>
where
    I: Iterator<Item = A>,
    A: Serialize + DeserializeOwned,
    R: Serialize + DeserializeOwned + Send + 'static,
{
    type Item = Result<R>;

    fn next(&mut self) -> Option<Result<R>> {
        self.next_until(None, Duration::ZERO)
    }
}

impl<R, I: Iterator> Drop for IMapIterator<R, I> {
    fn drop(&mut self) {
        if !(self.input.is_none() && self.yielded == self.taken) {
            self.inner.submit(vec![Submission::Cancel { job: self.job }]);
        }
    }
}

impl<R, I: Iterator> fmt::Debug for IMapIterator<R, I> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IMapIterator")
            .field("ordered", &self.ordered)
            .field("chunksize", &self.chunksize)
            .field("taken", &self.taken)
            .field("yielded", &self.yielded)
            .finish()
    }
}

/// Results on their way to an [`IMapIterator`].
struct Stream<R> {
    state: Mutex<StreamState<R>>,
    cond: Condvar,
    /// The pool (see [`pool_id`]), so that its own thread never waits for it.
    pool: usize,
}

struct StreamState<R> {
    /// `imap`: results by input index.
    ordered: BTreeMap<usize, Result<R>>,
    /// `imap_unordered`: results in arrival order.
    unordered: VecDeque<Result<R>>,
    /// A pool-wide failure (terminated, broken), reported once after the results.
    failure: Option<Error>,
    /// Whether the consumer waits (so that the dispatcher only notifies then).
    waiting: bool,
}

// --------------------------------------------------------------------------------------
// Jobs as the dispatcher sees them

/// One item's outcome as it arrives from a worker.
enum Outcome<'a> {
    /// The encoded value.
    Value(&'a [u8]),
    /// The task's error.
    Error(Error),
}

impl Outcome<'_> {
    fn decode<R: DeserializeOwned>(self) -> Result<R> {
        match self {
            Outcome::Value(bytes) => decode_item(bytes),
            Outcome::Error(e) => Err(e),
        }
    }
}

/// The outcomes of consecutive items, decoded lazily from a RESULT record, or one error.
enum Outcomes<'a> {
    Encoded { rd: Rd<'a>, left: u32, pid: i32 },
    One(Option<Error>),
}

impl<'a> Outcomes<'a> {
    /// The `count` items in the `bytes` that follow at `rd`; moves past them.
    fn take(rd: &mut Rd<'a>, count: u32, pid: i32) -> Option<Outcomes<'a>> {
        let bytes = rd.u64().and_then(|n| usize::try_from(n).ok())?;
        let items = Rd::new(rd.take(bytes)?);
        Some(Outcomes::Encoded { rd: items, left: count, pid })
    }

    fn len(&self) -> usize {
        match self {
            Outcomes::Encoded { left, .. } => *left as usize,
            Outcomes::One(e) => usize::from(e.is_some()),
        }
    }
}

impl<'a> Iterator for Outcomes<'a> {
    type Item = Outcome<'a>;

    fn next(&mut self) -> Option<Outcome<'a>> {
        match self {
            Outcomes::One(e) => e.take().map(Outcome::Error),
            Outcomes::Encoded { rd, left, pid } => {
                if *left == 0 {
                    return None;
                }
                *left -= 1;
                let Some((status, bytes)) = rd.item() else {
                    // Cannot happen with our own worker; never a panic or a short count.
                    return Some(Outcome::Error(Error::Protocol(
                        "a pool worker sent a malformed result".into(),
                    )));
                };
                Some(match status {
                    ST_OK => Outcome::Value(bytes),
                    ST_PANICKED => Outcome::Error(Error::ProcessFailed {
                        pid: *pid,
                        exitcode: 1,
                        message: format!("panicked: {}", String::from_utf8_lossy(bytes)),
                    }),
                    _ => Outcome::Error(Error::Codec(String::from_utf8_lossy(bytes).into())),
                })
            }
        }
    }
}

/// Decodes one value that fills `bytes` (postcard, as `Codec::Postcard`).
#[inline]
fn decode_item<T: DeserializeOwned>(bytes: &[u8]) -> Result<T> {
    let mut de = postcard::Deserializer::from_bytes(bytes);
    match T::deserialize(&mut de) {
        Ok(value) if de.finalize().is_ok_and(|rest| rest.is_empty()) => Ok(value),
        // The slow path gives the precise message (custom errors, trailing bytes).
        _ => decode_slow(bytes),
    }
}

#[cold]
fn decode_slow<T: DeserializeOwned>(bytes: &[u8]) -> Result<T> {
    Codec::Postcard.decode(bytes)
}

/// Where the dispatcher delivers a job's results (type-erased over the value type).
trait Sink: Send {
    /// `n` more items were submitted.
    fn add_items(&mut self, _n: usize) {}
    /// The outcomes of items `start..start + items.len()`. Returns `false` when the job
    /// has failed and wants nothing more.
    fn deliver(&mut self, start: usize, items: Outcomes<'_>) -> bool;
    /// Every item was delivered and no more will come.
    fn complete(&mut self);
    /// The job ends early: the pool was terminated or is broken.
    fn abort(&mut self, error: Error);
}

/// Collects a job's values in order, for [`AsyncResult`].
struct CollectSink<R, T> {
    cell: Arc<Cell<T>>,
    /// Items submitted (counted by the dispatcher as chunks arrive).
    submitted: usize,
    /// The number of items the input said it has: the capacity of `in_order`.
    expected: usize,
    /// The values of items `0..in_order.len()`.
    in_order: Vec<R>,
    /// Values that arrived ahead of a gap, by the index of their first item.
    parts: BTreeMap<usize, Vec<R>>,
    /// The buffer of a part already moved to `in_order`, for the next part.
    spare: Vec<R>,
    finish: fn(Vec<R>) -> T,
    callbacks: Callbacks<T>,
    done: bool,
}

impl<R: DeserializeOwned + Send, T: Send> CollectSink<R, T> {
    fn fail(&mut self, error: Error) {
        if self.done {
            return;
        }
        self.done = true;
        if let Some(cb) = self.callbacks.error.take() {
            let _ = catch_unwind(AssertUnwindSafe(|| cb(&error)));
        }
        self.callbacks.success = None;
        self.cell.set(Err(error));
    }
}

impl<R: DeserializeOwned + Send, T: Send> Sink for CollectSink<R, T> {
    fn add_items(&mut self, n: usize) {
        self.submitted += n;
    }

    fn deliver(&mut self, start: usize, items: Outcomes<'_>) -> bool {
        if self.done {
            return false;
        }
        // Results that continue the ones in order go straight to the end of `in_order`
        // (chunks mostly arrive in order); others wait in `parts`.
        let in_order = start == self.in_order.len();
        let mut parked = if in_order { Vec::new() } else { std::mem::take(&mut self.spare) };
        if in_order && self.in_order.capacity() == 0 {
            // All the values end up here: one allocation, no copies as it grows.
            self.in_order.reserve_exact(self.expected);
            if self.expected.saturating_mul(std::mem::size_of::<R>()) >= 4 << 20 {
                // Filled at once: a few huge pages instead of thousands of page faults.
                sys::mem::advise_huge_pages(&mut self.in_order);
            }
        }
        let values = if in_order { &mut self.in_order } else { &mut parked };
        values.reserve(items.len());
        let mut items = items;
        if let Outcomes::Encoded { rd, left, .. } = &mut items {
            // Values, as long as they come (the other outcomes go the general way below).
            while *left > 0 {
                let at = rd.pos;
                let Some((ST_OK, bytes)) = rd.item() else {
                    rd.pos = at;
                    break;
                };
                *left -= 1;
                match decode_item::<R>(bytes) {
                    Ok(v) => values.push(v),
                    Err(e) => {
                        self.fail(e);
                        return false;
                    }
                }
            }
        }
        for item in items {
            match item.decode::<R>() {
                Ok(v) => values.push(v),
                Err(e) => {
                    self.fail(e);
                    return false;
                }
            }
        }
        if in_order {
            while let Some(mut part) = self.parts.remove(&self.in_order.len()) {
                self.in_order.append(&mut part);
                if part.capacity() > self.spare.capacity() {
                    self.spare = part;
                }
            }
        } else {
            self.parts.insert(start, parked);
        }
        true
    }

    fn complete(&mut self) {
        if self.done {
            return;
        }
        if let Some(&start) = self.parts.keys().next() {
            let missing = self.in_order.len();
            self.fail(Error::Protocol(format!(
                "pool results for items {missing}..{start} are missing"
            )));
            return;
        }
        let all = std::mem::take(&mut self.in_order);
        if all.len() != self.submitted {
            self.fail(Error::Protocol(format!(
                "{} results for {} pool tasks",
                all.len(),
                self.submitted
            )));
            return;
        }
        self.done = true;
        let value = (self.finish)(all);
        if let Some(cb) = self.callbacks.success.take() {
            let _ = catch_unwind(AssertUnwindSafe(|| cb(&value)));
        }
        self.callbacks.error = None;
        self.cell.set(Ok(value));
    }

    fn abort(&mut self, error: Error) {
        self.fail(error);
    }
}

impl<R, T> Drop for CollectSink<R, T> {
    fn drop(&mut self) {
        // A job dropped without an outcome (cancelled, or the pool went away): never leave
        // a waiter hanging.
        if !self.done {
            self.cell.set(Err(Error::Closed("pool")));
        }
    }
}

/// Feeds an [`IMapIterator`].
struct StreamSink<R> {
    stream: Arc<Stream<R>>,
    ordered: bool,
    _r: PhantomData<fn() -> R>,
}

impl<R: DeserializeOwned + Send> Sink for StreamSink<R> {
    fn deliver(&mut self, start: usize, items: Outcomes<'_>) -> bool {
        let decoded: Vec<Result<R>> = items.map(Outcome::decode).collect();
        let mut state = lock(&self.stream.state);
        for (i, r) in decoded.into_iter().enumerate() {
            if self.ordered {
                state.ordered.insert(start + i, r);
            } else {
                state.unordered.push_back(r);
            }
        }
        if state.waiting {
            state.waiting = false;
            drop(state);
            self.stream.cond.notify_all();
        }
        true
    }

    fn complete(&mut self) {}

    fn abort(&mut self, error: Error) {
        let mut state = lock(&self.stream.state);
        state.failure = Some(error);
        drop(state);
        self.stream.cond.notify_all();
    }
}

impl<R> Drop for StreamSink<R> {
    fn drop(&mut self) {
        let mut state = lock(&self.stream.state);
        if state.failure.is_none() {
            state.failure = Some(Error::Closed("pool"));
        }
        drop(state);
        self.stream.cond.notify_all();
    }
}

// --------------------------------------------------------------------------------------
// Chunks

/// Names a function for any process running this executable image.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct FnRef {
    layout: isize,
    trampoline: isize,
    target: isize,
}

impl FnRef {
    /// A task function, run in batches by `sys::spawn::batch_trampoline`; an error for a
    /// function that workers could not find (one of another loaded object).
    fn task<A, R>(f: fn(A) -> R) -> Result<FnRef>
    where
        A: DeserializeOwned,
        R: Serialize,
    {
        let (layout, trampoline, target) =
            sys::spawn::batch_offsets_for(f).map_err(|e| Error::InvalidArgument(e.to_string()))?;
        Ok(FnRef { layout, trampoline, target })
    }

    /// An initializer, run once by `sys::spawn::trampoline` (which handles descriptors).
    fn initializer<A>(f: fn(A)) -> Result<FnRef>
    where
        A: DeserializeOwned,
    {
        let (layout, trampoline, target) =
            sys::spawn::offsets_for(f).map_err(|e| Error::InvalidArgument(e.to_string()))?;
        Ok(FnRef { layout, trampoline, target })
    }
}

/// Items of one job that travel to a worker together.
struct Chunk {
    job: u64,
    /// The index (in the job's input) of the first item.
    start: usize,
    count: u32,
    func: FnRef,
    /// The buffer the items were encoded into, shared with the chunks encoded with them.
    data: Arc<Vec<u8>>,
    /// Where the `count` items (each a header and postcard bytes) are in `data`.
    range: Range<usize>,
}

impl Chunk {
    fn items(&self) -> &[u8] {
        self.data.get(self.range.clone()).unwrap_or_default()
    }

    /// The byte ranges of the items (headers included) within [`items`](Self::items).
    fn item_ranges(&self) -> Vec<Range<usize>> {
        let mut ranges = Vec::with_capacity(self.count as usize);
        let mut rd = Rd::new(self.items());
        while !rd.done() {
            let start = rd.pos;
            if rd.item().is_none() {
                break;
            }
            ranges.push(start..rd.pos);
        }
        ranges
    }

    /// Items `from..to` (indices within the chunk) as a chunk of their own, sharing the
    /// buffer.
    fn slice(&self, ranges: &[Range<usize>], from: usize, to: usize) -> Option<Chunk> {
        if from >= to {
            return None;
        }
        let begin = self.range.start + ranges[from].start;
        let end = self.range.start + ranges[to - 1].end;
        Some(Chunk {
            job: self.job,
            start: self.start + from,
            count: (to - from) as u32,
            func: self.func,
            data: self.data.clone(),
            range: begin..end,
        })
    }
}

/// Chunks encoded together into one buffer and submitted together: what the dispatcher
/// queues. (A million one-item chunks are a thousand groups, not a million allocations.)
struct Group {
    job: u64,
    func: FnRef,
    data: Arc<Vec<u8>>,
    /// (first item's index, item count, byte range in `data`) of each chunk, in order.
    chunks: Vec<(usize, u32, Range<usize>)>,
    /// The first chunk not yet taken.
    next: usize,
}

impl Group {
    /// A group of one (a chunk going back to the queue).
    fn single(chunk: Chunk) -> Group {
        Group {
            job: chunk.job,
            func: chunk.func,
            data: chunk.data,
            chunks: vec![(chunk.start, chunk.count, chunk.range)],
            next: 0,
        }
    }

    /// The items of the next chunk.
    fn next_items(&self) -> Option<usize> {
        self.chunks.get(self.next).map(|&(_, count, _)| count as usize)
    }

    /// Takes the next chunk.
    fn pop(&mut self) -> Option<Chunk> {
        let (start, count, range) = self.chunks.get(self.next)?.clone();
        self.next += 1;
        Some(Chunk { job: self.job, start, count, func: self.func, data: self.data.clone(), range })
    }

    /// The items of the chunks not yet taken.
    fn items(&self) -> usize {
        self.chunks[self.next..].iter().map(|&(_, count, _)| count as usize).sum()
    }
}

/// Why a task argument could not be encoded.
#[cold]
fn argument_error(e: Error) -> Error {
    match e {
        Error::MessageTooLong { len, .. } => Error::InvalidArgument(format!(
            "a task argument of {len} bytes is too large for a pool (at most 4 GiB)"
        )),
        e => e,
    }
}

/// Encodes items into chunks, and chunks into groups.
struct ChunkEncoder {
    job: u64,
    func: FnRef,
    buf: Vec<u8>,
    chunks: Vec<(usize, u32, Range<usize>)>,
    /// The index of the current chunk's first item.
    start: usize,
    /// Where the current chunk starts in `buf`.
    chunk_at: usize,
    /// Items in the current chunk.
    count: u32,
    /// Whether the last item needed a long header.
    wide: bool,
}

impl ChunkEncoder {
    /// An encoder whose first item has index `start`.
    fn new(job: u64, func: FnRef, start: usize) -> ChunkEncoder {
        ChunkEncoder {
            job,
            func,
            buf: Vec::new(),
            chunks: Vec::new(),
            start,
            chunk_at: 0,
            count: 0,
            wide: WIDE.load(Ordering::Relaxed),
        }
    }

    /// Adds an item to the current chunk.
    #[inline(always)]
    fn push<A: Serialize>(&mut self, item: &A) -> Result<()> {
        encode_item(item, &mut self.buf, &mut self.wide).map_err(argument_error)?;
        self.count += 1;
        Ok(())
    }

    /// Ends the current chunk (if it has items).
    fn end_chunk(&mut self) {
        if self.count > 0 {
            self.chunks.push((self.start, self.count, self.chunk_at..self.buf.len()));
            self.start += self.count as usize;
            self.count = 0;
            self.chunk_at = self.buf.len();
        }
    }

    /// Ends the current chunk and leaves the next index out (an item that failed).
    fn skip(&mut self) {
        self.end_chunk();
        self.start += 1;
    }

    fn chunk_count(&self) -> usize {
        self.chunks.len()
    }

    fn bytes(&self) -> usize {
        self.buf.len()
    }

    /// The chunks ended so far, as a group (`None` if there are none).
    fn take_group(&mut self) -> Option<Group> {
        self.end_chunk();
        WIDE.store(self.wide, Ordering::Relaxed);
        if self.chunks.is_empty() {
            return None;
        }
        // The next group is likely about as big as this one.
        let next = Vec::with_capacity(self.buf.len() + self.buf.len() / 8);
        self.chunk_at = 0;
        Some(Group {
            job: self.job,
            func: self.func,
            data: Arc::new(std::mem::replace(&mut self.buf, next)),
            chunks: std::mem::take(&mut self.chunks),
            next: 0,
        })
    }
}

// --------------------------------------------------------------------------------------
// The state shared by the pool handle, iterators and the dispatcher

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

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Running,
    Closed,
    Terminated,
}

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
        let wake = rustix::event::eventfd(
            0,
            rustix::event::EventfdFlags::CLOEXEC | rustix::event::EventfdFlags::NONBLOCK,
        )?;
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
            let _ = rustix::io::write(&self.wake, &1u64.to_ne_bytes());
        }
    }
}

// --------------------------------------------------------------------------------------
// The dispatcher

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

const CALLBACK_WAIT: &str =
    "a pool callback cannot wait for a result of its own pool (it runs on the thread that \
     delivers them)";

struct Config {
    processes: usize,
    method: StartMethod,
    maxtasks: Option<u64>,
    init: Option<Initializer>,
}

/// The initializer, encoded once; its handles are duplicated for each worker.
#[derive(Clone)]
struct Initializer {
    func: FnRef,
    args: Vec<u8>,
    fds: Fds,
}

impl Initializer {
    fn new<I: Serialize + DeserializeOwned>(f: fn(I), args: &I) -> Result<Initializer> {
        let (encoded, fds) = reduction::export_handles(|| {
            let mut out = Vec::new();
            Codec::Postcard.encode_into(args, &mut out).map(|()| out)
        });
        Ok(Initializer { func: FnRef::initializer(f)?, args: encoded?, fds: Fds(Arc::new(fds)) })
    }
}

/// Descriptors that travel with a worker's arguments (an initializer's connections).
#[derive(Clone)]
struct Fds(Arc<Vec<OwnedFd>>);

impl Serialize for Fds {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        use serde::ser::{Error as _, SerializeSeq};
        let mut seq = s.serialize_seq(Some(self.0.len()))?;
        for fd in self.0.iter() {
            let index = reduction::export_fd(fd.as_fd(), "initializer argument")
                .map_err(S::Error::custom)?;
            seq.serialize_element(&index)?;
        }
        seq.end()
    }
}

impl<'de> Deserialize<'de> for Fds {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let indices = Vec::<u32>::deserialize(d)?;
        let fds = indices
            .into_iter()
            .map(|i| reduction::import_fd(i, "initializer argument"))
            .collect::<Result<Vec<_>>>()
            .map_err(crate::codec::de_error)?;
        Ok(Fds(Arc::new(fds)))
    }
}

/// A worker's progress word in shared memory: `(chunk sequence number << 32) | item
/// index` of what it is running, so that the parent knows which task a dead worker was
/// running.
#[derive(Clone)]
struct Progress(Arc<Segment>);

/// Tags the progress segment ("MPPW").
const PROGRESS_KIND: u32 = 0x4d50_5057;
/// Offset of the word in its segment (after the kind tag).
const PROGRESS_WORD: usize = 8;

impl Progress {
    fn new() -> Result<Progress> {
        Ok(Progress(Segment::new("pool-progress", PROGRESS_KIND, 64)?))
    }

    fn word(&self) -> &AtomicU64 {
        self.0.word64(PROGRESS_WORD)
    }
}

impl Serialize for Progress {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        use serde::ser::Error as _;
        self.0.export("pool progress").map_err(S::Error::custom)?.serialize(s)
    }
}

impl<'de> Deserialize<'de> for Progress {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let handle = reduction::Handle::deserialize(d)?;
        Segment::import(handle, "pool progress", PROGRESS_KIND, 64)
            .map(Progress)
            .map_err(crate::codec::de_error)
    }
}

/// What a worker process is started with.
#[derive(Serialize, Deserialize)]
struct WorkerBoot {
    /// The read end of the task pipe.
    tasks: Connection,
    /// The write end of the result pipe.
    results: Connection,
    progress: Progress,
    init: Option<(FnRef, Vec<u8>, Fds)>,
    /// Chunks after which the worker exits; 0 for no limit.
    maxtasks: u64,
}

/// A worker as the dispatcher sees it.
struct Worker {
    process: Process,
    pid: i32,
    /// The parent's end of the task pipe (non-blocking).
    tx: OwnedFd,
    /// The parent's end of the result pipe (non-blocking).
    rx: OwnedFd,
    /// Whether reading may still give data (no end of stream yet).
    readable: bool,
    /// Whether writing may still work (no broken pipe yet).
    writable: bool,
    progress: Progress,
    inbuf: Vec<u8>,
    /// What is queued for the task pipe, in order.
    out: VecDeque<Piece>,
    /// Bytes of `out`'s first piece already written.
    out_pos: usize,
    /// Bytes being added to `out` (sealed into a piece before anything else is queued).
    cur: Vec<u8>,
    /// An emptied piece's buffer, for the next one.
    spare: Vec<u8>,
    /// Chunks sent (or about to be) whose results have not arrived, in order.
    in_flight: VecDeque<(u32, Chunk)>,
    in_flight_bytes: usize,
    /// Items of the chunks in `in_flight`.
    in_flight_items: usize,
    next_seq: u32,
    /// Chunks assigned over the worker's life (for `maxtasksperchild`).
    assigned: u64,
    ready: bool,
    /// No more work for this worker (it was told to exit, or reached its task limit).
    retiring: bool,
    /// An EXIT message was queued for it.
    told_to_exit: bool,
    exited: bool,
}

/// Bytes queued for a worker's task pipe.
enum Piece {
    /// A frame header: its bytes and how many of them are used.
    Header([u8; 12], u8),
    /// Records and small chunks, copied.
    Own(Vec<u8>),
    /// A large chunk's items, written straight from the buffer they were encoded into.
    Shared(Arc<Vec<u8>>, Range<usize>),
}

/// Chunks at least this big are not copied into the task queue.
const SHARE_BYTES: usize = 16 * 1024;

impl Piece {
    fn bytes(&self) -> &[u8] {
        match self {
            Piece::Header(h, n) => &h[..usize::from(*n)],
            Piece::Own(v) => v,
            Piece::Shared(data, range) => data.get(range.clone()).unwrap_or_default(),
        }
    }
}

impl Worker {
    /// Queues the bytes gathered in `cur` as a piece.
    fn seal(&mut self) {
        if !self.cur.is_empty() {
            let next = std::mem::take(&mut self.spare);
            self.out.push_back(Piece::Own(std::mem::replace(&mut self.cur, next)));
        }
    }

    /// Starts a frame: returns where its header is in `out`.
    fn begin_frame(&mut self) -> usize {
        self.seal();
        self.out.push_back(Piece::Header([0; 12], 0));
        self.out.len() - 1
    }

    /// Ends the frame whose header is at `at`: fills in its length.
    fn end_frame(&mut self, at: usize) {
        self.seal();
        let len: usize = self.out.iter().skip(at + 1).map(|p| p.bytes().len()).sum();
        let mut header = [0u8; 12];
        let used = if len <= i32::MAX as usize {
            header[..4].copy_from_slice(&(len as i32).to_be_bytes());
            4
        } else {
            header[..4].copy_from_slice(&(-1i32).to_be_bytes());
            header[4..].copy_from_slice(&(len as u64).to_be_bytes());
            12
        };
        if let Some(piece) = self.out.get_mut(at) {
            *piece = Piece::Header(header, used);
        }
    }

    /// Queues a TASK record for `chunk`.
    fn push_task(&mut self, seq: u32, chunk: &Chunk) {
        encode_task(&mut self.cur, seq, chunk);
        if chunk.range.len() >= SHARE_BYTES {
            self.seal();
            self.out.push_back(Piece::Shared(chunk.data.clone(), chunk.range.clone()));
        } else {
            self.cur.extend_from_slice(chunk.items());
        }
    }

    /// Drops the first `n` bytes of `out` (written).
    fn advance(&mut self, mut n: usize) {
        while let Some(piece) = self.out.front() {
            let left = piece.bytes().len() - self.out_pos;
            if n < left {
                self.out_pos += n;
                return;
            }
            n -= left;
            self.out_pos = 0;
            if let Some(Piece::Own(mut v)) = self.out.pop_front() {
                if self.spare.capacity() == 0 && v.capacity() <= FLUSH_BYTES {
                    v.clear();
                    self.spare = v;
                }
            }
        }
    }
}

struct JobEntry {
    sink: Box<dyn Sink>,
    /// More chunks may come.
    open: bool,
    /// Items submitted whose outcome was not delivered yet.
    outstanding: usize,
}

struct Dispatcher {
    inner: Arc<Inner>,
    config: Config,
    workers: Vec<Worker>,
    jobs: HashMap<u64, JobEntry>,
    /// Chunks waiting for a worker, in groups.
    pending: VecDeque<Group>,
    /// Average time a worker spends on an item (exponentially weighted over chunks), once
    /// known.
    item_ns: Option<f64>,
    /// Workers that died before they were ready, in a row.
    start_failures: u32,
    /// When to try again to start a worker, after a failure to start one.
    retry_start_at: Option<Instant>,
    broken: Option<Broken>,
    inbox: Vec<Submission>,
    /// The phase the last [`absorb`](Self::absorb) saw: [`wait`](Self::wait) does not
    /// sleep once it changed (a `close` between the two would otherwise go unnoticed, as
    /// it wakes only a dispatcher already asleep).
    phase: Phase,
}

static WORKER_COUNTER: AtomicU32 = AtomicU32::new(0);

impl Dispatcher {
    fn new(inner: Arc<Inner>, config: Config) -> Dispatcher {
        Dispatcher {
            inner,
            config,
            workers: Vec::new(),
            jobs: HashMap::new(),
            pending: VecDeque::new(),
            item_ns: None,
            start_failures: 0,
            retry_start_at: None,
            broken: None,
            inbox: Vec::new(),
            phase: Phase::Running,
        }
    }

    fn thread_main(inner: Arc<Inner>, config: Config, started: mpsc::Sender<Result<()>>) {
        lock(&inner.shared).dispatcher = std::thread::current().id();
        DISPATCHER_OF.with(|d| d.set(pool_id(&inner)));
        let mut d = Dispatcher::new(inner, config);
        // The first worker starts before `Pool::new` returns (so that a pool that cannot
        // start a process says so); the others start in the background, while the first
        // already runs tasks.
        match d.start_worker() {
            Ok(w) => d.workers.push(w),
            Err(e) => {
                d.finish(Error::Closed("pool"));
                let _ = started.send(Err(e));
                return;
            }
        }
        d.publish_pids();
        let _ = started.send(Ok(()));
        let outcome = catch_unwind(AssertUnwindSafe(|| d.run()));
        if outcome.is_err() {
            // A bug in the dispatcher: never leave workers or waiters behind.
            d.kill_all();
        }
        d.finish(Error::Closed("pool"));
    }

    fn run(&mut self) {
        loop {
            let phase = self.absorb();
            if phase == Phase::Terminated {
                self.kill_all();
                return;
            }
            // Work goes out first, then a missing worker (if any) is started: starting one
            // takes a millisecond or so, during which the others already work.
            self.assign();
            for i in 0..self.workers.len() {
                self.write_some(i);
            }
            let more_wanted = self.keep_workers(phase);
            if !self.pending.is_empty() {
                self.assign();
                for i in 0..self.workers.len() {
                    self.write_some(i);
                }
            }
            if phase == Phase::Closed && self.jobs.is_empty() {
                self.pending.clear();
                if self.workers.iter().all(|w| w.in_flight.is_empty()) {
                    for i in 0..self.workers.len() {
                        self.retire(i);
                    }
                    if self.workers.is_empty() {
                        return;
                    }
                }
            }
            self.wait(more_wanted);
        }
    }

    /// Takes the submissions; returns the phase.
    fn absorb(&mut self) -> Phase {
        let phase = {
            let mut shared = lock(&self.inner.shared);
            std::mem::swap(&mut shared.inbox, &mut self.inbox);
            shared.phase
        };
        self.phase = phase;
        let mut inbox = std::mem::take(&mut self.inbox);
        for sub in inbox.drain(..) {
            match sub {
                Submission::NewJob { job, mut sink } => {
                    if let Some(broken) = &self.broken {
                        sink.abort(broken.error());
                    } else {
                        self.jobs.insert(job, JobEntry { sink, open: true, outstanding: 0 });
                    }
                }
                Submission::Chunks(group) => {
                    if let Some(entry) = self.jobs.get_mut(&group.job) {
                        let items = group.items();
                        entry.outstanding += items;
                        entry.sink.add_items(items);
                        self.pending.push_back(group);
                    }
                }
                Submission::InputDone { job } => {
                    if let Some(entry) = self.jobs.get_mut(&job) {
                        entry.open = false;
                    }
                    self.check_complete(job);
                }
                Submission::Cancel { job } => {
                    self.jobs.remove(&job);
                }
            }
        }
        self.inbox = inbox;
        phase
    }

    /// Keeps the pool at its size while there is (or may be) work: starts one missing
    /// worker per call (so that results are handled between two starts). Returns whether
    /// more are missing and can be started at once.
    fn keep_workers(&mut self, phase: Phase) -> bool {
        if self.broken.is_some() {
            return false;
        }
        let wanted = match phase {
            Phase::Running => self.config.processes,
            Phase::Closed if !self.jobs.is_empty() => self.config.processes,
            _ => 0,
        };
        let active = self.workers.iter().filter(|w| !w.retiring).count();
        if active >= wanted {
            return false;
        }
        if self.retry_start_at.is_some_and(|t| Instant::now() < t) {
            return false;
        }
        match self.start_worker() {
            Ok(w) => {
                self.workers.push(w);
                self.retry_start_at = None;
                self.publish_pids();
                active + 1 < wanted
            }
            Err(e) => {
                self.retry_start_at = Some(Instant::now() + Duration::from_millis(100));
                if self.workers.is_empty() {
                    self.start_failures += 1;
                    if self.start_failures >= START_FAILURES_MAX {
                        self.break_pool(Broken {
                            pid: 0,
                            exitcode: 1,
                            message: format!("the pool cannot start a worker: {e}"),
                        });
                    }
                }
                false
            }
        }
    }

    fn start_worker(&mut self) -> Result<Worker> {
        // Two pipes rather than a socket pair: a pipe can hold 1 MiB (a socket's buffer is
        // capped lower), so a large chunk or batch of results crosses in one piece instead
        // of in several hand-offs between two busy processes.
        let (task_rx, task_tx) = rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC)?;
        let (result_rx, result_tx) = rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC)?;
        for end in [&task_tx, &result_tx] {
            // The system may refuse (per-user pipe memory): then only speed suffers.
            let _ = rustix::pipe::fcntl_setpipe_size(end, PIPE_BYTES);
        }
        // The parent's ends never block: the dispatcher polls them.
        rustix::fs::fcntl_setfl(&task_tx, rustix::fs::OFlags::NONBLOCK)?;
        rustix::fs::fcntl_setfl(&result_rx, rustix::fs::OFlags::NONBLOCK)?;
        let progress = Progress::new()?;
        let boot = WorkerBoot {
            tasks: Connection::from_fd(task_rx),
            results: Connection::from_fd(result_tx),
            progress: progress.clone(),
            init: self.config.init.as_ref().map(|i| (i.func, i.args.clone(), i.fds.clone())),
            maxtasks: self.config.maxtasks.unwrap_or(0),
        };
        let n = WORKER_COUNTER.fetch_add(1, Ordering::Relaxed) + 1;
        let kind = match self.config.method {
            StartMethod::Fork => "Fork",
            _ => "Spawn",
        };
        let process = Process::new(worker_main, boot)
            .name(format!("{kind}PoolWorker-{n}"))
            .daemon(true)
            .start_method(self.config.method);
        process.start()?;
        let pid = process.pid().unwrap_or(0);
        Ok(Worker {
            process,
            pid,
            tx: task_tx,
            rx: result_rx,
            readable: true,
            writable: true,
            progress,
            inbuf: Vec::new(),
            out: VecDeque::new(),
            out_pos: 0,
            cur: Vec::new(),
            spare: Vec::new(),
            in_flight: VecDeque::new(),
            in_flight_bytes: 0,
            in_flight_items: 0,
            next_seq: 1,
            assigned: 0,
            ready: false,
            retiring: false,
            told_to_exit: false,
            exited: false,
        })
    }

    /// Publishes the pids of the workers that take work (not those on their way out).
    fn publish_pids(&self) {
        let pids = self.workers.iter().filter(|w| !w.retiring).map(|w| w.pid).collect();
        lock(&self.inner.shared).pids = pids;
    }

    /// Whether worker `w` should take one more chunk of `items` items. A worker holds at
    /// least two chunks (one to run, one to go on with while results travel), more while
    /// the work it holds is shorter than [`PIPELINE_NS`], and a chunk above
    /// [`SLOW_CHUNK_NS`] only when it has nothing else. Chunks are not handed out further
    /// ahead: one that waits here can still go to whichever worker is free first.
    fn has_room(&self, w: &Worker, items: usize) -> bool {
        if w.retiring || w.exited || !w.writable {
            return false;
        }
        let n = w.in_flight.len();
        if n == 0 {
            return true;
        }
        if n >= WINDOW_MAX || w.in_flight_bytes >= WORKER_BYTES_MAX {
            return false;
        }
        match self.item_ns {
            None => n < 2,
            Some(t) if t * items as f64 >= SLOW_CHUNK_NS => false,
            Some(t) => n < 2 || (w.in_flight_items as f64) * t < PIPELINE_NS,
        }
    }

    /// Gives pending chunks to the least loaded workers, up to the window.
    fn assign(&mut self) {
        if self.pending.is_empty() {
            return;
        }
        let maxtasks = self.config.maxtasks;
        // Per worker: the index in its output queue of the header of the frame being built.
        let mut frames: Vec<Option<usize>> = vec![None; self.workers.len()];
        let mut retired = false;
        loop {
            let next_items = loop {
                let Some(front) = self.pending.front() else { break None };
                if self.jobs.contains_key(&front.job) {
                    if let Some(items) = front.next_items() {
                        break Some(items);
                    }
                }
                // Exhausted, or its job is gone.
                self.pending.pop_front();
            };
            let Some(next_items) = next_items else { break };
            let mut best: Option<usize> = None;
            for (i, w) in self.workers.iter().enumerate() {
                if self.has_room(w, next_items)
                    && best.is_none_or(|b| w.in_flight.len() < self.workers[b].in_flight.len())
                {
                    best = Some(i);
                }
            }
            let Some(i) = best else { break };
            let Some(chunk) = self.pending.front_mut().and_then(Group::pop) else { break };
            let w = &mut self.workers[i];
            frames[i].get_or_insert_with(|| w.begin_frame());
            let seq = w.next_seq;
            w.next_seq = w.next_seq.wrapping_add(1).max(1);
            w.push_task(seq, &chunk);
            w.in_flight_bytes += chunk.range.len();
            w.in_flight_items += chunk.count as usize;
            w.in_flight.push_back((seq, chunk));
            w.assigned += 1;
            if maxtasks.is_some_and(|m| w.assigned >= m) {
                // The worker exits by itself after this chunk.
                w.retiring = true;
                retired = true;
            }
        }
        if retired {
            self.publish_pids();
        }
        for (i, frame) in frames.into_iter().enumerate() {
            if let Some(at) = frame {
                self.workers[i].end_frame(at);
            }
        }
    }

    /// Tells worker `i` to exit once it has done its work.
    fn retire(&mut self, i: usize) {
        let w = &mut self.workers[i];
        if w.told_to_exit || w.exited {
            return;
        }
        let at = w.begin_frame();
        w.cur.push(TAG_EXIT);
        w.end_frame(at);
        w.retiring = true;
        w.told_to_exit = true;
        self.write_some(i);
    }

    /// Writes as much of worker `i`'s output queue as its task pipe takes.
    fn write_some(&mut self, i: usize) {
        let w = &mut self.workers[i];
        while !w.out.is_empty() && w.writable {
            let mut slices = [std::io::IoSlice::new(&[]); 32];
            let mut n = 0;
            for (k, piece) in w.out.iter().take(slices.len()).enumerate() {
                let bytes = piece.bytes();
                slices[k] = std::io::IoSlice::new(if k == 0 { &bytes[w.out_pos..] } else { bytes });
                n = k + 1;
            }
            // A dead worker gives EPIPE (SIGPIPE is ignored, as in every Rust program and
            // in CPython).
            match rustix::io::writev(&w.tx, &slices[..n]) {
                Ok(written) => w.advance(written),
                Err(Errno::INTR) => continue,
                Err(Errno::AGAIN) => break,
                Err(_) => {
                    // The worker is gone; its pidfd will say so.
                    w.writable = false;
                    w.out.clear();
                    w.out_pos = 0;
                }
            }
        }
    }

    /// Sleeps in `poll` until a worker sends, dies or can take more bytes, or a
    /// submission arrives; then handles what happened.
    ///
    /// With `hurry`, only looks (a worker is still to be started).
    fn wait(&mut self, hurry: bool) {
        let mut timeout = self.retry_start_at.map(|t| t.saturating_duration_since(Instant::now()));
        if hurry {
            timeout = Some(Duration::ZERO);
        }
        {
            let mut shared = lock(&self.inner.shared);
            if !shared.inbox.is_empty() || shared.phase != self.phase {
                timeout = Some(Duration::ZERO);
            } else {
                shared.sleeping = true;
            }
        }
        // (worker index, what) for each descriptor polled after the eventfd.
        let mut slots: Vec<(usize, u8)> = Vec::with_capacity(self.workers.len() * 2);
        let ready: Vec<(usize, u8)> = {
            let mut fds = Vec::with_capacity(1 + self.workers.len() * 2);
            fds.push(PollFd::new(&self.inner.wake, PollFlags::IN));
            for (i, w) in self.workers.iter().enumerate() {
                if w.readable {
                    fds.push(PollFd::new(&w.rx, PollFlags::IN));
                    slots.push((i, SLOT_RESULTS));
                }
                if w.writable && !w.out.is_empty() {
                    fds.push(PollFd::new(&w.tx, PollFlags::OUT));
                    slots.push((i, SLOT_TASKS));
                }
                if let Some(sentinel) = w.process.sentinel() {
                    fds.push(PollFd::from_borrowed_fd(sentinel, PollFlags::IN));
                    slots.push((i, SLOT_SENTINEL));
                }
            }
            let deadline = crate::deadline::within(timeout);
            let _ = poll_until(&mut fds, deadline);
            fds[1..]
                .iter()
                .zip(&slots)
                .filter(|(fd, _)| !fd.revents().is_empty())
                .map(|(fd, &(i, what))| {
                    let r = fd.revents();
                    let bits = match what {
                        SLOT_SENTINEL => EV_EXITED,
                        SLOT_RESULTS if !r.is_empty() => EV_READ,
                        _ if r.intersects(PollFlags::OUT | PollFlags::ERR | PollFlags::HUP) => {
                            EV_WRITE
                        }
                        _ => 0,
                    };
                    (i, bits)
                })
                .collect()
        };
        {
            let mut shared = lock(&self.inner.shared);
            shared.sleeping = false;
        }
        let mut drain = [0u8; 8];
        let _ = rustix::io::read(&self.inner.wake, &mut drain);
        for &(i, bits) in &ready {
            if bits & EV_READ != 0 {
                self.read_worker(i);
            }
            if bits & EV_WRITE != 0 {
                self.write_some(i);
            }
        }
        for &(i, bits) in &ready {
            if bits & EV_EXITED != 0 {
                self.on_exit(i);
            }
        }
        if self.workers.iter().any(|w| w.exited) {
            self.workers.retain(|w| !w.exited);
            self.publish_pids();
        }
    }

    /// Reads what worker `i` sent and handles every complete message.
    fn read_worker(&mut self, i: usize) {
        let mut inbuf = std::mem::take(&mut self.workers[i].inbuf);
        loop {
            let w = &mut self.workers[i];
            if !w.readable {
                break;
            }
            // Room for the frame being received (its header says how big), or 256 KiB.
            let want = match frame_at(&inbuf) {
                Frame::Partial => match inbuf.get(..4).and_then(|b| b.try_into().ok()) {
                    Some(h) if i32::from_be_bytes(h) >= 0 => i32::from_be_bytes(h) as usize + 4,
                    _ => 0,
                },
                _ => 0,
            };
            let want = want.saturating_sub(inbuf.len()).clamp(64 * 1024, 64 << 20);
            if inbuf.capacity() - inbuf.len() < want {
                inbuf.reserve(want.max(256 * 1024));
            }
            match rustix::io::read(&w.rx, rustix::buffer::spare_capacity(&mut inbuf)) {
                Ok(0) => w.readable = false,
                Ok(_) => {}
                Err(Errno::INTR) => continue,
                Err(Errno::AGAIN) => break,
                Err(_) => w.readable = false,
            }
            // Handle complete frames as they come, so that memory stays bounded.
            let used = self.handle_frames(i, &inbuf);
            inbuf.drain(..used);
        }
        if inbuf.capacity() > 4 * FLUSH_BYTES && inbuf.len() < FLUSH_BYTES {
            inbuf.shrink_to(FLUSH_BYTES);
        }
        self.workers[i].inbuf = inbuf;
    }

    /// Handles the complete frames at the start of `buf`; returns the bytes they used.
    fn handle_frames(&mut self, i: usize, buf: &[u8]) -> usize {
        let mut used = 0;
        loop {
            let (header, len) = match frame_at(&buf[used..]) {
                Frame::Complete(header, len) => (header, len),
                Frame::Partial => return used,
                Frame::Bad => (0, usize::MAX),
            };
            let ok = len != usize::MAX && {
                let payload = &buf[used + header..used + header + len];
                used += header + len;
                self.handle_message(i, payload)
            };
            if !ok {
                // Garbage from our own worker: stop trusting it.
                eprintln!(
                    "multiproc: pool worker {} sent a malformed message",
                    self.workers[i].pid
                );
                let _ = self.workers[i].process.kill();
                self.workers[i].readable = false;
                return buf.len();
            }
        }
    }

    /// Handles one message from worker `i`; `false` if it is malformed.
    fn handle_message(&mut self, i: usize, payload: &[u8]) -> bool {
        let mut rd = Rd::new(payload);
        while !rd.done() {
            match rd.u8() {
                Some(TAG_READY) => {
                    self.workers[i].ready = true;
                    self.start_failures = 0;
                }
                Some(TAG_INIT_FAILED) => {
                    let Some(message) = rd.blob() else { return false };
                    let message = String::from_utf8_lossy(message).into_owned();
                    let w = &self.workers[i];
                    self.break_pool(Broken {
                        pid: w.pid,
                        exitcode: 1,
                        message: format!("the pool's initializer failed: {message}"),
                    });
                }
                Some(TAG_RESULT) => {
                    if !self.handle_result(i, &mut rd) {
                        return false;
                    }
                }
                _ => return false,
            }
        }
        true
    }

    fn handle_result(&mut self, i: usize, rd: &mut Rd<'_>) -> bool {
        let (Some(seq), Some(elapsed), Some(count)) = (rd.u32(), rd.u64(), rd.u32()) else {
            return false;
        };
        let w = &mut self.workers[i];
        let pid = w.pid;
        match w.in_flight.front() {
            Some((s, c)) if *s == seq && c.count == count => {}
            _ => return false,
        }
        let Some((_, chunk)) = w.in_flight.pop_front() else { return false };
        w.in_flight_bytes -= chunk.range.len();
        w.in_flight_items -= chunk.count as usize;
        let Some(items) = Outcomes::take(rd, count, pid) else { return false };
        let per_item = elapsed as f64 / f64::from(count.max(1));
        self.item_ns = Some(match self.item_ns {
            None => per_item,
            Some(t) => t * 0.75 + per_item * 0.25,
        });
        self.deliver(chunk.job, chunk.start, items);
        true
    }

    /// Delivers outcomes to a job; completes or drops the job as needed.
    fn deliver(&mut self, job: u64, start: usize, items: Outcomes<'_>) {
        let Some(entry) = self.jobs.get_mut(&job) else { return };
        entry.outstanding = entry.outstanding.saturating_sub(items.len());
        let keep =
            catch_unwind(AssertUnwindSafe(|| entry.sink.deliver(start, items))).unwrap_or(false);
        if !keep {
            self.jobs.remove(&job);
        } else {
            self.check_complete(job);
        }
    }

    fn check_complete(&mut self, job: u64) {
        if self.jobs.get(&job).is_some_and(|e| !e.open && e.outstanding == 0) {
            if let Some(mut entry) = self.jobs.remove(&job) {
                let _ = catch_unwind(AssertUnwindSafe(|| entry.sink.complete()));
            }
        }
    }

    /// Worker `i` has exited: collects what it sent, fails the task it was running,
    /// gives its other chunks to the pending queue, and reaps it.
    fn on_exit(&mut self, i: usize) {
        // Everything the worker wrote before it died is in the pipe by now.
        self.read_worker(i);
        let w = &mut self.workers[i];
        w.exited = true;
        let _ = w.process.join(Some(Duration::from_secs(5)));
        let exitcode = w.process.exitcode().unwrap_or(-(libc::SIGKILL));
        let pid = w.pid;
        let ready = w.ready;
        let progress = w.progress.word().load(Ordering::Acquire);
        let in_flight = std::mem::take(&mut w.in_flight);
        w.in_flight_bytes = 0;
        w.in_flight_items = 0;
        let (running_seq, running_item) = ((progress >> 32) as u32, progress as u32);
        let mut requeue: Vec<Chunk> = Vec::new();
        let mut guilty: Option<(u64, usize)> = None;
        for (seq, chunk) in in_flight {
            if seq != running_seq || running_item >= chunk.count {
                requeue.push(chunk);
                continue;
            }
            let ranges = chunk.item_ranges();
            let k = running_item as usize;
            if ranges.len() != chunk.count as usize {
                requeue.push(chunk);
                continue;
            }
            requeue.extend(chunk.slice(&ranges, 0, k));
            guilty = Some((chunk.job, chunk.start + k));
            requeue.extend(chunk.slice(&ranges, k + 1, ranges.len()));
        }
        for chunk in requeue.into_iter().rev() {
            self.pending.push_front(Group::single(chunk));
        }
        if let Some((job, index)) = guilty {
            let message = format!("the worker {}", describe_exit(exitcode));
            let error = Error::ProcessFailed { pid, exitcode, message };
            self.deliver(job, index, Outcomes::One(Some(error)));
        }
        if !ready {
            self.start_failures += 1;
            if self.start_failures >= START_FAILURES_MAX && self.broken.is_none() {
                self.break_pool(Broken {
                    pid,
                    exitcode,
                    message: format!(
                        "{START_FAILURES_MAX} pool workers in a row ended before they were \
                         ready; the last {}",
                        describe_exit(exitcode)
                    ),
                });
            }
        }
    }

    /// The pool cannot work: fail every job, refuse new ones.
    fn break_pool(&mut self, broken: Broken) {
        if self.broken.is_some() {
            return;
        }
        lock(&self.inner.shared).broken = Some(broken.clone());
        for (_, mut entry) in self.jobs.drain() {
            let _ = catch_unwind(AssertUnwindSafe(|| entry.sink.abort(broken.error())));
        }
        self.pending.clear();
        self.broken = Some(broken);
        for i in 0..self.workers.len() {
            self.retire(i);
        }
    }

    /// Stops every worker: `SIGTERM`, then `SIGKILL` after a grace period; reaps them.
    fn kill_all(&mut self) {
        for w in &self.workers {
            let _ = w.process.terminate();
        }
        let deadline = Instant::now() + TERMINATE_GRACE;
        for w in &self.workers {
            let left = deadline.saturating_duration_since(Instant::now());
            if w.process.join(Some(left)).is_err() {
                let _ = w.process.kill();
                let _ = w.process.join(Some(Duration::from_secs(10)));
            }
        }
        self.workers.clear();
        self.publish_pids();
    }

    /// Ends every job that is left with `error`, marks the pool finished.
    fn finish(&mut self, error: Error) {
        for (_, mut entry) in self.jobs.drain() {
            let e = match &self.broken {
                Some(b) => b.error(),
                None => clone_error(&error),
            };
            let _ = catch_unwind(AssertUnwindSafe(|| entry.sink.abort(e)));
        }
        self.pending.clear();
        let leftover = {
            let mut shared = lock(&self.inner.shared);
            shared.finished = true;
            shared.pids.clear();
            std::mem::take(&mut shared.inbox)
        };
        // Jobs submitted at the last moment: their sinks complete with an error on drop.
        for sub in leftover {
            if let Submission::NewJob { mut sink, .. } = sub {
                sink.abort(clone_error(&error));
            }
        }
        self.inner.changed.notify_all();
    }
}

const SLOT_RESULTS: u8 = 0;
const SLOT_TASKS: u8 = 1;
const SLOT_SENTINEL: u8 = 2;
const EV_READ: u8 = 1;
const EV_WRITE: u8 = 2;
const EV_EXITED: u8 = 4;

fn clone_error(e: &Error) -> Error {
    match e {
        Error::Closed(what) => Error::Closed(what),
        Error::ProcessFailed { pid, exitcode, message } => {
            Error::ProcessFailed { pid: *pid, exitcode: *exitcode, message: message.clone() }
        }
        other => Error::Protocol(other.to_string()),
    }
}

/// "was killed by SIGKILL while running this task", "exited with code 3 …".
fn describe_exit(exitcode: i32) -> String {
    if exitcode < 0 {
        format!("was killed by {} while running this task", signal_name(-exitcode))
    } else {
        format!("exited with code {exitcode} while running this task")
    }
}

fn signal_name(signal: i32) -> String {
    let name = match signal {
        libc::SIGHUP => "SIGHUP",
        libc::SIGINT => "SIGINT",
        libc::SIGQUIT => "SIGQUIT",
        libc::SIGILL => "SIGILL",
        libc::SIGTRAP => "SIGTRAP",
        libc::SIGABRT => "SIGABRT",
        libc::SIGBUS => "SIGBUS",
        libc::SIGFPE => "SIGFPE",
        libc::SIGKILL => "SIGKILL",
        libc::SIGUSR1 => "SIGUSR1",
        libc::SIGSEGV => "SIGSEGV",
        libc::SIGUSR2 => "SIGUSR2",
        libc::SIGPIPE => "SIGPIPE",
        libc::SIGALRM => "SIGALRM",
        libc::SIGTERM => "SIGTERM",
        libc::SIGXCPU => "SIGXCPU",
        libc::SIGXFSZ => "SIGXFSZ",
        libc::SIGSYS => "SIGSYS",
        _ => return format!("signal {signal}"),
    };
    name.to_string()
}

// --------------------------------------------------------------------------------------
// Messages
//
// Frames use CPython's framing (what `Connection` reads): a 4-byte big-endian length, or
// -1 and an 8-byte length. A frame holds records:
//
// parent → worker: TASK [seq u32][layout i64][trampoline i64][target i64][count u32]
//                       count × item (the arguments)
//                  EXIT
// worker → parent: READY
//                  INIT_FAILED [len u32][message]
//                  RESULT [seq u32][elapsed ns u64][count u32][items' bytes u64]
//                         count × item (the outcomes)
//
// An item is a header and bytes. A header byte below ITEM_LONG is the length of a value
// (most values are short: one byte of overhead per item); `ITEM_LONG | status` is
// followed by [len u32] and the bytes: a value (ST_OK) or a message.
//
// Integers in records are little-endian.

const TAG_TASK: u8 = 1;
const TAG_EXIT: u8 = 2;
const TAG_READY: u8 = 1;
const TAG_INIT_FAILED: u8 = 2;
const TAG_RESULT: u8 = 3;
const ST_OK: u8 = 0;
const ST_PANICKED: u8 = 1;
const ST_FAILED: u8 = 2;
/// An item header at or above this is `ITEM_LONG | status` and a 4-byte length.
const ITEM_LONG: u8 = 0x80;

/// What starts a buffer of received bytes.
enum Frame {
    /// A whole frame: (header size, payload length).
    Complete(usize, usize),
    /// Not all of it yet.
    Partial,
    /// A header that no frame has.
    Bad,
}

fn frame_at(buf: &[u8]) -> Frame {
    let Some(short) = buf.get(..4).and_then(|b| b.try_into().ok()).map(i32::from_be_bytes) else {
        return Frame::Partial;
    };
    let (header, len) = match short {
        n if n >= 0 => (4, n as u64),
        -1 => match buf.get(4..12).and_then(|b| b.try_into().ok()) {
            Some(b) => (12, u64::from_be_bytes(b)),
            None => return Frame::Partial,
        },
        _ => return Frame::Bad,
    };
    match usize::try_from(len) {
        Ok(len) if buf.len() - header >= len => Frame::Complete(header, len),
        Ok(_) => Frame::Partial,
        Err(_) => Frame::Bad,
    }
}

/// Appends a TASK record's fields; its items follow.
fn encode_task(out: &mut Vec<u8>, seq: u32, chunk: &Chunk) {
    out.push(TAG_TASK);
    out.extend_from_slice(&seq.to_le_bytes());
    out.extend_from_slice(&(chunk.func.layout as i64).to_le_bytes());
    out.extend_from_slice(&(chunk.func.trampoline as i64).to_le_bytes());
    out.extend_from_slice(&(chunk.func.target as i64).to_le_bytes());
    out.extend_from_slice(&chunk.count.to_le_bytes());
}

/// Reads little-endian integers and length-prefixed blobs; `None` past the end.
struct Rd<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Rd<'a> {
    fn new(buf: &'a [u8]) -> Rd<'a> {
        Rd { buf, pos: 0 }
    }

    #[inline]
    fn done(&self) -> bool {
        self.pos >= self.buf.len()
    }

    #[inline]
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let end = self.pos.checked_add(n)?;
        let bytes = self.buf.get(self.pos..end)?;
        self.pos = end;
        Some(bytes)
    }

    #[inline]
    fn u8(&mut self) -> Option<u8> {
        self.take(1).map(|b| b[0])
    }

    #[inline]
    fn u32(&mut self) -> Option<u32> {
        Some(u32::from_le_bytes(self.take(4)?.try_into().ok()?))
    }

    fn u64(&mut self) -> Option<u64> {
        Some(u64::from_le_bytes(self.take(8)?.try_into().ok()?))
    }

    fn i64(&mut self) -> Option<i64> {
        Some(i64::from_le_bytes(self.take(8)?.try_into().ok()?))
    }

    #[inline]
    fn blob(&mut self) -> Option<&'a [u8]> {
        let len = self.u32()? as usize;
        self.take(len)
    }

    /// One item (see the message formats): its status and bytes.
    #[inline]
    fn item(&mut self) -> Option<(u8, &'a [u8])> {
        let header = self.u8()?;
        if header < ITEM_LONG {
            return Some((ST_OK, self.take(usize::from(header))?));
        }
        Some((header & !ITEM_LONG, self.blob()?))
    }
}

// --------------------------------------------------------------------------------------
// The worker process

fn worker_main(boot: WorkerBoot) {
    let WorkerBoot { tasks, results: conn, progress, init, maxtasks } = boot;
    // Room for a batch of results (only what is written is ever mapped).
    let mut out = Vec::with_capacity(FLUSH_BYTES + FLUSH_BYTES / 4);
    if let Some((func, args, fds)) = init {
        if let Err(message) = run_initializer(func, &args, &fds) {
            let mut record = Vec::new();
            record.push(TAG_INIT_FAILED);
            push_blob(&mut record, message.as_bytes());
            let _ = conn.send_bytes(&record);
            return;
        }
    }
    if conn.send_bytes(&[TAG_READY]).is_err() {
        return;
    }
    let mut done: u64 = 0;
    let mut resolved: Option<(isize, isize, sys::spawn::BatchTrampoline)> = None;
    let mut inbuf = Vec::new();
    loop {
        let Some(len) = recv_frame(&tasks, &mut inbuf) else { return };
        let mut rd = Rd::new(&inbuf[..len]);
        // When the oldest result not yet sent was ready.
        let mut held_since: Option<Instant> = None;
        while !rd.done() {
            match rd.u8() {
                Some(TAG_TASK) => {
                    let Some(now) = run_chunk(&mut rd, &mut out, &progress, &mut resolved) else {
                        panic!("multiproc: malformed task message from the pool");
                    };
                    done += 1;
                    if maxtasks != 0 && done >= maxtasks {
                        flush(&conn, &mut out);
                        return;
                    }
                    let since = *held_since.get_or_insert(now);
                    if out.len() >= FLUSH_BYTES || now.duration_since(since) >= FLUSH_AFTER {
                        if !flush(&conn, &mut out) {
                            return;
                        }
                        held_since = None;
                    }
                }
                Some(TAG_EXIT) => {
                    flush(&conn, &mut out);
                    return;
                }
                _ => panic!("multiproc: malformed message from the pool"),
            }
        }
        if !flush(&conn, &mut out) {
            return;
        }
    }
}

/// Receives the next frame into `buf` (kept from frame to frame, so that its memory is
/// not mapped anew for each), returns its length; `None` once the pool is gone.
fn recv_frame(conn: &Connection, buf: &mut Vec<u8>) -> Option<usize> {
    if buf.len() > WORKER_BYTES_MAX + (1 << 20) {
        *buf = Vec::new();
    }
    if buf.is_empty() {
        buf.resize(64 * 1024, 0);
    }
    match conn.recv_bytes_into(buf) {
        Ok(len) => Some(len),
        Err(Error::BufferTooShort(message)) => {
            // The message, read whole, becomes the buffer.
            let len = message.len();
            *buf = message;
            Some(len)
        }
        Err(_) => None,
    }
}

/// Sends the results held in `out` as one frame; `false` if the pool is gone.
fn flush(conn: &Connection, out: &mut Vec<u8>) -> bool {
    if out.is_empty() {
        return true;
    }
    let sent = conn.send_bytes(out).is_ok();
    out.clear();
    if out.capacity() > 4 * FLUSH_BYTES {
        *out = Vec::with_capacity(64 * 1024);
    }
    sent
}

fn run_initializer(func: FnRef, args: &[u8], fds: &Fds) -> std::result::Result<(), String> {
    let Some(tramp) = sys::spawn::resolve_trampoline(func.layout, func.trampoline) else {
        return Err("the initializer comes from a different executable".into());
    };
    let handles = fds
        .0
        .iter()
        .map(|fd| fd.try_clone())
        .collect::<std::io::Result<Vec<_>>>()
        .map_err(|e| format!("cannot duplicate the initializer's handles: {e}"))?;
    match tramp(func.target, args, handles) {
        ChildOutcome::Returned(_) => Ok(()),
        ChildOutcome::Panicked(m) => Err(format!("panicked: {m}")),
        ChildOutcome::Failed(m) => Err(m),
    }
}

/// Runs one TASK record (after its tag) and appends its RESULT record to `out`; returns
/// the time it ended, or `None` if the record is malformed.
fn run_chunk(
    rd: &mut Rd<'_>,
    out: &mut Vec<u8>,
    progress: &Progress,
    resolved: &mut Option<(isize, isize, sys::spawn::BatchTrampoline)>,
) -> Option<Instant> {
    let seq = rd.u32()?;
    let layout = rd.i64()? as isize;
    let trampoline = rd.i64()? as isize;
    let target = rd.i64()? as isize;
    let count = rd.u32()?;
    let tramp = match *resolved {
        Some((l, t, f)) if l == layout && t == trampoline => Some(f),
        _ => {
            let f = sys::spawn::resolve_batch_trampoline(layout, trampoline);
            if let Some(f) = f {
                *resolved = Some((layout, trampoline, f));
            }
            f
        }
    };
    out.push(TAG_RESULT);
    out.extend_from_slice(&seq.to_le_bytes());
    let elapsed_at = out.len();
    out.extend_from_slice(&0u64.to_le_bytes());
    out.extend_from_slice(&count.to_le_bytes());
    let bytes_at = out.len();
    out.extend_from_slice(&0u64.to_le_bytes());
    let started = Instant::now();
    let tag = u64::from(seq) << 32;
    let word = progress.word();
    let mut batch = Batch { rd, count, tag, progress: word, out: &mut *out, malformed: false };
    match tramp {
        Some(f) => f(target, &mut batch),
        None => {
            for _ in 0..count {
                batch.rd.item()?;
                push_status(batch.out, ST_FAILED, b"the task comes from a different executable");
            }
        }
    }
    if batch.malformed {
        return None;
    }
    word.store(tag | u64::from(count), Ordering::Relaxed);
    let ended = Instant::now();
    let elapsed = ended.duration_since(started).as_nanos().min(u64::MAX as u128) as u64;
    out[elapsed_at..elapsed_at + 8].copy_from_slice(&elapsed.to_le_bytes());
    let bytes = (out.len() - bytes_at - 8) as u64;
    out[bytes_at..bytes_at + 8].copy_from_slice(&bytes.to_le_bytes());
    Some(ended)
}

/// The items of one chunk, as a worker runs them (see `sys::spawn::batch_trampoline`).
pub(crate) struct Batch<'a, 'b> {
    /// Positioned at the first item.
    rd: &'a mut Rd<'b>,
    count: u32,
    /// The chunk's sequence number, shifted: `tag | i` says "running item i".
    tag: u64,
    progress: &'a AtomicU64,
    /// Where each item's `[status][len][bytes]` goes.
    out: &'a mut Vec<u8>,
    malformed: bool,
}

/// Runs every item of `batch` through `f`, recording each outcome: the value, the panic
/// message, or why the arguments could not be decoded or the value encoded.
pub(crate) fn run_batch<A, R>(f: fn(A) -> R, batch: &mut Batch<'_, '_>)
where
    A: DeserializeOwned,
    R: Serialize,
{
    let mut wide = WIDE.load(Ordering::Relaxed);
    for i in 0..batch.count {
        // Relaxed is enough: the parent reads the word only after this process has died.
        batch.progress.store(batch.tag | u64::from(i), Ordering::Relaxed);
        let Some((ST_OK, bytes)) = batch.rd.item() else {
            batch.malformed = true;
            return;
        };
        let args = match decode_item::<A>(bytes) {
            Ok(args) => args,
            Err(e) => {
                let message = format!("the arguments could not be decoded: {e}");
                push_status(batch.out, ST_FAILED, message.as_bytes());
                continue;
            }
        };
        // A panic reaches the parent as this item's error; the worker prints nothing.
        match crate::process::catch_reported(|| f(args)) {
            Ok(value) => {
                if let Err(e) = encode_item(&value, batch.out, &mut wide) {
                    let message = format!("the result could not be encoded: {e}");
                    push_status(batch.out, ST_FAILED, message.as_bytes());
                }
            }
            Err(message) => push_status(batch.out, ST_PANICKED, message.as_bytes()),
        }
    }
    WIDE.store(wide, Ordering::Relaxed);
}

/// Whether the last item this process encoded (of a task, or a result) needed the long
/// header: the guess for the first item of the next chunk, so that a program whose items
/// are all large never moves them to make room for their headers.
static WIDE: AtomicBool = AtomicBool::new(false);

/// Appends one item, `[header][postcard encoding of value]` (see [`ITEM_LONG`]), to `out`,
/// encoding in place. `wide` says whether the previous item needed the long header; it
/// is updated for the next one, so that a run of large items is never moved to make room
/// for its header. On error `out` is left as it was.
#[inline(always)]
fn encode_item<T: Serialize + ?Sized>(value: &T, out: &mut Vec<u8>, wide: &mut bool) -> Result<()> {
    /// A postcard output that appends to a borrowed vector.
    struct Append<'a>(&'a mut Vec<u8>);
    impl postcard::ser_flavors::Flavor for Append<'_> {
        type Output = ();
        #[inline(always)]
        fn try_push(&mut self, byte: u8) -> postcard::Result<()> {
            self.0.push(byte);
            Ok(())
        }
        #[inline(always)]
        fn try_extend(&mut self, bytes: &[u8]) -> postcard::Result<()> {
            // Varints and small fields: copies of a length known at compile time are a
            // few stores, where a copy of any length is a call to memcpy.
            match *bytes {
                [a] => self.0.push(a),
                [a, b] => self.0.extend_from_slice(&[a, b]),
                [a, b, c] => self.0.extend_from_slice(&[a, b, c]),
                [a, b, c, d] => self.0.extend_from_slice(&[a, b, c, d]),
                _ => self.0.extend_from_slice(bytes),
            }
            Ok(())
        }
        #[inline]
        fn finalize(self) -> postcard::Result<()> {
            Ok(())
        }
    }
    let at = out.len();
    let header = if *wide {
        out.extend_from_slice(&[0; 5]);
        5
    } else {
        out.push(0);
        1
    };
    if let Err(e) = value.serialize(&mut postcard::Serializer { output: Append(out) }) {
        out.truncate(at);
        return Err(encode_error(e));
    }
    let len = out.len() - at - header;
    let Ok(len32) = u32::try_from(len) else {
        out.truncate(at);
        return Err(too_long(len));
    };
    *wide = len >= usize::from(ITEM_LONG);
    if header == 1 && len < usize::from(ITEM_LONG) {
        out[at] = len as u8;
        return Ok(());
    }
    let mut long = [0u8; 5];
    long[0] = ITEM_LONG | ST_OK;
    long[1..].copy_from_slice(&len32.to_le_bytes());
    if header == 1 {
        // A large item after small ones: make room for the long header.
        out.splice(at..at + 1, long);
    } else {
        out[at..at + 5].copy_from_slice(&long);
    }
    Ok(())
}

#[cold]
fn encode_error(e: postcard::Error) -> Error {
    Error::Codec(reduction::take_export_error().unwrap_or_else(|| e.to_string()))
}

#[cold]
fn too_long(len: usize) -> Error {
    Error::MessageTooLong { len: len as u64, limit: u32::MAX.into() }
}

/// Appends one item's outcome other than a value, `[ITEM_LONG | status][len u32][bytes]`
/// (a message, cut at 4 GiB).
fn push_status(out: &mut Vec<u8>, status: u8, bytes: &[u8]) {
    out.push(ITEM_LONG | status);
    push_blob(out, bytes);
}

/// Appends `[len u32][bytes]` (cut at 4 GiB).
fn push_blob(out: &mut Vec<u8>, bytes: &[u8]) {
    let bytes = &bytes[..bytes.len().min(u32::MAX as usize)];
    out.extend_from_slice(&(bytes.len() as u32).to_le_bytes());
    out.extend_from_slice(bytes);
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `close` wakes the dispatcher only if it is asleep. A `close` that lands after the
    /// dispatcher looked at the phase but before it went to sleep must still end its sleep:
    /// on a loaded machine that window is wide, and `join` then waited for ever.
    #[test]
    fn a_close_between_looking_and_sleeping_is_not_lost() {
        let inner = Arc::new(Inner::new(1).unwrap());
        let config =
            Config { processes: 1, method: StartMethod::Spawn, maxtasks: None, init: None };
        let mut d = Dispatcher::new(inner.clone(), config);
        assert_eq!(d.absorb(), Phase::Running);
        inner.close();
        let (done_tx, done_rx) = mpsc::channel();
        std::thread::spawn(move || {
            // No workers and no start to retry: only the eventfd can end this sleep.
            d.wait(false);
            let _ = done_tx.send(d.absorb());
        });
        let phase = done_rx
            .recv_timeout(Duration::from_secs(60))
            .expect("the dispatcher slept through a close() it had not seen");
        assert_eq!(phase, Phase::Closed);
    }
}
