"""The nft tables as clusterip made them before layout 2, for the upgrade tests.

Layout 1 declared the set ``owned`` as ``typeof jhash ...`` (which crashes
every nft listing: see clusterip.backends.nft.lists_safely) and counted
through ``counter name jhash ... map { k : "bucketk" }``.  A node upgraded in
place still runs such tables.  :func:`from_layout2` turns the current
agent's create script into the one the old agent loaded for the same
parameters; tests/unit/data/layout-1-ipv*.nft, written by the old agent
itself, pin the conversion (tests/unit/test_nft_builders.py).
"""

import re

_SET = re.compile(r"  set owned \{\n    typeof symhash mod \d+ offset 1\n"
                  r'    comment "keys: (?P<hash>[^"]+)"'
                  r"(?:\n    elements = (?P<elements>\{[^}]*\}))?\n"
                  r"  \}\n")
_BUCKET_CHAIN = re.compile(r'  chain bucket\d+ \{\n    counter name "bucket\d+"\n  \}\n')
_VMAP = re.compile(r"(?P<hash>jhash [^\n]*? offset 1) vmap \{ (?P<jumps>[^}]*) \}")


def from_layout2(script):
    """The layout-1 script for the same VIP, NIC, parameters and owned buckets."""
    def old_set(match):
        elements = "; elements = %s" % match["elements"] if match["elements"] else ""
        return "  set owned { typeof %s%s; }\n" % (match["hash"], elements)

    def old_counter(match):
        names = re.sub(r"(\d+) : jump (bucket\d+)", r'\1 : "\2"', match["jumps"])
        return "counter name %s map { %s }" % (match["hash"], names)

    old, sets = _SET.subn(old_set, script)
    old, vmaps = _VMAP.subn(old_counter, _BUCKET_CHAIN.sub("", old))
    if sets != 1 or vmaps != 1:
        raise ValueError("not a layout-2 create script:\n" + script)
    return old
