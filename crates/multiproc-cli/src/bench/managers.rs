//! Manager rows: a set + get round trip through a managed dict (local Unix socket, and
//! TCP loopback), and the cost of starting and stopping a manager. CPython's side runs
//! `multiprocessing.Manager()` / `SyncManager` in a `python3` of its own (the script is
//! below), one process per sample.

use std::process::Command;
use std::time::{Duration, Instant};

use multiproc::Manager;

use super::measure::{pid_cpu, self_cpu, Sample};
use super::ours::{BoxError, Placement};
use super::Floor;

/// The manager workloads.
#[derive(Clone, Copy)]
pub enum Op {
    /// µs per `d[k] = i; d[k]` on a manager started locally.
    DictOpLocal,
    /// The same on a manager served over TCP loopback.
    DictOpTcp,
    /// ms per start + create a dict + shutdown.
    Startup,
}

pub const NOTES: &[&str] = &[
    "manager rows: dict_op = one d[k] = v plus one d[k] (two round trips to the server process), after",
    "200 warm-up pairs; _local on the default transport (ours: abstract Unix socket; CPython:",
    "Manager(), a Unix socket), _tcp on 127.0.0.1; startup = Manager() + dict() + shutdown().",
    "manager ceiling: two spinning hand-offs of one cache line between two pinned processes per",
    "operation. Baseline: two raw 32-byte round trips with a child process per operation (_local: Unix",
    "socket, _tcp: TCP loopback). Ours locally uses shared-memory queues, so it can beat that baseline.",
    "dict_op figures are per pair: one set or one get alone costs about half (one round trip).",
];

const WARM: u64 = 200;
const KEY: &[u8] = b"multiproc bench";

/// µs per set + get pair; CPU of this process and of the server (`/proc`) meanwhile.
fn dict_ops(m: &Manager, n: u64) -> Result<Sample, BoxError> {
    let d = m.dict::<String, u64>()?;
    for i in 0..WARM {
        d.set("k", &i)?;
        d.get("k")?;
    }
    let server = i32::try_from(m.server_pid()?)?;
    let (t, cpu0, server0) = (Instant::now(), self_cpu(), pid_cpu(server));
    for i in 0..n {
        d.set("k", &i)?;
        if d.get("k")? != Some(i) {
            return Err("the dict lost a value".into());
        }
    }
    let secs = t.elapsed().as_secs_f64();
    let cpu = server0.zip(pid_cpu(server)).map(|(a, b)| b - a + self_cpu() - cpu0);
    Ok(Sample::new(secs * 1e6 / n as f64, n, secs, cpu))
}

/// Our number for `op` over `n` operations (start-ups for [`Op::Startup`]).
pub fn ours(op: Op, n: u64) -> Result<Sample, BoxError> {
    match op {
        Op::DictOpLocal => {
            let m = Manager::start()?;
            let r = dict_ops(&m, n);
            m.shutdown()?;
            r
        }
        Op::DictOpTcp => {
            let m = Manager::serve("127.0.0.1:0", KEY)?;
            let r = dict_ops(&m, n);
            m.shutdown()?;
            r
        }
        Op::Startup => {
            // CPU: this process throughout, and the server (`/proc`) until just before its
            // shutdown, read untimed.
            let (t, cpu0) = (Instant::now(), self_cpu());
            let (mut untimed, mut servers) = (Duration::ZERO, Some(0.0));
            for _ in 0..n {
                let m = Manager::start()?;
                m.dict::<u8, u8>()?;
                let pause = Instant::now();
                let server = pid_cpu(i32::try_from(m.server_pid()?)?);
                servers = servers.zip(server).map(|(a, b)| a + b);
                untimed += pause.elapsed();
                m.shutdown()?;
            }
            let secs = (t.elapsed() - untimed).as_secs_f64();
            let cpu = servers.map(|s| s + self_cpu() - cpu0);
            Ok(Sample::new(secs * 1e3 / n as f64, n, secs, cpu))
        }
    }
}

const SCRIPT: &str = r#"
import os, sys, time
import multiprocessing as mp
from multiprocessing.managers import SyncManager

def pid_cpu(pid):
    total = 0
    for tid in os.listdir('/proc/%d/task' % pid):
        try:
            with open('/proc/%d/task/%s/schedstat' % (pid, tid)) as f:
                total += int(f.read().split()[0])
        except (FileNotFoundError, ProcessLookupError):
            pass  # the thread exited while the threads were listed
    return total * 1e-9

def dict_ops(m, n):
    d = m.dict()
    for i in range(200):
        d['k'] = i
        d['k']
    server = m._process.pid
    t, c, s = time.perf_counter(), time.process_time(), pid_cpu(server)
    for i in range(n):
        d['k'] = i
        assert d['k'] == i
    wall = time.perf_counter() - t
    cpu = time.process_time() - c + pid_cpu(server) - s
    return wall / n * 1e6, n, wall, cpu

def main(op, n):
    if op == 'startup':
        t, c, untimed, servers = time.perf_counter(), time.process_time(), 0.0, 0.0
        for _ in range(n):
            m = mp.Manager()
            m.dict()
            pause = time.perf_counter()
            servers += pid_cpu(m._process.pid)
            untimed += time.perf_counter() - pause
            m.shutdown()
        wall = time.perf_counter() - t - untimed
        return wall / n * 1e3, n, wall, time.process_time() - c + servers
    if op == 'tcp':
        m = SyncManager(address=('127.0.0.1', 0), authkey=b'multiproc bench')
        m.start()
    else:
        m = mp.Manager()
    try:
        return dict_ops(m, n)
    finally:
        m.shutdown()

if __name__ == '__main__':
    print(*main(sys.argv[1], int(sys.argv[2])))
"#;

/// CPython's sample for `op` over `n` operations.
pub fn cpython(op: Op, n: u64) -> Result<Sample, String> {
    let name = match op {
        Op::DictOpLocal => "local",
        Op::DictOpTcp => "tcp",
        Op::Startup => "startup",
    };
    let out = Command::new("python3")
        .args(["-c", SCRIPT, name, &n.to_string()])
        .output()
        .map_err(|e| format!("starting python3: {e}"))?;
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        return Err(format!("python3 failed: {}", err.lines().last().unwrap_or("")));
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let nums = text
        .split_whitespace()
        .map(str::parse::<f64>)
        .collect::<Result<Vec<f64>, _>>()
        .map_err(|e| format!("python3 printed {text:?}: {e}"))?;
    match nums[..] {
        [value, ops, wall, cpu] if value > 0.0 && ops > 0.0 => {
            Ok(Sample { value, ops, wall, cpu: Some(cpu) })
        }
        _ => Err(format!("python3 printed {text:?}")),
    }
}

/// Echoes `n` messages of `size` bytes on a raw stream (the floor's server side).
fn echo<S: std::io::Read + std::io::Write>(
    mut stream: S,
    n: u64,
    size: usize,
) -> std::io::Result<()> {
    let mut buf = vec![0u8; size];
    for _ in 0..n {
        stream.read_exact(&mut buf)?;
        stream.write_all(&buf)?;
    }
    Ok(())
}

fn tcp_echo_child((port, n): (u16, u64)) {
    let stream = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect");
    stream.set_nodelay(true).expect("nodelay");
    echo(stream, n, 32).expect("echo");
}

fn unix_echo_child((conn, n): (multiproc::Connection, u64)) {
    let fd: std::os::fd::OwnedFd =
        std::os::fd::AsFd::as_fd(&conn).try_clone_to_owned().expect("dup");
    echo(std::os::unix::net::UnixStream::from(fd), n, 32).expect("echo");
}

/// The floors of `op`: two spinning cache-line hand-offs (the ceiling of two round trips
/// between processes), and two raw round trips of 32 bytes per operation (what a set +
/// get costs at the very least over a socket): over TCP loopback for the TCP row, over a
/// Unix socket for the local row. The peer is a child process, as a manager's server is.
pub fn floors(op: Op, n: u64, place: Placement) -> Result<Vec<Floor>, BoxError> {
    if let Op::Startup = op {
        return Ok(Vec::new());
    }
    // Two hand-offs per operation: a set and a get are a round trip each.
    let trips = super::ceilings::spin_pingpong(2 * n, place)?;
    let ceiling = Floor::ceiling(
        "two spinning hand-offs of one cache line between two pinned processes",
        Sample { value: 2.0 * trips.value, ops: trips.ops / 2.0, ..trips },
    );
    let (what, value) = match op {
        Op::DictOpTcp => ("two raw 32-byte round trips on TCP loopback", socket_floor(op, n)?),
        _ => ("two raw 32-byte round trips on a Unix socket", socket_floor(op, n)?),
    };
    Ok(vec![ceiling, Floor::baseline(what, value)])
}

/// µs per two raw round trips of 32 bytes on the row's kind of socket.
fn socket_floor(op: Op, n: u64) -> Result<f64, BoxError> {
    let trips = 2 * (n + WARM);
    let mut buf = [0u8; 32];
    let mut measure = |stream: &mut dyn ReadWrite| -> Result<f64, BoxError> {
        let mut start = Instant::now();
        for i in 0..trips {
            if i == 2 * WARM {
                start = Instant::now();
            }
            stream.write_all(&buf)?;
            stream.read_exact(&mut buf)?;
        }
        Ok(start.elapsed().as_secs_f64() * 1e6 / n as f64)
    };
    match op {
        Op::DictOpTcp => {
            let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
            let port = listener.local_addr()?.port();
            let child = multiproc::spawn(tcp_echo_child, (port, trips))?;
            let (mut stream, _) = listener.accept()?;
            stream.set_nodelay(true)?;
            let result = measure(&mut stream);
            child.join()?;
            result
        }
        Op::DictOpLocal => {
            let (ours, theirs) = multiproc::pipe(true)?;
            let child = multiproc::spawn(unix_echo_child, (theirs, trips))?;
            let fd: std::os::fd::OwnedFd = std::os::fd::AsFd::as_fd(&ours).try_clone_to_owned()?;
            let mut stream = std::os::unix::net::UnixStream::from(fd);
            let result = measure(&mut stream);
            child.join()?;
            result
        }
        Op::Startup => Err("manager start-up has no socket floor".into()),
    }
}

/// A stream to measure on.
trait ReadWrite: std::io::Read + std::io::Write {}
impl<T: std::io::Read + std::io::Write> ReadWrite for T {}

/// The manager targets, checked against this run. The local target is per dict
/// operation; the row times a set + get pair, which is checked against it whole.
pub fn targets(rows: &[super::Row]) -> Vec<String> {
    let find = |name: &str| super::find_row(rows, name);
    let mut out = Vec::new();
    if let Some(r) = find("manager_dict_op_local") {
        out.push(format!(
            "[{}] local manager dict operation <= 5 µs: {:.2} µs per set + get pair",
            super::mark(r.multiproc <= 5.0),
            r.multiproc
        ));
    }
    if let Some(f) = find("manager_dict_op_tcp")
        .and_then(|r| Some(r.multiproc / r.floor_of(super::FloorKind::Baseline)?))
    {
        out.push(format!(
            "[{}] manager dict operation over TCP within 1.2x of raw TCP round trips: {f:.2}x",
            super::mark(f <= 1.2)
        ));
    }
    if let Some(r) = find("manager_startup") {
        out.push(format!(
            "[{}] manager start-up <= 5 ms: {:.2} ms",
            super::mark(r.multiproc <= 5.0),
            r.multiproc
        ));
    }
    out
}
