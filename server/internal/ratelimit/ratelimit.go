// Package ratelimit limits events per key (a client IP address), with a
// token bucket per key and a bounded number of keys.
package ratelimit

import (
	"sync"
	"time"

	"golang.org/x/time/rate"
)

// DefaultMaxKeys bounds the number of keys tracked at once.
const DefaultMaxKeys = 100_000

// PerKey allows Burst events per key at once, refilled at Burst per Window.
// It is safe for concurrent use.
type PerKey struct {
	limit   rate.Limit
	burst   int
	idle    time.Duration
	maxKeys int

	mu sync.Mutex
	// buckets and lastSeen are guarded by mu.
	buckets  map[string]*rate.Limiter
	lastSeen map[string]time.Time
}

// New allows burst events per window for each key (e.g. 10 per minute).
func New(burst int, window time.Duration) *PerKey {
	return &PerKey{
		limit:    rate.Limit(float64(burst) / window.Seconds()),
		burst:    burst,
		idle:     window,
		maxKeys:  DefaultMaxKeys,
		buckets:  map[string]*rate.Limiter{},
		lastSeen: map[string]time.Time{},
	}
}

// Allow reports whether one more event for key may happen at now, and counts it.
func (p *PerKey) Allow(key string, now time.Time) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	b, ok := p.buckets[key]
	if !ok {
		if len(p.buckets) >= p.maxKeys {
			p.evictLocked(now)
		}
		b = rate.NewLimiter(p.limit, p.burst)
		p.buckets[key] = b
	}
	p.lastSeen[key] = now
	return b.AllowN(now, 1)
}

// evictLocked drops keys idle for a whole window (their buckets are full
// again, so forgetting them changes nothing); if none are, it drops half of the
// keys so memory stays bounded under a flood of distinct keys.
func (p *PerKey) evictLocked(now time.Time) {
	for k, seen := range p.lastSeen {
		if now.Sub(seen) >= p.idle {
			delete(p.buckets, k)
			delete(p.lastSeen, k)
		}
	}
	for k := range p.buckets {
		if len(p.buckets) < p.maxKeys/2 {
			break
		}
		delete(p.buckets, k)
		delete(p.lastSeen, k)
	}
}
