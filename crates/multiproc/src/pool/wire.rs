//! The bytes between the dispatcher and a worker: frames, records and items, how they are
//! encoded and how they are read.
//!
//! Frames use CPython's framing (what `Connection` reads): a 4-byte big-endian length, or
//! -1 and an 8-byte length. A frame holds records:
//!
//! ```text
//! parent → worker: TASK [seq u32][layout i64][trampoline i64][target i64][count u32]
//!                       count × item (the arguments)
//!                  EXIT
//! worker → parent: READY
//!                  INIT_FAILED [len u32][message]
//!                  RESULT [seq u32][elapsed ns u64][count u32][items' bytes u64]
//!                         count × item (the outcomes)
//! ```
//!
//! An item is a header and bytes. A header byte below `ITEM_LONG` is the length of a value
//! (most values are short: one byte of overhead per item); `ITEM_LONG | status` is
//! followed by `[len u32]` and the bytes: a value (`ST_OK`) or a message.
//!
//! Integers in records are little-endian.

use std::sync::atomic::{AtomicBool, AtomicU64};

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::codec::decode_item;
use crate::error::{Error, Result};
use crate::reduction;

// --------------------------------------------------------------------------------------
// Records and frames

/// Parent → worker: run a chunk.
pub(super) const TAG_TASK: u8 = 1;
/// Parent → worker: exit once the chunks before this are done.
pub(super) const TAG_EXIT: u8 = 2;
/// Worker → parent: started (the initializer, if any, has run).
pub(super) const TAG_READY: u8 = 1;
/// Worker → parent: the initializer failed; the worker exits.
pub(super) const TAG_INIT_FAILED: u8 = 2;
/// Worker → parent: the outcomes of a chunk.
pub(super) const TAG_RESULT: u8 = 3;
/// Item status: a value.
pub(super) const ST_OK: u8 = 0;
/// Item status: the task panicked; the bytes are the panic message.
pub(super) const ST_PANICKED: u8 = 1;
/// Item status: the arguments or the value could not be decoded or encoded; the bytes
/// say why.
pub(super) const ST_FAILED: u8 = 2;
/// An item header at or above this is `ITEM_LONG | status` and a 4-byte length.
pub(super) const ITEM_LONG: u8 = 0x80;

/// What starts a buffer of received bytes.
pub(super) enum Frame {
    /// A whole frame: (header size, payload length).
    Complete(usize, usize),
    /// Not all of it yet.
    Partial,
    /// A header that no frame has.
    Bad,
}

/// What the bytes at the start of `buf` are: a whole frame, part of one, or no frame.
pub(super) fn frame_at(buf: &[u8]) -> Frame {
    let Some(short) = buf.get(..4).and_then(|b| b.try_into().ok()).map(i32::from_be_bytes) else {
        return Frame::Partial;
    };
    let (header, len) = match short {
        n if n >= 0 => (4, n as u64),
        -1 => match buf.get(4..12).and_then(|b| b.try_into().ok()) {
            Some(b) => (12, u64::from_be_bytes(b)),
            None => return Frame::Partial,
        },
        _ => return Frame::Bad,
    };
    match usize::try_from(len) {
        Ok(len) if buf.len() - header >= len => Frame::Complete(header, len),
        Ok(_) => Frame::Partial,
        Err(_) => Frame::Bad,
    }
}

/// The items of one chunk, as a worker runs them (see `sys::spawn::batch_trampoline`; the worker
/// module implements `RunBatch` for it).
pub(super) struct Batch<'a, 'b> {
    /// Positioned at the first item.
    pub(super) rd: &'a mut Rd<'b>,
    pub(super) count: u32,
    /// The chunk's sequence number, shifted: `tag | i` says "running item i".
    pub(super) tag: u64,
    pub(super) progress: &'a AtomicU64,
    /// Where each item's `[status][len][bytes]` goes.
    pub(super) out: &'a mut Vec<u8>,
    pub(super) malformed: bool,
}

/// Reads little-endian integers and length-prefixed blobs; `None` past the end.
pub(super) struct Rd<'a> {
    buf: &'a [u8],
    pub(super) pos: usize,
}

impl<'a> Rd<'a> {
    pub(super) fn new(buf: &'a [u8]) -> Rd<'a> {
        Rd { buf, pos: 0 }
    }

    #[inline]
    pub(super) fn done(&self) -> bool {
        self.pos >= self.buf.len()
    }

    #[inline]
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let end = self.pos.checked_add(n)?;
        let bytes = self.buf.get(self.pos..end)?;
        self.pos = end;
        Some(bytes)
    }

    #[inline]
    pub(super) fn u8(&mut self) -> Option<u8> {
        self.take(1).map(|b| b[0])
    }

    #[inline]
    pub(super) fn u32(&mut self) -> Option<u32> {
        Some(u32::from_le_bytes(self.take(4)?.try_into().ok()?))
    }

    pub(super) fn u64(&mut self) -> Option<u64> {
        Some(u64::from_le_bytes(self.take(8)?.try_into().ok()?))
    }

    pub(super) fn i64(&mut self) -> Option<i64> {
        Some(i64::from_le_bytes(self.take(8)?.try_into().ok()?))
    }

    #[inline]
    pub(super) fn blob(&mut self) -> Option<&'a [u8]> {
        let len = self.u32()? as usize;
        self.take(len)
    }

    /// One item (see the message formats): its status and bytes.
    #[inline]
    pub(super) fn item(&mut self) -> Option<(u8, &'a [u8])> {
        let header = self.u8()?;
        if header < ITEM_LONG {
            return Some((ST_OK, self.take(usize::from(header))?));
        }
        Some((header & !ITEM_LONG, self.blob()?))
    }
}

// --------------------------------------------------------------------------------------
// Outcomes as they arrive from a worker

/// One item's outcome as it arrives from a worker.
pub(super) enum Outcome<'a> {
    /// The encoded value.
    Value(&'a [u8]),
    /// The task's error.
    Error(Error),
}

impl Outcome<'_> {
    pub(super) fn decode<R: DeserializeOwned + 'static>(self) -> Result<R> {
        match self {
            Outcome::Value(bytes) => decode_item(bytes),
            Outcome::Error(e) => Err(e),
        }
    }
}

/// The outcomes of consecutive items, decoded lazily from a RESULT record, or one error.
pub(super) enum Outcomes<'a> {
    Encoded { rd: Rd<'a>, left: u32, pid: i32 },
    One(Option<Error>),
}

impl<'a> Outcomes<'a> {
    /// The `count` items in the `bytes` that follow at `rd`; moves past them.
    pub(super) fn take(rd: &mut Rd<'a>, count: u32, pid: i32) -> Option<Outcomes<'a>> {
        let bytes = rd.u64().and_then(|n| usize::try_from(n).ok())?;
        let items = Rd::new(rd.take(bytes)?);
        Some(Outcomes::Encoded { rd: items, left: count, pid })
    }

    pub(super) fn len(&self) -> usize {
        match self {
            Outcomes::Encoded { left, .. } => *left as usize,
            Outcomes::One(e) => usize::from(e.is_some()),
        }
    }
}

impl<'a> Iterator for Outcomes<'a> {
    type Item = Outcome<'a>;

    fn next(&mut self) -> Option<Outcome<'a>> {
        match self {
            Outcomes::One(e) => e.take().map(Outcome::Error),
            Outcomes::Encoded { rd, left, pid } => {
                if *left == 0 {
                    return None;
                }
                *left -= 1;
                let Some((status, bytes)) = rd.item() else {
                    // Cannot happen with our own worker; never a panic or a short count.
                    return Some(Outcome::Error(Error::Protocol(
                        "a pool worker sent a malformed result".into(),
                    )));
                };
                Some(match status {
                    ST_OK => Outcome::Value(bytes),
                    ST_PANICKED => Outcome::Error(Error::ProcessFailed {
                        pid: *pid,
                        exitcode: 1,
                        message: format!("panicked: {}", String::from_utf8_lossy(bytes)),
                    }),
                    _ => Outcome::Error(Error::Codec(String::from_utf8_lossy(bytes).into())),
                })
            }
        }
    }
}

// --------------------------------------------------------------------------------------
// Items

/// Whether the last item this process encoded (of a task, or a result) needed the long
/// header: the guess for the first item of the next chunk, so that a program whose items
/// are all large never moves them to make room for their headers.
pub(super) static WIDE: AtomicBool = AtomicBool::new(false);

/// Appends one item, `[header][postcard encoding of value]` (see [`ITEM_LONG`]), to `out`,
/// encoding in place. `wide` says whether the previous item needed the long header; it
/// is updated for the next one, so that a run of large items is never moved to make room
/// for its header. On error `out` is left as it was.
#[inline(always)]
pub(super) fn encode_item<T: Serialize + ?Sized>(
    value: &T,
    out: &mut Vec<u8>,
    wide: &mut bool,
) -> Result<()> {
    /// A postcard output that appends to a borrowed vector.
    struct Append<'a>(&'a mut Vec<u8>);
    impl postcard::ser_flavors::Flavor for Append<'_> {
        type Output = ();
        #[inline(always)]
        fn try_push(&mut self, byte: u8) -> postcard::Result<()> {
            self.0.push(byte);
            Ok(())
        }
        #[inline(always)]
        fn try_extend(&mut self, bytes: &[u8]) -> postcard::Result<()> {
            // Varints and small fields: copies of a length known at compile time are a
            // few stores, where a copy of any length is a call to memcpy.
            match *bytes {
                [a] => self.0.push(a),
                [a, b] => self.0.extend_from_slice(&[a, b]),
                [a, b, c] => self.0.extend_from_slice(&[a, b, c]),
                [a, b, c, d] => self.0.extend_from_slice(&[a, b, c, d]),
                _ => self.0.extend_from_slice(bytes),
            }
            Ok(())
        }
        #[inline]
        fn finalize(self) -> postcard::Result<()> {
            Ok(())
        }
    }
    let at = out.len();
    let header = if *wide {
        out.extend_from_slice(&[0; 5]);
        5
    } else {
        out.push(0);
        1
    };
    if let Err(e) = value.serialize(&mut postcard::Serializer { output: Append(out) }) {
        out.truncate(at);
        return Err(encode_error(e));
    }
    let len = out.len() - at - header;
    let Ok(len32) = u32::try_from(len) else {
        out.truncate(at);
        return Err(too_long(len));
    };
    *wide = len >= usize::from(ITEM_LONG);
    if header == 1 && len < usize::from(ITEM_LONG) {
        out[at] = len as u8;
        return Ok(());
    }
    let mut long = [0u8; 5];
    long[0] = ITEM_LONG | ST_OK;
    long[1..].copy_from_slice(&len32.to_le_bytes());
    if header == 1 {
        // A large item after small ones: make room for the long header.
        out.splice(at..at + 1, long);
    } else {
        out[at..at + 5].copy_from_slice(&long);
    }
    Ok(())
}

#[cold]
fn encode_error(e: postcard::Error) -> Error {
    Error::Codec(reduction::take_export_error().unwrap_or_else(|| e.to_string()))
}

#[cold]
fn too_long(len: usize) -> Error {
    Error::MessageTooLong { len: len as u64, limit: u32::MAX.into() }
}

/// Appends one item's outcome other than a value, `[ITEM_LONG | status][len u32][bytes]`
/// (a message, cut at 4 GiB).
pub(super) fn push_status(out: &mut Vec<u8>, status: u8, bytes: &[u8]) {
    out.push(ITEM_LONG | status);
    push_blob(out, bytes);
}

/// Appends `[len u32][bytes]` (cut at 4 GiB).
pub(super) fn push_blob(out: &mut Vec<u8>, bytes: &[u8]) {
    let bytes = &bytes[..bytes.len().min(u32::MAX as usize)];
    out.extend_from_slice(&(bytes.len() as u32).to_le_bytes());
    out.extend_from_slice(bytes);
}
