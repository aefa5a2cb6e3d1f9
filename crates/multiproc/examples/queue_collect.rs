//! Seed `002_bc33bbe47c6941d6.txt`, "Collecting Results with Queue": five processes each
//! put `(task_id, task_id ** 2)`; the parent drains the queue after joining them.

use std::collections::BTreeMap;

use multiproc::queues::Queue;
use multiproc::Process;

fn worker((task_id, q): (u32, Queue<(u32, u32)>)) {
    q.put((task_id, task_id.pow(2))).expect("put");
}

pub fn main() -> multiproc::Result<()> {
    let result_queue = Queue::new(0)?;
    let processes: Vec<Process> =
        (0..5).map(|i| Process::new(worker, (i, result_queue.clone()))).collect();
    for p in &processes {
        p.start()?;
    }
    for p in &processes {
        p.join()?;
    }
    // Unlike CPython's queue (a feeder thread and a pipe), an item is in the queue once
    // `put` returns, so after the joins `empty()` is reliable here.
    let mut results = BTreeMap::new();
    while !result_queue.empty() {
        let (task_id, result) = result_queue.get()?;
        results.insert(task_id, result);
    }
    let items: Vec<String> = results.iter().map(|(k, v)| format!("{k}: {v}")).collect();
    println!("{{{}}}", items.join(", ")); // {0: 0, 1: 1, 2: 4, 3: 9, 4: 16}
    Ok(())
}
