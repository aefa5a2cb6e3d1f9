//! Seed `003_38f1b6a322a1f204.txt`, "Inter-Process Communication with Queue": a producer
//! and a consumer through a queue of at most 3 items, which makes the producer block.

use multiproc::queues::Queue;
use multiproc::Process;

fn producer((queue, items): (Queue<Option<i32>>, Vec<i32>)) {
    for item in items {
        println!("Producing {item}");
        queue.put(Some(item)).expect("put"); // This blocks if the queue is full
    }
    queue.put(None).expect("put"); // Sentinel value to signal completion
}

fn consumer(queue: Queue<Option<i32>>) {
    while let Some(item) = queue.get().expect("get") {
        println!("Consuming {item}");
    }
    println!("Consumer done.");
}

pub fn main() -> multiproc::Result<()> {
    let shared_queue = Queue::new(3)?; // Limit size to demonstrate blocking
    let prod = Process::new(producer, (shared_queue.clone(), vec![1, 2, 3, 4, 5]));
    let cons = Process::new(consumer, shared_queue);
    prod.start()?;
    cons.start()?;
    prod.join()?;
    cons.join()?;
    println!("Producer-consumer example finished.");
    Ok(())
}
