"""The package's names: ours where the Rust core does the work, the stdlib's elsewhere,
and the list of which is which."""

import multiprocessing

import multiproc
from multiproc import context, queues, synchronize
from multiproc.connection import Connection


def test_our_names_are_ours():
    assert isinstance(multiproc.Queue(), queues.Queue)
    assert isinstance(multiproc.SimpleQueue(), queues.SimpleQueue)
    assert isinstance(multiproc.JoinableQueue(), queues.JoinableQueue)
    assert all(isinstance(c, Connection) for c in multiproc.Pipe())
    assert isinstance(multiproc.Lock(), synchronize.Lock)
    assert isinstance(multiproc.RLock(), synchronize.RLock)
    assert isinstance(multiproc.Semaphore(), synchronize.Semaphore)
    assert isinstance(multiproc.BoundedSemaphore(), synchronize.BoundedSemaphore)
    assert isinstance(multiproc.Event(), synchronize.Event)


def test_every_public_stdlib_name_is_there_and_listed():
    listed = set(context.OURS) | set(context.STDLIB_FOR_NOW) | set(context.STDLIB_BY_DESIGN)
    for name in ("Queue", "Pool", "Manager", "Value", "Condition", "Barrier"):
        assert name in listed
    for name in multiprocessing.__all__:
        assert hasattr(multiproc, name), name


def test_process_machinery_is_the_stdlibs():
    assert multiproc.Process is multiprocessing.Process
    assert multiproc.current_process() is multiprocessing.current_process()
    assert multiproc.cpu_count() == multiprocessing.cpu_count()
    assert multiproc.get_start_method() == multiprocessing.get_start_method()
    assert multiproc.active_children() == multiprocessing.active_children()


def test_get_context_returns_ours_for_each_method():
    for method in ("spawn", "fork", "forkserver"):
        ctx = multiproc.get_context(method)
        assert isinstance(ctx, multiprocessing.context.BaseContext)
        assert ctx.get_start_method() == method
        assert isinstance(ctx.Lock(), synchronize.Lock)
    assert isinstance(multiproc.get_context(), multiprocessing.context.BaseContext)


def test_unknown_start_method_is_a_value_error():
    import pytest

    with pytest.raises(ValueError):
        multiproc.get_context("teleport")
