"""Still the stdlib's ``multiprocessing.shared_memory``, re-exported until the Rust core's
SharedMemory and ShareableList are bound here."""

from multiprocessing.shared_memory import *  # noqa: F401,F403  (still the stdlib's)
from multiprocessing.shared_memory import __all__  # noqa: F401
