"""The repeated announcements of arp_count / arp_interval (IPaddr2's names).

Start sends the first announcement itself, before it returns, so a failover
waits for nothing new; the remaining ``arp_count - 1`` go out from a
background sender, ``arp_interval`` apart, as IPaddr2 sends its ARPs in the
background, so that they do not lengthen a start.

The sender is a background process of :mod:`clusterip.background`: a
fresh interpreter, detached, with a handshake file,
``$HA_RSCTMP/clusterip-<VIP>.announcing``, naming its PID.  Before each
send the sender checks that the file still names it and that the address is
still on the NIC, else it exits.  Stop removes the file, so the repeats end
within one interval without a kill; a new start replaces it, and the older
sender exits.  It is bounded by itself: at most ``arp_count - 1`` sends,
then it exits.

Imported by start and stop only (never by monitor), and itself imports
nothing but os, time and clusterip.background (sys, for the interpreter's
path, too).
"""

import os
import time

from clusterip import background
from clusterip.background import forget, owner, publish, release  # noqa: F401  (the API)


def repeats(params):
    """How many announcements the background sender owes after start's first one."""
    return max(0, params.arp_count - 1)


def send_repeats(path, node, placement, vip, mac, count, interval, sleep=time.sleep,
                 first_delay=None):
    """The sender's loop: up to ``count`` announcements, ``interval`` seconds
    apart, the first one ``first_delay`` from now (default: interval), which
    the sender makes interval after start's own.  ``node`` is
    :mod:`clusterip.address` (a fake in the unit tests).  Returns why it ended:
    "done", "replaced" (the file names another PID or is gone) or "address gone".
    """
    me = os.getpid()
    for number in range(count):
        sleep(interval if number or first_delay is None else first_delay)
        if owner(path) != me:
            return "replaced"
        if not node.address_present(vip, placement):
            release(path, me)
            return "address gone"
        node.announce(placement.nic, vip, mac)  # best effort: a failure is only skipped
    release(path, me)
    return "done"


FIRST_CHECK_WAIT = 1.0  # s the sender waits for the agent to name it in the file


def sender_argv(path, placement, vip, mac, count, interval, first_at=None,
                node="clusterip.address"):
    """The sender's arguments (strings) for :func:`send`: what :func:`spawn`
    hands its own process, or the guard's process its sender thread."""
    return [node, path, placement.nic, str(placement.prefixlen), vip, mac or "-", str(count),
            repr(interval), repr(first_at) if first_at is not None else "-"]


def spawn(path, placement, vip, mac, count, interval, first_at=None,
          node="clusterip.address", library=None):
    """Start the detached sender (see the module's docstring); returns once
    the handshake file names it.  Call it after the per-VIP lock is released.
    ``first_at``: the time.monotonic() (a clock every process of the machine
    shares) when the first repeat is due, so that the sender's own start-up
    does not stretch the first interval; default: interval from its start.
    ``node``: the module the sender announces with (a test's recording one),
    ``library``: the directory that holds it (default: this library's).
    OSError if it cannot be started; the caller logs it, start still succeeds.
    """
    return background.spawn(path, "clusterip.announcements", "sender_main", sender_argv(
        path, placement, vip, mac, count, interval, first_at, node), library=library)


def send(argv):
    """The sender's work on :func:`sender_argv`'s arguments, in a process of
    its own (sender_main) or in a thread of the guard's; returns why it ended.
    """
    import importlib

    from clusterip.address import Placement

    module, path, nic, prefixlen, vip, mac, count, interval, first_at = argv
    background.wait_until_named(path, FIRST_CHECK_WAIT)
    first_delay = None if first_at == "-" else max(0.0, float(first_at) - time.monotonic())
    return send_repeats(path, importlib.import_module(module), Placement(nic, int(prefixlen)),
                        vip, None if mac == "-" else mac, int(count), float(interval),
                        first_delay=first_delay)


def sender_main(argv):
    """The sender's process: no traceback ever, whatever happens."""
    try:
        background.become_background()
        send(argv)
    except BaseException:  # noqa: BLE001 - a background process never shows a traceback
        pass
    os._exit(0)
