//! Process lifetime: daemons die with their parent (even by SIGKILL), other children do
//! not, and no zombie is left behind.

use std::os::fd::OwnedFd;
use std::time::{Duration, Instant};

use multiproc::{pipe, spawn, Connection, Error, Process, StartMethod};
use rustix::event::{poll, PollFd, PollFlags, Timespec};
use rustix::process::{pidfd_open, Pid, PidfdFlags};

const LONG: Option<Duration> = Some(Duration::from_secs(60));

fn pidfd(pid: i32) -> OwnedFd {
    pidfd_open(Pid::from_raw(pid).unwrap(), PidfdFlags::empty()).expect("pidfd_open")
}

/// Waits up to `timeout` for the process behind `pidfd` to end.
fn ended_within(pidfd: &OwnedFd, timeout: Duration) -> bool {
    let deadline = Instant::now().checked_add(timeout);
    loop {
        let left = deadline.map_or(timeout, |d| d.saturating_duration_since(Instant::now()));
        let ts = Timespec { tv_sec: left.as_secs() as i64, tv_nsec: left.subsec_nanos() as i64 };
        let mut fds = [PollFd::new(pidfd, PollFlags::IN)];
        match poll(&mut fds, Some(&ts)) {
            Ok(n) => return n > 0,
            Err(rustix::io::Errno::INTR) => continue,
            Err(e) => panic!("poll: {e}"),
        }
    }
}

/// Runs in a child: starts a grandchild (daemon or not) that sleeps, reports its pid,
/// then sleeps itself until killed.
fn middle((conn, daemon): (Connection, bool)) {
    let grandchild = Process::builder(|_: ()| std::thread::sleep(Duration::from_secs(120)), ())
        .daemon(daemon)
        .build();
    grandchild.start().expect("start grandchild");
    conn.send(&grandchild.pid().expect("pid")).expect("send pid");
    std::thread::sleep(Duration::from_secs(120));
}

#[test]
fn a_daemon_dies_when_its_parent_is_sigkilled() {
    let (parent, child) = pipe(true).unwrap();
    let p = Process::new(middle, (child, true));
    p.start().unwrap();
    let grandchild: i32 = parent.recv_timeout(Duration::from_secs(60)).unwrap();
    let grandchild_fd = pidfd(grandchild);
    assert!(!ended_within(&grandchild_fd, Duration::ZERO));
    p.kill().unwrap();
    p.join_timeout(LONG.unwrap()).unwrap();
    assert_eq!(p.exitcode(), Some(-9));
    assert!(
        ended_within(&grandchild_fd, Duration::from_secs(30)),
        "the daemon outlived its parent"
    );
}

#[test]
fn a_non_daemon_child_outlives_its_killed_parent() {
    let (parent, child) = pipe(true).unwrap();
    let p = Process::new(middle, (child, false));
    p.start().unwrap();
    let grandchild: i32 = parent.recv_timeout(Duration::from_secs(60)).unwrap();
    let grandchild_fd = pidfd(grandchild);
    p.kill().unwrap();
    p.join_timeout(LONG.unwrap()).unwrap();
    assert!(!ended_within(&grandchild_fd, Duration::from_millis(300)));
    // Clean up the orphan ourselves.
    rustix::process::pidfd_send_signal(&grandchild_fd, rustix::process::Signal::KILL).unwrap();
    assert!(ended_within(&grandchild_fd, Duration::from_secs(30)));
}

#[test]
fn a_daemon_started_from_a_short_lived_thread_outlives_the_thread() {
    let p = std::thread::spawn(|| {
        let p = Process::builder(|_: ()| std::thread::sleep(Duration::from_secs(120)), ())
            .daemon(true)
            .build();
        p.start().unwrap();
        p
    })
    .join()
    .unwrap();
    // The starting thread is gone; the daemon must still run.
    assert!(matches!(
        p.join_timeout(Duration::from_millis(300)),
        Err(multiproc::Error::Timeout(_))
    ));
    assert!(p.is_alive());
    p.kill().unwrap();
    p.join_timeout(LONG.unwrap()).unwrap();
}

fn is_gone(pid: i32) -> bool {
    !std::path::Path::new(&format!("/proc/{pid}")).exists()
}

#[test]
fn a_dropped_running_process_is_reaped_later_not_left_a_zombie() {
    let (parent, child) = pipe(true).unwrap();
    let p = Process::new(
        |conn: Connection| {
            let _: u8 = conn.recv().unwrap();
        },
        child,
    );
    p.start().unwrap();
    let pid = p.pid().unwrap();
    let fd = pidfd(pid);
    drop(p); // still running: handed to the reaper list
    parent.send(&1u8).unwrap();
    assert!(ended_within(&fd, Duration::from_secs(60)));
    // It has exited; it is a zombie until someone reaps it. `active_children` does.
    assert!(!multiproc::active_children().iter().any(|c| c.pid == pid));
    assert!(is_gone(pid), "process {pid} is still in the process table");
}

#[test]
fn a_joined_process_leaves_no_zombie() {
    let p = Process::new(|_: ()| {}, ());
    p.start().unwrap();
    let pid = p.pid().unwrap();
    p.join_timeout(LONG.unwrap()).unwrap();
    assert!(is_gone(pid));
}

/// Runs in a child: makes `prctl(PR_SET_PDEATHSIG)` fail with `EPERM` in this process and
/// its descendants, then forks a daemon, which must arm that signal first and so cannot
/// start. Reports on `conn` from every process that comes back from `start`, and returns
/// the daemon's exit code and the error it reported.
fn fork_a_daemon_that_cannot_arm_its_signal(
    (conn,): (Connection,),
) -> (Option<i32>, Option<String>) {
    use seccompiler::{
        BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter,
        SeccompRule,
    };
    let pdeathsig = SeccompCondition::new(
        0,
        SeccompCmpArgLen::Dword,
        SeccompCmpOp::Eq,
        libc::PR_SET_PDEATHSIG as u64,
    )
    .unwrap();
    let filter = SeccompFilter::new(
        [(libc::SYS_prctl, vec![SeccompRule::new(vec![pdeathsig]).unwrap()])].into(),
        SeccompAction::Allow,
        SeccompAction::Errno(libc::EPERM as u32),
        std::env::consts::ARCH.try_into().unwrap(),
    )
    .unwrap();
    let program: BpfProgram = filter.try_into().unwrap();
    seccompiler::apply_filter(&program).unwrap();

    let daemon =
        Process::builder(|_: ()| {}, ()).daemon(true).start_method(StartMethod::Fork).build();
    let started = daemon.start();
    conn.send(&(std::process::id(), started.is_ok())).unwrap();
    if daemon.join_timeout(LONG.unwrap()).is_err() {
        return (None, None);
    }
    (daemon.exitcode(), daemon.panic_message())
}

#[test]
fn a_forked_child_that_fails_to_set_itself_up_ends_instead_of_returning_to_the_caller() {
    let (parent, child) = pipe(true).unwrap();
    let h = spawn(fork_a_daemon_that_cannot_arm_its_signal, (child,)).unwrap();
    let middle = h.process().pid().unwrap() as u32;
    // Every process that comes back from `start` reports; the pipe ends once all are gone.
    let mut reports = Vec::new();
    loop {
        match parent.recv_timeout::<(u32, bool)>(Duration::from_secs(60)) {
            Ok(report) => reports.push(report),
            Err(Error::Eof) => break,
            Err(e) => panic!("waiting for reports: {e} (so far {reports:?})"),
        }
    }
    assert_eq!(reports, [(middle, true)], "only the parent may return from start()");
    // The daemon ended at once, with the code of a child that could not set itself up, and
    // said why.
    let (exitcode, message) = h.join().unwrap();
    assert_eq!(exitcode, Some(70));
    let message = message.unwrap();
    assert!(message.contains("parent-death signal"), "{message}");
}
