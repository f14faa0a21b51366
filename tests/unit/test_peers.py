"""Mixed-backend detection: parsing what the nodes published, and the refusal."""

from clusterip import peers

QUERY = ('name="clusterip-backend-198.18.0.100" host="n0" value="nft"\n'
         'name="clusterip-backend-198.18.0.100" host="n1" value="clusterip"\n'
         'name="clusterip-backend-198.18.0.100" host="n2" value=""\n')


def test_query_output_is_parsed_per_node():
    assert peers.parse_query(QUERY) == {"n0": "nft", "n1": "clusterip", "n2": ""}


def test_only_other_nodes_with_another_backend_conflict():
    published = peers.parse_query(QUERY)
    assert peers.conflicts(published, "n0", "nft") == {"n1": "clusterip"}
    assert peers.conflicts(published, "n1", "clusterip") == {"n0": "nft"}
    assert peers.conflicts({"n0": "nft"}, "n0", "clusterip") == {}  # its own old value


def test_ipv6_attribute_name_with_colons_is_parsed():
    # Pacemaker 2.1 keeps the name verbatim (the CIB's nvpair id becomes
    # status-1-clusterip-backend-2001.db8..100); attrd_updater --query --all
    # printed this in the cluster tier, the empty value being a withdrawn one.
    assert peers.attribute("2001:db8::100") == "clusterip-backend-2001:db8::100"
    text = ('name="clusterip-backend-2001:db8::100" host="n2" value="nft"\n'
            'name="clusterip-backend-2001:db8::100" host="n0" value=""\n')
    assert peers.parse_query(text) == {"n2": "nft", "n0": ""}
