# icee developer entry points. See README.md.
SHELL := /bin/bash
VENV ?= $(HOME)/.cache/icee/venv
PY := $(VENV)/bin/python
export KUBECONFIG ?= /var/lib/icee-cluster/kubeconfig

.PHONY: cluster cluster-down cluster-status images runner venv lint test test-unit test-security test-chaos bench bench-parts up ui

up:                 ## the whole system: cluster, icee image, helm install; prints the UI address
	bash cluster/deploy-icee.sh

cluster:            ## bring up the local single-node Kubernetes (gVisor included)
	bash cluster/up.sh

cluster-down:       ## remove it, leaving no processes, mounts, interfaces or cgroups
	bash cluster/down.sh

cluster-status:     ## say what is up
	bash cluster/status.sh

images:             ## build the sandbox images into the cache
	bash cluster/images.sh

runner:             ## build the in-sandbox runner (runner/build/icee-runner; the tests run it)
	$(MAKE) -C runner

# The venv lives in the cache, shared by checkouts: its editable install must point
# at this one (the stamp names the checkout and the dependencies it was made for).
VENV_FOR := $(CURDIR) $(shell sha256sum pyproject.toml | cut -c1-16)
venv:
	@if [ "$$(cat $(VENV)/.installed 2>/dev/null)" != "$(VENV_FOR)" ]; then \
	  set -e; python3 -m venv $(VENV); $(VENV)/bin/pip install -q -U pip; \
	  $(VENV)/bin/pip install -q -e '.[dev,bench]'; echo "$(VENV_FOR)" > $(VENV)/.installed; fi

lint: venv          ## ruff and mypy
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

test-unit: venv runner
	$(VENV)/bin/pytest tests/unit -q

test-security: venv ## the attack battery on the local cluster (ICEE_SECURITY_RUNTIMES=gvisor,runc)
	$(VENV)/bin/pytest tests/security -q

test-chaos: venv   ## kill -9 the api, the operator, the kubelet and containerd, 5 rounds each
	$(VENV)/bin/pytest tests/chaos -q

PYTEST := $(VENV)/bin/pytest -q
# make test runs the integration suite in two pytest processes side by side (each
# has its own namespace, operator and api); these files are the second one, about
# half the time. A new file joins the first; a renamed one here fails the second.
INTEGRATION_2 := $(addprefix tests/integration/,test_operator.py test_chart.py \
  test_session_cleanup.py test_operator_leader.py test_cluster.py test_skaffold.py)
# The chaos rounds that kill only the suite's own api and operator processes; the
# kubelet and containerd rounds disturb the whole node and run alone.
CHAOS_PROCESSES := tests/chaos/test_chaos.py::test_kill_the_api tests/chaos/test_chaos.py::test_kill_the_operator
CHAOS_NODE := tests/chaos/test_chaos.py::test_kill_the_kubelet tests/chaos/test_chaos.py::test_kill_containerd

test: venv ui        ## everything: lint, unit, integration, end-to-end, attack and chaos tests on the local cluster
	$(MAKE) lint
	bash cluster/deploy-icee.sh
	# After the cluster scripts installed musl-tools: the tests run the runner the images ship.
	$(MAKE) runner
	# Side by side: the suites mostly wait on the cluster (tests/side-by-side.sh prints
	# each part's log and time). Browser tests run in a process of their own: sync
	# Playwright and pytest-asyncio do not share a process well.
	bash tests/side-by-side.sh \
	  integration-1 "$(PYTEST) tests/unit tests/integration $(addprefix --ignore=,$(INTEGRATION_2))" \
	  integration-2 "$(PYTEST) $(INTEGRATION_2)"
	bash tests/side-by-side.sh \
	  security "$(PYTEST) tests/security" \
	  e2e "ICEE_API_URL=http://127.0.0.1:30080/ $(PYTEST) tests/e2e" \
	  chaos-processes "$(PYTEST) $(CHAOS_PROCESSES)"
	# Alone: they kill the node's kubelet and containerd.
	$(PYTEST) $(CHAOS_NODE)
	# Last: these kill and rebuild the cluster.
	$(PYTEST) tests/lifecycle

bench: venv         ## the benchmark matrix on the local cluster (~20 min): figures, not pass/fail
	$(PY) bench/matrix.py

bench-parts: venv   ## the single benchmarks, one after another
	$(PY) bench/pod_start.py --runs 10
	@for b in start_latency warm_start warm_breakdown exit_to_final echo_rtt density idle_ws_memory languages runner flood_fairness; do \
	  echo "== bench/$$b.py"; $(PY) bench/$$b.py || exit 1; done

ui:                 ## build the browser UI bundle into ui/dist
	@if [ -f ui/package.json ]; then cd ui && npm ci --no-audit --no-fund --loglevel=error && npm run build; fi
