//! The client side of the manager protocol: one pool of connections per process per
//! server, shared by every proxy of that server, reopened after a fork.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use super::server::WireError;
use crate::codec::Codec;
use crate::connection::{Client, Connection};
use crate::error::{Error, Result};

/// How long opening a connection to a server may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a non-blocking call may wait for its reply before the server counts as hung.
const CALL_TIMEOUT: Duration = Duration::from_secs(60);
/// Idle connections kept per process per server.
const MAX_IDLE: usize = 8;

/// Encodes a value with postcard.
pub(crate) fn enc<T: Serialize + ?Sized>(value: &T) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    Codec::Postcard.encode_into(value, &mut out)?;
    Ok(out)
}

/// Decodes a value with postcard.
pub(crate) fn dec<T: DeserializeOwned>(bytes: &[u8]) -> Result<T> {
    Codec::Postcard.decode(bytes)
}

/// A server as seen from this process.
pub(crate) struct Remote {
    pub(crate) address: String,
    pub(crate) authkey: Vec<u8>,
    /// (pid that opened them, idle connections).
    pool: Mutex<(u32, Vec<Connection>)>,
}

type Registry = Mutex<HashMap<(String, Vec<u8>), Weak<Remote>>>;

fn registry() -> &'static Registry {
    static REGISTRY: OnceLock<Registry> = OnceLock::new();
    REGISTRY.get_or_init(|| Mutex::new(HashMap::new()))
}

impl Remote {
    /// The one `Remote` of this process for `address` and `authkey`.
    pub(crate) fn get(address: &str, authkey: &[u8]) -> Arc<Remote> {
        let mut map = registry().lock().unwrap_or_else(|p| p.into_inner());
        let key = (address.to_string(), authkey.to_vec());
        if let Some(remote) = map.get(&key).and_then(Weak::upgrade) {
            return remote;
        }
        map.retain(|_, w| w.strong_count() > 0);
        let remote = Arc::new(Remote {
            address: address.to_string(),
            authkey: authkey.to_vec(),
            pool: Mutex::new((std::process::id(), Vec::new())),
        });
        map.insert(key, Arc::downgrade(&remote));
        remote
    }

    fn take(&self) -> Result<Connection> {
        {
            let mut pool = self.pool.lock().unwrap_or_else(|p| p.into_inner());
            let pid = std::process::id();
            if pool.0 != pid {
                // Forked: the connections belong to the parent's conversation.
                *pool = (pid, Vec::new());
            }
            if let Some(conn) = pool.1.pop() {
                return Ok(conn);
            }
        }
        Client::connect_timeout(&self.address, Some(&self.authkey), CONNECT_TIMEOUT)
            .map_err(|e| self.lost(e))
    }

    fn give_back(&self, conn: Connection) {
        let mut pool = self.pool.lock().unwrap_or_else(|p| p.into_inner());
        if pool.0 == std::process::id() && pool.1.len() < MAX_IDLE {
            pool.1.push(conn);
        }
    }

    /// Closes the idle connections of this process.
    pub(crate) fn disconnect(&self) {
        self.pool.lock().unwrap_or_else(|p| p.into_inner()).1.clear();
    }

    fn lost(&self, e: Error) -> Error {
        match e {
            Error::Authentication(m) => Error::Authentication(m),
            Error::Timeout(t) => Error::Timeout(t),
            e => Error::Remote(format!("the manager at {} is unreachable: {e}", self.address)),
        }
    }

    /// Calls `method` on object `id` with encoded `args`. `blocking` is the call's own
    /// timeout for calls that wait on the server (`Some(None)`: wait as long as it takes).
    pub(crate) fn call_raw(
        &self,
        id: u64,
        method: &str,
        args: &[u8],
        blocking: Option<Option<Duration>>,
    ) -> Result<Vec<u8>> {
        let mut frame = enc(&(id, method))?;
        frame.extend_from_slice(args);
        let conn = self.take()?;
        conn.send_bytes(&frame).map_err(|e| self.lost(e))?;
        let wait = match blocking {
            None => Some(CALL_TIMEOUT),
            Some(None) => None,
            Some(Some(t)) => Some(t + CALL_TIMEOUT),
        };
        let reply = match wait {
            None => conn.recv_bytes(None),
            Some(t) => conn.recv_bytes_timeout(None, t),
        }
        .map_err(|e| match e {
            Error::Timeout(_) => Error::Remote(format!(
                "the manager at {} did not answer '{method}' in time",
                self.address
            )),
            e => self.lost(e),
        })?;
        let reply: std::result::Result<Vec<u8>, WireError> = dec(&reply)
            .map_err(|e| Error::Protocol(format!("malformed reply from the manager: {e}")))?;
        if !matches!(reply, Err(WireError::Closing(_))) {
            self.give_back(conn);
        }
        reply.map_err(Error::from)
    }

    /// [`call_raw`](Self::call_raw) with typed arguments and result.
    pub(crate) fn call<A: Serialize + ?Sized, R: DeserializeOwned>(
        &self,
        id: u64,
        method: &str,
        args: &A,
    ) -> Result<R> {
        dec(&self.call_raw(id, method, &enc(args)?, None)?)
    }

    /// [`call`](Self::call) for a method that may wait on the server up to `timeout`.
    pub(crate) fn call_blocking<A: Serialize + ?Sized, R: DeserializeOwned>(
        &self,
        id: u64,
        method: &str,
        args: &A,
        timeout: Option<Duration>,
    ) -> Result<R> {
        dec(&self.call_raw(id, method, &enc(args)?, Some(timeout))?)
    }
}

/// A reference to one object on one server: what every proxy is.
#[derive(Clone)]
pub(crate) struct Handle {
    pub(crate) remote: Arc<Remote>,
    pub(crate) id: u64,
}

impl Handle {
    pub(crate) fn call<A: Serialize + ?Sized, R: DeserializeOwned>(
        &self,
        method: &str,
        args: &A,
    ) -> Result<R> {
        self.remote.call(self.id, method, args)
    }

    pub(crate) fn call_blocking<A: Serialize + ?Sized, R: DeserializeOwned>(
        &self,
        method: &str,
        args: &A,
        timeout: Option<Duration>,
    ) -> Result<R> {
        self.remote.call_blocking(self.id, method, args, timeout)
    }
}

impl std::fmt::Debug for Handle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}#{}", self.remote.address, self.id)
    }
}

/// What a proxy looks like on the wire: no descriptors, so it travels anywhere.
#[derive(Serialize, Deserialize)]
struct Token {
    address: String,
    authkey: Vec<u8>,
    id: u64,
}

impl Serialize for Handle {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        Token {
            address: self.remote.address.clone(),
            authkey: self.remote.authkey.clone(),
            id: self.id,
        }
        .serialize(s)
    }
}

impl<'de> Deserialize<'de> for Handle {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let t = Token::deserialize(d)?;
        Ok(Handle { remote: Remote::get(&t.address, &t.authkey), id: t.id })
    }
}

/// Milliseconds of a timeout, as the server takes them.
pub(crate) fn ms(timeout: Option<Duration>) -> Option<u64> {
    timeout.map(|t| u64::try_from(t.as_millis()).unwrap_or(u64::MAX))
}

/// Who is calling, for recursive locks: (a random number of this process, its pid, the
/// calling thread's id). The random part tells apart equal pids on different machines.
pub(crate) fn owner() -> (u64, u32, i32) {
    static NONCE: OnceLock<u64> = OnceLock::new();
    let nonce = *NONCE.get_or_init(|| getrandom::u64().unwrap_or(0));
    (nonce, std::process::id(), rustix::thread::gettid().as_raw_nonzero().get())
}
