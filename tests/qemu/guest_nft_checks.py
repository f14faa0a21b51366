"""Run INSIDE the qemu tier's guest (test_qemu_tier.py): Debian 12's own
Linux 6.1 kernel over the bookworm root.  The kernel is the one Debian 12
nodes boot, with its modules; nf_tables loads from them; ``backend=auto``
serves the VIP with nft there (``nft list tables`` shows the agent's table,
no CLUSTERIP rule or /proc file exists).  Oracles: uname, modprobe and
/proc/modules, nft and iptables-legacy of the root.  Fails, never skips,
when anything is missing."""

import os
import re
import subprocess
import sys

import pytest

import oracle
from netlab import Lab
from scenarios import TIMEOUT_SCALE, VIP, agent_params, clone_meta


def run(*argv):
    return subprocess.run(argv, capture_output=True, text=True, timeout=120 * TIMEOUT_SCALE)


@pytest.fixture
def lab():
    with Lab(nodes=1, sources=0, timeout_scale=TIMEOUT_SCALE) as lab:
        yield lab


def test_this_guest_runs_debian_12s_linux_6_1_with_its_modules():
    release = os.uname().release
    with open("/etc/debian_version") as f:
        debian = f.read().strip()
    nft = run("nft", "--version").stdout.strip()
    # One line for the report: what ran.
    print("qemu guest: Linux %s, Debian %s, %s, Python %s"
          % (release, debian, nft, sys.version.split()[0]))
    assert re.fullmatch(r"6\.1\.\d+-\d+-amd64", release), release
    assert debian.startswith("12."), debian
    assert os.path.isdir("/lib/modules/%s/kernel/net/netfilter" % release)
    assert nft.startswith("nftables v1.0.6"), nft


def test_nf_tables_loads_from_the_kernel_package():
    for module in ("nf_tables", "nft_hash", "veth", "bridge"):
        result = run("modprobe", module)
        assert result.returncode == 0, (module, result.stderr)
    with open("/proc/modules") as f:
        loaded = {line.split()[0] for line in f}
    assert {"nf_tables", "veth", "bridge"} <= loaded, sorted(loaded)


def test_backend_auto_serves_with_nft_on_this_kernel(lab):
    params = agent_params("auto")
    for instance in (0, 1):
        rc, _, err = lab.agent("n0", "start", params, clone_meta(instance, 2), "vip:%d" % instance)
        assert rc == 0, err
        rc, _, err = lab.agent("n0", "monitor", params, clone_meta(instance, 2),
                               "vip:%d" % instance)
        assert rc == 0, err
    listed = lab.run("n0", "nft", "list", "tables").stdout
    print(listed)
    assert "table ip %s" % oracle.table_name(VIP) in listed.splitlines(), listed
    assert oracle.owned(lab, "n0", VIP, "nft") == {1, 2}
    assert oracle.clusterip_proc_files(lab, "n0") == []
    assert oracle.clusterip_rules(lab, "n0") == []
    for instance in (1, 0):
        rc, _, err = lab.agent("n0", "stop", params, clone_meta(instance, 2), "vip:%d" % instance)
        assert rc == 0, err
    left = oracle.leftovers(lab, "n0", "nft", [VIP])
    assert not left, left
