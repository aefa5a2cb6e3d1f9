//! One connection to Redis, reconnected on demand, and the deadlines of the calls made on it.
//!
//! A [`Link`] holds at most two blocking connections: one for short commands and scripts,
//! one for the commands that block in the server (so that a `put` or a `task_done` on a
//! handle is not held up by a `get` waiting on the same handle in another thread). Every
//! command runs with a read timeout derived from the caller's deadline, so that a server
//! that stops answering (or a network that goes quiet) cannot hold a call past it. After a
//! connection-level failure (refused, reset, timed out) the connection is dropped, and the
//! next command on it connects again.
//!
//! The waits of the queues ([`Link::block_for`]) ask Redis to block for a little less than
//! the time left, and wait for its reply for the whole time left: the server answers before
//! the caller's deadline, and a lost answer is detected by then.

use std::io;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::error::{Error, Result};

/// How long one command waits for its reply when the caller has no deadline (or a later one).
pub(super) const DEFAULT_IO_TIMEOUT: Duration = Duration::from_secs(30);
/// How long connecting may take at most.
pub(super) const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a waiting call keeps reconnecting to a server that went away.
pub(super) const DEFAULT_RECONNECT_FOR: Duration = Duration::from_secs(10);
/// The least time a command's reply is awaited, even by a call whose timeout is shorter
/// (a `try_get` still needs one round trip).
const MIN_REPLY: Duration = Duration::from_millis(100);
/// Below this much time left, a call does not start a blocking wait any more.
const MIN_BLOCK: Duration = Duration::from_millis(5);
/// The longest single blocking command; a longer wait is several of them.
const MAX_BLOCK: Duration = Duration::from_secs(5);
/// The longest pause between two attempts to reach a server that went away.
const MAX_BACKOFF: Duration = Duration::from_millis(500);

/// Connection settings shared by the queues' builders.
#[derive(Debug, Clone)]
pub(super) struct Settings {
    /// Bound on connecting.
    pub(super) connect_timeout: Duration,
    /// Bound on one command's reply.
    pub(super) io_timeout: Duration,
    /// How long a waiting call retries a lost server.
    pub(super) reconnect_for: Duration,
}

impl Default for Settings {
    fn default() -> Settings {
        Settings {
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            io_timeout: DEFAULT_IO_TIMEOUT,
            reconnect_for: DEFAULT_RECONNECT_FOR,
        }
    }
}

/// A client, its connection (when one is open) and the settings of both.
pub(super) struct Link {
    client: redis::Client,
    /// For short commands and scripts.
    commands: Mutex<Option<redis::Connection>>,
    /// For the commands that block in the server.
    waits: Mutex<Option<redis::Connection>>,
    settings: Settings,
}

impl std::fmt::Debug for Link {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The URL may hold a password: only where it points.
        let info = self.client.get_connection_info();
        f.debug_struct("Link").field("addr", &info.addr().to_string()).finish_non_exhaustive()
    }
}

/// The time left until `deadline` (`None`: no deadline).
pub(super) fn remaining(deadline: Option<Instant>) -> Option<Duration> {
    deadline.map(|d| d.saturating_duration_since(Instant::now()))
}

/// Whether `deadline` has passed.
pub(super) fn expired(deadline: Option<Instant>) -> bool {
    deadline.is_some_and(|d| Instant::now() >= d)
}

impl Link {
    /// A link to `url` (checked now; connected on first use).
    pub(super) fn open(url: &str, settings: Settings) -> Result<Link> {
        let client = redis::Client::open(url)
            .map_err(|e| Error::InvalidArgument(format!("redis URL: {e}")))?;
        Ok(Link { client, commands: Mutex::new(None), waits: Mutex::new(None), settings })
    }

    /// A second link to the same server with the same settings, not yet connected.
    pub(super) fn fresh(&self) -> Link {
        Link {
            client: self.client.clone(),
            commands: Mutex::new(None),
            waits: Mutex::new(None),
            settings: self.settings.clone(),
        }
    }

    /// How long a reply is awaited for a call with this deadline.
    fn reply_timeout(&self, deadline: Option<Instant>) -> Duration {
        match remaining(deadline) {
            None => self.settings.io_timeout,
            Some(left) => left.max(MIN_REPLY).min(self.settings.io_timeout),
        }
    }

    /// Whether the connection for short commands is open now.
    pub(super) fn is_connected(&self) -> bool {
        self.commands.lock().unwrap_or_else(|p| p.into_inner()).is_some()
    }

    /// Runs `f` on the connection in `slot` (connecting first if needed), its reply awaited
    /// for at most `reply`. A connection-level failure drops the connection.
    fn with_connection<R>(
        &self,
        slot: &Mutex<Option<redis::Connection>>,
        reply: Duration,
        f: impl FnOnce(&mut redis::Connection) -> redis::RedisResult<R>,
    ) -> Result<R> {
        let mut slot = slot.lock().unwrap_or_else(|p| p.into_inner());
        if slot.is_none() {
            let timeout = self.settings.connect_timeout.min(reply.max(MIN_REPLY));
            let con = self.client.get_connection_with_timeout(timeout).map_err(to_error)?;
            con.set_write_timeout(Some(self.settings.io_timeout)).map_err(to_error)?;
            *slot = Some(con);
        }
        let con = slot.as_mut().expect("connected above");
        let outcome =
            con.set_read_timeout(Some(reply.max(Duration::from_millis(1)))).and_then(|()| f(con));
        outcome.map_err(|e| {
            if !matches!(e.kind(), redis::ErrorKind::Server(_)) || e.is_unrecoverable_error() {
                *slot = None;
            }
            to_error(e)
        })
    }

    /// Runs one short command (or script) for a call with this deadline.
    pub(super) fn run<R>(
        &self,
        deadline: Option<Instant>,
        f: impl FnOnce(&mut redis::Connection) -> redis::RedisResult<R>,
    ) -> Result<R> {
        self.with_connection(&self.commands, self.reply_timeout(deadline), f)
    }

    /// The BLOCK time (in milliseconds) for one wait of a call with this deadline, with
    /// the time its reply is awaited; `None` when too little time is left to wait.
    pub(super) fn block_for(&self, deadline: Option<Instant>) -> Option<(u64, Duration)> {
        let left = remaining(deadline).unwrap_or(MAX_BLOCK).min(MAX_BLOCK);
        if left < MIN_BLOCK {
            return None;
        }
        let grace = (left / 5).min(Duration::from_millis(100));
        let block = (left - grace).as_millis().max(1) as u64;
        let reply = if deadline.is_some() { left } else { left + MIN_REPLY };
        Some((block, reply))
    }

    /// Runs one blocking command whose BLOCK argument came from [`block_for`](Self::block_for).
    /// A reply that does not come in time is `Ok(None)` when the caller's deadline has
    /// passed (the wait simply ran out), an error otherwise.
    pub(super) fn run_blocking<R>(
        &self,
        reply: Duration,
        deadline: Option<Instant>,
        f: impl FnOnce(&mut redis::Connection) -> redis::RedisResult<R>,
    ) -> Result<Option<R>> {
        match self.with_connection(&self.waits, reply, f) {
            Ok(r) => Ok(Some(r)),
            Err(Error::Io(e)) if e.kind() == io::ErrorKind::TimedOut && expired(deadline) => {
                Ok(None)
            }
            Err(e) => Err(e),
        }
    }

    /// A tracker of connection failures for one waiting call.
    pub(super) fn retry(&self) -> Retry {
        Retry { since: None, window: self.settings.reconnect_for, pause: Duration::from_millis(10) }
    }
}

/// Whether `e` says the server could not be reached or stopped answering (as opposed to an
/// answer that is an error).
pub(super) fn is_connection_error(e: &Error) -> bool {
    matches!(e, Error::Io(_))
}

/// The retries of one waiting call after connection failures: as long as its deadline and
/// the link's reconnect window allow, with a growing pause between attempts.
pub(super) struct Retry {
    since: Option<Instant>,
    window: Duration,
    pause: Duration,
}

impl Retry {
    /// After a step that reached the server: a later failure starts a new window.
    pub(super) fn reset(&mut self) {
        self.since = None;
        self.pause = Duration::from_millis(10);
    }

    /// After the failure `e`: `Ok(())` once it is time for another attempt, or `Err(e)`
    /// when the call must give up (not a connection error, the deadline passed, or the
    /// server has been away for the whole reconnect window).
    pub(super) fn again(&mut self, e: Error, deadline: Option<Instant>) -> Result<()> {
        if !is_connection_error(&e) || expired(deadline) {
            return Err(e);
        }
        let since = *self.since.get_or_insert_with(Instant::now);
        let give_up_at = since.checked_add(self.window);
        let stop = match (deadline, give_up_at) {
            (Some(d), Some(g)) => Some(d.min(g)),
            (d, g) => d.or(g),
        };
        let left = remaining(stop);
        if left.is_some_and(|l| l.is_zero()) {
            return Err(e);
        }
        let pause = left.map_or(self.pause, |l| l.min(self.pause));
        std::thread::sleep(pause);
        self.pause = (self.pause * 2).min(MAX_BACKOFF);
        if expired(stop) {
            return Err(e);
        }
        Ok(())
    }
}

/// The crate's error for a Redis client error: connection failures are [`Error::Io`] (so
/// callers can tell them apart), a refused password or a user without the right to a
/// command is [`Error::Authentication`], the rest [`Error::Protocol`].
pub(super) fn to_error(e: redis::RedisError) -> Error {
    let kind = if e.is_timeout() {
        Some(io::ErrorKind::TimedOut)
    } else if e.is_connection_refusal() {
        Some(io::ErrorKind::ConnectionRefused)
    } else if e.is_connection_dropped() {
        Some(io::ErrorKind::ConnectionReset)
    } else if e.is_io_error() || e.kind() == redis::ErrorKind::Io {
        Some(io::ErrorKind::Other)
    } else {
        None
    };
    let refused = e.kind() == redis::ErrorKind::AuthenticationFailed
        || matches!(e.code(), Some("WRONGPASS" | "NOAUTH" | "NOPERM"));
    match kind {
        Some(kind) => Error::Io(io::Error::new(kind, format!("redis: {e}"))),
        None if refused => Error::Authentication(format!("redis: {e}")),
        None => Error::Protocol(format!("redis: {e}")),
    }
}
