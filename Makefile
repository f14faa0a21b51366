# clusterip: install, test and demo entry points (see README.rst).
#
#   make install        install-venv + install-agent (the agent naming the
#                       venv's interpreter) + $(SBINDIR)/clusterip
#   make install-venv   the library in a virtualenv ($(VENV))
#   make install-agent  the OCF agent alone into $(DESTDIR)$(OCF_ROOT), naming
#                       $(PYTHON): for a distribution that installs the
#                       library itself, e.g. from debian/rules
#                         make install-agent DESTDIR=debian/tmp PYTHON=/usr/bin/python3
#   make test-venv      pytest, hypothesis, ruff and the library's dependencies
#                       in $(TEST_VENV), apart from the production venv
#   make check          install everything the tests need, then run every tier
#   make unit           the unit tier only (no root; needs the test venv)
#   make demo           a live three-node demo in network namespaces (root)
#   make benchmark      clusterip against IPaddr2, side by side (root)
#   make benchmark SCALE=1  the same, then the 8-node scale run below
#   make benchmark-scale  an 8-node cluster, 1 then 4 VIPs of 32 buckets (root;
#                       ~7-10 minutes: opt-in, not part of a plain make
#                       benchmark nor of CI)

PYTHON    ?= /usr/bin/python3
VENV      ?= /opt/clusterip
TEST_VENV ?= /opt/clusterip-test
OCF_ROOT  ?= /usr/lib/ocf
SBINDIR   ?= /usr/local/sbin
# The provider name is defined once, in the library (ocf:<provider>:clusterip).
PROVIDER  := $(shell sed -n 's/^PROVIDER = "\([a-z0-9_-]*\)"$$/\1/p' lib/clusterip/__init__.py)
AGENT     := $(DESTDIR)$(OCF_ROOT)/resource.d/$(PROVIDER)/clusterip
# The interpreter the agent names in its first line: $(PYTHON) for
# install-agent alone, the venv's for make install (a target-specific value,
# which install-agent inherits as install's prerequisite).
AGENT_PYTHON = $(PYTHON)
install: AGENT_PYTHON = $(VENV)/bin/python3

ifeq ($(PROVIDER),)
$(error no PROVIDER = "..." line in lib/clusterip/__init__.py)
endif

.PHONY: install install-venv install-agent test-venv uninstall uninstall-agent \
        check unit demo benchmark benchmark-scale

# The agent first: from this version on, its script waits for the library's
# lock (install-venv), and the script of any version runs any library's
# clusterip.agent.main, so the library below is replaced under a lock that
# the running agents honour, even on the first upgrade from an older version.
install: install-agent install-venv
	install -d $(DESTDIR)$(SBINDIR)
	ln -sf $(VENV)/bin/clusterip $(DESTDIR)$(SBINDIR)/clusterip
	@echo "installed: $(AGENT) (library in $(VENV))"

# A virtualenv lives where it was made (its scripts name its interpreter
# absolutely), so this step knows no DESTDIR.
install-venv:
	$(if $(DESTDIR),$(error install-venv: a virtualenv cannot be staged in DESTDIR; \
	    use install-agent and install the library with the distribution's tools))
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --upgrade pip
	# pip replaces the library file by file: running agents would import half
	# of it (see ocf/clusterip).  So the wheel and the dependencies first,
	# then only the replacement under the lock that every action holds shared
	# (~1 s; actions starting meanwhile wait for it).
	rm -rf build/install-wheel
	$(VENV)/bin/pip wheel --quiet --no-deps --wheel-dir build/install-wheel .
	$(PYTHON) -c 'import tomllib; print(*tomllib.load(open("pyproject.toml", "rb"))["project"]["dependencies"], sep="\n")' \
	    | xargs -d '\n' $(VENV)/bin/pip install --quiet
	touch $(VENV)/clusterip-install.lock
	flock $(VENV)/clusterip-install.lock \
	    $(VENV)/bin/pip install --quiet --no-deps --force-reinstall build/install-wheel/clusterip-*.whl
	rm -rf build/install-wheel
	# The agent needs no setuptools at run time, and its distutils shim (a .pth
	# file) turns python-iptables' "import distutils" into ~60 ms of setuptools.
	$(VENV)/bin/pip uninstall --quiet --yes setuptools

# Writes $(AGENT) only (every path under $(DESTDIR)).
install-agent:
	install -d $(dir $(AGENT))
	# Pacemaker runs agents with its own environment: name the interpreter
	# absolutely.  -I ignores PYTHON* variables and the user's site; -S skips
	# the site module (~1 ms of every action: ocf/clusterip adds the one
	# directory of packages it needs itself).
	sed '1s|.*|#!$(AGENT_PYTHON) -IS|' ocf/clusterip > $(AGENT).tmp
	chmod 0755 $(AGENT).tmp
	mv $(AGENT).tmp $(AGENT)

# The tests import the working tree's lib/ (pyproject's pythonpath), so the
# library itself is not installed here: only what it and the tests import.
test-venv:
	$(PYTHON) -m venv $(TEST_VENV)
	$(TEST_VENV)/bin/pip install --quiet --upgrade pip
	# pyproject.toml's dependencies and its "test" extra, one a line.
	$(PYTHON) -c 'import tomllib; p = tomllib.load(open("pyproject.toml", "rb"))["project"]; \
	    print(*p["dependencies"] + p["optional-dependencies"]["test"], sep="\n")' \
	    | xargs -d '\n' $(TEST_VENV)/bin/pip install --quiet
	# As in the production venv: python-iptables must import as the agent's does.
	$(TEST_VENV)/bin/pip uninstall --quiet --yes setuptools

uninstall-agent:
	rm -f $(AGENT)

uninstall: uninstall-agent
	rm -f $(DESTDIR)$(SBINDIR)/clusterip
	rm -rf $(VENV)

check:
	tests/run-all

unit:
	$(TEST_VENV)/bin/python3 -m pytest -q tests/unit

demo:
	# The demo runs on this kernel: no Linux 6.1 guest (which Debian 13 lacks).
	tests/setup-host --no-uml
	# Standard library and the installed clusterip (netlab's provider name): no test tools.
	$(VENV)/bin/python3 tests/demo.py

# The scale run, once for both targets (benchmark's setup-host already
# covers benchmark-scale's --no-uml one).
SCALE_RUN = PYTHONPATH=lib $(TEST_VENV)/bin/python3 tests/bench/scale.py

benchmark:
	tests/setup-host
	PYTHONPATH=lib $(TEST_VENV)/bin/python3 tests/bench/benchmark.py
	$(if $(SCALE),$(SCALE_RUN))

benchmark-scale:
	tests/setup-host --no-uml
	$(SCALE_RUN)
