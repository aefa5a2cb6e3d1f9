//! `multiproc::distributed::Pool` and `Worker` on a real `redis-server` that each test
//! starts on a free port (and kills when it ends), with workers as real processes. Without
//! `redis-server` these tests skip with a line on stderr, and fail under CI=true.
//!
//! Every wait is bounded and waits for a state the test can observe (a result, a pending
//! count or a stream's length in the server), never for a sleep to be enough.

mod common;

use std::time::{Duration, Instant};

use common::redis::RedisServer;
use multiproc::distributed::{DeadLetters, Pool, Registry, Task, Worker};
use multiproc::{Error, Process};

const BINARY: &str = "redis_pool";
/// The bound on any state a test waits for.
const STATE_DEADLINE: Duration = Duration::from_secs(60);
/// The pool name of every test (each test has a server of its own).
const NAME: &str = "work";

fn server(test: &str) -> Option<RedisServer> {
    RedisServer::start(BINARY, test)
}

/// Names the `redis-server` these tests use, or (outside CI) says that they were skipped.
#[test]
fn redis_server() {
    if let Some(program) = common::redis::require(BINARY) {
        eprintln!("{BINARY}: redis-server is {}", program.display());
    }
}

fn square(x: u64) -> u64 {
    x * x
}

/// `square` with its types: calls through it need no annotations.
const SQUARE: Task<u64, u64> = Task::new("square");

fn add((a, b): (u64, u64)) -> u64 {
    a + b
}

fn echo(s: String) -> String {
    s
}

/// Squares after 20 ms (a task long enough to be caught running).
fn slow_square(x: u64) -> u64 {
    std::thread::sleep(Duration::from_millis(20));
    x * x
}

/// Creates the file `path`: whether a task ran is visible from outside.
fn mark(path: String) -> bool {
    std::fs::write(path, b"ran").is_ok()
}

/// Fails (a panic) on odd numbers.
fn even_only(x: u64) -> u64 {
    assert!(x % 2 == 0, "odd: {x}");
    x
}

/// Kills the worker process that runs it.
fn die(_: u64) -> u64 {
    std::process::abort()
}

/// The registry of the workers (and of the submitters that match them).
fn registry() -> Registry {
    Registry::new()
        .register(SQUARE, square)
        .task("add", add)
        .task("echo", echo)
        .task("slow_square", slow_square)
        .task("mark", mark)
        .task("die", die)
        .task("even_only", even_only)
}

/// A worker host in a process of its own: `(url, processes, visibility ms, max deliveries)`.
fn run_worker((url, processes, visibility_ms, max_deliveries): (String, usize, u64, u64)) {
    let err = Worker::new(&url, NAME, registry())
        .processes(processes)
        .visibility_timeout(Duration::from_millis(visibility_ms))
        .max_deliveries(max_deliveries)
        .run()
        .unwrap_err();
    panic!("the worker stopped: {err}");
}

/// Starts a worker host (killed when the handle is dropped; its processes die with it).
fn start_worker(server: &RedisServer, processes: usize, visibility_ms: u64, max: u64) -> Process {
    Process::builder(run_worker, (server.url(), processes, visibility_ms, max))
        .daemon(true)
        .kill_on_drop(true)
        .start()
        .expect("start a worker host")
}

/// A plain connection for looking into the server.
fn raw(server: &RedisServer) -> redis::Connection {
    let client = redis::Client::open(server.url()).expect("client");
    let con = client.get_connection_with_timeout(Duration::from_secs(5)).expect("connect");
    con.set_read_timeout(Some(Duration::from_secs(10))).expect("read timeout");
    con
}

fn xlen(con: &mut redis::Connection, key: &str) -> i64 {
    redis::cmd("XLEN").arg(key).query(con).expect("XLEN")
}

/// How many tasks are delivered and not acknowledged.
fn pending_tasks(con: &mut redis::Connection) -> i64 {
    let reply: redis::Value = redis::cmd("XPENDING")
        .arg("work:tasks")
        .arg("multiproc")
        .query(con)
        .unwrap_or(redis::Value::Nil);
    match reply {
        redis::Value::Array(items) => match items.first() {
            Some(redis::Value::Int(n)) => *n,
            _ => 0,
        },
        _ => 0,
    }
}

/// Waits (bounded) until `check` holds; panics naming `what` otherwise.
fn wait_for(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + STATE_DEADLINE;
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn stop(worker: Process) {
    worker.kill().unwrap();
    assert_eq!(worker.join_timeout(STATE_DEADLINE).unwrap().signal(), Some(9));
}

/// A pool and its results can be shared with and sent to other threads.
#[test]
fn pools_and_results_are_send_and_sync() {
    use std::marker::PhantomData;
    fn send_sync<T: Send + Sync>(_: PhantomData<T>) -> bool {
        true
    }
    assert!(send_sync(PhantomData::<Pool>));
    assert!(send_sync(PhantomData::<multiproc::distributed::AsyncResult<Vec<u64>>>));
    assert!(send_sync(PhantomData::<Registry>));
}

#[test]
fn map_imap_starmap_and_apply_async_return_every_result_in_order() {
    let Some(server) = server("map_imap_starmap_and_apply_async_return_every_result_in_order")
    else {
        return;
    };
    let worker = start_worker(&server, 2, 30_000, 5);
    let pool = Pool::connect(&server.url(), NAME, registry()).unwrap();
    let squares: Vec<u64> = (0..300u64).map(|x| x * x).collect();

    assert_eq!(pool.map::<u64, u64>("square", 0..300).unwrap(), squares);
    assert_eq!(pool.chunksize(7).map::<u64, u64>("square", 0..300).unwrap(), squares);
    assert_eq!(pool.map::<u64, u64>("square", []).unwrap(), Vec::<u64>::new());
    assert_eq!(pool.starmap::<_, u64>("add", [(1u64, 2u64), (3, 4)]).unwrap(), [3, 7]);
    assert_eq!(pool.chunksize(1).starmap::<_, u64>("add", [(5u64, 5u64)]).unwrap(), [10]);

    let ordered: Vec<u64> =
        pool.imap("square", 0..100u64).unwrap().collect::<Result<_, _>>().unwrap();
    assert_eq!(ordered, squares[..100]);
    let chunked: Vec<u64> =
        pool.chunksize(9).imap("square", 0..100u64).unwrap().collect::<Result<_, _>>().unwrap();
    assert_eq!(chunked, squares[..100]);
    // More than the window of tasks in flight: the input is taken as results are consumed.
    let long: Vec<u64> = pool.imap("square", 0..150u64).unwrap().collect::<Result<_, _>>().unwrap();
    assert_eq!(long, squares[..150]);
    let mut unordered: Vec<u64> = pool
        .chunksize(3)
        .imap_unordered("square", 0..100u64)
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    unordered.sort_unstable();
    assert_eq!(unordered, squares[..100]);

    let r = pool.apply_async::<String, String>("echo", "hello".into()).unwrap();
    assert_eq!(r.get_timeout(STATE_DEADLINE).unwrap(), "hello");
    assert!(r.ready());
    assert!(matches!(r.get(), Err(Error::ProcessState(_))));
    let m = pool.map_async::<u64, u64>("square", [2, 3]).unwrap();
    wait_for("map_async to be ready", || m.ready());
    assert_eq!(m.try_get().unwrap(), [4, 9]);
    assert_eq!(pool.apply::<u64, u64>("square", 12).unwrap(), 144);
    // A task that panics is that item's error; the worker goes on.
    let mut it = pool.imap::<_, u64, _>("even_only", [2u64, 3, 4]).unwrap();
    assert_eq!(it.next().unwrap().unwrap(), 2);
    let err = it.next().unwrap().unwrap_err();
    assert!(
        matches!(&err, Error::Task(m) if m.contains("panicked") && m.contains("odd: 3")),
        "{err}"
    );
    assert_eq!(it.next().unwrap().unwrap(), 4);
    assert!(it.next().is_none());
    assert!(matches!(pool.map::<u64, u64>("even_only", [0, 1]), Err(Error::Task(_))));
    // Through a `Task`, the types come with the name.
    assert_eq!(pool.map(SQUARE, 0..300).unwrap(), squares);
    assert_eq!(pool.apply(SQUARE, 11).unwrap(), 121);
    let typed: Vec<u64> = pool.imap(SQUARE, 0..5).unwrap().collect::<Result<_, _>>().unwrap();
    assert_eq!(typed, squares[..5]);

    // Asked wrongly: an error at once, nothing submitted.
    assert!(matches!(pool.map::<u64, String>("square", [1]), Err(Error::InvalidArgument(_))));
    assert!(matches!(pool.map::<u64, u64>("nothing", [1]), Err(Error::InvalidArgument(_))));
    assert!(matches!(
        pool.chunksize(0).map::<u64, u64>("square", [1]),
        Err(Error::InvalidArgument(_))
    ));
    stop(worker);
}

#[test]
fn an_unknown_function_or_another_registry_identity_is_refused_in_the_result() {
    let Some(server) =
        server("an_unknown_function_or_another_registry_identity_is_refused_in_the_result")
    else {
        return;
    };
    let worker = start_worker(&server, 1, 30_000, 5);
    // Another build: one more function, so another identity.
    let other = registry().task("cube", |x: u64| x * x * x);
    let pool = Pool::connect(&server.url(), NAME, other).unwrap();

    let unknown = pool.map::<u64, u64>("cube", [2]).unwrap_err();
    assert!(
        matches!(&unknown, Error::Task(m) if m.contains("no task function") && m.contains("cube")),
        "{unknown}"
    );
    let path = std::env::temp_dir().join(format!("multiproc-redis-pool-{}", std::process::id()));
    let _ = std::fs::remove_file(&path);
    let refused =
        pool.apply::<String, bool>("mark", path.to_string_lossy().into_owned()).unwrap_err();
    assert!(matches!(&refused, Error::Task(m) if m.contains("identity")), "{refused}");
    assert!(!path.exists(), "a refused task ran");
    let mut results = pool.imap::<_, u64, _>("square", [1u64, 2]).unwrap();
    assert!(matches!(results.next(), Some(Err(Error::Task(_)))));
    assert!(matches!(results.next(), Some(Err(Error::Task(_)))));
    assert!(results.next().is_none());

    // The same registry: the same task runs.
    let same = Pool::connect(&server.url(), NAME, registry()).unwrap();
    assert!(same.apply::<String, bool>("mark", path.to_string_lossy().into_owned()).unwrap());
    assert!(path.exists());
    std::fs::remove_file(&path).unwrap();
    stop(worker);
}

#[test]
fn a_worker_killed_mid_map_has_its_tasks_reclaimed_and_every_result_comes_once() {
    let Some(server) =
        server("a_worker_killed_mid_map_has_its_tasks_reclaimed_and_every_result_comes_once")
    else {
        return;
    };
    let mut con = raw(&server);
    let pool = Pool::connect(&server.url(), NAME, registry()).unwrap();
    let mut results =
        pool.chunksize(1).imap_unordered::<_, u64, _>("slow_square", 0..40u64).unwrap();
    let first = start_worker(&server, 2, 1000, 5);
    wait_for("the first worker host to hold tasks", || pending_tasks(&mut con) >= 2);
    // Its processes die with it; what they held is pending for no one alive.
    stop(first);
    let second = start_worker(&server, 2, 1000, 5);
    let mut got = Vec::new();
    for _ in 0..40 {
        got.push(results.next_timeout(STATE_DEADLINE).expect("a result").expect("a value"));
    }
    assert!(results.next_timeout(STATE_DEADLINE).is_none());
    got.sort_unstable();
    assert_eq!(got, (0..40u64).map(|x| x * x).collect::<Vec<_>>());
    wait_for("every task acknowledged", || pending_tasks(&mut con) == 0);
    assert_eq!(xlen(&mut con, "work:tasks:dead"), 0);
    stop(second);
}

/// The layout of a task on the stream, as a hostile writer could make one.
#[derive(serde::Serialize)]
struct StrayTask {
    reply: String,
    job: u64,
    chunk: u32,
    function: String,
    identity: u64,
    args: Vec<Vec<u8>>,
}

#[test]
fn bad_data_in_the_task_stream_is_dead_lettered_and_workers_go_on() {
    let Some(server) = server("bad_data_in_the_task_stream_is_dead_lettered_and_workers_go_on")
    else {
        return;
    };
    let mut con = raw(&server);
    let pool = Pool::connect(&server.url(), NAME, registry()).unwrap();
    let _: String = redis::cmd("XADD")
        .arg("work:tasks")
        .arg("*")
        .arg("d")
        .arg("not ours")
        .query(&mut con)
        .unwrap();
    let _: String =
        redis::cmd("XADD").arg("work:tasks").arg("*").arg("x").arg("1").query(&mut con).unwrap();
    // A well-formed task whose result would go to a key that is not a result stream of
    // this pool: dropped, not run, nothing written there.
    let path = std::env::temp_dir().join(format!("multiproc-redis-stray-{}", std::process::id()));
    let _ = std::fs::remove_file(&path);
    let stray = StrayTask {
        reply: "victim".into(),
        job: 0,
        chunk: 0,
        function: "mark".into(),
        identity: registry().identity(),
        args: vec![postcard::to_allocvec(&path.to_string_lossy().into_owned()).unwrap()],
    };
    let _: String = redis::cmd("XADD")
        .arg("work:tasks")
        .arg("*")
        .arg("d")
        .arg(postcard::to_allocvec(&stray).unwrap())
        .query(&mut con)
        .unwrap();
    let worker = start_worker(&server, 1, 30_000, 5);
    assert_eq!(
        pool.map::<u64, u64>("square", 0..10).unwrap(),
        [0, 1, 4, 9, 16, 25, 36, 49, 64, 81]
    );
    wait_for("two dead letters", || xlen(&mut con, "work:tasks:dead") == 2);
    // The operator's view: list them, requeue one (it dies again), remove them.
    let dead = DeadLetters::connect(&server.url(), "work:tasks").unwrap();
    assert_eq!(dead.name(), "work:tasks:dead");
    let letters = dead.list(10).unwrap();
    assert_eq!(letters.len(), 2);
    assert_eq!(letters[0].item.as_deref(), Some(&b"not ours"[..]));
    assert!(letters[0].deliveries >= 1 && !letters[0].reason.is_empty());
    assert!(letters[1].item.is_none());
    assert!(matches!(dead.requeue(&letters[1].id), Err(Error::InvalidArgument(_))));
    assert!(dead.requeue(&letters[0].id).unwrap());
    assert!(!dead.requeue(&letters[0].id).unwrap());
    wait_for("the requeued entry to die again", || {
        dead.list(10).unwrap().iter().any(|l| l.item.is_some())
    });
    assert_eq!(dead.len().unwrap(), 2);
    for letter in dead.list(10).unwrap() {
        assert!(dead.remove(&letter.id).unwrap());
    }
    assert!(dead.is_empty().unwrap());
    wait_for("every task taken", || xlen(&mut con, "work:tasks") == 0);
    assert!(!path.exists(), "a task with a stray result stream ran");
    assert!(keys(&mut con, "victim").is_empty());
    assert_eq!(pool.apply::<u64, u64>("square", 5).unwrap(), 25);
    stop(worker);
}

#[test]
fn a_task_that_keeps_killing_its_worker_is_dead_lettered_and_its_result_says_so() {
    let Some(server) =
        server("a_task_that_keeps_killing_its_worker_is_dead_lettered_and_its_result_says_so")
    else {
        return;
    };
    let mut con = raw(&server);
    let worker = start_worker(&server, 1, 300, 2);
    let pool = Pool::connect(&server.url(), NAME, registry()).unwrap();
    let err =
        pool.apply_async::<u64, u64>("die", 0).unwrap().get_timeout(STATE_DEADLINE).unwrap_err();
    assert!(matches!(&err, Error::Task(m) if m.contains("dead-lettered")), "{err}");
    assert_eq!(xlen(&mut con, "work:tasks:dead"), 1);
    // The host replaced its dead process and goes on.
    assert_eq!(pool.apply::<u64, u64>("square", 3).unwrap(), 9);
    stop(worker);
}

fn keys(con: &mut redis::Connection, pattern: &str) -> Vec<String> {
    redis::cmd("KEYS").arg(pattern).query(con).expect("KEYS")
}

#[test]
fn a_dropped_pool_deletes_its_results_and_its_leftover_tasks_are_not_run() {
    let Some(server) =
        server("a_dropped_pool_deletes_its_results_and_its_leftover_tasks_are_not_run")
    else {
        return;
    };
    let mut con = raw(&server);
    let path = std::env::temp_dir().join(format!("multiproc-redis-gone-{}", std::process::id()));
    let _ = std::fs::remove_file(&path);
    {
        let pool = Pool::connect(&server.url(), NAME, registry()).unwrap();
        assert_eq!(keys(&mut con, "work:results:*").len(), 1);
        let r =
            pool.apply_async::<String, bool>("mark", path.to_string_lossy().into_owned()).unwrap();
        drop(r);
    }
    assert!(keys(&mut con, "work:results:*").is_empty());
    assert_eq!(xlen(&mut con, "work:tasks"), 1);
    let worker = start_worker(&server, 1, 30_000, 5);
    wait_for("the leftover task to be taken and acknowledged", || {
        xlen(&mut con, "work:tasks") == 0
    });
    assert!(!path.exists(), "a task of a submitter that is gone ran");
    assert!(keys(&mut con, "work:results:*").is_empty());
    stop(worker);
}

#[test]
fn a_lost_server_fails_the_submission_and_nothing_waits_for_ever() {
    let Some(mut server) = server("a_lost_server_fails_the_submission_and_nothing_waits_for_ever")
    else {
        return;
    };
    let pool = Pool::connect(&server.url(), NAME, registry()).unwrap();
    server.kill();
    let start = Instant::now();
    assert!(matches!(pool.map::<u64, u64>("square", [1, 2]), Err(Error::Io(_))));
    // An imap whose chunks could not be queued: each item says so, then the end.
    let mut it = pool.chunksize(1).imap::<_, u64, _>("square", 0..3u64).unwrap();
    for _ in 0..3 {
        let err = it.next_timeout(STATE_DEADLINE).expect("an item").unwrap_err();
        assert!(matches!(&err, Error::Task(m) if m.contains("not submitted")), "{err}");
    }
    assert!(it.next_timeout(STATE_DEADLINE).is_none());
    assert!(start.elapsed() < STATE_DEADLINE);
    drop(it);
    drop(pool);
    assert!(start.elapsed() < STATE_DEADLINE);
}

#[test]
fn a_redis_restart_mid_map_loses_no_task_and_duplicates_no_result() {
    let Some(mut server) = RedisServer::start_persistent(
        BINARY,
        "a_redis_restart_mid_map_loses_no_task_and_duplicates_no_result",
    ) else {
        return;
    };
    let worker = start_worker(&server, 2, 1000, 1000);
    let pool = Pool::connect(&server.url(), NAME, registry()).unwrap();
    let mut results =
        pool.chunksize(1).imap_unordered::<_, u64, _>("slow_square", 0..40u64).unwrap();
    let mut got = Vec::new();
    for _ in 0..5 {
        got.push(results.next_timeout(STATE_DEADLINE).expect("a result").expect("a value"));
    }
    server.restart();
    while got.len() < 40 {
        got.push(results.next_timeout(STATE_DEADLINE).expect("a result").expect("a value"));
    }
    assert!(results.next_timeout(STATE_DEADLINE).is_none());
    got.sort_unstable();
    assert_eq!(got, (0..40u64).map(|x| x * x).collect::<Vec<_>>());
    stop(worker);
}
