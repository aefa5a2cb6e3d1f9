//! Seed `002_bc33bbe47c6941d6.txt`, "Shared Array", "Concurrent Array Access": ten
//! processes each add 1 to every element of a shared `Array('i', [0, 0, 0, 0, 0])`,
//! holding a shared `Lock` for the whole pass.
//!
//! Python prints `[10, 10, 10, 10, 10]`.

use multiproc::synchronize::Lock;
use multiproc::{Array, Process};

fn increment_array((arr, lock, amount): (Array<i32>, Lock, i32)) {
    let _guard = lock.acquire().expect("acquire"); // with lock:
    for i in 0..arr.len() {
        let x = arr.get(i).expect("index in range");
        arr.set(i, x + amount).expect("index in range"); // arr[i] += amount
    }
}

pub fn main() -> multiproc::Result<()> {
    let arr = Array::from_values(&[0_i32, 0, 0, 0, 0])?;
    let lock = Lock::new()?;

    let mut processes = Vec::new();
    for _ in 0..10 {
        let p = Process::new(increment_array, (arr.clone(), lock.clone(), 1));
        p.start()?;
        processes.push(p);
    }

    for p in &processes {
        p.join()?;
    }

    println!("{:?}", arr.to_vec()); // [10, 10, 10, 10, 10]
    Ok(())
}
