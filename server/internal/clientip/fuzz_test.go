package clientip

import (
	"net/http"
	"net/netip"
	"testing"
)

// FuzzParseTrusted: an accepted list holds masked prefixes, each of which
// contains its own address; a rejected list returns nothing.
// Seeds: testdata/fuzz/FuzzParseTrusted.
func FuzzParseTrusted(f *testing.F) {
	f.Fuzz(func(t *testing.T, s string) {
		got, err := ParseTrusted([]string{s})
		if err != nil {
			if got != nil {
				t.Fatalf("ParseTrusted(%q) = %v with error %v", s, got, err)
			}
			return
		}
		if len(got) != 1 || got[0] != got[0].Masked() || !got[0].Contains(got[0].Addr()) {
			t.Fatalf("ParseTrusted(%q) = %v", s, got)
		}
	})
}

// FuzzFromRequest: whatever X-Forwarded-For says, a client behind no trusted
// proxy is its TCP peer, and behind trusted proxies the answer is either the
// peer or an address that appears in the header.
// Seeds: testdata/fuzz/FuzzFromRequest.
func FuzzFromRequest(f *testing.F) {
	trusted, _ := ParseTrusted([]string{"10.0.0.0/8", "::1"})
	r := Resolver{Trusted: trusted}
	f.Fuzz(func(t *testing.T, peer, xff string) {
		req := &http.Request{RemoteAddr: peer, Header: http.Header{"X-Forwarded-For": {xff}}}
		direct := addrOf(peer)
		if got := (Resolver{}).FromRequest(req); got != direct {
			t.Fatalf("no trusted proxy: got %v, want the peer %v", got, direct)
		}
		got := r.FromRequest(req)
		if got == direct {
			return
		}
		if !got.IsValid() || !direct.IsValid() || !r.trusted(direct) {
			t.Fatalf("peer %q xff %q: got %v although the peer %v is not a trusted proxy", peer, xff, got, direct)
		}
		if _, err := netip.ParseAddr(got.String()); err != nil {
			t.Fatalf("got an unprintable address %v", got)
		}
	})
}
