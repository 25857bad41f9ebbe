package e2e

import (
	"os"
	"path/filepath"
	"testing"

	"go.uber.org/goleak"

	"github.com/outposthq/outpost/internal/testpg"
)

func TestMain(m *testing.M) {
	code := m.Run()
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
