"""The legacy tier: the CLUSTERIP backend under a real Linux 6.1 kernel.

Each test boots a user-mode-linux guest (uml.py) over a Debian 12 root
(guest_roots.py: the host's / on Debian 12, else the bookworm root of
tests/roots.py) with the agent installed in it and this checkout mounted
read-only at its own path, and runs, inside it, the netns tier's shared tests
with CLUSTERIP_TEST_BACKEND=clusterip (ocf-tester; the three-node data plane
for each hash mode, with the bucket move and the /proc file checked after
every step) plus the checks that need the real target
(guest_clusterip_checks.py).  One more guest boots over a Debian 13 root
(iptables 1.8.11), where python-iptables cannot set the target's options and
the clusterip backend must refuse (guest_trixie_checks.py).  Fails, never
skips, when a guest cannot run here.
"""

import os

import pytest

import guest_roots
import uml

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# pytest inside the guest: the root's test venv (the agent runs from its own venv).
TEST_PYTHON = os.environ.get("TEST_VENV", guest_roots.TEST_VENV) + "/bin/python3"
GUEST_TESTS = [
    "tests/netns/test_ocf_tester.py::test_ocf_tester",
    "tests/netns/test_dataplane.py::test_dataplane[sourceip]",
    "tests/netns/test_dataplane.py::test_dataplane[sourceip-sourceport]",
    "tests/netns/test_dataplane.py::test_dataplane[sourceip-sourceport-destport]",
    "tests/legacy/guest_clusterip_checks.py",
    # Reliability (issue #5); fewer repetitions in the guest than on the host.
    "tests/netns/test_reliability.py::test_sixteen_instances_of_one_vip_started_and_stopped_concurrently",
    "tests/netns/test_reliability.py::test_two_vips_on_one_nic_started_and_stopped_concurrently",
    "tests/netns/test_reliability.py::test_sigkill_at_every_step_leaves_a_recoverable_node",
    "tests/netns/test_reliability.py::test_tampering_is_detected_repaired_and_cleaned_up",
    "tests/netns/test_reliability.py::test_hostile_parameters_change_nothing_on_the_node",
    # The short ones share one guest (space-separated): the NIC vanishing, non-root,
    # missing libraries, unsafe interface names, every pause point covered.
    " ".join("tests/netns/test_reliability.py::" + name for name in (
        "test_every_pause_point_of_this_backend_is_covered",
        "test_the_nic_disappearing_fails_the_monitor_and_stop_succeeds",
        "test_not_root_is_4_for_state_actions_while_meta_data_and_validate_all_work",
        "test_a_missing_library_is_5_with_a_reason",
        "test_an_interface_name_the_filter_cannot_hold_is_refused")),
]
# Repetition counts and the seed of test_reliability.py pass through when set
# here, and so does the agent under test (a private install, see netlab).
PASSED_THROUGH = ("CLUSTERIP_TEST_ROUNDS", "CLUSTERIP_TEST_CRASH_CYCLES",
                  "CLUSTERIP_TEST_BAD_INPUTS", "CLUSTERIP_TEST_SEED", "CLUSTERIP_AGENT")


def run_in_guest(root, targets, timeout=1200):
    problems = uml.problems(root)
    assert not problems, "; ".join(problems)
    return uml.run([TEST_PYTHON, "-m", "pytest", "-q", "-p", "no:cacheprovider", *targets],
                   cwd=ROOT, timeout=timeout, root=root, readonly=[ROOT],
                   env=dict({"CLUSTERIP_TEST_BACKEND": "clusterip",
                             # Each system call is slower under UML: stretch every timeout.
                             "CLUSTERIP_TEST_TIMEOUT_SCALE": "3"},
                            **{name: os.environ[name] for name in PASSED_THROUGH
                               if os.environ.get(name)}))


@pytest.mark.parametrize("target", GUEST_TESTS, ids=lambda target: target.replace(" ", ","))
def test_inside_linux_6_1(target, legacy_root):
    rc = run_in_guest(legacy_root, target.split())
    assert rc == 0, "the tests inside the 6.1 guest (over %s) failed (exit %d), output above" % (
        legacy_root, rc)


def test_over_debian_13_userspace_the_clusterip_backend_refuses_with_5(trixie_root):
    # Linux 6.1 (CLUSTERIP) under iptables 1.8.11 and Python 3.13, the
    # venv's python-iptables 1.2.0: start and validate-all exit 5 naming the
    # cause, nothing on the node changes, stop succeeds.
    rc = run_in_guest(trixie_root, ["tests/legacy/guest_trixie_checks.py"], timeout=600)
    assert rc == 0, "the checks inside the 6.1 guest over %s failed (exit %d), output above" % (
        trixie_root, rc)
