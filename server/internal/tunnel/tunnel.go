// Package tunnel is the gateway end of the agent tunnel (DESIGN.md §3–4): the
// QUIC listener with mutual TLS admission, one control loop per agent
// connection feeding the live registry, a liveness watch that marks an agent
// whose connection went quiet unresponsive within seconds (liveness.go), and
// OpenSession, which opens a session stream to an agent and waits for its
// ConnectResponse — or Request and Pending.Answer, the same in two steps, so
// that a caller can tell whether the agent is alive while it dials.
//
// In a cluster, Request reaches an agent that has no connection to this
// gateway through a replica that holds it (Config.Remote, the peer link of
// server/internal/peer), and the listener hands the peer link's connections,
// told apart by their ALPN, to Config.Peers; RequestLocal and
// Pending.Detach are what a replica serving a forwarded session uses.
//
// The control loop bounds what one agent can make the gateway do with its
// routes (DESIGN.md §12): an advertisement with more than
// MaxRoutesPerAgent routes is refused whole, and route changes beyond
// MaxRouteChangesPerMinute are ignored until the minute has passed; in both
// cases the previous routes stay.
package tunnel

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"slices"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/quic-go/quic-go"
	"golang.org/x/time/rate"

	"github.com/outposthq/outpost/dataplane"
	"github.com/outposthq/outpost/dataplane/transport"
	"github.com/outposthq/outpost/server/internal/metrics"
	"github.com/outposthq/outpost/server/internal/pki"
	"github.com/outposthq/outpost/server/internal/registry"
	"github.com/outposthq/outpost/server/internal/store"
)

// Defaults of Config.
const (
	DefaultMaxSessionsPerAgent      = 4096
	DefaultMaxAgents                = 10000
	DefaultConnectTimeout           = 30 * time.Second
	DefaultMaxRoutesPerAgent        = 1024
	DefaultMaxRouteChangesPerMinute = 30
	// refusalLogInterval spaces the WARN lines of refused handshakes: a
	// scanner or a misconfigured fleet must not flood the log (every
	// refusal is counted in a metric).
	refusalLogInterval = 10 * time.Second
	// controlStreamTimeout bounds how long an admitted agent may take to open
	// its control stream.
	controlStreamTimeout = 10 * time.Second
	// storeTimeout bounds each store lookup made during admission.
	storeTimeout = 5 * time.Second
	// DefaultAdmissionCacheTTL is Config.AdmissionCacheTTL's default.
	DefaultAdmissionCacheTTL = 10 * time.Minute
)

// Authority is what the tunnel needs from the gateway CA.
type Authority interface {
	GetCertificate(*tls.ClientHelloInfo) (*tls.Certificate, error)
	VerifyAgentChain(rawCerts [][]byte) (*x509.Certificate, error)
}

// AgentStore is what admission needs from the store.
type AgentStore interface {
	GetAgent(ctx context.Context, id string) (store.Agent, error)
}

// RouteBook is told about the agents the tunnel admits and the routes they
// advertise; *approval.Book is one.
type RouteBook interface {
	// Admit tells the book about an admitted agent, before its connection
	// registers.
	Admit(a store.Agent)
	// Advertised records an advertisement that replaced the agent's routes
	// (not a drain's withdrawal), as advertised. It must not keep routes'
	// slices: they are the control stream's read buffer.
	Advertised(ctx context.Context, agentID string, routes registry.Routes) error
}

// Renewer signs a renewed certificate for an admitted agent from csrPEM. cert
// is the certificate the agent proved with mTLS. It returns the new
// certificate and the CA certificate in PEM, or an error whose text is sent
// to the agent.
type Renewer func(ctx context.Context, agentID string, cert *x509.Certificate, csrPEM string) (certPEM, caPEM string, err error)

// Config configures a Server.
type Config struct {
	Authority Authority
	Store     AgentStore
	Registry  *registry.Registry
	// QUIC is the transport configuration; its MaxIncomingStreams is forced
	// to 1 (an agent opens only its control stream).
	QUIC transport.Config
	// MaxSessionsPerAgent caps concurrent sessions per agent (default 4,096).
	MaxSessionsPerAgent int64
	// MaxAgents caps the agents connected at once; one more is closed with
	// "gateway-full" (a reconnecting agent is never refused). If zero,
	// DefaultMaxAgents.
	MaxAgents int
	// ConnectTimeout bounds opening a session: stream, ConnectRequest and the
	// agent's ConnectResponse (default 30 s).
	ConnectTimeout time.Duration
	// SilenceTimeout marks an agent unresponsive (registry.Registry.SetSilent)
	// when no packet arrived on its connection for this long, and online
	// again at its next packet; the connection stays open until the QUIC idle
	// timeout. On a path whose round trip is long it is stretched to a few
	// probe timeouts. It must be at least twice the QUIC keep-alive period
	// (the gateway's PINGs are what a healthy idle agent answers). If zero,
	// 3 s or twice the keep-alive period, whichever is longer.
	SilenceTimeout time.Duration
	// Renew handles CertRenewalRequest; nil answers every request with an error.
	Renew Renewer
	// Routes, if set, is told about admitted agents and their route changes.
	Routes RouteBook
	// MaxRoutesPerAgent caps the subnets plus domains of one
	// advertisement; a longer one is refused whole. If zero, 1,024.
	MaxRoutesPerAgent int
	// MaxRouteChangesPerMinute caps the advertisements per agent and
	// minute that change its routes (a new epoch, or a new connection's
	// first); more are ignored until the minute has passed. If zero, 30.
	MaxRouteChangesPerMinute int
	// AdmissionCacheTTL is how long after the store last admitted an
	// agent that the agent is still admitted when the store cannot be
	// reached (a reconnect during a database outage). The cache holds at
	// most MaxAgents agents; an agent deleted through this gateway
	// (Disconnect), or that the store says is deleted, is never admitted
	// from it. An agent deleted through another gateway on the same
	// database is Disconnected by the gateway's cluster listener when it
	// hears of it (Held lists what to check after a missed notice). If zero,
	// DefaultAdmissionCacheTTL (10 min); negative: no cache.
	AdmissionCacheTTL time.Duration
	// Now is the clock of the route change limit and the admission cache.
	// If nil, time.Now.
	Now func() time.Time
	// StatelessResetKey derives the stateless reset tokens of the QUIC
	// transport (transport.StatelessResetKey). Give the same key after a
	// restart, and to every replica, so that a gateway that lost its
	// connections (a crash) resets them when their agents next send, and
	// the agents reconnect at once instead of after the idle timeout. If
	// nil, the gateway sends no stateless resets.
	StatelessResetKey *quic.StatelessResetKey
	// Remote, if set, reaches agents connected to other replicas: Request
	// goes through it for an agent without a connection here. If nil,
	// such a Request fails with ErrNotConnected.
	Remote Remote
	// Peers, if set, serves the peer link on the agent listener: a
	// connection that negotiates PeerTLS's ALPN is handed to it instead of
	// agent admission. PeerTLS is then required: the TLS configuration of
	// those connections (its first NextProtos entry is the peer ALPN),
	// which must verify the peer's certificate during the handshake.
	Peers   PeerServer
	PeerTLS *tls.Config
	// PeerMaxStreams is how many sessions a peer may forward at once on
	// one connection, when Peers is set. QUIC cannot tell the two kinds of
	// connection apart before the handshake, so agent connections get the
	// same stream credit; the tunnel resets every stream an agent opens
	// after its control stream. If zero, DefaultPeerMaxStreams.
	PeerMaxStreams int64

	Metrics *metrics.Metrics
	Logger  hclog.Logger
}

// PeerServer serves the peer connections of other replicas; see
// Config.Peers.
type PeerServer interface {
	// ServeConn serves conn until it ends or ctx does, then closes it;
	// local opens the forwarded sessions on this gateway's agent
	// connections.
	ServeConn(ctx context.Context, conn *quic.Conn, local LocalOpener)
}

// LocalOpener opens sessions on this gateway's own agent connections;
// *Server is one.
type LocalOpener interface {
	RequestLocal(ctx context.Context, agentID string, id dataplane.SessionID, target string) (*Pending, error)
}

// DefaultPeerMaxStreams is Config.PeerMaxStreams' default.
const DefaultPeerMaxStreams = 16384

// Server accepts agent connections. Create it with New, run it with Serve.
type Server struct {
	cfg  Config
	log  hclog.Logger
	reg  *registry.Registry
	tls  *tls.Config
	quic *quic.Config

	changes *changeLimiter
	live    *liveness
	admits  *admissionCache

	mu    sync.Mutex
	conns map[*agentConn]struct{} // every connection being handled
	wg    sync.WaitGroup          // one per handled connection, one for the liveness sweeper

	refusalLog rate.Sometimes // admits one refused-handshake WARN per refusalLogInterval
}

// New checks cfg and returns a Server.
func New(cfg Config) (*Server, error) {
	if cfg.Authority == nil || cfg.Store == nil || cfg.Registry == nil {
		return nil, errors.New("tunnel: Authority, Store and Registry are required")
	}
	if err := cfg.QUIC.Validate(); err != nil {
		return nil, fmt.Errorf("tunnel: %w", err)
	}
	if cfg.MaxSessionsPerAgent <= 0 {
		cfg.MaxSessionsPerAgent = DefaultMaxSessionsPerAgent
	}
	if cfg.ConnectTimeout <= 0 {
		cfg.ConnectTimeout = DefaultConnectTimeout
	}
	if cfg.MaxAgents <= 0 {
		cfg.MaxAgents = DefaultMaxAgents
	}
	if cfg.MaxRoutesPerAgent <= 0 {
		cfg.MaxRoutesPerAgent = DefaultMaxRoutesPerAgent
	}
	if cfg.MaxRouteChangesPerMinute <= 0 {
		cfg.MaxRouteChangesPerMinute = DefaultMaxRouteChangesPerMinute
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.AdmissionCacheTTL == 0 {
		cfg.AdmissionCacheTTL = DefaultAdmissionCacheTTL
	}
	if cfg.Logger == nil {
		cfg.Logger = hclog.NewNullLogger()
	}
	if cfg.Metrics == nil {
		cfg.Metrics = metrics.New()
	}
	if cfg.Peers != nil && (cfg.PeerTLS == nil || len(cfg.PeerTLS.NextProtos) == 0) {
		return nil, errors.New("tunnel: Peers needs PeerTLS with the peer ALPN")
	}
	if cfg.PeerMaxStreams <= 0 {
		cfg.PeerMaxStreams = DefaultPeerMaxStreams
	}
	qc := cfg.QUIC.QUIC()
	qc.MaxIncomingStreams = 1
	if cfg.Peers != nil {
		qc.MaxIncomingStreams = cfg.PeerMaxStreams
	}
	keepAlive := min(qc.KeepAlivePeriod, qc.MaxIdleTimeout/2) // as quic-go applies it
	switch {
	case cfg.SilenceTimeout == 0:
		cfg.SilenceTimeout = max(DefaultSilenceTimeout, 2*keepAlive)
	case cfg.SilenceTimeout < 2*keepAlive:
		return nil, fmt.Errorf("tunnel: SilenceTimeout (%v) must be at least twice the QUIC keep-alive period (%v)", cfg.SilenceTimeout, keepAlive)
	}
	s := &Server{
		cfg: cfg,
		log: cfg.Logger,
		reg: cfg.Registry,
		tls: transport.ServerTLS(&tls.Config{
			GetCertificate: cfg.Authority.GetCertificate,
			// The chain is verified after the handshake, so that a refused
			// agent learns why from the close reason instead of a TLS alert.
			ClientAuth:         tls.RequireAnyClientCert,
			GetConfigForClient: peerConfig(cfg.PeerTLS),
		}),
		quic:       qc,
		changes:    newChangeLimiter(cfg.MaxRouteChangesPerMinute, cfg.Now),
		admits:     newAdmissionCache(cfg.AdmissionCacheTTL, cfg.MaxAgents, cfg.Now),
		conns:      make(map[*agentConn]struct{}),
		refusalLog: rate.Sometimes{Interval: refusalLogInterval},
	}
	s.live = newLiveness(cfg.Registry, cfg.SilenceTimeout, keepAlive, &s.wg)
	return s, nil
}

// Serve accepts agent connections on pc until ctx ends, then closes every
// agent connection with "shutdown", waits for their handlers and returns nil.
// It takes ownership of pc only for the QUIC transport's lifetime; the caller
// closes pc after Serve returns.
func (s *Server) Serve(ctx context.Context, pc net.PacketConn) error {
	tr := &quic.Transport{Conn: pc, StatelessResetKey: s.cfg.StatelessResetKey}
	ln, err := tr.Listen(s.tls, s.quic)
	if err != nil {
		return fmt.Errorf("tunnel: listen: %w", err)
	}
	s.log.Info("agent tunnel listening", "addr", pc.LocalAddr().String(), "alpn", transport.ALPN)
	if udp, ok := pc.(*net.UDPConn); ok {
		rep := transport.SocketReport(udp)
		s.log.Info("UDP socket", "recv_buffer", rep.ReceiveBuffer, "send_buffer", rep.SendBuffer, "gso", rep.GSO)
		if w := rep.Warning(); w != "" {
			s.log.Warn(w)
		}
	}
	acceptDone := make(chan struct{})
	var acceptErr error // set before acceptDone closes
	go func() {
		defer close(acceptDone)
		for {
			conn, err := ln.Accept(ctx)
			if err != nil {
				if ctx.Err() == nil {
					acceptErr = err
				}
				return
			}
			s.start(ctx, conn)
		}
	}()
	// A listener that stops accepting while the gateway runs (its socket
	// failed) ends Serve with an error, so the gateway stops instead of
	// serving on with a dead agent port.
	select {
	case <-ctx.Done():
	case <-acceptDone:
	}
	ln.Close()
	<-acceptDone
	s.closeAll(dataplane.CloseShutdown)
	s.wg.Wait()
	if err := tr.Close(); err != nil && !errors.Is(err, net.ErrClosed) {
		s.log.Debug("closing QUIC transport", "error", err)
	}
	if acceptErr != nil {
		return fmt.Errorf("tunnel: the QUIC listener stopped accepting agents: %w", acceptErr)
	}
	return nil
}

// peerConfig picks the peer link's TLS configuration for a client that
// offers its ALPN; nil when there is no peer link.
func peerConfig(peer *tls.Config) func(*tls.ClientHelloInfo) (*tls.Config, error) {
	if peer == nil {
		return nil
	}
	return func(hello *tls.ClientHelloInfo) (*tls.Config, error) {
		if slices.Contains(hello.SupportedProtos, peer.NextProtos[0]) {
			return peer, nil
		}
		return nil, nil
	}
}

// start hands conn to its own goroutine, tracked for Serve's shutdown.
func (s *Server) start(ctx context.Context, conn *quic.Conn) {
	if s.cfg.Peers != nil && conn.ConnectionState().TLS.NegotiatedProtocol == s.cfg.PeerTLS.NextProtos[0] {
		s.wg.Go(func() { s.cfg.Peers.ServeConn(ctx, conn, s) })
		return
	}
	ac := &agentConn{q: conn}
	s.mu.Lock()
	s.conns[ac] = struct{}{}
	s.wg.Add(1)
	s.mu.Unlock()
	go func() {
		defer s.wg.Done()
		defer func() {
			s.mu.Lock()
			delete(s.conns, ac)
			s.mu.Unlock()
		}()
		s.handle(ctx, ac)
	}()
}

func (s *Server) closeAll(reason dataplane.CloseReason) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for ac := range s.conns {
		ac.close(reason)
	}
}

// Disconnect closes the agent's live connection with reason (a
// dataplane.CloseReason), if it has one, and reports whether it had. It
// also forgets the agent's cached admission: until the store vouches for
// it again, it is not admitted while the store cannot be reached (a
// deleted agent never is).
func (s *Server) Disconnect(agentID, reason string) bool {
	s.admits.forget(agentID)
	e, ok := s.reg.Lookup(agentID)
	if !ok {
		return false
	}
	e.Conn.CloseWithReason(reason)
	return true
}

// Held returns the ids of the agents this gateway holds without asking
// the store: those connected and those its admission cache would admit,
// each once, in no order. A replica that may have missed a deletion made
// elsewhere checks them against the store and Disconnects the deleted.
func (s *Server) Held() []string {
	ids := s.admits.ids()
	seen := make(map[string]bool, len(ids))
	for _, id := range ids {
		seen[id] = true
	}
	for _, snap := range s.reg.List() {
		if !seen[snap.AgentID] {
			seen[snap.AgentID] = true
			ids = append(ids, snap.AgentID)
		}
	}
	return ids
}

// agentConn is one agent QUIC connection; it implements registry.Conn.
type agentConn struct {
	q *quic.Conn
}

// CloseWithReason closes the connection with reason, a dataplane.CloseReason.
func (c *agentConn) CloseWithReason(reason string) {
	c.close(dataplane.CloseReason(reason))
}

func (c *agentConn) close(reason dataplane.CloseReason) {
	_ = transport.Close(c.q, reason)
}

// handle admits conn, registers it and runs its control loop until it ends.
func (s *Server) handle(ctx context.Context, ac *agentConn) {
	conn := ac.q
	remote := conn.RemoteAddr().String()
	log := s.log.With("remote", remote)
	cert, agent, cached, err := s.admit(ctx, conn)
	if err != nil {
		s.refuse(log, ac, err)
		return
	}
	log = log.With("agent_id", agent.ID, "agent", agent.Name)
	if cached {
		log.Warn("agent admitted from the admission cache: the store cannot be reached")
	}
	if s.cfg.Routes != nil {
		s.cfg.Routes.Admit(agent)
	}
	e := &registry.Entry{
		AgentID:      agent.ID,
		Name:         agent.Name,
		RemoteAddr:   remote,
		CertNotAfter: cert.NotAfter,
		Conn:         ac,
	}
	old, err := s.reg.RegisterCapped(e, s.cfg.MaxAgents)
	if err != nil {
		s.refused(log.With("agent_id", agent.ID), "gateway_full", fmt.Errorf("%w (%d)", err, s.cfg.MaxAgents))
		ac.close(dataplane.CloseGatewayFull)
		return
	}
	if old != nil {
		log.Info("agent reconnected; closing its previous connection", "previous_remote", old.RemoteAddr)
		s.cfg.Metrics.AgentConnections.WithLabelValues("superseded").Inc()
		old.Conn.CloseWithReason(string(dataplane.CloseConnectionSuperseded))
	}
	s.cfg.Metrics.AgentConnections.WithLabelValues("accepted").Inc()
	s.cfg.Metrics.AgentsConnected.Inc()
	defer func() {
		if s.reg.Unregister(e) {
			s.cfg.Metrics.AgentRTT.DeleteLabelValues(agent.ID)
		}
		s.cfg.Metrics.AgentsConnected.Dec()
	}()
	// A DeleteAgent that ran between the admission lookup and Register found
	// nothing to disconnect: look again now that the entry is visible.
	if _, _, err := s.lookup(ctx, agent.ID); err != nil {
		log.Warn("agent connection refused", "reason", err)
		ac.close(refusalReason(err))
		return
	}
	log.Info("agent connected", "generation", e.Generation())
	s.live.watch(e, conn, log)
	defer s.live.forget(e)
	err = s.controlLoop(ctx, conn, e, cert, log)
	log.Info("agent disconnected", "reason", describeClose(err), "generation", e.Generation())
}

// errUndecided marks an admission that failed because the store did not
// answer: the agent is told to retry (CloseGatewayUnavailable), not that its
// identity is refused, which it would take as final.
var errUndecided = errors.New("admission undecided: the store did not answer")

// refusalReason is the close reason for an admission error: only a refusal
// that a retry cannot change is CloseAgentNotAccepted.
func refusalReason(err error) dataplane.CloseReason {
	if errors.Is(err, errUndecided) {
		return dataplane.CloseGatewayUnavailable
	}
	return dataplane.CloseAgentNotAccepted
}

// refuse counts, logs and closes a connection that admission refused.
func (s *Server) refuse(log hclog.Logger, ac *agentConn, err error) {
	reason := refusalReason(err)
	outcome := "not_accepted"
	if reason == dataplane.CloseGatewayUnavailable {
		outcome = "unavailable"
	}
	s.refused(log, outcome, err)
	ac.close(reason)
}

// refused counts a refused agent connection under outcome and logs why, at
// most one WARN per refusalLogInterval (the rest at DEBUG).
func (s *Server) refused(log hclog.Logger, outcome string, why error) {
	s.cfg.Metrics.AgentConnections.WithLabelValues(outcome).Inc()
	logged := false
	s.refusalLog.Do(func() {
		logged = true
		log.Warn("agent connection refused (further refusals within 10 s are logged at debug; outpost_agent_connections_total counts them all)",
			"reason", why, "outcome", outcome)
	})
	if !logged {
		log.Debug("agent connection refused", "reason", why, "outcome", outcome)
	}
}

// admit applies DESIGN.md §4: chain, URI SAN UUID, agent present and not
// deleted, SPKI equal to the stored one. cached reports an admission from
// the admission cache, the store not answering.
func (s *Server) admit(ctx context.Context, conn *quic.Conn) (_ *x509.Certificate, _ store.Agent, cached bool, _ error) {
	state := conn.ConnectionState().TLS
	raw := make([][]byte, 0, len(state.PeerCertificates))
	for _, c := range state.PeerCertificates {
		raw = append(raw, c.Raw)
	}
	cert, err := s.cfg.Authority.VerifyAgentChain(raw)
	if err != nil {
		return nil, store.Agent{}, false, err
	}
	id, err := pki.AgentIDFromCert(cert)
	if err != nil {
		return nil, store.Agent{}, false, err
	}
	agent, cached, err := s.lookup(ctx, id.String())
	if err != nil {
		return nil, store.Agent{}, false, err
	}
	if pin, err := transport.ParsePin(agent.SPKISHA256); err != nil || !pin.Matches(cert) {
		err := fmt.Errorf("agent %s presented key %s, enrolled with %s", id, transport.SPKISHA256(cert), agent.SPKISHA256)
		if cached {
			// The cached record may predate a renewal: only the store
			// can say no.
			err = fmt.Errorf("%w: %w", errUndecided, err)
		}
		return nil, store.Agent{}, false, err
	}
	return cert, agent, cached, nil
}

// lookup returns the stored agent id if it exists and is not deleted,
// bounded by storeTimeout. When the store does not answer, an agent it
// admitted recently comes from the admission cache (cached); otherwise the
// failure wraps errUndecided.
func (s *Server) lookup(ctx context.Context, id string) (_ store.Agent, cached bool, _ error) {
	lctx, cancel := context.WithTimeout(ctx, storeTimeout)
	defer cancel()
	mark := s.admits.begin()
	agent, err := s.cfg.Store.GetAgent(lctx, id)
	switch {
	case errors.Is(err, store.ErrNotFound):
		s.admits.forget(id)
		return store.Agent{}, false, fmt.Errorf("agent %s: %w", id, err)
	case err != nil:
		if a, ok := s.admits.get(id); ok {
			return a, true, nil
		}
		return store.Agent{}, false, fmt.Errorf("%w: agent %s: %w", errUndecided, id, err)
	case agent.DeletedAt != nil:
		s.admits.forget(id)
		return store.Agent{}, false, fmt.Errorf("agent %s was deleted", id)
	}
	s.admits.put(agent, mark)
	return agent, false, nil
}

// describeClose turns the error that ended a connection into a log value.
func describeClose(err error) string {
	var appErr *quic.ApplicationError
	var idle *quic.IdleTimeoutError
	switch {
	case err == nil:
		return "closed"
	case errors.As(err, &appErr):
		if appErr.ErrorMessage != "" {
			return appErr.ErrorMessage
		}
		return appErr.Error()
	case errors.As(err, &idle):
		return "idle timeout"
	default:
		return err.Error()
	}
}
