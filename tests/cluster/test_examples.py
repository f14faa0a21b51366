"""The other crm examples, applied verbatim to a real cluster, and the refusal
of mixed backends.

* ``two-nodes.crm`` on a two-node cluster: four buckets, two per node, every
  connection answered by exactly one node.
* ``two-vips.crm`` on three nodes: two independent clones, each spread one
  bucket per node, each VIP's connections answered by exactly one node.
* Mixed backends: a node that announces another backend for the VIP (the
  transient node attribute ``clusterip-backend-<VIP>``, as a node running the
  CLUSTERIP backend publishes it) makes the other nodes refuse to start their
  instances (exit 2, with the reason), so no two nodes hash differently.
  The host kernel has no CLUSTERIP, so the other backend is announced, not
  run: what is tested is the detection and the refusal in a real cluster.
"""

import os

import cluster
import scenarios
from cluster import wait_until

EXAMPLES = cluster.CRM_EXAMPLES
PORT = scenarios.PORT
VIPS = {"web-ip": "198.18.0.100", "mail-ip": "198.18.0.101"}


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
    table = "clusterip_" + vip.replace(".", "_")
    return {node: sorted(c.lab.nft_set_elements(node, "ip", table, "owned") or [])
            for node in c.nodes}


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
            by_node = wait_until(lambda: spread(c, primitive, 3), 90, primitive + " placed")
            assert sorted(by_node) == c.nodes, (primitive, by_node)
        c.start_responders(PORT)
        for rounds, (primitive, vip) in enumerate(sorted(VIPS.items()), start=1):
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
            assert failure.get("exitstatus") == "invalid parameter" or \
                failure.get("exitcode") == "2", failure
            assert "n2 uses clusterip" in failure.get("exitreason", ""), failure
        # No node that refused holds the VIP's filter: nobody hashes differently.
        for node in ("n0", "n1"):
            assert kernel_owned(c, VIPS["web-ip"])[node] == [], node
