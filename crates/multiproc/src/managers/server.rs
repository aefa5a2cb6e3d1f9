//! The manager's server: a store of type-agnostic objects (every value is kept as its
//! postcard encoding) and one thread per client connection.
//!
//! # Wire protocol
//! Every request is one frame: the postcard encoding of `(object id: u64, method: &str)`
//! followed by the method's arguments (a postcard-encoded tuple). Every reply is one frame:
//! the postcard encoding of `Result<Vec<u8>, WireError>`, where the bytes are the encoded
//! return value. Object `0` is the server itself (`create`, `named`, `ping`, `objects`).

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::codec::Codec;
use crate::connection::{Connection, Listener};
use crate::error::{Error, Result};

/// The largest request a server accepts unless told otherwise (64 MiB).
pub const DEFAULT_MAX_MESSAGE: usize = 64 << 20;
/// How many client connections a server serves at once unless told otherwise.
pub const DEFAULT_MAX_CLIENTS: usize = 1024;
/// How long a client may take for the authentication handshake unless told otherwise.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// How many authentication handshakes a server runs at once unless told otherwise.
const DEFAULT_MAX_PENDING: usize = 64;
/// How often a blocked call checks whether its client hung up.
const HANGUP_CHECK: Duration = Duration::from_millis(100);

/// An error as it travels from the server to a proxy.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) enum WireError {
    /// `queue.Empty`.
    Empty,
    /// `queue.Full`.
    Full,
    /// A blocking call ran out of time (milliseconds).
    Timeout(u64),
    /// Anything else: the message.
    Message(String),
    /// A fatal error: the server closes the connection after this reply.
    Closing(String),
}

impl From<WireError> for Error {
    fn from(e: WireError) -> Error {
        match e {
            WireError::Empty => Error::Empty,
            WireError::Full => Error::Full,
            WireError::Timeout(ms) => Error::Timeout(Duration::from_millis(ms)),
            WireError::Message(m) | WireError::Closing(m) => Error::Remote(m),
        }
    }
}

type Reply = std::result::Result<Vec<u8>, WireError>;

fn msg(m: impl Into<String>) -> WireError {
    WireError::Message(m.into())
}

fn enc<T: Serialize + ?Sized>(value: &T) -> Reply {
    let mut out = Vec::new();
    Codec::Postcard.encode_into(value, &mut out).map_err(|e| msg(e.to_string()))?;
    Ok(out)
}

fn dec<T: DeserializeOwned>(bytes: &[u8], method: &str) -> std::result::Result<T, WireError> {
    Codec::Postcard
        .decode(bytes)
        .map_err(|e| msg(format!("malformed arguments for '{method}': {e}")))
}

fn millis(timeout: Option<u64>) -> Option<Duration> {
    timeout.map(Duration::from_millis)
}

// --------------------------------------------------------------------------------------
// Objects

/// A map that remembers insertion order (as Python's dict), keyed by encoded keys.
#[derive(Default)]
struct OrderedMap {
    index: HashMap<Vec<u8>, u64>,
    entries: BTreeMap<u64, (Vec<u8>, Vec<u8>)>,
    next: u64,
}

impl OrderedMap {
    fn get(&self, key: &[u8]) -> Option<&Vec<u8>> {
        self.index.get(key).and_then(|seq| self.entries.get(seq)).map(|(_, v)| v)
    }

    fn get_mut(&mut self, key: &[u8]) -> Option<&mut Vec<u8>> {
        self.index.get(key).and_then(|seq| self.entries.get_mut(seq)).map(|(_, v)| v)
    }

    fn insert(&mut self, key: Vec<u8>, value: Vec<u8>) -> Option<Vec<u8>> {
        if let Some(seq) = self.index.get(&key) {
            let slot = self.entries.get_mut(seq).map(|(_, v)| v);
            return slot.map(|v| std::mem::replace(v, value));
        }
        let seq = self.next;
        self.next += 1;
        self.index.insert(key.clone(), seq);
        self.entries.insert(seq, (key, value));
        None
    }

    fn remove(&mut self, key: &[u8]) -> Option<Vec<u8>> {
        let seq = self.index.remove(key)?;
        self.entries.remove(&seq).map(|(_, v)| v)
    }

    fn len(&self) -> usize {
        self.entries.len()
    }

    fn clear(&mut self) {
        self.index.clear();
        self.entries.clear();
    }

    fn iter(&self) -> impl Iterator<Item = &(Vec<u8>, Vec<u8>)> {
        self.entries.values()
    }
}

/// A value guarded by a mutex, with a condition variable for blocking calls.
struct Guarded<T> {
    state: Mutex<T>,
    changed: Condvar,
}

impl<T> Guarded<T> {
    fn new(value: T) -> Guarded<T> {
        Guarded { state: Mutex::new(value), changed: Condvar::new() }
    }

    fn lock(&self) -> MutexGuard<'_, T> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Waits until `ready` holds, at most `timeout`, giving up early when the client that
    /// asked has hung up (so a dead client does not consume an item later).
    fn wait_until(
        &self,
        timeout: Option<Duration>,
        client: &Connection,
        mut ready: impl FnMut(&mut T) -> bool,
    ) -> std::result::Result<MutexGuard<'_, T>, WireError> {
        let deadline = crate::deadline::within(timeout);
        let mut guard = self.lock();
        loop {
            if ready(&mut guard) {
                return Ok(guard);
            }
            let now = Instant::now();
            let slice = match deadline {
                Some(d) if d <= now => {
                    return Err(WireError::Timeout(timeout.unwrap_or_default().as_millis() as u64))
                }
                Some(d) => (d - now).min(HANGUP_CHECK),
                None => HANGUP_CHECK,
            };
            let (g, result) =
                self.changed.wait_timeout(guard, slice).unwrap_or_else(|p| p.into_inner());
            guard = g;
            if result.timed_out() {
                // A client waiting for its reply sends nothing: readable means hung up.
                drop(guard);
                if client.poll(Some(Duration::ZERO)).unwrap_or(true) {
                    return Err(msg("the client hung up"));
                }
                guard = self.lock();
            }
        }
    }
}

struct QueueState {
    items: VecDeque<Vec<u8>>,
    unfinished: u64,
}

struct Queue {
    maxsize: usize,
    state: Guarded<QueueState>,
}

struct Semaphore {
    value: u64,
    /// A `BoundedSemaphore`'s initial value, which releases may not exceed.
    bound: Option<u64>,
}

/// Who holds an `RLock` or a `Condition`'s lock: (a random number of the client process,
/// its pid, its thread id), sent by the client with each call.
type Owner = (u64, u32, i32);

/// The process on the other end of a client connection, when the kernel can tell (a Unix
/// socket on this machine); `None` over TCP.
fn peer_pid(client: &Connection) -> Option<i32> {
    rustix::net::sockopt::socket_peercred(client).ok().map(|c| c.pid.as_raw_nonzero().get())
}

/// Whether a lock's holder is known to be dead: a local client process that is gone.
fn holder_died(holder: Option<i32>) -> bool {
    holder.is_some_and(|pid| !crate::process::pid_is_alive(pid))
}

/// A lock's state: locked, and by which local process (if the server can tell).
#[derive(Default)]
struct LockState {
    locked: bool,
    holder: Option<i32>,
}

impl LockState {
    /// Free, or held by a local process that has died (which the next taker inherits).
    fn takeable(&self) -> bool {
        !self.locked || holder_died(self.holder)
    }
}

/// A recursive lock's state.
#[derive(Default)]
struct Owned {
    owner: Option<Owner>,
    count: u64,
    /// The local process holding it, if the server can tell.
    holder: Option<i32>,
}

impl Owned {
    /// Free, held by `who`, or held by a local process that has died.
    fn takeable(&self, who: Owner) -> bool {
        self.owner.is_none_or(|o| o == who) || holder_died(self.holder)
    }

    /// Takes the lock for `who` (one more level if `who` holds it); a holder that died
    /// loses it first.
    fn acquire(&mut self, who: Owner, holder: Option<i32>) -> bool {
        if self.owner.is_some_and(|o| o != who) && holder_died(self.holder) {
            self.owner = None;
            self.count = 0;
        }
        if self.owner.is_none() {
            self.holder = holder;
        }
        match self.owner {
            Some(o) if o == who => {
                self.count += 1;
                true
            }
            Some(_) => false,
            None => {
                self.owner = Some(who);
                self.count = 1;
                true
            }
        }
    }

    /// Releases one level; whether the lock became free.
    fn release(&mut self, who: Owner) -> std::result::Result<bool, WireError> {
        if self.owner != Some(who) {
            return Err(msg("RuntimeError: cannot release un-acquired lock"));
        }
        self.count -= 1;
        if self.count == 0 {
            self.owner = None;
            self.holder = None;
            return Ok(true);
        }
        Ok(false)
    }
}

#[derive(Default)]
struct Condition {
    lock: Owned,
    next_ticket: u64,
    waiting: VecDeque<u64>,
    notified: std::collections::HashSet<u64>,
}

struct Barrier {
    parties: u64,
    count: u64,
    generation: u64,
    broken: bool,
}

enum Object {
    Dict(Guarded<OrderedMap>),
    List(Guarded<Vec<Vec<u8>>>),
    Namespace(Guarded<OrderedMap>),
    Value(Guarded<Vec<u8>>),
    Queue(Queue),
    Lock(Guarded<LockState>),
    Event(Guarded<bool>),
    Semaphore(Guarded<Semaphore>),
    RLock(Guarded<Owned>),
    Condition(Guarded<Condition>),
    Barrier(Guarded<Barrier>),
    User(String, Mutex<Box<dyn SharedObject>>),
}

impl Object {
    fn kind(&self) -> &str {
        match self {
            Object::Dict(_) => "dict",
            Object::List(_) => "list",
            Object::Namespace(_) => "namespace",
            Object::Value(_) => "value",
            Object::Queue(_) => "queue",
            Object::Lock(_) => "lock",
            Object::Event(_) => "event",
            Object::Semaphore(_) => "semaphore",
            Object::RLock(_) => "rlock",
            Object::Condition(_) => "condition",
            Object::Barrier(_) => "barrier",
            Object::User(kind, _) => kind,
        }
    }

    fn create(
        kind: &str,
        init: &[u8],
        registry: &Registry,
    ) -> std::result::Result<Object, WireError> {
        Ok(match kind {
            "dict" => {
                let items: Vec<(Vec<u8>, Vec<u8>)> = dec(init, "create dict")?;
                let mut map = OrderedMap::default();
                for (k, v) in items {
                    map.insert(k, v);
                }
                Object::Dict(Guarded::new(map))
            }
            "list" => Object::List(Guarded::new(dec(init, "create list")?)),
            "namespace" => Object::Namespace(Guarded::new(OrderedMap::default())),
            "value" => Object::Value(Guarded::new(dec(init, "create value")?)),
            "queue" => {
                let maxsize: u64 = dec(init, "create queue")?;
                Object::Queue(Queue {
                    maxsize: usize::try_from(maxsize).unwrap_or(usize::MAX),
                    state: Guarded::new(QueueState { items: VecDeque::new(), unfinished: 0 }),
                })
            }
            "lock" => Object::Lock(Guarded::new(LockState::default())),
            "event" => Object::Event(Guarded::new(false)),
            "semaphore" => {
                let (value, bounded): (u64, bool) = dec(init, "create semaphore")?;
                Object::Semaphore(Guarded::new(Semaphore {
                    value,
                    bound: bounded.then_some(value),
                }))
            }
            "rlock" => Object::RLock(Guarded::new(Owned::default())),
            "condition" => Object::Condition(Guarded::new(Condition::default())),
            "barrier" => {
                let parties: u64 = dec(init, "create barrier")?;
                if parties == 0 {
                    return Err(msg("a barrier needs at least one party"));
                }
                Object::Barrier(Guarded::new(Barrier {
                    parties,
                    count: 0,
                    generation: 0,
                    broken: false,
                }))
            }
            other => match registry.types.get(other) {
                Some(ctor) => Object::User(other.to_string(), Mutex::new(ctor(init).map_err(msg)?)),
                None => return Err(msg(format!("unknown object type '{other}'"))),
            },
        })
    }
}

fn index(len: usize, i: i64) -> std::result::Result<usize, WireError> {
    let j = if i < 0 { len as i64 + i } else { i };
    if j < 0 || j >= len as i64 {
        return Err(msg(format!("IndexError: list index {i} out of range (length {len})")));
    }
    Ok(j as usize)
}

/// Checks that a method that takes no arguments got none.
fn no_args(args: &[u8], method: &str) -> std::result::Result<(), WireError> {
    dec::<()>(args, method)
}

/// The methods whose arguments are `()`.
fn takes_no_args(kind: &str, method: &str) -> bool {
    matches!(
        (kind, method),
        (
            _,
            "len"
                | "keys"
                | "values"
                | "items"
                | "clear"
                | "popitem"
                | "to_vec"
                | "qsize"
                | "task_done"
                | "locked"
                | "is_set"
                | "abort"
                | "reset"
                | "parties"
                | "n_waiting"
                | "broken"
        ) | ("event", "set")
            | ("value", "get")
            | ("lock" | "semaphore", "release")
            | ("semaphore", "value")
    )
}

fn no_method(kind: &str, method: &str) -> WireError {
    msg(format!("AttributeError: '{kind}' object has no method '{method}'"))
}

// --------------------------------------------------------------------------------------
// The store

/// All objects of one server.
pub(crate) struct Store {
    objects: Mutex<HashMap<u64, Arc<Object>>>,
    names: Mutex<HashMap<String, u64>>,
    next_id: AtomicU64,
    registry: Registry,
}

impl Store {
    pub(crate) fn new(registry: Registry) -> Store {
        Store {
            registry,
            objects: Mutex::new(HashMap::new()),
            names: Mutex::new(HashMap::new()),
            next_id: AtomicU64::new(1),
        }
    }

    fn add(&self, object: Object) -> u64 {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        self.objects.lock().unwrap_or_else(|p| p.into_inner()).insert(id, Arc::new(object));
        id
    }

    fn object(&self, id: u64) -> std::result::Result<Arc<Object>, WireError> {
        self.objects
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&id)
            .cloned()
            .ok_or_else(|| msg(format!("KeyError: no object with id {id} on this server")))
    }

    /// Object `id`, from the objects this connection already used when it can (no lock).
    fn object_in<'s>(
        &self,
        id: u64,
        seen: &'s mut Seen,
    ) -> std::result::Result<&'s Object, WireError> {
        use std::collections::hash_map::Entry;
        Ok(match seen.0.entry(id) {
            Entry::Occupied(e) => e.into_mut(),
            Entry::Vacant(e) => e.insert(self.object(id)?),
        })
    }

    /// Handles one request frame and appends the reply frame to `out`.
    /// `seen` caches the objects this connection used.
    pub(crate) fn handle(
        &self,
        frame: &[u8],
        client: &Connection,
        seen: &mut Seen,
        out: &mut Vec<u8>,
    ) {
        let start = out.len();
        let reply = match postcard::take_from_bytes::<(u64, &str)>(frame) {
            Ok(((0, method), args)) => self.server_call(method, args),
            Ok(((id, method), args)) => match self.object_in(id, seen) {
                Ok(object) => match quick_method(object, method, args, out) {
                    Some(Ok(())) => return,
                    Some(Err(e)) => Err(e),
                    None => object_call(object, method, args, client),
                },
                Err(e) => Err(e),
            },
            Err(e) => Err(msg(format!("malformed request: {e}"))),
        };
        out.truncate(start);
        match reply {
            Ok(bytes) => ok_reply(out, |out| out.extend_from_slice(&bytes), bytes.len()),
            Err(e) => {
                if Codec::Postcard.encode_into(&Reply::Err(e), out).is_err() {
                    out.truncate(start);
                    let _ = Codec::Postcard
                        .encode_into(&Reply::Err(msg("cannot encode the reply")), out);
                }
            }
        }
    }

    fn server_call(&self, method: &str, args: &[u8]) -> Reply {
        if matches!(method, "ping" | "names") {
            no_args(args, method)?;
        }
        self.server_method(method, args)
    }
}

/// Objects one connection has used, by id: its later calls find them without the store's
/// lock (objects live as long as the server, so an entry never goes stale).
#[derive(Default)]
pub(crate) struct Seen(HashMap<u64, Arc<Object>, std::hash::BuildHasherDefault<IdHasher>>);

/// Object ids are small sequential numbers: they are their own hash.
#[derive(Default)]
struct IdHasher(u64);

impl std::hash::Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 << 8) | u64::from(b);
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

/// Writes postcard's varint (LEB128) of `n`.
fn push_varint(out: &mut Vec<u8>, mut n: usize) {
    while n >= 0x80 {
        out.push((n as u8) | 0x80);
        n >>= 7;
    }
    out.push(n as u8);
}

/// How many bytes postcard's varint of `n` takes.
fn varint_len(mut n: usize) -> usize {
    let mut len = 1;
    while n >= 0x80 {
        n >>= 7;
        len += 1;
    }
    len
}

/// Appends the reply frame `Ok(value)` where `write` appends the `len` bytes of the
/// encoded value: the same bytes as encoding a `Reply`, without an intermediate vector.
fn ok_reply(out: &mut Vec<u8>, write: impl FnOnce(&mut Vec<u8>), len: usize) {
    out.reserve(1 + varint_len(len) + len);
    out.push(0); // Result::Ok
    push_varint(out, len);
    let start = out.len();
    write(out);
    debug_assert_eq!(out.len() - start, len);
}

/// Appends the reply frame `Ok(encoding of value)` for an `Option<&[u8]>` value.
fn ok_option_bytes(out: &mut Vec<u8>, value: Option<&[u8]>) {
    match value {
        None => ok_reply(out, |out| out.push(0), 1),
        Some(v) => ok_reply(
            out,
            |out| {
                out.push(1);
                push_varint(out, v.len());
                out.extend_from_slice(v);
            },
            1 + varint_len(v.len()) + v.len(),
        ),
    }
}

/// Decodes borrowed arguments, which must be exactly one value.
fn dec_borrowed<'a, T: Deserialize<'a>>(
    bytes: &'a [u8],
    method: &str,
) -> std::result::Result<T, WireError> {
    match postcard::take_from_bytes::<T>(bytes) {
        Ok((value, [])) => Ok(value),
        Ok((_, rest)) => {
            Err(msg(format!("malformed arguments for '{method}': {} trailing bytes", rest.len())))
        }
        Err(e) => Err(msg(format!("malformed arguments for '{method}': {e}"))),
    }
}

/// The most frequent calls (a dict's or a namespace's get, set and contains), answered
/// straight into the reply frame without intermediate vectors; `None` for any other call.
fn quick_method(
    object: &Object,
    method: &str,
    args: &[u8],
    out: &mut Vec<u8>,
) -> Option<std::result::Result<(), WireError>> {
    let map = match object {
        Object::Dict(map) | Object::Namespace(map) => map,
        _ => return None,
    };
    Some(match method {
        "get" => dec_borrowed::<&[u8]>(args, method).map(|key| {
            ok_option_bytes(out, map.lock().get(key).map(Vec::as_slice));
        }),
        "set" => dec_borrowed::<(&[u8], &[u8])>(args, method).map(|(key, value)| {
            let mut m = map.lock();
            match m.get_mut(key) {
                Some(slot) => {
                    ok_option_bytes(out, Some(slot));
                    slot.clear();
                    slot.extend_from_slice(value);
                }
                None => {
                    m.insert(key.to_vec(), value.to_vec());
                    ok_option_bytes(out, None);
                }
            }
        }),
        "contains" => dec_borrowed::<&[u8]>(args, method).map(|key| {
            let found = map.lock().get(key).is_some();
            ok_reply(out, |out| out.push(u8::from(found)), 1);
        }),
        _ => return None,
    })
}

/// Any call on an object.
fn object_call(object: &Object, method: &str, args: &[u8], client: &Connection) -> Reply {
    {
        if takes_no_args(object.kind(), method) {
            no_args(args, method)?;
        }
        match object {
            Object::Dict(map) => dict_method(map, method, args),
            Object::Namespace(map) => namespace_method(map, method, args),
            Object::List(list) => list_method(list, method, args),
            Object::Value(value) => value_method(value, method, args),
            Object::Queue(queue) => queue_method(queue, method, args, client),
            Object::Lock(lock) => lock_method(lock, method, args, client),
            Object::Event(event) => event_method(event, method, args, client),
            Object::Semaphore(sem) => semaphore_method(sem, method, args, client),
            Object::RLock(lock) => rlock_method(lock, method, args, client),
            Object::Condition(cond) => condition_method(cond, method, args, client),
            Object::Barrier(barrier) => barrier_method(barrier, method, args, client),
            Object::User(_, object) => {
                let mut object = object.lock().unwrap_or_else(|p| p.into_inner());
                // A panic is the caller's error, reported to it, not the server's to print.
                match crate::process::catch_reported(|| object.call(method, args)) {
                    Ok(result) => result.map_err(msg),
                    Err(message) => {
                        Err(msg(format!("the object panicked in '{method}': {message}")))
                    }
                }
            }
        }
    }
}

impl Store {
    fn server_method(&self, method: &str, args: &[u8]) -> Reply {
        match method {
            "ping" => enc(&std::process::id()),
            "create" => {
                let (kind, init): (String, Vec<u8>) = dec(args, method)?;
                let object = Object::create(&kind, &init, &self.registry)?;
                enc(&self.add(object))
            }
            "named" => {
                let (kind, name, init): (String, String, Vec<u8>) = dec(args, method)?;
                let mut names = self.names.lock().unwrap_or_else(|p| p.into_inner());
                if let Some(&id) = names.get(&name) {
                    let existing = self.object(id)?;
                    let existing = existing.kind();
                    if existing != kind {
                        return Err(msg(format!(
                            "TypeError: the object named '{name}' is a {existing}, not a {kind}"
                        )));
                    }
                    return enc(&id);
                }
                let id = self.add(Object::create(&kind, &init, &self.registry)?);
                names.insert(name, id);
                enc(&id)
            }
            "names" => {
                let names = self.names.lock().unwrap_or_else(|p| p.into_inner());
                let mut list: Vec<(String, String)> = names
                    .iter()
                    .filter_map(|(n, id)| {
                        self.object(*id).ok().map(|o| (n.clone(), o.kind().to_string()))
                    })
                    .collect();
                list.sort();
                enc(&list)
            }
            other => Err(no_method("server", other)),
        }
    }
}

fn dict_method(map: &Guarded<OrderedMap>, method: &str, args: &[u8]) -> Reply {
    match method {
        "get" => {
            let key: Vec<u8> = dec(args, method)?;
            enc(&map.lock().get(&key))
        }
        "set" => {
            let (key, value): (Vec<u8>, Vec<u8>) = dec(args, method)?;
            enc(&map.lock().insert(key, value))
        }
        "setdefault" => {
            let (key, value): (Vec<u8>, Vec<u8>) = dec(args, method)?;
            let mut m = map.lock();
            if let Some(v) = m.get(&key) {
                return enc(v);
            }
            m.insert(key, value.clone());
            enc(&value)
        }
        "pop" => {
            let key: Vec<u8> = dec(args, method)?;
            enc(&map.lock().remove(&key))
        }
        "popitem" => {
            let mut m = map.lock();
            let last = m.iter().last().map(|(k, _)| k.clone());
            match last {
                Some(k) => {
                    let v = m.remove(&k);
                    enc(&(k, v.unwrap_or_default()))
                }
                None => Err(msg("KeyError: popitem(): dictionary is empty")),
            }
        }
        "contains" => {
            let key: Vec<u8> = dec(args, method)?;
            enc(&map.lock().get(&key).is_some())
        }
        "len" => enc(&(map.lock().len() as u64)),
        "keys" => enc(&map.lock().iter().map(|(k, _)| k).collect::<Vec<_>>()),
        "values" => enc(&map.lock().iter().map(|(_, v)| v).collect::<Vec<_>>()),
        "items" => enc(&map.lock().iter().collect::<Vec<_>>()),
        "update" => {
            let items: Vec<(Vec<u8>, Vec<u8>)> = dec(args, method)?;
            let mut m = map.lock();
            for (k, v) in items {
                m.insert(k, v);
            }
            enc(&())
        }
        "clear" => {
            map.lock().clear();
            enc(&())
        }
        "compare_and_set" => {
            let (key, expected, new): (Vec<u8>, Option<Vec<u8>>, Vec<u8>) = dec(args, method)?;
            let mut m = map.lock();
            let current = m.get(&key).cloned();
            if current == expected {
                m.insert(key, new);
                enc(&(true, current))
            } else {
                enc(&(false, current))
            }
        }
        other => Err(no_method("dict", other)),
    }
}

fn namespace_method(map: &Guarded<OrderedMap>, method: &str, args: &[u8]) -> Reply {
    // Attribute names are stored as their encoding, so a namespace is a dict of str.
    match method {
        "get" | "set" | "contains" | "compare_and_set" | "items" | "keys" => {
            dict_method(map, method, args)
        }
        "del" => dict_method(map, "pop", args),
        other => Err(no_method("namespace", other)),
    }
}

fn list_method(list: &Guarded<Vec<Vec<u8>>>, method: &str, args: &[u8]) -> Reply {
    match method {
        "append" => {
            let item: Vec<u8> = dec(args, method)?;
            list.lock().push(item);
            enc(&())
        }
        "extend" => {
            let items: Vec<Vec<u8>> = dec(args, method)?;
            list.lock().extend(items);
            enc(&())
        }
        "get" => {
            let i: i64 = dec(args, method)?;
            let l = list.lock();
            enc(&l[index(l.len(), i)?])
        }
        "set" => {
            let (i, item): (i64, Vec<u8>) = dec(args, method)?;
            let mut l = list.lock();
            let j = index(l.len(), i)?;
            l[j] = item;
            enc(&())
        }
        "insert" => {
            let (i, item): (i64, Vec<u8>) = dec(args, method)?;
            let mut l = list.lock();
            let len = l.len() as i64;
            let j = if i < 0 { (len + i).max(0) } else { i.min(len) };
            l.insert(j as usize, item);
            enc(&())
        }
        "pop" => {
            let i: Option<i64> = dec(args, method)?;
            let mut l = list.lock();
            if l.is_empty() {
                return Err(msg("IndexError: pop from empty list"));
            }
            let j = index(l.len(), i.unwrap_or(-1))?;
            enc(&l.remove(j))
        }
        "remove" => {
            let item: Vec<u8> = dec(args, method)?;
            let mut l = list.lock();
            match l.iter().position(|x| *x == item) {
                Some(j) => {
                    l.remove(j);
                    enc(&())
                }
                None => Err(msg("ValueError: list.remove(x): x not in list")),
            }
        }
        "index" => {
            let item: Vec<u8> = dec(args, method)?;
            match list.lock().iter().position(|x| *x == item) {
                Some(j) => enc(&(j as u64)),
                None => Err(msg("ValueError: the item is not in the list")),
            }
        }
        "contains" => {
            let item: Vec<u8> = dec(args, method)?;
            enc(&list.lock().contains(&item))
        }
        "len" => enc(&(list.lock().len() as u64)),
        "to_vec" => enc(&*list.lock()),
        "clear" => {
            list.lock().clear();
            enc(&())
        }
        other => Err(no_method("list", other)),
    }
}

fn value_method(value: &Guarded<Vec<u8>>, method: &str, args: &[u8]) -> Reply {
    match method {
        "get" => enc(&*value.lock()),
        "set" => {
            *value.lock() = dec(args, method)?;
            enc(&())
        }
        "swap" => {
            let new: Vec<u8> = dec(args, method)?;
            enc(&std::mem::replace(&mut *value.lock(), new))
        }
        "compare_and_set" => {
            let (expected, new): (Vec<u8>, Vec<u8>) = dec(args, method)?;
            let mut v = value.lock();
            if *v == expected {
                let old = std::mem::replace(&mut *v, new);
                enc(&(true, old))
            } else {
                enc(&(false, v.clone()))
            }
        }
        other => Err(no_method("value", other)),
    }
}

fn queue_method(queue: &Queue, method: &str, args: &[u8], client: &Connection) -> Reply {
    let state = &queue.state;
    match method {
        "put" => {
            let (item, block, timeout): (Vec<u8>, bool, Option<u64>) = dec(args, method)?;
            let full = |s: &mut QueueState| queue.maxsize > 0 && s.items.len() >= queue.maxsize;
            let mut s = if block {
                state.wait_until(millis(timeout), client, |s| !full(s)).map_err(|e| {
                    if matches!(e, WireError::Timeout(_)) {
                        WireError::Full
                    } else {
                        e
                    }
                })?
            } else {
                let mut s = state.lock();
                if full(&mut s) {
                    return Err(WireError::Full);
                }
                s
            };
            s.items.push_back(item);
            s.unfinished += 1;
            state.changed.notify_all();
            enc(&())
        }
        "get" => {
            let (block, timeout): (bool, Option<u64>) = dec(args, method)?;
            let mut s =
                if block {
                    state.wait_until(millis(timeout), client, |s| !s.items.is_empty()).map_err(
                        |e| if matches!(e, WireError::Timeout(_)) { WireError::Empty } else { e },
                    )?
                } else {
                    state.lock()
                };
            let item = s.items.pop_front().ok_or(WireError::Empty)?;
            state.changed.notify_all();
            enc(&item)
        }
        "qsize" => enc(&(state.lock().items.len() as u64)),
        "task_done" => {
            let mut s = state.lock();
            if s.unfinished == 0 {
                return Err(msg("ValueError: task_done() called too many times"));
            }
            s.unfinished -= 1;
            state.changed.notify_all();
            enc(&())
        }
        "join" => {
            let timeout: Option<u64> = dec(args, method)?;
            drop(state.wait_until(millis(timeout), client, |s| s.unfinished == 0)?);
            enc(&())
        }
        other => Err(no_method("queue", other)),
    }
}

fn lock_method(lock: &Guarded<LockState>, method: &str, args: &[u8], client: &Connection) -> Reply {
    match method {
        "acquire" => {
            let (block, timeout): (bool, Option<u64>) = dec(args, method)?;
            let mut state = if block {
                match lock.wait_until(millis(timeout), client, |l| l.takeable()) {
                    Ok(g) => g,
                    Err(WireError::Timeout(_)) => return enc(&false),
                    Err(e) => return Err(e),
                }
            } else {
                lock.lock()
            };
            if !state.takeable() {
                return enc(&false);
            }
            *state = LockState { locked: true, holder: peer_pid(client) };
            enc(&true)
        }
        "release" => {
            let mut state = lock.lock();
            if !state.locked {
                return Err(msg("RuntimeError: release unlocked lock"));
            }
            *state = LockState::default();
            lock.changed.notify_all();
            enc(&())
        }
        "locked" => enc(&lock.lock().locked),
        other => Err(no_method("lock", other)),
    }
}

fn event_method(event: &Guarded<bool>, method: &str, args: &[u8], client: &Connection) -> Reply {
    match method {
        "set" => {
            *event.lock() = true;
            event.changed.notify_all();
            enc(&())
        }
        "clear" => {
            *event.lock() = false;
            enc(&())
        }
        "is_set" => enc(&*event.lock()),
        "wait" => {
            let timeout: Option<u64> = dec(args, method)?;
            match event.wait_until(millis(timeout), client, |e| *e) {
                Ok(_) => enc(&true),
                Err(WireError::Timeout(_)) => enc(&false),
                Err(e) => Err(e),
            }
        }
        other => Err(no_method("event", other)),
    }
}

fn semaphore_method(
    sem: &Guarded<Semaphore>,
    method: &str,
    args: &[u8],
    client: &Connection,
) -> Reply {
    match method {
        "acquire" => {
            let (block, timeout): (bool, Option<u64>) = dec(args, method)?;
            let mut s = if block {
                match sem.wait_until(millis(timeout), client, |s| s.value > 0) {
                    Ok(g) => g,
                    Err(WireError::Timeout(_)) => return enc(&false),
                    Err(e) => return Err(e),
                }
            } else {
                sem.lock()
            };
            if s.value == 0 {
                return enc(&false);
            }
            s.value -= 1;
            enc(&true)
        }
        "release" => {
            let mut s = sem.lock();
            if s.bound.is_some_and(|b| s.value >= b) {
                return Err(msg("ValueError: Semaphore released too many times"));
            }
            s.value = s.value.saturating_add(1);
            sem.changed.notify_all();
            enc(&())
        }
        "value" => enc(&sem.lock().value),
        other => Err(no_method("semaphore", other)),
    }
}

/// Acquires a recursive lock inside `state`, waiting up to `timeout`.
fn acquire_owned<T>(
    state: &Guarded<T>,
    lock: impl Fn(&mut T) -> &mut Owned,
    who: Owner,
    block: bool,
    timeout: Option<u64>,
    client: &Connection,
) -> Reply {
    let mut g = if block {
        match state.wait_until(millis(timeout), client, |t| lock(t).takeable(who)) {
            Ok(g) => g,
            Err(WireError::Timeout(_)) => return enc(&false),
            Err(e) => return Err(e),
        }
    } else {
        state.lock()
    };
    enc(&lock(&mut g).acquire(who, peer_pid(client)))
}

fn rlock_method(lock: &Guarded<Owned>, method: &str, args: &[u8], client: &Connection) -> Reply {
    match method {
        "acquire" => {
            let (who, block, timeout): (Owner, bool, Option<u64>) = dec(args, method)?;
            acquire_owned(lock, |o| o, who, block, timeout, client)
        }
        "release" => {
            let who: Owner = dec(args, method)?;
            if lock.lock().release(who)? {
                lock.changed.notify_all();
            }
            enc(&())
        }
        other => Err(no_method("rlock", other)),
    }
}

fn condition_method(
    cond: &Guarded<Condition>,
    method: &str,
    args: &[u8],
    client: &Connection,
) -> Reply {
    match method {
        "acquire" => {
            let (who, block, timeout): (Owner, bool, Option<u64>) = dec(args, method)?;
            acquire_owned(cond, |c| &mut c.lock, who, block, timeout, client)
        }
        "release" => {
            let who: Owner = dec(args, method)?;
            if cond.lock().lock.release(who)? {
                cond.changed.notify_all();
            }
            enc(&())
        }
        "wait" => {
            let (who, timeout): (Owner, Option<u64>) = dec(args, method)?;
            let (ticket, count) = {
                let mut c = cond.lock();
                if c.lock.owner != Some(who) {
                    return Err(msg("RuntimeError: cannot wait on un-acquired lock"));
                }
                let count = std::mem::take(&mut c.lock.count);
                c.lock.owner = None;
                c.lock.holder = None;
                let ticket = c.next_ticket;
                c.next_ticket += 1;
                c.waiting.push_back(ticket);
                cond.changed.notify_all();
                (ticket, count)
            };
            let notified =
                match cond.wait_until(millis(timeout), client, |c| c.notified.contains(&ticket)) {
                    Ok(mut c) => {
                        c.notified.remove(&ticket);
                        true
                    }
                    Err(e) => {
                        let mut c = cond.lock();
                        c.waiting.retain(|t| *t != ticket);
                        if c.notified.remove(&ticket) {
                            true
                        } else if matches!(e, WireError::Timeout(_)) {
                            false
                        } else {
                            return Err(e);
                        }
                    }
                };
            // Take the lock back, as Python's wait does, however long that takes.
            let mut c = cond.wait_until(None, client, |c| c.lock.takeable(who))?;
            c.lock.owner = Some(who);
            c.lock.count = count;
            c.lock.holder = peer_pid(client);
            enc(&notified)
        }
        "notify" => {
            let (who, n): (Owner, u64) = dec(args, method)?;
            let mut c = cond.lock();
            if c.lock.owner != Some(who) {
                return Err(msg("RuntimeError: cannot notify on un-acquired lock"));
            }
            for _ in 0..n {
                match c.waiting.pop_front() {
                    Some(t) => {
                        c.notified.insert(t);
                    }
                    None => break,
                }
            }
            cond.changed.notify_all();
            enc(&())
        }
        other => Err(no_method("condition", other)),
    }
}

fn barrier_method(
    barrier: &Guarded<Barrier>,
    method: &str,
    args: &[u8],
    client: &Connection,
) -> Reply {
    match method {
        "wait" => {
            let timeout: Option<u64> = dec(args, method)?;
            let mut b = barrier.lock();
            if b.broken {
                return Err(msg("BrokenBarrierError"));
            }
            let arrival = b.count;
            b.count += 1;
            if b.count == b.parties {
                b.count = 0;
                b.generation += 1;
                barrier.changed.notify_all();
                return enc(&arrival);
            }
            let generation = b.generation;
            drop(b);
            match barrier
                .wait_until(millis(timeout), client, |b| b.generation != generation || b.broken)
            {
                Ok(b) if b.generation != generation => enc(&arrival),
                Ok(_) => Err(msg("BrokenBarrierError")),
                Err(e) => {
                    let mut b = barrier.lock();
                    b.broken = true;
                    barrier.changed.notify_all();
                    drop(b);
                    Err(match e {
                        WireError::Timeout(_) => msg("BrokenBarrierError: timed out"),
                        other => other,
                    })
                }
            }
        }
        "abort" => {
            barrier.lock().broken = true;
            barrier.changed.notify_all();
            enc(&())
        }
        "reset" => {
            let mut b = barrier.lock();
            b.broken = false;
            b.count = 0;
            b.generation += 1;
            barrier.changed.notify_all();
            enc(&())
        }
        "parties" => enc(&barrier.lock().parties),
        "n_waiting" => enc(&barrier.lock().count),
        "broken" => enc(&barrier.lock().broken),
        other => Err(no_method("barrier", other)),
    }
}

// --------------------------------------------------------------------------------------
// User types

/// A type of your own whose objects live in a manager's server: the server calls
/// [`call`](Self::call) with the method name and the postcard-encoded arguments a proxy
/// sent ([`ObjectProxy::call`](super::ObjectProxy::call)), one call at a time per object.
/// Register it with [`Manager::start_with`](super::Manager::start_with) (a [`Register`]
/// impl) or [`Server::register`]; the initial object is sent by the client, so the type is
/// also `Serialize + Deserialize`. Use [`encode`] and [`decode`] for the bytes.
///
/// ```
/// use multiproc::managers::{decode, encode, SharedObject};
///
/// #[derive(serde::Serialize, serde::Deserialize)]
/// struct Stack(Vec<String>);
///
/// impl SharedObject for Stack {
///     fn call(&mut self, method: &str, args: &[u8]) -> Result<Vec<u8>, String> {
///         match method {
///             "push" => { self.0.push(decode(args)?); encode(&()) }
///             "pop" => encode(&self.0.pop()),
///             other => Err(format!("Stack has no method {other}")),
///         }
///     }
/// }
/// let mut s = Stack(vec![]);
/// s.call("push", &encode(&"x").unwrap()).unwrap();
/// assert_eq!(decode::<Option<String>>(&s.call("pop", &[]).unwrap()).unwrap().as_deref(), Some("x"));
/// ```
pub trait SharedObject: Send + 'static {
    /// Runs `method` with `args` (postcard-encoded); returns the encoded result, or an
    /// error message for the caller ([`Error::Remote`] on its side).
    fn call(&mut self, method: &str, args: &[u8]) -> std::result::Result<Vec<u8>, String>;
}

/// The user types a manager started by [`Manager::start_with`](super::Manager::start_with)
/// can create: its server, a child process running this same program, calls
/// [`register`](Self::register) before serving.
///
/// ```
/// use multiproc::managers::{Register, Registry};
/// # use multiproc::managers::{encode, SharedObject};
/// # #[derive(serde::Serialize, serde::Deserialize)]
/// # struct Counter(i64);
/// # impl SharedObject for Counter {
/// #     fn call(&mut self, _: &str, _: &[u8]) -> Result<Vec<u8>, String> { encode(&self.0) }
/// # }
/// struct MyTypes;
/// impl Register for MyTypes {
///     fn register(registry: &mut Registry) {
///         registry.register::<Counter>("Counter");
///     }
/// }
/// let manager = multiproc::Manager::start_with::<MyTypes>()?;
/// assert_eq!(manager.create("Counter", &Counter(3))?.call::<_, i64>("get", &())?, 3);
/// manager.shutdown()?;
/// # Ok::<(), multiproc::Error>(())
/// ```
pub trait Register: 'static {
    /// Registers the types.
    fn register(registry: &mut Registry);
}

/// No user types.
impl Register for () {
    fn register(_: &mut Registry) {}
}

type Constructor = fn(&[u8]) -> std::result::Result<Box<dyn SharedObject>, String>;

/// The user types of one server, by name (see [`Register`]).
#[derive(Default)]
pub struct Registry {
    types: HashMap<String, Constructor>,
}

fn construct<T: SharedObject + DeserializeOwned>(
    init: &[u8],
) -> std::result::Result<Box<dyn SharedObject>, String> {
    Ok(Box::new(decode::<T>(init)?))
}

impl Registry {
    /// Lets clients create objects of type `T` under `name`, from an initial `T` they send.
    /// Built-in type names (`dict`, `list`, …) cannot be replaced.
    ///
    /// ```
    /// # use multiproc::managers::{encode, Registry, SharedObject};
    /// # #[derive(serde::Serialize, serde::Deserialize)]
    /// # struct Counter(i64);
    /// # impl SharedObject for Counter {
    /// #     fn call(&mut self, _: &str, _: &[u8]) -> Result<Vec<u8>, String> { encode(&self.0) }
    /// # }
    /// let mut registry = Registry::default();
    /// registry.register::<Counter>("Counter");
    /// ```
    pub fn register<T: SharedObject + DeserializeOwned>(&mut self, name: &str) {
        self.types.insert(name.to_string(), construct::<T>);
    }
}

/// Encodes a value as the manager protocol does (postcard), for [`SharedObject`] impls.
///
/// ```
/// let bytes = multiproc::managers::encode(&(1u8, "x"))?;
/// assert_eq!(multiproc::managers::decode::<(u8, String)>(&bytes)?, (1, "x".to_string()));
/// # Ok::<(), String>(())
/// ```
pub fn encode<T: Serialize + ?Sized>(value: &T) -> std::result::Result<Vec<u8>, String> {
    enc(value).map_err(|e| match e {
        WireError::Message(m) | WireError::Closing(m) => m,
        other => format!("{other:?}"),
    })
}

/// Decodes arguments or a value encoded by the manager protocol, for [`SharedObject`]
/// impls; the error message names what went wrong.
///
/// ```
/// assert!(multiproc::managers::decode::<String>(&[5, b'a']).is_err());
/// ```
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> std::result::Result<T, String> {
    Codec::Postcard.decode(bytes).map_err(|e| e.to_string())
}

// --------------------------------------------------------------------------------------
// The server

/// A manager server: binds an address, authenticates clients with an authkey and serves
/// each on its own thread. The handshakes of clients that connect together run side by
/// side, each against its own deadline, so a client that connects and says nothing holds
/// up no one (see [`Server::max_pending`]). [`Manager::start`](super::Manager::start) and
/// [`Manager::serve`](super::Manager::serve) run one in a child process; `multiproc serve`
/// runs one in the foreground; [`Server::serve_forever`] runs one on the calling thread.
///
/// ```
/// use multiproc::managers::{Manager, Server};
///
/// let server = Server::bind("127.0.0.1:0", b"secret")?.max_message(1 << 20);
/// let address = server.address().to_string();
/// std::thread::spawn(move || server.serve_forever());
///
/// let manager = Manager::connect(&address, b"secret")?;
/// let d = manager.dict_named::<String, u32>("results")?;
/// d.set("answer", &42)?;
/// assert_eq!(d.get("answer")?, Some(42));
/// manager.shutdown()?; // only disconnects: the server belongs to the thread above
/// # Ok::<(), multiproc::Error>(())
/// ```
pub struct Server {
    listener: Listener,
    max_message: usize,
    max_clients: usize,
    pub(crate) registry: Registry,
}

impl Server {
    /// Binds `address` (`127.0.0.1:0`, `0.0.0.0:5000`, a socket path, `@name`, or `@` for a
    /// kernel-chosen abstract name); clients must authenticate with `authkey`.
    ///
    /// ```
    /// let server = multiproc::managers::Server::bind("@", b"key")?;
    /// assert!(server.address().to_string().starts_with('@'));
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn bind(address: &str, authkey: &[u8]) -> Result<Server> {
        Ok(Server {
            listener: Listener::bind(address, Some(authkey))?
                .with_handshake_timeout(Some(HANDSHAKE_TIMEOUT))
                .with_max_pending(DEFAULT_MAX_PENDING),
            max_message: DEFAULT_MAX_MESSAGE,
            max_clients: DEFAULT_MAX_CLIENTS,
            registry: Registry::default(),
        })
    }

    /// The largest request frame accepted (default 64 MiB); a client that sends a bigger
    /// one gets an error reply and its connection is closed.
    ///
    /// ```
    /// let server = multiproc::managers::Server::bind("@", b"key")?.max_message(4096);
    /// # drop(server);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn max_message(mut self, bytes: usize) -> Server {
        self.max_message = bytes;
        self
    }

    /// How many authenticated clients are served at once (default 1024); a client beyond
    /// that is closed once it has authenticated. Connections still in their handshake do not
    /// count: [`max_pending`](Self::max_pending) bounds those.
    ///
    /// ```
    /// let server = multiproc::managers::Server::bind("@", b"key")?.max_clients(8);
    /// # drop(server);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn max_clients(mut self, clients: usize) -> Server {
        self.max_clients = clients;
        self
    }

    /// How long a client may take to complete the authentication handshake (default 10
    /// seconds; [`Duration::MAX`] waits forever). A client that takes longer is closed;
    /// it holds up no other client meanwhile.
    ///
    /// ```
    /// use std::time::Duration;
    /// let server = multiproc::managers::Server::bind("@", b"key")?
    ///     .handshake_timeout(Duration::from_secs(3));
    /// # drop(server);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn handshake_timeout(mut self, timeout: Duration) -> Server {
        self.listener = self.listener.with_handshake_timeout(Some(timeout));
        self
    }

    /// How many authentication handshakes run at once (default 64; `0` counts as `1`). When
    /// one more client connects, the connection that has waited longest for its handshake
    /// is closed: a real client answers within a round trip, so the oldest is almost always
    /// a silent one, and a flood of silent connections cannot keep real clients out or use
    /// up descriptors ([`Listener::with_max_pending`]).
    ///
    /// ```
    /// let server = multiproc::managers::Server::bind("@", b"key")?.max_pending(16);
    /// # drop(server);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn max_pending(mut self, handshakes: usize) -> Server {
        self.listener = self.listener.with_max_pending(handshakes);
        self
    }

    /// Lets clients create objects of type `T` by `name`
    /// ([`Manager::create`](super::Manager::create)); see [`SharedObject`].
    ///
    /// ```
    /// use multiproc::managers::{decode, encode, Manager, Server, SharedObject};
    ///
    /// #[derive(serde::Serialize, serde::Deserialize)]
    /// struct Counter(i64);
    /// impl SharedObject for Counter {
    ///     fn call(&mut self, method: &str, args: &[u8]) -> Result<Vec<u8>, String> {
    ///         match method {
    ///             "add" => { self.0 += decode::<i64>(args)?; encode(&self.0) }
    ///             other => Err(format!("no method {other}")),
    ///         }
    ///     }
    /// }
    ///
    /// let server = Server::bind("@", b"key")?.register::<Counter>("Counter");
    /// let address = server.address().to_string();
    /// std::thread::spawn(move || server.serve_forever());
    /// let manager = Manager::connect(&address, b"key")?;
    /// let c = manager.create("Counter", &Counter(10))?;
    /// assert_eq!(c.call::<_, i64>("add", &5)?, 15);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn register<T: SharedObject + DeserializeOwned>(mut self, name: &str) -> Server {
        self.registry.register::<T>(name);
        self
    }

    /// The address clients connect to (with the port or abstract name the system chose).
    ///
    /// ```
    /// let server = multiproc::managers::Server::bind("127.0.0.1:0", b"key")?;
    /// assert_ne!(server.address().port(), Some(0));
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn address(&self) -> &crate::connection::Address {
        self.listener.address()
    }

    /// Serves clients until the process ends. Returns only if accepting fails for good.
    ///
    /// ```no_run
    /// multiproc::managers::Server::bind("0.0.0.0:50000", b"secret")?.serve_forever()?;
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn serve_forever(self) -> Result<()> {
        let store = Arc::new(Store::new(self.registry));
        let active = Arc::new(AtomicUsize::new(0));
        let mut failures = 0u32;
        loop {
            let conn = match self.listener.accept() {
                Ok(conn) => {
                    failures = 0;
                    conn
                }
                // A client that failed its handshake (or took too long) is closed already.
                Err(Error::Authentication(_)) => continue,
                Err(Error::Io(e)) if is_transient(&e) => {
                    // Out of descriptors or memory: back off instead of spinning.
                    std::thread::sleep(Duration::from_millis(50));
                    continue;
                }
                Err(e) => {
                    failures += 1;
                    if failures > 1000 {
                        return Err(e);
                    }
                    continue;
                }
            };
            if active.load(Ordering::Relaxed) >= self.max_clients {
                drop(conn);
                continue;
            }
            active.fetch_add(1, Ordering::Relaxed);
            let store = Arc::clone(&store);
            let max_message = self.max_message;
            let active2 = Arc::clone(&active);
            let spawned =
                std::thread::Builder::new().name("manager-client".into()).spawn(move || {
                    serve_client(&store, conn, max_message);
                    active2.fetch_sub(1, Ordering::Relaxed);
                });
            if spawned.is_err() {
                active.fetch_sub(1, Ordering::Relaxed);
            }
        }
    }
}

fn is_transient(e: &std::io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM))
}

/// Serves one authenticated client.
fn serve_client(store: &Store, conn: Connection, max_message: usize) {
    let mut seen = Seen::default();
    let mut out = Vec::new();
    loop {
        let frame = match conn.recv_bytes(Some(max_message)) {
            Ok(frame) => frame,
            Err(Error::MessageTooLong { len, limit }) => {
                let reply: Reply = Err(WireError::Closing(format!(
                    "request of {len} bytes exceeds the server's limit of {limit} bytes"
                )));
                let mut out = Vec::new();
                if Codec::Postcard.encode_into(&reply, &mut out).is_ok() {
                    let _ = conn.send_bytes(&out);
                }
                return;
            }
            Err(_) => return,
        };
        if let Some(lane) = fast_lane_request(&conn, &frame) {
            let accepted: Reply = Ok(Vec::new());
            let mut out = Vec::new();
            if Codec::Postcard.encode_into(&accepted, &mut out).is_err()
                || conn.send_bytes(&out).is_err()
            {
                return;
            }
            return serve_fast_lane(store, &conn, lane, max_message, seen);
        }
        out.clear();
        store.handle(&frame, &conn, &mut seen, &mut out);
        if conn.send_bytes(&out).is_err() {
            return;
        }
    }
}

/// The queues of a fast-lane request (see `remote::Lane`), if `frame` is one that this
/// server accepts: only from a client on a Unix socket that runs as this server's user
/// (`SO_PEERCRED`). The queues' handles are not even decoded otherwise (decoding one asks
/// the sender for a descriptor), so a client over TCP, or of another user, is answered
/// as for any unknown method.
fn fast_lane_request(conn: &Connection, frame: &[u8]) -> Option<super::remote::FastLane> {
    use std::os::fd::AsFd;
    let ((id, method), rest): ((u64, &str), &[u8]) = postcard::take_from_bytes(frame).ok()?;
    if id != super::remote::FAST_LANE_ID || method != super::remote::FAST_LANE_METHOD {
        return None;
    }
    if !crate::reduction::peer_is_local_same_user(conn.as_fd()) {
        return None;
    }
    Codec::Postcard.decode(rest).ok()
}

/// How many requests in a row a fast-lane thread serves from a client that shares its
/// CPU before it moves to another CPU.
const STEER_AFTER: u32 = 64;

/// Moves a fast-lane thread off its client's CPU while they keep sharing one.
///
/// A client and its server thread that share a CPU take turns on it: every call then
/// costs two context switches (microseconds each on a virtual machine), where two CPUs
/// pass it through shared memory in a fraction of that. The scheduler tends to keep such a
/// pair together once it is (each half looks half idle), so the thread narrows its own CPU
/// set to leave its client's CPU out, and restores it once its lane has been idle for a
/// [`FAST_LANE_CHECK`](super::remote::FAST_LANE_CHECK). Only
/// the server's thread moves, never the client, and only within the CPU set it started
/// with.
struct Steering {
    /// The thread's CPU set when it started serving, if it has two CPUs or more.
    allowed: Option<rustix::thread::CpuSet>,
    /// Requests in a row that came from a client on this thread's CPU.
    shared: u32,
    /// Whether the thread's CPU set is narrowed now.
    steered: bool,
}

impl Steering {
    fn new() -> Steering {
        let allowed = rustix::thread::sched_getaffinity(None).ok().filter(|set| set.count() >= 2);
        Steering { allowed, shared: 0, steered: false }
    }

    /// Notes a request from a client that sent it on CPU `client`.
    fn request_from(&mut self, client: Option<u32>) {
        let Some(allowed) = &self.allowed else { return };
        let (Some(client), Some(mine)) = (client, crate::sys::pid::cpu()) else { return };
        if client != mine {
            self.shared = 0;
            return;
        }
        self.shared += 1;
        let client = client as usize;
        if self.shared < STEER_AFTER || client >= rustix::thread::CpuSet::MAX_CPU {
            return;
        }
        self.shared = 0;
        let mut elsewhere = *allowed;
        elsewhere.unset(client);
        if elsewhere.count() > 0 && rustix::thread::sched_setaffinity(None, &elsewhere).is_ok() {
            self.steered = true;
        }
    }

    /// Gives the thread its whole CPU set back (its lane is idle).
    fn release(&mut self) {
        self.shared = 0;
        if self.steered {
            if let Some(allowed) = &self.allowed {
                let _ = rustix::thread::sched_setaffinity(None, allowed);
            }
            self.steered = false;
        }
    }
}

/// Serves one client over its queues; the socket only tells when the client is gone.
fn serve_fast_lane(
    store: &Store,
    conn: &Connection,
    lane: super::remote::FastLane,
    max_message: usize,
    mut seen: Seen,
) {
    use super::remote::{reserve_cpu_stamp, split_cpu_stamp, stamp_cpu, wait_frame};
    let (requests, replies) = lane;
    let reply_timeout = Some(Duration::from_secs(60));
    let mut client_cpu = None;
    let mut steering = Steering::new();
    // Each request's buffer becomes the next reply's (a put consumes its vector).
    let mut spare = Vec::new();
    loop {
        let frame = match wait_frame(&requests, client_cpu) {
            Some(frame) => frame,
            None => {
                match requests.get(Some(super::remote::FAST_LANE_CHECK)) {
                    Ok(frame) => frame,
                    Err(Error::Empty) => {
                        // Idle for a while: the whole CPU set back.
                        steering.release();
                        // Nothing is ever sent on the socket after the upgrade: readable
                        // means gone.
                        if conn.poll(Some(Duration::ZERO)).unwrap_or(true) {
                            return;
                        }
                        continue;
                    }
                    Err(_) => return,
                }
            }
        };
        let mut out = std::mem::take(&mut spare);
        out.clear();
        reserve_cpu_stamp(&mut out);
        let closing = match split_cpu_stamp(&frame) {
            _ if frame.len() > max_message => Some(format!(
                "request of {} bytes exceeds the server's limit of {max_message} bytes",
                frame.len()
            )),
            None => Some("malformed request: no CPU stamp".to_string()),
            Some((cpu, body)) => {
                client_cpu = cpu;
                steering.request_from(cpu);
                store.handle(body, conn, &mut seen, &mut out);
                None
            }
        };
        if let Some(why) = closing {
            let _ = Codec::Postcard.encode_into(&Reply::Err(WireError::Closing(why)), &mut out);
            stamp_cpu(&mut out);
            let _ = replies.put(out, reply_timeout);
            return;
        }
        stamp_cpu(&mut out);
        if replies.put(out, reply_timeout).is_err() {
            return;
        }
        if frame.capacity() <= SPARE_KEEP {
            spare = frame;
        }
    }
}

/// The largest buffer a connection keeps for its next reply.
const SPARE_KEEP: usize = 64 << 10;
