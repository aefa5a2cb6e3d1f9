//! A real `redis-server` for a test: found on `PATH` (or in `/usr/bin`, `/usr/sbin`, or at
//! `$REDIS_SERVER`),
//! started on a free loopback port without persistence in a temporary directory of its own,
//! and killed, reaped and cleaned up when the [`RedisServer`] is dropped.
//!
//! A test whose `redis-server` is missing fails when `CI` is `true` (or `1`); elsewhere it
//! passes without running, after one line on stderr names what the binary skipped (as for
//! a missing CPython, see `python.rs`).

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use super::python::{in_ci, terminal_line};

/// How long a server may take to start answering PING.
const START_DEADLINE: Duration = Duration::from_secs(30);

/// The `redis-server` program, if there is one: `$REDIS_SERVER` when it is set (a path; a
/// path that is not a file counts as missing), else the first on `PATH`, in `/usr/bin` or
/// in `/usr/sbin`.
pub fn find_server() -> Option<PathBuf> {
    if let Some(program) = std::env::var_os("REDIS_SERVER").filter(|p| !p.is_empty()) {
        return Some(PathBuf::from(program)).filter(|p| p.is_file());
    }
    let mut dirs: Vec<PathBuf> =
        std::env::var_os("PATH").map(|p| std::env::split_paths(&p).collect()).unwrap_or_default();
    dirs.push("/usr/bin".into());
    dirs.push("/usr/sbin".into());
    dirs.into_iter().map(|d| d.join("redis-server")).find(|p| p.is_file())
}

/// A running `redis-server` of this test.
pub struct RedisServer {
    child: Option<Child>,
    port: u16,
    dir: PathBuf,
    program: PathBuf,
    /// The arguments it runs with (the same again on a restart).
    args: Vec<String>,
}

impl RedisServer {
    /// Starts a server for a test of `binary` named `test`. `None` (after the skip line)
    /// when `redis-server` is missing outside CI; a panic in CI, or when it does not start.
    pub fn start(binary: &str, test: &str) -> Option<RedisServer> {
        RedisServer::start_binding(binary, test, &["127.0.0.1"])
    }

    /// [`start`](Self::start), listening on `addresses` (which must exist, and include
    /// `127.0.0.1`, which [`url`](Self::url) names), e.g. loopback and the host ends of
    /// veth pairs.
    pub fn start_binding(binary: &str, test: &str, addresses: &[&str]) -> Option<RedisServer> {
        RedisServer::start_with(binary, test, addresses, &["--save", "", "--appendonly", "no"])
    }

    /// [`start`](Self::start) with its append-only file on, written through at every
    /// write (`appendfsync always`): what it acknowledged survives a [`restart`](Self::restart).
    pub fn start_persistent(binary: &str, test: &str) -> Option<RedisServer> {
        let persistence = ["--save", "", "--appendonly", "yes", "--appendfsync", "always"];
        RedisServer::start_with(binary, test, &["127.0.0.1"], &persistence)
    }

    fn start_with(
        binary: &str,
        test: &str,
        addresses: &[&str],
        persistence: &[&str],
    ) -> Option<RedisServer> {
        let program = require(binary)?;
        let mut last_failure = String::new();
        // A free port can be taken by someone else before the server binds it: a few tries.
        for _ in 0..5 {
            let port = free_port();
            let dir = std::env::temp_dir().join(format!(
                "multiproc-redis-{}-{port}-{}",
                std::process::id(),
                test.replace(|c: char| !c.is_ascii_alphanumeric(), "_")
            ));
            std::fs::create_dir_all(&dir).expect("create the server's directory");
            let mut args = vec!["--port".to_string(), port.to_string(), "--bind".to_string()];
            args.extend(addresses.iter().map(|a| a.to_string()));
            args.extend(["--protected-mode", "no"].map(String::from));
            args.extend(persistence.iter().map(|a| a.to_string()));
            args.push("--dir".into());
            args.push(dir.to_string_lossy().into_owned());
            args.extend(
                ["--daemonize", "no", "--loglevel", "warning", "--logfile", ""].map(String::from),
            );
            let mut server = RedisServer { child: None, port, dir, program: program.clone(), args };
            match server.run() {
                Ok(()) => return Some(server),
                Err(why) => last_failure = why,
            }
        }
        panic!("redis-server did not start: {last_failure}");
    }

    /// Starts the server process and waits (bounded) until it answers.
    fn run(&mut self) -> Result<(), String> {
        let child = Command::new(&self.program)
            .args(&self.args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run {}: {e}", self.program.display()));
        self.child = Some(child);
        self.wait_until_ready()
    }

    /// Kills the server (SIGKILL) and starts it again on the same port and directory
    /// (with an append-only file, it comes back with what it had).
    pub fn restart(&mut self) {
        self.kill();
        if let Err(why) = self.run() {
            panic!("redis-server did not start again: {why}");
        }
    }

    /// `redis://127.0.0.1:PORT/0`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    /// The server's port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The server's pid (while it runs).
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    /// Waits (bounded) until the server answers PING; an error naming why not.
    fn wait_until_ready(&mut self) -> Result<(), String> {
        let deadline = Instant::now() + START_DEADLINE;
        let addr = SocketAddr::from(([127, 0, 0, 1], self.port));
        loop {
            if let Some(child) = self.child.as_mut() {
                if let Ok(Some(status)) = child.try_wait() {
                    let mut err = String::new();
                    if let Some(mut stderr) = child.stderr.take() {
                        use std::io::Read;
                        let _ = stderr.read_to_string(&mut err);
                    }
                    self.child = None;
                    return Err(format!("it exited with {status}: {}", err.trim()));
                }
            }
            if ping(addr) {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(format!("no PONG on port {} within {START_DEADLINE:?}", self.port));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Kills the server (SIGKILL) and reaps it now.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The `redis-server` a test of `binary` needs. When it is missing: in CI a panic;
/// elsewhere `None`, after this process has written, once, the line naming what `binary`
/// skips.
pub fn require(binary: &str) -> Option<PathBuf> {
    if let Some(program) = find_server() {
        return Some(program);
    }
    assert!(
        !in_ci(),
        "redis-server is required in CI (CI=true) but missing ($REDIS_SERVER, PATH, /usr/bin, /usr/sbin)"
    );
    static REPORTED: OnceLock<()> = OnceLock::new();
    REPORTED.get_or_init(|| {
        terminal_line(&format!(
            "SKIPPED in {binary}: every test that needs redis-server, which is missing \
             (apt-get install redis-server). Set CI=true to make this a failure."
        ))
    });
    None
}

/// A loopback port nobody listens on now.
fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind a free port");
    listener.local_addr().expect("local address").port()
}

/// Whether a server at `addr` answers PING with PONG (each step bounded).
fn ping(addr: SocketAddr) -> bool {
    use std::io::{Read, Write};
    let Ok(mut stream) = TcpStream::connect_timeout(&addr, Duration::from_millis(200)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_millis(500)));
    let _ = stream.set_write_timeout(Some(Duration::from_millis(500)));
    if stream.write_all(b"PING\r\n").is_err() {
        return false;
    }
    let mut reply = [0u8; 7];
    stream.read_exact(&mut reply).is_ok() && &reply == b"+PONG\r\n"
}
