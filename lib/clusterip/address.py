"""The node side of the VIP: the address alias, multicast membership and
the announcement (gratuitous ARP for IPv4, an unsolicited Neighbour
Advertisement for IPv6).

The address goes through rtnetlink (:mod:`clusterip.kernel.rtnl`),
multicast membership and the announcement through :mod:`clusterip.kernel.link`;
this module decides what is there and what to change.  Every call is
idempotent: adding what exists or deleting what is gone is success.
"""

import _socket  # not socket: see clusterip.kernel
import collections
import errno
import struct

from clusterip import inet
from clusterip.errors import GenericError, InvalidArgument
from clusterip.kernel import link, rtnl
from clusterip.params import valid_nic_name

RT_SCOPE_LINK = 253
ETH_P_ARP = 0x0806
ETH_P_IPV6 = 0x86DD
IPPROTO_ICMPV6 = 58
ND_NEIGHBOR_ADVERT = 136
ALL_NODES = b"\xff\x02" + bytes(13) + b"\x01"  # ff02::1


class Placement(collections.namedtuple("Placement", "nic prefixlen")):
    """Where the VIP lives on this node: resolved from parameters and routes."""

    __slots__ = ()

    def label(self):
        # ip-addr labels must start with the device name and fit IFNAMSIZ.
        label = self.nic + ":cip"
        return label if len(label) <= 15 else None


def _family(packed):
    return _socket.AF_INET6 if inet.is_ipv6(packed) else _socket.AF_INET


def _ifindex(nic):
    try:
        return _socket.if_nametoindex(nic)
    except OSError:
        return None


def _vip_addresses(packed):
    """[(ifindex, prefixlen, flags)] for every interface holding the VIP."""
    return [(index, prefixlen, flags)
            for index, prefixlen, address, _, flags in rtnl.addresses(_family(packed))
            if address == packed]


def _on_link(scope, has_gateway, packed):
    # IPv4 marks a subnet's route with scope link; IPv6 keeps scope universe
    # and simply has no gateway.
    return not has_gateway if inet.is_ipv6(packed) else scope == RT_SCOPE_LINK


def _covering_route(ip, nic_index=None):
    """(ifindex, prefixlen) of the most specific on-link route covering ip (IPaddr2's findif)."""
    best = None
    for destination, prefixlen, scope, oif, has_gateway in rtnl.routes(_family(ip)):
        if prefixlen == 0 or not _on_link(scope, has_gateway, ip):
            continue
        if nic_index is not None and oif != nic_index:
            continue
        if inet.in_network(ip, destination, prefixlen) and (
                best is None or prefixlen > best[1]):
            best = (oif, prefixlen)
    return best


def resolve(params):
    """Choose the NIC and prefix length for this node; InvalidArgument (2) if impossible.

    Reads only (rtnetlink in the standard library): monitor calls it too.
    """
    nic = params.nic
    if nic is None:
        # Already configured (a later instance, monitor, stop): keep that interface,
        # because the VIP's own local route now shadows the covering route.
        present = _vip_addresses(params.packed)
        index = present[0][0] if present else None
        if index is None:
            route = _covering_route(params.packed)
            if route is None:
                raise InvalidArgument("no interface has a route covering %s; set nic"
                                      % params.vip)
            index = route[0]
        try:
            nic = _socket.if_indextoname(index)
        except OSError:
            raise InvalidArgument("the interface holding %s disappeared" % params.vip) from None
        # Kernel names may hold '"', ';', '$' ...: never splice such a name into
        # the packet filter's rules (in an nft string a '"' ends the quote).
        if not valid_nic_name(nic):
            raise InvalidArgument("the interface with a route covering %s is named %r, which "
                                  "the packet filter cannot hold safely; rename it"
                                  % (params.vip, nic))
    index = _ifindex(nic)
    if index is None:
        raise InvalidArgument("nic %s does not exist on this node" % nic)
    prefix = params.cidr_netmask
    if prefix is None:
        route = _covering_route(params.packed, index)
        prefix = route[1] if route else len(params.packed) * 8
    return Placement(nic=nic, prefixlen=prefix)


_UNUSABLE = rtnl.IFA_F_TENTATIVE | rtnl.IFA_F_DADFAILED  # IPv6: left so by DAD


def address_present(vip, placement):
    """True when the VIP is configured on the chosen NIC with the chosen prefix
    and usable (IPv6: not left tentative or dadfailed by someone's ``ip addr add``
    without nodad)."""
    index = _ifindex(placement.nic)
    return index is not None and any(
        (found, prefixlen) == (index, placement.prefixlen) and not flags & _UNUSABLE
        for found, prefixlen, flags in _vip_addresses(inet.parse(vip)))


def add_address(vip, placement):
    packed = inet.parse(vip)
    broadcast = label = None
    if not inet.is_ipv6(packed):
        # The broadcast address IPaddr2 (ip addr add ... brd +) would set; IPv6
        # has neither broadcast nor labels.
        label = placement.label()
        if placement.prefixlen < 31:
            broadcast = inet.broadcast_address(packed, placement.prefixlen)
    index = _ifindex(placement.nic)
    if index is None:
        raise InvalidArgument("nic %s does not exist on this node" % placement.nic)
    if (index, placement.prefixlen) in {(found, prefixlen) for found, prefixlen, flags
                                        in _vip_addresses(packed) if flags & _UNUSABLE}:
        # Added by hand without nodad: tentative or dadfailed, never usable; an
        # add would leave it so (EEXIST), so it is replaced by one with nodad.
        try:
            rtnl.delete_address(index, packed, placement.prefixlen)
        except OSError as error:
            if error.errno != errno.EADDRNOTAVAIL:  # gone meanwhile: fine
                raise GenericError("cannot replace the tentative %s/%d on %s: %s" % (
                    vip, placement.prefixlen, placement.nic, error.strerror)) from None
    try:
        rtnl.add_address(index, packed, placement.prefixlen, broadcast, label)
    except OSError as error:
        if error.errno != errno.EEXIST:
            raise GenericError("cannot add %s/%d to %s: %s" % (
                vip, placement.prefixlen, placement.nic, error.strerror)) from None


def remove_address(vip):
    """Remove the VIP from every interface that holds it (the NIC may have changed)."""
    packed = inet.parse(vip)
    for index, prefixlen, _ in _vip_addresses(packed):
        try:
            rtnl.delete_address(index, packed, prefixlen)
        except OSError as error:
            if error.errno not in (errno.EADDRNOTAVAIL, errno.ENODEV):
                raise GenericError("cannot remove %s: %s" % (vip, error.strerror)) from None


# --- multicast membership -------------------------------------------------

def _mac_bytes(mac):
    return bytes(int(part, 16) for part in mac.split(":"))


def join_multicast(nic, mac):
    """Make the NIC accept frames for the cluster MAC (idempotent: a global membership)."""
    try:
        link.add_multicast(nic, _mac_bytes(mac))
    except OSError as error:
        raise GenericError("cannot join %s to multicast MAC %s: %s"
                           % (nic, mac, error.strerror)) from None


def leave_multicast(nic, mac):
    try:
        link.delete_multicast(nic, _mac_bytes(mac))
    except OSError:
        pass  # not a member, or the NIC is gone: nothing to undo


def multicast_joined(nic, mac):
    return (nic, mac.replace(":", "")) in link.read_multicast_macs()


def nic_mac(nic):
    """The interface's own MAC as "aa:bb:..", or None when it has none or is gone."""
    try:
        with open("/sys/class/net/%s/address" % nic, encoding="ascii") as f:
            mac = f.read().strip()
    except OSError:
        return None
    return mac if len(mac) == 17 else None


# --- announcing the VIP ------------------------------------------------------

def build_gratuitous_arp(nic_mac, sender_mac, vip, opcode):
    """An Ethernet broadcast ARP frame announcing vip at sender_mac (1 request, 2 reply)."""
    broadcast = b"\xff" * 6
    ip = _socket.inet_aton(vip)
    target_mac = broadcast if opcode == 2 else b"\x00" * 6
    return (broadcast + nic_mac + struct.pack("!H", ETH_P_ARP)
            + struct.pack("!HHBBH", 1, 0x0800, 6, 4, opcode)
            + sender_mac + ip + target_mac + ip)


def build_unsolicited_na(nic_mac, target_mac, vip):
    """An Ethernet frame to all nodes (ff02::1): a Neighbour Advertisement with
    the Override flag telling that vip is at target_mac (RFC 4861 7.2.6)."""
    packed = _socket.inet_pton(_socket.AF_INET6, vip)
    # type, code, checksum, flags (Override), target, Target Link-Layer Address option
    body = struct.pack("!BBHI", ND_NEIGHBOR_ADVERT, 0, 0, 0x20000000) + packed \
        + struct.pack("!BB", 2, 1) + target_mac
    pseudo = packed + ALL_NODES + struct.pack("!I3xB", len(body), IPPROTO_ICMPV6)
    checksum = 0xFFFF ^ inet.ones_complement_sum(pseudo + body)
    body = body[:2] + struct.pack("!H", checksum) + body[4:]
    return (b"\x33\x33" + ALL_NODES[-4:] + nic_mac + struct.pack("!H", ETH_P_IPV6)
            + struct.pack("!IHBB", 0x60000000, len(body), IPPROTO_ICMPV6, 255)
            + packed + ALL_NODES + body)


def announce(nic, vip, mac=None):
    """Tell the segment that vip is at mac (default: the NIC's own MAC): for
    IPv4 one gratuitous ARP request and reply, for IPv6 one unsolicited
    Neighbour Advertisement.

    Through a packet socket, which bypasses the ARP and IPv6 output hooks, so
    the frame carries the cluster MAC itself rather than relying on the
    rewrite.  Best effort, like IPaddr2's send_arp and send_ua: a failure is
    returned for logging, never raised.
    """
    def frames(nic_mac):
        target = _mac_bytes(mac) if mac else nic_mac
        if ":" in vip:
            return [build_unsolicited_na(nic_mac, target, vip)]
        return [build_gratuitous_arp(nic_mac, target, vip, opcode) for opcode in (1, 2)]

    try:
        link.send_frames(nic, frames)
    except OSError as error:
        return "announcing %s on %s failed: %s" % (vip, nic, error.strerror)
    return None
