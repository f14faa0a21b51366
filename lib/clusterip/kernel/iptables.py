"""Read-only: one legacy iptables chain as the kernel holds it, counters zeroed.

Why: under a kernel with CLUSTERIP (<= 6.2) the monitor's full check reads
the filter table through python-iptables, whose import loads three C
libraries (~300 ms of a ~800 ms monitor under user-mode Linux, where IPaddr2
takes ~1.2 s).  The clusterip backend remembers the verdict of its last full
check with these bytes (see clusterip.memo) and, while the table is the same,
reads only them: two getsockopt calls, the way iptables-save starts.

ctypes, not the socket module: IPT_SO_GET_INFO and IPT_SO_GET_ENTRIES take the
table's name *in* the buffer they fill, which socket.getsockopt cannot pass.
"""

import ctypes
import mmap
import struct

from clusterip.kernel import opened

SOL_IP = 0
NF_INET_LOCAL_IN = 1
IPT_SO_GET_INFO, IPT_SO_GET_ENTRIES = 64, 65
IPPROTO_RAW = 255
# struct ipt_getinfo: name, valid_hooks, hook_entry[5], underflow[5], num_entries, size
_GETINFO = struct.Struct("=32sI5I5III")
# struct ipt_get_entries: name[32], size, padding to the 8-aligned entry table
_ENTRIES_HEADER = 40
# struct ipt_entry: struct ipt_ip (84 bytes), nfcache, target_offset, next_offset,
# comefrom, then struct xt_counters (two u64) - the only part traffic changes.
_NEXT_OFFSET = struct.Struct("=H")
_NEXT_OFFSET_AT, _COUNTERS_AT, _COUNTERS_END = 90, 96, 112


def _getsockopt(libc, fd, option, buffer):
    """What the kernel filled in, as a view of ``buffer``: not ``buffer.raw``,
    whose copy of a table of 10,000 rules (~1.5 MB of fresh pages) cost the
    6.1 guest's monitor as much again as the kernel's own copy."""
    length = ctypes.c_uint(len(buffer))
    if libc.getsockopt(fd, SOL_IP, option, buffer, ctypes.byref(length)) != 0:
        error = ctypes.get_errno()
        raise OSError(error, "getsockopt: %s" % error)
    return memoryview(buffer).cast("B")[:length.value]


def table_buffers(table="filter"):
    """(IPT_SO_GET_INFO's answer, IPT_SO_GET_ENTRIES' answer) for one table, as
    the kernel filled them; OSError when the table is missing."""
    libc = ctypes.CDLL(None, use_errno=True)
    with opened(2, 3, IPPROTO_RAW) as sock:  # AF_INET, SOCK_RAW
        info = ctypes.create_string_buffer(_GETINFO.pack(table.encode(), 0, *[0] * 12),
                                           _GETINFO.size)
        info = bytes(_getsockopt(libc, sock.fileno(), IPT_SO_GET_INFO, info))
        size = _GETINFO.unpack(info)[-1]
        # The entries' buffer mapped with its pages populated in one call: a
        # fresh process otherwise takes one page fault per 4 KB as the kernel
        # fills it, which for 10,000 rules (~1.5 MB) cost the 6.1 guest's
        # monitor ~100 ms (user-mode Linux traps each fault), with
        # MAP_POPULATE nothing measurable.
        pages = mmap.mmap(-1, _ENTRIES_HEADER + size,
                          flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS | mmap.MAP_POPULATE)
        pages[:36] = table.encode().ljust(32, b"\0") + struct.pack("=I", size)
        request = (ctypes.c_char * (_ENTRIES_HEADER + size)).from_buffer(pages)
        return info, _getsockopt(libc, sock.fileno(), IPT_SO_GET_ENTRIES, request)


def chain_of(info, raw, hook=NF_INET_LOCAL_IN):
    """The pure half of chain_bytes(): one built-in chain's entries out of the
    two buffers table_buffers() returns, counters zeroed, policy included."""
    fields = _GETINFO.unpack(info)
    size = fields[-1]
    first, policy = fields[2 + hook], fields[7 + hook]  # hook_entry[hook], underflow[hook]
    # Walked in place and only the chain copied: the rest of the table (a
    # firewall's 10,000 rules) is never touched.
    table = memoryview(raw)[_ENTRIES_HEADER + first:_ENTRIES_HEADER + size]
    end = policy - first  # where the policy entry starts, relative to the chain
    offset = 0
    while offset + _COUNTERS_END <= len(table):
        step = _NEXT_OFFSET.unpack_from(table, offset + _NEXT_OFFSET_AT)[0]
        if offset >= end or step == 0:
            offset += step
            break
        offset += step
    entries = bytearray(table[:offset])
    zeros = bytes(_COUNTERS_END - _COUNTERS_AT)
    at = 0
    while at + _COUNTERS_END <= len(entries):
        entries[at + _COUNTERS_AT:at + _COUNTERS_END] = zeros
        step = _NEXT_OFFSET.unpack_from(entries, at + _NEXT_OFFSET_AT)[0]
        if step == 0:
            break
        at += step
    return bytes(entries)


def chain_bytes(table="filter", hook=NF_INET_LOCAL_IN):
    """The rules of one built-in chain (default: filter INPUT, where the CLUSTERIP
    rule lives) as the kernel holds them, counters zeroed, policy included:
    equal bytes, equal rules.  Only that chain: 10,000 rules elsewhere in the
    table then cost a copy, not a loop.  OSError when the table is missing."""
    return chain_of(*table_buffers(table), hook)


def has_target(chain, name):
    """Whether any rule of chain_bytes() may jump to target ``name`` (a byte
    search: a false yes only costs the caller its full check)."""
    return name.encode() + b"\0" in chain
