//! How [`Connection::send`](crate::Connection::send) and
//! [`recv`](crate::Connection::recv) turn values into bytes.
//!
//! Two codecs, both driven by serde:
//! - [`Codec::Postcard`], the default, for Rust peers: compact and fast.
//! - [`Codec::Pickle`], for CPython peers: what `multiprocessing.connection.Connection.send`
//!   and `recv` speak, for `None`, `bool`, `int`, `float`, `str`, `bytes`, `list`, `tuple`
//!   and `dict`. Decoding never executes code: pickles that name classes or functions are
//!   rejected.
//!
//! Decoding untrusted bytes can fail but never panics, and never allocates more than a
//! small multiple of the input's length.

use std::any::{Any, TypeId};

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::error::{Error, Result};

pub(crate) mod pickle;
pub(crate) mod varint;

thread_local! {
    /// The message of the last custom decoding error on this thread. Some formats
    /// (postcard) replace custom messages with a generic one; `decode` restores it.
    static DECODE_ERROR: std::cell::RefCell<Option<String>> = const { std::cell::RefCell::new(None) };
}

/// Appends to a borrowed vector, so that a failed encoding can be cut off it.
struct Appender<'a>(&'a mut Vec<u8>);

impl Extend<u8> for Appender<'_> {
    fn extend<I: IntoIterator<Item = u8>>(&mut self, bytes: I) {
        self.0.extend(bytes);
    }
}

/// The message of a value's own serialization error, which postcard replaces with a
/// generic one: the value is serialized once more, into nothing, by a serializer that
/// keeps it (pickle's).
fn custom_message<T: Serialize + ?Sized>(value: &T, e: &postcard::Error) -> Option<String> {
    if !matches!(e, postcard::Error::SerdeSerCustom) {
        return None;
    }
    match serde_pickle::to_writer(&mut std::io::sink(), &value, serde_pickle::SerOptions::new()) {
        Err(serde_pickle::Error::Syntax(serde_pickle::ErrorCode::Structure(m))) => Some(m),
        _ => None,
    }
}

/// A custom deserialization error whose message survives any format: use it in
/// `Deserialize` impls instead of `E::custom`.
pub(crate) fn de_error<E: serde::de::Error>(message: impl std::fmt::Display) -> E {
    let message = message.to_string();
    DECODE_ERROR.with(|e| *e.borrow_mut() = Some(message.clone()));
    E::custom(message)
}

/// The encoding used by [`Connection::send`](crate::Connection::send) and
/// [`Connection::recv`](crate::Connection::recv).
///
/// ```
/// use multiproc::{pipe, Codec};
///
/// let (a, b) = pipe(true)?;
/// let (a, b) = (a.with_codec(Codec::Pickle), b.with_codec(Codec::Pickle));
/// a.send(&(1, "two".to_string(), vec![3.0]))?;
/// let got: (i64, String, Vec<f64>) = b.recv()?;
/// assert_eq!(got, (1, "two".to_string(), vec![3.0]));
/// # Ok::<(), multiproc::Error>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[non_exhaustive]
pub enum Codec {
    /// [postcard](https://docs.rs/postcard): the default, for Rust peers.
    #[default]
    Postcard,
    /// Python's pickle, for CPython peers.
    Pickle,
}

impl Codec {
    /// Appends the encoding of `value` to `out`.
    ///
    /// ```
    /// use multiproc::Codec;
    /// let mut out = Vec::new();
    /// Codec::Pickle.encode_into(&vec![1u8, 2], &mut out)?;
    /// assert_eq!(out[0], 0x80); // the pickle PROTO opcode
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn encode_into<T: Serialize + ?Sized>(self, value: &T, out: &mut Vec<u8>) -> Result<()> {
        // Sockets shared while encoding a value that then fails to encode are taken back:
        // nobody will ever ask for them.
        let mark = crate::reduction::share_mark();
        let result = match self {
            Codec::Postcard => {
                let start = out.len();
                let _ = crate::reduction::take_export_error();
                match postcard::to_extend(value, Appender(out)) {
                    Ok(_) => Ok(()),
                    Err(e) => {
                        let message = crate::reduction::take_export_error()
                            .or_else(|| custom_message(value, &e))
                            .unwrap_or_else(|| e.to_string());
                        out.truncate(start);
                        Err(Error::Codec(message))
                    }
                }
            }
            Codec::Pickle => pickle::encode_into(value, out),
        };
        crate::reduction::share_settle(mark, result.is_ok());
        result
    }

    /// Decodes one value from `bytes`, which must hold exactly one encoded value.
    ///
    /// ```
    /// use multiproc::Codec;
    /// let mut out = Vec::new();
    /// Codec::Postcard.encode_into(&("x", 7u32), &mut out)?;
    /// let v: (String, u32) = Codec::Postcard.decode(&out)?;
    /// assert_eq!(v, ("x".to_string(), 7));
    /// assert!(Codec::Postcard.decode::<(String, u32)>(&out[..1]).is_err());
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn decode<T: DeserializeOwned>(self, bytes: &[u8]) -> Result<T> {
        match self {
            Codec::Postcard => {
                DECODE_ERROR.with(|e| e.borrow_mut().take());
                let (value, rest) = postcard::take_from_bytes(bytes).map_err(|e| {
                    Error::Codec(
                        DECODE_ERROR
                            .with(|m| m.borrow_mut().take())
                            .unwrap_or_else(|| e.to_string()),
                    )
                })?;
                if !rest.is_empty() {
                    return Err(Error::Codec(format!(
                        "{} trailing bytes after the value",
                        rest.len()
                    )));
                }
                Ok(value)
            }
            Codec::Pickle => pickle::decode(bytes),
        }
    }
}

// --------------------------------------------------------------------------------------
// Items: the hot paths of queue records and pool messages

/// Decodes one item that fills `bytes` (a queue record's payload, a pool task's result),
/// as `Codec::Postcard.decode` would: a byte vector is copied out in one piece (serde
/// would push it byte by byte), any other value goes through [`decode_in_place`].
#[inline]
pub(crate) fn decode_item<T: DeserializeOwned + 'static>(bytes: &[u8]) -> Result<T> {
    if TypeId::of::<T>() == TypeId::of::<Vec<u8>>() {
        let (len, rest) = varint::read(bytes)?;
        check_byte_vector(len, rest.len())?;
        let mut vec = byte_vector(len);
        vec.extend_from_slice(rest);
        return as_item(vec);
    }
    decode_in_place(bytes)
}

/// Decodes one postcard value that fills `bytes`, as `Codec::Postcard.decode` does, in
/// one pass and without touching the thread's error slot on success (the pool's hot path):
/// a failure is reported from that pass, never by decoding again (a value that carries a
/// shared descriptor can be received only once).
#[inline]
pub(crate) fn decode_in_place<T: DeserializeOwned>(bytes: &[u8]) -> Result<T> {
    let mut de = postcard::Deserializer::from_bytes(bytes);
    let value = T::deserialize(&mut de).map_err(decode_failed)?;
    match de.finalize() {
        Ok([]) => Ok(value),
        Ok(rest) => Err(Error::Codec(format!("{} trailing bytes after the value", rest.len()))),
        Err(e) => Err(decode_failed(e)),
    }
}

/// The error of a failed [`decode_in_place`]: the value's own message, if it left one.
#[cold]
fn decode_failed(e: postcard::Error) -> Error {
    Error::Codec(DECODE_ERROR.with(|m| m.borrow_mut().take()).unwrap_or_else(|| e.to_string()))
}

/// An error unless a byte vector's length prefix (`len`) matches the bytes after it.
pub(crate) fn check_byte_vector(len: usize, after: usize) -> Result<()> {
    if len == after {
        return Ok(());
    }
    Err(Error::Codec(format!("a byte vector of {len} bytes in a record of {after} bytes")))
}

/// An empty byte vector with room for `len` bytes (huge pages for large ones).
pub(crate) fn byte_vector(len: usize) -> Vec<u8> {
    let mut vec = Vec::with_capacity(len);
    if len >= 4 << 20 {
        crate::sys::mem::advise_huge_pages(&mut vec);
    }
    vec
}

/// `value` as the item type `T`, which is `U` (a byte vector, or a pickle as it is).
pub(crate) fn as_item<T: 'static, U: 'static>(value: U) -> Result<T> {
    let mut slot = Some(value);
    (&mut slot as &mut dyn Any)
        .downcast_mut::<Option<T>>()
        .and_then(Option::take)
        .ok_or_else(|| Error::Codec("byte vector type mismatch".into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn postcard<T: Serialize>(value: &T) -> Vec<u8> {
        let mut out = Vec::new();
        Codec::Postcard.encode_into(value, &mut out).unwrap();
        out
    }

    #[test]
    fn items_decode_as_postcard_decodes_them() {
        for len in [0usize, 1, 127, 128, 70_000] {
            let bytes: Vec<u8> = (0..len).map(|i| i as u8).collect();
            assert_eq!(decode_item::<Vec<u8>>(&postcard(&bytes)).unwrap(), bytes, "{len}");
        }
        let value = (7u32, "seven".to_string(), vec![7u16; 3]);
        assert_eq!(decode_item::<(u32, String, Vec<u16>)>(&postcard(&value)).unwrap(), value);
        assert_eq!(decode_in_place::<(u32, String, Vec<u16>)>(&postcard(&value)).unwrap(), value);
    }

    #[test]
    fn a_malformed_item_is_an_error_that_says_why() {
        let mut long = postcard(&vec![1u8, 2, 3]);
        long.push(4);
        let e = decode_item::<Vec<u8>>(&long).unwrap_err();
        assert!(e.to_string().contains("a byte vector of 3 bytes in a record of 4 bytes"), "{e}");
        assert!(decode_item::<Vec<u8>>(&long[..2]).is_err(), "cut short");
        assert!(decode_item::<Vec<u8>>(&[0x80]).is_err(), "a length prefix cut short");
        let mut trailing = postcard(&5u32);
        trailing.push(0);
        let e = decode_in_place::<u32>(&trailing).unwrap_err();
        assert!(e.to_string().contains("1 trailing bytes"), "{e}");
        assert!(decode_item::<String>(&[5, b'a']).is_err(), "a string cut short");
    }
}
