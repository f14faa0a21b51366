#!/usr/bin/env python3
"""Run one command inside a Linux 6.1 user-mode-linux (UML) guest.

Why: the `clusterip` backend needs the iptables CLUSTERIP target, which Linux 6.3
removed.  The test host runs a newer kernel, so the legacy test tier runs inside
Debian 12's user-mode-linux package: Linux 6.1 built as an ordinary host program
(`/usr/bin/linux.uml`, modules in `/usr/lib/uml/modules/<version>`, CLUSTERIP=m).
No disk image is needed: the guest boots over a directory of the host, its
root (default the host's own `/`; the legacy tier passes a Debian 12 root, see
guest_roots.py), whose userspace it runs: its Python, iptables, kmod, busybox.

    rc = run(["/opt/clusterip-test/bin/python3", "-m", "pytest", "tests/x"],
             cwd="/work/main", env={"PYTHONPATH": "lib"}, timeout=600,
             root="/var/cache/clusterip/roots/bookworm", readonly=["/work/main"],
             writable=["/tmp/reports"])       # streams output, returns the exit code
    result = capture(["uname", "-r"])        # -> Result(returncode, output, ...)
    python3 tests/legacy/uml.py [--timeout S] [--mem SIZE] [--cwd DIR] [--root DIR] \
        [--env NAME=VALUE | --env NAME]... [--readonly DIR]... [--writable DIR]... \
        [-v] -- CMD ARGS...

How, and why each step is there
-------------------------------
Host side (this module):
- `linux.uml` runs as a child in a new session, so the guest kernel and every
  helper process it forks (UML runs each guest address space as a host process)
  share one process group that we created; a timeout or Ctrl-C kills exactly
  that group with SIGKILL, nothing else.  Killing only the main UML process is
  not enough (measured): its I/O helpers survive, keep our pipe open and would
  live on.  The CLI turns SIGTERM/SIGHUP into the same cleanup.  Should the
  caller be SIGKILLed, the guest still ends by itself: init runs the command
  under `timeout -s KILL <timeout>` and then powers off.
- `mem=768M`: the guest's RAM.  UML backs it with a file it creates in $TMPDIR
  and unlinks at once; `TMPDIR=/dev/shm` keeps that file in RAM (a disk-backed
  file makes every guest page fault a disk write).  Only touched pages cost host
  memory, and all of it is gone when the process dies.
- `rootfstype=hostfs rootflags=<root> ro`: the guest's root filesystem is the
  host directory `root` (`/` by default), read through hostfs (a UML
  filesystem that forwards to host system calls), mounted read-only so the
  guest cannot change the host.
- `init=<script>`: PID 1 is a generated sh script in a fresh private control
  directory (created by mkdtemp, removed afterwards): under `root`'s /tmp,
  since init must be a file of the root the guest boots over.
- `LD_PRELOAD=<xstate shim>`: on hosts with AVX-512 or AMX, UML 6.1 cannot
  restore its guests' FPU state without it (see XSTATE_SHIM).
- `con=null con0=null,fd:1 ssl=null`: console 0 writes to our pipe (UML's stdout)
  and reads nothing; other consoles and serial lines are disabled (by default
  UML would try to open xterms or ptys for them).  `quiet` keeps the kernel's
  boot chatter off the console (it is still printed when the boot fails).
- `uml_dir=<control dir>`: UML otherwise creates `~/.uml/<umid>/` (pid file and
  management socket) in the host's home directory.
- Core dumps are disabled for the child: a UML kernel panic calls abort().
- The console is a tty inside the guest (ONLCR), so every LF arrives as CRLF;
  that is undone.  Markers with a random token, printed by init, separate boot
  noise from the command's output: only the bytes between them are passed on,
  as they arrive (for CI logs); only a tail that could begin the end marker is
  held back for a moment.  The command's output is otherwise byte-exact (also
  without a final newline).  It sees a tty: TERM=dumb keeps colours out.
- The exit code comes back through a file in the control directory, which the
  guest mounts read-write with hostfs; the end marker also carries it, as a
  second witness.  No exit code from either -> INFRA_RC and the boot log goes to
  stderr.

Guest side (the init script, PID 1):
- mount /proc first (uname, modules and mounts need it), then mount the
  host's /usr/lib/uml/modules/<version> read-only through hostfs (the root
  need not have the package) and load overlay.ko from there by path with the
  root's insmod (kmod): overlayfs is a module in this kernel and the root has
  no /lib/modules/6.1.x, so modprobe cannot find it yet.
- a tmpfs over /run is the staging area; an overlay with the read-only hostfs
  root as lower layer and a tmpfs upper layer becomes the new root, so the
  guest may write anywhere (/usr/lib/ocf, /opt, /etc ...) and the host sees
  none of it; everything written vanishes with the guest.
- fresh proc, sysfs, devtmpfs, devpts, /dev/shm, /run and /tmp in the new root:
  through hostfs these paths would show the HOST's /proc, /dev and /run (host
  device nodes, host netns files); they must be the guest's own.  So the
  host's /tmp is NOT visible in the guest: pass files via other paths or a
  `writable` directory.
- the package's modules are bind-mounted at /lib/modules/<version> so modprobe
  (and iptables, which runs modprobe itself) find them.
- pivot_root, not chroot: the kernel loads modules on demand (veth, bridge,
  ipt_CLUSTERIP) by running /sbin/modprobe as a usermode helper from the
  *kernel's* root; after a mere chroot that root is still the bare host `/`
  without /lib/modules/6.1.x and `ip link add ... type veth` fails
  (measured).  pivot_root moves every task's root, kernel threads included.
  The old root is then detached (umount -l).
- each host directory named in `readonly` is mounted read-only (hostfs) at the
  same path (the checkout, which a root other than `/` does not hold), then
  each one named in `writable` read-write, e.g. to bring test reports back;
  everything else is the root, read-only below the overlay.
- `lo` up and a hostname, as a booted system would have.
- a `booted` flag in the control directory: UML answers a reboot by exec'ing
  itself with the same command line, which would run the command again and
  again (measured); a second boot powers off at once instead.
- the command runs in `cwd` with exactly the given environment (`env -i`, on
  top of a small default PATH/HOME/LANG/TERM=dumb), stdin /dev/null,
  stdout+stderr on the console.
- afterwards: write the exit code, kill leftover processes, unmount the shared
  directories (hostfs writes go straight to host files; unmounting is tidy),
  then power off with `busybox poweroff -f` (a plain exit of PID 1 panics the
  kernel), falling back to the sysrq trigger where busybox is absent.

Measured here (Debian 12 userland, host kernel 6.18, 2 cores, UML 6.1.176):
launch to command start 1.6-2.4 s (over the host's / and over the bookworm
root alike: medians 1.94 and 2.06 s of 8 boots each), a trivial command in ~2 s all told; host
memory ~60 MiB of guest RAM touched for a bare boot, ~80 MiB for the smoke test,
~120 MiB for the unit tier, plus ~15 MiB of UML's own; the guest is ~5-10x
slower per process (python3 -c pass ~0.1-0.25 s, `import iptc` 1.8 s untuned).
"""

import argparse
import collections
import os
import secrets
import shlex
import shutil
import subprocess
import sys
import tempfile

sys.path.insert(1, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # tests/
from guest_console import (  # noqa: E402  (shared with tests/qemu/qemu.py)
    INFRA_RC,
    OVERLAY_ROOT,
    TIMEOUT_RC,
    Splitter,
    check_path,
    cli,
    command_lines,
    directories,
    enter_root,
    exit_code,
    guest_env,
    shell_functions,
    stream_sink,
    supervise,
)

LINUX = "/usr/bin/linux.uml"
MODULES_ROOT = "/usr/lib/uml/modules"
MEMORY_DIR = "/dev/shm"
DEFAULT_MEM = "768M"
DEFAULT_TIMEOUT = 600.0
__all__ = ["INFRA_RC", "TIMEOUT_RC", "UMLError", "Result", "capture", "problems", "run"]

GUEST_CTL = "/run/uml-ctl"  # where the guest mounts the control directory

# UML 6.1 restores a guest thread's FPU state with PTRACE_SETREGSET
# (NT_X86_XSTATE) from a buffer of compile-time size (832 bytes), which the
# host kernel refuses with EFAULT unless it is exactly the host's XSAVE size:
# on a host with AVX-512 or AMX (2.7 KiB, 11 KiB) the guest's init dies at
# once ("userspace - ptrace set fp regs failed, errno = 14", "Attempted to
# kill init"); fixed upstream only in 6.13 ("um: switch to regset API and
# depend on XSTATE"), and the kernel must stay 6.1 for CLUSTERIP.  Making
# UML fall back to the 512-byte FXSAVE area (failing its GETREGSET probe) is
# no cure: the host resets the vector state on every signal UML's stub takes
# for a guest page fault, so the guest's AVX registers would be zeroed at
# random (measured: static busybox and python3 crash, kmod misreads modules).
# This shim, preloaded into linux.uml, keeps a full-size copy of each
# thread's state behind UML's short buffer (see the C file); built with gcc
# for every guest (0.1 s), a no-op where the sizes already match.
XSTATE_SHIM = os.path.join(os.path.dirname(os.path.abspath(__file__)), "xstate_shim.c")

Result = collections.namedtuple("Result", "returncode output boot_seconds seconds")
Result.__doc__ = """returncode: the command's exit status, TIMEOUT_RC or INFRA_RC;
output: its stdout+stderr (str, CRLF->LF); boot_seconds: launch of linux.uml
until the command started; seconds: launch until the guest was gone."""


class UMLError(Exception):
    """The host cannot run a UML guest at all (missing package, not root...)."""


def kernel_version():
    """The single module directory shipped by the user-mode-linux package."""
    try:
        versions = sorted(os.listdir(MODULES_ROOT))
    except OSError:
        return None
    return versions[-1] if versions else None


# What the init script runs from the guest's root (its userspace, not the
# host's): kmod's insmod, util-linux's mount and pivot_root, coreutils.
ROOT_NEEDS = ("bin/sh", "sbin/insmod", "bin/mount", "sbin/pivot_root", "bin/timeout",
              "bin/env", "tmp")


def problems(root="/"):
    """Why a guest cannot run here over `root`, as a list of sentences (empty: it can)."""
    found = []
    hint = ("install it: apt-get install user-mode-linux (Debian 12), or "
            "dpkg -i the vendored user-mode-linux_6.1*.deb")
    if os.geteuid() != 0:
        found.append("not root: the guest reads the whole host filesystem and "
                     "runs the tests as root")
    if not os.access(LINUX, os.X_OK):
        found.append(f"{LINUX} missing: {hint}")
    version = kernel_version()
    if version is None:
        found.append(f"no kernel modules under {MODULES_ROOT}: {hint}")
    else:
        mods = os.path.join(MODULES_ROOT, version, "kernel")
        for mod in ("fs/overlayfs/overlay.ko", "net/ipv4/netfilter/ipt_CLUSTERIP.ko"):
            if not os.path.exists(os.path.join(mods, mod)):
                found.append(f"{mods}/{mod} missing")
    if not os.access(MEMORY_DIR, os.W_OK):
        found.append(f"{MEMORY_DIR} not writable (guest memory lives there)")
    if shutil.which("gcc", path="/usr/bin:/bin") is None:
        found.append("gcc missing (builds the xstate shim, see XSTATE_SHIM): "
                     "apt-get install gcc")
    lacking = [need for need in ROOT_NEEDS
               if not os.path.exists(os.path.join(root, "usr", need))
               and not os.path.exists(os.path.join(root, need))]
    if lacking:
        found.append(f"the guest's root {root} lacks {', '.join(lacking)} (kmod, "
                     "util-linux, coreutils: tests/setup-host installs them)")
    return found


def _init_script(argv, cwd, env, writable, ctl, token, timeout, readonly=(), ctl_seen=None):
    """ctl: the control directory's host path; ctl_seen: the same directory as
    the guest's root shows it before the overlay (ctl itself when the root is
    the host's /)."""
    q = shlex.quote
    ctl_seen = ctl_seen or ctl
    # "$R" (the new root) expands in the guest; the quoted host path follows it.
    mount_readonly = "\n".join(
        f"mkdir -p \"$R\"{q(d)} && mount -t hostfs -o ro,{q(d)} hostfs \"$R\"{q(d)} "
        f"|| fail {q('cannot mount ' + d)}"
        for d in readonly)
    mount_writable = "\n".join(
        f"mkdir -p \"$R\"{q(w)} && mount -t hostfs -o {q(w)} hostfs \"$R\"{q(w)} "
        f"|| fail {q('cannot mount ' + w)}"
        for w in writable)
    unmount_writable = "\n".join(f"release {q(w)}" for w in reversed(writable))
    return f"""#!/bin/sh
# PID 1 of a user-mode-linux guest, written by tests/legacy/uml.py (see there).
PATH=/usr/sbin:/usr/bin:/sbin:/bin
export PATH

{shell_functions('uml-init')}
mount -t proc proc /proc || fail "cannot mount /proc"
# UML answers a reboot by exec'ing itself again: never run the command twice.
[ -e {q(ctl_seen)}/booted ] && fail "the guest rebooted; powering off instead"
V=$(uname -r)

mount -t tmpfs -o mode=0755 tmpfs /run || fail "cannot mount staging tmpfs"
# The package's modules, from the host (the guest's root need not have them).
M=/run/modules
mkdir -p $M && mount -t hostfs -o ro,{MODULES_ROOT}/"$V" hostfs $M \\
    || fail "cannot mount the host's {MODULES_ROOT}/$V"
insmod "$M/kernel/fs/overlayfs/overlay.ko" || fail "cannot load overlay.ko from $M"
{OVERLAY_ROOT}
mkdir -p "$R/lib/modules/$V" && mount --bind $M "$R/lib/modules/$V" \\
    || fail "cannot bind the modules at /lib/modules/$V"

mkdir -p "$R{GUEST_CTL}" && mount -t hostfs -o {q(ctl)} hostfs "$R{GUEST_CTL}" \\
    || fail "cannot mount the control directory"
: > "$R{GUEST_CTL}/booted"
{mount_readonly}
{mount_writable}

{enter_root('uml')}
{command_lines(argv, cwd, env, token, timeout, GUEST_CTL + "/rc")}
kill -9 -1 2>/dev/null  # dash: "kill -s KILL -1" is a syntax error
{unmount_writable}
release {GUEST_CTL}
halt
"""


def _guest(argv, cwd, env, timeout, mem, writable, sink, root="/", readonly=()):
    if not argv:
        raise ValueError("empty command")
    root = os.path.realpath(root)
    check_path(root, "root")
    found = problems(root)
    if found:
        raise UMLError("cannot run a user-mode-linux guest: " + "; ".join(found))
    cwd = os.path.abspath(cwd or os.getcwd())
    writable = directories(writable, "writable directory")
    readonly = directories(readonly, "read-only directory")
    env = guest_env(env)

    # The init script must be a file of the guest's root: under its /tmp
    # (hostfs shows the host's files there before the guest mounts its own).
    ctl = tempfile.mkdtemp(prefix="clusterip-uml-",
                           dir=None if root == "/" else os.path.join(root, "tmp"))
    ctl_seen = ctl if root == "/" else "/" + os.path.relpath(ctl, root)
    try:
        check_path(ctl, "control directory")
        token = secrets.token_hex(8)
        init = os.path.join(ctl, "init")
        with open(init, "w") as f:
            f.write(_init_script(list(map(str, argv)), cwd, env, writable, ctl, token,
                                 timeout, readonly, ctl_seen))
        os.chmod(init, 0o755)
        shim = os.path.join(ctl, "xstate_shim.so")
        built = subprocess.run(["gcc", "-shared", "-fPIC", "-O2", "-o", shim, XSTATE_SHIM,
                                "-ldl", "-lpthread"], capture_output=True, text=True,
                               env={"PATH": "/usr/bin:/bin"})
        if built.returncode != 0:
            raise UMLError("cannot build the xstate shim: " + built.stderr.strip())
        cmdline = [LINUX, f"mem={mem}", "rootfstype=hostfs", f"rootflags={root}", "ro",
                   f"init={ctl_seen}/init", "quiet", "con=null", "con0=null,fd:1",
                   "ssl=null", f"uml_dir={ctl}"]
        splitter = Splitter(token, sink)
        timed_out, returncode, seconds = supervise(
            cmdline, splitter, timeout, ctl,
            {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "TMPDIR": MEMORY_DIR, "LD_PRELOAD": shim})
        boot_seconds = (splitter.begun_at - splitter.launched) if splitter.begun_at else None
        rc = exit_code(os.path.join(ctl, "rc"), splitter, timed_out, returncode, timeout, "uml")
        return rc, boot_seconds, seconds
    finally:
        shutil.rmtree(ctl, ignore_errors=True)


def run(argv, cwd=None, env=None, timeout=DEFAULT_TIMEOUT, *, mem=DEFAULT_MEM,
        writable=(), readonly=(), root="/", stream=None):
    """Run argv in a fresh 6.1 guest; stream its output to `stream`
    (default sys.stdout) as it comes; return its exit code.

    cwd: directory inside the guest (default: ours; host paths are the same
    there).  env: variables added to BASE_ENV (None deletes one).  writable:
    host directories the guest may write to (mounted at the same paths).
    readonly: host directories the guest sees read-only at the same paths
    (such as the checkout, over a root that is not the host's).  root: the
    host directory the guest boots over, its userspace (default the host's
    /; such as a debootstrapped root of tests/roots.py).  Returns TIMEOUT_RC
    after killing the guest on timeout, INFRA_RC when the guest never
    reported; raises UMLError when no guest can run here.
    """
    rc, _, _ = _guest(argv, cwd, env, timeout, mem, writable, stream_sink(stream),
                      root, readonly)
    return rc


def capture(argv, cwd=None, env=None, timeout=DEFAULT_TIMEOUT, *, mem=DEFAULT_MEM,
            writable=(), readonly=(), root="/", echo=False, stream=None):
    """Like run(), but also collect the output; returns a Result.
    With echo=True the output is streamed as well."""
    chunks = []
    tee = stream_sink(stream) if echo else None

    def sink(data):
        chunks.append(data)
        if tee:
            tee(data)
    rc, boot, total = _guest(argv, cwd, env, timeout, mem, writable, sink, root, readonly)
    return Result(rc, b"".join(chunks).decode("utf-8", "replace"), boot, total)


def main(args=None):
    parser = argparse.ArgumentParser(
        description="Run a command inside a Linux 6.1 user-mode-linux guest.",
        usage="%(prog)s [options] -- CMD [ARGS...]")
    parser.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT,
                        help="seconds before the guest is killed (default %(default)s)")
    parser.add_argument("--mem", default=DEFAULT_MEM, help="guest RAM (default %(default)s)")
    parser.add_argument("--cwd", help="working directory in the guest (default: current)")
    parser.add_argument("--env", action="append", default=[], metavar="NAME[=VALUE]",
                        help="set a variable in the guest; NAME alone copies ours")
    parser.add_argument("--writable", action="append", default=[], metavar="DIR",
                        help="host directory the guest may write to")
    parser.add_argument("--readonly", action="append", default=[], metavar="DIR",
                        help="host directory the guest sees read-only at the same path")
    parser.add_argument("--root", default="/",
                        help="host directory the guest boots over (default: /)")
    parser.add_argument("-v", "--verbose", action="store_true",
                        help="report timings on stderr")
    parser.add_argument("command", nargs=argparse.REMAINDER)
    opts = parser.parse_args(args)
    command = opts.command[1:] if opts.command[:1] == ["--"] else opts.command
    if not command:
        parser.error("no command given")
    env = {}
    for item in opts.env:
        name, sep, value = item.partition("=")
        if not sep:
            if name not in os.environ:
                parser.error(f"--env {name}: not set here")
            value = os.environ[name]
        env[name] = value
    return cli("uml", lambda: _guest(command, opts.cwd, env, opts.timeout, opts.mem,
                                     opts.writable, stream_sink(sys.stdout), opts.root,
                                     opts.readonly),
               (UMLError, ValueError), opts.verbose)


if __name__ == "__main__":
    sys.exit(main())
