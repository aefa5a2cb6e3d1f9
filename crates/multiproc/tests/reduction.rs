//! Handles travelling through pipes: what the sender keeps, and what a receiver may open.
//!
//! A queue (or lock, or value) sent through a pipe is shared under a one-time id: the
//! sender keeps a duplicate of its descriptor until the receiver has fetched it, keeps a
//! bounded number for messages never received, and hands each out once, to the sender
//! the message names. Nothing is reopened by a number taken from a message.

use std::time::Duration;

use multiproc::queues::Queue;
use multiproc::{pipe, Codec, Connection, Process};

const LONG: Duration = Duration::from_secs(120);

/// This process's open descriptors.
fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").unwrap().count()
}

/// This process's descriptors of queue rings (each pins the ring's shared memory).
fn queue_rings(pid: &str) -> Vec<i32> {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .flatten()
        .filter(|e| {
            std::fs::read_link(e.path())
                .is_ok_and(|l| l.to_string_lossy().contains("memfd:multiproc-queue"))
        })
        .filter_map(|e| e.file_name().to_str()?.parse().ok())
        .collect()
}

/// Sends `n` default queues (4 MiB rings) through `conn`, dropping each after sending;
/// returns its descriptors (before, peak, after) and rings held (peak, after), measured in
/// this process alone.
fn send_queues((conn, n): (Connection, usize)) -> [usize; 5] {
    let fds_before = open_fds();
    let (mut peak_fds, mut peak_rings) = (fds_before, 0);
    for i in 0..n {
        let q = Queue::<u8>::new(0).unwrap();
        conn.send(&q).unwrap();
        drop(q);
        if i % 250 == 0 {
            peak_fds = peak_fds.max(open_fds());
            peak_rings = peak_rings.max(queue_rings("self").len());
        }
    }
    // Wait until the receiver has opened them all.
    let _: usize = conn.recv_timeout(LONG).unwrap();
    [fds_before, peak_fds, open_fds(), peak_rings, queue_rings("self").len()]
}

#[test]
fn ten_thousand_queues_through_a_pipe_leave_the_sender_bounded() {
    const N: usize = 10_000;
    let (mine, theirs) = pipe(true).unwrap();
    let sender = multiproc::spawn(send_queues, (theirs, N)).unwrap();
    for _ in 0..N {
        let q: Queue<u8> = mine.recv_timeout(LONG).unwrap();
        assert_eq!(q.qsize(), 0);
    }
    mine.send(&N).unwrap();
    let [fds_before, peak_fds, fds_after, peak_rings, rings_after] = sender.join().unwrap();
    println!(
        "{N} queues sent: sender's descriptors {fds_before} before, at most {peak_fds} \
         during, {fds_after} after; rings it held: at most {peak_rings} during ({} MiB of \
         ring, pages mostly untouched), {rings_after} after",
        peak_rings * 4
    );
    // Everything the receiver fetched was released: no ring is pinned by the sender now.
    assert_eq!(rings_after, 0, "the sender still holds {rings_after} rings");
    assert!(fds_after <= fds_before + 8, "{fds_before} descriptors before, {fds_after} after");
    // While sending, only what waited in the pipe for the receiver was held.
    assert!(peak_rings < N / 2, "{peak_rings} rings held at once");
}

/// Sends `n` queues through a pipe whose messages are taken out but never decoded;
/// returns how many more descriptors it then holds, and the first message.
fn send_unreceived((n,): (usize,)) -> (usize, Vec<u8>) {
    let (a, b) = pipe(true).unwrap();
    let fds_before = open_fds();
    let mut first = None;
    for _ in 0..n {
        let q = Queue::<u8>::with_capacity(0, 4096).unwrap();
        a.send(&q).unwrap();
        let raw = b.recv_bytes().unwrap();
        first.get_or_insert(raw);
    }
    let held = open_fds().saturating_sub(fds_before);
    // The oldest was withdrawn: decoding it now is a clear error, not a hang or a panic.
    let (c, d) = pipe(true).unwrap();
    let first = first.unwrap();
    c.send_bytes(&first).unwrap();
    let late = match d.recv::<Queue<u8>>() {
        Ok(_) => "decoded".to_string(),
        Err(e) => e.to_string(),
    };
    (held, late.into_bytes())
}

#[test]
fn handles_never_received_are_bounded_and_a_late_receiver_is_told() {
    const N: usize = 10_000;
    let (held, late) = multiproc::spawn(send_unreceived, (N,)).unwrap().join().unwrap();
    let late = String::from_utf8(late).unwrap();
    println!("{N} queues sent, none received: the sender holds {held} more descriptors");
    assert!(held <= 4096 + 16, "{held} descriptors kept for {N} unreceived messages");
    assert!(late.contains("withdrawn") && late.contains("received once"), "{late}");
}

/// Decodes `raw` as a queue twice; the first must work (it puts `7`), the second fails.
fn decode_twice((raw,): (Vec<u8>,)) -> String {
    let (c, d) = pipe(true).unwrap();
    c.send_bytes(&raw).unwrap();
    let q: Queue<u8> = d.recv().unwrap();
    q.put(7).unwrap();
    c.send_bytes(&raw).unwrap();
    match d.recv::<Queue<u8>>() {
        Ok(_) => "decoded twice".to_string(),
        Err(e) => e.to_string(),
    }
}

#[test]
fn a_handle_in_a_message_is_received_once() {
    let (a, b) = pipe(true).unwrap();
    let q = Queue::<u8>::with_capacity(0, 4096).unwrap();
    a.send(&q).unwrap();
    let raw = b.recv_bytes().unwrap();
    let replay = multiproc::spawn(decode_twice, (raw,)).unwrap().join().unwrap();
    assert_eq!(q.get_timeout(LONG).unwrap(), 7);
    assert!(replay.contains("already received"), "{replay}");
}

/// Holds a queue and reports its pid, the ring's descriptor numbers and one real message
/// carrying the queue; waits for the word to exit.
fn victim((conn,): (Connection,)) {
    let q = Queue::<u8>::with_capacity(0, 4096).unwrap();
    let (a, b) = pipe(true).unwrap();
    a.send(&q).unwrap();
    let real = b.recv_bytes().unwrap();
    conn.send(&(std::process::id(), queue_rings("self"), real)).unwrap();
    let _: () = conn.recv_timeout(LONG).unwrap();
    assert_eq!(q.qsize(), 0, "someone reached this process's queue");
}

#[test]
fn a_forged_handle_opens_nothing() {
    let (mine, theirs) = pipe(true).unwrap();
    let child = Process::new(victim, (theirs,));
    child.start().unwrap();
    let (pid, rings, real): (u32, Vec<i32>, Vec<u8>) = mine.recv_timeout(LONG).unwrap();
    assert!(!rings.is_empty());
    let (c, d) = pipe(true).unwrap();
    let try_decode = |bytes: Vec<u8>| -> multiproc::Result<Queue<u8>> {
        c.send_bytes(&bytes).unwrap();
        d.recv::<Queue<u8>>()
    };

    // "Reopen descriptor N of process PID": the shape of the handles of old.
    for &fd in &rings {
        let forged = encode(&(1u32, pid, fd));
        let q = try_decode(forged);
        if let Ok(q) = &q {
            let _ = q.put_timeout(1, Duration::ZERO);
        }
        assert!(q.is_err(), "a forged handle reopened descriptor {fd} of process {pid}");
    }
    // The real sharer, a made-up id.
    let (variant, real_pid, nonce, id): (u32, u32, u64, u64) =
        Codec::Postcard.decode(&real).unwrap();
    assert_eq!((variant, real_pid), (1, pid));
    let forged = encode(&(1u32, pid, nonce, id ^ 1));
    assert!(try_decode(forged).is_err(), "a made-up id was answered");
    // A sharer that does not exist.
    let forged = encode(&(1u32, pid, nonce ^ 1, id));
    assert!(try_decode(forged).is_err());
    mine.send(&()).unwrap();
    child.join_timeout(LONG).unwrap();
    assert_eq!(child.exitcode(), Some(0), "the victim's queue was reached");
}

/// Encodes a value with postcard (the crate's codec for Rust peers).
fn encode<T: serde::Serialize>(value: &T) -> Vec<u8> {
    let mut out = Vec::new();
    Codec::Postcard.encode_into(value, &mut out).unwrap();
    out
}
