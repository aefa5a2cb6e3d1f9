//! Seed `001_83db91c6e1148748.txt`, "1. Queues": a child puts one message on a queue.

use multiproc::queues::Queue;
use multiproc::Process;

fn f(q: Queue<String>) {
    q.put("Hello from Process".to_string()).expect("put");
}

pub fn main() -> multiproc::Result<()> {
    let q = Queue::new(0)?;
    let p = Process::new(f, q.clone());
    p.start()?;
    println!("{}", q.get()?); // Output: Hello from Process
    p.join()?;
    Ok(())
}
