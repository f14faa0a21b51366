"""Backend choice on the host kernel (6.x, no CLUSTERIP)."""

import oracle
import scenarios
from netlab import Lab


def test_backend_clusterip_on_a_kernel_without_it_is_5_naming_nft():
    with Lab(nodes=1, sources=0) as lab:
        baseline = oracle.multicast_macs(lab, "n0")
        params = scenarios.agent_params("clusterip", "sourceip")
        rc, _, err = lab.agent("n0", "start", params, scenarios.clone_meta(0), "vip:0")
        assert rc == 5, err
        assert "ocf-exit-reason:" in err and "backend=nft" in err
        assert oracle.leftovers(lab, "n0", "nft", [scenarios.VIP], baseline) == []
