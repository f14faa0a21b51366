"""The node's own connections on the VIP's subnet (issue #13), on the host kernel.

A node that chose a cloned VIP as the source of its own connection (to a
database, a mirror, a monitoring server on the VIP's subnet) gets the
replies hashed like client traffic: most land in buckets other nodes own and
the connection fails.  Measured with the agent before the fix (2026-12-01),
connections that connected of 40 per node on n0, n1, n2: IPv4 alone on its
subnet 15, 17, 8; IPv6 alone 18, 11, 11; IPv6 beside 15, 16, 9; IPv4 beside
40, 40, 40 (the VIP is a secondary address there, never a route's source).

For each family, with the VIP beside the node's own address (same subnet)
and alone on its subnet (the node's address in another one on the same
NIC), on a clone of 3 buckets over 3 nodes:

* every node's kernel chooses its own address as the source (``ip route get``);
* 40 connections of each node to a server on the VIP's subnet, from 40 source
  ports (hashmode sourceip-sourceport-destport, so that the replies hit every
  bucket), all connect, and the server saw none from the VIP;
* clients' connections *to* the VIP are still answered, each by one node;
* someone re-adding the address as a source (IPv6 without preferred_lft 0,
  IPv4 with the kernel's prefix route) fails the monitor, naming the piece,
  and a start repairs it;
* the last stop leaves no address and no route of the agent's.
"""

import pytest

import oracle
import scenarios
from netlab import Lab

NODES = 3
SERVER_PORT = 7070
VIP_PORT = 8080

# name: (VIP, prefix length, server address on the VIP's subnet, added to the client
# namespace unless the lab has it already)
CASES = {
    "ipv4-beside": ("198.18.0.100", 16, "198.18.0.2", False),
    "ipv4-alone": ("198.19.0.100", 24, "198.19.0.2", True),
    "ipv6-beside": ("2001:db8::100", 64, "2001:db8::2", False),
    "ipv6-alone": ("2001:db8:5::100", 64, "2001:db8:5::2", True),
}


def params(vip, prefixlen):
    return scenarios.agent_params(backend="nft", hashmode="sourceip-sourceport-destport",
                                  vip=vip, cidr_netmask=prefixlen)


def assert_clients_answered(lab, vip, server):
    for node in lab.node_names:
        lab.start_responder(node, VIP_PORT, bind="::" if ":" in vip else "0.0.0.0")
    pairs = [(server, 42000 + k) for k in range(30)]
    answers, _ = lab.connect(vip, VIP_PORT, pairs)
    assert set(answers.values()) <= set(lab.node_names), answers
    assert len(set(answers.values())) > 1, "all connections went to one node: %s" % answers


def readd_as_source(lab, node, vip, prefixlen):
    """What an administrator's ``ip addr`` would do: the address as a source again."""
    if ":" in vip:
        lab.run(node, "ip", "addr", "change", "%s/%d" % (vip, prefixlen), "dev", "eth0",
                "preferred_lft", "forever", "nodad")
    else:
        lab.run(node, "ip", "addr", "del", "%s/%d" % (vip, prefixlen), "dev", "eth0")
        lab.run(node, "ip", "addr", "add", "%s/%d" % (vip, prefixlen), "dev", "eth0")


@pytest.mark.parametrize("case", sorted(CASES))
def test_the_nodes_own_connections_never_leave_from_a_cloned_vip(case):
    vip, prefixlen, server, add_server = CASES[case]
    ipv6 = ":" in vip
    with Lab(nodes=NODES, sources=0, ipv6=ipv6) as lab:
        if add_server:
            lab.run("client", "ip", "addr", "add", "%s/%d" % (server, prefixlen), "dev", "eth0",
                    *(["nodad"] if ipv6 else []))
        scenarios.start_server(lab, SERVER_PORT, ipv6)
        agent_params = params(vip, prefixlen)
        for index, node in enumerate(lab.node_names):
            rc, _, err = lab.agent(node, "start", agent_params, scenarios.clone_meta(index))
            assert rc == 0, (node, err)
        if not ipv6 and add_server:
            # Alone on its subnet: the agent's route, from the node's own address.
            for index, node in enumerate(lab.node_names):
                assert oracle.agent_routes(lab, node) == [
                    "198.19.0.0/24 dev eth0 src 198.18.0.%d" % (11 + index)], node
        scenarios.assert_own_connections_work(lab, vip, server, SERVER_PORT)
        assert_clients_answered(lab, vip, server)

        # Tampering: re-added as a source on n0.  Monitor says what is missing,
        # a start of the node's instance repairs it.
        readd_as_source(lab, "n0", vip, prefixlen)
        rc, _, err = lab.agent("n0", "monitor", agent_params, scenarios.clone_meta(0))
        assert rc == 1, err
        assert ("preferred_lft 0" if ipv6 else "noprefixroute") in err, err
        rc, _, err = lab.agent("n0", "start", agent_params, scenarios.clone_meta(0))
        assert rc == 0, err
        rc, _, err = lab.agent("n0", "monitor", agent_params, scenarios.clone_meta(0))
        assert rc == 0, err
        assert oracle.source_address(lab, "n0", server) != vip

        for index, node in enumerate(lab.node_names):
            rc, _, err = lab.agent(node, "stop", agent_params, scenarios.clone_meta(index))
            assert rc == 0, (node, err)
            assert oracle.leftovers(lab, node, "nft", [vip]) == [], node


@pytest.mark.parametrize("ipv6", [False, True], ids=["ipv4", "ipv6"])
def test_plain_mode_keeps_the_kernels_choice_unless_told(ipv6):
    """Plain: as IPaddr2, the address is a source unless preferred_lft 0 (IPv6)
    or noprefixroute (IPv4: no prefix route, so the subnet route of the node's
    own address decides)."""
    vip, prefixlen = ("2001:db8:5::100", 64) if ipv6 else ("198.19.0.100", 24)
    server = "2001:db8:5::2" if ipv6 else "198.19.0.2"
    with Lab(nodes=1, sources=0, ipv6=ipv6) as lab:
        plain = scenarios.agent_params(backend="nft", vip=vip, cidr_netmask=prefixlen)
        assert lab.agent("n0", "start", plain)[0] == 0
        assert oracle.source_address(lab, "n0", server) == vip  # today's behaviour, kept
        assert lab.agent("n0", "stop", plain)[0] == 0
        told = dict(plain, **({"preferred_lft": "0"} if ipv6 else {"noprefixroute": "true"}))
        assert lab.agent("n0", "start", told)[0] == 0
        flags = oracle.addresses(lab, "n0", ipv6=ipv6, flags=True)["%s/%d" % (vip, prefixlen)]
        assert ("deprecated" if ipv6 else "noprefixroute") in flags, flags
        if ipv6:
            assert oracle.source_address(lab, "n0", server) != vip
        assert lab.agent("n0", "monitor", told)[0] == 0
        assert lab.agent("n0", "stop", told)[0] == 0
        assert "%s/%d" % (vip, prefixlen) not in oracle.addresses(lab, "n0", ipv6=ipv6)
