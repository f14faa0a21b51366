"""The nft backend's pure parts: the script it loads, the JSON it sends and
how it reads a listing.  The listings in data/ were recorded from nft 1.0.6
after two instances (buckets 1 and 3 of 3) started in a network namespace;
nft-ip-table-graceful.json from build_create_script(make(graceful="true"),
PLACEMENT, {1, 3}) loaded into one."""

import copy
import json
import os

import pytest

from clusterip import params
from clusterip.address import Placement
from clusterip.backends import nft

DATA = os.path.join(os.path.dirname(__file__), "data")
PLACEMENT = Placement(nic="eth0", prefixlen=16)


def make(hashmode="sourceip-sourceport-destport", total=3, seed="4660", graceful="false"):
    return params.parse({
        "OCF_RESKEY_ip": "198.18.0.100", "OCF_RESKEY_hashmode": hashmode,
        "OCF_RESKEY_hash_init": seed, "OCF_RESKEY_CRM_meta_clone": "0",
        "OCF_RESKEY_CRM_meta_clone_max": str(total),
        "OCF_RESKEY_CRM_meta_globally_unique": "true",
        "OCF_RESKEY_graceful_handover": graceful})


def listing(name):
    with open(os.path.join(DATA, name), encoding="utf-8") as f:
        return json.load(f)


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
    assert '3 : "bucket3"' in script and "counter bucket3 {}" in script


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


def test_create_script_without_owned_buckets_declares_an_empty_set():
    assert "elements" not in nft.build_create_script(make(), PLACEMENT, set())


def test_element_commands():
    assert nft.element_command("delete", "198.18.0.100", 2) == {"nftables": [{"delete": {
        "element": {"family": "ip", "table": "clusterip_198_18_0_100", "name": "owned",
                    "elem": [2]}}}]}


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
