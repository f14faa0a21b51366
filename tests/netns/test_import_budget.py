"""The installed agent's remembered monitor (the common case: nothing changed
since the last full check) imports none of re, enum, socket, ipaddress, json,
collections, importlib, os, nor libnftables' binding: what the unit tier
checks module by module (tests/unit/test_import_budget.py), here for the
action Pacemaker runs every few seconds, under the agent's own interpreter
line."""

import scenarios
from netlab import Lab, agent_command

FORBIDDEN = {"re", "enum", "socket", "ipaddress", "json", "nftables", "collections", "importlib",
             "os"}
# Runs the agent script as its interpreter would, then reports what it imported.
# The script ends with posix._exit (no interpreter teardown), which would end
# this report too: here it raises SystemExit instead.
REPORT = """
import posix, sys
def _exit(code):
    raise SystemExit(code)
posix._exit = _exit
script, sys.argv = sys.argv[1], sys.argv[1:]
try:
    exec(compile(open(script).read(), script, "exec"), {"__name__": "__main__"})
except SystemExit as done:
    code = done.code
print("exit", code, "modules", " ".join(sorted(sys.modules)))
"""


def interpreter():
    """The agent's interpreter and flags: its first line, or the words before
    the script in a multi-word $CLUSTERIP_AGENT."""
    argv = agent_command()
    if len(argv) > 1:
        return argv[:-1], argv[-1]
    with open(argv[0], encoding="utf-8") as f:
        first = f.readline()
    assert first.startswith("#!"), "the agent %s is not a script" % argv[0]
    return first[2:].split(), argv[0]


def monitor_modules(lab, params, meta):
    env = lab.agent_env("n0", "vip:0", params, meta)
    command, script = interpreter()
    result = lab.run("n0", "env", "-i", *("%s=%s" % item for item in env.items()),
                     *command, "-c", REPORT, script, "monitor", check=False, timeout=60)
    words = result.stdout.split()
    assert words[:1] == ["exit"] and words[2:3] == ["modules"], (result.stdout, result.stderr)
    return int(words[1]), set(words[3:])


def test_the_remembered_monitor_imports_none_of_the_expensive_modules():
    with Lab(nodes=1, sources=0) as lab:
        params = scenarios.agent_params("nft", "sourceip")
        meta = scenarios.clone_meta(0)
        rc, _, err = lab.agent("n0", "start", params, meta, "vip:0")
        assert rc == 0, err
        code, full = monitor_modules(lab, params, meta)  # may check fully (and remember)
        assert code == 0
        code, remembered = monitor_modules(lab, params, meta)
        assert code == 0
        assert not remembered & FORBIDDEN, sorted(remembered & FORBIDDEN)
        # The harness would see them: the full check imports libnftables' binding.
        lab.run("n0", "nft", "add", "rule", "ip", "clusterip_198_18_0_100", "vip", "counter")
        code, changed = monitor_modules(lab, params, meta)
        assert code == 1 and "nftables" in changed and "json" in changed
        lab.agent("n0", "stop", params, meta, "vip:0")
