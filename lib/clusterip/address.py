"""The node side of the VIP: the address alias, multicast membership and
gratuitous ARP.

The address goes through pyroute2 (netlink).  Multicast membership uses the
SIOCADDMULTI/SIOCDELMULTI ioctls, exactly what ``ip maddr add`` does: no
library offers it and it needs nothing but a socket.  Every call is
idempotent in the pyroute2 sense: adding what exists or deleting what is gone
is success.
"""

import dataclasses
import fcntl
import ipaddress
import socket
import struct

from clusterip.errors import GenericError, InvalidArgument

RT_SCOPE_LINK = 253
RT_TABLE_MAIN = 254
SIOCADDMULTI = 0x8931
SIOCDELMULTI = 0x8932
ETH_P_ARP = 0x0806
_EEXIST, _ENODEV, _EADDRNOTAVAIL = 17, 19, 99


@dataclasses.dataclass(frozen=True)
class Placement:
    """Where the VIP lives on this node: resolved from parameters and routes."""

    nic: str
    prefixlen: int

    def label(self):
        # ip-addr labels must start with the device name and fit IFNAMSIZ.
        label = self.nic + ":cip"
        return label if len(label) <= 15 else None


def _iproute():
    from pyroute2 import IPRoute  # heavy import: only on paths that change addresses

    return IPRoute()


def _ifindex(ipr, nic):
    found = ipr.link_lookup(ifname=nic)
    return found[0] if found else None


def _vip_addresses(ipr, vip):
    """[(ifindex, prefixlen)] for every interface holding the VIP."""
    return [(msg["index"], msg["prefixlen"])
            for msg in ipr.get_addr(family=socket.AF_INET)
            if msg.get_attr("IFA_LOCAL") == vip or msg.get_attr("IFA_ADDRESS") == vip]


def _covering_route(ipr, ip, nic_index=None):
    """(ifindex, prefixlen) of the most specific on-link route covering ip (IPaddr2's findif)."""
    best = None
    for route in ipr.get_routes(family=socket.AF_INET, table=RT_TABLE_MAIN):
        if route["scope"] != RT_SCOPE_LINK or route["dst_len"] == 0:
            continue
        oif = route.get_attr("RTA_OIF")
        if nic_index is not None and oif != nic_index:
            continue
        network = ipaddress.IPv4Network("%s/%d" % (route.get_attr("RTA_DST"), route["dst_len"]),
                                        strict=False)
        if ip in network and (best is None or route["dst_len"] > best[1]):
            best = (oif, route["dst_len"])
    return best


def resolve(params):
    """Choose the NIC and prefix length for this node; InvalidArgument (2) if impossible."""
    with _iproute() as ipr:
        nic = params.nic
        if nic is None:
            # Already configured (a later instance, monitor, stop): keep that interface,
            # because the VIP's own local route now shadows the covering route.
            present = _vip_addresses(ipr, params.vip)
            index = present[0][0] if present else None
            if index is None:
                route = _covering_route(ipr, params.ip)
                if route is None:
                    raise InvalidArgument("no interface has a route covering %s; set nic"
                                          % params.vip)
                index = route[0]
            nic = ipr.get_links(index)[0].get_attr("IFLA_IFNAME")
        index = _ifindex(ipr, nic)
        if index is None:
            raise InvalidArgument("nic %s does not exist on this node" % nic)
        prefix = params.cidr_netmask
        if prefix is None:
            route = _covering_route(ipr, params.ip, index)
            prefix = route[1] if route else 32
        return Placement(nic=nic, prefixlen=prefix)


def nic_exists(nic):
    try:
        socket.if_nametoindex(nic)
        return True
    except OSError:
        return False


def address_present(vip, placement):
    """True when the VIP is configured on the chosen NIC with the chosen prefix."""
    with _iproute() as ipr:
        index = _ifindex(ipr, placement.nic)
        return index is not None and (index, placement.prefixlen) in _vip_addresses(ipr, vip)


def add_address(vip, placement):
    from pyroute2.netlink.exceptions import NetlinkError

    network = ipaddress.IPv4Network("%s/%d" % (vip, placement.prefixlen), strict=False)
    extra = {}
    if placement.prefixlen < 31:
        extra["broadcast"] = str(network.broadcast_address)
    if placement.label():
        extra["label"] = placement.label()
    with _iproute() as ipr:
        index = _ifindex(ipr, placement.nic)
        if index is None:
            raise InvalidArgument("nic %s does not exist on this node" % placement.nic)
        try:
            ipr.addr("add", index=index, address=vip, prefixlen=placement.prefixlen, **extra)
        except NetlinkError as error:
            if error.code != _EEXIST:
                raise GenericError("cannot add %s/%d to %s: %s"
                                   % (vip, placement.prefixlen, placement.nic, error)) from None


def remove_address(vip):
    """Remove the VIP from every interface that holds it (the NIC may have changed)."""
    from pyroute2.netlink.exceptions import NetlinkError

    with _iproute() as ipr:
        for index, prefixlen in _vip_addresses(ipr, vip):
            try:
                ipr.addr("del", index=index, address=vip, prefixlen=prefixlen)
            except NetlinkError as error:
                if error.code not in (_EADDRNOTAVAIL, _ENODEV):
                    raise GenericError("cannot remove %s: %s" % (vip, error)) from None


# --- multicast membership -------------------------------------------------

def _mac_bytes(mac):
    return bytes(int(part, 16) for part in mac.split(":"))


def _multicast_ioctl(request, nic, mac):
    # struct ifreq: char ifr_name[16]; struct sockaddr ifr_hwaddr (family + 14 bytes).
    ifreq = struct.pack("16sH14s", nic.encode(), socket.AF_UNSPEC, _mac_bytes(mac))
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        fcntl.ioctl(sock.fileno(), request, ifreq)


def join_multicast(nic, mac):
    """Make the NIC accept frames for the cluster MAC (idempotent: a global membership)."""
    try:
        _multicast_ioctl(SIOCADDMULTI, nic, mac)
    except OSError as error:
        raise GenericError("cannot join %s to multicast MAC %s: %s"
                           % (nic, mac, error.strerror)) from None


def leave_multicast(nic, mac):
    try:
        _multicast_ioctl(SIOCDELMULTI, nic, mac)
    except OSError:
        pass  # not a member, or the NIC is gone: nothing to undo


def multicast_joined(nic, mac):
    """Read /proc/net/dev_mcast: 'ifindex name refcount global_use 03c1...'."""
    wanted = mac.replace(":", "")
    try:
        with open("/proc/net/dev_mcast", encoding="ascii") as f:
            for line in f:
                fields = line.split()
                if len(fields) == 5 and fields[1] == nic and fields[4] == wanted:
                    return True
    except OSError:
        pass
    return False


# --- gratuitous ARP -------------------------------------------------------

def build_gratuitous_arp(nic_mac, sender_mac, vip, opcode):
    """An Ethernet broadcast ARP frame announcing vip at sender_mac (1 request, 2 reply)."""
    broadcast = b"\xff" * 6
    ip = socket.inet_aton(vip)
    target_mac = broadcast if opcode == 2 else b"\x00" * 6
    return (broadcast + nic_mac + struct.pack("!H", ETH_P_ARP)
            + struct.pack("!HHBBH", 1, 0x0800, 6, 4, opcode)
            + sender_mac + ip + target_mac + ip)


def send_gratuitous_arp(nic, vip, sender_mac=None):
    """Tell the segment that vip is at sender_mac (default: the NIC's own MAC).

    One request and one reply, through a packet socket.  That bypasses the
    ARP output hook, so the frame carries the cluster MAC itself rather than
    relying on the rewrite.  Best effort, like IPaddr2's send_arp: a failure
    is returned for logging, never raised.
    """
    try:
        with socket.socket(socket.AF_PACKET, socket.SOCK_RAW) as sock:
            sock.bind((nic, 0))
            nic_mac = sock.getsockname()[4]
            sender = _mac_bytes(sender_mac) if sender_mac else nic_mac
            for opcode in (1, 2):
                sock.send(build_gratuitous_arp(nic_mac, sender, vip, opcode))
    except OSError as error:
        return "gratuitous ARP on %s failed: %s" % (nic, error.strerror)
    return None
