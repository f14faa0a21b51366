"""A per-VIP lock: clone instances of one VIP start and stop concurrently on a
node, and the first/last instance must create/remove the shared pieces
exactly once.

flock, not a lock file's existence: the kernel drops the lock when its holder
dies, so a SIGKILLed agent never leaves a stale lock behind.
"""

import contextlib
import fcntl
import os
import time

from clusterip.errors import GenericError


@contextlib.contextmanager
def held(path, timeout, timings=None):
    """Hold an exclusive flock on path, waiting at most timeout seconds.

    ``timings``: a dict given the seconds the wait took ("waited") and, on
    release, those the lock was held ("held"): instances of one VIP
    serialise here, and the log says how much."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    asked = time.monotonic()
    try:
        deadline = asked + timeout
        delay = 0.002
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise GenericError("gave up after %.0f s waiting for the lock %s"
                                       % (timeout, path)) from None
                time.sleep(delay)
                delay = min(delay * 2, 0.05)
        locked = time.monotonic()
        if timings is not None:
            timings["waited"] = locked - asked
        yield
        if timings is not None:
            timings["held"] = time.monotonic() - locked
    finally:
        os.close(fd)  # closing the descriptor releases the flock
