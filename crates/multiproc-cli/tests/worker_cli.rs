//! `multiproc worker` runs the tasks of a `distributed::Pool` whose registry matches the
//! command's own (`square`, `sleep_ms`, `echo`), against a real `redis-server` the test
//! starts (skipped with a line on stderr without one; a failure under CI=true).

#[path = "../../multiproc/tests/common/mod.rs"]
mod common;

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::redis::RedisServer;
use multiproc::distributed::{Pool, Registry};

const BINARY: &str = "worker_cli";

fn square(x: u64) -> u64 {
    x.wrapping_mul(x)
}

fn sleep_ms(ms: u64) -> u64 {
    std::thread::sleep(Duration::from_millis(ms));
    ms
}

fn echo(s: String) -> String {
    s
}

/// The same names and types as the command's registry, so the same identity.
fn registry() -> Registry {
    Registry::new().task("square", square).task("sleep_ms", sleep_ms).task("echo", echo)
}

/// The worker command, killed (with its processes, which die with it) when dropped.
struct WorkerCommand(Child);

impl Drop for WorkerCommand {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn multiproc_worker_runs_a_pools_tasks() {
    let Some(server) = RedisServer::start(BINARY, "multiproc_worker_runs_a_pools_tasks") else {
        return;
    };
    let child = Command::new(env!("CARGO_BIN_EXE_multiproc"))
        .args(["worker", "--redis", &server.url(), "--name", "cli", "--processes", "2"])
        .stdin(Stdio::null())
        .spawn()
        .expect("run multiproc worker");
    let _worker = WorkerCommand(child);
    let pool = Pool::connect(&server.url(), "cli", registry()).unwrap();
    let squares: Vec<u64> = (0..100u64).map(|x| x * x).collect();
    assert_eq!(pool.map::<u64, u64>("square", 0..100).unwrap(), squares);
    let r = pool.apply_async::<String, String>("echo", "hi".into()).unwrap();
    assert_eq!(r.get_timeout(Duration::from_secs(60)).unwrap(), "hi");
    assert_eq!(pool.chunksize(1).map::<u64, u64>("sleep_ms", [1, 2, 3]).unwrap(), [1, 2, 3]);
}

#[test]
fn multiproc_worker_rejects_a_bad_url() {
    let out = Command::new(env!("CARGO_BIN_EXE_multiproc"))
        .args(["worker", "--redis", "nonsense://x", "--processes", "1"])
        .output()
        .expect("run multiproc worker");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("redis URL"), "{stderr}");
}

fn multiproc(args: &[String]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_multiproc")).args(args).output().expect("run multiproc")
}

#[test]
fn multiproc_dead_lists_requeues_and_removes_dead_letters() {
    let Some(server) =
        RedisServer::start(BINARY, "multiproc_dead_lists_requeues_and_removes_dead_letters")
    else {
        return;
    };
    let url = server.url();
    let base = ["dead", "--redis", url.as_str(), "--queue", "q"];
    let with =
        |more: &[&str]| -> Vec<String> { base.iter().chain(more).map(|s| s.to_string()).collect() };
    let out = multiproc(&with(&["list"]));
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("0 dead letters in q:dead"));

    // One item that dies: taken by a consumer that gives up on it once, then reclaimed.
    let q = multiproc::distributed::JoinableQueue::<u32>::builder(&url, "q")
        .visibility_timeout(Duration::from_millis(1))
        .max_deliveries(1)
        .build()
        .unwrap();
    q.put(7).unwrap();
    assert_eq!(q.get().unwrap(), 7);
    let other = q.clone();
    let dead = multiproc::distributed::DeadLetters::connect(&url, "q").unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while dead.is_empty().unwrap() {
        assert!(std::time::Instant::now() < deadline, "the item never died");
        let _ = other.get_timeout(Duration::from_millis(20));
    }
    let id = dead.list(1).unwrap().remove(0).id;

    let out = multiproc(&with(&["list"]));
    let listed = String::from_utf8_lossy(&out.stdout);
    assert!(listed.contains("1 dead letters") && listed.contains(&id), "{listed}");
    let out = multiproc(&with(&["requeue", &id]));
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(dead.is_empty().unwrap());
    assert_eq!(other.get_timeout(Duration::from_secs(60)).unwrap(), 7);
    other.task_done().unwrap();
    let out = multiproc(&with(&["remove", &id]));
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no dead letter"));
    let out = multiproc(&with(&["requeue", "--all"]));
    assert!(String::from_utf8_lossy(&out.stdout).contains("requeued 0"));
}
