"""The Debian root a legacy-tier guest boots over, made ready for it.

CLUSTERIP users run Debian 12 userspace (iptables 1.8.9, Python 3.11); on
Debian 13 (iptables 1.8.11) python-iptables cannot set the CLUSTERIP
target's options at all (ldx/python-iptables#353).  So the guest runs the
legacy tier over a Debian 12 root, whatever the host:

- on a Debian 12 host, the host's own / (run-all's tests/setup-host
  installed the agent there; a guest boots over it as fast as over a
  debootstrapped root, see README.rst, Tests);
- elsewhere, the bookworm root of tests/roots.py;
- CLUSTERIP_LEGACY_ROOT=<dir> forces one: /, or a root of tests/roots.py
  (/var/cache/clusterip/roots/bookworm: the tier as a Debian 13 host runs
  it), or any other directory, used as it is.

A root of tests/roots.py is built when missing (roots.ensure) and gets the
checkout's agent by running the checkout's tests/setup-host inside it, as
roots.py does when it builds one, whenever the agent or library installed
there differs from the checkout's.
"""

import contextlib
import fcntl
import glob
import os

HERE = os.path.dirname(os.path.abspath(__file__))
CHECKOUT = os.path.dirname(os.path.dirname(HERE))
import roots  # noqa: E402  (tests/roots.py: the path is set above, outside pytest too)
from clusterip import PROVIDER  # noqa: E402

FORCE = "CLUSTERIP_LEGACY_ROOT"
LEGACY_SUITE = "bookworm"  # Debian 12: what CLUSTERIP clusters run
VENV = "/opt/clusterip"
TEST_VENV = "/opt/clusterip-test"  # pytest and the rest (make test-venv, setup-host)
AGENT = "/usr/lib/ocf/resource.d/%s/clusterip" % PROVIDER


def legacy():
    """The root the legacy tier's guest boots over (a path; "/" is the host's)."""
    forced = os.environ.get(FORCE)
    if forced:
        return prepare(os.path.realpath(forced))
    if roots.host_suite() == LEGACY_SUITE:
        return "/"
    return prepare(os.path.join(roots.CACHE, LEGACY_SUITE))


def suite_root(suite):
    """The cached root of ``suite`` with the checkout's agent installed."""
    return prepare(os.path.join(roots.CACHE, suite))


def prepare(root):
    suite = _suite_of(root)
    if suite is None:
        return root  # the host's /, or a directory the caller vouches for
    roots.ensure(suite)
    with roots.build_lock(suite):  # no rebuild, no second install meanwhile
        stale = stale_files(root)
        if stale:
            print("guest_roots: installing the checkout's agent in %s (%s differ)"
                  % (root, ", ".join(stale[:3]) + (" ..." if len(stale) > 3 else "")),
                  flush=True)
            rc = roots.run(suite, [os.path.join(CHECKOUT, "tests", "setup-host"), "--no-uml"])
            if rc != 0:
                raise roots.RootError("tests/setup-host --no-uml inside %s exited %d"
                                      % (root, rc))
            stale = stale_files(root)
            if stale:
                raise roots.RootError("after tests/setup-host, %s still differ in %s"
                                      % (", ".join(stale), root))
    return root


def held(root):
    """A context in which no rebuild replaces ``root`` (a root of tests/roots.py)
    under a guest booted over it: roots.py's "use" lock, shared, as its run()
    holds it."""
    suite = _suite_of(root)
    if suite is None:
        return contextlib.nullcontext()
    return roots._lock(suite, "use", fcntl.LOCK_SH)


def _suite_of(root):
    for suite in roots.SUITES.values():
        if root == os.path.join(roots.CACHE, suite):
            return suite
    return None


def stale_files(root):
    """Files of the checkout's agent and library that differ in root (or are
    missing there): the agent as make install writes it, every module of
    lib/clusterip; the test venv the guest's pytest runs from."""
    stale = []
    if not os.path.exists(root + TEST_VENV + "/bin/pytest"):
        stale.append(TEST_VENV)
    with open(os.path.join(CHECKOUT, "ocf", "clusterip"), "rb") as f:
        agent = f.read()
    wanted = b"#!%s/bin/python3 -IS\n" % VENV.encode() + agent.split(b"\n", 1)[1]
    if _read(root + AGENT) != wanted:
        stale.append(AGENT)
    installed = glob.glob(root + VENV + "/lib/python3*/site-packages/clusterip")
    lib = os.path.join(CHECKOUT, "lib", "clusterip")
    for directory, dirs, files in os.walk(lib):
        dirs[:] = [d for d in dirs if d != "__pycache__"]
        for name in files:
            if not name.endswith(".py"):
                continue
            path = os.path.join(directory, name)
            relative = os.path.relpath(path, lib)
            if len(installed) != 1 or _read(os.path.join(installed[0], relative)) != _read(path):
                stale.append("clusterip/" + relative)
    return stale


def _read(path):
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError:
        return None
