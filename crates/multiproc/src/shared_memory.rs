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
//! p.join(None)?;
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

use std::fmt;
use std::io;
use std::ops::RangeBounds;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering};

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::error::{Error, Result};
use crate::sys::shm::{self as sys_shm, Mapping};

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

/// The longest name POSIX shared memory accepts on Linux.
const NAME_MAX: usize = 255;
const OWNED_MARK: &str = "psm_mp";
const KEPT_MARK: &str = "psm_mk";
const QUEUE_MARK: &str = "psm_mq";

// ---------------------------------------------------------------------------------------
// SharedMemory

/// A block of shared memory, as Python's `multiprocessing.shared_memory.SharedMemory`.
///
/// ```
/// use multiproc::shared_memory::SharedMemory;
///
/// let shm = SharedMemory::create(16)?;
/// shm.write_at(0, b"hello")?;
///
/// let other = SharedMemory::attach(shm.name())?; // as another process would
/// let mut out = [0u8; 5];
/// other.read_at(0, &mut out)?;
/// assert_eq!(&out, b"hello");
/// assert_eq!(other.size(), 16);
/// drop(other); // only attached: the block stays
/// drop(shm); // the creator: the block is unlinked
/// # Ok::<(), multiproc::Error>(())
/// ```
pub struct SharedMemory {
    name: String,
    map: Mapping,
    fd: OwnedFd,
    /// `Some(pid)`: this handle unlinks the block when it is dropped in process `pid`
    /// (never in a forked copy of it).
    unlink_in: Option<i32>,
    kept: bool,
    /// Set once this handle has unlinked the name (or found it gone).
    unlinked: AtomicBool,
}

/// Options for creating a block: size, name, whether it outlives its creator.
///
/// ```
/// use multiproc::shared_memory::SharedMemory;
///
/// let shm = SharedMemory::builder().size(4096).create()?;
/// assert!(shm.name().starts_with("psm_mp"));
/// # Ok::<(), multiproc::Error>(())
/// ```
#[derive(Debug, Clone, Default)]
pub struct SharedMemoryBuilder {
    size: usize,
    name: Option<String>,
    keep: bool,
    sparse: bool,
    /// The (device, inode) of the queue whose large item the block holds.
    queue: Option<(u64, u64)>,
}

impl SharedMemoryBuilder {
    /// A builder with no size yet (it must be set), a generated name, owned, reserved.
    ///
    /// ```
    /// use multiproc::shared_memory::SharedMemoryBuilder;
    /// // Creating needs a size.
    /// assert!(SharedMemoryBuilder::new().create().is_err());
    /// ```
    pub fn new() -> SharedMemoryBuilder {
        SharedMemoryBuilder::default()
    }

    /// The size in bytes; must be positive.
    ///
    /// ```
    /// let shm = multiproc::shared_memory::SharedMemory::builder().size(100).create()?;
    /// assert_eq!(shm.size(), 100);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn size(mut self, size: usize) -> SharedMemoryBuilder {
        self.size = size;
        self
    }

    /// Uses this name instead of a generated one (a leading `/` is optional). The tracker
    /// does not follow blocks with names chosen this way.
    ///
    /// ```
    /// use multiproc::shared_memory::SharedMemory;
    /// let name = format!("builder_doc_{}", std::process::id());
    /// let shm = SharedMemory::builder().size(8).name(format!("/{name}")).create()?;
    /// assert_eq!(shm.name(), name);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn name(mut self, name: impl Into<String>) -> SharedMemoryBuilder {
        self.name = Some(name.into());
        self
    }

    /// Keeps the block after its creator drops its handle or exits (default: unlinked).
    /// A generated name is then marked kept (`psm_mk…`), so [`clean_orphans`] leaves the
    /// block alone; remove it with [`SharedMemory::unlink`] from any handle.
    ///
    /// ```
    /// use multiproc::shared_memory::SharedMemory;
    ///
    /// let shm = SharedMemory::builder().size(64).keep(true).create()?;
    /// assert!(shm.name().starts_with("psm_mk"));
    /// let name = shm.name().to_string();
    /// drop(shm);
    /// let again = SharedMemory::attach(&name)?; // still there
    /// again.unlink()?; // someone has to remove it
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn keep(mut self, keep: bool) -> SharedMemoryBuilder {
        self.keep = keep;
        self
    }

    /// Leaves the block sparse, as CPython does: pages are allocated on first write, and
    /// a write that finds `/dev/shm` full kills the process with `SIGBUS`. By default
    /// the pages are allocated at creation (`fallocate`), so a full `/dev/shm` is an
    /// error from `create` instead.
    ///
    /// ```
    /// let shm = multiproc::shared_memory::SharedMemory::builder()
    ///     .size(1 << 20)
    ///     .sparse(true)
    ///     .create()?;
    /// assert_eq!(shm.read_volatile::<u8>(12345)?, 0);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn sparse(mut self, sparse: bool) -> SharedMemoryBuilder {
        self.sparse = sparse;
        self
    }

    /// Names the block (when the name is generated) as a large item of the queue whose
    /// shared segment is `queue` (device, inode): the tracker keeps it while that queue
    /// lives, even after its creator is gone.
    pub(crate) fn for_queue(mut self, queue: (u64, u64)) -> SharedMemoryBuilder {
        self.queue = Some(queue);
        self
    }

    /// Creates the block (zero-filled). Fails if the name exists.
    ///
    /// ```
    /// use multiproc::shared_memory::SharedMemory;
    /// let shm = SharedMemory::builder().size(10).create()?;
    /// assert_eq!(shm.to_vec_of::<u8>()?, [0u8; 10]);
    /// // A name cannot be created twice.
    /// assert!(SharedMemory::builder().size(10).name(shm.name()).create().is_err());
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn create(&self) -> Result<SharedMemory> {
        let size = self.size;
        if size == 0 {
            return Err(Error::InvalidArgument(
                "a shared memory block needs a positive size".into(),
            ));
        }
        if size > isize::MAX as usize {
            return Err(Error::InvalidArgument(format!(
                "a shared memory block of {size} bytes cannot be mapped"
            )));
        }
        let (name, fd) = match &self.name {
            Some(name) => {
                let name = validate_name(name)?;
                let fd = sys_shm::shm_create(&name, size)
                    .map_err(|e| io_context(e, format!("creating shared memory block {name:?}")))?;
                (name, fd)
            }
            None => create_generated(size, self.keep, self.queue)?,
        };
        let unlink_now = |e: Error| {
            let _ = sys_shm::shm_unlink(&name);
            e
        };
        if !self.sparse {
            sys_shm::shm_reserve(&fd, size)
                .map_err(|e| {
                    io_context(
                        e,
                        format!("allocating {size} bytes for shared memory block {name:?}"),
                    )
                })
                .map_err(unlink_now)?;
        }
        let map = Mapping::map(fd.as_fd(), size)
            .map_err(|e| io_context(e, format!("mapping shared memory block {name:?}")))
            .map_err(unlink_now)?;
        Ok(SharedMemory {
            name,
            map,
            fd,
            unlink_in: if self.keep { None } else { Some(current_pid()) },
            kept: self.keep,
            unlinked: AtomicBool::new(false),
        })
    }
}

impl SharedMemory {
    /// Creates a block of `size` bytes (zero-filled) with a generated name; this handle
    /// owns it and unlinks it when dropped. Python: `SharedMemory(create=True, size=size)`.
    ///
    /// ```
    /// use multiproc::shared_memory::SharedMemory;
    /// let shm = SharedMemory::create(1024)?;
    /// assert_eq!(shm.size(), 1024);
    /// assert!(shm.name().starts_with("psm_"));
    /// assert!(SharedMemory::create(0).is_err()); // as CPython: size must be positive
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn create(size: usize) -> Result<SharedMemory> {
        SharedMemoryBuilder::new().size(size).create()
    }

    /// Creates a block named `name` (a leading `/` is optional); fails if it exists.
    /// Python: `SharedMemory(name=name, create=True, size=size)`.
    ///
    /// ```
    /// use multiproc::shared_memory::SharedMemory;
    /// let name = format!("create_named_doc_{}", std::process::id());
    /// let shm = SharedMemory::create_named(&name, 32)?;
    /// assert_eq!(shm.name(), name);
    /// assert!(SharedMemory::create_named("a/b", 32).is_err()); // no '/' inside a name
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn create_named(name: &str, size: usize) -> Result<SharedMemory> {
        SharedMemoryBuilder::new().size(size).name(name).create()
    }

    /// A builder for the other options ([`keep`](SharedMemoryBuilder::keep),
    /// [`sparse`](SharedMemoryBuilder::sparse)).
    ///
    /// ```
    /// let shm = multiproc::shared_memory::SharedMemory::builder().size(8).create()?;
    /// assert!(shm.is_owner());
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn builder() -> SharedMemoryBuilder {
        SharedMemoryBuilder::new()
    }

    /// Attaches to the existing block `name` (made by this library, by CPython, or by
    /// anything else using POSIX shared memory). The handle never unlinks the block on its
    /// own. Python: `SharedMemory(name=name)`.
    ///
    /// ```
    /// use multiproc::shared_memory::SharedMemory;
    /// let shm = SharedMemory::create(100)?;
    /// let other = SharedMemory::attach(shm.name())?;
    /// assert_eq!(other.size(), 100);
    /// assert!(!other.is_owner());
    /// assert!(SharedMemory::attach("psm_does_not_exist").is_err());
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn attach(name: &str) -> Result<SharedMemory> {
        let name = validate_name(name)?;
        let fd = sys_shm::shm_open(&name)
            .map_err(|e| io_context(e, format!("attaching shared memory block {name:?}")))?;
        let size = sys_shm::size_of_fd(&fd)
            .map_err(|e| io_context(e, format!("shared memory block {name:?}")))?;
        if size == 0 {
            return Err(Error::InvalidArgument(format!(
                "shared memory block {name:?} is empty (0 bytes): nothing to map"
            )));
        }
        let map = Mapping::map(fd.as_fd(), size)
            .map_err(|e| io_context(e, format!("mapping shared memory block {name:?}")))?;
        Ok(SharedMemory {
            name,
            map,
            fd,
            unlink_in: None,
            kept: false,
            unlinked: AtomicBool::new(false),
        })
    }

    /// A second handle on the same block in this process, with its own mapping, that
    /// never unlinks the block: what to pass to a child while keeping the owner.
    ///
    /// ```
    /// use multiproc::shared_memory::SharedMemory;
    /// let shm = SharedMemory::create(8)?;
    /// let other = shm.try_clone()?;
    /// shm.write_volatile::<u8>(0, 42)?;
    /// assert_eq!(other.read_volatile::<u8>(0)?, 42);
    /// assert!(!other.is_owner());
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn try_clone(&self) -> Result<SharedMemory> {
        let fd = self.fd.try_clone()?;
        let map = Mapping::map(fd.as_fd(), self.map.len())
            .map_err(|e| io_context(e, format!("mapping shared memory block {:?}", self.name)))?;
        Ok(SharedMemory {
            name: self.name.clone(),
            map,
            fd,
            unlink_in: None,
            kept: false,
            unlinked: AtomicBool::new(false),
        })
    }

    /// The block's name, without a leading `/` (Python's `.name`).
    ///
    /// ```
    /// let shm = multiproc::shared_memory::SharedMemory::create(8)?;
    /// assert!(!shm.name().starts_with('/'));
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The size in bytes: the size asked for when created, the object's size when attached
    /// (as CPython's `.size`).
    ///
    /// ```
    /// let shm = multiproc::shared_memory::SharedMemory::create(12345)?;
    /// assert_eq!(shm.size(), 12345);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn size(&self) -> usize {
        self.map.len()
    }

    /// The block's bytes as a slice (Python's `.buf`, read side), without a copy.
    ///
    /// The safe ways in are [`read_at`](Self::read_at), [`read_slice_of`](Self::read_slice_of),
    /// [`to_vec_of`](Self::to_vec_of), [`read_volatile`](Self::read_volatile) and
    /// [`atomic`](Self::atomic): they copy, or go through atomics, and never hold a
    /// reference to bytes that someone else may write.
    ///
    /// # Safety
    /// While the returned slice lives, nothing may write the block's bytes:
    /// - not this handle (its safe writers take `&self`),
    /// - not another handle on the same block in this process, on any thread (from
    ///   [`try_clone`](Self::try_clone), [`attach`](Self::attach) or deserializing one),
    /// - not another process (coordinate with a lock, or by handing the block over),
    ///
    /// and nobody may shrink the block (see [*Shrinking*](crate::shared_memory#shrinking)).
    /// Rust assumes that the bytes behind a `&[u8]` do not change; a concurrent write
    /// breaks that assumption, which is undefined behaviour even for plain bytes.
    ///
    /// ```
    /// let shm = multiproc::shared_memory::SharedMemory::create(4)?;
    /// // SAFETY: the block was just created and no other handle on it exists yet.
    /// assert_eq!(unsafe { shm.buf() }, &[0, 0, 0, 0]);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    ///
    /// Without `unsafe` it does not compile:
    ///
    /// ```compile_fail,E0133
    /// let shm = multiproc::shared_memory::SharedMemory::create(4)?;
    /// let bytes: &[u8] = shm.buf();
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    #[allow(unsafe_code)] // the contract above; the mapping work is in `sys::shm`
    pub unsafe fn buf(&self) -> &[u8] {
        // SAFETY: the caller keeps every writer away while the slice lives (see above).
        unsafe { self.map.as_slice() }
    }

    /// The block's bytes as a writable slice (Python's `.buf`, write side), without a
    /// copy.
    ///
    /// The safe ways in are [`write_at`](Self::write_at),
    /// [`write_slice_of`](Self::write_slice_of), [`fill_of`](Self::fill_of),
    /// [`write_volatile`](Self::write_volatile) and [`atomic`](Self::atomic).
    ///
    /// # Safety
    /// While the returned slice lives, nothing else may read or write the block's bytes:
    /// no other handle on the same block in this process (on any thread), no other
    /// process; and nobody may shrink the block. (`&mut self` already excludes this
    /// handle's other methods.)
    ///
    /// ```
    /// let mut shm = multiproc::shared_memory::SharedMemory::create(4)?;
    /// // SAFETY: the block was just created and no other handle on it exists yet.
    /// unsafe { shm.buf_mut() }.copy_from_slice(b"abcd");
    /// let mut out = [0u8; 4];
    /// shm.read_at(0, &mut out)?;
    /// assert_eq!(&out, b"abcd");
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    ///
    /// Without `unsafe` it does not compile:
    ///
    /// ```compile_fail,E0133
    /// let mut shm = multiproc::shared_memory::SharedMemory::create(4)?;
    /// shm.buf_mut()[0] = 1;
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    #[allow(unsafe_code)] // the contract above; the mapping work is in `sys::shm`
    pub unsafe fn buf_mut(&mut self) -> &mut [u8] {
        // SAFETY: the caller keeps every other reader and writer away while the slice
        // lives (see above).
        unsafe { self.map.as_mut_slice() }
    }

    /// The block as a slice of `T`, without a copy (NumPy's `np.ndarray(shape, dtype,
    /// buffer=shm.buf)`). An [`Error::InvalidArgument`] if the size is not a whole number
    /// of `T`s (or `T` has size 0); the mapping is page-aligned, so alignment always fits.
    /// The safe alternatives copy: [`to_vec_of`](Self::to_vec_of),
    /// [`read_slice_of`](Self::read_slice_of), [`read_volatile`](Self::read_volatile).
    ///
    /// # Safety
    /// As for [`buf`](Self::buf): while the slice lives, nothing writes the block and
    /// nobody shrinks it.
    ///
    /// ```
    /// use multiproc::shared_memory::SharedMemory;
    /// let shm = SharedMemory::create(4 * 8)?;
    /// // SAFETY: no other handle on this new block exists, so nothing writes it.
    /// unsafe {
    ///     assert_eq!(shm.as_slice_of::<f64>()?, &[0.0; 4]);
    ///     assert_eq!(shm.as_slice_of::<u32>()?.len(), 8);
    ///     assert!(shm.as_slice_of::<[u8; 3]>().is_err()); // 32 bytes are not whole [u8; 3]s
    /// }
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    ///
    /// Without `unsafe` it does not compile:
    ///
    /// ```compile_fail,E0133
    /// let shm = multiproc::shared_memory::SharedMemory::create(8)?;
    /// let x: &[f64] = shm.as_slice_of::<f64>()?;
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    #[allow(unsafe_code)] // the contract above; the mapping work is in `sys::shm`
    pub unsafe fn as_slice_of<T: Pod>(&self) -> Result<&[T]> {
        let size = self.size();
        // SAFETY: the caller's contract is `buf`'s.
        let bytes = unsafe { self.map.as_slice() };
        bytemuck::try_cast_slice(bytes).map_err(|e| view_error::<T>(size, e))
    }

    /// The block as a mutable slice of `T`, without a copy; see
    /// [`as_slice_of`](Self::as_slice_of). The safe alternatives copy or go element by
    /// element: [`write_slice_of`](Self::write_slice_of), [`fill_of`](Self::fill_of),
    /// [`write_volatile`](Self::write_volatile), [`atomic`](Self::atomic).
    ///
    /// # Safety
    /// As for [`buf_mut`](Self::buf_mut): while the slice lives, nothing else reads or
    /// writes the block and nobody shrinks it.
    ///
    /// ```
    /// use multiproc::shared_memory::SharedMemory;
    /// let mut shm = SharedMemory::create(5 * 8)?;
    /// // SAFETY: no other handle on this new block exists, so nothing else touches it.
    /// let arr = unsafe { shm.as_mut_slice_of::<f64>()? };
    /// arr.copy_from_slice(&[1.0, 2.0, 3.0, 4.0, 5.0]);
    /// for x in arr.iter_mut() {
    ///     *x *= 2.0;
    /// }
    /// assert_eq!(shm.to_vec_of::<f64>()?, [2.0, 4.0, 6.0, 8.0, 10.0]);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    ///
    /// Without `unsafe` it does not compile:
    ///
    /// ```compile_fail,E0133
    /// let mut shm = multiproc::shared_memory::SharedMemory::create(8)?;
    /// shm.as_mut_slice_of::<f64>()?[0] = 1.0;
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    #[allow(unsafe_code)] // the contract above; the mapping work is in `sys::shm`
    pub unsafe fn as_mut_slice_of<T: Pod>(&mut self) -> Result<&mut [T]> {
        let size = self.size();
        // SAFETY: the caller's contract is `buf_mut`'s.
        let bytes = unsafe { self.map.as_mut_slice() };
        bytemuck::try_cast_slice_mut(bytes).map_err(|e| view_error::<T>(size, e))
    }

    /// Copies `dst.len()` bytes of the block, starting at byte `offset`, into `dst`. An
    /// [`Error::InvalidArgument`] if they do not all lie inside the block.
    ///
    /// Safe whatever other handles and processes do meanwhile: a concurrent write may
    /// leave `dst` with a mix of old and new bytes (use a lock to get a consistent copy),
    /// never with anything worse.
    ///
    /// ```
    /// let shm = multiproc::shared_memory::SharedMemory::create(8)?;
    /// shm.write_at(2, b"hey")?;
    /// let mut out = [0u8; 4];
    /// shm.read_at(1, &mut out)?;
    /// assert_eq!(&out, b"\0hey");
    /// assert!(shm.read_at(5, &mut out).is_err()); // 5 + 4 > 8
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn read_at(&self, offset: usize, dst: &mut [u8]) -> Result<()> {
        self.check_range(offset, dst.len())?;
        self.map.copy_out(offset, dst);
        Ok(())
    }

    /// Copies `src` into the block starting at byte `offset`. An
    /// [`Error::InvalidArgument`] (and nothing written) if it does not fit.
    ///
    /// ```
    /// let shm = multiproc::shared_memory::SharedMemory::create(4)?;
    /// let other = shm.try_clone()?; // another handle, as another thread or process has
    /// shm.write_at(0, b"abcd")?;
    /// let mut out = [0u8; 4];
    /// other.read_at(0, &mut out)?;
    /// assert_eq!(&out, b"abcd");
    /// assert!(shm.write_at(1, b"abcd").is_err());
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn write_at(&self, offset: usize, src: &[u8]) -> Result<()> {
        self.check_range(offset, src.len())?;
        self.map.copy_in(offset, src);
        Ok(())
    }

    /// Copies `dst.len()` elements of type `T`, starting at element `index` of the block
    /// viewed as `[T]`, into `dst`: the safe form of
    /// `dst.copy_from_slice(&as_slice_of::<T>()?[index..index + dst.len()])`.
    /// An [`Error::InvalidArgument`] if they do not all lie inside the block.
    ///
    /// ```
    /// let shm = multiproc::shared_memory::SharedMemory::create(4 * 8)?;
    /// shm.write_slice_of::<f64>(1, &[1.5, 2.5])?;
    /// let mut out = [0.0f64; 3];
    /// shm.read_slice_of(1, &mut out)?;
    /// assert_eq!(out, [1.5, 2.5, 0.0]);
    /// assert!(shm.read_slice_of(2, &mut out).is_err()); // elements 2..5 of 4
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn read_slice_of<T: Pod>(&self, index: usize, dst: &mut [T]) -> Result<()> {
        let offset = self.element_offset::<T>(index, dst.len())?;
        self.map.copy_out(offset, bytemuck::cast_slice_mut(dst));
        Ok(())
    }

    /// Copies `src` into the block viewed as `[T]`, starting at element `index`: the
    /// safe form of `as_mut_slice_of::<T>()?[index..index + src.len()].copy_from_slice(src)`.
    /// An [`Error::InvalidArgument`] (and nothing written) if it does not fit.
    ///
    /// ```
    /// let shm = multiproc::shared_memory::SharedMemory::create(3 * 4)?;
    /// shm.write_slice_of::<u32>(0, &[7, 8, 9])?;
    /// assert_eq!(shm.to_vec_of::<u32>()?, [7, 8, 9]);
    /// assert!(shm.write_slice_of::<u32>(1, &[1, 2, 3]).is_err());
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn write_slice_of<T: Pod>(&self, index: usize, src: &[T]) -> Result<()> {
        let offset = self.element_offset::<T>(index, src.len())?;
        self.map.copy_in(offset, bytemuck::cast_slice(src));
        Ok(())
    }

    /// A copy of the whole block as a `Vec<T>`. An [`Error::InvalidArgument`] if the size
    /// is not a whole number of `T`s (or `T` has size 0).
    ///
    /// ```
    /// let shm = multiproc::shared_memory::SharedMemory::create(2 * 8)?;
    /// shm.write_slice_of::<i64>(0, &[-1, 1])?;
    /// assert_eq!(shm.to_vec_of::<i64>()?, [-1, 1]);
    /// assert!(shm.to_vec_of::<[u8; 3]>().is_err()); // 16 bytes are not whole [u8; 3]s
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn to_vec_of<T: Pod>(&self) -> Result<Vec<T>> {
        let n = self.whole_elements::<T>()?;
        let mut out = vec![T::zeroed(); n];
        self.map.copy_out(0, bytemuck::cast_slice_mut(&mut out));
        Ok(out)
    }

    /// Writes `value` into every element of `range` of the block viewed as `[T]`: the
    /// safe form of `as_mut_slice_of::<T>()?[range].fill(value)`, as fast. An
    /// [`Error::InvalidArgument`] (and nothing written) if the range does not lie inside
    /// the block.
    ///
    /// ```
    /// let shm = multiproc::shared_memory::SharedMemory::create(4 * 8)?;
    /// shm.fill_of::<f64>(.., 1.5)?;
    /// shm.fill_of::<f64>(2.., -1.0)?;
    /// assert_eq!(shm.to_vec_of::<f64>()?, [1.5, 1.5, -1.0, -1.0]);
    /// assert!(shm.fill_of::<f64>(3..5, 0.0).is_err());
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn fill_of<T: Pod>(&self, range: impl RangeBounds<usize>, value: T) -> Result<()> {
        let total = self.size() / size_of::<T>().max(1);
        let (start, end) = crate::error::range_within(range, total)?;
        let offset = self.element_offset::<T>(start, end - start)?;
        self.map.fill(offset, end - start, value);
        Ok(())
    }

    /// A volatile read of element `index` of the block viewed as `[T]` (a copy, never
    /// elided or merged with other reads by the compiler). An [`Error::InvalidArgument`]
    /// if the element does not lie inside the block. A concurrent write of the same
    /// element by another handle or process may leave the value torn (a mix of old and new
    /// bytes) for types wider than the machine's atomic accesses; use
    /// [`atomic`](Self::atomic) when that matters.
    ///
    /// ```
    /// let shm = multiproc::shared_memory::SharedMemory::create(3 * 8)?;
    /// shm.write_volatile::<f64>(2, 0.25)?;
    /// assert_eq!(shm.read_volatile::<f64>(2)?, 0.25);
    /// assert_eq!(shm.read_volatile::<u8>(16)?, 0); // the same block as bytes
    /// assert!(shm.read_volatile::<f64>(3).is_err());
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn read_volatile<T: Pod>(&self, index: usize) -> Result<T> {
        let offset = self.element_offset::<T>(index, 1)?;
        Ok(self.map.read_volatile(offset))
    }

    /// A volatile write of `value` into element `index` of the block viewed as `[T]`;
    /// see [`read_volatile`](Self::read_volatile).
    ///
    /// ```
    /// let shm = multiproc::shared_memory::SharedMemory::create(8)?;
    /// shm.write_volatile::<u16>(3, 0xbeef)?;
    /// assert_eq!(shm.read_volatile::<u16>(3)?, 0xbeef);
    /// assert!(shm.write_volatile::<u16>(4, 1).is_err());
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn write_volatile<T: Pod>(&self, index: usize, value: T) -> Result<()> {
        let offset = self.element_offset::<T>(index, 1)?;
        self.map.write_volatile(offset, value);
        Ok(())
    }

    /// Element `index` of the block viewed as an array of the atomic integer `A` (for
    /// example `AtomicU64`): a reference that is sound to hold while other handles and
    /// processes read and write the same element, as long as they too use atomic
    /// operations on it. An [`Error::InvalidArgument`] if the element does not lie inside
    /// the block.
    ///
    /// ```
    /// use std::sync::atomic::{AtomicU32, Ordering};
    /// use multiproc::shared_memory::SharedMemory;
    ///
    /// fn count((shm, n): (SharedMemory, u32)) {
    ///     let counter = shm.atomic::<AtomicU32>(0).unwrap();
    ///     for _ in 0..n {
    ///         counter.fetch_add(1, Ordering::SeqCst);
    ///     }
    /// }
    ///
    /// let shm = SharedMemory::create(4)?;
    /// let p = multiproc::Process::new(count, (shm.try_clone()?, 1000));
    /// p.start()?;
    /// count((shm.try_clone()?, 1000));
    /// p.join(None)?;
    /// assert_eq!(shm.atomic::<AtomicU32>(0)?.load(Ordering::SeqCst), 2000);
    /// assert!(shm.atomic::<AtomicU32>(1).is_err());
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn atomic<A: SharedAtomic>(&self, index: usize) -> Result<&A> {
        let offset = index
            .checked_mul(size_of::<A>())
            .filter(|&offset| self.map.fits(offset, size_of::<A>()))
            .ok_or_else(|| {
                Error::InvalidArgument(format!(
                    "atomic element {index} of {} bytes each lies outside a block of {} bytes",
                    size_of::<A>(),
                    self.size()
                ))
            })?;
        Ok(self.map.atomic(offset))
    }

    /// The byte offset of `count` elements of `T` from element `index`, checked to lie
    /// inside the block (the mapping is page-aligned, so every element is aligned).
    fn element_offset<T>(&self, index: usize, count: usize) -> Result<usize> {
        let each = size_of::<T>();
        let ty = std::any::type_name::<T>();
        if each == 0 {
            return Err(Error::InvalidArgument(format!(
                "cannot access a block as {ty}, a type of size 0"
            )));
        }
        index
            .checked_mul(each)
            .zip(count.checked_mul(each))
            .filter(|&(offset, len)| self.map.fits(offset, len))
            .map(|(offset, _)| offset)
            .ok_or_else(|| {
                Error::InvalidArgument(format!(
                    "elements {index}..{index}+{count} of {ty} ({each} bytes each) lie outside \
                     a block of {} bytes",
                    self.size()
                ))
            })
    }

    /// How many whole `T`s the block holds; an error unless the size is a multiple.
    fn whole_elements<T>(&self) -> Result<usize> {
        let each = size_of::<T>();
        if each == 0 || self.size() % each != 0 {
            return Err(view_error::<T>(
                self.size(),
                bytemuck::PodCastError::OutputSliceWouldHaveSlop,
            ));
        }
        Ok(self.size() / each)
    }

    /// Checks that `len` bytes from `offset` lie inside the block.
    fn check_range(&self, offset: usize, len: usize) -> Result<()> {
        if self.map.fits(offset, len) {
            Ok(())
        } else {
            Err(Error::InvalidArgument(format!(
                "bytes {offset}..{offset}+{len} lie outside a block of {} bytes",
                self.size()
            )))
        }
    }

    /// Appends `len` bytes of the block from byte `offset` to `vec`, copying straight into
    /// its spare capacity; for the crate's own large queue items.
    pub(crate) fn extend_vec(&self, offset: usize, len: usize, vec: &mut Vec<u8>) -> Result<()> {
        self.check_range(offset, len)?;
        self.map.extend_vec(offset, len, vec);
        Ok(())
    }

    /// Whether dropping this handle unlinks the block: it created the block, was not
    /// told to keep it, and this is the process that created it.
    ///
    /// ```
    /// use multiproc::shared_memory::SharedMemory;
    /// let shm = SharedMemory::create(8)?;
    /// assert!(shm.is_owner());
    /// assert!(!SharedMemory::attach(shm.name())?.is_owner());
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn is_owner(&self) -> bool {
        self.unlink_in == Some(current_pid())
    }

    /// Hands the block over: closes this handle without unlinking, so that another
    /// process (which attaches by name and unlinks when done) decides its end. Its name
    /// still names this process as creator, so if nobody unlinks it after this process
    /// is gone, [`clean_orphans`] removes it.
    ///
    /// ```
    /// use multiproc::shared_memory::SharedMemory;
    /// let shm = SharedMemory::create(8)?;
    /// let name = shm.name().to_string();
    /// shm.disown();
    /// let other = SharedMemory::attach(&name)?; // still there
    /// other.unlink()?;
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn disown(mut self) {
        self.unlink_in = None;
    }

    /// Whether this handle created the block with [`keep(true)`](SharedMemoryBuilder::keep).
    ///
    /// ```
    /// use multiproc::shared_memory::SharedMemory;
    /// let shm = SharedMemory::builder().size(8).keep(true).create()?;
    /// assert!(shm.is_kept() && !shm.is_owner());
    /// shm.unlink()?;
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn is_kept(&self) -> bool {
        self.kept
    }

    /// Ends this handle: unmaps the block and, if this handle [owns](Self::is_owner) it,
    /// unlinks it. The same as dropping the handle, with the unlink's error reported.
    /// Python's `close()` (and, for the creator, `unlink()`).
    ///
    /// ```
    /// use multiproc::shared_memory::SharedMemory;
    /// let shm = SharedMemory::create(8)?;
    /// let name = shm.name().to_string();
    /// SharedMemory::attach(&name)?.close()?; // a worker: closes only
    /// shm.close()?; // the creator: closes and unlinks
    /// assert!(SharedMemory::attach(&name).is_err());
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn close(mut self) -> Result<()> {
        let result = if self.is_owner() && !self.unlinked.load(Ordering::Acquire) {
            match self.unlink() {
                Err(Error::Io(e)) if e.kind() == io::ErrorKind::NotFound => Ok(()),
                other => other,
            }
        } else {
            Ok(())
        };
        self.unlink_in = None;
        result
    }

    /// Removes the block's name now, from any handle, creator or not (Python's
    /// `unlink()`); this and other mappings stay usable until they are dropped. The
    /// handle first checks that the name still refers to its own block, so it never
    /// removes a block that replaced it; calling it twice on one handle is not an error.
    ///
    /// ```
    /// use multiproc::shared_memory::SharedMemory;
    /// let shm = SharedMemory::create(8)?;
    /// let other = SharedMemory::attach(shm.name())?;
    /// other.unlink()?;
    /// other.unlink()?; // already done: fine
    /// assert!(SharedMemory::attach(shm.name()).is_err());
    /// assert!(shm.unlink().is_err()); // the name is gone
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn unlink(&self) -> Result<()> {
        if self.unlinked.load(Ordering::Acquire) {
            return Ok(());
        }
        let gone = |why: &str| {
            self.unlinked.store(true, Ordering::Release);
            Error::Io(io::Error::new(
                io::ErrorKind::NotFound,
                format!("shared memory block {:?} {why}", self.name),
            ))
        };
        match sys_shm::shm_names(&self.name, &self.fd) {
            Ok(true) => {}
            Ok(false) => {
                return Err(gone("was unlinked, and its name now refers to another block"))
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(gone("was already unlinked"))
            }
            Err(e) => return Err(io_context(e, format!("shared memory block {:?}", self.name))),
        }
        match sys_shm::shm_unlink(&self.name) {
            Ok(()) => {
                self.unlinked.store(true, Ordering::Release);
                Ok(())
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => Err(gone("was already unlinked")),
            Err(e) => Err(io_context(e, format!("unlinking shared memory block {:?}", self.name))),
        }
    }

    /// The 32-bit word at `offset` of the block, for the crate's own shared headers.
    pub(crate) fn atomic_u32(&self, offset: usize) -> &std::sync::atomic::AtomicU32 {
        self.map.atomic_u32(offset)
    }
}

impl Drop for SharedMemory {
    fn drop(&mut self) {
        if self.is_owner() && !self.unlinked.load(Ordering::Acquire) {
            let _ = self.unlink();
        }
    }
}

impl fmt::Debug for SharedMemory {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SharedMemory")
            .field("name", &self.name)
            .field("size", &self.size())
            .field("owner", &self.is_owner())
            .field("kept", &self.kept)
            .finish()
    }
}

/// What a handle becomes on the wire: its name.
#[derive(Serialize)]
#[serde(rename = "SharedMemory")]
struct WireRef<'a> {
    name: &'a str,
}

#[derive(Deserialize)]
#[serde(rename = "SharedMemory")]
struct Wire {
    name: String,
}

/// Serialized by name: deserializing attaches to the same block (see the `Deserialize`
/// impl).
///
/// ```
/// use multiproc::shared_memory::SharedMemory;
/// use multiproc::Codec;
///
/// let shm = SharedMemory::create(8)?;
/// let mut bytes = Vec::new();
/// Codec::Postcard.encode_into(&shm, &mut bytes)?;
/// let attached: SharedMemory = Codec::Postcard.decode(&bytes)?;
/// assert_eq!(attached.name(), shm.name());
/// assert!(!attached.is_owner());
/// # Ok::<(), multiproc::Error>(())
/// ```
impl Serialize for SharedMemory {
    fn serialize<S: Serializer>(&self, serializer: S) -> std::result::Result<S::Ok, S::Error> {
        WireRef { name: &self.name }.serialize(serializer)
    }
}

/// Deserializing attaches to the block by name; the new handle never unlinks it. The
/// block must still exist: its creator keeps its handle until the receivers attached.
///
/// ```
/// use multiproc::shared_memory::SharedMemory;
/// use multiproc::Process;
///
/// fn child(shm: SharedMemory) {
///     shm.write_volatile::<u8>(0, 7).unwrap();
/// } // dropped here: only attached, so the block stays
///
/// let shm = SharedMemory::create(8)?;
/// let p = Process::new(child, shm.try_clone()?);
/// p.start()?;
/// p.join(None)?;
/// assert_eq!(p.exitcode(), Some(0));
/// assert_eq!(shm.read_volatile::<u8>(0)?, 7);
/// # Ok::<(), multiproc::Error>(())
/// ```
impl<'de> Deserialize<'de> for SharedMemory {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> std::result::Result<Self, D::Error> {
        let wire = Wire::deserialize(deserializer)?;
        SharedMemory::attach(&wire.name).map_err(crate::codec::de_error)
    }
}

fn view_error<T>(size: usize, e: bytemuck::PodCastError) -> Error {
    let ty = std::any::type_name::<T>();
    let each = size_of::<T>();
    Error::InvalidArgument(match e {
        bytemuck::PodCastError::TargetAlignmentGreaterAndInputNotAligned => {
            format!("the block is not aligned for {ty} (alignment {})", align_of::<T>())
        }
        _ if each == 0 => format!("cannot view a block as {ty}, a type of size 0"),
        _ => format!(
            "a block of {size} bytes is not a whole number of {ty} ({each} bytes each); view a \
             range with read_at or read_slice_of instead"
        ),
    })
}

/// An `io::Error` of the same kind with `what` in front of its message.
fn io_context(e: io::Error, what: String) -> Error {
    Error::Io(io::Error::new(e.kind(), format!("{what}: {e}")))
}

/// Checks a block name and returns it without leading slashes.
fn validate_name(name: &str) -> Result<String> {
    let bare = name.trim_start_matches('/');
    let why = if bare.is_empty() {
        Some("it is empty")
    } else if bare == "." || bare == ".." {
        Some("'.' and '..' are not names")
    } else if bare.contains('/') {
        Some("it contains '/' after the start")
    } else if bare.contains('\0') {
        Some("it contains a NUL byte")
    } else if bare.len() > NAME_MAX {
        Some("it is longer than 255 bytes")
    } else {
        None
    };
    match why {
        Some(why) => {
            Err(Error::InvalidArgument(format!("{name:?} is not a shared memory name: {why}")))
        }
        None => Ok(bare.to_string()),
    }
}

fn current_pid() -> i32 {
    rustix::process::getpid().as_raw_nonzero().get()
}

/// Creates a block with a fresh generated name for this process.
fn create_generated(
    size: usize,
    keep: bool,
    queue: Option<(u64, u64)>,
) -> Result<(String, OwnedFd)> {
    let pid = current_pid();
    let start = proc_stat(pid).ok().flatten().map_or(0, |s| s.start);
    let (mark, start) = match (keep, queue) {
        (true, _) => (KEPT_MARK, start.to_string()),
        (false, None) => (OWNED_MARK, start.to_string()),
        (false, Some((dev, ino))) => (QUEUE_MARK, format!("{start}_{dev}_{ino}")),
    };
    let mut last = None;
    for _ in 0..64 {
        let random = getrandom::u32()
            .map_err(|e| Error::Io(io::Error::other(format!("no randomness for a name: {e}"))))?;
        let name = format!("{mark}{pid}_{start}_{random:08x}");
        match sys_shm::shm_create(&name, size) {
            Ok(fd) => return Ok((name, fd)),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => last = Some(e),
            Err(e) => return Err(io_context(e, format!("creating shared memory block {name:?}"))),
        }
    }
    Err(io_context(
        last.unwrap_or_else(|| io::Error::from(io::ErrorKind::AlreadyExists)),
        "no free generated shared memory name after 64 tries".into(),
    ))
}

// ---------------------------------------------------------------------------------------
// The tracker

/// What became of a block's creator, as [`list_blocks`] sees it.
///
/// ```
/// use multiproc::shared_memory::{list_blocks, BlockState, SharedMemory};
/// let shm = SharedMemory::create(8)?;
/// let mine = list_blocks()?.into_iter().find(|b| b.name == shm.name()).unwrap();
/// assert_eq!(mine.state, BlockState::Live);
/// assert_eq!(mine.state.as_str(), "live");
/// # Ok::<(), multiproc::Error>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BlockState {
    /// Owned, and its creator still runs, or a live process can still reach it (has it
    /// open or mapped, or holds the queue whose item it carries).
    Live,
    /// Owned, its creator is gone (exited, killed, or a zombie), and no live process can
    /// reach it: nobody will unlink it.
    Orphaned,
    /// Created to be kept: it outlives its creator and is never cleaned.
    Kept,
}

impl BlockState {
    /// `"live"`, `"orphaned"` or `"kept"`.
    ///
    /// ```
    /// assert_eq!(multiproc::shared_memory::BlockState::Orphaned.as_str(), "orphaned");
    /// ```
    pub fn as_str(self) -> &'static str {
        match self {
            BlockState::Live => "live",
            BlockState::Orphaned => "orphaned",
            BlockState::Kept => "kept",
        }
    }
}

impl fmt::Display for BlockState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A block that this library created with a generated name, found in `/dev/shm`.
///
/// ```
/// use multiproc::shared_memory::{list_blocks, SharedMemory};
/// let shm = SharedMemory::create(4096)?;
/// let info = list_blocks()?.into_iter().find(|b| b.name == shm.name()).unwrap();
/// assert_eq!(info.owner_pid, std::process::id() as i32);
/// assert_eq!(info.size, 4096);
/// assert!(info.owner_alive);
/// # Ok::<(), multiproc::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct BlockInfo {
    /// The name, without a leading `/`.
    pub name: String,
    /// The pid of the process that created it.
    pub owner_pid: i32,
    /// Its size in bytes.
    pub size: u64,
    /// Live, orphaned or kept.
    pub state: BlockState,
    /// Whether its creator still runs (for a kept block, it may have exited).
    pub owner_alive: bool,
}

/// What [`clean_orphans`] did.
///
/// ```
/// let report = multiproc::shared_memory::clean_orphans_of(std::process::id() as i32)?;
/// assert!(report.failed.is_empty());
/// # Ok::<(), multiproc::Error>(())
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct CleanReport {
    /// The orphaned blocks removed.
    pub removed: Vec<BlockInfo>,
    /// Orphaned blocks that could not be removed, with the reason (typically another
    /// user's block: `/dev/shm` lets only its owner remove it).
    pub failed: Vec<(BlockInfo, String)>,
}

/// The parts of a generated name.
struct Generated {
    kept: bool,
    pid: i32,
    start: u64,
    /// For a queue's large item: the (device, inode) of the queue's segment.
    queue: Option<(u64, u64)>,
}

/// Parses `psm_m{p|k}<pid>_<start>_<8 hex>` and `psm_mq<pid>_<start>_<dev>_<inode>_<8
/// hex>`; anything else is not this library's.
fn parse_generated(name: &str) -> Option<Generated> {
    let (kept, queued, rest) = if let Some(rest) = name.strip_prefix(OWNED_MARK) {
        (false, false, rest)
    } else if let Some(rest) = name.strip_prefix(QUEUE_MARK) {
        (false, true, rest)
    } else {
        (true, false, name.strip_prefix(KEPT_MARK)?)
    };
    let parts: Vec<&str> = rest.split('_').collect();
    let decimal = |s: &str| !s.is_empty() && s.len() <= 20 && s.bytes().all(|b| b.is_ascii_digit());
    let (numbers, random) = match (queued, parts.as_slice()) {
        (false, [pid, start, random]) => (vec![*pid, *start], *random),
        (true, [pid, start, dev, ino, random]) => (vec![*pid, *start, *dev, *ino], *random),
        _ => return None,
    };
    if !numbers.iter().all(|n| decimal(n))
        || random.len() != 8
        || !random.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
    {
        return None;
    }
    let pid: i32 = numbers[0].parse().ok().filter(|&p| p > 0)?;
    let queue = match numbers.as_slice() {
        [_, _, dev, ino] => Some((dev.parse().ok()?, ino.parse().ok()?)),
        _ => None,
    };
    Some(Generated { kept, pid, start: numbers[1].parse().ok()?, queue })
}

struct ProcStat {
    state: char,
    start: u64,
}

/// Reads `/proc/PID/stat`: `Ok(None)` if there is no such process.
fn proc_stat(pid: i32) -> io::Result<Option<ProcStat>> {
    let text = match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(t) => t,
        Err(e) if matches!(e.raw_os_error(), Some(libc::ENOENT) | Some(libc::ESRCH)) => {
            return Ok(None)
        }
        Err(e) => return Err(e),
    };
    // "pid (comm) state ppid …": comm may hold spaces and parentheses, so split after the
    // last ')'. The state is field 3, the start time field 22.
    let bad = || io::Error::new(io::ErrorKind::InvalidData, format!("/proc/{pid}/stat: {text:?}"));
    let after = &text[text.rfind(')').ok_or_else(bad)? + 1..];
    let fields: Vec<&str> = after.split_whitespace().collect();
    let state = fields.first().and_then(|s| s.chars().next()).ok_or_else(bad)?;
    let start = fields.get(19).and_then(|s| s.parse().ok()).ok_or_else(bad)?;
    Ok(Some(ProcStat { state, start }))
}

/// Whether the process `pid` that started at `start` (0: unknown) still runs. Zombies
/// and dead processes are gone; a pid now used by a later process is gone. When `/proc`
/// cannot tell (not mounted, or hiding other users' processes), `kill(pid, 0)` decides,
/// and a doubt means "alive", so that nothing is ever cleaned on a guess.
fn alive(pid: i32, start: u64) -> bool {
    match proc_stat(pid) {
        Ok(Some(s)) => !matches!(s.state, 'Z' | 'X' | 'x') && (start == 0 || s.start == start),
        Ok(None) => match rustix::process::Pid::from_raw(pid) {
            Some(p) => {
                !matches!(rustix::process::test_kill_process(p), Err(rustix::io::Errno::SRCH))
            }
            None => false,
        },
        Err(_) => true,
    }
}

/// Whether the process that created the block `name` is gone. Only a generated owned
/// name can tell; for any other name (or a doubt), `false`.
pub(crate) fn creator_is_gone(name: &str) -> bool {
    match parse_generated(name) {
        Some(g) if !g.kept => !alive(g.pid, g.start),
        _ => false,
    }
}

/// The blocks in `/dev/shm` that this library created with generated names, live,
/// orphaned or kept, sorted by name. Objects with other names are not listed.
///
/// A block whose creator is gone is listed live while a live process can still reach it
/// (see [the module docs](crate::shared_memory#lifetime-the-creator-decides)).
///
/// ```
/// use multiproc::shared_memory::{list_blocks, BlockState, SharedMemory};
/// let kept = SharedMemory::builder().size(8).keep(true).create()?;
/// let blocks = list_blocks()?;
/// let info = blocks.iter().find(|b| b.name == kept.name()).unwrap();
/// assert_eq!(info.state, BlockState::Kept);
/// kept.unlink()?;
/// # Ok::<(), multiproc::Error>(())
/// ```
pub fn list_blocks() -> Result<Vec<BlockInfo>> {
    let entries = match std::fs::read_dir(sys_shm::SHM_DIR) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(io_context(e, format!("listing {}", sys_shm::SHM_DIR))),
    };
    let mut blocks = Vec::new();
    // What live processes hold, read once and only if some creator is gone.
    let mut in_use: Option<Option<std::collections::HashSet<(u64, u64)>>> = None;
    for entry in entries {
        let Ok(entry) = entry else { continue };
        let Some(name) = entry.file_name().to_str().map(str::to_string) else { continue };
        let Some(generated) = parse_generated(&name) else { continue };
        // Gone since the listing, or not a plain file: not a block.
        let Ok(meta) = std::fs::symlink_metadata(entry.path()) else { continue };
        if !meta.file_type().is_file() {
            continue;
        }
        let owner_alive = alive(generated.pid, generated.start);
        let state = match (generated.kept, owner_alive) {
            (true, _) => BlockState::Kept,
            (false, true) => BlockState::Live,
            (false, false) => {
                // `None` inside: `/proc` could not tell, and a doubt means "reachable".
                let held = in_use.get_or_insert_with(|| sys_shm::objects_in_use().ok());
                use std::os::unix::fs::MetadataExt;
                let reachable = held.as_ref().is_none_or(|held| {
                    held.contains(&(meta.dev(), meta.ino()))
                        || generated.queue.is_some_and(|queue| held.contains(&queue))
                });
                if reachable {
                    BlockState::Live
                } else {
                    BlockState::Orphaned
                }
            }
        };
        blocks.push(BlockInfo {
            name,
            owner_pid: generated.pid,
            size: meta.len(),
            state,
            owner_alive,
        });
    }
    blocks.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(blocks)
}

/// Unlinks every orphaned block (see [`list_blocks`]): owned blocks whose creator is
/// gone and that no live process can reach. Live and kept blocks, and objects this library
/// did not name, are never touched.
/// A block that vanishes meanwhile (cleaned by someone else) is skipped.
///
/// (Not run as a doc test: a test must not clean what other programs left.)
///
/// ```no_run
/// use multiproc::shared_memory::{clean_orphans, SharedMemory};
/// let live = SharedMemory::create(8)?;
/// let report = clean_orphans()?;
/// assert!(report.removed.iter().all(|b| b.name != live.name()));
/// SharedMemory::attach(live.name())?; // still there
/// # Ok::<(), multiproc::Error>(())
/// ```
pub fn clean_orphans() -> Result<CleanReport> {
    clean(None)
}

/// Unlinks the orphaned blocks (see [`clean_orphans`]) that process `pid` created, and
/// no others: for a program (or a test) that cleans up after its own children without
/// touching what other programs left.
///
/// ```
/// use multiproc::shared_memory::{clean_orphans_of, SharedMemory};
/// let live = SharedMemory::create(8)?;
/// let report = clean_orphans_of(std::process::id() as i32)?;
/// assert!(report.removed.is_empty()); // this process runs: none of its blocks is orphaned
/// SharedMemory::attach(live.name())?;
/// # Ok::<(), multiproc::Error>(())
/// ```
pub fn clean_orphans_of(pid: i32) -> Result<CleanReport> {
    clean(Some(pid))
}

fn clean(only: Option<i32>) -> Result<CleanReport> {
    let mut report = CleanReport::default();
    let orphans = |blocks: Vec<BlockInfo>| -> Vec<BlockInfo> {
        blocks
            .into_iter()
            .filter(|b| b.state == BlockState::Orphaned)
            .filter(|b| only.is_none_or(|pid| pid == b.owner_pid))
            .collect()
    };
    let mut candidates = orphans(list_blocks()?);
    if !candidates.is_empty() {
        // Look twice: a queue handed from one process to another between the reads of
        // their `/proc` entries would be missed by one look, not by both.
        let again: std::collections::HashSet<String> =
            orphans(list_blocks()?).into_iter().map(|b| b.name).collect();
        candidates.retain(|b| again.contains(&b.name));
    }
    for block in candidates {
        match sys_shm::shm_unlink(&block.name) {
            Ok(()) => report.removed.push(block),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => report.failed.push((block, e.to_string())),
        }
    }
    Ok(report)
}

// ---------------------------------------------------------------------------------------
// ShareableList

/// One item of a [`ShareableList`]: the types CPython's `ShareableList` stores.
///
/// `==` ([`PartialEq`]) compares variants strictly; [`py_eq`](Self::py_eq) is Python's
/// `==`, where `1 == 1.0 == True`.
///
/// ```
/// use multiproc::shared_memory::ListItem;
/// let items: Vec<ListItem> = vec![3.into(), 2.5.into(), true.into(), "hi".into(), ListItem::None];
/// assert_eq!(items[0], ListItem::Int(3));
/// assert!(ListItem::Int(1).py_eq(&ListItem::Bool(true)));
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum ListItem {
    /// Python `int` (64-bit, as CPython's format `q`).
    Int(i64),
    /// Python `float` (`d`).
    Float(f64),
    /// Python `bool` (`xxxxxxx?`).
    Bool(bool),
    /// Python `str`, stored as UTF-8 (`Ns`). Trailing NUL characters do not survive.
    Str(String),
    /// Python `bytes` (`Ns`). Trailing NUL bytes do not survive.
    Bytes(Vec<u8>),
    /// Python `None` (`xxxxxx?x`).
    None,
}

impl ListItem {
    /// Python's `==` between two items: numbers (`Int`, `Float`, `Bool`) compare by value
    /// (exactly, as Python compares `int` with `float`), `Str` with `Str`, `Bytes` with
    /// `Bytes`, `None` with `None`; anything else is unequal. Used by
    /// [`ShareableList::count`] and [`ShareableList::index`].
    ///
    /// ```
    /// use multiproc::shared_memory::ListItem;
    /// assert!(ListItem::Float(2.0).py_eq(&ListItem::Int(2)));
    /// assert!(ListItem::Bool(false).py_eq(&ListItem::Int(0)));
    /// assert!(!ListItem::Float(f64::NAN).py_eq(&ListItem::Float(f64::NAN)));
    /// assert!(!ListItem::Str("a".into()).py_eq(&ListItem::Bytes(b"a".to_vec())));
    /// ```
    pub fn py_eq(&self, other: &ListItem) -> bool {
        match (self.number(), other.number()) {
            (Some(a), Some(b)) => a.eq(b),
            (Some(_), None) | (None, Some(_)) => false,
            (None, None) => match (self, other) {
                (ListItem::Str(a), ListItem::Str(b)) => a == b,
                (ListItem::Bytes(a), ListItem::Bytes(b)) => a == b,
                (ListItem::None, ListItem::None) => true,
                _ => false,
            },
        }
    }

    fn number(&self) -> Option<Number> {
        match *self {
            ListItem::Int(i) => Some(Number::Int(i)),
            ListItem::Bool(b) => Some(Number::Int(i64::from(b))),
            ListItem::Float(f) => Some(Number::Float(f)),
            _ => None,
        }
    }

    /// Python's type name: `int`, `float`, `bool`, `str`, `bytes` or `NoneType`.
    ///
    /// ```
    /// assert_eq!(multiproc::shared_memory::ListItem::None.type_name(), "NoneType");
    /// ```
    pub fn type_name(&self) -> &'static str {
        match self {
            ListItem::Int(_) => "int",
            ListItem::Float(_) => "float",
            ListItem::Bool(_) => "bool",
            ListItem::Str(_) => "str",
            ListItem::Bytes(_) => "bytes",
            ListItem::None => "NoneType",
        }
    }
}

#[derive(Clone, Copy)]
enum Number {
    Int(i64),
    Float(f64),
}

impl Number {
    fn eq(self, other: Number) -> bool {
        match (self, other) {
            (Number::Int(a), Number::Int(b)) => a == b,
            (Number::Float(a), Number::Float(b)) => a == b,
            (Number::Int(i), Number::Float(f)) | (Number::Float(f), Number::Int(i)) => {
                // Exact, as Python: the float must be integral and in i64's range.
                let limit = 2f64.powi(63);
                f.fract() == 0.0 && (-limit..limit).contains(&f) && f as i64 == i
            }
        }
    }
}

/// Python's repr: `1`, `2.5`, `True`, `'text'`, `b'bytes'`, `None`.
///
/// ```
/// use multiproc::shared_memory::ListItem;
/// assert_eq!(ListItem::Float(3.0).to_string(), "3.0");
/// assert_eq!(ListItem::Str("it's".into()).to_string(), "\"it's\"");
/// assert_eq!(ListItem::Bytes(b"a\x00".to_vec()).to_string(), "b'a\\x00'");
/// ```
impl fmt::Display for ListItem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ListItem::Int(i) => write!(f, "{i}"),
            ListItem::Float(x) => f.write_str(&py_float_repr(*x)),
            ListItem::Bool(true) => f.write_str("True"),
            ListItem::Bool(false) => f.write_str("False"),
            ListItem::None => f.write_str("None"),
            ListItem::Str(s) => {
                let quote = if s.contains('\'') && !s.contains('"') { '"' } else { '\'' };
                write!(f, "{quote}")?;
                for c in s.chars() {
                    match c {
                        '\\' => f.write_str("\\\\")?,
                        '\n' => f.write_str("\\n")?,
                        '\r' => f.write_str("\\r")?,
                        '\t' => f.write_str("\\t")?,
                        c if c == quote => write!(f, "\\{c}")?,
                        c if (c as u32) < 0x20 || c as u32 == 0x7f => {
                            write!(f, "\\x{:02x}", c as u32)?
                        }
                        c => write!(f, "{c}")?,
                    }
                }
                write!(f, "{quote}")
            }
            ListItem::Bytes(b) => {
                let quote = if b.contains(&b'\'') && !b.contains(&b'"') { '"' } else { '\'' };
                write!(f, "b{quote}")?;
                for &byte in b {
                    match byte {
                        b'\\' => f.write_str("\\\\")?,
                        b'\n' => f.write_str("\\n")?,
                        b'\r' => f.write_str("\\r")?,
                        b'\t' => f.write_str("\\t")?,
                        c if c as char == quote => write!(f, "\\{quote}")?,
                        0x20..=0x7e => write!(f, "{}", byte as char)?,
                        _ => write!(f, "\\x{byte:02x}")?,
                    }
                }
                write!(f, "{quote}")
            }
        }
    }
}

fn py_float_repr(x: f64) -> String {
    if x.is_nan() {
        "nan".into()
    } else if x.is_infinite() {
        if x > 0.0 { "inf" } else { "-inf" }.into()
    } else if x.fract() == 0.0 && x.abs() < 1e16 {
        format!("{x:.1}")
    } else {
        // Rust's shortest round-trip digits; Python switches to exponents at 1e16.
        let s = format!("{x:?}");
        match s.split_once('e') {
            Some((m, e)) if !e.starts_with('-') => format!("{m}e+{e:0>2}"),
            Some((m, e)) => format!("{m}e-{:0>2}", &e[1..]),
            None => s,
        }
    }
}

macro_rules! list_item_from {
    ($($t:ty => $v:ident $(as $c:ty)?),* $(,)?) => {$(
        impl From<$t> for ListItem {
            fn from(value: $t) -> ListItem {
                ListItem::$v(value $(as $c)?)
            }
        }
    )*};
}

list_item_from!(i64 => Int, i32 => Int as i64, u32 => Int as i64, f64 => Float, bool => Bool,
    String => Str, Vec<u8> => Bytes);

/// `"text".into()` is a `Str`.
///
/// ```
/// let item: multiproc::shared_memory::ListItem = "hi".into();
/// assert_eq!(item, multiproc::shared_memory::ListItem::Str("hi".into()));
/// ```
impl From<&str> for ListItem {
    fn from(value: &str) -> ListItem {
        ListItem::Str(value.to_string())
    }
}

/// `b"raw".as_slice().into()` is a `Bytes`.
///
/// ```
/// let item: multiproc::shared_memory::ListItem = b"raw".as_slice().into();
/// assert_eq!(item, multiproc::shared_memory::ListItem::Bytes(b"raw".to_vec()));
/// ```
impl From<&[u8]> for ListItem {
    fn from(value: &[u8]) -> ListItem {
        ListItem::Bytes(value.to_vec())
    }
}

/// `Some(v).into()` is `v`, `None.into()` is Python's `None`.
///
/// ```
/// use multiproc::shared_memory::ListItem;
/// assert_eq!(ListItem::from(Some(1i64)), ListItem::Int(1));
/// assert_eq!(ListItem::from(None::<i64>), ListItem::None);
/// ```
impl<T: Into<ListItem>> From<Option<T>> for ListItem {
    fn from(value: Option<T>) -> ListItem {
        value.map_or(ListItem::None, Into::into)
    }
}

const ALIGN: usize = 8;
const FMT_INT: &str = "q";
const FMT_FLOAT: &str = "d";
const FMT_BOOL: &str = "xxxxxxx?";
const FMT_NONE: &str = "xxxxxx?x";

/// CPython's back-transform codes.
const CODE_PLAIN: u8 = 0;
const CODE_STR: u8 = 1;
const CODE_BYTES: u8 = 2;
const CODE_NONE: u8 = 3;

/// A fixed-length list of [`ListItem`]s in a shared memory block, with CPython's
/// `ShareableList` layout byte for byte, so either side can create and the other attach.
///
/// The layout (native byte order; offsets in bytes): the item count `N` (`i64`); `N + 1`
/// `i64` offsets of the items from the start of the data area; the data area (8 bytes for
/// a number, `bool` or `None`; for `str`/`bytes` the encoded length rounded up to the next
/// multiple of 8, always leaving at least one NUL); `N` struct formats of 8 bytes each
/// (`q`, `d`, `xxxxxxx?`, `xxxxxx?x`, `16s`, …); `N` back-transform codes (0 plain, 1
/// `str`, 2 `bytes`, 3 `None`).
///
/// One deliberate difference: CPython sizes a `str` slot by its number of *characters*
/// and so truncates non-ASCII text that needs more bytes; this module sizes it by its
/// UTF-8 length. The layout is the same and CPython reads such lists correctly.
///
/// Reads and writes copy: [`get`](Self::get) returns an owned [`ListItem`] and
/// [`set`](Self::set) copies the new bytes in, so no reference into the block ever
/// escapes, and another process rewriting an item meanwhile can make a read fail or see
/// a mix of old and new bytes, never unsound.
///
/// As with CPython, an item can be replaced by any other type, but a `str`/`bytes` value
/// must fit the slot allocated when the list was made, and the length is fixed.
///
/// ```
/// use multiproc::shared_memory::{ListItem, ShareableList};
///
/// let mut sl = ShareableList::create(&[1.into(), 2.5.into(), "howdy".into(), ListItem::None])?;
/// assert_eq!(sl.len(), 4);
/// assert_eq!(sl.get(2)?, ListItem::Str("howdy".into()));
/// sl.set(0, "text!!".into())?; // replaces an int with a str of at most 8 bytes
/// assert!(sl.set(2, "far too long for this slot".into()).is_err());
/// assert_eq!(sl.format()?, "8sd8sxxxxxx?x");
///
/// let other = ShareableList::attach(sl.name())?; // as another process would
/// assert_eq!(other.to_vec()?, sl.to_vec()?);
/// # Ok::<(), multiproc::Error>(())
/// ```
pub struct ShareableList {
    shm: SharedMemory,
    len: usize,
    /// Offsets of the items from the start of the data area, `len + 1` of them.
    offsets: Vec<usize>,
}

impl ShareableList {
    /// Creates a list holding `items` in a new block with a generated name; the list owns
    /// the block (unlinked when dropped). Python: `ShareableList(items)`.
    ///
    /// ```
    /// use multiproc::shared_memory::ShareableList;
    /// let sl = ShareableList::create(&[1.into(), true.into(), b"raw".as_slice().into()])?;
    /// assert_eq!(sl.len(), 3);
    /// assert!(ShareableList::create(&[])?.is_empty());
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn create(items: &[ListItem]) -> Result<ShareableList> {
        ShareableList::create_with(SharedMemory::builder(), items)
    }

    /// Creates a list with the block options of `builder` (name, keep); its size is
    /// computed from `items`. Python: `ShareableList(items, name=name)`.
    ///
    /// ```
    /// use multiproc::shared_memory::{ShareableList, SharedMemory};
    /// let name = format!("sl_create_with_doc_{}", std::process::id());
    /// let sl = ShareableList::create_with(SharedMemory::builder().name(&name), &[7.into()])?;
    /// assert_eq!(sl.name(), name);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn create_with(builder: SharedMemoryBuilder, items: &[ListItem]) -> Result<ShareableList> {
        let n = items.len();
        let mut formats = Vec::with_capacity(n);
        let mut offsets = Vec::with_capacity(n + 1);
        offsets.push(0usize);
        let too_big = || Error::InvalidArgument("the ShareableList is too large".into());
        for (i, item) in items.iter().enumerate() {
            let (format, alloc) = match item {
                ListItem::Str(s) => string_slot(s.len()),
                ListItem::Bytes(b) => string_slot(b.len()),
                other => (fixed_format(other).to_string(), ALIGN),
            };
            if format.len() > 8 {
                return Err(Error::InvalidArgument(format!(
                    "item {i}: a {} of {alloc} bytes needs the format {format:?}, longer than \
                     the 8 bytes CPython's ShareableList allows",
                    item.type_name()
                )));
            }
            let last = offsets[offsets.len() - 1];
            offsets.push(last.checked_add(alloc).ok_or_else(too_big)?);
            formats.push(format);
        }
        let data_start = (n + 2).checked_mul(8).ok_or_else(too_big)?;
        let size = data_start
            .checked_add(offsets[n])
            .and_then(|s| s.checked_add(n.checked_mul(9)?))
            .ok_or_else(too_big)?;
        let shm = builder.size(size).create()?;
        let mut list = ShareableList { shm, len: n, offsets };
        let mut header = Vec::with_capacity(data_start);
        header.extend_from_slice(&(n as i64).to_ne_bytes());
        for off in &list.offsets {
            header.extend_from_slice(&(*off as i64).to_ne_bytes());
        }
        list.shm.write_at(0, &header)?;
        for (i, (item, format)) in items.iter().zip(&formats).enumerate() {
            list.write(i, item, format)?;
        }
        Ok(list)
    }

    /// Attaches to the list in block `name` (made by this library or by CPython). The
    /// handle never unlinks the block. Python: `ShareableList(name=name)`.
    ///
    /// ```
    /// use multiproc::shared_memory::{ListItem, ShareableList, SharedMemory};
    /// let sl = ShareableList::create(&["a".into(), "b".into()])?;
    /// let other = ShareableList::attach(sl.name())?;
    /// assert_eq!(other.get(1)?, ListItem::Str("b".into()));
    /// // A block that does not hold a list is an error, not garbage.
    /// let junk = SharedMemory::create(4)?;
    /// assert!(ShareableList::attach(junk.name()).is_err());
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn attach(name: &str) -> Result<ShareableList> {
        ShareableList::from_shared_memory(SharedMemory::attach(name)?)
    }

    /// Reads the list held by `shm`, which it takes over (an owner handle stays the
    /// owner).
    ///
    /// ```
    /// use multiproc::shared_memory::{ShareableList, SharedMemory};
    /// let sl = ShareableList::create(&[1.into()])?;
    /// let again = ShareableList::from_shared_memory(SharedMemory::attach(sl.name())?)?;
    /// assert_eq!(again.len(), 1);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn from_shared_memory(shm: SharedMemory) -> Result<ShareableList> {
        let not_a_list = |why: String| {
            Error::InvalidArgument(format!(
                "shared memory block {:?} does not hold a ShareableList: {why}",
                shm.name()
            ))
        };
        let size = shm.size();
        let n = read_i64(&shm, 0).ok_or_else(|| not_a_list(format!("{size} bytes")))?;
        let n = usize::try_from(n).map_err(|_| not_a_list(format!("length {n}")))?;
        let data_start = n
            .checked_add(2)
            .and_then(|k| k.checked_mul(8))
            .filter(|&d| d <= size)
            .ok_or_else(|| not_a_list(format!("length {n} in a block of {size} bytes")))?;
        let mut offsets = Vec::with_capacity(n + 1);
        for i in 0..=n {
            let off = read_i64(&shm, 8 + 8 * i).unwrap_or(-1);
            let off = usize::try_from(off)
                .ok()
                .filter(|&o| offsets.last().is_none_or(|&prev| o >= prev))
                .ok_or_else(|| not_a_list(format!("item offset {i} is {off}")))?;
            offsets.push(off);
        }
        let fits = data_start
            .checked_add(offsets[n])
            .and_then(|s| s.checked_add(n.checked_mul(9)?))
            .is_some_and(|s| s <= size);
        if !fits {
            return Err(not_a_list(format!("{n} items need more than {size} bytes")));
        }
        Ok(ShareableList { shm, len: n, offsets })
    }

    /// The name of the block (Python's `sl.shm.name`).
    ///
    /// ```
    /// let sl = multiproc::shared_memory::ShareableList::create(&[])?;
    /// assert!(sl.name().starts_with("psm_"));
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn name(&self) -> &str {
        self.shm.name()
    }

    /// The block (Python's `sl.shm`).
    ///
    /// ```
    /// let sl = multiproc::shared_memory::ShareableList::create(&[1.into()])?;
    /// assert_eq!(sl.shm().size(), 8 + 16 + 8 + 9);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn shm(&self) -> &SharedMemory {
        &self.shm
    }

    /// Gives back the block.
    ///
    /// ```
    /// let sl = multiproc::shared_memory::ShareableList::create(&[1.into()])?;
    /// let shm = sl.into_shared_memory();
    /// assert!(shm.is_owner());
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn into_shared_memory(self) -> SharedMemory {
        self.shm
    }

    /// Ends this handle, as [`SharedMemory::close`]: the creator also unlinks the block.
    ///
    /// ```
    /// let sl = multiproc::shared_memory::ShareableList::create(&[1.into()])?;
    /// sl.close()?;
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn close(self) -> Result<()> {
        self.shm.close()
    }

    /// The number of items (fixed when the list was made).
    ///
    /// ```
    /// let sl = multiproc::shared_memory::ShareableList::create(&[1.into(), 2.into()])?;
    /// assert_eq!(sl.len(), 2);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the list has no items.
    ///
    /// ```
    /// let sl = multiproc::shared_memory::ShareableList::create(&[])?;
    /// assert!(sl.is_empty());
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The item at `index`. Errors: index out of range, or bytes that do not form an item
    /// (a foreign writer), or a `str` that is not UTF-8.
    ///
    /// ```
    /// use multiproc::shared_memory::{ListItem, ShareableList};
    /// let sl = ShareableList::create(&[(-5).into(), 0.5.into(), false.into()])?;
    /// assert_eq!(sl.get(0)?, ListItem::Int(-5));
    /// assert_eq!(sl.get(1)?, ListItem::Float(0.5));
    /// assert_eq!(sl.get(2)?, ListItem::Bool(false));
    /// assert!(sl.get(3).is_err());
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn get(&self, index: usize) -> Result<ListItem> {
        self.check_index(index)?;
        let format = self.format_at(index)?;
        let code = self.code_at(index)?;
        let start = self.data_start() + self.offsets[index];
        let bad = |why: &str| {
            Error::InvalidArgument(format!(
                "item {index} of ShareableList {:?} ({format:?}, code {code}): {why}",
                self.name()
            ))
        };
        let (kind, at, len) = parse_format(&format).ok_or_else(|| bad("unknown format"))?;
        let mut raw = vec![0u8; len.min(self.shm.size())];
        start
            .checked_add(at)
            .filter(|_| raw.len() == len)
            .and_then(|s| self.shm.read_at(s, &mut raw).ok())
            .ok_or_else(|| bad("outside the block"))?;
        let raw = raw.as_slice();
        let plain = match kind {
            Kind::Int => {
                ListItem::Int(i64::from_ne_bytes(raw.try_into().map_err(|_| bad("size"))?))
            }
            Kind::Float => {
                ListItem::Float(f64::from_ne_bytes(raw.try_into().map_err(|_| bad("size"))?))
            }
            Kind::Bool => ListItem::Bool(raw[0] != 0),
            Kind::Bytes => ListItem::Bytes(raw.to_vec()),
        };
        Ok(match (code, plain) {
            (CODE_PLAIN, item) => item,
            (CODE_STR, ListItem::Bytes(b)) => {
                let text = std::str::from_utf8(trim_nul(&b)).map_err(|_| bad("not UTF-8"))?;
                ListItem::Str(text.to_string())
            }
            (CODE_BYTES, ListItem::Bytes(b)) => ListItem::Bytes(trim_nul(&b).to_vec()),
            (CODE_NONE, _) => ListItem::None,
            _ => return Err(bad("format and code do not agree")),
        })
    }

    /// Replaces the item at `index` (Python's `sl[index] = value`). Any type may replace
    /// any other, but a `str`/`bytes` may not exceed the slot allocated when the list was
    /// made (CPython's `ValueError: bytes/str item exceeds available storage`).
    ///
    /// ```
    /// use multiproc::shared_memory::{ListItem, ShareableList};
    /// let mut sl = ShareableList::create(&["abc".into(), 1.into()])?;
    /// sl.set(0, 2.5.into())?; // a float where a str was
    /// sl.set(1, b"8 bytes!".as_slice().into())?; // bytes where an int was: 8 bytes fit
    /// assert_eq!(sl.to_vec()?, [ListItem::Float(2.5), ListItem::Bytes(b"8 bytes!".to_vec())]);
    /// // "abc" got a slot of 8 bytes (the length rounded up, plus room for a NUL):
    /// assert!(sl.set(0, "nine char".into()).is_err());
    /// assert!(sl.set(5, ListItem::None).is_err()); // out of range
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn set(&mut self, index: usize, item: ListItem) -> Result<()> {
        self.check_index(index)?;
        let alloc = self.offsets[index + 1] - self.offsets[index];
        let format = match &item {
            ListItem::Str(s) => self.string_format(index, s.len(), alloc)?,
            ListItem::Bytes(b) => self.string_format(index, b.len(), alloc)?,
            other => {
                if alloc < 8 {
                    return Err(Error::InvalidArgument(format!(
                        "item {index} has a slot of {alloc} bytes, too small for a {}",
                        other.type_name()
                    )));
                }
                fixed_format(other).to_string()
            }
        };
        self.write(index, &item, &format)
    }

    /// How many items are equal to `item` under Python's `==` ([`ListItem::py_eq`]).
    ///
    /// ```
    /// use multiproc::shared_memory::ShareableList;
    /// let sl = ShareableList::create(&[1.into(), 1.0.into(), true.into(), "1".into()])?;
    /// assert_eq!(sl.count(&1.into())?, 3); // as Python: 1 == 1.0 == True
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn count(&self, item: &ListItem) -> Result<usize> {
        let mut n = 0;
        for i in 0..self.len {
            n += usize::from(self.get(i)?.py_eq(item));
        }
        Ok(n)
    }

    /// The first index of an item equal to `item` (Python's `==`), or `None` (where Python
    /// raises `ValueError`).
    ///
    /// ```
    /// use multiproc::shared_memory::ShareableList;
    /// let sl = ShareableList::create(&["a".into(), "b".into()])?;
    /// assert_eq!(sl.index(&"b".into())?, Some(1));
    /// assert_eq!(sl.index(&"c".into())?, None);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn index(&self, item: &ListItem) -> Result<Option<usize>> {
        for i in 0..self.len {
            if self.get(i)?.py_eq(item) {
                return Ok(Some(i));
            }
        }
        Ok(None)
    }

    /// The struct formats of all items, joined (Python's `sl.format`).
    ///
    /// ```
    /// use multiproc::shared_memory::{ListItem, ShareableList};
    /// let sl = ShareableList::create(&[1.into(), 2.0.into(), true.into(), ListItem::None, "hi".into()])?;
    /// assert_eq!(sl.format()?, "qdxxxxxxx?xxxxxx?x8s");
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn format(&self) -> Result<String> {
        let mut all = String::new();
        for i in 0..self.len {
            all.push_str(&self.format_at(i)?);
        }
        Ok(all)
    }

    /// All items (Python's `list(sl)`).
    ///
    /// ```
    /// use multiproc::shared_memory::{ListItem, ShareableList};
    /// let items = vec![ListItem::Int(1), ListItem::Str("x".into())];
    /// assert_eq!(ShareableList::create(&items)?.to_vec()?, items);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn to_vec(&self) -> Result<Vec<ListItem>> {
        (0..self.len).map(|i| self.get(i)).collect()
    }

    fn check_index(&self, index: usize) -> Result<()> {
        if index < self.len {
            Ok(())
        } else {
            Err(Error::InvalidArgument(format!(
                "index {index} out of range for a ShareableList of {} items",
                self.len
            )))
        }
    }

    fn data_start(&self) -> usize {
        (self.len + 2) * 8
    }

    fn formats_start(&self) -> usize {
        self.data_start() + self.offsets[self.len]
    }

    /// The format stored for item `index` (checked to be in range and ASCII).
    fn format_at(&self, index: usize) -> Result<String> {
        let at = self.formats_start() + 8 * index;
        let mut raw = [0u8; 8];
        self.shm.read_at(at, &mut raw)?;
        let raw = trim_nul(&raw);
        match std::str::from_utf8(raw) {
            Ok(s) if s.is_ascii() => Ok(s.to_string()),
            _ => Err(Error::InvalidArgument(format!(
                "item {index} of ShareableList {:?} has a malformed format {raw:?}",
                self.name()
            ))),
        }
    }

    fn code_at(&self, index: usize) -> Result<u8> {
        self.shm.read_volatile::<u8>(self.formats_start() + 8 * self.len + index)
    }

    /// The format for a `str`/`bytes` of `len` bytes in slot `index`, as CPython chooses
    /// it: the slot's current `Ns` format, or `{alloc}s`.
    fn string_format(&self, index: usize, len: usize, alloc: usize) -> Result<String> {
        if len > alloc {
            return Err(Error::InvalidArgument(format!(
                "bytes/str item exceeds available storage: {len} bytes into item {index}, \
                 whose slot holds {alloc}"
            )));
        }
        let current = self.format_at(index)?;
        if !current.ends_with('s') {
            return Ok(format!("{alloc}s"));
        }
        // CPython keeps a slot's `Ns` format; it holds N bytes.
        match parse_format(&current) {
            Some((Kind::Bytes, 0, n)) if len > n => Err(Error::InvalidArgument(format!(
                "bytes/str item exceeds available storage: {len} bytes into item {index}, \
                 whose format {current:?} holds {n}"
            ))),
            Some((Kind::Bytes, 0, _)) => Ok(current),
            _ => Err(Error::InvalidArgument(format!(
                "item {index} has the malformed format {current:?}"
            ))),
        }
    }

    /// Writes item `index` with `format` (already checked to fit): format, code, value.
    fn write(&mut self, index: usize, item: &ListItem, format: &str) -> Result<()> {
        let (kind, at, len) = parse_format(format)
            .filter(|_| format.len() <= 8)
            .ok_or_else(|| Error::InvalidArgument(format!("bad item format {format:?}")))?;
        let value_at = self.data_start() + self.offsets[index];
        let format_at = self.formats_start() + 8 * index;
        let code_at = self.formats_start() + 8 * self.len + index;
        let code = match item {
            ListItem::Str(_) => CODE_STR,
            ListItem::Bytes(_) => CODE_BYTES,
            ListItem::None => CODE_NONE,
            _ => CODE_PLAIN,
        };
        // The whole struct (pads included) is written, as struct.pack_into does.
        let total = format_size(format).unwrap_or(at + len);
        let does_not_fit =
            || Error::InvalidArgument(format!("item {index} does not fit in the block"));
        if at.checked_add(len).is_none_or(|end| end > total)
            || value_at.checked_add(total).is_none_or(|end| end > self.shm.size())
        {
            return Err(does_not_fit());
        }
        let mut region = vec![0u8; total];
        let value = &mut region[at..at + len];
        match (kind, item) {
            (Kind::Int, ListItem::Int(i)) => value.copy_from_slice(&i.to_ne_bytes()),
            (Kind::Float, ListItem::Float(f)) => value.copy_from_slice(&f.to_ne_bytes()),
            (Kind::Bool, ListItem::Bool(b)) => value[0] = u8::from(*b),
            (Kind::Bool, ListItem::None) => value[0] = 0,
            (Kind::Bytes, ListItem::Str(s)) => value[..s.len()].copy_from_slice(s.as_bytes()),
            (Kind::Bytes, ListItem::Bytes(b)) => value[..b.len()].copy_from_slice(b),
            _ => {
                return Err(Error::InvalidArgument(format!(
                    "a {} cannot be stored with format {format:?}",
                    item.type_name()
                )))
            }
        }
        let mut fmt = [0u8; 8];
        fmt[..format.len()].copy_from_slice(format.as_bytes());
        self.shm.write_at(value_at, &region)?;
        self.shm.write_at(format_at, &fmt)?;
        self.shm.write_at(code_at, &[code])?;
        Ok(())
    }
}

impl fmt::Debug for ShareableList {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ShareableList").field("name", &self.name()).field("len", &self.len).finish()
    }
}

/// Serialized by name, like a [`SharedMemory`]; deserializing attaches (never unlinks).
///
/// ```
/// use multiproc::shared_memory::{ListItem, ShareableList};
///
/// fn child(mut sl: ShareableList) {
///     sl.set(0, 42.into()).unwrap();
/// }
///
/// let sl = ShareableList::create(&[0.into()])?;
/// let p = multiproc::Process::new(child, ShareableList::attach(sl.name())?);
/// p.start()?;
/// p.join(None)?;
/// assert_eq!(sl.get(0)?, ListItem::Int(42));
/// # Ok::<(), multiproc::Error>(())
/// ```
impl Serialize for ShareableList {
    fn serialize<S: Serializer>(&self, serializer: S) -> std::result::Result<S::Ok, S::Error> {
        self.shm.serialize(serializer)
    }
}

/// Attaches by name; see [`SharedMemory`]'s `Deserialize`.
///
/// ```
/// use multiproc::shared_memory::ShareableList;
/// use multiproc::Codec;
/// let sl = ShareableList::create(&["x".into()])?;
/// let mut bytes = Vec::new();
/// Codec::Postcard.encode_into(&sl, &mut bytes)?;
/// let back: ShareableList = Codec::Postcard.decode(&bytes)?;
/// assert_eq!(back.to_vec()?, sl.to_vec()?);
/// # Ok::<(), multiproc::Error>(())
/// ```
impl<'de> Deserialize<'de> for ShareableList {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> std::result::Result<Self, D::Error> {
        let shm = SharedMemory::deserialize(deserializer)?;
        ShareableList::from_shared_memory(shm).map_err(crate::codec::de_error)
    }
}

/// The slot of a `str`/`bytes` of `len` bytes: CPython's `8 * (len // 8 + 1)`.
fn string_slot(len: usize) -> (String, usize) {
    let alloc = ALIGN.saturating_mul(len / ALIGN + 1);
    (format!("{alloc}s"), alloc)
}

fn fixed_format(item: &ListItem) -> &'static str {
    match item {
        ListItem::Int(_) => FMT_INT,
        ListItem::Float(_) => FMT_FLOAT,
        ListItem::Bool(_) => FMT_BOOL,
        _ => FMT_NONE,
    }
}

fn trim_nul(b: &[u8]) -> &[u8] {
    let end = b.iter().rposition(|&c| c != 0).map_or(0, |p| p + 1);
    &b[..end]
}

/// The `i64` at byte `at` of `shm` (a copy), or `None` past its end.
fn read_i64(shm: &SharedMemory, at: usize) -> Option<i64> {
    let mut bytes = [0u8; 8];
    shm.read_at(at, &mut bytes).ok()?;
    Some(i64::from_ne_bytes(bytes))
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Kind {
    Int,
    Float,
    Bool,
    Bytes,
}

/// Parses a one-value struct format in native mode (`q`, `d`, `?`, `Ns`, with `x`
/// padding, counts allowed): the value's kind, offset and size.
fn parse_format(format: &str) -> Option<(Kind, usize, usize)> {
    let mut value = None;
    walk_format(format, |kind, at, len| {
        if value.is_some() {
            return false;
        }
        value = Some((kind, at, len));
        true
    })?;
    value
}

/// The total size of a struct format in native mode.
fn format_size(format: &str) -> Option<usize> {
    walk_format(format, |_, _, _| true)
}

/// Walks the tokens of `format`, calling `each(kind, offset, size)` for every value;
/// returns the total size, or `None` for a format outside the subset above.
fn walk_format(format: &str, mut each: impl FnMut(Kind, usize, usize) -> bool) -> Option<usize> {
    let bytes = format.as_bytes();
    let (mut i, mut pos) = (0usize, 0usize);
    while i < bytes.len() {
        let digits = bytes[i..].iter().take_while(|b| b.is_ascii_digit()).count();
        let count: Option<usize> =
            if digits > 0 { Some(format[i..i + digits].parse().ok()?) } else { None };
        i += digits;
        let c = *bytes.get(i)?;
        i += 1;
        match c {
            b'x' => pos = pos.checked_add(count.unwrap_or(1))?,
            b's' => {
                let len = count.unwrap_or(1);
                if !each(Kind::Bytes, pos, len) {
                    return None;
                }
                pos = pos.checked_add(len)?;
            }
            b'q' | b'd' | b'?' => {
                let (kind, size) = match c {
                    b'q' => (Kind::Int, 8),
                    b'd' => (Kind::Float, 8),
                    _ => (Kind::Bool, 1),
                };
                pos = pos.checked_next_multiple_of(size)?;
                for _ in 0..count.unwrap_or(1) {
                    if !each(kind, pos, size) {
                        return None;
                    }
                    pos = pos.checked_add(size)?;
                }
            }
            _ => return None,
        }
    }
    Some(pos)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_names_parse() {
        let g = parse_generated("psm_mp123_456_0a1b2c3d").unwrap();
        assert!(!g.kept && g.pid == 123 && g.start == 456);
        assert!(parse_generated("psm_mk1_0_ffffffff").unwrap().kept);
        let q = parse_generated("psm_mq7_8_9_10_0a1b2c3d").unwrap();
        assert!(!q.kept && q.pid == 7 && q.start == 8 && q.queue == Some((9, 10)));
        for bad in [
            "psm_0a1b2c3d",
            "psm_mp123_456_0A1B2C3D",
            "psm_mp123_456_0a1b2c3",
            "psm_mp0_456_0a1b2c3d",
            "psm_mp-1_456_0a1b2c3d",
            "psm_mp123_456_0a1b2c3d_x",
            "psm_mp_456_0a1b2c3d",
            "psm_mx123_456_0a1b2c3d",
            "sem.psm_mp123_456_0a1b2c3d",
            "psm_mq123_456_0a1b2c3d",
            "psm_mq123_456_7_0a1b2c3d",
            "psm_mp123_456_7_8_0a1b2c3d",
            "psm_mq123_456_7_8_9_0a1b2c3d",
        ] {
            assert!(parse_generated(bad).is_none(), "{bad}");
        }
    }

    #[test]
    fn formats_parse() {
        assert_eq!(parse_format("q"), Some((Kind::Int, 0, 8)));
        assert_eq!(parse_format("d"), Some((Kind::Float, 0, 8)));
        assert_eq!(parse_format("xxxxxxx?"), Some((Kind::Bool, 7, 1)));
        assert_eq!(parse_format("xxxxxx?x"), Some((Kind::Bool, 6, 1)));
        assert_eq!(parse_format("16s"), Some((Kind::Bytes, 0, 16)));
        assert_eq!(parse_format("xq"), Some((Kind::Int, 8, 8)));
        assert_eq!(format_size("xxxxxx?x"), Some(8));
        assert_eq!(parse_format("qq"), None);
        assert_eq!(parse_format("2q"), None);
        assert_eq!(parse_format("z"), None);
        assert_eq!(parse_format(""), None);
        assert_eq!(parse_format("99999999999999999999999s"), None);
    }

    #[test]
    fn names_are_checked() {
        assert_eq!(validate_name("/abc").unwrap(), "abc");
        assert_eq!(validate_name("//abc").unwrap(), "abc");
        for bad in ["", "/", ".", "..", "a/b", "a\0b"] {
            assert!(validate_name(bad).is_err(), "{bad:?}");
        }
        assert!(validate_name(&"a".repeat(256)).is_err());
        assert!(validate_name(&"a".repeat(255)).is_ok());
    }

    #[test]
    fn float_repr_is_pythons() {
        assert_eq!(py_float_repr(1.0), "1.0");
        assert_eq!(py_float_repr(-0.0), "-0.0");
        assert_eq!(py_float_repr(2.5), "2.5");
        assert_eq!(py_float_repr(1e16), "1e+16");
        assert_eq!(py_float_repr(1.5e-7), "1.5e-07");
        assert_eq!(py_float_repr(f64::INFINITY), "inf");
    }

    #[test]
    fn this_process_is_alive_and_has_a_start_time() {
        let me = current_pid();
        let stat = proc_stat(me).unwrap().unwrap();
        assert!(alive(me, stat.start));
        assert!(!alive(me, stat.start + 1), "a different start time is another process");
    }
}
