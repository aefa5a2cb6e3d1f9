//! Handle passing: how file descriptors travel inside serialized values.
//!
//! A value that owns an OS handle (a [`Connection`](crate::Connection), a queue, a lock,
//! a shared value) cannot be reduced to bytes alone. As in CPython's
//! `multiprocessing.reduction`, serializing such a value *exports* its descriptor into a
//! side table and writes only the table index; the table travels beside the bytes
//! (inherited by a spawned child, or as `SCM_RIGHTS` over a Unix socket) and deserializing
//! *imports* the descriptor by index.
//!
//! The table exists only inside [`export_handles`] / [`import_handles`], which the crate
//! calls where a transport for descriptors exists: process arguments. Elsewhere (a queue,
//! a pipe), the descriptor is *shared*: as CPython's `resource_sharer` does, the sender
//! keeps a duplicate under a random 64-bit one-time id and hands it out once, over an
//! abstract Unix socket (its *sharer*), to the first process of the same user that asks
//! with that id. The receiver checks that the sharer is the sender it expects (same user,
//! same pid, by `SO_PEERCRED`); nothing is ever reopened by a number taken from a message.
//!
//! # What the sender keeps
//! A shared descriptor is closed in the sender as soon as it has been handed out. One
//! whose message is never received (dropped unread, or still waiting in a queue) stays
//! until the sender exits, but only the most recent [`max_waiting`] of them (at most 4096,
//! and a quarter of the descriptor limit): sharing one more withdraws the oldest, whose
//! receiver then gets an error saying so. Each message can be received once: decoding the
//! same bytes a second time is an error.

use std::cell::RefCell;
use std::collections::{HashMap, VecDeque};
use std::io::{Read, Write};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixListener, UnixStream};
use std::time::Duration;

use crate::error::{Error, Result};
use crate::sync_util::lock;
use crate::sys;

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

/// How a handle travels in a message.
///
/// Inside an export context (process arguments) the descriptor itself is passed. Anywhere
/// else (a queue, a pipe) the sender *shares* it, as CPython's `resource_sharer` does: it
/// keeps a duplicate under a random one-time id and writes `(its pid, its sharer's nonce,
/// the id)`; the receiver asks the sender's sharer (an abstract Unix socket) for that id
/// and gets the descriptor over `SCM_RIGHTS`. See [`export_reopenable`] and
/// [`export_socket`].
#[derive(Debug, Clone, Copy, serde::Serialize, serde::Deserialize)]
pub(crate) enum Handle {
    /// An index into the export table that travels with the message.
    Passed(u32),
    /// A descriptor process `pid` hands out once to whoever asks its sharer with `id`.
    Shared {
        /// The sender.
        pid: u32,
        /// Names the sender's sharer socket (with `pid`).
        nonce: u64,
        /// The one-time id of this descriptor.
        id: u64,
    },
}

/// Exports a shared memory segment's descriptor: passed when a transport for
/// descriptors exists, shared otherwise (see [`export_socket`]).
pub(crate) fn export_reopenable(fd: BorrowedFd<'_>, what: &str) -> Result<Handle> {
    export_socket(fd, what)
}

/// Imports what [`export_reopenable`] exported. A segment that is not sealed against
/// shrinking is refused: a sender could cut it short under this process's mapping (see
/// [`crate::sys::shm::memfd`]).
pub(crate) fn import_reopenable(handle: Handle, what: &str) -> Result<OwnedFd> {
    let fd = import_socket(handle, what)?;
    if !crate::sys::shm::is_sealed_against_shrinking(fd.as_fd()) {
        return Err(Error::Codec(format!(
            "{what}: the received shared segment is not sealed against shrinking; refused"
        )));
    }
    Ok(fd)
}

/// Whether the peer of the Unix socket `socket` is a process of this user on this
/// machine (`SO_PEERCRED`). False for any other kind of socket (TCP).
pub(crate) fn peer_is_local_same_user(socket: BorrowedFd<'_>) -> bool {
    sys::socket::is_unix(socket)
        && sys::socket::peer_credentials(socket).is_ok_and(|c| c.uid == sys::proc::uid())
}

// --------------------------------------------------------------------------------------
// Sharing sockets

/// How long a receiver waits for a sharer's answer.
const SHARE_TIMEOUT: Duration = Duration::from_secs(30);

/// This process's shared descriptors, by one-time id, and the name of the abstract Unix
/// socket on which a thread hands them out.
pub(crate) struct Sharer {
    pid: u32,
    nonce: u64,
    table: HashMap<u64, OwnedFd>,
    /// The ids in the order they were shared (some perhaps handed out already).
    order: VecDeque<u64>,
}

impl Sharer {
    fn insert(&mut self, id: u64, fd: OwnedFd) {
        let cap = max_waiting();
        while self.table.len() >= cap {
            let Some(oldest) = self.order.pop_front() else { break };
            self.table.remove(&oldest);
        }
        if self.order.len() >= 2 * cap {
            let table = &self.table;
            self.order.retain(|id| table.contains_key(id));
        }
        self.table.insert(id, fd);
        self.order.push_back(id);
    }
}

/// The most descriptors a process keeps shared and not yet received: a quarter of its
/// descriptor limit (`RLIMIT_NOFILE`), between 64 and 4096.
pub(crate) fn max_waiting() -> usize {
    static CAP: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *CAP.get_or_init(|| {
        let limit = sys::fd::descriptor_limit().unwrap_or(u64::MAX);
        usize::try_from(limit / 4).unwrap_or(usize::MAX).clamp(64, 4096)
    })
}

static SHARER: std::sync::Mutex<Option<Sharer>> = std::sync::Mutex::new(None);

/// The shared descriptors; also taken around `fork`.
pub(crate) fn lock_sharer() -> std::sync::MutexGuard<'static, Option<Sharer>> {
    lock(&SHARER)
}

fn random() -> Result<u64> {
    getrandom::u64().map_err(|e| Error::Io(std::io::Error::other(e.to_string())))
}

fn sharer_address(pid: u32, nonce: u64) -> std::io::Result<SocketAddr> {
    SocketAddr::from_abstract_name(format!("multiproc-fd-{pid}-{nonce:016x}"))
}

thread_local! {
    /// Ids this thread shared during the encodings under way (see [`share_mark`]).
    static PENDING_SHARES: RefCell<Vec<u64>> = const { RefCell::new(Vec::new()) };
}

/// Where this thread's shares stand before an encoding starts.
pub(crate) fn share_mark() -> usize {
    PENDING_SHARES.with(|p| p.borrow().len())
}

/// After an encoding that started at `mark`: if it failed, the descriptors it shared are
/// taken back (nobody can ask for them); if it succeeded, they stay, and the outermost
/// encoding forgets them (an enclosing one that fails later still takes them back).
pub(crate) fn share_settle(mark: usize, succeeded: bool) {
    let failed: Vec<u64> = PENDING_SHARES.with(|p| {
        let mut p = p.borrow_mut();
        if succeeded {
            if mark == 0 {
                p.clear();
            }
            Vec::new()
        } else {
            let at = mark.min(p.len());
            p.split_off(at)
        }
    });
    if failed.is_empty() {
        return;
    }
    let mut sharer = lock_sharer();
    if let Some(state) = sharer.as_mut() {
        for id in failed {
            state.table.remove(&id);
        }
    }
}

/// Exports a descriptor: passed when a transport for descriptors exists, shared
/// otherwise (kept under a one-time id until a receiver asks for it).
pub(crate) fn export_socket(fd: BorrowedFd<'_>, what: &str) -> Result<Handle> {
    if OUTGOING.with(|t| t.borrow().is_some()) {
        return export_fd(fd, what).map(Handle::Passed);
    }
    let me = crate::sys::pid::pid();
    let mut sharer = lock_sharer();
    let state = match sharer.as_mut() {
        Some(state) if state.pid == me => state,
        _ => {
            // First use here (or in a forked child, whose copy of the parent's table only
            // holds duplicates nobody will ask this process for): start a sharer.
            *sharer = None;
            let nonce = random()?;
            let listener = UnixListener::bind_addr(&sharer_address(me, nonce)?)?;
            std::thread::Builder::new()
                .name("multiproc-sharer".into())
                .spawn(move || serve_shared(listener))?;
            sharer.insert(Sharer { pid: me, nonce, table: HashMap::new(), order: VecDeque::new() })
        }
    };
    let id = loop {
        let id = random()?;
        if !state.table.contains_key(&id) {
            break id;
        }
    };
    state.insert(id, fd.try_clone_to_owned()?);
    PENDING_SHARES.with(|p| p.borrow_mut().push(id));
    Ok(Handle::Shared { pid: me, nonce: state.nonce, id })
}

/// The sharer's thread: answers each request (an 8-byte id, from a process of this user)
/// with the descriptor, once, or with none.
fn serve_shared(listener: UnixListener) {
    let uid = sys::proc::uid();
    for stream in listener.incoming() {
        let Ok(mut stream) = stream else {
            // Out of descriptors, say: wait rather than spin on the failing accept.
            std::thread::sleep(Duration::from_millis(20));
            continue;
        };
        let _ = stream.set_read_timeout(Some(SHARE_TIMEOUT));
        let _ = stream.set_write_timeout(Some(SHARE_TIMEOUT));
        let same_user = sys::socket::peer_credentials(&stream).is_ok_and(|c| c.uid == uid);
        let mut id = [0u8; 8];
        if !same_user || stream.read_exact(&mut id).is_err() {
            continue;
        }
        let fd = lock_sharer().as_mut().and_then(|s| s.table.remove(&u64::from_be_bytes(id)));
        let _ = send_handles(stream.as_fd(), fd.as_slice());
    }
}

/// Imports what [`export_socket`] exported.
pub(crate) fn import_socket(handle: Handle, what: &str) -> Result<OwnedFd> {
    let (pid, nonce, id) = match handle {
        Handle::Passed(index) => return import_fd(index, what),
        Handle::Shared { pid, nonce, id } => (pid, nonce, id),
    };
    let gone = || {
        Error::Codec(format!(
            "{what}: already received (a handle in a message can be received once), withdrawn \
             unreceived (a sender keeps at most {} waiting), or never sent by process {pid}",
            max_waiting()
        ))
    };
    if pid == crate::sys::pid::pid() {
        let mut sharer = lock_sharer();
        let state = sharer.as_mut().filter(|s| s.nonce == nonce).ok_or_else(gone)?;
        return state.table.remove(&id).ok_or_else(gone);
    }
    let mut stream = UnixStream::connect_addr(&sharer_address(pid, nonce)?).map_err(|e| {
        Error::Codec(format!(
            "{what}: cannot reach process {pid}, which sent it (has it exited?): {e}"
        ))
    })?;
    // The socket must belong to the sender the message names, and to this user: a process
    // squatting on the name is asked nothing.
    let creds = sys::socket::peer_credentials(&stream)?;
    if creds.uid != sys::proc::uid() || creds.pid as u32 != pid {
        return Err(Error::Codec(format!(
            "{what}: the socket of process {pid}'s sharer belongs to another process or user"
        )));
    }
    stream.set_read_timeout(Some(SHARE_TIMEOUT))?;
    stream.set_write_timeout(Some(SHARE_TIMEOUT))?;
    stream.write_all(&id.to_be_bytes())?;
    let mut fds = recv_handles(stream.as_fd()).map_err(|e| match e {
        Error::Io(e) if e.kind() == std::io::ErrorKind::WouldBlock => Error::Timeout(SHARE_TIMEOUT),
        other => other,
    })?;
    match (fds.pop(), fds.is_empty()) {
        (Some(fd), true) => Ok(fd),
        (None, _) => Err(gone()),
        (Some(_), false) => Err(Error::Protocol(format!("{what}: several handles for one"))),
    }
}

/// Sends handles over a Unix socket: a 4-byte count with the descriptors attached.
pub(crate) fn send_handles(socket: BorrowedFd<'_>, handles: &[OwnedFd]) -> Result<()> {
    if handles.len() > MAX_HANDLES {
        return Err(Error::InvalidArgument(format!(
            "{} handles in one set of arguments; at most {MAX_HANDLES} can be passed",
            handles.len()
        )));
    }
    let count = (handles.len() as u32).to_be_bytes();
    let borrowed: Vec<BorrowedFd<'_>> = handles.iter().map(|h| h.as_fd()).collect();
    let sent = sys::socket::send_with_fds(socket, &count, &borrowed)?;
    if sent != count.len() {
        return Err(Error::Protocol("short write of the handle count".into()));
    }
    Ok(())
}

/// The most descriptors one message carries (Linux's limit for one `SCM_RIGHTS` message).
const MAX_HANDLES: usize = sys::socket::MAX_FDS;

/// Receives what [`send_handles`] sent.
pub(crate) fn recv_handles(socket: BorrowedFd<'_>) -> Result<Vec<OwnedFd>> {
    let mut count = [0u8; 4];
    let mut got = 0;
    let mut fds = Vec::new();
    while got < 4 {
        let received = sys::socket::recv_with_fds(socket, &mut count[got..], &mut fds)?;
        if received == 0 {
            return Err(Error::Eof);
        }
        got += received;
    }
    let expected = u32::from_be_bytes(count) as usize;
    if fds.len() != expected {
        return Err(Error::Protocol(format!(
            "expected {expected} handles with the bootstrap message, got {}",
            fds.len()
        )));
    }
    Ok(fds)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unsealed_segment_is_refused() {
        // A peer's own memfd, never sealed: it could shrink it under our mapping.
        let unsealed = crate::sys::shm::memfd_unsealed("hostile").expect("memfd_create");
        crate::sys::fd::ftruncate(&unsealed, 4096).unwrap();
        let handle = export_reopenable(unsealed.as_fd(), "Queue").unwrap();
        let e = import_reopenable(handle, "Queue").unwrap_err().to_string();
        assert!(e.contains("not sealed"), "{e}");
        // Passed with a process's arguments: refused alike.
        let (handle, fds) = export_handles(|| export_reopenable(unsealed.as_fd(), "Queue"));
        let handle = handle.unwrap();
        let refused = import_handles(fds, || import_reopenable(handle, "Queue"));
        assert!(refused.unwrap_err().to_string().contains("not sealed"));

        let sealed = crate::sys::shm::memfd("fine", 4096).unwrap();
        let handle = export_reopenable(sealed.as_fd(), "Queue").unwrap();
        let fd = import_reopenable(handle, "Queue").unwrap();
        assert_eq!(crate::sys::shm::size_of_fd(&fd).unwrap(), 4096);
        assert!(crate::sys::fd::ftruncate(&fd, 0).is_err(), "a sealed segment could shrink");
    }

    #[test]
    fn a_made_up_id_gets_an_error() {
        let sealed = crate::sys::shm::memfd("fine", 4096).unwrap();
        let Handle::Shared { pid, nonce, id } = export_reopenable(sealed.as_fd(), "Lock").unwrap()
        else {
            panic!("not shared")
        };
        let forged = Handle::Shared { pid, nonce, id: id.wrapping_add(1) };
        assert!(import_reopenable(forged, "Lock").is_err());
        let real = Handle::Shared { pid, nonce, id };
        assert!(import_reopenable(real, "Lock").is_ok());
        assert!(import_reopenable(real, "Lock").is_err(), "received twice");
    }
}
