package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"net"
	"path/filepath"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/outposthq/outpost/bench/internal/load"
	"github.com/outposthq/outpost/bench/internal/proc"
	"github.com/outposthq/outpost/dataplane/relay"
	outpostv1 "github.com/outposthq/outpost/gen/outpost/v1"
	"github.com/outposthq/outpost/server"
	"github.com/outposthq/outpost/server/apiclient"
	"github.com/outposthq/outpost/server/servertest"
)

// The gateway child is this program re-executed with -mode=gateway: the
// real gateway library plus a benchmark-only TCP entry, in a process of its
// own so that its CPU time and memory can be read from /proc. It talks to
// the parent in JSON lines (proc.Server; the requests are in ctl.go): one
// hello on stdout, then one response on stdout per request read from stdin.
// It exits when stdin ends (the parent is done or gone) or on
// SIGTERM/SIGINT. Logs go to stderr.

// hello is the gateway child's first line.
type hello struct {
	// Entry is the benchmark entry's TCP address.
	Entry string `json:"entry"`
	// API is the gateway's management API (TLS) address.
	API string `json:"api"`
	// QUIC is the gateway's agent tunnel (UDP) address.
	QUIC string `json:"quic"`
	// Token is an enrollment token pre-approving 127.0.0.0/8.
	Token string `json:"token"`
	// CAPEM is the gateway CA certificate, which clients of the WebSocket
	// entry pin.
	CAPEM string `json:"ca_pem"`
}

// Bounds of the entry and of the in-gateway sessions.
const (
	maxEntryHeader   = 512
	headerTimeout    = 10 * time.Second
	dialTimeout      = 30 * time.Second
	tokenCallTimeout = 30 * time.Second
	// agentAnswerTimeout is the gateway's wait for stream credit and a
	// ConnectResponse (the product's default is 30 s): on loopback an agent
	// answers in a millisecond, and the capacity run must learn soon that
	// an agent grants no more streams.
	agentAnswerTimeout = 5 * time.Second
	// capacitySessionTimeout bounds opening one capacity session; it
	// outlasts agentAnswerTimeout so the gateway's own reason comes back.
	capacitySessionTimeout = agentAnswerTimeout + 5*time.Second
	// maxCapacity bounds opCapacity's N.
	maxCapacity = 100_000
	// benchTokenConnections is the gateway's cap on a reusable token's
	// connections: the bench's token opens thousands.
	benchTokenConnections = 10_000_000
	// benchStreamsPerConnection is the gateway child's cap of sessions on
	// one standing connection.
	benchStreamsPerConnection = 1 << 16
)

// gatewayOptions are the gateway child's flags (internal: the benchmark
// passes them to its own children).
type gatewayOptions struct {
	dataDir     string // required
	entryAddr   string // the bench entry's address
	maxSessions int    // the gateway's MaxSessionsPerAgent; 0: its default
	// store and sealKeyFile put the gateway on PostgreSQL, a replica of
	// the cluster on that database; empty: SQLite in dataDir.
	store, sealKeyFile string
	replicaName        string        // the replica's name in ListGateways; empty: the host name
	quicIdleTimeout    time.Duration // the gateway's QUIC idle timeout; 0: its default
}

func (o *gatewayOptions) register(fs *flag.FlagSet) {
	fs.StringVar(&o.dataDir, "data-dir", "", "internal: the gateway child's data directory")
	fs.StringVar(&o.entryAddr, "entry", "127.0.0.1:0", "internal: the gateway child's entry address")
	fs.IntVar(&o.maxSessions, "max-sessions", 0, "internal: the gateway child's sessions-per-agent cap")
	fs.StringVar(&o.store, "store", "", "internal: the gateway child's PostgreSQL store (a cluster replica)")
	fs.StringVar(&o.sealKeyFile, "seal-key-file", "", "internal: the gateway child's seal key, with -store")
	fs.StringVar(&o.replicaName, "replica-name", "", "internal: the gateway child's replica name, with -store")
	fs.DurationVar(&o.quicIdleTimeout, "quic-idle-timeout", 0, "internal: the gateway child's QUIC idle timeout")
}

// serveGateway is the gateway child's life (see runChild).
func serveGateway(ctx context.Context, o gatewayOptions, log hclog.Logger) error {
	if o.dataDir == "" {
		return errors.New("-data-dir is required")
	}
	dataDir := o.dataDir
	g, err := server.New(server.Config{
		DataDir:             dataDir,
		Store:               o.store,
		SealKeyFile:         o.sealKeyFile,
		ReplicaName:         o.replicaName,
		QUICIdleTimeout:     server.Duration(o.quicIdleTimeout),
		Listen:              "127.0.0.1:0",
		QUICListen:          "127.0.0.1:0",
		Hostnames:           []string{"127.0.0.1"},
		EnrollRateLimit:     1000,
		MaxSessionsPerAgent: o.maxSessions,
		AgentAnswerTimeout:  server.Duration(agentAnswerTimeout),
		// One reusable token carries every session of a run.
		MaxTokenConnections: benchTokenConnections,
		// One standing connection of `outpost connect` carries every idle
		// session of a run at once.
		MaxStreamsPerConnection: benchStreamsPerConnection,
	}, log.Named("gateway"))
	if err != nil {
		return err
	}
	defer g.Close()
	laddr, err := net.ResolveTCPAddr("tcp", o.entryAddr)
	if err != nil {
		return fmt.Errorf("entry address: %w", err)
	}
	ln, err := net.ListenTCP("tcp", laddr)
	if err != nil {
		return fmt.Errorf("entry: %w", err)
	}

	ctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	defer func() {
		cancel()
		wg.Wait()
	}()
	e := &entry{ln: ln, g: g, log: log.Named("entry")}
	wg.Go(func() { e.serve(ctx) })

	c := &commander{g: g, log: log, profile: proc.CPUProfiler{Log: log}}
	return proc.Server[request]{
		Run: g.Run,
		Hello: func(ctx context.Context) (any, error) {
			api, err := dialAPI(dataDir, g.Addr().String(), g.CACertPEM())
			if err != nil {
				return nil, err
			}
			c.api = api
			tok, err := createEnrollmentToken(ctx, api, "bench")
			if err != nil {
				return nil, err
			}
			return hello{Entry: ln.Addr().String(), API: g.Addr().String(), QUIC: g.QUICAddr().String(),
				Token: tok, CAPEM: string(g.CACertPEM())}, nil
		},
		Answer: c.do,
		Done:   c.close,
	}.Serve(ctx)
}

// dialAPI connects to the gRPC API of a gateway at addr, whose CA is caPEM,
// with the admin key in its data directory, as an operator's tooling
// would.
func dialAPI(dataDir, addr string, caPEM []byte) (*grpc.ClientConn, error) {
	key, err := apiclient.ReadKeyFile(filepath.Join(dataDir, "admin.key"))
	if err != nil {
		return nil, err
	}
	return apiclient.Dial(apiclient.Config{Gateway: "https://" + addr, APIKey: key, CAPEM: caPEM})
}

// createEnrollmentToken asks for an enrollment token for an agent called
// name that pre-approves loopback.
func createEnrollmentToken(ctx context.Context, conn *grpc.ClientConn, name string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, tokenCallTimeout)
	defer cancel()
	resp, err := outpostv1.NewEnrollmentServiceClient(conn).CreateEnrollmentToken(ctx, &outpostv1.CreateEnrollmentTokenRequest{
		AgentName: name,
		Ttl:       durationpb.New(time.Hour),
		Routes:    &outpostv1.RouteSet{Subnets: []string{"127.0.0.0/8"}},
	})
	if err != nil {
		return "", fmt.Errorf("create enrollment token: %w", err)
	}
	return resp.GetToken(), nil
}

// createSessionToken mints a reusable session token for target through
// agentID.
func createSessionToken(ctx context.Context, conn *grpc.ClientConn, agentID, target string, ttl time.Duration) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, tokenCallTimeout)
	defer cancel()
	resp, err := outpostv1.NewRouteResolveServiceClient(conn).CreateSession(ctx, &outpostv1.CreateSessionRequest{
		Target:   target,
		AgentId:  agentID,
		Ttl:      durationpb.New(ttl),
		Reusable: true,
	})
	if err != nil {
		return "", fmt.Errorf("create session token: %w", err)
	}
	return resp.GetToken(), nil
}

// agentStatus asks for the status of agentID.
func agentStatus(ctx context.Context, conn *grpc.ClientConn, agentID string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, tokenCallTimeout)
	defer cancel()
	a, err := outpostv1.NewAgentAdminServiceClient(conn).GetAgent(ctx, &outpostv1.GetAgentRequest{AgentId: agentID})
	if err != nil {
		return "", fmt.Errorf("get agent: %w", err)
	}
	return a.GetAgent().GetStatus().String(), nil
}

// commander serves the parent's requests, one at a time.
type commander struct {
	g       *server.Gateway
	api     *grpc.ClientConn // set by the hello; nil before
	log     hclog.Logger
	profile proc.CPUProfiler
	held    []relay.Endpoint // sessions opCapacity opened, until opRelease
}

// close releases what the commander holds: the sessions, the CPU profile,
// the API connection.
func (c *commander) close() {
	c.release()
	c.profile.Stop()
	if c.api != nil {
		c.api.Close()
	}
}

func (c *commander) do(ctx context.Context, r request) any {
	if resp, ok := answerCommon(r); ok {
		return resp
	}
	switch r.Op {
	case opLatency:
		st, err := c.latency(ctx, r)
		if err != nil {
			return response{Error: err.Error()}
		}
		return response{Latency: &st}
	case opProfileStart:
		if err := c.profile.Start(r.Path); err != nil {
			return response{Error: err.Error()}
		}
		return response{}
	case opProfileStop:
		if err := c.profile.Stop(); err != nil {
			return response{Error: err.Error()}
		}
		return response{}
	case opSessionToken:
		if r.TTL <= 0 || r.Target == "" {
			return response{Error: "session-token: a target and a positive ttl are required"}
		}
		tok, err := createSessionToken(ctx, c.api, r.AgentID, r.Target, r.TTL)
		if err != nil {
			return response{Error: err.Error()}
		}
		return response{Token: tok}
	case opCapacity:
		st, err := c.capacity(ctx, r)
		if err != nil {
			return response{Error: err.Error()}
		}
		return response{Capacity: &st}
	case opRelease:
		c.release()
		return response{}
	case opEnrollToken:
		tok, err := createEnrollmentToken(ctx, c.api, r.Name)
		if err != nil {
			return response{Error: err.Error()}
		}
		return response{Token: tok}
	case opAgentStatus:
		st, err := agentStatus(ctx, c.api, r.AgentID)
		if err != nil {
			return response{Error: err.Error()}
		}
		return response{Status: st}
	}
	return unknownOp(r)
}

// latency opens sessions straight from the gateway library: no entry hop.
func (c *commander) latency(ctx context.Context, r request) (load.Stats, error) {
	if r.N <= 0 || r.Warmup < 0 || r.N+r.Warmup > 100_000 {
		return load.Stats{}, fmt.Errorf("latency: bad counts n=%d warmup=%d", r.N, r.Warmup)
	}
	// Generous: a session normally takes well under a millisecond.
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second+time.Duration(r.N+r.Warmup)*10*time.Millisecond)
	defer cancel()
	return load.MeasureLatency(ctx, r.Warmup, r.N, func(ctx context.Context) error {
		ctx, cancel := context.WithTimeout(ctx, load.SessionTimeout)
		defer cancel()
		s, err := servertest.DialAgent(ctx, c.g, r.AgentID, r.Target)
		if err != nil {
			return err
		}
		ep, ok := s.(relay.Endpoint)
		if !ok {
			s.Close()
			return fmt.Errorf("session type %T is not a relay.Endpoint", s)
		}
		stop := context.AfterFunc(ctx, func() { ep.Abort(relay.ErrorCodeCanceled) })
		defer stop()
		if err := load.EchoOnce(ep, nil); err != nil {
			ep.Abort(relay.ErrorCodeCanceled)
			return err
		}
		return ep.Close()
	})
}

// capacity opens up to r.N sessions through r.AgentID, r.Workers at a
// time, each echoing one byte off r.Target, and keeps them open (see
// load.Hold): it stops at the first session that fails or when r.Timeout
// has passed.
func (c *commander) capacity(ctx context.Context, r request) (load.HoldStats, error) {
	switch {
	case len(c.held) > 0:
		return load.HoldStats{}, fmt.Errorf("capacity: %d sessions are still held", len(c.held))
	case r.N <= 0 || r.N > maxCapacity || r.Workers <= 0 || r.Workers > 256 || r.Timeout <= 0:
		return load.HoldStats{}, fmt.Errorf("capacity: bad request n=%d workers=%d timeout=%v", r.N, r.Workers, r.Timeout)
	}
	held, st := load.Hold(ctx, r.N, r.Workers, r.Timeout, func(ctx context.Context) (relay.Endpoint, error) {
		return c.openHeld(ctx, r.AgentID, r.Target)
	})
	c.held = held
	c.log.Info("capacity run", "opened", st.Opened, "attempted", st.Attempted, "took", st.Took, "stop", st.Stop)
	return st, nil
}

// openHeld opens one session, sends one byte and reads its echo; the
// session stays open.
func (c *commander) openHeld(ctx context.Context, agentID, target string) (relay.Endpoint, error) {
	ctx, cancel := context.WithTimeout(ctx, capacitySessionTimeout)
	defer cancel()
	s, err := servertest.DialAgent(ctx, c.g, agentID, target)
	if err != nil {
		return nil, err
	}
	ep, ok := s.(relay.Endpoint)
	if !ok {
		s.Close()
		return nil, fmt.Errorf("session type %T is not a relay.Endpoint", s)
	}
	stop := context.AfterFunc(ctx, func() { ep.Abort(relay.ErrorCodeCanceled) })
	err = load.EchoOnce(ep, nil)
	if !stop() || err != nil {
		ep.Abort(relay.ErrorCodeCanceled)
		if err == nil {
			err = context.Cause(ctx)
		}
		return nil, err
	}
	return ep, nil
}

// release closes the held sessions.
func (c *commander) release() {
	for _, ep := range c.held {
		ep.Close()
	}
	c.held = nil
}
