"""The qemu tier: the nft backend on Debian 12's own Linux 6.1 kernel.

Debian 12 nodes run the nft backend on that kernel (``backend=auto`` picks
it there), and the host runs a newer one (the legacy tier's UML 6.1 build
has no nf_tables for ip, ip6 and arp).  One guest boots that kernel under
QEMU (qemu.py) over the bookworm root of tests/roots.py, which holds the
kernel package, its initramfs and the checkout's agent installed with
make install (guest_roots.py), the checkout read-only at its own path, and
runs inside it: ocf-tester with backend=nft over IPv4 and IPv6, the three-
node data plane with real traffic over IPv4 and IPv6, and
guest_nft_checks.py (the kernel is 6.1 with its modules, ``backend=auto``
serves with nft), and guest_migration_checks.py: README's "From CLUSTERIP
to nft" rehearsed on a three-node Pacemaker cluster with clients
connecting, starting from the agent before 0.2.0 (OLD_AGENT_ARCHIVE, vendored
in the checkout: no git history needed).  Fails, never skips, when the guest
cannot run here.
"""

import os
import sys
import tempfile
import time
import xml.etree.ElementTree as ET

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(1, os.path.join(os.path.dirname(HERE), "legacy"))
import guest_roots  # noqa: E402  (tests/legacy: the roots the guests boot over)
import qemu  # noqa: E402

CHECKOUT = os.path.dirname(os.path.dirname(HERE))
SUITE = "bookworm"  # Debian 12: the kernel and userland under test
GUEST_TESTS = [
    "tests/qemu/guest_nft_checks.py",
    "tests/netns/test_ocf_tester.py",
    "tests/netns/test_dataplane.py::test_dataplane[sourceip]",
    "tests/netns/test_dataplane.py::test_dataplane_ipv6[sourceip]",
    "tests/qemu/guest_migration_checks.py",
]
# The agent before backend=auto meant nft (0.2.0), the rehearsal's clusters start
# with it: tests/qemu/data/README.rst says how it was made.
OLD_AGENT_ARCHIVE = os.path.join(HERE, "data", "clusterip-0.1-agent.tar.gz")
# Every step of the emulated guest is ~10x slower than on the host: stretch every timeout.
TIMEOUT_SCALE = "6"
TIMEOUT = 1320
MEM = "3072"  # MiB: three Pacemaker nodes besides the rest (the default 2 GiB is tight)
PASSED_THROUGH = ("CLUSTERIP_TEST_ROUNDS", "CLUSTERIP_TEST_SEED")


@pytest.fixture(scope="module")
def bookworm_root():
    root = guest_roots.suite_root(SUITE)  # built, and the checkout's agent installed
    with guest_roots.held(root):
        yield root


def test_nft_backend_inside_debian_12s_linux_6_1(bookworm_root):
    found = qemu.problems(bookworm_root)
    assert not found, "; ".join(found)
    assert os.path.isfile(OLD_AGENT_ARCHIVE), "%s is missing: the CLUSTERIP-to-nft " \
        "rehearsal starts from that agent (tests/qemu/data/README.rst)" % OLD_AGENT_ARCHIVE
    env = {"CLUSTERIP_TEST_BACKEND": "nft", "CLUSTERIP_TEST_TIMEOUT_SCALE": TIMEOUT_SCALE}
    env.update((name, os.environ[name]) for name in PASSED_THROUGH if os.environ.get(name))
    with tempfile.TemporaryDirectory(prefix="clusterip-qemu-results-") as results:
        junit = os.path.join(results, "junit.xml")
        env["CLUSTERIP_MIGRATION_REPORT"] = os.path.join(results, "migration.json")
        rc, boot, total = qemu.run(
            [guest_roots.TEST_VENV + "/bin/python3", "-m", "pytest", "-q", "-rA",
             "-p", "no:cacheprovider", "--durations=0", "--junitxml=" + junit, *GUEST_TESTS],
            cwd=CHECKOUT, env=env, timeout=TIMEOUT, root=bookworm_root,
            readonly=[CHECKOUT], writable=[results], mem=MEM)
        outcomes = _outcomes(junit)
        if os.path.exists(env["CLUSTERIP_MIGRATION_REPORT"]):
            with open(env["CLUSTERIP_MIGRATION_REPORT"]) as handle:
                print("qemu: the migration rehearsal measured:", handle.read())
    print("qemu: guest booted in %s, %.0f s in all; %s" % (
        "%.1f s" % boot if boot is not None else "n/a", total,
        ", ".join("%d %s" % (n, what) for what, n in sorted(outcomes.items())) or "no report"))
    assert rc == 0, "the tests inside Debian 12's Linux 6.1 (over %s) failed (exit %d), " \
        "output above" % (bookworm_root, rc)
    # The report written through the shared directory: every test ran and passed.
    assert outcomes.get("passed", 0) >= len(GUEST_TESTS) and set(outcomes) == {"passed"}, \
        outcomes


def _outcomes(junit):
    """{"passed": n, "failed": n, "skipped": n, ...} from the guest's JUnit XML."""
    if not os.path.exists(junit):
        return {}
    counts = {}
    for case in ET.parse(junit).iter("testcase"):
        outcome = next((child.tag for child in case
                        if child.tag in ("failure", "error", "skipped")), "passed")
        counts[outcome] = counts.get(outcome, 0) + 1
    return counts


def test_a_guest_past_its_time_is_killed_with_its_whole_process_group(bookworm_root,
                                                                       monkeypatch):
    # 3 s in all for a guest that needs ~20 s to boot: QEMU is killed mid-boot.
    launched = []
    real_popen = qemu.console.subprocess.Popen

    def recording_popen(*args, **kwargs):
        proc = real_popen(*args, **kwargs)
        launched.append(proc.pid)
        return proc
    monkeypatch.setattr(qemu.console.subprocess, "Popen", recording_popen)
    monkeypatch.setattr(qemu, "BOOT_ALLOWANCE", 0)
    started = time.monotonic()
    rc, boot, _ = qemu.run(["sleep", "600"], cwd="/", timeout=3, root=bookworm_root)
    assert rc == qemu.TIMEOUT_RC and boot is None
    assert time.monotonic() - started < 15
    [pgid] = launched  # QEMU ran as the leader of its own process group
    assert qemu.console._live_members(pgid) == []
