"""What the guard (firewall_guard) costs: a start and stop with it on and off,
and the guard process itself (memory, CPU while nothing happens).

    guard_cost.py [--rounds N] [--agent PATH] [--idle SECONDS]

A cloned nft instance in a node namespace of its own, measured as
benchmark.py measures (measure.py: the clean environment Pacemaker gives an
agent, timed from inside the namespace, the two settings taking turns, medians).
Then one instance is left running with the guard for --idle seconds, and the
guard's VmRSS, RssAnon and CPU time are read from /proc/<pid>.  --agent names
the agent (default: the installed one).  Run as root; about a minute.
"""

import argparse
import os
import sys
import time

from measure import CLUSTERIP, VIP, Agent, Namespace, alternate, median_ms

NS = "%sgrd%d" % (os.environ.get("CLUSTERIP_TEST_NS_PREFIX", "cip"), os.getpid() % 100000)
CLONED = {"OCF_RESKEY_CRM_meta_clone": "0", "OCF_RESKEY_CRM_meta_clone_max": "3",
          "OCF_RESKEY_CRM_meta_globally_unique": "true", "OCF_RESKEY_backend": "nft"}
SETTINGS = (("firewall_guard=true (default)", {}),
            ("firewall_guard=false", {"OCF_RESKEY_firewall_guard": "false"}))


def guard_process(ns):
    """(pid, {field: kB}) of the guard its handshake file names."""
    with open(os.path.join(ns.rsctmp, "clusterip-%s.guard" % VIP)) as f:
        pid = int(f.read())
    with open("/proc/%d/status" % pid) as f:
        memory = {line.split(":")[0]: int(line.split()[1]) for line in f
                  if line.startswith(("VmRSS", "RssAnon", "RssFile"))}
    return pid, memory


def cpu_seconds(pid):
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=21)
    parser.add_argument("--agent", default=CLUSTERIP)
    parser.add_argument("--idle", type=float, default=60.0)
    args = parser.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("guard_cost: run as root (it creates a network namespace)")
    with Namespace(NS) as ns:
        agents = [Agent(name, args.agent, ns, VIP, dict(CLONED, **more))
                  for name, more in SETTINGS]

        def start_stop(agent):
            return agent.run("start", expect=0)[0], agent.run("stop", expect=0)[0]

        found = alternate(agents, start_stop, args.rounds)
        agents[0].run("start", expect=0)
        time.sleep(1.0)  # the guard's own start-up is not idle time
        pid, memory = guard_process(ns)
        before = cpu_seconds(pid)
        time.sleep(args.idle)
        used = cpu_seconds(pid) - before
        agents[0].run("stop", expect=0)
    print("start and stop of a cloned nft instance, medians of %d runs (ms)\n" % args.rounds)
    print("  %-30s %8s %8s" % ("setting", "start", "stop"))
    for name, _ in SETTINGS:
        print("  %-30s %8.1f %8.1f" % (name, median_ms([p[0] for p in found[name]]),
                                       median_ms([p[1] for p in found[name]])))
    print("\nthe guard: VmRSS %d kB (RssAnon %d kB, RssFile %d kB); %.3f s of CPU in %.0f s "
          "idle" % (memory["VmRSS"], memory["RssAnon"], memory["RssFile"], used, args.idle))
    return 0


if __name__ == "__main__":
    sys.exit(main())
