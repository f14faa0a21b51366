"""The guard's decisions (lib/clusterip/guard.py): which notifications count,
which instances it starts again, when a start spawns it.  Its loop on a real
kernel (flush ruleset, the bound, its end) is tests/netns/test_guard.py's."""

import os
import struct

from clusterip import background, guard, ocf
from clusterip.kernel import netlink
from unit.test_agent import VIP, act, env_for, node  # noqa: F401  (node is a fixture)

TABLE = "clusterip_192_0_2_10"
OURS = {(2, TABLE), (3, TABLE)}


def notification(message, family, table, subsystem=10):
    body = struct.pack("=BBH", family, 0, 0) + netlink.attribute(1, table.encode() + b"\0")
    return netlink.HEADER.pack(netlink.HEADER.size + len(body), subsystem << 8 | message,
                               0, 0, 0) + body


def test_only_deletions_of_the_vips_tables_count_and_newgen_ends_a_transaction():
    deleted = notification(2, 2, TABLE) + notification(5, 3, TABLE) + notification(14, 2, TABLE)
    assert guard.touched_tables(deleted, OURS) == (["table", "chain", "set element"], False, 0)
    assert guard.touched_tables(notification(15, 0, ""), OURS) == ([], True, 0)
    assert guard.touched_tables(notification(12, 2, TABLE), OURS) == ([], False, 1)
    others = (notification(2, 2, "filter") + notification(2, 10, TABLE)  # another table, ip6
              + notification(0, 2, TABLE)  # a NEWTABLE: the agent's own creation
              + notification(2, 2, TABLE, subsystem=9))  # not nf_tables
    assert guard.touched_tables(others, OURS) == ([], False, 0)


def test_a_transaction_of_owner_lease_renewals_is_nothing_to_repair():
    assert guard.renewals_only(["set element"], 1)
    assert guard.renewals_only(["set element"] * 2, 2)
    assert not guard.renewals_only(["set element"], 0)  # an element deleted for good
    assert not guard.renewals_only(["set element", "table"], 1)
    assert not guard.renewals_only([], 1)  # an addition alone deletes nothing


def test_marked_buckets_are_read_from_the_markers(tmp_path):
    for name in ("clusterip-%s.bucket1.started" % VIP, "clusterip-%s.bucket12.started" % VIP,
                 "clusterip-192.0.2.11.bucket2.started", "clusterip-%s.lock" % VIP,
                 "clusterip-%s.bucketx.started" % VIP):
        (tmp_path / name).write_text("")
    assert guard.marked_buckets(str(tmp_path), VIP) == {1, 12}
    assert guard.marked_buckets(str(tmp_path / "missing"), VIP) == set()


def test_repair_starts_the_marked_instances_that_miss_something(node):  # noqa: F811
    assert act(node, "start", 0) == 0 and act(node, "start", 2) == 0
    node.backend.calls.clear()
    del node.backend.tables[VIP]  # flush ruleset
    done = guard.repair(env_for(node, 0), {1, 3}, ocf.Logger({}))
    assert done == ["bucket 1 (packet filter of %s)" % VIP, "bucket 3 (bucket 3)"], done
    assert node.backend.calls == [("create", [1]), ("add", 3)]
    assert node.backend.tables[VIP]["owned"] == {1, 3}
    # Nothing missing: nothing done.
    node.backend.calls.clear()
    assert guard.repair(env_for(node, 0), {1, 3}, ocf.Logger({})) == []
    assert node.backend.calls == []


def test_repair_leaves_an_instance_stopped_meanwhile_alone(node):  # noqa: F811
    assert act(node, "start", 0) == 0 and act(node, "start", 2) == 0
    assert act(node, "stop", 2) == 0  # its marker is gone, its bucket too
    node.backend.calls.clear()
    # A guard that read the markers before the stop: bucket 3 misses its
    # element, but start(repair=True) finds no marker under the lock.
    assert guard.repair(env_for(node, 0), {1, 3}, ocf.Logger({})) == []
    assert node.backend.calls == [] and node.backend.tables[VIP]["owned"] == {1}
    assert not os.path.exists(os.path.join(node.rsctmp, "clusterip-%s.bucket3.started" % VIP))


def test_the_first_start_spawns_the_guard_of_a_guarded_backend_and_the_last_stop_ends_it(
        node, monkeypatch):  # noqa: F811
    spawned = []

    def spawn(path, env, sender=None):
        spawned.append((path, env["OCF_RESKEY_CRM_meta_clone"], sender))
        background.publish(path, os.getpid())
    monkeypatch.setattr(guard, "spawn", spawn)
    monkeypatch.setattr(guard, "alive", lambda path: background.owner(path) is not None)
    monkeypatch.setattr(type(node.backend), "guarded", True)
    guard_path = os.path.join(node.rsctmp, "clusterip-%s.guard" % VIP)
    announcing = os.path.join(node.rsctmp, "clusterip-%s.announcing" % VIP)
    assert act(node, "start", 0) == 0 and act(node, "start", 2) == 0
    # One process for the first start's two background jobs: the guard also
    # sends the repeats (arp_count 5: 4 owed), and no sender of its own starts.
    (path, clone, (sender_path, argv)), = spawned
    assert (path, clone, sender_path) == (guard_path, "0", announcing), spawned
    assert argv[1] == announcing and argv[4] == VIP and argv[6] == "4", argv
    assert node.spawned == []
    assert act(node, "stop", 0) == 0
    assert os.path.exists(guard_path)  # bucket 3 still runs here
    assert act(node, "stop", 2) == 0
    assert not os.path.exists(guard_path)
    # The guard's own start never spawns another.
    assert act(node, "start", 1) == 0 and len(spawned) == 2
    del node.backend.tables[VIP]
    assert guard.repair(env_for(node, 1), {2}, ocf.Logger({})) and len(spawned) == 2


def test_a_repair_that_finds_everything_back_under_the_lock_does_nothing(node):  # noqa: F811
    # The guard read bucket 3 missing while its start was in progress (marked
    # first, its bucket added under the lock); by the time the guard holds the
    # lock, that start has added it: nothing to repair, nothing recorded.
    from clusterip import instance, params

    assert act(node, "start", 0) == 0 and act(node, "start", 2) == 0
    node.backend.calls.clear()
    env = env_for(node, 2)
    this = instance.ClonedInstance(params.parse(env), env, ocf.Logger({}))
    assert this.start(repair=True) is None
    assert node.backend.calls == []


def test_a_recurring_monitor_spawns_a_missing_guard_a_probe_does_not(node, monkeypatch):  # noqa: F811
    # A node upgraded in place from a version without guards: started there,
    # no guard of the VIP alive.
    spawned = []
    monkeypatch.setattr(guard, "spawn", lambda path, env, sender=None: spawned.append(path))
    monkeypatch.setattr(guard, "alive", lambda path: False)
    monkeypatch.setattr(type(node.backend), "guarded", True)
    assert act(node, "start", 0, firewall_guard="false") == 0 and spawned == []
    assert act(node, "monitor", 0) == 0 and spawned == []  # a probe, a call by hand
    assert act(node, "monitor", 0, CRM_meta_interval="10000", firewall_guard="false") == 0
    assert spawned == []
    assert act(node, "monitor", 0, CRM_meta_interval="10000") == 0 and len(spawned) == 1
    monkeypatch.setattr(guard, "alive", lambda path: True)
    assert act(node, "monitor", 0, CRM_meta_interval="10000") == 0 and len(spawned) == 1
    # Nor for an instance whose monitor fails: Pacemaker's recovery starts it.
    monkeypatch.setattr(guard, "alive", lambda path: False)
    node.backend.tables[VIP]["owned"].clear()
    assert act(node, "monitor", 0, CRM_meta_interval="10000") == 1 and len(spawned) == 1
