"""The cluster tier: the installed agent under a real Pacemaker 2.1 + Corosync 3 cluster.

Three nodes in namespaces (tests/cluster/cluster.py explains how and why),
the VIP configured from ``crm-examples/three-nodes.crm`` verbatim, real TCP
traffic from a client with 200 source addresses x 2 fixed source ports, and
every result read with independent tools: Pacemaker's own view (``crm_mon
--output-as=xml``) for placement, ``nft -j`` in each node for the buckets
the kernel really owns, the responders' logs for who accepted what.

Scenarios (in this order; each first restores the baseline -- all nodes up,
both clones started, no failures, one bucket per node -- so each also runs
alone, e.g. ``-k failover``):

a. the example loads and spreads: one bucket per node, every connection
   answered by exactly one node, every node answers some;
c. a node crashes and returns: its bucket moves to a survivor, then back
   (resource-stickiness=0), and no bucket is ever owned by two live nodes;
d. tampering: a node's nft table is deleted behind Pacemaker's back (the
   guard off); the next monitor fails, Pacemaker recovers the instance,
   traffic resumes;
e. stopping the clone leaves nothing on any node (address, nft tables,
   multicast membership, HA_RSCTMP markers);
b. failover times, for Corosync's default timings and for ``token: 1000``:
   KILLS (default 5, $CLUSTERIP_CLUSTER_KILLS) crashes of n2, each followed
   by a reboot.  Measured from the kill: every connection of n2's bucket
   answered again (probed with 0.15 s connection timeouts), Pacemaker
   reporting the clusterip instance -- and, as the yardstick, the instance
   of an ``ocf:pacemaker:Dummy`` clone of the same shape
   (tests/cluster/dummy-clone.crm) -- started on a survivor.

A crash is SIGKILL of all the node's processes *and* its link going down:
see cluster.py for why the link matters.  At most one cluster runs at a
time (the two timing settings need two clusters, started one after the
other), which keeps the run within a few minutes on two cores.
"""

import collections
import json
import os
import subprocess
import sys
import threading
import time

import pytest

import cluster
import netlab
import oracle
import scenarios
from cluster import REPORT, VIP, OwnershipSampler, wait_until
from netlab import is_multicast_mac

THREE_NODES = os.path.join(cluster.CRM_EXAMPLES, "three-nodes.crm")
DUMMY_CRM = os.path.join(cluster.HERE, "dummy-clone.crm")
PRIMITIVE, CLONE = "web-ip", "web-ip-clone"  # as named in three-nodes.crm
DUMMY, DUMMY_CLONE = "dummy", "dummy-clone"
TABLE = "clusterip_" + VIP.replace(".", "_")
PORT = scenarios.PORT
HASHMODE = "sourceip-sourceport"  # what three-nodes.crm configures
BUCKETS = 3
SETTINGS = {"default": None, "token1000": 1000}  # Corosync totem.token (ms); None: default
KILLS = int(os.environ.get("CLUSTERIP_CLUSTER_KILLS", "5"))
VICTIM = "n2"
FAILOVER_LIMIT = 90.0  # s: a failover slower than this fails the test
SETTLE_LIMIT = 120.0
# s per connection while waiting for a failover: below the first SYN retransmit
PROBE_TIMEOUT = 0.15
# s between the failover prober's connections: the resolution of the bucket's return
PROBE_GAP = 0.01


# -- one cluster at a time --------------------------------------------------------------


class Clusters:
    """Hands out the cluster for a timing setting; at most one exists at a time."""

    def __init__(self, **cluster_options):
        self.current = None
        self.setting = None
        self.cluster_options = cluster_options  # e.g. the benchmark's prefix and log

    def get(self, setting):
        if self.current is not None and self.setting != setting:
            self.close()
        if self.current is None:
            built = cluster.Cluster(token=SETTINGS[setting], **self.cluster_options)
            built.__enter__()
            self.current, self.setting = built, setting
            REPORT.add_cluster(setting, built.timings)
            built.start_responders(PORT)
            built.plane = scenarios.Dataplane(built.lab, "nft", HASHMODE, log=built.log)
            built.plane.baseline = dict(built.baseline_macs)
            built.pairs = [(source, port) for source in built.lab.sources
                           for port in scenarios.SOURCE_PORTS]
            built.pair_buckets = None  # learned from the first spread round
        return self.current

    def close(self):
        if self.current is not None:
            try:
                try:
                    REPORT.add_operations(self.setting, self.current.operation_times())
                finally:
                    self.current.close()
            finally:
                self.current = None


@pytest.fixture(scope="module")
def clusters():
    holder = Clusters()
    try:
        yield holder
    finally:
        holder.close()


def acquire(clusters, setting, baseline=True):
    """The cluster for ``setting``, in the baseline state (rebuilt once if that fails)."""
    c = clusters.get(setting)
    if not baseline:
        return c
    try:
        ensure_baseline(c)
    except (AssertionError, cluster.ClusterError, subprocess.TimeoutExpired) as error:
        # An earlier test left the cluster broken; say so in the report, start afresh.
        c.log("cannot restore the baseline (%s): building a new cluster" % error)
        REPORT.notes.append("%s cluster rebuilt: baseline not restorable: %s" % (
            setting, str(error).splitlines()[0]))
        clusters.close()
        c = clusters.get(setting)
        ensure_baseline(c)
    return c


def status_cli():
    """``clusterip`` (the status command) beside the interpreter the installed agent names."""
    with open(netlab.DEFAULT_AGENT) as handle:
        interpreter = handle.readline()[2:].split()[0]
    cli = os.path.join(os.path.dirname(interpreter), "clusterip")
    assert os.access(cli, os.X_OK), "no clusterip command beside %s" % interpreter
    return cli


# -- state checks ---------------------------------------------------------------------------


def placement(c, one_per_node=True, primitives=(PRIMITIVE, DUMMY)):
    """The status if every instance runs on a live node and the kernel agrees, else None.

    ``one_per_node``: additionally each live node runs exactly one instance of
    each clone (the balanced state with all three nodes up).
    """
    status = c.status()
    live = c.live_nodes()
    for primitive in primitives:
        instances = status.instances(primitive)
        if sorted(instances) != list(range(BUCKETS)):
            return None
        if any(node not in live for node in instances.values()):
            return None
        if one_per_node and sorted(instances.values()) != sorted(live):
            return None
    if PRIMITIVE in primitives:
        expected = {bucket: [node] for bucket, node in status.buckets(PRIMITIVE).items()}
        if c.kernel_buckets() != expected:
            return None
    return status


def wait_placement(c, what, one_per_node=True, primitives=(PRIMITIVE, DUMMY),
                   timeout=SETTLE_LIMIT):
    try:
        return wait_until(lambda: placement(c, one_per_node, primitives), timeout, what, 0.2)
    except cluster.ClusterError as error:
        status = c.status()
        raise AssertionError("%s\nPacemaker: %s / %s, failures %s\nkernel: %s\n%s" % (
            error, status.buckets(PRIMITIVE), status.instances(DUMMY), status.failures,
            c.kernel_buckets(), c.diagnosis())) from None


def ensure_baseline(c):
    """All nodes up, both clones configured and started, no failures, balanced."""
    for node in sorted(c.dead):
        c.revive_node(node)
    node = c.live_nodes()[0]
    status = c.status()
    if not status.instances(PRIMITIVE):
        c.load_crm(THREE_NODES)
    if not status.instances(DUMMY):
        c.load_crm(DUMMY_CRM)
    status = c.status()
    for clone in (CLONE, DUMMY_CLONE):
        # Stopped by an earlier test (`crm resource stop` sets target-role=Stopped).
        role = c.node_exec(node, ["cibadmin", "--query", "--xpath",
                                  "//clone[@id='%s']//nvpair[@name='target-role']" % clone],
                           check=False).stdout
        if 'value="Stopped"' in role:
            c.crm(node, "resource", "start", clone)
    if status.failures or any(status.failcounts.values()):
        c.crm(node, "resource", "cleanup")
    status = wait_placement(c, "the baseline: both clones one instance per node")
    if c.pair_buckets is None:
        checked_round(c, "baseline")
    return status


def checked_round(c, label, pairs=None):
    """One connection per pair, each answered by exactly one node (scenarios.Dataplane),
    and by the node whose kernel owns the pair's bucket.  Returns {pair: node}.
    """
    answers = c.plane.traffic_round(label, pairs or c.pairs)
    owned = {node: c.owned(node) or set() for node in c.live_nodes()}
    if c.pair_buckets is None:
        # The bucket of a pair is the hash's business; learn it once, from a
        # round in which every node owns exactly one bucket.
        assert all(len(buckets) == 1 for buckets in owned.values()), owned
        c.pair_buckets = {pair: next(iter(owned[node])) for pair, node in answers.items()}
        counts = collections.Counter(c.pair_buckets.values())
        c.log("pairs per bucket: %s" % dict(sorted(counts.items())))
    wrong = {pair: (node, c.pair_buckets[pair], sorted(owned.get(node, ())))
             for pair, node in answers.items() if c.pair_buckets[pair] not in owned.get(node, ())}
    assert not wrong, "%s: %d pairs answered by a node not owning their bucket " \
                      "(node, bucket, its buckets): %s" % (label, len(wrong),
                                                           dict(list(wrong.items())[:5]))
    return answers


def probe_until_answered(c, pairs, nodes, since, limit):
    """Probe one bucket's ``pairs`` until the bucket is answered again by one of ``nodes``.

    One prober (helpers/prober.py ``--pairs``) in the client namespace starts
    a connection from the next pair every PROBE_GAP s, each given
    PROBE_TIMEOUT s.  The bucket is answered again from the first connection
    after the last unanswered one, once every later connection was answered
    by one of ``nodes`` and each pair has been among them.  Returns (seconds
    from ``since`` to that first answered connection's start, seconds to the
    last unanswered one's start -- the bucket came back between the two,
    PROBE_GAP apart unless the prober fell behind -- connections started).
    """
    path = os.path.join(c.lab.directory, "failover-probes-%d.log" % (time.monotonic() * 1000))
    timeout = c.lab._t(PROBE_TIMEOUT)
    process = c.lab.spawn("client", sys.executable, "-I",
                          os.path.join(netlab.HELPERS, "prober.py"), VIP, str(PORT), path,
                          ",".join("%s:%d" % tuple(pair) for pair in pairs), "--pairs",
                          "--interval", str(PROBE_GAP), "--timeout", str(timeout),
                          "--duration", str(limit + 10))
    try:
        while True:
            time.sleep(0.2)
            # Every connection started before the horizon has ended and been
            # written (the prober flushes every 0.5 s): a complete prefix.
            horizon = time.monotonic() - timeout - 0.7
            records = []
            if os.path.exists(path):
                with open(path) as handle:
                    records = sorted((float(start), int(index), answer) for start, index, answer
                                     in (line.split() for line in handle if line.strip()))
            complete = [r for r in records if r[0] <= horizon]
            dark = [i for i, r in enumerate(complete) if r[2] not in nodes]
            after = complete[dark[-1] + 1:] if dark else complete
            if dark and {r[1] for r in after} == set(range(len(pairs))):
                return (round(after[0][0] - since, 2), round(complete[dark[-1]][0] - since, 2),
                        len(records))
            if time.monotonic() - since > limit:
                missing = collections.Counter(r[2] for r in complete[-len(pairs):]
                                              if r[2] not in nodes)
                raise AssertionError("after %.0f s the bucket's connections are still not "
                                     "all answered by %s: %s" % (limit, nodes, dict(missing)))
            if process.poll() is not None:
                raise AssertionError("the failover prober exited (%s)" % process.returncode)
    finally:
        if process.poll() is None:
            process.terminate()
            process.wait(timeout=10)


class PacemakerWatch(threading.Thread):
    """Polls crm_mon on a survivor every 0.1 s; records when each target was reported
    started on a survivor and when the victim was reported offline (s from ``since``).
    """

    def __init__(self, c, survivors, targets, since, limit):
        super().__init__(daemon=True)
        self.c = c
        self.survivors = survivors
        self.targets = dict(targets)  # measure -> (primitive, instance number)
        self.since = since
        self.limit = limit
        self.times = {}
        self.errors = []

    def run(self):
        pending = dict(self.targets)
        offline = False
        while (pending or not offline) and time.monotonic() - self.since < self.limit:
            try:
                status = self.c.status(self.survivors[0])
            except Exception as error:  # noqa: BLE001  (crm_mon during an election)
                self.errors.append(str(error).splitlines()[0])
                time.sleep(0.1)
                continue
            now = round(time.monotonic() - self.since, 2)
            if not offline and not status.online.get(VICTIM):
                offline = True
                self.times["victim_offline"] = now
            for measure, (primitive, number) in list(pending.items()):
                if status.instances(primitive).get(number) in self.survivors:
                    self.times[measure] = now
                    del pending[measure]
            time.sleep(0.1)


# -- one crash and reboot ------------------------------------------------------------------


def crash_and_measure(c, label):
    """From the baseline, crash VICTIM and measure the failover, seconds from the
    kill: every connection of its bucket answered by a survivor, Pacemaker
    reporting the clusterip and Dummy instances started on one and the
    victim offline.  Returns (the measurements, the kill's monotonic time,
    the bucket's pairs)."""
    status = wait_placement(c, "the baseline before %s" % label)
    survivors = [node for node in c.nodes if node != VICTIM]
    bucket = next(b for b, node in status.buckets(PRIMITIVE).items() if node == VICTIM)
    dummy = next(i for i, node in status.instances(DUMMY).items() if node == VICTIM)
    victim_pairs = [pair for pair in c.pairs if c.pair_buckets[pair] == bucket]
    kill = {"label": label, "bucket": bucket, "pairs": len(victim_pairs),
            "killed_dc": status.dc == VICTIM, "dc_before": status.dc}
    since = c.kill_node(VICTIM)
    watch = PacemakerWatch(c, survivors, {"clusterip_pacemaker": (PRIMITIVE, bucket - 1),
                                          "dummy_pacemaker": (DUMMY, dummy)},
                           since, FAILOVER_LIMIT)
    watch.start()
    (kill["clusterip_traffic"], kill["clusterip_traffic_last_dark"],
     kill["probes"]) = probe_until_answered(c, victim_pairs, survivors, since, FAILOVER_LIMIT)
    watch.join(FAILOVER_LIMIT + 5)
    kill.update(watch.times)
    assert "clusterip_pacemaker" in watch.times and "dummy_pacemaker" in watch.times, \
        "Pacemaker did not report the instances of %s started on a survivor within " \
        "%.0f s: %s (crm_mon errors: %s)" % (VICTIM, FAILOVER_LIMIT, watch.times,
                                             watch.errors[-3:])
    c.log("%s: bucket %d answered again after %.2f s, Pacemaker: %s" % (
        label, bucket, kill["clusterip_traffic"], watch.times))
    return kill, since, victim_pairs


def kill_cycle(c, label):
    """Crash VICTIM, measure the failover, reboot it, measure the rebalance.

    Returns the measurements; asserts that the survivors serve every bucket,
    that every connection is answered by the bucket's owner before the crash,
    after the failover and after the rebalance, and that no bucket was ever
    owned by two live nodes.
    """
    survivors = [node for node in c.nodes if node != VICTIM]
    sampler = OwnershipSampler(c, interval=0.1)
    sampler.start()
    try:
        kill, _, victim_pairs = crash_and_measure(c, label)
        bucket = kill["bucket"]
        status = wait_placement(c, "every instance on the survivors", one_per_node=False)
        kill["new_owner"] = status.buckets(PRIMITIVE)[bucket]
        answers = checked_round(c, "%s: after the crash" % label)
        assert set(answers.values()) <= set(survivors)
        moved = {answers[pair] for pair in victim_pairs}
        assert moved == {kill["new_owner"]}, "bucket %d answered by %s, owner %s" % (
            bucket, moved, kill["new_owner"])

        c.revive_node(VICTIM)
        online = time.monotonic()
        status = wait_placement(c, "the rebalance after %s returned" % VICTIM)
        kill["rebalance_seconds"] = round(time.monotonic() - online, 2)
        kill["bucket_after_revive"] = next(b for b, node in status.buckets(PRIMITIVE).items()
                                           if node == VICTIM)
        answers = checked_round(c, "%s: after the reboot" % label)
        assert set(answers.values()) == set(c.nodes), collections.Counter(answers.values())
    finally:
        sampler.stop()
    kill.update({"samples": sampler.samples, "read_skew": sampler.skew,
                 "sampler_errors": len(sampler.errors)})
    assert not sampler.violations, "buckets owned by two live nodes at once " \
                                   "(s, bucket, nodes): %s" % sampler.violations[:10]
    assert sampler.samples > 10, "the ownership sampler hardly ran: %s" % sampler.errors[:3]
    assert not (status.failures or any(status.failcounts.values())), \
        "failed actions after %s: %s %s" % (label, status.failures, status.failcounts)
    return kill


# -- the scenarios ---------------------------------------------------------------------------


def test_a_example_spreads_one_bucket_per_node(clusters):
    c = acquire(clusters, "default", baseline=False)
    started = time.monotonic()
    c.load_crm(THREE_NODES)
    status = wait_placement(c, "one bucket per node", primitives=(PRIMITIVE,))
    c.log("three-nodes.crm loaded: one bucket per node after %.1f s: %s" % (
        time.monotonic() - started, status.buckets(PRIMITIVE)))
    REPORT.notes.append("three-nodes.crm load -> one bucket per node: %.1f s"
                        % (time.monotonic() - started))

    # Loaded verbatim: the clone carries the example's meta attributes.
    xml = c.node_exec(c.nodes[0], ["cibadmin", "--query", "--xpath",
                                   "//clone[@id='%s']/meta_attributes" % CLONE]).stdout
    for name, value in (("globally-unique", "true"), ("clone-max", "3"),
                        ("clone-node-max", "3"), ("resource-stickiness", "0")):
        assert 'name="%s" value="%s"' % (name, value) in xml, (name, xml)
    # Every instance was probed on every node first: a probe wrongly answering
    # 1 would show as a failure (and a needless recovery).
    assert not status.failures, status.failures

    buckets = status.buckets(PRIMITIVE)
    located = {bucket: c.locate("%s:%d" % (PRIMITIVE, bucket - 1)) for bucket in buckets}
    assert located == {bucket: [node] for bucket, node in buckets.items()}, (located, buckets)

    answers = checked_round(c, "spread")
    assert set(answers.values()) == set(c.nodes), collections.Counter(answers.values())

    # The project's own `clusterip status --cluster --json` (installed next to
    # the interpreter the agent names) agrees with the oracles on every node.
    cli = status_cli()
    for node in c.nodes:
        report = json.loads(c.node_exec(node, [cli, "status", "--cluster", "--json"]).stdout)
        here = [vip for vip in report["node"] if vip["vip"] == VIP]
        assert len(here) == 1 and set(here[0]["owned"]) == c.owned(node), (node, report)
        assert report["cluster"][VIP] == {str(b): [n] for b, n in buckets.items()}, report
    mac = oracle.neighbour_mac(c.lab, "client", VIP)
    assert is_multicast_mac(mac), "the client resolved %s to %s, not a multicast MAC" % (
        VIP, mac)


def test_c_crashed_node_returns_and_buckets_rebalance(clusters):
    c = acquire(clusters, "default")
    kill = kill_cycle(c, "rebalance scenario")
    REPORT.add_kill("default", kill)
    assert kill["new_owner"] in ("n0", "n1")
    c.log("bucket %d: %s -> %s -> %s (bucket %d back on %s after %.1f s)" % (
        kill["bucket"], VICTIM, kill["new_owner"], VICTIM, kill["bucket_after_revive"],
        VICTIM, kill["rebalance_seconds"]))


def test_d_deleted_nft_table_is_recovered(clusters):
    c = acquire(clusters, "default")
    node = "n1"
    # The monitor and Pacemaker's recovery are under test here, not the guard
    # that would put the table back first (test_firewall_reload.py): off for
    # this test (a parameter change restarts the clone), on again after it.
    c.crm(c.nodes[0], "resource", "param", PRIMITIVE, "set", "firewall_guard", "false")
    c.wait_settled()
    wait_placement(c, "the clone restarted with firewall_guard=false")
    status = c.status()
    bucket = next(b for b, owner in status.buckets(PRIMITIVE).items() if owner == node)
    instance = "%s:%d" % (PRIMITIVE, bucket - 1)
    pairs = [pair for pair in c.pairs if c.pair_buckets[pair] == bucket]

    since = time.monotonic()
    c.lab.run(node, "nft", "delete", "table", "ip", TABLE)
    # Without its filter table the node drops its bucket's packets (they come
    # with the multicast MAC and nothing marks them for this host any more):
    # the bucket is dark until Pacemaker's next monitor notices.
    dark, _ = c.lab.connect(VIP, PORT, pairs[:20], timeout=PROBE_TIMEOUT, retries=0)
    answered_dark = sum(1 for answer in dark.values() if not answer.startswith("ERROR:"))
    recovered, _, rounds = probe_until_answered(c, pairs, c.nodes, since, 60)

    def failed_and_recovered():
        s = c.status()
        count = max([v for (n, rid), v in s.failcounts.items() if rid == instance] or [0])
        return s if count >= 1 and s.instances(PRIMITIVE).get(bucket - 1) else None
    status = wait_until(failed_and_recovered, 60, "a fail count for %s and it running" % instance)
    status = wait_placement(c, "all buckets served after the recovery", one_per_node=False)
    reasons = ["%s on %s: %s (%s)" % (f.get("op_key"), f.get("node"), f.get("exitreason"),
                                      f.get("exitstatus")) for f in status.failures]
    c.log("table deleted on %s: bucket %d answered again after %.1f s (%d probe rounds; "
          "%d of 20 answered while dark); failures: %s" % (
              node, bucket, recovered, rounds, answered_dark, reasons))
    REPORT.notes.append("tampering (nft table deleted on %s): bucket %d served again after "
                        "%.1f s; Pacemaker's failure: %s" % (node, bucket, recovered,
                                                             "; ".join(reasons)))
    assert any(f.get("op_key", "").startswith(instance + "_monitor") for f in status.failures), \
        status.failures
    assert any("nft" in (f.get("exitreason") or "") for f in status.failures), \
        "the exit reason should name the missing nft table: %s" % reasons
    assert answered_dark == 0, "the bucket stayed served without its table"
    answers = checked_round(c, "after the recovery")
    assert {answers[pair] for pair in pairs} == {status.buckets(PRIMITIVE)[bucket]}

    c.crm(c.nodes[0], "resource", "param", PRIMITIVE, "delete", "firewall_guard")
    c.wait_settled()
    c.crm(c.nodes[0], "resource", "cleanup", CLONE)
    wait_placement(c, "the baseline after the cleanup")


def test_e_stopped_clone_leaves_nothing(clusters):
    c = acquire(clusters, "default")
    c.crm(c.nodes[0], "resource", "stop", CLONE)

    def stopped():
        s = c.status()
        return s if not any(s.instances(PRIMITIVE).values()) and not c.kernel_buckets() \
            else None
    status = wait_until(stopped, 60, "every instance of %s stopped" % CLONE)
    c.wait_settled(60)
    leftovers = {node: c.leftovers(node) for node in c.nodes}
    assert not any(leftovers.values()), "left behind: %s" % leftovers
    markers = {node: c.node_exec(node, ["ls", "-A", "/run/resource-agents"]).stdout.split()
               for node in c.nodes}
    assert not any(name.endswith(".started") for names in markers.values() for name in names), \
        "instance markers left in HA_RSCTMP: %s" % markers
    assert not status.failures, status.failures

    c.crm(c.nodes[0], "resource", "start", CLONE)
    wait_placement(c, "the baseline after starting the clone again")


@pytest.mark.parametrize("setting", list(SETTINGS))
def test_b_failover_times(clusters, setting):
    c = acquire(clusters, setting)
    for index in range(KILLS):
        kill = kill_cycle(c, "%s kill %d" % (setting, index + 1))
        REPORT.add_kill(setting, kill)
    entry = REPORT.failover[setting]
    c.log("failover (%s): clusterip %s, Dummy %s" % (
        setting, entry.get("clusterip_traffic"), entry.get("dummy_pacemaker")))
    print(REPORT.table())
