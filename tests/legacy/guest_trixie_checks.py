"""The clusterip backend over Debian 13 userspace: run INSIDE a Linux 6.1 guest
booted over the trixie root (test_legacy_tier.py).  The kernel has CLUSTERIP,
iptables is 1.8.11, and python-iptables 1.2.0 (the venv's) cannot set a
match's or target's options with its libxtables (ldx/python-iptables#353):
start and validate-all must exit 5 with a reason naming the cause and the
remedies, before touching anything; stop succeeds; the node stays as it was.
Oracles: iptables-legacy -S and iptables-legacy -V of this root, the /proc
file, ip -j."""

import json
import os
import re
import subprocess
import sys

import pytest

import oracle

# The same VIP, parameters and one-node lab as the checks over Debian 12.
from guest_clusterip_checks import LIB, PARAMS, VIP, lab, meta  # noqa: F401

CLUSTER_MAC = oracle.default_cluster_mac(VIP)
REMEDIES = ("python-iptables 1.2.0", "libxtables 1.8.11 ", "ldx/python-iptables#353",
            "backend=nft", "iptables <= 1.8.10", "Debian 12")


def snapshot(lab):
    """What the agent could have changed on the node, read with the root's tools."""
    return oracle.snapshot(lab, "n0", "clusterip")


def reasons(err):
    return [line for line in err.splitlines() if line.startswith("ocf-exit-reason:")]


def test_this_guest_is_linux_6_1_with_debian_13_userspace():
    assert os.uname().release.startswith("6.1.")
    version = subprocess.run(["iptables-legacy", "-V"], capture_output=True, text=True).stdout
    assert "v1.8.11" in version, version
    assert sys.version_info[:2] == (3, 13), sys.version


def test_the_probe_itself_reports_the_bug_without_crashing():
    # In a child process: a crash would show as a signal, not as an answer.
    code = ("import json; from clusterip.backends import clusterip as c; i = c._import_iptc(); "
            "print(json.dumps([c._option_problem(i), c._libxtables_version(i)]))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            env=dict(os.environ, PYTHONPATH=LIB), timeout=120)
    assert result.returncode == 0, (result.returncode, result.stderr)
    problem, version = json.loads(result.stdout)
    assert version == "1.8.11"
    assert "no such parameter" in problem, problem


@pytest.mark.parametrize("backend", ["clusterip", "auto"])  # auto: CLUSTERIP on this kernel
def test_start_and_validate_all_are_5_with_the_reason_and_change_nothing(lab, backend):
    params = dict(PARAMS, backend=backend)
    before = snapshot(lab)
    assert not [r for r in oracle.iptables_legacy_rules(lab, "n0") if not r.startswith("-P ")]
    assert oracle.leftovers(lab, "n0", "clusterip", [VIP]) == []
    for action in ("start", "validate-all"):
        rc, _, err = lab.agent("n0", action, params, meta(0), "vip:0")
        found = reasons(err)
        assert rc == 5 and len(found) == 1, (action, rc, err)
        for words in REMEDIES:
            assert words in found[0], (action, words, found[0])
        assert "Traceback" not in err, err
        assert snapshot(lab) == before, action
    # Never started here: not running; stop succeeds (a failed stop fences).
    rc, _, err = lab.agent("n0", "monitor", params, meta(0), "vip:0")
    assert rc == 7, err
    rc, _, err = lab.agent("n0", "stop", params, meta(0), "vip:0")
    assert rc == 0, err
    assert snapshot(lab) == before
    assert oracle.leftovers(lab, "n0", "clusterip", [VIP]) == []  # no VIP, no cluster MAC


def test_the_kernel_target_itself_works_here(lab):
    # The refusal is python-iptables' limit, not the kernel's: this root's own
    # iptables-legacy (1.8.11, its own option parser) drives CLUSTERIP fine.
    rule = ["-d", VIP, "-i", "eth0", "-j", "CLUSTERIP", "--new", "--hashmode", "sourceip",
            "--clustermac", CLUSTER_MAC, "--total-nodes", "3", "--local-node", "1"]
    lab.run("n0", "iptables-legacy", "-A", "INPUT", *rule)
    try:
        (listed,) = oracle.clusterip_rules(lab, "n0")
        assert re.search(r"--hashmode sourceip --clustermac 03:C1:C6:12:00:64 "
                         r"--total-nodes 3 --local-node 1", listed), listed
        assert oracle.clusterip_proc(lab, "n0", VIP) == "1"
    finally:
        lab.run("n0", "iptables-legacy", "-D", "INPUT", *rule)
    assert oracle.clusterip_proc(lab, "n0", VIP) is None
