//! The Python package's tests: for each of CPython 3.11, 3.12 and 3.13, a virtual
//! environment under `target/py-venvs/<minor>` (made once, reused while intact) with
//! maturin, pytest and cloudpickle from PyPI; the package's abi3 wheel built once per run (dev profile,
//! in its own target directory so that it does not disturb cargo's own builds of the
//! crate), installed into each; and `pytest tests/python` run there. A pytest failure
//! fails the test, with pytest's output.
//!
//! A missing interpreter, or a PyPI that cannot be reached to set up a new environment,
//! skips with a line on stderr locally and fails under `CI=true`. Environments and the
//! wheel are made under file locks, so parallel test processes (nextest) share them.

use std::path::PathBuf;
use std::process::Command;
use std::sync::Mutex;
use std::time::Duration;

mod common;

use common::{crate_dir, python, run, target_dir, text, FileLock};

const BINARY: &str = "python_package";
const TESTS: &[&str] = &["pytest_cpython_3_11", "pytest_cpython_3_12", "pytest_cpython_3_13"];
/// The bound on one pytest run; it fails the test loudly when it expires.
const PYTEST_BOUND: Duration = Duration::from_secs(900);

/// Builds the Rust side of the interop test (the `multiproc` crate's example
/// `pickle_queue_peer`) into the wheel's target directory, once per process; its path.
fn build_peer() -> PathBuf {
    static BUILT: Mutex<Option<PathBuf>> = Mutex::new(None);
    let mut built = BUILT.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(path) = built.as_ref() {
        return path.clone();
    }
    let _lock = FileLock::take(&target_dir().join("py-wheel.lock"));
    let build_dir = target_dir().join("py-build");
    let mut build = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    build
        .args(["build", "--quiet", "-p", "multiproc", "--example", "pickle_queue_peer"])
        .arg("--manifest-path")
        .arg(crate_dir().join("../../Cargo.toml"))
        .arg("--target-dir")
        .arg(&build_dir);
    let result = run(build, common::BUILD_BOUND).unwrap_or_else(|e| panic!("{e}"));
    assert!(result.status.success(), "building pickle_queue_peer failed:\n{}", text(&result));
    let path = build_dir.join("debug/examples/pickle_queue_peer");
    assert!(path.is_file(), "no {} after the build", path.display());
    *built = Some(path.clone());
    path
}

/// The whole check for one CPython minor version.
fn pytest_on(minor: &str, test: &str) {
    // Holds the environment's lock until the end.
    let Some(prepared) = common::prepare(minor, BINARY, TESTS, test) else {
        return;
    };
    let (interpreter, venv) = (&prepared.interpreter, &prepared.venv);

    let mut pytest = Command::new(venv.python());
    pytest
        .current_dir(crate_dir())
        .args(["-m", "pytest", "tests/python", "-q", "-p", "no:cacheprovider", "-rfEs"])
        // A test stuck for two minutes has every thread's stack written out.
        .args(["-o", "faulthandler_timeout=120"])
        .env("MULTIPROC_PICKLE_PEER", build_peer())
        .env_remove("PYTHONPATH");
    let result = run(pytest, PYTEST_BOUND).unwrap_or_else(|e| panic!("{e}"));
    let output = text(&result);
    let summary = output.lines().rev().find(|l| !l.trim().is_empty()).unwrap_or("").trim();
    python::terminal_line(&format!("{test}: CPython {}: pytest: {summary}", interpreter.version));
    assert!(result.status.success(), "pytest failed on CPython {}:\n{output}", interpreter.version);
    assert!(summary.contains(" passed"), "pytest ran no test on CPython {minor}:\n{output}");
}

/// Names the interpreters found and, outside CI, what this binary skips for want of one
/// (see `common/python.rs`); in CI, fails unless all are there.
#[test]
fn cpython_interpreters() {
    python::check_interpreters(BINARY, TESTS);
}

#[test]
fn pytest_cpython_3_11() {
    pytest_on("3.11", "pytest_cpython_3_11");
}

#[test]
fn pytest_cpython_3_12() {
    pytest_on("3.12", "pytest_cpython_3_12");
}

#[test]
fn pytest_cpython_3_13() {
    pytest_on("3.13", "pytest_cpython_3_13");
}
