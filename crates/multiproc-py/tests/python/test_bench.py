"""``python -m multiproc.bench`` runs its rows and writes what ``multiproc bench`` reads."""

import json
import subprocess
import sys


def test_bench_quick_rows_give_figures_for_both_libraries():
    out = subprocess.run(
        [sys.executable, "-m", "multiproc.bench", "--json", "--quick", "--only", "py_queue_pingpong"],
        capture_output=True, text=True, timeout=300, check=True,
    )
    rows = [json.loads(line) for line in out.stdout.splitlines()]
    assert [r["bench"] for r in rows] == ["py_queue_pingpong"]
    row = rows[0]
    assert row["multiproc"] > 0 and row["cpython"] > 0, row
    assert row["multiproc_cpu_ns_per_op"] > 0 and row["cpython_wall_ns_per_op"] > 0, row


def test_an_unknown_row_is_an_error_that_names_the_rows():
    out = subprocess.run(
        [sys.executable, "-m", "multiproc.bench", "--only", "nothing"],
        capture_output=True, text=True, timeout=60,
    )
    assert out.returncode != 0
    assert "py_queue_pingpong" in out.stderr
