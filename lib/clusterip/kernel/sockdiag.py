"""sock_diag: how many TCP connections this node serves on one local address.

What ``ss -tn state established src VIP`` asks, as one dump request per
address family (NETLINK_SOCK_DIAG, SOCK_DIAG_BY_FAMILY, an inet_diag_req_v2),
for the drain of a VIP (issue #16, :mod:`clusterip.drain`).  The kernel
filters twice: by the states' bitmask and by a one-condition bytecode on the
local address (INET_DIAG_BC_S_COND, "source" in sock_diag's terms is the
local end), so a node with many sockets hands back only the VIP's; each
reply is checked again here all the same (a kernel that ignored the
bytecode would otherwise count every connection).

An IPv4 VIP is dumped from AF_INET6 too: a server listening on ``::``
accepts IPv4 clients on IPv6 sockets whose local address is the VIP mapped
(``::ffff:a.b.c.d``); the kernel's condition matches those for an AF_INET
condition (inet_diag_bc_run), and so does the check here.
"""

import _socket
import struct

from clusterip.kernel import netlink

NETLINK_SOCK_DIAG = 4  # not in _socket's constants
SOCK_DIAG_BY_FAMILY = 20
IPPROTO_TCP = 6
INET_DIAG_REQ_BYTECODE = 1
INET_DIAG_BC_S_COND = 7  # the local address (and port) of the socket

# TCP states (include/net/tcp_states.h) of a connection whose peer still
# needs this node: every state in which data or a FIN of ours may be unacked,
# or the peer may still send and expect an answer.  ESTABLISHED; SYN_RECV and
# NEW_SYN_RECV (a handshake this node answered: its last ACK is conntrack's
# "established" and reaches this node); FIN_WAIT1 (our FIN, maybe data, not
# yet acked); CLOSE_WAIT (the peer is done sending, our side may still send
# the response); LAST_ACK and CLOSING (our FIN not yet acked).  Not
# FIN_WAIT2 or TIME_WAIT: the peer has acked all we sent and the
# application closed; only the closing handshake's last packets are left,
# whose loss the peer's TCP survives (a FIN retransmitted into the void).
# Waiting for them would make every drain last tcp_fin_timeout (60 s) for
# clients that never close their side.  Not LISTEN, SYN_SENT, CLOSE: no
# client's connection.
TCP_ESTABLISHED, TCP_SYN_RECV, TCP_FIN_WAIT1 = 1, 3, 4
TCP_CLOSE_WAIT, TCP_LAST_ACK, TCP_CLOSING, TCP_NEW_SYN_RECV = 8, 9, 11, 12
SERVING_STATES = (TCP_ESTABLISHED, TCP_SYN_RECV, TCP_FIN_WAIT1, TCP_CLOSE_WAIT,
                  TCP_LAST_ACK, TCP_CLOSING, TCP_NEW_SYN_RECV)
STATE_MASK = sum(1 << state for state in SERVING_STATES)

# struct inet_diag_req_v2: family, protocol, ext, pad, states, then struct
# inet_diag_sockid: sport, dport (big endian), src[4], dst[4] (big endian
# 32-bit words, an IPv4 address in the first), interface, cookie[2].
_REQUEST = struct.Struct("=BBBxI")
_SOCKID = struct.Struct("=HH16s16sI8s")
# struct inet_diag_msg: family, state, timer, retrans, the sockid, then
# expires, rqueue, wqueue, uid, inode.
_MESSAGE_HEAD = struct.Struct("=BBBB")
MESSAGE_SIZE = _MESSAGE_HEAD.size + _SOCKID.size + 20
# struct inet_diag_bc_op (code, yes, no) and struct inet_diag_hostcond
# (family, prefix_len, port: -1 any) followed by the address.
_BC_OP = struct.Struct("=BBH")
_HOSTCOND = struct.Struct("=BBxxi")  # port is a C int: 2 bytes of padding before it
_MAPPED = bytes(10) + b"\xff\xff"  # ::ffff:0:0/96


def local_address_filter(packed):
    """The bytecode "local address is ``packed``, any port": one condition
    whose yes-jump ends the program (accept) and whose no-jump lands 4 bytes
    past its end (reject), as ss builds it; the kernel's audit allows that."""
    family = _socket.AF_INET6 if len(packed) == 16 else _socket.AF_INET
    length = _BC_OP.size + _HOSTCOND.size + len(packed)
    return (_BC_OP.pack(INET_DIAG_BC_S_COND, length, length + 4)
            + _HOSTCOND.pack(family, len(packed) * 8, -1) + packed)


def dump_request(family, packed):
    """The inet_diag_req_v2 and its bytecode for one address family's TCP
    sockets in SERVING_STATES whose local address is ``packed``."""
    return (_REQUEST.pack(family, IPPROTO_TCP, 0, STATE_MASK) + bytes(_SOCKID.size)
            + netlink.attribute(INET_DIAG_REQ_BYTECODE, local_address_filter(packed)))


def families(packed):
    """The families whose sockets can hold ``packed`` as their local address."""
    if len(packed) == 16:
        return (_socket.AF_INET6,)
    return (_socket.AF_INET, _socket.AF_INET6)


def parse_sockets(messages):
    """[(family, state, local address as 4 or 16 bytes)] of a dump's messages;
    an IPv4 address mapped into IPv6 comes back as its 4 bytes."""
    found = []
    for kind, body in messages:
        if kind != SOCK_DIAG_BY_FAMILY:
            continue
        if len(body) < MESSAGE_SIZE:
            raise netlink.damaged("inet_diag message")
        family, state = _MESSAGE_HEAD.unpack_from(body)[:2]
        src = _SOCKID.unpack_from(body, _MESSAGE_HEAD.size)[2]
        if family == _socket.AF_INET:
            local = src[:4]
        elif src[:12] == _MAPPED:
            local = src[12:]
        else:
            local = src
        found.append((family, state, local))
    return found


def serving_count(packed):
    """How many TCP connections in SERVING_STATES have the local address
    ``packed`` (4 or 16 bytes) in this network namespace; OSError when the
    kernel cannot tell (no inet_diag, a damaged answer)."""
    count = 0
    for family in families(packed):
        try:
            answers = netlink.dump(NETLINK_SOCK_DIAG, SOCK_DIAG_BY_FAMILY,
                                   dump_request(family, packed))
        except OSError:
            if family == _socket.AF_INET6 and len(packed) == 4:
                continue  # a kernel without IPv6 has no mapped IPv4 sockets either
            raise
        count += sum(1 for _, state, local in parse_sockets(answers)
                     if local == packed and state in SERVING_STATES)
    return count
