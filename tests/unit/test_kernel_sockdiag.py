"""sock_diag (clusterip.kernel.sockdiag): the dump request's bytes, and the
kernel's answers as recorded in a network namespace (Linux 6.18): on
10.9.0.1, a connection closed by its client (the server's side in
CLOSE_WAIT, the client's FIN_WAIT2 filtered out by the kernel), and an IPv4
client of a server listening on "::" (its side an AF_INET6 socket with the
address mapped)."""

import _socket
import errno

import pytest

from clusterip.kernel import netlink, sockdiag

VIP = _socket.inet_aton("10.9.0.1")
VIP6 = _socket.inet_pton(_socket.AF_INET6, "2001:db8::100")
AF_INET, AF_INET6 = _socket.AF_INET, _socket.AF_INET6

# What the kernel answered the two requests of serving_count(VIP).
RECORDED = {
    AF_INET: [
        # The client of the "::" server: ESTABLISHED, 10.9.0.1:40002 -> :5001.
        "020100009c4213890a0900010000000000000000000000000a0900010000000000000000000000000000"
        "00001c0000000000000000000000000000000000000000000000a6d00600050008000000000008000f00"
        "000000000c00150001000000000000000600160052000000",
        # The server's side of the closed connection: CLOSE_WAIT, :5000 <- :40001.
        "0208000013889c410a0900010000000000000000000000000a0900010000000000000000000000000000"
        "00001d0000000000000000000000010000000000000000000000a5d00600050008000100000008000f00"
        "000000000c00150001000000000000000600160052000000",
    ],
    AF_INET6: [
        # The "::" server's side: ESTABLISHED, ::ffff:10.9.0.1:5001 <- :40002.
        "0a01000013899c4200000000000000000000ffff0a09000100000000000000000000ffff0a0900010000"
        "00001e0000000000000000000000000000000000000000000000a7d00600050008000000000008000f00"
        "000000000c00150001000000000000000600160012000000",
    ],
}


def recorded(family):
    return [(sockdiag.SOCK_DIAG_BY_FAMILY, bytes.fromhex(body)) for body in RECORDED[family]]


def test_the_request_asks_for_tcp_in_the_serving_states_on_the_local_address():
    request = sockdiag.dump_request(AF_INET, VIP)
    assert request == bytes.fromhex(
        "02060000"  # AF_INET, IPPROTO_TCP, no extensions, pad
        "1a1b0000"  # states: 1 3 4 8 9 11 12 (not 5 FIN_WAIT2, 6 TIME_WAIT, 10 LISTEN)
        + "00" * 48  # inet_diag_sockid: all zero (a dump)
        + "14000100"  # attribute INET_DIAG_REQ_BYTECODE, 20 bytes
        "07101400"  # S_COND (local address); yes: 16 (accept), no: 20 (reject)
        "02200000ffffffff"  # hostcond: AF_INET, /32, 2 bytes of padding, port -1 (any)
        "0a090001")
    six = sockdiag.dump_request(AF_INET6, VIP6)
    assert six[:2] == bytes([AF_INET6, 6]) and six.endswith(VIP6)
    # 32 bytes of bytecode attribute; yes: 28, no: 32; AF_INET6, /128.
    assert six[56:66] == bytes.fromhex("20000100" "071c2000" "0a80")


def test_the_states_are_the_ones_with_data_or_a_fin_of_ours_unacked():
    assert sorted(sockdiag.SERVING_STATES) == [1, 3, 4, 8, 9, 11, 12]
    assert sockdiag.STATE_MASK == 0x1b1a


def test_the_recorded_answers_parse_to_family_state_and_local_address():
    assert sockdiag.parse_sockets(recorded(AF_INET)) == [(AF_INET, 1, VIP), (AF_INET, 8, VIP)]
    # The mapped address comes back as the IPv4 address it maps.
    assert sockdiag.parse_sockets(recorded(AF_INET6)) == [(AF_INET6, 1, VIP)]


def fake_dump(monkeypatch, answers):
    """netlink.dump replaced: answers[family], and the requests recorded."""
    requests = []

    def dump(protocol, kind, payload):
        assert (protocol, kind) == (sockdiag.NETLINK_SOCK_DIAG, sockdiag.SOCK_DIAG_BY_FAMILY)
        requests.append(payload)
        answer = answers[payload[0]]
        if isinstance(answer, OSError):
            raise answer
        return answer
    monkeypatch.setattr(netlink, "dump", dump)
    return requests


def test_an_ipv4_vip_is_counted_over_both_families(monkeypatch):
    requests = fake_dump(monkeypatch, {AF_INET: recorded(AF_INET), AF_INET6: recorded(AF_INET6)})
    assert sockdiag.serving_count(VIP) == 3
    assert [r[0] for r in requests] == [AF_INET, AF_INET6]
    # Both ask with the IPv4 condition: the kernel matches mapped addresses to it.
    assert all(r.endswith(VIP) and r[64] == AF_INET for r in requests)


def test_an_ipv6_vip_is_counted_over_ipv6_only(monkeypatch):
    requests = fake_dump(monkeypatch, {AF_INET6: []})
    assert sockdiag.serving_count(VIP6) == 0
    assert len(requests) == 1 and requests[0].endswith(VIP6)


def test_answers_the_kernel_should_have_filtered_are_not_counted(monkeypatch):
    # Another local address, and a state outside the mask (TIME_WAIT, 6).
    other = bytearray(bytes.fromhex(RECORDED[AF_INET][0]))
    other[8:12] = _socket.inet_aton("10.9.0.2")
    time_wait = bytearray(bytes.fromhex(RECORDED[AF_INET][0]))
    time_wait[1] = 6
    fake_dump(monkeypatch, {AF_INET: [(20, bytes(other)), (20, bytes(time_wait))],
                            AF_INET6: []})
    assert sockdiag.serving_count(VIP) == 0


def test_a_kernel_without_ipv6_still_counts_an_ipv4_vip(monkeypatch):
    fake_dump(monkeypatch, {AF_INET: recorded(AF_INET),
                            AF_INET6: OSError(errno.EAFNOSUPPORT, "not supported")})
    assert sockdiag.serving_count(VIP) == 2


def test_a_failing_ipv4_dump_and_a_damaged_answer_are_oserror(monkeypatch):
    fake_dump(monkeypatch, {AF_INET: OSError(errno.ENOENT, "no inet_diag")})
    with pytest.raises(OSError):
        sockdiag.serving_count(VIP)
    fake_dump(monkeypatch, {AF_INET: [(20, bytes.fromhex(RECORDED[AF_INET][0])[:40])]})
    with pytest.raises(OSError) as raised:
        sockdiag.serving_count(VIP)
    assert raised.value.errno == errno.EBADMSG
