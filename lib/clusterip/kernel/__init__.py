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

``_socket`` (the C module), never ``socket``: socket.py imports enum and
selectors, ~2.5 ms per action.
"""

import _socket


class opened:
    """A _socket.socket for a with-block (the C type has no __enter__/__exit__)."""

    def __init__(self, family, kind, protocol=0):
        self.sock = _socket.socket(family, kind, protocol)

    def __enter__(self):
        return self.sock

    def __exit__(self, *exc):
        self.sock.close()
