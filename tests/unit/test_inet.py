"""clusterip.inet against the standard library's ipaddress, which it replaces
on the agent's paths (the import is too slow there, not wrong)."""

import ipaddress

import hypothesis
from hypothesis import strategies as st

from clusterip import inet

addresses = st.builds(ipaddress.IPv4Address, st.integers(0, 2**32 - 1))


@hypothesis.given(st.one_of(addresses.map(str), st.text(alphabet="0123456789.x: ", max_size=17)))
def test_parse_accepts_exactly_what_ipaddress_accepts(text):
    try:
        expected = ipaddress.IPv4Address(text).packed
    except ValueError:
        expected = None
    assert inet.parse(text) == expected
    if expected is not None:
        assert inet.text(expected) == str(ipaddress.IPv4Address(text))


@hypothesis.given(addresses, addresses, st.integers(0, 32))
def test_network_arithmetic_matches_ipaddress(address, other, prefixlen):
    network = ipaddress.IPv4Network("%s/%d" % (other, prefixlen), strict=False)
    assert inet.in_network(address.packed, other.packed, prefixlen) == (address in network)
    assert inet.network_address(other.packed, prefixlen) == network.network_address.packed
    assert inet.broadcast_address(other.packed, prefixlen) == network.broadcast_address.packed


@hypothesis.given(addresses)
def test_unusable_addresses_are_those_ipaddress_classifies_so(address):
    expected = (address.is_unspecified or address.is_loopback or address.is_multicast
                or address.is_reserved or address == ipaddress.IPv4Address("255.255.255.255"))
    assert (inet.unusable_reason(address.packed) is not None) == expected


def test_parse_refuses_null_bytes_and_non_strings():
    assert inet.parse("1.2.3.4\0") is None
    assert inet.parse("1.2.3.04") is None
