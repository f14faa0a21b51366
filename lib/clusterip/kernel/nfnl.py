"""Read-only nfnetlink: one nft table's rules, set user data and set elements.

Why: a cloned instance's monitor runs every few seconds on every node, and
reading its tables through libnftables costs ~9 ms of a ~20 ms monitor (the
Python binding imports json and ctypes, then a context loads the library).
The same facts come back from two netlink dumps in well under a millisecond.
This module does not interpret rules: the nft backend compares their bytes
with those it saw at its last full check (see NftBackend).
"""

import errno
import posix  # not os: see clusterip.agent.environment
import struct

from clusterip.kernel import netlink


def _socket_htons(value):
    return int.from_bytes(value.to_bytes(2, "big"), "little") if struct.pack("=H", 1) == \
        b"\x01\x00" else value

NETLINK_NETFILTER = 12
NFNL_SUBSYS_NFTABLES = 10
NFT_MSG_GETTABLE, NFT_MSG_GETRULE, NFT_MSG_GETSET, NFT_MSG_GETSETELEM = 1, 7, 10, 13
NFTA_TABLE_NAME = 1
NFTA_SET_TABLE, NFTA_SET_NAME, NFTA_SET_USERDATA = 1, 2, 13
NFTA_RULE_TABLE, NFTA_RULE_CHAIN, NFTA_RULE_EXPRESSIONS = 1, 2, 4
NFTA_SET_ELEM_LIST_TABLE, NFTA_SET_ELEM_LIST_SET, NFTA_SET_ELEM_LIST_ELEMENTS = 1, 2, 3
NFTA_LIST_ELEM = 1
NFTA_SET_ELEM_KEY, NFTA_SET_ELEM_TIMEOUT, NFTA_SET_ELEM_EXPIRATION = 1, 4, 5
NFT_MSG_NEWSETELEM, NFT_MSG_DELSETELEM = 12, 14
NLA_F_NESTED = 0x8000
NFTA_DATA_VALUE = 1
# nft's family names -> NFPROTO_*.
FAMILIES = {"inet": 1, "ip": 2, "arp": 3, "netdev": 5, "bridge": 7, "ip6": 10}

_NFGENMSG = struct.Struct("=BBH")  # family, version, resource id


def _dump(family, message, attributes):
    payload = _NFGENMSG.pack(FAMILIES[family], 0, 0) + b"".join(
        netlink.attribute(kind, value) for kind, value in attributes)
    return [netlink.attributes(body, _NFGENMSG.size) for _, body in
            netlink.dump(NETLINK_NETFILTER, NFNL_SUBSYS_NFTABLES << 8 | message, payload)]


def _name(text):
    return text.encode() + b"\0"


def table_names(family):
    """Names of the family's tables; OSError when the kernel has no nf_tables."""
    return [attrs[NFTA_TABLE_NAME].rstrip(b"\0").decode(errors="replace")
            for attrs in _dump(family, NFT_MSG_GETTABLE, ()) if NFTA_TABLE_NAME in attrs]


def rules(family, table):
    """[(chain, expressions as the kernel encodes them)] in order; [] without the table."""
    wanted = _name(table)
    # The kernel filters the dump by table; the check below keeps it exact anyway.
    return [(attrs.get(NFTA_RULE_CHAIN, b""), attrs.get(NFTA_RULE_EXPRESSIONS, b""))
            for attrs in _dump(family, NFT_MSG_GETRULE, [(NFTA_RULE_TABLE, wanted)])
            if attrs.get(NFTA_RULE_TABLE) == wanted]


def set_userdata(family, table):
    """{set name: the user data nft stored with it (b"" without)}; {} without the table.

    nft keeps a set's ``typeof`` declaration there, which decides whether nft
    can print the set at all (see clusterip.backends.nft.lists_safely).
    """
    wanted = _name(table)
    try:
        return {attrs[NFTA_SET_NAME].rstrip(b"\0").decode(errors="replace"):
                attrs.get(NFTA_SET_USERDATA, b"")
                for attrs in _dump(family, NFT_MSG_GETSET, [(NFTA_SET_TABLE, wanted)])
                if attrs.get(NFTA_SET_TABLE) == wanted and NFTA_SET_NAME in attrs}
    except FileNotFoundError:
        return {}


def set_keys(family, table, name):
    """The keys of a set's elements as bytes; OSError(ENOENT) without the table or set."""
    return list(set_elements(family, table, name))


def set_elements(family, table, name):
    """{key bytes: ms until the element expires, None when it never does};
    OSError(ENOENT) without the table or set.  The kernel leaves expired
    elements out of the dump before its garbage collector frees them."""
    found = {}
    for attrs in _dump(family, NFT_MSG_GETSETELEM, [(NFTA_SET_ELEM_LIST_TABLE, _name(table)),
                                                    (NFTA_SET_ELEM_LIST_SET, _name(name))]):
        elements = attrs.get(NFTA_SET_ELEM_LIST_ELEMENTS, b"")
        for kind, element in netlink.attribute_items(elements):
            fields = netlink.attributes(element, 0)
            key = fields.get(NFTA_SET_ELEM_KEY)
            if kind == NFTA_LIST_ELEM and key is not None:
                value = netlink.attributes(key, 0).get(NFTA_DATA_VALUE)
                if value is not None:
                    expiration = fields.get(NFTA_SET_ELEM_EXPIRATION)
                    found[value] = None if expiration is None or len(expiration) != 8 \
                        else struct.unpack("!Q", expiration)[0]
    return found


def renew_element(family, table, name, key, timeout_ms):
    """Give an element of a set with timeouts ``timeout_ms`` to live again,
    atomically: its deletion and its addition with the new timeout in one
    transaction, so a packet meets the old element or the new one, never
    none.  Every kernel with nf_tables does this (an update of an existing
    element's timeout is newer than Linux 6.1).  OSError(ENOENT) when the
    element is gone (expired, deleted): then nothing is added."""
    nfgen = _NFGENMSG.pack(FAMILIES[family], 0, 0)
    where = (netlink.attribute(NFTA_SET_ELEM_LIST_TABLE, _name(table))
             + netlink.attribute(NFTA_SET_ELEM_LIST_SET, _name(name)))
    data = netlink.attribute(NFTA_SET_ELEM_KEY | NLA_F_NESTED,
                             netlink.attribute(NFTA_DATA_VALUE, key))

    def elements(element):
        return where + netlink.attribute(
            NFTA_SET_ELEM_LIST_ELEMENTS | NLA_F_NESTED,
            netlink.attribute(NFTA_LIST_ELEM | NLA_F_NESTED, element))

    timeout = netlink.attribute(NFTA_SET_ELEM_TIMEOUT, struct.pack("!Q", timeout_ms))
    changes = [(NFNL_SUBSYS_NFTABLES << 8 | NFT_MSG_DELSETELEM, 0, nfgen + elements(data)),
               (NFNL_SUBSYS_NFTABLES << 8 | NFT_MSG_NEWSETELEM, netlink.NLM_F_CREATE,
                nfgen + elements(data + timeout))]
    errors = netlink.batch(NETLINK_NETFILTER, _batch_begin(), changes, _batch_end())
    failed = [error for error in errors if error]
    if failed:
        raise OSError(failed[0], posix.strerror(failed[0]))


NFNL_MSG_BATCH_BEGIN, NFNL_MSG_BATCH_END = 0x10, 0x11
NFT_MSG_NEWTABLE, NFT_MSG_NEWCHAIN = 0, 3
NFTA_CHAIN_TABLE, NFTA_CHAIN_NAME, NFTA_CHAIN_HOOK, NFTA_CHAIN_TYPE = 1, 3, 4, 7
NFTA_HOOK_HOOKNUM, NFTA_HOOK_PRIORITY = 1, 2
PROBE_TABLE = "clusterip_probe"


def base_chains_work(hooks, chain_type="filter"):
    """Whether the kernel could create a filter base chain at each (family,
    hook number) in ``hooks``: nf_tables may be built without a family's
    chain types (Debian's user-mode-linux 6.1 has none for ip, ip6 and arp)
    and then refuses such a chain (ENOENT).  Checked in a batch that is
    never committed, so nothing is created, and nothing is seen by ``nft
    monitor``.  OSError when nf_tables cannot be asked (EPERM without root).
    """
    changes = []
    for number, (family, hooknum) in enumerate(hooks):
        nfgen = _NFGENMSG.pack(FAMILIES[family], 0, 0)
        table = netlink.attribute(NFTA_TABLE_NAME, _name(PROBE_TABLE))
        hook = netlink.attribute(NFTA_HOOK_HOOKNUM, struct.pack("!I", hooknum)) \
            + netlink.attribute(NFTA_HOOK_PRIORITY, struct.pack("!i", 0))
        chain = (netlink.attribute(NFTA_CHAIN_TABLE, _name(PROBE_TABLE))
                 + netlink.attribute(NFTA_CHAIN_NAME, _name("probe%d" % number))
                 + netlink.attribute(NFTA_CHAIN_HOOK, hook)
                 + netlink.attribute(NFTA_CHAIN_TYPE, _name(chain_type)))
        for message, body in ((NFT_MSG_NEWTABLE, table), (NFT_MSG_NEWCHAIN, chain)):
            changes.append((NFNL_SUBSYS_NFTABLES << 8 | message,
                            netlink.NLM_F_ACK | netlink.NLM_F_CREATE, nfgen + body))
    errors = netlink.unfinished_batch(NETLINK_NETFILTER, _batch_begin(), changes)
    if any(error in (errno.EPERM, errno.EACCES) for error in errors):
        raise OSError(errno.EPERM, posix.strerror(errno.EPERM))
    return not any(errors)


def _batch_begin():
    return NFNL_MSG_BATCH_BEGIN, _NFGENMSG.pack(0, 0, _socket_htons(NFNL_SUBSYS_NFTABLES))


def _batch_end():
    return NFNL_MSG_BATCH_END, _NFGENMSG.pack(0, 0, _socket_htons(NFNL_SUBSYS_NFTABLES))


def available():
    """Whether the kernel answers nf_tables requests (False: no nf_tables)."""
    try:
        table_names("ip")
    except OSError:
        return False
    return True
