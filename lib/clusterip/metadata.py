"""The OCF meta-data document: the one place that names and documents the
parameters.  Built with lxml; valid against resource-agents' ra-api-1.dtd
(what ocf-tester checks) and its OCF 1.1 RelaxNG schema (unit tested)."""

import collections

from clusterip import __version__
from clusterip.params import BACKENDS, DEFAULT_HASHMODE, HASHMODES

Parameter = collections.namedtuple(
    "Parameter", "name shortdesc longdesc type default required unique")

PARAMETERS = (
    Parameter("ip", "IPv4 or IPv6 cluster address", """\
The IPv4 or IPv6 virtual address (VIP) that every node of the clone holds at
once. Each node accepts only the packets whose hash falls into a bucket it
owns. IPv6: a global unicast (2000::/3) or unique local (fc00::/7) address;
not link-local, multicast, loopback or IPv4-mapped. It is added with nodad
(every node holds it, so Duplicate Address Detection would fail it), and the
Neighbour Advertisements the node sends for it carry the cluster MAC.
IPv6 needs the nft backend: the clusterip backend (and auto where it picks
clusterip) refuses it with exit 6.""",
              "string", None, True, True),
    Parameter("cidr_netmask", "Netmask length", """\
Prefix length of the VIP, e.g. 24 (IPv6: 1..128, e.g. 64). Default: the prefix
of the on-link route that covers ip on the chosen interface (as IPaddr2 finds
it), else 32 (IPv6: 128).""",
              "integer", None, False, False),
    Parameter("nic", "Network interface", """\
The interface that receives the VIP's traffic. Default: the interface whose
on-link route covers ip; the start fails with a reason when there is none.""",
              "string", None, False, False),
    Parameter("clustermac", "Cluster MAC", """\
The MAC address that all nodes answer ARP (IPv6: Neighbour Solicitations)
with, so that the switch floods the VIP's frames to every node. Multicast
(odd first octet; not broadcast, not an IEEE 802.1 reserved address), or, with
backend nft, a locally administered unicast MAC (first octet 02, 06, 0a, 0e,
...) that no NIC has: routers that refuse a multicast MAC for a unicast
address (RFC 1812) accept it, and since no node ever sends from it, switches
never learn it and flood it. Default: derived from ip, the same on every
node: IPv4 03:c1 followed by the four octets of ip (multicast, locally
administered); IPv6 33:33 (the IPv6 multicast MAC range) followed by the last
four bytes of ip.
Switches with IGMP snooping must flood an IPv4 cluster MAC (avoid 01:00:5e:*);
switches with MLD snooping prune 33:33:* frames to the ports that joined the
matching group, which no node does for the cluster MAC: turn MLD snooping off
on the VIP's VLAN, let it flood unregistered multicast, add a static entry,
or give an IPv6 VIP a clustermac outside 33:33 (e.g. 03:c1:...).""",
              "string", None, False, False),
    Parameter("hashmode", "What the bucket hash covers", """\
Which packet fields choose the bucket: %s. A client's packets keep going to
one node only when every packet of a connection hashes alike: sourceip keeps
all connections of one client on one node; the port modes spread one client's
connections over the nodes.""" % " | ".join(HASHMODES),
              "string", DEFAULT_HASHMODE, False, False),
    Parameter("hash_init", "Hash seed", """\
Seed of the bucket hash, 0..4294967295 (decimal or 0x hex). Must be the same on
all nodes, which the default (derived from ip) guarantees.""",
              "integer", None, False, False),
    Parameter("backend", "Kernel mechanism", """\
%s. All nodes of a cluster must use the same backend: they hash
differently. nft uses nftables, which every supported kernel has (CLUSTERIP
was removed in Linux 6.3), so auto is nft wherever nf_tables can hold the
agent's tables; clusterip only on a kernel that has the CLUSTERIP target and
whose nf_tables cannot, and for a VIP this node serves with a CLUSTERIP rule
now (until it stops there). clusterip asks for the kernel's target on
purpose.""" % " | ".join(BACKENDS),
              "string", "auto", False, False),
    Parameter("firewall_guard", "Put the nft tables back after a firewall reload", """\
Cloned VIPs on the nft backend: the start of a node's first instance leaves a
guard process (one per VIP per node, asleep until nf_tables reports a change)
that, when a committed change deletes anything of the VIP's tables (a firewall
reload whose file begins with flush ruleset), at once runs the start of every
instance Pacemaker started on the node that misses something, under the
agent's lock: the node's buckets are served again within a fraction of a
second, before any monitor notices, and Pacemaker records no failure. At most
5 repairs a minute; it ends with the node's last instance. Off: the next
monitor notices and Pacemaker restarts the instance (the node's buckets dark
until then). No effect on plain VIPs or the clusterip backend.""",
              "boolean", "true", False, False),
    Parameter("owner_lease", "Seconds a bucket stays owned without a monitor", """\
Cloned VIPs on the nft backend: 0 (off) or 10..86400 seconds. Each bucket
this node owns then expires in the kernel after owner_lease seconds unless
the instance's monitor renews it (every monitor of a running instance does,
atomically). A node whose cluster stack died while its kernel lives, which
without fencing would answer its buckets forever beside the survivors that
took them over, stops answering them by itself owner_lease seconds after its
last monitor. An expired bucket is reported by the next monitor as missing,
and Pacemaker recovers it. It must outlast two monitor intervals plus the
monitor's timeout (the recurring monitor refuses a shorter one, exit 6).
Caveat: maintenance-mode and is-managed=false cancel the recurring monitors,
so the buckets expire and the VIP goes dark owner_lease seconds later; leave
it off where that is used. No substitute for fencing. The clusterip backend
refuses it (exit 6).""",
              "integer", "0", False, False),
    Parameter("graceful_handover", "Keep a moved bucket's TCP connections", """\
When a bucket moves while its old owner lives (a rebalance, such as buckets
moving back to a returning node), the TCP connections the old owner already
has keep going to it, while new connections of the bucket go to the new
owner. Off: a move resets that bucket's established connections, as CLUSTERIP
did. The old owner keeps serving only while it still holds the address, that
is while it owns at least one bucket of it: when a node's last instance stops
(standby, shutdown), the address goes and its connections break.
TCP only: UDP and other protocols follow the bucket at once.
When the old owner has died, its clients' established connections are not
reset but time out (the new owner drops their packets silently, so their TCP
retransmits until it gives up, ~15 minutes with Linux defaults, or until the
application's own timeout); without this option the new owner resets them at
once. nft backend only: with the clusterip backend the agent refuses it
(exit 6), as the CLUSTERIP target drops every packet of a bucket the node
does not own, established or not; use backend=nft on every node instead.""",
              "boolean", "false", False, False),
    Parameter("drain_timeout", "Seconds a node's last stop serves on (draining)", """\
Cloned VIPs with graceful_handover=true (nft backend): 0 (off) or up to 3600
seconds, decimals allowed (e.g. 2.5). The stop of a node's last instance of
the VIP (standby, shutdown, a move of its last bucket) first releases the
node's buckets, so that it accepts no new connection, keeps the address and
the packet filter, and waits until the node has no TCP connection to the
VIP left (established, or closing with data or a FIN of ours unacked) or
drain_timeout passes; then it removes everything, as without draining.
Connections still open then break. The drain never lets the stop outlast
its own timeout: it ends 5 s before it (a warning names the stop timeout
needed); so give the stop operation a timeout of at least drain_timeout + 5
s. validate-all (crm_resource --validate -r) refuses (exit 6) a drain_timeout
that does not fit within the stop timeout the CIB configures. While a
node drains, no node serves the bucket of its last instance: Pacemaker
starts it elsewhere once the stop returns, so new connections of
that bucket wait (their SYNs are retransmitted) up to drain_timeout. A crash
drains nothing (no stop runs). Refused (exit 6) without graceful_handover,
on a plain address and with the clusterip backend.""",
              "string", "0", False, False),
    Parameter("iflabel", "IPv4 address label", """\
A label for the IPv4 address, appended to the interface name and a colon as
ip addr and ifconfig show it (e.g. iflabel=1 gives eth0:1, as in IPaddr2).
Letters, digits, '_', '.' and '-'; with the interface name at most 15
characters. Default: <nic>:cip where that fits. IPv6 addresses have no
labels: refused with an IPv6 ip.""",
              "string", None, False, False),
    Parameter("broadcast", "IPv4 broadcast address", """\
The broadcast address of the IPv4 address: + (the subnet's, host bits set),
- (host bits reset) or an address, as ip addr add ... brd takes it. /31 and
/32 have none with + and -. IPv4 only.""",
              "string", "+", False, False),
    Parameter("preferred_lft", "IPv6 preferred lifetime", """\
Plain (not cloned) IPv6 address only: its preferred lifetime in seconds or
forever, as IPaddr2. 0 makes the address deprecated: it still answers, but
the node never chooses it as the source of its own connections.
A clone always adds its IPv6 address with preferred_lft 0 (any other value
is refused): replies to a connection the node itself opened from the cluster
address would be hashed into other nodes' buckets.""",
              "string", "forever", False, False),
    Parameter("noprefixroute", "Add the address without its prefix route", """\
Plain (not cloned) address only: add it with noprefixroute, so that the
kernel makes no route for its subnet (as IPaddr2). A clone chooses its
prefix route itself (refused on a clone): it never adds the kernel's
prefix route with the cluster address as the source of the node's own
connections; where no route covers the subnet on the interface, the agent
adds one whose source is the node's own address.""",
              "boolean", "false", False, False),
    Parameter("arp_count", "Announcements at start", """\
How many gratuitous ARPs (IPv4: a request and a reply each) or unsolicited
Neighbour Advertisements (IPv6) the start sends for the address, 0..100,
arp_interval apart, so that one lost frame does not leave clients on a
stale MAC (as IPaddr2). The first goes out before the start returns, the
others in the background: they do not lengthen a start or a failover.
They stop early when the address goes. 0: none.""",
              "integer", "5", False, False),
    Parameter("arp_interval", "Milliseconds between announcements", """\
The interval between two announcements of arp_count, 1..60000 ms (as
IPaddr2).""",
              "integer", "200", False, False),
)

LONGDESC = """\
clusterip makes one IPv4 or IPv6 address active-active across the nodes of a
cluster, the way the iptables CLUSTERIP target did, with automatic failover.
Every node holds the address and answers ARP (IPv6: Neighbour Solicitations)
for it with one shared multicast MAC, so the
switch delivers each packet to every node; each node accepts only the packets
whose hash falls into a bucket it owns.

Run it as a globally-unique clone: clone instance i owns bucket i+1, and the
number of buckets is clone-max. Configure
  globally-unique=true (each instance is a different bucket),
  clone-max = the number of buckets (e.g. the number of nodes, or a multiple
    of it for finer balance),
  clone-node-max = clone-max (so that one survivor can hold every bucket), and
  resource-stickiness=0 on the clone, so that buckets move back and rebalance
    when a node returns.
When a node fails, Pacemaker starts its instances, and so its buckets, on the
survivors. Moving a bucket resets that bucket's established connections,
unless graceful_handover keeps them on the old owner while it lives.

Without a clone it is a plain failover address held whole by one node, with
the interface's own MAC, like IPaddr2."""

ACTIONS = (
    ("start", {"timeout": "20s"}),
    ("stop", {"timeout": "20s"}),
    ("monitor", {"timeout": "20s", "interval": "10s", "depth": "0"}),
    ("meta-data", {"timeout": "5s"}),
    ("validate-all", {"timeout": "20s"}),
)

DOCTYPE = '<!DOCTYPE resource-agent SYSTEM "ra-api-1.dtd">'


def build():
    """The meta-data as an lxml element tree."""
    from lxml import etree

    root = etree.Element("resource-agent", name="clusterip", version=__version__)
    etree.SubElement(root, "version").text = "1.1"
    etree.SubElement(root, "longdesc", lang="en").text = LONGDESC
    etree.SubElement(root, "shortdesc", lang="en").text = \
        "Active-active load-balanced cluster IP (CLUSTERIP, nftables)"
    parameters = etree.SubElement(root, "parameters")
    for p in PARAMETERS:
        element = etree.SubElement(parameters, "parameter", name=p.name,
                                   required="1" if p.required else "0",
                                   unique="1" if p.unique else "0")
        etree.SubElement(element, "longdesc", lang="en").text = p.longdesc
        etree.SubElement(element, "shortdesc", lang="en").text = p.shortdesc
        content = etree.SubElement(element, "content", type=p.type)
        if p.default is not None:
            content.set("default", p.default)
    actions = etree.SubElement(root, "actions")
    for name, attributes in ACTIONS:
        etree.SubElement(actions, "action", name=name, **attributes)
    return etree.ElementTree(root)


def document():
    """The meta-data text, with the DOCTYPE ocf-tester expects."""
    from lxml import etree

    # No encoding in the XML declaration (as IPaddr2): crmsh parses the text
    # as a Python str with lxml, which refuses a str that declares an encoding.
    body = etree.tostring(build(), encoding="unicode", pretty_print=True)
    return '<?xml version="1.0"?>\n%s\n%s' % (DOCTYPE, body)
