//! Shared ctypes objects: `Value` and `Array` (Python's `multiprocessing.sharedctypes`).
