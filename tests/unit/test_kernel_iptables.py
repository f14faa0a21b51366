"""kernel.iptables.chain_of on the getsockopt buffers a legacy filter table
answered (record_kernel_dumps.py); expected values from the rules the table
was built with and what ``iptables-legacy -S`` listed."""

import _socket
import struct

from clusterip.kernel import iptables
from unit.kernel_recordings import dump, state

DECLARED = state()["declared"]
# struct ipt_entry: struct ipt_ip (src, dst, ...; 84 bytes), nfcache (4),
# target_offset (2), next_offset (2), comefrom (4), counters (2 x u64);
# then the target: u16 target_size, name[29], revision, a verdict for "".
TARGET_OFFSET, NEXT_OFFSET, COUNTERS = 88, 90, slice(96, 112)
NF_DROP, NF_INET_LOCAL_OUT = 0, 3


def buffers(later=False):
    recorded = dump("iptables-filter")
    suffix = "-later" if later else ""
    return bytes.fromhex(recorded["info" + suffix]), bytes.fromhex(recorded["entries" + suffix])


def entries(chain):
    """[ipt_entry bytes] of chain_of()'s answer, walked by next_offset."""
    found, offset = [], 0
    while offset < len(chain):
        step = struct.unpack_from("=H", chain, offset + NEXT_OFFSET)[0]
        assert step, "an entry of length 0"
        found.append(chain[offset:offset + step])
        offset += step
    assert offset == len(chain)
    return found


def destination(entry):
    return _socket.inet_ntoa(entry[4:8])


def test_filter_input_is_its_rules_and_its_policy():
    chain = entries(iptables.chain_of(*buffers()))
    listed = [line for line in state()["listed"]["iptables"] if line.startswith("-A INPUT ")]
    assert len(chain) == len(listed) + 1  # the policy is an entry of its own
    assert [destination(e) for e in chain[:-1]] == DECLARED["input_destinations"]
    policy = chain[-1]
    target = struct.unpack_from("=H", policy, TARGET_OFFSET)[0]
    assert policy[target + 2:target + 31].rstrip(b"\0") == b""  # the standard target
    # "-P INPUT DROP": a standard verdict is -NF_<verdict> - 1.
    assert "-P INPUT DROP" in state()["listed"]["iptables"]
    assert struct.unpack_from("=i", policy, target + 32)[0] == -NF_DROP - 1


def test_counters_are_zeroed_and_traffic_does_not_change_the_bytes():
    (info, raw), (info_later, raw_later) = buffers(), buffers(later=True)
    assert raw != raw_later  # the loopback rule counted the pings in between
    chain = iptables.chain_of(info, raw)
    assert chain == iptables.chain_of(info_later, raw_later)
    assert all(e[COUNTERS] == bytes(16) for e in entries(chain))


def test_only_the_asked_chain():
    chain = iptables.chain_of(*buffers())
    others = [d for rule, d in DECLARED["iptables"] if d and not rule.startswith("-A INPUT ")]
    assert others  # OUTPUT, FORWARD and a user chain hold rules of their own
    for address in others:
        assert _socket.inet_aton(address) not in chain, address
    output = entries(iptables.chain_of(*buffers(), NF_INET_LOCAL_OUT))
    assert [destination(e) for e in output[:-1]] == [
        d for rule, d in DECLARED["iptables"] if rule.startswith("-A OUTPUT ")]


def test_has_target_finds_the_targets_of_the_chain():
    chain = iptables.chain_of(*buffers())
    assert iptables.has_target(chain, "REJECT") and iptables.has_target(chain, "LOG")
    assert not iptables.has_target(chain, "CLUSTERIP")
    # DROP is only in knchain and OUTPUT: a standard verdict has no name anyway.
    assert not iptables.has_target(chain, "DROP")
