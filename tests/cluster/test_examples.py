"""The other crm examples, applied verbatim to a real cluster, and the refusal
of mixed backends.

* ``two-nodes.crm`` on a two-node cluster: four buckets, two per node, every
  connection answered by exactly one node.
* ``two-vips.crm`` on three nodes: two independent clones, each spread one
  bucket per node, each VIP's connections answered by exactly one node.
* ``ipv6.crm`` (dual stack) on three nodes with IPv6 in the lab: both clones
  spread one bucket per node; every connection to either VIP answered by
  exactly one node, the one whose kernel owns the bucket Pacemaker placed
  there; the client resolves the IPv6 VIP to its cluster MAC; every node
  publishes the mixed-backend guard's attribute for the IPv6 VIP, a name with
  colons, which Pacemaker keeps verbatim; every node's own connections to a
  server on the VIPs' subnet leave from its own address and connect (both
  families, 40 each); stopping both clones leaves nothing.
* ``behind-a-router.crm`` (a shared unicast cluster MAC, issue #16) on
  three nodes whose client sits behind an RFC 1812 router: one bucket per
  node, the router resolves the VIP to the shared MAC, every connection
  through it answered by exactly one node; a node crash: its bucket moves to
  a survivor and every connection is answered again; the switch never
  learns the shared MAC; stopping the clone leaves nothing on the survivors
  (no netdev table, no unicast filter entry).
* Mixed backends: a node that announces another backend for the VIP (the
  transient node attribute ``clusterip-backend-<VIP>``, as a node running the
  CLUSTERIP backend publishes it) makes the other nodes refuse to start their
  instances (exit 1, with the reason), so no two nodes hash differently.
  The host kernel has no CLUSTERIP, so the other backend is announced, not
  run: what is tested is the detection and the refusal in a real cluster.
  Once that node withdraws its backend, the refused instances start by
  themselves within HEAL_LIMIT (the examples' failure-timeout=60s; no crm
  resource cleanup) and every connection is answered once.
* The README's ``pcs`` commands (pcs 0.11 on Debian 12, 0.12 on Debian 13),
  run verbatim in a node (only the address and netmask are the lab's): the
  clone they push carries ``globally-unique``, ``clone-max``,
  ``clone-node-max`` and ``resource-stickiness`` in its own meta attributes,
  the primitive none, pcs warns of nothing, and the three buckets start one
  per node.  Then ``crm_resource --validate``, as Pacemaker runs validate-all
  with the agent's parameters: 0 for good ones, 6 with the agent's exit
  reason for bad ones, and 0 for the configured clone.
"""

import collections
import os
import re
import shutil
import time
import xml.etree.ElementTree as ET

import pytest

import cluster
import netlab
import oracle
import scenarios
from cluster import wait_until
from clusterip import PROVIDER

EXAMPLES = cluster.CRM_EXAMPLES
PORT = scenarios.PORT
VIPS = {"web-ip": "198.18.0.100", "mail-ip": "198.18.0.101"}
# ipv6.crm: the primitive of each family and the scenario family of its VIP,
# their hash mode, and the IPv6 VIP's default cluster MAC (README "IPv6":
# 33:33 followed by the VIP's last four bytes).
DUAL_STACK = {"web-ip": scenarios.IPV4, "web-ip6": scenarios.IPV6}
HASHMODE = "sourceip-sourceport"
VIP6 = scenarios.IPV6.vip
CLUSTER_MAC6 = "33:33:00:00:01:00"
OWN_PORT = 7070  # the server the nodes' own connections go to
# s from the end of a backend conflict until the refused instances run by
# themselves: the examples' failure-timeout (60 s) and Pacemaker's recheck.
HEAL_LIMIT = 120


def spread(c, primitive, buckets):
    """{node: [buckets]} once every instance of ``primitive`` runs, else None."""
    placed = c.status().buckets(primitive)
    if sorted(placed) != list(range(1, buckets + 1)) or None in placed.values():
        return None
    by_node = {}
    for bucket, node in placed.items():
        by_node.setdefault(node, []).append(bucket)
    return by_node


def kernel_owned(c, vip):
    """{node: buckets} from nft's own listing of each node's set "owned"."""
    return {node: sorted(c.owned(node, vip) or []) for node in c.nodes}


def answered_once(c, vip):
    """Connections from every source, 2 ports each: {node: count}; each answered once."""
    pairs = [(source, port) for source in c.lab.sources for port in scenarios.SOURCE_PORTS]
    answers, _ = c.lab.connect(vip, PORT, pairs)
    errors = {k: v for k, v in answers.items() if v not in c.nodes}
    assert not errors, "%d connections to %s failed: %s" % (
        len(errors), vip, dict(list(errors.items())[:5]))
    served = {}
    for node in answers.values():
        served[node] = served.get(node, 0) + 1
    # Exactly one answer per connection is the client's contract (one line or an
    # error); the responders' logs say the same from the servers' side.
    accepted = sum(len(c.lab.accepted(node)) for node in c.nodes)
    assert accepted == len(pairs) * c.answered_rounds, (accepted, len(pairs))
    return served


def published_backends(c, reader, vip):
    """{node: backend} of the VIP's attribute as ``attrd_updater --query --all`` on
    node ``reader`` prints it (empty values, i.e. withdrawn ones, left out)."""
    result = c.node_exec(reader, ["attrd_updater", "--name", "clusterip-backend-" + vip,
                                "--query", "--all"], check=False, timeout=30)
    return {host: value for host, value in re.findall(
        r'host="([^"]*)" value="([^"]*)"', result.stdout) if value}


def test_two_node_example_two_buckets_per_node():
    with cluster.Cluster(nodes=2) as c:
        c.load_crm(os.path.join(EXAMPLES, "two-nodes.crm"))
        by_node = wait_until(lambda: spread(c, "web-ip", 4), 90, "four buckets placed")
        assert sorted(len(b) for b in by_node.values()) == [2, 2], by_node
        assert kernel_owned(c, VIPS["web-ip"]) == {n: sorted(b) for n, b in by_node.items()}
        c.start_responders(PORT)
        c.answered_rounds = 1
        served = answered_once(c, VIPS["web-ip"])
        assert set(served) == set(c.nodes), served


def test_two_vips_example_and_mixed_backends_refused():
    with cluster.Cluster(nodes=3) as c:
        c.load_crm(os.path.join(EXAMPLES, "two-vips.crm"))
        for primitive in VIPS:
            by_node = wait_until(lambda p=primitive: spread(c, p, 3), 90, primitive + " placed")
            assert sorted(by_node) == c.nodes, (primitive, by_node)
        c.start_responders(PORT)
        for rounds, (_, vip) in enumerate(sorted(VIPS.items()), start=1):
            c.answered_rounds = rounds
            served = answered_once(c, vip)
            assert set(served) == set(c.nodes), (vip, served)

        # Mixed backends: stop the web clone, let n2 announce the CLUSTERIP backend
        # for its VIP, start the clone again: n0 and n1 must refuse (exit 2).  The
        # clone is kept off n2, whose own start would replace its announcement.
        c.crm("n0", "resource", "stop", "web-ip-clone")
        wait_until(lambda: not any(c.status().buckets("web-ip").values()), 60, "web-ip stopped")
        c.crm("n0", "configure", "location", "web-ip-not-on-n2", "web-ip-clone", "-inf:", "n2")
        attribute = "clusterip-backend-" + VIPS["web-ip"]
        c.node_exec("n2", ["attrd_updater", "--name", attribute, "--update", "clusterip"])
        wait_until(lambda: "clusterip" in c.node_exec(
            "n0", ["attrd_updater", "--name", attribute, "--query", "--all"],
            check=False).stdout, 30, "n2's announcement seen on n0")
        c.crm("n0", "resource", "start", "web-ip-clone")

        def refused():
            failures = [f for f in c.status().failures
                        if f.get("op_key", "").startswith("web-ip:") and f.get("task") == "start"]
            nodes = {f.get("node") for f in failures}
            return failures if {"n0", "n1"} <= nodes else None
        failures = wait_until(refused, 90, "n0 and n1 refusing to start web-ip")
        for failure in failures:
            assert failure.get("exitstatus") == "error" or \
                failure.get("exitcode") == "1", failure
            assert "n2 uses clusterip" in failure.get("exitreason", ""), failure
        # No node that refused holds the VIP's filter: nobody hashes differently.
        for node in ("n0", "n1"):
            assert kernel_owned(c, VIPS["web-ip"])[node] == [], node

        # The conflict goes (n2 withdraws its backend, as its last stop does):
        # the refusals expire by themselves (failure-timeout=60s, exit 1) and
        # n0 and n1 serve the VIP again, with no crm resource cleanup.
        # First every instance refused on both nodes and the cluster settled:
        # nothing would start again without the failures expiring.
        wait_until(lambda: len({(f.get("op_key"), f.get("node")) for f in c.status().failures
                                if f.get("op_key", "").startswith("web-ip:")
                                and f.get("task") == "start"}) == 6, 90,
                   "all three web-ip instances refused on n0 and n1")
        c.wait_settled(60)
        assert not any(c.status().buckets("web-ip").values())
        c.node_exec("n2", ["attrd_updater", "--name", attribute, "--delete"])
        withdrawn = time.monotonic()
        healed = wait_until(lambda: (lambda b: b if set(b.values()) == {"n0", "n1"} else None)(
            c.status().buckets("web-ip")), HEAL_LIMIT, "web-ip started again on n0 and n1")
        c.log("refusal healed %.1f s after the conflict went: %s" % (
            time.monotonic() - withdrawn, healed))
        c.answered_rounds += 1
        served = answered_once(c, VIPS["web-ip"])
        assert set(served) == {"n0", "n1"}, served


def test_behind_a_router_example_fails_over():
    example = os.path.join(EXAMPLES, "behind-a-router.crm")
    with open(example) as handle:
        clustermac = re.search(r"clustermac=([0-9a-f:]{17})", handle.read()).group(1)
    with cluster.Cluster(nodes=3, routed=True) as c:
        c.load_crm(example)
        by_node = wait_until(lambda: spread(c, "web-ip", 3), 90, "web-ip placed")
        assert sorted(by_node) == c.nodes, by_node
        assert kernel_owned(c, VIPS["web-ip"]) == {n: sorted(b) for n, b in by_node.items()}
        c.start_responders(PORT)
        plane = scenarios.Dataplane(c.lab, "nft", HASHMODE, log=c.log, clustermac=clustermac)
        pairs = plane.pairs()
        c.lab.run("client", "ping", "-c", "1", "-W", "1", VIPS["web-ip"], check=False)
        before = plane.traffic_round("through the router", pairs)
        assert set(before.values()) == set(c.nodes), collections.Counter(before.values())
        plane.assert_client_resolves_the_cluster_mac()  # the router's entry
        for node in c.nodes:
            assert oracle.unicast_filter_macs(c.lab, node) == {clustermac}, node

        victim = "n2"
        killed = c.kill_node(victim)
        lost = by_node[victim]
        moved = wait_until(lambda: (lambda b: b if all(b.get(bucket) and victim not in
                                                       b[bucket] for bucket in lost) else None)(
            c.kernel_buckets()), 90, "%s's bucket served by a survivor" % victim)
        seconds = time.monotonic() - killed
        c.log("behind the router: bucket %s of %s served by %s %.1f s after the crash" % (
            lost, victim, [moved[b] for b in lost], seconds))
        survivors = [node for node in c.nodes if node != victim]
        after = plane.traffic_round("after %s crashed" % victim, pairs)
        assert set(after.values()) == set(survivors), collections.Counter(after.values())
        kept = [pair for pair, node in before.items() if node != victim and after[pair] != node]
        assert not kept, "%d pairs of the survivors moved: %s" % (len(kept), kept[:5])
        plane.assert_client_resolves_the_cluster_mac()

        c.crm("n0", "resource", "stop", "web-ip-clone")
        wait_until(lambda: not any(c.status().buckets("web-ip").values()), 60, "web-ip stopped")
        c.wait_settled(60)
        leftovers = {node: c.leftovers(node, [VIPS["web-ip"]], clustermac)
                     for node in survivors}
        assert not any(leftovers.values()), "left behind: %s" % leftovers


def test_ipv6_dual_stack_example():
    with cluster.Cluster(nodes=3, ipv6=True) as c:
        c.load_crm(os.path.join(EXAMPLES, "ipv6.crm"))
        for primitive, family in DUAL_STACK.items():
            by_node = wait_until(lambda p=primitive: spread(c, p, 3), 90, primitive + " placed")
            assert sorted(by_node) == c.nodes, (primitive, by_node)
            # Each node's kernel owns the bucket Pacemaker placed there and no other,
            # so the node that answers a connection owns that connection's bucket.
            assert kernel_owned(c, family.vip) == {n: sorted(b) for n, b in by_node.items()}

        # One round per family through scenarios.Dataplane: one clean answer per
        # connection, and the answering node's responder the only one that
        # accepted it.  Lab.accepted() reads a node's latest responder, so each
        # family's responders start right before its round (the IPv6 ones listen
        # IPv6-only, beside the IPv4 ones on the same port).  IPv4 connects from
        # the client's own address with 200 source ports, the lab's many sources
        # being IPv6 ones: sourceip-sourceport spreads them over the buckets.
        pairs = {scenarios.IPV4: [(netlab.CLIENT_ADDRESS, port) for port in range(21000, 21200)],
                 scenarios.IPV6: [(source, port) for source in c.lab.sources
                                  for port in scenarios.SOURCE_PORTS]}
        for family, round_pairs in pairs.items():
            for node in c.nodes:
                c.lab.start_responder(node, PORT, bind=family.bind)
            plane = scenarios.Dataplane(c.lab, "nft", HASHMODE, log=c.log, family=family)
            # Warm the client's neighbour entry for the VIP (the answer does not matter).
            c.lab.run("client", "ping", "-c", "1", "-W", "1", family.vip, check=False)
            answers = plane.traffic_round(family.vip, round_pairs)
            assert set(answers.values()) == set(c.nodes), (family.vip, answers)
        # The nodes' own connections to a server on the VIPs' subnet never leave
        # from a cloned VIP and all connect (issue #13; IPv6 beside the node's
        # own address is where they broke).
        for port, (family, server) in enumerate(((scenarios.IPV4, netlab.CLIENT_ADDRESS),
                                                 (scenarios.IPV6, netlab.CLIENT_ADDRESS6)),
                                                start=OWN_PORT):
            scenarios.start_server(c.lab, port, family is scenarios.IPV6)
            scenarios.assert_own_connections_work(c.lab, family.vip, server, port, c.nodes)
        # The nodes answer Neighbour Solicitations for the IPv6 VIP, and solicit
        # the client from it, with the cluster MAC (the client knows no node's
        # own), and every node has joined that MAC.
        plane.cluster_mac = CLUSTER_MAC6  # plane: the IPv6 round's, the last
        plane.assert_client_resolves_the_cluster_mac()
        for node in c.nodes:
            assert CLUSTER_MAC6 in oracle.multicast_macs(c.lab, node), node

        # The mixed-backend guard's attribute for the IPv6 VIP, a name with colons:
        # every node reads every node's backend, and the CIB holds the name
        # verbatim (Pacemaker sanitises only the nvpair's id: ':' -> '.').
        everyone = {node: "nft" for node in c.nodes}
        for node in c.nodes:
            wait_until(lambda n=node: published_backends(c, n, VIP6) == everyone, 30,
                       "every node's backend for %s read on %s" % (VIP6, node))
        xml = c.node_exec("n0", ["cibadmin", "--query", "--scope", "status"]).stdout
        assert xml.count('name="clusterip-backend-%s" value="nft"' % VIP6) == 3, xml

        for primitive in DUAL_STACK:
            c.crm("n0", "resource", "stop", primitive + "-clone")
        wait_until(lambda: not any(node for primitive in DUAL_STACK
                                   for node in c.status().buckets(primitive).values()),
                   60, "both clones stopped")
        c.wait_settled(60)
        vips = [family.vip for family in DUAL_STACK.values()]
        leftovers = {node: c.leftovers(node, vips) for node in c.nodes}
        assert not any(leftovers.values()), "left behind: %s" % leftovers
        # The last instance to stop on a node withdraws the node's backend.
        wait_until(lambda: not any(published_backends(c, "n0", vip) for vip in vips), 30,
                   "every node's backend for %s withdrawn" % " and ".join(vips))


# The README's pcs example with the lab's address for its documentation one.
README = os.path.join(cluster.REPO, "README.rst")
PCS_LAB = {"ip=192.0.2.100 cidr_netmask=24": "ip=%s cidr_netmask=16" % VIPS["web-ip"]}
CLONE_META = {"globally-unique": "true", "clone-max": "3", "clone-node-max": "3",
              "resource-stickiness": "0", "failure-timeout": "60s"}


def readme_pcs_commands():
    """The README's literal block that starts with ``pcs cluster cib``, dedented."""
    with open(README, encoding="utf-8") as f:
        text = f.read()
    match = re.search(r"::\n\n((?:    pcs cluster cib .*\n)(?:(?:    .*)?\n)*?)\n(?! )", text)
    assert match, "README.rst has no literal block starting with 'pcs cluster cib'"
    return "".join(line[4:] + "\n" for line in match.group(1).splitlines())


def meta(element):
    """{name: value} of the meta_attributes directly under ``element``."""
    return {nv.get("name"): nv.get("value") for attrs in element.findall("meta_attributes")
            for nv in attrs.findall("nvpair")}


def validate(c, *options, resource=None):
    """``crm_resource --validate`` on n0: (exit code, stdout + stderr)."""
    argv = ["crm_resource", "--validate"]
    if resource:
        argv += ["-r", resource]
    else:
        argv += ["--class", "ocf", "--provider", PROVIDER, "--agent", "clusterip"]
        argv += ["--option=%s" % option for option in options]
    result = c.node_exec("n0", argv, check=False, timeout=60)
    return result.returncode, result.stdout + result.stderr


def test_readme_pcs_commands_and_crm_resource_validate():
    if shutil.which("pcs", path=cluster.CLEAN_PATH) is None:
        pytest.fail("pcs is missing (apt-get install pcs; tests/setup-host installs it)",
                    pytrace=False)
    script = readme_pcs_commands()
    for documented, lab in PCS_LAB.items():
        assert script.count(documented) == 1, (documented, script)
        script = script.replace(documented, lab)
    with cluster.Cluster(nodes=3) as c:
        # In the node's own /root (its private home): the CIB copy stays there.
        result = c.node_exec("n0", ["sh", "-ec", "cd /root\n" + script], timeout=180)
        c.log("pcs %s: %s" % (c.node_exec("n0", ["pcs", "--version"]).stdout.strip(),
                              (result.stdout + result.stderr).strip() or "no output"))
        assert not re.search(r"warning|deprecat|error", result.stdout + result.stderr,
                             re.IGNORECASE), result.stdout + result.stderr
        xml = c.node_exec("n0", ["cibadmin", "--query", "--scope", "resources"]).stdout
        resources = ET.fromstring(xml)
        clones = resources.findall("clone")
        assert [clone.get("id") for clone in clones] == ["web-ip-clone"], xml
        assert meta(clones[0]) == CLONE_META, xml
        primitive = clones[0].find("primitive")
        assert primitive.get("id") == "web-ip" and meta(primitive) == {}, xml
        assert (primitive.get("class"), primitive.get("provider"), primitive.get("type")) == \
            ("ocf", PROVIDER, "clusterip"), xml
        by_node = wait_until(lambda: spread(c, "web-ip", 3), 90, "three buckets placed")
        assert sorted(by_node) == c.nodes, by_node
        assert kernel_owned(c, VIPS["web-ip"]) == {n: sorted(b) for n, b in by_node.items()}

        # crm_resource --validate: the agent's validate-all with these parameters.
        code, output = validate(c, "ip=%s" % VIPS["web-ip"], "cidr_netmask=16",
                                "hashmode=sourceip-sourceport")
        assert code == 0, (code, output)
        for options, reason in (
                (("ip=198.18.0.300",), "ip='198.18.0.300' is not an IPv4 or IPv6 address"),
                (("ip=%s" % VIPS["web-ip"], "hashmode=bogus"), "hashmode='bogus' is not one of"),
                (("cidr_netmask=16",), "parameter ip is required")):
            code, output = validate(c, *options)
            assert code == 6 and "returned 6" in output, (options, code, output)
            assert "ocf-exit-reason:" + reason in output, (options, output)
        # The configured clone: its first instance with the parameters pushed
        # (the primitive's own id names no resource once it is a clone's).
        code, output = validate(c, resource="web-ip-clone")
        assert code == 0 and "web-ip:0" in output, (code, output)
