"""The guard (lib/clusterip/guard.py) on the host kernel: a firewall reload undone at once.

One node runs instances 0 and 2 of a clone of 3 (buckets 1 and 3); read back
with independent tools (``nft -j``, ``ip -j``, /proc):

* the start of the node's first instance leaves one guard process, named by
  ``$HA_RSCTMP/clusterip-<VIP>.guard``; the second start adds none;
* ``nft -f`` of Debian's own nftables.conf (``flush ruleset``): the agent's
  tables are back with both buckets within a second, the admin's table stays,
  both monitors answer 0, ``.repairs`` says what was deleted;
* a bucket moving away (the stop of instance 2) is the agent's own deletion:
  nothing repaired;
* a tool flushing in a loop meets the bound: 5 repairs a minute, then the
  tables stay gone and the monitor fails (Pacemaker's recovery, as without
  the guard), and the guard lives on; a guard killed by hand is replaced by
  the next start;
* the stop of the node's last instance ends the guard (no signal: it sees
  its handshake file gone) and leaves nothing: no process, no file, nothing
  in the kernel.
"""

import os
import re
import subprocess
import time

import pytest

import oracle
import scenarios
from netlab import Lab

FLUSH_CONF = "flush ruleset\ntable inet filter {\n\tchain input {\n" \
             "\t\ttype filter hook input priority filter;\n\t}\n}\n"
REPAIR_LIMIT = 5.0  # s: the flush repaired (measured 0.4-0.5 s: 0.3 s of it the guard's wait)


def guard_pids(lab, node="n0"):
    """PIDs of the node's guard processes (their command line names guard_main)."""
    found = []
    listed = subprocess.run(["ip", "netns", "pids", lab.ns(node)], capture_output=True,
                            text=True, timeout=30).stdout
    for pid in listed.split():
        try:
            with open("/proc/%s/cmdline" % pid, "rb") as f:
                if b"guard_main" in f.read():
                    found.append(int(pid))
        except OSError:
            pass
    return found


def listening(pid):
    """Whether the guard has its netlink socket (it binds it right after creating it)."""
    try:
        return any(os.readlink("/proc/%d/fd/%s" % (pid, fd)).startswith("socket:")
                   for fd in os.listdir("/proc/%d/fd" % pid))
    except OSError:
        return False


def wait_for(predicate, timeout, what, explain=lambda: ""):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        assert time.monotonic() < deadline, "timed out after %.0f s: %s %s" % (
            timeout, what, explain())
        time.sleep(0.02)


def reload_firewall(lab):
    path = os.path.join(lab.directory, "nftables.conf")
    with open(path, "w") as f:
        f.write(FLUSH_CONF)
    lab.run("n0", "nft", "-f", path)
    return time.monotonic()


@pytest.mark.parametrize("ipv6", [False, True], ids=["ipv4", "ipv6"])
def test_a_flushed_ruleset_is_put_back_at_once(ipv6):
    vip = scenarios.VIP6 if ipv6 else scenarios.VIP
    params = scenarios.agent_params("nft", "sourceip", vip)
    with Lab(nodes=1, sources=2, ipv6=ipv6) as lab:
        rsctmp = lab.rsctmp("n0")
        guard_file = os.path.join(rsctmp, "clusterip-%s.guard" % vip)
        repairs_file = os.path.join(rsctmp, "clusterip-%s.repairs" % vip)

        def agent(action, instance):
            return lab.agent("n0", action, params, scenarios.clone_meta(instance),
                             "vip:%d" % instance)

        def owned():
            return oracle.owned(lab, "n0", vip, "nft")

        def complete(buckets):
            state = oracle.vip_states(lab, "n0", [vip], "nft")[vip]
            return not oracle.problems(state, buckets, "nft")

        def repairs():
            try:
                with open(repairs_file) as f:
                    return f.read().splitlines()
            except FileNotFoundError:
                return []

        for instance in (0, 2):
            rc, _, err = agent("start", instance)
            assert rc == 0, err
        first = wait_for(lambda: guard_pids(lab), 5, "a guard process")
        assert len(first) == 1, first
        with open(guard_file) as f:
            assert int(f.read()) == first[0]
        # A flush before it listens is its start-up check's (see guard.run); this
        # one must come from a notification.
        wait_for(lambda: listening(first[0]), 5, "the guard's netlink socket")
        time.sleep(0.1)

        # Debian's reload: flush ruleset.
        since = reload_firewall(lab)
        wait_for(lambda: complete({1, 3}), REPAIR_LIMIT, "buckets 1 and 3 back",
                 lambda: (oracle.problems(oracle.vip_states(lab, "n0", [vip], "nft")[vip],
                                          {1, 3}, "nft"), repairs()))
        repaired_after = time.monotonic() - since
        assert ("inet", "filter") in oracle.nft_tables(lab, "n0")
        for instance in (0, 2):
            rc, _, err = agent("monitor", instance)
            assert rc == 0, err
        lines = wait_for(repairs, 2, "a line in %s" % repairs_file)
        assert len(lines) == 1 and re.search(r"\b[12] tables\b", lines[0]) \
            and "bucket 1" in lines[0] and "bucket 3" in lines[0], lines
        print("flush ruleset repaired after %.3f s: %s" % (repaired_after, lines[0]))

        # The agent's own deletion: bucket 3 leaves.
        rc, _, err = agent("stop", 2)
        assert rc == 0, err
        time.sleep(0.5)
        assert owned() == {1} and len(repairs()) == 1, (owned(), repairs())

        # A flush in a loop: five repairs a minute, then the monitor's turn.
        # (Each flush waits for the repair of the one before: on a loaded
        # machine two flushes could otherwise make one repair.)
        for count in range(2, 6):
            reload_firewall(lab)
            wait_for(lambda count=count: len(repairs()) == count and complete({1}),
                     REPAIR_LIMIT, "repair %d" % count)
        reload_firewall(lab)
        time.sleep(2.0)  # well past SETTLE and a repair's time
        assert len(repairs()) == 5, repairs()
        assert owned() is None, "the tables should stay gone past the bound"
        rc, _, _ = agent("monitor", 0)
        assert rc == 1
        rc, _, err = agent("start", 0)  # Pacemaker's recovery
        assert rc == 0, err
        assert complete({1})
        # The guard lives on (its bound passes with the minute): no second one.
        assert guard_pids(lab) == first, (guard_pids(lab), first)

        # A guard that is gone (killed by hand) is replaced by the next start.
        os.kill(first[0], 9)  # the guard this test's agent started, by its PID
        wait_for(lambda: not guard_pids(lab), 5, "the killed guard to be gone")
        rc, _, err = agent("start", 0)
        assert rc == 0, err
        second = wait_for(lambda: guard_pids(lab), 5, "a new guard")
        assert second != first and len(second) == 1, second

        # The last stop ends the guard and leaves nothing.
        rc, _, err = agent("stop", 0)
        assert rc == 0, err
        wait_for(lambda: not guard_pids(lab), 5, "the guard to exit")
        assert not os.path.exists(guard_file) and not os.path.exists(repairs_file)
        assert oracle.leftovers(lab, "n0", "nft", [vip]) == []
