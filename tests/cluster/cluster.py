"""A real three-node Pacemaker 2.1 + Corosync 3 cluster on one machine, in namespaces.

The cluster tier's harness.  It builds on :class:`netlab.Lab` (the switch
namespace with bridge br0, node namespaces n0..n2 with eth0 at
198.18.0.11-13/16 (``ipv6=True``: also 2001:db8::11-13/64), a client
namespace with hundreds of source addresses, TCP responders, independent
oracles) and turns every node namespace into a cluster node:

* **One "init" per node**, started as ``ip netns exec <ns> unshare --mount
  --uts --propagation private sh node-init.sh ...`` (see node-init.sh for
  the details).  Network namespace: the node's own eth0, addresses, nft
  tables and -- because libqb's IPC uses abstract unix sockets, which are per
  network namespace -- its own Corosync/Pacemaker IPC.  Mount namespace:
  private /run, /dev/shm (tmpfs, gone with the node like on a real host) and
  private copies of /etc/corosync, /var/lib/{corosync,pacemaker,heartbeat},
  /var/log and /root (bind mounts of directories under the lab directory,
  kept across a crash like a disk, readable by the harness afterwards).
  Without them the nodes would share one CIB and one /run, and would write
  into the host's /etc/corosync and /var/lib/pacemaker.  UTS namespace: the
  hostname is the node name.  The agent's ``HA_RSCTMP`` default
  (/run/resource-agents) thereby is per node, as on real hosts.
* **A clean environment** (``env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin``)
  for corosync, pacemakerd and every command run in a node: Pacemaker passes
  its own environment to the agents it runs, so the caller's (a virtualenv,
  PYTHONPATH, LANG, ...) would leak into every agent call and hide bugs that
  real nodes show.
* **A seeded CIB** with ``dc-deadtime=5s`` (``dc_deadtime=None`` keeps
  Pacemaker's 20 s): nodes that start together each wait dc-deadtime for a
  DC before electing one, so a fresh cluster is up in ~8 s instead of ~22 s.
  It plays no part in failover (a DC's death triggers an election at once).
  ``stonith-enabled=false`` is then set with crm, unless ``fencing=True``
  (below) gives the cluster a fence device.
* :meth:`Cluster.node_exec` runs a command inside a node (``nsenter -t
  <init pid> -m -u -n``): the node's mounts, hostname and network, so
  ``crm``, ``crm_mon``, ``crm_resource``, ``cibadmin`` talk to that node's
  daemons and see its files.
* :meth:`Cluster.kill_node` is a crash: SIGKILL of every process of the node
  *and* its switch port taken down.  Killed processes leave kernel state
  behind (the VIP, the nft tables, the owned buckets, the multicast
  membership); in a namespace that state keeps answering its bucket, so the
  survivor that takes the bucket over and the "dead" node would both answer
  and break each other's connections.  A dead host answers nothing: its link
  goes down.  (The same holds in production for a node whose cluster stack
  died but whose kernel lives -- which is why real clusters need fencing.)
* :meth:`Cluster.revive_node` is a reboot: the kernel state a reboot resets
  is removed (nft tables, VIP, multicast memberships, neighbour cache; the
  old /run tmpfs with HA_RSCTMP died with the old mount namespace), the link
  comes up, the init starts corosync and pacemakerd again, and the harness
  waits until the node is online.
* **A node of another Debian release** (``roots={node: root}``, a root of
  tests/roots.py): its init first makes that root the ``/`` of the node's
  mount namespace (roots.py's pivot_root recipe, with the checkout and the
  lab directory bound in), so the node runs that root's Corosync,
  Pacemaker, crmsh and agent on this kernel.  :meth:`Cluster.upgrade_node`
  is an admin's upgrade of one node: its cluster stack stopped cleanly,
  started again from another root with the same disk (/etc/corosync,
  /var/lib/pacemaker), the kernel untouched.
* **Fencing** (``fencing=True``): a power controller
  (:class:`PowerController`, a thread of the harness, like a BMC or a PDU)
  listens on ``<lab directory>/power.sock``, which every node sees at the
  same path; the test suite's fence agent ``fence_lab`` (an RHCS-style
  ``fence_*`` program) appears in each node's /usr/sbin (node-init.sh: a
  read-only overlay of the lab's fence-agents directory over the real one,
  in the node's private mount namespace) and asks the controller to power a
  node off (:meth:`Cluster.power_off`: every process killed, link down) or
  on (:meth:`Cluster.boot_node`: a reboot's kernel reset, link up, the init
  started; not waited for, as a BMC's power-on returns before the OS is
  up).  The cluster gets the stonith resource ``fence-lab`` and
  ``stonith-enabled=true``; every request is kept in
  :attr:`PowerController.events` with its time.
* **A private install** (``private_install=True``): the places ``make
  install`` writes (:data:`INSTALL_DIRS`: the venv, the OCF provider
  directory, /usr/local/sbin) become writable overlays over the host's in
  each node's mount namespace (node-init.sh), their upper layers under the
  node's directory, so that ``make install`` run in a node
  (:meth:`Cluster.node_exec`) installs there only, as on a real host.
* Resources come from crm files loaded **verbatim** with ``crm configure
  load update <file>``: one file is one transaction, so a primitive and its
  clone are created together (a primitive created alone would be started
  unclonedly first).
* Teardown kills every process of every node namespace by PID (``ip netns
  pids``; SIGTERM, then SIGKILL), then lets the Lab delete the namespaces
  and directory.  It runs on failures and on Ctrl-C (and SIGTERM, turned
  into KeyboardInterrupt while a cluster exists); if the test process dies
  without teardown, each node's init notices its owner is gone and kills its
  node's processes (the namespaces then remain to be deleted by hand:
  ``ip netns list | grep ^cip``).

Safety: nothing here touches the root network namespace or the host's
/etc/corosync, /var/lib/pacemaker, /var/log; no daemon runs outside a node's
namespaces; only processes in namespaces this harness created are killed.
"""

import contextlib
import grp
import json
import os
import pwd
import re
import shutil
import signal
import socketserver
import statistics
import subprocess
import sys
import threading
import time
import xml.etree.ElementTree as ET

import netlab  # shared with the netns tier (tests/ is on the path: see pyproject.toml)
import oracle
import roots

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))

CRM_EXAMPLES = os.path.join(REPO, "crm-examples")
NODE_INIT = os.path.join(HERE, "node-init.sh")
CLEAN_PATH = netlab.AGENT_PATH
CLEAN_ENV = {"PATH": CLEAN_PATH}
VIP = "198.18.0.100"
BACKEND = "nft"  # the host kernel's (no CLUSTERIP after Linux 6.2)
CLUSTER_TOOLS = ("corosync", "corosync-cfgtool", "pacemakerd", "crm", "crm_mon",
                 "crm_resource", "cibadmin", "nsenter", "unshare", "nft", "ip")
DUMMY_AGENT = "/usr/lib/ocf/resource.d/pacemaker/Dummy"
FENCE_AGENT = os.path.join(HERE, "fence_lab")
FENCE_DEVICE = "fence-lab"
# A power-on boots the node this much later.  A real machine takes far
# longer; a namespace node's stack is back in ~0.5 s, and a new Pacemaker
# that joins before the fencer has told the survivors the fence succeeded
# learns of its own fencing and stops itself for good ("We were allegedly
# just fenced", fence-reaction=stop; Pacemaker PR #836 names the race).
BOOT_DELAY = 2.0
# Where `make install` writes with the Makefile's defaults: private per node
# with private_install=True.
INSTALL_DIRS = ("/opt/clusterip", os.path.dirname(netlab.DEFAULT_AGENT), "/usr/local/sbin")


# A fresh CIB with one cluster property; no .sig file: Pacemaker accepts a
# hand-written cib.xml without a digest.
SEED_CIB = """<cib crm_feature_set="3.16.1" validate-with="pacemaker-3.9" epoch="1" num_updates="0"
     admin_epoch="0">
  <configuration>
    <crm_config>
      <cluster_property_set id="cib-bootstrap-options">
        <nvpair id="cib-bootstrap-options-dc-deadtime" name="dc-deadtime" value="%s"/>
      </cluster_property_set>
    </crm_config>
    <nodes/>
    <resources/>
    <constraints/>
  </configuration>
  <status/>
</cib>
"""


# pacemaker-execd: "web-ip:0 start (call 28, PID 29224) exited with status 0 (execution time 415ms)"
_FINISHED = re.compile(r"info: (?P<rsc>[\w.-]+):\d+ (?P<op>start|stop|monitor) \(call \d+, "
                       r"PID \d+\) exited with status \d+ \(execution time (?P<ms>\d+)ms")


class ClusterError(Exception):
    pass


def cluster_problem():
    """Why a cluster cannot be built here (a sentence), or None."""
    missing = [tool for tool in CLUSTER_TOOLS if shutil.which(tool, path=CLEAN_PATH) is None]
    if missing:
        return "missing cluster tools %s (apt-get install pacemaker corosync crmsh " \
               "util-linux nftables iproute2)" % ", ".join(missing)
    # Pacemaker runs ocf:custom:clusterip from its OCF directory, whatever
    # $CLUSTERIP_AGENT says for the other tiers: the installed agent is tested.
    if not os.access(netlab.DEFAULT_AGENT, os.X_OK):
        return "the agent is not installed at %s (run `make install`)" % netlab.DEFAULT_AGENT
    if not os.path.exists(DUMMY_AGENT):
        return "%s is missing (package pacemaker)" % DUMMY_AGENT
    try:
        pwd.getpwnam("hacluster")
    except KeyError:
        return "user hacluster is missing (package pacemaker)"
    try:
        grp.getgrnam("haclient")
    except KeyError:
        return "group haclient is missing (package pacemaker)"
    return None


def corosync_conf(nodes, token=None, cluster_name="cipc-test"):
    """corosync.conf for ``nodes`` (names n0..): knet over each node's eth0 address.

    ``token`` None keeps Corosync's default timings (token 3000 ms plus
    650 ms per node beyond two, consensus 1.2 x token); an int sets
    ``totem.token`` in ms.  No crypto: no authkey to distribute, and the
    segment exists only inside this test.
    """
    token_line = "    token: %d\n" % token if token else ""
    node_blocks = "".join(
        "    node {\n        ring0_addr: %s\n        name: %s\n        nodeid: %d\n    }\n"
        % (netlab.node_address(index), name, index + 1) for index, name in enumerate(nodes))
    return ("totem {\n    version: 2\n    cluster_name: %s\n    transport: knet\n"
            "    crypto_cipher: none\n    crypto_hash: none\n%s}\n"
            "nodelist {\n%s}\n"
            "quorum {\n    provider: corosync_votequorum\n%s}\n"
            "logging {\n    to_logfile: yes\n    logfile: /var/log/cluster/corosync.log\n"
            "    to_stderr: no\n    to_syslog: no\n    timestamp: hires\n}\n"
            % (cluster_name, token_line, node_blocks,
               # Two nodes: the survivor keeps quorum (what two-node clusters configure).
               "    two_node: 1\n" if len(nodes) == 2 else ""))


def netns_pids(ns):
    """PIDs of every process in network namespace ``ns`` (``ip netns pids``)."""
    result = subprocess.run(["ip", "netns", "pids", ns], capture_output=True, text=True,
                            timeout=30)
    if result.returncode != 0:
        return set()
    return {int(word) for word in result.stdout.split() if word.isdigit()} - {os.getpid()}


def _signal_all(pids, sig):
    for pid in pids:
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass


def kill_netns_processes(ns, term_grace=0.0, timeout=15.0):
    """End every process of ``ns`` by PID: SIGTERM and ``term_grace`` s, then SIGKILL.

    Loops (bounded) because a process may fork while we kill: it ends when
    the namespace holds no process.  Returns the PIDs seen.
    """
    seen = set()
    if term_grace > 0:
        pids = netns_pids(ns)
        seen |= pids
        _signal_all(pids, signal.SIGTERM)
        deadline = time.monotonic() + term_grace
        while pids and time.monotonic() < deadline:
            time.sleep(0.1)
            pids = netns_pids(ns)
    deadline = time.monotonic() + timeout
    while True:
        pids = netns_pids(ns)
        if not pids:
            return seen
        seen |= pids
        if time.monotonic() > deadline:
            raise ClusterError("processes %s in %s survive SIGKILL" % (sorted(pids), ns))
        _signal_all(pids, signal.SIGKILL)
        time.sleep(0.05)


def _exited(pid):
    """True once ``pid`` is gone or a zombie (its parent, the init, reaps it later)."""
    try:
        with open("/proc/%d/stat" % pid) as handle:
            return handle.read().rsplit(")", 1)[1].split()[0] == "Z"
    except (FileNotFoundError, ProcessLookupError):
        return True


def wait_until(predicate, timeout, what, interval=0.2):
    """Poll ``predicate`` until it returns something true (returned) or raise after timeout."""
    deadline = time.monotonic() + timeout
    last_error = None
    while True:
        try:
            value = predicate()
            if value:
                return value
        except (ClusterError, netlab.LabError, subprocess.TimeoutExpired) as error:
            last_error = error
        if time.monotonic() > deadline:
            raise ClusterError("timed out after %.0f s waiting for %s%s" % (
                timeout, what, " (last error: %s)" % last_error if last_error else ""))
        time.sleep(interval)


class Status:
    """One ``crm_mon -1 --output-as=xml`` snapshot, parsed."""

    def __init__(self, xml_text):
        root = ET.fromstring(xml_text)
        self.xml = xml_text
        dc = root.find("./summary/current_dc")
        self.dc = dc.get("name") if dc is not None and dc.get("present") == "true" else None
        self.quorum = dc is not None and dc.get("with_quorum") == "true"
        self.online = {n.get("name"): n.get("online") == "true" and n.get("pending") != "true"
                       and n.get("unclean") != "true" for n in root.iter("node")
                       if n.get("type") == "member" and n.get("id") is not None}
        # resource id -> [nodes it is *started* on] (role Started, not failed, not pending)
        self.resources = {}
        self.failed = {}
        for resource in root.iter("resource"):
            rid = resource.get("id")
            if rid is None or resource.get("resource_agent") is None:
                continue
            nodes = [n.get("name") for n in resource.findall("node")]
            started = resource.get("role") == "Started" and resource.get("active") == "true" \
                and resource.get("failed") != "true" and not resource.get("pending")
            self.resources[rid] = nodes if started else []
            if resource.get("failed") == "true":
                self.failed[rid] = nodes
        # (node, resource) -> fail count, from the node history
        self.failcounts = {}
        for node in root.iter("node"):
            for history in node.findall("resource_history"):
                count = history.get("fail-count")
                if count is not None:
                    count = 1000000 if count == "INFINITY" else int(count)
                    self.failcounts[(node.get("name"), history.get("id"))] = count
        self.failures = [dict(f.attrib) for f in root.iter("failure")]
        # (primitive, task, interval ms, exec ms) of the operations in the node history
        self.operations = []
        for history in root.iter("resource_history"):
            primitive = history.get("id", "").partition(":")[0]
            for op in history.findall("operation_history"):
                try:
                    self.operations.append((primitive, op.get("task"),
                                            int(op.get("interval", "0ms").rstrip("ms") or 0),
                                            int(op.get("exec-time", "0ms").rstrip("ms") or 0)))
                except ValueError:
                    pass

    def instances(self, primitive):
        """{instance number: node or None} of a globally-unique clone's instances."""
        found = {}
        for rid, nodes in self.resources.items():
            name, _, number = rid.partition(":")
            if name == primitive and number.isdigit():
                found[int(number)] = nodes[0] if len(nodes) == 1 else None
        return found

    def buckets(self, primitive):
        """{bucket: node or None}: clone instance i owns bucket i+1."""
        return {number + 1: node for number, node in self.instances(primitive).items()}


class Cluster:
    """A Pacemaker + Corosync cluster on a :class:`netlab.Lab`; use as a context manager.

    ``token`` None: Corosync's default timings; an int: ``totem.token`` in ms.
    ``log`` receives progress lines (default: print to stderr with a clock).
    ``ipv6``: the lab's IPv6 addresses too (see :class:`netlab.Lab`): the
    nodes and the client keep their IPv4 addresses (Corosync runs over them),
    the client's many sources are IPv6 ones instead.
    ``fencing``: a fence device (``fence_lab`` through :attr:`power`, a
    :class:`PowerController`) and ``stonith-enabled=true``.
    ``private_install``: each node's own writable copy of :data:`INSTALL_DIRS`.
    ``routed``: the client behind an RFC 1812 router (see :class:`netlab.Lab`).
    """

    def __init__(self, nodes=3, token=None, sources=200, prefix=None, log=None,
                 up_timeout=120.0, lifetime=3600, dc_deadtime="5s", ipv6=False, roots=None,
                 fencing=False, private_install=False, routed=False):
        self.lab = netlab.Lab(nodes=nodes, sources=sources, prefix=prefix, ipv6=ipv6,
                              routed=routed)
        self.token = token
        self.dc_deadtime = dc_deadtime
        self.nodes = list(self.lab.node_names)
        # node -> the root its cluster stack runs from ("/": the host's own)
        self.roots = {node: (roots or {}).get(node, "/") for node in self.nodes}
        self.up_timeout = up_timeout
        self.lifetime = lifetime
        self.init = {}  # node -> Popen of its init
        self.init_logs = {}  # node -> its current init's log
        self.dead = set()
        self.baseline_macs = {}  # node -> link multicast addresses before any agent ran
        self.responder_port = None
        self.timings = {}
        self._log = log or (lambda line: print(line, file=sys.stderr, flush=True))
        self._started = time.monotonic()
        self._old_sigterm = None
        self._closed = False
        self._boots = {}  # node -> how often its init was started
        self.fencing = fencing
        self.power = None  # the PowerController, with fencing
        self.private_install = private_install

    def log(self, message):
        self._log("[cluster %6.1fs] %s" % (time.monotonic() - self._started, message))

    # -- life cycle ---------------------------------------------------------------

    def __enter__(self):
        self._install_sigterm()
        try:
            self.start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc):
        self.close()
        return False

    def _install_sigterm(self):
        # CI stops a job with SIGTERM: make it unwind like Ctrl-C so teardown runs.
        if threading.current_thread() is threading.main_thread():
            def interrupt(signum, frame):
                raise KeyboardInterrupt("SIGTERM")
            self._old_sigterm = signal.signal(signal.SIGTERM, interrupt)

    def start(self):
        started = time.monotonic()
        self.lab.__enter__()
        if self.fencing:
            agents = os.path.join(self.lab.directory, "fence-agents")
            os.makedirs(agents)
            shutil.copy(FENCE_AGENT, agents)
            os.chmod(os.path.join(agents, os.path.basename(FENCE_AGENT)), 0o755)
            self.power = PowerController(self, os.path.join(self.lab.directory, "power.sock"))
            self.power.start()
        for node in self.nodes:
            self.baseline_macs[node] = oracle.multicast_macs(self.lab, node)
            self._prepare_node(node)
        for node in self.nodes:
            self._start_init(node)
        self.wait_up(self.up_timeout)
        self.timings["up"] = round(time.monotonic() - started, 2)
        if self.fencing:
            # One transaction: the device and the property that makes it matter.
            path = os.path.join(self.lab.directory, "fence-lab.crm")
            with open(path, "w") as handle:
                handle.write("primitive %s stonith:%s params socket=%s "
                             "op monitor interval=30s timeout=20s\n"
                             "property stonith-enabled=true\n"
                             % (FENCE_DEVICE, os.path.basename(FENCE_AGENT), self.power.path))
            self.load_crm(path)
        else:
            # No fencing devices exist here: without this Pacemaker refuses to start
            # anything.  (Production clusters need fencing; see README "Fencing".)
            self.crm(self.nodes[0], "configure", "property", "stonith-enabled=false")
        self.timings["configured"] = round(time.monotonic() - started, 2)
        self.timings.update(self.totem_runtime())
        self.log("cluster up in %.1f s (token %s), configured after %.1f s" % (
            self.timings["up"], self.token or "default", self.timings["configured"]))

    def close(self):
        """Kill every node's processes (by PID), delete namespaces and directory. Idempotent."""
        if self._closed:
            return
        self._closed = True
        if self._old_sigterm is not None:
            # A second SIGTERM must not cut the teardown short.
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
        errors = []
        if self.power is not None:
            # First: no fence request may boot a node while we tear down.
            self.power.stop()
        # SIGTERM to all nodes at once, one grace period, then SIGKILL what is left.
        namespaces = [self.lab.ns(node) for node in self.nodes]
        try:
            existing = set(netlab.list_namespaces())
        except Exception:  # noqa: BLE001  (teardown must go on)
            existing = set(namespaces)
        namespaces = [ns for ns in namespaces if ns in existing]
        for ns in namespaces:
            _signal_all(netns_pids(ns), signal.SIGTERM)
        deadline = time.monotonic() + 3
        while time.monotonic() < deadline and any(netns_pids(ns) for ns in namespaces):
            time.sleep(0.1)
        for ns in namespaces:
            try:
                kill_netns_processes(ns)
            except Exception as error:  # noqa: BLE001
                errors.append(str(error))
        for process in self.init.values():
            try:
                process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                errors.append("init %d did not exit" % process.pid)
        try:
            self.keep_logs()
        except Exception as error:  # noqa: BLE001
            errors.append("keeping logs: %s" % error)
        try:
            self.lab.close()
        except Exception as error:  # noqa: BLE001
            errors.append(str(error))
        if self._old_sigterm is not None:
            signal.signal(signal.SIGTERM, self._old_sigterm)
            self._old_sigterm = None
        if errors:
            raise ClusterError("teardown problems: %s" % "; ".join(errors))

    def keep_logs(self):
        """Copy every node's /var/log and init logs to $CLUSTERIP_CLUSTER_LOGS/<cluster>/<node>.

        For CI artifacts: Pacemaker's log holds the agent's stderr (exit
        reasons, warnings) and every scheduler decision.
        """
        target = os.environ.get("CLUSTERIP_CLUSTER_LOGS")
        if not target or not os.path.isdir(self.lab.directory):
            return
        # One process may build several clusters with the same prefix, one after another.
        target = os.path.join(target, "%s-token-%s-%s" % (
            self.lab.prefix.rstrip("-"), self.token or "default", time.strftime("%H%M%S")))
        for node in self.nodes:
            source = self.node_dir(node)
            if not os.path.isdir(source):
                continue
            destination = os.path.join(target, node)
            os.makedirs(destination, exist_ok=True)
            shutil.copytree(os.path.join(source, "var-log"), os.path.join(destination, "var-log"),
                            dirs_exist_ok=True)
            for name in os.listdir(source):
                if name.endswith(".log"):
                    shutil.copy(os.path.join(source, name), destination)
        self.log("node logs kept in %s" % target)

    # -- nodes ----------------------------------------------------------------------

    def node_dir(self, node):
        return os.path.join(self.lab.directory, node)

    def _prepare_node(self, node):
        """The node's private directories (bind-mounted by node-init.sh) and corosync.conf."""
        base = self.node_dir(node)
        hacluster, haclient = self.ha_ids(node)
        # (path, mode, owned by hacluster:haclient) -- as the packages create them
        layout = [
            ("etc-corosync", 0o755, False), ("etc-corosync/uidgid.d", 0o755, False),
            ("var-lib-corosync", 0o755, False),
            ("var-lib-pacemaker", 0o755, False),
            ("var-lib-pacemaker/cib", 0o750, True), ("var-lib-pacemaker/pengine", 0o750, True),
            ("var-lib-pacemaker/blackbox", 0o750, True), ("var-lib-pacemaker/cores", 0o750, True),
            ("var-lib-heartbeat", 0o755, False), ("var-lib-heartbeat/cores", 0o755, False),
            ("var-lib-heartbeat/lrm", 0o755, False),
            ("var-log", 0o755, False), ("var-log/pacemaker", 0o770, True),
            ("var-log/pacemaker/bundles", 0o770, True), ("var-log/corosync", 0o755, False),
            ("var-log/cluster", 0o755, False), ("var-log/crmsh", 0o775, True),
            ("home", 0o700, False),
        ]
        for path, mode, ha in layout:
            full = os.path.join(base, path)
            os.makedirs(full, exist_ok=True)
            os.chmod(full, mode)
            if ha:
                os.chown(full, hacluster, haclient)
        with open(os.path.join(base, "etc-corosync", "corosync.conf"), "w") as handle:
            handle.write(corosync_conf(self.nodes, self.token))
        # The nodes' names resolve, as on real clusters: crmsh 4.4's `node
        # standby <node>` pings the node first and does nothing (exit 0!)
        # when its name does not resolve.
        with open(os.path.join(base, "hosts"), "w") as handle:
            handle.write("127.0.0.1 localhost\n::1 localhost\n" + "".join(
                "%s %s\n" % (netlab.node_address(index), name)
                for index, name in enumerate(self.nodes)))
        # Pacemaker's daemons run as hacluster and use Corosync's IPC.
        with open(os.path.join(base, "etc-corosync", "uidgid.d", "pacemaker"), "w") as handle:
            handle.write("uidgid {\n    uid: hacluster\n    gid: haclient\n}\n")
        if self.dc_deadtime:
            # Nodes that start together each wait dc-deadtime (default 20 s) for
            # a DC to appear before they hold an election; a seeded CIB shortens
            # that start-up wait.  It plays no part in failover: when a DC dies
            # its peers see the membership change and elect a new one at once.
            cib = os.path.join(base, "var-lib-pacemaker", "cib", "cib.xml")
            with open(cib, "w") as handle:
                handle.write(SEED_CIB % self.dc_deadtime)
            os.chmod(cib, 0o600)
            os.chown(cib, hacluster, haclient)

    def ha_ids(self, node):
        """(uid of hacluster, gid of haclient) as the node's root numbers them:
        the packages allocate them at install time, so roots differ."""
        if self.roots[node] == "/":
            return pwd.getpwnam("hacluster").pw_uid, grp.getgrnam("haclient").gr_gid

        def field(path, name, index):
            with open(os.path.join(self.roots[node], path)) as handle:
                for line in handle:
                    fields = line.split(":")
                    if fields[0] == name:
                        return int(fields[index])
            raise ClusterError("no %s in %s of %s" % (name, path, self.roots[node]))
        return field("etc/passwd", "hacluster", 2), field("etc/group", "haclient", 2)

    def _start_init(self, node):
        self._boots[node] = self._boots.get(node, 0) + 1
        log = os.path.join(self.node_dir(node), "init.log" if self._boots[node] == 1
                           else "init-%d.log" % self._boots[node])
        init = ["/bin/sh", NODE_INIT, node, self.node_dir(node), str(os.getpid()),
                str(self.lifetime)]
        init.append(os.path.join(self.lab.directory, "fence-agents") if self.fencing else "")
        if self.private_install:
            init.append(" ".join(INSTALL_DIRS))
        if self.roots[node] != "/":
            # roots.ENTER pivot_roots into the node's root (its own
            # mount namespace: unshare's), binds the checkout (node-init.sh)
            # and the lab directory (the node's disk) at their own paths,
            # then execs the init: the init's PID stays unshare's.
            init = ["/bin/sh", "-c", roots.ENTER, "enter", self.roots[node], roots.CHECKOUT,
                    self.lab.directory, "--", "/"] + init
        env = dict(CLEAN_ENV)
        agent = self._agent_override()
        if agent:
            env["CLUSTERIP_NODE_AGENT"] = agent
        process = self.lab.spawn(node, "unshare", "--mount", "--uts", "--propagation",
                                 "private", *init, env=env, log=log)
        self.init[node] = process
        self.init_logs[node] = log
        deadline = time.monotonic() + 45
        while time.monotonic() < deadline:
            with open(log) as handle:
                text = handle.read()
            if "\nstarted " in "\n" + text:
                self.dead.discard(node)
                return process
            if process.poll() is not None or "did not come up" in text:
                break
            time.sleep(0.05)
        raise ClusterError("node %s did not start (init exit %s): %s\ncorosync log: %s" % (
            node, process.poll(), text, self.tail(node, "var-log/cluster/corosync.log")))

    def _agent_override(self):
        """The agent the nodes' Pacemaker runs instead of the installed one:
        $CLUSTERIP_CLUSTER_AGENT (shell words, like $CLUSTERIP_AGENT), as a
        wrapper script in the lab's directory that node-init.sh binds over
        the installed agent inside the node's private mount namespace (the
        host's OCF directory is untouched); None: the installed agent."""
        words = os.environ.get("CLUSTERIP_CLUSTER_AGENT", "").strip()
        if not words:
            return None
        path = os.path.join(self.lab.directory, "cluster-agent")
        if not os.path.exists(path):
            with open(path, "w") as handle:
                handle.write("#!/bin/sh\nexec %s \"$@\"\n" % words)
            os.chmod(path, 0o755)
        return path

    def kill_stack(self, node):
        """The node's cluster stack dies, its kernel and link live on: SIGKILL of
        corosync and every Pacemaker daemon of the node (not its agents'
        background processes, its responder or its init).  Its VIP, tables and
        owned buckets stay, as on a host whose cluster software crashed.
        Returns the kill time; :meth:`kill_node` ends the rest later."""
        at = time.monotonic()
        stack = set()
        for pid in netns_pids(self.lab.ns(node)):
            try:
                with open("/proc/%d/comm" % pid) as handle:
                    name = handle.read().strip()
            except OSError:
                continue
            if name == "corosync" or name.startswith("pacemaker"):
                stack.add(pid)
        if not stack:
            raise ClusterError("%s runs no cluster stack" % node)
        _signal_all(stack, signal.SIGKILL)
        wait_until(lambda: all(_exited(pid) for pid in stack), 15,
                   "the cluster stack of %s gone" % node, interval=0.05)
        self.log("killed the cluster stack of %s (%d processes; kernel and link kept)"
                 % (node, len(stack)))
        return at

    def node_exec(self, node, argv, check=True, timeout=60, input=None, env=None):
        """Run argv inside ``node`` (its mount, UTS and network namespaces), clean env."""
        if node in self.dead or node not in self.init:
            raise ClusterError("node %s is not running" % node)
        environment = {"PATH": CLEAN_PATH, "HOME": "/root", "LC_ALL": "C.UTF-8"}
        environment.update(env or {})
        full = ["nsenter", "-t", str(self.init[node].pid), "-m", "-u", "-n",
                "env", "-i"] + ["%s=%s" % item for item in environment.items()] + list(argv)
        result = subprocess.run(full, input=input, capture_output=True, text=True,
                                timeout=timeout, env=dict(CLEAN_ENV))
        if check and result.returncode != 0:
            raise ClusterError("in %s: %s: exit %d\nstdout: %s\nstderr: %s" % (
                node, " ".join(argv), result.returncode, result.stdout.strip()[-2000:],
                result.stderr.strip()[-2000:]))
        return result

    def crm(self, node, *args, timeout=90):
        return self.node_exec(node, ["crm", *args], timeout=timeout)

    def totem_runtime(self, node=None):
        """Corosync's effective timeouts: {"token_ms": ..., "consensus_ms": ...} (corosync-cmapctl).

        With 3 nodes the real token is token + 650 ms (token_coefficient), consensus 1.2 x that.
        """
        found = {}
        for key in ("token", "consensus"):
            result = self.node_exec(node or self.live_nodes()[0],
                                    ["corosync-cmapctl", "-g", "runtime.config.totem." + key],
                                    check=False, timeout=30)
            value = result.stdout.strip().rsplit("=", 1)[-1].strip()
            if result.returncode == 0 and value.isdigit():
                found[key + "_ms"] = int(value)
        return found

    def live_nodes(self):
        return [node for node in self.nodes if node not in self.dead]

    def status(self, node=None):
        """crm_mon's view from ``node`` (default: the first live node)."""
        node = node or self.live_nodes()[0]
        result = self.node_exec(node, ["crm_mon", "-1", "--output-as=xml"], timeout=30)
        return Status(result.stdout)

    def wait_up(self, timeout, nodes=None):
        """Until every node in ``nodes`` (default all live) is online, a DC elected, quorum."""
        nodes = nodes or self.live_nodes()

        def up():
            status = self.status()
            return status if status.dc and status.quorum and all(
                status.online.get(node) for node in nodes) else None
        return wait_until(up, timeout, "nodes %s online with a DC" % ", ".join(nodes), 0.5)

    def wait_offline(self, node, timeout=60):
        """Until the live nodes' Pacemaker reports ``node`` offline."""
        return wait_until(lambda: not self.status().online.get(node), timeout,
                          "%s to be reported offline" % node, 0.1)

    def wait_settled(self, timeout=120):
        """``crm_resource --wait``: until the cluster has no actions left to run."""
        self.node_exec(self.live_nodes()[0], ["crm_resource", "--wait",
                                              "--timeout=%ds" % int(timeout)],
                       timeout=timeout + 30)

    def locate(self, resource, node=None):
        """Nodes ``crm_resource --locate`` reports ``resource`` running on (a second reader)."""
        result = self.node_exec(node or self.live_nodes()[0],
                                ["crm_resource", "--locate", "-r", resource, "--output-as=xml"],
                                timeout=30)
        return sorted(n.text for n in ET.fromstring(result.stdout).iter("node") if n.text)

    def load_crm(self, path, node=None):
        """``crm configure load update <path>``: the file verbatim, one transaction."""
        self.crm(node or self.live_nodes()[0], "configure", "load", "update", path)

    # -- crash and reboot ----------------------------------------------------------------

    def set_link(self, node, up):
        self.lab.run("switch", "ip", "link", "set", "p" + node, "up" if up else "down")

    def kill_node(self, node):
        """A crash: link down, SIGKILL of every process of the node. Returns the kill time."""
        if node in self.dead:
            raise ClusterError("%s is already dead" % node)
        at = time.monotonic()
        self.set_link(node, False)
        kill_netns_processes(self.lab.ns(node))
        self.dead.add(node)
        process = self.init.get(node)
        if process is not None:
            process.wait(timeout=10)
        self.log("killed %s (link down, %d ms)" % (node, (time.monotonic() - at) * 1000))
        return at

    def reset_kernel_state(self, node):
        """What a reboot resets and a killed namespace keeps: the agent's kernel state.

        The node's processes are dead, so its old /run tmpfs -- HA_RSCTMP with
        the agent's markers and locks -- died with its mount namespace; what
        lives on in the network namespace is removed here: clusterip nft
        tables, addresses other than the node's own, joined multicast MACs,
        unicast filter entries (a shared unicast cluster MAC), the neighbour
        cache.
        """
        lab = self.lab
        for family, table in oracle.nft_tables(lab, node):
            if table.startswith(oracle.TABLE_PREFIX):
                lab.run(node, "nft", "delete", "table", family, table)
        own = "%s/%d" % (netlab.node_address(self.nodes.index(node)), netlab.SUBNET_PREFIXLEN)
        for address in oracle.addresses(lab, node):
            if address != own:
                lab.run(node, "ip", "addr", "del", address, "dev", "eth0")
        for _ in range(20):
            extra = oracle.multicast_macs(lab, node) - self.baseline_macs[node]
            if not extra:
                break
            for mac in extra:
                lab.run(node, "ip", "maddr", "del", mac, "dev", "eth0", check=False)
        else:
            raise ClusterError("%s keeps multicast MACs %s" % (node, extra))
        for mac in oracle.unicast_filter_macs(lab, node):  # a shared unicast cluster MAC
            lab.run(node, "bridge", "fdb", "del", mac, "dev", "eth0", "self")
        lab.run(node, "ip", "neigh", "flush", "dev", "eth0", check=False)

    def revive_node(self, node, timeout=None):
        """A reboot: reset kernel state, link up, corosync + pacemakerd, until online."""
        if node not in self.dead:
            raise ClusterError("%s is not dead" % node)
        # A node rebooting faster than Corosync notices its absence is another
        # scenario (it rejoins without ever having left): wait until it left.
        self.wait_offline(node)
        at = time.monotonic()
        self.boot_node(node, responder=False)
        self.wait_up(timeout or self.up_timeout)
        if self.responder_port is not None:
            self.lab.start_responder(node, self.responder_port, lifetime=self.lifetime)
        self.log("revived %s: online after %.1f s" % (node, time.monotonic() - at))
        return at

    def boot_node(self, node, responder=True):
        """A dead node booted: reset kernel state, link up, its init started (not
        waiting until it is online); with ``responder``, its responder too."""
        self.reset_kernel_state(node)
        self.set_link(node, True)
        self._start_init(node)
        # The reboot's fresh /run: no marker of an instance "started here" survives.
        left = self.node_exec(node, ["ls", "-A", "/run/resource-agents"]).stdout.split()
        if left:
            raise ClusterError("%s rebooted with %s in /run/resource-agents" % (node, left))
        if responder and self.responder_port is not None:
            self.lab.start_responder(node, self.responder_port, lifetime=self.lifetime)

    def power_off(self, node):
        """Power cut: :meth:`kill_node` for a running node; for a dead one, its
        link down and any process left killed (idempotent)."""
        if node in self.dead:
            self.set_link(node, False)
            kill_netns_processes(self.lab.ns(node))
        else:
            self.kill_node(node)

    def stop_node(self, node, timeout=120):
        """The node's cluster stack stopped as ``systemctl stop pacemaker corosync`` does:
        SIGTERM to pacemakerd (which stops the node's resources, then its
        daemons) and, once it is gone, to corosync; then the init.  Any
        process of the node left after that (the responder) is killed.
        Returns the seconds the stop took."""
        at = time.monotonic()
        with open(self.init_logs[node]) as handle:
            started = re.search(r"^started corosync=(\d+) pacemakerd=(\d+)$", handle.read(),
                                re.M)
        if started is None:
            raise ClusterError("%s: no daemon PIDs in %s" % (node, self.init_logs[node]))
        for pid in (int(started.group(2)), int(started.group(1))):
            _signal_all([pid], signal.SIGTERM)
            wait_until(lambda pid=pid: _exited(pid), timeout,
                       "PID %d of %s to exit after SIGTERM" % (pid, node), 0.1)
        self.dead.add(node)
        self.init[node].terminate()
        self.init[node].wait(timeout=10)
        kill_netns_processes(self.lab.ns(node))
        self.log("stopped %s's cluster stack in %.1f s" % (node, time.monotonic() - at))
        return time.monotonic() - at

    def upgrade_node(self, node, root, timeout=None, stopped=False):
        """An upgrade of the node's userland: stop (:meth:`stop_node`), the
        node's root replaced by ``root``, its disk kept (re-owned where the
        new root numbers hacluster otherwise), start, until online.  The
        kernel state is *not* reset: what the old release's stack left
        there is still there, for the caller to check.  Returns the seconds
        from the start of the stop (``stopped``: the caller stopped it, so from
        now) until the node is online again."""
        at = time.monotonic()
        old_ids = self.ha_ids(node)
        if not stopped:
            self.stop_node(node)
        self.roots[node] = root
        new_ids = self.ha_ids(node)
        if new_ids != old_ids:
            for directory, dirs, files in os.walk(self.node_dir(node)):
                for name in [directory] + [os.path.join(directory, f) for f in dirs + files]:
                    info = os.lstat(name)
                    uid = new_ids[0] if info.st_uid == old_ids[0] else -1
                    gid = new_ids[1] if info.st_gid == old_ids[1] else -1
                    if (uid, gid) != (-1, -1):
                        os.lchown(name, uid, gid)
        self._start_init(node)
        self.wait_up(timeout or self.up_timeout)
        if self.responder_port is not None:
            self.lab.start_responder(node, self.responder_port, lifetime=self.lifetime)
        self.log("upgraded %s to %s: online after %.1f s" % (node, root, time.monotonic() - at))
        return time.monotonic() - at

    # -- data plane and kernel oracles ---------------------------------------------------

    def start_responders(self, port):
        """A TCP responder in every live node; restarted by :meth:`revive_node`."""
        self.responder_port = port
        for node in self.live_nodes():
            self.lab.start_responder(node, port, lifetime=self.lifetime)

    def owned(self, node, vip=VIP):
        """The buckets ``node``'s kernel owns for ``vip`` (None: no set): :func:`oracle.owned`."""
        return oracle.owned(self.lab, node, vip, BACKEND)

    def kernel_buckets(self, nodes=None):
        """{bucket: [nodes owning it]} over ``nodes`` (default: the live ones)."""
        found = {}
        for node in nodes or self.live_nodes():
            for bucket in self.owned(node) or ():
                found.setdefault(bucket, []).append(node)
        return found

    def leftovers(self, node, vips=(VIP,), clustermac=None):
        """Everything of the ``vips`` (and any other VIP's tables) left on ``node``,
        multicast MACs against those before any agent ran: :func:`oracle.leftovers`."""
        return oracle.leftovers(self.lab, node, BACKEND, vips, self.baseline_macs[node],
                                clustermac)

    # -- logs --------------------------------------------------------------------------

    def operation_times(self):
        """{"<primitive> <op>": [ms, ...]}: start/stop times from every node's
        pacemaker.log (pacemaker-execd logs each), monitor times of the last
        monitor of each instance from crm_mon's node history.
        """
        times = {}
        for node in self.nodes:
            try:
                with open(self.pacemaker_log(node), errors="replace") as handle:
                    for line in handle:
                        match = _FINISHED.search(line)
                        if match:
                            times.setdefault("%s %s" % (match.group("rsc"), match.group("op")),
                                             []).append(int(match.group("ms")))
            except OSError:
                pass
        try:
            for primitive, task, interval, ms in self.status().operations:
                if task == "monitor":
                    key = "%s %s" % (primitive, "probe" if interval == 0 else "monitor")
                    times.setdefault(key, []).append(ms)
        except (ClusterError, IndexError, subprocess.TimeoutExpired):
            pass
        return times

    def tail(self, node, relative, lines=40):
        path = os.path.join(self.node_dir(node), relative)
        try:
            with open(path, errors="replace") as handle:
                return "".join(handle.readlines()[-lines:])
        except OSError as error:
            return "(%s)" % error

    def diagnosis(self):
        """What a harness failure needs beside Pacemaker's view: the nodes the
        harness holds dead, the power controller's errors, each node's
        Pacemaker daemons running or not, and the critical lines of its log
        (a node that stopped its own stack says why there)."""
        lines = ["dead: %s" % (sorted(self.dead) or "none")]
        if self.power is not None:
            lines.append("power controller errors: %s" % (self.power.errors or "none"))
        for node in self.nodes:
            if node in self.dead:
                continue
            with open(self.init_logs[node], errors="replace") as handle:
                started = re.findall(r"^started corosync=(\d+) pacemakerd=(\d+)$",
                                     handle.read(), re.M)
            if not started:
                lines.append("%s: no daemons started" % node)
            else:
                lines.append("%s: %s" % (node, ", ".join(
                    "%s %s" % (name, "running" if os.path.exists("/proc/" + pid)
                               else "NOT running")
                    for name, pid in zip(("corosync", "pacemakerd"), started[-1], strict=True))))
            try:
                with open(self.pacemaker_log(node), errors="replace") as handle:
                    critical = [line.rstrip() for line in handle
                                if "crit:" in line or "fatal" in line or "error:" in line]
            except OSError as error:
                critical = ["(%s)" % error]
            lines.extend("  " + line for line in critical[-8:])
        return "\n".join(lines)

    def pacemaker_log(self, node):
        return os.path.join(self.node_dir(node), "var-log", "pacemaker", "pacemaker.log")

    def agent_lines(self, node, words=("clusterip", "ocf-exit-reason", "web-ip")):
        """Lines of the node's pacemaker.log about the agent (its stderr lands there)."""
        try:
            with open(self.pacemaker_log(node), errors="replace") as handle:
                return [line.rstrip("\n") for line in handle
                        if any(word in line for word in words)]
        except OSError:
            return []


class PowerController:
    """The namespace nodes' power switch, as a BMC or a PDU is a real node's.

    Listens on the unix socket ``path`` (in the lab directory, so every node
    sees it) for one request per connection, a line: ``list`` -> ``nodes n0
    n1 n2``; ``status NODE`` -> ``on`` or ``off`` (the power, not the OS: a
    crashed node is on until someone powers it off); ``off NODE`` ->
    :meth:`Cluster.power_off`, then ``ok``; ``on NODE`` -> ``ok`` at once,
    :meth:`Cluster.boot_node` in a thread of its own, ``BOOT_DELAY`` later (a
    power-on returns before the OS is up).  Anything else -> ``error: ...``.  Every request
    is kept in :attr:`events` as (monotonic time of the answer, verb, node,
    answer).  fence_lab is its client.
    """

    def __init__(self, cluster, path):
        self.cluster = cluster
        self.path = path
        self.events = []
        self.errors = []
        self.off = set()  # nodes whose power this controller switched off
        self._node_locks = {node: threading.Lock() for node in cluster.nodes}
        self._boots = []
        self._stopped = threading.Event()
        self._server = None

    def start(self):
        controller = self

        class Handler(socketserver.StreamRequestHandler):
            def handle(self):
                line = self.rfile.readline(1024).decode(errors="replace").strip()
                try:
                    answer = controller.answer(line)
                except Exception as error:  # noqa: BLE001  (the agent gets the reason)
                    controller.errors.append("%s: %s" % (line, error))
                    answer = "error: %s" % str(error).splitlines()[0]
                self.wfile.write((answer + "\n").encode())

        self._server = socketserver.ThreadingUnixStreamServer(self.path, Handler)
        self._server.daemon_threads = True
        os.chmod(self.path, 0o600)
        threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.1},
                         daemon=True).start()

    def stop(self):
        self._stopped.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        for thread in self._boots:
            thread.join(timeout=60)

    def answer(self, line):
        words = line.split()
        if words == ["list"]:
            return "nodes " + " ".join(self.cluster.nodes)
        if len(words) != 2 or words[0] not in ("status", "off", "on") \
                or words[1] not in self.cluster.nodes:
            return "error: bad request %r" % line[:80]
        verb, node = words
        if verb == "status":
            return "off" if node in self.off else "on"
        if self._stopped.is_set():
            return "error: the lab is being torn down"
        if verb == "off":
            with self._node_locks[node]:
                self.cluster.power_off(node)
                self.off.add(node)
        else:
            with self._node_locks[node]:
                if node in self.off:
                    self.off.discard(node)
                    thread = threading.Thread(target=self._boot, args=(node,), daemon=True)
                    self._boots.append(thread)
                    thread.start()
        self.events.append((time.monotonic(), verb, node, "ok"))
        self.cluster.log("power controller: %s %s" % (verb, node))
        return "ok"

    def _boot(self, node):
        if self._stopped.wait(BOOT_DELAY):
            return
        with self._node_locks[node]:
            if self._stopped.is_set() or node in self.off or node not in self.cluster.dead:
                return
            try:
                self.cluster.boot_node(node)
            except Exception as error:  # noqa: BLE001  (kept for the test to report)
                self.errors.append("boot %s: %s" % (node, error))

    def times(self, verb, node, since):
        """Monotonic times of the ``verb`` requests for ``node`` answered after ``since``."""
        return [t for t, v, n, _ in list(self.events) if v == verb and n == node and t >= since]


def runs(flags, until):
    """(longest s, total s) of the runs of true flags in [(time, flag)] (in time
    order): a run lasts from its first true flag to the next false one, or
    ``until``."""
    longest = total = 0.0
    began = None
    for t, flag in flags:
        if flag and began is None:
            began = t
        elif not flag and began is not None:
            longest, total, began = max(longest, t - began), total + t - began, None
    if began is not None:
        longest, total = max(longest, until - began), total + until - began
    return round(longest, 2), round(total, 2)


class OwnershipSampler(threading.Thread):
    """Samples the kernel's owned sets of the live nodes every ``interval`` seconds.

    A sample reads the nodes one after another, so a bucket moving from the
    node read first to the node read later (stop there, start here, both
    within the few ms between the reads) looks owned twice.  A candidate is
    therefore confirmed by reading the earlier node again: if it still owns
    the bucket, it owned it before and after the later node's read -- both
    owned it at once (a violation); otherwise it is counted as read skew.
    :attr:`timeline` keeps every sample, (monotonic time, {bucket: [live
    owners]}) with read skew taken out, for :meth:`spans`.
    """

    def __init__(self, cluster, interval=0.1):
        super().__init__(daemon=True)
        self.cluster = cluster
        self.interval = interval
        self.samples = 0
        self.skew = 0
        self.violations = []  # (seconds since start, bucket, [nodes])
        self.timeline = []  # (monotonic time of the sample, {bucket: [nodes]})
        self.errors = []
        self._stop_event = threading.Event()
        self._started_at = None

    def run(self):
        self._started_at = time.monotonic()
        while not self._stop_event.is_set():
            began = time.monotonic()
            try:
                self._sample()
            except Exception as error:  # noqa: BLE001  (a node died under our feet)
                self.errors.append("%.1fs: %s" % (began - self._started_at,
                                                  str(error).splitlines()[0]))
            self._stop_event.wait(max(0.0, self.interval - (time.monotonic() - began)))

    def _sample(self):
        reads_began = time.monotonic()
        reads = []
        for node in self.cluster.live_nodes():
            if node in self.cluster.dead:  # killed while we read the others
                continue
            reads.append((node, self.cluster.owned(node) or set()))
        self.samples += 1
        owners = {}
        for order, (node, owned) in enumerate(reads):
            for bucket in owned:
                owners.setdefault(bucket, []).append((order, node))
        sample = {bucket: [node for _, node in holders] for bucket, holders in owners.items()}
        for bucket, holders in owners.items():
            if len(holders) < 2:
                continue
            first = holders[0][1]
            if first in self.cluster.dead:
                sample[bucket].remove(first)
                continue
            again = self.cluster.owned(first) or set()
            if bucket in again and first not in self.cluster.dead:
                self.violations.append((round(time.monotonic() - self._started_at, 2), bucket,
                                        [node for _, node in holders]))
            else:
                self.skew += 1
                sample[bucket].remove(first)
        self.timeline.append((reads_began, sample))

    def stop(self):
        self._stop_event.set()
        self.join(timeout=10)

    def spans(self, buckets, since, until, owners=2):
        """{bucket: (longest s, total s)} in which the bucket had ``owners`` or more
        live owners (``owners=0``: none at all), over the samples in [since,
        until].  A span runs from the first such sample to the next sample
        that is not (or ``until``): the resolution is the interval.
        """
        samples = [(t, sample) for t, sample in list(self.timeline) if since <= t <= until]

        def hit(sample, bucket):
            count = len(sample.get(bucket, ()))
            return count == 0 if owners == 0 else count >= owners
        return {bucket: runs([(t, hit(sample, bucket)) for t, sample in samples], until)
                for bucket in buckets}


class TrafficWatch(threading.Thread):
    """Clients connecting throughout: rounds of one connection per pair every
    ``every`` seconds (helpers/client.py --every in the client namespace,
    0.15 s connection timeout), each round kept with its CLOCK_MONOTONIC
    start, so :meth:`dark` can say how long each bucket went unanswered
    between two moments of the caller's (time.monotonic() is the same
    clock).  A connection answered by two nodes shows up as an error
    (client.py counts only exactly one answer line).
    """

    def __init__(self, lab, vip, port, pairs, duration, every=0.1, timeout=0.15):
        super().__init__(daemon=True)
        self.rounds = []  # (t, {"src:sport": node or "ERROR:..."})
        self.errors = []
        argv = [sys.executable, "-I", os.path.join(netlab.HELPERS, "client.py"), vip, str(port),
                "--timeout", str(timeout), "--workers", str(min(64, len(pairs))),
                "--every", str(every), "--for", str(duration)]
        self._process = subprocess.Popen(["ip", "netns", "exec", lab.ns("client"), *argv],
                                         stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                         stderr=subprocess.PIPE, text=True,
                                         start_new_session=True)
        self._process.stdin.write(json.dumps([list(pair) for pair in pairs]))
        self._process.stdin.close()

    def run(self):
        for line in self._process.stdout:
            try:
                entry = json.loads(line)
                self.rounds.append((entry["t"], entry["answers"]))
            except (ValueError, KeyError) as error:
                self.errors.append("%s: %r" % (error, line[:200]))

    def stop(self):
        if self._process.poll() is None:
            self._process.kill()  # our own child, by its PID
        self._process.wait(timeout=10)
        self.join(timeout=10)
        self.errors.extend(line for line in self._process.stderr.read().splitlines() if line)

    def dark(self, bucket_of, since, until):
        """{bucket: (longest unanswered span s, total unanswered s, failed connections)}
        over the rounds that started in [since, until].  A span runs from the
        start of the first round in which a connection of the bucket went
        unanswered to the start of the next round in which all of them were
        answered (or ``until``)."""
        found = {}
        rounds = [(t, answers) for t, answers in list(self.rounds) if since <= t <= until]
        for bucket in sorted(set(bucket_of.values())):
            bad = [(t, sum(1 for pair, answer in answers.items()
                           if bucket_of.get(pair) == bucket and answer.startswith("ERROR:")))
                   for t, answers in rounds]
            found[bucket] = runs([(t, count > 0) for t, count in bad], until) + (
                sum(count for _, count in bad),)
        return found


def watched_pairs(bucket_of, per_bucket):
    """([(source, sport)], {"src:sport": bucket}): the first ``per_bucket``
    pairs of each bucket (in sorted order) of ``bucket_of`` {"src:sport": bucket}."""
    watched, buckets, counts = [], {}, {}
    for pair, bucket in sorted(bucket_of.items()):
        if counts.get(bucket, 0) < per_bucket:
            counts[bucket] = counts.get(bucket, 0) + 1
            watched.append(netlab.split_pair(pair))
            buckets[pair] = bucket
    return watched, buckets


@contextlib.contextmanager
def watching(cluster, vip, port, pairs, duration):
    """(TrafficWatch, OwnershipSampler) running, the first client rounds in;
    both stopped on the way out."""
    watch = TrafficWatch(cluster.lab, vip, port, pairs, duration)
    sampler = OwnershipSampler(cluster)
    watch.start()
    sampler.start()
    try:
        wait_until(lambda: len(watch.rounds) >= 5, 30, "the first client rounds")
        yield watch, sampler
    finally:
        sampler.stop()
        watch.stop()


class Report:
    """What the cluster tier measured: cluster start-up, failover times, scenario durations.

    Printed as a table at the end of the pytest run (conftest.py) and written
    as JSON to $CLUSTERIP_FAILOVER_REPORT after every update, so a run that
    dies half-way still leaves what it measured.
    """

    MEASURES = (
        ("victim_offline", "Pacemaker reports the crashed node offline"),
        ("victim_fenced", "fencing: the power controller switched the node off"),
        ("clusterip_traffic", "clusterip: its bucket answered again (every connection on)"),
        ("clusterip_pacemaker", "clusterip: Pacemaker reports the instance started"),
        ("dummy_pacemaker", "Dummy: Pacemaker reports the instance started"),
    )

    def __init__(self):
        self.clusters = []  # {"setting", "up_seconds", "configured_seconds"}
        self.failover = {}  # setting -> {"kills": [...], measure -> [seconds]}
        self.scenarios = {}  # nodeid -> {"seconds", "outcome"}
        self.notes = []
        self.operations = {}  # setting -> {"<primitive> <op>": [ms]}

    def empty(self):
        return not (self.clusters or self.failover or self.scenarios)

    def add_cluster(self, setting, timings):
        self.clusters.append({"setting": setting, "up_seconds": timings.get("up"),
                              "configured_seconds": timings.get("configured"),
                              "token_ms": timings.get("token_ms"),
                              "consensus_ms": timings.get("consensus_ms")})
        self.save()

    def add_kill(self, setting, kill):
        entry = self.failover.setdefault(setting, {"kills": []})
        entry["kills"].append(kill)
        for measure, _ in self.MEASURES:
            if kill.get(measure) is not None:
                entry.setdefault(measure, []).append(kill[measure])
        self.save()

    def add_operations(self, setting, times):
        merged = self.operations.setdefault(setting, {})
        for key, values in times.items():
            merged.setdefault(key, []).extend(values)
        self.save()

    def add_scenario(self, nodeid, seconds, outcome):
        self.scenarios[nodeid] = {"seconds": round(seconds, 1), "outcome": outcome}
        self.save()

    def as_dict(self):
        failover = {}
        for setting, entry in self.failover.items():
            failover[setting] = {"kills": entry["kills"]}
            for measure, _ in self.MEASURES:
                samples = entry.get(measure, [])
                failover[setting][measure] = {
                    "median": statistics.median(samples) if samples else None,
                    "samples": samples}
        return {"clusters": self.clusters, "failover": failover, "scenarios": self.scenarios,
                "operations_ms": self.operations, "notes": self.notes}

    def save(self):
        path = os.environ.get("CLUSTERIP_FAILOVER_REPORT")
        if path:
            with open(path + ".tmp", "w") as handle:
                json.dump(self.as_dict(), handle, indent=2, sort_keys=True)
            os.replace(path + ".tmp", path)

    def table(self):
        lines = []
        if self.clusters:
            lines.append("cluster start-up (3 nodes, until all online with a DC / configured):")
            for c in self.clusters:
                lines.append("  %-14s %6.1f s / %6.1f s   (Corosync runtime token %s ms, "
                             "consensus %s ms)" % (c["setting"], c["up_seconds"] or 0,
                                                   c["configured_seconds"] or 0,
                                                   c.get("token_ms"), c.get("consensus_ms")))
        if self.failover:
            lines.append("failover after a node crash (SIGKILL + link down), seconds from the "
                         "kill:")
            lines.append("  %-14s %-58s %7s  %s" % ("setting", "measure", "median", "samples"))
            for setting, entry in self.failover.items():
                for measure, text in self.MEASURES:
                    samples = entry.get(measure, [])
                    if not samples and measure == "victim_fenced":
                        continue  # settings without fencing
                    lines.append("  %-14s %-58s %7s  %s" % (
                        setting, text, "%.2f" % statistics.median(samples) if samples else "-",
                        " ".join("%.2f" % s for s in samples)))
                dcs = [k.get("killed_dc") for k in entry["kills"]]
                lines.append("  %-14s %-58s %7s  %s" % (
                    setting, "(killed node was the DC)", "", " ".join(
                        "yes" if d else "no" for d in dcs)))
                rebalance = [k.get("rebalance_seconds") for k in entry["kills"]
                             if k.get("rebalance_seconds") is not None]
                lines.append("  %-14s %-58s %7s  %s" % (
                    setting, "revive: node online -> one bucket per node again",
                    "%.2f" % statistics.median(rebalance) if rebalance else "-",
                    " ".join("%.2f" % s for s in rebalance)))
        if self.operations:
            lines.append("agent operation times as Pacemaker measured them (ms):")
            lines.append("  %-14s %-20s %5s %7s %7s" % ("setting", "operation", "n", "median",
                                                        "max"))
            for setting, times in self.operations.items():
                for key, values in sorted(times.items()):
                    lines.append("  %-14s %-20s %5d %7d %7d" % (setting, key, len(values),
                                                                statistics.median(values),
                                                                max(values)))
        if self.scenarios:
            lines.append("scenario durations:")
            for nodeid, entry in self.scenarios.items():
                lines.append("  %-60s %7.1f s  %s" % (nodeid.split("::")[-1], entry["seconds"],
                                                      entry["outcome"]))
        lines.extend("note: %s" % note for note in self.notes)
        return "\n".join(lines)


REPORT = Report()
