"""Parameter parsing and validation: every rule, as a table."""

import re

import hypothesis
import pytest
from hypothesis import strategies as st

from clusterip import params
from clusterip.errors import NotConfigured

BASE = {"OCF_RESKEY_ip": "192.0.2.10"}


def parse(**overrides):
    env = dict(BASE)
    env.update({("OCF_RESKEY_" + k): v for k, v in overrides.items()})
    return params.parse(env)


def test_defaults_for_a_plain_address():
    p = parse()
    assert (p.vip, p.cidr_netmask, p.nic, p.hashmode, p.backend) == \
        ("192.0.2.10", None, None, "sourceip-sourceport", "auto")
    assert (p.cloned, p.bucket, p.total_buckets) == (False, 1, 1)
    assert p.clustermac == "03:c1:c0:00:02:0a"
    assert p.hash_init is None  # nothing hashes a plain address
    assert p.graceful_handover is False


def test_ipaddr2_parameters_default_as_ipaddr2():
    p = parse()
    assert (p.iflabel, p.broadcast, p.preferred_lft, p.noprefixroute) == (None, "+", None, False)
    assert (p.arp_count, p.arp_interval) == (5, 200)
    six = parse(ip="2001:db8::1", preferred_lft="0", noprefixroute="yes")
    assert (six.preferred_lft, six.noprefixroute) == (0, True)
    assert parse(ip="2001:db8::1", preferred_lft="forever").preferred_lft is None
    assert parse(ip="2001:db8::1", preferred_lft="3600").preferred_lft == 3600
    assert parse(broadcast="192.0.2.127", iflabel="web-1").broadcast == "192.0.2.127"


def test_a_clone_is_never_a_source_address():
    clone = {"CRM_meta_clone": "1", "CRM_meta_clone_max": "2", "CRM_meta_globally_unique": "1"}
    assert parse(ip="2001:db8::1", **clone).preferred_lft == 0
    assert parse(ip="2001:db8::1", preferred_lft="0", **clone).preferred_lft == 0
    assert parse(**clone).noprefixroute is False  # the agent decides: see address.py


@pytest.mark.parametrize("text, value", [("true", True), ("YES", True), ("1", True),
                                         ("false", False), ("off", False), ("", False)])
def test_graceful_handover_is_a_boolean(text, value):
    assert parse(graceful_handover=text).graceful_handover is value


CLONE = {"CRM_meta_clone": "0", "CRM_meta_clone_max": "3", "CRM_meta_globally_unique": "true"}
GRACEFUL = {"graceful_handover": "true"}


def test_derived_defaults_are_the_same_on_every_node_and_differ_per_vip():
    a, b = parse(**CLONE), parse(ip="192.0.2.11", **CLONE)
    assert a.clustermac != b.clustermac and a.hash_init != b.hash_init
    assert parse(**CLONE).hash_init == a.hash_init == params.default_hash_init(a.packed)


@pytest.mark.parametrize("meta, expected", [
    ({"CRM_meta_clone": "0", "CRM_meta_clone_max": "3", "CRM_meta_globally_unique": "true"},
     (True, 1, 3)),
    ({"CRM_meta_clone": "2", "CRM_meta_clone_max": "3", "CRM_meta_globally_unique": "true"},
     (True, 3, 3)),
    ({"CRM_meta_clone": "0", "CRM_meta_clone_max": "1"}, (True, 1, 1)),
])
def test_clone_instance_i_owns_bucket_i_plus_1(meta, expected):
    p = parse(**meta)
    assert (p.cloned, p.bucket, p.total_buckets) == expected


@pytest.mark.parametrize("overrides, needle", [
    ({"ip": ""}, "required"),
    ({"ip": "web.example.com"}, "not an IPv4 or IPv6"),
    ({"ip": "fe80::1%eth0"}, "not an IPv4 or IPv6"),
    ({"ip": "fe80::1"}, "link-local"),
    ({"ip": "ff02::1"}, "multicast"),
    ({"ip": "::1"}, "loopback"),
    ({"ip": "::"}, "unspecified"),
    ({"ip": "::ffff:192.0.2.10"}, "IPv4-mapped"),
    ({"ip": "2001:db8::", "cidr_netmask": "64"}, "subnet-router anycast"),
    ({"ip": "2001:db8::1", "cidr_netmask": "129"}, "out of range 1..128"),
    ({"ip": "127.0.0.1"}, "cannot be a cluster address"),
    ({"ip": "224.0.0.5"}, "cannot be a cluster address"),
    ({"ip": "0.0.0.0"}, "cannot be a cluster address"),
    ({"ip": "255.255.255.255"}, "cannot be a cluster address"),
    ({"ip": "192.0.2.0", "cidr_netmask": "24"}, "network or broadcast"),
    ({"ip": "192.0.2.255", "cidr_netmask": "24"}, "network or broadcast"),
    ({"cidr_netmask": "33"}, "out of range"),
    ({"cidr_netmask": "255.255.255.0"}, "not a whole number"),
    ({"nic": "eth0; reboot"}, "not a valid interface"),
    ({"nic": "../../etc"}, "not a valid interface"),
    ({"nic": "a" * 16}, "not a valid interface"),
    ({"clustermac": "00:16:3e:00:00:01"}, "universally administered unicast"),
    ({"clustermac": "04:00:00:00:00:01"}, "universally administered unicast"),
    ({"clustermac": "ff:ff:ff:ff:ff:ff"}, "broadcast"),
    ({"clustermac": "01:80:c2:00:00:0e"}, "reserved"),
    ({"clustermac": "01:00:5e:00:00"}, "not a MAC"),
    ({"hashmode": "destport"}, "hashmode"),
    ({"hash_init": "-1"}, "not a whole number"),
    ({"hash_init": "4294967296"}, "out of range"),
    ({"hash_init": "0x1ffffffff"}, "not a whole number"),
    ({"backend": "iptables"}, "backend"),
    ({"graceful_handover": "sometimes"}, "graceful_handover"),
    ({"CRM_meta_clone": "0"}, "clone-max"),
    ({"CRM_meta_clone": "0", "CRM_meta_clone_max": "0"}, "out of range"),
    ({"CRM_meta_clone": "3", "CRM_meta_clone_max": "3",
      "CRM_meta_globally_unique": "true"}, "does not fit"),
    ({"CRM_meta_clone": "0", "CRM_meta_clone_max": "3"}, "globally-unique=true"),
    ({"CRM_meta_clone": "0", "CRM_meta_clone_max": "3",
      "CRM_meta_globally_unique": "false"}, "globally-unique=true"),
    ({"CRM_meta_clone": "0", "CRM_meta_clone_max": "257",
      "CRM_meta_globally_unique": "true"}, "out of range"),
    ({"iflabel": "web;x"}, "iflabel"),
    ({"iflabel": "a" * 14}, "longer than 13"),
    ({"iflabel": "webserver1", "nic": "enp0s31f6"}, "longer than the kernel's 15"),
    ({"iflabel": "1", "ip": "2001:db8::1"}, "IPv4 only"),
    ({"broadcast": "192.0.2"}, "broadcast"),
    ({"broadcast": "2001:db8::ff"}, "broadcast"),
    ({"broadcast": "+", "ip": "2001:db8::1"}, None),
    ({"broadcast": "-", "ip": "2001:db8::1"}, "IPv4 only"),
    ({"preferred_lft": "0"}, "IPv6 only"),
    ({"preferred_lft": "soon", "ip": "2001:db8::1"}, "not a whole number"),
    ({"preferred_lft": "4294967295", "ip": "2001:db8::1"}, "out of range"),
    ({"preferred_lft": "forever", "ip": "2001:db8::1", "CRM_meta_clone": "0",
      "CRM_meta_clone_max": "2", "CRM_meta_globally_unique": "true"}, "clone"),
    ({"noprefixroute": "true", "CRM_meta_clone": "0", "CRM_meta_clone_max": "2",
      "CRM_meta_globally_unique": "true"}, "clone"),
    ({"noprefixroute": "perhaps"}, "noprefixroute"),
    ({"arp_count": "101"}, "out of range 0..100"),
    ({"arp_count": "-1"}, "not a whole number"),
    ({"arp_interval": "0"}, "out of range 1..60000"),
    ({"arp_interval": "0.2"}, "not a whole number"),
    ({"owner_lease": "-5", **CLONE}, "not a whole number of seconds"),
    ({"owner_lease": "30.5", **CLONE}, "not a whole number of seconds"),
    ({"owner_lease": "9", **CLONE}, "0 (off) or 10..86400"),
    ({"owner_lease": "86401", **CLONE}, "0 (off) or 10..86400"),
    ({"owner_lease": "30"}, "applies to a clone only"),
    ({"owner_lease": "0"}, None),
    ({"drain_timeout": "ten", **CLONE, **GRACEFUL}, "not a number of seconds"),
    ({"drain_timeout": "-1", **CLONE, **GRACEFUL}, "not a number of seconds"),
    ({"drain_timeout": "1e3", **CLONE, **GRACEFUL}, "not a number of seconds"),
    ({"drain_timeout": "2.", **CLONE, **GRACEFUL}, "not a number of seconds"),
    ({"drain_timeout": "2.0001", **CLONE, **GRACEFUL}, "not a number of seconds"),
    ({"drain_timeout": "inf", **CLONE, **GRACEFUL}, "not a number of seconds"),
    ({"drain_timeout": "3600.5", **CLONE, **GRACEFUL}, "out of range 0..3600"),
    ({"drain_timeout": "10", **GRACEFUL}, "applies to a clone only"),
    ({"drain_timeout": "10", **CLONE}, "needs graceful_handover=true"),
    ({"drain_timeout": "0"}, None),
    ({"drain_timeout": "0.0", **CLONE}, None),
])
def test_invalid_values_are_refused_with_a_reason(overrides, needle):
    if needle is None:  # the default written out: accepted
        parse(**overrides)
        return
    with pytest.raises(NotConfigured) as caught:
        parse(**overrides)
    assert needle in str(caught.value)
    assert caught.value.exit_code == 6


def test_ipv6_defaults():
    p = parse(ip="2001:DB8:0:0::a:100", **CLONE)
    assert (p.vip, p.ipv6, p.cidr_netmask) == ("2001:db8::a:100", True, None)
    # 33:33 (the IPv6 multicast MAC range) and the last four bytes of the VIP.
    assert p.clustermac == "33:33:00:0a:01:00"
    assert p.hash_init == params.default_hash_init(p.packed)
    assert parse(ip="2001:db8::1", cidr_netmask="128").cidr_netmask == 128
    assert parse(ip="2001:db8::", cidr_netmask="127").vip == "2001:db8::"  # RFC 6164
    assert parse(ip="fd00::1").ipv6 and not parse().ipv6


def test_ipv6_takes_any_multicast_cluster_mac():
    # 33:33 is the default, not a requirement: a 03: MAC is not subject to MLD snooping.
    assert parse(ip="2001:db8::1", clustermac="03:c1:00:00:00:01").clustermac == \
        "03:c1:00:00:00:01"
    with pytest.raises(NotConfigured):
        parse(ip="2001:db8::1", clustermac="00:00:00:00:00:01")


@pytest.mark.parametrize("ip", ["192.0.2.10", "2001:db8::1"])
@pytest.mark.parametrize("mac", ["02:c1:c6:12:00:64", "06:00:00:00:00:01", "fe:ff:ff:ff:ff:ff"])
def test_a_locally_administered_unicast_cluster_mac_is_accepted(ip, mac):
    # Issue #16: a shared unicast MAC, which routers accept in ARP replies.
    assert parse(ip=ip, clustermac=mac.upper()).clustermac == mac


@pytest.mark.parametrize("text, mac", [
    ("03:C1:00:00:00:01", "03:c1:00:00:00:01"),
    ("01-00-5e-00-00-20", "01:00:5e:00:00:20"),
])
def test_cluster_mac_is_normalised(text, mac):
    assert parse(clustermac=text).clustermac == mac


@pytest.mark.parametrize("text, seed", [("0", 0), ("0xdeadbeef", 0xdeadbeef),
                                        ("4294967295", 4294967295)])
def test_hash_init_accepts_decimal_and_hex(text, seed):
    assert parse(hash_init=text).hash_init == seed


def test_whitespace_and_empty_values_mean_unset():
    p = parse(ip=" 192.0.2.10 ", nic="", hashmode="")
    assert (p.vip, p.nic, p.hashmode) == ("192.0.2.10", None, "sourceip-sourceport")


# The syntax checks use character sets instead of regular expressions (an
# import the monitor cannot afford); they must accept exactly what these
# patterns accept.
_REFERENCE_SYNTAX = {
    params._is_uint: r"(0|[1-9][0-9]{0,9})",
    params._is_hex: r"0[xX][0-9A-Fa-f]{1,8}",
    params.is_mac: r"[0-9A-Fa-f]{2}([:-][0-9A-Fa-f]{2}){5}",
    params.valid_nic_name: r"(?!\.\.?\Z)[A-Za-z0-9_.-]{1,15}",
}


@pytest.mark.parametrize("check", list(_REFERENCE_SYNTAX), ids=lambda f: f.__name__)
@hypothesis.settings(max_examples=500)
@hypothesis.given(data=st.data())
def test_syntax_checks_accept_what_the_reference_pattern_accepts(check, data):
    pattern = re.compile(_REFERENCE_SYNTAX[check])
    # Half the examples from the pattern itself (valid), half near-misses.
    text = data.draw(st.one_of(st.from_regex(pattern, fullmatch=True),
                               st.text(alphabet="0123456789abcdefxX:-._ ²٣\n", max_size=18)))
    assert check(text) == bool(pattern.fullmatch(text)), text


def test_drain_timeout_is_off_by_default_and_takes_decimals():
    assert parse(**CLONE).drain_timeout == 0
    assert parse(drain_timeout="10", **CLONE, **GRACEFUL).drain_timeout == 10.0
    assert parse(drain_timeout="2.5", **CLONE, **GRACEFUL).drain_timeout == 2.5
    assert parse(drain_timeout="3600", **CLONE, **GRACEFUL).drain_timeout == 3600.0


def test_drain_timeout_is_no_part_of_the_monitors_memo_key():
    # It changes what a stop does, not the rules a monitor checked.
    from clusterip.backends import memo_key

    assert memo_key(parse(**CLONE, **GRACEFUL), None) == \
        memo_key(parse(drain_timeout="10", **CLONE, **GRACEFUL), None)


def test_owner_lease_is_off_by_default_and_whole_seconds():
    assert parse(**CLONE).owner_lease == 0
    assert parse(owner_lease="45", **CLONE).owner_lease == 45


@pytest.mark.parametrize("lease, interval, timeout, too_short", [
    ("40", "10000", "20000", False),  # 2 x 10 s + 20 s
    ("39", "10000", "20000", True),
    ("30", "5000", "20000", False),
    ("30", "10000", None, True),  # the timeout defaults to 20 s
    ("10", "0", "20000", False),  # a probe: no interval to outlast
    ("0", "10000", "20000", False),  # no lease
])
def test_a_lease_must_outlast_two_monitor_intervals_and_a_timeout(lease, interval, timeout,
                                                                   too_short):
    p = parse(owner_lease=lease, **CLONE)
    env = {"OCF_RESKEY_CRM_meta_interval": interval}
    if timeout is not None:
        env["OCF_RESKEY_CRM_meta_timeout"] = timeout
    problem = params.lease_problem(p, env)
    assert (problem is not None) is too_short
    if too_short:
        assert "owner_lease=%s" % lease in problem and "at least" in problem


@pytest.mark.parametrize("value, interval", [(None, 0), ("", 0), ("0", 0), (" 10000 ", 10000),
                                             ("10000", 10000), ("-5", 0), ("abc", 0)])
def test_monitor_interval_is_zero_for_a_probe_a_call_by_hand_or_garbage(value, interval):
    # One reading for Instance.recurring() and lease_problem: a recurring
    # monitor finishes upgrades and spawns guards, a probe never.
    env = {} if value is None else {"OCF_RESKEY_CRM_meta_interval": value}
    assert params.monitor_interval(env) == interval
