// Package broker is the gateway's session broker (DESIGN.md §8–9): for one
// client session it decides the route (explicit agent, subnet, domain,
// direct), opens the path to the target through the candidates in order with
// failover, relays the bytes and writes the audit record. The client entry
// hands it an open client stream; the RouteResolve service asks it for
// decisions without connecting.
package broker

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/hashicorp/go-hclog"

	"github.com/outposthq/outpost/dataplane"
	"github.com/outposthq/outpost/dataplane/relay"
	outpostv1 "github.com/outposthq/outpost/gen/outpost/v1"
	"github.com/outposthq/outpost/server/internal/metrics"
	"github.com/outposthq/outpost/server/internal/registry"
	"github.com/outposthq/outpost/server/internal/routing"
	"github.com/outposthq/outpost/server/internal/store"
	"github.com/outposthq/outpost/server/internal/tunnel"
)

// DefaultDirectDialTimeout bounds resolving and dialing a direct target
// (DESIGN.md §12).
const DefaultDirectDialTimeout = 20 * time.Second

// auditTimeout bounds each audit write.
const auditTimeout = 5 * time.Second

// Decision is how a session to a target is routed (DESIGN.md §8).
type Decision struct {
	// Kind is AGENT, DIRECT or REJECTED (then Reason says why).
	Kind   outpostv1.Decision
	Target dataplane.Target
	// Candidates are the agents to try, in order (Kind AGENT only).
	Candidates []routing.Candidate
	// Reason explains the decision in words for the API and the audit.
	Reason string
}

// InputError is a malformed target or agent id; Field names the request
// field.
type InputError struct{ Field, Reason string }

func (e *InputError) Error() string { return e.Field + ": " + e.Reason }

// Opener opens a session stream through one agent; *tunnel.Server is one.
type Opener interface {
	OpenSession(ctx context.Context, agentID string, id dataplane.SessionID, target string) (*tunnel.Session, error)
}

// Auditor records sessions; store.Store is one.
type Auditor interface {
	InsertSession(ctx context.Context, rec store.SessionRecord) error
	FinishSession(ctx context.Context, id string, end time.Time, up, down int64, outcome, reason string) error
}

// Config configures a Broker. Registry, Router, Tunnel and Audit are
// required.
type Config struct {
	Registry *registry.Registry
	Router   *routing.Router
	Tunnel   Opener
	Audit    Auditor
	// Metrics, if set, counts sessions, bytes and setup latency.
	Metrics *metrics.Metrics
	// AllowDirect lets the gateway dial a target itself when no online agent
	// advertises a route to it.
	AllowDirect bool
	// DirectDialTimeout bounds a direct dial. If zero, 20 s.
	DirectDialTimeout time.Duration
	// Now is the clock of audit timestamps. If nil, time.Now. Durations
	// (setup, session length) are measured on the monotonic clock.
	Now func() time.Time
	// Logger may be nil.
	Logger hclog.Logger
}

// Broker routes, opens, relays and audits client sessions. Build it with
// New; it is safe for concurrent use.
type Broker struct {
	cfg Config
	log hclog.Logger
}

// New checks cfg and returns a Broker.
func New(cfg Config) (*Broker, error) {
	if cfg.Registry == nil || cfg.Router == nil || cfg.Tunnel == nil || cfg.Audit == nil {
		return nil, errors.New("broker: Registry, Router, Tunnel and Audit are required")
	}
	if cfg.DirectDialTimeout == 0 {
		cfg.DirectDialTimeout = DefaultDirectDialTimeout
	}
	if cfg.Logger == nil {
		cfg.Logger = hclog.NewNullLogger()
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	return &Broker{cfg: cfg, log: cfg.Logger}, nil
}

// Decide routes target, through agentID only when it is set. A malformed
// target or agent id is an *InputError; every other outcome, refusals
// included, is a Decision.
func (b *Broker) Decide(target, agentID string) (Decision, error) {
	t, err := dataplane.ParseTarget(target)
	if err != nil {
		return Decision{}, &InputError{"target", err.Error()}
	}
	d := Decision{Target: t}
	host := t.Name
	if !t.IsName() {
		host = t.Addr.String()
	}
	if agentID != "" {
		id, err := uuid.Parse(agentID)
		if err != nil {
			return Decision{}, &InputError{"agent_id", fmt.Sprintf("%q is not a UUID", agentID)}
		}
		snap, ok := b.cfg.Registry.Get(id.String())
		switch {
		case !ok:
			d.Kind, d.Reason = outpostv1.Decision_DECISION_REJECTED, fmt.Sprintf("agent %s is not connected", id)
		case snap.Status != registry.Online:
			d.Kind, d.Reason = outpostv1.Decision_DECISION_REJECTED, fmt.Sprintf("agent %s (%s) is %s", snap.Name, id, snap.Status)
		default:
			d.Kind = outpostv1.Decision_DECISION_AGENT
			d.Candidates = []routing.Candidate{{AgentID: snap.AgentID, Name: snap.Name, ConnectedAt: snap.ConnectedAt}}
			d.Reason = fmt.Sprintf("agent %s was requested explicitly", snap.Name)
		}
		return d, nil
	}
	d.Candidates = b.cfg.Router.Lookup(nil, host)
	if len(d.Candidates) > 0 {
		c := d.Candidates[0]
		d.Kind = outpostv1.Decision_DECISION_AGENT
		d.Reason = fmt.Sprintf("%s matches %s advertised by agent %s", host, c.MatchedRoute, c.Name)
		if n := len(d.Candidates) - 1; n > 0 {
			d.Reason += fmt.Sprintf(" (%d more agent(s) as fallback)", n)
		}
		return d, nil
	}
	if b.cfg.AllowDirect {
		d.Kind = outpostv1.Decision_DECISION_DIRECT
		d.Reason = fmt.Sprintf("no online agent advertises a route to %s; the gateway connects directly", host)
	} else {
		d.Kind = outpostv1.Decision_DECISION_REJECTED
		d.Reason = fmt.Sprintf("no online agent advertises a route to %s and direct connections are disabled", host)
	}
	return d, nil
}

// path is an open way to a target.
type path struct {
	endpoint relay.Endpoint
	agentID  string // "" for direct
	agent    string // agent name, for logs
}

func (p path) via() string {
	if p.agentID == "" {
		return "direct"
	}
	return "agent " + p.agent
}

// open opens a session to the decision's target: the candidates in order,
// the next one when an agent refuses or does not answer, or the gateway's
// own dial for DIRECT. All failures are reported together; a failed agent
// path never falls back to direct.
func (b *Broker) open(ctx context.Context, d Decision, sid dataplane.SessionID) (path, error) {
	target := d.Target.String()
	switch d.Kind {
	case outpostv1.Decision_DECISION_REJECTED:
		return path{}, errors.New(d.Reason)
	case outpostv1.Decision_DECISION_DIRECT:
		dialer := net.Dialer{Timeout: b.cfg.DirectDialTimeout}
		c, err := dialer.DialContext(ctx, "tcp", target)
		if err != nil {
			return path{}, fmt.Errorf("direct connection to %s failed: %w", target, err)
		}
		return path{endpoint: relay.TCPConn(c.(*net.TCPConn))}, nil
	}
	var reasons []string
	for _, c := range d.Candidates {
		s, err := b.cfg.Tunnel.OpenSession(ctx, c.AgentID, sid, target)
		if err == nil {
			return path{endpoint: s, agentID: c.AgentID, agent: c.Name}, nil
		}
		if ctx.Err() != nil {
			return path{}, context.Cause(ctx)
		}
		var ae *tunnel.AgentError
		if errors.As(err, &ae) && errors.Is(err, tunnel.ErrRefused) {
			reasons = append(reasons, fmt.Sprintf("agent %s refused connection: %s", c.Name, ae.Reason))
		} else {
			reasons = append(reasons, fmt.Sprintf("agent %s: %v", c.Name, err))
		}
		b.log.Debug("session candidate failed", "session_id", sid.String(), "agent", c.Name, "error", err)
	}
	return path{}, errors.New(strings.Join(reasons, "; "))
}

// Request is one client session to serve.
type Request struct {
	// ID is the session id; if zero, a random one.
	ID dataplane.SessionID
	// Target and AgentID are what the session token names.
	Target, AgentID string
	// Client is the client's address ("203.0.113.7:51234"), for logs and
	// the audit.
	Client string
	// KeyID is the ID of the API key that minted the session token, for
	// logs and the audit.
	KeyID string
	// MaxDuration, if positive, is the longest the session may last,
	// counted from the call to Serve: then the client is told
	// ErrMaxDuration and the session ends. Zero: no limit.
	MaxDuration time.Duration
}

// ClientStream is the client's side of a session: a relay endpoint that can
// also be closed with a reason the client sees.
type ClientStream interface {
	relay.Endpoint
	// Fail ends the stream, telling the client reason.
	Fail(reason string)
}

// Serve routes and connects one client session, relays it until either side
// ends or ctx is done, and records it. It returns when the session is over.
func (b *Broker) Serve(ctx context.Context, req Request, client ClientStream) {
	sid := req.ID
	if sid == (dataplane.SessionID{}) {
		sid = dataplane.SessionID(uuid.New())
	}
	log := b.log.With("session_id", sid.String(), "target", req.Target, "client", req.Client, "key_id", req.KeyID)
	start := time.Now()
	rec := store.SessionRecord{ID: sid.String(), Target: req.Target, StartedAt: b.cfg.Now(), KeyID: req.KeyID, ClientAddr: req.Client}
	if req.MaxDuration > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeoutCause(ctx, req.MaxDuration, ErrMaxDuration)
		defer cancel()
		client = durationLimited{ClientStream: client, ctx: ctx}
	}
	d, err := b.Decide(req.Target, req.AgentID)
	if err == nil {
		rec.Decision = d.Kind.String() + ": " + d.Reason
	}
	m := b.cfg.Metrics
	if m != nil {
		m.SessionsActive.Inc()
		defer m.SessionsActive.Dec()
	}
	var p path
	if err == nil {
		p, err = b.open(ctx, d, sid)
	}
	rec.AgentID = p.agentID
	// The audit row is written (a synchronous SQLite commit) while the
	// first bytes already flow; both paths below wait for it before the
	// final update.
	inserted := make(chan struct{})
	go func() {
		defer close(inserted)
		if ierr := b.cfg.Audit.InsertSession(context.WithoutCancel(ctx), rec); ierr != nil {
			log.Warn("session audit insert failed", "error", ierr)
		}
	}()
	if err != nil {
		outcome := "connect_failed"
		if errors.Is(context.Cause(ctx), ErrMaxDuration) {
			outcome, err = OutcomeMaxDuration, ErrMaxDuration
		}
		if m != nil {
			m.SessionsTotal.WithLabelValues(outcome).Inc()
		}
		log.Info("session failed", "reason", err)
		<-inserted
		b.finish(ctx, sid, 0, 0, outcome, err.Error(), log)
		client.Fail(err.Error())
		return
	}
	if m != nil {
		m.SessionSetup.Observe(time.Since(start).Seconds())
	}
	log.Info("session open", "via", p.via(), "setup", time.Since(start).Round(time.Microsecond))

	stats, rerr := relay.Relay(ctx, client, p.endpoint, relay.Options{})
	outcome, reason := "ok", ""
	switch {
	case rerr != nil && errors.Is(context.Cause(ctx), ErrMaxDuration):
		outcome, reason = OutcomeMaxDuration, ErrMaxDuration.Error()
	case rerr != nil:
		outcome, reason = "error", rerr.Error()
	}
	if m != nil {
		m.Bytes.WithLabelValues("up").Add(float64(stats.AToB))
		m.Bytes.WithLabelValues("down").Add(float64(stats.BToA))
		m.SessionsTotal.WithLabelValues(outcome).Inc()
	}
	log.Info("session closed", "outcome", outcome, "bytes_up", stats.AToB, "bytes_down", stats.BToA,
		"duration", time.Since(start).Round(time.Millisecond), "reason", reason)
	<-inserted
	b.finish(ctx, sid, stats.AToB, stats.BToA, outcome, reason, log)
}

func (b *Broker) finish(ctx context.Context, sid dataplane.SessionID, up, down int64, outcome, reason string, log hclog.Logger) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), auditTimeout)
	defer cancel()
	if err := b.cfg.Audit.FinishSession(ctx, sid.String(), time.Time{}, up, down, outcome, reason); err != nil {
		log.Warn("session audit update failed", "error", err)
	}
}
