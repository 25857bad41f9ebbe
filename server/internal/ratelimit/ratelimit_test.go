package ratelimit

import (
	"fmt"
	"net/netip"
	"testing"
	"time"
)

func TestPerKey(t *testing.T) {
	p := New(10, time.Minute)
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	for i := range 10 {
		if !p.Allow("a", now) {
			t.Fatalf("event %d refused", i+1)
		}
	}
	if p.Allow("a", now) {
		t.Fatal("11th event in a minute allowed")
	}
	if !p.Allow("b", now) {
		t.Fatal("another key was limited")
	}
	if !p.Allow("a", now.Add(6*time.Second)) {
		t.Fatal("bucket did not refill after 6 s")
	}
	if p.Allow("a", now.Add(6*time.Second)) {
		t.Fatal("refilled more than one token in 6 s")
	}
}

// A flood of new keys evicts the keys seen longest ago, never the recently
// limited one: its bucket is not reset.
func TestPerKeyFloodDoesNotResetRecentKeys(t *testing.T) {
	p := newWithMax(1, time.Minute, 100)
	now := time.Now()
	p.Allow("victim-of-its-own-limit", now)
	for i := range 1000 {
		if i%50 == 0 { // the limited key keeps trying, so it stays recent
			if p.Allow("victim-of-its-own-limit", now) {
				t.Fatalf("after %d other keys the exhausted bucket was reset", i)
			}
		}
		p.Allow(fmt.Sprint(i), now)
	}
	if n := p.buckets.Len(); n > 100 {
		t.Fatalf("%d buckets; want <= 100", n)
	}
}

func TestKeyOf(t *testing.T) {
	cases := map[string]string{
		"192.0.2.7":            "192.0.2.7",
		"::ffff:192.0.2.7":     "192.0.2.7",
		"2001:db8:1:2:3:4:5:6": "2001:db8:1:2::/64",
		"2001:db8:1:2::ffff":   "2001:db8:1:2::/64",
		"fe80::1%eth0":         "fe80::/64",
		"2001:db8:1:3::1":      "2001:db8:1:3::/64",
	}
	for in, want := range cases {
		if got := KeyOf(netip.MustParseAddr(in)); got != want {
			t.Errorf("KeyOf(%s) = %s, want %s", in, got, want)
		}
	}
	// Two addresses of one /64 share a bucket; another /64 does not.
	p := New(1, time.Minute)
	now := time.Now()
	if !p.AllowAddr(netip.MustParseAddr("2001:db8::1"), now) || p.AllowAddr(netip.MustParseAddr("2001:db8::2"), now) {
		t.Fatal("one /64 got two buckets")
	}
	if !p.AllowAddr(netip.MustParseAddr("2001:db8:0:1::1"), now) {
		t.Fatal("another /64 was limited")
	}
}
