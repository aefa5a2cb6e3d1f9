//! The client side of the manager protocol: one pool of connections per process per
//! server, shared by every proxy of that server, reopened after a fork.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use super::fast_lane::{
    open_fast_lane, reserve_cpu_stamp, split_cpu_stamp, stamp_cpu, wait_frame, wait_reply, FastLane,
};
use super::wire::WireError;
use crate::codec::Codec;
use crate::connection::{Client, Connection};
use crate::error::{Error, Result};
use crate::sync_util::lock;

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

/// One conversation with a server: its socket, and for a server on this machine a pair of
/// shared-memory queues (the *fast lane*) that carry requests and replies instead.
///
/// A socket round trip costs a kernel wake-up on each side (tens of microseconds on a
/// virtual machine); a waiter on a fast lane polls its queue instead (see [`wait_frame`]),
/// so a steady stream of calls costs about a microsecond each way. The socket stays open
/// as the liveness signal: the server sees this process go when it closes, and this
/// process sees the server go the same way.
pub(crate) struct Lane {
    conn: Connection,
    fast: Option<FastLane>,
    /// The CPU the server last answered from (fast lanes only).
    server_cpu: Option<u32>,
    /// The last reply's buffer, reused for the next request.
    spare: Vec<u8>,
}

/// The largest buffer a lane keeps for its next request.
const SPARE_KEEP: usize = 64 << 10;

/// A server as seen from this process.
pub(crate) struct Remote {
    pub(crate) address: String,
    pub(crate) authkey: Vec<u8>,
    /// (pid that opened them, idle conversations).
    pool: Mutex<(u32, Vec<Lane>)>,
    /// Set once a handshake with this server succeeded: a later authentication failure
    /// then means the server is gone and something else answers at its address.
    reached: std::sync::atomic::AtomicBool,
}

type Registry = Mutex<HashMap<(String, Vec<u8>), Weak<Remote>>>;

fn registry() -> &'static Registry {
    static REGISTRY: OnceLock<Registry> = OnceLock::new();
    REGISTRY.get_or_init(|| Mutex::new(HashMap::new()))
}

impl Remote {
    /// The one `Remote` of this process for `address` and `authkey`.
    pub(crate) fn get(address: &str, authkey: &[u8]) -> Arc<Remote> {
        let mut map = lock(registry());
        let key = (address.to_string(), authkey.to_vec());
        if let Some(remote) = map.get(&key).and_then(Weak::upgrade) {
            return remote;
        }
        map.retain(|_, w| w.strong_count() > 0);
        let remote = Arc::new(Remote {
            address: address.to_string(),
            authkey: authkey.to_vec(),
            pool: Mutex::new((crate::sys::pid::pid(), Vec::new())),
            reached: std::sync::atomic::AtomicBool::new(false),
        });
        map.insert(key, Arc::downgrade(&remote));
        remote
    }

    fn take(&self) -> Result<Lane> {
        {
            let mut pool = lock(&self.pool);
            let pid = crate::sys::pid::pid();
            if pool.0 != pid {
                // Forked: the connections belong to the parent's conversation.
                *pool = (pid, Vec::new());
            }
            if let Some(conn) = pool.1.pop() {
                return Ok(conn);
            }
        }
        let reached = &self.reached;
        let conn = Client::connect_timeout(&self.address, Some(&self.authkey), CONNECT_TIMEOUT)
            .map_err(|e| match e {
                Error::Authentication(why)
                    if reached.load(std::sync::atomic::Ordering::Relaxed) =>
                {
                    Error::Remote(format!(
                        "the manager at {} is gone (its address now fails the handshake: {why})",
                        self.address
                    ))
                }
                e => self.lost(e),
            })?;
        reached.store(true, std::sync::atomic::Ordering::Relaxed);
        let fast = if self.is_local() { open_fast_lane(&conn, CONNECT_TIMEOUT) } else { None };
        Ok(Lane { conn, fast, server_cpu: None, spare: Vec::new() })
    }

    /// Whether the server is on this machine (a Unix or abstract socket), where shared
    /// memory can reach it.
    fn is_local(&self) -> bool {
        matches!(
            self.address.parse::<crate::connection::Address>(),
            Ok(crate::connection::Address::Unix(_) | crate::connection::Address::Abstract(_))
        )
    }

    fn give_back(&self, conn: Lane) {
        let mut pool = lock(&self.pool);
        if pool.0 == crate::sys::pid::pid() && pool.1.len() < MAX_IDLE {
            pool.1.push(conn);
        }
    }

    /// Closes the idle connections of this process.
    pub(crate) fn disconnect(&self) {
        lock(&self.pool).1.clear();
    }

    fn lost(&self, e: Error) -> Error {
        match e {
            Error::Authentication(m) => Error::Authentication(m),
            Error::Timeout(t) => Error::Timeout(t),
            e => Error::Remote(format!("the manager at {} is unreachable: {e}", self.address)),
        }
    }

    /// Calls `method` on object `id`: `args` appends the encoded arguments to the request
    /// frame, `read` decodes the encoded result (borrowed from the reply frame). `blocking`
    /// is the call's own timeout for calls that wait on the server (`Some(None)`: wait as
    /// long as it takes).
    fn exchange<R>(
        &self,
        id: u64,
        method: &str,
        args: impl FnOnce(&mut Vec<u8>) -> Result<()>,
        blocking: Option<Option<Duration>>,
        read: impl FnOnce(&[u8]) -> Result<R>,
    ) -> Result<R> {
        let mut lane = self.take()?;
        let mut frame = std::mem::take(&mut lane.spare);
        frame.clear();
        if lane.fast.is_some() {
            reserve_cpu_stamp(&mut frame);
        }
        let encoded =
            Codec::Postcard.encode_into(&(id, method), &mut frame).and_then(|()| args(&mut frame));
        if let Err(e) = encoded {
            self.give_back(lane);
            return Err(e);
        }
        let wait = match blocking {
            None => Some(CALL_TIMEOUT),
            Some(None) => None,
            Some(Some(t)) => t.checked_add(CALL_TIMEOUT),
        };
        let no_answer = || {
            Error::Remote(format!(
                "the manager at {} did not answer '{method}' in time",
                self.address
            ))
        };
        let reply = match &lane.fast {
            Some((requests, replies)) => {
                stamp_cpu(&mut frame);
                requests.put_timeout(frame, CALL_TIMEOUT).map_err(|e| self.lost(e.into()))?;
                match wait_frame(replies, lane.server_cpu) {
                    Some(reply) => reply,
                    None => wait_reply(&lane.conn, replies, wait, |e| self.lost(e), no_answer)?,
                }
            }
            None => {
                lane.conn.send_bytes(&frame).map_err(|e| self.lost(e))?;
                match wait {
                    None => lane.conn.recv_bytes(),
                    Some(t) => lane.conn.recv_bytes_timeout(t),
                }
                .map_err(|e| match e {
                    Error::Timeout(_) => no_answer(),
                    e => self.lost(e),
                })?
            }
        };
        let body = if lane.fast.is_some() {
            let Some((cpu, body)) = split_cpu_stamp(&reply) else {
                return Err(Error::Protocol(
                    "malformed reply from the manager: no CPU stamp".into(),
                ));
            };
            lane.server_cpu = cpu;
            body
        } else {
            &reply
        };
        let (result, closing) =
            match postcard::take_from_bytes::<std::result::Result<&[u8], WireError>>(body) {
                Ok((Ok(bytes), [])) => (read(bytes), false),
                Ok((Err(e), [])) => {
                    let closing = matches!(e, WireError::Closing(_));
                    (Err(Error::from(e)), closing)
                }
                Ok((_, rest)) => {
                    return Err(Error::Protocol(format!(
                        "malformed reply from the manager: {} trailing bytes",
                        rest.len()
                    )))
                }
                Err(e) => {
                    return Err(Error::Protocol(format!("malformed reply from the manager: {e}")))
                }
            };
        if !closing {
            if reply.capacity() <= SPARE_KEEP {
                lane.spare = reply;
            }
            self.give_back(lane);
        }
        result
    }

    /// Calls `method` on object `id` with typed arguments, and decodes the result with
    /// `read` straight from the reply frame.
    pub(crate) fn call_with<A: Serialize + ?Sized, R>(
        &self,
        id: u64,
        method: &str,
        args: &A,
        read: impl FnOnce(&[u8]) -> Result<R>,
    ) -> Result<R> {
        self.exchange(id, method, |frame| Codec::Postcard.encode_into(args, frame), None, read)
    }

    /// [`call_with`](Self::call_with) with a typed result.
    pub(crate) fn call<A: Serialize + ?Sized, R: DeserializeOwned>(
        &self,
        id: u64,
        method: &str,
        args: &A,
    ) -> Result<R> {
        self.call_with(id, method, args, dec)
    }

    /// [`call`](Self::call) for a method that may wait on the server up to `timeout`.
    pub(crate) fn call_blocking<A: Serialize + ?Sized, R: DeserializeOwned>(
        &self,
        id: u64,
        method: &str,
        args: &A,
        timeout: Option<Duration>,
    ) -> Result<R> {
        self.exchange(
            id,
            method,
            |frame| Codec::Postcard.encode_into(args, frame),
            Some(timeout),
            dec,
        )
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

    /// [`call`](Self::call) that decodes the result with `read`, borrowed from the reply.
    pub(crate) fn call_with<A: Serialize + ?Sized, R>(
        &self,
        method: &str,
        args: &A,
        read: impl FnOnce(&[u8]) -> Result<R>,
    ) -> Result<R> {
        self.remote.call_with(self.id, method, args, read)
    }

    /// `method(key)`, with the key's encoding sent as bytes; `read` decodes the result.
    pub(crate) fn call_key<Q: Serialize + ?Sized, R>(
        &self,
        method: &str,
        key: &Q,
        read: impl FnOnce(&[u8]) -> Result<R>,
    ) -> Result<R> {
        with_scratch(|buf| {
            Codec::Postcard.encode_into(key, buf)?;
            self.call_with(method, &Bytes(buf), read)
        })
    }

    /// `method(key, value)`, with both encodings sent as bytes; `read` decodes the result.
    pub(crate) fn call_key_value<Q: Serialize + ?Sized, W: Serialize + ?Sized, R>(
        &self,
        method: &str,
        key: &Q,
        value: &W,
        read: impl FnOnce(&[u8]) -> Result<R>,
    ) -> Result<R> {
        with_scratch(|buf| {
            Codec::Postcard.encode_into(key, buf)?;
            let split = buf.len();
            Codec::Postcard.encode_into(value, buf)?;
            let (key, value) = buf.split_at(split);
            self.call_with(method, &(Bytes(key), Bytes(value)), read)
        })
    }
}

thread_local! {
    /// A reused buffer for the encodings of keys and values.
    static SCRATCH: std::cell::Cell<Vec<u8>> = const { std::cell::Cell::new(Vec::new()) };
}

/// Runs `f` with this thread's scratch buffer (empty; a fresh one if it is in use).
fn with_scratch<R>(f: impl FnOnce(&mut Vec<u8>) -> Result<R>) -> Result<R> {
    let mut buf = SCRATCH.take();
    buf.clear();
    let result = f(&mut buf);
    if buf.capacity() <= SPARE_KEEP {
        SCRATCH.set(buf);
    }
    result
}

/// Decodes a reply that is an encoded `Option` of an encoded `V` (a dict's get, set, pop).
pub(crate) fn opt_value<V: DeserializeOwned>(bytes: &[u8]) -> Result<Option<V>> {
    dec_borrowed::<Option<&[u8]>>(bytes)?.map(dec).transpose()
}

/// Bytes that encode as a `Vec<u8>` does (a length, then the bytes), in one copy.
pub(crate) struct Bytes<'a>(pub(crate) &'a [u8]);

impl Serialize for Bytes<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_bytes(self.0)
    }
}

/// Decodes a value that borrows from `bytes`, which must hold exactly that value.
pub(crate) fn dec_borrowed<'a, T: Deserialize<'a>>(bytes: &'a [u8]) -> Result<T> {
    match postcard::take_from_bytes::<T>(bytes) {
        Ok((value, [])) => Ok(value),
        Ok((_, rest)) => Err(Error::Codec(format!("{} trailing bytes", rest.len()))),
        Err(e) => Err(Error::Codec(e.to_string())),
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
    (nonce, crate::sys::pid::pid(), crate::sys::pid::tid() as i32)
}
