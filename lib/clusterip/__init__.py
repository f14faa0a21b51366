"""clusterip: one virtual IP address (IPv4 or IPv6) served active-active by
the nodes of a Pacemaker cluster, load-balanced by hash buckets, with
automatic failover.

The OCF executable (``ocf/clusterip``) is deliberately thin: it hands the
action name and the environment to :func:`clusterip.agent.main`.  The path
from there to the kernel is docs/ARCHITECTURE.rst.
"""

__version__ = "0.2.0"
# The OCF provider: the agent is ocf:<PROVIDER>:clusterip, installed as
# <OCF_ROOT>/resource.d/<PROVIDER>/clusterip.  Defined here only: the Makefile
# reads this line (keep its shape), the status command and the tests import it.
PROVIDER = "custom"
