"""Logging, the lock, and the gratuitous ARP frame."""

import fcntl
import os
import socket
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


def test_gratuitous_arp_frame_layout():
    nic_mac = bytes.fromhex("020000000001")
    cluster = bytes.fromhex("03c1c0000210")
    frame = address.build_gratuitous_arp(nic_mac, cluster, "192.0.2.10", 2)
    assert frame[:6] == b"\xff" * 6 and frame[6:12] == nic_mac
    assert frame[12:14] == b"\x08\x06"
    assert frame[14:22] == bytes.fromhex("0001080006040002")
    ip = socket.inet_aton("192.0.2.10")
    assert frame[22:28] == cluster and frame[28:32] == ip and frame[38:42] == ip
