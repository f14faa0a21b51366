"""The nftables backend: CLUSTERIP's semantics on every kernel with nf_tables.

Per VIP, tables named ``clusterip_<a_b_c_d>`` (IPv6: the address with ``_``
for ``:``):

* ``ip`` (IPv6: ``ip6``): a prerouting chain at priority -150 (after
  conntrack, before the routing decision) sends packets for the VIP on the
  NIC to chain ``vip``, which counts them per bucket (a ``vmap`` jump to chain
  ``bucket<k>`` holding the named counter ``bucket<k>``), lets ICMP errors
  for this node's own connections through (IPv6: and Neighbour Discovery for
  the VIP, which every node answers, as every node answers ARP), drops every
  packet whose ``jhash`` bucket is not in the set ``owned``, and marks the
  rest as addressed to this host (they arrived with a multicast destination
  MAC, which TCP would discard).  With ``graceful_handover`` it first lets
  through the TCP connections this node already tracks and drops mid-stream
  TCP packets it tracks nothing for (see :func:`vip_chain_rules`).
* the rewrite that makes neighbours send the VIP's traffic to the cluster
  MAC: for IPv4 an ``arp`` table that sets the sender MAC of every ARP
  request and reply for the VIP; for IPv6 an output chain in the ``ip6``
  table that rewrites the link-layer address option of the Neighbour
  Advertisements and Solicitations the node sends from the VIP (see
  :func:`rewrite_writes` for how their checksum stays valid).
* with a shared unicast cluster MAC (issue #16): a ``netdev`` table whose
  ingress chain on the NIC marks the frames to that MAC for the VIP as
  addressed to this host (see :func:`ingress_rules`).

Why this shape (see :func:`build_create_script`): every nft that admins run
(1.0.6 in Debian 12, 1.1.3 in Debian 13, 1.1.7) must list these tables
without crashing, as text and as JSON, and load its own text listing back.
A set declared ``typeof jhash ...`` (the layout before) crashes them all:
nft keeps only the hash's parameters in the set's user data, not the hashed
expression, and printing the set dereferences the missing expression.  Such
tables, left by an older clusterip, are recognised over nfnetlink before
anything lists them (:func:`lists_safely`), and the next recurring monitor
of an instance started here (or a start) rebuilds them, buckets kept.

Moving a bucket is one element added to or deleted from ``owned``: atomic,
no rule reload.  The module splits into pure builders (text and JSON, unit
tested) and the one class that talks to libnftables, in-process.  The
monitor's common case, nothing changed since the last full check, reads the
kernel over nfnetlink instead (:mod:`clusterip.kernel.nfnl`, see NftBackend.state).
"""

import sys

from clusterip import address, inet, kernel
from clusterip.backends import Backend, VipState, mac_filter_missing, memo_key
from clusterip.errors import GenericError, NotInstalled
from clusterip.kernel import nfnl
from clusterip.params import is_mac
from clusterip.testhooks import step

# (protocol, field) as nft's JSON listing spells them; "ip" stands for the
# VIP's family ("ip6" for IPv6).  The text form joins them with " . ".
_HASH_FIELDS = {
    "sourceip": [("ip", "saddr")],
    "sourceip-sourceport": [("ip", "saddr"), ("th", "sport")],
    "sourceip-sourceport-destport": [("ip", "saddr"), ("th", "sport"), ("th", "dport")],
}
# graceful_handover, TCP only.  The old owner keeps accepting the connections
# conntrack already knows here, whatever their bucket now (a foreign bucket's
# packets are dropped below before conntrack confirms them, so "established"
# means "this node answered it").  Every node drops a mid-stream packet of a
# connection it does not know instead of letting its TCP answer with a reset:
# it belongs to a connection the old owner still serves.  Not for UDP: the old
# owner ("established") and the new one (a fresh flow) would both answer.
_GRACEFUL_HANDOVER_RULES = (
    "meta l4proto tcp ct state established,related meta pkttype set host accept",
    "meta l4proto tcp ct state new tcp flags & (syn | ack) != syn drop",
)
_ND_TYPES = "icmpv6 type { nd-neighbor-solicit, nd-neighbor-advert }"
# Neighbour Solicitations and Advertisements share a layout: ICMPv6 type,
# code, checksum, 32 bits of flags and reserved bits, the target address,
# then (as Linux builds them) the sender's link-layer address option first:
# type, length 1 (8 bytes), the MAC.  Offsets in bits from the ICMPv6 header.
_ND_RESERVED = "@th,48,16"  # the low 16 reserved bits (NA and NS alike)
_ND_OPTION = "@th,200,56"  # option length and MAC
_ND_MAC = "@th,208,48"


# The tables' layout, part of the monitor's memo key: a verdict remembered for
# the tables of an older layout must not vouch for them after an upgrade.
LAYOUT = 2
# nft's user data of a set (libnftnl "udata": type byte, length byte, value):
# the typeof declaration is a nested expression whose kind and parameters are
# u32 in host order.  A hash expression of type jhash there is what nft
# cannot print (see lists_safely).
_UDATA_SET_KEY_TYPEOF = 3
_UDATA_TYPEOF_EXPR, _UDATA_TYPEOF_DATA = 0, 1
_EXPR_HASH = 24  # nft's expr_types: stored in user data, so stable across versions
_UDATA_HASH_TYPE = 0
_NFT_HASH_JENKINS = 0


# (family, hook number) of every base chain of the agent's tables: ip
# prerouting (NF_INET_PRE_ROUTING 0), arp output (NF_ARP_OUT 1), ip6
# prerouting and output (NF_INET_LOCAL_OUT 3).
_PROBED_HOOKS = (("ip", 0), ("arp", 1), ("ip6", 0), ("ip6", 3))


def table_name(vip):
    return "clusterip_" + vip.replace(".", "_").replace(":", "_")


def _ip(params):
    """nft's name of the VIP's family: the filter table's family and protocol."""
    return "ip6" if params.ipv6 else "ip"


def tables(params):
    """[(family, name)] of the VIP's tables, the filter table first: IPv6 keeps
    its rewrite in the ip6 table; a unicast cluster MAC adds a netdev table."""
    name = table_name(params.vip)
    found = [("ip6", name)] if params.ipv6 else [("ip", name), ("arp", name)]
    return found + ([("netdev", name)] if address.is_unicast(params.clustermac) else [])


def ingress_rules(params):
    """The rules of chain ``ingress`` of the netdev table (a unicast cluster MAC).

    A frame to a unicast MAC that is not the NIC's own arrives marked
    "other host" (the NIC accepts it through its unicast filter), and
    ip_rcv/ip6_rcv/arp_rcv drop such frames before any hook of their
    families: only the netdev ingress hook, before them, can mark them as
    this host's.  Only the VIP's: a frame to the shared MAC for any other
    address stays "other host" and is dropped, not routed.  ARP too: a
    neighbour confirms its entry with unicast requests to the MAC it
    learnt, which every node answers, as every node answers broadcast ones.
    The bucket filter stays in the prerouting chain, after conntrack.
    """
    match = "ether daddr %s" % params.clustermac
    rules = ["%s %s daddr %s meta pkttype set host" % (match, _ip(params), params.vip)]
    if not params.ipv6:
        rules.append("%s arp daddr ip %s meta pkttype set host" % (match, params.vip))
    return rules


def hash_fields(params):
    """[(protocol, field)] the bucket hash covers, as nft's JSON listing spells them."""
    return [(_ip(params) if proto == "ip" else proto, field)
            for proto, field in _HASH_FIELDS[params.hashmode]]


def hash_expression(params):
    """The bucket of a packet, 1..N, the same on every node for the same packet."""
    return "jhash %s mod %d seed 0x%08x offset 1" % (
        " . ".join("%s %s" % field for field in hash_fields(params)),
        params.total_buckets, params.hash_init)


def vip_chain_rules(params):
    """The rules of chain ``vip`` in order: what create() loads and state() expects."""
    hashed = hash_expression(params)
    jumps = ", ".join("%d : jump bucket%d" % (b, b) for b in range(1, params.total_buckets + 1))
    return [
        # The packet counter of its bucket (see build_create_script).
        "%s vmap { %s }" % (hashed, jumps),
        # Neighbour Discovery addressed to the VIP, whatever its hash: a
        # client's unicast reachability probes (every node answers, as every
        # node answers ARP), and the Advertisements answering a node's own
        # Solicitations sent from the VIP - with a port hash mode they fall
        # into another bucket than the connection that needs them.
        *(["%s accept" % _ND_TYPES] if params.ipv6 else []),
        # ICMP errors for this node's own connections, whatever their hash.
        "meta l4proto %s ct state related meta pkttype set host accept"
        % ("ipv6-icmp" if params.ipv6 else "icmp"),
        *(_GRACEFUL_HANDOVER_RULES if params.graceful_handover else ()),
        "%s != @owned drop" % hashed,
        "meta pkttype set host",
    ]


def _mac_int(mac):
    return int(mac.replace(":", ""), 16)


def rewrite_writes(params, nic_mac):
    """[(key, value)] the rewrite rule writes, values as nft's JSON listing shows them.

    IPv4: the ARP sender MAC.  IPv6: the MAC of the link-layer address option
    of the node's Neighbour Advertisements (and of its Solicitations sent from
    the VIP, which would teach its own MAC too) - and a compensation word.
    nft 1.0.6 cannot update the ICMPv6 checksum for such a raw payload write
    (its payload statement carries no checksum for ``@th``, in text or JSON),
    and a packet with a bad checksum is dropped.  So the rule also writes, in
    16 of the reserved bits that RFC 4861 tells receivers to ignore, the one's
    complement difference between the node's MAC and the cluster MAC: the
    packet's one's complement sum, hence its checksum, stays what the kernel
    computed.  The difference depends on the node's MAC, which the rule
    therefore matches (``nic_mac``; None when unknown).
    """
    if not params.ipv6:
        return [("arp saddr ether", params.clustermac)]
    if nic_mac is None:
        return []
    old, new = _mac_int(nic_mac).to_bytes(6, "big"), _mac_int(params.clustermac).to_bytes(6, "big")
    compensation = inet.ones_complement_sum(old + bytes(b ^ 0xFF for b in new))
    return [(_ND_RESERVED, compensation), (_ND_MAC, _mac_int(params.clustermac))]


def rewrite_rule(params, placement, nic_mac):
    """The one rule of the rewrite chain ``output``."""
    if params.ipv6:
        match = 'oifname "%s" ip6 saddr %s %s %s 0 %s 0x01%012x' % (
            placement.nic, params.vip, _ND_TYPES, _ND_RESERVED, _ND_OPTION,
            _mac_int(nic_mac))
    else:
        match = 'oifname "%s" arp saddr ip %s' % (placement.nic, params.vip)
    return match + "".join(" %s set %s" % (key, "0x%x" % value if isinstance(value, int) else value)
                           for key, value in rewrite_writes(params, nic_mac))


def build_create_script(params, placement, owned, nic_mac=None):
    """nft commands that (re)build the tables of the VIP in one transaction.

    Text, not JSON: nft 1.0.6 cannot express a ``typeof`` set in JSON, and a
    set declared with a plain type (mark, integer) does not match jhash.  The
    leading add+delete makes the script replace an existing table (adding a
    table that exists is a no-op, deleting one that is missing an error).
    ``nic_mac``: the NIC's own MAC, needed for IPv6 (see rewrite_writes).

    The shape is the one every nft lists (measured on 1.0.6, 1.1.3, 1.1.7):
    * ``owned`` is declared ``typeof symhash mod N offset 1``: its key is what
      jhash yields too, a 32-bit integer in host order, and symhash has no
      inner expression that nft would have to keep (``typeof jhash ...``
      crashes every listing).  The set's comment names the real hash.
    * the per-bucket packet counters are named counters ``bucket<k>``, each
      in a chain of its own that an anonymous ``jhash ... vmap`` jumps to:
      one hash and one lookup per packet whatever N (per-bucket rules
      ``jhash ... == k`` would cost N), and counted on every version (nft
      1.1.7 never counts through ``counter name jhash ... map { ... }``).
    """
    name = table_name(params.vip)
    ip = _ip(params)
    hashed = hash_expression(params)
    elements = ", ".join(str(b) for b in sorted(owned))
    buckets = range(1, params.total_buckets + 1)
    counters = "\n".join("  counter bucket%d {}" % b for b in buckets)
    bucket_chains = "\n".join('  chain bucket%d {\n    counter name "bucket%d"\n  }' % (b, b)
                              for b in buckets)
    vip_rules = "\n".join("    " + rule for rule in vip_chain_rules(params))
    owned_line = "\n    elements = { %s }" % elements if elements else ""
    # The lease: every element added without a timeout of its own gets the
    # set's (start's and the guard's), the monitor renews it (renew_bucket).
    lease_line = "\n    timeout %ds" % params.owner_lease if params.owner_lease else ""
    output = f"""  chain output {{
    type filter hook output priority 0; policy accept;
    {rewrite_rule(params, placement, nic_mac)}
  }}
"""
    ingress = "\n".join("    " + rule for rule in ingress_rules(params))
    netdev = f"""table netdev {name} {{
  chain ingress {{
    type filter hook ingress device "{placement.nic}" priority -150; policy accept;
{ingress}
  }}
}}
""" if address.is_unicast(params.clustermac) else ""
    return "".join("add table %s %s\ndelete table %s %s\n" % (family, name, family, name)
                   for family, name in tables(params)) + f"""table {ip} {name} {{
  set owned {{
    typeof symhash mod {params.total_buckets} offset 1{lease_line}
    comment "keys: {hashed}"{owned_line}
  }}
{counters}
{bucket_chains}
  chain prerouting {{
    type filter hook prerouting priority -150; policy accept;
    iifname "{placement.nic}" {ip} daddr {params.vip} jump vip
  }}
  chain vip {{
{vip_rules}
  }}
{output if params.ipv6 else ""}}}
""" + ("" if params.ipv6 else f"""table arp {name} {{
{output}}}
""") + netdev


def build_destroy_script(params, netdev=False):
    """Deletes the VIP's tables; ``netdev``: its netdev table too, whatever
    clustermac says now (see NftBackend.destroy)."""
    found = tables(params)
    name = found[0][1]
    found += [("netdev", name)] if netdev and ("netdev", name) not in found else []
    return "".join("add table %s %s\ndelete table %s %s\n" % (family, name, family, name)
                   for family, name in found)


def element_command(verb, params, bucket):
    """JSON for adding ("add") or deleting ("delete") one bucket of the owned set."""
    return {"nftables": [{verb: {"element": {
        "family": _ip(params), "table": table_name(params.vip), "name": "owned",
        "elem": [bucket]}}}]}


def _element_values(owned_set):
    """The keys of a listed set's elements: plain numbers, or (with timeouts)
    {"elem": {"val": k, "expires": s, ...}}."""
    for entry in owned_set.get("elem", []):
        if isinstance(entry, dict):
            entry = entry.get("elem", {}).get("val")
        if isinstance(entry, int):
            yield entry


def _expiries(owned_set):
    """{bucket: seconds left} of a listed set's elements that expire."""
    return {e["elem"]["val"]: e["elem"]["expires"] for e in owned_set.get("elem", [])
            if isinstance(e, dict) and isinstance(e.get("elem", {}).get("val"), int)
            and "expires" in e["elem"]}


def _lease_missing(owned_set, params):
    """How the monitor names a set whose timeouts differ from owner_lease, or None."""
    lease = owned_set.get("timeout", 0) if "timeout" in owned_set.get("flags", []) else 0
    if lease == params.owner_lease:
        return None
    if params.owner_lease:
        return "owner lease of %d s on set owned" % params.owner_lease
    return "set owned without owner lease (it has %d s)" % lease


def _udata(data):
    """{type: value} of libnftnl user data (TLVs: a type byte, a length byte)."""
    found, offset = {}, 0
    while offset + 2 <= len(data):
        kind, length = data[offset], data[offset + 1]
        found[kind] = data[offset + 2:offset + 2 + length]
        offset += 2 + length
    return found


def lists_safely(userdata):
    """Whether nft can print a set with this user data (its bytes over nfnetlink).

    False for a set declared ``typeof jhash ...``: nft stores only the hash's
    type, modulus, seed and offset there, not the hashed expression, and
    printing the set dereferences the missing expression (nft 1.0.6 crashes
    listing it as text, libnftables 1.1.x as JSON too: in-process).
    """
    typeof = _udata(_udata(userdata).get(_UDATA_SET_KEY_TYPEOF, b""))
    if int.from_bytes(typeof.get(_UDATA_TYPEOF_EXPR, b""), sys.byteorder) != _EXPR_HASH:
        return True
    data = _udata(typeof.get(_UDATA_TYPEOF_DATA, b""))
    return int.from_bytes(data.get(_UDATA_HASH_TYPE, b"\xff"), sys.byteorder) \
        != _NFT_HASH_JENKINS


def old_layout(family, name):
    """How the monitor names a table nft cannot list: built by an older clusterip."""
    return ("nft table %s %s in the layout of an older clusterip (a set declared "
            "typeof jhash, which crashes nft listings)" % (family, name))


def _walk(node):
    """Every dict inside a JSON listing, depth first."""
    if isinstance(node, dict):
        yield node
        for value in node.values():
            yield from _walk(value)
    elif isinstance(node, list):
        for value in node:
            yield from _walk(value)


def _objects(listing, kind):
    return [item[kind] for item in listing.get("nftables", []) if kind in item]


def _rules(listing, chain):
    return [rule["expr"] for rule in _objects(listing, "rule") if rule.get("chain") == chain]


def _hash_config(expr):
    for node in _walk(expr):
        if "jhash" in node:
            jhash = node["jhash"]
            fields = [(p["payload"]["protocol"], p["payload"]["field"])
                      for p in _walk(jhash.get("expr")) if "payload" in p]
            return jhash.get("mod"), jhash.get("seed"), jhash.get("offset"), fields
    return None


def _counts_every_bucket(listing, total):
    """Whether chain vip jumps to chain bucket<k> for every bucket k, and each
    of those chains holds exactly the named counter bucket<k>, which exists."""
    wanted = {k: "bucket%d" % k for k in range(1, total + 1)}
    jumps = {}
    for expr in _rules(listing, "vip"):
        for node in _walk(expr):
            if "vmap" in node:
                jumps = {key: target.get("jump", {}).get("target")
                         for key, target in node["vmap"].get("data", {}).get("set", [])
                         if isinstance(target, dict)}
    named = {c.get("name") for c in _objects(listing, "counter")}
    return jumps == wanted and all(
        _rules(listing, chain) == [[{"counter": chain}]] and chain in named
        for chain in wanted.values())


def _matches(expr):
    """The constants a rule compares against, e.g. {"eth0", "198.18.0.100"}."""
    return {node["right"] for node in _walk(expr) if isinstance(node.get("right"), str)}


def _mangles(listing, chain):
    """[(key, value)] of every payload write in a chain's rules."""
    return [(node["mangle"]["key"], node["mangle"].get("value"))
            for expr in _rules(listing, chain) for node in _walk(expr) if "mangle" in node]


def _chain_devices(listing, chain):
    """The devices a netdev chain hooks as the listing names them (one as
    "dev": "eth0", more as a list); None when it names none (nft 1.0.6's
    JSON leaves them out)."""
    for found in _objects(listing, "chain"):
        if found.get("name") == chain and "dev" in found:
            devices = found["dev"]
            return {devices} if isinstance(devices, str) else set(devices)
    return None


def _ingress_missing(ingress_listing, params, placement):
    """How the monitor names a netdev table that does not mark the VIP's
    frames to the unicast cluster MAC as this host's, or None."""
    rules = _rules(ingress_listing or {}, "ingress")
    wanted = ingress_rules(params)
    marks = [{"mangle": {"key": {"meta": {"key": "pkttype"}}, "value": "host"}} in rule
             for rule in rules]
    arp = ["arp" in _payload_protocols(rule) for rule in rules]
    if ingress_listing is None or len(rules) != len(wanted) or not all(marks) \
            or _chain_devices(ingress_listing, "ingress") not in (None, {placement.nic}) \
            or any(not {params.clustermac, params.vip} <= _matches(rule) for rule in rules) \
            or sum(arp) != len(wanted) - 1:
        return "netdev ingress chain on %s for %s" % (placement.nic, params.clustermac)
    return None


def _payload_protocols(expr):
    """The protocols of the payloads a rule matches (e.g. ["ether", "arp"])."""
    return [node["payload"].get("protocol") for node in _walk(expr) if "payload" in node]


def parse_state(ip_listing, rewrite_listing, params, placement, multicast_joined,
                nic_mac=None, ingress_listing=None):
    """VipState from the JSON listings of the filter table, of the table
    holding the rewrite (for IPv6 the same ip6 table) and, with a unicast
    cluster MAC, of the netdev table (None for a missing table)."""
    if ip_listing is None and rewrite_listing is None and ingress_listing is None:
        return None
    missing = []
    owned = frozenset()
    if ip_listing is None:
        missing.append("nft table %s %s" % (_ip(params), table_name(params.vip)))
    else:
        sets = [s for s in _objects(ip_listing, "set") if s.get("name") == "owned"]
        if not sets:
            missing.append("set owned")
        else:
            owned = frozenset(_element_values(sets[0]))
            lease = _lease_missing(sets[0], params)
            if lease:
                missing.append(lease)
        wanted = (params.total_buckets, params.hash_init, 1, hash_fields(params))
        vip_rules = _rules(ip_listing, "vip")
        hashes = [_hash_config(expr) for expr in vip_rules]
        # The count tells a table built with the other graceful_handover apart.
        if len(vip_rules) != len(vip_chain_rules(params)) \
                or any(h != wanted for h in hashes if h):
            missing.append("bucket filter for %d buckets, hashmode %s, hash_init %d, "
                           "graceful_handover %s"
                           % (params.total_buckets, params.hashmode, params.hash_init,
                              "on" if params.graceful_handover else "off"))
        if not _counts_every_bucket(ip_listing, params.total_buckets):
            missing.append("packet counter per bucket")
        steering = _rules(ip_listing, "prerouting")
        if len(steering) != 1 or not {placement.nic, params.vip} <= _matches(steering[0]):
            missing.append("prerouting rule for %s on %s" % (params.vip, placement.nic))
    writes = rewrite_writes(params, nic_mac)
    found = _mangles(rewrite_listing, "output") if rewrite_listing is not None else []
    rewrites = _rules(rewrite_listing or {}, "output")
    if len(rewrites) != 1 or not writes \
            or not {placement.nic, params.vip} <= _matches(rewrites[0]) \
            or {value for _, value in found} != {value for _, value in writes}:
        missing.append("%s rewrite to %s" % ("Neighbour Advertisement" if params.ipv6 else "ARP",
                                             params.clustermac))
    if address.is_unicast(params.clustermac):
        ingress = _ingress_missing(ingress_listing, params, placement)
        if ingress:
            missing.append(ingress)
    if not multicast_joined:
        missing.append(mac_filter_missing(params, placement))
    return VipState(owned=owned, missing=tuple(missing))


def describe(ip_listing, rewrite_listing):
    """What one VIP's tables say, for ``clusterip status`` (see Backend.inventory)."""
    report = {"backend": "nft", "vip": None, "nic": None, "clustermac": None,
              "hashmode": None, "hash_init": None, "buckets": None, "owned": [],
              "counters": {}, "owner_lease": 0, "expires": {}}
    steering = _rules(ip_listing, "prerouting")
    for value in _matches(steering[0]) if steering else ():
        if inet.parse(value) is not None:
            report["vip"] = value
        else:
            report["nic"] = value
    for expr in _rules(ip_listing, "vip"):
        config = _hash_config(expr)
        if config:
            mod, seed, _, fields = config
            fields = [("ip" if proto == "ip6" else proto, field) for proto, field in fields]
            modes = [m for m, f in _HASH_FIELDS.items() if f == fields]
            report.update(buckets=mod, hash_init=seed, hashmode=modes[0] if modes else None)
    sets = [s for s in _objects(ip_listing, "set") if s.get("name") == "owned"]
    if sets:
        report["owned"] = sorted(_element_values(sets[0]))
        if "timeout" in sets[0].get("flags", []):
            report.update(owner_lease=sets[0].get("timeout", 0), expires=_expiries(sets[0]))
    for counter in _objects(ip_listing, "counter"):
        name = counter.get("name", "")
        if name.startswith("bucket") and name[6:].isdigit():
            report["counters"][int(name[6:])] = {"packets": counter.get("packets", 0),
                                                 "bytes": counter.get("bytes", 0)}
    for key, value in _mangles(rewrite_listing or {}, "output"):
        if isinstance(value, str):  # ARP: "arp saddr ether" set "03:c1:..."
            report["clustermac"] = value
        elif key.get("payload", {}).get("offset") == 208:  # IPv6: the option's MAC
            report["clustermac"] = ":".join("%02x" % b for b in value.to_bytes(6, "big"))
    return report


def describe_old_layout(family, name):
    """What ``clusterip status`` can say of a table nft cannot list: its owned
    buckets (over nfnetlink) and that the next monitor or start rebuilds it."""
    keys = nfnl.set_keys(family, name, "owned")
    vip = name[len("clusterip_"):].replace("_", ":" if family == "ip6" else ".")
    return {"backend": "nft", "vip": vip, "nic": None, "clustermac": None,
            "hashmode": None, "hash_init": None, "buckets": None,
            "owned": sorted(int.from_bytes(k, sys.byteorder) for k in keys),
            "counters": {}, "problem": old_layout(family, name)
            + "; the next monitor of a started instance, or a start, rebuilds it"}


_CONTEXT = []  # the process's one libnftables context, once made


def _context():
    """The process's libnftables context, made once and never freed before
    the process ends: freeing it closes its netlink socket, which after a
    transaction waits for the kernel (see clusterip.kernel), and must not
    happen inside the action, before its sockets are handed on."""
    if not _CONTEXT:
        try:
            import nftables  # the libnftables binding (ctypes), ~ms to load
            ctx = nftables.Nftables()
        except (ImportError, OSError) as error:
            raise NotInstalled("libnftables or its Python binding is missing (%s); "
                               "install the nftables package" % error) from None
        ctx.set_json_output(True)
        ctx.set_handle_output(False)
        _CONTEXT.append(ctx)
    return _CONTEXT[0]


class NftBackend(Backend):
    name = "nft"
    filter_description = "nft tables"
    # The agent's ceiling (one named counter and one map entry per bucket).
    max_buckets = 256
    graceful_handover = True
    ipv6 = True
    unicast_mac = True
    owner_lease = True
    guarded = True  # nf_tables notifies NFNLGRP_NFTABLES of every change

    def __init__(self, **context):
        super().__init__(**context)
        self._ctx = None

    def _nft(self):
        if self._ctx is None:
            self._ctx = _context()
        return self._ctx

    def _run(self, command, what):
        if isinstance(command, str):
            rc, output, error = self._nft().cmd(command)
        else:
            rc, output, error = self._nft().json_cmd(command)
        kernel.wrote()  # a transaction: releasing the socket now would wait (see kernel)
        if rc != 0:
            raise GenericError("nft: cannot %s: %s" % (what, _first_error_line(error)))
        return output

    def _list_table(self, family, name):
        """The table's JSON listing, or None when it does not exist."""
        rc, output, error = self._nft().json_cmd(
            {"nftables": [{"list": {"table": {"family": family, "name": name}}}]})
        if rc != 0:
            if "No such file or directory" in error:
                return None
            raise GenericError("nft: cannot list table %s %s: %s"
                               % (family, name, _first_error_line(error)))
        return output or {}  # json_cmd parses the listing; '' when it printed nothing

    def kernel_supports(self, params=None):
        """Whether nf_tables here can hold the agent's tables: the filter base
        chains they hook (ip prerouting, arp output, ip6 prerouting and
        output).  The VIP's own tables, where they exist, say so at once; else
        an uncommitted probe (~12 ms: the kernel registers and unregisters
        the hooks) asks the kernel, which is what a start of the first
        instance and a probe of one not running here pay, never a monitor
        of a running one.  Without root it cannot ask, and says yes: nft
        is the choice wherever it can run."""
        if params is not None and self.serves(params):
            return True
        try:
            return nfnl.base_chains_work(_PROBED_HOOKS)
        except OSError:
            return True

    def serves(self, params):
        try:
            return any(name in nfnl.table_names(family) for family, name in tables(params))
        except OSError:
            return False

    def check_available(self):
        # Over nfnetlink, not libnftables: every action passes here, the monitor
        # included, and it needs no library (see state()).
        if not nfnl.available():
            raise NotInstalled("the kernel lacks nf_tables")

    def check_libraries(self):
        self._nft()

    # The remembered full check (see Backend.state).  The full check reads
    # the tables as JSON through libnftables, ~9 ms of a ~20 ms monitor; the
    # rules' bytes and the owned set come over nfnetlink, well under 1 ms.
    # Any change to a rule, a chain's rules or a table's presence changes the
    # bytes and takes the full check again.

    def _fingerprint(self, params):
        return _fingerprint(tables(params))

    def _owned(self, params):
        family, name = tables(params)[0]
        try:
            return frozenset(int.from_bytes(k, sys.byteorder)
                             for k in nfnl.set_keys(family, name, "owned"))
        except OSError:
            return None  # the set vanished since: the full check says what is missing

    def _present(self, params, fingerprint, owned):
        # No rules and no set over nfnetlink: unless some table of the VIP is
        # there (half-configured: the full check names what is missing),
        # nothing is, and libnftables (~12 ms to load) is not needed: the
        # monitor of an instance that never ran here, every probe.
        if fingerprint is not None or owned is not None:
            return True
        try:
            return any(name in nfnl.table_names(family) for family, name in tables(params))
        except OSError:
            return True  # unreadable: the full check decides

    def _unreadable(self, params):
        # Before anything lists the table: one libnftables listing of a set nft
        # cannot print kills this process.  Start rebuilds the table, keeping
        # its owned buckets (read over nfnetlink).
        family, name = tables(params)[0]
        return [] if _listable(family, name) else [old_layout(family, name)]

    def _memo_key(self, params, placement):
        # The NIC's MAC is in the IPv6 rewrite; the layout, so that a verdict
        # on an older layout's tables does not vouch for them after an upgrade.
        return memo_key(params, placement, _nic_mac(params, placement), LAYOUT)

    def _full_state(self, params, placement, owned, multicast):
        # owned unused: parse_state reads the buckets from the listing itself,
        # consistent with the rules listed with them.
        listings = {family: self._list_table(family, name) for family, name in tables(params)}
        return parse_state(listings[_ip(params)], listings["ip6" if params.ipv6 else "arp"],
                           params, placement, not multicast, _nic_mac(params, placement),
                           listings.get("netdev"))

    def create(self, params, placement, owned):
        nic_mac = None
        if params.ipv6:
            nic_mac = address.nic_mac(placement.nic)
            if nic_mac is None:
                raise GenericError("cannot read the MAC address of %s" % placement.nic)
        self._run(build_create_script(params, placement, owned, nic_mac), "create the tables")
        step("nft:tables-created")
        address.accept_cluster_mac(placement.nic, params.clustermac)

    def add_bucket(self, params, bucket):
        self._run(element_command("add", params, bucket), "add bucket %d" % bucket)

    def remove_bucket(self, params, bucket):
        # nft 1.0.6 has no "destroy element": the caller only removes what it saw.
        self._run(element_command("delete", params, bucket), "remove bucket %d" % bucket)

    def renew_bucket(self, params, bucket):
        # Over nfnetlink, in the monitor (see nfnl.renew_element for why a
        # deletion and an addition).
        family, name = tables(params)[0]
        try:
            nfnl.renew_element(family, name, "owned", bucket.to_bytes(4, sys.byteorder),
                               params.owner_lease * 1000)
        except FileNotFoundError:
            return False
        except OSError as error:
            raise GenericError("nft: cannot renew the owner lease of bucket %d: %s"
                               % (bucket, error.strerror)) from None
        return True

    def inventory(self):
        # Table names over nfnetlink: "list tables" would make nft read every set.
        found = sorted((family, name) for family in ("ip", "ip6")
                       for name in nfnl.table_names(family) if name.startswith("clusterip_"))
        netdev = None  # read once, when a unicast cluster MAC asks for it
        reports = []
        for family, name in found:
            if not _listable(family, name):
                reports.append(describe_old_layout(family, name))
                continue
            listing = self._list_table(family, name)
            report = describe(listing, self._list_table("arp", name)
                              if family == "ip" else listing)
            if report["clustermac"] and address.is_unicast(report["clustermac"]):
                netdev = nfnl.table_names("netdev") if netdev is None else netdev
                report["unicast"] = {
                    "ingress chain": name in netdev,
                    "NIC filter entry": report["nic"] is not None
                    and address.cluster_mac_accepted(report["nic"], report["clustermac"])}
            reports.append(report)
        return reports

    def destroy(self, params, placement):
        self.forget()
        # The unicast filter entries a netdev table of the VIP stands for, also
        # one left by the VIP's earlier clustermac (the stop of a changed
        # configuration may run with the new one).
        left = self._ingress_macs(params)
        self._run(build_destroy_script(params, left is not None), "delete the tables")
        step("nft:tables-deleted")
        if placement is not None:
            for mac in {params.clustermac} | (left or set()):
                address.stop_accepting_cluster_mac(placement.nic, mac)

    def _ingress_macs(self, params):
        """{unicast MAC} the VIP's netdev table (any, whatever clustermac says)
        matches; None when there is no such table."""
        name = table_name(params.vip)
        try:
            if name not in nfnl.table_names("netdev"):
                return None
        except OSError:
            return None
        listing = self._list_table("netdev", name) or {}
        return {value for expr in _rules(listing, "ingress") for value in _matches(expr)
                if is_mac(value) and address.is_unicast(value)}


def _nic_mac(params, placement):
    """The NIC's own MAC where the rules hold it (IPv6), else None."""
    return address.nic_mac(placement.nic) if params.ipv6 else None


def _listable(family, name):
    """Whether libnftables can list the table (asked over nfnetlink): no set of
    it is one nft cannot print."""
    return all(lists_safely(data) for data in nfnl.set_userdata(family, name).values())


def _fingerprint(family_tables):
    """The rules of the VIP's tables as the kernel encodes them; None without the first."""
    found = [nfnl.rules(family, name) for family, name in family_tables]
    if not found[0]:
        return None
    return b"\0".join(b"".join(chain + len(expressions).to_bytes(4, "big") + expressions
                               for chain, expressions in rules) for rules in found)


def _first_error_line(text):
    lines = [line for line in (text or "").splitlines() if line.strip()]
    return lines[0] if lines else "unknown error"

