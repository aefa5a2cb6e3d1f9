//! Seed `000_65480d669051c820.txt`, "Shared Memory: Ctypes Arrays and Values": a child
//! doubles every element of a shared `Array(c_int, [1, 2, 3, 4, 5])` and adds 10 to a
//! shared `Value(c_int, 0)`.
//!
//! Python prints `Before: array=[1, 2, 3, 4, 5], counter=0` and
//! `After: array=[2, 4, 6, 8, 10], counter=10`.

use multiproc::{Array, Process, Value};

fn worker((shared_array, shared_counter): (Array<i32>, Value<i32>)) {
    // Access array
    for i in 0..shared_array.len() {
        let x = shared_array.get(i).expect("index in range");
        shared_array.set(i, x * 2).expect("index in range");
    }
    // Increment counter
    shared_counter.set(shared_counter.get() + 10);
}

pub fn main() -> multiproc::Result<()> {
    // Shared array of integers
    let shared_array = Array::from_values(&[1_i32, 2, 3, 4, 5])?;
    // Shared integer counter
    let shared_counter = Value::new(0_i32)?;

    println!("Before: array={:?}, counter={}", shared_array.to_vec(), shared_counter.get());

    let p = Process::new(worker, (shared_array.clone(), shared_counter.clone()));
    p.start()?;
    p.join()?;

    // Output: After: array=[2, 4, 6, 8, 10], counter=10
    println!("After: array={:?}, counter={}", shared_array.to_vec(), shared_counter.get());
    Ok(())
}
