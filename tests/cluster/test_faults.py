"""The cluster tier's faults: fencing on (issue #15).

One three-node cluster with ``token: 1000`` (timing matters here) and a real
fence device: the test suite's ``fence_lab`` agent, registered as the
stonith resource ``fence-lab``, powers nodes off and on through the
harness's power controller (cluster.py: ``Cluster(fencing=True)``,
``PowerController``).  ``crm-examples/three-nodes.crm`` and the ``Dummy``
yardstick (dummy-clone.crm) are loaded as in test_cluster.py,
``no-quorum-policy=stop`` is set explicitly (Pacemaker's default), and each
scenario first restores the baseline (all nodes up, one bucket per node)
with ``stonith-enabled`` as it needs it; the kernels' owned sets are
sampled every 0.1 s (OwnershipSampler).

f. fencing: FENCE_KILLS (default 3, $CLUSTERIP_FENCE_KILLS) crashes of n2
   with ``stonith-enabled=true``.  Measured from the kill: n2 reported
   offline, n2 powered off by fence_lab (the power controller's own
   clock), the Dummy and clusterip instances reported started on a
   survivor, every connection of the bucket answered by a survivor.
   Checked: Pacemaker recovers only after the fence (both instances are
   reported later than the power-off), the fence history holds a
   successful reboot of n2, the rebooted node comes back by itself and the
   buckets rebalance, never two owners.
"""

import calendar
import collections
import os
import re
import time
import xml.etree.ElementTree as ET

import pytest

import cluster
import scenarios
import test_cluster as base
from cluster import REPORT, OwnershipSampler, wait_until

SETTING = "token1000+fencing"
TOKEN = 1000
FENCE_KILLS = int(os.environ.get("CLUSTERIP_FENCE_KILLS", "3"))
VICTIM = base.VICTIM  # n2, as in test_cluster's kills
PRIMITIVE = base.PRIMITIVE
PORT = scenarios.PORT
LIMIT = 90.0  # s: a failover or a reboot slower than this fails


# -- the cluster ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def fenced():
    c = cluster.Cluster(token=TOKEN, fencing=True)
    c.__enter__()
    try:
        REPORT.add_cluster(SETTING, c.timings)
        c.start_responders(PORT)
        c.plane = scenarios.Dataplane(c.lab, "nft", base.HASHMODE, log=c.log)
        c.plane.baseline = dict(c.baseline_macs)
        c.pairs = [(source, port) for source in c.lab.sources
                   for port in scenarios.SOURCE_PORTS]
        c.pair_buckets = None
        c.crm(c.nodes[0], "configure", "property", "no-quorum-policy=stop")
        yield c
    finally:
        try:
            REPORT.add_operations(SETTING, c.operation_times())
        finally:
            c.close()


def baseline(c, fencing):
    """Every node up, stonith-enabled as asked, then test_cluster's baseline."""
    # A node fenced by the last scenario boots by itself; give it the time to.
    wait_until(lambda: not (c.dead & c.power.off) and not any(
        t.is_alive() for t in c.power._boots), 60, "fenced nodes booting")
    for node in c.dead:  # powered on again by ensure_baseline's revive
        c.power.off.discard(node)
    c.crm(c.live_nodes()[0], "configure", "property",
          "stonith-enabled=%s" % str(fencing).lower())
    status = base.ensure_baseline(c)
    registered = c.node_exec(c.live_nodes()[0], ["stonith_admin", "--list-registered"]).stdout
    assert cluster.FENCE_DEVICE in registered.split(), registered
    return status


def fence_history(c, node, target):
    """[(action, status, completed as epoch seconds or None)] of ``target``'s fencing
    history as ``node`` reads it (the fencer keeps the latest event per action)."""
    result = c.node_exec(node, ["stonith_admin", "--history", target, "--verbose",
                                "--output-as=xml"],
                         check=False)
    events = []
    for event in ET.fromstring(result.stdout).iter("fence_event"):
        # "2026-12-01 20:33:19Z" (UTC): the numbers are enough
        numbers = [int(n) for n in re.findall(r"\d+", event.get("completed") or "")][:6]
        completed = calendar.timegm(tuple(numbers) + (0, 0, 0)) if len(numbers) == 6 else None
        events.append((event.get("action"), event.get("status"), completed))
    return events


# -- f. fencing ---------------------------------------------------------------------------


def test_f_fencing_failover_times(fenced):
    c = fenced
    baseline(c, fencing=True)
    survivors = [node for node in c.nodes if node != VICTIM]
    for index in range(FENCE_KILLS):
        label = "%s kill %d" % (SETTING, index + 1)
        wall = int(time.time())
        sampler = OwnershipSampler(c, interval=0.1)
        sampler.start()
        try:
            kill, since, _ = base.crash_and_measure(c, label)
            offs = c.power.times("off", VICTIM, since)
            assert offs, "%s was never powered off (power controller errors: %s)" % (
                VICTIM, c.power.errors)
            kill["victim_fenced"] = round(offs[0] - since, 2)
            # Pacemaker recovers a fenced node's resources only once the fence succeeded.
            for measure in ("clusterip_pacemaker", "dummy_pacemaker", "clusterip_traffic"):
                assert kill[measure] > kill["victim_fenced"], (measure, kill)
            c.log("%s: fenced after %.2f s" % (label, kill["victim_fenced"]))

            # The reboot brings the node back by itself; the buckets rebalance.
            wait_until(lambda: VICTIM not in c.dead, LIMIT, "%s booted by the fence" % VICTIM)
            c.wait_up(c.up_timeout, nodes=c.nodes)
            online = time.monotonic()
            kill["booted_online"] = round(online - since, 2)
            status = base.wait_placement(c, "the rebalance after %s's reboot" % VICTIM)
            kill["rebalance_seconds"] = round(time.monotonic() - online, 2)
            answers = base.checked_round(c, "%s: after the reboot" % label)
            assert set(answers.values()) == set(c.nodes), collections.Counter(answers.values())
        finally:
            sampler.stop()
        history = fence_history(c, survivors[0], VICTIM)
        assert any(action == "reboot" and state == "success" and completed is not None
                   and completed >= wall for action, state, completed in history), \
            "no successful reboot of %s since %d in the fencing history: %s" % (
                VICTIM, wall, history)
        kill.update({"samples": sampler.samples, "read_skew": sampler.skew})
        assert not sampler.violations, sampler.violations[:10]
        assert sampler.samples > 10, sampler.errors[:3]
        assert not c.power.errors, c.power.errors
        assert not (status.failures or any(status.failcounts.values())), \
            (status.failures, status.failcounts)
        REPORT.add_kill(SETTING, kill)
    entry = REPORT.failover[SETTING]
    c.log("failover with fencing: fenced %s, clusterip %s, Dummy %s" % (
        entry.get("victim_fenced"), entry.get("clusterip_traffic"),
        entry.get("dummy_pacemaker")))
