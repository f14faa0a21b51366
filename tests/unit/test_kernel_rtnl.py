"""rtnl.addresses and rtnl.routes on the kernel's recorded answers
(record_kernel_dumps.py); expected values from what the state was built
with and what ``ip -j`` listed, never from the parser."""

import _socket
import collections

import pytest

from clusterip.kernel import rtnl
from unit.kernel_recordings import exchanges, replay, state

# The names ip(8) prints for IFA_F_* bits (IFA_F_PERMANENT it prints as the
# absence of "dynamic").
IFA_FLAG_NAMES = {"secondary": 0x01, "temporary": 0x01, "nodad": 0x02, "optimistic": 0x04,
                  "dadfailed": 0x08, "home": 0x10, "deprecated": 0x20, "tentative": 0x40,
                  "mngtmpaddr": 0x100, "noprefixroute": 0x200, "autojoin": 0x400,
                  "stable-privacy": 0x800}
IFA_F_PERMANENT = 0x80
SCOPES = {None: 0, "site": 200, "link": 253, "host": 254}
FAMILIES = {4: _socket.AF_INET, 6: _socket.AF_INET6}


def packed(text):
    return _socket.inet_pton(_socket.AF_INET6 if ":" in text else _socket.AF_INET, text)


def flags_of(listed):
    flags = 0 if listed.get("dynamic") else IFA_F_PERMANENT
    for name, value in listed.items():
        if value is True and name != "dynamic":
            flags |= IFA_FLAG_NAMES[name]  # KeyError: a flag this test does not know
    return flags


def listed_addresses(version):
    return collections.Counter(
        (link["ifindex"], a["prefixlen"], packed(a["local"]),
         a.get("label", "") if version == 4 else "", flags_of(a))
        for link in state()["listed"]["addresses%d" % version] for a in link["addr_info"])


def addresses(monkeypatch, version, recording=None):
    fake = replay(monkeypatch, exchanges(recording or "addresses%d" % version))
    found = rtnl.addresses(FAMILIES[version])
    fake.check()
    return found


@pytest.mark.parametrize("version", [4, 6])
def test_every_address_ip_lists_and_nothing_else(monkeypatch, version):
    assert collections.Counter(addresses(monkeypatch, version)) == listed_addresses(version)


@pytest.mark.parametrize("version", [4, 6])
def test_the_declared_addresses_with_their_labels_and_flags(monkeypatch, version):
    found = addresses(monkeypatch, version)
    links = state()["listed"]["links"]
    declared = state()["declared"]
    labels = {(dev, address): label for dev, address, label in declared["labels"]}
    for dev, address, _, flag_names in declared["addresses"]:
        ip, prefixlen = address.split("/")
        if (":" in ip) != (version == 6):
            continue
        label = labels.get((dev, ip), dev) if version == 4 else ""
        wanted = IFA_F_PERMANENT
        for name in flag_names:
            wanted |= IFA_FLAG_NAMES[name]
        matching = [f for f in found if f[:4] == (links[dev], int(prefixlen), packed(ip), label)]
        assert len(matching) == 1, (dev, address, matching)
        assert matching[0][4] == wanted, (dev, address, hex(matching[0][4]), hex(wanted))


def test_flags_above_the_low_byte_come_from_ifa_flags(monkeypatch):
    # noprefixroute (0x200) fits only IFA_FLAGS; ifaddrmsg.ifa_flags has 8 bits.
    for version, ip in ((4, "198.18.6.1"), (6, "2001:db8:5::100")):
        flags = [f for _, _, address, _, f in addresses(monkeypatch, version)
                 if address == packed(ip)]
        assert flags and flags[0] & 0x200, (ip, flags)


def test_a_dump_over_several_datagrams_is_read_to_its_end(monkeypatch):
    (_, datagrams), = exchanges("addresses4")
    assert len(datagrams) > 2  # the recording holds what this test is about
    found = {address for _, _, address, _, _ in addresses(monkeypatch, 4)}
    many = state()["declared"]["many4"]
    assert {packed(a.split("/")[0]) for a in many} <= found
    many6 = state()["declared"]["many6"]
    assert {packed(a.split("/")[0]) for a in many6} <= {
        address for _, _, address, _, _ in addresses(monkeypatch, 6)}


def listed_routes(version, table):
    links = state()["listed"]["links"]
    width = 32 if version == 4 else 128
    found = collections.Counter()
    for route in state()["listed"]["routes%d" % version][str(table)]:
        dst = route["dst"]
        if dst == "default":
            dst = "0.0.0.0/0" if version == 4 else "::/0"
        ip, _, length = dst.partition("/")
        found[(packed(ip), int(length or width), SCOPES[route.get("scope")],
               links[route["dev"]] if "dev" in route else None, "gateway" in route)] += 1
    return found


@pytest.mark.parametrize("version", [4, 6])
@pytest.mark.parametrize("table", state()["declared"]["route_tables"])
def test_every_route_of_a_table_ip_lists(monkeypatch, version, table):
    fake = replay(monkeypatch, exchanges("routes%d" % version))
    found = rtnl.routes(FAMILIES[version], table)
    fake.check()
    # The recording's listing names no protocol or source: the netns tier
    # checks those (the agent's own prefix route, proto 193 src <node>).
    assert collections.Counter(route[:5] for route in found) == listed_routes(version, table)


def test_the_declared_routes_with_table_gateway_and_device(monkeypatch):
    links = state()["listed"]["links"]
    for version, _, table, dst, gateway, dev in state()["declared"]["routes"]:
        replay(monkeypatch, exchanges("routes%d" % version))
        ip, length = dst.split("/")
        found = [r for r in rtnl.routes(FAMILIES[version], table)
                 if r[0] == packed(ip) and r[1] == int(length)]
        assert [(r[3], r[4]) for r in found] == [(links[dev], gateway is not None)], \
            (table, dst, found)
        for other in state()["declared"]["route_tables"]:
            if other != table:  # a route of one table is not reported in another
                replay(monkeypatch, exchanges("routes%d" % version))
                assert not [r for r in rtnl.routes(FAMILIES[version], other)
                            if r[0] == packed(ip) and r[1] == int(length)], (other, dst)
