"""clusterip status: the cluster map from Pacemaker's XML, and the text layout."""

import xml.etree.ElementTree as ElementTree

from clusterip import cli

CIB = """<resources>
  <clone id="web-ip-clone">
    <primitive id="web-ip" class="ocf" provider="custom" type="clusterip">
      <instance_attributes id="web-ip-ia">
        <nvpair id="web-ip-ip" name="ip" value="198.18.0.100"/>
      </instance_attributes>
    </primitive>
  </clone>
  <clone id="dummy-clone"><primitive id="dummy" class="ocf" provider="pacemaker" type="Dummy"/></clone>
</resources>"""

MON = """<pacemaker-result><resources>
  <clone id="web-ip-clone" multi_state="false" unique="true">
    <resource id="web-ip:0" resource_agent="ocf:custom:clusterip" role="Started"><node name="n0" id="1"/></resource>
    <resource id="web-ip:1" resource_agent="ocf:custom:clusterip" role="Started"><node name="n1" id="2"/></resource>
    <resource id="web-ip:2" resource_agent="ocf:custom:clusterip" role="Stopped"/>
  </clone>
  <clone id="dummy-clone"><resource id="dummy:0" role="Started"><node name="n2"/></resource></clone>
</resources></pacemaker-result>"""


def test_instance_i_is_bucket_i_plus_1_and_stopped_instances_are_absent():
    mapping = cli.cluster_map(ElementTree.fromstring(CIB), ElementTree.fromstring(MON))
    assert mapping == {"198.18.0.100": {1: ["n0"], 2: ["n1"]}}


def test_text_layout_marks_owned_buckets_and_owners():
    vip = {"vip": "198.18.0.100", "backend": "nft", "nic": "eth0",
           "clustermac": "03:c1:c6:12:00:64", "hashmode": "sourceip", "hash_init": 1,
           "buckets": 3, "owned": [1], "counters": {1: {"packets": 5, "bytes": 300}}}
    text = cli.render([vip], {"198.18.0.100": {1: ["n0"], 2: ["n1"]}})
    lines = text.splitlines()
    assert lines[0].startswith("198.18.0.100  backend nft  nic eth0")
    assert lines[2].split() == ["1", "yes", "5", "300", "n0"]
    assert lines[3].split() == ["2", "-", "-", "-", "n1"]
    assert lines[4].split() == ["3", "-", "-", "-", "(stopped)"]


def test_an_owner_lease_and_the_time_left_of_each_bucket_are_shown():
    vip = {"vip": "198.18.0.100", "backend": "nft", "nic": "eth0",
           "clustermac": "03:c1:c6:12:00:64", "hashmode": "sourceip", "hash_init": 1,
           "buckets": 3, "owned": [1, 3], "counters": {}, "owner_lease": 30,
           "expires": {3: 12, 1: 29}}
    assert cli.render([vip], None).splitlines()[1] == \
        "  owner lease: 30 s; left: bucket 1 29 s, bucket 3 12 s"


def test_a_unicast_cluster_mac_shows_its_ingress_chain_and_filter_entry():
    vip = {"vip": "198.18.0.100", "backend": "nft", "nic": "eth0",
           "clustermac": "02:c1:c6:12:00:64", "hashmode": "sourceip", "hash_init": 1,
           "buckets": 3, "owned": [1], "counters": {},
           "unicast": {"ingress chain": True, "NIC filter entry": False}}
    assert cli.render([vip], None).splitlines()[1] == \
        "  unicast MAC: NIC filter entry MISSING, ingress chain yes"
