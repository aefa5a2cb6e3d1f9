//! The built-in containers of a manager's server: dict, list, Namespace and Value, and
//! the methods proxies call on them. Every key and value is kept as its postcard
//! encoding, so the server needs no knowledge of the types; a namespace is a dict whose
//! keys are attribute names.

use std::collections::{BTreeMap, HashMap};

use super::primitives::Guarded;
use super::wire::{dec, enc, msg, no_method, Reply, WireError};

/// A map that remembers insertion order (as Python's dict), keyed by encoded keys.
#[derive(Default)]
pub(super) struct OrderedMap {
    index: HashMap<Vec<u8>, u64>,
    entries: BTreeMap<u64, (Vec<u8>, Vec<u8>)>,
    next: u64,
}

impl OrderedMap {
    pub(super) fn get(&self, key: &[u8]) -> Option<&Vec<u8>> {
        self.index.get(key).and_then(|seq| self.entries.get(seq)).map(|(_, v)| v)
    }

    pub(super) fn get_mut(&mut self, key: &[u8]) -> Option<&mut Vec<u8>> {
        self.index.get(key).and_then(|seq| self.entries.get_mut(seq)).map(|(_, v)| v)
    }

    pub(super) fn insert(&mut self, key: Vec<u8>, value: Vec<u8>) -> Option<Vec<u8>> {
        if let Some(seq) = self.index.get(&key) {
            let slot = self.entries.get_mut(seq).map(|(_, v)| v);
            return slot.map(|v| std::mem::replace(v, value));
        }
        let seq = self.next;
        self.next += 1;
        self.index.insert(key.clone(), seq);
        self.entries.insert(seq, (key, value));
        None
    }

    fn remove(&mut self, key: &[u8]) -> Option<Vec<u8>> {
        let seq = self.index.remove(key)?;
        self.entries.remove(&seq).map(|(_, v)| v)
    }

    fn len(&self) -> usize {
        self.entries.len()
    }

    fn clear(&mut self) {
        self.index.clear();
        self.entries.clear();
    }

    fn iter(&self) -> impl Iterator<Item = &(Vec<u8>, Vec<u8>)> {
        self.entries.values()
    }
}

/// The position of Python index `i` (negative counts from the end) in a list of `len`.
fn index(len: usize, i: i64) -> std::result::Result<usize, WireError> {
    let j = if i < 0 { len as i64 + i } else { i };
    if j < 0 || j >= len as i64 {
        return Err(msg(format!("IndexError: list index {i} out of range (length {len})")));
    }
    Ok(j as usize)
}

/// Calls `method` on a dict.
pub(super) fn dict_method(map: &Guarded<OrderedMap>, method: &str, args: &[u8]) -> Reply {
    match method {
        "get" => {
            let key: Vec<u8> = dec(args, method)?;
            enc(&map.lock().get(&key))
        }
        "set" => {
            let (key, value): (Vec<u8>, Vec<u8>) = dec(args, method)?;
            enc(&map.lock().insert(key, value))
        }
        "setdefault" => {
            let (key, value): (Vec<u8>, Vec<u8>) = dec(args, method)?;
            let mut m = map.lock();
            if let Some(v) = m.get(&key) {
                return enc(v);
            }
            m.insert(key, value.clone());
            enc(&value)
        }
        "pop" => {
            let key: Vec<u8> = dec(args, method)?;
            enc(&map.lock().remove(&key))
        }
        "popitem" => {
            let mut m = map.lock();
            let last = m.iter().last().map(|(k, _)| k.clone());
            match last {
                Some(k) => {
                    let v = m.remove(&k);
                    enc(&(k, v.unwrap_or_default()))
                }
                None => Err(msg("KeyError: popitem(): dictionary is empty")),
            }
        }
        "contains" => {
            let key: Vec<u8> = dec(args, method)?;
            enc(&map.lock().get(&key).is_some())
        }
        "len" => enc(&(map.lock().len() as u64)),
        "keys" => enc(&map.lock().iter().map(|(k, _)| k).collect::<Vec<_>>()),
        "values" => enc(&map.lock().iter().map(|(_, v)| v).collect::<Vec<_>>()),
        "items" => enc(&map.lock().iter().collect::<Vec<_>>()),
        "update" => {
            let items: Vec<(Vec<u8>, Vec<u8>)> = dec(args, method)?;
            let mut m = map.lock();
            for (k, v) in items {
                m.insert(k, v);
            }
            enc(&())
        }
        "clear" => {
            map.lock().clear();
            enc(&())
        }
        "compare_and_set" => {
            let (key, expected, new): (Vec<u8>, Option<Vec<u8>>, Vec<u8>) = dec(args, method)?;
            let mut m = map.lock();
            let current = m.get(&key).cloned();
            if current == expected {
                m.insert(key, new);
                enc(&(true, current))
            } else {
                enc(&(false, current))
            }
        }
        other => Err(no_method("dict", other)),
    }
}

/// Calls `method` on a namespace.
pub(super) fn namespace_method(map: &Guarded<OrderedMap>, method: &str, args: &[u8]) -> Reply {
    // Attribute names are stored as their encoding, so a namespace is a dict of str.
    match method {
        "get" | "set" | "contains" | "compare_and_set" | "items" | "keys" => {
            dict_method(map, method, args)
        }
        "del" => dict_method(map, "pop", args),
        other => Err(no_method("namespace", other)),
    }
}

/// Calls `method` on a list.
pub(super) fn list_method(list: &Guarded<Vec<Vec<u8>>>, method: &str, args: &[u8]) -> Reply {
    match method {
        "append" => {
            let item: Vec<u8> = dec(args, method)?;
            list.lock().push(item);
            enc(&())
        }
        "extend" => {
            let items: Vec<Vec<u8>> = dec(args, method)?;
            list.lock().extend(items);
            enc(&())
        }
        "get" => {
            let i: i64 = dec(args, method)?;
            let l = list.lock();
            enc(&l[index(l.len(), i)?])
        }
        "set" => {
            let (i, item): (i64, Vec<u8>) = dec(args, method)?;
            let mut l = list.lock();
            let j = index(l.len(), i)?;
            l[j] = item;
            enc(&())
        }
        "insert" => {
            let (i, item): (i64, Vec<u8>) = dec(args, method)?;
            let mut l = list.lock();
            let len = l.len() as i64;
            let j = if i < 0 { (len + i).max(0) } else { i.min(len) };
            l.insert(j as usize, item);
            enc(&())
        }
        "pop" => {
            let i: Option<i64> = dec(args, method)?;
            let mut l = list.lock();
            if l.is_empty() {
                return Err(msg("IndexError: pop from empty list"));
            }
            let j = index(l.len(), i.unwrap_or(-1))?;
            enc(&l.remove(j))
        }
        "remove" => {
            let item: Vec<u8> = dec(args, method)?;
            let mut l = list.lock();
            match l.iter().position(|x| *x == item) {
                Some(j) => {
                    l.remove(j);
                    enc(&())
                }
                None => Err(msg("ValueError: list.remove(x): x not in list")),
            }
        }
        "index" => {
            let item: Vec<u8> = dec(args, method)?;
            match list.lock().iter().position(|x| *x == item) {
                Some(j) => enc(&(j as u64)),
                None => Err(msg("ValueError: the item is not in the list")),
            }
        }
        "contains" => {
            let item: Vec<u8> = dec(args, method)?;
            enc(&list.lock().contains(&item))
        }
        "len" => enc(&(list.lock().len() as u64)),
        "to_vec" => enc(&*list.lock()),
        "clear" => {
            list.lock().clear();
            enc(&())
        }
        other => Err(no_method("list", other)),
    }
}

/// Calls `method` on a value.
pub(super) fn value_method(value: &Guarded<Vec<u8>>, method: &str, args: &[u8]) -> Reply {
    match method {
        "get" => enc(&*value.lock()),
        "set" => {
            *value.lock() = dec(args, method)?;
            enc(&())
        }
        "swap" => {
            let new: Vec<u8> = dec(args, method)?;
            enc(&std::mem::replace(&mut *value.lock(), new))
        }
        "compare_and_set" => {
            let (expected, new): (Vec<u8>, Vec<u8>) = dec(args, method)?;
            let mut v = value.lock();
            if *v == expected {
                let old = std::mem::replace(&mut *v, new);
                enc(&(true, old))
            } else {
                enc(&(false, v.clone()))
            }
        }
        other => Err(no_method("value", other)),
    }
}
