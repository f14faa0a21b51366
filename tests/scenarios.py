"""Data-plane scenarios, written once and run against every kernel backend.

The netns tier runs :func:`run_dataplane` with backend "nft" on the host
kernel; the legacy tier runs the very same code with backend "clusterip"
inside a Linux 6.1 user-mode kernel (tests/netns/test_dataplane.py, run
inside the guest).  By hand: ``PYTHONPATH=lib python3 tests/scenarios.py
dataplane BACKEND HASHMODE`` (lib/ for netlab's provider name) prints a JSON
report and exits 1 on a failed check, under ``python -O`` too.  Every
check is explicit (:func:`check`: no ``assert``, which ``python -O`` would
strip); the kernel's state is read with independent tools through
:mod:`oracle`, never with the project's code.

The scenario, per hash mode: three nodes, clone instance i started on node i
(bucket i+1 of 3).  A client makes connections from hundreds of fixed
(source address, source port) pairs; each must be answered by exactly one
node and every node must answer some.  Then instance 2 moves from n2 to n1,
as Pacemaker moves it when n2 fails, and the same pairs are replayed: those
n2 answered go to n1, all others to the same node as before.  Monitor/probe
exit codes are checked on the way, and at the end nothing may be left behind.
The same scenario runs over IPv6 (:data:`IPV6`, nft only): the client's
sources, the nodes and the VIP in 2001:db8::/64; and with a shared unicast
cluster MAC (``clustermac``, nft only, issue #16), also with the client
behind a router (``Lab(routed=True)``), where the switch must never learn
that MAC.
"""

import argparse
import collections
import json
import os
import sys
import time

import netlab
import oracle
from netlab import Lab, is_multicast_mac, split_pair

VIP = "198.18.0.100"
PREFIXLEN = 16
VIP6 = "2001:db8::100"
PREFIXLEN6 = 64
PORT = 8080
HASHMODES = ("sourceip", "sourceip-sourceport", "sourceip-sourceport-destport")
SOURCE_PORTS = (21000, 21001)  # below the ephemeral range: no clash with the client's own
NODES = 3
# The backend the shared tests exercise: "nft" on the host kernel (netns tier),
# "clusterip" inside the 6.1 user-mode kernel (legacy tier), which is slower.
BACKEND_UNDER_TEST = os.environ.get("CLUSTERIP_TEST_BACKEND", "nft")
TIMEOUT_SCALE = float(os.environ.get("CLUSTERIP_TEST_TIMEOUT_SCALE", "1"))
OCF_SUCCESS, OCF_NOT_RUNNING = 0, 7
# More than 10% of connections needing a retry means the lab, not luck, is broken.
MAX_RETRIED_FRACTION = 0.10


class Family(collections.namedtuple("Family", "vip prefixlen ipv6 bind")):
    """The address family a scenario runs in: the VIP, its prefix, and the
    responders' listening address."""

    def solicited_node_mac(self):
        """The MAC of the VIP's solicited-node group (IPv6: joined by the kernel
        with the address, RFC 4291 2.7.1 + RFC 2464 7), or None."""
        if not self.ipv6:
            return None
        import ipaddress

        low = ipaddress.IPv6Address(self.vip).packed[-3:]
        return "33:33:ff:" + ":".join("%02x" % b for b in low)


IPV4 = Family(VIP, PREFIXLEN, False, "0.0.0.0")
IPV6 = Family(VIP6, PREFIXLEN6, True, "::")


class CheckFailed(AssertionError):
    """A check of the scenario failed (an AssertionError, so pytest reports it as one)."""


def check(condition, message, *args):
    """Fail with ``message % args`` unless ``condition``: an explicit check, which
    ``python -O`` does not strip as it strips ``assert``."""
    if not condition:
        raise CheckFailed(message % args if args else message)


def agent_params(backend=BACKEND_UNDER_TEST, hashmode="sourceip", vip=VIP, **overrides):
    """The agent's parameters for ``vip`` on the lab's eth0 (``overrides`` replace or add)."""
    return dict({"ip": vip, "cidr_netmask": oracle.prefixlen(vip), "nic": "eth0",
                 "hashmode": hashmode, "backend": backend}, **overrides)


def clone_meta(instance, total=NODES, interval=0, timeout_ms=20000):
    """The meta-attributes Pacemaker hands clone instance ``instance`` of a unique clone."""
    return {"clone": instance, "clone_max": total, "clone_node_max": total,
            "globally_unique": "true", "timeout": timeout_ms, "interval": interval}


def assert_nft_lists(lab, what, node):
    """Every nft listing an administrator runs works on the node (by exit status)."""
    failed = oracle.nft_listing_failures(lab, node)
    check(not failed, "%s on %s: nft listings failed: %s", what, node, failed)


def assert_clean(lab, node, backend, baseline_macs, family=IPV4, clustermac=None,
                 baseline_promiscuity=None):
    """Nothing of the VIP is left on ``node``: address, backend state, multicast MACs
    other than before (``baseline_macs``), unicast filter entries, promiscuity
    other than before."""
    leftovers = oracle.leftovers(lab, node, backend, [family.vip], baseline_macs, clustermac,
                                 baseline_promiscuity)
    check(not leftovers, "%s still has %s", node, leftovers)


OWN_CONNECTIONS = 40


def start_server(lab, port, ipv6=False):
    """A responder in the client namespace: the server the nodes connect to."""
    os.makedirs(os.path.join(lab.directory, "client"), exist_ok=True)
    lab.start_responder("client", port, bind="::" if ipv6 else "0.0.0.0")


def own_connections(lab, node, server, port):
    """{source port: answer} of the node's own connections to server:port, the
    kernel choosing the source address (bound to the wildcard address and
    OWN_CONNECTIONS fixed ports, so that their replies hit every bucket in a
    hash mode with the destination port)."""
    wildcard = "::" if ":" in server else "0.0.0.0"
    pairs = [[wildcard, 41000 + k] for k in range(OWN_CONNECTIONS)]
    result = lab.run(node, sys.executable, "-I", os.path.join(netlab.HELPERS, "client.py"),
                     server, str(port), "--timeout", "2", "--workers", "10", "--deadline", "60",
                     input=json.dumps(pairs), timeout=90)
    return {key.rsplit(":", 1)[1]: answer for key, answer in json.loads(result.stdout).items()}


def assert_own_connections_work(lab, vip, server, port, nodes=None):
    """Every node's own connections to the server (started by :func:`start_server`)
    leave from an address of the node's own, never the cloned VIP, and connect
    (issue #13)."""
    for node in nodes or lab.node_names:
        source = oracle.source_address(lab, node, server)
        check(source != vip, "%s: ip route get %s chooses the VIP", node, server)
        answers = own_connections(lab, node, server, port)
        failed = {p: answer for p, answer in answers.items() if answer != "client"}
        check(not failed, "%s: %d of %d own connections to %s failed: %s", node, len(failed),
              OWN_CONNECTIONS, server, sorted(failed.items())[:5])
    check(vip not in {src for src, _ in lab.accepted("client")},
          "the server saw connections from the VIP %s", vip)


class Dataplane:
    """One run of the scenario in a lab with (at least) three nodes."""

    def __init__(self, lab, backend, hashmode, log=print, family=IPV4, clustermac=None):
        self.lab = lab
        self.backend = backend
        self.family = family
        self.params = agent_params(backend, hashmode, family.vip,
                                   **({"clustermac": clustermac} if clustermac else {}))
        self.hashmode = hashmode
        self.log = log
        self.baseline = {}  # node -> multicast MACs before the agent ran
        self.baseline_promiscuity = {}  # node -> eth0's promiscuity before the agent ran
        self.unicast = oracle.is_unicast_mac(clustermac)
        self.cluster_mac = clustermac
        self.report = {"backend": backend, "hashmode": hashmode, "rounds": [],
                       "ipv6": family.ipv6, "clustermac": clustermac, "routed": lab.routed}

    # -- agent calls with expected exit codes ---------------------------------

    def expect(self, node, action, instance, rc, interval=0):
        got, out, err = self.lab.agent(node, action, self.params,
                                       clone_meta(instance, interval=interval),
                                       instance="vip:%d" % instance)
        check(got == rc, "%s of instance %d on %s: exit %d, expected %d\nstdout: %s\n"
              "stderr: %s", action, instance, node, got, rc, out, err)
        if action != "monitor" and self.backend == "nft":
            assert_nft_lists(self.lab, "%s of instance %d" % (action, instance), node)

    def expect_monitor(self, node, instance, rc):
        """A recurring monitor when the instance should run, else a probe (interval 0)."""
        self.expect(node, "monitor", instance, rc, interval=10000 if rc == OCF_SUCCESS else 0)

    # -- kernel state, read with independent tools ---------------------------------

    def assert_serving(self, node, buckets):
        """``node`` holds the VIP (usable), its filter exactly once, owns exactly
        ``buckets`` and has joined the cluster MAC (one MAC, the same on every node)."""
        vip = self.family.vip
        state = oracle.vip_states(self.lab, node, [vip], self.backend,
                                  self.cluster_mac if self.unicast else None)[vip]
        problems = oracle.problems(state, buckets, self.backend)
        check(not problems, "%s serving buckets %s: %s", node, sorted(buckets), problems)
        # IPv6: the kernel joins the VIP's solicited-node group with the address.
        joined = oracle.multicast_macs(self.lab, node) - self.baseline[node] \
            - {self.family.solicited_node_mac()}
        if self.unicast:
            filtered = oracle.unicast_filter_macs(self.lab, node)
            check(not joined and filtered == {self.cluster_mac},
                  "%s should accept just the unicast MAC %s: joined %s, unicast filter %s",
                  node, self.cluster_mac, joined, filtered)
            return
        check(len(joined) == 1 and is_multicast_mac(next(iter(joined))),
              "%s should have joined one multicast MAC, joined %s", node, joined)
        if self.cluster_mac is None:
            self.cluster_mac = next(iter(joined))
        check(joined == {self.cluster_mac}, "%s joined %s, other nodes %s",
              node, joined, self.cluster_mac)

    def assert_clean(self, node):
        assert_clean(self.lab, node, self.backend, self.baseline[node], self.family,
                     self.cluster_mac if self.unicast else None,
                     self.baseline_promiscuity.get(node))

    def assert_client_resolves_the_cluster_mac(self):
        """The client (in a routed lab: the router, the VIP's neighbour) resolved
        the VIP to the cluster MAC."""
        neighbour = "router" if self.lab.routed else "client"
        mac = oracle.neighbour_mac(self.lab, neighbour, self.family.vip)
        check(mac == self.cluster_mac, "the %s resolved %s to %s, not the cluster MAC %s",
              neighbour, self.family.vip, mac, self.cluster_mac)

    def assert_switch_never_learnt_the_cluster_mac(self):
        """A shared unicast MAC works only while every switch floods it: no node
        may send a frame from it, so the bridge must never have learnt it."""
        if self.unicast:
            learnt = oracle.bridge_learned_macs(self.lab)
            check(self.cluster_mac not in learnt, "the switch learnt the cluster MAC %s "
                  "(a node sent a frame from it)", self.cluster_mac)

    # -- traffic -------------------------------------------------------------------

    def assert_every_bucket_counted(self, nodes):
        """Each node saw (and counted) packets of every bucket: all reach all nodes."""
        if self.backend != "nft":
            return  # CLUSTERIP keeps no per-bucket counters
        vip = self.family.vip
        family, table = oracle.filter_family(vip), oracle.table_name(vip)
        for node in nodes:
            counters = oracle.nft_counters(self.lab, node, family, table)
            idle = sorted(name for name, packets in counters.items() if packets == 0)
            check(len(counters) == NODES and not idle,
                  "%s: bucket counters %s, idle %s", node, counters, idle)

    def reload_from_listing(self, nodes):
        """Each node's ruleset flushed and loaded back from its own ``nft list
        ruleset``, as an administrator's backup and restore does (one
        transaction: ``flush ruleset`` and the listing in one file, so that the
        guard finds the tables complete when it looks); the monitor's
        remembered verdicts dropped, so that it checks the reloaded tables fully."""
        for node in nodes:
            text = self.lab.run(node, "nft", "list", "ruleset").stdout
            self.lab.run(node, "nft", "-f", "-", input="flush ruleset\n" + text)
            for name in os.listdir(self.lab.rsctmp(node)):
                if name.endswith(".checked"):
                    os.unlink(os.path.join(self.lab.rsctmp(node), name))

    def pairs(self):
        return [(source, port) for source in self.lab.sources for port in SOURCE_PORTS]

    def traffic_round(self, label, pairs):
        """Connect once per pair: {pair: node}; asserts one clean answer per pair."""
        nodes = self.lab.node_names[:NODES]
        marks = {node: len(self.lab.accepted(node)) for node in nodes}
        started = time.monotonic()
        answers, first_errors = self.lab.connect(self.family.vip, PORT, pairs)
        elapsed = time.monotonic() - started
        result = {split_pair(key): value for key, value in answers.items()}

        errors = {pair: answer for pair, answer in result.items() if answer not in nodes}
        counts = collections.Counter(result.values())
        self.report["rounds"].append({
            "round": label, "connections": len(pairs), "seconds": round(elapsed, 2),
            "per_node": dict(sorted(counts.items())), "retried": len(first_errors),
            "first_errors": dict(list(first_errors.items())[:5]),
            "errors": len(errors)})
        self.log("%s/%s %s: %d connections in %.2f s, per node %s, retried %d, errors %d" % (
            self.backend, self.hashmode, label, len(pairs), elapsed, dict(sorted(counts.items())),
            len(first_errors), len(errors)))
        check(not errors, "%s: %d of %d connections failed after a retry, e.g. %s",
              label, len(errors), len(pairs), dict(list(errors.items())[:5]))
        check(len(first_errors) <= MAX_RETRIED_FRACTION * len(pairs),
              "%s: %d connections needed a retry, e.g. %s",
              label, len(first_errors), dict(list(first_errors.items())[:5]))
        self.assert_switch_never_learnt_the_cluster_mac()

        # Server side: the node that answered a pair is the only one that accepted it.
        for node in nodes:
            logged = set(self.lab.accepted(node)[marks[node]:])
            expected = {pair for pair, answer in result.items() if answer == node}
            check(logged == expected,
                  "%s: %s accepted %d pairs it did not answer (e.g. %s) and missed %d (e.g. %s)",
                  label, node, len(logged - expected), sorted(logged - expected)[:3],
                  len(expected - logged), sorted(expected - logged)[:3])
        if self.hashmode == "sourceip":
            by_source = collections.defaultdict(set)
            for (source, _), node in result.items():
                by_source[source].add(node)
            split = {source: got for source, got in by_source.items() if len(got) > 1}
            check(not split, "sourceip mode split sources across nodes: %s",
                  dict(list(split.items())[:5]))
        return result

    # -- the scenario -----------------------------------------------------------------

    def start(self):
        """Responders, probes, then one instance per node, each checked serving."""
        lab = self.lab
        n0, n1, n2 = lab.node_names[:NODES]
        self.baseline = {node: oracle.multicast_macs(lab, node) for node in (n0, n1, n2)}
        self.baseline_promiscuity = {node: oracle.promiscuity(lab, node)
                                     for node in (n0, n1, n2)}
        for node in (n0, n1, n2):
            lab.start_responder(node, PORT, bind=self.family.bind)

        # Probes on clean nodes, then one instance per node.
        for index, node in enumerate((n0, n1, n2)):
            self.expect_monitor(node, index, OCF_NOT_RUNNING)
        for index, node in enumerate((n0, n1, n2)):
            self.expect(node, "start", index, OCF_SUCCESS)
        for index, node in enumerate((n0, n1, n2)):
            self.assert_serving(node, {index + 1})
            self.expect_monitor(node, index, OCF_SUCCESS)
        # Instance 2 is not running on n0, although the VIP and its rules are there.
        self.expect_monitor(n0, 2, OCF_NOT_RUNNING)

    def run(self):
        lab = self.lab
        n0, n1, n2 = lab.node_names[:NODES]
        self.start()

        # Warm the client's neighbour entry for the VIP (the answer does not matter).
        lab.run("client", "ping", "-c", "1", "-W", "1", self.family.vip, check=False)
        pairs = self.pairs()
        before = self.traffic_round("spread", pairs)
        check(set(before.values()) == {n0, n1, n2}, "not every node answered: %s",
              collections.Counter(before.values()))
        self.assert_client_resolves_the_cluster_mac()
        self.assert_every_bucket_counted((n0, n1, n2))
        if self.backend == "nft":
            # What nft lists loads back as tables the agent accepts and that
            # split the traffic the same way.
            self.reload_from_listing((n0, n1, n2))
            for index, node in enumerate((n0, n1, n2)):
                self.expect_monitor(node, index, OCF_SUCCESS)
            reloaded = self.traffic_round("reloaded", pairs)
            check(reloaded == before, "%d pairs moved after the reload",
                  sum(reloaded[pair] != before[pair] for pair in pairs))

        # Instance 2 moves from n2 to n1, as after a failure of n2.
        self.expect(n2, "stop", 2, OCF_SUCCESS)
        self.assert_clean(n2)  # n2's last instance: everything goes
        self.expect(n2, "stop", 2, OCF_SUCCESS)  # stopping a stopped instance succeeds
        self.expect_monitor(n2, 2, OCF_NOT_RUNNING)
        self.expect(n1, "start", 2, OCF_SUCCESS)
        self.expect(n1, "start", 2, OCF_SUCCESS)  # starting a started instance succeeds
        self.assert_serving(n1, {2, 3})
        self.assert_serving(n0, {1})
        self.expect_monitor(n0, 0, OCF_SUCCESS)
        self.expect_monitor(n1, 1, OCF_SUCCESS)
        self.expect_monitor(n1, 2, OCF_SUCCESS)
        self.expect_monitor(n0, 2, OCF_NOT_RUNNING)

        after = self.traffic_round("after-move", pairs)
        expected = {pair: (n1 if node == n2 else node) for pair, node in before.items()}
        moved = {pair: (expected[pair], after[pair]) for pair in pairs
                 if after[pair] != expected[pair]}
        check(not moved, "%d pairs answered by an unexpected node (expected, got): %s",
              len(moved), dict(list(moved.items())[:5]))
        # Still: the nodes' own solicitations from the VIP (IPv6) must not have
        # taught the client a node's MAC.
        self.assert_client_resolves_the_cluster_mac()

        # Stop everything; the last instance on a node removes the shared pieces.
        self.expect(n1, "stop", 1, OCF_SUCCESS)
        self.assert_serving(n1, {3})  # instance 2 still runs on n1
        self.expect_monitor(n1, 2, OCF_SUCCESS)
        self.expect_monitor(n1, 1, OCF_NOT_RUNNING)
        self.expect(n1, "stop", 2, OCF_SUCCESS)
        self.expect(n0, "stop", 0, OCF_SUCCESS)
        for node in (n0, n1, n2):
            self.assert_clean(node)
            for instance in range(NODES):
                self.expect_monitor(node, instance, OCF_NOT_RUNNING)
        return self.report


def run_dataplane(backend, hashmode, log=print, family=IPV4, clustermac=None, **lab_options):
    """Build a lab, run the scenario in it, tear the lab down; returns the report."""
    started = time.monotonic()
    with Lab(nodes=NODES, ipv6=family.ipv6, **lab_options) as lab:
        report = Dataplane(lab, backend, hashmode, log=log, family=family,
                           clustermac=clustermac).run()
    report["seconds"] = round(time.monotonic() - started, 2)
    return report


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("scenario", choices=["dataplane"])
    parser.add_argument("backend", choices=["clusterip", "nft"])
    parser.add_argument("hashmode", choices=HASHMODES)
    parser.add_argument("--prefix", help="namespace name prefix (default: per process)")
    parser.add_argument("--timeout-scale", type=float, default=1.0,
                        help="stretch every timeout (slow kernels such as user-mode Linux)")
    parser.add_argument("--ipv6", action="store_true", help="the IPv6 variant (nft only)")
    parser.add_argument("--routed", action="store_true",
                        help="the client behind an RFC 1812 router")
    parser.add_argument("--clustermac", help="e.g. a shared unicast MAC (nft only)")
    args = parser.parse_args(argv)
    try:
        report = run_dataplane(args.backend, args.hashmode, log=lambda line: print(
            line, file=sys.stderr), family=IPV6 if args.ipv6 else IPV4,
            clustermac=args.clustermac, prefix=args.prefix, timeout_scale=args.timeout_scale,
            routed=args.routed)
    except CheckFailed as failure:
        print(json.dumps({"ok": False, "failure": str(failure)}))
        return 1
    print(json.dumps(dict(report, ok=True)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
