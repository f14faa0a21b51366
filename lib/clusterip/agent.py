"""The OCF edge: one action in, one exit code out.

``ocf/clusterip`` hands the action and the environment to :func:`main`;
:func:`run` parses the parameters and calls the instance's action
(:mod:`clusterip.instance`), which changes the node through
:mod:`clusterip.address` and a backend (:mod:`clusterip.backends`), which
talk to the kernel.  Errors are typed (:mod:`clusterip.errors`, each with
its OCF exit code) and mapped here, once: an exit reason, never a traceback.
"""

import posix  # not os: see environment()
import sys

from clusterip import ocf
from clusterip.errors import AgentError, NotConfigured, NotPermitted, Unimplemented

USAGE = "usage: clusterip {start|stop|monitor|meta-data|validate-all|usage}"
STATE_ACTIONS = ("start", "stop", "monitor")


def run(action, env, logger):
    """Run one action; returns the exit code or raises AgentError."""
    if action == "meta-data":
        from clusterip import metadata

        sys.stdout.write(metadata.document())
        return ocf.SUCCESS
    if action in ("usage", "help"):
        print(USAGE)
        return ocf.SUCCESS
    if action not in STATE_ACTIONS + ("validate-all",):
        print(USAGE, file=sys.stderr)
        raise Unimplemented("action %r is not implemented" % action)
    from clusterip import instance, params

    try:
        parsed = params.parse(env)
    except NotConfigured as error:
        if action != "stop":
            raise
        # Nothing can have been started with a configuration that never
        # parsed, and a failed stop makes Pacemaker fence the node.
        logger.warning("stop with an invalid configuration: %s; nothing to do" % error)
        return ocf.SUCCESS
    this = instance.for_params(parsed, env, logger)
    if action == "validate-all":
        return this.validate()
    if posix.geteuid() != 0:
        raise NotPermitted("%s needs root (it changes addresses and packet filters)" % action)
    from clusterip import kernel

    with kernel.deferred_release():  # no grace period of the kernel's in the action's time
        return getattr(this, action)()


def environment():
    """What os.environ holds, read without importing os: os pulls in
    _collections_abc, posixpath and stat, ~1.5 ms of every action (a
    twelfth of the monitor), for a mapping and path joins the library does
    without.  Decoded as os decodes it (the file system encoding with
    surrogateescape: undecodable bytes survive)."""
    encoding = sys.getfilesystemencoding()
    return {key.decode(encoding, "surrogateescape"): value.decode(encoding, "surrogateescape")
            for key, value in posix.environ.items()}


def main(argv=None, env=None):
    """The OCF edge: one action, one exit code, one exit reason on failure."""
    argv = sys.argv if argv is None else argv
    env = environment() if env is None else env
    action = argv[1] if len(argv) > 1 else ""
    logger = ocf.Logger(env)
    try:
        return run(action, env, logger)
    except AgentError as error:
        ocf.exit_reason(env, error, logger)
        return error.exit_code
    except Exception as error:  # a bug: never hand Pacemaker a bare traceback
        import traceback

        logger.debug(traceback.format_exc())
        ocf.exit_reason(env, "internal error in %s: %s: %s"
                        % (action, type(error).__name__, error), logger)
        return ocf.ERR_GENERIC
