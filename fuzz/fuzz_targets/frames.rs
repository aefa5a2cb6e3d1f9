//! Frame decoding: arbitrary bytes arrive on one end of a Unix socket pair and the other
//! end reads them with `recv_bytes`, `recv_bytes_timeout`, `recv_bytes_into` and `recv`
//! until the stream ends or breaks. Every result is checked against a simple model of
//! CPython's framing, so buffering mistakes show up as well as panics.
//!
//! Input: `mode`, `n`, `n` script bytes (the receive calls, cycled), then the stream.
//! With `mode & 1` the stream is written as is; otherwise it is built from 6-byte records
//! (kind, length, fill) so that frames much larger than the input (up to 256 KiB, beyond the
//! 64 KiB read buffer) are exercised too. Such a stream is written by a thread in chunks
//! while the reader's timed calls use timeouts of at most 1.5 ms, so that receives time
//! out in the middle of frames and the next call must complete them.
#![no_main]

use std::collections::HashMap;
use std::os::fd::OwnedFd;
use std::os::unix::net::UnixStream;
use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use multiproc::{Codec, Connection, Error};

/// The longest stream built from records.
const MAX_STREAM: usize = 256 << 10;
/// A raw stream up to this long is written before reading starts (it fits in the socket
/// buffer); a longer one, and any built one, is written by a thread.
const INLINE: usize = 64 << 10;
/// Receive calls per input.
const MAX_CALLS: usize = 64;
/// Receive calls per input when the writer is a thread (some of them time out).
const MAX_CALLS_THREADED: usize = 256;
/// Bytes the connection buffers; a frame longer than this is read straight into its own
/// allocation, and a timeout can leave it half-read.
const READ_BUFFER: usize = 64 << 10;
/// The CPython protocol's largest frame.
const PROTOCOL_MAX: u64 = i64::MAX as u64;

const LIMITS: [Option<usize>; 8] =
    [Some(0), Some(1), Some(4), Some(16), Some(100), Some(70_000), Some(1 << 20), None];

fuzz_target!(|data: &[u8]| run(data));

fn run(data: &[u8]) {
    let Some((&mode, rest)) = data.split_first() else { return };
    let Some((&n, rest)) = rest.split_first() else { return };
    let n = (n as usize % 16).min(rest.len());
    let (script, rest) = rest.split_at(n);
    let script: &[u8] = if script.is_empty() { &[0] } else { script };
    let stream = if mode & 1 == 1 { rest.to_vec() } else { build(rest) };

    let (reader, writer) = UnixStream::pair().expect("socketpair");
    let mut reader = Connection::from_fd(OwnedFd::from(reader));
    let threaded = stream.len() > INLINE;
    let thread = if threaded {
        let stream = stream.clone();
        Some(std::thread::spawn(move || {
            // Uneven chunks, so that the reader sees frames arrive piecemeal.
            let mut rest = &stream[..];
            let mut i = 0usize;
            while !rest.is_empty() {
                let chunk = rest.len().min(1 + (i * 7919) % 40_000);
                if !send_all(&writer, &rest[..chunk]) {
                    return;
                }
                rest = &rest[chunk..];
                i += 1;
                std::thread::yield_now();
            }
        }))
    } else {
        send_all(&writer, &stream);
        drop(writer);
        None
    };

    let mut model = Model { stream: &stream, pos: 0, broken: false, pending: None, either: 0 };
    let calls = if threaded { MAX_CALLS_THREADED } else { MAX_CALLS };
    for i in 0..calls {
        let op = script[i % script.len()];
        if !call(&mut reader, op, &mut model, threaded) {
            break;
        }
    }
    drop(reader);
    if let Some(t) = thread {
        t.join().expect("writer thread");
    }
}

/// Writes all of `bytes`; false if the reader went away.
fn send_all(socket: &UnixStream, mut bytes: &[u8]) -> bool {
    while !bytes.is_empty() {
        match rustix::net::send(socket, bytes, rustix::net::SendFlags::NOSIGNAL) {
            Ok(n) => bytes = &bytes[n..],
            Err(rustix::io::Errno::INTR) => {}
            Err(_) => return false,
        }
    }
    true
}

/// Builds a stream from records: `kind`, `len` (3 bytes, little-endian), `fill`, `extra`.
fn build(mut input: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while input.len() >= 6 && out.len() < MAX_STREAM {
        let (record, rest) = input.split_at(6);
        input = rest;
        let kind = record[0];
        let len = u32::from_le_bytes([record[1], record[2], record[3], 0]) as usize;
        let len = len.min(MAX_STREAM - out.len());
        let fill = record[4];
        match kind % 5 {
            // A well-formed short-header frame.
            0 => {
                out.extend_from_slice(&(len as i32).to_be_bytes());
                pattern(&mut out, fill, len);
            }
            // A well-formed long-header frame (legal for any length).
            1 => {
                out.extend_from_slice(&(-1i32).to_be_bytes());
                out.extend_from_slice(&(len as u64).to_be_bytes());
                pattern(&mut out, fill, len);
            }
            // A frame cut short: the stream ends inside it.
            2 => {
                out.extend_from_slice(&(len as i32).to_be_bytes());
                pattern(&mut out, fill, len / 2);
                break;
            }
            // A long header announcing a huge length (`extra` picks how huge).
            3 => {
                out.extend_from_slice(&(-1i32).to_be_bytes());
                out.extend_from_slice(&(u64::MAX >> (record[5] % 64)).to_be_bytes());
            }
            // Raw bytes from the input.
            _ => {
                let take = (record[5] as usize % 32).min(input.len());
                out.extend_from_slice(&input[..take]);
                input = &input[take..];
            }
        }
    }
    out
}

/// Appends `len` bytes of a pattern that starts at `fill`.
fn pattern(out: &mut Vec<u8>, fill: u8, len: usize) {
    let cycle: Vec<u8> = (0..251u8).map(|i| fill.wrapping_add(i)).collect();
    let mut left = len;
    while left > 0 {
        let k = left.min(cycle.len());
        out.extend_from_slice(&cycle[..k]);
        left -= k;
    }
}

/// What CPython's framing says the next receive must give.
#[derive(Debug)]
enum Expect<'a> {
    Frame(&'a [u8]),
    Eof,
    Broken,
    TooLong {
        len: u64,
        limit: u64,
    },
    /// After a timed-out receive that may have consumed this large frame's header under a
    /// higher limit: either the frame, or `TooLong` under the new limit.
    /// (`payload` is `None` for a frame the stream cuts short: then a protocol error.)
    Either {
        payload: Option<&'a [u8]>,
        len: u64,
        limit: u64,
    },
}

struct Model<'a> {
    stream: &'a [u8],
    pos: usize,
    broken: bool,
    /// The limit of a receive that timed out while the next frame was a large one.
    pending: Option<u64>,
    /// How far to advance if an `Either` turns out to be the frame.
    either: usize,
}

impl<'a> Model<'a> {
    /// The outcome of the next receive with a length limit of `limit`.
    fn next(&mut self, limit: u64) -> Expect<'a> {
        if self.broken {
            return Expect::Broken;
        }
        let pending = self.pending.take();
        let rest = &self.stream[self.pos..];
        if rest.is_empty() {
            return Expect::Eof;
        }
        match parse(rest, limit) {
            Ok((header, payload)) => {
                self.pos += header + payload.len();
                Expect::Frame(payload)
            }
            Err(Expect::TooLong { len, limit }) if pending.is_some_and(|p| p >= len) => {
                let payload = match parse(rest, len) {
                    Ok((header, payload)) => {
                        self.either = header + payload.len();
                        Some(payload)
                    }
                    Err(_) => None,
                };
                Expect::Either { payload, len, limit }
            }
            Err(e) => {
                self.broken = true;
                e
            }
        }
    }

    /// A receive with limit `limit` timed out: nothing is delivered, but a large frame's
    /// header may have been consumed.
    fn timed_out(&mut self, limit: u64) {
        if self.broken {
            return;
        }
        if let Some((header, len)) = parse_header(&self.stream[self.pos..]) {
            if len <= limit && header as u64 + len > READ_BUFFER as u64 {
                self.pending = self.pending.max(Some(limit));
            }
        }
    }

    /// Settles an `Either`: the frame was delivered, or the stream broke.
    fn settle(&mut self, delivered: bool) {
        if delivered {
            self.pos += self.either;
        } else {
            self.broken = true;
        }
    }

    /// Checks a delivered frame against `expect`.
    fn delivered(&mut self, got: &[u8], expect: Expect<'_>) {
        match expect {
            Expect::Frame(payload) => assert_eq!(got, payload),
            Expect::Either { payload: Some(payload), .. } => {
                assert_eq!(got, payload);
                self.settle(true);
            }
            other => panic!("got a frame of {} bytes, expected {other:?}", got.len()),
        }
    }

    /// Checks a failed receive against `expect`; returns whether to go on.
    fn failed(&mut self, e: Error, expect: Expect<'_>) -> bool {
        match (e, expect) {
            (Error::Eof, Expect::Eof) => false,
            (Error::Protocol(_), Expect::Broken) => true,
            (Error::MessageTooLong { len, limit }, Expect::TooLong { len: l, limit: m }) => {
                assert_eq!((len, limit), (l, m));
                true
            }
            (Error::Protocol(_), Expect::Either { payload: None, .. }) => {
                self.settle(false);
                true
            }
            (Error::MessageTooLong { len, limit }, Expect::Either { len: l, limit: m, .. }) => {
                assert_eq!((len, limit), (l, m));
                self.settle(false);
                true
            }
            (e, expect) => panic!("got {e:?}, expected {expect:?}"),
        }
    }
}

/// The (header length, announced length) of a complete, valid header at the start of
/// `rest`.
fn parse_header(rest: &[u8]) -> Option<(usize, u64)> {
    let short = i32::from_be_bytes(rest.get(..4)?.try_into().ok()?);
    match short {
        n if n >= 0 => Some((4, n as u64)),
        -1 => {
            let long = u64::from_be_bytes(rest.get(4..12)?.try_into().ok()?);
            (long <= PROTOCOL_MAX).then_some((12, long))
        }
        _ => None,
    }
}

/// Splits the frame at the start of `rest` into (header length, payload).
fn parse(rest: &[u8], limit: u64) -> Result<(usize, &[u8]), Expect<'static>> {
    if rest.len() < 4 {
        return Err(Expect::Broken);
    }
    let short = i32::from_be_bytes(rest[..4].try_into().unwrap());
    let (header, len) = match short {
        n if n >= 0 => (4, n as u64),
        -1 => {
            if rest.len() < 12 {
                return Err(Expect::Broken);
            }
            let long = u64::from_be_bytes(rest[4..12].try_into().unwrap());
            if long > PROTOCOL_MAX {
                return Err(Expect::TooLong { len: long, limit: PROTOCOL_MAX });
            }
            (12, long)
        }
        _ => return Err(Expect::Broken),
    };
    if len > limit {
        return Err(Expect::TooLong { len, limit });
    }
    if ((rest.len() - header) as u64) < len {
        return Err(Expect::Broken);
    }
    Ok((header, &rest[header..header + len as usize]))
}

/// The timeout of a timed receive: long when nothing should time out (the stream was
/// written and closed before reading), at most 1.5 ms while a thread is still writing.
fn timeout(op: u8, threaded: bool) -> Duration {
    if threaded {
        Duration::from_micros(u64::from(op & 0x30) / 0x10 * 500)
    } else {
        Duration::from_secs(5)
    }
}

/// One receive call chosen by `op`; returns whether to go on.
fn call(conn: &mut Connection, op: u8, model: &mut Model<'_>, threaded: bool) -> bool {
    let limit = LIMITS[(op >> 3) as usize % LIMITS.len()];
    let limit_u64 = limit.map_or(PROTOCOL_MAX, |l| l as u64);
    let timed = op & 0x40 != 0;
    conn.set_codec(if op & 0x80 == 0 { Codec::Postcard } else { Codec::Pickle });
    match op % 8 {
        0 => {
            let got = match (limit, timed) {
                (Some(max), true) => conn.recv_bytes_max_timeout(max, timeout(op, threaded)),
                (None, true) => conn.recv_bytes_timeout(timeout(op, threaded)),
                (Some(max), false) => conn.recv_bytes_max(max),
                (None, false) => conn.recv_bytes(),
            };
            match got {
                Err(Error::Timeout(_)) if threaded => {
                    model.timed_out(limit_u64);
                    true
                }
                Ok(bytes) => {
                    let expect = model.next(limit_u64);
                    model.delivered(&bytes, expect);
                    true
                }
                Err(e) => {
                    let expect = model.next(limit_u64);
                    model.failed(e, expect)
                }
            }
        }
        1 => {
            let mut buf = vec![0u8; limit.unwrap_or(64).min(80_000)];
            let got = conn.recv_bytes_into(&mut buf);
            match (got, model.next(PROTOCOL_MAX)) {
                (Ok(n), expect) => {
                    model.delivered(&buf[..n], expect);
                    true
                }
                (Err(Error::BufferTooShort(message)), expect) => {
                    assert!(message.len() > buf.len());
                    model.delivered(&message, expect);
                    true
                }
                (Err(e), expect) => model.failed(e, expect),
            }
        }
        2 => recv_checked::<Vec<u8>>(conn, model, threaded, timed, op),
        3 => recv_checked::<(u32, String, Option<i64>)>(conn, model, threaded, timed, op),
        4 => recv_checked::<Vec<Vec<String>>>(conn, model, threaded, timed, op),
        5 => recv_checked::<HashMap<String, f64>>(conn, model, threaded, timed, op),
        6 => recv_checked::<(bool, char, Option<(i8, u64)>, Vec<i128>)>(
            conn, model, threaded, timed, op,
        ),
        _ => recv_checked::<Shape>(conn, model, threaded, timed, op),
    }
}

#[derive(Debug, PartialEq, serde::Deserialize)]
enum Shape {
    Unit,
    Newtype(u16),
    Tuple(String, Vec<u8>),
    Struct { name: String, children: Vec<Shape> },
}

/// `recv::<T>` must give what decoding the frame's payload gives.
fn recv_checked<T>(
    conn: &Connection,
    model: &mut Model<'_>,
    threaded: bool,
    timed: bool,
    op: u8,
) -> bool
where
    T: serde::de::DeserializeOwned + PartialEq + std::fmt::Debug,
{
    let got = if timed { conn.recv_timeout::<T>(timeout(op, threaded)) } else { conn.recv::<T>() };
    if matches!(got, Err(Error::Timeout(_))) && threaded {
        model.timed_out(PROTOCOL_MAX);
        return true;
    }
    let payload = match model.next(PROTOCOL_MAX) {
        Expect::Frame(payload) => payload,
        expect => {
            return match got {
                Ok(v) => panic!("got {v:?}, expected {expect:?}"),
                Err(e) => model.failed(e, expect),
            };
        }
    };
    let direct = conn.codec().decode::<T>(payload);
    match (got, direct) {
        (Ok(a), Ok(b)) => assert_eq!(a, b),
        (Err(Error::Codec(_)), Err(Error::Codec(_))) => {}
        (a, b) => panic!("recv gave {a:?}, decoding the payload gave {b:?}"),
    }
    true
}
