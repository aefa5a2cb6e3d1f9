//! Seed `002_bc33bbe47c6941d6.txt`, "Manager for Complex Objects" / "Shared Dictionary":
//! five processes each set one key of a managed dict.

use multiproc::managers::DictProxy;
use multiproc::{Manager, Process};

fn worker((shared_dict, key, value): (DictProxy<String, i64>, String, i64)) {
    shared_dict.set(&key, &value).expect("set");
}

/// The lines the example prints.
pub fn lines() -> multiproc::Result<Vec<String>> {
    let manager = Manager::start()?;
    let shared_dict = manager.dict::<String, i64>()?;

    let processes: Vec<Process> = (0..5i64)
        .map(|i| Process::new(worker, (shared_dict.clone(), format!("key_{i}"), i * i)))
        .collect();
    for p in &processes {
        p.start()?;
    }
    for p in &processes {
        p.join()?;
    }

    // Printed as Python prints a dict, in insertion order (the order the children ran).
    let entries: Vec<String> =
        shared_dict.items()?.iter().map(|(k, v)| format!("'{k}': {v}")).collect();
    manager.shutdown()?;
    // {'key_0': 0, 'key_1': 1, 'key_2': 4, 'key_3': 9, 'key_4': 16}
    Ok(vec![format!("{{{}}}", entries.join(", "))])
}

pub fn main() -> multiproc::Result<()> {
    for line in lines()? {
        println!("{line}");
    }
    Ok(())
}
