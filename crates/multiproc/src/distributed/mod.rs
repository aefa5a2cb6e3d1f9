//! Queues and a Pool on Redis, for programs that outgrow one machine (feature `redis`).
//!
//! [`Queue`] and [`JoinableQueue`] have the methods and the blocking shape of
//! [`queues::Queue`](crate::queues::Queue) and [`queues::JoinableQueue`](crate::queues::JoinableQueue)
//! (`put`, `put_timeout`, `try_put`, `get`, `get_timeout`, `try_get`, `put_many`,
//! `get_many`, `task_done`, `join`, …; [`Error::Empty`](crate::Error::Empty) and
//! [`Error::Full`](crate::Error::Full) as locally). They are built from a URL and a name
//! instead of a size, and every process, on any machine, that connects to the same server
//! with the same name shares the queue. `qsize`, `empty` and `full` return a `Result`,
//! since the server may not answer.
//!
//! ```no_run
//! use multiproc::distributed::Queue;
//!
//! let q = Queue::connect("redis://127.0.0.1:6379/0", "jobs")?;
//! q.put_many(["a".to_string(), "b".to_string()])?;
//! assert_eq!(q.get()?, "a");
//! # Ok::<(), multiproc::Error>(())
//! ```
//!
//! (The examples here need a server; `tests/redis_queue.rs` runs the same code against one
//! it starts.)
//!
//! ## How it works
//! A queue named `N` is the Redis stream `N`; each item is one entry whose field `d` holds
//! the item encoded with postcard (the items are data: a handle such as a
//! [`Connection`](crate::Connection) cannot travel through Redis). Both kinds read
//! through the stream's consumer group `multiproc`, which hands each entry to one consumer
//! only, and every step that must not be split is one command or one Lua script, atomic on
//! the server:
//! - a bounded put checks `maxsize` and appends in the same step, so concurrent putters
//!   never overshoot it (the bound counts items waiting for delivery); an unbounded one
//!   is plain `XADD`s, pipelined up to 1024 to a round trip;
//! - a plain [`Queue`]'s take is `XREADGROUP … NOACK`: nothing to acknowledge, no two
//!   consumers ever get the same item, and an item whose reply is lost (the connection
//!   breaks, the consumer dies as it arrives) is lost. **At-most-once.** The taken entries
//!   are then trimmed from the stream (and those a consumer that died before trimming
//!   left, by the next wait that finds nothing to take, `qsize` or bounded put).
//! - a [`JoinableQueue`] reads through the consumer group `multiproc`: an item stays in the
//!   group's pending list until `task_done` acknowledges and deletes it. Each take first
//!   reclaims (`XAUTOCLAIM`) items pending longer than the visibility timeout, whoever
//!   holds them (a consumer that died, or one too slow), and moves those delivered more
//!   than `max_deliveries` times to the dead-letter stream `N:dead`. An entry that is not
//!   one of our items fails its `get` with [`Error::Codec`](crate::Error::Codec) and is
//!   dead-lettered too. **At-least-once**: a task may run twice, so tasks should be
//!   idempotent.
//!
//! Entries leave the stream in the order they were put (**FIFO per stream**); with several
//! consumers, each gets them in that order, and a reclaimed item comes again after newer
//! ones were delivered.
//!
//! A name belongs to one kind of queue: a plain [`Queue`] and a [`JoinableQueue`] on the
//! same name would take each other's entries. The other keys of a queue `N`: `N:room` (a one-entry stream a take appends to, which
//! putters waiting for room block on), and for a joinable queue `N:dead` and `N:joined` (a
//! one-entry stream that `join` blocks on). A joinable queue's entry leaves its stream
//! when it is done or dead-lettered, so the stream's length is the number of unfinished
//! items, which `join` waits to see at zero (an entry that is not ours counts too, until
//! a `get` meets it and dead-letters it).
//!
//! ## The Pool and its workers
//! A [`Pool`] submits tasks to the stream `NAME:tasks`, read as a [`JoinableQueue`] by
//! every [`Worker`] process of that name on any machine; results come back on a
//! [`JoinableQueue`] of the submitter's own. Functions are named, never sent: the
//! submitter and the workers build the same [`Registry`] of named `fn(A) -> R`, and a
//! worker refuses (with an error in that task's result) a task whose name it does not
//! know or whose submitter's registry has another [identity](Registry::identity). Tasks
//! are at-least-once (taken over from a dead or cut-off worker after the visibility
//! timeout, dead-lettered after `max_deliveries`); the pool keeps the first result of each
//! task, so the caller sees every result exactly once, in order. Task functions must
//! tolerate running twice for one item. `multiproc worker --redis URL --name NAME` runs a
//! worker with the CLI's own small registry; a program with its own functions runs
//! [`Worker::run`] in its own binary.
//!
//! [`DeadLetters`] lists, requeues and removes the dead letters of a [`JoinableQueue`] (or
//! of a pool's tasks, queue `NAME:tasks`); `multiproc dead` is its command line.
//!
//! ## Waiting, timeouts and lost servers
//! A wait blocks in Redis itself (`XREAD`/`XREADGROUP` `BLOCK`), for a little less than the
//! time left, and the reply is awaited only until the caller's deadline: any `Duration` is
//! a valid timeout (`Duration::MAX` waits for ever, in rounds of a few seconds). A waiting
//! call that loses the server reconnects, as long as its deadline and the handle's
//! reconnect window allow, then returns the connection error
//! ([`Error::Io`](crate::Error::Io)); a put whose reply was lost returns the error with the
//! item, which may have been queued or not. A handle holds two connections, one for the
//! waits and one for everything else, so a `put` or a `task_done` from another thread is not
//! held up by a `get` waiting on the same handle; two `get`s on one handle take turns (give
//! each consumer thread its own handle: `clone()` makes one). `rediss://` URLs use TLS (rustls, with the
//! webpki roots); a password or an ACL user go in the URL
//! (`redis://user:password@host:6379/0`).

mod dead;
mod joinable;
mod link;
mod pool;
mod queue;
mod scripts;
mod tasks;
mod worker;

pub use dead::{DeadLetter, DeadLetters};
pub use joinable::{JoinableQueue, JoinableQueueBuilder};
pub use pool::{AsyncResult, Chunked, IMapIterator, Mapper, Pool};
pub use queue::{Queue, QueueBuilder};
pub use tasks::{Registry, Task, TaskName};
pub use worker::Worker;
