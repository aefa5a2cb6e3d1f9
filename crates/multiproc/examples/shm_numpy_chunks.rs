//! Seed `002_bc33bbe47c6941d6.txt`, "SharedMemory with NumPy": four workers each square
//! their own chunk of a shared float64 array of 1 000 000 elements, in place.
//!
//! Python: `arr = np.arange(1000000, dtype=np.float64)` copied into
//! `SharedMemory(create=True, size=arr.nbytes)`; each `Process(target=compute_in_place,
//! args=(shm.name, arr.shape, arr.dtype, start, end))` does `arr[start:end] **= 2`; it
//! prints `First 10: [ 0.  1.  4.  9. 16. 25. 36. 49. 64. 81.]`.

use multiproc::shared_memory::SharedMemory;
use multiproc::{Error, Process};

/// Process a slice of the shared array. Python passes `shm.name`; a `SharedMemory`
/// handle travels too (by name: the worker attaches, and never unlinks).
///
/// The other workers write their own chunks of the same block meanwhile, so a view of the
/// whole block (`as_mut_slice_of`) would alias their writes: this worker copies its chunk
/// out, squares it, and copies it back (two memcpys of its own chunk).
fn compute_in_place((shm, start, end): (SharedMemory, usize, usize)) {
    let mut chunk = vec![0.0f64; end - start];
    shm.read_slice_of(start, &mut chunk).expect("the chunk lies inside the block");
    for x in &mut chunk {
        *x = x.powi(2);
    }
    shm.write_slice_of(start, &chunk).expect("the chunk lies inside the block");
}

pub fn main() -> multiproc::Result<()> {
    let size = 1_000_000;

    // Create shared memory holding arange(size)
    let mut shm = SharedMemory::create(size * size_of::<f64>())?;
    // SAFETY: no other handle on the new block exists yet (the workers start below,
    // after this view is gone), so nothing else touches it while the view lives.
    for (i, x) in unsafe { shm.as_mut_slice_of::<f64>()? }.iter_mut().enumerate() {
        *x = i as f64;
    }

    // Process in parallel
    let num_workers = 4;
    let chunk_size = size / num_workers;
    let mut processes = Vec::new();
    for i in 0..num_workers {
        let start = i * chunk_size;
        let end = if i < num_workers - 1 { start + chunk_size } else { size };
        // The creator keeps its own handle until the workers have attached.
        let p = Process::new(compute_in_place, (shm.try_clone()?, start, end));
        p.start()?;
        processes.push(p);
    }
    for p in &processes {
        p.join()?;
        if p.exitcode() != Some(0) {
            return Err(Error::ProcessFailed {
                pid: p.pid().unwrap_or(0),
                exitcode: p.exitcode().unwrap_or(-1),
                message: p.panic_message().unwrap_or_else(|| "the worker failed".into()),
            });
        }
    }

    let mut first = [0.0f64; 10];
    shm.read_slice_of(0, &mut first)?;
    // First 10: [ 0.  1.  4.  9. 16. 25. 36. 49. 64. 81.]
    println!("First 10: {}", numpy_str(&first));

    shm.close()?; // the creator closes and unlinks (Python: shm.close(); shm.unlink())
    Ok(())
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
