"""rtnetlink: IPv4 and IPv6 addresses and routes.

What the agent needs is four messages: dump addresses, dump routes, add and
delete one address; each is a few struct packs (see :mod:`clusterip.kernel`
for why not pyroute2).
"""

import _socket
import struct

from clusterip.kernel import netlink
from clusterip.kernel.netlink import NLM_F_CREATE, NLM_F_EXCL, attribute, attributes

RTM_NEWADDR, RTM_DELADDR, RTM_GETADDR = 20, 21, 22
RTM_GETROUTE = 26
RTM_NEWROUTE = 24
IFA_ADDRESS, IFA_LOCAL, IFA_LABEL, IFA_BROADCAST, IFA_FLAGS = 1, 2, 3, 4, 8
# Every node holds the same cluster address: Duplicate Address Detection
# would mark it "dadfailed" on all but the first.
IFA_F_NODAD = 0x02
IFA_F_DADFAILED = 0x08
IFA_F_TENTATIVE = 0x40
RT_SCOPE_UNIVERSE = 0
RTA_DST, RTA_OIF, RTA_GATEWAY, RTA_TABLE = 1, 4, 5, 15
_FAMILY = {4: _socket.AF_INET, 16: _socket.AF_INET6}

_IFADDRMSG = struct.Struct("=BBBBI")  # family, prefixlen, flags, scope, index
# family, dst_len, src_len, tos, table, protocol, scope, type, flags
_RTMSG = struct.Struct("=BBBBBBBBI")


def _request(kind, flags, payload):
    """Send one change and wait for its acknowledgement; OSError(errno) on failure."""
    netlink.request(_socket.NETLINK_ROUTE, kind, flags, payload)


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
    return netlink.dump(_socket.NETLINK_ROUTE, kind, payload)


def addresses(family):
    """[(ifindex, prefixlen, packed, label, flags)] of every address of a family
    (_socket.AF_INET or AF_INET6); IPv6 addresses have no label ("")."""
    found = []
    request = _IFADDRMSG.pack(family, 0, 0, 0, 0)
    for kind, body in _dump(RTM_GETADDR, request):
        if kind != RTM_NEWADDR:
            continue
        if len(body) < _IFADDRMSG.size:
            raise netlink.damaged("address message")
        msg_family, prefixlen, flags, _, index = _IFADDRMSG.unpack_from(body)
        attrs = attributes(body, _IFADDRMSG.size)
        raw = attrs.get(IFA_LOCAL) or attrs.get(IFA_ADDRESS)
        if msg_family == family and raw:
            if IFA_FLAGS in attrs:  # the full 32 bits; ifa_flags holds only the low 8
                flags = netlink.u32(attrs[IFA_FLAGS])
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
        if len(body) < _RTMSG.size:
            raise netlink.damaged("route message")
        msg_family, dst_len, _, _, rtm_table, _, scope, _, _ = _RTMSG.unpack_from(body)
        attrs = attributes(body, _RTMSG.size)
        if RTA_TABLE in attrs:
            rtm_table = netlink.u32(attrs[RTA_TABLE])
        if msg_family != family or rtm_table != table:
            continue
        width = 4 if family == _socket.AF_INET else 16
        dst = attrs.get(RTA_DST, bytes(width))
        oif = netlink.u32(attrs[RTA_OIF]) if RTA_OIF in attrs else None
        found.append((dst, dst_len, scope, oif, RTA_GATEWAY in attrs))
    return found
