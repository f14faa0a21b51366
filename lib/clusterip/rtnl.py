"""Read-only rtnetlink in the standard library: addresses and routes.

The monitor runs every few seconds per clone instance, and pyroute2 costs
~130 ms to import (its package imports everything).  Reading the addresses
and routes it needs takes one netlink dump each, so the read paths use this
small module; pyroute2 stays for the changes (start and stop).
"""

import socket
import struct

RTM_GETADDR = 22
RTM_GETROUTE = 26
RTM_NEWADDR = 20
RTM_NEWROUTE = 24
NLMSG_ERROR = 2
NLMSG_DONE = 3
NLM_F_REQUEST = 0x1
NLM_F_DUMP = 0x300
IFA_ADDRESS, IFA_LOCAL, IFA_LABEL = 1, 2, 3
RTA_DST, RTA_OIF, RTA_TABLE = 1, 4, 15

_NLMSGHDR = struct.Struct("=IHHII")  # len, type, flags, seq, pid
_RTATTR = struct.Struct("=HH")  # len, type
_IFADDRMSG = struct.Struct("=BBBBI")  # family, prefixlen, flags, scope, index
_RTMSG = struct.Struct("=BBBBBBBBI")  # family, dst_len, src_len, tos, table, proto, scope, type, flags


def _align(length):
    return (length + 3) & ~3


def attributes(data, offset):
    """{type: bytes} of the rtattrs from offset to the end of data."""
    found = {}
    while offset + _RTATTR.size <= len(data):
        length, kind = _RTATTR.unpack_from(data, offset)
        if length < _RTATTR.size:
            break
        found[kind & 0x3FFF] = data[offset + _RTATTR.size:offset + length]
        offset += _align(length)
    return found


def _dump(kind, payload):
    """Every message body of a dump request, as (type, bytes)."""
    with socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, socket.NETLINK_ROUTE) as sock:
        header = _NLMSGHDR.pack(_NLMSGHDR.size + len(payload), kind,
                                NLM_F_REQUEST | NLM_F_DUMP, 1, 0)
        sock.sendto(header + payload, (0, 0))
        while True:
            data = sock.recv(1 << 16)
            offset = 0
            while offset + _NLMSGHDR.size <= len(data):
                length, msg_type, _, _, _ = _NLMSGHDR.unpack_from(data, offset)
                if msg_type == NLMSG_DONE:
                    return
                if msg_type == NLMSG_ERROR:
                    error = -struct.unpack_from("=i", data, offset + _NLMSGHDR.size)[0]
                    raise OSError(error, "netlink dump failed")
                yield msg_type, data[offset + _NLMSGHDR.size:offset + length]
                offset += _align(length)


def ipv4_addresses():
    """[(ifindex, prefixlen, address, label)] of every IPv4 address."""
    found = []
    request = _IFADDRMSG.pack(socket.AF_INET, 0, 0, 0, 0)
    for kind, body in _dump(RTM_GETADDR, request):
        if kind != RTM_NEWADDR:
            continue
        _, prefixlen, _, _, index = _IFADDRMSG.unpack_from(body)
        attrs = attributes(body, _IFADDRMSG.size)
        raw = attrs.get(IFA_LOCAL) or attrs.get(IFA_ADDRESS)
        if raw and len(raw) == 4:
            label = attrs.get(IFA_LABEL, b"").split(b"\0", 1)[0].decode(errors="replace")
            found.append((index, prefixlen, socket.inet_ntoa(raw), label))
    return found


def ipv4_routes(table=254):
    """[(destination, dst_len, scope, oif)] of the IPv4 routes in one table."""
    found = []
    request = _RTMSG.pack(socket.AF_INET, 0, 0, 0, 0, 0, 0, 0, 0)
    for kind, body in _dump(RTM_GETROUTE, request):
        if kind != RTM_NEWROUTE:
            continue
        _, dst_len, _, _, rtm_table, _, scope, _, _ = _RTMSG.unpack_from(body)
        attrs = attributes(body, _RTMSG.size)
        if RTA_TABLE in attrs:
            rtm_table = struct.unpack("=I", attrs[RTA_TABLE])[0]
        if rtm_table != table:
            continue
        dst = socket.inet_ntoa(attrs[RTA_DST]) if RTA_DST in attrs else "0.0.0.0"
        oif = struct.unpack("=I", attrs[RTA_OIF])[0] if RTA_OIF in attrs else None
        found.append((dst, dst_len, scope, oif))
    return found
