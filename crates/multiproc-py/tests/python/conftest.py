"""Shared fixtures: every start method, and children that never outlive a test."""

import multiprocessing

import pytest

import multiproc

START_METHODS = ["spawn", "fork", "forkserver"]

#: The longest a test waits for a child or an item before it fails.
BOUND = 60.0


@pytest.fixture(params=START_METHODS)
def ctx(request):
    """This package's context for each start method; children are reaped afterwards."""
    context = multiproc.get_context(request.param)
    yield context
    for child in multiprocessing.active_children():
        child.terminate()
        child.join(BOUND)


def run_child(ctx, target, *args):
    """Runs ``target(*args)`` in a child of ``ctx`` and checks it exited with 0."""
    p = ctx.Process(target=target, args=args)
    p.start()
    p.join(BOUND)
    if p.exitcode is None:
        p.kill()
        p.join(BOUND)
        pytest.fail("child still running after {} s".format(BOUND))
    assert p.exitcode == 0, "child exit code {}".format(p.exitcode)
