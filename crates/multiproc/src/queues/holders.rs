//! Who holds a queue: a table of processes in the ring's header, so that a `get` on a
//! queue that no other live process holds any more fails with [`Error::Disconnected`]
//! instead of waiting for ever (and so does a `put` waiting for room).
//!
//! # The table
//! Each process with a live handle has a slot: its pid, its start time (with the pid, it
//! names one process: a recycled pid is not mistaken for the holder) and how many
//! attachments it has (the creation, and each handle received). Dropping the last handle
//! of an attachment counts it down, and the slot is freed at zero. A process killed with
//! its handles alive never counts down: a waiter that suspects it is alone looks each other
//! holder up in `/proc` and frees the slots of those that are gone.
//!
//! Three words around the table keep the answer conservative ("somebody may still put"):
//! - `handoffs` counts handles exported (serialized for another process) and not yet
//!   attached: while one is on its way, its receiver is a holder already. An export that
//!   is never received keeps the queue from ever being reported disconnected, which is
//!   the behaviour of a queue without this table (a wait with no end).
//! - `overflow` counts holders that found no free slot (more than [`SLOT_COUNT`] processes):
//!   they cannot be checked, so while any is counted nobody is alone.
//! - `shared` is set once the queue was exported or a second process registered. A queue
//!   that never left its process is never disconnected: its threads put and get.
//!
//! Other processes count, and so does this one if it is attached more than once: it
//! created the queue and also received a handle of it (a manager server on a thread of
//! the process that opened the fast lane), or received it twice. Clones do not attach: a
//! process whose other holders are all gone is alone even if several of its threads hold
//! clones (as with a channel's receiver, whose own clones are not senders). A thread of
//! the same process that puts later still can: the item is queued, the next `get` takes
//! it.
//!
//! A forked child inherits its parent's handles without receiving them: it registers at
//! its first `put` or `get` on the queue, and its slot is freed once it is gone.
//!
//! Every change to the table is made under a lock word with dead-owner recovery.
//!
//! [`Error::Disconnected`]: crate::Error::Disconnected

use std::sync::atomic::Ordering::SeqCst;
use std::sync::atomic::{AtomicU32, AtomicU64};
use std::sync::{Arc, Mutex};

use crate::raw::{lock, Os};
use crate::segment::Segment;

/// The lock word of the table.
const H_LOCK: usize = 1024;
/// Handles exported and not yet attached.
const H_HANDOFFS: usize = 1028;
/// Holders without a slot.
const H_OVERFLOW: usize = 1032;
/// `1` once the queue was exported or held by a second process.
const H_SHARED: usize = 1036;
/// The first slot: `[pid: u32][attachments: u32][start time: u64]`.
const SLOTS: usize = 1088;
const SLOT_SIZE: usize = 16;
/// Where the table ends (and the ring's data begins).
pub(super) const END: usize = 4096;
/// Processes the table can name.
pub(super) const SLOT_COUNT: usize = (END - SLOTS) / SLOT_SIZE;

/// This process's pid and start time (see [`crate::sys::proc::this_process`]).
fn me() -> (u32, u64) {
    crate::sys::proc::this_process()
}

fn pid_word(segment: &Segment, slot: usize) -> &AtomicU32 {
    segment.word(SLOTS + slot * SLOT_SIZE)
}

fn count_word(segment: &Segment, slot: usize) -> &AtomicU32 {
    segment.word(SLOTS + slot * SLOT_SIZE + 4)
}

fn start_word(segment: &Segment, slot: usize) -> &AtomicU64 {
    segment.word64(SLOTS + slot * SLOT_SIZE + 8)
}

/// Runs `f` with the table's lock held.
fn locked<R>(segment: &Segment, f: impl FnOnce() -> R) -> R {
    let word = segment.word(H_LOCK);
    // No deadline: holders keep the lock for a few loads and stores, and a dead holder's
    // lock is taken over.
    let _ = lock::acquire::<Os>(word, crate::sys::pid::pid(), None);
    let result = f();
    lock::release::<Os>(word);
    result
}

/// Counts `n` down by one, never below zero.
fn count_down(word: &AtomicU32) {
    let _ = word.fetch_update(SeqCst, SeqCst, |n| n.checked_sub(1));
}

/// Frees the slots of other holders that are gone; with the lock held.
fn reap(segment: &Segment) {
    let me = me();
    for slot in 0..SLOT_COUNT {
        let pid = pid_word(segment, slot).load(SeqCst);
        let start = start_word(segment, slot).load(SeqCst);
        if pid != 0 && (pid, start) != me && !crate::sys::proc::process_runs(pid as i32, start) {
            pid_word(segment, slot).store(0, SeqCst);
        }
    }
}

/// Counts this process in (one attachment more) in the table of `segment`: the slot, or
/// `None` when counted in the overflow.
fn count_in(segment: &Segment) -> Option<usize> {
    let (pid, start) = me();
    locked(segment, || {
        let mut attempt = 0;
        loop {
            let mut free = None;
            let mut others = false;
            for slot in 0..SLOT_COUNT {
                match pid_word(segment, slot).load(SeqCst) {
                    0 => {
                        free.get_or_insert(slot);
                    }
                    p if p == pid && start_word(segment, slot).load(SeqCst) == start => {
                        count_word(segment, slot).fetch_add(1, SeqCst);
                        return Some(slot);
                    }
                    _ => others = true,
                }
            }
            if others {
                segment.word(H_SHARED).store(1, SeqCst);
            }
            if let Some(slot) = free {
                start_word(segment, slot).store(start, SeqCst);
                count_word(segment, slot).store(1, SeqCst);
                // Last: a reader that sees the pid sees the rest.
                pid_word(segment, slot).store(pid, SeqCst);
                return Some(slot);
            }
            if attempt == 1 {
                segment.word(H_OVERFLOW).fetch_add(1, SeqCst);
                return None;
            }
            reap(segment);
            attempt += 1;
        }
    })
}

/// One attachment of this process to a queue: counted in the table while it lives.
pub(super) struct Holding {
    segment: Arc<Segment>,
    pid: u32,
    /// The slot counted in, or `None` for the overflow count.
    slot: Option<usize>,
}

impl Holding {
    /// Counts this process in as a holder of the queue in `segment`.
    pub(super) fn register(segment: &Arc<Segment>) -> Holding {
        let slot = count_in(segment);
        Holding { segment: segment.clone(), pid: crate::sys::pid::pid(), slot }
    }

    /// Counts this process in as the receiver of a handle that was [`handed_off`].
    pub(super) fn receive(segment: &Arc<Segment>) -> Holding {
        let holding = Holding::register(segment);
        // After registering: a waiter that sees the hand-off done sees the new holder.
        count_down(segment.word(H_HANDOFFS));
        holding
    }

    /// Whether this attachment was made by the calling process (not inherited by a fork).
    #[inline]
    pub(super) fn is_mine(&self) -> bool {
        self.pid == crate::sys::pid::pid()
    }

    /// In a forked child that inherited this attachment: counts the child in, once per
    /// queue and process, for as long as it lives.
    #[cold]
    pub(super) fn register_fork(&self, queue: (u64, u64)) {
        static FORKED: Mutex<Vec<(u32, (u64, u64))>> = Mutex::new(Vec::new());
        let pid = crate::sys::pid::pid();
        // A lock inherited locked from the parent is only tried: registering twice merely
        // counts the child twice, and the count of a process that is gone does not matter.
        if let Ok(mut forked) = FORKED.try_lock() {
            if forked.contains(&(pid, queue)) {
                return;
            }
            forked.push((pid, queue));
        }
        count_in(&self.segment);
    }
}

impl Drop for Holding {
    fn drop(&mut self) {
        if !self.is_mine() {
            return; // a forked copy: the parent's count is the parent's
        }
        let segment = &self.segment;
        let (_, start) = me();
        locked(segment, || match self.slot {
            Some(slot) => {
                if pid_word(segment, slot).load(SeqCst) == self.pid
                    && start_word(segment, slot).load(SeqCst) == start
                    && count_word(segment, slot).fetch_sub(1, SeqCst) <= 1
                {
                    pid_word(segment, slot).store(0, SeqCst);
                }
            }
            None => count_down(segment.word(H_OVERFLOW)),
        });
    }
}

/// A handle of the queue in `segment` was exported for another process.
pub(super) fn handed_off(segment: &Segment) {
    segment.word(H_SHARED).store(1, SeqCst);
    segment.word(H_HANDOFFS).fetch_add(1, SeqCst);
}

/// Whether no process other than the caller could still use the queue: it was shared,
/// no handle is on its way, every holder has a slot, every other slot's process is gone
/// (their slots are freed on the way), and the caller's process is attached once. Reads
/// `/proc` once per other holder.
pub(super) fn deserted(segment: &Segment) -> bool {
    if segment.word(H_SHARED).load(SeqCst) == 0
        || segment.word(H_HANDOFFS).load(SeqCst) != 0
        || segment.word(H_OVERFLOW).load(SeqCst) != 0
    {
        return false;
    }
    let (pid, start) = me();
    locked(segment, || {
        reap(segment);
        (0..SLOT_COUNT).all(|slot| match pid_word(segment, slot).load(SeqCst) {
            0 => true,
            // This process, attached once: the handle the caller waits on, and its clones.
            p => {
                p == pid
                    && start_word(segment, slot).load(SeqCst) == start
                    && count_word(segment, slot).load(SeqCst) <= 1
            }
        })
    })
}
