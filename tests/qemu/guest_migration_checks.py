"""Run INSIDE the qemu tier's guest (test_qemu_tier.py): README's "From
CLUSTERIP to nft" rehearsed on Debian 12's own Linux 6.1, with clients
connecting throughout.

One real three-node Pacemaker 2.1.5 + Corosync cluster (tests/cluster/
cluster.py: namespace nodes, each with its own mount namespace) serves one
VIP as crm-examples/three-nodes.crm configures it (clone-max=3,
clone-node-max=3, globally-unique, failure-timeout=60s), with
``hashmode=sourceip`` (so the client may use any source port) and 60 s
operation timeouts (emulation).  A prober (tests/helpers/prober.py) in the
client namespace connects from PROBE_SOURCES addresses every 0.1 s each
(covering all three buckets under either backend's hash); from its record
each step's interruption is computed per bucket.  In order:

1. the agent before 0.2.0 (OLD_AGENT_ARCHIVE: ``git archive a034e45^ lib
   ocf``, vendored, unpacked here into /opt/clusterip-old beside the
   current venv's libraries and bind-mounted over the OCF agent in every
   node's own mount namespace) starts the clone with ``backend=auto``:
   CLUSTERIP on every node;
2. the current agent is installed node by node (the bind mount removed in
   that node's namespace): nothing restarts, no connection fails, the
   monitors keep passing;
3. the recommended switch (stop, ``crm_resource --wait``, start): every
   bucket served with nft.

After 3: every bucket served by exactly one node, with nft; no CLUSTERIP
rule, no /proc/net/ipt_CLUSTERIP entry on any node; no failed operation, no
cleanup run; every node publishes ``clusterip-backend-<VIP>`` = nft.  The
figures go to $CLUSTERIP_MIGRATION_REPORT (JSON) and the output.

Not rehearsed here (each would cost the tier another ~2-4 minutes of
emulation): the move back to an explicit ``backend=clusterip``, the naive
``crm resource param web-ip set backend nft`` under the running clone, and
stop / ``set backend nft`` / start from an explicit ``backend=clusterip``
(README "From CLUSTERIP to nft" gives their one-run observations).
"""

import glob
import json
import os
import re
import shutil
import sys
import tarfile
import time

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
TESTS = os.path.dirname(HERE)
sys.path.insert(1, os.path.join(TESTS, "cluster"))
import cluster  # noqa: E402  (tests/cluster: the cluster tier's harness)
import netlab  # noqa: E402
import oracle  # noqa: E402
from cluster import VIP, wait_until  # noqa: E402

PRIMITIVE, CLONE = "web-ip", "web-ip-clone"
PORT = 8080
BUCKETS = 3
# The agent and library before 0.2.0 (when backend=auto still meant CLUSTERIP
# on Debian 12), vendored: ``git archive a034e45^ lib ocf | gzip -9n``.
OLD_AGENT_ARCHIVE = os.path.join(HERE, "data", "clusterip-0.1-agent.tar.gz")
OLD_AGENT_COMMIT = "764f7caac8f29be0f47a48e927fc685e67e551b5"  # a034e45^
OLD_VENV = "/opt/clusterip-old"
NEW_VENV = "/opt/clusterip"
AGENT = netlab.DEFAULT_AGENT
PROBER = os.path.join(TESTS, "helpers", "prober.py")
PROBE_SOURCES = 12
PROBE_INTERVAL = 0.1
PROBE_TIMEOUT = 1.0
# Emulation: Corosync's token (ms) long enough that a busy guest never loses it.
TOKEN = 5000
SETTLE = 150  # s: any one step of the rehearsal (the switch settled in 60 s)
STABLE = 2.0  # s of probes that learn which bucket a source is in
# A stalled emulator delays single probes past PROBE_TIMEOUT: a source that
# missed no more than one probe in a row was answered throughout.
STALL = PROBE_TIMEOUT + PROBE_INTERVAL
REPORT = {}
# The procedure in Pacemaker's own tools (what ``crm resource stop|param|start``
# and pcs run; crmsh itself needs ~30 s per command under emulation).
STOP = ["crm_resource", "--resource", CLONE, "--meta", "--set-parameter", "target-role",
        "--parameter-value", "Stopped"]
WAIT = ["crm_resource", "--wait", "--timeout=%ds" % SETTLE]
START = ["crm_resource", "--resource", CLONE, "--meta", "--set-parameter", "target-role",
         "--parameter-value", "Started"]



def crm_config(backend=None):
    """three-nodes.crm with hashmode=sourceip, 60 s operation timeouts and
    ``backend`` (None: the parameter absent, i.e. auto)."""
    with open(os.path.join(cluster.CRM_EXAMPLES, "three-nodes.crm")) as handle:
        text = handle.read()
    text = text.replace("hashmode=sourceip-sourceport", "hashmode=sourceip"
                        + (" backend=%s" % backend if backend else ""))
    text = text.replace("timeout=20s", "timeout=60s")
    assert "hashmode=sourceip " in text and "failure-timeout=60s" in text, text
    return text


def report(key, value):
    REPORT[key] = value
    print("migration: %s: %s" % (key, json.dumps(value, sort_keys=True)), flush=True)
    path = os.environ.get("CLUSTERIP_MIGRATION_REPORT")
    if path:
        with open(path, "w") as handle:
            json.dump(REPORT, handle, indent=2, sort_keys=True)


# -- the old agent -------------------------------------------------------------------


def install_old_agent():
    """/opt/clusterip-old: the old library (unpacked from OLD_AGENT_ARCHIVE)
    beside symlinks to the current venv's other packages and interpreter, and
    the old agent naming that interpreter (the agent finds its library
    relative to its interpreter's path)."""
    assert os.path.isfile(OLD_AGENT_ARCHIVE), \
        "%s (the agent before 0.2.0, vendored: git archive %s lib ocf | gzip -9n) is " \
        "missing: the rehearsal cannot start from the old agent" % (
            OLD_AGENT_ARCHIVE, OLD_AGENT_COMMIT)
    if not os.path.exists(OLD_VENV + "/agent"):
        [new_site] = glob.glob(NEW_VENV + "/lib/python3*/site-packages")
        site = OLD_VENV + new_site[len(NEW_VENV):]
        os.makedirs(site)
        os.makedirs(OLD_VENV + "/bin")
        os.symlink(os.path.realpath(NEW_VENV + "/bin/python3"), OLD_VENV + "/bin/python3")
        for name in os.listdir(new_site):
            if not name.startswith("clusterip"):
                os.symlink(os.path.join(new_site, name), os.path.join(site, name))
        with tarfile.open(OLD_AGENT_ARCHIVE) as archive:
            assert archive.pax_headers.get("comment") == OLD_AGENT_COMMIT, \
                archive.pax_headers  # git archive records the commit it came from
            members = [m for m in archive.getmembers()
                       if m.name.startswith("lib/clusterip/") and m.isfile()]
            for member in members:
                target = os.path.join(site, member.name[len("lib/"):])
                os.makedirs(os.path.dirname(target), exist_ok=True)
                with open(target, "wb") as handle:
                    handle.write(archive.extractfile(member).read())
            body = archive.extractfile("ocf/clusterip").read().split(b"\n", 1)[1]
        with open(os.path.join(site, "clusterip", "__init__.py")) as handle:
            assert '__version__ = "0.1.0"' in handle.read()
        with open(OLD_VENV + "/agent", "wb") as handle:
            handle.write(b"#!%s/bin/python3 -IS\n" % OLD_VENV.encode() + body)
        os.chmod(OLD_VENV + "/agent", 0o755)
    return OLD_VENV + "/agent"


def agent_interpreter(c, node):
    """The interpreter the node's OCF agent (as Pacemaker runs it there) names."""
    return c.node_exec(node, ["head", "-n", "1", AGENT], timeout=60).stdout.split()[0][2:]


def direct_monitor(c, node, instance, backend_param=None):
    """The node's agent's monitor of ``instance`` run by hand (Pacemaker's environment)."""
    env = {"OCF_ROOT": netlab.OCF_ROOT, "OCF_RESOURCE_INSTANCE": "%s:%d" % (PRIMITIVE, instance),
           "OCF_RESKEY_ip": VIP, "OCF_RESKEY_cidr_netmask": "16",
           "OCF_RESKEY_hashmode": "sourceip", "OCF_RESKEY_CRM_meta_clone": str(instance),
           "OCF_RESKEY_CRM_meta_clone_max": "3", "OCF_RESKEY_CRM_meta_clone_node_max": "3",
           "OCF_RESKEY_CRM_meta_globally_unique": "true",
           "OCF_RESKEY_CRM_meta_interval": "10000", "OCF_RESKEY_CRM_meta_timeout": "60000"}
    if backend_param:
        env["OCF_RESKEY_backend"] = backend_param
    return c.node_exec(node, [AGENT, "monitor"], check=False, env=env, timeout=90).returncode


# -- kernel and Pacemaker state ------------------------------------------------------


def kernel_state(c, node):
    """(nft owned buckets or None, CLUSTERIP proc buckets or None, CLUSTERIP rules)."""
    lab = c.lab
    return (oracle.owned(lab, node, VIP, "nft"), oracle.owned(lab, node, VIP, "clusterip"),
            oracle.clusterip_rules(lab, node))


def serving(c):
    """{node: (backend, buckets)} from every node's kernel: whichever filter it holds."""
    found = {}
    for node in c.nodes:
        nft, clusterip, rules = kernel_state(c, node)
        if nft is not None and (clusterip is not None or rules):
            found[node] = ("both", (nft, clusterip))
        elif nft is not None:
            found[node] = ("nft", sorted(nft))
        elif clusterip is not None or rules:
            found[node] = ("clusterip", sorted(clusterip or ()))
    return found


def published(c, vip=VIP):
    result = c.node_exec(c.nodes[0], ["attrd_updater", "--name", "clusterip-backend-" + vip,
                                      "--query", "--all"], check=False, timeout=60)
    return {host: value for host, value in re.findall(
        r'host="([^"]*)" value="([^"]*)"', result.stdout) if value}


def balanced(c, backend):
    """The status once one instance runs per node and each node's kernel serves
    exactly that bucket with ``backend``, else None."""
    status = c.status()
    placed = status.buckets(PRIMITIVE)
    if sorted(placed) != list(range(1, BUCKETS + 1)) or sorted(
            filter(None, placed.values())) != c.nodes:
        return None
    if serving(c) != {node: (backend, [b]) for b, node in placed.items()}:
        return None
    return status


def wait_balanced(c, backend, what, timeout=SETTLE, failures=None):
    """balanced(), waited for; ``failures`` (a dict) collects every failed
    operation crm_mon shows meanwhile, by (operation, node)."""
    def check():
        status = balanced(c, backend)
        if failures is not None:
            for failure in (status or c.status()).failures:
                failures.setdefault((failure.get("op_key"), failure.get("node")), failure)
        return status
    try:
        return wait_until(check, timeout, what, 1.0)
    except cluster.ClusterError as error:
        status = c.status()
        raise AssertionError("%s\nPacemaker: %s, failures %s\nkernels: %s" % (
            error, status.buckets(PRIMITIVE), status.failures, serving(c))) from None


def starts_and_stops(status):
    return sorted(op for op in status.operations if op[1] in ("start", "stop"))


# -- the prober and what it saw ------------------------------------------------------


class Probes:
    """The prober's record: [(start, source index, answer)], read as it grows."""

    def __init__(self, c):
        self.c = c
        self.path = os.path.join(c.lab.directory, "probes.log")
        self.sources = c.lab.sources[:PROBE_SOURCES]
        self.process = c.lab.spawn(
            "client", sys.executable, "-I", PROBER, VIP, str(PORT), self.path,
            ",".join(self.sources), "--interval", str(PROBE_INTERVAL),
            "--timeout", str(PROBE_TIMEOUT), "--duration", "1800")

    def records(self, since, until):
        # Everything started before ``until`` has an outcome once its timeout
        # passed and the prober flushed (every 0.5 s).
        wait = until + PROBE_TIMEOUT + 1.5 - time.monotonic()
        if wait > 0:
            time.sleep(wait)
        assert self.process.poll() is None, "the prober exited (%s)" % self.process.poll()
        found = []
        with open(self.path) as handle:
            for line in handle:
                started, index, answer = line.split(" ", 2)
                started, answer = float(started), answer.strip()
                if since <= started < until and answer != "ERROR:stopped":
                    found.append((started, int(index), answer))
        return sorted(found)

    def learn(self, since, until, owners):
        """{source index: bucket} from a stable window: each source answered,
        always by the same node (``owners``: {node: bucket}), missing at most
        single probes to timeouts (stalls, see STALL)."""
        records = self.records(since, until)
        answers = {}
        for _, index, answer in records:
            if answer in owners:
                answers.setdefault(index, set()).add(answer)
        assert sorted(answers) == list(range(len(self.sources))), \
            "sources without answers in %.1f s: %s" % (until - since, sorted(answers))
        unstable = {i: a for i, a in answers.items() if len(a) != 1}
        errors = [r for r in records if r[2] not in owners]
        assert not unstable and all(r[2] == "ERROR:timeout" for r in errors) and max(
            longest_runs(errors, records).values(), default=0) <= STALL, \
            "probes not answered by one node in a stable state: %s, failed %s" % (
                unstable, errors)
        buckets = {index: owners[next(iter(a))] for index, a in answers.items()}
        # The prober must see every bucket.
        assert set(buckets.values()) == set(range(1, BUCKETS + 1)), buckets
        return buckets

    def errors(self, since, until):
        return [r for r in self.records(since, until) if r[2] not in self.c.nodes]


def bursts(errors, gap=0.5):
    """Failed probes grouped into bursts: [(start, seconds, failed probes)]."""
    found = []
    for started, _, _ in errors:
        if found and started - (found[-1][0] + found[-1][1]) <= gap:
            found[-1][1] = round(started - found[-1][0], 2)
            found[-1][2] += 1
        else:
            found.append([round(started, 2), 0.0, 1])
    return found


def guest_stalls(errors, buckets, window=0.5):
    """The failed probes that fell in a stall of the whole guest: within
    ``window`` s of them, sources of every bucket failed too (``buckets``:
    {source index: bucket}).  A bucket going dark fails only its own sources;
    an emulator starved by the host fails them all at once."""
    stalled = set()
    for started, index, _ in errors:
        near = {buckets[i] for t, i, _ in errors if abs(t - started) <= window}
        if len(near) == BUCKETS:
            stalled.add((started, index))
    return stalled


def longest_runs(errors, records):
    """{source index: seconds from its first failed probe of a run to its next answer}."""
    failed = {(started, index) for started, index, _ in errors}
    longest, run_start = {}, {}
    for started, index, _ in records:
        if (started, index) in failed:
            run_start.setdefault(index, started)
        elif index in run_start:
            longest[index] = max(longest.get(index, 0), started - run_start.pop(index))
    for index in run_start:
        longest[index] = float("inf")
    return longest


def outages(records, nodes, old, new):
    """What one step's probes say, seconds relative to the first record.

    Per source: its unanswered runs (from its first failed probe to its next
    answered one); a run still open at the window's end leaves the source
    unhealed, unless it began within STALL of the end (a stall).  Per bucket
    b: from the first failed probe of a source in b under the old hash to the
    moment every source in b under the new hash is answered for good; ``total``:
    from the first failure of any source to the last source answered for good.
    """
    by_source = {}
    for started, index, answer in records:
        by_source.setdefault(index, []).append((started, answer in nodes))
    end = max((started for started, _, _ in records), default=0.0)
    first_failure, back, longest, unhealed, stalls = {}, {}, {}, [], 0
    for index, probes in by_source.items():
        run_start, worst = None, 0.0
        for started, ok in probes:
            if not ok:
                first_failure.setdefault(index, started)
                if run_start is None:
                    run_start = started
            elif run_start is not None:
                worst = max(worst, started - run_start)
                back[index] = started
                run_start = None
        if run_start is not None and run_start < end - STALL:
            unhealed.append(index)
        elif run_start is not None:  # its last probe or two stalled: no verdict
            stalls += 1
            if first_failure[index] == run_start:
                del first_failure[index]
        longest[index] = worst
    result = {"unhealed_sources": sorted(unhealed), "trailing_stalls": stalls,
              "failed_probes": sum(
        1 for probes in by_source.values() for _, ok in probes if not ok),
        "probes": len(records), "buckets": {}}
    if not first_failure:
        result["total"] = 0.0
        return result
    began = min(first_failure.values())
    for bucket in range(1, BUCKETS + 1):
        dark = [first_failure[i] for i, b in old.items() if b == bucket and i in first_failure]
        light = [back.get(i) for i, b in new.items() if b == bucket and i in first_failure]
        result["buckets"][bucket] = None if not dark or None in light or any(
            i in unhealed for i, b in new.items() if b == bucket) else round(
            max(light or dark) - min(dark), 2)
    result["total"] = None if unhealed else round(max(back.values()) - began, 2)
    result["longest_per_source"] = {"min": round(min(longest.values()), 2),
                                    "max": round(max(longest.values()), 2)}
    return result


# -- the rehearsal ------------------------------------------------------------------


class Rehearsal:
    def __init__(self, c):
        self.c = c
        self.probes = None
        self.old_buckets = None  # source index -> bucket under CLUSTERIP's hash
        self.nft_buckets = None  # ... under nft's

    def owners(self):
        return {node: bucket for bucket, node in self.c.status().buckets(PRIMITIVE).items()}

    def step(self, label, commands, backend_after, learn=False, timeout=SETTLE):
        """Run crm ``commands`` on n0 (each a list of arguments), wait until the
        clone is balanced with ``backend_after``; the probes' outages and the
        failed operations seen meanwhile."""
        c = self.c
        before = self.old_buckets if serving(c)[c.nodes[0]][0] == "clusterip" \
            else self.nft_buckets
        began = time.monotonic()
        for command in commands:
            c.log("%s: %s" % (label, " ".join(command)))
            c.node_exec(c.nodes[0], command, timeout=SETTLE + 60)
        commanded = time.monotonic()
        failures = {}
        wait_balanced(c, backend_after, "%s: balanced with %s" % (label, backend_after),
                      timeout, failures)
        settled = time.monotonic()
        # A few seconds more: whatever comes back after the placement must too.
        time.sleep(STABLE + 1)
        if learn:
            self.nft_buckets = self.probes.learn(time.monotonic() - STABLE, time.monotonic(),
                                                 self.owners())
        after = self.nft_buckets if backend_after == "nft" else self.old_buckets
        found = outages(self.probes.records(began, time.monotonic()), c.nodes, before, after)
        found.update({"bursts": bursts(self.probes.errors(began, time.monotonic())),
                      "commands": [" ".join(command) for command in commands],
                      "command_seconds": round(commanded - began, 2),
                      "settled_seconds": round(settled - began, 2),
                      "failed_operations": sorted(
                          "%s %s on %s: %s" % (f.get("op_key"), f.get("exitstatus"),
                                               f.get("node"), f.get("exitreason", "")[:100])
                          for f in failures.values())})
        report(label, found)
        return found

    def assert_on_nft_cleanly(self, label):
        c = self.c
        status = wait_balanced(c, "nft", label + ": balanced with nft")
        for node in c.nodes:
            nft, clusterip, rules = kernel_state(c, node)
            assert rules == [] and clusterip is None, (node, rules, clusterip)
            assert oracle.clusterip_proc_files(c.lab, node) == [], node
        assert not status.failures and not any(status.failcounts.values()), \
            (status.failures, status.failcounts)
        assert published(c) == {node: "nft" for node in c.nodes}, published(c)
        since = time.monotonic()
        time.sleep(STABLE)
        assert self.probes.learn(since, time.monotonic(), self.owners()) == self.nft_buckets


class RehearsalCluster(cluster.Cluster):
    """cluster.Cluster with its one crmsh property command run as
    crm_attribute (the same CIB change; crmsh takes ~30-60 s per command
    under emulation).  The example is still loaded with crmsh, verbatim."""

    def crm(self, node, *args, timeout=90):
        if args == ("configure", "property", "stonith-enabled=false"):
            return self.node_exec(node, ["crm_attribute", "--type", "crm_config", "--name",
                                         "stonith-enabled", "--update", "false"],
                                  timeout=timeout)
        return super().crm(node, *args, timeout=timeout)


@pytest.fixture(scope="module")
def rehearsal():
    old_agent = install_old_agent()
    with RehearsalCluster(nodes=3, token=TOKEN, sources=PROBE_SOURCES, up_timeout=300,
                         lifetime=1800) as c:
        report("cluster", dict(c.timings))
        for node in c.nodes:  # the old agent, in each node's own mount namespace
            c.node_exec(node, ["mount", "--bind", old_agent, AGENT])
        r = Rehearsal(c)
        try:
            yield r
        finally:
            if r.probes is not None and r.probes.process.poll() is None:
                r.probes.process.terminate()
                r.probes.process.wait(timeout=30)
            logs = os.environ.get("CLUSTERIP_CLUSTER_LOGS")
            if r.probes is not None and logs and os.path.exists(r.probes.path):
                os.makedirs(logs, exist_ok=True)
                shutil.copy(r.probes.path, os.path.join(logs, "migration-probes.log"))


def test_1_the_old_agent_serves_with_clusterip_and_the_upgrade_changes_nothing(rehearsal):
    r, c = rehearsal, rehearsal.c
    assert {agent_interpreter(c, node) for node in c.nodes} == {OLD_VENV + "/bin/python3"}
    path = os.path.join(c.lab.directory, "web-ip.crm")
    with open(path, "w") as handle:
        handle.write(crm_config())  # backend=auto (absent), as the old clusters run it
    c.load_crm(path)
    wait_balanced(c, "clusterip", "the old agent's auto: CLUSTERIP on every node")
    c.start_responders(PORT)
    r.probes = Probes(c)
    time.sleep(STABLE + 1)
    r.old_buckets = r.probes.learn(time.monotonic() - STABLE, time.monotonic(), r.owners())
    assert published(c) == {node: "clusterip" for node in c.nodes}

    # The current agent, node by node: the old one's bind mount goes in that node.
    before = {node: kernel_state(c, node) for node in c.nodes}
    operations = starts_and_stops(c.status())
    began = time.monotonic()
    for node in c.nodes:
        c.node_exec(node, ["umount", AGENT])
        assert agent_interpreter(c, node) == NEW_VENV + "/bin/python3", node
        instance = r.owners()[node] - 1
        assert direct_monitor(c, node, instance) == 0, node
    upgraded = time.monotonic()
    # One monitor interval (10 s) and a margin: Pacemaker's monitor of every
    # instance has run the current agent.
    time.sleep(13)
    status = c.status()
    assert not status.failures and not any(status.failcounts.values()), status.failures
    assert starts_and_stops(status) == operations, "an instance was restarted"
    assert {node: kernel_state(c, node) for node in c.nodes} == before
    assert published(c) == {node: "clusterip" for node in c.nodes}
    ended = time.monotonic()
    errors = r.probes.errors(began, ended)
    stalled = guest_stalls(errors, r.old_buckets)
    alone = [e for e in errors if (e[0], e[1]) not in stalled]
    report("upgrade", {"seconds": round(upgraded - began, 2), "failed_probes": len(errors),
                       "failed_in_guest_stalls": len(stalled), "bursts": bursts(errors),
                       "probes": len(r.probes.records(began, ended))})
    # No bucket went unanswered: outside the guest's stalls (every bucket's
    # sources failing at once), no source missed more than one probe in a row.
    assert max(longest_runs(alone, r.probes.records(began, ended)).values(),
               default=0) <= STALL, (bursts(alone), bursts(errors))


def test_2_stop_start_moves_backend_auto_to_nft(rehearsal):
    r = rehearsal
    found = r.step("stop_start_auto", [STOP, WAIT, START], "nft", learn=True)
    assert found["total"] is not None and not found["unhealed_sources"], found
    r.assert_on_nft_cleanly("stop_start_auto")

