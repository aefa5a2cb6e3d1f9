//! Finding a CPython interpreter by minor version, and reporting the tests that cannot
//! run without one.
//!
//! An interpreter for `3.12` is the newest `$PYENV_ROOT/versions/3.12.*/bin/python3`
//! (`PYENV_ROOT` defaults to `~/.pyenv`), else `python3.12` on `PATH`; whichever is
//! found must say it is 3.12 when run. Any patch release counts.
//!
//! A test whose interpreter is missing fails when `CI` is `true` (or `1`). Elsewhere it
//! passes without running, and the binary writes one line naming what it skipped straight
//! to its stderr (not through `eprintln!`, which the test harness captures), once per
//! process. Under `cargo nextest`, `.config/nextest.toml` shows that line.

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Mutex, OnceLock};

/// The minor versions the CPython tests run against.
pub const MINORS: [&str; 3] = ["3.11", "3.12", "3.13"];

/// An interpreter that runs.
#[derive(Debug, Clone)]
pub struct Interpreter {
    /// The program to run.
    pub program: PathBuf,
    /// Its full version, `3.12.1`.
    pub version: String,
}

impl Interpreter {
    /// A command running this interpreter.
    pub fn command(&self) -> Command {
        Command::new(&self.program)
    }
}

/// Whether this run is CI's: `CI=true` (or `1`).
pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v.eq_ignore_ascii_case("true") || v == "1")
}

fn pyenv_root() -> Option<PathBuf> {
    match std::env::var_os("PYENV_ROOT") {
        Some(root) if !root.is_empty() => Some(PathBuf::from(root)),
        _ => std::env::var_os("HOME").map(|home| Path::new(&home).join(".pyenv")),
    }
}

/// The full version `program` reports, if it runs.
fn version_of(program: &Path) -> Result<String, String> {
    let out = Command::new(program)
        .args(["-c", "import sys; print('%d.%d.%d' % sys.version_info[:3])"])
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("{}: {e}", program.display()))?;
    if !out.status.success() {
        return Err(format!(
            "{} failed: {}",
            program.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// Patch number of `3.12.1`-style names under `minor`; `None` for `3.12-dev`, `3.120.0`…
fn patch_of(name: &str, minor: &str) -> Option<u32> {
    name.strip_prefix(minor)?.strip_prefix('.')?.parse().ok()
}

/// The candidates for `minor`, best first.
fn candidates(minor: &str) -> Vec<PathBuf> {
    let mut found = Vec::new();
    if let Some(versions) = pyenv_root().map(|root| root.join("versions")) {
        let mut installed: Vec<(u32, PathBuf)> = std::fs::read_dir(&versions)
            .into_iter()
            .flatten()
            .filter_map(|entry| {
                let entry = entry.ok()?;
                let patch = patch_of(entry.file_name().to_str()?, minor)?;
                Some((patch, entry.path().join("bin/python3")))
            })
            .filter(|(_, program)| program.is_file())
            .collect();
        installed.sort();
        found.extend(installed.into_iter().rev().map(|(_, program)| program));
    }
    let name = format!("python{minor}");
    if let Some(path) = std::env::var_os("PATH") {
        found.extend(
            std::env::split_paths(&path).map(|dir| dir.join(&name)).filter(|p| p.is_file()),
        );
    }
    found
}

fn lookup(minor: &str) -> Result<Interpreter, String> {
    let mut tried = Vec::new();
    for program in candidates(minor) {
        match version_of(&program) {
            Ok(version) if patch_of(&version, minor).is_some() => {
                return Ok(Interpreter { program, version })
            }
            Ok(version) => tried.push(format!("{} is {version}", program.display())),
            Err(why) => tried.push(why),
        }
    }
    let root = pyenv_root().map_or("no PYENV_ROOT or HOME".into(), |r| r.display().to_string());
    if tried.is_empty() {
        Err(format!("no {root}/versions/{minor}.* and no python{minor} on PATH"))
    } else {
        Err(format!("none of the candidates runs: {}", tried.join("; ")))
    }
}

/// The interpreter for `minor` (`"3.12"`), looked up once per process.
pub fn find(minor: &str) -> Result<Interpreter, String> {
    static FOUND: OnceLock<Mutex<HashMap<String, Result<Interpreter, String>>>> = OnceLock::new();
    let mut found = FOUND.get_or_init(Default::default).lock().unwrap_or_else(|p| p.into_inner());
    found.entry(minor.to_string()).or_insert_with(|| lookup(minor)).clone()
}

/// The interpreter a test of `binary` needs, for `minor`. When it is missing: in CI the
/// test fails; elsewhere `None` (the test returns and passes), after this process has
/// written, once, the line that names every test of `binary` it skips. `tests` are those
/// tests' names, each run once per version of [`MINORS`].
pub fn require(minor: &str, binary: &str, tests: &[&str]) -> Option<Interpreter> {
    match find(minor) {
        Ok(python) => Some(python),
        Err(why) if in_ci() => {
            panic!("CPython {minor} is required in CI (CI=true) but missing: {why}")
        }
        Err(_) => {
            report_skips(binary, tests);
            None
        }
    }
}

/// The test each binary that needs CPython has, named `cpython_interpreters`: in CI it
/// fails unless every version of [`MINORS`] is found; elsewhere it writes the line naming
/// what the binary skips (once per process, as [`require`] does), and passes. Under
/// `cargo nextest`, which hides what passing tests write, `.config/nextest.toml` shows this
/// test's output, and so the line; it also lists the interpreters found.
pub fn check_interpreters(binary: &str, tests: &[&str]) {
    let found: Vec<(&str, Result<Interpreter, String>)> =
        MINORS.iter().map(|minor| (*minor, find(minor))).collect();
    let missing: Vec<String> = found
        .iter()
        .filter_map(|(minor, r)| r.as_ref().err().map(|why| format!("CPython {minor}: {why}")))
        .collect();
    assert!(
        !in_ci() || missing.is_empty(),
        "CPython interpreters are required in CI (CI=true) but missing: {}",
        missing.join("; ")
    );
    for python in found.iter().filter_map(|(_, r)| r.as_ref().ok()) {
        // Captured by the harness: shown by nextest only (see above).
        eprintln!("{binary}: CPython {} is {}", python.version, python.program.display());
    }
    if !missing.is_empty() {
        report_skips(binary, tests);
    }
}

/// Any interpreter, for a test of `binary` that needs one but no particular version: the
/// newest of [`MINORS`] found, else `python3` on `PATH` if it is 3.8 or later. When there
/// is none: as [`require`].
pub fn require_any(binary: &str, tests: &[&str]) -> Option<Interpreter> {
    if let Some(python) = MINORS.iter().rev().find_map(|minor| find(minor).ok()) {
        return Some(python);
    }
    let fallback = Path::new("python3");
    let why = match version_of(fallback) {
        Ok(version) => {
            let minor = version.split('.').nth(1).and_then(|m| m.parse::<u32>().ok());
            if version.starts_with("3.") && minor.is_some_and(|m| m >= 8) {
                return Some(Interpreter { program: fallback.to_path_buf(), version });
            }
            format!("python3 is {version}")
        }
        Err(why) => why,
    };
    assert!(!in_ci(), "CPython is required in CI (CI=true) but missing: {why}");
    report_skips(binary, tests);
    None
}

/// Writes the one line naming what this binary skips, the first time it is called.
fn report_skips(binary: &str, tests: &[&str]) {
    static REPORTED: OnceLock<()> = OnceLock::new();
    REPORTED.get_or_init(|| {
        let missing: Vec<(String, String)> = MINORS
            .iter()
            .filter_map(|minor| find(minor).err().map(|why| (minor.to_string(), why)))
            .collect();
        let versions: Vec<&str> = missing.iter().map(|(m, _)| m.as_str()).collect();
        let reasons: Vec<String> = missing.iter().map(|(m, why)| format!("{m}: {why}")).collect();
        let line = format!(
            "SKIPPED in {binary}: {} for CPython {} (not found; {}). Set CI=true to make this a failure.",
            tests.join(", "),
            versions.join(", "),
            reasons.join("; ")
        );
        terminal_line(&line);
    });
}

/// Writes `line` to this process's stderr directly: the test harness captures only the
/// `print!` family, so the line shows in a normal `cargo test` run.
pub fn terminal_line(line: &str) {
    let mut stderr = std::io::stderr().lock();
    let _ = writeln!(stderr, "\n{line}");
    let _ = stderr.flush();
}
