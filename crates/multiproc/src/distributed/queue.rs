//! [`Queue`]: a FIFO queue on a Redis stream, at-most-once.

use std::collections::VecDeque;
use std::marker::PhantomData;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde::de::DeserializeOwned;
use serde::Serialize;

use super::link::{self, Link, Settings};
use super::scripts::{self, Entry, Keys};
use crate::codec::Codec;
use crate::error::{Error, PutError, Result};

/// A queue on a Redis stream, shared by every process (on any machine) that connects to
/// the same server with the same name: Python's `multiprocessing.Queue`, across machines.
///
/// `get` is at-most-once: the stream's consumer group hands each entry to one consumer
/// only, with nothing to acknowledge (`XREADGROUP … NOACK`), so no item is ever handed to
/// two consumers; an item whose reply is lost on the way (the connection breaks, the
/// consumer dies) is lost. See the [module docs](super) for the keys it uses.
///
/// ```no_run
/// use multiproc::distributed::Queue;
///
/// let q = Queue::connect("redis://127.0.0.1:6379/0", "jobs")?;
/// q.put("hello".to_string())?;
/// assert_eq!(q.get()?, "hello");
/// # Ok::<(), multiproc::Error>(())
/// ```
pub struct Queue<T> {
    pub(super) core: Core,
    item: PhantomData<fn(T) -> T>,
}

impl<T> std::fmt::Debug for Queue<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Queue")
            .field("name", &self.core.keys.stream)
            .field("maxsize", &self.core.maxsize)
            .finish_non_exhaustive()
    }
}

impl<T> Clone for Queue<T> {
    /// Another handle on the same queue, with a connection of its own (opened on first use).
    fn clone(&self) -> Queue<T> {
        Queue { core: self.core.fresh(), item: PhantomData }
    }
}

/// Builds a [`Queue`] with settings other than the defaults.
///
/// ```no_run
/// use std::time::Duration;
/// use multiproc::distributed::Queue;
///
/// let q: Queue<u64> = Queue::builder("redis://127.0.0.1:6379/0", "jobs")
///     .maxsize(1000)
///     .connect_timeout(Duration::from_secs(2))
///     .build()?;
/// # Ok::<(), multiproc::Error>(())
/// ```
pub struct QueueBuilder<T> {
    pub(super) url: String,
    pub(super) name: String,
    pub(super) maxsize: usize,
    pub(super) settings: Settings,
    item: PhantomData<fn(T) -> T>,
}

impl<T> std::fmt::Debug for QueueBuilder<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QueueBuilder")
            .field("name", &self.name)
            .field("maxsize", &self.maxsize)
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

impl<T: Serialize + DeserializeOwned> QueueBuilder<T> {
    /// The defaults for a queue named `name` on the server at `url`.
    pub(super) fn new(url: &str, name: &str) -> QueueBuilder<T> {
        QueueBuilder {
            url: url.to_string(),
            name: name.to_string(),
            maxsize: 0,
            settings: Settings::default(),
            item: PhantomData,
        }
    }

    /// The most items waiting for delivery (0, the default: no bound). Checked by the
    /// server in the same step as the put, so concurrent putters cannot overshoot it; it is
    /// a setting of each handle, and every handle that puts should use the same.
    ///
    /// ```no_run
    /// let b = multiproc::distributed::Queue::<u8>::builder("redis://127.0.0.1/", "q").maxsize(2);
    /// ```
    pub fn maxsize(mut self, maxsize: usize) -> QueueBuilder<T> {
        self.maxsize = maxsize;
        self
    }

    /// The longest a connection attempt may take (default 5 s; never past a call's own
    /// deadline).
    ///
    /// ```no_run
    /// use std::time::Duration;
    /// let b = multiproc::distributed::Queue::<u8>::builder("redis://127.0.0.1/", "q")
    ///     .connect_timeout(Duration::from_millis(500));
    /// ```
    pub fn connect_timeout(mut self, timeout: Duration) -> QueueBuilder<T> {
        self.settings.connect_timeout = timeout.max(Duration::from_millis(1));
        self
    }

    /// The longest one command waits for the server's reply when the call itself has no
    /// shorter deadline (default 30 s): a server that stops answering fails a call without
    /// a timeout after this long.
    ///
    /// ```no_run
    /// use std::time::Duration;
    /// let b = multiproc::distributed::Queue::<u8>::builder("redis://127.0.0.1/", "q")
    ///     .io_timeout(Duration::from_secs(5));
    /// ```
    pub fn io_timeout(mut self, timeout: Duration) -> QueueBuilder<T> {
        self.settings.io_timeout = timeout.max(Duration::from_millis(1));
        self
    }

    /// How long a waiting `get` (or `put`, `join`) keeps reconnecting after it lost the
    /// server, never past its own deadline (default 10 s); then it returns the connection
    /// error ([`Error::Io`]).
    ///
    /// ```no_run
    /// use std::time::Duration;
    /// let b = multiproc::distributed::Queue::<u8>::builder("redis://127.0.0.1/", "q")
    ///     .reconnect_for(Duration::from_secs(60));
    /// ```
    pub fn reconnect_for(mut self, window: Duration) -> QueueBuilder<T> {
        self.settings.reconnect_for = window;
        self
    }

    /// A [`Queue`] with these settings; [`Error::InvalidArgument`] for a malformed URL or
    /// an empty name. It connects on first use.
    ///
    /// ```no_run
    /// let q = multiproc::distributed::Queue::<u8>::builder("redis://127.0.0.1/", "q").build()?;
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn build(self) -> Result<Queue<T>> {
        Ok(Queue { core: Core::open(&self, false)?, item: PhantomData })
    }
}

/// What a queue handle holds, whatever its item type: the link, the keys, the settings and
/// the entries taken but not yet handed out.
#[derive(Debug)]
pub(super) struct Core {
    pub(super) link: Link,
    pub(super) keys: Keys,
    pub(super) maxsize: usize,
    pub(super) joinable: bool,
    /// Whether this handle made sure the consumer group exists.
    group_ready: AtomicBool,
    /// Entries taken from the server and not yet handed out (after a `get_many` stopped
    /// before an entry that does not decode).
    pub(super) carry: Mutex<VecDeque<Entry>>,
}

impl Core {
    /// A core for the builder's queue.
    pub(super) fn open<T>(builder: &QueueBuilder<T>, joinable: bool) -> Result<Core> {
        if builder.name.is_empty() {
            return Err(Error::InvalidArgument("a queue on Redis needs a name".into()));
        }
        Ok(Core {
            link: Link::open(&builder.url, builder.settings.clone())?,
            keys: Keys::of(&builder.name),
            maxsize: builder.maxsize,
            joinable,
            group_ready: AtomicBool::new(false),
            carry: Mutex::new(VecDeque::new()),
        })
    }

    /// Another core on the same queue, not yet connected, with nothing carried.
    pub(super) fn fresh(&self) -> Core {
        Core {
            link: self.link.fresh(),
            keys: self.keys.clone(),
            maxsize: self.maxsize,
            joinable: self.joinable,
            group_ready: AtomicBool::new(false),
            carry: Mutex::new(VecDeque::new()),
        }
    }

    /// Whether this handle has made sure the consumer group exists.
    pub(super) fn group_ready(&self) -> bool {
        self.group_ready.load(Ordering::Relaxed)
    }

    /// Creates the consumer group (and the stream) once per handle. It starts at the
    /// stream's beginning, so items put before any consumer came are delivered.
    pub(super) fn ensure_group(&self, deadline: Option<Instant>) -> Result<()> {
        if self.group_ready() {
            return Ok(());
        }
        let created = self.link.run(deadline, |con| {
            redis::cmd("XGROUP")
                .arg("CREATE")
                .arg(&self.keys.stream)
                .arg(scripts::GROUP)
                .arg("0")
                .arg("MKSTREAM")
                .query::<()>(con)
        });
        match created {
            Ok(()) => {}
            Err(Error::Protocol(why)) if why.contains("BUSYGROUP") => {}
            Err(e) => return Err(e),
        }
        self.group_ready.store(true, Ordering::Relaxed);
        Ok(())
    }

    /// Runs `op` after making sure the group exists; again once if the group was gone
    /// (the stream deleted under us).
    pub(super) fn with_group<R>(
        &self,
        deadline: Option<Instant>,
        op: impl Fn() -> Result<R>,
    ) -> Result<R> {
        self.ensure_group(deadline)?;
        match op() {
            Err(Error::Protocol(why)) if why.contains("NOGROUP") => {
                self.group_ready.store(false, Ordering::Relaxed);
                self.ensure_group(deadline)?;
                op()
            }
            other => other,
        }
    }

    /// Puts `items` in order, as many at a time as fit, waiting for room until `deadline`;
    /// on failure the items not put come back.
    pub(super) fn put_items<T: Serialize>(
        &self,
        mut items: Vec<T>,
        deadline: Option<Instant>,
    ) -> std::result::Result<(), PutError<Vec<T>>> {
        let mut encoded = Vec::with_capacity(items.len());
        for item in &items {
            let mut bytes = Vec::new();
            if let Err(e) = Codec::Postcard.encode_into(item, &mut bytes) {
                return Err(PutError::new(items, e));
            }
            encoded.push(bytes);
        }
        let mut done = 0;
        let mut retry = self.link.retry();
        while done < encoded.len() {
            let batch = &encoded[done..encoded.len().min(done + scripts::MAX_BATCH)];
            let reply = if self.maxsize == 0 {
                // Nothing to check first: plain XADDs, pipelined (in order, on one
                // connection), cost the server less than a script doing the same.
                self.link
                    .run(deadline, |con| {
                        let mut pipe = redis::pipe();
                        for bytes in batch {
                            pipe.cmd("XADD")
                                .arg(&self.keys.stream)
                                .arg("*")
                                .arg(scripts::ITEM_FIELD)
                                .arg(bytes.as_slice())
                                .ignore();
                        }
                        pipe.query::<()>(con)
                    })
                    .map(|()| (batch.len(), String::new()))
            } else {
                self.link
                    .run(deadline, |con| {
                        let mut invocation = self.keys.joinable(&scripts::PUT_SCRIPT);
                        invocation.arg(self.maxsize).arg(if self.joinable { "1" } else { "0" });
                        invocation.arg(scripts::GROUP);
                        for bytes in batch {
                            invocation.arg(bytes.as_slice());
                        }
                        invocation.invoke::<redis::Value>(con)
                    })
                    .and_then(|v| put_reply(&v))
            };
            let (added, room) = match reply {
                Ok(r) => r,
                Err(e) => {
                    items.drain(..done);
                    return Err(PutError::new(items, e));
                }
            };
            retry.reset();
            done += added;
            if added == batch.len() {
                continue;
            }
            // Full: wait for a taker's signal on the room stream, or the deadline.
            let Some((block, reply)) = self.link.block_for(deadline) else {
                items.drain(..done);
                return Err(PutError::new(items, Error::Full));
            };
            let waited = self.link.run_blocking(reply, deadline, |con| {
                redis::cmd("XREAD")
                    .arg("COUNT")
                    .arg(1)
                    .arg("BLOCK")
                    .arg(block)
                    .arg("STREAMS")
                    .arg(&self.keys.room)
                    .arg(&room)
                    .query::<redis::Value>(con)
            });
            if let Err(e) = waited {
                if let Err(e) = retry.again(e, deadline) {
                    items.drain(..done);
                    return Err(PutError::new(items, e));
                }
            }
        }
        Ok(())
    }

    /// Takes up to `max` entries from a plain queue now (none when it is empty): the group
    /// delivers each entry once (`NOACK`: nothing to acknowledge), then the taken entries
    /// leave the stream and waiting putters are told there is room.
    fn take_plain(&self, max: usize, deadline: Option<Instant>) -> Result<Vec<Entry>> {
        let reply = self.with_group(deadline, || {
            self.link.run(deadline, |con| {
                redis::cmd("XREADGROUP")
                    .arg("GROUP")
                    .arg(scripts::GROUP)
                    .arg(scripts::PLAIN_CONSUMER)
                    .arg("COUNT")
                    .arg(max.min(scripts::MAX_BATCH))
                    .arg("NOACK")
                    .arg("STREAMS")
                    .arg(&self.keys.stream)
                    .arg(">")
                    .query::<redis::Value>(con)
            })
        })?;
        let entries = scripts::read_reply(reply)?;
        if let Some(last) = entries.last() {
            // The entries are ours whatever happens now: should this fail, the next
            // wait, qsize or bounded put removes them.
            let _ = self.link.run(deadline, |con| {
                scripts::TAKEN_SCRIPT
                    .key(&self.keys.stream)
                    .key(&self.keys.room)
                    .arg(&last.id)
                    .arg(entries.len())
                    .invoke::<redis::Value>(con)
            });
        }
        Ok(entries)
    }

    /// Waits (until `deadline`) for the plain queue's stream to hold an entry not yet
    /// delivered. A take trims what it took right after taking it, so the stream holds
    /// (but for that moment, or what a consumer that died then left) only entries not yet
    /// delivered, and the wait blocks on any entry (`after` 0-0). With `check_delivered`
    /// (a wait after a wake-up with nothing to take) it first removes the delivered
    /// entries left in the stream, and blocks on those after the group's last delivered
    /// one: a leftover wakes a wait once, never keeps it spinning.
    fn wait_plain(&self, deadline: Option<Instant>, check_delivered: bool) -> Result<bool> {
        let after = if check_delivered {
            let delivered = self.with_group(deadline, || {
                self.link.run(deadline, |con| {
                    scripts::DELIVERED_SCRIPT
                        .key(&self.keys.stream)
                        .arg(scripts::GROUP)
                        .invoke::<redis::Value>(con)
                })
            })?;
            scripts::string("delivered", &delivered)?
        } else {
            "0-0".to_string()
        };
        let Some((block, reply)) = self.link.block_for(deadline) else { return Ok(false) };
        self.link
            .run_blocking(reply, deadline, |con| {
                redis::cmd("XREAD")
                    .arg("COUNT")
                    .arg(1)
                    .arg("BLOCK")
                    .arg(block)
                    .arg("STREAMS")
                    .arg(&self.keys.stream)
                    .arg(&after)
                    .query::<redis::Value>(con)
            })
            .map(|r| r.is_some())
    }

    /// Takes between one and `max` entries from a plain queue, waiting for the first until
    /// `deadline`; [`Error::Empty`] when none came.
    fn take_entries(&self, max: usize, deadline: Option<Instant>) -> Result<Vec<Entry>> {
        // Every wait after the first in this call checks for delivered entries left over.
        let waited = std::cell::Cell::new(false);
        self.take_waiting(
            deadline,
            || self.take_plain(max, deadline),
            || Ok(self.wait_plain(deadline, waited.replace(true))?.then(Vec::new)),
        )
    }

    /// Takes between one and `max` entries: `take` takes what there is now; else `wait`
    /// waits for more (and may bring some itself: `Some(entries)`), or says the time is
    /// up (`None`), after which `take` has one last look. A lost connection is retried as
    /// the link's reconnect window and `deadline` allow. [`Error::Empty`] when none came.
    pub(super) fn take_waiting(
        &self,
        deadline: Option<Instant>,
        take: impl Fn() -> Result<Vec<Entry>>,
        wait: impl Fn() -> Result<Option<Vec<Entry>>>,
    ) -> Result<Vec<Entry>> {
        let mut retry = self.link.retry();
        loop {
            match take() {
                Ok(entries) if !entries.is_empty() => return Ok(entries),
                Ok(_) => retry.reset(),
                Err(e) => {
                    retry.again(e, deadline)?;
                    continue;
                }
            }
            if link::expired(deadline) {
                return Err(Error::Empty);
            }
            match wait() {
                Ok(Some(entries)) if !entries.is_empty() => return Ok(entries),
                Ok(Some(_)) => {}
                Ok(None) => {
                    // The time is up: one last look, then the wait is over.
                    return match take() {
                        Ok(entries) if !entries.is_empty() => Ok(entries),
                        Ok(_) => Err(Error::Empty),
                        Err(e) => Err(e),
                    };
                }
                Err(e) => retry.again(e, deadline)?,
            }
        }
    }

    /// Takes between one and `max` items for a `get_many`: those carried from an earlier
    /// call first, else entries from `take`, decoded (see [`decode_entries`]).
    pub(super) fn get_many<T: DeserializeOwned>(
        &self,
        max: usize,
        take: impl FnOnce() -> Result<Vec<Entry>>,
        accept: impl FnMut(&Entry),
        reject: impl FnMut(&Entry, &Error),
    ) -> Result<Vec<T>> {
        if max == 0 {
            return Ok(Vec::new());
        }
        let mut carry = self.carry.lock().unwrap_or_else(|p| p.into_inner());
        let entries = if carry.is_empty() { take()? } else { Vec::new() };
        decode_entries(entries, &mut carry, max, accept, reject)
    }

    /// The number of entries carried. A `get` that holds the carry now is waiting for items,
    /// which it does only with none carried.
    pub(super) fn carried(&self) -> usize {
        self.carry.try_lock().map_or(0, |carry| carry.len())
    }

    /// The number of items waiting for delivery.
    pub(super) fn qsize(&self) -> Result<usize> {
        let reply = self.link.run(None, |con| {
            scripts::QSIZE_SCRIPT
                .key(&self.keys.stream)
                .arg(if self.joinable { "1" } else { "0" })
                .arg(scripts::GROUP)
                .invoke::<redis::Value>(con)
        })?;
        Ok(scripts::int("qsize", &reply)?.max(0) as usize)
    }
}

/// `{added, room id}` from the put script.
fn put_reply(value: &redis::Value) -> Result<(usize, String)> {
    match scripts::array("put", value)? {
        [added, room] => {
            Ok((scripts::int("put", added)?.max(0) as usize, scripts::string("put", room)?))
        }
        _ => Err(Error::Protocol(format!("redis: unexpected reply for put: {value:?}"))),
    }
}

/// Decodes entries in order into `out` until `max` items are there, keeping the rest in
/// `carry`. An entry that does not decode ends the batch: it is the error when it comes
/// first (and is consumed, through `reject`), else it stays first in `carry` for the next
/// call. `accept` is told each entry handed out.
fn decode_entries<T: DeserializeOwned>(
    entries: impl IntoIterator<Item = Entry>,
    carry: &mut VecDeque<Entry>,
    max: usize,
    mut accept: impl FnMut(&Entry),
    mut reject: impl FnMut(&Entry, &Error),
) -> Result<Vec<T>> {
    carry.extend(entries);
    let mut out = Vec::new();
    while out.len() < max {
        let Some(entry) = carry.front() else { break };
        let decoded = match &entry.item {
            Ok(bytes) => Codec::Postcard.decode::<T>(bytes),
            Err(why) => Err(Error::Codec(why.clone())),
        };
        match decoded {
            Ok(item) => {
                accept(entry);
                out.push(item);
                carry.pop_front();
            }
            Err(e) if out.is_empty() => {
                let e = match e {
                    Error::Codec(why) => Error::Codec(format!("entry {}: {why}", entry.id)),
                    other => other,
                };
                reject(entry, &e);
                carry.pop_front();
                return Err(e);
            }
            Err(_) => break,
        }
    }
    Ok(out)
}

impl<T: Serialize + DeserializeOwned> Queue<T> {
    /// A handle on the queue `name` at the Redis server of `url` (`redis://[user:password@]host[:port][/db]`,
    /// `rediss://` for TLS, `redis+unix:///path`), with the default settings; it connects on
    /// first use. [`Error::InvalidArgument`] for a malformed URL or an empty name.
    ///
    /// ```no_run
    /// let q = multiproc::distributed::Queue::<String>::connect("redis://127.0.0.1:6379/0", "jobs")?;
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn connect(url: &str, name: &str) -> Result<Queue<T>> {
        Queue::builder(url, name).build()
    }

    /// A builder for a handle with settings of its own (`maxsize`, timeouts).
    ///
    /// ```no_run
    /// let q: multiproc::distributed::Queue<u8> =
    ///     multiproc::distributed::Queue::<u8>::builder("redis://127.0.0.1/", "q").maxsize(8).build()?;
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn builder(url: &str, name: &str) -> QueueBuilder<T> {
        QueueBuilder::new(url, name)
    }

    /// Puts an item, waiting for room as long as it takes.
    ///
    /// # Errors
    /// Every failure hands the item back in a [`PutError`]: [`Error::Codec`] for an item
    /// that cannot be encoded, [`Error::Io`] when the server cannot be reached (the item
    /// may then have been queued or not: the reply was lost).
    ///
    /// ```no_run
    /// let q = multiproc::distributed::Queue::connect("redis://127.0.0.1/", "q")?;
    /// q.put(1u32)?;
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn put(&self, item: T) -> std::result::Result<(), PutError<T>> {
        self.put_until(item, None)
    }

    /// Puts an item, waiting at most `timeout` for room (any `Duration`; `Duration::MAX`
    /// is for ever); [`Error::Full`] with the item back when none came.
    ///
    /// ```no_run
    /// use std::time::Duration;
    /// let q = multiproc::distributed::Queue::builder("redis://127.0.0.1/", "q").maxsize(1).build()?;
    /// q.put_timeout(1u8, Duration::from_secs(1))?;
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn put_timeout(&self, item: T, timeout: Duration) -> std::result::Result<(), PutError<T>> {
        self.put_until(item, crate::deadline::after(timeout))
    }

    /// Puts an item if there is room now; [`Error::Full`] otherwise.
    ///
    /// ```no_run
    /// let q = multiproc::distributed::Queue::builder("redis://127.0.0.1/", "q").maxsize(1).build()?;
    /// q.try_put('a')?;
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
        self.core.put_items(vec![item], deadline).map_err(|e| {
            let (mut items, error) = e.into_parts();
            PutError::new(items.pop().expect("the one item comes back"), error)
        })
    }

    /// Puts several items in order (pipelined: up to 1024 per round trip), waiting for room
    /// as long as it takes; on failure the items not put come back.
    ///
    /// ```no_run
    /// let q = multiproc::distributed::Queue::connect("redis://127.0.0.1/", "q")?;
    /// q.put_many(0..100u32)?;
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn put_many(
        &self,
        items: impl IntoIterator<Item = T>,
    ) -> std::result::Result<(), PutError<Vec<T>>> {
        self.core.put_items(items.into_iter().collect(), None)
    }

    /// [`put_many`](Self::put_many), waiting at most `timeout` for room; on
    /// [`Error::Full`] a prefix went in and the rest come back.
    ///
    /// ```no_run
    /// use std::time::Duration;
    /// let q = multiproc::distributed::Queue::connect("redis://127.0.0.1/", "q")?;
    /// q.put_many_timeout([1u8, 2], Duration::from_secs(1))?;
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn put_many_timeout(
        &self,
        items: impl IntoIterator<Item = T>,
        timeout: Duration,
    ) -> std::result::Result<(), PutError<Vec<T>>> {
        self.core.put_items(items.into_iter().collect(), crate::deadline::after(timeout))
    }

    /// [`put_many`](Self::put_many) without waiting: what fits goes in, the rest comes back
    /// with [`Error::Full`].
    ///
    /// ```no_run
    /// let q = multiproc::distributed::Queue::connect("redis://127.0.0.1/", "q")?;
    /// q.try_put_many([1u8, 2])?;
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn try_put_many(
        &self,
        items: impl IntoIterator<Item = T>,
    ) -> std::result::Result<(), PutError<Vec<T>>> {
        self.put_many_timeout(items, Duration::ZERO)
    }

    /// Takes the oldest item, waiting as long as it takes.
    ///
    /// # Errors
    /// [`Error::Codec`] for an entry that is not an item of this type (it is consumed: the
    /// next `get` goes on with the next one); [`Error::Io`] when the server stays
    /// unreachable for the reconnect window.
    ///
    /// ```no_run
    /// let q = multiproc::distributed::Queue::<u32>::connect("redis://127.0.0.1/", "q")?;
    /// let item = q.get()?;
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn get(&self) -> Result<T> {
        self.get_until(None)
    }

    /// Takes the oldest item, waiting at most `timeout` (any `Duration`);
    /// [`Error::Empty`] when none came.
    ///
    /// ```no_run
    /// use std::time::Duration;
    /// let q = multiproc::distributed::Queue::<u32>::connect("redis://127.0.0.1/", "q")?;
    /// match q.get_timeout(Duration::from_millis(100)) {
    ///     Ok(item) => println!("{item}"),
    ///     Err(multiproc::Error::Empty) => println!("nothing yet"),
    ///     Err(e) => return Err(e),
    /// }
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn get_timeout(&self, timeout: Duration) -> Result<T> {
        self.get_until(crate::deadline::after(timeout))
    }

    /// Takes the oldest item if there is one now; [`Error::Empty`] otherwise.
    ///
    /// ```no_run
    /// let q = multiproc::distributed::Queue::<u32>::connect("redis://127.0.0.1/", "q")?;
    /// assert!(matches!(q.try_get(), Err(multiproc::Error::Empty)));
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
    /// waiting for the first as long as it takes.
    ///
    /// ```no_run
    /// let q = multiproc::distributed::Queue::<u32>::connect("redis://127.0.0.1/", "q")?;
    /// let batch = q.get_many(100)?;
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn get_many(&self, max: usize) -> Result<Vec<T>> {
        self.get_many_until(max, None)
    }

    /// [`get_many`](Self::get_many), waiting at most `timeout` for the first item;
    /// [`Error::Empty`] when none came.
    ///
    /// ```no_run
    /// use std::time::Duration;
    /// let q = multiproc::distributed::Queue::<u32>::connect("redis://127.0.0.1/", "q")?;
    /// let batch = q.get_many_timeout(100, Duration::from_secs(1))?;
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn get_many_timeout(&self, max: usize, timeout: Duration) -> Result<Vec<T>> {
        self.get_many_until(max, crate::deadline::after(timeout))
    }

    /// [`get_many`](Self::get_many) without waiting; [`Error::Empty`] when nothing is queued.
    ///
    /// ```no_run
    /// let q = multiproc::distributed::Queue::<u32>::connect("redis://127.0.0.1/", "q")?;
    /// let batch = q.try_get_many(100);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn try_get_many(&self, max: usize) -> Result<Vec<T>> {
        self.get_many_timeout(max, Duration::ZERO)
    }

    fn get_many_until(&self, max: usize, deadline: Option<Instant>) -> Result<Vec<T>> {
        self.core.get_many(max, || self.core.take_entries(max, deadline), |_| {}, |_, _| {})
    }

    /// The number of items queued now (Python's `qsize()`); an error when the server
    /// cannot be reached.
    ///
    /// ```no_run
    /// let q = multiproc::distributed::Queue::<u32>::connect("redis://127.0.0.1/", "q")?;
    /// println!("{} queued", q.qsize()?);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn qsize(&self) -> Result<usize> {
        Ok(self.core.qsize()? + self.core.carried())
    }

    /// Whether no item is queued now.
    ///
    /// ```no_run
    /// let q = multiproc::distributed::Queue::<u32>::connect("redis://127.0.0.1/", "q")?;
    /// if q.empty()? { println!("idle"); }
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn empty(&self) -> Result<bool> {
        Ok(self.qsize()? == 0)
    }

    /// Whether the queue holds `maxsize` items (never, without a bound).
    ///
    /// ```no_run
    /// let q = multiproc::distributed::Queue::<u32>::builder("redis://127.0.0.1/", "q").maxsize(1).build()?;
    /// let _ = q.full()?;
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn full(&self) -> Result<bool> {
        Ok(self.core.maxsize != 0 && self.core.qsize()? >= self.core.maxsize)
    }

    /// This handle's bound (0: none).
    ///
    /// ```no_run
    /// let q = multiproc::distributed::Queue::<u32>::builder("redis://127.0.0.1/", "q").maxsize(3).build()?;
    /// assert_eq!(q.maxsize(), 3);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn maxsize(&self) -> usize {
        self.core.maxsize
    }

    /// The queue's name: the key of its stream.
    ///
    /// ```no_run
    /// let q = multiproc::distributed::Queue::<u32>::connect("redis://127.0.0.1/", "jobs")?;
    /// assert_eq!(q.name(), "jobs");
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn name(&self) -> &str {
        &self.core.keys.stream
    }
}
