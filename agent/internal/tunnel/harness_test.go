package tunnel

import (
	"context"
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"io"
	"math/big"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/quic-go/quic-go"
	"go.uber.org/goleak"

	"github.com/outposthq/outpost/agent/internal/config"
	"github.com/outposthq/outpost/dataplane"
	"github.com/outposthq/outpost/dataplane/transport"
	"github.com/outposthq/outpost/internal/fakeclock"
	"github.com/outposthq/outpost/internal/testlog"
	"github.com/outposthq/outpost/internal/testtarget"
	"github.com/outposthq/outpost/internal/testtls"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// testTimeout bounds every wait of a test.
const testTimeout = 10 * time.Second

// testAgentID is the identity of every test agent.
const testAgentID = "6f1c2a3b-4d5e-4f60-8172-8394a5b6c7d8"

// testPKI is a gateway CA and server certificate made at test time. The CA
// is valid from a day ago to 1000 h ahead, so it outlives every time the
// tests' clock is set to.
type testPKI struct {
	*testtls.CA
	caPEM  []byte
	server tls.Certificate // for 127.0.0.1 and ::1
}

func newTestPKI(t *testing.T) *testPKI {
	t.Helper()
	now := time.Now()
	ca := testtls.NewCA(t, testtls.Spec{CN: "test gateway CA", NotBefore: now.Add(-24 * time.Hour), NotAfter: now.Add(1000 * time.Hour)})
	return &testPKI{
		CA:     ca,
		caPEM:  ca.PEM(),
		server: ca.Server(t, testtls.Spec{CN: "gateway", NotAfter: now.Add(900 * time.Hour)}),
	}
}

// issue signs an agent certificate for pub and agent id, valid from
// notBefore to notAfter, and returns it parsed and in PEM.
func (p *testPKI) issue(t *testing.T, pub *ecdsa.PublicKey, id string, notBefore, notAfter time.Time) (*x509.Certificate, []byte) {
	t.Helper()
	c := p.Agent(t, testtls.Spec{CN: "office", AgentID: id, Key: pub, NotBefore: notBefore, NotAfter: notAfter})
	return c.Leaf, testtls.CertPEM(c.Leaf)
}

// gwConn is one agent connection as the fake gateway sees it.
type gwConn struct {
	q    *quic.Conn
	cert *x509.Certificate // the agent's client certificate
	ctrl *quic.Stream      // the control stream, for raw frames
	w    *dataplane.ControlWriter
	msgs chan dataplane.ControlMessage // every control message, copied
}

// replicaServer issues a server certificate for 127.0.0.1 and ::1 that
// names gateway replica id, as a cluster member's does.
func (p *testPKI) replicaServer(t *testing.T, id string) tls.Certificate {
	t.Helper()
	u, err := transport.ReplicaURI(id)
	if err != nil {
		t.Fatal(err)
	}
	key := testtls.Key(t)
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()),
		Subject:      pkix.Name{CommonName: "gateway replica"},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(900 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback},
		URIs:         []*url.URL{u},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, p.Cert, &key.PublicKey, p.Key)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}

// fakeGateway accepts agent connections on loopback: it admits any client
// certificate, records the control messages and lets the test answer them
// and open session streams.
type fakeGateway struct {
	ln    *quic.Listener
	conns chan *gwConn
	// hellos counts the handshakes begun (ClientHellos), accepted the
	// connections whose handshake completed: those a gateway registers.
	hellos, accepted atomic.Int32
	stop             func() // closes the listener and every connection, waits
}

func startFakeGateway(t *testing.T, p *testPKI) *fakeGateway {
	t.Helper()
	return startFakeGatewayQUIC(t, p, transport.Config{})
}

// startFakeGatewayQUIC is startFakeGateway with the QUIC settings qc.
func startFakeGatewayQUIC(t *testing.T, p *testPKI, qc transport.Config) *fakeGateway {
	t.Helper()
	return startFakeGatewayCert(t, p.server, qc)
}

// startReplica starts a fake gateway whose certificate names replica id.
func startReplica(t *testing.T, p *testPKI, id string) *fakeGateway {
	t.Helper()
	return startFakeGatewayCert(t, p.replicaServer(t, id), transport.Config{})
}

// startFakeGatewayCert starts a fake gateway presenting cert, with the QUIC
// settings qc.
func startFakeGatewayCert(t *testing.T, cert tls.Certificate, qc transport.Config) *fakeGateway {
	t.Helper()
	gw := &fakeGateway{conns: make(chan *gwConn, 16)}
	tlsConf := transport.ServerTLS(&tls.Config{
		GetCertificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) {
			gw.hellos.Add(1)
			return &cert, nil
		},
		ClientAuth: tls.RequireAnyClientCert,
	})
	// A transport of its own, so that stop also ends the connections whose
	// handshake the agent aborted: a listener alone keeps its transport
	// (and goroutines) until they time out.
	udp, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	tr := &quic.Transport{Conn: udp}
	ln, err := tr.Listen(tlsConf, qc.QUIC())
	if err != nil {
		udp.Close()
		t.Fatal(err)
	}
	gw.ln = ln
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() {
		for {
			q, err := ln.Accept(ctx)
			if err != nil {
				return
			}
			gw.accepted.Add(1)
			wg.Go(func() { gw.handle(ctx, q) })
		}
	})
	gw.stop = sync.OnceFunc(func() {
		cancel()
		ln.Close()
		wg.Wait()
		tr.Close()
		udp.Close()
	})
	t.Cleanup(gw.stop)
	return gw
}

func (gw *fakeGateway) handle(ctx context.Context, q *quic.Conn) {
	stop := context.AfterFunc(ctx, func() { q.CloseWithError(0, "test over") })
	defer stop()
	ctrl, err := q.AcceptStream(ctx)
	if err != nil {
		return
	}
	c := &gwConn{
		q:    q,
		cert: q.ConnectionState().TLS.PeerCertificates[0],
		ctrl: ctrl,
		w:    dataplane.NewControlWriter(ctrl),
		msgs: make(chan dataplane.ControlMessage, 64),
	}
	gw.conns <- c
	r := dataplane.NewControlReader(ctrl)
	for {
		msg, err := r.ReadControl()
		if err != nil {
			return
		}
		var cp dataplane.ControlMessage
		switch m := msg.(type) {
		case *dataplane.RouteAdvertise:
			v := *m
			cp = &v
		case *dataplane.Heartbeat:
			v := *m
			cp = &v
		case *dataplane.CertRenewalRequest:
			v := *m
			cp = &v
		default:
			continue
		}
		select {
		case c.msgs <- cp:
		case <-ctx.Done():
			return
		}
	}
}

// nextConn waits for the next agent connection.
func (gw *fakeGateway) nextConn(t *testing.T) *gwConn {
	t.Helper()
	select {
	case c := <-gw.conns:
		return c
	case <-time.After(testTimeout):
		t.Fatal("no agent connection")
		return nil
	}
}

// noConn checks that no new connection comes within d.
func (gw *fakeGateway) noConn(t *testing.T, d time.Duration) {
	t.Helper()
	select {
	case c := <-gw.conns:
		t.Fatalf("unexpected new connection with certificate serial %v", c.cert.SerialNumber)
	case <-time.After(d):
	}
}

// expect waits for the next control message of type T, skipping
// heartbeats.
func expect[T dataplane.ControlMessage](t *testing.T, c *gwConn) T {
	t.Helper()
	deadline := time.After(testTimeout)
	for {
		select {
		case m := <-c.msgs:
			if _, ok := m.(*dataplane.Heartbeat); ok {
				continue
			}
			v, ok := m.(T)
			if !ok {
				t.Fatalf("got %T %+v, want %T", m, m, v)
			}
			return v
		case <-deadline:
			var zero T
			t.Fatalf("no %T within %v", zero, testTimeout)
		}
	}
}

// quiet checks that no control message other than a heartbeat comes
// within d.
func (c *gwConn) quiet(t *testing.T, d time.Duration) {
	t.Helper()
	deadline := time.After(d)
	for {
		select {
		case m := <-c.msgs:
			if _, ok := m.(*dataplane.Heartbeat); !ok {
				t.Fatalf("unexpected %T %+v", m, m)
			}
		case <-deadline:
			return
		}
	}
}

// closeReason waits for the agent to close c and returns its reason.
func (c *gwConn) closeReason(t *testing.T) string {
	t.Helper()
	select {
	case <-c.q.Context().Done():
	case <-time.After(testTimeout):
		t.Fatal("the agent did not close the connection")
	}
	var appErr *quic.ApplicationError
	if err := context.Cause(c.q.Context()); !errors.As(err, &appErr) || !appErr.Remote {
		t.Fatalf("closed by %v, want an application close by the agent", err)
	}
	return appErr.ErrorMessage
}

// connect opens a session stream, sends a ConnectRequest for target and
// returns the stream and the agent's answer.
func (c *gwConn) connect(t *testing.T, target string) (*quic.Stream, dataplane.ConnectResponse) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	s, err := c.q.OpenStreamSync(ctx)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		s.CancelRead(0)
		s.CancelWrite(0)
	})
	req := dataplane.ConnectRequest{Version: dataplane.ProtocolVersion, SessionID: dataplane.SessionID{1}, Target: target}
	frame, err := req.AppendFrame(nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Write(frame); err != nil {
		t.Fatal(err)
	}
	_ = s.SetReadDeadline(time.Now().Add(testTimeout))
	defer s.SetReadDeadline(time.Time{})
	resp, err := dataplane.NewSessionReader(s).ReadConnectResponse()
	if err != nil {
		t.Fatalf("read ConnectResponse: %v", err)
	}
	return s, resp
}

// roundTrip writes msg on s and reads it back from an echo target.
func roundTrip(t *testing.T, s *quic.Stream, msg string) {
	t.Helper()
	if _, err := s.Write([]byte(msg)); err != nil {
		t.Fatal(err)
	}
	_ = s.SetReadDeadline(time.Now().Add(testTimeout))
	buf := make([]byte, len(msg))
	if _, err := io.ReadFull(s, buf); err != nil || string(buf) != msg {
		t.Fatalf("echo: %q, %v", buf, err)
	}
}

// echoTarget runs a TCP echo server on loopback until the test ends.
func echoTarget(t *testing.T) string {
	t.Helper()
	return testtarget.Listen(t, "127.0.0.1:0", testtarget.Echo).String()
}

// env is an enrolled agent config directory, a fake gateway and a clock.
type env struct {
	p       *testPKI
	gw      *fakeGateway
	dir     string
	key     *ecdsa.PrivateKey
	cert    *x509.Certificate
	certPEM []byte
	clock   *fakeclock.Clock
	tunnel  config.Tunnel
	logs    *testlog.Writer
	// resolvConf is the resolver configuration the agent reads (none by
	// default, so the host's own never leaks into a test).
	resolvConf string
}

// Lifetime of the test agent certificate: 30 h from base−1h, so with the
// default fraction it is due for renewal at base+19h.
const testLifetime = 30 * time.Hour

// newEnv enrolls an agent advertising 127.0.0.0/8 (loopback must be
// explicit) whose certificate runs from base−1h to base+29h, base being now
// rounded to the second; the clock starts at base.
func newEnv(t *testing.T) *env {
	t.Helper()
	base := time.Now().Truncate(time.Second)
	e := &env{
		p:          newTestPKI(t),
		dir:        t.TempDir(),
		key:        testtls.Key(t),
		clock:      fakeclock.New(base),
		logs:       testlog.New(t),
		resolvConf: filepath.Join(t.TempDir(), "resolv.conf"),
	}
	e.gw = startFakeGateway(t, e.p)
	e.cert, e.certPEM = e.p.issue(t, &e.key.PublicKey, testAgentID, base.Add(-time.Hour), base.Add(-time.Hour+testLifetime))
	if err := os.MkdirAll(filepath.Join(e.dir, "certs"), 0o700); err != nil {
		t.Fatal(err)
	}
	e.write(t, "certs/agent.key", testtls.KeyPEM(t, e.key))
	e.write(t, "certs/agent.pem", e.certPEM)
	e.write(t, "certs/gateway-ca.pem", e.p.caPEM)
	e.tunnel = config.Tunnel{
		Enabled:           true,
		GatewayEndpoint:   e.gw.ln.Addr().String(),
		ClientCertPath:    "certs/agent.pem",
		ClientKeyPath:     "certs/agent.key",
		GatewayCaCertPath: "certs/gateway-ca.pem",
		AdvertiseSubnets:  []string{"127.0.0.0/8"},
		AgentId:           testAgentID,
		AgentName:         "office",
	}
	e.saveConfig(t)
	return e
}

func (e *env) write(t *testing.T, rel string, b []byte) {
	t.Helper()
	if err := os.WriteFile(filepath.Join(e.dir, rel), b, 0o600); err != nil {
		t.Fatal(err)
	}
}

func (e *env) read(t *testing.T, rel string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(e.dir, rel))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// saveConfig writes e.tunnel to agent.json.
func (e *env) saveConfig(t *testing.T) {
	t.Helper()
	if err := (&config.File{Tunnel: e.tunnel}).Save(e.dir); err != nil {
		t.Fatal(err)
	}
}

// renewAt is when the test certificate is due with the default fraction.
func (e *env) renewAt() time.Time { return e.cert.NotAfter.Add(-testLifetime / 3) }

// config is the agent Config of the tests: the fake clock, no periodic
// control traffic, fast checks, no file watching.
func (e *env) config() Config {
	return Config{
		ConfigDir:          e.dir,
		Logger:             hclog.New(&hclog.LoggerOptions{Name: "agent", Level: hclog.Debug, Output: e.logs}),
		AdvertiseInterval:  time.Hour,
		HeartbeatInterval:  time.Hour,
		IdleHeartbeat:      time.Hour,
		BackoffMin:         time.Second,
		BackoffMax:         time.Second,
		DrainTimeout:       5 * time.Second,
		RenewTimeout:       5 * time.Second,
		RenewCheckInterval: 5 * time.Millisecond,
		Now:                e.clock.Now,
		WatchInterval:      -1,
		ResolvConfPath:     e.resolvConf,
		Hostname:           func() (string, error) { return "vm", nil },
	}
}

// runningAgent is an Agent whose Run is in a goroutine.
type runningAgent struct {
	*Agent
	cancel context.CancelFunc
	done   chan error
}

// start runs an agent with cfg until the test ends (or stop).
func start(t *testing.T, cfg Config) *runningAgent {
	t.Helper()
	a, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	ra := &runningAgent{Agent: a, cancel: cancel, done: make(chan error, 1)}
	go func() { ra.done <- a.Run(ctx) }()
	t.Cleanup(func() { ra.stop(t) })
	return ra
}

// stop cancels Run and waits for it to return.
func (ra *runningAgent) stop(t *testing.T) {
	t.Helper()
	ra.cancel()
	ra.wait(t)
}

// wait waits for Run to return (once; later calls return at once).
func (ra *runningAgent) wait(t *testing.T) {
	t.Helper()
	select {
	case err, ok := <-ra.done:
		if ok {
			close(ra.done)
			if err != nil {
				t.Errorf("Run: %v", err)
			}
		}
	case <-time.After(testTimeout):
		t.Fatal("Run did not return")
	}
}

// exit waits for Run to return by itself and returns its error; the
// cleanup's stop then finds it done.
func (ra *runningAgent) exit(t *testing.T) error {
	t.Helper()
	select {
	case err := <-ra.done:
		close(ra.done)
		return err
	case <-time.After(testTimeout):
		t.Fatal("Run did not return")
		return nil
	}
}

// running checks that Run has not returned.
func (ra *runningAgent) running(t *testing.T) {
	t.Helper()
	select {
	case err := <-ra.done:
		close(ra.done)
		t.Fatalf("Run returned: %v", err)
	default:
	}
}

// waitFor polls cond until it holds or the test timeout passes.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(testTimeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}
