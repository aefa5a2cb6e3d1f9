//! What a caller holds while the pool works: [`AsyncResult`] (one value, or all the values
//! of a `map`) and [`IMapIterator`] (one result per item, taken lazily), and the sinks
//! through which the dispatcher feeds them.
//!
//! The dispatcher knows a job only as a [`Sink`] (type-erased over the value type): it
//! hands each chunk's outcomes, still encoded, to the job's sink on its own thread. A
//! [`CollectSink`] decodes them into the values of an [`AsyncResult`] (in input order) and
//! runs its callbacks; a [`StreamSink`] queues them for an [`IMapIterator`]. The caller's
//! thread waits on a condition variable; the dispatcher's thread never waits for a result
//! of its own pool ([`CALLBACK_WAIT`]).

use std::collections::{BTreeMap, VecDeque};
use std::fmt;
use std::marker::PhantomData;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use serde::de::DeserializeOwned;
use serde::Serialize;

use super::chunks::{ChunkEncoder, FnRef};
use super::wire::{Outcome, Outcomes, ST_OK};
use super::{
    on_dispatcher_of, pool_id, Inner, Pool, Submission, CALLBACK_WAIT, IMAP_BYTES_MAX,
    IMAP_ITEMS_MAX, WINDOW_MAX,
};
use crate::codec::decode_item;
use crate::error::{Error, Result};
use crate::sync_util::{lock, wait_deadline};
use crate::sys;

// --------------------------------------------------------------------------------------
// AsyncResult

/// The pending result of [`Pool::apply_async`] or [`Pool::map_async`] (Python's
/// `AsyncResult`).
///
/// ```
/// use std::time::Duration;
/// let pool = multiproc::pool::Pool::new(1)?;
/// let r = pool.apply_async(|x: u32| x + 1, 41)?;
/// r.wait_timeout(Duration::from_secs(30))?;
/// assert!(r.ready());
/// assert!(r.successful()?);
/// assert_eq!(r.try_get()?, 42);
/// # Ok::<(), multiproc::Error>(())
/// ```
pub struct AsyncResult<T> {
    pub(super) cell: Arc<Cell<T>>,
}

impl<T> AsyncResult<T> {
    /// Waits for the result as long as it takes and returns it: the value, or the task's
    /// error (a worker that dies gives an error, never a hang). The value is moved out: a
    /// second successful `get` returns [`Error::ProcessState`], and so does a call from a
    /// callback of the same pool (which would wait for ever).
    ///
    /// ```
    /// let pool = multiproc::pool::Pool::new(1)?;
    /// let r = pool.apply_async(|x: u8| x * 2, 21)?;
    /// assert_eq!(r.get()?, 42);
    /// assert!(matches!(r.get(), Err(multiproc::Error::ProcessState(_))));
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn get(&self) -> Result<T> {
        self.get_until(None, Duration::MAX)
    }

    /// [`get`](Self::get), waiting at most `timeout`: [`Error::Timeout`] then, and the
    /// result stays pending.
    ///
    /// ```
    /// use std::time::Duration;
    /// use multiproc::Error;
    /// let pool = multiproc::pool::Pool::new(1)?;
    /// let slow = pool.apply_async(|_: ()| std::thread::sleep(Duration::from_millis(300)), ())?;
    /// assert!(matches!(slow.get_timeout(Duration::from_millis(1)), Err(Error::Timeout(_))));
    /// slow.get_timeout(Duration::from_secs(30))?;
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn get_timeout(&self, timeout: Duration) -> Result<T> {
        self.get_until(crate::deadline::after(timeout), timeout)
    }

    /// The result if it is ready now ([`Error::Timeout`] otherwise, and it stays pending).
    ///
    /// ```
    /// use std::time::Duration;
    /// let pool = multiproc::pool::Pool::new(1)?;
    /// let r = pool.apply_async(|_: ()| std::thread::sleep(Duration::from_millis(200)), ())?;
    /// assert!(matches!(r.try_get(), Err(multiproc::Error::WouldBlock)));
    /// r.wait()?;
    /// r.try_get()?;
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn try_get(&self) -> Result<T> {
        self.get_timeout(Duration::ZERO).map_err(Error::not_waiting)
    }

    fn get_until(&self, deadline: Option<Instant>, timeout: Duration) -> Result<T> {
        let mut state = self.cell.wait(deadline);
        if !state.ready {
            if on_dispatcher_of(self.cell.pool) {
                return Err(Error::ProcessState(CALLBACK_WAIT));
            }
            return Err(Error::Timeout(timeout));
        }
        state
            .outcome
            .take()
            .unwrap_or(Err(Error::ProcessState("the result was already taken by an earlier get()")))
    }

    /// Waits until the result is ready (the task ended, one way or the other), without
    /// taking it. [`Error::ProcessState`] from a callback of the same pool, which would
    /// wait for ever.
    ///
    /// ```
    /// let pool = multiproc::pool::Pool::new(1)?;
    /// let r = pool.apply_async(|x: u8| x, 1)?;
    /// r.wait()?;
    /// assert!(r.ready());
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn wait(&self) -> Result<()> {
        self.wait_until(None, Duration::MAX)
    }

    /// [`wait`](Self::wait), at most `timeout`: [`Error::Timeout`] if the result is not
    /// ready by then.
    ///
    /// ```
    /// use std::time::Duration;
    /// let pool = multiproc::pool::Pool::new(1)?;
    /// let r = pool.apply_async(|_: ()| std::thread::sleep(Duration::from_millis(200)), ())?;
    /// assert!(matches!(r.wait_timeout(Duration::ZERO), Err(multiproc::Error::Timeout(_))));
    /// r.wait_timeout(Duration::from_secs(30))?;
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn wait_timeout(&self, timeout: Duration) -> Result<()> {
        self.wait_until(crate::deadline::after(timeout), timeout)
    }

    fn wait_until(&self, deadline: Option<Instant>, timeout: Duration) -> Result<()> {
        if self.cell.wait(deadline).ready {
            Ok(())
        } else if on_dispatcher_of(self.cell.pool) {
            Err(Error::ProcessState(CALLBACK_WAIT))
        } else {
            Err(Error::Timeout(timeout))
        }
    }

    /// Whether the result is ready (the task ended, one way or the other).
    ///
    /// ```
    /// let pool = multiproc::pool::Pool::new(1)?;
    /// let r = pool.apply_async(|x: u8| x, 1)?;
    /// r.wait()?;
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
    /// let pool = multiproc::pool::Pool::new(1)?;
    /// let r = pool.apply_async(|_: ()| -> u8 { panic!("no") }, ())?;
    /// r.wait()?;
    /// assert!(!r.successful()?);
    /// assert!(r.get().unwrap_err().to_string().contains("no"));
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
pub(super) struct Cell<T> {
    state: Mutex<CellState<T>>,
    cond: Condvar,
    /// The pool (see [`pool_id`]), so that its own thread never waits for it.
    pool: usize,
}

/// The part of a [`Cell`] behind its mutex.
struct CellState<T> {
    ready: bool,
    success: bool,
    outcome: Option<Result<T>>,
}

impl<T> Cell<T> {
    pub(super) fn new(pool: usize) -> Cell<T> {
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

    fn wait(&self, deadline: Option<Instant>) -> MutexGuard<'_, CellState<T>> {
        let mut state = lock(&self.state);
        while !state.ready && !on_dispatcher_of(self.pool) {
            state = match wait_deadline(&self.cond, state, deadline) {
                Ok(state) => state,
                Err(state) => return state,
            };
        }
        state
    }
}

/// Python's `callback`: given the job's value.
type SuccessCallback<T> = Box<dyn FnOnce(&T) + Send>;
/// Python's `error_callback`: given the job's error.
type ErrorCallback = Box<dyn FnOnce(&Error) + Send>;

/// Python's `callback` and `error_callback`.
pub(super) struct Callbacks<T> {
    success: Option<SuccessCallback<T>>,
    error: Option<ErrorCallback>,
}

impl<T> Callbacks<T> {
    pub(super) fn none() -> Callbacks<T> {
        Callbacks { success: None, error: None }
    }

    pub(super) fn new(
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
/// let pool = multiproc::pool::Pool::new(2)?;
/// let mut it = pool.imap(|x: i32| 10 / x, [5, 0, 2])?;
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
    pub(super) fn start(
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
            // An item that cannot be encoded fails alone: the chunk so far goes, a new one
            // starts after it.
            let filled = encoder.fill_chunk(input, self.chunksize, |index, e| {
                failures.push((index, e));
                Ok::<(), std::convert::Infallible>(())
            });
            let Ok(more) = filled;
            exhausted = !more;
            self.taken = encoder.next_index();
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
    /// let pool = multiproc::pool::Pool::new(1)?;
    /// let mut it = pool.imap(|ms: u64| std::thread::sleep(Duration::from_millis(ms)), [300])?;
    /// assert!(matches!(it.next_timeout(Duration::from_millis(1)), Some(Err(Error::Timeout(_)))));
    /// assert!(it.next_timeout(Duration::from_secs(30)).unwrap().is_ok());
    /// assert!(it.next_timeout(Duration::from_secs(30)).is_none());
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn next_timeout(&mut self, timeout: Duration) -> Option<Result<R>> {
        self.next_until(crate::deadline::after(timeout), timeout)
    }

    /// The next result if it is there now: [`next_timeout`](Self::next_timeout) with
    /// [`Duration::ZERO`] (`Some(Err(`[`Error::Timeout`]`))` if it is not).
    ///
    /// ```
    /// use std::time::Duration;
    /// let pool = multiproc::pool::Pool::new(1)?;
    /// let mut it = pool.imap(|ms: u64| std::thread::sleep(Duration::from_millis(ms)), [300])?;
    /// assert!(matches!(it.try_next(), Some(Err(multiproc::Error::Timeout(_)))));
    /// assert!(it.next().unwrap().is_ok());
    /// assert!(it.try_next().is_none());
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn try_next(&mut self) -> Option<Result<R>> {
        self.next_timeout(Duration::ZERO)
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
            state = match wait_deadline(&self.stream.cond, state, deadline) {
                Ok(state) => state,
                Err(mut state) => {
                    state.waiting = false;
                    return Some(Err(Error::Timeout(timeout)));
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

/// The part of a [`Stream`] behind its mutex.
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
// Sinks: how the dispatcher feeds the results

/// Where the dispatcher delivers a job's results (type-erased over the value type).
pub(super) trait Sink: Send {
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
pub(super) struct CollectSink<R, T> {
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
    /// A sink for a job of `expected` items whose values become `finish(values)` in `cell`.
    pub(super) fn new(
        cell: Arc<Cell<T>>,
        expected: usize,
        finish: fn(Vec<R>) -> T,
        callbacks: Callbacks<T>,
    ) -> CollectSink<R, T> {
        CollectSink {
            cell,
            submitted: 0,
            expected,
            in_order: Vec::new(),
            parts: BTreeMap::new(),
            spare: Vec::new(),
            finish,
            callbacks,
            done: false,
        }
    }

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

impl<R: DeserializeOwned + Send + 'static, T: Send> Sink for CollectSink<R, T> {
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

impl<R: DeserializeOwned + Send + 'static> Sink for StreamSink<R> {
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
