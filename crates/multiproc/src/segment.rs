//! Anonymous shared memory segments: what each process-shared primitive (a lock, a queue's
//! ring, a shared value, the pool's progress words) lives in.
//!
//! A [`Segment`] is a sealed `memfd` (see `sys::shm`) mapped once per process, tagged in
//! its first word with what it holds, so a handle of one kind cannot be mapped as another.
//! It travels to other processes as a handle (see `reduction`): passed with a child's
//! arguments, shared through the sender otherwise. Nothing is left in `/dev/shm` however
//! the processes end.

use std::fmt;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::atomic::Ordering::{Acquire, Release};
use std::sync::atomic::{AtomicU32, AtomicU64};
use std::sync::Arc;

use crate::error::{Error, Result};
use crate::reduction;
use crate::sys::shm::Mapping;

/// Where the kind tag lives: word 0.
const KIND: usize = 0;

/// A shared segment holding one primitive. Word 0 is its kind tag.
pub(crate) struct Segment {
    fd: OwnedFd,
    map: Mapping,
}

impl Segment {
    /// A new zeroed segment of `len` bytes tagged `kind` (`kind_name` names the memfd).
    pub(crate) fn new(kind_name: &str, kind: u32, len: usize) -> Result<Arc<Segment>> {
        let fd = crate::sys::shm::memfd(&format!("multiproc-{kind_name}"), len)?;
        let map = Mapping::map(fd.as_fd(), len)?;
        map.atomic_u32(KIND).store(kind, Release);
        Ok(Arc::new(Segment { fd, map }))
    }

    /// The 32-bit atomic at byte `offset`.
    pub(crate) fn word(&self, offset: usize) -> &AtomicU32 {
        self.map.atomic_u32(offset)
    }

    /// The 64-bit atomic at byte `offset`.
    pub(crate) fn word64(&self, offset: usize) -> &AtomicU64 {
        self.map.atomic_u64(offset)
    }

    /// The whole mapping.
    pub(crate) fn mapping(&self) -> &Mapping {
        &self.map
    }

    /// The (device, inode) of the segment's memory, the same in every process.
    pub(crate) fn identity(&self) -> Result<(u64, u64)> {
        Ok(crate::sys::shm::identity(self.fd.as_fd())?)
    }

    /// The segment's handle, for a message that carries it to another process.
    pub(crate) fn export(&self, what: &str) -> Result<reduction::Handle> {
        reduction::export_reopenable(self.fd.as_fd(), what)
    }

    /// Maps a received descriptor, checking its size and kind tag.
    pub(crate) fn import(
        handle: reduction::Handle,
        what: &str,
        kind: u32,
        min_len: usize,
    ) -> Result<Arc<Segment>> {
        let fd = reduction::import_reopenable(handle, what)?;
        Segment::map_checked(fd, what, kind, min_len)
    }

    /// The segment's own descriptor, for a transport of descriptors that the crate does not
    /// drive itself (a Python `DupFd`); the receiver maps it with [`Segment::open_fd`].
    pub(crate) fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    /// Maps a descriptor received by other means than a handle (see [`Segment::fd`]),
    /// checking that it is sealed against shrinking, its size and its kind tag.
    pub(crate) fn open_fd(
        fd: OwnedFd,
        what: &str,
        kind: u32,
        min_len: usize,
    ) -> Result<Arc<Segment>> {
        if !crate::sys::shm::is_sealed_against_shrinking(fd.as_fd()) {
            return Err(Error::Codec(format!(
                "{what}: the descriptor is not a sealed shared segment; refused"
            )));
        }
        Segment::map_checked(fd, what, kind, min_len)
    }

    /// Maps `fd`, checking its size and kind tag.
    fn map_checked(fd: OwnedFd, what: &str, kind: u32, min_len: usize) -> Result<Arc<Segment>> {
        let len = crate::sys::shm::size_of_fd(fd.as_fd())?;
        if len < min_len.max(4) {
            return Err(Error::Codec(format!(
                "{what}: shared segment of {len} bytes is too small"
            )));
        }
        let map = Mapping::map(fd.as_fd(), len)?;
        if map.atomic_u32(KIND).load(Acquire) != kind {
            return Err(Error::Codec(format!("{what}: the handle is not a {what}")));
        }
        Ok(Arc::new(Segment { fd, map }))
    }
}

impl fmt::Debug for Segment {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Segment").field("len", &self.map.len()).finish()
    }
}
