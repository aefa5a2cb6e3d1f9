//! Listener and Client (placeholder).

use crate::connection::Connection;
use crate::error::{Error, Result};

/// An address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Address {
    /// TCP.
    Tcp(std::net::SocketAddr),
}

/// A listener.
#[derive(Debug)]
pub struct Listener {}

/// A client.
#[derive(Debug)]
pub struct Client {}

impl Client {
    /// Connects.
    pub fn connect(_address: &str, _authkey: Option<&[u8]>) -> Result<Connection> {
        Err(Error::InvalidArgument("not yet".into()))
    }
}
