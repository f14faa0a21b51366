#!/usr/bin/python3
"""A Debian root of either release, built once and cached, to run the tests in.

The project must pass on fresh Debian 12 (bookworm) and Debian 13 (trixie)
machines, and CI runs on one of them.  This builds a root of the *other*
release with debootstrap and runs commands inside it, so that one CI run
proves both userlands (Python, nft, Pacemaker, crmsh) on the host's kernel.

    tests/roots.py other                  # the suite that is not the host's
    tests/roots.py ensure SUITE           # build it, or reuse the cached one
    tests/roots.py run SUITE [--bind DIR]... -- CMD ARGS...

Importable too: ``ensure(suite)`` returns the root's path, ``run(suite, argv,
binds)`` the command's exit code, ``with build_lock(suite):`` keeps a rebuild
out while the caller changes the root.

The cache is /var/cache/clusterip/roots/SUITE (kept between CI runs on one
machine).  A root counts as built only when its stamp file holds the stamp
of the current recipe (this file's RECIPE plus tests/setup-host, which
installs the packages inside): a changed recipe rebuilds it.  A build goes
into a temporary directory beside it and is renamed into place when
complete, so a killed build never leaves a half root that passes as done.

Measured on a 2-core Debian 12 machine (host kernel 6.18): a fresh build
(debootstrap, then setup-host's packages, the agent, pytest) 77 s for
bookworm and 80 s for trixie, ~850 MB each; the qemu tier's kernel and
initramfs make the bookworm build ~150 s and 1.5 GB (its modules are
~400 MB); a cached ensure 0.12 s; entering a root for a trivial command
0.14 s.
"""

import argparse
import fcntl
import hashlib
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile

CHECKOUT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SETUP_HOST = os.path.join(CHECKOUT, "tests", "setup-host")
CACHE = "/var/cache/clusterip/roots"
STAMP_FILE = ".clusterip-root-stamp"
OLD_ROOT = ".old-root"  # the mount point pivot_root moves the host's / to
SUITES = {"12": "bookworm", "13": "trixie"}
DEFAULT_MIRROR = "http://deb.debian.org/debian"
DEFAULT_SECURITY = "http://deb.debian.org/debian-security"
KEYRING = "/usr/share/keyrings/debian-archive-keyring.gpg"
PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
# What the host's environment may hand to a command inside; nothing else
# passes (the host's PATH, PIP_*, a virtualenv would make the root's tests
# depend on the host).
PASS_ENV = ("CI", "CLUSTERIP_TEST_NS_PREFIX", "CLUSTERIP_TEST_ROUNDS", "CLUSTERIP_TEST_SEED",
            "CLUSTERIP_TEST_CRASH_CYCLES", "CLUSTERIP_TEST_BAD_INPUTS",
            "CLUSTERIP_TEST_BAD_INPUTS_UNIT", "CLUSTERIP_TEST_TIMEOUT_SCALE",
            "CLUSTERIP_CLUSTER_KILLS", "CLUSTERIP_CLUSTER_LOGS", "CLUSTERIP_FAILOVER_REPORT")
# Everything that decides what a built root holds, apart from tests/setup-host.
RECIPE = {
    "debootstrap": ["--variant=minbase", "--include=debian-archive-keyring"],
    # Installing pacemaker and corosync would start their init scripts in the
    # host's network namespace (no systemd runs in the root): forbid it.
    "policy-rc.d":
        "#!/bin/sh\n# tests/roots.py: no daemon starts while packages install\nexit 101\n",
    # The qemu tier's kernel (tests/qemu): Debian 12's own Linux 6.1 with its
    # modules, in the bookworm root only.  Its initramfs holds just the
    # modules listed (MODULES=list: nothing depends on the building host's
    # devices) and a boot script of ours mounting the root over 9p (virtio).
    "kernel": {
        "bookworm": ["linux-image-amd64", "initramfs-tools"],
    },
    "initramfs": {
        "usr/share/initramfs-tools/modules.d/clusterip-qemu":
            "virtio_pci\n9pnet_virtio\n9p\noverlay\n",
        "etc/initramfs-tools/conf.d/clusterip-qemu": "MODULES=list\nCOMPRESS=gzip\n",
        # boot=clusterip-9p: the root is the host directory QEMU exports with
        # mount tag "root", read-only, page cache kept (cache=loose: nothing
        # changes it while a guest runs).
        "etc/initramfs-tools/scripts/clusterip-9p": """# tests/roots.py: the root over 9p
mountroot()
{
\tfor m in virtio_pci 9pnet_virtio 9p; do modprobe $m; done
\tmount -t 9p -o ro,trans=virtio,version=9p2000.L,cache=loose,msize=262144 \\
\t\troot "${rootmnt?}" || panic "cannot mount the 9p root"
}
""",
    },
    "version": 1,
}
# deb822 sources for the root: the release, its updates and its security archive.
SOURCES = """Types: deb
URIs: {mirror}
Suites: {suite} {suite}-updates
Components: main
Signed-By: {keyring}

Types: deb
URIs: {security}
Suites: {suite}-security
Components: main
Signed-By: {keyring}
"""

# Runs inside `unshare --mount --propagation private --fork`: makes ROOT the
# new / of this private mount namespace, then execs the command.  pivot_root,
# not chroot: `ip netns exec` and `nsenter -m` (the tests use both) enter a
# mount namespace at *its* root, which after a chroot is still the host's /.
# Nothing mounted here is seen by the host (propagation private), and every
# mount goes away with the namespace's last process.
ENTER = r"""
set -eu
root=$1; shift
mount --bind "$root" "$root"            # pivot_root wants a mount point
mount -t proc proc "$root/proc"         # fresh: of this mount namespace
mount -t sysfs sysfs "$root/sys"
mount --bind /dev "$root/dev"           # the host's devices (veth, tun, null...)
mount -t devpts -o newinstance,ptmxmode=0666,mode=0620 devpts "$root/dev/pts"
mount -t tmpfs -o mode=1777 shm "$root/dev/shm"
mount -t tmpfs -o mode=0755 run "$root/run"   # the root's own /run/netns, locks
mount -t tmpfs -o mode=1777 tmp "$root/tmp"
while [ "$1" != -- ]; do                # the checkout and --bind dirs, same paths
    mkdir -p "$root$1"
    mount --rbind "$1" "$root$1"
    shift
done
shift
cd "$root"
pivot_root . "$root/%s"
cd /
umount -l "/%s"                         # the host's / leaves this namespace
cd "$1"; shift
exec "$@"
""" % (OLD_ROOT, OLD_ROOT)


class RootError(Exception):
    pass


def host_suite():
    """bookworm or trixie, from /etc/debian_version ("12.11", "13.1", "trixie/sid")."""
    with open("/etc/debian_version") as f:
        version = f.read().strip()
    for major, suite in SUITES.items():
        if version.split(".")[0] == major or version.startswith(suite):
            return suite
    raise RootError("/etc/debian_version says %r: neither Debian 12 nor 13" % version)


def other_suite():
    suites = list(SUITES.values())
    return suites[1 - suites.index(host_suite())]


def _deb822(text):
    """The stanzas of a deb822 file as dicts (field names lower-case)."""
    stanzas, current, key = [], {}, None
    for line in text.splitlines() + [""]:
        if line.startswith("#"):
            continue
        if not line.strip():
            if current:
                stanzas.append(current)
            current, key = {}, None
        elif line[0] in " \t" and key:
            current[key] += " " + line.strip()
        elif ":" in line:
            key, value = line.split(":", 1)
            key = key.strip().lower()
            current[key] = value.strip()
    return stanzas


def host_mirrors():
    """(mirror, security mirror) of the host's apt sources, else deb.debian.org's.

    The host reaches its own mirror; a root that used another one might not.
    """
    entries = []  # (uri, suite) of every deb entry
    try:
        with open("/etc/apt/sources.list.d/debian.sources") as f:
            for stanza in _deb822(f.read()):
                if "deb" in stanza.get("types", "").split() and stanza.get("enabled") != "no":
                    entries += [(uri, suite) for uri in stanza.get("uris", "").split()
                                for suite in stanza.get("suites", "").split()]
    except FileNotFoundError:
        pass
    if not entries:
        try:
            with open("/etc/apt/sources.list") as f:
                for line in f:
                    # deb [signed-by=...] URI SUITE COMPONENT...
                    words = re.sub(r"\[[^]]*\]", " ", line.split("#")[0]).split()
                    if words[:1] == ["deb"] and len(words) >= 3:
                        entries.append((words[1], words[2]))
        except FileNotFoundError:
            pass
    mirror = next((uri for uri, suite in entries if "-" not in suite), DEFAULT_MIRROR)
    security = next((uri for uri, suite in entries if suite.endswith("-security")),
                    DEFAULT_SECURITY)
    return mirror.rstrip("/"), security.rstrip("/")


def recipe_stamp(suite):
    digest = hashlib.sha256(repr(sorted(RECIPE.items())).encode() + suite.encode())
    with open(SETUP_HOST, "rb") as f:
        digest.update(f.read())
    return digest.hexdigest()


def _read(path):
    try:
        with open(path) as f:
            return f.read()
    except FileNotFoundError:
        return None


def _write(path, text, mode=0o644):
    with open(path + ".tmp", "w") as f:
        f.write(text)
    os.chmod(path + ".tmp", mode)
    os.replace(path + ".tmp", path)


def _copy_in(root, path):
    """The host's file at the same path inside the root (if the host has it)."""
    if os.path.isfile(path):
        os.makedirs(os.path.dirname(root + path), exist_ok=True)
        if os.path.islink(root + path):  # an absolute link would resolve on the host
            os.remove(root + path)
        shutil.copyfile(path, root + path)


def configure(root, suite):
    """The host-specific pieces, refreshed on every ensure (a later session
    may have another resolver, CA or apt proxy): what apt and pip inside need
    to reach the registries the way the host does."""
    mirror, security = host_mirrors()
    apt = os.path.join(root, "etc/apt")
    _write(os.path.join(apt, "sources.list.d/debian.sources"),
           SOURCES.format(mirror=mirror, security=security, suite=suite, keyring=KEYRING))
    if os.path.exists(os.path.join(apt, "sources.list")):
        os.remove(os.path.join(apt, "sources.list"))  # debootstrap's one-line list
    conf_d = "/etc/apt/apt.conf.d"
    for name in sorted(os.listdir(conf_d)) if os.path.isdir(conf_d) else []:
        _copy_in(root, os.path.join(conf_d, name))
    # /etc/pip.conf names the CA bundle; root's ~/.config/pip/pip.conf is not
    # copied: its local wheel dirs exist on this host only, pip inside uses PyPI.
    _copy_in(root, "/etc/pip.conf")
    _copy_in(root, "/etc/resolv.conf")
    # Local CAs (a TLS-inspecting egress proxy) into the root's own
    # update-ca-certificates input, and the ready bundle for pip right now.
    local_cas = "/usr/local/share/ca-certificates"
    for name in sorted(os.listdir(local_cas)) if os.path.isdir(local_cas) else []:
        _copy_in(root, os.path.join(local_cas, name))
    _copy_in(root, "/etc/ssl/certs/ca-certificates.crt")
    _write(os.path.join(root, "usr/sbin/policy-rc.d"), RECIPE["policy-rc.d"], 0o755)
    os.makedirs(os.path.join(root, OLD_ROOT), exist_ok=True)


def _remove(path):
    """Best effort: what is left is removed by the next ensure (under its lock),
    and a directory not named SUITE never passes as a root."""
    # --one-file-system: never follow a mount some process left inside.
    if subprocess.run(["rm", "-rf", "--one-file-system", path]).returncode != 0:
        print("roots: could not remove all of %s" % path, file=sys.stderr, flush=True)


def _build(suite, tmp):
    mirror, _ = host_mirrors()
    print("roots: debootstrap %s from %s into %s" % (suite, mirror, tmp), flush=True)
    # Its own mount namespace: the proc/sys mounts debootstrap makes inside
    # the target vanish with it even when it is killed.  Its own PID
    # namespace, whose first process dies with unshare (--kill-child): when
    # we are interrupted, no dpkg or wget of it goes on writing into the
    # directory.  --force-check-gpg: the Release file must verify against
    # the host's archive keyring (that of Debian 12 carries the Debian 13
    # keys and vice versa), never skipped.
    subprocess.run(["unshare", "--mount", "--propagation", "private", "--pid", "--fork",
                    "--kill-child", "--mount-proc", "debootstrap", "--force-check-gpg",
                    "--keyring=" + KEYRING] + RECIPE["debootstrap"] + [suite, tmp, mirror],
                   check=True, env={"PATH": PATH})
    configure(tmp, suite)
    print("roots: tests/setup-host --no-uml inside the %s root" % suite, flush=True)
    rc = _run_in(tmp, [SETUP_HOST, "--no-uml"])
    if rc != 0:
        raise RootError("tests/setup-host inside the new %s root exited %d" % (suite, rc))
    install_kernel(tmp, suite)
    configure(tmp, suite)  # the ca-certificates package rewrote the bundle


def install_kernel(root, suite):
    """The qemu tier's kernel and initramfs (RECIPE's "kernel"), if the suite has one."""
    packages = RECIPE["kernel"].get(suite)
    if not packages:
        return
    for path, text in RECIPE["initramfs"].items():
        os.makedirs(os.path.dirname(os.path.join(root, path)), exist_ok=True)
        _write(os.path.join(root, path), text)
    print("roots: %s inside the %s root" % (" ".join(packages), suite), flush=True)
    rc = _run_in(root, ["env", "DEBIAN_FRONTEND=noninteractive", "apt-get", "install", "-y",
                        "-q", "--no-install-recommends"] + packages)
    if rc != 0:
        raise RootError("installing %s inside the new %s root exited %d"
                        % (" ".join(packages), suite, rc))


def _lock(suite, kind, mode):
    """An flock on CACHE/.SUITE.KIND, held while the returned file is open."""
    f = open(os.path.join(CACHE, ".%s.%s" % (suite, kind)), "w")
    fcntl.flock(f, mode)
    return f


def build_lock(suite):
    """Held while a root of ``suite`` is built or replaced: hold it to change
    a root (say, install into it with run()) without a rebuild meanwhile."""
    os.makedirs(CACHE, exist_ok=True)
    return _lock(suite, "build", fcntl.LOCK_EX)


def ensure(suite):
    """The root of ``suite``, built now unless the cache holds the current recipe's."""
    if suite not in SUITES.values():
        raise RootError("unknown suite %r (one of %s)" % (suite, ", ".join(SUITES.values())))
    root = os.path.join(CACHE, suite)
    stamp = recipe_stamp(suite)
    with build_lock(suite):  # two builders of one suite wait for each other
        if _read(os.path.join(root, STAMP_FILE)) == stamp:
            configure(root, suite)
            print("roots: %s root cached at %s" % (suite, root), flush=True)
            return root
        for name in os.listdir(CACHE):  # left by a killed build (we hold the lock)
            if name.startswith(("." + suite + ".building-", "." + suite + ".old-")):
                _remove(os.path.join(CACHE, name))
        tmp = tempfile.mkdtemp(prefix="." + suite + ".building-", dir=CACHE)
        os.chmod(tmp, 0o755)
        try:
            _build(suite, tmp)
            _write(os.path.join(tmp, STAMP_FILE), stamp)
        except BaseException:
            _remove(tmp)
            raise
        # Commands running in an older recipe's root hold the "use" lock
        # shared: wait for them before it goes away under their feet.
        with _lock(suite, "use", fcntl.LOCK_EX):
            if os.path.exists(root):
                old = tempfile.mkdtemp(prefix="." + suite + ".old-", dir=CACHE)
                os.rename(root, os.path.join(old, suite))
                os.rename(tmp, root)
                _remove(old)
            else:
                os.rename(tmp, root)
        print("roots: %s root built at %s" % (suite, root), flush=True)
        return root


def _run_in(root, argv, binds=()):
    env = ["/usr/bin/env", "-i", "PATH=" + PATH, "HOME=/root", "LANG=C.UTF-8"]
    env += ["%s=%s" % (name, os.environ[name]) for name in PASS_ENV if name in os.environ]
    mounts = []
    for path in (CHECKOUT,) + tuple(binds):
        path = os.path.realpath(path)
        if not os.path.isdir(path):
            raise RootError("--bind %s: not a directory" % path)
        mounts.append(path)
    # --kill-child: when we are killed, the command gets SIGTERM (the tests
    # then tear down their namespaces and clusters).
    result = subprocess.run(["unshare", "--mount", "--propagation", "private", "--fork",
                             "--kill-child=SIGTERM", "sh", "-c", ENTER, "enter", root] + mounts
                            + ["--", CHECKOUT] + env + list(argv), env={"PATH": PATH})
    # A command killed by a signal: the shell's 128+N, as bash reports it.
    return 128 - result.returncode if result.returncode < 0 else result.returncode


def run(suite, argv, binds=()):
    """Run ``argv`` in the checkout with the cached root of ``suite`` as its /."""
    root = os.path.join(CACHE, suite)
    with _lock(suite, "use", fcntl.LOCK_SH):  # no rebuild replaces it meanwhile
        if not os.path.exists(os.path.join(root, STAMP_FILE)):
            raise RootError("no %s root at %s: run `tests/roots.py ensure %s` first"
                            % (suite, root, suite))
        return _run_in(root, argv, binds)


def main(args=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("other", help="print the Debian suite that is not the host's")
    ensure_parser = commands.add_parser("ensure", help="build or reuse the root of SUITE")
    ensure_parser.add_argument("suite", choices=sorted(SUITES.values()))
    run_parser = commands.add_parser("run", help="run CMD with the root of SUITE as /")
    run_parser.add_argument("suite", choices=sorted(SUITES.values()))
    run_parser.add_argument("--bind", action="append", default=[], metavar="DIR",
                            help="also bind DIR at the same path (repeatable)")
    run_parser.add_argument("argv", nargs="+", metavar="CMD")
    options = parser.parse_args(args)
    try:
        if options.command == "other":
            print(other_suite())
            return 0
        if os.geteuid() != 0:
            raise RootError("must run as root (debootstrap, mount namespaces)")
        if options.command == "ensure":
            ensure(options.suite)
            return 0
        return run(options.suite, options.argv, options.bind)
    except (RootError, OSError, subprocess.CalledProcessError) as error:
        print("roots: %s" % error, file=sys.stderr)
        return 1
    except KeyboardInterrupt:  # also SIGTERM; the command inside got SIGTERM too
        print("roots: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    sys.exit(main())
