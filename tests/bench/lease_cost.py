"""What owner_lease costs the monitor: a running instance's recurring
monitor with the lease (it renews its bucket: a write) and without.

    lease_cost.py [--rounds N] [--agent PATH] [--checkout DIR] [--lease S]

Two cloned nft VIPs in one node namespace, one with ``owner_lease`` and one
without, both started; their recurring monitors (interval 10 s, the
examples') take turns, timed as benchmark.py times agents (measure.py: the
clean environment Pacemaker gives an agent, wall and CPU time from inside
the namespace, medians).  --agent names the agent (default: the installed
one); --checkout DIR instead runs DIR's agent the way the installed one runs
(``python3 -IS`` of /opt/clusterip, DIR/lib first on sys.path), so that a
branch can be measured without installing it.  Run as root; ~30 s.
"""

import argparse
import os
import statistics
import sys
import tempfile

from measure import CLUSTERIP, RECURRING, THEIR_VIP, VIP, Agent, Namespace, alternate

NS = "%slse%d" % (os.environ.get("CLUSTERIP_TEST_NS_PREFIX", "cip"), os.getpid() % 100000)
CLONED = {"OCF_RESKEY_CRM_meta_clone": "0", "OCF_RESKEY_CRM_meta_clone_max": "3",
          "OCF_RESKEY_CRM_meta_globally_unique": "true", "OCF_RESKEY_backend": "nft",
          "OCF_RESKEY_CRM_meta_timeout": "20000"}


def installed_like(checkout, directory):
    """A copy of the checkout's agent started as the installed one is (-IS),
    importing the checkout's library."""
    with open(os.path.join(checkout, "ocf", "clusterip")) as f:
        lines = f.read().split("\n")
    lines[0] = "#!/opt/clusterip/bin/python3 -IS"
    at = lines.index("import sys") + 1
    lines.insert(at, "sys.path.insert(0, %r)" % os.path.join(os.path.abspath(checkout), "lib"))
    path = os.path.join(directory, "clusterip")
    with open(path, "w") as f:
        f.write("\n".join(lines))
    os.chmod(path, 0o755)
    return path


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=31)
    parser.add_argument("--agent", default=CLUSTERIP)
    parser.add_argument("--checkout")
    parser.add_argument("--lease", type=int, default=60)
    args = parser.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("lease_cost: run as root (it creates a network namespace)")
    with tempfile.TemporaryDirectory() as scratch, Namespace(NS) as ns:
        path = installed_like(args.checkout, scratch) if args.checkout else args.agent
        os.chmod(scratch, 0o755)
        agents = [Agent("owner_lease=%d" % args.lease, path, ns, VIP,
                        dict(CLONED, OCF_RESKEY_owner_lease=str(args.lease))),
                  Agent("owner_lease=0 (default)", path, ns, THEIR_VIP, CLONED)]
        for agent in agents:
            agent.run("start", expect=0)
            agent.run("monitor", RECURRING, expect=0)  # the full check, remembered
        found = alternate(agents, lambda a: a.run("monitor", RECURRING, expect=0), args.rounds)
        for agent in agents:
            agent.run("stop", expect=0)
    print("recurring monitor of a running cloned nft instance, %d runs each, "
          "alternating (ms)\n" % args.rounds)
    print("  %-26s %8s %8s %8s %8s" % ("setting", "wall", "min", "max", "CPU"))
    for agent in agents:
        wall = [s[0] * 1000 for s in found[agent.name]]
        cpu = [s[1] * 1000 for s in found[agent.name]]
        print("  %-26s %8.1f %8.1f %8.1f %8.1f" % (agent.name, statistics.median(wall),
                                                  min(wall), max(wall),
                                                  statistics.median(cpu)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
