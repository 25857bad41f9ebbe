package server

import (
	"cmp"
	"context"
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-hclog"
	"golang.org/x/sync/errgroup"

	"github.com/outposthq/outpost/dataplane"
	"github.com/outposthq/outpost/dataplane/transport"
	"github.com/outposthq/outpost/internal/atomicfile"
	"github.com/outposthq/outpost/server/internal/apikey"
	"github.com/outposthq/outpost/server/internal/approval"
	"github.com/outposthq/outpost/server/internal/audit"
	"github.com/outposthq/outpost/server/internal/auth"
	"github.com/outposthq/outpost/server/internal/broker"
	"github.com/outposthq/outpost/server/internal/cluster"
	"github.com/outposthq/outpost/server/internal/entry"
	"github.com/outposthq/outpost/server/internal/metrics"
	"github.com/outposthq/outpost/server/internal/peer"
	"github.com/outposthq/outpost/server/internal/pki"
	"github.com/outposthq/outpost/server/internal/registry"
	"github.com/outposthq/outpost/server/internal/renewal"
	"github.com/outposthq/outpost/server/internal/retention"
	"github.com/outposthq/outpost/server/internal/routing"
	"github.com/outposthq/outpost/server/internal/store"
	"github.com/outposthq/outpost/server/internal/testhook"
	"github.com/outposthq/outpost/server/internal/token"
	"github.com/outposthq/outpost/server/internal/tunnel"
)

// File names inside the data directory that the gateway itself owns (the PKI
// package owns ca.*, server.* and token.key).
const (
	storeFile    = "outpost.db" // the SQLite store, when Config.Store is empty
	adminKeyFile = "admin.key"
)

// Gateway is a running Outpost gateway. New binds its listeners; Run serves until
// its context ends; Close releases everything. Its methods are safe for concurrent use.
type Gateway struct {
	cfg     Config
	log     hclog.Logger
	pki     *pki.Authority
	tokens  *token.Issuer
	store   store.Store
	metrics *metrics.Metrics
	agents  *registry.Registry
	router  *routing.Router
	// book holds every agent's approved and last advertised routes.
	book *approval.Book

	// audit writes the session audit in batches, off the sessions' path;
	// Close flushes it before closing the store.
	audit  *audit.Writer
	broker *broker.Broker
	entry  *entry.Handler
	// The tunnel outlives Run's context: shutdown stops it once client
	// sessions drained.
	tunnelCtx  context.Context
	stopTunnel context.CancelFunc
	tunnel     *tunnel.Server

	// member is this gateway's membership of the cluster of replicas on
	// its store (a cluster of one on SQLite); replicaID is its id, also
	// carried by the server certificate of a PostgreSQL-backed gateway.
	member    *cluster.Member
	replicaID string
	// presence is the view of the agents connected to the other replicas
	// (PostgreSQL only; nil on SQLite).
	presence *cluster.Presence
	// peers forwards sessions to the replicas holding their agents; nil
	// on SQLite.
	peers *peer.Client

	api        *apiServer
	httpSrv    *http.Server
	apiLn      net.Listener
	metricsSrv *http.Server
	metricsLn  net.Listener
	quicConn   *net.UDPConn

	firstAdminKeyFile string
	serving           atomic.Bool

	closeOnce sync.Once
	closeErr  error
}

// New prepares a gateway from cfg: it opens the store, creates or loads the
// CA, server key and token key (files in the data directory with SQLite,
// sealed in the store with PostgreSQL) and the first admin key, and binds
// the listeners, so Addr is valid when it returns. logger may be nil.
func New(cfg Config, logger hclog.Logger) (_ *Gateway, err error) {
	if logger == nil {
		logger = hclog.NewNullLogger()
	}
	cfg = cfg.withDefaults()
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
		return nil, fmt.Errorf("gateway: data dir: %w", err)
	}
	g := &Gateway{cfg: cfg, log: logger, metrics: metrics.New()}
	defer func() {
		if err != nil {
			g.Close()
		}
	}()

	openCtx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	g.store, err = openStore(openCtx, cfg.DataDir, cfg.Store, false, logger)
	if err != nil {
		return nil, fmt.Errorf("gateway: %w", err)
	}
	if g.replicaID, err = cluster.LoadOrCreateID(cfg.DataDir); err != nil {
		return nil, fmt.Errorf("gateway: %w", err)
	}
	pc := pki.Config{
		Hostnames:     cfg.Hostnames,
		AgentValidity: time.Duration(cfg.AgentCertValidity),
		Logger:        logger.Named("pki"),
		Now:           cfg.Now,
	}
	if isPostgresDSN(cfg.Store) {
		// A cluster member names its replica in its server certificate, so
		// that agents hold connections to distinct replicas.
		pc.ReplicaID = g.replicaID
	}
	g.pki, err = loadAuthority(openCtx, cfg, g.store, pc, logger)
	if err != nil {
		return nil, fmt.Errorf("gateway: %w", err)
	}
	prov, err := cfg.provisionerKey()
	if err != nil {
		return nil, fmt.Errorf("gateway: %w", err)
	}
	var provKeys []*ecdsa.PublicKey
	if prov != nil {
		provKeys = append(provKeys, prov)
	}
	g.tokens, err = token.NewIssuer(g.pki.TokenKey(), provKeys, cfg.Now)
	if err != nil {
		return nil, fmt.Errorf("gateway: %w", err)
	}
	if err := g.ensureAdminKey(); err != nil {
		return nil, fmt.Errorf("gateway: %w", err)
	}
	g.tunnelCtx, g.stopTunnel = context.WithCancel(context.Background())
	g.agents = registry.New(cfg.Now)
	g.router = routing.New(g.agents)
	if err := g.loadBook(); err != nil {
		return nil, fmt.Errorf("gateway: %w", err)
	}
	renewer, err := renewal.NewAgents(g.pki, g.store, renewal.AgentsConfig{
		Window: cfg.RenewalWindow, Outcomes: g.metrics.CertRenewals, Now: cfg.Now})
	if err != nil {
		return nil, fmt.Errorf("gateway: %w", err)
	}
	// Derived from the token key, which survives restarts and is shared by
	// every replica: a restarted gateway resets its predecessor's stale
	// agent connections, so the agents reconnect within seconds.
	resetKey, err := transport.StatelessResetKey(g.pki.TokenKey(), transport.GatewayResetLabel)
	if err != nil {
		return nil, fmt.Errorf("gateway: %w", err)
	}
	if err := g.bind(); err != nil {
		return nil, fmt.Errorf("gateway: %w", err)
	}
	g.cfg = g.cfg.withPublicDefaults(portOf(g.apiLn.Addr().String()), portOf(g.quicConn.LocalAddr().String()))
	if g.member, err = g.newMember(); err != nil {
		return nil, fmt.Errorf("gateway: %w", err)
	}
	remote, peers, peerTLS, err := g.peerLink()
	if err != nil {
		return nil, fmt.Errorf("gateway: %w", err)
	}
	g.tunnel, err = tunnel.New(tunnel.Config{
		Authority:           g.pki,
		Store:               g.store,
		Registry:            g.agents,
		MaxSessionsPerAgent: int64(cfg.MaxSessionsPerAgent),
		MaxAgents:           cfg.MaxAgents,
		QUIC:                cfg.quicConfig(),
		ConnectTimeout:      time.Duration(cfg.AgentAnswerTimeout),
		SilenceTimeout:      time.Duration(cfg.AgentSilenceTimeout),
		Renew:               renewer.Renew,
		StatelessResetKey:   resetKey,
		Remote:              remote,
		Peers:               peers,
		PeerTLS:             peerTLS,
		Metrics:             g.metrics,
		Logger:              logger.Named("tunnel"),

		Routes:                   g.book,
		MaxRoutesPerAgent:        cfg.MaxRoutesPerAgent,
		MaxRouteChangesPerMinute: cfg.MaxRouteChangesPerMinute,
		Now:                      cfg.Now,
	})
	if err != nil {
		return nil, fmt.Errorf("gateway: %w", err)
	}
	direct, err := cfg.directTable()
	if err != nil {
		return nil, fmt.Errorf("gateway: %w", err)
	}
	g.audit, err = audit.New(g.store, audit.Config{Metrics: g.metrics, Logger: logger.Named("audit")})
	if err != nil {
		return nil, fmt.Errorf("gateway: %w", err)
	}
	g.broker, err = broker.New(broker.Config{
		Registry:          g.agents,
		Router:            g.router,
		Tunnel:            g.tunnel,
		Audit:             g.audit,
		Metrics:           g.metrics,
		Direct:            direct,
		MaxDirectSessions: cfg.MaxDirectSessions,
		HedgeDelay:        time.Duration(cfg.HedgeDelay),
		Known:             knownRoutes{g.book},
		Now:               cfg.Now,
		Logger:            logger.Named("session"),
	})
	if err != nil {
		return nil, fmt.Errorf("gateway: %w", err)
	}
	origins, err := cfg.originPolicy()
	if err != nil {
		return nil, fmt.Errorf("gateway: %w", err)
	}
	g.entry, err = entry.New(entry.Config{Tokens: g.tokens, Store: g.store, Broker: g.broker, Logger: logger.Named("entry"),
		ClientIP: cfg.clientIP(), MaxSessions: cfg.MaxSessions,
		KeepAlive: time.Duration(cfg.ClientKeepAlive), IdleTimeout: time.Duration(cfg.ClientIdleTimeout),
		Origins: origins, MaxConnections: uint32(cfg.MaxTokenConnections), MaxSessionDuration: time.Duration(cfg.MaxSessionDuration),
		MaxStreamsPerConnection: cfg.MaxStreamsPerConnection,
		Now:                     cfg.Now})
	if err != nil {
		return nil, fmt.Errorf("gateway: %w", err)
	}
	if g.presence, err = g.newPresence(); err != nil {
		return nil, fmt.Errorf("gateway: %w", err)
	}
	g.api, err = newAPIServer(g)
	if err != nil {
		return nil, fmt.Errorf("gateway: %w", err)
	}
	g.serve()
	return g, nil
}

// ensureAdminKey creates the first admin API key on a store that has none, and
// writes it to admin.key (0600). Later starts leave keys alone.
func (g *Gateway) ensureAdminKey() error {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	keys, err := g.store.ListAPIKeys(ctx)
	if err != nil {
		return fmt.Errorf("list api keys: %w", err)
	}
	if len(keys) > 0 {
		return nil
	}
	secret, err := apikey.Create(ctx, g.store, rand.Reader, "admin", []string{auth.ScopeAll}, g.cfg.Now())
	if err != nil {
		return err
	}
	if err := atomicfile.WriteFile(filepath.Join(g.cfg.DataDir, adminKeyFile), []byte(secret+"\n"), 0o600); err != nil {
		return fmt.Errorf("write %s: %w", adminKeyFile, err)
	}
	g.firstAdminKeyFile = filepath.Join(g.cfg.DataDir, adminKeyFile)
	g.log.Info("created the first admin API key", "file", g.firstAdminKeyFile)
	return nil
}

// listen binds the API listener (TLS) and, when configured, the metrics listener.
// bind opens the listeners, so that ports chosen by the system are known
// before the services that advertise them are built.
func (g *Gateway) bind() error {
	ln, err := net.Listen("tcp", g.cfg.Listen)
	if err != nil {
		return fmt.Errorf("listen %s: %w", g.cfg.Listen, err)
	}
	g.apiLn = ln
	if g.cfg.ProxyProtocol {
		g.apiLn = g.cfg.clientIP().ProxyProtocolListener(ln)
	}
	g.quicConn, err = transport.ListenUDP("udp", g.cfg.QUICListen)
	if err != nil {
		return fmt.Errorf("quic listen: %w", err)
	}
	if g.cfg.MetricsListen != "" {
		mln, err := net.Listen("tcp", g.cfg.MetricsListen)
		if err != nil {
			return fmt.Errorf("listen metrics %s: %w", g.cfg.MetricsListen, err)
		}
		g.metricsLn = mln
	}
	return nil
}

// serve builds the HTTP servers on the bound listeners; Run starts them.
func (g *Gateway) serve() {
	g.httpSrv = &http.Server{
		Handler:           g.api.handler(),
		TLSConfig:         &tls.Config{MinVersion: tls.VersionTLS12, GetCertificate: g.pki.GetCertificate, NextProtos: []string{"h2", "http/1.1"}},
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       120 * time.Second,
		ErrorLog:          g.log.Named("http").StandardLogger(&hclog.StandardLoggerOptions{InferLevels: true}),
	}
	if g.metricsLn != nil {
		mux := http.NewServeMux()
		mux.Handle("/metrics", g.api.metricsHandler())
		g.metricsSrv = &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	}
}

// Addr is the bound address of the API listener.
func (g *Gateway) Addr() net.Addr { return g.apiLn.Addr() }

// QUICAddr is the bound address of the agent tunnel's UDP socket.
func (g *Gateway) QUICAddr() net.Addr { return g.quicConn.LocalAddr() }

// MetricsAddr is the bound address of the separate metrics listener, or nil.
func (g *Gateway) MetricsAddr() net.Addr {
	if g.metricsLn == nil {
		return nil
	}
	return g.metricsLn.Addr()
}

// FirstAdminKeyFile is the path of admin.key when this start created the
// first admin API key, or "" when the store already had keys. The key itself
// is only in that file (0600): print the path, never the key, which would
// end up in journald or container logs.
func (g *Gateway) FirstAdminKeyFile() string { return g.firstAdminKeyFile }

// CACertPEM is the gateway CA certificate, what clients pin.
func (g *Gateway) CACertPEM() []byte { return g.pki.CACertPEM() }

// ServerCertificate is the certificate the API and QUIC listeners serve now.
func (g *Gateway) ServerCertificate() *x509.Certificate { return g.pki.ServerCert() }

// Run serves until ctx ends, then stops every listener gracefully (bounded by
// Config.ShutdownTimeout) and returns. It returns nil after a clean stop.
func (g *Gateway) Run(ctx context.Context) error {
	eg, ctx := errgroup.WithContext(ctx)
	g.serving.Store(true)
	g.entry.Start()
	g.log.Info("gateway serving", "api", g.Addr().String(), "public_url", g.cfg.PublicURL, "console", g.ConsoleURL(),
		"ca_spki_sha256", g.pki.CASPKISHA256())
	eg.Go(func() error {
		if err := g.httpSrv.ServeTLS(g.apiLn, "", ""); !errors.Is(err, http.ErrServerClosed) {
			return fmt.Errorf("api listener: %w", err)
		}
		return nil
	})
	if g.metricsSrv != nil {
		eg.Go(func() error {
			if err := g.metricsSrv.Serve(g.metricsLn); !errors.Is(err, http.ErrServerClosed) {
				return fmt.Errorf("metrics listener: %w", err)
			}
			return nil
		})
	}
	eg.Go(func() error { return g.api.run(ctx) })
	eg.Go(func() error { renewal.RunServer(ctx, g.pki, g.cfg.serverCertCheck, g.log); return nil })
	eg.Go(func() error {
		// Token rows are kept for the most any enrollment_token_leeway can
		// be: a pruned jti must never verify again.
		retention.Run(ctx, g.store, retention.Config{
			Audit:      time.Duration(g.cfg.AuditRetention),
			TokenGrace: token.MaxEnrollmentLeeway,
			Now:        g.cfg.Now,
		}, g.log.Named("retention"))
		return nil
	})
	// The tunnel outlives ctx: shutdown stops it once client sessions drained.
	eg.Go(func() error { return g.tunnel.Serve(g.tunnelCtx, g.quicConn) })
	// The membership outlives ctx too: it records the agent connections
	// until the tunnel has closed them, and the draining state.
	eg.Go(func() error { return g.member.Run(g.tunnelCtx) })
	if g.presence != nil {
		eg.Go(func() error { return g.presence.Run(ctx) })
	}
	if l, ok := g.store.(cluster.Listener); ok {
		eg.Go(func() error {
			return cluster.RunDeletions(ctx, cluster.DeletionsConfig{
				Listener: l,
				Store:    g.store,
				Held:     g.tunnel.Held,
				Deleted:  g.agentDeleted,
				Logger:   g.log.Named("cluster"),
			})
		})
	}
	eg.Go(func() error {
		<-ctx.Done()
		g.serving.Store(false)
		return g.shutdown()
	})
	err := eg.Wait()
	if errors.Is(err, context.Canceled) {
		err = nil
	}
	return err
}

// drainRecordTimeout bounds recording the draining state at shutdown.
const drainRecordTimeout = 2 * time.Second

// newMember builds this replica's cluster membership, with its id from
// the data directory and its endpoints from the config or the bound
// listeners.
func (g *Gateway) newMember() (*cluster.Member, error) {
	host, err := os.Hostname()
	if err != nil || host == "" {
		host = "localhost"
	}
	quicEndpoint := cmp.Or(g.cfg.ReplicaQUICEndpoint, reachableAt(g.quicConn.LocalAddr(), host))
	var peerEndpoint string
	if g.clustered() {
		peerEndpoint = quicEndpoint // the peer link shares the agent listener
	}
	return cluster.NewMember(cluster.MemberConfig{
		Store:    g.store,
		Registry: g.agents,
		Replica: store.Replica{
			ID:           g.replicaID,
			Name:         cmp.Or(g.cfg.ReplicaName, host),
			QUICEndpoint: quicEndpoint,
			PeerEndpoint: peerEndpoint,
			APIEndpoint:  cmp.Or(g.cfg.ReplicaAPIEndpoint, reachableAt(g.apiLn.Addr(), host)),
		},
		Heartbeat:  time.Duration(g.cfg.ReplicaHeartbeat),
		GoneAfter:  time.Duration(g.cfg.ReplicaGoneAfter),
		SweepGrace: time.Duration(g.cfg.ReplicaSweepGrace),
		Now:        g.cfg.Now,
		Logger:     g.log.Named("cluster"),
	})
}

// clustered reports whether the store is shared with other replicas
// (PostgreSQL): only then does the gateway run a peer link.
func (g *Gateway) clustered() bool {
	_, ok := g.store.(cluster.Listener)
	return ok
}

// peerLink sets up the peer link of a replica on PostgreSQL: its peer
// identity, the client that forwards sessions to the replicas holding
// their agents (g.peers), and the server and TLS configuration the agent
// listener uses for the replicas that forward to this one. A SQLite
// gateway has none: all nil.
func (g *Gateway) peerLink() (tunnel.Remote, tunnel.PeerServer, *tls.Config, error) {
	if !g.clustered() {
		return nil, nil, nil, nil
	}
	id, err := peer.NewIdentity(g.pki, g.member.ID(), g.cfg.Now)
	if err != nil {
		return nil, nil, nil, err
	}
	// Dial from the listener's address family and interface, any port.
	host, _, _ := net.SplitHostPort(g.quicConn.LocalAddr().String())
	pc, err := transport.ListenUDP("udp", net.JoinHostPort(host, "0"))
	if err != nil {
		return nil, nil, nil, fmt.Errorf("peer link socket: %w", err)
	}
	qc := g.cfg.quicConfig()
	g.peers, err = peer.NewClient(peer.ClientConfig{
		Identity:   id,
		Directory:  g.member,
		PacketConn: pc,
		QUIC:       qc.QUIC(),
		Logger:     g.log.Named("peer"),
	})
	if err != nil {
		pc.Close()
		return nil, nil, nil, err
	}
	return g.peers, peer.NewServer(peer.ServerConfig{Logger: g.log.Named("peer")}), id.ServerTLS(), nil
}

// reachableAt is a bound address as others reach it: host in place of an
// unspecified IP.
func reachableAt(a net.Addr, host string) string {
	h, port, err := net.SplitHostPort(a.String())
	if err != nil {
		return a.String()
	}
	if ip := net.ParseIP(h); ip == nil || ip.IsUnspecified() {
		h = host
	}
	return net.JoinHostPort(h, port)
}

// agentDeleted applies the deletion of an agent, made through this replica
// or another one, to this replica: its connection is closed with
// "agent-deleted", its cached admission and what the registry and the
// route book remember of it are forgotten.
func (g *Gateway) agentDeleted(id string) {
	g.tunnel.Disconnect(id, string(dataplane.CloseAgentDeleted))
	g.agents.Forget(id)
	g.book.Forget(id)
}

// shutdown stops the listeners gracefully within the configured timeout.
func (g *Gateway) shutdown() error {
	timeout := time.Duration(g.cfg.ShutdownTimeout)
	g.log.Info("gateway stopping", "timeout", timeout)
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	var errs []error
	dctx, dcancel := context.WithTimeout(ctx, drainRecordTimeout)
	if err := g.member.Drain(dctx); err != nil {
		g.log.Warn("could not record the draining state in the store", "error", err)
	}
	dcancel()
	// gRPC streams served through net/http are drained by the HTTP server's shutdown.
	if err := g.httpSrv.Shutdown(ctx); err != nil {
		errs = append(errs, fmt.Errorf("api shutdown: %w", err))
		g.httpSrv.Close()
	}
	// Client sessions (hijacked WebSockets) get the rest of the timeout.
	if err := g.entry.Shutdown(ctx); err != nil {
		g.log.Warn("shutdown timeout: closed the remaining client sessions")
	}
	g.stopTunnel()
	if g.peers != nil {
		if err := g.peers.Close(); err != nil {
			g.log.Debug("closing the peer links", "error", err)
		}
	}
	if g.metricsSrv != nil {
		if err := g.metricsSrv.Shutdown(ctx); err != nil {
			errs = append(errs, fmt.Errorf("metrics shutdown: %w", err))
			g.metricsSrv.Close()
		}
	}
	g.api.stop(ctx)
	return errors.Join(errs...)
}

// Close releases the listeners and the store. Call it after Run has returned (or
// instead of Run); it is idempotent and abrupt: open connections are cut. It
// writes the session audit records still queued before it closes the store
// (within 10 s), so a clean stop — Run returned, then Close — loses none.
func (g *Gateway) Close() error {
	g.closeOnce.Do(func() {
		var errs []error
		if g.httpSrv != nil {
			g.httpSrv.Close()
		}
		if g.apiLn != nil {
			g.apiLn.Close()
		}
		if g.metricsSrv != nil {
			g.metricsSrv.Close()
		}
		if g.metricsLn != nil {
			g.metricsLn.Close()
		}
		if g.entry != nil {
			g.entry.Close()
		}
		if g.stopTunnel != nil {
			g.stopTunnel()
		}
		if g.quicConn != nil {
			g.quicConn.Close()
		}
		if g.peers != nil {
			_ = g.peers.Close()
		}
		if g.api != nil {
			g.api.close()
		}
		// After Run, every session has ended and queued its record: the
		// flush writes them all before the store closes.
		if g.audit != nil {
			if err := g.audit.Close(); err != nil {
				errs = append(errs, err)
			}
		}
		if g.store != nil {
			if err := g.store.Close(); err != nil {
				errs = append(errs, err)
			}
		}
		g.closeErr = errors.Join(errs...)
	})
	return g.closeErr
}

var _ io.Closer = (*Gateway)(nil)

func init() {
	testhook.GatewayTunnel = func(g any) *tunnel.Server { return g.(*Gateway).tunnel }
	testhook.GatewayCAKey = func(g any) *ecdsa.PrivateKey { return g.(*Gateway).pki.CAKey() }
}
