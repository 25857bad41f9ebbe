package transport

import (
	"math"
	"sync"

	"github.com/quic-go/quic-go"
)

// minSweepThreshold is the number of tracked connections below which Allow
// never sweeps for closed connections unless the budget is exhausted.
const minSweepThreshold = 64

// MemoryBudget caps the bytes that QUIC connections may add to their
// connection-level receive windows, across every connection that shares it
// (normally the whole process: the gateway's listener or the agent's dialer).
// A connection's window starts at 512 KiB, which is not charged; each growth
// step quic-go's auto-tuning asks for is charged and refused once the budget
// is spent, so the connection keeps its current window (it still works, only
// with less throughput on long fat paths).
//
// Releasing: quic-go does not report the end of a connection to this
// callback, and its documentation forbids calling connection methods from it.
// The budget therefore records, for each connection it charged, the channel
// of conn.Context() (a plain field read in quic-go v0.65, no lock taken), and
// gives a closed connection's bytes back lazily: whenever a request would
// exceed the limit, and whenever the number of tracked connections has
// doubled since the last sweep (so dead entries never outnumber live ones by
// more than 2:1). The limit is therefore exact at the moment it is enforced.
// Owners that want Used to be prompt call Release when a connection ends.
//
// The zero value is a budget of DefaultMemoryBudget bytes. A MemoryBudget is
// safe for concurrent use and must not be copied after first use.
type MemoryBudget struct {
	limit int64 // bytes; zero means DefaultMemoryBudget

	mu sync.Mutex
	// Guarded by mu.
	used      int64
	conns     map[any]*budgetShare
	sweepNext int // sweep when len(conns) reaches this
}

// budgetShare is what one connection was granted.
type budgetShare struct {
	done    <-chan struct{} // closed when the connection is gone
	granted int64
}

// NewMemoryBudget returns a budget of limit bytes; limit <= 0 means
// DefaultMemoryBudget.
func NewMemoryBudget(limit int64) *MemoryBudget {
	if limit <= 0 {
		limit = DefaultMemoryBudget
	}
	return &MemoryBudget{limit: limit}
}

// Limit returns the budget's limit in bytes.
func (b *MemoryBudget) Limit() int64 {
	if b.limit <= 0 {
		return DefaultMemoryBudget
	}
	return b.limit
}

// Used returns the bytes currently charged, including those of connections
// that closed since the last sweep (see the type's comment).
func (b *MemoryBudget) Used() int64 {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.used
}

// Allow is the quic.Config.AllowConnectionWindowIncrease callback: it charges
// delta bytes to conn and reports true if the budget had room, false (and
// charges nothing) otherwise. It never calls a method of conn other than
// Context, the first time it sees conn.
func (b *MemoryBudget) Allow(conn *quic.Conn, delta uint64) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	var done <-chan struct{}
	if _, ok := b.conns[conn]; !ok && conn != nil {
		done = conn.Context().Done()
	}
	return b.allowLocked(conn, done, delta)
}

// allowLocked charges delta to the connection key; done is that connection's
// end signal, used only when key is not yet tracked (nil: never ends).
func (b *MemoryBudget) allowLocked(key any, done <-chan struct{}, delta uint64) bool {
	if b.conns == nil {
		b.conns = make(map[any]*budgetShare)
	}
	share, ok := b.conns[key]
	if !ok {
		share = &budgetShare{done: done}
		b.conns[key] = share
		if len(b.conns) >= max(b.sweepNext, minSweepThreshold) {
			b.sweepLocked()
			b.sweepNext = 2 * len(b.conns)
		}
	}
	if delta > math.MaxInt64 {
		return false
	}
	d := int64(delta)
	if d > b.Limit()-b.used {
		b.sweepLocked()
		if d > b.Limit()-b.used {
			return false
		}
	}
	b.used += d
	share.granted += d
	return true
}

// Release gives back everything conn was charged and forgets it. Call it
// once the connection is closed; calling it for a live connection lets that
// connection's future growth be charged afresh while its current window is
// no longer counted. Releasing an unknown connection does nothing.
func (b *MemoryBudget) Release(conn *quic.Conn) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.releaseLocked(conn)
}

func (b *MemoryBudget) releaseLocked(key any) {
	if share, ok := b.conns[key]; ok {
		b.used -= share.granted
		delete(b.conns, key)
	}
}

// sweepLocked releases every tracked connection whose context is done.
func (b *MemoryBudget) sweepLocked() {
	for key, share := range b.conns {
		select {
		case <-share.done:
			b.releaseLocked(key)
		default:
		}
	}
}
