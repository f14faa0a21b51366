"""Checks of the CLUSTERIP backend that only make sense with the real target:
run INSIDE the Linux 6.1 guest by test_legacy_tier.py (the file name keeps the
host's pytest from collecting it).  Oracles: iptables-legacy -S and the
/proc/net/ipt_CLUSTERIP file, read with independent tools."""

import fcntl
import os
import re
import subprocess
import sys
import time

import pytest

import oracle
from netlab import Lab
from scenarios import VIP, agent_params
from scenarios import clone_meta as meta

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
LIB = os.path.join(REPO, "lib")  # for children run with a clean environment
PARAMS = agent_params("clusterip")


@pytest.fixture
def lab():
    with Lab(nodes=1, sources=0, timeout_scale=3) as lab:
        yield lab


def start(lab, instance, total=3, **params):
    rc, _, err = lab.agent("n0", "start", dict(PARAMS, **params), meta(instance, total),
                           "vip:%d" % instance)
    assert rc == 0, err
    return rc


def rules(lab):
    return oracle.clusterip_rules(lab, "n0")


def assert_clean(lab, vip=VIP):
    """Nothing of ``vip`` on the node: no CLUSTERIP rule or bucket file, no address,
    no cluster MAC membership."""
    left = oracle.leftovers(lab, "n0", "clusterip", [vip])
    assert not left, left


def test_first_start_creates_one_rule_later_ones_write_the_proc_file(lab):
    start(lab, 0)
    assert oracle.clusterip_proc(lab, "n0", VIP) == "1"
    start(lab, 2)
    assert oracle.clusterip_proc(lab, "n0", VIP) == "1,3"
    (rule,) = rules(lab)
    assert re.search(r"-d %s/32 -i eth0 -j CLUSTERIP --new --hashmode sourceip "
                     r"--clustermac 03:C1:C6:12:00:64 --total-nodes 3 --local-node 1" % VIP,
                     rule), rule
    # The instance that created the rule stops; the rule (local-node 1) stays
    # for the remaining instance and the /proc file says who owns what.
    rc, _, err = lab.agent("n0", "stop", PARAMS, meta(0), "vip:0")
    assert rc == 0, err
    assert oracle.clusterip_proc(lab, "n0", VIP) == "3" and len(rules(lab)) == 1
    assert lab.agent("n0", "monitor", PARAMS, meta(2), "vip:2")[0] == 0
    assert lab.agent("n0", "monitor", PARAMS, meta(0), "vip:0")[0] == 7
    rc, _, err = lab.agent("n0", "stop", PARAMS, meta(2), "vip:2")
    assert rc == 0, err
    assert_clean(lab)


def test_kernel_errors_for_owned_and_missing_buckets_are_idempotent(lab):
    start(lab, 0)
    code = ("from clusterip import params; from clusterip.backends import clusterip as c;"
            "p = params.parse({'OCF_RESKEY_ip': '%s', 'OCF_RESKEY_CRM_meta_clone': '0',"
            "'OCF_RESKEY_CRM_meta_clone_max': '3', 'OCF_RESKEY_CRM_meta_globally_unique': '1'});"
            "b = c.ClusteripBackend(); b.add_bucket(p, 1); b.add_bucket(p, 1);"  # ENOMEM: owned
            "b.remove_bucket(p, 2); b.remove_bucket(p, 2)" % VIP)  # ENOENT: not owned
    result = lab.run("n0", sys.executable, "-c", code, env={"PYTHONPATH": LIB}, check=False)
    assert result.returncode == 0, result.stderr
    assert oracle.clusterip_proc(lab, "n0", VIP) == "1"


def test_a_changed_configuration_rebuilds_the_rule_keeping_the_owned_buckets(lab):
    start(lab, 0)
    start(lab, 1, hashmode="sourceip-sourceport")  # the rule must follow, in two commits
    (rule,) = rules(lab)
    assert "--hashmode sourceip-sourceport " in rule
    assert oracle.clusterip_proc(lab, "n0", VIP) == "1,2"


def test_more_than_16_buckets_is_refused_with_6(lab):
    rc, _, err = lab.agent("n0", "start", PARAMS, meta(0, 17), "vip:0")
    assert rc == 6 and "limit of 16" in err
    assert rules(lab) == []


def test_auto_chooses_clusterip_where_nf_tables_cannot_hold_the_tables(lab):
    """This kernel has CLUSTERIP, and its nf_tables no ip or arp chains (the
    user-mode-linux build): auto asks the kernel and takes clusterip."""
    params = dict(PARAMS)
    del params["backend"]
    rc, _, err = lab.agent("n0", "start", params, meta(0), "vip:0")
    assert rc == 0, err
    assert len(rules(lab)) == 1 and oracle.nft_tables(lab, "n0") == []
    assert lab.agent("n0", "stop", params, meta(0), "vip:0")[0] == 0


def test_start_waits_for_the_xtables_lock_held_by_someone_else(lab):
    holder = subprocess.Popen(["flock", "/run/xtables.lock", "sleep", "3"])
    try:
        time.sleep(0.5)
        began = time.monotonic()
        start(lab, 0)
        assert time.monotonic() - began >= 2.0  # it waited instead of racing iptables
    finally:
        holder.wait(timeout=30)
    assert len(rules(lab)) == 1


def test_a_held_xtables_lock_fails_the_action_within_its_timeout_leaving_nothing(lab):
    # Someone else (iptables, firewalld ...) holds the lock longer than our timeout:
    # the start waits at most within its own timeout, then fails with a reason.
    timeout_ms = 5000
    meta_timeout = dict(meta(0), timeout=timeout_ms)
    with open("/run/xtables.lock", "a") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        began = time.monotonic()
        rc, _, err = lab.agent("n0", "start", PARAMS, meta_timeout, "vip:0")
        seconds = time.monotonic() - began
    reasons = [line for line in err.splitlines() if line.startswith("ocf-exit-reason:")]
    assert rc == 1 and len(reasons) == 1 and "lock" in reasons[0], err
    assert "/run/xtables.lock" in reasons[0], reasons
    # Within the action's timeout (plus the guest's slow process start-up).
    assert 2.0 <= seconds <= timeout_ms / 1000.0 + 1.5, seconds
    assert_clean(lab)
    # Failed, not "never ran": the monitor says so; stop then cleans up and start works.
    assert lab.agent("n0", "monitor", PARAMS, meta(0), "vip:0")[0] == 1
    assert lab.agent("n0", "stop", PARAMS, meta(0), "vip:0")[0] == 0
    start(lab, 0)
    assert len(rules(lab)) == 1


def test_stop_with_clone_max_above_the_limit_succeeds_and_cleans_up(lab):
    # clone-max raised from 16 to 17: start and monitor are 6, but the stop of
    # a running instance must succeed (a failed stop fences the node) and clean up.
    start(lab, 3, total=16)
    rc, _, err = lab.agent("n0", "monitor", PARAMS, meta(3, 17), "vip:3")
    assert rc == 6 and "limit of 16" in err, err
    rc, _, err = lab.agent("n0", "stop", PARAMS, meta(3, 17), "vip:3")
    assert rc == 0, err
    assert_clean(lab)


def test_graceful_handover_is_refused_with_6_and_changes_nothing(lab):
    # CLUSTERIP itself drops every packet of a bucket the node does not own,
    # established or not: the agent cannot keep a moved bucket's connections.
    for backend in ("clusterip", "auto"):  # auto picks clusterip on this kernel
        params = dict(PARAMS, backend=backend, graceful_handover="true")
        for action in ("validate-all", "start", "monitor"):
            rc, _, err = lab.agent("n0", action, params, meta(0), "vip:0")
            reasons = [line for line in err.splitlines() if line.startswith("ocf-exit-reason:")]
            assert rc == 6 and len(reasons) == 1 and "backend=nft" in reasons[0], (action, err)
        assert lab.agent("n0", "stop", params, meta(0), "vip:0")[0] == 0
    assert_clean(lab)


def test_ipv6_is_refused_with_6_and_changes_nothing():
    # ipt_CLUSTERIP is an IPv4 target; auto (CLUSTERIP on this kernel) refuses
    # too rather than switch to nft by itself.  Stop succeeds.
    with Lab(nodes=1, sources=0, timeout_scale=3, ipv6=True) as lab:
        for backend in ("clusterip", "auto"):
            params = dict(PARAMS, ip="2001:db8::100", cidr_netmask=64, backend=backend)
            for action in ("validate-all", "start", "monitor"):
                rc, _, err = lab.agent("n0", action, params, meta(0), "vip:0")
                reasons = [line for line in err.splitlines()
                           if line.startswith("ocf-exit-reason:")]
                assert rc == 6 and len(reasons) == 1 and "backend=nft" in reasons[0] \
                    and "IPv6" in reasons[0], (backend, action, err)
            assert lab.agent("n0", "stop", params, meta(0), "vip:0")[0] == 0
        assert_clean(lab, params["ip"])
        assert oracle.nft_tables(lab, "n0") == []
