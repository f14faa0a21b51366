"""A stand-in for clusterip.address in a real background sender
(test_announcements.py): each announcement appends one line to
$RECORDING_NODE_LOG with what the sender process looks like from inside; with
$RECORDING_NODE_FAIL the address check fails, as netlink might."""

import os
import sys


def address_present(vip, placement):
    if os.environ.get("RECORDING_NODE_FAIL"):
        raise OSError("netlink went away")  # the sender must exit quietly
    return True


def announce(nic, vip, mac=None):
    fds = sorted(os.listdir("/proc/self/fd"))
    targets = {os.readlink("/proc/self/fd/%s" % fd) for fd in ("0", "1", "2")}
    # A fork of pytest would have pytest loaded; a fresh interpreter has not.
    fresh = "fresh" if "pytest" not in sys.modules else "forked"
    with open(os.environ["RECORDING_NODE_LOG"], "a") as f:
        f.write("%d %d %s %s %s\n" % (os.getpid(), os.getsid(0), ",".join(fds),
                                        ",".join(sorted(targets)), fresh))
