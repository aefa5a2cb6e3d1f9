//! The built-in queue and synchronization primitives of a manager's server (Queue, Lock,
//! RLock, Event, Semaphore, Condition, Barrier), and the methods proxies call on them.
//!
//! Each object is a state behind a mutex with a condition variable ([`Guarded`]). A
//! blocking call waits on the thread that serves its client's connection, and checks now
//! and then that the client is still there: a client that hung up gives up its call, so
//! it takes no item and holds no lock afterwards. A lock held by a local client process
//! that died passes to the next taker (the server learns a local client's pid from its
//! socket).

use std::collections::VecDeque;
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use super::wire::{dec, enc, millis, msg, no_method, Reply, WireError};
use crate::connection::Connection;
use crate::sync_util::{lock, wait_timeout};

/// How often a blocked call checks whether its client hung up.
const HANGUP_CHECK: Duration = Duration::from_millis(100);

/// A value guarded by a mutex, with a condition variable for blocking calls.
pub(super) struct Guarded<T> {
    state: Mutex<T>,
    changed: Condvar,
}

impl<T> Guarded<T> {
    pub(super) fn new(value: T) -> Guarded<T> {
        Guarded { state: Mutex::new(value), changed: Condvar::new() }
    }

    pub(super) fn lock(&self) -> MutexGuard<'_, T> {
        lock(&self.state)
    }

    /// Waits until `ready` holds, at most `timeout`, giving up early when the client that
    /// asked has hung up (so a dead client does not consume an item later).
    fn wait_until(
        &self,
        timeout: Option<Duration>,
        client: &Connection,
        mut ready: impl FnMut(&mut T) -> bool,
    ) -> std::result::Result<MutexGuard<'_, T>, WireError> {
        let deadline = crate::deadline::within(timeout);
        let mut guard = self.lock();
        loop {
            if ready(&mut guard) {
                return Ok(guard);
            }
            let now = Instant::now();
            let slice = match deadline {
                Some(d) if d <= now => {
                    return Err(WireError::Timeout(timeout.unwrap_or_default().as_millis() as u64))
                }
                Some(d) => (d - now).min(HANGUP_CHECK),
                None => HANGUP_CHECK,
            };
            let (g, result) = wait_timeout(&self.changed, guard, slice);
            guard = g;
            if result.timed_out() {
                // A client waiting for its reply sends nothing: readable means hung up.
                drop(guard);
                if client.poll().unwrap_or(true) {
                    return Err(msg("the client hung up"));
                }
                guard = self.lock();
            }
        }
    }

    /// The state if `ready` holds for it: for a blocking call (`block`), once it does, as
    /// [`wait_until`](Self::wait_until) waits; otherwise only if it holds now. `None` when
    /// it does not hold in time.
    fn ready_within(
        &self,
        block: bool,
        timeout: Option<Duration>,
        client: &Connection,
        mut ready: impl FnMut(&mut T) -> bool,
    ) -> std::result::Result<Option<MutexGuard<'_, T>>, WireError> {
        if !block {
            let mut guard = self.lock();
            return Ok(ready(&mut guard).then_some(guard));
        }
        match self.wait_until(timeout, client, ready) {
            Ok(guard) => Ok(Some(guard)),
            Err(WireError::Timeout(_)) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// An `acquire` call: once `ready` holds (see [`ready_within`](Self::ready_within)),
    /// `take` takes the caller's share of the state; the reply says whether it was taken
    /// (`false` when `ready` did not hold in time).
    fn acquire(
        &self,
        block: bool,
        timeout: Option<u64>,
        client: &Connection,
        ready: impl FnMut(&mut T) -> bool,
        take: impl FnOnce(&mut T) -> bool,
    ) -> Reply {
        match self.ready_within(block, millis(timeout), client, ready)? {
            Some(mut state) => enc(&take(&mut state)),
            None => enc(&false),
        }
    }
}

/// A queue's items, and how many items put are not marked done yet.
pub(super) struct QueueState {
    pub(super) items: VecDeque<Vec<u8>>,
    pub(super) unfinished: u64,
}

/// A queue: at most `maxsize` items (`0`: unbounded).
pub(super) struct Queue {
    pub(super) maxsize: usize,
    pub(super) state: Guarded<QueueState>,
}

/// A semaphore's units.
pub(super) struct Semaphore {
    pub(super) value: u64,
    /// A `BoundedSemaphore`'s initial value, which releases may not exceed.
    pub(super) bound: Option<u64>,
}

/// Who holds an `RLock` or a `Condition`'s lock: (a random number of the client process,
/// its pid, its thread id), sent by the client with each call.
type Owner = (u64, u32, i32);

/// Whether a lock's holder is known to be dead: a local client process that is gone.
fn holder_died(holder: Option<i32>) -> bool {
    holder.is_some_and(|pid| !crate::process::pid_is_alive(pid))
}

/// A lock's state: locked, and by which local process (if the server can tell).
#[derive(Default)]
pub(super) struct LockState {
    locked: bool,
    holder: Option<i32>,
}

impl LockState {
    /// Free, or held by a local process that has died (which the next taker inherits).
    fn takeable(&self) -> bool {
        !self.locked || holder_died(self.holder)
    }
}

/// A recursive lock's state.
#[derive(Default)]
pub(super) struct Owned {
    owner: Option<Owner>,
    count: u64,
    /// The local process holding it, if the server can tell.
    holder: Option<i32>,
}

impl Owned {
    /// Free, held by `who`, or held by a local process that has died.
    fn takeable(&self, who: Owner) -> bool {
        self.owner.is_none_or(|o| o == who) || holder_died(self.holder)
    }

    /// Takes the lock for `who` (one more level if `who` holds it); a holder that died
    /// loses it first.
    fn acquire(&mut self, who: Owner, holder: Option<i32>) -> bool {
        if self.owner.is_some_and(|o| o != who) && holder_died(self.holder) {
            self.owner = None;
            self.count = 0;
        }
        if self.owner.is_none() {
            self.holder = holder;
        }
        match self.owner {
            Some(o) if o == who => {
                self.count += 1;
                true
            }
            Some(_) => false,
            None => {
                self.owner = Some(who);
                self.count = 1;
                true
            }
        }
    }

    /// Releases one level; whether the lock became free.
    fn release(&mut self, who: Owner) -> std::result::Result<bool, WireError> {
        if self.owner != Some(who) {
            return Err(msg("RuntimeError: cannot release un-acquired lock"));
        }
        self.count -= 1;
        if self.count == 0 {
            self.owner = None;
            self.holder = None;
            return Ok(true);
        }
        Ok(false)
    }
}

#[derive(Default)]
/// A condition variable: its recursive lock, and the tickets of its waiters in order.
pub(super) struct Condition {
    lock: Owned,
    next_ticket: u64,
    waiting: VecDeque<u64>,
    notified: std::collections::HashSet<u64>,
}

/// A barrier: how many arrived in this generation, and whether it is broken.
pub(super) struct Barrier {
    pub(super) parties: u64,
    pub(super) count: u64,
    pub(super) generation: u64,
    pub(super) broken: bool,
}

/// Calls `method` on a queue; a blocking call waits for at most its timeout.
pub(super) fn queue_method(queue: &Queue, method: &str, args: &[u8], client: &Connection) -> Reply {
    let state = &queue.state;
    match method {
        "put" => {
            let (item, block, timeout): (Vec<u8>, bool, Option<u64>) = dec(args, method)?;
            let room = |s: &mut QueueState| queue.maxsize == 0 || s.items.len() < queue.maxsize;
            let Some(mut s) = state.ready_within(block, millis(timeout), client, room)? else {
                return Err(WireError::Full);
            };
            s.items.push_back(item);
            s.unfinished += 1;
            state.changed.notify_all();
            enc(&())
        }
        "get" => {
            let (block, timeout): (bool, Option<u64>) = dec(args, method)?;
            let has_items = |s: &mut QueueState| !s.items.is_empty();
            let Some(mut s) = state.ready_within(block, millis(timeout), client, has_items)? else {
                return Err(WireError::Empty);
            };
            let item = s.items.pop_front().ok_or(WireError::Empty)?;
            state.changed.notify_all();
            enc(&item)
        }
        "qsize" => enc(&(state.lock().items.len() as u64)),
        "task_done" => {
            let mut s = state.lock();
            if s.unfinished == 0 {
                return Err(msg("ValueError: task_done() called too many times"));
            }
            s.unfinished -= 1;
            state.changed.notify_all();
            enc(&())
        }
        "join" => {
            let timeout: Option<u64> = dec(args, method)?;
            drop(state.wait_until(millis(timeout), client, |s| s.unfinished == 0)?);
            enc(&())
        }
        other => Err(no_method("queue", other)),
    }
}

/// Calls `method` on a lock.
pub(super) fn lock_method(
    lock: &Guarded<LockState>,
    method: &str,
    args: &[u8],
    client: &Connection,
) -> Reply {
    match method {
        "acquire" => {
            let (block, timeout): (bool, Option<u64>) = dec(args, method)?;
            let take = |l: &mut LockState| {
                *l = LockState { locked: true, holder: peer_pid(client) };
                true
            };
            lock.acquire(block, timeout, client, |l| l.takeable(), take)
        }
        "release" => {
            let mut state = lock.lock();
            if !state.locked {
                return Err(msg("RuntimeError: release unlocked lock"));
            }
            *state = LockState::default();
            lock.changed.notify_all();
            enc(&())
        }
        "locked" => enc(&lock.lock().locked),
        other => Err(no_method("lock", other)),
    }
}

/// Calls `method` on an event.
pub(super) fn event_method(
    event: &Guarded<bool>,
    method: &str,
    args: &[u8],
    client: &Connection,
) -> Reply {
    match method {
        "set" => {
            *event.lock() = true;
            event.changed.notify_all();
            enc(&())
        }
        "clear" => {
            *event.lock() = false;
            enc(&())
        }
        "is_set" => enc(&*event.lock()),
        "wait" => {
            let timeout: Option<u64> = dec(args, method)?;
            enc(&event.ready_within(true, millis(timeout), client, |e| *e)?.is_some())
        }
        other => Err(no_method("event", other)),
    }
}

/// Calls `method` on a semaphore.
pub(super) fn semaphore_method(
    sem: &Guarded<Semaphore>,
    method: &str,
    args: &[u8],
    client: &Connection,
) -> Reply {
    match method {
        "acquire" => {
            let (block, timeout): (bool, Option<u64>) = dec(args, method)?;
            let take = |s: &mut Semaphore| {
                s.value -= 1;
                true
            };
            sem.acquire(block, timeout, client, |s| s.value > 0, take)
        }
        "release" => {
            let mut s = sem.lock();
            if s.bound.is_some_and(|b| s.value >= b) {
                return Err(msg("ValueError: Semaphore released too many times"));
            }
            s.value = s.value.saturating_add(1);
            sem.changed.notify_all();
            enc(&())
        }
        "value" => enc(&sem.lock().value),
        other => Err(no_method("semaphore", other)),
    }
}

/// Calls `method` on a recursive lock.
pub(super) fn rlock_method(
    lock: &Guarded<Owned>,
    method: &str,
    args: &[u8],
    client: &Connection,
) -> Reply {
    match method {
        "acquire" => {
            let (who, block, timeout): (Owner, bool, Option<u64>) = dec(args, method)?;
            let take = |o: &mut Owned| o.acquire(who, peer_pid(client));
            lock.acquire(block, timeout, client, |o| o.takeable(who), take)
        }
        "release" => {
            let who: Owner = dec(args, method)?;
            if lock.lock().release(who)? {
                lock.changed.notify_all();
            }
            enc(&())
        }
        other => Err(no_method("rlock", other)),
    }
}

/// Calls `method` on a condition variable.
pub(super) fn condition_method(
    cond: &Guarded<Condition>,
    method: &str,
    args: &[u8],
    client: &Connection,
) -> Reply {
    match method {
        "acquire" => {
            let (who, block, timeout): (Owner, bool, Option<u64>) = dec(args, method)?;
            let take = |c: &mut Condition| c.lock.acquire(who, peer_pid(client));
            cond.acquire(block, timeout, client, |c| c.lock.takeable(who), take)
        }
        "release" => {
            let who: Owner = dec(args, method)?;
            if cond.lock().lock.release(who)? {
                cond.changed.notify_all();
            }
            enc(&())
        }
        "wait" => {
            let (who, timeout): (Owner, Option<u64>) = dec(args, method)?;
            let (ticket, count) = {
                let mut c = cond.lock();
                if c.lock.owner != Some(who) {
                    return Err(msg("RuntimeError: cannot wait on un-acquired lock"));
                }
                let count = std::mem::take(&mut c.lock.count);
                c.lock.owner = None;
                c.lock.holder = None;
                let ticket = c.next_ticket;
                c.next_ticket += 1;
                c.waiting.push_back(ticket);
                cond.changed.notify_all();
                (ticket, count)
            };
            let notified =
                match cond.wait_until(millis(timeout), client, |c| c.notified.contains(&ticket)) {
                    Ok(mut c) => {
                        c.notified.remove(&ticket);
                        true
                    }
                    Err(e) => {
                        let mut c = cond.lock();
                        c.waiting.retain(|t| *t != ticket);
                        if c.notified.remove(&ticket) {
                            true
                        } else if matches!(e, WireError::Timeout(_)) {
                            false
                        } else {
                            return Err(e);
                        }
                    }
                };
            // Take the lock back, as Python's wait does, however long that takes.
            let mut c = cond.wait_until(None, client, |c| c.lock.takeable(who))?;
            c.lock.owner = Some(who);
            c.lock.count = count;
            c.lock.holder = peer_pid(client);
            enc(&notified)
        }
        "notify" => {
            let (who, n): (Owner, u64) = dec(args, method)?;
            let mut c = cond.lock();
            if c.lock.owner != Some(who) {
                return Err(msg("RuntimeError: cannot notify on un-acquired lock"));
            }
            for _ in 0..n {
                match c.waiting.pop_front() {
                    Some(t) => {
                        c.notified.insert(t);
                    }
                    None => break,
                }
            }
            cond.changed.notify_all();
            enc(&())
        }
        other => Err(no_method("condition", other)),
    }
}

/// Calls `method` on a barrier.
pub(super) fn barrier_method(
    barrier: &Guarded<Barrier>,
    method: &str,
    args: &[u8],
    client: &Connection,
) -> Reply {
    match method {
        "wait" => {
            let timeout: Option<u64> = dec(args, method)?;
            let mut b = barrier.lock();
            if b.broken {
                return Err(msg("BrokenBarrierError"));
            }
            let arrival = b.count;
            b.count += 1;
            if b.count == b.parties {
                b.count = 0;
                b.generation += 1;
                barrier.changed.notify_all();
                return enc(&arrival);
            }
            let generation = b.generation;
            drop(b);
            match barrier
                .wait_until(millis(timeout), client, |b| b.generation != generation || b.broken)
            {
                Ok(b) if b.generation != generation => enc(&arrival),
                Ok(_) => Err(msg("BrokenBarrierError")),
                Err(e) => {
                    let mut b = barrier.lock();
                    b.broken = true;
                    barrier.changed.notify_all();
                    drop(b);
                    // This party ran out of time (`Timeout`, or its client is gone); the
                    // others see the barrier broken.
                    Err(e)
                }
            }
        }
        "abort" => {
            barrier.lock().broken = true;
            barrier.changed.notify_all();
            enc(&())
        }
        "reset" => {
            let mut b = barrier.lock();
            b.broken = false;
            b.count = 0;
            b.generation += 1;
            barrier.changed.notify_all();
            enc(&())
        }
        "parties" => enc(&barrier.lock().parties),
        "n_waiting" => enc(&barrier.lock().count),
        "broken" => enc(&barrier.lock().broken),
        other => Err(no_method("barrier", other)),
    }
}

/// The process on the other end of a client connection, when the kernel can tell (a Unix
/// socket on this machine); `None` over TCP.
fn peer_pid(client: &Connection) -> Option<i32> {
    crate::sys::socket::peer_credentials(client).ok().map(|c| c.pid)
}
