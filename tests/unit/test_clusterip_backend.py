"""The CLUSTERIP backend's pure parts; the rest runs for real in the legacy tier."""

import json
import os

import pytest

from clusterip import backends, params
from clusterip.backends import clusterip, nft  # noqa: F401 (registry modules)
from clusterip.errors import NotConfigured, NotInstalled

LIB = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(clusterip.__file__))))


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


def kernel(monkeypatch, clusterip_target, nft_holds, serving=None):
    """A kernel with or without the CLUSTERIP target and nf_tables that can or
    cannot hold the agent's tables; ``serving``: the backend whose filter for
    the VIP exists now."""
    monkeypatch.setattr(clusterip, "_kernel_has_clusterip", lambda: clusterip_target)
    monkeypatch.setattr(backends.nft.nfnl, "base_chains_work", lambda hooks: nft_holds)
    for cls in (clusterip.ClusteripBackend, nft.NftBackend):
        monkeypatch.setattr(cls, "check_available", lambda self: None)
        monkeypatch.setattr(cls, "serves", lambda self, params, name=cls.name: name == serving)


@pytest.mark.parametrize("clusterip_target, nft_holds, serving, chosen", [
    (False, True, None, "nft"),  # Linux 6.3 and later
    (True, True, None, "nft"),  # Debian 12's 6.1: nft, as every other node runs
    (True, False, None, "clusterip"),  # nf_tables without ip/arp chains (UML 6.1)
    (True, True, "clusterip", "clusterip"),  # started before auto meant nft: kept until stopped
    (True, False, "nft", "nft"),  # its tables exist: nf_tables holds them
])
def test_auto_is_nft_wherever_nf_tables_can_hold_the_tables(
        monkeypatch, clusterip_target, nft_holds, serving, chosen):
    kernel(monkeypatch, clusterip_target, nft_holds, serving)
    assert backends.select(clone()).name == chosen
    assert backends.choose("auto").name == (
        "nft" if not clusterip_target or nft_holds else "clusterip")  # no VIP: the kernel's


def test_auto_asks_the_kernel_only_where_there_is_a_choice(monkeypatch):
    kernel(monkeypatch, False, True)
    monkeypatch.setattr(backends.nft.nfnl, "base_chains_work",
                        lambda hooks: pytest.fail("probed on a kernel without CLUSTERIP"))
    assert backends.select(clone()).name == "nft"


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
# target).  auto does not switch to nft behind the administrator's back where
# it chose CLUSTERIP (see backends.check_supported); nft serves both.
REFUSED = [({"graceful_handover": "true"}, "graceful_handover=true needs backend=nft"),
           ({"ip": "2001:db8::10"}, "ip=2001:db8::10 is IPv6, which needs backend=nft")]


@pytest.mark.parametrize("requested", ["clusterip", "auto"])
@pytest.mark.parametrize("extra, reason", REFUSED)
def test_what_clusterip_cannot_do_is_refused_with_6_where_it_is_chosen(
        monkeypatch, requested, extra, reason):
    kernel(monkeypatch, True, False)  # auto: CLUSTERIP, nf_tables cannot hold the tables
    with pytest.raises(NotConfigured, match=reason):
        backends.select(clone(requested, **extra))
    assert backends.select(clone(requested, graceful_handover="false")).name == "clusterip"
    monkeypatch.setattr(backends.nft.NftBackend, "check_available", lambda self: None)
    assert backends.select(clone("nft", **extra)).name == "nft"


# python-iptables that cannot set options with this libxtables (1.8.11 and the
# layout python-iptables 1.2.0 assumes, ldx/python-iptables#353): start and
# validate-all say 5 before touching anything.  The real libraries: the legacy
# tier (a guest over a Debian 13 root) and test_option_probe_on_this_host.

class FakeXTablesError(Exception):
    pass


class FakeIptc:
    """The few names the probe uses, as python-iptables spells them."""

    def __init__(self, option_works=True, match_exists=True, version="1.2.0"):
        test = self

        class Rule:
            pass

        class Match:
            def __init__(self, rule, name):
                if not match_exists:
                    raise FakeXTablesError("can't find match %s" % name)
                self.name = name
                self.parameters = {}

            def set_parameter(self, option, value):
                test.calls.append((self.name, option, value))
                if not option_works:
                    raise FakeXTablesError("b'%s': no such parameter b'%s'" % (self.name, option))
                self.parameters[option] = value

        self.calls = []
        self.Rule, self.Match = Rule, Match
        self.version = type("version", (), {"__version__": version})
        self.xtables = type("xtables", (), {"_lib_xtables": type(
            "lib", (), {"_name": "/nonexistent/libxtables.so.12"})})


DPKG_STATUS_113 = """Package: libxtables12
Status: install ok installed
Architecture: amd64
Version: 1.8.11-2

Package: libxtst6
Status: install ok installed
Version: 2:1.2.3-1.1
"""


@pytest.fixture
def dpkg_status(tmp_path, monkeypatch):
    path = tmp_path / "status"
    path.write_text(DPKG_STATUS_113)
    monkeypatch.setattr(clusterip, "DPKG_STATUS", str(path))
    return path


def backend_with(monkeypatch, fake):
    backend = clusterip.ClusteripBackend()
    monkeypatch.setattr(clusterip, "_import_iptc", lambda: fake)
    return backend


def test_options_that_cannot_be_set_are_5_naming_versions_issue_and_remedies(
        monkeypatch, dpkg_status):
    fake = FakeIptc(option_works=False)
    with pytest.raises(NotInstalled) as raised:
        backend_with(monkeypatch, fake).check_libraries()
    reason = str(raised.value)
    for words in ("python-iptables 1.2.0", "libxtables 1.8.11 ", "no such parameter b'sport'",
                  "ldx/python-iptables#353", "https://github.com/ldx/python-iptables/issues/353",
                  "backend=nft", "iptables <= 1.8.10", "Debian 12"):
        assert words in reason, (words, reason)
    assert "\n" not in reason  # one ocf-exit-reason line
    # The probe: the udp match's second option, on a rule only in memory.
    assert fake.calls == [("udp", "sport", "53")]


def test_options_that_can_be_set_pass_and_the_probe_runs_once_per_process(monkeypatch):
    fake = FakeIptc()
    backend = backend_with(monkeypatch, fake)
    backend.check_libraries()
    backend.check_libraries()
    assert fake.calls == [("udp", "sport", "53")]


def test_a_probe_that_cannot_run_proves_nothing(monkeypatch):
    # No udp match at all: not this bug; the real work reports its own error.
    backend_with(monkeypatch, FakeIptc(match_exists=False)).check_libraries()


def test_the_refusal_repeats_in_a_later_check(monkeypatch, dpkg_status):
    backend = backend_with(monkeypatch, FakeIptc(option_works=False))
    for _ in range(2):
        with pytest.raises(NotInstalled, match="python-iptables#353"):
            backend.check_libraries()


@pytest.mark.parametrize("status, version", [
    (DPKG_STATUS_113, "1.8.11"),
    ("Package: libxtables12\nStatus: install ok installed\nVersion: 1:1.8.12\n", "1.8.12"),
    ("Package: libxtables12\nStatus: deinstall ok config-files\nVersion: 1.8.9-2\n",
     "libxtables.so.12"),
    ("", "libxtables.so.12"),
])
def test_libxtables_version_from_dpkg_else_the_library_file(tmp_path, monkeypatch,
                                                            status, version):
    path = tmp_path / "status"
    path.write_text(status)
    monkeypatch.setattr(clusterip, "DPKG_STATUS", str(path))
    assert clusterip._libxtables_version(FakeIptc()) == version


def test_option_probe_on_this_host():
    # The real python-iptables and libxtables of this machine (Debian 12:
    # 1.8.9, options work; Debian 13: 1.8.11, they do not), in a child process
    # so that a crash would be a failure here, not the end of the run.  No
    # root and no CLUSTERIP needed: without CAP_NET_RAW libxtables assumes
    # revision 0 of udp, as root it asks the kernel's x_tables core.
    import subprocess
    import sys

    code = ("import json; from clusterip.backends import clusterip as c; i = c._import_iptc(); "
            "print(json.dumps([c._option_problem(i), c._libxtables_version(i), "
            "i.version.__version__]))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            env=dict(os.environ, PYTHONPATH=LIB), timeout=60)
    assert result.returncode == 0, result.stderr
    problem, libxtables, python_iptables = json.loads(result.stdout)
    release = tuple(int(part) for part in libxtables.split(".")[:3])
    broken = release >= (1, 8, 11) and python_iptables == "1.2.0"
    assert (problem is not None) == broken, (problem, libxtables, python_iptables)
    if broken:
        assert "no such parameter" in problem


@pytest.mark.parametrize("multiarch, first", [
    ("riscv64-linux-gnu", ("/usr/lib/riscv64-linux-gnu", "/lib/riscv64-linux-gnu")),
    ("", ()), (None, ())])  # None/empty: a Python built off Debian (RHEL, SUSE)
def test_library_directories_follow_the_interpreters_multiarch(monkeypatch, multiarch, first):
    import sysconfig

    monkeypatch.setattr(sysconfig, "get_config_var",
                        lambda name: multiarch if name == "MULTIARCH" else None)
    assert clusterip._lib_dirs() == first + ("/usr/lib64", "/usr/lib", "/lib64", "/lib")


def test_this_machines_libxtables_is_found_in_the_first_directories():
    # Debian 12 and 13 keep libxtables in /usr/lib/<multiarch> (x86_64-linux-gnu
    # here, aarch64-linux-gnu, ...), where the old fixed list knew only two.
    found = clusterip._fast_find_library("xtables", clusterip._lib_dirs(), clusterip._lister())
    assert found is not None and os.path.dirname(found) in clusterip._lib_dirs()[:2], found
