package e2e

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"

	"go.uber.org/goleak"

	"github.com/outposthq/outpost/internal/testpg"
)

func TestMain(m *testing.M) {
	code := m.Run()
	if reason := testpg.SkipReason(); reason != "" {
		noteSkip("PostgreSQL", reason)
	}
	reportSkips()
	if err := testpg.Stop(); err != nil {
		os.Stderr.WriteString(err.Error() + "\n")
		if code == 0 {
			code = 1
		}
	}
	if binPath != "" {
		os.RemoveAll(filepath.Dir(binPath))
	}
	if code == 0 {
		if err := goleak.Find(); err != nil {
			os.Stderr.WriteString("goroutine leak: " + err.Error() + "\n")
			code = 1
		}
	}
	os.Exit(code)
}

// skipped holds, by suite, why this run skipped it for want of a tool or a
// privilege.
var skipped = struct {
	sync.Mutex
	bySuite map[string]string // guarded
}{bySuite: map[string]string{}}

// skipSuite skips t because the suite cannot run on this machine, and
// remembers why (what to install), for reportSkips.
func skipSuite(t *testing.T, suite, reason string) {
	t.Helper()
	noteSkip(suite, reason)
	t.Skipf("%s suite: %s", suite, reason)
}

func noteSkip(suite, reason string) {
	skipped.Lock()
	defer skipped.Unlock()
	if _, ok := skipped.bySuite[suite]; !ok {
		skipped.bySuite[suite] = reason
	}
}

// skipReportEnv names a file that reportSkips writes its lines to: go
// test shows what a passing package prints only with -v, so make test sets
// it and prints the file.
const skipReportEnv = "OUTPOST_SKIP_REPORT"

// reportSkips writes one line per skipped suite, saying what to install,
// to stderr and, when $OUTPOST_SKIP_REPORT is set, to that file (replacing
// it: the lines of this run, none when nothing was skipped).
func reportSkips() {
	skipped.Lock()
	var lines []string
	for suite, reason := range skipped.bySuite {
		lines = append(lines, fmt.Sprintf("e2e: skipped the %s suite: %s\n", suite, reason))
	}
	skipped.Unlock()
	slices.Sort(lines)
	report := strings.Join(lines, "")
	os.Stderr.WriteString(report)
	if path := os.Getenv(skipReportEnv); path != "" {
		if err := os.WriteFile(path, []byte(report), 0o644); err != nil {
			fmt.Fprintf(os.Stderr, "e2e: %s: %v\n", skipReportEnv, err)
		}
	}
}
