//! Opening queues and primitives from their segment's descriptor (`export_fd`/`from_fd`),
//! the path the Python package takes when a child receives an object through the stdlib's
//! `DupFd`: the same object on the other side, and anything else refused.

use std::fs::File;
use std::os::fd::{AsRawFd, OwnedFd};
use std::time::Duration;

use multiproc::queues::{JoinableQueue, Queue, SimpleQueue};
use multiproc::synchronize::{BoundedSemaphore, Condition, Event, Lock, RLock, Semaphore};
use multiproc::{Error, Process};

const LONG: Duration = Duration::from_secs(60);

/// Another open file description of descriptor `fd` of process `pid`, as a process of the
/// same user may open it through `/proc`.
fn reopen(pid: u32, fd: i32) -> OwnedFd {
    let path = format!("/proc/{pid}/fd/{fd}");
    let file = File::options().read(true).write(true).open(&path).unwrap_or_else(|e| {
        panic!("cannot open {path}: {e}");
    });
    file.into()
}

fn child_echoes((parent, queue_fd, reply_fd): (u32, i32, i32)) {
    let q = Queue::<String>::from_fd(reopen(parent, queue_fd)).unwrap();
    let reply = Queue::<String>::from_fd(reopen(parent, reply_fd)).unwrap();
    let item = q.get_timeout(LONG).unwrap();
    reply.put(format!("child got {item}")).unwrap();
}

#[test]
fn a_child_opens_the_same_queue_from_its_descriptor() {
    let (q, reply) = (Queue::<String>::new(0).unwrap(), Queue::<String>::new(0).unwrap());
    q.put("one".to_string()).unwrap();
    let args = (std::process::id(), q.export_fd().as_raw_fd(), reply.export_fd().as_raw_fd());
    let child = Process::new(child_echoes, args);
    child.start().unwrap();
    assert_eq!(reply.get_timeout(LONG).unwrap(), "child got one");
    child.join_timeout(LONG).unwrap();
    assert_eq!(child.exitcode(), Some(0), "{:?}", child.panic_message());
}

fn child_releases((parent, lock_fd, event_fd): (u32, i32, i32)) {
    let lock = Lock::from_fd(reopen(parent, lock_fd)).unwrap();
    let event = Event::from_fd(reopen(parent, event_fd)).unwrap();
    lock.release().unwrap();
    event.set();
}

#[test]
fn a_child_opens_the_same_lock_and_event_from_their_descriptors() {
    let (lock, event) = (Lock::new().unwrap(), Event::new().unwrap());
    lock.acquire().unwrap().leak();
    let args = (std::process::id(), lock.export_fd().as_raw_fd(), event.export_fd().as_raw_fd());
    let child = Process::new(child_releases, args);
    child.start().unwrap();
    event.wait_timeout(LONG).unwrap();
    child.join_timeout(LONG).unwrap();
    assert_eq!(child.exitcode(), Some(0), "{:?}", child.panic_message());
    assert!(!lock.is_locked(), "the child released the parent's lock");
}

#[test]
fn every_handle_reopened_in_process_is_the_same_object() {
    let q = SimpleQueue::<u8>::new().unwrap();
    SimpleQueue::<u8>::from_fd(q.export_fd().try_clone_to_owned().unwrap())
        .unwrap()
        .put(3)
        .unwrap();
    assert_eq!(q.get_timeout(LONG).unwrap(), 3);

    let jq = JoinableQueue::<u8>::new(0).unwrap();
    jq.put(1).unwrap();
    let jq2 = JoinableQueue::<u8>::from_fd(jq.export_fd().try_clone_to_owned().unwrap()).unwrap();
    assert_eq!(jq2.get_timeout(LONG).unwrap(), 1);
    jq2.task_done().unwrap();
    jq.join_timeout(LONG).unwrap();

    let sem = Semaphore::new(0).unwrap();
    Semaphore::from_fd(sem.export_fd().try_clone_to_owned().unwrap()).unwrap().release().unwrap();
    assert_eq!(sem.get_value(), 1);

    let bounded = BoundedSemaphore::new(1).unwrap();
    let bounded2 =
        BoundedSemaphore::from_fd(bounded.export_fd().try_clone_to_owned().unwrap()).unwrap();
    assert!(matches!(bounded2.release(), Err(Error::InvalidRelease(_))));

    let rlock = RLock::new().unwrap();
    rlock.acquire().unwrap().leak();
    let rlock2 = RLock::from_fd(rlock.export_fd().try_clone_to_owned().unwrap()).unwrap();
    assert_eq!(rlock2.count(), 1);
    rlock2.release().unwrap();
    assert_eq!(rlock.count(), 0);
}

#[test]
fn a_descriptor_of_another_kind_is_refused() {
    let lock = Lock::new().unwrap();
    let queue = Queue::<u8>::new(0).unwrap();
    let event = Event::new().unwrap();
    let lock_fd = || lock.export_fd().try_clone_to_owned().unwrap();
    assert!(matches!(Queue::<u8>::from_fd(lock_fd()), Err(Error::Codec(_))));
    assert!(matches!(RLock::from_fd(lock_fd()), Err(Error::Codec(_))));
    assert!(matches!(
        Lock::from_fd(queue.export_fd().try_clone_to_owned().unwrap()),
        Err(Error::Codec(_))
    ));
    assert!(matches!(
        Semaphore::from_fd(event.export_fd().try_clone_to_owned().unwrap()),
        Err(Error::Codec(_))
    ));
    assert!(matches!(Condition::from_fd_with_lock(lock_fd(), lock.clone()), Err(Error::Codec(_))));
}

#[test]
fn a_descriptor_that_is_not_a_sealed_segment_is_refused() {
    let dir = std::env::temp_dir().join(format!("multiproc-descriptors-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("plain-file");
    let file = File::options().create(true).truncate(true).read(true).write(true).open(&path);
    let file = file.unwrap();
    file.set_len(1 << 16).unwrap();
    let plain: OwnedFd = file.into();
    let refused = Queue::<u8>::from_fd(plain.try_clone().unwrap());
    assert!(matches!(refused, Err(Error::Codec(ref why)) if why.contains("sealed")), "{refused:?}");
    assert!(matches!(Lock::from_fd(plain), Err(Error::Codec(_))));
    let (socket, _peer) = std::os::unix::net::UnixStream::pair().unwrap();
    assert!(matches!(Event::from_fd(socket.into()), Err(Error::Codec(_))));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_condition_waits_and_notifies_for_a_holder_without_a_guard() {
    let lock = Lock::new().unwrap();
    let cond = Condition::with_lock(lock.clone()).unwrap();
    assert!(matches!(cond.wait_held_timeout(Duration::ZERO), Err(Error::InvalidRelease(_))));
    assert!(matches!(cond.notify_held(1), Err(Error::InvalidRelease(_))));
    lock.acquire().unwrap().leak();
    let notifier = {
        let (lock, cond) = (lock.clone(), cond.clone());
        std::thread::spawn(move || {
            // The waiter released the lock: taking it means the waiter waits.
            lock.acquire_timeout(LONG).unwrap().leak();
            cond.notify_held(1).unwrap();
            lock.release().unwrap();
        })
    };
    cond.wait_held_timeout(LONG).unwrap();
    assert!(lock.is_locked(), "the waiter holds the lock again");
    lock.release().unwrap();
    notifier.join().unwrap();
}

#[test]
fn a_condition_over_an_rlock_gives_back_every_level() {
    let rlock = RLock::new().unwrap();
    let cond = Condition::with_rlock(rlock.clone()).unwrap();
    rlock.acquire().unwrap().leak();
    rlock.acquire().unwrap().leak();
    let timed_out = cond.wait_held_timeout(Duration::from_millis(10));
    assert!(matches!(timed_out, Err(Error::Timeout(_))), "{timed_out:?}");
    assert_eq!(rlock.count(), 2);
    rlock.release().unwrap();
    rlock.release().unwrap();
    assert!(matches!(rlock.release(), Err(Error::InvalidRelease(_))));
}

#[test]
fn shared_values_and_arrays_reopen_only_as_their_own_type() {
    use multiproc::sharedctypes::{RawArray, RawValue};

    let value = RawValue::new(5_i64).unwrap();
    let array = RawArray::from_values(&[1_u16, 2, 3]).unwrap();
    let value_fd = || value.export_fd().try_clone_to_owned().unwrap();
    let array_fd = || array.export_fd().try_clone_to_owned().unwrap();

    let same = RawValue::<i64>::from_fd(value_fd()).unwrap();
    same.set(6);
    assert_eq!(value.get(), 6);
    let same = RawArray::<u16>::from_fd(array_fd()).unwrap();
    same.set(0, 9).unwrap();
    assert_eq!(array.to_vec(), [9, 2, 3]);

    assert!(matches!(RawValue::<f64>::from_fd(value_fd()), Err(Error::Codec(_))));
    assert!(matches!(RawArray::<i64>::from_fd(value_fd()), Err(Error::Codec(_))));
    assert!(matches!(RawValue::<u16>::from_fd(array_fd()), Err(Error::Codec(_))));
    assert!(matches!(RawArray::<i16>::from_fd(array_fd()), Err(Error::Codec(_))));
}
