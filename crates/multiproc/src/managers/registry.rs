//! User types in a manager's server: the [`SharedObject`] trait a type implements, the
//! [`Registry`] of types a server can create (filled by a [`Register`] impl or
//! [`Server::register`](super::Server::register)), and [`encode`]/[`decode`] for the bytes
//! that travel between a proxy and the object.

use std::collections::HashMap;

use serde::de::DeserializeOwned;
use serde::Serialize;

use super::wire::{enc, WireError};
use crate::codec::Codec;

/// A type of your own whose objects live in a manager's server: the server calls
/// [`call`](Self::call) with the method name and the postcard-encoded arguments a proxy
/// sent ([`ObjectProxy::call`](super::ObjectProxy::call)), one call at a time per object.
/// Register it with [`Manager::start_with`](super::Manager::start_with) (a [`Register`]
/// impl) or [`Server::register`](super::Server::register); the initial object is sent by the client, so the type is
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
    /// error message for the caller ([`Error::Remote`](crate::Error::Remote) on its side).
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
/// let a = manager.create_named("Counter", "hits", &Counter(1))?;
/// let b = manager.create_named("Counter", "hits", &Counter(99))?; // the same object
/// assert_eq!(a.id(), b.id());
/// assert_eq!(b.call::<_, i64>("get", &())?, 1);
/// assert!(manager.create("Nope", &()).is_err()); // not registered
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
    pub(super) types: HashMap<String, Constructor>,
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
