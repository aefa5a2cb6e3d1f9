//! Seed `002_bc33bbe47c6941d6.txt`, "Shared Array", "Initialize with Values": an
//! `Array('i', [1, 2, 3, 4, 5])` and a zero-filled `Array('d', 10)`.
//!
//! Python prints `[1, 2, 3, 4, 5]` and
//! `[0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0]` (the seed abbreviates the second).

use multiproc::Array;

pub fn main() -> multiproc::Result<()> {
    // Initialize with values
    let arr1 = Array::from_values(&[1_i32, 2, 3, 4, 5])?;
    println!("{:?}", arr1.to_vec()); // [1, 2, 3, 4, 5]

    // Initialize with size (zeros)
    let arr2 = Array::<f64>::new(10)?;
    println!("{:?}", arr2.to_vec()); // [0.0, 0.0, ..., 0.0]
    Ok(())
}
