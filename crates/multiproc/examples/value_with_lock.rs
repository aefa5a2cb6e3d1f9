//! Seed `002_bc33bbe47c6941d6.txt`, "Shared Value", "With Lock (Thread-Safe)": two
//! processes each add 1 to a shared `Value('i', 0)` 100 000 times, each increment under
//! a separate shared `Lock`.
//!
//! Python prints `Counter: 200000`.

use multiproc::synchronize::Lock;
use multiproc::{Process, Value};

fn increment((shared_counter, lock, n): (Value<i32>, Lock, u32)) {
    for _ in 0..n {
        let _guard = lock.acquire().expect("acquire"); // with lock:
        shared_counter.set(shared_counter.get() + 1);
    }
}

pub fn main() -> multiproc::Result<()> {
    let counter = Value::new(0_i32)?;
    let lock = Lock::new()?;

    let p1 = Process::new(increment, (counter.clone(), lock.clone(), 100_000));
    let p2 = Process::new(increment, (counter.clone(), lock.clone(), 100_000));

    p1.start()?;
    p2.start()?;
    p1.join()?;
    p2.join()?;

    println!("Counter: {}", counter.get()); // Always 200000
    Ok(())
}
