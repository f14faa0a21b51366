"""A shared unicast cluster MAC (issue #16): what the nft backend builds and
checks for it, the NIC's unicast filter over rtnetlink, and who refuses it.
The real kernel's side (the NIC accepting the frames, a router in front)
is tests/netns/test_unicast_mac.py."""

import _socket
import struct

import pytest

from clusterip import address, backends, params
from clusterip.address import Placement
from clusterip.backends import nft
from clusterip.backends.clusterip import ClusteripBackend
from clusterip.backends.nft import NftBackend
from clusterip.errors import NotConfigured
from clusterip.kernel import netlink, rtnl

PLACEMENT = Placement(nic="eth0", prefixlen=16)
UNICAST = "02:c1:c6:12:00:64"


def make(ip="198.18.0.100", mac=UNICAST):
    return params.parse({"OCF_RESKEY_ip": ip, "OCF_RESKEY_clustermac": mac,
                         "OCF_RESKEY_CRM_meta_clone": "0", "OCF_RESKEY_CRM_meta_clone_max": "3",
                         "OCF_RESKEY_CRM_meta_globally_unique": "true"})


def test_the_kind_of_mac_chooses_the_mode():
    assert address.is_unicast(UNICAST) and address.is_unicast("fe:00:00:00:00:01")
    assert not address.is_unicast("03:c1:c6:12:00:64")
    assert not address.is_unicast(make(mac="03:c1:c6:12:00:64").clustermac)


def test_a_unicast_mac_adds_a_netdev_table_of_the_same_name():
    assert nft.tables(make()) == [("ip", "clusterip_198_18_0_100"),
                                  ("arp", "clusterip_198_18_0_100"),
                                  ("netdev", "clusterip_198_18_0_100")]
    assert nft.tables(make(ip="2001:db8::100")) == [("ip6", "clusterip_2001_db8__100"),
                                                    ("netdev", "clusterip_2001_db8__100")]
    assert [f for f, _ in nft.tables(make(mac="03:c1:00:00:00:01"))] == ["ip", "arp"]


def test_the_ingress_chain_marks_only_the_vips_frames_to_the_shared_mac():
    script = nft.build_create_script(make(), PLACEMENT, {1})
    netdev = script[script.index("table netdev"):]
    assert 'type filter hook ingress device "eth0" priority -150; policy accept;' in netdev
    assert "ether daddr %s ip daddr 198.18.0.100 meta pkttype set host" % UNICAST in netdev
    assert "ether daddr %s arp daddr ip 198.18.0.100 meta pkttype set host" % UNICAST in netdev
    assert "add table netdev clusterip_198_18_0_100\ndelete table netdev" in script
    six = nft.ingress_rules(make(ip="2001:db8::100"))
    assert six == ["ether daddr %s ip6 daddr 2001:db8::100 meta pkttype set host" % UNICAST]
    assert "netdev" not in nft.build_create_script(make(mac="03:c1:00:00:00:01"), PLACEMENT, {1})


def test_destroy_deletes_a_netdev_table_only_when_one_is_there():
    multicast = make(mac="03:c1:00:00:00:01")
    assert "netdev" not in nft.build_destroy_script(multicast)
    assert nft.build_destroy_script(multicast, netdev=True).count("table netdev") == 2
    assert nft.build_destroy_script(make(), netdev=True).count("table netdev") == 2


def _ingress_listing(rules, dev=None):
    chain = {"family": "netdev", "table": "t", "name": "ingress", "hook": "ingress"}
    if dev is not None:
        chain["dev"] = dev
    mark = {"mangle": {"key": {"meta": {"key": "pkttype"}}, "value": "host"}}
    return {"nftables": [{"chain": chain}] + [
        {"rule": {"chain": "ingress", "expr": [
            {"match": {"op": "==", "left": {"payload": {"protocol": "ether", "field": "daddr"}},
                       "right": mac}},
            {"match": {"op": "==", "left": {"payload": {"protocol": proto, "field": field}},
                       "right": vip}}] + ([mark] if marked else [])}}
        for mac, proto, field, vip, marked in rules]}


GOOD = [(UNICAST, "ip", "daddr", "198.18.0.100", True),
        (UNICAST, "arp", "daddr ip", "198.18.0.100", True)]


@pytest.mark.parametrize("listing, healthy", [
    (_ingress_listing(GOOD), True),  # nft 1.0.6: no "dev" in the JSON
    (_ingress_listing(GOOD, dev="eth0"), True),
    (_ingress_listing(GOOD, dev=["eth0"]), True),
    (_ingress_listing(GOOD, dev="eth1"), False),
    (_ingress_listing(GOOD[:1]), False),
    (_ingress_listing([GOOD[0], GOOD[0]]), False),  # no ARP rule
    (_ingress_listing([GOOD[0], (UNICAST, "arp", "daddr ip", "198.18.0.100", False)]), False),
    (_ingress_listing([GOOD[0], ("02:00:00:00:00:09",) + GOOD[1][1:]]), False),
    (None, False),
])
def test_the_monitor_names_a_broken_ingress_chain(listing, healthy):
    problem = nft._ingress_missing(listing, make(), PLACEMENT)
    assert (problem is None) == healthy
    if not healthy:
        assert problem == "netdev ingress chain on eth0 for %s" % UNICAST


def test_a_missing_filter_entry_is_named_for_its_kind():
    assert backends.mac_filter_missing(make(), PLACEMENT) == \
        "unicast filter entry of eth0 for %s" % UNICAST
    assert backends.mac_filter_missing(make(mac="03:c1:00:00:00:01"), PLACEMENT) == \
        "multicast membership of eth0 in 03:c1:00:00:00:01"


def test_only_the_nft_backend_shares_a_unicast_mac():
    assert backends.check_supported(NftBackend(), make())
    with pytest.raises(NotConfigured, match="clustermac=02:c1:c6:12:00:64 is unicast, "
                                            "which needs backend=nft"):
        backends.check_supported(ClusteripBackend(), make())


def test_a_unicast_mac_that_is_the_nics_own_is_refused(monkeypatch):
    monkeypatch.setattr(address, "nic_mac", lambda nic: UNICAST)
    with pytest.raises(NotConfigured, match="is the MAC of eth0 itself"):
        address.check_cluster_mac(make(), PLACEMENT)
    address.check_cluster_mac(make(mac="03:c1:c6:12:00:64"), PLACEMENT)  # multicast: never
    monkeypatch.setattr(address, "nic_mac", lambda nic: "02:00:00:00:00:01")
    address.check_cluster_mac(make(), PLACEMENT)


def test_the_filter_entry_is_what_bridge_fdb_add_self_permanent_sends(monkeypatch):
    sent = []
    monkeypatch.setattr(netlink, "request", lambda *args: sent.append(args))
    mac = bytes.fromhex("02c1c6120064")
    rtnl.add_unicast_filter(3, mac)
    rtnl.delete_unicast_filter(3, mac)
    (_, new, new_flags, body), (_, delete, _, delete_body) = sent
    assert (new, delete) == (rtnl.RTM_NEWNEIGH, rtnl.RTM_DELNEIGH)
    assert new_flags == netlink.NLM_F_CREATE  # no EXCL: adding what is there succeeds
    # struct ndmsg: AF_BRIDGE, ifindex 3, NUD_PERMANENT, NTF_SELF; then NDA_LLADDR
    assert body == struct.pack("=BBHiHBB", 7, 0, 0, 3, 0x80, 0x02, 0) \
        + struct.pack("=HH", 10, 2) + mac + b"\0\0" == delete_body


def test_the_filter_lists_the_nics_own_entries_only(monkeypatch):
    def entry(family, index, flags, mac):
        return (rtnl.RTM_NEWNEIGH, struct.pack("=BBHiHBB", family, 0, 0, index, 0x80, flags, 0)
                + netlink.attribute(rtnl.NDA_LLADDR, mac))

    asked = []
    answers = [entry(7, 3, 0x02, b"\x02" * 6), entry(7, 3, 0x02, b"\x33\x33\0\0\0\1"),
               entry(7, 4, 0x02, b"\x06" * 6),  # another NIC's
               entry(7, 3, 0x00, b"\x0a" * 6),  # not "self": a bridge port's learnt one
               entry(_socket.AF_INET, 3, 0x02, b"\x0e" * 6)]
    monkeypatch.setattr(netlink, "dump", lambda *args: asked.append(args) or answers)
    assert rtnl.unicast_filter(3) == {b"\x02" * 6, b"\x33\x33\0\0\0\1"}
    # The request: an ifinfomsg, whose index the kernel filters by.
    assert asked == [(_socket.NETLINK_ROUTE, rtnl.RTM_GETNEIGH,
                      struct.pack("=BBHiII", 7, 0, 0, 3, 0, 0))]
