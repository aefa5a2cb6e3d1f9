//! Shared memory: blocks and their lifetime, typed views, handles passed to children, the
//! tracker that cleans up after killed creators, `ShareableList`, and interop with
//! CPython's `multiprocessing.shared_memory` (stdlib only) in both directions.
//!
//! The CPython tests run for CPython 3.11, 3.12 and 3.13, any patch release (see
//! `common::python` for where interpreters are found). A missing version fails them in CI
//! (`CI=true`); elsewhere its part is skipped and the binary writes one line to its stderr
//! naming what it skipped. The Python side is `tests/python/shm_peer.py`.
//!
//! Every test removes what it creates: the suite leaves nothing in `/dev/shm`.

use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Stdio};
use std::sync::mpsc::{self, Receiver};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use multiproc::shared_memory::{
    clean_orphans_of, list_blocks, BlockState, ListItem, ShareableList, SharedMemory,
};
use multiproc::{pipe, Connection, Error, Process, StartMethod};

mod common;
use common::python::{Interpreter, MINORS};

const LONG: Option<Duration> = Some(Duration::from_secs(60));
/// The tests that run CPython, once per minor version of `common::python::MINORS`.
const CPYTHON_TESTS: [&str; 4] = [
    "cpython_creates_a_block_and_rust_attaches",
    "rust_creates_a_block_and_cpython_attaches",
    "cpython_creates_a_shareable_list_and_rust_reads_and_writes_it",
    "rust_creates_a_shareable_list_and_cpython_reads_and_writes_it",
];

fn exists(name: &str) -> bool {
    std::path::Path::new("/dev/shm").join(name).exists()
}

// ---------------------------------------------------------------------------------------
// Blocks

#[test]
fn create_attach_and_the_creator_unlinks() {
    let shm = SharedMemory::create(100).unwrap();
    let name = shm.name().to_string();
    assert!(name.starts_with(&format!("psm_mp{}_", std::process::id())), "{name}");
    assert_eq!(shm.size(), 100);
    assert!(exists(&name));
    shm.write_volatile::<u8>(99, 0xab).unwrap();

    let other = SharedMemory::attach(&name).unwrap();
    assert_eq!(other.size(), 100);
    assert_eq!(other.read_volatile::<u8>(99).unwrap(), 0xab);
    assert!(!other.is_owner());
    drop(other);
    assert!(exists(&name), "a handle that only attached must not unlink");

    // A leading slash is accepted, as CPython's names are "/psm_…" underneath.
    drop(SharedMemory::attach(&format!("/{name}")).unwrap());

    drop(shm);
    assert!(!exists(&name), "the creator unlinks when it drops its handle");
    assert!(SharedMemory::attach(&name).is_err());
}

#[test]
fn bad_sizes_and_names_are_errors_not_panics() {
    for size in [0, usize::MAX, isize::MAX as usize + 1] {
        let e = SharedMemory::create(size).unwrap_err();
        assert!(matches!(e, Error::InvalidArgument(_)), "{size}: {e}");
    }
    // Bigger than /dev/shm: an error at creation, not SIGBUS at the first write.
    let e = SharedMemory::create(1 << 50).unwrap_err();
    assert!(matches!(e, Error::Io(_)), "{e}");
    for name in ["", "/", ".", "..", "a/b", "nul\0byte", &"n".repeat(256)] {
        let e = SharedMemory::create_named(name, 8).unwrap_err();
        assert!(matches!(e, Error::InvalidArgument(_)), "{name:?}: {e}");
        let e = SharedMemory::attach(name).unwrap_err();
        assert!(matches!(e, Error::InvalidArgument(_)), "{name:?}: {e}");
    }
    let e = SharedMemory::attach("psm_surely_missing_block").unwrap_err();
    match e {
        Error::Io(io) => {
            assert_eq!(io.kind(), std::io::ErrorKind::NotFound);
            assert!(io.to_string().contains("psm_surely_missing_block"), "{io}");
        }
        other => panic!("{other}"),
    }
}

#[test]
fn named_blocks_exist_once_and_attaching_an_empty_object_is_an_error() {
    let name = format!("mp_test_named_{}", std::process::id());
    let shm = SharedMemory::create_named(&name, 10).unwrap();
    assert_eq!(shm.name(), name);
    let e = SharedMemory::create_named(&name, 10).unwrap_err();
    assert!(matches!(&e, Error::Io(io) if io.kind() == std::io::ErrorKind::AlreadyExists), "{e}");
    drop(shm);
    assert!(!exists(&name));

    // An object of size 0 (made by someone else) cannot be mapped: a clear error.
    let empty = format!("mp_test_empty_{}", std::process::id());
    std::fs::File::create(format!("/dev/shm/{empty}")).unwrap();
    let e = SharedMemory::attach(&empty).unwrap_err();
    std::fs::remove_file(format!("/dev/shm/{empty}")).unwrap();
    assert!(matches!(e, Error::InvalidArgument(_)), "{e}");
}

#[test]
fn unlink_from_any_handle_and_never_someone_elses_block() {
    let shm = SharedMemory::create(8).unwrap();
    let name = shm.name().to_string();
    let other = SharedMemory::attach(&name).unwrap();
    other.unlink().unwrap();
    assert!(!exists(&name));
    other.unlink().unwrap(); // this handle did it already: not an error

    // Someone creates a new block under the same name: the old owner must not remove it.
    let impostor = SharedMemory::create_named(&name, 8).unwrap();
    impostor.write_volatile::<u8>(0, 9).unwrap();
    assert!(shm.unlink().is_err());
    drop(shm);
    assert!(exists(&name), "the first owner's drop removed a block that replaced its own");
    assert_eq!(SharedMemory::attach(&name).unwrap().read_volatile::<u8>(0).unwrap(), 9);
    drop(impostor);
    assert!(!exists(&name));
}

#[test]
fn close_unlinks_only_as_the_creator() {
    let shm = SharedMemory::create(8).unwrap();
    let name = shm.name().to_string();
    SharedMemory::attach(&name).unwrap().close().unwrap();
    assert!(exists(&name));
    shm.try_clone().unwrap().close().unwrap();
    assert!(exists(&name));
    shm.close().unwrap();
    assert!(!exists(&name));

    // An owner whose block someone else already unlinked closes without an error.
    let shm = SharedMemory::create(8).unwrap();
    SharedMemory::attach(shm.name()).unwrap().unlink().unwrap();
    shm.close().unwrap();
}

#[test]
fn kept_blocks_outlive_their_handle() {
    let shm = SharedMemory::builder().size(64).keep(true).create().unwrap();
    let name = shm.name().to_string();
    assert!(name.starts_with("psm_mk"), "{name}");
    assert!(shm.is_kept() && !shm.is_owner());
    drop(shm);
    assert!(exists(&name));
    let again = SharedMemory::attach(&name).unwrap();
    assert_eq!(again.size(), 64);
    again.unlink().unwrap();
    assert!(!exists(&name));
}

#[test]
fn sparse_and_reserved_blocks_read_as_zeros() {
    for sparse in [false, true] {
        let shm = SharedMemory::builder().size(3 << 20).sparse(sparse).create().unwrap();
        assert!(shm.to_vec_of::<u8>().unwrap().iter().all(|&b| b == 0));
    }
}

// ---------------------------------------------------------------------------------------
// Typed views

#[test]
fn typed_views_share_memory_without_copies() {
    let mut shm = SharedMemory::create(1000 * 8).unwrap();
    let other = SharedMemory::attach(shm.name()).unwrap();
    // SAFETY: nothing else touches the block while `arr` lives: `other` is not used until
    // `arr` is gone, and no other process knows the block.
    let arr = unsafe { shm.as_mut_slice_of::<f64>() }.unwrap();
    assert_eq!(arr.len(), 1000);
    for (i, x) in arr.iter_mut().enumerate() {
        *x = i as f64;
    }
    // SAFETY: nothing writes the block while these views live (`arr` is gone, and the
    // test writes nothing else).
    unsafe {
        let seen = other.as_slice_of::<f64>().unwrap();
        assert_eq!(seen[999], 999.0);
        assert_eq!(other.as_slice_of::<u64>().unwrap()[1], 1.0f64.to_bits());
        assert_eq!(other.as_slice_of::<[f64; 4]>().unwrap().len(), 250);
    }
}

#[test]
fn typed_views_that_do_not_fit_are_invalid_arguments() {
    let mut shm = SharedMemory::create(12).unwrap();
    // SAFETY: only this handle exists and each view ends at once.
    unsafe {
        for e in [
            shm.as_slice_of::<f64>().map(|_| ()).unwrap_err(),
            shm.as_mut_slice_of::<u64>().map(|_| ()).unwrap_err(),
            shm.as_slice_of::<[u8; 5]>().map(|_| ()).unwrap_err(),
            shm.as_slice_of::<()>().map(|_| ()).unwrap_err(),
        ] {
            assert!(matches!(e, Error::InvalidArgument(_)), "{e}");
        }
        assert_eq!(shm.as_slice_of::<u32>().unwrap().len(), 3);
        assert_eq!(shm.as_slice_of::<u8>().unwrap().len(), 12);
    }
    for e in [
        shm.to_vec_of::<f64>().map(|_| ()).unwrap_err(),
        shm.to_vec_of::<()>().map(|_| ()).unwrap_err(),
        shm.read_volatile::<()>(0).map(|_| ()).unwrap_err(),
        shm.fill_of::<()>(.., ()).unwrap_err(),
    ] {
        assert!(matches!(e, Error::InvalidArgument(_)), "{e}");
    }
}

// ---------------------------------------------------------------------------------------
// Safe access: copies, volatile elements, atomics, fills

#[test]
fn copies_in_and_out_at_an_offset() {
    let shm = SharedMemory::create(16).unwrap();
    let other = shm.try_clone().unwrap();
    shm.write_at(3, b"hello").unwrap();
    let mut out = [0u8; 7];
    other.read_at(2, &mut out).unwrap();
    assert_eq!(&out, b"\0hello\0");
    // The last byte, and empty copies at the very end, are inside.
    shm.write_at(15, b"!").unwrap();
    shm.write_at(16, b"").unwrap();
    other.read_at(16, &mut []).unwrap();
    let mut last = [0u8; 1];
    other.read_at(15, &mut last).unwrap();
    assert_eq!(&last, b"!");
}

#[test]
fn copies_outside_the_block_are_errors_and_write_nothing() {
    let shm = SharedMemory::create(16).unwrap();
    shm.fill_of::<u8>(.., 0xee).unwrap();
    let mut out = [0u8; 4];
    for (offset, len) in [(13, 4), (16, 1), (17, 0), (usize::MAX, 1), (usize::MAX, 0)] {
        let e = shm.write_at(offset, &vec![1u8; len]).unwrap_err();
        assert!(matches!(e, Error::InvalidArgument(_)), "write {offset}+{len}: {e}");
        let e = shm.read_at(offset, &mut out[..len.min(4)]).map(|_| len).unwrap_err();
        assert!(matches!(e, Error::InvalidArgument(_)), "read {offset}+{len}: {e}");
    }
    for e in [
        shm.write_slice_of::<u32>(2, &[1, 2, 3]).unwrap_err(),
        shm.write_slice_of::<u32>(usize::MAX / 2, &[1]).unwrap_err(),
        shm.read_slice_of::<u64>(1, &mut [0; 2]).unwrap_err(),
        shm.write_volatile::<u64>(2, 1).unwrap_err(),
        shm.read_volatile::<u16>(8).map(|_| ()).unwrap_err(),
        shm.fill_of::<u32>(3..5, 1).unwrap_err(),
        shm.fill_of::<u32>(..=4, 1).unwrap_err(),
        shm.atomic::<std::sync::atomic::AtomicU64>(2).map(|_| ()).unwrap_err(),
        shm.atomic::<std::sync::atomic::AtomicU8>(usize::MAX).map(|_| ()).unwrap_err(),
    ] {
        assert!(matches!(e, Error::InvalidArgument(_)), "{e}");
    }
    assert_eq!(shm.to_vec_of::<u8>().unwrap(), [0xee; 16], "a failed write changed the block");
}

#[test]
fn typed_copies_volatile_elements_and_fills() {
    let shm = SharedMemory::create(10 * 8).unwrap();
    shm.fill_of::<f64>(.., 0.5).unwrap();
    shm.fill_of::<f64>(2..4, -1.0).unwrap();
    shm.fill_of::<f64>(8..=9, 7.0).unwrap();
    shm.fill_of::<f64>(5..5, 99.0).unwrap(); // empty: nothing
    shm.write_slice_of::<f64>(4, &[4.0, 4.5]).unwrap();
    shm.write_volatile::<f64>(7, 3.25).unwrap();
    assert_eq!(
        shm.to_vec_of::<f64>().unwrap(),
        [0.5, 0.5, -1.0, -1.0, 4.0, 4.5, 0.5, 3.25, 7.0, 7.0]
    );
    let mut two = [0.0f64; 2];
    shm.read_slice_of(3, &mut two).unwrap();
    assert_eq!(two, [-1.0, 4.0]);
    assert_eq!(shm.read_volatile::<f64>(9).unwrap(), 7.0);
    // The same bytes seen as other types.
    assert_eq!(shm.read_volatile::<u64>(7).unwrap(), 3.25f64.to_bits());
    shm.write_volatile::<u32>(0, 0xdead_beef).unwrap();
    assert_eq!(shm.read_volatile::<[u8; 4]>(0).unwrap(), 0xdead_beefu32.to_ne_bytes());
    let mut bytes = [0u8; 4];
    shm.read_at(0, &mut bytes).unwrap();
    assert_eq!(u32::from_ne_bytes(bytes), 0xdead_beef);
}

#[test]
fn atomic_elements_count_across_threads_and_handles() {
    use std::sync::atomic::{AtomicI16, AtomicU64, Ordering::SeqCst};
    let shm = SharedMemory::create(64).unwrap();
    let threads = 4;
    let per_thread = 10_000u64;
    std::thread::scope(|s| {
        for _ in 0..threads {
            // Each thread its own handle on the block, as another process would have.
            let mine = shm.try_clone().unwrap();
            s.spawn(move || {
                let word = mine.atomic::<AtomicU64>(3).unwrap();
                let small = mine.atomic::<AtomicI16>(1).unwrap();
                for _ in 0..per_thread {
                    word.fetch_add(1, SeqCst);
                    small.fetch_sub(1, SeqCst);
                }
            });
        }
    });
    assert_eq!(shm.atomic::<AtomicU64>(3).unwrap().load(SeqCst), threads * per_thread);
    assert_eq!(shm.read_volatile::<u64>(3).unwrap(), threads * per_thread);
    assert_eq!(shm.read_volatile::<i16>(1).unwrap(), -((threads * per_thread) as i16));
    assert_eq!(shm.read_volatile::<u16>(0).unwrap(), 0, "a neighbour was disturbed");
}

#[test]
fn a_child_counts_with_atomics_on_a_block() {
    use std::sync::atomic::{AtomicU32, Ordering::SeqCst};
    fn count((shm, n): (SharedMemory, u32)) {
        let counter = shm.atomic::<AtomicU32>(5).unwrap();
        for _ in 0..n {
            counter.fetch_add(1, SeqCst);
        }
    }
    let shm = SharedMemory::create(32).unwrap();
    let p = Process::builder(count, (shm.try_clone().unwrap(), 5000))
        .start_method(StartMethod::Spawn)
        .build();
    p.start().unwrap();
    count((shm.try_clone().unwrap(), 5000));
    p.join_timeout(LONG.unwrap()).unwrap();
    assert_eq!(p.exitcode(), Some(0), "{:?}", p.panic_message());
    assert_eq!(shm.atomic::<AtomicU32>(5).unwrap().load(SeqCst), 10_000);
}

// ---------------------------------------------------------------------------------------
// Handles travel

fn double_all(shm: SharedMemory) {
    assert!(!shm.is_owner());
    let mut values = shm.to_vec_of::<f64>().unwrap();
    for x in &mut values {
        *x *= 2.0;
    }
    shm.write_slice_of(0, &values).unwrap();
}

#[test]
fn a_child_receives_an_attached_handle_and_never_unlinks() {
    // (Spawn: a forked child in this multi-threaded harness can hang on a lock that another
    // thread held at the fork; `a_forked_copy_of_the_owner_does_not_unlink` covers fork.)
    let shm = SharedMemory::create(5 * 8).unwrap();
    shm.write_slice_of::<f64>(0, &[1.0, 2.0, 3.0, 4.0, 5.0]).unwrap();
    let p = Process::builder(double_all, shm.try_clone().unwrap())
        .start_method(StartMethod::Spawn)
        .build();
    p.start().unwrap();
    p.join_timeout(LONG.unwrap()).unwrap();
    assert_eq!(p.exitcode(), Some(0), "{:?}", p.panic_message());
    assert_eq!(shm.to_vec_of::<f64>().unwrap(), [2.0, 4.0, 6.0, 8.0, 10.0]);
    assert!(exists(shm.name()), "the child unlinked the block");
}

#[test]
fn workers_square_their_own_chunks_in_place() {
    fn square((shm, start, end): (SharedMemory, usize, usize)) {
        // The other workers write their chunks meanwhile: copy this one out and back.
        let mut chunk = vec![0.0f64; end - start];
        shm.read_slice_of(start, &mut chunk).unwrap();
        for x in &mut chunk {
            *x = *x * *x;
        }
        shm.write_slice_of(start, &chunk).unwrap();
    }
    let n = 100_003;
    let shm = SharedMemory::create(n * 8).unwrap();
    let values: Vec<f64> = (0..n).map(|i| i as f64).collect();
    shm.write_slice_of(0, &values).unwrap();
    let workers = 4;
    let chunk = n / workers;
    let procs: Vec<Process> = (0..workers)
        .map(|i| {
            let end = if i < workers - 1 { (i + 1) * chunk } else { n };
            let p = Process::new(square, (shm.try_clone().unwrap(), i * chunk, end));
            p.start().unwrap();
            p
        })
        .collect();
    for p in &procs {
        p.join_timeout(LONG.unwrap()).unwrap();
        assert_eq!(p.exitcode(), Some(0), "{:?}", p.panic_message());
    }
    let arr = shm.to_vec_of::<f64>().unwrap();
    assert!(arr.iter().enumerate().all(|(i, &x)| x == (i * i) as f64));
}

#[test]
fn a_handle_travels_through_a_pipe_by_name() {
    let (a, b) = pipe(true).unwrap();
    let shm = SharedMemory::create(16).unwrap();
    shm.write_at(0, b"pipe").unwrap();
    a.send(&shm).unwrap();
    let got: SharedMemory = b.recv().unwrap();
    assert_eq!(got.name(), shm.name());
    let mut out = [0u8; 4];
    got.read_at(0, &mut out).unwrap();
    assert_eq!(&out, b"pipe");
    assert!(!got.is_owner());
    drop(got);
    assert!(exists(shm.name()));
}

#[test]
fn a_child_whose_block_is_gone_fails_clearly() {
    let shm = SharedMemory::create(8).unwrap();
    let handle = shm.try_clone().unwrap();
    shm.unlink().unwrap();
    let p = Process::new(double_all, handle);
    p.start().unwrap();
    p.join_timeout(LONG.unwrap()).unwrap();
    assert_eq!(p.exitcode(), Some(1));
    let message = p.panic_message().unwrap_or_default();
    assert!(message.contains("decoded"), "{message}");
}

/// An owner handle copied into a forked child (here through a static) is not the
/// child's to unlink.
static FORKED_OWNER: Mutex<Option<SharedMemory>> = Mutex::new(None);

#[test]
fn a_forked_copy_of_the_owner_does_not_unlink() {
    let shm = SharedMemory::create(8).unwrap();
    let name = shm.name().to_string();
    *FORKED_OWNER.lock().unwrap() = Some(shm);
    // A bare fork whose child only drops its copy of the handle and exits at once: the
    // test harness's other threads may hold locks (stdout) that a fuller child would need.
    // SAFETY: the child touches only the static (whose lock no other thread takes), the
    // handle's drop (getpid, munmap, close, free) and `_exit`.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork failed");
    if pid == 0 {
        let copy = FORKED_OWNER.lock().map(|mut g| g.take()).ok().flatten();
        let code = match copy {
            Some(copy) if !copy.is_owner() => {
                drop(copy);
                0
            }
            _ => 1,
        };
        // SAFETY: ends the forked child without running anything of the parent's.
        unsafe { libc::_exit(code) };
    }
    let mut status = 0;
    // SAFETY: waits for the child forked above.
    let waited = unsafe { libc::waitpid(pid, &mut status, 0) };
    assert_eq!(waited, pid);
    assert!(libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0, "status {status:#x}");
    assert!(exists(&name), "a forked child unlinked its parent's block");
    let shm = FORKED_OWNER.lock().unwrap().take().unwrap();
    assert!(shm.is_owner());
    drop(shm);
    assert!(!exists(&name));
}

// ---------------------------------------------------------------------------------------
// The tracker

fn create_and_hang((conn, keep): (Connection, bool)) {
    let shm = SharedMemory::builder().size(4096).keep(keep).create().unwrap();
    conn.send(&shm.name().to_string()).unwrap();
    std::thread::sleep(Duration::from_secs(120));
}

fn state_of(name: &str) -> Option<BlockState> {
    list_blocks().unwrap().into_iter().find(|b| b.name == name).map(|b| b.state)
}

/// Waits until `name`'s state is `want` (a killed process takes a moment to die).
fn wait_for_state(name: &str, want: Option<BlockState>) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while state_of(name) != want {
        assert!(Instant::now() < deadline, "{name}: {:?}, not {want:?}", state_of(name));
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// The one test that kills creators and cleans. It cleans only after its own processes
/// (`clean_orphans_of`), never machine-wide: other tests and programs may have orphans of
/// their own that they are still looking at.
#[test]
fn clean_removes_the_blocks_of_killed_creators_only() {
    let start = |keep: bool| {
        let (mine, theirs) = pipe(true).unwrap();
        let p = Process::new(create_and_hang, (theirs, keep));
        p.start().unwrap();
        let name: String = mine.recv_timeout(Duration::from_secs(60)).unwrap();
        (p, name)
    };
    let (owner, orphan) = start(false);
    let (keeper, kept) = start(true);

    let info = list_blocks().unwrap().into_iter().find(|b| b.name == orphan).unwrap();
    assert_eq!(info.owner_pid, owner.pid().unwrap());
    assert_eq!(info.size, 4096);
    assert_eq!(info.state, BlockState::Live);
    assert!(info.owner_alive);
    assert_eq!(state_of(&kept), Some(BlockState::Kept));

    // Neighbours that must survive: a live block, CPython-style and foreign names.
    let live = SharedMemory::create(64).unwrap();
    let cpython_like =
        SharedMemory::create_named(&format!("psm_{:08x}", owner.pid().unwrap()), 8).unwrap();
    let lookalike =
        SharedMemory::create_named(&format!("psm_mp{}_x", owner.pid().unwrap()), 8).unwrap();

    owner.kill().unwrap();
    keeper.kill().unwrap();
    // Killed but not reaped yet: a zombie counts as dead.
    wait_for_state(&orphan, Some(BlockState::Orphaned));
    owner.join_timeout(LONG.unwrap()).unwrap();
    keeper.join_timeout(LONG.unwrap()).unwrap();
    assert_eq!(owner.exitcode(), Some(-9));
    assert_eq!(state_of(&orphan), Some(BlockState::Orphaned));
    let kept_info = list_blocks().unwrap().into_iter().find(|b| b.name == kept).unwrap();
    assert_eq!(kept_info.state, BlockState::Kept);
    assert!(!kept_info.owner_alive);

    // The owner's orphan goes, not the names that only look like its; the keeper's kept
    // block and this process's live one stay.
    let creators = [owner.pid().unwrap(), keeper.pid().unwrap(), std::process::id() as i32];
    let mut removed = Vec::new();
    for pid in creators {
        let report = clean_orphans_of(pid).unwrap();
        assert!(report.failed.is_empty(), "{:?}", report.failed);
        assert!(report.removed.iter().all(|b| b.owner_pid == pid), "{report:?}");
        removed.extend(report.removed);
    }
    assert!(removed.iter().any(|b| b.name == orphan), "{removed:?}");
    for untouched in [live.name(), cpython_like.name(), lookalike.name(), kept.as_str()] {
        assert!(removed.iter().all(|b| b.name != untouched), "{untouched}");
        assert!(exists(untouched), "clean removed {untouched}");
    }
    assert!(!exists(&orphan));
    assert_eq!(state_of(&orphan), None);
    assert_eq!(state_of(live.name()), Some(BlockState::Live));
    assert_eq!(state_of(cpython_like.name()), None, "not this library's name");

    SharedMemory::attach(&kept).unwrap().unlink().unwrap();
}

// ---------------------------------------------------------------------------------------
// ShareableList

fn sample() -> Vec<ListItem> {
    vec![
        ListItem::Int(7),
        ListItem::Int(i64::MIN),
        ListItem::Float(2.5),
        ListItem::Float(f64::INFINITY),
        ListItem::Bool(true),
        ListItem::Bool(false),
        ListItem::None,
        ListItem::Str(String::new()),
        ListItem::Str("hello".into()),
        ListItem::Str("h\u{e9}llo w\u{f6}rld".into()),
        ListItem::Str("exactly8".into()),
        ListItem::Bytes(Vec::new()),
        ListItem::Bytes(b"\x00\x01bin".to_vec()),
        ListItem::Bytes(b"exactly8".to_vec()),
        ListItem::Str("a".repeat(20)),
    ]
}

/// The format CPython gives `sample()`.
const SAMPLE_FORMAT: &str = "qqddxxxxxxx?xxxxxxx?xxxxxx?x8s8s16s16s8s8s16s24s";

#[test]
fn shareable_list_round_trips_every_type() {
    let sl = ShareableList::create(&sample()).unwrap();
    assert_eq!(sl.len(), 15);
    assert_eq!(sl.to_vec().unwrap(), sample());
    assert_eq!(sl.format().unwrap(), SAMPLE_FORMAT);
    let other = ShareableList::attach(sl.name()).unwrap();
    assert_eq!(other.to_vec().unwrap(), sample());
    assert_eq!(other.count(&ListItem::Int(1)).unwrap(), 1); // True
    assert_eq!(other.count(&ListItem::Float(0.0)).unwrap(), 1); // False
    assert_eq!(other.index(&ListItem::Str("hello".into())).unwrap(), Some(8));
    assert_eq!(other.index(&ListItem::Bytes(b"hello".to_vec())).unwrap(), None);
    assert_eq!(other.index(&ListItem::None).unwrap(), Some(6));
}

#[test]
fn shareable_list_set_follows_cpython() {
    let mut sl = ShareableList::create(&sample()).unwrap();
    sl.set(0, ListItem::Str("txt".into())).unwrap(); // an int's slot takes 8 bytes
    sl.set(8, ListItem::Int(42)).unwrap();
    sl.set(9, ListItem::Str("\u{fc}".repeat(8))).unwrap(); // 16 bytes in 16
    sl.set(2, ListItem::None).unwrap();
    sl.set(4, ListItem::Float(-1.5)).unwrap();
    let too_long = sl.set(10, ListItem::Bytes(vec![b'x'; 17])).unwrap_err();
    assert!(too_long.to_string().contains("exceeds available storage"), "{too_long}");
    assert!(sl.set(0, ListItem::Str("nine char".into())).is_err());
    assert!(matches!(sl.set(15, ListItem::None), Err(Error::InvalidArgument(_))));
    assert!(matches!(sl.get(15), Err(Error::InvalidArgument(_))));
    let got = ShareableList::attach(sl.name()).unwrap().to_vec().unwrap();
    assert_eq!(got[0], ListItem::Str("txt".into()));
    assert_eq!(got[8], ListItem::Int(42));
    assert_eq!(got[9], ListItem::Str("\u{fc}".repeat(8)));
    assert_eq!(got[2], ListItem::None);
    assert_eq!(got[4], ListItem::Float(-1.5));
    assert_eq!(got[10], ListItem::Str("exactly8".into()));
    // Formats follow CPython: "8s" for text in a number's slot, the slot's own "Ns" kept.
    assert_eq!(sl.format().unwrap(), "8sqxxxxxx?xddxxxxxxx?xxxxxx?x8sq16s16s8s8s16s24s");
}

#[test]
fn shareable_list_sizes_slots_by_utf8_length() {
    // CPython would give 5 characters 8 bytes and truncate their 10 bytes of UTF-8.
    let text = "\u{e9}".repeat(5);
    let sl = ShareableList::create(&[ListItem::Str(text.clone())]).unwrap();
    assert_eq!(sl.format().unwrap(), "16s");
    assert_eq!(sl.get(0).unwrap(), ListItem::Str(text));
}

#[test]
fn a_block_that_is_not_a_list_is_an_error() {
    let shm = SharedMemory::create(64).unwrap();
    shm.write_volatile::<i64>(0, 1000).unwrap();
    assert!(matches!(ShareableList::attach(shm.name()), Err(Error::InvalidArgument(_))));
    shm.write_volatile::<i64>(0, -1).unwrap();
    assert!(matches!(ShareableList::attach(shm.name()), Err(Error::InvalidArgument(_))));

    // A list whose format bytes were scribbled over: get fails, nothing panics.
    let sl = ShareableList::create(&[ListItem::Int(1), ListItem::Str("ab".into())]).unwrap();
    let raw = SharedMemory::attach(sl.name()).unwrap();
    let formats = (2 + 2) * 8 + 16;
    raw.write_at(formats, b"zzzzzzzz").unwrap();
    raw.write_at(formats + 8, b"999999s\0").unwrap();
    raw.write_at(formats + 16 + 1, &[1]).unwrap();
    assert!(matches!(sl.get(0), Err(Error::InvalidArgument(_))));
    assert!(matches!(sl.get(1), Err(Error::InvalidArgument(_))));
    assert!(sl.to_vec().is_err());
    assert!(sl.format().is_ok());
}

#[test]
fn a_shareable_list_travels_to_a_child() {
    fn child(mut sl: ShareableList) {
        let n = match sl.get(0).unwrap() {
            ListItem::Int(n) => n,
            other => panic!("{other:?}"),
        };
        sl.set(0, ListItem::Int(n + 1)).unwrap();
        sl.set(1, ListItem::Str("from child".into())).unwrap();
    }
    let sl = ShareableList::create(&[ListItem::Int(41), ListItem::Str("x".repeat(10))]).unwrap();
    let p = Process::new(child, ShareableList::attach(sl.name()).unwrap());
    p.start().unwrap();
    p.join_timeout(LONG.unwrap()).unwrap();
    assert_eq!(p.exitcode(), Some(0), "{:?}", p.panic_message());
    assert_eq!(sl.to_vec().unwrap(), [ListItem::Int(42), ListItem::Str("from child".into())]);
}

// ---------------------------------------------------------------------------------------
// CPython interop

fn script() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/python/shm_peer.py")
}

/// The interpreter for `minor`, or `None` when the test skips it (see `common::python`).
fn python(minor: &str) -> Option<Interpreter> {
    common::python::require(minor, "shared_memory", &CPYTHON_TESTS)
}

/// Names the interpreters found and what is skipped for want of one; fails in CI when one
/// is missing.
#[test]
fn cpython_interpreters() {
    common::python::check_interpreters("shared_memory", &CPYTHON_TESTS);
}

/// A running `shm_peer.py`, killed when dropped if it still runs.
struct Peer {
    child: Child,
    stdin: Option<ChildStdin>,
    lines: Receiver<String>,
    version: String,
}

impl Peer {
    fn start(python: &Interpreter, args: &[&str]) -> Peer {
        let version = python.version.as_str();
        let mut child = python
            .command()
            .arg(script())
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", python.program.display()));
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Peer { stdin: child.stdin.take(), child, lines, version: version.to_string() }
    }

    fn line(&self) -> String {
        self.lines
            .recv_timeout(Duration::from_secs(60))
            .unwrap_or_else(|e| panic!("CPython {}: no line ({e})", self.version))
    }

    fn send(&mut self, line: &str) {
        let stdin = self.stdin.as_mut().unwrap();
        writeln!(stdin, "{line}").and_then(|()| stdin.flush()).unwrap();
    }

    fn items(&self) -> Vec<ListItem> {
        let mut items = Vec::new();
        loop {
            let line = self.line();
            if line == "end" {
                return items;
            }
            items.push(decode(&line));
        }
    }

    fn finish(mut self) {
        drop(self.stdin.take());
        let status = self.child.wait().unwrap();
        assert!(status.success(), "CPython {}: {status}", self.version);
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(s: &str) -> Vec<u8> {
    (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap()).collect()
}

fn encode(item: &ListItem) -> String {
    match item {
        ListItem::Int(i) => format!("int {i}"),
        ListItem::Float(f) => format!("float {}", item_repr(*f)),
        ListItem::Bool(b) => format!("bool {}", if *b { "True" } else { "False" }),
        ListItem::Str(s) => format!("str {}", hex(s.as_bytes())),
        ListItem::Bytes(b) => format!("bytes {}", hex(b)),
        ListItem::None => "none".into(),
    }
}

fn item_repr(f: f64) -> String {
    if f.is_infinite() {
        if f > 0.0 { "inf" } else { "-inf" }.into()
    } else {
        format!("{f:?}")
    }
}

fn decode(line: &str) -> ListItem {
    let (tag, rest) = line.split_once(' ').unwrap_or((line, ""));
    match tag {
        "int" => ListItem::Int(rest.parse().unwrap()),
        "float" => ListItem::Float(rest.parse().unwrap()),
        "bool" => ListItem::Bool(rest == "True"),
        "str" => ListItem::Str(String::from_utf8(unhex(rest)).unwrap()),
        "bytes" => ListItem::Bytes(unhex(rest)),
        "none" => ListItem::None,
        _ => panic!("bad line from CPython: {line:?}"),
    }
}

#[test]
fn cpython_creates_a_block_and_rust_attaches() {
    for minor in MINORS {
        let Some(python) = python(minor) else { continue };
        let version = python.version.as_str();
        let mut py = Peer::start(&python, &["create-shm", "100"]);
        let line = py.line();
        let words: Vec<&str> = line.split(' ').collect();
        assert_eq!(words[0], "name", "{line}");
        let name = words[1];
        assert!(name.starts_with("psm_") && !name.starts_with('/'), "{name}");
        assert_eq!(words[2], "100");
        let shm = SharedMemory::attach(name).unwrap();
        assert_eq!(shm.size(), 100, "CPython {version}");
        let bytes = shm.to_vec_of::<u8>().unwrap();
        assert!(bytes.iter().enumerate().all(|(i, &b)| b as usize == i % 251));
        shm.write_at(0, b"rust").unwrap();
        drop(shm);
        assert!(exists(name), "dropping an attached handle unlinked CPython's block");
        py.send("check");
        assert_eq!(py.line(), "ok", "CPython {version}");
        assert_eq!(py.line(), "done");
        py.finish();
        assert!(!exists(name));
    }
}

#[test]
fn rust_creates_a_block_and_cpython_attaches() {
    for minor in MINORS {
        let Some(python) = python(minor) else { continue };
        let version = python.version.as_str();
        let mut shm = SharedMemory::create(4099).unwrap();
        // SAFETY: no other handle or process knows the new block while the view lives.
        for (i, b) in unsafe { shm.buf_mut() }.iter_mut().enumerate() {
            *b = (i * 7 % 256) as u8;
        }
        let py = Peer::start(&python, &["attach-shm", shm.name()]);
        assert_eq!(py.line(), "size 4099 ok", "CPython {version}");
        py.finish();
        let mut out = [0u8; 6];
        shm.read_at(0, &mut out).unwrap();
        assert_eq!(&out, b"python");
        assert!(exists(shm.name()), "CPython {version} unlinked a block it only attached to");
    }
}

#[test]
fn cpython_creates_a_shareable_list_and_rust_reads_and_writes_it() {
    for minor in MINORS {
        let Some(python) = python(minor) else { continue };
        let version = python.version.as_str();
        let mut py = Peer::start(&python, &["create-list"]);
        let line = py.line();
        let name = line.strip_prefix("name ").unwrap().to_string();
        let mut sl = ShareableList::attach(&name).unwrap();
        assert_eq!(sl.to_vec().unwrap(), sample(), "CPython {version}");
        assert_eq!(sl.format().unwrap(), SAMPLE_FORMAT);
        assert_eq!(sl.shm().size(), (15 + 2) * 8 + (11 * 8 + 3 * 16 + 24) + 15 * 9);

        sl.set(0, ListItem::Str("txt".into())).unwrap();
        sl.set(8, ListItem::Int(-42)).unwrap();
        sl.set(9, ListItem::Str("\u{fc}".repeat(8))).unwrap();
        sl.set(2, ListItem::None).unwrap();
        sl.set(5, ListItem::Float(0.1)).unwrap();
        sl.set(12, ListItem::Bool(true)).unwrap();
        assert!(sl.set(10, ListItem::Bytes(vec![0; 17])).is_err());
        let mut expected = sample();
        expected[0] = ListItem::Str("txt".into());
        expected[8] = ListItem::Int(-42);
        expected[9] = ListItem::Str("\u{fc}".repeat(8));
        expected[2] = ListItem::None;
        expected[5] = ListItem::Float(0.1);
        expected[12] = ListItem::Bool(true);

        py.send("dump");
        assert_eq!(py.items(), expected, "CPython {version} reads what Rust wrote");
        assert_eq!(py.line(), format!("format {}", sl.format().unwrap()));
        // CPython's own set, read back by Rust.
        py.send(&format!("set 3 {}", encode(&ListItem::Str("py".into()))));
        assert_eq!(py.line(), "ok");
        py.send(&format!("set 14 {}", encode(&ListItem::Bytes(vec![b'z'; 25]))));
        assert_eq!(py.line(), "error ValueError", "CPython refuses too long, as we do");
        assert_eq!(sl.get(3).unwrap(), ListItem::Str("py".into()));
        py.send(&format!("count {}", encode(&ListItem::Int(1))));
        assert_eq!(py.line(), sl.count(&ListItem::Int(1)).unwrap().to_string());
        py.send("quit");
        assert_eq!(py.line(), "done");
        py.finish();
        drop(sl);
        assert!(!exists(&name));
    }
}

#[test]
fn rust_creates_a_shareable_list_and_cpython_reads_and_writes_it() {
    for minor in MINORS {
        let Some(python) = python(minor) else { continue };
        let version = python.version.as_str();
        let mut items = sample();
        items.push(ListItem::Str("\u{e9}".repeat(5))); // sized by UTF-8 length here
        let sl = ShareableList::create(&items).unwrap();
        let mut py = Peer::start(&python, &["attach-list", sl.name()]);
        assert_eq!(py.line(), format!("attached {}", items.len()));
        py.send("dump");
        assert_eq!(py.items(), items, "CPython {version} reads Rust's list");
        assert_eq!(py.line(), format!("format {}", sl.format().unwrap()));

        let writes = [
            (0, ListItem::Str("from py".into())),
            (1, ListItem::Float(-0.25)),
            (6, ListItem::Int(99)),
            (8, ListItem::Bytes(b"\x01\x02".to_vec())),
            (15, ListItem::Str("\u{e8}".repeat(8))),
        ];
        for (i, item) in &writes {
            py.send(&format!("set {i} {}", encode(item)));
            assert_eq!(py.line(), "ok", "CPython {version} set {i}");
            items[*i] = item.clone();
        }
        assert_eq!(sl.to_vec().unwrap(), items, "Rust reads what CPython {version} wrote");
        py.send(&format!("index {}", encode(&ListItem::Float(99.0))));
        assert_eq!(py.line(), "6");
        assert_eq!(sl.index(&ListItem::Float(99.0)).unwrap(), Some(6));
        py.send("quit");
        assert_eq!(py.line(), "done");
        py.finish();
        assert!(exists(sl.name()), "CPython {version} unlinked a list it only attached to");
    }
}
