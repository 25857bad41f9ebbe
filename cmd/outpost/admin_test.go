package main

import (
	"bytes"
	"context"
	"encoding/json"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	outpostv1 "github.com/outposthq/outpost/gen/outpost/v1"
	"github.com/outposthq/outpost/internal/testlog"
	"github.com/outposthq/outpost/server"
)

// testGateway is a gateway on loopback for the admin commands.
type testGateway struct {
	url, dataDir string
}

// keyFlags are the flags that reach the gateway with its admin key.
func (g testGateway) keyFlags() []string {
	return []string{"--gateway", g.url, "--api-key-file", filepath.Join(g.dataDir, "admin.key"), "--ca-file", filepath.Join(g.dataDir, "ca.pem")}
}

// startGateway runs a gateway on 127.0.0.1 until the test ends.
func startGateway(t *testing.T) testGateway {
	t.Helper()
	dir := t.TempDir()
	g, err := server.New(server.Config{DataDir: dir, Listen: "127.0.0.1:0", QUICListen: "127.0.0.1:0", Hostnames: []string{"127.0.0.1"}}, testlog.Logger(t, "gateway"))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- g.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("gateway: %v", err)
		}
		g.Close()
	})
	return testGateway{url: "https://" + g.Addr().String(), dataDir: dir}
}

// outpost runs the command line and returns its stdout and stderr.
func outpost(t *testing.T, args ...string) (stdout, stderr string, err error) {
	t.Helper()
	var out, errOut bytes.Buffer
	err = run(context.Background(), args, strings.NewReader(""), &out, &errOut)
	return out.String(), errOut.String(), err
}

// "outpost agents" lists an agent enrolled through the CLI, as a table and
// as JSON; "outpost sessions" on an empty audit says so.
func TestAgentsAndSessionsCommands(t *testing.T) {
	gw := startGateway(t)
	tok, errOut, err := outpost(t, append([]string{"gateway", "token", "create", "--name", "edge-1", "--subnets", "10.9.0.0/24"}, gw.keyFlags()...)...)
	if err != nil {
		t.Fatalf("token create: %v\n%s", err, errOut)
	}
	var out bytes.Buffer
	cfgDir := t.TempDir()
	if err := run(context.Background(), []string{"agent", "enroll", "--token", "-", "--config-dir", cfgDir, "--advertise-subnets", "10.9.0.0/24"},
		strings.NewReader(tok), &out, testlog.New(t)); err != nil {
		t.Fatalf("agent enroll: %v", err)
	}

	table, _, err := outpost(t, append([]string{"agents"}, gw.keyFlags()...)...)
	if err != nil {
		t.Fatalf("agents: %v", err)
	}
	lines := strings.Split(strings.TrimSpace(table), "\n")
	if len(lines) != 2 || !strings.HasPrefix(lines[0], "ID ") || !strings.Contains(lines[1], "edge-1") || !strings.Contains(lines[1], "offline") {
		t.Errorf("agents table:\n%s", table)
	}
	js, _, err := outpost(t, append([]string{"agents", "--json", "--status", "offline"}, gw.keyFlags()...)...)
	var agents []map[string]any
	if err != nil || json.Unmarshal([]byte(js), &agents) != nil || len(agents) != 1 || agents[0]["name"] != "edge-1" || agents[0]["status"] != "AGENT_STATUS_OFFLINE" {
		t.Errorf("agents --json: %v\n%s", err, js)
	}
	if js, _, err := outpost(t, append([]string{"agents", "--json", "--status", "online"}, gw.keyFlags()...)...); err != nil || js != "[]\n" {
		t.Errorf("agents --json --status online: %v %q, want []", err, js)
	}

	stdout, stderr, err := outpost(t, append([]string{"sessions", "--since", "1h"}, gw.keyFlags()...)...)
	if err != nil || stdout != "" || !strings.Contains(stderr, "no sessions") {
		t.Errorf("sessions: %v, stdout %q, stderr %q", err, stdout, stderr)
	}
	if js, _, err := outpost(t, append([]string{"sessions", "--json", "--outcome", "open"}, gw.keyFlags()...)...); err != nil || js != "[]\n" {
		t.Errorf("sessions --json: %v %q, want []", err, js)
	}
	for _, bad := range [][]string{{"agents", "--status", "asleep"}, {"sessions", "--from", "yesterday"}, {"sessions", "--since", "1h", "--from", "2026-01-01T00:00:00Z"}} {
		if _, _, err := outpost(t, append(bad, gw.keyFlags()...)...); err == nil || !strings.Contains(err.Error(), bad[1]) {
			t.Errorf("outpost %v: %v, want a usage error naming %s", bad, err, bad[1])
		}
	}
}

// The sessions table shows open sessions, direct ones, sizes and durations
// as people read them.
func TestSessionTable(t *testing.T) {
	start := time.Date(2026, 3, 4, 5, 6, 7, 0, time.UTC)
	var out bytes.Buffer
	err := writeSessionTable(&out, []*outpostv1.Session{
		{SessionId: "s-open", StartedAt: timestamppb.New(start), Target: "db:5432", AgentId: "a-1", BytesUp: 10, KeyId: "k-1", ClientAddr: "127.0.0.1:5000"},
		{SessionId: "s-done", StartedAt: timestamppb.New(start), EndedAt: timestamppb.New(start.Add(1500 * time.Millisecond)), Duration: durationpb.New(1500 * time.Millisecond),
			Target: "web:443", Outcome: "closed", Reason: "the client closed the session", BytesUp: 1536, BytesDown: 5 << 20},
	})
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	for i, want := range [][]string{
		{"STARTED", "SESSION", "OUTCOME", "DURATION", "CLIENT"},
		{"2026-03-04T05:06:07Z", "s-open", "a-1", "open", "10 B", "k-1", "127.0.0.1:5000"},
		{"s-done", "direct", "closed", "1.5 KiB", "5.0 MiB", "1.5s", "the client closed the session"},
	} {
		for _, w := range want {
			if i >= len(lines) || !strings.Contains(lines[i], w) {
				t.Errorf("line %d lacks %q:\n%s", i, w, out.String())
			}
		}
	}
}
