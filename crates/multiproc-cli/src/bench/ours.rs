//! The multiproc side of each workload, and the floors (raw system calls, memcpy).
//!
//! Every pipe workload starts a child that pins itself, sends a ready message, and only
//! then does the parent (pinned too) start its clock: process start-up is never timed.

use std::hint::black_box;
use std::io;
use std::os::fd::{AsFd, BorrowedFd};
use std::time::{Duration, Instant};

use multiproc::{Connection, Process, StartMethod};
use rustix::io::Errno;

use super::measure::{pid_cpu, self_cpu, Sample};
use rustix::thread::CpuSet;
use serde::de::DeserializeOwned;
use serde::Serialize;

pub type BoxError = Box<dyn std::error::Error>;

/// Where the two peers run: `None` leaves a side to the scheduler.
#[derive(Clone, Copy, Debug)]
pub struct Placement {
    pub parent: Option<usize>,
    pub child: Option<usize>,
}

/// Pins the calling thread to `cpu` (nothing for `None`).
pub fn pin(cpu: Option<usize>) -> io::Result<()> {
    if let Some(cpu) = cpu {
        let mut set = CpuSet::new();
        set.set(cpu);
        rustix::thread::sched_setaffinity(None, &set)?;
    }
    Ok(())
}

/// Pins the calling thread while it lives, then restores its previous CPU set.
struct Pinned(Option<CpuSet>);

impl Pinned {
    fn new(cpu: Option<usize>) -> io::Result<Pinned> {
        let Some(cpu) = cpu else { return Ok(Pinned(None)) };
        let saved = rustix::thread::sched_getaffinity(None)?;
        pin(Some(cpu))?;
        Ok(Pinned(Some(saved)))
    }
}

impl Drop for Pinned {
    fn drop(&mut self) {
        if let Some(saved) = &self.0 {
            let _ = rustix::thread::sched_setaffinity(None, saved);
        }
    }
}

/// A started child that is always reaped: killed first if it still runs when dropped.
struct Reaped(Process);

impl Reaped {
    fn start<A>(target: fn(A), args: A, method: Option<StartMethod>) -> Result<Reaped, BoxError>
    where
        A: Serialize + DeserializeOwned + Send + 'static,
    {
        let mut p = Process::builder(target, args);
        if let Some(m) = method {
            p = p.start_method(m);
        }
        Ok(Reaped(p.start()?))
    }

    /// Waits for the child and checks that it succeeded.
    fn finish(&self) -> Result<(), BoxError> {
        self.0.join()?;
        match self.0.exitcode() {
            Some(0) => Ok(()),
            code => Err(format!(
                "benchmark child failed (exit code {code:?}){}",
                self.0.panic_message().map(|m| format!(": {m}")).unwrap_or_default()
            )
            .into()),
        }
    }
}

impl Drop for Reaped {
    fn drop(&mut self) {
        if self.0.is_alive() {
            let _ = self.0.kill();
        }
        let _ = self.0.join();
    }
}

// --------------------------------------------------------------------------------------
// Raw I/O for the floors

pub(super) fn write_all(fd: BorrowedFd<'_>, mut buf: &[u8]) -> io::Result<()> {
    while !buf.is_empty() {
        match rustix::io::write(fd, buf) {
            Ok(n) => buf = &buf[n..],
            Err(Errno::INTR) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

pub(super) fn read_exact(fd: BorrowedFd<'_>, mut buf: &mut [u8]) -> io::Result<()> {
    while !buf.is_empty() {
        match rustix::io::read(fd, &mut *buf) {
            Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
            Ok(n) => buf = &mut buf[n..],
            Err(Errno::INTR) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

/// Reads and discards exactly `total` bytes, in big reads.
fn drain(fd: BorrowedFd<'_>, mut total: u64) -> io::Result<()> {
    let mut buf = vec![0u8; 64 * 1024];
    while total > 0 {
        let want = buf.len().min(total as usize);
        match rustix::io::read(fd, &mut buf[..want]) {
            Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
            Ok(n) => total -= n as u64,
            Err(Errno::INTR) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

// --------------------------------------------------------------------------------------
// Child targets

/// Echoes `warm` round trips, then `n` more, and sends the CPU seconds of the last `n`.
fn echo_child((conn, n, warm, cpu): (Connection, u64, u64, Option<usize>)) {
    pin(cpu).unwrap();
    conn.send_bytes(b"r").unwrap();
    let mut stamp = self_cpu();
    for i in 0..n + warm {
        if i == warm {
            stamp = self_cpu();
        }
        let m = conn.recv_bytes().unwrap();
        conn.send_bytes(&m).unwrap();
    }
    conn.send(&(self_cpu() - stamp)).unwrap();
}

fn raw_echo_child((conn, n, size, cpu): (Connection, u64, usize, Option<usize>)) {
    pin(cpu).unwrap();
    let fd = conn.as_fd();
    write_all(fd, b"r").unwrap();
    let mut buf = vec![0u8; size];
    for _ in 0..n {
        read_exact(fd, &mut buf).unwrap();
        write_all(fd, &buf).unwrap();
    }
}

/// Receives `n` values, then sends the CPU seconds it took (the parent's "done").
fn sink_values_child((conn, n, cpu): (Connection, u64, Option<usize>)) {
    pin(cpu).unwrap();
    conn.send_bytes(b"r").unwrap();
    let stamp = self_cpu();
    for _ in 0..n {
        black_box(conn.recv::<Vec<u8>>().unwrap());
    }
    conn.send(&(self_cpu() - stamp)).unwrap();
}

/// Receives `n` messages of `size` bytes, then sends the CPU seconds it took.
fn sink_bytes_child((conn, n, size, cpu): (Connection, u64, usize, Option<usize>)) {
    pin(cpu).unwrap();
    conn.send_bytes(b"r").unwrap();
    let stamp = self_cpu();
    for _ in 0..n {
        let m = conn.recv_bytes().unwrap();
        assert_eq!(m.len(), size);
        black_box(m);
    }
    conn.send(&(self_cpu() - stamp)).unwrap();
}

fn raw_sink_child((conn, total, cpu): (Connection, u64, Option<usize>)) {
    pin(cpu).unwrap();
    let fd = conn.as_fd();
    write_all(fd, b"r").unwrap();
    drain(fd, total).unwrap();
    write_all(fd, b"k").unwrap();
}

fn noop_child(_: ()) {}

// --------------------------------------------------------------------------------------
// Workloads

fn expect(got: &[u8], want: &[u8]) -> Result<(), BoxError> {
    if got == want {
        Ok(())
    } else {
        Err(format!("benchmark child sent {got:?} instead of {want:?}").into())
    }
}

/// Sleeps `us` µs before a round trip (nothing for 0).
fn pause(us: u64) {
    if us > 0 {
        std::thread::sleep(Duration::from_micros(us));
    }
}

/// µs per round trip of `size`-byte `send_bytes`/`recv_bytes`, `pause_us` apart (pauses
/// excluded from the time, included in the CPU time).
pub fn pingpong(
    n: u64,
    warm: u64,
    size: usize,
    pause_us: u64,
    place: Placement,
) -> Result<Sample, BoxError> {
    let (conn, theirs) = multiproc::pipe(true)?;
    let child = Reaped::start(echo_child, (theirs, n, warm, place.child), None)?;
    let _pinned = Pinned::new(place.parent)?;
    expect(&conn.recv_bytes()?, b"r")?;
    let msg = vec![0x5au8; size];
    for _ in 0..warm {
        pause(pause_us);
        conn.send_bytes(&msg)?;
        black_box(conn.recv_bytes()?);
    }
    let cpu0 = self_cpu();
    let mut total = Duration::ZERO;
    for _ in 0..n {
        pause(pause_us);
        let t = Instant::now();
        conn.send_bytes(&msg)?;
        black_box(conn.recv_bytes()?);
        total += t.elapsed();
    }
    let cpu = self_cpu() - cpu0 + conn.recv::<f64>()?;
    child.finish()?;
    let secs = total.as_secs_f64();
    Ok(Sample::new(secs * 1e6 / n as f64, n, secs, Some(cpu)))
}

/// The floor of [`pingpong`]: the same exchange with plain `write`/`read` on the socket.
pub fn raw_pingpong(
    n: u64,
    warm: u64,
    size: usize,
    pause_us: u64,
    place: Placement,
) -> Result<f64, BoxError> {
    let (conn, theirs) = multiproc::pipe(true)?;
    let child = Reaped::start(raw_echo_child, (theirs, n + warm, size, place.child), None)?;
    let _pinned = Pinned::new(place.parent)?;
    let fd = conn.as_fd();
    let mut ready = [0u8; 1];
    read_exact(fd, &mut ready)?;
    expect(&ready, b"r")?;
    let msg = vec![0x5au8; size];
    let mut back = vec![0u8; size];
    for _ in 0..warm {
        pause(pause_us);
        write_all(fd, &msg)?;
        read_exact(fd, &mut back)?;
    }
    let mut total = Duration::ZERO;
    for _ in 0..n {
        pause(pause_us);
        let t = Instant::now();
        write_all(fd, &msg)?;
        read_exact(fd, &mut back)?;
        total += t.elapsed();
    }
    child.finish()?;
    Ok(total.as_secs_f64() * 1e6 / n as f64)
}

/// Which call a throughput workload sends with.
#[derive(Clone, Copy, Debug)]
pub enum Api {
    /// `send(&Vec<u8>)` / `recv::<Vec<u8>>()`.
    Send,
    /// `send_bytes` / `recv_bytes`.
    SendBytes,
}

/// Messages per second, one way, `n` messages of `size` bytes.
pub fn tput(n: u64, size: usize, api: Api, place: Placement) -> Result<Sample, BoxError> {
    let (conn, theirs) = multiproc::pipe(true)?;
    let child = match api {
        Api::Send => Reaped::start(sink_values_child, (theirs, n, place.child), None)?,
        Api::SendBytes => Reaped::start(sink_bytes_child, (theirs, n, size, place.child), None)?,
    };
    let _pinned = Pinned::new(place.parent)?;
    expect(&conn.recv_bytes()?, b"r")?;
    let msg = vec![0x5au8; size];
    let (t0, cpu0) = (Instant::now(), self_cpu());
    match api {
        Api::Send => {
            for _ in 0..n {
                conn.send(&msg)?;
            }
        }
        Api::SendBytes => {
            for _ in 0..n {
                conn.send_bytes(&msg)?;
            }
        }
    }
    let child_cpu = conn.recv::<f64>()?; // the child's "done"
    let secs = t0.elapsed().as_secs_f64();
    let cpu = self_cpu() - cpu0 + child_cpu;
    child.finish()?;
    Ok(Sample::new(n as f64 / secs, n, secs, Some(cpu)))
}

/// The floor of [`tput`]: one plain `write` per message, the reader draining in big reads.
pub fn raw_tput(n: u64, size: usize, place: Placement) -> Result<f64, BoxError> {
    let (conn, theirs) = multiproc::pipe(true)?;
    let child = Reaped::start(raw_sink_child, (theirs, n * size as u64, place.child), None)?;
    let _pinned = Pinned::new(place.parent)?;
    let fd = conn.as_fd();
    let mut byte = [0u8; 1];
    read_exact(fd, &mut byte)?;
    expect(&byte, b"r")?;
    let msg = vec![0x5au8; size];
    let t0 = Instant::now();
    for _ in 0..n {
        write_all(fd, &msg)?;
    }
    read_exact(fd, &mut byte)?;
    let elapsed = t0.elapsed();
    expect(&byte, b"k")?;
    child.finish()?;
    Ok(n as f64 / elapsed.as_secs_f64())
}

/// GB/s of `count` messages of `size` bytes sent with `send_bytes`, parent to child.
pub fn send_bytes(count: u64, size: usize, place: Placement) -> Result<Sample, BoxError> {
    let (conn, theirs) = multiproc::pipe(true)?;
    let child = Reaped::start(sink_bytes_child, (theirs, count, size, place.child), None)?;
    let _pinned = Pinned::new(place.parent)?;
    let buf = vec![0x5au8; size];
    expect(&conn.recv_bytes()?, b"r")?;
    let (t0, cpu0) = (Instant::now(), self_cpu());
    for _ in 0..count {
        conn.send_bytes(&buf)?;
    }
    let child_cpu = conn.recv::<f64>()?; // the child's "done"
    let secs = t0.elapsed().as_secs_f64();
    let cpu = self_cpu() - cpu0 + child_cpu;
    child.finish()?;
    Ok(Sample::new((count * size as u64) as f64 / secs / 1e9, count, secs, Some(cpu)))
}

/// The floor of [`send_bytes`]: GB/s of copying `size` bytes within this process.
pub fn memcpy(count: u64, size: usize) -> f64 {
    let src = vec![0x5au8; size];
    let mut dst = vec![0u8; size];
    dst.copy_from_slice(&src); // touch every page before timing
    let t0 = Instant::now();
    for _ in 0..count {
        black_box(&mut dst).copy_from_slice(black_box(&src));
    }
    let elapsed = t0.elapsed();
    (count * size as u64) as f64 / elapsed.as_secs_f64() / 1e9
}

/// ms per start + join of a child that does nothing.
/// CPU: this process, and each child's own (`/proc`), read once it has exited and before
/// it is reaped, untimed.
pub fn start_join(k: u64, method: StartMethod, ballast_mib: usize) -> Result<Sample, BoxError> {
    // Memory the parent has touched: what a fork has to copy the page tables of.
    let ballast = vec![1u8; ballast_mib * super::MIB];
    let (t0, cpu0) = (Instant::now(), self_cpu());
    let (mut untimed, mut children) = (Duration::ZERO, Some(0.0));
    for _ in 0..k {
        let child = Reaped::start(noop_child, (), Some(method))?;
        let exited = wait_exited(&child.0);
        let pause = Instant::now(); // reading /proc is not part of a start + join
        let cpu = exited.and_then(pid_cpu);
        untimed += pause.elapsed();
        children = children.zip(cpu).map(|(a, b)| a + b);
        child.finish()?;
    }
    let secs = (t0.elapsed() - untimed).as_secs_f64();
    let cpu = children.map(|c| c + self_cpu() - cpu0);
    std::hint::black_box(&ballast);
    Ok(Sample::new(secs * 1e3 / k as f64, k, secs, cpu))
}

/// Waits until child `p` has exited, without reaping it (its `/proc` entry stays), and
/// returns its pid (`None` if that fails).
fn wait_exited(p: &Process) -> Option<i32> {
    use rustix::process::{waitid, Pid, WaitId, WaitIdOptions};
    let pid = Pid::from_raw(p.pid()?)?;
    let options = WaitIdOptions::EXITED | WaitIdOptions::NOWAIT;
    loop {
        match waitid(WaitId::Pid(pid), options) {
            Ok(_) => return Some(pid.as_raw_nonzero().get()),
            Err(Errno::INTR) => {}
            Err(_) => return None,
        }
    }
}

/// The floor of a spawn: executing this same binary (`multiproc --version`) and waiting
/// for it, ms each.
pub fn exec_self(k: u64) -> Result<f64, BoxError> {
    let t0 = Instant::now();
    for _ in 0..k {
        let status = std::process::Command::new("/proc/self/exe")
            .arg("--version")
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .status()?;
        if !status.success() {
            return Err(format!("multiproc --version: {status}").into());
        }
    }
    Ok(t0.elapsed().as_secs_f64() * 1e3 / k as f64)
}
