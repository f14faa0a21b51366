"""The cluster tier: a real Pacemaker + Corosync cluster in namespaces (root).

Its hooks (fail, never skip, without the preconditions; the measurements
table at the end) are tier_hooks.py's, shared with tests/upgrade.
"""

from tier_hooks import (  # noqa: F401  (pytest finds hooks by name here)
    pytest_runtest_call,
    pytest_runtest_logreport,
    pytest_terminal_summary,
)
