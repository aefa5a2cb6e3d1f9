//! [`JoinableQueue`]: at-least-once delivery on a Redis stream with a consumer group.

use std::collections::VecDeque;
use std::marker::PhantomData;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde::de::DeserializeOwned;
use serde::Serialize;

use super::queue::{Core, QueueBuilder};
use super::scripts::{self, Entry};
use crate::error::{Error, PutError, Result};

/// The default visibility timeout: how long a delivered item may go without `task_done`.
const DEFAULT_VISIBILITY_TIMEOUT: Duration = Duration::from_secs(30);
/// The default most deliveries of one item.
const DEFAULT_MAX_DELIVERIES: u64 = 5;
/// How long dropping a handle may wait for the server.
const DROP_TIMEOUT: Duration = Duration::from_millis(200);
/// The shortest BLOCK between two looks for items to reclaim.
const MIN_RECLAIM_PERIOD: Duration = Duration::from_millis(10);

/// Python's `JoinableQueue` on Redis, at-least-once: an item stays pending (in the stream's
/// consumer group) from its `get` until its `task_done`. When a consumer dies, or takes
/// longer than the visibility timeout, its items are handed to another consumer; an item
/// delivered `max_deliveries` times whose timeout runs out once more moves to the
/// dead-letter stream ([`dead_letter_name`](Self::dead_letter_name)), with its original
/// stream id, its delivery count and the reason. `join` waits until every item put is done
/// or dead-lettered.
///
/// `task_done` acknowledges the oldest delivery this handle got and has not acknowledged
/// (Python's `task_done` is FIFO too): it is bound to that delivery, so a late `task_done`
/// for an item another consumer took over in the meantime does not count twice.
///
/// ```no_run
/// use multiproc::distributed::JoinableQueue;
///
/// let q = JoinableQueue::connect("redis://127.0.0.1:6379/0", "tasks")?;
/// q.put(21u64)?;
/// let n = q.get()?;
/// println!("{}", n * 2);
/// q.task_done()?;
/// q.join()?;
/// # Ok::<(), multiproc::Error>(())
/// ```
pub struct JoinableQueue<T> {
    core: Core,
    consumer: String,
    visibility_timeout: Duration,
    max_deliveries: u64,
    /// The ids delivered to this handle and not yet acknowledged, oldest first.
    delivered: Mutex<VecDeque<String>>,
    item: PhantomData<fn(T) -> T>,
}

impl<T> std::fmt::Debug for JoinableQueue<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JoinableQueue")
            .field("name", &self.core.keys.stream)
            .field("consumer", &self.consumer)
            .field("maxsize", &self.core.maxsize)
            .finish_non_exhaustive()
    }
}

impl<T> Clone for JoinableQueue<T> {
    /// Another handle on the same queue: a consumer of its own, with its own connection
    /// (opened on first use) and nothing delivered yet.
    fn clone(&self) -> JoinableQueue<T> {
        JoinableQueue {
            core: self.core.fresh(),
            consumer: consumer_name(),
            visibility_timeout: self.visibility_timeout,
            max_deliveries: self.max_deliveries,
            delivered: Mutex::new(VecDeque::new()),
            item: PhantomData,
        }
    }
}

impl<T> Drop for JoinableQueue<T> {
    /// Leaves the consumer group when nothing delivered to this handle is pending, so that
    /// handles that come and go do not pile up in it (best effort, briefly, and only over a
    /// connection already open). Pending items stay for another consumer to reclaim.
    fn drop(&mut self) {
        let idle = self.delivered.get_mut().is_ok_and(|d| d.is_empty())
            && self.core.carry.get_mut().is_ok_and(|c| c.is_empty());
        if !idle || !self.core.group_ready() || !self.core.link.is_connected() {
            return;
        }
        let _ = self.core.link.run(crate::deadline::after(DROP_TIMEOUT), |con| {
            scripts::DROP_CONSUMER_SCRIPT
                .key(&self.core.keys.stream)
                .arg(scripts::GROUP)
                .arg(&self.consumer)
                .invoke::<redis::Value>(con)
        });
    }
}

/// A consumer name unique to this handle: host, pid and 64 random bits.
fn consumer_name() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_default();
    let mut random = [0u8; 8];
    // Without randomness, the clock and a count of handles still tell handles apart.
    let nonce = match getrandom::fill(&mut random) {
        Ok(()) => u64::from_le_bytes(random),
        Err(_) => {
            static MADE: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos() as u64);
            nanos ^ MADE.fetch_add(1, std::sync::atomic::Ordering::Relaxed).rotate_left(32)
        }
    };
    format!("{host}-{}-{nonce:016x}", std::process::id())
}

/// Builds a [`JoinableQueue`] with settings other than the defaults.
///
/// ```no_run
/// use std::time::Duration;
/// let q = multiproc::distributed::JoinableQueue::<u8>::builder("redis://127.0.0.1/", "q")
///     .visibility_timeout(Duration::from_secs(60))
///     .max_deliveries(3)
///     .build()?;
/// # Ok::<(), multiproc::Error>(())
/// ```
#[derive(Debug)]
pub struct JoinableQueueBuilder<T> {
    queue: QueueBuilder<T>,
    visibility_timeout: Duration,
    max_deliveries: u64,
}

impl<T: Serialize + DeserializeOwned> JoinableQueueBuilder<T> {
    /// See [`QueueBuilder::maxsize`]: the bound counts items waiting for delivery.
    ///
    /// ```no_run
    /// let b = multiproc::distributed::JoinableQueue::<u8>::builder("redis://127.0.0.1/", "q").maxsize(2);
    /// ```
    pub fn maxsize(mut self, maxsize: usize) -> JoinableQueueBuilder<T> {
        self.queue = self.queue.maxsize(maxsize);
        self
    }

    /// See [`QueueBuilder::connect_timeout`].
    ///
    /// ```no_run
    /// use std::time::Duration;
    /// let b = multiproc::distributed::JoinableQueue::<u8>::builder("redis://127.0.0.1/", "q")
    ///     .connect_timeout(Duration::from_millis(500));
    /// ```
    pub fn connect_timeout(mut self, timeout: Duration) -> JoinableQueueBuilder<T> {
        self.queue = self.queue.connect_timeout(timeout);
        self
    }

    /// See [`QueueBuilder::io_timeout`].
    ///
    /// ```no_run
    /// use std::time::Duration;
    /// let b = multiproc::distributed::JoinableQueue::<u8>::builder("redis://127.0.0.1/", "q")
    ///     .io_timeout(Duration::from_secs(5));
    /// ```
    pub fn io_timeout(mut self, timeout: Duration) -> JoinableQueueBuilder<T> {
        self.queue = self.queue.io_timeout(timeout);
        self
    }

    /// See [`QueueBuilder::reconnect_for`].
    ///
    /// ```no_run
    /// use std::time::Duration;
    /// let b = multiproc::distributed::JoinableQueue::<u8>::builder("redis://127.0.0.1/", "q")
    ///     .reconnect_for(Duration::from_secs(60));
    /// ```
    pub fn reconnect_for(mut self, window: Duration) -> JoinableQueueBuilder<T> {
        self.queue = self.queue.reconnect_for(window);
        self
    }

    /// How long a delivered item may stay without `task_done` before another consumer may
    /// take it (default 30 s; at least 1 ms). Choose it longer than any task takes: a slow
    /// consumer's item is handed out again.
    ///
    /// ```no_run
    /// use std::time::Duration;
    /// let b = multiproc::distributed::JoinableQueue::<u8>::builder("redis://127.0.0.1/", "q")
    ///     .visibility_timeout(Duration::from_secs(120));
    /// ```
    pub fn visibility_timeout(mut self, timeout: Duration) -> JoinableQueueBuilder<T> {
        self.visibility_timeout = timeout.max(Duration::from_millis(1));
        self
    }

    /// How many times an item is delivered at most (default 5, at least 1); an item whose
    /// visibility timeout runs out after its last delivery moves to the dead-letter stream.
    ///
    /// ```no_run
    /// let b = multiproc::distributed::JoinableQueue::<u8>::builder("redis://127.0.0.1/", "q")
    ///     .max_deliveries(3);
    /// ```
    pub fn max_deliveries(mut self, n: u64) -> JoinableQueueBuilder<T> {
        self.max_deliveries = n.max(1);
        self
    }

    /// A [`JoinableQueue`] with these settings; [`Error::InvalidArgument`] for a malformed
    /// URL or an empty name. It connects on first use.
    ///
    /// ```no_run
    /// let q = multiproc::distributed::JoinableQueue::<u8>::builder("redis://127.0.0.1/", "q").build()?;
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn build(self) -> Result<JoinableQueue<T>> {
        Ok(JoinableQueue {
            core: Core::open(&self.queue, true)?,
            consumer: consumer_name(),
            visibility_timeout: self.visibility_timeout,
            max_deliveries: self.max_deliveries,
            delivered: Mutex::new(VecDeque::new()),
            item: PhantomData,
        })
    }
}

impl<T: Serialize + DeserializeOwned> JoinableQueue<T> {
    /// A handle on the joinable queue `name` at the Redis server of `url` (see
    /// [`Queue::connect`](super::Queue::connect)), with the default settings.
    ///
    /// ```no_run
    /// let q = multiproc::distributed::JoinableQueue::<u8>::connect("redis://127.0.0.1/", "q")?;
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn connect(url: &str, name: &str) -> Result<JoinableQueue<T>> {
        JoinableQueue::<T>::builder(url, name).build()
    }

    /// A builder for a handle with settings of its own (`maxsize`, visibility timeout,
    /// most deliveries, timeouts).
    ///
    /// ```no_run
    /// let q = multiproc::distributed::JoinableQueue::<u8>::builder("redis://127.0.0.1/", "q")
    ///     .max_deliveries(2)
    ///     .build()?;
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn builder(url: &str, name: &str) -> JoinableQueueBuilder<T> {
        JoinableQueueBuilder {
            queue: QueueBuilder::new(url, name),
            visibility_timeout: DEFAULT_VISIBILITY_TIMEOUT,
            max_deliveries: DEFAULT_MAX_DELIVERIES,
        }
    }

    /// Puts an item, waiting for room as long as it takes (see
    /// [`Queue::put`](super::Queue::put)); it counts as unfinished until its `task_done`.
    ///
    /// ```no_run
    /// let q = multiproc::distributed::JoinableQueue::connect("redis://127.0.0.1/", "q")?;
    /// q.put(1u8)?;
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn put(&self, item: T) -> std::result::Result<(), PutError<T>> {
        self.put_until(item, None)
    }

    /// Puts an item, waiting at most `timeout` for room; [`Error::Full`] with the item back.
    ///
    /// ```no_run
    /// use std::time::Duration;
    /// let q = multiproc::distributed::JoinableQueue::connect("redis://127.0.0.1/", "q")?;
    /// q.put_timeout(1u8, Duration::from_secs(1))?;
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn put_timeout(&self, item: T, timeout: Duration) -> std::result::Result<(), PutError<T>> {
        self.put_until(item, crate::deadline::after(timeout))
    }

    /// Puts an item if there is room now; [`Error::Full`] otherwise.
    ///
    /// ```no_run
    /// let q = multiproc::distributed::JoinableQueue::connect("redis://127.0.0.1/", "q")?;
    /// q.try_put(1u8)?;
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn try_put(&self, item: T) -> std::result::Result<(), PutError<T>> {
        self.put_timeout(item, Duration::ZERO)
    }

    fn put_until(
        &self,
        item: T,
        deadline: Option<Instant>,
    ) -> std::result::Result<(), PutError<T>> {
        self.put_many_until(vec![item], deadline).map_err(|e| {
            let (mut items, error) = e.into_parts();
            PutError::new(items.pop().expect("the one item comes back"), error)
        })
    }

    /// Puts several items in order, waiting for room as long as it takes.
    ///
    /// ```no_run
    /// let q = multiproc::distributed::JoinableQueue::connect("redis://127.0.0.1/", "q")?;
    /// q.put_many(0..10u8)?;
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn put_many(
        &self,
        items: impl IntoIterator<Item = T>,
    ) -> std::result::Result<(), PutError<Vec<T>>> {
        self.put_many_until(items.into_iter().collect(), None)
    }

    /// [`put_many`](Self::put_many), waiting at most `timeout` for room.
    ///
    /// ```no_run
    /// use std::time::Duration;
    /// let q = multiproc::distributed::JoinableQueue::connect("redis://127.0.0.1/", "q")?;
    /// q.put_many_timeout(0..10u8, Duration::from_secs(1))?;
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn put_many_timeout(
        &self,
        items: impl IntoIterator<Item = T>,
        timeout: Duration,
    ) -> std::result::Result<(), PutError<Vec<T>>> {
        self.put_many_until(items.into_iter().collect(), crate::deadline::after(timeout))
    }

    /// [`put_many`](Self::put_many) without waiting for room.
    ///
    /// ```no_run
    /// let q = multiproc::distributed::JoinableQueue::connect("redis://127.0.0.1/", "q")?;
    /// q.try_put_many(0..10u8)?;
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn try_put_many(
        &self,
        items: impl IntoIterator<Item = T>,
    ) -> std::result::Result<(), PutError<Vec<T>>> {
        self.put_many_timeout(items, Duration::ZERO)
    }

    fn put_many_until(
        &self,
        items: Vec<T>,
        deadline: Option<Instant>,
    ) -> std::result::Result<(), PutError<Vec<T>>> {
        if let Err(e) = self.core.ensure_group(deadline) {
            return Err(PutError::new(items, e));
        }
        self.core.put_items(items, deadline)
    }

    /// Takes the oldest item (or one reclaimed from a dead consumer), waiting as long as
    /// it takes. Call [`task_done`](Self::task_done) once it is handled.
    ///
    /// # Errors
    /// [`Error::Codec`] for an entry that is not an item of this type: it moves to the
    /// dead-letter stream (it needs no `task_done`) and the next `get` goes on;
    /// [`Error::Io`] when the server stays unreachable for the reconnect window.
    ///
    /// ```no_run
    /// let q = multiproc::distributed::JoinableQueue::<u8>::connect("redis://127.0.0.1/", "q")?;
    /// let item = q.get()?;
    /// q.task_done()?;
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn get(&self) -> Result<T> {
        self.get_until(None)
    }

    /// Takes an item, waiting at most `timeout` (any `Duration`); [`Error::Empty`] when
    /// none came.
    ///
    /// ```no_run
    /// use std::time::Duration;
    /// let q = multiproc::distributed::JoinableQueue::<u8>::connect("redis://127.0.0.1/", "q")?;
    /// let item = q.get_timeout(Duration::from_secs(1))?;
    /// q.task_done()?;
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn get_timeout(&self, timeout: Duration) -> Result<T> {
        self.get_until(crate::deadline::after(timeout))
    }

    /// Takes an item if there is one now; [`Error::Empty`] otherwise.
    ///
    /// ```no_run
    /// let q = multiproc::distributed::JoinableQueue::<u8>::connect("redis://127.0.0.1/", "q")?;
    /// if let Ok(item) = q.try_get() { q.task_done()?; }
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn try_get(&self) -> Result<T> {
        self.get_timeout(Duration::ZERO)
    }

    fn get_until(&self, deadline: Option<Instant>) -> Result<T> {
        let mut items = self.get_many_until(1, deadline)?;
        items.pop().ok_or(Error::Empty)
    }

    /// Takes between one and `max` items (at most 1024 per call: one script's batch),
    /// waiting for the first as long as it takes; each needs its own `task_done`.
    ///
    /// ```no_run
    /// let q = multiproc::distributed::JoinableQueue::<u8>::connect("redis://127.0.0.1/", "q")?;
    /// for _ in q.get_many(10)? { q.task_done()?; }
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn get_many(&self, max: usize) -> Result<Vec<T>> {
        self.get_many_until(max, None)
    }

    /// [`get_many`](Self::get_many), waiting at most `timeout` for the first item.
    ///
    /// ```no_run
    /// use std::time::Duration;
    /// let q = multiproc::distributed::JoinableQueue::<u8>::connect("redis://127.0.0.1/", "q")?;
    /// let batch = q.get_many_timeout(10, Duration::from_secs(1))?;
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn get_many_timeout(&self, max: usize, timeout: Duration) -> Result<Vec<T>> {
        self.get_many_until(max, crate::deadline::after(timeout))
    }

    /// [`get_many`](Self::get_many) without waiting.
    ///
    /// ```no_run
    /// let q = multiproc::distributed::JoinableQueue::<u8>::connect("redis://127.0.0.1/", "q")?;
    /// let batch = q.try_get_many(10);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn try_get_many(&self, max: usize) -> Result<Vec<T>> {
        self.get_many_timeout(max, Duration::ZERO)
    }

    fn get_many_until(&self, max: usize, deadline: Option<Instant>) -> Result<Vec<T>> {
        self.core.get_many(
            max,
            || self.take_entries(max, deadline),
            |entry| {
                self.delivered.lock().unwrap_or_else(|p| p.into_inner()).push_back(entry.id.clone())
            },
            |entry, e| {
                // Not ours: out of the way for good. Should this fail, the entry comes
                // back after the visibility timeout and ends in the dead letters then.
                let _ = self.dead_letter(entry, &e.to_string(), deadline);
            },
        )
    }

    /// Moves one delivered entry to the dead-letter stream.
    fn dead_letter(&self, entry: &Entry, reason: &str, deadline: Option<Instant>) -> Result<()> {
        self.core.link.run(deadline, |con| {
            self.core
                .keys
                .joinable(&scripts::DEAD_LETTER_SCRIPT)
                .arg(scripts::GROUP)
                .arg(&entry.id)
                .arg(entry.deliveries)
                .arg(reason)
                .invoke::<redis::Value>(con)
        })?;
        Ok(())
    }

    /// Reclaims or reads up to `max` entries now.
    fn take_now(&self, max: usize, deadline: Option<Instant>) -> Result<Vec<Entry>> {
        let reply = self.core.with_group(deadline, || {
            self.core.link.run(deadline, |con| {
                self.core
                    .keys
                    .joinable(&scripts::TAKE_JOINABLE_SCRIPT)
                    .arg(scripts::GROUP)
                    .arg(&self.consumer)
                    .arg(max.min(scripts::MAX_BATCH))
                    .arg(self.visibility_timeout.as_millis() as u64)
                    .arg(self.max_deliveries)
                    .invoke::<redis::Value>(con)
            })
        })?;
        scripts::entries("take", reply)
    }

    /// Waits for new entries (until `deadline`, and no longer than half the visibility
    /// timeout, so that items of dead consumers are looked for again); `None` when the time
    /// is up.
    fn wait_for_new(&self, max: usize, deadline: Option<Instant>) -> Result<Option<Vec<Entry>>> {
        let Some((block, reply)) = self.core.link.block_for(deadline) else { return Ok(None) };
        let period = (self.visibility_timeout / 2).max(MIN_RECLAIM_PERIOD);
        let block = block.min(period.as_millis() as u64).max(1);
        let got = self.core.with_group(deadline, || {
            self.core.link.run_blocking(reply, deadline, |con| {
                redis::cmd("XREADGROUP")
                    .arg("GROUP")
                    .arg(scripts::GROUP)
                    .arg(&self.consumer)
                    .arg("COUNT")
                    .arg(max.min(scripts::MAX_BATCH))
                    .arg("BLOCK")
                    .arg(block)
                    .arg("STREAMS")
                    .arg(&self.core.keys.stream)
                    .arg(">")
                    .query::<redis::Value>(con)
            })
        })?;
        let Some(value) = got else { return Ok(None) };
        let entries = scripts::read_reply(value)?;
        if !entries.is_empty() {
            // Room for a putter waiting on a bounded queue (the take script signals its
            // own deliveries; these came straight from the server). Should this fail, such
            // a putter looks again after its current wait of a few seconds.
            let _ = self.core.link.run(deadline, |con| {
                redis::cmd("XADD")
                    .arg(&self.core.keys.room)
                    .arg("MAXLEN")
                    .arg(1)
                    .arg("*")
                    .arg("n")
                    .arg(entries.len())
                    .query::<redis::Value>(con)
            });
        }
        Ok(Some(entries))
    }

    /// Takes between one and `max` entries, waiting for the first until `deadline`.
    fn take_entries(&self, max: usize, deadline: Option<Instant>) -> Result<Vec<Entry>> {
        self.core.take_waiting(
            deadline,
            || self.take_now(max, deadline),
            || self.wait_for_new(max, deadline),
        )
    }

    /// Marks the oldest item this handle got and has not marked done as done;
    /// [`Error::InvalidRelease`] when there is none (Python raises `ValueError`). An error
    /// reaching the server leaves the delivery to a later `task_done`.
    ///
    /// ```no_run
    /// let q = multiproc::distributed::JoinableQueue::<u8>::connect("redis://127.0.0.1/", "q")?;
    /// assert!(q.task_done().is_err());
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn task_done(&self) -> Result<()> {
        self.task_done_many(1)
    }

    /// Marks the `n` oldest items this handle got and has not marked done as done, in one
    /// round trip per 1024 (where `n` calls of [`task_done`](Self::task_done) take `n`):
    /// for a consumer that handles a batch from [`get_many`](Self::get_many) and then
    /// acknowledges it. Only items already handled should be acknowledged: an item marked
    /// done is never delivered again, whatever becomes of its consumer.
    /// [`Error::InvalidRelease`] when fewer than `n` are waiting for it (and none is
    /// marked); an error reaching the server leaves the deliveries it did not confirm to a
    /// later call (marking one twice counts once).
    ///
    /// ```no_run
    /// let q = multiproc::distributed::JoinableQueue::<u32>::connect("redis://127.0.0.1/", "q")?;
    /// let batch = q.get_many(100)?;
    /// let total: u32 = batch.iter().sum();
    /// q.task_done_many(batch.len())?;
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn task_done_many(&self, n: usize) -> Result<()> {
        let mut delivered = self.delivered.lock().unwrap_or_else(|p| p.into_inner());
        if n > delivered.len() {
            return Err(Error::InvalidRelease("task_done() called too many times"));
        }
        let mut left = n;
        while left > 0 {
            let batch = left.min(scripts::MAX_BATCH);
            let acked = self.core.link.run(None, |con| {
                let mut invocation = self.core.keys.joinable(&scripts::TASK_DONE_SCRIPT);
                invocation.arg(scripts::GROUP);
                for id in delivered.iter().take(batch) {
                    invocation.arg(id);
                }
                invocation.invoke::<redis::Value>(con)
            });
            // Until the server confirms them, the ids stay this handle's oldest.
            acked?;
            delivered.drain(..batch);
            left -= batch;
        }
        Ok(())
    }

    /// Waits until every item put has been marked done (or dead-lettered), as long as it
    /// takes.
    ///
    /// ```no_run
    /// let q = multiproc::distributed::JoinableQueue::<u8>::connect("redis://127.0.0.1/", "q")?;
    /// q.join()?;
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn join(&self) -> Result<()> {
        self.join_until(None, Duration::MAX)
    }

    /// Waits at most `timeout` until every item put has been marked done;
    /// [`Error::Timeout`] otherwise.
    ///
    /// ```no_run
    /// use std::time::Duration;
    /// let q = multiproc::distributed::JoinableQueue::<u8>::connect("redis://127.0.0.1/", "q")?;
    /// q.join_timeout(Duration::from_secs(10))?;
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn join_timeout(&self, timeout: Duration) -> Result<()> {
        self.join_until(crate::deadline::after(timeout), timeout)
    }

    fn join_until(&self, deadline: Option<Instant>, timeout: Duration) -> Result<()> {
        let mut retry = self.core.link.retry();
        loop {
            let state = self.core.link.run(deadline, |con| {
                self.core.keys.joinable(&scripts::UNFINISHED_SCRIPT).invoke::<redis::Value>(con)
            });
            let (left, last) = match state.and_then(|v| unfinished_reply(&v)) {
                Ok(state) => {
                    retry.reset();
                    state
                }
                Err(e) => {
                    retry.again(e, deadline)?;
                    continue;
                }
            };
            if left <= 0 {
                return Ok(());
            }
            let Some((block, reply)) = self.core.link.block_for(deadline) else {
                return Err(Error::Timeout(timeout));
            };
            let waited = self.core.link.run_blocking(reply, deadline, |con| {
                redis::cmd("XREAD")
                    .arg("COUNT")
                    .arg(1)
                    .arg("BLOCK")
                    .arg(block)
                    .arg("STREAMS")
                    .arg(&self.core.keys.joined)
                    .arg(&last)
                    .query::<redis::Value>(con)
            });
            if let Err(e) = waited {
                retry.again(e, deadline)?;
            }
        }
    }

    /// The number of items waiting for delivery (not counting those delivered and not yet
    /// done).
    ///
    /// ```no_run
    /// let q = multiproc::distributed::JoinableQueue::<u8>::connect("redis://127.0.0.1/", "q")?;
    /// println!("{}", q.qsize()?);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn qsize(&self) -> Result<usize> {
        self.core.ensure_group(None)?;
        Ok(self.core.qsize()? + self.core.carried())
    }

    /// Whether no item waits for delivery.
    ///
    /// ```no_run
    /// let q = multiproc::distributed::JoinableQueue::<u8>::connect("redis://127.0.0.1/", "q")?;
    /// let _ = q.empty()?;
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn empty(&self) -> Result<bool> {
        Ok(self.qsize()? == 0)
    }

    /// This handle's bound on items waiting for delivery (0: none).
    ///
    /// ```no_run
    /// let q = multiproc::distributed::JoinableQueue::<u8>::connect("redis://127.0.0.1/", "q")?;
    /// assert_eq!(q.maxsize(), 0);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn maxsize(&self) -> usize {
        self.core.maxsize
    }

    /// The queue's name: the key of its stream.
    ///
    /// ```no_run
    /// let q = multiproc::distributed::JoinableQueue::<u8>::connect("redis://127.0.0.1/", "tasks")?;
    /// assert_eq!(q.name(), "tasks");
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn name(&self) -> &str {
        &self.core.keys.stream
    }

    /// The key of the dead-letter stream, `<name>:dead`: each entry holds `id` (the item's
    /// id in the queue's stream), `deliveries`, `reason`, then the original entry's fields
    /// (the item is the field `d`).
    ///
    /// ```no_run
    /// let q = multiproc::distributed::JoinableQueue::<u8>::connect("redis://127.0.0.1/", "tasks")?;
    /// assert_eq!(q.dead_letter_name(), "tasks:dead");
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn dead_letter_name(&self) -> &str {
        &self.core.keys.dead
    }

    /// This handle's consumer name in the stream's consumer group.
    ///
    /// ```no_run
    /// let q = multiproc::distributed::JoinableQueue::<u8>::connect("redis://127.0.0.1/", "tasks")?;
    /// println!("{}", q.consumer());
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn consumer(&self) -> &str {
        &self.consumer
    }
}

/// `{unfinished, joined id}` from the unfinished script.
fn unfinished_reply(value: &redis::Value) -> Result<(i64, String)> {
    match scripts::array("join", value)? {
        [left, last] => Ok((scripts::int("join", left)?, scripts::string("join", last)?)),
        _ => Err(Error::Protocol(format!("redis: unexpected reply for join: {value:?}"))),
    }
}
