//! Named shared memory blocks, compatible with CPython's `multiprocessing.shared_memory`.
//!
//! | Python | multiproc |
//! |---|---|
//! | `SharedMemory(create=True, size=n)` | [`SharedMemory::create(n)`](SharedMemory::create) |
//! | `SharedMemory(name=s, create=True, size=n)` | [`SharedMemory::create_named(s, n)`](SharedMemory::create_named) |
//! | `SharedMemory(name=s)` | [`SharedMemory::attach(s)`](SharedMemory::attach) |
//! | `shm.name`, `shm.size` | [`name()`](SharedMemory::name), [`size()`](SharedMemory::size) |
//! | `shm.buf[a:b]`, `shm.buf[a:b] = data` | [`read_at(a, &mut out)`](SharedMemory::read_at), [`write_at(a, data)`](SharedMemory::write_at) (copies); `unsafe` [`buf()`](SharedMemory::buf) / [`buf_mut()`](SharedMemory::buf_mut) (views) |
//! | `np.ndarray(shape, np.float64, buffer=shm.buf)` | [`to_vec_of::<f64>()`](SharedMemory::to_vec_of), [`read_slice_of`](SharedMemory::read_slice_of), [`write_slice_of`](SharedMemory::write_slice_of), [`fill_of`](SharedMemory::fill_of), [`read_volatile`](SharedMemory::read_volatile) / [`write_volatile`](SharedMemory::write_volatile), [`atomic`](SharedMemory::atomic); `unsafe` [`as_mut_slice_of::<f64>()`](SharedMemory::as_mut_slice_of) (a view) |
//! | `shm.close()`; `shm.unlink()` | [`close()`](SharedMemory::close) (drop); [`unlink()`](SharedMemory::unlink) |
//! | `ShareableList([1, 2.5, "a"])`, `ShareableList(name=s)` | [`ShareableList::create`], [`ShareableList::attach`] |
//!
//! # Names
//! A block is a POSIX shared memory object (`shm_open`, mode 0600) named `/NAME`;
//! [`SharedMemory::name`] reports `NAME` without the slash, as CPython's `.name` does, and
//! either process can attach the other's blocks by that name. CPython generates names
//! `psm_` + 8 hex digits. This module generates names that stay `psm_`-prefixed and carry
//! their creator, so that a tracker can tell whose a block is:
//!
//! | generated name | meaning |
//! |---|---|
//! | `psm_mp<pid>_<start>_<8 hex>` | owned: its creator, process `<pid>`, unlinks it when it drops its handle; *orphaned* once that process is gone |
//! | `psm_mk<pid>_<start>_<8 hex>` | kept: created with [`SharedMemoryBuilder::keep`]; it outlives its creator and is never cleaned |
//! | `psm_mq<pid>_<start>_<dev>_<inode>_<8 hex>` | a queue's large item: made by process `<pid>` for the queue whose shared segment is `<dev>`/`<inode>`; *orphaned* once that process is gone **and** no live process holds the queue |
//!
//! `<start>` is the creator's start time (field 22 of `/proc/PID/stat`, clock ticks since
//! boot; 0 if unknown), so that a pid reused by a later process does not make an orphan
//! look alive. A CPython name (`psm_` + hex) never starts with `psm_m`. Pids are those of
//! the creator's PID namespace: list and clean from the same namespace (container) as the
//! programs that share the blocks.
//!
//! # Lifetime: the creator decides
//! The handle that created a block *owns* it: when that handle is dropped (or
//! [closed](SharedMemory::close)) in the process that created it, the block is unlinked,
//! unless it was created with [`keep(true)`](SharedMemoryBuilder::keep). A handle that only
//! attached never unlinks anything on its own; [`SharedMemory::unlink`] does so when asked.
//! (CPython's resource tracker unlinks blocks that a process merely attached to when that
//! process exits, bpo-38119; this module does not.) Mappings stay valid after an unlink:
//! the memory lives until the last process unmaps it.
//!
//! A creator that is killed cannot unlink. [`list_blocks`] finds the blocks that this
//! library created and whose creators are gone (zombies count as gone), and
//! [`clean_orphans`] removes them (CLI: `multiproc shm list`, `multiproc shm clean`).
//! Other objects in `/dev/shm` (CPython's blocks, names chosen by a program, kept blocks)
//! are never touched.
//!
//! A block whose creator is gone is still *live*, and never cleaned, while a live process
//! can reach it: while one has it open or mapped, and, for a queue's large item, while
//! one holds the queue (whose ring may still carry the item: a producer may put a large
//! item and exit, and the item outlives it). The tracker reads this from `/proc/PID/fd`
//! and `/proc/PID/maps` of the processes it may read (its user's, or all as root), and
//! [`clean_orphans`] looks twice, removing only what both looks found unreachable; when
//! `/proc` cannot tell, nothing is removed. What it cannot see is a block's name
//! travelling in a message not yet received (a pipe's buffer), or a queue none of whose
//! handles is held by a process at either look (all in flight through sockets): hand a
//! block over while its creator lives, or mark it [kept](SharedMemoryBuilder::keep).
//!
//! # Passing a block to a child
//! A `SharedMemory` (and a [`ShareableList`]) is serde-serializable *by name*: the child
//! receives a handle attached to the same block, which never unlinks it. As in CPython, the
//! creator must keep its own handle alive until the children have attached: pass
//! [`try_clone()`](SharedMemory::try_clone) (a second, non-owning handle) and keep the
//! original. (Moving the creator's own handle into a child's arguments drops it in the
//! parent once the child has started, which unlinks the block.) A forked copy of an owner
//! handle never unlinks: only the creating process does.
//!
//! ```
//! use multiproc::shared_memory::SharedMemory;
//! use multiproc::Process;
//!
//! fn double(shm: SharedMemory) {
//!     let mut values = shm.to_vec_of::<f64>().unwrap(); // a copy out ...
//!     for x in &mut values {
//!         *x *= 2.0;
//!     }
//!     shm.write_slice_of(0, &values).unwrap(); // ... and back in
//! }
//!
//! let shm = SharedMemory::create(5 * 8)?;
//! shm.write_slice_of::<f64>(0, &[1.0, 2.0, 3.0, 4.0, 5.0])?;
//! let p = Process::new(double, shm.try_clone()?);
//! p.start()?;
//! p.join()?;
//! assert_eq!(shm.to_vec_of::<f64>()?, [2.0, 4.0, 6.0, 8.0, 10.0]);
//! shm.close()?; // the creator: closes and unlinks (Python: shm.close(); shm.unlink())
//! # Ok::<(), multiproc::Error>(())
//! ```
//!
//! # Differences from CPython
//! - The creator's handle unlinks on drop (Python needs an explicit `unlink()`); attached
//!   handles never unlink at exit (Python's resource tracker does, bpo-38119).
//! - A new block's pages are allocated at creation, so a full `/dev/shm` is an error from
//!   `create` rather than a `SIGBUS` later ([`SharedMemoryBuilder::sparse`] opts out).
//! - [`ShareableList`] sizes a `str` slot by its UTF-8 length, where CPython counts
//!   characters and truncates non-ASCII text; [`ShareableList::index`] returns `None`
//!   where Python raises `ValueError`.
//!
//! # Data races: copies, atomics, and `unsafe` views
//! Other handles on a block (a [`try_clone`](SharedMemory::try_clone) on another thread,
//! another process) may write it at any moment, and Rust assumes that the bytes behind a
//! `&[T]` never change while it lives (and that nothing else touches those behind a
//! `&mut [T]`). So the safe methods never hand out such a reference into a block: they
//! copy ([`read_at`](SharedMemory::read_at), [`write_at`](SharedMemory::write_at),
//! [`read_slice_of`](SharedMemory::read_slice_of),
//! [`write_slice_of`](SharedMemory::write_slice_of), [`to_vec_of`](SharedMemory::to_vec_of),
//! [`fill_of`](SharedMemory::fill_of)), access one element at a time
//! ([`read_volatile`](SharedMemory::read_volatile),
//! [`write_volatile`](SharedMemory::write_volatile)), or go through atomics
//! ([`atomic`](SharedMemory::atomic)). A concurrent writer can make a copy inconsistent
//! (coordinate writers with a lock, or by giving each worker its own range, as the seed
//! examples do), never unsound.
//!
//! The zero-copy views — [`buf`](SharedMemory::buf), [`buf_mut`](SharedMemory::buf_mut),
//! [`as_slice_of`](SharedMemory::as_slice_of),
//! [`as_mut_slice_of`](SharedMemory::as_mut_slice_of) — are `unsafe fn`s (as `memmap2`'s
//! `map` is): the caller promises that nothing else writes (or, for a mutable view,
//! touches) the block while the view lives, and says why in a `// SAFETY:` comment.
//!
//! ```
//! use multiproc::shared_memory::SharedMemory;
//! let mut shm = SharedMemory::create(1000 * 8)?;
//! // SAFETY: this handle is the only one on the block, and no other process knows its
//! // name yet, so nothing else touches the bytes while `view` lives.
//! let view = unsafe { shm.as_mut_slice_of::<f64>()? };
//! for (i, x) in view.iter_mut().enumerate() {
//!     *x = i as f64;
//! }
//! assert_eq!(shm.read_volatile::<f64>(999)?, 999.0);
//! # Ok::<(), multiproc::Error>(())
//! ```
//!
//! # Shrinking
//! A block's size is fixed when it is mapped, but a POSIX block is a file in `/dev/shm`
//! that anyone allowed to open it can shrink (`ftruncate`, `os.ftruncate` in Python).
//! Touching a page of a mapping past the block's new end raises `SIGBUS`, which kills the
//! process: a peer that truncates a block can kill every process that reads or writes past
//! its new end, through any of the methods above, safe or not. This is how POSIX shared
//! memory works (CPython's blocks behave the same), and it cannot be prevented for
//! blocks that must stay compatible with CPython (`shm_open` objects cannot be sealed):
//! share blocks only with programs that you trust not to shrink them (mode 0600 already
//! limits them to the same user). [`Value`](crate::Value), [`Array`](crate::Array), the
//! locks and a queue's ring keep their shared state in anonymous (`memfd`) segments
//! instead, sealed against shrinking before they leave the process.

// The block and its builder (`block`), the names it gets (`naming`), the orphan tracker
// (`tracker`) and `ShareableList` (`shareable_list`).
mod block;
mod naming;
mod shareable_list;
mod tracker;

use std::io;

use crate::error::Error;

pub use block::{SharedMemory, SharedMemoryBuilder};
pub use shareable_list::{ListItem, ShareableList};
pub(crate) use tracker::creator_is_gone;
pub use tracker::{
    clean_orphans, clean_orphans_of, list_blocks, BlockInfo, BlockState, CleanReport,
};

/// Marks plain-old-data types, the element types of the typed views (re-exported from
/// `bytemuck`; derive it with `bytemuck`'s `derive` feature).
///
/// ```
/// fn takes_pod<T: multiproc::shared_memory::Pod>() {}
/// takes_pod::<f64>();
/// takes_pod::<[u32; 4]>();
/// ```
pub use bytemuck::Pod;

pub use crate::sys::shm::SharedAtomic;

/// An `io::Error` of the same kind with `what` in front of its message.
/// This process's pid, as blocks record it.
fn current_pid() -> i32 {
    crate::sys::pid::pid() as i32
}

fn io_context(e: io::Error, what: String) -> Error {
    Error::Io(io::Error::new(e.kind(), format!("{what}: {e}")))
}
