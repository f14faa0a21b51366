"""The repeated announcements of arp_count / arp_interval (IPaddr2's names).

Start sends the first announcement itself, before it returns, so a failover
waits for nothing new; the remaining ``arp_count - 1`` go out from a
background sender, ``arp_interval`` apart, as IPaddr2 sends its ARPs in the
background, so that they do not lengthen a start.

The sender is a fresh interpreter started with posix_spawn (:func:`spawn`),
not a fork of the agent: a forked sender shares the agent's pages, and the
agent's own exit (Python's finalisation writes to most of its objects) then
copies them one by one, ~6 ms of CPU per start, measured; posix_spawn
shares nothing and costs the agent well under a millisecond.  Its own
session, 0/1/2 on /dev/null (an inherited pipe would make Pacemaker's
executor wait for its end), no other descriptor of the agent's (Python opens
its own, the per-VIP lock's included, close-on-exec; the sender closes any
other one first).  Its handshake is one file,
``$HA_RSCTMP/clusterip-<VIP>.announcing``, naming its PID, written by the
agent once the sender exists: before each send the sender checks that the
file still names it and that the address is still on the NIC, else it
exits.  Stop removes the file, so the repeats end within one interval
without a kill (no PID is ever signalled, so a recycled PID cannot be hit);
a new start replaces it, and the older sender exits.  It is bounded by
itself: at most ``arp_count - 1`` sends, then it exits.

Imported by start and stop only (never by monitor), and itself imports
nothing but os and time, both loaded already (sys, for the interpreter's
path, too).
"""

import os
import time


def repeats(params):
    """How many announcements the background sender owes after start's first one."""
    return max(0, params.arp_count - 1)


def owner(path):
    """The PID the handshake file names, or None (missing, unreadable, garbled)."""
    try:
        with open(path, "rb") as f:
            return int(f.read())
    except (OSError, ValueError):
        return None


def forget(path):
    """Remove the handshake file: a running sender exits before its next send."""
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


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
            _release(path, me)
            return "address gone"
        node.announce(placement.nic, vip, mac)  # best effort: a failure is only skipped
    _release(path, me)
    return "done"


def _release(path, me):
    # Removed only while it names this sender (a start may have replaced it;
    # the window between the read and the unlink is a few microseconds, and
    # only a start on a node that already holds the address falls in it).
    if owner(path) == me:
        forget(path)


# What the sender runs: argv[1] is the library's directory, or several joined
# by ':' (the interpreter runs with -I -S, as the agent: no site, no PYTHON*
# variables).
_SENDER = ("import sys; sys.path[:0] = sys.argv[1].split(':'); "
           "from clusterip.announcements import sender_main; sender_main(sys.argv[2:])")
FIRST_CHECK_WAIT = 1.0  # s the sender waits for the agent to name it in the file


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
    import sys

    library = library or os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    null = os.open(os.devnull, os.O_RDWR | os.O_CLOEXEC)
    try:
        pid = os.posix_spawn(sys.executable, [
            sys.executable, "-I", "-S", "-c", _SENDER, library, node, path, placement.nic,
            str(placement.prefixlen), vip, mac or "-", str(count), repr(interval),
            repr(first_at) if first_at is not None else "-"],
            os.environ, setsid=True,
            file_actions=[(os.POSIX_SPAWN_DUP2, null, fd) for fd in (0, 1, 2)])
    finally:
        os.close(null)
    try:
        # Its interpreter's start-up (~15 ms of CPU) runs only where a CPU would
        # idle, not against the rest of this start; sender_main then takes an
        # ordinary (niced) share, so that its sends are not starved.  (glibc's
        # posix_spawn takes no SCHED_IDLE: set at once after.)
        os.sched_setscheduler(pid, os.SCHED_IDLE, os.sched_param(0))
    except OSError:
        pass  # gone already, or not allowed: it only competes a little
    publish(path, pid)
    return pid


def sender_main(argv):
    """The sender's process: no traceback ever, whatever happens."""
    try:
        os.closerange(3, os.sysconf("SC_OPEN_MAX"))  # any descriptor the agent inherited
        os.sched_setscheduler(0, os.SCHED_OTHER, os.sched_param(0))
        os.nice(10)
        import importlib

        from clusterip.address import Placement

        module, path, nic, prefixlen, vip, mac, count, interval, first_at = argv
        me, deadline = os.getpid(), time.monotonic() + FIRST_CHECK_WAIT
        while owner(path) != me and time.monotonic() < deadline:
            time.sleep(0.01)  # the agent writes the file right after the spawn
        first_delay = None if first_at == "-" else max(0.0, float(first_at) - time.monotonic())
        send_repeats(path, importlib.import_module(module), Placement(nic, int(prefixlen)),
                     vip, None if mac == "-" else mac, int(count), float(interval),
                     first_delay=first_delay)
    except BaseException:  # noqa: BLE001 - a background process never shows a traceback
        pass
    os._exit(0)


def publish(path, pid):
    """Make the handshake file name pid; by rename: a sender never reads half a PID."""
    temporary = "%s.%d" % (path, pid)
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
    try:
        os.write(fd, b"%d\n" % pid)
    finally:
        os.close(fd)
    os.rename(temporary, path)
