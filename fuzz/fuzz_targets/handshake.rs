//! CPython's authkey handshake against a hostile peer: the listener's side
//! (`server_handshake`: deliver a challenge, then answer one) and the client's side
//! (`client_handshake`: answer, then deliver) read arbitrary bytes from the peer.
//!
//! Input: `flags`, then the peer's bytes (raw: the fuzzer controls the framing too).
//! - `flags & 1`: fuzz the client's side, else the listener's.
//! - `flags & 2`: the legacy dialect for the challenge we deliver.
//! - `flags & 4` (listener only): the peer first answers our challenge correctly, so that
//!   the fuzzed bytes reach the second half, where the listener answers a challenge.
//! - `flags & 8`: an empty authkey.
//!
//! Whatever the bytes, the handshake must not panic or hang, must not time out (the peer
//! always closes its side), and must never succeed where success would need the HMAC of a
//! challenge the peer never saw.
#![no_main]

use std::os::fd::OwnedFd;
use std::os::unix::net::UnixStream;
use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use multiproc::connection::AuthDialect;
use multiproc::fuzzing;
use multiproc::{Connection, Error};

const TIMEOUT: Duration = Duration::from_secs(5);

fuzz_target!(|data: &[u8]| {
    let Some((&flags, peer_bytes)) = data.split_first() else { return };
    if peer_bytes.len() > 64 << 10 {
        return; // more than the socket buffer is sure to hold
    }
    let client_side = flags & 1 != 0;
    let dialect = if flags & 2 != 0 { AuthDialect::Legacy } else { AuthDialect::Modern };
    let answer_first = flags & 4 != 0 && !client_side;
    let authkey: &[u8] = if flags & 8 != 0 { b"" } else { b"fuzzing key" };

    let (ours, theirs) = UnixStream::pair().expect("socketpair");
    let ours = Connection::from_fd(OwnedFd::from(ours));
    let theirs = Connection::from_fd(OwnedFd::from(theirs));
    let peer_bytes = peer_bytes.to_vec();
    let peer = move || {
        let answered =
            !answer_first || fuzzing::answer_challenge(&theirs, authkey, TIMEOUT).is_ok();
        if answered {
            send_all(&theirs, &peer_bytes);
        }
        let _ = rustix::net::shutdown(&theirs, rustix::net::Shutdown::Write);
        // Keep our end open until the handshake is over, so its writes succeed.
        theirs
    };
    let (result, _theirs) = if answer_first {
        let thread = std::thread::spawn(peer);
        let result = fuzzing::server_handshake(&ours, authkey, dialect, TIMEOUT);
        drop(ours); // the peer may still be reading: let it see the end
        (result, thread.join().expect("peer thread"))
    } else {
        let theirs = peer();
        let result = if client_side {
            fuzzing::client_handshake(&ours, authkey, dialect, TIMEOUT)
        } else {
            fuzzing::server_handshake(&ours, authkey, dialect, TIMEOUT)
        };
        (result, theirs)
    };
    match result {
        Err(Error::Timeout(_)) => panic!("the handshake timed out on a closed stream"),
        Ok(()) if !answer_first => {
            panic!("the handshake succeeded without an answer to our random challenge")
        }
        _ => {}
    }
});

fn send_all(conn: &Connection, mut bytes: &[u8]) {
    while !bytes.is_empty() {
        match rustix::net::send(conn, bytes, rustix::net::SendFlags::NOSIGNAL) {
            Ok(n) => bytes = &bytes[n..],
            Err(rustix::io::Errno::INTR) => {}
            Err(_) => return,
        }
    }
}
