"""``clusterip status``: what this node serves, and with --cluster which node
serves which bucket according to Pacemaker.  For operators: text by default,
``--json`` for scripts.

    clusterip status              this node: VIP, backend, NIC, cluster MAC,
                                  hash mode, owned buckets, packets per bucket
    clusterip status --cluster    plus the bucket -> node map from Pacemaker
"""

import argparse
import json
import subprocess
import sys
import xml.etree.ElementTree as ElementTree

from clusterip import PROVIDER
from clusterip.errors import AgentError

CRM_MON = "/usr/sbin/crm_mon"
CIBADMIN = "/usr/sbin/cibadmin"
AGENT = ("ocf", PROVIDER, "clusterip")


def _xml(argv):
    try:
        result = subprocess.run(argv, capture_output=True, text=True, timeout=30, check=False)
    except OSError as error:
        raise AgentError("cannot run %s: %s (is Pacemaker installed?)"
                         % (argv[0], error)) from None
    if result.returncode != 0:
        raise AgentError("%s failed: %s" % (" ".join(argv), result.stderr.strip()))
    return ElementTree.fromstring(result.stdout)


def cluster_map(cib, mon):
    """{vip: {bucket: [node, ...]}} from the CIB's resources and crm_mon's status.

    Clone instance i owns bucket i+1; an instance Pacemaker reports on two
    nodes at once shows up with both (which must never happen).
    """
    vips = {}  # primitive id -> vip
    for primitive in cib.iter("primitive"):
        if (primitive.get("class"), primitive.get("provider"), primitive.get("type")) == AGENT:
            for pair in primitive.iter("nvpair"):
                if pair.get("name") == "ip":
                    vips[primitive.get("id")] = pair.get("value")
    buckets = {vip: {} for vip in vips.values()}
    for resource in mon.iter("resource"):
        name, _, instance = resource.get("id", "").partition(":")
        if name not in vips or not instance.isdigit():
            continue
        if resource.get("role") not in ("Started", "Promoted", "Unpromoted"):
            continue
        nodes = [node.get("name") for node in resource.iter("node")]
        buckets[vips[name]].setdefault(int(instance) + 1, []).extend(nodes)
    return buckets


def node_status(rsctmp=None):
    """The kernel's inventory of each VIP, plus its guard (the PID its handshake
    file names, or None) and the guard's repairs, from HA_RSCTMP."""
    import os

    from clusterip import backends, background, guard
    from clusterip.instance import DEFAULT_RSCTMP

    rsctmp = rsctmp or os.environ.get("HA_RSCTMP") or DEFAULT_RSCTMP
    vips = backends.inventory()
    for vip in vips:
        guard_path, repairs_path = guard.paths(rsctmp, vip["vip"])
        vip["guard"] = background.owner(guard_path)
        try:
            with open(repairs_path, encoding="utf-8", errors="replace") as f:
                vip["repairs"] = f.read().splitlines()
        except OSError:
            vip["repairs"] = []
    return vips


def render(vips, cluster):
    lines = []
    if not vips:
        lines.append("no cluster IP is configured on this node")
    for vip in vips:
        lines.append("%s  backend %s  nic %s  mac %s  hashmode %s  hash_init %s  buckets %s"
                     % (vip["vip"], vip["backend"], vip["nic"], vip["clustermac"],
                        vip["hashmode"], vip["hash_init"], vip["buckets"]))
        if vip.get("guard") or vip.get("repairs"):
            lines.append("  guard: %s; %d repairs%s" % (
                "pid %d" % vip["guard"] if vip.get("guard") else "none",
                len(vip["repairs"]), ", last: " + vip["repairs"][-1] if vip["repairs"] else ""))
        if vip.get("unicast"):  # a shared unicast cluster MAC: its two pieces
            lines.append("  unicast MAC: " + ", ".join(
                "%s %s" % (piece, "yes" if there else "MISSING")
                for piece, there in sorted(vip["unicast"].items())))
        if vip.get("owner_lease"):
            lines.append("  owner lease: %d s; left: %s" % (vip["owner_lease"], ", ".join(
                "bucket %d %d s" % item for item in sorted(vip["expires"].items())) or "none"))
        if vip.get("problem"):
            lines.append("  %s; owned here: %s" % (
                vip["problem"], ",".join(map(str, vip["owned"])) or "none"))
        owners = (cluster or {}).get(vip["vip"], {})
        header = "  bucket  here  packets      bytes" + ("  cluster" if cluster else "")
        lines.append(header)
        for bucket in range(1, (vip["buckets"] or 0) + 1):
            counter = vip["counters"].get(bucket, {})
            line = "  %6d  %-4s  %7s  %9s" % (
                bucket, "yes" if bucket in vip["owned"] else "-",
                counter.get("packets", "-"), counter.get("bytes", "-"))
            if cluster:
                line += "  " + (",".join(owners.get(bucket, [])) or "(stopped)")
            lines.append(line)
        if "total" in vip:
            lines.append("  all buckets: %(packets)s packets, %(bytes)s bytes" % vip["total"])
    for vip in sorted(set(cluster or {}) - {v["vip"] for v in vips}):
        lines.append("%s  (not on this node)  cluster: %s" % (vip, "  ".join(
            "%d:%s" % (b, ",".join(n)) for b, n in sorted(cluster[vip].items()))))
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(prog="clusterip", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    status = sub.add_parser("status", help="what this node (and the cluster) serves")
    status.add_argument("--cluster", action="store_true",
                        help="add the bucket -> node map from Pacemaker")
    status.add_argument("--json", action="store_true", help="machine-readable output")
    args = parser.parse_args(argv)
    try:
        vips = node_status()
        cluster = None
        if args.cluster:
            cluster = cluster_map(_xml([CIBADMIN, "--query", "--scope", "resources"]),
                                  _xml([CRM_MON, "--one-shot", "--output-as=xml"]))
    except AgentError as error:
        print("clusterip: %s" % error, file=sys.stderr)
        return 1
    if args.json:
        document = {"node": vips}
        if cluster is not None:
            document["cluster"] = {vip: {str(b): n for b, n in m.items()}
                                   for vip, m in cluster.items()}
        print(json.dumps(document, indent=2, sort_keys=True))
    else:
        print(render(vips, cluster))
    return 0


if __name__ == "__main__":
    sys.exit(main())
