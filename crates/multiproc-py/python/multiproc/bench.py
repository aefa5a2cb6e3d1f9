"""``python -m multiproc.bench``: this package against the stdlib's ``multiprocessing``
(and faster-fifo's Queue where it is installed), from Python, in the same run.

Each repetition measures this package, then the stdlib, then faster-fifo, so that drift in
the machine's speed hits all alike; the figures are medians over the repetitions. Every
row also reports wall and CPU time (user + system) per operation: each worker process
counts its own CPU over its timed loop and the waiting parent counts its own, so
spinning shows.

``--json`` prints one JSON object per row with the fields of ``multiproc bench --json``
(``multiproc``, ``cpython`` for the stdlib, ``floors`` with faster-fifo as a ``peer``);
``multiproc bench`` runs this module and shows the rows under its own. Without
``--json``, a table::

    python -m multiproc.bench --quick
    python -m multiproc.bench --only py_queue --reps 3 --json
"""

import argparse
import json
import multiprocessing as _stdlib
import statistics
import sys
import time

import multiproc

#: The rows: name, unit, which way is better, workload, its size (full run).
ROWS = [
    ("py_queue_tput_1p1c_64B", "msg/s", "higher", "tput", dict(n=100_000, item="bytes", producers=1)),
    ("py_queue_tput_2p2c_64B", "msg/s", "higher", "tput", dict(n=100_000, item="bytes", producers=2)),
    ("py_queue_tput_1p1c_tuple", "msg/s", "higher", "tput", dict(n=100_000, item="tuple", producers=1)),
    ("py_queue_tput_2p2c_tuple", "msg/s", "higher", "tput", dict(n=100_000, item="tuple", producers=2)),
    ("py_queue_pingpong", "µs", "lower", "queue_pingpong", dict(n=10_000)),
    ("py_pipe_pingpong", "µs", "lower", "pipe_pingpong", dict(n=10_000)),
    ("py_value_incr_locked_2proc", "incr/s", "higher", "value_incr", dict(n=100_000)),
    ("py_manager_dict_op", "µs", "lower", "manager_dict", dict(n=5_000)),
    ("py_pool_task_chunk1", "µs", "lower", "pool_map", dict(n=20_000, chunksize=1)),
    ("py_pool_task_default_chunk", "µs", "lower", "pool_map", dict(n=200_000, chunksize=None)),
    ("py_pool_startup", "ms", "lower", "pool_startup", dict(n=5)),
    ("py_queue_numpy_64MiB", "GB/s", "higher", "numpy", dict(n=8)),
]

#: Processes of a Pool row.
POOL_PROCESSES = 2


class Lib:
    """One implementation under test: a context of the ``fork`` start method (start-up is
    not timed, except in the Pool start-up row) and its Queue class."""

    def __init__(self, name, ctx, queue=None):
        self.name = name
        self.ctx = ctx
        self.queue = queue or ctx.Queue


def _faster_fifo():
    try:
        from faster_fifo import Queue as FasterFifo
    except ImportError:
        return None
    import faster_fifo_reduction  # noqa: F401  (makes its queues pass to children)

    def queue(maxsize=0):
        return FasterFifo(max_size_bytes=64 << 20)

    return Lib("faster_fifo", _stdlib.get_context("fork"), queue)


def _cpu():
    return time.process_time()


def _item(kind, i):
    return b"x" * 64 if kind == "bytes" else (i, "eight ch", 1.5)


def _producer(q, n, kind, go, report):
    go.wait()
    cpu = _cpu()
    for i in range(n):
        q.put(_item(kind, i))
    report.send(_cpu() - cpu)


def _consumer(q, n, go, report):
    go.wait()
    cpu = _cpu()
    for _ in range(n):
        q.get()
    report.send(_cpu() - cpu)


def _start(ctx, target, args):
    p = ctx.Process(target=target, args=args)
    p.start()
    return p


def tput(lib, n, item, producers):
    """Items/s from ``producers`` producers to as many consumers (1→1: the parent is the
    consumer's peer only as a waiter)."""
    ctx, q = lib.ctx, lib.queue()
    go = ctx.Event()
    reader, writer = _stdlib.Pipe(duplex=False)
    each = n // producers
    procs = [_start(ctx, _producer, (q, each, item, go, writer)) for _ in range(producers)]
    procs += [_start(ctx, _consumer, (q, each, go, writer)) for _ in range(producers)]
    cpu, t = _cpu(), time.perf_counter()
    go.set()
    workers = sum(reader.recv() for _ in procs)
    wall = time.perf_counter() - t
    for p in procs:
        p.join()
    return each * producers / wall, each * producers, wall, workers + _cpu() - cpu


def _echo(a, b, n, report):
    cpu = _cpu()
    for _ in range(n):
        b.put(a.get())
    report.send(_cpu() - cpu)


def _pingpong(ctx, echo, args, send, receive, n):
    """µs per round trip of 64 bytes through ``send`` and ``receive``, answered by
    ``echo(*args, rounds, report)`` in a child; after 100 untimed ones."""
    reader, writer = _stdlib.Pipe(duplex=False)
    warm = 100
    p = _start(ctx, echo, args + (n + warm, writer))
    msg = b"x" * 64
    for _ in range(warm):
        send(msg)
        receive()
    cpu, t = _cpu(), time.perf_counter()
    for _ in range(n):
        send(msg)
        receive()
    wall = time.perf_counter() - t
    child = reader.recv()
    p.join()
    return wall / n * 1e6, n, wall, child + _cpu() - cpu


def queue_pingpong(lib, n):
    a, b = lib.queue(), lib.queue()
    return _pingpong(lib.ctx, _echo, (a, b), a.put, b.get, n)


def _pipe_echo(conn, n, report):
    cpu = _cpu()
    for _ in range(n):
        conn.send_bytes(conn.recv_bytes())
    report.send(_cpu() - cpu)


def pipe_pingpong(lib, n):
    mine, theirs = lib.ctx.Pipe()
    return _pingpong(lib.ctx, _pipe_echo, (theirs,), mine.send_bytes, mine.recv_bytes, n)


def _incr(value, n, go, report):
    go.wait()
    cpu = _cpu()
    lock = value.get_lock()
    for _ in range(n):
        with lock:
            value.value += 1
    report.send(_cpu() - cpu)


def value_incr(lib, n):
    ctx = lib.ctx
    value = ctx.Value("i", 0)
    go = ctx.Event()
    reader, writer = _stdlib.Pipe(duplex=False)
    procs = [_start(ctx, _incr, (value, n, go, writer)) for _ in range(2)]
    cpu, t = _cpu(), time.perf_counter()
    go.set()
    workers = reader.recv() + reader.recv()
    wall = time.perf_counter() - t
    for p in procs:
        p.join()
    if value.value != 2 * n:
        raise RuntimeError("{}: {} increments counted, not {}".format(lib.name, value.value, 2 * n))
    return 2 * n / wall, 2 * n, wall, workers + _cpu() - cpu


def manager_dict(lib, n):
    with lib.ctx.Manager() as m:
        d = m.dict()
        d["k"] = 0
        cpu, t = _cpu(), time.perf_counter()
        for i in range(n):
            d["k"] = i
            d["k"]
        wall = time.perf_counter() - t
        # The server's CPU is not counted: this row's CPU column is the client's alone.
        return wall / n * 1e6, n, wall, _cpu() - cpu


def _square(x):
    return x * x


def pool_map(lib, n, chunksize):
    with lib.ctx.Pool(POOL_PROCESSES) as pool:
        pool.map(_square, range(100))
        cpu, t = _cpu(), time.perf_counter()
        out = pool.map(_square, range(n), chunksize=chunksize)
        wall = time.perf_counter() - t
        if out[-1] != (n - 1) ** 2:
            raise RuntimeError("{}: wrong result".format(lib.name))
        # The workers' CPU is not counted: this row's CPU column is the parent's alone.
        return wall / n * 1e6, n, wall, _cpu() - cpu


def pool_startup(lib, n):
    cpu, t = _cpu(), time.perf_counter()
    for _ in range(n):
        with lib.ctx.Pool(POOL_PROCESSES) as pool:
            pool.apply(_square, (3,))
    wall = time.perf_counter() - t
    return wall / n * 1e3, n, wall, _cpu() - cpu


def _arrays(q, n, report):
    import numpy

    a = numpy.ones(64 << 17, dtype=numpy.float64)  # 64 MiB
    cpu = _cpu()
    for _ in range(n):
        q.put(a)
    report.send(_cpu() - cpu)


def numpy(lib, n):
    import numpy as _np  # noqa: F401  (the row needs it; absent: skipped)

    ctx, q = lib.ctx, lib.queue()
    reader, writer = _stdlib.Pipe(duplex=False)
    p = _start(ctx, _arrays, (q, n + 1, writer))
    q.get()  # the first one warms both sides up
    cpu, t = _cpu(), time.perf_counter()
    total = 0
    for _ in range(n):
        total += q.get().nbytes
    wall = time.perf_counter() - t
    child = reader.recv()
    p.join()
    return total / wall / 1e9, n, wall, child + _cpu() - cpu


WORK = {
    "tput": tput,
    "queue_pingpong": queue_pingpong,
    "pipe_pingpong": pipe_pingpong,
    "value_incr": value_incr,
    "manager_dict": manager_dict,
    "pool_map": pool_map,
    "pool_startup": pool_startup,
    "numpy": numpy,
}

#: Rows that faster-fifo takes part in (its Queue only).
FASTER_FIFO_ROWS = ("tput", "queue_pingpong", "numpy")


def _scaled(size, quick):
    size = dict(size)
    if quick:
        size["n"] = max(1, size["n"] // 10)
    return size


def _median(values):
    return statistics.median(values) if values else None


def _summary(samples):
    """(figure, wall ns/op, CPU ns/op) medians of (figure, ops, wall, cpu) samples."""
    if not samples:
        return None, None, None
    return (
        _median([s[0] for s in samples]),
        _median([s[2] / s[1] * 1e9 for s in samples]),
        _median([s[3] / s[1] * 1e9 for s in samples]),
    )


def run_row(row, reps, quick, libs):
    name, unit, better, work, size = row
    size = _scaled(size, quick)
    notes = []
    if work == "numpy":
        try:
            import numpy as _np  # noqa: F401
        except ImportError:
            return None, "{}: skipped (NumPy is not installed)".format(name)
    samples = {lib.name: [] for lib in libs}
    for _ in range(reps):
        for lib in libs:
            if lib.name == "faster_fifo" and work not in FASTER_FIFO_ROWS:
                continue
            samples[lib.name].append(WORK[work](lib, **size))
    ours, ours_wall, ours_cpu = _summary(samples["multiproc"])
    theirs, theirs_wall, theirs_cpu = _summary(samples["stdlib"])
    floors = []
    peer = _summary(samples.get("faster_fifo", []))
    if peer[0] is not None:
        floors.append(dict(kind="peer", value=peer[0], what="faster-fifo's Queue, same workload",
                           cpu_ns_per_op=peer[2]))
        notes.append("peer: faster-fifo's Queue, same workload")
    if work in ("manager_dict", "pool_map", "pool_startup"):
        notes.append("CPU: the parent only (the server's or workers' not counted)")
    else:
        notes.append("CPU: every worker (each its own over its loop) + the waiting parent")
    notes.append("Python {}, start method 'fork'".format(sys.version.split()[0]))
    return dict(
        bench=name, unit=unit, better=better, multiproc=ours, cpython=theirs,
        floor=floors[0]["value"] if floors else None,
        floor_kind=floors[0]["kind"] if floors else None, floors=floors,
        multiproc_wall_ns_per_op=ours_wall, multiproc_cpu_ns_per_op=ours_cpu,
        cpython_wall_ns_per_op=theirs_wall, cpython_cpu_ns_per_op=theirs_cpu, notes=notes,
    ), None


def _fmt(v):
    if v is None:
        return "-"
    if v >= 1e6:
        return "{:.2f}M".format(v / 1e6)
    if v >= 100:
        return "{:.0f}".format(v)
    return "{:.3g}".format(v)


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m multiproc.bench", description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", action="store_true", help="one JSON object per row")
    parser.add_argument("--only", default="", help="only the rows whose name starts with this")
    parser.add_argument("--quick", action="store_true", help="one short repetition (noisy)")
    parser.add_argument("--reps", type=int, default=None, help="repetitions (default 5, 1 with --quick)")
    args = parser.parse_args(argv)
    reps = args.reps or (1 if args.quick else 5)
    if reps < 1:
        parser.error("--reps must be at least 1")
    libs = [Lib("multiproc", multiproc.get_context("fork")), Lib("stdlib", _stdlib.get_context("fork"))]
    fifo = _faster_fifo()
    if fifo is not None:
        libs.append(fifo)
    rows = [r for r in ROWS if r[0].startswith(args.only)]
    if not rows:
        parser.error("no row name starts with {!r}; the rows are: {}".format(
            args.only, ", ".join(r[0] for r in ROWS)))
    table = []
    for row in rows:
        print("running {}…".format(row[0]), file=sys.stderr, flush=True)
        result, skipped = run_row(row, reps, args.quick, libs)
        if skipped:
            print(skipped, file=sys.stderr, flush=True)
            if args.json:
                print(json.dumps(dict(bench=row[0], skipped=skipped)), flush=True)
            continue
        if args.json:
            print(json.dumps(result), flush=True)
        table.append(result)
    if not args.json:
        print("{:<28} {:>7} {:>10} {:>10} {:>9} {:>12}".format(
            "bench", "unit", "multiproc", "stdlib", "vs stdlib", "faster-fifo"))
        for r in table:
            ratio = "-"
            if r["multiproc"] and r["cpython"]:
                x = r["multiproc"] / r["cpython"] if r["better"] == "higher" else r["cpython"] / r["multiproc"]
                ratio = "{:.2f}x".format(x)
            print("{:<28} {:>7} {:>10} {:>10} {:>9} {:>12}".format(
                r["bench"], r["unit"], _fmt(r["multiproc"]), _fmt(r["cpython"]), ratio, _fmt(r["floor"])))
    if fifo is None:
        print("faster-fifo: not installed (pip install faster-fifo): no peer figures", file=sys.stderr)


if __name__ == "__main__":
    main()
