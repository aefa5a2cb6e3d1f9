//! A Rust process and a Python process on one queue: the queue speaks pickle
//! (`Queue::with_codec(0, Codec::Pickle)`), so the Python package's `multiproc.Queue`
//! reads and writes the same records, and values of the nine kinds that both languages
//! share cross it both ways: `None`, `bool`, `int`, `float`, `str`, `bytes`, `list`,
//! `tuple` and `dict`.
//!
//! Run by Python, with the descriptor of a `multiproc.Queue` it made passed down
//! (`subprocess.Popen([peer, str(q.export_fd())], pass_fds=[q.export_fd()])`):
//! 1. it takes the value Python put on Python's queue and checks it is [`from_python`];
//! 2. it puts [`from_rust`] on Python's queue;
//! 3. it makes a pickle queue of its own, puts [`from_rust`] on it, and prints its pid
//!    and the queue's descriptor: Python opens `/proc/<pid>/fd/<fd>` as a
//!    `multiproc.Queue`, takes that value and puts [`from_python`] back;
//! 4. once Python writes a line to its stdin, it takes that value, checks it, and prints
//!    `ok`.
//!
//! Any mismatch ends it with a message and exit status 1. Run without an argument, it
//! plays both sides itself (Rust values only) to show the calls.

use std::collections::BTreeMap;
use std::io::BufRead;
use std::os::fd::{AsRawFd, OwnedFd};
use std::time::Duration;

use multiproc::queues::Queue;
use multiproc::Codec;
use serde_bytes::ByteBuf;

/// One value of each kind: (None, bool, int, float, str, bytes, list, tuple, dict).
type Item =
    (Option<i64>, bool, i64, f64, String, ByteBuf, Vec<i64>, (i64, String), BTreeMap<String, i64>);

const WAIT: Duration = Duration::from_secs(60);

/// What Python puts: `(None, True, -2**63, 1.5, "héllo ✓", b"\x00\xffab", [1, 2, 3],
/// (7, "seven"), {"a": 1, "b": -2})`.
fn from_python() -> Item {
    (
        None,
        true,
        i64::MIN,
        1.5,
        "héllo ✓".into(),
        ByteBuf::from(b"\x00\xffab".to_vec()),
        vec![1, 2, 3],
        (7, "seven".into()),
        [("a".into(), 1), ("b".into(), -2)].into_iter().collect(),
    )
}

/// What Rust puts: `(None, False, 2**63 - 1, -0.125, "ржавчина", b"", [], (-1, ""),
/// {"x": 0})`.
fn from_rust() -> Item {
    (
        None,
        false,
        i64::MAX,
        -0.125,
        "ржавчина".into(),
        ByteBuf::new(),
        vec![],
        (-1, String::new()),
        [("x".into(), 0)].into_iter().collect(),
    )
}

fn check(what: &str, got: multiproc::Result<Item>) -> Result<(), String> {
    match got {
        Ok(item) if item == from_python() => Ok(()),
        Ok(item) => Err(format!("{what}: got {item:?}, expected {:?}", from_python())),
        Err(e) => Err(format!("{what}: {e}")),
    }
}

fn with_python(fd: i32) -> Result<(), String> {
    // A descriptor of our own on the inherited one's queue (safe code cannot adopt a
    // descriptor number; reopening it through /proc gives the same memory).
    let fd = std::fs::File::options()
        .read(true)
        .write(true)
        .open(format!("/proc/self/fd/{fd}"))
        .map(OwnedFd::from)
        .map_err(|e| format!("descriptor {fd}: {e}"))?;
    let theirs = Queue::<Item>::from_fd(fd).map_err(|e| format!("opening Python's queue: {e}"))?;
    check("the value on Python's queue", theirs.get_timeout(WAIT))?;
    theirs.put(from_rust()).map_err(|e| format!("putting on Python's queue: {e}"))?;

    let ours = Queue::<Item>::with_codec(0, Codec::Pickle).map_err(|e| e.to_string())?;
    ours.put(from_rust()).map_err(|e| e.to_string())?;
    println!("{} {}", std::process::id(), ours.export_fd().as_raw_fd());
    let mut line = String::new();
    std::io::stdin().lock().read_line(&mut line).map_err(|e| e.to_string())?;
    check("the value Python put on Rust's queue", ours.get_timeout(WAIT))?;
    println!("ok");
    Ok(())
}

/// Both sides in this process: what the calls look like.
fn alone() -> multiproc::Result<()> {
    let q = Queue::<Item>::with_codec(0, Codec::Pickle)?;
    let other = Queue::<Item>::from_fd(q.export_fd().try_clone_to_owned()?)?;
    q.put(from_rust())?;
    assert_eq!(other.get()?, from_rust());
    println!("a pickle queue: {:?}", other.codec());
    Ok(())
}

fn main() {
    let result = match std::env::args().nth(1) {
        Some(fd) => match fd.parse::<i32>() {
            Ok(fd) => with_python(fd),
            Err(_) => Err(format!("not a descriptor number: {fd}")),
        },
        None => alone().map_err(|e| e.to_string()),
    };
    if let Err(message) = result {
        eprintln!("pickle_queue_peer: {message}");
        std::process::exit(1);
    }
}
