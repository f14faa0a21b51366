"""The agent's background processes: started detached, ended by a file, never by a signal.

Two jobs exist: the sender of the repeated announcements
(:mod:`announcements`) and the guard that puts a VIP's nft tables back after
a firewall reload (:mod:`guard`).  A start that owes both (the first
instance of a cloned nft VIP on a node) starts one process for the two,
the guard with the sender in a thread: two interpreters starting at once
cost that start ~15 ms more on a 2-CPU node, one costs it nothing
(tests/bench/guard_cost.py).  Both are fresh interpreters started with posix_spawn, not
forks of the agent: a forked child shares the agent's pages, and the
agent's own exit (Python's finalisation writes to most of its objects) then
copies them one by one, ~6 ms of CPU per start, measured; posix_spawn
shares nothing and costs the agent well under a millisecond.  Each runs in
its own session with 0/1/2 on /dev/null (an inherited pipe would make
Pacemaker's executor wait for its end) and no other descriptor of the
agent's (Python opens its own, the per-VIP lock's included, close-on-exec;
the child closes any other one first).

Each has a handshake file naming its PID, written by the agent once the
process exists (:func:`spawn`): the process checks that the file still
names it before it acts, else it exits.  Whoever wants it gone removes the
file (:func:`forget`); a new one replaces it.  No PID is ever signalled, so
a recycled PID cannot be hit.
"""

import posix  # not os: see clusterip.agent.environment

# What a child runs: argv[1] is the library's directory, or several joined by
# ':' (the interpreter runs with -I -S, as the agent: no site, no PYTHON*
# variables); argv[2] the module, argv[3] its function, the rest its argv.
_CHILD = ("import sys, importlib; sys.path[:0] = sys.argv[1].split(':'); "
          "getattr(importlib.import_module(sys.argv[2]), sys.argv[3])(sys.argv[4:])")


def owner(path):
    """The PID the handshake file names, or None (missing, unreadable, garbled)."""
    try:
        with open(path, "rb") as f:
            return int(f.read())
    except (OSError, ValueError):
        return None


def forget(path):
    """Remove the handshake file: its process exits before it next acts."""
    try:
        posix.unlink(path)
    except FileNotFoundError:
        pass


def release(path, me):
    """Remove the handshake file while it names ``me`` (a start may have
    replaced it; the window between the read and the unlink is a few
    microseconds)."""
    if owner(path) == me:
        forget(path)


def publish(path, pid):
    """Make the handshake file name pid; by rename: nobody reads half a PID."""
    temporary = "%s.%d" % (path, pid)
    fd = posix.open(temporary, posix.O_WRONLY | posix.O_CREAT | posix.O_TRUNC | posix.O_CLOEXEC,
                    0o644)
    try:
        posix.write(fd, b"%d\n" % pid)
    finally:
        posix.close(fd)
    posix.rename(temporary, path)


def spawn(path, module, function, argv, library=None, env=None, also=()):
    """Start ``module.function(argv)`` detached (see above); returns its PID
    once the handshake file ``path`` names it, and each file of ``also`` (one
    process doing several jobs: the guard sending a start's repeats).  Call it after the per-VIP
    lock is released.  ``library``: the directory that holds the module
    (default: this library's, then every directory of this process's
    sys.path: under -S the agent's executable added the site directories
    itself, and the child needs them for what the agent imports, such as
    libnftables' binding); ``env``: its environment (default: ours, the
    action's).  OSError if it cannot be started.
    """
    import os  # here: the spawning start pays for it, not every monitor
    import sys

    if library is None:
        here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        library = ":".join([here] + [d for d in sys.path if d and d != here and ":" not in d])
    null = os.open(os.devnull, os.O_RDWR | os.O_CLOEXEC)
    try:
        pid = os.posix_spawn(sys.executable, [
            sys.executable, "-I", "-S", "-c", _CHILD, library, module, function] + list(argv),
            os.environ if env is None else env, setsid=True,
            file_actions=[(os.POSIX_SPAWN_DUP2, null, fd) for fd in (0, 1, 2)])
    finally:
        os.close(null)
    try:
        # Its interpreter's start-up (~15 ms of CPU) runs only where a CPU would
        # idle, not against the rest of this start; the child then takes an
        # ordinary (niced) share (become_background).  (glibc's posix_spawn
        # takes no SCHED_IDLE: set at once after.)
        os.sched_setscheduler(pid, os.SCHED_IDLE, os.sched_param(0))
    except OSError:
        pass  # gone already, or not allowed: it only competes a little
    for handshake in (path,) + tuple(also):
        publish(handshake, pid)
    return pid


def become_background():
    """The child's first step: no inherited descriptor, an ordinary niced share."""
    posix.closerange(3, posix.sysconf("SC_OPEN_MAX"))
    posix.sched_setscheduler(0, posix.SCHED_OTHER, posix.sched_param(0))
    posix.nice(10)


def wait_until_named(path, seconds):
    """Wait (bounded) until the handshake file names this process; True if it does."""
    import time

    me, deadline = posix.getpid(), time.monotonic() + seconds
    while owner(path) != me:
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.01)  # the agent writes the file right after the spawn
    return True
