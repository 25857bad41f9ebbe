package e2e

import (
	"encoding/json"
	"io"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	outpostv1 "github.com/outposthq/outpost/gen/outpost/v1"
	"github.com/outposthq/outpost/server"
)

// GET /v1/agents?status=AGENT_STATUS_ONLINE&page_size=1 with the lowest agent
// id offline and the next one online once crashed the whole gateway (a page
// filled on the first row of a new store batch). It answers the online agent
// and a token that leads to the end, and the gateway keeps serving.
func TestListAgentsOnlineFirstPageDoesNotCrash(t *testing.T) {
	gw := startGateway(t, t.TempDir(), nil)
	// Three agents; only the second lowest id runs, so the first store batch
	// (page_size+1 rows) ends on the online agent and the page fills on the
	// first row of the next batch.
	type enrolled struct{ dir, id string }
	var all []enrolled
	for _, name := range []string{"a", "b", "c"} {
		dir, id := enrollAgent(t, gw, name, loopback, nil)
		all = append(all, enrolled{dir, id})
	}
	slices.SortFunc(all, func(x, y enrolled) int { return strings.Compare(x.id, y.id) })
	dir, online := all[1].dir, all[1].id
	startAgent(t, fastAgent(dir))
	gw.waitStatus(online, outpostv1.AgentStatus_AGENT_STATUS_ONLINE, 10*time.Second)

	var got []string
	path := "/v1/agents?status=AGENT_STATUS_ONLINE&page_size=1"
	for page := 0; ; page++ {
		if page > 3 {
			t.Fatalf("paging does not end: %v", got)
		}
		code, body := gw.restGet(path)
		if code != http.StatusOK {
			t.Fatalf("GET %s: HTTP %d %s", path, code, body)
		}
		var resp struct {
			Agents []struct {
				AgentID string `json:"agent_id"`
			} `json:"agents"`
			Next string `json:"next_page_token"`
		}
		if err := json.Unmarshal([]byte(body), &resp); err != nil {
			t.Fatalf("%v: %s", err, body)
		}
		for _, a := range resp.Agents {
			got = append(got, a.AgentID)
		}
		if resp.Next == "" {
			break
		}
		path = "/v1/agents?status=AGENT_STATUS_ONLINE&page_size=1&page_token=" + resp.Next
	}
	if len(got) != 1 || got[0] != online {
		t.Fatalf("online agents %v, want [%s]", got, online)
	}
	if code, body := gw.restGet("/healthz"); code != http.StatusOK || !strings.Contains(body, "ok") {
		t.Fatalf("gateway not serving after the listing: %d %s", code, body)
	}
}

// max_agents: one agent more than the cap is refused with "gateway-full"
// (counted), keeps retrying, and gets in once a slot frees; a reconnect of a
// connected agent is never refused.
func TestMaxAgentsCap(t *testing.T) {
	gw := startGateway(t, t.TempDir(), func(c *server.Config) { c.MaxAgents = 1 })
	dirA, idA := enrollAgent(t, gw, "first", loopback, nil)
	dirB, idB := enrollAgent(t, gw, "second", loopback, nil)
	a := startAgent(t, fastAgent(dirA))
	gw.waitStatus(idA, outpostv1.AgentStatus_AGENT_STATUS_ONLINE, 10*time.Second)
	startAgent(t, fastAgent(dirB))
	deadline := time.Now().Add(10 * time.Second)
	for {
		_, metrics := gw.restGet("/metrics")
		if strings.Contains(metrics, `outpost_agent_connections_total{outcome="gateway_full"}`) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the second agent was never refused as gateway_full")
		}
		time.Sleep(20 * time.Millisecond)
	}
	if v := gw.agentView(idB); v.GetStatus() != outpostv1.AgentStatus_AGENT_STATUS_OFFLINE {
		t.Fatalf("second agent is %v with max_agents 1", v.GetStatus())
	}
	a.stop()
	gw.waitStatus(idB, outpostv1.AgentStatus_AGENT_STATUS_ONLINE, 10*time.Second)
}

// client_idle_timeout ends a session that carried nothing for that long,
// telling the client why; client_keep_alive ends the session of a client
// that stopped answering pings (here: it never reads).
func TestClientIdleTimeoutAndKeepAlive(t *testing.T) {
	gw := startGateway(t, t.TempDir(), func(c *server.Config) {
		directToLoopback(c)
		c.ClientKeepAlive = server.Duration(time.Hour)
		c.ClientIdleTimeout = server.Duration(300 * time.Millisecond)
	})
	target := tcpServer(t, echo)
	echoOnce(t, gw, target) // sessions work
	s, err := openSession(t, gw.session(&outpostv1.CreateSessionRequest{Target: target}))
	if err != nil {
		t.Fatal(err)
	}
	if reason := readFailure(t, s); !strings.Contains(reason, "idle for too long") {
		t.Fatalf("idle session ended with %q", reason)
	}

	gw2 := startGateway(t, t.TempDir(), func(c *server.Config) {
		directToLoopback(c)
		c.ClientKeepAlive = server.Duration(200 * time.Millisecond)
		c.ClientIdleTimeout = -1
	})
	s, err = openSession(t, gw2.session(&outpostv1.CreateSessionRequest{Target: target}))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Write([]byte("ping?")); err != nil {
		t.Fatal(err)
	}
	// The client does not read, so it answers no ping.
	deadline := time.Now().Add(10 * time.Second)
	for {
		_, metrics := gw2.restGet("/metrics")
		if strings.Contains(metrics, `outpost_sessions_total{outcome="client_gone"} 1`) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("a client that answers no ping kept its session")
		}
		time.Sleep(50 * time.Millisecond)
	}
	// The unanswered ping closed the connection: the client's stream ends
	// (with the echo it never read, or at once).
	if _, err := io.ReadAll(s); err == nil {
		t.Fatal("the silent client's stream ended cleanly")
	}
}

// max_sessions: one session more is refused with 503 before its token is
// used, so the same single-use token works once a slot is free.
func TestMaxSessionsCap(t *testing.T) {
	gw := startGateway(t, t.TempDir(), func(c *server.Config) { directToLoopback(c); c.MaxSessions = 1 })
	target := tcpServer(t, echo)
	first, err := openSession(t, gw.session(&outpostv1.CreateSessionRequest{Target: target}))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := first.Write([]byte("hi")); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 2)
	if _, err := io.ReadFull(first, buf); err != nil {
		t.Fatal(err)
	}
	second := gw.session(&outpostv1.CreateSessionRequest{Target: target})
	if _, err := openSession(t, second); err == nil || !strings.Contains(err.Error(), "503") || !strings.Contains(err.Error(), "maximum of 1 client sessions") {
		t.Fatalf("a second session with max_sessions 1: %v", err)
	}
	first.Close()
	deadline := time.Now().Add(10 * time.Second)
	for {
		s, err := openSession(t, second)
		if err == nil {
			s.Close()
			break
		}
		if !strings.Contains(err.Error(), "503") || time.Now().After(deadline) {
			t.Fatalf("the refused token after the first session ended: %v", err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
