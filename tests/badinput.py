"""Clearly invalid, often hostile, values for every parameter and clone
meta-attribute of the agent, as hypothesis strategies.

Shared by the unit tier (tests/unit/test_bad_input.py: agent.main against
fakes) and the root tiers (tests/netns/test_reliability.py: the real agent in
a namespace).  Every generated case changes exactly ONE field of a valid
cloned configuration (:data:`VALID_PARAMS` and :data:`VALID_META`, or with
``ipv6`` the same with the IPv6 VIP of :data:`VALID_PARAMS6`), and the value
is invalid whatever the
node looks like - never merely "absent here" (a well-formed NIC name that
does not exist is a different, tested case) - so the agent must answer 6
(or 2) with one exit reason and change nothing.

Independent of the project: this module imports nothing from it and knows
the rules only as the meta-data documents them.
"""

import ipaddress
import re

from hypothesis import strategies as st

VIP = "198.18.0.100"
PREFIXLEN = 16

# A valid cloned configuration: instance 0 of a 3-instance unique clone.
VALID_PARAMS = {"ip": VIP, "cidr_netmask": str(PREFIXLEN), "nic": "eth0",
                "hashmode": "sourceip", "clustermac": "03:c1:c6:12:00:64",
                "hash_init": "12345"}
VALID_META = {"clone": "0", "clone_max": "3", "globally_unique": "true"}
# The same with an IPv6 VIP (nft backend only): hostile values beside a valid IPv6 address.
VIP6 = "2001:db8::100"
PREFIXLEN6 = 64
VALID_PARAMS6 = dict(VALID_PARAMS, ip=VIP6, cidr_netmask=str(PREFIXLEN6),
                     clustermac="33:33:00:00:01:00")

HASHMODES = ("sourceip", "sourceip-sourceport", "sourceip-sourceport-destport")
BACKENDS = ("auto", "nft", "clusterip")
NIC_CHARS = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.-")

# Shell metacharacters and path tricks, alone and inside otherwise plausible text.
HOSTILE = ("../", "../../etc/passwd", ";", "|", "&", "&&", "$(", ")", "`", "$(reboot)",
           "`id`", "; rm -rf /", "|cat /etc/shadow", "${IFS}", "'", '"', "\\", "*", "?",
           "\n", "\nocf-exit-reason:forged", "%s%n", "{", "}", "#", ">/etc/motd", "<",
           "\x1b[31m", "\t")


def _is_blank_after_strip(text):
    return not text.strip()


def hostile():
    """Text containing at least one shell metacharacter / path trick, not blank."""
    pieces = env_text(max_size=8)
    return st.one_of(
        st.sampled_from(HOSTILE),
        st.builds(lambda a, h, b: a + h + b, pieces, st.sampled_from(HOSTILE), pieces),
    ).filter(lambda text: not _is_blank_after_strip(text) or "\n" in text)


def env_text(min_size=0, max_size=30):
    """Any text an environment variable can carry: no NUL (execve cannot pass it),
    no lone surrogates (not encodable)."""
    return st.text(alphabet=st.characters(blacklist_characters="\x00",
                                          blacklist_categories=("Cs",)),
                   min_size=min_size, max_size=max_size)


def unicode_text():
    """NUL-free text with at least one non-ASCII character (letters, digits, marks...)."""
    return env_text(min_size=1, max_size=20).filter(lambda t: any(ord(c) > 127 for c in t))


def _unicode_digits(text):
    """The same number written with fullwidth digits: looks valid, is not ASCII."""
    return "".join(chr(0xFF10 + int(c)) if c.isdigit() else c for c in text)


def huge_numbers():
    return st.integers(min_value=2 ** 32, max_value=10 ** 40).map(str)


def negative_numbers():
    return st.integers(max_value=-1, min_value=-10 ** 20).map(str)


def _not(valid):
    """Keep only texts that are invalid after the agent strips them."""
    return lambda text: text.strip() not in valid


def ip_values():
    bad_v4 = st.one_of(
        st.ip_addresses(v=4, network="127.0.0.0/8"),
        st.ip_addresses(v=4, network="224.0.0.0/4"),  # multicast
        st.ip_addresses(v=4, network="240.0.0.0/4"),  # reserved, with the broadcast
        st.just(ipaddress.IPv4Address("0.0.0.0")),
        st.just(ipaddress.IPv4Address("255.255.255.255")),
    ).map(str)
    return st.one_of(
        st.ip_addresses(v=6).map(str),
        st.builds(lambda a, b: "%s%%%s" % (a, b), st.ip_addresses(v=6), hostile()),
        st.sampled_from(["web.example.com", "localhost", "node1", "vip.cluster.local"]),
        st.from_regex(r"\A[a-z][a-z0-9-]{0,20}(\.[a-z][a-z0-9-]{0,10}){0,3}\Z"),
        bad_v4,
        st.builds(lambda o: "%d.18.0.100" % o, st.integers(min_value=256, max_value=10 ** 6)),
        st.just(VIP + ".1"), st.just("198.18.0"), st.just("198.18.0.0100"),
        st.just(_unicode_digits(VIP)),
        st.builds(lambda h: VIP + h, hostile()), st.builds(lambda h: h + VIP, hostile()),
        hostile(), unicode_text(), huge_numbers(), negative_numbers(),
    ).filter(_not({VIP}))


def cidr_values():
    return st.one_of(
        st.sampled_from(["0", "33", "64", "255.255.0.0", "/16", "16.0", "1e1", "0x10",
                         "016", "+16", _unicode_digits("16"), "16 16"]),
        st.integers(min_value=33, max_value=10 ** 30).map(str),
        st.builds(lambda h: "16" + h, hostile()),
        hostile(), unicode_text(), negative_numbers(),
    ).filter(lambda t: not (t.strip().isascii() and t.strip().isdigit()
                            and t.strip()[:1] != "0" and 1 <= int(t.strip()) <= 32))


def bounded_values(low, high, typical):
    """Whole numbers out of low..high, or not whole numbers (arp_count, arp_interval)."""
    return st.one_of(
        st.sampled_from(["-1", "1.5", "1e2", "0x10", "+5", "five", "5 5", "5ms",
                         _unicode_digits(typical)]),
        st.integers(min_value=high + 1, max_value=10 ** 30).map(str),
        st.builds(lambda h: typical + h, hostile()),
        hostile(), unicode_text(), negative_numbers(), huge_numbers(),
    ).filter(lambda t: not _uint(t.strip(), high) or int(t.strip()) < low)


def nic_values():
    return st.one_of(
        st.sampled_from([".", "..", "eth0:1", "eth0 ", " eth 0", "eth0/1", "eth\u0660",
                         "a" * 16, "x" * 200]),
        st.builds(lambda h: "eth0" + h, hostile()),
        st.text(alphabet="abc0", min_size=16, max_size=40),
        hostile(), unicode_text(),
    ).filter(lambda t: t.strip() in (".", "..") or len(t.strip()) > 15
             or any(c not in NIC_CHARS for c in t.strip()))


def _mac(octets):
    return ":".join("%02x" % o for o in octets)


def mac_values():
    octet = st.integers(min_value=0, max_value=255)
    # Universally administered unicast: a NIC's kind (locally administered
    # unicast is a valid shared cluster MAC, issue #16).
    unicast = st.builds(lambda first, rest: _mac([first & 0xFC] + rest), octet,
                        st.lists(octet, min_size=5, max_size=5))
    reserved = st.integers(min_value=0, max_value=15).map(lambda b: _mac([1, 0x80, 0xC2, 0, 0, b]))
    return st.one_of(
        unicast, reserved, st.just("ff:ff:ff:ff:ff:ff"), st.just("FF-FF-FF-FF-FF-FF"),
        st.builds(lambda o: _mac([1] + o), st.lists(octet, min_size=4, max_size=4)),  # 5 octets
        st.builds(lambda o: _mac([3] + o), st.lists(octet, min_size=6, max_size=6)),  # 7 octets
        st.sampled_from(["03c1c6120064", "03:c1:c6:12:00:6g", "03:c1:c6:12:0:64",
                         "03:c1:c6:12:00:64:", "03.c1.c6.12.00.64", "03:c1-c6:12:00:64 x"]),
        st.builds(lambda h: "03:c1:c6:12:00:64" + h, hostile()),
        hostile(), unicode_text(),
    )


def hashmode_values():
    return st.one_of(
        st.sampled_from(["round-robin", "destport", "SOURCEIP", "sourceip,sourceport",
                         "sourceip-destport", "sourceip sourceport"]),
        st.builds(lambda h: "sourceip" + h, hostile()),
        hostile(), unicode_text(), env_text(min_size=1, max_size=30),
    ).filter(_not(set(HASHMODES) | {""}))


def hash_init_values():
    return st.one_of(
        st.sampled_from(["0x", "0x1ffffffff", "0xfffffffff", "1e9", "1.5", "0b101",
                         "4294967296", _unicode_digits("12345"), "12 345", "0o17"]),
        huge_numbers(), negative_numbers(),
        st.builds(lambda h: "12345" + h, hostile()),
        hostile(), unicode_text(),
    )


def backend_values():
    return st.one_of(
        st.sampled_from(["iptables", "NFT", "xt_cluster", "ebtables", "none",
                         "nft,clusterip", "../clusterip", "clusterip.backends.nft",
                         "__init__", "os"]),
        st.builds(lambda h: "nft" + h, hostile()),
        hostile(), unicode_text(), env_text(min_size=1, max_size=30),
    ).filter(_not(set(BACKENDS) | {""}))


def clone_values():
    """CRM_meta_clone with clone_max=3: not a number, negative, or not below 3."""
    return st.one_of(
        st.integers(min_value=3, max_value=10 ** 20).map(str),
        negative_numbers(), st.sampled_from(["0.0", "1e0", "0x0", "zero", _unicode_digits("1")]),
        st.builds(lambda h: "0" + h, hostile()),
        hostile(), unicode_text(),
    )


def clone_max_values(limit):
    """clone_max for instance 0: 0, above ``limit`` (the backend's), or not a number."""
    return st.one_of(
        st.just("0"), st.integers(min_value=limit + 1, max_value=10 ** 20).map(str),
        negative_numbers(), st.sampled_from(["3.0", "three", "0x3", _unicode_digits("3")]),
        st.builds(lambda h: "3" + h, hostile()),
        hostile(), unicode_text(),
    ).filter(lambda t: t.strip() != "")


def globally_unique_values():
    """Not a boolean, or false for a clone of 3 buckets."""
    return st.one_of(
        st.sampled_from(["false", "no", "0", "off", "n", "FALSE", "maybe", "tru", "yes please",
                         "2", "-1"]),
        st.builds(lambda h: "true" + h, hostile()),
        hostile(), unicode_text(),
    ).filter(lambda t: t.strip().lower() not in ("true", "yes", "on", "1", "y", ""))


BOOLEAN_WORDS = ("true", "yes", "on", "1", "y", "false", "no", "off", "0", "n")


def boolean_values():
    """Not a boolean (graceful_handover, firewall_guard: either value is valid on nft)."""
    return st.one_of(
        st.sampled_from(["maybe", "tru", "yes please", "2", "-1", "oui", "on off"]),
        st.builds(lambda h: "true" + h, hostile()),
        hostile(), unicode_text(),
    ).filter(lambda t: t.strip().lower() not in BOOLEAN_WORDS + ("",))


def iflabel_values():
    """Not a label the clone's eth0 can carry (IPv6: no label at all)."""
    return st.one_of(
        st.sampled_from(["eth0:1", "web server", "a" * 11, "x" * 40, "1/2", "web\u0660"]),
        st.builds(lambda h: "web" + h, hostile()),
        hostile(), unicode_text(),
    )


def broadcast_values():
    """Not +, - or an IPv4 address (IPv6: anything but +)."""
    return st.one_of(
        st.sampled_from(["++", "brd", "198.18.255", "198.18.255.255.0", "198.18.255.0255",
                         "2001:db8::ff", "*", "0x12ffffff"]),
        st.ip_addresses(v=6).map(str),
        st.builds(lambda h: "198.18.255.255" + h, hostile()),
        hostile(), unicode_text(),
    )


def preferred_lft_values():
    """On a clone anything but 0: forever, a lifetime, or not a number."""
    return st.one_of(
        st.sampled_from(["forever", "FOREVER", "00", "0s", "1", "3600", "-0", "0.0",
                         "4294967295", _unicode_digits("0")]),
        st.integers(min_value=1, max_value=10 ** 20).map(str), negative_numbers(),
        st.builds(lambda h: "0" + h, hostile()),
        hostile(), unicode_text(),
    )


def noprefixroute_values():
    """On a clone: true (the agent chooses the prefix route) or not a boolean."""
    return st.one_of(st.sampled_from(["true", "yes", "on", "1", "y", "TRUE"]),
                     boolean_values())


_UINT = re.compile(r"\A(0|[1-9][0-9]*)\Z")
_MAC = re.compile(r"\A[0-9A-Fa-f]{2}([:-][0-9A-Fa-f]{2}){5}\Z")


def _uint(text, high):
    return bool(_UINT.match(text)) and int(text) <= high


def _valid_ip(text, prefixlen):
    if "%" in text:  # a scope id: ipaddress takes it, the agent (inet_pton) does not
        return False
    try:
        ip = ipaddress.ip_address(text)
    except ValueError:
        return False
    if prefixlen > ip.max_prefixlen:
        return False
    network = ipaddress.ip_network("%s/%d" % (text, prefixlen), strict=False)
    if ip.version == 6:
        # Global unicast or unique local, not the subnet-router anycast address.
        return (ip in ipaddress.ip_network("2000::/3") or ip in ipaddress.ip_network("fc00::/7")) \
            and ip != network.network_address
    return not (ip.is_loopback or ip.is_multicast or ip.is_reserved or ip.is_unspecified) \
        and ip not in (network.network_address, network.broadcast_address)


def _valid_ipv4(text):
    try:
        ipaddress.IPv4Address(text)
    except ValueError:
        return False
    return True


def _valid_mac(text):
    if not _MAC.match(text):
        return False
    octets = [int(part, 16) for part in re.split("[:-]", text)]
    return octets[0] & 1 == 1 and octets != [255] * 6 \
        and not (octets[:5] == [1, 0x80, 0xC2, 0, 0] and octets[5] < 16)


# What the meta-data documents as valid for each field (after stripping blanks),
# given the rest of VALID_PARAMS (VALID_PARAMS6) / VALID_META: generated values
# must fail it.
def validity(limit, ipv6=False):
    prefixlen, longest = (PREFIXLEN6, 128) if ipv6 else (PREFIXLEN, 32)
    return {
        "ip": lambda t: _valid_ip(t, prefixlen),
        "cidr_netmask": lambda t: _uint(t, longest) and int(t) >= 1,
        "nic": lambda t: bool(re.match(r"\A[A-Za-z0-9_.-]{1,15}\Z", t)) and t not in (".", ".."),
        "clustermac": _valid_mac,
        "hashmode": lambda t: t in HASHMODES,
        "hash_init": lambda t: bool(re.match(r"\A0[xX][0-9A-Fa-f]{1,8}\Z", t))
        or _uint(t, 2 ** 32 - 1),
        "backend": lambda t: t in BACKENDS,
        "graceful_handover": lambda t: t.lower() in BOOLEAN_WORDS,
        "firewall_guard": lambda t: t.lower() in BOOLEAN_WORDS,
        # IPv4 only; on the clone's eth0 the label eth0:<iflabel> fits 15 characters.
        "iflabel": lambda t: not ipv6 and bool(re.match(r"\A[A-Za-z0-9_.-]{1,10}\Z", t)),
        "broadcast": lambda t: t == "+" or (not ipv6 and (t == "-" or _valid_ipv4(t))),
        "preferred_lft": lambda t: t == "0",  # a clone: nothing else
        "noprefixroute": lambda t: t.lower() in ("false", "no", "off", "0", "n"),
        "arp_count": lambda t: _uint(t, 100),
        "arp_interval": lambda t: _uint(t, 60000) and int(t) >= 1,
        "owner_lease": lambda t: t == "0" or (_uint(t, 86400) and int(t) >= 10),
        # Seconds with up to 3 decimals; anything but 0 needs graceful_handover=true,
        # which VALID_PARAMS does not set.
        "drain_timeout": lambda t: bool(re.match(r"\A[0-9]+(\.[0-9]{1,3})?\Z", t))
        and float(t) == 0,
        "clone": lambda t: _uint(t, 2),
        "clone_max": lambda t: _uint(t, limit) and int(t) >= 1,
        "globally_unique": lambda t: t.lower() in ("true", "yes", "on", "1", "y"),
    }


def cases(limit, ipv6=False):
    """(where, field, value): one invalid field; where is "param" or "meta".

    ``limit`` is the bucket limit of the backend the agent will use (clone_max
    above it is invalid); ``ipv6``: the case is for VALID_PARAMS6.  A blank
    value means "the default" to the agent, so none is generated; nor is any
    value that is valid after stripping blanks.
    """
    valid = validity(limit, ipv6)
    fields = [
        ("param", "ip", ip_values()), ("param", "cidr_netmask", cidr_values()),
        ("param", "nic", nic_values()), ("param", "clustermac", mac_values()),
        ("param", "hashmode", hashmode_values()), ("param", "hash_init", hash_init_values()),
        ("param", "backend", backend_values()),
        ("param", "graceful_handover", boolean_values()),
        ("param", "firewall_guard", boolean_values()),
        ("param", "iflabel", iflabel_values()), ("param", "broadcast", broadcast_values()),
        ("param", "preferred_lft", preferred_lft_values()),
        ("param", "noprefixroute", noprefixroute_values()),
        ("param", "arp_count", bounded_values(0, 100, "5")),
        ("param", "arp_interval", bounded_values(1, 60000, "200")),
        ("param", "owner_lease", bounded_values(10, 86400, "30")),
        ("param", "drain_timeout", st.one_of(bounded_values(0, 3600, "10"),
                                             st.sampled_from(["10", "2.5", "0.001", "3600"]))),
        ("meta", "clone", clone_values()), ("meta", "clone_max", clone_max_values(limit)),
        ("meta", "globally_unique", globally_unique_values()),
    ]
    return st.one_of(*[
        st.tuples(st.just(where), st.just(field), values.filter(
            lambda text, ok=valid[field]: text.strip() != "" and not ok(text.strip())))
        for where, field, values in fields])


def configuration(case, backend, ipv6=False):
    """(params, meta) of the valid configuration with the case's one field replaced."""
    where, field, value = case
    params = dict(VALID_PARAMS6 if ipv6 else VALID_PARAMS, backend=backend)
    meta = dict(VALID_META)
    (params if where == "param" else meta)[field] = value
    return params, meta


def reason_names(field):
    """Words the exit reason must contain for an invalid ``field``."""
    return {"clone": ("clone",), "clone_max": ("clone-max",),
            "globally_unique": ("globally-unique",), "ip": ("ip",)}.get(field, (field,))
