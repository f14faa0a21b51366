"""One instance of the VIP on this node: start, stop, monitor, validate-all.

Two kinds, each reading top to bottom: a PlainInstance is the whole VIP on
one node (an address, as IPaddr2 adds it); a ClonedInstance is one bucket of
a globally-unique clone (instance i owns bucket i+1), sharing the VIP's
address and packet filter with the node's other instances of it.  Both are
written against clusterip.address and the Backend interface only.

The agent's state on a node is the kernel's state plus one marker file per
clone instance under HA_RSCTMP (a tmpfs, so gone after a reboot): the marker
says "this instance was started here and not stopped", which is what lets
monitor tell a broken instance (1) from one that never ran here (7).
"""

import posix  # not os: see clusterip.agent.environment
import time

from clusterip import address, backends, ocf
from clusterip.errors import AgentError, InvalidArgument, NotConfigured, NotInstalled
from clusterip.memo import Memo
from clusterip.params import lease_problem, monitor_interval
from clusterip.testhooks import step

# resource-agents' ocf-directories sets HA_RSCTMP for shell agents; Pacemaker
# itself does not, so a Python agent usually gets this default.
DEFAULT_RSCTMP = "/run/resource-agents"
DEFAULT_TIMEOUT = 20.0
MARKER = "bucket%d.started"  # an instance's marker, after "clusterip-<VIP>."


def state_file(rsctmp, vip, name):
    """``$HA_RSCTMP/clusterip-<VIP>.<name>``: every file of the agent's state
    for a VIP is named so (the lock, the memo, the markers, the background
    processes' handshake files)."""
    return "%s/clusterip-%s.%s" % (rsctmp.rstrip("/"), vip, name)  # as os.path.join


class Failed(AgentError):
    """The instance should run here but does not, fully (OCF_ERR_GENERIC)."""


def for_params(params, env, logger):
    """The instance these parameters describe."""
    return (ClonedInstance if params.cloned else PlainInstance)(params, env, logger)


class Instance:
    """What both kinds share: the environment, the per-VIP lock, the marker."""

    def __init__(self, params, env, logger):
        self.params = params
        self.env = env
        self.log = logger
        # Created by lock(), not here: validate-all and a non-root caller (exit 4)
        # must not need to write anything.
        self.rsctmp = env.get("HA_RSCTMP") or DEFAULT_RSCTMP
        vip = params.vip
        self.lock_path = state_file(self.rsctmp, vip, "lock")
        self.memo_path = state_file(self.rsctmp, vip, "checked")
        self.marker_path = state_file(self.rsctmp, vip, MARKER % params.bucket)
        # The background sender's (announcements); the guard's and its log
        # (guard; cloned nft instances only).
        self.announcing_path = state_file(self.rsctmp, vip, "announcing")
        self.guard_path = state_file(self.rsctmp, vip, "guard")
        self.repairs_path = state_file(self.rsctmp, vip, "repairs")
        self.announced_at = None  # time.monotonic() of this start's own announcement
        # When this action began and how long Pacemaker gives it (s).
        self.began, self.timeout = time.monotonic(), _action_timeout(env)
        # Every lock of this action (the per-VIP one, the backend's) is given up
        # by then, leaving part of Pacemaker's timeout for the work after the wait.
        self.lock_deadline = self.began + max(1.0, self.timeout * 0.75)
        # Set by Pacemaker only: outside a cluster there are no peers to compare with.
        self.node_name = env.get("OCF_RESKEY_CRM_meta_on_node") or None

    def lock(self, timings=None):
        import os  # here: what takes the lock imports it anyway (clusterip.lock)

        from clusterip import lock

        os.makedirs(self.rsctmp, mode=0o755, exist_ok=True)
        return lock.held(self.lock_path, max(0.0, self.lock_deadline - time.monotonic()),
                         timings)

    def marked(self):
        try:
            posix.stat(self.marker_path)
        except OSError:
            return False
        return True

    def mark(self):
        with open(self.marker_path, "w", encoding="utf-8") as f:
            f.write("bucket %d of %d\n" % (self.params.bucket, self.params.total_buckets))

    def unmark(self):
        try:
            posix.unlink(self.marker_path)
        except FileNotFoundError:
            pass

    def monitor(self):
        return self._verdict(*self.problems())

    def _verdict(self, running, missing):
        if running and not missing:
            return ocf.SUCCESS
        if running or self.marked():
            raise Failed("%s: missing %s" % (self.name(), ", ".join(missing)))
        return ocf.NOT_RUNNING

    def recurring(self):
        """Whether this monitor is a recurring one of an instance Pacemaker
        started (interval > 0): not a probe, not a call by hand."""
        return monitor_interval(self.env) > 0

    def problems(self):
        """(running here, [missing pieces]) on this node."""
        raise NotImplementedError

    def name(self):
        return self.params.vip

    def _resolve(self):
        """The placement, or None when the NIC is gone (stop cleans what is left)."""
        try:
            return address.resolve(self.params)
        except InvalidArgument:
            return None

    def _add_address(self, placement):
        warning = address.add_address(self.params, placement)
        if warning:
            self.log.warning(warning)

    def _announce(self, placement, mac=None):
        """Start's own announcement, under the lock: the first of arp_count.

        An older background sender (a start on a node that holds the address
        already) is told to end: the one _repeat or _guard spawns replaces it.
        """
        self._stop_announcing()
        if self.params.arp_count == 0:
            return
        failure = address.announce(placement.nic, self.params.vip, mac)
        self.announced_at = time.monotonic()  # the repeats keep arp_interval from here
        if failure:
            self.log.warning(failure)

    def _repeats(self, placement, mac=None):
        """The other arp_count - 1 announcements as announcements.spawn's
        arguments, or None when none are owed."""
        from clusterip import announcements

        count = announcements.repeats(self.params)
        if not count:
            return None
        interval = self.params.arp_interval / 1000.0
        return dict(path=self.announcing_path, placement=placement, vip=self.params.vip,
                    mac=mac, count=count, interval=interval,
                    first_at=None if self.announced_at is None
                    else self.announced_at + interval)

    def _repeat(self, repeats):
        """Those repeats (if any) from a sender of their own, after the lock is released."""
        from clusterip import announcements

        if not repeats:
            return
        try:
            announcements.spawn(**repeats)
        except OSError as error:  # best effort, like the announcement itself
            self.log.warning("cannot repeat the announcement of %s in the background: %s"
                             % (self.params.vip, error.strerror))

    def _stop_announcing(self):
        """The background sender exits before its next send (no kill: see announcements)."""
        from clusterip import announcements

        announcements.forget(self.announcing_path)

    @staticmethod
    def _check_complete(running, missing):
        if not running or missing:
            raise Failed("start did not complete: missing %s" % ", ".join(missing))

    def _validated(self, placement):
        self.log.debug("valid: %s/%d on %s" % (self.params.vip, placement.prefixlen,
                                               placement.nic))
        return ocf.SUCCESS


class PlainInstance(Instance):
    """The whole VIP on this node: one address, nothing shared."""

    def problems(self):
        try:
            placement = address.resolve(self.params)
        except InvalidArgument as error:  # the NIC is gone
            return False, [str(error)]
        missing = address.address_problems(self.params, placement)
        return not missing, missing

    def start(self):
        p = self.params
        with self.lock():
            step("start:locked")
            placement = address.resolve(p)
            self.mark()  # first: a start killed half-way is "failed", not "never ran"
            step("start:marked")
            self._add_address(placement)
            self._announce(placement)
            running, missing = self.problems()
        self._check_complete(running, missing)
        self._repeat(self._repeats(placement))
        self.log.info("started: %s/%d on %s" % (p.vip, placement.prefixlen, placement.nic))
        return ocf.SUCCESS

    def stop(self):
        with self.lock():
            step("stop:locked")
            self._stop_announcing()
            address.remove_address(self.params.vip)
            self.unmark()
        self.log.info("stopped %s" % self.name())
        return ocf.SUCCESS

    def validate(self):
        return self._validated(address.resolve(self.params))


class ClonedInstance(Instance):
    """One bucket of the VIP: the address and the backend's filter are shared
    by the node's instances of the VIP; the first creates them, the last
    removes them."""

    def backend(self, checked=True):
        """The backend for this action; ``checked``: against this kernel and
        the parameters (5 / 6), else only chosen (what stop can still use)."""
        context = {"lock_deadline": self.lock_deadline, "memo": Memo(self.memo_path)}
        if checked:
            return backends.select(self.params, **context)
        return backends.choose(self.params.backend, params=self.params, **context)

    def name(self):
        return "bucket %d of %s" % (self.params.bucket, self.params.vip)

    def _touch_marker(self):
        try:
            posix.utime(self.marker_path)
        except OSError:
            pass  # no marker: the monitor reports the instance as it finds it

    def lease_current(self):
        """Whether the bucket's lease, as the marker's time says, has not run out
        (always, without a lease): what the guard may repair."""
        if not self.params.owner_lease:
            return True
        try:
            return time.time() - posix.stat(self.marker_path).st_mtime < self.params.owner_lease
        except OSError:
            return False

    def problems(self, backend=None):
        return self._inspect(backend)[:2]

    def _inspect(self, backend=None):
        """(running here, [missing pieces], the backend's VipState or None,
        the backend: None when the NIC is gone, which is asked first)."""
        p = self.params
        try:
            placement = address.resolve(p)
        except InvalidArgument as error:  # the NIC is gone
            return False, [str(error)], None, None
        backend = backend or self.backend()
        missing = address.address_problems(self.params, placement)
        state = backend.state(p, placement)
        if state is None:
            return (False, ["%s of %s" % (backend.filter_description, p.vip)] + missing,
                    None, backend)
        running = p.bucket in state.owned
        if not running:
            missing.insert(0, "bucket %d" % p.bucket)
        return running, list(state.missing) + missing, state, backend

    def monitor(self):
        """The monitor; a recurring one of an instance started here also
        finishes an upgrade of the agent in place, which Pacemaker does not
        notice (no restart), as start would: the VIP's filter rebuilt where
        it is in an older version's layout (buckets kept), its address added
        again where it lacks a flag an older version did not set
        (noprefixroute), and the guard spawned that an older version did
        not have (see _guard).  The common monitor pays for none of it: the
        first two only where something is missing.  With owner_lease, a
        running instance's monitor also renews its bucket, and touches its
        marker: the time of the last renewal, which the guard reads
        (lease_current)."""
        p = self.params
        if p.owner_lease:
            problem = lease_problem(p, self.env)
            if problem:
                raise NotConfigured(problem)
        running, missing, state, backend = self._inspect()
        if state is not None and missing and self.recurring() and self.marked() \
                and self._finish_upgrade(backend):
            running, missing, state, backend = self._inspect(backend)
        if running and p.owner_lease:
            if backend.renew_bucket(p, p.bucket):
                self._touch_marker()
            else:  # expired since _inspect() read it
                running = False
                missing.insert(0, "bucket %d" % p.bucket)
        if running and not missing and backend.guarded and p.firewall_guard \
                and self.recurring():
            self._guard(None)
        return self._verdict(running, missing)

    def _finish_upgrade(self, backend):
        """Under the lock (another instance's monitor may have done it
        meanwhile): start's rebuild of a filter in an older layout, with the
        owned buckets kept, and start's replacement of an address without
        the flags it needs.  Whether it changed anything."""
        p = self.params
        with self.lock():
            step("monitor:locked")
            placement = address.resolve(p)
            state = backend.state(p, placement)
            changed = False
            if state is not None and state.outdated:
                self._rebuild(backend, placement, state, state.owned)
                changed = True
            if state is not None and address.lacks_flags(p, placement):
                self._add_address(placement)
                self.log.warning("added %s/%d on %s again with the flags it needs (an older "
                                 "version added it without)" % (p.vip, placement.prefixlen,
                                                                placement.nic))
                changed = True
        return changed

    def _rebuild(self, backend, placement, state, owned):
        """(Re)build the VIP's filter, these buckets owned, in one transaction;
        ``state``: what was there (None: nothing), said in one log line."""
        began = time.monotonic()
        backend.create(self.params, placement, owned)
        if state is not None:
            self.log.warning("rebuilt the filter for %s in %.0f ms, buckets %s kept: %s" % (
                self.params.vip, (time.monotonic() - began) * 1000,
                ",".join(map(str, sorted(owned))) or "none", ", ".join(state.missing)))

    def start(self, repair=False):
        """``repair``: the guard's start after a firewall reload, which changes
        nothing unless the instance is still marked started here (else
        NOT_RUNNING) and, under the lock, still misses something (else
        None), and spawns no other guard."""
        p = self.params
        backend = self.backend()  # fail early (5/6) before touching anything
        backend.check_libraries()
        published = self._check_peers(backend) if self.node_name else None
        timings = {}
        with self.lock(timings):
            step("start:locked")
            if repair and not self.marked():
                return ocf.NOT_RUNNING
            if repair and self.problems(backend) == (True, []):
                # What the guard saw missing was a start in progress (marked
                # first, its bucket added under this lock): nothing to repair.
                return None
            placement = address.resolve(p)
            address.check_cluster_mac(p, placement)
            self.mark()  # first: a start killed half-way is "failed", not "never ran"
            step("start:marked")
            state = backend.state(p, placement)
            if state is None or state.missing:
                # First instance on this node, or something is broken: (re)build
                # the filter before the address exists, so the node never accepts
                # the whole VIP unfiltered.
                self._rebuild(backend, placement, state,
                              (state.owned if state else frozenset()) | {p.bucket})
            elif p.bucket not in state.owned:
                backend.add_bucket(p, p.bucket)
            step("start:filter")
            self._add_address(placement)
            step("start:address")
            if state is None:
                self._announce(placement, p.clustermac)
            running, missing = self.problems(backend)
        self._check_complete(running, missing)
        repeats = self._repeats(placement, p.clustermac) if state is None else None
        if backend.guarded and p.firewall_guard and not repair and self._guard(repeats):
            repeats = None  # the guard's process sends them
        self._repeat(repeats)
        # Published once the bucket is served (a failover's traffic need not wait
        # for attrd_updater, ~20 ms), and not again by every further instance on
        # a node that published it when its first instance started.
        if published is not None and (state is None
                                      or published.get(self.node_name) != backend.name):
            from clusterip import peers

            peers.publish(p.vip, self.node_name, backend.name, self.log)
        # The lock's figures: a node taking over many buckets of one VIP at
        # once runs their starts one after another through it.
        self.log.info("started: bucket %d of %d of %s/%d on %s (%s, %s; the VIP's lock: "
                      "waited %.0f ms, held %.0f ms)" % (
                          p.bucket, p.total_buckets, p.vip, placement.prefixlen, placement.nic,
                          backend.name, p.hashmode, timings["waited"] * 1000,
                          timings["held"] * 1000))
        return ocf.SUCCESS

    def _guard(self, repeats):
        """The guard of the VIP's tables on this node (see guard), after the lock:
        spawned by any start, and any recurring monitor of a served instance,
        that finds none alive, so that a guard that died (a start SIGKILLed
        before it spawned one, a kill by hand) is replaced, and a node
        upgraded in place from a version without guards gets one.  A monitor
        pays for the check only (its handshake file and /proc/<pid>/cmdline).
        A new guard also sends ``repeats`` (see _repeats); True if it does."""
        from clusterip import guard

        if guard.alive(self.guard_path):
            return False
        from clusterip import announcements  # here: the common monitor stops above

        try:
            guard.spawn(self.guard_path, self.env, sender=(
                repeats["path"], announcements.sender_argv(**repeats)) if repeats else None)
        except OSError as error:  # the monitor still notices what the guard would
            self.log.warning("cannot start the guard of %s's nft tables: %s"
                             % (self.params.vip, error.strerror))
            return False
        return bool(repeats)

    def _check_peers(self, backend):
        """What the nodes published for the VIP; Failed (1) when another node
        serves it with a different backend.

        1, not 2: the configuration is right, the cluster is in transition (a
        node not yet moved to nft, an older agent on a peer), and the conflict
        passes.  A failed start is banned from this node only until the
        clone's failure-timeout expires (every example sets one), then
        Pacemaker tries again by itself: no crm resource cleanup."""
        from clusterip import peers

        vip = self.params.vip
        published = peers.published(vip, self.log)
        others = peers.conflicts(published, self.node_name, backend.name)
        if others:
            raise Failed(
                "this node would serve %s with backend %s but %s: nodes that hash "
                "differently drop or duplicate traffic; move the whole clone to one "
                "backend (README: From CLUSTERIP to nft) or set backend= explicitly"
                % (vip, backend.name, ", ".join(
                    "%s uses %s" % item for item in sorted(others.items()))))
        return published

    def stop(self):
        """The bucket released; the last instance on this node also removes
        every shared piece, after a drain with drain_timeout (see _drain)."""
        with self.lock():
            step("stop:locked")
            placement = self._resolve()
            backend = self._stop_backend()
            draining = backend is not None and self._stop_bucket(backend, placement)
            self.unmark()
        if draining:
            self._drain(backend)
        self.log.info("stopped %s" % self.name())
        return ocf.SUCCESS

    def _stop_backend(self):
        """The backend the stop works with; None when nothing of it can exist
        here (then the address, if any, is removed already)."""
        try:
            backend = self.backend()
            backend.check_libraries()
        except NotInstalled:
            # Nothing of this backend can exist here; the address may (a stop
            # after an upgrade removed the backend's libraries).
            self._stop_announcing()
            address.remove_address(self.params.vip)
            return None
        except NotConfigured:
            # Parameters the backend cannot serve (clone-max above its limit,
            # graceful_handover on clusterip; checked after its availability):
            # 6 for start and monitor, but a failed stop gets the node fenced,
            # and what an earlier configuration left must go.
            return self.backend(checked=False)
        return backend

    def _stop_guarding(self):
        """The guard exits at its next wake-up (no kill: see background)."""
        from clusterip import background

        background.forget(self.guard_path)
        background.forget(self.repairs_path)

    def _stop_bucket(self, backend, placement):
        """Release the bucket; for the node's last instance remove every shared
        piece too, or, when it drains (_drains), keep them and return True."""
        p = self.params
        state = backend.state(p, placement) if placement else None
        owned = state.owned if state else frozenset()
        if p.bucket in owned:
            backend.remove_bucket(p, p.bucket)
            step("stop:bucket-removed")
        if owned - {p.bucket}:
            return False
        if self._drains(backend, placement, state):
            # No bucket is owned here now, so no new connection is accepted; the
            # guard is told already: it repairs instances marked started here,
            # and none is left.
            self._stop_guarding()
            step("stop:draining")
            return True
        self._remove_shared(backend, placement)
        return False

    def _drains(self, backend, placement, state):
        """Whether this last instance's stop drains: drain_timeout is set, the
        backend keeps established connections (graceful_handover, which
        drain_timeout needs), and the VIP's filter is there to keep them."""
        return bool(self.params.drain_timeout and backend.graceful_handover
                    and placement is not None and state is not None)

    def _remove_shared(self, backend, placement):
        """The last instance on this node: remove every shared piece, the
        address first so that the node never holds it unfiltered.  The guard
        is told first: the deletions below are the agent's own."""
        p = self.params
        self._stop_guarding()
        self._stop_announcing()
        address.remove_address(p.vip)
        step("stop:address-removed")
        backend.destroy(p, placement)
        step("stop:destroyed")
        if self.node_name:
            from clusterip import peers

            peers.withdraw(p.vip, self.node_name, self.log)

    def _drain(self, backend):
        """After the last bucket's release, outside the lock (the node's other
        actions on the VIP need not wait for it): until no TCP connection to the
        VIP is left here or drain_timeout passes, cut to fit the stop's own
        timeout (clusterip.drain); then, under the lock again, remove every
        shared piece, unless an instance of the VIP started here meanwhile."""
        from clusterip import drain
        from clusterip.kernel import sockdiag

        p = self.params
        seconds = drain.budget(p.drain_timeout, self.timeout, time.monotonic() - self.began)
        if seconds < p.drain_timeout:
            self.log.warning(
                "drain_timeout=%g cut to %.1f s: this stop's timeout is %g s, and %g s of it "
                "are kept for the teardown; give the stop operation a timeout of at least "
                "%d s" % (p.drain_timeout, seconds, self.timeout, drain.RESERVE,
                          drain.needed_stop_timeout(p.drain_timeout)))
        unreadable = []

        def count():
            try:
                return sockdiag.serving_count(p.packed)
            except OSError as error:
                if not unreadable:
                    self.log.warning("cannot count the connections to %s (sock_diag: %s): "
                                     "draining for %.1f s" % (p.vip, error.strerror, seconds))
                unreadable.append(error)
                return None

        first, left, took = drain.wait(count, seconds)
        step("stop:drained")
        self.log.info("drained %s in %.1f s: %s connection(s) at the start, %s left%s" % (
            p.vip, took, "?" if first is None else first, "?" if left is None else left,
            "" if left == 0 else " (drain_timeout passed)" if seconds == p.drain_timeout
            else " (the stop's timeout is near)"))
        # The lock may wait into the reserve's first half; the teardown has the rest.
        self.lock_deadline = max(self.lock_deadline,
                                 self.began + self.timeout - drain.RESERVE / 2)
        with self.lock():
            step("stop:relocked")
            placement = self._resolve()
            state = backend.state(p, placement) if placement else None
            if state is not None and state.owned:
                self.log.info("an instance of %s started here during the drain: its address "
                              "and filter stay" % p.vip)
                return
            self._remove_shared(backend, placement)

    def validate(self):
        placement = address.resolve(self.params)
        address.check_cluster_mac(self.params, placement)
        if self.params.drain_timeout:
            self._check_stop_timeout()
        if posix.geteuid() == 0:
            self.backend().check_libraries()  # kernel, libraries and bucket limit (5 / 6)
        else:
            # Without root the kernel cannot be asked (nft needs CAP_NET_ADMIN),
            # but what the backend supports is known.
            backends.check_supported(self.backend(checked=False), self.params)
        return self._validated(placement)

    def _check_stop_timeout(self):
        """Refuse (6) a drain_timeout that does not fit within the stop
        operation's timeout.  Pacemaker hands validate-all its own timeout
        (crm_resource --validate: --timeout or the default, 20 s), never the
        stop's, so the stop's is read from the CIB where the resource is
        configured already (crm_resource --validate -r); before that (pcs
        resource create, a call by hand) only a warning is possible when the
        drain needs a stop timeout above Pacemaker's default.  The stop cuts
        the drain to fit its own timeout in any case (see _drain)."""
        from clusterip import drain

        needed = drain.needed_stop_timeout(self.params.drain_timeout)
        resource = self.env.get("OCF_RESOURCE_INSTANCE")
        configured = drain.stop_timeout_in_cib(resource, DEFAULT_TIMEOUT) if resource else None
        if configured is not None:
            seconds, where = configured
            if needed > seconds:
                raise NotConfigured(
                    "drain_timeout=%g does not fit within the stop operation's timeout of %g s "
                    "(%s): the drain and %g s for the teardown need a stop timeout of at least "
                    "%d s" % (self.params.drain_timeout, seconds, where, drain.RESERVE, needed))
            return
        if needed > DEFAULT_TIMEOUT:
            self.log.warning("drain_timeout=%g needs a stop operation timeout of at least %d s, "
                             "above Pacemaker's default of %g s (op stop timeout=%ds); a "
                             "shorter one cuts the drain to end %g s before it"
                             % (self.params.drain_timeout, needed, DEFAULT_TIMEOUT, needed,
                                drain.RESERVE))


def _action_timeout(env):
    try:
        return max(1.0, int(env.get("OCF_RESKEY_CRM_meta_timeout", "")) / 1000.0)
    except ValueError:
        return DEFAULT_TIMEOUT
