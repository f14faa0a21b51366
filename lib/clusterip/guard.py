"""The guard: a VIP's nft tables put back as soon as a firewall reload deletes them.

Why: Debian's nftables.service reloads with ``nft -f /etc/nftables.conf``,
whose shipped text begins with ``flush ruleset``: the agent's tables go
with everyone else's, and the node's buckets are dark until the next
monitor notices (measured: 9.6 s with the examples' 10 s interval), after
which Pacemaker records a failure and restarts the instance.  The kernel
says at once what changed: nf_tables sends every committed change to the
NFNLGRP_NFTABLES netlink group, ending each transaction with NEWGEN.

So a start of a cloned instance (nft backend, ``firewall_guard`` on, the
default) that finds no guard of its VIP alive spawns one, a background
process of :mod:`clusterip.background` (handshake file
``$HA_RSCTMP/clusterip-<VIP>.guard``).  It listens to that group; SETTLE
seconds after a transaction that deleted anything of the VIP's tables (the
table, a chain, a rule, the set, an element, a counter) it runs the start
of every instance *marked started on this node* whose monitor finds
something missing, exactly as Pacemaker's recovery would, under the VIP's
lock, only at once: start rebuilds the filter with the node's
buckets, adds a missing element, and announces the cluster MAC again
(clients that learnt a node's own MAC meanwhile learn the cluster MAC
back).  Why this is sound:

* it only ever does what a start of an instance Pacemaker started here
  does, under the same lock, so it serialises with Pacemaker's actions; an
  instance stopped meanwhile has no marker and is left alone, and a
  bucket moving away (the agent's own element deletion) finds nothing
  missing;
* it never removes or changes anything that is not the agent's;
* it is bounded: at most REPAIRS_PER_MINUTE repairs a minute (a tool
  deleting the tables in a loop then meets Pacemaker's monitor, as
  without the guard), and it exits when its handshake file no longer
  names it (the stop of the node's last instance removes it) or no marker
  of the VIP is left, checked after every transaction and every
  IDLE_CHECK seconds;
* when it cannot listen (no nf_tables events, a socket error) it exits
  and the monitor remains what notices, as before;
* once it listens it checks at once, so that a deletion between the start
  that spawned it and its subscription is not missed.

What it does it logs as the agent does (``HA_LOGFACILITY``/``HA_LOGFILE``
as Pacemaker hands them to the start that spawned it) and appends to
``$HA_RSCTMP/clusterip-<VIP>.repairs`` (one line each: when, what was
missing), which ``clusterip status`` shows.
"""

import posix  # not os: see clusterip.agent.environment
import time

from clusterip import background

NFNLGRP_NFTABLES = 7
NFT_MSG_NEWGEN = 15
# The deletions of nf_tables objects (nf_tables.h), all of which name their
# table in attribute 1 (NFTA_TABLE_NAME, NFTA_CHAIN_TABLE, NFTA_RULE_TABLE,
# NFTA_SET_TABLE, NFTA_SET_ELEM_LIST_TABLE, NFTA_OBJ_TABLE).
DELETIONS = {2: "table", 5: "chain", 8: "rule", 11: "set", 14: "set element", 20: "object"}
REPAIRS_PER_MINUTE = 5
IDLE_CHECK = 2.0  # s between checks that the guard is still wanted, when nothing happens
# s from the end of a deleting transaction to the check: a script that flushes
# the ruleset and then loads a saved listing (two commands, ms apart) must find
# the tables absent, not put back by the guard (its listing would add every
# rule a second time); a flush with nothing after it waits this long.
SETTLE = 0.3
FIRST_CHECK_WAIT = 1.0  # s the guard waits for the agent to name it in the file
SENDS = "--sends"  # in the guard's argv: a sender's arguments follow (see spawn)


def paths(rsctmp, vip):
    """(handshake file, repairs log) of the VIP's guard, as the instances name them."""
    from clusterip.instance import state_file

    return state_file(rsctmp, vip, "guard"), state_file(rsctmp, vip, "repairs")


def spawn(path, env, sender=None):
    """Start the guard for the VIP of the action whose environment is ``env``.
    ``sender``: (handshake file, announcements.sender_argv) of the repeats the
    same start owes, which the guard's process then sends too, in a thread of
    its own (see background: one interpreter starting, not two)."""
    argv, also = [path], ()
    if sender:
        also, argv = (sender[0],), argv + [SENDS] + list(sender[1])
    return background.spawn(path, "clusterip.guard", "guard_main", argv, env=dict(env),
                            also=also)


def alive(path):
    """Whether the guard the handshake file names runs (its PID's command line
    is a guard's: a recycled PID is some other program)."""
    pid = background.owner(path)
    if pid is None:
        return False
    try:
        with open("/proc/%d/cmdline" % pid, "rb") as f:
            return b"\0guard_main\0" in f.read()
    except OSError:
        return False


def marked_buckets(rsctmp, vip):
    """The buckets of the VIP whose instances are marked started on this node."""
    from clusterip.instance import MARKER, state_file

    prefix, suffix = state_file(rsctmp, vip, MARKER).rpartition("/")[2].split("%d")
    found = set()
    try:
        names = posix.listdir(rsctmp)
    except OSError:
        return found
    for name in names:
        if name.startswith(prefix) and name.endswith(suffix) \
                and name[len(prefix):-len(suffix)].isdigit():
            found.add(int(name[len(prefix):-len(suffix)]))
    return found


def touched_tables(datagram, tables):
    """([what was deleted: "table", "chain", ...] of anything in ``tables``
    {(family number, name)}, whether a transaction ended in it, how many set
    elements were added to them): the nf_tables notifications of one recv()."""
    from clusterip.kernel import netlink, nfnl

    deleted, ended, added = [], False, 0
    for kind, _, body in netlink.messages(datagram):
        if kind >> 8 != nfnl.NFNL_SUBSYS_NFTABLES:
            continue
        message = kind & 0xff
        if message == NFT_MSG_NEWGEN:
            ended = True
        elif (message in DELETIONS or message == nfnl.NFT_MSG_NEWSETELEM) and len(body) >= 4:
            name = netlink.attributes(body, 4).get(1, b"").rstrip(b"\0").decode(errors="replace")
            if (body[0], name) not in tables:
                continue
            if message == nfnl.NFT_MSG_NEWSETELEM:
                added += 1
            else:
                deleted.append(DELETIONS[message])
    return deleted, ended, added


def renewals_only(deleted, added):
    """Whether a transaction's changes are owner lease renewals (each an
    element deleted and added back, see nfnl.renew_element): nothing to repair."""
    return bool(deleted) and set(deleted) == {"set element"} and len(deleted) == added


def repair(env, buckets, log):
    """Start every marked instance whose monitor misses something; [what was missing]."""
    from clusterip import instance, ocf, params
    from clusterip.errors import AgentError

    repaired = []
    for bucket in sorted(buckets):
        bucket_env = dict(env)
        bucket_env["OCF_RESKEY_CRM_meta_clone"] = str(bucket - 1)
        name = env.get("OCF_RESOURCE_INSTANCE", "")
        if ":" in name:
            bucket_env["OCF_RESOURCE_INSTANCE"] = "%s:%d" % (name.rsplit(":", 1)[0], bucket - 1)
        try:
            this = instance.ClonedInstance(params.parse(bucket_env), bucket_env, log)
            running, missing = this.problems()
            if running and not missing:
                continue
            if not this.lease_current():
                # No monitor renewed it within owner_lease: the cluster stack may
                # be gone, and the lease is what stops this node serving then.
                log.warning("not repairing bucket %d of %s: no monitor renewed its owner "
                            "lease in %d s; left to Pacemaker" % (
                                bucket, env.get("OCF_RESKEY_ip", "?"),
                                this.params.owner_lease))
                continue
            # Under start's lock, and only while the instance is still marked
            # started here (a stop meanwhile removed the marker) and still
            # misses something (None: a start in progress had it added).
            if this.start(repair=True) == ocf.SUCCESS:
                repaired.append("bucket %d (%s)" % (bucket, ", ".join(missing)))
        except AgentError as error:  # the monitor and Pacemaker take it from here
            log.error("cannot repair bucket %d of %s: %s" % (bucket, env.get(
                "OCF_RESKEY_ip", "?"), error))
    return repaired


def guard_main(argv):
    """The guard's process: no traceback ever, whatever happens.  With
    ``SENDS`` and a sender's arguments after its handshake file, it sends
    those repeats meanwhile, and exits once both jobs have ended (the
    sender's is bounded by itself: at most arp_count - 1 intervals)."""
    sender = None
    try:
        background.become_background()
        if argv[1:2] == [SENDS]:
            import threading

            from clusterip import announcements

            sender = threading.Thread(target=_quietly, args=(announcements.send, argv[2:]),
                                      daemon=True)
            sender.start()
        from clusterip.agent import environment

        _quietly(run, argv[0], environment())
        if sender is not None:
            sender.join()
    except BaseException:  # noqa: BLE001 - a background process never shows a traceback
        pass
    posix._exit(0)


def _quietly(function, *args):
    """A job of the guard's process: whatever it raises ends only that job."""
    try:
        function(*args)
    except Exception:  # noqa: BLE001 - a background process never shows a traceback
        pass


def run(path, env):
    import select
    import socket

    from clusterip import ocf, params
    from clusterip.backends import nft
    from clusterip.kernel import nfnl

    me = posix.getpid()
    if not background.wait_until_named(path, FIRST_CHECK_WAIT):
        return "replaced"
    p = params.parse(env)
    rsctmp = path.rpartition("/")[0]
    _, log_path = paths(rsctmp, p.vip)
    tables = {(nfnl.FAMILIES[family], name) for family, name in nft.tables(p)}
    log = ocf.Logger(env)
    repairs = []  # time.monotonic() of each repair in the last minute
    with socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, nfnl.NETLINK_NETFILTER) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
        sock.bind((0, 1 << (NFNLGRP_NFTABLES - 1)))
        # One check at once, now that it listens: a deletion between the start
        # that spawned it and its subscription would go unnoticed otherwise.
        deleted, due = [], time.monotonic()
        transaction, added = [], 0  # of the transaction whose notifications arrive
        while True:
            if background.owner(path) != me:
                return "replaced"
            if not marked_buckets(rsctmp, p.vip):
                background.release(path, me)
                return "no instance left"
            wait = IDLE_CHECK if due is None else max(0.0, due - time.monotonic())
            readable, _, _ = select.select([sock], [], [], wait)
            if readable:
                try:
                    found, ended, more = touched_tables(sock.recv(1 << 16), tables)
                except OSError:  # ENOBUFS: notifications were lost; check anyway
                    found, ended, more = ["notification lost"], True, 0
                transaction += found
                added += more
                if not ended:
                    continue
                if not renewals_only(transaction, added):
                    deleted += transaction
                transaction, added = [], 0
                if deleted and ended and due is None:
                    due = time.monotonic() + SETTLE
                continue
            if due is None or time.monotonic() < due:
                continue
            now, due = time.monotonic(), None
            repairs = [at for at in repairs if now - at < 60.0]
            if len(repairs) >= REPAIRS_PER_MINUTE:
                deleted = []
                continue  # Pacemaker's monitor takes over
            done = repair(env, marked_buckets(rsctmp, p.vip), log)
            if done:
                repairs.append(now)
                line = "repaired %s %s" % ("; ".join(done), "after nft deleted from %s: %s" % (
                    " and ".join("%s %s" % table for table in nft.tables(p)),
                    ", ".join("%d %ss" % (deleted.count(kind), kind)
                              for kind in sorted(set(deleted)))) if deleted
                    else "found missing as the guard started")
                log.warning(line)
                with open(log_path, "a", encoding="utf-8") as f:
                    f.write("%s %s\n" % (time.strftime("%Y-%m-%dT%H:%M:%S"), line))
            deleted = []
