"""resource-agents' ocf-tester on the agent, in a fresh namespace.

ocf-tester checks meta-data against ra-api-1.dtd, permissions, and the
start/stop/monitor/probe life cycle including idempotence.  It is run twice:
as a plain (non-cloned) resource and as instance 0 of a two-instance unique
clone.  Afterwards nothing of the VIP may remain.
"""

import pytest

import scenarios
from netlab import Lab

OPTIONS = ["ip=%s" % scenarios.VIP, "cidr_netmask=%d" % scenarios.PREFIXLEN, "nic=eth0",
           "backend=%s" % scenarios.BACKEND_UNDER_TEST]
VARIANTS = {
    "plain": ("vip", []),
    "cloned": ("vip:0", ["CRM_meta_clone=0", "CRM_meta_clone_max=2",
                         "CRM_meta_globally_unique=true"]),
}


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_ocf_tester(variant):
    name, extra = VARIANTS[variant]
    # One node is enough; no client sources needed.
    with Lab(nodes=1, sources=0, timeout_scale=scenarios.TIMEOUT_SCALE) as lab:
        baseline = lab.multicast_macs("n0")
        # The environment Pacemaker gives agents; ocf-tester adds the OCF_RESKEY_*.
        env = lab.agent_env("n0", name, {})
        argv = ["env", "-i", *("%s=%s" % item for item in env.items()), "ocf-tester", "-n", name]
        for option in OPTIONS + extra:
            argv += ["-o", option]
        result = lab.run("n0", *argv, lab.agent_executable(), check=False, timeout=180)
        output = result.stdout + result.stderr
        print(output)
        assert result.returncode == 0, "ocf-tester failed (rc=%d):\n%s" % (
            result.returncode, output)
        scenarios.assert_clean(lab, "n0", scenarios.BACKEND_UNDER_TEST, baseline)
