//! Value, Array, RawValue, RawArray: type codes, the seeds' numbers, processes writing and
//! reading, lock-free atomics, errors, and a lock holder killed mid-update.

use std::time::Duration;

use multiproc::sharedctypes::{CInt, CType, SyncLock};
use multiproc::synchronize::{Lock, RLock};
use multiproc::{pipe, Array, Connection, Error, Process, RawArray, RawValue, StartMethod, Value};

const LONG: Option<Duration> = Some(Duration::from_secs(120));

fn both_methods(test: impl Fn(StartMethod)) {
    test(StartMethod::Spawn);
    test(StartMethod::Fork);
}

/// Starts every process, joins them all, and checks that each succeeded. A child still
/// running when the test fails is killed, so no test leaves a process behind.
fn run_all(processes: &[Process]) {
    let _reaper = KillOnDrop(processes);
    for p in processes {
        p.start().unwrap();
    }
    for p in processes {
        p.join_timeout(LONG.unwrap()).unwrap();
        assert_eq!(p.exitcode(), Some(0), "child failed: {:?}", p.panic_message());
    }
}

struct KillOnDrop<'a>(&'a [Process]);

impl Drop for KillOnDrop<'_> {
    fn drop(&mut self) {
        for p in self.0 {
            if p.is_alive() {
                let _ = p.kill();
                let _ = p.join_timeout(LONG.unwrap());
            }
        }
    }
}

// --------------------------------------------------------------------------------------
// Type codes

/// What a round-trip child receives: the three objects, what they hold, what to write.
type RoundTrip<T> = (Value<T>, RawValue<T>, Array<T>, Vec<T>, Vec<T>);

/// In the child: checks what the parent wrote, then writes `next` everywhere.
fn check_and_write<T: CType + Copy + serde::Serialize + serde::de::DeserializeOwned>(
    (value, raw, arr, expected, next): RoundTrip<T>,
) {
    assert_eq!(value.get(), expected[0]);
    assert_eq!(raw.get(), expected[1]);
    assert_eq!(arr.to_vec(), expected);
    value.set(next[0]);
    raw.set(next[1]);
    arr.set_range(0, &next).unwrap();
}

fn round_trip<T>(code: char, values: [T; 4], next: [T; 4])
where
    T: CType + Copy + serde::Serialize + serde::de::DeserializeOwned,
{
    both_methods(|m| {
        let value = Value::new(values[0]).unwrap();
        let raw = RawValue::new(values[1]).unwrap();
        let arr = Array::from_values(&values).unwrap();
        assert_eq!((value.typecode(), raw.typecode(), arr.typecode()), (code, code, code));
        assert_eq!(T::TYPECODE, code);
        assert_eq!(value.get(), values[0]);
        assert_eq!(raw.get(), values[1]);
        assert_eq!(arr.to_vec(), values);
        for (i, v) in values.iter().enumerate() {
            assert_eq!(arr.get(i).unwrap(), *v);
        }
        let p = Process::builder(
            check_and_write::<T>,
            (value.clone(), raw.clone(), arr.clone(), values.to_vec(), next.to_vec()),
        )
        .start_method(m)
        .build();
        run_all(&[p]);
        assert_eq!(value.get(), next[0], "{code} {m:?}");
        assert_eq!(raw.get(), next[1], "{code} {m:?}");
        assert_eq!(arr.to_vec(), next, "{code} {m:?}");
        // A new zeroed array of this type is all zeros.
        let zeros = Array::<T>::new(3).unwrap();
        for z in zeros.to_vec() {
            assert!(matches!(format!("{z:?}").as_str(), "0" | "0.0" | "false"), "{z:?}");
        }
    });
}

#[test]
#[allow(clippy::approx_constant)]
fn every_type_code_round_trips_through_a_child() {
    round_trip::<i8>('b', [i8::MIN, -1, 0, i8::MAX], [1, 2, -3, -128]);
    round_trip::<u8>('B', [0, 1, b'c', u8::MAX], [255, 254, b'x', 0]);
    round_trip::<i16>('h', [i16::MIN, -1, 0, i16::MAX], [5, -5, 300, -300]);
    round_trip::<u16>('H', [0, 1, 0x1234, u16::MAX], [9, 8, 7, 6]);
    round_trip::<i32>('i', [i32::MIN, -1, 0, i32::MAX], [1, 2, 3, 4]);
    round_trip::<u32>('I', [0, 1, 0xdead_beef, u32::MAX], [4, 3, 2, 1]);
    round_trip::<i64>('q', [i64::MIN, -1, 0, i64::MAX], [-7, 7, -70, 70]);
    round_trip::<u64>('Q', [0, 1, 0x0123_4567_89ab_cdef, u64::MAX], [u64::MAX, 0, 1, 2]);
    round_trip::<f32>('f', [f32::MIN, -0.5, 0.0, f32::INFINITY], [1.25, -2.5, f32::MAX, 0.1]);
    round_trip::<f64>(
        'd',
        [f64::MIN_POSITIVE, -1e300, 3.14159, f64::NEG_INFINITY],
        [0.1, 0.2, 0.3, 1e-310],
    );
    round_trip::<bool>('?', [true, false, false, true], [false, true, true, false]);
}

#[test]
fn zero_filled_arrays_and_type_names() {
    assert_eq!(Array::<i8>::new(3).unwrap().to_vec(), [0, 0, 0]);
    assert_eq!(Array::<u16>::new(3).unwrap().to_vec(), [0, 0, 0]);
    assert_eq!(Array::<f64>::new(10).unwrap().to_vec(), [0.0; 10]);
    assert_eq!(Array::<bool>::new(2).unwrap().to_vec(), [false, false]);
    assert!(RawArray::<i32>::new(0).unwrap().is_empty());
    assert_eq!(format!("{:?}", Value::new(3_i32).unwrap()), "Value<c_int>(3)");
    assert_eq!(
        format!("{:?}", RawArray::from_values(&[1.0_f64, 2.5]).unwrap()),
        "RawArray<c_double>([1.0, 2.5])"
    );
    assert_eq!(<u8 as CType>::CTYPE, "c_ubyte");
}

#[test]
fn a_nan_survives_bit_for_bit() {
    let v = Value::new(f64::NAN).unwrap();
    assert!(v.get().is_nan());
    let mut g = v.lock().unwrap();
    *g = f64::from_bits(0x7ff8_0000_0000_0001);
    drop(g);
    assert_eq!(v.get().to_bits(), 0x7ff8_0000_0000_0001);
}

// --------------------------------------------------------------------------------------
// The seeds' numbers

fn increment_with_lock((counter, lock, n): (Value<i32>, Lock, u32)) {
    for _ in 0..n {
        let _g = lock.acquire().unwrap();
        counter.set(counter.get() + 1);
    }
}

fn increment_get_lock((counter, n): (Value<i32>, u32)) {
    for _ in 0..n {
        let _g = counter.get_lock().acquire().unwrap();
        counter.set(counter.get() + 1);
    }
}

fn increment_guard((counter, n): (Value<i32>, u32)) {
    for _ in 0..n {
        *counter.lock().unwrap() += 1;
    }
}

#[test]
fn seed_002_two_processes_with_a_lock_count_to_200000() {
    both_methods(|m| {
        let counter = Value::new(0_i32).unwrap();
        let lock = Lock::new().unwrap();
        let ps: Vec<Process> = (0..2)
            .map(|_| {
                Process::builder(increment_with_lock, (counter.clone(), lock.clone(), 100_000))
                    .start_method(m)
                    .build()
            })
            .collect();
        run_all(&ps);
        assert_eq!(counter.get(), 200_000);
    });
}

#[test]
fn seed_002_value_with_built_in_lock_counts_to_200000() {
    both_methods(|m| {
        let counter = Value::new(0_i32).unwrap();
        let ps: Vec<Process> = (0..2)
            .map(|_| {
                Process::builder(increment_get_lock, (counter.clone(), 100_000))
                    .start_method(m)
                    .build()
            })
            .collect();
        run_all(&ps);
        assert_eq!(counter.get(), 200_000);
    });
}

#[test]
fn guards_count_to_200000_with_a_shared_plain_lock() {
    both_methods(|m| {
        let counter = Value::with_lock(0_i32, Lock::new().unwrap()).unwrap();
        let ps: Vec<Process> = (0..2)
            .map(|_| {
                Process::builder(increment_guard, (counter.clone(), 100_000))
                    .start_method(m)
                    .build()
            })
            .collect();
        run_all(&ps);
        assert_eq!(counter.get(), 200_000);
    });
}

#[test]
fn seed_000_safe_increment_reaches_2000000() {
    let counter = Value::new(0_i32).unwrap();
    let lock = Lock::new().unwrap();
    let ps: Vec<Process> = (0..2)
        .map(|_| Process::new(increment_with_lock, (counter.clone(), lock.clone(), 1_000_000)))
        .collect();
    run_all(&ps);
    assert_eq!(counter.get(), 2_000_000);
}

fn unlocked_increment((counter, n): (Value<i32>, u32)) {
    for _ in 0..n {
        counter.set(counter.get() + 1);
    }
}

#[test]
fn seed_002_without_a_lock_never_exceeds_200000() {
    let counter = Value::new(0_i32).unwrap();
    let ps: Vec<Process> =
        (0..2).map(|_| Process::new(unlocked_increment, (counter.clone(), 100_000))).collect();
    run_all(&ps);
    let n = counter.get();
    assert!(n <= 200_000, "{n}");
}

fn increment_array((arr, lock, amount): (Array<i32>, Lock, i32)) {
    let _g = lock.acquire().unwrap();
    for i in 0..arr.len() {
        arr.set(i, arr.get(i).unwrap() + amount).unwrap();
    }
}

#[test]
fn seed_002_ten_processes_under_a_lock_give_tens() {
    both_methods(|m| {
        let arr = Array::from_values(&[0_i32, 0, 0, 0, 0]).unwrap();
        let lock = Lock::new().unwrap();
        let ps: Vec<Process> = (0..10)
            .map(|_| {
                Process::builder(increment_array, (arr.clone(), lock.clone(), 1))
                    .start_method(m)
                    .build()
            })
            .collect();
        run_all(&ps);
        assert_eq!(arr.to_vec(), [10, 10, 10, 10, 10]);
    });
}

fn double_and_add_ten((arr, counter): (Array<i32>, Value<i32>)) {
    for i in 0..arr.len() {
        arr.set(i, arr.get(i).unwrap() * 2).unwrap();
    }
    counter.set(counter.get() + 10);
}

#[test]
fn seed_000_child_doubles_the_array_and_adds_ten() {
    both_methods(|m| {
        let arr = Array::from_values(&[1, 2, 3, 4, 5]).unwrap();
        let counter = Value::new(0).unwrap();
        assert_eq!(
            format!("Before: array={:?}, counter={}", arr.to_vec(), counter.get()),
            "Before: array=[1, 2, 3, 4, 5], counter=0"
        );
        run_all(&[Process::builder(double_and_add_ten, (arr.clone(), counter.clone()))
            .start_method(m)
            .build()]);
        assert_eq!(
            format!("After: array={:?}, counter={}", arr.to_vec(), counter.get()),
            "After: array=[2, 4, 6, 8, 10], counter=10"
        );
    });
}

#[allow(clippy::approx_constant)] // seed 001's literal
fn pi_and_squares((num, arr): (Value<f64>, Array<i32>)) {
    num.set(3.14159);
    for i in 0..arr.len() {
        let x = arr.get(i).unwrap();
        arr.set(i, x * x).unwrap();
    }
}

#[test]
fn seed_001_child_writes_pi_and_squares() {
    both_methods(|m| {
        let num = Value::new(0.0_f64).unwrap();
        let arr = Array::from_iter(0..5_i32).unwrap();
        run_all(&[Process::builder(pi_and_squares, (num.clone(), arr.clone()))
            .start_method(m)
            .build()]);
        assert_eq!(format!("{:?}", num.get()), "3.14159");
        assert_eq!(format!("{:?}", arr.to_vec()), "[0, 1, 4, 9, 16]");
    });
}

fn fill((arr, start): (Array<f64>, f64)) {
    for i in 0..arr.len() {
        arr.set(i, start + i as f64).unwrap();
    }
}

#[test]
fn seed_002_child_fills_a_double_array() {
    both_methods(|m| {
        let arr = Array::<f64>::new(5).unwrap();
        run_all(&[Process::builder(fill, (arr.clone(), 10.0)).start_method(m).build()]);
        assert_eq!(format!("{:?}", arr.to_vec()), "[10.0, 11.0, 12.0, 13.0, 14.0]");
    });
}

// --------------------------------------------------------------------------------------
// Lock-free atomics

fn add_ones<T: CInt + serde::Serialize + serde::de::DeserializeOwned>(
    (v, one, n): (RawValue<T>, T, u32),
) {
    for _ in 0..n {
        v.fetch_add(one);
    }
}

fn atomic_count<T: CInt + serde::Serialize + serde::de::DeserializeOwned>(
    zero: T,
    one: T,
    n: u32,
) -> T {
    let v = RawValue::new(zero).unwrap();
    let ps: Vec<Process> =
        (0..2).map(|_| Process::new(add_ones::<T>, (v.clone(), one, n))).collect();
    run_all(&ps);
    v.get()
}

#[test]
fn fetch_add_from_two_processes_without_a_lock_loses_nothing() {
    assert_eq!(atomic_count(0_i32, 1, 1_000_000), 2_000_000);
    assert_eq!(atomic_count(0_u64, 1, 1_000_000), 2_000_000);
    assert_eq!(atomic_count(0_u32, 1, 100_000), 200_000);
    assert_eq!(atomic_count(0_i64, 1, 100_000), 200_000);
    // Narrow types wrap, and their compare-and-swap path loses nothing either.
    assert_eq!(atomic_count(0_u16, 1, 100_000), (200_000 % 65_536) as u16);
    assert_eq!(atomic_count(0_i16, 1, 100_000), (200_000 % 65_536) as i16);
    assert_eq!(atomic_count(0_u8, 1, 100_000), (200_000 % 256) as u8);
    assert_eq!(atomic_count(0_i8, 1, 100_000), (200_000 % 256) as u8 as i8);
}

fn add_to_element((arr, i, n): (RawArray<u8>, usize, u32)) {
    for _ in 0..n {
        arr.fetch_add(i, 1).unwrap();
    }
}

#[test]
fn neighbouring_bytes_updated_by_two_processes_keep_both_updates() {
    both_methods(|m| {
        // Elements 0..4 share one 4-byte word; each process updates its own element.
        let arr = RawArray::<u8>::new(4).unwrap();
        let ps: Vec<Process> = (1..3)
            .map(|i| {
                Process::builder(add_to_element, (arr.clone(), i, 100_007)).start_method(m).build()
            })
            .collect();
        run_all(&ps);
        let each = (100_007 % 256) as u8;
        assert_eq!(arr.to_vec(), [0, each, each, 0]);
    });
}

#[test]
fn swap_compare_exchange_load_store() {
    let v = Value::new(10_i32).unwrap();
    assert_eq!(v.swap(11), 10);
    assert_eq!(v.compare_exchange(11, 12), Ok(11));
    assert_eq!(v.compare_exchange(11, 13), Err(12));
    v.store(-1);
    assert_eq!(v.load(), -1);
    assert_eq!(v.fetch_sub(1), -1);
    assert_eq!(v.get(), -2);

    let b = RawArray::from_values(&[1_i8, 2, 3, 4, 5]).unwrap();
    assert_eq!(b.swap(1, -2).unwrap(), 2);
    assert_eq!(b.compare_exchange(2, 3, 30).unwrap(), Ok(3));
    assert_eq!(b.compare_exchange(2, 3, 31).unwrap(), Err(30));
    assert_eq!(b.fetch_add(4, 127).unwrap(), 5);
    assert_eq!(b.to_vec(), [1, -2, 30, 4, -124]);
}

// --------------------------------------------------------------------------------------
// Errors

#[test]
fn out_of_range_is_an_error_not_a_panic() {
    let arr = Array::from_values(&[1_u16, 2, 3]).unwrap();
    let bad = |r: multiproc::Result<_>| matches!(r, Err(Error::InvalidArgument(_)));
    assert!(bad(arr.get(3).map(|_| ())));
    assert!(bad(arr.get(usize::MAX).map(|_| ())));
    assert!(bad(arr.set(3, 0)));
    assert!(bad(arr.fetch_add(3, 1).map(|_| ())));
    assert!(bad(arr.fetch_sub(usize::MAX, 1).map(|_| ())));
    assert!(bad(arr.swap(4, 1).map(|_| ())));
    assert!(bad(arr.compare_exchange(4, 1, 2).map(|_| ())));
    assert!(bad(arr.get_range(2..4).map(|_| ())));
    #[allow(clippy::reversed_empty_ranges)]
    let reversed = 2..1;
    assert!(bad(arr.get_range(reversed).map(|_| ())));
    assert!(bad(arr.get_range(..=usize::MAX).map(|_| ())));
    assert!(bad(arr.set_range(2, &[1, 2])));
    assert!(bad(arr.set_range(usize::MAX, &[1])));
    assert_eq!(arr.to_vec(), [1, 2, 3], "a failed call writes nothing");
    assert_eq!(arr.get_range(3..).unwrap(), Vec::<u16>::new());
    assert_eq!(arr.get_range(..).unwrap(), [1, 2, 3]);
    assert!(bad(RawArray::<u64>::new(usize::MAX).map(|_| ())));
    assert!(bad(Array::<u64>::new(usize::MAX / 4).map(|_| ())));
    assert!(RawArray::<u8>::new(usize::MAX - 8).is_err());
}

#[test]
fn a_value_travels_through_a_pipe_to_a_running_child() {
    // Not an argument: the segment is lent and the child reopens it.
    let (a, b) = pipe(true).unwrap();
    let child = multiproc::spawn(
        |b: multiproc::Connection| {
            let v: Value<i32> = b.recv().unwrap();
            *v.lock().unwrap() += 41;
        },
        b,
    )
    .unwrap();
    let v = Value::new(1_i32).unwrap();
    a.send(&v).unwrap();
    child.join().unwrap();
    assert_eq!(v.get(), 42);
}

#[test]
fn a_timeout_on_a_held_lock_is_an_error() {
    let v = Value::with_lock(0_i32, Lock::new().unwrap()).unwrap();
    let _held = v.get_lock().acquire().unwrap();
    assert!(matches!(
        v.get_lock().acquire_timeout(Duration::from_millis(20)),
        Err(Error::Timeout(_))
    ));
    assert!(matches!(v.lock_timeout(Duration::from_millis(20)), Err(Error::Timeout(_))));
    // Single reads and writes do not take the lock: no deadlock on a held plain Lock.
    v.set(v.get() + 1);
    assert_eq!(v.get(), 1);
}

// --------------------------------------------------------------------------------------
// Guards

#[test]
fn try_forms_do_not_wait_and_fail_with_would_block() {
    let would_block = |e: Error| matches!(e, Error::WouldBlock);
    let v = Value::with_lock(0_i32, Lock::new().unwrap()).unwrap();
    let arr = Array::with_lock(&[0_u8; 3], v.get_lock().clone()).unwrap();
    {
        let mut g = v.try_lock().unwrap();
        *g = 5;
        assert!(would_block(v.try_lock().unwrap_err()));
        assert!(would_block(arr.try_lock().unwrap_err()), "the array shares the value's lock");
        assert!(would_block(v.get_lock().try_acquire().unwrap_err()));
    }
    assert_eq!(v.get(), 5, "a try_lock guard writes back too");
    arr.try_lock().unwrap()[1] = 7;
    assert_eq!(arr.to_vec(), [0, 7, 0]);
    drop(arr.lock_timeout(Duration::MAX).unwrap());
    drop(v.get_lock().try_acquire().unwrap());
}

#[test]
fn a_guard_writes_back_only_what_it_changed() {
    let arr = Array::from_values(&[1_i32, 2, 3]).unwrap();
    let mut g = arr.lock().unwrap();
    g[0] = 10;
    // A lock-free writer changes another element meanwhile: it is not overwritten.
    arr.set(2, 30).unwrap();
    assert_eq!(arr.get(0).unwrap(), 1, "not written before the guard drops");
    drop(g);
    assert_eq!(arr.to_vec(), [10, 2, 30]);
}

#[test]
fn a_panic_under_a_guard_writes_nothing_and_releases_the_lock() {
    let arr = Array::from_values(&[1_i32, 2]).unwrap();
    let v = Value::new(5_u8).unwrap();
    let result = std::panic::catch_unwind(|| {
        let mut g = arr.lock().unwrap();
        g[0] = 100;
        let mut h = v.lock().unwrap();
        *h = 6;
        panic!("half-way");
    });
    assert!(result.is_err());
    assert_eq!(arr.to_vec(), [1, 2]);
    assert_eq!(v.get(), 5);
    assert!(arr.get_lock().acquire_timeout(Duration::from_secs(5)).is_ok());
    assert!(v.get_lock().acquire_timeout(Duration::from_secs(5)).is_ok());
}

#[test]
fn the_default_lock_is_recursive_and_shared_locks_are_the_same_lock() {
    let v = Value::new(0_i32).unwrap();
    assert!(matches!(v.get_lock(), SyncLock::RLock(_)));
    let _outer = v.get_lock().acquire().unwrap();
    *v.lock().unwrap() += 1; // re-entered under the RLock
    assert_eq!(v.get(), 1);

    let rlock = RLock::new().unwrap();
    let arr = Array::with_lock(&[0_i64; 2], rlock.clone()).unwrap();
    let g = arr.lock().unwrap();
    assert_eq!(rlock.count(), 1);
    drop(g);
    assert_eq!(rlock.count(), 0);
}

// --------------------------------------------------------------------------------------
// A holder killed mid-update

fn die_holding_the_lock((v, conn): (Value<i64>, Connection)) {
    let _g = v.get_lock().acquire().unwrap();
    v.set(v.get() + 1); // first half of a two-step update
    conn.send(&"holding").unwrap();
    std::thread::sleep(Duration::from_secs(120));
    v.set(v.get() + 1); // never reached
}

fn die_holding_the_array((arr, conn): (Array<i32>, Connection)) {
    let mut g = arr.lock().unwrap();
    g[0] = 1;
    conn.send(&"holding").unwrap();
    std::thread::sleep(Duration::from_secs(120));
}

#[test]
fn a_holder_killed_mid_update_is_reported_to_the_next_acquirer() {
    both_methods(|m| {
        for lock in [SyncLock::RLock(RLock::new().unwrap()), SyncLock::Lock(Lock::new().unwrap())] {
            let v = Value::with_lock(0_i64, lock).unwrap();
            let (parent, child) = pipe(true).unwrap();
            let p =
                Process::builder(die_holding_the_lock, (v.clone(), child)).start_method(m).build();
            let _reaper = KillOnDrop(std::slice::from_ref(&p));
            p.start().unwrap();
            assert_eq!(parent.recv::<String>().unwrap(), "holding");
            p.kill().unwrap();
            p.join_timeout(LONG.unwrap()).unwrap();
            assert_eq!(p.exitcode(), Some(-9));
            let g = v.get_lock().acquire_timeout(Duration::from_secs(60)).unwrap();
            assert!(g.owner_died(), "{m:?}");
            assert_eq!(v.get(), 1, "the half-done update is visible");
            drop(g);
            // The lock works normally afterwards.
            assert!(!v.get_lock().acquire_timeout(Duration::from_secs(5)).unwrap().owner_died());
        }

        let arr = Array::<i32>::new(2).unwrap();
        let (parent, child) = pipe(true).unwrap();
        let p =
            Process::builder(die_holding_the_array, (arr.clone(), child)).start_method(m).build();
        let _reaper = KillOnDrop(std::slice::from_ref(&p));
        p.start().unwrap();
        assert_eq!(parent.recv::<String>().unwrap(), "holding");
        p.kill().unwrap();
        p.join_timeout(LONG.unwrap()).unwrap();
        let g = arr.lock_timeout(Duration::from_secs(60)).unwrap();
        assert!(g.owner_died());
        assert_eq!(*g, [0, 0], "the dead holder's guard never wrote back");
    });
}

// --------------------------------------------------------------------------------------
// A handle decoded as the wrong type

/// Sends one shared object and decodes the bytes as another, as a confused peer would.
struct Confused<S, R> {
    sent: Option<S>,
    _received: std::marker::PhantomData<R>,
}

impl<S: serde::Serialize, R> serde::Serialize for Confused<S, R> {
    fn serialize<Ser: serde::Serializer>(&self, s: Ser) -> Result<Ser::Ok, Ser::Error> {
        self.sent.serialize(s)
    }
}

impl<'de, S, R: serde::Deserialize<'de>> serde::Deserialize<'de> for Confused<S, R> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Option::<R>::deserialize(d)?;
        Ok(Confused { sent: None, _received: std::marker::PhantomData })
    }
}

fn never_runs<S, R>(_: Confused<S, R>) {
    unreachable!("the arguments cannot be decoded");
}

fn decoding_fails<S, R>(sent: S) -> String
where
    S: serde::Serialize + serde::de::DeserializeOwned + Send + 'static,
    R: serde::Serialize + serde::de::DeserializeOwned + Send + 'static,
{
    let p = Process::new(
        never_runs::<S, R>,
        Confused::<S, R> { sent: Some(sent), _received: std::marker::PhantomData },
    );
    p.start().unwrap();
    p.join_timeout(LONG.unwrap()).unwrap();
    assert_eq!(p.exitcode(), Some(1));
    p.panic_message().unwrap_or_default()
}

#[test]
fn a_handle_of_another_type_or_kind_is_refused() {
    // The child cannot decode its arguments, and says why.
    let refused = |msg: String, why: &str| {
        assert!(msg.contains("could not be decoded") && msg.contains(why), "{msg}");
    };
    refused(
        decoding_fails::<RawValue<i32>, RawValue<u32>>(RawValue::new(1).unwrap()),
        "Value: the handle holds type code 'i', expected 'I' (c_uint)",
    );
    refused(
        decoding_fails::<Value<f64>, Value<f32>>(Value::new(1.0).unwrap()),
        "type code 'd', expected 'f'",
    );
    refused(
        decoding_fails::<RawArray<u8>, RawArray<i8>>(RawArray::new(3).unwrap()),
        "Array: the handle holds type code 'B', expected 'b'",
    );
    refused(
        decoding_fails::<RawArray<i32>, RawValue<i32>>(RawArray::new(1).unwrap()),
        "not a Value",
    );
    refused(decoding_fails::<RawValue<i64>, Array<i64>>(RawValue::new(1).unwrap()), "Array");
    refused(decoding_fails::<Lock, RawValue<i32>>(Lock::new().unwrap()), "Value");
    // The same type decodes.
    let p = Process::new(|v: RawArray<i8>| assert_eq!(v.len(), 3), RawArray::new(3).unwrap());
    run_all(&[p]);
}
