//! Redis rows: a [`distributed::Queue`](multiproc::distributed::Queue) 1 → 1 with
//! `put_many`/`get_many`, and the cost per task of a
//! [`distributed::Pool`](multiproc::distributed::Pool) whose 2 worker processes run on
//! this machine (`multiproc worker --processes 2`); Python's RQ with 2 workers on the same
//! server in the same run, when `import rq` works in `python3`.
//!
//! The bench starts its own `redis-server` (`$REDIS_SERVER`, else the first on `PATH`, in
//! `/usr/bin` or `/usr/sbin`) on a free loopback port, without persistence, and stops it at
//! the end; without one, the rows are skipped with a note. Every sample uses names of its
//! own, so that nothing one leaves behind is seen by the next.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use multiproc::distributed::{Pool, Queue};

use super::measure::{pids_cpu, self_cpu, Sample};
use super::ours::BoxError;
use super::{mark, Floor, Row};

/// Which Redis workload a row runs.
#[derive(Clone, Copy, Debug)]
pub enum Op {
    /// `redis_queue_tput_64B`: items/s of 64-byte items, one producer thread's `put_many`
    /// to one consumer thread's `get_many(1024)`, each with its own handle.
    QueueTput64,
    /// `redis_pool_task_chunk1`: µs per task of `pool.chunksize(1).map("square", 0..n)`.
    PoolTaskChunk1,
    /// `redis_pool_task_default_chunk`: µs per task of `pool.map("square", 0..n)`.
    PoolTaskDefaultChunk,
}

/// The notes printed under the table when any of these rows ran.
pub const NOTES: &[&str] = &[
    "redis_*: through a redis-server the bench starts on loopback (no persistence). redis_queue_tput_64B:",
    "64-byte items, a producer thread's put_many (1024 per call) to a consumer thread's get_many(1024),",
    "each with its own handle; baseline: the same bytes as raw pipelined XADD (1024 per round trip) and",
    "XREADGROUP COUNT 1024 NOACK through the redis crate. redis_pool_task_*: µs per task of `square`",
    "through distributed::Pool.map with 2 local worker processes (`multiproc worker --processes 2`),",
    "chunksize 1 or the default (about 64 chunks), workers started and warmed up untimed; the CPython",
    "column is RQ: 2 `rq` workers (its default Worker, a forked work horse per job) on the same server,",
    "µs per trivial job from enqueue_many to the last job finished. CPU excludes redis-server's.",
];

/// Items put or taken per call of the queue row.
const BATCH: usize = 1024;
/// The longest one sample may wait for its items or results.
const SAMPLE_DEADLINE: Duration = Duration::from_secs(300);
/// How long a started server may take to answer PING.
const START_DEADLINE: Duration = Duration::from_secs(30);
/// The RQ side: the job function and the driver in one module.
const RQ_SCRIPT: &str = include_str!("redis_rq.py");

/// A `redis-server` of this run, killed and cleaned up when dropped.
pub struct Broker {
    child: Child,
    dir: PathBuf,
    url: String,
}

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The `redis-server` program: `$REDIS_SERVER`, else on `PATH`, in `/usr/bin` or `/usr/sbin`.
fn find_server() -> Option<PathBuf> {
    if let Some(program) = std::env::var_os("REDIS_SERVER").filter(|p| !p.is_empty()) {
        return Some(PathBuf::from(program)).filter(|p| p.is_file());
    }
    let mut dirs: Vec<PathBuf> =
        std::env::var_os("PATH").map(|p| std::env::split_paths(&p).collect()).unwrap_or_default();
    dirs.extend(["/usr/bin".into(), "/usr/sbin".into()]);
    dirs.into_iter().map(|d| d.join("redis-server")).find(|p| p.is_file())
}

impl Broker {
    /// Starts a server for the rows; `Ok(None)` when there is no `redis-server`.
    pub fn start() -> Result<Option<Broker>, BoxError> {
        let Some(program) = find_server() else { return Ok(None) };
        let mut failure = String::new();
        // A free port may be taken before the server binds it: a few tries.
        for _ in 0..5 {
            let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
            let dir = std::env::temp_dir()
                .join(format!("multiproc-bench-redis-{}-{port}", std::process::id()));
            std::fs::create_dir_all(&dir)?;
            let child = Command::new(&program)
                .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
                .args(["--save", "", "--appendonly", "no", "--protected-mode", "no"])
                .arg("--dir")
                .arg(&dir)
                .args(["--daemonize", "no", "--loglevel", "warning", "--logfile", ""])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .map_err(|e| format!("starting {}: {e}", program.display()))?;
            let mut broker = Broker { child, dir, url: format!("redis://127.0.0.1:{port}/0") };
            match broker.wait_ready(port) {
                Ok(()) => return Ok(Some(broker)),
                Err(why) => failure = why,
            }
        }
        Err(format!("redis-server did not start: {failure}").into())
    }

    /// Waits (bounded) until the server answers PING.
    fn wait_ready(&mut self, port: u16) -> Result<(), String> {
        let deadline = Instant::now() + START_DEADLINE;
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(format!("it exited with {status}"));
            }
            if ping(addr) {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(format!("no PONG on port {port} within {START_DEADLINE:?}"));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

/// Whether a server at `addr` answers PING with PONG (each step bounded).
fn ping(addr: SocketAddr) -> bool {
    let Ok(mut stream) = TcpStream::connect_timeout(&addr, Duration::from_millis(200)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_millis(500)));
    let mut reply = [0u8; 7];
    stream.write_all(b"PING\r\n").is_ok()
        && stream.read_exact(&mut reply).is_ok()
        && &reply == b"+PONG\r\n"
}

/// A name no earlier sample of this run used.
fn fresh_name(what: &str) -> String {
    static SAMPLES: AtomicU64 = AtomicU64::new(0);
    format!("bench:{}:{what}:{}", std::process::id(), SAMPLES.fetch_add(1, Ordering::Relaxed))
}

/// Our side of a row: `n` items or tasks.
pub fn ours(op: Op, n: u64, broker: &Broker) -> Result<Sample, BoxError> {
    match op {
        Op::QueueTput64 => queue_tput(n, &broker.url),
        Op::PoolTaskChunk1 => pool_tasks(n, Some(1), &broker.url),
        Op::PoolTaskDefaultChunk => pool_tasks(n, None, &broker.url),
    }
}

/// The floors of a row: the raw stream commands for the queue, none for the pool.
pub fn floors(op: Op, n: u64, broker: &Broker) -> Result<Vec<Floor>, BoxError> {
    Ok(match op {
        Op::QueueTput64 => vec![Floor::baseline(
            "the same bytes as raw XADD pipelined 1024 per round trip, taken by XREADGROUP COUNT \
             1024 NOACK (redis crate)",
            raw_stream_tput(n, &broker.url)?,
        )],
        Op::PoolTaskChunk1 | Op::PoolTaskDefaultChunk => Vec::new(),
    })
}

/// items/s of `n` 64-byte items through a [`Queue`], `put_many` → `get_many`.
fn queue_tput(n: u64, url: &str) -> Result<Sample, BoxError> {
    let name = fresh_name("queue");
    let producer: Queue<Vec<u8>> = Queue::connect(url, &name)?;
    let consumer: Queue<Vec<u8>> = producer.clone();
    // Connects both handles (and makes the stream) untimed.
    producer.put(vec![0; 64]).map_err(|e| e.to_string())?;
    consumer.get_timeout(SAMPLE_DEADLINE)?;
    let (t0, cpu0) = (Instant::now(), self_cpu());
    let putter = std::thread::spawn(move || -> Result<(), String> {
        let mut left = n;
        while left > 0 {
            let k = left.min(BATCH as u64);
            producer.put_many((0..k).map(|i| vec![i as u8; 64])).map_err(|e| e.to_string())?;
            left -= k;
        }
        Ok(())
    });
    let mut got = 0u64;
    let deadline = Instant::now() + SAMPLE_DEADLINE;
    while got < n {
        let left = deadline.saturating_duration_since(Instant::now());
        let batch = consumer
            .get_many_timeout(BATCH, left)
            .map_err(|e| format!("{got} of {n} items came, then {e}"))?;
        if batch.iter().any(|item| item.len() != 64) {
            return Err("an item of the wrong size came".into());
        }
        got += batch.len() as u64;
    }
    let secs = t0.elapsed().as_secs_f64();
    let cpu = self_cpu() - cpu0;
    putter.join().map_err(|_| "the producer panicked")??;
    cleanup(url, &[&name, &format!("{name}:room")]);
    Ok(Sample::new(n as f64 / secs, n, secs, Some(cpu)))
}

/// A raw connection to the bench's server, with a bounded reply time.
fn raw_connection(url: &str) -> Result<redis::Connection, BoxError> {
    let con = redis::Client::open(url)?.get_connection()?;
    con.set_read_timeout(Some(SAMPLE_DEADLINE))?;
    Ok(con)
}

/// items/s of `n` 64-byte entries as raw pipelined `XADD`s taken by `XREADGROUP … NOACK`.
fn raw_stream_tput(n: u64, url: &str) -> Result<Sample, BoxError> {
    let key = fresh_name("raw");
    let mut setup = raw_connection(url)?;
    redis::cmd("XGROUP")
        .arg("CREATE")
        .arg(&key)
        .arg("g")
        .arg("0")
        .arg("MKSTREAM")
        .query::<()>(&mut setup)?;
    let (t0, cpu0) = (Instant::now(), self_cpu());
    let putter = {
        let (url, key) = (url.to_string(), key.clone());
        std::thread::spawn(move || -> Result<(), String> {
            let mut con = raw_connection(&url).map_err(|e| e.to_string())?;
            let mut left = n;
            while left > 0 {
                let k = left.min(BATCH as u64);
                let mut pipe = redis::pipe();
                for i in 0..k {
                    pipe.cmd("XADD").arg(&key).arg("*").arg("d").arg(&[i as u8; 64][..]).ignore();
                }
                pipe.query::<()>(&mut con).map_err(|e| e.to_string())?;
                left -= k;
            }
            Ok(())
        })
    };
    let mut got = 0u64;
    while got < n {
        let reply: redis::Value = redis::cmd("XREADGROUP")
            .arg("GROUP")
            .arg("g")
            .arg("c")
            .arg("COUNT")
            .arg(BATCH)
            .arg("BLOCK")
            .arg(SAMPLE_DEADLINE.as_millis() as u64)
            .arg("NOACK")
            .arg("STREAMS")
            .arg(&key)
            .arg(">")
            .query(&mut setup)?;
        let taken = stream_entries(&reply);
        if taken == 0 {
            return Err(format!("{got} of {n} raw entries came, then none").into());
        }
        got += taken;
    }
    let secs = t0.elapsed().as_secs_f64();
    let cpu = self_cpu() - cpu0;
    putter.join().map_err(|_| "the raw producer panicked")??;
    let _ = redis::cmd("DEL").arg(&key).query::<()>(&mut setup);
    Ok(Sample::new(n as f64 / secs, n, secs, Some(cpu)))
}

/// The number of entries in an `XREADGROUP` reply (one stream).
fn stream_entries(reply: &redis::Value) -> u64 {
    let redis::Value::Array(streams) = reply else { return 0 };
    streams
        .iter()
        .map(|s| match s {
            redis::Value::Array(pair) => match pair.get(1) {
                Some(redis::Value::Array(entries)) => entries.len() as u64,
                _ => 0,
            },
            _ => 0,
        })
        .sum()
}

/// Deletes the keys a sample made (best effort).
fn cleanup(url: &str, keys: &[&str]) {
    if let Ok(mut con) = raw_connection(url) {
        let _ = redis::cmd("DEL").arg(keys).query::<()>(&mut con);
    }
}

/// `multiproc worker --processes 2` for the pool `name`, killed (with its processes, which
/// die with it) when dropped.
struct Workers(Child);

impl Workers {
    fn start(url: &str, name: &str) -> Result<Workers, BoxError> {
        let child = Command::new(std::env::current_exe()?)
            .args(["worker", "--redis", url, "--name", name, "--processes", "2"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?;
        Ok(Workers(child))
    }

    /// The supervising process and its worker processes.
    fn pids(&self) -> Vec<i32> {
        let pid = self.0.id() as i32;
        let children =
            std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")).unwrap_or_default();
        std::iter::once(pid)
            .chain(children.split_whitespace().filter_map(|p| p.parse().ok()))
            .collect()
    }
}

impl Drop for Workers {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// µs per task of `square` through a pool whose 2 local worker processes run it; CPU of
/// this process and of the workers meanwhile.
fn pool_tasks(n: u64, chunksize: Option<usize>, url: &str) -> Result<Sample, BoxError> {
    let name = fresh_name("pool");
    let workers = Workers::start(url, &name)?;
    let pool = Pool::connect(url, &name, crate::worker::registry())?;
    let map = |items: std::ops::Range<u64>| match chunksize {
        Some(k) => pool.chunksize(k).map::<u64, u64>("square", items),
        None => pool.map::<u64, u64>("square", items),
    };
    // Waits for both worker processes to take tasks, untimed.
    map(0..1000)?;
    let pids = workers.pids();
    let (t0, cpu0, workers0) = (Instant::now(), self_cpu(), pids_cpu(&pids));
    let out = map(0..n)?;
    let secs = t0.elapsed().as_secs_f64();
    let cpu = workers0.zip(pids_cpu(&pids)).map(|(a, b)| b - a + self_cpu() - cpu0);
    let last = n.checked_sub(1).map(|x| x.wrapping_mul(x));
    if out.len() as u64 != n || out.last().copied() != last {
        return Err(format!("the pool's map gave {} wrong results", out.len()).into());
    }
    drop(pool);
    drop(workers);
    let tasks = format!("{name}:tasks");
    cleanup(url, &[&tasks, &format!("{tasks}:room"), &format!("{tasks}:joined")]);
    Ok(Sample::new(secs * 1e6 / n as f64, n, secs, cpu))
}

/// RQ's side of a pool row: µs per trivial job with 2 workers, run by `python3` (the first
/// on `PATH`); `None` (with a line on stderr, once) when `import rq` fails there.
pub fn rq(n: u64, broker: &Broker) -> Option<Sample> {
    match rq_sample(n, &broker.url) {
        Ok(sample) => Some(sample),
        Err(why) => {
            static TOLD: std::sync::Once = std::sync::Once::new();
            TOLD.call_once(|| eprintln!("\nmultiproc bench: no RQ comparison: {why}"));
            None
        }
    }
}

fn rq_sample(n: u64, url: &str) -> Result<Sample, String> {
    let dir = std::env::temp_dir().join(format!("multiproc-bench-rq-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
    let script = dir.join("multiproc_bench_rq.py");
    std::fs::write(&script, RQ_SCRIPT).map_err(|e| format!("writing {}: {e}", script.display()))?;
    let out = Command::new("python3")
        .arg(&script)
        .args([url, &n.to_string(), &fresh_name("rq")])
        .env("PYTHONPATH", &dir)
        .stdin(Stdio::null())
        .output();
    let _ = std::fs::remove_dir_all(&dir);
    let out = out.map_err(|e| format!("running python3: {e}"))?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr);
        let last = stderr.lines().last().unwrap_or("").trim().to_string();
        return Err(if stdout.contains("no rq") || last.contains("No module named 'rq'") {
            "`import rq` fails in python3 (pip install rq)".to_string()
        } else {
            format!("the RQ run failed ({}): {last}", out.status)
        });
    }
    // `<seconds> <cpu seconds>` on the last line.
    let figures: Vec<f64> = stdout
        .lines()
        .last()
        .unwrap_or("")
        .split_whitespace()
        .filter_map(|f| f.parse().ok())
        .collect();
    let [secs, cpu] = figures[..] else { return Err(format!("the RQ run said {stdout:?}")) };
    Ok(Sample::new(secs * 1e6 / n as f64, n, secs, Some(cpu)))
}

/// The targets of these rows, checked against this run.
pub fn targets(rows: &[Row]) -> Vec<String> {
    let mut out = Vec::new();
    if let Some(r) = super::find_row(rows, "redis_queue_tput_64B") {
        out.push(format!(
            "[{}] Queue on Redis, put_many/get_many >= 200,000 items/s: {:.0} items/s",
            mark(r.multiproc >= 200_000.0),
            r.multiproc
        ));
    }
    if let Some(r) = super::find_row(rows, "redis_pool_task_default_chunk") {
        let per_s = 1e6 / r.multiproc;
        out.push(format!(
            "[{}] Pool on Redis, default chunk >= 50,000 tasks/s: {per_s:.0} tasks/s",
            mark(per_s >= 50_000.0)
        ));
        if let Some(rq) = r.cpython {
            let x = rq / r.multiproc;
            out.push(format!("[{}] Pool on Redis >= 20x RQ: {x:.0}x", mark(x >= 20.0)));
        }
    }
    out
}
