package main

import (
	"bytes"
	"context"
	"os"
	"reflect"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/outposthq/outpost/agent"
	"github.com/outposthq/outpost/server"
)

// docRow is one row of a table in docs/configuration.md.
type docRow struct {
	jsonKey string   // "" for none
	flags   []string // without the dashes
	def     string   // the first `code` of the Default cell; "" if none
}

var backticked = regexp.MustCompile("`([^`]*)`")

// readConfigDoc returns the table rows of docs/configuration.md by "## "
// section title.
func readConfigDoc(t *testing.T) map[string][]docRow {
	t.Helper()
	b, err := os.ReadFile("../../docs/configuration.md")
	if err != nil {
		t.Fatal(err)
	}
	rows := map[string][]docRow{}
	var section string
	for _, line := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(line, "## ") {
			section = strings.TrimPrefix(line, "## ")
			continue
		}
		if !strings.HasPrefix(line, "| ") || strings.HasPrefix(line, "| JSON key") {
			continue
		}
		cells := strings.Split(strings.Trim(line, "|"), "|")
		if len(cells) != 5 {
			t.Fatalf("docs/configuration.md: a row with %d cells, want 5: %s", len(cells), line)
		}
		var r docRow
		if m := backticked.FindStringSubmatch(cells[0]); m != nil {
			r.jsonKey = m[1]
		}
		for _, m := range backticked.FindAllStringSubmatch(cells[1], -1) {
			r.flags = append(r.flags, strings.TrimPrefix(m[1], "--"))
		}
		if m := backticked.FindStringSubmatch(cells[2]); m != nil {
			r.def = m[1]
		}
		if r.jsonKey == "" && len(r.flags) == 0 {
			t.Fatalf("docs/configuration.md: a row with neither a JSON key nor a flag: %s", line)
		}
		rows[section] = append(rows[section], r)
	}
	return rows
}

// jsonKeys lists the JSON keys of a config struct.
func jsonKeys(v any) []string {
	var keys []string
	rt := reflect.TypeOf(v)
	for i := range rt.NumField() {
		f := rt.Field(i)
		name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
		if !f.IsExported() || name == "-" || name == "" {
			continue
		}
		keys = append(keys, name)
	}
	return keys
}

// helpFlags runs "outpost <args> -h" and returns each flag with the
// default the flag package printed for it ("" when none).
func helpFlags(t *testing.T, args ...string) map[string]string {
	t.Helper()
	var out, errOut bytes.Buffer
	if err := run(context.Background(), append(args, "-h"), strings.NewReader(""), &out, &errOut); err != nil {
		t.Fatalf("outpost %v -h: %v", args, err)
	}
	flags := map[string]string{}
	var name string
	for _, line := range strings.Split(out.String(), "\n") {
		if strings.HasPrefix(line, "  -") {
			name = strings.TrimPrefix(strings.Fields(line)[0], "-")
			flags[name] = ""
			continue
		}
		if name != "" && strings.HasSuffix(line, ")") {
			if i := strings.LastIndex(line, "(default "); i >= 0 {
				flags[name] = strings.TrimSuffix(line[i+len("(default "):], ")")
			}
		}
	}
	delete(flags, "version") // every command has it; not a setting
	return flags
}

// sameDefault reports whether the doc's default is the one the flag
// package printed. Only what the flag package prints is compared: a quoted
// string, a number or a duration; a default written in the usage text
// ("default: none") is not.
func sameDefault(doc, printed string) (same, comparable bool) {
	if s, err := strconv.Unquote(printed); err == nil {
		return s == doc, true
	}
	if p, err := time.ParseDuration(printed); err == nil {
		d, err := time.ParseDuration(doc)
		return err == nil && d == p, true
	}
	if p, err := strconv.ParseFloat(printed, 64); err == nil {
		d, err := strconv.ParseFloat(doc, 64)
		return err == nil && d == p, true
	}
	return false, false
}

// checkSection compares a section's rows with the JSON keys and flags the
// code has.
func checkSection(t *testing.T, section string, rows []docRow, keys []string, flags map[string]string) {
	t.Helper()
	if len(rows) == 0 {
		t.Fatalf("docs/configuration.md has no rows under %q", section)
	}
	var docKeys []string
	docFlags := map[string]bool{}
	for _, r := range rows {
		if r.jsonKey != "" {
			docKeys = append(docKeys, r.jsonKey)
		}
		for _, f := range r.flags {
			docFlags[f] = true
			printed, ok := flags[f]
			if !ok {
				t.Errorf("%s: the row for --%s names a flag that does not exist", section, f)
				continue
			}
			if same, comparable := sameDefault(r.def, printed); comparable && !same {
				t.Errorf("%s: --%s defaults to %s, the row says %q", section, f, printed, r.def)
			}
		}
	}
	for _, k := range keys {
		if !slices.Contains(docKeys, k) {
			t.Errorf("%s: JSON key %q has no row", section, k)
		}
	}
	for _, k := range docKeys {
		if !slices.Contains(keys, k) {
			t.Errorf("%s: the row for JSON key %q names a key that does not exist", section, k)
		}
	}
	for f := range flags {
		if !docFlags[f] {
			t.Errorf("%s: flag --%s has no row", section, f)
		}
	}
}

// docs/configuration.md lists every gateway and agent setting, and only
// those, with the defaults the flags have.
func TestConfigurationReference(t *testing.T) {
	doc := readConfigDoc(t)
	checkSection(t, "Gateway", doc["Gateway (`outpost gateway`)"], jsonKeys(server.Config{}), helpFlags(t, "gateway"))

	agentFlags := map[string]string{}
	for _, cmd := range []string{"enroll", "run", "up"} {
		for f, def := range helpFlags(t, "agent", cmd) {
			if prev, ok := agentFlags[f]; ok && prev != def {
				t.Errorf("agent: --%s defaults to %q in one command and %q in another", f, prev, def)
			}
			agentFlags[f] = def
		}
	}
	checkSection(t, "Agent", doc["Agent"], jsonKeys(agent.TunnelConfig{}), agentFlags)
}
