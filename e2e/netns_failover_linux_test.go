package e2e

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"maps"
	"net/http"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/outposthq/outpost/client/wsstream"
)

// Failover in the lab: a gateway killed with SIGKILL and started again at
// once, and the preferred agent killed while clients keep opening
// sessions.

const (
	// netnsLoadEvery and netnsLoadFor pace the session load of agentKilled.
	netnsLoadEvery = 100 * time.Millisecond
	netnsLoadFor   = 15 * time.Second
	// netnsLoadWarmup is how many sessions of the load are done before
	// the agent is killed (about 2 s of it).
	netnsLoadWarmup = 20
	// netnsSessionBound is the longest a session of the load may take to
	// open and fetch the page.
	netnsSessionBound = 3 * time.Second
	// netnsBackWithin bounds how long agents take to be online again after
	// a gateway crash, and a killed agent to be shown unresponsive.
	netnsBackWithin = 5 * time.Second
)

// webSession opens a session with the reusable token tok from the client
// namespace (a WebSocket to the entry), asks nginx on t1 for index.html
// through it and reads the answer to its end.
func (s *netnsSuite) webSession(ctx context.Context, tok string) error {
	hc := &http.Client{Transport: s.api.Transport}
	ws, resp, err := websocket.Dial(ctx, "wss://"+netnsGwIP+":7171/v1/connect", &websocket.DialOptions{
		HTTPClient: hc,
		HTTPHeader: http.Header{"Authorization": {"Bearer " + tok}},
	})
	if err != nil {
		if resp != nil {
			return fmt.Errorf("entry: HTTP %d: %w", resp.StatusCode, err)
		}
		return fmt.Errorf("entry: %w", err)
	}
	st := wsstream.New(ctx, ws)
	defer st.Close()
	if _, err := st.Write([]byte("GET /index.html HTTP/1.0\r\nHost: t1\r\n\r\n")); err != nil {
		return fmt.Errorf("write request: %w", err)
	}
	// nginx answers HTTP/1.0 and closes: read to the end of the session.
	got, err := io.ReadAll(st)
	if reason, ok := wsstream.Failure(err); ok {
		return fmt.Errorf("session failed after %d bytes: %s", len(got), reason)
	}
	if err != nil {
		return fmt.Errorf("read after %d bytes: %w", len(got), err)
	}
	if !bytes.Contains(got, []byte(s.index)) {
		return fmt.Errorf("the answer lacks the page: %q", tailText(string(got), 300))
	}
	return nil
}

// sessionLoad opens a session with webSession every netnsLoadEvery, each in
// a goroutine of its own bounded by 10 s, and records how each went.
type sessionLoad struct {
	mu      sync.Mutex
	results []loadResult // guarded by mu
	wg      sync.WaitGroup
}

// loadResult is one session of a sessionLoad: when it started, how long it
// took, and its error.
type loadResult struct {
	start time.Time
	took  time.Duration
	err   error
}

// done is the number of sessions that have ended.
func (l *sessionLoad) done() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.results)
}

// run opens sessions for d and returns when every session has ended.
func (l *sessionLoad) run(s *netnsSuite, tok string, d time.Duration) {
	tick := time.NewTicker(netnsLoadEvery)
	defer tick.Stop()
	end := time.After(d)
	for {
		l.wg.Go(func() {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			began := time.Now()
			err := s.webSession(ctx, tok)
			l.mu.Lock()
			l.results = append(l.results, loadResult{began, time.Since(began), err})
			l.mu.Unlock()
		})
		select {
		case <-tick.C:
			continue
		case <-end:
		}
		break
	}
	l.wg.Wait()
}

// agentKilled kills the agent routing prefers (office) with SIGKILL while a
// client opens a session every 100 ms for 15 s: no session fails or takes
// more than 3 s, office is shown unresponsive (or offline) within 5 s, and
// office2 carries the sessions after.
func (s *netnsSuite) agentKilled(t *testing.T) {
	a, b := s.agents["office"], s.agents["office2"]
	if a.proc == nil || a.proc.exited() {
		t.Fatal("the office agent is not running (it exited before this step)")
	}
	tok := s.sessionToken(t, s.web.addr, "--reusable", "--ttl", "5m")
	var load sessionLoad
	loaded := make(chan struct{})
	go func() {
		defer close(loaded)
		load.run(s, tok, netnsLoadFor)
	}()
	defer func() { <-loaded }() // also when the step fails early

	// Kill office once the load has run for a while.
	for deadline := time.Now().Add(10 * time.Second); load.done() < netnsLoadWarmup; time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("%d sessions done 10 s into the load, want %d", load.done(), netnsLoadWarmup)
		}
	}
	a.proc.kill()
	killed := time.Now()
	if !a.proc.waitFor(10 * time.Second) {
		t.Fatal("agent did not die of SIGKILL")
	}
	s.logf(t, "kill -9 office agent (pid %d) during the session load", a.proc.cmd.Process.Pid)
	var shown string
	for deadline := killed.Add(netnsBackWithin); ; time.Sleep(100 * time.Millisecond) {
		st, _, err := s.agentStatus(a.id)
		if st == "AGENT_STATUS_UNRESPONSIVE" || st == "AGENT_STATUS_OFFLINE" {
			shown = st
			break
		}
		if time.Now().After(deadline) {
			t.Errorf("office is %q %v after the kill, want unresponsive or offline (%v)", st, netnsBackWithin, err)
			break
		}
	}
	if shown != "" {
		s.logf(t, "office shown %s %v after the kill", shown, time.Since(killed).Round(time.Millisecond))
	}

	<-loaded
	var before, after []time.Duration
	for _, r := range load.results {
		if r.err != nil {
			t.Errorf("session started %v after the kill failed after %v: %v", r.start.Sub(killed).Round(time.Millisecond), r.took.Round(time.Millisecond), r.err)
		} else if r.took > netnsSessionBound {
			t.Errorf("session started %v after the kill took %v (bound %v)", r.start.Sub(killed).Round(time.Millisecond), r.took.Round(time.Millisecond), netnsSessionBound)
		}
		if r.start.Before(killed) {
			before = append(before, r.took)
		} else {
			after = append(after, r.took)
		}
	}
	s.logf(t, "%d sessions (one every %v for %v): before the kill %s; after it %s",
		len(load.results), netnsLoadEvery, netnsLoadFor, durationSummary(before), durationSummary(after))

	from, err := s.sshVia(t)
	if err != nil {
		t.Fatalf("session after the load: %v", err)
	}
	if from != b.ip {
		t.Fatalf("session after the kill reached t1 from %s, want office2 (%s)", from, b.ip)
	}
	s.logf(t, "the next session is carried by office2 (t1 saw %s)", from)
	if err := s.waitStatus(a.id, "AGENT_STATUS_OFFLINE", 30*time.Second); err != nil {
		t.Error(err)
	}
}

// durationSummary is "n sessions, p50 …, max …" of ds.
func durationSummary(ds []time.Duration) string {
	if len(ds) == 0 {
		return "no sessions"
	}
	ds = slices.Clone(ds)
	slices.Sort(ds)
	return fmt.Sprintf("%d sessions, p50 %v, p99 %v, max %v", len(ds),
		ds[len(ds)/2].Round(time.Millisecond), ds[(len(ds)*99)/100].Round(time.Millisecond), ds[len(ds)-1].Round(time.Millisecond))
}

// gatewayCrash kills the gateway with SIGKILL and starts it again at once on
// the same data directory: every running agent is online again, on a new
// connection, within 5 s of the kill.
func (s *netnsSuite) gatewayCrash(t *testing.T) {
	var running []*netnsAgent
	for _, name := range slices.Sorted(maps.Keys(s.agents)) {
		if a := s.agents[name]; a.proc != nil && !a.proc.exited() {
			running = append(running, a)
			if err := s.waitStatus(a.id, "AGENT_STATUS_ONLINE", 10*time.Second); err != nil {
				t.Fatalf("%s before the crash: %v", a.name, err)
			}
		}
	}
	if len(running) < 2 {
		t.Fatalf("%d agents running, want at least 2", len(running))
	}
	s.gw.kill()
	killed := time.Now()
	if !s.gw.waitFor(10 * time.Second) {
		t.Fatal("gateway did not die of SIGKILL")
	}
	s.gw = s.startProc(t, "gw", "gateway-after-kill", nil, s.gatewayArgs()...)
	s.logf(t, "kill -9 of the gateway; started again at once")
	if err := s.waitReady(netnsBackWithin); err != nil {
		t.Fatal(err)
	}
	s.logf(t, "gateway ready %v after the kill", time.Since(killed).Round(time.Millisecond))
	for _, a := range running {
		if err := s.waitReconnected(a.id, killed, netnsBackWithin-time.Since(killed)); err != nil {
			t.Errorf("%s: %v", a.name, err)
			continue
		}
		s.logf(t, "%s online again %v after the kill", a.name, time.Since(killed).Round(time.Millisecond))
	}
}

// waitReconnected polls until the agent is online on a connection made
// after since.
func (s *netnsSuite) waitReconnected(id string, since time.Time, within time.Duration) error {
	deadline := time.Now().Add(within)
	for {
		a, err := s.restAgent(id)
		if err == nil && a.Status == "AGENT_STATUS_ONLINE" && a.ConnectedAt.After(since) {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("not online on a new connection %v after the kill: %+v %v", time.Since(since).Round(time.Millisecond), a, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}
