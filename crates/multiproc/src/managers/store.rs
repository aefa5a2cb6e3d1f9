//! The object store of a manager's server: every object by id, the named ones by name,
//! and the dispatch of one request frame to the object it names. Objects are
//! type-agnostic (every value is kept as its postcard encoding): the built-in ones live in
//! [`containers`](super::containers) and [`primitives`](super::primitives), user types
//! come from the server's [`Registry`].
//!
//! Objects live as long as the server: they are not reference-counted, so a connection
//! may cache the objects it used ([`Seen`]) and find them again without the store's lock.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use super::containers::{dict_method, list_method, namespace_method, value_method, OrderedMap};
use super::primitives::{
    barrier_method, condition_method, event_method, lock_method, queue_method, rlock_method,
    semaphore_method, Barrier, Condition, Guarded, LockState, Owned, Queue, QueueState, Semaphore,
};
use super::registry::{Registry, SharedObject};
use super::wire::{
    dec, dec_borrowed, enc, msg, no_method, ok_option_bytes, ok_reply, Reply, WireError,
};
use crate::codec::Codec;
use crate::connection::Connection;
use crate::sync_util::lock;

/// An object in the store: a built-in one, or a user type's (with its type name).
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
    /// The type name clients create it by.
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

    /// A new object of type `kind` from the initial value `init` a client sent.
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
        lock(&self.objects).insert(id, Arc::new(object));
        id
    }

    fn object(&self, id: u64) -> std::result::Result<Arc<Object>, WireError> {
        lock(&self.objects)
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
                let mut object = lock(object);
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
                let mut names = lock(&self.names);
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
                let names = lock(&self.names);
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
