"""Typed exceptions, each carrying the OCF exit code it maps to.

The library raises these; only the edge (:mod:`clusterip.agent`) turns them
into an exit code and an ``ocf-exit-reason:`` line, so every failure path
ends in a clear code and a reason instead of a traceback.
"""

from clusterip import ocf


class AgentError(Exception):
    """Base class: ``str(error)`` is the exit reason shown to the administrator."""

    exit_code = ocf.ERR_GENERIC


class GenericError(AgentError):
    """Something failed while acting on the node (OCF_ERR_GENERIC, 1)."""


class InvalidArgument(AgentError):
    """A parameter is malformed for this node only (OCF_ERR_ARGS, 2)."""

    exit_code = ocf.ERR_ARGS


class Unimplemented(AgentError):
    exit_code = ocf.ERR_UNIMPLEMENTED


class NotPermitted(AgentError):
    exit_code = ocf.ERR_PERM


class NotInstalled(AgentError):
    """The kernel or user space lacks what the chosen backend needs (5)."""

    exit_code = ocf.ERR_INSTALLED


class NotConfigured(AgentError):
    """The configuration is invalid on every node (6): Pacemaker will not retry."""

    exit_code = ocf.ERR_CONFIGURED
