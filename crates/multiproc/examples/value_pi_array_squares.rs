//! Seed `001_83db91c6e1148748.txt`, "3. Shared Memory": a child sets `Value('d', 0.0)`
//! to 3.14159 and replaces each element of `Array('i', range(5))`.
//!
//! The seed's loop body reads `arr[i] = arr[i] 2`, an operator lost in formatting; its
//! stated output `[0, 1, 4, 9, 16]` is the squares, so the line was `arr[i] = arr[i] ** 2`
//! (`* 2` would give `[0, 2, 4, 6, 8]`). This port squares.
//!
//! Python prints `3.14159` and `[0, 1, 4, 9, 16]`.

use multiproc::{Array, Process, Value};

#[allow(clippy::approx_constant)] // the seed's own literal, printed back as such
fn f((num, arr): (Value<f64>, Array<i32>)) {
    num.set(3.14159);
    for i in 0..arr.len() {
        let x = arr.get(i).expect("index in range");
        arr.set(i, x.pow(2)).expect("index in range"); // arr[i] = arr[i] ** 2
    }
}

pub fn main() -> multiproc::Result<()> {
    let num = Value::new(0.0_f64)?;
    let arr = Array::from_iter(0..5_i32)?;
    let p = Process::new(f, (num.clone(), arr.clone()));
    p.start()?;
    p.join()?;
    println!("{:?}", num.get()); // Output: 3.14159
    println!("{:?}", arr.to_vec()); // Output: [0, 1, 4, 9, 16]
    Ok(())
}
