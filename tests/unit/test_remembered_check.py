"""Backend.state: the remembered full check every backend shares, with its
hooks filled in by an in-memory backend.  The real backends' hooks are
exercised in the netns tier (nft) and the legacy tier (CLUSTERIP), where the
monitor's fast path is measured too."""

import pytest

from clusterip import backends, params
from clusterip.address import Placement
from clusterip.backends import Backend, VipState
from clusterip.memo import Memo

PLACEMENT = Placement(nic="eth0", prefixlen=24)


class KernelBackend(Backend):
    """Rules as bytes, owned buckets and a full check that counts its calls."""

    name = "kernel"
    max_buckets = 16

    def __init__(self, **context):
        super().__init__(**context)
        self.rules = b"rules v1"
        self.owned = frozenset({1})
        self.exists = True
        self.broken = ()  # what the full check finds missing
        self.unreadable = []
        self.full_checks = 0
        self.during_full_check = None  # called in the middle of one

    def _fingerprint(self, p):
        return self.rules if self.exists else None

    def _owned(self, p):
        return self.owned if self.exists else None

    def _present(self, p, fingerprint, owned):
        return self.exists

    def _unreadable(self, p):
        return self.unreadable

    def _full_state(self, p, placement, owned, multicast):
        self.full_checks += 1
        if self.during_full_check:
            self.during_full_check()
        return VipState(owned=self.owned, missing=tuple(self.broken) + multicast)


@pytest.fixture
def joined(monkeypatch):
    membership = {"joined": True}
    monkeypatch.setattr(backends.address, "cluster_mac_accepted",
                        lambda nic, mac: membership["joined"])
    return membership


def instance(bucket=0, **extra):
    env = {"OCF_RESKEY_ip": "192.0.2.10", "OCF_RESKEY_CRM_meta_clone": str(bucket),
           "OCF_RESKEY_CRM_meta_clone_max": "3", "OCF_RESKEY_CRM_meta_globally_unique": "true"}
    env.update({"OCF_RESKEY_" + k: v for k, v in extra.items()})
    return params.parse(env)


def backend(tmp_path):
    return KernelBackend(memo=Memo(str(tmp_path / "clusterip-192.0.2.10.checked")))


def test_a_clean_verdict_is_remembered_while_the_rules_read_the_same(tmp_path, joined):
    b = backend(tmp_path)
    assert b.state(instance(), PLACEMENT) == VipState(owned=frozenset({1}))
    b.owned = frozenset({1, 2})  # buckets move without a rule change: read each time
    assert b.state(instance(), PLACEMENT) == VipState(owned=frozenset({1, 2}))
    # The other instances of the VIP share the verdict (the bucket is not in the key).
    assert b.state(instance(bucket=2), PLACEMENT).owned == {1, 2}
    assert b.full_checks == 1


def test_changed_rules_or_parameters_take_the_full_check_again(tmp_path, joined):
    b = backend(tmp_path)
    b.state(instance(), PLACEMENT)
    b.rules = b"rules v2"
    b.state(instance(), PLACEMENT)
    assert b.full_checks == 2
    b.state(instance(hash_init="7"), PLACEMENT)
    b.state(instance(), Placement(nic="eth1", prefixlen=24))
    assert b.full_checks == 4


def test_a_verdict_that_found_something_missing_is_not_remembered(tmp_path, joined):
    b = backend(tmp_path)
    b.broken = ("ARP rewrite",)
    for _ in range(2):
        assert b.state(instance(), PLACEMENT).missing == ("ARP rewrite",)
    assert b.full_checks == 2


def test_rules_that_change_during_the_full_check_are_not_vouched_for(tmp_path, joined):
    b = backend(tmp_path)
    b.during_full_check = lambda: setattr(b, "rules", b"rules v2")
    b.state(instance(), PLACEMENT)
    b.during_full_check = None
    b.state(instance(), PLACEMENT)
    assert b.full_checks == 2


def test_a_lost_multicast_membership_is_reported_on_the_fast_path_too(tmp_path, joined):
    b = backend(tmp_path)
    b.state(instance(), PLACEMENT)
    joined["joined"] = False
    state = b.state(instance(), PLACEMENT)
    assert state.missing == ("multicast membership of eth0 in 03:c1:c0:00:02:0a",)
    assert b.full_checks == 1
    # A full check whose only finding is the membership is remembered as clean rules.
    b.rules = b"rules v2"
    b.state(instance(), PLACEMENT)
    b.state(instance(), PLACEMENT)
    assert b.full_checks == 2


def test_nothing_there_is_none_without_a_full_check(tmp_path, joined):
    b = backend(tmp_path)
    b.exists = False
    assert b.state(instance(), PLACEMENT) is None
    assert b.full_checks == 0


def test_rules_the_full_check_must_not_read_are_named_with_the_owned_buckets(tmp_path, joined):
    b = backend(tmp_path)
    b.unreadable = ["a table in an older layout"]
    assert b.state(instance(), PLACEMENT) == VipState(
        owned=frozenset({1}), missing=("a table in an older layout",), outdated=True)
    assert b.full_checks == 0


def test_without_a_memo_every_call_checks_fully(joined):
    b = KernelBackend()
    b.state(instance(), PLACEMENT)
    b.state(instance(), PLACEMENT)
    assert b.full_checks == 2
    b.forget()  # nothing to forget: no error


def test_forget_drops_the_verdict(tmp_path, joined):
    b = backend(tmp_path)
    b.state(instance(), PLACEMENT)
    b.forget()
    b.state(instance(), PLACEMENT)
    assert b.full_checks == 2
    assert Memo(str(tmp_path / "missing")).recall(b"key") is None
