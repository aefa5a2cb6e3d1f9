//! Shared memory blocks for items too large for a queue's ring, reused by the process
//! that made them.
//!
//! Fresh shared memory is expensive: every page is allocated, zeroed and faulted in on
//! first touch (with 4 KiB pages, a 64 MiB item takes 16384 faults on each side). So a
//! producer keeps the blocks it made and writes the next large item into one its
//! consumer has finished with, and a consumer keeps its mappings of the blocks it read:
//! a stream of large items then costs a copy in and a copy out.
//!
//! # Who may touch a block
//! A block starts with a header line whose state word says it:
//! - `FULL`: it holds an item no consumer has started reading;
//! - `READING`: a consumer (whose pid is the next word) is copying the item out;
//! - `FREE`: its consumer has finished; the producer that keeps it may write it again;
//! - `RELEASED`: the producer let go of it.
//!
//! The consumer ends its read with a swap to `FREE` (and a futex wake); a producer
//! letting go swaps in `RELEASED`. Whoever of the two swaps second (and so sees the
//! other's mark) unlinks the block, so it is unlinked exactly once. A block the producer
//! does not keep (its cache is full, or the item is huge) is `RELEASED` before it is
//! published, which makes the consumer unlink it.
//!
//! A producer that finds none of its blocks free but one being read waits (briefly, and
//! never past its put's deadline) for that read to end: a copy out of a block it already
//! has costs far less than the fresh pages of a new one. It never waits for a block that
//! nobody is reading, so a put does not depend on a consumer showing up.
//!
//! # Death
//! A block's name carries its producer and its queue (the device and inode of the ring's
//! segment): [`clean_orphans`] removes it only once the producer is gone *and* no live
//! process holds the queue. So an item published by a producer that then exits (normally
//! or not) stays in `/dev/shm` for its consumer, however late it comes, and `multiproc
//! shm clean` run meanwhile leaves it alone. A producer killed while writing a block has
//! not published it: nobody reads it, and it is removed once the queue is gone too. A consumer
//! that drops its mapping of a free block whose creator is gone unlinks it. A consumer killed while
//! reading leaves the block `READING` with its pid: the producer sees the reader is gone
//! and writes the block again (the item went with the consumer that had taken it).
//!
//! A producer that ends without dropping its queue handles (killed, or leaving through
//! `std::process::exit` with a handle still alive) leaves the free blocks it kept in
//! `/dev/shm`, named for it: once it and the queue are gone they are orphans, which
//! `multiproc shm clean` (or [`clean_orphans`]) removes.
//!
//! [`clean_orphans`]: crate::shared_memory::clean_orphans

use std::collections::VecDeque;
use std::sync::atomic::AtomicU32;
use std::sync::atomic::Ordering::{AcqRel, Acquire, Release};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::error::{Error, Result};
use crate::raw::{Os, Platform};
use crate::shared_memory::SharedMemory;
use crate::sync_util::get_mut;

/// Where an item starts in its block (after the header line).
pub(super) const BLOCK_DATA: usize = 64;

const FULL: u32 = 1;
const FREE: u32 = 2;
const RELEASED: u32 = 3;
const READING: u32 = 4;

/// Blocks a producer keeps per queue and process, and mappings a consumer keeps.
const KEEP_BLOCKS: usize = 4;
/// Most bytes of blocks a producer keeps per queue and process; a block larger than half
/// of this is never kept.
const KEEP_BYTES: usize = 512 << 20;
/// Kept blocks are sized in these steps, so that items of similar sizes share them.
const STEP: usize = 64 << 10;
/// The longest a producer waits for a block being read: long enough for a copy of the
/// largest kept block on a loaded machine, short next to the fresh pages it saves.
const READ_WAIT: Duration = Duration::from_millis(200);

fn state(block: &SharedMemory) -> &AtomicU32 {
    block.atomic_u32(0)
}

fn reader(block: &SharedMemory) -> &AtomicU32 {
    block.atomic_u32(4)
}

/// A process's blocks of one queue: those it made (as a producer) and the mappings of
/// those it read (as a consumer). Used only by the process that created it: a forked
/// copy uses neither cache.
pub(super) struct Blocks {
    pid: u32,
    /// The (device, inode) of the queue's segment, which the blocks' names carry.
    queue: (u64, u64),
    made: Mutex<Vec<SharedMemory>>,
    seen: Mutex<VecDeque<SharedMemory>>,
}

/// A block with an item being put.
pub(super) struct Outgoing {
    block: SharedMemory,
    kept: bool,
}

impl Outgoing {
    /// The block's name, which the ring record carries.
    pub(super) fn name(&self) -> &str {
        self.block.name()
    }

    /// Copies `bytes` into the item's place, starting `at` bytes into the item. Nobody
    /// else touches the block meanwhile: it is new, or free and kept by this producer.
    pub(super) fn write(&self, at: usize, bytes: &[u8]) -> Result<()> {
        let at = BLOCK_DATA
            .checked_add(at)
            .ok_or_else(|| Error::InvalidArgument(format!("an item offset of {at} bytes")))?;
        self.block.write_at(at, bytes)
    }
}

/// The bytes of an item in its block, copied out on request (never lent as a slice: a
/// slice of shared memory is sound only while nothing else can write it, and a block's
/// state word is a promise between well-behaved peers, not a guarantee).
pub(super) struct ItemBytes<'a> {
    block: &'a SharedMemory,
    len: usize,
}

impl ItemBytes<'_> {
    /// The item's length in bytes.
    pub(super) fn len(&self) -> usize {
        self.len
    }

    /// Copies `dst.len()` bytes of the item, from its byte `at`, into `dst`.
    pub(super) fn read_at(&self, at: usize, dst: &mut [u8]) -> Result<()> {
        match at.checked_add(dst.len()) {
            Some(end) if end <= self.len => self.block.read_at(BLOCK_DATA + at, dst),
            _ => Err(Error::Protocol(format!(
                "queue: {} bytes at {at} of an item of {} bytes",
                dst.len(),
                self.len
            ))),
        }
    }

    /// Appends the item's bytes from its byte `from` to its end to `vec`, copying
    /// straight into its spare capacity.
    pub(super) fn extend_vec(&self, from: usize, vec: &mut Vec<u8>) -> Result<()> {
        let n = self.len.checked_sub(from).ok_or_else(|| {
            Error::Protocol(format!("queue: byte {from} of an item of {} bytes", self.len))
        })?;
        self.block.extend_vec(BLOCK_DATA + from, n, vec)
    }
}

impl Blocks {
    pub(super) fn new(queue: (u64, u64)) -> Blocks {
        Blocks {
            pid: crate::sys::pid::pid(),
            queue,
            made: Mutex::new(Vec::new()),
            seen: Mutex::new(VecDeque::new()),
        }
    }

    /// The (device, inode) of the queue's segment.
    pub(super) fn queue(&self) -> (u64, u64) {
        self.queue
    }

    fn mine(&self) -> bool {
        self.pid == crate::sys::pid::pid()
    }

    /// This process's cache of made blocks, if it is free right now. The caches are only
    /// tried, never waited for: a thread that finds one busy (or a forked child that
    /// inherited it locked) goes without.
    fn made(&self) -> Option<std::sync::MutexGuard<'_, Vec<SharedMemory>>> {
        if !self.mine() {
            return None;
        }
        self.made.try_lock().ok()
    }

    /// A block with room for an item of `len` bytes: a kept one the consumer has
    /// finished with (waiting for one being read, at most until `deadline`), or a new one
    /// (kept if there is room in the cache).
    pub(super) fn take(&self, len: usize, deadline: Option<Instant>) -> Result<Outgoing> {
        let need = BLOCK_DATA
            .checked_add(len)
            .ok_or_else(|| Error::InvalidArgument(format!("an item of {len} bytes")))?;
        if let Some(block) = self.reuse(need, deadline) {
            return Ok(Outgoing { block, kept: true });
        }
        let size = need.div_ceil(STEP) * STEP;
        if size <= KEEP_BYTES / 2 {
            if let Some(mut made) = self.made() {
                // Make room: let go of free blocks too small for this item, smallest first.
                let over = |made: &Vec<SharedMemory>| {
                    made.len() >= KEEP_BLOCKS
                        || made.iter().map(SharedMemory::size).sum::<usize>() + size > KEEP_BYTES
                };
                while over(&made) {
                    let Some(i) = smallest(&made, 0, FREE) else { break };
                    release(made.swap_remove(i));
                }
                if !over(&made) {
                    drop(made);
                    let block = create(size, self.queue)?;
                    state(&block).store(FULL, Release);
                    return Ok(Outgoing { block, kept: true });
                }
            }
        }
        let block = create(need, self.queue)?;
        state(&block).store(RELEASED, Release);
        Ok(Outgoing { block, kept: false })
    }

    /// A kept block of at least `need` bytes that is free, or becomes free before
    /// `deadline` (and [`READ_WAIT`]) because the read under way ends or its reader is
    /// gone; marked `FULL` for the caller.
    fn reuse(&self, need: usize, deadline: Option<Instant>) -> Option<SharedMemory> {
        let mut made = self.made()?;
        if let Some(i) = smallest(&made, need, FREE) {
            let block = made.swap_remove(i);
            state(&block).store(FULL, Release);
            return Some(block);
        }
        let i = smallest(&made, need, READING)?;
        let block = made.swap_remove(i);
        drop(made);
        let until = Instant::now() + READ_WAIT;
        let until = deadline.map_or(until, |d| d.min(until));
        loop {
            let now = state(&block).load(Acquire);
            // A reader gone mid-copy took its item with it: the block holds nothing.
            let gone = now == READING
                && !crate::sys::proc::pid_is_alive(reader(&block).load(Acquire) as i32);
            if (now == FREE || gone)
                && state(&block).compare_exchange(now, FULL, AcqRel, Acquire).is_ok()
            {
                return Some(block);
            }
            let left = until.saturating_duration_since(Instant::now());
            if now != READING || left.is_zero() {
                break;
            }
            // Short naps: a wake-up lost to a reader killed mid-call costs one nap.
            Os::wait(state(&block), READING, Some(left.min(Duration::from_millis(20))));
        }
        match self.made() {
            Some(mut made) => made.push(block),
            None => release(block),
        }
        None
    }

    /// After the block's record was published: the consumer now decides its end, or it
    /// goes back into the cache for the next item.
    pub(super) fn sent(&self, out: Outgoing) {
        if !out.kept {
            out.block.disown();
            return;
        }
        match self.made() {
            Some(mut made) => made.push(out.block),
            None => release(out.block),
        }
    }

    /// The block's record was not published (the put timed out): it holds nothing.
    pub(super) fn unsent(&self, out: Outgoing) {
        if !out.kept {
            return; // dropped: the owner handle unlinks it
        }
        state(&out.block).store(FREE, Release);
        if let Some(mut made) = self.made() {
            made.push(out.block);
        }
    }

    /// Reads the item of `len` bytes in block `name` with `read`, then hands the block
    /// back (or unlinks it).
    pub(super) fn read<R>(
        &self,
        name: &str,
        len: usize,
        read: impl FnOnce(ItemBytes<'_>) -> R,
    ) -> Result<R> {
        let mine = self.mine();
        let cached = mine
            .then(|| {
                let mut seen = self.seen.try_lock().ok()?;
                let i = seen.iter().position(|b| b.name() == name)?;
                seen.remove(i)
            })
            .flatten();
        let block = match cached {
            Some(block) => block,
            None => SharedMemory::attach(name)?,
        };
        let fits = BLOCK_DATA.checked_add(len).is_some_and(|end| end <= block.size());
        if !fits {
            let _ = block.unlink();
            return Err(Error::Protocol(format!(
                "queue: large item block {name} is too short for {len} bytes"
            )));
        };
        match state(&block).load(Acquire) {
            FULL => {
                reader(&block).store(crate::sys::pid::pid(), Release);
                // Fails only if the producer let go meanwhile: then it stays RELEASED.
                let _ = state(&block).compare_exchange(FULL, READING, AcqRel, Acquire);
            }
            RELEASED => {}
            _ => {
                return Err(Error::Protocol(format!(
                    "queue: large item block {name} was already read"
                )))
            }
        }
        let result = read(ItemBytes { block: &block, len });
        let before = state(&block).swap(FREE, AcqRel);
        Os::wake(state(&block), 1);
        if before == RELEASED {
            let _ = block.unlink();
            return Ok(result);
        }
        match mine.then(|| self.seen.try_lock().ok()).flatten() {
            Some(mut seen) => {
                // Mappings of blocks their producer let go of only hold memory: drop them.
                seen.retain(|b| state(b).load(Acquire) != RELEASED);
                seen.push_back(block);
                while seen.len() > KEEP_BLOCKS {
                    seen.pop_front().into_iter().for_each(forget_mapping);
                }
            }
            None => forget_mapping(block),
        }
        Ok(result)
    }
}

/// A consumer drops its mapping of a block it has read. A block still free whose
/// producer is gone will never be written or released again: unlinked here. (Checked
/// only now, not on every read, because it costs a look into `/proc`.)
fn forget_mapping(block: SharedMemory) {
    if state(&block).load(Acquire) == FREE && crate::shared_memory::creator_is_gone(block.name()) {
        let _ = block.unlink();
    }
}

impl Drop for Blocks {
    fn drop(&mut self) {
        let made = std::mem::take(get_mut(&mut self.made));
        let seen = std::mem::take(get_mut(&mut self.seen));
        if self.mine() {
            made.into_iter().for_each(release);
            seen.into_iter().for_each(forget_mapping);
        }
        // In a forked copy the handles only unmap: they unlink nothing, and the state
        // words belong to the parent's cache.
    }
}

/// The smallest block of at least `need` bytes in state `wanted`.
fn smallest(made: &[SharedMemory], need: usize, wanted: u32) -> Option<usize> {
    made.iter()
        .enumerate()
        .filter(|(_, b)| b.size() >= need && state(b).load(Acquire) == wanted)
        .min_by_key(|(_, b)| b.size())
        .map(|(i, _)| i)
}

/// A producer lets go of a kept block: unlinked now if its consumer has finished with
/// it, else by the consumer when it has.
fn release(block: SharedMemory) {
    if matches!(state(&block).swap(RELEASED, AcqRel), FULL | READING) {
        block.disown();
    }
    // Otherwise dropped here: the owner handle unlinks it.
}

/// A new block of `size` bytes, owned by this process and named for it and for the
/// queue (see [`crate::shared_memory`]): the orphan tracker removes it once this process
/// is gone and no live process holds the queue. Its pages are allocated now, so that a
/// full `/dev/shm` is an error from the put, not a `SIGBUS` while the item is copied in.
fn create(size: usize, queue: (u64, u64)) -> Result<SharedMemory> {
    SharedMemory::builder().size(size).for_queue(queue).create()
}
