#!/bin/sh
# The "init" of one cluster node: PID 1 of the node in spirit, not in fact.
#
#   node-init.sh NODE NODE_DIR OWNER_PID LIFETIME_SECONDS [FENCE_AGENTS_DIR [INSTALL_DIRS]]
#
# Started by cluster.py as
#   ip netns exec <ns> unshare --mount --uts --propagation private sh node-init.sh ...
# with a clean environment, so it already runs in the node's network namespace
# and in fresh, private mount and UTS namespaces.  It
#
# 1. gives the node its own copy of every place Corosync, Pacemaker, crmsh
#    and the agents write.  Without this the three nodes would share one CIB,
#    one corosync ring id file, one /dev/shm (libqb's IPC ring buffers), one
#    /run (pid files, HA_RSCTMP=/run/resource-agents where the agent keeps its
#    per-instance markers and locks) -- and would write into the host's
#    /etc/corosync and /var/lib/pacemaker.  /run and /dev/shm are tmpfs that
#    die with this mount namespace, exactly as they die with a real host;
#    /etc/corosync, /var/lib/* and /var/log are bind mounts of directories
#    under NODE_DIR, so they survive a "crash" (as a disk does) and the
#    harness can read the logs after the node is gone.  /etc/hosts names
#    every node (crmsh resolves them).  With FENCE_AGENTS_DIR, /usr/sbin
#    becomes a read-only overlay of that directory over the real /usr/sbin:
#    pacemaker-fenced looks for RHCS fence agents (fence_*) there, and the
#    test suite's own (fence_lab) appears without touching the host's
#    /usr/sbin.  With INSTALL_DIRS (directories, space-separated: where `make
#    install` writes), each becomes a writable overlay over the host's
#    directory, its upper layer NODE_DIR/install/<i> (on disk: an install
#    survives the node's reboot), so that `make install` run in this node
#    changes this node only.  Propagation is
#    private, so none of these mounts ever appears in the host's namespace.
# 2. sets the hostname (UTS namespace) to the node name, as on a real node.
# 3. starts corosync, waits (bounded) until it answers, then pacemakerd, both
#    in the foreground and with `env -i`: Pacemaker hands its own environment
#    to every agent it runs, so anything of the caller's (PYTHONPATH, a
#    virtualenv, LANG, proxy variables...) would leak into the agents.
# 4. watches OWNER_PID (the test process): when it is gone, or after
#    LIFETIME_SECONDS, it kills every process of this network namespace, so a
#    test run killed with SIGKILL does not leave a cluster running for ever.
#
# Progress lines ("mounted", "corosync up", "started ...") go to stdout,
# which the harness reads.
set -eu
NODE=$1
DIR=$2
OWNER=$3
LIFETIME=$4
FENCE_AGENTS=${5:-}
INSTALL_DIRS=${6:-}
CLEAN="env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin"

mount -t tmpfs -o mode=0755,size=64m "cipc-run-$NODE" /run
mkdir -m 1777 /run/lock
mkdir -m 0755 /run/resource-agents
mount -t tmpfs -o mode=1777,size=256m "cipc-shm-$NODE" /dev/shm
mount --bind "$DIR/etc-corosync" /etc/corosync
mount --bind "$DIR/var-lib-corosync" /var/lib/corosync
mount --bind "$DIR/var-lib-pacemaker" /var/lib/pacemaker
mount --bind "$DIR/var-lib-heartbeat" /var/lib/heartbeat
mount --bind "$DIR/var-log" /var/log
mount --bind "$DIR/home" /root
mount --bind "$DIR/hosts" /etc/hosts
if [ -n "$FENCE_AGENTS" ]; then
    mount -t overlay "cipc-fence-$NODE" -o "lowerdir=$FENCE_AGENTS:/usr/sbin" /usr/sbin
fi
i=0
for target in $INSTALL_DIRS; do
    mkdir -p "$DIR/install/$i/upper" "$DIR/install/$i/work"
    mount -t overlay "cipc-install$i-$NODE" \
        -o "lowerdir=$target,upperdir=$DIR/install/$i/upper,workdir=$DIR/install/$i/work" "$target"
    i=$((i + 1))
done
# CLUSTERIP_NODE_AGENT (cluster.py, from $CLUSTERIP_CLUSTER_AGENT): an
# agent to test instead of the installed one, bound over it in this private
# mount namespace only.
if [ -n "${CLUSTERIP_NODE_AGENT:-}" ]; then
    mount --bind "$CLUSTERIP_NODE_AGENT" /usr/lib/ocf/resource.d/custom/clusterip
fi
hostname "$NODE"
echo "mounted"

# The watchdog's way of ending the node: every process
# whose network namespace is ours, except this shell.
kill_node_processes() {
    set +e
    me=$(readlink /proc/$$/ns/net)
    for signal in TERM KILL; do
        for proc in /proc/[0-9]*; do
            pid=${proc#/proc/}
            [ "$pid" = "$$" ] && continue
            if [ "$(readlink "$proc/ns/net" 2>/dev/null)" = "$me" ]; then
                kill -s "$signal" "$pid" 2>/dev/null
            fi
        done
        [ "$signal" = TERM ] && sleep 2
    done
    return 0
}

$CLEAN corosync -f >>/var/log/cluster/corosync.out 2>&1 &
COROSYNC=$!
tries=0
until $CLEAN corosync-cfgtool -s >/dev/null 2>&1; do
    tries=$((tries + 1))
    if [ $tries -gt 300 ] || ! kill -0 $COROSYNC 2>/dev/null; then
        echo "corosync did not come up"
        kill_node_processes
        exit 1
    fi
    sleep 0.1
done
echo "corosync up"

# PCMK_logfacility=none: no syslog (a host's /dev/log would collect three
# nodes' lines); the log file /var/log/pacemaker/pacemaker.log is private.
$CLEAN PCMK_logfacility=none pacemakerd >>/var/log/pacemaker/pacemakerd.out 2>&1 &
echo "started corosync=$COROSYNC pacemakerd=$!"

end=$(( $(date +%s) + LIFETIME ))
while kill -0 "$OWNER" 2>/dev/null && [ "$(date +%s)" -lt "$end" ]; do
    sleep 1
done
echo "owner $OWNER gone or lifetime over: ending node $NODE"
kill_node_processes
