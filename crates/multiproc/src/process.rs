//! Processes: [`Process`] (Python's `multiprocessing.Process`, with a [`ProcessBuilder`]
//! for its settings) and [`spawn`], which returns the child's value like
//! `std::thread::spawn`.
//!
//! # How a child runs its target
//! A target is a plain function `fn(A) -> R` (a closure that captures nothing coerces to
//! one). Its argument is owned (one value, or a tuple of several); a [`Process`] target
//! returns `()` or `Result<(), E>` ([`TargetResult`]), a [`spawn`] target any serializable
//! value. With the default [`StartMethod::Spawn`] the parent executes its own binary again;
//! before `main` the child receives a bootstrap message naming the function (as an offset
//! within the executable image, see `sys::fnptr`), the arguments encoded with serde, and
//! the descriptors of any [`Connection`]s among them. It calls the function, sends back
//! the value or the panic message, and exits without ever running `main`. So there is no
//! ceremony: it works the same in binaries, examples, tests and doc-tests.
//!
//! The function must belong to the program itself: one from a shared object loaded at run
//! time (a `cdylib` opened with `dlopen`) is not where the child would look for it, so
//! [`Process::start`] refuses it with [`Error::InvalidArgument`] before anything is
//! started. Under [`StartMethod::Fork`] the child shares the parent's address space and
//! any function will do.
//!
//! # Panics in the child
//! A panic of the target reaches the parent ([`Process::panic_message`], or the error of
//! [`JoinHandle::join`]) and prints nothing in the child, not even with `RUST_BACKTRACE`
//! set: an expected panic stays quiet. A panic the library does not catch (on another
//! thread of the child) prints as usual.
//!
//! # Exit codes
//! As in Python: `None` while running, `0` on success, `N` after
//! `std::process::exit(N)`, `1` after a panic or an `Err`, `-N` when killed by signal `N`.
//! [`Process::join`] returns them as an [`ExitStatus`].
//!
//! # Reaping
//! [`Process::join`], [`Process::is_alive`] and [`Process::exitcode`] reap the child. A
//! `Process` dropped while its child still runs hands the child to a list that
//! [`Process::start`] and [`active_children`] reap later, so no zombie outlives the next
//! call into the library.

use std::cell::Cell;
use std::fmt;
use std::io::Write;
use std::marker::PhantomData;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Mutex, Once, OnceLock};
use std::time::{Duration, Instant};

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::codec::Codec;
use crate::connection::{poll_until, Connection, Waitable};
use crate::context::{self, Lineage, ProcessInfo, StartMethod};
use crate::error::{Error, Result};
use crate::reduction;
use crate::sync_util::{get_mut, lock};
use crate::sys;
use crate::sys::poll::{PollFd, PollFlags};
use crate::sys::proc::{PidFd, Signal};

/// Whether process `pid` is alive (it lives in `sys::proc`; the managers' server still
/// names it here).
pub(crate) use crate::sys::proc::pid_is_alive;

/// What a child reports to its parent before it exits.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum ChildOutcome {
    /// The target returned; its value, encoded.
    Returned(Vec<u8>),
    /// The target panicked with this message.
    Panicked(String),
    /// The target returned an `Err` with this message.
    Errored(String),
    /// The arguments could not be decoded, or the result could not be encoded.
    Failed(String),
}

impl ChildOutcome {
    fn exit_code(&self) -> i32 {
        match self {
            ChildOutcome::Returned(_) => 0,
            ChildOutcome::Panicked(_) | ChildOutcome::Errored(_) | ChildOutcome::Failed(_) => 1,
        }
    }
}

/// The first message a spawned child receives.
#[derive(Serialize, Deserialize)]
struct Bootstrap {
    layout: isize,
    trampoline: isize,
    target: isize,
    args: Vec<u8>,
    name: String,
    identity: Vec<u32>,
    daemon: bool,
    parent_pid: i32,
    parent_name: String,
}

type Launch = Box<dyn FnOnce(&LaunchInfo) -> Result<Running> + Send>;

struct LaunchInfo {
    name: String,
    identity: Vec<u32>,
    daemon: bool,
    method: StartMethod,
}

struct Running {
    pid: i32,
    /// A pidfd for the child: readable once it has ended, and the handle for signals and
    /// `waitid` that cannot hit a recycled pid.
    pidfd: PidFd,
    /// The bootstrap socket, over which the outcome arrives; `None` once it is read.
    channel: Option<Connection>,
    outcome: Option<ChildOutcome>,
    exitcode: Option<i32>,
}

enum State {
    Created(Launch),
    Starting,
    Started(Running),
    Closed,
}

/// A child process running a function, as Python's `multiprocessing.Process`.
///
/// [`Process::new`] makes one with the default settings; [`Process::builder`] chooses a
/// name, daemon, start method or kill-on-drop first. [`join`](Self::join) waits for it
/// and returns its [`ExitStatus`].
///
/// ```
/// use multiproc::Process;
///
/// fn worker((name, n): (String, u32)) {
///     println!("{name} counts to {n}");
///     assert!(n < 10, "too many");
/// }
///
/// let p = Process::builder(worker, ("Process-1".to_string(), 3)).name("counter").start()?;
/// assert!(p.join()?.success());
///
/// // A panic in the child: exit code 1, and its message reaches the parent.
/// let p = Process::new(worker, ("big".to_string(), 20));
/// p.start()?;
/// assert_eq!(p.join()?.exitcode(), 1);
/// assert!(p.panic_message().unwrap().contains("too many"));
/// # Ok::<(), multiproc::Error>(())
/// ```
pub struct Process {
    name: String,
    daemon: bool,
    method: Option<StartMethod>,
    kill_on_drop: bool,
    identity: Vec<u32>,
    state: Mutex<State>,
    /// A duplicate of the child's pidfd, lent out by [`Process::sentinel`].
    sentinel: OnceLock<OwnedFd>,
}

static CHILD_COUNTER: AtomicU32 = AtomicU32::new(0);

/// What a [`Process`] target may return: `()`, or `Result<(), E>` for any `E` that
/// implements [`Display`](fmt::Display) (every `std::error::Error`, [`Error`],
/// `Box<dyn Error>`, `String`, …), so a target can use `?`.
///
/// An `Err` ends the child with exit code 1 and its message reaches the parent as a
/// panic's does ([`Process::panic_message`]).
///
/// A closure that never returns (`|_: ()| panic!()`, `|n: i32| std::process::exit(n)`)
/// names its return type, `|_: ()| -> () { panic!() }`: the compiler cannot pick one for it.
///
/// ```
/// use multiproc::Process;
///
/// fn parse(text: String) -> Result<(), std::num::ParseIntError> {
///     let n: u32 = text.parse()?;
///     println!("{n}");
///     Ok(())
/// }
///
/// let p = Process::new(parse, "twelve".to_string());
/// p.start()?;
/// assert_eq!(p.join()?.exitcode(), 1);
/// assert_eq!(p.panic_message().as_deref(), Some("invalid digit found in string"));
/// # Ok::<(), multiproc::Error>(())
/// ```
pub trait TargetResult {
    /// `Ok(())`, or the message of the error that ends the child.
    fn into_message(self) -> std::result::Result<(), String>;
}

impl TargetResult for () {
    fn into_message(self) -> std::result::Result<(), String> {
        Ok(())
    }
}

impl<E: fmt::Display> TargetResult for std::result::Result<(), E> {
    fn into_message(self) -> std::result::Result<(), String> {
        self.map_err(|e| e.to_string())
    }
}

impl Process {
    /// A process that will run `target(args)` once [started](Self::start), with the
    /// default settings (see [`builder`](Self::builder) for the others).
    ///
    /// `target` is a plain function (a closure that captures nothing coerces to one)
    /// taking one argument, which may be a tuple; it returns `()` or `Result<(), E>`
    /// ([`TargetResult`]).
    ///
    /// **Arguments are owned.** Under the default spawn method they are encoded with serde
    /// when the process starts and decoded in the child, so they must be
    /// `Serialize + DeserializeOwned`: a `String`, not a `&str` (a borrowed argument gives
    /// an error about `Deserialize<'0>` not being general enough); a `Vec<T>`, not a
    /// `&[T]`. Your own types derive `serde::Serialize` and `serde::Deserialize` (add
    /// `serde = { version = "1", features = ["derive"] }` to your Cargo.toml).
    /// [`Connection`]s among the arguments are passed as descriptors.
    ///
    /// Under the spawn method `target` must be a function of the program itself, not of a
    /// shared object loaded at run time: [`start`](Self::start) refuses one with
    /// [`Error::InvalidArgument`].
    ///
    /// ```
    /// use multiproc::{pipe, Connection, Process};
    ///
    /// fn greet(name: String) {
    ///     assert_eq!(name, "world");
    /// }
    /// let p = Process::new(greet, "world".to_string());
    /// p.start()?;
    /// assert!(p.join()?.success());
    ///
    /// // One argument is passed as it is; several go in a tuple.
    /// fn child(conn: Connection) {
    ///     conn.send(&"hello").unwrap();
    /// }
    /// let (parent_end, child_end) = pipe(true)?;
    /// let p = Process::new(child, child_end);
    /// p.start()?;
    /// assert_eq!(parent_end.recv::<String>()?, "hello");
    /// p.join()?;
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    ///
    /// A borrowed argument does not compile ("implementation of `Deserialize` is not
    /// general enough … `Deserialize<'0>`"): take a `String` instead, as above.
    ///
    /// ```compile_fail
    /// fn greet(name: &str) {}
    /// let p = multiproc::Process::new(greet, "world");
    /// ```
    pub fn new<A, R>(target: fn(A) -> R, args: A) -> Process
    where
        A: Serialize + DeserializeOwned + Send + 'static,
        R: TargetResult + 'static,
    {
        Process::builder(target, args).build()
    }

    /// A [`ProcessBuilder`] for `target(args)`, to choose the name, daemon flag, start
    /// method or kill-on-drop before the process starts (Python's keyword arguments of
    /// `Process(...)`). Arguments are as for [`new`](Self::new).
    ///
    /// ```
    /// use multiproc::{Process, StartMethod};
    ///
    /// let p = Process::builder(|n: u32| assert_eq!(n, 3), 3)
    ///     .name("worker")
    ///     .start_method(StartMethod::Fork)
    ///     .start()?;
    /// assert_eq!(p.name(), "worker");
    /// assert!(p.join()?.success());
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn builder<A, R>(target: fn(A) -> R, args: A) -> ProcessBuilder
    where
        A: Serialize + DeserializeOwned + Send + 'static,
        R: TargetResult + 'static,
    {
        let launch: Launch = Box::new(move |info: &LaunchInfo| match info.method {
            StartMethod::Spawn => {
                let offsets = sys::spawn::trampoline_offsets::<Statuses, A, R>(target)
                    .map_err(|e| Error::InvalidArgument(e.to_string()))?;
                launch_spawn(offsets, &args, info)
            }
            StartMethod::Fork => launch_fork(move || call_process_target(target, args), info),
        });
        ProcessBuilder { process: Process::unstarted(launch) }
    }

    fn with_result<A, R>(target: fn(A) -> R, args: A) -> Process
    where
        A: Serialize + DeserializeOwned + Send + 'static,
        R: Serialize + DeserializeOwned + 'static,
    {
        let launch: Launch = Box::new(move |info: &LaunchInfo| match info.method {
            StartMethod::Spawn => {
                let offsets =
                    offsets_for(target).map_err(|e| Error::InvalidArgument(e.to_string()))?;
                launch_spawn(offsets, &args, info)
            }
            StartMethod::Fork => launch_fork(move || call_target(target, args), info),
        });
        Process::unstarted(launch)
    }

    fn unstarted(launch: Launch) -> Process {
        let n = CHILD_COUNTER.fetch_add(1, Ordering::Relaxed) + 1;
        let mut identity = context::current_process().identity;
        identity.push(n);
        let name = format!(
            "Process-{}",
            identity.iter().map(u32::to_string).collect::<Vec<_>>().join(":")
        );
        Process {
            name,
            daemon: false,
            method: None,
            kill_on_drop: false,
            identity,
            state: Mutex::new(State::Created(launch)),
            sentinel: OnceLock::new(),
        }
    }

    /// The name (Python's `name`): `Process-N` unless the builder gave one.
    ///
    /// ```
    /// let p = multiproc::Process::new(|_: ()| {}, ());
    /// assert!(p.name().starts_with("Process-"));
    /// ```
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Whether the process is a daemon (Python's `daemon`).
    ///
    /// ```
    /// assert!(!multiproc::Process::new(|_: ()| {}, ()).is_daemon());
    /// ```
    pub fn is_daemon(&self) -> bool {
        self.daemon
    }

    /// Starts the child. A process can be started once.
    ///
    /// ```
    /// let p = multiproc::Process::new(|_: ()| {}, ());
    /// p.start()?;
    /// assert!(p.start().is_err());
    /// p.join()?;
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn start(&self) -> Result<()> {
        reap_dropped();
        let launch = {
            let mut state = self.lock();
            match std::mem::replace(&mut *state, State::Starting) {
                State::Created(launch) => launch,
                other => {
                    *state = other;
                    return Err(Error::ProcessState("a process can be started only once"));
                }
            }
        };
        let info = LaunchInfo {
            name: self.name.clone(),
            identity: self.identity.clone(),
            daemon: self.daemon,
            method: self.method.unwrap_or_else(context::get_start_method),
        };
        match launch(&info) {
            Ok(running) => {
                register_child(running.pid, &self.name);
                if let Ok(dup) = running.pidfd.try_clone_fd() {
                    let _ = self.sentinel.set(dup);
                }
                *self.lock() = State::Started(running);
                Ok(())
            }
            Err(e) => {
                *self.lock() = State::Closed;
                Err(e)
            }
        }
    }

    /// Waits for the process to end and returns how it ended, whatever that was (a
    /// non-zero exit is not an error here; see [`ExitStatus`]). Python's `join()`.
    ///
    /// ```
    /// let p = multiproc::Process::new(|_: ()| -> () { std::process::exit(3) }, ());
    /// p.start()?;
    /// let status = p.join()?;
    /// assert_eq!(status.code(), Some(3));
    /// assert_eq!(p.join()?, status); // joining again returns the same status
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn join(&self) -> Result<ExitStatus> {
        self.join_deadline(None, Duration::MAX)
    }

    /// Like [`join`](Self::join), waiting at most `timeout`: [`Error::Timeout`] if the
    /// process still runs then. Python's `join(timeout)`.
    ///
    /// ```
    /// use std::time::Duration;
    /// let p = multiproc::Process::new(|_: ()| std::thread::sleep(Duration::from_secs(30)), ());
    /// p.start()?;
    /// assert!(matches!(p.join_timeout(Duration::from_millis(50)), Err(multiproc::Error::Timeout(_))));
    /// p.kill()?;
    /// assert_eq!(p.join_timeout(Duration::from_secs(30))?.signal(), Some(9));
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn join_timeout(&self, timeout: Duration) -> Result<ExitStatus> {
        self.join_deadline(crate::deadline::after(timeout), timeout)
    }

    /// Like [`join`](Self::join) without waiting: [`Error::WouldBlock`] while the process
    /// runs.
    ///
    /// ```
    /// use std::time::Duration;
    /// let p = multiproc::Process::new(|_: ()| std::thread::sleep(Duration::from_secs(30)), ());
    /// p.start()?;
    /// assert!(matches!(p.try_join(), Err(multiproc::Error::WouldBlock)));
    /// p.kill()?;
    /// p.join()?;
    /// assert_eq!(p.try_join()?.exitcode(), -9);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn try_join(&self) -> Result<ExitStatus> {
        self.join_timeout(Duration::ZERO).map_err(Error::not_waiting)
    }

    fn join_deadline(&self, deadline: Option<Instant>, timeout: Duration) -> Result<ExitStatus> {
        let mut state = self.lock();
        let running = started(&mut state)?;
        if running.wait(deadline)? {
            Ok(ExitStatus(running.exitcode.unwrap_or(1)))
        } else {
            Err(Error::Timeout(timeout))
        }
    }

    /// Whether the process has started and not yet ended.
    ///
    /// ```
    /// let p = multiproc::Process::new(|_: ()| {}, ());
    /// assert!(!p.is_alive());
    /// p.start()?;
    /// p.join()?;
    /// assert!(!p.is_alive());
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn is_alive(&self) -> bool {
        let mut state = self.lock();
        match &mut *state {
            State::Started(running) => !running.wait(Some(Instant::now())).unwrap_or(true),
            _ => false,
        }
    }

    /// Python's exit code: `None` while running (or not started), `0`, `N` for
    /// `exit(N)`, `1` for a panic, `-N` when killed by signal `N`.
    ///
    /// ```
    /// let p = multiproc::Process::new(|_: ()| -> () { std::process::exit(3) }, ());
    /// assert_eq!(p.exitcode(), None);
    /// p.start()?;
    /// p.join()?;
    /// assert_eq!(p.exitcode(), Some(3));
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn exitcode(&self) -> Option<i32> {
        let mut state = self.lock();
        match &mut *state {
            State::Started(running) => {
                let _ = running.wait(Some(Instant::now()));
                running.exitcode
            }
            _ => None,
        }
    }

    /// The message of the panic that ended the child, once it has ended that way; also
    /// the message of the `Err` its target returned ([`TargetResult`]), or why the child
    /// could not run its target.
    ///
    /// ```
    /// let p = multiproc::Process::new(|_: ()| -> () { panic!("boom") }, ());
    /// p.start()?;
    /// p.join()?;
    /// assert_eq!(p.panic_message().as_deref(), Some("boom"));
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn panic_message(&self) -> Option<String> {
        let state = self.lock();
        match &*state {
            State::Started(Running {
                outcome:
                    Some(
                        ChildOutcome::Panicked(m)
                        | ChildOutcome::Errored(m)
                        | ChildOutcome::Failed(m),
                    ),
                ..
            }) => Some(m.clone()),
            _ => None,
        }
    }

    /// The child's pid, once started.
    ///
    /// ```
    /// let p = multiproc::Process::new(|_: ()| {}, ());
    /// assert_eq!(p.pid(), None);
    /// p.start()?;
    /// assert!(p.pid().unwrap() > 0);
    /// p.join()?;
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn pid(&self) -> Option<i32> {
        match &*self.lock() {
            State::Started(r) => Some(r.pid),
            _ => None,
        }
    }

    /// Sends `SIGTERM` (Python's `terminate()`). Does nothing if the process has ended.
    ///
    /// ```
    /// let p = multiproc::Process::new(|_: ()| std::thread::sleep(std::time::Duration::from_secs(30)), ());
    /// p.start()?;
    /// p.terminate()?;
    /// p.join()?;
    /// assert_eq!(p.exitcode(), Some(-15));
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn terminate(&self) -> Result<()> {
        self.signal(Signal::Term)
    }

    /// Sends `SIGKILL` (Python's `kill()`). Does nothing if the process has ended.
    ///
    /// ```
    /// let p = multiproc::Process::new(|_: ()| std::thread::sleep(std::time::Duration::from_secs(30)), ());
    /// p.start()?;
    /// p.kill()?;
    /// p.join()?;
    /// assert_eq!(p.exitcode(), Some(-9));
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn kill(&self) -> Result<()> {
        self.signal(Signal::Kill)
    }

    fn signal(&self, signal: Signal) -> Result<()> {
        let mut state = self.lock();
        let running = started(&mut state)?;
        if running.exitcode.is_some() {
            return Ok(());
        }
        // A pidfd names exactly this child, even if its pid were reused.
        Ok(running.pidfd.send(signal)?)
    }

    /// Releases the process's resources (Python's `close()`); an error while it runs.
    ///
    /// ```
    /// let p = multiproc::Process::new(|_: ()| {}, ());
    /// p.start()?;
    /// p.join()?;
    /// p.close()?;
    /// assert!(p.join().is_err());
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn close(&self) -> Result<()> {
        let mut state = self.lock();
        if let State::Started(running) = &mut *state {
            if !running.wait(Some(Instant::now()))? {
                return Err(Error::ProcessState(
                    "cannot close a process while it is still running; join or kill it first",
                ));
            }
        }
        *state = State::Closed;
        Ok(())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        lock(&self.state)
    }

    /// The result value, when the child returned one.
    fn take_result<R: DeserializeOwned>(&self) -> Result<R> {
        let mut state = self.lock();
        let running = started(&mut state)?;
        let pid = running.pid;
        let exitcode = running.exitcode.unwrap_or(1);
        match running.outcome.take() {
            Some(ChildOutcome::Returned(bytes)) => Codec::Postcard.decode(&bytes),
            Some(ChildOutcome::Panicked(message)) => {
                Err(Error::ProcessFailed { pid, exitcode, message: format!("panicked: {message}") })
            }
            Some(ChildOutcome::Errored(message)) => Err(Error::ProcessFailed {
                pid,
                exitcode,
                message: format!("returned an error: {message}"),
            }),
            Some(ChildOutcome::Failed(message)) => {
                Err(Error::ProcessFailed { pid, exitcode, message })
            }
            None => {
                let how = ExitStatus(exitcode).describe();
                let message = format!("the process {how} before returning a value");
                Err(Error::ProcessFailed { pid, exitcode, message })
            }
        }
    }
}

fn started(state: &mut State) -> Result<&mut Running> {
    match state {
        State::Started(running) => Ok(running),
        State::Created(_) | State::Starting => {
            Err(Error::ProcessState("the process has not been started"))
        }
        State::Closed => Err(Error::ProcessState("the process object is closed")),
    }
}

impl Running {
    /// Waits until the child has ended (true) or `deadline` passes (false), collecting
    /// its outcome and reaping it.
    fn wait(&mut self, deadline: Option<Instant>) -> Result<bool> {
        loop {
            if self.exitcode.is_some() {
                return Ok(true);
            }
            let (channel_ready, exited) = {
                let mut fds = Vec::with_capacity(2);
                fds.push(PollFd::new(&self.pidfd, PollFlags::IN));
                if let Some(channel) = &self.channel {
                    fds.push(PollFd::new(channel, PollFlags::IN));
                }
                poll_until(&mut fds, deadline)?;
                let exited = !fds[0].revents().is_empty();
                let channel_ready = fds.get(1).is_some_and(|f| !f.revents().is_empty());
                (channel_ready, exited)
            };
            if channel_ready {
                self.read_outcome(deadline)?;
            }
            if exited {
                self.reap()?;
                // The outcome, if the child sent one, is in the socket buffer by now.
                if self.channel.as_ref().is_some_and(|c| c.poll().unwrap_or(false)) {
                    self.read_outcome(None)?;
                }
                self.channel = None;
                return Ok(true);
            }
            if !channel_ready && deadline.is_some_and(|d| Instant::now() >= d) {
                return Ok(false);
            }
        }
    }

    fn read_outcome(&mut self, deadline: Option<Instant>) -> Result<()> {
        let Some(channel) = &self.channel else { return Ok(()) };
        let received = match deadline {
            Some(d) => channel.recv_bytes_timeout(d.saturating_duration_since(Instant::now())),
            None => channel.recv_bytes(),
        };
        match received {
            Ok(bytes) => {
                self.outcome =
                    Some(Codec::Postcard.decode(&bytes).unwrap_or_else(|e| {
                        ChildOutcome::Failed(format!("unreadable outcome: {e}"))
                    }));
                self.channel = None;
            }
            Err(Error::Timeout(_)) => {}
            // The child ended (or closed the socket) without reporting.
            Err(_) => self.channel = None,
        }
        Ok(())
    }

    fn reap(&mut self) -> Result<()> {
        self.exitcode = Some(self.pidfd.reap()?);
        unregister_child(self.pid);
        Ok(())
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let state = std::mem::replace(get_mut(&mut self.state), State::Closed);
        if let State::Started(mut running) = state {
            if self.kill_on_drop && running.exitcode.is_none() {
                let _ = running.pidfd.send(Signal::Kill);
            }
            if running.exitcode.is_none() && !running.wait(Some(Instant::now())).unwrap_or(true) {
                lock(&DROPPED).push((running.pid, running.pidfd));
            }
        }
    }
}

impl Waitable for Process {
    /// The pidfd: readable once the process has ended (Python's `sentinel`). A process
    /// that was never started is never ready.
    fn wait_fd(&self) -> Option<BorrowedFd<'_>> {
        self.sentinel()
    }
}

impl Process {
    /// A descriptor that becomes readable when the process ends (Python's `sentinel`),
    /// usable with [`wait`](crate::connection::wait) or any poller. `None` before start.
    ///
    /// ```
    /// use std::time::Duration;
    /// let p = multiproc::Process::new(|_: ()| {}, ());
    /// p.start()?;
    /// let ready = multiproc::connection::wait_timeout(&[&p], Duration::from_secs(30))?;
    /// assert_eq!(ready, vec![0]);
    /// p.join()?;
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn sentinel(&self) -> Option<BorrowedFd<'_>> {
        self.sentinel.get().map(|fd| fd.as_fd())
    }
}

impl fmt::Debug for Process {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Process")
            .field("name", &self.name)
            .field("daemon", &self.daemon)
            .field("kill_on_drop", &self.kill_on_drop)
            .field("pid", &self.pid())
            .finish()
    }
}

/// Settings of a [`Process`] before it starts (Python's keyword arguments of
/// `Process(...)`): made by [`Process::builder`], ended by [`start`](Self::start) (a
/// started process) or [`build`](Self::build) (one to start later).
///
/// ```
/// use multiproc::Process;
///
/// let p = Process::builder(|_: ()| {}, ()).name("quiet").daemon(true).build();
/// assert_eq!(p.name(), "quiet");
/// assert!(p.is_daemon());
/// p.start()?;
/// p.join()?;
/// # Ok::<(), multiproc::Error>(())
/// ```
#[must_use = "a builder does nothing until `start` or `build` is called"]
pub struct ProcessBuilder {
    process: Process,
}

impl ProcessBuilder {
    /// The name (default `Process-N`), as [`current_process`](crate::current_process)
    /// reports it in the child.
    ///
    /// ```
    /// let p = multiproc::Process::builder(|_: ()| {}, ()).name("worker").build();
    /// assert_eq!(p.name(), "worker");
    /// ```
    pub fn name(mut self, name: impl Into<String>) -> ProcessBuilder {
        self.process.name = name.into();
        self
    }

    /// Whether the process is a daemon (default `false`): a daemon is killed when its
    /// parent dies, even by `SIGKILL`.
    ///
    /// Linux delivers the signal when the parent *thread* that started the child ends;
    /// the library starts daemons from a thread of its own that lives as long as the
    /// program, so this holds whichever thread calls [`start`](Self::start).
    ///
    /// ```
    /// let p = multiproc::Process::builder(|_: ()| {}, ()).daemon(true).build();
    /// assert!(p.is_daemon());
    /// ```
    pub fn daemon(mut self, daemon: bool) -> ProcessBuilder {
        self.process.daemon = daemon;
        self
    }

    /// The start method (default: [`get_start_method`](crate::get_start_method) at the
    /// time the process starts).
    ///
    /// ```
    /// use multiproc::{Process, StartMethod};
    /// let p = Process::builder(|_: ()| {}, ()).start_method(StartMethod::Fork).start()?;
    /// assert!(p.join()?.success());
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn start_method(mut self, method: StartMethod) -> ProcessBuilder {
        self.process.method = Some(method);
        self
    }

    /// Whether dropping the [`Process`] while its child still runs kills the child with
    /// `SIGKILL` (default `false`: the child runs on, as in Python, and is reaped later).
    /// Handy for helpers whose life must not outlast the code that started them.
    ///
    /// ```
    /// use std::time::Duration;
    /// use multiproc::{pipe, Connection, Error, Process};
    ///
    /// fn hold(conn: Connection) {
    ///     let _ = conn.recv::<()>(); // waits until killed
    /// }
    /// let (mine, theirs) = pipe(true)?;
    /// let p = Process::builder(hold, theirs).kill_on_drop(true).start()?;
    /// drop(p);
    /// // The child is gone, and its end of the pipe with it.
    /// assert!(matches!(mine.recv_timeout::<()>(Duration::from_secs(30)), Err(Error::Eof)));
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn kill_on_drop(mut self, kill: bool) -> ProcessBuilder {
        self.process.kill_on_drop = kill;
        self
    }

    /// The process, not started yet (Python's `Process(...)` before `start()`).
    ///
    /// ```
    /// let p = multiproc::Process::builder(|_: ()| {}, ()).build();
    /// assert_eq!(p.pid(), None);
    /// ```
    pub fn build(self) -> Process {
        self.process
    }

    /// Starts the process and returns it.
    ///
    /// ```
    /// let p = multiproc::Process::builder(|_: ()| {}, ()).start()?;
    /// assert!(p.pid().is_some());
    /// p.join()?;
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn start(self) -> Result<Process> {
        self.process.start()?;
        Ok(self.process)
    }
}

impl fmt::Debug for ProcessBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ProcessBuilder")
            .field("name", &self.process.name)
            .field("daemon", &self.process.daemon)
            .field("start_method", &self.process.method)
            .field("kill_on_drop", &self.process.kill_on_drop)
            .finish()
    }
}

/// How a process ended, as [`Process::join`] returns it.
///
/// [`code`](Self::code) and [`signal`](Self::signal) follow
/// `std::process::ExitStatus`; [`exitcode`](Self::exitcode) is Python's single integer
/// (`N` for `exit(N)`, `1` after a panic or an `Err`, `-N` when killed by signal `N`).
///
/// ```
/// use multiproc::Process;
///
/// let p = Process::new(|_: ()| std::thread::sleep(std::time::Duration::from_secs(30)), ());
/// p.start()?;
/// p.terminate()?;
/// let status = p.join()?;
/// assert_eq!((status.code(), status.signal(), status.exitcode()), (None, Some(15), -15));
/// assert!(!status.success());
/// assert_eq!(status.to_string(), "killed by signal 15");
/// # Ok::<(), multiproc::Error>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ExitStatus(i32);

impl ExitStatus {
    /// Whether the process exited with code 0.
    ///
    /// ```
    /// let p = multiproc::Process::new(|_: ()| {}, ());
    /// p.start()?;
    /// assert!(p.join()?.success());
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn success(&self) -> bool {
        self.0 == 0
    }

    /// The exit code when the process exited (`Some(0)`, `Some(N)` after `exit(N)`,
    /// `Some(1)` after a panic or an `Err`); `None` when a signal killed it.
    ///
    /// ```
    /// let p = multiproc::Process::new(|_: ()| -> () { std::process::exit(7) }, ());
    /// p.start()?;
    /// assert_eq!(p.join()?.code(), Some(7));
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn code(&self) -> Option<i32> {
        (self.0 >= 0).then_some(self.0)
    }

    /// The signal that killed the process, if one did.
    ///
    /// ```
    /// let p = multiproc::Process::new(|_: ()| std::thread::sleep(std::time::Duration::from_secs(30)), ());
    /// p.start()?;
    /// p.kill()?;
    /// assert_eq!(p.join()?.signal(), Some(9));
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn signal(&self) -> Option<i32> {
        (self.0 < 0).then_some(-self.0)
    }

    /// Python's `exitcode`: the exit code, or minus the signal that killed the process.
    ///
    /// ```
    /// let p = multiproc::Process::new(|_: ()| -> () { panic!("no") }, ());
    /// p.start()?;
    /// assert_eq!(p.join()?.exitcode(), 1);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn exitcode(&self) -> i32 {
        self.0
    }

    /// How the process ended, for an error message about it: "was killed by SIGKILL"
    /// ("by signal 99" for a number without a name), "exited with code 3".
    pub(crate) fn describe(&self) -> String {
        match self.signal() {
            Some(n) => match sys::proc::signal_c_name(n) {
                Some(name) => format!("was killed by {name}"),
                None => format!("was killed by signal {n}"),
            },
            None => format!("exited with code {}", self.0),
        }
    }

    /// The status whose Python exit code is `exitcode` (minus a signal's number when a
    /// signal killed the process).
    pub(crate) fn from_exitcode(exitcode: i32) -> ExitStatus {
        ExitStatus(exitcode)
    }
}

impl fmt::Display for ExitStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.signal() {
            Some(n) => write!(f, "killed by signal {n}"),
            None => write!(f, "exit code {}", self.0),
        }
    }
}

// --------------------------------------------------------------------------------------
// spawn() and JoinHandle

/// Runs `f(args)` in a new process and returns a handle to its result, like
/// `std::thread::spawn`.
///
/// Arguments are owned, as for [`Process::new`] (a `String`, not a `&str`); the value `f`
/// returns travels back with serde, and may itself be a `Result<T, multiproc::Error>`
/// (`spawn(f, x)?.join()??`). Under the spawn start method `f` must be a function of the
/// program itself (see [`Process::new`]); a panic in `f` arrives as an error and prints
/// nothing in the child.
///
/// ```
/// let handle = multiproc::spawn(|(a, b): (u64, u64)| a * b, (6, 7))?;
/// assert_eq!(handle.join()?, 42);
///
/// // A panic in the child arrives as an error carrying its message.
/// let handle = multiproc::spawn(|_: ()| -> u8 { panic!("no luck") }, ())?;
/// let err = handle.join().unwrap_err();
/// assert!(err.to_string().contains("no luck"));
/// # Ok::<(), multiproc::Error>(())
/// ```
pub fn spawn<A, R>(f: fn(A) -> R, args: A) -> Result<JoinHandle<R>>
where
    A: Serialize + DeserializeOwned + Send + 'static,
    R: Serialize + DeserializeOwned + 'static,
{
    let process = Process::with_result(f, args);
    process.start()?;
    Ok(JoinHandle { process, result: PhantomData })
}

/// The result of a child started by [`spawn`].
pub struct JoinHandle<R> {
    process: Process,
    result: PhantomData<fn() -> R>,
}

impl<R: DeserializeOwned> JoinHandle<R> {
    /// Waits for the child and returns its value, or [`Error::ProcessFailed`] with the
    /// panic message, exit code or signal.
    ///
    /// ```
    /// let h = multiproc::spawn(|s: String| s.len(), "four".to_string())?;
    /// assert_eq!(h.join()?, 4);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn join(self) -> Result<R> {
        self.process.join()?;
        self.process.take_result()
    }

    /// Like [`join`](Self::join), giving up with [`Error::Timeout`] after `timeout`; the
    /// handle stays usable.
    ///
    /// ```
    /// use std::time::Duration;
    /// let h = multiproc::spawn(|_: ()| std::thread::sleep(Duration::from_secs(30)), ())?;
    /// assert!(matches!(h.join_timeout(Duration::from_millis(20)), Err(multiproc::Error::Timeout(_))));
    /// h.process().kill()?;
    /// assert!(h.join().is_err());
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn join_timeout(&self, timeout: Duration) -> Result<R> {
        self.process.join_timeout(timeout)?;
        self.process.take_result()
    }

    /// Like [`join`](Self::join) without waiting: [`Error::WouldBlock`] while the child runs;
    /// the handle stays usable.
    ///
    /// ```
    /// use std::time::Duration;
    /// let h = multiproc::spawn(|_: ()| std::thread::sleep(Duration::from_secs(30)), ())?;
    /// assert!(matches!(h.try_join(), Err(multiproc::Error::WouldBlock)));
    /// h.process().kill()?;
    /// assert!(h.join().is_err());
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn try_join(&self) -> Result<R> {
        self.join_timeout(Duration::ZERO).map_err(Error::not_waiting)
    }

    /// The underlying process (pid, sentinel, kill, …).
    ///
    /// ```
    /// let h = multiproc::spawn(|_: ()| 1u8, ())?;
    /// assert!(h.process().pid().is_some());
    /// # h.join()?;
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn process(&self) -> &Process {
        &self.process
    }
}

impl<R> fmt::Debug for JoinHandle<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JoinHandle").field("process", &self.process).finish()
    }
}

// --------------------------------------------------------------------------------------
// Launching

/// Starts a spawned child that calls the target named by `(layout, trampoline, target)`
/// offsets on `args`.
fn launch_spawn<A: Serialize>(
    (layout, trampoline, target): (isize, isize, isize),
    args: &A,
    info: &LaunchInfo,
) -> Result<Running> {
    if std::env::var_os(sys::spawn::SPAWN_FD_VAR).is_some() {
        return Err(Error::ProcessState(
            "this process was spawned but did not run its bootstrap; refusing to spawn again",
        ));
    }
    let (encoded, handles) = reduction::export_handles(|| {
        let mut out = Vec::new();
        Codec::Postcard.encode_into(args, &mut out).map(|()| out)
    });
    let me = context::current_process();
    let bootstrap = Bootstrap {
        layout,
        trampoline,
        target,
        args: encoded?,
        name: info.name.clone(),
        identity: info.identity.clone(),
        daemon: info.daemon,
        parent_pid: me.pid,
        parent_name: me.name,
    };
    let mut message = Vec::new();
    Codec::Postcard.encode_into(&bootstrap, &mut message)?;

    let (parent_end, child_end) = sys::socket::pair()?;
    let pid = sys::spawn::exec_self(child_end.as_fd(), info.daemon, spawned_child_main)?;
    drop(child_end);
    let pidfd = PidFd::open(pid)?;
    let channel = Connection::from_fd(parent_end);
    let mut running = Running { pid, pidfd, channel: None, outcome: None, exitcode: None };
    let sent = reduction::send_handles(channel.as_fd(), &handles)
        .and_then(|()| channel.send_bytes(&message));
    drop(handles);
    running.channel = Some(channel);
    if let Err(e) = sent {
        let _ = running.pidfd.send(Signal::Kill);
        let _ = running.wait(None);
        return Err(e);
    }
    Ok(running)
}

/// Forks a child that runs `run` (which calls the target) and reports its outcome.
fn launch_fork(run: impl FnOnce() -> ChildOutcome, info: &LaunchInfo) -> Result<Running> {
    let (parent_end, child_end) = sys::socket::pair()?;
    let me = context::current_process();
    // The hook must be in place before the fork: installing it takes the panic hook's
    // lock, which a thread of this process that is panicking at the instant of the fork
    // would leave held in the child for ever.
    install_reporting_hook();
    // Hold the locks the child will need across the fork, so that no other thread holds
    // them at that instant (a lock held by a thread that does not exist in the child stays
    // locked there forever). Both sides release their copy right after the fork.
    let held = ForkLocks::take();
    let mut parent_end = Some(parent_end);
    let mut child_end = Some(child_end);
    let mut run = Some(run);
    let pid = sys::spawn::fork(info.daemon, held, |setup| {
        // In the child: whatever happens here ends in `exit_now`, never in the caller.
        drop(parent_end.take());
        set_child_lineage(&info.name, &info.identity, info.daemon, me.pid, me.name.clone());
        CHILD_COUNTER.store(0, Ordering::Relaxed);
        forget_children();
        let (outcome, code) = match (setup, run.take()) {
            (Ok(()), Some(run)) => {
                let outcome = run();
                let code = outcome.exit_code();
                (outcome, code)
            }
            (Err(e), _) => {
                (ChildOutcome::Failed(format!("the forked child could not start: {e}")), 70)
            }
            (Ok(()), None) => (ChildOutcome::Failed("the arguments were taken".into()), 70),
        };
        if let Some(fd) = child_end.take() {
            let _ = Connection::from_fd(fd).send(&outcome);
        }
        flush_std();
        code
    })?;
    drop(child_end);
    drop(run);
    let pidfd = PidFd::open(pid)?;
    Ok(Running {
        pid,
        pidfd,
        channel: parent_end.map(Connection::from_fd),
        outcome: None,
        exitcode: None,
    })
}

/// The process-wide locks a forked child may take: held across `fork` by the forking
/// thread. Order: the daemon spawner, shared handles, stdout, stderr, DROPPED, CHILDREN (the order `reap_dropped` nests them).
struct ForkLocks {
    _spawner: std::sync::MutexGuard<'static, sys::spawn::Spawner>,
    _sharer: std::sync::MutexGuard<'static, Option<reduction::Sharer>>,
    _stdout: std::io::StdoutLock<'static>,
    _stderr: std::io::StderrLock<'static>,
    _dropped: std::sync::MutexGuard<'static, Vec<(i32, PidFd)>>,
    _children: std::sync::MutexGuard<'static, Vec<ActiveChild>>,
}

impl ForkLocks {
    fn take() -> ForkLocks {
        ForkLocks {
            _spawner: sys::spawn::lock_spawner(),
            _sharer: reduction::lock_sharer(),
            _stdout: std::io::stdout().lock(),
            _stderr: std::io::stderr().lock(),
            _dropped: lock(&DROPPED),
            _children: lock(&CHILDREN),
        }
    }
}

// --------------------------------------------------------------------------------------
// The child side

/// Entry point of a spawned child (called before `main` by `sys::spawn`, which the parent
/// names it to by offset); returns the exit code.
fn spawned_child_main(socket: OwnedFd) -> i32 {
    match spawned_child(socket) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("multiproc: spawned child could not start: {e}");
            70
        }
    }
}

fn spawned_child(socket: OwnedFd) -> Result<i32> {
    let handles = reduction::recv_handles(socket.as_fd())?;
    let channel = Connection::from_fd(socket);
    let bootstrap: Bootstrap = Codec::Postcard.decode(&channel.recv_bytes()?)?;
    set_child_lineage(
        &bootstrap.name,
        &bootstrap.identity,
        bootstrap.daemon,
        bootstrap.parent_pid,
        bootstrap.parent_name,
    );
    let Some(trampoline) = resolve_trampoline(bootstrap.layout, bootstrap.trampoline) else {
        return Err(Error::Protocol(
            "the bootstrap message comes from a different executable".into(),
        ));
    };
    let outcome = trampoline(bootstrap.target, &bootstrap.args, handles);
    let code = outcome.exit_code();
    let _ = channel.send(&outcome);
    flush_std();
    Ok(code)
}

fn set_child_lineage(
    name: &str,
    identity: &[u32],
    daemon: bool,
    parent_pid: i32,
    parent_name: String,
) {
    context::set_lineage(Lineage {
        me: ProcessInfo {
            name: name.to_string(),
            pid: sys::pid::pid() as i32,
            daemon,
            identity: identity.to_vec(),
        },
        parent: Some((parent_pid, parent_name)),
    });
}

/// The runner of targets whose value a child sends back ([`spawn`], the pool): a child
/// calls it by offset (see `sys::spawn`).
struct Targets;

impl<R: Serialize> sys::spawn::Runner<R> for Targets {
    type Outcome = ChildOutcome;
    fn run<A: DeserializeOwned>(f: fn(A) -> R, args: &[u8], handles: Vec<OwnedFd>) -> ChildOutcome {
        run_target(f, args, handles)
    }
}

/// The runner of [`Process`] targets, which return `()` or `Result<(), E>`.
struct Statuses;

impl<R: TargetResult> sys::spawn::Runner<R> for Statuses {
    type Outcome = ChildOutcome;
    fn run<A: DeserializeOwned>(f: fn(A) -> R, args: &[u8], handles: Vec<OwnedFd>) -> ChildOutcome {
        match reduction::import_handles(handles, || Codec::Postcard.decode::<A>(args)) {
            Ok(args) => call_process_target(f, args),
            Err(e) => ChildOutcome::Failed(format!("the arguments could not be decoded: {e}")),
        }
    }
}

/// The signature shared by every trampoline: target offset, argument bytes, handles.
pub(crate) type Trampoline = sys::spawn::Trampoline<ChildOutcome>;

/// The offsets a parent sends so that a child can call `f`: (layout check, trampoline,
/// target). An error when a re-executed child could not find `f` by its offset (it lives
/// in another loaded object).
pub(crate) fn offsets_for<A, R>(
    f: fn(A) -> R,
) -> std::result::Result<(isize, isize, isize), sys::spawn::NotInImage>
where
    A: DeserializeOwned,
    R: Serialize,
{
    sys::spawn::trampoline_offsets::<Targets, A, R>(f)
}

/// The trampoline named by a bootstrap message, or `None` when the message comes from a
/// different executable image.
pub(crate) fn resolve_trampoline(layout: isize, offset: isize) -> Option<Trampoline> {
    sys::spawn::resolve_trampoline_of::<ChildOutcome>(layout, offset)
}

/// Decodes the arguments and runs the target (called through the trampoline).
pub(crate) fn run_target<A, R>(f: fn(A) -> R, args: &[u8], handles: Vec<OwnedFd>) -> ChildOutcome
where
    A: DeserializeOwned,
    R: Serialize,
{
    match reduction::import_handles(handles, || Codec::Postcard.decode::<A>(args)) {
        Ok(args) => call_target(f, args),
        Err(e) => ChildOutcome::Failed(format!("the arguments could not be decoded: {e}")),
    }
}

fn call_target<A, R: Serialize>(f: fn(A) -> R, args: A) -> ChildOutcome {
    match catch_reported(|| f(args)) {
        Ok(value) => {
            let mut out = Vec::new();
            match Codec::Postcard.encode_into(&value, &mut out) {
                Ok(()) => ChildOutcome::Returned(out),
                Err(e) => ChildOutcome::Failed(format!("the result could not be encoded: {e}")),
            }
        }
        Err(message) => ChildOutcome::Panicked(message),
    }
}

fn call_process_target<A, R: TargetResult>(f: fn(A) -> R, args: A) -> ChildOutcome {
    match catch_reported(|| f(args).into_message()) {
        Ok(Ok(())) => ChildOutcome::Returned(Vec::new()),
        Ok(Err(message)) => ChildOutcome::Errored(message),
        Err(message) => ChildOutcome::Panicked(message),
    }
}

thread_local! {
    /// Set while this thread runs [`catch_reported`]: its panics are the library's to report.
    static REPORTING_PANICS: Cell<bool> = const { Cell::new(false) };
}

/// Runs `f` in a child process, catching a panic that the library reports to the parent:
/// `Err` carries the panic's message.
///
/// A panic caught here prints nothing in the child (no "thread panicked" line and no
/// backtrace, even with `RUST_BACKTRACE` set): its message reaches the parent as the
/// error, and an expected panic stays quiet there. Panics of other threads, and panics
/// of this thread outside `f`, print as usual through whichever hook was installed before.
pub(crate) fn catch_reported<T>(f: impl FnOnce() -> T) -> std::result::Result<T, String> {
    install_reporting_hook();
    let outer = REPORTING_PANICS.with(|r| r.replace(true));
    let result = catch_unwind(AssertUnwindSafe(f));
    REPORTING_PANICS.with(|r| r.set(outer));
    result.map_err(|payload| panic_message(payload.as_ref()))
}

/// Installs the hook that keeps [`catch_reported`] panics quiet (once per process; a
/// forked child inherits it). It passes every other panic to the hook it replaces.
fn install_reporting_hook() {
    static INSTALLED: Once = Once::new();
    if std::thread::panicking() {
        return; // `set_hook` may not be called while unwinding; the next call installs it.
    }
    INSTALLED.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if !REPORTING_PANICS.with(Cell::get) {
                previous(info);
            }
        }));
    });
}

fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "a panic with a non-string payload".to_string()
    }
}

fn flush_std() {
    let _ = std::io::stdout().flush();
    let _ = std::io::stderr().flush();
}

// --------------------------------------------------------------------------------------
// Children registry

/// A child of this process, as [`active_children`] lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ActiveChild {
    /// Its pid.
    pub pid: i32,
    /// Its name.
    pub name: String,
}

static CHILDREN: Mutex<Vec<ActiveChild>> = Mutex::new(Vec::new());
static DROPPED: Mutex<Vec<(i32, PidFd)>> = Mutex::new(Vec::new());

fn register_child(pid: i32, name: &str) {
    lock(&CHILDREN).push(ActiveChild { pid, name: name.to_string() });
}

fn unregister_child(pid: i32) {
    lock(&CHILDREN).retain(|c| c.pid != pid);
}

fn forget_children() {
    lock(&CHILDREN).clear();
    lock(&DROPPED).clear();
}

/// Reaps children whose `Process` was dropped while they ran.
fn reap_dropped() {
    let mut dropped = lock(&DROPPED);
    dropped.retain(|(pid, pidfd)| match pidfd.try_reap() {
        Ok(None) => true,
        Ok(Some(_)) | Err(_) => {
            unregister_child(*pid);
            false
        }
    });
}

/// The children of this process that are still running (Python's `active_children()`).
/// Like Python's, it also reaps children that ended after their `Process` was dropped.
///
/// ```
/// use std::time::Duration;
/// let p = multiproc::Process::new(|_: ()| std::thread::sleep(Duration::from_secs(30)), ());
/// p.start()?;
/// assert!(multiproc::active_children().iter().any(|c| Some(c.pid) == p.pid()));
/// p.kill()?;
/// p.join()?;
/// assert!(!multiproc::active_children().iter().any(|c| Some(c.pid) == p.pid()));
/// # Ok::<(), multiproc::Error>(())
/// ```
pub fn active_children() -> Vec<ActiveChild> {
    reap_dropped();
    let children = lock(&CHILDREN).clone();
    children.into_iter().filter(|c| sys::proc::child_is_running(c.pid)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_exit_status_describes_how_the_process_ended() {
        assert_eq!(ExitStatus::from_exitcode(-9).describe(), "was killed by SIGKILL");
        assert_eq!(ExitStatus::from_exitcode(-99).describe(), "was killed by signal 99");
        assert_eq!(ExitStatus::from_exitcode(3).describe(), "exited with code 3");
        assert_eq!(ExitStatus::from_exitcode(-15).to_string(), "killed by signal 15");
    }
}
