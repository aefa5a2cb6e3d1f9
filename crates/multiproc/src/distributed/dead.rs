//! [`DeadLetters`]: the dead-letter stream of a [`JoinableQueue`](super::JoinableQueue) (or
//! of a [`Pool`](super::Pool)'s tasks), for an operator to list and requeue.

use std::time::Duration;

use super::link::{Link, Settings};
use super::scripts;
use crate::error::{Error, Result};

/// How long one command may take.
const TIMEOUT: Duration = Duration::from_secs(10);

/// Requeues one dead letter: KEYS dead, stream; ARGV id. 1 when requeued, 0 when there is
/// no such entry, -1 when it holds no item (an entry that was not ours).
const REQUEUE: &str = r#"
local e = redis.call('XRANGE', KEYS[1], ARGV[1], ARGV[1])
if #e == 0 then return 0 end
local f = e[1][2]
for i = 1, #f, 2 do
  if f[i] == 'd' then
    redis.call('XADD', KEYS[2], '*', 'd', f[i + 1])
    redis.call('XDEL', KEYS[1], ARGV[1])
    return 1
  end
end
return -1
"#;

/// One entry of a dead-letter stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadLetter {
    /// Its id in the dead-letter stream (what [`DeadLetters::requeue`] takes).
    pub id: String,
    /// Its id in the queue's stream when it died.
    pub original_id: String,
    /// How many times it had been delivered.
    pub deliveries: u64,
    /// Why it died.
    pub reason: String,
    /// The item's encoded bytes (postcard), `None` for an entry that was not an item.
    pub item: Option<Vec<u8>>,
}

/// The dead letters of the queue `name` (`name:dead`): list them, requeue them (at the
/// end of the queue, as new items with a fresh delivery count), or delete them. For a
/// [`Pool`](super::Pool) named `P`, the queue is `P:tasks`; its submitter has had the
/// error for a dead task already, so a requeued task runs again for nobody unless the
/// submitter is gone (its workers then drop it).
///
/// ```no_run
/// use multiproc::distributed::DeadLetters;
/// let dead = DeadLetters::connect("redis://127.0.0.1/", "tasks")?;
/// for letter in dead.list(100)? {
///     println!("{} ({} deliveries): {}", letter.id, letter.deliveries, letter.reason);
///     dead.requeue(&letter.id)?;
/// }
/// # Ok::<(), multiproc::Error>(())
/// ```
#[derive(Debug)]
pub struct DeadLetters {
    link: Link,
    stream: String,
    dead: String,
}

impl DeadLetters {
    /// The dead letters of the queue `name` at `url` (connected on first use).
    /// [`Error::InvalidArgument`] for a malformed URL or an empty name.
    ///
    /// ```
    /// let dead = multiproc::distributed::DeadLetters::connect("redis://127.0.0.1/", "tasks")?;
    /// assert_eq!(dead.name(), "tasks:dead");
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn connect(url: &str, name: &str) -> Result<DeadLetters> {
        if name.is_empty() {
            return Err(Error::InvalidArgument("a queue on Redis needs a name".into()));
        }
        let keys = scripts::Keys::of(name);
        Ok(DeadLetters {
            link: Link::open(url, Settings::default())?,
            stream: keys.stream,
            dead: keys.dead,
        })
    }

    /// The dead-letter stream's name.
    ///
    /// ```
    /// let dead = multiproc::distributed::DeadLetters::connect("redis://127.0.0.1/", "q")?;
    /// assert_eq!(dead.name(), "q:dead");
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn name(&self) -> &str {
        &self.dead
    }

    /// How many dead letters there are.
    ///
    /// ```no_run
    /// let dead = multiproc::distributed::DeadLetters::connect("redis://127.0.0.1/", "q")?;
    /// println!("{}", dead.len()?);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn len(&self) -> Result<usize> {
        let n = self.link.run(crate::deadline::after(TIMEOUT), |con| {
            redis::cmd("XLEN").arg(&self.dead).query::<i64>(con)
        })?;
        Ok(n.max(0) as usize)
    }

    /// Whether there are none.
    ///
    /// ```no_run
    /// let dead = multiproc::distributed::DeadLetters::connect("redis://127.0.0.1/", "q")?;
    /// if dead.is_empty()? { println!("nothing died"); }
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn is_empty(&self) -> Result<bool> {
        Ok(self.len()? == 0)
    }

    /// The oldest `max` dead letters.
    ///
    /// ```no_run
    /// let dead = multiproc::distributed::DeadLetters::connect("redis://127.0.0.1/", "q")?;
    /// let first = dead.list(10)?;
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn list(&self, max: usize) -> Result<Vec<DeadLetter>> {
        let reply = self.link.run(crate::deadline::after(TIMEOUT), |con| {
            redis::cmd("XRANGE")
                .arg(&self.dead)
                .arg("-")
                .arg("+")
                .arg("COUNT")
                .arg(max.max(1))
                .query::<redis::Value>(con)
        })?;
        let mut out = Vec::new();
        for entry in scripts::array("XRANGE", &reply)?.iter().take(max) {
            out.push(letter(entry)?);
        }
        Ok(out)
    }

    /// Puts the dead letter `id` back at the end of the queue, as a new item, and deletes
    /// it here, in one atomic step (the queue's `maxsize` is not checked). `Ok(false)` when
    /// there is no such dead letter; [`Error::InvalidArgument`] for one that holds no
    /// item (an entry that was not ours: [`remove`](Self::remove) it).
    ///
    /// ```no_run
    /// let dead = multiproc::distributed::DeadLetters::connect("redis://127.0.0.1/", "q")?;
    /// dead.requeue("1700000000000-0")?;
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn requeue(&self, id: &str) -> Result<bool> {
        let done = self.link.run(crate::deadline::after(TIMEOUT), |con| {
            REQUEUE_SCRIPT.key(&self.dead).key(&self.stream).arg(id).invoke::<i64>(con)
        })?;
        match done {
            1 => Ok(true),
            0 => Ok(false),
            _ => Err(Error::InvalidArgument(format!(
                "dead letter {id} holds no item; it can only be removed"
            ))),
        }
    }

    /// Requeues every dead letter that holds an item (see [`requeue`](Self::requeue)),
    /// oldest first, and returns how many were requeued.
    ///
    /// ```no_run
    /// let dead = multiproc::distributed::DeadLetters::connect("redis://127.0.0.1/", "q")?;
    /// let n = dead.requeue_all()?;
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn requeue_all(&self) -> Result<usize> {
        let mut requeued = 0;
        let mut after = "-".to_string();
        loop {
            let reply = self.link.run(crate::deadline::after(TIMEOUT), |con| {
                redis::cmd("XRANGE")
                    .arg(&self.dead)
                    .arg(&after)
                    .arg("+")
                    .arg("COUNT")
                    .arg(scripts::MAX_BATCH)
                    .query::<redis::Value>(con)
            })?;
            let entries = scripts::array("XRANGE", &reply)?;
            if entries.is_empty() {
                return Ok(requeued);
            }
            for entry in entries {
                let letter = letter(entry)?;
                if letter.item.is_some() && self.requeue(&letter.id)? {
                    requeued += 1;
                }
                after = format!("({}", letter.id);
            }
        }
    }

    /// Deletes the dead letter `id`; whether there was one.
    ///
    /// ```no_run
    /// let dead = multiproc::distributed::DeadLetters::connect("redis://127.0.0.1/", "q")?;
    /// dead.remove("1700000000000-0")?;
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn remove(&self, id: &str) -> Result<bool> {
        let n = self.link.run(crate::deadline::after(TIMEOUT), |con| {
            redis::cmd("XDEL").arg(&self.dead).arg(id).query::<i64>(con)
        })?;
        Ok(n > 0)
    }
}

/// See [`REQUEUE`].
static REQUEUE_SCRIPT: std::sync::LazyLock<redis::Script> =
    std::sync::LazyLock::new(|| redis::Script::new(REQUEUE));

/// A dead letter from its `[id, [field, value, …]]`.
fn letter(entry: &redis::Value) -> Result<DeadLetter> {
    let parts = scripts::array("XRANGE", entry)?;
    let id = scripts::string("XRANGE", parts.first().unwrap_or(&redis::Value::Nil))?;
    let fields = scripts::array("XRANGE", parts.get(1).unwrap_or(&redis::Value::Nil))?;
    let mut letter = DeadLetter {
        id,
        original_id: String::new(),
        deliveries: 0,
        reason: String::new(),
        item: None,
    };
    for pair in fields.chunks(2) {
        let [redis::Value::BulkString(name), redis::Value::BulkString(value)] = pair else {
            continue;
        };
        let text = || String::from_utf8_lossy(value).into_owned();
        match name.as_slice() {
            b"id" => letter.original_id = text(),
            b"deliveries" => letter.deliveries = text().parse().unwrap_or(0),
            b"reason" => letter.reason = text(),
            b"d" => letter.item = Some(value.clone()),
            _ => {}
        }
    }
    Ok(letter)
}
