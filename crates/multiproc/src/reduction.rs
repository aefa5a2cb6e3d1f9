//! Handle passing: how file descriptors travel inside serialized values.
//!
//! A value that owns an OS handle (a [`Connection`](crate::Connection), later queues and
//! locks) cannot be reduced to bytes alone. As in CPython's `multiprocessing.reduction`,
//! serializing such a value *exports* its descriptor into a side table and writes only the
//! table index; the table travels beside the bytes (inherited by a spawned child, or as
//! `SCM_RIGHTS` over a Unix socket) and deserializing *imports* the descriptor by index.
//!
//! The table exists only inside [`export_handles`] / [`import_handles`], which the crate
//! calls where a transport for descriptors exists: process arguments and results.
//! Serializing a handle-owning value anywhere else is a clear error, never a silently
//! dangling descriptor number.

use std::cell::RefCell;
use std::os::fd::{BorrowedFd, OwnedFd};

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
