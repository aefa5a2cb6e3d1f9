//! Seed `002_bc33bbe47c6941d6.txt`, "Collecting Results with Queue": five workers each
//! square their task id and the parent collects `{task_id: result}`. With a [`Pool`],
//! `pool.map` does the distributing and the collecting, and keeps the input order.

use std::collections::BTreeMap;

use multiproc::pool::Pool;

/// The seed's worker: `task_id ** 2`.
fn worker(task_id: u64) -> u64 {
    task_id * task_id
}

pub fn main() -> multiproc::Result<()> {
    let pool = Pool::builder().build()?;
    let results = pool.map(worker, 0..5)?;
    println!("{results:?}"); // [0, 1, 4, 9, 16]
                             // The seed's dictionary of results by task id.
    let by_task: BTreeMap<u64, u64> = (0..5).zip(results).collect();
    println!("{by_task:?}"); // {0: 0, 1: 1, 2: 4, 3: 9, 4: 16}
    Ok(())
}
