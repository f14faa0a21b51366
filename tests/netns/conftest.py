"""The netns tier: root, the host kernel, the agent run in namespaces it creates.

Missing preconditions (not root, no agent) FAIL every test of this tier
instead of skipping it: a tier that silently skips in CI tests nothing.
"""

import pytest

import netlab


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_call(item):
    # Raising here, before the test body runs, reports the test as FAILED (not
    # as a setup error, not as skipped) with just this message.
    problem = netlab.not_root_problem() or netlab.agent_problem()
    if problem:
        pytest.fail(problem, pytrace=False)
