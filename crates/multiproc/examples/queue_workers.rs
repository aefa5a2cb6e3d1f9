//! Seed `000_65480d669051c820.txt`, "multiprocessing.Queue: Safe Task Passing": four
//! workers square tasks from one queue into another; `None` is the poison pill.

use std::time::Duration;

use multiproc::queues::Queue;
use multiproc::Process;

/// A task: (task id, value); `None` is the poison pill.
type Task = Option<(u32, u64)>;

fn worker((task_queue, result_queue): (Queue<Task>, Queue<(u32, u64)>)) {
    // Block until a task arrives; the sentinel (None) tells the worker to exit.
    while let Some((task_id, value)) = task_queue.get().expect("get") {
        result_queue.put((task_id, value * value)).expect("put");
    }
}

pub fn main() -> multiproc::Result<()> {
    let task_queue = Queue::new(0)?;
    let result_queue = Queue::new(0)?;
    let workers: Vec<Process> =
        (0..4).map(|_| Process::new(worker, (task_queue.clone(), result_queue.clone()))).collect();
    for w in &workers {
        w.start()?;
    }
    for (task_id, value) in [1, 2, 3, 4, 5].into_iter().enumerate() {
        task_queue.put(Some((task_id as u32, value)))?;
    }
    let mut results = Vec::new();
    for _ in 0..5 {
        results.push(result_queue.get_timeout(Duration::from_secs(60))?); // generous: a loaded machine may be slow
    }
    for _ in 0..4 {
        task_queue.put(None)?;
    }
    for w in &workers {
        w.join()?;
    }
    println!("{results:?}"); // [(0, 1), (1, 4), (2, 9), (3, 16), (4, 25)]
    Ok(())
}
