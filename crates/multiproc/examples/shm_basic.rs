//! Seed `002_bc33bbe47c6941d6.txt`, "Basic SharedMemory": a child attaches to a block by
//! name and doubles, in place, the float64 array that its parent put there.
//!
//! Python: `shm = SharedMemory(create=True, size=arr.nbytes)`, a NumPy array on `shm.buf`,
//! `Process(target=worker, args=(shm.name, arr.shape, arr.dtype))`; it prints
//! `Before: [1. 2. 3. 4. 5.]` and `After: [ 2.  4.  6.  8. 10.]` (NumPy pads every element
//! to the same width).

use multiproc::shared_memory::SharedMemory;
use multiproc::{Error, Process};

fn worker((shm_name, len): (String, usize)) {
    // Attach to existing shared memory: a float64 view of it, no copy.
    let mut existing_shm = SharedMemory::attach(&shm_name).expect("attach");
    // SAFETY: while this view lives nothing else touches the block: the parent only
    // waits in `join` (it reads the block after this process has exited), no other
    // process knows the block, and this process has no other handle on it.
    let view = unsafe { existing_shm.as_mut_slice_of::<f64>() }.expect("a float64 view");
    let array = &mut view[..len];
    // Modify array: array[:] = array * 2
    for x in array.iter_mut() {
        *x *= 2.0;
    }
    existing_shm.close().expect("close"); // only attached: the block stays
}

pub fn main() -> multiproc::Result<()> {
    // Create array in shared memory
    let arr = [1.0f64, 2.0, 3.0, 4.0, 5.0];
    let shm = SharedMemory::create(size_of_val(&arr))?;
    shm.write_slice_of(0, &arr)?; // shared_arr[:] = arr[:]

    println!("Before: {}", numpy_str(&shm.to_vec_of::<f64>()?)); // Before: [1. 2. 3. 4. 5.]

    let p = Process::new(worker, (shm.name().to_string(), arr.len()));
    p.start()?;
    p.join()?;
    check(&p)?;

    println!("After: {}", numpy_str(&shm.to_vec_of::<f64>()?)); // After: [ 2.  4.  6.  8. 10.]

    shm.close()?; // the creator closes and unlinks (Python: shm.close(); shm.unlink())
    Ok(())
}

/// An error unless the child exited with 0.
fn check(p: &Process) -> multiproc::Result<()> {
    match p.exitcode() {
        Some(0) => Ok(()),
        code => Err(Error::ProcessFailed {
            pid: p.pid().unwrap_or(0),
            exitcode: code.unwrap_or(-1),
            message: p.panic_message().unwrap_or_else(|| "the worker failed".into()),
        }),
    }
}

/// What `print(array)` shows for a float64 NumPy array with the default print options
/// (positional notation; NumPy switches to exponents for values >= 1e8 or < 1e-4, which
/// these examples never print): up to 8 decimals, integers as `2.`, every element padded
/// to the same width.
fn numpy_str(values: &[f64]) -> String {
    let parts: Vec<(String, String)> = values
        .iter()
        .map(|v| {
            let text = if v.fract() == 0.0 {
                format!("{v:.0}.")
            } else {
                let t = format!("{v:.8}");
                let shortest = format!("{v}");
                if shortest.len() < t.len() {
                    shortest
                } else {
                    t.trim_end_matches('0').to_string()
                }
            };
            let (int, frac) = text.split_once('.').unwrap_or((&text, ""));
            (int.to_string(), frac.to_string())
        })
        .collect();
    let int_width = parts.iter().map(|(i, _)| i.len()).max().unwrap_or(0);
    let frac_width = parts.iter().map(|(_, f)| f.len()).max().unwrap_or(0);
    let cells: Vec<String> =
        parts.iter().map(|(i, f)| format!("{i:>int_width$}.{f:<frac_width$}")).collect();
    format!("[{}]", cells.join(" "))
}
