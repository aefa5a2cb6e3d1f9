//! The CPython peer: `cpython_side.py` (embedded in the binary) run by `python3` as a
//! small server that executes one workload per request and answers with one number.

use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

use serde::Deserialize;

use super::measure::Sample;

const SCRIPT: &str = include_str!("cpython_side.py");

/// What the interpreter said about itself.
#[derive(Deserialize)]
pub struct Hello {
    pub version: String,
    pub default_method: String,
    #[allow(dead_code)]
    pub methods: Vec<String>,
}

/// A workload's answer: `[value, ops, wall seconds, CPU seconds or null]`, or an error.
#[derive(Deserialize)]
struct Answer {
    value: Option<(f64, f64, f64, Option<f64>)>,
    error: Option<String>,
}

/// A running `python3 cpython_side.py`. Dropping it closes its stdin (the server then
/// returns), waits a moment, kills it if needed, and removes the script.
pub struct CPython {
    child: Child,
    stdin: Option<ChildStdin>,
    stdout: BufReader<ChildStdout>,
    script: PathBuf,
    pub hello: Hello,
}

impl CPython {
    /// Starts the server; `Ok(None)` when there is no `python3` on `PATH`.
    pub fn start() -> Result<Option<CPython>, String> {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let script =
            std::env::temp_dir().join(format!("multiproc-bench-{}-{nanos}.py", std::process::id()));
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&script)
            .map_err(|e| format!("creating {}: {e}", script.display()))?;
        if let Err(e) = file.write_all(SCRIPT.as_bytes()) {
            let _ = std::fs::remove_file(&script);
            return Err(format!("writing {}: {e}", script.display()));
        }
        drop(file);
        let spawned = Command::new("python3")
            .arg("-u")
            .arg(&script)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn();
        let mut child = match spawned {
            Ok(c) => c,
            Err(e) => {
                let _ = std::fs::remove_file(&script);
                return if e.kind() == std::io::ErrorKind::NotFound {
                    Ok(None)
                } else {
                    Err(format!("starting python3: {e}"))
                };
            }
        };
        let (Some(stdin), Some(stdout)) = (child.stdin.take(), child.stdout.take()) else {
            let _ = child.kill();
            let _ = child.wait();
            let _ = std::fs::remove_file(&script);
            return Err("python3 without pipes".into());
        };
        let mut py = CPython {
            child,
            stdin: Some(stdin),
            stdout: BufReader::new(stdout),
            script,
            // Replaced just below; a placeholder keeps Drop in charge of cleanup on error.
            hello: Hello { version: String::new(), default_method: String::new(), methods: vec![] },
        };
        let line = py.read_line()?;
        py.hello =
            serde_json::from_str(&line).map_err(|e| format!("python3 said {line:?}: {e}"))?;
        Ok(Some(py))
    }

    fn read_line(&mut self) -> Result<String, String> {
        let mut line = String::new();
        match self.stdout.read_line(&mut line) {
            Ok(0) => Err("python3 exited".into()),
            Ok(_) => Ok(line),
            Err(e) => Err(format!("reading from python3: {e}")),
        }
    }

    /// Runs workload `op` with `args` (a JSON object) and returns its sample.
    pub fn call(&mut self, op: &str, args: serde_json::Value) -> Result<Sample, String> {
        let request = serde_json::json!({ "op": op, "args": args });
        let stdin = self.stdin.as_mut().ok_or("python3 is closed")?;
        writeln!(stdin, "{request}")
            .and_then(|()| stdin.flush())
            .map_err(|e| format!("writing to python3: {e}"))?;
        let line = self.read_line()?;
        let answer: Answer =
            serde_json::from_str(&line).map_err(|e| format!("python3 answered {line:?}: {e}"))?;
        match (answer.value, answer.error) {
            (Some((value, ops, wall, cpu)), _) if value.is_finite() && value > 0.0 && ops > 0.0 => {
                Ok(Sample { value, ops, wall, cpu })
            }
            (_, Some(e)) => Err(e),
            (v, None) => Err(format!("python3 answered {v:?}")),
        }
    }
}

impl Drop for CPython {
    fn drop(&mut self) {
        drop(self.stdin.take());
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            match self.child.try_wait() {
                Ok(Some(_)) => break,
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(10))
                }
                _ => {
                    let _ = self.child.kill();
                    let _ = self.child.wait();
                    break;
                }
            }
        }
        let _ = std::fs::remove_file(&self.script);
    }
}
