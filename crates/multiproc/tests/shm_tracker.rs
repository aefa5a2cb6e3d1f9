//! The orphan tracker never removes what a live process can still reach: a queue's large
//! item whose producer has exited, a block another process still maps.
//!
//! Each test cleans only the blocks of its own children (`clean_orphans_of`), never the
//! machine's.

use std::time::Duration;

use multiproc::queues::Queue;
use multiproc::shared_memory::{clean_orphans_of, list_blocks, BlockState, SharedMemory};
use multiproc::{pipe, Connection, Process};

const LONG: Option<Duration> = Some(Duration::from_secs(120));
const ITEM: usize = 8 << 20;

fn item() -> Vec<u8> {
    (0..ITEM).map(|i| (i % 251) as u8).collect()
}

/// Puts one 8 MiB item and exits normally.
fn produce(q: Queue<Vec<u8>>) {
    q.put_timeout(item(), LONG.unwrap()).unwrap();
}

/// The blocks in `/dev/shm` that process `pid` created.
fn blocks_of(pid: i32) -> Vec<multiproc::shared_memory::BlockInfo> {
    list_blocks().unwrap().into_iter().filter(|b| b.owner_pid == pid).collect()
}

fn run_producer(q: &Queue<Vec<u8>>) -> i32 {
    let child = Process::new(produce, q.clone());
    child.start().unwrap();
    let pid = child.pid().unwrap();
    child.join_timeout(LONG.unwrap()).unwrap();
    assert_eq!(child.exitcode(), Some(0));
    pid
}

#[test]
fn a_large_item_outlives_its_producer_and_a_clean() {
    let q: Queue<Vec<u8>> = Queue::new(0).unwrap();
    let producer = run_producer(&q);

    // The item's block names a producer that is gone, but this process holds the queue.
    let blocks = blocks_of(producer);
    assert_eq!(blocks.len(), 1, "{blocks:?}");
    assert!(!blocks[0].owner_alive);
    assert_eq!(blocks[0].state, BlockState::Live, "{blocks:?}");

    let report = clean_orphans_of(producer).unwrap();
    assert!(report.removed.is_empty(), "clean removed a queued item: {report:?}");

    let got = q.get_timeout(LONG.unwrap()).unwrap();
    assert!(got == item(), "the item came back damaged ({} bytes)", got.len());
    // Read: its block is gone.
    assert!(blocks_of(producer).is_empty(), "{:?}", blocks_of(producer));
}

#[test]
fn an_unread_item_is_cleaned_once_its_queue_is_gone() {
    let q: Queue<Vec<u8>> = Queue::new(0).unwrap();
    let producer = run_producer(&q);
    drop(q); // the last holder of the queue: nobody can read the item any more
    let blocks = blocks_of(producer);
    assert_eq!(blocks.len(), 1, "{blocks:?}");
    assert_eq!(blocks[0].state, BlockState::Orphaned, "{blocks:?}");
    let report = clean_orphans_of(producer).unwrap();
    assert_eq!(report.removed.len(), 1, "{report:?}");
    assert!(blocks_of(producer).is_empty());
}

/// Creates a block, hands its name over, disowns it and exits.
fn create_and_leave((conn,): (Connection,)) {
    let shm = SharedMemory::create(4096).unwrap();
    conn.send(&shm.name().to_string()).unwrap();
    let _: () = conn.recv_timeout(LONG.unwrap()).unwrap(); // the parent has attached
    shm.disown();
}

#[test]
fn a_block_still_mapped_by_a_live_process_is_not_cleaned() {
    let (mine, theirs) = pipe(true).unwrap();
    let child = Process::new(create_and_leave, (theirs,));
    child.start().unwrap();
    let name: String = mine.recv_timeout(LONG.unwrap()).unwrap();
    let attached = SharedMemory::attach(&name).unwrap();
    mine.send(&()).unwrap();
    let pid = child.pid().unwrap();
    child.join_timeout(LONG.unwrap()).unwrap();
    assert_eq!(child.exitcode(), Some(0));

    let report = clean_orphans_of(pid).unwrap();
    assert!(report.removed.is_empty(), "clean removed a block this process maps: {report:?}");
    attached.write_at(0, &[1]).unwrap();
    SharedMemory::attach(&name).unwrap(); // still there by name

    // Unmapped by everyone: now it is an orphan.
    drop(attached);
    let report = clean_orphans_of(pid).unwrap();
    assert_eq!(report.removed.len(), 1, "{report:?}");
    assert!(SharedMemory::attach(&name).is_err());
}
