"""A throw-away Ethernet segment built from network namespaces, the agent run in it.

Like :mod:`oracle`, which reads what the nodes' kernels hold, this module
imports nothing from the project but the provider name (where the agent is
installed): the agent is run as Pacemaker runs it (a clean environment,
``OCF_RESKEY_*``), traffic comes from helper processes.

Topology (all in 198.18.0.0/16, the RFC 2544 benchmark range, so nothing can
collide with a real network; with ``ipv6=True`` also in 2001:db8::/64, the
IPv6 documentation prefix)::

    <prefix>sw      bridge br0 (multicast snooping off: frames to a multicast
                    MAC are flooded to every port, as a switch floods the
                    CLUSTERIP cluster MAC)
      |-- pn0 ==== eth0 in <prefix>n0   198.18.0.11/16
      |-- pn1 ==== eth0 in <prefix>n1   198.18.0.12/16
      |-- ...
      `-- pcl ==== eth0 in <prefix>cl   198.18.0.2/16 + 198.18.1.1 .. 198.18.1.K

    with ipv6=True: nodes 2001:db8::11, ::12 ..; client 2001:db8::2 and its
    sources 2001:db8::1:1 .. 2001:db8::1:K instead of 198.18.1.x (all /64,
    nodad: no Duplicate Address Detection delay).

With ``routed=True`` the client sits behind a router instead (issue #16:
clients of a VIP are usually not on its segment)::

    <prefix>sw  bridge br0
      |-- pn0, pn1, ... (the nodes, as above; routes to 198.19.0.0/16 and
      |                  2001:db8:1::/64 via the router)
      `-- prt ==== eth0 in <prefix>rt   198.18.0.1/16, 2001:db8::1/64
                   eth1 in <prefix>rt   198.19.0.1/16, 2001:db8:1::1/64
                     ==== eth0 in <prefix>cl   198.19.0.2/16 + 198.19.1.1 ..
                                               (2001:db8:1::2 + 2001:db8:1::1:1 ..)

The router forwards (only it) and, with ``rfc1812=True`` (the default),
behaves as RFC 1812 3.3.2 asks of a router and as routers of the Cisco class
do: it does not believe an ARP packet or a Neighbour Discovery message that
claims a multicast link-layer address for a unicast IP address.  Linux as a
router would believe it; :data:`ROUTER_RULESET` (a table ``rfc1812`` in the
router's namespace) drops such packets and counts them.

Safety: nothing is created in the root namespace.  Every veth pair is created
*inside* the switch namespace with its peer placed straight into the target
namespace, so no interface ever exists in the root namespace, not even for a
moment.  Teardown kills the processes this lab spawned (by PID) and deletes
its namespaces, also when the body of the ``with`` block failed.
"""

import json
import os
import select
import shlex
import shutil
import subprocess
import sys
import time

from clusterip import PROVIDER

SUBNET_PREFIXLEN = 16
CLIENT_ADDRESS = "198.18.0.2"
SUBNET6_PREFIXLEN = 64
CLIENT_ADDRESS6 = "2001:db8::2"
# routed=True: the router's legs and the client's subnet beyond it.
ROUTER_ADDRESS, ROUTER_ADDRESS6 = "198.18.0.1", "2001:db8::1"
ROUTED_CLIENT_ADDRESS, ROUTED_CLIENT_ADDRESS6 = "198.19.0.2", "2001:db8:1::2"
ROUTER_CLIENT_SIDE, ROUTER_CLIENT_SIDE6 = "198.19.0.1", "2001:db8:1::1"
ROUTED_SUBNET, ROUTED_SUBNET6 = "198.19.0.0/16", "2001:db8:1::/64"
# RFC 1812 3.3.2 in nft, for the router namespace.  ARP (Ethernet/IPv4): the
# sender hardware address starts at byte 8 of the ARP header, its first octet's
# low bit is the group bit.  Neighbour Solicitation/Advertisement: 24 bytes of
# ICMPv6 header and target, then (as Linux sends them) the source (1) or
# target (2) link-layer address option: type, length, MAC at byte 26.
ROUTER_RULESET = """\
table arp rfc1812 {
    counter dropped { }
    chain input {
        type filter hook input priority 0; policy accept;
        arp htype 1 arp hlen 6 @nh,64,8 & 0x01 == 0x01 counter name "dropped" drop
    }
}
table ip6 rfc1812 {
    counter dropped { }
    chain input {
        type filter hook input priority 0; policy accept;
        icmpv6 type { nd-neighbor-solicit, nd-neighbor-advert } @th,192,8 { 1, 2 } \
@th,208,8 & 0x01 == 0x01 counter name "dropped" drop
    }
}
"""
# The clean environment Pacemaker's executor gives an agent (plus what we add).
AGENT_PATH = "/usr/sbin:/usr/bin:/sbin:/bin"
OCF_ROOT = "/usr/lib/ocf"
DEFAULT_AGENT = "%s/resource.d/%s/clusterip" % (OCF_ROOT, PROVIDER)  # make install
HELPERS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "helpers")


def node_address(index):
    """The fixed (non-VIP) address of node ``index``: 198.18.0.11, .12, ..."""
    return "198.18.0.%d" % (11 + index)


def node_address6(index):
    """The fixed IPv6 address of node ``index``: 2001:db8::11, ::12, ..."""
    return "2001:db8::%x" % (0x11 + index)


def client_source(number, ipv6=False, routed=False):
    """Extra client source ``number`` (1-based): 198.18.1.1 .. 198.18.1.254, 198.18.2.1 ..
    or, for IPv6, 2001:db8::1:1, 2001:db8::1:2 ..; behind the router
    (``routed``) 198.19.1.1 .. and 2001:db8:1::1:1 .."""
    if number < 1:
        raise ValueError("client source numbers start at 1")
    if ipv6:
        return "2001:db8:%s:1:%x" % ("1:" if routed else "", number)
    return "198.%d.%d.%d" % (19 if routed else 18, 1 + (number - 1) // 254,
                             1 + (number - 1) % 254)


def _with_prefix(address):
    """"a/len" for ip addr add: the lab's subnet of the address's family."""
    return "%s/%d" % (address, SUBNET6_PREFIXLEN if ":" in address else SUBNET_PREFIXLEN)


def agent_command():
    """The agent as an argv list: $CLUSTERIP_AGENT (shell words) or the installed agent."""
    return shlex.split(os.environ.get("CLUSTERIP_AGENT", DEFAULT_AGENT))


def agent_problem():
    """Why the agent cannot be run (a sentence), or None when it looks runnable.

    Checked up front so a missing agent fails the tests with one clear message
    instead of hundreds of confusing exit codes.
    """
    argv = agent_command()
    if not argv:
        return "CLUSTERIP_AGENT is set but empty"
    if shutil.which(argv[0], path=AGENT_PATH if "/" not in argv[0] else None) is None:
        return "agent command %r is not an executable file (set CLUSTERIP_AGENT or install " \
               "the agent at %s)" % (argv[0], DEFAULT_AGENT)
    for word in argv[1:]:
        # Words like "/work/main/ocf/clusterip" must exist; "VAR=/x" (for env) need not.
        if word.startswith("/") and not os.path.exists(word):
            return "agent command word %r does not exist" % word
    return None


def not_root_problem():
    if os.geteuid() != 0:
        return "these tests create network namespaces and must run as root (euid is %d)" \
               % os.geteuid()
    return None


def default_prefix(tmp_root="/tmp"):
    """A name prefix unique to this process and unused by any namespace or directory.

    It starts with $CLUSTERIP_TEST_NS_PREFIX (default "cip"), so that runs by
    different people on one machine can be told apart.  A run killed before
    its teardown leaves its namespaces behind; a later process with the same
    PID modulo 100000 then takes the next letter instead of failing or, worse,
    deleting them.
    """
    existing = list_namespaces()
    base = "%s%d" % (os.environ.get("CLUSTERIP_TEST_NS_PREFIX", "cip"), os.getpid() % 100000)
    for suffix in ["-"] + ["%s-" % c for c in "abcdefghijklmnopqrstuvwxyz"]:
        prefix = base + suffix
        if not any(name.startswith(prefix) for name in existing) \
                and not os.path.exists(os.path.join(tmp_root, prefix)):
            return prefix
    raise LabError("no free namespace prefix for %s*" % base)


def list_namespaces():
    result = subprocess.run(["ip", "-j", "netns", "list"], capture_output=True, text=True,
                            timeout=30, check=True)
    return [entry["name"] for entry in json.loads(result.stdout or "[]")]


class LabError(Exception):
    pass


def _check(result, argv):
    if result.returncode != 0:
        raise LabError("command failed (rc=%d): %s\nstdout: %s\nstderr: %s" % (
            result.returncode, shlex.join(argv), result.stdout.strip(), result.stderr.strip()))
    return result


class Lab:
    """N node namespaces and a client on one bridged segment; use as a context manager.

    Namespaces are addressed by short name ("n0", "n1", ..., "client", "switch")
    or by full name.  ``timeout_scale`` stretches every timeout, for slow
    kernels (user-mode Linux runs each system call much slower).
    """

    def __init__(self, nodes=3, sources=200, prefix=None, tmp_root="/tmp", timeout_scale=1.0,
                 ipv6=False, routed=False, rfc1812=True):
        self.prefix = prefix or default_prefix(tmp_root)
        self.node_names = ["n%d" % i for i in range(nodes)]
        self.ipv6 = ipv6
        self.routed = routed
        self.rfc1812 = routed and rfc1812
        self.sources = [client_source(k, ipv6, routed) for k in range(1, sources + 1)]
        self.timeout_scale = timeout_scale
        self.directory = os.path.join(tmp_root, self.prefix)
        self._short = {"switch": self.prefix + "sw", "client": self.prefix + "cl",
                       "router": self.prefix + "rt"}
        self._short.update({name: self.prefix + name for name in self.node_names})
        self._created = []  # namespaces to delete, in creation order
        self._processes = []  # (Popen, log path) of spawn()ed processes
        self._responders = {}  # node -> log path of its one-shot responder (see accepted())
        self._own_directory = False  # only ever delete what we created

    # -- life cycle -----------------------------------------------------

    def __enter__(self):
        try:
            self.setup()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc):
        self.close()
        return False

    def setup(self):
        taken = [n for n in list_namespaces() if n.startswith(self.prefix)]
        if taken:
            raise LabError("namespaces with prefix %r already exist: %s" % (self.prefix, taken))
        os.makedirs(self.directory)  # fails if it exists: it may be another run's
        self._own_directory = True
        # World-readable: ocf-tester runs "meta-data" as nobody, maybe via a wrapper here.
        os.chmod(self.directory, 0o755)

        switch = self._add_namespace("switch")
        self._ip(switch, "link", "add", "br0", "type", "bridge", "mcast_snooping", "0")
        self._ip(switch, "link", "set", "br0", "up")

        for index, node in enumerate(self.node_names):
            self._attach(node, "p" + node, [node_address(index)]
                         + ([node_address6(index)] if self.ipv6 else []))
            os.makedirs(self.rsctmp(node), mode=0o755)

        if self.routed:
            client = self._add_router_and_client()
        else:
            client = self._attach("client", "pcl", [CLIENT_ADDRESS]
                                  + ([CLIENT_ADDRESS6] if self.ipv6 else []))
        if self.ipv6:
            self._wait_for_ipv6_links()
        if self.sources:
            # One "ip -batch" instead of hundreds of processes: ~20 ms instead of seconds.
            batch = "".join("addr add %s dev eth0%s\n" % (_with_prefix(a),
                                                          " nodad" if self.ipv6 else "")
                            for a in self.sources)
            _check(subprocess.run(["ip", "-n", client, "-batch", "-"], input=batch,
                                  capture_output=True, text=True, timeout=self._t(60)),
                   ["ip", "-n", client, "-batch", "-"])

    def _add_namespace(self, short, forwarding=False):
        name = self._short[short]
        _check(subprocess.run(["ip", "netns", "add", name], capture_output=True, text=True,
                              timeout=self._t(30)), ["ip", "netns", "add", name])
        self._created.append(name)
        self._ip(name, "link", "set", "lo", "up")
        # No IPv6 unless asked for: its router solicitations, DAD and MLD reports
        # are noise on the segment.  No forwarding: a new namespace inherits the
        # root namespace's IPv4 settings, and a node that lost the VIP must drop,
        # not route, its traffic.
        off = "0" if self.ipv6 else "1"
        forward = "1" if forwarding else "0"
        self.run(name, "sysctl", "-q", "-w", "net.ipv6.conf.all.disable_ipv6=" + off,
                 "net.ipv6.conf.default.disable_ipv6=" + off, "net.ipv4.ip_forward=" + forward,
                 "net.ipv6.conf.all.forwarding=" + forward, check=False)
        return name

    def _attach(self, short, port, addresses, namespace=None):
        """A namespace (a new one unless ``namespace``) whose eth0 is plugged
        into the bridge as ``port``."""
        name = namespace or self._add_namespace(short)
        switch = self._short["switch"]
        # Created inside the switch namespace, peer placed directly into `name`.
        self._ip(switch, "link", "add", port, "type", "veth", "peer", "name", "eth0",
                 "netns", name)
        self._ip(switch, "link", "set", port, "master", "br0", "up")
        for address in addresses:
            self._ip(name, "addr", "add", _with_prefix(address), "dev", "eth0",
                     *(["nodad"] if ":" in address else []))
        self._ip(name, "link", "set", "eth0", "up")
        return name

    def _add_router_and_client(self):
        """The router on the segment, the client on its far leg (see the module's
        docstring); returns the client's namespace."""
        router = self._add_namespace("router", forwarding=True)
        # No Duplicate Address Detection on the router's links: while its
        # link-local address is tentative it forwards no IPv6 (seen: 1-2 s).
        self.run(router, "sysctl", "-q", "-w", "net.ipv6.conf.default.accept_dad=0",
                 "net.ipv6.conf.all.accept_dad=0", check=False)
        self._attach("router", "prt", [ROUTER_ADDRESS] + ([ROUTER_ADDRESS6] if self.ipv6 else []),
                     namespace=router)
        client = self._add_namespace("client")
        self._ip(router, "link", "add", "eth1", "type", "veth", "peer", "name", "eth0",
                 "netns", client)
        for ns, dev, addresses in (
                (router, "eth1", [ROUTER_CLIENT_SIDE, ROUTER_CLIENT_SIDE6]),
                (client, "eth0", [ROUTED_CLIENT_ADDRESS, ROUTED_CLIENT_ADDRESS6])):
            for address in addresses[:2 if self.ipv6 else 1]:
                self._ip(ns, "addr", "add", _with_prefix(address), "dev", dev,
                         *(["nodad"] if ":" in address else []))
            self._ip(ns, "link", "set", dev, "up")
        self._ip(client, "route", "add", "default", "via", ROUTER_CLIENT_SIDE)
        for node in self.node_names:
            self._ip(self.ns(node), "route", "add", ROUTED_SUBNET, "via", ROUTER_ADDRESS)
        if self.ipv6:
            self._ip(client, "-6", "route", "add", "default", "via", ROUTER_CLIENT_SIDE6)
            for node in self.node_names:
                self._ip(self.ns(node), "-6", "route", "add", ROUTED_SUBNET6, "via",
                         ROUTER_ADDRESS6)
        if self.rfc1812:
            self.run(router, "nft", "-f", "-", input=ROUTER_RULESET)
        return client

    def router_dropped(self):
        """{family: packets} the router's RFC 1812 filter dropped so far."""
        out = self.run("router", "nft", "-j", "list", "counters").stdout
        return {item["counter"]["family"]: item["counter"]["packets"]
                for item in json.loads(out)["nftables"] if "counter" in item
                and item["counter"]["table"] == "rfc1812"}

    def _wait_for_ipv6_links(self):
        """Until every eth0 is up for IPv6: its link-local address exists.

        A veth's carrier comes up asynchronously after ``ip link set up``
        (linkwatch); only then does IPv6 join the multicast groups of the
        addresses already added (their solicited-node MACs) and make the
        link-local one.  A caller's "multicast MACs before the agent ran"
        read earlier would miss them and find them joined later.
        """
        deadline = time.monotonic() + self._t(15)
        links = [(short, "eth0") for short in self.node_names + ["client"]]
        if self.routed:
            links += [("router", "eth0"), ("router", "eth1")]
        for short, dev in links:
            while not self._link_local(short, dev):
                if time.monotonic() > deadline:
                    raise LabError("%s: %s has no usable IPv6 link-local address" % (short, dev))
                time.sleep(0.05)

    def _link_local(self, short, dev):
        """``dev``'s IPv6 link-local address exists (and, on the router, which
        does no DAD, is not tentative)."""
        out = self._ip(self.ns(short), "-j", "-6", "addr", "show", "dev", dev, "scope",
                       "link").stdout
        found = [info for link in json.loads(out or "[]") for info in link.get("addr_info", [])
                 if info.get("local")]
        return bool(found) and (short != "router" or not any(i.get("tentative") for i in found))

    def _ip(self, ns, *args):
        argv = ["ip", "-n", ns, *args]
        return _check(subprocess.run(argv, capture_output=True, text=True,
                                     timeout=self._t(30)), argv)

    def close(self):
        """Kill our processes (by PID), delete our namespaces and directory. Idempotent."""
        for process, _ in self._processes:
            if process.poll() is None:
                process.terminate()
        for process, _ in self._processes:
            try:
                process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=5)
        self._processes = []
        errors = []
        for name in reversed(self._created):
            result = subprocess.run(["ip", "netns", "del", name], capture_output=True, text=True,
                                    timeout=30)
            if result.returncode != 0:
                errors.append("%s: %s" % (name, result.stderr.strip()))
        self._created = []
        if self._own_directory:
            shutil.rmtree(self.directory, ignore_errors=True)
            self._own_directory = False
        if errors:
            raise LabError("could not delete namespaces: %s" % "; ".join(errors))

    # -- running things ---------------------------------------------------

    def ns(self, name):
        """The full namespace name for a short name ("n0", "client") or a full one."""
        return self._short.get(name, name)

    def _t(self, seconds):
        return seconds * self.timeout_scale

    def rsctmp(self, node):
        """The node's private HA_RSCTMP (as /run/resource-agents is on a real node)."""
        return os.path.join(self.directory, node, "rsctmp")

    def run(self, ns, *argv, env=None, check=True, input=None, timeout=60):
        """Run argv inside namespace ``ns``; a CompletedProcess with text stdout/stderr."""
        full = ["ip", "netns", "exec", self.ns(ns), *argv]
        result = subprocess.run(full, env=env, input=input, capture_output=True, text=True,
                                timeout=self._t(timeout))
        return _check(result, full) if check else result

    def spawn(self, ns, *argv, env=None, log=None):
        """Start argv in the background inside ``ns``; stdout+stderr go to ``log``.

        The process is killed (by its PID) at teardown.  ``ip netns exec``
        execs the command, so the PID is the command's own.
        """
        log = log or os.path.join(self.directory, "spawn-%d.log" % len(self._processes))
        with open(log, "w") as out:
            process = subprocess.Popen(["ip", "netns", "exec", self.ns(ns), *argv], env=env,
                                       stdin=subprocess.DEVNULL, stdout=out,
                                       stderr=subprocess.STDOUT, start_new_session=True)
        self._processes.append((process, log))
        return process

    def agent_env(self, node, instance, params, meta=None, extra_env=None):
        """The environment of one agent call, as Pacemaker builds it (no inherited variables).

        ``extra_env`` adds variables Pacemaker would not set (test hooks, PYTHONPATH).
        """
        env = {"PATH": AGENT_PATH, "OCF_ROOT": OCF_ROOT, "HA_RSCTMP": self.rsctmp(node),
               "OCF_RESOURCE_INSTANCE": instance}
        env.update(("OCF_RESKEY_%s" % k, str(v)) for k, v in params.items())
        env.update(("OCF_RESKEY_CRM_meta_%s" % k, str(v)) for k, v in (meta or {}).items())
        env.update(extra_env or {})
        return env

    def agent(self, ns, action, params, meta=None, instance="vip", timeout=60, extra_env=None):
        """Run the agent's ``action`` in node ``ns``: (exit code, stdout, stderr)."""
        env = self.agent_env(ns, instance, params, meta, extra_env)
        argv = ["env", "-i"] + ["%s=%s" % item for item in env.items()]
        result = self.run(ns, *argv, *agent_command(), action, check=False, timeout=timeout)
        return result.returncode, result.stdout, result.stderr

    def agent_executable(self):
        """One executable path for the agent, for tools that take a path (ocf-tester).

        A multi-word $CLUSTERIP_AGENT gets a wrapper script in the lab's
        directory (world-readable: ocf-tester also runs it as nobody).
        """
        argv = agent_command()
        if len(argv) == 1:
            return argv[0]
        wrapper = os.path.join(self.directory, "agent")
        with open(wrapper, "w") as handle:
            handle.write("#!/bin/sh\nexec %s \"$@\"\n" % shlex.join(argv))
        os.chmod(wrapper, 0o755)
        return wrapper

    # -- traffic -------------------------------------------------------------

    def start_responder(self, node, port, lifetime=600, hold=False, bind="0.0.0.0"):
        """Start the TCP responder in ``node`` (answers its name) and wait until it listens.

        ``hold``: it keeps each connection and answers every line (for :meth:`hold`).
        ``bind``: "::" for IPv6 clients.
        """
        log = os.path.join(self.directory, node, "responder-%d.log" % port)
        process = self.spawn(node, sys.executable, "-I", os.path.join(HELPERS, "responder.py"),
                             node, str(port), str(int(self._t(lifetime))),
                             *(["--hold"] if hold else []), "--bind", bind, log=log)
        deadline = time.monotonic() + self._t(15)
        while time.monotonic() < deadline:
            with open(log) as handle:
                if "ready" in handle.read().split("\n"):
                    if not hold:
                        self._responders[node] = log
                    return process
            if process.poll() is not None:
                break
            time.sleep(0.05)
        with open(log) as handle:
            raise LabError("responder in %s did not start: %s" % (node, handle.read()))

    def accepted(self, node):
        """[(src, sport)] the node's responder accepted so far, in order."""
        with open(self._responders[node]) as handle:
            return [split_pair(line.split()[1]) for line in handle
                    if line.startswith("accepted ")]

    def connect(self, vip, port, pairs, timeout=2.0, workers=32, retries=1):
        """Connect to vip:port once from each (source, sport); {"src:sport": answer}.

        An answer is the responder's node name or "ERROR:<reason>"; keys are
        "src:sport" as the client prints them (see :func:`split_pair`).  A failed
        connection is retried (``retries`` times) before it counts as an
        error, because the very first packets may race neighbour resolution.
        Returns (answers, first_errors): first_errors maps every pair that
        needed a retry to its first error, so callers can report it.
        """
        answers = self._client(vip, port, pairs, timeout, workers)
        first_errors = {k: v for k, v in answers.items() if v.startswith("ERROR:")}
        for _ in range(retries):
            failed = [pair for pair in pairs
                      if answers["%s:%d" % tuple(pair)].startswith("ERROR:")]
            if not failed:
                break
            answers.update(self._client(vip, port, failed, timeout, workers))
        return answers, first_errors

    def hold(self, vip, port, pairs, timeout=2.0):
        """One long-lived connection to vip:port per (source, sport), held open by
        helpers/holder.py in the client namespace (killed at teardown at the latest).
        Returns (HeldConnections, {"src:sport": greeting node or "ERROR:<kind>"})."""
        log = os.path.join(self.directory, "holder-%d.log" % len(self._processes))
        argv = [sys.executable, "-I", os.path.join(HELPERS, "holder.py"), vip, str(port),
                "--timeout", str(self._t(timeout)), "--lifetime", str(int(self._t(600)))]
        with open(log, "w") as errors:
            process = subprocess.Popen(["ip", "netns", "exec", self.ns("client"), *argv],
                                       stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                       stderr=errors, text=True, start_new_session=True)
        self._processes.append((process, log))
        held = HeldConnections(process, log, self._t(timeout + 30))
        return held, held.ask(json.dumps([list(pair) for pair in pairs]))

    def unplug(self, node):
        """Take ``node``'s port on the bridge down: from outside, a dead host."""
        self._ip(self._short["switch"], "link", "set", "p" + node, "down")

    def _client(self, vip, port, pairs, timeout, workers):
        # Worst case every connection times out: rounds of `workers` in parallel.
        deadline = 10 + timeout * (len(pairs) / max(1, workers) + 2)
        argv = [sys.executable, "-I", os.path.join(HELPERS, "client.py"), vip, str(port),
                "--timeout", str(self._t(timeout)), "--workers", str(workers),
                "--deadline", str(self._t(deadline))]
        # The client bounds itself; the outer limit (scaled by run) only catches a hang.
        result = self.run("client", *argv, input=json.dumps([list(p) for p in pairs]),
                          timeout=deadline + 30)
        return json.loads(result.stdout)


class HeldConnections:
    """The holder process of :meth:`Lab.hold`: one JSON line answers each command."""

    def __init__(self, process, log, wait):
        self.process = process
        self.log = log
        self.wait = wait  # what one command may take: the holder bounds each connection

    def ask(self, command):
        self.process.stdin.write(command + "\n")
        self.process.stdin.flush()
        if not select.select([self.process.stdout], [], [], self.wait)[0]:
            raise LabError("holder did not answer %r within %.0f s" % (command[:40], self.wait))
        line = self.process.stdout.readline()
        if not line:
            with open(self.log) as handle:
                raise LabError("holder exited: %s" % handle.read())
        return json.loads(line)

    def ping(self):
        """Send a line on every open connection: {"src:sport": node or "ERROR:<kind>"}."""
        return self.ask("ping")

    def close(self):
        """Close every connection (EOF on the holder's stdin) and wait for it to exit."""
        self.process.stdin.close()
        self.process.wait(timeout=self.wait)


def split_pair(text):
    """"198.18.1.7:21000" -> ("198.18.1.7", 21000)."""
    source, port = text.rsplit(":", 1)
    return source, int(port)


def is_multicast_mac(mac):
    return mac is not None and int(mac.split(":")[0], 16) & 1 == 1
