//! `multiproc::distributed`: Queue and JoinableQueue on a real `redis-server` that each
//! test starts on a free port (and kills when it ends). Without `redis-server` these tests
//! skip with a line on stderr, and fail under CI=true.
//!
//! Every wait is bounded and waits for a state the test can observe (a reply on a pipe,
//! a client blocked in the server, a stream's length), never for a sleep to be enough.

mod common;
// Its `main` reads this process's arguments: the tests call the rest.
#[allow(dead_code)]
#[path = "../examples/redis_work_queue.rs"]
mod redis_work_queue;

use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::redis::RedisServer;
use multiproc::distributed::{JoinableQueue, Queue};
use multiproc::{pipe, Connection, Error, Process};

const BINARY: &str = "redis_queue";
/// The bound on any state a test waits for.
const STATE_DEADLINE: Duration = Duration::from_secs(30);

fn server(test: &str) -> Option<RedisServer> {
    RedisServer::start(BINARY, test)
}

/// Names the `redis-server` these tests use, or (outside CI) says that they were skipped;
/// under `cargo nextest`, `.config/nextest.toml` shows what it writes.
#[test]
fn redis_server() {
    if let Some(program) = common::redis::require(BINARY) {
        eprintln!("{BINARY}: redis-server is {}", program.display());
    }
}

/// A plain connection for looking into the server (raw XADD, stream lengths).
fn raw(server: &RedisServer) -> redis::Connection {
    let client = redis::Client::open(server.url()).expect("client");
    let con = client.get_connection_with_timeout(Duration::from_secs(5)).expect("connect");
    con.set_read_timeout(Some(Duration::from_secs(10))).expect("read timeout");
    con
}

fn xlen(con: &mut redis::Connection, key: &str) -> i64 {
    redis::cmd("XLEN").arg(key).query(con).expect("XLEN")
}

/// Waits (bounded) until `check` holds; panics naming `what` otherwise.
fn wait_for(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + STATE_DEADLINE;
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Child: takes `n` numbers from the queue and returns their sum through `results`.
fn summer((url, n): (String, u32)) -> multiproc::Result<u64> {
    let jobs: Queue<u32> = Queue::connect(&url, "jobs")?;
    let results: Queue<u64> = Queue::connect(&url, "results")?;
    let mut sum = 0u64;
    for _ in 0..n {
        sum += u64::from(jobs.get_timeout(STATE_DEADLINE)?);
    }
    results.put(sum).map_err(Error::from)?;
    Ok(sum)
}

#[test]
fn items_cross_between_two_processes_by_url() {
    let Some(server) = server("items_cross_between_two_processes_by_url") else { return };
    let jobs: Queue<u32> = Queue::connect(&server.url(), "jobs").unwrap();
    let results: Queue<u64> = Queue::connect(&server.url(), "results").unwrap();
    let child = multiproc::spawn(summer, (server.url(), 100)).unwrap();
    jobs.put_many(1..=60).unwrap();
    for n in 61..=100 {
        jobs.put(n).unwrap();
    }
    assert_eq!(results.get_timeout(STATE_DEADLINE).unwrap(), 5050);
    assert_eq!(child.join_timeout(STATE_DEADLINE).unwrap().unwrap(), 5050);
    assert!(jobs.empty().unwrap());
    assert_eq!(results.qsize().unwrap(), 0);
}

#[test]
fn items_come_out_in_order_and_get_many_takes_a_batch() {
    let Some(server) = server("items_come_out_in_order_and_get_many_takes_a_batch") else {
        return;
    };
    let q: Queue<String> = Queue::connect(&server.url(), "fifo").unwrap();
    q.put_many((0..10).map(|i| format!("item {i}"))).unwrap();
    assert_eq!(q.qsize().unwrap(), 10);
    assert_eq!(q.get().unwrap(), "item 0");
    let batch = q.get_many(4).unwrap();
    assert_eq!(batch, ["item 1", "item 2", "item 3", "item 4"]);
    assert_eq!(q.try_get_many(100).unwrap().len(), 5);
    assert!(matches!(q.try_get_many(100), Err(Error::Empty)));
    assert!(q.get_many(0).unwrap().is_empty());
}

#[test]
fn a_get_on_an_empty_queue_returns_empty_within_its_timeout() {
    let Some(server) = server("a_get_on_an_empty_queue_returns_empty_within_its_timeout") else {
        return;
    };
    let q: Queue<u8> = Queue::connect(&server.url(), "empty").unwrap();
    assert!(matches!(q.try_get(), Err(Error::Empty)));
    let timeout = Duration::from_millis(300);
    let start = Instant::now();
    assert!(matches!(q.get_timeout(timeout), Err(Error::Empty)));
    let took = start.elapsed();
    assert!(took >= Duration::from_millis(250), "returned early: {took:?}");
    assert!(took < timeout + Duration::from_secs(2), "returned late: {took:?}");
    let start = Instant::now();
    assert!(matches!(q.get_many_timeout(5, Duration::from_millis(50)), Err(Error::Empty)));
    assert!(start.elapsed() < Duration::from_secs(2));
}

#[test]
fn duration_max_waits_until_an_item_comes() {
    let Some(server) = server("duration_max_waits_until_an_item_comes") else { return };
    let url = server.url();
    let (tx, rx) = mpsc::channel();
    let getter = std::thread::spawn(move || {
        let q: Queue<u32> = Queue::connect(&url, "forever").unwrap();
        tx.send(q.get_timeout(Duration::MAX)).unwrap();
    });
    let mut con = raw(&server);
    wait_for("the getter to block in the server", || blocked_clients(&mut con) == 1);
    let q: Queue<u32> = Queue::connect(&server.url(), "forever").unwrap();
    q.put_timeout(7, Duration::MAX).unwrap();
    assert_eq!(rx.recv_timeout(STATE_DEADLINE).expect("the getter returned").unwrap(), 7);
    getter.join().unwrap();
    let j: JoinableQueue<u32> = JoinableQueue::connect(&server.url(), "forever-joinable").unwrap();
    j.join_timeout(Duration::MAX).unwrap();
}

/// The number of clients blocked in the server now.
fn blocked_clients(con: &mut redis::Connection) -> i64 {
    let info: String = redis::cmd("INFO").arg("clients").query(con).expect("INFO");
    info.lines()
        .find_map(|l| l.strip_prefix("blocked_clients:"))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or(0)
}

#[test]
fn concurrent_putters_never_overshoot_maxsize() {
    let Some(server) = server("concurrent_putters_never_overshoot_maxsize") else { return };
    const MAXSIZE: usize = 10;
    let q: Queue<u32> = Queue::builder(&server.url(), "bounded").maxsize(MAXSIZE).build().unwrap();
    let putters: Vec<_> = (0..4u32)
        .map(|p| {
            let q = q.clone();
            std::thread::spawn(move || {
                let mut put = 0;
                for i in 0..20 {
                    match q.try_put_many([p * 100 + i, p * 100 + i + 50]) {
                        Ok(()) => put += 2,
                        Err(e) => {
                            assert!(matches!(e.error(), Error::Full), "{e}");
                            put += 2 - e.item().len();
                        }
                    }
                }
                put
            })
        })
        .collect();
    let total: usize = putters.into_iter().map(|t| t.join().unwrap()).sum();
    assert_eq!(total, MAXSIZE);
    assert_eq!(q.qsize().unwrap(), MAXSIZE);
    assert!(q.full().unwrap());
    let e = q.try_put(1).unwrap_err();
    assert!(matches!(e.error(), Error::Full));
    assert_eq!(e.into_item(), 1);
    let start = Instant::now();
    let e = q.put_timeout(2, Duration::from_millis(200)).unwrap_err();
    assert!(matches!(e.error(), Error::Full));
    assert!(start.elapsed() >= Duration::from_millis(150));

    // A putter waiting for room gets in as soon as a getter makes some.
    let url = server.url();
    let (tx, rx) = mpsc::channel();
    let waiter = std::thread::spawn(move || {
        let q: Queue<u32> = Queue::builder(&url, "bounded").maxsize(MAXSIZE).build().unwrap();
        tx.send(q.put_timeout(999, STATE_DEADLINE).map_err(Error::from)).unwrap();
    });
    let mut con = raw(&server);
    wait_for("the putter to block in the server", || blocked_clients(&mut con) == 1);
    q.get().unwrap();
    rx.recv_timeout(STATE_DEADLINE).expect("the putter returned").unwrap();
    waiter.join().unwrap();
    assert_eq!(q.qsize().unwrap(), MAXSIZE);
}

/// Child: takes one job, tells the parent which, and waits for a message that never comes
/// (the parent kills it before `task_done`).
fn consume_and_hang((url, conn): (String, Connection)) -> multiproc::Result<()> {
    let q: JoinableQueue<String> = JoinableQueue::builder(&url, "tasks")
        .visibility_timeout(Duration::from_millis(200))
        .build()?;
    let job = q.get_timeout(STATE_DEADLINE)?;
    conn.send(&job)?;
    let _: String = conn.recv()?;
    q.task_done()
}

#[test]
fn an_item_of_a_killed_consumer_is_redelivered_after_the_visibility_timeout() {
    let Some(server) =
        server("an_item_of_a_killed_consumer_is_redelivered_after_the_visibility_timeout")
    else {
        return;
    };
    let q: JoinableQueue<String> = JoinableQueue::builder(&server.url(), "tasks")
        .visibility_timeout(Duration::from_millis(200))
        .build()
        .unwrap();
    q.put("job 1".to_string()).unwrap();
    let (parent, child) = pipe(true).unwrap();
    let p = Process::new(consume_and_hang, (server.url(), child));
    p.start().unwrap();
    let got: String = parent.recv_timeout(STATE_DEADLINE).unwrap();
    assert_eq!(got, "job 1");
    p.kill().unwrap();
    assert_eq!(p.join_timeout(STATE_DEADLINE).unwrap().signal(), Some(9));
    // Delivered, not done: join waits, and nothing is waiting for delivery.
    assert_eq!(q.qsize().unwrap(), 0);
    assert!(matches!(q.join_timeout(Duration::from_millis(50)), Err(Error::Timeout(_))));

    let start = Instant::now();
    assert_eq!(q.get_timeout(STATE_DEADLINE).unwrap(), "job 1");
    assert!(start.elapsed() < STATE_DEADLINE);
    q.task_done().unwrap();
    q.join_timeout(STATE_DEADLINE).unwrap();
    assert!(matches!(q.task_done(), Err(Error::InvalidRelease(_))));
}

#[test]
fn task_done_acknowledges_the_oldest_delivery_and_join_waits_for_all() {
    let Some(server) = server("task_done_acknowledges_the_oldest_delivery_and_join_waits_for_all")
    else {
        return;
    };
    let q: JoinableQueue<u32> = JoinableQueue::connect(&server.url(), "fifo-done").unwrap();
    q.put_many([1, 2, 3]).unwrap();
    assert_eq!(q.qsize().unwrap(), 3);
    assert_eq!(q.get_many(2).unwrap(), [1, 2]);
    assert_eq!(q.qsize().unwrap(), 1);
    q.task_done().unwrap();
    let mut con = raw(&server);
    // Item 1 is done and gone; items 2 (pending) and 3 (waiting) are not.
    assert_eq!(xlen(&mut con, "fifo-done"), 2);
    assert!(matches!(q.join_timeout(Duration::from_millis(20)), Err(Error::Timeout(_))));
    let url = server.url();
    let (tx, rx) = mpsc::channel();
    let joiner = std::thread::spawn(move || {
        let j: JoinableQueue<u32> = JoinableQueue::connect(&url, "fifo-done").unwrap();
        tx.send(j.join_timeout(STATE_DEADLINE)).unwrap();
    });
    wait_for("the joiner to block in the server", || blocked_clients(&mut con) == 1);
    q.task_done().unwrap();
    assert_eq!(q.get().unwrap(), 3);
    assert!(rx.try_recv().is_err(), "join returned with an item unfinished");
    q.task_done().unwrap();
    rx.recv_timeout(STATE_DEADLINE).expect("the joiner returned").unwrap();
    joiner.join().unwrap();
    assert!(matches!(q.task_done(), Err(Error::InvalidRelease(_))));
}

#[test]
fn an_item_delivered_too_often_moves_to_the_dead_letters() {
    let Some(server) = server("an_item_delivered_too_often_moves_to_the_dead_letters") else {
        return;
    };
    let handle = || -> JoinableQueue<String> {
        JoinableQueue::builder(&server.url(), "poison")
            .visibility_timeout(Duration::from_millis(100))
            .max_deliveries(2)
            .build()
            .unwrap()
    };
    let (a, b, c) = (handle(), handle(), handle());
    a.put("poison".to_string()).unwrap();
    assert_eq!(a.get_timeout(STATE_DEADLINE).unwrap(), "poison");
    // a never finishes it: b gets it again after the visibility timeout (delivery 2).
    assert_eq!(b.get_timeout(STATE_DEADLINE).unwrap(), "poison");
    // b never finishes it either: the next reclaim would be delivery 3, over the limit.
    let mut con = raw(&server);
    wait_for("the item to reach the dead letters", || {
        assert!(matches!(c.get_timeout(Duration::from_millis(50)), Err(Error::Empty)));
        xlen(&mut con, "poison:dead") == 1
    });
    assert_eq!(c.dead_letter_name(), "poison:dead");
    let dead: redis::Value =
        redis::cmd("XRANGE").arg("poison:dead").arg("-").arg("+").query(&mut con).unwrap();
    let text = format!("{dead:?}");
    assert!(text.contains("deliveries") && text.contains("reason"), "{text}");
    let fields = dead_fields(&dead);
    assert_eq!(fields.get("deliveries").map(String::as_str), Some("3"));
    assert!(fields.contains_key("id"), "{fields:?}");
    // The dead-lettered item counts as done; late task_dones do not count twice.
    c.join_timeout(STATE_DEADLINE).unwrap();
    a.task_done().unwrap();
    b.task_done().unwrap();
    assert_eq!(xlen(&mut con, "poison"), 0);
    a.put("next".to_string()).unwrap();
    assert!(matches!(c.join_timeout(Duration::from_millis(20)), Err(Error::Timeout(_))));
    assert_eq!(c.get_timeout(STATE_DEADLINE).unwrap(), "next");
    c.task_done().unwrap();
    c.join_timeout(STATE_DEADLINE).unwrap();
}

/// The text fields of the first entry of an XRANGE reply.
fn dead_fields(reply: &redis::Value) -> std::collections::HashMap<String, String> {
    let mut out = std::collections::HashMap::new();
    let redis::Value::Array(entries) = reply else { return out };
    let Some(redis::Value::Array(entry)) = entries.first() else { return out };
    let Some(redis::Value::Array(fields)) = entry.get(1) else { return out };
    for pair in fields.chunks(2) {
        if let [redis::Value::BulkString(k), redis::Value::BulkString(v)] = pair {
            out.insert(String::from_utf8_lossy(k).into(), String::from_utf8_lossy(v).into());
        }
    }
    out
}

#[test]
fn bad_data_fails_its_own_get_and_the_next_get_goes_on() {
    let Some(server) = server("bad_data_fails_its_own_get_and_the_next_get_goes_on") else {
        return;
    };
    let mut con = raw(&server);
    let q: Queue<String> = Queue::connect(&server.url(), "mixed").unwrap();
    q.put("first".to_string()).unwrap();
    let _: String =
        redis::cmd("XADD").arg("mixed").arg("*").arg("foo").arg("bar").query(&mut con).unwrap();
    let _: String = redis::cmd("XADD")
        .arg("mixed")
        .arg("*")
        .arg("d")
        .arg(&[0xffu8, 0xff, 0xff][..])
        .query(&mut con)
        .unwrap();
    q.put("second".to_string()).unwrap();
    assert_eq!(q.get().unwrap(), "first");
    assert!(matches!(q.get(), Err(Error::Codec(_))));
    assert!(matches!(q.get(), Err(Error::Codec(_))));
    assert_eq!(q.get().unwrap(), "second");

    // get_many stops before a bad entry; the entry is the next call's error.
    q.put("third".to_string()).unwrap();
    let _: String =
        redis::cmd("XADD").arg("mixed").arg("*").arg("x").arg("y").query(&mut con).unwrap();
    q.put("fourth".to_string()).unwrap();
    assert_eq!(q.get_many(10).unwrap(), ["third"]);
    assert_eq!(q.qsize().unwrap(), 2);
    assert!(matches!(q.get_many(10), Err(Error::Codec(_))));
    assert_eq!(q.get_many(10).unwrap(), ["fourth"]);

    let j: JoinableQueue<String> = JoinableQueue::connect(&server.url(), "mixed-joinable").unwrap();
    j.put("first".to_string()).unwrap();
    let _: String = redis::cmd("XADD")
        .arg("mixed-joinable")
        .arg("*")
        .arg("foo")
        .arg("bar")
        .query(&mut con)
        .unwrap();
    j.put("second".to_string()).unwrap();
    assert_eq!(j.get().unwrap(), "first");
    j.task_done().unwrap();
    assert!(matches!(j.get(), Err(Error::Codec(_))));
    assert_eq!(j.get().unwrap(), "second");
    j.task_done().unwrap();
    // The bad entry was dead-lettered (with its fields), so nothing is left unfinished.
    j.join_timeout(STATE_DEADLINE).unwrap();
    assert_eq!(xlen(&mut con, "mixed-joinable:dead"), 1);
    let dead: redis::Value =
        redis::cmd("XRANGE").arg("mixed-joinable:dead").arg("-").arg("+").query(&mut con).unwrap();
    let fields = dead_fields(&dead);
    assert_eq!(fields.get("foo").map(String::as_str), Some("bar"), "{fields:?}");
    assert!(matches!(j.task_done(), Err(Error::InvalidRelease(_))));
}

#[test]
fn a_server_killed_during_a_get_is_an_error_within_the_timeout() {
    let Some(mut server) = server("a_server_killed_during_a_get_is_an_error_within_the_timeout")
    else {
        return;
    };
    let url = server.url();
    let timeout = Duration::from_secs(3);
    let (tx, rx) = mpsc::channel();
    let getter = std::thread::spawn(move || {
        let q: Queue<u32> = Queue::connect(&url, "lost").unwrap();
        let start = Instant::now();
        let got = q.get_timeout(timeout);
        tx.send((got, start.elapsed())).unwrap();
    });
    let mut con = raw(&server);
    wait_for("the getter to block in the server", || blocked_clients(&mut con) == 1);
    server.kill();
    let (got, took) = rx.recv_timeout(timeout + Duration::from_secs(5)).expect("the get returned");
    getter.join().unwrap();
    assert!(matches!(got, Err(Error::Io(_))), "{got:?}");
    assert!(took < timeout + Duration::from_secs(1), "took {took:?}");

    // A JoinableQueue's get and a join: the same, and a short reconnect window ends sooner.
    let q: JoinableQueue<u32> = JoinableQueue::builder(&server.url(), "lost")
        .reconnect_for(Duration::from_millis(200))
        .build()
        .unwrap();
    let start = Instant::now();
    assert!(matches!(q.get_timeout(Duration::from_secs(20)), Err(Error::Io(_))));
    assert!(matches!(q.join_timeout(Duration::from_secs(20)), Err(Error::Io(_))));
    assert!(start.elapsed() < Duration::from_secs(5), "took {:?}", start.elapsed());
}

#[test]
fn bad_urls_and_names_are_errors_and_rediss_is_supported() {
    assert!(matches!(Queue::<u8>::connect("http://nowhere", "q"), Err(Error::InvalidArgument(_))));
    assert!(matches!(
        Queue::<u8>::connect("redis://127.0.0.1/", ""),
        Err(Error::InvalidArgument(_))
    ));
    let Some(server) = server("bad_urls_and_names_are_errors_and_rediss_is_supported") else {
        return;
    };
    // TLS against a plain server: the handshake fails, as an error and in bounded time.
    let url = format!("rediss://127.0.0.1:{}/0", server.port());
    let q: Queue<u8> = Queue::builder(&url, "tls").reconnect_for(Duration::ZERO).build().unwrap();
    let start = Instant::now();
    assert!(q.try_get().is_err());
    assert!(start.elapsed() < Duration::from_secs(10));
}

#[test]
fn a_password_or_an_acl_user_in_the_url_is_used() {
    let Some(server) = server("a_password_or_an_acl_user_in_the_url_is_used") else { return };
    let mut con = raw(&server);
    let _: () = redis::cmd("ACL")
        .arg("SETUSER")
        .arg("worker")
        .arg("on")
        .arg(">worker-secret")
        .arg("~*")
        .arg("+@all")
        .query(&mut con)
        .unwrap();
    let _: () =
        redis::cmd("CONFIG").arg("SET").arg("requirepass").arg("secret").query(&mut con).unwrap();
    let port = server.port();
    let q: Queue<u8> =
        Queue::connect(&format!("redis://:secret@127.0.0.1:{port}/0"), "auth").unwrap();
    q.put(1).unwrap();
    let user: Queue<u8> =
        Queue::connect(&format!("redis://worker:worker-secret@127.0.0.1:{port}/0"), "auth")
            .unwrap();
    assert_eq!(user.get().unwrap(), 1);
    for url in [
        format!("redis://:wrong@127.0.0.1:{port}/0"),
        format!("redis://worker:wrong@127.0.0.1:{port}/0"),
        format!("redis://127.0.0.1:{port}/0"),
    ] {
        let q: Queue<u8> = Queue::connect(&url, "auth").unwrap();
        let got = q.get_timeout(Duration::from_secs(5));
        assert!(matches!(got, Err(Error::Authentication(_))), "{url}: {got:?}");
    }
}

#[test]
fn a_put_is_not_held_up_by_a_get_waiting_on_the_same_handle() {
    let Some(server) = server("a_put_is_not_held_up_by_a_get_waiting_on_the_same_handle") else {
        return;
    };
    let q: std::sync::Arc<JoinableQueue<u32>> =
        std::sync::Arc::new(JoinableQueue::connect(&server.url(), "shared").unwrap());
    let (tx, rx) = mpsc::channel();
    let getter = {
        let q = q.clone();
        std::thread::spawn(move || tx.send(q.get_timeout(STATE_DEADLINE)).unwrap())
    };
    let mut con = raw(&server);
    wait_for("the getter to block in the server", || blocked_clients(&mut con) == 1);
    q.put(5).unwrap();
    assert_eq!(rx.recv_timeout(STATE_DEADLINE).expect("the getter returned").unwrap(), 5);
    getter.join().unwrap();
    q.task_done().unwrap();
    q.join_timeout(STATE_DEADLINE).unwrap();
}

/// The consumers of the group of `stream`.
fn consumers(con: &mut redis::Connection, stream: &str) -> usize {
    let reply: redis::Value =
        redis::cmd("XINFO").arg("CONSUMERS").arg(stream).arg("multiproc").query(con).unwrap();
    match reply {
        redis::Value::Array(items) => items.len(),
        other => panic!("XINFO CONSUMERS: {other:?}"),
    }
}

#[test]
fn a_dropped_handle_leaves_the_group_unless_it_holds_items() {
    let Some(server) = server("a_dropped_handle_leaves_the_group_unless_it_holds_items") else {
        return;
    };
    let mut con = raw(&server);
    let idle: JoinableQueue<u32> = JoinableQueue::connect(&server.url(), "members").unwrap();
    let busy: JoinableQueue<u32> = JoinableQueue::connect(&server.url(), "members").unwrap();
    idle.put_many([1, 2]).unwrap();
    assert!(matches!(idle.try_get_many(0), Ok(v) if v.is_empty()));
    assert_eq!(idle.get().unwrap(), 1);
    idle.task_done().unwrap();
    assert_eq!(busy.get().unwrap(), 2);
    assert_eq!(consumers(&mut con, "members"), 2);
    drop(idle);
    assert_eq!(consumers(&mut con, "members"), 1);
    // The handle that holds an undone item stays, so the item can still be reclaimed.
    drop(busy);
    assert_eq!(consumers(&mut con, "members"), 1);
}

#[test]
fn a_get_whose_connection_is_cut_reconnects_and_goes_on() {
    let Some(server) = server("a_get_whose_connection_is_cut_reconnects_and_goes_on") else {
        return;
    };
    let url = server.url();
    let (tx, rx) = mpsc::channel();
    let getter = std::thread::spawn(move || {
        let q: Queue<u32> = Queue::connect(&url, "cut").unwrap();
        tx.send(q.get_timeout(STATE_DEADLINE)).unwrap();
    });
    let mut con = raw(&server);
    wait_for("the getter to block in the server", || blocked_clients(&mut con) == 1);
    // Every other client's connection is closed by the server.
    let killed: i64 = redis::cmd("CLIENT")
        .arg("KILL")
        .arg("TYPE")
        .arg("normal")
        .arg("SKIPME")
        .arg("yes")
        .query(&mut con)
        .unwrap();
    assert!(killed >= 1);
    let q: Queue<u32> = Queue::connect(&server.url(), "cut").unwrap();
    q.put(11).unwrap();
    assert_eq!(rx.recv_timeout(STATE_DEADLINE).expect("the getter returned").unwrap(), 11);
    getter.join().unwrap();
}

#[test]
fn a_joinable_queue_bounds_the_items_waiting_for_delivery() {
    let Some(server) = server("a_joinable_queue_bounds_the_items_waiting_for_delivery") else {
        return;
    };
    let q: JoinableQueue<u32> =
        JoinableQueue::builder(&server.url(), "bounded-joinable").maxsize(2).build().unwrap();
    q.put_many([1, 2]).unwrap();
    let e = q.try_put(3).unwrap_err();
    assert!(matches!(e.error(), Error::Full));
    let url = server.url();
    let (tx, rx) = mpsc::channel();
    let waiter = std::thread::spawn(move || {
        let q: JoinableQueue<u32> =
            JoinableQueue::builder(&url, "bounded-joinable").maxsize(2).build().unwrap();
        tx.send(q.put_timeout(3, STATE_DEADLINE).map_err(Error::from)).unwrap();
    });
    let mut con = raw(&server);
    wait_for("the putter to block in the server", || blocked_clients(&mut con) == 1);
    // A delivered item no longer counts against maxsize, though it is not done yet.
    assert_eq!(q.get().unwrap(), 1);
    rx.recv_timeout(STATE_DEADLINE).expect("the putter returned").unwrap();
    waiter.join().unwrap();
    assert_eq!(q.qsize().unwrap(), 2);
    assert!(matches!(q.join_timeout(Duration::from_millis(20)), Err(Error::Timeout(_))));
    for expected in [2, 3] {
        assert_eq!(q.get().unwrap(), expected);
    }
    for _ in 0..3 {
        q.task_done().unwrap();
    }
    q.join_timeout(STATE_DEADLINE).unwrap();
}

#[test]
fn large_items_and_a_flushed_server_are_handled() {
    let Some(server) = server("large_items_and_a_flushed_server_are_handled") else { return };
    let q: Queue<Vec<u8>> = Queue::connect(&server.url(), "large").unwrap();
    let big: Vec<u8> = (0..4 << 20).map(|i: u32| (i % 251) as u8).collect();
    q.put(big.clone()).unwrap();
    assert_eq!(q.get().unwrap(), big);

    let j: JoinableQueue<u32> = JoinableQueue::connect(&server.url(), "flushed").unwrap();
    j.put(1).unwrap();
    assert_eq!(j.get().unwrap(), 1);
    j.task_done().unwrap();
    let mut con = raw(&server);
    let _: () = redis::cmd("FLUSHALL").query(&mut con).unwrap();
    // The stream and its consumer group are gone: the handle makes them again.
    j.put(2).unwrap();
    assert_eq!(j.get_timeout(STATE_DEADLINE).unwrap(), 2);
    j.task_done().unwrap();
    j.join_timeout(STATE_DEADLINE).unwrap();
}

#[test]
fn an_item_taken_by_a_consumer_that_died_before_trimming_is_not_counted() {
    let Some(server) =
        server("an_item_taken_by_a_consumer_that_died_before_trimming_is_not_counted")
    else {
        return;
    };
    let q: Queue<u32> = Queue::connect(&server.url(), "half-taken").unwrap();
    q.put_many([1, 2]).unwrap();
    assert_eq!(q.get().unwrap(), 1);
    // A consumer takes item 2 as a handle does, and dies before removing it.
    let mut con = raw(&server);
    let _: redis::Value =
        redis::cmd("XREADGROUP")
            .arg(
                &[
                    "GROUP",
                    "multiproc",
                    "plain",
                    "COUNT",
                    "1",
                    "NOACK",
                    "STREAMS",
                    "half-taken",
                    ">",
                ][..],
            )
            .query(&mut con)
            .unwrap();
    assert_eq!(xlen(&mut con, "half-taken"), 1);
    assert_eq!(q.qsize().unwrap(), 0);
    assert_eq!(xlen(&mut con, "half-taken"), 0);
    // Left behind again: a get waits for new items (it does not see that one), then ends.
    q.put(3).unwrap();
    let _: redis::Value =
        redis::cmd("XREADGROUP")
            .arg(
                &[
                    "GROUP",
                    "multiproc",
                    "plain",
                    "COUNT",
                    "1",
                    "NOACK",
                    "STREAMS",
                    "half-taken",
                    ">",
                ][..],
            )
            .query(&mut con)
            .unwrap();
    let start = Instant::now();
    assert!(matches!(q.get_timeout(Duration::from_millis(200)), Err(Error::Empty)));
    assert!(start.elapsed() >= Duration::from_millis(150));
    q.put(4).unwrap();
    assert_eq!(q.get().unwrap(), 4);
    assert_eq!(xlen(&mut con, "half-taken"), 0);
}

/// The sentinel that ends a consumer below.
const DONE: u32 = u32::MAX;

/// Child: takes items (in batches) until a sentinel, handing back the other sentinels of
/// its last batch (they are the other consumers'); returns the items.
fn drain_plain(url: String) -> multiproc::Result<Vec<u32>> {
    let q: Queue<u32> = Queue::connect(&url, "shared-work")?;
    let mut got = Vec::new();
    loop {
        let batch = q.get_many_timeout(7, STATE_DEADLINE)?;
        let sentinels = batch.iter().filter(|&&item| item == DONE).count();
        got.extend(batch.into_iter().filter(|&item| item != DONE));
        if sentinels > 0 {
            q.put_many(std::iter::repeat_n(DONE, sentinels - 1)).map_err(Error::from)?;
            return Ok(got);
        }
    }
}

/// Child: as [`drain_plain`] on a JoinableQueue, marking each item done.
fn drain_joinable(url: String) -> multiproc::Result<Vec<u32>> {
    let q: JoinableQueue<u32> = JoinableQueue::connect(&url, "shared-tasks")?;
    let mut got = Vec::new();
    loop {
        let item = q.get_timeout(STATE_DEADLINE)?;
        q.task_done()?;
        if item == DONE {
            return Ok(got);
        }
        got.push(item);
    }
}

#[test]
fn consumers_in_several_processes_share_the_items_each_once() {
    let Some(server) = server("consumers_in_several_processes_share_the_items_each_once") else {
        return;
    };
    let q: Queue<u32> = Queue::connect(&server.url(), "shared-work").unwrap();
    let j: JoinableQueue<u32> = JoinableQueue::connect(&server.url(), "shared-tasks").unwrap();
    let plain: Vec<_> =
        (0..3).map(|_| multiproc::spawn(drain_plain, server.url()).unwrap()).collect();
    let joinable: Vec<_> =
        (0..3).map(|_| multiproc::spawn(drain_joinable, server.url()).unwrap()).collect();
    for chunk in (0..600u32).collect::<Vec<_>>().chunks(50) {
        q.put_many(chunk.iter().copied()).unwrap();
        j.put_many(chunk.iter().copied()).unwrap();
    }
    q.put_many([DONE; 3]).unwrap();
    j.put_many([DONE; 3]).unwrap();
    for children in [plain, joinable] {
        let mut all: Vec<u32> = Vec::new();
        for child in children {
            all.extend(child.join_timeout(STATE_DEADLINE).unwrap().unwrap());
        }
        all.sort_unstable();
        assert_eq!(all, (0..600).collect::<Vec<_>>());
    }
    j.join_timeout(STATE_DEADLINE).unwrap();
    assert_eq!(q.qsize().unwrap(), 0);
}

#[test]
fn work_queue_example_squares_twenty_numbers_on_two_hosts() {
    let Some(server) = server("work_queue_example_squares_twenty_numbers_on_two_hosts") else {
        return;
    };
    assert_eq!(
        redis_work_queue::lines(&server.url()).unwrap(),
        [
            "20 results from 2 hosts (20 jobs done)",
            "first: (1, 1), last: (20, 400)",
            "sum of squares 1..=20 = 2870",
        ]
    );
    // Every job (and stop marker) was marked done, every result taken.
    let mut con = raw(&server);
    assert_eq!(xlen(&mut con, "work_queue:jobs"), 0);
    assert_eq!(xlen(&mut con, "work_queue:results"), 0);
}

#[test]
fn work_queue_example_takes_its_url_from_the_argument_then_the_environment() {
    use redis_work_queue::url_given;
    let (a, b) = (Some("redis://a/".to_string()), Some("redis://b/".to_string()));
    assert_eq!(url_given(a.clone(), b.clone()), a);
    assert_eq!(url_given(None, b.clone()), b);
    assert_eq!(url_given(Some(String::new()), b.clone()), b);
    assert_eq!(url_given(None, Some(String::new())), None);
    assert_eq!(url_given(None, None), None);
}

#[test]
fn task_done_many_acknowledges_the_oldest_deliveries_past_one_batch() {
    let Some(server) = server("task_done_many_acknowledges_the_oldest_deliveries_past_one_batch")
    else {
        return;
    };
    let q: JoinableQueue<u32> = JoinableQueue::connect(&server.url(), "many-done").unwrap();
    q.put_many(0..2000).unwrap();
    let mut got = Vec::new();
    while got.len() < 2000 {
        got.extend(q.get_many_timeout(2000, STATE_DEADLINE).unwrap());
    }
    assert_eq!(got, (0..2000).collect::<Vec<u32>>());
    let mut con = raw(&server);
    // More than were delivered: an error, and nothing is marked.
    assert!(matches!(q.task_done_many(2001), Err(Error::InvalidRelease(_))));
    assert_eq!(xlen(&mut con, "many-done"), 2000);
    q.task_done_many(1500).unwrap();
    assert_eq!(xlen(&mut con, "many-done"), 500);
    assert!(matches!(q.join_timeout(Duration::from_millis(20)), Err(Error::Timeout(_))));
    q.task_done_many(500).unwrap();
    q.join_timeout(STATE_DEADLINE).unwrap();
    q.task_done_many(0).unwrap();
    assert!(matches!(q.task_done(), Err(Error::InvalidRelease(_))));
}

#[test]
fn items_not_covered_by_task_done_many_are_delivered_again() {
    let Some(server) = server("items_not_covered_by_task_done_many_are_delivered_again") else {
        return;
    };
    let handle = || -> JoinableQueue<u32> {
        JoinableQueue::builder(&server.url(), "partly-done")
            .visibility_timeout(Duration::from_millis(100))
            .build()
            .unwrap()
    };
    let (a, b) = (handle(), handle());
    a.put_many(1..=5).unwrap();
    assert_eq!(a.get_many_timeout(5, STATE_DEADLINE).unwrap(), [1, 2, 3, 4, 5]);
    // a handled the first two only, and goes away without marking the rest.
    a.task_done_many(2).unwrap();
    drop(a);
    let mut again = Vec::new();
    while again.len() < 3 {
        again.extend(b.get_many_timeout(5, STATE_DEADLINE).unwrap());
    }
    assert_eq!(again, [3, 4, 5]);
    b.task_done_many(3).unwrap();
    b.join_timeout(STATE_DEADLINE).unwrap();
    assert_eq!(xlen(&mut raw(&server), "partly-done"), 0);
}
