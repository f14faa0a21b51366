"""The documented install: the agent where Pacemaker looks, with an absolute
interpreter, visible to the cluster shell, its venv without the test tools;
and the distribution's way: `make install-agent` into a DESTDIR naming
/usr/bin/python3, the library in Debian's dist-packages."""

import importlib.util
import os
import re
import shutil
import subprocess

from clusterip import PROVIDER
from netlab import DEFAULT_AGENT, OCF_ROOT, agent_command

CHECKOUT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DIST_PACKAGES = "/usr/lib/python3/dist-packages"  # where Debian's python3-* packages live


def installed_interpreter():
    with open(DEFAULT_AGENT, encoding="utf-8") as f:
        return f.readline()[2:].split()[0]


def test_installed_agent_names_its_interpreter_absolutely():
    with open(DEFAULT_AGENT, encoding="utf-8") as f:
        first = f.readline()
    assert first.startswith("#!/") and "python3" in first and "env " not in first


def test_crm_ra_info_shows_the_agent_and_its_parameters():
    name = "ocf:%s:clusterip" % PROVIDER
    result = subprocess.run(["crm", "ra", "info", name], capture_output=True,
                            text=True, timeout=60, check=False)
    assert result.returncode == 0 and "ERROR" not in result.stderr, result.stderr
    for needle in (name, "ip* (string)", "hashmode (string", "globally-unique=true"):
        assert needle in result.stdout, (needle, result.stdout)
    # Every parameter of the agent's meta-data, each with its type.
    meta_data = subprocess.run([*agent_command(), "meta-data"], capture_output=True,
                               text=True, timeout=30, check=True).stdout
    parameters = re.findall(r'<parameter name="([a-z_]+)"', meta_data)
    assert "ip" in parameters and "backend" in parameters, meta_data
    for parameter in parameters:
        assert re.search(r"^%s\*? \(" % parameter, result.stdout, re.M), (parameter, result.stdout)


def test_meta_data_runs_with_an_empty_environment():
    # Pacemaker passes its own environment: no PATH, no PYTHONPATH.
    result = subprocess.run(["env", "-i", *agent_command(), "meta-data"], capture_output=True,
                            text=True, timeout=30, check=False)
    assert result.returncode == 0 and "<resource-agent" in result.stdout, result.stderr


def test_the_agents_venv_has_the_library_and_no_test_tools():
    # pytest, hypothesis and ruff live in the test venv (make test-venv).
    code = ("import importlib.util as u\n"
            "for name in ('clusterip', 'lxml', 'nftables', 'iptc', 'pytest', 'hypothesis', "
            "'ruff', '_pytest'):\n"
            "    print(name, u.find_spec(name) is not None)\n")
    result = subprocess.run([installed_interpreter(), "-I", "-c", code], capture_output=True,
                            text=True, timeout=30, check=True)
    found = dict(line.split() for line in result.stdout.splitlines())
    assert found == {"clusterip": "True", "lxml": "True", "nftables": "True", "iptc": "True",
                     "pytest": "False", "hypothesis": "False", "ruff": "False",
                     "_pytest": "False"}, found


def _distro_library(tmp_path):
    """A stand-in for Debian's dist-packages with what a distribution's package
    of the agent would bring: the checkout's library (copied, as the package
    would ship it) and its dependencies (python3-lxml, python3-nftables,
    python-iptables; linked from the test venv, which is made with this
    /usr/bin/python3, so their compiled parts fit)."""
    site = tmp_path / "dist-packages"
    shutil.copytree(os.path.join(CHECKOUT, "lib", "clusterip"), site / "clusterip",
                    ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("iptc", "lxml", "nftables"):  # packages, and the module nftables.py
        path = importlib.util.find_spec(name).origin
        if os.path.basename(path) == "__init__.py":
            path = os.path.dirname(path)
        os.symlink(path, site / os.path.basename(path))
    venv_site = os.path.dirname(os.path.dirname(importlib.util.find_spec("iptc").origin))
    for name in os.listdir(venv_site):  # python-iptables' C helper sits beside iptc/
        if name.startswith("libxtwrapper"):
            os.symlink(os.path.join(venv_site, name), site / name)
    return site


def test_install_agent_in_a_destdir_runs_with_the_distributions_python(tmp_path):
    destdir = tmp_path / "destdir"
    subprocess.run(["make", "-s", "-C", CHECKOUT, "install-agent", "DESTDIR=%s" % destdir,
                    "PYTHON=/usr/bin/python3"], check=True, capture_output=True, timeout=60)
    # DESTDIR-clean: the agent and nothing else, every path under DESTDIR.
    written = sorted(os.path.relpath(os.path.join(d, f), destdir)
                     for d, _, files in os.walk(destdir) for f in files)
    agent = "%s/resource.d/%s/clusterip" % (OCF_ROOT, PROVIDER)
    assert written == [agent.lstrip("/")], written
    staged = str(destdir) + agent
    with open(staged, encoding="utf-8") as f:
        assert f.readline() == "#!/usr/bin/python3 -IS\n"
    # Run it as /usr/bin/python3 -IS runs it on such a node: in a private mount
    # namespace whose /usr/lib/python3/dist-packages holds the library, and a
    # network namespace of its own with a NIC (validate-all reads it).
    site = _distro_library(tmp_path)
    script = ('mount --bind "$1" %s; shift\n'
              'ip link add d0 type veth peer name d1; ip addr add 198.18.0.11/16 dev d0; '
              'ip link set d1 up; ip link set d0 up\n'
              'exec env -i OCF_ROOT=%s OCF_RESKEY_ip=198.18.0.100 OCF_RESKEY_nic=d0 '
              'OCF_RESKEY_backend=nft "$@"' % (DIST_PACKAGES, OCF_ROOT))
    for action, expected in (("meta-data", '<resource-agent name="clusterip"'),
                             ("validate-all", "")):
        result = subprocess.run(["unshare", "--mount", "--net", "sh", "-ec", script, "sh",
                                 str(site), staged, action], capture_output=True, text=True,
                                timeout=60, check=False)
        assert result.returncode == 0, (action, result.returncode, result.stderr)
        assert expected in result.stdout, (action, result.stdout)


def test_the_distribution_layout_without_the_library_is_5_naming_the_interpreter(tmp_path):
    # The same staged agent where dist-packages lacks the library: exit 5, not
    # a traceback (the path it appends exists, the package in it does not).
    destdir = tmp_path / "destdir"
    subprocess.run(["make", "-s", "-C", CHECKOUT, "install-agent", "DESTDIR=%s" % destdir,
                    "PYTHON=/usr/bin/python3"], check=True, capture_output=True, timeout=60)
    empty = tmp_path / "empty"
    empty.mkdir()
    staged = "%s%s/resource.d/%s/clusterip" % (destdir, OCF_ROOT, PROVIDER)
    result = subprocess.run(["unshare", "--mount", "sh", "-ec",
                             'mount --bind "$1" %s && exec env -i "$2" meta-data' % DIST_PACKAGES,
                             "sh", str(empty), staged], capture_output=True, text=True,
                            timeout=60, check=False)
    assert result.returncode == 5, (result.returncode, result.stderr)
    assert "library is not installed for /usr/bin/python3" in result.stderr, result.stderr

