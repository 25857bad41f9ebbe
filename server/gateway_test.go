package server

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"go.uber.org/goleak"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	outpostv1 "github.com/outposthq/outpost/gen/outpost/v1"
	"github.com/outposthq/outpost/internal/testlog"
	"github.com/outposthq/outpost/internal/testpg"
)

func TestMain(m *testing.M) {
	// The PostgreSQL test server stops before goleak looks.
	goleak.VerifyTestMain(testpg.StopAfter(m))
}

// testLogger routes gateway logs to t.Logf.
func testLogger(t *testing.T) hclog.Logger {
	return testlog.Logger(t, t.Name())
}

// newTestGateway is New for the suite: with OUTPOST_TEST_STORE=postgres
// (testpg.StoreEnv) a config that names no store gets the test's own
// PostgreSQL database and seal key, so the whole suite also runs on
// PostgreSQL (`make unit-postgres`).
func newTestGateway(t *testing.T, cfg Config, logger hclog.Logger) (*Gateway, error) {
	t.Helper()
	if cfg.Store == "" {
		cfg.Store, cfg.SealKeyFile = testpg.GatewayStore(t, cfg.DataDir)
	}
	return New(cfg, logger)
}

// testStore is the store URL of the test's gateway on dir: empty (SQLite in the
// data directory) unless the suite runs on PostgreSQL.
func testStore(t *testing.T, dir string) string {
	store, _ := testpg.GatewayStore(t, dir)
	return store
}

// sqliteOnly skips a test about the SQLite data directory's own files when
// the suite runs on PostgreSQL.
func sqliteOnly(t *testing.T, why string) {
	t.Helper()
	if testpg.OnPostgres() {
		t.Skipf("SQLite only (%s); the suite runs on PostgreSQL", why)
	}
}

// running is a gateway serving in the background of a test.
type running struct {
	g    *Gateway
	addr string
	pool *x509.CertPool
	stop func() error
}

// start runs a gateway on 127.0.0.1:0 with dir as its data directory; the
// returned stop function shuts it down and reports Run's error.
func start(t *testing.T, dir string, hostnames ...string) *running {
	t.Helper()
	g, err := newTestGateway(t, Config{DataDir: dir, Listen: "127.0.0.1:0", QUICListen: "127.0.0.1:0", Hostnames: hostnames}, testLogger(t))
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	return run(t, g)
}

// run serves g in the background until the test ends.
func run(t *testing.T, g *Gateway) *running {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- g.Run(ctx) }()
	var stopped bool
	var runErr error
	stop := func() error {
		if !stopped {
			stopped = true
			cancel()
			select {
			case runErr = <-done:
			case <-time.After(15 * time.Second):
				t.Fatal("gateway did not stop within 15 s")
			}
			g.Close()
		}
		return runErr
	}
	t.Cleanup(func() { stop() })
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(g.CACertPEM()) {
		t.Fatal("gateway CA PEM does not parse")
	}
	r := &running{g: g, addr: g.Addr().String(), pool: pool, stop: stop}
	r.waitReady(t)
	return r
}

func (r *running) httpClient() *http.Client {
	return &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
		TLSClientConfig:   &tls.Config{RootCAs: r.pool, ServerName: "localhost"},
		ForceAttemptHTTP2: true,
	}}
}

func (r *running) waitReady(t *testing.T) {
	t.Helper()
	c := r.httpClient()
	defer c.CloseIdleConnections()
	deadline := time.Now().Add(10 * time.Second)
	for {
		resp, err := c.Get("https://" + r.addr + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("gateway not ready within 10 s: %v", err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func (r *running) grpcConn(t *testing.T) *grpc.ClientConn {
	t.Helper()
	conn, err := grpc.NewClient(r.addr, grpc.WithTransportCredentials(credentials.NewTLS(&tls.Config{RootCAs: r.pool, ServerName: "localhost"})))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}

// rest performs a REST call and decodes the JSON answer into a map.
func (r *running) rest(t *testing.T, method, path, key string, body io.Reader) (int, map[string]any) {
	t.Helper()
	req, err := http.NewRequest(method, "https://"+r.addr+path, body)
	if err != nil {
		t.Fatal(err)
	}
	if key != "" {
		req.Header.Set("Authorization", "Bearer "+key)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	c := r.httpClient()
	defer c.CloseIdleConnections()
	resp, err := c.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	var m map[string]any
	if err := json.Unmarshal(raw, &m); err != nil {
		t.Fatalf("%s %s: status %d, body is not JSON: %q", method, path, resp.StatusCode, raw)
	}
	return resp.StatusCode, m
}

func adminKey(t *testing.T, dir string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(dir, "admin.key"))
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(string(b))
}

func withKey(ctx context.Context, key string) context.Context {
	if key == "" {
		return ctx
	}
	return metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+key)
}

func TestFirstStartCreatesDataDir(t *testing.T) {
	sqliteOnly(t, "checks the files of a new data directory")
	dir := t.TempDir()
	r := start(t, dir)
	if r.g.FirstAdminKeyFile() != filepath.Join(dir, "admin.key") || adminKey(t, dir) == "" {
		t.Fatal("first start did not report the admin key file it wrote")
	}
	for _, f := range []string{"ca.pem", "ca.key", "server.pem", "server.key", "token.key", "admin.key", storeFile} {
		fi, err := os.Stat(filepath.Join(dir, f))
		if err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		if strings.HasSuffix(f, ".key") && fi.Mode().Perm() != 0o600 {
			t.Errorf("%s has mode %v, want 0600", f, fi.Mode().Perm())
		}
	}
}

func TestAuthMatrix(t *testing.T) {
	dir := t.TempDir()
	r := start(t, dir)
	ctx := context.Background()
	admin, err := OpenKeyAdmin(ctx, dir, testStore(t, dir), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close()
	reader, err := admin.Create(ctx, "reader", []string{"agents.read"})
	if err != nil {
		t.Fatal(err)
	}
	writer, err := admin.Create(ctx, "writer", []string{"agents.write"})
	if err != nil {
		t.Fatal(err)
	}
	revoked, err := admin.Create(ctx, "revoked", []string{"*"})
	if err != nil {
		t.Fatal(err)
	}
	keys, err := admin.List(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range keys {
		if k.Name == "revoked" {
			if err := admin.Revoke(ctx, k.ID); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := admin.Revoke(ctx, "no-such-id"); err == nil {
		t.Error("revoking an unknown key id succeeded")
	}

	client := outpostv1.NewAgentAdminServiceClient(r.grpcConn(t))
	cases := []struct {
		name     string
		key      string
		wantCode codes.Code
		wantHTTP int
	}{
		{"no key", "", codes.Unauthenticated, 401},
		{"wrong key", "opk_wrong", codes.Unauthenticated, 401},
		{"revoked key", revoked, codes.Unauthenticated, 401},
		{"missing scope", writer, codes.PermissionDenied, 403},
		{"right scope", reader, codes.OK, 200},
		{"admin", adminKey(t, dir), codes.OK, 200},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			resp, err := client.ListAgents(withKey(ctx, tc.key), &outpostv1.ListAgentsRequest{})
			if got := status.Code(err); got != tc.wantCode {
				t.Fatalf("gRPC: code %v (%v), want %v", got, err, tc.wantCode)
			}
			if tc.wantCode == codes.PermissionDenied && !strings.Contains(status.Convert(err).Message(), "agents.read") {
				t.Errorf("gRPC PermissionDenied does not name the scope: %v", err)
			}
			if err == nil && len(resp.GetAgents()) != 0 {
				t.Errorf("gRPC: %d agents on an empty gateway", len(resp.GetAgents()))
			}
			code, body := r.rest(t, "GET", "/v1/agents", tc.key, nil)
			if code != tc.wantHTTP {
				t.Fatalf("REST: status %d (%v), want %d", code, body, tc.wantHTTP)
			}
			if code == 200 {
				// Unpopulated fields are emitted: an empty list is [], not absent.
				if agents, ok := body["agents"].([]any); !ok || len(agents) != 0 {
					t.Errorf("REST: agents = %#v, want []", body["agents"])
				}
			} else if msg, _ := body["message"].(string); msg == "" || body["code"] == nil {
				t.Errorf("REST error body is not a google.rpc.Status: %v", body)
			}
		})
	}
}

// GET /v1/sessions reads the audit with sessions.read (agents.read is not
// enough); its filters are query parameters.
func TestListSessionsREST(t *testing.T) {
	dir := t.TempDir()
	r := start(t, dir)
	keys := createKeys(t, dir, "agents.read", "sessions.read")
	reader, auditor := keys[0], keys[1]
	if code, body := r.rest(t, "GET", "/v1/sessions", reader, nil); code != 403 || !strings.Contains(fmt.Sprint(body["message"]), "sessions.read") {
		t.Errorf("agents.read key: %d %v, want 403 naming sessions.read", code, body)
	}
	code, body := r.rest(t, "GET", "/v1/sessions?page_size=10&outcome=open&start_time=2026-01-01T00:00:00Z", auditor, nil)
	if sessions, ok := body["sessions"].([]any); code != 200 || !ok || len(sessions) != 0 {
		t.Errorf("sessions.read key: %d %v, want 200 with []", code, body)
	}
	if code, body := r.rest(t, "GET", "/v1/sessions?start_time=yesterday", auditor, nil); code != 400 {
		t.Errorf("bad start_time: %d %v, want 400", code, body)
	}
}

// An unknown agent is named in plain words in every API answer, never
// with the store's wording ("store: not found: agent …").
func TestUnknownAgentWording(t *testing.T) {
	dir := t.TempDir()
	r := start(t, dir)
	key := adminKey(t, dir)
	const id = "6f1d7c2e-8a34-4b1e-9a55-0c1d2e3f4a5b"
	for _, tc := range []struct {
		method, path, body string
		want               int
	}{
		{"GET", "/v1/agents/" + id, "", 404},
		{"DELETE", "/v1/agents/" + id, "", 404},
		{"GET", "/v1/agents/" + id + "/approved-routes", "", 404},
		{"PUT", "/v1/agents/" + id + "/approved-routes", `{"subnets":["10.0.0.0/24"]}`, 404},
		{"POST", "/v1/routes:resolve", `{"target":"10.0.0.1:22","agent_id":"` + id + `"}`, 0},
		{"POST", "/v1/sessions", `{"target":"10.0.0.1:22","agent_id":"` + id + `"}`, 0},
	} {
		var body io.Reader
		if tc.body != "" {
			body = strings.NewReader(tc.body)
		}
		code, resp := r.rest(t, tc.method, tc.path, key, body)
		if tc.want != 0 && code != tc.want || strings.Contains(fmt.Sprint(resp), "store:") || !strings.Contains(fmt.Sprint(resp), id) {
			t.Errorf("%s %s: %d %v, want %d naming the agent without the store's wording", tc.method, tc.path, code, resp, tc.want)
		}
	}
}

// createKeys creates one API key per scope on the gateway in dir and
// returns their secrets, in order.
func createKeys(t *testing.T, dir string, scopes ...string) []string {
	t.Helper()
	admin, err := OpenKeyAdmin(context.Background(), dir, testStore(t, dir), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close()
	var keys []string
	for _, scope := range scopes {
		k, err := admin.Create(context.Background(), "key-"+scope, []string{scope})
		if err != nil {
			t.Fatal(err)
		}
		keys = append(keys, k)
	}
	return keys
}

func TestBadInput(t *testing.T) {
	dir := t.TempDir()
	r := start(t, dir)
	key := adminKey(t, dir)
	cases := []struct {
		name, method, path string
		body               io.Reader
		want               int
		mention            string
	}{
		{"malformed id", "GET", "/v1/agents/not-a-uuid", nil, 400, "agent_id"},
		{"unknown id", "GET", "/v1/agents/6f1d7c2e-8a34-4b1e-9a55-0c1d2e3f4a5b", nil, 404, "6f1d7c2e"},
		{"negative page size", "GET", "/v1/agents?page_size=-1", nil, 400, "page_size"},
		{"page size wrong type", "GET", "/v1/agents?page_size=abc", nil, 400, "page_size"},
		{"bad page token", "GET", "/v1/agents?page_token=%%%", nil, 400, ""},
		{"unknown status", "GET", "/v1/agents?status=SLEEPING", nil, 400, ""},
		{"malformed json", "POST", "/v1/routes:resolve", strings.NewReader(`{"target":`), 400, ""},
		{"wrong type", "POST", "/v1/routes:resolve", strings.NewReader(`{"target": 5}`), 400, "target"},
		{"unknown field", "POST", "/v1/routes:resolve", strings.NewReader(`{"bogus": 1}`), 400, "bogus"},
		{"body over 1 MiB", "POST", "/v1/routes:resolve", bytes.NewReader(bytes.Repeat([]byte(" "), 1<<20+1)), 413, "limit"},
		{"unknown path", "GET", "/v1/nothing-here", nil, 404, ""},
		{"GET on a POST route", "GET", "/v1/routes:resolve", nil, 405, "method GET is not allowed on /v1/routes:resolve"},
		{"DELETE on a GET route", "DELETE", "/v1/agents", nil, 405, "not allowed"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			code, body := r.rest(t, tc.method, tc.path, key, tc.body)
			if code != tc.want {
				t.Fatalf("status %d (%v), want %d", code, body, tc.want)
			}
			if msg, _ := body["message"].(string); !strings.Contains(msg, tc.mention) {
				t.Errorf("message %q does not mention %q", msg, tc.mention)
			}
		})
	}
	// Still serving after all that.
	if code, _ := r.rest(t, "GET", "/v1/agents", key, nil); code != 200 {
		t.Fatalf("gateway stopped serving: %d", code)
	}
}

func TestHealthMetricsOpenAPI(t *testing.T) {
	dir := t.TempDir()
	r := start(t, dir)
	c := r.httpClient()
	defer c.CloseIdleConnections()
	// One API call so the request counter has a sample.
	r.rest(t, "GET", "/v1/agents", adminKey(t, dir), nil)
	get := func(path string, bearer ...string) (int, string) {
		req, _ := http.NewRequest("GET", "https://"+r.addr+path, nil)
		if len(bearer) > 0 {
			req.Header.Set("Authorization", "bearer "+bearer[0])
		}
		resp, err := c.Do(req)
		if err != nil {
			t.Fatalf("GET %s: %v", path, err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	if code, body := get("/healthz"); code != 200 || !strings.Contains(body, "ok") {
		t.Errorf("/healthz: %d %q", code, body)
	}
	if code, body := get("/readyz"); code != 200 {
		t.Errorf("/readyz: %d %q", code, body)
	}
	// /metrics on the API port needs a key with metrics.read (or *).
	ka, err := OpenKeyAdmin(context.Background(), dir, testStore(t, dir), nil)
	if err != nil {
		t.Fatal(err)
	}
	scraper, err := ka.Create(context.Background(), "prometheus", []string{"metrics.read"})
	if err != nil {
		t.Fatal(err)
	}
	other, err := ka.Create(context.Background(), "ci", []string{"sessions.create"})
	if err != nil {
		t.Fatal(err)
	}
	ka.Close()
	if code, body := get("/metrics"); code != http.StatusUnauthorized || strings.Contains(body, "outpost_") {
		t.Errorf("anonymous /metrics: %d %.200q", code, body)
	}
	if code, body := get("/metrics", other); code != http.StatusForbidden || !strings.Contains(body, "metrics.read") {
		t.Errorf("/metrics with a key without metrics.read: %d %.200q", code, body)
	}
	if code, body := get("/metrics", scraper); code != 200 || !strings.Contains(body, `outpost_api_requests_total{code="OK",method="/outpost.v1.AgentAdminService/ListAgents"} 1`) {
		t.Errorf("/metrics: %d, no request counter:\n%.2000s", code, body)
	}
	code, body := get("/openapi.json")
	var doc map[string]any
	if code != 200 || json.Unmarshal([]byte(body), &doc) != nil {
		t.Fatalf("/openapi.json: %d, not JSON", code)
	}
	paths, _ := doc["paths"].(map[string]any)
	for _, p := range []string{"/v1/agents", "/v1/agents/{agent_id}", "/v1/enroll", "/v1/enrollment-tokens", "/v1/sessions"} {
		if _, ok := paths[p]; !ok {
			t.Errorf("/openapi.json lacks path %s", p)
		}
	}

	conn := r.grpcConn(t)
	hc, err := healthpb.NewHealthClient(conn).Check(context.Background(), &healthpb.HealthCheckRequest{})
	if err != nil || hc.GetStatus() != healthpb.HealthCheckResponse_SERVING {
		t.Errorf("gRPC health: %v %v", hc, err)
	}
}

func TestSeparateMetricsListener(t *testing.T) {
	dir := t.TempDir()
	g, err := newTestGateway(t, Config{DataDir: dir, Listen: "127.0.0.1:0", QUICListen: "127.0.0.1:0", MetricsListen: "127.0.0.1:0"}, testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- g.Run(ctx) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
		g.Close()
	}()
	var resp *http.Response
	deadline := time.Now().Add(10 * time.Second)
	for {
		resp, err = http.Get("http://" + g.MetricsAddr().String() + "/metrics")
		if err == nil || time.Now().After(deadline) {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || !strings.Contains(string(b), "go_goroutines") {
		t.Fatalf("metrics listener: %d", resp.StatusCode)
	}
}

func serverSPKI(t *testing.T, addr string, pool *x509.CertPool) (string, []string) {
	t.Helper()
	conn, err := tls.Dial("tcp", addr, &tls.Config{RootCAs: pool, ServerName: "localhost"})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	leaf := conn.ConnectionState().PeerCertificates[0]
	sum := sha256.Sum256(leaf.RawSubjectPublicKeyInfo)
	names := append([]string{}, leaf.DNSNames...)
	for _, ip := range leaf.IPAddresses {
		names = append(names, ip.String())
	}
	return hex.EncodeToString(sum[:]), names
}

func TestRestartKeepsIdentity(t *testing.T) {
	sqliteOnly(t, "compares the key files; TestClusterSecretsShared covers PostgreSQL")
	dir := t.TempDir()
	r := start(t, dir)
	caPEM := r.g.CACertPEM()
	spki, names := serverSPKI(t, r.addr, r.pool)
	for _, want := range []string{"localhost", "127.0.0.1", "::1"} {
		if !slices.Contains(names, want) {
			t.Errorf("server certificate lacks SAN %s: %v", want, names)
		}
	}
	read := func(f string) []byte {
		b, err := os.ReadFile(filepath.Join(dir, f))
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	tokenKey, caKey, serverKey := read("token.key"), read("ca.key"), read("server.key")
	admin := adminKey(t, dir)
	if err := r.stop(); err != nil {
		t.Fatalf("Run: %v", err)
	}

	// Same names: everything is reused.
	r2 := start(t, dir)
	if r2.g.FirstAdminKeyFile() != "" {
		t.Error("a restart created another admin key")
	}
	if !bytes.Equal(r2.g.CACertPEM(), caPEM) || !bytes.Equal(read("ca.key"), caKey) || !bytes.Equal(read("token.key"), tokenKey) {
		t.Error("restart changed the CA or the token key")
	}
	if s, _ := serverSPKI(t, r2.addr, r2.pool); s != spki {
		t.Error("restart changed the server key")
	}
	if code, body := r2.rest(t, "GET", "/v1/agents", admin, nil); code != 200 {
		t.Fatalf("admin key after restart: %d %v", code, body)
	}
	if err := r2.stop(); err != nil {
		t.Fatal(err)
	}

	// A new host name re-issues the server certificate with the same key.
	r3 := start(t, dir, "gw.example.test", "192.0.2.10")
	s3, names3 := serverSPKI(t, r3.addr, r3.pool)
	if s3 != spki || !bytes.Equal(read("server.key"), serverKey) {
		t.Error("re-issue changed the server key")
	}
	for _, want := range []string{"gw.example.test", "192.0.2.10", "localhost"} {
		if !slices.Contains(names3, want) {
			t.Errorf("re-issued certificate lacks SAN %s: %v", want, names3)
		}
	}
}

func TestGracefulStopIsPrompt(t *testing.T) {
	r := start(t, t.TempDir())
	begin := time.Now()
	if err := r.stop(); err != nil {
		t.Fatalf("Run: %v", err)
	}
	if d := time.Since(begin); d > 10*time.Second {
		t.Fatalf("stop took %v", d)
	}
	if _, err := net.DialTimeout("tcp", r.addr, time.Second); err == nil {
		t.Error("API port still accepts after stop")
	}
}

func TestConfigValidation(t *testing.T) {
	cases := []struct {
		name string
		cfg  Config
		want string
	}{
		{"no data dir", Config{}, "data_dir"},
		{"bad listen", Config{DataDir: "x", Listen: "7171"}, "listen"},
		{"bad port", Config{DataDir: "x", QUICListen: ":99999"}, "quic_listen"},
		{"bad hostname", Config{DataDir: "x", Hostnames: []string{"bad host"}}, "hostname"},
		{"http url", Config{DataDir: "x", PublicURL: "http://gw"}, "public_url"},
		{"negative token ttl", Config{DataDir: "x", MaxSessionTTL: Duration(-time.Second)}, "max_session_ttl"},
		{"sub-second token ttl", Config{DataDir: "x", MaxSessionTTL: Duration(time.Millisecond)}, "max_session_ttl"},
		{"token ttl over 7 days", Config{DataDir: "x", MaxSessionTTL: Duration(7*24*time.Hour + time.Second)}, "max_session_ttl"},
		{"negative session duration", Config{DataDir: "x", MaxSessionDuration: Duration(-time.Hour)}, "max_session_duration"},
		{"session duration over 7 days", Config{DataDir: "x", MaxSessionDuration: Duration(8 * 24 * time.Hour)}, "max_session_duration"},
		{"negative token connections", Config{DataDir: "x", MaxTokenConnections: -1}, "max_token_connections"},
		{"any origin unconfirmed", Config{DataDir: "x", AllowedOrigins: []string{"*"}}, "allow_any_origin"},
		{"origin with a path", Config{DataDir: "x", AllowedOrigins: []string{"https://app.example.com/"}}, "allowed_origins"},
		{"any origin without *", Config{DataDir: "x", AllowAnyOrigin: true}, "allowed_origins"},
		{"short enrollment secret", Config{DataDir: "x", EnrollmentSecret: "fifteen-bytes.."}, "enrollment_secret (or --enrollment-secret-file) is 15 bytes: want at least 16"},
		{"store not postgres", Config{DataDir: "x", Store: "mysql://db/outpost"}, "store: want a postgres:// or postgresql:// URL"},
		{"store a file path", Config{DataDir: "x", Store: "/var/lib/outpost/outpost.db"}, "store: want a postgres:// or postgresql:// URL"},
		{"negative route cap", Config{DataDir: "x", MaxRoutesPerAgent: -1}, "max_routes_per_agent"},
		{"negative route changes", Config{DataDir: "x", MaxRouteChangesPerMinute: -1}, "max_route_changes_per_minute"},
		{"negative silence timeout", Config{DataDir: "x", AgentSilenceTimeout: Duration(-time.Second)}, "agent_silence_timeout"},
		{"silence within two keep-alives", Config{DataDir: "x", AgentSilenceTimeout: Duration(2900 * time.Millisecond)}, "agent_silence_timeout 2.9s: want at least twice the keep-alive period (1.5s)"},
		{"silence within two set keep-alives", Config{DataDir: "x", QUICKeepAlive: Duration(5 * time.Second), AgentSilenceTimeout: Duration(5 * time.Second)}, "agent_silence_timeout"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := New(tc.cfg, nil)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("New: %v, want an error naming %s", err, tc.want)
			}
		})
	}
}

// The static enrollment secret's length is checked by the config, whether it
// came from the JSON file or from --enrollment-secret-file: 16 bytes pass,
// 15 do not.
func TestEnrollmentSecretLength(t *testing.T) {
	dir := t.TempDir()
	for _, tc := range []struct {
		secret string
		ok     bool
	}{{strings.Repeat("s", 16), true}, {strings.Repeat("s", 15), false}} {
		f := filepath.Join(dir, "gw.json")
		os.WriteFile(f, []byte(`{"data_dir": "x", "enrollment_secret": "`+tc.secret+`"}`), 0o600)
		c, err := LoadConfigFile(f)
		if err != nil {
			t.Fatal(err)
		}
		err = c.withDefaults().validate()
		if tc.ok != (err == nil) || !tc.ok && !strings.Contains(err.Error(), "enrollment_secret") {
			t.Errorf("%d-byte secret from JSON: %v", len(tc.secret), err)
		}
	}
}

func TestLoadConfigFile(t *testing.T) {
	dir := t.TempDir()
	good := filepath.Join(dir, "good.json")
	os.WriteFile(good, []byte(`{"data_dir": "/var/lib/outpost", "hostnames": ["gw.example.test"], "shutdown_timeout": "5s",
"accept_any_routes": true, "max_routes_per_agent": 64, "max_route_changes_per_minute": 5,
"store": "postgresql://outpost@db.example.test/outpost", "seal_key_file": "/etc/outpost/seal.key"}`), 0o644)
	c, err := LoadConfigFile(good)
	if err != nil {
		t.Fatal(err)
	}
	if c.DataDir != "/var/lib/outpost" || c.Hostnames[0] != "gw.example.test" || c.ShutdownTimeout != Duration(5*time.Second) ||
		!c.AcceptAnyRoutes || c.MaxRoutesPerAgent != 64 || c.MaxRouteChangesPerMinute != 5 ||
		c.Store != "postgresql://outpost@db.example.test/outpost" || c.SealKeyFile != "/etc/outpost/seal.key" || c.withDefaults().validate() != nil {
		t.Fatalf("parsed %+v", c)
	}
	d := c.withDefaults()
	if d.PublicURL != "https://gw.example.test:7171" || d.PublicQUICEndpoint != "gw.example.test:4433" {
		t.Fatalf("defaults: %q %q", d.PublicURL, d.PublicQUICEndpoint)
	}
	// The session limits and origins, by their JSON keys.
	limits := filepath.Join(dir, "limits.json")
	os.WriteFile(limits, []byte(`{"data_dir": "x", "max_session_ttl": "168h", "max_token_connections": 5,
"max_session_duration": "30m", "allowed_origins": ["*", "https://app.example.com"], "allow_any_origin": true}`), 0o644)
	c, err = LoadConfigFile(limits)
	if err != nil {
		t.Fatal(err)
	}
	if c.MaxSessionTTL != Duration(7*24*time.Hour) || c.MaxTokenConnections != 5 || c.MaxSessionDuration != Duration(30*time.Minute) ||
		len(c.AllowedOrigins) != 2 || !c.AllowAnyOrigin {
		t.Fatalf("parsed %+v", c)
	}
	if err := c.withDefaults().validate(); err != nil {
		t.Fatalf("limits at their maximum: %v", err)
	}
	if d := (Config{DataDir: "x"}).withDefaults(); d.MaxTokenConnections != 1000 || d.MaxSessionDuration != Duration(8*time.Hour) ||
		d.MaxSessionTTL != Duration(24*time.Hour) || d.validate() != nil {
		t.Fatalf("defaults %d %v %v: %v", d.MaxTokenConnections, d.MaxSessionDuration, d.MaxSessionTTL, d.validate())
	}
	// Failover settings, and the keep-alive that goes with them.
	failover := filepath.Join(dir, "failover.json")
	os.WriteFile(failover, []byte(`{"data_dir": "x", "hedge_delay": "250ms", "agent_silence_timeout": "10s", "quic_keep_alive": "5s"}`), 0o644)
	if c, err = LoadConfigFile(failover); err != nil || c.HedgeDelay != Duration(250*time.Millisecond) ||
		c.AgentSilenceTimeout != Duration(10*time.Second) || c.withDefaults().validate() != nil {
		t.Fatalf("failover settings: %+v %v", c, err)
	}
	for _, tc := range []struct {
		idle, keepAlive, want time.Duration
	}{
		{0, 0, DefaultQUICKeepAlive},
		{2 * time.Second, 0, time.Second},
		{0, 10 * time.Second, 10 * time.Second},
	} {
		c := Config{QUICIdleTimeout: Duration(tc.idle), QUICKeepAlive: Duration(tc.keepAlive)}
		if got := c.quicConfig().KeepAlivePeriod; got != tc.want {
			t.Errorf("idle %v, keep-alive %v: the gateway pings every %v, want %v", tc.idle, tc.keepAlive, got, tc.want)
		}
	}
	typo := filepath.Join(dir, "typo.json")
	os.WriteFile(typo, []byte(`{"data_dri": "x"}`), 0o644)
	if _, err := LoadConfigFile(typo); err == nil || !strings.Contains(err.Error(), "data_dri") {
		t.Fatalf("unknown key: %v", err)
	}
	if _, err := LoadConfigFile(filepath.Join(dir, "missing.json")); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("missing file: %v", err)
	}
}

// A QUIC listener that stops accepting (its socket failed) ends Run with an
// error naming it, instead of leaving a gateway that looks ready while no
// agent can connect.
func TestDeadQUICListenerEndsRun(t *testing.T) {
	g, err := newTestGateway(t, Config{DataDir: t.TempDir(), Listen: "127.0.0.1:0", QUICListen: "127.0.0.1:0"}, testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	defer g.Close()
	done := make(chan error, 1)
	go func() { done <- g.Run(context.Background()) }()
	deadline := time.Now().Add(10 * time.Second)
	for !g.serving.Load() {
		if time.Now().After(deadline) {
			t.Fatal("gateway never started serving")
		}
		time.Sleep(5 * time.Millisecond)
	}
	g.quicConn.Close() // the UDP socket fails under the listener
	select {
	case err := <-done:
		// The socket may fail before the listener starts ("tunnel: listen")
		// or under it ("tunnel: the QUIC listener stopped accepting"):
		// either way Run ends with the tunnel's error.
		if err == nil || !strings.Contains(err.Error(), "tunnel:") {
			t.Fatalf("Run returned %v, want the QUIC listener's failure", err)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("Run kept going with a dead QUIC listener")
	}
}

// With proxy_protocol, a PROXY header from a trusted proxy gives the
// client's address (here: the enrollment rate limit names it); a header from
// a peer that is not a trusted proxy is refused.
func TestProxyProtocolFromTrustedProxiesOnly(t *testing.T) {
	dir := t.TempDir()
	g, err := newTestGateway(t, Config{DataDir: dir, Listen: "127.0.0.1:0", QUICListen: "127.0.0.1:0", EnrollRateLimit: 1,
		TrustedProxies: []string{"127.0.0.1"}, ProxyProtocol: true}, testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	r := run(t, g)
	client := func(header string) *http.Client {
		tr := &http.Transport{
			DialTLSContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
				c, err := (&net.Dialer{}).DialContext(ctx, network, addr)
				if err != nil {
					return nil, err
				}
				if _, err := io.WriteString(c, header); err != nil {
					c.Close()
					return nil, err
				}
				tc := tls.Client(c, &tls.Config{RootCAs: r.pool, ServerName: "localhost"})
				if err := tc.HandshakeContext(ctx); err != nil {
					c.Close()
					return nil, err
				}
				return tc, nil
			},
		}
		t.Cleanup(tr.CloseIdleConnections)
		return &http.Client{Timeout: 10 * time.Second, Transport: tr}
	}
	enroll := func(c *http.Client) (int, string) {
		resp, err := c.Post("https://"+r.addr+"/v1/enroll", "application/json", strings.NewReader(`{}`))
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	proxied := client("PROXY TCP4 198.51.100.7 127.0.0.1 5555 7171\r\n")
	enroll(proxied) // uses the one attempt of 198.51.100.7
	if code, body := enroll(proxied); code != http.StatusTooManyRequests || !strings.Contains(body, "198.51.100.7") {
		t.Fatalf("second enroll through the proxy: %d %s, want 429 naming the client", code, body)
	}
	// The loopback peer itself was not limited: the attempts were the
	// client's.
	if code, body := enroll(client("")); code == http.StatusTooManyRequests {
		t.Fatalf("a direct call was limited with the proxied client's attempts: %s", body)
	}

	// Not a trusted proxy: the header is refused.
	g2, err := newTestGateway(t, Config{DataDir: t.TempDir(), Listen: "127.0.0.1:0", QUICListen: "127.0.0.1:0",
		TrustedProxies: []string{"192.0.2.1"}, ProxyProtocol: true}, testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	r2 := run(t, g2)
	r.pool = r2.pool
	if _, err := client("PROXY TCP4 198.51.100.7 127.0.0.1 5555 7171\r\n").Get("https://" + r2.addr + "/healthz"); err == nil {
		t.Fatal("a PROXY header from an untrusted peer was accepted")
	}
	resp, err := client("").Get("https://" + r2.addr + "/healthz")
	if err != nil {
		t.Fatalf("a direct connection without a header: %v", err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("a direct connection without a header: HTTP %d", resp.StatusCode)
	}
}
