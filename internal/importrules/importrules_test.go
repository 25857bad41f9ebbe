package importrules

import (
	"bufio"
	"bytes"
	"os/exec"
	"slices"
	"strings"
	"testing"
)

const module = "github.com/outposthq/outpost"

// Module roots the rules speak of.
const (
	dataplane = module + "/dataplane"
	reach     = module + "/reach"
	client    = module + "/client"
	wsstream  = module + "/client/wsstream"
	muxstream = module + "/client/muxstream"
	server    = module + "/server"
	agent     = module + "/agent"
	cmd       = module + "/cmd"
	e2e       = module + "/e2e"
	bench     = module + "/bench"
	internal  = module + "/internal"
	gen       = module + "/gen"
)

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

// leafInternal reports whether pkg is one of the leaf helpers or test kits
// under internal/ (importrules itself included).
func leafInternal(pkg string) bool { return within(pkg, internal) }

// testKit reports whether imp is a leaf test kit any package's tests may use.
func testKit(imp string) bool { return leafInternal(imp) }

// rule returns a non-empty reason when pkg may not import imp. std holds
// the standard library's import paths.
func rule(pkg, imp string, std map[string]bool) string {
	own := within(imp, module)
	switch {
	case pkg == dataplane:
		if !std[imp] && !testKit(imp) {
			return "the wire codec imports only the standard library"
		}
	case within(pkg, dataplane):
		if !std[imp] && !within(imp, dataplane) && !within(imp, "github.com/quic-go/quic-go") && !testKit(imp) {
			return "dataplane imports only the standard library and quic-go"
		}
	case within(pkg, reach):
		if !std[imp] && imp != dataplane && !within(imp, reach) && !testKit(imp) {
			return "reach imports only the standard library and the wire codec"
		}
	case within(pkg, wsstream):
		if !std[imp] && !within(imp, "github.com/coder/websocket") && !testKit(imp) {
			return "the client wire format imports only the standard library and the WebSocket library"
		}
	case within(pkg, muxstream):
		if !std[imp] && !within(imp, "github.com/hashicorp/yamux") && !testKit(imp) {
			return "the standing connection's wire format imports only the standard library and yamux"
		}
	case leafInternal(pkg):
		if own {
			return "leaf internal packages import no other package of the module"
		}
	case within(pkg, server):
		switch {
		case within(imp, agent):
			return "server never imports agent"
		case within(imp, client) && !within(imp, wsstream) && !within(imp, muxstream):
			return "server never imports the client library (only its wire formats)"
		}
	case within(pkg, agent):
		switch {
		case within(imp, server):
			return "agent never imports server"
		case within(imp, client):
			return "agent never imports client"
		}
	case within(pkg, client):
		if within(imp, server) || within(imp, agent) {
			return "client never imports server or agent"
		}
	}
	for _, root := range []string{cmd, e2e, bench} {
		if within(imp, root) && !within(pkg, root) {
			return "nothing outside " + strings.TrimPrefix(root, module+"/") + "/ imports it"
		}
	}
	return ""
}

// composesBoth reports whether pkg may import both server and agent.
func composesBoth(pkg string) bool {
	return within(pkg, cmd) || within(pkg, e2e) || within(pkg, bench)
}

// checkGraph applies rule to every edge of graph (package → its imports,
// tests' imports included) and the "only cmd imports both server and agent"
// rule to every package, and returns one message per violation.
func checkGraph(graph map[string][]string, std map[string]bool) (violations []string, checked int) {
	pkgs := make([]string, 0, len(graph))
	for p := range graph {
		pkgs = append(pkgs, p)
	}
	slices.Sort(pkgs)
	for _, pkg := range pkgs {
		var server, agentSide bool
		for _, imp := range graph[pkg] {
			if imp == pkg { // a package's external test imports the package itself
				continue
			}
			checked++
			if why := rule(pkg, imp, std); why != "" {
				violations = append(violations, pkg+" imports "+imp+": "+why)
			}
			server = server || within(imp, module+"/server")
			agentSide = agentSide || within(imp, module+"/agent")
		}
		if server && agentSide && !composesBoth(pkg) {
			violations = append(violations, pkg+" imports both server and agent: only cmd/ (and e2e/, bench/) may")
		}
	}
	return violations, checked
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
	graph := map[string][]string{}
	for _, l := range lines {
		f := strings.Fields(l)
		graph[f[0]] = f[1:]
	}
	violations, checked := checkGraph(graph, std)
	for _, v := range violations {
		t.Error(v)
	}
	if checked == 0 {
		t.Fatal("no imports checked: go list found no packages")
	}
}

// The rules refuse every kind of forbidden edge on a synthetic package graph
// and accept the allowed ones, so a rule that stopped matching would fail here.
func TestRulesCatchViolations(t *testing.T) {
	std := map[string]bool{"fmt": true, "net/netip": true}
	bad := map[string][]string{
		dataplane:                            {"github.com/quic-go/quic-go"},
		dataplane + "/relay":                 {server + "/internal/store"},
		reach:                                {"github.com/quic-go/quic-go"},
		reach + "/x":                         {dataplane + "/transport"},
		wsstream:                             {dataplane + "/relay"},
		muxstream:                            {wsstream},
		muxstream + "/x":                     {"github.com/coder/websocket"},
		internal + "/atomicfile":             {dataplane},
		internal + "/testlog":                {internal + "/fakeclock"},
		server + "/internal/tunnel":          {agent},
		server + "/internal/broker":          {client},
		agent + "/internal/session":          {server},
		agent + "/internal/tunnel":           {client + "/wsstream"},
		client:                               {server + "/apiclient"},
		server:                               {cmd + "/outpost"},
		server + "/internal/x":               {e2e},
		agent + "/y":                         {bench + "/internal/proc"},
		module + "/tools/both":               {server, agent},
		module + "/client/composer/anything": {server},
	}
	violations, _ := checkGraph(bad, std)
	for pkg, imps := range bad {
		found := false
		for _, v := range violations {
			if strings.HasPrefix(v, pkg+" imports ") {
				found = true
			}
		}
		if !found {
			t.Errorf("the rules allowed %s → %v", pkg, imps)
		}
	}
	good := map[string][]string{
		dataplane:                    {"fmt", internal + "/testtls"},
		dataplane + "/relay":         {"github.com/quic-go/quic-go", dataplane},
		reach:                        {"net/netip", dataplane},
		wsstream:                     {"fmt", "github.com/coder/websocket"},
		muxstream:                    {"fmt", "github.com/hashicorp/yamux", internal + "/fuzzcorpus"},
		internal + "/atomicfile":     {"fmt"},
		server + "/internal/tunnel":  {dataplane, reach},
		server + "/internal/entry":   {wsstream, muxstream},
		agent + "/internal/session":  {reach, dataplane + "/relay"},
		client:                       {wsstream, muxstream, dataplane + "/relay"},
		cmd + "/outpost":             {server, agent, client, cmd + "/outpost/internal/devenv"},
		cmd + "/outpost/internal/dv": {server, agent},
		e2e:                          {server, agent, server + "/servertest"},
		bench + "/tunnel":            {server, agent, bench + "/internal/proc"},
		gen + "/outpost/v1":          {"fmt"},
	}
	if violations, _ := checkGraph(good, std); len(violations) > 0 {
		t.Errorf("the rules refused allowed imports:\n%s", strings.Join(violations, "\n"))
	}
}
