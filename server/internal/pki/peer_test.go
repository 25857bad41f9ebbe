package pki

import (
	"errors"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/outposthq/outpost/internal/testtls"
)

func TestIssuePeer(t *testing.T) {
	clk := newClock()
	a := mustLoad(t, t.TempDir(), testConfig(t, clk))
	id := uuid.NewString()
	c, err := a.IssuePeer(id, 0)
	if err != nil {
		t.Fatal(err)
	}
	if len(c.Certificate) != 2 || c.Leaf == nil || c.PrivateKey == nil {
		t.Fatalf("chain of %d, leaf %v: want leaf + CA with a key", len(c.Certificate), c.Leaf != nil)
	}
	got, err := a.VerifyPeerChain(c.Certificate)
	if err != nil || got != id {
		t.Fatalf("VerifyPeerChain = %q, %v; want %q", got, err, id)
	}
	if len(c.Leaf.ExtKeyUsage) != 0 || len(c.Leaf.URIs) != 1 || c.Leaf.URIs[0].String() != "urn:outpost:peer:"+id {
		t.Errorf("EKU %v, URIs %v", c.Leaf.ExtKeyUsage, c.Leaf.URIs)
	}
	if want := clk.Now().Add(DefaultPeerValidity); !c.Leaf.NotAfter.Equal(want) {
		t.Errorf("NotAfter %v, want %v", c.Leaf.NotAfter, want)
	}
	for _, bad := range []string{"", "not-a-uuid", uuid.Nil.String(), "0A1B2C3D-4E5F-4A6B-8C7D-8E9FA0B1C2D3"} {
		if _, err := a.IssuePeer(bad, 0); err == nil {
			t.Errorf("IssuePeer(%q) succeeded", bad)
		}
	}
	clk.Advance(DefaultPeerValidity + time.Second)
	if _, err := a.VerifyPeerChain(c.Certificate); !errors.Is(err, ErrPeerUntrusted) {
		t.Errorf("expired peer certificate: %v, want ErrPeerUntrusted", err)
	}
}

// A peer certificate is never an agent's, and an agent certificate (or
// the server's, or one from another CA) never a peer's.
func TestPeerAndAgentCertificatesDoNotMix(t *testing.T) {
	clk := newClock()
	a := mustLoad(t, t.TempDir(), testConfig(t, clk))
	other := mustLoad(t, t.TempDir(), testConfig(t, clk))
	peer, err := a.IssuePeer(uuid.NewString(), 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := a.VerifyAgentChain(peer.Certificate); !errors.Is(err, ErrUntrusted) {
		t.Errorf("peer certificate as an agent: %v, want ErrUntrusted", err)
	}
	if _, err := AgentIDFromCert(peer.Leaf); !errors.Is(err, ErrAgentID) {
		t.Errorf("agent id of a peer certificate: %v, want ErrAgentID", err)
	}

	csr := mustParseCSR(t, testtls.CSR(t, testtls.Key(t), nil))
	agent, err := a.SignAgent(csr, uuid.New(), "a", "")
	if err != nil {
		t.Fatal(err)
	}
	foreign, err := other.IssuePeer(uuid.NewString(), 0)
	if err != nil {
		t.Fatal(err)
	}
	refuse := map[string][][]byte{
		"agent certificate":         {agent.DER},
		"agent certificate with CA": {agent.DER, a.CACert().Raw},
		"server certificate":        {a.ServerCert().Raw},
		"the CA itself":             {a.CACert().Raw},
		"another CA's peer":         foreign.Certificate,
		"another CA's peer, leaf":   {foreign.Certificate[0]},
		"nothing":                   nil,
		"garbage":                   {[]byte("garbage")},
	}
	for name, chain := range refuse {
		if _, err := a.VerifyPeerChain(chain); !errors.Is(err, ErrPeerUntrusted) {
			t.Errorf("%s: %v, want ErrPeerUntrusted", name, err)
		}
	}
}
