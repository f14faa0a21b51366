"""The Backend interface, the registry of backends, and auto-selection.

A backend owns the kernel's packet filter side of one VIP on one node: the
hash that splits the traffic into buckets, the set of buckets this node
owns, the rewrite of ARP so neighbours learn the cluster MAC, and the NIC's
membership of that multicast MAC.  The agent (:mod:`clusterip.agent`) is
written against this interface only, so a new kernel mechanism is a new
module here and one line in ``_REGISTRY``.
"""

import collections
import importlib
import os

from clusterip.errors import NotConfigured, NotInstalled


class VipState(collections.namedtuple("VipState", "owned missing")):
    """What a backend finds on this node for one VIP.

    ``owned`` is the set of buckets this node accepts; ``missing`` names the
    pieces that should be there but are not (or differ from the
    configuration), in words an administrator understands.
    """

    __slots__ = ()

    def __new__(cls, owned, missing=()):
        return super().__new__(cls, owned, missing)


class Backend:
    """Interface; every method is idempotent and called under the per-VIP lock."""

    name = "?"
    max_buckets = 0
    # Whether it can keep a moved bucket's established connections on the old
    # owner (the graceful_handover parameter).
    graceful_handover = False
    # Whether it can serve an IPv6 VIP.
    ipv6 = False
    # What the monitor names when nothing of the VIP's filter is left.
    filter_description = "packet filter"
    # time.monotonic() by which any lock the backend takes must be held (the
    # agent sets it from the action's timeout); None: the backend's default.
    lock_deadline = None
    # A file (per VIP, under HA_RSCTMP) where the backend may remember what it
    # checked; None: nowhere.  Set by the agent.
    memo_path = None

    def kernel_supports(self):
        """Whether the running kernel has the mechanism (what backend=auto looks at)."""
        raise NotImplementedError

    # --- the remembered full check (the monitor's fast path) ------------------
    #
    # A backend's full check reads its rules through a library whose import
    # costs more than the rest of the monitor.  Its verdict depends only on the
    # parameters and on the rules, so the backend may keep it in memo_path,
    # keyed by memo_key() and stored with the rules' raw bytes as the kernel
    # reports them; while the kernel reports the same bytes, the verdict holds.

    def recall(self, key):
        """The rule bytes remembered for this key, or None."""
        if self.memo_path is None:
            return None
        try:
            with open(self.memo_path, "rb") as f:
                stored_key, _, fingerprint = f.read().partition(b"\n")
        except OSError:
            return None
        return fingerprint if stored_key == key else None

    def remember(self, key, fingerprint):
        if self.memo_path is None:
            return
        scratch = "%s.%d" % (self.memo_path, os.getpid())  # concurrent monitors: rename
        try:
            with open(scratch, "wb") as f:
                f.write(key + b"\n" + fingerprint)
            os.replace(scratch, self.memo_path)
        except OSError:
            _unlink(scratch)  # only a cache: the next call checks fully again

    def checked_state(self, key, seen, fingerprint, fast, full, multicast):
        """The remembered verdict while the rules read the same, else full()'s.

        ``seen``: the rules' bytes as read at the start of the call (None:
        unreadable); ``fingerprint()`` reads them again; ``fast()``: the owned
        buckets without the full check, or None when they cannot be read so;
        ``full()``: the full check's VipState (or None: nothing there);
        ``multicast``: the missing-membership message, None when joined.  A
        full verdict is remembered only when it found every rule and the rules
        did not change while it ran.
        """
        if seen is not None and self.recall(key) == seen:
            owned = fast()
            if owned is not None:
                return VipState(owned=owned, missing=() if multicast is None else (multicast,))
        state = full()
        if state is not None and set(state.missing) <= {multicast} \
                and seen is not None and fingerprint() == seen:
            self.remember(key, seen)
        return state

    def forget(self):
        if self.memo_path is not None:
            _unlink(self.memo_path)

    def check_available(self):
        """Raise NotInstalled when this kernel cannot run the backend (every action)."""
        raise NotImplementedError

    def check_libraries(self):
        """Raise NotInstalled when a library that changes the filter is missing
        (start and validate-all; a backend's monitor may read without it)."""

    def state(self, params, placement):
        """A VipState, or None when nothing of this VIP exists on the node."""
        raise NotImplementedError

    def create(self, params, placement, owned):
        """Build (or rebuild, replacing) everything for the VIP with these buckets owned."""
        raise NotImplementedError

    def add_bucket(self, params, bucket):
        raise NotImplementedError

    def remove_bucket(self, params, bucket):
        raise NotImplementedError

    def destroy(self, params, placement):
        """Remove everything of the VIP; success when nothing is there."""
        raise NotImplementedError

    def inventory(self):
        """Every VIP this backend serves on the node, for ``clusterip status``:
        [{"vip", "backend", "nic", "clustermac", "hashmode", "hash_init",
        "buckets", "owned": [..], "counters": {bucket: {"packets", "bytes"}}}]."""
        raise NotImplementedError


def multicast_missing(params, placement):
    """How the monitor names a NIC that left the cluster MAC's multicast group."""
    return "multicast membership of %s in %s" % (placement.nic, params.clustermac)


def memo_key(params, placement, *more):
    """What a full check's verdict depends on besides the rules: the parameters
    (but not the instance's bucket: instances share the VIP's rules), the
    placement, and whatever else the backend names."""
    return repr((params._replace(bucket=0), placement) + more).encode()


def _unlink(path):
    try:
        os.unlink(path)
    except OSError:
        pass


def inventory():
    """inventory() of every backend that can run here (a node runs one, normally)."""
    found = []
    for name in _REGISTRY:
        backend = _load(name)
        if backend.kernel_supports():
            try:
                backend.check_available()
            except NotInstalled:
                continue
            found.extend(backend.inventory())
    return found


# name -> module path, in auto-selection preference order: where the kernel
# still has CLUSTERIP (<= 6.2) it is what CLUSTERIP-era clusters run, and a
# cluster must not mix backends; nft everywhere else.
_REGISTRY = {
    "clusterip": "clusterip.backends.clusterip",
    "nft": "clusterip.backends.nft",
}


def _load(name):
    module = importlib.import_module(_REGISTRY[name])
    return module.BACKEND


def choose(requested):
    """The backend ``backend=requested`` means on this kernel, unchecked (no root needed).

    ``auto`` picks by kernel capability alone, never by which libraries
    happen to be installed: nodes with the same kernel must pick the same
    backend, so a missing library is an error (5), not a reason to fall back.
    """
    if requested == "auto":
        candidates = [_load(name) for name in _REGISTRY]
        return next((b for b in candidates if b.kernel_supports()), candidates[-1])
    return _load(requested)


def select(params):
    """The backend for these parameters, checked against this kernel (root)."""
    backend = choose(params.backend)
    backend.check_available()
    return check_supported(backend, params)


def check_supported(backend, params):
    """The backend, or NotConfigured (6) when it cannot do what params ask.

    Needs no root, so validate-all checks it for any user.  ``auto`` does not
    fall back to nft for what the kernel's choice cannot do (IPv6,
    graceful_handover): it refuses, so that the backend of every VIP on a node
    follows from the kernel alone and an administrator's explicit
    ``backend=nft`` is the one way to mix them.
    """
    if params.total_buckets > backend.max_buckets:
        raise NotConfigured("clone-max=%d exceeds the %s backend's limit of %d buckets"
                            % (params.total_buckets, backend.name, backend.max_buckets))
    if params.ipv6 and not backend.ipv6:
        raise NotConfigured("ip=%s is IPv6, which needs backend=nft: the %s backend "
                            "serves IPv4 only" % (params.ip, backend.name))
    if params.graceful_handover and not backend.graceful_handover:
        raise NotConfigured("graceful_handover=true needs backend=nft: the %s backend "
                            "drops every packet of a bucket this node does not own, "
                            "established or not" % backend.name)
    return backend
