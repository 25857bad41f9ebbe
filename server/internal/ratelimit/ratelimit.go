// Package ratelimit limits events per key (a client network), with a token
// bucket per key and a bounded number of keys kept in least-recently-used
// order: a flood of new keys evicts only the keys seen longest ago, never
// resets the buckets of recent ones.
package ratelimit

import (
	"net/netip"
	"sync"
	"time"

	lru "github.com/hashicorp/golang-lru/v2/simplelru"
	"golang.org/x/time/rate"
)

// DefaultMaxKeys bounds the number of keys tracked at once.
const DefaultMaxKeys = 100_000

// IPv6Prefix is the IPv6 prefix length one key covers: a whole /64, which a
// single host or site usually holds entirely.
const IPv6Prefix = 64

// PerKey allows Burst events per key at once, refilled at Burst per Window.
// It is safe for concurrent use.
type PerKey struct {
	limit rate.Limit
	burst int

	mu      sync.Mutex
	buckets *lru.LRU[string, *rate.Limiter] // guarded by mu
}

// New allows burst events per window for each key (e.g. 10 per minute),
// tracking at most DefaultMaxKeys keys.
func New(burst int, window time.Duration) *PerKey {
	return newWithMax(burst, window, DefaultMaxKeys)
}

func newWithMax(burst int, window time.Duration, maxKeys int) *PerKey {
	buckets, err := lru.NewLRU[string, *rate.Limiter](maxKeys, nil)
	if err != nil { // only for a non-positive size
		panic("ratelimit: " + err.Error())
	}
	return &PerKey{limit: rate.Limit(float64(burst) / window.Seconds()), burst: burst, buckets: buckets}
}

// Allow reports whether one more event for key may happen at now, and counts it.
func (p *PerKey) Allow(key string, now time.Time) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	b, ok := p.buckets.Get(key)
	if !ok {
		b = rate.NewLimiter(p.limit, p.burst)
		p.buckets.Add(key, b)
	}
	return b.AllowN(now, 1)
}

// AllowAddr is Allow for the key of a client address (see KeyOf).
func (p *PerKey) AllowAddr(a netip.Addr, now time.Time) bool { return p.Allow(KeyOf(a), now) }

// KeyOf is the key of a client address: the address itself for IPv4 (and
// IPv4-mapped IPv6), its /64 for IPv6 — one host can pick any address of its
// /64, so keying on the /128 would give it 2^64 buckets.
func KeyOf(a netip.Addr) string {
	a = a.Unmap().WithZone("")
	if a.Is6() {
		p, _ := a.Prefix(IPv6Prefix)
		return p.String()
	}
	return a.String()
}
