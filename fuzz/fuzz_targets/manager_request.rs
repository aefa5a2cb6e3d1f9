//! The manager server's request handling: arbitrary request frames go to a fresh object
//! store (`Store::handle`, as the server's per-client thread calls it), one input holding a
//! short session of requests so that objects can be created and then used (object ids are
//! given out from 1, so a request can name one it made before).
//!
//! Input: frames, each prefixed by its length as one byte (`0xff`: a two-byte
//! little-endian length follows). Every reply must be a well-formed
//! `Result<Vec<u8>, WireError>` in postcard.
//!
//! The "client" is a socket whose peer is already closed, so a call that would block gives
//! up at its first check for a hung-up client (within 100 ms) instead of waiting forever.
#![no_main]

use std::os::fd::OwnedFd;
use std::os::unix::net::UnixStream;

use libfuzzer_sys::fuzz_target;
use multiproc::fuzzing::ManagerStore;
use multiproc::managers::{decode, encode, Registry, SharedObject};
use multiproc::Connection;

/// Requests per input.
const MAX_REQUESTS: usize = 12;

fuzz_target!(|data: &[u8]| {
    let mut registry = Registry::default();
    registry.register::<Counter>("Counter");
    let store = ManagerStore::new(registry);
    let (client, peer) = UnixStream::pair().expect("socketpair");
    drop(peer);
    let client = Connection::from_fd(OwnedFd::from(client));

    let mut rest = data;
    for _ in 0..MAX_REQUESTS {
        let Some((frame, tail)) = next_frame(rest) else { break };
        rest = tail;
        let reply = store.handle(frame, &client);
        // The reply is `Result<Vec<u8>, WireError>`; `WireError` is private, but its
        // encoding is an enum tag and at most a string or a u64, which `Reply` mirrors.
        if let Err(e) = decode::<Reply>(&reply) {
            panic!("malformed reply {reply:?}: {e}");
        }
    }
});

fn next_frame(data: &[u8]) -> Option<(&[u8], &[u8])> {
    let (&len, rest) = data.split_first()?;
    let (len, rest) = if len == 0xff {
        let (len, rest) = rest.split_at_checked(2)?;
        (u16::from_le_bytes([len[0], len[1]]) as usize, rest)
    } else {
        (len as usize, rest)
    };
    rest.split_at_checked(len.min(rest.len()))
}

/// The shape of the server's reply on the wire.
#[derive(Debug, serde::Deserialize)]
#[allow(dead_code)]
enum WireError {
    Empty,
    Full,
    Timeout(u64),
    Message(String),
    Closing(String),
}

type Reply = Result<Vec<u8>, WireError>;

/// A user type, so that requests reach `SharedObject::call` too.
#[derive(serde::Serialize, serde::Deserialize)]
struct Counter(i64);

impl SharedObject for Counter {
    fn call(&mut self, method: &str, args: &[u8]) -> Result<Vec<u8>, String> {
        match method {
            "add" => {
                self.0 = self.0.wrapping_add(decode::<i64>(args)?);
                encode(&self.0)
            }
            "get" => encode(&self.0),
            other => Err(format!("no method {other}")),
        }
    }
}
