"""How values and objects travel: pickles of protocol 5 with the stdlib's
ForkingPickler reducers (so handles inside items reduce as they do in the stdlib), and the
rebuilding of this package's objects from a descriptor handed over with DupFd."""

import copyreg
import io
import os
import pickle
from collections import ChainMap

from multiprocessing.reduction import DupFd, ForkingPickler

PROTOCOL = 5


class _Pickler(pickle.Pickler):
    """``ForkingPickler``'s reducers: copyreg's table with those registered through
    ``multiprocessing.reduction.register`` on top, looked up live (ForkingPickler copies
    both tables for every value it pickles, which costs more than pickling a small one)."""

    dispatch_table = ChainMap(ForkingPickler._extra_reducers, copyreg.dispatch_table)


def dumps(obj):
    """The pickle of ``obj`` (a memoryview of the pickled bytes), as
    ``ForkingPickler.dumps(obj, 5)`` makes it (see ``dump_into``)."""
    buf = io.BytesIO()
    dump_into(buf, obj)
    return buf.getbuffer()


def dump_into(buf, obj):
    """Writes the pickle of ``obj`` into ``buf`` (a ``BytesIO``) after what it holds. What
    the stdlib's pickler cannot pickle (a lambda, a closure, a class defined in a
    function) is pickled by ``cloudpickle`` when it is installed (the receiver needs it
    too, to load it); without it, the error says so. A failure leaves ``buf`` as it was."""
    start = buf.tell()
    try:
        _Pickler(buf, PROTOCOL).dump(obj)
    except (pickle.PicklingError, AttributeError, TypeError) as e:
        buf.seek(start)
        buf.truncate()
        _by_value(buf, obj, e)


#: cloudpickle's Pickler with the stdlib's reducers on top, by cloudpickle's Pickler.
_CLOUD_PICKLERS = {}


def _by_value(buf, obj, error):
    """Writes ``obj`` pickled by cloudpickle (functions and classes by value, with the
    stdlib's reducers for everything else) into ``buf``; ``error`` is why the stdlib's
    pickler refused it."""
    try:
        import cloudpickle
    except ImportError:
        raise pickle.PicklingError(
            "{} (the stdlib's pickle sends functions and classes by name only; "
            "install cloudpickle to send lambdas, closures and local classes)".format(error)
        ) from error
    pickler = _CLOUD_PICKLERS.get(cloudpickle.Pickler)
    if pickler is None:
        # Made once per cloudpickle module (a test may hide the module and bring it back).
        pickler = type(
            "_CloudPickler",
            (cloudpickle.Pickler,),
            {"dispatch_table": ChainMap(ForkingPickler._extra_reducers, cloudpickle.Pickler.dispatch_table)},
        )
        _CLOUD_PICKLERS[cloudpickle.Pickler] = pickler
    start = buf.tell()
    try:
        pickler(buf, PROTOCOL).dump(obj)
    except BaseException:
        buf.seek(start)
        buf.truncate()
        raise


loads = ForkingPickler.loads


def reduce_by_fd(obj, fd, *extra):
    """``__reduce__`` for an object that the child rebuilds as ``type(obj)(*extra, fd=...)``
    from a duplicate of ``fd``, handed over as the stdlib hands over its own handles."""
    return (_rebuild, (type(obj), DupFd(fd), extra))


def _rebuild(cls, dupfd, extra):
    fd = dupfd.detach()
    try:
        return cls(*extra, fd=fd)
    finally:
        # The object holds its own duplicate.
        os.close(fd)
