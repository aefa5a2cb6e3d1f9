//! Seed `002_bc33bbe47c6941d6.txt`, "Shared Array", "Basic Array": a child fills a
//! shared `Array('d', 5)` with `start_value + i`.
//!
//! Python prints `[10.0, 11.0, 12.0, 13.0, 14.0]`.

use multiproc::{Array, Process};

fn fill_array((shared_array, start_value): (Array<f64>, f64)) {
    for i in 0..shared_array.len() {
        shared_array.set(i, start_value + i as f64).expect("index in range");
    }
}

pub fn main() -> multiproc::Result<()> {
    // 'd' = double, size 5
    let arr = Array::<f64>::new(5)?;

    let p = Process::new(fill_array, (arr.clone(), 10.0));
    p.start()?;
    p.join()?;

    println!("{:?}", arr.to_vec()); // [10.0, 11.0, 12.0, 13.0, 14.0]
    Ok(())
}
