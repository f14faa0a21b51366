"""Draining (issue #16): the stop of a node's last instance keeps serving
its established connections until they end or drain_timeout passes.

Three nodes, one bucket each, hashmode sourceip, graceful_handover=true;
100 long-lived connections, one per source (helpers/holder.py), about a
third of them on n2.  Then n2's only instance (its last) stops, through
the real agent with Pacemaker's clone environment, from a thread, while the
test watches n2 and the connections:

* the connections end by themselves ~2 s into the drain (the client closes
  them): meanwhile every held connection still answers from its node, n2
  owns no bucket but keeps the address, new connections of its bucket are
  answered by no node (its instance starts elsewhere only after the stop);
  the stop returns soon after the last one closed, well within
  drain_timeout, and n2 is clean;
* they stay open: the stop returns after drain_timeout, and then n2's
  connections break, as without draining;
* the stop's own timeout is shorter than drain_timeout + 5 s: the drain
  ends 5 s before it, with a warning;
* drain_timeout=0: the stop returns at once and breaks them (the figure).

After each stop n2's instance starts on n0, as Pacemaker's recovery does,
and its bucket's new connections go there.  The first case runs over IPv6
too (the connections counted on AF_INET6 sockets).
"""

import collections
import threading
import time

import pytest

import oracle
import scenarios
from netlab import Lab, split_pair

PORT, HOLD_PORT = scenarios.PORT, scenarios.PORT + 1
HOLD_SPORT, NEW_SPORT = 22000, 23000
SOURCES = 100
DRAIN_TIMEOUT = 10
CLOSE_AFTER = 2.0  # s into the drain: the client closes its connections


def params(drain_timeout, family=scenarios.IPV4):
    return scenarios.agent_params("nft", "sourceip", family.vip, graceful_handover="true",
                                  drain_timeout=str(drain_timeout))


class Story:
    """A lab with the clone started one bucket per node and the connections held."""

    def __init__(self, lab, drain_timeout, stop_timeout_ms=20000, family=scenarios.IPV4):
        self.lab, self.params = lab, params(drain_timeout, family)
        self.family = family
        self.stop_timeout_ms = stop_timeout_ms
        self.baseline = oracle.multicast_macs(lab, "n2")
        for node in lab.node_names:
            lab.start_responder(node, PORT, bind=family.bind)
            lab.start_responder(node, HOLD_PORT, hold=True, bind=family.bind)
        for instance, node in enumerate(lab.node_names):
            self.agent(node, "start", instance)
        lab.run("client", "ping", "-c", "1", "-W", "1", family.vip, check=False)
        self.held, self.greeting = lab.hold(family.vip, HOLD_PORT,
                                            [(s, HOLD_SPORT) for s in lab.sources])
        assert set(self.greeting.values()) == set(lab.node_names), self.greeting
        self.on_n2 = {k for k, node in self.greeting.items() if node == "n2"}
        self.sources_of_n2 = [split_pair(k)[0] for k in sorted(self.on_n2)]

    def agent(self, node, action, instance):
        timeout_ms = self.stop_timeout_ms if action == "stop" else 20000
        rc, out, err = self.lab.agent(node, action, self.params,
                                      scenarios.clone_meta(instance, timeout_ms=timeout_ms),
                                      "vip:%d" % instance)
        assert rc == scenarios.OCF_SUCCESS, "%s of instance %d on %s: exit %d\n%s%s" % (
            action, instance, node, rc, out, err)
        return err

    def stop_n2_in_background(self):
        """The stop of n2's instance 2 from a thread: (thread, result dict)."""
        result = {}

        def stop():
            began = time.monotonic()
            result["log"] = self.agent("n2", "stop", 2)
            result["seconds"] = time.monotonic() - began
        thread = threading.Thread(target=stop, daemon=True)
        thread.start()
        return thread, result

    def broken(self, echoes):
        return {k: v for k, v in echoes.items() if v != self.greeting[k]}

    def take_over_and_check(self):
        """n2's instance started on n0 (Pacemaker's recovery): its bucket's
        new connections answered there; then n2 is clean."""
        self.agent("n0", "start", 2)
        answers, _ = self.lab.connect(self.family.vip, PORT,
                                      [(s, NEW_SPORT) for s in self.sources_of_n2])
        assert set(answers.values()) == {"n0"}, answers
        scenarios.assert_clean(self.lab, "n2", "nft", self.baseline, self.family)


def drained_line(log):
    return next((line.split(": ", 2)[-1] for line in log.splitlines() if "drained" in line),
                None)


@pytest.mark.parametrize("family", [scenarios.IPV4, scenarios.IPV6], ids=["ipv4", "ipv6"])
def test_the_stop_drains_until_the_connections_end(family):
    with Lab(nodes=3, sources=SOURCES, timeout_scale=scenarios.TIMEOUT_SCALE,
             ipv6=family.ipv6) as lab:
        story = Story(lab, DRAIN_TIMEOUT, family=family)
        thread, result = story.stop_n2_in_background()
        time.sleep(0.5)
        # Draining: n2 owns nothing, keeps the address; every connection answers.
        assert oracle.owned(lab, "n2", family.vip, "nft") == set()
        assert any(a.split("/")[0] == family.vip
                   for a in oracle.addresses(lab, "n2", ipv6=family.ipv6))
        echoes = story.held.ping()
        assert len(echoes) == SOURCES and not story.broken(echoes), story.broken(echoes)
        # No node answers n2's bucket now (its instance starts elsewhere after the stop).
        dark, _ = lab.connect(family.vip, PORT, [(s, NEW_SPORT) for s in
                                                    story.sources_of_n2[:5]],
                              timeout=0.5, retries=0)
        assert all(v.startswith("ERROR:") for v in dark.values()), dark
        assert thread.is_alive(), result
        time.sleep(max(0.0, CLOSE_AFTER - 0.5 - 0.5))
        closed_at = time.monotonic()
        story.held.close()
        thread.join(timeout=DRAIN_TIMEOUT + 10)
        assert not thread.is_alive()
        after_close = time.monotonic() - closed_at
        print({"held": SOURCES, "on_n2": len(story.on_n2), "stop_seconds":
               round(result["seconds"], 2), "stop_returned_after_close": round(after_close, 2),
               "broken_while_draining": 0, "log": drained_line(result["log"])})
        assert result["seconds"] < DRAIN_TIMEOUT - 2, result
        assert after_close < 1.5, after_close
        assert "connection(s) at the start, 0 left" in result["log"], result["log"]
        story.take_over_and_check()


def test_the_drain_ends_at_drain_timeout_and_then_breaks_what_is_left():
    drain_timeout = 3
    with Lab(nodes=3, sources=SOURCES, timeout_scale=scenarios.TIMEOUT_SCALE) as lab:
        story = Story(lab, drain_timeout)
        thread, result = story.stop_n2_in_background()
        thread.join(timeout=drain_timeout + 15)
        assert not thread.is_alive()
        assert drain_timeout <= result["seconds"] < drain_timeout + 2, result
        assert "%d connection(s) at the start, %d left (drain_timeout passed)" % (
            len(story.on_n2), len(story.on_n2)) in result["log"], result["log"]
        story.take_over_and_check()
        broken = story.broken(story.held.ping())
        print({"held": SOURCES, "on_n2": len(story.on_n2), "stop_seconds":
               round(result["seconds"], 2), "broken": dict(collections.Counter(broken.values())),
               "log": drained_line(result["log"])})
        assert set(broken) == story.on_n2, broken
        story.held.close()


def test_the_stops_own_timeout_cuts_the_drain_short():
    # drain_timeout=10 in a stop of 8 s: the drain ends 5 s before the timeout.
    with Lab(nodes=3, sources=SOURCES, timeout_scale=scenarios.TIMEOUT_SCALE) as lab:
        story = Story(lab, DRAIN_TIMEOUT, stop_timeout_ms=8000)
        began = time.monotonic()
        log = story.agent("n2", "stop", 2)
        seconds = time.monotonic() - began
        print({"stop_timeout": 8, "drain_timeout": DRAIN_TIMEOUT,
               "stop_seconds": round(seconds, 2), "log": drained_line(log)})
        assert 2.5 < seconds < 4, seconds
        assert "drain_timeout=10 cut to" in log and "at least 15 s" in log, log
        assert "left (the stop's timeout is near)" in log, log
        story.held.close()
        scenarios.assert_clean(lab, "n2", "nft", story.baseline)


def test_without_draining_the_stop_breaks_them_at_once():
    with Lab(nodes=3, sources=SOURCES, timeout_scale=scenarios.TIMEOUT_SCALE) as lab:
        story = Story(lab, 0)
        began = time.monotonic()
        log = story.agent("n2", "stop", 2)
        seconds = time.monotonic() - began
        assert "drained" not in log
        story.take_over_and_check()
        broken = story.broken(story.held.ping())
        print({"held": SOURCES, "on_n2": len(story.on_n2), "stop_seconds": round(seconds, 2),
               "broken": dict(collections.Counter(broken.values()))})
        assert seconds < 2, seconds
        assert set(broken) == story.on_n2, broken
        story.held.close()
