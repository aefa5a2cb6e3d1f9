//! Shared ctypes objects: [`Value`], [`Array`], [`RawValue`], [`RawArray`] (Python's
//! `multiprocessing.Value`, `multiprocessing.Array` and `multiprocessing.sharedctypes`).
//!
//! A `Value` is one number, an `Array` a fixed-length run of numbers, in memory shared by
//! every process that holds a handle. Handles are cheap to clone (clones are the same
//! memory) and travel to child processes as arguments, with the lock they use, under both
//! start methods.
//!
//! | Python | multiproc |
//! |---|---|
//! | `Value('i', 0)` | [`Value::new(0_i32)`](Value::new) |
//! | `Value('i', 0, lock=my_lock)` | [`Value::with_lock(0_i32, my_lock)`](Value::with_lock) |
//! | `Value('i', 0, lock=False)`, `RawValue('i', 0)` | [`Value::raw(0_i32)`](Value::raw), [`RawValue::new(0_i32)`](RawValue::new) |
//! | `Array('d', 5)` | [`Array::<f64>::new(5)`](Array::new) |
//! | `Array('i', [1, 2, 3])`, `Array('i', range(5))` | [`Array::from_values(&[1, 2, 3])`](Array::from_values), [`Array::from_iter(0..5)`](Array::from_iter) |
//! | `RawArray('i', 5)` | [`RawArray::<i32>::new(5)`](RawArray::new) |
//! | `v.value`, `v.value = x` | [`v.get()`](Value::get), [`v.set(x)`](Value::set) |
//! | `arr[i]`, `arr[i] = x`, `len(arr)` | [`arr.get(i)?`](Array::get), [`arr.set(i, x)?`](Array::set), [`arr.len()`](Array::len) |
//! | `arr[:]`, `list(arr)`, `arr[a:b]`, `arr[a:b] = xs` | [`arr.to_vec()`](Array::to_vec), [`arr.get_range(a..b)?`](Array::get_range), [`arr.set_range(a, &xs)?`](Array::set_range) |
//! | `with v.get_lock(): v.value += 1` | `let _g = v.get_lock().acquire()?; v.set(v.get() + 1);`, or [`*v.lock()? += 1`](Value::lock) |
//! | `v.get_lock().acquire(timeout=t)`, `acquire(False)` | [`v.get_lock().acquire_timeout(t)?`](SyncLock::acquire_timeout), [`try_acquire()?`](SyncLock::try_acquire); [`v.lock_timeout(t)?`](Value::lock_timeout), [`v.try_lock()?`](Value::try_lock) |
//! | `v.get_obj()` | [`v.get_obj()`](Value::get_obj) |
//! | — | [`fetch_add`](RawValue::fetch_add), [`compare_exchange`](RawValue::compare_exchange), … lock-free |
//!
//! # Type codes
//! The element type is a Rust type implementing [`CType`]:
//!
//! | code | C type | Rust |
//! |---|---|---|
//! | `'b'` / `'B'` | `signed char` / `unsigned char` | `i8` / `u8` |
//! | `'c'` | `char` (a byte) | `u8` |
//! | `'?'` (Python: `ctypes.c_bool`) | `_Bool` | `bool` |
//! | `'h'` / `'H'` | `short` / `unsigned short` | `i16` / `u16` |
//! | `'i'` / `'I'` | `int` / `unsigned int` | `i32` / `u32` |
//! | `'l'` / `'L'`, `'q'` / `'Q'` | `long` / `unsigned long` (64-bit Linux), `long long` / … | `i64` / `u64` |
//! | `'f'` / `'d'` | `float` / `double` | `f32` / `f64` |
//!
//! # What is atomic, and what needs the lock
//! Every single read or write of one element is one atomic operation: it is never torn,
//! never blocks, and — unlike Python, whose `.value` takes the lock each time — never
//! deadlocks when you already hold a non-recursive lock. A read-modify-write such as
//! `v.set(v.get() + 1)` is two operations, and loses updates when processes race, exactly
//! as `v.value += 1` does in Python: hold the lock around it (as the seeds do), or use
//! the lock-free [`fetch_add`](RawValue::fetch_add) family on integers.
//!
//! [`Value::lock`] and [`Array::lock`] take the lock and hand out a guard that
//! dereferences to the value (`&mut T`) or the elements (`&mut [T]`): a private copy made
//! under the lock, whose changed elements are written back when the guard drops, still
//! under the lock. Elements the holder did not change are not written, so lock-free
//! writers to other elements are never overwritten; a panic while the guard is held
//! writes nothing back.
//!
//! # No references into shared memory
//! No method of this module returns a reference into the shared segment: reads and
//! writes are atomic operations that copy one element, [`get_obj`](Value::get_obj) and
//! [`get_lock`](Value::get_lock) return references to this process's *handles*, and the
//! guards of [`Value::lock`] and [`Array::lock`] dereference to a private copy in this
//! process's own memory, which no other handle or process can write. So clones,
//! [`get_obj`](Value::get_obj) writers that skip the lock, and other processes can never
//! break Rust's aliasing rules through these types, whatever they do; at worst a write
//! that skips the lock is overwritten by a guard's write-back (or the other way round),
//! which is the lost update the lock exists to prevent.
//!
//! # A dead holder never hangs anyone
//! The lock of a `Value` or `Array` is a [`Lock`](crate::synchronize::Lock) or
//! [`RLock`](crate::synchronize::RLock): if a process is killed while holding it, the next
//! acquirer gets it, and its guard reports [`owner_died`](SyncGuard::owner_died) so the
//! program can check what the dead process left half-done.
//!
//! ```
//! use multiproc::sharedctypes::{Array, Value};
//! use multiproc::Process;
//!
//! fn worker((counter, arr): (Value<i32>, Array<i32>)) {
//!     for i in 0..arr.len() {
//!         arr.set(i, arr.get(i).unwrap() * 2).unwrap();
//!     }
//!     *counter.lock().unwrap() += 10;
//! }
//!
//! let arr = Array::from_values(&[1, 2, 3, 4, 5])?;
//! let counter = Value::new(0)?;
//! let p = Process::new(worker, (counter.clone(), arr.clone()));
//! p.start()?;
//! p.join()?;
//! assert_eq!(arr.to_vec(), [2, 4, 6, 8, 10]);
//! assert_eq!(counter.get(), 10);
//! # Ok::<(), multiproc::Error>(())
//! ```

// The element types (`ctype`), the shared cell every handle reads and writes (`cell`), the
// cells without a lock (`raw`: RawValue, RawArray) and with one (`synchronized`: Value,
// Array, their lock and guards).
mod cell;
mod ctype;
mod raw;
mod synchronized;

pub use ctype::{CInt, CType};
pub use raw::{RawArray, RawValue};
pub use synchronized::{Array, ArrayGuard, SyncGuard, SyncLock, Value, ValueGuard};
