"""The link layer: a NIC's multicast MAC memberships and raw frames.

Membership is the SIOCADDMULTI/SIOCDELMULTI ioctls, exactly what ``ip maddr
add`` does (no library offers it), read back from /proc/net/dev_mcast.
Frames go out through a packet socket, which bypasses the ARP and IPv6
output hooks.
"""

import _socket
import fcntl
import struct

from clusterip.kernel import opened, wrote

SIOCADDMULTI = 0x8931
SIOCDELMULTI = 0x8932
DEV_MCAST = "/proc/net/dev_mcast"


def _multicast_ioctl(request, nic, mac):
    # struct ifreq: char ifr_name[16]; struct sockaddr ifr_hwaddr (family + 14 bytes).
    ifreq = struct.pack("16sH14s", nic.encode(), _socket.AF_UNSPEC, mac)
    with opened(_socket.AF_INET, _socket.SOCK_DGRAM) as sock:
        fcntl.ioctl(sock.fileno(), request, ifreq)


def add_multicast(nic, mac):
    """Join the NIC to a multicast MAC (6 bytes); OSError from the kernel."""
    _multicast_ioctl(SIOCADDMULTI, nic, mac)


def delete_multicast(nic, mac):
    _multicast_ioctl(SIOCDELMULTI, nic, mac)


def multicast_macs(text):
    """{(nic, mac as 12 hex digits)} of /proc/net/dev_mcast's text
    ('ifindex name refcount global_use 03c1...')."""
    return {(fields[1], fields[4]) for fields in map(str.split, text.splitlines())
            if len(fields) == 5}


def read_multicast_macs():
    """multicast_macs() of the running kernel; empty when unreadable."""
    try:
        # utf-8, not ascii: the text is ASCII, and utf-8's codec is loaded at
        # start-up while ascii's would be one more import (~0.2 ms)
        with open(DEV_MCAST, encoding="utf-8") as f:
            return multicast_macs(f.read())
    except OSError:
        return set()


def send_frames(nic, build):
    """Send the frames ``build(nic_mac)`` returns, raw, out of the NIC; OSError."""
    with opened(_socket.AF_PACKET, _socket.SOCK_RAW) as sock:
        sock.bind((nic, 0))
        for frame in build(sock.getsockname()[4]):
            sock.send(frame)
        wrote()  # its release waits for the kernel (see clusterip.kernel)
