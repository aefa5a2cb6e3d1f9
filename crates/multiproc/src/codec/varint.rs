//! Postcard's variable-length integers (LEB128: seven bits a byte, low bits first), for the
//! places that write or read a length prefix by hand around postcard's own encoding: a
//! queue's byte vectors and large items, and the manager's reply frames.

use crate::error::{Error, Result};

/// The most bytes a `usize` takes (64 bits at seven a byte).
pub(crate) const MAX_LEN: usize = 10;

/// Writes `n` into `buf`; returns the bytes used.
pub(crate) fn encode(mut n: usize, buf: &mut [u8; MAX_LEN]) -> &[u8] {
    let mut i = 0;
    while n >= 0x80 {
        buf[i] = (n as u8) | 0x80;
        n >>= 7;
        i += 1;
    }
    buf[i] = n as u8;
    &buf[..=i]
}

/// Appends `n` to `out`.
pub(crate) fn push(out: &mut Vec<u8>, n: usize) {
    let mut buf = [0; MAX_LEN];
    out.extend_from_slice(encode(n, &mut buf));
}

/// How many bytes `n` takes.
pub(crate) fn len(n: usize) -> usize {
    let bits = usize::BITS - n.leading_zeros();
    (bits.max(1) as usize).div_ceil(7)
}

/// Reads a varint from the front of `bytes`: the value and the bytes after it.
pub(crate) fn read(bytes: &[u8]) -> Result<(usize, &[u8])> {
    let mut n: u64 = 0;
    for (i, &byte) in bytes.iter().enumerate().take(MAX_LEN) {
        n |= u64::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            let n = usize::try_from(n).map_err(|_| Error::Codec("length out of range".into()))?;
            return Ok((n, &bytes[i + 1..]));
        }
    }
    Err(Error::Codec("malformed length prefix".into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varints_match_postcard_and_read_back() {
        for n in [0usize, 1, 127, 128, 300, 16_383, 16_384, u32::MAX as usize, usize::MAX] {
            let mut out = Vec::new();
            push(&mut out, n);
            assert_eq!(out, postcard::to_allocvec(&n).unwrap(), "{n}");
            assert_eq!(len(n), out.len(), "{n}");
            out.push(0xAA);
            assert_eq!(read(&out).unwrap(), (n, &[0xAA][..]));
        }
        assert!(read(&[0x80, 0x80]).is_err(), "a varint cut short");
        assert!(read(&[0xFF; 11]).is_err(), "a varint too long");
    }
}
