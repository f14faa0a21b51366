"""The node side of the VIP: the address alias, the NIC accepting the cluster MAC and
the announcement (gratuitous ARP for IPv4, an unsolicited Neighbour
Advertisement for IPv6).

The address and a unicast cluster MAC's filter entry go through rtnetlink
(:mod:`clusterip.kernel.rtnl`), a multicast one's membership and the
announcement through :mod:`clusterip.kernel.link`; this module decides what
is there and what to change.  Every call is idempotent: adding what exists
or deleting what is gone is success.
"""

import _socket  # not socket: see clusterip.kernel
import errno
import struct

from clusterip import inet
from clusterip.errors import GenericError, InvalidArgument, NotConfigured
from clusterip.kernel import link, rtnl
from clusterip.params import valid_nic_name
from clusterip.record import record

RT_SCOPE_LINK = 253
ETH_P_ARP = 0x0806
ETH_P_IPV6 = 0x86DD
IPPROTO_ICMPV6 = 58
ND_NEIGHBOR_ADVERT = 136
ALL_NODES = b"\xff\x02" + bytes(13) + b"\x01"  # ff02::1


class Placement(record("Placement", "nic prefixlen")):
    """Where the VIP lives on this node: resolved from parameters and routes."""

    __slots__ = ()


# The agent's own prefix routes (``ip route`` shows "proto 193"), told apart
# from the kernel's (proto kernel) and the administrator's.
RTPROT_CLUSTERIP = 193


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
    for destination, prefixlen, scope, oif, has_gateway, _, _ in rtnl.routes(_family(ip)):
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
    if params.iflabel is not None and len(nic) + 1 + len(params.iflabel) > 15:
        # Given a nic, params refused it (6); a nic found by route may differ per node.
        raise InvalidArgument("iflabel=%s makes the label %s:%s, longer than the kernel's 15 "
                              "characters" % (params.iflabel, nic, params.iflabel))
    prefix = params.cidr_netmask
    if prefix is None:
        route = _covering_route(params.packed, index)
        prefix = route[1] if route else len(params.packed) * 8
    return Placement(nic=nic, prefixlen=prefix)


_UNUSABLE = rtnl.IFA_F_TENTATIVE | rtnl.IFA_F_DADFAILED  # IPv6: left so by DAD


def _wanted_flags(params):
    """The address flags that keep the node from choosing a cloned VIP as the
    source of its own connections, whose replies would be hashed into other
    nodes' buckets (issue #13), or that the plain-mode parameters ask for.

    IPv6 picks sources by RFC 6724 and skips a deprecated address (preferred
    lifetime 0) when another one fits; IPv4 takes the route's source, so a
    clone's address gets no kernel prefix route (which would carry the VIP as
    its source when the VIP is alone on its subnet) and the agent adds one
    with the node's own address where needed (:func:`_ensure_subnet_route`).
    """
    flags = 0
    if params.noprefixroute or (params.cloned and not params.ipv6):
        flags |= rtnl.IFA_F_NOPREFIXROUTE
    if params.ipv6 and params.preferred_lft == 0:
        flags |= rtnl.IFA_F_DEPRECATED
    return flags


def _flags_text(flags):
    return " and ".join(text for bit, text in (
        (rtnl.IFA_F_DEPRECATED, "preferred_lft 0"),
        (rtnl.IFA_F_NOPREFIXROUTE, "noprefixroute")) if flags & bit)


def _needs_subnet_route(params, placement):
    return params.cloned and not params.ipv6 and placement.prefixlen < 32


def _subnet(params, placement):
    return inet.network_address(params.packed, placement.prefixlen)


def _usable_flags(packed, placement):
    """The flags of each usable copy of the address on the placement's NIC and prefix."""
    index = _ifindex(placement.nic)
    return [flags for at, prefixlen, flags in _vip_addresses(packed)
            if index is not None and (at, prefixlen) == (index, placement.prefixlen)
            and not flags & _UNUSABLE]


def address_present(vip, placement):
    """Whether the VIP is on the placement's NIC, usable (the background
    announcer's check before each send)."""
    return bool(_usable_flags(inet.parse(vip), placement))


def address_problems(params, placement):
    """What is missing of the VIP's address on this node, as "missing" pieces:
    the address on the chosen NIC with the chosen prefix, usable (IPv6: not
    left tentative or dadfailed by someone's ``ip addr add`` without nodad),
    with the flags it needs, and for a clone's IPv4 address a route to its
    subnet on the NIC (the kernel made none)."""
    p = params
    found = _usable_flags(p.packed, placement)
    where = "address %s/%d on %s" % (p.vip, placement.prefixlen, placement.nic)
    if not found:
        return [where]
    missing = []
    lacking = _wanted_flags(p) & ~found[0]
    if lacking:
        missing.append("%s with %s" % (where, _flags_text(lacking)))
    if _needs_subnet_route(p, placement) and _covering_subnet(
            p, placement, _ifindex(placement.nic)) is None:
        missing.append("route to %s/%d on %s" % (inet.text(_subnet(p, placement)),
                                                 placement.prefixlen, placement.nic))
    return missing


def lacks_flags(params, placement):
    """Whether the VIP is on the placement's NIC, usable, but without a flag it
    needs: as an older agent added it (noprefixroute came with issue #13),
    which add_address replaces."""
    found = _usable_flags(params.packed, placement)
    return bool(found) and bool(_wanted_flags(params) & ~found[0])


def _covering_subnet(params, placement, index):
    """The prefix length of an on-link route on ``index`` that covers the VIP's
    whole subnet (the node's own address's, the administrator's or ours), or None."""
    network = _subnet(params, placement)
    lengths = [prefixlen for destination, prefixlen, scope, oif, has_gateway, _, _
               in rtnl.routes(_socket.AF_INET)
               if oif == index and 0 < prefixlen <= placement.prefixlen
               and _on_link(scope, has_gateway, network)
               and inet.in_network(network, destination, prefixlen)]
    return max(lengths) if lengths else None


def _label(params, placement):
    """The IPv4 label: <nic>:<iflabel>, by default <nic>:cip where that fits."""
    if params.iflabel is None:
        label = placement.nic + ":cip"
        return label if len(label) <= 15 else None
    return "%s:%s" % (placement.nic, params.iflabel)  # fits: checked by resolve()


def _broadcast(params, placement):
    """The IPv4 broadcast address of ``broadcast`` (ip's brd +, brd - or an address)."""
    if params.broadcast not in ("+", "-"):
        return inet.parse(params.broadcast)
    if placement.prefixlen >= 31:  # a point-to-point /31 or a /32 has none
        return None
    if params.broadcast == "+":
        return inet.broadcast_address(params.packed, placement.prefixlen)
    return inet.network_address(params.packed, placement.prefixlen)


def add_address(params, placement):
    """Add the VIP as the parameters say (idempotent) and, for a clone's IPv4
    address alone on its subnet, the route to that subnet.

    An address that is there but unusable or lacks the flags it needs (someone
    re-added it by hand) is replaced.  Returns a warning to log, or None.
    """
    p, packed = params, params.packed
    broadcast = label = None
    if not p.ipv6:  # IPv6 has neither broadcast addresses nor labels
        label = _label(p, placement)
        broadcast = _broadcast(p, placement)
    index = _ifindex(placement.nic)
    if index is None:
        raise InvalidArgument("nic %s does not exist on this node" % placement.nic)
    wanted = _wanted_flags(p)
    for at, prefixlen, flags in _vip_addresses(packed):
        if (at, prefixlen) != (index, placement.prefixlen):
            continue
        if flags & _UNUSABLE or wanted & ~flags:
            # An add would leave it so (EEXIST): delete it and add it anew.
            try:
                rtnl.delete_address(index, packed, placement.prefixlen)
            except OSError as error:
                if error.errno != errno.EADDRNOTAVAIL:  # gone meanwhile: fine
                    raise GenericError("cannot replace %s/%d on %s: %s" % (
                        p.vip, placement.prefixlen, placement.nic, error.strerror)) from None
    try:
        rtnl.add_address(index, packed, placement.prefixlen, broadcast, label, wanted,
                         p.preferred_lft)
    except OSError as error:
        if error.errno != errno.EEXIST:
            raise GenericError("cannot add %s/%d to %s: %s" % (
                p.vip, placement.prefixlen, placement.nic, error.strerror)) from None
    if _needs_subnet_route(p, placement):
        return _ensure_subnet_route(p, placement, index)
    return None


def _own_source(vip, index):
    """The node's own IPv4 address to give the clone's subnet route as its
    source: a primary address of the NIC, else of another interface, never a
    cloned VIP (those carry noprefixroute) nor a loopback address."""
    candidates = [(at != index, at, packed)
                  for at, _, packed, _, flags in rtnl.addresses(_socket.AF_INET)
                  if packed != vip and packed[0] != 127
                  and not flags & (rtnl.IFA_F_SECONDARY | rtnl.IFA_F_NOPREFIXROUTE)]
    return min(candidates)[2] if candidates else None


def _ensure_subnet_route(params, placement, index):
    p = params
    if _covering_subnet(p, placement, index) is not None:
        return None  # the node's own address (or the administrator) routes the subnet
    network = _subnet(p, placement)
    source = _own_source(p.packed, index)
    try:
        rtnl.add_route(index, network, placement.prefixlen, RTPROT_CLUSTERIP, source)
    except OSError as error:
        if error.errno != errno.EEXIST:
            raise GenericError("cannot add the route to %s/%d on %s: %s" % (
                inet.text(network), placement.prefixlen, placement.nic,
                error.strerror)) from None
    if source is None:
        return ("the node has no IPv4 address of its own: its own connections to %s/%d "
                "leave from %s, and most of their replies reach other nodes"
                % (inet.text(network), placement.prefixlen, p.vip))
    return None


def remove_address(vip):
    """Remove the VIP from every interface that holds it (the NIC may have
    changed), and the agent's route to its subnet where no other address of
    that subnet is left on the interface."""
    packed = inet.parse(vip)
    removed = _vip_addresses(packed)
    for index, prefixlen, _ in removed:
        try:
            rtnl.delete_address(index, packed, prefixlen)
        except OSError as error:
            if error.errno not in (errno.EADDRNOTAVAIL, errno.ENODEV):
                raise GenericError("cannot remove %s: %s" % (vip, error.strerror)) from None
    if removed and not inet.is_ipv6(packed):
        _remove_subnet_routes(packed, removed)


def _remove_subnet_routes(packed, removed):
    left = rtnl.addresses(_socket.AF_INET)
    for destination, prefixlen, _, oif, _, protocol, _ in rtnl.routes(_socket.AF_INET):
        if protocol != RTPROT_CLUSTERIP or not any(
                at == oif and inet.in_network(packed, destination, prefixlen)
                for at, _, _ in removed):
            continue
        if any(at == oif and flags & rtnl.IFA_F_NOPREFIXROUTE
               and inet.in_network(address, destination, prefixlen)
               for at, _, address, _, flags in left):
            continue  # another cloned VIP of the subnet still needs it
        try:
            rtnl.delete_route(oif, destination, prefixlen, RTPROT_CLUSTERIP)
        except OSError as error:
            if error.errno != errno.ESRCH:  # gone meanwhile: fine
                raise GenericError("cannot remove the route to %s/%d: %s" % (
                    inet.text(destination), prefixlen, error.strerror)) from None


# --- the NIC accepting the cluster MAC ------------------------------------
# A multicast cluster MAC: a membership of the NIC (SIOCADDMULTI, as ``ip maddr
# add``).  A shared unicast one: an entry in the NIC's unicast filter (as
# ``bridge fdb add MAC dev NIC self``), promiscuity where the driver has none.

def _mac_bytes(mac):
    return bytes(int(part, 16) for part in mac.split(":"))


def is_unicast(mac):
    """Whether the cluster MAC is a shared unicast MAC (even first octet)."""
    return not int(mac[:2], 16) & 1


def accept_cluster_mac(nic, mac):
    """Make the NIC accept frames for the cluster MAC (idempotent: a global membership)."""
    try:
        if is_unicast(mac):
            rtnl.add_unicast_filter(_socket.if_nametoindex(nic), _mac_bytes(mac))
        else:
            link.add_multicast(nic, _mac_bytes(mac))
    except OSError as error:
        raise GenericError("cannot make %s accept the cluster MAC %s: %s"
                           % (nic, mac, error.strerror)) from None


def stop_accepting_cluster_mac(nic, mac):
    try:
        if is_unicast(mac):
            rtnl.delete_unicast_filter(_socket.if_nametoindex(nic), _mac_bytes(mac))
        else:
            link.delete_multicast(nic, _mac_bytes(mac))
    except OSError:
        pass  # not accepted, or the NIC is gone: nothing to undo


def check_cluster_mac(params, placement):
    """NotConfigured (6) when a unicast cluster MAC is the NIC's own: the node
    would send frames from it, and switches would learn it on one port."""
    if is_unicast(params.clustermac) and nic_mac(placement.nic) == params.clustermac:
        raise NotConfigured("clustermac=%s is the MAC of %s itself: a shared unicast "
                            "cluster MAC must be one no NIC has"
                            % (params.clustermac, placement.nic))


def cluster_mac_accepted(nic, mac):
    if not is_unicast(mac):
        return (nic, mac.replace(":", "")) in link.read_multicast_macs()
    index = _ifindex(nic)
    try:
        return index is not None and _mac_bytes(mac) in rtnl.unicast_filter(index)
    except OSError:
        return False


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
