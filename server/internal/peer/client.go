package peer

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/google/uuid"
	"github.com/hashicorp/go-hclog"
	"github.com/quic-go/quic-go"

	"github.com/outposthq/outpost/dataplane"
	"github.com/outposthq/outpost/server/internal/cluster"
	"github.com/outposthq/outpost/server/internal/tunnel"
)

// DefaultLocateTTL is how long the client trusts what the store said about
// where an agent is connected, and about the replicas' endpoints.
const DefaultLocateTTL = time.Second

// Directory says where agents are connected and how replicas are reached;
// *cluster.Member is one.
type Directory interface {
	AgentReplicas(ctx context.Context, agentIDs []string) (map[string][]string, error)
	Gateways(ctx context.Context) ([]cluster.Gateway, error)
}

// ClientConfig configures a Client. Identity, Directory and PacketConn are
// required.
type ClientConfig struct {
	Identity  *Identity
	Directory Directory
	// PacketConn is the UDP socket the client dials from; the client owns
	// it from New on and closes it in Close.
	PacketConn net.PacketConn
	// QUIC is the configuration of dialed connections; its
	// MaxIncomingStreams is set to -1 (the other replica opens none).
	QUIC *quic.Config
	// LocateTTL is how long an agent's replicas and the replicas'
	// endpoints are cached. If zero, DefaultLocateTTL (1 s).
	LocateTTL time.Duration
	// IdleTimeout closes a link that carried no session for this long. If
	// zero, DefaultIdleTimeout (1 min).
	IdleTimeout time.Duration
	// StatusTimeout bounds the wait for a replica's first answer when
	// another replica holding the agent is left to try (the last one is
	// waited for as long as the session's context allows): a replica that
	// died without a word (kill -9) would otherwise hold every session
	// forwarded to it until the link's QUIC idle timeout. If zero,
	// DefaultStatusTimeout (1 s).
	StatusTimeout time.Duration
	// Logger may be nil.
	Logger hclog.Logger
}

// Client forwards sessions to the replicas that hold their agents
// (tunnel.Remote), over one connection per replica, dialed on demand.
// Create it with NewClient; Close ends every link. Safe for concurrent use.
type Client struct {
	cfg  ClientConfig
	log  hclog.Logger
	self string
	tr   *quic.Transport
	ctx  context.Context // ends with Close; bounds dials
	stop context.CancelFunc
	wg   sync.WaitGroup // dials in flight

	mu sync.Mutex
	// Guarded by mu: the links by replica id, the cached locations, the
	// cached replicas (by id) and when they were read, and whether Close ran.
	links    map[string]*link
	located  map[string]location
	replicas map[string]cluster.Gateway
	readAt   time.Time
	closed   bool
	// suspects are the replicas that lately did not answer in time, by id:
	// tried after the others for suspectFor.
	suspects map[string]time.Time
}

// location is where an agent was last found connected.
type location struct {
	replicas []string
	at       time.Time
}

// link is the connection to one replica.
type link struct {
	replica string
	ready   chan struct{} // closed when the dial ended
	conn    *quic.Conn    // set before ready closes, if the dial succeeded
	err     error         // set before ready closes, if it failed

	// Guarded by Client.mu: the sessions using the link, and the idle
	// timer armed while there are none.
	active int
	idle   *time.Timer
}

// NewClient checks cfg and returns a Client.
func NewClient(cfg ClientConfig) (*Client, error) {
	if cfg.Identity == nil || cfg.Directory == nil || cfg.PacketConn == nil {
		return nil, errors.New("peer: Identity, Directory and PacketConn are required")
	}
	if cfg.LocateTTL <= 0 {
		cfg.LocateTTL = DefaultLocateTTL
	}
	if cfg.IdleTimeout <= 0 {
		cfg.IdleTimeout = DefaultIdleTimeout
	}
	if cfg.StatusTimeout <= 0 {
		cfg.StatusTimeout = DefaultStatusTimeout
	}
	if cfg.Logger == nil {
		cfg.Logger = hclog.NewNullLogger()
	}
	qc := &quic.Config{}
	if cfg.QUIC != nil {
		qc = cfg.QUIC.Clone()
	}
	qc.MaxIncomingStreams = -1
	qc.MaxIncomingUniStreams = -1
	cfg.QUIC = qc
	c := &Client{
		cfg:      cfg,
		log:      cfg.Logger,
		self:     cfg.Identity.ReplicaID(),
		tr:       &quic.Transport{Conn: cfg.PacketConn},
		links:    make(map[string]*link),
		located:  make(map[string]location),
		replicas: make(map[string]cluster.Gateway),
		suspects: make(map[string]time.Time),
	}
	c.ctx, c.stop = context.WithCancel(context.Background())
	return c, nil
}

// Close closes every link and the socket, and waits for dials in flight.
// It is idempotent; sessions through the links end.
func (c *Client) Close() error {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return nil
	}
	c.closed = true
	links := c.links
	c.links = make(map[string]*link)
	c.mu.Unlock()
	c.stop()
	c.wg.Wait()
	for _, l := range links {
		if l.idle != nil {
			l.idle.Stop()
		}
		if l.conn != nil {
			_ = l.conn.CloseWithError(closeShutdown, "shutdown")
		}
	}
	return errors.Join(c.tr.Close(), c.cfg.PacketConn.Close())
}

// Forward implements tunnel.Remote: it opens the session through the
// first replica holding agentID that can be reached and takes it, trying
// the next on failure or refusal.
func (c *Client) Forward(ctx context.Context, agentID string, id dataplane.SessionID, request []byte) (*tunnel.RemoteStream, error) {
	aid, err := uuid.Parse(agentID)
	if err != nil {
		return nil, &tunnel.AgentError{AgentID: agentID, Err: tunnel.ErrNotConnected, Reason: "not a UUID"}
	}
	targets, err := c.locate(ctx, agentID)
	if err != nil {
		return nil, &tunnel.AgentError{AgentID: agentID, Err: tunnel.ErrNotConnected,
			Reason: fmt.Sprintf("not connected to this replica, and the cluster could not be asked: %v", err)}
	}
	if len(targets) == 0 {
		return nil, &tunnel.AgentError{AgentID: agentID, Err: tunnel.ErrNotConnected}
	}
	fwd := Forward{Version: ProtocolVersion, AgentID: aid, SessionID: id}
	msg := append(fwd.AppendFrame(make([]byte, 0, frameHeaderLen+forwardLen+len(request))), request...)
	var reasons []string
	kind := tunnel.ErrSessionLimit // unless another failure than the limit
	for i, r := range targets {
		// The last replica is waited for as long as ctx allows, unless it
		// already failed to answer in time lately.
		var wait time.Duration
		if i < len(targets)-1 || c.suspected(r.ID) {
			wait = c.cfg.StatusTimeout
		}
		rs, err := c.open(ctx, r, agentID, msg, wait)
		if err == nil {
			c.trust(r.ID)
			return rs, nil
		}
		if errors.Is(err, errNoStatus) {
			c.suspect(r.ID)
		}
		if ctx.Err() != nil {
			return nil, &tunnel.AgentError{AgentID: agentID, Err: context.Cause(ctx)}
		}
		c.log.Debug("could not forward a session to a replica", "replica", r.Name, "replica_id", r.ID, "agent_id", agentID, "error", err)
		var ae *tunnel.AgentError
		if errors.As(err, &ae) {
			reasons = append(reasons, ae.Reason)
		} else {
			reasons = append(reasons, fmt.Sprintf("through replica %s: %v", replicaLabel(r), err))
		}
		if !errors.Is(err, tunnel.ErrSessionLimit) {
			kind = tunnel.ErrNotConnected
		}
	}
	c.forget(agentID)
	return nil, &tunnel.AgentError{AgentID: agentID, Err: kind, Reason: strings.Join(reasons, "; ")}
}

// open opens a stream to replica r, writes msg on it and waits for the
// replica's Status: a refusal is an *tunnel.AgentError, and leaves nothing
// open.
// errNoStatus: the replica did not answer within the status wait.
var errNoStatus = errors.New("peer: no answer from the replica in time")

// suspect notes that replica id did not answer in time; trust forgets it.
func (c *Client) suspect(id string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.suspects[id] = time.Now()
}

func (c *Client) suspected(id string) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	at, ok := c.suspects[id]
	return ok && time.Since(at) < suspectFor
}

func (c *Client) trust(id string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	delete(c.suspects, id)
}

func (c *Client) open(ctx context.Context, r cluster.Gateway, agentID string, msg []byte, wait time.Duration) (*tunnel.RemoteStream, error) {
	lctx := ctx
	if wait > 0 {
		// A link still being dialed counts against the same wait.
		var cancel context.CancelFunc
		lctx, cancel = context.WithTimeout(ctx, wait)
		defer cancel()
	}
	l, err := c.link(lctx, r)
	if err != nil {
		if wait > 0 && ctx.Err() == nil && lctx.Err() != nil {
			err = fmt.Errorf("%w (%v, dialing)", errNoStatus, wait)
		}
		return nil, err
	}
	done := sync.OnceFunc(func() { c.release(l) })
	st, err := l.conn.OpenStreamSync(ctx)
	if err != nil {
		done()
		return nil, err
	}
	fail := func(err error) (*tunnel.RemoteStream, error) {
		st.CancelRead(0)
		st.CancelWrite(0)
		done()
		return nil, err
	}
	stop := context.AfterFunc(ctx, func() { _ = st.SetDeadline(time.Now()) })
	defer stop()
	if _, err := st.Write(msg); err != nil {
		return fail(err)
	}
	if wait > 0 {
		_ = st.SetReadDeadline(time.Now().Add(wait))
	}
	status, err := ReadStatus(st)
	if err != nil {
		if wait > 0 && ctx.Err() == nil && errors.Is(err, os.ErrDeadlineExceeded) {
			err = fmt.Errorf("%w (%v)", errNoStatus, wait)
		}
		return fail(err)
	}
	_ = st.SetReadDeadline(time.Time{})
	switch {
	case status.Refused:
		return fail(c.refused(status, r, agentID))
	case status.Heard:
		return fail(errors.New("peer: Heard before Accepted"))
	}
	awaitHeard := func() error { return awaitHeard(st) }
	if wait > 0 {
		// Another replica is left to try: take this one only once its
		// connection to the agent carried the request (Heard). A stream
		// that dies before (the agent left this replica just now) or an
		// agent silent on it moves the session on, and nothing reached
		// the agent that another path could repeat.
		_ = st.SetReadDeadline(time.Now().Add(wait))
		if err := awaitHeard(); err != nil {
			if ctx.Err() == nil {
				err = fmt.Errorf("the agent did not acknowledge the request through this replica within %v: %w", wait, err)
			}
			return fail(err)
		}
		_ = st.SetReadDeadline(time.Time{})
		awaitHeard = func() error { return nil }
	}
	if !stop() { // ctx ended meanwhile: the deadline may be set
		return fail(context.Cause(ctx))
	}
	return &tunnel.RemoteStream{Conn: l.conn, Stream: st, Replica: r.ID, ReplicaName: replicaLabel(r), Done: done,
		AwaitHeard: awaitHeard}, nil
}

// awaitHeard reads the Heard status that precedes the agent's bytes.
func awaitHeard(st *quic.Stream) error {
	s, err := ReadStatus(st)
	if err == nil && !s.Heard {
		err = errors.New("peer: a status other than Heard after Accepted")
	}
	return err
}

// refused turns a Refused status into an *tunnel.AgentError.
func (c *Client) refused(s Status, r cluster.Gateway, agentID string) error {
	c.forget(agentID) // where the agent is may have changed
	ae := &tunnel.AgentError{AgentID: agentID, Err: tunnel.ErrNotConnected}
	switch s.Code {
	case CodeNotHere:
		ae.Reason = fmt.Sprintf("replica %s no longer holds it", replicaLabel(r))
	case CodeSessionLimit:
		ae.Err = tunnel.ErrSessionLimit
		ae.Reason = fmt.Sprintf("at replica %s: %s", replicaLabel(r), s.Reason)
	default:
		ae.Reason = fmt.Sprintf("replica %s refused the forwarded session (%s): %s", replicaLabel(r), s.Code, s.Reason)
	}
	return ae
}

// replicaLabel names a replica in reasons: its name and the start of its
// id (names need not be unique).
func replicaLabel(r cluster.Gateway) string {
	return fmt.Sprintf("%s (%.8s)", r.Name, r.ID)
}

// link returns the connection to r, dialing it if there is none; callers
// that arrive during a dial share it. The link counts one more session
// until release.
func (c *Client) link(ctx context.Context, r cluster.Gateway) (*link, error) {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return nil, net.ErrClosed
	}
	l := c.links[r.ID]
	if l != nil && l.dead() {
		delete(c.links, r.ID)
		l = nil
	}
	if l == nil {
		l = &link{replica: r.ID, ready: make(chan struct{})}
		c.links[r.ID] = l
		c.wg.Go(func() { c.dial(l, r) })
	}
	l.active++
	if l.idle != nil {
		l.idle.Stop()
		l.idle = nil
	}
	c.mu.Unlock()
	select {
	case <-l.ready:
	case <-ctx.Done():
		c.release(l)
		return nil, context.Cause(ctx)
	}
	if l.err != nil {
		c.release(l)
		return nil, l.err
	}
	return l, nil
}

// dead reports whether the link's dial failed or its connection ended.
func (l *link) dead() bool {
	select {
	case <-l.ready:
		return l.err != nil || l.conn.Context().Err() != nil
	default:
		return false
	}
}

// dial connects l to replica r, bounded by the QUIC handshake timeout and
// Close.
func (c *Client) dial(l *link, r cluster.Gateway) {
	defer close(l.ready)
	addr, err := net.ResolveUDPAddr("udp", r.PeerEndpoint)
	if err != nil {
		l.err = fmt.Errorf("peer endpoint %q: %w", r.PeerEndpoint, err)
		return
	}
	start := time.Now()
	l.conn, l.err = c.tr.Dial(c.ctx, addr, c.cfg.Identity.clientTLS(r.ID), c.cfg.QUIC)
	if l.err == nil {
		c.log.Debug("peer link up", "replica", r.Name, "replica_id", r.ID, "endpoint", r.PeerEndpoint, "took", time.Since(start))
	}
}

// release ends one session's use of l; the last one arms the idle timer.
func (c *Client) release(l *link) {
	c.mu.Lock()
	defer c.mu.Unlock()
	l.active--
	if l.active > 0 || c.closed || c.links[l.replica] != l {
		if l.active == 0 && !c.closed && c.links[l.replica] != l && l.conn != nil {
			// Replaced after its connection died: nothing else uses it.
			_ = l.conn.CloseWithError(closeIdle, "idle")
		}
		return
	}
	l.idle = time.AfterFunc(c.cfg.IdleTimeout, func() { c.expire(l) })
}

// expire closes l if it is still idle.
func (c *Client) expire(l *link) {
	c.mu.Lock()
	if l.active > 0 || c.links[l.replica] != l {
		c.mu.Unlock()
		return
	}
	select {
	case <-l.ready:
	default: // still dialing: look again later
		l.idle = time.AfterFunc(c.cfg.IdleTimeout, func() { c.expire(l) })
		c.mu.Unlock()
		return
	}
	delete(c.links, l.replica)
	c.mu.Unlock()
	if l.conn != nil {
		c.log.Debug("closing an idle peer link", "replica_id", l.replica)
		_ = l.conn.CloseWithError(closeIdle, "idle")
	}
}

// Links is the number of replicas the client holds a link to (or dials).
func (c *Client) Links() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.links)
}

// locate returns the replicas other than this one that hold agentID and
// have a peer endpoint, serving ones before draining ones, from the cache
// when it is fresh.
func (c *Client) locate(ctx context.Context, agentID string) ([]cluster.Gateway, error) {
	c.mu.Lock()
	loc, ok := c.located[agentID]
	fresh := ok && time.Since(loc.at) < c.cfg.LocateTTL
	replicasFresh := time.Since(c.readAt) < c.cfg.LocateTTL
	c.mu.Unlock()
	if !fresh {
		m, err := c.cfg.Directory.AgentReplicas(ctx, []string{agentID})
		if err != nil {
			return nil, err
		}
		loc = location{replicas: m[agentID], at: time.Now()}
		c.mu.Lock()
		if len(c.located) > maxLocated {
			c.located = make(map[string]location)
		}
		c.located[agentID] = loc
		c.mu.Unlock()
	}
	if !replicasFresh && len(loc.replicas) > 0 {
		gws, err := c.cfg.Directory.Gateways(ctx)
		if err != nil {
			return nil, err
		}
		byID := make(map[string]cluster.Gateway, len(gws))
		for _, g := range gws {
			byID[g.ID] = g
		}
		c.mu.Lock()
		c.replicas, c.readAt = byID, time.Now()
		c.mu.Unlock()
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []cluster.Gateway
	for _, id := range loc.replicas {
		g, ok := c.replicas[id]
		if id == c.self || !ok || g.PeerEndpoint == "" || g.State == cluster.Gone {
			continue
		}
		out = append(out, g)
	}
	// A draining replica still serves its agents, but is about to go.
	draining := func(g cluster.Gateway) int {
		if g.State == cluster.Draining {
			return 1
		}
		return 0
	}
	// One that lately did not answer in time (dead, most likely, but not yet
	// gone for the cluster) comes after those.
	suspected := func(g cluster.Gateway) int {
		if at, ok := c.suspects[g.ID]; ok && time.Since(at) < suspectFor {
			return 1
		}
		return 0
	}
	slices.SortStableFunc(out, func(a, b cluster.Gateway) int {
		return cmp.Or(cmp.Compare(suspected(a), suspected(b)), cmp.Compare(draining(a), draining(b)))
	})
	return out, nil
}

// maxLocated bounds the location cache; it is emptied when it grows past.
const maxLocated = 100000

// forget drops what the cache says of agentID.
func (c *Client) forget(agentID string) {
	c.mu.Lock()
	delete(c.located, agentID)
	c.mu.Unlock()
}

var _ tunnel.Remote = (*Client)(nil)
