"""Malformed and hostile parameters, property-based (hypothesis), against fakes.

Every generated case (tests/badinput.py) changes ONE field of a valid cloned
configuration to a clearly invalid value: IPv6 (with hostile scope ids), host
names, ``../``, shell metacharacters, newlines, forged exit-reason lines,
unicode and undecodable bytes, huge and negative numbers, unicast/broadcast/
reserved MACs, clone-max 0 or above the backend's limit, unknown hash modes
and backends.  The agent must answer 6 (or 2) with exactly one single-line,
printable ``ocf-exit-reason:`` naming the field, never a traceback, and the
fakes must see no change - also when it logs to a file.  ``stop`` with such a
configuration succeeds without touching anything (nothing can have started).

Plus a static check that nothing reaches a shell: no shell=True, no
os.system/os.popen/exec*, and every subprocess argv is a fixed program with
arguments built from validated values only.
"""

import ast
import contextlib
import io
import os
import posix
import re
import tempfile

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

import badinput
from clusterip import agent, announcements, backends, instance, params, peers
from unit.fakes import FakeBackend, FakeNode

LIB = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))),
                   "lib", "clusterip")
FAKE_LIMIT = FakeBackend.max_buckets
SETTINGS = settings(max_examples=int(os.environ.get("CLUSTERIP_TEST_BAD_INPUTS_UNIT", "1000")),
                    deadline=None, database=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])

# Undecodable bytes reach the agent as lone surrogates (os.environ decodes with
# surrogateescape); hypothesis' text() never makes them, so add them explicitly.
undecodable = st.binary(min_size=1, max_size=12).map(
    lambda raw: raw.decode("utf-8", "surrogateescape")).filter(
    lambda text: "\x00" not in text and any("\udc80" <= c <= "\udcff" for c in text))


def with_undecodable(limit):
    fields = ["ip", "cidr_netmask", "nic", "clustermac", "hashmode", "hash_init", "backend",
              "graceful_handover", "iflabel", "broadcast", "preferred_lft", "noprefixroute",
              "arp_count", "arp_interval", "owner_lease", "drain_timeout"]
    meta = ["clone", "clone_max", "globally_unique"]
    return st.one_of(
        badinput.cases(limit),
        st.tuples(st.just("param"), st.sampled_from(fields), undecodable),
        st.tuples(st.just("meta"), st.sampled_from(meta), undecodable),
        # An IPv6 address parses with any scope id: the rest must not leak raw.
        st.tuples(st.just("param"), st.just("ip"),
                  st.builds(lambda junk: "fe80::1%" + junk, undecodable)),
    )


@contextlib.contextmanager
def fake_node(euid=0):
    """instance.address and the backend replaced by fakes; yields (node, backend, rsctmp)."""
    node, backend = FakeNode(), FakeBackend()
    patches = [(instance, "address", node), (announcements, "spawn", node.spawn),
               (posix, "geteuid", lambda: euid),
               # The backend's own limit check, as for a real backend.
               (backends, "select",
                lambda params, **context: backends.check_supported(backend, params)),
               (backends, "choose", lambda requested, **context: backend)]
    missing = object()
    saved = [(owner, name, getattr(owner, name, missing)) for owner, name, _ in patches]
    for owner, name, value in patches:
        setattr(owner, name, value)
    try:
        with tempfile.TemporaryDirectory() as rsctmp:
            yield node, backend, rsctmp
    finally:
        for owner, name, value in saved:
            if value is missing:
                delattr(owner, name)
            else:
                setattr(owner, name, value)


def run(action, env):
    """agent.main with stderr captured: (exit code, stderr text)."""
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        code = agent.main(["clusterip", action], env)
    return code, err.getvalue()


def environment(case, rsctmp, logfile=None):
    ps, meta = badinput.configuration(case, "auto")
    env = {"OCF_RESKEY_" + k: v for k, v in ps.items()}
    env.update({"OCF_RESKEY_CRM_meta_" + k: v for k, v in meta.items()})
    env.update(HA_RSCTMP=rsctmp, OCF_RESOURCE_INSTANCE="vip:0")
    if logfile:
        env["HA_LOGFILE"] = logfile
    return env


def check_refusal(case, code, err, action):
    assert code in (2, 6), "%s of %r: exit %d\n%s" % (action, case, code, err)
    assert "Traceback" not in err, err
    lines = [line for line in err.splitlines() if line.startswith("ocf-exit-reason:")]
    assert len(lines) == 1, "%s of %r: %d exit reasons\n%s" % (action, case, len(lines), err)
    reason = lines[0][len("ocf-exit-reason:"):]
    # One printable line: it lands in the CIB (XML 1.0 forbids most controls) and in crm_mon.
    assert reason.isprintable() and not any("\udc80" <= c <= "\udcff" for c in reason), \
        "%s of %r: unprintable reason %r" % (action, case, reason)
    assert any(word in reason for word in badinput.reason_names(case[1])), \
        "%s of %r: the reason does not name %s: %s" % (action, case, case[1], reason)


def assert_untouched(node, backend, rsctmp):
    assert backend.calls == [] and backend.tables == {}
    assert node.addresses == {} and node.announced == []
    assert os.listdir(rsctmp) == [], os.listdir(rsctmp)


@SETTINGS
@given(with_undecodable(FAKE_LIMIT), st.booleans())
@example(("param", "ip", "fe80::1%\udcff\nocf-exit-reason:forged"), True)
@example(("param", "ip", "fe80::1%\x1b[2J`reboot`"), False)
@example(("meta", "clone_max", str(FAKE_LIMIT + 1)), False)
def test_invalid_values_are_refused_with_one_reason_and_change_nothing(case, log_to_file):
    with fake_node() as (node, backend, rsctmp):
        logfile = os.path.join(rsctmp, "..", os.path.basename(rsctmp) + ".log") \
            if log_to_file else None
        try:
            env = environment(case, rsctmp, logfile)
            for action in ("validate-all", "start", "monitor"):
                code, err = run(action, env)
                check_refusal(case, code, err, action)
                assert_untouched(node, backend, rsctmp)
            # stop of a configuration that never started: success, nothing left.
            code, err = run("stop", env)
            assert code == 0 and "Traceback" not in err, (case, code, err)
            assert backend.tables == {} and node.addresses == {}
            assert [f for f in os.listdir(rsctmp) if not f.endswith(".lock")] == []
        finally:
            if logfile and os.path.exists(logfile):
                os.unlink(logfile)


@SETTINGS
@given(badinput.cases(FAKE_LIMIT))
def test_validate_all_refuses_them_without_root_too(case):
    with fake_node(euid=65534) as (node, backend, rsctmp):
        code, err = run("validate-all", environment(case, rsctmp))
        check_refusal(case, code, err, "validate-all")
        assert_untouched(node, backend, rsctmp)
        code, err = run("start", environment(case, rsctmp))
        assert code in (4, 6) and "Traceback" not in err, (case, code, err)
        assert_untouched(node, backend, rsctmp)


# --- nothing reaches a shell ----------------------------------------------------------

SUBPROCESS_CALLS = {"run", "Popen", "call", "check_call", "check_output", "getoutput",
                    "getstatusoutput"}
OS_SHELL_CALLS = {"system", "popen", "execl", "execle", "execlp", "execlpe", "execv", "execve",
                  "execvp", "execvpe", "spawnl", "spawnle", "spawnlp", "spawnlpe", "spawnv",
                  "spawnve", "spawnvp", "spawnvpe", "posix_spawn", "posix_spawnp"}
# Every place the library starts a program, and why its argv is safe.
KNOWN_SUBPROCESS_SITES = {
    ("peers.py", "_attrd"): "[ATTRD_UPDATER, *args]: args from attribute(vip) (a parsed "
                            "IPv4Address) and a backend name from the registry",
    ("cli.py", "_xml"): "crm_mon/cibadmin with fixed options (clusterip status)",
    ("kernel/__init__.py", "_hand_to_holder"): "the fixed HOLDER (/bin/sleep 1), an empty "
                                               "environment, descriptors only",
    ("background.py", "spawn"): "this interpreter -I -S -c <fixed code>, then the library "
                                "path, a module and function named by the library "
                                "(announcements.sender_main with the sender's parsed "
                                "arguments: NIC, prefix, canonical VIP, MAC, numbers; "
                                "guard.guard_main with its handshake file's path, then "
                                "optionally --sends and the sender's same arguments)",
}


def library_sources():
    for directory, _, files in os.walk(LIB):
        for name in sorted(files):
            if name.endswith(".py"):
                path = os.path.join(directory, name)
                with open(path, encoding="utf-8") as handle:
                    yield os.path.relpath(path, LIB), ast.parse(handle.read(), path)


def _enclosing_functions(tree):
    owner = {}
    for function in ast.walk(tree):
        if isinstance(function, (ast.FunctionDef, ast.AsyncFunctionDef)):
            for node in ast.walk(function):
                owner.setdefault(node, function.name)
    return owner


def test_no_shell_and_only_known_programs_are_started():
    sites, problems = set(), []
    for path, tree in library_sources():
        owner = _enclosing_functions(tree)
        for node in ast.walk(tree):
            if not isinstance(node, ast.Call):
                continue
            for keyword in node.keywords:
                if keyword.arg == "shell" and not (isinstance(keyword.value, ast.Constant)
                                                   and keyword.value.value is False):
                    problems.append("%s:%d shell=%s" % (path, node.lineno,
                                                        ast.unparse(keyword.value)))
            func = node.func
            if isinstance(func, ast.Attribute) and isinstance(func.value, ast.Name):
                module, name = func.value.id, func.attr
                program = node.args[0] if node.args else None
                if module in ("os", "posix") and name == "posix_spawn" and program is not None and (
                        ast.unparse(program) == "sys.executable"  # this interpreter
                        or (isinstance(program, ast.Subscript)  # a fixed constant's program
                            and isinstance(program.value, ast.Name)
                            and program.value.id.isupper())):
                    sites.add((path, owner.get(node)))  # never a shell
                elif module in ("os", "posix") and name in OS_SHELL_CALLS:
                    problems.append("%s:%d %s.%s" % (path, node.lineno, module, name))
                if module == "subprocess" and name in SUBPROCESS_CALLS:
                    sites.add((path, owner.get(node)))
                    argv = node.args[0] if node.args else None
                    if not isinstance(argv, (ast.List, ast.Name)):
                        problems.append("%s:%d subprocess.%s with argv %s" % (
                            path, node.lineno, name, ast.unparse(argv) if argv else None))
                    elif isinstance(argv, ast.List) and not (
                            isinstance(argv.elts[0], ast.Name) and argv.elts[0].id.isupper()):
                        problems.append("%s:%d the program is not a fixed constant: %s" % (
                            path, node.lineno, ast.unparse(argv.elts[0])))
            if isinstance(func, ast.Name) and func.id in ("system", "popen", "eval", "exec"):
                problems.append("%s:%d %s()" % (path, node.lineno, func.id))
    assert not problems, problems
    assert sites == set(KNOWN_SUBPROCESS_SITES), \
        "new places start programs; check their argv and add them here: %s" % (
            sites ^ set(KNOWN_SUBPROCESS_SITES))


def test_the_programs_fixed_names_are_absolute_paths():
    from clusterip import cli, kernel

    for program in (peers.ATTRD_UPDATER, cli.CRM_MON, cli.CIBADMIN, kernel.HOLDER[0]):
        assert os.path.isabs(program) and re.fullmatch(r"[/A-Za-z0-9_.-]+", program), program


@SETTINGS
@given(st.ip_addresses(v=4).map(str))
def test_arguments_derived_from_parameters_are_validated_before_attrd_updater(ip):
    # The only parameter that reaches a program's argv is ip, via the attribute name.
    try:
        parsed = params.parse({"OCF_RESKEY_ip": ip})
    except Exception:  # refused addresses never get that far
        return
    assert re.fullmatch(r"clusterip-backend-\d{1,3}(\.\d{1,3}){3}", peers.attribute(parsed.vip))
    for name in backends._REGISTRY:
        assert re.fullmatch(r"[a-z]+", name)


@pytest.mark.parametrize("nic", ['x"accept;#', "eth0;id", "a b", "$(reboot)", "eth\u0660"])
def test_interface_names_from_the_kernel_are_checked_like_the_parameter(nic):
    assert not params.valid_nic_name(nic)
    assert params.valid_nic_name("eth0.100") and params.valid_nic_name("br-1a2b")
