//! The report of `multiproc bench`: the table of figures and floors, the table of wall
//! and CPU time per operation, the notes under them, and the targets checked against the
//! run.

use super::{
    managers, pool, python_pkg, queues, redis, shared_state, FloorKind, Row, FUTEX_PARKED,
};

/// A figure with about four significant digits.
fn fmt_num(v: f64) -> String {
    if !v.is_finite() {
        "-".into()
    } else if v >= 1e6 {
        format!("{:.2}M", v / 1e6)
    } else if v >= 1000.0 {
        format!("{v:.0}")
    } else if v >= 100.0 {
        format!("{v:.1}")
    } else if v >= 10.0 {
        format!("{v:.2}")
    } else {
        format!("{v:.3}")
    }
}

/// How much faster multiproc is than `other` (> 1: faster).
fn speedup(row: &Row, other: f64) -> f64 {
    match row.better {
        "lower" => other / row.multiproc,
        _ => row.multiproc / other,
    }
}

/// A speed-up as "N.NNx faster" or "N.NNx slower".
fn fmt_ratio(r: f64) -> String {
    if !r.is_finite() {
        "-".into()
    } else if r >= 1.0 {
        format!("{r:.2}x faster")
    } else {
        format!("{:.2}x slower", 1.0 / r)
    }
}

/// A duration per operation in ns, µs or ms.
fn fmt_ns(ns: f64) -> String {
    if !ns.is_finite() {
        "-".into()
    } else if ns >= 1e6 {
        format!("{} ms", fmt_num(ns / 1e6))
    } else if ns >= 1e3 {
        format!("{} µs", fmt_num(ns / 1e3))
    } else {
        format!("{} ns", fmt_num(ns))
    }
}

/// Prints `body` under `header`, the first two columns left-aligned, the rest right.
fn print_columns<const N: usize>(header: [&str; N], body: &[[String; N]]) {
    let mut widths = header.map(|h| h.chars().count());
    for line in body {
        for (w, cell) in widths.iter_mut().zip(line) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let print = |cells: &[String]| {
        let mut out = String::new();
        for (i, (cell, w)) in cells.iter().zip(widths).enumerate() {
            let pad = w - cell.chars().count();
            if i < 2 {
                out.push_str(cell);
                out.push_str(&" ".repeat(pad));
            } else {
                out.push_str(&" ".repeat(pad));
                out.push_str(cell);
            }
            out.push_str("  ");
        }
        println!("{}", out.trim_end());
    };
    print(&header.map(String::from));
    print(&widths.map(|w| "-".repeat(w)));
    for line in body {
        print(line);
    }
}

/// Prints the two tables, the notes and the targets.
pub(super) fn print_table(rows: &[Row], notes: &[String]) {
    let header = [
        "bench",
        "unit",
        "multiproc",
        "cpython",
        "vs cpython",
        "ceiling",
        "mp/ceiling",
        "baseline",
        "mp/baseline",
    ];
    let floor_cells = |r: &Row, kind| match r.floor_of(kind) {
        Some(f) => [fmt_num(f), format!("{:.2}", r.multiproc / f)],
        None => ["-".into(), "-".into()],
    };
    let body: Vec<[String; 9]> = rows
        .iter()
        .map(|r| {
            let [c, c_ratio] = floor_cells(r, FloorKind::Ceiling);
            let [b, b_ratio] = floor_cells(r, FloorKind::Baseline);
            [
                r.bench.to_string(),
                r.unit.to_string(),
                fmt_num(r.multiproc),
                r.cpython.map_or("-".into(), fmt_num),
                r.cpython.map_or("-".into(), |c| fmt_ratio(speedup(r, c))),
                c,
                c_ratio,
                b,
                b_ratio,
            ]
        })
        .collect();
    print_columns(header, &body);
    println!();
    let cpu_wall = |cpu: Option<f64>, wall: Option<f64>| match cpu.zip(wall).map(|(c, w)| c / w) {
        Some(x) if x.is_finite() => format!("{x:.2}"),
        _ => "-".into(),
    };
    let header = [
        "bench",
        "op",
        "mp wall/op",
        "mp CPU/op",
        "mp cpu/wall",
        "py wall/op",
        "py CPU/op",
        "py cpu/wall",
    ];
    let body: Vec<[String; 8]> = rows
        .iter()
        .map(|r| {
            let mp_wall = Some(r.multiproc_wall_ns_per_op);
            [
                r.bench.to_string(),
                op_name(r.bench).to_string(),
                fmt_ns(r.multiproc_wall_ns_per_op),
                r.multiproc_cpu_ns_per_op.map_or("-".into(), fmt_ns),
                cpu_wall(r.multiproc_cpu_ns_per_op, mp_wall),
                r.cpython_wall_ns_per_op.map_or("-".into(), fmt_ns),
                r.cpython_cpu_ns_per_op.map_or("-".into(), fmt_ns),
                cpu_wall(r.cpython_cpu_ns_per_op, r.cpython_wall_ns_per_op),
            ]
        })
        .collect();
    print_columns(header, &body);
    println!();
    println!("vs cpython: cpython/multiproc when lower is better (µs, ms), multiproc/cpython when higher is better.");
    println!("floors: a ceiling is a limit no implementation can beat, a baseline a simpler mechanism; mp/ceiling and");
    println!("mp/baseline are multiproc's figure over the floor's (--json: floor_kind, floors, and each row's notes).");
    println!("pingpong/tput baselines = plain write/read of the same bytes on the same socketpair; send_bytes ceiling =");
    println!("in-process memcpy of the same size; spawn_join baseline = exec of this binary (`multiproc --version`).");
    println!("CPU/op: user + system time of every participating process per operation; cpu/wall = CPU/op over");
    println!("wall/op (2.00: two CPUs busy throughout). Idle rows: CPU includes the pauses, wall/op excludes them.");
    println!("spawn_join_1GiB_parent: the same with 1 GiB of touched memory in the parent (CPython's default start");
    println!("method, fork, copies its page tables; multiproc's spawn starts the child with posix_spawn).");
    for note in notes {
        println!("{note}");
    }
    let targets = targets(rows);
    if !targets.is_empty() {
        println!();
        println!("targets:");
        for t in targets {
            println!("  {t}");
        }
    }
}

/// The row named `name` in this run, if it ran.
pub(super) fn find_row<'a>(rows: &'a [Row], name: &str) -> Option<&'a Row> {
    rows.iter().find(|r| r.bench == name)
}

/// How a target line starts: met or missed.
pub(super) fn mark(ok: bool) -> &'static str {
    if ok {
        "met "
    } else {
        "MISS"
    }
}

/// The targets against this run's ceilings, and on CPU cost.
fn floor_targets(rows: &[Row]) -> Vec<String> {
    let mut out = Vec::new();
    let of_ceiling = |name: &str| {
        let r = find_row(rows, name)?;
        Some(r.multiproc / r.floor_of(FloorKind::Ceiling)?)
    };
    for (name, min) in [
        ("queue_tput_1p1c_64B", 0.5),
        ("queue_tput_2p2c_64B", 0.4),
        ("queue_64MiB", 0.5),
        ("pipe_send_bytes_64MiB", 0.5),
    ] {
        if let Some(x) = of_ceiling(name) {
            out.push(format!("[{}] {name} >= {min} of its ceiling: {x:.2}", mark(x >= min)));
        }
    }
    for (name, max) in
        [("queue_pingpong", 1.5), ("queue_pingpong_idle", 1.2), ("pipe_pingpong_idle", 1.2)]
    {
        if let Some(x) = of_ceiling(name) {
            out.push(format!("[{}] {name} <= {max}x its ceiling: {x:.2}x", mark(x <= max)));
        }
    }
    for name in ["queue_tput_1p1c_64B", "queue_tput_2p2c_64B", "queue_pingpong"] {
        let Some(r) = find_row(rows, name) else { continue };
        if let Some(x) = r.multiproc_cpu_ns_per_op.map(|c| c / r.multiproc_wall_ns_per_op) {
            out.push(format!(
                "[{}] {name}: CPU per operation <= 2.2x its wall time: {x:.2}x",
                mark(x <= 2.2)
            ));
        }
    }
    for name in ["queue_pingpong_idle", "pipe_pingpong_idle"] {
        let Some(r) = find_row(rows, name) else { continue };
        let parked = r.floors.iter().find(|f| f.what == FUTEX_PARKED).and_then(|f| f.cpu_ns_per_op);
        if let (Some(mine), Some(parked)) = (r.multiproc_cpu_ns_per_op, parked) {
            out.push(format!(
                "[{}] {name}: idle waiters use no CPU (CPU per round trip within 2x of two parked \
                 futex waiters'): {:.1} µs vs {:.1} µs",
                mark(mine <= 2.0 * parked),
                mine / 1e3,
                parked / 1e3
            ));
        }
    }
    out
}

/// What one operation of row `bench` is, for the CPU table.
fn op_name(bench: &str) -> &'static str {
    let bench = bench.strip_prefix("py_").unwrap_or(bench);
    if bench.contains("pingpong") {
        "round trip"
    } else if bench.contains("join") || bench.ends_with("startup") {
        "start"
    } else if bench.starts_with("pool_task") {
        "task"
    } else if bench.starts_with("manager") {
        "set + get"
    } else if bench == "shm_fill" {
        "64 MiB fill"
    } else if bench.starts_with("value") || bench.starts_with("atomic") {
        "increment"
    } else if bench == "lock_uncontended" {
        "acquire + release"
    } else {
        "item"
    }
}

/// The performance targets of DESIGN.md and of the floors, checked against this run.
fn targets(rows: &[Row]) -> Vec<String> {
    let find = |name: &str| find_row(rows, name);
    let mut out = Vec::new();
    if let Some(r) = find("pipe_pingpong_64B") {
        if let Some(f) = r.floor_of(FloorKind::Baseline) {
            let x = r.multiproc / f;
            out.push(format!(
                "[{}] pingpong within 1.2x of the raw socketpair: {x:.2}x",
                mark(x <= 1.2)
            ));
        }
    }
    if let Some(r) = find("pipe_send_bytes_64MiB") {
        out.push(format!(
            "[{}] 64 MiB send_bytes >= 2 GB/s: {:.2} GB/s",
            mark(r.multiproc >= 2.0),
            r.multiproc
        ));
    }
    if let Some(r) = find("spawn_join") {
        out.push(format!(
            "[{}] spawn + join <= 5 ms: {:.2} ms",
            mark(r.multiproc <= 5.0),
            r.multiproc
        ));
    }
    out.extend(floor_targets(rows));
    out.extend(shared_state::targets(rows));
    out.extend(queues::targets(rows));
    out.extend(managers::targets(rows));
    out.extend(pool::targets(rows));
    out.extend(python_pkg::targets(rows));
    out.extend(redis::targets(rows));
    out
}
