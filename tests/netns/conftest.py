"""The netns tier: root, the host kernel, the agent run in namespaces it creates.

Missing preconditions (not root, no agent) FAIL every test of this tier
instead of skipping it: a tier that silently skips in CI tests nothing.
"""

import os
import sys

import pytest

# netlab.py and scenarios.py live one level up and are shared with other tiers.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import netlab  # noqa: E402  (needs the path above)


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_call(item):
    # Raising here, before the test body runs, reports the test as FAILED (not
    # as a setup error, not as skipped) with just this message.
    problem = netlab.not_root_problem() or netlab.agent_problem()
    if problem:
        pytest.fail(problem, pytrace=False)
