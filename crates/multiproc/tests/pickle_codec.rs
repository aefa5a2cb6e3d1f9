//! `Codec::Pickle`: round trips, interoperability with CPython (both directions, protocols
//! 0 to 5) and hostile input (huge lengths and memo indices, deep nesting, globals,
//! truncation, expansion through shared references, random garbage).
//!
//! Tests that need CPython use one of 3.11 to 3.13 (see `common::python`), else `python3`
//! on `PATH` (3.8 or later); when there is none they fail in CI (`CI=true`) and elsewhere
//! pass without running, after one line on stderr naming them. One test also tries every
//! `$PYENV_ROOT/versions/3.*` (`~/.pyenv` by default).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt::Debug;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use multiproc::{Codec, Error};
use serde::de::{DeserializeOwned, IgnoredAny};
use serde::{Deserialize, Serialize};
use serde_bytes::ByteBuf;

mod common;

// ---------------------------------------------------------------------------------------
// Helpers.

/// Pickles `value` with the codec.
fn enc<T: Serialize + ?Sized>(value: &T) -> Vec<u8> {
    let mut out = Vec::new();
    Codec::Pickle.encode_into(value, &mut out).expect("encoding failed");
    out
}

/// Decodes with the codec.
fn dec<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, Error> {
    Codec::Pickle.decode(bytes)
}

/// Encodes, decodes and compares.
fn round_trip<T: Serialize + DeserializeOwned + PartialEq + Debug>(value: T) {
    let bytes = enc(&value);
    let back: T = dec(&bytes).unwrap_or_else(|e| panic!("decoding {value:?}: {e}"));
    assert_eq!(back, value);
}

/// Decodes hostile `bytes` as `T`, expecting an error, quickly; returns the message.
fn reject<T: DeserializeOwned + Debug>(what: &str, bytes: &[u8]) -> String {
    let start = Instant::now();
    let result = dec::<T>(bytes);
    let took = start.elapsed();
    assert!(took < Duration::from_secs(3), "{what}: took {took:?} to decode");
    match result {
        Err(Error::Codec(msg)) => msg,
        Err(other) => panic!("{what}: expected Error::Codec, got {other:?}"),
        Ok(v) => panic!("{what}: expected an error, decoded {v:?}"),
    }
}

/// A Python value of the required types, decoded through `deserialize_any`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(untagged)]
enum Py {
    None,
    Bool(bool),
    Int(i64),
    Float(f64),
    Bytes(PyBytes),
    Str(String),
    List(Vec<Py>),
    Dict(BTreeMap<String, Py>),
}

/// Python `bytes` and nothing else (`ByteBuf` also takes a str or a list of ints).
#[derive(Debug, Clone, PartialEq)]
struct PyBytes(Vec<u8>);

impl<'de> Deserialize<'de> for PyBytes {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = PyBytes;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("bytes")
            }
            fn visit_bytes<E>(self, v: &[u8]) -> Result<PyBytes, E> {
                Ok(PyBytes(v.to_vec()))
            }
        }
        d.deserialize_bytes(V)
    }
}

/// A type as deep as its input.
#[derive(Debug, PartialEq, Deserialize)]
struct Deep(Vec<Deep>);

/// A struct of every required type.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Record {
    name: String,
    id: u32,
    tags: Vec<String>,
    blob: ByteBuf,
    score: Option<f64>,
    pair: (i64, bool),
}

/// The four kinds of enum variants.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
enum Shape {
    Unit,
    Newtype(i64),
    Tuple(i64, String),
    Struct { x: f64, y: f64 },
}

fn record() -> Record {
    Record {
        name: "n".into(),
        id: 7,
        tags: vec!["a".into(), "b".into()],
        blob: ByteBuf::from(vec![1u8]),
        score: None,
        pair: (-5, true),
    }
}

const RECORD_PY: &str =
    "{'name': 'n', 'id': 7, 'tags': ['a', 'b'], 'blob': b'\\x01', 'score': None, 'pair': (-5, True)}";

/// The tests that need CPython.
const CPYTHON_TESTS: [&str; 4] = [
    "decodes_cpython_pickles_of_every_protocol",
    "truncations_of_cpython_pickles_are_errors",
    "cpython_loads_what_we_encode",
    "every_installed_cpython_loads_what_we_encode",
];

/// A CPython 3.8 or later (see `common::python`): `None` when the test skips, which
/// fails it in CI.
fn python3() -> Option<PathBuf> {
    common::python::require_any("pickle_codec", &CPYTHON_TESTS).map(|python| python.program)
}

/// Pickles each expression with `python`'s `pickle.dumps(eval(expr), protocol=proto)`.
fn py_dumps(python: &Path, proto: u8, exprs: &[&str]) -> Vec<Vec<u8>> {
    const SCRIPT: &str = "import pickle, struct, sys\n\
        proto = int(sys.argv[1])\n\
        for e in sys.argv[2:]:\n\
        \x20   d = pickle.dumps(eval(e), protocol=proto)\n\
        \x20   sys.stdout.buffer.write(struct.pack('<I', len(d)) + d)\n";
    let out = Command::new(python)
        .arg("-c")
        .arg(SCRIPT)
        .arg(proto.to_string())
        .args(exprs)
        .output()
        .expect("running python");
    assert!(out.status.success(), "python failed: {}", String::from_utf8_lossy(&out.stderr));
    let mut rest = out.stdout.as_slice();
    let mut pickles = Vec::new();
    while !rest.is_empty() {
        let n = u32::from_le_bytes(rest[..4].try_into().unwrap()) as usize;
        pickles.push(rest[4..4 + n].to_vec());
        rest = &rest[4 + n..];
    }
    assert_eq!(pickles.len(), exprs.len());
    pickles
}

/// Has `python` load each pickle and compare it with `eval(expr)`: equal, and of the same
/// types all the way down (so a tuple is not a list, bytes not str, True not 1).
/// Returns the failures.
fn py_check(python: &Path, cases: &[(Vec<u8>, &str)]) -> Vec<String> {
    const SCRIPT: &str = "import pickle, struct, sys\n\
        def same(a, b):\n\
        \x20   if type(a) is not type(b): return False\n\
        \x20   if isinstance(a, (list, tuple)):\n\
        \x20       return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))\n\
        \x20   if isinstance(a, dict):\n\
        \x20       return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)\n\
        \x20   if isinstance(a, float) and a != a: return b != b\n\
        \x20   return a == b\n\
        data = sys.stdin.buffer.read()\n\
        i = 0\n\
        for e in sys.argv[1:]:\n\
        \x20   (n,) = struct.unpack_from('<I', data, i)\n\
        \x20   blob = data[i + 4:i + 4 + n]\n\
        \x20   i += 4 + n\n\
        \x20   try:\n\
        \x20       v = pickle.loads(blob)\n\
        \x20       print('ok' if same(v, eval(e)) else 'FAIL %s: got %r' % (e, v))\n\
        \x20   except Exception as ex:\n\
        \x20       print('FAIL %s: %r' % (e, ex))\n";
    let mut child = Command::new(python)
        .arg("-c")
        .arg(SCRIPT)
        .args(cases.iter().map(|(_, e)| *e))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("running python");
    let mut input = Vec::new();
    for (pickle, _) in cases {
        input.extend_from_slice(&(pickle.len() as u32).to_le_bytes());
        input.extend_from_slice(pickle);
    }
    let mut stdin = child.stdin.take().unwrap();
    let writer = std::thread::spawn(move || stdin.write_all(&input));
    let out = child.wait_with_output().expect("python");
    writer.join().unwrap().expect("writing to python");
    assert!(out.status.success(), "python failed: {}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), cases.len(), "python printed: {text}");
    lines.into_iter().filter(|l| *l != "ok").map(str::to_string).collect()
}

/// A small deterministic PRNG (xorshift64*).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

// ---------------------------------------------------------------------------------------
// Round trips.

#[test]
fn round_trips_of_every_required_type() {
    // None
    round_trip(());
    round_trip(None::<i64>);
    round_trip(Some(None::<i64>).flatten());
    // bool
    round_trip(true);
    round_trip(false);
    // int
    for v in [0i64, 1, -1, 127, 128, 255, 256, 65535, 65536, -129] {
        round_trip(v);
    }
    round_trip(i64::MIN);
    round_trip(i64::MAX);
    round_trip(i32::MIN);
    round_trip(u32::MAX);
    round_trip(u64::MAX);
    round_trip(1u64 << 63);
    round_trip(-5i8);
    round_trip(200u8);
    round_trip(-300i16);
    round_trip(60000u16);
    // float
    for v in [0.0f64, -0.0, 1.5, -2.25, 1e300, 5e-324, f64::INFINITY, f64::NEG_INFINITY] {
        let back: f64 = dec(&enc(&v)).unwrap();
        assert_eq!(back.to_bits(), v.to_bits());
    }
    assert!(dec::<f64>(&enc(&f64::NAN)).unwrap().is_nan());
    round_trip(1.5f32);
    // str
    round_trip(String::new());
    round_trip("hello".to_string());
    round_trip("caf\u{e9} \u{1F600}\n\0\\".to_string());
    round_trip("x".repeat(70_000));
    round_trip('c');
    // bytes
    round_trip(ByteBuf::new());
    round_trip(ByteBuf::from((0..=255u8).collect::<Vec<_>>()));
    round_trip(ByteBuf::from(vec![7u8; 100_000]));
    // list
    round_trip(Vec::<i64>::new());
    round_trip(vec![1i64, 2, 3]);
    round_trip((0..2500i64).collect::<Vec<_>>());
    round_trip(vec![vec!["a".to_string()], vec![]]);
    // tuple
    round_trip((1i64,));
    round_trip((1i64, "a".to_string()));
    round_trip((1i64, "a".to_string(), 2.5f64));
    round_trip((1i64, 2i64, 3i64, 4i64, (5i64, (6i64,))));
    // dict
    round_trip(HashMap::<String, i64>::new());
    round_trip(BTreeMap::from([("a".to_string(), 1i64), ("b".to_string(), 2)]));
    round_trip((0..1500i64).map(|i| (i, i.to_string())).collect::<HashMap<_, _>>());
    round_trip(HashMap::from([((1i64, 2i64), "pair".to_string())]));
    // Combinations, structs, enums.
    round_trip(record());
    round_trip(vec![Some(1i64), None, Some(-1)]);
    round_trip(vec![
        Shape::Unit,
        Shape::Newtype(5),
        Shape::Tuple(1, "s".into()),
        Shape::Struct { x: 1.0, y: -2.0 },
    ]);
    round_trip(BTreeSet::from([3i64, 1, 2]));
}

#[test]
fn encoding_uses_protocol_3_and_python_shapes() {
    assert_eq!(enc(&()), b"\x80\x03N.");
    assert_eq!(enc(&None::<u8>), b"\x80\x03N.");
    // A Rust tuple is a Python tuple, a Vec a list, bytes are bytes.
    assert_eq!(enc(&(1u8, 2u8)), b"\x80\x03(K\x01K\x02t.");
    assert_eq!(enc(&vec![1u8]), b"\x80\x03](K\x01e.");
    assert_eq!(enc(&ByteBuf::from(b"ab".to_vec())), b"\x80\x03C\x02ab.");
    assert_eq!(enc(&BTreeMap::from([(1u8, 2u8)])), b"\x80\x03}(K\x01K\x02u.");
}

#[test]
fn encoding_errors_leave_the_buffer_as_it_was() {
    let mut out = b"prefix".to_vec();
    let err = Codec::Pickle.encode_into(&(1u8, 1i128 << 100), &mut out);
    assert!(matches!(err, Err(Error::Codec(_))), "{err:?}");
    assert_eq!(out, b"prefix");
}

#[test]
fn big_ints_reach_wide_types_or_fail_clearly() {
    // LONG1 payloads, as CPython writes them.
    let long1 = |bytes: &[u8]| {
        let mut p = vec![0x80, 2, 0x8a, bytes.len() as u8];
        p.extend_from_slice(bytes);
        p.push(b'.');
        p
    };
    let two_63 = long1(&[0, 0, 0, 0, 0, 0, 0, 0x80, 0]);
    assert_eq!(dec::<u64>(&two_63).unwrap(), 1 << 63);
    assert_eq!(dec::<i128>(&two_63).unwrap(), 1 << 63);
    assert_eq!(dec::<f64>(&two_63).unwrap(), 2f64.powi(63));
    let msg = reject::<i64>("2**63 as i64", &two_63);
    assert!(msg.contains("9223372036854775808 does not fit in i64"), "{msg}");
    let u128_max = long1(&[[0xff; 16].as_slice(), &[0]].concat());
    assert_eq!(dec::<u128>(&u128_max).unwrap(), u128::MAX);
    let msg = reject::<u64>("2**128-1 as u64", &u128_max);
    assert!(msg.contains("does not fit in u64"), "{msg}");
    let i128_min = long1(&[[0; 15].as_slice(), &[0x80]].concat());
    assert_eq!(dec::<i128>(&i128_min).unwrap(), i128::MIN);
    let minus_one = long1(&[0xff, 0xff, 0xff]);
    assert_eq!(dec::<i8>(&minus_one).unwrap(), -1);
    let msg = reject::<u8>("-1 as u8", &minus_one);
    assert!(msg.contains("-1 does not fit in u8"), "{msg}");
    let huge = long1(&[[0x12; 40].as_slice(), &[0x01]].concat());
    let msg = reject::<i128>("2**320 as i128", &huge);
    assert!(msg.contains("too large"), "{msg}");
    // Text forms (protocol 0).
    assert_eq!(dec::<u128>(b"L340282366920938463463374607431768211455L\n.").unwrap(), u128::MAX);
    assert_eq!(dec::<i64>(b"I-42\n.").unwrap(), -42);
    let msg = reject::<i128>("text 10**60", format!("L1{}L\n.", "0".repeat(60)).as_bytes());
    assert!(msg.contains("too large"), "{msg}");
}

// ---------------------------------------------------------------------------------------
// CPython → Rust.

type Check = Box<dyn Fn(&[u8]) -> Result<(), String>>;

/// A case that must decode as `$ty` and equal `$expected`.
macro_rules! ok {
    ($expr:expr, $ty:ty, $expected:expr) => {
        (
            $expr,
            Box::new(|bytes: &[u8]| {
                let expected: $ty = $expected;
                match dec::<$ty>(bytes) {
                    Ok(got) if got == expected => Ok(()),
                    Ok(got) => Err(format!("decoded {got:?}, expected {expected:?}")),
                    Err(e) => Err(format!("{e}")),
                }
            }) as Check,
        )
    };
}

/// A case that must fail as `$ty` with a message containing `$needle`.
macro_rules! err {
    ($expr:expr, $ty:ty, $needle:expr) => {
        (
            $expr,
            Box::new(|bytes: &[u8]| match dec::<$ty>(bytes) {
                Err(Error::Codec(msg)) if msg.contains($needle) => Ok(()),
                other => Err(format!("expected an error with {:?}, got {other:?}", $needle)),
            }) as Check,
        )
    };
}

#[test]
fn decodes_cpython_pickles_of_every_protocol() {
    let Some(python) = python3() else { return };
    let cases: Vec<(&str, Check)> = vec![
        ok!("None", Option<i64>, None),
        ok!("None", (), ()),
        ok!("True", bool, true),
        ok!("False", bool, false),
        ok!("0", i64, 0),
        ok!("-1", i64, -1),
        ok!("255", u8, 255),
        ok!("256", i64, 256),
        ok!("65535", i64, 65535),
        ok!("65536", i64, 65536),
        ok!("2**31-1", i64, (1 << 31) - 1),
        ok!("-2**31", i64, -(1 << 31)),
        ok!("2**31", i64, 1 << 31),
        ok!("-2**31-1", i64, -(1 << 31) - 1),
        ok!("2**63-1", i64, i64::MAX),
        ok!("-2**63", i64, i64::MIN),
        ok!("2**63", u64, 1 << 63),
        ok!("2**64-1", u64, u64::MAX),
        ok!("2**100", i128, 1 << 100),
        ok!("-2**100", i128, -(1 << 100)),
        ok!("-2**127", i128, i128::MIN),
        ok!("2**128-1", u128, u128::MAX),
        ok!("1.5", f64, 1.5),
        ok!("3", f64, 3.0),
        ok!("1e300", f64, 1e300),
        ok!("5e-324", f64, 5e-324),
        ok!("float('inf')", f64, f64::INFINITY),
        ok!("float('-inf')", f64, f64::NEG_INFINITY),
        ok!("''", String, String::new()),
        ok!("'hello'", String, "hello".into()),
        ok!(
            r"'a\\b\n\r\x00\x1a caf\xe9 \u20ac \U0001F600 \\u0041'",
            String,
            "a\\b\n\r\0\x1a caf\u{e9} \u{20ac} \u{1F600} \\u0041".into()
        ),
        ok!("'x' * 70000", String, "x".repeat(70_000)),
        ok!("b''", ByteBuf, ByteBuf::new()),
        ok!(r"b'\x00\xffab\n\\'", ByteBuf, ByteBuf::from(b"\x00\xffab\n\\".to_vec())),
        ok!(
            "bytes(range(256)) * 2",
            ByteBuf,
            ByteBuf::from([(0..=255u8).collect::<Vec<_>>(), (0..=255).collect()].concat())
        ),
        ok!("b'abc'", Vec<u8>, b"abc".to_vec()),
        ok!("bytearray(b'ab')", ByteBuf, ByteBuf::from(b"ab".to_vec())),
        ok!("bytearray()", ByteBuf, ByteBuf::new()),
        ok!("[]", Vec<i64>, vec![]),
        ok!("[1, 2, 3]", Vec<i64>, vec![1, 2, 3]),
        ok!("list(range(2500))", Vec<i64>, (0..2500).collect()),
        ok!(
            "[None, True, 1, 2.5, 'x', b'y', [], {'k': [1]}]",
            Vec<Py>,
            vec![
                Py::None,
                Py::Bool(true),
                Py::Int(1),
                Py::Float(2.5),
                Py::Str("x".into()),
                Py::Bytes(PyBytes(b"y".to_vec())),
                Py::List(vec![]),
                Py::Dict(BTreeMap::from([("k".into(), Py::List(vec![Py::Int(1)]))])),
            ]
        ),
        ok!("()", (), ()),
        ok!("(1,)", (i64,), (1,)),
        ok!("(1, 'a')", (i64, String), (1, "a".into())),
        ok!("(1, 2, 3)", (i64, i64, i64), (1, 2, 3)),
        ok!("(1, 2, 3, 4, 5)", Vec<i64>, vec![1, 2, 3, 4, 5]),
        ok!("((1, 2), [3, (4,)])", ((i64, i64), (i64, (i64,))), ((1, 2), (3, (4,)))),
        ok!("{}", HashMap<String, i64>, HashMap::new()),
        ok!(
            "{'a': 1, 'b': 2}",
            HashMap<String, i64>,
            HashMap::from([("a".into(), 1), ("b".into(), 2)])
        ),
        ok!(
            "{i: str(i) for i in range(1500)}",
            BTreeMap<i64, String>,
            (0..1500).map(|i| (i, i.to_string())).collect()
        ),
        ok!(
            "{(1, 2): 'pair'}",
            HashMap<(i64, i64), String>,
            HashMap::from([((1, 2), "pair".into())])
        ),
        ok!(RECORD_PY, Record, record()),
        // The same objects more than once (memo references).
        ok!(
            "[{'key': i, 'other_key': 'v'} for i in range(3)]",
            Vec<BTreeMap<String, Py>>,
            (0..3)
                .map(|i| {
                    BTreeMap::from([
                        ("key".into(), Py::Int(i)),
                        ("other_key".into(), Py::Str("v".into())),
                    ])
                })
                .collect()
        ),
        ok!(
            "(lambda y: [y, y])((lambda x: [x, x])(['s']))",
            Vec<Vec<Vec<String>>>,
            vec![vec![vec!["s".to_string()]; 2]; 2]
        ),
        ok!("(lambda x: (x, x, [x]))(b'shared')", (ByteBuf, ByteBuf, Vec<ByteBuf>), {
            let b = ByteBuf::from(b"shared".to_vec());
            (b.clone(), b.clone(), vec![b])
        }),
        ok!("{1, 2, 3}", BTreeSet<i64>, BTreeSet::from([1, 2, 3])),
        ok!("frozenset([4])", Vec<i64>, vec![4]),
        ok!("set()", Vec<i64>, vec![]),
        // Enums as serde-pickle writes them.
        ok!("'Unit'", Shape, Shape::Unit),
        ok!("{'Newtype': 5}", Shape, Shape::Newtype(5)),
        ok!("{'Tuple': [1, 's']}", Shape, Shape::Tuple(1, "s".into())),
        ok!("{'Struct': {'x': 1.0, 'y': 2}}", Shape, Shape::Struct { x: 1.0, y: 2.0 }),
        // Clear errors.
        err!("2**64", i64, "18446744073709551616 does not fit in i64"),
        err!("2**64", u64, "does not fit in u64"),
        err!("-1", u64, "-1 does not fit in u64"),
        err!("2**200", i128, "too large"),
        err!("1.5", i64, "invalid type"),
        err!("[1, 2]", (i64,), "invalid length"),
        err!("[1, 2**70]", Vec<i64>, "does not fit in i64"),
        err!(
            "__import__('collections').OrderedDict(a=1)",
            HashMap<String, i64>,
            "refusing"
        ),
        err!("__import__('datetime').date(2020, 1, 1)", IgnoredAny, "refusing"),
        err!("(lambda l: (l.append(l), l)[1])([])", Py, "contains itself"),
    ];
    let exprs: Vec<&str> = cases.iter().map(|(e, _)| *e).collect();
    let mut failures = Vec::new();
    for proto in 0..=5u8 {
        let pickles = py_dumps(&python, proto, &exprs);
        for ((expr, check), pickle) in cases.iter().zip(&pickles) {
            if let Err(e) = check(pickle) {
                failures.push(format!("protocol {proto}, {expr}: {e}"));
            }
        }
        // NaN does not compare equal, and -0.0 == 0.0: check them on the side.
        let nan = py_dumps(&python, proto, &["float('nan')", "-0.0"]);
        assert!(dec::<f64>(&nan[0]).unwrap().is_nan());
        assert!(dec::<f64>(&nan[1]).unwrap().is_sign_negative());
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn truncations_of_cpython_pickles_are_errors() {
    let Some(python) = python3() else { return };
    let expr =
        "[None, True, -2**70, 1.5, 'caf\\xe9', b'\\x00', (1, 2), {'k': {1, 2}}, bytearray(b'z')]";
    for proto in 0..=5u8 {
        let pickle = &py_dumps(&python, proto, &[expr])[0];
        dec::<IgnoredAny>(pickle).unwrap();
        for cut in 0..pickle.len() {
            reject::<IgnoredAny>(&format!("protocol {proto} cut at {cut}"), &pickle[..cut]);
        }
    }
}

// ---------------------------------------------------------------------------------------
// Rust → CPython.

/// What we encode, and the Python expression it must load as.
fn rust_cases() -> Vec<(Vec<u8>, &'static str)> {
    vec![
        (enc(&()), "None"),
        (enc(&None::<i64>), "None"),
        (enc(&Some(3i64)), "3"),
        (enc(&true), "True"),
        (enc(&false), "False"),
        (enc(&0i64), "0"),
        (enc(&-1i64), "-1"),
        (enc(&-5i8), "-5"),
        (enc(&200u8), "200"),
        (enc(&-300i16), "-300"),
        (enc(&60000u16), "60000"),
        (enc(&i32::MIN), "-2**31"),
        (enc(&u32::MAX), "2**32-1"),
        (enc(&i64::MIN), "-2**63"),
        (enc(&i64::MAX), "2**63-1"),
        (enc(&u64::MAX), "2**64-1"),
        (enc(&1.5f64), "1.5"),
        (enc(&-0.0f64), "-0.0"),
        (enc(&f64::INFINITY), "float('inf')"),
        (enc(&f64::NAN), "float('nan')"),
        (enc(&0.25f32), "0.25"),
        (enc(""), "''"),
        (enc("caf\u{e9} \u{1F600}\n\\"), r"'caf\xe9 \U0001F600\n\\'"),
        (enc(&"x".repeat(70_000)), "'x' * 70000"),
        (enc(&'c'), "'c'"),
        (enc(&ByteBuf::new()), "b''"),
        (enc(&ByteBuf::from((0..=255u8).collect::<Vec<_>>())), "bytes(range(256))"),
        (enc(&ByteBuf::from(vec![7u8; 300])), "b'\\x07' * 300"),
        (enc(&Vec::<i64>::new()), "[]"),
        (enc(&vec![1i64, 2, 3]), "[1, 2, 3]"),
        (enc(&(0..2500i64).collect::<Vec<_>>()), "list(range(2500))"),
        (enc(&(1i64,)), "(1,)"),
        (enc(&(1i64, "a", 2.5f64)), "(1, 'a', 2.5)"),
        (enc(&(1i64, 2i64, 3i64, 4i64)), "(1, 2, 3, 4)"),
        (enc(&vec![(1i64, vec![ByteBuf::from(b"x".to_vec())])]), "[(1, [b'x'])]"),
        (enc(&BTreeMap::<String, i64>::new()), "{}"),
        (enc(&BTreeMap::from([("a", 1i64), ("b", 2)])), "{'a': 1, 'b': 2}"),
        (
            enc(&(0..1500i64).map(|i| (i, i.to_string())).collect::<HashMap<_, _>>()),
            "{i: str(i) for i in range(1500)}",
        ),
        (enc(&HashMap::from([((1i64, 2i64), "pair")])), "{(1, 2): 'pair'}"),
        (enc(&record()), RECORD_PY),
        (enc(&Shape::Unit), "'Unit'"),
        (enc(&Shape::Newtype(5)), "{'Newtype': 5}"),
        (enc(&Shape::Tuple(1, "s".into())), "{'Tuple': [1, 's']}"),
        (enc(&Shape::Struct { x: 1.0, y: 2.0 }), "{'Struct': {'x': 1.0, 'y': 2.0}}"),
    ]
}

#[test]
fn cpython_loads_what_we_encode() {
    let Some(python) = python3() else { return };
    let failures = py_check(&python, &rust_cases());
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn every_installed_cpython_loads_what_we_encode() {
    let root = std::env::var_os("PYENV_ROOT")
        .filter(|r| !r.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|home| Path::new(&home).join(".pyenv")));
    let versions = root.unwrap_or_default().join("versions");
    let mut pythons: Vec<PathBuf> = std::fs::read_dir(&versions)
        .map(|dir| {
            dir.filter_map(|e| e.ok())
                .filter(|e| e.file_name().to_string_lossy().starts_with("3."))
                .map(|e| e.path().join("bin/python3"))
                .filter(|p| p.exists())
                .collect()
        })
        .unwrap_or_default();
    pythons.sort();
    if pythons.is_empty() {
        // None under pyenv: whichever interpreter the other tests use, if any.
        let Some(python) = python3() else { return };
        pythons.push(python);
    }
    let cases = rust_cases();
    for python in &pythons {
        let failures = py_check(python, &cases);
        assert!(failures.is_empty(), "{}: {}", python.display(), failures.join("\n"));
    }
    println!("checked {} CPython versions", pythons.len());
}

// ---------------------------------------------------------------------------------------
// Hostile input.

/// `prefix`, then `len` as little-endian bytes, then a little data and STOP.
fn announce(prefix: &[u8], len: &[u8]) -> Vec<u8> {
    [prefix, len, b"abc."].concat()
}

#[test]
fn huge_lengths_are_errors_not_allocations() {
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("BINBYTES8 2**62", announce(b"\x80\x04\x8e", &(1u64 << 62).to_le_bytes())),
        ("BINBYTES8 2**64-1", announce(b"\x80\x04\x8e", &u64::MAX.to_le_bytes())),
        ("BINUNICODE8 2**62", announce(b"\x80\x04\x8d", &(1u64 << 62).to_le_bytes())),
        ("BYTEARRAY8 2**62", announce(b"\x80\x05\x96", &(1u64 << 62).to_le_bytes())),
        ("BINUNICODE 2**32-1", announce(b"\x80\x03X", &u32::MAX.to_le_bytes())),
        ("BINBYTES 2**32-1", announce(b"\x80\x03B", &u32::MAX.to_le_bytes())),
        ("LONG4 2**31-1", announce(b"\x80\x02\x8b", &i32::MAX.to_le_bytes())),
        ("LONG4 -1", announce(b"\x80\x02\x8b", &(-1i32).to_le_bytes())),
        ("BINSTRING -5", announce(b"T", &(-5i32).to_le_bytes())),
        ("BINSTRING 2**31-1", announce(b"T", &i32::MAX.to_le_bytes())),
        ("FRAME 2**62", announce(b"\x80\x04\x95", &(1u64 << 62).to_le_bytes())),
        ("SHORT_BINBYTES 255", announce(b"\x80\x03C", &[255])),
        ("SHORT_BINUNICODE 255", announce(b"\x80\x04\x8c", &[255])),
        ("LONG1 255", announce(b"\x80\x02\x8a", &[255])),
    ];
    for (what, bytes) in &cases {
        let msg = reject::<IgnoredAny>(what, bytes);
        assert!(msg.contains("truncated") || msg.contains("negative"), "{what}: {msg}");
    }
}

#[test]
fn huge_memo_indices_are_errors_not_allocations() {
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("LONG_BINPUT 2**32-1", b"\x80\x02Nr\xff\xff\xff\xff.".to_vec()),
        ("LONG_BINGET 2**32-1", b"\x80\x02j\xff\xff\xff\xff.".to_vec()),
        ("PUT 2**32", b"Np4294967296\n.".to_vec()),
        ("PUT 2**64", b"Np18446744073709551616\n.".to_vec()),
        ("PUT -1", b"Np-1\n.".to_vec()),
        ("GET 2**32", b"g4294967296\n.".to_vec()),
        ("BINGET of nothing", b"\x80\x02h\x05.".to_vec()),
        ("BINPUT 200 in a short pickle", b"\x80\x02Nq\xc8.".to_vec()),
        ("MEMOIZE on an empty stack", b"\x80\x04\x94N.".to_vec()),
    ];
    for (what, bytes) in &cases {
        let msg = reject::<IgnoredAny>(what, bytes);
        assert!(msg.contains("memo index") || msg.contains("underflow"), "{what}: {msg}");
    }
}

#[test]
fn deep_nesting_is_an_error_not_a_stack_overflow() {
    const N: usize = 100_000;
    let marks = [vec![b'('; N], vec![b'.']].concat();
    reject::<Py>("100 000 MARKs", &marks);
    reject::<IgnoredAny>("100 000 MARKs", &marks);
    let lists = [vec![b']'; N], vec![b'.']].concat();
    reject::<Py>("100 000 EMPTY_LISTs", &lists);
    // Nested for real: 100 000 lists, each appended to the one below.
    let appended = [vec![b']'; N], vec![b'a'; N - 1], vec![b'.']].concat();
    let msg = reject::<Deep>("100 000 nested lists", &appended);
    assert!(msg.contains("nested deeper than 256"), "{msg}");
    reject::<Py>("100 000 nested lists", &appended);
    // Nothing to walk when the value is ignored, or only its top: no error, no crash.
    dec::<IgnoredAny>(&appended).unwrap();
    dec::<Vec<Vec<Vec<IgnoredAny>>>>(&appended).unwrap();
    let marked = [vec![b'('; N], vec![b'l'; N], vec![b'.']].concat();
    reject::<Deep>("100 000 nested LISTs", &marked);
    let tuples = [vec![b'('; N], vec![b't'; N], vec![b'.']].concat();
    reject::<Deep>("100 000 nested TUPLEs", &tuples);
    let tuple1 = [vec![b')'], vec![0x85; N], vec![b'.']].concat();
    reject::<Py>("100 000 nested TUPLE1s", &tuple1);
    // Exactly MAX_DEPTH levels decode; one more does not.
    let deep = |n: usize| [vec![b']'; n], vec![b'a'; n - 1], vec![b'.']].concat();
    let ok = std::thread::Builder::new()
        .stack_size(2 << 20)
        .spawn(move || dec::<Deep>(&deep(256)).map(|_| ()).map_err(|e| e.to_string()))
        .unwrap()
        .join()
        .unwrap();
    ok.unwrap();
    reject::<Deep>("257 nested lists", &deep(257));
}

#[test]
fn recursive_structures_are_errors() {
    // A list that contains itself, a dict that contains itself, and CPython's spelling of
    // a tuple inside a list inside that tuple.
    let msg = reject::<Py>("l = [l]", b"\x80\x02]q\x00h\x00a.");
    assert!(msg.contains("contains itself"), "{msg}");
    reject::<Py>("d = {1: d}", b"\x80\x02}q\x00K\x01h\x00s.");
    reject::<Py>("t = ([t],)", b"\x80\x02]q\x00h\x00\x85q\x01a0h\x01.");
}

#[test]
fn shared_references_cannot_blow_up() {
    // A "billion laughs": each list holds the previous one twice.
    let mut laughs = b"\x80\x02]q\x000".to_vec();
    for i in 0..60u8 {
        laughs.extend_from_slice(&[b'(', b'h', i, b'h', i, b'l', b'q', i + 1, b'0']);
    }
    laughs.extend_from_slice(&[b'h', 60, b'.']);
    let msg = reject::<Py>("billion laughs", &laughs);
    assert!(msg.contains("expands"), "{msg}");
    reject::<Deep>("billion laughs", &laughs);

    // One megabyte of str, referenced 100 000 times from one list.
    let mut big = b"\x80\x04\x8d".to_vec();
    big.extend_from_slice(&1_000_000u64.to_le_bytes());
    big.extend(std::iter::repeat_n(b'x', 1_000_000));
    big.extend_from_slice(b"\x940](");
    for _ in 0..100_000 {
        big.extend_from_slice(b"h\x00");
    }
    big.extend_from_slice(b"e.");
    let msg = reject::<Vec<String>>("1 MB str x 100 000", &big);
    assert!(msg.contains("expands"), "{msg}");
    reject::<Py>("1 MB str x 100 000", &big);

    // set(list) over and over again on a memoized list copies it each time.
    let mut copies = b"\x80\x02c__builtin__\nset\nq\x00](".to_vec();
    copies.extend(std::iter::repeat_n(b'N', 1000));
    copies.extend_from_slice(b"eq\x01");
    for _ in 0..10_000 {
        copies.extend_from_slice(b"h\x00h\x01\x85R0");
    }
    copies.push(b'.');
    let msg = reject::<IgnoredAny>("set() of one list 10 000 times", &copies);
    assert!(msg.contains("copies more"), "{msg}");
}

#[test]
fn globals_and_object_opcodes_are_refused() {
    let marker = std::env::temp_dir().join(format!("multiproc-pickle-{}", std::process::id()));
    let _ = std::fs::remove_file(&marker);
    let cmd = format!("touch {}", marker.display());
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("GLOBAL os.system", format!("cos\nsystem\n(S'{cmd}'\ntR.").into_bytes()),
        ("GLOBAL os.system alone", b"cos\nsystem\n.".to_vec()),
        (
            "STACK_GLOBAL os.system",
            [
                b"\x80\x04\x8c\x02os\x94\x8c\x06system\x94\x93\x94\x8c".as_slice(),
                &[cmd.len() as u8],
                cmd.as_bytes(),
                b"\x94\x85\x94R\x94.",
            ]
            .concat(),
        ),
        ("builtins.eval", b"\x80\x03cbuiltins\neval\nX\x04\x00\x00\x001+1\x85R.".to_vec()),
        ("__builtin__.getattr", b"c__builtin__\ngetattr\n(c__builtin__\nset\nVadd\ntR.".to_vec()),
        ("subprocess.call", b"csubprocess\ncall\n(Vtrue\ntR.".to_vec()),
        (
            "copyreg._reconstructor",
            b"\x80\x02ccopy_reg\n_reconstructor\n(c__main__\nX\nc__builtin__\nobject\nNtR}b."
                .to_vec(),
        ),
        ("INST", format!("(S'{cmd}'\nios\nsystem\n.").into_bytes()),
        ("OBJ", b"(c__builtin__\nset\no.".to_vec()),
        ("NEWOBJ", b"\x80\x02c__builtin__\nset\n)\x81.".to_vec()),
        ("NEWOBJ_EX", b"\x80\x04c__builtin__\nset\n)}\x92.".to_vec()),
        ("BUILD", b"\x80\x02]}b.".to_vec()),
        ("PERSID", b"P1\n.".to_vec()),
        ("BINPERSID", b"\x80\x02K\x01Q.".to_vec()),
        ("EXT1", b"\x80\x02\x82\x01.".to_vec()),
        ("EXT2", b"\x80\x02\x83\x01\x00.".to_vec()),
        ("EXT4", b"\x80\x02\x84\x01\x00\x00\x00.".to_vec()),
        ("NEXT_BUFFER", b"\x80\x05\x97.".to_vec()),
        ("READONLY_BUFFER", b"\x80\x05C\x01a\x98.".to_vec()),
        ("set() with a str", b"c__builtin__\nset\n(Vab\ntR.".to_vec()),
        ("REDUCE on a list", b"\x80\x02])R.".to_vec()),
        (
            "_codecs.encode to utf-16",
            b"\x80\x02c_codecs\nencode\nX\x01\x00\x00\x00aX\x06\x00\x00\x00utf-16\x86R.".to_vec(),
        ),
    ];
    for (what, bytes) in &cases {
        let msg = reject::<IgnoredAny>(what, bytes);
        assert!(
            msg.contains("refusing")
                || msg.contains("unexpected arguments")
                || msg.contains("not an allowed global")
                || msg.contains("may only be called")
                || msg.contains("unsupported encoding"),
            "{what}: {msg}"
        );
        reject::<Py>(what, bytes);
    }
    // A global that is never called is refused when the value is used.
    let msg = reject::<Py>("set uncalled", b"c__builtin__\nset\n.");
    assert!(msg.contains("may only be called"), "{msg}");
    assert!(!marker.exists(), "a pickle ran a command");
}

#[test]
fn malformed_pickles_are_errors() {
    let cases: Vec<(&str, &[u8])> = vec![
        ("empty", b""),
        ("STOP alone", b"."),
        ("no STOP", b"\x80\x04N"),
        ("trailing bytes", b"N.N"),
        ("two values", b"NN."),
        ("protocol 6", b"\x80\x06N."),
        ("unknown opcode", b"\x80\x04\xff."),
        ("APPEND to an int", b"K\x01K\x02a."),
        ("SETITEM on a list", b"]K\x01K\x02s."),
        ("SETITEMS odd", b"}(K\x01u."),
        ("APPENDS without MARK", b"]K\x01e."),
        ("POP_MARK without MARK", b"N1."),
        ("TUPLE2 across a MARK", b"K\x01(K\x02\x86t."),
        ("invalid UTF-8", b"\x80\x03X\x02\x00\x00\x00\xc3\x28."),
        ("unquoted STRING", b"Sabc\n."),
        ("bad \\x in STRING", b"S'\\xZZ'\n."),
        ("bad \\u in UNICODE", b"Vab\\u12\n."),
        ("surrogate in UNICODE", b"V\\ud800\n."),
        ("bad INT", b"I12a\n."),
        ("bad FLOAT", b"F1.2.3\n."),
        ("line without newline", b"I12"),
        ("STACK_GLOBAL of ints", b"\x80\x04K\x01K\x02\x93."),
    ];
    for (what, bytes) in cases {
        reject::<IgnoredAny>(what, bytes);
    }
}

#[test]
fn truncations_of_our_pickles_are_errors() {
    let value = (
        record(),
        vec![Shape::Unit, Shape::Struct { x: 1.0, y: 2.0 }],
        u64::MAX,
        BTreeMap::from([("k".to_string(), vec![1.5f64])]),
    );
    let pickle = enc(&value);
    for cut in 0..pickle.len() {
        reject::<IgnoredAny>(&format!("cut at {cut}"), &pickle[..cut]);
        reject::<Py>(&format!("cut at {cut}"), &pickle[..cut]);
    }
}

/// Decodes arbitrary bytes as a few types; must not panic.
fn survive(bytes: &[u8]) {
    let result = std::panic::catch_unwind(|| {
        let _ = dec::<IgnoredAny>(bytes);
        let _ = dec::<Py>(bytes);
        let _ = dec::<Deep>(bytes);
        let _ = dec::<Vec<(i64, String)>>(bytes);
        let _ = dec::<Shape>(bytes);
        let _ = dec::<Record>(bytes);
    });
    assert!(result.is_ok(), "decoding panicked on {bytes:?}");
}

#[test]
fn random_garbage_never_panics() {
    let start = Instant::now();
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    // Bytes biased towards opcodes and small arguments, so that the machine gets going.
    const ALPHABET: &[u8] = b"().012FIJKLMNRSTUVXabcdeghjlpqrstu}]GBC\n\x00\x01\x02\x03\xff\
        \x80\x81\x85\x86\x87\x88\x89\x8a\x8b\x8c\x8d\x8e\x8f\x90\x91\x93\x94\x95\x96";
    for _ in 0..4000 {
        let len = rng.below(96);
        let mut bytes: Vec<u8> = (0..len)
            .map(|_| {
                if rng.below(4) == 0 {
                    rng.next() as u8
                } else {
                    ALPHABET[rng.below(ALPHABET.len())]
                }
            })
            .collect();
        if rng.below(2) == 0 {
            bytes.push(b'.');
        }
        survive(&bytes);
    }
    // Mutations of valid pickles.
    let seeds = [
        enc(&record()),
        enc(&(vec![Shape::Tuple(-1, "t".into())], u64::MAX, -7i64)),
        enc(&BTreeMap::from([("a", vec![ByteBuf::from(vec![1u8, 2])])])),
        b"\x80\x02]q\x00(X\x02\x00\x00\x00idq\x01h\x01\x8a\x09\x00\x00\x00\x00\x00\x00\x00\x80\x00e.".to_vec(),
        b"(lp0\n(lp1\n(lp2\nI1\naag2\naag1\na.".to_vec(),
    ];
    for _ in 0..4000 {
        let mut bytes = seeds[rng.below(seeds.len())].clone();
        for _ in 0..1 + rng.below(4) {
            let i = rng.below(bytes.len());
            match rng.below(3) {
                0 => bytes[i] = rng.next() as u8,
                1 => bytes[i] = ALPHABET[rng.below(ALPHABET.len())],
                _ => {
                    bytes.remove(i);
                }
            }
            if bytes.is_empty() {
                break;
            }
        }
        survive(&bytes);
    }
    assert!(
        start.elapsed() < Duration::from_secs(60),
        "random decoding took {:?}",
        start.elapsed()
    );
}
