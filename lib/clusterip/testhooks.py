"""A test-only pause at named steps of start and stop.

The reliability tests SIGKILL the agent at every step to prove that a crash
never leaves a node half-configured: with ``CLUSTERIP_TEST_PAUSE_AT=<step>``
the agent writes its PID to ``CLUSTERIP_TEST_PAUSE_FILE`` when it reaches that
step and sleeps there (``CLUSTERIP_TEST_PAUSE_SECONDS``, default 30) to be
killed.  Inert otherwise: one environment lookup per step, and Pacemaker
never sets these variables.
"""

import posix  # not os: see clusterip.agent.environment
import time

# Every step, in the order an action passes them (also the tests' list).
STEPS = (
    "start:locked", "start:marked", "clusterip:rules-deleted", "clusterip:rule-inserted",
    "nft:tables-created", "start:filter", "start:address",
    "stop:locked", "stop:bucket-removed",
    "stop:draining", "stop:drained", "stop:relocked",  # drain_timeout only
    "stop:address-removed", "nft:tables-deleted", "stop:destroyed",
)


def step(name):
    # The process's environment as it started, in bytes: what the tests give
    # the agent's process (posix.environ; os.environ is not imported).
    if posix.environ.get(b"CLUSTERIP_TEST_PAUSE_AT") != name.encode():
        return
    path = posix.environ.get(b"CLUSTERIP_TEST_PAUSE_FILE")
    if path:
        with open(path, "w", encoding="ascii") as f:
            f.write("%d\n" % posix.getpid())
    time.sleep(float(posix.environ.get(b"CLUSTERIP_TEST_PAUSE_SECONDS", b"30")))
