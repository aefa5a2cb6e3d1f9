"""A CPython peer for multiproc's interop tests: unmodified stdlib only.

    peer.py listen  ADDRESS AUTHKEY COUNT [--expect-auth-failure]
    peer.py connect ADDRESS AUTHKEY COUNT [--expect-auth-failure]

ADDRESS uses multiproc's syntax: HOST:PORT (port 0 lets the system choose), a path
containing '/', or '@name' for a Linux abstract socket. AUTHKEY is hex, or '-' for none.

`listen` prints "ADDRESS <address>" once bound, then accepts COUNT connections one after
the other; `connect` connects COUNT times one after the other. On every connection the
Rust side first sends the name of a scenario (as bytes), which this peer then plays until
the Rust side closes the connection:

    echo_bytes     echo every message with send_bytes
    echo_pickle    answer every object with (type name, object), pickled by Connection.send
    python_values  send the values of VALUES below, one message each, then echo_bytes
    hello          send b"hello from <version>", then echo_bytes

With --expect-auth-failure the first handshake must fail with AuthenticationError.
The last line printed is "RESULT ..."; the exit code is 0 when all went as expected.
"""

import signal
import sys
from multiprocessing import AuthenticationError
from multiprocessing.connection import Client, Listener

# Whatever happens, this process does not outlive a broken test by long.
signal.alarm(240)

VERSION = "%d.%d.%d" % sys.version_info[:3]

_shared = [1, 2]
VALUES = [
    None,
    True,
    False,
    0,
    -1,
    255,
    65535,
    -(2**31),
    2**40,
    2**63 - 1,
    -(2**63),
    1.5,
    -0.0,
    1e300,
    "",
    "h\u00e9llo w\u00f6rld \u2713",
    "x" * 300,
    b"",
    bytes(range(256)),
    [],
    [1, 2, 3],
    list(range(2500)),
    (1, "a", 2.5),
    (),
    (7,),
    (1, 2),
    (1, 2, 3),
    (1, 2, 3, 4),
    {},
    {"a": 1, "b": 2},
    {i: str(i) for i in range(1500)},
    [[1, 2], [3]],
    [_shared, _shared],
    {"list": [1, 2], "tuple": (3, "x")},
    [None, 1, None],
]


def parse_address(text):
    if text.startswith("@"):
        return "\0" + text[1:]
    if "/" in text:
        return text
    host, port = text.rsplit(":", 1)
    return (host.strip("[]"), int(port))


def show_address(address):
    if isinstance(address, tuple):
        return "%s:%d" % address[:2]
    if isinstance(address, bytes):
        address = address.decode()
    if address.startswith("\0"):
        return "@" + address[1:]
    return address


def echo_bytes(conn):
    count = 0
    while True:
        try:
            message = conn.recv_bytes()
        except EOFError:
            return count
        conn.send_bytes(message)
        count += 1


def echo_pickle(conn):
    count = 0
    while True:
        try:
            obj = conn.recv()
        except EOFError:
            return count
        conn.send((type(obj).__name__, obj))
        count += 1


def python_values(conn):
    for value in VALUES:
        conn.send(value)
    return echo_bytes(conn)


def hello(conn):
    conn.send_bytes(b"hello from " + VERSION.encode())
    return echo_bytes(conn)


SCENARIOS = {
    "echo_bytes": echo_bytes,
    "echo_pickle": echo_pickle,
    "python_values": python_values,
    "hello": hello,
}


def serve(conn):
    name = conn.recv_bytes(64).decode()
    handled = SCENARIOS[name](conn)
    conn.close()
    return "%s:%d" % (name, handled)


def main():
    role, address, key, count = sys.argv[1:5]
    expect_failure = "--expect-auth-failure" in sys.argv[5:]
    address = parse_address(address)
    authkey = None if key == "-" else bytes.fromhex(key)
    count = int(count)
    done = []
    try:
        if role == "listen":
            with Listener(address, authkey=authkey) as listener:
                print("ADDRESS " + show_address(listener.address), flush=True)
                for _ in range(count):
                    conn = listener.accept()
                    if expect_failure:
                        break
                    done.append(serve(conn))
        elif role == "connect":
            for _ in range(count):
                conn = Client(address, authkey=authkey)
                if expect_failure:
                    break
                done.append(serve(conn))
        else:
            raise SystemExit("unknown role " + role)
    except AuthenticationError as e:
        print("RESULT auth_failed %s" % e, flush=True)
        return 0 if expect_failure else 1
    if expect_failure:
        print("RESULT authenticated, but a failure was expected", flush=True)
        return 1
    print("RESULT ok " + " ".join(done), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
