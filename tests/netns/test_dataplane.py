"""Real traffic through the nft backend: three nodes share a VIP, a bucket moves.

The scenario itself lives in tests/scenarios.py, shared with the legacy tier,
which runs it against the CLUSTERIP backend inside a 6.1 kernel.
"""

import pytest

import scenarios


@pytest.mark.parametrize("hashmode", scenarios.HASHMODES)
def test_dataplane_nft(hashmode):
    report = scenarios.run_dataplane("nft", hashmode)
    print(report)
