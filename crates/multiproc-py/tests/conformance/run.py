"""Runs CPython's own ``test._test_multiprocessing`` against ``multiproc``.

The test module is the one that ships with the interpreter running this script (its
``Lib/test``); nothing of it is copied here. The runner points it at this package:

- the module's ``multiprocessing`` global becomes a module that answers every name with
  ``multiproc``'s object when the package has one and the stdlib's otherwise (so
  ``multiprocessing.SimpleQueue()``, ``multiprocessing.queues.Queue`` and
  ``multiprocessing.connection`` are this package's, ``multiprocessing.process`` and
  ``multiprocessing.managers`` still the stdlib's);
- ``ProcessesMixin``'s factories (``self.Queue``, ``self.Lock``...) are those of
  ``multiproc.get_context("spawn")``, and the names the module imported on its own
  (``wait``, ``shared_memory``) are this package's.

The same patching runs in every spawned child, which imports this script as
``__mp_main__`` before it unpickles its target. The classes of ``REQUIRED`` (their
"processes" variants; ``_TestContainers`` exists only with a manager) run under the spawn
start method. A test is skipped by this runner only when ``skips.py`` lists it, with a
reason. The runner prints passed/failed/skipped per class on stdout and exits 1 on any
failure or error, 2 when the interpreter lacks the test package.

Usage: ``python run.py [--timeout SECONDS] [CLASS ...]`` (default: every required class).
"""

import argparse
import faulthandler
import os
import sys
import threading
import time
import types
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))

#: CPython's class names that must pass, in the order they are run.
REQUIRED = (
    "_TestQueue",
    "TestSimpleQueue",
    "_TestLock",
    "_TestSemaphore",
    "_TestCondition",
    "_TestEvent",
    "_TestBarrier",
    "_TestValue",
    "_TestArray",
    "_TestConnection",
    "_TestListener",
    "_TestListenerClient",
    "_TestPoll",
    "TestWait",
    "_TestSharedMemory",
    "_TestPool",
    "_TestPoolWorkerErrors",
    "_TestContainers",
    "TestSyncManagerTypes",
)

#: The prefix of the reason a test skipped through ``skips.py`` carries.
LISTED = "multiproc skip list: "

#: The names of ``ProcessesMixin`` that come from the spawn context (as staticmethods).
MIXIN_FACTORIES = (
    "Process",
    "current_process",
    "parent_process",
    "active_children",
    "set_executable",
    "Pool",
    "Pipe",
    "Queue",
    "JoinableQueue",
    "Lock",
    "RLock",
    "Semaphore",
    "BoundedSemaphore",
    "Condition",
    "Event",
    "Barrier",
    "Value",
    "Array",
    "RawValue",
    "RawArray",
)


def _import_suite():
    """CPython's test module, or exit 2 (with the reason) when this interpreter has none."""
    try:
        import test._test_multiprocessing as suite
    except ImportError as e:
        sys.stderr.write(
            "CPython {} at {} has no test._test_multiprocessing ({}): the interpreter "
            "was installed without its test package\n".format(
                ".".join(map(str, sys.version_info[:3])), sys.executable, e
            )
        )
        sys.exit(2)
    return suite


class _Multiprocessing(types.ModuleType):
    """``multiprocessing`` as the test module sees it: ``multiproc``'s names first, the
    stdlib's for the rest."""

    def __init__(self, ours, stdlib):
        super().__init__("multiprocessing", "multiproc, with the stdlib for the rest")
        self._ours = ours
        self._stdlib = stdlib

    def __getattr__(self, name):
        ours = self.__dict__["_ours"]
        try:
            return getattr(ours, name)
        except AttributeError:
            return getattr(self.__dict__["_stdlib"], name)


def point_at_multiproc(suite):
    """Makes ``suite`` (CPython's test module) test ``multiproc``; idempotent."""
    import multiprocessing as stdlib

    import multiproc

    if isinstance(suite.multiprocessing, _Multiprocessing):
        return
    suite.multiprocessing = _Multiprocessing(multiproc, stdlib)
    ctx = multiproc.get_context("spawn")
    for name in MIXIN_FACTORIES:
        setattr(suite.ProcessesMixin, name, staticmethod(getattr(ctx, name)))
    suite.ProcessesMixin.connection = multiproc.connection
    suite.wait = multiproc.connection.wait
    suite.shared_memory = multiproc.shared_memory


# Runs in the parent and, on import as ``__mp_main__``, in every spawned child: the test
# classes live in this module, where a child unpickling a target finds them.
SUITE = _import_suite()
point_at_multiproc(SUITE)
SUITE.install_tests_in_module_dict(globals(), "spawn")


def _version_matches(versions):
    """Whether a skip entry's ``versions`` (None: all) includes this interpreter."""
    return versions is None or "%d.%d" % sys.version_info[:2] in versions


def load_skips():
    """``{"Class.method": reason}`` for this interpreter, from ``skips.py``."""
    sys.path.insert(0, HERE)
    try:
        import skips
    finally:
        sys.path.remove(HERE)
    table = {}
    for entry in skips.SKIPS:
        test, reason = entry[0], entry[1]
        versions = entry[2] if len(entry) > 2 else None
        if not reason.strip():
            raise SystemExit("skips.py: {} has no reason".format(test))
        if _version_matches(versions):
            table[test] = reason
    return table


def build_classes(names):
    """``[(CPython's class name, generated TestCase class)]`` for ``names``, under spawn."""
    globs = globals()
    classes = []
    for name in names:
        if name.startswith("_"):
            candidates = ["WithProcesses" + name[1:], "WithManager" + name[1:]]
        else:
            candidates = [name]
        found = next((globs[c] for c in candidates if c in globs), None)
        if found is None:
            raise SystemExit("no test class {} in {}".format(name, SUITE.__file__))
        classes.append((name, found))
    return classes


def apply_skips(classes, skips):
    """Replaces each listed test with one that skips with its reason; the entries that
    named no test of these classes."""
    unused = dict(skips)
    for name, cls in classes:
        for test, reason in skips.items():
            owner, _, method = test.partition(".")
            if owner != name:
                continue
            if not callable(getattr(cls, method, None)):
                continue
            unused.pop(test)

            def skipped(self, _reason=reason):
                self.skipTest(LISTED + _reason)

            skipped.__name__ = method
            setattr(cls, method, skipped)
    return unused


def _expired(test, timeout):
    """A test outlived its bound: writes every thread's stack, ends the children this
    process started (so none is left holding the output or a lock), and exits with 1."""
    import multiprocessing

    sys.stderr.write("\n{} still running after {} s: giving up\n".format(test, timeout))
    faulthandler.dump_traceback(file=sys.stderr, all_threads=True)
    for child in multiprocessing.active_children():
        child.kill()
    sys.stderr.flush()
    sys.stdout.flush()
    os._exit(1)


class _Counts(unittest.TextTestResult):
    """A result that counts outcomes per class and bounds every test (see ``_expired``)."""

    def __init__(self, *args, timeout, **kwargs):
        super().__init__(*args, **kwargs)
        self.timeout = timeout
        self.per_class = {}
        self._watchdog = None

    def _row(self, test):
        return self.per_class.setdefault(
            type(test).__name__,
            {"passed": 0, "failed": 0, "listed": 0, "cpython": 0, "seconds": 0.0},
        )

    def startTest(self, test):
        self._watchdog = threading.Timer(self.timeout, _expired, (test, self.timeout))
        self._watchdog.daemon = True
        self._watchdog.start()
        self._started = time.monotonic()
        super().startTest(test)

    def stopTest(self, test):
        self._watchdog.cancel()
        self._watchdog.join()
        self._row(test)["seconds"] += time.monotonic() - self._started
        super().stopTest(test)

    def addSuccess(self, test):
        super().addSuccess(test)
        self._row(test)["passed"] += 1

    def addFailure(self, test, err):
        super().addFailure(test, err)
        self._row(test)["failed"] += 1

    def addError(self, test, err):
        super().addError(test, err)
        # setUpClass/tearDownClass errors arrive as _ErrorHolder: count them to the class.
        self._row(test)["failed"] += 1

    def addSubTest(self, test, subtest, err):
        super().addSubTest(test, subtest, err)
        if err is not None:
            self._row(test)["failed"] += 1

    def addSkip(self, test, reason):
        super().addSkip(test, reason)
        self._row(test)["listed" if reason.startswith(LISTED) else "cpython"] += 1

    def addExpectedFailure(self, test, err):
        super().addExpectedFailure(test, err)
        self._row(test)["passed"] += 1

    def addUnexpectedSuccess(self, test):
        super().addUnexpectedSuccess(test)
        self._row(test)["failed"] += 1


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("classes", nargs="*", help="CPython's class names (default: all)")
    parser.add_argument("--timeout", type=float, default=300.0, help="bound on one test")
    parser.add_argument("-v", "--verbose", action="store_true", help="one line per test")
    parser.add_argument(
        "-k", dest="patterns", action="append", help="only the tests matching this pattern"
    )
    args = parser.parse_args()
    names = args.classes or list(REQUIRED)

    started = time.monotonic()
    skips = load_skips()
    classes = build_classes(names)
    unused = apply_skips(classes, skips)
    unused = {t: r for t, r in unused.items() if t.partition(".")[0] in names}
    if unused:
        for test in sorted(unused):
            sys.stderr.write("skips.py names no such test: {}\n".format(test))
        return 1

    loader = unittest.TestLoader()
    if args.patterns:
        loader.testNamePatterns = ["*{}*".format(p) if "*" not in p else p for p in args.patterns]
    suite = unittest.TestSuite(loader.loadTestsFromTestCase(cls) for _, cls in classes)
    runner = unittest.TextTestRunner(
        stream=sys.stderr,
        verbosity=2 if args.verbose else 1,
        resultclass=lambda *a, **k: _Counts(*a, timeout=args.timeout, **k),
    )
    setUpModule()  # noqa: F821  (installed by install_tests_in_module_dict)
    try:
        result = runner.run(suite)
    finally:
        tearDownModule()  # noqa: F821
    elapsed = time.monotonic() - started

    version = ".".join(map(str, sys.version_info[:3]))
    header = "{:<36} {:>6} {:>6} {:>8} {:>9} {:>8}".format(
        "class (CPython {}, spawn)".format(version),
        "passed",
        "failed",
        "skip:list",
        "skip:cpy",
        "seconds",
    )
    print(header)
    print("-" * len(header))
    totals = {"passed": 0, "failed": 0, "listed": 0, "cpython": 0}
    by_cpython_name = {cls.__name__: name for name, cls in classes}
    for name, cls in classes:
        row = result.per_class.get(cls.__name__)
        if row is None:
            row = {"passed": 0, "failed": 0, "listed": 0, "cpython": 0, "seconds": 0.0}
        for k in totals:
            totals[k] += row[k]
        print(
            "{:<36} {:>6} {:>6} {:>8} {:>9} {:>8.1f}".format(
                name, row["passed"], row["failed"], row["listed"], row["cpython"], row["seconds"]
            )
        )
    # Errors outside any test (setUpModule, tearDownClass) land on other names.
    stray = sum(
        row["failed"] for key, row in result.per_class.items() if key not in by_cpython_name
    )
    print("-" * len(header))
    print(
        "{:<36} {:>6} {:>6} {:>8} {:>9} {:>8.1f}".format(
            "total", totals["passed"], totals["failed"] + stray, totals["listed"],
            totals["cpython"], elapsed,
        )
    )
    if stray:
        print("errors outside the classes' tests: {}".format(stray))
    sys.stdout.flush()
    return 0 if result.wasSuccessful() and result.testsRun > 0 else 1


if __name__ == "__main__":
    sys.exit(main())
