// Package broker is the gateway's session broker (DESIGN.md §8–9): for one
// client session it decides the route (explicit agent, subnet, domain,
// direct), opens the path to the target through the candidates in order with
// failover and hedging (hedge.go), relays the bytes and records the session
// (its start and its end) on the audit, which writes it off the session's
// path (server/internal/audit). The client entry hands it an open client
// stream; the RouteResolve service asks it for decisions without connecting.
package broker

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"sync/atomic"
	"time"

	"github.com/google/uuid"
	"github.com/hashicorp/go-hclog"

	"github.com/outposthq/outpost/dataplane"
	"github.com/outposthq/outpost/dataplane/relay"
	outpostv1 "github.com/outposthq/outpost/gen/outpost/v1"
	"github.com/outposthq/outpost/reach"
	"github.com/outposthq/outpost/server/internal/metrics"
	"github.com/outposthq/outpost/server/internal/registry"
	"github.com/outposthq/outpost/server/internal/routing"
	"github.com/outposthq/outpost/server/internal/store"
	"github.com/outposthq/outpost/server/internal/tunnel"
)

// DefaultDirectDialTimeout bounds resolving and dialing a direct target
// (DESIGN.md §12).
const DefaultDirectDialTimeout = 20 * time.Second

// Decision is how a session to a target is routed (DESIGN.md §8).
type Decision struct {
	// Kind is AGENT, DIRECT or REJECTED (then Reason says why).
	Kind   outpostv1.Decision
	Target dataplane.Target
	// Candidates are the agents to try, in order (Kind AGENT only).
	Candidates []routing.Candidate
	// Reason explains the decision in words for the API and the audit.
	Reason string
	// ClientReason, when set, is what a client whose session is rejected
	// reads instead of Reason, which then holds detail about the gateway's
	// own network that clients must not learn.
	ClientReason string
}

// InputError is a malformed target or agent id; Field names the request
// field.
type InputError struct{ Field, Reason string }

func (e *InputError) Error() string { return e.Field + ": " + e.Reason }

// Opener sends session requests to agents; *tunnel.Server is one.
type Opener interface {
	// Request sends a ConnectRequest for target to the agent; the
	// returned Pending tells whether the agent shows signs of life and
	// waits for its answer. Failures are *tunnel.AgentError.
	Request(ctx context.Context, agentID string, id dataplane.SessionID, target string) (*tunnel.Pending, error)
}

// Auditor records sessions; *audit.Writer is one. Record is called on the
// session's path, so it must not block: it queues the record to be written.
type Auditor interface {
	// Record takes a session's audit record: once when the session opens
	// (EndedAt zero), then the whole record again when it ends (EndedAt
	// set). A session that fails to open is recorded once, ended.
	Record(rec store.SessionRecord)
}

// Config configures a Broker. Registry, Router, Tunnel and Audit are
// required.
type Config struct {
	Registry *registry.Registry
	Router   *routing.Router
	Tunnel   Opener
	Audit    Auditor
	// Metrics, if set, counts sessions, bytes, setup latency and
	// failovers.
	Metrics *metrics.Metrics
	// HedgeDelay is how long an agent candidate may show no sign of life
	// (nothing received from its agent since the ConnectRequest was sent)
	// before the next candidate is started in parallel; the first to
	// answer Success serves the session. An agent that shows signs of life
	// is waited for until the tunnel's answer timeout, however long its
	// dial takes. If zero, DefaultHedgeDelay (1 s); negative: never start
	// the next candidate before the previous one has failed.
	HedgeDelay time.Duration
	// Direct is the direct allow-list: when no agent covers a target, the
	// gateway dials it itself only if Direct allows it — an IP target in one
	// of its subnets, a host name under one of its domains — and only at
	// addresses Direct.Check allows at connect time (never loopback,
	// link-local, a metadata address or an address of this host unless a
	// subnet names it explicitly). If nil, direct connections are off and
	// such targets are rejected.
	Direct *reach.Table
	// DirectDialTimeout bounds a direct dial. If zero, 20 s.
	DirectDialTimeout time.Duration
	// MaxDirectSessions caps the direct sessions open at once; one more is
	// refused. If zero, DefaultMaxDirectSessions.
	MaxDirectSessions int
	// Known, if set, names the agents whose last advertised routes cover a
	// target even while they are not online: such a target is never dialed
	// directly, the session is rejected naming the agent (DESIGN.md §8).
	Known KnownRoutes
	// Now is the clock of audit timestamps. If nil, time.Now. Durations
	// (setup, session length) are measured on the monotonic clock.
	Now func() time.Time
	// Logger may be nil.
	Logger hclog.Logger
}

// DefaultMaxDirectSessions is Config.MaxDirectSessions' default.
const DefaultMaxDirectSessions = 1000

// KnownRoute is an enrolled agent's route that covers a target.
type KnownRoute struct {
	// AgentID and Name identify the agent.
	AgentID, Name string
	// Route is the covering route, as advertised ("10.0.0.0/24",
	// "*.contoso.local").
	Route string
	// State says why the agent cannot carry the session now: "offline",
	// "unresponsive", "draining", or "connecting" (connected, its routes not
	// taken yet).
	State string
}

// KnownRoutes answers which enrolled agent's last advertised (and
// approved) routes cover a host, whatever the agent's state. Implementations
// are safe for concurrent use.
type KnownRoutes interface {
	// Covering returns the most specific known route covering host (an IP
	// literal without brackets, or a lower-case host name) of an agent that
	// is not online, and true; false if none covers it.
	Covering(host string) (KnownRoute, bool)
}

// Reasons a client reads for a refused direct path; the log has the detail.
const (
	// ReasonDirectRefused: the target is outside the direct allow-list or
	// in a range the gateway never dials.
	ReasonDirectRefused = "direct connection refused by policy"
	// ReasonUnreachable: the direct dial failed.
	ReasonUnreachable = "target unreachable"
	// ReasonDirectBusy: too many direct sessions are open.
	ReasonDirectBusy = "too many direct sessions open on this gateway; try again later"
)

// Broker routes, opens, relays and audits client sessions. Build it with
// New; it is safe for concurrent use.
type Broker struct {
	cfg    Config
	log    hclog.Logger
	dialer reach.Dialer
	direct atomic.Int64 // direct sessions open now
}

// New checks cfg and returns a Broker.
func New(cfg Config) (*Broker, error) {
	if cfg.Registry == nil || cfg.Router == nil || cfg.Tunnel == nil || cfg.Audit == nil {
		return nil, errors.New("broker: Registry, Router, Tunnel and Audit are required")
	}
	if cfg.DirectDialTimeout == 0 {
		cfg.DirectDialTimeout = DefaultDirectDialTimeout
	}
	if cfg.MaxDirectSessions == 0 {
		cfg.MaxDirectSessions = DefaultMaxDirectSessions
	}
	if cfg.HedgeDelay == 0 {
		cfg.HedgeDelay = DefaultHedgeDelay
	}
	if cfg.Logger == nil {
		cfg.Logger = hclog.NewNullLogger()
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	return &Broker{cfg: cfg, log: cfg.Logger, dialer: reach.Dialer{Timeout: cfg.DirectDialTimeout}}, nil
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
		e, _ := b.cfg.Registry.Lookup(id.String())
		remote, isRemote := b.cfg.Router.RemoteAgent(id.String())
		switch {
		case !ok && isRemote:
			d.Kind = outpostv1.Decision_DECISION_AGENT
			d.Candidates = []routing.Candidate{remote}
			d.Reason = fmt.Sprintf("agent %s was requested explicitly%s", remote.Name, onReplicas(remote))
		case !ok:
			d.Kind, d.Reason = outpostv1.Decision_DECISION_REJECTED, fmt.Sprintf("agent %s is not connected", id)
		case snap.Status != registry.Online:
			d.Kind, d.Reason = outpostv1.Decision_DECISION_REJECTED, fmt.Sprintf("agent %s (%s) is %s", snap.Name, id, snap.Status)
		default:
			d.Kind = outpostv1.Decision_DECISION_AGENT
			d.Candidates = []routing.Candidate{{AgentID: snap.AgentID, Name: snap.Name, ConnectedAt: snap.ConnectedAt, Entry: e}}
			d.Reason = fmt.Sprintf("agent %s was requested explicitly", snap.Name)
		}
		return d, nil
	}
	d.Candidates = b.cfg.Router.Lookup(nil, host)
	if reason := ambiguous(host, d.Candidates); reason != "" {
		d.Kind, d.Reason, d.Candidates = outpostv1.Decision_DECISION_REJECTED, reason, nil
		return d, nil
	}
	if len(d.Candidates) > 0 {
		c := d.Candidates[0]
		d.Kind = outpostv1.Decision_DECISION_AGENT
		d.Reason = fmt.Sprintf("%s matches %s advertised by agent %s%s", host, c.MatchedRoute, c.Name, onReplicas(c))
		if n := len(d.Candidates) - 1; n > 0 {
			d.Reason += fmt.Sprintf(" (%d more agent(s) as fallback)", n)
		}
		return d, nil
	}
	if b.cfg.Known != nil {
		if k, ok := b.cfg.Known.Covering(host); ok {
			d.Kind = outpostv1.Decision_DECISION_REJECTED
			d.Reason = fmt.Sprintf("agent %s advertises %s but is %s", k.Name, k.Route, k.State)
			return d, nil
		}
	}
	d.Kind = outpostv1.Decision_DECISION_REJECTED
	switch why := b.directRefusal(t); {
	case b.cfg.Direct == nil:
		d.Reason = fmt.Sprintf("no online agent advertises a route to %s and direct connections are disabled", host)
	case why != "":
		d.Reason = fmt.Sprintf("no online agent advertises a route to %s and %s", host, why)
		d.ClientReason = fmt.Sprintf("no online agent advertises a route to %s; %s", host, ReasonDirectRefused)
	default:
		d.Kind = outpostv1.Decision_DECISION_DIRECT
		d.Reason = fmt.Sprintf("no online agent advertises a route to %s; the direct allow-list admits it, the gateway connects directly", host)
	}
	return d, nil
}

// onReplicas returns, for a candidate connected only to other replicas,
// " (connected to replica R)" naming them, and "" for a local one.
func onReplicas(c routing.Candidate) string {
	if len(c.Replicas) == 0 {
		return ""
	}
	names := make([]string, len(c.Replicas))
	for i, r := range c.Replicas {
		names[i] = cmp.Or(r.Name, r.ID)
	}
	if len(names) == 1 {
		return " (connected to replica " + names[0] + ")"
	}
	return " (connected to replicas " + strings.Join(names, ", ") + ")"
}

// ambiguous returns why the candidates for host cannot be chosen from, or
// "": when several of them auto-detected the domain that matched, it does
// not say which network host is in (VPCs and clusters share search
// domains), so the session must name its agent.
func ambiguous(host string, cands []routing.Candidate) string {
	var names []string
	domain := ""
	for _, c := range cands {
		if c.AutoDetected {
			names, domain = append(names, c.Name), c.MatchedRoute
		}
	}
	if len(names) < 2 {
		return ""
	}
	return fmt.Sprintf("%s is under %s, a domain auto-detected by %d agents (%s): it does not say which network the name is in; name an agent explicitly",
		host, domain, len(names), strings.Join(names, ", "))
}

// directRefusal returns why the direct allow-list refuses t, or "" when it
// admits t: an IP target must lie in an allowed subnet and pass the special
// range check; a host name must lie under an allowed domain (its addresses
// are checked again when dialed).
func (b *Broker) directRefusal(t dataplane.Target) string {
	if b.cfg.Direct == nil {
		return "direct connections are disabled"
	}
	if t.IsName() {
		if !b.cfg.Direct.MatchDomain(t.Name) {
			return "it is not under a domain of the direct allow-list"
		}
		return ""
	}
	if ref := b.cfg.Direct.Check(netip.AddrPortFrom(t.Addr, t.Port), false); ref != nil {
		if ref.Range != "" {
			return fmt.Sprintf("%s is %s, which the gateway never dials unless the direct allow-list names it", t.Addr.Unmap(), ref.Range)
		}
		return "it is not in a subnet of the direct allow-list"
	}
	return ""
}

// path is an open way to a target.
type path struct {
	endpoint relay.Endpoint
	agentID  string // "" for direct
	agent    string // agent name, for logs
	replica  string // the replica id the session goes through, "" for this one
	direct   bool   // holds a slot of the direct-session cap
	// losers say why each other agent candidate tried lost, if any did.
	losers []string
}

func (p path) via() string {
	if p.agentID == "" {
		return "direct"
	}
	if p.replica != "" {
		return "agent " + p.agent + " through replica " + p.replica
	}
	return "agent " + p.agent
}

// open opens a session to the decision's target: through the agent
// candidates with failover and hedging (openAgents), or the gateway's own
// dial for DIRECT. All failures are reported together; a failed agent path
// never falls back to direct.
func (b *Broker) open(ctx context.Context, d Decision, sid dataplane.SessionID, flight *firstFlight, log hclog.Logger) (path, error) {
	switch d.Kind {
	case outpostv1.Decision_DECISION_REJECTED:
		if d.ClientReason != "" {
			return path{}, &clientError{d.ClientReason, errors.New(d.Reason)}
		}
		return path{}, errors.New(d.Reason)
	case outpostv1.Decision_DECISION_DIRECT:
		return b.openDirect(ctx, d.Target)
	}
	p, losers, err := b.openAgents(ctx, d.Candidates, sid, d.Target.String(), flight, log)
	p.losers = losers
	return p, err
}

// clientError is a failure whose detail is for the log only: the client
// reads Public.
type clientError struct {
	Public string
	Err    error
}

func (e *clientError) Error() string { return e.Err.Error() }
func (e *clientError) Unwrap() error { return e.Err }

// publicReason is what the client reads for err.
func publicReason(err error) string {
	var ce *clientError
	if errors.As(err, &ce) {
		return ce.Public
	}
	return err.Error()
}

// openDirect dials t from the gateway through the direct allow-list, within
// the direct-session cap. The client reads only a generic reason; the error
// (for the log and the audit) has the detail.
func (b *Broker) openDirect(ctx context.Context, t dataplane.Target) (path, error) {
	if why := b.directRefusal(t); why != "" {
		return path{}, &clientError{ReasonDirectRefused, fmt.Errorf("direct connection to %s refused: %s", t, why)}
	}
	if n := b.direct.Add(1); n > int64(b.cfg.MaxDirectSessions) {
		b.direct.Add(-1)
		return path{}, &clientError{ReasonDirectBusy, fmt.Errorf("direct connection to %s refused: %d direct sessions open, the maximum", t, n-1)}
	}
	c, err := b.dialer.Dial(ctx, b.cfg.Direct, t)
	if err != nil {
		b.direct.Add(-1)
		var de *reach.DialError
		if errors.As(err, &de) && de.Refused {
			return path{}, &clientError{ReasonDirectRefused, fmt.Errorf("direct connection to %s refused: %s", t, de.Reason)}
		}
		return path{}, &clientError{ReasonUnreachable, fmt.Errorf("direct connection to %s failed: %w", t, err)}
	}
	return path{endpoint: relay.TCPConn(c), direct: true}, nil
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
	}
	client = limited{ClientStream: client, ctx: ctx}
	d, err := b.Decide(req.Target, req.AgentID)
	if err == nil {
		rec.Decision = d.Kind.String() + ": " + d.Reason
	}
	m := b.cfg.Metrics
	if m != nil {
		m.SessionsActive.Inc()
		defer m.SessionsActive.Dec()
	}
	// The client's first bytes are read while the session opens, to go to
	// the agent with the request (firstflight.go).
	flight := startFirstFlight(client)
	defer flight.wait()
	var p path
	if err == nil {
		p, err = onFreshStack(func() (path, error) { return b.open(ctx, d, sid, flight, log) })
	}
	rec.AgentID = p.agentID
	if len(p.losers) > 0 {
		rec.Decision += "; failover: " + strings.Join(p.losers, "; ")
	}
	if err != nil {
		outcome := "connect_failed"
		if l, ok := limitOf(ctx); ok {
			outcome, err = l.Outcome, l
		}
		if m != nil {
			m.SessionsTotal.WithLabelValues(outcome).Inc()
		}
		log.Info("session failed", "reason", err)
		b.finish(rec, 0, 0, outcome, err.Error())
		client.Fail(publicReason(err))
		return
	}
	// Queued, not written: the audit writer commits it within its flush
	// interval, off the session's path.
	b.cfg.Audit.Record(rec)
	if p.direct {
		defer b.direct.Add(-1)
	}
	if m != nil {
		m.SessionSetup.Observe(time.Since(start).Seconds())
	}
	opened := []any{"via", p.via(), "setup", time.Since(start).Round(time.Microsecond)}
	if len(p.losers) > 0 {
		opened = append(opened, "failover", strings.Join(p.losers, "; "))
	}
	log.Info("session open", opened...)

	stats, rerr := relay.Relay(ctx, &replaying{ClientStream: client, f: flight}, p.endpoint, relay.Options{})
	stats.AToB += flight.early()
	outcome, reason := "ok", ""
	switch {
	case rerr != nil && limitErr(ctx) != nil:
		outcome, reason = limitErr(ctx).Outcome, limitErr(ctx).Reason
	case relay.PeerReset(rerr):
		outcome, reason = OutcomeReset, rerr.Error()
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
	b.finish(rec, stats.AToB, stats.BToA, outcome, reason)
}

// finish records the end of the session rec.
func (b *Broker) finish(rec store.SessionRecord, up, down int64, outcome, reason string) {
	rec.EndedAt, rec.BytesUp, rec.BytesDown, rec.Outcome, rec.Reason = b.cfg.Now(), up, down, outcome, reason
	b.cfg.Audit.Record(rec)
}

// onFreshStack runs f on a goroutine of its own and waits for it: what f calls
// (opening a session, a store) grows a deep stack, which the calling
// goroutine, which then relays an idle session for hours, would otherwise
// keep (the runtime shrinks a stack by half at most per collection).
func onFreshStack[T any](f func() (T, error)) (T, error) {
	var v T
	var err error
	done := make(chan struct{})
	go func() {
		defer close(done)
		v, err = f()
	}()
	<-done
	return v, err
}
