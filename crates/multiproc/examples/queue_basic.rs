//! Seed `002_bc33bbe47c6941d6.txt`, "Basic Queue": a producer and a consumer process, with
//! `None` as the sentinel.

use multiproc::queues::Queue;
use multiproc::Process;

fn producer((q, items): (Queue<Option<i32>>, Vec<i32>)) {
    for item in items {
        q.put(Some(item)).expect("put");
        println!("Produced: {item}");
    }
    q.put(None).expect("put"); // Sentinel
}

fn consumer(q: Queue<Option<i32>>) {
    while let Some(item) = q.get().expect("get") {
        println!("Consumed: {item}");
    }
}

pub fn main() -> multiproc::Result<()> {
    let q = Queue::new(0)?;
    let p1 = Process::new(producer, (q.clone(), vec![1, 2, 3, 4, 5]));
    let p2 = Process::new(consumer, q);
    p1.start()?;
    p2.start()?;
    p1.join()?;
    p2.join()?;
    Ok(())
}
