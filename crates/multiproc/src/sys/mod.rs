//! The platform layer: every operating-system call of the crate, behind safe internal
//! types and functions, and the only unsafe code of the crate, behind an explicit
//! contract.
//!
//! Everything else in multiproc is `#![deny(unsafe_code)]` and reaches the operating system
//! through this module, which alone names `rustix` and `libc` (the pool, the managers'
//! server and shared memory are being moved onto it; the wrappers they need are here).
//! Each function here states what it needs from its caller; each `unsafe` block states why
//! it holds. Nothing here calls up into the rest of the crate (beyond `crate::error` and
//! `crate::deadline`, two leaves): where a spawned child must run code of an upper layer,
//! that layer names the function by offset ([`spawn::ChildEntry`], [`spawn::Runner`]).
//!
//! | item | what it does |
//! |---|---|
//! | [`cpu`] | yielding the processor; a thread's CPU affinity set |
//! | [`fd`] | pipes (and their size), eventfds, `read`/`write`/`writev`, non-blocking mode, `ftruncate`, the descriptor limit, out-of-resources errors |
//! | [`fnptr`] | turns a function pointer into an image-relative offset and back, so a re-executed child can call the function its parent named; refuses functions of other loaded objects |
//! | [`futex`] | sleeping on and waking a process-shared 32-bit word |
//! | [`mem`] | advice to the kernel about large receive buffers |
//! | [`pid`] | the current pid and thread id, cached across calls and forgotten across `fork`; the current CPU; a lock-free cell of leaked values |
//! | [`poll`] | `poll(2)` with a timeout or a deadline |
//! | [`proc`] | pidfds of children (signals, reaping), whether a pid is alive (`/proc`) or exists, the user id, signal names and numbers |
//! | [`shm`] | POSIX and anonymous shared memory segments and their mappings (atomics, copies, volatile access and fills; slice views only as `unsafe fn`) |
//! | [`socket`] | socket pairs, TCP and Unix listening and connecting, socket options, peer credentials, descriptors passed as `SCM_RIGHTS` |
//! | [`spawn`] | the constructor that runs a spawned child before `main`, the `fork` start method, the `exec` of the current binary, and the trampolines by which a child calls a target named by offset |
//!
//! Errors come back as `std::io::Error` (the conversion of rustix's `Errno` into the
//! crate's [`Error`](crate::Error) is here as well, so no module above names rustix).
//!
//! # Linux-only parts, and what a second backend needs
//! This backend is Linux's. A port (macOS, say) writes a second one with the same items;
//! nothing above `sys` changes. What is Linux-specific, and what the other backend would
//! provide instead:
//! - **memfd** (`shm::memfd`, its seals `F_SEAL_SHRINK`/`F_SEAL_SEAL`, and
//!   `is_sealed_against_shrinking`): an anonymous segment that vanishes with its last
//!   holder and that no receiver can shrink. Elsewhere: `shm_open` a random name, unlink it
//!   at once, and pass the descriptor; with no seals, a receiver cannot be protected from
//!   a peer's `ftruncate` (its access gets `SIGBUS`), so the backend says so.
//! - **`/dev/shm` and `/proc/*/fd`, `/proc/*/maps`** (`shm::objects_in_use`, the POSIX
//!   names under `/dev/shm`): macOS has `shm_open` names without a directory to list, and
//!   no way to see which segments other processes hold; the orphan sweep would be limited
//!   to blocks this user created and recorded.
//! - **futex** (`futex`): `__ulock_wait`/`__ulock_wake` with `UL_COMPARE_AND_WAIT_SHARED`
//!   on macOS (or a process-shared pthread mutex and condition per word).
//! - **pidfd** (`proc::PidFd`: `pidfd_open`, `pidfd_send_signal`, `waitid(P_PIDFD)`): a bare
//!   pid with `kill` and `waitpid`, made pollable with a kqueue `EVFILT_PROC`/`NOTE_EXIT`
//!   descriptor (what [`crate::Process::sentinel`] lends out).
//! - **`/proc/PID/stat`** (`proc::pid_is_alive`, zombie detection): `kill(pid, 0)` plus
//!   `proc_pidinfo` for the zombie state.
//! - **`SO_PEERCRED`**, **abstract Unix names**, **`MSG_CMSG_CLOEXEC`** and the 253-descriptor
//!   `SCM_RIGHTS` limit (`socket`): `getpeereid` and `LOCAL_PEERPID`; sharers on socket
//!   files in a private directory instead of abstract names (`reduction` asks `socket` for
//!   the address); `FD_CLOEXEC` set right after `recvmsg`; the platform's own limit.
//! - **`/proc/self/exe`** and the **`.init_array` constructor** (`spawn`): `_NSGetExecutablePath`
//!   (checked against the running image's inode) and a `__mod_init_func` constructor, which
//!   the `ctor` crate already emits on macOS. `PR_SET_PDEATHSIG` (daemon children die with
//!   their parent) has no macOS equivalent: a daemon child watches its parent with kqueue.
//! - **`getauxval(AT_ENTRY)`** and `dladdr` (`fnptr`, which object is the main program):
//!   `_dyld_get_image_header(0)` on macOS.
//! - **eventfd**, **`F_SETPIPE_SZ`** (`fd`), **`sched_{get,set}affinity`** (`cpu`),
//!   **`sched_getcpu`** (`pid::cpu`), **`MADV_HUGEPAGE`** (`mem`): a pipe for the eventfd;
//!   the rest are optimisations, which a backend may make no-ops (no affinity set, no
//!   CPU number).
#![allow(unsafe_code)]

pub(crate) mod cpu;
pub(crate) mod fd;
pub(crate) mod fnptr;
pub(crate) mod futex;
pub(crate) mod mem;
pub(crate) mod pid;
pub(crate) mod poll;
pub(crate) mod proc;
pub(crate) mod shm;
pub(crate) mod socket;
pub(crate) mod spawn;

impl From<rustix::io::Errno> for crate::error::Error {
    fn from(errno: rustix::io::Errno) -> Self {
        crate::error::Error::Io(errno.into())
    }
}
