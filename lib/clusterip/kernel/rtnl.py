"""rtnetlink: IPv4 and IPv6 addresses and routes, a NIC's unicast filter.

What the agent needs is nine messages: dump addresses, dump routes, add and
delete one address, add and delete one route, and for a shared unicast
cluster MAC add, delete and dump a NIC's own ("self") forwarding entries;
each is a few struct packs (see :mod:`clusterip.kernel` for why not pyroute2).
"""

import _socket
import struct

from clusterip.kernel import netlink
from clusterip.kernel.netlink import NLM_F_CREATE, NLM_F_EXCL, attribute, attributes

RTM_NEWADDR, RTM_DELADDR, RTM_GETADDR = 20, 21, 22
RTM_NEWROUTE, RTM_DELROUTE, RTM_GETROUTE = 24, 25, 26
IFA_ADDRESS, IFA_LOCAL, IFA_LABEL, IFA_BROADCAST, IFA_CACHEINFO, IFA_FLAGS = 1, 2, 3, 4, 6, 8
# Every node holds the same cluster address: Duplicate Address Detection
# would mark it "dadfailed" on all but the first.
IFA_F_SECONDARY = 0x01  # IPv4: a further address of a subnet, never a route's source
IFA_F_NODAD = 0x02
IFA_F_DADFAILED = 0x08
IFA_F_DEPRECATED = 0x20  # IPv6, preferred lifetime over: never chosen as a source
IFA_F_TENTATIVE = 0x40
IFA_F_NOPREFIXROUTE = 0x200  # above the low byte: only the IFA_FLAGS attribute holds it
INFINITY_LIFE_TIME = 0xFFFFFFFF
RT_SCOPE_UNIVERSE, RT_SCOPE_LINK = 0, 253
RT_TABLE_MAIN = 254
RTN_UNICAST = 1
RTA_DST, RTA_OIF, RTA_GATEWAY, RTA_PREFSRC, RTA_TABLE = 1, 4, 5, 7, 15
RTM_NEWNEIGH, RTM_DELNEIGH, RTM_GETNEIGH = 28, 29, 30
NDA_LLADDR = 2
NTF_SELF = 0x02
NUD_PERMANENT = 0x80
AF_BRIDGE = 7
_FAMILY = {4: _socket.AF_INET, 16: _socket.AF_INET6}

_IFADDRMSG = struct.Struct("=BBBBI")  # family, prefixlen, flags, scope, index
# family, dst_len, src_len, tos, table, protocol, scope, type, flags
_RTMSG = struct.Struct("=BBBBBBBBI")
_NDMSG = struct.Struct("=BBHiHBB")  # family, 2 pads, ifindex, state, flags, type
# The fdb dump request: the kernel filters by the index of an ifinfomsg
# (family, pad, type, index, flags, change), not of an ndmsg.
_IFINFOMSG = struct.Struct("=BBHiII")


def _request(kind, flags, payload):
    """Send one change and wait for its acknowledgement; OSError(errno) on failure."""
    netlink.request(_socket.NETLINK_ROUTE, kind, flags, payload)


def _address_message(index, packed, prefixlen, flags=0, extra=b""):
    return (_IFADDRMSG.pack(_FAMILY[len(packed)], prefixlen, flags, RT_SCOPE_UNIVERSE, index)
            + attribute(IFA_LOCAL, packed) + attribute(IFA_ADDRESS, packed) + extra)


def add_address(index, packed, prefixlen, broadcast=None, label=None, flags=0,
                preferred=None):
    """``ip addr add address/prefixlen [brd ..] [label ..] [flags] dev index``,
    for IPv6 always with ``nodad``; ``preferred``: the preferred lifetime in
    seconds (valid forever), None for forever.  The address family is the
    length of ``packed``.

    Raises OSError: EEXIST when the address is already there (the caller
    decides whether that is success), ENODEV when the interface is gone.
    """
    extra = b""
    if broadcast is not None:
        extra += attribute(IFA_BROADCAST, broadcast)
    if label is not None:
        extra += attribute(IFA_LABEL, label.encode() + b"\0")
    if len(packed) == 16:
        flags |= IFA_F_NODAD
    if flags > 0xFF:
        extra += attribute(IFA_FLAGS, struct.pack("=I", flags))
    if preferred is not None:
        # struct ifa_cacheinfo: preferred, valid, and two stamps the kernel ignores here.
        extra += attribute(IFA_CACHEINFO, struct.pack("=IIII", preferred,
                                                       INFINITY_LIFE_TIME, 0, 0))
    _request(RTM_NEWADDR, NLM_F_CREATE | NLM_F_EXCL,
             _address_message(index, packed, prefixlen, flags & 0xFF, extra))


def delete_address(index, packed, prefixlen):
    """``ip addr del address/prefixlen dev index``; OSError EADDRNOTAVAIL when absent."""
    _request(RTM_DELADDR, 0, _address_message(index, packed, prefixlen))


def _route_message(index, destination, prefixlen, protocol, prefsrc=None):
    """An on-link (scope link) unicast route of the main table through index."""
    family = _FAMILY[len(destination)]
    return (_RTMSG.pack(family, prefixlen, 0, 0, RT_TABLE_MAIN, protocol, RT_SCOPE_LINK,
                        RTN_UNICAST, 0)
            + attribute(RTA_DST, destination) + attribute(RTA_OIF, struct.pack("=I", index))
            + (attribute(RTA_PREFSRC, prefsrc) if prefsrc is not None else b""))


def add_route(index, destination, prefixlen, protocol, prefsrc=None):
    """``ip route add destination/prefixlen dev index scope link proto protocol
    [src prefsrc]``; OSError EEXIST when that route exists."""
    _request(RTM_NEWROUTE, NLM_F_CREATE | NLM_F_EXCL,
             _route_message(index, destination, prefixlen, protocol, prefsrc))


def delete_route(index, destination, prefixlen, protocol):
    """Delete that route, whatever its source; OSError ESRCH when there is none."""
    _request(RTM_DELROUTE, 0, _route_message(index, destination, prefixlen, protocol))


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


def routes(family, table=RT_TABLE_MAIN):
    """[(packed destination, dst_len, scope, oif, has_gateway, protocol, prefsrc
    or None)] of a family's routes in one table."""
    found = []
    request = _RTMSG.pack(family, 0, 0, 0, 0, 0, 0, 0, 0)
    for kind, body in _dump(RTM_GETROUTE, request):
        if kind != RTM_NEWROUTE:
            continue
        if len(body) < _RTMSG.size:
            raise netlink.damaged("route message")
        msg_family, dst_len, _, _, rtm_table, protocol, scope, _, _ = _RTMSG.unpack_from(body)
        attrs = attributes(body, _RTMSG.size)
        if RTA_TABLE in attrs:
            rtm_table = netlink.u32(attrs[RTA_TABLE])
        if msg_family != family or rtm_table != table:
            continue
        width = 4 if family == _socket.AF_INET else 16
        dst = attrs.get(RTA_DST, bytes(width))
        oif = netlink.u32(attrs[RTA_OIF]) if RTA_OIF in attrs else None
        found.append((dst, dst_len, scope, oif, RTA_GATEWAY in attrs, protocol,
                      attrs.get(RTA_PREFSRC)))
    return found


# --- a NIC's unicast address filter -------------------------------------------
# What ``bridge fdb add MAC dev NIC self permanent`` does: on a NIC that is no
# bridge port, the kernel's default handler puts a unicast MAC in the NIC's
# unicast filter (dev_uc_add_excl) and, where the driver has no such filter,
# turns on promiscuity for as long as the list is not empty.


def _fdb_message(index, mac):
    return _NDMSG.pack(AF_BRIDGE, 0, 0, index, NUD_PERMANENT, NTF_SELF, 0) \
        + attribute(NDA_LLADDR, mac)


def add_unicast_filter(index, mac):
    """Put a unicast MAC (6 bytes) in the NIC's filter; success when it is there
    already; OSError from the kernel (ENODEV: the NIC is gone)."""
    _request(RTM_NEWNEIGH, NLM_F_CREATE, _fdb_message(index, mac))


def delete_unicast_filter(index, mac):
    """Take it out; OSError ENOENT when it is not there."""
    _request(RTM_DELNEIGH, 0, _fdb_message(index, mac))


def unicast_filter(index):
    """{6-byte MAC} of the NIC's own forwarding entries (its unicast and
    multicast filter lists, as ``bridge fdb show dev NIC`` lists them "self")."""
    found = set()
    for kind, body in _dump(RTM_GETNEIGH, _IFINFOMSG.pack(AF_BRIDGE, 0, 0, index, 0, 0)):
        if kind != RTM_NEWNEIGH:
            continue
        if len(body) < _NDMSG.size:
            raise netlink.damaged("neighbour message")
        family, _, _, msg_index, _, flags, _ = _NDMSG.unpack_from(body)
        mac = attributes(body, _NDMSG.size).get(NDA_LLADDR)
        if family == AF_BRIDGE and msg_index == index and flags & NTF_SELF and mac:
            found.add(mac)
    return found
