//! The manager's fast lane (shared-memory queues instead of the socket) against hostile
//! clients: one that shrinks its lane's segments under the server, one that offers
//! segments of its own that it never sealed, one that offers queues over TCP.

use std::time::Duration;

use multiproc::connection::Client;
use multiproc::queues::Queue;
use multiproc::{Codec, Manager};
use serde::{Deserialize, Serialize};

const LONG: Duration = Duration::from_secs(120);

/// The server's reply frame (its error type's shape, as the wire has it).
#[derive(Debug, Serialize, Deserialize)]
enum WireError {
    Empty,
    Full,
    Timeout(u64),
    Message(String),
    Closing(String),
}

/// The request that turns a connection into a fast lane.
const FAST_LANE_ID: u64 = u64::MAX;
const FAST_LANE_METHOD: &str = "__fast_lane_2__";

/// Connects to the manager (a local client: its calls go over a fast lane), makes a call,
/// then tries to cut each of its queue segments to 0 bytes. Exits 0 if it found some and
/// could shrink none, 2 if it found none, 3 if it shrank one.
fn shrink_my_lane((address, authkey): (String, Vec<u8>)) {
    let m = Manager::connect(&address, &authkey).unwrap();
    let d = m.dict::<u32, u32>().unwrap();
    d.set(&1, &1).unwrap();
    let (mut found, mut shrunk) = (0, 0);
    for entry in std::fs::read_dir("/proc/self/fd").unwrap().flatten() {
        let is_queue = std::fs::read_link(entry.path())
            .is_ok_and(|l| l.to_string_lossy().contains("memfd:multiproc-queue"));
        if !is_queue {
            continue;
        }
        found += 1;
        let file = std::fs::OpenOptions::new().read(true).write(true).open(entry.path());
        if file.and_then(|f| f.set_len(0)).is_ok() {
            shrunk += 1;
        }
    }
    // Leave without touching the lane again (on a shrunk segment that would be SIGBUS).
    std::process::exit(match (found, shrunk) {
        (0, _) => 2,
        (_, 0) => 0,
        _ => 3,
    })
}

#[test]
fn a_client_cannot_shrink_its_lane_under_the_server() {
    let m = Manager::start().unwrap();
    let server = m.server_pid().unwrap();
    let d = m.dict::<String, u32>().unwrap();
    d.set(&"before".to_string(), &1).unwrap();

    let hostile =
        multiproc::Process::new(shrink_my_lane, (m.address().to_string(), m.authkey().to_vec()));
    hostile.start().unwrap();
    hostile.join_timeout(LONG).unwrap();
    let code = hostile.exitcode();
    assert_ne!(code, Some(2), "the client found no queue segment of its lane");
    assert_eq!(code, Some(0), "the client could shrink its lane's segments");

    // The server is alive and serves another client (this process), many calls over.
    for i in 0..200u32 {
        d.set(&format!("k{i}"), &i).unwrap();
    }
    assert_eq!(d.get(&"k199".to_string()).unwrap(), Some(199));
    assert_eq!(m.server_pid().unwrap(), server);
    m.shutdown().unwrap();
}

#[test]
fn a_fast_lane_over_tcp_is_refused() {
    let m = Manager::serve("127.0.0.1:0", b"tcp lane key").unwrap();
    let conn = Client::connect(m.address(), Some(b"tcp lane key".as_slice())).unwrap();
    let lane: (Queue<Vec<u8>>, Queue<Vec<u8>>) =
        (Queue::with_capacity(0, 4096).unwrap(), Queue::with_capacity(0, 4096).unwrap());
    let mut frame = Vec::new();
    Codec::Postcard.encode_into(&(FAST_LANE_ID, FAST_LANE_METHOD), &mut frame).unwrap();
    Codec::Postcard.encode_into(&lane, &mut frame).unwrap();
    conn.send_bytes(&frame).unwrap();
    let reply = conn.recv_bytes_timeout(LONG).unwrap();
    let reply: Result<Vec<u8>, WireError> = Codec::Postcard.decode(&reply).unwrap();
    assert!(reply.is_err(), "the server took shared memory queues from a TCP client");
    // The connection still serves plain calls.
    let mut ping = Vec::new();
    Codec::Postcard.encode_into(&(0u64, "ping"), &mut ping).unwrap();
    Codec::Postcard.encode_into(&(), &mut ping).unwrap();
    conn.send_bytes(&ping).unwrap();
    let reply = conn.recv_bytes_timeout(LONG).unwrap();
    let reply: Result<Vec<u8>, WireError> = Codec::Postcard.decode(&reply).unwrap();
    let pid: u32 = Codec::Postcard.decode(&reply.unwrap()).unwrap();
    assert_eq!(pid, m.server_pid().unwrap());
    m.shutdown().unwrap();
}

/// Plays a sender's sharer (see `multiproc::reduction`) on the abstract socket of
/// `(this pid, nonce)`: answers every request with `fd`, and counts the requests.
fn fake_sharer(
    nonce: u64,
    fd: std::os::fd::OwnedFd,
) -> (std::sync::Arc<std::sync::atomic::AtomicUsize>, std::os::unix::net::UnixListener) {
    use std::os::linux::net::SocketAddrExt;
    use std::os::unix::net::{SocketAddr, UnixListener};
    let name = format!("multiproc-fd-{}-{nonce:016x}", std::process::id());
    let listener = UnixListener::bind_addr(&SocketAddr::from_abstract_name(name).unwrap()).unwrap();
    let asked = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let (counter, serving) = (asked.clone(), listener.try_clone().unwrap());
    std::thread::spawn(move || {
        use std::io::Read;
        use std::os::fd::AsFd;
        for stream in serving.incoming() {
            let Ok(mut stream) = stream else { return };
            let mut id = [0u8; 8];
            if stream.read_exact(&mut id).is_err() {
                continue;
            }
            counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let fds = [fd.as_fd()];
            let mut space =
                vec![std::mem::MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(1))];
            let mut control = rustix::net::SendAncillaryBuffer::new(&mut space);
            assert!(control.push(rustix::net::SendAncillaryMessage::ScmRights(&fds)));
            let count = 1u32.to_be_bytes();
            let _ = rustix::net::sendmsg(
                &stream,
                &[std::io::IoSlice::new(&count)],
                &mut control,
                rustix::net::SendFlags::NOSIGNAL,
            );
        }
    });
    (asked, listener)
}

#[test]
fn a_lane_of_unsealed_segments_is_refused_and_the_server_keeps_serving() {
    let m = Manager::start().unwrap();
    let d = m.dict::<u32, u32>().unwrap();
    // The hostile client's own segment, never sealed: it could cut it short at will.
    let segment = rustix::fs::memfd_create("multiproc-queue", rustix::fs::MemfdFlags::CLOEXEC)
        .expect("memfd_create");
    rustix::fs::ftruncate(&segment, 1 << 20).unwrap();
    let nonce = 0x5eed_0000_0000_0001u64 ^ u64::from(std::process::id());
    let (asked, listener) = fake_sharer(nonce, segment.try_clone().unwrap());

    let conn = Client::connect(m.address(), Some(m.authkey())).unwrap();
    let me = std::process::id();
    // Two queue handles, in the wire shape of a shared handle: (variant, pid, nonce, id).
    let lane = ((1u32, me, nonce, 1u64), (1u32, me, nonce, 2u64));
    let mut frame = Vec::new();
    Codec::Postcard.encode_into(&(FAST_LANE_ID, FAST_LANE_METHOD), &mut frame).unwrap();
    Codec::Postcard.encode_into(&lane, &mut frame).unwrap();
    conn.send_bytes(&frame).unwrap();
    let reply = conn.recv_bytes_timeout(LONG).unwrap();
    let reply: Result<Vec<u8>, WireError> = Codec::Postcard.decode(&reply).unwrap();
    assert!(asked.load(std::sync::atomic::Ordering::SeqCst) >= 1, "the server never asked");
    assert!(reply.is_err(), "the server took a lane of unsealed segments");

    // Shrinking it now harms nobody; the server serves this client and others.
    rustix::fs::ftruncate(&segment, 0).unwrap();
    let mut ping = Vec::new();
    Codec::Postcard.encode_into(&(0u64, "ping"), &mut ping).unwrap();
    Codec::Postcard.encode_into(&(), &mut ping).unwrap();
    conn.send_bytes(&ping).unwrap();
    let reply = conn.recv_bytes_timeout(LONG).unwrap();
    let reply: Result<Vec<u8>, WireError> = Codec::Postcard.decode(&reply).unwrap();
    assert!(reply.is_ok(), "{reply:?}");
    for i in 0..100 {
        d.set(&i, &i).unwrap();
    }
    assert_eq!(d.len().unwrap(), 100);
    m.shutdown().unwrap();
    // Ends the fake sharer's thread (its accept fails) and frees the socket's name.
    let _ = rustix::net::shutdown(&listener, rustix::net::Shutdown::Both);
}
