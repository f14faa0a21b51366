"""Logging, the lock, and the gratuitous ARP frame."""

import fcntl
import os
import socket
import sys
import threading
import time

import pytest

from clusterip import address, lock, ocf
from clusterip.errors import GenericError


def test_log_lines_carry_the_resource_instance(tmp_path):
    logfile = tmp_path / "ha.log"
    logger = ocf.Logger({"OCF_RESOURCE_INSTANCE": "web-ip:2", "HA_LOGFILE": str(logfile)})
    logger.info("hello")
    logger.debug("hidden")
    text = logfile.read_text()
    assert "clusterip(web-ip:2)[%d]: INFO: hello" % os.getpid() in text
    assert "hidden" not in text


def test_debug_goes_to_the_debug_log_when_enabled(tmp_path):
    debuglog = tmp_path / "debug.log"
    logger = ocf.Logger({"HA_debug": "1", "HA_DEBUGLOG": str(debuglog)})
    logger.debug("details")
    assert "DEBUG: details" in debuglog.read_text()


def test_without_syslog_or_file_lines_go_to_stderr(capsys):
    ocf.Logger({}).warning("careful")
    assert "WARNING: careful" in capsys.readouterr().err


def test_exit_reason_is_one_line(capsys):
    ocf.exit_reason({}, "two\nlines")
    assert capsys.readouterr().err == "ocf-exit-reason:two lines\n"


def test_lock_waits_then_gives_up_with_a_reason(tmp_path):
    path = str(tmp_path / "vip.lock")
    fd = os.open(path, os.O_RDWR | os.O_CREAT)
    fcntl.flock(fd, fcntl.LOCK_EX)
    started = time.monotonic()
    with pytest.raises(GenericError, match="waiting for the lock"):
        with lock.held(path, 0.2):
            pass
    assert time.monotonic() - started >= 0.2
    os.close(fd)  # the holder goes away (as a killed agent would): the lock is free
    with lock.held(path, 0.2):
        pass


def test_lock_reports_how_long_it_waited_and_was_held(tmp_path):
    path = str(tmp_path / "vip.lock")
    fd = os.open(path, os.O_RDWR | os.O_CREAT)
    fcntl.flock(fd, fcntl.LOCK_EX)
    releaser = threading.Timer(0.15, os.close, (fd,))  # another instance's start ends
    releaser.start()
    timings = {}
    with lock.held(path, 5.0, timings):
        assert set(timings) == {"waited"}
        time.sleep(0.05)
    releaser.join()
    assert 0.15 <= timings["waited"] < 1.0
    assert 0.05 <= timings["held"] < 1.0


def test_gratuitous_arp_frame_layout():
    nic_mac = bytes.fromhex("020000000001")
    cluster = bytes.fromhex("03c1c0000210")
    frame = address.build_gratuitous_arp(nic_mac, cluster, "192.0.2.10", 2)
    assert frame[:6] == b"\xff" * 6 and frame[6:12] == nic_mac
    assert frame[12:14] == b"\x08\x06"
    assert frame[14:22] == bytes.fromhex("0001080006040002")
    ip = socket.inet_aton("192.0.2.10")
    assert frame[22:28] == cluster and frame[28:32] == ip and frame[38:42] == ip


def test_unsolicited_neighbour_advertisement_frame():
    """Layout and checksum of the IPv6 announcement, the checksum computed
    here independently (RFC 4443 2.3: over the pseudo-header and the message)."""
    nic_mac, cluster = bytes.fromhex("020000000001"), bytes.fromhex("333300000100")
    frame = address.build_unsolicited_na(nic_mac, cluster, "2001:db8::100")
    vip = socket.inet_pton(socket.AF_INET6, "2001:db8::100")
    all_nodes = socket.inet_pton(socket.AF_INET6, "ff02::1")
    assert frame[:6] == bytes.fromhex("333300000001") and frame[6:12] == nic_mac
    assert frame[12:14] == b"\x86\xdd" and len(frame) == 14 + 40 + 32
    assert frame[14:22] == bytes.fromhex("6000000000203aff")  # 32 bytes, ICMPv6, hop limit 255
    assert frame[22:38] == vip and frame[38:54] == all_nodes
    icmp = frame[54:]
    assert icmp[0] == 136 and icmp[4:8] == bytes.fromhex("20000000")  # NA, Override only
    assert icmp[8:24] == vip and icmp[24:26] == b"\x02\x01" and icmp[26:32] == cluster
    pseudo = vip + all_nodes + len(icmp).to_bytes(4, "big") + b"\0\0\0\x3a"
    data = pseudo + icmp[:2] + b"\0\0" + icmp[4:]
    total = sum(int.from_bytes(data[i:i + 2], "big") for i in range(0, len(data), 2))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    assert int.from_bytes(icmp[2:4], "big") == 0xFFFF - total


def test_rtnetlink_address_messages():
    """ifaddrmsg + IFA_LOCAL + IFA_ADDRESS; IPv6 additions carry IFA_F_NODAD."""
    from clusterip.kernel import rtnl

    vip = socket.inet_pton(socket.AF_INET6, "2001:db8::100")
    message = rtnl._address_message(3, vip, 64, rtnl.IFA_F_NODAD)
    assert message[:8] == bytes([socket.AF_INET6, 64, rtnl.IFA_F_NODAD, 0]) + \
        (3).to_bytes(4, "little" if sys.byteorder == "little" else "big")
    assert rtnl.attributes(message, 8) == {rtnl.IFA_LOCAL: vip, rtnl.IFA_ADDRESS: vip}
    v4 = socket.inet_aton("192.0.2.10")
    assert rtnl.attributes(rtnl._address_message(3, v4, 24), 8) == {
        rtnl.IFA_LOCAL: v4, rtnl.IFA_ADDRESS: v4}


def _params(**overrides):
    from clusterip import params

    return params.parse({"OCF_RESKEY_" + k: v for k, v in dict({"ip": "192.0.2.10"},
                                                               **overrides).items()})


CLONE = {"CRM_meta_clone": "0", "CRM_meta_clone_max": "2", "CRM_meta_globally_unique": "true"}


@pytest.mark.parametrize("overrides, wanted", [
    ({}, 0),
    ({"noprefixroute": "true"}, 0x200),
    (CLONE, 0x200),  # IPv4 clone: no kernel prefix route with the VIP as its source
    ({"ip": "2001:db8::10"}, 0),
    ({"ip": "2001:db8::10", "preferred_lft": "0"}, 0x20),
    ({"ip": "2001:db8::10", "preferred_lft": "60"}, 0),  # deprecated later, by the kernel
    (dict(CLONE, ip="2001:db8::10"), 0x20),  # IPv6 clone: deprecated, kernel prefix route
])
def test_the_address_flags_that_keep_a_clone_from_being_a_source(overrides, wanted):
    assert address._wanted_flags(_params(**overrides)) == wanted


@pytest.mark.parametrize("broadcast, prefixlen, wanted", [
    ("+", 24, "192.0.2.255"), ("-", 24, "192.0.2.0"), ("+", 31, None), ("-", 32, None),
    ("192.0.2.127", 24, "192.0.2.127")])
def test_broadcast_as_ip_addr_add_brd_takes_it(broadcast, prefixlen, wanted):
    found = address._broadcast(_params(broadcast=broadcast),
                               address.Placement("eth0", prefixlen))
    assert found == (socket.inet_aton(wanted) if wanted else None)


def test_labels_default_to_cip_where_they_fit():
    assert address._label(_params(), address.Placement("eth0", 24)) == "eth0:cip"
    assert address._label(_params(), address.Placement("enx0123456789ab", 24)) is None
    assert address._label(_params(iflabel="1"), address.Placement("eth0", 24)) == "eth0:1"
    # Too long for a NIC found by route: resolve() refuses it (netns tier).


def test_rtnetlink_route_and_lifetime_messages():
    from clusterip.kernel import rtnl

    network, source = socket.inet_aton("198.19.0.0"), socket.inet_aton("198.18.0.11")
    message = rtnl._route_message(3, network, 24, 193, source)
    assert message[:8] == bytes([socket.AF_INET, 24, 0, 0, 254, 193, 253, 1])
    assert rtnl.attributes(message, 12) == {
        rtnl.RTA_DST: network, rtnl.RTA_OIF: (3).to_bytes(4, sys.byteorder),
        rtnl.RTA_PREFSRC: source}
    assert rtnl.RTA_PREFSRC not in rtnl.attributes(rtnl._route_message(3, network, 24, 193), 12)
