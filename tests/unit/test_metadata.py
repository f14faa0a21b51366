"""The meta-data document: valid for ocf-tester (DTD) and for OCF 1.1 (RelaxNG)."""

import os
import subprocess
import sys

import pytest
from lxml import etree

from clusterip import metadata

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


def test_every_parameter_the_parser_reads_is_documented():
    names = {p.get("name") for p in parsed().iter("parameter")}
    assert names == {"ip", "cidr_netmask", "nic", "clustermac", "hashmode", "hash_init",
                     "backend", "graceful_handover"}
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
