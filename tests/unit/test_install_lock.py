"""The library's install lock (ocf/clusterip, Makefile install-venv): every
action holds <venv>/clusterip-install.lock shared, so that pip replacing the
library (under the exclusive lock) never runs under an action, and an action
started meanwhile waits, up to 3/4 of its timeout, then fails with a reason.

The agent runs as installed (``python3 -IS``) from a venv-like prefix made
here: bin/python3 a link to this interpreter, the checkout's library in
lib/pythonX.Y/site-packages (where ocf/clusterip looks under -S).
"""

import fcntl
import importlib.util
import os
import subprocess
import sys
import time

import pytest

CHECKOUT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SCRIPT = os.path.join(CHECKOUT, "ocf", "clusterip")


@pytest.fixture
def prefix(tmp_path):
    os.makedirs(tmp_path / "bin")
    os.symlink(os.path.realpath(sys.executable), tmp_path / "bin" / "python3")
    site = tmp_path / "lib" / ("python%d.%d" % sys.version_info[:2]) / "site-packages"
    os.makedirs(site)
    os.symlink(os.path.join(CHECKOUT, "lib", "clusterip"), site / "clusterip")
    # meta-data's one dependency, from this interpreter's environment.
    os.symlink(os.path.dirname(importlib.util.find_spec("lxml").origin), site / "lxml")
    return tmp_path


def agent(prefix, *env):
    return subprocess.Popen(["env", "-i", *env, str(prefix / "bin" / "python3"), "-IS", SCRIPT,
                             "meta-data"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)


@pytest.fixture
def held(prefix):
    """The exclusive lock, as make install-venv holds it around pip."""
    fd = os.open(prefix / "clusterip-install.lock", os.O_RDWR | os.O_CREAT, 0o644)
    fcntl.flock(fd, fcntl.LOCK_EX)
    yield fd
    os.close(fd)


def test_without_the_lock_file_an_action_runs_at_once(prefix):
    out, err = agent(prefix).communicate(timeout=30)
    assert "<resource-agent" in out, err


def test_an_action_waits_for_the_install(prefix, held):
    process = agent(prefix)
    time.sleep(0.5)
    assert process.poll() is None  # waiting for the install
    fcntl.flock(held, fcntl.LOCK_UN)
    out, err = process.communicate(timeout=30)
    assert process.returncode == 0 and "<resource-agent" in out, err


def test_an_action_holds_the_lock_shared_until_it_exits(prefix):
    # An action that cannot finish (its stdout a pipe of one page, unread, so
    # meta-data's write blocks) keeps the install waiting.
    path = prefix / "clusterip-install.lock"
    path.touch()
    process = agent(prefix)
    fcntl.fcntl(process.stdout.fileno(), fcntl.F_SETPIPE_SZ, 4096)
    fd = os.open(path, os.O_RDWR)
    try:
        deadline = time.monotonic() + 10
        while True:  # until the action holds its shared lock
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                fcntl.flock(fd, fcntl.LOCK_UN)
            except BlockingIOError:
                break
            assert time.monotonic() < deadline and process.poll() is None, "never locked"
            time.sleep(0.01)
        process.stdout.read()  # let it finish
        process.wait(timeout=30)
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # released at its exit
    finally:
        os.close(fd)
        process.kill()


def test_an_install_that_outlasts_the_action_fails_it_with_a_reason(prefix, held):
    began = time.monotonic()
    process = agent(prefix, "OCF_RESKEY_CRM_meta_timeout=1000")
    out, err = process.communicate(timeout=30)
    assert process.returncode == 1 and out == "", (out, err)
    assert err.startswith("ocf-exit-reason:the clusterip library is being installed"), err
    assert 0.7 <= time.monotonic() - began < 10
