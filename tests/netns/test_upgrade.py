"""A node upgraded in place: the agent meets the nft tables of the layout before.

Before layout 2 the agent declared its set ``owned`` as ``typeof jhash ...``,
which nft cannot print: every listing of it crashes (nft 1.0.6 as text,
libnftables 1.1.x as JSON too, which is in-process for the agent).  A node
running those tables when the agent is upgraded must see no action crash
and, since Pacemaker does not notice an upgrade in place (no restart), no
failed operation: the next recurring monitor of an instance started here
rebuilds them in one transaction with the node's owned buckets kept (as a
start does) and answers 0, and spawns the guard the old agent did not
have; a probe, a call by hand and an instance not started here name the
old layout and write nothing; stop removes it.  The address as versions
before issue #13 added it (IPv4 without noprefixroute, IPv6 not
deprecated) is added again by that monitor, with the flags it needs.  The old tables are made
with tests/layout1.py, whose output tests/unit pins to the old agent's own.
"""

import json
import os

from test_guard import guard_pids, wait_for
from test_own_connections import readd_as_source
from test_reliability import assert_nft_lists, assert_state, expect, lab, per_family, reasons  # noqa: F401 (lab)

import layout1
import scenarios
from clusterip import params as agent_params
from clusterip.address import Placement
from clusterip.backends import nft
from oracle import prefixlen, table_name

STATUS = os.environ.get("VENV", "/opt/clusterip") + "/bin/clusterip"
OLD = "older clusterip"  # what the monitor's reason says of the old layout
RECURRING = 10000  # ms: a recurring monitor's interval (0: a probe)


def load_layout_1(lab, vip, owned):
    """Replace n0's tables of ``vip`` with the ones the old agent built (same
    parameters, these buckets owned), as a node upgraded in place has them."""
    env = {"OCF_RESKEY_" + k: str(v) for k, v in scenarios.agent_params(vip=vip).items()}
    env.update({"OCF_RESKEY_CRM_meta_clone": "0", "OCF_RESKEY_CRM_meta_clone_max": "3",
                "OCF_RESKEY_CRM_meta_globally_unique": "true"})
    parsed = agent_params.parse(env)
    nic_mac = None
    if parsed.ipv6:
        links = json.loads(lab.run("n0", "ip", "-j", "link", "show", "eth0").stdout)
        nic_mac = links[0]["address"]
    script = nft.build_create_script(parsed, Placement(nic="eth0", prefixlen=prefixlen(vip)),
                                     owned, nic_mac)
    lab.run("n0", "nft", "-f", "-", input=layout1.from_layout2(script))


def running_on_layout_1(lab, family):
    """Instances 0 and 1 of the family's VIP started in n0 (firewall_guard
    off, test_reliability's default here: no guard, as the old agent ran
    them), their tables then swapped for the old agent's; returns the VIP."""
    for instance in (0, 1):
        expect(lab, "n0", "start", instance, 0, vip=family.vip)
    load_layout_1(lab, family.vip, {1, 2})
    return family.vip


def expect_old_layout_named(lab, vip, instance):
    """A probe (interval 0) names the old layout and changes nothing."""
    call = expect(lab, "n0", "monitor", instance, 1, vip=vip)
    found = reasons(call.err)
    assert len(found) == 1 and OLD in found[0] and table_name(vip) in found[0], call.err


@per_family
def test_probes_and_status_name_the_old_layout_without_listing_it(lab, family):
    vip = running_on_layout_1(lab, family)
    for instance in (0, 1):
        expect_old_layout_named(lab, vip, instance)
    expect(lab, "n0", "monitor", 2, 7, vip=vip)  # a probe: not running here
    # A recurring monitor of an instance not started here writes nothing either.
    expect(lab, "n0", "monitor", 2, 7, vip=vip, interval=RECURRING)
    expect_old_layout_named(lab, vip, 0)
    expect(lab, "n0", "validate-all", 0, 0, vip=vip)
    status = lab.run("n0", STATUS, "status", check=False)
    assert status.returncode == 0 and OLD in status.stdout \
        and "owned here: 1,2" in status.stdout, status
    report = json.loads(lab.run("n0", STATUS, "status", "--json").stdout)["node"]
    assert [(v["vip"], v["owned"]) for v in report] == [(vip, [1, 2])], report


@per_family
def test_a_recurring_monitor_rebuilds_the_old_layout_keeping_the_owned_buckets(lab, family):
    vip = running_on_layout_1(lab, family)
    assert not guard_pids(lab)
    # The upgraded agent's monitor, with the parameters Pacemaker had (no
    # firewall_guard: the new default, on).  One instance's rebuilds the VIP.
    upgraded = scenarios.agent_params(vip=vip)
    call = expect(lab, "n0", "monitor", 1, 0, vip=vip, interval=RECURRING, params=upgraded)
    assert "rebuilt the filter for %s" % vip in call.err and OLD in call.err, call.err
    assert_nft_lists(lab, "rebuilt by the monitor")
    assert_state(lab, "n0", {vip: {1, 2}}, "rebuilt by the monitor")
    wait_for(lambda: guard_pids(lab), 5, "the guard the monitor spawns")
    for instance in (0, 1):
        call = expect(lab, "n0", "monitor", instance, 0, vip=vip, interval=RECURRING,
                      params=upgraded)
        assert "rebuilt" not in call.err, call.err
    assert len(guard_pids(lab)) == 1, guard_pids(lab)


@per_family
def test_start_rebuilds_the_old_layout_keeping_the_owned_buckets(lab, family):
    vip = running_on_layout_1(lab, family)
    expect(lab, "n0", "start", 1, 0, vip=vip)  # one instance's start rebuilds the whole VIP
    assert_nft_lists(lab, "rebuilt by start")
    assert_state(lab, "n0", {vip: {1, 2}}, "rebuilt by start")
    for instance in (0, 1):
        expect(lab, "n0", "monitor", instance, 0, vip=vip, interval=RECURRING)


@per_family
def test_pacemakers_recovery_stop_then_start_on_the_old_layout(lab, family):
    vip = running_on_layout_1(lab, family)
    expect_old_layout_named(lab, vip, 0)
    expect(lab, "n0", "stop", 0, 0, vip=vip)  # its bucket leaves the old set
    expect_old_layout_named(lab, vip, 1)  # instance 1 still runs, in the old layout
    expect(lab, "n0", "start", 0, 0, vip=vip)
    assert_nft_lists(lab, "recovered")
    assert_state(lab, "n0", {vip: {1, 2}}, "recovered")


@per_family
def test_stop_removes_the_old_layout(lab, family):
    vip = running_on_layout_1(lab, family)
    for instance in (1, 0):
        expect(lab, "n0", "stop", instance, 0, vip=vip)
    assert_state(lab, "n0", {vip: set()}, "stopped")
    for instance in (0, 1, 2):
        expect(lab, "n0", "monitor", instance, 7, vip=vip)


@per_family
def test_a_recurring_monitor_adds_the_older_versions_address_again_with_its_flags(lab, family):
    vip = running_on_layout_1(lab, family)
    readd_as_source(lab, "n0", vip, prefixlen(vip))  # as versions before issue #13 had it
    flag = "preferred_lft 0" if family.ipv6 else "noprefixroute"
    call = expect(lab, "n0", "monitor", 0, 1, vip=vip)  # a probe: named, not changed
    assert flag in call.err, call.err
    call = expect(lab, "n0", "monitor", 0, 0, vip=vip, interval=RECURRING)
    assert "added %s" % vip in call.err and "rebuilt the filter" in call.err, call.err
    assert_state(lab, "n0", {vip: {1, 2}}, "the address added again")
    for instance in (0, 1):
        expect(lab, "n0", "monitor", instance, 0, vip=vip)  # probes find nothing missing
