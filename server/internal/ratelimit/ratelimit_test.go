package ratelimit

import (
	"fmt"
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

func TestPerKeyBoundsKeys(t *testing.T) {
	p := New(1, time.Minute)
	p.maxKeys = 100
	now := time.Now()
	for i := range 1000 {
		p.Allow(fmt.Sprint(i), now)
	}
	if n := len(p.buckets); n > 100 || len(p.lastSeen) != n {
		t.Fatalf("%d buckets, %d lastSeen; want <= 100 and equal", n, len(p.lastSeen))
	}
}
