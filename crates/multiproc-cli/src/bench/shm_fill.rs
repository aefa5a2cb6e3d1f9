//! The `shm_fill` row: filling a shared memory block with f64s through the safe bulk fill
//! (`SharedMemory::fill_of::<f64>`), against CPython's fastest stdlib way to do the same
//! to a `multiprocessing.shared_memory.SharedMemory`, and a private buffer.

use std::hint::black_box;
use std::time::Instant;

use multiproc::shared_memory::SharedMemory;

use super::measure::{self_cpu, Sample};
use super::ours::BoxError;

/// The value written (not a repeated byte, so no memset shortcut applies).
const FILL: f64 = 1.5;

/// What the table's notes say about this row.
pub const NOTES: &[&str] = &[
    "shm_fill: multiproc fills a 64 MiB block with fill_of::<f64> (safe; no view); CPython (stdlib",
    "only) assigns a prebuilt array('d') to shm.buf.cast('d')[:], its fastest way (a memcpy: it also",
    "reads 64 MiB); floor = slice::fill of a private Vec<f64> of the same size. Page faults untimed.",
];

/// GB/s of filling a fresh `size`-byte block with f64s, `reps` times (after one untimed
/// fill, so that page faults are not timed).
pub fn ours(reps: u64, size: usize) -> Result<Sample, BoxError> {
    let shm = SharedMemory::create(size)?;
    shm.fill_of::<f64>(.., 0.0)?;
    let (t0, cpu0) = (Instant::now(), self_cpu());
    for _ in 0..reps {
        black_box(&shm).fill_of::<f64>(.., black_box(FILL))?;
    }
    let (secs, cpu) = (t0.elapsed().as_secs_f64(), self_cpu() - cpu0);
    let last = size / 8 - 1;
    if shm.read_volatile::<f64>(0)? != FILL || shm.read_volatile::<f64>(last)? != FILL {
        return Err("the block does not hold the value written".into());
    }
    shm.close()?;
    Ok(Sample::new((reps * size as u64) as f64 / secs / 1e9, reps, secs, Some(cpu)))
}

/// The floor: the same fill of a private buffer.
pub fn floor(reps: u64, size: usize) -> f64 {
    let mut buf = vec![0f64; size / 8];
    buf.fill(0.0); // touch every page before timing
    let t0 = Instant::now();
    for _ in 0..reps {
        black_box(&mut buf[..]).fill(black_box(FILL));
    }
    let elapsed = t0.elapsed();
    (reps * size as u64) as f64 / elapsed.as_secs_f64() / 1e9
}

/// The request for `cpython_side.py`'s `shm_fill`.
pub fn cpython_request(reps: u64, size: usize) -> (&'static str, serde_json::Value) {
    ("shm_fill", serde_json::json!({"reps": reps, "size": size}))
}
