"""RQ's side of `multiproc bench`'s redis_pool_* rows: trivial jobs through 2 RQ workers.

Run as `python3 multiproc_bench_rq.py URL N QUEUE` with this file's folder on PYTHONPATH (the
workers import `inc` from it). Starts 2 workers (RQ's default Worker: a forked work horse per
job) on the queue QUEUE, waits until both are registered, then times enqueue_many of N jobs
`inc(i)` until all N are finished, and prints `<seconds> <cpu seconds>` (this process, the
workers and their reaped work horses). Exits 3 when `import rq` fails.
"""

import os
import subprocess
import sys
import time

try:
    from redis import Redis
    from rq import Queue, Worker
    from rq.registry import FailedJobRegistry, FinishedJobRegistry
except ImportError:
    print("no rq")
    sys.exit(3)

DEADLINE = 300.0


def inc(x):
    return x + 1


def cpu_of(pid):
    """utime + stime + cutime + cstime of `pid`, in seconds (/proc/<pid>/stat)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    ticks = sum(int(x) for x in fields[11:15])
    return ticks / os.sysconf("SC_CLK_TCK")


def main():
    url, n, name = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    # The jobs must name the function by its module, not `__main__`, for the workers.
    from multiproc_bench_rq import inc
    conn = Redis.from_url(url)
    queue = Queue(name, connection=conn)
    worker_code = (
        "import sys; from redis import Redis; from rq import Queue, Worker; "
        "c = Redis.from_url(sys.argv[1]); "
        "Worker([Queue(sys.argv[2], connection=c)], connection=c).work(logging_level='ERROR')"
    )
    workers = [
        subprocess.Popen(
            [sys.executable, "-c", worker_code, url, name],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for _ in range(2)
    ]
    try:
        end = time.monotonic() + 60
        while len(Worker.all(queue=queue)) < 2:
            if time.monotonic() > end:
                raise SystemExit("the RQ workers did not register within 60 s")
            if any(w.poll() is not None for w in workers):
                raise SystemExit("an RQ worker exited")
            time.sleep(0.01)
        finished = FinishedJobRegistry(queue=queue)
        failed = FailedJobRegistry(queue=queue)
        cpu0 = os.times()
        cpu0 = cpu0.user + cpu0.system + sum(cpu_of(w.pid) for w in workers)
        t0 = time.perf_counter()
        queue.enqueue_many([Queue.prepare_data(inc, (i,)) for i in range(n)])
        end = time.monotonic() + DEADLINE
        while finished.count + failed.count < n:
            if time.monotonic() > end:
                raise SystemExit(f"{finished.count} of {n} RQ jobs finished in {DEADLINE} s")
            time.sleep(0.005)
        secs = time.perf_counter() - t0
        cpu1 = os.times()
        cpu1 = cpu1.user + cpu1.system + sum(cpu_of(w.pid) for w in workers)
        if failed.count:
            raise SystemExit(f"{failed.count} RQ jobs failed")
        print(f"{secs} {cpu1 - cpu0}")
    finally:
        for w in workers:
            w.kill()
            w.wait()


if __name__ == "__main__":
    main()
