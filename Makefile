# signing-agent: operator and developer entry points.
#   make run      install what is missing, create the dev token (and the live config and policy from examples/), start the agent
#   make test     the test suite, against throw-away SoftHSM2 tokens
#   make bench    the agent vs bare gRPC, OpenBao Transit and its token floor (bench/results/; BENCH_ARGS=--quick)
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
AGENT := $(BIN)/signing-agent
CONFIG ?= signing-agent.toml
SOAK_SECONDS ?= 60
SOFTHSM_MODULE ?= /usr/lib/softhsm/libsofthsm2.so
# The second PKCS#11 implementation the tests run on (tests/ock.py starts its daemon, pkcsslotd).
OPENCRYPTOKI_MODULE ?= /usr/lib/x86_64-linux-gnu/pkcs11/libopencryptoki.so
# `sudo` only where we are not root already (CI and dev machines run as root)
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: run test bench token import-key generate-key register-key list-keys revoke-key proto deps softhsm opencryptoki clean \
	live-config

run: deps token live-config
	$(AGENT) --config $(CONFIG) serve

test: deps opencryptoki live-config
	$(BIN)/python -m pytest $(PYTEST_ARGS)

bench: deps $(VENV)/.bench-installed
	$(BIN)/python -m bench.run $(BENCH_ARGS)
	$(BIN)/python bench/soak.py --seconds $(SOAK_SECONDS)

$(VENV)/.bench-installed: pyproject.toml
	$(BIN)/python -m pip install --quiet -e '.[dev,bench]'
	touch $@

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
	$(BIN)/python -m agent._proto.generate

deps: $(VENV)/.installed softhsm

# Reinstall when the project metadata changes.
$(VENV)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $@

softhsm:
	@test -e $(SOFTHSM_MODULE) || { \
	  echo "installing softhsm2 (PKCS#11 module for the dev and test tokens)"; \
	  $(SUDO) apt-get update -qq && $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq softhsm2; }

opencryptoki:
	@test -e $(OPENCRYPTOKI_MODULE) || { \
	  echo "installing opencryptoki (the second PKCS#11 implementation the tests run against)"; \
	  $(SUDO) apt-get update -qq && $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq opencryptoki; }

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis run .test-output
