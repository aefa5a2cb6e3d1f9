//! Queues between processes: [`Queue`], [`SimpleQueue`], [`JoinableQueue`] (Python's
//! `multiprocessing.queues`), on a ring buffer in shared memory that survives processes
//! killed at any instruction.
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
//! no CPU.
//!
//! The indices, records and waiting are the algorithm in `raw::ring` (apart from the
//! operating system, and model-checked by `tests/loom_raw.rs`); this module lays the ring
//! out in its segment and encodes, decodes and moves large items.

use std::any::{Any, TypeId};
use std::fmt;
use std::marker::PhantomData;
use std::sync::atomic::Ordering::{Relaxed, SeqCst};
use std::sync::atomic::{AtomicU32, AtomicU64};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::codec::Codec;
use crate::error::{Error, Result};
use crate::raw::{self, ring, Os};
use crate::segment::Segment;

mod blocks;
use blocks::{Blocks, Outgoing};

// Header layout (byte offsets in the segment).
const KIND_TAG: u32 = 0x4d50_5155; // "MPQU"
                                   // Words written by different parties live on different cache lines (128 bytes apart, so
                                   // that adjacent-line prefetching does not pair them either).
const H_CAPACITY: usize = 8; // u64: data region size (read-only)
const H_MAXSIZE: usize = 16; // u32: item bound, 0 = none (read-only)
const H_CLOSED: usize = 20; // u32: 1 once closed
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
const DATA: usize = 1024;

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
}

impl Ring {
    fn create(capacity: usize, maxsize: usize) -> Result<Ring> {
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
        let blocks = Arc::new(Blocks::new(segment.identity()?));
        Ok(Ring { segment, capacity, blocks })
    }

    fn attach(segment: Arc<Segment>) -> Result<Ring> {
        let capacity = segment.word64(H_CAPACITY).load(SeqCst) as usize;
        if capacity < 64 || !capacity.is_power_of_two() || DATA + capacity > segment.mapping().len()
        {
            return Err(Error::Codec("queue: the shared segment's header is inconsistent".into()));
        }
        let blocks = Arc::new(Blocks::new(segment.identity()?));
        Ok(Ring { segment, capacity, blocks })
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
        let mut done = 0;
        let result =
            ring::put::<Os, _, _>(self, crate::sys::pid::pid(), records, deadline, &mut done)
                .map_err(ring_error);
        (done, result)
    }

    /// Takes between 1 and `max` records, waiting until `deadline`; `Ok(false)` on timeout.
    fn get_records(&self, max: usize, out: &mut Popped, deadline: Option<Instant>) -> Result<bool> {
        ring::get::<Os, _, _>(self, crate::sys::pid::pid(), max, out, deadline).map_err(ring_error)
    }

    fn close(&self) {
        ring::close::<Os, _>(self);
    }
}

fn ring_error(failure: ring::Failure) -> Error {
    match failure {
        ring::Failure::Closed => Error::Closed("queue"),
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

/// An encoded item on its way into the ring.
struct Record {
    kind: u32,
    payload: Vec<u8>,
    /// A large item's block, held by the producer until the record is published.
    block: Option<Outgoing>,
}

impl ring::Outbound for Record {
    #[inline]
    fn kind(&self) -> u32 {
        self.kind
    }

    #[inline]
    fn payload(&self) -> &[u8] {
        &self.payload
    }
}

/// After a put: the blocks of the first `published` records are handed to their
/// consumers, those of the rest held nothing after all.
fn settle_blocks(ring: &Ring, records: &mut [Record], published: usize) {
    for (i, record) in records.iter_mut().enumerate() {
        if let Some(block) = record.block.take() {
            if i < published {
                ring.blocks.sent(block);
            } else {
                ring.blocks.unsent(block);
            }
        }
    }
}

/// Encodes `item`; an item too large for the ring goes into a block of its own.
fn encode_record<T: Serialize + 'static>(
    ring: &Ring,
    item: &T,
    deadline: Option<Instant>,
) -> Result<Record> {
    encode_record_into(ring, item, Vec::new(), deadline)
}

/// Encodes `item` into `payload` (cleared first; its allocation is reused).
fn encode_record_into<T: Serialize + 'static>(
    ring: &Ring,
    item: &T,
    mut payload: Vec<u8>,
    deadline: Option<Instant>,
) -> Result<Record> {
    payload.clear();
    if let Some(bytes) = (item as &dyn Any).downcast_ref::<Vec<u8>>() {
        // Byte vectors: postcard's own encoding (a varint length, then the bytes), written
        // with one copy instead of one serializer call per byte.
        let mut prefix = [0u8; 10];
        let prefix = varint(bytes.len(), &mut prefix);
        let total = prefix.len() + bytes.len();
        if total <= ring.inline_limit() {
            payload.extend_from_slice(prefix);
            payload.extend_from_slice(bytes);
            return Ok(Record { kind: KIND_INLINE, payload, block: None });
        }
        // Large: straight into a block, without an intermediate copy.
        let block = ring.blocks.take(total, deadline)?;
        block.write(0, prefix)?;
        block.write(prefix.len(), bytes)?;
        return indirect_record(block, total, payload);
    }
    Codec::Postcard.encode_into(item, &mut payload)?;
    if payload.len() <= ring.inline_limit() {
        return Ok(Record { kind: KIND_INLINE, payload, block: None });
    }
    let total = payload.len();
    let block = ring.blocks.take(total, deadline)?;
    block.write(0, &payload)?;
    indirect_record(block, total, Vec::new())
}

/// The ring record of an item in `block`: the block's name and the item's length.
fn indirect_record(block: Outgoing, len: usize, mut payload: Vec<u8>) -> Result<Record> {
    payload.clear();
    Codec::Postcard.encode_into(&(block.name(), len as u64), &mut payload)?;
    Ok(Record { kind: KIND_INDIRECT, payload, block: Some(block) })
}

/// Writes `n` as postcard's varint (LEB128) and returns the used part of `buf`.
fn varint(mut n: usize, buf: &mut [u8; 10]) -> &[u8] {
    let mut i = 0;
    loop {
        let byte = (n & 0x7f) as u8;
        n >>= 7;
        if n == 0 {
            buf[i] = byte;
            return &buf[..=i];
        }
        buf[i] = byte | 0x80;
        i += 1;
    }
}

/// Reads a postcard varint length from the front of `bytes`.
fn read_varint(bytes: &[u8]) -> Result<(usize, &[u8])> {
    let mut n: u64 = 0;
    for (i, &byte) in bytes.iter().enumerate().take(10) {
        n |= u64::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            let n = usize::try_from(n).map_err(|_| Error::Codec("length out of range".into()))?;
            return Ok((n, &bytes[i + 1..]));
        }
    }
    Err(Error::Codec("malformed length prefix".into()))
}

/// Decodes one item; byte vectors take the one-copy path that matches `encode_record_into`.
fn decode_item<T: DeserializeOwned + 'static>(bytes: &[u8]) -> Result<T> {
    if TypeId::of::<T>() == TypeId::of::<Vec<u8>>() {
        let (len, rest) = read_varint(bytes)?;
        if rest.len() != len {
            return Err(Error::Codec(format!(
                "a byte vector of {len} bytes in a record of {} bytes",
                rest.len()
            )));
        }
        let mut vec = byte_vector(len);
        vec.extend_from_slice(rest);
        return as_item(vec);
    }
    Codec::Postcard.decode(bytes)
}

/// An empty byte vector with room for `len` bytes (huge pages for large ones).
fn byte_vector(len: usize) -> Vec<u8> {
    let mut vec = Vec::with_capacity(len);
    if len >= 4 << 20 {
        crate::sys::mem::advise_huge_pages(&mut vec);
    }
    vec
}

/// `vec` as the item type `T`, which is `Vec<u8>`.
fn as_item<T: 'static>(vec: Vec<u8>) -> Result<T> {
    let mut slot = Some(vec);
    (&mut slot as &mut dyn Any)
        .downcast_mut::<Option<T>>()
        .and_then(Option::take)
        .ok_or_else(|| Error::Codec("byte vector type mismatch".into()))
}

/// Decodes one item held in a large-item block, copying it out once: byte vectors
/// straight into the vector returned, other items into a buffer they are decoded from.
fn decode_block_item<T: DeserializeOwned + 'static>(item: blocks::ItemBytes<'_>) -> Result<T> {
    if TypeId::of::<T>() == TypeId::of::<Vec<u8>>() {
        let mut head = [0u8; 10];
        let head = &mut head[..item.len().min(10)];
        item.read_at(0, head)?;
        let (len, rest) = read_varint(head)?;
        let prefix = head.len() - rest.len();
        if item.len() - prefix != len {
            return Err(Error::Codec(format!(
                "a byte vector of {len} bytes in a record of {} bytes",
                item.len() - prefix
            )));
        }
        let mut vec = byte_vector(len);
        item.extend_vec(prefix, &mut vec)?;
        return as_item(vec);
    }
    let mut bytes = Vec::with_capacity(item.len());
    item.extend_vec(0, &mut bytes)?;
    Codec::Postcard.decode(&bytes)
}

fn decode_record<T: DeserializeOwned + 'static>(
    ring: &Ring,
    kind: u32,
    payload: &[u8],
) -> Result<T> {
    match kind {
        KIND_INLINE => decode_item(payload),
        _ => {
            let (name, len): (String, u64) = Codec::Postcard.decode(payload)?;
            let len = usize::try_from(len).unwrap_or(usize::MAX);
            ring.blocks.read(&name, len, decode_block_item)?
        }
    }
}

// --------------------------------------------------------------------------------------
// Queue

/// A multi-producer, multi-consumer FIFO queue between processes (Python's
/// `multiprocessing.Queue`).
///
/// ```
/// use multiproc::{Process, queues::Queue};
///
/// fn f(q: Queue<String>) {
///     q.put("Hello from Process".to_string(), None).unwrap();
/// }
///
/// let q = Queue::new(0)?;
/// let p = Process::new(f, q.clone());
/// p.start()?;
/// assert_eq!(q.get(None)?, "Hello from Process");
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
    /// q.put(vec![7; 100_000], None)?; // larger than the ring: travels on its own
    /// assert_eq!(q.get(None)?.len(), 100_000);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn with_capacity(maxsize: usize, capacity: usize) -> Result<Queue<T>> {
        Ok(Queue { ring: Ring::create(capacity, maxsize)?, item: PhantomData })
    }

    /// Puts an item, waiting at most `timeout` for room (`None`: as long as it takes);
    /// [`Error::Full`] when the time runs out. The item is encoded first, so an item that
    /// cannot be encoded is an error here, not a lost message.
    ///
    /// ```
    /// use std::time::Duration;
    /// let q = multiproc::queues::Queue::new(1)?;
    /// q.put(1, None)?;
    /// assert!(matches!(q.put(2, Some(Duration::from_millis(10))), Err(multiproc::Error::Full)));
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn put(&self, item: T, timeout: Option<Duration>) -> Result<()> {
        let deadline = crate::deadline::within(timeout);
        let scratch = ENCODE_SCRATCH.take();
        let mut records = [encode_record_into(&self.ring, &item, scratch, deadline)?];
        let (done, result) = self.ring.put_records(&records, deadline);
        settle_blocks(&self.ring, &mut records, done);
        let [record] = records;
        if record.payload.capacity() <= SCRATCH_KEEP {
            ENCODE_SCRATCH.set(record.payload);
        }
        result?;
        if done == 0 {
            return Err(Error::Full);
        }
        Ok(())
    }

    /// Puts an item if there is room now (Python's `put_nowait`).
    ///
    /// ```
    /// let q = multiproc::queues::Queue::new(1)?;
    /// q.put_nowait('a')?;
    /// assert!(q.put_nowait('b').is_err());
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn put_nowait(&self, item: T) -> Result<()> {
        self.put(item, Some(Duration::ZERO))
    }

    /// Takes the oldest item, waiting at most `timeout` (`None`: as long as it takes);
    /// [`Error::Empty`] when the time runs out, [`Error::Closed`] once the queue is closed
    /// and drained.
    ///
    /// ```
    /// use std::time::Duration;
    /// let q = multiproc::queues::Queue::<i32>::new(0)?;
    /// assert!(matches!(q.get(Some(Duration::from_millis(10))), Err(multiproc::Error::Empty)));
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn get(&self, timeout: Option<Duration>) -> Result<T> {
        let mut items = self.take(1, timeout)?;
        items.pop().ok_or(Error::Empty)
    }

    /// Takes up to `max` records and decodes them (with a reused buffer).
    fn take(&self, max: usize, timeout: Option<Duration>) -> Result<Vec<T>> {
        let mut popped = POP_SCRATCH.take();
        popped.records.clear();
        popped.bytes.clear();
        let result = self.ring.get_records(max, &mut popped, crate::deadline::within(timeout));
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

    /// Takes the oldest item if there is one now (Python's `get_nowait`).
    ///
    /// ```
    /// let q = multiproc::queues::Queue::new(0)?;
    /// assert!(q.get_nowait().is_err());
    /// q.put(5u8, None)?;
    /// assert_eq!(q.get_nowait()?, 5);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn get_nowait(&self) -> Result<T> {
        self.get(Some(Duration::ZERO))
    }

    /// Puts several items in order, taking the producer lock once for as many as fit;
    /// waits at most `timeout` for room for the rest. On [`Error::Full`] a prefix of the
    /// items went in and the rest did not ([`qsize`](Self::qsize) tells how many are
    /// queued); without a timeout every item goes in.
    ///
    /// ```
    /// let q = multiproc::queues::Queue::new(0)?;
    /// q.put_many(vec![1, 2, 3], None)?;
    /// assert_eq!(q.get_many(10, None)?, vec![1, 2, 3]);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn put_many(
        &self,
        items: impl IntoIterator<Item = T>,
        timeout: Option<Duration>,
    ) -> Result<()> {
        let deadline = crate::deadline::within(timeout);
        let mut records = items
            .into_iter()
            .map(|item| encode_record(&self.ring, &item, deadline))
            .collect::<Result<Vec<_>>>()?;
        let (done, result) = self.ring.put_records(&records, deadline);
        settle_blocks(&self.ring, &mut records, done);
        result?;
        if done < records.len() {
            return Err(Error::Full);
        }
        Ok(())
    }

    /// Takes between one and `max` items (as many as are there, up to `max`), waiting at
    /// most `timeout` for the first.
    ///
    /// ```
    /// let q = multiproc::queues::Queue::new(0)?;
    /// q.put_many(0..5, None)?;
    /// assert_eq!(q.get_many(3, None)?, vec![0, 1, 2]);
    /// assert_eq!(q.get_many(3, None)?, vec![3, 4]);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn get_many(&self, max: usize, timeout: Option<Duration>) -> Result<Vec<T>> {
        if max == 0 {
            return Ok(Vec::new());
        }
        self.take(max, timeout)
    }

    /// The number of items queued (Python's `qsize()`; exact at the instant it is read).
    ///
    /// ```
    /// let q = multiproc::queues::Queue::new(0)?;
    /// q.put("x".to_string(), None)?;
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
    /// q.put(0u8, None)?;
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
    /// q.put(1, None)?;
    /// q.close();
    /// assert!(q.put(2, None).is_err());
    /// assert_eq!(q.get(None)?, 1);
    /// assert!(matches!(q.get(None), Err(multiproc::Error::Closed(_))));
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

    /// Puts an item, waiting for room in the ring if it is full.
    ///
    /// ```
    /// let q = multiproc::queues::SimpleQueue::new()?;
    /// q.put(vec![1, 2])?;
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn put(&self, item: T) -> Result<()> {
        self.inner.put(item, None)
    }

    /// Takes the oldest item, waiting for one.
    ///
    /// ```
    /// let q = multiproc::queues::SimpleQueue::new()?;
    /// q.put(3)?;
    /// assert_eq!(q.get()?, 3);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn get(&self) -> Result<T> {
        self.inner.get(None)
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
/// q.put("job".to_string(), None)?;
/// let _job: String = q.get(None)?;
/// q.task_done()?;
/// q.join(None)?;
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

    fn unfinished(&self) -> &AtomicU32 {
        self.inner.ring.word(H_UNFINISHED)
    }

    /// Puts an item and counts one more unfinished task.
    ///
    /// ```
    /// let q = multiproc::queues::JoinableQueue::new(0)?;
    /// q.put(1, None)?;
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn put(&self, item: T, timeout: Option<Duration>) -> Result<()> {
        self.unfinished().fetch_add(1, SeqCst);
        self.inner.put(item, timeout).inspect_err(|_| self.finish_one())
    }

    /// Takes the oldest item (see [`Queue::get`]).
    ///
    /// ```
    /// let q = multiproc::queues::JoinableQueue::new(0)?;
    /// q.put('x', None)?;
    /// assert_eq!(q.get(None)?, 'x');
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn get(&self, timeout: Option<Duration>) -> Result<T> {
        self.inner.get(timeout)
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

    /// Waits until every item put has been marked done, at most `timeout`;
    /// [`Error::Timeout`] otherwise. (A consumer killed between `get` and `task_done`
    /// leaves its task unfinished: bound the wait.)
    ///
    /// ```
    /// use std::time::Duration;
    /// let q = multiproc::queues::JoinableQueue::new(0)?;
    /// q.put(1, None)?;
    /// assert!(q.join(Some(Duration::from_millis(10))).is_err());
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn join(&self, timeout: Option<Duration>) -> Result<()> {
        let deadline = crate::deadline::within(timeout);
        let ring = &self.inner.ring;
        loop {
            if self.unfinished().load(SeqCst) == 0 {
                return Ok(());
            }
            if deadline.is_some_and(|d| Instant::now() >= d) {
                return Err(Error::Timeout(timeout.unwrap_or_default()));
            }
            let nap = raw::remaining(deadline).map_or(ring::NAP, |l| l.min(ring::NAP));
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
