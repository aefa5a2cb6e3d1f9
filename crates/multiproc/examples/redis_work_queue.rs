//! The classic distributed work queue (Python's `BaseManager` docs, and
//! `manager_work_queue.rs` here), on Redis: a submitter puts jobs on the queue "jobs" and
//! reads squares from the queue "results"; workers on two other hosts, which know only the
//! server's URL, take jobs until a stop marker.
//!
//! `jobs` is a [`JoinableQueue`]: a job stays pending until its worker's `task_done`, and
//! one held by a worker that died is handed to another after the visibility timeout, so
//! no job is lost (one may run twice: squaring is idempotent). `results` is a plain
//! [`Queue`].
//!
//! Run it with a server's URL as the argument or in `REDIS_URL` (without one it says so
//! and does nothing):
//!
//! ```text
//! cargo run -p multiproc --features redis --example redis_work_queue -- redis://127.0.0.1:6379/0
//! ```
//!
//! Here the two hosts are child processes of this one, each with two worker threads; on
//! real machines run `… --example redis_work_queue -- URL worker` on each (it serves
//! until a stop marker or Ctrl-C) and `… -- URL submit N` where the jobs come from, with N
//! the number of workers to stop at the end.

use std::time::Duration;

use multiproc::distributed::{JoinableQueue, Queue};

/// The jobs: a number to square, or `None` to stop one worker.
const JOBS: &str = "work_queue:jobs";
/// The results: (host, number, square).
const RESULTS: &str = "work_queue:results";
/// Worker threads per host.
const THREADS: usize = 2;
/// How long the submitter waits for one result.
const RESULT_WAIT: Duration = Duration::from_secs(60);

/// One worker: squares numbers until it takes `None`; returns how many it squared.
fn worker(url: &str, host: &str) -> multiproc::Result<u32> {
    let jobs = JoinableQueue::<Option<u64>>::connect(url, JOBS)?;
    let results = Queue::<(String, u64, u64)>::connect(url, RESULTS)?;
    let mut done = 0;
    while let Some(n) = jobs.get()? {
        // The result is on its way before the job is marked done: a worker that dies in
        // between leaves the job to be run again, never lost.
        results.put((host.to_string(), n, n * n))?;
        jobs.task_done()?;
        done += 1;
    }
    jobs.task_done()?;
    Ok(done)
}

/// A worker host: `THREADS` workers, each with its own handles; the jobs they did.
fn host((url, host): (String, String)) -> u32 {
    let threads: Vec<_> = (0..THREADS)
        .map(|_| {
            let (url, host) = (url.clone(), host.clone());
            std::thread::spawn(move || worker(&url, &host).expect("worker"))
        })
        .collect();
    threads.into_iter().map(|t| t.join().expect("worker thread")).sum()
}

/// Puts the jobs `1..=count`, then one stop marker per worker, and collects the squares
/// (sorted by number); waits until every job is marked done.
fn submit(url: &str, count: u64, workers: usize) -> multiproc::Result<Vec<(String, u64, u64)>> {
    let jobs = JoinableQueue::<Option<u64>>::connect(url, JOBS)?;
    let results = Queue::<(String, u64, u64)>::connect(url, RESULTS)?;
    jobs.put_many((1..=count).map(Some))?;
    jobs.put_many((0..workers).map(|_| None))?;
    let mut squares = Vec::new();
    while squares.len() < count as usize {
        squares.push(results.get_timeout(RESULT_WAIT)?);
    }
    jobs.join_timeout(RESULT_WAIT)?;
    squares.sort_by_key(|(_, n, _)| *n);
    Ok(squares)
}

/// The lines the example prints, the workers' two hosts run as child processes.
pub fn lines(url: &str) -> multiproc::Result<Vec<String>> {
    let hosts = ["host-a", "host-b"]
        .map(|name| multiproc::spawn(host, (url.to_string(), name.to_string())));
    let hosts = hosts.into_iter().collect::<multiproc::Result<Vec<_>>>()?;
    let squares = submit(url, 20, hosts.len() * THREADS)?;
    let mut jobs_done = 0;
    for h in hosts {
        jobs_done += h.join()?;
    }
    let sum: u64 = squares.iter().map(|(_, _, s)| s).sum();
    let (_, n1, s1) = &squares[0];
    let (_, n20, s20) = &squares[19];
    Ok(vec![
        format!("{} results from 2 hosts ({jobs_done} jobs done)", squares.len()),
        format!("first: ({n1}, {s1}), last: ({n20}, {s20})"),
        format!("sum of squares 1..=20 = {sum}"),
    ])
}

/// The server's URL: the first argument, else `REDIS_URL`.
pub fn url_given(argument: Option<String>, env: Option<String>) -> Option<String> {
    let given = |u: &Option<String>| u.as_ref().is_some_and(|u| !u.is_empty());
    if given(&argument) {
        argument
    } else {
        env.filter(|u| !u.is_empty())
    }
}

pub fn main() -> multiproc::Result<()> {
    let mut args = std::env::args().skip(1);
    let Some(url) = url_given(args.next(), std::env::var("REDIS_URL").ok()) else {
        println!("no Redis server given (an argument, or REDIS_URL): nothing to do");
        return Ok(());
    };
    match args.next().as_deref() {
        Some("worker") => {
            let done = host((url, hostname()));
            println!("{done} jobs done");
        }
        Some("submit") => {
            let workers = args.next().and_then(|n| n.parse().ok()).unwrap_or(0);
            for (host, n, square) in submit(&url, 20, workers)? {
                println!("{n}² = {square} (on {host})");
            }
        }
        _ => {
            for line in lines(&url)? {
                println!("{line}");
            }
        }
    }
    Ok(())
}

/// This machine's name.
fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname").map_or("?".into(), |h| h.trim().into())
}
