//! Seed `000_65480d669051c820.txt`, "Real-World Example: Producer-Consumer Pipeline":
//! producer → square → sum every 3 → print, four processes joined by three queues.

use std::time::Duration;

use multiproc::queues::Queue;
use multiproc::Process;

fn producer((queue, count): (Queue<Option<u64>>, u64)) {
    for i in 0..count {
        queue.put(Some(i)).expect("put");
        std::thread::sleep(Duration::from_millis(10));
    }
    queue.put(None).expect("put"); // Signal end
}

fn stage1((in_queue, out_queue): (Queue<Option<u64>>, Queue<Option<u64>>)) {
    while let Some(item) = in_queue.get().expect("get") {
        out_queue.put(Some(item * item)).expect("put");
    }
    out_queue.put(None).expect("put");
}

fn stage2((in_queue, out_queue): (Queue<Option<u64>>, Queue<Option<u64>>)) {
    let mut buffer = Vec::new();
    while let Some(item) = in_queue.get().expect("get") {
        buffer.push(item);
        if buffer.len() == 3 {
            out_queue.put(Some(buffer.iter().sum())).expect("put");
            buffer.clear();
        }
    }
    out_queue.put(None).expect("put");
}

fn consumer(queue: Queue<Option<u64>>) {
    while let Some(result) = queue.get().expect("get") {
        println!("Final result: {result}");
    }
}

pub fn main() -> multiproc::Result<()> {
    let queue_1 = Queue::new(0)?;
    let queue_2 = Queue::new(0)?;
    let queue_3 = Queue::new(0)?;
    let processes = [
        Process::new(producer, (queue_1.clone(), 10)),
        Process::new(stage1, (queue_1, queue_2.clone())),
        Process::new(stage2, (queue_2, queue_3.clone())),
        Process::new(consumer, queue_3),
    ];
    for p in &processes {
        p.start()?;
    }
    for p in &processes {
        p.join()?;
    }
    Ok(())
}
