"""The measuring half of the benchmark, shared by benchmark.py (on the host) and
guest_cloned.py (inside the Linux 6.1 guest), so both kernels are measured in
exactly the same way: a node namespace created here, each agent run with the
clean environment Pacemaker gives it and timed from inside the namespace
(timed.py), the agents taking turns so that drift hits both alike, medians.
Standard library only, plus the provider name from the checkout's lib/ (the
guest runs it with the test venv's interpreter and PYTHONPATH=lib).
"""

import os
import statistics
import subprocess
import sys

from clusterip import PROVIDER

HERE = os.path.dirname(os.path.abspath(__file__))
OCF_ROOT = "/usr/lib/ocf"
IPADDR2 = OCF_ROOT + "/resource.d/heartbeat/IPaddr2"
CLUSTERIP = OCF_ROOT + "/resource.d/%s/clusterip" % PROVIDER
# Each agent gets its own address, so both can run at once (the monitors with
# and without unrelated rules alternate between two running agents) and one
# agent's stop can never remove what the other one started.
VIP, THEIR_VIP, NODE_IP, PREFIX = "198.18.0.100", "198.18.0.101", "198.18.0.11", 16
PATH = "/usr/sbin:/usr/bin:/sbin:/bin"  # what Pacemaker's executor gives an agent
# A recurring monitor carries its interval; without one both agents take the
# call for a probe (IPaddr2's ocf_is_probe treats a missing interval as 0).
RECURRING = {"OCF_RESKEY_CRM_meta_interval": "10000"}
PROBE = {"OCF_RESKEY_CRM_meta_interval": "0"}
# (label, what is timed): the rows of the agents-side-by-side tables, in order.
ACTIONS = ("start", "stop", "monitor, stopped", "probe (interval 0), nothing here",
           "monitor, running")


def sh(*argv, **kw):
    return subprocess.run(argv, check=True, capture_output=True, text=True, **kw)


class Namespace:
    """One node namespace: eth0 (veth) with the node's address, its peer 'wire'
    for traffic; a private HA_RSCTMP.  Removed on exit, also after a failure."""

    def __init__(self, name):
        self.name = name
        self.directory = "/tmp/%s" % name
        self.rsctmp = self.directory + "/rsctmp"

    def run(self, *argv, **kw):
        return sh("ip", "netns", "exec", self.name, *argv, **kw)

    def __enter__(self):
        sh("ip", "netns", "add", self.name)
        try:
            for argv in (("link", "set", "lo", "up"),
                         ("link", "add", "eth0", "type", "veth", "peer", "name", "wire"),
                         ("link", "set", "eth0", "up"), ("link", "set", "wire", "up"),
                         ("addr", "add", "%s/%d" % (NODE_IP, PREFIX), "dev", "eth0")):
                sh("ip", "-n", self.name, *argv)
            os.makedirs(self.rsctmp, exist_ok=True)
        except BaseException:
            self.__exit__()
            raise
        return self

    def __exit__(self, *exc):
        subprocess.run(["ip", "netns", "del", self.name], check=False)
        subprocess.run(["rm", "-rf", self.directory], check=False)


class Agent:
    """One agent (path) configured for one address; runs and times its actions."""

    def __init__(self, name, path, ns, vip, extra=None):
        self.name, self.path, self.ns = name, path, ns
        self.env = {"PATH": PATH, "OCF_ROOT": OCF_ROOT, "HA_RSCTMP": ns.rsctmp,
                    "OCF_RESOURCE_INSTANCE": "bench-%s" % name, "OCF_RESKEY_ip": vip,
                    "OCF_RESKEY_cidr_netmask": str(PREFIX), "OCF_RESKEY_nic": "eth0"}
        self.env.update(extra or {})

    def run(self, action, env_extra=None, expect=None):
        """(wall seconds, CPU seconds) of one action, measured inside the namespace."""
        env = dict(self.env, **(env_extra or {}))
        out = self.ns.run("/usr/bin/env", "-i", *("%s=%s" % kv for kv in env.items()),
                          sys.executable, "-I", os.path.join(HERE, "timed.py"), self.path,
                          action).stdout.split()
        seconds, cpu, rc = float(out[0]), float(out[1]), int(out[2])
        if expect is not None and rc != expect:
            raise SystemExit("%s %s returned %d, expected %d" % (self.name, action, rc, expect))
        return seconds, cpu


def median_ms(samples):
    return statistics.median(samples) * 1000


def alternate(agents, measure, rounds):
    """{agent name: [samples]}, the agents taking turns each round."""
    found = {a.name: [] for a in agents}
    for _ in range(rounds):
        for agent in agents:
            found[agent.name].append(measure(agent))
    return found


def compare_actions(agents, rounds):
    """The ACTIONS of each agent, alternately.

    Returns ({label: {agent name: median ms}}, {agent name: [CPU seconds of
    a running monitor]}).
    """
    def start_stop(agent):
        return agent.run("start", expect=0)[0], agent.run("stop", expect=0)[0]
    pairs = alternate(agents, start_stop, rounds)
    found = {"start": {n: [p[0] for p in v] for n, v in pairs.items()},
             "stop": {n: [p[1] for p in v] for n, v in pairs.items()}}
    found["monitor, stopped"] = alternate(
        agents, lambda a: a.run("monitor", RECURRING, expect=7)[0], rounds)
    found["probe (interval 0), nothing here"] = alternate(
        agents, lambda a: a.run("monitor", PROBE, expect=7)[0], rounds)
    for agent in agents:
        agent.run("start", expect=0)
    try:
        running = alternate(agents, lambda a: a.run("monitor", RECURRING, expect=0), rounds)
    finally:
        for agent in agents:
            agent.run("stop", expect=0)
    found["monitor, running"] = {n: [s[0] for s in v] for n, v in running.items()}
    return ({label: {name: median_ms(samples) for name, samples in by_agent.items()}
             for label, by_agent in found.items()},
            {n: [s[1] for s in v] for n, v in running.items()})


def unrelated_sources(count):
    """``count`` distinct source addresses in 10.0.0.0/8, for rules that match nothing here."""
    return ["10.%d.%d.%d" % (i >> 16 & 255, i >> 8 & 255, i & 255) for i in range(count)]


def monitor_with_rules(agents, load, unload, rounds):
    """Running monitors of every agent without, then with, unrelated firewall rules.

    ``load``/``unload``: callables adding and removing the rules.  Returns
    {agent name: (median ms without, median ms with)}.
    """
    for agent in agents:
        agent.run("start", expect=0)
    try:
        def monitor(agent):
            return agent.run("monitor", RECURRING, expect=0)[0]
        without = alternate(agents, monitor, rounds)
        load()
        try:
            loaded = alternate(agents, monitor, rounds)
        finally:
            unload()
    finally:
        for agent in agents:
            agent.run("stop", expect=0)
    return {a.name: (median_ms(without[a.name]), median_ms(loaded[a.name])) for a in agents}
