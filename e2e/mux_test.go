package e2e

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/outposthq/outpost/client"
	"github.com/outposthq/outpost/client/muxstream"
	outpostv1 "github.com/outposthq/outpost/gen/outpost/v1"
	"github.com/outposthq/outpost/internal/testlog"
	"github.com/outposthq/outpost/internal/testtarget"
)

// exchange runs testtarget.Exchange on s, then closes it (or aborts it
// after an error).
func exchange(s client.Stream, n int64) ([]byte, error) {
	got, err := testtarget.Exchange(s, n)
	if err == nil {
		err = s.Close()
	} else {
		s.Abort(1)
	}
	return got, err
}

// Many sessions at once on the client's one standing connection, through
// a real agent, each with its data checked both ways; each has its own
// audit row.
func TestMuxSessionsThroughAgent(t *testing.T) {
	gw := startGateway(t, t.TempDir(), nil)
	dir, id := enrollAgent(t, gw, "office", loopback, nil)
	startAgent(t, fastAgent(dir))
	gw.waitStatus(id, outpostv1.AgentStatus_AGENT_STATUS_ONLINE, 10*time.Second)
	target := tcpServer(t, echo)
	resp := gw.session(&outpostv1.CreateSessionRequest{Target: target, Reusable: true})

	logs := testlog.New(t)
	c, err := client.New(client.Config{Gateway: resp.GetConnectUrl(), Token: resp.GetToken(), CAPin: resp.GetGatewayCaSpkiSha256(),
		Logger: hclog.New(&hclog.LoggerOptions{Name: "connect", Level: hclog.Debug, Output: logs})})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	const sessions = 16
	var wg sync.WaitGroup
	for i := range sessions {
		n := int64(i+1) * 100_003
		wg.Go(func() {
			ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
			defer cancel()
			s, err := c.Open(ctx)
			if err != nil {
				t.Errorf("session %d: %v", i, err)
				return
			}
			got, err := exchange(s, n)
			if err != nil || int64(len(got)) != n || !bytes.Equal(sum(got), patternSum(n)) {
				t.Errorf("session %d: %d bytes back of %d, %v", i, len(got), n, err)
			}
		})
	}
	wg.Wait()
	if n := strings.Count(logs.String(), "standing connection open"); n != 1 {
		t.Errorf("%d standing connections for %d sessions, want 1", n, sessions)
	}
	c.Close()
	gw.stop() // waits for the sessions' ends to be recorded
	db := gw.auditDB()
	var rows, ok, distinct int
	if err := db.QueryRow(`SELECT count(*), count(CASE WHEN outcome = 'ok' AND bytes_up = bytes_down THEN 1 END), count(DISTINCT id) FROM sessions`).
		Scan(&rows, &ok, &distinct); err != nil {
		t.Fatal(err)
	}
	if rows != sessions || ok != sessions || distinct != sessions {
		t.Errorf("audit: %d rows, %d ok with equal bytes, %d distinct ids; want %d each", rows, ok, distinct, sessions)
	}
}

func sum(b []byte) []byte {
	s := sha256.Sum256(b)
	return s[:]
}

// cutProxy forwards TCP connections on loopback to a target. A test cuts
// every forwarded connection at once, or stops listening and listens again
// on the same address: a network that drops the client's connection.
type cutProxy struct {
	t      *testing.T
	target string
	addr   string

	mu    sync.Mutex
	ln    net.Listener
	conns map[net.Conn]struct{} // guarded by mu
	wg    sync.WaitGroup
}

func newCutProxy(t *testing.T, target string) *cutProxy {
	p := &cutProxy{t: t, target: target, addr: "127.0.0.1:0", conns: map[net.Conn]struct{}{}}
	p.listen()
	t.Cleanup(p.stop)
	return p
}

func (p *cutProxy) listen() {
	ln, err := net.Listen("tcp", p.addr)
	if err != nil {
		p.t.Fatal(err)
	}
	p.mu.Lock()
	p.ln, p.addr = ln, ln.Addr().String()
	p.mu.Unlock()
	p.wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			up, err := net.Dial("tcp", p.target)
			if err != nil {
				c.Close()
				continue
			}
			p.mu.Lock()
			p.conns[c], p.conns[up] = struct{}{}, struct{}{}
			p.mu.Unlock()
			for _, dir := range [][2]net.Conn{{c, up}, {up, c}} {
				p.wg.Go(func() {
					io.Copy(dir[0], dir[1])
					dir[0].Close()
					dir[1].Close()
				})
			}
		}
	})
}

// cut closes every forwarded connection.
func (p *cutProxy) cut() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for c := range p.conns {
		c.Close()
		delete(p.conns, c)
	}
}

// stop stops listening, cuts, and waits for the proxy's goroutines.
func (p *cutProxy) stop() {
	p.mu.Lock()
	p.ln.Close()
	p.mu.Unlock()
	p.cut()
	p.wg.Wait()
}

// When the client's connection drops, its sessions fail cleanly; sessions
// opened while the gateway cannot be reached wait, then succeed once the
// client has reconnected.
func TestMuxConnectionLoss(t *testing.T) {
	gw := startGateway(t, t.TempDir(), directToLoopback)
	target := tcpServer(t, echo)
	resp := gw.session(&outpostv1.CreateSessionRequest{Target: target, Reusable: true})
	proxy := newCutProxy(t, gw.g.Addr().String())
	c, err := client.New(client.Config{Gateway: "https://" + proxy.addr, Token: resp.GetToken(), CAPin: resp.GetGatewayCaSpkiSha256(),
		ConnectWait: time.Minute, Logger: testLogger(t, "connect")})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	live, err := c.Open(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := live.Write([]byte("mid-session")); err != nil {
		t.Fatal(err)
	}
	if _, err := io.ReadFull(live, make([]byte, 11)); err != nil {
		t.Fatal(err)
	}

	proxy.stop() // the network drops, and stays down
	if _, err := io.ReadAll(live); !errors.Is(err, muxstream.ErrConnectionLost) {
		t.Fatalf("the live session when the connection dropped: %v", err)
	}
	live.Abort(1)
	waited := make(chan error, 1)
	go func() {
		s, err := c.Open(ctx)
		if err != nil {
			waited <- err
			return
		}
		got, err := exchange(s, 5000)
		if err == nil && !bytes.Equal(sum(got), patternSum(5000)) {
			err = fmt.Errorf("%d bytes back", len(got))
		}
		waited <- err
	}()
	select {
	case err := <-waited:
		t.Fatalf("a session opened during the outage returned: %v", err)
	case <-time.After(500 * time.Millisecond):
	}
	proxy.listen() // the network is back
	select {
	case err := <-waited:
		if err != nil {
			t.Fatalf("the session that waited for the reconnection: %v", err)
		}
	case <-ctx.Done():
		t.Fatal("the client did not reconnect")
	}
}

// muxClient opens a standing connection with the token of resp.
func muxClient(t *testing.T, resp *outpostv1.CreateSessionResponse) *client.Client {
	t.Helper()
	c, err := client.New(client.Config{Gateway: resp.GetConnectUrl(), Token: resp.GetToken(), CAPin: resp.GetGatewayCaSpkiSha256(),
		Logger: testLogger(t, "connect")})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// muxEcho opens one session on c and echoes a byte through it.
func muxEcho(c *client.Client) error {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	s, err := c.Open(ctx)
	if err != nil {
		return err
	}
	_, err = exchange(s, 1)
	return err
}

// A reusable token's cap holds across standing connections, although each
// counts its sessions' uses in reservations: the uses one connection
// reserved and did not use come back when it closes, and the token then
// opens exactly its cap in all, not one more.
func TestMuxReservedUsesKeepTheCap(t *testing.T) {
	const capacity = 40 // reservations of up to capacity/16 = 2 uses
	gw := startGateway(t, t.TempDir(), directToLoopback)
	target := tcpServer(t, echo)
	resp := gw.session(&outpostv1.CreateSessionRequest{Target: target, Reusable: true, MaxConnections: capacity})

	first := muxClient(t, resp)
	// Reservations of 1, 2 and 2: four sessions leave one use reserved.
	const used = 4
	for i := range used {
		if err := muxEcho(first); err != nil {
			t.Fatalf("first connection, session %d: %v", i+1, err)
		}
	}
	first.Close()
	// The give-back runs as the gateway notices the close; until then the
	// second connection may find one use fewer, so it waits for it.
	second := muxClient(t, resp)
	opened := 0
	deadline := time.Now().Add(20 * time.Second)
	for {
		err := muxEcho(second)
		if err == nil {
			opened++
			continue
		}
		want := fmt.Sprintf("its connection limit (%d) is reached", capacity)
		if !strings.Contains(err.Error(), want) {
			t.Fatalf("session %d on the second connection: %v", opened+1, err)
		}
		if opened == capacity-used || time.Now().After(deadline) {
			break
		}
		time.Sleep(50 * time.Millisecond) // the first connection's give-back is on its way
	}
	if opened != capacity-used {
		t.Fatalf("the second connection opened %d sessions after the first's %d, want %d (cap %d)", opened, used, capacity-used, capacity)
	}
	if err := muxEcho(second); err == nil {
		t.Fatal("a session past the cap was opened")
	}
}

// A key revoked while a standing connection is open stops the new sessions
// on it within KeyRecheck (1 s); the session that is open goes on.
func TestMuxRevokedKeyStopsNewSessions(t *testing.T) {
	gw := startGateway(t, t.TempDir(), directToLoopback)
	target := tcpServer(t, echo)
	id, secret := gw.apiKey("ci", "sessions.create")
	resp, err := gw.sessionAs(secret, &outpostv1.CreateSessionRequest{Target: target, Reusable: true})
	if err != nil {
		t.Fatal(err)
	}
	c := muxClient(t, resp)
	if err := muxEcho(c); err != nil {
		t.Fatal(err)
	}
	gw.revokeKey(id)
	revoked := time.Now()
	for {
		err := muxEcho(c)
		if err != nil {
			if !strings.Contains(err.Error(), revokedMessage) {
				t.Fatalf("after the revocation: %v, want %q", err, revokedMessage)
			}
			break
		}
		if time.Since(revoked) > 10*time.Second {
			t.Fatal("sessions still open 10 s after the key was revoked")
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Logf("new sessions refused %v after the revocation", time.Since(revoked).Round(time.Millisecond))
}
