package e2e

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"database/sql"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"

	outpostv1 "github.com/outposthq/outpost/gen/outpost/v1"
	"github.com/outposthq/outpost/server"
	"github.com/outposthq/outpost/server/apiclient"
)

// revokedMessage is the entry's answer to a token whose API key was revoked.
const revokedMessage = "the API key that created this token was revoked"

// keyAdmin runs fn on the running gateway's store, as the
// "outpost gateway apikey" commands do, and fails the test on its error.
func (gw *gateway) keyAdmin(fn func(ctx context.Context, a *server.KeyAdmin) error) {
	gw.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	admin, err := server.OpenKeyAdmin(ctx, gw.cfg.DataDir, gw.cfg.Store, testLogger(gw.t, "keyadmin"))
	if err != nil {
		gw.t.Fatal(err)
	}
	defer admin.Close()
	if err := fn(ctx, admin); err != nil {
		gw.t.Fatal(err)
	}
}

// apiKey creates an API key and returns its id and secret.
func (gw *gateway) apiKey(name string, scopes ...string) (id, secret string) {
	gw.t.Helper()
	gw.keyAdmin(func(ctx context.Context, a *server.KeyAdmin) error {
		var err error
		if secret, err = a.Create(ctx, name, scopes); err != nil {
			return err
		}
		keys, err := a.List(ctx)
		for _, k := range keys {
			if k.Name == name {
				id = k.ID
			}
		}
		return err
	})
	return id, secret
}

// revokeKey revokes an API key.
func (gw *gateway) revokeKey(id string) {
	gw.t.Helper()
	gw.keyAdmin(func(ctx context.Context, a *server.KeyAdmin) error { return a.Revoke(ctx, id) })
}

// sessionAs mints a session token with the API key secret.
func (gw *gateway) sessionAs(secret string, req *outpostv1.CreateSessionRequest) (*outpostv1.CreateSessionResponse, error) {
	gw.t.Helper()
	c, err := apiclient.Dial(apiclient.Config{Gateway: gw.url, APIKey: secret, CAPEM: gw.g.CACertPEM()})
	if err != nil {
		gw.t.Fatal(err)
	}
	defer c.Close()
	return createSession(c, req)
}

func createSession(c *grpc.ClientConn, req *outpostv1.CreateSessionRequest) (*outpostv1.CreateSessionResponse, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	return outpostv1.NewRouteResolveServiceClient(c).CreateSession(ctx, req)
}

// refused reports whether err is the entry's refusal with HTTP status
// code and a body holding want.
func refused(err error, code int, want string) bool {
	return err != nil && strings.Contains(err.Error(), fmt.Sprintf("(HTTP %d)", code)) && strings.Contains(err.Error(), want)
}

// Revoking an API key stops every session token it minted, at once; the
// tokens of other keys go on working.
func TestSessionTokenRevokedKey(t *testing.T) {
	gw := startGateway(t, t.TempDir(), nil)
	target := tcpServer(t, echo)
	id, secret := gw.apiKey("ci", "sessions.create")
	single, err := gw.sessionAs(secret, &outpostv1.CreateSessionRequest{Target: target})
	if err != nil {
		t.Fatal(err)
	}
	reusable, err := gw.sessionAs(secret, &outpostv1.CreateSessionRequest{Target: target, Reusable: true})
	if err != nil {
		t.Fatal(err)
	}
	other := gw.session(&outpostv1.CreateSessionRequest{Target: target, Reusable: true}) // the admin key's
	s, err := openSession(t, reusable)
	if err != nil {
		t.Fatalf("before revocation: %v", err)
	}
	s.Close()

	gw.revokeKey(id)
	for name, resp := range map[string]*outpostv1.CreateSessionResponse{"single-use": single, "reusable": reusable} {
		if _, err := openSession(t, resp); !refused(err, 401, revokedMessage) {
			t.Errorf("%s token of a revoked key: %v", name, err)
		}
	}
	s, err = openSession(t, other)
	if err != nil {
		t.Fatalf("another key's token after the revocation: %v", err)
	}
	s.Close()
	if _, err := gw.sessionAs(secret, &outpostv1.CreateSessionRequest{Target: target}); status.Code(err) != codes.Unauthenticated {
		t.Fatalf("minting with the revoked key: %v", err)
	}
}

// A reusable token opens as many connections as its cap and not one more;
// the cap defaults to the gateway's max_token_connections, which bounds
// what a token may ask for.
func TestSessionTokenConnectionCap(t *testing.T) {
	gw := startGateway(t, t.TempDir(), func(c *server.Config) { c.MaxTokenConnections = 4 })
	target := tcpServer(t, echo)
	admin := gw.conn()

	for _, tc := range []struct{ ask, want uint32 }{{3, 3}, {0, 4}} {
		resp, err := createSession(admin, &outpostv1.CreateSessionRequest{Target: target, Reusable: true, MaxConnections: tc.ask})
		if err != nil {
			t.Fatal(err)
		}
		if resp.GetMaxConnections() != tc.want {
			t.Fatalf("asked for %d connections, got a cap of %d, want %d", tc.ask, resp.GetMaxConnections(), tc.want)
		}
		for i := range tc.want {
			s, err := openSession(t, resp)
			if err != nil {
				t.Fatalf("cap %d, connection %d: %v", tc.want, i+1, err)
			}
			s.Close()
		}
		want := fmt.Sprintf("session token refused: its connection limit (%d) is reached", tc.want)
		if _, err := openSession(t, resp); !refused(err, 401, want) {
			t.Fatalf("cap %d, connection %d: %v", tc.want, tc.want+1, err)
		}
	}
	// The cap is checked in one statement: concurrent connections past it
	// are refused too.
	resp, err := createSession(admin, &outpostv1.CreateSessionRequest{Target: target, Reusable: true, MaxConnections: 2})
	if err != nil {
		t.Fatal(err)
	}
	errs := make(chan error, 6)
	for range cap(errs) {
		go func() {
			s, err := openSession(t, resp)
			if err == nil {
				s.Close()
			}
			errs <- err
		}()
	}
	ok := 0
	for range cap(errs) {
		switch err := <-errs; {
		case err == nil:
			ok++
		case !refused(err, 401, "connection limit (2)"):
			t.Errorf("concurrent connection: %v", err)
		}
	}
	if ok != 2 {
		t.Fatalf("%d concurrent connections opened with a cap of 2", ok)
	}

	for _, bad := range []*outpostv1.CreateSessionRequest{
		{Target: target, Reusable: true, MaxConnections: 5},
		{Target: target, MaxConnections: 2},
	} {
		if _, err := createSession(admin, bad); status.Code(err) != codes.InvalidArgument || !strings.Contains(err.Error(), "max_connections") {
			t.Errorf("CreateSession(%v): %v, want INVALID_ARGUMENT for max_connections", bad, err)
		}
	}
	if resp := gw.session(&outpostv1.CreateSessionRequest{Target: target}); resp.GetMaxConnections() != 1 {
		t.Errorf("single-use token's cap: %d", resp.GetMaxConnections())
	}
}

// A session that reaches its token's maximum duration is closed with the
// reason, and its audit row says so; the gateway's own maximum bounds what
// a token may ask for.
func TestSessionMaxDuration(t *testing.T) {
	gw := startGateway(t, t.TempDir(), func(c *server.Config) { c.MaxSessionDuration = server.Duration(time.Hour); directToLoopback(c) })
	target := tcpServer(t, echo)
	resp := gw.session(&outpostv1.CreateSessionRequest{Target: target, MaxSessionDuration: durationpb.New(time.Second)})
	if d := resp.GetMaxSessionDuration().AsDuration(); d != time.Second {
		t.Fatalf("answered max_session_duration %v", d)
	}
	start := time.Now()
	s, err := openSession(t, resp)
	if err != nil {
		t.Fatal(err)
	}
	// The session works until its time is up.
	s.Write([]byte("hello"))
	buf := make([]byte, 5)
	if _, err := io.ReadFull(s, buf); err != nil || string(buf) != "hello" {
		t.Fatalf("echo: %q %v", buf, err)
	}
	if reason := readFailure(t, s); reason != "maximum session duration reached" {
		t.Fatalf("close reason %q", reason)
	}
	if d := time.Since(start); d < time.Second || d > 20*time.Second {
		t.Errorf("a 1 s session lasted %v", d)
	}
	gw.stop()
	rec := auditRow(t, gw, resp.GetSessionId())
	if rec.outcome != "max_duration" || rec.reason != "maximum session duration reached" || rec.up != 5 || rec.down != 5 {
		t.Errorf("audit row %+v", rec)
	}

	gw2 := startGateway(t, t.TempDir(), func(c *server.Config) { c.MaxSessionDuration = server.Duration(time.Hour); directToLoopback(c) })
	if resp := gw2.session(&outpostv1.CreateSessionRequest{Target: target}); resp.GetMaxSessionDuration().AsDuration() != time.Hour {
		t.Errorf("default max_session_duration %v, want the gateway's 1h", resp.GetMaxSessionDuration().AsDuration())
	}
	_, err = createSession(gw2.conn(), &outpostv1.CreateSessionRequest{Target: target, MaxSessionDuration: durationpb.New(time.Hour + time.Second)})
	if status.Code(err) != codes.InvalidArgument || !strings.Contains(err.Error(), "max_session_duration") {
		t.Errorf("above the gateway's maximum: %v", err)
	}
}

// entryDialer is a WebSocket client of the entry that trusts the gateway's
// CA and sends the headers a test gives it.
func (gw *gateway) entryDial(tok string, hdr http.Header) (*websocket.Conn, *http.Response, error) {
	gw.t.Helper()
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(gw.g.CACertPEM())
	hc := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
	defer hc.CloseIdleConnections()
	if hdr == nil {
		hdr = http.Header{}
	}
	hdr.Set("Authorization", "Bearer "+tok)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	return websocket.Dial(ctx, "wss://"+gw.g.Addr().String()+"/v1/connect", &websocket.DialOptions{HTTPClient: hc, HTTPHeader: hdr})
}

// Requests the entry cannot upgrade — a plain GET, an HTTP/2 GET (curl's
// default), a cross-origin WebSocket handshake — are refused without using
// up a single-use token.
func TestSessionTokenNotBurntByRefusals(t *testing.T) {
	gw := startGateway(t, t.TempDir(), nil)
	target := tcpServer(t, echo)
	resp := gw.session(&outpostv1.CreateSessionRequest{Target: target})
	tok := resp.GetToken()

	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(gw.g.CACertPEM())
	get := func(h2 bool) (int, string, string) {
		tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}, ForceAttemptHTTP2: h2}
		defer tr.CloseIdleConnections()
		req, _ := http.NewRequest("GET", gw.url+"/v1/connect", nil)
		req.Header.Set("Authorization", "Bearer "+tok)
		r, err := (&http.Client{Transport: tr, Timeout: 10 * time.Second}).Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer r.Body.Close()
		b, _ := io.ReadAll(r.Body)
		return r.StatusCode, r.Proto, string(b)
	}
	if code, proto, body := get(false); code != 426 || proto != "HTTP/1.1" || !strings.Contains(body, "session token was not used") {
		t.Fatalf("plain GET: %s %d %q", proto, code, body)
	}
	if code, proto, body := get(true); code != 400 || proto != "HTTP/2.0" || !strings.Contains(body, "needs HTTP/1.1") {
		t.Fatalf("HTTP/2 GET: %s %d %q", proto, code, body)
	}
	_, r, err := gw.entryDial(tok, http.Header{"Origin": {"https://evil.example"}})
	if err == nil || r == nil || r.StatusCode != 403 {
		t.Fatalf("cross-origin handshake: %v %v", r, err)
	}

	s, err := openSession(t, resp)
	if err != nil {
		t.Fatalf("the token after three refusals: %v", err)
	}
	s.Close()
	if _, err := openSession(t, resp); !refused(err, 401, "already used") {
		t.Fatalf("second use: %v", err)
	}
}

// allowed_origins lets a listed site's pages open sessions; others stay
// refused.
func TestEntryAllowedOrigins(t *testing.T) {
	gw := startGateway(t, t.TempDir(), func(c *server.Config) { c.AllowedOrigins = []string{"https://app.example.test"} })
	target := tcpServer(t, echo)
	resp := gw.session(&outpostv1.CreateSessionRequest{Target: target})
	if _, r, err := gw.entryDial(resp.GetToken(), http.Header{"Origin": {"https://other.example.test"}}); err == nil || r == nil || r.StatusCode != 403 {
		t.Fatalf("unlisted origin: %v %v", r, err)
	}
	ws, _, err := gw.entryDial(resp.GetToken(), http.Header{"Origin": {"https://app.example.test"}})
	if err != nil {
		t.Fatalf("listed origin: %v", err)
	}
	ws.Close(websocket.StatusNormalClosure, "")
}

// audit is a session's audit row as the store holds it.
type audit struct {
	keyID, clientAddr, outcome, reason string
	up, down                           int64
}

// auditRow reads a session's audit row from a stopped gateway's store.
func auditRow(t *testing.T, gw *gateway, id string) audit {
	t.Helper()
	var a audit
	err := gw.auditDB().QueryRow(`SELECT key_id, client_addr, outcome, reason, bytes_up, bytes_down FROM sessions WHERE id = $1`, id).
		Scan(&a.keyID, &a.clientAddr, &a.outcome, &a.reason, &a.up, &a.down)
	if errors.Is(err, sql.ErrNoRows) {
		t.Fatalf("no audit row for session %s", id)
	}
	if err != nil {
		t.Fatal(err)
	}
	return a
}

// The audit names the API key that minted the token and the client's
// address.
func TestSessionAuditKeyAndClient(t *testing.T) {
	gw := startGateway(t, t.TempDir(), nil)
	target := tcpServer(t, echo)
	id, secret := gw.apiKey("backend", "sessions.create")
	resp, err := gw.sessionAs(secret, &outpostv1.CreateSessionRequest{Target: target})
	if err != nil {
		t.Fatal(err)
	}
	s, err := openSession(t, resp)
	if err != nil {
		t.Fatal(err)
	}
	s.Close()
	gw.stop()
	rec := auditRow(t, gw, resp.GetSessionId())
	if rec.keyID != id || !strings.HasPrefix(rec.clientAddr, "127.0.0.1:") || rec.clientAddr == "127.0.0.1:" {
		t.Fatalf("audit row %+v, want key %s and a 127.0.0.1 client address", rec, id)
	}
}
