package client

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/outposthq/outpost/client/muxstream"
	"github.com/outposthq/outpost/dataplane/relay"
)

// replayMax bounds what a session keeps of the local side's bytes to send
// them again on a new connection (see retrying).
const replayMax = 64 << 10

// retrying is a session on the standing connection that survives the loss
// of that connection while the session is opening: until the gateway's
// first byte arrives, a lost connection (the gateway replica that held it
// died, say) makes it open the session again on the next connection and
// send again its half-close and, with Config.ReplayOnLoss, what the local
// side had sent (at most replayMax bytes), so the local program sees no
// failure. The target may have seen a first connection that was cut (by
// the dead replica's agent stream), with those bytes: that is why sending
// them again is opt-in, and without it a session that sent anything is not
// opened again. After the first byte, once the bytes may not be sent
// again, or past the deadline, a lost connection fails the session as
// before.
//
// The relay reads from one goroutine and writes from another; a loss seen
// by either is repaired once (by generation), under mu, while the other
// waits for the new stream.
type retrying struct {
	c     *Client
	until time.Time // no new attempt after it
	log   hclog.Logger

	// ctx ends with Abort or Close: an attempt in progress gives up.
	ctx    context.Context
	cancel context.CancelFunc

	// settled: no more attempts (the gateway sent a byte, or the local side
	// sent more than replayMax). Set under mu; once set, cur never changes
	// again, so readers that see it may use cur without mu.
	settled atomic.Bool

	mu sync.Mutex
	// Guarded by mu.
	cur    Stream
	gen    int    // attempts made after the first
	sent   []byte // what the local side wrote, while not settled
	ended  bool   // the local side half-closed
	closed bool   // Abort or Close
}

func newRetrying(c *Client, s Stream) *retrying {
	ctx, cancel := context.WithCancel(c.ctx)
	return &retrying{c: c, until: time.Now().Add(c.connectWait), log: c.log, ctx: ctx, cancel: cancel, cur: s}
}

// current returns the stream in use and its generation.
func (r *retrying) current() (Stream, int) {
	if r.settled.Load() {
		return r.cur, -1
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.cur, r.gen
}

// settle ends the attempts: the session is established (or too far along
// to be sent again).
func (r *retrying) settle() {
	if r.settled.Load() {
		return
	}
	r.mu.Lock()
	r.settled.Store(true)
	r.sent = nil
	r.mu.Unlock()
}

// WaitRead waits for the session's data without a buffer
// (relay.ReadWaiter); an error is left for the Read that follows.
func (r *retrying) WaitRead() error {
	s, _ := r.current()
	if err := relay.WaitRead(s); errors.Is(err, errors.ErrUnsupported) {
		return err
	}
	return nil
}

func (r *retrying) Read(p []byte) (int, error) {
	for {
		s, gen := r.current()
		n, err := s.Read(p)
		if n > 0 {
			r.settle()
			return n, err
		}
		if err != nil && gen >= 0 && r.reopen(gen, err) {
			continue
		}
		return n, err
	}
}

func (r *retrying) Write(p []byte) (int, error) {
	if r.settled.Load() {
		return r.cur.Write(p)
	}
	r.mu.Lock()
	if !r.settled.Load() {
		if !r.c.replay || len(r.sent)+len(p) > replayMax {
			// Nothing that was sent is sent again without ReplayOnLoss.
			r.settled.Store(true)
			r.sent = nil
		} else {
			r.sent = append(r.sent, p...)
		}
	}
	s, gen := r.cur, r.gen
	settled := r.settled.Load()
	r.mu.Unlock()
	n, err := s.Write(p)
	if err != nil && !settled && r.reopen(gen, err) {
		// The new stream got p with the rest of what was sent.
		return len(p), nil
	}
	return n, err
}

func (r *retrying) CloseWrite() error {
	r.mu.Lock()
	r.ended = true
	s, gen := r.cur, r.gen
	settled := r.settled.Load()
	r.mu.Unlock()
	err := s.CloseWrite()
	if err != nil && !settled && r.reopen(gen, err) {
		return nil
	}
	return err
}

func (r *retrying) Abort(code uint64) {
	r.cancel()
	r.mu.Lock()
	defer r.mu.Unlock()
	r.closed = true
	r.cur.Abort(code)
}

func (r *retrying) Close() error {
	r.cancel()
	r.mu.Lock()
	defer r.mu.Unlock()
	r.closed = true
	return r.cur.Close()
}

// reopen repairs the loss err of the stream of generation gen, if it is one
// that may be repaired: it opens the session again on the next connection
// and sends what was sent. It reports whether the caller may go on with
// the current stream.
func (r *retrying) reopen(gen int, err error) bool {
	if !errors.Is(err, muxstream.ErrConnectionLost) {
		return false
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	switch {
	case r.gen != gen:
		return !r.closed // repaired by the other direction
	case r.settled.Load(), r.closed:
		return false
	}
	r.cur.Abort(relay.ErrorCodeReset) // frees its slot; the connection is gone anyway
	ctx, cancel := context.WithDeadline(r.ctx, r.until)
	defer cancel()
	for ctx.Err() == nil {
		s, oerr := r.c.openStream(ctx)
		if oerr != nil {
			r.log.Debug("could not open the session again", "error", oerr)
			return false
		}
		if werr := r.replay(s); werr != nil {
			s.Abort(relay.ErrorCodeReset)
			if errors.Is(werr, muxstream.ErrConnectionLost) {
				continue
			}
			r.log.Debug("could not send the session's first bytes again", "error", werr)
			return false
		}
		r.cur = s
		r.gen++
		r.log.Info("the connection to the gateway was lost while the session was opening; opened it again on a new connection",
			"replayed_bytes", len(r.sent), "attempt", r.gen+1)
		return true
	}
	return false
}

// replay sends on s what was sent on the lost stream.
func (r *retrying) replay(s Stream) error {
	if len(r.sent) > 0 {
		if _, err := s.Write(r.sent); err != nil {
			return err
		}
	}
	if r.ended {
		return s.CloseWrite()
	}
	return nil
}
