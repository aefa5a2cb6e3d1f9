//! Block names: the checks a name must pass, the names this module generates
//! (`psm_mp…`, `psm_mk…`, `psm_mq…`, which carry their creator; see [the module
//! docs](super#names)), and the parser that reads a generated name back for the tracker.
//! A CPython name (`psm_` + hex) never parses as one of ours.

use std::io;
use std::os::fd::OwnedFd;

use super::io_context;
use crate::error::{Error, Result};
use crate::sys::shm as sys_shm;

/// The longest name POSIX shared memory accepts on Linux.
const NAME_MAX: usize = 255;
const OWNED_MARK: &str = "psm_mp";
const KEPT_MARK: &str = "psm_mk";
const QUEUE_MARK: &str = "psm_mq";

/// Checks a block name and returns it without leading slashes.
pub(super) fn validate_name(name: &str) -> Result<String> {
    let bare = name.trim_start_matches('/');
    let why = if bare.is_empty() {
        Some("it is empty")
    } else if bare == "." || bare == ".." {
        Some("'.' and '..' are not names")
    } else if bare.contains('/') {
        Some("it contains '/' after the start")
    } else if bare.contains('\0') {
        Some("it contains a NUL byte")
    } else if bare.len() > NAME_MAX {
        Some("it is longer than 255 bytes")
    } else {
        None
    };
    match why {
        Some(why) => {
            Err(Error::InvalidArgument(format!("{name:?} is not a shared memory name: {why}")))
        }
        None => Ok(bare.to_string()),
    }
}

/// Creates a block with a fresh generated name for this process.
pub(super) fn create_generated(
    size: usize,
    keep: bool,
    queue: Option<(u64, u64)>,
) -> Result<(String, OwnedFd)> {
    let (pid, start) = crate::sys::proc::this_process();
    let (mark, start) = match (keep, queue) {
        (true, _) => (KEPT_MARK, start.to_string()),
        (false, None) => (OWNED_MARK, start.to_string()),
        (false, Some((dev, ino))) => (QUEUE_MARK, format!("{start}_{dev}_{ino}")),
    };
    let mut last = None;
    for _ in 0..64 {
        let random = getrandom::u32()
            .map_err(|e| Error::Io(io::Error::other(format!("no randomness for a name: {e}"))))?;
        let name = format!("{mark}{pid}_{start}_{random:08x}");
        match sys_shm::shm_create(&name, size) {
            Ok(fd) => return Ok((name, fd)),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => last = Some(e),
            Err(e) => return Err(io_context(e, format!("creating shared memory block {name:?}"))),
        }
    }
    Err(io_context(
        last.unwrap_or_else(|| io::Error::from(io::ErrorKind::AlreadyExists)),
        "no free generated shared memory name after 64 tries".into(),
    ))
}

/// The parts of a generated name.
pub(super) struct Generated {
    pub(super) kept: bool,
    pub(super) pid: i32,
    pub(super) start: u64,
    /// For a queue's large item: the (device, inode) of the queue's segment.
    pub(super) queue: Option<(u64, u64)>,
}

/// Parses `psm_m{p|k}<pid>_<start>_<8 hex>` and `psm_mq<pid>_<start>_<dev>_<inode>_<8
/// hex>`; anything else is not this library's.
pub(super) fn parse_generated(name: &str) -> Option<Generated> {
    let (kept, queued, rest) = if let Some(rest) = name.strip_prefix(OWNED_MARK) {
        (false, false, rest)
    } else if let Some(rest) = name.strip_prefix(QUEUE_MARK) {
        (false, true, rest)
    } else {
        (true, false, name.strip_prefix(KEPT_MARK)?)
    };
    let parts: Vec<&str> = rest.split('_').collect();
    let decimal = |s: &str| !s.is_empty() && s.len() <= 20 && s.bytes().all(|b| b.is_ascii_digit());
    let (numbers, random) = match (queued, parts.as_slice()) {
        (false, [pid, start, random]) => (vec![*pid, *start], *random),
        (true, [pid, start, dev, ino, random]) => (vec![*pid, *start, *dev, *ino], *random),
        _ => return None,
    };
    if !numbers.iter().all(|n| decimal(n))
        || random.len() != 8
        || !random.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
    {
        return None;
    }
    let pid: i32 = numbers[0].parse().ok().filter(|&p| p > 0)?;
    let queue = match numbers.as_slice() {
        [_, _, dev, ino] => Some((dev.parse().ok()?, ino.parse().ok()?)),
        _ => None,
    };
    Some(Generated { kept, pid, start: numbers[1].parse().ok()?, queue })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_names_parse() {
        let g = parse_generated("psm_mp123_456_0a1b2c3d").unwrap();
        assert!(!g.kept && g.pid == 123 && g.start == 456);
        assert!(parse_generated("psm_mk1_0_ffffffff").unwrap().kept);
        let q = parse_generated("psm_mq7_8_9_10_0a1b2c3d").unwrap();
        assert!(!q.kept && q.pid == 7 && q.start == 8 && q.queue == Some((9, 10)));
        for bad in [
            "psm_0a1b2c3d",
            "psm_mp123_456_0A1B2C3D",
            "psm_mp123_456_0a1b2c3",
            "psm_mp0_456_0a1b2c3d",
            "psm_mp-1_456_0a1b2c3d",
            "psm_mp123_456_0a1b2c3d_x",
            "psm_mp_456_0a1b2c3d",
            "psm_mx123_456_0a1b2c3d",
            "sem.psm_mp123_456_0a1b2c3d",
            "psm_mq123_456_0a1b2c3d",
            "psm_mq123_456_7_0a1b2c3d",
            "psm_mp123_456_7_8_0a1b2c3d",
            "psm_mq123_456_7_8_9_0a1b2c3d",
        ] {
            assert!(parse_generated(bad).is_none(), "{bad}");
        }
    }

    #[test]
    fn names_are_checked() {
        assert_eq!(validate_name("/abc").unwrap(), "abc");
        assert_eq!(validate_name("//abc").unwrap(), "abc");
        for bad in ["", "/", ".", "..", "a/b", "a\0b"] {
            assert!(validate_name(bad).is_err(), "{bad:?}");
        }
        assert!(validate_name(&"a".repeat(256)).is_err());
        assert!(validate_name(&"a".repeat(255)).is_ok());
    }
}
