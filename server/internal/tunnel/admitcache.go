package tunnel

import (
	"sync"
	"time"

	"github.com/outposthq/outpost/server/internal/store"
)

// admissionCache remembers the agents the store recently admitted, so that
// a known agent reconnecting while the store cannot be reached is admitted
// all the same (DESIGN.md §10). It is bounded (at most max agents; a full
// cache drops expired entries, then the oldest) and short-lived (an entry
// serves for ttl after the store last vouched for the agent). An agent the
// store says is deleted or unknown, or that the gateway disconnects
// (DeleteAgent), is forgotten at once. Safe for concurrent use.
type admissionCache struct {
	ttl time.Duration
	max int
	now func() time.Time

	mu sync.Mutex
	// entries by agent id; guarded by mu.
	entries map[string]cachedAgent
	// forgets counts the calls of forget; guarded by mu. A lookup that
	// began before a forget does not put its (maybe stale) answer.
	forgets uint64
}

// cachedAgent is an agent as the store returned it, and when.
type cachedAgent struct {
	agent store.Agent
	at    time.Time
}

// newAdmissionCache returns a cache; a ttl or max of zero or less makes it
// remember nothing.
func newAdmissionCache(ttl time.Duration, max int, now func() time.Time) *admissionCache {
	return &admissionCache{ttl: ttl, max: max, now: now, entries: make(map[string]cachedAgent)}
}

// begin marks the start of a store lookup whose answer may be put.
func (c *admissionCache) begin() uint64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.forgets
}

// put remembers a live agent that the store returned to a lookup started
// at mark (begin), unless an agent was forgotten since: the answer may
// predate a deletion.
func (c *admissionCache) put(a store.Agent, mark uint64) {
	if c.ttl <= 0 || c.max <= 0 {
		return
	}
	now := c.now()
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.forgets != mark {
		return
	}
	if _, ok := c.entries[a.ID]; !ok && len(c.entries) >= c.max {
		c.evictLocked(now)
	}
	c.entries[a.ID] = cachedAgent{agent: a, at: now}
}

// evictLocked drops the expired entries, or else the oldest one. c.mu
// must be held.
func (c *admissionCache) evictLocked(now time.Time) {
	oldest, oldestAt := "", now
	for id, e := range c.entries {
		switch {
		case now.Sub(e.at) >= c.ttl:
			delete(c.entries, id)
		case e.at.Before(oldestAt) || oldest == "":
			oldest, oldestAt = id, e.at
		}
	}
	if len(c.entries) >= c.max {
		delete(c.entries, oldest)
	}
}

// get returns the remembered agent id if the store vouched for it within
// ttl.
func (c *admissionCache) get(id string) (store.Agent, bool) {
	now := c.now()
	c.mu.Lock()
	defer c.mu.Unlock()
	e, ok := c.entries[id]
	if !ok {
		return store.Agent{}, false
	}
	if now.Sub(e.at) >= c.ttl || now.Before(e.at) {
		delete(c.entries, id)
		return store.Agent{}, false
	}
	return e.agent, true
}

// forget drops agent id.
func (c *admissionCache) forget(id string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.forgets++
	delete(c.entries, id)
}

// ids returns the ids of the remembered agents, expired ones included.
func (c *admissionCache) ids() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make([]string, 0, len(c.entries))
	for id := range c.entries {
		out = append(out, id)
	}
	return out
}
