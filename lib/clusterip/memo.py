"""The verdict of a backend's last full check, remembered per VIP.

A backend's full check reads its rules through a library whose import costs
more than the rest of the monitor (libnftables' binding, python-iptables).
The verdict depends only on the parameters and on the rules, so it is kept
in a file under HA_RSCTMP (a tmpfs: gone after a reboot), keyed by what the
verdict depends on besides the rules and stored with the rules' raw bytes as
the kernel reports them; while the kernel reports the same bytes, the
verdict holds (see Backend.state).
"""

from __future__ import annotations  # hints cost nothing at run time

import posix  # not os: see clusterip.agent.environment


class Memo:
    def __init__(self, path: str):
        self.path = path

    def recall(self, key: bytes) -> bytes | None:
        """The rule bytes remembered for this key, or None."""
        try:
            with open(self.path, "rb") as f:
                stored_key, _, fingerprint = f.read().partition(b"\n")
        except OSError:
            return None
        return fingerprint if stored_key == key else None

    def remember(self, key: bytes, fingerprint: bytes) -> None:
        scratch = "%s.%d" % (self.path, posix.getpid())  # concurrent monitors: rename
        try:
            with open(scratch, "wb") as f:
                f.write(key + b"\n" + fingerprint)
            posix.replace(scratch, self.path)
        except OSError:
            _unlink(scratch)  # only a cache: the next call checks fully again

    def forget(self) -> None:
        _unlink(self.path)


def _unlink(path):
    try:
        posix.unlink(path)
    except OSError:
        pass
