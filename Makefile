# Strata's build. `make help` lists the targets.
SHELL := /bin/bash
.DEFAULT_GOAL := help

STRATA_CACHE ?= $(HOME)/.cache/strata
TOOLS_BIN    := $(STRATA_CACHE)/bin
BENCH_OUT    ?= _out/bench.json
ONLY         ?=
VERSION      ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS      := -X github.com/strata-net/strata/internal/version.Version=$(VERSION)
# gotestsum (built by `make tools`) runs go test, shows each package and the
# output of failing tests, and keeps go test's JSON so `make test` can end with
# how many tests ran. GO_TEST="go test" works too.
TEST_OUT     := _out/test
GO_TEST      ?= $(TOOLS_BIN)/gotestsum --format pkgname-and-test-fails --jsonfile $(TEST_OUT)/$@.json --
# Tests that need the built tools find them here (envtest reads KUBEBUILDER_ASSETS).
export KUBEBUILDER_ASSETS := $(TOOLS_BIN)
export STRATA_TOOLS_BIN   := $(TOOLS_BIN)
export PATH               := $(TOOLS_BIN):$(PATH)
export CGO_ENABLED        := 0
# The lab and e2e tests run the binaries `make build` puts here.
export STRATA_BIN         := $(CURDIR)/_out/bin

BINARIES := strata strata-agent strata-cni

.PHONY: help
help: ## Show this help
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z_-]+:.*## / { printf "  \033[36m%-18s\033[0m %s\n", $$1, $$2 }' $(MAKEFILE_LIST)

.PHONY: build
build: ## Build strata, strata-agent and strata-cni into _out/bin (no cgo)
	@mkdir -p _out/bin
	go build -trimpath -ldflags '$(LDFLAGS)' -o _out/bin/ $(addprefix ./cmd/,$(BINARIES))

.PHONY: deps
deps: ## Install the Debian packages tests and the lab need (idempotent)
	@hack/install-deps.sh

.PHONY: tools
tools: ## Build kube-apiserver, kubectl, etcd, cnitool and helm into $(STRATA_CACHE) (cached; make lint adds golangci-lint)
	@hack/build-tools.sh

.PHONY: test
test: deps tools build ## Run every test: unit, privileged, integration, e2e; then check nothing is left behind
	@echo "==> sweep leftovers of earlier crashed runs"
	@go run ./tests/cmd/strata-sweep
	@rm -rf $(TEST_OUT) && mkdir -p $(TEST_OUT)
	$(MAKE) --no-print-directory test-unit test-privileged test-integration test-e2e
	@echo "==> check nothing is left behind"
	@go run ./tests/cmd/strata-sweep --check
	@hack/test-summary.sh $(TEST_OUT)

.PHONY: test-unit
test-unit: ## Unit tests and fuzz seeds: pure logic, no root needed
	@mkdir -p $(TEST_OUT)
	$(GO_TEST) -count=1 ./...

.PHONY: test-privileged
test-privileged: ## Netlink, VXLAN, policy routing and eBPF tests in throw-away namespaces (root)
	@mkdir -p $(TEST_OUT)
	$(GO_TEST) -count=1 -tags privileged -run 'Privileged' ./...

.PHONY: test-integration
test-integration: ## Tests against real kube-apiserver+etcd, BIRD, FRR, cnitool and the ECS emulator (root)
	@mkdir -p $(TEST_OUT)
	$(GO_TEST) -count=1 -tags integration -run 'Integration' ./...

.PHONY: lab-bins
lab-bins: ## Build the lab's own binaries: strata-lab and the ECS emulator
	go build -trimpath -o _out/bin/ ./tests/lab/cmd/strata-lab ./tests/ecsemu/cmd/strata-ecs-emulator

.PHONY: test-e2e
test-e2e: lab-bins ## End-to-end tests on the lab (root)
	@mkdir -p $(TEST_OUT)
	$(GO_TEST) -count=1 -tags e2e -run 'E2E' -timeout 30m ./tests/...

.PHONY: lab
lab: deps tools build lab-bins ## Bring up the whole mixed cluster in namespaces and print its connectivity matrix
	_out/bin/strata-lab up $(if $(LAB),--spec $(LAB))
	_out/bin/strata-lab matrix $(if $(LAB),--spec $(LAB))
	@echo "the lab stays up: _out/bin/strata-lab {status,matrix,fail,heal,down}"

.PHONY: bench
bench: deps tools build ## Run every benchmark beside its same-run baseline; ONLY=<prefix> for one area
	go run ./tests/bench/cmd/strata-bench -out $(BENCH_OUT) $(if $(ONLY),-only $(ONLY))

.PHONY: lint
lint: ## gofmt, go vet and golangci-lint v2
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	go vet ./...
	go vet -tags privileged ./...
	go vet -tags integration ./...
	go vet -tags e2e ./...
	@[ -x $(TOOLS_BIN)/golangci-lint ] || hack/build-tools.sh --lint
	$(TOOLS_BIN)/golangci-lint run --build-tags privileged,integration,e2e ./...

.PHONY: generate
generate: ## Rebuild generated code (bpf2go objects; needs clang, installed here)
	@hack/install-deps.sh --bpf
	go generate ./...

.PHONY: sweep
sweep: ## Remove namespaces and processes left by crashed tests or labs
	go run ./tests/cmd/strata-sweep

.PHONY: clean
clean: ## Remove build output (the tools cache in $(STRATA_CACHE) stays)
	rm -rf _out
