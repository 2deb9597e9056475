# shardgate: run `make help` for the targets.
GO       ?= go
VERSION  ?= $(shell git describe --always --dirty 2>/dev/null || echo dev)
LDFLAGS  := -s -w -X github.com/shardgate/shardgate/internal/version.Version=$(VERSION)
IMAGE    ?= shardgate:dev
# Packages with shared state, run again under the race detector.
RACE_PKGS := ./pkg/ring/... ./pkg/session/... ./pkg/link/... ./pkg/membership/... \
             ./pkg/protocols/... ./pkg/app/... ./pkg/gateway/... ./pkg/worker/...

.PHONY: help build run test fuzz image k8s-validate compose-test bench bench-quick clean

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-14s %s\n", $$1, $$2}'

build: ## write static binaries to bin/gateway and bin/worker
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o bin/gateway ./cmd/gateway
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o bin/worker ./cmd/worker

run: build ## start 1 gateway and 2 workers on loopback until Ctrl-C
	bash scripts/run-local.sh

test: ## vet, unit and integration tests, race tests (interop tests skip when peers are missing)
	$(GO) vet ./...
	$(GO) test -count=1 -timeout 20m ./...
	$(GO) test -count=1 -race -short -timeout 20m $(RACE_PKGS)

fuzz: ## run each fuzz target for FUZZTIME (default 20s)
	bash scripts/fuzz.sh $${FUZZTIME:-20s}

image: build ## build the FROM-scratch image $(IMAGE)
	docker build -t $(IMAGE) .

k8s-validate: ## dry-run the Kubernetes overlays against a real API server
	bash deploy/k8s/validate.sh

compose-test: image ## run the 2-gateway compose cluster under Docker and scale it
	SHARDGATE_COMPOSE_TEST=1 $(GO) test -count=1 -v -timeout 10m ./test/compose/

bench: build ## run the side-by-side benchmark, results in bench/RESULTS.md
	bash bench/run.sh

bench-quick: build ## a short smoke run of the benchmark (report in its work folder)
	bash bench/run.sh --quick

clean: ## remove build output
	rm -rf bin
