"""The legacy tier: the CLUSTERIP backend under a real Linux 6.1 kernel.

Each test boots a user-mode-linux guest (uml.py) that sees this checkout and
the installed agent, and runs, inside it, the netns tier's shared tests with
CLUSTERIP_TEST_BACKEND=clusterip (ocf-tester; the three-node data plane for
each hash mode, with the bucket move and the /proc file checked after every
step) plus the checks that need the real target (guest_clusterip_checks.py).
Fails, never skips, when the guest cannot run here.
"""

import os
import sys

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, HERE)
import uml  # noqa: E402

VENV_PYTHON = os.environ.get("VENV", "/opt/clusterip") + "/bin/python3"
GUEST_TESTS = [
    "tests/netns/test_ocf_tester.py",
    "tests/netns/test_dataplane.py::test_dataplane[sourceip]",
    "tests/netns/test_dataplane.py::test_dataplane[sourceip-sourceport]",
    "tests/netns/test_dataplane.py::test_dataplane[sourceip-sourceport-destport]",
    "tests/legacy/guest_clusterip_checks.py",
]


@pytest.mark.parametrize("target", GUEST_TESTS)
def test_inside_linux_6_1(target):
    problems = uml.problems()
    assert not problems, "; ".join(problems)
    rc = uml.run([VENV_PYTHON, "-m", "pytest", "-q", "-p", "no:cacheprovider", target],
                 cwd=ROOT, timeout=1200,
                 env={"CLUSTERIP_TEST_BACKEND": "clusterip",
                      # Each system call is slower under UML: stretch every timeout.
                      "CLUSTERIP_TEST_TIMEOUT_SCALE": "3"})
    assert rc == 0, "the tests inside the 6.1 guest failed (exit %d), output above" % rc
