// Package testlog sends the logs of the code under test to the test's own
// log (shown with -v or when the test fails) and keeps them for assertions.
package testlog

import (
	"strings"
	"sync"
	"testing"

	"github.com/hashicorp/go-hclog"
)

// Writer forwards each write, one log line, to tb.Log and keeps it. It is
// safe for concurrent use.
type Writer struct {
	tb testing.TB
	mu sync.Mutex
	b  strings.Builder
}

// New returns a Writer for tb.
func New(tb testing.TB) *Writer { return &Writer{tb: tb} }

func (w *Writer) Write(p []byte) (int, error) {
	w.tb.Helper()
	w.tb.Log(strings.TrimRight(string(p), "\n"))
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.b.Write(p)
}

// String returns everything written since New or the last Reset.
func (w *Writer) String() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.b.String()
}

// Contains reports whether s was written since New or the last Reset.
func (w *Writer) Contains(s string) bool { return strings.Contains(w.String(), s) }

// Reset forgets what was written.
func (w *Writer) Reset() {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.b.Reset()
}

// Logger returns a debug-level logger named name that writes to tb's log.
func Logger(tb testing.TB, name string) hclog.Logger {
	return hclog.New(&hclog.LoggerOptions{Name: name, Level: hclog.Debug, Output: New(tb)})
}
