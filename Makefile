# callback-scheduler: `make run` starts the whole system locally, `make test` runs every test.
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
GEN := gen
PROTOS := $(wildcard proto/scheduler/v1/*.proto)
DESCRIPTOR := $(GEN)/scheduler.pb
SITE = $(shell $(PY) -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')

.PHONY: all run stop test lint typecheck check token tenant webhooks webhook-secret gen venv \
	system-deps \
	clean bench \
	k8s-envoy-config openapi fuzz bench-sip bench-scale bench-phone bench-window chaos

all: lint typecheck test

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	# Generated code on the venv's path. Written by Python, not with the SITE variable: make expands a
	# recipe before running it, when this venv does not exist yet.
	$(PY) -c 'import pathlib, sysconfig; pathlib.Path(sysconfig.get_paths()["purelib"], "callback_scheduler_gen.pth").write_text("$(CURDIR)/$(GEN)\n")'
	touch $@

venv: $(STAMP)

# Generated code (never committed): Python modules + typed stubs, and the
# descriptor set that Envoy's gRPC-JSON transcoder loads.
$(GEN)/.stamp: $(PROTOS) | $(STAMP)
	rm -rf $(GEN) && mkdir -p $(GEN)
	PATH="$(CURDIR)/$(VENV)/bin:$$PATH" $(PY) -m grpc_tools.protoc -I proto -I $(SITE) \
		--python_out=$(GEN) --grpc_python_out=$(GEN) \
		--mypy_out=$(GEN) --mypy_grpc_out=$(GEN) \
		--include_imports --include_source_info --descriptor_set_out=$(DESCRIPTOR) \
		$(PROTOS)
	touch $(GEN)/scheduler/__init__.py $(GEN)/scheduler/v1/__init__.py
	touch $@

gen: $(GEN)/.stamp

# Debian PostgreSQL: used by the tests that prove DATABASE_URL works with any server.
system-deps:
	@if [ ! -x /usr/lib/postgresql/15/bin/initdb ] && ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then \
		echo "installing Debian PostgreSQL (apt)"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null; \
	fi
	@# sipp plays the phones in the SIP backend's tests and benchmark.
	@if ! command -v sipp >/dev/null; then \
		echo "installing sipp (apt: sip-tester)"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq sip-tester >/dev/null; \
	fi
	@# Kamailio is the real SIP proxy (digest auth, Record-Route) in the SIP backend's tests.
	@if ! command -v kamailio >/dev/null && [ ! -x /usr/sbin/kamailio ]; then \
		echo "installing kamailio (apt)"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq kamailio >/dev/null; \
	fi
	@# Kamailio's TLS module: the TLS peer of the SIP-over-TLS tests (Debian's sipp has no TLS).
	@if ! ls /usr/lib/*/kamailio/modules/tls.so >/dev/null 2>&1; then \
		echo "installing kamailio-tls-modules (apt)"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq kamailio-tls-modules >/dev/null; \
	fi
	@# Debian's Chromium: the console's browser test drives it with Playwright (never a
	@# browser Playwright downloads itself).
	@if ! command -v chromium >/dev/null; then \
		echo "installing chromium (apt)"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; \
	fi
	@# kubectl (with its built-in kustomize) renders deploy/k8s in the tests.
	@if ! command -v kubectl >/dev/null; then \
		echo "installing kubectl (apt)"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq kubectl >/dev/null \
			|| echo "kubectl is not in this machine's apt sources: install kubectl >= 1.27 by hand" >&2; \
	fi

# The Envoy config in the Kubernetes manifests, rendered by the same code as `make run`'s
# (committed; a test fails when it is stale), and the descriptor set its ConfigMap carries.
k8s-envoy-config: gen
	$(PY) -m deploy.k8s.envoy_config --descriptor-file $(DESCRIPTOR)

# The OpenAPI document of the REST API, generated from the proto (committed; a test fails
# when it is stale).
openapi: gen
	$(PY) -m deploy.openapi.generate

run: gen
	$(PY) -m deploy.local.stack

# Stops the `make run` of this state folder (STATE_DIR), or whatever a killed one left running.
stop: gen
	$(PY) -m deploy.local.stop

token: gen
	@$(PY) -m deploy.local.token $(CLIENT)

# The operator's tenant command on the local stack (while `make run` runs), e.g.
# make tenant ARGS="caller-id add acme +15551230000"; see deploy/local/tenant.py.
tenant: gen
	@$(PY) -m deploy.local.tenant $(ARGS)

# The notifier's operator command on the local stack (while `make run` runs), e.g.
# make webhooks ARGS="secret rotate acme --overlap-hours 24"; see deploy/local/webhooks.py.
webhooks: gen
	@$(PY) -m deploy.local.webhooks $(ARGS)

# A client's current webhook signing secret (make webhooks ARGS="secret show CLIENT").
webhook-secret: gen
	@$(PY) -m deploy.local.token --webhook-secret $(CLIENT)

lint: gen
	$(VENV)/bin/ruff check services deploy tests bench
	$(VENV)/bin/ruff format --check services deploy tests bench
	$(VENV)/bin/lint-imports

typecheck: gen
	$(VENV)/bin/mypy services deploy tests bench

# Every tier in one session: tests/unit, tests/integration (a PostgreSQL of its own),
# tests/e2e (the whole stack), tests/deploy (kubectl, nats-server, Envoy, hadolint); see the
# README's "Tests by what they need". A new folder under tests/ is collected too.
test: gen system-deps lint typecheck
	$(VENV)/bin/pytest tests

clean:
	rm -rf $(VENV) $(GEN)

# The peers (pgqueuer, procrastinate) and py-spy: the `bench` extra, never runtime deps.
$(VENV)/.bench-installed: pyproject.toml | $(STAMP)
	$(PY) -m pip install -q -e '.[dev,bench]'
	touch $@

# One run, one machine, one table: bench/results/bench.md (sizes: see bench/run.py).
bench: gen system-deps $(VENV)/.bench-installed
	$(PY) -m bench.run
	$(PY) -m bench.fairness
	$(PY) -m bench.webhooks
	$(PY) -m bench.list_bench
	$(PY) -m bench.fuzz_api
	$(PY) -m bench.sip_bench
	$(PY) -m bench.phone_lateness

# Lateness at sipp phones over the SIP backend, by their own traces (bench/phone_lateness.py;
# PHONE_BENCH_SECONDS, PHONE_BENCH_FUTURE_TASKS, PHONE_BENCH_LOOKAHEADS):
# bench/results/phone_lateness.md.
bench-phone: gen system-deps
	$(PY) -m bench.phone_lateness

# 10,000 due tasks held by a calling window, then started at its opening within the queue's limit,
# measured at sipp phones (WINDOW_BENCH_TASKS, WINDOW_BENCH_LIMIT): bench/results/window_opening.md.
bench-window: gen system-deps
	$(PY) -m bench.window_opening

# Dispatch throughput with few vs 10 M stored tasks (BENCH_SCALE_TASKS): bench/results/scale.md.
bench-scale: gen system-deps
	$(PY) -m bench.scale

# schemathesis against the whole stack through Envoy: >= 10,000 generated requests.
fuzz: gen
	$(PY) -m bench.fuzz_api

# Simultaneous SIP callbacks against sipp phones (SIP_BENCH_SIZES, SIP_BENCH_REPEATS).
bench-sip: gen system-deps
	$(PY) -m bench.sip_bench

# Invariants under faults: kill -9 of every part, PostgreSQL crashes (bench/chaos.py).
# CHAOS_BACKEND=sip (default): real SIP calls, sipp phones' traces as witnesses
# (bench/results/chaos-sip.txt); CHAOS_BACKEND=simulated: the faster run with simulated phones
# (bench/results/chaos.txt).
CHAOS_BACKEND ?= sip
chaos: gen system-deps
	$(PY) -m bench.chaos --backend $(CHAOS_BACKEND) \
		--save bench/results/$(if $(filter sip,$(CHAOS_BACKEND)),chaos-sip,chaos).txt
