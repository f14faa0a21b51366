"""The pytest hooks of the tiers that run real clusters (tests/cluster, tests/upgrade).

Each tier's conftest.py imports them.  Missing preconditions (not root, no
agent, no Pacemaker/Corosync/crmsh) FAIL every test instead of skipping it:
a tier that silently skips in CI tests nothing.  At the end of the run the
measured start-up, failover and upgrade times are printed as a table (the
CI log keeps it) and, with $CLUSTERIP_FAILOVER_REPORT set, written there as
JSON.
"""

import os

import pytest

import cluster
import netlab

TIER_DIRECTORIES = ("tests/cluster/", "tests/upgrade/")
_summary_written = []  # both tiers' conftests may be loaded in one run: write it once


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_call(item):
    # Raising here, before the test body runs, reports the test as FAILED (not
    # as a setup error, not as skipped) with just this message.
    problem = netlab.not_root_problem() or cluster.cluster_problem()
    if problem:
        pytest.fail(problem, pytrace=False)


def pytest_runtest_logreport(report):
    nodeid = report.nodeid.replace(os.sep, "/")
    if report.when == "call" and any(d in nodeid for d in TIER_DIRECTORIES):
        cluster.REPORT.add_scenario(report.nodeid, report.duration, report.outcome)


def pytest_terminal_summary(terminalreporter):
    if not cluster.REPORT.empty() and not _summary_written:
        _summary_written.append(True)
        terminalreporter.write_sep("=", "cluster tier measurements")
        terminalreporter.write_line(cluster.REPORT.table())
        path = os.environ.get("CLUSTERIP_FAILOVER_REPORT")
        if path:
            terminalreporter.write_line("(JSON written to %s)" % path)
