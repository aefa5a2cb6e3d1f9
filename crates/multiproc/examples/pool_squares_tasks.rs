//! Seed `000_65480d669051c820.txt`, "multiprocessing.Queue: Safe Task Passing": four
//! workers square `(task_id, value)` tasks, expressed with a [`Pool`] instead of two queues,
//! four processes and poison pills: `pool.map` hands out the tasks and collects the results
//! in task order.

use std::time::Duration;

use multiproc::pool::Pool;

/// A task: (task id, value) → (task id, value²), as the seed's worker computes it.
fn worker((task_id, value): (u32, u64)) -> (u32, u64) {
    (task_id, value * value)
}

pub fn main() -> multiproc::Result<()> {
    // Start 4 workers.
    let pool = Pool::new(4)?;
    // Send tasks and collect results.
    let tasks: Vec<(u32, u64)> =
        [1, 2, 3, 4, 5].into_iter().enumerate().map(|(id, v)| (id as u32, v)).collect();
    let results = pool.map(worker, tasks)?;
    // Let the workers stop, as the seed's poison pills do.
    pool.close();
    pool.join_timeout(Duration::from_secs(60))?; // generous: a loaded machine may be slow
    println!("{results:?}"); // [(0, 1), (1, 4), (2, 9), (3, 16), (4, 25)]
    Ok(())
}
