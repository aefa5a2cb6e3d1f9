//! The Lua scripts that make the queues' steps atomic on the server, and the parsing of
//! the stream entries that they and `XREADGROUP` return.
//!
//! Keys of a queue named `N`: the stream `N`; `N:room`, a one-entry stream a taker appends
//! to so that putters waiting for room wake up; and for a joinable queue `N:dead` (the
//! dead-letter stream) and `N:joined`, a one-entry stream appended to when the last
//! unfinished item is done. An item is the field `d` of its entry, encoded with postcard.

use std::sync::LazyLock;

use crate::error::{Error, Result};

/// The stream field that holds an item.
pub(super) const ITEM_FIELD: &str = "d";
/// The consumer group of a queue (a plain one reads through it too, without acknowledging).
pub(super) const GROUP: &str = "multiproc";
/// The one consumer name of every plain queue's handle: with `NOACK` a consumer holds
/// nothing, so they can share it (and the group does not grow with each handle).
pub(super) const PLAIN_CONSUMER: &str = "plain";
/// The most entries one script call takes (Lua's stack bounds `unpack`).
pub(super) const MAX_BATCH: usize = 1024;

/// `last_id(key)`: the id of the newest entry of a signal stream, `0-0` when it has none.
const LAST_ID: &str = r#"
local function last_id(key)
  local newest = redis.call('XREVRANGE', key, '+', '-', 'COUNT', 1)
  if #newest == 0 then return '0-0' end
  return newest[1][1]
end
"#;

/// `trim_delivered(key, group)`: removes the entries of a plain queue that its group has
/// delivered (those a consumer that died between taking and trimming left), and returns
/// the id of the last one delivered (`0-0` if none, or no group).
const TRIM_DELIVERED: &str = r#"
local function trim_delivered(key, group)
  local groups = redis.pcall('XINFO', 'GROUPS', key)
  if type(groups) ~= 'table' or groups.err then return '0-0' end
  for _, g in ipairs(groups) do
    local name, last = nil, '0-0'
    for i = 1, #g, 2 do
      if g[i] == 'name' then name = g[i + 1] elseif g[i] == 'last-delivered-id' then last = g[i + 1] end
    end
    if name == group then
      if last ~= '0-0' then
        redis.call('XTRIM', key, 'MINID', last)
        redis.call('XDEL', key, last)
      end
      return last
    end
  end
  return '0-0'
end
"#;

/// `finish(id)` and `dead_letter(id, fields, count, reason)` of a joinable queue: KEYS are
/// stream, room, dead, joined; `ARGV[1]` the group. An entry leaves the stream
/// when it is done, so the stream's length is the count of unfinished items (put and not
/// done: waiting or pending), which `join` waits to see at zero.
const FINISH: &str = r#"
local function finish(id)
  if redis.call('XACK', KEYS[1], ARGV[1], id) == 0 then return 0 end
  redis.call('XDEL', KEYS[1], id)
  if redis.call('XLEN', KEYS[1]) == 0 then
    redis.call('XADD', KEYS[4], 'MAXLEN', '1', '*', 'n', '0')
  end
  return 1
end
local function dead_letter(id, fields, count, reason)
  local args = {KEYS[3], '*', 'id', id, 'deliveries', tostring(count), 'reason', reason}
  if fields then
    for _, f in ipairs(fields) do args[#args + 1] = f end
  end
  redis.call('XADD', unpack(args))
  return finish(id)
end
"#;

/// Puts: KEYS stream, room; ARGV maxsize, joinable ('1'/'0'), group, items…
/// Adds as many items as fit under maxsize (counting items not yet delivered: a plain
/// queue's stream holds only those once the delivered ones are trimmed, a joinable queue's
/// holds the pending ones too) and returns `{added, last id of the room stream}`.
const PUT: &str = r#"
local maxsize = tonumber(ARGV[1])
local joinable = ARGV[2] == '1'
local n = #ARGV - 3
local fit = n
if maxsize > 0 then
  if not joinable then trim_delivered(KEYS[1], ARGV[3]) end
  local queued = redis.call('XLEN', KEYS[1])
  if joinable and queued > 0 then
    local summary = redis.pcall('XPENDING', KEYS[1], ARGV[3])
    if type(summary) == 'table' and summary[1] then queued = queued - summary[1] end
  end
  fit = math.max(0, math.min(n, maxsize - queued))
end
for i = 1, fit do redis.call('XADD', KEYS[1], '*', 'd', ARGV[3 + i]) end
local room = '0-0'
if fit < n then room = last_id(KEYS[2]) end
return {fit, room}
"#;

/// After a plain queue's take: KEYS stream, room; ARGV the last id taken, the count. The
/// group delivers in order, so every entry up to the last one taken has been delivered:
/// trimming below it (whole nodes at a time) and deleting it removes them. Then a putter
/// waiting for room is told.
const TAKEN: &str = r#"
redis.call('XTRIM', KEYS[1], 'MINID', ARGV[1])
redis.call('XDEL', KEYS[1], ARGV[1])
redis.call('XADD', KEYS[2], 'MAXLEN', '1', '*', 'n', ARGV[2])
return 1
"#;

/// A plain queue with nothing to take: KEYS stream; ARGV group. Trims what was delivered
/// and returns the last delivered id, after which a waiter blocks.
const DELIVERED: &str = "return trim_delivered(KEYS[1], ARGV[1])";

/// Takes for a joinable queue's consumer: KEYS stream, room, dead, joined;
/// ARGV group, consumer, count, visibility (ms), max deliveries. First reclaims entries
/// idle longer than the visibility timeout (dead-lettering those delivered too often),
/// then reads new ones. Returns `{{id, fields, deliveries}…}`.
const TAKE_JOINABLE: &str = r#"
local group, consumer, count = ARGV[1], ARGV[2], tonumber(ARGV[3])
local visibility, max_deliveries = ARGV[4], tonumber(ARGV[5])
local out = {}
local claimed = redis.call('XAUTOCLAIM', KEYS[1], group, consumer, visibility, '0-0', 'COUNT', count)
for _, e in ipairs(claimed[2]) do
  local id = e[1]
  local pending = redis.call('XPENDING', KEYS[1], group, id, id, 1)
  local deliveries = 1
  if pending[1] then deliveries = pending[1][4] end
  if deliveries > max_deliveries then
    dead_letter(id, e[2], deliveries, 'delivered ' .. deliveries .. ' times')
  elseif e[2] then
    out[#out + 1] = {id, e[2], deliveries}
  end
end
if #out < count then
  local fresh = redis.call('XREADGROUP', 'GROUP', group, consumer, 'COUNT', count - #out, 'STREAMS', KEYS[1], '>')
  if fresh then
    for _, e in ipairs(fresh[1][2]) do out[#out + 1] = {e[1], e[2], 1} end
  end
end
if #out > 0 then redis.call('XADD', KEYS[2], 'MAXLEN', '1', '*', 'n', tostring(#out)) end
return out
"#;

/// Marks deliveries done: KEYS as for [`TAKE_JOINABLE`]; ARGV group, ids… Returns how
/// many this call acknowledged (one acknowledged before counts 0).
const TASK_DONE: &str = r#"
local n = 0
for i = 2, #ARGV do n = n + finish(ARGV[i]) end
return n
"#;

/// Dead-letters one delivery: KEYS as for [`TAKE_JOINABLE`]; ARGV group, id, deliveries,
/// reason.
const DEAD_LETTER: &str = r#"
local entry = redis.call('XRANGE', KEYS[1], ARGV[2], ARGV[2])
local fields = nil
if entry[1] then fields = entry[1][2] end
return dead_letter(ARGV[2], fields, ARGV[3], ARGV[4])
"#;

/// A joinable queue's unfinished count (its stream's length) and the last id of its
/// `joined` stream: KEYS as for [`TAKE_JOINABLE`].
const UNFINISHED: &str = r#"
return {redis.call('XLEN', KEYS[1]), last_id(KEYS[4])}
"#;

/// Items waiting for delivery: KEYS stream; ARGV joinable, group. A plain queue's stream
/// holds only those once the delivered ones are trimmed; a joinable queue's holds the
/// pending ones too.
const QSIZE: &str = r#"
if ARGV[1] ~= '1' then trim_delivered(KEYS[1], ARGV[2]) end
local queued = redis.call('XLEN', KEYS[1])
if ARGV[1] == '1' and queued > 0 then
  local summary = redis.pcall('XPENDING', KEYS[1], ARGV[2])
  if type(summary) == 'table' and summary[1] then queued = queued - summary[1] end
end
return queued
"#;

/// Removes a consumer from the group if nothing is pending for it: KEYS stream; ARGV
/// group, consumer. (Removing one with pending entries would lose them.)
const DROP_CONSUMER: &str = r#"
local pending = redis.call('XPENDING', KEYS[1], ARGV[1], '-', '+', 1, ARGV[2])
if #pending > 0 then return 0 end
return redis.call('XGROUP', 'DELCONSUMER', KEYS[1], ARGV[1], ARGV[2])
"#;

fn script(parts: &[&str]) -> redis::Script {
    redis::Script::new(&parts.concat())
}

/// See [`PUT`].
pub(super) static PUT_SCRIPT: LazyLock<redis::Script> =
    LazyLock::new(|| script(&[LAST_ID, TRIM_DELIVERED, PUT]));
/// See [`TAKEN`].
pub(super) static TAKEN_SCRIPT: LazyLock<redis::Script> = LazyLock::new(|| script(&[TAKEN]));
/// See [`DELIVERED`].
pub(super) static DELIVERED_SCRIPT: LazyLock<redis::Script> =
    LazyLock::new(|| script(&[TRIM_DELIVERED, DELIVERED]));
/// See [`TAKE_JOINABLE`].
pub(super) static TAKE_JOINABLE_SCRIPT: LazyLock<redis::Script> =
    LazyLock::new(|| script(&[FINISH, TAKE_JOINABLE]));
/// See [`TASK_DONE`].
pub(super) static TASK_DONE_SCRIPT: LazyLock<redis::Script> =
    LazyLock::new(|| script(&[FINISH, TASK_DONE]));
/// See [`DEAD_LETTER`].
pub(super) static DEAD_LETTER_SCRIPT: LazyLock<redis::Script> =
    LazyLock::new(|| script(&[FINISH, DEAD_LETTER]));
/// See [`UNFINISHED`].
pub(super) static UNFINISHED_SCRIPT: LazyLock<redis::Script> =
    LazyLock::new(|| script(&[LAST_ID, UNFINISHED]));
/// See [`DROP_CONSUMER`].
pub(super) static DROP_CONSUMER_SCRIPT: LazyLock<redis::Script> =
    LazyLock::new(|| script(&[DROP_CONSUMER]));
/// See [`QSIZE`].
pub(super) static QSIZE_SCRIPT: LazyLock<redis::Script> =
    LazyLock::new(|| script(&[TRIM_DELIVERED, QSIZE]));

/// The keys of the queue named `name`, in the order the scripts take them.
#[derive(Debug, Clone)]
pub(super) struct Keys {
    /// The stream of items.
    pub(super) stream: String,
    /// The signal stream for putters waiting for room.
    pub(super) room: String,
    /// A joinable queue's dead-letter stream.
    pub(super) dead: String,
    /// The signal stream for joiners.
    pub(super) joined: String,
}

impl Keys {
    /// The keys of the queue `name`.
    pub(super) fn of(name: &str) -> Keys {
        Keys {
            stream: name.to_string(),
            room: format!("{name}:room"),
            dead: format!("{name}:dead"),
            joined: format!("{name}:joined"),
        }
    }

    /// An invocation of `script` with every key of a joinable queue.
    pub(super) fn joinable<'a>(&self, script: &'a redis::Script) -> redis::ScriptInvocation<'a> {
        let mut invocation = script.prepare_invoke();
        invocation.key(&self.stream).key(&self.room).key(&self.dead).key(&self.joined);
        invocation
    }
}

/// One stream entry as a script or `XREADGROUP` returned it.
#[derive(Debug, Clone)]
pub(super) struct Entry {
    /// Its stream id.
    pub(super) id: String,
    /// Its item's bytes (the `d` field), or why it has none.
    pub(super) item: std::result::Result<Vec<u8>, String>,
    /// How many times it has been delivered, this time included.
    pub(super) deliveries: u64,
}

fn protocol(what: &str, value: &redis::Value) -> Error {
    Error::Protocol(format!("redis: unexpected reply for {what}: {value:?}"))
}

fn text(value: &redis::Value) -> Option<String> {
    match value {
        redis::Value::BulkString(b) => String::from_utf8(b.clone()).ok(),
        redis::Value::SimpleString(s) => Some(s.clone()),
        _ => None,
    }
}

/// An integer reply.
pub(super) fn int(what: &str, value: &redis::Value) -> Result<i64> {
    match value {
        redis::Value::Int(n) => Ok(*n),
        other => text(other).and_then(|t| t.parse().ok()).ok_or_else(|| protocol(what, other)),
    }
}

/// A string reply.
pub(super) fn string(what: &str, value: &redis::Value) -> Result<String> {
    text(value).ok_or_else(|| protocol(what, value))
}

/// The items of a reply that is an array.
pub(super) fn array<'v>(what: &str, value: &'v redis::Value) -> Result<&'v [redis::Value]> {
    match value {
        redis::Value::Array(items) => Ok(items),
        redis::Value::Nil => Ok(&[]),
        other => Err(protocol(what, other)),
    }
}

/// The items of an array reply, owned.
fn owned_array(what: &str, value: redis::Value) -> Result<Vec<redis::Value>> {
    match value {
        redis::Value::Array(items) => Ok(items),
        redis::Value::Nil => Ok(Vec::new()),
        other => Err(protocol(what, &other)),
    }
}

/// An entry `[id, [field, value, …]]`, optionally followed by its delivery count (taken
/// apart without copying the item's bytes).
pub(super) fn entry(what: &str, value: redis::Value) -> Result<Entry> {
    let mut parts = owned_array(what, value)?.into_iter();
    let id = parts.next().as_ref().and_then(text);
    let fields = owned_array(what, parts.next().unwrap_or(redis::Value::Nil))?;
    let deliveries = match parts.next() {
        Some(n) => int(what, &n)?.max(1) as u64,
        None => 1,
    };
    let id =
        id.ok_or_else(|| Error::Protocol(format!("redis: an entry without an id in {what}")))?;
    let mut item = Err(format!("entry {id} has no `{ITEM_FIELD}` field (not an item of ours)"));
    let mut fields = fields.into_iter();
    while let (Some(name), Some(bytes)) = (fields.next(), fields.next()) {
        if let (redis::Value::BulkString(name), redis::Value::BulkString(bytes)) = (&name, bytes) {
            if name.as_slice() == ITEM_FIELD.as_bytes() {
                item = Ok(bytes);
                break;
            }
        }
    }
    Ok(Entry { id, item, deliveries })
}

/// The entries of a script's reply (`[entry…]`).
pub(super) fn entries(what: &str, value: redis::Value) -> Result<Vec<Entry>> {
    owned_array(what, value)?.into_iter().map(|e| entry(what, e)).collect()
}

/// The entries of an `XREADGROUP`/`XREAD` reply for one stream (`[[key, [entry…]]]`).
pub(super) fn read_reply(value: redis::Value) -> Result<Vec<Entry>> {
    let mut out = Vec::new();
    for stream in owned_array("XREAD", value)? {
        let list = owned_array("XREAD", stream)?.into_iter().nth(1);
        out.extend(entries("XREAD", list.unwrap_or(redis::Value::Nil))?);
    }
    Ok(out)
}
