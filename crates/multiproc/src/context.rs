//! Start methods and facts about the current process: Python's `multiprocessing.context`
//! and the module-level functions `current_process`, `parent_process`, `cpu_count`.

use std::sync::atomic::{AtomicU8, Ordering};

use crate::sys::pid::LeakedCell;

/// How a child process is created.
///
/// ```
/// use multiproc::{Process, StartMethod};
///
/// fn hello(_: ()) {}
/// let p = Process::builder(hello, ()).start_method(StartMethod::Fork).start()?;
/// assert!(p.join()?.success());
/// # Ok::<(), multiproc::Error>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum StartMethod {
    /// The default: the child executes this program's binary afresh and runs the target
    /// with its arguments decoded from bytes. Safe in any program, threads included.
    #[default]
    Spawn,
    /// `fork(2)`: the child is a copy of the parent and runs the target at once. Faster,
    /// and arguments need not cross a serializer, but only the forking thread exists in
    /// the child: a lock held by another thread at the moment of the fork stays locked
    /// there forever. Use it in single-threaded programs.
    Fork,
}

static DEFAULT_METHOD: AtomicU8 = AtomicU8::new(0);

/// Sets the start method used by processes that do not choose one (Python's
/// `set_start_method`).
///
/// ```
/// use multiproc::{get_start_method, set_start_method, StartMethod};
/// set_start_method(StartMethod::Spawn);
/// assert_eq!(get_start_method(), StartMethod::Spawn);
/// ```
pub fn set_start_method(method: StartMethod) {
    let code = match method {
        StartMethod::Spawn => 0,
        StartMethod::Fork => 1,
    };
    DEFAULT_METHOD.store(code, Ordering::Relaxed);
}

/// The start method used by processes that do not choose one.
///
/// ```
/// assert_eq!(multiproc::get_start_method(), multiproc::StartMethod::Spawn);
/// ```
pub fn get_start_method() -> StartMethod {
    match DEFAULT_METHOD.load(Ordering::Relaxed) {
        1 => StartMethod::Fork,
        _ => StartMethod::Spawn,
    }
}

/// What a process knows about itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcessInfo {
    /// `"MainProcess"` for a program started from outside, `"Process-N"` (or the name the
    /// parent gave) for a child.
    pub name: String,
    /// The operating system's process id.
    pub pid: i32,
    /// Whether the parent started this process as a daemon.
    pub daemon: bool,
    /// Python's `_identity`: the position of this process in the tree of processes this
    /// library started (empty for the main process, `[2]` for its second child, …).
    pub identity: Vec<u32>,
}

#[derive(Debug, Clone)]
pub(crate) struct Lineage {
    pub(crate) me: ProcessInfo,
    pub(crate) parent: Option<(i32, String)>,
}

/// The lineage of this process, once it is a child; null in a program started from outside.
///
/// A cell of leaked values rather than a mutex: a forked child sets it while other threads of
/// its parent may have held any lock at the moment of the fork. Each set leaks one small
/// allocation (once per process start), so readers never race with a free.
static LINEAGE: LeakedCell<Lineage> = LeakedCell::new();

pub(crate) fn set_lineage(lineage: Lineage) {
    LINEAGE.set(lineage);
}

fn lineage() -> Lineage {
    let pid = crate::sys::pid::pid() as i32;
    match LINEAGE.get() {
        Some(l) => {
            let mut l = l.clone();
            // After a fork the recorded pid may be the parent's.
            l.me.pid = pid;
            l
        }
        None => Lineage {
            me: ProcessInfo {
                name: "MainProcess".to_string(),
                pid,
                daemon: false,
                identity: Vec::new(),
            },
            parent: None,
        },
    }
}

/// The current process (Python's `current_process()`).
///
/// ```
/// let me = multiproc::current_process();
/// assert_eq!(me.name, "MainProcess");
/// assert_eq!(me.pid, std::process::id() as i32);
/// ```
pub fn current_process() -> ProcessInfo {
    lineage().me
}

/// The process that started this one, when this library started it (Python's
/// `parent_process()`): its pid and name.
///
/// ```
/// // In a program started from a shell, there is no multiproc parent.
/// assert!(multiproc::parent_process().is_none());
/// ```
pub fn parent_process() -> Option<ParentProcess> {
    lineage().parent.map(|(pid, name)| ParentProcess { pid, name })
}

/// The parent of the current process, as [`parent_process`] reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParentProcess {
    /// The parent's pid.
    pub pid: i32,
    /// The parent's name.
    pub name: String,
}

/// The number of CPUs in the system (Python's `cpu_count()`).
///
/// ```
/// assert!(multiproc::cpu_count() >= 1);
/// ```
pub fn cpu_count() -> usize {
    std::fs::read_to_string("/sys/devices/system/cpu/online")
        .ok()
        .and_then(|s| count_cpu_list(s.trim()))
        .unwrap_or_else(process_cpu_count)
}

/// The number of CPUs this process may run on (Python 3.13's `process_cpu_count()`).
///
/// ```
/// assert!(multiproc::process_cpu_count() <= multiproc::cpu_count());
/// ```
pub fn process_cpu_count() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// Counts the CPUs in a list such as `0-3,5,7-8`.
fn count_cpu_list(list: &str) -> Option<usize> {
    let mut total = 0;
    for part in list.split(',') {
        match part.split_once('-') {
            Some((a, b)) => {
                let (a, b): (usize, usize) = (a.parse().ok()?, b.parse().ok()?);
                total += b.checked_sub(a)? + 1;
            }
            None => {
                part.parse::<usize>().ok()?;
                total += 1;
            }
        }
    }
    (total > 0).then_some(total)
}

#[cfg(test)]
mod tests {
    use super::count_cpu_list;

    #[test]
    fn cpu_lists_are_counted() {
        assert_eq!(count_cpu_list("0-1"), Some(2));
        assert_eq!(count_cpu_list("0-3,5,7-8"), Some(7));
        assert_eq!(count_cpu_list("0"), Some(1));
        assert_eq!(count_cpu_list("x"), None);
        assert_eq!(count_cpu_list("3-1"), None);
    }
}
