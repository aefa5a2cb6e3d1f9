//! `multiproc serve` bounds the handshakes it has pending: the oldest silent connections
//! give way, and a good client is served meanwhile.

use std::io::{ErrorKind, Read};
use std::net::TcpStream;
use std::sync::mpsc;
use std::thread;
use std::time::Duration;

use multiproc::connection::Address;
use multiproc::Manager;

/// Generous: only reached when something is broken.
const LONG: Duration = Duration::from_secs(30);
/// Longer than the test takes, so that no silent connection times out on its own.
const PATIENT: Duration = Duration::from_secs(120);
const KEY: &[u8] = b"the key";

/// A raw TCP connection that never says anything.
struct Silent(TcpStream);

impl Silent {
    /// Connects and waits for the server's challenge, so that the server takes the
    /// connections in the order they were made.
    fn connect_accepted(address: &Address) -> Silent {
        let Address::Tcp(a) = address else { panic!("expected a TCP address, got {address}") };
        let mut silent = Silent(TcpStream::connect(a).unwrap());
        silent.0.set_read_timeout(Some(LONG)).unwrap();
        let mut buf = vec![0u8; 512];
        let n = silent.0.read(&mut buf).unwrap_or(0);
        assert!(
            n > 4 && buf[4..n].starts_with(b"#CHALLENGE#"),
            "expected a challenge within {LONG:?}, got {:?}",
            &buf[..n]
        );
        silent
    }

    /// `true` if the server closes the connection within `wait`, `false` if it is still
    /// open when `wait` runs out.
    fn closed_within(&mut self, wait: Duration) -> bool {
        self.0.set_read_timeout(Some(wait.max(Duration::from_millis(1)))).unwrap();
        let mut buf = [0u8; 512];
        loop {
            match self.0.read(&mut buf) {
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

/// `multiproc serve --max-pending --handshake-timeout` reach the server.
#[test]
fn multiproc_serve_cli_bounds_pending_handshakes() {
    use std::io::BufRead;
    let bin = env!("CARGO_BIN_EXE_multiproc");
    let dir = std::env::temp_dir().join(format!("multiproc-accept-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let keyfile = dir.join("key");
    std::fs::write(&keyfile, KEY).unwrap();
    let mut child = std::process::Command::new(bin)
        .args(["serve", "--bind", "127.0.0.1:0", "--max-pending", "4", "--handshake-timeout"])
        .arg(PATIENT.as_secs().to_string())
        .arg("--authkey-file")
        .arg(&keyfile)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
    let result = std::panic::catch_unwind(|| {
        let address: Address = line.trim().strip_prefix("serving on ").unwrap().parse().unwrap();
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
    });
    let _ = child.kill();
    let _ = child.wait();
    let _ = std::fs::remove_dir_all(&dir);
    result.unwrap();
}
