//! The Python package's rows (`py_*`): `python3 -m multiproc.bench --json`, run when the
//! `python3` on `PATH` imports the package (`pip install crates/multiproc-py`), measures
//! the package against the stdlib's `multiprocessing` (and faster-fifo's Queue, a peer,
//! where it is installed) from Python, and its rows join the table. The workloads and
//! their notes are the package's own (`multiproc/bench.py`).

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use serde::Deserialize;

use super::report::{find_row, mark};
use super::{BenchArgs, Floor, FloorKind, Row};

/// The rows `multiproc.bench` measures: name, unit, which way is better.
pub(super) const ROWS: &[(&str, &str, &str)] = &[
    ("py_queue_tput_1p1c_64B", "msg/s", "higher"),
    ("py_queue_tput_2p2c_64B", "msg/s", "higher"),
    ("py_queue_tput_1p1c_tuple", "msg/s", "higher"),
    ("py_queue_tput_2p2c_tuple", "msg/s", "higher"),
    ("py_queue_pingpong", "µs", "lower"),
    ("py_pipe_pingpong", "µs", "lower"),
    ("py_value_incr_locked_2proc", "incr/s", "higher"),
    ("py_manager_dict_op", "µs", "lower"),
    ("py_pool_task_chunk1", "µs", "lower"),
    ("py_pool_task_default_chunk", "µs", "lower"),
    ("py_pool_startup", "ms", "lower"),
    ("py_queue_numpy_64MiB", "GB/s", "higher"),
];

/// Whether `--only` selects any of these rows.
pub(super) fn selected(only: Option<&str>) -> bool {
    ROWS.iter().any(|(name, ..)| only.is_none_or(|p| name.starts_with(p)))
}

/// One line of `multiproc.bench --json`: a row, or a row it skipped.
#[derive(Deserialize)]
struct Line {
    bench: String,
    skipped: Option<String>,
    multiproc: Option<f64>,
    cpython: Option<f64>,
    #[serde(default)]
    floors: Vec<PyFloor>,
    multiproc_wall_ns_per_op: Option<f64>,
    multiproc_cpu_ns_per_op: Option<f64>,
    cpython_wall_ns_per_op: Option<f64>,
    cpython_cpu_ns_per_op: Option<f64>,
    #[serde(default)]
    notes: Vec<String>,
}

#[derive(Deserialize)]
struct PyFloor {
    value: f64,
    cpu_ns_per_op: Option<f64>,
}

/// What the Python side gave: its rows, and notes on what it skipped.
pub(super) struct PyRows {
    pub rows: Vec<Row>,
    pub notes: Vec<String>,
}

/// Runs `python3 -m multiproc.bench --json` with the run's options; `Err` with a note when
/// the package is not importable or the run fails.
pub(super) fn run(args: &BenchArgs) -> Result<PyRows, String> {
    let importable = Command::new("python3")
        .args(["-c", "import multiproc._native, multiproc.bench"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !importable {
        return Err("py_* rows: skipped (the python3 on PATH cannot import multiproc; \
                    `pip install crates/multiproc-py` into it)"
            .into());
    }
    let mut command = Command::new("python3");
    command.args(["-m", "multiproc.bench", "--json"]);
    if args.quick {
        command.arg("--quick");
    }
    if let Some(reps) = args.reps {
        command.arg("--reps").arg(reps.to_string());
    }
    if let Some(only) = &args.only {
        command.arg("--only").arg(only);
    }
    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .map_err(|e| format!("py_* rows: cannot start python3: {e}"))?;
    let stdout = child.stdout.take().ok_or("py_* rows: python3 without a pipe")?;
    let mut out = PyRows {
        rows: Vec::new(),
        notes: vec!["py_* rows: the Python package (multiproc) against the stdlib's \
                     multiprocessing (cpython column), both from Python; their floors are \
                     faster-fifo's Queue (kind peer) where it is installed"
            .into()],
    };
    let mut failure = None;
    for line in BufReader::new(stdout).lines() {
        let line = line.map_err(|e| format!("py_* rows: reading python3: {e}"))?;
        match serde_json::from_str::<Line>(&line).map_err(|e| e.to_string()).and_then(row) {
            Ok(Ok(r)) => out.rows.push(r),
            Ok(Err(skipped)) => out.notes.push(skipped),
            Err(e) => failure = Some(format!("py_* rows: python3 said {line:?}: {e}")),
        }
    }
    let status = child.wait().map_err(|e| format!("py_* rows: waiting for python3: {e}"))?;
    match failure {
        Some(f) => Err(f),
        None if !status.success() => Err(format!("py_* rows: python3 -m multiproc.bench {status}")),
        None => Ok(out),
    }
}

/// The row of `line` (`Ok(Err(note))` for a row it skipped).
fn row(line: Line) -> Result<Result<Row, String>, String> {
    let Some(&(bench, unit, better)) = ROWS.iter().find(|(name, ..)| *name == line.bench) else {
        return Err(format!("unknown row {}", line.bench));
    };
    if let Some(skipped) = line.skipped {
        return Ok(Err(skipped));
    }
    let floors: Vec<Floor> = line
        .floors
        .iter()
        .map(|f| Floor {
            kind: FloorKind::Peer,
            value: f.value,
            what: "faster-fifo's Queue, same workload",
            cpu_ns_per_op: f.cpu_ns_per_op,
        })
        .collect();
    Ok(Ok(Row {
        bench,
        unit,
        better,
        multiproc: line.multiproc.ok_or("no multiproc figure")?,
        cpython: line.cpython,
        floor: floors.first().map(|f| f.value),
        floor_kind: floors.first().map(|f| f.kind),
        floors,
        multiproc_wall_ns_per_op: line.multiproc_wall_ns_per_op.unwrap_or(f64::NAN),
        multiproc_cpu_ns_per_op: line.multiproc_cpu_ns_per_op,
        cpython_wall_ns_per_op: line.cpython_wall_ns_per_op,
        cpython_cpu_ns_per_op: line.cpython_cpu_ns_per_op,
        notes: line.notes,
    }))
}

/// The Python package's targets, checked against this run: speed-ups over the stdlib,
/// faster-fifo, and absolute figures.
pub(super) fn targets(rows: &[Row]) -> Vec<String> {
    let mut out = Vec::new();
    let speedup = |r: &Row| {
        let c = r.cpython?;
        Some(if r.better == "lower" { c / r.multiproc } else { r.multiproc / c })
    };
    for (name, min) in
        [("py_queue_tput_1p1c_64B", 5.0), ("py_pool_task_chunk1", 5.0), ("py_manager_dict_op", 5.0)]
    {
        if let Some(x) = find_row(rows, name).and_then(speedup) {
            out.push(format!("[{}] {name} >= {min}x the stdlib: {x:.2}x", mark(x >= min)));
        }
    }
    if let Some(r) = find_row(rows, "py_queue_tput_1p1c_64B") {
        if let Some(peer) = r.floor_of(FloorKind::Peer) {
            let x = r.multiproc / peer;
            out.push(format!(
                "[{}] py_queue_tput_1p1c_64B ahead of faster-fifo: {x:.2}x",
                mark(x > 1.0)
            ));
        }
    }
    if let Some(r) = find_row(rows, "py_queue_pingpong") {
        let x = r.multiproc;
        out.push(format!("[{}] py_queue_pingpong <= 10 µs: {x:.1} µs", mark(x <= 10.0)));
    }
    if let Some(r) = find_row(rows, "py_queue_numpy_64MiB") {
        let x = r.multiproc;
        out.push(format!("[{}] py_queue_numpy_64MiB >= 2 GB/s: {x:.2} GB/s", mark(x >= 2.0)));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_rows_here_are_the_packages_rows() {
        let script = include_str!("../../../multiproc-py/python/multiproc/bench.py");
        for (name, unit, better) in ROWS {
            let spec = format!("(\"{name}\", \"{unit}\", \"{better}\",");
            assert!(script.contains(&spec), "bench.py has no row {spec}");
        }
        assert_eq!(
            script.matches("(\"py_").count(),
            ROWS.len(),
            "bench.py has rows not listed here"
        );
    }

    #[test]
    fn a_line_becomes_a_row_or_a_note_and_an_unknown_row_is_an_error() {
        let line = r#"{"bench": "py_queue_pingpong", "multiproc": 20.0, "cpython": 90.0,
            "floors": [{"kind": "peer", "value": 30.0, "cpu_ns_per_op": 50000.0}],
            "multiproc_wall_ns_per_op": 20000.0, "notes": ["n"]}"#;
        let r = row(serde_json::from_str(line).unwrap()).unwrap().unwrap();
        assert_eq!(
            (r.bench, r.unit, r.multiproc, r.cpython),
            ("py_queue_pingpong", "µs", 20.0, Some(90.0))
        );
        assert_eq!((r.floor, r.floor_kind), (Some(30.0), Some(FloorKind::Peer)));
        let skipped = r#"{"bench": "py_queue_numpy_64MiB", "skipped": "no NumPy"}"#;
        assert!(
            matches!(row(serde_json::from_str(skipped).unwrap()), Ok(Err(n)) if n == "no NumPy")
        );
        let unknown = r#"{"bench": "py_nothing", "multiproc": 1.0}"#;
        assert!(row(serde_json::from_str(unknown).unwrap()).is_err());
    }
}
