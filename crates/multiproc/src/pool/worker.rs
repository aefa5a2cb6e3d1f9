//! A pool worker, both ends of it: what a worker process is started with
//! ([`WorkerBoot`]), the parent's handle on one ([`Worker`]: its pipes, the bytes queued
//! for it, the chunks it holds), and the loop that runs in the worker process
//! ([`worker_main`]).
//!
//! A worker reads frames of TASK records from its task pipe and runs each chunk through
//! one monomorphised function: `sys::spawn::batch_trampoline` resolves the task's function
//! and hands it to [`Batch`]'s [`RunBatch`] implementation, which decodes, runs and
//! encodes every item without an allocation per item. Before each item it publishes which
//! one it runs in its [`Progress`] word, so the parent knows which task a dead worker was
//! running. Results go back in batches (see `FLUSH_AFTER` and `FLUSH_BYTES`).

use std::collections::VecDeque;
use std::ops::Range;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use super::chunks::{encode_task, Chunk, FnRef};
use super::wire::{
    encode_item, push_blob, push_status, Batch, Rd, ST_FAILED, ST_OK, ST_PANICKED, TAG_EXIT,
    TAG_INIT_FAILED, TAG_READY, TAG_RESULT, TAG_TASK, WIDE,
};
use super::{FLUSH_AFTER, FLUSH_BYTES, WORKER_BYTES_MAX};
use crate::codec::{decode_in_place, Codec};
use crate::connection::Connection;
use crate::error::{Error, Result};
use crate::process::{ChildOutcome, Process};
use crate::synchronize::Segment;
use crate::sys::spawn::RunBatch;
use crate::{reduction, sys};

// --------------------------------------------------------------------------------------
// What a worker is started with

/// The initializer, encoded once; its handles are duplicated for each worker.
#[derive(Clone)]
pub(super) struct Initializer {
    pub(super) func: FnRef,
    pub(super) args: Vec<u8>,
    pub(super) fds: Fds,
}

impl Initializer {
    /// Encodes `f` and its arguments for every worker to come.
    pub(super) fn new<I: Serialize + DeserializeOwned>(f: fn(I), args: &I) -> Result<Initializer> {
        let (encoded, fds) = reduction::export_handles(|| {
            let mut out = Vec::new();
            Codec::Postcard.encode_into(args, &mut out).map(|()| out)
        });
        Ok(Initializer { func: FnRef::initializer(f)?, args: encoded?, fds: Fds(Arc::new(fds)) })
    }
}

/// Descriptors that travel with a worker's arguments (an initializer's connections).
#[derive(Clone)]
pub(super) struct Fds(Arc<Vec<OwnedFd>>);

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
pub(super) struct Progress(Arc<Segment>);

/// Tags the progress segment ("MPPW").
const PROGRESS_KIND: u32 = 0x4d50_5057;
/// Offset of the word in its segment (after the kind tag).
const PROGRESS_WORD: usize = 8;

impl Progress {
    /// A fresh progress word in its own shared-memory segment.
    pub(super) fn new() -> Result<Progress> {
        Ok(Progress(Segment::new("pool-progress", PROGRESS_KIND, 64)?))
    }

    /// The word itself.
    pub(super) fn word(&self) -> &AtomicU64 {
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
pub(super) struct WorkerBoot {
    /// The read end of the task pipe.
    pub(super) tasks: Connection,
    /// The write end of the result pipe.
    pub(super) results: Connection,
    pub(super) progress: Progress,
    pub(super) init: Option<(FnRef, Vec<u8>, Fds)>,
    /// Chunks after which the worker exits; 0 for no limit.
    pub(super) maxtasks: u64,
}

// --------------------------------------------------------------------------------------
// The parent's handle on a worker

/// A worker as the dispatcher sees it.
pub(super) struct Worker {
    pub(super) process: Process,
    pub(super) pid: i32,
    /// The parent's end of the task pipe (non-blocking).
    pub(super) tx: OwnedFd,
    /// The parent's end of the result pipe (non-blocking).
    pub(super) rx: OwnedFd,
    /// Whether reading may still give data (no end of stream yet).
    pub(super) readable: bool,
    /// Whether writing may still work (no broken pipe yet).
    pub(super) writable: bool,
    pub(super) progress: Progress,
    pub(super) inbuf: Vec<u8>,
    /// What is queued for the task pipe, in order.
    pub(super) out: VecDeque<Piece>,
    /// Bytes of `out`'s first piece already written.
    pub(super) out_pos: usize,
    /// Bytes being added to `out` (sealed into a piece before anything else is queued).
    pub(super) cur: Vec<u8>,
    /// An emptied piece's buffer, for the next one.
    pub(super) spare: Vec<u8>,
    /// Chunks sent (or about to be) whose results have not arrived, in order.
    pub(super) in_flight: VecDeque<(u32, Chunk)>,
    pub(super) in_flight_bytes: usize,
    /// Items of the chunks in `in_flight`.
    pub(super) in_flight_items: usize,
    pub(super) next_seq: u32,
    /// Chunks assigned over the worker's life (for `maxtasksperchild`).
    pub(super) assigned: u64,
    pub(super) ready: bool,
    /// No more work for this worker (it was told to exit, or reached its task limit).
    pub(super) retiring: bool,
    /// An EXIT message was queued for it.
    pub(super) told_to_exit: bool,
    pub(super) exited: bool,
}

/// Bytes queued for a worker's task pipe.
pub(super) enum Piece {
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
    /// The piece's bytes.
    pub(super) fn bytes(&self) -> &[u8] {
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
    pub(super) fn begin_frame(&mut self) -> usize {
        self.seal();
        self.out.push_back(Piece::Header([0; 12], 0));
        self.out.len() - 1
    }

    /// Ends the frame whose header is at `at`: fills in its length.
    pub(super) fn end_frame(&mut self, at: usize) {
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
    pub(super) fn push_task(&mut self, seq: u32, chunk: &Chunk) {
        encode_task(&mut self.cur, seq, chunk);
        if chunk.range.len() >= SHARE_BYTES {
            self.seal();
            self.out.push_back(Piece::Shared(chunk.data.clone(), chunk.range.clone()));
        } else {
            self.cur.extend_from_slice(chunk.items());
        }
    }

    /// Drops the first `n` bytes of `out` (written).
    pub(super) fn advance(&mut self, mut n: usize) {
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

// --------------------------------------------------------------------------------------
// The worker process

/// The worker process's main function: runs the initializer, then chunks until told to
/// exit, until `maxtasks` chunks are done, or until the pool is gone.
pub(super) fn worker_main(boot: WorkerBoot) {
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
    let mut inbuf = Vec::new();
    loop {
        let Some(len) = recv_frame(&tasks, &mut inbuf) else { return };
        let mut rd = Rd::new(&inbuf[..len]);
        // When the oldest result not yet sent was ready.
        let mut held_since: Option<Instant> = None;
        while !rd.done() {
            match rd.u8() {
                Some(TAG_TASK) => {
                    let Some(now) = run_chunk(&mut rd, &mut out, &progress) else {
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

/// Runs the pool's initializer; the error says why it failed.
fn run_initializer(func: FnRef, args: &[u8], fds: &Fds) -> std::result::Result<(), String> {
    let Some(tramp) = crate::process::resolve_trampoline(func.layout, func.trampoline) else {
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
        ChildOutcome::Errored(m) | ChildOutcome::Failed(m) => Err(m),
    }
}

/// Runs one TASK record (after its tag) and appends its RESULT record to `out`; returns
/// the time it ended, or `None` if the record is malformed.
fn run_chunk(rd: &mut Rd<'_>, out: &mut Vec<u8>, progress: &Progress) -> Option<Instant> {
    let seq = rd.u32()?;
    let layout = rd.i64()? as isize;
    let trampoline = rd.i64()? as isize;
    let target = rd.i64()? as isize;
    let count = rd.u32()?;
    // Resolved for each chunk: the trampoline's type names the batch's lifetimes, so the
    // pointer cannot be kept from one chunk to the next (resolving is a comparison and an
    // addition).
    let tramp = sys::spawn::resolve_batch_trampoline::<Batch<'_, '_>>(layout, trampoline);
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

/// What `sys::spawn::batch_trampoline` calls with the function it resolved: a worker's
/// batch runs its items through it. (`sys` names no type of the pool: it is generic over
/// the batch, and the pool names [`Batch`] when it takes and resolves the trampoline's
/// offsets.)
impl RunBatch for Batch<'_, '_> {
    fn run_batch<A, R>(&mut self, f: fn(A) -> R)
    where
        A: DeserializeOwned,
        R: Serialize,
    {
        run_batch(f, self)
    }
}

/// Runs every item of `batch` through `f`, recording each outcome: the value, the panic
/// message, or why the arguments could not be decoded or the value encoded.
fn run_batch<A, R>(f: fn(A) -> R, batch: &mut Batch<'_, '_>)
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
        let args = match decode_in_place::<A>(bytes) {
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
