//! Starting children: the `spawn` re-execution, its entry point before `main`, and `fork`.
//!
//! **Spawn.** The parent executes `/proc/self/exe` with the bootstrap Unix socket as the
//! child's standard input and the environment variable [`SPAWN_FD_VAR`] set. In the child,
//! a constructor (an `.init_array` entry, run by the dynamic loader before `main`) sees the
//! variable, removes it, moves the socket off descriptor 0 (which becomes `/dev/null`) and
//! hands it to the child's entry function, which receives the bootstrap message, runs the
//! target and exits: `main` never runs in a spawned child. The parent names that entry
//! function ([`ChildEntry`], `process`'s) by its image-relative offset in [`ENTRY_VAR`], so
//! this layer calls nothing above it by name. This is why spawning needs no ceremony in
//! binaries, examples, unit tests, integration tests, doc-tests or under nextest: the same
//! constructor is linked into all of them.
//!
//! Nothing runs in the child between fork and exec, so the standard library starts it with
//! `posix_spawn` (a `vfork`-style clone): the cost of starting a child does not grow with
//! the parent's memory. A daemon child arms its parent-death signal itself, first thing,
//! and then checks that its parent is still the one that started it.
//!
//! **Fork.** [`fork`] wraps `fork(2)`; the child runs the target and leaves through
//! [`exit_now`], never returning into the caller's stack, whatever goes wrong in it.
//!
//! **Targets by offset.** A child calls the target its parent named through a
//! *trampoline*: a monomorphisation of [`Runner`]'s entry for the target's `fn(A) -> R`,
//! named by offset next to the target (see `fnptr`). The [`Runner`] (`process`'s) decodes
//! the arguments, calls the target and encodes the outcome; this layer only resolves the
//! two offsets, which is the unsafe part.

use std::ffi::OsString;
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::sync::{mpsc, Mutex};

use rustix::process::{getppid, set_parent_process_death_signal, Pid, Signal};
use serde::de::DeserializeOwned;

use super::fnptr;
use crate::sync_util::lock;

/// Names the bootstrap socket's descriptor in a spawned child's environment.
pub(crate) const SPAWN_FD_VAR: &str = "MULTIPROC_SPAWN_FD";

/// In a spawned child's environment: `layout,offset` of its [`ChildEntry`] (see `fnptr`).
pub(crate) const ENTRY_VAR: &str = "MULTIPROC_SPAWN_ENTRY";

/// What a spawned child runs before `main`: it gets the bootstrap socket and returns the
/// exit code.
pub(crate) type ChildEntry = fn(OwnedFd) -> i32;

/// In a daemon child's environment: the pid of the parent it must die with.
const DAEMON_PARENT_VAR: &str = "MULTIPROC_DAEMON_PARENT";

/// Argument given to a spawned child, so it is recognisable in `ps` and so a program that
/// somehow ran `main` anyway sees an argument it does not know instead of running normally.
pub(crate) const CHILD_ARG: &str = "--multiproc-spawned-child";

#[ctor::ctor(unsafe)]
fn spawned_child_entry() {
    let Some(value) = std::env::var_os(SPAWN_FD_VAR) else {
        return;
    };
    // SAFETY: the constructor runs before `main`, on the only thread of the process, so no
    // other thread reads the environment while it changes.
    unsafe { std::env::remove_var(SPAWN_FD_VAR) };
    let entry_value = std::env::var_os(ENTRY_VAR);
    if entry_value.is_some() {
        // SAFETY: as above.
        unsafe { std::env::remove_var(ENTRY_VAR) };
    }
    let daemon_parent = std::env::var_os(DAEMON_PARENT_VAR);
    if daemon_parent.is_some() {
        // SAFETY: as above.
        unsafe { std::env::remove_var(DAEMON_PARENT_VAR) };
    }
    if let Some(parent) = daemon_parent {
        let parent = parent.to_str().and_then(|s| s.parse::<i32>().ok()).and_then(Pid::from_raw);
        // Armed first, then checked: a parent that died before the signal was armed is
        // no longer this process's parent.
        if set_parent_process_death_signal(Some(Signal::KILL)).is_err()
            || parent.is_none()
            || getppid() != parent
        {
            exit_now(1);
        }
    }
    let Some(fd) = value.to_str().and_then(|s| s.parse::<RawFd>().ok()) else {
        eprintln!("multiproc: malformed {SPAWN_FD_VAR}={value:?}");
        exit_now(70);
    };
    // SAFETY: `SPAWN_FD_VAR` is set only by `exec_self`, which makes `fd` (standard input)
    // the inherited bootstrap socket, which nothing else in this fresh process owns.
    let inherited = unsafe { OwnedFd::from_raw_fd(fd) };
    let socket = match move_off_stdin(inherited) {
        Ok(socket) => socket,
        Err(e) => {
            eprintln!("multiproc: spawned child could not set up its bootstrap socket: {e}");
            exit_now(70);
        }
    };
    let Some(entry) = entry_value.as_deref().and_then(resolve_entry) else {
        eprintln!(
            "multiproc: spawned child got no usable {ENTRY_VAR} ({entry_value:?}): was it \
             started by a different executable?"
        );
        exit_now(70);
    };
    ignore_sigpipe();
    let code = entry(socket);
    std::process::exit(code);
}

/// The value of [`ENTRY_VAR`] that names `entry` to a child running this image.
fn entry_value(entry: ChildEntry) -> io::Result<String> {
    let offset = fnptr::offset_of(entry).map_err(|e| io::Error::other(e.to_string()))?;
    Ok(format!("{},{offset}", fnptr::layout_check()))
}

/// The entry function named by a value of [`ENTRY_VAR`], or `None` when it is malformed
/// or comes from another executable image.
fn resolve_entry(value: &std::ffi::OsStr) -> Option<ChildEntry> {
    let (layout, offset) = value.to_str()?.split_once(',')?;
    let (layout, offset) = (layout.parse::<isize>().ok()?, offset.parse::<isize>().ok()?);
    if layout != fnptr::layout_check() {
        return None;
    }
    // SAFETY: the layout check proves this process runs the image the parent ran, where
    // `offset` was taken from a `ChildEntry` by `entry_value`.
    Some(unsafe { fnptr::resolve::<ChildEntry>(offset) })
}

/// Moves the bootstrap socket from standard input to a descriptor of its own (close-on-exec)
/// and gives standard input `/dev/null`, as a child started with `Stdio::null()` has.
fn move_off_stdin(inherited: OwnedFd) -> io::Result<OwnedFd> {
    let socket = rustix::io::fcntl_dupfd_cloexec(&inherited, 3)?;
    if inherited.as_raw_fd() == 0 {
        let null = rustix::fs::open(
            "/dev/null",
            rustix::fs::OFlags::RDONLY | rustix::fs::OFlags::CLOEXEC,
            rustix::fs::Mode::empty(),
        )?;
        let mut stdin = inherited;
        // dup2 onto 0 replaces the socket there; the new descriptor 0 is not close-on-exec.
        rustix::io::dup2(&null, &mut stdin)?;
        std::mem::forget(stdin); // descriptor 0 stays open, now on /dev/null
    }
    Ok(socket)
}

/// Rust's runtime ignores SIGPIPE before `main`; a spawned child never reaches `main`, so it
/// does the same here: writing to a closed pipe must be an error, not a silent death.
fn ignore_sigpipe() {
    // SAFETY: setting a signal's disposition to SIG_IGN installs no handler code.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_IGN);
    }
}

/// Executes the current binary as a spawned child that bootstraps from `socket` by
/// calling `entry` before `main`; returns the child's pid.
///
/// `daemon` children get `PR_SET_PDEATHSIG(SIGKILL)`, so they die with their parent. Linux
/// sends that signal when the *thread* that forked the child ends, so daemons are forked
/// by a spawner thread that lives as long as the process: a daemon started from a
/// short-lived thread (a test, a pool worker) still lives exactly as long as its parent.
pub(crate) fn exec_self(
    socket: BorrowedFd<'_>,
    daemon: bool,
    entry: ChildEntry,
) -> io::Result<i32> {
    let fd = socket.as_raw_fd();
    let entry = entry_value(entry)?;
    if !daemon {
        return exec_self_now(fd, &entry, false);
    }
    let (reply_to, reply) = mpsc::channel();
    let gone = || io::Error::other("the daemon spawner thread could not be started");
    {
        let mut spawner = lock_spawner();
        let me = super::pid::pid();
        // A forked child inherits the sender but not the thread behind it: start its own.
        if !matches!(&*spawner, Some((pid, _)) if *pid == me) {
            *spawner = start_spawner().map(|sender| (me, sender));
        }
        let (_, sender) = spawner.as_ref().ok_or_else(gone)?;
        sender.send((fd, entry, reply_to)).map_err(|_| gone())?;
    }
    // `socket` stays borrowed (so open) until the spawner answers.
    reply.recv().map_err(|_| gone())?
}

type SpawnRequest = (RawFd, String, mpsc::Sender<io::Result<i32>>);
pub(crate) type Spawner = Option<(u32, mpsc::Sender<SpawnRequest>)>;

static SPAWNER: Mutex<Spawner> = Mutex::new(None);

/// The daemon spawner's slot: (the pid that started it, its request channel). Also taken
/// around `fork` so no other thread holds it at that instant.
pub(crate) fn lock_spawner() -> std::sync::MutexGuard<'static, Spawner> {
    lock(&SPAWNER)
}

fn start_spawner() -> Option<mpsc::Sender<SpawnRequest>> {
    let (requests, incoming) = mpsc::channel::<SpawnRequest>();
    std::thread::Builder::new()
        .name("multiproc-daemon-spawner".into())
        .spawn(move || {
            for (fd, entry, reply_to) in incoming {
                let _ = reply_to.send(exec_self_now(fd, &entry, true));
            }
        })
        .ok()
        .map(|_| requests)
}

fn exec_self_now(fd: RawFd, entry: &str, daemon: bool) -> io::Result<i32> {
    let arg0 = std::env::args_os().next().unwrap_or_else(|| OsString::from("multiproc-child"));
    // SAFETY: `exec_self`'s caller keeps the socket open until this returns.
    let socket = unsafe { BorrowedFd::borrow_raw(fd) }.try_clone_to_owned()?;
    let mut command = Command::new("/proc/self/exe");
    command
        .arg0(arg0)
        .arg(CHILD_ARG)
        .env(SPAWN_FD_VAR, "0")
        .env(ENTRY_VAR, entry)
        .stdin(Stdio::from(socket));
    if daemon {
        command.env(DAEMON_PARENT_VAR, rustix::process::getpid().as_raw_nonzero().to_string());
    }
    let child = command.spawn()?;
    let pid = child.id() as i32;
    if pid == 0 {
        return Err(io::Error::other("spawned child has pid 0"));
    }
    // The child is reaped through its pid/pidfd by `process`; `std::process::Child` does
    // neither kill nor wait on drop.
    drop(child);
    Ok(pid)
}

/// `fork(2)`: runs `child` in a new process, which ends with the code it returns; returns
/// the child's pid in the parent.
///
/// `held` (lock guards the caller took so that no other thread holds those locks at the
/// instant of the fork) is released in both processes right after the fork. A daemon
/// child arms its parent-death signal first, and `child` gets the error if that failed
/// (to report it and return an exit code). The child never returns into the caller's
/// stack: every way out of it (a panic that escapes `child`, `child`'s return) ends it
/// through [`exit_now`].
///
/// In a multi-threaded parent only the calling thread exists in the child; locks held by
/// other threads stay locked there. This is the documented hazard of the `fork` start
/// method, which users opt into.
pub(crate) fn fork<H>(
    daemon: bool,
    held: H,
    child: impl FnOnce(io::Result<()>) -> i32,
) -> io::Result<i32> {
    let parent = rustix::process::getpid();
    // SAFETY: fork has no memory-safety preconditions of its own; the child continues with
    // a copy of this thread only, which the `fork` start method documents, and leaves
    // through `exit_now` below without unwinding into frames it shares with the parent.
    let pid = unsafe { libc::fork() };
    drop(held);
    match pid {
        -1 => Err(io::Error::last_os_error()),
        0 => {
            let mut setup = Ok(());
            if daemon {
                // Armed first, then checked: a parent that died before the signal was armed
                // is no longer this process's parent, and nobody is left to report to.
                setup = set_parent_process_death_signal(Some(Signal::KILL)).map_err(|e| {
                    io::Error::new(
                        io::Error::from(e).kind(),
                        format!("cannot arm the parent-death signal: {e}"),
                    )
                });
                if setup.is_ok() && getppid() != Some(parent) {
                    exit_now(1);
                }
            }
            let code = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| child(setup)));
            exit_now(code.unwrap_or(70))
        }
        pid => Ok(pid),
    }
}

/// Ends the process at once with `code`, running no destructors and no `atexit` handlers
/// (a forked child must not run its parent's).
pub(crate) fn exit_now(code: i32) -> ! {
    // SAFETY: `_exit` is always safe to call; it does not return.
    unsafe { libc::_exit(code) }
}

/// How a child runs a target returning `R` that its parent named by offset: the layer
/// above decodes the arguments (and takes the handles that came with them), calls `f`,
/// and encodes what it returned or how it failed. A runner chooses which return types it
/// accepts (a value to send back, a status) by the `R` it implements the trait for.
pub(crate) trait Runner<R> {
    /// What the child reports.
    type Outcome;
    /// Runs `f` on the encoded `args`.
    fn run<A: DeserializeOwned>(f: fn(A) -> R, args: &[u8], handles: Vec<OwnedFd>)
        -> Self::Outcome;
}

/// The signature shared by every trampoline: target offset, argument bytes, handles.
pub(crate) type Trampoline<O> = fn(isize, &[u8], Vec<OwnedFd>) -> O;

fnptr::impl_fn_ptr!([O] Trampoline<O>);

pub(crate) use fnptr::NotInImage;

/// Runs in a spawned child: resolves `target` as `fn(A) -> R` and lets the runner `X`
/// decode the arguments, call it and encode the result.
///
/// Its monomorphisation for `(X, A, R)` is named by offset in the bootstrap message next
/// to the target's offset; both offsets were taken together from one `fn(A) -> R`.
fn trampoline<X, A, R>(target: isize, args: &[u8], handles: Vec<OwnedFd>) -> X::Outcome
where
    X: Runner<R>,
    A: DeserializeOwned,
{
    // SAFETY: `target` was produced by `fnptr::offset_of::<fn(A) -> R>` in the parent,
    // paired with this very monomorphisation (`trampoline_offsets`), and
    // `resolve_trampoline_of` checked that this process runs the parent's image.
    let f: fn(A) -> R = unsafe { fnptr::resolve(target) };
    X::run(f, args, handles)
}

/// The offsets a parent sends so that a child can call `f` through the runner `X`:
/// (layout check, trampoline, target). An error when a re-executed child could not find
/// `f` by its offset (it lives in another loaded object).
pub(crate) fn trampoline_offsets<X, A, R>(
    f: fn(A) -> R,
) -> Result<(isize, isize, isize), NotInImage>
where
    X: Runner<R>,
    A: DeserializeOwned,
{
    let tramp: Trampoline<X::Outcome> = trampoline::<X, A, R>;
    Ok((fnptr::layout_check(), fnptr::offset_of(tramp)?, fnptr::offset_of(f)?))
}

/// The trampoline of a runner whose outcome is `O` named by a bootstrap message, or `None`
/// when the message comes from a different executable image.
pub(crate) fn resolve_trampoline_of<O>(layout: isize, offset: isize) -> Option<Trampoline<O>> {
    if layout != fnptr::layout_check() {
        return None;
    }
    // SAFETY: the layout check proves this process runs the image the parent ran, where
    // `offset` was taken from a `Trampoline<O>` by `trampoline_offsets` (a trampoline's
    // type depends on its runner's outcome only, and every runner of `process` reports the
    // one outcome type that its caller names as `O`).
    Some(unsafe { fnptr::resolve::<Trampoline<O>>(offset) })
}

/// The offsets that name a parameterless function (a barrier's action) for any process
/// running this image: (layout check, offset); an error for a function of another loaded
/// object.
pub(crate) fn action_offsets(f: fn()) -> Result<(isize, isize), NotInImage> {
    Ok((fnptr::layout_check(), fnptr::offset_of(f)?))
}

/// The function named by [`action_offsets`], or `None` when the offsets come from another
/// executable image.
pub(crate) fn resolve_action(layout: isize, offset: isize) -> Option<fn()> {
    if layout != fnptr::layout_check() {
        return None;
    }
    // SAFETY: the layout check proves this process runs the image in which `offset` was
    // taken from a `fn()` by `action_offsets`.
    Some(unsafe { fnptr::resolve::<fn()>(offset) })
}

/// A batch of items that a pool worker runs through one function. Implemented above `sys`
/// (by the pool's worker), so that `sys` names no type of the layers above it.
pub(crate) trait RunBatch {
    /// Runs every item of the batch through `f`.
    fn run_batch<A, R>(&mut self, f: fn(A) -> R)
    where
        A: serde::de::DeserializeOwned,
        R: serde::Serialize;
}

/// The signature of a pool worker's trampoline: target offset, the batch of items to run.
pub(crate) type BatchTrampoline<B> = fn(isize, &mut B);

fnptr::impl_fn_ptr!([B] BatchTrampoline<B>);

/// Runs in a pool worker: resolves `target` as `fn(A) -> R` and lets the batch (safe code
/// in `pool`) run its items through it (one resolution per batch, no per-item allocation:
/// what makes microsecond tasks cheap).
pub(crate) fn batch_trampoline<B, A, R>(target: isize, batch: &mut B)
where
    B: RunBatch,
    A: serde::de::DeserializeOwned,
    R: serde::Serialize,
{
    // SAFETY: as for `trampoline`: `target` was produced by `fnptr::offset_of::<fn(A) -> R>`
    // together with this very monomorphisation (`batch_offsets_for`), and
    // `resolve_batch_trampoline` checked that this process runs the same image.
    let f: fn(A) -> R = unsafe { fnptr::resolve(target) };
    batch.run_batch(f)
}

/// The offsets a pool sends so that a worker can run batches `B` of `f`; an error for a
/// function of another loaded object.
pub(crate) fn batch_offsets_for<B, A, R>(f: fn(A) -> R) -> Result<(isize, isize, isize), NotInImage>
where
    B: RunBatch,
    A: serde::de::DeserializeOwned,
    R: serde::Serialize,
{
    let tramp: BatchTrampoline<B> = batch_trampoline::<B, A, R>;
    Ok((fnptr::layout_check(), fnptr::offset_of(tramp)?, fnptr::offset_of(f)?))
}

/// The batch trampoline named by a pool's task, or `None` when it comes from a different
/// executable image. `B` must be the batch type the offsets were taken with (the pool has
/// one; lifetimes aside, which do not change the function).
pub(crate) fn resolve_batch_trampoline<B: RunBatch>(
    layout: isize,
    offset: isize,
) -> Option<BatchTrampoline<B>> {
    if layout != fnptr::layout_check() {
        return None;
    }
    // SAFETY: the layout check proves this process runs the image the parent ran, where
    // `offset` was taken from a `BatchTrampoline<B>` by `batch_offsets_for` (with the one
    // batch type of the pool: a function's monomorphisation does not depend on lifetimes).
    Some(unsafe { fnptr::resolve::<BatchTrampoline<B>>(offset) })
}
