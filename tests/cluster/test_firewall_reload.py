"""A firewall reload on one node of a running cluster, with clients connecting throughout.

Debian's nftables.service reloads with ``nft -f /etc/nftables.conf``, and the
file Debian ships begins with ``flush ruleset``: every table goes, the
agent's too (the ip table with the bucket filter, the arp table rewriting the
sender MAC).  Checked here on one node (n1), three-nodes.crm, Corosync token
1000 ms, the monitor every 10 s as the example configures it:

* **Debian's own file**: the node's guard (lib/clusterip/guard.py) puts
  the agent's tables back at once, before any monitor runs: the node's
  bucket is unanswered for well under a second (without the guard: 9.6 s,
  until the next monitor failed and Pacemaker restarted the instance), no
  bucket of another node is touched, Pacemaker records no failure, the
  admin's table stays as loaded, every connection afterwards is answered by
  the node owning its bucket, and the client's neighbour entry for the VIP
  holds the cluster MAC.
* **A reload written as the README says** (``table inet filter`` + ``delete
  table inet filter`` + the table, no ``flush ruleset``): the agent's
  tables are untouched (the same handles), no bucket goes dark, no failure.
"""

import os
import time

import cluster
import oracle
import scenarios
from cluster import REPORT, VIP, TrafficWatch, wait_until
from netlab import is_multicast_mac

THREE_NODES = os.path.join(cluster.CRM_EXAMPLES, "three-nodes.crm")
PRIMITIVE, CLONE = "web-ip", "web-ip-clone"
PORT = scenarios.PORT
NODE = "n1"
PAIRS_PER_BUCKET = 6
RECOVERY_LIMIT = 60.0
GUARD_LIMIT = 2.0  # s the node's bucket may stay dark after a flush (measured ~0.1-0.3 s)

# /etc/nftables.conf as Debian 12 and 13 ship it (nftables package).
DEBIAN_CONF = """#!/usr/sbin/nft -f

flush ruleset

table inet filter {
	chain input {
		type filter hook input priority filter;
	}
	chain forward {
		type filter hook forward priority filter;
	}
	chain output {
		type filter hook output priority filter;
	}
}
"""

# The same, written as the README's "Firewall reloads" says: only its own table goes.
OWN_TABLES_CONF = """#!/usr/sbin/nft -f

table inet filter
delete table inet filter

table inet filter {
	chain input {
		type filter hook input priority filter;
		tcp dport 22 accept
	}
	chain forward {
		type filter hook forward priority filter;
	}
	chain output {
		type filter hook output priority filter;
	}
}
"""


def reload_firewall(c, text):
    """``nft -f`` of ``text`` in NODE, as nftables.service's reload runs it."""
    path = os.path.join(c.node_dir(NODE), "nftables.conf")
    with open(path, "w") as handle:
        handle.write(text)
    at = time.monotonic()
    c.node_exec(NODE, ["nft", "-f", path])
    return at


def agent_tables(c):
    """{(family, name): handle} of the agent's tables in NODE."""
    return {(item["table"]["family"], item["table"]["name"]): item["table"]["handle"]
            for item in oracle.nft_ruleset(c.lab, NODE) if "table" in item
            and item["table"]["name"].startswith(oracle.TABLE_PREFIX)}


def failures_on(c, node):
    return [f for f in c.status().failures if f.get("node") == node]


def test_firewall_reloads():
    with cluster.Cluster(token=1000) as c:
        c.load_crm(THREE_NODES)
        c.start_responders(PORT)
        wait_until(lambda: all(len(c.owned(node) or ()) == 1 for node in c.nodes)
                   and len(c.kernel_buckets()) == 3, 120, "one bucket per node")
        pairs = [(source, port) for source in c.lab.sources[:100]
                 for port in scenarios.SOURCE_PORTS]
        answers, _ = c.lab.connect(VIP, PORT, pairs)
        owned = {node: next(iter(c.owned(node))) for node in c.nodes}
        bucket_of = {pair: owned[node] for pair, node in answers.items() if node in owned}
        assert len(bucket_of) == len(pairs), answers
        watched, watched_buckets = cluster.watched_pairs(bucket_of, PAIRS_PER_BUCKET)
        bucket = owned[NODE]
        baseline_tables = agent_tables(c)
        assert len(baseline_tables) == 2, baseline_tables  # ip + arp

        watch = TrafficWatch(c.lab, VIP, PORT, watched, 300)
        watch.start()
        try:
            wait_until(lambda: len(watch.rounds) >= 5, 30, "the first client rounds")

            # 1. Debian's own file: flush ruleset.
            since = reload_firewall(c, DEBIAN_CONF)
            back = wait_until(lambda: len(agent_tables(c)) == 2 and c.owned(NODE) == {bucket}
                              and time.monotonic(), RECOVERY_LIMIT,
                              "the agent's tables back in %s" % NODE, 0.05)
            served = wait_until(
                lambda: watch.rounds and watch.rounds[-1][0] > since and all(
                    not answer.startswith("ERROR:") for answer in watch.rounds[-1][1].values())
                and watch.rounds[-1][0], RECOVERY_LIMIT, "every bucket answered again", 0.05)
            time.sleep(1.0)
            dark = watch.dark(watched_buckets, since - 0.5, time.monotonic())
            failures = failures_on(c, NODE)
            admin = [t for t in oracle.nft_tables(c.lab, NODE) if t == ("inet", "filter")]
            neighbour = oracle.neighbour_mac(c.lab, "client", VIP)
            flush_row = {"tables_back_s": round(back - since, 2),
                         "served_again_s": round(served - since, 2),
                         "dark": dark, "failures": [f.get("op_key") for f in failures]}
            c.log("flush ruleset on %s: %s" % (NODE, flush_row))
            assert admin, "the admin's table inet filter is gone"
            assert neighbour is not None and is_multicast_mac(neighbour), neighbour
            assert all(v[0] == 0 for b, v in dark.items() if b != bucket), \
                "buckets of other nodes went dark: %s" % dark
            assert back - since < GUARD_LIMIT and dark[bucket][0] < GUARD_LIMIT, flush_row
            assert not failures, "Pacemaker saw the flush: %s" % failures

            # 2. The README's way: only the admin's own table is replaced.
            before = agent_tables(c)
            since = reload_firewall(c, OWN_TABLES_CONF)
            time.sleep(12)  # past one monitor interval
            after = agent_tables(c)
            own_dark = watch.dark(watched_buckets, since - 0.2, time.monotonic())
            own_failures = failures_on(c, NODE)
            c.log("own-tables reload on %s: dark %s, tables %s -> %s" % (
                NODE, own_dark, before, after))
            assert after == before, "the agent's tables changed: %s -> %s" % (before, after)
            assert all(v[0] == 0 for v in own_dark.values()), own_dark
            assert not own_failures, own_failures
        finally:
            watch.stop()
        REPORT.notes.append(
            "firewall reload on %s (`nft -f` of Debian's nftables.conf, flush ruleset): the "
            "agent's tables back after %.2f s, bucket %d unanswered for %.2f s at most "
            "(other buckets 0), Pacemaker failures %s; README-style reload: nothing dark, "
            "tables untouched" % (NODE, flush_row["tables_back_s"], bucket,
                                  dark[bucket][0], flush_row["failures"] or "none"))
        answers, _ = c.lab.connect(VIP, PORT, pairs)
        owner = {b: node for node in c.nodes for b in c.owned(node)}
        wrong = {pair: answer for pair, answer in answers.items()
                 if answer != owner[bucket_of[pair]]}
        assert not wrong, dict(list(wrong.items())[:5])
        assert not watch.errors, watch.errors[:5]
