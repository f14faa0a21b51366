"""The CLUSTERIP backend's pure parts; the rest runs for real in the legacy tier."""

import pytest

from clusterip import backends, params
from clusterip.backends import clusterip, nft  # noqa: F401 (registry modules)
from clusterip.errors import NotConfigured, NotInstalled


def clone(backend="auto", total=3, ip="192.0.2.10", **extra):
    return params.parse(dict({
        "OCF_RESKEY_ip": ip, "OCF_RESKEY_backend": backend,
        "OCF_RESKEY_CRM_meta_clone": "0", "OCF_RESKEY_CRM_meta_clone_max": str(total),
        "OCF_RESKEY_CRM_meta_globally_unique": "true"},
        **{"OCF_RESKEY_" + name: value for name, value in extra.items()}))


@pytest.mark.parametrize("text, owned", [("1,3\n", {1, 3}), ("2\n", {2}), ("", set()),
                                         ("\n", set())])
def test_proc_file_format(text, owned):
    assert clusterip.parse_owned(text) == owned


def test_rule_options_spell_the_configuration_like_iptables():
    p = params.parse({"OCF_RESKEY_ip": "192.0.2.10", "OCF_RESKEY_hash_init": "7",
                      "OCF_RESKEY_CRM_meta_clone": "1", "OCF_RESKEY_CRM_meta_clone_max": "4",
                      "OCF_RESKEY_CRM_meta_globally_unique": "true"})
    assert clusterip.rule_options(p) == {
        "hashmode": "sourceip-sourceport", "clustermac": "03:C1:C0:00:02:0A",
        "total-nodes": "4", "hash-init": "7"}


def test_auto_chooses_by_kernel_capability(monkeypatch):
    monkeypatch.setattr(clusterip, "_kernel_has_clusterip", lambda: False)
    monkeypatch.setattr(backends.nft.NftBackend, "check_available", lambda self: None)
    assert backends.select(clone()).name == "nft"
    monkeypatch.setattr(clusterip, "_kernel_has_clusterip", lambda: True)
    monkeypatch.setattr(clusterip.ClusteripBackend, "check_available", lambda self: None)
    assert backends.select(clone()).name == "clusterip"


def test_explicit_clusterip_on_a_kernel_without_it_names_nft(monkeypatch):
    monkeypatch.setattr(clusterip, "_kernel_has_clusterip", lambda: False)
    with pytest.raises(NotInstalled, match="backend=nft"):
        backends.select(clone("clusterip"))


def test_more_than_16_buckets_is_6(monkeypatch):
    monkeypatch.setattr(clusterip.ClusteripBackend, "check_available", lambda self: None)
    with pytest.raises(NotConfigured, match="limit of 16"):
        backends.select(clone("clusterip", 17))


# What the target cannot do: graceful_handover (it drops every packet of a
# bucket the node does not own, see the comment on
# ClusteripBackend.graceful_handover) and IPv6 (ipt_CLUSTERIP is an IPv4
# target).  auto does not switch to nft behind the administrator's back (see
# backends.check_supported); nft serves both.
REFUSED = [({"graceful_handover": "true"}, "graceful_handover=true needs backend=nft"),
           ({"ip": "2001:db8::10"}, "ip=2001:db8::10 is IPv6, which needs backend=nft")]


@pytest.mark.parametrize("requested", ["clusterip", "auto"])
@pytest.mark.parametrize("extra, reason", REFUSED)
def test_what_clusterip_cannot_do_is_refused_with_6_where_it_is_chosen(
        monkeypatch, requested, extra, reason):
    monkeypatch.setattr(clusterip, "_kernel_has_clusterip", lambda: True)
    monkeypatch.setattr(clusterip.ClusteripBackend, "check_available", lambda self: None)
    with pytest.raises(NotConfigured, match=reason):
        backends.select(clone(requested, **extra))
    assert backends.select(clone(requested, graceful_handover="false")).name == "clusterip"
    monkeypatch.setattr(backends.nft.NftBackend, "check_available", lambda self: None)
    assert backends.select(clone("nft", **extra)).name == "nft"
