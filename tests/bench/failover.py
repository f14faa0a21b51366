"""Failover time from the cluster tier: clusterip against a Dummy clone.

Reuses the cluster tier as it is: tests/cluster/cluster.py builds a real
three-node Pacemaker + Corosync cluster in namespaces, and test_cluster.py's
own functions bring it to its baseline (the clusterip clone of
crm-examples/three-nodes.crm and the Dummy clone of the same shape, one
instance of each per node, a data plane with 400 client (source, port)
pairs) and crash a node and measure (``kill_cycle``: SIGKILL of all of its
processes plus link down, then a reboot).  Nothing of the measurement is
written again here.

Why import instead of running ``pytest tests/cluster/test_cluster.py::
test_b_failover_times[<setting>]`` with $CLUSTERIP_FAILOVER_REPORT and reading
its JSON: imported, the cluster takes a namespace prefix of the benchmark's
own, the measurements come back as Python values (no temporary file, no
pytest output to sort through), the harness's log goes where the benchmark
wants it, and a failure arrives as one exception.
"""

import os

import cluster  # tests/cluster: on the path benchmark.py sets
import netlab
import test_cluster

# namespaces <prefix>bfn0..2, <prefix>bfsw, <prefix>bfcl and /tmp/<prefix>bf, with the
# runs' own prefix ($CLUSTERIP_TEST_NS_PREFIX, as every tier): no one else's
PREFIX = os.environ.get("CLUSTERIP_TEST_NS_PREFIX", "cip") + "bf"
# (key of kill_cycle's measurements, row label).  clusterip's traffic is what
# users see: the start of the first connection after which every connection to
# the dead node's bucket was answered (a prober starts one every 10 ms, from
# the bucket's pairs in turn); the last unanswered one began 10 ms before it,
# unless the prober fell behind: the bucket came back between the two.
MEASURES = (("clusterip_traffic", "clusterip: its bucket answered again"),
            ("clusterip_traffic_last_dark", "  (its last unanswered connection began)"),
            ("clusterip_pacemaker", "clusterip: Pacemaker reports the instance started"),
            ("dummy_pacemaker", "Dummy: Pacemaker reports the instance started"))


def problem():
    """Why no cluster can run here (a sentence), or None."""
    return netlab.not_root_problem() or cluster.cluster_problem()


def measure(kills, setting="token1000", log=None):
    """Crash a node ``kills`` times; returns {measure: [seconds from the kill]} for
    the keys of MEASURES (and whatever else kill_cycle records).

    ``setting``: a key of test_cluster.SETTINGS ("default": Corosync's
    timings, "token1000": totem.token 1000 ms, about half the failover time).
    ``log``: receives the harness's progress lines (default: dropped).
    """
    results = {}
    clusters = test_cluster.Clusters(prefix=PREFIX, log=log or (lambda line: None))
    try:
        c = test_cluster.acquire(clusters, setting)
        for index in range(kills):
            kill = test_cluster.kill_cycle(c, "benchmark kill %d" % (index + 1))
            for key, value in kill.items():
                results.setdefault(key, []).append(value)
    finally:
        clusters.close()
    return results
