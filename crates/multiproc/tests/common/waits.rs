//! Waiting for states other processes show in `/proc`, instead of sleeping and hoping:
//! a thread asleep in a futex wait, all of a process's threads asleep.

use std::time::{Duration, Instant};

/// How long a test waits for a state before it fails.
pub const STATE_DEADLINE: Duration = Duration::from_secs(60);

/// `futex(2)` on x86_64 and aarch64 (the numbers `/proc/PID/task/TID/syscall` shows).
#[cfg(target_arch = "x86_64")]
const SYS_FUTEX: u64 = 202;
#[cfg(target_arch = "aarch64")]
const SYS_FUTEX: u64 = 98;
const FUTEX_WAIT: u64 = 0;
const FUTEX_WAIT_BITSET: u64 = 9;
const FUTEX_PRIVATE_FLAG: u64 = 128;
const FUTEX_CLOCK_REALTIME: u64 = 256;

/// A thread asleep in a futex wait.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FutexWait {
    pub tid: u32,
    /// A process-private futex (`std`'s Mutex and Condvar), not a shared one (the
    /// library's process-shared locks, events and queues).
    pub private: bool,
    /// With a timeout.
    pub timed: bool,
}

/// The threads of `pid` asleep in a futex wait now. Needs the right to trace `pid`
/// (a child of ours, or the same user without Yama restrictions).
pub fn futex_waits(pid: u32) -> Vec<FutexWait> {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else { return Vec::new() };
    let mut waits = Vec::new();
    for task in tasks.flatten() {
        let Some(tid) = task.file_name().to_str().and_then(|t| t.parse().ok()) else { continue };
        // "nr arg1 … arg6 sp pc" in hex (decimal nr), "running", or "-1 sp pc".
        let Ok(text) = std::fs::read_to_string(task.path().join("syscall")) else { continue };
        let fields: Vec<&str> = text.split_whitespace().collect();
        if fields.len() < 7 || fields[0].parse::<u64>() != Ok(SYS_FUTEX) {
            continue;
        }
        let hex = |s: &str| u64::from_str_radix(s.trim_start_matches("0x"), 16).ok();
        let (Some(op), Some(timeout)) = (hex(fields[2]), hex(fields[4])) else { continue };
        let command = op & !(FUTEX_PRIVATE_FLAG | FUTEX_CLOCK_REALTIME);
        if command != FUTEX_WAIT && command != FUTEX_WAIT_BITSET {
            continue;
        }
        // Asleep, not on its way in or out.
        let asleep = std::fs::read_to_string(task.path().join("stat"))
            .ok()
            .and_then(|s| s.rsplit(')').next().map(|r| r.trim_start().starts_with('S')))
            .unwrap_or(false);
        if asleep {
            waits.push(FutexWait {
                tid,
                private: op & FUTEX_PRIVATE_FLAG != 0,
                timed: timeout != 0,
            });
        }
    }
    waits
}

/// Threads of `pid` asleep on a process-shared futex (a lock, semaphore, event,
/// condition or queue of the library).
pub fn shared_futex_sleepers(pid: u32) -> usize {
    futex_waits(pid).iter().filter(|w| !w.private).count()
}

/// Threads of `pid` asleep on a process-private futex with a timeout: in a manager
/// server, the calls blocked on an object (they wait on a `Condvar` in slices).
pub fn timed_private_futex_sleepers(pid: u32) -> usize {
    timed_private_futex_threads(pid).len()
}

/// The threads of `pid` that [`timed_private_futex_sleepers`] counts.
pub fn timed_private_futex_threads(pid: u32) -> Vec<u32> {
    futex_waits(pid).iter().filter(|w| w.private && w.timed).map(|w| w.tid).collect()
}

/// Whether thread `tid` of process `pid` still exists.
pub fn thread_exists(pid: u32, tid: u32) -> bool {
    std::path::Path::new(&format!("/proc/{pid}/task/{tid}")).exists()
}

/// Polls `state` until it holds; fails the test, saying `what` it waited for, after
/// [`STATE_DEADLINE`].
pub fn wait_until(what: &str, mut state: impl FnMut() -> bool) {
    let started = Instant::now();
    while !state() {
        assert!(started.elapsed() < STATE_DEADLINE, "waited {STATE_DEADLINE:?} for {what}");
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// Whether every thread of `pid` is asleep (state `S`), none running.
pub fn all_threads_asleep(pid: u32) -> bool {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else { return false };
    let mut any = false;
    for task in tasks.flatten() {
        any = true;
        let Ok(stat) = std::fs::read_to_string(task.path().join("stat")) else { return false };
        if !stat.rsplit(')').next().is_some_and(|r| r.trim_start().starts_with('S')) {
            return false;
        }
    }
    any
}
