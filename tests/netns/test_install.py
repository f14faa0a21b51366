"""The documented install: the agent where Pacemaker looks, with an absolute
interpreter, visible to the cluster shell."""

import subprocess

from netlab import agent_command

OCF_AGENT = "/usr/lib/ocf/resource.d/custom/clusterip"


def test_installed_agent_names_its_interpreter_absolutely():
    with open(OCF_AGENT, encoding="utf-8") as f:
        first = f.readline()
    assert first.startswith("#!/") and "python3" in first and "env " not in first


def test_crm_ra_info_shows_the_agent_and_its_parameters():
    result = subprocess.run(["crm", "ra", "info", "ocf:custom:clusterip"], capture_output=True,
                            text=True, timeout=60, check=False)
    assert result.returncode == 0 and "ERROR" not in result.stderr, result.stderr
    for needle in ("ocf:custom:clusterip", "ip* (string)", "hashmode (string",
                   "globally-unique=true"):
        assert needle in result.stdout, (needle, result.stdout)


def test_meta_data_runs_with_an_empty_environment():
    # Pacemaker passes its own environment: no PATH, no PYTHONPATH.
    result = subprocess.run(["env", "-i", *agent_command(), "meta-data"], capture_output=True,
                            text=True, timeout=30, check=False)
    assert result.returncode == 0 and "<resource-agent" in result.stdout, result.stderr
