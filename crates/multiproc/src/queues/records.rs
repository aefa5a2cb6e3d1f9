//! Items as ring records: how a queue's encoding ([`Codec`], fixed when the queue is made
//! and kept in its header) turns an item into a record's payload and back, and how an
//! item too large for the ring goes into a block of its own.
//!
//! With [`Codec::Postcard`] a payload is the postcard encoding of the item; with
//! [`Codec::Pickle`] it is a pickle, which CPython loads with `pickle.loads`, so a Python
//! process can read the queue (and write it: its pickles decode into Rust values of the
//! nine kinds the pickle codec knows). A [`Pickled`] item is a pickle already made, carried
//! as it is.

use std::any::{Any, TypeId};
use std::time::Instant;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use super::blocks::{self, Outgoing};
use super::{Ring, KIND_INDIRECT, KIND_INLINE};
use crate::codec::{
    as_item, byte_vector, check_byte_vector, decode_in_place, decode_item, varint, Codec,
};
use crate::error::{Error, Result};

/// A pickle already made: on a queue with [`Codec::Pickle`] its bytes are the record's
/// payload as they are, and what a get returns is the record's payload, unparsed (the
/// Python package puts and gets its items this way, pickling and unpickling them in
/// Python). On a queue with [`Codec::Postcard`] it is an ordinary byte string.
///
/// ```
/// use multiproc::{queues::{Pickled, Queue}, Codec};
///
/// let q = Queue::<Pickled>::with_codec(0, Codec::Pickle)?;
/// // pickle.dumps(7, protocol=2): PROTO 2, BININT1 7, STOP
/// q.put(Pickled(vec![0x80, 2, b'K', 7, b'.']))?;
/// let as_int = Queue::<i64>::from_fd(q.export_fd().try_clone_to_owned()?)?;
/// assert_eq!(as_int.get()?, 7);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pickled(#[serde(with = "serde_bytes")] pub Vec<u8>);

/// An encoded item on its way into the ring.
pub(super) struct Record {
    pub(super) kind: u32,
    pub(super) payload: Vec<u8>,
    /// A large item's block, held by the producer until the record is published.
    pub(super) block: Option<Outgoing>,
}

impl crate::raw::ring::Outbound for Record {
    #[inline]
    fn kind(&self) -> u32 {
        self.kind
    }

    #[inline]
    fn payload(&self) -> &[u8] {
        &self.payload
    }
}

/// After a put: the blocks of the first `published` records are handed to their
/// consumers, those of the rest held nothing after all.
pub(super) fn settle_blocks(ring: &Ring, records: &mut [Record], published: usize) {
    for (i, record) in records.iter_mut().enumerate() {
        if let Some(block) = record.block.take() {
            if i < published {
                ring.blocks.sent(block);
            } else {
                ring.blocks.unsent(block);
            }
        }
    }
}

/// Encodes `item`; an item too large for the ring goes into a block of its own.
pub(super) fn encode_record<T: Serialize + 'static>(
    ring: &Ring,
    item: &T,
    deadline: Option<Instant>,
) -> Result<Record> {
    encode_record_into(ring, item, Vec::new(), deadline)
}

/// Encodes `item` into `payload` (cleared first; its allocation is reused).
pub(super) fn encode_record_into<T: Serialize + 'static>(
    ring: &Ring,
    item: &T,
    mut payload: Vec<u8>,
    deadline: Option<Instant>,
) -> Result<Record> {
    payload.clear();
    // Bytes that go into the payload as they are: a pickle on a pickle queue; a byte
    // vector on a postcard queue, after postcard's own prefix (its length as a varint),
    // written with one copy instead of one serializer call per byte.
    let mut prefix = [0u8; varint::MAX_LEN];
    let raw = match ring.codec {
        Codec::Pickle => (item as &dyn Any).downcast_ref::<Pickled>().map(|p| (&[][..], &p.0[..])),
        _ => (item as &dyn Any)
            .downcast_ref::<Vec<u8>>()
            .map(|bytes| (varint::encode(bytes.len(), &mut prefix), &bytes[..])),
    };
    if let Some((prefix, bytes)) = raw {
        let total = prefix.len() + bytes.len();
        if total <= ring.inline_limit() {
            payload.extend_from_slice(prefix);
            payload.extend_from_slice(bytes);
            return Ok(Record { kind: KIND_INLINE, payload, block: None });
        }
        // Large: straight into a block, without an intermediate copy.
        let block = ring.blocks.take(total, deadline)?;
        block.write(0, prefix)?;
        block.write(prefix.len(), bytes)?;
        return indirect_record(block, total, payload);
    }
    ring.codec.encode_into(item, &mut payload)?;
    if payload.len() <= ring.inline_limit() {
        return Ok(Record { kind: KIND_INLINE, payload, block: None });
    }
    let total = payload.len();
    let block = ring.blocks.take(total, deadline)?;
    block.write(0, &payload)?;
    indirect_record(block, total, Vec::new())
}

/// The ring record of an item in `block`: the block's name and the item's length.
fn indirect_record(block: Outgoing, len: usize, mut payload: Vec<u8>) -> Result<Record> {
    payload.clear();
    Codec::Postcard.encode_into(&(block.name(), len as u64), &mut payload)?;
    Ok(Record { kind: KIND_INDIRECT, payload, block: Some(block) })
}

/// Decodes one item held in a large-item block, copying it out once: byte vectors and
/// pickles straight into the vector returned, other items into a buffer they are decoded
/// from.
fn decode_block_item<T: DeserializeOwned + 'static>(
    codec: Codec,
    item: blocks::ItemBytes<'_>,
) -> Result<T> {
    if codec == Codec::Pickle && TypeId::of::<T>() == TypeId::of::<Pickled>() {
        let mut vec = byte_vector(item.len());
        item.extend_vec(0, &mut vec)?;
        return as_item(Pickled(vec));
    }
    if codec == Codec::Postcard && TypeId::of::<T>() == TypeId::of::<Vec<u8>>() {
        let mut head = [0u8; 10];
        let head = &mut head[..item.len().min(10)];
        item.read_at(0, head)?;
        let (len, rest) = varint::read(head)?;
        let prefix = head.len() - rest.len();
        check_byte_vector(len, item.len() - prefix)?;
        let mut vec = byte_vector(len);
        item.extend_vec(prefix, &mut vec)?;
        return as_item(vec);
    }
    let mut bytes = Vec::with_capacity(item.len());
    item.extend_vec(0, &mut bytes)?;
    decode_payload(codec, &bytes)
}

/// Decodes a payload held in full: postcard through the shared item decoder, pickles
/// through the pickle codec (a [`Pickled`] is the payload itself).
fn decode_payload<T: DeserializeOwned + 'static>(codec: Codec, payload: &[u8]) -> Result<T> {
    match codec {
        Codec::Pickle if TypeId::of::<T>() == TypeId::of::<Pickled>() => {
            as_item(Pickled(payload.to_vec()))
        }
        Codec::Pickle => Codec::Pickle.decode(payload),
        _ => decode_in_place(payload),
    }
}

/// Decodes the record of `kind` whose payload is `payload`.
pub(super) fn decode_record<T: DeserializeOwned + 'static>(
    ring: &Ring,
    kind: u32,
    payload: &[u8],
) -> Result<T> {
    match kind {
        KIND_INLINE if ring.codec == Codec::Postcard => decode_item(payload),
        KIND_INLINE => decode_payload(ring.codec, payload),
        _ => {
            let (name, len): (String, u64) = Codec::Postcard.decode(payload)?;
            let len = usize::try_from(len).unwrap_or(usize::MAX);
            let codec = ring.codec;
            ring.blocks.read(&name, len, |item| decode_block_item(codec, item))?
        }
    }
}

/// The header word that records a queue's codec.
pub(super) fn codec_word(codec: Codec) -> u32 {
    match codec {
        Codec::Pickle => 1,
        _ => 0,
    }
}

/// The codec a header word records; an unknown word is a corrupt header.
pub(super) fn codec_of_word(word: u32) -> Result<Codec> {
    match word {
        0 => Ok(Codec::Postcard),
        1 => Ok(Codec::Pickle),
        other => Err(Error::Codec(format!("queue: unknown item encoding {other} in the header"))),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::Ordering::SeqCst;

    use super::super::{Queue, H_CODEC};
    use super::*;

    #[test]
    fn an_unknown_codec_in_the_header_is_refused_when_the_queue_is_opened() {
        let q = Queue::<u8>::new(0).unwrap();
        q.ring.segment.word(H_CODEC).store(7, SeqCst); // what a hostile peer could write
        let fd = q.export_fd().try_clone_to_owned().unwrap();
        match Queue::<u8>::from_fd(fd) {
            Err(Error::Codec(m)) => assert!(m.contains("unknown item encoding 7"), "{m}"),
            other => panic!("expected a codec error, got {other:?}"),
        }
        // The handle that read the header when it was made keeps its codec.
        q.put(3).unwrap();
        assert_eq!(q.get().unwrap(), 3);
    }
}
