package e2e

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"database/sql"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	_ "github.com/jackc/pgx/v5/stdlib" // the audit readers on PostgreSQL
	_ "modernc.org/sqlite"             // the audit readers on SQLite

	"github.com/hashicorp/go-hclog"
	"google.golang.org/grpc"

	outpostv1 "github.com/outposthq/outpost/gen/outpost/v1"
	"github.com/outposthq/outpost/internal/testlog"
	"github.com/outposthq/outpost/internal/testpg"
	"github.com/outposthq/outpost/server"
	"github.com/outposthq/outpost/server/apiclient"
)

func testLogger(t *testing.T, name string) hclog.Logger {
	return testlog.Logger(t, name)
}

// gateway is a gateway running in-process for a test.
type gateway struct {
	t    *testing.T
	g    *server.Gateway
	cfg  server.Config
	url  string
	stop func()
}

// startGateway runs a gateway on loopback; mutate adjusts its config.
func startGateway(t *testing.T, dir string, mutate func(*server.Config)) *gateway {
	t.Helper()
	cfg := server.Config{DataDir: dir, Listen: "127.0.0.1:0", QUICListen: "127.0.0.1:0", EnrollRateLimit: 1000}
	// OUTPOST_TEST_STORE=postgres moves the suite onto PostgreSQL (one
	// database per data directory); mutate may clear Store to insist on
	// SQLite.
	cfg.Store, cfg.SealKeyFile = testpg.GatewayStore(t, dir)
	if mutate != nil {
		mutate(&cfg)
	}
	g, err := server.New(cfg, testLogger(t, "gateway"))
	if err != nil {
		t.Fatalf("gateway: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- g.Run(ctx) }()
	var once sync.Once
	gw := &gateway{t: t, g: g, cfg: cfg, url: "https://" + g.Addr().String()}
	gw.stop = func() {
		once.Do(func() {
			cancel()
			select {
			case err := <-done:
				if err != nil {
					t.Errorf("gateway Run: %v", err)
				}
			case <-time.After(15 * time.Second):
				t.Error("gateway did not stop within 15 s")
			}
			g.Close()
		})
	}
	t.Cleanup(gw.stop)
	return gw
}

// caFile is a file holding the gateway's CA certificate, as the CLI's
// --ca-file wants it: ca.pem in a SQLite gateway's data directory, a copy
// of the PEM when the store is PostgreSQL (no key files in the directory).
func (gw *gateway) caFile() string {
	gw.t.Helper()
	if gw.cfg.Store == "" {
		return filepath.Join(gw.cfg.DataDir, "ca.pem")
	}
	f := filepath.Join(gw.t.TempDir(), "ca.pem")
	if err := os.WriteFile(f, gw.g.CACertPEM(), 0o644); err != nil {
		gw.t.Fatal(err)
	}
	return f
}

// auditDB opens the gateway's store for reading its audit rows (after the
// gateway stopped, which flushes them): the SQLite file, or the PostgreSQL
// database. Queries must use $N placeholders, which both accept.
func (gw *gateway) auditDB() *sql.DB {
	gw.t.Helper()
	driver, dsn := "sqlite", filepath.Join(gw.cfg.DataDir, "outpost.db")
	if gw.cfg.Store != "" {
		driver, dsn = "pgx", gw.cfg.Store
	}
	db, err := sql.Open(driver, dsn)
	if err != nil {
		gw.t.Fatal(err)
	}
	gw.t.Cleanup(func() { db.Close() })
	return db
}

func (gw *gateway) adminKey() string {
	b, err := os.ReadFile(filepath.Join(gw.cfg.DataDir, "admin.key"))
	if err != nil {
		gw.t.Fatal(err)
	}
	return strings.TrimSpace(string(b))
}

func (gw *gateway) conn() *grpc.ClientConn {
	gw.t.Helper()
	c, err := apiclient.Dial(apiclient.Config{Gateway: gw.url, APIKey: gw.adminKey(), CAPEM: gw.g.CACertPEM()})
	if err != nil {
		gw.t.Fatal(err)
	}
	gw.t.Cleanup(func() { c.Close() })
	return c
}

// token mints an enrollment token through the API.
func (gw *gateway) token(req *outpostv1.CreateEnrollmentTokenRequest) string {
	gw.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	resp, err := outpostv1.NewEnrollmentServiceClient(gw.conn()).CreateEnrollmentToken(ctx, req)
	if err != nil {
		gw.t.Fatalf("CreateEnrollmentToken: %v", err)
	}
	return resp.GetToken()
}

// httpClient trusts the gateway's CA.
func (gw *gateway) httpClient() *http.Client {
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(gw.g.CACertPEM())
	return &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
}

// restGet performs an authenticated REST GET and returns status and body.
func (gw *gateway) restGet(path string) (int, string) {
	gw.t.Helper()
	return gw.rest("GET", path, "")
}

// rest performs an authenticated REST call, with a JSON body unless body
// is empty, and returns status and body.
func (gw *gateway) rest(method, path, body string) (int, string) {
	gw.t.Helper()
	c := gw.httpClient()
	defer c.CloseIdleConnections()
	req, _ := http.NewRequest(method, gw.url+path, strings.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+gw.adminKey())
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := c.Do(req)
	if err != nil {
		gw.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

var (
	buildOnce sync.Once
	binPath   string
	buildErr  error
)

// outpostBinary builds cmd/outpost once per test run.
func outpostBinary(t *testing.T) string {
	t.Helper()
	buildOnce.Do(func() {
		dir, err := os.MkdirTemp("", "outpost-e2e-bin-")
		if err != nil {
			buildErr = err
			return
		}
		binPath = filepath.Join(dir, "outpost")
		out, err := exec.Command("go", "build", "-o", binPath, "../cmd/outpost").CombinedOutput()
		if err != nil {
			buildErr = &buildError{err: err, out: string(out)}
		}
	})
	if buildErr != nil {
		t.Fatalf("build outpost: %v", buildErr)
	}
	return binPath
}

type buildError struct {
	err error
	out string
}

func (e *buildError) Error() string { return e.err.Error() + "\n" + e.out }

// portOf is the port of a bound address.
func portOf(a net.Addr) string {
	_, port, _ := net.SplitHostPort(a.String())
	return port
}

// directToLoopback lets the gateway dial 127.0.0.1 itself, named explicitly
// in its direct allow-list (direct connections are off by default, and
// loopback is never dialed unless a direct subnet names it).
func directToLoopback(c *server.Config) {
	c.AllowDirect, c.DirectSubnets = true, []string{"127.0.0.1/32"}
}
