// Package tunnel is the agent end of the tunnel (DESIGN.md §3, §7): it dials
// the gateway over QUIC with mutual TLS, keeps the control stream (route
// advertisements, heartbeats), serves the session streams the gateway opens,
// and reconnects with backoff.
package tunnel

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/netip"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/quic-go/quic-go"

	"github.com/outposthq/outpost/agent/internal/session"
	"github.com/outposthq/outpost/dataplane"
	"github.com/outposthq/outpost/dataplane/relay"
	"github.com/outposthq/outpost/dataplane/transport"
)

// Close reasons (DESIGN.md §3).
const (
	reasonShutdown   = "shutdown"
	reasonDeleted    = "agent-deleted"
	reasonRefused    = "agent-not-accepted"
	reasonSuperseded = "connection-superseded"
)

// Defaults of Options (DESIGN.md §7, §12).
const (
	DefaultAdvertiseInterval = 30 * time.Second
	DefaultHeartbeatInterval = 60 * time.Second
	DefaultBackoffMin        = 1 * time.Second
	DefaultBackoffMax        = 60 * time.Second
	DefaultHealthyAfter      = 30 * time.Second
	DefaultDrainTimeout      = 30 * time.Second
	// drainPoll is how often a drain checks for the last session's end.
	drainPoll = 50 * time.Millisecond
)

// Options configure an Agent. Zero values mean the defaults.
type Options struct {
	// ConfigDir holds agent.json and the certificates.
	ConfigDir string
	Logger    hclog.Logger
	// QUIC is the transport configuration.
	QUIC transport.Config
	// AdvertiseInterval and HeartbeatInterval pace the control stream.
	AdvertiseInterval, HeartbeatInterval time.Duration
	// BackoffMin and BackoffMax bound the reconnect delay (full jitter);
	// a connection that lasted HealthyAfter resets it.
	BackoffMin, BackoffMax, HealthyAfter time.Duration
	// DialTimeout bounds resolving and dialing a session's target (20 s).
	DialTimeout time.Duration
	// Counters, if set, receive the bytes relayed by every session.
	Counters *relay.Counters
	// DrainTimeout is how long live sessions may take to finish when Run's
	// context ends (default 30 s); new sessions are refused meanwhile.
	DrainTimeout time.Duration
}

func (o Options) withDefaults() Options {
	def := func(d *time.Duration, v time.Duration) {
		if *d <= 0 {
			*d = v
		}
	}
	def(&o.AdvertiseInterval, DefaultAdvertiseInterval)
	def(&o.HeartbeatInterval, DefaultHeartbeatInterval)
	def(&o.BackoffMin, DefaultBackoffMin)
	def(&o.BackoffMax, DefaultBackoffMax)
	def(&o.HealthyAfter, DefaultHealthyAfter)
	def(&o.DrainTimeout, DefaultDrainTimeout)
	if o.Logger == nil {
		o.Logger = hclog.NewNullLogger()
	}
	if o.Counters == nil {
		o.Counters = new(relay.Counters)
	}
	return o
}

// Agent keeps the tunnel up. Create it with New and call Run once.
type Agent struct {
	opts    Options
	log     hclog.Logger
	handler *session.Handler
	quic    *quic.Config

	reload chan struct{} // Reload's signal to the live connection

	reportOnce sync.Once // logs the UDP socket report once

	mu        sync.Mutex
	epoch     uint64    // epoch of the routes last advertised
	current   *settings // settings of the live connection
	connected bool
}

// New returns an Agent for opts.
func New(opts Options) (*Agent, error) {
	opts = opts.withDefaults()
	if err := opts.QUIC.Validate(); err != nil {
		return nil, err
	}
	return &Agent{
		opts: opts,
		log:  opts.Logger,
		handler: session.New(session.Config{
			DialTimeout: opts.DialTimeout,
			Logger:      opts.Logger.Named("session"),
			Counters:    opts.Counters,
		}),
		quic:   opts.QUIC.QUIC(),
		reload: make(chan struct{}, 1),
	}, nil
}

// Active returns the number of sessions being served.
func (a *Agent) Active() int { return a.handler.Active() }

// Connected reports whether a tunnel is up right now.
func (a *Agent) Connected() bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.connected
}

// Reload asks the agent to re-read its config now: changed routes are
// advertised on the live connection with epoch + 1 (no reconnect).
func (a *Agent) Reload() {
	select {
	case a.reload <- struct{}{}:
	default:
	}
}

// Run connects and reconnects until ctx ends, then closes the tunnel with
// "shutdown" and returns nil. It returns an error at once only when the
// config directory holds no enrolled identity; every later failure is
// logged and retried with backoff.
func (a *Agent) Run(ctx context.Context) error {
	if _, err := loadSettings(a.opts.ConfigDir); errors.Is(err, ErrNotEnrolled) {
		return err
	}
	attempt := 0
	for {
		started := time.Now()
		err := a.connectOnce(ctx)
		if ctx.Err() != nil {
			return nil
		}
		if time.Since(started) >= a.opts.HealthyAfter {
			attempt = 0
		}
		delay := a.backoff(attempt)
		attempt++
		a.log.Warn("tunnel down; reconnecting", "error", err, "retry_in", delay.Round(time.Millisecond))
		t := time.NewTimer(delay)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil
		case <-t.C:
		}
	}
}

// backoff is the delay before retry number attempt: full jitter over an
// exponential cap from BackoffMin to BackoffMax.
func (a *Agent) backoff(attempt int) time.Duration {
	limit := a.opts.BackoffMax
	if attempt < 30 {
		limit = min(a.opts.BackoffMax, a.opts.BackoffMin<<attempt)
	}
	return rand.N(limit) + 1
}

// connectOnce reads the config, dials, and serves one connection until it
// ends or ctx does.
func (a *Agent) connectOnce(ctx context.Context) error {
	set, err := loadSettings(a.opts.ConfigDir)
	if err != nil {
		return fmt.Errorf("config: %w", err)
	}
	a.handler.SetRoutes(set.routes)
	conn, tr, err := a.dial(ctx, set)
	if err != nil {
		return err
	}
	defer tr.Conn.Close()
	defer tr.Close()
	log := a.log.With("gateway", set.endpoint, "remote", conn.RemoteAddr().String())
	err = a.serve(ctx, conn, set, log)
	return err
}

// dial resolves the endpoint and tries each address in turn.
func (a *Agent) dial(ctx context.Context, set *settings) (*quic.Conn, *quic.Transport, error) {
	host, port, _ := net.SplitHostPort(set.endpoint)
	var addrs []netip.Addr
	if ip, err := netip.ParseAddr(host); err == nil {
		addrs = []netip.Addr{ip}
	} else {
		addrs, err = net.DefaultResolver.LookupNetIP(ctx, "ip", host)
		if err != nil {
			return nil, nil, fmt.Errorf("resolve gateway %s: %w", host, err)
		}
	}
	p, err := net.LookupPort("udp", port)
	if err != nil {
		return nil, nil, fmt.Errorf("gateway port %q: %w", port, err)
	}
	var errs []error
	for _, ip := range addrs {
		udp, err := net.ListenUDP("udp", nil)
		if err != nil {
			return nil, nil, fmt.Errorf("open UDP socket: %w", err)
		}
		a.reportOnce.Do(func() {
			rep := transport.SocketReport(udp)
			a.log.Info("UDP socket", "recv_buffer", rep.ReceiveBuffer, "send_buffer", rep.SendBuffer, "gso", rep.GSO)
			if w := rep.Warning(); w != "" {
				a.log.Warn(w)
			}
		})
		tr := &quic.Transport{Conn: udp}
		raddr := net.UDPAddrFromAddrPort(netip.AddrPortFrom(ip.Unmap(), uint16(p)))
		conn, err := tr.Dial(ctx, raddr, transport.ClientTLS(set.tls), a.quic)
		if err == nil {
			return conn, tr, nil
		}
		tr.Close()
		udp.Close()
		errs = append(errs, fmt.Errorf("%s: %w", raddr, err))
		if ctx.Err() != nil {
			break
		}
	}
	return nil, nil, fmt.Errorf("dial gateway %s: %w", set.endpoint, errors.Join(errs...))
}

// serve runs one established connection: control stream, sessions, until the
// connection or ctx ends.
func (a *Agent) serve(ctx context.Context, conn *quic.Conn, set *settings, log hclog.Logger) error {
	ctrl, err := conn.OpenStreamSync(ctx)
	if err != nil {
		conn.CloseWithError(0, reasonShutdown)
		return fmt.Errorf("open control stream: %w", err)
	}
	w := dataplane.NewControlWriter(ctrl)
	a.mu.Lock()
	if a.epoch == 0 || a.current == nil || !sameRoutes(a.current, set) {
		a.epoch++
	}
	epoch := a.epoch
	a.current, a.connected = set, true
	a.mu.Unlock()
	defer func() {
		a.mu.Lock()
		a.connected = false
		a.mu.Unlock()
	}()
	if err := w.Send(advertise(set, epoch)); err != nil {
		conn.CloseWithError(0, reasonShutdown)
		return fmt.Errorf("route advertisement: %w", err)
	}
	log.Info("tunnel up", "agent_id", set.agentID, "epoch", epoch,
		"subnets", len(set.routes.Subnets), "domains", len(set.domains))

	// The connection's goroutines outlive ctx during a drain: they stop with
	// cctx, when the connection ends.
	cctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	defer cancel()
	var wg sync.WaitGroup
	wg.Go(func() { a.readControl(cctx, conn, ctrl, log) })
	wg.Go(func() { a.pace(cctx, conn, w, log) })
	wg.Go(func() { a.acceptSessions(cctx, conn) })

	select {
	case <-ctx.Done():
		a.drain(conn, w, log)
		conn.CloseWithError(0, reasonShutdown)
		cancel()
		wg.Wait()
		log.Info("tunnel closed", "reason", reasonShutdown)
		return ctx.Err()
	case <-conn.Context().Done():
	}
	cancel()
	wg.Wait()
	err = context.Cause(conn.Context())
	var appErr *quic.ApplicationError
	if errors.As(err, &appErr) && appErr.Remote {
		switch appErr.ErrorMessage {
		case reasonDeleted:
			log.Error("the gateway deleted this agent; enroll it again to reconnect")
		case reasonRefused:
			log.Error("the gateway refused this agent's identity (deleted, re-enrolled elsewhere, or another CA)")
		case reasonSuperseded:
			log.Warn("another connection with this agent's identity replaced this one")
		}
		return fmt.Errorf("gateway closed the tunnel: %s", appErr.ErrorMessage)
	}
	return err
}

// drain refuses new sessions, withdraws the agent's routes so the gateway
// routes elsewhere at once, and waits up to DrainTimeout for live sessions.
func (a *Agent) drain(conn *quic.Conn, w *dataplane.ControlWriter, log hclog.Logger) {
	a.handler.SetDraining(true)
	defer a.handler.SetDraining(false)
	if a.handler.Active() == 0 {
		return
	}
	a.mu.Lock()
	a.epoch++
	a.current = nil
	withdraw := advertise(nil, a.epoch)
	a.mu.Unlock()
	if err := w.Send(withdraw); err != nil {
		log.Warn("could not withdraw routes before draining", "error", err)
	}
	log.Info("draining: new sessions are refused", "active_sessions", a.handler.Active(), "timeout", a.opts.DrainTimeout)
	deadline := time.Now().Add(a.opts.DrainTimeout)
	t := time.NewTicker(drainPoll)
	defer t.Stop()
	for a.handler.Active() > 0 && time.Now().Before(deadline) {
		select {
		case <-conn.Context().Done():
			return
		case <-t.C:
		}
	}
	if n := a.handler.Active(); n > 0 {
		log.Warn("drain timeout: closing live sessions", "active_sessions", n)
	}
}

// acceptSessions serves every stream the gateway opens until ctx ends or the
// connection does, and waits for those sessions.
func (a *Agent) acceptSessions(ctx context.Context, conn *quic.Conn) {
	var wg sync.WaitGroup
	defer wg.Wait()
	for {
		s, err := conn.AcceptStream(ctx)
		if err != nil {
			return
		}
		wg.Go(func() { a.handler.Serve(ctx, s) })
	}
}

// pace sends the periodic RouteAdvertise and Heartbeat, and applies Reload.
func (a *Agent) pace(ctx context.Context, conn *quic.Conn, w *dataplane.ControlWriter, log hclog.Logger) {
	adv := time.NewTicker(a.opts.AdvertiseInterval)
	defer adv.Stop()
	hb := time.NewTicker(a.opts.HeartbeatInterval)
	defer hb.Stop()
	for {
		var msg dataplane.ControlMessage
		select {
		case <-ctx.Done():
			return
		case <-adv.C:
			a.mu.Lock()
			msg = advertise(a.current, a.epoch)
			a.mu.Unlock()
		case <-hb.C:
			msg = &dataplane.Heartbeat{
				Version:           dataplane.ProtocolVersion,
				TimestampMs:       uint64(time.Now().UnixMilli()),
				ActiveStreamCount: uint32(a.handler.Active()),
			}
		case <-a.reload:
			msg = a.applyReload(log)
			if msg == nil {
				continue
			}
		}
		if err := w.Send(msg); err != nil {
			log.Warn("control stream write failed; closing the tunnel", "error", err)
			conn.CloseWithError(0, reasonShutdown)
			return
		}
	}
}

// applyReload re-reads the config; if the routes changed it returns the
// RouteAdvertise with epoch + 1 to send, else nil.
func (a *Agent) applyReload(log hclog.Logger) dataplane.ControlMessage {
	set, err := loadSettings(a.opts.ConfigDir)
	if err != nil {
		log.Warn("config reload failed; keeping the current routes", "error", err)
		return nil
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.current == nil {
		return nil // draining: the routes stay withdrawn
	}
	if sameRoutes(a.current, set) {
		log.Info("config reloaded; routes unchanged")
		return nil
	}
	a.epoch++
	a.current = set
	a.handler.SetRoutes(set.routes)
	log.Info("config reloaded; advertising new routes", "epoch", a.epoch,
		"subnets", len(set.routes.Subnets), "domains", len(set.domains))
	return advertise(set, a.epoch)
}

// readControl reads the gateway's control messages until the stream ends.
func (a *Agent) readControl(ctx context.Context, conn *quic.Conn, ctrl *quic.Stream, log hclog.Logger) {
	r := dataplane.NewControlReader(ctrl)
	for ctx.Err() == nil {
		msg, err := r.ReadControl()
		if err != nil {
			var unknown *dataplane.UnknownTagError
			var trunc *dataplane.TruncatedError
			var invalid *dataplane.InvalidFieldError
			if errors.As(err, &unknown) || errors.As(err, &trunc) || errors.As(err, &invalid) {
				log.Warn("skipping control message", "error", err)
				continue
			}
			if ctx.Err() == nil && conn.Context().Err() == nil {
				log.Warn("control stream failed; closing the tunnel", "error", err)
				conn.CloseWithError(0, reasonShutdown)
			}
			return
		}
		if err := dataplane.CheckVersion(msg.ProtocolVersion()); err != nil {
			log.Warn("ignoring control message", "tag", msg.Tag(), "error", err)
			continue
		}
		switch m := msg.(type) {
		case *dataplane.HeartbeatAck:
			rtt := time.Since(time.UnixMilli(int64(m.TimestampMs)))
			log.Trace("heartbeat acknowledged", "rtt", rtt)
		default:
			log.Warn("ignoring unexpected control message", "tag", msg.Tag())
		}
	}
}

// advertise builds the RouteAdvertise of set; a nil set (a draining agent)
// advertises no routes.
func advertise(set *settings, epoch uint64) *dataplane.RouteAdvertise {
	if set == nil {
		return &dataplane.RouteAdvertise{Version: dataplane.ProtocolVersion, Epoch: epoch}
	}
	return &dataplane.RouteAdvertise{
		Version: dataplane.ProtocolVersion,
		Epoch:   epoch,
		Subnets: set.routes.Subnets,
		Domains: set.domains,
	}
}
