"""What the guest-kernel tiers share: one command run in a booted guest.

tests/legacy/uml.py boots Linux 6.1 as user-mode-linux, tests/qemu/qemu.py
Debian 12's Linux 6.1 under QEMU; both run one command in the guest from a
generated init script and need the same host side:

- the guest's program runs in a new session, so it and every helper it
  forks share one process group we created; a timeout or Ctrl-C kills
  exactly that group with SIGKILL (supervise()), and we wait, bounded,
  until its members are gone;
- the init script prints markers with a random token around the command's
  output (command_lines()); Splitter separates the boot log from that
  output, passed on byte-exact as it arrives (a console tty's CRLF undone),
  and reads the exit code from the end marker;
- the exit code comes back through a file in a directory the guest writes
  (the end marker is the second witness); neither -> INFRA_RC and the boot
  log goes to stderr (exit_code()).
"""

import io
import math
import os
import re
import resource
import selectors
import shlex
import signal
import subprocess
import sys
import time

TIMEOUT_RC = 124  # like timeout(1)
INFRA_RC = 125    # the guest never reported an exit code (boot failed, crashed)
# Grace period between the command's end and the guest program's own exit before we kill it.
HALT_GRACE = 15.0

# The guest's environment before the caller's additions.  No host variables leak
# in: tests must not depend on whoever started them.
BASE_ENV = {
    "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    "HOME": "/root",
    "LANG": "C.UTF-8",
    "TERM": "dumb",  # the console is a tty: keep colour escapes out of logs
}


def check_path(path, what):
    if not os.path.isabs(path):
        raise ValueError(f"{what} must be an absolute path: {path!r}")
    if "," in path or "\n" in path:
        # hostfs takes the host path as its whole mount option string, QEMU's
        # -virtfs its options separated by commas.
        raise ValueError(f"{what} must not contain ',' or newlines: {path!r}")


def directories(paths, what):
    found = [os.path.abspath(path) for path in (paths or ())]
    for path in found:
        check_path(path, what)
        if not os.path.isdir(path):
            raise ValueError(f"{what} does not exist: {path}")
    return found


def guest_env(env):
    merged = dict(BASE_ENV)
    for name, value in (env or {}).items():
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):
            raise ValueError(f"bad environment variable name {name!r}")
        if value is None:
            merged.pop(name, None)
        else:
            merged[name] = str(value)
    return merged


def command_lines(argv, cwd, env, token, timeout, rc_file, marker="uml"):
    """The init script's lines running the command: markers around it, in
    cwd with exactly env (`env -i`), stdin /dev/null, killed after timeout
    seconds; afterwards its exit status in rc_file and in the end marker."""
    q = shlex.quote
    assignments = " ".join(q(f"{k}={v}") for k, v in env.items())
    command = " ".join(q(str(a)) for a in argv)
    return f"""echo "@@{marker}-begin {token}"
( cd {q(cwd)} &&
  exec timeout -s KILL {math.ceil(timeout)} env -i {assignments} {command} ) </dev/null
rc=$?
echo "$rc" > {q(rc_file)}
echo "@@{marker}-end {token} $rc"
"""


def shell_functions(name):
    """halt, fail MESSAGE and release DIR for an init script (PID 1): a plain
    exit of PID 1 panics the kernel, so halt powers off (busybox, else sysrq)."""
    return f"""halt() {{
    sync
    busybox poweroff -f 2>/dev/null
    echo o > /proc/sysrq-trigger
    sleep 30
}}
fail() {{
    echo "{name}: $*"
    halt
}}
release() {{  # unmount, retrying while killed processes die
    for i in 1 2 3 4 5 6 7 8 9 10; do
        umount "$1" 2>/dev/null && return 0
        sleep 0.2
    done
    umount -l "$1"
}}
"""


# An init script's new root "$R": a tmpfs overlay over the read-only root
# (the guest writes anywhere, the host sees none of it), with fresh proc,
# sysfs, devtmpfs, devpts, /dev/shm, /run and /tmp (through the shared root
# those would be the host's).  Needs a tmpfs on /run and overlay loaded.
OVERLAY_ROOT = """mkdir -p /run/ov/upper /run/ov/work /run/ov/root
R=/run/ov/root
mount -t overlay -o lowerdir=/,upperdir=/run/ov/upper,workdir=/run/ov/work overlay "$R" \\
    || fail "cannot mount the overlay root"
mount -t proc proc "$R/proc" &&
mount -t sysfs sysfs "$R/sys" &&
mount -t devtmpfs devtmpfs "$R/dev" &&
mkdir -p "$R/dev/pts" "$R/dev/shm" &&
mount -t devpts -o newinstance,ptmxmode=0666 devpts "$R/dev/pts" &&
mount -t tmpfs -o mode=1777 tmpfs "$R/dev/shm" &&
mount -t tmpfs -o mode=0755 tmpfs "$R/run" &&
mount -t tmpfs -o mode=1777 tmpfs "$R/tmp" || fail "cannot mount the pseudo filesystems"
"""


def enter_root(name):
    """The init script's lines after "$R" is ready: pivot_root into it (the
    old root unmounted lazily), the hostname ``name``, ``lo`` up."""
    return f"""cd "$R" && mkdir -p .{name}-oldroot && pivot_root . .{name}-oldroot \\
    || fail "pivot_root failed"
cd /
umount -l /.{name}-oldroot && rmdir /.{name}-oldroot

echo {name} > /proc/sys/kernel/hostname
ip link set lo up || echo "{name}-init: cannot set lo up"
"""


class Splitter:
    """Turns the console byte stream into boot log / command output / tail.

    Command output is handed to `sink` as soon as it cannot be part of the end
    marker any more; a trailing CR is held back until we know whether LF follows.
    """

    def __init__(self, token, sink, marker="uml"):
        self.begin = f"@@{marker}-begin {token}\n".encode()
        self.end = f"@@{marker}-end {token} ".encode()
        self.sink = sink
        self.state = "boot"
        self.boot_log = bytearray()
        self.pending = b""
        self.tail = bytearray()
        self.launched = None  # set by supervise(); begun_at - launched: the boot
        self.begun_at = None
        self.marker_rc = None

    def feed(self, data):
        data = self.pending + data
        self.pending = b""
        if data.endswith(b"\r"):
            data, self.pending = data[:-1], b"\r"
        data = data.replace(b"\r\n", b"\n")
        if self.state == "boot":
            self.boot_log += data
            at = self.boot_log.find(self.begin)
            if at < 0:
                return
            self.state = "command"
            self.begun_at = time.monotonic()
            data = bytes(self.boot_log[at + len(self.begin):])
            del self.boot_log[at:]
        if self.state == "command":
            buf = data
            at = buf.find(self.end)
            if at >= 0:
                self._emit(buf[:at])
                self.state = "tail"
                self.tail += buf[at + len(self.end):]
                m = re.match(rb"(\d+)\n", bytes(self.tail))
                self.marker_rc = int(m.group(1)) if m else None
                return
            # Hold back only a tail that could be the start of the end marker.
            keep = _overlap(buf, self.end)
            self._emit(buf[:len(buf) - keep])
            self.pending = buf[len(buf) - keep:] + self.pending
            return
        self.tail += data
        if self.marker_rc is None:
            m = re.match(rb"(\d+)\n", bytes(self.tail))
            self.marker_rc = int(m.group(1)) if m else None

    def finish(self):
        """At EOF: flush whatever was held back."""
        rest, self.pending = self.pending, b""
        if self.state == "command":
            self._emit(rest)
        elif self.state == "boot":
            self.boot_log += rest

    def _emit(self, data):
        if data:
            self.sink(data)


def _overlap(data, marker):
    """Length of the longest end of data that is a beginning of marker."""
    for n in range(min(len(data), len(marker) - 1), 0, -1):
        if data.endswith(marker[:n]):
            return n
    return 0


def _exited(pid):
    """Has the child exited?  Does not reap it, so its PID (and process group
    ID) cannot be reused while we may still signal the group."""
    try:
        return os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None
    except ChildProcessError:
        return True


def _kill_group(proc):
    """SIGKILL the process group we created for the guest (it and its helpers)."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def _live_members(pgid):
    """PIDs in process group pgid that are not yet zombies."""
    live = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/stat") as f:
                state, _, pgrp = f.read().rsplit(")", 1)[1].split()[:3]
        except (OSError, ValueError):
            continue
        if int(pgrp) == pgid and state not in "ZX":
            live.append(int(pid))
    return live


def _wait_dead(pgid, seconds=5.0):
    """After SIGKILL: wait (bounded) until the group's members are really gone.
    They are reparented to the host's init, which reaps them; zombies hold nothing."""
    deadline = time.monotonic() + seconds
    while _live_members(pgid) and time.monotonic() < deadline:
        time.sleep(0.05)


def _no_core():
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))


def supervise(cmdline, splitter, timeout, cwd, env):
    """Run the guest program cmdline (its console on its stdout) until it
    exits, or timeout seconds pass, or HALT_GRACE after the end marker;
    then SIGKILL its whole process group.  Returns (timed_out, returncode,
    seconds from launch to the end)."""
    started = splitter.launched = time.monotonic()
    deadline = started + timeout
    timed_out = eof = False
    proc = subprocess.Popen(
        cmdline, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT, cwd=cwd, start_new_session=True,
        preexec_fn=_no_core, env=env)
    try:
        fd = proc.stdout.fileno()
        with selectors.DefaultSelector() as sel:
            sel.register(fd, selectors.EVENT_READ)
            while True:
                if splitter.state == "tail":
                    deadline = min(deadline, time.monotonic() + HALT_GRACE)
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    timed_out = splitter.state != "tail"
                    break
                if not sel.select(remaining):
                    continue
                chunk = os.read(fd, 65536)
                if not chunk:
                    eof = True
                    break
                splitter.feed(chunk)
        splitter.finish()
        if eof:
            # The guest is exiting; give it a moment to do so by itself.
            for _ in range(50):
                if _exited(proc.pid):
                    break
                time.sleep(0.1)
    finally:
        _kill_group(proc)  # stragglers, or everything on timeout/Ctrl-C
        proc.wait()
        _wait_dead(proc.pid)
        proc.stdout.close()
    return timed_out, proc.returncode, time.monotonic() - started


def exit_code(rc_file, splitter, timed_out, returncode, timeout, name):
    """The command's exit code: rc_file's, else the end marker's; TIMEOUT_RC
    or INFRA_RC with the reason (and the boot log) on stderr."""
    try:
        with open(rc_file) as f:
            rc = int(f.read().strip())
    except (OSError, ValueError):
        rc = splitter.marker_rc
    if timed_out:
        sys.stderr.write(f"{name}: timed out after {timeout:.0f} s; killed the guest\n")
        if splitter.state == "boot":
            dump_boot_log(splitter, name)
        return TIMEOUT_RC
    if rc is None:
        if splitter.state == "boot":
            sys.stderr.write(f"{name}: the guest did not boot (exit status {returncode})\n")
            dump_boot_log(splitter, name)
        else:
            sys.stderr.write(f"{name}: the guest stopped before the command ended "
                             "(crash, reboot or halt: see the output above)\n")
        return INFRA_RC
    return rc


def dump_boot_log(splitter, name):
    log = bytes(splitter.boot_log + splitter.tail).decode("utf-8", "replace")
    sys.stderr.write(f"{name}: --- guest console ---\n" + log[-20000:] + f"\n{name}: ---\n")
    sys.stderr.flush()


def stream_sink(stream):
    """A function writing console bytes to stream (binary or text) at once."""
    if stream is None:
        stream = sys.stdout
    if isinstance(stream, (io.RawIOBase, io.BufferedIOBase)):
        binary, text = stream, None
    elif getattr(stream, "buffer", None) is not None:
        binary, text = stream.buffer, stream   # keep text already written first
    else:
        binary, text = None, stream

    def sink(data):
        if binary is None:
            text.write(data.decode("utf-8", "replace"))
            text.flush()
            return
        if text is not None:
            text.flush()
        binary.write(data)
        binary.flush()
    return sink


def _interrupt(signum, frame):
    raise KeyboardInterrupt


def cli(name, call, errors, verbose):
    """A runner's command line: call() -> (rc, boot seconds, total seconds);
    errors (exception classes) print and give INFRA_RC.  SIGTERM/SIGHUP (CI
    cancelling a job) must still kill the guest: they unwind like Ctrl-C,
    through supervise()'s cleanup."""
    for signum in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, _interrupt)
    try:
        rc, boot, total = call()
    except errors as e:
        print(f"{name}: {e}", file=sys.stderr)
        return INFRA_RC
    except KeyboardInterrupt:
        print(f"{name}: interrupted; killed the guest", file=sys.stderr)
        return 130
    if verbose:
        boot_text = f"{boot:.2f} s" if boot is not None else "n/a"
        print(f"{name}: exit {rc}; boot-to-command {boot_text}, total {total:.2f} s",
              file=sys.stderr)
    return rc
