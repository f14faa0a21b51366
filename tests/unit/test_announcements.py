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
from unit.fakes import FakeNode
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


# --- one real fork --------------------------------------------------------------

class RecordingNode(FakeNode):
    """Records every announcement in a file: the forked sender's memory is its own."""

    def __init__(self, log, fail=False):
        super().__init__()
        self.log, self.fail = log, fail

    def address_present(self, vip, placement):
        if self.fail:
            raise OSError("netlink went away")  # the sender must exit quietly
        return True

    def announce(self, nic, vip, mac=None):
        fds = sorted(os.listdir("/proc/self/fd"))
        targets = {os.readlink("/proc/self/fd/%s" % fd) for fd in ("0", "1", "2")}
        with open(self.log, "a") as f:
            f.write("%d %d %s %s\n" % (os.getpid(), os.getsid(0), ",".join(fds),
                                       ",".join(sorted(targets))))


def wait_until(condition, timeout=5.0):
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def gone(pid):
    """Exited (a zombie until whoever adopted it reaps it counts as gone)."""
    try:
        with open("/proc/%d/stat" % pid) as f:
            return f.read().rsplit(")", 1)[1].split()[0] == "Z"
    except FileNotFoundError:
        return True


def test_the_forked_sender_is_detached_and_bounded(tmp_path):
    path, log = str(tmp_path / "clusterip-x.announcing"), str(tmp_path / "log")
    lock_fd = os.open(str(tmp_path / "lock"), os.O_RDWR | os.O_CREAT)  # as the agent's flock
    fcntl.flock(lock_fd, fcntl.LOCK_EX)
    try:
        before = time.monotonic()
        announcements.spawn(path, RecordingNode(log), PLACEMENT, VIP, None, 3, 0.05)
        assert time.monotonic() - before < 0.05  # start does not wait for the repeats
        sender = announcements.owner(path)  # named once spawn returns
        assert sender not in (None, os.getpid())
        with pytest.raises(ChildProcessError):
            os.waitpid(sender, os.WNOHANG)  # a grandchild: not ours to wait for
        wait_until(lambda: not os.path.exists(path))  # done: it removed its file
    finally:
        os.close(lock_fd)
    lines = [line.split() for line in open(log)]
    assert len(lines) == 3
    for pid, sid, fds, targets in lines:
        assert int(pid) == sender and int(sid) != os.getsid(0)
        # 0, 1, 2 on /dev/null plus the one listdir opened: not the lock, nothing else.
        assert len(fds.split(",")) == 4 and targets == os.devnull
    wait_until(lambda: gone(sender))


def test_the_forked_sender_never_shows_a_traceback(tmp_path, capfd):
    path = str(tmp_path / "clusterip-x.announcing")
    announcements.spawn(path, RecordingNode(str(tmp_path / "log"), fail=True), PLACEMENT,
                        VIP, None, 2, 0.01)
    sender = announcements.owner(path)
    wait_until(lambda: gone(sender))
    assert not os.path.exists(tmp_path / "log")
    assert capfd.readouterr() == ("", "")
