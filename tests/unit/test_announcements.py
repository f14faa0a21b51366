"""arp_count / arp_interval: start's one announcement, the background sender's
schedule and its file handshake (clusterip.announcements), against the fakes;
plus one real fork of the sender, to see it detached (no descriptor of ours,
its own session, not our child) and bounded.  What the segment sees is
checked in tests/netns/test_announcements.py."""

import fcntl
import os
import time

import pytest

from clusterip import announcements
from clusterip.address import Placement
from unit.test_agent import VIP, act, node  # noqa: F401 - node is a fixture

CLUSTER_MAC = "03:c1:c0:00:02:0a"
PLACEMENT = Placement(nic="eth0", prefixlen=24)


def path_of(node):
    return os.path.join(node.rsctmp, "clusterip-%s.announcing" % VIP)


def run_sender(node, on_sleep=None):
    """The spawned sender's loop, run here (the fake spawn made this process it)."""
    (path, placement, vip, mac, count, interval), = node.spawned
    sleeps = []

    def sleep(seconds):
        sleeps.append(seconds)
        if on_sleep:
            on_sleep(len(sleeps))

    return announcements.send_repeats(path, node, placement, vip, mac, count, interval,
                                      sleep), sleeps


def test_plain_start_sends_one_and_leaves_the_others_to_the_sender(node):
    assert act(node, "start", arp_count="4", arp_interval="150") == 0
    assert node.announced == [("eth0", VIP, None)]  # before start returned
    assert node.spawned == [(path_of(node), PLACEMENT, VIP, None, 3, 0.15)]
    assert announcements.owner(path_of(node)) == os.getpid()  # the handshake names the sender
    assert run_sender(node) == ("done", [0.15] * 3)
    assert node.announced == [("eth0", VIP, None)] * 4
    assert not os.path.exists(path_of(node))  # a finished sender removes its file


def test_the_defaults_are_five_200_ms_apart(node):
    assert act(node, "start") == 0
    assert run_sender(node) == ("done", [0.2] * 4)
    assert len(node.announced) == 5


def test_a_clone_repeats_the_cluster_mac_from_its_first_instance_only(node):
    assert act(node, "start", 0, arp_count="3") == 0
    assert act(node, "start", 1, arp_count="3") == 0
    assert node.announced == [("eth0", VIP, CLUSTER_MAC)]
    assert node.spawned == [(path_of(node), PLACEMENT, VIP, CLUSTER_MAC, 2, 0.2)]
    assert run_sender(node)[0] == "done"
    assert node.announced == [("eth0", VIP, CLUSTER_MAC)] * 3


@pytest.mark.parametrize("instance", [None, 0])
def test_arp_count_0_sends_none_and_1_only_starts_one(node, instance):
    assert act(node, "start", instance, arp_count="0") == 0
    assert node.announced == [] and node.spawned == []
    assert act(node, "stop", instance) == 0
    assert act(node, "start", instance, arp_count="1") == 0
    assert len(node.announced) == 1 and node.spawned == []


@pytest.mark.parametrize("instance", [None, 0])
def test_a_stop_in_the_middle_ends_the_repeats(node, instance):
    assert act(node, "start", instance, arp_count="5") == 0

    def stop_at_second_sleep(sleeps):
        if sleeps == 2:
            assert act(node, "stop", instance) == 0

    assert run_sender(node, stop_at_second_sleep) == ("replaced", [0.2, 0.2])
    assert len(node.announced) == 2  # start's and the first repeat


def test_only_the_last_clone_instance_stop_ends_them(node):
    assert act(node, "start", 0) == 0
    assert act(node, "start", 1) == 0
    assert act(node, "stop", 1) == 0
    assert announcements.owner(path_of(node)) == os.getpid()
    assert act(node, "stop", 0) == 0
    assert not os.path.exists(path_of(node))


def test_a_new_start_replaces_the_older_sender(node):
    assert act(node, "start") == 0
    announcements.publish(path_of(node), os.getpid() + 1)  # what the new start's spawn does
    assert run_sender(node) == ("replaced", [0.2])
    assert announcements.owner(path_of(node)) == os.getpid() + 1  # not the older's to remove
    assert len(node.announced) == 1


def test_a_new_start_tells_the_older_sender_to_end_before_its_own_first(node):
    assert act(node, "start") == 0
    older = node.spawned.pop()
    assert act(node, "start", arp_count="1") == 0  # sends one, spawns none
    assert node.spawned == [] and not os.path.exists(older[0])


def test_the_sender_exits_when_the_address_is_gone(node):
    assert act(node, "start", arp_count="5") == 0

    def remove_behind_its_back(sleeps):
        if sleeps == 3:
            node.addresses.clear()

    assert run_sender(node, remove_behind_its_back) == ("address gone", [0.2] * 3)
    assert len(node.announced) == 3
    assert not os.path.exists(path_of(node))


def test_a_garbled_file_names_nobody(tmp_path):
    path = str(tmp_path / "f")
    for text in (b"", b"x\n", b"12 34\n", b"-"):
        with open(path, "wb") as f:
            f.write(text)
        assert announcements.owner(path) is None
    assert announcements.owner(str(tmp_path / "missing")) is None


# --- one real sender ------------------------------------------------------------

TESTS = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LIBRARY = os.path.join(os.path.dirname(TESTS), "lib")


def wait_until(condition, timeout=5.0):
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def spawn_recorded(monkeypatch, tmp_path, count, interval, fail=False):
    """announcements.spawn for real, announcing with unit/recording_node.py."""
    log = str(tmp_path / "log")
    monkeypatch.setenv("RECORDING_NODE_LOG", log)
    if fail:
        monkeypatch.setenv("RECORDING_NODE_FAIL", "1")
    path = str(tmp_path / "clusterip-x.announcing")
    pid = announcements.spawn(path, PLACEMENT, VIP, None, count, interval,
                              node="unit.recording_node", library=LIBRARY + ":" + TESTS)
    return path, log, pid


def test_the_sender_is_a_fresh_detached_process_and_bounded(monkeypatch, tmp_path):
    lock_fd = os.open(str(tmp_path / "lock"), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC)
    fcntl.flock(lock_fd, fcntl.LOCK_EX)  # as the agent's per-VIP lock (close-on-exec)
    inheritable = os.open(os.devnull, os.O_RDONLY)  # one the agent might have inherited
    os.set_inheritable(inheritable, True)
    try:
        before = time.monotonic()
        path, log, sender = spawn_recorded(monkeypatch, tmp_path, 3, 0.05)
        assert time.monotonic() - before < 0.05  # start does not wait for the repeats
        assert announcements.owner(path) == sender != os.getpid()  # named once spawn returns
        wait_until(lambda: not os.path.exists(path))  # done: it removed its file
    finally:
        os.close(inheritable)
        os.close(lock_fd)
    assert os.waitpid(sender, 0)[1] == 0  # our child here; the agent's exits first in use
    lines = [line.split() for line in open(log)]
    assert len(lines) == 3
    for pid, sid, fds, targets, mapped in lines:
        assert int(pid) == sender == int(sid) != os.getsid(0)  # a session of its own
        # 0, 1, 2 on /dev/null plus the one listdir opened: not the lock, nothing else.
        assert len(fds.split(",")) == 4 and targets == os.devnull
        assert mapped == "fresh"  # not a fork: none of this process's memory


def test_the_sender_never_shows_a_traceback(monkeypatch, tmp_path, capfd):
    path, log, sender = spawn_recorded(monkeypatch, tmp_path, 2, 0.01, fail=True)
    assert os.waitpid(sender, 0)[1] == 0
    assert not os.path.exists(log)
    assert capfd.readouterr() == ("", "")


def test_the_first_repeat_keeps_the_interval_from_starts_own_announcement(node):
    """The sender is told how long is left until then (its own start-up took
    some of the interval), and keeps arp_interval between the others."""
    assert act(node, "start", arp_count="4", arp_interval="150") == 0
    (path, placement, vip, mac, count, interval), = node.spawned
    sleeps = []
    assert announcements.send_repeats(path, node, placement, vip, mac, count, interval,
                                      sleeps.append, first_delay=0.09) == "done"
    assert sleeps == [0.09, 0.15, 0.15]
