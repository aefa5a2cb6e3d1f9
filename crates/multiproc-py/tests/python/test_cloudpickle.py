"""Lambdas and closures travel when cloudpickle is installed; without it, the error says
how to make them travel."""

import pickle
import sys

import pytest

import multiproc
from conftest import BOUND, run_child


def _apply_and_send(q, out):
    f, lock = q.get(timeout=BOUND)
    with lock:
        out.put(f(20))


def test_a_closure_and_a_lock_travel_together_to_a_child(ctx):
    import cloudpickle  # noqa: F401  (the test environment has it: cargo test installs it)

    k = 22

    def add_k(x):
        return x + k

    q, out = ctx.Queue(), ctx.Queue()
    q.put((add_k, ctx.Lock()))  # the lock still travels as a handle, the closure by value
    run_child(ctx, _apply_and_send, q, out)
    assert out.get(timeout=BOUND) == 42


def test_without_cloudpickle_a_lambda_fails_with_an_error_that_says_so(monkeypatch):
    monkeypatch.setitem(sys.modules, "cloudpickle", None)  # import cloudpickle fails
    q = multiproc.Queue()
    with pytest.raises(pickle.PicklingError, match="install cloudpickle"):
        q.put(lambda x: x)
    q.put("still usable")
    assert q.get(timeout=BOUND) == "still usable"
