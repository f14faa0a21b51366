"""The nft backend's pure parts: the script it loads, the JSON it sends and
how it reads a listing.  The listings in data/nft-<version>/ were recorded
by record_nft_listings.py with each nft the project supports (their JSON
differs): the backend's create scripts for buckets 1 and 3 of 3 loaded into
a network namespace; every test that reads one runs once per version."""

import copy
import json
import os
import sys

import pytest

from clusterip import params
from clusterip.address import Placement
from clusterip.backends import nft

DATA = os.path.join(os.path.dirname(__file__), "data")
PLACEMENT = Placement(nic="eth0", prefixlen=16)


def make(hashmode="sourceip-sourceport-destport", total=3, seed="4660", graceful="false",
         ip="198.18.0.100", lease="0"):
    return params.parse({
        "OCF_RESKEY_owner_lease": lease,
        "OCF_RESKEY_ip": ip, "OCF_RESKEY_hashmode": hashmode,
        "OCF_RESKEY_hash_init": seed, "OCF_RESKEY_CRM_meta_clone": "0",
        "OCF_RESKEY_CRM_meta_clone_max": str(total),
        "OCF_RESKEY_CRM_meta_globally_unique": "true",
        "OCF_RESKEY_graceful_handover": graceful})


VERSIONS = sorted(d for d in os.listdir(DATA) if d.startswith("nft-"))
RECORDED = None  # data/nft-<version>, set per test by recorded_by


@pytest.fixture(autouse=True, params=VERSIONS)
def recorded_by(request, monkeypatch):
    monkeypatch.setattr(sys.modules[__name__], "RECORDED", os.path.join(DATA, request.param))


def listing(name):
    with open(os.path.join(RECORDED, name), encoding="utf-8") as f:
        return json.load(f)


def test_listings_of_every_supported_nft_are_recorded():
    # Debian 12 and Debian 13.
    assert {"nft-1.0.6", "nft-1.1.3"} <= set(VERSIONS)


def test_a_set_declared_typeof_jhash_is_recognised_as_unlistable():
    userdata = {name: bytes.fromhex(data) for name, data in listing("userdata.json").items()}
    assert nft.lists_safely(userdata["new"]) and not nft.lists_safely(userdata["old"])
    assert nft.lists_safely(b"")  # a set without user data (a plain type)


def test_the_owned_set_is_keyed_like_symhash_and_names_the_real_hash():
    script = nft.build_create_script(make(), PLACEMENT, {1, 3})
    assert "typeof symhash mod 3 offset 1\n" in script
    assert 'comment "keys: %s"' % nft.hash_expression(make()) in script
    assert "jhash" not in script.split("set owned {", 1)[1].split("\n", 2)[1]


@pytest.mark.parametrize("hashmode, fields", [
    ("sourceip", "ip saddr mod"),
    ("sourceip-sourceport", "ip saddr . th sport mod"),
    ("sourceip-sourceport-destport", "ip saddr . th sport . th dport mod"),
])
def test_hash_expression_per_mode(hashmode, fields):
    assert nft.hash_expression(make(hashmode)) == \
        "jhash %s 3 seed 0x00001234 offset 1" % fields


def test_create_script_replaces_both_tables_in_one_transaction():
    script = nft.build_create_script(make(), PLACEMENT, {1, 3})
    name = "clusterip_198_18_0_100"
    # add+delete first, so loading the script replaces a table that exists.
    assert script.startswith("add table ip %s\ndelete table ip %s\n"
                             "add table arp %s\ndelete table arp %s\n" % ((name,) * 4))
    assert "elements = { 1, 3 }" in script
    assert 'iifname "eth0" ip daddr 198.18.0.100 jump vip' in script
    assert "!= @owned drop" in script and "meta pkttype set host" in script
    assert 'oifname "eth0" arp saddr ip 198.18.0.100 arp saddr ether set 03:c1:c6:12:00:64' \
        in script
    assert "3 : jump bucket3 }" in script and "counter bucket3 {}" in script
    assert 'chain bucket3 {\n    counter name "bucket3"\n  }' in script


@pytest.mark.parametrize("tamper", ["flush a bucket chain", "drop a jump", "delete a counter"])
def test_a_bucket_that_stopped_counting_is_noticed(tamper):
    ip = copy.deepcopy(listing("nft-ip-table.json"))
    items = ip["nftables"]
    if tamper == "flush a bucket chain":
        items[:] = [i for i in items if i.get("rule", {}).get("chain") != "bucket2"]
    elif tamper == "delete a counter":
        items[:] = [i for i in items if i.get("counter", {}).get("name") != "bucket2"]
    else:
        vmap = [n for i in items for n in nft._walk(i) if "vmap" in n][0]["vmap"]
        del vmap["data"]["set"][1]
    state = nft.parse_state(ip, listing("nft-arp-table.json"), make(), PLACEMENT, True)
    assert "packet counter per bucket" in state.missing


GRACEFUL = ["meta l4proto tcp ct state established,related meta pkttype set host accept",
            "meta l4proto tcp ct state new tcp flags & (syn | ack) != syn drop"]


def vip_chain(script):
    """The rule lines of chain vip in a create script."""
    body = script.split("chain vip {\n", 1)[1].split("\n  }", 1)[0]
    return [line.strip() for line in body.splitlines()]


def test_graceful_handover_adds_its_tcp_rules_before_the_bucket_filter():
    chain = vip_chain(nft.build_create_script(make(graceful="true"), PLACEMENT, {1}))
    assert chain[2:4] == GRACEFUL
    assert chain[1].startswith("meta l4proto icmp ct state related")
    assert chain[4].endswith("!= @owned drop") and chain[5] == "meta pkttype set host"
    assert chain == nft.vip_chain_rules(make(graceful="true"))


def test_without_graceful_handover_the_chain_has_no_tcp_rules():
    chain = vip_chain(nft.build_create_script(make(), PLACEMENT, {1}))
    assert len(chain) == 4 and not set(GRACEFUL) & set(chain)
    assert chain == nft.vip_chain_rules(make())


def test_parse_state_follows_graceful_handover():
    arp = listing("nft-arp-table.json")
    plain, graceful = listing("nft-ip-table.json"), listing("nft-ip-table-graceful.json")
    assert nft.parse_state(graceful, arp, make(graceful="true"), PLACEMENT, True).missing == ()
    # A table built with the other setting is a mismatch: start rebuilds it.
    for ip, setting, needle in ((plain, "true", "graceful_handover on"),
                                (graceful, "false", "graceful_handover off")):
        state = nft.parse_state(ip, arp, make(graceful=setting), PLACEMENT, True)
        assert state.owned == {1, 3}
        assert [m for m in state.missing if "bucket filter" in m and needle in m], state


def lease_listing():
    if not os.path.exists(os.path.join(RECORDED, "nft-ip-table-lease.json")):
        pytest.skip("no owner_lease listing recorded with %s" % os.path.basename(RECORDED))
    return listing("nft-ip-table-lease.json")


def test_with_owner_lease_the_set_has_timeouts_and_without_none():
    assert "\n    timeout 30s\n" in nft.build_create_script(make(lease="30"), PLACEMENT, {1})
    assert "timeout" not in nft.build_create_script(make(), PLACEMENT, {1})


def test_a_listing_with_expiring_elements_parses_and_describes():
    arp = listing("nft-arp-table.json")
    leased = lease_listing()
    state = nft.parse_state(leased, arp, make(lease="30"), PLACEMENT, True)
    assert state.owned == {1, 3} and state.missing == ()
    report = nft.describe(leased, arp)
    assert report["owned"] == [1, 3] and report["owner_lease"] == 30
    assert set(report["expires"]) == {1, 3} and all(
        25 <= left <= 30 for left in report["expires"].values())
    assert nft.describe(listing("nft-ip-table.json"), arp)["owner_lease"] == 0


def test_a_set_with_another_lease_is_reported_so_that_start_rebuilds_it():
    arp = listing("nft-arp-table.json")
    for ip, lease, needle in ((listing("nft-ip-table.json"), "30", "owner lease of 30 s"),
                              (lease_listing(), "60", "owner lease of 60 s"),
                              (lease_listing(), "0", "without owner lease (it has 30 s)")):
        state = nft.parse_state(ip, arp, make(lease=lease), PLACEMENT, True)
        assert state.owned == {1, 3}
        assert any(needle in m for m in state.missing), state


def test_create_script_without_owned_buckets_declares_an_empty_set():
    assert "elements" not in nft.build_create_script(make(), PLACEMENT, set())


def test_element_commands():
    assert nft.element_command("delete", make(), 2) == {"nftables": [{"delete": {
        "element": {"family": "ip", "table": "clusterip_198_18_0_100", "name": "owned",
                    "elem": [2]}}}]}
    assert nft.element_command("add", make(ip=VIP6), 1)["nftables"][0]["add"]["element"][
        "family"] == "ip6"


def test_recorded_listing_parses_as_healthy():
    state = nft.parse_state(listing("nft-ip-table.json"), listing("nft-arp-table.json"),
                            make(), PLACEMENT, multicast_joined=True)
    assert state.owned == {1, 3} and state.missing == ()


def test_nothing_there_is_none():
    assert nft.parse_state(None, None, make(), PLACEMENT, True) is None


@pytest.mark.parametrize("other, needle", [
    (dict(hashmode="sourceip"), "hashmode sourceip"),
    (dict(total=4), "for 4 buckets"),
    (dict(seed="1"), "hash_init 1"),
])
def test_a_filter_built_for_another_configuration_is_reported(other, needle):
    state = nft.parse_state(listing("nft-ip-table.json"), listing("nft-arp-table.json"),
                            make(**other), PLACEMENT, True)
    assert any(needle in m for m in state.missing)


def test_each_missing_piece_is_named():
    ip = listing("nft-ip-table.json")
    state = nft.parse_state(ip, None, make(), PLACEMENT, False)
    assert state.missing == ("ARP rewrite to 03:c1:c6:12:00:64",
                             "multicast membership of eth0 in 03:c1:c6:12:00:64")
    state = nft.parse_state(None, listing("nft-arp-table.json"), make(), PLACEMENT, True)
    assert state.owned == frozenset()
    assert state.missing == ("nft table ip clusterip_198_18_0_100",)
    state = nft.parse_state(ip, listing("nft-arp-table.json"), make(),
                            Placement(nic="eth1", prefixlen=16), True)
    assert "prerouting rule for 198.18.0.100 on eth1" in state.missing


def test_a_deleted_rule_is_noticed():
    ip = copy.deepcopy(listing("nft-ip-table.json"))
    rules = [i for i, item in enumerate(ip["nftables"])
             if "rule" in item and item["rule"]["chain"] == "vip"]
    del ip["nftables"][rules[2]]  # the drop rule
    state = nft.parse_state(ip, listing("nft-arp-table.json"), make(), PLACEMENT, True)
    assert any("bucket filter" in m for m in state.missing)


# --- IPv6 -------------------------------------------------------------------
# nft-ip6-table.json: build_create_script(make6(), PLACEMENT6, {1, 3}, NIC_MAC)
# loaded into a namespace by nft 1.0.6, listed with nft -j.
VIP6 = "2001:db8::100"
PLACEMENT6 = Placement(nic="eth0", prefixlen=64)
NIC_MAC = "02:00:00:00:00:0a"


def make6(**overrides):
    return make(**dict(dict(hashmode="sourceip-sourceport", seed="590746930", ip=VIP6),
                       **overrides))


@pytest.mark.parametrize("hashmode, fields", [
    ("sourceip", "ip6 saddr mod"),
    ("sourceip-sourceport", "ip6 saddr . th sport mod"),
    ("sourceip-sourceport-destport", "ip6 saddr . th sport . th dport mod"),
])
def test_ipv6_hashes_the_ipv6_source(hashmode, fields):
    assert nft.hash_expression(make6(hashmode=hashmode, seed="4660")) == \
        "jhash %s 3 seed 0x00001234 offset 1" % fields


def test_ipv6_has_one_ip6_table_with_the_rewrite_inside():
    script = nft.build_create_script(make6(), PLACEMENT6, {1, 3}, NIC_MAC)
    name = "clusterip_2001_db8__100"
    assert nft.tables(make6()) == [("ip6", name)]
    assert script.startswith("add table ip6 %s\ndelete table ip6 %s\ntable ip6 %s {" % (
        (name,) * 3)) and "arp" not in script
    assert 'iifname "eth0" ip6 daddr 2001:db8::100 jump vip' in script
    chain = vip_chain(script)
    assert chain == nft.vip_chain_rules(make6())
    assert chain[1] == "icmpv6 type { nd-neighbor-solicit, nd-neighbor-advert } accept"
    assert chain[2].startswith("meta l4proto ipv6-icmp ct state related")
    assert script.count("hook output") == 1
    assert nft.build_destroy_script(make6()) == \
        "add table ip6 %s\ndelete table ip6 %s\n" % (name, name)


def one_complement_sum(words):
    total = sum(words)
    while total > 0xFFFF:
        total = (total & 0xFFFF) + (total >> 16)
    return total


@pytest.mark.parametrize("nic_mac", [NIC_MAC, "52:54:00:ff:ff:ff", "00:00:00:00:00:00"])
def test_nd_rewrite_keeps_the_checksum(nic_mac):
    """The words written (MAC, compensation) sum to what they replace (MAC, 0)."""
    p = make6()
    writes = dict(nft.rewrite_writes(p, nic_mac))
    old = bytes.fromhex(nic_mac.replace(":", ""))
    new = writes["@th,208,48"].to_bytes(6, "big")
    assert new == bytes.fromhex("333300000100")
    words = lambda b: [int.from_bytes(b[i:i + 2], "big") for i in range(0, len(b), 2)]  # noqa: E731
    assert one_complement_sum(words(old)) % 0xFFFF == \
        one_complement_sum(words(new) + [writes["@th,48,16"]]) % 0xFFFF
    rule = nft.rewrite_rule(p, PLACEMENT6, nic_mac)
    assert rule.startswith('oifname "eth0" ip6 saddr 2001:db8::100 icmpv6 type '
                           '{ nd-neighbor-solicit, nd-neighbor-advert } @th,48,16 0 '
                           '@th,200,56 0x01%s ' % old.hex())


def test_recorded_ipv6_listing_parses_as_healthy_and_describes():
    ip6 = listing("nft-ip6-table.json")
    state = nft.parse_state(ip6, ip6, make6(), PLACEMENT6, True, NIC_MAC)
    assert state == nft.VipState(frozenset({1, 3}), ())
    report = nft.describe(ip6, ip6)
    assert (report["vip"], report["nic"], report["clustermac"], report["hashmode"],
            report["buckets"], report["owned"]) == (
        VIP6, "eth0", "33:33:00:00:01:00", "sourceip-sourceport", 3, [1, 3])


def test_ipv6_missing_pieces_are_named():
    ip6 = listing("nft-ip6-table.json")
    # The NIC's MAC changed (or cannot be read): the rewrite no longer matches.
    for mac in ("02:00:00:00:00:0b", None):
        state = nft.parse_state(ip6, ip6, make6(), PLACEMENT6, True, mac)
        assert state.missing == ("Neighbour Advertisement rewrite to 33:33:00:00:01:00",)
    state = nft.parse_state(ip6, ip6, make6(hashmode="sourceip"), PLACEMENT6, False, NIC_MAC)
    assert any("hashmode sourceip" in m for m in state.missing)
    assert "multicast membership of eth0 in 33:33:00:00:01:00" in state.missing
    assert nft.parse_state(None, None, make6(), PLACEMENT6, True, NIC_MAC) is None


def test_a_rewrite_for_another_nic_is_named():
    # Its writes are right, but it rewrites what another NIC sends (the monitor
    # once checked only the writes).
    ip, arp, ip6 = (listing("nft-%s-table.json" % f) for f in ("ip", "arp", "ip6"))
    assert "ARP rewrite to 03:c1:c6:12:00:64" in nft.parse_state(
        ip, arp, make(), Placement(nic="eth1", prefixlen=16), True).missing
    assert "Neighbour Advertisement rewrite to 33:33:00:00:01:00" in nft.parse_state(
        ip6, ip6, make6(), Placement(nic="eth1", prefixlen=64), True, NIC_MAC).missing


# --- the layout before (what a node upgraded in place still runs) -----------

def test_the_layout_1_converter_yields_what_the_old_agent_loaded():
    import layout1

    for name, script in (
            ("layout-1-ipv4.nft", nft.build_create_script(make(), PLACEMENT, {1, 3})),
            ("layout-1-ipv6.nft", nft.build_create_script(make6(), PLACEMENT6, {1, 3},
                                                          NIC_MAC))):
        with open(os.path.join(DATA, name), encoding="utf-8") as f:
            assert layout1.from_layout2(script) == f.read(), name


def test_nothing_of_the_vip_over_nfnetlink_is_absent_without_libnftables(monkeypatch):
    # The monitor of an instance that never ran here, and every probe: no
    # rules, no set, no table of the VIP -> absent, libnftables never loaded.
    # A table left alone (half-configured) is present: the full check names
    # what is missing.  (For real: tests/netns, monitors of stopped instances.)
    from clusterip.kernel import nfnl as nfnl_module

    p = params.parse({"OCF_RESKEY_ip": "192.0.2.10", "OCF_RESKEY_CRM_meta_clone": "0",
                      "OCF_RESKEY_CRM_meta_clone_max": "3",
                      "OCF_RESKEY_CRM_meta_globally_unique": "true"})
    backend = nft.NftBackend()
    monkeypatch.setattr(nft, "_context", lambda: pytest.fail("libnftables loaded"))
    present = {"arp": set(), "ip": set()}
    monkeypatch.setattr(nfnl_module, "table_names", lambda family: present.get(family, set()))
    assert backend._present(p, None, None) is False
    present["arp"].add(nft.tables(p)[-1][1])
    assert backend._present(p, None, None) is True
    assert backend._present(p, b"rules", None) is True

    def unreadable(family):
        raise OSError(1, "EPERM")
    monkeypatch.setattr(nfnl_module, "table_names", unreadable)
    assert backend._present(p, None, None) is True
