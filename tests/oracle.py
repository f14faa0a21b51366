"""What a node's kernel holds, read only with the administrator's own tools.

The independent side of every tier that runs the agent (netns, cluster,
legacy, the demo): nothing is read through the project's code (of the
project, only netlab's provider name is imported).  Each reading is one
command an administrator would type, run in the node's network namespace
through ``lab.run`` (``ip netns exec``, see :class:`netlab.Lab`): ``ip -j
addr``, ``ip -j neigh``, ``nft -j list ...``, ``iptables-legacy -S``,
``/proc/net/ipt_CLUSTERIP/<vip>``, ``/proc/net/dev_mcast``.  So a bug in the
agent's own readers cannot hide a bug in its writers.

Two levels:

* readers of one piece each (:func:`addresses`, :func:`nft_tables`,
  :func:`nft_set_elements`, :func:`clusterip_proc`, ...);
* per VIP, for a backend ("nft" or "clusterip"): :func:`vip_states` reads
  what the node holds of each VIP (a :class:`VipState`), :func:`problems`
  says why that is not exactly the given buckets started (or, for none,
  nothing left), :func:`leftovers` lists anything of the agent on a node that
  should be clean, :func:`snapshot` is everything an action could change.

The names follow the README: the nft tables ``clusterip_<VIP>`` (an ``ip``
table with the set ``owned`` and an ``arp`` table; one ``ip6`` table for an
IPv6 VIP), the CLUSTERIP rule ``-d VIP/32 ... -j CLUSTERIP`` with its bucket
file, and the default cluster MAC.
"""

import collections
import ipaddress
import json

import netlab

TABLE_PREFIX = "clusterip"
CLUSTERIP_PROC = "/proc/net/ipt_CLUSTERIP"
UNUSABLE = {"tentative", "dadfailed"}  # IPv6 address flags: held, but not usable


def is_ipv6(vip):
    return ":" in vip


def prefixlen(vip):
    """The VIP's prefix length: the lab's subnet of its family, which the tests
    configure as ``cidr_netmask``."""
    return netlab.SUBNET6_PREFIXLEN if is_ipv6(vip) else netlab.SUBNET_PREFIXLEN


def table_name(vip):
    """The nft backend's tables for ``vip``: clusterip_ + the VIP with "_" for "." and ":"."""
    return TABLE_PREFIX + "_" + vip.replace(".", "_").replace(":", "_")


def filter_family(vip):
    """The nft family of the VIP's filter table (the one with the set "owned")."""
    return "ip6" if is_ipv6(vip) else "ip"


def nft_families(vip, unicast=False):
    """The families of the VIP's nft tables: IPv6 keeps its rewrite in the ip6
    table; a shared unicast cluster MAC adds a netdev table (its ingress chain)."""
    return sorted((["ip6"] if is_ipv6(vip) else ["arp", "ip"]) + (["netdev"] if unicast else []))


def is_unicast_mac(mac):
    """A unicast MAC (group bit clear), such as a shared unicast cluster MAC."""
    return mac is not None and int(mac.split(":")[0], 16) & 1 == 0


def default_cluster_mac(vip):
    """The default cluster MAC as the meta-data documents it: 03:c1 + the IPv4 VIP's
    octets, 33:33 + the last four bytes of an IPv6 VIP."""
    if is_ipv6(vip):
        return "33:33:" + ":".join("%02x" % b for b in ipaddress.IPv6Address(vip).packed[-4:])
    return "03:c1:" + ":".join("%02x" % int(octet) for octet in vip.split("."))


# -- readers of one piece each ------------------------------------------------------


def addresses(lab, ns, dev="eth0", ipv6=False, flags=False):
    """IPv4 (or IPv6) addresses on ``dev`` as "address/len", from ``ip -j addr show``;
    with ``flags`` a dict {"address/len": [flags such as "tentative", "dadfailed"]}."""
    out = lab.run(ns, "ip", "-j", "-6" if ipv6 else "-4", "addr", "show", "dev", dev).stdout
    found = {"%s/%d" % (info["local"], info["prefixlen"]):
             sorted(k for k, v in info.items() if v is True)
             for link in json.loads(out or "[]") for info in link.get("addr_info", [])
             if info.get("family") == ("inet6" if ipv6 else "inet")}
    return found if flags else sorted(found)


def source_address(lab, ns, destination):
    """The source the node's kernel gives its own connection to ``destination``
    (``ip -j route get``: "prefsrc")."""
    out = lab.run(ns, "ip", "-j", "route", "get", destination).stdout
    return json.loads(out)[0].get("prefsrc")


AGENT_ROUTE_PROTOCOL = "193"  # the agent's own subnet routes (README, "Source addresses")


def agent_routes(lab, ns):
    """The routes the agent added ("proto 193"), as "destination dev src"."""
    out = lab.run(ns, "ip", "-j", "-4", "route", "show", "proto",
                  AGENT_ROUTE_PROTOCOL).stdout
    return sorted("%s dev %s src %s" % (r["dst"], r.get("dev"), r.get("prefsrc"))
                  for r in json.loads(out or "[]"))


def nft_ruleset(lab, ns):
    """The whole ruleset as the list under "nftables" of ``nft -j list ruleset``."""
    out = lab.run(ns, "nft", "-j", "list", "ruleset").stdout
    return json.loads(out or '{"nftables": []}')["nftables"]


def nft_tables(lab, ns, ruleset=None):
    """[(family, name)] of every nft table in ``ns`` (of ``ruleset`` if given)."""
    return sorted((item["table"]["family"], item["table"]["name"])
                  for item in (nft_ruleset(lab, ns) if ruleset is None else ruleset)
                  if "table" in item)


def _elements(nft_set):
    """The elements of a set as nft -j lists it (ints/strings), sorted."""
    # An element with attributes (timeout, counter) is {"elem": {"val": x, ...}}.
    return sorted((e["elem"]["val"] if isinstance(e, dict) and "elem" in e else e)
                  for e in nft_set.get("elem", []))


def nft_set_elements(lab, ns, family, table, set_name):
    """The elements of an nft set (ints/strings), or None if the set does not exist."""
    result = lab.run(ns, "nft", "-j", "list", "set", family, table, set_name, check=False)
    if result.returncode != 0:
        return None
    for item in json.loads(result.stdout)["nftables"]:
        if "set" in item:
            return _elements(item["set"])
    return None


def nft_counters(lab, ns, family, table):
    """{name: packets} of the table's named counters (``nft -j list counters``)."""
    out = lab.run(ns, "nft", "-j", "list", "counters", "table", family, table).stdout
    return {item["counter"]["name"]: item["counter"]["packets"]
            for item in json.loads(out)["nftables"] if "counter" in item}


def nft_listing_failures(lab, ns):
    """The nft listings an administrator runs that fail in ``ns``: [(command, exit)].

    By exit status, not output: nft has crashed (SIGSEGV, exit -11 here)
    printing sets it could load (a ``typeof jhash`` set, on every version).
    Each clusterip table is also listed alone, its set ``owned`` and each
    of its elements.
    """
    commands = [[*flags, "list", what] for flags in ([], ["-j"], ["-a"], ["-s"], ["-j", "-a"])
                for what in ("ruleset", "tables", "sets", "counters")]
    for family, table in nft_tables(lab, ns):
        if table.startswith(TABLE_PREFIX):
            commands += [[*flags, "list", "table", family, table] for flags in ([], ["-j"])]
            elements = nft_set_elements(lab, ns, family, table, "owned") or []
            if family in ("ip", "ip6"):  # the tables with the set "owned"
                commands += [[*flags, "list", "set", family, table, "owned"]
                             for flags in ([], ["-j"])]
            commands += [["get", "element", family, table, "owned", "{ %d }" % element]
                         for element in elements]
    failed = []
    for command in commands:
        result = lab.run(ns, "nft", *command, check=False)
        if result.returncode != 0:
            failed.append((" ".join(["nft", *command]), result.returncode))
    return failed


def multicast_macs(lab, ns, dev="eth0"):
    """Link-layer multicast addresses ``dev`` has joined, from /proc/net/dev_mcast.

    Lines are "ifindex name refcount global_use hwaddr" with the address as
    12 hex digits; returned as "aa:bb:cc:dd:ee:ff".
    """
    out = lab.run(ns, "cat", "/proc/net/dev_mcast").stdout
    macs = set()
    for line in out.splitlines():
        fields = line.split()
        if len(fields) == 5 and fields[1] == dev:
            macs.add(":".join(fields[4][i:i + 2] for i in range(0, 12, 2)).lower())
    return macs


def fdb_self_macs(lab, ns, dev="eth0"):
    """The addresses in ``dev``'s own filter (``bridge -j fdb show dev DEV``,
    the entries flagged "self"): its extra unicast MACs (where a shared
    unicast cluster MAC goes, as ``bridge fdb add MAC dev DEV self`` puts it)
    and its multicast ones; lower case."""
    out = lab.run(ns, "bridge", "-j", "fdb", "show", "dev", dev).stdout
    return {entry["mac"].lower() for entry in json.loads(out or "[]")
            if "self" in entry.get("flags", [])}


def unicast_filter_macs(lab, ns, dev="eth0"):
    """The unicast MACs among :func:`fdb_self_macs`."""
    return {mac for mac in fdb_self_macs(lab, ns, dev) if is_unicast_mac(mac)}


def promiscuity(lab, ns, dev="eth0"):
    """``dev``'s promiscuity count (``ip -d -j link show``): the kernel raises it
    for a unicast filter entry where the driver has no filter of its own."""
    return json.loads(lab.run(ns, "ip", "-d", "-j", "link", "show", "dev", dev).stdout)[0] \
        .get("promiscuity", 0)


def bridge_learned_macs(lab, ns="switch", bridge="br0"):
    """The MACs the bridge (the switch) has learnt on its ports: its fdb
    without the permanent entries of its own ports."""
    out = lab.run(ns, "bridge", "-j", "fdb", "show", "br", bridge).stdout
    return {entry["mac"].lower() for entry in json.loads(out or "[]")
            if entry.get("state") != "permanent" and "self" not in entry.get("flags", [])}


def neighbour_mac(lab, ns, address, dev="eth0"):
    """The link-layer address ``ns`` resolved for ``address`` (None if unresolved)."""
    out = lab.run(ns, "ip", "-j", "neigh", "show", address, "dev", dev).stdout
    for entry in json.loads(out or "[]"):
        if entry.get("lladdr"):
            return entry["lladdr"].lower()
    return None


def iptables_legacy_rules(lab, ns, table="filter"):
    """``iptables-legacy -S`` lines of ``table`` (the CLUSTERIP backend's rules)."""
    return lab.run(ns, "iptables-legacy", "-w", "-t", table, "-S").stdout.splitlines()


def clusterip_rules(lab, ns):
    """The CLUSTERIP rules among ``iptables-legacy -S``'s lines."""
    return [rule for rule in iptables_legacy_rules(lab, ns) if "CLUSTERIP" in rule]


def clusterip_proc(lab, ns, vip):
    """Content of /proc/net/ipt_CLUSTERIP/<vip> (e.g. "1,3"), or None if absent."""
    result = lab.run(ns, "cat", "%s/%s" % (CLUSTERIP_PROC, vip), check=False)
    return result.stdout.strip() if result.returncode == 0 else None


def clusterip_proc_files(lab, ns):
    """The files in /proc/net/ipt_CLUSTERIP (one per VIP; none without the module)."""
    return sorted(lab.run(ns, "ls", CLUSTERIP_PROC, check=False).stdout.split())


def _buckets(proc_text):
    return None if proc_text is None else {int(b) for b in proc_text.split(",") if b.strip()}


# -- per VIP ---------------------------------------------------------------------------

VipState = collections.namedtuple("VipState", "vip filters owned address joined unicast")
VipState.__doc__ = """What a node holds of one VIP.

filters: the families of the VIP's nft tables (e.g. ["arp", "ip"]), or the
CLUSTERIP rules for it; owned: the buckets in the set "owned" / the bucket
file (None: no set, no file); address: the flags of the VIP on eth0 (None:
absent); joined: eth0 accepts the cluster MAC (its multicast group, or for
a shared unicast MAC its unicast filter entry); unicast: the cluster MAC is
a unicast one."""


def owned(lab, ns, vip, backend):
    """The buckets ``ns`` owns for ``vip`` (one read: the set, or the bucket file);
    None when there is no set or file."""
    if backend == "nft":
        elements = nft_set_elements(lab, ns, filter_family(vip), table_name(vip), "owned")
        return None if elements is None else set(elements)
    return _buckets(clusterip_proc(lab, ns, vip))


def backend_state(lab, ns, vips, backend):
    """{vip: (filters, owned)}: the backend's own kernel state of each VIP (see
    :class:`VipState`), from one ``nft -j list ruleset`` / ``iptables-legacy -S``."""
    found = {}
    if backend == "nft":
        ruleset = nft_ruleset(lab, ns)
        for vip in vips:
            name = table_name(vip)
            filters = sorted(family for family, table in nft_tables(lab, ns, ruleset)
                             if table == name)
            sets = [item["set"] for item in ruleset if "set" in item
                    and item["set"]["table"] == name and item["set"]["name"] == "owned"
                    and item["set"]["family"] == filter_family(vip)]
            found[vip] = (filters, set(_elements(sets[0])) if sets else None)
    else:
        rules = clusterip_rules(lab, ns)
        for vip in vips:
            found[vip] = ([rule for rule in rules if "-d %s/32 " % vip in rule],
                          _buckets(clusterip_proc(lab, ns, vip)))
    return found


def vip_states(lab, ns, vips, backend, clustermac=None):
    """{vip: VipState} of each of ``vips`` on ``ns``; ``clustermac``: the one
    configured (default: each VIP's :func:`default_cluster_mac`)."""
    flags = {}
    for ipv6 in {is_ipv6(vip) for vip in vips}:
        flags.update(addresses(lab, ns, ipv6=ipv6, flags=True))
    # The MACs eth0 accepts besides its own, of the cluster MAC's kind.
    macs = unicast_filter_macs(lab, ns) if is_unicast_mac(clustermac) else multicast_macs(lab, ns)
    return {vip: VipState(vip, filters, buckets,
                          flags.get("%s/%d" % (vip, prefixlen(vip))),
                          (clustermac or default_cluster_mac(vip)) in macs,
                          is_unicast_mac(clustermac))
            for vip, (filters, buckets) in backend_state(lab, ns, vips, backend).items()}


def problems(state, buckets, backend):
    """Why ``state`` (a VipState) is not exactly ``buckets`` started: [sentences].

    With buckets: the VIP's filter exactly once (nft: its tables, no more, no
    fewer; clusterip: one rule), owned == buckets, the address held and
    usable, the multicast group joined.  Without: nothing of the VIP left.
    """
    found = []
    if buckets:
        wanted = nft_families(state.vip, state.unicast) if backend == "nft" else 1
        got = state.filters if backend == "nft" else len(state.filters)
        if got != wanted:
            found.append("filter %s, expected exactly %s" % (state.filters, wanted))
        if state.owned != set(buckets):
            found.append("owned buckets %s, expected %s" % (
                None if state.owned is None else sorted(state.owned), sorted(buckets)))
        if state.address is None:
            found.append("address missing")
        elif UNUSABLE & set(state.address):
            found.append("address unusable: %s" % state.address)
        if not state.joined:
            found.append("unicast filter entry missing" if state.unicast
                         else "multicast group not joined")
    else:
        if state.filters:
            found.append("filter left behind: %s" % state.filters)
        if state.owned is not None:
            found.append("bucket state left behind: %s" % sorted(state.owned))
        if state.address is not None:
            found.append("address left behind")
        if state.joined:
            found.append("unicast filter entry left behind" if state.unicast
                         else "multicast group left joined")
    return found


def leftovers(lab, ns, backend, vips=(), baseline_macs=None, clustermac=None,
              baseline_promiscuity=None):
    """Anything of the agent on ``ns``, which should hold nothing of it: [sentences].

    Each of ``vips``: what :func:`problems` finds with no bucket; any VIP's:
    nft tables clusterip* (nft) or CLUSTERIP rules (clusterip), bucket files
    (both), unicast filter entries of eth0; with ``baseline_macs`` (eth0's
    multicast MACs before the agent ran): every MAC joined since, and every
    one left since; with ``baseline_promiscuity``: eth0's promiscuity if it
    differs.
    """
    found = ["%s: %s" % (vip, problem)
             for vip, state in vip_states(lab, ns, vips, backend, clustermac).items()
             for problem in problems(state, (), backend)]
    if backend == "nft":
        found += ["nft table %s %s" % table for table in nft_tables(lab, ns)
                  if table[1].startswith(TABLE_PREFIX)]
    else:
        found += clusterip_rules(lab, ns)
    found += ["%s/%s" % (CLUSTERIP_PROC, name) for name in clusterip_proc_files(lab, ns)]
    found += ["route %s" % route for route in agent_routes(lab, ns)]
    found += ["unicast filter entry %s" % mac for mac in sorted(unicast_filter_macs(lab, ns))]
    if baseline_promiscuity is not None:
        now = promiscuity(lab, ns)
        if now != baseline_promiscuity:
            found.append("promiscuity %d, %d before" % (now, baseline_promiscuity))
    if baseline_macs is not None:
        macs = multicast_macs(lab, ns)
        found += ["multicast MAC %s joined" % mac for mac in sorted(macs - baseline_macs)]
        found += ["multicast MAC %s left" % mac for mac in sorted(baseline_macs - macs)]
    return found


def snapshot(lab, ns, backend):
    """Everything an agent action could change on the node, normalised: the nft
    ruleset without packet/byte counts (and the CLUSTERIP backend's legacy
    filter table), bucket files, every address of every link, every
    multicast membership."""
    filters = [item for item in nft_ruleset(lab, ns) if "metainfo" not in item]
    for item in filters:  # counters move with stray packets; structure must not
        for value in item.values():
            if isinstance(value, dict):
                value.pop("packets", None)
                value.pop("bytes", None)
    if backend != "nft":
        filters += iptables_legacy_rules(lab, ns)
    links = json.loads(lab.run(ns, "ip", "-j", "addr", "show").stdout)
    return {"filters": filters, "proc": clusterip_proc_files(lab, ns),
            "addresses": sorted((link["ifname"], "%s/%d" % (info["local"], info["prefixlen"]),
                                 info.get("label"))
                                for link in links for info in link.get("addr_info", [])
                                if info.get("family") in ("inet", "inet6")),
            "multicast": sorted(lab.run(ns, "cat", "/proc/net/dev_mcast").stdout.splitlines())}
