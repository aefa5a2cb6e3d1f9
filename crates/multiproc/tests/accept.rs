//! Accepting many clients at once: connections that never answer the authentication
//! challenge must not hold up the clients behind them, on a [`Listener`] or a manager
//! [`Server`], over TCP and Unix sockets.

use std::io::{ErrorKind, Read};
use std::net::TcpStream;
use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr as UnixSocketAddr, UnixStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::thread;
use std::time::Duration;

use multiproc::connection::{Address, Client, Listener};
use multiproc::managers::Server;
use multiproc::{Error, Manager};

/// Generous: only reached when something is broken.
const LONG: Duration = Duration::from_secs(30);
/// Longer than any test here takes, so that no silent connection times out and makes way
/// for the good client: only handshakes running side by side can let it through.
const PATIENT: Duration = Duration::from_secs(120);
const KEY: &[u8] = b"the key";
const SILENT: usize = 50;

/// A unique abstract socket name for this test process.
fn abstract_name(tag: &str) -> String {
    static COUNT: AtomicUsize = AtomicUsize::new(0);
    format!(
        "@multiproc-accept-{}-{tag}-{}",
        std::process::id(),
        COUNT.fetch_add(1, Ordering::Relaxed)
    )
}

/// A raw connection that never says anything.
enum Silent {
    Tcp(TcpStream),
    Unix(UnixStream),
}

impl Silent {
    fn connect(address: &Address) -> Silent {
        match address {
            Address::Tcp(a) => Silent::Tcp(TcpStream::connect(a).unwrap()),
            Address::Abstract(name) => Silent::Unix(
                UnixStream::connect_addr(&UnixSocketAddr::from_abstract_name(name).unwrap())
                    .unwrap(),
            ),
            Address::Unix(path) => Silent::Unix(UnixStream::connect(path).unwrap()),
            other => panic!("unexpected address {other}"),
        }
    }

    /// Connects and waits until the server has accepted the connection: its challenge has
    /// come. Connecting one after the other this way fixes the order in which the server
    /// takes the connections (TCP connections made in a row may otherwise reach the
    /// server's queue out of order on a busy machine).
    fn connect_accepted(address: &Address) -> Silent {
        let mut silent = Silent::connect(address);
        let first = silent.received(LONG);
        assert!(
            first.len() > 4 && first[4..].starts_with(b"#CHALLENGE#"),
            "expected a challenge within {LONG:?}, got {first:?}"
        );
        silent
    }

    /// The first bytes the server sends, waiting up to `wait` for them (none: empty).
    fn received(&mut self, wait: Duration) -> Vec<u8> {
        let mut buf = vec![0u8; 512];
        let n = match self {
            Silent::Tcp(s) => {
                s.set_read_timeout(Some(wait)).unwrap();
                s.read(&mut buf)
            }
            Silent::Unix(s) => {
                s.set_read_timeout(Some(wait)).unwrap();
                s.read(&mut buf)
            }
        };
        buf.truncate(n.unwrap_or(0));
        buf
    }

    /// Reads (and discards) what the server sent, for up to `wait`: `true` if the server
    /// closed the connection, `false` if it is still open when `wait` runs out.
    fn closed_within(&mut self, wait: Duration) -> bool {
        let wait = wait.max(Duration::from_millis(1));
        let stream: &mut dyn Read = match self {
            Silent::Tcp(s) => {
                s.set_read_timeout(Some(wait)).unwrap();
                s
            }
            Silent::Unix(s) => {
                s.set_read_timeout(Some(wait)).unwrap();
                s
            }
        };
        let mut buf = [0u8; 512];
        loop {
            match stream.read(&mut buf) {
                Ok(0) => return true,
                Ok(_) => continue,
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                    return false
                }
                Err(e) if e.kind() == ErrorKind::ConnectionReset => return true,
                Err(e) => panic!("reading a silent connection: {e}"),
            }
        }
    }
}

/// Opens `SILENT` connections that never answer, then connects a good client and checks it
/// is served while every silent connection is still open and unanswered.
fn listener_serves_past_silent_connections(bind: &str) {
    let listener = Listener::bind(bind, Some(KEY)).unwrap().with_handshake_timeout(Some(PATIENT));
    let address = listener.address().clone();
    let mut silent: Vec<Silent> = (0..SILENT).map(|_| Silent::connect(&address)).collect();

    // Nothing here fails a handshake: the first connection accept returns is the good one.
    let server = thread::spawn(move || {
        let conn = listener.accept().unwrap();
        let hello = conn.recv_bytes().unwrap();
        conn.send_bytes(&[&hello[..], b", served"].concat()).unwrap();
        // Still holding the silent connections' handshakes.
        listener
    });
    let (done, finished) = mpsc::channel();
    let text = address.to_string();
    thread::spawn(move || {
        let result = Client::connect(&text, Some(KEY)).and_then(|conn| {
            conn.send_bytes(b"hello")?;
            conn.recv_bytes()
        });
        let _ = done.send(result);
    });
    match finished.recv_timeout(LONG) {
        Ok(Ok(reply)) => assert_eq!(reply, b"hello, served"),
        Ok(Err(e)) => panic!("the good client failed: {e}"),
        Err(_) => panic!(
            "the good client was not served within {LONG:?} while {SILENT} silent connections \
             waited for their handshakes"
        ),
    }
    let listener = server.join().unwrap();
    for (i, s) in silent.iter_mut().enumerate() {
        assert!(!s.closed_within(Duration::ZERO), "silent connection {i} was closed");
    }
    drop(listener);
}

#[test]
fn listener_tcp_serves_a_client_while_fifty_connections_stay_silent() {
    listener_serves_past_silent_connections("127.0.0.1:0");
}

#[test]
fn listener_unix_serves_a_client_while_fifty_connections_stay_silent() {
    listener_serves_past_silent_connections(&abstract_name("listener"));
}

/// The same against a manager server, whose client slots (`max_clients`) are as many as the
/// silent connections: those must not take them.
fn manager_serves_past_silent_connections(bind: &str) {
    let server = Server::bind(bind, KEY).unwrap().max_clients(SILENT).handshake_timeout(PATIENT);
    let address = server.address().clone();
    thread::spawn(move || server.serve_forever());
    let mut silent: Vec<Silent> = (0..SILENT).map(|_| Silent::connect(&address)).collect();

    let (done, finished) = mpsc::channel();
    let text = address.to_string();
    thread::spawn(move || {
        let result = Manager::connect(&text, KEY).and_then(|m| {
            let v = m.value_named("v", 1u8)?;
            v.set(&2)?;
            v.get()
        });
        let _ = done.send(result);
    });
    match finished.recv_timeout(LONG) {
        Ok(Ok(value)) => assert_eq!(value, 2),
        Ok(Err(e)) => panic!("the good client failed: {e}"),
        Err(_) => panic!(
            "the good client was not served within {LONG:?} while {SILENT} silent connections \
             waited for their handshakes"
        ),
    }
    for (i, s) in silent.iter_mut().enumerate() {
        assert!(!s.closed_within(Duration::ZERO), "silent connection {i} was closed");
    }
}

#[test]
fn manager_tcp_serves_a_client_while_fifty_connections_stay_silent() {
    manager_serves_past_silent_connections("127.0.0.1:0");
}

#[test]
fn manager_unix_serves_a_client_while_fifty_connections_stay_silent() {
    manager_serves_past_silent_connections(&abstract_name("manager"));
}

/// `silent` connections and then a good client against a listener that runs at most
/// `cap` handshakes: the oldest silent ones give way (each reported by `accept`), the
/// newest stay open, and the good client is served.
fn oldest_give_way(bind: &str, cap: usize, silent: usize) {
    let listener = Listener::bind(bind, Some(KEY))
        .unwrap()
        .with_handshake_timeout(Some(PATIENT))
        .with_max_pending(cap);
    let address = listener.address().clone();
    let server = thread::spawn(move || {
        let mut evicted = 0;
        loop {
            match listener.accept() {
                Ok(conn) => {
                    conn.send_bytes(b"served").unwrap();
                    return (listener, evicted);
                }
                Err(Error::Authentication(m)) if m.contains("waited longest") => evicted += 1,
                Err(e) => panic!("accept failed: {e}"),
            }
        }
    });
    let mut silent: Vec<Silent> = (0..silent).map(|_| Silent::connect_accepted(&address)).collect();
    let text = address.to_string();
    let (done, finished) = mpsc::channel();
    thread::spawn(move || {
        let _ = done.send(Client::connect(&text, Some(KEY)).and_then(|c| c.recv_bytes()));
    });
    match finished.recv_timeout(LONG) {
        Ok(reply) => assert_eq!(reply.unwrap(), b"served"),
        Err(_) => panic!("the good client was not served within {LONG:?}"),
    }
    let (listener, evicted) = server.join().unwrap();
    // Connections are accepted in the order they came: with the good client's, all but the
    // newest `cap - 1` silent ones had to go.
    let gone = silent.len() + 1 - cap;
    assert_eq!(evicted, gone);
    for (i, s) in silent.iter_mut().enumerate() {
        if i < gone {
            assert!(s.closed_within(LONG), "silent connection {i} should have been closed");
        } else {
            assert!(!s.closed_within(Duration::ZERO), "silent connection {i} was closed");
        }
    }
    drop(listener);
}

#[test]
fn listener_tcp_closes_the_oldest_silent_connections_beyond_max_pending() {
    oldest_give_way("127.0.0.1:0", 4, 10);
}

#[test]
fn listener_unix_closes_the_oldest_silent_connections_beyond_max_pending() {
    oldest_give_way(&abstract_name("evict"), 4, 10);
}

#[test]
fn manager_closes_the_oldest_silent_connections_beyond_max_pending() {
    let server =
        Server::bind("127.0.0.1:0", KEY).unwrap().handshake_timeout(PATIENT).max_pending(4);
    let address = server.address().clone();
    thread::spawn(move || server.serve_forever());
    let mut silent: Vec<Silent> = (0..10).map(|_| Silent::connect_accepted(&address)).collect();
    let (done, finished) = mpsc::channel();
    let text = address.to_string();
    thread::spawn(move || {
        let _ = done.send(Manager::connect(&text, KEY).and_then(|m| m.list::<u8>()?.len()));
    });
    match finished.recv_timeout(LONG) {
        Ok(len) => assert_eq!(len.unwrap(), 0),
        Err(_) => panic!("the good client was not served within {LONG:?}"),
    }
    for (i, s) in silent.iter_mut().enumerate() {
        if i < 7 {
            assert!(s.closed_within(LONG), "silent connection {i} should have been closed");
        } else {
            assert!(!s.closed_within(Duration::ZERO), "silent connection {i} was closed");
        }
    }
}

/// A handshake under way when `accept_timeout` gives up goes on at the next call, against
/// its own deadline, not the caller's.
#[test]
fn a_handshake_outlives_an_accept_timeout() {
    let listener = Listener::bind(&abstract_name("outlive"), Some(KEY))
        .unwrap()
        .with_handshake_timeout(Some(PATIENT));
    let address = listener.address().clone();
    // A raw client that reads the challenge (so the handshake is under way) and stops.
    let mut raw = Silent::connect(&address);
    let r = listener.accept_timeout(Duration::from_millis(50));
    assert!(matches!(r, Err(Error::Timeout(_))), "{r:?}");
    // It was accepted: its challenge came.
    let first = raw.received(LONG);
    assert!(first.len() > 4 && first[4..].starts_with(b"#CHALLENGE#"), "{first:?}");
    // A good client still gets through, and the pending one is still open afterwards.
    let text = address.to_string();
    let client = thread::spawn(move || Client::connect(&text, Some(KEY)));
    let conn = listener.accept_timeout(LONG).unwrap();
    client.join().unwrap().unwrap().send_bytes(b"hi").unwrap();
    assert_eq!(conn.recv_bytes().unwrap(), b"hi");
    assert!(!raw.closed_within(Duration::ZERO), "the pending connection was closed");
}
