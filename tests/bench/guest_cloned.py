"""Cloned mode under Linux 6.1: clusterip (backend=clusterip) against IPaddr2's
clone mode, both on the iptables CLUSTERIP target.

Runs INSIDE a user-mode-linux guest, which benchmark.py boots through
tests/legacy/uml.py (the host kernel has no CLUSTERIP; 6.1 is the last
kernel family with it); the guest sees the host's files, so both agents are
there.  Everything happens in a network namespace created here, inside the
guest.  Prints one line, ``RESULT_MARKER <json>``, for benchmark.py.

Both agents run clone instance 0 of 4 (bucket / --local-node 1), hash mode
sourceip-sourceport (IPaddr2's default) and an explicit cluster MAC: IPaddr2
otherwise derives one with three extra processes on every call, so giving it
one is the faster setup for IPaddr2.  IPaddr2 picks iptables-legacy itself
(iptables-nft cannot use CLUSTERIP); like every iptables-legacy call here it
loads ipt_CLUSTERIP through modprobe, which finds the modules uml.py binds
at /lib/modules/<version>.  Also measured: the running monitor with 10,000
unrelated iptables-legacy rules in the filter table versus none (the
clusterip backend reads that table through python-iptables), and beside it
the kernel's copy of that table alone (IPT_SO_GET_ENTRIES, what any reader
of the table pays), without and with the rules.

    python3 guest_cloned.py ROUNDS
"""

import json
import sys

from measure import (
    CLUSTERIP,
    IPADDR2,
    THEIR_VIP,
    VIP,
    Agent,
    Namespace,
    compare_actions,
    monitor_with_rules,
    unrelated_sources,
)

RESULT_MARKER = "@@guest-cloned-result"
NAMESPACE = "cipbg"  # the guest is ours alone: a fixed name cannot collide
CLONE = {"OCF_RESKEY_CRM_meta_clone": "0", "OCF_RESKEY_CRM_meta_clone_max": "4",
         "OCF_RESKEY_CRM_meta_clone_node_max": "4",
         "OCF_RESKEY_CRM_meta_globally_unique": "true"}
HASHMODE = "sourceip-sourceport"
RULES = 10000
CHAIN = "BENCHFILL"


def load_rules(ns):
    """RULES drop rules for unrelated sources, in a chain INPUT jumps to (one restore)."""
    script = "*filter\n:%s - [0:0]\n-A INPUT -j %s\n%sCOMMIT\n" % (CHAIN, CHAIN, "".join(
        "-A %s -s %s/32 -j DROP\n" % (CHAIN, source) for source in unrelated_sources(RULES)))
    ns.run("iptables-legacy-restore", "-w", "--noflush", input=script)


# The kernel's copy alone, in-process: the two getsockopts the monitor's
# fingerprint makes (clusterip.kernel.iptables), median of the rounds.
TABLE_COPY = """import statistics, sys, time
from clusterip.kernel import iptables
times = []
for _ in range(int(sys.argv[1])):
    began = time.perf_counter()
    iptables.table_buffers("filter")
    times.append(time.perf_counter() - began)
print(statistics.median(times) * 1000)
"""


def table_copy_ms(ns, rounds):
    return float(ns.run(sys.executable, "-c", TABLE_COPY, str(rounds)).stdout)


def unload_rules(ns):
    for argv in (("-D", "INPUT", "-j", CHAIN), ("-F", CHAIN), ("-X", CHAIN)):
        ns.run("iptables-legacy", "-w", *argv)


def main():
    rounds = int(sys.argv[1])
    with Namespace(NAMESPACE) as ns:
        ours = Agent("clusterip", CLUSTERIP, ns, VIP, dict(
            CLONE, OCF_RESKEY_backend="clusterip", OCF_RESKEY_hashmode=HASHMODE,
            OCF_RESKEY_clustermac="03:c1:c6:12:00:64"))
        theirs = Agent("IPaddr2", IPADDR2, ns, THEIR_VIP, dict(
            CLONE, OCF_RESKEY_clusterip_hash=HASHMODE, OCF_RESKEY_mac="03:c1:c6:12:00:65"))
        agents = [ours, theirs]
        actions, _ = compare_actions(agents, rounds)
        copies = []

        def load():
            copies.append(table_copy_ms(ns, rounds * 4))
            load_rules(ns)
            copies.append(table_copy_ms(ns, rounds * 4))

        rules = monitor_with_rules(agents, load, lambda: unload_rules(ns), rounds)
    print(RESULT_MARKER, json.dumps({
        "actions": actions,
        "rules": rules,
        "table_copy": copies}))


if __name__ == "__main__":
    main()
