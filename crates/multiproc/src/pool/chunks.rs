//! Chunk encoding: how a job's items are cut into chunks and encoded, in the caller's
//! thread, before the dispatcher sees them.
//!
//! A [`ChunkEncoder`] encodes items (see `wire` for an item's bytes) one after the other
//! into one buffer and cuts them into chunks of `chunksize` items; the chunks ended so far
//! leave together as a [`Group`], which shares that buffer. The dispatcher takes a group's
//! chunks one by one ([`Group::pop`]) and gives each to a worker; a [`Chunk`] can be cut
//! into smaller ones ([`Chunk::slice`]) when a worker dies in the middle of it. A
//! [`FnRef`] names the function that a chunk's items go through, for any process running
//! this executable.

use std::ops::Range;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use super::wire::{encode_item, Batch, Rd, TAG_TASK, WIDE};
use crate::error::{Error, Result};
use crate::sys;

/// Names a function for any process running this executable image.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct FnRef {
    pub(super) layout: isize,
    pub(super) trampoline: isize,
    pub(super) target: isize,
}

impl FnRef {
    /// A task function, run in batches by `sys::spawn::batch_trampoline`; an error for a
    /// function that workers could not find (one of another loaded object).
    pub(super) fn task<A, R>(f: fn(A) -> R) -> Result<FnRef>
    where
        A: DeserializeOwned,
        R: Serialize,
    {
        let (layout, trampoline, target) = sys::spawn::batch_offsets_for::<Batch<'_, '_>, A, R>(f)
            .map_err(|e| Error::InvalidArgument(e.to_string()))?;
        Ok(FnRef { layout, trampoline, target })
    }

    /// An initializer, run once by `sys::spawn::trampoline` (which handles descriptors).
    pub(super) fn initializer<A>(f: fn(A)) -> Result<FnRef>
    where
        A: DeserializeOwned,
    {
        let (layout, trampoline, target) =
            crate::process::offsets_for(f).map_err(|e| Error::InvalidArgument(e.to_string()))?;
        Ok(FnRef { layout, trampoline, target })
    }
}

/// Items of one job that travel to a worker together.
pub(super) struct Chunk {
    pub(super) job: u64,
    /// The index (in the job's input) of the first item.
    pub(super) start: usize,
    pub(super) count: u32,
    pub(super) func: FnRef,
    /// The buffer the items were encoded into, shared with the chunks encoded with them.
    pub(super) data: Arc<Vec<u8>>,
    /// Where the `count` items (each a header and postcard bytes) are in `data`.
    pub(super) range: Range<usize>,
}

impl Chunk {
    /// The chunk's items, as encoded.
    pub(super) fn items(&self) -> &[u8] {
        self.data.get(self.range.clone()).unwrap_or_default()
    }

    /// The byte ranges of the items (headers included) within [`items`](Self::items).
    pub(super) fn item_ranges(&self) -> Vec<Range<usize>> {
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
    pub(super) fn slice(&self, ranges: &[Range<usize>], from: usize, to: usize) -> Option<Chunk> {
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
pub(super) struct Group {
    pub(super) job: u64,
    func: FnRef,
    pub(super) data: Arc<Vec<u8>>,
    /// (first item's index, item count, byte range in `data`) of each chunk, in order.
    chunks: Vec<(usize, u32, Range<usize>)>,
    /// The first chunk not yet taken.
    next: usize,
}

impl Group {
    /// A group of one (a chunk going back to the queue).
    pub(super) fn single(chunk: Chunk) -> Group {
        Group {
            job: chunk.job,
            func: chunk.func,
            data: chunk.data,
            chunks: vec![(chunk.start, chunk.count, chunk.range)],
            next: 0,
        }
    }

    /// The items of the next chunk.
    pub(super) fn next_items(&self) -> Option<usize> {
        self.chunks.get(self.next).map(|&(_, count, _)| count as usize)
    }

    /// Takes the next chunk.
    pub(super) fn pop(&mut self) -> Option<Chunk> {
        let (start, count, range) = self.chunks.get(self.next)?.clone();
        self.next += 1;
        Some(Chunk { job: self.job, start, count, func: self.func, data: self.data.clone(), range })
    }

    /// The items of the chunks not yet taken.
    pub(super) fn items(&self) -> usize {
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
pub(super) struct ChunkEncoder {
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
    pub(super) fn new(job: u64, func: FnRef, start: usize) -> ChunkEncoder {
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

    /// Encodes items taken from `items` into the current chunk until it holds `chunksize`
    /// of them, then ends it; `false` once `items` has run out. An item that cannot be
    /// encoded goes to `failed` with its index: an error from there stops the fill (the
    /// caller gives up the job), `Ok` leaves the index out and goes on in a new chunk.
    #[inline]
    pub(super) fn fill_chunk<A: Serialize, E>(
        &mut self,
        items: &mut impl Iterator<Item = A>,
        chunksize: usize,
        mut failed: impl FnMut(usize, Error) -> std::result::Result<(), E>,
    ) -> std::result::Result<bool, E> {
        let mut more = true;
        while (self.count as usize) < chunksize {
            let Some(item) = items.next() else {
                more = false;
                break;
            };
            if let Err(e) = self.push(&item) {
                failed(self.next_index(), e)?;
                self.skip();
            }
        }
        self.end_chunk();
        Ok(more)
    }

    /// The index of the next item to be pushed.
    pub(super) fn next_index(&self) -> usize {
        self.start + self.count as usize
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

    /// The chunks ended so far.
    pub(super) fn chunk_count(&self) -> usize {
        self.chunks.len()
    }

    /// The bytes encoded so far.
    pub(super) fn bytes(&self) -> usize {
        self.buf.len()
    }

    /// The chunks ended so far, as a group (`None` if there are none).
    pub(super) fn take_group(&mut self) -> Option<Group> {
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

/// Appends a TASK record's fields; its items follow.
pub(super) fn encode_task(out: &mut Vec<u8>, seq: u32, chunk: &Chunk) {
    out.push(TAG_TASK);
    out.extend_from_slice(&seq.to_le_bytes());
    out.extend_from_slice(&(chunk.func.layout as i64).to_le_bytes());
    out.extend_from_slice(&(chunk.func.trampoline as i64).to_le_bytes());
    out.extend_from_slice(&(chunk.func.target as i64).to_le_bytes());
    out.extend_from_slice(&chunk.count.to_le_bytes());
}
