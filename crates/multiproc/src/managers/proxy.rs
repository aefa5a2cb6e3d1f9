//! Proxies: typed handles on objects that live in a manager's server.

use std::borrow::Borrow;
use std::fmt;
use std::marker::PhantomData;
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use super::remote::{dec, enc, ms, opt_value, owner, Handle};
use crate::error::{Error, PutError, Result};

/// Boilerplate every proxy shares: Clone, Debug, serde (as the object's token).
macro_rules! proxy_common {
    ($name:ident $(<$($p:ident),*>)?, $label:literal) => {
        impl$(<$($p),*>)? Clone for $name$(<$($p),*>)? {
            fn clone(&self) -> Self {
                $name { handle: self.handle.clone(), types: PhantomData }
            }
        }

        impl$(<$($p),*>)? fmt::Debug for $name$(<$($p),*>)? {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, concat!($label, "({:?})"), self.handle)
            }
        }

        impl$(<$($p),*>)? Serialize for $name$(<$($p),*>)? {
            fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
                self.handle.serialize(s)
            }
        }

        impl<'de $(, $($p),*)?> Deserialize<'de> for $name$(<$($p),*>)? {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
                Ok($name { handle: Handle::deserialize(d)?, types: PhantomData })
            }
        }

        impl$(<$($p),*>)? $name$(<$($p),*>)? {
            pub(crate) fn from_handle(handle: Handle) -> Self {
                $name { handle, types: PhantomData }
            }

            /// The object's id on its server (ids are never reused while the server runs).
            pub fn id(&self) -> u64 {
                self.handle.id
            }
        }
    };
}

// --------------------------------------------------------------------------------------
// dict

/// A dict in a manager's server (Python's `DictProxy`): keys `K`, values `V`, kept in
/// insertion order. Keys compare by their serde encoding, which is canonical for one type,
/// so use the same `K` everywhere (a `&str` key finds a `String` key: they encode alike).
///
/// A proxy is a token (address, authkey, id): clone it, pass it to a child process,
/// send it through a queue or a pipe, or store it inside another managed object.
///
/// ```
/// let manager = multiproc::Manager::start()?;
/// let d = manager.dict::<String, i64>()?;
/// d.set("a", &1)?;
/// d.set("b", &2)?;
/// assert_eq!(d.get("a")?, Some(1));
/// assert_eq!(d.get("missing")?, None);
/// assert_eq!(d.insert("a", &10)?, Some(1)); // the previous value
/// assert!(d.contains("b")? && !d.contains("c")?);
/// assert_eq!(d.setdefault("c", &3)?, 3);
/// assert_eq!(d.update_with("hits", |v| v.unwrap_or(0) + 1)?, 1);
/// assert_eq!(d.pop("hits")?, Some(1));
/// assert_eq!(d.keys()?, ["a", "b", "c"]);
/// assert_eq!(d.items()?, vec![("a".to_string(), 10), ("b".to_string(), 2), ("c".to_string(), 3)]);
/// d.update([("d".to_string(), 4)])?;
/// assert_eq!(d.len()?, 4);
/// d.clear()?;
/// assert!(d.is_empty()?);
/// manager.shutdown()?;
/// # Ok::<(), multiproc::Error>(())
/// ```
pub struct DictProxy<K, V> {
    handle: Handle,
    types: PhantomData<fn() -> (K, V)>,
}

proxy_common!(DictProxy<K, V>, "DictProxy");

impl<K, V> DictProxy<K, V>
where
    K: Serialize + DeserializeOwned,
    V: Serialize + DeserializeOwned,
{
    /// The value for `key` (Python's `d.get(key)`).
    pub fn get<Q: Serialize + ?Sized>(&self, key: &Q) -> Result<Option<V>>
    where
        K: Borrow<Q>,
    {
        self.handle.call_key("get", key, opt_value)
    }

    /// Sets `key` to `value` (Python's `d[key] = value`).
    pub fn set<Q: Serialize + ?Sized, W: Serialize + ?Sized>(
        &self,
        key: &Q,
        value: &W,
    ) -> Result<()>
    where
        K: Borrow<Q>,
        V: Borrow<W>,
    {
        self.insert(key, value).map(|_| ())
    }

    /// Sets `key` to `value` and returns the previous value.
    pub fn insert<Q: Serialize + ?Sized, W: Serialize + ?Sized>(
        &self,
        key: &Q,
        value: &W,
    ) -> Result<Option<V>>
    where
        K: Borrow<Q>,
        V: Borrow<W>,
    {
        self.handle.call_key_value("set", key, value, opt_value)
    }

    /// Removes `key` and returns its value (Python's `d.pop(key, None)`).
    pub fn pop<Q: Serialize + ?Sized>(&self, key: &Q) -> Result<Option<V>>
    where
        K: Borrow<Q>,
    {
        self.handle.call_key("pop", key, opt_value)
    }

    /// The same as [`pop`](Self::pop) (Python's `del d[key]`, without the `KeyError`).
    pub fn remove<Q: Serialize + ?Sized>(&self, key: &Q) -> Result<Option<V>>
    where
        K: Borrow<Q>,
    {
        self.pop(key)
    }

    /// Whether `key` is present (Python's `key in d`).
    pub fn contains<Q: Serialize + ?Sized>(&self, key: &Q) -> Result<bool>
    where
        K: Borrow<Q>,
    {
        self.handle.call_key("contains", key, dec)
    }

    /// The number of entries (Python's `len(d)`).
    pub fn len(&self) -> Result<usize> {
        self.handle.call::<_, u64>("len", &()).map(|n| n as usize)
    }

    /// Whether the dict is empty.
    pub fn is_empty(&self) -> Result<bool> {
        Ok(self.len()? == 0)
    }

    /// The keys, in insertion order (a snapshot).
    pub fn keys(&self) -> Result<Vec<K>> {
        let keys: Vec<Vec<u8>> = self.handle.call("keys", &())?;
        keys.iter().map(|k| dec(k)).collect()
    }

    /// The values, in insertion order of their keys (a snapshot).
    pub fn values(&self) -> Result<Vec<V>> {
        let values: Vec<Vec<u8>> = self.handle.call("values", &())?;
        values.iter().map(|v| dec(v)).collect()
    }

    /// The entries, in insertion order (a snapshot; Python's `dict(d)`).
    pub fn items(&self) -> Result<Vec<(K, V)>> {
        let items: Vec<(Vec<u8>, Vec<u8>)> = self.handle.call("items", &())?;
        items.iter().map(|(k, v)| Ok((dec(k)?, dec(v)?))).collect()
    }

    /// Sets every entry of `entries`, in one round trip (Python's `d.update(...)`).
    pub fn update<I: IntoIterator<Item = (K, V)>>(&self, entries: I) -> Result<()> {
        let items = entries
            .into_iter()
            .map(|(k, v)| Ok((enc(&k)?, enc(&v)?)))
            .collect::<Result<Vec<_>>>()?;
        self.handle.call("update", &items)
    }

    /// Removes every entry.
    pub fn clear(&self) -> Result<()> {
        self.handle.call("clear", &())
    }

    /// The value for `key`, inserting `default` first if it is missing, atomically
    /// (Python's `d.setdefault(key, default)`).
    pub fn setdefault<Q: Serialize + ?Sized, W: Serialize + ?Sized>(
        &self,
        key: &Q,
        default: &W,
    ) -> Result<V>
    where
        K: Borrow<Q>,
        V: Borrow<W>,
    {
        dec(&self.handle.call::<_, Vec<u8>>("setdefault", &(enc(key)?, enc(default)?))?)
    }

    /// Replaces the value of `key` by `f(current)` atomically with respect to every other
    /// process (a compare-and-set loop: `f` may run more than once) and returns the new
    /// value. The fix for the lost updates of `d[k] = d[k] + 1` across processes.
    pub fn update_with<Q: Serialize + ?Sized>(
        &self,
        key: &Q,
        f: impl Fn(Option<V>) -> V,
    ) -> Result<V>
    where
        K: Borrow<Q>,
    {
        let new = cas_loop(&self.handle, &enc(key)?, |v| Some(f(v)))?;
        new.ok_or_else(|| Error::Remote("compare-and-set gave no value".into()))
    }
}

/// Compare-and-set on a dict entry until it sticks; `f` returning `None` gives up.
fn cas_loop<V: Serialize + DeserializeOwned>(
    handle: &Handle,
    key: &[u8],
    f: impl Fn(Option<V>) -> Option<V>,
) -> Result<Option<V>> {
    let mut current: Option<Vec<u8>> = handle.call("get", key)?;
    loop {
        let old = current.as_deref().map(dec).transpose()?;
        let Some(new) = f(old) else { return Ok(None) };
        let (done, now): (bool, Option<Vec<u8>>) =
            handle.call("compare_and_set", &(key, &current, enc(&new)?))?;
        if done {
            return Ok(Some(new));
        }
        current = now;
    }
}

// --------------------------------------------------------------------------------------
// list

/// A list in a manager's server (Python's `ListProxy`). Indexes are `i64` and may be
/// negative, counting from the end, as in Python.
///
/// ```
/// let manager = multiproc::Manager::start()?;
/// let l = manager.list::<i32>()?;
/// l.extend([1, 2, 3])?;
/// l.append(&4)?;
/// assert_eq!(l.get(-1)?, 4);
/// assert!(matches!(l.get(9), Err(multiproc::Error::Remote(_)))); // IndexError
/// l.set(0, &0)?;
/// l.insert(1, &9)?;
/// assert_eq!(l.to_vec()?, [0, 9, 2, 3, 4]);
/// assert_eq!(l.pop()?, Some(4));
/// assert_eq!(l.pop_at(1)?, 9);
/// l.remove(&2)?;
/// assert_eq!(l.index(&3)?, Some(1));
/// assert!(l.contains(&0)? && !l.contains(&7)?);
/// assert_eq!(l.len()?, 2);
/// l.clear()?;
/// assert_eq!(l.pop()?, None);
/// manager.shutdown()?;
/// # Ok::<(), multiproc::Error>(())
/// ```
pub struct ListProxy<T> {
    handle: Handle,
    types: PhantomData<fn() -> T>,
}

proxy_common!(ListProxy<T>, "ListProxy");

impl<T: Serialize + DeserializeOwned> ListProxy<T> {
    /// Appends `item` (Python's `l.append(item)`).
    pub fn append<W: Serialize + ?Sized>(&self, item: &W) -> Result<()>
    where
        T: Borrow<W>,
    {
        self.handle.call("append", &enc(item)?)
    }

    /// Appends every item, in one round trip.
    pub fn extend<I: IntoIterator<Item = T>>(&self, items: I) -> Result<()> {
        let items = items.into_iter().map(|i| enc(&i)).collect::<Result<Vec<_>>>()?;
        self.handle.call("extend", &items)
    }

    /// The item at `index` (negative counts from the end); an `IndexError` from the server
    /// ([`Error::Remote`]) when out of range.
    pub fn get(&self, index: i64) -> Result<T> {
        dec(&self.handle.call::<_, Vec<u8>>("get", &index)?)
    }

    /// Replaces the item at `index` (Python's `l[index] = item`).
    pub fn set<W: Serialize + ?Sized>(&self, index: i64, item: &W) -> Result<()>
    where
        T: Borrow<W>,
    {
        self.handle.call("set", &(index, enc(item)?))
    }

    /// Inserts `item` before `index` (clamped, as Python's `l.insert`).
    pub fn insert<W: Serialize + ?Sized>(&self, index: i64, item: &W) -> Result<()>
    where
        T: Borrow<W>,
    {
        self.handle.call("insert", &(index, enc(item)?))
    }

    /// Removes and returns the last item (Python's `l.pop()`); `None` when empty.
    pub fn pop(&self) -> Result<Option<T>> {
        match self.handle.call::<_, Vec<u8>>("pop", &None::<i64>) {
            Ok(v) => dec(&v).map(Some),
            Err(Error::Remote(m)) if m.contains("empty list") => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Removes and returns the item at `index` (Python's `l.pop(index)`).
    pub fn pop_at(&self, index: i64) -> Result<T> {
        dec(&self.handle.call::<_, Vec<u8>>("pop", &Some(index))?)
    }

    /// Removes the first item equal to `item` (Python's `l.remove(item)`).
    pub fn remove<W: Serialize + ?Sized>(&self, item: &W) -> Result<()>
    where
        T: Borrow<W>,
    {
        self.handle.call("remove", &enc(item)?)
    }

    /// The number of items (Python's `len(l)`).
    pub fn len(&self) -> Result<usize> {
        self.handle.call::<_, u64>("len", &()).map(|n| n as usize)
    }

    /// Whether the list is empty.
    pub fn is_empty(&self) -> Result<bool> {
        Ok(self.len()? == 0)
    }

    /// A copy of all items (Python's `list(l)`).
    pub fn to_vec(&self) -> Result<Vec<T>> {
        let items: Vec<Vec<u8>> = self.handle.call("to_vec", &())?;
        items.iter().map(|i| dec(i)).collect()
    }

    /// The position of the first item equal to `item` (Python's `l.index(item)`), `None`
    /// if there is none.
    pub fn index<W: Serialize + ?Sized>(&self, item: &W) -> Result<Option<usize>>
    where
        T: Borrow<W>,
    {
        match self.handle.call::<_, u64>("index", &enc(item)?) {
            Ok(i) => Ok(Some(i as usize)),
            Err(Error::Remote(m)) if m.starts_with("ValueError") => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Whether an item equals `item` (Python's `item in l`).
    pub fn contains<W: Serialize + ?Sized>(&self, item: &W) -> Result<bool>
    where
        T: Borrow<W>,
    {
        self.handle.call_key("contains", item, dec)
    }

    /// Removes every item.
    pub fn clear(&self) -> Result<()> {
        self.handle.call("clear", &())
    }
}

// --------------------------------------------------------------------------------------
// Namespace

/// A namespace in a manager's server (Python's `manager.Namespace()`): named attributes of
/// any serde type, including other proxies.
///
/// `ns.x += 1` in Python is a read and then a write; so is `ns.set("x", &(ns.get::<i64>("x")? + 1))`
/// here, and processes doing it at once can lose updates. [`update`](Self::update) does it
/// atomically.
///
/// ```
/// use multiproc::managers::ListProxy;
/// let manager = multiproc::Manager::start()?;
/// let ns = manager.namespace()?;
/// ns.set("x", &0i64)?;
/// ns.set("items", &manager.list::<i64>()?)?;
/// ns.update("x", |x: i64| x + 1)?;
/// ns.get::<ListProxy<i64>>("items")?.append(&1)?;
/// assert_eq!(ns.get::<i64>("x")?, 1);
/// assert_eq!(ns.get::<ListProxy<i64>>("items")?.to_vec()?, [1]);
/// assert_eq!(ns.names()?, ["x", "items"]);
/// assert!(ns.delete("x")? && !ns.contains("x")?);
/// assert_eq!(ns.get_opt::<i64>("x")?, None);
/// assert!(matches!(ns.get::<i64>("x"), Err(multiproc::Error::Remote(_)))); // AttributeError
/// manager.shutdown()?;
/// # Ok::<(), multiproc::Error>(())
/// ```
pub struct Namespace {
    handle: Handle,
    types: PhantomData<()>,
}

proxy_common!(Namespace, "Namespace");

impl Namespace {
    /// Sets attribute `name` (Python's `ns.name = value`).
    pub fn set<W: Serialize + ?Sized>(&self, name: &str, value: &W) -> Result<()> {
        self.handle.call_key_value("set", name, value, |_| Ok(()))
    }

    /// Attribute `name` as a `T`; an `AttributeError` ([`Error::Remote`]) when it is not
    /// set, a codec error when it is not a `T`.
    pub fn get<T: DeserializeOwned>(&self, name: &str) -> Result<T> {
        self.get_opt(name)?.ok_or_else(|| {
            Error::Remote(format!("AttributeError: 'Namespace' object has no attribute '{name}'"))
        })
    }

    /// Attribute `name`, `None` when it is not set.
    pub fn get_opt<T: DeserializeOwned>(&self, name: &str) -> Result<Option<T>> {
        self.handle.call_key("get", name, opt_value)
    }

    /// Whether attribute `name` is set (Python's `hasattr(ns, name)`).
    pub fn contains(&self, name: &str) -> Result<bool> {
        self.handle.call_key("contains", name, dec)
    }

    /// Deletes attribute `name` (Python's `del ns.name`); whether it was set.
    pub fn delete(&self, name: &str) -> Result<bool> {
        self.handle.call::<_, Option<Vec<u8>>>("del", &enc(name)?).map(|v| v.is_some())
    }

    /// The attribute names, in the order they were first set.
    pub fn names(&self) -> Result<Vec<String>> {
        let keys: Vec<Vec<u8>> = self.handle.call("keys", &())?;
        keys.iter().map(|k| dec(k)).collect()
    }

    /// Replaces attribute `name` by `f(current)` atomically (compare-and-set; `f` may run
    /// more than once) and returns the new value. The attribute must be set.
    pub fn update<T: Serialize + DeserializeOwned>(
        &self,
        name: &str,
        f: impl Fn(T) -> T,
    ) -> Result<T> {
        cas_loop(&self.handle, &enc(name)?, |v: Option<T>| v.map(&f))?.ok_or_else(|| {
            Error::Remote(format!("AttributeError: 'Namespace' object has no attribute '{name}'"))
        })
    }
}

// --------------------------------------------------------------------------------------
// Value

/// A single value in a manager's server (Python's `manager.Value(typecode, value)`).
/// Each access is a round trip to the server: slower than the shared-memory
/// [`sharedctypes::Value`](crate::sharedctypes::Value), but any serde type works and it
/// reaches other machines.
///
/// ```
/// let manager = multiproc::Manager::start()?;
/// let counter = manager.value(0i32)?;
/// counter.set(&5)?;
/// assert_eq!(counter.get()?, 5);
/// assert_eq!(counter.swap(&6)?, 5);
/// assert_eq!(counter.update(|v| v * 2)?, 12);
/// manager.shutdown()?;
/// # Ok::<(), multiproc::Error>(())
/// ```
pub struct ValueProxy<T> {
    handle: Handle,
    types: PhantomData<fn() -> T>,
}

proxy_common!(ValueProxy<T>, "ValueProxy");

impl<T: Serialize + DeserializeOwned> ValueProxy<T> {
    /// The value (Python's `v.value`).
    pub fn get(&self) -> Result<T> {
        dec(&self.handle.call::<_, Vec<u8>>("get", &())?)
    }

    /// Sets the value (Python's `v.value = x`).
    pub fn set<W: Serialize + ?Sized>(&self, value: &W) -> Result<()>
    where
        T: Borrow<W>,
    {
        self.handle.call("set", &enc(value)?)
    }

    /// Sets the value and returns the previous one, atomically.
    pub fn swap<W: Serialize + ?Sized>(&self, value: &W) -> Result<T>
    where
        T: Borrow<W>,
    {
        dec(&self.handle.call::<_, Vec<u8>>("swap", &enc(value)?)?)
    }

    /// Replaces the value by `f(current)` atomically with respect to every process (a
    /// compare-and-set loop: `f` may run more than once); returns the new value.
    pub fn update(&self, f: impl Fn(T) -> T) -> Result<T> {
        let mut current: Vec<u8> = self.handle.call("get", &())?;
        loop {
            let new = f(dec(&current)?);
            let (done, now): (bool, Vec<u8>) =
                self.handle.call("compare_and_set", &(&current, enc(&new)?))?;
            if done {
                return Ok(new);
            }
            current = now;
        }
    }
}

// --------------------------------------------------------------------------------------
// Queue

/// A FIFO queue in a manager's server (Python's `manager.Queue()` /
/// `manager.JoinableQueue()`: every managed queue counts unfinished tasks). A blocking
/// `get` waits in the server, on the thread that serves this connection; a process that
/// dies while waiting is noticed and its call abandoned, so no item is lost to it.
///
/// The methods have the shape of the local [`Queue`](crate::queues::Queue)'s: `get` waits
/// as long as it takes, `get_timeout` at most a [`Duration`] ([`Error::Empty`] then),
/// `try_get` not at all; `put`, `put_timeout` ([`Error::Full`]) and `try_put` likewise,
/// and a put that fails hands its item back in a [`PutError`].
///
/// ```
/// use std::time::Duration;
/// let manager = multiproc::Manager::start()?;
/// let q = manager.queue::<String>(1)?;
/// q.put("job".to_string())?;
/// let full = q.try_put("more".to_string()).unwrap_err();
/// assert!(matches!(full.error(), multiproc::Error::Full));
/// assert_eq!(full.into_item(), "more");
/// assert_eq!(q.qsize()?, 1);
/// assert_eq!(q.get()?, "job");
/// assert!(matches!(q.get_timeout(Duration::from_millis(10)), Err(multiproc::Error::Empty)));
/// assert!(q.empty()?);
/// q.task_done()?;
/// q.join()?; // every item put is marked done
/// assert!(q.task_done().is_err()); // more than were put
/// manager.shutdown()?;
/// # Ok::<(), multiproc::Error>(())
/// ```
pub struct QueueProxy<T> {
    handle: Handle,
    types: PhantomData<fn() -> T>,
}

proxy_common!(QueueProxy<T>, "QueueProxy");

impl<T: Serialize + DeserializeOwned> QueueProxy<T> {
    /// Puts `item`, waiting as long as it takes for room in a bounded queue. On failure
    /// (the manager is gone, the item cannot be encoded) the item comes back in the
    /// [`PutError`]; `?` turns that into a plain [`Error`].
    pub fn put(&self, item: T) -> std::result::Result<(), PutError<T>> {
        self.put_with(item, true, None)
    }

    /// [`put`](Self::put), waiting at most `timeout` for room: [`Error::Full`] (with the
    /// item) when there was none.
    ///
    /// ```
    /// use std::time::Duration;
    /// let manager = multiproc::Manager::start()?;
    /// let q = manager.queue::<u32>(1)?;
    /// q.put_timeout(1, Duration::from_secs(5))?;
    /// let e = q.put_timeout(2, Duration::from_millis(10)).unwrap_err();
    /// assert!(matches!(e.error(), multiproc::Error::Full));
    /// assert_eq!(e.into_item(), 2);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn put_timeout(&self, item: T, timeout: Duration) -> std::result::Result<(), PutError<T>> {
        self.put_with(item, true, Some(timeout))
    }

    /// Puts `item` only if there is room now ([`Error::Full`], with the item, otherwise).
    pub fn try_put(&self, item: T) -> std::result::Result<(), PutError<T>> {
        self.put_with(item, false, None)
    }

    fn put_with(
        &self,
        item: T,
        block: bool,
        timeout: Option<Duration>,
    ) -> std::result::Result<(), PutError<T>> {
        let sent = enc(&item).and_then(|bytes| {
            if block {
                self.handle.call_blocking("put", &(bytes, true, ms(timeout)), timeout)
            } else {
                self.handle.call("put", &(bytes, false, None::<u64>))
            }
        });
        sent.map_err(|e| PutError::new(item, e))
    }

    /// Takes the oldest item, waiting as long as it takes.
    pub fn get(&self) -> Result<T> {
        self.get_with(true, None)
    }

    /// Takes the oldest item, waiting at most `timeout`; [`Error::Empty`] when none came.
    ///
    /// ```
    /// use std::time::Duration;
    /// let manager = multiproc::Manager::start()?;
    /// let q = manager.queue::<u8>(0)?;
    /// assert!(matches!(q.get_timeout(Duration::from_millis(10)), Err(multiproc::Error::Empty)));
    /// q.put(7)?;
    /// assert_eq!(q.get_timeout(Duration::from_secs(5))?, 7);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn get_timeout(&self, timeout: Duration) -> Result<T> {
        self.get_with(true, Some(timeout))
    }

    /// Takes the oldest item if there is one now ([`Error::Empty`] otherwise).
    pub fn try_get(&self) -> Result<T> {
        self.get_with(false, None)
    }

    fn get_with(&self, block: bool, timeout: Option<Duration>) -> Result<T> {
        let bytes: Vec<u8> = if block {
            self.handle.call_blocking("get", &(true, ms(timeout)), timeout)?
        } else {
            self.handle.call("get", &(false, None::<u64>))?
        };
        dec(&bytes)
    }

    /// The number of items waiting.
    pub fn qsize(&self) -> Result<usize> {
        self.handle.call::<_, u64>("qsize", &()).map(|n| n as usize)
    }

    /// Whether no item is waiting.
    pub fn empty(&self) -> Result<bool> {
        Ok(self.qsize()? == 0)
    }

    /// Marks one item taken with `get` as processed (Python's `JoinableQueue.task_done`).
    pub fn task_done(&self) -> Result<()> {
        self.handle.call("task_done", &())
    }

    /// Waits until every item put has been marked done (Python's `JoinableQueue.join`).
    pub fn join(&self) -> Result<()> {
        self.handle.call_blocking("join", &None::<u64>, None)
    }

    /// [`join`](Self::join), waiting at most `timeout` ([`Error::Timeout`] then).
    ///
    /// ```
    /// use std::time::Duration;
    /// let manager = multiproc::Manager::start()?;
    /// let q = manager.queue::<u8>(0)?;
    /// q.put(1)?;
    /// let e = q.join_timeout(Duration::from_millis(10)).unwrap_err();
    /// assert!(matches!(e, multiproc::Error::Timeout(_)));
    /// q.get()?;
    /// q.task_done()?;
    /// q.join_timeout(Duration::from_secs(5))?;
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn join_timeout(&self, timeout: Duration) -> Result<()> {
        let t = Some(timeout);
        self.handle.call_blocking("join", &ms(t), t).map_err(|e| e.with_timeout(timeout))
    }
}

// --------------------------------------------------------------------------------------
// Synchronization primitives

/// A hold on a manager's lock, semaphore or condition, given by their `acquire` methods:
/// dropping it releases (like Python's `with lock:`). It dereferences to the proxy, so a
/// [`ConditionProxy`]'s `wait` and `notify` are called on the guard.
///
/// Where Python code acquires in one place and releases in another, [`leak`](Self::leak)
/// the guard and call the proxy's `release` later. A release that fails on drop (the
/// manager is gone) is ignored; [`release`](Self::release) reports it.
///
/// ```
/// let manager = multiproc::Manager::start()?;
/// let lock = manager.lock()?;
/// {
///     let _held = lock.acquire()?;
///     assert!(lock.try_acquire().is_err());
/// } // released here
/// lock.try_acquire()?.leak(); // held on until an explicit release
/// lock.release()?;
/// # Ok::<(), multiproc::Error>(())
/// ```
#[must_use = "the lock is released as soon as the guard is dropped"]
pub struct ProxyGuard<'a, P> {
    proxy: &'a P,
    unlock: fn(&P) -> Result<()>,
    /// Not `Send`: a recursive lock belongs to the thread that acquired it.
    _thread: PhantomData<*const ()>,
}

impl<'a, P> ProxyGuard<'a, P> {
    fn new(proxy: &'a P, unlock: fn(&P) -> Result<()>) -> ProxyGuard<'a, P> {
        ProxyGuard { proxy, unlock, _thread: PhantomData }
    }

    /// Releases now and reports whether the server accepted it.
    ///
    /// ```
    /// let manager = multiproc::Manager::start()?;
    /// let sem = manager.semaphore(1)?;
    /// sem.acquire()?.release()?;
    /// sem.try_acquire()?.release()?;
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn release(self) -> Result<()> {
        let result = (self.unlock)(self.proxy);
        std::mem::forget(self);
        result
    }

    /// Keeps the hold without a guard: the object stays acquired until the proxy's own
    /// `release` (Python's style).
    ///
    /// ```
    /// let manager = multiproc::Manager::start()?;
    /// let lock = manager.rlock()?;
    /// lock.acquire()?.leak();
    /// lock.release()?;
    /// assert!(lock.release().is_err()); // held no more
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn leak(self) {
        std::mem::forget(self);
    }
}

impl<P> std::ops::Deref for ProxyGuard<'_, P> {
    type Target = P;

    fn deref(&self) -> &P {
        self.proxy
    }
}

impl<P> Drop for ProxyGuard<'_, P> {
    fn drop(&mut self) {
        let _ = (self.unlock)(self.proxy);
    }
}

impl<P: fmt::Debug> fmt::Debug for ProxyGuard<'_, P> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("ProxyGuard").field(self.proxy).finish()
    }
}

/// `acquire` on the server: a wait as long as it takes (`Some(None)`), at most a timeout
/// (`Some(Some(d))`), or none at all (`None`); `args(block, ms)` are the method's
/// arguments. The server answers whether it acquired; `false` is a timeout.
fn acquire_on<'a, P, A: Serialize>(
    proxy: &'a P,
    handle: &Handle,
    wait: Option<Option<Duration>>,
    args: impl FnOnce(bool, Option<u64>) -> A,
    unlock: fn(&P) -> Result<()>,
) -> Result<ProxyGuard<'a, P>> {
    let acquired: bool = match wait {
        Some(timeout) => handle.call_blocking("acquire", &args(true, ms(timeout)), timeout)?,
        None => handle.call("acquire", &args(false, None))?,
    };
    match (acquired, wait) {
        (true, _) => Ok(ProxyGuard::new(proxy, unlock)),
        (false, None) => Err(Error::WouldBlock),
        (false, Some(timeout)) => Err(Error::Timeout(timeout.unwrap_or(Duration::ZERO))),
    }
}

/// A lock in a manager's server (Python's `manager.Lock()`): any process may release it,
/// as with `threading.Lock`. Works across machines; on one machine the shared-memory
/// [`synchronize::Lock`](crate::synchronize::Lock) is much faster.
///
/// `acquire` waits as long as it takes, `acquire_timeout` at most a [`Duration`]
/// ([`Error::Timeout`] then), `try_acquire` not at all ([`Error::WouldBlock`]); each returns
/// a [`ProxyGuard`] that releases on drop.
///
/// ```
/// use std::time::Duration;
/// let manager = multiproc::Manager::start()?;
/// let lock = manager.lock()?;
/// let held = lock.acquire()?;
/// assert!(matches!(lock.try_acquire(), Err(multiproc::Error::WouldBlock)));
/// assert!(lock.acquire_timeout(Duration::from_millis(10)).is_err());
/// drop(held);
/// assert!(lock.release().is_err()); // not locked
/// manager.shutdown()?;
/// # Ok::<(), multiproc::Error>(())
/// ```
pub struct LockProxy {
    handle: Handle,
    types: PhantomData<()>,
}

proxy_common!(LockProxy, "LockProxy");

impl LockProxy {
    /// Acquires the lock, waiting as long as it takes.
    pub fn acquire(&self) -> Result<ProxyGuard<'_, LockProxy>> {
        self.acquire_with(Some(None))
    }

    /// Acquires the lock, waiting at most `timeout` ([`Error::Timeout`] then).
    pub fn acquire_timeout(&self, timeout: Duration) -> Result<ProxyGuard<'_, LockProxy>> {
        self.acquire_with(Some(Some(timeout)))
    }

    /// Acquires the lock only if it is free now ([`Error::WouldBlock`] otherwise).
    pub fn try_acquire(&self) -> Result<ProxyGuard<'_, LockProxy>> {
        self.acquire_with(None)
    }

    fn acquire_with(&self, wait: Option<Option<Duration>>) -> Result<ProxyGuard<'_, LockProxy>> {
        acquire_on(self, &self.handle, wait, |block, ms| (block, ms), LockProxy::release)
    }

    /// Releases the lock; an error if it is not locked. A [`ProxyGuard`] does this when
    /// dropped; call it after [`ProxyGuard::leak`].
    pub fn release(&self) -> Result<()> {
        self.handle.call("release", &())
    }
}

/// An event in a manager's server (Python's `manager.Event()`).
///
/// ```
/// use std::time::Duration;
/// let manager = multiproc::Manager::start()?;
/// let ev = manager.event()?;
/// assert!(matches!(ev.wait_timeout(Duration::from_millis(10)), Err(multiproc::Error::Timeout(_))));
/// ev.set()?;
/// assert!(ev.is_set()?);
/// ev.wait()?;
/// ev.clear()?;
/// assert!(!ev.is_set()?);
/// manager.shutdown()?;
/// # Ok::<(), multiproc::Error>(())
/// ```
pub struct EventProxy {
    handle: Handle,
    types: PhantomData<()>,
}

proxy_common!(EventProxy, "EventProxy");

impl EventProxy {
    /// Sets the flag and wakes every waiter.
    pub fn set(&self) -> Result<()> {
        self.handle.call("set", &())
    }

    /// Clears the flag.
    pub fn clear(&self) -> Result<()> {
        self.handle.call("clear", &())
    }

    /// Whether the flag is set.
    pub fn is_set(&self) -> Result<bool> {
        self.handle.call("is_set", &())
    }

    /// Waits as long as it takes for the flag.
    pub fn wait(&self) -> Result<()> {
        self.wait_with(None)
    }

    /// Waits at most `timeout` for the flag ([`Error::Timeout`] if it stayed clear).
    pub fn wait_timeout(&self, timeout: Duration) -> Result<()> {
        self.wait_with(Some(timeout))
    }

    fn wait_with(&self, timeout: Option<Duration>) -> Result<()> {
        if self.handle.call_blocking("wait", &ms(timeout), timeout)? {
            Ok(())
        } else {
            Err(Error::Timeout(timeout.unwrap_or(Duration::ZERO)))
        }
    }
}

/// A counting semaphore in a manager's server (Python's `manager.Semaphore(n)` and
/// `manager.BoundedSemaphore(n)`). The acquire methods return a [`ProxyGuard`] that gives
/// the unit back on drop.
///
/// ```
/// let manager = multiproc::Manager::start()?;
/// let sem = manager.semaphore(1)?;
/// let unit = sem.acquire()?;
/// assert!(sem.try_acquire().is_err());
/// drop(unit);
/// sem.try_acquire()?.leak();
/// sem.release()?;
/// manager.shutdown()?;
/// # Ok::<(), multiproc::Error>(())
/// ```
pub struct SemaphoreProxy {
    handle: Handle,
    types: PhantomData<()>,
}

proxy_common!(SemaphoreProxy, "SemaphoreProxy");

impl SemaphoreProxy {
    /// Takes one unit, waiting as long as it takes.
    pub fn acquire(&self) -> Result<ProxyGuard<'_, SemaphoreProxy>> {
        self.acquire_with(Some(None))
    }

    /// Takes one unit, waiting at most `timeout` ([`Error::Timeout`] then).
    pub fn acquire_timeout(&self, timeout: Duration) -> Result<ProxyGuard<'_, SemaphoreProxy>> {
        self.acquire_with(Some(Some(timeout)))
    }

    /// Takes one unit only if one is available now ([`Error::WouldBlock`] otherwise).
    pub fn try_acquire(&self) -> Result<ProxyGuard<'_, SemaphoreProxy>> {
        self.acquire_with(None)
    }

    fn acquire_with(
        &self,
        wait: Option<Option<Duration>>,
    ) -> Result<ProxyGuard<'_, SemaphoreProxy>> {
        acquire_on(self, &self.handle, wait, |block, ms| (block, ms), SemaphoreProxy::release)
    }

    /// Gives one unit back (a bounded semaphore refuses to go above its initial value).
    pub fn release(&self) -> Result<()> {
        self.handle.call("release", &())
    }
}

/// A barrier in a manager's server (Python's `manager.Barrier(parties)`).
///
/// ```
/// use std::time::Duration;
/// use multiproc::Error;
/// let manager = multiproc::Manager::start()?;
/// let barrier = manager.barrier(1)?;
/// assert_eq!(barrier.wait()?, 0); // one party: passes at once
/// let pair = manager.barrier(2)?;
/// assert!(matches!(pair.wait_timeout(Duration::from_millis(10)), Err(Error::Timeout(_))));
/// assert!(matches!(pair.wait(), Err(Error::BrokenBarrier))); // the timeout broke it
/// pair.reset()?;
/// manager.shutdown()?;
/// # Ok::<(), multiproc::Error>(())
/// ```
pub struct BarrierProxy {
    handle: Handle,
    types: PhantomData<()>,
}

proxy_common!(BarrierProxy, "BarrierProxy");

impl BarrierProxy {
    /// Waits as long as it takes until `parties` processes wait; returns the arrival
    /// index, `0..parties`. [`Error::BrokenBarrier`] if the barrier is or becomes broken.
    pub fn wait(&self) -> Result<u64> {
        self.wait_with(None)
    }

    /// [`wait`](Self::wait), at most `timeout`: then this party gets [`Error::Timeout`]
    /// and the barrier breaks (every other waiter gets [`Error::BrokenBarrier`], as in
    /// Python).
    pub fn wait_timeout(&self, timeout: Duration) -> Result<u64> {
        self.wait_with(Some(timeout)).map_err(|e| e.with_timeout(timeout))
    }

    fn wait_with(&self, timeout: Option<Duration>) -> Result<u64> {
        self.handle.call_blocking("wait", &ms(timeout), timeout).map_err(|e| match e {
            Error::Remote(m) if m.starts_with("BrokenBarrierError") => Error::BrokenBarrier,
            e => e,
        })
    }

    /// Resets a broken barrier.
    pub fn reset(&self) -> Result<()> {
        self.handle.call("reset", &())
    }
}

/// A recursive lock in a manager's server (Python's `manager.RLock()`): the thread that
/// holds it may acquire it again, and must release it as many times (each
/// [`ProxyGuard`] releases one level).
///
/// ```
/// let manager = multiproc::Manager::start()?;
/// let lock = manager.rlock()?;
/// let outer = lock.acquire()?;
/// let inner = lock.try_acquire()?;
/// drop(inner);
/// drop(outer);
/// assert!(lock.release().is_err());
/// manager.shutdown()?;
/// # Ok::<(), multiproc::Error>(())
/// ```
pub struct RLockProxy {
    handle: Handle,
    types: PhantomData<()>,
}

proxy_common!(RLockProxy, "RLockProxy");

impl RLockProxy {
    /// Acquires the lock (again, if this thread holds it), waiting as long as it takes.
    pub fn acquire(&self) -> Result<ProxyGuard<'_, RLockProxy>> {
        self.acquire_with(Some(None))
    }

    /// Acquires the lock, waiting at most `timeout` ([`Error::Timeout`] then).
    pub fn acquire_timeout(&self, timeout: Duration) -> Result<ProxyGuard<'_, RLockProxy>> {
        self.acquire_with(Some(Some(timeout)))
    }

    /// Acquires the lock only if that needs no wait ([`Error::WouldBlock`] otherwise).
    pub fn try_acquire(&self) -> Result<ProxyGuard<'_, RLockProxy>> {
        self.acquire_with(None)
    }

    fn acquire_with(&self, wait: Option<Option<Duration>>) -> Result<ProxyGuard<'_, RLockProxy>> {
        acquire_on(self, &self.handle, wait, |block, ms| (owner(), block, ms), RLockProxy::release)
    }

    /// Releases one level; an error if this thread does not hold the lock.
    pub fn release(&self) -> Result<()> {
        self.handle.call("release", &owner())
    }
}

/// A condition variable with its own recursive lock, in a manager's server (Python's
/// `manager.Condition()`). The acquire methods return a [`ProxyGuard`]; `wait` and
/// `notify` need the lock held, and are called on the guard (or on the proxy after an
/// explicit acquire).
///
/// ```
/// use std::time::Duration;
/// let manager = multiproc::Manager::start()?;
/// let cond = manager.condition()?;
/// assert!(cond.wait().is_err()); // the lock is not held
/// let held = cond.acquire()?;
/// let nobody = held.wait_timeout(Duration::from_millis(10)); // nobody notifies
/// assert!(matches!(nobody, Err(multiproc::Error::Timeout(_))));
/// held.notify(1)?;
/// held.notify_all()?;
/// drop(held);
/// manager.shutdown()?;
/// # Ok::<(), multiproc::Error>(())
/// ```
pub struct ConditionProxy {
    handle: Handle,
    types: PhantomData<()>,
}

proxy_common!(ConditionProxy, "ConditionProxy");

impl ConditionProxy {
    /// Acquires the underlying lock, waiting as long as it takes.
    pub fn acquire(&self) -> Result<ProxyGuard<'_, ConditionProxy>> {
        self.acquire_with(Some(None))
    }

    /// Acquires the underlying lock, waiting at most `timeout` ([`Error::Timeout`] then).
    pub fn acquire_timeout(&self, timeout: Duration) -> Result<ProxyGuard<'_, ConditionProxy>> {
        self.acquire_with(Some(Some(timeout)))
    }

    /// Acquires the underlying lock only if that needs no wait ([`Error::WouldBlock`]
    /// otherwise).
    pub fn try_acquire(&self) -> Result<ProxyGuard<'_, ConditionProxy>> {
        self.acquire_with(None)
    }

    fn acquire_with(
        &self,
        wait: Option<Option<Duration>>,
    ) -> Result<ProxyGuard<'_, ConditionProxy>> {
        let release = ConditionProxy::release;
        acquire_on(self, &self.handle, wait, |block, ms| (owner(), block, ms), release)
    }

    /// Releases the underlying lock.
    pub fn release(&self) -> Result<()> {
        self.handle.call("release", &owner())
    }

    /// Releases the lock, waits as long as it takes for a notification, takes the lock
    /// back. The caller must hold the lock.
    pub fn wait(&self) -> Result<()> {
        self.wait_with(None)
    }

    /// [`wait`](Self::wait), at most `timeout` for the notification ([`Error::Timeout`]
    /// then; the lock is held again either way).
    pub fn wait_timeout(&self, timeout: Duration) -> Result<()> {
        self.wait_with(Some(timeout))
    }

    fn wait_with(&self, timeout: Option<Duration>) -> Result<()> {
        if self.handle.call_blocking("wait", &(owner(), ms(timeout)), timeout)? {
            Ok(())
        } else {
            Err(Error::Timeout(timeout.unwrap_or(Duration::ZERO)))
        }
    }

    /// Wakes up to `n` waiters (the longest waiting first). The caller must hold the lock.
    pub fn notify(&self, n: u64) -> Result<()> {
        self.handle.call("notify", &(owner(), n))
    }

    /// Wakes every waiter. The caller must hold the lock.
    pub fn notify_all(&self) -> Result<()> {
        self.notify(u64::MAX)
    }
}

/// An object of a user type ([`SharedObject`](super::SharedObject)) in a manager's server,
/// made by [`Manager::create`](super::Manager::create) or
/// [`Manager::create_named`](super::Manager::create_named).
///
/// ```
/// use multiproc::managers::{decode, encode, Register, Registry, SharedObject};
///
/// #[derive(serde::Serialize, serde::Deserialize)]
/// struct Counter(i64);
/// impl SharedObject for Counter {
///     fn call(&mut self, method: &str, args: &[u8]) -> Result<Vec<u8>, String> {
///         match method {
///             "add" => { self.0 += decode::<i64>(args)?; encode(&self.0) }
///             other => Err(format!("Counter has no method {other}")),
///         }
///     }
/// }
/// struct Types;
/// impl Register for Types {
///     fn register(r: &mut Registry) { r.register::<Counter>("Counter"); }
/// }
///
/// let manager = multiproc::Manager::start_with::<Types>()?;
/// let c = manager.create("Counter", &Counter(0))?;
/// let h = multiproc::spawn(|c: multiproc::managers::ObjectProxy| c.call::<_, i64>("add", &2).unwrap(), c.clone())?;
/// h.join()?;
/// assert_eq!(c.call::<_, i64>("add", &1)?, 3);
/// assert!(c.call::<_, ()>("reset", &()).is_err());
/// manager.shutdown()?;
/// # Ok::<(), multiproc::Error>(())
/// ```
pub struct ObjectProxy {
    handle: Handle,
    types: PhantomData<()>,
}

proxy_common!(ObjectProxy, "ObjectProxy");

impl ObjectProxy {
    /// Calls `method` with `args` on the object in the server and decodes its result as
    /// `R`; the object's error message arrives as [`Error::Remote`].
    pub fn call<A: Serialize + ?Sized, R: DeserializeOwned>(
        &self,
        method: &str,
        args: &A,
    ) -> Result<R> {
        self.handle.call(method, args)
    }
}
