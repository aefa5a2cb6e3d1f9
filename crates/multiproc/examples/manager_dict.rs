//! Seed `001_83db91c6e1148748.txt`, "4. Managers": a child sets a key of a managed dict.

use multiproc::managers::DictProxy;
use multiproc::{Error, Manager, Process};

fn f((d, key): (DictProxy<String, String>, String)) {
    d.set(&key, "Hello from Process").expect("set");
}

/// The lines the example prints.
pub fn lines() -> multiproc::Result<Vec<String>> {
    let manager = Manager::start()?;
    let d = manager.dict::<String, String>()?;
    let p = Process::new(f, (d.clone(), "greeting".to_string()));
    p.start()?;
    p.join()?;
    if let Some(message) = p.panic_message() {
        return Err(Error::Remote(message));
    }
    let greeting = d.get("greeting")?.unwrap_or_default();
    manager.shutdown()?;
    Ok(vec![greeting]) // Output: Hello from Process
}

pub fn main() -> multiproc::Result<()> {
    for line in lines()? {
        println!("{line}");
    }
    Ok(())
}
