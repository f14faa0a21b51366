# clusterip: install, test and demo entry points (see README.rst).
#
#   make install   library into a virtualenv ($(VENV)), agent into $(OCF_ROOT)
#   make check     install everything the tests need, then run every tier
#   make unit      the unit tier only (no root)
#   make demo      a live three-node demo in network namespaces (root)
#   make benchmark clusterip against IPaddr2, side by side (root)

PYTHON   ?= /usr/bin/python3
VENV     ?= /opt/clusterip
OCF_ROOT ?= /usr/lib/ocf
SBINDIR  ?= /usr/local/sbin
AGENT    := $(DESTDIR)$(OCF_ROOT)/resource.d/custom/clusterip

.PHONY: install uninstall check unit demo benchmark

install:
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --upgrade pip
	$(VENV)/bin/pip install --quiet .
	# The agent needs no setuptools at run time, and its distutils shim (a .pth
	# file) turns python-iptables' "import distutils" into ~60 ms of setuptools.
	$(VENV)/bin/pip uninstall --quiet --yes setuptools
	install -d $(dir $(AGENT))
	# Pacemaker runs agents with its own environment: name the interpreter absolutely.
	sed '1s|.*|#!$(VENV)/bin/python3 -IS|' ocf/clusterip > $(AGENT).tmp
	chmod 0755 $(AGENT).tmp
	mv $(AGENT).tmp $(AGENT)
	install -d $(DESTDIR)$(SBINDIR)
	ln -sf $(VENV)/bin/clusterip $(DESTDIR)$(SBINDIR)/clusterip
	@echo "installed: $(AGENT) (library in $(VENV))"

uninstall:
	rm -f $(AGENT) $(DESTDIR)$(SBINDIR)/clusterip
	rm -rf $(VENV)

check:
	tests/run-all

unit:
	$(VENV)/bin/python3 -m pytest -q tests/unit

demo:
	# The demo runs on this kernel: no Linux 6.1 guest (which Debian 13 lacks).
	tests/setup-host --no-uml
	$(VENV)/bin/python3 tests/demo.py

benchmark:
	tests/setup-host
	$(VENV)/bin/python3 tests/bench/benchmark.py
