//! Seed `002_bc33bbe47c6941d6.txt`, "Shared Value", "Basic Usage": two processes each
//! add 1 to a shared `Value('i', 0)` 100 000 times *without* a lock.
//!
//! `counter.value += 1` is a read and then a write; when the two processes interleave
//! between them, an increment is lost. Python prints `Counter: N` with N at most 200000
//! and often less ("May be less than 200000 — race condition!"); so does this port. See
//! `value_with_lock` and `value_builtin_lock` for the fix, or use the lock-free
//! `counter.fetch_add(1)`.

use multiproc::{Process, Value};

fn increment((shared_counter, n): (Value<i32>, u32)) {
    for _ in 0..n {
        shared_counter.set(shared_counter.get() + 1); // shared_counter.value += 1
    }
}

pub fn main() -> multiproc::Result<()> {
    // Type codes: 'i' = int (i32), 'd' = double (f64), 'c' = char (u8)
    let counter = Value::new(0_i32)?;

    let p1 = Process::new(increment, (counter.clone(), 100_000));
    let p2 = Process::new(increment, (counter.clone(), 100_000));

    p1.start()?;
    p2.start()?;
    p1.join()?;
    p2.join()?;

    println!("Counter: {}", counter.get());
    // May be less than 200000 — race condition!
    Ok(())
}
