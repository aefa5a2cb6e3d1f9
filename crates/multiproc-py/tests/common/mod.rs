//! What the Python package's test binaries share: a virtual environment per CPython minor
//! version under `target/py-venvs/<minor>` (made once, reused while intact) with maturin
//! and pytest from PyPI; the package's abi3 wheel built once per test process (dev
//! profile, in its own target directory so that it does not disturb cargo's own builds of
//! the crate) and installed into each; bounded runs of child commands. Environments and
//! the wheel are made under file locks, so parallel test processes (nextest) share them.

#![allow(dead_code)]

use std::fs::{self, File};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use fs4::fs_std::FileExt;

#[path = "../../../multiproc/tests/common/python.rs"]
pub mod python;

/// The packages each environment gets from PyPI.
const PYPI_PACKAGES: &[&str] = &["maturin>=1.5,<2", "pytest", "cloudpickle"];
/// Bounds on the slow steps; each fails the test loudly when it expires.
const SETUP_BOUND: Duration = Duration::from_secs(600);
pub const BUILD_BOUND: Duration = Duration::from_secs(1200);

/// This crate's directory.
pub fn crate_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The workspace's target directory (`CARGO_TARGET_DIR` when set).
pub fn target_dir() -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) if !dir.is_empty() => PathBuf::from(dir),
        _ => crate_dir().join("../../target"),
    }
}

/// Holds an exclusive lock on `path` (created if needed) until dropped.
pub struct FileLock(File);

impl FileLock {
    pub fn take(path: &Path) -> FileLock {
        fs::create_dir_all(path.parent().expect("a lock file has a parent")).expect("lock dir");
        let file = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(path)
            .unwrap_or_else(|e| panic!("cannot open lock file {}: {e}", path.display()));
        file.lock_exclusive().unwrap_or_else(|e| panic!("cannot lock {}: {e}", path.display()));
        FileLock(file)
    }
}

impl Drop for FileLock {
    fn drop(&mut self) {
        let _ = FileExt::unlock(&self.0);
    }
}

/// Runs `command` to its end, at most `bound`; its output, or why it did not finish.
pub fn run(mut command: Command, bound: Duration) -> Result<Output, String> {
    let what = format!("{command:?}");
    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run {what}: {e}"))?;
    // Drain both pipes while waiting, so a talkative child never blocks on a full pipe.
    let mut stdout = child.stdout.take().expect("piped");
    let mut stderr = child.stderr.take().expect("piped");
    let out = std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = stdout.read_to_end(&mut buf);
        buf
    });
    let err = std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = stderr.read_to_end(&mut buf);
        buf
    });
    let end = Instant::now() + bound;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if Instant::now() < end => std::thread::sleep(Duration::from_millis(100)),
            Ok(None) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!("{what} did not finish within {bound:?}; killed"));
            }
            Err(e) => return Err(format!("waiting for {what}: {e}")),
        }
    };
    let stdout = out.join().unwrap_or_default();
    let stderr = err.join().unwrap_or_default();
    Ok(Output { status, stdout, stderr })
}

/// Both streams of `output`, as text.
pub fn text(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// Skips (locally) or fails (in CI) `test` of `binary` for a reason outside this
/// repository.
pub fn unavailable(binary: &str, test: &str, why: &str) {
    assert!(!python::in_ci(), "{test}: required in CI (CI=true) but unavailable: {why}");
    python::terminal_line(&format!(
        "SKIPPED in {binary}: {test} ({why}). Set CI=true to make this a failure."
    ));
}

/// A virtual environment for one CPython minor version with maturin and pytest.
pub struct Venv {
    /// The environment's directory.
    pub dir: PathBuf,
}

impl Venv {
    /// The environment's interpreter.
    pub fn python(&self) -> PathBuf {
        self.dir.join("bin/python")
    }

    /// Whether the environment runs and has what the tests need.
    fn intact(&self) -> bool {
        self.dir.join(".multiproc-ready").is_file()
            && Command::new(self.python())
                .args(["-c", "import pytest, maturin, cloudpickle"])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success())
    }

    /// The environment of `minor`, made (or made again) with `interpreter` if needed.
    /// `Err` when PyPI could not provide the packages.
    pub fn ensure(minor: &str, interpreter: &python::Interpreter) -> Result<Venv, String> {
        let root = target_dir().join("py-venvs");
        let _lock = FileLock::take(&root.join(format!("{minor}.lock")));
        let venv = Venv { dir: root.join(minor) };
        if venv.intact() {
            return Ok(venv);
        }
        let mut create = interpreter.command();
        create.arg("-m").arg("venv").arg("--clear").arg(&venv.dir);
        let made = run(create, SETUP_BOUND).unwrap_or_else(|e| panic!("{e}"));
        assert!(made.status.success(), "creating {}: {}", venv.dir.display(), text(&made));
        let mut install = Command::new(venv.python());
        install.args(["-m", "pip", "install", "--quiet", "--disable-pip-version-check"]);
        install.args(PYPI_PACKAGES);
        let installed = run(install, SETUP_BOUND)?;
        if !installed.status.success() {
            return Err(format!(
                "pip could not install {} from PyPI: {}",
                PYPI_PACKAGES.join(", "),
                text(&installed).trim()
            ));
        }
        fs::write(venv.dir.join(".multiproc-ready"), interpreter.version.as_bytes())
            .expect("marking the environment ready");
        Ok(venv)
    }
}

/// Builds the abi3 wheel into `target/py-wheel` with `venv`'s maturin, once per test
/// process, under the wheel's lock (the caller holds it).
pub fn build_wheel(venv: &Venv, out: &Path) {
    static BUILT: Mutex<bool> = Mutex::new(false);
    let mut built = BUILT.lock().unwrap_or_else(|p| p.into_inner());
    if *built && find_wheel(out).is_some() {
        return;
    }
    let _ = fs::remove_dir_all(out);
    let mut build = Command::new(venv.dir.join("bin/maturin"));
    build
        .arg("build")
        .arg("--manifest-path")
        .arg(crate_dir().join("Cargo.toml"))
        .arg("--interpreter")
        .arg(venv.python())
        .arg("--out")
        .arg(out)
        .arg("--target-dir")
        .arg(target_dir().join("py-build"));
    let result = run(build, BUILD_BOUND).unwrap_or_else(|e| panic!("{e}"));
    assert!(result.status.success(), "maturin build failed:\n{}", text(&result));
    assert!(find_wheel(out).is_some(), "maturin built no wheel:\n{}", text(&result));
    *built = true;
}

/// The wheel in `dir`, if there is one.
pub fn find_wheel(dir: &Path) -> Option<PathBuf> {
    fs::read_dir(dir)
        .ok()?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| p.extension().is_some_and(|x| x == "whl"))
}

/// Builds the wheel (once per process) and installs it into `venv`.
pub fn install_wheel(venv: &Venv) {
    let out = target_dir().join("py-wheel");
    let _lock = FileLock::take(&target_dir().join("py-wheel.lock"));
    build_wheel(venv, &out);
    let wheel = find_wheel(&out).expect("the wheel just built");
    let mut install = Command::new(venv.python());
    install
        .args(["-m", "pip", "install", "--quiet", "--disable-pip-version-check"])
        .args(["--no-index", "--no-deps", "--force-reinstall"])
        .arg(&wheel);
    let installed = run(install, SETUP_BOUND).unwrap_or_else(|e| panic!("{e}"));
    assert!(installed.status.success(), "installing the wheel: {}", text(&installed));
}

/// An environment for `minor` with the wheel just built installed, held (under the
/// environment's lock, so no other test process reinstalls it meanwhile) until dropped.
pub struct Prepared {
    /// The interpreter the environment was made with.
    pub interpreter: python::Interpreter,
    /// The environment.
    pub venv: Venv,
    _lock: FileLock,
}

/// The environment of `minor` for `test` of `binary` (one of `tests`), with the wheel
/// installed; `None` (after the skip line, or a failure in CI) when the interpreter or
/// PyPI is missing.
pub fn prepare(minor: &str, binary: &str, tests: &[&str], test: &str) -> Option<Prepared> {
    let interpreter = python::require(minor, binary, tests)?;
    let venv = match Venv::ensure(minor, &interpreter) {
        Ok(venv) => venv,
        Err(why) => {
            unavailable(binary, test, &why);
            return None;
        }
    };
    let lock = FileLock::take(&target_dir().join("py-venvs").join(format!("{minor}.lock")));
    install_wheel(&venv);
    Some(Prepared { interpreter, venv, _lock: lock })
}
