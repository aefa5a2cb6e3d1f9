//! Frame decoding: arbitrary bytes arrive on one end of a Unix socket pair and the other
//! end reads them with `recv_bytes`, `recv_bytes_timeout`, `recv_bytes_into` and `recv`
//! until the stream ends or breaks. Every result is checked against a simple model of
//! CPython's framing, so buffering mistakes show up as well as panics.
//!
//! Input: `mode`, `n`, `n` script bytes (the receive calls, cycled), then the stream.
//! With `mode & 1` the stream is written as is; otherwise it is built from 6-byte records
//! (kind, length, fill) so that frames much larger than the input (up to 256 KiB, beyond the
//! 64 KiB read buffer) are exercised too.
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
        Some(std::thread::spawn(move || write_all(writer, &stream)))
    } else {
        write_all(writer, &stream);
        None
    };

    let mut model = Model { stream: &stream, pos: 0, broken: false };
    for i in 0..MAX_CALLS {
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

/// Writes `stream` and closes the socket; stops early if the reader went away.
fn write_all(socket: UnixStream, mut stream: &[u8]) {
    while !stream.is_empty() {
        match rustix::net::send(&socket, stream, rustix::net::SendFlags::NOSIGNAL) {
            Ok(n) => stream = &stream[n..],
            Err(rustix::io::Errno::INTR) => {}
            Err(_) => return,
        }
    }
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
    TooLong { len: u64, limit: u64 },
}

struct Model<'a> {
    stream: &'a [u8],
    pos: usize,
    broken: bool,
}

impl<'a> Model<'a> {
    /// The outcome of the next receive with a length limit of `limit`.
    fn next(&mut self, limit: u64) -> Expect<'a> {
        if self.broken {
            return Expect::Broken;
        }
        let rest = &self.stream[self.pos..];
        if rest.is_empty() {
            return Expect::Eof;
        }
        match parse(rest, limit) {
            Ok((header, payload)) => {
                self.pos += header + payload.len();
                Expect::Frame(payload)
            }
            Err(e) => {
                self.broken = true;
                e
            }
        }
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

/// Checks a failed receive against what the model expected; returns whether to go on.
fn check_error(e: Error, expect: &Expect<'_>, threaded: bool) -> bool {
    match (e, expect) {
        (Error::Eof, Expect::Eof) => false,
        (Error::Protocol(_), Expect::Broken) => true,
        (Error::MessageTooLong { len, limit }, Expect::TooLong { len: l, limit: m }) => {
            assert_eq!((len, limit), (*l, *m));
            true
        }
        // A slow writer thread may make a timed receive give up; the model cannot follow.
        (Error::Timeout(_), _) if threaded => false,
        (e, expect) => panic!("got {e:?}, expected {expect:?}"),
    }
}

/// One receive call chosen by `op`; returns whether to go on.
fn call(conn: &mut Connection, op: u8, model: &mut Model<'_>, threaded: bool) -> bool {
    let limit = LIMITS[(op >> 3) as usize % LIMITS.len()];
    let limit_u64 = limit.map_or(PROTOCOL_MAX, |l| l as u64);
    let timeout = Duration::from_millis(if threaded { 5000 } else { 50 });
    let timed = op & 0x40 != 0;
    conn.set_codec(if op & 0x80 == 0 { Codec::Postcard } else { Codec::Pickle });
    match op % 8 {
        0 => {
            let got = if timed {
                conn.recv_bytes_timeout(limit, timeout)
            } else {
                conn.recv_bytes(limit)
            };
            let expect = model.next(limit_u64);
            match got {
                Ok(bytes) => match expect {
                    Expect::Frame(payload) => {
                        assert_eq!(bytes, payload);
                        true
                    }
                    other => panic!("got a frame of {} bytes, expected {other:?}", bytes.len()),
                },
                Err(e) => check_error(e, &expect, threaded),
            }
        }
        1 => {
            let mut buf = vec![0u8; limit.unwrap_or(64).min(80_000)];
            let got = conn.recv_bytes_into(&mut buf);
            match (got, model.next(PROTOCOL_MAX)) {
                (Ok(n), Expect::Frame(payload)) => {
                    assert_eq!(&buf[..n], payload);
                    true
                }
                (Err(Error::BufferTooShort(message)), Expect::Frame(payload)) => {
                    assert!(payload.len() > buf.len());
                    assert_eq!(message, payload);
                    true
                }
                (Ok(n), other) => panic!("got a frame of {n} bytes, expected {other:?}"),
                (Err(e), expect) => check_error(e, &expect, threaded),
            }
        }
        2 => recv_checked::<Vec<u8>>(conn, model, threaded, timed),
        3 => recv_checked::<(u32, String, Option<i64>)>(conn, model, threaded, timed),
        4 => recv_checked::<Vec<Vec<String>>>(conn, model, threaded, timed),
        5 => recv_checked::<HashMap<String, f64>>(conn, model, threaded, timed),
        6 => {
            recv_checked::<(bool, char, Option<(i8, u64)>, Vec<i128>)>(conn, model, threaded, timed)
        }
        _ => recv_checked::<Shape>(conn, model, threaded, timed),
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
fn recv_checked<T>(conn: &Connection, model: &mut Model<'_>, threaded: bool, timed: bool) -> bool
where
    T: serde::de::DeserializeOwned + PartialEq + std::fmt::Debug,
{
    let got = if timed {
        conn.recv_timeout::<T>(Duration::from_millis(if threaded { 5000 } else { 50 }))
    } else {
        conn.recv::<T>()
    };
    let expect = model.next(PROTOCOL_MAX);
    match (got, expect) {
        (got, Expect::Frame(payload)) => {
            let direct = conn.codec().decode::<T>(payload);
            match (got, direct) {
                (Ok(a), Ok(b)) => assert_eq!(a, b),
                (Err(Error::Codec(_)), Err(Error::Codec(_))) => {}
                (a, b) => panic!("recv gave {a:?}, decoding the payload gave {b:?}"),
            }
            true
        }
        (Ok(v), other) => panic!("got {v:?}, expected {other:?}"),
        (Err(e), expect) => check_error(e, &expect, threaded),
    }
}
