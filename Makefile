# The two commands: `make up` (the whole suite locally) and `make test`.
SHELL := /bin/bash
BUF := .oms/tools/node_modules/.bin/buf

.PHONY: up down test lint fmt deps tools bench k8s-check certs

up: ## build and run all eight services with Postgres and Redis (TLS=1: over mutual TLS)
	@bash scripts/up.sh

certs: ## a local CA and certificates under .oms/tls, for `make up TLS=1`
	@bash scripts/dev-certs.sh

down: ## stop what `make up` started
	@bash scripts/down.sh

deps: ## make sure Postgres and Redis run (start or install them)
	@bash scripts/ensure-deps.sh

tools:
	@bash scripts/ensure-tools.sh

test: deps ## unit, integration and end-to-end tests against real Postgres and Redis
	cargo test --workspace --all-targets

lint: tools ## rustfmt, clippy (warnings are errors), buf lint, alert rules and dashboard against the code's metrics
	cargo fmt --all -- --check
	cargo clippy --workspace --all-targets -- -D warnings
	$(BUF) lint
	@bash scripts/monitoring-check.sh

fmt:
	cargo fmt --all

bench: deps ## benchmarks beside the raw baselines, measured in the same run
	@bash scripts/bench.sh

k8s-check: ## render and validate the Kubernetes manifests
	@bash scripts/k8s-check.sh
