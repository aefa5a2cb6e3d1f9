//! CPUs: yielding the processor, and the set of CPUs the calling thread may run on.
//!
//! The CPU a thread runs on right now is [`super::pid::cpu`]. Affinity is Linux's
//! `sched_{get,set}affinity` of the calling thread; a backend without it (macOS has only
//! affinity *hints*) may report no set, which callers treat as "do not steer".

use std::io;

/// Gives the processor to another runnable thread, if any (`sched_yield`).
pub(crate) fn yield_now() {
    rustix::thread::sched_yield();
}

/// A set of CPUs, as the scheduler's affinity mask of a thread.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) struct CpuSet(rustix::thread::CpuSet);

impl CpuSet {
    /// The CPUs the calling thread may run on.
    pub(crate) fn of_this_thread() -> io::Result<CpuSet> {
        Ok(CpuSet(rustix::thread::sched_getaffinity(None)?))
    }

    /// How many CPUs the set holds.
    pub(crate) fn count(&self) -> u32 {
        self.0.count()
    }

    /// This set without `cpu`; `None` when `cpu` is beyond what a set can name.
    pub(crate) fn without(&self, cpu: usize) -> Option<CpuSet> {
        if cpu >= rustix::thread::CpuSet::MAX_CPU {
            return None;
        }
        let mut set = self.0;
        set.unset(cpu);
        Some(CpuSet(set))
    }

    /// Restricts the calling thread to this set.
    pub(crate) fn apply_to_this_thread(&self) -> io::Result<()> {
        Ok(rustix::thread::sched_setaffinity(None, &self.0)?)
    }
}

impl std::fmt::Debug for CpuSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("CpuSet").field(&self.count()).finish()
    }
}
