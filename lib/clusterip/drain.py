"""Connection draining (issue #16): the stop of a node's last instance of a
VIP keeps serving the node's established connections for a while.

With ``graceful_handover`` the VIP's chain accepts the packets of every TCP
connection this node's conntrack tracks, whatever their bucket.  So once
the stop has released the node's buckets (the set ``owned`` empty: no new
connection is accepted here) and while it keeps the address and the
tables, the node's established connections go on.  The stop waits until
none is left (counted over sock_diag, :mod:`clusterip.kernel.sockdiag`) or
``drain_timeout`` passes, then removes everything as without draining.

Pacemaker kills a stop that outlasts its timeout and fences the node, so
the drain ends RESERVE seconds before the stop's timeout whatever
drain_timeout says (:func:`budget`): the lock and the teardown need them.
Imported by the stop only.
"""

import time

INTERVAL = 0.1  # s between two counts: sock_diag answers in well under a millisecond
# s of the stop's timeout kept for what follows the drain: the VIP's lock
# (another instance's action may hold it) and the teardown (tens of ms).
RESERVE = 5.0


def budget(drain_timeout, stop_timeout, elapsed):
    """The seconds the drain may last: drain_timeout, cut so that the stop,
    ``elapsed`` seconds into its ``stop_timeout``, ends RESERVE seconds
    before it."""
    return max(0.0, min(drain_timeout, stop_timeout - RESERVE - elapsed))


def needed_stop_timeout(drain_timeout):
    """The shortest stop timeout, in whole seconds, that fits a whole drain."""
    return int(-(-(drain_timeout + RESERVE) // 1))


def wait(count, seconds, clock=None, sleep=None, interval=INTERVAL):
    """Poll ``count()`` every ``interval`` until it answers 0 or ``seconds``
    have passed; (first count, last count, seconds waited).  A count of None
    (the kernel cannot tell) is not 0: the drain then lasts ``seconds``.
    ``clock`` and ``sleep``: time.monotonic and time.sleep, looked up here
    (the unit tests replace this module's ``time``)."""
    clock, sleep = clock or time.monotonic, sleep or time.sleep
    began = clock()
    deadline = began + seconds
    first = last = count()
    while last != 0:
        left = deadline - clock()
        if left <= 0:
            break
        sleep(min(interval, left))
        last = count()
    return first, last, clock() - began
