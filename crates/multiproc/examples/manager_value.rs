//! Seed `002_bc33bbe47c6941d6.txt`, "Manager Performance Warning": `manager.Value('i', 0)`,
//! a counter proxied through the manager's server, updated by a child.

use multiproc::managers::ValueProxy;
use multiproc::{Manager, Process};

fn child(counter: ValueProxy<i32>) {
    // Proxied access: every call is a round trip to the server process.
    counter.update(|v| v + 1).expect("update");
}

/// The lines the example prints.
pub fn lines() -> multiproc::Result<Vec<String>> {
    let manager = Manager::start()?;
    let counter = manager.value(0i32)?; // Proxied access
    let mut out = vec![counter.get()?.to_string()];
    let p = Process::new(child, counter.clone());
    p.start()?;
    p.join()?;
    out.push(counter.get()?.to_string());
    manager.shutdown()?;
    Ok(out) // 0, then 1
}

pub fn main() -> multiproc::Result<()> {
    for line in lines()? {
        println!("{line}");
    }
    Ok(())
}
