# signing-agent: operator and developer entry points.
#   make run      install what is missing, create the dev token (and the live config and policy from examples/), start the agent
#   make test     the test suite, against throw-away SoftHSM2 tokens
#   make bench    the agent vs bare gRPC, OpenBao Transit and its token floor (bench/results/; BENCH_ARGS=--quick),
#                 and Send vs Sign against the local exchange (bench/results/send.json)
#   make bench-scale  100,000 wrapped keys (SCALE_KEYS=N): p50 vs 1 key, start, memory, token objects, replicas
# Installs (every one is the hash-verified set in uv.lock; see README, Installs):
#   make lock [UPGRADE=package|all]   rewrite uv.lock after editing pyproject.toml, or move a package up
#   make lock-check                   fail if uv.lock no longer matches pyproject.toml (CI)
#   make sbom [SBOM=path]             CycloneDX JSON of what .venv holds (build/sbom.cdx.json)
#   make audit-deps [AUDIT_ARGS=...]  pip-audit over every locked package (says NOT CHECKED when offline)
#   make wheel [DIST=dir]             the agent's and the client's wheels, plus the locked runtime requirements with hashes
#   make client-wheel [DIST=dir]      the bot-side package (clients/python) alone: its wheel and hashed requirements
# Key management (secrets are read from stdin, never from the command line):
#   make import-key LABEL=... EXCHANGE=... API_KEY=... [TYPE=hmac|ed25519|rsa|ec-p256] < secret-file
#   make generate-key LABEL=... EXCHANGE=... TYPE=ed25519|rsa    (prints the public key to register)
#   make register-key LABEL=... API_KEY=...                      (the id the exchange issued for it)
#   make list-keys | make revoke-key LABEL=... [YES=1]           (YES=1: confirm a key generated in the token)
# The live signing-agent.toml and policy.toml are the operator's (untracked, gitignored): `make run`
# and `make test` create them from examples/ when they are missing, and never overwrite them.

SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# uv (and the SBOM and audit tools) live apart from the agent, in .tools/, also from uv.lock.
TOOLS := .tools
UV ?= $(TOOLS)/bin/uv
DIST ?= dist
SBOM ?= build/sbom.cdx.json
AGENT := $(BIN)/signing-agent
CONFIG ?= signing-agent.toml
SOAK_SECONDS ?= 60
SOFTHSM_MODULE ?= /usr/lib/softhsm/libsofthsm2.so
# The second PKCS#11 implementation the tests run on (tests/support/ock.py starts its daemon, pkcsslotd).
OPENCRYPTOKI_MODULE ?= /usr/lib/x86_64-linux-gnu/pkcs11/libopencryptoki.so
# `sudo` only where we are not root already (CI and dev machines run as root)
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
# uv never downloads a Python (the venvs use $(PYTHON)), and installs into ours, not an activated one.
export UV_PYTHON_DOWNLOADS := never
# --locked: refuse a uv.lock that no longer matches pyproject.toml; --no-build-isolation: the project is
# built with the locked setuptools (group build), so nothing unlocked is fetched either.
UV_SYNC = UV_PROJECT_ENVIRONMENT=$(abspath $(VENV)) $(UV) sync --locked --no-build-isolation --group build

.PHONY: run test bench token import-key generate-key register-key list-keys revoke-key proto deps softhsm opencryptoki \
	clean lock lock-check sbom audit-deps wheel client-wheel live-config systemd-analyze postgresql bench-scale

run: deps token live-config
	$(AGENT) --config $(CONFIG) serve

test: deps opencryptoki systemd-analyze postgresql live-config
	$(BIN)/python -m pytest $(PYTEST_ARGS)

bench: deps
	$(UV_SYNC) --quiet --extra dev --extra bench
	$(BIN)/python -m bench.run $(BENCH_ARGS)
	$(BIN)/python -m bench.send
	$(BIN)/python bench/soak.py --seconds $(SOAK_SECONDS)

# Wrapped keys at platform scale: SCALE_KEYS (100,000) keys in the store; bench/results/scale.json (see bench/scale.py)
SCALE_KEYS ?= 100000
bench-scale: deps postgresql
	$(UV_SYNC) --quiet --extra dev --extra bench
	$(BIN)/python -m bench.scale --keys $(SCALE_KEYS)

# The dev token under softhsm/: config, token files and random PINs (mode 0600).
token: deps live-config
	$(AGENT) token init-softhsm --dir softhsm --label signing-agent-dev --module $(SOFTHSM_MODULE)

import-key: deps live-config
	@test -n "$(LABEL)" -a -n "$(EXCHANGE)" -a -n "$(API_KEY)" || \
	  { echo "usage: make import-key LABEL=name EXCHANGE=binance API_KEY=key-id < secret" >&2; exit 2; }
	@$(AGENT) --config $(CONFIG) keys import --label "$(LABEL)" --exchange "$(EXCHANGE)" --api-key "$(API_KEY)" \
	  $(if $(TYPE),--type "$(TYPE)") $(foreach o,$(OPTIONS),--option "$(o)")

generate-key: deps live-config
	@test -n "$(LABEL)" -a -n "$(EXCHANGE)" -a -n "$(TYPE)" || \
	  { echo "usage: make generate-key LABEL=name EXCHANGE=binance TYPE=ed25519|rsa" >&2; exit 2; }
	@$(AGENT) --config $(CONFIG) keys generate --label "$(LABEL)" --exchange "$(EXCHANGE)" --type "$(TYPE)"

register-key: deps live-config
	@test -n "$(LABEL)" -a -n "$(API_KEY)" || \
	  { echo "usage: make register-key LABEL=name API_KEY=key-id [< passphrase-file]" >&2; exit 2; }
	@$(AGENT) --config $(CONFIG) keys register --label "$(LABEL)" --api-key "$(API_KEY)"

list-keys: deps live-config
	@$(AGENT) --config $(CONFIG) keys list

revoke-key: deps live-config
	@test -n "$(LABEL)" || { echo "usage: make revoke-key LABEL=name" >&2; exit 2; }
	$(AGENT) --config $(CONFIG) keys revoke --label "$(LABEL)"$(if $(YES), --yes)

# The operator's own config and policy, from examples/ when missing (never overwritten: no prerequisite).
live-config: signing-agent.toml policy.toml

signing-agent.toml policy.toml:
	@cp examples/$@ $@ && echo "created $@ from examples/$@: it is yours to edit (gitignored)"

# Regenerate the gRPC code from proto/ (the result is committed; a test checks it is fresh).
proto: deps
	$(BIN)/python tools/generate_proto.py

deps: $(VENV)/.installed softhsm

# The agent with its test dependencies, exactly the locked set: uv checks every file against the
# SHA-256 in uv.lock and removes what is not locked. Redone when pyproject.toml or uv.lock changes.
# (A .venv made before the lock, with pip's own packages in it, is made anew.)
$(VENV)/.installed: pyproject.toml uv.lock $(TOOLS)/.uv
	test -e $(VENV)/.uv-managed || { rm -rf $(VENV) && $(PYTHON) -m venv --without-pip $(VENV) && touch $(VENV)/.uv-managed; }
	$(UV_SYNC) --quiet --extra dev --no-install-workspace
	$(UV_SYNC) --quiet --extra dev
	touch $@

# uv itself: the version locked in uv.lock (group tools), installed by pip with --require-hashes.
$(TOOLS)/.uv: uv.lock
	test -x $(TOOLS)/bin/python || $(PYTHON) -m venv $(TOOLS)
	$(PYTHON) tools/lockfile.py uv-requirement > $(TOOLS)/uv-requirement.txt
	$(TOOLS)/bin/python -m pip install --quiet --require-hashes --no-deps -r $(TOOLS)/uv-requirement.txt
	touch $@

# The SBOM and audit tools (group tools), into .tools/ only.
$(TOOLS)/.installed: pyproject.toml uv.lock $(TOOLS)/.uv
	UV_PROJECT_ENVIRONMENT=$(abspath $(TOOLS)) $(UV) sync --locked --quiet --only-group tools
	touch $@

# Rewrite uv.lock from pyproject.toml, keeping every pin that still fits. UPGRADE=name moves one
# package to its newest release inside pyproject.toml's range, UPGRADE=all every package.
lock: $(TOOLS)/.uv
	$(UV) lock $(if $(filter all,$(UPGRADE)),--upgrade,$(if $(UPGRADE),--upgrade-package $(UPGRADE)))

# uv's own verdict (the test suite also compares the two files: tests/agent/test_supply_chain.py).
lock-check: $(TOOLS)/.uv
	$(UV) lock --check

# CycloneDX JSON: the agent and every package installed in .venv (all of them from uv.lock).
sbom: deps $(TOOLS)/.installed
	mkdir -p $(dir $(SBOM))
	$(TOOLS)/bin/cyclonedx-py environment --pyproject pyproject.toml --mc-type application \
	  --output-reproducible --output-format JSON --output-file $(SBOM) $(abspath $(BIN)/python)
	@echo "SBOM of $(VENV) written to $(SBOM)"

# pip-audit over every package of uv.lock (runtime, extras, groups), as locked, with hashes.
audit-deps: $(TOOLS)/.installed
	mkdir -p build
	$(UV) export --locked --quiet --all-extras --all-groups --no-emit-workspace --format requirements-txt \
	  --output-file build/requirements-all.txt
	$(TOOLS)/bin/python tools/audit_deps.py --pip-audit $(TOOLS)/bin/pip-audit \
	  --requirements build/requirements-all.txt -- $(AUDIT_ARGS)

# The wheels as shipped (the agent, and the bot-side package it depends on), built with the locked
# setuptools (hash-checked), and next to them their locked runtime dependencies with their hashes.
# Install on a server with pip alone:
#   pip install --require-hashes -r requirements.txt && pip install --no-deps signing_agent*-*.whl
wheel: $(TOOLS)/.uv build/build-requirements.txt
	mkdir -p $(DIST)
	rm -rf build/lib build/bdist.* clients/python/build
	$(UV) build --all-packages --wheel --quiet --out-dir $(DIST) --require-hashes --build-constraints build/build-requirements.txt
	$(UV) export --locked --quiet --no-default-groups --no-emit-workspace --format requirements-txt \
	  --output-file $(DIST)/requirements.txt

# The bot-side package alone (for a bot's own venv): its wheel, its locked runtime dependencies
# (grpcio, protobuf) with hashes, and the same with the ccxt extra. In the bot's venv:
#   pip install --require-hashes --only-binary :all: -r client-requirements.txt   (or client-requirements-ccxt.txt)
#   pip install --no-deps signing_agent_client-*.whl
client-wheel: $(TOOLS)/.uv build/build-requirements.txt
	mkdir -p $(DIST)
	rm -rf clients/python/build
	$(UV) build --package signing-agent-client --wheel --quiet --out-dir $(DIST) --require-hashes \
	  --build-constraints build/build-requirements.txt
	$(UV) export --locked --quiet --package signing-agent-client --no-default-groups --no-emit-workspace \
	  --format requirements-txt --output-file $(DIST)/client-requirements.txt
	$(UV) export --locked --quiet --package signing-agent-client --extra ccxt --no-default-groups --no-emit-workspace \
	  --format requirements-txt --output-file $(DIST)/client-requirements-ccxt.txt

build/build-requirements.txt: uv.lock $(TOOLS)/.uv
	mkdir -p build
	$(UV) export --locked --quiet --only-group build --no-emit-project --format requirements-txt --output-file $@

softhsm:
	@test -e $(SOFTHSM_MODULE) || { \
	  echo "installing softhsm2 (PKCS#11 module for the dev and test tokens)"; \
	  $(SUDO) apt-get update -qq && $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq softhsm2; }

opencryptoki:
	@test -e $(OPENCRYPTOKI_MODULE) || { \
	  echo "installing opencryptoki (the second PKCS#11 implementation the tests run against)"; \
	  $(SUDO) apt-get update -qq && $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq opencryptoki; }

# PostgreSQL's server binaries: tests/support/pg.py starts a throw-away cluster from them (a Unix socket in a temp dir,
# run as the package's `postgres` user when we are root); the package's own cluster is not used.
postgresql:
	@ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || { \
	  echo "installing postgresql (the server the multi-host tests start a throw-away cluster of)"; \
	  $(SUDO) apt-get update -qq && $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql; }

# systemd-analyze and systemd-sysusers check deploy/'s units (tests/agent/test_deploy.py). Debian's systemd package
# installs without a running systemd (containers, CI); the tests need no PID 1 or D-Bus either.
systemd-analyze:
	@command -v systemd-analyze >/dev/null || { \
	  echo "installing systemd (its systemd-analyze verifies the units in deploy/; nothing is started)"; \
	  $(SUDO) apt-get update -qq && $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq systemd; }

clean:
	rm -rf $(VENV) $(TOOLS) .pytest_cache .hypothesis run .test-output build dist
