package devenv

import (
	"bytes"
	"context"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/outposthq/outpost/client"
	outpostv1 "github.com/outposthq/outpost/gen/outpost/v1"
	"github.com/outposthq/outpost/server/apiclient"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// The dev environment comes up, prints its instructions, and the sample
// target answers through a session token and the WebSocket entry — what the
// printed commands do.
func TestDevEnvironment(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	var out bytes.Buffer
	ready := make(chan Env, 1)
	done := make(chan error, 1)
	dir := t.TempDir()
	go func() {
		done <- Run(ctx, Config{DataDir: dir, Listen: "127.0.0.1:0", QUICListen: "127.0.0.1:0",
			Ready: func(e Env) { ready <- e }}, &out)
	}()
	var env Env
	select {
	case env = <-ready:
	case err := <-done:
		t.Fatalf("Run ended early: %v", err)
	}
	for _, want := range []string{"session create", "connect --gateway", env.Target, "/v1/agents", "grpcurl",
		"--token-file " + env.TokenFile + " --force", "--token-file " + env.TokenFile + " --listen " + env.ConnectListen,
		"curl http://" + env.ConnectListen + "/", `"Authorization: Bearer $(cat ` + env.AdminKeyFile + `)"`,
		"agents --gateway " + env.GatewayURL, "sessions --gateway " + env.GatewayURL + " --api-key-file " + env.AdminKeyFile,
		"open " + env.ConsoleURL + " and sign in"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("instructions lack %q:\n%s", want, out.String())
		}
	}
	if filepath.Dir(env.TokenFile) != dir {
		t.Errorf("token file %s is not in the data directory %s", env.TokenFile, dir)
	}

	if !strings.HasPrefix(env.ConsoleURL, "https://localhost:") || !strings.HasSuffix(env.ConsoleURL, "/ui/") {
		t.Errorf("console URL %q", env.ConsoleURL)
	}
	key, _ := apiclient.ReadKeyFile(env.AdminKeyFile)
	if key == "" || strings.Contains(out.String(), key) {
		t.Errorf("the instructions hold the admin key (or there is none):\n%s", out.String())
	}
	// What the printed session create would leave: Run removes it at the end.
	if err := os.WriteFile(env.TokenFile, []byte("token\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	ca, _ := os.ReadFile(env.CAFile)
	conn, err := apiclient.Dial(apiclient.Config{Gateway: env.GatewayURL, APIKey: key, CAPEM: ca})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	sess, err := outpostv1.NewRouteResolveServiceClient(conn).CreateSession(ctx, &outpostv1.CreateSessionRequest{Target: env.Target})
	if err != nil {
		t.Fatal(err)
	}
	c, err := client.New(client.Config{Gateway: env.GatewayURL, Token: sess.GetToken(), CAPEM: ca})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	s, err := c.Open(ctx)
	if err != nil {
		t.Fatal(err)
	}
	io.WriteString(s, "GET /hello HTTP/1.0\r\nHost: x\r\n\r\n")
	page, err := io.ReadAll(s)
	s.Close()
	if err != nil || !strings.Contains(string(page), "Hello from the sample target") {
		t.Fatalf("page through the agent: %q %v", page, err)
	}

	cancel()
	if err := <-done; err != nil {
		t.Fatalf("Run after Ctrl-C: %v, want nil (exit 0)", err)
	}
	if _, err := os.Stat(env.TokenFile); !os.IsNotExist(err) {
		t.Errorf("session token file left after the end: %v", err)
	}
	if _, err := os.Stat(env.AdminKeyFile); err != nil {
		t.Errorf("the kept data directory lost its state: %v", err)
	}
}

// Ctrl-C ends the demo with nil (exit 0) whether it was up or still
// starting, and the temporary directory it wrote goes with it.
func TestInterruptedDemoCleansUp(t *testing.T) {
	for _, when := range []string{"starting", "up"} {
		t.Run(when, func(t *testing.T) {
			tmp := t.TempDir()
			t.Setenv("TMPDIR", tmp)
			ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
			defer cancel()
			interrupt, stop := context.WithCancel(ctx)
			ready := make(chan Env, 1)
			done := make(chan error, 1)
			go func() {
				done <- Run(interrupt, Config{Listen: "127.0.0.1:0", QUICListen: "127.0.0.1:0", Ready: func(e Env) { ready <- e }}, io.Discard)
			}()
			if when == "up" {
				select {
				case <-ready:
				case err := <-done:
					t.Fatalf("Run ended early: %v", err)
				}
			}
			stop()
			if err := <-done; err != nil {
				t.Fatalf("Run interrupted while %s: %v, want nil", when, err)
			}
			if ents, err := os.ReadDir(tmp); err != nil || len(ents) != 0 {
				t.Errorf("left in $TMPDIR: %v %v", ents, err)
			}
		})
	}
}
