"""A running three-node cluster upgraded from Debian 12 to Debian 13 userland, one node at a time.

What an admin does to each node in turn, with clients connecting throughout:
``crm node standby <node>`` (its bucket moves to a peer), the cluster stack
stopped (``systemctl stop pacemaker corosync``), the node's userland
replaced -- here its mount namespace's ``/`` swapped from the bookworm root
(Pacemaker 2.1.5, Corosync 3.1.7, crmsh 4.4, Python 3.11, nft 1.0.6) to the
trixie root (Pacemaker 3.0.0, Corosync 3.1.9, crmsh 5.0, Python 3.13, nft
1.1.3) of tests/roots.py, each with the checkout's agent installed --, the
stack started again with the same disk (corosync.conf, the CIB), ``crm node
online <node>`` (a bucket moves back).  The kernel is this machine's in both
(the nft backend on either release; the 6.1 kernel is the qemu tier's).

Checked, with independent readers: Pacemaker 2.1 and 3.0 nodes form one
membership and the cluster serves through every step; after each stop the
old stack left nothing in the node's kernel (address, tables, multicast
membership); no bucket is ever owned by two nodes (OwnershipSampler); every
bucket is served again, one per node, after each step; at the end every
node runs Pacemaker 3.0 and the agent publishes nft, no operation failed
and nothing was cleaned up by hand.  Measured, per step and bucket: how long
its connections went unanswered (rounds every 0.1 s, 0.15 s timeouts).
"""

import collections
import os
import sys
import time

import cluster
import netlab
import scenarios
from cluster import REPORT, VIP, OwnershipSampler, TrafficWatch, wait_until

sys.path.insert(1, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                                "legacy"))
import guest_roots  # noqa: E402  (the roots with the checkout's agent installed)

OLD, NEW = "bookworm", "trixie"
THREE_NODES = os.path.join(cluster.CRM_EXAMPLES, "three-nodes.crm")
PRIMITIVE = "web-ip"
PORT = scenarios.PORT
PAIRS_PER_BUCKET = 6
STEP_LIMIT = 120.0  # s: one node's upgrade, standby to rebalanced
WATCH_SECONDS = 1800


def pacemaker_version(c, node):
    return c.node_exec(node, ["pacemakerd", "--version"]).stdout.split("\n")[0].split()[1]


def served_one_per_node(c):
    """The status when each live node runs one instance, not in standby, and every
    node's kernel owns exactly the bucket Pacemaker says; else None."""
    status = c.status()
    buckets = status.buckets(PRIMITIVE)
    if sorted(buckets) != [1, 2, 3] or sorted(map(str, buckets.values())) != sorted(c.nodes):
        return None
    if c.kernel_buckets() != {bucket: [node] for bucket, node in buckets.items()}:
        return None
    return status


def served_without(c, node):
    """The status when every bucket runs on a node other than ``node`` and the
    kernels agree (``node`` owns nothing); else None."""
    status = c.status()
    buckets = status.buckets(PRIMITIVE)
    if sorted(buckets) != [1, 2, 3] or any(owner in (None, node) for owner in buckets.values()):
        return None
    if c.kernel_buckets() != {bucket: [owner] for bucket, owner in buckets.items()}:
        return None
    return status


def settle(c, predicate, what):
    """wait_until(predicate), or an AssertionError that shows both views."""
    try:
        return wait_until(predicate, STEP_LIMIT, what)
    except cluster.ClusterError as error:
        status = c.status()
        raise AssertionError("%s\nPacemaker: %s, failures %s, online %s\nkernel: %s" % (
            error, status.buckets(PRIMITIVE), status.failures, status.online,
            c.kernel_buckets())) from None


def published_backends(c, node):
    """{node: value} of the agent's transient attribute for the VIP, as ``node`` sees it."""
    result = c.node_exec(node, ["attrd_updater", "--name", "clusterip-backend-" + VIP,
                                "--query", "--all"], check=False)
    found = {}
    for line in result.stdout.splitlines():  # name="..." host="n0" value="nft"
        fields = dict(part.split("=", 1) for part in line.split() if "=" in part)
        if "host" in fields:
            found[fields["host"].strip('"')] = fields.get("value", "").strip('"')
    return found


def test_rolling_upgrade_from_debian_12_to_13_under_traffic():
    old_root, new_root = guest_roots.suite_root(OLD), guest_roots.suite_root(NEW)
    with guest_roots.held(old_root), guest_roots.held(new_root), \
            cluster.Cluster(roots={node: old_root for node in ("n0", "n1", "n2")}) as c:
        versions = {node: pacemaker_version(c, node) for node in c.nodes}
        c.log("Pacemaker before: %s" % versions)
        assert all(v.startswith("2.1") for v in versions.values()), versions
        c.load_crm(THREE_NODES)
        c.start_responders(PORT)
        settle(c, lambda: served_one_per_node(c), "one bucket per node")

        # Which bucket each pair hashes to: one round while each node owns one.
        pairs = [(source, port) for source in c.lab.sources for port in scenarios.SOURCE_PORTS]
        answers, _ = c.lab.connect(VIP, PORT, pairs)
        owned = {node: c.owned(node) for node in c.nodes}
        bucket_of = {pair: next(iter(owned[node])) for pair, node in answers.items()
                     if node in owned}
        assert len(bucket_of) == len(pairs), "unanswered before the upgrade: %s" % {
            pair: answer for pair, answer in answers.items() if pair not in bucket_of}
        chosen = collections.defaultdict(list)
        for pair, bucket in sorted(bucket_of.items()):
            if len(chosen[bucket]) < PAIRS_PER_BUCKET:
                chosen[bucket].append(pair)
        watched = [netlab.split_pair(pair) for pairs_ in chosen.values() for pair in pairs_]
        watched_buckets = {pair: bucket_of[pair] for pairs_ in chosen.values()
                           for pair in pairs_}
        assert sorted(set(watched_buckets.values())) == [1, 2, 3], chosen

        watch = TrafficWatch(c.lab, VIP, PORT, watched, WATCH_SECONDS)
        sampler = OwnershipSampler(c)
        watch.start()
        sampler.start()
        steps = []
        try:
            wait_until(lambda: len(watch.rounds) >= 5, 30, "the first client rounds")
            for node in c.nodes:
                began = time.monotonic()
                c.crm(c.live_nodes()[0], "node", "standby", node)
                settle(c, lambda node=node: served_without(c, node), "%s's bucket on a peer" % node)
                moved = time.monotonic()
                stop = c.stop_node(node)
                # The old release's stack must leave nothing in the kernel.
                left = c.leftovers(node)
                assert not left, "%s left after its stop: %s" % (node, left)
                online = c.upgrade_node(node, new_root, stopped=True)
                version = pacemaker_version(c, node)
                c.crm(c.live_nodes()[0], "node", "online", node)
                settle(c, lambda: served_one_per_node(c),
                       "one bucket per node after %s's upgrade" % node)
                ended = time.monotonic()
                wait_until(lambda ended=ended: watch.rounds and watch.rounds[-1][0] > ended + 0.5,
                           10,
                           "client rounds after the step")
                step = {
                    "node": node, "pacemaker": version,
                    "mixed": sorted(set(pacemaker_version(c, n) for n in c.nodes)),
                    "dc": c.status().dc,
                    "standby_to_moved_s": round(moved - began, 2), "stop_s": round(stop, 2),
                    "start_to_online_s": round(online, 2),
                    "whole_step_s": round(ended - began, 2),
                    "dark_during_standby": watch.dark(watched_buckets, began, moved),
                    "dark_during_upgrade": watch.dark(watched_buckets, moved, ended),
                }
                c.log("step %s" % step)
                steps.append(step)
                last = watch.rounds[-1][1]
                assert all(not answer.startswith("ERROR:") for answer in last.values()), \
                    "after upgrading %s: %s" % (node, last)
        finally:
            sampler.stop()
            watch.stop()

        record(steps, sampler)
        assert not watch.errors, watch.errors[:5]
        assert sampler.samples > 50 and not sampler.violations, sampler.violations[:5]
        assert all(pacemaker_version(c, node).startswith("3.") for node in c.nodes)
        status = c.status()
        assert not status.failures, status.failures
        assert not any(status.failcounts.values()), status.failcounts
        assert published_backends(c, c.nodes[0]) == {node: "nft" for node in c.nodes}
        # Every connection answered, by the node owning its bucket.
        answers, _ = c.lab.connect(VIP, PORT, pairs)
        owner = {bucket: node for node in c.nodes for bucket in c.owned(node)}
        wrong = {pair: answer for pair, answer in answers.items()
                 if answer != owner[bucket_of[pair]]}
        assert not wrong, dict(list(wrong.items())[:5])
        for step in steps:  # a bucket moves twice per step: one stop + start each
            for phase in ("dark_during_standby", "dark_during_upgrade"):
                for bucket, (longest, _, _) in step[phase].items():
                    assert longest < 10, (step["node"], phase, bucket, longest)


def record(steps, sampler):
    REPORT.notes.append("rolling upgrade %s -> %s (Pacemaker %s): ownership sampled %d times, "
                        "%d violations" % (OLD, NEW, " / ".join(steps[-1]["mixed"]) if steps
                                           else "?", sampler.samples, len(sampler.violations)))
    for step in steps:
        REPORT.notes.append(
            "  upgrade %s: standby->moved %.1f s, stop %.1f s, start->online %.1f s, "
            "whole step %.1f s; longest unanswered per bucket (s): standby %s, "
            "online/rebalance %s; membership %s, DC %s" % (
                step["node"], step["standby_to_moved_s"], step["stop_s"],
                step["start_to_online_s"], step["whole_step_s"],
                {b: v[0] for b, v in step["dark_during_standby"].items()},
                {b: v[0] for b, v in step["dark_during_upgrade"].items()},
                "+".join(step["mixed"]), step["dc"]))
