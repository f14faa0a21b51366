"""The agent's decisions (which exit code, which reason, what it changes),
against in-memory fakes of the node and the backend."""

import os
import posix

import pytest

from clusterip import agent, announcements, backends, drain, instance
from unit.fakes import FakeBackend, FakeNode

VIP = "192.0.2.10"
SELECT = backends.select  # the real one, before the fixture replaces it


@pytest.fixture
def node(monkeypatch, tmp_path):
    fake_node, fake_backend = FakeNode(), FakeBackend()
    monkeypatch.setattr(instance, "address", fake_node)
    monkeypatch.setattr(announcements, "spawn", fake_node.spawn)  # never fork pytest
    monkeypatch.setattr(backends, "select", lambda params, **context: fake_backend)
    monkeypatch.setattr(posix, "geteuid", lambda: 0)
    # validate-all's reading of the stop timeout from the CIB (None: no cluster).
    fake_node.cib = None
    monkeypatch.setattr(drain, "stop_timeout_in_cib", lambda resource, default: fake_node.cib)
    fake_node.backend = fake_backend
    fake_node.rsctmp = str(tmp_path)
    return fake_node


def env_for(node, instance=None, clone_max=3, **params):
    env = {"OCF_RESKEY_ip": VIP, "HA_RSCTMP": node.rsctmp,
           "OCF_RESOURCE_INSTANCE": "vip:%s" % instance}
    if instance is not None:
        env.update({"OCF_RESKEY_CRM_meta_clone": str(instance),
                    "OCF_RESKEY_CRM_meta_clone_max": str(clone_max),
                    "OCF_RESKEY_CRM_meta_globally_unique": "true"})
    env.update({"OCF_RESKEY_" + k: v for k, v in params.items()})
    return env


def act(node, action, instance=None, **params):
    return agent.main(["clusterip", action], env_for(node, instance, **params))


def reason(capsys):
    lines = [line for line in capsys.readouterr().err.splitlines()
             if line.startswith("ocf-exit-reason:")]
    assert len(lines) == 1, lines
    return lines[0][len("ocf-exit-reason:"):]


def test_first_instance_creates_everything_later_ones_add_their_bucket(node):
    assert act(node, "start", 0) == 0
    assert act(node, "start", 2) == 0
    assert node.backend.calls == [("create", [1]), ("add", 3)]
    assert node.backend.tables[VIP]["owned"] == {1, 3}
    assert VIP in node.addresses
    # Only the first start announces the cluster MAC.
    assert node.announced == [("eth0", VIP, "03:c1:c0:00:02:0a")]


def test_start_and_stop_are_idempotent(node):
    assert act(node, "start", 0) == 0
    assert act(node, "start", 0) == 0
    assert node.backend.calls == [("create", [1])]
    assert act(node, "stop", 0) == 0
    assert act(node, "stop", 0) == 0
    assert act(node, "stop", 1) == 0
    assert node.backend.tables == {} and node.addresses == {}


def test_last_stop_removes_everything_earlier_ones_only_their_bucket(node):
    for i in (0, 1):
        act(node, "start", i)
    assert act(node, "stop", 0) == 0
    assert node.backend.tables[VIP]["owned"] == {2} and VIP in node.addresses
    assert act(node, "stop", 1) == 0
    assert node.backend.tables == {} and node.addresses == {}
    assert node.backend.calls[-1] == ("destroy",)


def test_probe_of_an_instance_that_never_ran_here_is_7_although_the_vip_is_here(node):
    act(node, "start", 0)
    act(node, "start", 1)
    assert act(node, "monitor", 2) == 7
    assert act(node, "monitor", 0) == 0 and act(node, "monitor", 1) == 0


def test_monitor_names_the_missing_piece(node, capsys):
    act(node, "start", 0)
    act(node, "start", 1)
    node.backend.tables[VIP]["pieces"].discard("ARP rewrite")
    capsys.readouterr()
    assert act(node, "monitor", 0) == 1
    assert "ARP rewrite" in reason(capsys)


def test_monitor_fails_for_a_started_instance_whose_bucket_vanished(node, capsys):
    act(node, "start", 0)
    act(node, "start", 1)
    node.backend.tables[VIP]["owned"].discard(2)
    capsys.readouterr()
    assert act(node, "monitor", 1) == 1
    assert "bucket 2" in reason(capsys)
    assert act(node, "monitor", 0) == 0  # its own pieces are intact


def test_monitor_fails_when_the_address_was_removed(node, capsys):
    act(node, "start", 0)
    node.addresses.clear()
    capsys.readouterr()
    assert act(node, "monitor", 0) == 1
    assert "address %s/24 on eth0" % VIP in reason(capsys)


def test_stopped_instance_is_not_running_after_table_removal(node):
    act(node, "start", 0)
    act(node, "stop", 0)
    assert act(node, "monitor", 0) == 7


def test_start_repairs_a_broken_filter_keeping_owned_buckets(node):
    act(node, "start", 0)
    act(node, "start", 1)
    node.backend.tables[VIP]["pieces"].discard("table")
    assert act(node, "start", 1) == 0
    assert node.backend.calls[-1] == ("create", [1, 2])
    assert act(node, "monitor", 0) == 0


def upgraded_in_place(node):
    """Instances 0 and 1 started here, then the filter in an older version's layout."""
    act(node, "start", 0)
    act(node, "start", 1)
    node.backend.tables[VIP]["outdated"] = True
    node.backend.calls.clear()


RECURRING = {"CRM_meta_interval": "10000"}


def test_a_recurring_monitor_rebuilds_an_older_layout_keeping_the_owned_buckets(node, capsys):
    upgraded_in_place(node)
    assert act(node, "monitor", 1, **RECURRING) == 0
    assert node.backend.calls == [("create", [1, 2])]
    assert "rebuilt the filter for %s" % VIP in capsys.readouterr().err
    assert act(node, "monitor", 0, **RECURRING) == 0
    assert node.backend.calls == [("create", [1, 2])]  # once: the layout is current now


def test_a_recurring_monitor_adds_an_address_without_its_flags_again(node, capsys):
    upgraded_in_place(node)
    node.backend.tables[VIP]["outdated"] = False
    node.flagless.add(VIP)  # an older agent added it without noprefixroute
    assert act(node, "monitor", 0) == 1 and "noprefixroute" in reason(capsys)  # a probe
    assert VIP in node.flagless
    assert act(node, "monitor", 0, **RECURRING) == 0
    assert not node.flagless and "added %s" % VIP in capsys.readouterr().err
    assert node.backend.calls == []


@pytest.mark.parametrize("instance, extra", [(0, {}), (2, RECURRING)],
                         ids=["a probe", "an instance not started here"])
def test_only_a_recurring_monitor_of_a_started_instance_rebuilds(node, capsys, instance, extra):
    upgraded_in_place(node)
    code = act(node, "monitor", instance, **extra)
    assert node.backend.calls == []
    if instance == 2:
        assert code == 7
    else:
        assert code == 1 and FakeBackend.OUTDATED in reason(capsys)


def test_nic_gone_monitor_fails_and_stop_succeeds(node, capsys):
    act(node, "start", 0, nic="eth0")
    node.nics.clear()
    capsys.readouterr()
    assert act(node, "monitor", 0, nic="eth0") == 1
    assert "eth0 does not exist" in reason(capsys)
    assert act(node, "stop", 0, nic="eth0") == 0
    assert node.backend.tables == {}


def test_plain_address_without_clone(node):
    assert act(node, "monitor") == 7
    assert act(node, "start") == 0
    assert node.backend.calls == []  # a plain failover IP needs no filter
    assert node.announced == [("eth0", VIP, None)]  # announced with the NIC's own MAC
    assert act(node, "monitor") == 0
    assert act(node, "stop") == 0
    assert act(node, "monitor") == 7


def test_missing_nic_on_this_node_is_2(node, capsys):
    assert act(node, "start", 0, nic="eth9") == 2
    assert "eth9 does not exist" in reason(capsys)
    assert node.backend.calls == []


@pytest.mark.parametrize("action", ["start", "monitor", "validate-all"])
def test_invalid_configuration_is_6_with_a_reason_and_changes_nothing(node, capsys, action):
    assert act(node, action, 0, hashmode="round-robin") == 6
    assert "hashmode" in reason(capsys)
    assert node.backend.calls == [] and node.addresses == {}


def test_stop_with_an_invalid_configuration_succeeds_without_touching_anything(node):
    # A failed stop gets the node fenced; nothing can run with a config that never parsed.
    assert act(node, "stop", 0, hashmode="round-robin") == 0
    assert node.backend.calls == []


def test_unknown_action_is_3(node, capsys):
    assert act(node, "promote", 0) == 3
    assert "promote" in reason(capsys)


@pytest.mark.parametrize("action", ["start", "stop", "monitor"])
def test_state_actions_need_root(node, monkeypatch, capsys, action):
    monkeypatch.setattr(posix, "geteuid", lambda: 1000)
    assert act(node, action, 0) == 4
    assert "root" in reason(capsys)


def test_validate_all_and_meta_data_work_without_root(node, monkeypatch, capsys):
    monkeypatch.setattr(posix, "geteuid", lambda: 1000)
    assert act(node, "validate-all", 0) == 0
    assert act(node, "meta-data") == 0
    assert capsys.readouterr().out.startswith("<?xml")


def test_clone_max_over_the_backends_limit_is_6(node, monkeypatch, capsys):
    monkeypatch.undo()
    monkeypatch.setattr(instance, "address", node)
    monkeypatch.setattr(announcements, "spawn", node.spawn)
    monkeypatch.setattr(posix, "geteuid", lambda: 0)
    monkeypatch.setattr(backends, "_REGISTRY", {  # auto: either name builds the fake
        name: ("unit.fakes", "FakeBackend") for name in ("nft", "clusterip")})
    assert act(node, "start", 0, clone_max=17) == 6
    assert "limit of 16" in reason(capsys)


def only_a_backend_without_graceful_handover(node, monkeypatch):
    """The real selection, over a registry holding only the fake backend (like clusterip)."""
    monkeypatch.setattr(backends, "select", SELECT)
    monkeypatch.setattr(backends, "_REGISTRY", {"fake": None})

    def build(name, lock_deadline=None, memo=None):  # the one fake, given this action's context
        node.backend.lock_deadline, node.backend.memo = lock_deadline, memo
        return node.backend
    monkeypatch.setattr(backends, "_build", build)


@pytest.mark.parametrize("action, euid", [("start", 0), ("monitor", 0), ("validate-all", 0),
                                          ("validate-all", 1000)])
def test_graceful_handover_on_a_backend_without_it_is_6(node, monkeypatch, capsys,
                                                       action, euid):
    only_a_backend_without_graceful_handover(node, monkeypatch)
    monkeypatch.setattr(posix, "geteuid", lambda: euid)
    assert act(node, action, 0, graceful_handover="true") == 6
    assert "graceful_handover=true needs backend=nft" in reason(capsys)
    assert node.backend.calls == [] and node.addresses == {}


def test_stop_with_graceful_handover_on_a_backend_without_it_cleans_up(node, monkeypatch):
    # Started before the option was set; a failed stop would get the node fenced.
    assert act(node, "start", 0) == 0
    only_a_backend_without_graceful_handover(node, monkeypatch)
    memo = os.path.join(node.rsctmp, "clusterip-%s.checked" % VIP)
    with open(memo, "wb") as f:  # what a monitor remembered
        f.write(b"key\nrules")
    assert act(node, "stop", 0, graceful_handover="true") == 0
    assert node.backend.tables == {} and node.addresses == {}
    # The backend stop falls back to is given the action's memo, so its
    # destroy forgets the remembered check (it once stayed behind).
    assert not os.path.exists(memo)


def test_an_unexpected_exception_is_exit_1_with_a_reason_not_a_traceback(node, capsys):
    def broken(*args):
        raise ZeroDivisionError("boom")

    node.backend.create = broken
    assert act(node, "start", 0) == 1
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert "internal error in start: ZeroDivisionError: boom" in err


def test_exit_reason_prefix_comes_from_the_environment(node, capsys):
    env = env_for(node, 0, hashmode="x")
    env["OCF_EXIT_REASON_PREFIX"] = "REASON>"
    assert agent.main(["clusterip", "start"], env) == 6
    assert any(line.startswith("REASON>hashmode")
               for line in capsys.readouterr().err.splitlines())


def test_start_refuses_a_backend_other_nodes_do_not_use(node, monkeypatch, capsys):
    from clusterip import peers

    published = []
    monkeypatch.setattr(peers, "published", lambda vip, log: {"n1": "clusterip", "n2": "fake"})
    monkeypatch.setattr(peers, "publish",
                        lambda vip, node, backend, log: published.append((node, backend)))
    env = env_for(node, 0)
    env["OCF_RESKEY_CRM_meta_on_node"] = "n0"
    assert agent.main(["clusterip", "start"], env) == 1  # transient: retried after failure-timeout
    assert "n1 uses clusterip" in reason(capsys)
    assert node.backend.calls == [] and published == []


def test_start_publishes_its_backend_under_pacemaker(node, monkeypatch):
    from clusterip import peers

    published = []
    monkeypatch.setattr(peers, "published", lambda vip, log: {"n1": "fake"})
    monkeypatch.setattr(peers, "publish",
                        lambda vip, node, backend, log: published.append((node, backend)))
    env = env_for(node, 0)
    env["OCF_RESKEY_CRM_meta_on_node"] = "n0"
    assert agent.main(["clusterip", "start"], env) == 0
    assert published == [("n0", "fake")]


def test_only_the_first_instance_on_a_node_publishes(node, monkeypatch):
    from clusterip import peers

    published = []
    monkeypatch.setattr(peers, "published", lambda vip, log: dict(published))
    monkeypatch.setattr(peers, "publish",
                        lambda vip, node, backend, log: published.append((node, backend)))
    for clone in (0, 1, 2):  # a failover brings instances to a node that serves one
        env = env_for(node, clone)
        env["OCF_RESKEY_CRM_meta_on_node"] = "n0"
        assert agent.main(["clusterip", "start"], env) == 0
    assert published == [("n0", "fake")]


def test_ipv6_announces_the_33_33_cluster_mac_cloned_and_its_own_mac_plain(node):
    vip6 = "2001:db8::a:100"
    assert act(node, "start", 0, ip=vip6) == 0
    assert act(node, "monitor", 0, ip=vip6) == 0
    assert node.announced == [("eth0", vip6, "33:33:00:0a:01:00")]
    assert act(node, "stop", 0, ip=vip6) == 0 and node.addresses == {}
    assert act(node, "start", ip="2001:DB8::a:100") == 0  # plain, canonicalised
    assert node.announced[-1] == ("eth0", vip6, None)


def test_a_backend_that_cannot_build_its_rule_is_5_on_start_and_validate_only(
        node, monkeypatch, capsys):
    # The clusterip backend's check_libraries with python-iptables unable to
    # set options (libxtables 1.8.11, ldx/python-iptables#353), on the fake
    # node: start refuses before touching anything, the monitor never runs
    # the probe (its hot path), stop succeeds.
    from clusterip.backends import clusterip
    from unit.test_clusterip_backend import FakeIptc

    real = clusterip.ClusteripBackend()
    monkeypatch.setattr(clusterip, "_import_iptc", lambda: FakeIptc(option_works=False))
    checks = []

    def check_libraries():
        checks.append(1)
        real.check_libraries()
    monkeypatch.setattr(node.backend, "check_libraries", check_libraries)

    for action in ("start", "validate-all"):
        assert act(node, action, 0) == 5
        assert "python-iptables#353" in reason(capsys) and len(checks) == 1
        checks.clear()
    assert node.backend.calls == [] and not node.addresses
    assert act(node, "monitor", 0) == 7 and checks == []
    assert act(node, "stop", 0) == 0
    assert node.backend.calls == [] and not node.addresses


def test_with_owner_lease_the_monitor_renews_its_own_bucket_and_touches_its_marker(node):
    assert act(node, "start", 1, owner_lease="60") == 0
    marker = os.path.join(node.rsctmp, "clusterip-%s.bucket2.started" % VIP)
    os.utime(marker, (1, 1))
    node.backend.calls.clear()
    assert act(node, "monitor", 1, owner_lease="60") == 0
    assert node.backend.calls == [("renew", 2)]
    assert os.stat(marker).st_mtime > 1
    assert act(node, "monitor", 1) == 0  # without a lease: nothing renewed
    assert node.backend.calls == [("renew", 2)]


def test_a_bucket_whose_lease_expired_fails_its_monitor(node, capsys):
    assert act(node, "start", 1, owner_lease="60") == 0
    node.backend.tables[VIP]["owned"].discard(2)  # what the kernel does after the lease
    assert act(node, "monitor", 1, owner_lease="60") == 1
    assert "missing bucket 2" in reason(capsys)


def test_a_lease_a_late_monitor_would_outlive_is_refused_by_the_recurring_monitor(node, capsys):
    assert act(node, "start", 1, owner_lease="30") == 0
    # 2 x 10 s + 20 s = 40 s > 30 s.
    assert act(node, "monitor", 1, owner_lease="30", CRM_meta_interval="10000",
               CRM_meta_timeout="20000") == 6
    assert "at least 40" in reason(capsys)
    node.backend.calls.clear()
    assert act(node, "monitor", 1, owner_lease="40", CRM_meta_interval="10000",
               CRM_meta_timeout="20000") == 0
    assert node.backend.calls == [("renew", 2)]


@pytest.mark.parametrize("rsctmp", ["/run/resource-agents", "/run/resource-agents/", "/"])
def test_state_files_are_named_as_os_path_join_names_them(rsctmp):
    # Joined by hand (the library does without os on the monitor's path).
    assert instance.state_file(rsctmp, "192.0.2.10", "lock") \
        == os.path.join(rsctmp, "clusterip-192.0.2.10.lock")
