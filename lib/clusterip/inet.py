"""IPv4 addresses as 4-byte strings: parse, classify, networks.

Why not the standard library's ipaddress: every action parses the VIP and
matches it against routes, and ``import ipaddress`` (with functools) costs
~1.3 ms, a tenth of the monitor's budget (issue #6).  What the agent needs
is a strict parser (the kernel's inet_pton) and prefix arithmetic on ints.
"""

import _socket  # not socket: see clusterip.rtnl

_BITS = 32


def parse(text):
    """The packed address for dotted-quad text, or None when it is not one.

    inet_pton, unlike inet_aton, takes exactly four decimal parts: no
    "10.1", no hex, no octal, no trailing junk.
    """
    try:
        return _socket.inet_pton(_socket.AF_INET, text)
    except (OSError, ValueError, TypeError):  # ValueError: an embedded NUL
        return None


def text(packed):
    return _socket.inet_ntop(_socket.AF_INET, packed)


def _int(packed):
    return int.from_bytes(packed, "big")


def _packed(number):
    return number.to_bytes(_BITS // 8, "big")


def _mask(prefixlen):
    return ((1 << prefixlen) - 1) << (_BITS - prefixlen)


def in_network(packed, network, prefixlen):
    """Whether the address lies in network/prefixlen (host bits of network ignored)."""
    mask = _mask(prefixlen)
    return _int(packed) & mask == _int(network) & mask


def network_address(packed, prefixlen):
    return _packed(_int(packed) & _mask(prefixlen))


def broadcast_address(packed, prefixlen):
    return _packed(_int(packed) | (_mask(_BITS) ^ _mask(prefixlen)))


def unusable_reason(packed):
    """Why the address cannot be a cluster address, or None when it can."""
    first = packed[0]
    if packed == b"\0\0\0\0":
        return "unspecified"
    if first == 127:
        return "loopback"
    if 224 <= first <= 239:
        return "multicast"
    if packed == b"\xff\xff\xff\xff":
        return "broadcast"
    if first >= 240:
        return "reserved"
    return None
