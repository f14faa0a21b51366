"""The upgrade tier: a running cluster upgraded node by node from Debian 12 to 13 userland.

It runs the cluster tier's harness (tests/cluster/cluster.py) with the
nodes' cluster stacks in the roots of tests/roots.py, so it runs from the
host only (never inside a root: run-all's other-release tier leaves it out).
Its hooks are the cluster tier's (tier_hooks.py).
"""

import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                                "cluster"))

from tier_hooks import (  # noqa: E402,F401  (pytest finds hooks by name here)
    pytest_runtest_call,
    pytest_runtest_logreport,
    pytest_terminal_summary,
)
