"""The Backend interface, the registry of backends, and auto-selection.

A backend owns the kernel's packet filter side of one VIP on one node: the
hash that splits the traffic into buckets, the set of buckets this node
owns, the rewrite of ARP so neighbours learn the cluster MAC, and the NIC's
membership of that multicast MAC.  The agent (:mod:`clusterip.agent`) is
written against this interface only, so a new kernel mechanism is a new
module here and one line in ``_REGISTRY``.  The remembered full check (the
monitor's fast path) is the base class's: a backend fills in its hooks.
"""

from __future__ import annotations  # hints cost nothing at run time

from clusterip import address
from clusterip.address import Placement
from clusterip.errors import NotConfigured, NotInstalled
from clusterip.memo import Memo
from clusterip.params import Params
from clusterip.record import record


class VipState(record("VipState", "owned missing outdated")):
    """What a backend finds on this node for one VIP.

    ``owned`` is the set of buckets this node accepts; ``missing`` names the
    pieces that should be there but are not (or differ from the
    configuration), in words an administrator understands.  ``outdated``:
    the filter is in the layout of an older version of the agent, which
    create() rebuilds with ``owned`` kept (then ``missing`` names it).
    """

    __slots__ = ()

    def __new__(cls, owned, missing=(), outdated=False):
        return super().__new__(cls, owned, missing, outdated)


class Backend:
    """Interface; every method is idempotent and called under the per-VIP lock.

    One object per action, built by :func:`select` or :func:`choose` with
    what the action gives it: the deadline of its locks and where to
    remember its checks.
    """

    name = "?"
    max_buckets = 0
    # Whether it can keep a moved bucket's established connections on the old
    # owner (the graceful_handover parameter).
    graceful_handover = False
    # Whether it can serve an IPv6 VIP.
    ipv6 = False
    # Whether it can share a unicast cluster MAC (issue #16).
    unicast_mac = False
    # Whether its owned buckets can expire unless renewed (owner_lease).
    owner_lease = False
    # Whether the kernel announces deletions of its state, so that a guard
    # can put it back after a firewall reload (clusterip.guard).
    guarded = False
    # What the monitor names when nothing of the VIP's filter is left.
    filter_description = "packet filter"

    def __init__(self, lock_deadline: float | None = None, memo: Memo | None = None):
        # time.monotonic() by which any lock the backend takes must be held
        # (from the action's timeout); None: the backend's default.
        self.lock_deadline = lock_deadline
        # A clusterip.memo.Memo for the VIP's full checks; None: none kept.
        self.memo = memo

    def kernel_supports(self) -> bool:
        """Whether the running kernel has the mechanism (what backend=auto looks at)."""
        raise NotImplementedError

    def serves(self, params: Params) -> bool:
        """Whether this node's kernel holds the VIP's filter of this backend now
        (cheap: what backend=auto looks at on every action)."""
        raise NotImplementedError

    def check_available(self) -> None:
        """Raise NotInstalled when this kernel cannot run the backend (every action)."""
        raise NotImplementedError

    def check_libraries(self) -> None:
        """Raise NotInstalled when what changes the filter cannot work here: a
        missing library, or one that cannot build the rules (start, stop and
        validate-all; the monitor reads without it)."""

    # --- the VIP's state: the remembered full check -----------------------------

    def state(self, params: Params, placement: Placement | None) -> VipState | None:
        """A VipState, or None when nothing of this VIP exists on the node.

        The full check (_full_state) reads the rules through the backend's
        library; its verdict is remembered (self.memo) with the rules' bytes
        as the kernel dumps them (_fingerprint).  While the kernel dumps the
        same bytes, the owned buckets (_owned) are all that is read: the
        monitor's common case.  A verdict is remembered only when it found
        every rule and the rules did not change while it ran.  The owned
        buckets are read once, here, and handed to the hooks that need them.
        """
        joined = placement is None or address.cluster_mac_accepted(placement.nic,
                                                                   params.clustermac)
        multicast = () if joined else (mac_filter_missing(params, placement),)
        seen = self._fingerprint(params)
        owned = self._owned(params)
        if not self._present(params, seen, owned):
            return None
        unreadable = self._unreadable(params)
        if unreadable:
            return VipState(owned=owned or frozenset(), missing=tuple(unreadable) + multicast,
                            outdated=True)
        key = self._memo_key(params, placement)
        if seen is not None and owned is not None and self.memo is not None \
                and self.memo.recall(key) == seen:
            return VipState(owned=owned, missing=multicast)
        state = self._full_state(params, placement, owned, multicast)
        if state is not None and state.missing == multicast and seen is not None \
                and self.memo is not None and self._fingerprint(params) == seen:
            self.memo.remember(key, seen)
        return state

    def forget(self):
        if self.memo is not None:
            self.memo.forget()

    # Hooks of state(), filled in by each backend.

    def _fingerprint(self, params: Params) -> bytes | None:
        """The VIP's rules as the kernel encodes them, read without the
        library; None when unreadable (then nothing is remembered)."""
        raise NotImplementedError

    def _owned(self, params: Params) -> frozenset[int] | None:
        """The owned buckets, read without the library; None when unreadable."""
        raise NotImplementedError

    def _present(self, params: Params, fingerprint: bytes | None,
                 owned: frozenset[int] | None) -> bool:
        """False when the cheap reads (_fingerprint, _owned) prove nothing of
        the VIP exists."""
        return True

    def _unreadable(self, params: Params) -> list[str]:
        """[what is missing] when the rules exist in an older version's layout,
        which the full check must not read (create() rebuilds it); [] normally."""
        return []

    def _memo_key(self, params: Params, placement: Placement | None) -> bytes:
        """What a verdict depends on besides the rules: the parameters (but not
        the instance's bucket: instances share the VIP's rules), the placement,
        and whatever else the backend reads (see memo_key)."""
        return memo_key(params, placement)

    def _full_state(self, params: Params, placement: Placement | None,
                    owned: frozenset[int] | None,
                    multicast: tuple[str, ...]) -> VipState | None:
        """The full check's VipState (None: nothing there); ``owned``: what
        _owned read; ``multicast``: the missing-membership entry, () when joined."""
        raise NotImplementedError

    # --- changes ---------------------------------------------------------------

    def create(self, params: Params, placement: Placement, owned: frozenset[int]) -> None:
        """Build (or rebuild, replacing) everything for the VIP with these buckets owned."""
        raise NotImplementedError

    def add_bucket(self, params: Params, bucket: int) -> None:
        raise NotImplementedError

    def remove_bucket(self, params: Params, bucket: int) -> None:
        raise NotImplementedError

    def renew_bucket(self, params: Params, bucket: int) -> bool:
        """Give an owned bucket params.owner_lease seconds to live again,
        atomically (its packets never meet it missing); False when it is
        gone (expired or removed), and then nothing is added."""
        raise NotImplementedError

    def destroy(self, params: Params, placement: Placement | None) -> None:
        """Remove everything of the VIP; success when nothing is there."""
        raise NotImplementedError

    def inventory(self) -> list[dict]:
        """Every VIP this backend serves on the node, for ``clusterip status``:
        [{"vip", "backend", "nic", "clustermac", "hashmode", "hash_init",
        "buckets", "owned": [..], "counters": {bucket: {"packets", "bytes"}}}],
        plus "total" (the packets and bytes of all buckets) where the backend
        counts only those, and "problem" where a VIP's rules cannot be read."""
        raise NotImplementedError


def mac_filter_missing(params, placement):
    """How the monitor names a NIC that no longer accepts the cluster MAC."""
    if address.is_unicast(params.clustermac):
        return "unicast filter entry of %s for %s" % (placement.nic, params.clustermac)
    return "multicast membership of %s in %s" % (placement.nic, params.clustermac)


def memo_key(params, placement, *more):
    """The memo key of a verdict on these parameters and this placement, and
    whatever else the backend names."""
    # Nor drain_timeout: it changes what a stop does, not the rules.
    return repr((params._replace(bucket=0, drain_timeout=0.0), placement) + more).encode()


def inventory():
    """inventory() of every backend that can run here (a node runs one, normally)."""
    found = []
    for backend in (_build(name) for name in _REGISTRY):
        if backend.kernel_supports():
            try:
                backend.check_available()
            except NotInstalled:
                continue
            found.extend(backend.inventory())
    return found


# name -> (module, class).
_REGISTRY = {
    "clusterip": ("clusterip.backends.clusterip", "ClusteripBackend"),
    "nft": ("clusterip.backends.nft", "NftBackend"),
}


def _build(name, **context):
    module, cls = _REGISTRY[name]
    # __import__ with a fromlist returns the submodule itself; importlib's
    # import_module would cost its own import (with warnings), ~0.6 ms.
    return getattr(__import__(module, fromlist=[cls]), cls)(**context)


def choose(requested: str, lock_deadline: float | None = None,
           memo: Memo | None = None, params: Params | None = None) -> Backend:
    """The backend ``backend=requested`` means on this kernel, unchecked (no root needed).

    ``auto`` is nft wherever nf_tables can hold the agent's tables, since
    only a choice every node of a cluster makes alike is right, and nft is
    the one backend every supported kernel can run (Linux 6.3 removed
    CLUSTERIP; nf_tables is in 6.1 too).  CLUSTERIP only where the kernel has
    it and its nf_tables cannot hold the tables (Debian's user-mode-linux 6.1
    has no ip, ip6 or arp chains), or, with ``params``, for a VIP this node
    serves with a CLUSTERIP rule now: started before auto meant nft, it keeps
    its backend until it stops (README, "From CLUSTERIP to nft").  Never by
    which libraries happen to be installed: a missing library is an error
    (5), not a reason to fall back.
    """
    context = {"lock_deadline": lock_deadline, "memo": memo}
    if requested != "auto":
        return _build(requested, **context)
    nft = _build("nft", **context)
    clusterip = _build("clusterip", **context)
    if not clusterip.kernel_supports():
        return nft  # nothing to choose: nft is the only backend here
    if params is not None and clusterip.serves(params):
        return clusterip
    return nft if nft.kernel_supports(params) else clusterip


def select(params: Params, lock_deadline: float | None = None,
           memo: Memo | None = None) -> Backend:
    """The backend for these parameters, checked against this kernel (root)."""
    backend = choose(params.backend, lock_deadline, memo, params)
    backend.check_available()
    return check_supported(backend, params)
def check_supported(backend: Backend, params: Params) -> Backend:
    """The backend, or NotConfigured (6) when it cannot do what params ask.

    Needs no root, so validate-all checks it for any user.  ``auto`` does not
    fall back to nft for what the kernel's choice cannot do (IPv6,
    graceful_handover and draining, a unicast cluster MAC): it refuses, so that the backend
    of every VIP on a node follows from the kernel alone and an administrator's explicit
    ``backend=nft`` is the one way to mix them.
    """
    if params.total_buckets > backend.max_buckets:
        raise NotConfigured("clone-max=%d exceeds the %s backend's limit of %d buckets"
                            % (params.total_buckets, backend.name, backend.max_buckets))
    if params.ipv6 and not backend.ipv6:
        raise NotConfigured("ip=%s is IPv6, which needs backend=nft: the %s backend "
                            "serves IPv4 only" % (params.ip, backend.name))
    if address.is_unicast(params.clustermac) and not backend.unicast_mac:
        raise NotConfigured("clustermac=%s is unicast, which needs backend=nft: the %s "
                            "backend's kernel target takes a multicast MAC only"
                            % (params.clustermac, backend.name))
    if params.owner_lease and not backend.owner_lease:
        raise NotConfigured("owner_lease=%d needs backend=nft: the %s backend's buckets "
                            "cannot expire" % (params.owner_lease, backend.name))
    if params.drain_timeout and not backend.graceful_handover:
        raise NotConfigured("drain_timeout=%g needs backend=nft: the %s backend has no "
                            "graceful_handover, which draining keeps the established "
                            "connections served with" % (params.drain_timeout, backend.name))
    if params.graceful_handover and not backend.graceful_handover:
        raise NotConfigured("graceful_handover=true needs backend=nft: the %s backend "
                            "drops every packet of a bucket this node does not own, "
                            "established or not" % backend.name)
    return backend
