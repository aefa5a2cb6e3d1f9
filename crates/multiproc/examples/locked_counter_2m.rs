//! Seed `000_65480d669051c820.txt`, "Shared Memory: Ctypes Arrays and Values",
//! `safe_increment`: two processes each add 1 to a shared `Value(c_int, 0)` a million
//! times, each increment under a shared `Lock`.
//!
//! Python prints `Final counter: 2000000`.

use multiproc::synchronize::Lock;
use multiproc::{Process, Value};

/// SAFE: the lock protects the shared value.
fn safe_increment((counter, lock): (Value<i32>, Lock)) {
    for _ in 0..1_000_000 {
        let _guard = lock.acquire().expect("acquire");
        counter.set(counter.get() + 1);
    }
}

pub fn main() -> multiproc::Result<()> {
    let counter = Value::new(0_i32)?;
    let lock = Lock::new()?;

    let p1 = Process::new(safe_increment, (counter.clone(), lock.clone()));
    let p2 = Process::new(safe_increment, (counter.clone(), lock.clone()));

    p1.start()?;
    p2.start()?;
    p1.join()?;
    p2.join()?;

    println!("Final counter: {}", counter.get()); // Should be 2,000,000
    Ok(())
}
