"""graceful_handover (issue #7): a bucket moves while its old owner lives.

Three nodes, hashmode sourceip (so a source's bucket, learnt once, holds for
any source port), 200 client sources.  The story, each step through the real
agent with Pacemaker's clone environment:

1. one bucket per node; one short connection per source tells which node,
   so which bucket, each source hashes to;
2. n2 "fails": its bucket 3 moves to n1 (n1 now owns 2 and 3);
3. 200 long-lived connections, one per source (helpers/holder.py);
4. n2 "returns": bucket 3 moves back from n1 to n2 while n1 lives - the
   rebalance.  With graceful_handover every held connection still answers, the
   moved ones still from n1, and new connections of bucket 3 go to n2; without
   it the moved ones are reset by n2's TCP (as CLUSTERIP did), the others go on;
5. n1 dies (its link goes down) and its bucket 2 fails over to n0: the
   connections n1 served break - timing out with graceful_handover (n0 and n2
   drop their packets silently), reset without it.

The old owner keeps a bucket (2) throughout step 4: a node's last instance
removes the address, and its connections with it (see the README).
"""

import collections
import time

import pytest

import oracle
import scenarios
from netlab import Lab, split_pair

PORT, HOLD_PORT = scenarios.PORT, scenarios.PORT + 1
PROBE_SPORT, NEW_SPORT, HOLD_SPORT = 21000, 21001, 22000
BUCKETS = scenarios.NODES


def run_handover(graceful):
    params = dict(scenarios.agent_params("nft", "sourceip"),
                  graceful_handover="true" if graceful else "false")
    report = {"graceful_handover": graceful}
    started = time.monotonic()
    with Lab(nodes=3, timeout_scale=scenarios.TIMEOUT_SCALE) as lab:
        n0, n1, n2 = lab.node_names

        def agent(node, action, instance):
            rc, out, err = lab.agent(node, action, params, scenarios.clone_meta(instance),
                                     instance="vip:%d" % instance)
            assert rc == scenarios.OCF_SUCCESS, "%s of instance %d on %s: exit %d\n%s%s" % (
                action, instance, node, rc, out, err)

        def move(instance, old, new):
            agent(old, "stop", instance)
            agent(new, "start", instance)

        def connect(sport, sources):
            """{source: node} of one short connection per source (one retry, see Lab.connect)."""
            answers, _ = lab.connect(scenarios.VIP, PORT, [(s, sport) for s in sources])
            return {split_pair(key)[0]: node for key, node in answers.items()}

        baseline = {node: oracle.multicast_macs(lab, node) for node in (n0, n1, n2)}
        for node in (n0, n1, n2):
            lab.start_responder(node, PORT)
            lab.start_responder(node, HOLD_PORT, hold=True)
        for instance, node in enumerate((n0, n1, n2)):
            agent(node, "start", instance)
        lab.run("client", "ping", "-c", "1", "-W", "1", scenarios.VIP, check=False)

        # 1. Which bucket each source hashes to: the bucket of the node that answers.
        owner = connect(PROBE_SPORT, lab.sources)
        bucket = {source: lab.node_names.index(node) + 1 for source, node in owner.items()
                  if node in lab.node_names}
        assert len(bucket) == len(lab.sources), collections.Counter(owner.values())
        moved_sources = [s for s in lab.sources if bucket[s] == 3]
        assert moved_sources, "no source hashes to bucket 3"

        # 2. n2 fails over to n1; 3. the long-lived connections.
        move(2, n2, n1)
        held, greeting = lab.hold(scenarios.VIP, HOLD_PORT, [(s, HOLD_SPORT) for s in lab.sources])
        key = {s: "%s:%d" % (s, HOLD_SPORT) for s in lab.sources}
        expected = {key[s]: (n0 if bucket[s] == 1 else n1) for s in lab.sources}
        assert greeting == expected, _differences(greeting, expected)

        # 4. The rebalance: bucket 3 back from n1 (alive) to n2.
        move(2, n1, n2)
        echoes = held.ping()
        moved = {key[s] for s in moved_sources}
        broken = {k: v for k, v in echoes.items() if v != greeting[k]}
        report.update(held=len(echoes), moved=len(moved), broken_moved=len(set(broken) & moved),
                      broken_other=len(set(broken) - moved),
                      moved_errors=dict(collections.Counter(broken[k] for k in moved
                                                            if k in broken)))
        if graceful:
            assert not broken, _differences(echoes, greeting)
        else:
            assert {k: echoes[k] for k in moved} == {k: "ERROR:reset" for k in moved}, \
                _differences(echoes, greeting)
            assert set(broken) == moved, _differences(echoes, greeting)
        new = connect(NEW_SPORT, moved_sources)
        assert set(new.values()) == {n2}, collections.Counter(new.values())

        # 5. n1 dies; Pacemaker starts its bucket 2 on n0.
        lab.unplug(n1)
        agent(n0, "start", 1)
        echoes = held.ping()
        served_by_n1 = {k for k, v in echoes.items() if greeting[k] == n1}
        report["dead_owner_errors"] = dict(collections.Counter(echoes[k] for k in served_by_n1))
        assert served_by_n1
        failure = "ERROR:timeout" if graceful else "ERROR:reset"
        assert {k: echoes[k] for k in served_by_n1} == {k: failure for k in served_by_n1}, \
            _differences(echoes, greeting)
        assert all(echoes[k] == n0 for k in echoes if k not in served_by_n1), \
            _differences(echoes, greeting)
        held.close()

        for node, instance in ((n0, 0), (n0, 1), (n1, 1), (n2, 2)):
            agent(node, "stop", instance)
        for node in (n0, n1, n2):
            scenarios.assert_clean(lab, node, "nft", baseline[node])
    report["seconds"] = round(time.monotonic() - started, 2)
    return report


def _differences(got, expected, limit=5):
    wrong = {k: (expected.get(k), got.get(k)) for k in set(got) | set(expected)
             if got.get(k) != expected.get(k)}
    return "%d differ (expected, got), e.g. %s" % (len(wrong), dict(sorted(wrong.items())[:limit]))


@pytest.mark.parametrize("graceful", [True, False], ids=["graceful", "plain"])
def test_a_rebalance_keeps_or_resets_the_moved_buckets_connections(graceful):
    print(run_handover(graceful))


def test_a_changed_setting_fails_the_monitor_and_start_rebuilds_the_table():
    def vip_rules(lab):
        return [item["rule"] for item in oracle.nft_ruleset(lab, "n0")
                if "rule" in item and item["rule"]["chain"] == "vip"]

    meta = scenarios.clone_meta(0, interval=10000)
    with Lab(nodes=1, sources=0, timeout_scale=scenarios.TIMEOUT_SCALE) as lab:
        plain = scenarios.agent_params("nft", "sourceip")
        graceful = dict(plain, graceful_handover="true")
        assert lab.agent("n0", "start", plain, meta, "vip:0")[0] == 0
        assert len(vip_rules(lab)) == 4
        rc, _, err = lab.agent("n0", "monitor", graceful, meta, "vip:0")
        assert rc == 1 and "graceful_handover on" in err, err
        assert lab.agent("n0", "start", graceful, meta, "vip:0")[0] == 0
        assert len(vip_rules(lab)) == 6 and any(
            "ct" in str(rule) and "established" in str(rule) for rule in vip_rules(lab))
        assert lab.agent("n0", "monitor", graceful, meta, "vip:0")[0] == 0
        assert lab.agent("n0", "stop", graceful, meta, "vip:0")[0] == 0
        assert oracle.nft_tables(lab, "n0") == []
