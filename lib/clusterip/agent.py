"""start / stop / monitor / validate-all, written against the Backend
interface, and the edge that maps results and exceptions to OCF exit codes.

The agent's state on a node is the kernel's state plus one marker file per
clone instance under HA_RSCTMP (a tmpfs, so gone after a reboot): the marker
says "this instance was started here and not stopped", which is what lets
monitor tell a broken instance (1) from one that never ran here (7).
"""

import os
import sys
import time

from clusterip import address, ocf
from clusterip.testhooks import step
from clusterip.errors import (AgentError, InvalidArgument, NotConfigured, NotInstalled,
                              NotPermitted, Unimplemented)

USAGE = "usage: clusterip {start|stop|monitor|meta-data|validate-all|usage}"
STATE_ACTIONS = ("start", "stop", "monitor")
DEFAULT_RSCTMP = "/run/resource-agents"  # Pacemaker sets HA_RSCTMP only for shell agents
DEFAULT_TIMEOUT = 20.0


class Instance:
    """One clone instance of the VIP on this node, with its environment."""

    def __init__(self, params, env, logger):
        self.params = params
        self.log = logger
        # Created by lock(), not here: validate-all and a non-root caller (exit 4)
        # must not need to write anything.
        self.rsctmp = env.get("HA_RSCTMP") or DEFAULT_RSCTMP
        base = os.path.join(self.rsctmp, "clusterip-%s" % params.vip)
        self.lock_path = base + ".lock"
        self.memo_path = base + ".checked"
        self.marker_path = "%s.bucket%d.started" % (base, params.bucket)
        self.timeout = _action_timeout(env)
        # Every lock of this action (the per-VIP one, the backend's) is given up
        # by then, leaving part of Pacemaker's timeout for the work after the wait.
        self.lock_deadline = time.monotonic() + max(1.0, self.timeout * 0.75)
        # Set by Pacemaker only: outside a cluster there are no peers to compare with.
        self.node_name = env.get("OCF_RESKEY_CRM_meta_on_node") or None
        self._backend = None

    @property
    def backend(self):
        if self._backend is None:
            from clusterip import backends

            self._backend = backends.select(self.params)
            self._backend.lock_deadline = self.lock_deadline
            self._backend.memo_path = self.memo_path
        return self._backend

    def lock(self):
        from clusterip import lock

        os.makedirs(self.rsctmp, mode=0o755, exist_ok=True)
        return lock.held(self.lock_path, max(0.0, self.lock_deadline - time.monotonic()))

    def marked(self):
        return os.path.exists(self.marker_path)

    def mark(self):
        with open(self.marker_path, "w", encoding="ascii") as f:
            f.write("bucket %d of %d\n" % (self.params.bucket, self.params.total_buckets))

    def unmark(self):
        try:
            os.unlink(self.marker_path)
        except FileNotFoundError:
            pass

    # --- monitor ------------------------------------------------------------

    def problems(self):
        """(running_here, missing pieces) for this instance on this node."""
        p = self.params
        try:
            placement = address.resolve(p)
        except InvalidArgument as error:  # the NIC is gone
            return False, [str(error)]
        missing = [] if address.address_present(p.vip, placement) else [
            "address %s/%d on %s" % (p.vip, placement.prefixlen, placement.nic)]
        if not p.cloned:
            return not missing, missing
        state = self.backend.state(p, placement)
        if state is None:
            return False, ["%s of %s" % (self.backend.filter_description, p.vip)] + missing
        running = p.bucket in state.owned
        if not running:
            missing.insert(0, "bucket %d" % p.bucket)
        return running, list(state.missing) + missing

    def monitor(self):
        running, missing = self.problems()
        if running and not missing:
            return ocf.SUCCESS
        if running or self.marked():
            raise _Failed("%s: missing %s" % (self._name(), ", ".join(missing)))
        return ocf.NOT_RUNNING

    # --- start / stop -------------------------------------------------------

    def start(self):
        p = self.params
        backend = self.backend if p.cloned else None  # fail early (5/6) before touching anything
        if backend is not None:
            backend.check_libraries()
        published = None
        if backend is not None and self.node_name:
            published = self._check_peers(backend)
        first_here = True  # the first instance of the VIP on this node
        with self.lock():
            step("start:locked")
            placement = address.resolve(p)
            self.mark()  # first: a start killed half-way is "failed", not "never ran"
            step("start:marked")
            if backend is None:
                address.add_address(p.vip, placement)
                self._announce(placement, None)
            else:
                state = backend.state(p, placement)
                first_here = state is None
                if state is None or state.missing:
                    # First instance on this node, or something is broken: (re)build
                    # the filter before the address exists, so the node never accepts
                    # the whole VIP unfiltered.
                    owned = (state.owned if state else frozenset()) | {p.bucket}
                    if state is not None:
                        self.log.warning("rebuilding the filter for %s: %s"
                                         % (p.vip, ", ".join(state.missing)))
                    backend.create(p, placement, owned)
                elif p.bucket not in state.owned:
                    backend.add_bucket(p, p.bucket)
                step("start:filter")
                address.add_address(p.vip, placement)
                step("start:address")
                if state is None:
                    self._announce(placement, p.clustermac)
            running, missing = self.problems()
        if not running or missing:
            raise _Failed("start did not complete: missing %s" % ", ".join(missing))
        # Published once the bucket is served (a failover's traffic need not wait
        # for attrd_updater, ~20 ms), and not again by every further instance on
        # a node that published it when its first instance started.
        if published is not None and (first_here or published.get(self.node_name) != backend.name):
            from clusterip import peers

            peers.publish(p.vip, self.node_name, backend.name, self.log)
        self.log.info("started: %s" % self._describe(placement))
        return ocf.SUCCESS

    def _check_peers(self, backend):
        """What the nodes published for the VIP; InvalidArgument (2) when another
        node serves it with a different backend."""
        from clusterip import peers

        vip = self.params.vip
        published = peers.published(vip, self.log)
        others = peers.conflicts(published, self.node_name, backend.name)
        if others:
            raise InvalidArgument(
                "this node would serve %s with backend %s but %s: nodes that hash "
                "differently drop or duplicate traffic; give all nodes the same kernel "
                "capability or set backend= explicitly" % (vip, backend.name, ", ".join(
                    "%s uses %s" % item for item in sorted(others.items()))))
        return published

    def _name(self):
        p = self.params
        return "bucket %d of %s" % (p.bucket, p.vip) if p.cloned else p.vip

    def _announce(self, placement, mac):
        failure = address.announce(placement.nic, self.params.vip, mac)
        if failure:
            self.log.warning(failure)

    def _describe(self, placement):
        p = self.params
        if not p.cloned:
            return "%s/%d on %s" % (p.vip, placement.prefixlen, placement.nic)
        return "bucket %d of %d of %s/%d on %s (%s, %s)" % (
            p.bucket, p.total_buckets, p.vip, placement.prefixlen, placement.nic,
            self.backend.name, p.hashmode)

    def stop(self):
        p = self.params
        with self.lock():
            step("stop:locked")
            try:
                placement = address.resolve(p)
            except InvalidArgument:
                placement = None  # the NIC is gone: clean what is left elsewhere
            if p.cloned:
                self._stop_bucket(placement)
            else:
                address.remove_address(p.vip)
            self.unmark()
        self.log.info("stopped %s" % self._name())
        return ocf.SUCCESS

    def _stop_bucket(self, placement):
        p = self.params
        try:
            backend = self.backend
            backend.check_libraries()
        except NotInstalled:
            # Nothing of this backend can exist here; the address may (a stop after
            # an upgrade removed the backend's libraries).
            address.remove_address(p.vip)
            return
        except NotConfigured:
            # Parameters the backend cannot serve (clone-max above its limit,
            # graceful_handover on clusterip; checked after its availability):
            # 6 for start and monitor, but a failed stop gets the node fenced, and
            # what an earlier configuration left must go.
            from clusterip import backends

            backend = backends.choose(p.backend)
            backend.lock_deadline = self.lock_deadline
        state = backend.state(p, placement) if placement else None
        owned = state.owned if state else frozenset()
        if p.bucket in owned:
            backend.remove_bucket(p, p.bucket)
            step("stop:bucket-removed")
        if not owned - {p.bucket}:
            # The last instance on this node: remove every shared piece, the
            # address first so that the node never holds it unfiltered.
            address.remove_address(p.vip)
            step("stop:address-removed")
            backend.destroy(p, placement)
            step("stop:destroyed")
            if self.node_name:
                from clusterip import peers

                peers.withdraw(p.vip, self.node_name, self.log)

    # --- validate-all -------------------------------------------------------

    def validate(self):
        placement = address.resolve(self.params)
        if self.params.cloned and os.geteuid() == 0:
            self.backend.check_libraries()  # kernel, libraries and bucket limit (5 / 6)
        elif self.params.cloned:
            from clusterip import backends

            # Without root the kernel cannot be asked (nft needs CAP_NET_ADMIN),
            # but what the backend supports is known.
            backends.check_supported(backends.choose(self.params.backend), self.params)
        self.log.debug("valid: %s/%d on %s" % (self.params.vip, placement.prefixlen,
                                               placement.nic))
        return ocf.SUCCESS


class _Failed(AgentError):
    """The instance should run here but does not, fully (OCF_ERR_GENERIC)."""


def _action_timeout(env):
    try:
        return max(1.0, int(env.get("OCF_RESKEY_CRM_meta_timeout", "")) / 1000.0)
    except ValueError:
        return DEFAULT_TIMEOUT


def run(action, env, logger):
    """Run one action; returns the exit code or raises AgentError."""
    if action == "meta-data":
        from clusterip import metadata

        sys.stdout.write(metadata.document())
        return ocf.SUCCESS
    if action in ("usage", "help"):
        print(USAGE)
        return ocf.SUCCESS
    if action not in STATE_ACTIONS + ("validate-all",):
        print(USAGE, file=sys.stderr)
        raise Unimplemented("action %r is not implemented" % action)
    from clusterip import params

    try:
        parsed = params.parse(env)
    except NotConfigured as error:
        if action != "stop":
            raise
        # Nothing can have been started with a configuration that never
        # parsed, and a failed stop makes Pacemaker fence the node.
        logger.warning("stop with an invalid configuration: %s; nothing to do" % error)
        return ocf.SUCCESS
    instance = Instance(parsed, env, logger)
    if action == "validate-all":
        return instance.validate()
    if os.geteuid() != 0:
        raise NotPermitted("%s needs root (it changes addresses and packet filters)" % action)
    return getattr(instance, action)()


def main(argv=None, env=None):
    """The OCF edge: one action, one exit code, one exit reason on failure."""
    argv = sys.argv if argv is None else argv
    env = os.environ if env is None else env
    action = argv[1] if len(argv) > 1 else ""
    logger = ocf.Logger(env)
    try:
        return run(action, env, logger)
    except AgentError as error:
        ocf.exit_reason(env, error, logger)
        return error.exit_code
    except Exception as error:  # a bug: never hand Pacemaker a bare traceback
        import traceback

        logger.debug(traceback.format_exc())
        ocf.exit_reason(env, "internal error in %s: %s: %s"
                        % (action, type(error).__name__, error), logger)
        return ocf.ERR_GENERIC
