"""A live demo of clusterip on this one machine: three nodes in network
namespaces on one bridge, one VIP, three buckets, a client with 200 source
addresses, a node failure, the takeover and the rebalance.

Run as root: ``make demo`` (which installs what it needs first).  It tears
everything down by itself, also on Ctrl-C.

This version drives the agent the way Pacemaker does (start instance i on
node i; on failure, start the dead node's instance on a survivor), but by
itself: the real Pacemaker + Corosync cluster comes with issue #4.
"""

import random
import sys
import time

sys.path.insert(0, __file__.rsplit("/", 1)[0])
from netlab import Lab  # noqa: E402  (the tests' namespace lab)

VIP, PORT, BUCKETS = "198.18.0.100", 8080, 3
PARAMS = {"ip": VIP, "cidr_netmask": 16, "nic": "eth0", "hashmode": "sourceip-sourceport"}
ROUND_SIZE = 200


def meta(instance):
    return {"clone": instance, "clone_max": BUCKETS, "clone_node_max": BUCKETS,
            "globally_unique": "true"}


def agent(lab, node, action, instance):
    started = time.monotonic()
    rc, _, err = lab.agent(node, action, PARAMS, meta(instance), "web-ip:%d" % instance)
    elapsed = time.monotonic() - started
    print("   %-7s instance %d (bucket %d) on %s -> exit %d  [%.0f ms]"
          % (action, instance, instance + 1, node, rc, elapsed * 1000))
    if rc != 0:
        raise SystemExit("agent failed: %s" % err.strip())
    return elapsed


def owners(lab, up):
    """bucket -> node, read from each reachable node's nft set "owned"."""
    found = {}
    for node in up:
        for bucket in lab.nft_set_elements(node, "ip", "clusterip_198_18_0_100", "owned") or []:
            found.setdefault(bucket, []).append(node)
    return found


def traffic_round(lab, number, label, up):
    """One bounded round: ROUND_SIZE connections from random (source, port) pairs."""
    pairs = [(random.choice(lab.sources), random.randrange(30000, 40000))
             for _ in range(ROUND_SIZE)]
    answers, _ = lab.connect(VIP, PORT, pairs, timeout=0.5, workers=64, retries=0)
    served = {node: 0 for node in lab.node_names}
    errors = 0
    for answer in answers.values():
        if answer in served:
            served[answer] += 1
        else:
            errors += 1
    table = owners(lab, up)
    buckets = "  ".join("%d:%s" % (b, "+".join(table.get(b, ["-"])))
                        for b in range(1, BUCKETS + 1))
    print("%4d  %-22s %5d %5d %5d %7d   %s" % (
        number, label, served["n0"], served["n1"], served["n2"], errors, buckets))
    time.sleep(0.5)  # a pace a person can follow
    return errors


def header():
    print("\nround phase                     n0    n1    n2  failed   bucket:owner")


def main():
    random.seed(1)
    with Lab(nodes=3, sources=200) as lab:
        print("== three nodes (n0, n1, n2) on one bridge; VIP %s; %d buckets" % (VIP, BUCKETS))
        up = list(lab.node_names)
        for i, node in enumerate(lab.node_names):
            agent(lab, node, "start", i)
            lab.start_responder(node, PORT)
        header()
        number = 0
        for _ in range(4):
            number += 1
            traffic_round(lab, number, "all nodes up", up)

        print("\n== n2 fails: its link goes down (a dead host)")
        failed_at = time.monotonic()
        lab.run("switch", "ip", "link", "set", "pn2", "down")
        up.remove("n2")
        number += 1
        traffic_round(lab, number, "n2 down, bucket 3 lost", up)
        print("== the cluster starts n2's instance (bucket 3) on the survivor n1")
        agent(lab, "n1", "start", 2)
        while True:
            number += 1
            if traffic_round(lab, number, "bucket 3 on n1", up) == 0:
                break
            if time.monotonic() - failed_at > 60:
                raise SystemExit("bucket 3 was not answered again within 60 s")
        print("== every connection answered again %.2f s after n2 failed"
              % (time.monotonic() - failed_at))

        print("\n== n2 comes back (rebooted: none of its old state survives)")
        agent(lab, "n2", "stop", 2)  # what the reboot wiped
        lab.run("switch", "ip", "link", "set", "pn2", "up")
        up.append("n2")
        print("== rebalance (resource-stickiness=0): bucket 3 moves back to n2")
        agent(lab, "n1", "stop", 2)
        agent(lab, "n2", "start", 2)
        for _ in range(3):
            number += 1
            traffic_round(lab, number, "rebalanced", up)

        print("\n== stopping everything")
        for i, node in enumerate(lab.node_names):
            agent(lab, node, "stop", i)
        left = [node for node in lab.node_names if lab.nft_tables(node)
                or any(a.startswith(VIP + "/") for a in lab.addresses(node))]
        print("== nothing left behind on any node" if not left else "LEFT: %s" % left)
    print("== namespaces removed; done")


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:
        print("\ninterrupted: namespaces and processes cleaned up", file=sys.stderr)
        sys.exit(130)
