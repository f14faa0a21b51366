"""clusterip against IPaddr2, side by side on this machine, in one run (issue #6).

Prints tables of medians and ratios (clusterip / IPaddr2), each figure with
its target and whether it is met.  Run as root (``make benchmark``);
everything happens in network namespaces this script creates and removes
(inside the guest for the Linux 6.1 part).  These machines are noisy: every
figure is a median of many runs, the two agents are run alternately so that
drift hits both alike, and the ratios are what to compare.  The installed
agent (/usr/lib/ocf/resource.d/<provider>/clusterip) is what is measured.

Measured here:
1. plain mode (one address, no clone) on the host kernel: start, stop,
   monitor of a stopped address, probe, monitor of a running one; then the
   same five for what users of a current kernel run, clusterip cloned on
   nft (instance 0 of a clone of 3), beside IPaddr2's plain mode (issue #17);
2. cloned mode on the iptables CLUSTERIP target, in a Linux 6.1
   user-mode-linux guest (guest_cloned.py): the same five actions for
   clusterip (backend=clusterip) and IPaddr2's clone mode;
3. the running monitor with 10,000 unrelated firewall rules loaded versus
   none: nft rules on the host (clusterip cloned with the nft backend, IPaddr2
   plain), iptables-legacy rules in the 6.1 guest (both agents cloned);
4. the time one bucket move takes inside an action (in-process, libnftables);
5. bucket evenness: 10,000 random sources over 16 buckets per hash mode,
   counted by the kernel's own per-bucket counters (max / mean);
6. CPU seconds per hour for 16 instances monitored every 10 s;
7. failover after a node crash in a real Pacemaker + Corosync cluster
   (failover.py, the cluster tier's own measurement): clusterip against a
   Dummy clone, for Corosync's default timings and for token 1000 ms.

--no-uml and --no-failover skip parts 2 and 7 (the slow ones) while working
on the rest; a default run takes about 6-8 minutes on two busy cores.

A complete run (every part measured) also writes its tables, with the date,
the machine and the versions measured, into docs/MEASUREMENTS.rst between
the two marker comments there (the rest of the file is kept); --output
names another file, --output - none.
"""

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
TESTS = os.path.dirname(HERE)
# Run as a script (make benchmark), outside pytest, whose pythonpath does not
# apply: what the parts imported below need, beside this directory (measure.py):
# tests/ (netlab, scenarios, roots), tests/legacy (uml, guest_roots) and
# tests/cluster (cluster, test_cluster, for failover.py).
sys.path[1:1] = [TESTS, os.path.join(TESTS, "legacy"), os.path.join(TESTS, "cluster")]

import failover  # noqa: E402  (needs the path above)
import guest_cloned  # noqa: E402
import guest_roots  # noqa: E402
import uml  # noqa: E402
from measure import (  # noqa: E402
    ACTIONS,
    CLUSTERIP,
    IPADDR2,
    THEIR_VIP,
    VIP,
    Agent,
    Namespace,
    compare_actions,
    monitor_with_rules,
    unrelated_sources,
)

# The namespace prefix of the test tiers ($CLUSTERIP_TEST_NS_PREFIX, netlab.py), so that
# runs by different people on one machine keep apart.
NS = "%sbench%d" % (os.environ.get("CLUSTERIP_TEST_NS_PREFIX", "cip"), os.getpid() % 100000)
MEASUREMENTS = os.path.join(os.path.dirname(TESTS), "docs", "MEASUREMENTS.rst")
# The lines between these two (in MEASUREMENTS) are this script's.
BEGIN_MARK = ".. benchmark: begin (written by make benchmark; edits up to the end mark are lost)"
END_MARK = ".. benchmark: end"
# The packages whose versions a run reports (dpkg), as a user would name them.
VERSIONS = (("Python", "python3"), ("nftables", "nftables"), ("iptables", "iptables"),
            ("resource-agents (IPaddr2)", "resource-agents"), ("Pacemaker", "pacemaker"),
            ("Corosync", "corosync"), ("user-mode-linux", "user-mode-linux"))
RULES = 10000
# Issue #6's targets.  Ratios are clusterip / IPaddr2; "rules" is monitor with
# 10,000 unrelated rules / without.
RATIO_TARGETS = {"start": 1.0, "stop": 1.0, "monitor, stopped": 0.5,
                 "probe (interval 0), nothing here": 0.5, "monitor, running": 0.5}
RULES_TARGET = 1.2
BUCKET_MOVE_TARGET_MS = 1.0
EVENNESS_TARGET = 1.15
FAILOVER_MARGIN_S = 0.2  # clusterip's failover may take this much longer than Dummy's
UML_TIMEOUT = 600  # s; a guest still running after this is killed (bounded)
TARGET_HEAD = "  %-9s %s" % ("target", "met")  # the last two columns of a table's head


def verdict(value, limit, sign=""):
    """The target and met columns of a row."""
    return "  %-9s %s" % ("<= %s%.2f" % (sign, limit), "yes" if value <= limit else "NO")


# -- 1, 2: the five actions, agents side by side -------------------------------------------


def actions_table(title, medians):
    """medians: {label: {"clusterip": ms, "IPaddr2": ms}} for the ACTIONS."""
    lines = ["%-36s %9s %9s %7s" % (title, "clusterip", "IPaddr2", "ratio") + TARGET_HEAD]
    for label in ACTIONS:
        ours, theirs = medians[label]["clusterip"], medians[label]["IPaddr2"]
        lines.append("%-36s %9.1f %9.1f %7.2f" % (label, ours, theirs, ours / theirs)
                     + verdict(ours / theirs, RATIO_TARGETS[label]))
    return lines


def cloned_under_uml(rounds):
    """Part 2 and the guest's rows of part 3, from guest_cloned.py in a 6.1 guest.

    Returns its result ({"actions": ..., "rules": ...}) or raises RuntimeError.
    """
    # Over a Debian 12 root, as the legacy tier: CLUSTERIP needs its userspace.
    root = guest_roots.legacy()
    problems = uml.problems(root)
    if problems:
        raise RuntimeError("no Linux 6.1 guest here: " + "; ".join(problems))
    # The test venv's interpreter (the root has one: guest_roots); measure.py
    # takes the provider name from the checkout's lib/.
    result = uml.capture([sys.executable, os.path.join(HERE, "guest_cloned.py"), str(rounds)],
                         cwd=HERE, timeout=UML_TIMEOUT, root=root,
                         env={"PYTHONPATH": os.path.join(os.path.dirname(TESTS), "lib")},
                         readonly=[os.path.dirname(TESTS)])
    for line in result.output.splitlines():
        if line.startswith(guest_cloned.RESULT_MARKER + " "):
            return json.loads(line[len(guest_cloned.RESULT_MARKER) + 1:])
    sys.stderr.write(result.output[-4000:])
    raise RuntimeError("the guest returned no result (exit %d; its output above)"
                       % result.returncode)


# -- 3, 4: a cloned clusterip (nft) on the host ------------------------------------------


def cloned_nft(ns, buckets=16, **extra):
    """Our agent as clone instance 0 of ``buckets``, nft backend."""
    return Agent("clusterip", CLUSTERIP, ns, VIP, dict({
        "OCF_RESKEY_CRM_meta_clone": "0", "OCF_RESKEY_CRM_meta_clone_max": str(buckets),
        "OCF_RESKEY_CRM_meta_globally_unique": "true", "OCF_RESKEY_backend": "nft"}, **extra))


def nft_rules(ns, rounds):
    """Host rows of part 3: {row label: (median ms without, with)}."""
    def load():
        ns.run("nft", "-f", "-", input="add table ip benchfill\n"
               "add chain ip benchfill input { type filter hook input priority 0; }\n"
               + "".join("add rule ip benchfill input ip saddr %s drop\n" % source
                         for source in unrelated_sources(RULES)))

    found = monitor_with_rules([cloned_nft(ns), Agent("IPaddr2", IPADDR2, ns, THEIR_VIP)],
                               load, lambda: ns.run("nft", "delete", "table", "ip", "benchfill"),
                               rounds)
    return {"clusterip cloned, nft, host: nft rules": found["clusterip"],
            "IPaddr2 plain, host: nft rules": found["IPaddr2"]}


def rules_table(rows):
    """rows: {label: (ms without, ms with)}; the target applies to clusterip's rows."""
    lines = ["%-46s %7s %7s %6s" % ("monitor, 10,000 unrelated rules (ms)", "none", "10,000",
                                     "ratio") + TARGET_HEAD]
    for label, (without, loaded) in rows.items():
        ratio = loaded / without
        lines.append("%-46s %7.1f %7.1f %6.2f" % (label, without, loaded, ratio)
                     + (verdict(ratio, RULES_TARGET) if label.startswith("clusterip") else ""))
    return lines


def table_copy_rows(copy, monitor):
    """The kernel's copy of the filter table alone (IPT_SO_GET_ENTRIES: whole
    tables only, every entry's per-CPU counters summed), without and with the
    rules, against what the 1.2 target leaves the monitor for them: when the
    copy alone grows by more than that, no agent that reads its rule from the
    kernel can meet the target with rules in the same table."""
    allowed = monitor[0] * (RULES_TARGET - 1)
    grown = copy[1] - copy[0]
    return ["%-46s %7.1f %7.1f %6.2f" % ("  the kernel's copy of filter alone, 6.1",
                                         copy[0], copy[1], copy[1] / copy[0]),
            "    it grows by %.1f ms; the target leaves the monitor %.1f ms for the rules: %s"
            % (grown, allowed, "beyond reach through this kernel interface" if grown > allowed
               else "within reach")]


def interpreter():
    """The interpreter the installed agent names (its library is installed there)."""
    with open(CLUSTERIP) as f:
        return f.readline()[2:].split()[0]


def bucket_move(ns, count=500):
    """Part 4: median ms of one element added to / deleted from the owned set, in-process."""
    code = (
        "import time, statistics\n"
        "from clusterip import params\n"
        "from clusterip.backends import nft\n"
        "p = params.parse({'OCF_RESKEY_ip': %r, 'OCF_RESKEY_CRM_meta_clone': '0',"
        " 'OCF_RESKEY_CRM_meta_clone_max': '16', 'OCF_RESKEY_CRM_meta_globally_unique': '1'})\n"
        "b = nft.NftBackend(); t = []\n"
        "for i in range(%d):\n"
        "    s = time.perf_counter(); b.add_bucket(p, 9); b.remove_bucket(p, 9)\n"
        "    t.append((time.perf_counter() - s) / 2)\n"
        "print(statistics.median(t) * 1000)\n" % (VIP, count))
    agent = cloned_nft(ns)
    agent.run("start", expect=0)  # the table and set the move changes
    try:
        ms = float(ns.run(interpreter(), "-c", code).stdout)
    finally:
        agent.run("stop", expect=0)
    return ["%-46s %9s" % ("one bucket move inside an action (ms)", "median") + TARGET_HEAD,
            "%-46s %9.3f" % ("nft set element (add+delete)/2, in-process", ms)
            + verdict(ms, BUCKET_MOVE_TARGET_MS)]


# -- 5: evenness ------------------------------------------------------------------------


def status_json(ns):
    return json.loads(ns.run(interpreter(), "-m", "clusterip.cli", "status", "--json").stdout
                      )["node"][0]


def evenness(ns, sources=10000, buckets=16):
    """max/mean of the kernel's per-bucket counters for random sources, per hash mode."""
    lines = ["%-38s %9s %9s %8s" % ("evenness, 10,000 sources / 16 buckets", "max/mean",
                                     "min/mean", "packets") + TARGET_HEAD]
    for mode in ("sourceip", "sourceip-sourceport", "sourceip-sourceport-destport"):
        agent = cloned_nft(ns, buckets, OCF_RESKEY_hashmode=mode)
        agent.run("start", expect=0)
        try:
            ns.run(sys.executable, "-I", os.path.join(HERE, "sprinkle.py"), "wire",
                   status_json(ns)["clustermac"], VIP, str(sources))
            counts = [c["packets"] for c in status_json(ns)["counters"].values()]
        finally:
            agent.run("stop", expect=0)
        mean = sum(counts) / len(counts)
        lines.append("%-38s %9.3f %9.3f %8d" % (mode, max(counts) / mean, min(counts) / mean,
                                                sum(counts))
                     + verdict(max(counts) / mean, EVENNESS_TARGET))
    return lines


# -- 6: CPU -------------------------------------------------------------------------------


def cpu_per_hour(cpu):
    calls = 16 * 3600 / 10
    ours, theirs = statistics.median(cpu["clusterip"]), statistics.median(cpu["IPaddr2"])
    return ["%-36s %9s %9s %7s" % ("CPU s/hour, 16 instances, 10 s", "clusterip", "IPaddr2",
                                   "ratio"),
            "%-36s %9.1f %9.1f %7.2f" % ("monitor (user+sys of the process)", ours * calls,
                                         theirs * calls, ours / theirs)]


# -- 7: failover --------------------------------------------------------------------------


def failover_table(results, kills):
    """results: {setting: {measure: [s]}} from failover.measure."""
    lines = ["%-56s %7s" % ("failover after a node crash, %d kills (s from the kill)" % kills,
                            "median") + TARGET_HEAD]
    for setting, found in results.items():
        lines.append("Corosync %s" % ("default timings" if setting == "default"
                                      else "token 1000 ms"))
        medians = {key: statistics.median(found[key]) for key, _ in failover.MEASURES}
        for key, label in failover.MEASURES:
            lines.append("  %-54s %7.2f  (%s)" % (label, medians[key], " ".join(
                "%.2f" % s for s in found[key])))
        # The target is judged on traffic answered, clusterip's failover as users
        # see it, against Pacemaker's report, all a Dummy (no traffic) can show.
        # Pacemaker's report for both (crm_mon polled every ~0.1-0.2 s) is the
        # like-for-like comparison, shown beside it.  Both clones fail over in
        # the same kill, so the difference is taken per kill, then the median:
        # the kills' own spread (Corosync's timers, ~1 s) cancels out, which a
        # difference of two medians from different kills would not do.
        late = _paired_median(found["clusterip_traffic"], found["dummy_pacemaker"])
        lines.append("  %-54s %+7.2f" % ("clusterip traffic - Dummy, median per kill", late)
                     + verdict(late, FAILOVER_MARGIN_S, "+"))
        lines.append("  %-54s %+7.2f" % ("clusterip Pacemaker report - Dummy, per kill",
                                         _paired_median(found["clusterip_pacemaker"],
                                                        found["dummy_pacemaker"])))
    return lines


def _paired_median(ours, theirs):
    return statistics.median(a - b for a, b in zip(ours, theirs, strict=True))


def failovers(kills, verbose, started):
    """Part 7 for both Corosync timings: ([its table] or [], [what failed])."""
    problem = failover.problem()
    if problem:
        return [], ["failover: %s" % problem]
    results, failed, log = {}, [], []
    # The harness logs every step: shown with --verbose, else kept for a failure.
    sink = (lambda line: print(line, file=sys.stderr, flush=True)) if verbose else log.append
    for setting in ("default", "token1000"):
        progress(started, "failover, Corosync %s, %d kills" % (setting, kills))
        try:
            results[setting] = failover.measure(kills, setting, sink)
        except Exception as error:  # noqa: BLE001  (report it, keep the other setting)
            sys.stderr.write("\n".join(log[-30:]) + "\n")
            failed.append("failover (%s): %s" % (setting, str(error).splitlines()[0]))
    return ([failover_table(results, kills)] if results else []), failed


# -- the record in docs/ ---------------------------------------------------------------------


def machine():
    """One line: kernel, Debian release, CPUs (with the model /proc/cpuinfo names)."""
    model = ""
    try:
        with open("/proc/cpuinfo") as f:
            model = next((line.split(":", 1)[1].strip() for line in f
                          if line.startswith("model name")), "")
    except OSError:
        pass
    try:
        with open("/etc/debian_version") as f:
            debian = "Debian " + f.read().strip()
    except OSError:
        debian = "not Debian"
    return "Linux %s (%s), %s, %d CPUs%s" % (os.uname().release, os.uname().machine, debian,
                                            os.cpu_count() or 0,
                                            " (%s)" % model if model else "")


def versions():
    """"name version, ..." of the packages that were measured or measured against."""
    found = []
    for label, package in VERSIONS:
        result = subprocess.run(["dpkg-query", "-W", "-f=${Version}", package],
                                capture_output=True, text=True, check=False)
        found.append("%s %s" % (label, result.stdout.strip() if result.returncode == 0
                                else "(not installed)"))
    return ", ".join(found)


def checkout():
    """The checkout's commit the benchmark ran from, and whether the installed
    library (what is measured) is this checkout's lib/clusterip."""
    result = subprocess.run(["git", "-C", TESTS, "log", "-1", "--format=%h %cd", "--date=short"],
                            capture_output=True, text=True, check=False)
    commit = result.stdout.strip() if result.returncode == 0 else "unknown"
    found = subprocess.run([interpreter(), "-c", "import clusterip; print(clusterip.__path__[0])"],
                           capture_output=True, text=True, check=False).stdout.strip()
    mine = os.path.join(os.path.dirname(TESTS), "lib", "clusterip")

    def sources(top):
        return {os.path.relpath(os.path.join(d, n), top): open(os.path.join(d, n), "rb").read()
                for d, _, names in os.walk(top) for n in names if n.endswith(".py")}
    same = bool(found) and sources(found) == sources(mine)
    return "%s (its lib/clusterip %s the installed library)" % (
        commit, "is" if same else "differs from")


def record(heading, text, origin, loads):
    """The lines this run puts between the markers: what ran where, then its tables.

    origin: checkout() at the start; loads: the 1-minute load average at the
    start and at the end (other work on the machine slows both agents, not alike).
    """
    return [BEGIN_MARK, "", heading + ".", "",
            "* machine: %s" % machine(),
            "* load average (1 min): %.1f at the start, %.1f at the end" % loads,
            "* versions: %s" % versions(),
            "* agent measured: %s (installed); benchmark from the checkout at %s"
            % (CLUSTERIP, origin), "", "::", ""] + [
            ("    " + line).rstrip() for line in text.splitlines()] + ["", END_MARK]


def write_record(path, lines):
    """Replace what lies between the markers in ``path`` with ``lines`` (markers included)."""
    with open(path) as f:
        old = f.read().splitlines()
    try:
        begin, end = old.index(BEGIN_MARK), old.index(END_MARK)
    except ValueError:
        raise SystemExit("benchmark: %s lacks the lines %r and %r"
                         % (path, BEGIN_MARK, END_MARK)) from None
    scratch = path + ".new"
    with open(scratch, "w") as f:
        f.write("\n".join(old[:begin] + lines + old[end + 1:]) + "\n")
    os.replace(scratch, path)


# -- the run --------------------------------------------------------------------------------


def interrupt(signum, frame):
    raise KeyboardInterrupt("signal %d" % signum)


def progress(started, text):
    print("[%5.0f s] %s" % (time.monotonic() - started, text), file=sys.stderr, flush=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=30,
                        help="runs per host figure (default %(default)s)")
    parser.add_argument("--uml-rounds", type=int, default=8,
                        help="runs per figure inside the 6.1 guest, where every call is "
                             "~10x slower (default %(default)s)")
    parser.add_argument("--kills", type=int, default=5,
                        help="node crashes per Corosync timing (default %(default)s)")
    parser.add_argument("--no-uml", action="store_true", help="skip the Linux 6.1 guest")
    parser.add_argument("--no-failover", action="store_true", help="skip the cluster")
    parser.add_argument("--output", default=MEASUREMENTS,
                        help="the file whose benchmark section a complete run rewrites, "
                             "or - for none (default %(default)s)")
    parser.add_argument("-v", "--verbose", action="store_true",
                        help="show the cluster harness's progress lines")
    args = parser.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("benchmark: run as root (it creates network namespaces)")
    # A cancelled run (SIGTERM) unwinds like Ctrl-C: namespaces are deleted,
    # the guest and the cluster killed by the cleanups on the way out.
    signal.signal(signal.SIGTERM, interrupt)
    started = time.monotonic()
    origin, load = checkout(), os.getloadavg()[0]
    sections, failed = [], []

    with Namespace(NS) as ns:
        progress(started, "plain mode on the host kernel")
        # Part 1: plain mode, one address, no clone meta-attributes.
        plain, cpu = compare_actions([Agent("clusterip", CLUSTERIP, ns, VIP),
                                      Agent("IPaddr2", IPADDR2, ns, THEIR_VIP)], args.rounds)
        # Part 1b: what a user on a current kernel runs, a cloned VIP on nft
        # (instance 0 of a clone of 3), beside the plain IPaddr2 they know.
        progress(started, "cloned nft against IPaddr2 plain on the host kernel")
        cloned, _ = compare_actions([cloned_nft(ns, 3), Agent("IPaddr2", IPADDR2, ns, THEIR_VIP)],
                                    args.rounds)
        progress(started, "monitor with %d unrelated nft rules" % RULES)
        rules = nft_rules(ns, args.rounds)
        progress(started, "bucket move, evenness")
        moves = bucket_move(ns)
        even = evenness(ns)
    sections.append(actions_table("plain mode, host kernel (ms)", plain))
    sections.append(actions_table("cloned nft vs IPaddr2 plain, host (ms)", cloned))

    guest = {}
    if not args.no_uml:
        progress(started, "cloned mode in a Linux 6.1 guest")
        try:
            guest = cloned_under_uml(args.uml_rounds)
        except RuntimeError as error:
            failed.append("cloned mode under Linux 6.1: %s" % error)
        else:
            sections.append(actions_table("cloned, CLUSTERIP, Linux 6.1 (ms)",
                                          guest["actions"]))
            rules.update({"%s cloned, CLUSTERIP, 6.1: legacy rules" % name: medians
                          for name, medians in guest["rules"].items()})
    sections.append(rules_table(rules))
    if guest:
        sections[-1] += table_copy_rows(guest["table_copy"],
                                        rules["clusterip cloned, CLUSTERIP, 6.1: legacy rules"])
    sections += [moves, even, cpu_per_hour(cpu)]

    if not args.no_failover:
        section, problems = failovers(args.kills, args.verbose, started)
        sections += section
        failed += problems

    heading = "clusterip benchmark, %s, medians of %d rounds%s" % (
        time.strftime("%Y-%m-%d"), args.rounds,
        "" if args.no_uml else " (%d in the 6.1 guest)" % args.uml_rounds)
    tables = "\n\n".join("\n".join(s) for s in sections)
    elapsed = time.monotonic() - started
    tables += "\n\ntotal run time: %d min %02d s" % divmod(round(elapsed), 60)
    print("\n%s\n\n%s" % (heading, tables))
    for text in failed:
        print("\nNOT MEASURED: %s" % text)
    if args.output != "-":
        if failed or args.no_uml or args.no_failover:
            # A partial run must not replace a complete record.
            print("\n%s not updated: not every part was measured" % args.output)
        else:
            write_record(args.output, record(heading, tables, origin,
                                             (load, os.getloadavg()[0])))
            print("\nwritten to %s" % args.output)
    return 1 if failed else 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        print("benchmark: interrupted (namespaces removed, guest and cluster ended)",
              file=sys.stderr)
        sys.exit(130)
