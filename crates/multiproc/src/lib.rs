//! # multiproc
//!
//! Python's `multiprocessing`, rebuilt in Rust: processes and the ways they talk.
//!
//! | Python | multiproc |
//! |---|---|
//! | `Process(target=f, args=(a, b))` | [`Process::new(f, (a, b))`](Process::new) |
//! | `Process(target=f, args=x, name=…, daemon=True)` | [`Process::builder(f, x)`](Process::builder)`.name(…).daemon(true)` |
//! | `p.start()`, `p.join()`, `p.join(timeout)`, `p.exitcode` | [`Process::start`], [`Process::join`] (an [`ExitStatus`]), [`Process::join_timeout`], [`Process::exitcode`] |
//! | `Pipe(duplex=True)` | [`pipe(true)`](pipe) |
//! | `conn.send(obj)`, `conn.recv()` | [`Connection::send`], [`Connection::recv`] |
//! | `conn.send_bytes(b)`, `conn.recv_bytes()` | [`Connection::send_bytes`], [`Connection::recv_bytes`] |
//! | `conn.recv()` with a timeout, `conn.poll(t)` | [`Connection::recv_timeout`], [`Connection::try_recv`], [`Connection::poll_timeout`] |
//! | `multiprocessing.connection.wait` | [`connection::wait`], [`connection::wait_timeout`] |
//! | `Listener(address, authkey=k)`, `Client(address, authkey=k)` | [`connection::Listener::bind`], [`connection::Client::connect`] |
//! | `current_process()`, `parent_process()`, `active_children()`, `cpu_count()` | [`current_process`], [`parent_process`], [`active_children`], [`cpu_count`] |
//! | `Queue(maxsize)`, `put(x)`, `put(x, timeout=t)`, `get()`, `get(timeout=t)`, `put_nowait`, `get_nowait`, `qsize`, `empty`, `full`, `close` | [`queues::Queue`]: `put(x)`, `put_timeout(x, t)`, `try_put(x)` (a failed put hands `x` back in a [`PutError`]), `get()`, `get_timeout(t)`, `try_get()`, the same names otherwise; plus `put_many` / `get_many` |
//! | `SimpleQueue()`, `JoinableQueue()`, `task_done()`, `join()` | [`queues::SimpleQueue`], [`queues::JoinableQueue`]: `task_done()`, `join()`, `join_timeout(t)` |
//! | `Lock()`, `RLock()`, `Semaphore(n)`, `BoundedSemaphore(n)`, `Condition()`, `Event()`, `Barrier(n)` | [`synchronize::Lock`], [`synchronize::RLock`], [`synchronize::Semaphore`], [`synchronize::BoundedSemaphore`], [`synchronize::Condition`], [`synchronize::Event`], [`synchronize::Barrier`] |
//! | `with lock:` | `let _guard = lock.acquire()?;` |
//! | `Value('i', 0)`, `Array('d', 5)`, `RawValue`, `RawArray` | [`sharedctypes`] |
//! | `shared_memory.SharedMemory(create=True, size=n)`, `ShareableList` | [`shared_memory::SharedMemory`], [`shared_memory::ShareableList`] |
//! | `EOFError`, `AuthenticationError`, `BufferTooShort` | [`Error::Eof`], [`Error::Authentication`], [`Error::BufferTooShort`] |
//! | `Pool(processes)`, `apply`, `apply_async`, `map`, `map_async`, `imap`, `imap_unordered`, `starmap` | [`pool::Pool`] and its methods (`chunksize=n`: [`pool::Pool::chunksize`]); `AsyncResult` is [`pool::AsyncResult`] |
//! | `Manager()`, `manager.dict()`, `list()`, `Namespace()`, `Value()`, `BaseManager.register` | [`Manager::start`], [`Manager::dict`], … ([`managers`]) |
//! | `queue.Empty`, `queue.Full`, `BrokenBarrierError` | [`Error::Empty`], [`Error::Full`], [`Error::BrokenBarrier`] |
//!
//! ## A first example
//! The seed's "Hello from Process": a child sends a string through a pipe.
//!
//! ```
//! use multiproc::{pipe, Connection, Process};
//!
//! fn f(conn: Connection) {
//!     conn.send("Hello from Process").unwrap();
//! }
//!
//! let (parent_conn, child_conn) = pipe(true)?;
//! let p = Process::new(f, child_conn);
//! p.start()?;
//! assert_eq!(parent_conn.recv::<String>()?, "Hello from Process");
//! p.join()?;
//! # Ok::<(), multiproc::Error>(())
//! ```
//!
//! ## Targets and arguments
//! A target is a function `fn(A) -> R` where the argument `A` (one value, or a tuple of
//! several) is an owned value that serde can serialize: your own types derive
//! `serde::Serialize` and `serde::Deserialize` (`serde = { version = "1", features =
//! ["derive"] }` in your Cargo.toml), and a `String` goes where a `&str` would not. A
//! closure that captures nothing is such a function. A [`Process`] target returns `()` or
//! `Result<(), E>` ([`TargetResult`]), so it can use `?`; a [`spawn`] target returns any
//! serializable value, [`Error`] included. Under the
//! default [`StartMethod::Spawn`] the child executes this same program again and calls the
//! function before `main` would run, so a program needs no setup: no `if __name__ ==
//! '__main__'` and no registration. [`Connection`]s, queues, locks and shared memory travel
//! inside the arguments, and through pipes and queues as well.
//!
//! ## Values back from a child
//! [`spawn`] works like `std::thread::spawn`, across a process boundary:
//!
//! ```
//! let h = multiproc::spawn(|n: u64| (1..=n).product::<u64>(), 10)?;
//! assert_eq!(h.join()?, 3_628_800);
//! # Ok::<(), multiproc::Error>(())
//! ```
#![deny(unsafe_code)]
#![warn(missing_docs)]

mod codec;
pub mod connection;
mod context;
mod deadline;
#[cfg(feature = "redis")]
pub mod distributed;
mod error;
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub mod fuzzing;
pub mod managers;
pub mod pool;
mod process;
pub mod queues;
mod raw;
mod reduction;
mod segment;
pub mod shared_memory;
pub mod sharedctypes;
mod sync_util;
pub mod synchronize;
mod sys;

pub use codec::Codec;
pub use connection::{pipe, Connection};
pub use context::{
    cpu_count, current_process, get_start_method, parent_process, process_cpu_count,
    set_start_method, ParentProcess, ProcessInfo, StartMethod,
};
pub use error::{Error, PutError, Result};
pub use managers::Manager;
pub use process::{
    active_children, spawn, ActiveChild, ExitStatus, JoinHandle, Process, ProcessBuilder,
    TargetResult,
};
pub use sharedctypes::{Array, RawArray, RawValue, Value};
