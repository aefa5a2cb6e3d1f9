//! The orphan tracker: [`list_blocks`] finds the blocks this library named in
//! `/dev/shm` and tells live, orphaned and kept apart (a block whose creator is gone stays
//! live while a live process can reach it), and [`clean_orphans`] unlinks the orphans.
//! See [the module docs](super#lifetime-the-creator-decides).

use std::fmt;
use std::io;

use serde::{Deserialize, Serialize};

use super::io_context;
use super::naming::parse_generated;
use crate::error::Result;
use crate::sys::proc::process_runs as alive;
use crate::sys::shm as sys_shm;

/// What became of a block's creator, as [`list_blocks`] sees it.
///
/// ```
/// use multiproc::shared_memory::{list_blocks, BlockState, SharedMemory};
/// let shm = SharedMemory::create(8)?;
/// let mine = list_blocks()?.into_iter().find(|b| b.name == shm.name()).unwrap();
/// assert_eq!(mine.state, BlockState::Live);
/// assert_eq!(mine.state.as_str(), "live");
/// # Ok::<(), multiproc::Error>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BlockState {
    /// Owned, and its creator still runs, or a live process can still reach it (has it
    /// open or mapped, or holds the queue whose item it carries).
    Live,
    /// Owned, its creator is gone (exited, killed, or a zombie), and no live process can
    /// reach it: nobody will unlink it.
    Orphaned,
    /// Created to be kept: it outlives its creator and is never cleaned.
    Kept,
}

impl BlockState {
    /// `"live"`, `"orphaned"` or `"kept"`.
    pub fn as_str(self) -> &'static str {
        match self {
            BlockState::Live => "live",
            BlockState::Orphaned => "orphaned",
            BlockState::Kept => "kept",
        }
    }
}

impl fmt::Display for BlockState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A block that this library created with a generated name, found in `/dev/shm`.
///
/// ```
/// use multiproc::shared_memory::{list_blocks, SharedMemory};
/// let shm = SharedMemory::create(4096)?;
/// let info = list_blocks()?.into_iter().find(|b| b.name == shm.name()).unwrap();
/// assert_eq!(info.owner_pid, std::process::id() as i32);
/// assert_eq!(info.size, 4096);
/// assert!(info.owner_alive);
/// # Ok::<(), multiproc::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct BlockInfo {
    /// The name, without a leading `/`.
    pub name: String,
    /// The pid of the process that created it.
    pub owner_pid: i32,
    /// Its size in bytes.
    pub size: u64,
    /// Live, orphaned or kept.
    pub state: BlockState,
    /// Whether its creator still runs (for a kept block, it may have exited).
    pub owner_alive: bool,
}

/// What [`clean_orphans`] did.
///
/// ```
/// let report = multiproc::shared_memory::clean_orphans_of(std::process::id() as i32)?;
/// assert!(report.failed.is_empty());
/// # Ok::<(), multiproc::Error>(())
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct CleanReport {
    /// The orphaned blocks removed.
    pub removed: Vec<BlockInfo>,
    /// Orphaned blocks that could not be removed, with the reason (typically another
    /// user's block: `/dev/shm` lets only its owner remove it).
    pub failed: Vec<(BlockInfo, String)>,
}

/// Whether the process that created the block `name` is gone. Only a generated owned
/// name can tell; for any other name (or a doubt), `false`.
pub(crate) fn creator_is_gone(name: &str) -> bool {
    match parse_generated(name) {
        Some(g) if !g.kept => !alive(g.pid, g.start),
        _ => false,
    }
}

/// The blocks in `/dev/shm` that this library created with generated names, live,
/// orphaned or kept, sorted by name. Objects with other names are not listed.
///
/// A block whose creator is gone is listed live while a live process can still reach it
/// (see [the module docs](crate::shared_memory#lifetime-the-creator-decides)).
///
/// ```
/// use multiproc::shared_memory::{list_blocks, BlockState, SharedMemory};
/// let kept = SharedMemory::builder().size(8).keep(true).create()?;
/// let blocks = list_blocks()?;
/// let info = blocks.iter().find(|b| b.name == kept.name()).unwrap();
/// assert_eq!(info.state, BlockState::Kept);
/// kept.unlink()?;
/// # Ok::<(), multiproc::Error>(())
/// ```
pub fn list_blocks() -> Result<Vec<BlockInfo>> {
    let entries = match std::fs::read_dir(sys_shm::SHM_DIR) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(io_context(e, format!("listing {}", sys_shm::SHM_DIR))),
    };
    let mut blocks = Vec::new();
    // What live processes hold, read once and only if some creator is gone.
    let mut in_use: Option<Option<std::collections::HashSet<(u64, u64)>>> = None;
    for entry in entries {
        let Ok(entry) = entry else { continue };
        let Some(name) = entry.file_name().to_str().map(str::to_string) else { continue };
        let Some(generated) = parse_generated(&name) else { continue };
        // Gone since the listing, or not a plain file: not a block.
        let Ok(meta) = std::fs::symlink_metadata(entry.path()) else { continue };
        if !meta.file_type().is_file() {
            continue;
        }
        let owner_alive = alive(generated.pid, generated.start);
        let state = match (generated.kept, owner_alive) {
            (true, _) => BlockState::Kept,
            (false, true) => BlockState::Live,
            (false, false) => {
                // `None` inside: `/proc` could not tell, and a doubt means "reachable".
                let held = in_use.get_or_insert_with(|| sys_shm::objects_in_use().ok());
                use std::os::unix::fs::MetadataExt;
                let reachable = held.as_ref().is_none_or(|held| {
                    held.contains(&(meta.dev(), meta.ino()))
                        || generated.queue.is_some_and(|queue| held.contains(&queue))
                });
                if reachable {
                    BlockState::Live
                } else {
                    BlockState::Orphaned
                }
            }
        };
        blocks.push(BlockInfo {
            name,
            owner_pid: generated.pid,
            size: meta.len(),
            state,
            owner_alive,
        });
    }
    blocks.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(blocks)
}

/// Unlinks every orphaned block (see [`list_blocks`]): owned blocks whose creator is
/// gone and that no live process can reach. Live and kept blocks, and objects this library
/// did not name, are never touched.
/// A block that vanishes meanwhile (cleaned by someone else) is skipped.
///
/// (Not run as a doc test: a test must not clean what other programs left.)
///
/// ```no_run
/// use multiproc::shared_memory::{clean_orphans, SharedMemory};
/// let live = SharedMemory::create(8)?;
/// let report = clean_orphans()?;
/// assert!(report.removed.iter().all(|b| b.name != live.name()));
/// SharedMemory::attach(live.name())?; // still there
/// # Ok::<(), multiproc::Error>(())
/// ```
pub fn clean_orphans() -> Result<CleanReport> {
    clean(None)
}

/// Unlinks the orphaned blocks (see [`clean_orphans`]) that process `pid` created, and
/// no others: for a program (or a test) that cleans up after its own children without
/// touching what other programs left.
///
/// ```
/// use multiproc::shared_memory::{clean_orphans_of, SharedMemory};
/// let live = SharedMemory::create(8)?;
/// let report = clean_orphans_of(std::process::id() as i32)?;
/// assert!(report.removed.is_empty()); // this process runs: none of its blocks is orphaned
/// SharedMemory::attach(live.name())?;
/// # Ok::<(), multiproc::Error>(())
/// ```
pub fn clean_orphans_of(pid: i32) -> Result<CleanReport> {
    clean(Some(pid))
}

fn clean(only: Option<i32>) -> Result<CleanReport> {
    let mut report = CleanReport::default();
    let orphans = |blocks: Vec<BlockInfo>| -> Vec<BlockInfo> {
        blocks
            .into_iter()
            .filter(|b| b.state == BlockState::Orphaned)
            .filter(|b| only.is_none_or(|pid| pid == b.owner_pid))
            .collect()
    };
    let mut candidates = orphans(list_blocks()?);
    if !candidates.is_empty() {
        // Look twice: a queue handed from one process to another between the reads of
        // their `/proc` entries would be missed by one look, not by both.
        let again: std::collections::HashSet<String> =
            orphans(list_blocks()?).into_iter().map(|b| b.name).collect();
        candidates.retain(|b| again.contains(&b.name));
    }
    for block in candidates {
        match sys_shm::shm_unlink(&block.name) {
            Ok(()) => report.removed.push(block),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => report.failed.push((block, e.to_string())),
        }
    }
    Ok(report)
}
