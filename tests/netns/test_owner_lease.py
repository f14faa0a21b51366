"""owner_lease on the host kernel (issue #15): owned buckets that expire.

Three nodes, clone instance i on node i, ``owner_lease=10`` (the smallest
allowed) with monitors as Pacemaker would run them every 2 s with a 5 s
timeout (2 x 2 s + 5 s = 9 s <= 10 s).  Read back with ``nft -j`` and real
connections:

* every nft listing works on tables whose elements expire, and the text
  listing loads back (``reload_from_listing``) with the elements still
  expiring, not made permanent;
* without monitors each node's bucket leaves the kernel's set after the
  lease (measured from its last start or renewal), no node answers the VIP
  any more, and the monitor then reports the bucket missing (exit 1); a
  start serves it again;
* monitors renewing all the time (back to back on n0; one monitor stopped
  with SIGSTOP for the 5 s of its timeout on n1; every 2 s on n2) for more
  than two leases: no connection of a client that connects every 0.3 s
  fails (0.9 s timeout, no retry: a dropped SYN is retransmitted after 1 s,
  so any drop is an error).  The same client against a renewal that is not
  atomic (``nft delete element`` then ``nft add element``, two
  transactions) does see failures: the oracle can fail;
* switching the lease on and off is a start that rebuilds the set with the
  owned buckets kept; the guard repairs a flushed ruleset with the lease,
  and not a bucket whose last renewal is older than the lease.
"""

import json
import os
import signal
import subprocess
import sys
import threading
import time

import netlab
import oracle
import scenarios
from netlab import Lab

LEASE = 10
INTERVAL_MS, TIMEOUT_MS = 2000, 5000
PORT = scenarios.PORT
VIP = scenarios.VIP
TABLE = oracle.table_name(VIP)


def params(lease=LEASE, **more):
    return scenarios.agent_params("nft", "sourceip", owner_lease=lease, **more)


def meta(instance, interval=INTERVAL_MS):
    return scenarios.clone_meta(instance, interval=interval, timeout_ms=TIMEOUT_MS)


def agent(lab, node, action, instance, lease=LEASE, interval=INTERVAL_MS):
    return lab.agent(node, action, params(lease), meta(instance, interval), "vip:%d" % instance)


def expect(lab, node, action, instance, rc, **kwargs):
    got, out, err = agent(lab, node, action, instance, **kwargs)
    assert got == rc, "%s of %d on %s: exit %d, expected %d: %s %s" % (
        action, instance, node, got, rc, out, err)
    return err


def owned_set(lab, node):
    """The set owned as ``nft -j`` lists it (None: no set)."""
    result = lab.run(node, "nft", "-j", "list", "set", "ip", TABLE, "owned", check=False)
    if result.returncode != 0:
        return None
    return [item["set"] for item in json.loads(result.stdout)["nftables"] if "set" in item][0]


def expiries(lab, node):
    """{bucket: seconds left} as ``nft -j`` lists them; {} for a set without timeouts."""
    found = owned_set(lab, node) or {}
    return {e["elem"]["val"]: e["elem"].get("expires") for e in found.get("elem", [])
            if isinstance(e, dict)}


def answers(lab, pairs, timeout=0.9):
    result, _ = lab.connect(VIP, PORT, pairs, timeout=timeout, retries=0)
    return result


def serve_three(lab):
    for node in lab.node_names:
        lab.start_responder(node, PORT)
    started = {}
    for index, node in enumerate(lab.node_names):
        expect(lab, node, "start", index, 0)
        started[node] = time.monotonic()
    lab.run("client", "ping", "-c", "1", "-W", "1", VIP, check=False)
    return started


def test_buckets_expire_after_the_lease_without_monitors():
    with Lab(nodes=3, sources=60) as lab:
        pairs = [(source, 21000) for source in lab.sources]
        started = serve_three(lab)
        got = answers(lab, pairs)
        assert set(got.values()) == set(lab.node_names), got
        for node in lab.node_names:
            scenarios.assert_nft_lists(lab, "tables with expiring elements", node)
            assert oracle.owned(lab, node, VIP, "nft") == {lab.node_names.index(node) + 1}
            assert "expires" in lab.run(node, "nft", "list", "table", "ip", TABLE).stdout
        # An administrator's backup and restore keeps the elements expiring.
        scenarios.Dataplane(lab, "nft", "sourceip").reload_from_listing(["n0"])
        left = expiries(lab, "n0")
        assert set(left) == {1} and left[1] is not None and left[1] <= LEASE, left
        scenarios.assert_nft_lists(lab, "reloaded tables", "n0")

        gone = {}
        deadline = time.monotonic() + LEASE + 10
        while len(gone) < 3 and time.monotonic() < deadline:
            for node in lab.node_names:
                if node not in gone and not oracle.owned(lab, node, VIP, "nft"):
                    gone[node] = time.monotonic() - started[node]
            time.sleep(0.1)
        print("expired after (s from start):",
              {node: round(seconds, 2) for node, seconds in gone.items()})
        assert set(gone) == set(lab.node_names), gone
        # The reload kept n0's time left: it too expires about a lease after its start.
        assert all(LEASE - 1 <= seconds <= LEASE + 3 for seconds in gone.values()), gone

        got = answers(lab, pairs)
        assert all(answer.startswith("ERROR:") for answer in got.values()), got
        for index, node in enumerate(lab.node_names):
            err = expect(lab, node, "monitor", index, 1)
            assert "missing bucket %d" % (index + 1) in err, err
        for index, node in enumerate(lab.node_names):
            expect(lab, node, "start", index, 0)
        got = answers(lab, pairs, timeout=2.0)
        assert set(got.values()) == set(lab.node_names), got


def _monitor_loop(lab, node, instance, until, pause, results):
    while time.monotonic() < until:
        results.append(agent(lab, node, "monitor", instance)[0])
        time.sleep(pause)


def _stalled_monitor(lab, node, instance, stall):
    """One monitor stopped (SIGSTOP) right after it began, for ``stall`` seconds."""
    env = lab.agent_env(node, "vip:%d" % instance, params(), meta(instance))
    argv = ["ip", "netns", "exec", lab.ns(node), "env", "-i",
            *("%s=%s" % item for item in env.items()), *netlab.agent_command(), "monitor"]
    process = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    time.sleep(0.05)
    process.send_signal(signal.SIGSTOP)
    time.sleep(stall)
    process.send_signal(signal.SIGCONT)
    _, err = process.communicate(timeout=60)
    return process.returncode, err


def _client_rounds(lab, pairs, seconds, every=0.3, timeout=0.9):
    """[(t, {pair: answer})] of a client connecting every ``every`` s for ``seconds``."""
    result = lab.run("client", sys.executable, "-I", os.path.join(netlab.HELPERS, "client.py"),
                     VIP, str(PORT), "--every", str(every), "--for", str(seconds),
                     "--timeout", str(timeout), "--workers", "32",
                     input=json.dumps(pairs), timeout=seconds + 60)
    return [json.loads(line) for line in result.stdout.splitlines() if line.strip()]


def _failures(rounds):
    return [(r["t"], pair, answer) for r in rounds for pair, answer in r["answers"].items()
            if answer.startswith("ERROR:")]


def test_renewals_never_drop_a_connection_and_a_non_atomic_renewal_would():
    with Lab(nodes=3, sources=60) as lab:
        pairs = [(source, 21000) for source in lab.sources]
        serve_three(lab)
        seconds = 2 * LEASE + 3
        until = time.monotonic() + seconds
        results = {node: [] for node in lab.node_names}
        stalled = []
        threads = [
            threading.Thread(target=_monitor_loop, args=(lab, "n0", 0, until, 0.0,
                                                         results["n0"])),
            threading.Thread(target=lambda: (
                stalled.append(_stalled_monitor(lab, "n1", 1, TIMEOUT_MS / 1000.0)),
                _monitor_loop(lab, "n1", 1, until, INTERVAL_MS / 1000.0, results["n1"]))),
            threading.Thread(target=_monitor_loop, args=(lab, "n2", 2, until,
                                                         INTERVAL_MS / 1000.0, results["n2"])),
        ]
        for thread in threads:
            thread.start()
        rounds = _client_rounds(lab, pairs, seconds)
        for thread in threads:
            thread.join()
        failed = _failures(rounds)
        connections = sum(len(r["answers"]) for r in rounds)
        print("renewals: %s monitors, stalled one: %s; %d connections in %d rounds, "
              "%d failed" % ({n: len(r) for n, r in results.items()}, stalled[0][0],
                             connections, len(rounds), len(failed)))
        assert all(rc == 0 for r in results.values() for rc in r), results
        assert stalled[0][0] == 0, stalled
        assert len(results["n0"]) >= 20, results  # many renewals, not a handful
        assert not failed, failed[:10]
        for index, node in enumerate(lab.node_names):
            assert oracle.owned(lab, node, VIP, "nft") == {index + 1}

        # The control: the same client against a renewal in two transactions.
        script = ("end=$(( $(date +%%s) + %d )); while [ $(date +%%s) -lt $end ]; do "
                  "nft delete element ip %s owned '{ 1 }'; "
                  "nft add element ip %s owned '{ 1 }'; done" % (8, TABLE, TABLE))
        control = lab.spawn("n0", "sh", "-c", script)
        rounds = _client_rounds(lab, pairs, 6)
        control.wait(timeout=60)
        failed = _failures(rounds)
        print("non-atomic renewal: %d of %d connections failed"
              % (len(failed), sum(len(r["answers"]) for r in rounds)))
        assert failed, "the client saw no failure against a non-atomic renewal"


def test_switching_the_lease_rebuilds_the_set_and_the_guard_honours_it():
    with Lab(nodes=1, sources=2) as lab:
        expect(lab, "n0", "start", 0, 0, lease=0)
        expect(lab, "n0", "start", 1, 0, lease=0)
        assert "timeout" not in owned_set(lab, "n0").get("flags", [])
        # On: a start with the lease rebuilds the set with both buckets kept.
        expect(lab, "n0", "start", 0, 0)
        found = owned_set(lab, "n0")
        assert found.get("timeout") == LEASE and set(expiries(lab, "n0")) == {1, 2}, found
        expect(lab, "n0", "monitor", 1, 0)
        # Off again.
        expect(lab, "n0", "start", 1, 0, lease=0)
        found = owned_set(lab, "n0")
        assert "timeout" not in found.get("flags", []) and oracle.owned(
            lab, "n0", VIP, "nft") == {1, 2}, found
        expect(lab, "n0", "monitor", 0, 0, lease=0)
        # The guard keeps the parameters of the start that spawned it: Pacemaker
        # stops every instance on a parameter change, which ends it.
        expect(lab, "n0", "stop", 0, 0, lease=0)
        expect(lab, "n0", "stop", 1, 0, lease=0)
        expect(lab, "n0", "start", 0, 0)
        expect(lab, "n0", "start", 1, 0)

        # A flushed ruleset: the guard puts the tables back, the lease with them.
        lab.run("n0", "nft", "flush", "ruleset")
        deadline = time.monotonic() + 5
        while oracle.owned(lab, "n0", VIP, "nft") != {1, 2} and time.monotonic() < deadline:
            time.sleep(0.05)
        assert oracle.owned(lab, "n0", VIP, "nft") == {1, 2}
        assert owned_set(lab, "n0").get("timeout") == LEASE

        # A bucket no monitor renewed within the lease is not the guard's to repair.
        marker = os.path.join(lab.rsctmp("n0"), "clusterip-%s.bucket2.started" % VIP)
        old = time.time() - LEASE - 1
        os.utime(marker, (old, old))
        lab.run("n0", "nft", "flush", "ruleset")
        deadline = time.monotonic() + 5
        while not oracle.owned(lab, "n0", VIP, "nft") and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(1.0)
        assert oracle.owned(lab, "n0", VIP, "nft") == {1}
        err = expect(lab, "n0", "monitor", 1, 1)
        assert "missing bucket 2" in err, err
