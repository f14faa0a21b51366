#!/usr/bin/env python3
"""Run one command inside Debian 12's own Linux 6.1 kernel, booted under QEMU.

Why: Debian 12 clusters run the nft backend on that kernel (its ``auto``
choice there), and the host runs a newer one.  The kernel, its modules and
its initramfs are those of Debian 12's linux-image-amd64, installed in the
bookworm root of tests/roots.py (RECIPE's "kernel"); the guest boots over
that root, whose userspace it runs (its Python, nft, the agent installed
there with make install).

    rc = run([...], cwd=CHECKOUT, env={...}, timeout=900, root=ROOT,
             readonly=[CHECKOUT], writable=[RESULTS])   # streams the output
    python3 tests/qemu/qemu.py [--timeout S] [--root DIR] [--env NAME=VALUE]...
        [--readonly DIR]... [--writable DIR]... [-v] -- CMD ARGS...

How (the host side is tests/guest_console.py's, shared with the legacy
tier's uml.py: QEMU in a process group of its own, killed whole with
SIGKILL on timeout or Ctrl-C; markers around the command's output; the exit
code through a file in a shared directory):

- ``qemu-system-x86_64 -accel tcg``: software emulation, since /dev/kvm
  cannot be relied on (here it runs no stock kernel); ``-smp 2`` (multi-
  threaded TCG), 2 GiB unless ``mem`` says otherwise; ``-nodefaults
  -nographic``: no network device, no display, the serial console ttyS0
  on our pipe (``-serial stdio``), no monitor; ``-no-reboot``: a reboot
  ends QEMU instead of running the
  command twice.
- ``-kernel``/``-initrd`` from the root's /boot; ``boot=clusterip-9p`` is
  the initramfs script roots.py installs: it loads virtio_pci, 9pnet_virtio
  and 9p and mounts the root, exported with ``-virtfs`` (mount tag
  ``root``, ``readonly=on``), read-only with ``cache=loose``.
- ``init=`` a generated sh script in a fresh control directory under the
  root's /tmp (init must be a file of the root), exported writable (tag
  ``ctl``) for the exit code.  PID 1 loads overlay, puts a tmpfs overlay
  over the read-only root (the guest may write anywhere, the host sees
  none of it), mounts fresh proc, sysfs, devtmpfs, devpts, /dev/shm, /run
  and /tmp, the ``readonly`` directories read-only and the ``writable``
  ones read-write at their own paths (9p, tags ``roN``/``rwN``),
  pivot_root's into it (the kernel's modprobe helper then finds the root's
  /lib/modules), sets ``lo`` up, runs the command (guest_console's
  command_lines: bounded by ``timeout -s KILL``), writes the exit code,
  kills what is left and powers off (``busybox poweroff -f``, else sysrq).
"""

import argparse
import glob
import os
import secrets
import shlex
import shutil
import sys
import tempfile

sys.path.insert(1, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # tests/
import guest_console as console  # noqa: E402  (shared with tests/legacy/uml.py)

QEMU = "/usr/bin/qemu-system-x86_64"
DEFAULT_MEM = "2048"
DEFAULT_SMP = "2"
DEFAULT_TIMEOUT = 900.0
# Beyond the command's timeout, for booting (~20 s) and powering off: when
# this passes too, the whole QEMU process group is SIGKILLed.
BOOT_ALLOWANCE = 180.0
GUEST_CTL = "/run/qemu-ctl"
NINEP = "trans=virtio,version=9p2000.L,msize=262144"
TIMEOUT_RC, INFRA_RC = console.TIMEOUT_RC, console.INFRA_RC
# What the init script runs from the root.
ROOT_NEEDS = ("bin/sh", "sbin/modprobe", "bin/mount", "sbin/pivot_root", "bin/timeout",
              "bin/env", "bin/busybox", "tmp")


class QemuError(Exception):
    """No guest can run here (no QEMU, no kernel in the root, not root...)."""


def kernel(root):
    """(vmlinuz, initrd.img) of the root's newest Linux 6.1, or None."""
    for vmlinuz in sorted(glob.glob(os.path.join(root, "boot", "vmlinuz-6.1.*")), reverse=True):
        initrd = vmlinuz.replace("/vmlinuz-", "/initrd.img-")
        if os.path.exists(initrd):
            return vmlinuz, initrd
    return None


def problems(root):
    """Why a guest cannot run here over root, as sentences (empty: it can)."""
    found = []
    if os.geteuid() != 0:
        found.append("not root: the guest reads the root's files as root")
    if not os.access(QEMU, os.X_OK):
        found.append(f"{QEMU} missing: apt-get install qemu-system-x86 (tests/setup-host)")
    if kernel(root) is None:
        found.append(f"no vmlinuz-6.1.* with its initrd.img in {root}/boot: the bookworm "
                     "root of tests/roots.py has them (RECIPE's kernel)")
    lacking = [need for need in ROOT_NEEDS
               if not os.path.exists(os.path.join(root, "usr", need))
               and not os.path.exists(os.path.join(root, need))]
    if lacking:
        found.append(f"the guest's root {root} lacks {', '.join(lacking)}")
    return found


def _init_script(argv, cwd, env, token, timeout, readonly, writable):
    q = shlex.quote
    mounts = []
    for tag, options, path in ([(f"ro{i}", "ro,cache=loose", d) for i, d in enumerate(readonly)]
                               + [(f"rw{i}", "rw", d) for i, d in enumerate(writable)]):
        mounts.append(f"mkdir -p \"$R\"{q(path)} && mount -t 9p -o {options},{NINEP} {tag} "
                      f"\"$R\"{q(path)} || fail {q('cannot mount ' + path)}")
    mounts = "\n".join(mounts)
    unmount_writable = "\n".join(f"release {q(w)}" for w in reversed(writable))
    return f"""#!/bin/sh
# PID 1 of a QEMU guest, written by tests/qemu/qemu.py (see there).
PATH=/usr/sbin:/usr/bin:/sbin:/bin
export PATH

{console.shell_functions('qemu-init')}
mountpoint -q /proc || mount -t proc proc /proc || fail "cannot mount /proc"
modprobe overlay || fail "cannot load overlay"
mount -t tmpfs -o mode=0755 tmpfs /run || fail "cannot mount the staging tmpfs"
{console.OVERLAY_ROOT}mkdir -p "$R{GUEST_CTL}" && mount -t 9p -o rw,{NINEP} ctl "$R{GUEST_CTL}" \\
    || fail "cannot mount the control directory"
{mounts}

{console.enter_root('qemu')}
{console.command_lines(argv, cwd, env, token, timeout, GUEST_CTL + "/rc", "qemu")}
kill -9 -1 2>/dev/null  # dash: "kill -s KILL -1" is a syntax error
{unmount_writable}
release {GUEST_CTL}
halt
"""


def _virtfs(tag, path, readonly):
    return ["-virtfs", f"local,path={path},mount_tag={tag},security_model=none,"
            f"multidevs=remap{',readonly=on' if readonly else ''}"]


def _guest(argv, cwd, env, timeout, root, readonly, writable, sink, mem=DEFAULT_MEM,
           smp=DEFAULT_SMP):
    if not argv:
        raise ValueError("empty command")
    root = os.path.realpath(root)
    console.check_path(root, "root")
    found = problems(root)
    if found:
        raise QemuError("cannot run a QEMU guest: " + "; ".join(found))
    cwd = os.path.abspath(cwd or os.getcwd())
    readonly = console.directories(readonly, "read-only directory")
    writable = console.directories(writable, "writable directory")
    env = console.guest_env(env)
    vmlinuz, initrd = kernel(root)
    ctl = tempfile.mkdtemp(prefix="clusterip-qemu-", dir=os.path.join(root, "tmp"))
    try:
        console.check_path(ctl, "control directory")
        token = secrets.token_hex(8)
        with open(os.path.join(ctl, "init"), "w") as f:
            f.write(_init_script(list(map(str, argv)), cwd, env, token, timeout, readonly,
                                 writable))
        os.chmod(os.path.join(ctl, "init"), 0o755)
        cmdline = [QEMU, "-accel", "tcg", "-m", mem, "-smp", smp, "-nodefaults", "-nographic",
                   "-no-reboot", "-serial", "stdio", "-monitor", "none",
                   "-kernel", vmlinuz, "-initrd", initrd,
                   "-append", "console=ttyS0 quiet panic=-1 boot=clusterip-9p root=root "
                   f"rootfstype=9p ro init=/{os.path.relpath(ctl, root)}/init"]
        cmdline += _virtfs("root", root, True) + _virtfs("ctl", ctl, False)
        for i, path in enumerate(readonly):
            cmdline += _virtfs(f"ro{i}", path, True)
        for i, path in enumerate(writable):
            cmdline += _virtfs(f"rw{i}", path, False)
        splitter = console.Splitter(token, sink, "qemu")
        timed_out, returncode, seconds = console.supervise(
            cmdline, splitter, timeout + BOOT_ALLOWANCE, ctl,
            {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin"})
        boot = (splitter.begun_at - splitter.launched) if splitter.begun_at else None
        rc = console.exit_code(os.path.join(ctl, "rc"), splitter, timed_out, returncode,
                               timeout, "qemu")
        return rc, boot, seconds
    finally:
        shutil.rmtree(ctl, ignore_errors=True)


def run(argv, cwd=None, env=None, timeout=DEFAULT_TIMEOUT, *, root, readonly=(), writable=(),
        stream=None, mem=DEFAULT_MEM):
    """Run argv in a fresh guest over root (``mem`` MiB); stream its output; return
    (exit code, seconds from launch to the command's start, seconds in all).
    The guest gets timeout seconds for the command, plus BOOT_ALLOWANCE to
    boot and power off; TIMEOUT_RC after killing it, INFRA_RC when it never reported."""
    return _guest(argv, cwd, env, timeout, root, readonly, writable,
                  console.stream_sink(stream), mem)


def main(args=None):
    parser = argparse.ArgumentParser(description="Run a command inside Debian 12's Linux 6.1 "
                                     "under QEMU.", usage="%(prog)s [options] -- CMD [ARGS...]")
    parser.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT)
    parser.add_argument("--root", default="/var/cache/clusterip/roots/bookworm")
    parser.add_argument("--mem", default=DEFAULT_MEM, help="MiB (default %(default)s)")
    parser.add_argument("--cwd")
    parser.add_argument("--env", action="append", default=[], metavar="NAME=VALUE")
    parser.add_argument("--readonly", action="append", default=[], metavar="DIR")
    parser.add_argument("--writable", action="append", default=[], metavar="DIR")
    parser.add_argument("-v", "--verbose", action="store_true")
    parser.add_argument("command", nargs=argparse.REMAINDER)
    opts = parser.parse_args(args)
    command = opts.command[1:] if opts.command[:1] == ["--"] else opts.command
    if not command:
        parser.error("no command given")
    env = dict(item.partition("=")[::2] for item in opts.env)
    return console.cli("qemu", lambda: run(command, opts.cwd, env, opts.timeout,
                                           root=opts.root, readonly=opts.readonly,
                                           writable=opts.writable, mem=opts.mem),
                       (QemuError, ValueError), opts.verbose)


if __name__ == "__main__":
    sys.exit(main())
