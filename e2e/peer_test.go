package e2e

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/pem"
	"errors"
	"io"
	"io/fs"
	"math/big"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/quic-go/quic-go"

	"github.com/outposthq/outpost/dataplane/transport"
	outpostv1 "github.com/outposthq/outpost/gen/outpost/v1"
	"github.com/outposthq/outpost/internal/testpg"
	"github.com/outposthq/outpost/server"
	"github.com/outposthq/outpost/server/servertest"
)

// peerPair runs two replicas on one database and an agent enrolled at, and
// connected to, the first only. It returns the replicas, the agent and its
// id once the second replica can reach the agent through the peer link.
func peerPair(t *testing.T, target string) (gwA, gwB *gateway, ra *runningAgent, id string) {
	t.Helper()
	gws := startReplicas(t, testpg.DSN(t), 2, nil)
	gwA, gwB = gws[0], gws[1]
	dir, id := enrollAgent(t, gwA, "office", loopback, nil)
	opts := fastAgent(dir)
	opts.DrainTimeout = 200 * time.Millisecond // a stopped agent leaves its sessions at once
	ra = startAgent(t, opts)
	gwA.waitStatus(id, outpostv1.AgentStatus_AGENT_STATUS_ONLINE, 10*time.Second)
	// Replica A records the connection in the store asynchronously.
	lcUntil(t, 10*time.Second, "replica B reaches the agent through replica A", func() bool {
		s, err := gwB.dial(id, target)
		if err != nil {
			return false
		}
		s.Close()
		return true
	})
	return gwA, gwB, ra, id
}

// A session created and opened at replica B for an agent connected only to
// replica A goes through the peer link: bytes both ways, with checksums,
// through the tunnel directly and through the client entry (a token naming
// the agent).
func TestPeerForwardedSession(t *testing.T) {
	up := tcpServer(t, hasher)
	_, gwB, _, id := peerPair(t, up)

	const n = 8 << 20
	s, err := gwB.dial(id, up)
	if err != nil {
		t.Fatal(err)
	}
	uploadAndHash(t, s, n)
	s.Close()

	down := tcpServer(t, source(n))
	s, err = gwB.dial(id, down)
	if err != nil {
		t.Fatal(err)
	}
	downloadAndHash(t, s, n)
	s.Close()

	d := gwB.resolve(up, id)
	if d.GetDecision() != outpostv1.Decision_DECISION_AGENT || !strings.Contains(d.GetReason(), "connected to replica") {
		t.Errorf("replica B's decision for the agent: %v %q", d.GetDecision(), d.GetReason())
	}
	if d := gwB.resolve(up, uuid.NewString()); d.GetDecision() != outpostv1.Decision_DECISION_REJECTED || !strings.Contains(d.GetReason(), "not connected") {
		t.Errorf("replica B's decision for an agent connected nowhere: %v %q", d.GetDecision(), d.GetReason())
	}
	resp := gwB.session(&outpostv1.CreateSessionRequest{Target: up, AgentId: id})
	ws, err := openSession(t, resp)
	if err != nil {
		t.Fatal(err)
	}
	go func() {
		io.Copy(ws, pattern(n))
		ws.CloseWrite()
	}()
	got, err := io.ReadAll(ws)
	if err != nil || !bytes.Equal(got, patternSum(n)) {
		t.Fatalf("digest through replica B's entry: %x %v", got, err)
	}
	ws.Close()
}

// The agent going away while a forwarded session flows ends the session
// (it does not hang), and the next session at replica B fails with a
// reason that names the agent.
func TestPeerAgentLeaves(t *testing.T) {
	echoAddr := tcpServer(t, echo)
	_, gwB, ra, id := peerPair(t, echoAddr)

	s, err := gwB.dial(id, echoAddr)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if _, err := s.Write([]byte("ping")); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 4)
	if _, err := io.ReadFull(s, buf); err != nil || string(buf) != "ping" {
		t.Fatalf("echo: %q %v", buf, err)
	}
	ra.stop()
	ended := make(chan error, 1)
	go func() {
		_, err := io.Copy(io.Discard, s)
		ended <- err
	}()
	select {
	case err := <-ended:
		t.Logf("the forwarded session ended with the agent: %v", err)
	case <-time.After(20 * time.Second):
		t.Fatal("the forwarded session outlived its agent by 20 s")
	}

	resp := gwB.session(&outpostv1.CreateSessionRequest{Target: echoAddr, AgentId: id})
	ws, err := openSession(t, resp)
	if err != nil {
		t.Fatal(err)
	}
	reason := readFailure(t, ws)
	t.Logf("the client's reason: %s", reason)
	// The agent is named by its id, or by its name while this replica's
	// view of the cluster still lists it (Presence).
	if !(strings.Contains(reason, id) || strings.Contains(reason, "agent office")) || !strings.Contains(reason, "not connected") {
		t.Errorf("reason %q, want the agent (%s, office) named as not connected", reason, id)
	}
	if _, err := gwB.dial(id, echoAddr); !errors.Is(err, servertest.ErrAgentNotConnected) {
		t.Errorf("dial after the agent left: %v, want not connected", err)
	}
}

// peerEKU is pki.PeerEKU, restated: the e2e suite sees only public faces.
var peerEKU = asn1.ObjectIdentifier{1, 3, 6, 1, 4, 1, 63164, 17, 1}

// forgePeerCert is a peer certificate for a new replica id, signed by the
// cluster CA of gw, as a replica would hold.
func forgePeerCert(t *testing.T, gw *gateway) tls.Certificate {
	t.Helper()
	caKey := servertest.CAKey(gw.g)
	block, _ := pem.Decode(gw.g.CACertPEM())
	ca, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:       big.NewInt(time.Now().UnixNano()),
		Subject:            pkix.Name{CommonName: "forged peer"},
		NotBefore:          time.Now().Add(-time.Minute),
		NotAfter:           time.Now().Add(time.Hour),
		KeyUsage:           x509.KeyUsageDigitalSignature,
		UnknownExtKeyUsage: []asn1.ObjectIdentifier{peerEKU},
		URIs:               []*url.URL{{Scheme: "urn", Opaque: "outpost:peer:" + uuid.NewString()}},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}

// dialPeer dials gw's QUIC listener with the peer ALPN and cert.
func dialPeer(gw *gateway, cert tls.Certificate) (*quic.Conn, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	return quic.DialAddr(ctx, gw.g.QUICAddr().String(), &tls.Config{
		MinVersion: tls.VersionTLS13, NextProtos: []string{"gw-peer/1"}, ServerName: "outpost-peer",
		InsecureSkipVerify: true, Certificates: []tls.Certificate{cert},
	}, transport.Config{}.QUIC())
}

// A peer certificate of the cluster CA is refused as an agent's, and an
// agent certificate is refused on the peer link, while a peer certificate
// is accepted there.
func TestPeerAndAgentCertificatesDoNotMix(t *testing.T) {
	gws := startReplicas(t, testpg.DSN(t), 1, nil)
	gw := gws[0]
	peerCert := forgePeerCert(t, gw)

	conn := rawDial(t, gw, peerCert)
	if got := closeReason(t, conn); got != "agent-not-accepted" {
		t.Errorf("a peer certificate on the agent ALPN: closed with %q, want agent-not-accepted", got)
	}

	dir, _ := enrollAgent(t, gw, "office", loopback, nil)
	if pc, err := dialPeer(gw, loadCert(t, dir)); err == nil {
		// The client's handshake may end before the server's check.
		select {
		case <-pc.Context().Done():
		case <-time.After(10 * time.Second):
			t.Error("an agent certificate on the peer link was not refused")
		}
		pc.CloseWithError(0, "")
	}

	pc, err := dialPeer(gw, peerCert)
	if err != nil {
		t.Fatalf("a peer certificate on the peer link: %v", err)
	}
	st, err := pc.OpenStreamSync(context.Background())
	if err != nil {
		t.Fatalf("a peer opens a stream: %v", err)
	}
	st.CancelWrite(0)
	pc.CloseWithError(0, "")
}

// copyDir copies the agent config directory from to a new one, with its
// tunnel pointed at endpoint: the same agent identity, another replica.
func copyDir(t *testing.T, from, endpoint string) string {
	t.Helper()
	to := t.TempDir()
	err := filepath.WalkDir(from, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(from, path)
		if d.IsDir() {
			return os.MkdirAll(filepath.Join(to, rel), 0o700)
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		return os.WriteFile(filepath.Join(to, rel), b, 0o600)
	})
	if err != nil {
		t.Fatal(err)
	}
	lcEditTunnel(t, to, func(tun map[string]any) { tun["GatewayEndpoint"] = endpoint })
	return to
}

// An agent connected to replicas A and C, a client at replica B: when the
// agent leaves the replica B would try first, the sessions B opens move on
// to the other one; none fails.
func TestPeerFailoverAcrossReplicas(t *testing.T) {
	gws := startReplicas(t, testpg.DSN(t), 3, nil)
	gwA, gwB, gwC := gws[0], gws[1], gws[2]
	dirA, id := enrollAgent(t, gwA, "office", loopback, nil)
	dirC := copyDir(t, dirA, gwC.g.QUICAddr().String())
	run := func(dir string) *runningAgent {
		opts := fastAgent(dir)
		opts.DrainTimeout = 200 * time.Millisecond
		return startAgent(t, opts)
	}
	raA, raC := run(dirA), run(dirC)
	target := tcpServer(t, echo)
	lcUntil(t, 10*time.Second, "replica B sees the agent on two replicas", func() bool {
		return len(gwB.agentView(id).GetReplicaIds()) == 2
	})
	// Replica B tries them in the order of their ids: leave the first.
	first := raA
	if gwC.replicaID() < gwA.replicaID() {
		first = raC
	}
	echoAt := func() error {
		s, err := gwB.dial(id, target)
		if err != nil {
			return err
		}
		defer s.Close()
		if _, err := s.Write([]byte("ping")); err != nil {
			return err
		}
		buf := make([]byte, 4)
		_, err = io.ReadFull(s, buf)
		return err
	}
	if err := echoAt(); err != nil { // and B caches where the agent is
		t.Fatal(err)
	}
	first.stop()
	for deadline := time.Now().Add(2 * time.Second); time.Now().Before(deadline); {
		if err := echoAt(); err != nil {
			t.Fatalf("a session at replica B after the agent left one of its replicas: %v", err)
		}
	}
}

// An agent on another replica that stops answering at the transport costs
// a session at replica B no more than the hedge delay, as a local one
// would: its replica says nothing of it (Heard) until it acknowledges the
// request, so B starts the next candidate in parallel.
func TestPeerHedgeSilentRemoteAgent(t *testing.T) {
	gws := startReplicas(t, testpg.DSN(t), 2, nil)
	gwA, gwB := gws[0], gws[1]
	target := tcpServer(t, echo)
	gwA.onlineAgent("good")
	dir, id := enrollAgent(t, gwA, "frozen", loopback, nil)
	frozen := freezableAgent(t, gwA, dir, answerAfter(0))
	gwA.waitStatus(id, outpostv1.AgentStatus_AGENT_STATUS_ONLINE, 5*time.Second)
	// Connected last, the frozen agent is replica B's first candidate.
	lcUntil(t, 10*time.Second, "replica B routes to both agents, the frozen one first", func() bool {
		c := gwB.resolve(target, "").GetCandidates()
		return len(c) == 2 && c[0].GetAgentId() == id
	})
	timedEcho(t, gwB, target) // the peer link is up
	frozen.frozen.Store(true)
	d := timedEcho(t, gwB, target)
	t.Logf("a session at replica B after the freeze: %v", d)
	if d < server.DefaultHedgeDelay || d > server.DefaultHedgeDelay+time.Second {
		t.Errorf("the session took %v, want the hedge delay (%v) plus a round trip", d, server.DefaultHedgeDelay)
	}
}
