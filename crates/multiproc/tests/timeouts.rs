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
    assert!(matches!(q.get(ZERO), Err(Error::Empty)));
    q.put(1, MAX).unwrap();
    assert!(matches!(q.put(2, ZERO), Err(Error::Full)));
    assert_eq!(q.get(MAX).unwrap(), 1);
    q.put(3, ZERO).unwrap();
    assert_eq!(q.get(ZERO).unwrap(), 3);
    assert!(matches!(q.get_many(4, ZERO), Err(Error::Empty)));
    q.put(4, MAX).unwrap();
    assert_eq!(q.get_many(4, MAX).unwrap(), vec![4]);
    q.put_many([6], MAX).unwrap();
    assert!(matches!(q.put_many([7], ZERO), Err(Error::Full)));
    assert_eq!(q.get_many(4, ZERO).unwrap(), vec![6]);
    q.put_many([8], ZERO).unwrap();
    assert_eq!(q.get(ZERO).unwrap(), 8);

    // MAX while the queue is empty: sleeps with no deadline and wakes for the item.
    let producer = q.clone();
    let t = after_a_while(move || producer.put(5, MAX).unwrap());
    assert_eq!(q.get(MAX).unwrap(), 5);
    t.join().unwrap();

    let sq: SimpleQueue<u8> = SimpleQueue::new().unwrap();
    sq.put(7).unwrap();
    assert_eq!(sq.get().unwrap(), 7);
}

#[test]
fn joinable_queue_accepts_zero_and_max() {
    let q: JoinableQueue<u8> = JoinableQueue::new(0).unwrap();
    assert!(matches!(q.get(ZERO), Err(Error::Empty)));
    q.put(1, MAX).unwrap();
    assert!(matches!(q.join(ZERO), Err(Error::Timeout(_))));
    assert_eq!(q.get(MAX).unwrap(), 1);
    let worker = q.clone();
    let t = after_a_while(move || worker.task_done().unwrap());
    q.join(MAX).unwrap();
    t.join().unwrap();
    q.join(ZERO).unwrap();
}

#[test]
fn locks_and_semaphores_accept_zero_and_max() {
    let lock = Lock::new().unwrap();
    {
        let _held = lock.acquire(MAX).unwrap();
        assert!(matches!(lock.acquire(ZERO), Err(Error::Timeout(_))));
    }
    drop(lock.acquire(ZERO).unwrap());

    let rlock = RLock::new().unwrap();
    let outer = rlock.acquire(MAX).unwrap();
    let inner = rlock.acquire(ZERO).unwrap();
    drop(inner);
    drop(outer);

    let sem = Semaphore::new(1).unwrap();
    sem.acquire(MAX).unwrap();
    assert!(matches!(sem.acquire(ZERO), Err(Error::Timeout(_))));
    let releaser = sem.clone();
    let t = after_a_while(move || releaser.release().unwrap());
    sem.acquire(MAX).unwrap();
    t.join().unwrap();

    let bsem = BoundedSemaphore::new(1).unwrap();
    bsem.acquire(MAX).unwrap();
    assert!(matches!(bsem.acquire(ZERO), Err(Error::Timeout(_))));
    bsem.release().unwrap();
    bsem.acquire(ZERO).unwrap();
}

#[test]
fn event_condition_barrier_accept_zero_and_max() {
    let event = Event::new().unwrap();
    assert!(!event.wait(ZERO));
    let setter = event.clone();
    let t = after_a_while(move || setter.set());
    assert!(event.wait(MAX));
    t.join().unwrap();
    assert!(event.wait(ZERO));

    let cond = Condition::new().unwrap();
    {
        let mut guard = cond.acquire(MAX).unwrap();
        assert!(!guard.wait(ZERO).unwrap());
        assert!(guard.wait_for(|| true, MAX).unwrap());
        assert!(!guard.wait_for(|| false, ZERO).unwrap());
    }
    let notifier = cond.clone();
    let mut guard = cond.acquire(ZERO).unwrap();
    let t = after_a_while(move || {
        notifier.acquire(MAX).unwrap().notify_all();
    });
    assert!(guard.wait(MAX).unwrap());
    drop(guard);
    t.join().unwrap();

    let lonely = Barrier::new(2, None, MAX).unwrap();
    assert!(lonely.wait(ZERO).is_err());
    let one = Barrier::new(1, None, MAX).unwrap();
    one.wait(MAX).unwrap();
    one.wait(ZERO).unwrap();
    let pair = Barrier::new(2, None, None).unwrap();
    let other = pair.clone();
    let t = thread::spawn(move || other.wait(MAX).map(|_| ()));
    pair.wait(MAX).unwrap();
    t.join().unwrap().unwrap();
}

#[test]
fn shared_values_accept_zero_and_max() {
    // A Value's lock is an RLock: another thread is refused while this one holds it.
    let value = Value::new(1u32).unwrap();
    {
        let _g = value.lock(MAX).unwrap();
        thread::scope(|s| {
            s.spawn(|| assert!(matches!(value.lock(ZERO), Err(Error::Timeout(_)))));
        });
    }
    drop(value.lock(ZERO).unwrap());
    drop(value.get_lock().acquire(MAX).unwrap());
    let array = Array::<u8>::new(4).unwrap();
    drop(array.lock(MAX).unwrap());
    drop(array.lock(ZERO).unwrap());
}

#[test]
fn connections_accept_zero_and_max() {
    let (a, b) = pipe(true).unwrap();
    assert!(!b.poll().unwrap());
    assert!(matches!(b.recv_bytes_timeout(None, Duration::ZERO), Err(Error::Timeout(_))));
    a.send_timeout(&1u32, Duration::MAX).unwrap();
    assert!(b.poll_timeout(Duration::MAX).unwrap());
    assert_eq!(connection::wait_timeout(&[&b], Duration::MAX).unwrap(), vec![0]);
    assert_eq!(b.recv_timeout::<u32>(Duration::MAX).unwrap(), 1);
    a.send_timeout(&2u32, Duration::ZERO).unwrap();
    assert_eq!(b.recv_timeout::<u32>(Duration::ZERO).unwrap(), 2);
    a.send_bytes(b"x").unwrap();
    assert_eq!(b.recv_bytes_timeout(None, Duration::MAX).unwrap(), b"x");
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
    assert!(matches!(p.try_join(), Err(Error::Timeout(_))));
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
    let pool = Pool::new(Some(1)).unwrap();
    let r = pool.apply_async(add_one, 1).unwrap();
    assert_eq!(r.get(MAX).unwrap(), 2);
    let r = pool.apply_async(add_one, 2).unwrap();
    assert!(r.wait(MAX));
    assert!(r.wait(ZERO));
    assert_eq!(r.get(ZERO).unwrap(), 3);
    let m = pool.map_async(add_one, 0..4, None).unwrap();
    assert!(m.wait(MAX));
    assert_eq!(m.get(ZERO).unwrap(), vec![1, 2, 3, 4]);
    let mut it = pool.imap(add_one, 0..3, 1).unwrap();
    let mut got = Vec::new();
    while let Some(r) = it.next_timeout(Duration::MAX) {
        got.push(r.unwrap());
    }
    assert_eq!(got, vec![1, 2, 3]);
    pool.close();
    pool.join(MAX).unwrap();
    pool.join(ZERO).unwrap();
}

#[test]
fn manager_proxies_accept_zero_and_max() {
    let manager = Manager::start().unwrap();
    let q = manager.queue::<u32>(1).unwrap();
    assert!(matches!(q.get(ZERO), Err(Error::Empty)));
    q.put(&1, MAX).unwrap();
    assert!(matches!(q.put(&2, ZERO), Err(Error::Full)));
    assert_eq!(q.get(MAX).unwrap(), 1);
    let producer = q.clone();
    let t = after_a_while(move || producer.put(&5, MAX).unwrap());
    assert_eq!(q.get(MAX).unwrap(), 5);
    t.join().unwrap();
    // A manager queue is joinable: join waits for a task_done per item put (1, 5, 6).
    q.put(&6, ZERO).unwrap();
    assert!(matches!(q.join(ZERO), Err(Error::Timeout(_))));
    assert_eq!(q.get(ZERO).unwrap(), 6);
    let worker = q.clone();
    let t = after_a_while(move || {
        worker.task_done().unwrap();
        worker.task_done().unwrap();
        worker.task_done().unwrap();
    });
    q.join(MAX).unwrap();
    t.join().unwrap();
    q.join(ZERO).unwrap();

    let lock = manager.lock().unwrap();
    assert!(lock.acquire(MAX).unwrap());
    assert!(!lock.acquire(ZERO).unwrap());
    lock.release().unwrap();

    let event = manager.event().unwrap();
    assert!(!event.wait(ZERO).unwrap());
    event.set().unwrap();
    assert!(event.wait(MAX).unwrap());

    let sem = manager.semaphore(1).unwrap();
    assert!(sem.acquire(MAX).unwrap());
    assert!(!sem.acquire(ZERO).unwrap());

    let cond = manager.condition().unwrap();
    assert!(cond.acquire(MAX).unwrap());
    assert!(!cond.wait(ZERO).unwrap());
    cond.release().unwrap();

    let barrier = manager.barrier(1).unwrap();
    barrier.wait(MAX).unwrap();
    barrier.wait(ZERO).unwrap();
}
