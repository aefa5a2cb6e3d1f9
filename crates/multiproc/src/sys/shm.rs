//! Shared memory: POSIX `shm_open` segments, anonymous `memfd` segments, and mappings.
//!
//! A [`Mapping`] is a `MAP_SHARED` view of a descriptor. Other handles in this process
//! and other processes may write the same bytes at any moment, so its safe access paths
//! never hand out a plain reference to the mapped bytes:
//! - atomics (`&AtomicU32`, `&AtomicU64`, any [`SharedAtomic`]) at aligned offsets, for
//!   the words that processes synchronise on (atomics are made for shared mutation);
//! - copies in and out (`read`, `write`, `copy_out`, `copy_in`, `extend_vec`), volatile
//!   element reads and writes (`read_volatile`, `write_volatile`) and fills (`fill`) of
//!   plain-old-data values, through raw pointers only;
//! - whole slices (`as_slice`, `as_mut_slice`) only through `unsafe fn`s whose callers
//!   promise that nothing writes (or, for the mutable slice, touches) the bytes while the
//!   slice lives.
//!
//! A block that a peer truncates (`ftruncate` to fewer bytes) stays mapped at its old
//! length here, but touching a page past the new end raises `SIGBUS`: that is not a
//! memory-safety hole (the process dies), but it is a way for a peer to kill us.

use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::ptr::NonNull;
use std::sync::atomic::{
    AtomicI16, AtomicI32, AtomicI64, AtomicI8, AtomicIsize, AtomicU16, AtomicU32, AtomicU64,
    AtomicU8, AtomicUsize,
};

use rustix::fs::Mode;
use rustix::mm::{MapFlags, ProtFlags};

mod sealed {
    pub trait Sealed {}
}

/// The atomic integer types that a block of shared memory can be viewed through
/// (`AtomicU8` to `AtomicU64`, `AtomicI8` to `AtomicI64`, `AtomicUsize`, `AtomicIsize`).
/// Sealed: every bit pattern is a valid value of each, and each has the size and
/// alignment of its integer.
///
/// ```
/// use std::sync::atomic::{AtomicU64, Ordering};
/// let shm = multiproc::shared_memory::SharedMemory::create(16)?;
/// shm.atomic::<AtomicU64>(1)?.fetch_add(5, Ordering::SeqCst);
/// assert_eq!(shm.read_volatile::<u64>(1)?, 5);
/// # Ok::<(), multiproc::Error>(())
/// ```
pub trait SharedAtomic: sealed::Sealed + Sync + 'static {}

macro_rules! shared_atomic {
    ($($ty:ty),*) => {$(
        impl sealed::Sealed for $ty {}
        impl SharedAtomic for $ty {}
    )*};
}
shared_atomic!(
    AtomicU8,
    AtomicU16,
    AtomicU32,
    AtomicU64,
    AtomicUsize,
    AtomicI8,
    AtomicI16,
    AtomicI32,
    AtomicI64,
    AtomicIsize
);

/// A shared, read-write mapping of a whole descriptor.
pub(crate) struct Mapping {
    ptr: NonNull<u8>,
    len: usize,
}

// SAFETY: the mapping is plain memory shared with other processes; every safe access
// path is either atomic or a raw copy through a pointer (never a reference to the bytes),
// and the slice views are `unsafe fn`s whose callers exclude every other writer, this
// process's threads included; so sending or sharing the handle between threads adds
// nothing that processes don't already do.
unsafe impl Send for Mapping {}
// SAFETY: as above.
unsafe impl Sync for Mapping {}

impl Mapping {
    /// Maps `len` bytes of `fd` (which must be at least that long) shared and read-write.
    pub(crate) fn map(fd: BorrowedFd<'_>, len: usize) -> io::Result<Mapping> {
        if len == 0 {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, "cannot map 0 bytes"));
        }
        // SAFETY: a fresh mapping chosen by the kernel (null hint) overlaps no existing
        // Rust object; `fd` is a valid descriptor for the duration of the call.
        let ptr = unsafe {
            rustix::mm::mmap(
                std::ptr::null_mut(),
                len,
                ProtFlags::READ | ProtFlags::WRITE,
                MapFlags::SHARED,
                fd,
                0,
            )?
        };
        let ptr =
            NonNull::new(ptr.cast::<u8>()).ok_or_else(|| io::Error::other("mmap gave null"))?;
        Ok(Mapping { ptr, len })
    }

    /// The mapped length in bytes.
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// The start of the mapping (for identity checks and alignment only).
    pub(crate) fn addr(&self) -> usize {
        self.ptr.as_ptr() as usize
    }

    fn check(&self, offset: usize, size: usize, align: usize) {
        assert!(
            self.fits(offset, size),
            "shared memory access at {offset}+{size} outside a mapping of {} bytes",
            self.len
        );
        assert!((self.addr() + offset) % align == 0, "misaligned shared memory access at {offset}");
    }

    /// Whether `size` bytes from `offset` lie inside the mapping.
    pub(crate) fn fits(&self, offset: usize, size: usize) -> bool {
        offset.checked_add(size).is_some_and(|end| end <= self.len)
    }

    /// The atomic `A` at `offset` (aligned for `A`, in bounds: checked).
    pub(crate) fn atomic<A: SharedAtomic>(&self, offset: usize) -> &A {
        self.check(offset, size_of::<A>(), align_of::<A>());
        // SAFETY: in bounds and aligned (checked); the memory lives as long as `&self`;
        // every `SharedAtomic` is an atomic integer, which accepts any bit pattern and is
        // designed for shared mutation.
        unsafe { &*self.ptr.as_ptr().add(offset).cast::<A>() }
    }

    /// A volatile read of the `T` at `offset` (aligned for `T`, in bounds: checked).
    pub(crate) fn read_volatile<T: bytemuck::Pod>(&self, offset: usize) -> T {
        self.check(offset, size_of::<T>(), align_of::<T>());
        // SAFETY: in bounds and aligned (checked); `T: Pod` accepts any bit pattern; no
        // reference to the bytes is made.
        unsafe { self.ptr.as_ptr().add(offset).cast::<T>().read_volatile() }
    }

    /// A volatile write of `value` at `offset` (aligned for `T`, in bounds: checked).
    pub(crate) fn write_volatile<T: bytemuck::Pod>(&self, offset: usize, value: T) {
        self.check(offset, size_of::<T>(), align_of::<T>());
        // SAFETY: in bounds and aligned (checked); the safe paths make no reference to
        // the bytes, and the unsafe slice views' callers promise that nothing writes
        // while their slices live.
        unsafe { self.ptr.as_ptr().add(offset).cast::<T>().write_volatile(value) }
    }

    /// Writes `value` into the `count` elements of type `T` starting at `offset` (aligned
    /// for `T`, in bounds: checked).
    pub(crate) fn fill<T: bytemuck::Pod>(&self, offset: usize, count: usize, value: T) {
        let bytes = count.saturating_mul(size_of::<T>());
        self.check(offset, bytes, align_of::<T>());
        let start = self.ptr.as_ptr().wrapping_add(offset).cast::<T>();
        for i in 0..count {
            // SAFETY: element `i < count` is in bounds and aligned (checked above); a raw
            // write, no reference to the bytes (see `write_volatile`).
            unsafe { start.add(i).write(value) }
        }
    }

    /// Appends the `len` bytes starting at `offset` to `vec`, copying them straight into
    /// its spare capacity.
    pub(crate) fn extend_vec(&self, offset: usize, len: usize, vec: &mut Vec<u8>) {
        self.check(offset, len, 1);
        vec.reserve(len);
        let old = vec.len();
        // SAFETY: source in bounds (checked); `reserve` made room for `len` more bytes
        // after `old`, a distinct Rust allocation; after the copy those bytes are
        // initialised, so the new length is valid.
        unsafe {
            std::ptr::copy_nonoverlapping(
                self.ptr.as_ptr().add(offset),
                vec.as_mut_ptr().add(old),
                len,
            );
            vec.set_len(old + len);
        }
    }

    /// The 32-bit atomic at `offset` (4-aligned, in bounds: checked).
    pub(crate) fn atomic_u32(&self, offset: usize) -> &AtomicU32 {
        self.check(offset, 4, 4);
        // SAFETY: in bounds and aligned (checked); the memory lives as long as `&self`;
        // `AtomicU32` has no invalid bit patterns and is designed for shared mutation.
        unsafe { &*self.ptr.as_ptr().add(offset).cast::<AtomicU32>() }
    }

    /// The 64-bit atomic at `offset` (8-aligned, in bounds: checked).
    pub(crate) fn atomic_u64(&self, offset: usize) -> &AtomicU64 {
        self.check(offset, 8, 8);
        // SAFETY: as for `atomic_u32`.
        unsafe { &*self.ptr.as_ptr().add(offset).cast::<AtomicU64>() }
    }

    /// Copies a `T` out of the mapping at `offset` (any alignment).
    pub(crate) fn read<T: bytemuck::Pod>(&self, offset: usize) -> T {
        self.check(offset, size_of::<T>(), 1);
        // SAFETY: in bounds (checked); `T: Pod` accepts any bit pattern; unaligned read.
        unsafe { self.ptr.as_ptr().add(offset).cast::<T>().read_unaligned() }
    }

    /// Copies `value` into the mapping at `offset` (any alignment).
    pub(crate) fn write<T: bytemuck::Pod>(&self, offset: usize, value: T) {
        self.check(offset, size_of::<T>(), 1);
        // SAFETY: in bounds (checked); a raw write, no reference to the bytes (see
        // `write_volatile`).
        unsafe { self.ptr.as_ptr().add(offset).cast::<T>().write_unaligned(value) }
    }

    /// Copies `dst.len()` bytes starting at `offset` into `dst`.
    pub(crate) fn copy_out(&self, offset: usize, dst: &mut [u8]) {
        self.check(offset, dst.len(), 1);
        // SAFETY: source in bounds (checked); `dst` is a distinct Rust buffer.
        unsafe { std::ptr::copy(self.ptr.as_ptr().add(offset), dst.as_mut_ptr(), dst.len()) }
    }

    /// Copies `src` into the mapping starting at `offset`.
    pub(crate) fn copy_in(&self, offset: usize, src: &[u8]) {
        self.check(offset, src.len(), 1);
        // SAFETY: destination in bounds (checked); see `write`.
        unsafe { std::ptr::copy(src.as_ptr(), self.ptr.as_ptr().add(offset), src.len()) }
    }

    /// The whole mapping as bytes.
    ///
    /// # Safety
    /// While the slice lives, nothing writes the mapped bytes: not this handle's other
    /// paths, not another mapping of the same segment in this process (on any thread), not
    /// another process; and nobody shrinks the segment below this mapping's length.
    pub(crate) unsafe fn as_slice(&self) -> &[u8] {
        // SAFETY: the mapping is `len` readable bytes that live as long as `&self`; the
        // caller promises they do not change while the slice lives.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.len) }
    }

    /// The whole mapping as mutable bytes.
    ///
    /// # Safety
    /// While the slice lives, nothing else reads or writes the mapped bytes (this process's
    /// other mappings and threads, other processes), and nobody shrinks the segment.
    pub(crate) unsafe fn as_mut_slice(&mut self) -> &mut [u8] {
        // SAFETY: as `as_slice`; the exclusive borrow of `self` excludes this handle's
        // other paths, and the caller promises the rest.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr(), self.len) }
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: `ptr`/`len` describe a mapping made by `map` and not yet unmapped; every
        // borrow of it ended with the borrow of `self`.
        let _ = unsafe { rustix::mm::munmap(self.ptr.as_ptr().cast(), self.len) };
    }
}

impl std::fmt::Debug for Mapping {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mapping")
            .field("addr", &format_args!("{:#x}", self.addr()))
            .field("len", &self.len)
            .finish()
    }
}

/// An anonymous shared segment of `len` bytes (zero-filled), named `name` in
/// `/proc/PID/fd` for debugging only. It disappears when the last descriptor and mapping
/// go, so a killed process leaves nothing behind.
///
/// The segment is sealed against shrinking (`F_SEAL_SHRINK`) before it is returned, so
/// no process that receives it can cut it short under another's mapping (which would kill
/// that process with `SIGBUS` at its next access); see [`is_sealed_against_shrinking`].
pub(crate) fn memfd(name: &str, len: usize) -> io::Result<OwnedFd> {
    use rustix::fs::{MemfdFlags, SealFlags};
    let fd = rustix::fs::memfd_create(name, MemfdFlags::CLOEXEC | MemfdFlags::ALLOW_SEALING)?;
    rustix::fs::ftruncate(&fd, len as u64)?;
    // Sealing the seals too: nobody can take the seal off, or add a write seal that would
    // make this process's mappings read-only in effect.
    rustix::fs::fcntl_add_seals(&fd, SealFlags::SHRINK | SealFlags::SEAL)?;
    Ok(fd)
}

/// An empty anonymous segment that is *not* sealed (its size is the caller's to set with
/// `fd::ftruncate`): what a hostile peer could send, for tests of [`memfd`]'s callers.
#[cfg(test)]
pub(crate) fn memfd_unsealed(name: &str) -> io::Result<OwnedFd> {
    Ok(rustix::fs::memfd_create(name, rustix::fs::MemfdFlags::CLOEXEC)?)
}

/// Whether `fd` is sealed against shrinking, so that a mapping of its current size stays
/// valid whatever other processes do with it: what a received segment must be before it
/// is mapped. False for anything that does not support seals.
pub(crate) fn is_sealed_against_shrinking(fd: BorrowedFd<'_>) -> bool {
    rustix::fs::fcntl_get_seals(fd).is_ok_and(|s| s.contains(rustix::fs::SealFlags::SHRINK))
}

/// The (device, inode) of what `fd` refers to.
pub(crate) fn identity(fd: impl AsFd) -> io::Result<(u64, u64)> {
    let stat = rustix::fs::fstat(fd)?;
    Ok((stat.st_dev, stat.st_ino))
}

/// What the live processes of this user have open or mapped, as (device, inode) pairs,
/// read from `/proc/PID/fd` and `/proc/PID/maps`. Processes whose entries this process
/// may not read (other users', unless it runs as root) are skipped, as are processes that
/// end during the scan.
pub(crate) fn objects_in_use() -> io::Result<std::collections::HashSet<(u64, u64)>> {
    use std::io::BufRead;
    let mut found = std::collections::HashSet::new();
    for entry in std::fs::read_dir("/proc")? {
        let Ok(entry) = entry else { continue };
        let Some(pid) = entry.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        if let Ok(maps) = std::fs::File::open(format!("/proc/{pid}/maps")) {
            for line in std::io::BufReader::new(maps).lines() {
                let Ok(line) = line else { break };
                // "start-end perms offset major:minor inode path"
                let mut fields = line.split_ascii_whitespace().skip(3);
                let (Some(dev), Some(ino)) = (fields.next(), fields.next()) else { continue };
                let Some((major, minor)) = dev.split_once(':') else { continue };
                let (Ok(major), Ok(minor), Ok(ino)) = (
                    u32::from_str_radix(major, 16),
                    u32::from_str_radix(minor, 16),
                    ino.parse::<u64>(),
                ) else {
                    continue;
                };
                if ino != 0 {
                    found.insert((rustix::fs::makedev(major, minor), ino));
                }
            }
        }
        if let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) {
            for fd in fds.flatten() {
                // stat follows the link to the object itself, without opening it.
                if let Ok(stat) = rustix::fs::stat(fd.path()) {
                    found.insert((stat.st_dev, stat.st_ino));
                }
            }
        }
    }
    Ok(found)
}

/// Creates the POSIX segment `/name` (mode 0600) of `len` bytes; fails if it exists.
pub(crate) fn shm_create(name: &str, len: usize) -> io::Result<OwnedFd> {
    let fd = rustix::shm::open(
        shm_path(name).as_str(),
        rustix::shm::OFlags::CREATE | rustix::shm::OFlags::EXCL | rustix::shm::OFlags::RDWR,
        Mode::RUSR | Mode::WUSR,
    )?;
    if let Err(e) = rustix::fs::ftruncate(&fd, len as u64) {
        let _ = rustix::shm::unlink(shm_path(name).as_str());
        return Err(e.into());
    }
    Ok(fd)
}

/// Opens the existing POSIX segment `/name` read-write.
pub(crate) fn shm_open(name: &str) -> io::Result<OwnedFd> {
    Ok(rustix::shm::open(shm_path(name).as_str(), rustix::shm::OFlags::RDWR, Mode::empty())?)
}

/// Removes the name `/name`; mappings and descriptors stay valid.
pub(crate) fn shm_unlink(name: &str) -> io::Result<()> {
    Ok(rustix::shm::unlink(shm_path(name).as_str())?)
}

/// The size of the object behind `fd`.
pub(crate) fn size_of_fd(fd: impl AsFd) -> io::Result<usize> {
    let stat = rustix::fs::fstat(fd)?;
    usize::try_from(stat.st_size).map_err(|_| io::Error::other("negative segment size"))
}

fn shm_path(name: &str) -> String {
    if name.starts_with('/') {
        name.to_string()
    } else {
        format!("/{name}")
    }
}

/// The directory where Linux (glibc, musl, rustix) keeps POSIX shared memory objects:
/// `/name` is the file `SHM_DIR/name`.
pub(crate) const SHM_DIR: &str = "/dev/shm";

/// Whether `/name` still names the object behind `fd` (same device and inode): false when
/// the name was unlinked and perhaps reused for another segment.
pub(crate) fn shm_names(name: &str, fd: impl AsFd) -> io::Result<bool> {
    let on_disk = rustix::fs::stat(format!("{SHM_DIR}{}", shm_path(name)).as_str())?;
    let ours = rustix::fs::fstat(fd)?;
    Ok(on_disk.st_dev == ours.st_dev && on_disk.st_ino == ours.st_ino)
}

/// Allocates the pages behind the first `len` bytes of `fd` now, so that a full
/// `/dev/shm` is an error here rather than a `SIGBUS` at the first write. Does nothing
/// where the file system cannot preallocate.
pub(crate) fn shm_reserve(fd: impl AsFd, len: usize) -> io::Result<()> {
    match rustix::fs::fallocate(fd, rustix::fs::FallocateFlags::empty(), 0, len as u64) {
        Ok(()) | Err(rustix::io::Errno::OPNOTSUPP) | Err(rustix::io::Errno::NOSYS) => Ok(()),
        Err(e) => Err(e.into()),
    }
}
