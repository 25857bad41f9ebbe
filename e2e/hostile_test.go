package e2e

import (
	"context"
	"crypto/ecdsa"
	"crypto/tls"
	"crypto/x509"
	"encoding/binary"
	"errors"
	"path/filepath"
	"testing"
	"time"

	"github.com/quic-go/quic-go"

	"github.com/outposthq/outpost/dataplane"
	"github.com/outposthq/outpost/dataplane/transport"
	outpostv1 "github.com/outposthq/outpost/gen/outpost/v1"
	"github.com/outposthq/outpost/internal/testtls"
	"github.com/outposthq/outpost/server/servertest"
)

// rawDial connects to the gateway's tunnel with cert, as a hand-rolled agent.
func rawDial(t *testing.T, gw *gateway, cert tls.Certificate) *quic.Conn {
	t.Helper()
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(gw.g.CACertPEM())
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn, err := quic.DialAddr(ctx, gw.g.QUICAddr().String(), transport.ClientTLS(&tls.Config{
		RootCAs: pool, ServerName: "localhost", Certificates: []tls.Certificate{cert},
	}), transport.Config{}.QUIC())
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	t.Cleanup(func() { conn.CloseWithError(0, "test over") })
	return conn
}

// closeReason waits for conn to be closed by the gateway and returns the reason.
func closeReason(t *testing.T, conn *quic.Conn) string {
	t.Helper()
	select {
	case <-conn.Context().Done():
	case <-time.After(10 * time.Second):
		t.Fatal("the gateway did not close the connection")
	}
	var appErr *quic.ApplicationError
	if err := context.Cause(conn.Context()); !errors.As(err, &appErr) || !appErr.Remote {
		t.Fatalf("closed by %v, want a gateway application close", err)
	}
	return appErr.ErrorMessage
}

// agentCert signs a client certificate for agentID with a new key, by
// ca and caKey or, when ca is nil, by a CA of its own.
func agentCert(t *testing.T, ca *x509.Certificate, caKey *ecdsa.PrivateKey, agentID string) tls.Certificate {
	t.Helper()
	issuer := &testtls.CA{Cert: ca, Key: caKey}
	if ca == nil {
		issuer = testtls.NewCA(t, testtls.Spec{CN: "Other CA"})
	}
	return issuer.Agent(t, testtls.Spec{CN: "intruder", AgentID: agentID})
}

// gatewayCA returns the gateway's CA certificate and key.
func gatewayCA(t *testing.T, gw *gateway) (*x509.Certificate, *ecdsa.PrivateKey) {
	t.Helper()
	return testtls.ParseCert(t, gw.g.CACertPEM()), servertest.CAKey(gw.g)
}

func TestTunnelAdmissionRefusals(t *testing.T) {
	gw := startGateway(t, t.TempDir(), nil)
	_, id := enrollAgent(t, gw, "office", loopback, nil)
	ca, caKey := gatewayCA(t, gw)

	t.Run("another CA", func(t *testing.T) {
		conn := rawDial(t, gw, agentCert(t, nil, nil, id))
		if r := closeReason(t, conn); r != "agent-not-accepted" {
			t.Fatalf("reason %q", r)
		}
	})
	t.Run("right CA, key not enrolled", func(t *testing.T) {
		conn := rawDial(t, gw, agentCert(t, ca, caKey, id))
		if r := closeReason(t, conn); r != "agent-not-accepted" {
			t.Fatalf("reason %q", r)
		}
	})
	t.Run("right CA, unknown agent", func(t *testing.T) {
		conn := rawDial(t, gw, agentCert(t, ca, caKey, "11111111-2222-4333-8444-555555555555"))
		if r := closeReason(t, conn); r != "agent-not-accepted" {
			t.Fatalf("reason %q", r)
		}
	})
	if s := gw.agentView(id).GetStatus(); s != outpostv1.AgentStatus_AGENT_STATUS_OFFLINE {
		t.Fatalf("refused connections registered the agent: %v", s)
	}
}

// A hand-rolled agent with a valid identity misbehaves: an unknown tag is
// skipped, an oversized frame closes that connection, other agents go on.
func TestTunnelHostileAgent(t *testing.T) {
	gw := startGateway(t, t.TempDir(), nil)
	hostileDir, hostileID := enrollAgent(t, gw, "hostile", loopback, nil)
	goodDir, goodID := enrollAgent(t, gw, "good", loopback, nil)
	startAgent(t, fastAgent(goodDir))
	gw.waitStatus(goodID, outpostv1.AgentStatus_AGENT_STATUS_ONLINE, 10*time.Second)

	cert, err := tls.LoadX509KeyPair(filepath.Join(hostileDir, "certs/agent.pem"), filepath.Join(hostileDir, "certs/agent.key"))
	if err != nil {
		t.Fatal(err)
	}
	conn := rawDial(t, gw, cert)
	ctrl, err := conn.OpenStream()
	if err != nil {
		t.Fatal(err)
	}
	w := dataplane.NewControlWriter(ctrl)
	if err := w.Send(&dataplane.RouteAdvertise{Version: dataplane.ProtocolVersion, Epoch: 1}); err != nil {
		t.Fatal(err)
	}
	// Unknown tag 0x7f, version 1, three bytes of body.
	ctrl.Write([]byte{0, 0, 0, 6, 0x7f, 0, 1, 1, 2, 3})
	// A wrong version is ignored, not answered.
	w.Send(&dataplane.Heartbeat{Version: 9, TimestampMs: 1})
	w.Send(&dataplane.Heartbeat{Version: dataplane.ProtocolVersion, TimestampMs: 42})
	ctrl.SetReadDeadline(time.Now().Add(10 * time.Second))
	msg, err := dataplane.NewControlReader(ctrl).ReadControl()
	if err != nil {
		t.Fatal(err)
	}
	if ack, ok := msg.(*dataplane.HeartbeatAck); !ok || ack.TimestampMs != 42 {
		t.Fatalf("after an unknown tag: %#v, want the ack of heartbeat 42", msg)
	}
	gw.waitStatus(hostileID, outpostv1.AgentStatus_AGENT_STATUS_ONLINE, 5*time.Second)

	// A frame header declaring 4 GiB: the gateway closes this connection.
	var hdr [4]byte
	binary.BigEndian.PutUint32(hdr[:], 0xFFFFFFFF)
	ctrl.Write(hdr[:])
	if r := closeReason(t, conn); r != "protocol-error" {
		t.Fatalf("reason %q", r)
	}
	gw.waitStatus(hostileID, outpostv1.AgentStatus_AGENT_STATUS_OFFLINE, 5*time.Second)

	s, err := gw.dial(goodID, tcpServer(t, echo))
	if err != nil {
		t.Fatalf("the good agent suffered: %v", err)
	}
	s.Close()
}
