#!/usr/bin/env python3
"""Records the kernel's answers the wire parsers read (root), for test_kernel_*.py.

Builds known state in a throw-away network namespace of its own (a veth pair
kv0/kv1 inside it, addresses, routes, nft tables, a legacy iptables filter
table, multicast memberships), then calls the parsers of clusterip.kernel
with a socket wrapped at ``netlink._socket_for`` that keeps every request
sent and every datagram ``recv()`` returned, in order.  Writes
tests/unit/data/kernel/:

    state.json   what the recordings were made from: the commands run, the
                 declared state (the tests' expected values), the kernel
                 release, the date, and what independent tools (ip -j,
                 nft -j, iptables-legacy -S) listed afterwards
    dumps.json   {name: {"call": ..., "exchanges": [{"sent": hex,
                 "received": [hex, ...]}]}} plus the iptables getsockopt
                 buffers and /proc/net/dev_mcast

Nothing is created in the root namespace: the namespace is made first and
everything else runs inside it (``ip netns exec``); it is deleted at the end.

    sudo /opt/clusterip-test/bin/python3 tests/unit/record_kernel_dumps.py

(the test venv: the recorder builds the tables with the unit tests' own
parameters, tests/unit/test_nft_builders.py, which imports pytest).
"""

import datetime
import json
import os
import platform
import subprocess
import sys
import time
import uuid

HERE = os.path.dirname(os.path.abspath(__file__))
OUT_DIR = os.path.join(HERE, "data", "kernel")
# Run as a script, outside pytest, whose pythonpath does not apply: the same
# two directories it names, lib/ (the library) and tests/ (unit.test_nft_builders).
sys.path[1:1] = [os.path.join(os.path.dirname(os.path.dirname(HERE)), "lib"),
                 os.path.dirname(HERE)]

# -- the declared state: the tests' expected values come from here ----------

# (dev, address/prefixlen, extra words of "ip addr add", flags "ip" prints)
ADDRESSES = [
    ("kv0", "198.18.5.1/24", ["label", "kv0:cip", "broadcast", "198.18.5.255"], []),
    ("kv0", "198.18.5.100/32", [], []),
    ("kv1", "198.18.6.1/16", ["noprefixroute"], ["noprefixroute"]),  # 0x200: IFA_FLAGS only
    ("kv0", "2001:db8:5::1/64", ["nodad"], ["nodad"]),
    ("kv0", "2001:db8:5::100/128", ["nodad", "noprefixroute"], ["nodad", "noprefixroute"]),
    # The same address on the peer without nodad: kv0 answers its DAD probe.
    ("kv1", "2001:db8:5::1/64", [], ["tentative", "dadfailed"]),
    # DAD still running (kv1's retransmit time is a minute), nobody answers.
    ("kv1", "2001:db8:6::1/64", [], ["tentative"]),
]
LABELS = {("kv0", "198.18.5.1"): "kv0:cip"}
# Enough addresses that the kernel splits a dump over several datagrams.
MANY4 = ["198.18.%d.%d/32" % (64 + i // 250, 1 + i % 250) for i in range(600)]
MANY6 = ["2001:db8:64::%x/128" % (i + 1) for i in range(200)]
# (family, ip route add words, table, dst/len, gateway or None, dev)
ROUTES = [
    (4, "198.18.7.0/24 via 198.18.5.2 dev kv0", 254, "198.18.7.0/24", "198.18.5.2", "kv0"),
    (4, "default via 198.18.5.254 dev kv0", 254, "0.0.0.0/0", "198.18.5.254", "kv0"),
    (4, "198.18.8.0/24 dev kv1 table 100", 100, "198.18.8.0/24", None, "kv1"),
    # Above 255: the table is only in RTA_TABLE (rtm_table says RT_TABLE_COMPAT).
    (4, "198.18.9.0/24 via 198.18.5.2 dev kv0 table 1000", 1000, "198.18.9.0/24",
     "198.18.5.2", "kv0"),
    (6, "2001:db8:7::/64 via 2001:db8:5::2 dev kv0", 254, "2001:db8:7::/64", "2001:db8:5::2",
     "kv0"),
    (6, "2001:db8:8::/64 dev kv1 table 100", 100, "2001:db8:8::/64", None, "kv1"),
    (6, "2001:db8:9::/64 dev kv1 table 1000", 1000, "2001:db8:9::/64", None, "kv1"),
]
ROUTE_TABLES = [254, 255, 100, 1000]
MULTICAST = [("kv0", "03:c1:00:00:00:01"), ("kv1", "03:c1:00:00:00:02")]
OWNED = [1, 3]
BIG_TABLE, BIG_RULES = "knbig", 400
BIG_SET = ["198.18.%d.%d" % (128 + i // 250, 1 + i % 250) for i in range(600)]
# (rule words after "iptables-legacy", its destination or None)
IPTABLES = [
    ("-P INPUT DROP", None),
    ("-A INPUT -i lo -j ACCEPT", None),
    ("-A INPUT -d 198.18.5.100/32 -i kv0 -p tcp --dport 80 -j REJECT", "198.18.5.100"),
    ("-A INPUT -d 198.18.5.101/32 -j LOG --log-prefix kn", "198.18.5.101"),
    ("-N knchain", None),
    ("-A knchain -d 198.18.5.102/32 -j DROP", "198.18.5.102"),
    ("-A INPUT -j knchain", None),
    ("-A OUTPUT -d 198.18.5.200/32 -j DROP", "198.18.5.200"),
    ("-A FORWARD -d 198.18.5.201/32 -j DROP", "198.18.5.201"),
]
INPUT_DESTINATIONS = ["0.0.0.0", "198.18.5.100", "198.18.5.101", "0.0.0.0"]  # then the policy


# -- inside the namespace ------------------------------------------------------

class Recorder:
    """Replaces netlink._socket_for: every conversation's request and datagrams."""

    def __init__(self, netlink):
        self.netlink = netlink
        self.real = netlink._socket_for
        self.exchanges = []
        self.after_recv = None  # called with (exchange number, datagram number)

    def __call__(self, protocol):
        recorder, real = self, self.real(protocol)
        exchange = {"protocol": protocol, "sent": None, "received": []}
        self.exchanges.append(exchange)

        class Recording:
            def __enter__(self):
                self.sock = real.__enter__()
                return self

            def __exit__(self, *exc):
                return real.__exit__(*exc)

            def sendto(self, data, address):
                exchange["sent"] = data.hex()
                return self.sock.sendto(data, address)

            def recv(self, size):
                data = self.sock.recv(size)
                exchange["received"].append(data.hex())
                if recorder.after_recv:
                    recorder.after_recv(len(recorder.exchanges), len(exchange["received"]))
                return data

        return Recording()

    def record(self, call, function, *args):
        """Run function(*args) through recording sockets: the recording, and
        the result or the OSError's errno."""
        self.exchanges = []
        self.netlink._socket_for = self
        try:
            outcome = {"returned": repr(function(*args))}
        except OSError as error:
            outcome = {"errno": error.errno}
        finally:
            self.netlink._socket_for = self.real
            self.after_recv = None
        return dict(call=call, exchanges=self.exchanges, **outcome)


COMMANDS = []


def sh(*argv, input=None):
    COMMANDS.append({"argv": list(argv), "input": input} if input else " ".join(argv))
    result = subprocess.run(argv, input=input, text=True, capture_output=True)
    if result.returncode != 0:
        raise SystemExit("failed: %s\n%s" % (" ".join(argv), result.stderr))
    return result.stdout


def ip_json(*args):
    return json.loads(subprocess.run(["ip", "-j", *args], capture_output=True, text=True,
                                     check=True).stdout or "[]")


ADDRESS_KEYS = {"family", "local", "prefixlen", "label"}
ROUTE_KEYS = {"dst", "gateway", "dev", "scope", "type", "table"}


def addresses_listed(family):
    """ip -j addr show, trimmed to what the parser returns: {ifindex, ifname,
    addr_info: [{family, local, prefixlen, label, <flag>: true, ...}]}."""
    return [{"ifindex": link["ifindex"], "ifname": link["ifname"],
             "addr_info": [{k: v for k, v in a.items() if k in ADDRESS_KEYS or v is True}
                           for a in link["addr_info"]]}
            for link in ip_json(family, "addr", "show")]


def routes_listed(family, table):
    return [{k: v for k, v in route.items() if k in ROUTE_KEYS}
            for route in ip_json(family, "route", "show", "table", str(table))]


def build_state():
    from clusterip.backends import nft
    from unit.record_nft_listings import OLD_SET
    from unit.test_nft_builders import NIC_MAC, PLACEMENT, PLACEMENT6, make, make6

    sh("sysctl", "-q", "-w", "net.ipv6.conf.all.disable_ipv6=0",
       "net.ipv6.conf.default.disable_ipv6=0")
    sh("ip", "link", "set", "lo", "up")
    sh("ip", "link", "add", "kv0", "type", "veth", "peer", "name", "kv1")
    # No link-local address on kv0 (its DAD would end between a recording and
    # the listing); kv1's stays tentative for the minute of its retransmit time.
    sh("sysctl", "-q", "-w", "net.ipv6.conf.kv0.addr_gen_mode=1",
       "net.ipv6.neigh.kv1.retrans_time_ms=60000")
    sh("ip", "link", "set", "kv0", "up")
    sh("ip", "link", "set", "kv1", "up")
    for dev, address, extra, _ in ADDRESSES:
        sh("ip", "addr", "add", address, "dev", dev, *extra)
        if "dadfailed" in _:
            for _attempt in range(50):  # DAD starts within rtr_solicit_delay (1 s)
                if any(a.get("dadfailed") for link in ip_json("addr", "show", "dev", dev)
                       for a in link["addr_info"]):
                    break
                time.sleep(0.1)
            else:
                raise SystemExit("%s on %s never became dadfailed" % (address, dev))
    sh("ip", "-batch", "-", input="".join("addr add %s dev kv1\n" % a for a in MANY4)
       + "".join("addr add %s dev kv1 nodad\n" % a for a in MANY6))
    for family, words, _, _, _, _ in ROUTES:
        sh("ip", "-%d" % family, "route", "add", *words.split())
    for dev, mac in MULTICAST:
        sh("ip", "maddr", "add", mac, "dev", dev)
    scripts = [nft.build_create_script(make(), PLACEMENT, set(OWNED)),
               nft.build_create_script(make6(), PLACEMENT6, set(OWNED), NIC_MAC),
               OLD_SET % nft.hash_expression(make()),
               "add table ip %s\nadd chain ip %s c\n" % (BIG_TABLE, BIG_TABLE)
               + "".join("add rule ip %s c ip daddr 198.18.%d.%d counter\n"
                         % (BIG_TABLE, 200 + i // 250, 1 + i % 250) for i in range(BIG_RULES))
               + "add set ip %s many { type ipv4_addr; }\n" % BIG_TABLE
               + "add element ip %s many { %s }\n" % (BIG_TABLE, ", ".join(BIG_SET))]
    for script in scripts:
        sh("nft", "-f", "-", input=script)
    for words, _ in IPTABLES:
        sh("iptables-legacy", *words.split())
    sh("ping", "-c", "2", "-i", "0.2", "-q", "127.0.0.1")  # counters for the lo rule
    return {"ip": nft.table_name("198.18.0.100"), "ip6": nft.table_name(make6().vip),
            "old": "old"}


def inside(out_dir):
    import _socket

    from clusterip.kernel import iptables, link, netlink, nfnl, rtnl

    tables = build_state()
    links = {entry["ifname"]: entry["ifindex"] for entry in ip_json("link", "show")}
    rec = Recorder(netlink)
    dumps = {
        "addresses4": rec.record("rtnl.addresses(AF_INET)", rtnl.addresses, _socket.AF_INET),
        "addresses6": rec.record("rtnl.addresses(AF_INET6)", rtnl.addresses, _socket.AF_INET6),
        "routes4": rec.record("rtnl.routes(AF_INET)", rtnl.routes, _socket.AF_INET),
        "routes6": rec.record("rtnl.routes(AF_INET6)", rtnl.routes, _socket.AF_INET6),
    }
    for family in ("ip", "ip6", "arp"):
        dumps["tables-" + family] = rec.record("nfnl.table_names(%r)" % family,
                                               nfnl.table_names, family)
    for family, table in (("ip", tables["ip"]), ("arp", tables["ip"]), ("ip6", tables["ip6"]),
                          ("ip", BIG_TABLE), ("ip", "nosuch")):
        dumps["rules-%s-%s" % (family, table)] = rec.record(
            "nfnl.rules(%r, %r)" % (family, table), nfnl.rules, family, table)
    for family, table in (("ip", tables["ip"]), ("ip6", tables["ip6"]), ("ip", "old"),
                          ("ip", BIG_TABLE), ("ip", "nosuch")):
        dumps["userdata-%s-%s" % (family, table)] = rec.record(
            "nfnl.set_userdata(%r, %r)" % (family, table), nfnl.set_userdata, family, table)
    for family, table, name in (("ip", tables["ip"], "owned"), ("ip6", tables["ip6"], "owned"),
                                ("ip", BIG_TABLE, "many"), ("ip", "nosuch", "owned"),
                                ("ip", tables["ip"], "nosuch")):
        dumps["keys-%s-%s-%s" % (family, table, name)] = rec.record(
            "nfnl.set_keys(%r, %r, %r)" % (family, table, name), nfnl.set_keys,
            family, table, name)
    # What independent tools list, right after the recordings above.
    listed = {
        "links": links,
        "addresses4": addresses_listed("-4"),
        "addresses6": addresses_listed("-6"),
        "routes4": {t: routes_listed("-4", t) for t in ROUTE_TABLES},
        "routes6": {t: routes_listed("-6", t) for t in ROUTE_TABLES},
        "maddr": [{"ifname": entry["ifname"],
                   "link": [m["link"] for m in entry["maddr"] if "link" in m]}
                  for entry in ip_json("maddr", "show")],
        "nft": {"%s %s" % ft: json.loads(sh("nft", "-j", "list", "table", *ft))
                for ft in (("ip", tables["ip"]), ("arp", tables["ip"]),
                           ("ip6", tables["ip6"]), ("ip", BIG_TABLE))},
        "nft_tables": sh("nft", "list", "tables").splitlines(),
        "iptables": sh("iptables-legacy", "-S").splitlines(),
    }
    kv0 = links["kv0"]
    dumps["add-existing"] = rec.record("rtnl.add_address(kv0, 198.18.5.1, 24)",
                                       rtnl.add_address, kv0, bytes([198, 18, 5, 1]), 24)
    dumps["delete-absent"] = rec.record("rtnl.delete_address(kv0, 198.18.5.250, 24)",
                                        rtnl.delete_address, kv0, bytes([198, 18, 5, 250]), 24)
    dumps["add-no-device"] = rec.record("rtnl.add_address(99999, 198.18.5.251, 24)",
                                        rtnl.add_address, 99999, bytes([198, 18, 5, 251]), 24)
    dumps["add-new"] = rec.record("rtnl.add_address(kv0, 198.18.5.77, 24, label=kv0:cip)",
                                  rtnl.add_address, kv0, bytes([198, 18, 5, 77]), 24,
                                  bytes([198, 18, 5, 255]), "kv0:cip")
    dumps["delete-new"] = rec.record("rtnl.delete_address(kv0, 198.18.5.77, 24)",
                                     rtnl.delete_address, kv0, bytes([198, 18, 5, 77]), 24)

    # An interrupted dump, for real: an address added between the first and
    # the second datagram of the first pass changes the kernel's address
    # generation, so it marks the rest of that pass NLM_F_DUMP_INTR and
    # netlink.dump() reads it again.
    def add_mid_dump(exchange, datagram):
        if (exchange, datagram) == (1, 1):
            sh("ip", "addr", "add", "198.18.5.78/24", "dev", "kv0")
    rec.after_recv = add_mid_dump
    dumps["addresses4-interrupted"] = rec.record(
        "rtnl.addresses(AF_INET), 198.18.5.78/24 added on kv0 after the first datagram",
        rtnl.addresses, _socket.AF_INET)

    listed_after = {"addresses4": addresses_listed("-4")}

    info, entries = iptables.table_buffers("filter")
    sh("ping", "-c", "2", "-i", "0.2", "-q", "127.0.0.1")  # counters move, rules do not
    info2, entries2 = iptables.table_buffers("filter")
    with open(link.DEV_MCAST, encoding="ascii") as f:
        dev_mcast = f.read()
    dumps["iptables-filter"] = {"info": info.hex(), "entries": entries.hex(),
                                "info-later": info2.hex(), "entries-later": entries2.hex()}
    dumps["dev_mcast"] = dev_mcast

    state = {
        "made": {"by": "tests/unit/record_kernel_dumps.py", "kernel": platform.release(),
                 "date": datetime.date.today().isoformat(),
                 "nft": sh("nft", "--version").strip(),
                 "iptables": sh("iptables-legacy", "--version").strip(),
                 "commands": list(COMMANDS)},
        "declared": {
            "addresses": ADDRESSES, "labels": [[d, a, label] for (d, a), label in LABELS.items()],
            "many4": MANY4, "many6": MANY6, "added_mid_dump": ["kv0", "198.18.5.78/24"],
            "routes": ROUTES, "route_tables": ROUTE_TABLES, "multicast": MULTICAST,
            "nft_tables": tables, "owned": OWNED, "big_table": BIG_TABLE,
            "big_rules": BIG_RULES, "big_set": BIG_SET, "iptables": IPTABLES,
            "input_destinations": INPUT_DESTINATIONS},
        "listed": listed,
        "listed_after_interrupt": listed_after,
    }
    os.makedirs(out_dir, exist_ok=True)
    for name, document, indent in (("state.json", state, 1), ("dumps.json", dumps, None)):
        with open(os.path.join(out_dir, name), "w", encoding="utf-8") as f:
            json.dump(document, f, indent=indent, sort_keys=True)
            f.write("\n")


def main():
    if sys.argv[1:2] == ["--inside"]:
        return inside(sys.argv[2])
    ns = "knrec" + uuid.uuid4().hex[:8]
    subprocess.run(["ip", "netns", "add", ns], check=True)
    try:
        subprocess.run(["ip", "netns", "exec", ns, sys.executable, os.path.abspath(__file__),
                        "--inside", OUT_DIR], check=True)
    finally:
        subprocess.run(["ip", "netns", "delete", ns], check=False)
    print("recorded the kernel's answers (%s) in %s" % (platform.release(), OUT_DIR))


if __name__ == "__main__":
    main()
