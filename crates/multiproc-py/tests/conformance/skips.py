"""The tests of CPython's ``test._test_multiprocessing`` that the conformance runner
skips, and why. This list is the only way a test is skipped by the runner.

Each entry is ``("Class.method", reason)`` or ``("Class.method", reason, versions)``, where
``Class`` is CPython's class name (``_TestQueue``, ``TestWait``) and ``versions`` a tuple
of minor versions (``("3.11",)``) the entry applies to (all when absent). A reason says
either how our behaviour differs on purpose or which CPython internal the test reaches
into. An entry that names no test of a class being run is an error.
"""

_NO_FEEDER = (
    "put() pickles the item in the caller and raises the pickling error there (the item "
    "is not queued; our feeder thread, started only when the ring is full, moves bytes "
    "already pickled), where the stdlib's feeder thread pickles later, "
    "reports the error to Queue._on_queue_feeder_error and drops the item"
)

_COND_INTERNALS = (
    "check_invariant() reads CPython's internal semaphores Condition._sleeping_count, "
    "_woken_count and _wait_semaphore; ours has none (the core counts its waiters; "
    "tests/python/test_synchronize.py checks that notify(n) and notify_all wake exactly "
    "as many waiters, as these tests do before check_invariant)"
)

SKIPS = [
    ("_TestQueue.test_queue_feeder_donot_stop_onexc", _NO_FEEDER),
    ("_TestQueue.test_queue_feeder_on_queue_feeder_error", _NO_FEEDER),
    (
        "_TestQueue.test_closed_queue_empty_exceptions",
        "expects close() of a never-used queue to be a no-op (empty() still works) because "
        "the stdlib's close() only stops a feeder thread that was never started; ours "
        "closes the handle at once (empty() then raises OSError, as "
        "the test's second half checks)",
        ("3.13",),
    ),
    (
        "TestSimpleQueue.test_closed",
        "reads CPython's internal pipe ends SimpleQueue._reader and _writer; ours is one "
        "shared-memory ring without them",
    ),
    (
        "_TestPoolWorkerErrors.test_unpickleable_result",
        "the task returns a lambda, which this package sends by value through cloudpickle "
        "when it is installed (the test environments have it), so the result arrives; "
        "without cloudpickle the task fails with MaybeEncodingError as in the stdlib "
        "(tests/python/test_pool.py checks both)",
    ),
    ("_TestCondition.test_notify", _COND_INTERNALS),
    ("_TestCondition.test_notify_all", _COND_INTERNALS),
    ("_TestCondition.test_notify_n", _COND_INTERNALS),
]
