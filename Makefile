# Outpost build entry points. `make test` is what CI runs.
SHELL := /bin/bash
GO ?= go
PKGS := ./...
STATICCHECK := honnef.co/go/tools/cmd/staticcheck@v0.8.2
FUZZTIME ?= 3s
FUZZTIME_LONG ?= 2m

.PHONY: all build test vet staticcheck unit fuzz-smoke fuzz bench

all: build

build:
	$(GO) build -o bin/outpost ./cmd/outpost

vet:
	$(GO) vet $(PKGS)

staticcheck:
	$(GO) run $(STATICCHECK) $(PKGS)

unit:
	$(GO) test -race -shuffle=on -timeout 15m $(PKGS)

# Runs every Fuzz target in the module for FUZZTIME each.
fuzz-smoke:
	@./scripts/fuzz-all.sh $(FUZZTIME)

# Longer fuzzing, for a developer's machine: make fuzz FUZZTIME_LONG=10m
fuzz:
	@./scripts/fuzz-all.sh $(FUZZTIME_LONG)

test: vet staticcheck unit fuzz-smoke

bench:
	$(GO) test -run '^$$' -bench . -benchmem $(PKGS)
