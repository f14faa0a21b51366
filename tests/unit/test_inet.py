"""clusterip.inet against the standard library's ipaddress, which it replaces
on the agent's paths (the import is too slow there, not wrong)."""

import ipaddress

import hypothesis
import pytest
from hypothesis import strategies as st

from clusterip import inet

v4 = st.builds(ipaddress.IPv4Address, st.integers(0, 2**32 - 1))
# Uniform 128-bit integers almost never hit the interesting ranges: mix in
# addresses built around the prefixes inet classifies.
v6 = st.one_of(
    st.builds(ipaddress.IPv6Address, st.integers(0, 2**128 - 1)),
    st.builds(lambda top, rest: ipaddress.IPv6Address((top << 112) | rest),
              st.sampled_from([0, 1, 0x2001, 0x3fff, 0x4000, 0x64, 0xfc00, 0xfdff, 0xfe7f,
                               0xfe80, 0xfebf, 0xfec0, 0xff02]),
              st.integers(0, 2**112 - 1)),
    st.builds(lambda low: ipaddress.IPv6Address((0xffff << 32) | low), st.integers(0, 2**32 - 1)),
    st.sampled_from([ipaddress.IPv6Address("::"), ipaddress.IPv6Address("::1")]),
)
addresses = st.one_of(v4, v6)


def _ipaddress(text):
    """What ipaddress parses, without the scope ids it accepts since 3.9
    (the kernel's inet_pton, and so the agent, takes none)."""
    try:
        return ipaddress.ip_address(text) if "%" not in text else None
    except ValueError:
        return None


@hypothesis.settings(max_examples=500)
@hypothesis.given(st.one_of(
    addresses.map(str), addresses.map(lambda a: a.exploded),
    v6.map(lambda a: "::ffff:" + str(ipaddress.IPv4Address(int(a) & 0xffffffff))),
    st.text(alphabet="0123456789.x: ", max_size=17),
    st.text(alphabet="0123456789abcdefABCDEF.:%g", max_size=45)))
def test_parse_accepts_exactly_what_ipaddress_accepts(text):
    expected = _ipaddress(text)
    assert inet.parse(text) == (expected.packed if expected else None)
    if expected is not None:
        assert inet.parse(inet.text(expected.packed)) == expected.packed
        assert inet.is_ipv6(expected.packed) == (expected.version == 6)
        # glibc writes ::/96 and ::ffff:0:0/96 with a dotted tail ("::0.1.0.0"
        # for ::1:0), as iproute2 shows them; the agent refuses both ranges.
        if inet.unusable_reason(expected.packed) is None:
            assert inet.text(expected.packed) == str(expected)


@hypothesis.given(st.one_of(
    st.tuples(v4, v4, st.integers(0, 32)), st.tuples(v6, v6, st.integers(0, 128))))
def test_network_arithmetic_matches_ipaddress(case):
    address, other, prefixlen = case
    network = ipaddress.ip_network("%s/%d" % (other, prefixlen), strict=False)
    assert inet.in_network(address.packed, other.packed, prefixlen) == (address in network)
    assert inet.network_address(other.packed, prefixlen) == network.network_address.packed
    assert inet.broadcast_address(other.packed, prefixlen) == network.broadcast_address.packed


@hypothesis.given(v4, v6)
def test_families_never_match_each_other(a, b):
    assert not inet.in_network(a.packed, b.packed, 0)
    assert not inet.in_network(b.packed, a.packed, 0)


@hypothesis.settings(max_examples=500)
@hypothesis.given(addresses)
def test_unusable_addresses_are_those_ipaddress_classifies_so(address):
    expected = (address.is_unspecified or address.is_loopback or address.is_multicast
                or address.is_reserved or address == ipaddress.IPv4Address("255.255.255.255"))
    if address.version == 6:
        # Reserved covers all that is neither 2000::/3, fc00::/7 nor fe80::/9 ...;
        # link-local, the deprecated site-local and IPv4-mapped are refused too.
        expected = expected or address.is_link_local or address.is_site_local \
            or address.ipv4_mapped is not None
    assert (inet.unusable_reason(address.packed) is not None) == expected


@pytest.mark.parametrize("text, reason", [
    ("::", "unspecified"), ("::1", "loopback"), ("ff02::1", "multicast"),
    ("fe80::1", "link-local"), ("fec0::1", "site-local"), ("::ffff:192.0.2.1", "IPv4-mapped"),
    ("4000::1", "reserved"), ("64:ff9b::1", "reserved"),
    ("2001:db8::1", None), ("fd00::1", None), ("3fff:ffff::1", None)])
def test_ipv6_classes(text, reason):
    found = inet.unusable_reason(inet.parse(text))
    assert (found is None) if reason is None else found.startswith(reason)


def test_parse_refuses_null_bytes_scope_ids_and_non_strings():
    assert inet.parse("1.2.3.4\0") is None
    assert inet.parse("1.2.3.04") is None
    assert inet.parse("fe80::1%eth0") is None
    assert inet.parse("::1.2.3.04") is None
    assert inet.parse(None) is None
