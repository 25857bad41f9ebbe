# Outpost build entry points. `make test` is what CI runs.
SHELL := /bin/bash
GO ?= go
PKGS := ./...
STATICCHECK := honnef.co/go/tools/cmd/staticcheck@v0.8.2
FUZZTIME ?= 20000x
FUZZTIME_LONG ?= 2m

.PHONY: all build build-static install demo test vet staticcheck unit unit-postgres fuzz-smoke fuzz bench

all: build

# What "outpost version" reports, stamped in at link time; a part left empty
# (no git) falls back to what the Go build info records.
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null)
COMMIT ?= $(shell git rev-parse HEAD 2>/dev/null)
BUILD_DATE ?= $(shell date -u +%Y-%m-%dT%H:%M:%SZ)
VERSION_LDFLAGS = -X main.version=$(VERSION) -X main.commit=$(COMMIT) -X main.buildDate=$(BUILD_DATE)

build:
	$(GO) build -ldflags "$(VERSION_LDFLAGS)" -o bin/outpost ./cmd/outpost

# bin/outpost-static: no cgo, no local paths, no symbols; what
# deploy/container/Containerfile copies into the image.
build-static:
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags "-s -w $(VERSION_LDFLAGS)" -o bin/outpost-static ./cmd/outpost

# Installs outpost into $(go env GOBIN), else $(go env GOPATH)/bin, and says
# how to put that on the PATH when it is not.
install:
	$(GO) install -ldflags "$(VERSION_LDFLAGS)" ./cmd/outpost
	@dir=$$($(GO) env GOBIN); [ -n "$$dir" ] || dir=$$($(GO) env GOPATH)/bin; \
	echo "installed $$dir/outpost"; \
	case ":$$PATH:" in *":$$dir:"*) ;; \
	*) echo "$$dir is not on your PATH; add it: export PATH=\"$$dir:\$$PATH\"";; esac

# A gateway, an enrolled agent and a sample target on loopback; prints what to
# try. Ctrl-C stops it with status 0 and removes what it wrote. It runs the
# built binary rather than "go run", which exits 1 when interrupted (and
# make would report "Error 1"); DEMO_FLAGS adds flags, e.g.
# DEMO_FLAGS="--listen 127.0.0.1:7272 --quic-listen 127.0.0.1:4434".
DEMO_FLAGS ?=
demo: build
	bin/outpost dev $(DEMO_FLAGS)

vet:
	$(GO) vet $(PKGS)

staticcheck:
	$(GO) run $(STATICCHECK) $(PKGS)

# The e2e suites that cannot run here (a missing tool, not root) are skipped;
# go test shows that only with -v, so the e2e tests write one line per
# skipped suite, with what to install, to SKIP_REPORT, printed after the run.
SKIP_REPORT = $(CURDIR)/bin/test-skips.txt
unit:
	@mkdir -p $(dir $(SKIP_REPORT))
	OUTPOST_SKIP_REPORT=$(SKIP_REPORT) $(GO) test -race -shuffle=on -timeout 15m $(PKGS); \
	rc=$$?; if [ -s $(SKIP_REPORT) ]; then cat $(SKIP_REPORT) >&2; fi; exit $$rc

# Runs every Fuzz target in the module for FUZZTIME each (a count of
# executions: see scripts/fuzz-all.sh).
fuzz-smoke:
	@./scripts/fuzz-all.sh $(FUZZTIME)

# Longer fuzzing, for a developer's machine: make fuzz FUZZTIME_LONG=10m
fuzz:
	@./scripts/fuzz-all.sh $(FUZZTIME_LONG)

# The gateway's own suites (the server package and the in-process e2e tests,
# not the network-namespace ones) again, each test's gateway on a PostgreSQL
# database of its own (internal/testpg starts the server).
unit-postgres:
	OUTPOST_TEST_STORE=postgres $(GO) test -shuffle=on -timeout 15m -skip Netns ./server/ ./e2e/

test: check-generated vet staticcheck unit unit-postgres fuzz-smoke

# The end-to-end benchmark report (bench/README.md): throughput, CPU per GB,
# session setup, memory, capacity and route lookups on loopback; prints one
# table and writes bench/RESULTS.md. About 3-5 minutes on 2 cores, bounded at 9.
bench:
	$(GO) run ./bench/tunnel

# Every Go benchmark in the module (go test -bench).
.PHONY: bench-micro
bench-micro:
	$(GO) test -run '^$$' -bench . -benchmem $(PKGS)

# ---------------------------------------------------------------------------
# Code generation for the management API (api/ → gen/).
#
# The generators are pinned Go programs installed into .cache/bin (git-ignored);
# nothing is fetched from the buf registry: buf.gen.yaml uses local plugins only,
# and google/api/{annotations,http}.proto are copied from the Go module cache
# into .cache/protos.
#
#   make tools            install the pinned generators (skipped when present)
#   make protodeps        copy the imported third-party .proto files
#   make generate         format, lint and regenerate gen/ from api/
#   make check-generated  fail if api/ or gen/ change when regenerated

CACHE_DIR := $(CURDIR)/.cache
TOOLS_BIN := $(CACHE_DIR)/bin
PROTO_DEPS := $(CACHE_DIR)/protos

BUF_VERSION := v1.75.0
PROTOC_GEN_GO_VERSION := v1.36.12
PROTOC_GEN_GO_GRPC_VERSION := v1.6.2
GRPC_GATEWAY_VERSION := v2.33.0
# Module that ships the google/api/{annotations,http}.proto sources.
GOOGLEAPIS_MODULE := github.com/grpc-ecosystem/grpc-gateway@v1.16.0

# One stamp per tool and version: bumping a version reinstalls that tool.
TOOL_STAMPS := \
	$(TOOLS_BIN)/.buf@$(BUF_VERSION) \
	$(TOOLS_BIN)/.protoc-gen-go@$(PROTOC_GEN_GO_VERSION) \
	$(TOOLS_BIN)/.protoc-gen-go-grpc@$(PROTOC_GEN_GO_GRPC_VERSION) \
	$(TOOLS_BIN)/.protoc-gen-grpc-gateway@$(GRPC_GATEWAY_VERSION) \
	$(TOOLS_BIN)/.protoc-gen-openapiv2@$(GRPC_GATEWAY_VERSION)

# Runs buf with the pinned plugins first on PATH.
BUF := PATH="$(TOOLS_BIN):$$PATH" $(TOOLS_BIN)/buf

.PHONY: tools protodeps generate check-generated

tools: $(TOOL_STAMPS)

$(TOOLS_BIN)/.buf@$(BUF_VERSION):
	GOBIN=$(TOOLS_BIN) $(GO) install github.com/bufbuild/buf/cmd/buf@$(BUF_VERSION)
	@touch $@

$(TOOLS_BIN)/.protoc-gen-go@$(PROTOC_GEN_GO_VERSION):
	GOBIN=$(TOOLS_BIN) $(GO) install google.golang.org/protobuf/cmd/protoc-gen-go@$(PROTOC_GEN_GO_VERSION)
	@touch $@

$(TOOLS_BIN)/.protoc-gen-go-grpc@$(PROTOC_GEN_GO_GRPC_VERSION):
	GOBIN=$(TOOLS_BIN) $(GO) install google.golang.org/grpc/cmd/protoc-gen-go-grpc@$(PROTOC_GEN_GO_GRPC_VERSION)
	@touch $@

$(TOOLS_BIN)/.protoc-gen-grpc-gateway@$(GRPC_GATEWAY_VERSION):
	GOBIN=$(TOOLS_BIN) $(GO) install github.com/grpc-ecosystem/grpc-gateway/v2/protoc-gen-grpc-gateway@$(GRPC_GATEWAY_VERSION)
	@touch $@

$(TOOLS_BIN)/.protoc-gen-openapiv2@$(GRPC_GATEWAY_VERSION):
	GOBIN=$(TOOLS_BIN) $(GO) install github.com/grpc-ecosystem/grpc-gateway/v2/protoc-gen-openapiv2@$(GRPC_GATEWAY_VERSION)
	@touch $@

# Copies google/api/{annotations,http}.proto out of the (read-only) Go module
# cache, so buf can resolve the google.api.http options without the registry.
protodeps:
	@dir=$$($(GO) mod download -json $(GOOGLEAPIS_MODULE) | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$$/\1/p'); \
	test -n "$$dir" || { echo "protodeps: cannot download $(GOOGLEAPIS_MODULE)" >&2; exit 1; }; \
	mkdir -p $(PROTO_DEPS)/google/api && \
	install -m 0644 $$dir/third_party/googleapis/google/api/annotations.proto \
		$$dir/third_party/googleapis/google/api/http.proto $(PROTO_DEPS)/google/api/

# gen/openapiv2/embed.go, written after buf generate (clean: true empties gen/).
define OPENAPI_EMBED_GO
// Code generated by make generate. DO NOT EDIT.

// Package openapiv2 holds the OpenAPI v2 document of the Outpost management
// API, generated from api/outpost/v1 by protoc-gen-openapiv2.
package openapiv2

import _ "embed"

// JSON is the OpenAPI v2 (Swagger 2.0) document describing the REST mapping
// of every Outpost service. Callers must not modify it.
//
//go:embed outpost.swagger.json
var JSON []byte
endef
export OPENAPI_EMBED_GO

generate: tools protodeps
	$(BUF) format -w api
	$(BUF) lint
	$(BUF) generate
	@printf '%s\n' "$$OPENAPI_EMBED_GO" > gen/openapiv2/embed.go
	$(GO) build ./gen/...

# Regenerates and fails if that changed anything under api/ or gen/: the
# committed code must be what the committed .proto files generate. Compares the
# working tree before and after, so it works before and after a commit.
check-generated:
	@snap=$$(mktemp -d) && trap 'rm -rf "$$snap"' EXIT && \
	cp -a api gen "$$snap"/ && \
	$(MAKE) --no-print-directory generate || exit 1; \
	if ! { diff -ru "$$snap/api" api && diff -ru "$$snap/gen" gen; } > "$$snap/diff"; then \
		echo "check-generated: api/ or gen/ changed when regenerated;" \
			"run 'make generate' and commit the result:" >&2; \
		git status --porcelain -- api gen >&2; \
		head -n 200 "$$snap/diff" >&2; \
		exit 1; \
	fi; \
	echo "check-generated: api/ and gen/ are up to date"
