package peer

import (
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/outposthq/outpost/internal/fakeclock"
	"github.com/outposthq/outpost/server/internal/pki"
)

// The peer certificate is kept until a third of its life is left, then
// re-issued with a new key on the next handshake.
func TestIdentityRenews(t *testing.T) {
	clk := fakeclock.New(time.Now().UTC().Truncate(time.Second))
	ca, err := pki.LoadOrCreate(t.TempDir(), pki.Config{Now: clk.Now})
	if err != nil {
		t.Fatal(err)
	}
	id, err := NewIdentity(ca, uuid.NewString(), clk.Now)
	if err != nil {
		t.Fatal(err)
	}
	first, err := id.certificate()
	if err != nil {
		t.Fatal(err)
	}
	clk.Advance(pki.DefaultPeerValidity * 2 / 3 / 2)
	if c, _ := id.certificate(); c != first {
		t.Error("re-issued with more than a third of its life left")
	}
	clk.Advance(pki.DefaultPeerValidity/3 + time.Second)
	c, err := id.certificate()
	if err != nil || c == first || c.Leaf.NotBefore.Before(first.Leaf.NotBefore) {
		t.Fatalf("not re-issued with a third of its life left: %v", err)
	}
	if got, err := ca.VerifyPeerChain(c.Certificate); err != nil || got != id.ReplicaID() {
		t.Errorf("the renewed certificate: %q, %v", got, err)
	}
	if _, err := NewIdentity(nil, "x", nil); err == nil {
		t.Error("NewIdentity without an authority succeeded")
	}
	if _, err := NewIdentity(ca, "not-a-uuid", nil); err == nil {
		t.Error("NewIdentity with a malformed replica id succeeded")
	}
}
