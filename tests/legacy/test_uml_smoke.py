"""The legacy tier's foundation: a Linux 6.1 user-mode-linux guest boots here,
over the tier's Debian 12 root (guest_roots.py), and its kernel really has a
working CLUSTERIP target.

Runs on the host, as root.  When the guest cannot run (package missing, not
root) these tests fail; they never skip, so CI cannot pass without the tier.
One guest boot answers all the questions (a boot costs ~2 s); each test checks
one fact from its report, with the kernel's own files and tools as the oracle.
"""

import os
import re
import subprocess
import time

import pytest

import uml  # a sibling file, not a package (pytest puts tests/legacy on the path)

CHECKOUT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

VIP = "10.9.0.100"
VENV_PYTHON = "/opt/clusterip/bin/python3"  # the root's venv (make install)
PROC = f"/proc/net/ipt_CLUSTERIP/{VIP}"
GUEST_RC = 42  # the script's own exit code, to check that it comes back

# python-iptables (what the clusterip backend uses) reading the rule back.
IPTC_PROBE = ("import iptc; "
              "print(*(r.target.name for r in iptc.Chain(iptc.Table(iptc.Table.FILTER), "
              '"INPUT").rules))')

# Runs in the guest.  Prints "key=value" lines; nothing it does reaches the host
# except the file it writes into the shared directory $OUT.
SCRIPT = f"""
exec 2>&1
echo "kernel=$(uname -r)"
echo "cwd=$PWD"
echo "marker=$SMOKE_MARKER"
modprobe ipt_CLUSTERIP && echo "modprobe=ok"
ip netns add smoke &&
ip -n smoke link add veth0 type veth peer name veth1 &&
ip -n smoke link set veth0 up && echo "veth=ok"
ip -n smoke link add br0 type bridge && echo "bridge=ok"
ip netns exec smoke iptables-legacy -A INPUT -d {VIP} -i veth0 -j CLUSTERIP --new \\
    --hashmode sourceip --clustermac 01:00:5E:00:00:20 --total-nodes 2 --local-node 1 \\
    && echo "rule=ok"
echo "buckets_new=$(ip netns exec smoke cat {PROC})"
ip netns exec smoke sh -c 'echo +2 > {PROC}'
echo "buckets_added=$(ip netns exec smoke cat {PROC})"
ip netns exec smoke sh -c 'echo -1 > {PROC}'
echo "buckets_removed=$(ip netns exec smoke cat {PROC})"
echo "rule_listed=$(ip netns exec smoke iptables-legacy -S INPUT | grep -c CLUSTERIP)"
echo "host_ns_buckets=$(ls /proc/net/ipt_CLUSTERIP 2>/dev/null | wc -l)"
echo "python=$({VENV_PYTHON} -c 'import sys; print(sys.version.split()[0])')"
echo "iptc_sees=$(ip netns exec smoke {VENV_PYTHON} -c '{IPTC_PROBE}')"
echo "debian=$(cat /etc/debian_version)"
echo "checkout_ro=$(touch {CHECKOUT}/.uml-smoke 2>&1 || echo refused)"
touch /usr/lib/guest-only-file && echo "root_writable=ok"
echo written-in-guest > "$OUT/report"
exit {GUEST_RC}
"""


@pytest.fixture(scope="module")
def guest(tmp_path_factory, legacy_root):
    found = uml.problems(legacy_root)
    assert found == [], "user-mode-linux guest cannot run: " + "; ".join(found)
    out = tmp_path_factory.mktemp("uml-smoke")
    result = uml.capture(["sh", "-c", SCRIPT], cwd="/usr/lib",
                         env={"SMOKE_MARKER": "from-host", "OUT": str(out)},
                         writable=[str(out)], readonly=[CHECKOUT], root=legacy_root,
                         timeout=120, echo=True)
    facts = dict(re.findall(r"^(\w+)=(.*)$", result.output, re.M))
    return result, facts, out, legacy_root


def test_guest_can_run_here(legacy_root):
    assert uml.problems(legacy_root) == []


def test_kernel_is_6_1(guest):
    _, facts, _, _ = guest
    assert facts["kernel"].startswith("6.1."), facts


def test_exit_code_cwd_and_env_come_through(guest):
    result, facts, _, _ = guest
    assert result.returncode == GUEST_RC
    assert facts["cwd"] == "/usr/lib"
    assert facts["marker"] == "from-host"


def test_clusterip_module_loads(guest):
    _, facts, _, _ = guest
    assert facts.get("modprobe") == "ok"


def test_netns_veth_bridge(guest):
    _, facts, _, _ = guest
    assert facts.get("veth") == "ok"
    assert facts.get("bridge") == "ok"


def test_clusterip_rule_and_proc_file(guest):
    _, facts, _, _ = guest
    assert facts.get("rule") == "ok"
    assert facts["rule_listed"] == "1"
    assert facts["buckets_new"] == "1"
    assert facts["buckets_added"] == "1,2"
    assert facts["buckets_removed"] == "2"
    # /proc/net/ipt_CLUSTERIP is per network namespace.
    assert facts["host_ns_buckets"] == "0"


def test_python_runs_in_guest(guest):
    # The root's own interpreter, the one its venv was made with.
    _, facts, _, root = guest
    # From the venv's own record: its python3 is an absolute link, which
    # realpath would follow into the host's /usr/bin rather than the root's.
    venv = os.path.dirname(os.path.dirname(VENV_PYTHON))
    with open(root.rstrip("/") + venv + "/pyvenv.cfg", encoding="utf-8") as f:
        made_with = dict(line.split(" = ", 1) for line in f.read().splitlines() if " = " in line)
    assert facts["python"] == made_with["version"], (facts, made_with)


def test_the_guest_runs_debian_12_userspace_with_the_checkout_read_only(guest):
    _, facts, _, _ = guest
    assert facts["debian"].startswith("12."), facts
    assert "Read-only file system" in facts["checkout_ro"], facts
    assert not os.path.exists(os.path.join(CHECKOUT, ".uml-smoke"))


def test_python_iptables_sees_the_rule(guest):
    _, facts, _, _ = guest
    assert facts["iptc_sees"] == "CLUSTERIP"


def test_guest_writes_stay_in_guest_except_shared_dir(guest):
    _, facts, out, root = guest
    assert facts.get("root_writable") == "ok"
    assert not os.path.exists("/usr/lib/guest-only-file")
    assert not os.path.exists(os.path.join(root, "usr/lib/guest-only-file"))
    assert (out / "report").read_text() == "written-in-guest\n"


def test_timeout_kills_the_whole_guest(monkeypatch, legacy_root):
    launched = []
    real_popen = subprocess.Popen

    def recording_popen(*args, **kwargs):
        proc = real_popen(*args, **kwargs)
        if args[0][0] == uml.LINUX:  # not the shim's gcc
            launched.append(proc.pid)
        return proc
    monkeypatch.setattr(uml.subprocess, "Popen", recording_popen)

    started = time.monotonic()
    # cwd "/": the caller's (the checkout) may sit under /tmp, which the guest has fresh.
    rc = uml.run(["sleep", "600"], cwd="/", timeout=5, root=legacy_root)
    assert rc == uml.TIMEOUT_RC
    assert time.monotonic() - started < 20
    [pgid] = launched  # UML ran as the leader of its own process group
    assert _live_group_members(pgid) == []


def _live_group_members(pgid):
    """Processes of the group that are not zombies (dead helpers are
    reparented to the host's init and reaped by it, in its own time)."""
    members = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/stat") as f:
                state, _, pgrp = f.read().rsplit(")", 1)[1].split()[:3]
        except OSError:
            continue
        if int(pgrp) == pgid and state not in "ZX":
            members.append(int(pid))
    return members
