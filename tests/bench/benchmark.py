"""clusterip against IPaddr2, side by side on this machine, in one run.

Prints tables of medians and ratios (clusterip / IPaddr2).  Run as root
(``make benchmark``); everything happens in network namespaces this script
creates and removes.  These machines are noisy: every figure is the median of
many runs, the two agents are run alternately so that drift hits both alike,
and the ratios are what to compare.

Measured here:
1. plain mode (one address, no clone) on the host kernel: monitor of a
   running address, monitor of a stopped one, probe, start, stop;
2. monitor of a cloned clusterip instance (nft backend) with 10,000
   unrelated nft rules loaded versus none (IPaddr2's plain monitor beside it);
3. the time one bucket move takes inside an action (in-process, libnftables);
4. bucket evenness: 10,000 random sources over 16 buckets per hash mode,
   counted by the kernel's own per-bucket counters (max / mean);
5. CPU seconds per hour for 16 instances monitored every 10 s.
"""

import argparse
import json
import os
import random
import resource
import socket
import statistics
import struct
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
OCF_ROOT = "/usr/lib/ocf"
IPADDR2 = OCF_ROOT + "/resource.d/heartbeat/IPaddr2"
CLUSTERIP = OCF_ROOT + "/resource.d/custom/clusterip"
VIP, NODE_IP, PREFIX = "198.18.0.100", "198.18.0.11", 16
NS = "cipbench%d" % (os.getpid() % 100000)
PATH = "/usr/sbin:/usr/bin:/sbin:/bin"


def sh(*argv, **kw):
    return subprocess.run(argv, check=True, capture_output=True, text=True, **kw)


def in_ns(*argv):
    return sh("ip", "netns", "exec", NS, *argv)


class Namespace:
    """One node namespace: eth0 (veth) with the node's address; peer 'wire' for traffic."""

    def __enter__(self):
        sh("ip", "netns", "add", NS)
        sh("ip", "-n", NS, "link", "set", "lo", "up")
        sh("ip", "-n", NS, "link", "add", "eth0", "type", "veth", "peer", "name", "wire")
        for dev in ("eth0", "wire"):
            sh("ip", "-n", NS, "link", "set", dev, "up")
        sh("ip", "-n", NS, "addr", "add", "%s/%d" % (NODE_IP, PREFIX), "dev", "eth0")
        os.makedirs("/tmp/%s/rsctmp" % NS, exist_ok=True)
        return self

    def __exit__(self, *exc):
        subprocess.run(["ip", "netns", "del", NS], check=False)
        subprocess.run(["rm", "-rf", "/tmp/%s" % NS], check=False)


def agent_env(extra):
    env = {"PATH": PATH, "OCF_ROOT": OCF_ROOT, "HA_RSCTMP": "/tmp/%s/rsctmp" % NS,
           "OCF_RESOURCE_INSTANCE": "bench", "OCF_RESKEY_ip": VIP,
           "OCF_RESKEY_cidr_netmask": str(PREFIX), "OCF_RESKEY_nic": "eth0"}
    env.update(extra)
    return env


class Agent:
    """Runs one agent's actions inside the namespace; times them from inside it."""

    def __init__(self, name, path, extra=None):
        self.name, self.path, self.extra = name, path, extra or {}

    def run(self, action, env_extra=None, expect=None):
        env = agent_env(dict(self.extra, **(env_extra or {})))
        argv = ["ip", "netns", "exec", NS, "/usr/bin/env", "-i",
                *("%s=%s" % kv for kv in env.items()), sys.executable, "-I",
                os.path.join(HERE, "timed.py"), self.path, action]
        out = sh(*argv).stdout.split()
        seconds, cpu, rc = float(out[0]), float(out[1]), int(out[2])
        if expect is not None and rc != expect:
            raise SystemExit("%s %s returned %d, expected %d" % (self.name, action, rc, expect))
        return seconds, cpu


def medians(samples):
    return statistics.median(samples) * 1000


def alternate(agents, measure, rounds):
    """{agent name: [samples]}, the agents taking turns each round."""
    found = {a.name: [] for a in agents}
    for _ in range(rounds):
        for agent in agents:
            found[agent.name].append(measure(agent))
    return found


def row(label, results, names):
    a, b = (medians(results[n]) for n in names)
    return "%-34s %9.1f %9.1f %7.2f" % (label, a, b, a / b)


def table_plain(rounds):
    ours = Agent("clusterip", CLUSTERIP)
    theirs = Agent("IPaddr2", IPADDR2)
    agents = [ours, theirs]
    lines = ["%-34s %9s %9s %7s" % ("plain mode, host kernel (ms)", "clusterip", "IPaddr2",
                                    "ratio")]

    def start_stop(agent):
        start = agent.run("start", expect=0)[0]
        stop = agent.run("stop", expect=0)[0]
        return start, stop
    pairs = alternate(agents, start_stop, rounds)
    lines.append(row("start", {n: [p[0] for p in v] for n, v in pairs.items()},
                     ("clusterip", "IPaddr2")))
    lines.append(row("stop", {n: [p[1] for p in v] for n, v in pairs.items()},
                     ("clusterip", "IPaddr2")))
    stopped = alternate(agents, lambda a: a.run("monitor", expect=7)[0], rounds)
    lines.append(row("monitor, stopped", stopped, ("clusterip", "IPaddr2")))
    probe = alternate(agents, lambda a: a.run(
        "monitor", {"OCF_RESKEY_CRM_meta_interval": "0"}, expect=7)[0], rounds)
    lines.append(row("probe (interval 0), nothing here", probe, ("clusterip", "IPaddr2")))
    running = {}
    cpu = {}
    for agent in agents:
        agent.run("start", expect=0)
        samples = [agent.run("monitor", {"OCF_RESKEY_CRM_meta_interval": "10000"}, expect=0)
                   for _ in range(rounds)]
        running[agent.name] = [s[0] for s in samples]
        cpu[agent.name] = [s[1] for s in samples]
        agent.run("stop", expect=0)
    lines.append(row("monitor, running", running, ("clusterip", "IPaddr2")))
    return lines, running, cpu


def load_unrelated_rules(count):
    rules = "".join("add rule ip benchfill input ip saddr 10.%d.%d.%d drop\n"
                    % (i >> 16 & 255, i >> 8 & 255, i & 255) for i in range(count))
    script = ("add table ip benchfill\n"
              "add chain ip benchfill input { type filter hook input priority 0; }\n" + rules)
    subprocess.run(["ip", "netns", "exec", NS, "nft", "-f", "-"], input=script, text=True,
                   check=True)


def table_rules(rounds, plain_running):
    clone = {"OCF_RESKEY_CRM_meta_clone": "0", "OCF_RESKEY_CRM_meta_clone_max": "16",
             "OCF_RESKEY_CRM_meta_globally_unique": "true", "OCF_RESKEY_backend": "nft"}
    ours = Agent("clusterip", CLUSTERIP, clone)
    ours.run("start", expect=0)
    before = [ours.run("monitor", expect=0)[0] for _ in range(rounds)]
    load_unrelated_rules(10000)
    after = [ours.run("monitor", expect=0)[0] for _ in range(rounds)]
    theirs = Agent("IPaddr2", IPADDR2)
    theirs.run("start", expect=0)
    theirs_after = [theirs.run("monitor", expect=0)[0] for _ in range(rounds)]
    theirs.run("stop", expect=0)
    in_ns("nft", "delete", "table", "ip", "benchfill")
    move = bucket_move_times()
    ours.run("stop", expect=0)
    b, a = medians(before), medians(after)
    return [
        "%-46s %9s" % ("cloned clusterip (nft), 16 buckets (ms)", "median"),
        "%-46s %9.1f" % ("monitor, no other rules", b),
        "%-46s %9.1f   (%.2f x without)" % ("monitor, 10,000 unrelated nft rules", a, a / b),
        "%-46s %9.1f" % ("IPaddr2 monitor, 10,000 unrelated rules", medians(theirs_after)),
        "%-46s %9.3f" % ("one bucket move inside an action (add+delete)/2", move),
    ]


def bucket_move_times(count=500):
    """Median ms of one element added to / deleted from the owned set, in-process."""
    code = (
        "import sys, time, statistics\n"
        "sys.path.insert(0, %r)\n"
        "from clusterip import params\n"
        "from clusterip.backends import nft\n"
        "p = params.parse({'OCF_RESKEY_ip': %r, 'OCF_RESKEY_CRM_meta_clone': '0',"
        " 'OCF_RESKEY_CRM_meta_clone_max': '16', 'OCF_RESKEY_CRM_meta_globally_unique': '1'})\n"
        "b = nft.BACKEND; t = []\n"
        "for i in range(%d):\n"
        "    s = time.perf_counter(); b.add_bucket(p, 9); b.remove_bucket(p, 9)\n"
        "    t.append((time.perf_counter() - s) / 2)\n"
        "print(statistics.median(t) * 1000)\n" % (os.path.join(REPO, "lib"), VIP, count))
    return float(in_ns(interpreter(), "-c", code).stdout)


def interpreter():
    with open(CLUSTERIP) as f:
        return f.readline()[2:].split()[0]


def evenness(sources=10000, buckets=16):
    """max/mean of the kernel's per-bucket counters for random sources, per hash mode."""
    results = {}
    for mode in ("sourceip", "sourceip-sourceport", "sourceip-sourceport-destport"):
        agent = Agent("clusterip", CLUSTERIP, {
            "OCF_RESKEY_CRM_meta_clone": "0", "OCF_RESKEY_CRM_meta_clone_max": str(buckets),
            "OCF_RESKEY_CRM_meta_globally_unique": "true", "OCF_RESKEY_backend": "nft",
            "OCF_RESKEY_hashmode": mode})
        agent.run("start", expect=0)
        mac = json.loads(in_ns(interpreter(), "-m", "clusterip.cli", "status", "--json").stdout
                         )["node"][0]["clustermac"]
        in_ns(sys.executable, "-I", os.path.join(HERE, "sprinkle.py"), "wire", mac, VIP,
              str(sources))
        counts = [c["packets"] for c in json.loads(in_ns(
            interpreter(), "-m", "clusterip.cli", "status", "--json").stdout
        )["node"][0]["counters"].values()]
        agent.run("stop", expect=0)
        mean = sum(counts) / len(counts)
        results[mode] = (max(counts) / mean, min(counts) / mean, sum(counts))
    return ["%-34s %9s %9s %9s" % ("evenness, 10,000 sources / 16 buckets", "max/mean",
                                   "min/mean", "packets")] + [
        "%-34s %9.3f %9.3f %9d" % (mode, hi, lo, total)
        for mode, (hi, lo, total) in results.items()]


def cpu_per_hour(cpu):
    calls = 16 * 3600 / 10
    return ["%-34s %9s %9s %7s" % ("CPU s/hour, 16 instances, 10 s", "clusterip", "IPaddr2",
                                   "ratio"),
            "%-34s %9.1f %9.1f %7.2f" % (
                "monitor (user+sys of the process)", statistics.median(cpu["clusterip"]) * calls,
                statistics.median(cpu["IPaddr2"]) * calls,
                statistics.median(cpu["clusterip"]) / statistics.median(cpu["IPaddr2"]))]


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=30)
    args = parser.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("benchmark: run as root (it creates a network namespace)")
    with Namespace():
        plain, running, cpu = table_plain(args.rounds)
        sections = [plain, table_rules(args.rounds, running), evenness(), cpu_per_hour(cpu)]
    print("\nclusterip benchmark, %s, %d rounds per figure, medians\n" % (
        time.strftime("%Y-%m-%d"), args.rounds))
    print("\n\n".join("\n".join(s) for s in sections))


if __name__ == "__main__":
    main()
