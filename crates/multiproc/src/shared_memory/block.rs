//! The block: [`SharedMemory`], one POSIX shared memory object mapped into this process,
//! and [`SharedMemoryBuilder`], which creates one. Its name comes from [`super::naming`];
//! the mapping and the `shm_*` calls are `sys::shm`'s.

use std::fmt;
use std::io;
use std::ops::RangeBounds;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering};

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::current_pid;
use super::io_context;
use super::naming::{create_generated, validate_name};
use super::{Pod, SharedAtomic};
use crate::error::{Error, Result};
use crate::sys::shm::{self as sys_shm, Mapping};

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
/// assert!(!shm.name().starts_with('/')); // as Python's `.name`
/// assert!(shm.is_owner() && !other.is_owner() && !shm.is_kept());
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
/// assert_eq!(shm.size(), 4096);
/// assert!(SharedMemory::builder().create().is_err()); // a size is required
///
/// let name = format!("builder_doc_{}", std::process::id());
/// let named = SharedMemory::builder().size(8).name(format!("/{name}")).create()?;
/// assert_eq!(named.name(), name); // the leading '/' is optional
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
    pub fn new() -> SharedMemoryBuilder {
        SharedMemoryBuilder::default()
    }

    /// The size in bytes; must be positive.
    pub fn size(mut self, size: usize) -> SharedMemoryBuilder {
        self.size = size;
        self
    }

    /// Uses this name instead of a generated one (a leading `/` is optional). The tracker
    /// does not follow blocks with names chosen this way.
    pub fn name(mut self, name: impl Into<String>) -> SharedMemoryBuilder {
        self.name = Some(name.into());
        self
    }

    /// Keeps the block after its creator drops its handle or exits (default: unlinked). A
    /// generated name is then marked kept (`psm_mk…`), so
    /// [`clean_orphans`](super::clean_orphans) leaves the block alone; remove it with
    /// [`SharedMemory::unlink`] from any handle.
    ///
    /// ```
    /// use multiproc::shared_memory::SharedMemory;
    ///
    /// let shm = SharedMemory::builder().size(64).keep(true).create()?;
    /// assert!(shm.name().starts_with("psm_mk"));
    /// assert!(shm.is_kept() && !shm.is_owner());
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
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The size in bytes: the size asked for when created, the object's size when attached
    /// (as CPython's `.size`).
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
    /// p.join()?;
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
    pub fn is_owner(&self) -> bool {
        self.unlink_in == Some(current_pid())
    }

    /// Hands the block over: closes this handle without unlinking, so that another
    /// process (which attaches by name and unlinks when done) decides its end. Its name
    /// still names this process as creator, so if nobody unlinks it after this process
    /// is gone, [`clean_orphans`](super::clean_orphans) removes it.
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
/// p.join()?;
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
