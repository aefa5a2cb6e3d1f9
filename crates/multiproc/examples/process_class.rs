//! Seed `003_38f1b6a322a1f204.txt`, "The Process Class": two workers sleep 2 s and 1 s;
//! the parent joins both.

use std::time::Duration;

use multiproc::Process;

fn worker((name, delay): (String, u64)) {
    println!("Process {name} (PID: {}) started. Sleeping for {delay} seconds.", std::process::id());
    std::thread::sleep(Duration::from_secs(delay));
    println!("Process {name} finished.");
}

pub fn main() -> multiproc::Result<()> {
    let p1 = Process::new(worker, ("Process-1".to_string(), 2));
    let p2 = Process::new(worker, ("Process-2".to_string(), 1));
    p1.start()?;
    p2.start()?;
    p1.join()?;
    p2.join()?;
    println!("All processes have finished execution.");
    Ok(())
}
