//! Interop with real CPython (stdlib only, unmodified): CPython's
//! `multiprocessing.connection.Client` against our [`Listener`], our [`Client`] against
//! CPython's `Listener`, raw bytes and pickled values both ways, both authentication
//! dialects, and wrong keys.
//!
//! Each test runs for CPython 3.11, 3.12 and 3.13, any patch release (see
//! `common::python` for where interpreters are found). A version that is missing fails
//! the test in CI (`CI=true`); elsewhere its tests pass without running, and the binary
//! writes one line to its stderr naming what it skipped. The Python side is `tests/python/peer.py`; every Python process is killed if it
//! outlives its test's time limit.

use std::collections::{BTreeMap, HashMap};
use std::io::{BufRead, BufReader};
use std::os::fd::OwnedFd;
use std::path::PathBuf;
use std::process::{ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::thread;
use std::time::{Duration, Instant};

use multiproc::connection::{AuthDialect, Client, Listener};
use multiproc::{Codec, Connection, Error};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_bytes::ByteBuf;

mod common;
use common::python::Interpreter;

/// Generous limit for anything that waits on Python.
const LONG: Duration = Duration::from_secs(60);
/// A Python process that runs longer than this is killed and the test fails.
const PYTHON_LIMIT: Duration = Duration::from_secs(180);
const KEY: &[u8] = b"interop key";
const KEY_HEX: &str = "696e7465726f70206b6579";
const OTHER_KEY_HEX: &str = "6f74686572206b6579";

fn script() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/python/peer.py")
}

/// A running `peer.py`, killed (through a pidfd, so never the wrong process) if it
/// outlives [`PYTHON_LIMIT`] or the test.
struct Python {
    version: String,
    pidfd: Option<OwnedFd>,
    lines: Receiver<String>,
    seen: Vec<String>,
    exit: Receiver<(ExitStatus, String)>,
    finished: bool,
    started: Instant,
    _watchdog: mpsc::Sender<()>,
}

impl Python {
    fn start(python: &Interpreter, args: &[&str]) -> Python {
        let version = python.version.as_str();
        let mut child = python
            .command()
            .arg(script())
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", python.program.display()));
        // The child is not reaped before the waiter thread below reaps it, so the pid is
        // still ours here.
        let pidfd = rustix::process::Pid::from_raw(child.id() as i32).and_then(|pid| {
            rustix::process::pidfd_open(pid, rustix::process::PidfdFlags::empty()).ok()
        });
        let stdout = child.stdout.take().expect("stdout is piped");
        let (line_tx, lines) = mpsc::channel();
        thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if line_tx.send(line).is_err() {
                    break;
                }
            }
        });
        // The watchdog kills the process at the time limit even while the test is blocked
        // talking to it (a hung peer then shows up as an error on the Rust side); it ends
        // when `_watchdog` is dropped.
        let (watchdog, stop) = mpsc::channel::<()>();
        if let Some(pidfd) = pidfd.as_ref().and_then(|fd| fd.try_clone().ok()) {
            thread::spawn(move || {
                if let Err(RecvTimeoutError::Timeout) = stop.recv_timeout(PYTHON_LIMIT) {
                    let _ =
                        rustix::process::pidfd_send_signal(&pidfd, rustix::process::Signal::KILL);
                }
            });
        }
        let (exit_tx, exit) = mpsc::channel();
        thread::spawn(move || {
            if let Ok(output) = child.wait_with_output() {
                let _ = exit_tx
                    .send((output.status, String::from_utf8_lossy(&output.stderr).into_owned()));
            }
        });
        Python {
            version: version.to_string(),
            pidfd,
            lines,
            seen: Vec::new(),
            exit,
            finished: false,
            started: Instant::now(),
            _watchdog: watchdog,
        }
    }

    /// The first line printed that starts with `prefix`, without the prefix.
    fn line(&mut self, prefix: &str) -> String {
        let deadline = Instant::now() + LONG;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    self.seen.push(line.clone());
                    if let Some(rest) = line.strip_prefix(prefix) {
                        return rest.trim().to_string();
                    }
                }
                Err(_) => {
                    let (status, stderr) = self.finish_inner();
                    panic!(
                        "CPython {}: no {prefix:?} line; exit {status:?}\nstdout: {:?}\nstderr: {stderr}",
                        self.version, self.seen
                    );
                }
            }
        }
    }

    /// Waits for the process to end (killing it at the time limit) and returns its
    /// status and what it wrote to stderr.
    fn finish_inner(&mut self) -> (Option<ExitStatus>, String) {
        let left = PYTHON_LIMIT.saturating_sub(self.started.elapsed()) + LONG;
        let result = match self.exit.recv_timeout(left) {
            Ok((status, stderr)) => (Some(status), stderr),
            Err(RecvTimeoutError::Timeout) => {
                self.kill();
                let stderr = self.exit.recv_timeout(LONG).map(|r| r.1).unwrap_or_default();
                (None, format!("(killed after {PYTHON_LIMIT:?})\n{stderr}"))
            }
            Err(RecvTimeoutError::Disconnected) => (None, "(lost the process)".into()),
        };
        self.finished = true;
        result
    }

    fn kill(&self) {
        if let Some(pidfd) = &self.pidfd {
            let _ = rustix::process::pidfd_send_signal(pidfd, rustix::process::Signal::KILL);
        }
    }

    /// Waits for the process to end successfully and returns its `RESULT` line.
    fn success(mut self) -> String {
        let (status, stderr) = self.finish_inner();
        // The reader thread may still hold the last lines: read until it ends (at the end
        // of the process's stdout).
        let deadline = Instant::now() + LONG;
        while let Ok(line) =
            self.lines.recv_timeout(deadline.saturating_duration_since(Instant::now()))
        {
            self.seen.push(line);
        }
        let result = self
            .seen
            .iter()
            .rev()
            .find_map(|l| l.strip_prefix("RESULT "))
            .unwrap_or("")
            .to_string();
        assert!(
            status.is_some_and(|s| s.success()),
            "CPython {}: exit {status:?}\nstdout: {:?}\nstderr: {stderr}",
            self.version,
            self.seen
        );
        result
    }
}

impl Drop for Python {
    fn drop(&mut self) {
        if !self.finished {
            // The test failed before waiting: leave no process behind.
            self.kill();
            let _ = self.exit.recv_timeout(LONG);
        }
    }
}

// ------------------------------------------------------------------------------------
// What the Rust side plays in each scenario (peer.py plays the other side)

/// Sends raw messages of several sizes and checks CPython echoes them.
fn drive_echo_bytes(conn: &Connection) {
    conn.send_bytes(b"echo_bytes").unwrap();
    let small = b"hello CPython".to_vec();
    let empty = Vec::new();
    let over_16k: Vec<u8> = (0..20 * 1024 + 7).map(|i| (i % 253) as u8).collect();
    let huge: Vec<u8> = (0..64 * 1024 * 1024).map(|i| (i % 249) as u8).collect();
    for message in [&small, &empty, &over_16k, &huge] {
        conn.send_bytes(message).unwrap();
        let echoed = conn.recv_bytes_timeout(LONG).unwrap();
        assert!(
            echoed == *message,
            "echo of {} bytes differs ({} back)",
            message.len(),
            echoed.len()
        );
    }
}

/// Sends `value` pickled, and checks CPython decoded it as a `python_type` equal to it
/// (CPython answers `(type(obj).__name__, obj)`, which we decode in turn).
fn pickle_echo<T>(conn: &Connection, value: T, python_type: &str) -> usize
where
    T: Serialize + DeserializeOwned + PartialEq + std::fmt::Debug,
{
    conn.send(&value).unwrap_or_else(|e| panic!("encoding {value:?}: {e}"));
    let (name, back): (String, T) =
        conn.recv_timeout(LONG).unwrap_or_else(|e| panic!("decoding the echo of {value:?}: {e}"));
    assert_eq!(name, python_type, "CPython decoded {value:?} as a {name}");
    assert_eq!(back, value);
    1
}

/// Returns how many values were echoed.
fn drive_echo_pickle(conn: Connection) -> usize {
    conn.send_bytes(b"echo_pickle").unwrap();
    let conn = conn.with_codec(Codec::Pickle);
    let mut count = 0;
    count += pickle_echo(&conn, None::<i64>, "NoneType");
    count += pickle_echo(&conn, (), "NoneType");
    count += pickle_echo(&conn, true, "bool");
    count += pickle_echo(&conn, false, "bool");
    for n in [0i64, 1, -1, 255, 256, 65535, 65536, -(1 << 31), (1 << 40), i64::MAX, i64::MIN] {
        count += pickle_echo(&conn, n, "int");
    }
    count += pickle_echo(&conn, 200u8, "int");
    for x in [0.0f64, 1.5, -0.25, 1e300, f64::MIN_POSITIVE] {
        count += pickle_echo(&conn, x, "float");
    }
    count += pickle_echo(&conn, String::new(), "str");
    count += pickle_echo(&conn, "héllo wörld ✓".to_string(), "str");
    count += pickle_echo(&conn, "y".repeat(1000), "str");
    count += pickle_echo(&conn, ByteBuf::from(Vec::new()), "bytes");
    count += pickle_echo(&conn, ByteBuf::from(vec![0u8, 1, 255]), "bytes");
    count += pickle_echo(
        &conn,
        ByteBuf::from((0..=255u8).cycle().take(1000).collect::<Vec<_>>()),
        "bytes",
    );
    count += pickle_echo(&conn, Vec::<i64>::new(), "list");
    count += pickle_echo(&conn, vec![1i64, 2, 3], "list");
    count += pickle_echo(&conn, vec!["a".to_string(), "b".to_string()], "list");
    count += pickle_echo(&conn, vec![vec![1i64], vec![], vec![2, 3]], "list");
    count += pickle_echo(&conn, (1i64, "a".to_string(), 2.5f64), "tuple");
    count += pickle_echo(&conn, (7i64,), "tuple");
    count += pickle_echo(
        &conn,
        (true, None::<i64>, ByteBuf::from(b"x".to_vec()), vec![1.0f64]),
        "tuple",
    );
    count += pickle_echo(&conn, BTreeMap::<String, i64>::new(), "dict");
    count +=
        pickle_echo(&conn, BTreeMap::from([("a".to_string(), 1i64), ("b".to_string(), 2)]), "dict");
    count += pickle_echo(
        &conn,
        HashMap::from([(1i64, "one".to_string()), (2, "two".to_string())]),
        "dict",
    );
    count += pickle_echo(
        &conn,
        BTreeMap::from([("k".to_string(), vec![(1i64, "x".to_string())])]),
        "dict",
    );
    // Messages over 16 KiB.
    count += pickle_echo(&conn, (0..5000i64).collect::<Vec<_>>(), "list");
    count += pickle_echo(&conn, "z".repeat(100_000), "str");
    count += pickle_echo(&conn, ByteBuf::from(vec![0xabu8; 1 << 20]), "bytes");
    count
}

#[derive(Debug, PartialEq, Deserialize)]
struct Nested {
    list: Vec<i64>,
    tuple: (i64, String),
}

fn expect<T: DeserializeOwned + PartialEq + std::fmt::Debug>(
    conn: &Connection,
    index: usize,
    want: T,
) {
    let got: T = conn
        .recv_timeout(LONG)
        .unwrap_or_else(|e| panic!("value #{index} of peer.py's VALUES, expected {want:?}: {e}"));
    assert_eq!(got, want, "value #{index} of peer.py's VALUES");
}

/// Receives `VALUES` of peer.py, pickled by CPython, in order.
fn drive_python_values(conn: Connection) {
    conn.send_bytes(b"python_values").unwrap();
    let c = &conn.with_codec(Codec::Pickle);
    let mut i = 0..;
    let mut n = || i.next().unwrap_or_default();
    expect(c, n(), None::<i64>);
    expect(c, n(), true);
    expect(c, n(), false);
    expect(c, n(), 0i64);
    expect(c, n(), -1i64);
    expect(c, n(), 255i64);
    expect(c, n(), 65535i64);
    expect(c, n(), -(1i64 << 31));
    expect(c, n(), 1i64 << 40);
    expect(c, n(), i64::MAX);
    expect(c, n(), i64::MIN);
    expect(c, n(), 1.5f64);
    let index = n();
    let negative_zero: f64 = c.recv_timeout(LONG).unwrap();
    assert_eq!(negative_zero.to_bits(), (-0.0f64).to_bits(), "value #{index}");
    expect(c, n(), 1e300f64);
    expect(c, n(), String::new());
    expect(c, n(), "h\u{e9}llo w\u{f6}rld \u{2713}".to_string());
    expect(c, n(), "x".repeat(300));
    expect(c, n(), ByteBuf::from(Vec::new()));
    expect(c, n(), ByteBuf::from((0..=255u8).collect::<Vec<_>>()));
    expect(c, n(), Vec::<i64>::new());
    expect(c, n(), vec![1i64, 2, 3]);
    expect(c, n(), (0..2500i64).collect::<Vec<_>>());
    expect(c, n(), (1i64, "a".to_string(), 2.5f64));
    expect(c, n(), Vec::<i64>::new()); // ()
    expect(c, n(), (7i64,));
    expect(c, n(), (1i64, 2i64));
    expect(c, n(), (1i64, 2i64, 3i64));
    expect(c, n(), (1i64, 2i64, 3i64, 4i64));
    expect(c, n(), BTreeMap::<String, i64>::new());
    expect(c, n(), BTreeMap::from([("a".to_string(), 1i64), ("b".to_string(), 2)]));
    expect(c, n(), (0..1500i64).map(|i| (i, i.to_string())).collect::<HashMap<_, _>>());
    expect(c, n(), vec![vec![1i64, 2], vec![3]]);
    expect(c, n(), vec![vec![1i64, 2], vec![1, 2]]); // the same list twice (memo)
    expect(c, n(), Nested { list: vec![1, 2], tuple: (3, "x".to_string()) });
    expect(c, n(), vec![None, Some(1i64), None]);
    // Then peer.py echoes raw bytes: proves the stream is still in step.
    c.send_bytes(b"in step").unwrap();
    assert_eq!(c.recv_bytes_timeout(LONG).unwrap(), b"in step");
}

/// CPython greets with its version; we check it and a short echo.
fn drive_hello(conn: &Connection, version: &str) {
    conn.send_bytes(b"hello").unwrap();
    let greeting = conn.recv_bytes_max_timeout(256, LONG).unwrap();
    assert_eq!(greeting, format!("hello from {version}").into_bytes());
    conn.send_bytes(b"hi").unwrap();
    assert_eq!(conn.recv_bytes_timeout(LONG).unwrap(), b"hi");
}

// ------------------------------------------------------------------------------------
// Tests, for each CPython version

static COUNT: AtomicUsize = AtomicUsize::new(0);

fn unique(tag: &str) -> String {
    format!(
        "multiproc-interop-{}-{tag}-{}",
        std::process::id(),
        COUNT.fetch_add(1, Ordering::Relaxed)
    )
}

/// CPython's Client connects to our Listener three times: raw bytes, pickles both ways.
fn their_client_our_listener(cpython: &Interpreter) {
    let listener = Listener::bind("127.0.0.1:0", Some(KEY)).unwrap();
    let address = listener.address().to_string();
    let python = Python::start(cpython, &["connect", &address, KEY_HEX, "3"]);
    drive_echo_bytes(&listener.accept_timeout(LONG).unwrap());
    let pickles = drive_echo_pickle(listener.accept_timeout(LONG).unwrap());
    drive_python_values(listener.accept_timeout(LONG).unwrap());
    let result = python.success();
    assert_eq!(result, format!("ok echo_bytes:4 echo_pickle:{pickles} python_values:1"));
}

/// Our Client connects to CPython's Listener (port chosen by CPython) three times.
fn our_client_their_listener(cpython: &Interpreter) {
    let mut python = Python::start(cpython, &["listen", "127.0.0.1:0", KEY_HEX, "3"]);
    let address = python.line("ADDRESS ");
    drive_echo_bytes(&Client::connect_timeout(&address, Some(KEY), LONG).unwrap());
    let pickles = drive_echo_pickle(Client::connect_timeout(&address, Some(KEY), LONG).unwrap());
    drive_python_values(Client::connect_timeout(&address, Some(KEY), LONG).unwrap());
    let result = python.success();
    assert_eq!(result, format!("ok echo_bytes:4 echo_pickle:{pickles} python_values:1"));
}

/// Our listener sending 3.11-style 20-byte challenges, and our client doing the same.
fn legacy_dialect_both_ways(cpython: &Interpreter) {
    let version = cpython.version.as_str();
    let listener =
        Listener::bind("127.0.0.1:0", Some(KEY)).unwrap().with_dialect(AuthDialect::Legacy);
    let address = listener.address().to_string();
    let python = Python::start(cpython, &["connect", &address, KEY_HEX, "1"]);
    drive_hello(&listener.accept_timeout(LONG).unwrap(), version);
    assert_eq!(python.success(), "ok hello:1");

    let mut python = Python::start(cpython, &["listen", "127.0.0.1:0", KEY_HEX, "1"]);
    let address = python.line("ADDRESS ");
    let client = Client::new(&address, Some(KEY))
        .unwrap()
        .with_dialect(AuthDialect::Legacy)
        .with_timeout(Some(LONG));
    drive_hello(&client.open().unwrap(), version);
    assert_eq!(python.success(), "ok hello:1");
}

/// Unix socket paths and abstract names, without an authkey on either side.
fn unix_sockets_without_key(cpython: &Interpreter) {
    let version = cpython.version.as_str();
    let dir = std::env::temp_dir().join(unique("dir"));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("py.sock");
    let mut python = Python::start(cpython, &["listen", path.to_str().unwrap(), "-", "1"]);
    let address = python.line("ADDRESS ");
    assert_eq!(address, path.to_str().unwrap());
    drive_hello(&Client::connect_timeout(&address, None, LONG).unwrap(), version);
    assert_eq!(python.success(), "ok hello:1");
    assert!(!path.exists(), "CPython's listener removes its socket file");

    let ours = dir.join("rust.sock");
    let listener = Listener::bind(ours.to_str().unwrap(), None).unwrap();
    let python = Python::start(cpython, &["connect", ours.to_str().unwrap(), "-", "1"]);
    drive_hello(&listener.accept_timeout(LONG).unwrap(), version);
    assert_eq!(python.success(), "ok hello:1");
    drop(listener);
    std::fs::remove_dir(&dir).unwrap();

    let name = format!("@{}", unique("abstract"));
    let listener = Listener::bind(&name, Some(KEY)).unwrap();
    let python = Python::start(cpython, &["connect", &name, KEY_HEX, "1"]);
    drive_hello(&listener.accept_timeout(LONG).unwrap(), version);
    assert_eq!(python.success(), "ok hello:1");
    drop(listener);

    let mut python =
        Python::start(cpython, &["listen", &format!("@{}", unique("py")), KEY_HEX, "1"]);
    let address = python.line("ADDRESS ");
    assert!(address.starts_with('@'), "{address}");
    drive_hello(&Client::connect_timeout(&address, Some(KEY), LONG).unwrap(), version);
    assert_eq!(python.success(), "ok hello:1");
}

/// A wrong key fails on both sides, whoever listens; our listener then accepts CPython
/// with the right key.
fn wrong_key_both_ways(cpython: &Interpreter) {
    let version = cpython.version.as_str();
    let listener = Listener::bind("127.0.0.1:0", Some(KEY)).unwrap();
    let address = listener.address().to_string();
    let python =
        Python::start(cpython, &["connect", &address, OTHER_KEY_HEX, "1", "--expect-auth-failure"]);
    match listener.accept_timeout(LONG) {
        Err(Error::Authentication(_)) => {}
        other => panic!("{other:?}"),
    }
    let result = python.success();
    assert!(result.starts_with("auth_failed"), "{result}");
    let python = Python::start(cpython, &["connect", &address, KEY_HEX, "1"]);
    drive_hello(&listener.accept_timeout(LONG).unwrap(), version);
    assert_eq!(python.success(), "ok hello:1");

    let mut python = Python::start(
        cpython,
        &["listen", "127.0.0.1:0", OTHER_KEY_HEX, "1", "--expect-auth-failure"],
    );
    let address = python.line("ADDRESS ");
    match Client::connect_timeout(&address, Some(KEY), LONG) {
        Err(Error::Authentication(_)) => {}
        other => panic!("{other:?}"),
    }
    let result = python.success();
    assert!(result.starts_with("auth_failed"), "{result}");
}

/// The scenarios, each a module of tests, one per CPython minor version.
const SCENARIOS: [&str; 5] = [
    "their_client_our_listener",
    "our_client_their_listener",
    "legacy_dialect_both_ways",
    "unix_sockets_without_key",
    "wrong_key_both_ways",
];

macro_rules! for_each_version {
    ($($name:ident),* $(,)?) => {
        $(
            mod $name {
                fn run(minor: &str) {
                    let tests = super::SCENARIOS;
                    if let Some(python) = super::common::python::require(minor, "interop_cpython", &tests) {
                        super::$name(&python);
                    }
                }
                #[test]
                fn cpython_3_11() {
                    run("3.11");
                }
                #[test]
                fn cpython_3_12() {
                    run("3.12");
                }
                #[test]
                fn cpython_3_13() {
                    run("3.13");
                }
            }
        )*
    };
}

for_each_version!(
    their_client_our_listener,
    our_client_their_listener,
    legacy_dialect_both_ways,
    unix_sockets_without_key,
    wrong_key_both_ways,
);

/// Names the interpreters found and what is skipped for want of one; fails in CI when one
/// is missing (see `common::python`).
#[test]
fn cpython_interpreters() {
    common::python::check_interpreters("interop_cpython", &SCENARIOS);
}
