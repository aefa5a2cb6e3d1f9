//! `multiproc bench --json` prints one well-formed JSON object per benchmark. No timing is
//! asserted: speed is measured, never tested.

#[path = "../../multiproc/tests/common/mod.rs"]
mod common;

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

/// Checks a row's floors: each a kind, a positive value and a description; `floor` and
/// `floor_kind` are the first of them (or null when there are none).
fn check_floors(v: &serde_json::Value, line: &str) {
    let floors = v["floors"].as_array().expect("floors is an array");
    for f in floors {
        assert!(matches!(f["kind"].as_str(), Some("ceiling" | "baseline")), "{line}");
        let x = f["value"].as_f64().expect("a floor's value is a number");
        assert!(x.is_finite() && x > 0.0, "{line}");
        assert!(!f["what"].as_str().expect("what is a string").is_empty(), "{line}");
    }
    match floors.first() {
        Some(first) => {
            assert_eq!(v["floor"], first["value"], "{line}");
            assert_eq!(v["floor_kind"], first["kind"], "{line}");
        }
        None => assert!(v["floor"].is_null() && v["floor_kind"].is_null(), "{line}"),
    }
    let notes = v["notes"].as_array().expect("notes is an array");
    assert!(notes.iter().any(|n| n.as_str().is_some_and(|n| n.starts_with("pinning: "))), "{line}");
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
        assert_eq!(
            keys,
            [
                "bench",
                "better",
                "cpython",
                "cpython_cpu_ns_per_op",
                "cpython_wall_ns_per_op",
                "floor",
                "floor_kind",
                "floors",
                "multiproc",
                "multiproc_cpu_ns_per_op",
                "multiproc_wall_ns_per_op",
                "notes",
                "unit"
            ],
            "{line}"
        );
        let name = v["bench"].as_str().expect("bench is a string");
        assert!(name.starts_with(prefix), "{name} does not start with {prefix}");
        assert!(!v["unit"].as_str().expect("unit is a string").is_empty());
        assert!(matches!(v["better"].as_str(), Some("lower" | "higher")), "{line}");
        let mine = v["multiproc"].as_f64().expect("multiproc is a number");
        assert!(mine.is_finite() && mine > 0.0, "{line}");
        positive_or_null(&v, "cpython", line);
        positive_or_null(&v, "floor", line);
        check_floors(&v, line);
        let wall = v["multiproc_wall_ns_per_op"].as_f64().expect("our wall time is a number");
        assert!(wall.is_finite() && wall > 0.0, "{line}");
        positive_or_null(&v, "multiproc_cpu_ns_per_op", line);
        positive_or_null(&v, "cpython_wall_ns_per_op", line);
        positive_or_null(&v, "cpython_cpu_ns_per_op", line);
        assert_eq!(v["cpython"].is_null(), v["cpython_wall_ns_per_op"].is_null(), "{line}");
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
    for line in stdout.lines() {
        // Each child's CPU time is read from /proc after it exits, before it is reaped.
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        assert!(v["multiproc_cpu_ns_per_op"].as_f64().is_some(), "no CPU time: {line}");
    }
}

#[test]
fn json_lines_for_a_pipe_benchmark_without_python() {
    let (stdout, _) = bench(&["--json", "--only", "pipe_pingpong", "--quick", "--no-python"]);
    let names = check_lines(&stdout, "pipe_pingpong");
    assert_eq!(names, ["pipe_pingpong_64B", "pipe_pingpong_idle"]);
    let v: serde_json::Value = serde_json::from_str(stdout.lines().next().unwrap()).unwrap();
    assert!(v["cpython"].is_null());
    assert!(v["floor"].as_f64().is_some(), "the raw floor is measured: {stdout}");
    assert_eq!(v["floor_kind"], "baseline", "{stdout}");
    assert!(v["multiproc_cpu_ns_per_op"].as_f64().is_some(), "CPU time is counted: {stdout}");
}

/// The kinds of a row's floors, in order.
fn floor_kinds(v: &serde_json::Value) -> Vec<String> {
    let floors = v["floors"].as_array().expect("floors is an array");
    floors.iter().map(|f| f["kind"].as_str().unwrap().to_string()).collect()
}

#[test]
fn queue_ping_pong_rows_have_a_ceiling_and_baselines() {
    let (stdout, _) = bench(&["--json", "--only", "queue_pingpong", "--quick", "--no-python"]);
    let names = check_lines(&stdout, "queue_pingpong");
    assert_eq!(names, ["queue_pingpong", "queue_pingpong_idle"]);
    for line in stdout.lines() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        assert_eq!(v["floor_kind"], "ceiling", "{line}");
        let kinds = floor_kinds(&v);
        assert_eq!(kinds[0], "ceiling", "{line}");
        assert!(kinds[1..].iter().all(|k| k == "baseline") && kinds.len() >= 2, "{line}");
        let cpu = v["multiproc_cpu_ns_per_op"].as_f64().expect("CPU time is counted");
        assert!(cpu > 0.0, "{line}");
    }
}

#[test]
fn queue_throughput_has_the_bare_ring_ceiling() {
    let (stdout, _) = bench(&["--json", "--only", "queue_tput_2p2c", "--quick", "--no-python"]);
    check_lines(&stdout, "queue_tput_2p2c");
    let v: serde_json::Value = serde_json::from_str(stdout.lines().next().unwrap()).unwrap();
    assert_eq!(floor_kinds(&v), ["ceiling", "baseline"], "{stdout}");
    assert!(v["floors"][0]["what"].as_str().unwrap().contains("ring"), "{stdout}");
}

#[test]
fn the_table_shows_floor_kinds_and_cpu_columns() {
    let (stdout, _) = bench(&["--only", "pipe_pingpong_idle", "--quick", "--no-python"]);
    for column in ["ceiling", "baseline", "mp CPU/op", "mp cpu/wall", "py CPU/op"] {
        assert!(stdout.contains(column), "no {column:?} column: {stdout}");
    }
    assert!(stdout.lines().any(|l| l.starts_with("pipe_pingpong_idle")), "{stdout}");
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

#[test]
fn redis_rows_run_against_a_server_the_bench_starts() {
    // The bench finds redis-server as the tests do; without one, this skips (fails in CI).
    if common::redis::require("bench_cli").is_none() {
        return;
    }
    let (stdout, _) = bench(&["--json", "--only", "redis", "--quick", "--no-python"]);
    let names = check_lines(&stdout, "redis");
    assert_eq!(
        names,
        ["redis_queue_tput_64B", "redis_pool_task_chunk1", "redis_pool_task_default_chunk"]
    );
    let rows: Vec<serde_json::Value> =
        stdout.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(floor_kinds(&rows[0]), ["baseline"], "the raw stream commands: {stdout}");
    for row in &rows {
        assert!(row["multiproc_cpu_ns_per_op"].as_f64().is_some(), "CPU time: {row}");
    }
    assert!(floor_kinds(&rows[1]).is_empty() && floor_kinds(&rows[2]).is_empty(), "{stdout}");
}

#[test]
fn redis_rows_are_skipped_with_a_note_without_a_server() {
    let out = Command::new(env!("CARGO_BIN_EXE_multiproc"))
        .args(["bench", "--json", "--only", "redis", "--quick", "--no-python"])
        .env("REDIS_SERVER", "/nonexistent/redis-server")
        .output()
        .expect("run multiproc bench");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(out.stdout.is_empty(), "no rows without a server");
    assert!(stderr.contains("no redis-server: the redis_* rows are skipped"), "{stderr}");
}
