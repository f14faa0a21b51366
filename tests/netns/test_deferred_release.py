"""Sockets whose release waits for the kernel are handed to a holder (clusterip.kernel).

Releasing an AF_PACKET socket, or a netfilter netlink socket after a
committed nf_tables transaction, makes the closing process wait for an RCU
grace period (~15 ms here).  An action that wrote hands such sockets to a
``/bin/sleep 1`` holder before it ends, so the wait is the holder's.  Read
with /proc: right after the action, a holder in the node's namespace holds
sockets from descriptor 100 on and ends by itself; a monitor, which writes
nothing, starts none.  The time saved is the benchmark's to show.
"""

import os
import subprocess
import time

import scenarios
from netlab import Lab

HOLD_FROM = 100  # clusterip.kernel.HOLD_FROM


def holders(lab):
    """{pid: [socket descriptors from HOLD_FROM on]} of the node's /bin/sleep processes."""
    found = {}
    listed = subprocess.run(["ip", "netns", "pids", lab.ns("n0")], capture_output=True,
                            text=True, timeout=30).stdout
    for pid in listed.split():
        try:
            with open("/proc/%s/cmdline" % pid, "rb") as f:
                if f.read().split(b"\0")[:2] != [b"/bin/sleep", b"1"]:
                    continue
            found[int(pid)] = sorted(
                int(fd) for fd in os.listdir("/proc/%s/fd" % pid) if int(fd) >= HOLD_FROM
                and os.readlink("/proc/%s/fd/%s" % (pid, fd)).startswith("socket:"))
        except OSError:  # ended meanwhile
            continue
    return found


def test_start_and_stop_hand_their_sockets_to_a_holder_a_monitor_starts_none():
    params = scenarios.agent_params("nft", "sourceip", scenarios.VIP)
    with Lab(nodes=1, sources=0) as lab:
        def agent(action, instance=0, expect=0):
            rc, _, err = lab.agent("n0", action, params, scenarios.clone_meta(instance),
                                   "vip:%d" % instance)
            assert rc == expect, (action, rc, err)

        assert holders(lab) == {}
        agent("start")  # nft tables created, the cluster MAC announced (AF_PACKET)
        held = holders(lab)
        assert len(held) == 1 and all(len(fds) >= 2 for fds in held.values()), held
        deadline = time.monotonic() + 5
        while holders(lab) and time.monotonic() < deadline:  # bounded by itself
            time.sleep(0.1)
        assert holders(lab) == {}, "the holder did not end within 5 s"
        agent("monitor")
        assert holders(lab) == {}, "a monitor writes nothing: no holder"
        agent("stop")  # the tables deleted: libnftables' socket waits on release
        held = holders(lab)
        assert len(held) == 1 and all(fds for fds in held.values()), held
