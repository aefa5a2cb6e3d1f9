//! The dispatcher: the pool's own thread in the parent, which owns the workers.
//!
//! It takes the submissions of the pool handle and its iterators (`Inner::submit`), hands
//! chunks to the least loaded workers (a few per worker, as many as keep it busy while
//! results travel back: [`Dispatcher::has_room`]), writes them to the workers' task pipes,
//! reads the results and delivers them to their jobs' sinks, and keeps the pool at its size.
//! It sleeps in one `poll` on the workers' pipes, their pidfds and a wake-up eventfd.
//!
//! When a worker dies, its progress word says which item it was running: that item fails,
//! the chunks it had not finished go back to the queue ([`Dispatcher::on_exit`]).
//!
//! The pool's operating-system calls (the eventfd, the pipes, `poll`, `writev`, `read`) are
//! gathered at the end of this file.

use std::collections::{HashMap, VecDeque};
use std::os::fd::OwnedFd;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use super::chunks::{Chunk, Group};
use super::results::Sink;
use super::wire::{
    frame_at, Frame, Outcomes, Rd, TAG_EXIT, TAG_INIT_FAILED, TAG_READY, TAG_RESULT,
};
use super::worker::{worker_main, Initializer, Progress, Worker, WorkerBoot};
use super::{
    pool_id, Broken, Inner, Phase, Submission, DISPATCHER_OF, FLUSH_BYTES, PIPELINE_NS, PIPE_BYTES,
    SLOW_CHUNK_NS, START_FAILURES_MAX, TERMINATE_GRACE, WINDOW_MAX, WORKER_BYTES_MAX,
};
use crate::connection::{poll_until, Connection};
use crate::context::StartMethod;
use crate::error::{Error, Result};
use crate::process::{ExitStatus, Process};
use crate::sync_util::lock;
use crate::sys;

/// What the dispatcher needs from the [`PoolBuilder`](super::PoolBuilder).
pub(super) struct Config {
    pub(super) processes: usize,
    pub(super) method: StartMethod,
    pub(super) maxtasks: Option<u64>,
    pub(super) init: Option<Initializer>,
}

/// A job as the dispatcher keeps it.
struct JobEntry {
    sink: Box<dyn Sink>,
    /// More chunks may come.
    open: bool,
    /// Items submitted whose outcome was not delivered yet.
    outstanding: usize,
}

/// The dispatcher's state; it lives on the pool's thread.
pub(super) struct Dispatcher {
    inner: Arc<Inner>,
    config: Config,
    workers: Vec<Worker>,
    jobs: HashMap<u64, JobEntry>,
    /// Chunks waiting for a worker, in groups.
    pending: VecDeque<Group>,
    /// Average time a worker spends on an item (exponentially weighted over chunks), once
    /// known.
    item_ns: Option<f64>,
    /// Workers that died before they were ready, in a row.
    start_failures: u32,
    /// When to try again to start a worker, after a failure to start one.
    retry_start_at: Option<Instant>,
    broken: Option<Broken>,
    inbox: Vec<Submission>,
    /// The phase the last [`absorb`](Self::absorb) saw: [`wait`](Self::wait) does not
    /// sleep once it changed (a `close` between the two would otherwise go unnoticed, as
    /// it wakes only a dispatcher already asleep).
    phase: Phase,
}

/// Numbers the workers of all pools in this process, for their names.
static WORKER_COUNTER: AtomicU32 = AtomicU32::new(0);

impl Dispatcher {
    /// A dispatcher without workers yet.
    fn new(inner: Arc<Inner>, config: Config) -> Dispatcher {
        Dispatcher {
            inner,
            config,
            workers: Vec::new(),
            jobs: HashMap::new(),
            pending: VecDeque::new(),
            item_ns: None,
            start_failures: 0,
            retry_start_at: None,
            broken: None,
            inbox: Vec::new(),
            phase: Phase::Running,
        }
    }

    /// The pool's thread: starts the first worker (reporting on `started`), then runs
    /// until the pool is done.
    pub(super) fn thread_main(
        inner: Arc<Inner>,
        config: Config,
        started: mpsc::Sender<Result<()>>,
    ) {
        lock(&inner.shared).dispatcher = std::thread::current().id();
        DISPATCHER_OF.with(|d| d.set(pool_id(&inner)));
        let mut d = Dispatcher::new(inner, config);
        // The first worker starts before `Pool::new` returns (so that a pool that cannot
        // start a process says so); the others start in the background, while the first
        // already runs tasks.
        match d.start_worker() {
            Ok(w) => d.workers.push(w),
            Err(e) => {
                d.finish(Error::Closed("pool"));
                let _ = started.send(Err(e));
                return;
            }
        }
        d.publish_pids();
        let _ = started.send(Ok(()));
        let outcome = catch_unwind(AssertUnwindSafe(|| d.run()));
        if outcome.is_err() {
            // A bug in the dispatcher: never leave workers or waiters behind.
            d.kill_all();
        }
        d.finish(Error::Closed("pool"));
    }

    /// The loop: take submissions, hand out work, keep the workers, sleep; until the pool
    /// is terminated, or closed with all its work done.
    fn run(&mut self) {
        loop {
            let phase = self.absorb();
            if phase == Phase::Terminated {
                self.kill_all();
                return;
            }
            // Work goes out first, then a missing worker (if any) is started: starting one
            // takes a millisecond or so, during which the others already work.
            self.assign();
            for i in 0..self.workers.len() {
                self.write_some(i);
            }
            let more_wanted = self.keep_workers(phase);
            if !self.pending.is_empty() {
                self.assign();
                for i in 0..self.workers.len() {
                    self.write_some(i);
                }
            }
            if phase == Phase::Closed && self.jobs.is_empty() {
                self.pending.clear();
                if self.workers.iter().all(|w| w.in_flight.is_empty()) {
                    for i in 0..self.workers.len() {
                        self.retire(i);
                    }
                    if self.workers.is_empty() {
                        return;
                    }
                }
            }
            self.wait(more_wanted);
        }
    }

    /// Takes the submissions; returns the phase.
    fn absorb(&mut self) -> Phase {
        let phase = {
            let mut shared = lock(&self.inner.shared);
            std::mem::swap(&mut shared.inbox, &mut self.inbox);
            shared.phase
        };
        self.phase = phase;
        let mut inbox = std::mem::take(&mut self.inbox);
        for sub in inbox.drain(..) {
            match sub {
                Submission::NewJob { job, mut sink } => {
                    if let Some(broken) = &self.broken {
                        sink.abort(broken.error());
                    } else {
                        self.jobs.insert(job, JobEntry { sink, open: true, outstanding: 0 });
                    }
                }
                Submission::Chunks(group) => {
                    if let Some(entry) = self.jobs.get_mut(&group.job) {
                        let items = group.items();
                        entry.outstanding += items;
                        entry.sink.add_items(items);
                        self.pending.push_back(group);
                    }
                }
                Submission::InputDone { job } => {
                    if let Some(entry) = self.jobs.get_mut(&job) {
                        entry.open = false;
                    }
                    self.check_complete(job);
                }
                Submission::Cancel { job } => {
                    self.jobs.remove(&job);
                }
            }
        }
        self.inbox = inbox;
        phase
    }

    /// Keeps the pool at its size while there is (or may be) work: starts one missing
    /// worker per call (so that results are handled between two starts). Returns whether
    /// more are missing and can be started at once.
    fn keep_workers(&mut self, phase: Phase) -> bool {
        if self.broken.is_some() {
            return false;
        }
        let wanted = match phase {
            Phase::Running => self.config.processes,
            Phase::Closed if !self.jobs.is_empty() => self.config.processes,
            _ => 0,
        };
        let active = self.workers.iter().filter(|w| !w.retiring).count();
        if active >= wanted {
            return false;
        }
        if self.retry_start_at.is_some_and(|t| Instant::now() < t) {
            return false;
        }
        match self.start_worker() {
            Ok(w) => {
                self.workers.push(w);
                self.retry_start_at = None;
                self.publish_pids();
                active + 1 < wanted
            }
            Err(e) => {
                self.retry_start_at = Some(Instant::now() + Duration::from_millis(100));
                if self.workers.is_empty() {
                    self.start_failures += 1;
                    if self.start_failures >= START_FAILURES_MAX {
                        self.break_pool(Broken {
                            pid: 0,
                            exitcode: 1,
                            message: format!("the pool cannot start a worker: {e}"),
                        });
                    }
                }
                false
            }
        }
    }

    /// Starts a worker process with its pipes and progress word.
    fn start_worker(&mut self) -> Result<Worker> {
        let ((task_rx, task_tx), (result_rx, result_tx)) = worker_pipes()?;
        let progress = Progress::new()?;
        let boot = WorkerBoot {
            tasks: Connection::from_fd(task_rx),
            results: Connection::from_fd(result_tx),
            progress: progress.clone(),
            init: self.config.init.as_ref().map(|i| (i.func, i.args.clone(), i.fds.clone())),
            maxtasks: self.config.maxtasks.unwrap_or(0),
        };
        let n = WORKER_COUNTER.fetch_add(1, Ordering::Relaxed) + 1;
        let kind = match self.config.method {
            StartMethod::Fork => "Fork",
            _ => "Spawn",
        };
        let process = Process::builder(worker_main, boot)
            .name(format!("{kind}PoolWorker-{n}"))
            .daemon(true)
            .start_method(self.config.method)
            .build();
        process.start()?;
        let pid = process.pid().unwrap_or(0);
        Ok(Worker {
            process,
            pid,
            tx: task_tx,
            rx: result_rx,
            readable: true,
            writable: true,
            progress,
            inbuf: Vec::new(),
            out: VecDeque::new(),
            out_pos: 0,
            cur: Vec::new(),
            spare: Vec::new(),
            in_flight: VecDeque::new(),
            in_flight_bytes: 0,
            in_flight_items: 0,
            next_seq: 1,
            assigned: 0,
            ready: false,
            retiring: false,
            told_to_exit: false,
            exited: false,
        })
    }

    /// Publishes the pids of the workers that take work (not those on their way out).
    fn publish_pids(&self) {
        let pids = self.workers.iter().filter(|w| !w.retiring).map(|w| w.pid).collect();
        lock(&self.inner.shared).pids = pids;
    }

    /// Whether worker `w` should take one more chunk of `items` items. A worker holds at
    /// least two chunks (one to run, one to go on with while results travel), more while
    /// the work it holds is shorter than [`PIPELINE_NS`], and a chunk above
    /// [`SLOW_CHUNK_NS`] only when it has nothing else. Chunks are not handed out further
    /// ahead: one that waits here can still go to whichever worker is free first.
    fn has_room(&self, w: &Worker, items: usize) -> bool {
        if w.retiring || w.exited || !w.writable {
            return false;
        }
        let n = w.in_flight.len();
        if n == 0 {
            return true;
        }
        if n >= WINDOW_MAX || w.in_flight_bytes >= WORKER_BYTES_MAX {
            return false;
        }
        match self.item_ns {
            None => n < 2,
            Some(t) if t * items as f64 >= SLOW_CHUNK_NS => false,
            Some(t) => n < 2 || (w.in_flight_items as f64) * t < PIPELINE_NS,
        }
    }

    /// Gives pending chunks to the least loaded workers, up to the window.
    fn assign(&mut self) {
        if self.pending.is_empty() {
            return;
        }
        let maxtasks = self.config.maxtasks;
        // Per worker: the index in its output queue of the header of the frame being built.
        let mut frames: Vec<Option<usize>> = vec![None; self.workers.len()];
        let mut retired = false;
        loop {
            let next_items = loop {
                let Some(front) = self.pending.front() else { break None };
                if self.jobs.contains_key(&front.job) {
                    if let Some(items) = front.next_items() {
                        break Some(items);
                    }
                }
                // Exhausted, or its job is gone.
                self.pending.pop_front();
            };
            let Some(next_items) = next_items else { break };
            let mut best: Option<usize> = None;
            for (i, w) in self.workers.iter().enumerate() {
                if self.has_room(w, next_items)
                    && best.is_none_or(|b| w.in_flight.len() < self.workers[b].in_flight.len())
                {
                    best = Some(i);
                }
            }
            let Some(i) = best else { break };
            let Some(chunk) = self.pending.front_mut().and_then(Group::pop) else { break };
            let w = &mut self.workers[i];
            frames[i].get_or_insert_with(|| w.begin_frame());
            let seq = w.next_seq;
            w.next_seq = w.next_seq.wrapping_add(1).max(1);
            w.push_task(seq, &chunk);
            w.in_flight_bytes += chunk.range.len();
            w.in_flight_items += chunk.count as usize;
            w.in_flight.push_back((seq, chunk));
            w.assigned += 1;
            if maxtasks.is_some_and(|m| w.assigned >= m) {
                // The worker exits by itself after this chunk.
                w.retiring = true;
                retired = true;
            }
        }
        if retired {
            self.publish_pids();
        }
        for (i, frame) in frames.into_iter().enumerate() {
            if let Some(at) = frame {
                self.workers[i].end_frame(at);
            }
        }
    }

    /// Tells worker `i` to exit once it has done its work.
    fn retire(&mut self, i: usize) {
        let w = &mut self.workers[i];
        if w.told_to_exit || w.exited {
            return;
        }
        let at = w.begin_frame();
        w.cur.push(TAG_EXIT);
        w.end_frame(at);
        w.retiring = true;
        w.told_to_exit = true;
        self.write_some(i);
    }

    /// Writes as much of worker `i`'s output queue as its task pipe takes.
    fn write_some(&mut self, i: usize) {
        let w = &mut self.workers[i];
        while !w.out.is_empty() && w.writable {
            let mut slices = [std::io::IoSlice::new(&[]); 32];
            let mut n = 0;
            for (k, piece) in w.out.iter().take(slices.len()).enumerate() {
                let bytes = piece.bytes();
                slices[k] = std::io::IoSlice::new(if k == 0 { &bytes[w.out_pos..] } else { bytes });
                n = k + 1;
            }
            // A dead worker gives EPIPE (SIGPIPE is ignored, as in every Rust program and
            // in CPython).
            match write_vectored(&w.tx, &slices[..n]) {
                Transfer::Done(written) => w.advance(written),
                Transfer::Interrupted => continue,
                Transfer::WouldBlock => break,
                Transfer::Failed => {
                    // The worker is gone; its pidfd will say so.
                    w.writable = false;
                    w.out.clear();
                    w.out_pos = 0;
                }
            }
        }
    }

    /// Sleeps in `poll` until a worker sends, dies or can take more bytes, or a
    /// submission arrives; then handles what happened.
    ///
    /// With `hurry`, only looks (a worker is still to be started).
    fn wait(&mut self, hurry: bool) {
        let mut timeout = self.retry_start_at.map(|t| t.saturating_duration_since(Instant::now()));
        if hurry {
            timeout = Some(Duration::ZERO);
        }
        {
            let mut shared = lock(&self.inner.shared);
            if !shared.inbox.is_empty() || shared.phase != self.phase {
                timeout = Some(Duration::ZERO);
            } else {
                shared.sleeping = true;
            }
        }
        // (worker index, what happened) for each worker that needs attention.
        let ready = self.poll_workers(timeout);
        {
            let mut shared = lock(&self.inner.shared);
            shared.sleeping = false;
        }
        drain_wakes(&self.inner.wake);
        for &(i, bits) in &ready {
            if bits & EV_READ != 0 {
                self.read_worker(i);
            }
            if bits & EV_WRITE != 0 {
                self.write_some(i);
            }
        }
        for &(i, bits) in &ready {
            if bits & EV_EXITED != 0 {
                self.on_exit(i);
            }
        }
        if self.workers.iter().any(|w| w.exited) {
            self.workers.retain(|w| !w.exited);
            self.publish_pids();
        }
    }

    /// Reads what worker `i` sent and handles every complete message.
    fn read_worker(&mut self, i: usize) {
        let mut inbuf = std::mem::take(&mut self.workers[i].inbuf);
        loop {
            let w = &mut self.workers[i];
            if !w.readable {
                break;
            }
            // Room for the frame being received (its header says how big), or 256 KiB.
            let want = match frame_at(&inbuf) {
                Frame::Partial => match inbuf.get(..4).and_then(|b| b.try_into().ok()) {
                    Some(h) if i32::from_be_bytes(h) >= 0 => i32::from_be_bytes(h) as usize + 4,
                    _ => 0,
                },
                _ => 0,
            };
            let want = want.saturating_sub(inbuf.len()).clamp(64 * 1024, 64 << 20);
            if inbuf.capacity() - inbuf.len() < want {
                inbuf.reserve(want.max(256 * 1024));
            }
            match read_appending(&w.rx, &mut inbuf) {
                Transfer::Done(0) => w.readable = false,
                Transfer::Done(_) => {}
                Transfer::Interrupted => continue,
                Transfer::WouldBlock => break,
                Transfer::Failed => w.readable = false,
            }
            // Handle complete frames as they come, so that memory stays bounded.
            let used = self.handle_frames(i, &inbuf);
            inbuf.drain(..used);
        }
        if inbuf.capacity() > 4 * FLUSH_BYTES && inbuf.len() < FLUSH_BYTES {
            inbuf.shrink_to(FLUSH_BYTES);
        }
        self.workers[i].inbuf = inbuf;
    }

    /// Handles the complete frames at the start of `buf`; returns the bytes they used.
    fn handle_frames(&mut self, i: usize, buf: &[u8]) -> usize {
        let mut used = 0;
        loop {
            let (header, len) = match frame_at(&buf[used..]) {
                Frame::Complete(header, len) => (header, len),
                Frame::Partial => return used,
                Frame::Bad => (0, usize::MAX),
            };
            let ok = len != usize::MAX && {
                let payload = &buf[used + header..used + header + len];
                used += header + len;
                self.handle_message(i, payload)
            };
            if !ok {
                // Garbage from our own worker: stop trusting it.
                eprintln!(
                    "multiproc: pool worker {} sent a malformed message",
                    self.workers[i].pid
                );
                let _ = self.workers[i].process.kill();
                self.workers[i].readable = false;
                return buf.len();
            }
        }
    }

    /// Handles one message from worker `i`; `false` if it is malformed.
    fn handle_message(&mut self, i: usize, payload: &[u8]) -> bool {
        let mut rd = Rd::new(payload);
        while !rd.done() {
            match rd.u8() {
                Some(TAG_READY) => {
                    self.workers[i].ready = true;
                    self.start_failures = 0;
                }
                Some(TAG_INIT_FAILED) => {
                    let Some(message) = rd.blob() else { return false };
                    let message = String::from_utf8_lossy(message).into_owned();
                    let w = &self.workers[i];
                    self.break_pool(Broken {
                        pid: w.pid,
                        exitcode: 1,
                        message: format!("the pool's initializer failed: {message}"),
                    });
                }
                Some(TAG_RESULT) => {
                    if !self.handle_result(i, &mut rd) {
                        return false;
                    }
                }
                _ => return false,
            }
        }
        true
    }

    /// Handles a RESULT record from worker `i` (after its tag); `false` if it is malformed.
    fn handle_result(&mut self, i: usize, rd: &mut Rd<'_>) -> bool {
        let (Some(seq), Some(elapsed), Some(count)) = (rd.u32(), rd.u64(), rd.u32()) else {
            return false;
        };
        let w = &mut self.workers[i];
        let pid = w.pid;
        match w.in_flight.front() {
            Some((s, c)) if *s == seq && c.count == count => {}
            _ => return false,
        }
        let Some((_, chunk)) = w.in_flight.pop_front() else { return false };
        w.in_flight_bytes -= chunk.range.len();
        w.in_flight_items -= chunk.count as usize;
        let Some(items) = Outcomes::take(rd, count, pid) else { return false };
        let per_item = elapsed as f64 / f64::from(count.max(1));
        self.item_ns = Some(match self.item_ns {
            None => per_item,
            Some(t) => t * 0.75 + per_item * 0.25,
        });
        self.deliver(chunk.job, chunk.start, items);
        true
    }

    /// Delivers outcomes to a job; completes or drops the job as needed.
    fn deliver(&mut self, job: u64, start: usize, items: Outcomes<'_>) {
        let Some(entry) = self.jobs.get_mut(&job) else { return };
        entry.outstanding = entry.outstanding.saturating_sub(items.len());
        let keep =
            catch_unwind(AssertUnwindSafe(|| entry.sink.deliver(start, items))).unwrap_or(false);
        if !keep {
            self.jobs.remove(&job);
        } else {
            self.check_complete(job);
        }
    }

    /// Completes job `job` if no more chunks come and every outcome was delivered.
    fn check_complete(&mut self, job: u64) {
        if self.jobs.get(&job).is_some_and(|e| !e.open && e.outstanding == 0) {
            if let Some(mut entry) = self.jobs.remove(&job) {
                let _ = catch_unwind(AssertUnwindSafe(|| entry.sink.complete()));
            }
        }
    }

    /// Worker `i` has exited: collects what it sent, fails the task it was running,
    /// gives its other chunks to the pending queue, and reaps it.
    fn on_exit(&mut self, i: usize) {
        // Everything the worker wrote before it died is in the pipe by now.
        self.read_worker(i);
        let w = &mut self.workers[i];
        w.exited = true;
        let _ = w.process.join_timeout(Duration::from_secs(5));
        let exitcode = w.process.exitcode().unwrap_or(-sys::proc::SIGKILL);
        let pid = w.pid;
        let ready = w.ready;
        let progress = w.progress.word().load(Ordering::Acquire);
        let in_flight = std::mem::take(&mut w.in_flight);
        w.in_flight_bytes = 0;
        w.in_flight_items = 0;
        let (running_seq, running_item) = ((progress >> 32) as u32, progress as u32);
        let mut requeue: Vec<Chunk> = Vec::new();
        let mut guilty: Option<(u64, usize)> = None;
        for (seq, chunk) in in_flight {
            if seq != running_seq || running_item >= chunk.count {
                requeue.push(chunk);
                continue;
            }
            let ranges = chunk.item_ranges();
            let k = running_item as usize;
            if ranges.len() != chunk.count as usize {
                requeue.push(chunk);
                continue;
            }
            requeue.extend(chunk.slice(&ranges, 0, k));
            guilty = Some((chunk.job, chunk.start + k));
            requeue.extend(chunk.slice(&ranges, k + 1, ranges.len()));
        }
        for chunk in requeue.into_iter().rev() {
            self.pending.push_front(Group::single(chunk));
        }
        if let Some((job, index)) = guilty {
            let how = ExitStatus::from_exitcode(exitcode).describe();
            let message = format!("the worker {how} while running this task");
            let error = Error::ProcessFailed { pid, exitcode, message };
            self.deliver(job, index, Outcomes::One(Some(error)));
        }
        if !ready {
            self.start_failures += 1;
            if self.start_failures >= START_FAILURES_MAX && self.broken.is_none() {
                self.break_pool(Broken {
                    pid,
                    exitcode,
                    message: format!(
                        "{START_FAILURES_MAX} pool workers in a row ended before they were \
                         ready; the last {}",
                        ExitStatus::from_exitcode(exitcode).describe()
                    ),
                });
            }
        }
    }

    /// The pool cannot work: fail every job, refuse new ones.
    fn break_pool(&mut self, broken: Broken) {
        if self.broken.is_some() {
            return;
        }
        lock(&self.inner.shared).broken = Some(broken.clone());
        for (_, mut entry) in self.jobs.drain() {
            let _ = catch_unwind(AssertUnwindSafe(|| entry.sink.abort(broken.error())));
        }
        self.pending.clear();
        self.broken = Some(broken);
        for i in 0..self.workers.len() {
            self.retire(i);
        }
    }

    /// Stops every worker: `SIGTERM`, then `SIGKILL` after a grace period; reaps them.
    fn kill_all(&mut self) {
        for w in &self.workers {
            let _ = w.process.terminate();
        }
        let deadline = Instant::now() + TERMINATE_GRACE;
        for w in &self.workers {
            let left = deadline.saturating_duration_since(Instant::now());
            if w.process.join_timeout(left).is_err() {
                let _ = w.process.kill();
                let _ = w.process.join_timeout(Duration::from_secs(10));
            }
        }
        self.workers.clear();
        self.publish_pids();
    }

    /// Ends every job that is left with `error`, marks the pool finished.
    fn finish(&mut self, error: Error) {
        for (_, mut entry) in self.jobs.drain() {
            let e = match &self.broken {
                Some(b) => b.error(),
                None => clone_error(&error),
            };
            let _ = catch_unwind(AssertUnwindSafe(|| entry.sink.abort(e)));
        }
        self.pending.clear();
        let leftover = {
            let mut shared = lock(&self.inner.shared);
            shared.finished = true;
            shared.pids.clear();
            std::mem::take(&mut shared.inbox)
        };
        // Jobs submitted at the last moment: their sinks complete with an error on drop.
        for sub in leftover {
            if let Submission::NewJob { mut sink, .. } = sub {
                sink.abort(clone_error(&error));
            }
        }
        self.inner.changed.notify_all();
    }
}

/// `e` again, for one more job (an [`Error`] is not `Clone`).
fn clone_error(e: &Error) -> Error {
    match e {
        Error::Closed(what) => Error::Closed(what),
        Error::ProcessFailed { pid, exitcode, message } => {
            Error::ProcessFailed { pid: *pid, exitcode: *exitcode, message: message.clone() }
        }
        other => Error::Protocol(other.to_string()),
    }
}

// --------------------------------------------------------------------------------------
// Operating-system calls
//
// Every call that the pool makes to the system itself is here: the dispatcher's wake-up
// eventfd, a worker's two pipes, the non-blocking reads and writes on them, and the one
// `poll` that the dispatcher sleeps in. (A worker process talks through `Connection`.)

/// A polled descriptor of a worker: its result pipe.
const SLOT_RESULTS: u8 = 0;
/// A polled descriptor of a worker: its task pipe.
const SLOT_TASKS: u8 = 1;
/// A polled descriptor of a worker: its pidfd.
const SLOT_SENTINEL: u8 = 2;
/// What `poll` found for a worker: results to read.
const EV_READ: u8 = 1;
/// What `poll` found for a worker: room in its task pipe (or an error there).
const EV_WRITE: u8 = 2;
/// What `poll` found for a worker: it has exited.
const EV_EXITED: u8 = 4;

impl Dispatcher {
    /// Waits in `poll`, at most `timeout`, on the wake-up eventfd and on every worker's
    /// pipes and pidfd; returns (worker index, `EV_*` bits) for each worker with news.
    fn poll_workers(&self, timeout: Option<Duration>) -> Vec<(usize, u8)> {
        use crate::sys::poll::{PollFd, PollFlags};
        // (worker index, what) for each descriptor polled after the eventfd.
        let mut slots: Vec<(usize, u8)> = Vec::with_capacity(self.workers.len() * 2);
        let mut fds = Vec::with_capacity(1 + self.workers.len() * 2);
        fds.push(PollFd::new(&self.inner.wake, PollFlags::IN));
        for (i, w) in self.workers.iter().enumerate() {
            if w.readable {
                fds.push(PollFd::new(&w.rx, PollFlags::IN));
                slots.push((i, SLOT_RESULTS));
            }
            if w.writable && !w.out.is_empty() {
                fds.push(PollFd::new(&w.tx, PollFlags::OUT));
                slots.push((i, SLOT_TASKS));
            }
            if let Some(sentinel) = w.process.sentinel() {
                fds.push(PollFd::from_borrowed_fd(sentinel, PollFlags::IN));
                slots.push((i, SLOT_SENTINEL));
            }
        }
        let deadline = crate::deadline::within(timeout);
        let _ = poll_until(&mut fds, deadline);
        fds[1..]
            .iter()
            .zip(&slots)
            .filter(|(fd, _)| !fd.revents().is_empty())
            .map(|(fd, &(i, what))| {
                let r = fd.revents();
                let bits = match what {
                    SLOT_SENTINEL => EV_EXITED,
                    SLOT_RESULTS if !r.is_empty() => EV_READ,
                    _ if r.intersects(PollFlags::OUT | PollFlags::ERR | PollFlags::HUP) => EV_WRITE,
                    _ => 0,
                };
                (i, bits)
            })
            .collect()
    }
}

/// An eventfd that wakes the dispatcher (close-on-exec, non-blocking).
pub(super) fn wake_fd() -> Result<OwnedFd> {
    Ok(sys::fd::eventfd()?)
}

/// Wakes the dispatcher from its `poll` through the eventfd `fd`.
pub(super) fn wake(fd: &OwnedFd) {
    let _ = sys::fd::write(fd, &1u64.to_ne_bytes());
}

/// Clears the wake-ups counted in the eventfd `fd`.
fn drain_wakes(fd: &OwnedFd) {
    let mut drain = [0u8; 8];
    let _ = sys::fd::read(fd, &mut drain);
}

/// The pipes of a new worker, `((task read end, task write end), (result read end, result
/// write end))`, all close-on-exec; the parent's ends (task write, result read) do not
/// block.
fn worker_pipes() -> Result<((OwnedFd, OwnedFd), (OwnedFd, OwnedFd))> {
    // Two pipes rather than a socket pair: a pipe can hold 1 MiB (a socket's buffer is
    // capped lower), so a large chunk or batch of results crosses in one piece instead
    // of in several hand-offs between two busy processes.
    let (task_rx, task_tx) = sys::fd::pipe()?;
    let (result_rx, result_tx) = sys::fd::pipe()?;
    for end in [&task_tx, &result_tx] {
        // The system may refuse (per-user pipe memory): then only speed suffers.
        let _ = sys::fd::set_pipe_size(end, PIPE_BYTES);
    }
    // The parent's ends never block: the dispatcher polls them.
    sys::fd::set_nonblocking(&task_tx)?;
    sys::fd::set_nonblocking(&result_rx)?;
    Ok(((task_rx, task_tx), (result_rx, result_tx)))
}

/// How a non-blocking read or write on a pipe went.
enum Transfer {
    /// This many bytes moved (0 for a read: the end of the stream).
    Done(usize),
    /// A signal interrupted the call: try again.
    Interrupted,
    /// The pipe is full (write) or empty (read).
    WouldBlock,
    /// Any other error: the other end is gone.
    Failed,
}

impl From<std::io::Result<usize>> for Transfer {
    fn from(result: std::io::Result<usize>) -> Transfer {
        use std::io::ErrorKind;
        match result {
            Ok(n) => Transfer::Done(n),
            Err(e) if e.kind() == ErrorKind::Interrupted => Transfer::Interrupted,
            Err(e) if e.kind() == ErrorKind::WouldBlock => Transfer::WouldBlock,
            Err(_) => Transfer::Failed,
        }
    }
}

/// `writev` of `slices` to the pipe `fd`.
fn write_vectored(fd: &OwnedFd, slices: &[std::io::IoSlice<'_>]) -> Transfer {
    sys::fd::writev(fd, slices).into()
}

/// A `read` from the pipe `fd` into the spare capacity of `buf`, which grows by what was
/// read.
fn read_appending(fd: &OwnedFd, buf: &mut Vec<u8>) -> Transfer {
    sys::fd::read_spare(fd, buf).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `close` wakes the dispatcher only if it is asleep. A `close` that lands after the
    /// dispatcher looked at the phase but before it went to sleep must still end its sleep:
    /// on a loaded machine that window is wide, and `join` then waited for ever.
    #[test]
    fn a_close_between_looking_and_sleeping_is_not_lost() {
        let inner = Arc::new(Inner::new(1).unwrap());
        let config =
            Config { processes: 1, method: StartMethod::Spawn, maxtasks: None, init: None };
        let mut d = Dispatcher::new(inner.clone(), config);
        assert_eq!(d.absorb(), Phase::Running);
        inner.close();
        let (done_tx, done_rx) = mpsc::channel();
        std::thread::spawn(move || {
            // No workers and no start to retry: only the eventfd can end this sleep.
            d.wait(false);
            let _ = done_tx.send(d.absorb());
        });
        let phase = done_rx
            .recv_timeout(Duration::from_secs(60))
            .expect("the dispatcher slept through a close() it had not seen");
        assert_eq!(phase, Phase::Closed);
    }
}
