"""The kernel's recorded answers (data/kernel/, see record_kernel_dumps.py)
and a fake socket that replays them, for the test_kernel_*.py tests.

``state()`` is what the recordings were made from: the declared state and
what independent tools (ip -j, nft -j, iptables-legacy -S) listed; the
tests take their expected values from there, never from a parser.
"""

import errno
import functools
import json
import os
import struct

DATA = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data", "kernel")
NLMSG_HEADER = struct.Struct("=IHHII")  # len, type, flags, seq, pid


@functools.lru_cache(maxsize=None)
def _load(name):
    with open(os.path.join(DATA, name), encoding="utf-8") as f:
        return json.load(f)


def state():
    return _load("state.json")


def dump(name):
    return _load("dumps.json")[name]


def exchanges(name):
    """[(request bytes, [datagram bytes, ...])] of one recording, in order."""
    return [(bytes.fromhex(e["sent"]), [bytes.fromhex(d) for d in e["received"]])
            for e in dump(name)["exchanges"]]


def headers(datagram):
    """[(type, flags)] of the netlink messages in a datagram: a walk of our
    own, so that a test of netlink.messages() does not lean on it."""
    found, offset = [], 0
    while offset + NLMSG_HEADER.size <= len(datagram):
        length, kind, flags, _, _ = NLMSG_HEADER.unpack_from(datagram, offset)
        found.append((kind, flags))
        offset += (max(length, NLMSG_HEADER.size) + 3) & ~3
    return found


class FakeSocket:
    def __init__(self, request, datagrams):
        self.request, self.datagrams, self.sent = request, list(datagrams), []

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def sendto(self, data, address):
        assert address == (0, 0)
        self.sent.append(data)

    def recv(self, size):
        assert size >= 1 << 15, "a receive buffer smaller than a netlink dump's datagrams"
        if not self.datagrams:
            # A real socket would block: the kernel has nothing more to say.
            raise BlockingIOError(errno.EAGAIN, "nothing more was recorded")
        return self.datagrams.pop(0)


class Replay:
    """Stands in for netlink._socket_for: each socket opened replays the next
    recorded exchange; opening more than were recorded fails the test."""

    def __init__(self, recorded, check_requests=True):
        self.recorded = list(recorded)
        self.check_requests = check_requests
        self.sockets = []

    def __call__(self, protocol):
        assert len(self.sockets) < len(self.recorded), \
            "socket %d opened, %d recorded" % (len(self.sockets) + 1, len(self.recorded))
        request, datagrams = self.recorded[len(self.sockets)]
        sock = FakeSocket(request, datagrams)
        self.sockets.append(sock)
        return sock

    def check(self):
        """Every recorded exchange used, each sent the request recorded."""
        assert len(self.sockets) == len(self.recorded)
        if self.check_requests:
            for sock in self.sockets:
                assert sock.sent == [sock.request]


def replay(monkeypatch, recorded, check_requests=True):
    from clusterip.kernel import netlink

    fake = Replay(recorded, check_requests)
    monkeypatch.setattr(netlink, "_socket_for", fake)
    return fake
