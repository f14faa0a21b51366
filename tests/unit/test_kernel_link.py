"""link.multicast_macs on a recorded /proc/net/dev_mcast
(record_kernel_dumps.py), against what ``ip -j maddr`` listed."""

from clusterip.kernel import link
from unit.kernel_recordings import dump, state


def test_multicast_macs_are_those_ip_lists():
    listed = {(entry["ifname"], mac.replace(":", "")) for entry in state()["listed"]["maddr"]
              for mac in entry["link"]}
    assert link.multicast_macs(dump("dev_mcast")) == listed


def test_the_declared_memberships_are_read():
    found = link.multicast_macs(dump("dev_mcast"))
    for dev, mac in state()["declared"]["multicast"]:
        assert (dev, mac.replace(":", "")) in found


def test_lines_that_are_not_five_fields_are_ignored():
    assert link.multicast_macs("\n2 kv0 1 0\n2 kv0 1 0 03c100000001 extra\n") == set()
