//! Every blocking call takes any `Duration` as its timeout: `Duration::ZERO` means "only if
//! ready now", `Duration::MAX` (a common way to say "forever") means no deadline. Neither
//! may panic, and `MAX` must still wake up when what it waits for arrives.

use std::thread;
use std::time::Duration;

use multiproc::connection::{self, Client, Listener};
use multiproc::pool::Pool;
use multiproc::queues::{JoinableQueue, Queue, SimpleQueue};
use multiproc::synchronize::{Barrier, BoundedSemaphore, Condition, Event, Lock, RLock, Semaphore};
use multiproc::{pipe, spawn, Array, Error, Manager, Process, Value};

const ZERO: Option<Duration> = Some(Duration::ZERO);
const MAX: Option<Duration> = Some(Duration::MAX);

/// Runs `make_ready` on another thread a little later, so that a call made now with
/// `Duration::MAX` most likely sleeps on its no-deadline path and must still return once
/// the condition holds. Nothing depends on the delay: if the thread runs first, the call
/// finds the condition already true and the assertions hold all the same.
fn after_a_while(make_ready: impl FnOnce() + Send + 'static) -> thread::JoinHandle<()> {
    thread::spawn(move || {
        thread::sleep(Duration::from_millis(20));
        make_ready();
    })
}

#[test]
fn queue_put_get_accept_zero_and_max() {
    let q: Queue<u32> = Queue::new(1).unwrap();
    assert!(matches!(q.get_timeout(ZERO.unwrap()), Err(Error::Empty)));
    q.put_timeout(1, MAX.unwrap()).unwrap();
    assert!(matches!(q.put_timeout(2, ZERO.unwrap()).map_err(Error::from), Err(Error::Full)));
    assert_eq!(q.get_timeout(MAX.unwrap()).unwrap(), 1);
    q.put_timeout(3, ZERO.unwrap()).unwrap();
    assert_eq!(q.get_timeout(ZERO.unwrap()).unwrap(), 3);
    assert!(matches!(q.get_many_timeout(4, ZERO.unwrap()), Err(Error::Empty)));
    q.put_timeout(4, MAX.unwrap()).unwrap();
    assert_eq!(q.get_many_timeout(4, MAX.unwrap()).unwrap(), vec![4]);
    q.put_many_timeout([6], MAX.unwrap()).unwrap();
    assert!(matches!(
        q.put_many_timeout([7], ZERO.unwrap()).map_err(Error::from),
        Err(Error::Full)
    ));
    assert_eq!(q.get_many_timeout(4, ZERO.unwrap()).unwrap(), vec![6]);
    q.put_many_timeout([8], ZERO.unwrap()).unwrap();
    assert_eq!(q.get_timeout(ZERO.unwrap()).unwrap(), 8);

    // MAX while the queue is empty: sleeps with no deadline and wakes for the item.
    let producer = q.clone();
    let t = after_a_while(move || producer.put_timeout(5, MAX.unwrap()).unwrap());
    assert_eq!(q.get_timeout(MAX.unwrap()).unwrap(), 5);
    t.join().unwrap();

    let sq: SimpleQueue<u8> = SimpleQueue::new().unwrap();
    sq.put(7).unwrap();
    assert_eq!(sq.get().unwrap(), 7);
}

#[test]
fn joinable_queue_accepts_zero_and_max() {
    let q: JoinableQueue<u8> = JoinableQueue::new(0).unwrap();
    assert!(matches!(q.get_timeout(ZERO.unwrap()), Err(Error::Empty)));
    q.put_timeout(1, MAX.unwrap()).unwrap();
    assert!(matches!(q.join_timeout(ZERO.unwrap()), Err(Error::Timeout(_))));
    assert_eq!(q.get_timeout(MAX.unwrap()).unwrap(), 1);
    let worker = q.clone();
    let t = after_a_while(move || worker.task_done().unwrap());
    q.join_timeout(MAX.unwrap()).unwrap();
    t.join().unwrap();
    q.join_timeout(ZERO.unwrap()).unwrap();
}

#[test]
fn locks_and_semaphores_accept_zero_and_max() {
    let lock = Lock::new().unwrap();
    {
        let _held = lock.acquire_timeout(Duration::MAX).unwrap();
        assert!(matches!(lock.acquire_timeout(Duration::ZERO), Err(Error::Timeout(_))));
    }
    drop(lock.acquire_timeout(Duration::ZERO).unwrap());

    let rlock = RLock::new().unwrap();
    let outer = rlock.acquire_timeout(Duration::MAX).unwrap();
    let inner = rlock.acquire_timeout(Duration::ZERO).unwrap();
    drop(inner);
    drop(outer);

    let sem = Semaphore::new(1).unwrap();
    sem.acquire_timeout(Duration::MAX).unwrap().leak();
    assert!(matches!(sem.acquire_timeout(Duration::ZERO), Err(Error::Timeout(_))));
    let releaser = sem.clone();
    let t = after_a_while(move || releaser.release().unwrap());
    sem.acquire_timeout(Duration::MAX).unwrap().leak();
    t.join().unwrap();

    let bsem = BoundedSemaphore::new(1).unwrap();
    bsem.acquire_timeout(Duration::MAX).unwrap().leak();
    assert!(matches!(bsem.acquire_timeout(Duration::ZERO), Err(Error::Timeout(_))));
    bsem.release().unwrap();
    bsem.acquire_timeout(Duration::ZERO).unwrap().leak();
}

#[test]
fn event_condition_barrier_accept_zero_and_max() {
    let event = Event::new().unwrap();
    assert!(matches!(event.wait_timeout(Duration::ZERO), Err(Error::Timeout(_))));
    let setter = event.clone();
    let t = after_a_while(move || setter.set());
    event.wait_timeout(Duration::MAX).unwrap();
    t.join().unwrap();
    event.wait_timeout(Duration::ZERO).unwrap();

    let cond = Condition::new().unwrap();
    {
        let mut guard = cond.acquire_timeout(Duration::MAX).unwrap();
        assert!(matches!(guard.wait_timeout(Duration::ZERO), Err(Error::Timeout(_))));
        guard.wait_for_timeout(|| true, Duration::MAX).unwrap();
        assert!(matches!(guard.wait_for_timeout(|| false, Duration::ZERO), Err(Error::Timeout(_))));
    }
    let notifier = cond.clone();
    let mut guard = cond.acquire_timeout(Duration::ZERO).unwrap();
    let t = after_a_while(move || {
        notifier.acquire_timeout(Duration::MAX).unwrap().notify_all();
    });
    guard.wait_timeout(Duration::MAX).unwrap();
    drop(guard);
    t.join().unwrap();

    let lonely = Barrier::builder(2).timeout(Duration::MAX).build().unwrap();
    assert!(matches!(lonely.wait_timeout(Duration::ZERO), Err(Error::Timeout(_))));
    let one = Barrier::builder(1).timeout(Duration::MAX).build().unwrap();
    one.wait_timeout(Duration::MAX).unwrap();
    one.wait_timeout(Duration::ZERO).unwrap();
    let pair = Barrier::new(2).unwrap();
    let other = pair.clone();
    let t = thread::spawn(move || other.wait_timeout(Duration::MAX).map(|_| ()));
    pair.wait_timeout(Duration::MAX).unwrap();
    t.join().unwrap().unwrap();
}

#[test]
fn shared_values_accept_zero_and_max() {
    // A Value's lock is an RLock: another thread is refused while this one holds it.
    let value = Value::new(1u32).unwrap();
    {
        let _g = value.lock_timeout(Duration::MAX).unwrap();
        thread::scope(|s| {
            s.spawn(|| {
                assert!(matches!(value.lock_timeout(Duration::ZERO), Err(Error::Timeout(_))))
            });
        });
    }
    drop(value.lock_timeout(Duration::ZERO).unwrap());
    drop(value.get_lock().acquire_timeout(Duration::MAX).unwrap());
    let array = Array::<u8>::new(4).unwrap();
    drop(array.lock_timeout(Duration::MAX).unwrap());
    drop(array.lock_timeout(Duration::ZERO).unwrap());
}

#[test]
fn connections_accept_zero_and_max() {
    let (a, b) = pipe(true).unwrap();
    assert!(!b.poll().unwrap());
    assert!(matches!(b.recv_bytes_timeout(Duration::ZERO), Err(Error::Timeout(_))));
    a.send_timeout(&1u32, Duration::MAX).unwrap();
    assert!(b.poll_timeout(Duration::MAX).unwrap());
    assert_eq!(connection::wait_timeout(&[&b], Duration::MAX).unwrap(), vec![0]);
    assert_eq!(b.recv_timeout::<u32>(Duration::MAX).unwrap(), 1);
    a.send_timeout(&2u32, Duration::ZERO).unwrap();
    assert_eq!(b.recv_timeout::<u32>(Duration::ZERO).unwrap(), 2);
    a.send_bytes(b"x").unwrap();
    assert_eq!(b.recv_bytes_timeout(Duration::MAX).unwrap(), b"x");
    assert!(matches!(connection::try_wait(&[&b]), Err(Error::Timeout(_))));
    let sender = a;
    let t = after_a_while(move || sender.send(&3u32).unwrap());
    assert!(b.poll_timeout(Duration::MAX).unwrap());
    t.join().unwrap();

    let listener = Listener::bind("127.0.0.1:0", Some(b"key")).unwrap().with_handshake_timeout(MAX);
    assert!(matches!(listener.accept_timeout(Duration::ZERO), Err(Error::Timeout(_))));
    let address = listener.address().to_string();
    let t = thread::spawn(move || {
        let conn = Client::new(&address, Some(b"key")).unwrap().with_timeout(MAX).open().unwrap();
        conn.send(&9u8).unwrap();
    });
    let conn = listener.accept_timeout(Duration::MAX).unwrap();
    assert_eq!(conn.recv::<u8>().unwrap(), 9);
    t.join().unwrap();
    let unused = Listener::bind("127.0.0.1:0", None).unwrap();
    let address = unused.address().to_string();
    drop(Client::connect_timeout(&address, None, Duration::MAX).unwrap());
}

fn add_one(x: u32) -> u32 {
    x + 1
}

#[test]
fn processes_accept_zero_and_max() {
    let (parent, child) = pipe(true).unwrap();
    let p = Process::new(
        |conn: multiproc::Connection| {
            let _ = conn.recv::<u8>();
        },
        child,
    );
    p.start().unwrap();
    assert!(matches!(p.try_join(), Err(Error::WouldBlock)));
    assert!(p.is_alive());
    parent.send(&0u8).unwrap();
    p.join_timeout(Duration::MAX).unwrap();
    assert_eq!(p.exitcode(), Some(0));

    let h = spawn(add_one, 1).unwrap();
    assert_eq!(h.join_timeout(Duration::MAX).unwrap(), 2);
    let h = spawn(add_one, 2).unwrap();
    let _ = h.join_timeout(Duration::ZERO);
    assert_eq!(h.join_timeout(Duration::MAX).unwrap(), 3);
}

#[test]
fn pool_accepts_zero_and_max() {
    let pool = Pool::new(1).unwrap();
    let r = pool.apply_async(add_one, 1).unwrap();
    assert_eq!(r.get_timeout(Duration::MAX).unwrap(), 2);
    let r = pool.apply_async(add_one, 2).unwrap();
    r.wait_timeout(Duration::MAX).unwrap();
    r.wait_timeout(Duration::ZERO).unwrap();
    assert_eq!(r.get_timeout(Duration::ZERO).unwrap(), 3);
    let m = pool.map_async(add_one, 0..4).unwrap();
    m.wait_timeout(Duration::MAX).unwrap();
    assert_eq!(m.get_timeout(Duration::ZERO).unwrap(), vec![1, 2, 3, 4]);
    let mut it = pool.imap(add_one, 0..3).unwrap();
    let mut got = Vec::new();
    while let Some(r) = it.next_timeout(Duration::MAX) {
        got.push(r.unwrap());
    }
    assert_eq!(got, vec![1, 2, 3]);
    pool.close();
    pool.join_timeout(Duration::MAX).unwrap();
    pool.join_timeout(Duration::ZERO).unwrap();
}

#[test]
fn manager_proxies_accept_zero_and_max() {
    let (zero, max) = (Duration::ZERO, Duration::MAX);
    let manager = Manager::start().unwrap();
    let q = manager.queue::<u32>(1).unwrap();
    assert!(matches!(q.get_timeout(zero), Err(Error::Empty)));
    q.put_timeout(1, max).unwrap();
    assert!(matches!(q.put_timeout(2, zero).map_err(Error::from), Err(Error::Full)));
    assert_eq!(q.get_timeout(max).unwrap(), 1);
    let producer = q.clone();
    let t = after_a_while(move || producer.put_timeout(5, max).unwrap());
    assert_eq!(q.get_timeout(max).unwrap(), 5);
    t.join().unwrap();
    // A manager queue is joinable: join waits for a task_done per item put (1, 5, 6).
    q.put_timeout(6, zero).unwrap();
    assert!(matches!(q.join_timeout(zero), Err(Error::Timeout(_))));
    assert_eq!(q.get_timeout(zero).unwrap(), 6);
    let worker = q.clone();
    let t = after_a_while(move || {
        worker.task_done().unwrap();
        worker.task_done().unwrap();
        worker.task_done().unwrap();
    });
    q.join_timeout(max).unwrap();
    t.join().unwrap();
    q.join_timeout(zero).unwrap();

    let lock = manager.lock().unwrap();
    let held = lock.acquire_timeout(max).unwrap();
    assert!(matches!(lock.acquire_timeout(zero), Err(Error::Timeout(_))));
    drop(held);

    let event = manager.event().unwrap();
    assert!(matches!(event.wait_timeout(zero), Err(Error::Timeout(_))));
    event.set().unwrap();
    event.wait_timeout(max).unwrap();

    let sem = manager.semaphore(1).unwrap();
    let unit = sem.acquire_timeout(max).unwrap();
    assert!(matches!(sem.acquire_timeout(zero), Err(Error::Timeout(_))));
    drop(unit);

    let cond = manager.condition().unwrap();
    let held = cond.acquire_timeout(max).unwrap();
    assert!(matches!(held.wait_timeout(zero), Err(Error::Timeout(_))));
    drop(held);

    let barrier = manager.barrier(1).unwrap();
    barrier.wait_timeout(max).unwrap();
    barrier.wait_timeout(zero).unwrap();
}
