//! Task functions named across machines: the [`Registry`], its identity, and the messages
//! that carry tasks to workers and results back.

use std::collections::BTreeMap;
use std::marker::PhantomData;
use std::panic::{catch_unwind, AssertUnwindSafe};

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::codec::Codec;
use crate::error::{Error, Result};

/// A task function's name with its argument and result types, so that a call through a
/// [`Pool`](super::Pool) needs no type annotations: declare one per function, next to the
/// registry, and use it on both sides.
///
/// ```
/// use multiproc::distributed::{Registry, Task};
///
/// fn square(x: u64) -> u64 {
///     x * x
/// }
/// const SQUARE: Task<u64, u64> = Task::new("square");
/// let registry = Registry::new().register(SQUARE, square);
/// assert!(registry.contains("square"));
/// // pool.map(SQUARE, 0..10)? is a Vec<u64>.
/// ```
pub struct Task<A, R> {
    name: &'static str,
    types: PhantomData<fn(A) -> R>,
}

impl<A, R> Task<A, R> {
    /// The task function registered as `name`, taking `A` and returning `R`.
    ///
    /// ```
    /// const ECHO: multiproc::distributed::Task<String, String> =
    ///     multiproc::distributed::Task::new("echo");
    /// assert_eq!(ECHO.name(), "echo");
    /// ```
    pub const fn new(name: &'static str) -> Task<A, R> {
        Task { name, types: PhantomData }
    }

    /// Its name.
    ///
    /// ```
    /// assert_eq!(multiproc::distributed::Task::<u8, u8>::new("id").name(), "id");
    /// ```
    pub const fn name(&self) -> &'static str {
        self.name
    }
}

impl<A, R> Clone for Task<A, R> {
    fn clone(&self) -> Task<A, R> {
        *self
    }
}

impl<A, R> Copy for Task<A, R> {}

impl<A, R> std::fmt::Debug for Task<A, R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("Task").field(&self.name).finish()
    }
}

/// What names a task function in a [`Pool`](super::Pool)'s methods: a [`Task`] (its types
/// known, nothing to annotate) or a plain `&str` (name the types:
/// `pool.map::<u64, u64>("square", items)`).
///
/// ```
/// use multiproc::distributed::{Task, TaskName};
/// fn name_of<A, R>(t: impl TaskName<A, R>) -> String {
///     t.task_name().to_string()
/// }
/// assert_eq!(name_of(Task::<u8, u8>::new("id")), "id");
/// assert_eq!(name_of::<u8, u8>("id"), "id");
/// ```
pub trait TaskName<A, R> {
    /// The registered name.
    fn task_name(&self) -> &str;
}

impl<A, R> TaskName<A, R> for &str {
    fn task_name(&self) -> &str {
        self
    }
}

impl<A, R> TaskName<A, R> for Task<A, R> {
    fn task_name(&self) -> &str {
        self.name
    }
}

/// One registered function, run on encoded arguments.
type Run = Box<dyn Fn(&[u8]) -> std::result::Result<Vec<u8>, String> + Send + Sync>;

/// A function of a [`Registry`] with the names of its argument and result types.
struct Registered {
    run: Run,
    arg_type: &'static str,
    result_type: &'static str,
}

/// The task functions a [`Pool`](super::Pool) may ask for and a
/// [`Worker`](super::Worker) may run, each under a name.
///
/// A task travels as a name and data, never as code: the submitter and the workers build
/// the same registry (the same program, or programs that call the same registration code)
/// and a worker runs a task only when it knows the name **and** its registry has the same
/// [`identity`](Self::identity) as the submitter's. The identity is a hash of every name
/// with the names of its argument and result types (as the compiler spells them), so a
/// worker of another build whose functions differ in name or types refuses every task of
/// this one instead of running a function that does not match. A refused task is an error
/// ([`Error::Task`]) in that task's result; the function is not run.
///
/// What the identity cannot see is a change inside a function's body with the same name
/// and types: give the registry a [`version`](Self::version) when such a change must not
/// mix with older workers.
///
/// ```
/// use multiproc::distributed::Registry;
///
/// fn square(x: u64) -> u64 {
///     x * x
/// }
/// let registry = Registry::new().task("square", square).task("len", |s: String| s.len());
/// let other = Registry::new().task("square", square);
/// assert_ne!(registry.identity(), other.identity());
/// assert_eq!(registry.names().collect::<Vec<_>>(), ["len", "square"]);
/// ```
#[derive(Default)]
pub struct Registry {
    tasks: BTreeMap<String, Registered>,
    version: String,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registry")
            .field("names", &self.tasks.keys().collect::<Vec<_>>())
            .field("identity", &format_args!("{:016x}", self.identity()))
            .finish()
    }
}

impl Registry {
    /// An empty registry.
    ///
    /// ```
    /// assert_eq!(multiproc::distributed::Registry::new().names().count(), 0);
    /// ```
    pub fn new() -> Registry {
        Registry::default()
    }

    /// Registers `f` under `name` (a later registration of the same name replaces it).
    /// Arguments and results travel encoded with postcard; use a tuple for several
    /// arguments.
    ///
    /// ```
    /// let r = multiproc::distributed::Registry::new().task("add", |(a, b): (i32, i32)| a + b);
    /// assert!(r.contains("add"));
    /// ```
    pub fn task<A, R>(mut self, name: &str, f: fn(A) -> R) -> Registry
    where
        A: Serialize + DeserializeOwned + 'static,
        R: Serialize + DeserializeOwned + 'static,
    {
        let run: Run = Box::new(move |bytes: &[u8]| {
            let args: A = Codec::Postcard
                .decode(bytes)
                .map_err(|e| format!("the arguments do not decode: {e}"))?;
            let result = f(args);
            let mut out = Vec::new();
            Codec::Postcard
                .encode_into(&result, &mut out)
                .map_err(|e| format!("the result does not encode: {e}"))?;
            Ok(out)
        });
        let registered = Registered {
            run,
            arg_type: std::any::type_name::<A>(),
            result_type: std::any::type_name::<R>(),
        };
        self.tasks.insert(name.to_string(), registered);
        self
    }

    /// Registers `f` under `task`'s name, checking at compile time that `f` has `task`'s
    /// types.
    ///
    /// ```
    /// use multiproc::distributed::{Registry, Task};
    /// const ADD: Task<(i32, i32), i32> = Task::new("add");
    /// let r = Registry::new().register(ADD, |(a, b)| a + b);
    /// assert!(r.contains("add"));
    /// ```
    pub fn register<A, R>(self, task: Task<A, R>, f: fn(A) -> R) -> Registry
    where
        A: Serialize + DeserializeOwned + 'static,
        R: Serialize + DeserializeOwned + 'static,
    {
        self.task(task.name, f)
    }

    /// A version tag that enters the [`identity`](Self::identity): workers built with
    /// another tag refuse this registry's tasks.
    ///
    /// ```
    /// use multiproc::distributed::Registry;
    /// let a = Registry::new().task("id", |x: u8| x).version("2");
    /// let b = Registry::new().task("id", |x: u8| x).version("3");
    /// assert_ne!(a.identity(), b.identity());
    /// ```
    pub fn version(mut self, tag: &str) -> Registry {
        self.version = tag.to_string();
        self
    }

    /// Whether a function is registered under `name`.
    ///
    /// ```
    /// assert!(!multiproc::distributed::Registry::new().contains("square"));
    /// ```
    pub fn contains(&self, name: &str) -> bool {
        self.tasks.contains_key(name)
    }

    /// The registered names, sorted.
    ///
    /// ```
    /// let r = multiproc::distributed::Registry::new().task("b", |x: u8| x).task("a", |x: u8| x);
    /// assert_eq!(r.names().collect::<Vec<_>>(), ["a", "b"]);
    /// ```
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.tasks.keys().map(String::as_str)
    }

    /// The registry's identity: a 64-bit FNV-1a hash of its version tag and of each name
    /// with its argument and result type names, in name order. Equal registries built by
    /// the same compiler have the same identity on every machine.
    ///
    /// ```
    /// use multiproc::distributed::Registry;
    /// let a = Registry::new().task("f", |x: u8| x);
    /// let b = Registry::new().task("f", |x: u8| x as u16);
    /// assert_ne!(a.identity(), b.identity());
    /// assert_eq!(a.identity(), Registry::new().task("f", |x: u8| x + 1).identity());
    /// ```
    pub fn identity(&self) -> u64 {
        let mut hash = Fnv::new();
        hash.write(self.version.as_bytes());
        for (name, task) in &self.tasks {
            hash.write(&[0xff]);
            hash.write(name.as_bytes());
            hash.write(&[0]);
            hash.write(task.arg_type.as_bytes());
            hash.write(&[0]);
            hash.write(task.result_type.as_bytes());
        }
        hash.0
    }

    /// Checks that `name` is registered with argument type `A` and result type `R`.
    pub(super) fn check<A, R>(&self, name: &str) -> Result<()> {
        let task = self.tasks.get(name).ok_or_else(|| {
            Error::InvalidArgument(format!("no task function `{name}` in this registry"))
        })?;
        let (a, r) = (std::any::type_name::<A>(), std::any::type_name::<R>());
        if task.arg_type != a || task.result_type != r {
            return Err(Error::InvalidArgument(format!(
                "task function `{name}` takes {} and returns {}, not {a} and {r}",
                task.arg_type, task.result_type
            )));
        }
        Ok(())
    }

    /// Runs a task message for worker `who`: the results of its items, or why the whole
    /// task was refused (an unknown name, another identity). A panic is that item's error.
    pub(super) fn execute(&self, task: &TaskMsg, who: &str) -> Outcome {
        let Some(registered) = self.tasks.get(&task.function) else {
            return Err(format!(
                "worker {who} refused task `{}`: no task function of that name in its \
                 registry (not run)",
                task.function
            ));
        };
        let mine = self.identity();
        if task.identity != mine {
            return Err(format!(
                "worker {who} refused task `{}`: its registry identity {mine:016x} differs from \
                 the submitter's {:016x} (another build or registry; not run)",
                task.function, task.identity
            ));
        }
        let outcome = task
            .args
            .iter()
            .map(|args| match catch_unwind(AssertUnwindSafe(|| (registered.run)(args))) {
                Ok(result) => result.map_err(|e| format!("task `{}`: {e}", task.function)),
                Err(panic) => Err(format!(
                    "task `{}` panicked on worker {who}: {}",
                    task.function,
                    panic_text(panic.as_ref())
                )),
            })
            .collect();
        Ok(outcome)
    }
}

/// The text of a panic's payload.
fn panic_text(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "a panic".to_string()
    }
}

/// 64-bit FNV-1a: stable across builds and machines (unlike std's hashers).
struct Fnv(u64);

impl Fnv {
    /// The FNV offset basis.
    fn new() -> Fnv {
        Fnv(0xcbf2_9ce4_8422_2325)
    }

    /// Hashes `bytes` in.
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 ^= u64::from(b);
            self.0 = self.0.wrapping_mul(0x0100_0000_01b3);
        }
    }
}

/// The results of a task's items (each its value encoded, or its error), or why the task
/// was not run at all.
pub(super) type Outcome = std::result::Result<Vec<std::result::Result<Vec<u8>, String>>, String>;

/// A task as it travels on the task stream: a chunk of one job's items.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(super) struct TaskMsg {
    /// The submitter's result queue.
    pub(super) reply: String,
    /// The submitter's job.
    pub(super) job: u64,
    /// The chunk's index in the job.
    pub(super) chunk: u32,
    /// The registered function's name.
    pub(super) function: String,
    /// The submitter's registry identity.
    pub(super) identity: u64,
    /// Each item's encoded arguments.
    pub(super) args: Vec<Vec<u8>>,
}

/// A task's result as it travels back on the submitter's result queue.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(super) struct ResultMsg {
    /// The job it belongs to.
    pub(super) job: u64,
    /// The chunk's index in the job.
    pub(super) chunk: u32,
    /// What came of it.
    pub(super) outcome: Outcome,
}
