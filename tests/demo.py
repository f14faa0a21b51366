"""A live demo of clusterip on this one machine: a real three-node Pacemaker
+ Corosync cluster in namespaces, one VIP cloned into three buckets from
crm-examples/three-nodes.crm, a client with 200 source addresses, a node
failure, the automatic takeover and its time, the node's return and the
rebalance.

Run as root: ``make demo`` (which installs what it needs first).  It tears
everything down by itself, also on Ctrl-C.
"""

import os
import random
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
# Run as a script (make demo), outside pytest, whose pythonpath does not apply:
# this directory (netlab, oracle) is sys.path[0] already; the cluster tier's
# harness lives in tests/cluster.
sys.path.insert(1, os.path.join(HERE, "cluster"))
from cluster import Cluster, wait_until  # noqa: E402  (the cluster tier's harness)

REPO = os.path.dirname(HERE)
EXAMPLE = os.path.join(REPO, "crm-examples", "three-nodes.crm")
VIP, PORT, BUCKETS, PRIMITIVE = "198.18.0.100", 8080, 3, "web-ip"
ROUND_SIZE = 200
TOKEN_MS = 1000  # corosync totem token: failure detection in ~1.7 s instead of ~3.7 s


def say(text):
    print(text, flush=True)


def traffic_round(cluster, number, label):
    """One bounded round: ROUND_SIZE connections from random (source, port) pairs."""
    lab = cluster.lab
    pairs = [(random.choice(lab.sources), random.randrange(30000, 40000))
             for _ in range(ROUND_SIZE)]
    answers, _ = lab.connect(VIP, PORT, pairs, timeout=0.3, workers=64, retries=0)
    served = {node: 0 for node in cluster.nodes}
    errors = 0
    for answer in answers.values():
        if answer in served:
            served[answer] += 1
        else:
            errors += 1
    placed = cluster.status().buckets(PRIMITIVE)
    buckets = "  ".join("%d:%s" % (b, placed.get(b) or "-") for b in range(1, BUCKETS + 1))
    say("%4d  %-24s %5d %5d %5d %7d   %s" % (number, label, served["n0"], served["n1"],
                                             served["n2"], errors, buckets))
    time.sleep(0.3)  # a pace a person can follow
    return errors, placed


def header():
    say("\nround  phase                      n0    n1    n2  failed   bucket:node (Pacemaker)")


def one_per_node(cluster):
    placed = cluster.status().buckets(PRIMITIVE)
    nodes = [placed.get(b) for b in range(1, BUCKETS + 1)]
    return None not in nodes and len(set(nodes)) == BUCKETS


def main():
    random.seed(1)
    began = time.monotonic()
    say("== building a three-node Pacemaker + Corosync cluster in namespaces (token %d ms)"
        % TOKEN_MS)
    with Cluster(token=TOKEN_MS, log=lambda line: None) as cluster:
        say("== cluster up in %.1f s; loading %s" % (cluster.timings["up"],
                                                     os.path.relpath(EXAMPLE, REPO)))
        cluster.load_crm(EXAMPLE)
        wait_until(lambda: one_per_node(cluster), 60, "one bucket per node")
        cluster.start_responders(PORT)
        header()
        number = 0
        for _ in range(4):
            number += 1
            traffic_round(cluster, number, "all nodes up")

        say("\n== n2 crashes: every process SIGKILLed and its link down (a dead host)")
        killed = cluster.kill_node("n2")
        while True:
            number += 1
            errors, placed = traffic_round(cluster, number, "n2 dead")
            if errors == 0 and "n2" not in placed.values():
                break
            if time.monotonic() - killed > 90:
                raise SystemExit("bucket 3 was not taken over within 90 s")
        say("== Pacemaker moved n2's bucket to a survivor: every connection answered "
            "again %.1f s after the crash" % (time.monotonic() - killed))

        say("\n== n2 reboots and rejoins the cluster")
        cluster.revive_node("n2")
        back = time.monotonic()
        while True:
            number += 1
            errors, _ = traffic_round(cluster, number, "n2 back, rebalancing")
            if errors == 0 and one_per_node(cluster):
                break
            if time.monotonic() - back > 90:
                raise SystemExit("the buckets did not rebalance within 90 s")
        say("== rebalanced (resource-stickiness=0): one bucket per node again, %.1f s after "
            "n2 was back online" % (time.monotonic() - back))
        for _ in range(2):
            number += 1
            traffic_round(cluster, number, "rebalanced")

        say("\n== stopping the clone")
        cluster.crm("n0", "resource", "stop", "web-ip-clone")
        wait_until(lambda: not any(cluster.status().buckets(PRIMITIVE).values()), 60,
                   "every instance stopped")
        left = {node: cluster.leftovers(node) for node in cluster.nodes}
        say("== nothing left behind on any node" if not any(left.values())
            else "LEFT BEHIND: %s" % left)
        say("== tearing the cluster down")
    say("== done in %.0f s" % (time.monotonic() - began))


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:
        print("\ninterrupted: cluster, namespaces and processes cleaned up", file=sys.stderr)
        sys.exit(130)
