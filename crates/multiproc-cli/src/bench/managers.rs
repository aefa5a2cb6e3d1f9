//! Manager rows: a set + get round trip through a managed dict (local Unix socket, and
//! TCP loopback), and the cost of starting and stopping a manager. CPython's side runs
//! `multiprocessing.Manager()` / `SyncManager` in a `python3` of its own (the script is
//! below), one process per sample.

use std::process::Command;
use std::time::Instant;

use multiproc::Manager;

use super::ours::BoxError;

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
];

const WARM: u64 = 200;
const KEY: &[u8] = b"multiproc bench";

fn dict_ops(m: &Manager, n: u64) -> Result<f64, BoxError> {
    let d = m.dict::<String, u64>()?;
    for i in 0..WARM {
        d.set("k", &i)?;
        d.get("k")?;
    }
    let t = Instant::now();
    for i in 0..n {
        d.set("k", &i)?;
        if d.get("k")? != Some(i) {
            return Err("the dict lost a value".into());
        }
    }
    Ok(t.elapsed().as_secs_f64() * 1e6 / n as f64)
}

/// Our number for `op` over `n` operations (start-ups for [`Op::Startup`]).
pub fn ours(op: Op, n: u64) -> Result<f64, BoxError> {
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
            let t = Instant::now();
            for _ in 0..n {
                let m = Manager::start()?;
                m.dict::<u8, u8>()?;
                m.shutdown()?;
            }
            Ok(t.elapsed().as_secs_f64() * 1e3 / n as f64)
        }
    }
}

const SCRIPT: &str = r#"
import sys, time
import multiprocessing as mp
from multiprocessing.managers import SyncManager

def dict_ops(m, n):
    d = m.dict()
    for i in range(200):
        d['k'] = i
        d['k']
    t = time.perf_counter()
    for i in range(n):
        d['k'] = i
        assert d['k'] == i
    return (time.perf_counter() - t) / n * 1e6

def main(op, n):
    if op == 'startup':
        t = time.perf_counter()
        for _ in range(n):
            m = mp.Manager()
            m.dict()
            m.shutdown()
        return (time.perf_counter() - t) / n * 1e3
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
    print(main(sys.argv[1], int(sys.argv[2])))
"#;

/// CPython's number for `op` over `n` operations.
pub fn cpython(op: Op, n: u64) -> Result<f64, String> {
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
    text.trim().parse::<f64>().map_err(|e| format!("python3 printed {text:?}: {e}"))
}
