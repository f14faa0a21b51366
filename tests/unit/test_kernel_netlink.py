"""netlink framing on the kernel's recorded answers: an interrupted dump is
read again, a negative acknowledgement is OSError(errno), and damaged
datagrams end in a clean result or OSError, never a hang or another error."""

import _socket
import collections
import errno
import signal

import pytest

from clusterip.kernel import netlink, nfnl, rtnl
from unit.kernel_recordings import exchanges, headers, replay, state

NLM_F_DUMP_INTR = 0x10


def packed(text):
    return _socket.inet_aton(text)


def test_the_recording_holds_a_dump_the_kernel_marked_interrupted():
    first, second = exchanges("addresses4-interrupted")
    assert any(flags & NLM_F_DUMP_INTR for d in first[1] for _, flags in headers(d))
    assert not any(flags & NLM_F_DUMP_INTR for d in second[1] for _, flags in headers(d))


def test_an_interrupted_dump_is_read_again(monkeypatch):
    fake = replay(monkeypatch, exchanges("addresses4-interrupted"))
    found = rtnl.addresses(_socket.AF_INET)
    fake.check()  # both passes read
    # The second pass: the address added during the first is there, and
    # everything ip listed afterwards.
    dev, address = state()["declared"]["added_mid_dump"]
    links = state()["listed"]["links"]
    ip, prefixlen = address.split("/")
    assert (links[dev], int(prefixlen), packed(ip)) in {f[:3] for f in found}
    listed = collections.Counter((link["ifindex"], a["prefixlen"], packed(a["local"]))
                                 for link in state()["listed_after_interrupt"]["addresses4"]
                                 for a in link["addr_info"])
    assert collections.Counter(f[:3] for f in found) == listed


def test_a_dump_interrupted_every_time_is_oserror(monkeypatch):
    interrupted = exchanges("addresses4-interrupted")[0]
    fake = replay(monkeypatch, [interrupted] * netlink.DUMP_ATTEMPTS)
    with pytest.raises(OSError) as raised:
        rtnl.addresses(_socket.AF_INET)
    assert raised.value.errno == errno.EINTR
    fake.check()


def test_the_last_attempt_may_be_the_complete_one(monkeypatch):
    first, second = exchanges("addresses4-interrupted")
    fake = replay(monkeypatch, [first] * (netlink.DUMP_ATTEMPTS - 1) + [second])
    assert rtnl.addresses(_socket.AF_INET)
    fake.check()


@pytest.mark.parametrize("recording, call, wanted", [
    ("add-existing", lambda kv0: rtnl.add_address(kv0, packed("198.18.5.1"), 24), errno.EEXIST),
    ("delete-absent", lambda kv0: rtnl.delete_address(kv0, packed("198.18.5.250"), 24),
     errno.EADDRNOTAVAIL),
    ("add-no-device", lambda kv0: rtnl.add_address(99999, packed("198.18.5.251"), 24),
     errno.ENODEV),
])
def test_a_negative_acknowledgement_is_oserror_with_its_errno(monkeypatch, recording, call,
                                                              wanted):
    fake = replay(monkeypatch, exchanges(recording))
    with pytest.raises(OSError) as raised:
        call(state()["listed"]["links"]["kv0"])
    assert raised.value.errno == wanted
    fake.check()  # and the request sent is the one the kernel answered


def test_a_positive_acknowledgement_is_success(monkeypatch):
    kv0 = state()["listed"]["links"]["kv0"]
    fake = replay(monkeypatch, exchanges("add-new") + exchanges("delete-new"))
    rtnl.add_address(kv0, packed("198.18.5.77"), 24, packed("198.18.5.255"), "kv0:cip")
    rtnl.delete_address(kv0, packed("198.18.5.77"), 24)
    fake.check()


# -- damaged datagrams ----------------------------------------------------

CALLS = {
    "addresses4": lambda: rtnl.addresses(_socket.AF_INET),
    "addresses6": lambda: rtnl.addresses(_socket.AF_INET6),
    "routes4": lambda: rtnl.routes(_socket.AF_INET),
    "routes6": lambda: rtnl.routes(_socket.AF_INET6, 255),
    "tables-ip": lambda: nfnl.table_names("ip"),
    "keys-ip-%s-owned" % state()["declared"]["nft_tables"]["ip"]:
        lambda: nfnl.set_keys("ip", state()["declared"]["nft_tables"]["ip"], "owned"),
    "userdata-ip-old": lambda: nfnl.set_userdata("ip", "old"),
    "rules-ip-" + state()["declared"]["nft_tables"]["ip"]:
        lambda: nfnl.rules("ip", state()["declared"]["nft_tables"]["ip"]),
}


def damaged(datagram):
    """The datagram cut short at many places, and with single bytes of its
    headers and lengths changed."""
    step = max(1, len(datagram) // 120)
    for end in range(0, len(datagram), step):
        yield datagram[:end]
    for at in range(0, min(len(datagram), 160)):
        for value in (0x00, 0x04, 0xff):
            if datagram[at] != value:
                yield datagram[:at] + bytes([value]) + datagram[at + 1:]


class Hang(Exception):
    pass


def _alarm(*_):
    raise Hang("a parser is looping")


@pytest.mark.parametrize("recording", sorted(CALLS))
def test_a_damaged_datagram_is_a_clean_result_or_oserror(monkeypatch, recording):
    (request, datagrams), = exchanges(recording)
    previous = signal.signal(signal.SIGALRM, _alarm)
    try:
        for bad in damaged(datagrams[0]):
            fake = replay(monkeypatch, [(request, [bad] + datagrams[1:])] * netlink.DUMP_ATTEMPTS,
                          check_requests=False)
            signal.setitimer(signal.ITIMER_REAL, 2.0)
            try:
                result = CALLS[recording]()
            except OSError:
                continue
            except Exception as error:
                raise AssertionError("%s on %r (%d bytes): %r" % (
                    recording, bad[:64].hex(), len(bad), error)) from error
            finally:
                signal.setitimer(signal.ITIMER_REAL, 0)
            assert isinstance(result, (list, dict))
            assert len(fake.sockets) <= netlink.DUMP_ATTEMPTS
    finally:
        signal.signal(signal.SIGALRM, previous)


def test_garbage_is_a_clean_result_or_oserror(monkeypatch):
    import random

    chance = random.Random(12)
    for _ in range(300):
        garbage = bytes(chance.randrange(256) for _ in range(chance.randrange(1, 200)))
        for call in CALLS.values():
            replay(monkeypatch, [(b"", [garbage])] * netlink.DUMP_ATTEMPTS,
                   check_requests=False)
            try:
                assert isinstance(call(), (list, dict))
            except OSError:
                pass
