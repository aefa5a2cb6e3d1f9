//! Queues between processes: [`Queue`], [`SimpleQueue`], [`JoinableQueue`] (Python's
//! `multiprocessing.queues`), on a ring buffer in shared memory that survives processes
//! killed at any instruction.
//!
//! # Using a queue
//! A queue is a handle: clone it, pass it to a child as (part of) its argument, or send it
//! through a pipe or another queue; every copy reaches the same items. Items are any
//! `Serialize + DeserializeOwned` type.
//!
//! ```
//! use multiproc::{Process, queues::Queue};
//!
//! fn worker(q: Queue<String>) {
//!     q.put("Hello from Process".to_string()).unwrap();
//! }
//!
//! let q = Queue::new(0)?; // 0: no bound on the number of items
//! let p = Process::new(worker, q.clone());
//! p.start()?;
//! assert_eq!(q.get()?, "Hello from Process");
//! p.join()?;
//! # Ok::<(), multiproc::Error>(())
//! ```
//!
//! Every blocking call comes in three forms: `get()` waits as long as it takes,
//! `get_timeout(d)` at most `d`, `try_get()` not at all; the same for `put`, `get_many`,
//! `put_many` and [`JoinableQueue::join`]. Running out of time is Python's `queue.Empty`
//! ([`Error::Empty`]) for a get and `queue.Full` ([`Error::Full`]) for a put. A put that
//! fails for any reason hands its item back in a [`PutError`] (`?` turns it into an
//! [`Error`]):
//!
//! ```
//! use std::time::Duration;
//! use multiproc::{Error, queues::Queue};
//!
//! let q = Queue::new(1)?; // at most one item
//! q.put(1)?;
//! let e = q.put_timeout(2, Duration::from_millis(10)).unwrap_err();
//! assert!(matches!(e.error(), Error::Full));
//! assert_eq!(e.into_item(), 2);
//! assert_eq!(q.try_get()?, 1);
//! assert!(matches!(q.try_get(), Err(Error::Empty)));
//! # Ok::<(), multiproc::Error>(())
//! ```
//!
//! Batches take the producer or consumer lock once: `q.put_many(items)`,
//! `q.get_many(max)`. [`Queue::close`] closes the queue for every process: puts fail with
//! [`Error::Closed`], gets take what is left and then fail the same way.
//!
//! # Disconnection
//! A `get` on an empty queue that no other live process holds any more returns
//! [`Error::Disconnected`] instead of waiting for ever, as a channel's receiver does once
//! every sender is gone; so does a `put` waiting for room in a full one (with its item
//! handed back). A process holds a queue from the moment it creates or receives a handle
//! until it drops its last one, or dies: a holder killed with `SIGKILL` is noticed by the
//! waiter itself, which looks the other holders up in `/proc` after sleeping for a while
//! (20 ms, then every 250 ms). Items already queued are always taken first.
//!
//! Only *other* processes count, and only once the queue has left its process: a queue
//! that never did is never disconnected (its threads put and get), but once it has, a
//! process whose other holders are all gone is alone even if its own threads hold clones
//! (unless it also received a handle of its own queue, as a manager server running on one
//! of its threads does). A forked child counts from its first `put` or `get`; a handle
//! sent and never received (its receiver died first) keeps the queue counted as held, so
//! that a waiter never gives up on a producer that may yet arrive. `holders.rs` has the
//! details.
//!
//! # The ring
//! A shared segment holds a header and a data region of `capacity` bytes. Records are
//! `[len: u32][kind: u32][payload, padded to 8 bytes]`; a record that would cross the end
//! of the region is preceded by a *wrap* marker and starts again at offset 0.
//!
//! Two 64-bit words say where the records are: `tail` (written by producers) and `head`
//! (written by consumers). Each packs a byte position (low 40 bits, counted from the
//! queue's creation, wrapping) and a record count (high 24 bits, wrapping), so one atomic
//! store moves both. Producers serialize among themselves with one lock and consumers
//! with another (both are [`crate::synchronize`]-style locks with dead-owner recovery), so
//! a single producer and a single consumer never contend.
//!
//! # Why a killed process cannot corrupt it
//! A producer encodes its item *before* taking the producer lock, then, holding it, copies
//! the record into free space and publishes it with one release-store of `tail`. A consumer,
//! holding the consumer lock, copies a record out and retires it with one release-store of
//! `head`. Killed before its store, a process has changed nothing that anyone reads: the
//! half-written record is in free space, the half-read record is still queued. The next
//! process to take the lock finds the dead owner, takes over, and continues from the
//! published words. So every item is delivered whole or not at all, none twice, and the
//! queue stays usable. (An item a consumer had already retired when it died is lost with
//! that consumer, as with any queue.)
//!
//! # Large items
//! An item too large for the ring (more than a quarter of it) travels in a shared memory
//! block; the ring carries the block's name. A producer keeps a few blocks per queue (at
//! most 4, 512 MiB in all) and writes later large items into those its consumers have
//! finished reading, because fresh shared memory costs a page fault and a zeroed page
//! per 4 KiB; consumers keep their mappings of them too. Kept blocks are released when
//! the last handle on the queue in that process is dropped. See `blocks.rs` for the
//! protocol and what happens when either side dies.
//!
//! # Waiting
//! A getter spins briefly, then sleeps on a futex that producers bump after publishing;
//! putters waiting for room do the same on a futex that consumers bump. Idle waiters use
//! no CPU. A waiter that has slept a while asks the table of holders (`holders.rs`, in the
//! header after the ring's words) whether anybody else is left (see
//! [Disconnection](#disconnection)).
//!
//! The indices, records and waiting are the algorithm in `raw::ring` (apart from the
//! operating system, and model-checked by `tests/loom_raw.rs`); this module lays the ring
//! out in its segment and encodes, decodes and moves large items.

use std::fmt;
use std::marker::PhantomData;
use std::os::fd::{BorrowedFd, OwnedFd};
use std::sync::atomic::Ordering::{Relaxed, SeqCst};
use std::sync::atomic::{AtomicU32, AtomicU64};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::codec::Codec;
use crate::error::{Error, PutError, Result};
use crate::raw::{self, ring, Os};
use crate::segment::Segment;

mod blocks;
mod holders;
mod records;
use blocks::Blocks;
use holders::Holding;
pub use records::Pickled;
use records::{decode_record, encode_record, encode_record_into, settle_blocks, Record};

// Header layout (byte offsets in the segment).
const KIND_TAG: u32 = 0x4d50_5155; // "MPQU"
                                   // Words written by different parties live on different cache lines (128 bytes apart, so
                                   // that adjacent-line prefetching does not pair them either).
const H_CAPACITY: usize = 8; // u64: data region size (read-only)
const H_MAXSIZE: usize = 16; // u32: item bound, 0 = none (read-only)
const H_CLOSED: usize = 20; // u32: 1 once closed
const H_CODEC: usize = 24; // u32: how items are encoded, 0 postcard, 1 pickle (read-only)
const H_PUT_LOCK: usize = 128; // u32 lock word: producers
const H_CACHED_HEAD: usize = 136; // u64: producers' last view of `head` (under the lock)
const H_TAIL: usize = 256; // u64: written by producers, read by consumers
const H_GET_LOCK: usize = 384; // u32 lock word: consumers
const H_CACHED_TAIL: usize = 392; // u64: consumers' last view of `tail` (under the lock)
const H_HEAD: usize = 512; // u64: written by consumers, read by producers
const H_ITEMS_SEQ: usize = 640; // u32 futex: bumped after publishing, if getters sleep
const H_GETTERS_ASLEEP: usize = 644; // u32
const H_ROOM_SEQ: usize = 768; // u32 futex: bumped after retiring, if putters sleep
const H_PUTTERS_ASLEEP: usize = 772; // u32
const H_UNFINISHED: usize = 896; // u32: JoinableQueue's unfinished tasks
const H_JOIN_SEQ: usize = 900; // u32 futex: bumped when unfinished reaches 0
const H_JOINERS_ASLEEP: usize = 904; // u32
                                     // 1024..4096: the table of holders (holders.rs).
const DATA: usize = holders::END;

const RECORD_HEADER: usize = ring::RECORD_HEADER;
const KIND_INLINE: u32 = ring::KIND_INLINE;
const KIND_INDIRECT: u32 = ring::KIND_INDIRECT;

/// Default ring size: room for tens of thousands of small items.
pub const DEFAULT_CAPACITY: usize = 4 << 20;
/// Largest ring (positions and counts fit their packed fields with a wide margin).
pub const MAX_CAPACITY: usize = 1 << 30;
/// Largest item bound: at most this many items can be counted in a ring.
pub const MAX_MAXSIZE: usize = (ring::COUNT_MASK as usize) / 2;

/// The shared ring, independent of the item type.
#[derive(Clone)]
struct Ring {
    segment: Arc<Segment>,
    capacity: usize,
    /// This process's large-item blocks of this queue.
    blocks: Arc<Blocks>,
    /// This process counted in the table of holders, while a handle lives.
    holding: Arc<Holding>,
    /// How items are encoded (from the header).
    codec: Codec,
    /// How long this process's getters spin before they sleep.
    spin: Arc<ring::SpinBudget>,
}

impl Ring {
    fn create(capacity: usize, maxsize: usize, codec: Codec) -> Result<Ring> {
        if !(64..=MAX_CAPACITY).contains(&capacity) {
            return Err(Error::InvalidArgument(format!(
                "a queue's capacity must be between 64 bytes and {MAX_CAPACITY} bytes, not {capacity}"
            )));
        }
        if maxsize > MAX_MAXSIZE {
            return Err(Error::InvalidArgument(format!(
                "maxsize {maxsize} is above the largest bound, {MAX_MAXSIZE}"
            )));
        }
        // A power of two, so that positions map into the ring with a mask.
        let capacity = capacity.next_power_of_two();
        let segment = Segment::new("queue", KIND_TAG, DATA + capacity)?;
        segment.word64(H_CAPACITY).store(capacity as u64, SeqCst);
        segment.word(H_MAXSIZE).store(maxsize as u32, SeqCst);
        segment.word(H_CODEC).store(records::codec_word(codec), SeqCst);
        let blocks = Arc::new(Blocks::new(segment.identity()?));
        let holding = Arc::new(Holding::register(&segment));
        Ok(Ring { segment, capacity, blocks, holding, codec, spin: Arc::default() })
    }

    /// A received handle: the ring in `segment`, counted as this process's.
    fn attach(segment: Arc<Segment>) -> Result<Ring> {
        let capacity = segment.word64(H_CAPACITY).load(SeqCst) as usize;
        if capacity < 64 || !capacity.is_power_of_two() || DATA + capacity > segment.mapping().len()
        {
            return Err(Error::Codec("queue: the shared segment's header is inconsistent".into()));
        }
        let codec = records::codec_of_word(segment.word(H_CODEC).load(SeqCst))?;
        let blocks = Arc::new(Blocks::new(segment.identity()?));
        let holding = Arc::new(Holding::receive(&segment));
        Ok(Ring { segment, capacity, blocks, holding, codec, spin: Arc::default() })
    }

    /// A forked child that puts or gets counts itself in as a holder first.
    #[inline]
    fn hold(&self) {
        if !self.holding.is_mine() {
            self.holding.register_fork(self.blocks.queue());
        }
    }

    fn word(&self, offset: usize) -> &AtomicU32 {
        self.segment.word(offset)
    }

    fn maxsize(&self) -> u64 {
        u64::from(self.word(H_MAXSIZE).load(Relaxed))
    }

    fn closed(&self) -> bool {
        ring::closed(self)
    }

    /// Items in the ring (exact at the instant of the two loads).
    fn len(&self) -> u64 {
        ring::len(self)
    }

    /// The largest payload that fits inline (a quarter of the ring, so large items never
    /// keep small ones waiting behind a full ring for long).
    fn inline_limit(&self) -> usize {
        self.capacity / 4 - RECORD_HEADER
    }

    /// Puts records (in order), waiting for room until `deadline`. Returns how many were
    /// put (all, unless the deadline passed or an error came), and the error.
    fn put_records(&self, records: &[Record], deadline: Option<Instant>) -> (usize, Result<()>) {
        self.hold();
        let mut done = 0;
        let result =
            ring::put::<Os, _, _>(self, crate::sys::pid::pid(), records, deadline, &mut done)
                .map_err(ring_error);
        (done, result)
    }

    /// Takes between 1 and `max` records, waiting until `deadline`; `Ok(false)` on timeout.
    fn get_records(&self, max: usize, out: &mut Popped, deadline: Option<Instant>) -> Result<bool> {
        self.hold();
        ring::get::<Os, _, _>(self, crate::sys::pid::pid(), max, out, deadline).map_err(ring_error)
    }

    fn close(&self) {
        ring::close::<Os, _>(self);
    }
}

fn ring_error(failure: ring::Failure) -> Error {
    match failure {
        ring::Failure::Closed => Error::Closed("queue"),
        ring::Failure::Disconnected => Error::Disconnected("queue"),
        ring::Failure::Corrupt { len, kind, at } => Error::Protocol(format!(
            "queue ring corrupted: record of {len} bytes, kind {kind} at offset {at}"
        )),
    }
}

impl ring::Layout for Ring {
    #[inline]
    fn word(&self, word: ring::Word) -> &AtomicU32 {
        self.segment.word(match word {
            ring::Word::PutLock => H_PUT_LOCK,
            ring::Word::GetLock => H_GET_LOCK,
            ring::Word::Closed => H_CLOSED,
            ring::Word::ItemsSeq => H_ITEMS_SEQ,
            ring::Word::GettersAsleep => H_GETTERS_ASLEEP,
            ring::Word::RoomSeq => H_ROOM_SEQ,
            ring::Word::PuttersAsleep => H_PUTTERS_ASLEEP,
        })
    }

    #[inline]
    fn word64(&self, word: ring::Word64) -> &AtomicU64 {
        self.segment.word64(match word {
            ring::Word64::Tail => H_TAIL,
            ring::Word64::Head => H_HEAD,
            ring::Word64::CachedHead => H_CACHED_HEAD,
            ring::Word64::CachedTail => H_CACHED_TAIL,
        })
    }

    #[inline]
    fn capacity(&self) -> usize {
        self.capacity
    }

    #[inline]
    fn maxsize(&self) -> u64 {
        Ring::maxsize(self)
    }

    #[inline]
    fn write_u32(&self, at: usize, value: u32) {
        self.segment.mapping().write::<u32>(DATA + at, value);
    }

    #[inline]
    fn read_u32(&self, at: usize) -> u32 {
        self.segment.mapping().read::<u32>(DATA + at)
    }

    #[inline]
    fn copy_in(&self, at: usize, src: &[u8]) {
        self.segment.mapping().copy_in(DATA + at, src);
    }

    #[inline]
    fn copy_out(&self, at: usize, dst: &mut [u8]) {
        self.segment.mapping().copy_out(DATA + at, dst);
    }

    fn deserted(&self) -> bool {
        holders::deserted(&self.segment)
    }

    #[inline]
    fn spin_budget(&self) -> Option<&ring::SpinBudget> {
        Some(&self.spin)
    }
}

/// Records taken from the ring: their kinds and where their payloads are in `bytes`.
#[derive(Default)]
struct Popped {
    records: Vec<(u32, std::ops::Range<usize>)>,
    bytes: Vec<u8>,
}

impl ring::Sink for Popped {
    #[inline]
    fn record(&mut self, kind: u32, len: usize) -> &mut [u8] {
        let start = self.bytes.len();
        self.bytes.resize(start + len, 0);
        self.records.push((kind, start..start + len));
        &mut self.bytes[start..]
    }
}

thread_local! {
    /// Reused buffers, so that a put or a get allocates nothing of its own.
    static ENCODE_SCRATCH: std::cell::Cell<Vec<u8>> = const { std::cell::Cell::new(Vec::new()) };
    static POP_SCRATCH: std::cell::Cell<Popped> = std::cell::Cell::new(Popped::default());
}

/// Keeps scratch buffers from growing without bound after one huge item.
const SCRATCH_KEEP: usize = 1 << 20;

// --------------------------------------------------------------------------------------
// Queue

/// A multi-producer, multi-consumer FIFO queue between processes (Python's
/// `multiprocessing.Queue`).
///
/// ```
/// use multiproc::{Process, queues::Queue};
///
/// fn f(q: Queue<String>) {
///     q.put("Hello from Process".to_string()).unwrap();
/// }
///
/// let q = Queue::new(0)?;
/// let p = Process::new(f, q.clone());
/// p.start()?;
/// assert_eq!(q.get()?, "Hello from Process");
/// p.join()?;
/// # Ok::<(), multiproc::Error>(())
/// ```
pub struct Queue<T> {
    ring: Ring,
    item: PhantomData<fn(T) -> T>,
}

impl<T> Clone for Queue<T> {
    fn clone(&self) -> Self {
        Queue { ring: self.ring.clone(), item: PhantomData }
    }
}

impl<T> fmt::Debug for Queue<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Queue")
            .field("qsize", &self.ring.len())
            .field("maxsize", &self.ring.maxsize())
            .field("capacity", &self.ring.capacity)
            .finish()
    }
}

impl<T> Serialize for Queue<T> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        use serde::ser::Error as _;
        let handle = self.ring.segment.export("Queue").map_err(S::Error::custom)?;
        holders::handed_off(&self.ring.segment);
        handle.serialize(s)
    }
}

impl<'de, T> Deserialize<'de> for Queue<T> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let handle = crate::reduction::Handle::deserialize(d)?;
        let segment = Segment::import(handle, "Queue", KIND_TAG, DATA + 64)
            .map_err(crate::codec::de_error)?;
        let ring = Ring::attach(segment).map_err(crate::codec::de_error)?;
        Ok(Queue { ring, item: PhantomData })
    }
}

impl<T> Queue<T> {
    /// The descriptor of the queue's shared segment, for a transport of descriptors that
    /// the crate does not drive itself (the Python package hands it to a child with
    /// `multiprocessing.reduction.DupFd`). The receiver opens the queue with
    /// [`Queue::from_fd`] on its own duplicate. Each call counts one hand-off: a process
    /// waiting on the queue is not told it is [disconnected](self#disconnection) while a
    /// handle is on its way, so call it once per handle actually sent.
    ///
    /// ```
    /// use multiproc::queues::Queue;
    ///
    /// let q = Queue::<u32>::new(0)?;
    /// q.put(7)?;
    /// let fd = q.export_fd().try_clone_to_owned()?; // what another process would receive
    /// let same = Queue::<u32>::from_fd(fd)?;
    /// assert_eq!(same.get()?, 7);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn export_fd(&self) -> BorrowedFd<'_> {
        holders::handed_off(&self.ring.segment);
        self.ring.segment.fd()
    }

    /// Opens the queue whose segment descriptor [`Queue::export_fd`] exported. The
    /// descriptor must be a sealed queue segment: anything else is [`Error::Codec`].
    ///
    /// ```
    /// use multiproc::{queues::Queue, synchronize::Lock};
    ///
    /// let lock = Lock::new()?;
    /// let not_a_queue = lock.export_fd().try_clone_to_owned()?;
    /// assert!(Queue::<u32>::from_fd(not_a_queue).is_err());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn from_fd(fd: OwnedFd) -> Result<Queue<T>> {
        let segment = Segment::open_fd(fd, "Queue", KIND_TAG, DATA + 64)?;
        Ok(Queue { ring: Ring::attach(segment)?, item: PhantomData })
    }

    /// How the queue's items are encoded ([`Codec::Postcard`] unless it was made
    /// [`with_codec`](Queue::with_codec)).
    ///
    /// ```
    /// let q = multiproc::queues::Queue::<u8>::new(0)?;
    /// assert_eq!(q.codec(), multiproc::Codec::Postcard);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn codec(&self) -> Codec {
        self.ring.codec
    }
}

impl<T: Serialize + DeserializeOwned + 'static> Queue<T> {
    /// A queue holding at most `maxsize` items (`0`: bounded only by its ring of
    /// [`DEFAULT_CAPACITY`] bytes).
    ///
    /// ```
    /// let q = multiproc::queues::Queue::<u32>::new(3)?;
    /// assert_eq!(q.maxsize(), 3);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn new(maxsize: usize) -> Result<Queue<T>> {
        Queue::with_capacity(maxsize, DEFAULT_CAPACITY)
    }

    /// A queue with a ring of `capacity` bytes, rounded up to a power of two (items larger
    /// than a quarter of it travel in blocks of their own), holding at most `maxsize` items
    /// (`0`: no item bound).
    ///
    /// ```
    /// let q = multiproc::queues::Queue::<Vec<u8>>::with_capacity(0, 4096)?;
    /// q.put(vec![7; 100_000])?; // larger than the ring: travels on its own
    /// assert_eq!(q.get()?.len(), 100_000);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn with_capacity(maxsize: usize, capacity: usize) -> Result<Queue<T>> {
        Ok(Queue { ring: Ring::create(capacity, maxsize, Codec::Postcard)?, item: PhantomData })
    }

    /// A queue whose items are encoded with `codec`. With [`Codec::Pickle`] every record
    /// is a pickle, so a CPython process can share the queue through the Python package
    /// (`multiproc.Queue`), putting and getting `None`, `bool`, `int`, `float`, `str`,
    /// `bytes`, `list`, `tuple` and `dict`; see [`Pickled`] for pickles made elsewhere. The
    /// codec is kept in the queue's header: every handle on the queue uses it.
    ///
    /// ```
    /// use multiproc::{queues::Queue, Codec};
    ///
    /// let q = Queue::<(i64, String)>::with_codec(0, Codec::Pickle)?;
    /// assert_eq!(q.codec(), Codec::Pickle);
    /// q.put((1, "one".to_string()))?;
    /// assert_eq!(q.get()?, (1, "one".to_string()));
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn with_codec(maxsize: usize, codec: Codec) -> Result<Queue<T>> {
        Ok(Queue { ring: Ring::create(DEFAULT_CAPACITY, maxsize, codec)?, item: PhantomData })
    }

    /// Puts an item, waiting for room as long as it takes. The item is encoded first, so
    /// an item that cannot be encoded is an error here, not a lost message.
    ///
    /// # Errors
    /// Every failure hands the item back in a [`PutError`]: [`Error::Closed`] once the
    /// queue is closed, [`Error::Disconnected`] when the queue stays full and no other live
    /// process holds it any more (nobody could ever make room), [`Error::Codec`] for an item
    /// that cannot be encoded.
    ///
    /// ```
    /// let q = multiproc::queues::Queue::new(0)?;
    /// q.put(1)?;
    /// q.close();
    /// let e = q.put(2).unwrap_err();
    /// assert!(matches!(e.error(), multiproc::Error::Closed(_)));
    /// assert_eq!(e.into_item(), 2);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn put(&self, item: T) -> Result<(), PutError<T>> {
        self.put_until(item, None)
    }

    /// Puts an item, waiting at most `timeout` for room; [`Error::Full`] (with the item
    /// handed back) when the time runs out. Other errors as for [`put`](Self::put).
    ///
    /// ```
    /// use std::time::Duration;
    /// let q = multiproc::queues::Queue::new(1)?;
    /// q.put_timeout(1, Duration::from_secs(1))?;
    /// let e = q.put_timeout(2, Duration::from_millis(10)).unwrap_err();
    /// assert!(matches!(e.error(), multiproc::Error::Full));
    /// assert_eq!(e.into_item(), 2);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn put_timeout(&self, item: T, timeout: Duration) -> Result<(), PutError<T>> {
        self.put_until(item, crate::deadline::after(timeout))
    }

    /// Puts an item if there is room now, without waiting (`put_timeout(item,
    /// Duration::ZERO)`); [`Error::Full`] otherwise.
    ///
    /// ```
    /// let q = multiproc::queues::Queue::new(1)?;
    /// q.try_put('a')?;
    /// assert!(matches!(q.try_put('b').unwrap_err().error(), multiproc::Error::Full));
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn try_put(&self, item: T) -> Result<(), PutError<T>> {
        self.put_timeout(item, Duration::ZERO)
    }

    /// Python's name for [`try_put`](Self::try_put).
    ///
    /// ```
    /// let q = multiproc::queues::Queue::new(1)?;
    /// q.put_nowait('a')?;
    /// assert!(q.put_nowait('b').is_err());
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn put_nowait(&self, item: T) -> Result<(), PutError<T>> {
        self.try_put(item)
    }

    fn put_until(&self, item: T, deadline: Option<Instant>) -> Result<(), PutError<T>> {
        let scratch = ENCODE_SCRATCH.take();
        let record = match encode_record_into(&self.ring, &item, scratch, deadline) {
            Ok(record) => record,
            Err(e) => return Err(PutError::new(item, e)),
        };
        let mut records = [record];
        let (done, result) = self.ring.put_records(&records, deadline);
        settle_blocks(&self.ring, &mut records, done);
        let [record] = records;
        if record.payload.capacity() <= SCRATCH_KEEP {
            ENCODE_SCRATCH.set(record.payload);
        }
        match result {
            Err(e) => Err(PutError::new(item, e)),
            Ok(()) if done == 0 => Err(PutError::new(item, Error::Full)),
            Ok(()) => Ok(()),
        }
    }

    /// Takes the oldest item, waiting for one as long as it takes.
    ///
    /// # Errors
    /// [`Error::Closed`] once the queue is closed and drained; [`Error::Disconnected`] when
    /// the queue is empty and no other live process holds it any more (see
    /// [the module docs](self#disconnection)); [`Error::Codec`] for bytes that do not
    /// decode as a `T`.
    ///
    /// ```
    /// let q = multiproc::queues::Queue::new(0)?;
    /// q.put(5u8)?;
    /// assert_eq!(q.get()?, 5);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn get(&self) -> Result<T> {
        self.get_until(None)
    }

    /// Takes the oldest item, waiting at most `timeout`; [`Error::Empty`] when the time
    /// runs out. Other errors as for [`get`](Self::get).
    ///
    /// ```
    /// use std::time::Duration;
    /// let q = multiproc::queues::Queue::<i32>::new(0)?;
    /// assert!(matches!(q.get_timeout(Duration::from_millis(10)), Err(multiproc::Error::Empty)));
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn get_timeout(&self, timeout: Duration) -> Result<T> {
        self.get_until(crate::deadline::after(timeout))
    }

    /// Takes the oldest item if there is one now, without waiting (`get_timeout(Duration::ZERO)`);
    /// [`Error::Empty`] otherwise.
    ///
    /// ```
    /// let q = multiproc::queues::Queue::new(0)?;
    /// assert!(matches!(q.try_get(), Err(multiproc::Error::Empty)));
    /// q.put(5u8)?;
    /// assert_eq!(q.try_get()?, 5);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn try_get(&self) -> Result<T> {
        self.get_timeout(Duration::ZERO)
    }

    /// Python's name for [`try_get`](Self::try_get).
    ///
    /// ```
    /// let q = multiproc::queues::Queue::new(0)?;
    /// assert!(q.get_nowait().is_err());
    /// q.put(5u8)?;
    /// assert_eq!(q.get_nowait()?, 5);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn get_nowait(&self) -> Result<T> {
        self.try_get()
    }

    fn get_until(&self, deadline: Option<Instant>) -> Result<T> {
        let mut items = self.take(1, deadline)?;
        items.pop().ok_or(Error::Empty)
    }

    /// Takes up to `max` records and decodes them (with a reused buffer).
    fn take(&self, max: usize, deadline: Option<Instant>) -> Result<Vec<T>> {
        let mut popped = POP_SCRATCH.take();
        popped.records.clear();
        popped.bytes.clear();
        let result = self.ring.get_records(max, &mut popped, deadline);
        let items = match result {
            Ok(true) => popped
                .records
                .iter()
                .map(|(kind, range)| decode_record(&self.ring, *kind, &popped.bytes[range.clone()]))
                .collect(),
            Ok(false) => Err(Error::Empty),
            Err(e) => Err(e),
        };
        if popped.bytes.capacity() <= SCRATCH_KEEP {
            POP_SCRATCH.set(popped);
        }
        items
    }

    /// Puts several items in order, taking the producer lock once for as many as fit, and
    /// waiting for room for the rest as long as it takes. On failure the items that did
    /// not go in come back in the [`PutError`] (those before them are queued); errors as
    /// for [`put`](Self::put).
    ///
    /// ```
    /// let q = multiproc::queues::Queue::new(0)?;
    /// q.put_many(vec![1, 2, 3])?;
    /// assert_eq!(q.get_many(10)?, vec![1, 2, 3]);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn put_many(&self, items: impl IntoIterator<Item = T>) -> Result<(), PutError<Vec<T>>> {
        self.put_many_until(items, None)
    }

    /// [`put_many`](Self::put_many), waiting at most `timeout` for room; on
    /// [`Error::Full`] a prefix of the items went in and the rest come back.
    ///
    /// ```
    /// use std::time::Duration;
    /// let q = multiproc::queues::Queue::new(2)?;
    /// let e = q.put_many_timeout(vec![1, 2, 3], Duration::from_millis(10)).unwrap_err();
    /// assert!(matches!(e.error(), multiproc::Error::Full));
    /// assert_eq!(e.into_item(), vec![3]);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn put_many_timeout(
        &self,
        items: impl IntoIterator<Item = T>,
        timeout: Duration,
    ) -> Result<(), PutError<Vec<T>>> {
        self.put_many_until(items, crate::deadline::after(timeout))
    }

    /// [`put_many`](Self::put_many) without waiting: the items that fit now go in, the
    /// rest come back with [`Error::Full`].
    ///
    /// ```
    /// let q = multiproc::queues::Queue::new(1)?;
    /// assert_eq!(q.try_put_many(vec!['a', 'b']).unwrap_err().into_item(), vec!['b']);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn try_put_many(&self, items: impl IntoIterator<Item = T>) -> Result<(), PutError<Vec<T>>> {
        self.put_many_timeout(items, Duration::ZERO)
    }

    fn put_many_until(
        &self,
        items: impl IntoIterator<Item = T>,
        deadline: Option<Instant>,
    ) -> Result<(), PutError<Vec<T>>> {
        let mut items: Vec<T> = items.into_iter().collect();
        let mut records = Vec::with_capacity(items.len());
        for item in &items {
            match encode_record(&self.ring, item, deadline) {
                Ok(record) => records.push(record),
                Err(e) => {
                    settle_blocks(&self.ring, &mut records, 0);
                    return Err(PutError::new(items, e));
                }
            }
        }
        let (done, result) = self.ring.put_records(&records, deadline);
        settle_blocks(&self.ring, &mut records, done);
        let error = match result {
            Err(e) => e,
            Ok(()) if done < records.len() => Error::Full,
            Ok(()) => return Ok(()),
        };
        items.drain(..done);
        Err(PutError::new(items, error))
    }

    /// Takes between one and `max` items (as many as are there, up to `max`), waiting for
    /// the first as long as it takes; errors as for [`get`](Self::get).
    ///
    /// ```
    /// let q = multiproc::queues::Queue::new(0)?;
    /// q.put_many(0..5)?;
    /// assert_eq!(q.get_many(3)?, vec![0, 1, 2]);
    /// assert_eq!(q.get_many(3)?, vec![3, 4]);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn get_many(&self, max: usize) -> Result<Vec<T>> {
        self.get_many_until(max, None)
    }

    /// [`get_many`](Self::get_many), waiting at most `timeout` for the first item;
    /// [`Error::Empty`] when none came.
    ///
    /// ```
    /// use std::time::Duration;
    /// let q = multiproc::queues::Queue::<u8>::new(0)?;
    /// assert!(matches!(q.get_many_timeout(4, Duration::from_millis(10)), Err(multiproc::Error::Empty)));
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn get_many_timeout(&self, max: usize, timeout: Duration) -> Result<Vec<T>> {
        self.get_many_until(max, crate::deadline::after(timeout))
    }

    /// [`get_many`](Self::get_many) without waiting; [`Error::Empty`] when nothing is
    /// queued now.
    ///
    /// ```
    /// let q = multiproc::queues::Queue::new(0)?;
    /// q.put_many([1, 2])?;
    /// assert_eq!(q.try_get_many(8)?, vec![1, 2]);
    /// assert!(matches!(q.try_get_many(8), Err(multiproc::Error::Empty)));
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn try_get_many(&self, max: usize) -> Result<Vec<T>> {
        self.get_many_timeout(max, Duration::ZERO)
    }

    fn get_many_until(&self, max: usize, deadline: Option<Instant>) -> Result<Vec<T>> {
        if max == 0 {
            return Ok(Vec::new());
        }
        self.take(max, deadline)
    }

    /// The number of items queued (Python's `qsize()`; exact at the instant it is read).
    ///
    /// ```
    /// let q = multiproc::queues::Queue::new(0)?;
    /// q.put("x".to_string())?;
    /// assert_eq!(q.qsize(), 1);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn qsize(&self) -> usize {
        self.ring.len() as usize
    }

    /// Whether the queue is empty.
    ///
    /// ```
    /// assert!(multiproc::queues::Queue::<u8>::new(0)?.empty());
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn empty(&self) -> bool {
        self.qsize() == 0
    }

    /// Whether the queue holds `maxsize` items.
    ///
    /// ```
    /// let q = multiproc::queues::Queue::new(1)?;
    /// q.put(0u8)?;
    /// assert!(q.full());
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn full(&self) -> bool {
        let maxsize = self.ring.maxsize();
        maxsize != 0 && self.ring.len() >= maxsize
    }

    /// The item bound given at creation (0: none).
    ///
    /// ```
    /// assert_eq!(multiproc::queues::Queue::<u8>::new(7)?.maxsize(), 7);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn maxsize(&self) -> usize {
        self.ring.maxsize() as usize
    }

    /// Closes the queue for every process: later puts fail with [`Error::Closed`]; getters
    /// take what is left, then get [`Error::Closed`]. (Python's `close` only stops the
    /// calling process; a shared close is what its users usually build with a sentinel.)
    ///
    /// ```
    /// let q = multiproc::queues::Queue::new(0)?;
    /// q.put(1)?;
    /// q.close();
    /// assert!(q.put(2).is_err());
    /// assert_eq!(q.get()?, 1);
    /// assert!(matches!(q.get(), Err(multiproc::Error::Closed(_))));
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn close(&self) {
        self.ring.close();
    }

    /// Whether the queue was closed.
    ///
    /// ```
    /// let q = multiproc::queues::Queue::<u8>::new(0)?;
    /// q.close();
    /// assert!(q.is_closed());
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn is_closed(&self) -> bool {
        self.ring.closed()
    }
}

// --------------------------------------------------------------------------------------
// SimpleQueue

/// An unbounded queue with only `put`, `get` and `empty` (Python's
/// `multiprocessing.SimpleQueue`).
///
/// ```
/// let q = multiproc::queues::SimpleQueue::new()?;
/// q.put("a".to_string())?;
/// assert!(!q.empty());
/// assert_eq!(q.get()?, "a");
/// # Ok::<(), multiproc::Error>(())
/// ```
#[derive(Serialize, Deserialize)]
#[serde(bound = "")]
pub struct SimpleQueue<T> {
    inner: Queue<T>,
}

impl<T> Clone for SimpleQueue<T> {
    fn clone(&self) -> Self {
        SimpleQueue { inner: self.inner.clone() }
    }
}

impl<T> fmt::Debug for SimpleQueue<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SimpleQueue").field("inner", &self.inner).finish()
    }
}

impl<T> SimpleQueue<T> {
    /// The descriptor of the queue's shared segment (see [`Queue::export_fd`]).
    ///
    /// ```
    /// use multiproc::queues::SimpleQueue;
    ///
    /// let q = SimpleQueue::<u32>::new()?;
    /// q.put(7)?;
    /// let same = SimpleQueue::<u32>::from_fd(q.export_fd().try_clone_to_owned()?)?;
    /// assert_eq!(same.get()?, 7);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn export_fd(&self) -> BorrowedFd<'_> {
        self.inner.export_fd()
    }

    /// Opens the queue whose segment descriptor [`SimpleQueue::export_fd`] exported (see
    /// [`Queue::from_fd`]).
    ///
    /// ```
    /// let q = multiproc::queues::SimpleQueue::<u32>::new()?;
    /// let fd = q.export_fd().try_clone_to_owned()?;
    /// assert!(multiproc::queues::SimpleQueue::<u32>::from_fd(fd)?.empty());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn from_fd(fd: OwnedFd) -> Result<SimpleQueue<T>> {
        Ok(SimpleQueue { inner: Queue::from_fd(fd)? })
    }

    /// How the queue's items are encoded (see [`Queue::codec`]).
    ///
    /// ```
    /// let q = multiproc::queues::SimpleQueue::<u8>::new()?;
    /// assert_eq!(q.codec(), multiproc::Codec::Postcard);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn codec(&self) -> Codec {
        self.inner.codec()
    }
}

impl<T: Serialize + DeserializeOwned + 'static> SimpleQueue<T> {
    /// A new, empty queue.
    ///
    /// ```
    /// assert!(multiproc::queues::SimpleQueue::<u8>::new()?.empty());
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn new() -> Result<SimpleQueue<T>> {
        Ok(SimpleQueue { inner: Queue::new(0)? })
    }

    /// A new, empty queue whose items are encoded with `codec` (see [`Queue::with_codec`]).
    ///
    /// ```
    /// use multiproc::{queues::SimpleQueue, Codec};
    /// let q = SimpleQueue::<String>::with_codec(Codec::Pickle)?;
    /// q.put("x".into())?;
    /// assert_eq!((q.get()?, q.codec()), ("x".to_string(), Codec::Pickle));
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn with_codec(codec: Codec) -> Result<SimpleQueue<T>> {
        Ok(SimpleQueue { inner: Queue::with_codec(0, codec)? })
    }

    /// Puts an item, waiting for room in the ring as long as it takes (see [`Queue::put`]).
    ///
    /// ```
    /// let q = multiproc::queues::SimpleQueue::new()?;
    /// q.put(vec![1, 2])?;
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn put(&self, item: T) -> Result<(), PutError<T>> {
        self.inner.put(item)
    }

    /// Puts an item, waiting at most `timeout` for room (see [`Queue::put_timeout`]).
    ///
    /// ```
    /// let q = multiproc::queues::SimpleQueue::new()?;
    /// q.put_timeout(1, std::time::Duration::from_secs(1))?;
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn put_timeout(&self, item: T, timeout: Duration) -> Result<(), PutError<T>> {
        self.inner.put_timeout(item, timeout)
    }

    /// Puts an item if there is room now (see [`Queue::try_put`]).
    ///
    /// ```
    /// let q = multiproc::queues::SimpleQueue::new()?;
    /// q.try_put('a')?;
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn try_put(&self, item: T) -> Result<(), PutError<T>> {
        self.inner.try_put(item)
    }

    /// Takes the oldest item, waiting for one as long as it takes (see [`Queue::get`]).
    ///
    /// ```
    /// let q = multiproc::queues::SimpleQueue::new()?;
    /// q.put(3)?;
    /// assert_eq!(q.get()?, 3);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn get(&self) -> Result<T> {
        self.inner.get()
    }

    /// Takes the oldest item, waiting at most `timeout`; [`Error::Empty`] when none came.
    ///
    /// ```
    /// use std::time::Duration;
    /// let q = multiproc::queues::SimpleQueue::<u8>::new()?;
    /// assert!(matches!(q.get_timeout(Duration::from_millis(5)), Err(multiproc::Error::Empty)));
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn get_timeout(&self, timeout: Duration) -> Result<T> {
        self.inner.get_timeout(timeout)
    }

    /// Takes the oldest item if there is one now; [`Error::Empty`] otherwise.
    ///
    /// ```
    /// let q = multiproc::queues::SimpleQueue::<u8>::new()?;
    /// assert!(matches!(q.try_get(), Err(multiproc::Error::Empty)));
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn try_get(&self) -> Result<T> {
        self.inner.try_get()
    }

    /// Whether the queue is empty.
    ///
    /// ```
    /// assert!(multiproc::queues::SimpleQueue::<u8>::new()?.empty());
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn empty(&self) -> bool {
        self.inner.empty()
    }

    /// Closes the queue (see [`Queue::close`]).
    ///
    /// ```
    /// let q = multiproc::queues::SimpleQueue::<u8>::new()?;
    /// q.close();
    /// assert!(q.put(1).is_err());
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn close(&self) {
        self.inner.close()
    }
}

// --------------------------------------------------------------------------------------
// JoinableQueue

/// A [`Queue`] that counts unfinished tasks (Python's `multiprocessing.JoinableQueue`):
/// every `put` adds one, [`task_done`](Self::task_done) removes one, and
/// [`join`](Self::join) waits until none are left.
///
/// ```
/// let q = multiproc::queues::JoinableQueue::new(0)?;
/// q.put("job".to_string())?;
/// let _job: String = q.get()?;
/// q.task_done()?;
/// q.join()?;
/// assert!(q.task_done().is_err()); // called once too often
/// # Ok::<(), multiproc::Error>(())
/// ```
#[derive(Serialize, Deserialize)]
#[serde(bound = "")]
pub struct JoinableQueue<T> {
    inner: Queue<T>,
}

impl<T> Clone for JoinableQueue<T> {
    fn clone(&self) -> Self {
        JoinableQueue { inner: self.inner.clone() }
    }
}

impl<T> fmt::Debug for JoinableQueue<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JoinableQueue").field("inner", &self.inner).finish()
    }
}

impl<T> JoinableQueue<T> {
    /// The descriptor of the queue's shared segment (see [`Queue::export_fd`]).
    ///
    /// ```
    /// use multiproc::queues::JoinableQueue;
    ///
    /// let q = JoinableQueue::<u32>::new(0)?;
    /// q.put(7)?;
    /// let same = JoinableQueue::<u32>::from_fd(q.export_fd().try_clone_to_owned()?)?;
    /// assert_eq!(same.get()?, 7);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn export_fd(&self) -> BorrowedFd<'_> {
        self.inner.export_fd()
    }

    /// Opens the queue whose segment descriptor [`JoinableQueue::export_fd`] exported (see
    /// [`Queue::from_fd`]).
    ///
    /// ```
    /// let q = multiproc::queues::JoinableQueue::<u32>::new(0)?;
    /// let fd = q.export_fd().try_clone_to_owned()?;
    /// assert!(multiproc::queues::JoinableQueue::<u32>::from_fd(fd)?.empty());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn from_fd(fd: OwnedFd) -> Result<JoinableQueue<T>> {
        Ok(JoinableQueue { inner: Queue::from_fd(fd)? })
    }

    /// How the queue's items are encoded (see [`Queue::codec`]).
    ///
    /// ```
    /// let q = multiproc::queues::JoinableQueue::<u8>::new(0)?;
    /// assert_eq!(q.codec(), multiproc::Codec::Postcard);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn codec(&self) -> Codec {
        self.inner.codec()
    }
}

impl<T: Serialize + DeserializeOwned + 'static> JoinableQueue<T> {
    /// A joinable queue holding at most `maxsize` items (0: no item bound).
    ///
    /// ```
    /// assert_eq!(multiproc::queues::JoinableQueue::<u8>::new(2)?.maxsize(), 2);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn new(maxsize: usize) -> Result<JoinableQueue<T>> {
        Ok(JoinableQueue { inner: Queue::new(maxsize)? })
    }

    /// A joinable queue whose items are encoded with `codec` (see [`Queue::with_codec`]).
    ///
    /// ```
    /// use multiproc::{queues::JoinableQueue, Codec};
    /// let q = JoinableQueue::<i64>::with_codec(0, Codec::Pickle)?;
    /// q.put(-3)?;
    /// assert_eq!(q.get()?, -3);
    /// q.task_done()?;
    /// assert_eq!(q.codec(), Codec::Pickle);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn with_codec(maxsize: usize, codec: Codec) -> Result<JoinableQueue<T>> {
        Ok(JoinableQueue { inner: Queue::with_codec(maxsize, codec)? })
    }

    fn unfinished(&self) -> &AtomicU32 {
        self.inner.ring.word(H_UNFINISHED)
    }

    /// Puts an item and counts one more unfinished task, waiting for room as long as it
    /// takes (see [`Queue::put`]).
    ///
    /// ```
    /// let q = multiproc::queues::JoinableQueue::new(0)?;
    /// q.put(1)?;
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn put(&self, item: T) -> Result<(), PutError<T>> {
        self.counted(|q| q.put(item))
    }

    /// Puts an item and counts one more unfinished task, waiting at most `timeout` for
    /// room (see [`Queue::put_timeout`]); a put that fails counts nothing.
    ///
    /// ```
    /// use std::time::Duration;
    /// let q = multiproc::queues::JoinableQueue::new(1)?;
    /// q.put_timeout(1, Duration::from_secs(1))?;
    /// assert!(q.put_timeout(2, Duration::from_millis(5)).is_err());
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn put_timeout(&self, item: T, timeout: Duration) -> Result<(), PutError<T>> {
        self.counted(|q| q.put_timeout(item, timeout))
    }

    /// Puts an item if there is room now (see [`Queue::try_put`]).
    ///
    /// ```
    /// let q = multiproc::queues::JoinableQueue::new(1)?;
    /// q.try_put(1)?;
    /// assert!(matches!(q.try_put(2).unwrap_err().error(), multiproc::Error::Full));
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn try_put(&self, item: T) -> Result<(), PutError<T>> {
        self.counted(|q| q.try_put(item))
    }

    fn counted(
        &self,
        put: impl FnOnce(&Queue<T>) -> Result<(), PutError<T>>,
    ) -> Result<(), PutError<T>> {
        self.unfinished().fetch_add(1, SeqCst);
        put(&self.inner).inspect_err(|_| self.finish_one())
    }

    /// Takes the oldest item, waiting as long as it takes (see [`Queue::get`]).
    ///
    /// ```
    /// let q = multiproc::queues::JoinableQueue::new(0)?;
    /// q.put('x')?;
    /// assert_eq!(q.get()?, 'x');
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn get(&self) -> Result<T> {
        self.inner.get()
    }

    /// Takes the oldest item, waiting at most `timeout` (see [`Queue::get_timeout`]).
    ///
    /// ```
    /// use std::time::Duration;
    /// let q = multiproc::queues::JoinableQueue::<u8>::new(0)?;
    /// assert!(matches!(q.get_timeout(Duration::from_millis(5)), Err(multiproc::Error::Empty)));
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn get_timeout(&self, timeout: Duration) -> Result<T> {
        self.inner.get_timeout(timeout)
    }

    /// Takes the oldest item if there is one now (see [`Queue::try_get`]).
    ///
    /// ```
    /// let q = multiproc::queues::JoinableQueue::<u8>::new(0)?;
    /// assert!(matches!(q.try_get(), Err(multiproc::Error::Empty)));
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn try_get(&self) -> Result<T> {
        self.inner.try_get()
    }

    /// Marks one task done; [`Error::InvalidRelease`] if there are none unfinished
    /// (Python raises `ValueError`).
    ///
    /// ```
    /// let q = multiproc::queues::JoinableQueue::<u8>::new(0)?;
    /// assert!(q.task_done().is_err());
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn task_done(&self) -> Result<()> {
        let mut n = self.unfinished().load(SeqCst);
        loop {
            if n == 0 {
                return Err(Error::InvalidRelease("task_done() called too many times"));
            }
            match self.unfinished().compare_exchange(n, n - 1, SeqCst, SeqCst) {
                Ok(_) => break,
                Err(now) => n = now,
            }
        }
        if n == 1 {
            self.wake_joiners();
        }
        Ok(())
    }

    fn finish_one(&self) {
        if self.unfinished().fetch_sub(1, SeqCst) == 1 {
            self.wake_joiners();
        }
    }

    fn wake_joiners(&self) {
        let ring = &self.inner.ring;
        raw::wake::wake::<Os>(ring.word(H_JOIN_SEQ), ring.word(H_JOINERS_ASLEEP), i32::MAX as u32);
    }

    /// Waits until every item put has been marked done, as long as it takes.
    ///
    /// When tasks are unfinished and no other live process holds the queue any more (every
    /// consumer died, some of them between `get` and `task_done`), the wait would last for
    /// ever: it ends with [`Error::Disconnected`] instead, as a `get` on a deserted queue
    /// does.
    ///
    /// ```
    /// let q = multiproc::queues::JoinableQueue::new(0)?;
    /// q.put(1)?;
    /// q.get()?;
    /// q.task_done()?;
    /// q.join()?;
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn join(&self) -> Result<()> {
        self.join_until(None, Duration::MAX)
    }

    /// Waits at most `timeout` until every item put has been marked done;
    /// [`Error::Timeout`] otherwise.
    ///
    /// ```
    /// use std::time::Duration;
    /// let q = multiproc::queues::JoinableQueue::new(0)?;
    /// q.put(1)?;
    /// assert!(matches!(q.join_timeout(Duration::from_millis(10)), Err(multiproc::Error::Timeout(_))));
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn join_timeout(&self, timeout: Duration) -> Result<()> {
        self.join_until(crate::deadline::after(timeout), timeout)
    }

    fn join_until(&self, deadline: Option<Instant>, timeout: Duration) -> Result<()> {
        let ring = &self.inner.ring;
        let mut desertion = ring::Desertion::default();
        loop {
            if self.unfinished().load(SeqCst) == 0 {
                return Ok(());
            }
            if deadline.is_some_and(|d| Instant::now() >= d) {
                return Err(Error::Timeout(timeout));
            }
            if desertion.due() {
                // Nobody else is left to call `task_done`: the wait would last for ever.
                if holders::deserted(&ring.segment) && self.unfinished().load(SeqCst) != 0 {
                    return Err(Error::Disconnected("queue"));
                }
                desertion.checked();
            }
            let nap = raw::remaining(deadline).map_or(ring::NAP, |l| l.min(ring::NAP));
            let nap = desertion.nap(nap);
            raw::wake::sleep::<Os>(
                ring.word(H_JOIN_SEQ),
                ring.word(H_JOINERS_ASLEEP),
                Some(nap),
                || self.unfinished().load(SeqCst) != 0,
            );
        }
    }

    /// See [`Queue::qsize`].
    ///
    /// ```
    /// assert_eq!(multiproc::queues::JoinableQueue::<u8>::new(0)?.qsize(), 0);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn qsize(&self) -> usize {
        self.inner.qsize()
    }

    /// See [`Queue::empty`].
    ///
    /// ```
    /// assert!(multiproc::queues::JoinableQueue::<u8>::new(0)?.empty());
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn empty(&self) -> bool {
        self.inner.empty()
    }

    /// See [`Queue::maxsize`].
    ///
    /// ```
    /// assert_eq!(multiproc::queues::JoinableQueue::<u8>::new(0)?.maxsize(), 0);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn maxsize(&self) -> usize {
        self.inner.maxsize()
    }

    /// See [`Queue::close`].
    ///
    /// ```
    /// let q = multiproc::queues::JoinableQueue::<u8>::new(0)?;
    /// q.close();
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn close(&self) {
        self.inner.close()
    }
}
