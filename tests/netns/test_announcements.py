"""arp_count / arp_interval on a real segment: what a client's NIC receives.

A sniffer in the client namespace (tests/helpers/sniffer.py, an AF_PACKET
socket, bounded in time) records every gratuitous ARP / unsolicited NA for
the VIP with its arrival time on CLOCK_MONOTONIC, which this process reads
too: start sends the first before it returns and the rest in the
background, arp_interval apart; a stop in the middle ends them; arp_count=0
sends none.  Plain and cloned, IPv4 and IPv6; a cloned nft VIP's first start
has its guard's process send them (clusterip.background).
"""

import json
import os
import sys
import time

import pytest

import oracle
import scenarios
from clusterip import background
from netlab import HELPERS, Lab

COUNT, INTERVAL = 4, 0.150
SLACK = 0.060  # scheduling on a shared 2-core machine: a late frame, never an early one
KINDS = [("plain", False), ("cloned", False), ("plain", True), ("cloned", True)]


def configuration(kind, ipv6, **overrides):
    """(params, meta) of a plain or cloned (instance 0) VIP on n0."""
    vip = scenarios.VIP6 if ipv6 else scenarios.VIP
    params = scenarios.agent_params("nft", "sourceip", vip, **overrides)
    if kind == "plain":
        for name in ("hashmode", "backend"):
            del params[name]
        return params, None
    return params, scenarios.clone_meta(0)


def agent(lab, action, params, meta):
    """Runs the action on n0: (exit code, monotonic time before, after)."""
    before = time.monotonic()
    rc, _, err = lab.agent("n0", action, params, meta, "vip" if meta is None else "vip:0")
    assert rc == 0, err
    return before, time.monotonic()


class Sniffer:
    def __init__(self, lab, vip, seconds):
        self.log = os.path.join(lab.directory, "sniffer-%s.log" % time.monotonic_ns())
        self.process = lab.spawn("client", sys.executable, os.path.join(HELPERS, "sniffer.py"),
                                 "eth0", vip, str(seconds), log=self.log)
        self.seconds = seconds
        self._wait_for("ready", 10)

    def _lines(self):
        with open(self.log) as f:
            return f.read().splitlines()

    def _wait_for(self, word, timeout):
        deadline = time.monotonic() + timeout
        while word not in self._lines():
            assert time.monotonic() < deadline, "sniffer: no %r in %s" % (word, self._lines())
            time.sleep(0.01)

    def frames(self):
        """[(kind, opcode or None, mac, time)] once the sniffer's time is up."""
        self._wait_for("done", self.seconds + 10)
        result = []
        for line in self._lines():
            words = line.split()
            if words[0] == "arp":
                result.append(("arp", int(words[1]), words[2], float(words[3])))
            elif words[0] == "na":
                result.append(("na", None, words[1], float(words[2])))
        return result


def announced_mac(lab, kind, ipv6):
    if kind == "cloned":
        return oracle.default_cluster_mac(scenarios.VIP6 if ipv6 else scenarios.VIP)
    (link,) = json.loads(lab.run("n0", "ip", "-j", "link", "show", "eth0").stdout)
    return link["address"]


def announcements(frames, ipv6):
    """The times of the announcements: an NA each, or an ARP request + reply pair."""
    if ipv6:
        return [t for _, _, _, t in frames]
    assert [opcode for _, opcode, _, _ in frames] == [1, 2] * (len(frames) // 2), frames
    return [t for _, opcode, _, t in frames if opcode == 1]


@pytest.mark.parametrize("kind,ipv6", KINDS, ids=["%s-ipv%d" % (k, 6 if v else 4)
                                                  for k, v in KINDS])
def test_arp_count_announcements_arp_interval_apart_the_first_before_start_returns(kind, ipv6):
    with Lab(nodes=1, sources=0, ipv6=ipv6) as lab:
        params, meta = configuration(kind, ipv6, arp_count=COUNT,
                                     arp_interval=int(INTERVAL * 1000))
        sniffer = Sniffer(lab, params["ip"], 2.0)
        started, returned = agent(lab, "start", params, meta)
        senders = {job: background.owner(os.path.join(lab.rsctmp("n0"), "clusterip-%s.%s"
                                                      % (params["ip"], job)))
                   for job in ("announcing", "guard")}
        frames = sniffer.frames()
        assert len(frames) == (COUNT if ipv6 else 2 * COUNT), frames
        if kind == "cloned":  # the guard's process sent them: one interpreter started, not two
            assert senders["announcing"] == senders["guard"] is not None, senders
        else:
            assert senders["guard"] is None and senders["announcing"] is not None, senders
        assert {mac for _, _, mac, _ in frames} == {announced_mac(lab, kind, ipv6)}
        times = announcements(frames, ipv6)
        assert started < times[0] < returned  # the first: inside start, as before
        assert returned < times[-1]  # the repeats: after start returned
        gaps = [times[i + 1] - times[i] for i in range(len(times) - 1)]
        assert all(INTERVAL - 0.005 < gap < INTERVAL + SLACK for gap in gaps), gaps
        # The sender ended by itself and removed its file.
        assert not os.path.exists(os.path.join(lab.rsctmp("n0"), "clusterip-%s.announcing"
                                               % params["ip"]))
        agent(lab, "stop", params, meta)


@pytest.mark.parametrize("kind", ["plain", "cloned"])
def test_a_stop_in_the_middle_ends_the_repeats_within_one_interval(kind):
    with Lab(nodes=1, sources=0) as lab:
        params, meta = configuration(kind, False, arp_count=20,
                                     arp_interval=int(INTERVAL * 1000))
        sniffer = Sniffer(lab, params["ip"], 2.0)
        agent(lab, "start", params, meta)
        time.sleep(2.5 * INTERVAL)  # two repeats out
        _, stopped = agent(lab, "stop", params, meta)
        times = announcements(sniffer.frames(), False)
        assert 3 <= len(times) < 20, times
        assert times[-1] < stopped + INTERVAL, (times, stopped)


@pytest.mark.parametrize("kind", ["plain", "cloned"])
def test_arp_count_0_sends_none(kind):
    with Lab(nodes=1, sources=0) as lab:
        params, meta = configuration(kind, False, arp_count=0)
        sniffer = Sniffer(lab, params["ip"], 1.0)
        agent(lab, "start", params, meta)
        assert sniffer.frames() == []
        agent(lab, "stop", params, meta)
