package main

import (
	"bytes"
	"context"
	"strings"
	"testing"
)

// commandPaths lists every command of the tree, by its words.
func commandPaths(c *command, path []string) [][]string {
	var out [][]string
	if len(path) > 0 {
		out = append(out, path)
	}
	for _, sc := range c.subs {
		out = append(out, commandPaths(sc, append(append([]string{}, path...), sc.name))...)
	}
	return out
}

// Every command and subcommand answers -h, --help, help (after it and
// before it) with its usage on stdout and no error (exit 0), and --version
// with the version.
func TestEveryCommandAnswersHelpAndVersion(t *testing.T) {
	paths := commandPaths(commands(), nil)
	if len(paths) < 20 {
		t.Fatalf("only %d commands found", len(paths))
	}
	for _, path := range paths {
		name := strings.Join(path, " ")
		c := commands()
		for _, w := range path {
			c = c.sub(w)
		}
		for _, args := range [][]string{
			append(append([]string{}, path...), "-h"),
			append(append([]string{}, path...), "--help"),
			append(append([]string{}, path...), "help"),
			append([]string{"help"}, path...),
		} {
			var out, errOut bytes.Buffer
			err := run(context.Background(), args, strings.NewReader(""), &out, &errOut)
			if err != nil || errOut.Len() != 0 || !strings.Contains(out.String(), "Usage: outpost") {
				t.Errorf("outpost %s: %v\nstdout:\n%s\nstderr:\n%s", strings.Join(args, " "), err, out.String(), errOut.String())
				continue
			}
			for _, sc := range c.subs {
				if !strings.Contains(out.String(), "  "+sc.name+" ") {
					t.Errorf("outpost %s does not list %q:\n%s", strings.Join(args, " "), sc.name, out.String())
				}
			}
			if c.run != nil && !strings.Contains(out.String(), "-version") {
				t.Errorf("outpost %s does not show -version:\n%s", strings.Join(args, " "), out.String())
			}
			// Floats print as people write them.
			if strings.Contains(out.String(), "333333") {
				t.Errorf("outpost %s prints a float in full:\n%s", strings.Join(args, " "), out.String())
			}
		}
		var out, errOut bytes.Buffer
		if err := run(context.Background(), append(append([]string{}, path...), "--version"), strings.NewReader(""), &out, &errOut); err != nil ||
			!strings.HasPrefix(out.String(), "outpost ") || !strings.Contains(out.String(), "protocol   1 (ALPN gw-agent-tunnel/1)") {
			t.Errorf("outpost %s --version: %v\n%s%s", name, err, out.String(), errOut.String())
		}
	}
	// And the root itself.
	for _, args := range [][]string{{"-h"}, {"--help"}, {"help"}} {
		var out, errOut bytes.Buffer
		if err := run(context.Background(), args, strings.NewReader(""), &out, &errOut); err != nil || !strings.Contains(out.String(), "outpost gateway [flags]") {
			t.Errorf("outpost %s: %v\n%s", args[0], err, out.String())
		}
	}
}

// --version after other flags, and "outpost version" alone or as JSON.
func TestVersion(t *testing.T) {
	for _, args := range [][]string{{"version"}, {"--version"}, {"agent", "run", "--config-dir", t.TempDir(), "--version"}, {"session", "create", "--version"}} {
		var out, errOut bytes.Buffer
		err := run(context.Background(), args, strings.NewReader(""), &out, &errOut)
		for _, want := range []string{"outpost ", "module     github.com/outposthq/outpost", "go         go1.", "protocol   1 (ALPN gw-agent-tunnel/1)"} {
			if err != nil || !strings.Contains(out.String(), want) {
				t.Errorf("outpost %s: %v, output lacks %q:\n%s", strings.Join(args, " "), err, want, out.String())
			}
		}
	}
	var out, errOut bytes.Buffer
	if err := run(context.Background(), []string{"version", "--json"}, strings.NewReader(""), &out, &errOut); err != nil ||
		!strings.Contains(out.String(), `"alpn": "gw-agent-tunnel/1"`) || !strings.Contains(out.String(), `"protocol_version": 1`) {
		t.Errorf("version --json: %v\n%s", err, out.String())
	}
}

// Unknown commands and missing subcommands are usage errors that name
// them.
func TestUnknownSubcommands(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"agent"}, "agent needs a subcommand: enroll, run, up"},
		{[]string{"agent", "walk"}, `unknown command "agent walk"`},
		{[]string{"gateway", "apikey"}, "gateway apikey needs a subcommand: create, list, revoke"},
		{[]string{"gateway", "token", "mint"}, `unknown command "gateway token mint"`},
		{[]string{"help", "gateway", "nothing"}, `unknown command "gateway nothing"`},
	} {
		var out, errOut bytes.Buffer
		err := run(context.Background(), tc.args, strings.NewReader(""), &out, &errOut)
		if err == nil || !strings.Contains(err.Error(), tc.want) || !strings.Contains(errOut.String(), "Usage:") {
			t.Errorf("outpost %s: %v, want a usage error with %q and the usage on stderr", strings.Join(tc.args, " "), err, tc.want)
		}
	}
}

// --renew-fraction takes a decimal or a ratio, and its default prints short.
func TestFractionFlag(t *testing.T) {
	for in, want := range map[string]string{"0.5": "0.5", "1/3": "0.333", " 2 / 3 ": "0.667", "0.25": "0.25"} {
		var f fractionFlag
		if err := f.Set(in); err != nil || f.String() != want {
			t.Errorf("Set(%q): %v, String %q, want %q", in, err, f.String(), want)
		}
	}
	for _, in := range []string{"", "a", "1/0", "1/x"} {
		var f fractionFlag
		if err := f.Set(in); err == nil {
			t.Errorf("Set(%q) succeeded", in)
		}
	}
}
