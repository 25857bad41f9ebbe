package config

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestForeignKeysSurviveRewrite(t *testing.T) {
	dir := t.TempDir()
	orig := `{
  "Zeta": {"keep": [1, 2, 3], "nested": {"x": "y"}},
  "Tunnel": {"Enabled": false, "AgentName": "old"},
  "Alpha": "kept",
  "Listeners": [{"port": 8080}]
}`
	if err := os.WriteFile(filepath.Join(dir, FileName), []byte(orig), 0o600); err != nil {
		t.Fatal(err)
	}
	f, ok, err := Load(dir)
	if err != nil || !ok {
		t.Fatalf("Load: %v %v", ok, err)
	}
	if f.Tunnel.AgentName != "old" {
		t.Fatalf("tunnel %+v", f.Tunnel)
	}
	f.Tunnel.Enabled = true
	f.Tunnel.AgentName = "new"
	f.Tunnel.AdvertiseSubnets = []string{"10.0.0.0/24"}
	if err := f.Save(dir); err != nil {
		t.Fatal(err)
	}
	b, _ := os.ReadFile(filepath.Join(dir, FileName))
	var got map[string]any
	if err := json.Unmarshal(b, &got); err != nil {
		t.Fatalf("rewritten file is not JSON: %v\n%s", err, b)
	}
	var want map[string]any
	json.Unmarshal([]byte(orig), &want)
	for _, k := range []string{"Zeta", "Alpha", "Listeners"} {
		gb, _ := json.Marshal(got[k])
		wb, _ := json.Marshal(want[k])
		if string(gb) != string(wb) {
			t.Errorf("key %s changed: %s -> %s", k, wb, gb)
		}
	}
	if strings.Index(string(b), "Zeta") > strings.Index(string(b), "Alpha") {
		t.Error("foreign key order not kept")
	}
	tun := got["Tunnel"].(map[string]any)
	if tun["AgentName"] != "new" || tun["Enabled"] != true {
		t.Errorf("tunnel not updated: %v", tun)
	}
	fi, _ := os.Stat(filepath.Join(dir, FileName))
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("mode %v", fi.Mode().Perm())
	}
}

func TestLoadMissingAndBad(t *testing.T) {
	dir := t.TempDir()
	f, ok, err := Load(dir)
	if err != nil || ok || f == nil {
		t.Fatalf("missing file: %v %v %v", f, ok, err)
	}
	for name, body := range map[string]string{
		"not json":      `{"Tunnel": `,
		"array":         `[1,2]`,
		"unknown field": `{"Tunnel": {"Enabld": true}}`,
		"wrong type":    `{"Tunnel": {"Enabled": "yes"}}`,
	} {
		os.WriteFile(filepath.Join(dir, FileName), []byte(body), 0o600)
		if _, _, err := Load(dir); err == nil {
			t.Errorf("%s: Load succeeded", name)
		}
	}
}

func TestResolve(t *testing.T) {
	if got := Resolve("/etc/outpost-agent", "certs/agent.pem"); got != "/etc/outpost-agent/certs/agent.pem" {
		t.Error(got)
	}
	if got := Resolve("/etc/outpost-agent", "/abs/x"); got != "/abs/x" {
		t.Error(got)
	}
}
