"""A Rust process and this package on one queue (the core's pickle codec): the nine kinds
of value both languages share cross it both ways, on a queue Python made and on one Rust
made. The Rust side is the example ``pickle_queue_peer`` of the ``multiproc`` crate, which
``cargo test`` builds and names in ``MULTIPROC_PICKLE_PEER``."""

import os
import queue
import subprocess
import threading

import pytest

import multiproc
import multiproc.queues

PEER = os.environ.get("MULTIPROC_PICKLE_PEER")
WAIT = 60

FROM_PYTHON = (None, True, -(2**63), 1.5, "héllo ✓", b"\x00\xffab", [1, 2, 3], (7, "seven"), {"a": 1, "b": -2})
FROM_RUST = (None, False, 2**63 - 1, -0.125, "ржавчина", b"", [], (-1, ""), {"x": 0})


def _lines(stream):
    """The lines of ``stream`` on a queue, read by a thread (so every read has a bound)."""
    lines = queue.Queue()

    def pump():
        for line in stream:
            lines.put(line)
        lines.put(None)

    threading.Thread(target=pump, daemon=True).start()
    return lines


def _next_line(lines, peer):
    try:
        line = lines.get(timeout=WAIT)
    except queue.Empty:
        pytest.fail("the Rust peer wrote nothing for {} s".format(WAIT))
    if line is None:
        peer.wait(WAIT)
        pytest.fail("the Rust peer ended early: " + peer.stderr.read())
    return line.strip()


@pytest.mark.skipif(
    not PEER and os.environ.get("CI") != "true",
    reason="MULTIPROC_PICKLE_PEER is not set (cargo test -p multiproc-py sets it)",
)
def test_rust_and_python_share_pickle_queues_both_ways():
    assert PEER, "MULTIPROC_PICKLE_PEER must name the Rust peer under CI=true"
    ours = multiproc.Queue()
    ours.put(FROM_PYTHON)
    fd = ours.export_fd()
    peer = subprocess.Popen(
        [PEER, str(fd)],
        pass_fds=[fd],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        lines = _lines(peer.stdout)
        # The peer took Python's value (and checked it), put Rust's on the same queue,
        # then made a queue of its own: its pid and descriptor.
        pid, theirs_fd = _next_line(lines, peer).split()
        got = ours.get(timeout=WAIT)
        assert repr(got) == repr(FROM_RUST)

        own = os.open("/proc/{}/fd/{}".format(pid, theirs_fd), os.O_RDWR)
        try:
            theirs = multiproc.queues.Queue(fd=own)
        finally:
            os.close(own)
        got = theirs.get(timeout=WAIT)
        assert repr(got) == repr(FROM_RUST)
        theirs.put(FROM_PYTHON)
        peer.stdin.write("go\n")
        peer.stdin.flush()
        assert _next_line(lines, peer) == "ok"
        assert peer.wait(WAIT) == 0, peer.stderr.read()
    finally:
        if peer.poll() is None:
            peer.kill()
            peer.wait()


def test_a_descriptor_that_is_not_a_queue_is_refused_with_a_message():
    lock = multiproc.Lock()
    with pytest.raises(Exception) as caught:
        multiproc.queues.Queue(fd=lock.export_fd())
    assert "queue" in str(caught.value).lower()
