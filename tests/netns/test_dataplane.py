"""Real traffic: three nodes share a VIP, a bucket moves.

The scenario itself lives in tests/scenarios.py.  This tier runs it with the
nft backend on the host kernel; the legacy tier runs this same file inside a
Linux 6.1 kernel with CLUSTERIP_TEST_BACKEND=clusterip.  The IPv6 variant
runs with the nft backend only: CLUSTERIP is an IPv4 target.
"""

import pytest

import scenarios


@pytest.mark.parametrize("hashmode", scenarios.HASHMODES)
def test_dataplane(hashmode):
    report = scenarios.run_dataplane(scenarios.BACKEND_UNDER_TEST, hashmode,
                                     timeout_scale=scenarios.TIMEOUT_SCALE)
    print(report)


@pytest.mark.parametrize("hashmode", scenarios.HASHMODES)
def test_dataplane_ipv6(hashmode):
    report = scenarios.run_dataplane("nft", hashmode, family=scenarios.IPV6,
                                     timeout_scale=scenarios.TIMEOUT_SCALE)
    print(report)
