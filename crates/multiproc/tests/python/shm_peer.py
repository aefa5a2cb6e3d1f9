"""CPython's side of the shared memory interop tests (tests/shared_memory.rs); stdlib only.

Usage: python3 shm_peer.py COMMAND [ARGS]. It talks in lines: it prints what it made or
read, and takes requests on stdin. List items travel one per line, tagged:
`int 5`, `float 2.5` (repr), `bool True`, `str <utf-8 hex>`, `bytes <hex>`, `none`.

A process that merely attaches to a block must not unlink it when it exits, but CPython's
resource tracker would (bpo-38119): attaching commands opt out with track=False (3.13+)
or by unregistering the block.
"""

import sys
from multiprocessing import resource_tracker
from multiprocessing.shared_memory import ShareableList, SharedMemory

# The list CPython makes for Rust to read (every type, edge values, non-ASCII text that
# CPython's own slot sizing can hold).
PY_ITEMS = [
    7,
    -(2**63),
    2.5,
    float("inf"),
    True,
    False,
    None,
    "",
    "hello",
    "h\u00e9llo w\u00f6rld",
    "exactly8",
    b"",
    b"\x00\x01bin",
    b"exactly8",
    "a" * 20,
]


def encode(v):
    if v is None:
        return "none"
    if isinstance(v, bool):
        return "bool %s" % v
    if isinstance(v, int):
        return "int %d" % v
    if isinstance(v, float):
        return "float %r" % v
    if isinstance(v, str):
        return "str " + v.encode("utf-8").hex()
    if isinstance(v, bytes):
        return "bytes " + v.hex()
    raise TypeError(type(v))


def decode(line):
    tag, _, rest = line.partition(" ")
    if tag == "none":
        return None
    if tag == "bool":
        return rest == "True"
    if tag == "int":
        return int(rest)
    if tag == "float":
        return float(rest)
    if tag == "str":
        return bytes.fromhex(rest).decode("utf-8")
    if tag == "bytes":
        return bytes.fromhex(rest)
    raise ValueError(line)


def say(*words):
    print(*words, flush=True)


def untrack(shm):
    resource_tracker.unregister(shm._name, "shared_memory")


def attach_shm(name):
    try:
        return SharedMemory(name, track=False)
    except TypeError:  # before 3.13
        shm = SharedMemory(name)
        untrack(shm)
        return shm


def dump(sl):
    for v in sl:
        say(encode(v))
    say("end")
    say("format", sl.format)


def serve_list(sl):
    """Answers requests about `sl` until `quit`."""
    for line in sys.stdin:
        cmd, _, rest = line.strip().partition(" ")
        if cmd == "dump":
            dump(sl)
        elif cmd == "set":
            index, _, item = rest.partition(" ")
            try:
                sl[int(index)] = decode(item)
                say("ok")
            except Exception as e:  # report, keep serving
                say("error", type(e).__name__)
        elif cmd == "count":
            say(sl.count(decode(rest)))
        elif cmd == "index":
            try:
                say(sl.index(decode(rest)))
            except ValueError:
                say("missing")
        elif cmd == "quit":
            return
        else:
            say("error unknown", cmd)


def main():
    cmd = sys.argv[1]
    if cmd == "create-shm":
        size = int(sys.argv[2])
        shm = SharedMemory(create=True, size=size)
        shm.buf[:size] = bytes(i % 251 for i in range(size))
        say("name", shm.name, shm.size)
        sys.stdin.readline()  # Rust has attached, written b"rust" at 0, and dropped
        say("ok" if bytes(shm.buf[:4]) == b"rust" else "bad %r" % bytes(shm.buf[:8]))
        shm.close()
        shm.unlink()
        say("done")
    elif cmd == "attach-shm":
        shm = attach_shm(sys.argv[2])
        size = shm.size
        good = bytes(shm.buf[:size]) == bytes((i * 7) % 256 for i in range(size))
        shm.buf[:6] = b"python"
        shm.close()
        say("size", size, "ok" if good else "bad")
    elif cmd == "create-list":
        sl = ShareableList(PY_ITEMS)
        say("name", sl.shm.name)
        serve_list(sl)
        sl.shm.close()
        sl.shm.unlink()
        say("done")
    elif cmd == "attach-list":
        sl = ShareableList(name=sys.argv[2])
        untrack(sl.shm)
        say("attached", len(sl))
        serve_list(sl)
        sl.shm.close()
        say("done")
    else:
        raise SystemExit("unknown command %r" % cmd)


if __name__ == "__main__":
    main()
