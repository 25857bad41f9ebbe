package broker

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/outposthq/outpost/dataplane"
	"github.com/outposthq/outpost/dataplane/relay"
	"github.com/outposthq/outpost/server/internal/registry"
	"github.com/outposthq/outpost/server/internal/routing"
	"github.com/outposthq/outpost/server/internal/tunnel"
)

// Opening a session through the agent candidates, with failover and hedging.
//
// Candidates are tried in order. One that refuses, or fails in any other way,
// gives way to the next at once. One that is slow is told apart by whether
// its agent shows any sign of life after the ConnectRequest was sent
// (tunnel.Pending.Heard: the agent's QUIC stack acknowledged something): an
// agent that is alive but still dialing the target is waited for, up to the
// answer timeout; one that shows none within the hedge delay — killed,
// frozen, cut off — is left running while the next candidate starts in
// parallel. The first success wins; the others are cancelled and waited for,
// and a success that arrives after the winner's is closed and counted. An
// agent that timed out or showed no sign of life is demoted (tried after the
// others) until it is heard from again.

// DefaultHedgeDelay is Config.HedgeDelay's default.
const DefaultHedgeDelay = time.Second

// Failover reasons, the values of the failovers metric's reason label.
const (
	failoverRefused     = "refused"
	failoverTimeout     = "timeout"
	failoverSilent      = "no_sign_of_life"
	failoverUnavailable = "unavailable"
)

// attempt is one candidate being tried. Its fields other than pending belong
// to the goroutine running openAgents.
type attempt struct {
	c     routing.Candidate
	entry *registry.Entry // c's connection, nil if it left
	start time.Time
	// pending is set once the ConnectRequest is sent.
	pending atomic.Pointer[tunnel.Pending]
	// silentFor is how long the attempt had shown no sign of life when the
	// next candidate was started because of it; zero if it was not.
	silentFor time.Duration
	done      bool
	took      time.Duration // from start to its end, once done
	err       error         // why it failed, once done
}

// errAnsweredLate is the fate of an attempt that succeeded after another
// had won.
var errAnsweredLate = errors.New("answered late")

// answer is how an attempt ended.
type answer struct {
	a   *attempt
	s   *tunnel.Session
	err error
}

// openAgents opens a session to target through the first of cands that
// accepts it. On success it returns the path and why each other candidate
// tried lost; otherwise an error naming every candidate and why it failed.
// It returns only after every attempt it started has ended.
//
// The attempt that alone can serve the session — the only candidate, or the
// last one once every other has failed — takes the client's first bytes
// early from flight (firstflight.go); others never get them: the winner
// reads them from the relay.
func (b *Broker) openAgents(ctx context.Context, cands []routing.Candidate, sid dataplane.SessionID, target string, flight *firstFlight, log hclog.Logger) (path, []string, error) {
	actx, cancel := context.WithCancel(ctx)
	defer cancel()
	answers := make(chan answer, len(cands)) // never blocks an attempt
	var wg sync.WaitGroup
	var attempts []*attempt
	running := 0 // attempts started and not ended
	launch := func() *attempt {
		// No other attempt runs, and none will follow.
		alone := running == 0 && len(attempts) == len(cands)-1
		running++
		a := &attempt{c: cands[len(attempts)], start: time.Now()}
		a.entry = a.c.Entry
		if a.entry == nil {
			a.entry, _ = b.cfg.Registry.Lookup(a.c.AgentID)
		}
		attempts = append(attempts, a)
		wg.Go(func() {
			p, err := b.cfg.Tunnel.Request(actx, a.c.AgentID, sid, target)
			var s *tunnel.Session
			if err == nil {
				a.pending.Store(p)
				if alone {
					flight.offer(ctx, p)
				}
				s, err = p.Answer(actx)
			}
			answers <- answer{a, s, err}
		})
		return a
	}

	hedge := time.NewTimer(b.cfg.HedgeDelay)
	defer hedge.Stop()
	var hedgeC <-chan time.Time
	rearm := func(d time.Duration) {
		if b.cfg.HedgeDelay > 0 {
			hedge.Reset(d)
			hedgeC = hedge.C
		}
	}
	newest := launch()
	rearm(b.cfg.HedgeDelay)
	var won *answer
	for running > 0 && won == nil {
		select {
		case r := <-answers:
			running--
			r.a.done, r.a.took = true, time.Since(r.a.start)
			if r.err == nil {
				won = &r
				break
			}
			r.a.err = r.err
			kind := failoverKind(r.err)
			if kind == failoverTimeout || r.a.silentFor > 0 {
				b.demote(r.a)
			}
			if len(attempts) == len(cands) {
				break
			}
			b.failover(kind)
			log.Info("agent candidate failed; trying the next", "agent", r.a.c.Name, "elapsed", since(r.a.start),
				"reason", r.err, "next", cands[len(attempts)].Name)
			newest = launch()
			rearm(b.cfg.HedgeDelay)
		case <-hedgeC:
			hedgeC = nil
			if newest.done {
				break
			}
			elapsed := time.Since(newest.start)
			p := newest.pending.Load()
			if p != nil && p.Heard() && b.online(newest) {
				rearm(b.cfg.HedgeDelay) // alive and dialing: keep watching it
				break
			}
			if p != nil && !p.Heard() && elapsed < 3*p.RTT() {
				rearm(3*p.RTT() - elapsed) // a slow path: give it a round trip or so
				break
			}
			newest.silentFor = elapsed
			b.demote(newest)
			if len(attempts) == len(cands) {
				break
			}
			b.failover(failoverSilent)
			log.Info("no sign of life from the agent; trying the next candidate in parallel", "agent", newest.c.Name,
				"elapsed", elapsed.Round(time.Millisecond), "next", cands[len(attempts)].Name)
			newest = launch()
			rearm(b.cfg.HedgeDelay)
		case <-ctx.Done():
		}
		if ctx.Err() != nil {
			break
		}
	}
	cancel()
	wg.Wait()
	for ; running > 0; running-- {
		r := <-answers
		r.a.done, r.a.took = true, time.Since(r.a.start)
		if r.err != nil {
			r.a.err = r.err
			continue
		}
		// A success after another candidate had won (or the client left):
		// the agent dialed the target for nothing.
		r.s.Abort(relay.ErrorCodeCanceled)
		r.a.err = errAnsweredLate
		if won != nil {
			if b.cfg.Metrics != nil {
				b.cfg.Metrics.HedgeLateSuccesses.Inc()
			}
			log.Info("closed the session a losing candidate opened late", "agent", r.a.c.Name, "elapsed", since(r.a.start))
		}
	}
	if won != nil && ctx.Err() != nil {
		won.s.Abort(relay.ErrorCodeCanceled)
		won = nil
	}
	if won == nil {
		if ctx.Err() != nil {
			return path{}, nil, context.Cause(ctx)
		}
		return path{}, nil, errors.New(strings.Join(lossReasons(attempts, nil), "; "))
	}
	return path{endpoint: won.s, agentID: won.a.c.AgentID, agent: won.a.c.Name, replica: won.s.Replica}, lossReasons(attempts, won.a), nil
}

// lossReasons says, for every attempt but the winner, why it lost.
func lossReasons(attempts []*attempt, winner *attempt) []string {
	var out []string
	for _, a := range attempts {
		if a == winner {
			continue
		}
		var why string
		var ae *tunnel.AgentError
		switch {
		case winner != nil && errors.Is(a.err, context.Canceled):
			state := "alive, still dialing"
			if a.silentFor > 0 {
				state = fmt.Sprintf("no sign of life within %v", a.silentFor.Round(time.Millisecond))
			}
			why = fmt.Sprintf("%s; abandoned after %v when agent %s answered", state, a.took.Round(time.Millisecond), winner.c.Name)
		case errors.Is(a.err, errAnsweredLate) && winner != nil:
			why = fmt.Sprintf("answered after agent %s had; closed", winner.c.Name)
		case errors.As(a.err, &ae) && errors.Is(a.err, tunnel.ErrRefused):
			out = append(out, fmt.Sprintf("agent %s refused connection: %s", a.c.Name, ae.Reason))
			continue
		default:
			why = a.err.Error()
			if a.silentFor > 0 {
				why = fmt.Sprintf("no sign of life within %v, then: %s", a.silentFor.Round(time.Millisecond), why)
			}
		}
		out = append(out, fmt.Sprintf("agent %s: %s", a.c.Name, why))
	}
	return out
}

// failoverKind classifies why an attempt failed, for the failovers metric.
func failoverKind(err error) string {
	switch {
	case errors.Is(err, tunnel.ErrRefused):
		return failoverRefused
	case errors.Is(err, tunnel.ErrConnectTimeout):
		return failoverTimeout
	default:
		return failoverUnavailable
	}
}

func (b *Broker) failover(kind string) {
	if b.cfg.Metrics != nil {
		b.cfg.Metrics.Failovers.WithLabelValues(kind).Inc()
	}
}

// demote makes routing offer a's agent after the others until it is heard
// from again.
func (b *Broker) demote(a *attempt) {
	if a.entry == nil {
		if b.cfg.Router.DemoteRemote(a.c.AgentID) {
			b.log.Info("agent on another replica demoted: tried after the other candidates until its presence changes",
				"agent", a.c.Name, "agent_id", a.c.AgentID)
		}
		return
	}
	if b.cfg.Registry.Demote(a.entry) {
		b.log.Info("agent demoted: tried after the other candidates until it is heard from again",
			"agent", a.c.Name, "agent_id", a.c.AgentID)
	}
}

// online reports whether a's agent still counts as online: the tunnel marks
// one whose connection went quiet unresponsive.
func (b *Broker) online(a *attempt) bool {
	return a.entry == nil || b.cfg.Registry.Status(a.entry) == registry.Online
}

func since(t time.Time) time.Duration { return time.Since(t).Round(time.Millisecond) }
