"""The legacy tier's guests and the Debian roots they boot over (guest_roots.py)."""

import pytest


@pytest.fixture(scope="session")
def legacy_root():
    """Debian 12 userspace for the guest: the host's / on Debian 12, else the
    bookworm root of tests/roots.py (or $CLUSTERIP_LEGACY_ROOT)."""
    import guest_roots

    root = guest_roots.legacy()
    with guest_roots.held(root):
        yield root


@pytest.fixture(scope="session")
def trixie_root():
    """Debian 13 userspace (iptables 1.8.11): where the clusterip backend must refuse."""
    import guest_roots

    root = guest_roots.suite_root("trixie")
    with guest_roots.held(root):
        yield root
