//! Managers: the seed examples, every proxy type, proxies travelling between processes,
//! TCP clients, a dying server, dying clients, and bad input from raw clients.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use multiproc::connection::Client;
use multiproc::managers::{DictProxy, ListProxy, Namespace, QueueProxy, Server, ValueProxy};
use multiproc::{pipe, Connection, Error, Manager, Process, StartMethod};
use serde::{Deserialize, Serialize};

#[path = "../examples/manager_dict.rs"]
mod manager_dict;
#[path = "../examples/manager_list.rs"]
mod manager_list;
#[path = "../examples/manager_namespace.rs"]
mod manager_namespace;
#[path = "../examples/manager_shared_dict.rs"]
mod manager_shared_dict;
#[path = "../examples/manager_value.rs"]
mod manager_value;
#[path = "../examples/manager_work_queue.rs"]
mod manager_work_queue;

mod common;
use common::waits::{
    all_threads_asleep, thread_exists, timed_private_futex_sleepers, timed_private_futex_threads,
    wait_until,
};

const LONG: Option<Duration> = Some(Duration::from_secs(60));
const WAIT: Duration = Duration::from_secs(60);

/// Waits until `n` calls are blocked in the server `pid` (each blocked call's thread
/// waits on its object's condition variable, in slices: a private futex wait with a
/// timeout, which nothing else in a server does); fails the test after a long deadline.
fn wait_blocked_calls(pid: u32, n: usize) {
    wait_until(&format!("{n} calls blocked in the server {pid}"), || {
        timed_private_futex_sleepers(pid) == n
    });
}

/// Parses `[1, 2, 3]`.
fn parse_list(line: &str) -> Vec<i64> {
    let inner = line.trim().trim_start_matches('[').trim_end_matches(']');
    inner.split(", ").filter(|s| !s.is_empty()).map(|s| s.parse().unwrap()).collect()
}

fn pid_gone(pid: u32, within: Duration) -> bool {
    let deadline = Instant::now() + within;
    loop {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"));
        // Gone, or a zombie waiting for a reaper that is not us.
        match stat {
            Err(_) => return true,
            Ok(s) if s.rsplit(')').next().is_some_and(|r| r.trim_start().starts_with('Z')) => {
                return true
            }
            Ok(_) => {}
        }
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

// --------------------------------------------------------------------------------------
// Seed examples

#[test]
fn seed_manager_dict_prints_hello_from_process() {
    assert_eq!(manager_dict::lines().unwrap(), ["Hello from Process"]);
    manager_dict::main().unwrap();
}

#[test]
fn seed_shared_list_holds_0_to_4_in_some_order() {
    let lines = manager_list::lines().unwrap();
    assert_eq!(lines.len(), 1);
    let mut items = parse_list(&lines[0]);
    items.sort();
    assert_eq!(items, [0, 1, 2, 3, 4]);
    manager_list::main().unwrap();
}

#[test]
fn seed_shared_dict_holds_the_squares() {
    let lines = manager_shared_dict::lines().unwrap();
    assert_eq!(lines.len(), 1);
    let line = &lines[0];
    assert!(line.starts_with('{') && line.ends_with('}'), "{line}");
    let entries: BTreeSet<&str> = line[1..line.len() - 1].split(", ").collect();
    let expected: BTreeSet<&str> =
        ["'key_0': 0", "'key_1': 1", "'key_2': 4", "'key_3': 9", "'key_4': 16"].into();
    assert_eq!(entries, expected);
    manager_shared_dict::main().unwrap();
}

#[test]
fn seed_namespace_has_five_items_and_x_at_most_5() {
    let lines = manager_namespace::lines().unwrap();
    assert_eq!(lines.len(), 2);
    let x: i64 = lines[0].strip_prefix("x = ").unwrap().parse().unwrap();
    assert!((1..=5).contains(&x), "{lines:?}");
    let items = parse_list(lines[1].strip_prefix("items = ").unwrap());
    assert_eq!(items.len(), 5, "{lines:?}");
    assert!(items.iter().all(|i| (1..=5).contains(i)), "{lines:?}");
    manager_namespace::main().unwrap();
}

#[test]
fn seed_manager_value_is_0_then_the_childs_update() {
    assert_eq!(manager_value::lines().unwrap(), ["0", "1"]);
    manager_value::main().unwrap();
}

#[test]
fn work_queue_example_squares_twenty_numbers() {
    assert_eq!(
        manager_work_queue::lines().unwrap(),
        [
            "20 results from 3 workers (20 jobs done)",
            "first: (1, 1), last: (20, 400)",
            "sum of squares 1..=20 = 2870",
        ]
    );
    manager_work_queue::main().unwrap();
}

// --------------------------------------------------------------------------------------
// Proxies

#[test]
fn dict_api() {
    let m = Manager::start().unwrap();
    let d = m.dict::<String, Vec<u32>>().unwrap();
    assert!(d.is_empty().unwrap());
    d.set("b", &vec![1]).unwrap();
    d.set("a", &vec![2, 3]).unwrap();
    assert_eq!(d.insert("b", &vec![4]).unwrap(), Some(vec![1]));
    assert_eq!(d.keys().unwrap(), ["b", "a"]);
    assert_eq!(d.values().unwrap(), [vec![4], vec![2, 3]]);
    assert_eq!(d.len().unwrap(), 2);
    assert!(d.contains("a").unwrap());
    assert_eq!(d.pop("b").unwrap(), Some(vec![4]));
    assert_eq!(d.remove("b").unwrap(), None);
    d.update([("c".to_string(), vec![]), ("a".to_string(), vec![9])]).unwrap();
    assert_eq!(d.items().unwrap(), [("a".to_string(), vec![9]), ("c".to_string(), vec![])]);
    assert_eq!(d.setdefault("z", &vec![7]).unwrap(), vec![7]);
    assert_eq!(d.update_with("z", |v| [v.unwrap(), vec![8]].concat()).unwrap(), vec![7, 8]);
    d.clear().unwrap();
    assert_eq!(d.len().unwrap(), 0);
    m.shutdown().unwrap();
}

#[test]
fn list_api() {
    let m = Manager::start().unwrap();
    let l = m.list::<String>().unwrap();
    l.append("a").unwrap();
    l.extend(["b".to_string(), "c".to_string()]).unwrap();
    assert_eq!(l.get(1).unwrap(), "b");
    assert_eq!(l.get(-1).unwrap(), "c");
    assert!(matches!(l.get(3), Err(Error::Remote(m)) if m.contains("IndexError")));
    l.set(0, "A").unwrap();
    l.insert(0, "first").unwrap();
    assert_eq!(l.to_vec().unwrap(), ["first", "A", "b", "c"]);
    assert_eq!(l.index("b").unwrap(), Some(2));
    assert_eq!(l.index("zz").unwrap(), None);
    assert!(l.contains("c").unwrap());
    assert_eq!(l.pop().unwrap().as_deref(), Some("c"));
    assert_eq!(l.pop_at(0).unwrap(), "first");
    l.remove("A").unwrap();
    assert!(l.remove("A").is_err());
    assert_eq!(l.len().unwrap(), 1);
    l.clear().unwrap();
    assert_eq!(l.pop().unwrap(), None);
    m.shutdown().unwrap();
}

#[test]
fn namespace_value_and_sync_objects() {
    let m = Manager::start().unwrap();
    let ns = m.namespace().unwrap();
    ns.set("x", &1.5f64).unwrap();
    assert_eq!(ns.get::<f64>("x").unwrap(), 1.5);
    assert!(ns.get::<f64>("y").is_err());
    assert_eq!(ns.names().unwrap(), ["x"]);
    assert!(ns.delete("x").unwrap());
    assert!(ns.update("x", |v: i64| v + 1).is_err());

    let v = m.value((1u8, "a".to_string())).unwrap();
    assert_eq!(v.swap(&(2, "b".to_string())).unwrap(), (1, "a".to_string()));
    assert_eq!(v.get().unwrap(), (2, "b".to_string()));

    let ev = m.event().unwrap();
    assert!(matches!(ev.wait_timeout(Duration::from_millis(10)), Err(Error::Timeout(_))));
    let sem = m.semaphore(2).unwrap();
    let units = (sem.try_acquire().unwrap(), sem.try_acquire().unwrap());
    assert!(matches!(sem.acquire_timeout(Duration::from_millis(10)), Err(Error::Timeout(_))));
    drop(units);
    m.shutdown().unwrap();
}

#[test]
fn update_with_is_atomic_across_processes() {
    fn bump((d, v, ns): (DictProxy<String, u64>, ValueProxy<u64>, Namespace)) {
        for _ in 0..50 {
            d.update_with("n", |x| x.unwrap_or(0) + 1).unwrap();
            v.update(|x| x + 1).unwrap();
            ns.update("n", |x: u64| x + 1).unwrap();
        }
    }
    let m = Manager::start().unwrap();
    let d = m.dict().unwrap();
    let v = m.value(0u64).unwrap();
    let ns = m.namespace().unwrap();
    ns.set("n", &0u64).unwrap();
    let ps: Vec<_> =
        (0..4).map(|_| Process::new(bump, (d.clone(), v.clone(), ns.clone()))).collect();
    ps.iter().for_each(|p| p.start().unwrap());
    for p in &ps {
        p.join().unwrap();
        assert_eq!(p.exitcode(), Some(0), "{:?}", p.panic_message());
    }
    assert_eq!(d.get("n").unwrap(), Some(200));
    assert_eq!(v.get().unwrap(), 200);
    assert_eq!(ns.get::<u64>("n").unwrap(), 200);
    m.shutdown().unwrap();
}

#[test]
fn proxies_travel_through_queues_pipes_and_other_managed_objects() {
    let m = Manager::start().unwrap();
    let inner = m.list::<u32>().unwrap();
    let outer = m.dict::<String, ListProxy<u32>>().unwrap();
    outer.set("inner", &inner).unwrap();

    // Through a pipe to a child, which reaches the list through the dict.
    fn child(conn: Connection) {
        let d: DictProxy<String, ListProxy<u32>> = conn.recv().unwrap();
        d.get("inner").unwrap().unwrap().append(&1).unwrap();
        conn.send(&"done").unwrap();
    }
    let (a, b) = pipe(true).unwrap();
    let p = Process::new(child, b);
    p.start().unwrap();
    a.send(&outer).unwrap();
    assert_eq!(a.recv::<String>().unwrap(), "done");
    p.join().unwrap();

    // Through a multiproc queue.
    let q = multiproc::queues::Queue::<ListProxy<u32>>::new(0).unwrap();
    let h = multiproc::spawn(
        |q: multiproc::queues::Queue<ListProxy<u32>>| {
            q.get_timeout(LONG.unwrap()).unwrap().append(&2).unwrap()
        },
        q.clone(),
    )
    .unwrap();
    q.put(inner.clone()).unwrap();
    h.join().unwrap();

    // Through a managed queue.
    let mq = m.queue::<ListProxy<u32>>(0).unwrap();
    mq.put(inner.clone()).unwrap();
    mq.get().unwrap().append(&3).unwrap();
    assert_eq!(inner.to_vec().unwrap(), [1, 2, 3]);
    m.shutdown().unwrap();
}

#[test]
fn a_forked_child_opens_its_own_connection() {
    let m = Manager::start().unwrap();
    let l = m.list::<u32>().unwrap();
    l.append(&0).unwrap(); // the parent's pool now holds a connection
    let ps: Vec<_> = (1..=3)
        .map(|i| {
            Process::builder(|(l, i): (ListProxy<u32>, u32)| l.append(&i).unwrap(), (l.clone(), i))
                .start_method(StartMethod::Fork)
                .build()
        })
        .collect();
    ps.iter().for_each(|p| p.start().unwrap());
    for p in &ps {
        p.join().unwrap();
        assert_eq!(p.exitcode(), Some(0));
    }
    l.append(&4).unwrap();
    let mut items = l.to_vec().unwrap();
    items.sort();
    assert_eq!(items, [0, 1, 2, 3, 4]);
    m.shutdown().unwrap();
}

#[test]
fn queue_blocks_in_the_server_and_joins() {
    let m = Manager::start().unwrap();
    let q = m.queue::<u32>(0).unwrap();
    let consumer = multiproc::spawn(
        |q: QueueProxy<u32>| {
            let mut sum = 0;
            for _ in 0..10 {
                sum += q.get_timeout(WAIT).unwrap();
                q.task_done().unwrap();
            }
            sum
        },
        q.clone(),
    )
    .unwrap();
    wait_blocked_calls(m.server_pid().unwrap(), 1); // the consumer waits in the server
    for i in 0..10 {
        q.put(i).unwrap();
    }
    q.join_timeout(WAIT).unwrap();
    assert_eq!(consumer.join().unwrap(), 45);
    assert!(matches!(q.get_timeout(Duration::from_millis(20)), Err(Error::Empty)));
    let bounded = m.queue::<u32>(1).unwrap();
    bounded.try_put(1).unwrap();
    let full = bounded.try_put(2).unwrap_err();
    assert!(matches!(full.error(), Error::Full));
    assert_eq!(full.into_item(), 2);
    m.shutdown().unwrap();
}

#[test]
fn barrier_lock_and_event_across_processes() {
    let m = Manager::start().unwrap();
    let barrier = m.barrier(3).unwrap();
    let lock = m.lock().unwrap();
    let ev = m.event().unwrap();
    let counter = m.value(0u32).unwrap();
    type Args = (
        multiproc::managers::BarrierProxy,
        multiproc::managers::LockProxy,
        multiproc::managers::EventProxy,
        ValueProxy<u32>,
    );
    fn party((barrier, lock, ev, counter): Args) -> u64 {
        ev.wait_timeout(WAIT).unwrap();
        for _ in 0..20 {
            let held = lock.acquire_timeout(WAIT).unwrap();
            let v = counter.get().unwrap();
            counter.set(&(v + 1)).unwrap();
            drop(held);
        }
        barrier.wait_timeout(WAIT).unwrap()
    }
    let args: Args = (barrier.clone(), lock.clone(), ev.clone(), counter.clone());
    let hs: Vec<_> = (0..2).map(|_| multiproc::spawn(party, args.clone()).unwrap()).collect();
    ev.set().unwrap();
    let mine = barrier.wait_timeout(WAIT).unwrap();
    let mut arrivals: Vec<u64> = hs.into_iter().map(|h| h.join().unwrap()).collect();
    arrivals.push(mine);
    arrivals.sort();
    assert_eq!(arrivals, [0, 1, 2]);
    assert_eq!(counter.get().unwrap(), 40);
    m.shutdown().unwrap();
}

// --------------------------------------------------------------------------------------
// Lifetimes

#[test]
fn shutdown_and_drop_stop_the_server() {
    let m = Manager::start().unwrap();
    let pid = m.server_pid().unwrap();
    let d = m.dict::<u8, u8>().unwrap();
    drop(m);
    assert!(pid_gone(pid, Duration::from_secs(5)));
    let t = Instant::now();
    assert!(matches!(d.len(), Err(Error::Remote(_))));
    assert!(t.elapsed() < Duration::from_secs(5));
}

#[test]
fn a_killed_server_makes_calls_fail_not_hang() {
    let m = Manager::start().unwrap();
    let d = m.dict::<u8, u8>().unwrap();
    let q = m.queue::<u8>(0).unwrap();
    d.set(&1, &1).unwrap();
    let pid = m.server_pid().unwrap();
    // A call blocked in the server when it dies fails too.
    let blocked = std::thread::spawn(move || q.get());
    wait_blocked_calls(pid, 1);
    let pid_t = rustix::process::Pid::from_raw(pid as i32).unwrap();
    rustix::process::kill_process(pid_t, rustix::process::Signal::KILL).unwrap();
    // The signal takes effect asynchronously: a request could still be answered before.
    assert!(pid_gone(pid, Duration::from_secs(5)));
    let t = Instant::now();
    let got = d.get(&1);
    assert!(matches!(got, Err(Error::Remote(_))), "{got:?}");
    assert!(matches!(blocked.join().unwrap(), Err(Error::Remote(_))));
    assert!(t.elapsed() < Duration::from_secs(5));
    m.shutdown().unwrap();
}

#[test]
fn the_server_dies_with_its_parent() {
    fn owner(conn: Connection) {
        let m = Manager::start().unwrap();
        conn.send(&m.server_pid().unwrap()).unwrap();
        std::thread::sleep(Duration::from_secs(60));
    }
    let (a, b) = pipe(true).unwrap();
    let p = Process::new(owner, b);
    p.start().unwrap();
    let server: u32 = a.recv_timeout(Duration::from_secs(30)).unwrap();
    p.kill().unwrap();
    p.join().unwrap();
    assert!(pid_gone(server, Duration::from_secs(5)), "server {server} outlived its parent");
}

#[test]
fn a_client_dying_in_a_blocking_get_loses_no_item() {
    let m = Manager::start().unwrap();
    let q = m.queue::<u32>(0).unwrap();
    let p = Process::new(|q: QueueProxy<u32>| drop(q.get()), q.clone());
    p.start().unwrap();
    let server = m.server_pid().unwrap();
    wait_blocked_calls(server, 1); // it waits in the server now
    let serving = timed_private_futex_threads(server);
    assert_eq!(serving.len(), 1);
    p.kill().unwrap();
    p.join().unwrap();
    // The server noticed the hang-up: the thread that served the dead client has ended.
    wait_until("the server to notice the hang-up", || !thread_exists(server, serving[0]));
    q.put(7).unwrap();
    assert_eq!(q.get_timeout(Duration::from_secs(5)).unwrap(), 7);
    m.shutdown().unwrap();
}

// --------------------------------------------------------------------------------------
// Network

#[test]
fn two_tcp_client_processes_share_named_objects() {
    let m = Manager::serve("127.0.0.1:0", b"tcp key").unwrap();
    assert!(m.address().starts_with("127.0.0.1:"));
    fn client((addr, id): (String, u32)) -> usize {
        let m = Manager::connect(&addr, b"tcp key").unwrap();
        let d = m.dict_named::<String, u32>("results").unwrap();
        let l = m.list_named::<u32>("log").unwrap();
        for i in 0..50 {
            d.set(&format!("{id}-{i}"), &i).unwrap();
            l.append(&id).unwrap();
        }
        d.len().unwrap()
    }
    let hs: Vec<_> =
        (0..2).map(|id| multiproc::spawn(client, (m.address().to_string(), id)).unwrap()).collect();
    for h in hs {
        assert!(h.join().unwrap() >= 50);
    }
    assert_eq!(m.dict_named::<String, u32>("results").unwrap().len().unwrap(), 100);
    assert_eq!(m.list_named::<u32>("log").unwrap().len().unwrap(), 100);
    assert_eq!(
        m.names().unwrap(),
        [("log".to_string(), "list".to_string()), ("results".to_string(), "dict".to_string())]
    );
    assert!(m.queue_named::<u8>("results").is_err());
    m.shutdown().unwrap();
}

// --------------------------------------------------------------------------------------
// Bad input

#[derive(Debug, Serialize, Deserialize)]
enum WireError {
    Empty,
    Full,
    Timeout(u64),
    Message(String),
    Closing(String),
}

type Reply = Result<Vec<u8>, WireError>;

fn request(conn: &Connection, frame: &[u8]) -> multiproc::Result<Reply> {
    conn.send_bytes(frame)?;
    let reply = conn.recv_bytes_timeout(Duration::from_secs(10))?;
    multiproc::Codec::Postcard.decode(&reply)
}

fn frame<A: Serialize>(id: u64, method: &str, args: &A) -> Vec<u8> {
    let mut out = Vec::new();
    multiproc::Codec::Postcard.encode_into(&(id, method), &mut out).unwrap();
    multiproc::Codec::Postcard.encode_into(args, &mut out).unwrap();
    out
}

fn error_message(reply: Reply) -> String {
    match reply {
        Err(WireError::Message(m) | WireError::Closing(m)) => m,
        other => panic!("expected an error reply, got {other:?}"),
    }
}

#[test]
fn malformed_requests_unknown_ids_and_methods_get_error_replies() {
    let m = Manager::start().unwrap();
    let d = m.dict::<u8, u8>().unwrap();
    let conn = Client::connect(m.address(), Some(m.authkey())).unwrap();

    let e = error_message(request(&conn, &[0xff, 0xff, 0xff]).unwrap());
    assert!(e.contains("malformed request"), "{e}");
    let e = error_message(request(&conn, &[]).unwrap());
    assert!(e.contains("malformed request"), "{e}");
    let e = error_message(request(&conn, &frame(999_999, "get", &())).unwrap());
    assert!(e.contains("no object with id 999999"), "{e}");
    let e = error_message(request(&conn, &frame(d.id(), "frobnicate", &())).unwrap());
    assert!(e.contains("no method 'frobnicate'"), "{e}");
    let e =
        error_message(request(&conn, &frame(0, "create", &("teapot", Vec::<u8>::new()))).unwrap());
    assert!(e.contains("unknown object type"), "{e}");
    // Arguments of the wrong shape, and trailing garbage.
    let e = error_message(request(&conn, &frame(d.id(), "set", &7u8)).unwrap());
    assert!(e.contains("malformed arguments"), "{e}");
    let mut long = frame(d.id(), "len", &());
    long.extend_from_slice(b"junk");
    let e = error_message(request(&conn, &long).unwrap());
    assert!(e.contains("malformed arguments"), "{e}");
    // A list length that claims more than there is.
    let e = error_message(
        request(&conn, &frame(d.id(), "update", &[0xffu8, 0xff, 0xff, 0x7f])).unwrap(),
    );
    assert!(e.contains("malformed"), "{e}");

    // The same connection still serves.
    let pid: u32 = multiproc::Codec::Postcard
        .decode(&request(&conn, &frame(0, "ping", &())).unwrap().unwrap())
        .unwrap();
    assert_eq!(pid, m.server_pid().unwrap());
    // Typed proxies see server errors as Error::Remote.
    let wrong: ListProxy<u8> = multiproc::Codec::Postcard
        .decode(&{
            let mut b = Vec::new();
            multiproc::Codec::Postcard.encode_into(&d, &mut b).unwrap();
            b
        })
        .unwrap();
    assert_eq!(wrong.len().unwrap(), 0); // both kinds have `len`
    assert!(matches!(wrong.append(&1), Err(Error::Remote(_))));
    d.set(&1, &2).unwrap();
    m.shutdown().unwrap();
}

#[test]
fn oversized_requests_close_only_that_connection() {
    let server = Server::bind("127.0.0.1:0", b"k").unwrap().max_message(1024);
    let addr = server.address().to_string();
    std::thread::spawn(move || server.serve_forever());

    let conn = Client::connect(&addr, Some(b"k")).unwrap();
    let big = vec![0u8; 4096];
    match request(&conn, &big) {
        Ok(reply) => assert!(error_message(reply).contains("exceeds"), "reply"),
        Err(e) => assert!(matches!(e, Error::Eof | Error::Io(_)), "{e:?}"),
    }
    // Then the connection is closed.
    assert!(conn.recv_bytes_timeout(Duration::from_secs(5)).is_err());

    // Everyone else is still served, including with requests just under the limit.
    let m = Manager::connect(&addr, b"k").unwrap();
    let l = m.list::<Vec<u8>>().unwrap();
    l.append(&vec![1u8; 900]).unwrap();
    assert!(l.append(&vec![1u8; 2000]).is_err());
    assert_eq!(l.len().unwrap(), 1);
}

#[test]
fn wrong_authkeys_and_silent_clients_do_not_stop_the_server() {
    let m = Manager::serve("127.0.0.1:0", b"right").unwrap();
    assert!(matches!(Manager::connect(m.address(), b"wrong"), Err(Error::Authentication(_))));
    // A client without a key that sends garbage instead of answering the challenge.
    let raw = std::net::TcpStream::connect(m.address()).unwrap();
    let raw_conn = Connection::from_fd(raw.into());
    raw_conn.send_bytes(b"not a handshake").unwrap();
    // A client that connects and says nothing at all.
    let _silent = std::net::TcpStream::connect(m.address()).unwrap();
    let t = Instant::now();
    let other = Manager::connect(m.address(), b"right").unwrap();
    other.value_named("v", 1u8).unwrap().set(&2).unwrap();
    assert!(t.elapsed() < Duration::from_secs(5));
    assert_eq!(m.value_named("v", 0u8).unwrap().get().unwrap(), 2);
    m.shutdown().unwrap();
}

#[test]
fn undecodable_values_are_codec_errors_not_panics() {
    let m = Manager::start().unwrap();
    let d = m.dict_named::<String, String>("d").unwrap();
    d.set("k", "text").unwrap();
    let as_numbers = m.dict_named::<String, Vec<u64>>("d").unwrap();
    // postcard is not self-describing: "text" may decode as some Vec<u64>; no panic.
    let _ = as_numbers.get("k");
    let ns = m.namespace().unwrap();
    ns.set("s", &vec![0xffu8, 0xfe]).unwrap();
    assert!(matches!(ns.get::<String>("s"), Err(Error::Codec(_))));
    m.shutdown().unwrap();
}

/// `multiproc serve` from the CLI crate, when it has been built (`cargo build -p
/// multiproc-cli`); skipped otherwise, since this crate cannot build that binary.
#[test]
fn multiproc_serve_cli_hosts_named_objects_for_two_clients() {
    use std::io::BufRead;
    let exe = std::env::current_exe().unwrap();
    let Some(bin) = exe.ancestors().nth(2).map(|d| d.join("multiproc")).filter(|b| b.exists())
    else {
        eprintln!("skipped: target/<profile>/multiproc is not built");
        return;
    };
    let dir = std::env::temp_dir().join(format!("multiproc-serve-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let keyfile = dir.join("key");
    std::fs::write(&keyfile, b"cli key\n").unwrap();
    let mut child = std::process::Command::new(bin)
        .args(["serve", "--bind", "127.0.0.1:0", "--authkey-file"])
        .arg(&keyfile)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
    let addr = line.trim().strip_prefix("serving on ").unwrap().to_string();
    let result = std::panic::catch_unwind(|| {
        fn client((addr, id): (String, u32)) {
            let m = Manager::connect(&addr, b"cli key").unwrap();
            m.queue_named::<u32>("jobs").unwrap().put(id).unwrap();
        }
        let hs: Vec<_> =
            (0..2).map(|id| multiproc::spawn(client, (addr.clone(), id)).unwrap()).collect();
        hs.into_iter().for_each(|h| h.join().unwrap());
        let m = Manager::connect(&addr, b"cli key").unwrap();
        let q = m.queue_named::<u32>("jobs").unwrap();
        let mut got = [q.get_timeout(WAIT).unwrap(), q.get_timeout(WAIT).unwrap()];
        got.sort();
        assert_eq!(got, [0, 1]);
        assert!(Manager::connect(&addr, b"cli key\n").is_err());
    });
    let _ = child.kill();
    let _ = child.wait();
    let _ = std::fs::remove_dir_all(&dir);
    result.unwrap();
}

#[test]
fn condition_rlock_and_bounded_semaphore_across_processes() {
    use multiproc::managers::{ConditionProxy, RLockProxy};
    let m = Manager::start().unwrap();
    let cond = m.condition().unwrap();
    let ready = m.value(false).unwrap();
    fn waiter((cond, ready): (ConditionProxy, ValueProxy<bool>)) -> bool {
        let held = cond.acquire_timeout(WAIT).unwrap();
        while !ready.get().unwrap() {
            if held.wait_timeout(WAIT).is_err() {
                return false;
            }
        }
        drop(held);
        true
    }
    let hs: Vec<_> =
        (0..2).map(|_| multiproc::spawn(waiter, (cond.clone(), ready.clone())).unwrap()).collect();
    wait_blocked_calls(m.server_pid().unwrap(), 2); // both wait on the condition
    let held = cond.acquire_timeout(WAIT).unwrap();
    ready.set(&true).unwrap();
    held.notify_all().unwrap();
    drop(held);
    for h in hs {
        assert!(h.join().unwrap());
    }

    let rlock = m.rlock().unwrap();
    rlock.acquire().unwrap().leak();
    rlock.acquire().unwrap().leak();
    let other =
        |l: RLockProxy| l.acquire_timeout(Duration::from_millis(50)).map(|g| g.leak()).is_ok();
    assert!(!multiproc::spawn(other, rlock.clone()).unwrap().join().unwrap());
    rlock.release().unwrap();
    assert!(!multiproc::spawn(other, rlock.clone()).unwrap().join().unwrap());
    rlock.release().unwrap();
    // The child held it when it exited: gone, so the next taker (a thread of ours, another
    // owner) gets it.
    assert!(multiproc::spawn(other, rlock.clone()).unwrap().join().unwrap());
    let mine = rlock.clone();
    assert!(std::thread::spawn(move || mine.try_acquire().map(|g| g.leak()).is_ok())
        .join()
        .unwrap());

    let sem = m.bounded_semaphore(2).unwrap();
    assert!(matches!(sem.release(), Err(Error::Remote(e)) if e.contains("too many")));
    sem.try_acquire().unwrap().release().unwrap();
    let arr = m.array([1u8, 2, 3]).unwrap();
    arr.set(-1, &9).unwrap();
    assert_eq!(arr.to_vec().unwrap(), [1, 2, 9]);
    m.shutdown().unwrap();
}

#[derive(Serialize, Deserialize)]
struct Tally {
    counts: std::collections::BTreeMap<String, u64>,
}

impl multiproc::managers::SharedObject for Tally {
    fn call(&mut self, method: &str, args: &[u8]) -> Result<Vec<u8>, String> {
        use multiproc::managers::{decode, encode};
        match method {
            "add" => {
                let word: String = decode(args)?;
                let n = self.counts.entry(word).or_default();
                *n += 1;
                encode(n)
            }
            "snapshot" => encode(&self.counts),
            "boom" => panic!("boom"),
            other => Err(format!("Tally has no method {other}")),
        }
    }
}

struct Types;
impl multiproc::managers::Register for Types {
    fn register(r: &mut multiproc::managers::Registry) {
        r.register::<Tally>("Tally");
    }
}

#[test]
fn user_registered_types_across_processes() {
    use multiproc::managers::ObjectProxy;
    let m = Manager::start_with::<Types>().unwrap();
    let t = m.create("Tally", &Tally { counts: Default::default() }).unwrap();
    fn count(t: ObjectProxy) {
        for w in ["a", "b", "a"] {
            t.call::<_, u64>("add", w).unwrap();
        }
    }
    let hs: Vec<_> = (0..3).map(|_| multiproc::spawn(count, t.clone()).unwrap()).collect();
    hs.into_iter().for_each(|h| h.join().unwrap());
    let snap: std::collections::BTreeMap<String, u64> = t.call("snapshot", &()).unwrap();
    assert_eq!(snap, [("a".to_string(), 6), ("b".to_string(), 3)].into());
    // A panicking method and an unknown one are errors; the server keeps serving.
    assert!(
        matches!(t.call::<_, ()>("boom", &()), Err(Error::Remote(e)) if e.contains("panicked in 'boom': boom"))
    );
    assert!(
        matches!(t.call::<_, ()>("nope", &()), Err(Error::Remote(e)) if e.contains("no method"))
    );
    assert!(m.create("Unregistered", &()).is_err());
    // Constructing from bytes that are not a Tally fails cleanly.
    assert!(m.create("Tally", &[0xffu8; 3]).is_err());
    assert_eq!(t.call::<_, u64>("add", "c").unwrap(), 1);
    m.shutdown().unwrap();
}

/// Random requests, some aimed at real objects and methods: each gets a reply (a panic in
/// the server would close the connection), and the server serves on.
#[test]
fn random_requests_get_replies_and_never_kill_the_server() {
    let m = Manager::start_with::<Types>().unwrap();
    let d = m.dict::<u8, u8>().unwrap();
    let l = m.list::<u8>().unwrap();
    let q = m.queue::<u8>(1).unwrap();
    let t = m.create("Tally", &Tally { counts: Default::default() }).unwrap();
    let ids = [0, d.id(), l.id(), q.id(), t.id(), 12345];
    let methods = [
        "get",
        "set",
        "pop",
        "len",
        "items",
        "update",
        "append",
        "extend",
        "insert",
        "put",
        "join",
        "task_done",
        "create",
        "named",
        "compare_and_set",
        "add",
        "snapshot",
        "x",
    ];
    let conn = Client::connect(m.address(), Some(m.authkey())).unwrap();
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    for _ in 0..3000 {
        let r = next();
        let mut args = Vec::new();
        for _ in 0..(r % 24) {
            args.push(next() as u8 & if r & 64 == 0 { 0x0f } else { 0xff });
        }
        let id = ids[(r >> 8) as usize % ids.len()];
        let method = methods[(r >> 16) as usize % methods.len()];
        let mut f = Vec::new();
        multiproc::Codec::Postcard.encode_into(&(id, method), &mut f).unwrap();
        f.extend_from_slice(&args);
        // Skip the calls that could block for good on random arguments.
        if method == "join" || method == "put" || (id == q.id() && method == "get") {
            continue;
        }
        if r & 1 == 1 {
            f = args; // not even a header
        }
        // Any reply (an error reply included) is fine; a dead connection is not.
        let _reply = request(&conn, &f).unwrap_or_else(|e| panic!("{id} {method} {f:?}: {e}"));
    }
    assert_eq!(m.server_pid().unwrap(), {
        let pid: u32 = multiproc::Codec::Postcard
            .decode(&request(&conn, &frame(0, "ping", &())).unwrap().unwrap())
            .unwrap();
        pid
    });
    m.shutdown().unwrap();
}

#[test]
fn dict_get_set_contains_answer_as_the_protocol_says() {
    let m = Manager::start().unwrap();
    let d = m.dict::<String, u32>().unwrap();
    let ns = m.namespace().unwrap();
    let conn = Client::connect(m.address(), Some(m.authkey())).unwrap();
    fn enc<T: Serialize>(value: &T) -> Vec<u8> {
        multiproc::managers::encode(value).unwrap()
    }
    for id in [d.id(), ns.id()] {
        let key = enc(&"k".to_string());
        let set = |v: u32| request(&conn, &frame(id, "set", &(key.clone(), enc(&v)))).unwrap();
        let old: Option<Vec<u8>> = multiproc::Codec::Postcard.decode(&set(1).unwrap()).unwrap();
        assert_eq!(old, None);
        let old: Option<Vec<u8>> = multiproc::Codec::Postcard.decode(&set(22).unwrap()).unwrap();
        assert_eq!(old, Some(enc(&1u32)));
        let got = request(&conn, &frame(id, "get", &key)).unwrap().unwrap();
        let got: Option<Vec<u8>> = multiproc::Codec::Postcard.decode(&got).unwrap();
        assert_eq!(got, Some(enc(&22u32)));
        let has = request(&conn, &frame(id, "contains", &key)).unwrap().unwrap();
        assert!(multiproc::Codec::Postcard.decode::<bool>(&has).unwrap());
        let missing = request(&conn, &frame(id, "get", &enc(&"j".to_string()))).unwrap();
        assert_eq!(
            multiproc::Codec::Postcard.decode::<Option<Vec<u8>>>(&missing.unwrap()).unwrap(),
            None
        );
        // Malformed arguments: an error reply, and the connection goes on.
        let mut bad = frame(id, "get", &key);
        bad.push(0);
        assert!(error_message(request(&conn, &bad).unwrap()).contains("malformed arguments"));
        let bad = frame(id, "set", &key);
        assert!(error_message(request(&conn, &bad).unwrap()).contains("malformed arguments"));
        let bad = frame(id, "contains", &[200u8]);
        assert!(error_message(request(&conn, &bad).unwrap()).contains("malformed arguments"));
    }
    assert_eq!(d.get("k").unwrap(), Some(22));
    assert_eq!(ns.get::<u32>("k").unwrap(), 22);
    m.shutdown().unwrap();
}

/// Clock ticks of CPU time a process has used (user + system), from `/proc`.
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // Fields after the command name (which is in parentheses and may hold spaces).
    let rest = &stat[stat.rfind(')').unwrap() + 2..];
    let fields: Vec<&str> = rest.split(' ').collect();
    fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap()
}

#[test]
fn an_idle_server_uses_no_cpu_after_a_burst_of_calls() {
    let m = Manager::start().unwrap();
    let d = m.dict::<u32, u32>().unwrap();
    for i in 0..20_000 {
        d.set(&1, &i).unwrap();
        assert_eq!(d.get(&1).unwrap(), Some(i));
    }
    let pid = m.server_pid().unwrap();
    // The server's waiter polls briefly after the last call, then sleeps.
    wait_until("every thread of the server to sleep", || all_threads_asleep(pid));
    let before = cpu_ticks(pid);
    std::thread::sleep(Duration::from_secs(1));
    let used = cpu_ticks(pid) - before;
    assert!(used <= 5, "an idle server used {used} ticks of CPU in a second");
    // A thread that moved off its client's CPU has its whole CPU set back once idle.
    let allowed = |status: &str| {
        status.lines().find(|l| l.starts_with("Cpus_allowed_list:")).map(str::to_string)
    };
    let main = allowed(&std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap());
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).unwrap() {
        let status = std::fs::read_to_string(task.unwrap().path().join("status")).unwrap();
        assert_eq!(allowed(&status), main);
    }
    assert_eq!(d.get(&1).unwrap(), Some(19_999));
    m.shutdown().unwrap();
}

fn hold_locks_until_killed(
    (lock, rlock, cond, ready): (
        multiproc::managers::LockProxy,
        multiproc::managers::RLockProxy,
        multiproc::managers::ConditionProxy,
        multiproc::synchronize::Event,
    ),
) {
    lock.acquire().unwrap().leak();
    rlock.acquire().unwrap().leak();
    rlock.acquire().unwrap().leak(); // twice: recursion does not protect it
    cond.acquire().unwrap().leak();
    ready.set();
    std::thread::sleep(Duration::from_secs(600)); // killed by the test
}

#[test]
fn locks_held_by_a_killed_local_client_pass_to_the_next_taker() {
    let manager = Manager::start().unwrap();
    let (lock, rlock, cond) =
        (manager.lock().unwrap(), manager.rlock().unwrap(), manager.condition().unwrap());
    let ready = multiproc::synchronize::Event::new().unwrap();
    let holder = Process::new(
        hold_locks_until_killed,
        (lock.clone(), rlock.clone(), cond.clone(), ready.clone()),
    );
    holder.start().unwrap();
    ready.wait_timeout(Duration::from_secs(60)).unwrap();
    // Held by a live process: not taken.
    assert!(matches!(lock.try_acquire(), Err(Error::WouldBlock)));
    assert!(matches!(rlock.try_acquire(), Err(Error::WouldBlock)));
    assert!(matches!(lock.acquire_timeout(Duration::from_millis(300)), Err(Error::Timeout(_))));
    // A waiter already blocked when the holder dies gets the lock.
    let waiter = {
        let lock = lock.clone();
        std::thread::spawn(move || lock.acquire_timeout(WAIT).map(|g| g.leak()).is_ok())
    };
    wait_blocked_calls(manager.server_pid().unwrap(), 1);
    holder.kill().unwrap();
    holder.join_timeout(LONG.unwrap()).unwrap();
    assert!(waiter.join().unwrap(), "the blocked waiter did not get the lock");
    lock.release().unwrap();
    rlock.acquire_timeout(WAIT).unwrap().release().unwrap();
    // Released once, and free: the dead holder's two levels went with it.
    let other = rlock.clone();
    assert!(std::thread::spawn(move || other.try_acquire().map(|g| g.leak()).is_ok())
        .join()
        .unwrap());
    cond.acquire_timeout(WAIT).unwrap().release().unwrap();
    manager.shutdown().unwrap();
}

#[test]
fn proxy_guards_release_on_drop_in_another_process_too() {
    let m = Manager::start().unwrap();
    let lock = m.lock().unwrap();
    let sem = m.semaphore(1).unwrap();
    let rlock = m.rlock().unwrap();
    let cond = m.condition().unwrap();
    type Locks = (
        multiproc::managers::LockProxy,
        multiproc::managers::SemaphoreProxy,
        multiproc::managers::RLockProxy,
        multiproc::managers::ConditionProxy,
    );
    // Another process sees each one free only once our guard is gone.
    fn all_free((lock, sem, rlock, cond): Locks) -> bool {
        lock.try_acquire().is_ok()
            && sem.try_acquire().is_ok()
            && rlock.try_acquire().is_ok()
            && cond.try_acquire().is_ok()
    }
    let locks: Locks = (lock.clone(), sem.clone(), rlock.clone(), cond.clone());
    {
        let _l = lock.acquire().unwrap();
        let _s = sem.acquire().unwrap();
        let _r = rlock.acquire().unwrap();
        let _r2 = rlock.acquire().unwrap(); // two levels, two guards
        let _c = cond.acquire().unwrap();
        let child = |(lock, sem, rlock, cond): Locks| {
            matches!(lock.try_acquire(), Err(Error::WouldBlock))
                && matches!(sem.try_acquire(), Err(Error::WouldBlock))
                && matches!(rlock.try_acquire(), Err(Error::WouldBlock))
                && matches!(cond.try_acquire(), Err(Error::WouldBlock))
        };
        assert!(multiproc::spawn(child, locks.clone()).unwrap().join().unwrap());
    }
    assert!(multiproc::spawn(all_free, locks).unwrap().join().unwrap());
    // A guard released explicitly reports the server's answer, and is not released twice.
    lock.acquire().unwrap().release().unwrap();
    assert!(matches!(lock.release(), Err(Error::Remote(_))));
    m.shutdown().unwrap();
}

#[test]
fn a_failed_proxy_put_hands_the_item_back() {
    let m = Manager::start().unwrap();
    let q = m.queue::<String>(1).unwrap();
    q.put("first".to_string()).unwrap();
    for e in [
        q.try_put("second".to_string()).unwrap_err(),
        q.put_timeout("second".to_string(), Duration::from_millis(10)).unwrap_err(),
    ] {
        assert!(matches!(e.error(), Error::Full));
        assert_eq!(e.into_item(), "second");
    }
    // `?` turns a PutError into the plain error.
    let plain = || -> multiproc::Result<()> { Ok(q.try_put("third".to_string())?) };
    assert!(matches!(plain(), Err(Error::Full)));
    assert_eq!(q.try_get().unwrap(), "first");
    assert!(matches!(q.try_get(), Err(Error::Empty)));
    m.shutdown().unwrap();
    // The server is gone: the item still comes back.
    let e = q.put("lost".to_string()).unwrap_err();
    assert!(matches!(e.error(), Error::Remote(_)));
    assert_eq!(e.into_item(), "lost");
}

#[test]
fn a_barrier_timeout_is_a_timeout_for_its_party_and_broken_for_the_others() {
    let m = Manager::start().unwrap();
    let barrier = m.barrier(3).unwrap();
    let waiter = multiproc::spawn(
        |b: multiproc::managers::BarrierProxy| matches!(b.wait(), Err(Error::BrokenBarrier)),
        barrier.clone(),
    )
    .unwrap();
    wait_blocked_calls(m.server_pid().unwrap(), 1); // the child waits in the server
    let t = Duration::from_millis(20);
    assert!(matches!(barrier.wait_timeout(t), Err(Error::Timeout(d)) if d == t));
    assert!(waiter.join().unwrap(), "the other party did not see the barrier broken");
    assert!(matches!(barrier.wait_timeout(WAIT), Err(Error::BrokenBarrier)));
    barrier.reset().unwrap();
    m.shutdown().unwrap();
}

#[test]
fn event_and_condition_waits_wake_on_set_and_notify() {
    let m = Manager::start().unwrap();
    let ev = m.event().unwrap();
    let setter = ev.clone();
    let waiter = multiproc::spawn(|ev: multiproc::managers::EventProxy| ev.wait().is_ok(), ev);
    let waiter = waiter.unwrap();
    wait_blocked_calls(m.server_pid().unwrap(), 1);
    setter.set().unwrap();
    assert!(waiter.join().unwrap());

    let cond = m.condition().unwrap();
    let notifier = cond.clone();
    let t = std::thread::spawn(move || {
        let held = cond.acquire().unwrap();
        held.wait().unwrap();
        true
    });
    wait_blocked_calls(m.server_pid().unwrap(), 1);
    notifier.acquire().unwrap().notify(1).unwrap();
    assert!(t.join().unwrap());
    m.shutdown().unwrap();
}
