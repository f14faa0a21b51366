"""The legacy backend: the kernel's own CLUSTERIP target (Linux <= 6.2).

Per VIP one rule in the legacy ``filter``/``INPUT`` table,
``-d VIP -i NIC -j CLUSTERIP --new --hashmode H --clustermac M
--total-nodes N --local-node K --hash-init S``, managed with python-iptables.
The kernel does the rest itself: it joins the NIC to the cluster MAC and
rewrites ARP for the VIP.  Buckets ("local nodes") are switched through
``/proc/net/ipt_CLUSTERIP/<VIP>``: write ``+N`` / ``-N``, read ``1,3``.

python-iptables has no locking and its autocommit swallows commit errors:
every change holds ``/run/xtables.lock`` (the lock iptables itself takes)
around refresh -> modify -> commit, with ``autocommit=False`` and an explicit
``commit()``.

python-iptables (1.2.0 and before) cannot set match or target options with
libxtables 1.8.11 and later (see _option_problem): start and validate-all
refuse with 5 there, before touching anything.  CLUSTERIP kernels (<= 6.2)
come with iptables <= 1.8.10 userspace (Debian 12: 1.8.9).
"""

import errno
import os
import sys
import time

from clusterip.backends import Backend, VipState
from clusterip.errors import GenericError, NotInstalled
from clusterip.testhooks import step

PROC_DIR = "/proc/net/ipt_CLUSTERIP"
XTABLES_LOCK = "/run/xtables.lock"
TARGET = "CLUSTERIP"
# Where the dynamic linker keeps libraries: RHEL/SUSE's lib64 and the plain
# ones, after Debian/Ubuntu's multiarch directories for this interpreter's
# architecture (_lib_dirs).  Used to find libip4tc, libxtables and the xtables
# extensions.
_PLAIN_LIB_DIRS = ("/usr/lib64", "/usr/lib", "/lib64", "/lib")
UPSTREAM_ISSUE = "ldx/python-iptables#353 (https://github.com/ldx/python-iptables/issues/353)"
DPKG_STATUS = "/var/lib/dpkg/status"


def proc_path(vip):
    return os.path.join(PROC_DIR, vip)


def parse_owned(text):
    """'1,3\\n' -> frozenset({1, 3}); '' (no local node) -> frozenset()."""
    text = text.strip()
    return frozenset(int(part) for part in text.split(",") if part) if text else frozenset()


def rule_options(params):
    """The CLUSTERIP target's options as iptables spells them (the config's identity)."""
    return {
        "hashmode": params.hashmode,
        "clustermac": params.clustermac.upper(),
        "total-nodes": str(params.total_buckets),
        "hash-init": str(params.hash_init),
    }


def _kernel_has_clusterip():
    """CLUSTERIP loaded, built in, or loadable as a module for the running kernel."""
    if os.path.isdir(PROC_DIR):
        return True
    try:
        with open("/proc/net/ip_tables_targets", encoding="ascii") as f:
            if TARGET in f.read().split():
                return True
    except OSError:
        pass
    release = os.uname().release
    for name in ("modules.dep", "modules.builtin"):
        try:
            with open("/lib/modules/%s/%s" % (release, name), encoding="utf-8") as f:
                if "ipt_CLUSTERIP.ko" in f.read():
                    return True
        except OSError:
            continue
    return False


def _lister():
    """listdir() that reads each directory once (a cache for one import)."""
    seen = {}

    def names(directory):
        if directory not in seen:
            try:
                seen[directory] = os.listdir(directory)
            except OSError:
                seen[directory] = []
        return seen[directory]
    return names


def _lib_dirs():
    """/usr/lib/<triplet> and /lib/<triplet> for the triplet this Python was
    built for (sysconfig's MULTIARCH: x86_64-linux-gnu, aarch64-linux-gnu,
    i386-linux-gnu, riscv64-linux-gnu, ...; empty off Debian), then the plain
    directories.  sysconfig is imported here, not at the top: only the
    python-iptables import needs it, and that imports sysconfig itself."""
    import sysconfig

    multiarch = sysconfig.get_config_var("MULTIARCH")
    if not multiarch:
        return _PLAIN_LIB_DIRS
    return ("/usr/lib/" + multiarch, "/lib/" + multiarch) + _PLAIN_LIB_DIRS


def _fast_find_library(name, lib_dirs, listing):
    """ctypes.util.find_library without ldconfig and gcc (which cost ~250 ms).

    System libraries by versioned name only: an unversioned libfoo.so may be a
    linker script (libc.so is); the shortest match is the soname
    (libip4tc.so.2, not .2.0.0).  python-iptables' own C helper
    (libxtwrapper) lives beside the iptc package, in site-packages.  Each
    directory is listed once and matched by prefix: python-iptables asks for
    six spellings of every library, and a glob per question (fnmatch over
    ~1200 names in /usr/lib/<triplet>) cost ~150 ms per action under
    user-mode Linux.
    """
    prefix = "lib%s.so." % name
    for directory in lib_dirs:
        found = [f for f in listing(directory) if f.startswith(prefix)]
        if found:
            return os.path.join(directory, min(found, key=len))
    for directory in sys.path:
        found = [f for f in listing(directory)
                 if f.startswith("lib%s." % name) and f.endswith("so")]
        if found:
            return os.path.join(directory, found[0])
    return None


def _import_iptc():
    """Import python-iptables fast (measured: 180 ms -> 25 ms on the host,
    1.8 s -> 0.25 s under user-mode Linux).  It resolves its libraries with
    ctypes.util.find_library (ldconfig + gcc), runs ldconfig once more unless
    XTABLES_LIBDIR is set, and imports distutils (setuptools' shim in a
    virtualenv would turn that into all of setuptools: the shim is a .pth
    file acting at interpreter start, before any code here, so `make
    install` removes setuptools from the venv instead).  Give it the answers."""
    import ctypes.util  # here, not at the top: it imports subprocess and shutil

    lib_dirs = _lib_dirs()
    if "XTABLES_LIBDIR" not in os.environ:
        for directory in lib_dirs:
            if os.path.isdir(os.path.join(directory, "xtables")):
                os.environ["XTABLES_LIBDIR"] = os.path.join(directory, "xtables")
                break
    original, listing = ctypes.util.find_library, _lister()
    ctypes.util.find_library = lambda name: (_fast_find_library(name, lib_dirs, listing)
                                             or original(name))
    try:
        import iptc
    except Exception as error:  # python-iptables raises plain Exceptions/XTablesError
        raise NotInstalled("python-iptables cannot load the iptables libraries (%s); "
                           "install iptables" % error) from None
    finally:
        ctypes.util.find_library = original
    return iptc


def _option_problem(iptc):
    """Why python-iptables cannot set an option of a match here, or None.

    iptables 1.8.11 added a member (``base``) to libxtables' struct
    xt_option_entry, keeping the soname libxtables.so.12.  python-iptables
    declares that struct in ctypes with the old layout, so it walks an
    extension's option table with the old stride (48 bytes, now 56): it finds
    the first option, then reads the next name from the first entry's new
    member and padding, which are 0 - a NULL name, the table's end - and
    reports "no such parameter" for every other option (upstream
    ldx/python-iptables#353, open).  The CLUSTERIP rule needs five options,
    "--hashmode" the first to fail.

    The probe sets the udp match's *second* option on a rule that exists only
    in memory: nothing is committed, and udp is part of every kernel's
    x_tables core, so it works without CLUSTERIP (the host kernel has none).
    With the mismatch the lookup stops at that NULL name, before any parser
    runs (it never calls into libxtables with a misread entry); without it,
    it is the parse every rule option goes through.  About 1 ms.  A udp match
    that cannot be created at all proves nothing either way: None, and the
    real work reports its own error.
    """
    try:
        match = iptc.Match(iptc.Rule(), "udp")
    except Exception:  # python-iptables raises XTablesError, ValueError...
        return None
    try:
        match.set_parameter("sport", "53")
    except Exception as error:
        return "%s: %s" % (type(error).__name__, error)
    return None


def _libxtables_version(iptc):
    """The installed libxtables' release ("1.8.11"), from the package that
    ships it (dpkg); else the library's file name (libxtables.so.12.7.0,
    which names the ABI, not the release)."""
    try:
        with open(DPKG_STATUS, encoding="utf-8", errors="replace") as f:
            stanzas = f.read().split("\n\n")
    except OSError:
        stanzas = []
    for stanza in stanzas:
        fields = dict(line.split(": ", 1) for line in stanza.splitlines()
                      if ": " in line and not line.startswith(" "))
        if fields.get("Package", "").startswith("libxtables") \
                and fields.get("Status") == "install ok installed" and "Version" in fields:
            # "1:1.8.11-2" -> "1.8.11": no epoch, no Debian revision.
            return fields["Version"].split(":")[-1].rsplit("-", 1)[0]
    try:
        return os.path.basename(os.path.realpath(iptc.xtables._lib_xtables._name))
    except Exception:
        return "unknown"


def _option_reason(iptc, problem):
    try:
        version = iptc.version.__version__
    except AttributeError:
        version = "(unknown version)"
    return ("python-iptables %s cannot set match or target options with libxtables %s "
            "(%s), so the clusterip backend cannot build its CLUSTERIP rule here: upstream "
            "%s, open; use backend=nft on every node, or iptables <= 1.8.10 "
            "(Debian 12 userspace) for backend=clusterip"
            % (version, _libxtables_version(iptc), problem, UPSTREAM_ISSUE))


class ClusteripBackend(Backend):
    name = "clusterip"
    filter_description = "CLUSTERIP rule"
    max_buckets = 16  # the kernel's CLUSTERIP_MAX_NODES
    # No graceful_handover.  The target (clusterip_tg() in
    # net/ipv4/netfilter/ipt_CLUSTERIP.c, unchanged in this respect until its
    # removal in 6.3) returns NF_DROP for every packet of a bucket the node is
    # not responsible for, whatever its conntrack state (ESTABLISHED included),
    # and it is what sets skb->pkt_type = PACKET_HOST on the packets it lets
    # through.  An ACCEPT rule in front of it for established flows would hand
    # TCP frames still marked PACKET_MULTICAST (they came to the cluster MAC),
    # which tcp_v4_rcv() discards; iptables has no target that sets the packet
    # type (pkttype is a match only), so only an nft rule could, i.e. the nft
    # backend.
    graceful_handover = False
    # ipv6 = False: the target is an IPv4 one (ipt_CLUSTERIP; there never was an
    # ip6t_CLUSTERIP).

    def __init__(self, **context):
        super().__init__(**context)
        self._iptc = None
        self._options_work = False

    def _lib(self):
        if self._iptc is None:
            self._iptc = _import_iptc()
        return self._iptc

    def kernel_supports(self):
        return _kernel_has_clusterip()

    def serves(self, params):
        # The target keeps one bucket file per VIP while a rule for it exists.
        return os.path.exists(os.path.join(PROC_DIR, params.vip))

    def check_available(self):
        if not _kernel_has_clusterip():
            raise NotInstalled("this kernel has no CLUSTERIP target (removed in Linux 6.3); "
                               "use backend=nft")

    def check_libraries(self):
        iptc = self._lib()
        if not self._options_work:  # once per process (start, validate-all)
            problem = _option_problem(iptc)
            if problem is not None:
                raise NotInstalled(_option_reason(iptc, problem))
            self._options_work = True

    # --- rules ----------------------------------------------------------------

    def _xtables_lock(self):
        from clusterip import lock

        if self.lock_deadline is None:
            return lock.held(XTABLES_LOCK, 10.0)
        # Within the action's timeout (set by the agent), not a fixed 10 s that
        # could outlast it: Pacemaker would kill the action and never see why.
        return lock.held(XTABLES_LOCK, max(0.0, self.lock_deadline - time.monotonic()))

    def _table(self):
        iptc = self._lib()
        table = iptc.Table(iptc.Table.FILTER, autocommit=False)
        table.refresh()
        return table, iptc.Chain(table, "INPUT")

    def _our_rules(self, chain, vip):
        return [rule for rule in chain.rules
                if rule.target.name == TARGET and rule.dst.split("/")[0] == vip]

    def _commit(self, table, what):
        try:
            table.commit()
        except Exception as error:  # iptc.IPTCError: libiptc's message
            raise GenericError("iptables: cannot %s: %s" % (what, error)) from None

    def _insert_rule(self, params, placement, local_node):
        iptc = self._lib()
        with self._xtables_lock():
            table, chain = self._table()
            rule = iptc.Rule()
            rule.dst = "%s/255.255.255.255" % params.vip
            rule.in_interface = placement.nic
            target = rule.create_target(TARGET)
            target.new = ""
            for option, value in rule_options(params).items():
                target.set_parameter(option.replace("-", "_"), value)
            target.local_node = str(local_node)
            chain.insert_rule(rule)
            self._commit(table, "add the CLUSTERIP rule for %s" % params.vip)

    def _delete_rules(self, params):
        with self._xtables_lock():
            table, chain = self._table()
            rules = self._our_rules(chain, params.vip)
            for rule in rules:
                chain.delete_rule(rule)
            if rules:
                self._commit(table, "delete the CLUSTERIP rule for %s" % params.vip)

    # --- buckets -----------------------------------------------------------------

    def _write_proc(self, vip, command):
        try:
            with open(proc_path(vip), "w", encoding="ascii") as f:
                f.write(command)
        except OSError as error:
            # Idempotence: the kernel answers ENOMEM for "+N" already owned and
            # ENOENT for "-N" not owned.
            if (command[0], error.errno) in (("+", errno.ENOMEM), ("-", errno.ENOENT)):
                return
            raise GenericError("cannot write %s to %s: %s"
                               % (command, proc_path(vip), error.strerror)) from None

    def _read_owned(self, vip):
        try:
            with open(proc_path(vip), encoding="ascii") as f:
                return parse_owned(f.read())
        except FileNotFoundError:
            return None

    # --- the Backend interface ---------------------------------------------------

    # The remembered full check (see Backend.state): the full check reads the
    # rules through python-iptables, the fast path filter INPUT's bytes (see
    # clusterip.kernel.iptables) and the bucket file.

    def _fingerprint(self, params):
        from clusterip.kernel import iptables  # here: ctypes, which backend=auto on nft never needs

        try:
            return iptables.chain_bytes("filter", iptables.NF_INET_LOCAL_IN)
        except OSError:
            return None

    def _owned(self, params):
        return self._read_owned(params.vip)

    def _present(self, params, fingerprint, owned):
        from clusterip.kernel import iptables

        # No bucket file and no CLUSTERIP rule at all: nothing of the VIP (the
        # monitor of an instance that never ran here: no python-iptables).
        return owned is not None or fingerprint is None \
            or iptables.has_target(fingerprint, TARGET)

    def _full_state(self, params, placement, owned, multicast):
        table, chain = self._table()
        rules = self._our_rules(chain, params.vip)
        if owned is None and not rules:
            return None
        missing = []
        if not rules:
            missing.append("CLUSTERIP rule for %s" % params.vip)
        else:
            wanted = rule_options(params)
            found = {k: v[0] if v else "" for k, v in
                     rules[0].target.get_all_parameters().items()}
            differs = [k for k, v in wanted.items() if found.get(k, "").upper() != v.upper()]
            if placement is not None and rules[0].in_interface != placement.nic:
                differs.append("interface")
            if len(rules) > 1 or differs:
                missing.append("CLUSTERIP rule matching the configuration (%s)"
                               % ", ".join(differs or ["duplicate rules"]))
        return VipState(owned=owned or frozenset(), missing=tuple(missing) + multicast)

    def create(self, params, placement, owned):
        owned = sorted(owned)
        # Two commits, not one: in a single commit the new rule would find the
        # old configuration still alive and silently keep its options.
        self._delete_rules(params)
        step("clusterip:rules-deleted")
        self._insert_rule(params, placement, owned[0])
        step("clusterip:rule-inserted")
        for bucket in owned[1:]:
            self._write_proc(params.vip, "+%d" % bucket)

    def add_bucket(self, params, bucket):
        self._write_proc(params.vip, "+%d" % bucket)

    def remove_bucket(self, params, bucket):
        self._write_proc(params.vip, "-%d" % bucket)

    def destroy(self, params, placement):
        self.forget()
        self._delete_rules(params)

    def inventory(self):
        try:
            vips = sorted(os.listdir(PROC_DIR))
        except FileNotFoundError:
            return []
        _, chain = self._table()
        found = []
        for vip in vips:
            report = {"backend": self.name, "vip": vip, "nic": None, "clustermac": None,
                      "hashmode": None, "hash_init": None, "buckets": None,
                      "owned": sorted(self._read_owned(vip) or ()),
                      "counters": {}}  # CLUSTERIP keeps no per-bucket counters
            for rule in self._our_rules(chain, vip)[:1]:
                options = {k: v[0] if v else "" for k, v in
                           rule.target.get_all_parameters().items()}
                packets, octets = rule.get_counters()
                report.update(nic=rule.in_interface,
                              clustermac=options.get("clustermac", "").lower(),
                              hashmode=options.get("hashmode"),
                              hash_init=int(options.get("hash-init", "0")),
                              buckets=int(options.get("total-nodes", "0")),
                              total={"packets": packets, "bytes": octets})
            found.append(report)
        return found

