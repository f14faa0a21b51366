#!/usr/bin/env python3
"""Records the nft listings and set user data the unit tests parse (root).

The JSON that libnftables prints differs between nft versions, and so may
the user data nft stores with a set.  This loads the backend's own create
scripts into a throw-away network namespace with the nft of this machine and
writes what it lists to tests/unit/data/nft-<version>/:

    nft-ip-table.json, nft-arp-table.json   make(), buckets {1, 3}
    nft-ip-table-graceful.json              make(graceful="true"), {1, 3}
    nft-ip-table-lease.json                 make(lease="30"), {1, 3}, one second
                                            after loading (elements that expire)
    nft-ip-table-lease.nft                  its text listing, which nft loads back
    nft-ip6-table.json                      make6(), {1, 3}, NIC_MAC
    userdata.json                           {"new": hex, "old": hex}: the owned
                                            set's user data in this layout and
                                            in the layout before (typeof jhash)

Run it once on each Debian release (Debian 12: nft 1.0.6, Debian 13: 1.1.3),
e.g. in a root of the other one (tests/roots.py); nft-1.1.7 came from a
Debian unstable root (debootstrap sid, with python3-pytest):

    sudo /opt/clusterip-test/bin/python3 tests/unit/record_nft_listings.py
    sudo tests/roots.py run trixie -- \
        /opt/clusterip-test/bin/python3 tests/unit/record_nft_listings.py
"""

import json
import os
import subprocess
import sys
import time
import uuid

HERE = os.path.dirname(os.path.abspath(__file__))
LIB = os.path.join(os.path.dirname(os.path.dirname(HERE)), "lib")
# Run as a script, outside pytest, whose pythonpath does not apply: the same
# two directories it names, lib/ (the library) and tests/ (unit.test_nft_builders).
sys.path[1:1] = [LIB, os.path.dirname(HERE)]

from clusterip.backends import nft  # noqa: E402
from unit.test_nft_builders import NIC_MAC, PLACEMENT, PLACEMENT6, make, make6  # noqa: E402

OLD_SET = "add table ip old\nadd set ip old owned { typeof %s; }\n"


def nft_version():
    return subprocess.run(["nft", "--version"], capture_output=True, text=True,
                          check=True).stdout.split()[1].lstrip("v")


def in_netns(ns, *argv, **kwargs):
    return subprocess.run(["ip", "netns", "exec", ns, *argv], check=True, **kwargs)


def listing(ns, family, table):
    out = in_netns(ns, "nft", "-j", "list", "table", family, table,
                   capture_output=True, text=True).stdout
    return json.loads(out)


def record(ns, out_dir):
    def load(script):
        in_netns(ns, "nft", "-f", "-", input=script, text=True)

    def write(name, document):
        with open(os.path.join(out_dir, name), "w", encoding="utf-8") as f:
            json.dump(document, f, sort_keys=True)
            f.write("\n")

    table, table6 = nft.table_name("198.18.0.100"), nft.table_name(make6().vip)
    load(nft.build_create_script(make(graceful="true"), PLACEMENT, {1, 3}))
    write("nft-ip-table-graceful.json", listing(ns, "ip", table))
    load(nft.build_create_script(make(lease="30"), PLACEMENT, {1, 3}))
    time.sleep(1)
    write("nft-ip-table-lease.json", listing(ns, "ip", table))
    text = in_netns(ns, "nft", "list", "table", "ip", table, capture_output=True,
                    text=True).stdout
    with open(os.path.join(out_dir, "nft-ip-table-lease.nft"), "w", encoding="utf-8") as f:
        f.write(text)
    load("delete table ip %s\n%s" % (table, text))  # its own listing loads back
    load(nft.build_create_script(make(), PLACEMENT, {1, 3}))
    write("nft-ip-table.json", listing(ns, "ip", table))
    write("nft-arp-table.json", listing(ns, "arp", table))
    load(nft.build_create_script(make6(), PLACEMENT6, {1, 3}, NIC_MAC))
    write("nft-ip6-table.json", listing(ns, "ip6", table6))
    load(OLD_SET % nft.hash_expression(make()))
    script = ("from clusterip.kernel import nfnl; "
              "print(nfnl.set_userdata('ip', %r)['owned'].hex())")
    userdata = {name: in_netns(ns, sys.executable, "-c", script % t, capture_output=True,
                               text=True, env=dict(os.environ, PYTHONPATH=LIB)).stdout.strip()
                for name, t in (("new", table), ("old", "old"))}
    write("userdata.json", userdata)


def main():
    version = nft_version()
    out_dir = os.path.join(HERE, "data", "nft-" + version)
    os.makedirs(out_dir, exist_ok=True)
    ns = "ciprec" + uuid.uuid4().hex[:8]
    subprocess.run(["ip", "netns", "add", ns], check=True)
    try:
        record(ns, out_dir)
    finally:
        subprocess.run(["ip", "netns", "delete", ns], check=False)
    print("recorded nft %s listings in %s" % (version, out_dir))


if __name__ == "__main__":
    main()
