"""owner_lease in a real cluster (issue #15): split brain without fencing, bounded.

One three-node cluster, ``token: 1000``, no fencing (``stonith-enabled=false``,
``no-quorum-policy=stop``), ``crm-examples/three-nodes.crm`` (monitor every
10 s, timeout 20 s) and the Dummy yardstick, as test_faults.py.  Clients
connect throughout (TrafficWatch: PAIRS_PER_BUCKET pairs per bucket, a round
every 0.1 s) and the kernels' owned sets of all three nodes are sampled every
0.1 s (OwnershipSampler), the victim's too.

a. the cluster stack of n2 killed (Cluster.kill_stack: SIGKILL of corosync
   and the Pacemaker daemons, n2's kernel state and link kept), without the
   lease: the survivors take n2's bucket over while n2's kernel keeps
   answering it, two owners until the end of the observation (OBSERVE s);
b. the same with ``owner_lease=LEASE`` (the smallest the examples' monitor
   allows: 2 x 10 s + 20 s): n2 stops answering by itself, at most LEASE s
   after the kill (its last renewal was up to one interval before it), and
   from then on the bucket has one owner;
c. the partition of test_faults.test_g, without fencing, with the lease:
   the longest span with two owners (the minority stops its resources
   itself, the lease changes nothing there unless its stop hangs);
d. maintenance-mode=true with the lease: Pacemaker cancels the recurring
   monitors, so every bucket expires and the VIP goes dark, measured from
   the property set; maintenance-mode=false: Pacemaker's probes find every
   instance failed (its bucket missing) and recover it.

Run with the branch's agent without installing it:
CLUSTERIP_CLUSTER_AGENT="env PYTHONPATH=$PWD/lib /opt/clusterip/bin/python3 $PWD/ocf/clusterip".
"""

import json
import time

import pytest

import cluster
import scenarios
import test_cluster as base
import test_faults as faults
from cluster import REPORT, VIP, OwnershipSampler, TrafficWatch, wait_until

TOKEN = 1000
LEASE = 40
OBSERVE = 20.0  # s after the survivors took the bucket over, without the lease
VICTIM = base.VICTIM
PRIMITIVE = base.PRIMITIVE
PORT = scenarios.PORT
LIMIT = 90.0
RESULTS = {}


@pytest.fixture(scope="module")
def stacked():
    c = cluster.Cluster(token=TOKEN)
    c.__enter__()
    try:
        faults.prepare(c)
        yield c
    finally:
        c.log("owner_lease results: %s" % json.dumps(RESULTS, sort_keys=True))
        c.close()


def set_lease(c, seconds):
    node = c.live_nodes()[0]
    if seconds:
        c.crm(node, "resource", "param", PRIMITIVE, "set", "owner_lease", str(seconds))
    else:  # fails harmlessly when it is not set
        c.node_exec(node, ["crm", "resource", "param", PRIMITIVE, "delete", "owner_lease"],
                    check=False, timeout=90)


def set_timeouts(c):
    """{node: the set's timeout (s) or 0} as nft lists it on each live node."""
    found = {}
    for node in c.live_nodes():
        out = c.lab.run(node, "nft", "-j", "list", "set", "ip", base.TABLE, "owned",
                        check=False).stdout
        sets = [i["set"] for i in json.loads(out or '{"nftables": []}')["nftables"]
                if "set" in i]
        found[node] = sets[0].get("timeout", 0) if sets else None
    return found


def leased_baseline(c, lease):
    """The baseline (one bucket per node, no failure) with owner_lease as asked,
    the tables rebuilt accordingly on every node."""
    base.ensure_baseline(c)
    set_lease(c, lease)
    wait_until(lambda: set(set_timeouts(c).values()) == {lease}, LIMIT,
               "owner_lease=%d in every node's set" % lease, interval=0.5)
    status = base.wait_placement(c, "the baseline with owner_lease=%d" % lease)
    base.checked_round(c, "baseline, owner_lease=%d" % lease)
    return status


def owned_by(sampler, node, bucket, since):
    """Times of the samples since ``since`` in which ``node``'s kernel owned ``bucket``."""
    return [t for t, sample in list(sampler.timeline)
            if t >= since and node in sample.get(bucket, ())]


def taken_over(sampler, survivors, bucket, since):
    """The first sample since ``since`` in which a survivor owned ``bucket``, or None."""
    times = [t for t, sample in list(sampler.timeline)
             if t >= since and set(sample.get(bucket, ())) & set(survivors)]
    return min(times) if times else None


def stack_killed(c, lease):
    """Scenario a (lease 0) or b: the measurements, seconds from the kill."""
    status = leased_baseline(c, lease)
    survivors = [node for node in c.nodes if node != VICTIM]
    bucket = next(b for b, node in status.buckets(PRIMITIVE).items() if node == VICTIM)
    bucket_of, pairs = faults.watched_pairs(c)
    result = {"owner_lease": lease, "bucket": bucket}
    watch = TrafficWatch(c.lab, VIP, PORT, pairs, faults.WATCH_SECONDS)
    sampler = OwnershipSampler(c, interval=0.1)
    watch.start()
    sampler.start()
    try:
        wait_until(lambda: len(watch.rounds) >= 5, 30, "the first client rounds")
        since = c.kill_stack(VICTIM)
        took = wait_until(lambda: taken_over(sampler, survivors, bucket, since), LIMIT,
                          "a survivor owning bucket %d" % bucket)
        result["taken_over"] = round(took - since, 2)
        if lease:
            wait_until(lambda: not (c.owned(VICTIM) or set()), LEASE + 15,
                       "%s's bucket expired" % VICTIM)
            time.sleep(5.0)  # clients after the expiry
        else:
            time.sleep(OBSERVE)
        until = time.monotonic()
        held = owned_by(sampler, VICTIM, bucket, since)
        result["victim_owned_until"] = round(max(held or [since]) - since, 2)
        rounds = [(t, answers) for t, answers in list(watch.rounds) if since <= t <= until]
        result["victim_last_answer"] = round(max(
            [t for t, answers in rounds if VICTIM in answers.values()] or [since]) - since, 2)
        result["two_owners"] = sampler.spans([bucket], since, until, owners=2)[bucket]
        result["observed"] = round(until - since, 2)
        # (longest unanswered s, total s, failed connections) of the bucket.
        result["bucket_traffic"] = watch.dark(bucket_of, since, until)[bucket]
        victim_pairs = [pair for pair, b in bucket_of.items() if b == bucket]
        after = [(t, answers) for t, answers in rounds if t > since + result["victim_owned_until"]
                 + 0.5]
        result["after_expiry_wrong"] = sum(
            1 for _, answers in after for pair in victim_pairs if answers[pair] not in survivors)
        result["after_expiry_rounds"] = len(after)
    finally:
        sampler.stop()
        watch.stop()
    c.log("stack of %s killed, owner_lease=%d: %s" % (VICTIM, lease, result))
    REPORT.notes.append("cluster stack of %s killed (owner_lease=%d, token %d): %s"
                        % (VICTIM, lease, TOKEN, json.dumps(result, sort_keys=True)))
    RESULTS["stack_killed_lease_%d" % lease] = result
    # The rest of the node dies (link down, processes killed); the next
    # baseline reboots it with a clean kernel.
    c.kill_node(VICTIM)
    return result


def test_a_stack_killed_without_lease_answers_for_ever(stacked):
    result = stack_killed(stacked, 0)
    # Two owners from the takeover to the end of the observation.
    assert result["victim_owned_until"] >= result["observed"] - 1.0, result
    assert result["two_owners"][0] >= OBSERVE - 1.0, result


def test_b_stack_killed_with_lease_stops_answering_by_itself(stacked):
    result = stack_killed(stacked, LEASE)
    assert result["victim_owned_until"] <= LEASE + 1.0, result
    assert result["two_owners"][0] <= LEASE + 1.0 - result["taken_over"], result
    # After the expiry the survivors alone answer the bucket.
    assert result["after_expiry_rounds"] >= 20 and result["after_expiry_wrong"] == 0, result


def test_c_partition_without_fencing_with_lease(stacked):
    c = stacked
    status = leased_baseline(c, LEASE)
    bucket = next(b for b, node in status.buckets(PRIMITIVE).items() if node == VICTIM)
    bucket_of, pairs = faults.watched_pairs(c)
    majority = [node for node in c.nodes if node != VICTIM]
    watch = TrafficWatch(c.lab, VIP, PORT, pairs, faults.WATCH_SECONDS)
    sampler = OwnershipSampler(c, interval=0.1)
    watch.start()
    sampler.start()
    result = {"owner_lease": LEASE, "bucket": bucket}
    try:
        wait_until(lambda: len(watch.rounds) >= 5, 30, "the first client rounds")
        since = time.monotonic()
        faults.cut(c, VICTIM)
        wait_until(lambda: not (c.owned(VICTIM) or set())
                   and faults.one_owner_each(c, majority), LIMIT,
                   "the majority alone owning every bucket")
        time.sleep(3.0)
        until = time.monotonic()
        held = owned_by(sampler, VICTIM, bucket, since)
        result["victim_owned_until"] = round(max(held or [since]) - since, 2)
        result["two_owners"] = sampler.spans([bucket], since, until, owners=2)[bucket]
        result["no_owner"] = sampler.spans([bucket], since, until, owners=0)[bucket]
        result["unanswered"] = watch.dark(bucket_of, since, until)[bucket][0]
    finally:
        sampler.stop()
        watch.stop()
        faults.heal(c, VICTIM)
    c.log("partition with owner_lease=%d: %s" % (LEASE, result))
    REPORT.notes.append("partition of %s without fencing, owner_lease=%d: %s"
                        % (VICTIM, LEASE, json.dumps(result, sort_keys=True)))
    RESULTS["partition_lease"] = result
    base.wait_placement(c, "one bucket per node after the heal", timeout=LIMIT)
    assert result["two_owners"][0] <= LEASE, result


def test_d_maintenance_mode_with_lease_lets_every_bucket_expire(stacked):
    c = stacked
    leased_baseline(c, LEASE)
    node = c.live_nodes()[0]
    since = time.monotonic()
    c.crm(node, "configure", "property", "maintenance-mode=true")
    set_at = time.monotonic()
    dark = wait_until(lambda: not any(c.owned(n) for n in c.nodes) and time.monotonic(),
                      LEASE + 20, "every bucket expired in maintenance mode", interval=0.2)
    result = {"owner_lease": LEASE, "all_dark_after": round(dark - since, 2),
              "property_set_in": round(set_at - since, 2)}
    c.crm(node, "configure", "property", "maintenance-mode=false")
    ended = time.monotonic()
    base.wait_placement(c, "every bucket recovered after maintenance mode", timeout=LIMIT)
    wait_until(lambda: all(len(c.owned(n) or ()) == 1 for n in c.nodes), LIMIT,
               "every node owning its bucket again")
    result["served_again_after"] = round(time.monotonic() - ended, 2)
    status = c.status()
    result["failures"] = ["%s on %s" % (f.get("op_key"), f.get("node")) for f in status.failures]
    c.log("maintenance mode with owner_lease=%d: %s" % (LEASE, result))
    REPORT.notes.append("maintenance-mode with owner_lease=%d: %s"
                        % (LEASE, json.dumps(result, sort_keys=True)))
    RESULTS["maintenance_lease"] = result
    c.crm(node, "resource", "cleanup")
    set_lease(c, 0)
    assert result["all_dark_after"] <= LEASE + 12, result
