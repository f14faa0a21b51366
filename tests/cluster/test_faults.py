"""The cluster tier's faults: fencing on, a partition, a flapping link (issue #15).

One three-node cluster with ``token: 1000`` (timing matters here) and a real
fence device: the test suite's ``fence_lab`` agent, registered as the
stonith resource ``fence-lab``, powers nodes off and on through the
harness's power controller (cluster.py: ``Cluster(fencing=True)``,
``PowerController``).  ``crm-examples/three-nodes.crm`` and the ``Dummy``
yardstick (dummy-clone.crm) are loaded as in test_cluster.py,
``no-quorum-policy=stop`` is set explicitly (Pacemaker's default), and each
scenario first restores the baseline (all nodes up, one bucket per node,
no cut) with ``stonith-enabled`` as it needs it.  Clients connect
throughout (TrafficWatch: PAIRS_PER_BUCKET pairs per bucket, a round every
0.1 s, 0.15 s timeouts) and the kernels' owned sets are sampled every 0.1 s
(OwnershipSampler).

f. fencing: FENCE_KILLS (default 3, $CLUSTERIP_FENCE_KILLS) crashes of n2
   with ``stonith-enabled=true``.  Measured from the kill: n2 reported
   offline, n2 powered off by fence_lab (the power controller's own
   clock), the Dummy and clusterip instances reported started on a
   survivor, every connection of the bucket answered by a survivor.
   Checked: Pacemaker recovers only after the fence (both instances are
   reported later than the power-off), the fence history holds a
   successful reboot of n2, the rebooted node comes back by itself and the
   buckets rebalance, never two owners.
g. partition, without fencing and with it: n2's corosync traffic dropped
   (nft in n2's own network namespace, UDP port 5405 in and out) while its
   clients still reach it.  n2 loses quorum and stops serving (fenced,
   with fencing), n0 and n1 take its bucket.  Measured from the cut: the
   majority serving every connection of the bucket, n2's last answer, and
   per bucket the longest span with two live owners or none (kernel,
   0.1 s samples) and unanswered (traffic).  Checked: afterwards every
   connection is answered by exactly one node, the bucket's owner; n2
   has no quorum and nothing of the VIP left (or was fenced: then never
   two owners at all).  Healed: the buckets rebalance, no double owner.
h. flapping: n2's corosync traffic cut and restored every 2-5 s for
   FLAP_SECONDS (60), without fencing and with it (then n2 is fenced, boots
   and rejoins while the flapping goes on, and no bucket ever has two
   owners).  At the end, without any ``crm
   resource cleanup``: every bucket served by exactly one node, one per
   node, each node's kernel holding exactly what Pacemaker placed there
   (oracle.problems) and nothing else (oracle.leftovers), every connection
   answered once.
"""

import calendar
import collections
import os
import re
import time
import xml.etree.ElementTree as ET

import pytest

import cluster
import oracle
import scenarios
import test_cluster as base
from cluster import REPORT, VIP, OwnershipSampler, TrafficWatch, wait_until

SETTING = "token1000+fencing"
TOKEN = 1000
FENCE_KILLS = int(os.environ.get("CLUSTERIP_FENCE_KILLS", "3"))
VICTIM = base.VICTIM  # n2, as in test_cluster's kills
PRIMITIVE = base.PRIMITIVE
PORT = scenarios.PORT
PAIRS_PER_BUCKET = 8
LIMIT = 90.0  # s: a failover, a partition or a heal slower than this fails
FLAP_SECONDS = 60.0
FLAP_PATTERN = ((3, 3), (2, 4), (5, 2), (4, 5), (2, 2))  # (cut s, healed s), repeated
FLAP_SETTLE = 180.0  # s after the last heal (failure-timeout=60s may be needed)
WATCH_SECONDS = 1800
# n2's corosync (knet) traffic, both ways; the node's clients (TCP) still pass.
CUT_TABLE = "cipc_partition"
CUT_RULES = """table inet %s {
    chain input { type filter hook input priority 0; udp dport 5405 drop; udp sport 5405 drop; }
    chain output { type filter hook output priority 0; udp dport 5405 drop; udp sport 5405 drop; }
}
""" % CUT_TABLE


# -- the cluster ------------------------------------------------------------------------


def prepare(c):
    """Responders, the traffic checker and its pairs, no-quorum-policy=stop."""
    c.start_responders(PORT)
    c.plane = scenarios.Dataplane(c.lab, "nft", base.HASHMODE, log=c.log)
    c.plane.baseline = dict(c.baseline_macs)
    c.pairs = [(source, port) for source in c.lab.sources for port in scenarios.SOURCE_PORTS]
    c.pair_buckets = None
    c.crm(c.nodes[0], "configure", "property", "no-quorum-policy=stop")


@pytest.fixture(scope="module")
def fenced():
    c = cluster.Cluster(token=TOKEN, fencing=True)
    c.__enter__()
    try:
        REPORT.add_cluster(SETTING, c.timings)
        prepare(c)
        yield c
    finally:
        try:
            REPORT.add_operations(SETTING, c.operation_times())
        finally:
            c.close()


def cut(c, node):
    c.lab.run(node, "nft", "-f", "-", input=CUT_RULES)


def heal(c, node):
    c.lab.run(node, "nft", "delete", "table", "inet", CUT_TABLE, check=False)


def is_cut(c, node):
    return ("inet", CUT_TABLE) in oracle.nft_tables(c.lab, node)


def baseline(c, fencing):
    """No cut, every node up, stonith-enabled as asked, then test_cluster's baseline."""
    for node in c.nodes:
        heal(c, node)
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


def watched_pairs(c):
    """PAIRS_PER_BUCKET pairs of each bucket: ({"src:sport": bucket}, [(src, sport)])."""
    chosen = collections.defaultdict(list)
    for pair, bucket in sorted(c.pair_buckets.items()):
        if len(chosen[bucket]) < PAIRS_PER_BUCKET:
            chosen[bucket].append(pair)
    assert sorted(chosen) == [1, 2, 3], chosen
    pairs = [pair for bucket_pairs in chosen.values() for pair in bucket_pairs]
    return {"%s:%d" % pair: c.pair_buckets[pair] for pair in pairs}, pairs


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


def wait_rounds_after(watch, moment, count=5):
    wait_until(lambda: sum(1 for t, _ in list(watch.rounds) if t > moment) >= count, 30,
               "client rounds after the moment")


def one_owner_each(c, nodes):
    """The kernel owners when each of the 3 buckets has exactly one, on ``nodes``; else None."""
    owners = c.kernel_buckets()
    if sorted(owners) != [1, 2, 3] or any(len(h) != 1 or h[0] not in nodes
                                          for h in owners.values()):
        return None
    return {bucket: holders[0] for bucket, holders in owners.items()}


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


# -- g. partition ---------------------------------------------------------------------------


@pytest.mark.parametrize("fencing", [False, True], ids=["no-fencing", "fencing"])
def test_g_partition(fenced, fencing):
    c = fenced
    status = baseline(c, fencing=fencing)
    majority = [node for node in c.nodes if node != VICTIM]
    bucket = next(b for b, node in status.buckets(PRIMITIVE).items() if node == VICTIM)
    bucket_of, pairs = watched_pairs(c)
    result = {"fencing": fencing, "bucket": bucket, "dc_before": status.dc}
    watch = TrafficWatch(c.lab, VIP, PORT, pairs, WATCH_SECONDS)
    sampler = OwnershipSampler(c, interval=0.1)
    watch.start()
    sampler.start()
    try:
        wait_until(lambda: len(watch.rounds) >= 5, 30, "the first client rounds")
        since = time.monotonic()
        cut(c, VICTIM)
        c.log("partition: %s's corosync traffic cut" % VICTIM)

        def majority_serves():
            if VICTIM not in c.dead and (c.owned(VICTIM) or set()):
                return None
            owners = one_owner_each(c, majority)
            rounds = list(watch.rounds)
            if owners is None or not rounds or rounds[-1][0] < since:
                return None
            answers = rounds[-1][1]
            return owners if all(answer == owners[bucket_of[pair]]
                                 for pair, answer in answers.items()) else None
        owners = wait_until(majority_serves, LIMIT, "the majority serving every bucket")
        settled = time.monotonic()
        wait_rounds_after(watch, settled, 20)  # 2 s more of clients
        observed = time.monotonic()

        rounds = [(t, answers) for t, answers in list(watch.rounds) if t >= since]
        victim_bucket = [pair for pair, b in bucket_of.items() if b == bucket]
        last_bad = max([t for t, answers in rounds
                        if any(answers[pair] not in majority for pair in victim_bucket)]
                       or [since])
        result["majority_serves"] = round(min([t for t, _ in rounds if t > last_bad]
                                              or [observed]) - since, 2)
        result["victim_last_answer"] = round(max(
            [t for t, answers in rounds if VICTIM in answers.values()] or [since]) - since, 2)
        buckets = sorted(set(bucket_of.values()))
        result["two_owners"] = sampler.spans(buckets, since, observed, owners=2)
        result["no_owner"] = sampler.spans(buckets, since, observed, owners=0)
        result["unanswered"] = {b: v[0] for b, v in watch.dark(bucket_of, since,
                                                               observed).items()}
        result["garbled"] = sum(1 for _, answers in rounds for a in answers.values()
                                if a.startswith("ERROR:garbled"))
        # After it: every connection answered by exactly one node, its bucket's owner.
        after = [(t, answers) for t, answers in rounds if t > settled]
        wrong = [(round(t - since, 2), pair, answer) for t, answers in after
                 for pair, answer in answers.items() if answer != owners[bucket_of[pair]]]
        assert not wrong, "after the majority took over: %s" % wrong[:5]
        answers = base.checked_round(c, "partition: majority serving")
        assert set(answers.values()) == set(majority), collections.Counter(answers.values())
        offs = c.power.times("off", VICTIM, since)
        if fencing:
            assert offs, "%s was not fenced (errors %s)" % (VICTIM, c.power.errors)
            result["fenced"] = round(offs[0] - since, 2)
            assert not sampler.violations, "two owners with fencing on: %s" % (
                sampler.violations[:5],)
            wait_until(lambda: VICTIM not in c.dead, LIMIT, "%s booted by the fence" % VICTIM)
        else:
            assert not offs, "fenced with stonith-enabled=false: %s" % offs
        assert is_cut(c, VICTIM), "the cut must outlive a reboot (it is the network's)"
        # The minority knows it has no quorum, and its kernel holds nothing of the VIP.
        wait_until(lambda: (lambda s: s.dc == VICTIM and not s.quorum)(c.status(VICTIM)),
                   LIMIT, "%s as its own DC without quorum" % VICTIM)
        left = c.leftovers(VICTIM)
        assert not left, "%s after losing quorum: %s" % (VICTIM, left)

        # Heal: the buckets rebalance by themselves.
        healed = time.monotonic()
        heal(c, VICTIM)
        status = base.wait_placement(c, "one bucket per node after the heal", timeout=LIMIT)
        rebalanced = time.monotonic()
        result["heal_rebalanced"] = round(rebalanced - healed, 2)
        wait_rounds_after(watch, rebalanced, 10)
        result["heal_unanswered"] = {b: v[0] for b, v in watch.dark(
            bucket_of, healed, time.monotonic()).items()}
        heal_violations = [v for v in sampler.violations
                           if v[0] >= healed - sampler._started_at]
        assert not heal_violations, "two owners while healing: %s" % heal_violations[:5]
        answers = base.checked_round(c, "partition healed")
        assert set(answers.values()) == set(c.nodes), collections.Counter(answers.values())
    finally:
        sampler.stop()
        watch.stop()
        heal(c, VICTIM)
    result["failures"] = ["%s on %s" % (f.get("op_key"), f.get("node")) for f in status.failures]
    result["samples"] = sampler.samples
    c.log("partition %s" % result)
    REPORT.notes.append(
        "partition of %s (%s, token %d): majority serves its bucket %d after %.2f s, %s's "
        "last answer %.2f s%s; per bucket longest two owners %s, no owner %s, unanswered %s "
        "(s); healed: one bucket per node after %.2f s, longest unanswered %s; failures %s" % (
            VICTIM, "fencing" if fencing else "no fencing", TOKEN, bucket,
            result["majority_serves"], VICTIM, result["victim_last_answer"],
            ", fenced after %.2f s" % result["fenced"] if fencing else "",
            {b: v[0] for b, v in result["two_owners"].items()},
            {b: v[0] for b, v in result["no_owner"].items()}, result["unanswered"],
            result["heal_rebalanced"], result["heal_unanswered"], result["failures"] or "none"))
    assert not watch.errors, watch.errors[:5]


# -- h. flapping ----------------------------------------------------------------------------


@pytest.mark.parametrize("fencing", [False, True], ids=["no-fencing", "fencing"])
def test_h_flapping_link(fenced, fencing):
    c = fenced
    baseline(c, fencing=fencing)
    bucket_of, pairs = watched_pairs(c)
    watch = TrafficWatch(c.lab, VIP, PORT, pairs, WATCH_SECONDS)
    sampler = OwnershipSampler(c, interval=0.1)
    watch.start()
    sampler.start()
    flaps = 0
    try:
        wait_until(lambda: len(watch.rounds) >= 5, 30, "the first client rounds")
        since = time.monotonic()
        while time.monotonic() - since < FLAP_SECONDS:  # bounded: FLAP_SECONDS + one pattern
            down, up = FLAP_PATTERN[flaps % len(FLAP_PATTERN)]
            cut(c, VICTIM)
            time.sleep(down)
            heal(c, VICTIM)
            healed = time.monotonic()
            time.sleep(up)
            flaps += 1
        c.log("flapping: %d cuts in %.0f s" % (flaps, time.monotonic() - since))
        status = base.wait_placement(c, "one bucket per node after the flapping",
                                     timeout=FLAP_SETTLE)
        settled = time.monotonic()
        wait_rounds_after(watch, settled, 10)
        final = time.monotonic()
    finally:
        sampler.stop()
        watch.stop()
        heal(c, VICTIM)
    buckets = sorted(set(bucket_of.values()))
    flapped = {"two_owners": sampler.spans(buckets, since, healed, owners=2),
               "no_owner": sampler.spans(buckets, since, healed, owners=0),
               "unanswered": watch.dark(bucket_of, since, healed)}
    # No bucket owned twice, each node's kernel exactly what Pacemaker placed there.
    placed = status.buckets(PRIMITIVE)
    assert c.kernel_buckets() == {b: [node] for b, node in placed.items()}, (
        c.kernel_buckets(), placed)
    for node in c.nodes:
        mine = [b for b, owner in placed.items() if owner == node]
        state = oracle.vip_states(c.lab, node, [VIP], cluster.BACKEND)[VIP]
        problems = oracle.problems(state, mine, cluster.BACKEND)
        assert not problems, "%s half-configured after the flapping: %s" % (node, problems)
        if not mine:
            assert not c.leftovers(node), (node, c.leftovers(node))
    late = [v for v in sampler.violations if v[0] >= settled - sampler._started_at]
    assert not late, "two owners after the flapping settled: %s" % late[:5]
    last = [(t, answers) for t, answers in list(watch.rounds) if settled < t <= final]
    wrong = [(pair, answer) for _, answers in last for pair, answer in answers.items()
             if answer != placed[bucket_of[pair]]]
    assert last and not wrong, "after the flapping: %s" % wrong[:5]
    answers = base.checked_round(c, "after the flapping")
    assert set(answers.values()) == set(c.nodes), collections.Counter(answers.values())
    fences = c.power.times("off", VICTIM, since)
    if fencing:
        # A cut outlasting the token timeout gets n2 fenced; Pacemaker moves
        # its bucket only once the fence is confirmed, by which time n2's
        # kernel state is gone: never two owners, however often it flaps.
        assert fences, "%s never fenced while flapping (errors %s)" % (VICTIM, c.power.errors)
        assert not sampler.violations, "two owners with fencing on: %s" % (
            sampler.violations[:5],)
    else:
        assert not fences, "fenced with stonith-enabled=false: %s" % fences
    failures = ["%s on %s" % (f.get("op_key"), f.get("node")) for f in status.failures]
    c.log("flapping: %s; fenced %d times; settled %.1f s after the last heal; failures %s" % (
        flapped, len(fences), settled - healed, failures))
    REPORT.notes.append(
        "flapping (%s's corosync traffic cut/restored %d times in %.0f s, %s, token "
        "%d): during it per bucket longest two owners %s, no owner %s, unanswered %s (s), "
        "%d double-owner samples; one bucket per node %.1f s after the last heal, kernels "
        "clean, no cleanup; failures %s" % (
            VICTIM, flaps, healed - since,
            "fenced %d times" % len(fences) if fencing else "no fencing", TOKEN,
            {b: v[0] for b, v in flapped["two_owners"].items()},
            {b: v[0] for b, v in flapped["no_owner"].items()},
            {b: v[0] for b, v in flapped["unanswered"].items()}, len(sampler.violations),
            settled - healed, failures or "none"))
    assert not watch.errors, watch.errors[:5]
