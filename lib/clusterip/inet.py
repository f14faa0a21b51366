"""IPv4 and IPv6 addresses as 4- and 16-byte strings: parse, classify, networks.

Why not the standard library's ipaddress: every action parses the VIP and
matches it against routes, and ``import ipaddress`` (with functools) costs
~1.3 ms, a tenth of the monitor's budget (issue #6).  What the agent needs
is a strict parser (the kernel's inet_pton) and prefix arithmetic on ints;
the family is the length of the packed address.
"""

import _socket  # not socket: see clusterip.kernel
import struct

_FAMILY = {4: _socket.AF_INET, 16: _socket.AF_INET6}


def parse(text):
    """The packed address for IPv4 or IPv6 text, or None when it is neither.

    inet_pton, unlike inet_aton, takes exactly four decimal parts for IPv4:
    no "10.1", no hex, no octal, no trailing junk; for IPv6 it takes no
    scope id ("%eth0") and no leading zeros in an embedded IPv4 part.
    """
    for family in (_socket.AF_INET, _socket.AF_INET6):
        try:
            return _socket.inet_pton(family, text)
        except (OSError, ValueError, TypeError):  # ValueError: an embedded NUL
            continue
    return None


def is_ipv6(packed):
    return len(packed) == 16


def text(packed):
    """Canonical text (RFC 5952 for IPv6, as iproute2 prints it)."""
    return _socket.inet_ntop(_FAMILY[len(packed)], packed)


def _int(packed):
    return int.from_bytes(packed, "big")


def _mask(prefixlen, bits):
    return ((1 << prefixlen) - 1) << (bits - prefixlen)


def in_network(packed, network, prefixlen):
    """Whether the address lies in network/prefixlen (host bits of network ignored);
    never across families."""
    if len(packed) != len(network):
        return False
    mask = _mask(prefixlen, len(packed) * 8)
    return _int(packed) & mask == _int(network) & mask


def network_address(packed, prefixlen):
    bits = len(packed) * 8
    return (_int(packed) & _mask(prefixlen, bits)).to_bytes(len(packed), "big")


def broadcast_address(packed, prefixlen):
    bits = len(packed) * 8
    return (_int(packed) | (_mask(bits, bits) ^ _mask(prefixlen, bits))).to_bytes(
        len(packed), "big")


def unusable_reason(packed):
    """Why the address cannot be a cluster address, or None when it can."""
    if is_ipv6(packed):
        return _unusable_ipv6_reason(packed)
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


def _unusable_ipv6_reason(packed):
    """Only global unicast (2000::/3) and unique local (fc00::/7) addresses
    can be served: everything else is special or unassigned (IANA reserved)."""
    first = packed[0]
    if packed == bytes(16):
        return "unspecified"
    if packed == bytes(15) + b"\1":
        return "loopback"
    if packed[:12] == bytes(10) + b"\xff\xff":
        return "IPv4-mapped (give the IPv4 address itself)"
    if first == 0xFF:
        return "multicast"
    if first == 0xFE and packed[1] & 0xC0 == 0x80:
        # Valid on one link only (clients would need a scope id), and every
        # interface has a route covering it: no way to find the NIC.
        return "link-local"
    if first == 0xFE and packed[1] & 0xC0 == 0xC0:
        return "site-local (deprecated by RFC 3879)"
    if first & 0xE0 != 0x20 and first & 0xFE != 0xFC:
        return "reserved"
    return None


def ones_complement_sum(data):
    """The 16-bit one's complement sum of data (RFC 1071), even length."""
    total = sum(struct.unpack("!%dH" % (len(data) // 2), data))
    while total > 0xFFFF:
        total = (total & 0xFFFF) + (total >> 16)
    return total
