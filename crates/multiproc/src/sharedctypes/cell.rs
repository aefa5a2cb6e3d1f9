//! The shared cell under every [`Value`](super::Value), [`Array`](super::Array),
//! [`RawValue`](super::RawValue) and [`RawArray`](super::RawArray): a segment holding a
//! header (kind tag, type code, element count), then the elements, each naturally aligned,
//! so that every read and write of one element is one atomic operation (elements narrower
//! than 4 bytes go through the 4-byte word around them). Count and type are checked once,
//! when a segment is created or imported from another process.

use std::marker::PhantomData;
use std::ops::RangeBounds;
use std::sync::atomic::Ordering::{self, Acquire, Relaxed, Release, SeqCst};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::{CInt, CType};
use crate::error::{Error, Result};
use crate::synchronize::Segment;

/// Kind tag of a `Value` segment ("MPVA").
pub(super) const VALUE_KIND: u32 = 0x4d50_5641;
/// Kind tag of an `Array` segment ("MPAR").
pub(super) const ARRAY_KIND: u32 = 0x4d50_4152;
/// Offset of the element type code (a `u32` holding the code's `char`).
const TYPECODE: usize = 4;
/// Offset of the element count (a `u64`).
const LEN: usize = 8;
/// Offset of element 0: 16-aligned, so every element (at most 8 bytes) is naturally
/// aligned and can be accessed atomically.
const DATA: usize = 16;

/// The elements of one segment, with the count and type checked once, at creation or
/// import, so that no later access can fall outside the mapping.
pub(super) struct Shared<T> {
    segment: Arc<Segment>,
    pub(super) len: usize,
    _type: PhantomData<fn() -> T>,
}

impl<T> Clone for Shared<T> {
    fn clone(&self) -> Self {
        Shared { segment: self.segment.clone(), len: self.len, _type: PhantomData }
    }
}

/// The segment size for `len` elements of `size` bytes: a whole number of 8-byte words,
/// so that the 4-byte word around a 1- or 2-byte element is always inside it.
fn segment_len(len: usize, size: usize) -> Option<usize> {
    let bytes = len.checked_mul(size)?.checked_add(DATA)?.checked_next_multiple_of(8)?;
    (bytes <= isize::MAX as usize).then_some(bytes)
}

#[derive(Serialize, Deserialize)]
struct SentSegment {
    handle: crate::reduction::Handle,
}

impl<T: CType> Shared<T> {
    pub(super) fn create(kind: u32, what: &str, len: usize) -> Result<Shared<T>> {
        let bytes = segment_len(len, size_of::<T>()).ok_or_else(|| {
            Error::InvalidArgument(format!("{what}: {len} {} elements are too many", T::CTYPE))
        })?;
        let segment = Segment::new(&what.to_lowercase(), kind, bytes)?;
        segment.word(TYPECODE).store(T::TYPECODE as u32, Release);
        segment.word64(LEN).store(len as u64, Release);
        // The memfd is zero-filled: every element starts as 0, 0.0 or false.
        Ok(Shared { segment, len, _type: PhantomData })
    }

    pub(super) fn from_iter(
        kind: u32,
        what: &str,
        values: impl IntoIterator<Item = T>,
    ) -> Result<Shared<T>> {
        let values: Vec<T> = values.into_iter().collect();
        let shared = Shared::create(kind, what, values.len())?;
        for (i, v) in values.into_iter().enumerate() {
            shared.store(i, v, Relaxed);
        }
        Ok(shared)
    }

    fn import(handle: crate::reduction::Handle, kind: u32, what: &str) -> Result<Shared<T>> {
        Shared::checked(Segment::import(handle, what, kind, DATA)?, what)
    }

    /// The elements of the segment whose descriptor is `fd` (see [`Shared::fd`]), with the
    /// same checks as a received handle: kind, seal, type code and size.
    pub(super) fn open_fd(fd: std::os::fd::OwnedFd, kind: u32, what: &str) -> Result<Shared<T>> {
        Shared::checked(Segment::open_fd(fd, what, kind, DATA)?, what)
    }

    /// The segment's descriptor, for a transport of descriptors the crate does not drive.
    pub(super) fn fd(&self) -> std::os::fd::BorrowedFd<'_> {
        self.segment.fd()
    }

    /// `segment` as elements of `T`, once its type code and size are checked.
    fn checked(segment: Arc<Segment>, what: &str) -> Result<Shared<T>> {
        let code = segment.word(TYPECODE).load(Acquire);
        if code != T::TYPECODE as u32 {
            let theirs =
                char::from_u32(code).map_or_else(|| format!("{code:#x}"), |c| format!("{c:?}"));
            return Err(Error::Codec(format!(
                "{what}: the handle holds type code {theirs}, expected {:?} ({})",
                T::TYPECODE,
                T::CTYPE
            )));
        }
        let len = usize::try_from(segment.word64(LEN).load(Acquire)).ok();
        let fits = len
            .and_then(|len| segment_len(len, size_of::<T>()))
            .is_some_and(|bytes| bytes <= segment.mapping().len());
        match len {
            Some(len) if fits => Ok(Shared { segment, len, _type: PhantomData }),
            _ => Err(Error::Codec(format!(
                "{what}: the shared segment is smaller than its elements"
            ))),
        }
    }

    pub(super) fn serialize<S: serde::Serializer>(
        &self,
        what: &str,
        s: S,
    ) -> std::result::Result<S::Ok, S::Error> {
        use serde::ser::Error as _;
        let handle = self.segment.export(what).map_err(S::Error::custom)?;
        SentSegment { handle }.serialize(s)
    }

    pub(super) fn deserialize<'de, D: serde::Deserializer<'de>>(
        d: D,
        kind: u32,
        what: &str,
    ) -> std::result::Result<Shared<T>, D::Error> {
        let sent = SentSegment::deserialize(d)?;
        Shared::import(sent.handle, kind, what).map_err(crate::codec::de_error)
    }

    pub(super) fn check(&self, i: usize) -> Result<usize> {
        if i < self.len {
            Ok(DATA + i * size_of::<T>())
        } else {
            Err(Error::InvalidArgument(format!(
                "index {i} is out of range for {} elements",
                self.len
            )))
        }
    }

    /// Reads element `i` (in range) atomically.
    pub(super) fn load(&self, i: usize, order: Ordering) -> T {
        let offset = DATA + i * size_of::<T>();
        let s = &self.segment;
        match size_of::<T>() {
            8 => T::from_ne(s.word64(offset).load(order).to_ne_bytes()),
            4 => T::from_ne(widen(s.word(offset).load(order).to_ne_bytes())),
            size => {
                // A 1- or 2-byte element: read the aligned 4-byte word that contains it.
                let lane = offset % 4;
                let word = s.word(offset - lane).load(order).to_ne_bytes();
                let mut bytes = [0u8; 8];
                bytes[..size].copy_from_slice(&word[lane..lane + size]);
                T::from_ne(bytes)
            }
        }
    }

    /// Writes element `i` (in range) atomically.
    pub(super) fn store(&self, i: usize, value: T, order: Ordering) {
        let offset = DATA + i * size_of::<T>();
        let s = &self.segment;
        match size_of::<T>() {
            8 => s.word64(offset).store(u64::from_ne_bytes(value.to_ne()), order),
            4 => s.word(offset).store(narrow(value.to_ne()), order),
            _ => {
                let _ = self.update(i, |_| Some(value));
            }
        }
    }

    /// Replaces element `i` (in range) by `f(old)` atomically, retrying if another writer
    /// got in between; returns the old value, or `Err(old)` when `f` declines. Elements
    /// narrower than 4 bytes are updated within their 4-byte word, so a neighbour's
    /// concurrent update is never lost.
    fn update(&self, i: usize, mut f: impl FnMut(T) -> Option<T>) -> std::result::Result<T, T> {
        let offset = DATA + i * size_of::<T>();
        let s = &self.segment;
        match size_of::<T>() {
            8 => s
                .word64(offset)
                .fetch_update(SeqCst, SeqCst, |w| {
                    f(T::from_ne(w.to_ne_bytes())).map(|n| u64::from_ne_bytes(n.to_ne()))
                })
                .map(|w| T::from_ne(w.to_ne_bytes()))
                .map_err(|w| T::from_ne(w.to_ne_bytes())),
            4 => s
                .word(offset)
                .fetch_update(SeqCst, SeqCst, |w| {
                    f(T::from_ne(widen(w.to_ne_bytes()))).map(|n| narrow(n.to_ne()))
                })
                .map(|w| T::from_ne(widen(w.to_ne_bytes())))
                .map_err(|w| T::from_ne(widen(w.to_ne_bytes()))),
            size => {
                let lane = offset % 4;
                let extract = |w: u32| {
                    let mut bytes = [0u8; 8];
                    bytes[..size].copy_from_slice(&w.to_ne_bytes()[lane..lane + size]);
                    T::from_ne(bytes)
                };
                s.word(offset - lane)
                    .fetch_update(SeqCst, SeqCst, |w| {
                        f(extract(w)).map(|n| {
                            let mut word = w.to_ne_bytes();
                            word[lane..lane + size].copy_from_slice(&n.to_ne()[..size]);
                            u32::from_ne_bytes(word)
                        })
                    })
                    .map(extract)
                    .map_err(extract)
            }
        }
    }

    pub(super) fn swap(&self, i: usize, value: T) -> T {
        let offset = DATA + i * size_of::<T>();
        let s = &self.segment;
        match size_of::<T>() {
            8 => T::from_ne(
                s.word64(offset).swap(u64::from_ne_bytes(value.to_ne()), SeqCst).to_ne_bytes(),
            ),
            4 => {
                T::from_ne(widen(s.word(offset).swap(narrow(value.to_ne()), SeqCst).to_ne_bytes()))
            }
            _ => self.update(i, |_| Some(value)).unwrap_or_else(|old| old),
        }
    }

    pub(super) fn compare_exchange(
        &self,
        i: usize,
        current: T,
        new: T,
    ) -> std::result::Result<T, T> {
        let offset = DATA + i * size_of::<T>();
        let s = &self.segment;
        match size_of::<T>() {
            8 => s
                .word64(offset)
                .compare_exchange(
                    u64::from_ne_bytes(current.to_ne()),
                    u64::from_ne_bytes(new.to_ne()),
                    SeqCst,
                    SeqCst,
                )
                .map(|w| T::from_ne(w.to_ne_bytes()))
                .map_err(|w| T::from_ne(w.to_ne_bytes())),
            4 => s
                .word(offset)
                .compare_exchange(narrow(current.to_ne()), narrow(new.to_ne()), SeqCst, SeqCst)
                .map(|w| T::from_ne(widen(w.to_ne_bytes())))
                .map_err(|w| T::from_ne(widen(w.to_ne_bytes()))),
            _ => self.update(i, |old| (old.to_ne() == current.to_ne()).then_some(new)),
        }
    }

    pub(super) fn to_vec(&self, start: usize, end: usize) -> Vec<T> {
        (start..end).map(|i| self.load(i, Acquire)).collect()
    }

    pub(super) fn range(&self, range: impl RangeBounds<usize>) -> Result<(usize, usize)> {
        crate::error::range_within(range, self.len)
    }

    pub(super) fn set_range(&self, start: usize, values: &[T]) -> Result<()> {
        match start.checked_add(values.len()) {
            Some(end) if end <= self.len => {
                for (i, v) in values.iter().enumerate() {
                    self.store(start + i, *v, Release);
                }
                Ok(())
            }
            _ => Err(Error::InvalidArgument(format!(
                "{} elements from index {start} do not fit in {} elements",
                values.len(),
                self.len
            ))),
        }
    }
}

impl<T: CInt> Shared<T> {
    pub(super) fn fetch_add(&self, i: usize, value: T) -> T {
        let offset = DATA + i * size_of::<T>();
        let s = &self.segment;
        // Two's complement: adding the bit patterns wraps the same for signed and unsigned.
        match size_of::<T>() {
            8 => T::from_ne(
                s.word64(offset).fetch_add(u64::from_ne_bytes(value.to_ne()), SeqCst).to_ne_bytes(),
            ),
            4 => T::from_ne(widen(
                s.word(offset).fetch_add(narrow(value.to_ne()), SeqCst).to_ne_bytes(),
            )),
            _ => self.update(i, |old| Some(old.wrapping_add(value))).unwrap_or_else(|old| old),
        }
    }

    pub(super) fn fetch_sub(&self, i: usize, value: T) -> T {
        let offset = DATA + i * size_of::<T>();
        let s = &self.segment;
        match size_of::<T>() {
            8 => T::from_ne(
                s.word64(offset).fetch_sub(u64::from_ne_bytes(value.to_ne()), SeqCst).to_ne_bytes(),
            ),
            4 => T::from_ne(widen(
                s.word(offset).fetch_sub(narrow(value.to_ne()), SeqCst).to_ne_bytes(),
            )),
            _ => self.update(i, |old| Some(old.wrapping_sub(value))).unwrap_or_else(|old| old),
        }
    }
}

fn widen(bytes: [u8; 4]) -> [u8; 8] {
    let mut out = [0u8; 8];
    out[..4].copy_from_slice(&bytes);
    out
}

fn narrow(bytes: [u8; 8]) -> u32 {
    let mut out = [0u8; 4];
    out.copy_from_slice(&bytes[..4]);
    u32::from_ne_bytes(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reduction;
    use crate::sharedctypes::{RawArray, RawValue};

    /// Exports `shared`'s segment and imports it again as `Shared<U>` of `kind`.
    fn reimport<T: CType, U: CType>(shared: &Shared<T>, kind: u32) -> Result<Shared<U>> {
        let (handle, fds) = reduction::export_handles(|| shared.segment.export("Value"));
        reduction::import_handles(fds, || Shared::<U>::import(handle?, kind, "Value"))
    }

    #[test]
    fn import_checks_kind_type_code_and_size() {
        let v = RawValue::new(7_i32).unwrap();
        let same = reimport::<i32, i32>(&v.shared, VALUE_KIND).unwrap();
        assert_eq!((same.len, same.load(0, SeqCst)), (1, 7));

        let err = reimport::<i32, u32>(&v.shared, VALUE_KIND).err().unwrap().to_string();
        assert!(err.contains("type code 'i', expected 'I' (c_uint)"), "{err}");
        let err = reimport::<i32, i32>(&v.shared, ARRAY_KIND).err().unwrap().to_string();
        assert!(err.contains("not a Value"), "{err}");

        // A count that claims more elements than the segment holds is refused.
        v.shared.segment.word64(LEN).store(1 << 40, SeqCst);
        let err = reimport::<i32, i32>(&v.shared, VALUE_KIND).err().unwrap().to_string();
        assert!(err.contains("smaller than its elements"), "{err}");
        v.shared.segment.word64(LEN).store(u64::MAX, SeqCst);
        assert!(reimport::<i32, i32>(&v.shared, VALUE_KIND).is_err());
    }

    #[test]
    fn narrow_elements_share_words_without_disturbing_neighbours() {
        let a = RawArray::from_values(&[1_u8, 2, 3, 4, 5, 6, 7]).unwrap();
        a.set(2, 30).unwrap();
        assert_eq!(a.swap(3, 40).unwrap(), 4);
        assert_eq!(a.compare_exchange(6, 7, 70).unwrap(), Ok(7));
        assert_eq!(a.to_vec(), [1, 2, 30, 40, 5, 6, 70]);
        let h = RawArray::from_values(&[-1_i16, 2, -3]).unwrap();
        assert_eq!(h.fetch_add(1, -5).unwrap(), 2);
        assert_eq!(h.to_vec(), [-1, -3, -3]);
        assert_eq!(segment_len(7, 1), Some(24));
        assert_eq!(segment_len(0, 8), Some(16));
        assert_eq!(segment_len(usize::MAX, 2), None);
    }
}
