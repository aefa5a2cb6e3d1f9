//! The operating-system calls of this module that do not go through `sys/` yet: this
//! process's pid, and whether a process still runs (from `/proc/PID/stat`, or
//! `kill(pid, 0)`). They sit together so that they can move into `sys/` in one piece.

use std::io;

/// This process's pid.
pub(super) fn current_pid() -> i32 {
    rustix::process::getpid().as_raw_nonzero().get()
}

/// The fields of `/proc/PID/stat` that tell whether a process runs, and which one it is.
pub(super) struct ProcStat {
    pub(super) state: char,
    pub(super) start: u64,
}

/// Reads `/proc/PID/stat`: `Ok(None)` if there is no such process.
pub(super) fn proc_stat(pid: i32) -> io::Result<Option<ProcStat>> {
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

/// Whether the process `pid` that started at `start` (0: unknown) still runs. Zombies
/// and dead processes are gone; a pid now used by a later process is gone. When `/proc`
/// cannot tell (not mounted, or hiding other users' processes), `kill(pid, 0)` decides,
/// and a doubt means "alive", so that nothing is ever cleaned on a guess.
pub(super) fn alive(pid: i32, start: u64) -> bool {
    match proc_stat(pid) {
        Ok(Some(s)) => !matches!(s.state, 'Z' | 'X' | 'x') && (start == 0 || s.start == start),
        Ok(None) => match rustix::process::Pid::from_raw(pid) {
            Some(p) => {
                !matches!(rustix::process::test_kill_process(p), Err(rustix::io::Errno::SRCH))
            }
            None => false,
        },
        Err(_) => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_is_alive_and_has_a_start_time() {
        let me = current_pid();
        let stat = proc_stat(me).unwrap().unwrap();
        assert!(alive(me, stat.start));
        assert!(!alive(me, stat.start + 1), "a different start time is another process");
    }
}
