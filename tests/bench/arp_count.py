"""What arp_count costs a start: the default (5 announcements, 200 ms apart)
against arp_count=1 (start's own announcement only), plain and cloned (nft).

    arp_count.py [--rounds N] [--agent PATH]

Start's first announcement is sent inside start either way; the other four
come from a detached background sender after the lock is released, so the
figures should differ by the fork alone.  Measured as benchmark.py measures
(measure.py: a node namespace of its own, the clean environment Pacemaker
gives an agent, timed from inside the namespace, the two settings taking
turns each round, medians).  --agent names the agent (default: the installed
one); each start is followed by a stop, which also ends the repeats.
Run as root; a few seconds per 10 rounds.
"""

import argparse
import os
import sys

from measure import CLUSTERIP, VIP, Agent, Namespace, alternate, median_ms

NS = "%sarp%d" % (os.environ.get("CLUSTERIP_TEST_NS_PREFIX", "cip"), os.getpid() % 100000)
CLONED = {"OCF_RESKEY_CRM_meta_clone": "0", "OCF_RESKEY_CRM_meta_clone_max": "3",
          "OCF_RESKEY_CRM_meta_globally_unique": "true", "OCF_RESKEY_backend": "nft"}
SETTINGS = (("arp_count=5 (default)", {}), ("arp_count=1", {"OCF_RESKEY_arp_count": "1"}))


def measure(ns, path, rounds):
    """[(mode, {setting: (start ms, stop ms)})]"""
    rows = []
    for mode, extra in (("plain", {}), ("cloned, nft", CLONED)):
        agents = [Agent(setting, path, ns, VIP, dict(extra, **more)) for setting, more in SETTINGS]

        def start_stop(agent):
            return agent.run("start", expect=0)[0], agent.run("stop", expect=0)[0]

        found = alternate(agents, start_stop, rounds)
        rows.append((mode, {name: (median_ms([p[0] for p in pairs]),
                                   median_ms([p[1] for p in pairs]))
                            for name, pairs in found.items()}))
    return rows


def table(rows, rounds):
    lines = ["start and stop, medians of %d runs (ms)" % rounds, "",
             "  %-12s %-22s %8s %8s" % ("mode", "setting", "start", "stop")]
    for mode, by_setting in rows:
        for setting, _ in SETTINGS:
            start, stop = by_setting[setting]
            lines.append("  %-12s %-22s %8.1f %8.1f" % (mode, setting, start, stop))
    return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=21)
    parser.add_argument("--agent", default=CLUSTERIP)
    args = parser.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("arp_count: run as root (it creates a network namespace)")
    with Namespace(NS) as ns:
        rows = measure(ns, args.agent, args.rounds)
    print(table(rows, args.rounds))
    return 0


if __name__ == "__main__":
    sys.exit(main())
