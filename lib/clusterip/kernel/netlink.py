"""Netlink framing: attributes, one change request, one dump.

rtnetlink (:mod:`.rtnl`) and nfnetlink (:mod:`.nfnl`) share it.  A dump is
read to its end before it is handed over: the kernel marks every message of
a dump that changed while it was being read (``NLM_F_DUMP_INTR``, e.g. an
address added meanwhile), and such a dump may lack entries or hold stale
ones, so it is read again.
"""

from __future__ import annotations  # hints cost nothing at run time

import _socket
import errno
import posix  # not os: see clusterip.agent.environment
import struct

from clusterip.kernel import opened, wrote

NLMSG_ERROR = 2
NLMSG_DONE = 3
NLM_F_REQUEST = 0x1
NLM_F_ACK = 0x4
NLM_F_DUMP_INTR = 0x10
NLM_F_EXCL = 0x200
NLM_F_CREATE = 0x400
NLM_F_DUMP = 0x300
# Interrupted dumps in a row before giving up: each needs a change to the
# dumped table during the read (microseconds), so three means a storm.
DUMP_ATTEMPTS = 3

HEADER = struct.Struct("=IHHII")  # len, type, flags, seq, pid
_RTATTR = struct.Struct("=HH")  # len, type
_ERROR = struct.Struct("=i")
_U32 = struct.Struct("=I")


def align(length: int) -> int:
    return (length + 3) & ~3


def damaged(what: str) -> OSError:
    """The error for an answer that does not parse: OSError, as from the kernel."""
    return OSError(errno.EBADMSG, "netlink: damaged %s" % what)


def attribute_items(data: bytes, offset: int = 0) -> list[tuple[int, bytes]]:
    """[(type, bytes)] of the attributes from offset to the end of data, in order
    (a nested list repeats one type); OSError(EBADMSG) when one overruns data."""
    found = []
    while offset + _RTATTR.size <= len(data):
        length, kind = _RTATTR.unpack_from(data, offset)
        if length < _RTATTR.size or offset + length > len(data):
            raise damaged("attribute")
        found.append((kind & 0x3FFF, data[offset + _RTATTR.size:offset + length]))
        offset += align(length)
    return found


def attributes(data: bytes, offset: int = 0) -> dict[int, bytes]:
    """{type: bytes} of the attributes from offset to the end of data."""
    return dict(attribute_items(data, offset))


def u32(value: bytes) -> int:
    """A native 32-bit attribute's value; OSError(EBADMSG) when it is not 4 bytes."""
    if len(value) != _U32.size:
        raise damaged("32-bit attribute")
    return _U32.unpack(value)[0]


def attribute(kind: int, value: bytes) -> bytes:
    body = _RTATTR.pack(_RTATTR.size + len(value), kind) + value
    return body + b"\0" * (align(len(body)) - len(body))


def messages(data: bytes) -> list[tuple[int, int, bytes]]:
    """[(type, flags, body)] of the netlink messages in one datagram;
    OSError(EBADMSG) when one is cut short."""
    found, offset = [], 0
    while offset + HEADER.size <= len(data):
        length, kind, flags, _, _ = HEADER.unpack_from(data, offset)
        if length < HEADER.size or offset + length > len(data):
            raise damaged("message")
        found.append((kind, flags, data[offset + HEADER.size:offset + length]))
        offset += align(length)
    return found


def _socket_for(protocol):
    """The socket a conversation uses (the unit tests put a fake here)."""
    return opened(_socket.AF_NETLINK, _socket.SOCK_RAW, protocol)


def _exchange(protocol: int, kind: int, flags: int,
              payload: bytes) -> tuple[list[tuple[int, bytes]], bool]:
    """Send one request; ([(type, body)] of the answers up to the end of the
    dump or the acknowledgement, whether the kernel marked the dump
    interrupted).  A negative acknowledgement is OSError(errno)."""
    answers, interrupted = [], False
    with _socket_for(protocol) as sock:
        sock.sendto(HEADER.pack(HEADER.size + len(payload), kind, NLM_F_REQUEST | flags, 1, 0)
                    + payload, (0, 0))
        while True:
            for msg_type, msg_flags, body in messages(sock.recv(1 << 16)):
                interrupted = interrupted or bool(msg_flags & NLM_F_DUMP_INTR)
                if msg_type == NLMSG_DONE:
                    return answers, interrupted
                if msg_type == NLMSG_ERROR:  # error 0: the acknowledgement of a change
                    error = -_ERROR.unpack_from(body)[0] if len(body) >= _ERROR.size \
                        else errno.EBADMSG
                    if error:
                        raise OSError(error, posix.strerror(error))
                    return answers, interrupted
                answers.append((msg_type, body))


def request(protocol: int, kind: int, flags: int, payload: bytes) -> None:
    """Send one change and wait for its acknowledgement; OSError(errno) on failure."""
    _exchange(protocol, kind, NLM_F_ACK | flags, payload)


def unfinished_batch(protocol: int, begin: tuple[int, bytes],
                     changes: list[tuple[int, int, bytes]]) -> list[int]:
    """Send a transaction without its end: the kernel checks and prepares
    every change, answers each (NLM_F_ACK), then aborts them all, since no
    end message commits them (what ``nft --check`` does).  ``begin`` is the
    (type, body) that opens the batch, ``changes`` [(type, flags, body)].
    Returns the errno of each change in order, 0 for one that would succeed.
    """
    return _batch(protocol, [(begin[0], 0, begin[1])] + changes, len(changes))


def batch(protocol: int, begin: tuple[int, bytes], changes: list[tuple[int, int, bytes]],
          end: tuple[int, bytes]) -> list[int]:
    """Send one transaction and commit it: all of ``changes`` or, when one
    fails, none.  ``begin`` and ``end``: the (type, body) that open and close
    it; each change is acknowledged (NLM_F_ACK is added).  Returns the errno
    of each change in order, 0 for success (all 0: committed)."""
    errors = _batch(protocol, [(begin[0], 0, begin[1])]
                    + [(kind, flags | NLM_F_ACK, body) for kind, flags, body in changes]
                    + [(end[0], 0, end[1])], len(changes))
    wrote()  # after a transaction, releasing its socket waits (clusterip.kernel)
    return errors


def _batch(protocol, kinds, answered):
    """Send messages in one datagram; the errno answering each of the
    ``answered`` after the first (EBADMSG for one never answered)."""
    datagram = b"".join(
        HEADER.pack(HEADER.size + len(body), kind, NLM_F_REQUEST | flags, seq, 0) + body
        for seq, (kind, flags, body) in enumerate(kinds, 1))
    found = {}
    with _socket_for(protocol) as sock:
        sock.sendto(datagram, (0, 0))
        while len(found) < answered:
            for msg_type, _, body in messages(sock.recv(1 << 16)):
                if msg_type != NLMSG_ERROR or len(body) < _ERROR.size + HEADER.size:
                    continue
                seq = HEADER.unpack_from(body, _ERROR.size)[3]
                if 2 <= seq <= answered + 1:
                    found[seq] = -_ERROR.unpack_from(body)[0]
    return [found.get(seq, errno.EBADMSG) for seq in range(2, answered + 2)]


def dump(protocol: int, kind: int, payload: bytes) -> list[tuple[int, bytes]]:
    """[(type, body)] of every message of a complete, uninterrupted dump."""
    for _ in range(DUMP_ATTEMPTS):
        answers, interrupted = _exchange(protocol, kind, NLM_F_DUMP, payload)
        if not interrupted:
            return answers
    raise OSError(errno.EINTR, "netlink dump interrupted %d times in a row" % DUMP_ATTEMPTS)
