"""Draining (issue #16): ``crm node standby`` of a node that serves connections.

A real three-node cluster, one VIP as crm-examples/three-nodes.crm configures
it but with ``graceful_handover=true`` and, in the second half,
``drain_timeout``.  200 connections (one per client source, through
netlab's holder: each greets, then answers a line when pinged) are opened,
then the node serving bucket 3 is put in standby while they last; they end
(the client closes them) a few seconds later.

* Without draining (``drain_timeout=0``): the stop of the node's last
  instance removes the address at once; its connections break (the figure
  is logged and kept in the report), the others go on.
* With draining: the stop releases the node's bucket but keeps serving the
  connections it has until none is left, then removes everything; not one
  connection breaks, the standby completes (the bucket served by another
  node) after the connections ended and within ``drain_timeout``, and the
  node is left clean.
* A crash is unaffected: no stop runs, so nothing drains.  With draining
  configured, the crashed node's connections break as before, the others
  go on, and its bucket is served by a survivor as soon as Corosync notices
  (as test_cluster.py's failover tests measure without draining).
"""

import os
import time

import cluster
import oracle
import scenarios
from cluster import wait_until

VIP = scenarios.VIP
PORT = 8181  # the holding responders' port
DRAIN_TIMEOUT = 15
STOP_TIMEOUT = 30
HOLD_SECONDS = 4  # how long the connections last after the standby
CRM = """\
primitive web-ip ocf:custom:clusterip \\
    params ip=%(vip)s cidr_netmask=16 hashmode=sourceip graceful_handover=true \\
           drain_timeout=%(drain)d \\
    op start timeout=20s interval=0 \\
    op stop timeout=%(stop)ds interval=0 \\
    op monitor interval=10s timeout=20s
clone web-ip-clone web-ip \\
    meta globally-unique=true clone-max=3 clone-node-max=3 \\
         resource-stickiness=0 failure-timeout=60s
"""


def load(c, drain):
    path = os.path.join(c.lab.directory, "drain-%d.crm" % drain)
    with open(path, "w") as handle:
        handle.write(CRM % {"vip": VIP, "drain": drain, "stop": STOP_TIMEOUT})
    c.load_crm(path)


def placed(c, nodes):
    """{bucket: node} once each of the three buckets runs on one of ``nodes``
    and the kernels agree (each owner's set holds it), else None."""
    buckets = c.status().buckets("web-ip")
    if sorted(buckets) != [1, 2, 3] or not set(buckets.values()) <= set(nodes):
        return None
    kernel = c.kernel_buckets(nodes)
    return buckets if all(kernel.get(b) == [n] for b, n in buckets.items()) else None


def standby_under_load(c, victim, label, sport):
    """Hold one connection per source (from port ``sport``: a pair of an earlier
    round may still be in TIME_WAIT), put ``victim`` in standby, ping them
    while they last, close them.  Returns the figures."""
    pairs = [(source, sport) for source in c.lab.sources]
    held, greetings = c.lab.hold(VIP, PORT, pairs)
    failed = {k: v for k, v in greetings.items() if v not in c.nodes}
    assert not failed, "%s: %d connections not opened: %s" % (label, len(failed),
                                                               list(failed.items())[:3])
    on_victim = [k for k, node in greetings.items() if node == victim]
    since = time.monotonic()
    c.crm("n0", "node", "standby", victim)
    survivors = [n for n in c.nodes if n != victim]
    broken = {}
    pings = 0
    done = None  # when every bucket ran on the survivors: the standby complete
    while time.monotonic() - since < HOLD_SECONDS:
        time.sleep(0.3)
        answers = held.ping()
        pings += 1
        for key, answer in answers.items():
            if answer != greetings[key]:
                broken.setdefault(key, answer)
        if done is None and placed(c, survivors):
            done = time.monotonic()
    held.close()  # the connections end
    ended = time.monotonic()
    if done is None:
        wait_until(lambda: placed(c, survivors), 90, "%s: every bucket on %s"
                   % (label, survivors))
        done = time.monotonic()
    figures = {"label": label, "connections": len(pairs), "on_victim": len(on_victim),
               "broken": len(broken), "broken_on_victim": len(set(broken) & set(on_victim)),
               "pings": pings, "standby_seconds": round(done - since, 1),
               "after_the_connections_ended": round(max(0.0, done - ended), 1),
               "kinds": sorted({v for v in broken.values()})}
    c.log("%s: %s" % (label, figures))
    return figures


def unstandby(c, victim):
    c.crm("n0", "node", "online", victim)
    # One reading per try: two could disagree (a bucket moving in between).
    wait_until(lambda: victim in (placed(c, c.nodes) or {}).values(), 120,
               "%s serving again" % victim)


def test_standby_with_and_without_draining():
    with cluster.Cluster(nodes=3) as c:
        for node in c.nodes:
            c.lab.start_responder(node, PORT, hold=True)
        c.lab.run("client", "ping", "-c", "1", "-W", "1", VIP, check=False)

        load(c, 0)
        buckets = wait_until(lambda: placed(c, c.nodes), 90, "one bucket per node")
        victim = buckets[3]
        without = standby_under_load(c, victim, "standby without draining", 22000)
        assert without["on_victim"] > 0, without
        # Every connection the node served breaks, the others go on.
        assert without["broken_on_victim"] == without["on_victim"], without
        assert without["broken"] == without["on_victim"], without
        # Nothing waited: the standby was complete while the connections lasted.
        assert without["standby_seconds"] < HOLD_SECONDS, without
        unstandby(c, victim)

        load(c, DRAIN_TIMEOUT)  # the instances restart with the new parameter
        buckets = wait_until(lambda: (lambda b: b if b and b[3] == victim else None)(
            placed(c, c.nodes)), 120, "one bucket per node, bucket 3 on %s" % victim)
        # validate-all reads the stop timeout from the CIB: 15 s + 5 fit within 30 s,
        # 18 + 5 do not fit within a stopped clone's 20 s.
        validated = c.node_exec("n0", ["crm_resource", "--validate", "-r", "web-ip-clone"],
                                check=False)
        assert validated.returncode == 0, validated.stdout + validated.stderr
        path = os.path.join(c.lab.directory, "too-short.crm")
        with open(path, "w") as handle:
            handle.write((CRM % {"vip": "198.18.0.101", "drain": 18, "stop": 20}).replace(
                "web-ip", "short-ip").replace("failure-timeout=60s",
                                              "failure-timeout=60s target-role=Stopped"))
        c.load_crm(path)
        refused = c.node_exec("n0", ["crm_resource", "--validate", "-r", "short-ip-clone"],
                              check=False)
        output = refused.stdout + refused.stderr
        assert refused.returncode == 6 and "drain_timeout=18 does not fit within the stop " \
            "operation's timeout of 20 s (its op stop timeout=20s)" in output, output

        drained = standby_under_load(c, victim, "standby with drain_timeout=%d"
                                     % DRAIN_TIMEOUT, 22001)
        assert drained["on_victim"] > 0, drained
        assert drained["broken"] == 0, drained
        # The stop waited for the connections, and not for the whole timeout.
        assert HOLD_SECONDS - 1 <= drained["standby_seconds"] <= DRAIN_TIMEOUT + 5, drained
        leftovers = c.leftovers(victim)
        assert not leftovers, "%s after its drained stop: %s" % (victim, leftovers)
        assert oracle.owned(c.lab, victim, VIP, "nft") is None
        unstandby(c, victim)

        # A crash with draining configured: nothing drains.
        buckets = wait_until(lambda: placed(c, c.nodes), 120, "one bucket per node again")
        victim = buckets[3]
        pairs = [(source, 23000) for source in c.lab.sources]
        held, greetings = c.lab.hold(VIP, PORT, pairs)
        on_victim = {k for k, node in greetings.items() if node == victim}
        killed = c.kill_node(victim)
        survivors = [n for n in c.nodes if n != victim]
        wait_until(lambda: placed(c, survivors), 90, "every bucket on %s" % survivors)
        failover = time.monotonic() - killed
        answers = held.ping()
        held.close()
        broken = {k for k, answer in answers.items() if answer != greetings[k]}
        crash = {"on_victim": len(on_victim), "broken": len(broken),
                 "failover_seconds": round(failover, 1)}
        c.log("crash with drain_timeout=%d: %s" % (DRAIN_TIMEOUT, crash))
        assert on_victim and broken == on_victim, crash
        print({"without": without, "with": drained, "crash": crash})
