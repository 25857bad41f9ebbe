package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"runtime"
	"runtime/pprof"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/hashicorp/go-hclog"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/outposthq/outpost/dataplane/relay"
	outpostv1 "github.com/outposthq/outpost/gen/outpost/v1"
	"github.com/outposthq/outpost/server"
	"github.com/outposthq/outpost/server/apiclient"
	"github.com/outposthq/outpost/server/servertest"
)

// The gateway child is this program re-executed with -mode=gateway: the
// real gateway library plus a benchmark-only TCP entry, in a process of its
// own so that its CPU time and memory can be read from /proc. It talks to
// the parent in JSON lines: one hello on stdout, then one response on stdout
// per request read from stdin. It exits when stdin ends (the parent is done
// or gone) or on SIGTERM/SIGINT. Logs go to stderr.

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

// Requests the gateway child serves.
const (
	// opLatency times N sessions (after Warmup) opened with DialAgent, each
	// sending one byte to an echo Target and reading it back.
	opLatency = "latency"
	// opProfileStart starts a CPU profile written to Path.
	opProfileStart = "profile-start"
	// opProfileStop stops the CPU profile.
	opProfileStop = "profile-stop"
	// opRuntime reports the Go runtime's view of the process's memory.
	opRuntime = "runtime"
	// opSessionToken mints a reusable session token for Target through
	// AgentID, valid for TTL, with the gateway's own gRPC API
	// (RouteResolveService.CreateSession), as an operator's tooling would.
	opSessionToken = "session-token"
	// opCapacity opens up to N sessions with DialAgent (Workers at a time,
	// within Timeout, stopping at the first failure), each echoing one byte
	// off Target, and holds them open until opRelease.
	opCapacity = "capacity"
	// opRelease closes the sessions opCapacity holds.
	opRelease = "release"
)

type request struct {
	Op      string        `json:"op"`
	AgentID string        `json:"agent_id,omitempty"`
	Target  string        `json:"target,omitempty"`
	Warmup  int           `json:"warmup,omitempty"`
	N       int           `json:"n,omitempty"`
	Workers int           `json:"workers,omitempty"`
	Timeout time.Duration `json:"timeout_ns,omitempty"`
	TTL     time.Duration `json:"ttl_ns,omitempty"`
	Path    string        `json:"path,omitempty"`
}

type response struct {
	Error    string         `json:"error,omitempty"`
	Latency  *latencyStats  `json:"latency,omitempty"`
	Runtime  *runtimeStats  `json:"runtime,omitempty"`
	Token    string         `json:"token,omitempty"`
	Capacity *capacityStats `json:"capacity,omitempty"`
}

// capacityStats is what one opCapacity run found.
type capacityStats struct {
	// Attempted and Opened count the sessions started and those that
	// carried their byte and are held.
	Attempted int `json:"attempted"`
	Opened    int `json:"opened"`
	// Took is how long opening them took.
	Took time.Duration `json:"took_ns"`
	// Stop is why the run stopped before N, if it did.
	Stop string `json:"stop,omitempty"`
}

// runtimeStats is what the Go runtime says about the gateway child's
// memory: it splits the RSS into heap, goroutine stacks and the rest.
type runtimeStats struct {
	Goroutines int    `json:"goroutines"`
	HeapInuse  uint64 `json:"heap_inuse"`
	HeapAlloc  uint64 `json:"heap_alloc"`
	StackInuse uint64 `json:"stack_inuse"`
	Sys        uint64 `json:"sys"`
	NumGC      uint32 `json:"num_gc"`
}

func readRuntimeStats() runtimeStats {
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return runtimeStats{
		Goroutines: runtime.NumGoroutine(),
		HeapInuse:  m.HeapInuse,
		HeapAlloc:  m.HeapAlloc,
		StackInuse: m.StackInuse,
		Sys:        m.Sys,
		NumGC:      m.NumGC,
	}
}

// Bounds of the entry and of the in-gateway sessions.
const (
	maxEntryHeader   = 512
	headerTimeout    = 10 * time.Second
	dialTimeout      = 30 * time.Second
	sessionTimeout   = 5 * time.Second
	tokenCallTimeout = 30 * time.Second
	maxRequestLine   = 64 << 10
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
)

// runGatewayChild is the whole life of the gateway child; it returns the
// exit code. maxSessions is the gateway's MaxSessionsPerAgent.
func runGatewayChild(dataDir, entryAddr string, maxSessions int, logLevel string) int {
	log := hclog.New(&hclog.LoggerOptions{Name: "bench-gateway", Level: hclog.LevelFromString(logLevel), Output: os.Stderr})
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := serveGateway(ctx, dataDir, entryAddr, maxSessions, log); err != nil {
		log.Error("gateway child failed", "error", err)
		return 1
	}
	return 0
}

func serveGateway(ctx context.Context, dataDir, entryAddr string, maxSessions int, log hclog.Logger) error {
	if dataDir == "" {
		return errors.New("-data-dir is required")
	}
	g, err := server.New(server.Config{
		DataDir:             dataDir,
		Listen:              "127.0.0.1:0",
		QUICListen:          "127.0.0.1:0",
		Hostnames:           []string{"127.0.0.1"},
		EnrollRateLimit:     1000,
		MaxSessionsPerAgent: maxSessions,
		AgentAnswerTimeout:  server.Duration(agentAnswerTimeout),
		// One reusable token carries every session of a run.
		MaxTokenConnections: benchTokenConnections,
	}, log.Named("gateway"))
	if err != nil {
		return err
	}
	defer g.Close()
	laddr, err := net.ResolveTCPAddr("tcp", entryAddr)
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
	runErr := make(chan error, 1)
	wg.Go(func() { runErr <- g.Run(ctx) })
	e := &entry{ln: ln, g: g, log: log.Named("entry")}
	wg.Go(func() { e.serve(ctx) })

	api, err := dialAPI(g, dataDir)
	if err != nil {
		return err
	}
	defer api.Close()
	tok, err := createEnrollmentToken(ctx, api)
	if err != nil {
		return err
	}
	out := json.NewEncoder(os.Stdout)
	if err := out.Encode(hello{Entry: ln.Addr().String(), API: g.Addr().String(), QUIC: g.QUICAddr().String(),
		Token: tok, CAPEM: string(g.CACertPEM())}); err != nil {
		return fmt.Errorf("write hello: %w", err)
	}

	lines, stopReading := stdinLines()
	defer stopReading()

	c := &commander{g: g, api: api, log: log}
	defer c.stopProfile()
	defer c.release()
	for {
		select {
		case <-ctx.Done():
			return nil
		case err := <-runErr:
			return fmt.Errorf("gateway stopped early: %v", err)
		case line, ok := <-lines:
			if !ok {
				return nil // the parent closed stdin: we are done
			}
			if err := out.Encode(c.do(ctx, line)); err != nil {
				return fmt.Errorf("write response: %w", err)
			}
		}
	}
}

// dialAPI connects to the gateway's own gRPC API with the admin key it
// wrote, as an operator's tooling would.
func dialAPI(g *server.Gateway, dataDir string) (*grpc.ClientConn, error) {
	key, err := apiclient.ReadKeyFile(filepath.Join(dataDir, "admin.key"))
	if err != nil {
		return nil, err
	}
	return apiclient.Dial(apiclient.Options{Gateway: "https://" + g.Addr().String(), APIKey: key, CAPEM: g.CACertPEM()})
}

// createEnrollmentToken asks for an enrollment token that pre-approves
// loopback.
func createEnrollmentToken(ctx context.Context, conn *grpc.ClientConn) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, tokenCallTimeout)
	defer cancel()
	resp, err := outpostv1.NewEnrollmentServiceClient(conn).CreateEnrollmentToken(ctx, &outpostv1.CreateEnrollmentTokenRequest{
		AgentName: "bench",
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

// commander serves the parent's requests, one at a time.
type commander struct {
	g       *server.Gateway
	api     *grpc.ClientConn
	log     hclog.Logger
	profile *os.File         // the CPU profile being written, if any
	held    []relay.Endpoint // sessions opCapacity opened, until opRelease
}

func (c *commander) do(ctx context.Context, line []byte) response {
	var r request
	if err := json.Unmarshal(line, &r); err != nil {
		return response{Error: "bad request: " + err.Error()}
	}
	switch r.Op {
	case opLatency:
		st, err := c.latency(ctx, r)
		if err != nil {
			return response{Error: err.Error()}
		}
		return response{Latency: &st}
	case opProfileStart:
		if err := c.startProfile(r.Path); err != nil {
			return response{Error: err.Error()}
		}
		return response{}
	case opRuntime:
		st := readRuntimeStats()
		return response{Runtime: &st}
	case opProfileStop:
		if err := c.stopProfile(); err != nil {
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
	case opHeapProfile:
		if err := writeHeapProfile(r.Path); err != nil {
			return response{Error: err.Error()}
		}
		return response{}
	}
	return response{Error: fmt.Sprintf("unknown op %q", r.Op)}
}

// latency opens sessions straight from the gateway library: no entry hop.
func (c *commander) latency(ctx context.Context, r request) (latencyStats, error) {
	if r.N <= 0 || r.Warmup < 0 || r.N+r.Warmup > 100_000 {
		return latencyStats{}, fmt.Errorf("latency: bad counts n=%d warmup=%d", r.N, r.Warmup)
	}
	// Generous: a session normally takes well under a millisecond.
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second+time.Duration(r.N+r.Warmup)*10*time.Millisecond)
	defer cancel()
	return measureLatency(ctx, r.Warmup, r.N, func(ctx context.Context) error {
		ctx, cancel := context.WithTimeout(ctx, sessionTimeout)
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
		if err := echoOnce(ep, nil); err != nil {
			ep.Abort(relay.ErrorCodeCanceled)
			return err
		}
		return ep.Close()
	})
}

// capacity opens up to r.N sessions through r.AgentID, r.Workers at a
// time, each echoing one byte off r.Target, and keeps them open. It stops
// at the first session that fails (the others in flight are cancelled) or
// when r.Timeout has passed.
func (c *commander) capacity(ctx context.Context, r request) (capacityStats, error) {
	switch {
	case len(c.held) > 0:
		return capacityStats{}, fmt.Errorf("capacity: %d sessions are still held", len(c.held))
	case r.N <= 0 || r.N > maxCapacity || r.Workers <= 0 || r.Workers > 256 || r.Timeout <= 0:
		return capacityStats{}, fmt.Errorf("capacity: bad request n=%d workers=%d timeout=%v", r.N, r.Workers, r.Timeout)
	}
	ctx, cancel := context.WithTimeout(ctx, r.Timeout)
	defer cancel()
	var (
		mu sync.Mutex
		// Guarded by mu:
		started int
		stop    error
		held    = make([]relay.Endpoint, 0, r.N)
	)
	start := time.Now()
	var wg sync.WaitGroup
	for range r.Workers {
		wg.Go(func() {
			for {
				mu.Lock()
				if stop != nil || started >= r.N || ctx.Err() != nil {
					mu.Unlock()
					return
				}
				started++
				i := started
				mu.Unlock()
				ep, err := c.openHeld(ctx, r.AgentID, r.Target)
				mu.Lock()
				if err == nil {
					held = append(held, ep)
				} else if stop == nil {
					stop = fmt.Errorf("session %d: %w", i, err)
					cancel()
				}
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	c.held = held
	st := capacityStats{Attempted: started, Opened: len(held), Took: time.Since(start)}
	switch {
	case stop != nil:
		st.Stop = stop.Error()
	case len(held) < r.N:
		st.Stop = fmt.Sprintf("time limit (%v) reached", r.Timeout)
	}
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
	err = echoOnce(ep, nil)
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

func (c *commander) startProfile(path string) error {
	if c.profile != nil {
		return errors.New("a CPU profile is already running")
	}
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		f.Close()
		return err
	}
	c.profile = f
	c.log.Info("CPU profile started", "path", path)
	return nil
}

func (c *commander) stopProfile() error {
	if c.profile == nil {
		return nil
	}
	pprof.StopCPUProfile()
	err := c.profile.Close()
	c.profile = nil
	return err
}

// entry is the benchmark-only client entry: it accepts TCP on loopback,
// reads one line "AGENT_ID TARGET\n", opens a session with DialAgent and
// relays both ways with half-close. Bytes the client sent after the line are
// forwarded first. A session that cannot be opened is reset (TCP RST).
type entry struct {
	ln  *net.TCPListener
	g   *server.Gateway
	log hclog.Logger
	wg  sync.WaitGroup
}

// serve accepts until ctx ends, then waits for every connection's handler
// (the end of ctx aborts their relays).
func (e *entry) serve(ctx context.Context) {
	stop := context.AfterFunc(ctx, func() { e.ln.Close() })
	defer stop()
	defer e.wg.Wait()
	for {
		c, err := e.ln.AcceptTCP()
		if err != nil {
			if ctx.Err() == nil {
				e.log.Error("accept", "error", err)
			}
			return
		}
		e.wg.Go(func() { e.handle(ctx, c) })
	}
}

func (e *entry) handle(ctx context.Context, c *net.TCPConn) {
	tcp := relay.TCPConn(c)
	// Until Relay owns the connection, the end of ctx cuts it.
	stop := context.AfterFunc(ctx, func() { tcp.Abort(relay.ErrorCodeCanceled) })
	agentID, target, early, err := readHeader(c)
	if err != nil {
		stop()
		tcp.Abort(relay.ErrorCodeReset)
		e.log.Debug("bad header", "error", err)
		return
	}
	dctx, cancel := context.WithTimeout(ctx, dialTimeout)
	s, err := servertest.DialAgent(dctx, e.g, agentID, target)
	cancel()
	if err != nil {
		stop()
		tcp.Abort(relay.ErrorCodeReset)
		e.log.Debug("dial agent", "agent_id", agentID, "target", target, "error", err)
		return
	}
	ep, ok := s.(relay.Endpoint)
	if !ok {
		stop()
		s.Close()
		tcp.Abort(relay.ErrorCodeReset)
		e.log.Error("session is not a relay.Endpoint", "type", fmt.Sprintf("%T", s))
		return
	}
	if len(early) > 0 {
		if _, err := ep.Write(early); err != nil {
			stop()
			ep.Abort(relay.ErrorCodeReset)
			tcp.Abort(relay.ErrorCodeReset)
			return
		}
	}
	stop() // from here Relay watches ctx
	if _, err := relay.Relay(ctx, tcp, ep, relay.Options{}); err != nil {
		e.log.Debug("relay", "error", err)
	}
}

// readHeader reads "AGENT_ID TARGET\n" within headerTimeout and returns
// what the client sent after it.
func readHeader(c *net.TCPConn) (agentID, target string, early []byte, err error) {
	if err := c.SetReadDeadline(time.Now().Add(headerTimeout)); err != nil {
		return "", "", nil, err
	}
	br := bufio.NewReaderSize(c, maxEntryHeader)
	line, err := br.ReadSlice('\n')
	if err != nil {
		return "", "", nil, fmt.Errorf("read header: %w", err)
	}
	f := strings.Fields(string(line))
	if len(f) != 2 {
		return "", "", nil, fmt.Errorf("header %q: want AGENT_ID TARGET", line)
	}
	early, _ = br.Peek(br.Buffered())
	if err := c.SetReadDeadline(time.Time{}); err != nil {
		return "", "", nil, err
	}
	return f[0], f[1], bytes.Clone(early), nil
}
