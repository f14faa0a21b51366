"""IPaddr2's address parameters on the real kernel: iflabel, broadcast,
noprefixroute (plain mode), read back with ``ip -j addr`` and ``ip -j route``.
(preferred_lft and a clone's own choice: test_own_connections.py; arp_count
and arp_interval: test_announcements.py.)"""

import json

import pytest

import scenarios
from netlab import Lab

VIP, PREFIXLEN = scenarios.VIP, 16


def address_info(lab, node):
    """The ``ip -j addr`` entry of the VIP on eth0, or None."""
    out = lab.run(node, "ip", "-j", "-4", "addr", "show", "dev", "eth0").stdout
    return next((info for link in json.loads(out) for info in link["addr_info"]
                 if info["local"] == VIP), None)


def kernel_routes(lab, node):
    out = lab.run(node, "ip", "-j", "-4", "route", "show", "proto", "kernel").stdout
    return sorted(route["dst"] for route in json.loads(out))


@pytest.mark.parametrize("overrides, label, broadcast", [
    ({}, "eth0:cip", "198.18.255.255"),
    ({"iflabel": "1"}, "eth0:1", "198.18.255.255"),  # the classic recipe's eth0:1
    ({"broadcast": "-"}, "eth0:cip", "198.18.0.0"),
    ({"broadcast": "198.18.0.255", "iflabel": "web-ip"}, "eth0:web-ip", "198.18.0.255"),
])
@pytest.mark.parametrize("cloned", [False, True], ids=["plain", "cloned"])
def test_label_and_broadcast_as_ip_addr_shows_them(overrides, label, broadcast, cloned):
    with Lab(nodes=1, sources=0) as lab:
        params = scenarios.agent_params(backend="nft", cidr_netmask=PREFIXLEN, **overrides)
        meta = scenarios.clone_meta(0) if cloned else None
        rc, _, err = lab.agent("n0", "start", params, meta)
        assert rc == 0, err
        info = address_info(lab, "n0")
        assert (info["label"], info.get("broadcast")) == (label, broadcast), info
        assert lab.agent("n0", "monitor", params, meta)[0] == 0
        assert lab.agent("n0", "stop", params, meta)[0] == 0
        assert address_info(lab, "n0") is None


def test_plain_noprefixroute_adds_no_route_for_the_subnet():
    vip, prefixlen = "198.19.0.100", 24  # alone on its subnet: the kernel would route it
    with Lab(nodes=1, sources=0) as lab:
        plain = scenarios.agent_params(backend="nft", vip=vip, cidr_netmask=prefixlen)
        assert lab.agent("n0", "start", plain)[0] == 0
        assert "198.19.0.0/24" in kernel_routes(lab, "n0")
        assert lab.agent("n0", "stop", plain)[0] == 0
        told = dict(plain, noprefixroute="true")
        assert lab.agent("n0", "start", told)[0] == 0
        assert "198.19.0.0/24" not in kernel_routes(lab, "n0")
        # Someone re-adds it with its prefix route: monitor says so, start repairs.
        lab.run("n0", "ip", "addr", "del", "%s/%d" % (vip, prefixlen), "dev", "eth0")
        lab.run("n0", "ip", "addr", "add", "%s/%d" % (vip, prefixlen), "dev", "eth0")
        rc, _, err = lab.agent("n0", "monitor", told)
        assert rc == 1 and "noprefixroute" in err, (rc, err)
        assert lab.agent("n0", "start", told)[0] == 0
        assert "198.19.0.0/24" not in kernel_routes(lab, "n0")
        assert lab.agent("n0", "stop", told)[0] == 0


def test_a_label_too_long_for_the_nic_found_by_route_is_2():
    """nic unset: the label's length is known only on the node (exit 2 there, not 6)."""
    with Lab(nodes=1, sources=0) as lab:
        params = {"ip": VIP, "iflabel": "abcdefghijk"}  # eth0: 16 characters
        rc, _, err = lab.agent("n0", "start", params)
        assert rc == 2 and "longer than the kernel's 15" in err, (rc, err)
        assert address_info(lab, "n0") is None
