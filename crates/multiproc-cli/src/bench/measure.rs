//! What one measurement reports (the row's figure, and the wall and CPU time behind it),
//! and the clocks that count CPU time.
//!
//! CPU time is user + system time of every participating process over the timed window.
//! Each process counts its own where the bench controls its code (a worker stamps
//! [`self_cpu`] when the window opens and reports the difference when it closes); a
//! library process the bench does not control (a manager's server, a pool's workers, a
//! started child that has exited but is not yet reaped) is read from
//! `/proc/<pid>/task/*/schedstat`, nanoseconds of run time of each thread.

use std::time::Duration;

use rustix::time::{clock_gettime, ClockId};

/// One measurement of a row.
#[derive(Clone, Copy, Debug)]
pub struct Sample {
    /// The row's figure, in its unit.
    pub value: f64,
    /// Operations in the timed window (round trips, items, starts, tasks…).
    pub ops: f64,
    /// Seconds of the timed window.
    pub wall: f64,
    /// CPU seconds (user + system) of every participating process over the window.
    pub cpu: Option<f64>,
}

impl Sample {
    /// A sample of `ops` operations in `wall` seconds costing `cpu` CPU seconds.
    pub fn new(value: f64, ops: u64, wall: f64, cpu: Option<f64>) -> Sample {
        Sample { value, ops: ops as f64, wall, cpu }
    }

    /// Wall seconds per operation.
    pub fn wall_per_op(&self) -> f64 {
        self.wall / self.ops
    }

    /// CPU seconds per operation, when counted.
    pub fn cpu_per_op(&self) -> Option<f64> {
        self.cpu.map(|c| c / self.ops)
    }
}

impl From<f64> for Sample {
    /// A bare figure: one operation, no time counted.
    fn from(value: f64) -> Sample {
        Sample { value, ops: 1.0, wall: f64::NAN, cpu: None }
    }
}

/// CPU seconds (user + system) this process, all its threads, has used so far.
pub fn self_cpu() -> f64 {
    let t = clock_gettime(ClockId::ProcessCPUTime);
    Duration::new(t.tv_sec as u64, t.tv_nsec as u32).as_secs_f64()
}

/// CPU seconds process `pid` has run so far: the sum over its live threads of
/// `/proc/<pid>/task/<tid>/schedstat` (nanoseconds). `None` if the process cannot be
/// read. A thread that exits while the threads are listed is left out of the sum: its
/// `schedstat` is gone by the time it would be read, and that is no reason to lose the
/// others.
pub fn pid_cpu(pid: i32) -> Option<f64> {
    let first = |text: String| text.split_whitespace().next()?.parse::<u64>().ok();
    // The leader's own file: it answers whether the process is there at all.
    let leader = std::fs::read_to_string(format!("/proc/{pid}/schedstat")).ok();
    leader.and_then(first)?;
    let mut ns = 0u64;
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).ok()? {
        let Ok(task) = task else { continue };
        if let Some(n) = std::fs::read_to_string(task.path().join("schedstat")).ok().and_then(first)
        {
            ns += n;
        }
    }
    Some(ns as f64 * 1e-9)
}

/// The summed [`pid_cpu`] of `pids`; `None` if any cannot be read.
pub fn pids_cpu(pids: &[i32]) -> Option<f64> {
    pids.iter().map(|&p| pid_cpu(p)).sum()
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use super::*;

    /// Burns CPU in this thread until `self_cpu` has grown by `secs`; fails after 10 s of
    /// wall time.
    fn burn(secs: f64) -> f64 {
        let (start, deadline) = (self_cpu(), Instant::now() + Duration::from_secs(10));
        let mut x = 0u64;
        while self_cpu() - start < secs {
            for i in 0..10_000u64 {
                x = std::hint::black_box(x.wrapping_mul(31).wrapping_add(i));
            }
            assert!(Instant::now() < deadline, "20 ms of CPU took more than 10 s");
        }
        self_cpu() - start
    }

    #[test]
    fn this_process_cpu_time_grows_with_work() {
        let used = burn(0.02);
        assert!((0.02..1.0).contains(&used), "{used}");
    }

    #[test]
    fn a_pids_cpu_time_is_read_from_proc_and_grows() {
        // A child that only spins: its CPU time is its own, whatever the other tests'
        // threads in this process do meanwhile.
        let mut child = std::process::Command::new("sh")
            .args(["-c", "while :; do :; done"])
            .spawn()
            .expect("spawn sh");
        let pid = child.id() as i32;
        let before = pid_cpu(pid).expect("/proc/<pid>/task/*/schedstat of the child");
        let deadline = Instant::now() + Duration::from_secs(30);
        let grown = loop {
            let now = pids_cpu(&[pid]).expect("schedstat of the running child");
            if now - before >= 0.015 {
                break Ok(now);
            }
            if Instant::now() > deadline {
                break Err(format!("the child's CPU time stayed at {before} -> {now} for 30 s"));
            }
            std::thread::sleep(Duration::from_millis(5));
        };
        child.kill().expect("kill the child");
        child.wait().expect("reap the child");
        grown.unwrap();
        assert_eq!(pid_cpu(pid), None, "a reaped process has no schedstat");
        assert_eq!(pid_cpu(i32::MAX), None, "no such process");
    }

    #[test]
    fn a_thread_that_exits_does_not_spoil_the_sum() {
        let me = std::process::id() as i32;
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let churn = {
            let stop = stop.clone();
            std::thread::spawn(move || {
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    std::thread::spawn(|| ()).join().unwrap();
                }
            })
        };
        let reads = (0..500).filter(|_| pid_cpu(me).is_some()).count();
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        churn.join().unwrap();
        assert_eq!(reads, 500, "every read of a live process gives a figure");
    }

    #[test]
    fn a_sample_gives_times_per_operation() {
        let s = Sample::new(5.0, 4, 2.0, Some(1.0));
        assert_eq!((s.wall_per_op(), s.cpu_per_op()), (0.5, Some(0.25)));
        let bare = Sample::from(3.0);
        assert_eq!((bare.value, bare.cpu_per_op()), (3.0, None));
    }
}
