"""OCF plumbing: exit codes, exit reasons and resource-agents-style logging.

Logging follows resource-agents' ``ha_log``: syslog with ``HA_LOGFACILITY``,
a plain file with ``HA_LOGFILE``, debug lines only when ``HA_debug`` is set
(and then also to ``HA_DEBUGLOG``); with neither syslog nor a log file the
lines go to stderr, which Pacemaker captures.  Every line is prefixed with
the resource instance (``OCF_RESOURCE_INSTANCE``) so the log says which clone
instance spoke.  Nothing is configured at import time: the edge builds one
:class:`Logger` from the environment it was given.
"""

import posix  # not os: see clusterip.agent.environment
import sys
import time

SUCCESS = 0
ERR_GENERIC = 1
ERR_ARGS = 2
ERR_UNIMPLEMENTED = 3
ERR_PERM = 4
ERR_INSTALLED = 5
ERR_CONFIGURED = 6
NOT_RUNNING = 7

_SYSLOG_FACILITIES = (
    "auth", "authpriv", "cron", "daemon", "kern", "lpr", "mail", "news",
    "syslog", "user", "uucp", "local0", "local1", "local2", "local3",
    "local4", "local5", "local6", "local7",
)


class Logger:
    """Writes resource-agents-style log lines to syslog, files or stderr."""

    def __init__(self, env):
        self.tag = _printable("clusterip(%s)" % env.get("OCF_RESOURCE_INSTANCE", "clusterip"))
        self.debug_enabled = env.get("HA_debug", "0") not in ("", "0", "false", "no")
        self.logfile = env.get("HA_LOGFILE") or None
        self.debuglog = env.get("HA_DEBUGLOG") or None
        facility = env.get("HA_LOGFACILITY", "").lower()
        self.syslog = None
        if facility in _SYSLOG_FACILITIES:
            import syslog  # only when asked for: the agent runs often and short

            syslog.openlog(self.tag, syslog.LOG_PID, getattr(syslog, "LOG_" + facility.upper()))
            self.syslog = syslog

    def log(self, level, message):
        if level == "debug" and not self.debug_enabled:
            return
        message = _printable(message)
        line = "%s[%d]: %s: %s" % (self.tag, posix.getpid(), level.upper(), message)
        wrote = False
        if self.syslog is not None:
            priority = {"debug": self.syslog.LOG_DEBUG, "info": self.syslog.LOG_INFO,
                        "warning": self.syslog.LOG_WARNING}.get(level, self.syslog.LOG_ERR)
            self.syslog.syslog(priority, "%s: %s" % (level.upper(), message))
            wrote = True
        target = self.debuglog if level == "debug" and self.debuglog else self.logfile
        if target:
            stamp = time.strftime("%b %d %H:%M:%S")
            try:
                with open(target, "a", encoding="utf-8") as f:
                    f.write("%s %s\n" % (stamp, line))
                wrote = True
            except OSError:
                pass  # a broken log file must not fail the action
        if not wrote:
            print(line, file=sys.stderr)

    def debug(self, message):
        self.log("debug", message)

    def info(self, message):
        self.log("info", message)

    def warning(self, message):
        self.log("warning", message)

    def error(self, message):
        self.log("error", message)


def _printable(text):
    """Text any log sink accepts: the environment may carry undecodable bytes
    (surrogates after Python decodes them), which a UTF-8 file or syslog refuses."""
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def exit_reason(env, reason, logger=None):
    """Print the one ``ocf-exit-reason:`` line Pacemaker shows to the administrator."""
    reason = " ".join(str(reason).split())  # one line, whatever the exception said
    prefix = env.get("OCF_EXIT_REASON_PREFIX", "ocf-exit-reason:")
    print(prefix + reason, file=sys.stderr, flush=True)
    if logger is not None:
        logger.error(reason)
