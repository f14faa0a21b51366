"""nfnl's table names, rules, set user data and set keys on the kernel's
recorded answers (record_kernel_dumps.py); expected values from the
scripts the tables were built with and what ``nft -j`` listed."""

import _socket
import collections
import errno
import sys

import pytest

from clusterip.backends import nft
from clusterip.kernel import netlink, nfnl
from unit.kernel_recordings import exchanges, replay, state

DECLARED = state()["declared"]
TABLE, TABLE6 = DECLARED["nft_tables"]["ip"], DECLARED["nft_tables"]["ip6"]
BIG = DECLARED["big_table"]
NFTA_LIST_ELEM, NFTA_EXPR_NAME = 1, 1


def replayed(monkeypatch, recording, function, *args):
    fake = replay(monkeypatch, exchanges(recording))
    try:
        return function(*args)
    finally:
        fake.check()


def listing(family, table):
    return state()["listed"]["nft"]["%s %s" % (family, table)]["nftables"]


@pytest.mark.parametrize("family", ["ip", "ip6", "arp"])
def test_table_names_are_those_nft_lists(monkeypatch, family):
    listed = sorted(line.split()[2] for line in state()["listed"]["nft_tables"]
                    if line.split()[1] == family)
    assert sorted(replayed(monkeypatch, "tables-" + family, nfnl.table_names, family)) == listed
    declared = {"ip": [TABLE, "old", BIG], "ip6": [TABLE6], "arp": [TABLE]}[family]
    assert listed == sorted(declared)


def expression_names(expressions):
    return [netlink.attributes(element, 0)[NFTA_EXPR_NAME].rstrip(b"\0").decode()
            for kind, element in netlink.attribute_items(expressions, 0)
            if kind == NFTA_LIST_ELEM]


@pytest.mark.parametrize("family, table", [("ip", TABLE), ("arp", TABLE), ("ip6", TABLE6),
                                           ("ip", BIG)])
def test_rules_are_those_nft_lists_chain_by_chain(monkeypatch, family, table):
    found = replayed(monkeypatch, "rules-%s-%s" % (family, table), nfnl.rules, family, table)
    listed = [item["rule"] for item in listing(family, table) if "rule" in item]
    assert collections.Counter(chain.rstrip(b"\0").decode() for chain, _ in found) \
        == collections.Counter(rule["chain"] for rule in listed)
    for _, expressions in found:  # each a nested list of named expressions
        assert expression_names(expressions)


def test_a_rules_dump_over_several_datagrams_keeps_every_rule_in_order(monkeypatch):
    (_, datagrams), = exchanges("rules-ip-" + BIG)
    assert len(datagrams) > 2
    found = replayed(monkeypatch, "rules-ip-" + BIG, nfnl.rules, "ip", BIG)
    assert len(found) == DECLARED["big_rules"]
    # "add rule ip knbig c ip daddr 198.18.<200 + i / 250>.<1 + i % 250> counter"
    for i, (chain, expressions) in enumerate(found):
        assert chain == b"c\0"
        assert expression_names(expressions) == ["payload", "cmp", "counter"]
        assert bytes([198, 18, 200 + i // 250, 1 + i % 250]) in expressions


def test_rules_of_a_missing_table_are_none(monkeypatch):
    assert replayed(monkeypatch, "rules-ip-nosuch", nfnl.rules, "ip", "nosuch") == []


@pytest.mark.parametrize("family, table", [("ip", TABLE), ("ip6", TABLE6), ("ip", BIG)])
def test_set_userdata_names_the_sets_nft_lists(monkeypatch, family, table):
    found = replayed(monkeypatch, "userdata-%s-%s" % (family, table),
                     nfnl.set_userdata, family, table)
    # nft lists the named sets; the kernel also holds the rules' anonymous
    # ones (nft names them __set<n>, __map<n>).
    assert {name for name in found if not name.startswith("__")} == {
        item["set"]["name"] for item in listing(family, table) if "set" in item}
    assert all(nft.lists_safely(data) for data in found.values())


def test_set_userdata_tells_the_old_layout_from_the_new(monkeypatch):
    # The "old" table's owned set is declared "typeof jhash ...": nft cannot list it.
    old = replayed(monkeypatch, "userdata-ip-old", nfnl.set_userdata, "ip", "old")
    assert set(old) == {"owned"} and not nft.lists_safely(old["owned"])
    new = replayed(monkeypatch, "userdata-ip-" + TABLE, nfnl.set_userdata, "ip", TABLE)
    assert nft.lists_safely(new["owned"]) and new["owned"]


def test_set_userdata_of_a_missing_table_is_empty(monkeypatch):
    (_, datagrams), = exchanges("userdata-ip-nosuch")
    assert len(datagrams) == 1  # the kernel's ENOENT, nothing else
    assert replayed(monkeypatch, "userdata-ip-nosuch", nfnl.set_userdata, "ip", "nosuch") == {}


@pytest.mark.parametrize("family, table", [("ip", TABLE), ("ip6", TABLE6)])
def test_set_keys_are_the_owned_buckets(monkeypatch, family, table):
    keys = replayed(monkeypatch, "keys-%s-%s-owned" % (family, table),
                    nfnl.set_keys, family, table, "owned")
    assert sorted(keys) == sorted(b.to_bytes(4, sys.byteorder) for b in DECLARED["owned"])


def test_set_keys_over_several_datagrams(monkeypatch):
    (_, datagrams), = exchanges("keys-ip-%s-many" % BIG)
    assert len(datagrams) > 2
    keys = replayed(monkeypatch, "keys-ip-%s-many" % BIG, nfnl.set_keys, "ip", BIG, "many")
    assert sorted(keys) == sorted(_socket.inet_aton(a) for a in DECLARED["big_set"])


@pytest.mark.parametrize("recording, table, name", [
    ("keys-ip-nosuch-owned", "nosuch", "owned"), ("keys-ip-%s-nosuch" % TABLE, TABLE, "nosuch")])
def test_set_keys_of_a_missing_table_or_set_is_enoent(monkeypatch, recording, table, name):
    with pytest.raises(OSError) as raised:
        replayed(monkeypatch, recording, nfnl.set_keys, "ip", table, name)
    assert raised.value.errno == errno.ENOENT
