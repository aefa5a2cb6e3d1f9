//! The classic distributed work queue (Python's `BaseManager` docs): a manager server on
//! TCP hosts two named queues, "jobs" and "results"; workers that know only the address
//! and the authkey connect, take jobs until a stop marker and put results.
//!
//! Here the workers are child processes on this machine; on other machines run the
//! server with `multiproc serve --bind 0.0.0.0:50000 --authkey-file key` and the same
//! worker code with that address.

use std::time::Duration;

use multiproc::Manager;

/// A worker: connects by address and authkey, squares numbers until it gets `None`.
fn worker((address, authkey): (String, Vec<u8>)) -> u32 {
    let manager = Manager::connect(&address, &authkey).expect("connect");
    let jobs = manager.queue_named::<Option<u64>>("jobs").expect("jobs");
    let results = manager.queue_named::<(u64, u64)>("results").expect("results");
    let mut done = 0;
    while let Some(n) = jobs.get_timeout(Duration::from_secs(30)).expect("get") {
        results.put((n, n * n)).expect("put");
        done += 1;
    }
    done
}

/// The lines the example prints.
pub fn lines() -> multiproc::Result<Vec<String>> {
    let manager = Manager::serve("127.0.0.1:0", b"work queue key")?;
    let jobs = manager.queue_named::<Option<u64>>("jobs")?;
    let results = manager.queue_named::<(u64, u64)>("results")?;
    for n in 1..=20 {
        jobs.put(Some(n))?;
    }
    let workers = (0..3)
        .map(|_| {
            multiproc::spawn(worker, (manager.address().to_string(), manager.authkey().to_vec()))
        })
        .collect::<multiproc::Result<Vec<_>>>()?;
    for _ in &workers {
        jobs.put(None)?;
    }
    let mut squares: Vec<(u64, u64)> = (0..20)
        .map(|_| results.get_timeout(Duration::from_secs(30)))
        .collect::<multiproc::Result<_>>()?;
    let mut jobs_done = 0;
    for w in workers {
        jobs_done += w.join()?;
    }
    squares.sort();
    let sum: u64 = squares.iter().map(|(_, s)| s).sum();
    manager.shutdown()?;
    Ok(vec![
        format!("{} results from 3 workers ({jobs_done} jobs done)", squares.len()),
        format!("first: {:?}, last: {:?}", squares[0], squares[19]),
        format!("sum of squares 1..=20 = {sum}"),
    ])
}

pub fn main() -> multiproc::Result<()> {
    for line in lines()? {
        println!("{line}");
    }
    Ok(())
}
