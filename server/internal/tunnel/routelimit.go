package tunnel

import (
	"sync"
	"time"
)

// changeWindow is the minute of route changes an agent is in.
type changeWindow struct {
	start  time.Time
	n      int  // changes allowed in this window
	warned bool // a refusal in this window was reported
}

// changeLimiter allows each agent limit route changes per minute, in fixed
// windows that start with the agent's first change: once the limit is
// reached, changes are refused until the minute has passed. It keeps one
// window per agent that changed its routes recently, pruning expired ones
// as the map grows. It is safe for concurrent use.
type changeLimiter struct {
	limit int
	now   func() time.Time

	mu sync.Mutex
	// windows and pruneAt are guarded by mu.
	windows map[string]*changeWindow
	pruneAt int // prune expired windows when this many are held
}

// minPrune is the number of windows below which none is pruned.
const minPrune = 1024

func newChangeLimiter(limit int, now func() time.Time) *changeLimiter {
	return &changeLimiter{limit: limit, now: now, windows: make(map[string]*changeWindow), pruneAt: minPrune}
}

// allow counts one route change of agent id. It reports whether the change
// may go ahead and, when it may not, whether this is the first refusal of
// the window (so that it is logged once).
func (l *changeLimiter) allow(id string) (ok, first bool) {
	now := l.now()
	l.mu.Lock()
	defer l.mu.Unlock()
	w := l.windows[id]
	if w == nil || !now.Before(w.start.Add(time.Minute)) || now.Before(w.start) {
		if w == nil && len(l.windows) >= l.pruneAt {
			l.pruneLocked(now)
		}
		w = &changeWindow{start: now}
		l.windows[id] = w
	}
	if w.n < l.limit {
		w.n++
		return true, false
	}
	first, w.warned = !w.warned, true
	return false, first
}

// pruneLocked drops the windows that have expired, and sets the next
// pruning point to twice what is left (at least minPrune).
func (l *changeLimiter) pruneLocked(now time.Time) {
	for id, w := range l.windows {
		if !now.Before(w.start.Add(time.Minute)) {
			delete(l.windows, id)
		}
	}
	l.pruneAt = max(minPrune, 2*len(l.windows))
}
