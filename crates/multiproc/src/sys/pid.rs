//! The current pid and thread id, cached; the CPU the calling thread runs on.
//!
//! `getpid` and `gettid` are system calls (glibc stopped caching them); a lock acquisition
//! that records its owner must not pay for one. The pid is cached in a static and
//! forgotten in the child of every `fork` (a `pthread_atfork` handler, registered when the
//! cache is first filled), and thread ids are cached per thread together with the pid
//! they were read under, so a forked child never reuses its parent's values.

use std::cell::Cell;
use std::sync::atomic::{AtomicU32, Ordering::Relaxed};
use std::sync::Once;

static PID: AtomicU32 = AtomicU32::new(0);
static REGISTER: Once = Once::new();

extern "C" fn forget_pid_in_child() {
    PID.store(0, Relaxed);
}

/// This process's pid.
pub(crate) fn pid() -> u32 {
    let cached = PID.load(Relaxed);
    if cached != 0 {
        return cached;
    }
    REGISTER.call_once(|| {
        // SAFETY: the handler only stores to an atomic, which is async-signal-safe, as
        // code running in a child between fork and exec must be.
        unsafe {
            libc::pthread_atfork(None, None, Some(forget_pid_in_child));
        }
    });
    let pid = rustix::process::getpid().as_raw_nonzero().get() as u32;
    PID.store(pid, Relaxed);
    pid
}

thread_local! {
    /// (pid, tid) as read by this thread.
    static TID: Cell<(u32, u32)> = const { Cell::new((0, 0)) };
}

/// The calling thread's id.
pub(crate) fn tid() -> u32 {
    let pid = pid();
    TID.with(|cell| {
        let (cached_pid, tid) = cell.get();
        if cached_pid == pid && tid != 0 {
            return tid;
        }
        let tid = rustix::thread::gettid().as_raw_nonzero().get() as u32;
        cell.set((pid, tid));
        tid
    })
}

/// The CPU the calling thread is running on (`None` if the system cannot tell). Cheap:
/// glibc reads it from the thread's restartable-sequences area or the vDSO, without a
/// system call; a hint only, as the thread may move at any time.
pub(crate) fn cpu() -> Option<u32> {
    // SAFETY: `sched_getcpu` takes no arguments and touches no memory of ours.
    let cpu = unsafe { libc::sched_getcpu() };
    u32::try_from(cpu).ok()
}

/// The value behind a pointer that was leaked with `Box::into_raw` and is never freed, or
/// `None` for null.
pub(crate) fn leaked_ref<T>(ptr: *mut T) -> Option<&'static T> {
    // SAFETY: by this function's contract, a non-null `ptr` comes from `Box::into_raw` and
    // is never freed or written through, so it is valid for reads forever.
    unsafe { ptr.as_ref() }
}
