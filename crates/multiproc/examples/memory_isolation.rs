//! Seed `002_bc33bbe47c6941d6.txt`, "The Challenge: Memory Isolation": two children each
//! add 100 000 to their own copy of a global counter; the parent's stays 0.

use std::sync::atomic::{AtomicU64, Ordering};

use multiproc::{Process, StartMethod};

static COUNTER: AtomicU64 = AtomicU64::new(0);

fn increment(_: ()) {
    for _ in 0..100_000 {
        COUNTER.fetch_add(1, Ordering::Relaxed);
    }
}

pub fn main() -> multiproc::Result<()> {
    // Fork makes the point sharpest: the child starts as a copy of this very memory.
    let p1 = Process::builder(increment, ()).start_method(StartMethod::Fork).build();
    let p2 = Process::new(increment, ());
    p1.start()?;
    p2.start()?;
    p1.join()?;
    p2.join()?;
    println!("Counter: {}", COUNTER.load(Ordering::Relaxed)); // Still 0!
    Ok(())
}
