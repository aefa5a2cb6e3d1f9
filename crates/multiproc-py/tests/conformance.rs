//! CPython's own `test._test_multiprocessing`, run against the package: for each of CPython
//! 3.11, 3.12 and 3.13, `tests/conformance/run.py` in the version's environment (see
//! `common/mod.rs`: the wheel built once and installed there) runs the required classes
//! under the spawn start method, in one interpreter process, with the module that ships
//! with that interpreter. The runner's per-class table (passed, failed, skipped through
//! `tests/conformance/skips.py`, skipped by CPython's own conditions) goes to stderr; any
//! failure or error fails the test, with the runner's whole output.
//!
//! A missing interpreter, a PyPI that cannot be reached to set up a new environment, or an
//! interpreter installed without its `test` package skips with a line on stderr locally
//! and fails under `CI=true`.

use std::process::Command;
use std::time::{Duration, Instant};

mod common;

use common::{crate_dir, python, run, text};

const BINARY: &str = "conformance";
const TESTS: &[&str] =
    &["conformance_cpython_3_11", "conformance_cpython_3_12", "conformance_cpython_3_13"];
/// The bound on one version's run (it takes about two minutes on the 2-core dev machine);
/// it fails the test loudly when it expires.
const RUN_BOUND: Duration = Duration::from_secs(1200);
/// The bound on one test inside the runner: past it the runner writes every thread's stack,
/// ends its children and fails.
const TEST_BOUND_SECS: &str = "300";
/// The runner's exit status when the interpreter has no `test` package.
const NO_TEST_PACKAGE: i32 = 2;

/// The whole check for one CPython minor version.
fn conformance_on(minor: &str, test: &str) {
    // Holds the environment's lock until the end.
    let Some(prepared) = common::prepare(minor, BINARY, TESTS, test) else {
        return;
    };
    let version = &prepared.interpreter.version;
    let mut runner = Command::new(prepared.venv.python());
    runner
        .current_dir(crate_dir())
        .arg("tests/conformance/run.py")
        .args(["--timeout", TEST_BOUND_SECS])
        .env_remove("PYTHONPATH");
    let started = Instant::now();
    let result = run(runner, RUN_BOUND).unwrap_or_else(|e| panic!("{e}"));
    let elapsed = started.elapsed();
    let output = text(&result);
    if result.status.code() == Some(NO_TEST_PACKAGE) {
        return common::unavailable(BINARY, test, output.trim());
    }
    let table = String::from_utf8_lossy(&result.stdout);
    python::terminal_line(&format!(
        "{test}: CPython {version}: test._test_multiprocessing under spawn, {:.0} s:\n{}",
        elapsed.as_secs_f64(),
        table.trim_end()
    ));
    assert!(
        result.status.success(),
        "CPython {version}'s test._test_multiprocessing failed against the package:\n{output}"
    );
    assert!(
        table.lines().any(|l| l.starts_with("total ")),
        "the conformance runner printed no table on CPython {version}:\n{output}"
    );
}

/// Names the interpreters found and, outside CI, what this binary skips for want of one
/// (see `common/python.rs`); in CI, fails unless all are there.
#[test]
fn cpython_interpreters() {
    python::check_interpreters(BINARY, TESTS);
}

#[test]
fn conformance_cpython_3_11() {
    conformance_on("3.11", "conformance_cpython_3_11");
}

#[test]
fn conformance_cpython_3_12() {
    conformance_on("3.12", "conformance_cpython_3_12");
}

#[test]
fn conformance_cpython_3_13() {
    conformance_on("3.13", "conformance_cpython_3_13");
}
