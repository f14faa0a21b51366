"""The meta-data document: valid for ocf-tester (DTD) and for OCF 1.1 (RelaxNG)."""

import collections.abc
import os
import subprocess
import sys

import pytest
from lxml import etree

from clusterip import metadata, params

SCHEMAS = "/usr/share/resource-agents"  # package resource-agents
ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
AGENT = os.path.join(ROOT, "ocf", "clusterip")
LIB = os.path.join(ROOT, "lib")


def schema_file(name):
    path = os.path.join(SCHEMAS, name)
    if not os.path.exists(path):
        pytest.fail("%s is missing: install the resource-agents package" % path)
    return path


def parsed():
    return etree.fromstring(metadata.document().encode())


def test_document_carries_the_doctype_ocf_tester_expects():
    assert '<!DOCTYPE resource-agent SYSTEM "ra-api-1.dtd">' in metadata.document()


def test_valid_against_ra_api_1_dtd():
    dtd = etree.DTD(schema_file("ra-api-1.dtd"))
    assert dtd.validate(parsed()), dtd.error_log.filter_from_errors()


def test_valid_against_the_ocf_1_1_relaxng_schema():
    rng = etree.RelaxNG(etree.parse(schema_file("metadata.rng")))
    assert rng.validate(parsed()), rng.error_log


class RecordingEnv(collections.abc.Mapping):
    """An environment that records every name looked up in it (and refuses to
    be listed: a parser that walked all of it would read names no test sees)."""

    def __init__(self, values):
        self.values = dict(values)
        self.read = set()

    def __getitem__(self, name):
        self.read.add(name)
        return self.values[name]

    def __contains__(self, name):
        self.read.add(name)
        return name in self.values

    def __iter__(self):
        raise AssertionError("params.parse() listed the environment")

    def __len__(self):
        return len(self.values)


def parameters_parse_reads():
    """The OCF_RESKEY_<name> parameters params.parse() looks up (not Pacemaker's
    CRM_meta_* attributes), over a plain and a cloned configuration."""
    read = set()
    for env in ({"OCF_RESKEY_ip": "192.0.2.10"},
                {"OCF_RESKEY_ip": "2001:db8::10", "OCF_RESKEY_CRM_meta_clone": "1",
                 "OCF_RESKEY_CRM_meta_clone_max": "3",
                 "OCF_RESKEY_CRM_meta_globally_unique": "true"}):
        recording = RecordingEnv(env)
        params.parse(recording)
        read |= recording.read
    assert all(name.startswith("OCF_RESKEY_") for name in read), read
    return {name[len("OCF_RESKEY_"):] for name in read
            if not name.startswith("OCF_RESKEY_CRM_meta_")}


def test_every_parameter_the_parser_reads_is_documented():
    documented = {p.get("name") for p in parsed().iter("parameter")}
    read = parameters_parse_reads()
    assert "ip" in read and "hashmode" in read  # the recording works
    assert read - documented == set(), "read by params.parse() but not in the meta-data"
    assert documented - read == set(), "in the meta-data but never read by params.parse()"
    ip = parsed().find("parameters/parameter[@name='ip']")
    assert (ip.get("required"), ip.get("unique")) == ("1", "1")


def test_graceful_handover_documents_its_limits():
    parameter = parsed().find("parameters/parameter[@name='graceful_handover']")
    content = parameter.find("content")
    assert (content.get("type"), content.get("default")) == ("boolean", "false")
    text = " ".join(parameter.findtext("longdesc").split())
    for needle in ("TCP only", "time out", "resets them at once", "exit 6", "backend=nft",
                   "last instance"):
        assert needle in text, needle


def test_longdesc_explains_the_clone_settings():
    text = parsed().findtext("longdesc")
    for needle in ("globally-unique=true", "clone-max", "clone-node-max",
                   "resource-stickiness=0", "bucket"):
        assert needle in text


def test_actions_listed():
    names = [a.get("name") for a in parsed().iter("action")]
    assert names == ["start", "stop", "monitor", "meta-data", "validate-all"]


def test_meta_data_needs_neither_root_nor_kernel_libraries():
    # A fresh interpreter with the nft/iptc modules made unimportable.
    code = ("import sys; sys.modules.update(dict.fromkeys(['nftables', 'iptc']));"
            "sys.argv = ['clusterip', 'meta-data'];"
            "from clusterip.agent import main; sys.exit(main())")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            env={"PATH": "/usr/bin:/bin", "PYTHONPATH": LIB},
                            check=False)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("<?xml")


def test_the_executable_runs_under_any_interpreter_that_has_the_library():
    result = subprocess.run([sys.executable, AGENT, "meta-data"], capture_output=True,
                            text=True, env={"PYTHONPATH": LIB}, check=False)
    assert result.returncode == 0, result.stderr
    assert "<resource-agent name=\"clusterip\"" in result.stdout


def test_the_executable_without_the_library_exits_5_with_a_reason(tmp_path):
    # An interpreter in a directory without lib/pythonX.Y/site-packages, run with
    # -I -S as installed: no environment, no site, so no clusterip to import.
    os.makedirs(tmp_path / "bin")
    os.symlink(os.path.realpath(sys.executable), tmp_path / "bin" / "python3")
    result = subprocess.run([str(tmp_path / "bin" / "python3"), "-I", "-S", AGENT, "meta-data"],
                            capture_output=True, text=True, cwd="/", env={}, check=False)
    assert result.returncode == 5
    assert result.stderr.startswith("ocf-exit-reason:the clusterip library is not installed")


def test_crmsh_can_parse_it_as_a_python_string():
    # crmsh hands the agent's output to lxml as str: a declared encoding breaks that.
    root = etree.fromstring(metadata.document())
    assert root.get("name") == "clusterip"
