"""resource-agents' ocf-tester on the agent, in a fresh namespace.

ocf-tester checks meta-data against ra-api-1.dtd, permissions, and the
start/stop/monitor/probe life cycle including idempotence.  It is run twice:
as a plain (non-cloned) resource and as instance 0 of a two-instance unique
clone.  Afterwards nothing of the VIP may remain.  Then the same over IPv6
(nft only: CLUSTERIP is an IPv4 target).
"""

import pytest

import oracle
import scenarios
from netlab import Lab

VARIANTS = {
    "plain": ("vip", []),
    "cloned": ("vip:0", ["CRM_meta_clone=0", "CRM_meta_clone_max=2",
                         "CRM_meta_globally_unique=true"]),
}


def run_ocf_tester(variant, backend=scenarios.BACKEND_UNDER_TEST, family=scenarios.IPV4):
    name, extra = VARIANTS[variant]
    options = ["ip=%s" % family.vip, "cidr_netmask=%d" % family.prefixlen, "nic=eth0",
               "backend=%s" % backend]
    # One node is enough; no client sources needed.
    with Lab(nodes=1, sources=0, timeout_scale=scenarios.TIMEOUT_SCALE,
             ipv6=family.ipv6) as lab:
        baseline = oracle.multicast_macs(lab, "n0")
        # The environment Pacemaker gives agents; ocf-tester adds the OCF_RESKEY_*.
        env = lab.agent_env("n0", name, {})
        argv = ["env", "-i", *("%s=%s" % item for item in env.items()), "ocf-tester", "-n", name]
        for option in options + extra:
            argv += ["-o", option]
        result = lab.run("n0", *argv, lab.agent_executable(), check=False, timeout=180)
        output = result.stdout + result.stderr
        print(output)
        assert result.returncode == 0, "ocf-tester failed (rc=%d):\n%s" % (
            result.returncode, output)
        scenarios.assert_clean(lab, "n0", backend, baseline, family)


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_ocf_tester(variant):
    run_ocf_tester(variant)


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_ocf_tester_ipv6(variant):
    run_ocf_tester(variant, "nft", scenarios.IPV6)
