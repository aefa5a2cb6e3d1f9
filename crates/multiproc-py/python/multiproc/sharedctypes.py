"""Value, Array, RawValue and RawArray of numbers on the Rust core's shared cells.

The type codes ``b B h H i I l L q Q f d ?`` and ``c`` (single bytes), and the ctypes
types of those codes (``ctypes.c_int``, ``c_double``, ``c_char``, ...), are this
package's. Every other type (``u``, ``c_wchar``, structures, pointers) is still the
stdlib's ``multiprocessing.sharedctypes``, with the stdlib's own locks.

Differences from the stdlib: a raw value or array is an object of this module with a
``value`` attribute (and indexing, for an array), not a ctypes instance; storing a
number that does not fit its type raises ``OverflowError`` instead of truncating it."""

import ctypes
import multiprocessing.sharedctypes as _stdlib

from . import _native
from ._pickle import reduce_by_fd

__all__ = ["RawValue", "RawArray", "Value", "Array", "Synchronized", "SynchronizedArray"]

#: The codes the core stores natively.
_CORE = frozenset("bBhHiIqQfd?")
#: The platform's C long, as a core code.
_LONG = {8: ("q", "Q"), 4: ("i", "I")}[ctypes.sizeof(ctypes.c_long)]


def _core_code(typecode_or_type):
    """The core's type code for ``typecode_or_type`` ('c' for single bytes), or None when
    the core does not store that type."""
    code = typecode_or_type
    if not isinstance(code, str):
        code = getattr(typecode_or_type, "_type_", None)
        if not isinstance(code, str) or not isinstance(typecode_or_type, type):
            return None
    if code == "l":
        return _LONG[0]
    if code == "L":
        return _LONG[1]
    if code in _CORE or code == "c":
        return code
    return None


class _Reduce:
    __slots__ = ()

    def __reduce__(self):
        return reduce_by_fd(self, self.export_fd(), self.typecode)


class _NumberValue(_Reduce, _native.RawValue):
    """A shared number (``RawValue``): read and write ``.value``."""

    __slots__ = ()

    def __repr__(self):
        return "<{} {!r} typecode={!r}>".format(type(self).__name__, self.value, self.typecode)


class _CharValue(_NumberValue):
    """A shared single byte (type code ``c``): ``.value`` is a bytes object of length 1."""

    __slots__ = ()

    @property
    def value(self):
        return bytes((_native.RawValue.value.__get__(self),))

    @value.setter
    def value(self, b):
        _native.RawValue.value.__set__(self, _byte(b))


def _byte(b):
    if isinstance(b, (bytes, bytearray)) and len(b) == 1:
        return b[0]
    if isinstance(b, int):
        return b
    raise TypeError("one character bytes, bytearray or integer expected")


class _NumberArray(_Reduce, _native.RawArray):
    """A shared array of numbers (``RawArray``): indexing, slices, ``len``, iteration."""

    __slots__ = ()

    def _out(self, x):
        return x

    def _in(self, x):
        return x

    def __getitem__(self, i):
        if isinstance(i, slice):
            start, stop, step = i.indices(len(self))
            if step == 1:
                return [self._out(x) for x in self.get_range(start, max(start, stop))]
            return [self._out(self.get_item(j)) for j in range(start, stop, step)]
        return self._out(self.get_item(i.__index__()))

    def __setitem__(self, i, value):
        if isinstance(i, slice):
            start, stop, step = i.indices(len(self))
            indices = range(start, stop, step)
            values = [self._in(v) for v in value]
            if len(values) != len(indices):
                raise ValueError("Can only assign sequence of same size")
            if step == 1:
                self.set_range(start, values)
            else:
                for j, v in zip(indices, values):
                    self.set_item(j, v)
            return
        self.set_item(i.__index__(), self._in(value))

    def __iter__(self):
        return iter(_NumberArray.__getitem__(self, slice(None)))

    def __repr__(self):
        return "<{} {!r} typecode={!r}>".format(type(self).__name__, self[:], self.typecode)


class _CharArray(_NumberArray):
    """A shared array of bytes (type code ``c``): items are bytes of length 1; ``value``
    is the bytes up to the first NUL, ``raw`` all of them."""

    __slots__ = ()

    def _out(self, x):
        return bytes((x,))

    def _in(self, x):
        return _byte(x)

    def __getitem__(self, i):
        got = _NumberArray.__getitem__(self, i)
        return b"".join(got) if isinstance(i, slice) else got

    @property
    def raw(self):
        return bytes(self.get_range(0, len(self)))

    @raw.setter
    def raw(self, b):
        if len(b) > len(self):
            raise ValueError("byte string too long")
        self.set_range(0, list(b))

    @property
    def value(self):
        return self.raw.split(b"\0", 1)[0]

    @value.setter
    def value(self, b):
        if len(b) > len(self):
            raise ValueError("byte string too long")
        self.set_range(0, list(b) + ([0] if len(b) < len(self) else []))


def RawValue(typecode_or_type, *args):
    """A shared number without a lock (``multiprocessing.RawValue``)."""
    code = _core_code(typecode_or_type)
    if code is None:
        return _stdlib.RawValue(typecode_or_type, *args)
    if len(args) > 1:
        raise TypeError("RawValue takes one initial value at most")
    if code == "c":
        return _CharValue("B", _byte(args[0]) if args else 0)
    init = args[0] if args else 0
    if code == "?":
        init = bool(init)
    return _NumberValue(code, init)


def RawArray(typecode_or_type, size_or_initializer):
    """A shared array without a lock (``multiprocessing.RawArray``)."""
    code = _core_code(typecode_or_type)
    if code is None:
        return _stdlib.RawArray(typecode_or_type, size_or_initializer)
    init = size_or_initializer
    if isinstance(init, int):
        return (_CharArray("B", init) if code == "c" else _NumberArray(code, init))
    if code == "c":
        return _CharArray("B", [_byte(b) if not isinstance(b, int) else b for b in init])
    if code == "?":
        init = [bool(v) for v in init]
    return _NumberArray(code, list(init))


class Synchronized:
    """A raw value with a lock (``multiprocessing.Value``): ``value`` reads and writes
    under the lock; ``get_lock()``, ``get_obj()``, and ``with`` holds the lock."""

    def __init__(self, obj, lock):
        self._obj = obj
        self._lock = lock
        self.acquire = lock.acquire
        self.release = lock.release

    def __enter__(self):
        return self._lock.__enter__()

    def __exit__(self, *args):
        return self._lock.__exit__(*args)

    def get_obj(self):
        return self._obj

    def get_lock(self):
        return self._lock

    @property
    def value(self):
        with self._lock:
            return self._obj.value

    @value.setter
    def value(self, v):
        with self._lock:
            self._obj.value = v

    def __reduce__(self):
        return (type(self), (self._obj, self._lock))

    def __repr__(self):
        return "<{} wrapper for {!r}>".format(type(self).__name__, self._obj)


class SynchronizedArray(Synchronized):
    """A raw array with a lock (``multiprocessing.Array``)."""

    def __len__(self):
        return len(self._obj)

    def __getitem__(self, i):
        with self._lock:
            return self._obj[i]

    def __setitem__(self, i, value):
        with self._lock:
            self._obj[i] = value

    def __iter__(self):
        with self._lock:
            return iter(list(self._obj))

    @property
    def raw(self):
        with self._lock:
            return self._obj.raw

    @raw.setter
    def raw(self, b):
        with self._lock:
            self._obj.raw = b


def _locked(obj, wrapper, lock, ctx):
    if lock is False:
        return obj
    if lock in (True, None):
        from .synchronize import RLock

        lock = RLock()
    if not hasattr(lock, "acquire"):
        raise AttributeError("%r has no method 'acquire'" % lock)
    return wrapper(obj, lock)


def Value(typecode_or_type, *args, lock=True, ctx=None):
    """A shared number with a lock (``multiprocessing.Value``)."""
    if _core_code(typecode_or_type) is None:
        return _stdlib.Value(typecode_or_type, *args, lock=lock, ctx=_stdlib_ctx(ctx))
    return _locked(RawValue(typecode_or_type, *args), Synchronized, lock, ctx)


def Array(typecode_or_type, size_or_initializer, *, lock=True, ctx=None):
    """A shared array with a lock (``multiprocessing.Array``)."""
    if _core_code(typecode_or_type) is None:
        return _stdlib.Array(typecode_or_type, size_or_initializer, lock=lock, ctx=_stdlib_ctx(ctx))
    return _locked(RawArray(typecode_or_type, size_or_initializer), SynchronizedArray, lock, ctx)


def _stdlib_ctx(ctx):
    """The stdlib's context matching ``ctx`` (for the types still the stdlib's)."""
    if ctx is None or not hasattr(ctx, "_stdlib_context"):
        return ctx
    return ctx._stdlib_context()
