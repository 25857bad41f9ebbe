package tunnel

import (
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/quic-go/quic-go"

	"github.com/outposthq/outpost/dataplane"
)

// drainPoll is how often a drain checks for the last session's end.
const drainPoll = 50 * time.Millisecond

// drain refuses new sessions, withdraws the agent's routes on conn so the
// gateway routes elsewhere at once, and waits up to DrainTimeout for live
// sessions. Every connection drains this way when Run's context ends.
// Sessions stay refused afterwards: the caller closes the connection.
func (a *Agent) drain(conn *quic.Conn, w *dataplane.ControlWriter, log hclog.Logger) {
	a.handler.SetDraining(true)
	a.mu.Lock()
	a.draining = true
	a.mu.Unlock()
	if a.handler.Active() == 0 {
		return
	}
	// The first connection to drain withdraws the routes at a new epoch;
	// the others withdraw them at the same one.
	a.mu.Lock()
	if a.current != nil {
		a.epoch++
		a.current = nil
	}
	withdraw := advertise(nil, a.epoch)
	a.mu.Unlock()
	if err := w.Send(withdraw); err != nil {
		log.Warn("could not withdraw routes before draining", "error", err)
	}
	log.Info("draining: new sessions are refused", "active_sessions", a.handler.Active(), "timeout", a.cfg.DrainTimeout)
	timeout := time.NewTimer(a.cfg.DrainTimeout)
	defer timeout.Stop()
	poll := time.NewTicker(drainPoll)
	defer poll.Stop()
	for a.handler.Active() > 0 {
		select {
		case <-conn.Context().Done():
			return
		case <-timeout.C:
			log.Warn("drain timeout: closing live sessions", "active_sessions", a.handler.Active())
			return
		case <-poll.C:
		}
	}
	log.Info("drained: every session has ended")
}
