"""The repeated announcements of arp_count / arp_interval (IPaddr2's names).

Start sends the first announcement itself, before it returns, so a failover
waits for nothing new; the remaining ``arp_count - 1`` go out from a
background sender, ``arp_interval`` apart, as IPaddr2 sends its ARPs in the
background, so that they do not lengthen a start.

The sender is a detached grandchild of the agent (:func:`spawn`): setsid,
every descriptor closed (an inherited flock descriptor would keep the per-VIP
lock held; an inherited pipe would make Pacemaker's executor wait for the
sender's end), 0/1/2 on /dev/null, double-forked so that nobody waits for it
and it is nobody's zombie.  Its handshake is one file,
``$HA_RSCTMP/clusterip-<VIP>.announcing``, naming its PID: before each send
it checks that the file still names it and that the address is still on the
NIC, else it exits.  Stop removes the file, so the repeats end within one
interval without a kill (no PID is ever signalled, so a recycled PID cannot
be hit); a new start replaces it, and the older sender exits.  It is bounded
by itself: at most ``arp_count - 1`` sends, then it exits.

Imported by start only (never by monitor), and itself imports nothing but
os and time, both loaded already.
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


def send_repeats(path, node, placement, vip, mac, count, interval, sleep=time.sleep):
    """The sender's loop: up to ``count`` announcements, ``interval`` seconds
    apart, the first one interval after start's own.  ``node`` is
    :mod:`clusterip.address` (a fake in the unit tests).  Returns why it ended:
    "done", "replaced" (the file names another PID or is gone) or "address gone".
    """
    me = os.getpid()
    for _ in range(count):
        sleep(interval)
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


def spawn(path, node, placement, vip, mac, count, interval):
    """Fork the detached sender (see the module's docstring); returns once the
    handshake file names it.  Call it after the per-VIP lock is released.
    OSError if the first fork fails; the caller logs it, start still succeeds.
    """
    pid = os.fork()
    if pid == 0:  # the intermediate child: never returns
        code = 1
        try:
            _detach()
            ready_r, ready_w = os.pipe()
            sender = os.fork()
            if sender == 0:
                os.close(ready_w)
                os.read(ready_r, 1)  # EOF once the file below names this process
                os.close(ready_r)
                send_repeats(path, node, placement, vip, mac, count, interval)
                code = 0
            else:
                os.close(ready_r)
                publish(path, sender)
                os.close(ready_w)
                code = 0
        except BaseException:  # noqa: BLE001 - a child never shows a traceback
            pass
        os._exit(code)  # no atexit handlers, no flush of the agent's stdio buffers
    os.waitpid(pid, 0)  # the intermediate child exits at once: no zombie, no wait for the sender


def _detach():
    """A new session, no descriptor of the agent's (the lock's above all), 0/1/2 on /dev/null."""
    os.setsid()
    os.closerange(3, os.sysconf("SC_OPEN_MAX"))  # close_range(2): one system call
    null = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(null, fd)
    if null > 2:
        os.close(null)


def publish(path, pid):
    """Make the handshake file name pid; by rename: a sender never reads half a PID."""
    # os calls, not open(): run in the freshly forked child, which start waits
    # for, open()'s io stack made a spawn ~3.5 ms instead of ~1.5 (measured
    # with libnftables loaded, as in a clone's start).
    temporary = "%s.%d" % (path, pid)
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
    try:
        os.write(fd, b"%d\n" % pid)
    finally:
        os.close(fd)
    os.rename(temporary, path)
