//! The fast lane: a connection to a server on this machine that carries its requests and
//! replies over a pair of shared-memory [queues](crate::queues) instead of the socket.
//! Both halves live here: the client's (open a lane, wait for a reply) and the server's
//! (accept a lane, serve it, keep its thread off its client's CPU).
//!
//! A socket round trip costs a kernel wake-up on each side (tens of microseconds on a
//! virtual machine); a waiter on a fast lane polls its queue instead (see [`wait_frame`]),
//! so a steady stream of calls costs about a microsecond each way. The socket stays open
//! as the liveness signal: the server sees its client go when the socket closes, and the
//! client sees the server go the same way.

use std::time::Duration;

use super::store::{Seen, Store};
use super::wire::{Reply, WireError};
use crate::codec::Codec;
use crate::connection::Connection;
use crate::error::{Error, Result};
use crate::sys::cpu::CpuSet;

// --------------------------------------------------------------------------------------
// Both halves: the lane and its frames

/// (requests, replies).
pub(crate) type FastLane = (crate::queues::Queue<Vec<u8>>, crate::queues::Queue<Vec<u8>>);

/// The request that turns a connection into a fast lane: object id and method. (The
/// method names the fast lane's frame format: a server that does not know it declines,
/// and the client keeps to the socket.)
pub(crate) const FAST_LANE_ID: u64 = u64::MAX;
pub(crate) const FAST_LANE_METHOD: &str = "__fast_lane_2__";

/// How long a fast-lane waiter sleeps before it checks the socket for a hang-up.
pub(crate) const FAST_LANE_CHECK: Duration = Duration::from_millis(100);

/// Every frame on a fast lane starts with the CPU its sender ran on when it sent it
/// (`u32`, little-endian; `u32::MAX` when unknown), then the frame as on the socket.
pub(crate) const CPU_STAMP: usize = 4;

/// Reserves the CPU stamp at the start of an empty frame.
pub(crate) fn reserve_cpu_stamp(frame: &mut Vec<u8>) {
    frame.extend_from_slice(&[0xff; CPU_STAMP]);
}

/// Writes this thread's CPU into a frame's stamp, just before the frame is sent.
pub(crate) fn stamp_cpu(frame: &mut [u8]) {
    let cpu = crate::sys::pid::cpu().unwrap_or(u32::MAX);
    frame[..CPU_STAMP].copy_from_slice(&cpu.to_le_bytes());
}

/// A received fast-lane frame's sender CPU and body; `None` if it is too short.
pub(crate) fn split_cpu_stamp(frame: &[u8]) -> Option<(Option<u32>, &[u8])> {
    let (stamp, body) = frame.split_first_chunk::<CPU_STAMP>()?;
    let cpu = u32::from_le_bytes(*stamp);
    Some(((cpu != u32::MAX).then_some(cpu), body))
}

/// How long a fast-lane waiter polls before it leaves the waiting to the queue (which
/// spins a little more, then sleeps).
const POLL_FOR: Duration = Duration::from_micros(50);

/// Polls `queue` for a frame from a peer last seen on CPU `peer`, for up to
/// [`POLL_FOR`]; `None` if nothing came.
///
/// While the peer runs on another CPU, the waiter keeps its own CPU: giving it up (as a
/// queue's waiter does now and then) hands it to whatever else is runnable there, often
/// for a whole scheduler slice, while the answer is a microsecond away. While the peer is
/// on this same CPU, it cannot answer until the waiter gives the CPU up, so the waiter
/// yields at once.
pub(crate) fn wait_frame(
    queue: &crate::queues::Queue<Vec<u8>>,
    peer: Option<u32>,
) -> Option<Vec<u8>> {
    // The clock is read only after a first round of polls found nothing.
    let mut start = None;
    loop {
        for _ in 0..16 {
            // `empty` reads two words; `get_nowait` also reads the clock and takes a lock.
            if !queue.empty() {
                if let Ok(frame) = queue.get_nowait() {
                    return Some(frame);
                }
            }
            if peer.is_some() && crate::sys::pid::cpu() == peer {
                std::thread::yield_now();
            } else {
                std::hint::spin_loop();
            }
        }
        let now = std::time::Instant::now();
        match start {
            None => start = Some(now),
            Some(start) if now - start > POLL_FOR => return None,
            Some(_) => {}
        }
    }
}

// --------------------------------------------------------------------------------------
// The client's half

/// Asks the server to take requests over a pair of queues; `None` if it declines (the
/// socket then carries the calls, as before). `timeout` bounds the wait for the answer.
pub(super) fn open_fast_lane(conn: &Connection, timeout: Duration) -> Option<FastLane> {
    let lane: FastLane = (
        crate::queues::Queue::with_capacity(0, 256 * 1024).ok()?,
        crate::queues::Queue::with_capacity(0, 256 * 1024).ok()?,
    );
    let mut frame = Vec::new();
    Codec::Postcard.encode_into(&(FAST_LANE_ID, FAST_LANE_METHOD), &mut frame).ok()?;
    Codec::Postcard.encode_into(&lane, &mut frame).ok()?;
    conn.send_bytes(&frame).ok()?;
    let reply = conn.recv_bytes_max_timeout(1024, timeout).ok()?;
    let reply: Reply = Codec::Postcard.decode(&reply).ok()?;
    reply.ok().map(|_| lane)
}

/// Waits for a fast-lane reply once [`wait_frame`] gave up: sleeps on the queue,
/// checking now and then that the server still holds its socket `conn`, until `wait` runs
/// out. `lost` words an error that means the server is gone.
pub(super) fn wait_reply(
    conn: &Connection,
    replies: &crate::queues::Queue<Vec<u8>>,
    wait: Option<Duration>,
    lost: impl Fn(Error) -> Error,
    no_answer: impl Fn() -> Error,
) -> Result<Vec<u8>> {
    let deadline = crate::deadline::within(wait);
    loop {
        match replies.get_timeout(FAST_LANE_CHECK) {
            Ok(reply) => return Ok(reply),
            Err(Error::Empty) => {
                // The server closes the socket when it goes.
                if conn.poll().unwrap_or(true) {
                    return Err(lost(Error::Eof));
                }
                if deadline.is_some_and(|d| std::time::Instant::now() >= d) {
                    return Err(no_answer());
                }
            }
            Err(e) => return Err(lost(e)),
        }
    }
}

// --------------------------------------------------------------------------------------
// The server's half

/// The queues of a fast-lane request (see [`open_fast_lane`]), if `frame` is one that this
/// server accepts: only from a client on a Unix socket that runs as this server's user
/// (`SO_PEERCRED`). The queues' handles are not even decoded otherwise (decoding one asks
/// the sender for a descriptor), so a client over TCP, or of another user, is answered
/// as for any unknown method.
pub(super) fn fast_lane_request(conn: &Connection, frame: &[u8]) -> Option<FastLane> {
    use std::os::fd::AsFd;
    let ((id, method), rest): ((u64, &str), &[u8]) = postcard::take_from_bytes(frame).ok()?;
    if id != FAST_LANE_ID || method != FAST_LANE_METHOD {
        return None;
    }
    if !crate::reduction::peer_is_local_same_user(conn.as_fd()) {
        return None;
    }
    Codec::Postcard.decode(rest).ok()
}

/// How many requests in a row a fast-lane thread serves from a client that shares its
/// CPU before it moves to another CPU.
const STEER_AFTER: u32 = 64;

/// Moves a fast-lane thread off its client's CPU while they keep sharing one.
///
/// A client and its server thread that share a CPU take turns on it: every call then
/// costs two context switches (microseconds each on a virtual machine), where two CPUs
/// pass it through shared memory in a fraction of that. The scheduler tends to keep such a
/// pair together once it is (each half looks half idle), so the thread narrows its own CPU
/// set to leave its client's CPU out, and restores it once its lane has been idle for a
/// [`FAST_LANE_CHECK`]. Only the server's thread moves, never the client, and only within
/// the CPU set it started with.
struct Steering {
    /// The thread's CPU set when it started serving, if it has two CPUs or more.
    allowed: Option<CpuSet>,
    /// Requests in a row that came from a client on this thread's CPU.
    shared: u32,
    /// Whether the thread's CPU set is narrowed now.
    steered: bool,
}

impl Steering {
    fn new() -> Steering {
        let allowed = CpuSet::of_this_thread().ok().filter(|set| set.count() >= 2);
        Steering { allowed, shared: 0, steered: false }
    }

    /// Notes a request from a client that sent it on CPU `client`.
    fn request_from(&mut self, client: Option<u32>) {
        let Some(allowed) = &self.allowed else { return };
        let (Some(client), Some(mine)) = (client, crate::sys::pid::cpu()) else { return };
        if client != mine {
            self.shared = 0;
            return;
        }
        self.shared += 1;
        let client = client as usize;
        if self.shared < STEER_AFTER {
            return;
        }
        self.shared = 0;
        let Some(elsewhere) = allowed.without(client) else { return };
        if elsewhere.count() > 0 && elsewhere.apply_to_this_thread().is_ok() {
            self.steered = true;
        }
    }

    /// Gives the thread its whole CPU set back (its lane is idle).
    fn release(&mut self) {
        self.shared = 0;
        if self.steered {
            if let Some(allowed) = &self.allowed {
                let _ = allowed.apply_to_this_thread();
            }
            self.steered = false;
        }
    }
}

/// Serves one client over its queues; the socket only tells when the client is gone.
pub(super) fn serve_fast_lane(
    store: &Store,
    conn: &Connection,
    lane: FastLane,
    max_message: usize,
    mut seen: Seen,
) {
    let (requests, replies) = lane;
    let reply_timeout = Duration::from_secs(60);
    let mut client_cpu = None;
    let mut steering = Steering::new();
    // Each request's buffer becomes the next reply's (a put consumes its vector).
    let mut spare = Vec::new();
    loop {
        let frame = match wait_frame(&requests, client_cpu) {
            Some(frame) => frame,
            None => {
                match requests.get_timeout(FAST_LANE_CHECK) {
                    Ok(frame) => frame,
                    Err(Error::Empty) => {
                        // Idle for a while: the whole CPU set back.
                        steering.release();
                        // Nothing is ever sent on the socket after the upgrade: readable
                        // means gone.
                        if conn.poll().unwrap_or(true) {
                            return;
                        }
                        continue;
                    }
                    Err(_) => return,
                }
            }
        };
        let mut out = std::mem::take(&mut spare);
        out.clear();
        reserve_cpu_stamp(&mut out);
        let closing = match split_cpu_stamp(&frame) {
            _ if frame.len() > max_message => Some(format!(
                "request of {} bytes exceeds the server's limit of {max_message} bytes",
                frame.len()
            )),
            None => Some("malformed request: no CPU stamp".to_string()),
            Some((cpu, body)) => {
                client_cpu = cpu;
                steering.request_from(cpu);
                store.handle(body, conn, &mut seen, &mut out);
                None
            }
        };
        if let Some(why) = closing {
            let _ = Codec::Postcard.encode_into(&Reply::Err(WireError::Closing(why)), &mut out);
            stamp_cpu(&mut out);
            let _ = replies.put_timeout(out, reply_timeout);
            return;
        }
        stamp_cpu(&mut out);
        if replies.put_timeout(out, reply_timeout).is_err() {
            return;
        }
        if frame.capacity() <= SPARE_KEEP {
            spare = frame;
        }
    }
}

/// The largest buffer a connection keeps for its next reply.
const SPARE_KEEP: usize = 64 << 10;
