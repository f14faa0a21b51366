"""The monitor's import budget, held by a test instead of by comments: the
modules a monitor imports pull in none of re, enum, socket, ipaddress, json,
collections, importlib (each costs milliseconds of every action; see
clusterip.kernel, clusterip.record), nor os on nft (clusterip.agent.environment).  The netns
tier checks the installed agent's remembered monitor the same way
(tests/netns/test_import_budget.py)."""

import os
import subprocess
import sys

LIB = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "lib")
FORBIDDEN = ("re", "enum", "socket", "ipaddress", "json", "collections", "importlib")
MONITOR_PATH = ["clusterip.agent", "clusterip.instance", "clusterip.memo", "clusterip.params",
                "clusterip.address", "clusterip.backends",
                "clusterip.backends.nft", "clusterip.kernel", "clusterip.kernel.netlink",
                "clusterip.kernel.rtnl", "clusterip.kernel.nfnl", "clusterip.kernel.iptables",
                "clusterip.kernel.link", "clusterip.guard", "clusterip.background"]


def imported_by(modules):
    """sys.modules of a fresh ``python3 -I -S`` (the agent's flags) after importing modules."""
    script = ("import sys\nsys.path.insert(0, %r)\n"
              "for name in %r:\n    __import__(name)\n"
              "print(' '.join(sorted(sys.modules)))\n" % (os.path.abspath(LIB), modules))
    result = subprocess.run([sys.executable, "-I", "-S", "-c", script], capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    return set(result.stdout.split())


def test_the_monitor_path_imports_none_of_the_expensive_modules():
    loaded = imported_by(MONITOR_PATH)
    assert set(MONITOR_PATH) <= loaded
    assert not loaded & set(FORBIDDEN), sorted(loaded & set(FORBIDDEN))


def test_the_nft_monitor_path_imports_no_os():
    # os (with _collections_abc, posixpath, stat: ~1.5 ms) only where ctypes
    # brings it, for python-iptables' CLUSTERIP backend in Linux < 6.3.
    loaded = imported_by([name for name in MONITOR_PATH if name != "clusterip.kernel.iptables"])
    assert "os" not in loaded


def test_the_check_sees_an_expensive_import():
    # The same subprocess notices one: json through a module that imports it.
    assert "json" in imported_by(MONITOR_PATH + ["json.decoder"])
