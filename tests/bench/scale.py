"""A cluster of 8 nodes, one VIP of 32 buckets, then 4 VIPs of 32 (issue #17).

    scale.py [--nodes 8] [--buckets 32] [--vips 4] [--cpu-seconds 60] [--kills 2]

A real Pacemaker + Corosync cluster of ``--nodes`` namespace nodes (the
cluster tier's harness, tests/cluster/cluster.py, ``token: 1000``), with the
installed agent.  Measured, in this order:

1. the cluster's start: every node online with a DC;
2. one VIP of ``--buckets`` buckets (``clone-max`` = ``clone-node-max`` =
   buckets) loaded into the running cluster: until every bucket is owned by
   exactly one node's kernel, until Pacemaker reports every instance
   started, until every connection of the client (200 sources x 2 ports) is
   answered; then a Dummy clone of the same shape, loaded alone, until
   Pacemaker reports it started (the yardstick);
3. the monitor's CPU per node per hour: the growth of pacemaker-execd's
   cutime + cstime (the CPU of the agent processes it ran and reaped) over
   ``--cpu-seconds`` of steady state, before the Dummy clone exists, so
   that nothing but the clusterip monitors (10 s interval) runs there;
4. evenness: 10,000 UDP packets from random sources to the cluster MAC
   (sprinkle.py), counted by the kernel per bucket, summed per node as
   Pacemaker placed the buckets; and the answers to the client's 400
   connections, per node;
5. ``--kills`` crashes of the last node (SIGKILL of all its processes, link
   down): until every connection is answered by a survivor, until every
   bucket is owned by exactly one survivor, until Pacemaker reports every
   clusterip and every Dummy instance of the dead node started on a
   survivor; the starts' own times (Pacemaker's log) and, from the
   agent's own lines there, how long each start on a survivor waited for
   its VIP's lock and held it (the instances of one VIP serialise there);
   then its reboot:
   until the buckets are balanced again (each node ``buckets / nodes``);
6. ``--vips - 1`` more VIPs of ``--buckets`` each added (one transaction):
   until all are served; then the crash and reboot of 5 again, over all VIPs.

Prints one table; takes ~10 minutes on 2 cores.  Run as root, from the
checkout: ``PYTHONPATH=lib:tests:tests/cluster /opt/clusterip-test/bin/python3
tests/bench/scale.py`` (``make benchmark-scale``).  Memory: ~0.2 GB per node.
"""

import argparse
import os
import re
import statistics
import subprocess
import sys
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [os.path.join(HERE, ".."), os.path.join(HERE, "..", "cluster")]

import cluster  # noqa: E402  (tests/cluster, on the path above)
import netlab  # noqa: E402
import oracle  # noqa: E402
import scenarios  # noqa: E402
from cluster import wait_until  # noqa: E402

PREFIX = os.environ.get("CLUSTERIP_TEST_NS_PREFIX", "cip") + "sc"  # as failover.py's
PORT = scenarios.PORT
VIP_BASE = "198.18.0.%d"  # .100, .101, ...: inside the lab's 198.18.0.0/16
LIMIT = 600.0  # s: anything slower fails the run (96 instances loaded at once took 178 s, loaded)
LOAD_THRESHOLD = 100000  # % (Pacemaker's default 80): see main
TABLE_HEAD = "%-58s %9s"
# The agent's line for each start (clusterip.instance), in pacemaker.log.
LOCK_LINE = re.compile(r"the VIP's lock: waited (\d+) ms, held (\d+) ms")


def vip(index):
    return VIP_BASE % (100 + index)


def clusterip_crm(first, count, buckets):
    """VIPs ``first`` .. first+count-1 as clones of ``buckets`` instances, as
    crm-examples/three-nodes.crm shapes them."""
    text = []
    for index in range(first, first + count):
        text.append(
            "primitive vip%d ocf:custom:clusterip params ip=%s cidr_netmask=16 "
            "hashmode=sourceip-sourceport op start timeout=60s interval=0 "
            "op stop timeout=60s interval=0 op monitor interval=10s timeout=20s\n"
            "clone vip%d-clone vip%d meta globally-unique=true clone-max=%d "
            "clone-node-max=%d resource-stickiness=0 failure-timeout=60s\n"
            % (index, vip(index), index, index, buckets, buckets))
    return "".join(text)


def dummy_crm(buckets):
    return ("primitive dummy ocf:pacemaker:Dummy op monitor interval=10s timeout=20s\n"
            "clone dummy-clone dummy meta globally-unique=true clone-max=%d "
            "clone-node-max=%d resource-stickiness=0\n" % (buckets, buckets))


class Scale:
    def __init__(self, c, buckets, log):
        self.c, self.buckets, self.log = c, buckets, log
        self.vips = 0
        self.dummy = False
        self.pairs = [(source, port) for source in c.lab.sources for port in scenarios.SOURCE_PORTS]

    def load(self, name, text):
        path = os.path.join(self.c.lab.directory, name + ".crm")
        with open(path, "w") as handle:
            handle.write(text)
        self.c.load_crm(path)

    # -- what is served -----------------------------------------------------------------

    def kernel_owners(self, index):
        """{bucket: [live nodes whose kernel owns it]} for VIP ``index``."""
        found = {}
        for node in self.c.live_nodes():
            for bucket in oracle.owned(self.c.lab, node, vip(index), cluster.BACKEND) or ():
                found.setdefault(bucket, []).append(node)
        return found

    def kernel_complete(self):
        """Every bucket of every VIP owned by exactly one live node."""
        return all(sorted(owners) == list(range(1, self.buckets + 1))
                   and all(len(nodes) == 1 for nodes in owners.values())
                   for owners in map(self.kernel_owners, range(self.vips)))

    def started(self, status, primitives, nodes):
        """Every instance of each primitive started on one of ``nodes``."""
        return all(sorted(status.instances(p)) == list(range(self.buckets))
                   and all(n in nodes for n in status.instances(p).values())
                   for p in primitives)

    def answered(self, nodes):
        """Every connection to VIP 0 (the client's 400 pairs) answered by one of
        ``nodes``: {pair: node} or None.  A round with unanswered pairs lasts at
        least the 0.15 s timeout: the figure errs high by up to ~0.25 s."""
        answers, _ = self.c.lab.connect(vip(0), PORT, self.pairs, timeout=0.15,
                                        workers=200, retries=0)
        return answers if all(a in nodes for a in answers.values()) else None

    def balanced(self):
        """The status once every clone (the Dummy's too, once loaded) has the
        same number of instances on each node and the kernels agree; else None."""
        status = self.c.status()
        per_node = self.buckets // len(self.c.nodes)
        for primitive in ["vip%d" % i for i in range(self.vips)] + ["dummy"] * self.dummy:
            placed = list(status.instances(primitive).values())
            if set(placed) != set(self.c.nodes) or any(
                    placed.count(node) != per_node for node in self.c.nodes):
                return None
        return status if self.kernel_complete() else None

    def wait_each(self, since, checks):
        """Poll each of ``checks`` {name: function -> truthy} in a thread of its
        own (one slow reader must not delay another's figure) until it is true;
        {name: seconds from ``since`` when first true}."""
        times, errors = {}, []

        def poll(name, check):
            try:
                while time.monotonic() - since < LIMIT:
                    try:
                        done = check()
                    except subprocess.TimeoutExpired:
                        # crm_mon on a DC busy with hundreds of probes can take
                        # longer than its 30 s: not yet known, ask again.
                        done = False
                    if done:
                        times[name] = round(time.monotonic() - since, 2)
                        return
                    time.sleep(0.05)
            except Exception as error:  # noqa: BLE001  (reported below)
                errors.append("%s: %s" % (name, error))
        threads = [threading.Thread(target=poll, args=item, daemon=True)
                   for item in checks.items()]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(LIMIT + 60)
        if errors or len(times) < len(checks):
            raise cluster.ClusterError("after %.0f s only %s; errors %s" % (
                time.monotonic() - since, times, errors))
        return times

    # -- the steps ------------------------------------------------------------------------

    def add_vips(self, count):
        since = time.monotonic()
        first = self.vips
        self.load("vips-%d" % first, clusterip_crm(first, count, self.buckets))
        self.vips += count
        primitives = ["vip%d" % i for i in range(self.vips)]
        return self.wait_each(since, {
            "kernel": self.kernel_complete,
            "pacemaker": lambda: self.started(self.c.status(), primitives, self.c.nodes),
            "traffic": lambda: self.answered(self.c.nodes)})

    def add_dummy(self):
        since = time.monotonic()
        self.load("dummy", dummy_crm(self.buckets))
        self.dummy = True
        return self.wait_each(since, {
            "pacemaker": lambda: self.started(self.c.status(), ["dummy"], self.c.nodes)})

    def crash(self, victim):
        """Kill ``victim``; seconds from the kill until each thing is served again."""
        self.c.wait_settled()  # no action of an earlier step still running
        wait_until(self.balanced, LIMIT, "balanced before the crash", 0.2)
        status = self.c.status()
        lost = {p: [i for i, n in status.instances(p).items() if n == victim]
                for p in ["vip%d" % i for i in range(self.vips)] + ["dummy"]}
        survivors = [n for n in self.c.nodes if n != victim]
        logs = {n: self.c.pacemaker_log(n) for n in survivors}
        offsets = {n: os.path.getsize(path) for n, path in logs.items()}
        since = self.c.kill_node(victim)

        def moved(primitives):
            def check():
                s = self.c.status(survivors[0])
                return all(s.instances(p).get(i) in survivors
                           for p in primitives for i in lost[p])
            return check
        times = self.wait_each(since, {
            "traffic": lambda: self.answered(survivors),
            "kernel": self.kernel_complete,
            "clusterip": moved([p for p in lost if p != "dummy"]),
            "dummy": moved(["dummy"])})
        times["instances"] = sum(len(v) for p, v in lost.items() if p != "dummy")
        times["lock"] = []  # (waited, held) ms of each start on a survivor
        for node, path in logs.items():
            with open(path, errors="replace") as handle:
                handle.seek(offsets[node])
                times["lock"] += [(int(w), int(h)) for w, h in LOCK_LINE.findall(handle.read())]
        return times

    def rebalance(self, victim):
        at = self.c.revive_node(victim)
        wait_until(self.balanced, LIMIT, "balanced after %s's reboot" % victim, 0.2)
        return round(time.monotonic() - at, 2)

    def execd_cpu(self):
        """{node: cutime + cstime of its pacemaker-execd, seconds}."""
        found = {}
        for node in self.c.live_nodes():
            for pid in cluster.netns_pids(self.c.lab.ns(node)):
                try:
                    with open("/proc/%d/stat" % pid) as handle:
                        name, rest = handle.read().split(") ", 1)
                except OSError:
                    continue
                if name.endswith("(pacemaker-execd"):
                    fields = rest.split()
                    found[node] = (int(fields[13]) + int(fields[14])) / os.sysconf("SC_CLK_TCK")
        return found

    def cpu_per_hour(self, seconds):
        """Monitor CPU per node per hour (s): execd's reaped children over ``seconds``."""
        before = self.execd_cpu()
        time.sleep(seconds)
        after = self.execd_cpu()
        return {node: (after[node] - before[node]) * 3600 / seconds for node in after}

    def evenness(self, placed):
        """(max/mean, min/mean) over the nodes of kernel-counted packets of VIP 0,
        and the same of the client's answers."""
        node = self.c.live_nodes()[0]
        table = oracle.table_name(vip(0))
        before = oracle.nft_counters(self.c.lab, node, "ip", table)
        mac = oracle.default_cluster_mac(vip(0))
        self.c.lab.run("client", sys.executable, "-I", os.path.join(HERE, "sprinkle.py"),
                       "eth0", mac, vip(0), "10000")
        after = oracle.nft_counters(self.c.lab, node, "ip", table)
        per_bucket = {int(name[len("bucket"):]): after[name] - before.get(name, 0)
                      for name in after if name.startswith("bucket")}
        per_node = {n: sum(v for b, v in per_bucket.items() if placed[b] == n)
                    for n in self.c.nodes}
        answers = self.answered(self.c.nodes) or {}
        by_answer = {n: list(answers.values()).count(n) for n in self.c.nodes}
        return per_bucket, per_node, by_answer


def spread(counts):
    values = list(counts.values())
    mean = sum(values) / len(values)
    return max(values) / mean, min(values) / mean


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--nodes", type=int, default=8)
    parser.add_argument("--buckets", type=int, default=32)
    parser.add_argument("--vips", type=int, default=4)
    parser.add_argument("--cpu-seconds", type=float, default=60.0)
    parser.add_argument("--kills", type=int, default=2)
    parser.add_argument("--verbose", action="store_true")
    args = parser.parse_args()
    problem = netlab.not_root_problem() or cluster.cluster_problem()
    if problem:
        raise SystemExit("scale: %s" % problem)
    started = time.monotonic()
    log = (lambda line: print(line, file=sys.stderr, flush=True)) if args.verbose \
        else (lambda line: None)
    lines = []

    def row(label, value):
        lines.append("  %-56s %9s" % (label, value))
        print(lines[-1], flush=True)

    with cluster.Cluster(nodes=args.nodes, token=1000, prefix=PREFIX, log=log) as c:
        # The namespace nodes share one machine's load average, so each takes
        # all of theirs for its own and Pacemaker throttles every node ("High
        # CPU load detected"), as no real node of such a cluster would be.
        c.crm(c.nodes[0], "configure", "property", "load-threshold=%d%%" % LOAD_THRESHOLD)
        c.start_responders(PORT)
        s = Scale(c, args.buckets, log)
        print("scale: %d nodes, token %s ms (runtime %s, consensus %s)" % (
            args.nodes, 1000, c.timings.get("token_ms"), c.timings.get("consensus_ms")))
        row("cluster start: every node online with a DC (s)", "%.2f" % c.timings["up"])
        one = s.add_vips(1)
        for key in ("kernel", "pacemaker", "traffic"):
            row("1 VIP x %d loaded: %s (s)" % (args.buckets, {
                "kernel": "every bucket owned once", "pacemaker": "all reported started",
                "traffic": "every connection answered"}[key]), "%.2f" % one[key])
        wait_until(s.balanced, LIMIT, "balanced", 0.2)
        cpu = s.cpu_per_hour(args.cpu_seconds)
        row("monitor CPU per node per hour, %d instances (s, median)"
            % (args.buckets // args.nodes), "%.1f" % statistics.median(cpu.values()))
        row("  (min - max over nodes)", "%.1f-%.1f" % (min(cpu.values()), max(cpu.values())))
        placed = c.status().buckets("vip0")
        per_bucket, per_node, by_answer = s.evenness(placed)
        row("evenness, 10,000 sources: nodes max/mean, min/mean", "%.3f %.3f" % spread(per_node))
        row("  buckets max/mean, min/mean", "%.3f %.3f" % spread(per_bucket))
        row("  400 connections answered: nodes max/mean, min/mean",
            "%.3f %.3f" % spread(by_answer))
        dummy = s.add_dummy()
        row("Dummy x %d loaded: all reported started (s)" % args.buckets,
            "%.2f" % dummy["pacemaker"])
        victim = c.nodes[-1]
        for setting in ("1 VIP", "%d VIPs" % args.vips):
            if setting != "1 VIP":
                more = s.add_vips(args.vips - 1)
                row("%d more VIPs x %d added: every bucket owned once (s)"
                    % (args.vips - 1, args.buckets), "%.2f" % more["kernel"])
                row("  all reported started (s)", "%.2f" % more["pacemaker"])
            kills = []
            for _ in range(args.kills):
                kills.append(s.crash(victim))
                kills[-1]["rebalance"] = s.rebalance(victim)
            for key, label in (("traffic", "every connection answered by a survivor"),
                               ("kernel", "every bucket owned once"),
                               ("clusterip", "Pacemaker: its clusterip instances started"),
                               ("dummy", "Pacemaker: its Dummy instances started"),
                               ("rebalance", "rebooted: balanced again, from the boot")):
                values = [k[key] for k in kills]
                if key == "traffic":
                    lines.append("%s: crash of %s (%d clusterip instances there), %d kills, "
                                 "s from the kill (median)" % (setting, victim,
                                                               kills[0]["instances"], len(kills)))
                    print(lines[-1], flush=True)
                    label = "VIP 0's " + label
                row("  " + label, "%.2f" % statistics.median(values))
            diffs = [k["traffic"] - k["dummy"] for k in kills]
            row("  traffic - Dummy, median per kill (target <= +0.20)",
                "%+.2f" % statistics.median(diffs))
            locks = [pair for k in kills for pair in k["lock"]]
            if len(locks) < sum(k["instances"] for k in kills):
                raise SystemExit("scale: %d lock lines for %d starts (agent not the checkout's?)"
                                 % (len(locks), sum(k["instances"] for k in kills)))
            for index, what in ((0, "waited"), (1, "held")):
                values = [pair[index] for pair in locks]
                row("  the VIP's lock per start: %s (ms, median / max)" % what,
                    "%d / %d" % (statistics.median(values), max(values)))
        starts = c.operation_times().get("vip0 start", [])
        if starts:
            row("clusterip start as Pacemaker timed it (ms, median / max)",
                "%d / %d" % (statistics.median(starts), max(starts)))
    print("total run time: %.0f s" % (time.monotonic() - started))


if __name__ == "__main__":
    main()
