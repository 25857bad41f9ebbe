#!/usr/bin/env bash
# Runs each `go test -fuzz` target of the module for the given time (default 3s).
# Fuzzing takes one target at a time, so the targets run one after another.
set -euo pipefail
fuzztime="${1:-3s}"
cd "$(dirname "$0")/.."
found=0
for pkg in $(go list ./...); do
	for target in $(go test -list '^Fuzz' "$pkg" | grep '^Fuzz' || true); do
		found=$((found + 1))
		echo "fuzz: $pkg $target for $fuzztime"
		go test -run '^$' -fuzz "^${target}\$" -fuzztime "$fuzztime" "$pkg"
	done
done
echo "fuzz: $found targets fuzzed"
