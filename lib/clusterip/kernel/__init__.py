"""The wire code: every conversation with the kernel that does not go through
a library (libnftables, python-iptables), in the standard library only.

Hand-written for process-start cost: Pacemaker starts a fresh process for
every action, and ``import pyroute2`` alone took 180-320 ms here, about 30
times the agent's whole monitor.  Each module speaks one interface and
interprets nothing beyond decoding it; the policy (what is missing, what is
idempotent) stays with the callers in :mod:`clusterip.address` and
:mod:`clusterip.backends`.  Every parser is tested on recorded kernel
answers (tests/unit/test_kernel_*.py).

* :mod:`.netlink`  framing, attributes, one request or one dump
* :mod:`.rtnl`     addresses and routes (rtnetlink)
* :mod:`.nfnl`     nf_tables tables, rules, set user data and elements (read only)
* :mod:`.iptables` one legacy iptables chain's bytes (getsockopt)
* :mod:`.link`     multicast MAC membership (ioctl) and raw frames (AF_PACKET)
* :mod:`.sockdiag` the TCP connections on a local address (sock_diag), for draining

``_socket`` (the C module), never ``socket``: socket.py imports enum and
selectors, ~2.5 ms per action.

Releasing some sockets makes the kernel wait for an RCU grace period in
the closing process, ~15 ms measured here, which Pacemaker then waits for
too: an AF_PACKET socket (packet_release calls synchronize_net), and any
netfilter netlink socket after a committed nf_tables transaction (the
release flushes nf_tables' destroy work, which waits for the grace period;
libnftables' own socket included).  So a state action runs in
:class:`deferred_release`: the sockets it closes stay open until it
ends, and if it changed nf_tables or sent frames (:func:`wrote`), a holder
process (``/bin/sleep``, bounded) is handed them first, so the last
reference, and the wait, is the holder's, a second later, not the action's.
Nothing else changes: what the transactions did is done, only memory is
freed later.
"""

import _socket
import posix  # not os: see clusterip.agent.environment

NETLINK_NETFILTER = 12
HOLDER = ("/bin/sleep", "1")  # coreutils (Essential): exits by itself
HOLD_FROM = 100  # the holder's descriptors: HOLD_FROM, HOLD_FROM + 1, ...

_deferred = None  # the sockets closed during a deferred_release, or None outside one
_wrote = False  # whether the action committed to nf_tables or sent raw frames


def wrote():
    """What the caller just did makes the release of its sockets wait (see above)."""
    global _wrote
    _wrote = True


def _waits_on_release(sock):
    return sock.family == _socket.AF_PACKET or (
        sock.family == _socket.AF_NETLINK and sock.proto == NETLINK_NETFILTER)


class opened:
    """A _socket.socket for a with-block (the C type has no __enter__/__exit__)."""

    def __init__(self, family, kind, protocol=0):
        self.sock = _socket.socket(family, kind, protocol)

    def __enter__(self):
        return self.sock

    def __exit__(self, *exc):
        if _deferred is not None and _waits_on_release(self.sock):
            _deferred.append(self.sock)  # closed when the action ends (deferred_release)
        else:
            self.sock.close()


def _sockets_waiting_on_release():
    """The descriptors of this process's sockets whose release would wait:
    ours (kept open by deferred_release) and libnftables' own."""
    found = []
    for name in posix.listdir("/proc/self/fd"):
        fd = int(name)
        try:
            if not posix.readlink("/proc/self/fd/" + name).startswith("socket:"):
                continue
            sock = _socket.socket(fileno=fd)
        except OSError:  # the listing's own descriptor, gone by now
            continue
        try:
            if _waits_on_release(sock):
                found.append(fd)
        finally:
            sock.detach()
    return found


def _hand_to_holder(fds):
    """A holder process gets a copy of each descriptor; False if none could start."""
    if not fds or max(fds) >= HOLD_FROM:
        return False
    null = posix.open("/dev/null", posix.O_RDWR | posix.O_CLOEXEC)
    try:
        posix.posix_spawn(HOLDER[0], list(HOLDER), {}, setsid=True, file_actions=[
            (posix.POSIX_SPAWN_DUP2, null, fd) for fd in (0, 1, 2)] + [
            (posix.POSIX_SPAWN_DUP2, fd, HOLD_FROM + i) for i, fd in enumerate(fds)])
    except OSError:
        return False
    finally:
        posix.close(null)
    return True


class deferred_release:
    """The action's sockets released after it, by a holder when it wrote (see above)."""

    def __enter__(self):
        global _deferred, _wrote
        _deferred, _wrote = [], False
        return self

    def __exit__(self, *exc):
        global _deferred
        parked, _deferred = _deferred, None
        try:
            if _wrote:
                _hand_to_holder(_sockets_waiting_on_release())
        finally:
            for sock in parked:
                sock.close()  # cheap once the holder has it; as before otherwise
