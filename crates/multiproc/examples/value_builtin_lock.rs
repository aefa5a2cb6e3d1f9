//! Seed `002_bc33bbe47c6941d6.txt`, "Shared Value", "Value with Built-in Lock": two
//! processes each add 1 to a shared `Value('i', 0)` 100 000 times under the value's own
//! lock, `get_lock()`.
//!
//! Python prints `Counter: 200000`.

use multiproc::{Process, Value};

fn increment((shared_counter, n): (Value<i32>, u32)) {
    for _ in 0..n {
        let _guard = shared_counter.get_lock().acquire().expect("acquire"); // with shared_counter.get_lock():
        shared_counter.set(shared_counter.get() + 1);
    }
}

pub fn main() -> multiproc::Result<()> {
    let counter = Value::new(0_i32)?; // Has built-in lock

    let p1 = Process::new(increment, (counter.clone(), 100_000));
    let p2 = Process::new(increment, (counter.clone(), 100_000));

    p1.start()?;
    p2.start()?;
    p1.join()?;
    p2.join()?;

    println!("Counter: {}", counter.get()); // Always 200000
    Ok(())
}
