//! The current pid and thread id, cached; the CPU the calling thread runs on.
//!
//! `getpid` and `gettid` are system calls (glibc stopped caching them); a lock acquisition
//! that records its owner must not pay for one. The pid is cached in a static and
//! forgotten in the child of every `fork` (a `pthread_atfork` handler, registered when the
//! cache is first filled), and thread ids are cached per thread together with the pid
//! they were read under, so a forked child never reuses its parent's values.
//!
//! Also here: [`LeakedCell`], a lock-free cell of leaked values (what a forked child can
//! set without taking a lock that another thread of its parent may have held).

use std::cell::Cell;
use std::sync::atomic::{
    AtomicPtr, AtomicU32,
    Ordering::{Acquire, Relaxed, Release},
};
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

/// A value set at most a few times per process and read from anywhere, without a lock:
/// each [`set`](Self::set) leaks its value (one small allocation, never freed), so a
/// reference from [`get`](Self::get) stays valid forever, even while another thread sets a
/// new value. Only `set` can store a pointer, and it stores only leaked boxes: that is what
/// makes `get` sound.
pub(crate) struct LeakedCell<T> {
    ptr: AtomicPtr<T>,
}

impl<T: Send + Sync + 'static> LeakedCell<T> {
    /// An empty cell.
    pub(crate) const fn new() -> LeakedCell<T> {
        LeakedCell { ptr: AtomicPtr::new(std::ptr::null_mut()) }
    }

    /// Replaces the value (the previous one stays allocated, for readers that hold it).
    pub(crate) fn set(&self, value: T) {
        let leaked: &'static mut T = Box::leak(Box::new(value));
        self.ptr.store(leaked, Release);
    }

    /// The value last set, or `None` if none was.
    pub(crate) fn get(&self) -> Option<&'static T> {
        let ptr = self.ptr.load(Acquire);
        // SAFETY: `ptr` is null or was stored by `set` from `Box::leak`, so it points to a
        // `T` that is never freed, and nothing writes through it after the `Release`
        // store that published it (our `Acquire` load synchronises with it); `T: Sync`
        // lets any thread share the reference.
        unsafe { ptr.as_ref() }
    }
}

#[cfg(test)]
mod tests {
    use super::LeakedCell;

    #[test]
    fn a_leaked_cell_keeps_every_value_it_was_given() {
        static CELL: LeakedCell<String> = LeakedCell::new();
        assert_eq!(CELL.get(), None);
        CELL.set("first".to_string());
        let first = CELL.get().unwrap();
        CELL.set("second".to_string());
        // The earlier reference stays valid after a new value was set.
        assert_eq!(first, "first");
        assert_eq!(CELL.get().map(String::as_str), Some("second"));
        let seen = std::thread::spawn(|| CELL.get().cloned()).join().unwrap();
        assert_eq!(seen.as_deref(), Some("second"));
    }
}
