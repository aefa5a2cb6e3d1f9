//! Seed `002_bc33bbe47c6941d6.txt`, "Manager for Complex Objects" / "Shared Namespace":
//! five processes do `ns.x += 1` and append `ns.x` to a managed list stored in the
//! namespace.
//!
//! As in Python, `ns.x += 1` is a read and then a write, two round trips to the server:
//! processes that interleave lose updates, so `x` may end below 5 and `items` may repeat
//! a number. What is certain: `items` has five entries, each between 1 and 5, and `x` is
//! at most 5. `Namespace::update` makes the increment atomic.

use multiproc::managers::{ListProxy, Namespace};
use multiproc::{Manager, Process};

fn worker(ns: Namespace) {
    let x: i64 = ns.get("x").expect("get x");
    ns.set("x", &(x + 1)).expect("set x");
    let items: ListProxy<i64> = ns.get("items").expect("get items");
    items.append(&ns.get::<i64>("x").expect("get x")).expect("append");
}

/// The lines the example prints.
pub fn lines() -> multiproc::Result<Vec<String>> {
    let manager = Manager::start()?;
    let ns = manager.namespace()?;
    ns.set("x", &0i64)?;
    ns.set("items", &manager.list::<i64>()?)?;

    let processes: Vec<Process> = (0..5).map(|_| Process::new(worker, ns.clone())).collect();
    for p in &processes {
        p.start()?;
    }
    for p in &processes {
        p.join()?;
    }

    let x: i64 = ns.get("x")?;
    let items = ns.get::<ListProxy<i64>>("items")?.to_vec()?;
    manager.shutdown()?;
    Ok(vec![format!("x = {x}"), format!("items = {items:?}")])
}

pub fn main() -> multiproc::Result<()> {
    for line in lines()? {
        println!("{line}");
    }
    Ok(())
}
