"""OCF_RESKEY_* and the clone meta-attributes, parsed once into a frozen object.

Everything the environment says is checked here, before any value can reach
the kernel, a path or a log line: a malformed value raises
:class:`~clusterip.errors.NotConfigured` (exit 6, the configuration is wrong
everywhere).  Defaults that depend on the node (the NIC and netmask, found
from the routing table) are resolved later, by :mod:`clusterip.address`.
"""

from clusterip import inet
from clusterip.errors import NotConfigured
from clusterip.record import record

HASHMODES = ("sourceip", "sourceip-sourceport", "sourceip-sourceport-destport")
DEFAULT_HASHMODE = "sourceip-sourceport"  # as IPaddr2's clone mode
BACKENDS = ("auto", "nft", "clusterip")
# The agent's own ceiling; each backend may have a lower one (CLUSTERIP: 16).
MAX_BUCKETS = 256

# Syntax is checked with character sets, not regular expressions: every
# action parses its parameters, and "import re" (which brings enum along)
# costs ~2.5 ms, a fifth of the monitor's whole budget (issue #6).
_DIGITS = frozenset("0123456789")
_HEX = frozenset("0123456789abcdefABCDEF")
# Linux interface names: at most IFNAMSIZ-1 bytes.  We accept a safe subset
# (no '/', ':', whitespace or shell metacharacters) because the name ends up
# in nft rules, /proc paths and log lines.
_NIC_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_.-")


def _made_of(text, chars):
    return all(c in chars for c in text)


def _is_uint(text):
    """0 or up to ten decimal digits without a leading zero."""
    return 1 <= len(text) <= 10 and _made_of(text, _DIGITS) and (text == "0" or text[0] != "0")


def _is_hex(text):
    """0x followed by one to eight hex digits."""
    return 3 <= len(text) <= 10 and text[:2] in ("0x", "0X") and _made_of(text[2:], _HEX)


def is_mac(text):
    """Six hex pairs separated by ':' or '-'."""
    return (len(text) == 17 and all(text[i] in ":-" for i in range(2, 17, 3))
            and all(_made_of(text[i:i + 2], _HEX) for i in range(0, 17, 3)))


# A record (a namedtuple without importing collections: see clusterip.record),
# not a dataclass: the monitor runs every few seconds per clone instance and
# ``import dataclasses`` alone costs ~10 ms (it imports inspect).
_PARAMS_FIELDS = (
    "ip",  # canonical text, e.g. "192.0.2.10" or "2001:db8::10"
    "cidr_netmask",  # int, or None: derive from the route that covers ip, else 32 / 128
    "nic",  # str, or None: the interface whose route covers ip
    "clustermac",  # normalised "03:c1:..."; multicast, or locally administered unicast
    "hashmode",
    "hash_init",  # None when not cloned (nothing hashes)
    "backend",  # "auto", "nft" or "clusterip" (resolved later by kernel capability)
    "bucket",  # the bucket this instance owns: clone instance i -> bucket i+1
    "total_buckets",  # clone-max; 1 when not cloned
    "cloned",  # False: a plain failover IP held whole by one node
    "graceful_handover",  # bool: a moved bucket's TCP connections stay on the old owner
    "firewall_guard",  # bool: a guard puts the VIP's nft tables back after a reload (guard)
    "owner_lease",  # seconds an owned bucket lives without a monitor renewing it; 0: forever
    "drain_timeout",  # float s the stop of a node's last instance serves on (drain); 0: none
    # As IPaddr2's parameters of the same names:
    "iflabel",  # str appended to "<nic>:" as the IPv4 address label, or None (":cip")
    "broadcast",  # "+", "-" or an IPv4 address in text (IPv4 only)
    "preferred_lft",  # IPv6: seconds, None = forever; always 0 for a clone
    "noprefixroute",  # bool, plain mode only (a clone manages its prefix route itself)
    "arp_count",  # announcements sent at start (0: none)
    "arp_interval",  # milliseconds between two of them
)


class Params(record("Params", _PARAMS_FIELDS)):
    """The validated, immutable parameters of one agent call."""

    __slots__ = ()

    @property
    def vip(self):
        return self.ip

    @property
    def packed(self):
        return inet.parse(self.ip)

    @property
    def ipv6(self):
        return ":" in self.ip


def default_clustermac(packed):
    """A multicast MAC derived from the VIP, the same on every node.

    IPv4: first octet 0x03, multicast and locally administered, so it cannot
    clash with a vendor's address nor with the 01:00:5e range that
    IGMP-snooping switches filter.  IPv6: 33:33, the range IPv6 multicast maps
    to (RFC 2464), as neighbours expect of an IPv6 multicast link address;
    switches flood it unless MLD snooping prunes it (see the README).  The
    last four octets are the last four bytes of the VIP, so an administrator
    recognises it in ``ip maddr`` or a packet capture.
    """
    return ("33:33:" if inet.is_ipv6(packed) else "03:c1:") + ":".join(
        "%02x" % b for b in packed[-4:])


def default_hash_init(packed):
    """A hash seed derived from the VIP, identical on every node."""
    import zlib  # here: only cloned addresses hash

    return zlib.crc32(b"clusterip:" + packed)


def valid_nic_name(name):
    """Whether ``name`` is an interface name the agent can pass on safely (see _NIC_CHARS)."""
    return 1 <= len(name) <= 15 and _made_of(name, _NIC_CHARS) and name not in (".", "..")


def _value(env, name):
    """The parameter's value, or None when unset or empty (Pacemaker passes empties)."""
    value = env.get("OCF_RESKEY_" + name)
    if value is None:
        return None
    value = value.strip()
    return value or None


def _bounded_int(text, name, low, high):
    if text is None or not _is_uint(text):
        raise NotConfigured("%s=%r is not a whole number" % (name, text))
    number = int(text)
    if not low <= number <= high:
        raise NotConfigured("%s=%d is out of range %d..%d" % (name, number, low, high))
    return number


def parse_ip(text):
    """The VIP as (canonical text, packed bytes)."""
    if text is None:
        raise NotConfigured("parameter ip is required")
    packed = inet.parse(text)
    if packed is None:
        raise NotConfigured("ip=%r is not an IPv4 or IPv6 address" % text)
    reason = inet.unusable_reason(packed)
    if reason:
        raise NotConfigured("ip=%s cannot be a cluster address: it is %s" % (text, reason))
    return inet.text(packed), packed


def parse_mac(text):
    if not is_mac(text):
        raise NotConfigured("clustermac=%r is not a MAC address like 03:c1:0a:00:00:64" % text)
    mac = text.replace("-", ":").lower()
    octets = bytes(int(part, 16) for part in mac.split(":"))
    if not octets[0] & 3:
        # A unicast MAC of the NICs' own kind: some NIC may have it.  A shared
        # unicast cluster MAC must be locally administered (issue #16).
        raise NotConfigured("clustermac=%s is a universally administered unicast MAC (a "
                            "NIC's own kind): give a multicast MAC (odd first octet) or a "
                            "locally administered unicast one (first octet 02, 06, 0a, "
                            "0e, ..., e.g. 02:c1:0a:00:00:64)" % mac)
    if octets == b"\xff" * 6:
        raise NotConfigured("clustermac=%s is the broadcast address" % mac)
    if octets[:5] == b"\x01\x80\xc2\x00\x00" and octets[5] < 0x10:
        raise NotConfigured("clustermac=%s is an IEEE 802.1 reserved address that "
                            "bridges never forward" % mac)
    return mac


def parse_hash_init(text):
    if text is None:
        return None
    if _is_hex(text):
        return int(text, 16)
    return _bounded_int(text, "hash_init", 0, 0xFFFFFFFF)


def _parse_bool(text, name, default=False):
    if text is None:
        return default
    lowered = text.lower()
    if lowered in ("true", "yes", "on", "1", "y"):
        return True
    if lowered in ("false", "no", "off", "0", "n"):
        return False
    raise NotConfigured("%s=%r is not a boolean" % (name, text))


def parse_clone(env):
    """(cloned, bucket, total_buckets) from Pacemaker's clone meta-attributes."""
    instance = _value(env, "CRM_meta_clone")
    if instance is None:
        return False, 1, 1
    total = _bounded_int(_value(env, "CRM_meta_clone_max"), "clone-max", 1, MAX_BUCKETS)
    index = _bounded_int(instance, "clone instance", 0, MAX_BUCKETS - 1)
    if index >= total:
        raise NotConfigured("clone instance %d does not fit clone-max=%d" % (index, total))
    unique = _parse_bool(_value(env, "CRM_meta_globally_unique"), "globally-unique")
    if total > 1 and not unique:
        raise NotConfigured("clone-max=%d needs globally-unique=true: each clone instance "
                            "owns one bucket of the address" % total)
    return True, index + 1, total


# owner_lease: below this a lease is no protection worth its risk (a monitor a
# few seconds late drops the bucket); the real floor is the monitor's own
# interval and timeout (lease_problem), known only to the recurring monitor.
MIN_OWNER_LEASE = 10
MAX_OWNER_LEASE = 86400
# How many monitor intervals, plus one monitor timeout, a lease must outlast:
# one monitor may be late or fail without the bucket going dark.
LEASE_INTERVALS = 2


def parse_owner_lease(text, cloned):
    if text is None or text == "0":
        return 0
    if not _is_uint(text):
        raise NotConfigured("owner_lease=%r is not a whole number of seconds" % text)
    seconds = int(text)
    if not MIN_OWNER_LEASE <= seconds <= MAX_OWNER_LEASE:
        raise NotConfigured("owner_lease=%d is out of range: 0 (off) or %d..%d seconds"
                            % (seconds, MIN_OWNER_LEASE, MAX_OWNER_LEASE))
    if not cloned:
        raise NotConfigured("owner_lease=%d applies to a clone only: a plain address has no "
                            "buckets to lease" % seconds)
    return seconds


MAX_DRAIN_TIMEOUT = 3600


def _is_decimal(text):
    """Digits, optionally a point and up to three more (milliseconds): 10, 2.5."""
    whole, point, fraction = text.partition(".")
    return _is_uint(whole) and (not point or 1 <= len(fraction) <= 3
                                and _made_of(fraction, _DIGITS))


def parse_drain_timeout(text, cloned, graceful_handover):
    """Seconds (a float) the stop of a node's last instance of the VIP keeps
    serving its established connections; 0: no draining."""
    if text is None:
        return 0.0
    if not _is_decimal(text):
        raise NotConfigured("drain_timeout=%r is not a number of seconds like 10 or 2.5"
                            % text)
    seconds = float(text)
    if seconds > MAX_DRAIN_TIMEOUT:
        raise NotConfigured("drain_timeout=%s is out of range 0..%d seconds"
                            % (text, MAX_DRAIN_TIMEOUT))
    if seconds and not cloned:
        raise NotConfigured("drain_timeout=%s applies to a clone only: a plain address "
                            "has no buckets to release before it goes" % text)
    if seconds and not graceful_handover:
        raise NotConfigured("drain_timeout=%s needs graceful_handover=true: without it the "
                            "node drops the established connections of its released "
                            "buckets at once, so there is nothing to drain" % text)
    return seconds


def monitor_interval(env):
    """The interval, in ms, of the monitor that runs with ``env``
    (OCF_RESKEY_CRM_meta_interval); 0 for a probe, a call by hand, or a value
    that is no count (Pacemaker passes digits)."""
    interval = _value(env, "CRM_meta_interval")
    return int(interval) if interval is not None and _is_uint(interval) else 0


def lease_problem(params, env):
    """Why the lease is too short for the monitor that runs with ``env``
    (OCF_RESKEY_CRM_meta_interval and _timeout, ms), or None: a lease that a
    late monitor lets expire drops the bucket's traffic until Pacemaker
    recovers it."""
    interval = monitor_interval(env)
    if not params.owner_lease or not interval:
        return None
    timeout = _value(env, "CRM_meta_timeout")
    timeout = int(timeout) if timeout is not None and _is_uint(timeout) else 20000
    needed = (LEASE_INTERVALS * interval + timeout + 999) // 1000
    if params.owner_lease >= needed:
        return None
    return ("owner_lease=%d is shorter than %d monitor intervals of %g s plus its timeout "
            "of %g s: a late monitor would let the bucket expire and drop its traffic; "
            "set owner_lease to at least %d (or monitor more often)"
            % (params.owner_lease, LEASE_INTERVALS, interval / 1000.0,
               timeout / 1000.0, needed))


DEFAULT_ARP_COUNT = 5  # as IPaddr2
DEFAULT_ARP_INTERVAL = 200  # ms, as IPaddr2
FOREVER = 0xFFFFFFFF  # an address lifetime without end (INFINITY_LIFE_TIME)


def parse_iflabel(text, nic):
    """The label's suffix: the kernel takes up to IFNAMSIZ-1 characters in all."""
    if text is None:
        return None
    if not _made_of(text, _NIC_CHARS):
        raise NotConfigured("iflabel=%r may hold only letters, digits, '_', '.' and '-'"
                            % text)
    if nic is not None and len(nic) + 1 + len(text) > 15:
        raise NotConfigured("iflabel=%s makes the label %s:%s, longer than the kernel's 15 "
                            "characters" % (text, nic, text))
    if len(text) > 13:  # even a one-character NIC name leaves only 13
        raise NotConfigured("iflabel=%s is longer than 13 characters" % text)
    return text


def parse_broadcast(text):
    if text is None or text in ("+", "-"):
        return text or "+"
    broadcast = inet.parse(text)
    if broadcast is None or inet.is_ipv6(broadcast):
        raise NotConfigured("broadcast=%r is not +, - or an IPv4 address" % text)
    return inet.text(broadcast)


def parse_preferred_lft(text, ipv6, cloned):
    """Seconds, or None for forever (as ip-address(8) and IPaddr2 take it)."""
    if text is None or text == "forever":
        seconds = None
    else:
        seconds = _bounded_int(text, "preferred_lft", 0, FOREVER - 1)
    if cloned:
        if seconds != 0 and text is not None:
            raise NotConfigured("preferred_lft=%s cannot be set on a clone: the agent adds a "
                                "cloned address with preferred_lft 0, so that the node "
                                "never uses it as the source of its own connections" % text)
        return 0
    if seconds is not None and not ipv6:
        raise NotConfigured("preferred_lft=%s applies to IPv6 only: IPv4 chooses source "
                            "addresses by route (see noprefixroute)" % text)
    return seconds


def parse(env):
    """Parse and check every parameter; raises NotConfigured with a reason."""
    ip, packed = parse_ip(_value(env, "ip"))

    cidr_text = _value(env, "cidr_netmask")
    bits = len(packed) * 8
    cidr = None if cidr_text is None else _bounded_int(cidr_text, "cidr_netmask", 1, bits)
    if cidr is not None and inet.is_ipv6(packed):
        if cidr < 127 and packed == inet.network_address(packed, cidr):
            raise NotConfigured("ip=%s is the subnet-router anycast address of /%d"
                                % (ip, cidr))
    elif cidr is not None and cidr < 31 and packed in (
            inet.network_address(packed, cidr), inet.broadcast_address(packed, cidr)):
        raise NotConfigured("ip=%s is the network or broadcast address of /%d" % (ip, cidr))

    nic = _value(env, "nic")
    if nic is not None and not valid_nic_name(nic):
        raise NotConfigured("nic=%r is not a valid interface name" % nic)

    mac_text = _value(env, "clustermac")
    mac = default_clustermac(packed) if mac_text is None else parse_mac(mac_text)

    hashmode = _value(env, "hashmode") or DEFAULT_HASHMODE
    if hashmode not in HASHMODES:
        raise NotConfigured("hashmode=%r is not one of %s" % (hashmode, ", ".join(HASHMODES)))

    seed = parse_hash_init(_value(env, "hash_init"))
    backend = _value(env, "backend") or "auto"
    if backend not in BACKENDS:
        raise NotConfigured("backend=%r is not one of %s" % (backend, ", ".join(BACKENDS)))

    cloned, bucket, total = parse_clone(env)
    if seed is None and cloned:
        seed = default_hash_init(packed)
    ipv6 = inet.is_ipv6(packed)

    iflabel = parse_iflabel(_value(env, "iflabel"), nic)
    broadcast = parse_broadcast(_value(env, "broadcast"))
    for name, value, default in (("iflabel", iflabel, None), ("broadcast", broadcast, "+")):
        if ipv6 and value != default:
            raise NotConfigured("%s=%s applies to IPv4 only: IPv6 addresses have none"
                                % (name, value))
    noprefixroute = _parse_bool(_value(env, "noprefixroute"), "noprefixroute")
    if cloned and noprefixroute:
        raise NotConfigured("noprefixroute=true cannot be set on a clone: the agent chooses "
                            "the cloned address's prefix route itself, so that the node "
                            "never uses it as the source of its own connections")
    graceful_handover = _parse_bool(_value(env, "graceful_handover"), "graceful_handover")
    return Params(
        ip=ip, cidr_netmask=cidr, nic=nic, clustermac=mac, hashmode=hashmode,
        hash_init=seed,
        backend=backend, bucket=bucket, total_buckets=total, cloned=cloned,
        graceful_handover=graceful_handover,
        firewall_guard=_parse_bool(_value(env, "firewall_guard"), "firewall_guard", True),
        owner_lease=parse_owner_lease(_value(env, "owner_lease"), cloned),
        drain_timeout=parse_drain_timeout(_value(env, "drain_timeout"), cloned,
                                          graceful_handover),
        iflabel=iflabel, broadcast=broadcast,
        preferred_lft=parse_preferred_lft(_value(env, "preferred_lft"), ipv6, cloned),
        noprefixroute=noprefixroute,
        arp_count=_bounded_default(env, "arp_count", DEFAULT_ARP_COUNT, 0, 100),
        arp_interval=_bounded_default(env, "arp_interval", DEFAULT_ARP_INTERVAL, 1, 60000),
    )


def _bounded_default(env, name, default, low, high):
    text = _value(env, name)
    return default if text is None else _bounded_int(text, name, low, high)
