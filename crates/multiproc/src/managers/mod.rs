//! Managers: objects that live in a server process and are used from any process through
//! proxies (Python's `multiprocessing.Manager`).
//!
//! [`Manager::start`] starts a server in a child process, listening on a Linux abstract
//! Unix socket with a random authkey; [`Manager::serve`] does the same on any address
//! (TCP for other machines); [`Manager::connect`] reaches a running server; `multiproc
//! serve --bind ADDR --authkey-file F` runs one in the foreground.
//!
//! | Python | multiproc |
//! |---|---|
//! | `with Manager() as m:` | `let m = Manager::start()?;` (shut down on drop) |
//! | `m.dict()`, `m.list()`, `m.Namespace()` | [`Manager::dict`], [`Manager::list`], [`Manager::namespace`] |
//! | `m.Value('i', 0)` | [`Manager::value`] |
//! | `m.Queue()`, `m.JoinableQueue()` | [`Manager::queue`] |
//! | `m.Array('d', items)` | [`Manager::array`] (a [`ListProxy`]) |
//! | `m.Lock()`, `m.RLock()`, `m.Event()`, `m.Condition()` | [`Manager::lock`], [`Manager::rlock`], [`Manager::event`], [`Manager::condition`] |
//! | `m.Semaphore(n)`, `m.BoundedSemaphore(n)`, `m.Barrier(n)` | [`Manager::semaphore`], [`Manager::bounded_semaphore`], [`Manager::barrier`] |
//! | `BaseManager(address, authkey).connect()` | [`Manager::connect`] |
//! | `m.get_server().serve_forever()` | [`Server::serve_forever`], `multiproc serve` |
//! | `q.get()`, `q.get(timeout=t)`, `q.get_nowait()` | [`QueueProxy::get`], [`QueueProxy::get_timeout`], [`QueueProxy::try_get`] |
//! | `q.put(x)`, `q.put(x, timeout=t)`, `q.put_nowait(x)` | [`QueueProxy::put`], [`QueueProxy::put_timeout`], [`QueueProxy::try_put`] (a failed put hands `x` back in a [`PutError`](crate::PutError)) |
//! | `q.join()` | [`QueueProxy::join`], [`QueueProxy::join_timeout`] |
//! | `with lock:`, `lock.acquire(timeout=t)`, `lock.acquire(False)` | [`LockProxy::acquire`], [`LockProxy::acquire_timeout`], [`LockProxy::try_acquire`]: a [`ProxyGuard`] that releases on drop (likewise `RLock`, `Semaphore`, `Condition`) |
//! | `lock.release()` after `acquire()` | [`ProxyGuard::leak`], then [`LockProxy::release`] |
//! | `event.wait()`, `event.wait(t)`; `barrier.wait()`, `barrier.wait(t)`; `cond.wait()`, `cond.wait(t)` | [`EventProxy::wait`], [`EventProxy::wait_timeout`]; [`BarrierProxy::wait`], [`BarrierProxy::wait_timeout`]; [`ConditionProxy::wait`], [`ConditionProxy::wait_timeout`] |
//!
//! Every blocking call comes in three forms: `x()` waits as long as it takes,
//! `x_timeout(d)` at most `d` ([`Error::Timeout`], or [`Error::Empty`] / [`Error::Full`] for
//! a queue), `try_x()` not at all.
//!
//! # How it works
//! The server is type-agnostic: it stores every value as its serde (postcard) encoding,
//! dicts in insertion order; keys compare by their encoding. A proxy is a token (address,
//! authkey, object id) with no OS handle, so it travels to child processes, through
//! queues and pipes, and inside other managed objects. Each process opens its own
//! connections to the server on first use (a small pool, so threads do not wait for each
//! other; reopened after a fork), and the server serves each connection on its own thread.
//!
//! A connection to a server on this machine (a Unix or abstract socket) moves its calls
//! onto a pair of shared-memory [queues](crate::queues) once it is open; the socket then
//! only tells each side that the other is still there. A side waiting for the other polls
//! for up to 50 µs before it sleeps, so a steady stream of calls costs about a microsecond
//! each way. A server thread that keeps finding its client on its own CPU moves to
//! another CPU of its CPU set (taking turns on one CPU costs two context switches per
//! call), and gets its whole set back once its client has been idle for 100 ms.
//!
//! A server that dies makes every later call fail with [`Error::Remote`] (the connection is
//! closed, so nothing hangs). Errors the server raises (an `IndexError`, an unknown object
//! id) arrive as [`Error::Remote`] too; an empty or full queue as [`Error::Empty`] /
//! [`Error::Full`].
//!
//! Objects live as long as the server: they are not reference-counted.
//!
//! A serialized proxy carries the server's authkey (as Python's does when it pickles a
//! proxy for a child): send proxies only to processes you would give the key.
//!
//! A lock held in the server ([`Manager::lock`], [`Manager::rlock`], a [`Manager::condition`]'s
//! lock) by a client process on the same machine that dies passes to the next process that
//! waits for it or tries it (Python's would stay held forever); whatever the lock guarded
//! may be half-updated. The server learns a local client's pid from its Unix socket; it
//! cannot see a process on another machine die, so a lock held over TCP by a process that
//! died stays held, as in Python. Semaphores have no owner and are never recovered. The
//! shared-memory locks of [`synchronize`](crate::synchronize) also report that their owner
//! died.
//!
//! Each proxy type's page runs its methods in one example, and [`Manager::dict`] shows
//! every kind of object a manager makes; the methods' own docs say what each one does.
//!
//! The seed's "Hello from Process", through a managed dict:
//!
//! ```
//! use multiproc::managers::{DictProxy, Manager};
//! use multiproc::Process;
//!
//! fn f((d, key): (DictProxy<String, String>, String)) {
//!     d.set(&key, "Hello from Process").unwrap();
//! }
//!
//! let manager = Manager::start()?;
//! let d = manager.dict()?;
//! let p = Process::new(f, (d.clone(), "greeting".to_string()));
//! p.start()?;
//! p.join()?;
//! assert_eq!(d.get("greeting")?.as_deref(), Some("Hello from Process"));
//! manager.shutdown()?;
//! # Ok::<(), multiproc::Error>(())
//! ```

use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::connection::Connection;
use crate::error::{Error, Result};
use crate::process::Process;
use crate::sync_util::lock;

mod containers;
mod fast_lane;
mod primitives;
mod proxy;
mod registry;
mod remote;
pub(crate) mod server;
mod store;
mod wire;

pub use proxy::{
    BarrierProxy, ConditionProxy, DictProxy, EventProxy, ListProxy, LockProxy, Namespace,
    ObjectProxy, ProxyGuard, QueueProxy, RLockProxy, SemaphoreProxy, ValueProxy,
};
pub use registry::{decode, encode, Register, Registry, SharedObject};
pub use server::{Server, DEFAULT_MAX_CLIENTS, DEFAULT_MAX_MESSAGE};

use remote::{enc, Handle, Remote};

/// How long [`Manager::start`] waits for its server to report its address.
const START_TIMEOUT: Duration = Duration::from_secs(30);
/// How long shutting down waits for the server to exit before killing it.
const STOP_TIMEOUT: Duration = Duration::from_secs(5);

/// The server process a manager started, and the pipe whose closing stops it.
struct Owned {
    process: Process,
    control: Connection,
}

/// A handle on a manager server (Python's `multiprocessing.Manager()` /
/// `BaseManager`): creates shared objects and returns proxies to them.
///
/// A manager made by [`start`](Self::start) or [`serve`](Self::serve) owns its server
/// process: [`shutdown`](Self::shutdown), or dropping the manager, stops it; so does the
/// death of this process, even by `SIGKILL` (the server watches a pipe from its parent).
/// Proxies outlive neither: calls on them then fail with [`Error::Remote`].
///
/// ```
/// use multiproc::Manager;
///
/// let manager = Manager::start()?;
/// let shared_list = manager.list::<u32>()?;
/// let handles: Vec<_> = (0..3)
///     .map(|i| multiproc::spawn(|(l, i): (multiproc::managers::ListProxy<u32>, u32)| l.append(&i).unwrap(), (shared_list.clone(), i)))
///     .collect::<Result<_, _>>()?;
/// for h in handles {
///     h.join()?;
/// }
/// let mut items = shared_list.to_vec()?;
/// items.sort();
/// assert_eq!(items, [0, 1, 2]);
/// assert!(manager.address().starts_with('@')); // an abstract socket
/// assert_eq!(manager.authkey().len(), 32); // a random key
/// assert_ne!(manager.server_pid()?, std::process::id());
/// manager.shutdown()?;
/// assert!(matches!(shared_list.len(), Err(multiproc::Error::Remote(_)))); // the server is gone
/// manager.shutdown()?; // again: nothing to do
/// # Ok::<(), multiproc::Error>(())
/// ```
pub struct Manager {
    remote: Arc<Remote>,
    owned: Mutex<Option<Owned>>,
}

/// A fresh abstract socket name for a local server. Not the kernel's autobind (`@`): its
/// five hex digits are soon reused, and a proxy that outlived its server could then reach
/// a stranger at the same address.
fn local_address() -> String {
    format!("@multiproc-manager-{}-{:016x}", std::process::id(), getrandom::u64().unwrap_or(0))
}

/// The server's side of [`Manager::start`]: bind, report the address, serve until the
/// parent closes the control pipe (or dies).
fn server_main<R: Register>(
    (control, bind, authkey, max_message): (Connection, String, Vec<u8>, u64),
) {
    let server = match Server::bind(&bind, &authkey) {
        Ok(mut s) => {
            R::register(&mut s.registry);
            s.max_message(usize::try_from(max_message).unwrap_or(usize::MAX))
        }
        Err(e) => {
            let _ = control.send(&Err::<String, String>(e.to_string()));
            return;
        }
    };
    let socket_file = match server.address() {
        crate::connection::Address::Unix(path) => Some(path.clone()),
        _ => None,
    };
    if control.send(&Ok::<String, String>(server.address().to_string())).is_err() {
        return;
    }
    let watchdog = std::thread::Builder::new().name("manager-watchdog".into()).spawn(move || {
        // Any message, EOF or error: the parent wants us gone (or is gone).
        let _ = control.recv_bytes_max(16);
        if let Some(path) = socket_file {
            let _ = std::fs::remove_file(path);
        }
        std::process::exit(0);
    });
    if watchdog.is_err() {
        return;
    }
    if server.serve_forever().is_err() {
        std::process::exit(1);
    }
}

impl Manager {
    /// Starts a server in a child process on a kernel-chosen abstract Unix socket with a
    /// random 32-byte authkey, and returns the manager that owns it (Python's
    /// `Manager()`).
    pub fn start() -> Result<Manager> {
        let mut authkey = vec![0u8; 32];
        getrandom::fill(&mut authkey)
            .map_err(|e| Error::Io(std::io::Error::other(e.to_string())))?;
        Manager::spawn_server::<()>(&local_address(), &authkey)
    }

    /// Starts a server in a child process listening on `bind_addr` (e.g. `0.0.0.0:50000`
    /// to serve other machines, `127.0.0.1:0` for a free port, a socket path) with
    /// `authkey`; the manager owns it. Other processes reach it with
    /// [`Manager::connect`]`(manager.address(), authkey)` and share objects by name
    /// ([`dict_named`](Self::dict_named), [`queue_named`](Self::queue_named), …).
    ///
    /// ```
    /// use multiproc::{Error, Manager};
    /// let server = Manager::serve("127.0.0.1:0", b"secret")?;
    /// assert!(server.address().starts_with("127.0.0.1:"));
    /// let client = Manager::connect(server.address(), b"secret")?;
    /// client.dict_named::<String, u8>("results")?.set("a", &1)?;
    /// assert_eq!(server.dict_named::<String, u8>("results")?.get("a")?, Some(1));
    /// assert!(matches!(Manager::connect(server.address(), b"wrong"), Err(Error::Authentication(_))));
    /// client.shutdown()?; // only disconnects: the server belongs to `server`
    /// server.shutdown()?;
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn serve(bind_addr: &str, authkey: &[u8]) -> Result<Manager> {
        Manager::spawn_server::<()>(bind_addr, authkey)
    }

    /// Like [`start`](Self::start), with a server that can also create the user types `R`
    /// registers (see [`Register`], [`SharedObject`], [`Manager::create`]).
    pub fn start_with<R: Register>() -> Result<Manager> {
        let mut authkey = vec![0u8; 32];
        getrandom::fill(&mut authkey)
            .map_err(|e| Error::Io(std::io::Error::other(e.to_string())))?;
        Manager::spawn_server::<R>(&local_address(), &authkey)
    }

    /// Like [`serve`](Self::serve), with the user types `R` registers.
    pub fn serve_with<R: Register>(bind_addr: &str, authkey: &[u8]) -> Result<Manager> {
        Manager::spawn_server::<R>(bind_addr, authkey)
    }

    /// A new object of the user type registered as `type_name`, starting as `initial` (an
    /// example: [`Register`]).
    pub fn create<T: Serialize + ?Sized>(
        &self,
        type_name: &str,
        initial: &T,
    ) -> Result<ObjectProxy> {
        self.make(type_name, enc(initial)?, ObjectProxy::from_handle)
    }

    /// The object of user type `type_name` called `name`, created as `initial` on first use
    /// (later calls ignore `initial`).
    pub fn create_named<T: Serialize + ?Sized>(
        &self,
        type_name: &str,
        name: &str,
        initial: &T,
    ) -> Result<ObjectProxy> {
        self.make_named(type_name, name, enc(initial)?, ObjectProxy::from_handle)
    }

    fn spawn_server<R: Register>(bind: &str, authkey: &[u8]) -> Result<Manager> {
        let (control, child_end) = crate::connection::pipe(true)?;
        let process = Process::builder(
            server_main::<R>,
            (child_end, bind.to_string(), authkey.to_vec(), DEFAULT_MAX_MESSAGE as u64),
        )
        .name("Manager-server")
        .build();
        process.start()?;
        let stop = |process: &Process| {
            let _ = process.kill();
            let _ = process.join_timeout(STOP_TIMEOUT);
        };
        let address =
            match control.recv_timeout::<std::result::Result<String, String>>(START_TIMEOUT) {
                Ok(Ok(address)) => address,
                Ok(Err(message)) => {
                    stop(&process);
                    return Err(Error::Remote(format!(
                        "the manager server could not start: {message}"
                    )));
                }
                Err(e) => {
                    stop(&process);
                    return Err(Error::Remote(format!("the manager server did not start: {e}")));
                }
            };
        Ok(Manager {
            remote: Remote::get(&address, authkey),
            owned: Mutex::new(Some(Owned { process, control })),
        })
    }

    /// Connects to a running server (one started by [`serve`](Self::serve), by `multiproc
    /// serve`, or the address of any manager) and checks that it answers. The manager does
    /// not own the server: [`shutdown`](Self::shutdown) only disconnects.
    pub fn connect(addr: &str, authkey: &[u8]) -> Result<Manager> {
        let manager = Manager { remote: Remote::get(addr, authkey), owned: Mutex::new(None) };
        manager.server_pid()?;
        Ok(manager)
    }

    /// The server's address, as [`Manager::connect`] takes it (`@name` for an abstract
    /// socket, `host:port` for TCP).
    pub fn address(&self) -> &str {
        &self.remote.address
    }

    /// The authkey clients must present.
    pub fn authkey(&self) -> &[u8] {
        &self.remote.authkey
    }

    /// The server process's pid (a round trip: also checks that it answers).
    pub fn server_pid(&self) -> Result<u32> {
        self.remote.call(0, "ping", &())
    }

    /// Stops the server this manager owns and waits for it to exit (killing it if it does
    /// not within 5 seconds); for a [`connect`](Self::connect)ed manager, only closes this
    /// process's idle connections. Idempotent; dropping the manager does the same.
    pub fn shutdown(&self) -> Result<()> {
        self.remote.disconnect();
        let owned = lock(&self.owned).take();
        if let Some(Owned { process, control }) = owned {
            // Say it, rather than only closing our end: a child forked from this process
            // holds a copy of that end, which would keep the server waiting.
            let _ = control.send_bytes(b"stop");
            drop(control);
            if process.join_timeout(STOP_TIMEOUT).is_err() {
                process.kill()?;
                process.join_timeout(STOP_TIMEOUT)?;
            }
        }
        Ok(())
    }

    fn make<P>(&self, kind: &str, init: Vec<u8>, wrap: fn(Handle) -> P) -> Result<P> {
        let id: u64 = self.remote.call(0, "create", &(kind, init))?;
        Ok(wrap(Handle { remote: Arc::clone(&self.remote), id }))
    }

    fn make_named<P>(
        &self,
        kind: &str,
        name: &str,
        init: Vec<u8>,
        wrap: fn(Handle) -> P,
    ) -> Result<P> {
        let id: u64 = self.remote.call(0, "named", &(kind, name, init))?;
        Ok(wrap(Handle { remote: Arc::clone(&self.remote), id }))
    }

    /// A new empty dict (Python's `manager.dict()`).
    ///
    /// The example makes every kind of object a manager holds, empty or from an initial
    /// value; the `_named` forms ([`dict_named`](Self::dict_named), …) return the object
    /// of that name, created on first use, so that every client that asks for a name gets
    /// the same object:
    ///
    /// ```
    /// let manager = multiproc::Manager::start()?;
    /// let d = manager.dict::<String, Vec<u8>>()?;
    /// let l = manager.list::<f64>()?;
    /// let arr = manager.array([0.0f64; 4])?; // a ListProxy
    /// let counter = manager.value(0i32)?;
    /// let q = manager.queue::<String>(0)?; // 0: unbounded
    /// let (lock, rlock, cond) = (manager.lock()?, manager.rlock()?, manager.condition()?);
    /// let (event, barrier, sem) = (manager.event()?, manager.barrier(2)?, manager.semaphore(2)?);
    /// let bounded = manager.bounded_semaphore(1)?;
    /// assert!(bounded.release().is_err()); // beyond its initial value
    /// assert!(manager.barrier(0).is_err());
    ///
    /// let results = manager.dict_named::<String, u8>("results")?;
    /// assert_eq!(results.id(), manager.dict_named::<String, u8>("results")?.id());
    /// assert!(manager.list_named::<u8>("results").is_err()); // a dict, not a list
    /// manager.value_named("n", 1u8)?.set(&5)?;
    /// assert_eq!(manager.value_named("n", 1u8)?.get()?, 5); // `initial` counts only once
    /// manager.queue_named::<u32>("jobs")?;
    /// let names: Vec<_> = manager.names()?.into_iter().map(|(name, kind)| name + ":" + &kind).collect();
    /// assert_eq!(names, ["jobs:queue", "n:value", "results:dict"]);
    /// manager.shutdown()?;
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn dict<K: Serialize + DeserializeOwned, V: Serialize + DeserializeOwned>(
        &self,
    ) -> Result<DictProxy<K, V>> {
        self.make("dict", enc(&Vec::<(Vec<u8>, Vec<u8>)>::new())?, DictProxy::from_handle)
    }

    /// The dict called `name` on the server, created empty on first use; every client
    /// that asks for the same name gets the same dict. Asking for a name that holds another
    /// kind of object is an error.
    pub fn dict_named<K: Serialize + DeserializeOwned, V: Serialize + DeserializeOwned>(
        &self,
        name: &str,
    ) -> Result<DictProxy<K, V>> {
        self.make_named(
            "dict",
            name,
            enc(&Vec::<(Vec<u8>, Vec<u8>)>::new())?,
            DictProxy::from_handle,
        )
    }

    /// A new empty list (Python's `manager.list()`).
    pub fn list<T: Serialize + DeserializeOwned>(&self) -> Result<ListProxy<T>> {
        self.make("list", enc(&Vec::<Vec<u8>>::new())?, ListProxy::from_handle)
    }

    /// The list called `name`, created empty on first use.
    pub fn list_named<T: Serialize + DeserializeOwned>(&self, name: &str) -> Result<ListProxy<T>> {
        self.make_named("list", name, enc(&Vec::<Vec<u8>>::new())?, ListProxy::from_handle)
    }

    /// A new empty namespace (Python's `manager.Namespace()`).
    pub fn namespace(&self) -> Result<Namespace> {
        self.make("namespace", Vec::new(), Namespace::from_handle)
    }

    /// The namespace called `name`, created empty on first use.
    pub fn namespace_named(&self, name: &str) -> Result<Namespace> {
        self.make_named("namespace", name, Vec::new(), Namespace::from_handle)
    }

    /// A new value holding `initial` (Python's `manager.Value(typecode, initial)`; the
    /// type replaces the type code).
    pub fn value<T: Serialize + DeserializeOwned>(&self, initial: T) -> Result<ValueProxy<T>> {
        self.make("value", enc(&enc(&initial)?)?, ValueProxy::from_handle)
    }

    /// The value called `name`, created holding `initial` on first use (later calls ignore
    /// `initial`).
    pub fn value_named<T: Serialize + DeserializeOwned>(
        &self,
        name: &str,
        initial: T,
    ) -> Result<ValueProxy<T>> {
        self.make_named("value", name, enc(&enc(&initial)?)?, ValueProxy::from_handle)
    }

    /// A new queue holding at most `maxsize` items (`0`: unbounded); Python's
    /// `manager.Queue(maxsize)` and `manager.JoinableQueue(maxsize)` in one.
    pub fn queue<T: Serialize + DeserializeOwned>(&self, maxsize: usize) -> Result<QueueProxy<T>> {
        self.make("queue", enc(&(maxsize as u64))?, QueueProxy::from_handle)
    }

    /// The unbounded queue called `name`, created on first use: the meeting point of a
    /// distributed work queue (see the `manager_work_queue` example).
    pub fn queue_named<T: Serialize + DeserializeOwned>(
        &self,
        name: &str,
    ) -> Result<QueueProxy<T>> {
        self.make_named("queue", name, enc(&0u64)?, QueueProxy::from_handle)
    }

    /// A new lock held in the server (Python's `manager.Lock()`).
    pub fn lock(&self) -> Result<LockProxy> {
        self.make("lock", Vec::new(), LockProxy::from_handle)
    }

    /// A new event held in the server (Python's `manager.Event()`).
    pub fn event(&self) -> Result<EventProxy> {
        self.make("event", Vec::new(), EventProxy::from_handle)
    }

    /// A new semaphore with `value` units, held in the server (Python's
    /// `manager.Semaphore(value)`).
    pub fn semaphore(&self, value: u64) -> Result<SemaphoreProxy> {
        self.make("semaphore", enc(&(value, false))?, SemaphoreProxy::from_handle)
    }

    /// A new bounded semaphore (Python's `manager.BoundedSemaphore(value)`): releasing it
    /// beyond `value` is an error.
    pub fn bounded_semaphore(&self, value: u64) -> Result<SemaphoreProxy> {
        self.make("semaphore", enc(&(value, true))?, SemaphoreProxy::from_handle)
    }

    /// A new recursive lock held in the server (Python's `manager.RLock()`).
    pub fn rlock(&self) -> Result<RLockProxy> {
        self.make("rlock", Vec::new(), RLockProxy::from_handle)
    }

    /// A new condition variable with its own recursive lock, held in the server (Python's
    /// `manager.Condition()`).
    pub fn condition(&self) -> Result<ConditionProxy> {
        self.make("condition", Vec::new(), ConditionProxy::from_handle)
    }

    /// A new list holding `items` (Python's `manager.Array(typecode, items)`: the element
    /// type replaces the type code; the result is a [`ListProxy`], indexable, settable, of
    /// fixed length unless you append). For numbers shared on one machine, the
    /// shared-memory [`Array`](crate::Array) is far faster.
    pub fn array<T: Serialize + DeserializeOwned>(
        &self,
        items: impl IntoIterator<Item = T>,
    ) -> Result<ListProxy<T>> {
        let items = items.into_iter().map(|i| enc(&i)).collect::<Result<Vec<_>>>()?;
        self.make("list", enc(&items)?, ListProxy::from_handle)
    }

    /// A new barrier for `parties` processes, held in the server (Python's
    /// `manager.Barrier(parties)`).
    pub fn barrier(&self, parties: u64) -> Result<BarrierProxy> {
        self.make("barrier", enc(&parties)?, BarrierProxy::from_handle)
    }

    /// The named objects on the server: (name, kind) pairs, sorted by name.
    pub fn names(&self) -> Result<Vec<(String, String)>> {
        self.remote.call(0, "names", &())
    }
}

impl Drop for Manager {
    fn drop(&mut self) {
        let _ = self.shutdown();
    }
}

impl std::fmt::Debug for Manager {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let owned = self.owned.lock().map(|o| o.is_some()).unwrap_or(false);
        f.debug_struct("Manager")
            .field("address", &self.remote.address)
            .field("owns_server", &owned)
            .finish()
    }
}
