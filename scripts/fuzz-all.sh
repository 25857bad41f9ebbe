#!/usr/bin/env bash
# Runs each `go test -fuzz` target of the module for the given budget: a
# duration ("2m") or a count of executions ("20000x", the default).
# Fuzzing takes one target at a time, so the targets run one after another.
#
# CI uses a count: with a duration, Go's fuzz coordinator (up to Go 1.26)
# can report the end of -fuzztime as a failure, "context deadline exceeded",
# with no failing input, when a loaded machine delays a worker at the
# deadline (go.dev/issue/75804). A count has no deadline to race.
set -euo pipefail
fuzztime="${1:-20000x}"
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
