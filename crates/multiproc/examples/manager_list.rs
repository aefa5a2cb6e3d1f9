//! Seed `002_bc33bbe47c6941d6.txt`, "Manager for Complex Objects" / "Shared List": five
//! processes append to a managed list.

use multiproc::managers::ListProxy;
use multiproc::{Manager, Process};

fn worker((shared_list, item): (ListProxy<i64>, i64)) {
    shared_list.append(&item).expect("append");
}

/// The lines the example prints.
pub fn lines() -> multiproc::Result<Vec<String>> {
    let manager = Manager::start()?;
    let shared_list = manager.list::<i64>()?;

    let processes: Vec<Process> =
        (0..5).map(|i| Process::new(worker, (shared_list.clone(), i))).collect();
    for p in &processes {
        p.start()?;
    }
    for p in &processes {
        p.join()?;
    }

    let items = shared_list.to_vec()?;
    manager.shutdown()?;
    Ok(vec![format!("{items:?}")]) // [0, 1, 2, 3, 4] (order may vary)
}

pub fn main() -> multiproc::Result<()> {
    for line in lines()? {
        println!("{line}");
    }
    Ok(())
}
