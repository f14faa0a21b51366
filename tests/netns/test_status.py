"""``clusterip status`` on a node, checked against nft's own JSON listing."""

import json
import os

import oracle
import scenarios
from netlab import Lab

STATUS = os.environ.get("VENV", "/opt/clusterip") + "/bin/clusterip"


def test_status_reports_what_the_kernel_holds():
    with Lab(nodes=1, sources=0) as lab:
        params = scenarios.agent_params("nft", "sourceip")
        for instance in (0, 2):
            rc, _, err = lab.agent("n0", "start", params, scenarios.clone_meta(instance),
                                   "vip:%d" % instance)
            assert rc == 0, err
        report = json.loads(lab.run("n0", STATUS, "status", "--json").stdout)["node"]
        assert [(v["vip"], v["backend"], v["nic"], v["hashmode"], v["buckets"], v["owned"])
                for v in report] == [(scenarios.VIP, "nft", "eth0", "sourceip", 3,
                                      sorted(oracle.owned(lab, "n0", scenarios.VIP, "nft")))]
        assert report[0]["clustermac"] in oracle.multicast_macs(lab, "n0")
        text = lab.run("n0", STATUS, "status").stdout
        assert text.startswith(scenarios.VIP + "  backend nft  nic eth0")
        for instance in (0, 2):
            lab.agent("n0", "stop", params, scenarios.clone_meta(instance), "vip:%d" % instance)
        assert "no cluster IP" in lab.run("n0", STATUS, "status").stdout


def test_status_reports_an_ipv6_vip():
    with Lab(nodes=1, sources=0, ipv6=True) as lab:
        params = scenarios.agent_params("nft", "sourceip-sourceport", scenarios.VIP6)
        rc, _, err = lab.agent("n0", "start", params, scenarios.clone_meta(1), "vip:1")
        assert rc == 0, err
        (vip,) = json.loads(lab.run("n0", STATUS, "status", "--json").stdout)["node"]
        assert (vip["vip"], vip["nic"], vip["hashmode"], vip["buckets"], vip["owned"]) == (
            scenarios.VIP6, "eth0", "sourceip-sourceport", 3,
            sorted(oracle.owned(lab, "n0", scenarios.VIP6, "nft")))
        assert vip["clustermac"] == oracle.default_cluster_mac(scenarios.VIP6) \
            in oracle.multicast_macs(lab, "n0")
        lab.agent("n0", "stop", params, scenarios.clone_meta(1), "vip:1")
        assert "no cluster IP" in lab.run("n0", STATUS, "status").stdout
