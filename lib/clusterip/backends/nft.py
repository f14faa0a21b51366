"""The nftables backend: CLUSTERIP's semantics on every kernel with nf_tables.

Per VIP, two tables named ``clusterip_<a_b_c_d>``:

* ``ip``: a prerouting chain at priority -150 (after conntrack, before the
  routing decision) sends packets for the VIP on the NIC to chain ``vip``,
  which counts them per bucket, lets ICMP errors for this node's own
  connections through, drops every packet whose ``jhash`` bucket is not in
  the set ``owned``, and marks the rest as addressed to this host (they
  arrived with a multicast destination MAC, which TCP would discard).  With
  ``graceful_handover`` it first lets through the TCP connections this node
  already tracks and drops mid-stream TCP packets it tracks nothing for
  (see :func:`vip_chain_rules`).
* ``arp``: the sender MAC of every ARP request and reply for the VIP becomes
  the cluster MAC, so neighbours send the VIP's traffic to all nodes.

Moving a bucket is one element added to or deleted from ``owned``: atomic,
no rule reload.  The module splits into pure builders (text and JSON, unit
tested) and the one class that talks to libnftables, in-process.  The
monitor's common case, nothing changed since the last full check, reads the
kernel over nfnetlink instead (:mod:`clusterip.nfnl`, see NftBackend.state).
"""

import os
import sys

from clusterip import address, nfnl
from clusterip.backends import Backend, VipState
from clusterip.errors import GenericError, NotInstalled
from clusterip.testhooks import step

_HASH_FIELDS = {
    "sourceip": "ip saddr",
    "sourceip-sourceport": "ip saddr . th sport",
    "sourceip-sourceport-destport": "ip saddr . th sport . th dport",
}
# The same fields as nft's JSON listing spells them.
_HASH_FIELDS_JSON = {
    "sourceip": [("ip", "saddr")],
    "sourceip-sourceport": [("ip", "saddr"), ("th", "sport")],
    "sourceip-sourceport-destport": [("ip", "saddr"), ("th", "sport"), ("th", "dport")],
}
# A valid table name no VIP can have (theirs end in four numbers).
_PROBE_TABLE = "clusterip_probe"
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


def table_name(vip):
    return "clusterip_" + vip.replace(".", "_")


def hash_expression(params):
    """The bucket of a packet, 1..N, the same on every node for the same packet."""
    return "jhash %s mod %d seed 0x%08x offset 1" % (
        _HASH_FIELDS[params.hashmode], params.total_buckets, params.hash_init)


def vip_chain_rules(params):
    """The rules of chain ``vip`` in order: what create() loads and state() expects."""
    hashed = hash_expression(params)
    counter_map = ", ".join('%d : "bucket%d"' % (b, b) for b in range(1, params.total_buckets + 1))
    return [
        "counter name %s map { %s }" % (hashed, counter_map),
        # ICMP errors for this node's own connections, whatever their hash.
        "meta l4proto icmp ct state related meta pkttype set host accept",
        *(_GRACEFUL_HANDOVER_RULES if params.graceful_handover else ()),
        "%s != @owned drop" % hashed,
        "meta pkttype set host",
    ]


def build_create_script(params, placement, owned):
    """nft commands that (re)build both tables of the VIP in one transaction.

    Text, not JSON: nft 1.0.6 cannot express a ``typeof`` set in JSON, and a
    set declared with a plain type (mark, integer) does not match jhash.  The
    leading add+delete makes the script replace an existing table (adding a
    table that exists is a no-op, deleting one that is missing an error).
    """
    name = table_name(params.vip)
    hashed = hash_expression(params)
    elements = ", ".join(str(b) for b in sorted(owned))
    counters = "\n".join("  counter bucket%d {}" % b for b in range(1, params.total_buckets + 1))
    vip_rules = "\n".join("    " + rule for rule in vip_chain_rules(params))
    owned_line = "; elements = { %s }" % elements if elements else ""
    return f"""add table ip {name}
delete table ip {name}
add table arp {name}
delete table arp {name}
table ip {name} {{
  set owned {{ typeof {hashed}{owned_line}; }}
{counters}
  chain prerouting {{
    type filter hook prerouting priority -150; policy accept;
    iifname "{placement.nic}" ip daddr {params.vip} jump vip
  }}
  chain vip {{
{vip_rules}
  }}
}}
table arp {name} {{
  chain output {{
    type filter hook output priority 0; policy accept;
    oifname "{placement.nic}" arp saddr ip {params.vip} arp saddr ether set {params.clustermac}
  }}
}}
"""


def build_destroy_script(vip):
    name = table_name(vip)
    return (f"add table ip {name}\ndelete table ip {name}\n"
            f"add table arp {name}\ndelete table arp {name}\n")


def element_command(verb, vip, bucket):
    """JSON for adding ("add") or deleting ("delete") one bucket of the owned set."""
    return {"nftables": [{verb: {"element": {
        "family": "ip", "table": table_name(vip), "name": "owned", "elem": [bucket]}}}]}


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


def _matches(expr):
    """The constants a rule compares against, e.g. {"eth0", "198.18.0.100"}."""
    return {node["right"] for node in _walk(expr) if isinstance(node.get("right"), str)}


def _multicast_missing(params, placement):
    return "multicast membership of %s in %s" % (placement.nic, params.clustermac)


def parse_state(ip_listing, arp_listing, params, placement, multicast_joined):
    """VipState from the JSON listings of both tables (None for a missing table)."""
    if ip_listing is None and arp_listing is None:
        return None
    missing = []
    owned = frozenset()
    if ip_listing is None:
        missing.append("nft table ip %s" % table_name(params.vip))
    else:
        sets = [s for s in _objects(ip_listing, "set") if s.get("name") == "owned"]
        if not sets:
            missing.append("set owned")
        else:
            owned = frozenset(e for e in sets[0].get("elem", []) if isinstance(e, int))
        wanted = (params.total_buckets, params.hash_init, 1,
                  _HASH_FIELDS_JSON[params.hashmode])
        vip_rules = _rules(ip_listing, "vip")
        hashes = [_hash_config(expr) for expr in vip_rules]
        # The count tells a table built with the other graceful_handover apart.
        if len(vip_rules) != len(vip_chain_rules(params)) \
                or any(h != wanted for h in hashes if h):
            missing.append("bucket filter for %d buckets, hashmode %s, hash_init %d, "
                           "graceful_handover %s"
                           % (params.total_buckets, params.hashmode, params.hash_init,
                              "on" if params.graceful_handover else "off"))
        steering = _rules(ip_listing, "prerouting")
        if len(steering) != 1 or not {placement.nic, params.vip} <= _matches(steering[0]):
            missing.append("prerouting rule for %s on %s" % (params.vip, placement.nic))
    arp_rules = _rules(arp_listing, "output") if arp_listing is not None else []
    if len(arp_rules) != 1 or not any(
            node.get("value") == params.clustermac for node in _walk(arp_rules[0])
            if "value" in node):
        missing.append("ARP rewrite to %s" % params.clustermac)
    if not multicast_joined:
        missing.append(_multicast_missing(params, placement))
    return VipState(owned=owned, missing=tuple(missing))


def describe(ip_listing, arp_listing):
    """What one VIP's tables say, for ``clusterip status`` (see Backend.inventory)."""
    import ipaddress

    report = {"backend": "nft", "vip": None, "nic": None, "clustermac": None,
              "hashmode": None, "hash_init": None, "buckets": None, "owned": [],
              "counters": {}}
    steering = _rules(ip_listing, "prerouting")
    for value in _matches(steering[0]) if steering else ():
        try:
            report["vip"] = str(ipaddress.IPv4Address(value))
        except ValueError:
            report["nic"] = value
    for expr in _rules(ip_listing, "vip"):
        config = _hash_config(expr)
        if config:
            mod, seed, _, fields = config
            modes = [m for m, f in _HASH_FIELDS_JSON.items() if f == fields]
            report.update(buckets=mod, hash_init=seed, hashmode=modes[0] if modes else None)
    sets = [s for s in _objects(ip_listing, "set") if s.get("name") == "owned"]
    if sets:
        report["owned"] = sorted(e for e in sets[0].get("elem", []) if isinstance(e, int))
    for counter in _objects(ip_listing, "counter"):
        name = counter.get("name", "")
        if name.startswith("bucket") and name[6:].isdigit():
            report["counters"][int(name[6:])] = {"packets": counter.get("packets", 0),
                                                 "bytes": counter.get("bytes", 0)}
    for expr in _rules(arp_listing or {}, "output"):
        for node in _walk(expr):
            if "mangle" in node:
                report["clustermac"] = node["mangle"].get("value")
    return report


class NftBackend(Backend):
    name = "nft"
    filter_description = "nft tables"
    # The agent's ceiling (one named counter and one map entry per bucket).
    max_buckets = 256
    graceful_handover = True

    def __init__(self):
        self._ctx = None

    def _nft(self):
        if self._ctx is None:
            try:
                import nftables  # the libnftables binding (ctypes), ~ms to load
                ctx = nftables.Nftables()
            except (ImportError, OSError) as error:
                raise NotInstalled("libnftables or its Python binding is missing (%s); "
                                   "install the nftables package" % error) from None
            ctx.set_json_output(True)
            ctx.set_handle_output(False)
            self._ctx = ctx
        return self._ctx

    def _run(self, command, what):
        if isinstance(command, str):
            rc, output, error = self._nft().cmd(command)
        else:
            rc, output, error = self._nft().json_cmd(command)
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

    def kernel_supports(self):
        return True  # the fallback: nf_tables is in every kernel since 3.13

    def check_available(self):
        # Over nfnetlink, not libnftables: every action passes here, the monitor
        # included, and it needs no library (see state()).
        if not nfnl.available():
            raise NotInstalled("the kernel lacks nf_tables")

    def check_libraries(self):
        self._nft()

    def state(self, params, placement):
        """The VIP's state: the full check through libnftables, or its remembered verdict.

        The full check reads both tables as JSON through libnftables, ~9 ms of
        a ~20 ms monitor.  Its verdict depends only on the parameters and the
        rules, so it is remembered (in memo_path) with the rules' bytes as the
        kernel dumps them; while those bytes are unchanged the monitor reads
        just them and the owned set over nfnetlink, well under 1 ms.  Any
        change to a rule, a chain's rules or a table's presence misses the
        memo and takes the full check again.
        """
        name = table_name(params.vip)
        joined = address.multicast_joined(placement.nic, params.clustermac)
        key = _memo_key(params, placement)
        seen = _fingerprint(params.vip)
        if seen is not None and self._recall(key) == seen:
            try:
                owned = frozenset(int.from_bytes(k, sys.byteorder)
                                  for k in nfnl.set_keys("ip", name, "owned"))
            except OSError:
                pass  # the set vanished since: the full check says what is missing
            else:
                return VipState(owned=owned, missing=() if joined else (
                    _multicast_missing(params, placement),))
        state = parse_state(self._list_table("ip", name), self._list_table("arp", name),
                            params, placement, joined)
        rules_complete = state is not None and set(state.missing) <= {
            _multicast_missing(params, placement)}
        # Remembered only when the rules did not change while they were checked.
        if rules_complete and seen is not None and _fingerprint(params.vip) == seen:
            self._remember(key, seen)
        return state

    def _recall(self, key):
        if self.memo_path is None:
            return None
        try:
            with open(self.memo_path, "rb") as f:
                stored_key, _, fingerprint = f.read().partition(b"\n")
        except OSError:
            return None
        return fingerprint if stored_key == key else None

    def _remember(self, key, fingerprint):
        if self.memo_path is None:
            return
        scratch = "%s.%d" % (self.memo_path, os.getpid())  # concurrent monitors: rename
        try:
            with open(scratch, "wb") as f:
                f.write(key + b"\n" + fingerprint)
            os.replace(scratch, self.memo_path)
        except OSError:
            _unlink(scratch)  # only a cache: the next call checks fully again

    def create(self, params, placement, owned):
        self._run(build_create_script(params, placement, owned), "create the tables")
        step("nft:tables-created")
        address.join_multicast(placement.nic, params.clustermac)

    def add_bucket(self, params, bucket):
        self._run(element_command("add", params.vip, bucket), "add bucket %d" % bucket)

    def remove_bucket(self, params, bucket):
        # nft 1.0.6 has no "destroy element": the caller only removes what it saw.
        self._run(element_command("delete", params.vip, bucket), "remove bucket %d" % bucket)

    def inventory(self):
        rc, output, error = self._nft().json_cmd({"nftables": [{"list": {"tables": None}}]})
        if rc != 0:
            raise GenericError("nft: cannot list tables: %s" % _first_error_line(error))
        names = sorted(t["name"] for t in _objects(output or {}, "table")
                       if t.get("family") == "ip" and t.get("name", "").startswith("clusterip_"))
        return [describe(self._list_table("ip", name), self._list_table("arp", name))
                for name in names]

    def destroy(self, params, placement):
        _unlink(self.memo_path)
        self._run(build_destroy_script(params.vip), "delete the tables")
        step("nft:tables-deleted")
        if placement is not None:
            address.leave_multicast(placement.nic, params.clustermac)


def _memo_key(params, placement):
    """What the full check's verdict depends on besides the rules: the parameters
    (but not the instance's bucket: instances share one table) and placement."""
    return repr((params._replace(bucket=0), placement)).encode()


def _fingerprint(vip):
    """The rules of both tables as the kernel encodes them; None without the ip table."""
    name = table_name(vip)
    ip_rules = nfnl.rules("ip", name)
    if not ip_rules:
        return None
    return b"".join(chain + len(expressions).to_bytes(4, "big") + expressions
                    for chain, expressions in ip_rules + [(b"arp", b"")] + nfnl.rules("arp", name))


def _unlink(path):
    try:
        if path is not None:
            os.unlink(path)
    except OSError:
        pass


def _first_error_line(text):
    lines = [line for line in (text or "").splitlines() if line.strip()]
    return lines[0] if lines else "unknown error"


BACKEND = NftBackend()
