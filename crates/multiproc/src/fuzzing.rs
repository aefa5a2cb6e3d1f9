//! Entry points for the fuzz targets in `fuzz/` at the workspace root, compiled only with
//! the `fuzzing` feature. They forward to crate-private functions so that a fuzzer can
//! feed them untrusted bytes in-process. **Not a stable API**: for fuzzing only.

use std::time::Duration;

use crate::connection::{auth, AuthDialect, Connection};
use crate::error::Result;
use crate::managers::server::Store;
use crate::managers::Registry;
use crate::sync_util::lock;

/// The listener's side of the authkey handshake (deliver a challenge, then answer one).
pub fn server_handshake(
    conn: &Connection,
    authkey: &[u8],
    dialect: AuthDialect,
    timeout: Duration,
) -> Result<()> {
    auth::server_handshake(conn, authkey, dialect, crate::deadline::after(timeout))
}

/// The client's side of the authkey handshake (answer a challenge, then deliver one).
pub fn client_handshake(
    conn: &Connection,
    authkey: &[u8],
    dialect: AuthDialect,
    timeout: Duration,
) -> Result<()> {
    auth::client_handshake(conn, authkey, dialect, crate::deadline::after(timeout))
}

/// Answers one challenge (CPython's `answer_challenge`).
pub fn answer_challenge(conn: &Connection, authkey: &[u8], timeout: Duration) -> Result<()> {
    auth::answer_challenge(conn, authkey, crate::deadline::after(timeout))
}

/// A manager server's object store, without sockets or threads.
pub struct ManagerStore(Store, std::sync::Mutex<crate::managers::server::Seen>);

impl ManagerStore {
    /// An empty store that can also create the user types in `registry`.
    pub fn new(registry: Registry) -> ManagerStore {
        ManagerStore(Store::new(registry), Default::default())
    }

    /// Handles one request frame as the server does and returns the reply frame. Calls
    /// that block give up when `client`'s peer has hung up.
    pub fn handle(&self, frame: &[u8], client: &Connection) -> Vec<u8> {
        let mut seen = lock(&self.1);
        let mut out = Vec::new();
        self.0.handle(frame, client, &mut seen, &mut out);
        out
    }
}
