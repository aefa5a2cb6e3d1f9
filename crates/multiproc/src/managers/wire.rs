//! The manager protocol's frames as the server writes them: the error a reply carries
//! ([`WireError`], which the client turns back into an [`Error`]), and the helpers that
//! encode replies and decode arguments.
//!
//! Every request is one frame: the postcard encoding of `(object id: u64, method: &str)`
//! followed by the method's arguments (a postcard-encoded tuple). Every reply is one frame:
//! the postcard encoding of `Result<Vec<u8>, WireError>`, where the bytes are the encoded
//! return value. Object `0` is the server itself (`create`, `named`, `ping`, `names`).

use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::codec::{varint, Codec};
use crate::error::Error;

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

/// A reply: the encoded return value, or the error.
pub(super) type Reply = std::result::Result<Vec<u8>, WireError>;

/// An error reply with message `m`.
pub(super) fn msg(m: impl Into<String>) -> WireError {
    WireError::Message(m.into())
}

/// Encodes a return value for a reply.
pub(super) fn enc<T: Serialize + ?Sized>(value: &T) -> Reply {
    let mut out = Vec::new();
    Codec::Postcard.encode_into(value, &mut out).map_err(|e| msg(e.to_string()))?;
    Ok(out)
}

/// Decodes `method`'s arguments.
pub(super) fn dec<T: DeserializeOwned>(
    bytes: &[u8],
    method: &str,
) -> std::result::Result<T, WireError> {
    Codec::Postcard
        .decode(bytes)
        .map_err(|e| msg(format!("malformed arguments for '{method}': {e}")))
}

/// A timeout as the client sent it (milliseconds).
pub(super) fn millis(timeout: Option<u64>) -> Option<Duration> {
    timeout.map(Duration::from_millis)
}

/// The error for a method an object does not have.
pub(super) fn no_method(kind: &str, method: &str) -> WireError {
    msg(format!("AttributeError: '{kind}' object has no method '{method}'"))
}

/// Appends the reply frame `Ok(value)` where `write` appends the `len` bytes of the
/// encoded value: the same bytes as encoding a `Reply`, without an intermediate vector.
pub(super) fn ok_reply(out: &mut Vec<u8>, write: impl FnOnce(&mut Vec<u8>), len: usize) {
    out.reserve(1 + varint::len(len) + len);
    out.push(0); // Result::Ok
    varint::push(out, len);
    let start = out.len();
    write(out);
    debug_assert_eq!(out.len() - start, len);
}

/// Appends the reply frame `Ok(encoding of value)` for an `Option<&[u8]>` value.
pub(super) fn ok_option_bytes(out: &mut Vec<u8>, value: Option<&[u8]>) {
    match value {
        None => ok_reply(out, |out| out.push(0), 1),
        Some(v) => ok_reply(
            out,
            |out| {
                out.push(1);
                varint::push(out, v.len());
                out.extend_from_slice(v);
            },
            1 + varint::len(v.len()) + v.len(),
        ),
    }
}

/// Decodes borrowed arguments, which must be exactly one value.
pub(super) fn dec_borrowed<'a, T: Deserialize<'a>>(
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
