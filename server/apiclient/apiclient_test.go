package apiclient

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// ReadKeyFile takes a key alone on a line and says what a wrong file holds.
func TestReadKeyFile(t *testing.T) {
	dir := t.TempDir()
	for _, tc := range []struct {
		name, content, want, err string
	}{
		{"key", "opk_abc123\n", "opk_abc123", ""},
		{"spaces around", "  opk_abc123 \r\n", "opk_abc123", ""},
		{"empty", "\n", "", "is empty"},
		{"certificate", "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n", "", "holds a PEM block"},
		{"two lines", "opk_a\nopk_b\n", "", "several lines"},
		{"a space inside", "opk a", "", "cannot have"},
		{"binary", "opk\x00a", "", "cannot have"},
	} {
		p := filepath.Join(dir, strings.ReplaceAll(tc.name, " ", "-"))
		if err := os.WriteFile(p, []byte(tc.content), 0o600); err != nil {
			t.Fatal(err)
		}
		got, err := ReadKeyFile(p)
		if got != tc.want || (tc.err == "") != (err == nil) || err != nil && !strings.Contains(err.Error(), tc.err) {
			t.Errorf("%s: %q, %v; want %q, an error with %q", tc.name, got, err, tc.want, tc.err)
		}
	}
	if _, err := ReadKeyFile(filepath.Join(dir, "missing")); err == nil {
		t.Error("a missing file was read")
	}
}
