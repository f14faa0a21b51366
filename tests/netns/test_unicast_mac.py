"""A shared unicast cluster MAC (issue #16), with the clients behind a router.

The router (netlab's ``Lab(routed=True)``) forwards between the VIP's
segment and the client's subnet and, as RFC 1812 3.3.2 asks and routers of
the Cisco class do, refuses ARP and Neighbour Discovery that claim a
multicast link-layer address.  Three facts are shown here:

* the default multicast cluster MAC does not get through such a router: no
  connection is answered, and the router's filter counted what it dropped
  (the proof that this lab can fail);
* Linux as a router *without* that filter believes the multicast MAC: the
  whole scenario passes (why a Linux-only lab would prove nothing);
* a shared unicast MAC gets through, in every hash mode, IPv4 and IPv6: the
  whole data-plane scenario of tests/scenarios.py (every connection answered
  by exactly one node, a bucket move, a ruleset reload, nothing left behind:
  no netdev table, no unicast filter entry, promiscuity back), and the
  switch never learns the MAC (checked after every round).
"""

import pytest

import netlab
import oracle
import scenarios
from netlab import Lab

UNICAST_MACS = {False: "02:c1:c6:12:00:64", True: "02:c1:00:00:01:00"}  # by ipv6
FAMILIES = {False: scenarios.IPV4, True: scenarios.IPV6}
FAMILY_IDS = ["ipv4", "ipv6"]


@pytest.mark.parametrize("ipv6", [False, True], ids=FAMILY_IDS)
def test_multicast_mac_gets_nothing_through_an_rfc1812_router(ipv6):
    family = FAMILIES[ipv6]
    with Lab(nodes=scenarios.NODES, ipv6=ipv6, routed=True,
             timeout_scale=scenarios.TIMEOUT_SCALE) as lab:
        plane = scenarios.Dataplane(lab, "nft", "sourceip", family=family)
        plane.start()  # every node serves its bucket, as on a flat segment
        lab.run("client", "ping", "-c", "1", "-W", "1", family.vip, check=False)
        pairs = [(source, 21000) for source in lab.sources[:8]]
        answers, _ = lab.connect(family.vip, scenarios.PORT, pairs, timeout=1.0, retries=0)
        answered = {pair: answer for pair, answer in answers.items()
                    if not answer.startswith("ERROR:")}
        assert not answered, "connections through the router were answered: %s" % answered
        dropped = lab.router_dropped()["ip6" if ipv6 else "arp"]
        assert dropped > 0, "the router's RFC 1812 filter dropped nothing"
        mac = oracle.neighbour_mac(lab, "router", family.vip)
        assert mac is None or not netlab.is_multicast_mac(mac), mac
        for index, node in enumerate(lab.node_names):
            plane.expect(node, "stop", index, scenarios.OCF_SUCCESS)
            plane.assert_clean(node)


def test_linux_router_without_the_filter_believes_a_multicast_mac():
    report = scenarios.run_dataplane("nft", "sourceip", routed=True, rfc1812=False,
                                     timeout_scale=scenarios.TIMEOUT_SCALE)
    assert all(r["errors"] == 0 for r in report["rounds"]), report


@pytest.mark.parametrize("ipv6", [False, True], ids=FAMILY_IDS)
@pytest.mark.parametrize("hashmode", scenarios.HASHMODES)
def test_unicast_mac_through_an_rfc1812_router(hashmode, ipv6):
    report = scenarios.run_dataplane("nft", hashmode, family=FAMILIES[ipv6],
                                     clustermac=UNICAST_MACS[ipv6], routed=True,
                                     timeout_scale=scenarios.TIMEOUT_SCALE)
    print(report)
    assert [r["round"] for r in report["rounds"]] == ["spread", "reloaded", "after-move"]
    assert all(r["errors"] == 0 for r in report["rounds"]), report


@pytest.mark.parametrize("ipv6", [False, True], ids=FAMILY_IDS)
def test_unicast_mac_on_the_clients_own_segment(ipv6):
    report = scenarios.run_dataplane("nft", "sourceip-sourceport", family=FAMILIES[ipv6],
                                     clustermac=UNICAST_MACS[ipv6],
                                     timeout_scale=scenarios.TIMEOUT_SCALE)
    print(report)


# -- the unicast pieces tampered with: the monitor names them, start repairs them ------

TAMPERINGS = {
    # piece: (how it is removed, words of the monitor's reason)
    "netdev table": (lambda lab, name, mac: lab.run(
        "n0", "nft", "delete", "table", "netdev", name), "netdev ingress chain on eth0"),
    "ingress chain (flushed)": (lambda lab, name, mac: lab.run(
        "n0", "nft", "flush", "chain", "netdev", name, "ingress"), "netdev ingress chain on eth0"),
    "unicast filter entry": (lambda lab, name, mac: lab.run(
        "n0", "bridge", "fdb", "del", mac, "dev", "eth0", "self"),
        "unicast filter entry of eth0"),
}


@pytest.mark.parametrize("ipv6", [False, True], ids=FAMILY_IDS)
@pytest.mark.parametrize("piece", sorted(TAMPERINGS))
def test_a_tampered_unicast_piece_is_named_and_repaired(piece, ipv6):
    family, mac = FAMILIES[ipv6], UNICAST_MACS[ipv6]
    remove, words = TAMPERINGS[piece]
    # No guard: it would repair the piece before the monitor sees it missing.
    params = scenarios.agent_params("nft", "sourceip", family.vip, clustermac=mac,
                                    firewall_guard="false")

    def agent(action, instance, interval=0):
        return lab.agent("n0", action, params, scenarios.clone_meta(instance, interval=interval),
                         instance="vip:%d" % instance)

    with Lab(nodes=1, sources=0, ipv6=ipv6, timeout_scale=scenarios.TIMEOUT_SCALE) as lab:
        promiscuity = oracle.promiscuity(lab, "n0")
        for instance in (0, 1):
            assert agent("start", instance)[0] == 0
            assert agent("monitor", instance, 10000)[0] == 0
        remove(lab, oracle.table_name(family.vip), mac)
        for instance in (0, 1):
            rc, _, err = agent("monitor", instance, 10000)
            reasons = [line for line in err.splitlines() if line.startswith("ocf-exit-reason:")]
            assert rc == 1 and len(reasons) == 1 and words in reasons[0] and mac in reasons[0], \
                (piece, rc, err)
        for instance in (0, 1):  # Pacemaker's recovery: start the failed ones
            assert agent("start", instance)[0] == 0
            assert agent("monitor", instance, 10000)[0] == 0
        state = oracle.vip_states(lab, "n0", [family.vip], "nft", mac)[family.vip]
        assert not oracle.problems(state, {1, 2}, "nft"), (piece, state)
        remove(lab, oracle.table_name(family.vip), mac)  # and once more: stop cleans up
        for instance in (0, 1):
            assert agent("stop", instance)[0] == 0
        leftovers = oracle.leftovers(lab, "n0", "nft", [family.vip], None, mac, promiscuity)
        assert not leftovers, (piece, leftovers)
