"""Draining (issue #16): the drain loop on a fake clock, its bound by the
stop's timeout, and the stop of a node's last instance against the fakes of
test_agent (the bucket released under the lock, the wait without it, the
teardown after it unless an instance started meanwhile)."""

import fcntl
import os

import pytest

from clusterip import drain, kernel
from clusterip.kernel import sockdiag
from unit.test_agent import (  # noqa: F401 (node: the fixture)
    VIP,
    act,
    node,
    only_a_backend_without_graceful_handover,
    reason,
)


class FakeTime:
    """time.monotonic and time.sleep: the clock moves only when slept on."""

    def __init__(self):
        self.now = 1000.0
        self.slept = []

    def monotonic(self):
        return self.now

    def sleep(self, seconds):
        self.slept.append(seconds)
        self.now += seconds


def counter(counts):
    """A count() answering ``counts`` in turn, then its last one forever."""
    answers = list(counts)

    def count():
        return answers.pop(0) if len(answers) > 1 else answers[0]
    return count


def test_the_drain_ends_as_soon_as_no_connection_is_left():
    clock = FakeTime()
    first, left, took = drain.wait(counter([5, 3, 1, 0, 7]), 10, clock.monotonic, clock.sleep)
    assert (first, left) == (5, 0)
    assert took == pytest.approx(3 * drain.INTERVAL)
    assert clock.slept == [drain.INTERVAL] * 3


def test_no_connection_at_all_is_no_wait():
    clock = FakeTime()
    assert drain.wait(counter([0]), 10, clock.monotonic, clock.sleep) == (0, 0, 0)
    assert clock.slept == []


def test_the_drain_ends_at_its_timeout_with_what_is_left():
    clock = FakeTime()
    first, left, took = drain.wait(counter([9, 8, 4]), 2.05, clock.monotonic, clock.sleep)
    assert (first, left) == (9, 4)
    assert took == pytest.approx(2.05)
    assert clock.slept[-1] == pytest.approx(0.05)  # the last sleep ends at the deadline


def test_an_unknown_count_is_no_end_of_the_drain():
    clock = FakeTime()
    assert drain.wait(counter([None]), 1, clock.monotonic, clock.sleep)[:2] == (None, None)
    assert clock.now == pytest.approx(1001.0)


@pytest.mark.parametrize("drain_timeout, stop_timeout, elapsed, seconds", [
    (10, 20, 0.1, 10),  # fits
    (10, 15, 0.0, 10),  # exactly: the reserve left
    (30, 20, 0.0, 20 - drain.RESERVE),  # cut to the stop's timeout
    (30, 20, 2.0, 20 - drain.RESERVE - 2.0),  # what the stop spent already counts
    (10, 4, 0.0, 0.0),  # no room at all: no drain
])
def test_the_stop_timeout_bounds_the_drain(drain_timeout, stop_timeout, elapsed, seconds):
    assert drain.budget(drain_timeout, stop_timeout, elapsed) == pytest.approx(seconds)


def test_the_stop_timeout_a_drain_needs():
    assert drain.needed_stop_timeout(10) == 15
    assert drain.needed_stop_timeout(2.5) == 8


# --- the stop of the node's last instance ------------------------------------

DRAINING = {"graceful_handover": "true", "drain_timeout": "10"}


@pytest.fixture
def clock(monkeypatch, node):
    """The fake clock, and the fake backend keeping established connections as nft does."""
    fake = FakeTime()
    monkeypatch.setattr(drain, "time", fake)
    monkeypatch.setattr(node.backend, "graceful_handover", True, raising=False)
    return fake


def lock_free(node):
    """Whether the VIP's lock is free now (another action could take it)."""
    fd = os.open(os.path.join(node.rsctmp, "clusterip-%s.lock" % VIP), os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    finally:
        os.close(fd)
    return True


def counting(monkeypatch, node, counts, during=None):
    """sock_diag replaced by ``counts``; each count records what the node
    looked like then (owned buckets, address, lock) and runs ``during``."""
    seen = []
    answer = counter(counts)

    def count(packed):
        table = node.backend.tables.get(VIP)
        seen.append((sorted(table["owned"]) if table else None, VIP in node.addresses,
                     lock_free(node)))
        if during and len(seen) == 2:
            during()
        return answer()
    monkeypatch.setattr(sockdiag, "serving_count", count)
    return seen


def test_the_last_stop_drains_without_the_lock_then_removes_everything(node, monkeypatch,
                                                                      clock, capsys):
    assert act(node, "start", 0, **DRAINING) == 0
    assert act(node, "start", 1, **DRAINING) == 0
    seen = counting(monkeypatch, node, [3, 2, 0])
    assert act(node, "stop", 0, **DRAINING) == 0
    assert seen == []  # not the last: no drain
    assert act(node, "stop", 1, **DRAINING) == 0
    # While draining: no bucket owned, the address and filter kept, the lock free.
    assert seen == [([], True, True)] * 3
    assert node.backend.tables == {} and node.addresses == {}
    assert node.backend.calls[-2:] == [("remove", 2), ("destroy",)]
    err = capsys.readouterr().err
    assert "drained %s in 0.2 s: 3 connection(s) at the start, 0 left" % VIP in err


def test_the_drain_ends_at_drain_timeout_and_then_removes_everything(node, monkeypatch,
                                                                     clock, capsys):
    assert act(node, "start", 0, **DRAINING) == 0
    counting(monkeypatch, node, [4])
    began = clock.now
    assert act(node, "stop", 0, **DRAINING) == 0
    assert clock.now - began == pytest.approx(10)
    assert node.backend.tables == {} and node.addresses == {}
    assert "4 connection(s) at the start, 4 left (drain_timeout passed)" \
        in capsys.readouterr().err


def test_the_drain_is_cut_to_fit_the_stops_timeout(node, monkeypatch, clock, capsys):
    params = dict(DRAINING, drain_timeout="30", CRM_meta_timeout="20000")
    assert act(node, "start", 0, **params) == 0
    counting(monkeypatch, node, [4])
    began = clock.now
    assert act(node, "stop", 0, **params) == 0
    assert clock.now - began == pytest.approx(20 - drain.RESERVE, abs=0.1)
    err = capsys.readouterr().err
    assert "drain_timeout=30 cut to 15.0 s: this stop's timeout is 20 s" in err
    assert "a timeout of at least 35 s" in err and "(the stop's timeout is near)" in err
    assert node.backend.tables == {} and node.addresses == {}


def test_an_instance_started_during_the_drain_keeps_the_shared_pieces(node, monkeypatch,
                                                                      clock, capsys):
    assert act(node, "start", 0, **DRAINING) == 0

    def start_meanwhile():  # takes the lock: it is free
        # In-process, the nested action's deferred_release would end the stop's.
        deferred = kernel._deferred
        try:
            assert act(node, "start", 2, **DRAINING) == 0
        finally:
            kernel._deferred = deferred
    counting(monkeypatch, node, [2, 1, 0], during=start_meanwhile)
    assert act(node, "stop", 0, **DRAINING) == 0
    assert node.backend.tables[VIP]["owned"] == {3} and VIP in node.addresses
    assert ("destroy",) not in node.backend.calls
    assert "started here during the drain" in capsys.readouterr().err
    assert act(node, "monitor", 2, **DRAINING) == 0


def test_an_unreadable_count_drains_for_the_whole_timeout(node, monkeypatch, clock, capsys):
    assert act(node, "start", 0, **DRAINING) == 0

    def broken(packed):
        raise OSError(2, "No such file or directory")
    monkeypatch.setattr(sockdiag, "serving_count", broken)
    began = clock.now
    assert act(node, "stop", 0, **DRAINING) == 0
    assert clock.now - began == pytest.approx(10)
    err = capsys.readouterr().err
    assert err.count("cannot count the connections to %s" % VIP) == 1
    assert node.backend.tables == {}


def test_without_drain_timeout_the_last_stop_counts_nothing(node, monkeypatch, clock):
    assert act(node, "start", 0, graceful_handover="true") == 0
    seen = counting(monkeypatch, node, [5])
    assert act(node, "stop", 0, graceful_handover="true") == 0
    assert seen == [] and node.backend.tables == {}


def test_a_stop_with_nothing_started_drains_nothing(node, monkeypatch, clock):
    seen = counting(monkeypatch, node, [5])
    assert act(node, "stop", 0, **DRAINING) == 0
    assert seen == []


@pytest.mark.parametrize("action", ["start", "validate-all"])
def test_drain_timeout_without_graceful_handover_is_6(node, capsys, action):
    assert act(node, action, 0, drain_timeout="10") == 6
    assert "drain_timeout=10 needs graceful_handover=true" in reason(capsys)
    assert node.backend.calls == [] and node.addresses == {}


@pytest.mark.parametrize("action", ["start", "validate-all"])
def test_drain_timeout_on_a_backend_without_graceful_handover_is_6(node, monkeypatch, capsys,
                                                                   action):
    only_a_backend_without_graceful_handover(node, monkeypatch)
    assert act(node, action, 0, **DRAINING) == 6
    assert "drain_timeout=10 needs backend=nft" in reason(capsys)
    assert node.backend.calls == [] and node.addresses == {}


def test_a_backend_without_graceful_handover_stops_without_draining(node, monkeypatch):
    # Started before drain_timeout was set; a failed stop would get the node fenced.
    assert act(node, "start", 0) == 0
    only_a_backend_without_graceful_handover(node, monkeypatch)
    seen = counting(monkeypatch, node, [5])
    assert act(node, "stop", 0, **DRAINING) == 0
    assert seen == [] and node.backend.tables == {} and node.addresses == {}


@pytest.mark.parametrize("drain_timeout, warned", [("15", False), ("15.5", True), ("60", True)])
def test_validate_all_advises_a_stop_timeout_it_cannot_see(node, capsys, drain_timeout,
                                                           warned):
    assert act(node, "validate-all", 0, graceful_handover="true",
               drain_timeout=drain_timeout) == 0
    err = capsys.readouterr().err
    assert ("needs a stop operation timeout of at least" in err) is warned, err
    if drain_timeout == "60":
        assert "at least 65 s, above Pacemaker's default of 20 s (op stop timeout=65s)" in err


# -- validate-all against the stop timeout the CIB configures -------------------------


CIB = """<configuration><crm_config/><nodes/><resources>
  <clone id="web-ip-clone"><primitive id="web-ip" class="ocf" provider="custom" type="clusterip">
    <operations>
      <op id="web-ip-monitor-10s" name="monitor" interval="10s" timeout="20s"/>
      %s
    </operations></primitive></clone>
</resources>%s</configuration>"""
OP_DEFAULTS = """<op_defaults><meta_attributes id="op-options">
  <nvpair id="op-options-timeout" name="timeout" value="%s"/></meta_attributes></op_defaults>"""


@pytest.mark.parametrize("stop_op, defaults, expected", [
    ('<op id="s" name="stop" interval="0" timeout="30s"/>', "", 30.0),
    ('<op id="s" name="stop" interval="0" timeout="2min"/>', "", 120.0),
    ('<op id="s" name="stop" interval="0"><meta_attributes id="m"><nvpair id="n" '
     'name="timeout" value="45"/></meta_attributes></op>', "", 45.0),
    ("", OP_DEFAULTS % "PT1M30S", 90.0),
    ('<op id="s" name="stop" interval="0" timeout="25000ms"/>', OP_DEFAULTS % "60s", 25.0),
    ("", "", 20.0),  # Pacemaker's default
])
def test_the_stop_timeout_the_cib_configures(stop_op, defaults, expected):
    xml = CIB % (stop_op, defaults)
    for resource in ("web-ip", "web-ip:2"):  # a clone instance names its primitive
        seconds, where = drain.stop_timeout(xml, resource, 20.0)
        assert seconds == expected, (resource, where)


@pytest.mark.parametrize("text, seconds", [
    ("30", 30), ("30s", 30), ("30 sec", 30), ("1.5m", 90), ("1h", 3600), ("500ms", 0.5),
    ("PT2M", 120), ("PT1H0M5S", 3605), ("soon", None), ("", None), ("PT", None), ("-5s", None),
])
def test_pacemaker_durations(text, seconds):
    assert drain.parse_duration(text) == seconds


def test_an_unknown_resource_or_unreadable_timeout_gives_no_answer():
    xml = CIB % ('<op id="s" name="stop" interval="0" timeout="soon"/>', "")
    assert drain.stop_timeout(xml, "web-ip", 20.0) is None
    assert drain.stop_timeout(xml, "mail-ip", 20.0) is None
    assert drain.stop_timeout("<not xml", "web-ip", 20.0) is None


def test_no_cibadmin_gives_no_answer():
    def run(argv, **kwargs):
        raise FileNotFoundError(2, "No such file or directory", argv[0])
    assert drain.stop_timeout_in_cib("web-ip", 20.0, run=run) is None


@pytest.mark.parametrize("stop_timeout, drain_timeout, rc", [
    (20.0, "15", 0), (20.0, "15.5", 6), (30.0, "25", 0), (30.0, "60", 6)])
def test_validate_all_refuses_a_drain_that_does_not_fit_the_configured_stop(
        node, capsys, stop_timeout, drain_timeout, rc):
    node.cib = (stop_timeout, "its op stop timeout=%gs" % stop_timeout)
    assert act(node, "validate-all", 0, graceful_handover="true",
               drain_timeout=drain_timeout) == rc
    err = capsys.readouterr().err
    if rc:
        assert "ocf-exit-reason:drain_timeout=%s does not fit within the stop operation's " \
               "timeout of %g s (its op stop timeout=%gs)" % (
                   drain_timeout, stop_timeout, stop_timeout) in err, err
    else:
        assert "stop operation timeout" not in err, err
