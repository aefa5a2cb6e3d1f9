//! Listener and Client between Rust peers: addresses, both authentication dialects, wrong
//! and missing keys, and hostile peers that send garbage instead of a handshake.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread;
use std::time::Duration;

use hmac::{Hmac, Mac};
use multiproc::connection::{try_wait, wait_timeout, Address, AuthDialect, Client, Listener};
use multiproc::{Codec, Connection, Error};

/// Generous: only reached when something is broken.
const LONG: Duration = Duration::from_secs(30);
const KEY: &[u8] = b"the key";

/// A temporary directory removed (with its contents) on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> TempDir {
        static COUNT: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "multiproc-listener-{}-{}",
            std::process::id(),
            COUNT.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }

    fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A unique abstract socket name for this test process.
fn abstract_name(tag: &str) -> String {
    static COUNT: AtomicUsize = AtomicUsize::new(0);
    format!(
        "@multiproc-test-{}-{tag}-{}",
        std::process::id(),
        COUNT.fetch_add(1, Ordering::Relaxed)
    )
}

/// Accepts on `listener` while `connect` runs on another thread; returns both ends.
fn pair<C>(
    listener: &Listener,
    connect: C,
) -> (multiproc::Result<Connection>, multiproc::Result<Connection>)
where
    C: FnOnce(String) -> multiproc::Result<Connection> + Send,
{
    let address = listener.address().to_string();
    thread::scope(|s| {
        let client = s.spawn(move || connect(address));
        let server = listener.accept_timeout(LONG);
        (server, client.join().expect("client thread panicked"))
    })
}

/// A well-behaved client can still connect and talk: the listener survived.
fn assert_listener_still_works(listener: &Listener, key: Option<&[u8]>) {
    let (server, client) = pair(listener, |a| Client::connect_timeout(&a, key, LONG));
    let (server, client) = (server.unwrap(), client.unwrap());
    client.send_bytes(b"still works").unwrap();
    assert_eq!(server.recv_bytes_timeout(LONG).unwrap(), b"still works");
    server.send(&"and back").unwrap();
    assert_eq!(client.recv_timeout::<String>(LONG).unwrap(), "and back");
}

fn echo_round_trip(server: &Connection, client: &Connection) {
    client.send_bytes(b"ping").unwrap();
    assert_eq!(server.recv_bytes_timeout(LONG).unwrap(), b"ping");
    server.send(&(1u32, "pong".to_string())).unwrap();
    assert_eq!(client.recv_timeout::<(u32, String)>(LONG).unwrap(), (1, "pong".to_string()));
}

// ------------------------------------------------------------------------------------
// Addresses

#[test]
fn tcp_ipv4_with_port_zero() {
    let listener = Listener::bind("127.0.0.1:0", Some(KEY)).unwrap();
    let Address::Tcp(bound) = listener.address().clone() else { panic!("not TCP") };
    assert_ne!(bound.port(), 0);
    let (server, client) = pair(&listener, |a| Client::connect(&a, Some(KEY)));
    let (server, client) = (server.unwrap(), client.unwrap());
    echo_round_trip(&server, &client);
    // last_accepted is the client's own address.
    let Some(Address::Tcp(peer)) = listener.last_accepted() else { panic!("no peer") };
    assert!(peer.ip().is_loopback());
    assert_ne!(peer.port(), bound.port());
}

#[test]
fn tcp_ipv6() {
    let listener = match Listener::bind("[::1]:0", Some(KEY)) {
        Ok(l) => l,
        Err(e) => {
            println!("skipped: IPv6 loopback unavailable here ({e})");
            return;
        }
    };
    assert!(matches!(listener.address(), Address::Tcp(a) if a.is_ipv6() && a.port() != 0));
    let (server, client) = pair(&listener, |a| Client::connect(&a, Some(KEY)));
    echo_round_trip(&server.unwrap(), &client.unwrap());
}

#[test]
fn tcp_localhost_name() {
    let listener = Listener::bind("localhost:0", None).unwrap();
    let port = listener.address().port().unwrap();
    let (server, client) = pair(&listener, |_| Client::connect(&format!("localhost:{port}"), None));
    echo_round_trip(&server.unwrap(), &client.unwrap());
}

#[test]
fn large_message_over_tcp() {
    let listener = Listener::bind("127.0.0.1:0", Some(KEY)).unwrap();
    let (server, client) = pair(&listener, |a| Client::connect(&a, Some(KEY)));
    let (server, client) = (server.unwrap(), client.unwrap());
    let big: Vec<u8> = (0..5_000_000u32).map(|i| (i % 251) as u8).collect();
    thread::scope(|s| {
        s.spawn(|| client.send_bytes(&big).unwrap());
        assert_eq!(server.recv_bytes_timeout(LONG).unwrap(), big);
    });
}

#[test]
fn unix_socket_path_is_removed_on_drop() {
    let dir = TempDir::new();
    let path = dir.path("listener.sock");
    let listener = Listener::bind(path.to_str().unwrap(), Some(KEY)).unwrap();
    assert_eq!(listener.address(), &Address::Unix(path.clone()));
    assert!(path.exists());
    let (server, client) = pair(&listener, |a| Client::connect(&a, Some(KEY)));
    echo_round_trip(&server.unwrap(), &client.unwrap());
    // A Unix client has no name.
    assert_eq!(listener.last_accepted(), None);
    // An existing path cannot be bound twice.
    assert!(Listener::bind(path.to_str().unwrap(), None).is_err());
    drop(listener);
    assert!(!path.exists(), "the socket file outlived its listener");
}

#[test]
fn unix_socket_relative_path() {
    // "./name" is relative to the current directory; this test only checks the parsing
    // and display, without changing the process's directory.
    let a: Address = "./relative.sock".parse().unwrap();
    assert_eq!(a, Address::Unix(PathBuf::from("./relative.sock")));
    assert_eq!(a.to_string(), "./relative.sock");
}

#[test]
fn drop_leaves_a_replacement_socket_alone() {
    let dir = TempDir::new();
    let path = dir.path("replaced.sock");
    let first = Listener::bind(path.to_str().unwrap(), None).unwrap();
    std::fs::remove_file(&path).unwrap();
    let second = Listener::bind(path.to_str().unwrap(), None).unwrap();
    drop(first);
    assert!(path.exists(), "dropping the first listener removed the second one's socket");
    let (server, client) = pair(&second, |a| Client::connect(&a, None));
    echo_round_trip(&server.unwrap(), &client.unwrap());
    drop(second);
    assert!(!path.exists());
}

#[test]
fn abstract_socket_named() {
    let name = abstract_name("named");
    let listener = Listener::bind(&name, Some(KEY)).unwrap();
    assert_eq!(listener.address().to_string(), name);
    // CPython's spelling of the same address.
    let cpython_spelling = format!("\0{}", &name[1..]);
    let (server, client) = pair(&listener, move |_| Client::connect(&cpython_spelling, Some(KEY)));
    echo_round_trip(&server.unwrap(), &client.unwrap());
    // The name is taken while the listener lives, and free after.
    assert!(Listener::bind(&name, None).is_err());
    drop(listener);
    Listener::bind(&name, None).unwrap();
}

#[test]
fn abstract_socket_chosen_by_kernel() {
    let listener = Listener::bind("@", Some(KEY)).unwrap();
    let Address::Abstract(name) = listener.address() else { panic!("not abstract") };
    assert!(!name.is_empty());
    let (server, client) = pair(&listener, |a| Client::connect(&a, Some(KEY)));
    echo_round_trip(&server.unwrap(), &client.unwrap());
    assert!(matches!(Client::connect("@", None), Err(Error::InvalidArgument(_))));
}

#[test]
fn address_parsing() {
    let ok = [
        ("127.0.0.1:50000", "127.0.0.1:50000"),
        ("[::1]:5000", "[::1]:5000"),
        ("0.0.0.0:0", "0.0.0.0:0"),
        ("/tmp/x.sock", "/tmp/x.sock"),
        ("dir/x.sock", "dir/x.sock"),
        ("@name", "@name"),
        ("\0name", "@name"),
        ("@", "@"),
    ];
    for (text, shown) in ok {
        let a: Address = text.parse().unwrap_or_else(|e| panic!("{text:?}: {e}"));
        assert_eq!(a.to_string(), shown, "{text:?}");
        assert_eq!(shown.parse::<Address>().unwrap(), a, "{shown:?} does not parse back");
    }
    let localhost: Address = "localhost:5000".parse().unwrap();
    assert!(matches!(localhost, Address::Tcp(a) if a.ip().is_loopback() && a.port() == 5000));

    let long_path = format!("/tmp/{}", "x".repeat(200));
    let long_abstract = format!("@{}", "x".repeat(200));
    let bad = [
        "",
        "sock",
        "localhost",
        ":5000",
        "host:",
        "host:65536",
        "host:port",
        "::1:5000",
        "[::1]",
        "[::1]:x",
        "1.2.3.4:-1",
        "/tmp/nul\0inside",
        long_path.as_str(),
        long_abstract.as_str(),
    ];
    for text in bad {
        match text.parse::<Address>() {
            Err(Error::InvalidArgument(message)) => assert!(!message.is_empty()),
            other => panic!("{text:?} parsed as {other:?}"),
        }
    }
    assert!(matches!(Listener::bind("no-port", None), Err(Error::InvalidArgument(_))));
    assert!(matches!(Client::connect("no-port", None), Err(Error::InvalidArgument(_))));
}

#[test]
fn connecting_to_nothing_fails() {
    // A port bound by a socket that does not listen: connecting is refused (and no
    // other test can take the port meanwhile).
    let bound = rustix::net::socket(
        rustix::net::AddressFamily::INET,
        rustix::net::SocketType::STREAM,
        None,
    )
    .unwrap();
    rustix::net::bind(&bound, &std::net::SocketAddr::from(([127, 0, 0, 1], 0))).unwrap();
    let local = std::net::SocketAddr::try_from(rustix::net::getsockname(&bound).unwrap()).unwrap();
    match Client::connect_timeout(&local.to_string(), None, LONG) {
        Err(Error::Io(e)) => assert_eq!(e.kind(), std::io::ErrorKind::ConnectionRefused),
        other => panic!("{other:?}"),
    }
    let dir = TempDir::new();
    let missing = dir.path("missing.sock");
    assert!(matches!(Client::connect(missing.to_str().unwrap(), None), Err(Error::Io(_))));
    assert!(Client::connect(&abstract_name("nobody"), None).is_err());
}

// ------------------------------------------------------------------------------------
// Authentication

#[test]
fn both_dialects_rust_to_rust() {
    for server_dialect in [AuthDialect::Modern, AuthDialect::Legacy] {
        for client_dialect in [AuthDialect::Modern, AuthDialect::Legacy] {
            let listener =
                Listener::bind("127.0.0.1:0", Some(KEY)).unwrap().with_dialect(server_dialect);
            let (server, client) = pair(&listener, |a| {
                Client::new(&a, Some(KEY))?
                    .with_dialect(client_dialect)
                    .with_timeout(Some(LONG))
                    .open()
            });
            let (server, client) = (server.unwrap(), client.unwrap());
            echo_round_trip(&server, &client);
        }
    }
}

#[test]
fn empty_key_is_a_key() {
    let listener = Listener::bind("127.0.0.1:0", Some(b"")).unwrap();
    let (server, client) = pair(&listener, |a| Client::connect_timeout(&a, Some(b""), LONG));
    echo_round_trip(&server.unwrap(), &client.unwrap());
    let (server, client) = pair(&listener, |a| Client::connect_timeout(&a, Some(b"x"), LONG));
    assert!(matches!(server, Err(Error::Authentication(_))));
    assert!(matches!(client, Err(Error::Authentication(_))));
}

#[test]
fn wrong_key_is_rejected_on_both_sides() {
    for dialect in [AuthDialect::Modern, AuthDialect::Legacy] {
        let listener = Listener::bind("127.0.0.1:0", Some(KEY)).unwrap().with_dialect(dialect);
        let (server, client) = pair(&listener, |a| {
            Client::new(&a, Some(b"not the key"))?
                .with_dialect(dialect)
                .with_timeout(Some(LONG))
                .open()
        });
        match server {
            Err(Error::Authentication(m)) => assert!(m.contains("wrong"), "{m}"),
            other => panic!("server: {other:?}"),
        }
        match client {
            Err(Error::Authentication(m)) => assert!(m.contains("rejected"), "{m}"),
            other => panic!("client: {other:?}"),
        }
        assert_listener_still_works(&listener, Some(KEY));
    }
}

#[test]
fn client_without_key_is_rejected() {
    let listener = Listener::bind("127.0.0.1:0", Some(KEY)).unwrap();
    let (server, client) = pair(&listener, |a| {
        let conn = Client::connect(&a, None)?;
        // It believes it is connected and sends data, which the listener takes for a
        // (wrong) answer to its challenge.
        conn.send_bytes(b"hello")?;
        // What it receives is the challenge, as a plain message.
        let challenge = conn.recv_bytes_timeout(LONG)?;
        assert!(challenge.starts_with(b"#CHALLENGE#{sha256}"));
        Ok(conn)
    });
    assert!(matches!(server, Err(Error::Authentication(_))), "{server:?}");
    let client = client.unwrap();
    assert_eq!(client.recv_bytes_timeout(LONG).unwrap(), b"#FAILURE#");
    assert_listener_still_works(&listener, Some(KEY));
}

#[test]
fn silent_client_without_key_times_out_the_handshake() {
    let listener = Listener::bind("127.0.0.1:0", Some(KEY))
        .unwrap()
        .with_handshake_timeout(Some(Duration::from_millis(200)));
    let address = listener.address().to_string();
    let silent = TcpStream::connect(&address).unwrap();
    match listener.accept_timeout(LONG) {
        Err(Error::Authentication(m)) => assert!(m.contains("within"), "{m}"),
        other => panic!("{other:?}"),
    }
    drop(silent);
    let listener = listener.with_handshake_timeout(Some(LONG));
    assert_listener_still_works(&listener, Some(KEY));
}

#[test]
fn listener_without_key_is_rejected_by_client_with_key() {
    let listener = Listener::bind("127.0.0.1:0", None).unwrap();
    // The listener's program greets first: not a challenge.
    let (server, client) = thread::scope(|s| {
        let address = listener.address().to_string();
        let client = s.spawn(move || Client::connect_timeout(&address, Some(KEY), LONG));
        let server = listener.accept_timeout(LONG).unwrap();
        server.send_bytes(b"hello, no key here").unwrap();
        (server, client.join().unwrap())
    });
    match client {
        Err(Error::Authentication(m)) => assert!(m.contains("expected a challenge"), "{m}"),
        other => panic!("{other:?}"),
    }
    drop(server);
    // The listener's program waits for the client to speak first: the client's timeout
    // ends the wait.
    let (server, client) =
        pair(&listener, |a| Client::connect_timeout(&a, Some(KEY), Duration::from_millis(200)));
    assert!(matches!(client, Err(Error::Timeout(_))), "{client:?}");
    drop(server);
}

#[test]
fn many_clients_at_once() {
    const N: usize = 8;
    let listener = Listener::bind("127.0.0.1:0", Some(KEY)).unwrap();
    let address = listener.address().to_string();
    thread::scope(|s| {
        for i in 0..N {
            let address = address.clone();
            s.spawn(move || {
                let conn = Client::connect_timeout(&address, Some(KEY), LONG).unwrap();
                conn.send(&i).unwrap();
                assert_eq!(conn.recv_timeout::<usize>(LONG).unwrap(), i * 10);
            });
        }
        for _ in 0..N {
            let conn = listener.accept_timeout(LONG).unwrap();
            let i: usize = conn.recv_timeout(LONG).unwrap();
            conn.send(&(i * 10)).unwrap();
        }
    });
}

#[test]
fn accept_timeout_times_out() {
    let listener = Listener::bind("127.0.0.1:0", Some(KEY)).unwrap();
    match listener.accept_timeout(Duration::from_millis(50)) {
        Err(Error::Timeout(d)) => assert_eq!(d, Duration::from_millis(50)),
        other => panic!("{other:?}"),
    }
    let unix = Listener::bind(&abstract_name("timeout"), None).unwrap();
    assert!(matches!(unix.accept_timeout(Duration::ZERO), Err(Error::Timeout(_))));
}

#[test]
fn listener_is_waitable() {
    let listener = Listener::bind("127.0.0.1:0", None).unwrap();
    assert!(matches!(try_wait(&[&listener]), Err(Error::Timeout(_))));
    let client = Client::connect(&listener.address().to_string(), None).unwrap();
    assert_eq!(wait_timeout(&[&listener], LONG).unwrap(), vec![0]);
    let server = listener.accept_timeout(LONG).unwrap();
    echo_round_trip(&server, &client);
}

#[test]
fn pickle_codec_over_a_listener() {
    let listener = Listener::bind(&abstract_name("pickle"), Some(KEY)).unwrap();
    let (server, client) = pair(&listener, |a| Client::connect(&a, Some(KEY)));
    let server = server.unwrap().with_codec(Codec::Pickle);
    let client = client.unwrap().with_codec(Codec::Pickle);
    client.send(&vec![1i64, 2, 3]).unwrap();
    assert_eq!(server.recv_timeout::<Vec<i64>>(LONG).unwrap(), vec![1, 2, 3]);
}

// ------------------------------------------------------------------------------------
// The exact wire format, checked by hand

fn write_frame(stream: &mut impl Write, payload: &[u8]) {
    stream.write_all(&(payload.len() as i32).to_be_bytes()).unwrap();
    stream.write_all(payload).unwrap();
}

fn read_frame(stream: &mut impl Read) -> Vec<u8> {
    let mut header = [0u8; 4];
    stream.read_exact(&mut header).unwrap();
    let len = i32::from_be_bytes(header);
    assert!((0..=4096).contains(&len), "unexpected frame length {len}");
    let mut payload = vec![0u8; len as usize];
    stream.read_exact(&mut payload).unwrap();
    payload
}

fn hmac_md5(key: &[u8], message: &[u8]) -> Vec<u8> {
    let mut mac = <Hmac<md5::Md5> as Mac>::new_from_slice(key).unwrap();
    mac.update(message);
    mac.finalize().into_bytes().to_vec()
}

fn hmac_sha256(key: &[u8], message: &[u8]) -> Vec<u8> {
    let mut mac = <Hmac<sha2::Sha256> as Mac>::new_from_slice(key).unwrap();
    mac.update(message);
    mac.finalize().into_bytes().to_vec()
}

/// Plays CPython's client by hand against our listener: `answer` computes the answer to
/// the listener's challenge message (after `#CHALLENGE#`), and `ours` is the challenge
/// message the hand-played client sends back. Returns the listener's challenge message.
fn hand_client(listener: &Listener, answer: impl Fn(&[u8]) -> Vec<u8>, ours: &[u8]) -> Vec<u8> {
    let address = listener.address().to_string();
    thread::scope(|s| {
        let server = s.spawn(|| listener.accept_timeout(LONG));
        let mut raw = TcpStream::connect(&address).unwrap();
        raw.set_read_timeout(Some(LONG)).unwrap();
        let challenge = read_frame(&mut raw);
        let message = challenge.strip_prefix(b"#CHALLENGE#").expect("no #CHALLENGE# tag").to_vec();
        write_frame(&mut raw, &answer(&message));
        assert_eq!(read_frame(&mut raw), b"#WELCOME#");
        // Now we challenge the listener, which must answer in our challenge's dialect.
        let mut challenge = b"#CHALLENGE#".to_vec();
        challenge.extend_from_slice(ours);
        write_frame(&mut raw, &challenge);
        let reply = read_frame(&mut raw);
        let expected = if let Some(rest) = ours.strip_prefix(b"{sha256}") {
            assert!(rest.len() >= 20);
            let mut r = b"{sha256}".to_vec();
            r.extend(hmac_sha256(KEY, ours));
            r
        } else {
            hmac_md5(KEY, ours)
        };
        assert_eq!(reply, expected);
        write_frame(&mut raw, b"#WELCOME#");
        let conn = server.join().unwrap().unwrap();
        conn.send_bytes(b"done").unwrap();
        assert_eq!(read_frame(&mut raw), b"done");
        message
    })
}

/// A 3.12+ client's challenge.
fn modern_challenge() -> Vec<u8> {
    let mut m = b"{sha256}".to_vec();
    m.extend((0..40u8).map(|i| i.wrapping_mul(37)));
    m
}

#[test]
fn wire_format_modern_challenge() {
    let listener = Listener::bind("127.0.0.1:0", Some(KEY)).unwrap();
    // A 3.12+ client: {sha256}-prefixed HMAC-SHA256 over the whole message.
    let message = hand_client(
        &listener,
        |m| {
            let mut r = b"{sha256}".to_vec();
            r.extend(hmac_sha256(KEY, m));
            r
        },
        &modern_challenge(),
    );
    assert!(message.starts_with(b"{sha256}"));
    assert_eq!(message.len(), 8 + 40);
    // A 3.11 client: raw HMAC-MD5 over the whole message, prefix included.
    // Its challenge has 20 bytes and wants a raw HMAC-MD5 back.
    hand_client(&listener, |m| hmac_md5(KEY, m), &[5u8; 20]);
    // {md5}-prefixed, as CPython 3.12 also accepts.
    hand_client(
        &listener,
        |m| {
            let mut r = b"{md5}".to_vec();
            r.extend(hmac_md5(KEY, m));
            r
        },
        &modern_challenge(),
    );
}

#[test]
fn wire_format_legacy_challenge() {
    let listener =
        Listener::bind("127.0.0.1:0", Some(KEY)).unwrap().with_dialect(AuthDialect::Legacy);
    let message = hand_client(&listener, |m| hmac_md5(KEY, m), &[5u8; 20]);
    assert_eq!(message.len(), 20);
    // Two challenges are never the same.
    let other = hand_client(&listener, |m| hmac_md5(KEY, m), &modern_challenge());
    assert_ne!(message, other);
}

// ------------------------------------------------------------------------------------
// Hostile clients: errors, no panic, and the listener goes on

/// Writes to a hostile stream, ignoring errors: the listener may hang up at any moment.
fn send_raw(raw: &mut TcpStream, bytes: &[u8]) {
    let _ = raw.write_all(bytes);
}

/// Connects a raw TCP stream, lets `misbehave` use it (on its own thread), and checks that
/// `accept` fails with an authentication error; then a good client still gets through.
fn hostile_client(listener: &Listener, misbehave: impl FnOnce(&mut TcpStream) + Send) -> String {
    let address = listener.address().to_string();
    let result = thread::scope(|s| {
        let raw = s.spawn(move || {
            let mut raw = TcpStream::connect(address).unwrap();
            raw.set_read_timeout(Some(LONG)).unwrap();
            misbehave(&mut raw);
            raw
        });
        let result = listener.accept_timeout(LONG);
        // `raw` stays open until accept has judged it (closing a socket with unread data
        // resets the connection, which would test something else).
        drop(raw.join().unwrap());
        result
    });
    let message = match result {
        Err(Error::Authentication(m)) => m,
        other => panic!("expected an authentication error, got {other:?}"),
    };
    assert_listener_still_works(listener, Some(KEY));
    message
}

fn frame_bytes(payload: &[u8]) -> Vec<u8> {
    let mut out = (payload.len() as i32).to_be_bytes().to_vec();
    out.extend_from_slice(payload);
    out
}

#[test]
fn hostile_clients_are_rejected() {
    let listener = Listener::bind("127.0.0.1:0", Some(KEY))
        .unwrap()
        .with_handshake_timeout(Some(Duration::from_secs(5)));

    // An HTTP request: "GET " announces a frame of about 1.2 GB.
    let m = hostile_client(&listener, |raw| send_raw(raw, b"GET / HTTP/1.1\r\n\r\n"));
    assert!(m.contains("at most 256 bytes"), "{m}");

    // A frame that announces 2^63 bytes (the long form: -1, then 8 bytes).
    let m = hostile_client(&listener, |raw| {
        send_raw(raw, &(-1i32).to_be_bytes());
        send_raw(raw, &(1u64 << 63).to_be_bytes());
    });
    assert!(m.contains("announced"), "{m}");

    // The long form announcing a "mere" 2^40 bytes.
    hostile_client(&listener, |raw| {
        send_raw(raw, &(-1i32).to_be_bytes());
        send_raw(raw, &(1u64 << 40).to_be_bytes());
    });

    // A negative length.
    hostile_client(&listener, |raw| send_raw(raw, &(-7i32).to_be_bytes()));

    // An oversize answer, actually sent.
    hostile_client(&listener, |raw| send_raw(raw, &frame_bytes(&vec![b'x'; 1 << 20])));

    // A truncated frame: 100 bytes announced, 10 sent, then end of stream.
    let m = hostile_client(&listener, |raw| {
        send_raw(raw, &100i32.to_be_bytes());
        send_raw(raw, &[0u8; 10]);
        let _ = raw.shutdown(Shutdown::Write);
    });
    assert!(m.contains("malformed") || m.contains("closed"), "{m}");

    // A truncated header.
    hostile_client(&listener, |raw| {
        send_raw(raw, &[0u8, 0]);
        let _ = raw.shutdown(Shutdown::Write);
    });

    // Nothing at all, then end of stream.
    let m = hostile_client(&listener, |raw| {
        let _ = raw.shutdown(Shutdown::Write);
    });
    assert!(m.contains("closed"), "{m}");

    // Well-framed answers that are wrong in every way.
    for answer in [
        &b""[..],
        b"{sha256}",
        b"{sha256}short",
        b"{sha3_256}0123456789012345678901234567890123456789",
        b"{unknown}0123456789012345678901234567890123456789",
        b"{sha256",
        &[0u8; 16],
        &[0u8; 20],
        &[0xffu8; 200],
    ] {
        hostile_client(&listener, |raw| send_raw(raw, &frame_bytes(answer)));
    }

    // A correct answer, then garbage where the answer to the listener's challenge goes.
    hostile_client(&listener, |raw| {
        let challenge = read_frame(raw);
        write_frame(raw, &hmac_md5(KEY, &challenge[11..]));
        assert_eq!(read_frame(raw), b"#WELCOME#");
        send_raw(raw, &frame_bytes(b"#CHALLENGE#too short"));
    });
}

/// Runs our client against a raw TCP server that sends `reply`; returns the client's
/// error.
fn hostile_server(reply: &[u8], authkey: Option<&[u8]>) -> Error {
    let server = TcpListener::bind("127.0.0.1:0").unwrap();
    let address = server.local_addr().unwrap().to_string();
    thread::scope(|s| {
        let client = s.spawn(move || Client::connect_timeout(&address, authkey, LONG));
        let (mut raw, _) = server.accept().unwrap();
        send_raw(&mut raw, reply);
        // End of stream after the reply, so that the client does not wait for more.
        let _ = raw.shutdown(Shutdown::Write);
        let result = client.join().unwrap();
        // Drain whatever the client sent before closing.
        raw.set_read_timeout(Some(LONG)).unwrap();
        let mut sink = Vec::new();
        let _ = raw.read_to_end(&mut sink);
        result.expect_err("the client accepted a hostile server")
    })
}

#[test]
fn hostile_servers_are_rejected() {
    let mut huge = (-1i32).to_be_bytes().to_vec();
    huge.extend((1u64 << 63).to_be_bytes());
    let mut oversize = b"#CHALLENGE#".to_vec();
    oversize.extend(vec![7u8; 100_000]);
    let mut unsupported = b"#CHALLENGE#{sha3_384}".to_vec();
    unsupported.extend([1u8; 40]);
    let mut no_prefix = b"#CHALLENGE#".to_vec();
    no_prefix.extend([1u8; 41]);
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("garbage", b"HTTP/1.1 400 Bad Request\r\n\r\n".to_vec()),
        ("2^63 bytes", huge),
        ("oversize challenge", frame_bytes(&oversize)),
        ("not a challenge", frame_bytes(b"#WELCOME#")),
        ("short challenge", frame_bytes(b"#CHALLENGE#abc")),
        ("unsupported digest", frame_bytes(&unsupported)),
        ("no digest prefix", frame_bytes(&no_prefix)),
        ("truncated frame", {
            let mut v = 50i32.to_be_bytes().to_vec();
            v.extend(b"#CHALLENGE#");
            v
        }),
        ("nothing", Vec::new()),
    ];
    for (what, reply) in cases {
        match hostile_server(&reply, Some(KEY)) {
            Error::Authentication(_) => {}
            other => panic!("{what}: expected an authentication error, got {other:?}"),
        }
    }
    // A proper challenge, then something other than #WELCOME#.
    let mut challenge = b"#CHALLENGE#".to_vec();
    challenge.extend([9u8; 20]);
    let mut reply = frame_bytes(&challenge);
    reply.extend(frame_bytes(b"#FAILURE#"));
    match hostile_server(&reply, Some(KEY)) {
        Error::Authentication(m) => assert!(m.contains("rejected"), "{m}"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn socket_file_cleanup_leaves_nothing_behind() {
    let dir = TempDir::new();
    let path: PathBuf = dir.path("a.sock");
    {
        let listener = Listener::bind(path.to_str().unwrap(), None).unwrap();
        let _client = Client::connect(path.to_str().unwrap(), None).unwrap();
        let _server = listener.accept_timeout(LONG).unwrap();
    }
    assert!(!Path::new(&path).exists());
    assert_eq!(std::fs::read_dir(&dir.0).unwrap().count(), 0);
}
