"""What the other nodes of the cluster use: refuse to mix backends.

The nft and CLUSTERIP backends put the same packet into different buckets
(CLUSTERIP hashes the byte-swapped address, nft the raw bytes), so a cluster
whose nodes chose differently would drop some connections and answer others
twice.  Each node publishes the backend it serves a VIP with as a transient
Pacemaker node attribute, ``clusterip-backend-<VIP>``; a start compares with
what the other nodes published and refuses on a mismatch (exit 1: the
conflict passes, and the clone's failure-timeout lets Pacemaker retry; see
ClonedInstance._check_peers).  An IPv6 VIP's name has colons
(``clusterip-backend-2001:db8::100``): Pacemaker keeps attribute names
verbatim and sanitises only the CIB's nvpair id (':' -> '.'), so no
escaping is needed (the cluster tier checks it).

Only under Pacemaker (it passes ``OCF_RESKEY_CRM_meta_on_node``); a failure
to reach the attribute daemon is logged, not fatal: it must not turn a
working node into a failed one.
"""

import os
import re
import subprocess

ATTRD_UPDATER = "/usr/sbin/attrd_updater"
_ENTRY = re.compile(r'name="[^"]*"\s+host="(?P<host>[^"]*)"\s+value="(?P<value>[^"]*)"')


def attribute(vip):
    return "clusterip-backend-%s" % vip


def parse_query(text):
    """attrd_updater -A -Q output -> {node: value}."""
    return {m.group("host"): m.group("value") for m in _ENTRY.finditer(text)}


def conflicts(published, this_node, backend):
    """{node: backend} of the other nodes that serve the VIP with another backend."""
    return {node: value for node, value in published.items()
            if node != this_node and value and value != backend}


def _attrd(args, log):
    # attrd_updater reads OCF_RESKEY_CRM_meta_on_node (which Pacemaker hands the
    # agent) as the node to act on, and then answers --query --all with that
    # node only: call it without the variable, naming nodes with --node instead.
    env = {k: v for k, v in os.environ.items() if k != "OCF_RESKEY_CRM_meta_on_node"}
    try:
        result = subprocess.run([ATTRD_UPDATER, *args], capture_output=True, text=True,
                                timeout=10, check=False, env=env)
    except (OSError, subprocess.TimeoutExpired) as error:
        log.warning("cannot run %s: %s" % (ATTRD_UPDATER, error))
        return None
    if result.returncode != 0:
        if "does not exist" in result.stderr:
            return ""  # nobody published yet: the normal first start in a cluster
        log.warning("%s %s: %s" % (ATTRD_UPDATER, " ".join(args), result.stderr.strip()))
        return None
    return result.stdout


def published(vip, log):
    text = _attrd(["--name", attribute(vip), "--query", "--all"], log)
    return parse_query(text) if text is not None else {}


def publish(vip, node, backend, log):
    _attrd(["--name", attribute(vip), "--node=" + node, "--update", backend], log)


def withdraw(vip, node, log):
    _attrd(["--name", attribute(vip), "--node=" + node, "--delete"], log)
