//! The manager's server: [`Server`] binds an address, authenticates clients, and serves
//! each connection on its own thread against one [`Store`] of objects. A connection from
//! this machine may turn into a [fast lane](super::fast_lane) after its first request.
//!
//! The wire protocol is described in [`wire`](super::wire); the objects in
//! [`store`](super::store), [`containers`](super::containers),
//! [`primitives`](super::primitives) and [`registry`](super::registry).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde::de::DeserializeOwned;

use super::fast_lane::{fast_lane_request, serve_fast_lane};
use super::registry::{Registry, SharedObject};
use super::wire::{Reply, WireError};
use crate::codec::Codec;
use crate::connection::{Connection, Listener};
use crate::error::{Error, Result};

/// The store and a connection's object cache, where the fuzz targets reach them.
pub(crate) use super::store::{Seen, Store};

/// The largest request a server accepts unless told otherwise (64 MiB).
pub const DEFAULT_MAX_MESSAGE: usize = 64 << 20;

/// How many client connections a server serves at once unless told otherwise.
pub const DEFAULT_MAX_CLIENTS: usize = 1024;

/// How long a client may take for the authentication handshake unless told otherwise.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// How many authentication handshakes a server runs at once unless told otherwise.
const DEFAULT_MAX_PENDING: usize = 64;

/// A manager server: binds an address, authenticates clients with an authkey and serves
/// each on its own thread. The handshakes of clients that connect together run side by
/// side, each against its own deadline, so a client that connects and says nothing holds
/// up no one (see [`Server::max_pending`]). [`Manager::start`](super::Manager::start) and
/// [`Manager::serve`](super::Manager::serve) run one in a child process; `multiproc serve`
/// runs one in the foreground; [`Server::serve_forever`] runs one on the calling thread.
///
/// ```
/// use multiproc::managers::{Manager, Server};
/// use std::time::Duration;
///
/// let server = Server::bind("127.0.0.1:0", b"secret")? // or a socket path, `@name`, `@`
///     .max_message(1 << 20)
///     .max_clients(8)
///     .max_pending(16)
///     .handshake_timeout(Duration::from_secs(3));
/// assert_ne!(server.address().port(), Some(0)); // the port the system chose
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
    pub fn max_message(mut self, bytes: usize) -> Server {
        self.max_message = bytes;
        self
    }

    /// How many authenticated clients are served at once (default 1024); a client beyond
    /// that is closed once it has authenticated. Connections still in their handshake do not
    /// count: [`max_pending`](Self::max_pending) bounds those.
    pub fn max_clients(mut self, clients: usize) -> Server {
        self.max_clients = clients;
        self
    }

    /// How long a client may take to complete the authentication handshake (default 10
    /// seconds; [`Duration::MAX`] waits forever). A client that takes longer is closed;
    /// it holds up no other client meanwhile.
    pub fn handshake_timeout(mut self, timeout: Duration) -> Server {
        self.listener = self.listener.with_handshake_timeout(Some(timeout));
        self
    }

    /// How many authentication handshakes run at once (default 64; `0` counts as `1`). When
    /// one more client connects, the connection that has waited longest for its handshake
    /// is closed: a real client answers within a round trip, so the oldest is almost always
    /// a silent one, and a flood of silent connections cannot keep real clients out or use
    /// up descriptors ([`Listener::with_max_pending`]).
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
    pub fn address(&self) -> &crate::connection::Address {
        self.listener.address()
    }

    /// Serves clients until the process ends. Returns only if accepting fails for good.
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
                Err(Error::Io(e)) if crate::sys::fd::is_out_of_resources(&e) => {
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

/// Serves one authenticated client.
fn serve_client(store: &Store, conn: Connection, max_message: usize) {
    let mut seen = Seen::default();
    let mut out = Vec::new();
    loop {
        let frame = match conn.recv_bytes_max(max_message) {
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
