package pki

import (
	"testing"
)

// A replica's server certificate carries its replica id, and keeps it
// when renewed; without a replica id (a cluster of one) it carries none; a
// malformed id is refused.
func TestServerReplicaID(t *testing.T) {
	const id = "5d0c1b2a-3e4f-4a5b-8c6d-7e8f9a0b1c2d"
	clk := newClock()
	sec, err := NewSecrets(testConfig(t, clk))
	if err != nil {
		t.Fatal(err)
	}
	cfg := testConfig(t, clk, "gw1.example")
	cfg.ReplicaID = id
	a, err := New(sec, cfg)
	if err != nil {
		t.Fatal(err)
	}
	if got, ok := ReplicaIDFromCert(a.ServerCert()); !ok || got != id {
		t.Fatalf("replica id in the server certificate = %q, %v; want %q", got, ok, id)
	}
	if a.ServerCert().DNSNames[0] != "gw1.example" {
		t.Errorf("DNS names %v lost the configured name", a.ServerCert().DNSNames)
	}
	clk.Advance(DefaultServerValidity)
	if renewed, err := a.RenewServerIfNeeded(); err != nil || !renewed {
		t.Fatalf("RenewServerIfNeeded: %v, %v", renewed, err)
	}
	if got, _ := ReplicaIDFromCert(a.ServerCert()); got != id {
		t.Fatalf("the renewed certificate carries replica id %q, want %q", got, id)
	}

	single, err := New(sec, testConfig(t, clk, "gw1.example"))
	if err != nil {
		t.Fatal(err)
	}
	if got, ok := ReplicaIDFromCert(single.ServerCert()); ok || len(single.ServerCert().URIs) != 0 {
		t.Fatalf("a gateway without replica id has URI SANs %v (id %q)", single.ServerCert().URIs, got)
	}
	files := mustLoad(t, t.TempDir(), testConfig(t, clk))
	if len(files.ServerCert().URIs) != 0 {
		t.Fatalf("a gateway kept in files has URI SANs %v", files.ServerCert().URIs)
	}

	cfg.ReplicaID = "not-a-uuid"
	if _, err := New(sec, cfg); err == nil {
		t.Fatal("New accepted a malformed replica id")
	}
}
