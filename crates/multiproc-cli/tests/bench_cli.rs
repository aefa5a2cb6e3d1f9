//! `multiproc bench --json` prints one well-formed JSON object per benchmark. No timing is
//! asserted: speed is measured, never tested.

use std::process::Command;

fn bench(args: &[&str]) -> (String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_multiproc"))
        .arg("bench")
        .args(args)
        .output()
        .expect("run multiproc bench");
    let stdout = String::from_utf8(out.stdout).expect("utf-8 stdout");
    let stderr = String::from_utf8(out.stderr).expect("utf-8 stderr");
    assert!(out.status.success(), "multiproc bench {args:?} failed: {stderr}");
    (stdout, stderr)
}

fn positive_or_null(v: &serde_json::Value, key: &str, line: &str) {
    match &v[key] {
        serde_json::Value::Null => {}
        serde_json::Value::Number(n) => {
            let x = n.as_f64().unwrap();
            assert!(x.is_finite() && x > 0.0, "{key} is not a positive number in {line}");
        }
        other => panic!("{key} is {other} in {line}"),
    }
}

/// Checks every line of `stdout` and returns the benchmark names.
fn check_lines(stdout: &str, prefix: &str) -> Vec<String> {
    let mut names = Vec::new();
    for line in stdout.lines() {
        let v: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("{line:?}: {e}"));
        let obj = v.as_object().expect("a JSON object per line");
        let mut keys: Vec<&str> = obj.keys().map(String::as_str).collect();
        keys.sort_unstable();
        assert_eq!(keys, ["bench", "better", "cpython", "floor", "multiproc", "unit"], "{line}");
        let name = v["bench"].as_str().expect("bench is a string");
        assert!(name.starts_with(prefix), "{name} does not start with {prefix}");
        assert!(!v["unit"].as_str().expect("unit is a string").is_empty());
        assert!(matches!(v["better"].as_str(), Some("lower" | "higher")), "{line}");
        let mine = v["multiproc"].as_f64().expect("multiproc is a number");
        assert!(mine.is_finite() && mine > 0.0, "{line}");
        positive_or_null(&v, "cpython", line);
        positive_or_null(&v, "floor", line);
        names.push(name.to_string());
    }
    names
}

#[test]
fn json_lines_for_spawn_join() {
    let (stdout, stderr) = bench(&["--json", "--only", "spawn_join", "--quick"]);
    let names = check_lines(&stdout, "spawn_join");
    assert!(names.contains(&"spawn_join".to_string()), "{stdout}");
    assert!(stderr.contains("running spawn_join"), "no progress line: {stderr}");
}

#[test]
fn json_lines_for_a_pipe_benchmark_without_python() {
    let (stdout, _) = bench(&["--json", "--only", "pipe_pingpong", "--quick", "--no-python"]);
    let names = check_lines(&stdout, "pipe_pingpong");
    assert_eq!(names, ["pipe_pingpong_64B"]);
    let v: serde_json::Value = serde_json::from_str(stdout.lines().next().unwrap()).unwrap();
    assert!(v["cpython"].is_null());
    assert!(v["floor"].as_f64().is_some(), "the raw floor is measured: {stdout}");
}

#[test]
fn unknown_prefix_is_an_error() {
    let out = Command::new(env!("CARGO_BIN_EXE_multiproc"))
        .args(["bench", "--only", "no_such_bench"])
        .output()
        .expect("run multiproc bench");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("pipe_pingpong_64B"));
}
