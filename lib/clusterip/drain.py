"""Connection draining (issue #16): the stop of a node's last instance of a
VIP keeps serving the node's established connections for a while.

With ``graceful_handover`` the VIP's chain accepts the packets of every TCP
connection this node's conntrack tracks, whatever their bucket.  So once
the stop has released the node's buckets (the set ``owned`` empty: no new
connection is accepted here) and while it keeps the address and the
tables, the node's established connections go on.  The stop waits until
none is left (counted over sock_diag, :mod:`clusterip.kernel.sockdiag`) or
``drain_timeout`` passes, then removes everything as without draining.

Pacemaker kills a stop that outlasts its timeout and fences the node, so
the drain ends RESERVE seconds before the stop's timeout whatever
drain_timeout says (:func:`budget`): the lock and the teardown need them.
Imported by the stop and validate-all only.

validate-all cannot learn the stop's timeout from Pacemaker (it hands
validate-all its own), so it reads the resource's configuration, as
``cibadmin --query`` prints it (:func:`stop_timeout_in_cib`).
"""

import re
import subprocess
import time

INTERVAL = 0.1  # s between two counts: sock_diag answers in well under a millisecond
# s of the stop's timeout kept for what follows the drain: the VIP's lock
# (another instance's action may hold it) and the teardown (tens of ms).
RESERVE = 5.0


def budget(drain_timeout, stop_timeout, elapsed):
    """The seconds the drain may last: drain_timeout, cut so that the stop,
    ``elapsed`` seconds into its ``stop_timeout``, ends RESERVE seconds
    before it."""
    return max(0.0, min(drain_timeout, stop_timeout - RESERVE - elapsed))


def needed_stop_timeout(drain_timeout):
    """The shortest stop timeout, in whole seconds, that fits a whole drain."""
    return int(-(-(drain_timeout + RESERVE) // 1))


def wait(count, seconds, clock=None, sleep=None, interval=INTERVAL):
    """Poll ``count()`` every ``interval`` until it answers 0 or ``seconds``
    have passed; (first count, last count, seconds waited).  A count of None
    (the kernel cannot tell) is not 0: the drain then lasts ``seconds``.
    ``clock`` and ``sleep``: time.monotonic and time.sleep, looked up here
    (the unit tests replace this module's ``time``)."""
    clock, sleep = clock or time.monotonic, sleep or time.sleep
    began = clock()
    deadline = began + seconds
    first = last = count()
    while last != 0:
        left = deadline - clock()
        if left <= 0:
            break
        sleep(min(interval, left))
        last = count()
    return first, last, clock() - began


CIBADMIN = "/usr/sbin/cibadmin"
# Pacemaker's durations: a number with an optional unit (none: seconds), or
# ISO 8601 (PT1M30S).
_DURATION = re.compile(r"^\s*([0-9]+(?:\.[0-9]+)?)\s*(ms|msec|us|usec|s|sec|m|min|h|hr)?\s*$")
_ISO8601 = re.compile(r"^PT(?:([0-9]+)H)?(?:([0-9]+)M)?(?:([0-9]+(?:\.[0-9]+)?)S)?$")
_UNIT_SECONDS = {None: 1, "s": 1, "sec": 1, "ms": 1e-3, "msec": 1e-3, "us": 1e-6,
                 "usec": 1e-6, "m": 60, "min": 60, "h": 3600, "hr": 3600}


def parse_duration(text):
    """Seconds of a Pacemaker duration ("30s", "30", "1min", "500ms", "PT1M"), or
    None for anything else."""
    text = (text or "").strip()
    match = _DURATION.match(text.lower())
    if match:
        return float(match.group(1)) * _UNIT_SECONDS[match.group(2)]
    match = _ISO8601.match(text.upper())
    if match and any(match.groups()):
        hours, minutes, seconds = (float(g or 0) for g in match.groups())
        return hours * 3600 + minutes * 60 + seconds
    return None


def _timeout_of(element):
    """The timeout an <op> or <op_defaults> element sets (attribute, or an
    nvpair of its meta_attributes), as text, or None."""
    if element.get("timeout"):
        return element.get("timeout")
    for nvpair in element.iter("nvpair"):
        if nvpair.get("name") == "timeout":
            return nvpair.get("value")
    return None


def stop_timeout(configuration_xml, resource, default):
    """(seconds, where) of the stop timeout the CIB's configuration gives the
    primitive ``resource`` (a clone instance's name "web-ip:0" names its
    primitive "web-ip"): its stop op's, else op_defaults', else Pacemaker's
    ``default``; None when the primitive is not configured or the value is
    unreadable."""
    from xml.etree import ElementTree  # validate-all only

    try:
        root = ElementTree.fromstring(configuration_xml)
    except ElementTree.ParseError:
        return None
    primitive_id = resource.split(":")[0]
    primitives = [e for e in root.iter("primitive") if e.get("id") == primitive_id]
    if len(primitives) != 1:
        return None
    stops = [op for op in primitives[0].iter("op") if op.get("name") == "stop"]
    for element, where in [(op, "its op stop timeout=%s") for op in stops] + \
            [(defaults, "op_defaults timeout=%s") for defaults in root.iter("op_defaults")]:
        text = _timeout_of(element)
        if text is not None:
            seconds = parse_duration(text)
            return None if seconds is None else (seconds, where % text)
    return default, "Pacemaker's default: the stop op sets none"


def stop_timeout_in_cib(resource, default, run=subprocess.run):
    """:func:`stop_timeout` of the running cluster's CIB (``cibadmin --query
    --scope configuration``), or None when there is none to ask."""
    try:
        result = run([CIBADMIN, "--query", "--scope", "configuration"], capture_output=True,
                     text=True, timeout=10, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if result.returncode != 0:
        return None
    return stop_timeout(result.stdout, resource, default)
