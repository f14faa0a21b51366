"""rtnetlink in the standard library: IPv4 and IPv6 addresses and routes.

Why not pyroute2: importing it costs ~100-130 ms (its package imports
everything), more than IPaddr2's whole start (~50 ms) on the same machine,
and Pacemaker starts a fresh process for every action.  What the agent needs
is four messages: dump addresses, dump routes, add and delete one address;
each is a few struct packs.  The tests check the results through iproute2.
"""

import _socket  # the C module: socket.py adds enum and selectors, ~2.5 ms per action
import os
import struct

RTM_NEWADDR, RTM_DELADDR, RTM_GETADDR = 20, 21, 22
RTM_GETROUTE = 26
RTM_NEWROUTE = 24
NLMSG_ERROR = 2
NLMSG_DONE = 3
NLM_F_REQUEST = 0x1
NLM_F_ACK = 0x4
NLM_F_EXCL = 0x200
NLM_F_CREATE = 0x400
NLM_F_DUMP = 0x300
IFA_ADDRESS, IFA_LOCAL, IFA_LABEL, IFA_BROADCAST, IFA_FLAGS = 1, 2, 3, 4, 8
# Every node holds the same cluster address: Duplicate Address Detection
# would mark it "dadfailed" on all but the first.
IFA_F_NODAD = 0x02
IFA_F_DADFAILED = 0x08
IFA_F_TENTATIVE = 0x40
RT_SCOPE_UNIVERSE = 0
RTA_DST, RTA_OIF, RTA_GATEWAY, RTA_TABLE = 1, 4, 5, 15
_FAMILY = {4: _socket.AF_INET, 16: _socket.AF_INET6}

_NLMSGHDR = struct.Struct("=IHHII")  # len, type, flags, seq, pid
_RTATTR = struct.Struct("=HH")  # len, type
_IFADDRMSG = struct.Struct("=BBBBI")  # family, prefixlen, flags, scope, index
_RTMSG = struct.Struct("=BBBBBBBBI")  # family, dst_len, src_len, tos, table, proto, scope, type, flags


class open_socket:
    """A _socket.socket for a with-block (the C type has no __enter__/__exit__)."""

    def __init__(self, *args):
        self.sock = _socket.socket(*args)

    def __enter__(self):
        return self.sock

    def __exit__(self, *exc):
        self.sock.close()


def _align(length):
    return (length + 3) & ~3


def attribute_items(data, offset):
    """[(type, bytes)] of the attributes from offset to the end of data, in order
    (a nested list repeats one type)."""
    found = []
    while offset + _RTATTR.size <= len(data):
        length, kind = _RTATTR.unpack_from(data, offset)
        if length < _RTATTR.size:
            break
        found.append((kind & 0x3FFF, data[offset + _RTATTR.size:offset + length]))
        offset += _align(length)
    return found


def attributes(data, offset):
    """{type: bytes} of the attributes from offset to the end of data."""
    return dict(attribute_items(data, offset))


def attribute(kind, value):
    body = _RTATTR.pack(_RTATTR.size + len(value), kind) + value
    return body + b"\0" * (_align(len(body)) - len(body))


def _request(kind, flags, payload):
    """Send one change and wait for its acknowledgement; OSError(errno) on failure."""
    for _ in exchange(_socket.NETLINK_ROUTE, kind, NLM_F_ACK | flags, payload):
        pass


def _address_message(index, packed, prefixlen, flags=0, extra=b""):
    return (_IFADDRMSG.pack(_FAMILY[len(packed)], prefixlen, flags, RT_SCOPE_UNIVERSE, index)
            + attribute(IFA_LOCAL, packed) + attribute(IFA_ADDRESS, packed) + extra)


def add_address(index, packed, prefixlen, broadcast=None, label=None):
    """``ip addr add address/prefixlen [brd ..] [label ..] dev index``, for IPv6
    with ``nodad``; the address family is the length of ``packed``.

    Raises OSError: EEXIST when the address is already there (the caller
    decides whether that is success), ENODEV when the interface is gone.
    """
    extra = b""
    if broadcast is not None:
        extra += attribute(IFA_BROADCAST, broadcast)
    if label is not None:
        extra += attribute(IFA_LABEL, label.encode() + b"\0")
    flags = IFA_F_NODAD if len(packed) == 16 else 0
    _request(RTM_NEWADDR, NLM_F_CREATE | NLM_F_EXCL,
             _address_message(index, packed, prefixlen, flags, extra))


def delete_address(index, packed, prefixlen):
    """``ip addr del address/prefixlen dev index``; OSError EADDRNOTAVAIL when absent."""
    _request(RTM_DELADDR, 0, _address_message(index, packed, prefixlen))


def _dump(kind, payload):
    """Every message body of a dump request, as (type, bytes)."""
    return exchange(_socket.NETLINK_ROUTE, kind, NLM_F_DUMP, payload)


def exchange(protocol, kind, flags, payload):
    """Send one netlink request; yield (type, body) of each answer until the dump
    is done or the acknowledgement comes.  A negative acknowledgement is OSError.
    (Shared with clusterip.nfnl: nfnetlink is the same framing.)"""
    with open_socket(_socket.AF_NETLINK, _socket.SOCK_RAW, protocol) as sock:
        header = _NLMSGHDR.pack(_NLMSGHDR.size + len(payload), kind,
                                NLM_F_REQUEST | flags, 1, 0)
        sock.sendto(header + payload, (0, 0))
        while True:
            data = sock.recv(1 << 16)
            offset = 0
            while offset + _NLMSGHDR.size <= len(data):
                length, msg_type, _, _, _ = _NLMSGHDR.unpack_from(data, offset)
                if msg_type == NLMSG_DONE:
                    return
                if msg_type == NLMSG_ERROR:  # error 0: the acknowledgement of a change
                    error = -struct.unpack_from("=i", data, offset + _NLMSGHDR.size)[0]
                    if error:
                        raise OSError(error, os.strerror(error))
                    return
                yield msg_type, data[offset + _NLMSGHDR.size:offset + length]
                offset += _align(max(length, _NLMSGHDR.size))


def addresses(family):
    """[(ifindex, prefixlen, packed, label, flags)] of every address of a family
    (_socket.AF_INET or AF_INET6); IPv6 addresses have no label ("")."""
    found = []
    request = _IFADDRMSG.pack(family, 0, 0, 0, 0)
    for kind, body in _dump(RTM_GETADDR, request):
        if kind != RTM_NEWADDR:
            continue
        msg_family, prefixlen, flags, _, index = _IFADDRMSG.unpack_from(body)
        attrs = attributes(body, _IFADDRMSG.size)
        raw = attrs.get(IFA_LOCAL) or attrs.get(IFA_ADDRESS)
        if msg_family == family and raw:
            if IFA_FLAGS in attrs:  # the full 32 bits; ifa_flags holds only the low 8
                flags = struct.unpack("=I", attrs[IFA_FLAGS])[0]
            label = attrs.get(IFA_LABEL, b"").split(b"\0", 1)[0].decode(errors="replace")
            found.append((index, prefixlen, raw, label, flags))
    return found


def routes(family, table=254):
    """[(packed destination, dst_len, scope, oif, has_gateway)] of a family's
    routes in one table."""
    found = []
    request = _RTMSG.pack(family, 0, 0, 0, 0, 0, 0, 0, 0)
    for kind, body in _dump(RTM_GETROUTE, request):
        if kind != RTM_NEWROUTE:
            continue
        msg_family, dst_len, _, _, rtm_table, _, scope, _, _ = _RTMSG.unpack_from(body)
        attrs = attributes(body, _RTMSG.size)
        if RTA_TABLE in attrs:
            rtm_table = struct.unpack("=I", attrs[RTA_TABLE])[0]
        if msg_family != family or rtm_table != table:
            continue
        width = 4 if family == _socket.AF_INET else 16
        dst = attrs.get(RTA_DST, bytes(width))
        oif = struct.unpack("=I", attrs[RTA_OIF])[0] if RTA_OIF in attrs else None
        found.append((dst, dst_len, scope, oif, RTA_GATEWAY in attrs))
    return found
