package entry

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/hashicorp/yamux"

	"github.com/outposthq/outpost/client/muxstream"
	"github.com/outposthq/outpost/dataplane/relay"
	"github.com/outposthq/outpost/internal/fakeclock"
	"github.com/outposthq/outpost/internal/testtarget"
	"github.com/outposthq/outpost/server/internal/broker"
	"github.com/outposthq/outpost/server/internal/token"
)

// muxConnTo is a standing connection as a test client holds it.
type muxConnTo struct {
	sess *yamux.Session
	raw  net.Conn // the TLS connection under it
	max  int      // the cap the gateway announced
}

// upgrade sends the standing connection's request with tok (and method)
// and reads the answer; it returns the connection and a reader positioned
// after the answer.
func (f *fixture) upgrade(method, tok string) (*tls.Conn, *bufio.Reader, *http.Response) {
	f.t.Helper()
	conf := f.srv.Client().Transport.(*http.Transport).TLSClientConfig.Clone()
	conf.NextProtos = []string{"http/1.1"}
	c, err := tls.Dial("tcp", f.srv.Listener.Addr().String(), conf)
	if err != nil {
		f.t.Fatal(err)
	}
	f.t.Cleanup(func() { c.Close() })
	fmt.Fprintf(c, "%s %s HTTP/1.1\r\nHost: %s\r\nConnection: Upgrade\r\nUpgrade: %s\r\nAuthorization: Bearer %s\r\n\r\n",
		method, Path, f.srv.Listener.Addr(), muxstream.UpgradeToken, tok)
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		f.t.Fatal(err)
	}
	return c, br, resp
}

// dialMux opens a standing connection with tok, or fails the test with the
// gateway's refusal.
func (f *fixture) dialMux(tok string) *muxConnTo {
	f.t.Helper()
	c, br, resp := f.upgrade("GET", tok)
	if resp.StatusCode != http.StatusSwitchingProtocols {
		b, _ := io.ReadAll(resp.Body)
		f.t.Fatalf("upgrade: %d %s", resp.StatusCode, b)
	}
	max, _ := strconv.Atoi(resp.Header.Get(muxstream.MaxStreamsHeader))
	sess, err := yamux.Client(muxstream.Conn{Reader: br, WriteCloser: c}, muxstream.Config(0, func(m string) { f.t.Log(m) }))
	if err != nil {
		f.t.Fatal(err)
	}
	f.t.Cleanup(func() { sess.Close() })
	return &muxConnTo{sess: sess, raw: c, max: max}
}

// open opens a session on the connection.
func (m *muxConnTo) open(t *testing.T) *muxstream.Stream {
	t.Helper()
	st, err := m.sess.OpenStream()
	if err != nil {
		t.Fatal(err)
	}
	s := muxstream.New(st)
	t.Cleanup(func() { s.Abort(relay.ErrorCodeCanceled) })
	return s
}

// exchange runs testtarget.Exchange on s, then closes it.
func exchange(s *muxstream.Stream, n int64) ([]byte, error) {
	got, err := testtarget.Exchange(s, n)
	if err == nil {
		err = s.Close()
	}
	return got, err
}

// mintFor returns a session token for target.
func (f *fixture) mintFor(target string, c token.SessionClaims) string {
	f.t.Helper()
	c.Subject = "key-1"
	c.Target = target
	tok, _, err := f.tokens.NewSession(c, time.Minute)
	if err != nil {
		f.t.Fatal(err)
	}
	return tok
}

// Many sessions at once on one connection, each with its own data both
// ways and its own half-close; each has its own audit row.
func TestMuxManySessions(t *testing.T) {
	f := newFixture(t, nil)
	target := testtarget.Listen(t, "127.0.0.1:0", testtarget.Echo).String()
	m := f.dialMux(f.mintFor(target, token.SessionClaims{Reusable: true}))
	if m.max != muxstream.DefaultMaxStreams {
		t.Errorf("announced cap %d, want %d", m.max, muxstream.DefaultMaxStreams)
	}
	const sessions = 32
	var wg sync.WaitGroup
	errs := make(chan error, sessions)
	for i := range sessions {
		s := m.open(t)
		n := int64(i+1) * 33_333
		wg.Go(func() {
			got, err := exchange(s, n)
			switch {
			case err != nil:
				errs <- fmt.Errorf("session %d: %w", i, err)
			case int64(len(got)) != n || !bytes.Equal(sha(got), testtarget.PatternSum(n)):
				errs <- fmt.Errorf("session %d: %d bytes back, want the %d sent", i, len(got), n)
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	ids := map[string]bool{}
	for _, rec := range f.audit.outcomes(t, sessions) {
		ids[rec.ID] = true
		if rec.Outcome != "ok" || rec.BytesUp != rec.BytesDown {
			t.Errorf("session %s: %s %q, %d up, %d down", rec.ID, rec.Outcome, rec.Reason, rec.BytesUp, rec.BytesDown)
		}
	}
	if len(ids) != sessions {
		t.Errorf("%d distinct session ids, want %d", len(ids), sessions)
	}
	waitFor(t, func() bool { return liveCount(f.h) == 0 })
}

func sha(b []byte) []byte {
	s := sha256.Sum256(b)
	return s[:]
}

func liveCount(h *Handler) int {
	h.live.mu.Lock()
	defer h.live.mu.Unlock()
	return len(h.live.sessions)
}

// waitFor polls cond for up to 10 s.
func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	tick := time.NewTicker(2 * time.Millisecond)
	defer tick.Stop()
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not met in 10 s")
		}
		<-tick.C
	}
}

// failure reads s to its end and returns the gateway's reason.
func failure(t *testing.T, s *muxstream.Stream) string {
	t.Helper()
	_, err := io.ReadAll(s)
	reason, ok := muxstream.Failure(err)
	if !ok {
		t.Fatalf("the session did not fail with a reason: %v", err)
	}
	return reason
}

// A connection at its cap takes a new session as soon as one ends: the
// client, which sees the end first, does not have it refused.
func TestMuxSlotReuse(t *testing.T) {
	f := newFixture(t, func(c *Config) { c.MaxStreamsPerConnection = 1 })
	target := testtarget.Listen(t, "127.0.0.1:0", testtarget.Echo).String()
	m := f.dialMux(f.mintFor(target, token.SessionClaims{Reusable: true}))
	for i := range 30 {
		if _, err := exchange(m.open(t), 10); err != nil {
			t.Fatalf("session %d: %v", i, err)
		}
	}
}

// A single-use token opens one session on its connection; a reusable one
// as many as its cap; each counts in the same store counter.
func TestMuxTokenUses(t *testing.T) {
	f := newFixture(t, nil)
	target := testtarget.Listen(t, "127.0.0.1:0", testtarget.Echo).String()
	tok := f.mintFor(target, token.SessionClaims{})
	claims, _ := f.tokens.VerifySession(tok)
	m := f.dialMux(tok)
	if got, err := exchange(m.open(t), 100); err != nil || len(got) != 100 {
		t.Fatalf("single-use token, first session: %d bytes, %v", len(got), err)
	}
	if r := failure(t, m.open(t)); !strings.Contains(r, "already used (it is single-use)") {
		t.Fatalf("single-use token, second session: %q", r)
	}
	if recs := f.audit.outcomes(t, 1); recs[0].ID != claims.ID {
		t.Errorf("the single-use session's id is %s, want the token's %s", recs[0].ID, claims.ID)
	}
	// The WebSocket entry counts in the same counter.
	if status, body := f.dial(tok, nil); status != 401 || !strings.Contains(body, "already used") {
		t.Fatalf("WebSocket after the standing connection used the token: %d %q", status, body)
	}

	reusable := f.mintFor(target, token.SessionClaims{Reusable: true, MaxConnections: 3})
	if status, _ := f.dial(reusable, nil); status != 101 {
		t.Fatal("reusable token over a WebSocket")
	}
	m = f.dialMux(reusable)
	for i := range 2 {
		if _, err := exchange(m.open(t), 10); err != nil {
			t.Fatalf("reusable token, session %d: %v", i+2, err)
		}
	}
	if r := failure(t, m.open(t)); !strings.Contains(r, "its connection limit (3) is reached") {
		t.Fatalf("reusable token past its cap: %q", r)
	}
}

// Each session is authorized when it opens: a key revoked or a token
// expired since the connection was made refuses the next session.
func TestMuxAuthorizeEachSession(t *testing.T) {
	clk := fakeclock.New(time.Now())
	f := newFixture(t, func(c *Config) { c.Now = clk.Now })
	target := testtarget.Listen(t, "127.0.0.1:0", testtarget.Echo).String()
	m := f.dialMux(f.mintFor(target, token.SessionClaims{Reusable: true}))
	if _, err := exchange(m.open(t), 10); err != nil {
		t.Fatal(err)
	}
	clk.Advance(2 * time.Minute)
	if r := failure(t, m.open(t)); !strings.Contains(r, "session token refused: token: expired") {
		t.Fatalf("after expiry: %q", r)
	}

	clk.Set(time.Now())
	m = f.dialMux(f.mintFor(target, token.SessionClaims{Reusable: true}))
	if err := f.store.RevokeAPIKey(t.Context(), "key-1"); err != nil {
		t.Fatal(err)
	}
	if r := failure(t, m.open(t)); r != RevokedKeyMessage {
		t.Fatalf("after revocation: %q", r)
	}
}

// Refusals before the upgrade answer HTTP errors, like the WebSocket's.
func TestMuxUpgradeRefusals(t *testing.T) {
	f := newFixture(t, nil)
	tok := f.mint(token.SessionClaims{})
	for _, tc := range []struct {
		method, tok string
		status      int
		body        string
	}{
		{"GET", "garbage", 401, "session token refused"},
		{"POST", tok, 405, "needs a GET"},
	} {
		_, _, resp := f.upgrade(tc.method, tc.tok)
		b, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != tc.status || !strings.Contains(string(b), tc.body) {
			t.Errorf("%s: %d %s", tc.method, resp.StatusCode, b)
		}
	}
	// The token was not used: it still opens its session.
	if _, err := exchange(f.dialMux(tok).open(t), 5); err != nil {
		t.Fatal(err)
	}
}

// A session that resets ends alone: the others on the connection go on,
// and its audit says reset.
func TestMuxResetIsolation(t *testing.T) {
	f := newFixture(t, nil)
	target := testtarget.Listen(t, "127.0.0.1:0", testtarget.Echo).String()
	m := f.dialMux(f.mintFor(target, token.SessionClaims{Reusable: true}))
	victim := m.open(t)
	others := []*muxstream.Stream{m.open(t), m.open(t), m.open(t)}
	if _, err := victim.Write([]byte("about to vanish")); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 4)
	if _, err := io.ReadFull(victim, buf); err != nil { // the session is up
		t.Fatal(err)
	}
	victim.Abort(relay.ErrorCodeReset)
	for i, s := range others {
		if got, err := exchange(s, 200_000); err != nil || !bytes.Equal(sha(got), testtarget.PatternSum(200_000)) {
			t.Fatalf("session %d after another's reset: %d bytes, %v", i, len(got), err)
		}
	}
	var resets int
	for _, rec := range f.audit.outcomes(t, 4) {
		switch rec.Outcome {
		case broker.OutcomeReset:
			resets++
		case "ok":
		default:
			t.Errorf("session %s: %s %q", rec.ID, rec.Outcome, rec.Reason)
		}
	}
	if resets != 1 {
		t.Errorf("%d sessions audited as reset, want 1", resets)
	}
}

// When the connection goes, its sessions end (client_gone), and a new
// connection serves at once.
func TestMuxConnectionLost(t *testing.T) {
	f := newFixture(t, nil)
	target := testtarget.Listen(t, "127.0.0.1:0", testtarget.Sink(nil)).String()
	tok := f.mintFor(target, token.SessionClaims{Reusable: true})
	m := f.dialMux(tok)
	s := m.open(t)
	if _, err := s.Write(make([]byte, 100_000)); err != nil {
		t.Fatal(err)
	}
	waitFor(t, func() bool { return liveCount(f.h) == 1 })
	m.raw.Close()
	rec := f.audit.outcomes(t, 1)[0]
	if rec.Outcome != broker.ErrClientGone.Outcome || rec.Reason != errConnectionLost.Reason {
		t.Fatalf("session on a lost connection: %s %q", rec.Outcome, rec.Reason)
	}
	if _, err := io.ReadAll(s); !errors.Is(err, muxstream.ErrConnectionLost) {
		t.Fatalf("client side of the lost session: %v", err)
	}
	echo := testtarget.Listen(t, "127.0.0.1:0", testtarget.Echo).String()
	if _, err := exchange(f.dialMux(f.mintFor(echo, token.SessionClaims{Reusable: true})).open(t), 10); err != nil {
		t.Fatal(err)
	}
}

// A hostile client is bounded, and the gateway keeps serving others: past
// the per-connection cap sessions are refused, and a client that keeps
// opening streams loses its connection; so does one that sends a frame
// larger than its window or floods pings; a session whose frames are
// malformed ends alone; one that never sends ends when idle.
func TestMuxHostileClients(t *testing.T) {
	f := newFixture(t, func(c *Config) {
		c.MaxStreamsPerConnection = 4
		c.IdleTimeout = slotWait + time.Second // the cap refuses before the idle end
	})
	echo := testtarget.Listen(t, "127.0.0.1:0", testtarget.Echo).String()
	tok := f.mintFor(echo, token.SessionClaims{Reusable: true})
	served := func(what string) {
		t.Helper()
		if _, err := exchange(f.dialMux(tok).open(t), 1000); err != nil {
			t.Fatalf("a well-behaved client after %s: %v", what, err)
		}
	}

	// Streams opened and never written: held up to the cap; one more waits
	// for a slot, then is refused; they end with the idle timeout.
	m := f.dialMux(tok)
	if m.max != 4 {
		t.Fatalf("announced cap %d, want 4", m.max)
	}
	idle := []*muxstream.Stream{m.open(t), m.open(t), m.open(t), m.open(t)}
	waitFor(t, func() bool { return liveCount(f.h) == 4 })
	if r := failure(t, m.open(t)); !strings.Contains(r, "maximum of 4 sessions") {
		t.Fatalf("past the cap: %q", r)
	}
	for _, s := range idle {
		if r := failure(t, s); r != broker.ErrIdle.Reason {
			t.Fatalf("idle session: %q", r)
		}
	}
	served("idle sessions")

	// A flood of stream opens that never closes the refused ones.
	m = f.dialMux(tok)
	for range 64 {
		if _, err := m.sess.OpenStream(); err != nil {
			break
		}
	}
	select {
	case <-m.sess.CloseChan():
	case <-time.After(10 * time.Second):
		t.Fatal("the gateway kept a connection flooding it with streams")
	}
	served("a stream flood")

	// A DATA frame of the session format past its limit ends that session
	// only.
	m = f.dialMux(tok)
	bad, err := m.sess.OpenStream()
	if err != nil {
		t.Fatal(err)
	}
	good := m.open(t)
	if _, err := bad.Write(binary.BigEndian.AppendUint32([]byte{0x00}, muxstream.MaxData+1)); err != nil {
		t.Fatal(err)
	}
	if _, err := exchange(good, 5000); err != nil {
		t.Fatalf("session beside a malformed one: %v", err)
	}

	// Raw yamux frames: one larger than the stream window, and a ping flood.
	for name, frames := range map[string][]byte{
		"oversized frame": yamuxHeader(0, 1, 1, 64<<20), // SYN + DATA of 64 MiB
		"ping flood":      bytes.Repeat(yamuxHeader(2, 1, 0, 7), 10*muxstream.PingBurst),
	} {
		c, br, resp := f.upgrade("GET", tok)
		if resp.StatusCode != 101 {
			t.Fatalf("%s: upgrade %d", name, resp.StatusCode)
		}
		if _, err := c.Write(frames); err != nil {
			t.Fatal(err)
		}
		c.SetReadDeadline(time.Now().Add(10 * time.Second))
		if _, err := io.Copy(io.Discard, br); err != nil {
			t.Fatalf("%s: the gateway kept the connection: %v", name, err)
		}
		served(name)
	}
}

// yamuxHeader is a raw yamux frame header.
func yamuxHeader(typ uint8, flags uint16, stream, length uint32) []byte {
	b := []byte{0, typ}
	b = binary.BigEndian.AppendUint16(b, flags)
	b = binary.BigEndian.AppendUint32(b, stream)
	return binary.BigEndian.AppendUint32(b, length)
}

// A shutdown lets live sessions finish, refuses new ones on their
// connections (GoAway), and closes idle connections at once.
func TestMuxShutdown(t *testing.T) {
	f := newFixture(t, nil)
	echo := testtarget.Listen(t, "127.0.0.1:0", testtarget.Echo).String()
	tok := f.mintFor(echo, token.SessionClaims{Reusable: true})
	busy, idle := f.dialMux(tok), f.dialMux(tok)
	s := busy.open(t)
	if _, err := s.Write([]byte("hold")); err != nil {
		t.Fatal(err)
	}
	waitFor(t, func() bool { return liveCount(f.h) == 1 })
	done := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		done <- f.h.Shutdown(ctx)
	}()
	select {
	case <-idle.sess.CloseChan():
	case <-time.After(10 * time.Second):
		t.Fatal("an idle standing connection outlived the shutdown's start")
	}
	waitFor(t, func() bool {
		_, err := busy.sess.OpenStream()
		return errors.Is(err, yamux.ErrRemoteGoAway)
	})
	if err := s.CloseWrite(); err != nil {
		t.Fatal(err)
	}
	if got, err := io.ReadAll(s); err != nil || string(got) != "hold" {
		t.Fatalf("the live session during the drain: %q %v", got, err)
	}
	s.Close()
	if err := <-done; err != nil {
		t.Fatalf("shutdown: %v", err)
	}
}

// A WebSocket client that closes without a half-close ends its session
// normally: ok when the target had nothing more to say, closed when it
// did; never error.
func TestWebSocketPlainClose(t *testing.T) {
	f := newFixture(t, nil)
	// The fixture's own dial closes after one echo: the target then ends.
	if status, body := f.dial(f.mint(token.SessionClaims{}), nil); status != 101 {
		t.Fatalf("%d %s", status, body)
	}
	if rec := f.audit.outcomes(t, 1)[0]; rec.Outcome != "ok" {
		t.Fatalf("plain close after the echo: %s %q", rec.Outcome, rec.Reason)
	}

	// A target that keeps talking after the client closed.
	source := testtarget.Listen(t, "127.0.0.1:0", testtarget.Source(1<<30)).String()
	tok := f.mintFor(source, token.SessionClaims{})
	tr := f.srv.Client().Transport.(*http.Transport).Clone()
	tr.ForceAttemptHTTP2 = false
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	ws, _, err := websocket.Dial(ctx, "wss"+strings.TrimPrefix(f.srv.URL, "https")+Path,
		&websocket.DialOptions{HTTPClient: &http.Client{Transport: tr}, HTTPHeader: http.Header{"Authorization": {"Bearer " + tok}}})
	if err != nil {
		t.Fatal(err)
	}
	ws.SetReadLimit(1 << 20)
	if _, _, err := ws.Read(ctx); err != nil {
		t.Fatal(err)
	}
	ws.Close(websocket.StatusNormalClosure, "")
	recs := f.audit.outcomes(t, 2)
	for _, rec := range recs {
		if rec.Outcome != "ok" && rec.Outcome != broker.ErrClientClosed.Outcome {
			t.Errorf("plain close: %s %q", rec.Outcome, rec.Reason)
		}
	}
}
