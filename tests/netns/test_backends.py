"""Backend choice on the host kernel (6.x, no CLUSTERIP)."""

import os
import sys

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


LIB = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))),
                   "lib")
PROBE = """
import sys
from clusterip.kernel import nfnl
from clusterip.backends.nft import _PROBED_HOOKS
print(nfnl.base_chains_work(_PROBED_HOOKS), nfnl.base_chains_work(_PROBED_HOOKS, "bogus"))
"""


def test_the_probe_of_what_nf_tables_can_hold_asks_the_kernel_and_creates_nothing():
    """backend=auto's question on a kernel that also has CLUSTERIP (6.2 and
    older), asked here of the host's: the agent's base chains can be made (a
    chain type the kernel lacks cannot), and the uncommitted transaction
    leaves nothing."""
    with Lab(nodes=1, sources=0) as lab:
        before = lab.run("n0", "nft", "list", "ruleset").stdout
        answer = lab.run("n0", sys.executable, "-I", "-c",
                         "import sys; sys.path.insert(0, %r)\n%s" % (LIB, PROBE)).stdout
        assert answer.split() == ["True", "False"], answer
        assert lab.run("n0", "nft", "list", "ruleset").stdout == before == ""
