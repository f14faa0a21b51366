"""In-memory stand-ins for the kernel: one node's addresses and one backend.

Each behaviour faked here is exercised for real in the netns tier
(tests/netns) and, for the CLUSTERIP backend, in the legacy tier.
"""

import os

from clusterip import announcements
from clusterip.address import Placement
from clusterip.backends import Backend, VipState
from clusterip.errors import InvalidArgument


class FakeNode:
    """Replaces clusterip.address: a node with NICs, addresses and multicast state."""

    def __init__(self, nics=("eth0",)):
        self.nics = set(nics)
        self.addresses = {}  # vip -> Placement
        self.flagless = set()  # vips whose address lacks the flags it needs
        self.announced = []
        self.spawned = []  # announcements.spawn calls: (path, placement, vip, mac, count, interval)

    def resolve(self, params):
        nic = params.nic or "eth0"
        if nic not in self.nics:
            raise InvalidArgument("nic %s does not exist on this node" % nic)
        return Placement(nic=nic, prefixlen=params.cidr_netmask or 24)

    def address_present(self, vip, placement):
        return self.addresses.get(vip) == placement and placement.nic in self.nics

    def address_problems(self, params, placement):
        where = "address %s/%d on %s" % (params.vip, placement.prefixlen, placement.nic)
        if not self.address_present(params.vip, placement):
            return [where]
        return [where + " with noprefixroute"] if self.lacks_flags(params, placement) else []

    def lacks_flags(self, params, placement):
        """As an older agent added it (see flagless)."""
        return self.address_present(params.vip, placement) and params.vip in self.flagless

    def check_cluster_mac(self, params, placement):
        pass  # no NIC here has a MAC of the cluster MAC's kind

    def add_address(self, params, placement):
        self.addresses[params.vip] = placement
        self.flagless.discard(params.vip)

    def remove_address(self, vip):
        self.addresses.pop(vip, None)

    def announce(self, nic, vip, mac=None):
        self.announced.append((nic, vip, mac))

    def spawn(self, path, placement, vip, mac, count, interval, first_at=None):
        """Replaces announcements.spawn: no process.  Like the real one it
        returns once the handshake file names the sender, here this process, so
        that a test can run the sender's loop (announcements.send_repeats) with
        this node itself."""
        self.spawned.append((path, placement, vip, mac, count, interval))
        announcements.publish(path, os.getpid())


class FakeBackend(Backend):
    """One VIP's filter: owned buckets plus the named shared pieces."""

    name = "fake"
    max_buckets = 16
    owner_lease = True
    PIECES = ("table", "ARP rewrite", "multicast membership")
    OUTDATED = "table in an older layout"

    def __init__(self, **context):
        super().__init__(**context)
        self.tables = {}  # vip -> {"owned": set, "pieces": set}
        self.calls = []

    def kernel_supports(self, params=None):
        return True

    def serves(self, params):
        return params.vip in self.tables

    def check_available(self):
        pass

    def state(self, params, placement):
        table = self.tables.get(params.vip)
        if table is None:
            return None
        if table.get("outdated"):  # an older version's layout (nft's layout 1)
            return VipState(owned=frozenset(table["owned"]), missing=(self.OUTDATED,),
                            outdated=True)
        missing = tuple(p for p in self.PIECES if p not in table["pieces"])
        return VipState(owned=frozenset(table["owned"]), missing=missing)

    def create(self, params, placement, owned):
        self.calls.append(("create", sorted(owned)))
        self.tables[params.vip] = {"owned": set(owned), "pieces": set(self.PIECES)}

    def add_bucket(self, params, bucket):
        self.calls.append(("add", bucket))
        self.tables[params.vip]["owned"].add(bucket)

    def remove_bucket(self, params, bucket):
        self.calls.append(("remove", bucket))
        self.tables[params.vip]["owned"].remove(bucket)

    def renew_bucket(self, params, bucket):
        # Stands for nfnl.renew_element, tested against the kernel in
        # tests/netns/test_owner_lease.py.
        self.calls.append(("renew", bucket))
        return bucket in self.tables.get(params.vip, {}).get("owned", ())

    def destroy(self, params, placement):
        self.calls.append(("destroy",))
        self.forget()  # as the real backends do
        self.tables.pop(params.vip, None)
