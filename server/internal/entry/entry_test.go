package entry

import (
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/golang-jwt/jwt/v5"
	"github.com/hashicorp/go-hclog"

	"github.com/outposthq/outpost/internal/testlog"
	"github.com/outposthq/outpost/server/internal/audit"
	"github.com/outposthq/outpost/server/internal/brokertest"
	"github.com/outposthq/outpost/server/internal/origin"
	"github.com/outposthq/outpost/server/internal/store"
	"github.com/outposthq/outpost/server/internal/token"
)

// fixture is an entry on loopback (TLS, HTTP/1.1 and HTTP/2) whose broker
// dials targets directly, with a real store holding API key "key-1".
type fixture struct {
	t      *testing.T
	srv    *httptest.Server
	h      *Handler
	store  *store.SQLite
	audit  *recorder
	tokens *token.Issuer
	logs   *testlog.Writer
	target string // a loopback echo server
}

func newFixture(t *testing.T, mutate func(*Config)) *fixture {
	t.Helper()
	iss := brokertest.Issuer(t)
	ctx := t.Context()
	st, err := store.OpenSQLite(ctx, filepath.Join(t.TempDir(), "outpost.db"), store.Config{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	if err := st.CreateAPIKey(ctx, store.APIKey{ID: "key-1", Name: "test", Hash: []byte{1}, Scopes: []string{"*"}}); err != nil {
		t.Fatal(err)
	}
	// Created before the entry, so that it stops after the entry's
	// sessions: its echo ends when they do.
	target := brokertest.Target(t, func(c net.Conn) { io.Copy(c, c); c.Close() })
	w, err := audit.New(st, audit.Config{Logger: testlog.Logger(t, "audit")})
	if err != nil {
		t.Fatal(err)
	}
	// Registered before the entry's cleanup, so it runs after: the
	// sessions have ended and recorded their ends.
	t.Cleanup(func() {
		if err := w.Close(); err != nil {
			t.Errorf("audit writer: %v", err)
		}
	})
	rec := &recorder{w: w, ended: map[string]store.SessionRecord{}}
	b := brokertest.Direct(t, rec)
	logs := testlog.New(t)
	cfg := Config{Tokens: iss, Store: st, Broker: b,
		Logger: hclog.New(&hclog.LoggerOptions{Name: "entry", Level: hclog.Info, Output: logs})}
	if mutate != nil {
		mutate(&cfg)
	}
	h, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	h.Start()
	srv := httptest.NewUnstartedServer(h)
	srv.EnableHTTP2 = true
	srv.StartTLS()
	t.Cleanup(func() {
		srv.Close()
		h.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		h.Shutdown(ctx)
	})
	return &fixture{t: t, srv: srv, h: h, store: st, audit: rec, tokens: iss, logs: logs, target: target}
}

// recorder is the broker's auditor: it keeps the end of every session and
// hands every record on to the audit writer of the fixture's store.
type recorder struct {
	w     *audit.Writer
	mu    sync.Mutex
	ended map[string]store.SessionRecord // by session id; guarded by mu
}

func (r *recorder) Record(rec store.SessionRecord) {
	if !rec.EndedAt.IsZero() {
		r.mu.Lock()
		r.ended[rec.ID] = rec
		r.mu.Unlock()
	}
	r.w.Record(rec)
}

// outcomes waits until n sessions ended and returns them.
func (r *recorder) outcomes(t *testing.T, n int) []store.SessionRecord {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	tick := time.NewTicker(2 * time.Millisecond)
	defer tick.Stop()
	for {
		r.mu.Lock()
		got := len(r.ended)
		var recs []store.SessionRecord
		if got >= n {
			for _, rec := range r.ended {
				recs = append(recs, rec)
			}
		}
		r.mu.Unlock()
		if got >= n {
			return recs
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d sessions ended, want %d", got, n)
		}
		<-tick.C
	}
}

// mint returns a session token for the fixture's target.
func (f *fixture) mint(c token.SessionClaims) string {
	f.t.Helper()
	if c.Subject == "" {
		c.Subject = "key-1"
	}
	c.Target = f.target
	tok, _, err := f.tokens.NewSession(c, time.Minute)
	if err != nil {
		f.t.Fatal(err)
	}
	return tok
}

// dial opens a WebSocket over HTTP/1.1 with the token and extra headers,
// and checks an echo through it. It returns the HTTP status and body of a
// refusal, or 101.
func (f *fixture) dial(tok string, hdr http.Header) (int, string) {
	f.t.Helper()
	tr := f.srv.Client().Transport.(*http.Transport).Clone()
	tr.ForceAttemptHTTP2 = false
	tr.TLSClientConfig.NextProtos = []string{"http/1.1"}
	if hdr == nil {
		hdr = http.Header{}
	}
	hdr.Set("Authorization", "Bearer "+tok)
	ctx, cancel := context.WithTimeout(f.t.Context(), 10*time.Second)
	defer cancel()
	ws, resp, err := websocket.Dial(ctx, "wss"+strings.TrimPrefix(f.srv.URL, "https")+Path,
		&websocket.DialOptions{HTTPClient: &http.Client{Transport: tr}, HTTPHeader: hdr})
	if err != nil {
		if resp == nil {
			f.t.Fatalf("dial: %v", err)
		}
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, strings.TrimSpace(string(b))
	}
	defer ws.CloseNow()
	if err := ws.Write(ctx, websocket.MessageBinary, []byte("ping")); err != nil {
		f.t.Fatal(err)
	}
	if _, got, err := ws.Read(ctx); err != nil || string(got) != "ping" {
		f.t.Fatalf("echo: %q %v", got, err)
	}
	ws.Close(websocket.StatusNormalClosure, "")
	return http.StatusSwitchingProtocols, ""
}

// do sends a plain request with the token and returns status and body.
func (f *fixture) do(client *http.Client, method, tok string, hdr http.Header) (int, string, string) {
	f.t.Helper()
	req, err := http.NewRequestWithContext(f.t.Context(), method, f.srv.URL+Path, nil)
	if err != nil {
		f.t.Fatal(err)
	}
	for k, v := range hdr {
		req.Header[k] = v
	}
	req.Header.Set("Authorization", "Bearer "+tok)
	resp, err := client.Do(req)
	if err != nil {
		f.t.Fatalf("%s: %v", method, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, strings.TrimSpace(string(b)), resp.Proto
}

func http1Client(f *fixture) *http.Client {
	tr := f.srv.Client().Transport.(*http.Transport).Clone()
	tr.ForceAttemptHTTP2 = false
	tr.TLSClientConfig.NextProtos = []string{"http/1.1"}
	tr.TLSNextProto = map[string]func(string, *tls.Conn) http.RoundTripper{}
	return &http.Client{Transport: tr}
}

// Requests the entry cannot upgrade are refused before the token is
// counted: the single-use token still opens its one session afterwards.
func TestRefusalsDoNotUseToken(t *testing.T) {
	f := newFixture(t, nil)
	tok := f.mint(token.SessionClaims{})
	h1 := http1Client(f)
	upgrade := func(mod func(http.Header)) http.Header {
		h := http.Header{"Connection": {"Upgrade"}, "Upgrade": {"websocket"}, "Sec-Websocket-Version": {"13"},
			"Sec-Websocket-Key": {"dGhlIHNhbXBsZSBub25jZQ=="}}
		if mod != nil {
			mod(h)
		}
		return h
	}
	cases := []struct {
		name   string
		client *http.Client
		method string
		hdr    http.Header
		status int
		body   string
	}{
		{"plain GET", h1, "GET", nil, 426, "needs a WebSocket handshake"},
		{"HTTP/2 GET", f.srv.Client(), "GET", nil, 400, "needs HTTP/1.1, this request came over HTTP/2.0"},
		{"HEAD", h1, "HEAD", upgrade(nil), 405, ""},
		{"POST", h1, "POST", upgrade(nil), 405, "needs a GET, not POST"},
		{"Connection without Upgrade", h1, "GET", upgrade(func(h http.Header) { h.Set("Connection", "keep-alive") }), 426, "WebSocket handshake"},
		{"Upgrade: h2c", h1, "GET", upgrade(func(h http.Header) { h.Set("Upgrade", "h2c") }), 426, "WebSocket handshake"},
		{"version 8", h1, "GET", upgrade(func(h http.Header) { h.Set("Sec-Websocket-Version", "8") }), 400, "version"},
		{"no key", h1, "GET", upgrade(func(h http.Header) { h.Del("Sec-Websocket-Key") }), 400, "Sec-WebSocket-Key"},
		{"two keys", h1, "GET", upgrade(func(h http.Header) { h.Add("Sec-Websocket-Key", "dGhlIHNhbXBsZSBub25jZQ==") }), 400, "Sec-WebSocket-Key"},
		{"short key", h1, "GET", upgrade(func(h http.Header) { h.Set("Sec-Websocket-Key", "c2hvcnQ=") }), 400, "Sec-WebSocket-Key"},
		{"cross-origin", h1, "GET", upgrade(func(h http.Header) { h.Set("Origin", "https://evil.example") }), 403, "https://evil.example is neither this gateway"},
		{"null origin", h1, "GET", upgrade(func(h http.Header) { h.Set("Origin", "null") }), 403, "origin not allowed"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			status, body, proto := f.do(tc.client, tc.method, tok, tc.hdr)
			if status != tc.status || !strings.Contains(body, tc.body) {
				t.Fatalf("%s: %d %q, want %d with %q", proto, status, body, tc.status, tc.body)
			}
			if tc.method != "HEAD" && !strings.Contains(body, "the session token was not used") {
				t.Errorf("body %q does not say the token was not used", body)
			}
		})
	}
	// A cross-origin WebSocket handshake through a real client.
	if status, body := f.dial(tok, http.Header{"Origin": {"https://evil.example"}}); status != 403 {
		t.Fatalf("cross-origin dial: %d %q", status, body)
	}
	// The gateway's own origin is allowed.
	if status, body := f.dial(tok, http.Header{"Origin": {"https://" + f.srv.Listener.Addr().String()}}); status != 101 {
		t.Fatalf("same-origin dial after every refusal: %d %q", status, body)
	}
	if status, body := f.dial(tok, nil); status != 401 || !strings.Contains(body, "already used") {
		t.Fatalf("second use: %d %q", status, body)
	}
	logs := f.logs.String()
	if n := strings.Count(logs, "[INFO]  entry: session refused"); n != len(cases)+2 {
		t.Errorf("%d refusals logged at INFO, want %d:\n%s", n, len(cases)+2, logs)
	}
	if strings.Contains(logs, tok) || strings.Contains(logs, strings.Split(tok, ".")[2]) {
		t.Error("the token appears in the logs")
	}
}

// A token whose API key is revoked, or unknown, is refused; one without a
// key id never gets past verification.
func TestTokenRevokedKey(t *testing.T) {
	f := newFixture(t, nil)
	tok := f.mint(token.SessionClaims{Reusable: true})
	if status, body := f.dial(tok, nil); status != 101 {
		t.Fatalf("before revocation: %d %q", status, body)
	}
	if err := f.store.RevokeAPIKey(t.Context(), "key-1"); err != nil {
		t.Fatal(err)
	}
	if status, body := f.dial(tok, nil); status != 401 || body != RevokedKeyMessage {
		t.Fatalf("after revocation: %d %q", status, body)
	}
	unknown := f.mint(token.SessionClaims{RegisteredClaims: jwt.RegisteredClaims{Subject: "no-such-key"}})
	if status, body := f.dial(unknown, nil); status != 401 || body != RevokedKeyMessage {
		t.Fatalf("unknown key: %d %q", status, body)
	}
	if !f.logs.Contains("reason=\"" + RevokedKeyMessage + "\"") {
		t.Error("revocation refusal not logged with its reason")
	}
}

// A reusable token opens at most its cap of connections, and never more
// than the gateway's; refusals past it say the cap.
func TestTokenConnectionCap(t *testing.T) {
	f := newFixture(t, func(c *Config) { c.MaxConnections = 4 })
	for _, tc := range []struct {
		claim uint32
		want  int
	}{{2, 2}, {0, 4}, {9, 4}} {
		tok := f.mint(token.SessionClaims{Reusable: true, MaxConnections: tc.claim})
		for i := range tc.want {
			if status, body := f.dial(tok, nil); status != 101 {
				t.Fatalf("cap %d, connection %d: %d %q", tc.claim, i+1, status, body)
			}
		}
		status, body := f.dial(tok, nil)
		if want := fmt.Sprintf("its connection limit (%d) is reached", tc.want); status != 401 || !strings.Contains(body, want) {
			t.Fatalf("cap %d, connection %d: %d %q, want 401 %q", tc.claim, tc.want+1, status, body, want)
		}
	}
}

// Listed origins are allowed; others stay refused.
func TestAllowedOrigins(t *testing.T) {
	p, err := origin.Parse([]string{"https://app.example.com"}, false)
	if err != nil {
		t.Fatal(err)
	}
	f := newFixture(t, func(c *Config) { c.Origins = p })
	tok := f.mint(token.SessionClaims{Reusable: true})
	if status, body := f.dial(tok, http.Header{"Origin": {"https://app.example.com"}}); status != 101 {
		t.Fatalf("listed origin: %d %q", status, body)
	}
	if status, _ := f.dial(tok, http.Header{"Origin": {"https://other.example.com"}}); status != 403 {
		t.Fatalf("unlisted origin: %d", status)
	}
}

func TestSessionMaxDuration(t *testing.T) {
	h := &Handler{cfg: Config{MaxSessionDuration: time.Hour}}
	for _, tc := range []struct {
		claimMS int64
		want    time.Duration
	}{{0, time.Hour}, {1500, 1500 * time.Millisecond}, {int64(2 * time.Hour / time.Millisecond), time.Hour}} {
		if got := h.maxDuration(token.SessionClaims{MaxDurationMS: tc.claimMS}); got != tc.want {
			t.Errorf("claim %d ms: %v, want %v", tc.claimMS, got, tc.want)
		}
	}
}
