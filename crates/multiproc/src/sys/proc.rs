//! Other processes: pidfds of children (signals, reaping), whether a pid is alive, the
//! user id, signal names and numbers.
//!
//! Linux-only here: pidfds (`pidfd_open`, `pidfd_send_signal`, `waitid(P_PIDFD)`) and
//! `/proc/PID/stat`. A second backend would keep a [`PidFd`] as the bare pid (signals by
//! `kill`, reaping by `waitpid`, readiness through a kqueue `EVFILT_PROC` descriptor) and
//! tell liveness with `kill(pid, 0)` plus `proc_pidinfo` for zombies.

use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use rustix::io::Errno;
use rustix::process::{Pid, PidfdFlags, WaitId, WaitIdOptions, WaitIdStatus};

/// A signal this crate sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Signal {
    /// `SIGTERM`.
    Term,
    /// `SIGKILL`.
    Kill,
}

impl Signal {
    fn raw(self) -> rustix::process::Signal {
        match self {
            Signal::Term => rustix::process::Signal::TERM,
            Signal::Kill => rustix::process::Signal::KILL,
        }
    }
}

/// A child process named by a pidfd: readable (for `poll`) once the child has ended, and
/// the handle for signals and reaping, which never reach another process even if the pid
/// is reused.
#[derive(Debug)]
pub(crate) struct PidFd(OwnedFd);

impl PidFd {
    /// A pidfd for the process `pid`.
    pub(crate) fn open(pid: i32) -> io::Result<PidFd> {
        let pid = Pid::from_raw(pid).ok_or_else(|| io::Error::other("pid 0 has no pidfd"))?;
        Ok(PidFd(rustix::process::pidfd_open(pid, PidfdFlags::empty())?))
    }

    /// Sends `signal`; nothing (and no error) once the process has ended.
    pub(crate) fn send(&self, signal: Signal) -> io::Result<()> {
        match rustix::process::pidfd_send_signal(&self.0, signal.raw()) {
            Ok(()) | Err(Errno::SRCH) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// Waits for the child to end and reaps it: its exit code as Python reports it (`N`
    /// after `exit(N)`, `-N` after signal `N`). Resumed after signals.
    pub(crate) fn reap(&self) -> io::Result<i32> {
        loop {
            match rustix::process::waitid(WaitId::PidFd(self.0.as_fd()), WaitIdOptions::EXITED) {
                Err(Errno::INTR) => continue,
                other => return Ok(other?.as_ref().map_or(1, exitcode_of)),
            }
        }
    }

    /// Reaps the child if it has ended: `Ok(None)` while it runs.
    pub(crate) fn try_reap(&self) -> io::Result<Option<i32>> {
        let status = rustix::process::waitid(
            WaitId::PidFd(self.0.as_fd()),
            WaitIdOptions::EXITED | WaitIdOptions::NOHANG,
        )?;
        Ok(status.as_ref().map(exitcode_of))
    }

    /// A duplicate of the descriptor (readable once the child has ended).
    pub(crate) fn try_clone_fd(&self) -> io::Result<OwnedFd> {
        self.0.try_clone()
    }
}

impl AsFd for PidFd {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.0.as_fd()
    }
}

/// Python's exit code for a `waitid` status.
fn exitcode_of(status: &WaitIdStatus) -> i32 {
    if let Some(signal) = status.terminating_signal() {
        -signal
    } else {
        status.exit_status().unwrap_or(1)
    }
}

/// Whether the child `pid` of this process still runs (it exists and has not ended);
/// leaves it unreaped.
pub(crate) fn child_is_running(pid: i32) -> bool {
    let Some(pid) = Pid::from_raw(pid) else { return false };
    matches!(
        rustix::process::waitid(
            WaitId::Pid(pid),
            WaitIdOptions::EXITED | WaitIdOptions::NOHANG | WaitIdOptions::NOWAIT,
        ),
        Ok(None)
    )
}

/// Whether process `pid` is alive: it exists and is not a zombie. Unknown states (no
/// `/proc`, no permission) count as alive, the safe answer for lock recovery.
pub(crate) fn pid_is_alive(pid: i32) -> bool {
    if pid <= 0 {
        return false;
    }
    match proc_stat(pid) {
        Ok(Some(s)) => !s.is_zombie(),
        Ok(None) => false,
        Err(_) => true,
    }
}

/// Whether the process `pid` that started at `start` (0: unknown) still runs. Zombies
/// and dead processes are gone; a pid now used by a later process is gone. When `/proc`
/// cannot tell (not mounted, or hiding other users' processes), `kill(pid, 0)` decides,
/// and a doubt means "alive", so that nothing is ever cleaned on a guess.
pub(crate) fn process_runs(pid: i32, start: u64) -> bool {
    match proc_stat(pid) {
        Ok(Some(s)) => !s.is_zombie() && (start == 0 || s.start == start),
        Ok(None) => pid_exists(pid),
        Err(_) => true,
    }
}

/// This process's pid and start time (0 when `/proc` cannot tell): with the pid, the
/// start time names this process even after the pid is reused. Read from `/proc` once per
/// pid, so a forked child looks itself up again.
pub(crate) fn this_process() -> (u32, u64) {
    use std::sync::atomic::Ordering::SeqCst;
    use std::sync::atomic::{AtomicU32, AtomicU64};
    static PID: AtomicU32 = AtomicU32::new(0);
    static START: AtomicU64 = AtomicU64::new(0);
    let pid = super::pid::pid();
    if PID.load(SeqCst) == pid {
        return (pid, START.load(SeqCst));
    }
    let start = proc_stat(pid as i32).ok().flatten().map_or(0, |s| s.start);
    START.store(start, SeqCst);
    PID.store(pid, SeqCst);
    (pid, start)
}

/// The fields of `/proc/PID/stat` that tell whether a process runs, and which one it is.
pub(crate) struct ProcStat {
    /// The state letter (`R`, `S`, `Z`, …).
    pub(crate) state: char,
    /// The start time, in clock ticks after boot: with the pid, it names one process.
    pub(crate) start: u64,
}

impl ProcStat {
    fn is_zombie(&self) -> bool {
        matches!(self.state, 'Z' | 'X' | 'x')
    }
}

/// Reads `/proc/PID/stat`: `Ok(None)` if there is no such process.
pub(crate) fn proc_stat(pid: i32) -> io::Result<Option<ProcStat>> {
    if pid <= 0 {
        return Ok(None);
    }
    let text = match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(t) => t,
        Err(e) if matches!(e.raw_os_error(), Some(libc::ENOENT) | Some(libc::ESRCH)) => {
            return Ok(None)
        }
        Err(e) => return Err(e),
    };
    // "pid (comm) state ppid …": comm may hold spaces and parentheses, so split after the
    // last ')'. The state is field 3, the start time field 22.
    let bad = || io::Error::new(io::ErrorKind::InvalidData, format!("/proc/{pid}/stat: {text:?}"));
    let after = &text[text.rfind(')').ok_or_else(bad)? + 1..];
    let fields: Vec<&str> = after.split_whitespace().collect();
    let state = fields.first().and_then(|s| s.chars().next()).ok_or_else(bad)?;
    let start = fields.get(19).and_then(|s| s.parse().ok()).ok_or_else(bad)?;
    Ok(Some(ProcStat { state, start }))
}

/// Whether a process `pid` exists (possibly a zombie, possibly another user's), by
/// `kill(pid, 0)`: only "no such process" says no.
pub(crate) fn pid_exists(pid: i32) -> bool {
    match Pid::from_raw(pid) {
        Some(p) => !matches!(rustix::process::test_kill_process(p), Err(Errno::SRCH)),
        None => false,
    }
}

/// The real user id of this process.
pub(crate) fn uid() -> u32 {
    rustix::process::getuid().as_raw()
}

/// The number of `SIGKILL`.
pub(crate) const SIGKILL: i32 = libc::SIGKILL;

/// The C name (`"SIGTERM"`) of signal number `signal`, for the common signals.
pub(crate) fn signal_c_name(signal: i32) -> Option<&'static str> {
    Some(match signal {
        libc::SIGHUP => "SIGHUP",
        libc::SIGINT => "SIGINT",
        libc::SIGQUIT => "SIGQUIT",
        libc::SIGILL => "SIGILL",
        libc::SIGTRAP => "SIGTRAP",
        libc::SIGABRT => "SIGABRT",
        libc::SIGBUS => "SIGBUS",
        libc::SIGFPE => "SIGFPE",
        libc::SIGKILL => "SIGKILL",
        libc::SIGUSR1 => "SIGUSR1",
        libc::SIGSEGV => "SIGSEGV",
        libc::SIGUSR2 => "SIGUSR2",
        libc::SIGPIPE => "SIGPIPE",
        libc::SIGALRM => "SIGALRM",
        libc::SIGTERM => "SIGTERM",
        libc::SIGXCPU => "SIGXCPU",
        libc::SIGXFSZ => "SIGXFSZ",
        libc::SIGSYS => "SIGSYS",
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_is_alive_and_has_a_start_time() {
        let me = crate::sys::pid::pid() as i32;
        let stat = proc_stat(me).unwrap().unwrap();
        assert!(pid_is_alive(me));
        assert!(process_runs(me, stat.start));
        assert!(!process_runs(me, stat.start + 1), "a different start time is another process");
    }
}
