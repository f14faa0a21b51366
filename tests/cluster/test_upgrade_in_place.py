"""The agent upgraded in place under traffic, node by node (issue #15).

What an admin does: ``make install`` of the new version on each node in
turn, the cluster running, clients connecting, nothing stopped or put in
standby.  Here from the last version before nft layout 2 (commit 1564be9,
vendored as data/clusterip-pre8-agent.tar.gz: its lib, ocf, Makefile,
setup.cfg and pyproject.toml, so that the tier needs no git history),
whose nft tables crash every nft listing (tests/layout1.py), to the
checkout.  Each node has private, writable copies of the install
locations (``Cluster(private_install=True)``), and each version is
installed by its own ``make install`` run in the node, pip offline
(PIP_NO_INDEX) with a wheelhouse fetched once on the host (setuptools and
wheel, the build's only needs: the lower layer's venv holds the runtime
dependencies already).

1. The old version's ``make install`` on every node, then the cluster
   serves crm-examples/three-nodes.crm (monitor every 10 s), one bucket
   per node, in layout 1 (``nft list set`` of its set owned crashes).
2. For each node in turn, clients connecting throughout (TrafficWatch:
   PAIRS_PER_BUCKET pairs per bucket, a round every 0.1 s, 0.15 s
   timeouts; OwnershipSampler: the kernels' owned sets every 0.1 s, read
   as JSON, which nft 1.0.6 prints in layout 1 too): ``make install`` of
   the checkout, then
   the wait until the node's tables are listable again -- the next
   recurring monitor of one of its instances rebuilt them (one log line
   with its time) and answered 0.
3. Checked at the end, with no ``crm resource cleanup`` run: no failed
   operation and no fail-count in Pacemaker's history; every node's
   tables in the current layout (every nft listing works), exactly the
   bucket Pacemaker placed there, one rebuild each, a guard running (the
   old agent had none); every connection answered by its bucket's owner;
   no double owner sampled; no client error.  Measured per node upgrade:
   the longest time any bucket went unanswered (the issue allows no more
   than the rebuild), the rebuild's own time, the install's.
"""

import concurrent.futures
import os
import re
import shutil
import subprocess
import sys
import tarfile
import time

import pytest

import cluster
import oracle
import scenarios
from cluster import REPO, REPORT, VIP, wait_until

OLD_ARCHIVE = os.path.join(cluster.HERE, "data", "clusterip-pre8-agent.tar.gz")
OLD_COMMIT = "1564be9b05e9eeb40dee5652bb388ac192c44adc"  # git archive's pax comment
OLD_VERSION = "0.1.0"
# What `make install` of the checkout reads (pyproject names README.rst).
NEW_SOURCES = ("lib", "ocf", "Makefile", "pyproject.toml", "README.rst")
BUILD_NEEDS = ("setuptools>=61", "wheel")
THREE_NODES = os.path.join(cluster.CRM_EXAMPLES, "three-nodes.crm")
PRIMITIVE = "web-ip"
PORT = scenarios.PORT
PAIRS_PER_BUCKET = 6
MONITOR_INTERVAL = 10.0  # s, three-nodes.crm's
REBUILT_LIMIT = 3 * MONITOR_INTERVAL  # s from the install's end to listable tables
DARK_LIMIT = 1.0  # s a bucket may go unanswered in a node's upgrade (measured: 0)
INSTALL_TIMEOUT = 300
_REBUILT = re.compile(r"rebuilt the filter for %s in (\d+) ms" % re.escape(VIP))


def wheelhouse(directory):
    """The build's only needs, fetched once on the host (the package registry),
    so that pip inside the nodes runs offline."""
    os.makedirs(directory)
    result = subprocess.run([sys.executable, "-m", "pip", "download", "--quiet",
                             "--disable-pip-version-check", "--dest", directory,
                             *BUILD_NEEDS], capture_output=True, text=True, timeout=300)
    if result.returncode != 0:
        pytest.fail("cannot fetch %s for the nodes' offline builds: %s"
                    % (" ".join(BUILD_NEEDS), result.stderr.strip()[-300:]))
    return directory


def unpack_old(target):
    with tarfile.open(OLD_ARCHIVE) as archive:
        assert archive.pax_headers.get("comment") == OLD_COMMIT, archive.pax_headers
        # Our own archive; filter= only where this Python has it (3.11.4+).
        archive.extractall(target, **({"filter": "data"} if hasattr(tarfile, "data_filter")
                                      else {}))
    return target


def copy_new(target):
    os.makedirs(target)
    for name in NEW_SOURCES:
        source = os.path.join(REPO, name)
        if os.path.isdir(source):
            shutil.copytree(source, os.path.join(target, name),
                            ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
        else:
            shutil.copy(source, target)
    return target


def make_install(c, node, source, wheels):
    """``make install`` of ``source`` in ``node`` (its private install); seconds."""
    began = time.monotonic()
    c.node_exec(node, ["make", "-C", source, "install"], timeout=INSTALL_TIMEOUT,
                env={"PIP_NO_INDEX": "1", "PIP_FIND_LINKS": wheels,
                     "PIP_DISABLE_PIP_VERSION_CHECK": "1"})
    return time.monotonic() - began


def installed_version(c, node):
    return c.node_exec(node, ["/opt/clusterip/bin/python3", "-c",
                              "import clusterip; print(clusterip.__version__)"]).stdout.strip()


def listable(c, node):
    """Whether nft lists the node's set owned as text (layout 2; layout 1 crashes
    nft 1.0.6 there, and 1.1.x as JSON too)."""
    return c.lab.run(node, "nft", "list", "set", oracle.filter_family(VIP),
                     oracle.table_name(VIP), "owned", check=False).returncode == 0


def served_per_pacemaker(c):
    """{node: bucket} when Pacemaker runs one instance per node, else None."""
    buckets = c.status().buckets(PRIMITIVE)
    if sorted(buckets) != [1, 2, 3] or sorted(map(str, buckets.values())) != sorted(c.nodes):
        return None
    return {node: bucket for bucket, node in buckets.items()}


def answered_by(c, pairs, nodes):
    """{"src:sport": node} when a node of ``nodes`` answered every pair, else None."""
    answers, _ = c.lab.connect(VIP, PORT, pairs)
    return answers if all(answer in nodes for answer in answers.values()) else None


def rebuilds(c, node):
    """The ms of each rebuild the node's agent logged."""
    return [int(m.group(1)) for line in c.agent_lines(node, ("rebuilt the filter",))
            for m in [_REBUILT.search(line)] if m]


def guards(c, node):
    """PIDs of the guard processes in the node's network namespace."""
    found = []
    for pid in cluster.netns_pids(c.lab.ns(node)):
        try:
            with open("/proc/%d/cmdline" % pid, "rb") as handle:
                if b"guard_main" in handle.read():
                    found.append(pid)
        except OSError:
            pass
    return found


def nft_version():
    """(major, minor) of this root's nft."""
    found = re.search(r"v(\d+)\.(\d+)", subprocess.run(
        ["nft", "--version"], capture_output=True, text=True, check=True).stdout)
    return int(found[1]), int(found[2])


# The pre-#8 agent never ran on Debian 13: libnftables 1.1 (in-process, as
# the agent uses it) crashes listing its layout-1 tables, so its own start
# fails there.  What a Debian 13 node meets after such an upgrade -- the new
# agent and layout-1 tables -- is tests/netns/test_upgrade.py's, which the
# other-release tier runs on that release.
@pytest.mark.skipif(nft_version() >= (1, 1), reason="the pre-#8 agent cannot run with "
                    "libnftables >= 1.1 (Debian 13): tests/netns/test_upgrade.py covers it")
def test_make_install_node_by_node_under_traffic_from_layout_1():
    with cluster.Cluster(token=1000, private_install=True) as c:
        work = os.path.join(c.lab.directory, "upgrade")
        wheels = wheelhouse(os.path.join(work, "wheels"))
        with concurrent.futures.ThreadPoolExecutor(len(c.nodes)) as pool:
            old_install = dict(zip(c.nodes, pool.map(
                lambda node: make_install(c, node, unpack_old(os.path.join(work, node, "old")),
                                          wheels), c.nodes), strict=True))
        for node in c.nodes:
            assert installed_version(c, node) == OLD_VERSION, node
        c.load_crm(THREE_NODES)
        c.start_responders(PORT)
        bucket_of_node = wait_until(lambda: served_per_pacemaker(c), 120, "one bucket per node")
        assert not any(listable(c, node) for node in c.nodes), \
            "the old agent's tables should be in layout 1"

        # Which bucket each pair hashes to: who answers it, while each node serves one.
        pairs = [(source, port) for source in c.lab.sources[:100]
                 for port in scenarios.SOURCE_PORTS]
        answers = wait_until(lambda: answered_by(c, pairs, bucket_of_node), 30,
                             "every pair answered by one node")
        bucket_of = {pair: bucket_of_node[node] for pair, node in answers.items()}
        watched, watched_buckets = cluster.watched_pairs(bucket_of, PAIRS_PER_BUCKET)
        assert sorted(set(watched_buckets.values())) == [1, 2, 3], watched_buckets

        steps = []
        with cluster.watching(c, VIP, PORT, watched, 900) as (watch, sampler):
            for node in c.nodes:
                began = time.monotonic()
                install = make_install(c, node, copy_new(os.path.join(work, node, "new")),
                                       wheels)
                installed = time.monotonic()
                rebuilt = wait_until(lambda node=node: listable(c, node) and time.monotonic(),
                                     REBUILT_LIMIT, "%s's tables rebuilt" % node, 0.05)
                time.sleep(0.5)  # rounds after the rebuild
                step = {"node": node, "install_s": round(install, 1),
                        "rebuilt_after_install_s": round(rebuilt - installed, 1),
                        "rebuild_ms": rebuilds(c, node),
                        "dark": watch.dark(watched_buckets, began, time.monotonic())}
                c.log("upgraded %s: %s" % (node, step))
                steps.append(step)

        new_version = installed_version(c, c.nodes[0])
        record(steps, old_install, sampler, new_version)
        status = c.status()
        assert not status.failures, status.failures
        assert not any(status.failcounts.values()), status.failcounts
        for node in c.nodes:
            assert installed_version(c, node) == new_version != OLD_VERSION, node
            assert not oracle.nft_listing_failures(c.lab, node), node
            assert c.owned(node) == {bucket_of_node[node]}, (node, c.owned(node))
            assert guards(c, node), "no guard on %s" % node
        assert served_per_pacemaker(c) == bucket_of_node
        for step in steps:
            assert len(step["rebuild_ms"]) == 1, step  # one monitor rebuilt, once
            for bucket, (longest, _, _) in step["dark"].items():
                assert longest <= DARK_LIMIT, (step["node"], bucket, step)
        assert not watch.errors, watch.errors[:5]
        assert sampler.samples > 50 and not sampler.violations, sampler.violations[:5]
        answers, _ = c.lab.connect(VIP, PORT, pairs)
        wrong = {pair: answer for pair, answer in answers.items()
                 if bucket_of_node.get(answer) != bucket_of[pair]}
        assert not wrong, dict(list(wrong.items())[:5])


def record(steps, old_install, sampler, new_version):
    REPORT.notes.append(
        "upgrade in place %s -> %s (make install node by node under traffic, from layout 1): "
        "old installs %s s; ownership sampled %d times, %d violations" % (
            OLD_VERSION, new_version, "/".join("%.1f" % s for s in old_install.values()),
            sampler.samples, len(sampler.violations)))
    for step in steps:
        REPORT.notes.append(
            "  %s: make install %.1f s, tables rebuilt %.1f s after it (monitor), rebuild %s ms; "
            "longest unanswered per bucket (s) %s" % (
                step["node"], step["install_s"], step["rebuilt_after_install_s"],
                "/".join(map(str, step["rebuild_ms"])) or "?",
                {b: v[0] for b, v in step["dark"].items()}))

