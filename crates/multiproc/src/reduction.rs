//! Handle passing: how file descriptors travel inside serialized values.
//!
//! A value that owns an OS handle (a [`Connection`](crate::Connection), later queues and
//! locks) cannot be reduced to bytes alone. As in CPython's `multiprocessing.reduction`,
//! serializing such a value *exports* its descriptor into a side table and writes only the
//! table index; the table travels beside the bytes (inherited by a spawned child, or as
//! `SCM_RIGHTS` over a Unix socket) and deserializing *imports* the descriptor by index.
//!
//! The table exists only inside [`export_handles`] / [`import_handles`], which the crate
//! calls where a transport for descriptors exists: process arguments. Elsewhere, a value
//! backed by shared memory is *lent* instead (see [`Handle`]), and a value whose handle
//! cannot be reopened by path (a [`Connection`](crate::Connection)'s socket) is a clear
//! error, never a silently dangling descriptor number.

use std::cell::RefCell;
use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd};

use crate::error::{Error, Result};

thread_local! {
    static OUTGOING: RefCell<Option<Vec<OwnedFd>>> = const { RefCell::new(None) };
    static INCOMING: RefCell<Option<Vec<Option<OwnedFd>>>> = const { RefCell::new(None) };
    /// The last export failure, kept because some serde formats drop custom messages.
    static EXPORT_ERROR: RefCell<Option<String>> = const { RefCell::new(None) };
}

/// Takes the message of the last failed [`export_fd`] on this thread, if any.
pub(crate) fn take_export_error() -> Option<String> {
    EXPORT_ERROR.with(|e| e.borrow_mut().take())
}

/// Runs `f` (which serializes something) with an export table, and returns its result with
/// the descriptors it exported, in index order.
pub(crate) fn export_handles<R>(f: impl FnOnce() -> R) -> (R, Vec<OwnedFd>) {
    let previous = OUTGOING.with(|t| t.borrow_mut().replace(Vec::new()));
    let result = f();
    let exported = OUTGOING.with(|t| std::mem::replace(&mut *t.borrow_mut(), previous));
    (result, exported.unwrap_or_default())
}

/// Runs `f` (which deserializes something) with `handles` available for import. Handles
/// that `f` does not import are closed.
pub(crate) fn import_handles<R>(handles: Vec<OwnedFd>, f: impl FnOnce() -> R) -> R {
    let table = handles.into_iter().map(Some).collect();
    let previous = INCOMING.with(|t| t.borrow_mut().replace(table));
    let result = f();
    INCOMING.with(|t| *t.borrow_mut() = previous);
    result
}

/// Duplicates `fd` into the current export table and returns its index.
pub(crate) fn export_fd(fd: BorrowedFd<'_>, what: &str) -> Result<u32> {
    OUTGOING.with(|t| {
        let mut table = t.borrow_mut();
        let Some(table) = table.as_mut() else {
            let why = format!(
                "a {what} holds an OS handle and can only be sent as an argument of a child \
                 process"
            );
            EXPORT_ERROR.with(|e| *e.borrow_mut() = Some(why.clone()));
            return Err(Error::Codec(why));
        };
        let dup = fd.try_clone_to_owned()?;
        table.push(dup);
        u32::try_from(table.len() - 1)
            .map_err(|_| Error::InvalidArgument("too many handles in one message".into()))
    })
}

/// Takes the descriptor at `index` from the current import table.
pub(crate) fn import_fd(index: u32, what: &str) -> Result<OwnedFd> {
    INCOMING.with(|t| {
        let mut table = t.borrow_mut();
        let Some(table) = table.as_mut() else {
            return Err(Error::Codec(format!(
                "a {what} can only be received as an argument or result of a child process"
            )));
        };
        table
            .get_mut(index as usize)
            .and_then(Option::take)
            .ok_or_else(|| Error::Codec(format!("{what}: handle #{index} is missing or reused")))
    })
}

/// How a reopenable handle (a shared memory segment) travels in a message.
///
/// Inside an export context (process arguments) the descriptor itself is passed. Anywhere
/// else (a queue, a pipe) the sender *lends* it: it keeps a duplicate open for the rest of
/// its life and writes `(its pid, the duplicate's number)`; the receiver reopens the same
/// memory through `/proc/PID/fd/N`. That works between processes of the same user while
/// the sender lives; after the sender has exited, receiving reports so.
#[derive(Debug, Clone, Copy, serde::Serialize, serde::Deserialize)]
pub(crate) enum Handle {
    /// An index into the export table that travels with the message.
    Passed(u32),
    /// A descriptor kept open by process `pid`.
    Lent {
        /// The lender.
        pid: u32,
        /// The descriptor's number in the lender.
        fd: i32,
    },
}

/// Descriptors this process lends, by (device, inode) of what they refer to.
static LENT: std::sync::Mutex<Vec<(u64, u64, OwnedFd)>> = std::sync::Mutex::new(Vec::new());

/// The table of lent descriptors; also taken around `fork`.
pub(crate) fn lock_lent() -> std::sync::MutexGuard<'static, Vec<(u64, u64, OwnedFd)>> {
    LENT.lock().unwrap_or_else(|p| p.into_inner())
}

/// Exports a descriptor that can be reopened by path: passed when a transport for
/// descriptors exists, lent otherwise.
pub(crate) fn export_reopenable(fd: BorrowedFd<'_>, what: &str) -> Result<Handle> {
    let in_context = OUTGOING.with(|t| t.borrow().is_some());
    if in_context {
        return export_fd(fd, what).map(Handle::Passed);
    }
    let stat = rustix::fs::fstat(fd)?;
    let (dev, ino) = (stat.st_dev, stat.st_ino);
    let mut lent = lock_lent();
    if let Some((_, _, kept)) = lent.iter().find(|(d, i, _)| *d == dev && *i == ino) {
        return Ok(Handle::Lent { pid: crate::sys::pid::pid(), fd: kept.as_raw_fd() });
    }
    let kept = fd.try_clone_to_owned()?;
    let raw = kept.as_raw_fd();
    lent.push((dev, ino, kept));
    Ok(Handle::Lent { pid: crate::sys::pid::pid(), fd: raw })
}

/// Imports what [`export_reopenable`] exported.
pub(crate) fn import_reopenable(handle: Handle, what: &str) -> Result<OwnedFd> {
    match handle {
        Handle::Passed(index) => import_fd(index, what),
        Handle::Lent { pid, fd } if pid == crate::sys::pid::pid() => {
            let lent = lock_lent();
            let kept =
                lent.iter().find(|(_, _, kept)| kept.as_raw_fd() == fd).ok_or_else(|| {
                    Error::Codec(format!("{what}: this process lent no handle #{fd}"))
                })?;
            Ok(kept.2.try_clone()?)
        }
        Handle::Lent { pid, fd } => {
            let path = format!("/proc/{pid}/fd/{fd}");
            rustix::fs::open(
                path.as_str(),
                rustix::fs::OFlags::RDWR | rustix::fs::OFlags::CLOEXEC,
                rustix::fs::Mode::empty(),
            )
            .map_err(|e| {
                Error::Codec(format!(
                    "{what}: cannot reopen the handle lent by process {pid} (has it exited?): {e}"
                ))
            })
        }
    }
}
