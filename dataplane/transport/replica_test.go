package transport

import (
	"crypto/x509"
	"net/url"
	"testing"
)

func TestReplicaURI(t *testing.T) {
	const id = "0b6f6c2e-3c1d-4d6a-9e8f-1a2b3c4d5e6f"
	u, err := ReplicaURI(id)
	if err != nil {
		t.Fatal(err)
	}
	if u.String() != "urn:outpost:replica:"+id {
		t.Fatalf("ReplicaURI = %s", u)
	}
	agent, _ := url.Parse("urn:uuid:" + id)
	other, _ := url.Parse("urn:outpost:replica:not-a-uuid")
	for _, tc := range []struct {
		name   string
		uris   []*url.URL
		wantID string
		wantOK bool
	}{
		{"replica", []*url.URL{u}, id, true},
		{"after others", []*url.URL{agent, other, u}, id, true},
		{"none", nil, "", false},
		{"agent identity only", []*url.URL{agent}, "", false},
		{"malformed id", []*url.URL{other}, "", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, ok := ReplicaIDFromCert(&x509.Certificate{URIs: tc.uris})
			if got != tc.wantID || ok != tc.wantOK {
				t.Fatalf("ReplicaIDFromCert = %q, %v; want %q, %v", got, ok, tc.wantID, tc.wantOK)
			}
		})
	}
	if _, ok := ReplicaIDFromCert(nil); ok {
		t.Fatal("ReplicaIDFromCert(nil) is ok")
	}
	for _, bad := range []string{"", "0B6F6C2E-3C1D-4D6A-9E8F-1A2B3C4D5E6F", "0b6f6c2e3c1d4d6a9e8f1a2b3c4d5e6f", "0b6f6c2e-3c1d-4d6a-9e8f-1a2b3c4d5e6g", id + "x"} {
		if _, err := ReplicaURI(bad); err == nil {
			t.Errorf("ReplicaURI(%q) accepted", bad)
		}
	}
}
