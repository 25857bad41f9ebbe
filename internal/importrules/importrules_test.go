package importrules

import (
	"bufio"
	"bytes"
	"os/exec"
	"strings"
	"testing"
)

const module = "github.com/outposthq/outpost"

// goList runs `go list` with args in the module root and returns its output lines.
func goList(t *testing.T, args ...string) []string {
	t.Helper()
	cmd := exec.Command("go", append([]string{"list"}, args...)...)
	cmd.Dir = "../.."
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("go list %v: %v\n%s", args, err, stderr.String())
	}
	var lines []string
	sc := bufio.NewScanner(bytes.NewReader(out))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		if l := strings.TrimSpace(sc.Text()); l != "" {
			lines = append(lines, l)
		}
	}
	return lines
}

func within(pkg, root string) bool {
	return pkg == root || strings.HasPrefix(pkg, root+"/")
}

// rule returns a non-empty reason when pkg may not import imp.
func rule(pkg, imp string, std map[string]bool) string {
	var (
		dataplane = module + "/dataplane"
		server    = module + "/server"
		agent     = module + "/agent"
		cmd       = module + "/cmd"
	)
	switch {
	case pkg == dataplane:
		if !std[imp] {
			return "the wire codec imports only the standard library"
		}
	case within(pkg, dataplane):
		// internal/testtls is a test helper built on the standard library
		// alone; only tests import it.
		if !std[imp] && !within(imp, dataplane) && !within(imp, "github.com/quic-go/quic-go") && imp != module+"/internal/testtls" {
			return "dataplane imports only the standard library and quic-go"
		}
	case within(pkg, server) && within(imp, agent):
		return "server never imports agent"
	case within(pkg, agent) && within(imp, server):
		return "agent never imports server"
	}
	if within(imp, cmd) {
		return "nothing imports cmd"
	}
	return ""
}

func TestImportRules(t *testing.T) {
	std := map[string]bool{}
	for _, p := range goList(t, "std") {
		std[p] = true
	}
	if !std["net/netip"] {
		t.Fatal("go list std returned no standard library (net/netip missing)")
	}
	lines := goList(t, "-f", `{{.ImportPath}} {{join .Imports " "}} {{join .TestImports " "}} {{join .XTestImports " "}}`, module+"/...")
	checked := 0
	for _, l := range lines {
		f := strings.Fields(l)
		pkg, imports := f[0], f[1:]
		for _, imp := range imports {
			// A package's own external test imports the package itself.
			if imp == pkg {
				continue
			}
			checked++
			if why := rule(pkg, imp, std); why != "" {
				t.Errorf("%s imports %s: %s", pkg, imp, why)
			}
		}
	}
	if checked == 0 {
		t.Fatal("no imports checked: go list found no packages")
	}
}

func TestRuleCatchesViolations(t *testing.T) {
	std := map[string]bool{"fmt": true}
	bad := [][2]string{
		{module + "/dataplane", "github.com/quic-go/quic-go"},
		{module + "/dataplane/proxy", module + "/server/internal/store"},
		{module + "/server/internal/tunnel", module + "/agent"},
		{module + "/agent/internal/session", module + "/server"},
		{module + "/server", module + "/cmd/outpost"},
	}
	for _, c := range bad {
		if rule(c[0], c[1], std) == "" {
			t.Errorf("rule(%s, %s) allowed a forbidden import", c[0], c[1])
		}
	}
	good := [][2]string{
		{module + "/dataplane", "fmt"},
		{module + "/dataplane/proxy", "github.com/quic-go/quic-go"},
		{module + "/dataplane/proxy", module + "/dataplane"},
		{module + "/server/internal/tunnel", module + "/dataplane"},
		{module + "/cmd/outpost", module + "/server"},
	}
	for _, c := range good {
		if why := rule(c[0], c[1], std); why != "" {
			t.Errorf("rule(%s, %s) refused an allowed import: %s", c[0], c[1], why)
		}
	}
}
