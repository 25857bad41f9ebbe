// Package tunnel is the agent end of the tunnel (DESIGN.md §3, §7): it dials
// the gateway over QUIC with mutual TLS, keeps the control stream (route
// advertisements, heartbeats), serves the session streams the gateway opens,
// and reconnects with backoff.
//
// Over the life of the agent it also:
//   - renews the agent certificate over the control stream when a third of
//     its lifetime is left, with a CSR from the same key, and reconnects with
//     the new certificate (renew.go);
//   - re-reads agent.json on Reload (SIGHUP) and when the file changes on
//     disk (watch.go), advertising changed routes with epoch + 1 on the live
//     connection;
//   - advertises the host's DNS domain, auto-detected (package detect), when
//     no domain is configured and AutoDetectDomain is not false;
//   - drains when Run's context ends: routes withdrawn with epoch + 1, new
//     sessions refused with "agent draining", live ones given DrainTimeout,
//     then the connection is closed with "shutdown".
package tunnel

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/quic-go/quic-go"

	"github.com/outposthq/outpost/agent/internal/detect"
	"github.com/outposthq/outpost/agent/internal/session"
	"github.com/outposthq/outpost/dataplane"
	"github.com/outposthq/outpost/dataplane/relay"
	"github.com/outposthq/outpost/dataplane/transport"
)

// Defaults of Options (DESIGN.md §7, §12).
const (
	DefaultAdvertiseInterval = 30 * time.Second
	DefaultHeartbeatInterval = 60 * time.Second
	DefaultBackoffMin        = 1 * time.Second
	DefaultBackoffMax        = 60 * time.Second
	DefaultHealthyAfter      = 30 * time.Second
	DefaultDrainTimeout      = 30 * time.Second
	// DefaultRenewFraction renews the certificate when a third of its
	// lifetime or less is left.
	DefaultRenewFraction      = 1.0 / 3
	DefaultRenewTimeout       = 30 * time.Second
	DefaultRenewBackoffMin    = 1 * time.Minute
	DefaultRenewBackoffMax    = 1 * time.Hour
	DefaultRenewCheckInterval = 1 * time.Minute
	DefaultWatchInterval      = 2 * time.Second
	// drainPoll is how often a drain checks for the last session's end.
	drainPoll = 50 * time.Millisecond
)

// Options configure an Agent. The zero value of every field but ConfigDir
// means the default given in its comment.
type Options struct {
	// ConfigDir holds agent.json and the certificates. Run returns
	// ErrNotEnrolled if it holds no identity.
	ConfigDir string
	// Logger receives the agent's logs. If nil, nothing is logged.
	Logger hclog.Logger
	// QUIC is the transport configuration.
	QUIC transport.Config
	// AdvertiseInterval and HeartbeatInterval pace the control stream. If
	// zero, 30 s and 60 s.
	AdvertiseInterval, HeartbeatInterval time.Duration
	// BackoffMin and BackoffMax bound the reconnect delay (full jitter);
	// a connection that lasted HealthyAfter resets it. If zero, 1 s, 60 s
	// and 30 s. A reconnect after a certificate renewal has no delay.
	BackoffMin, BackoffMax, HealthyAfter time.Duration
	// DialTimeout bounds resolving and dialing a session's target. If zero,
	// 20 s.
	DialTimeout time.Duration
	// Counters, if set, receive the bytes relayed by every session.
	Counters *relay.Counters
	// DrainTimeout is how long live sessions may take to finish when Run's
	// context ends; new sessions are refused meanwhile. If zero, 30 s.
	DrainTimeout time.Duration

	// RenewFraction is the part of the agent certificate's lifetime
	// (NotAfter − NotBefore) left when the agent renews it: the agent asks
	// for a new certificate once NotAfter − now ≤ RenewFraction × lifetime.
	// It must be in [0, 1); if zero, 1/3.
	RenewFraction float64
	// RenewTimeout bounds the wait for the gateway's CertRenewalResponse. If
	// zero, 30 s.
	RenewTimeout time.Duration
	// RenewBackoffMin and RenewBackoffMax bound the delay before retrying a
	// failed renewal: it doubles from RenewBackoffMin with each consecutive
	// failure, up to RenewBackoffMax, jittered down by at most half.
	// RenewBackoffMin is also the least time between two successful
	// renewals, so that a gateway issuing certificates shorter than the
	// threshold, or a clock far ahead, cannot make the agent renew and
	// reconnect in a loop. If zero, 1 min and 1 h.
	RenewBackoffMin, RenewBackoffMax time.Duration
	// RenewCheckInterval is the longest the agent sleeps before comparing
	// the clock with the renewal time again, so that a jump of the wall
	// clock (suspend, NTP step) is noticed. If zero, 1 min.
	RenewCheckInterval time.Duration
	// Now is the clock used to decide when to renew. If nil, time.Now.
	Now func() time.Time

	// WatchInterval is how often agent.json (and the resolver
	// configuration, for domain detection) is checked for changes; a change
	// triggers Reload. If zero, 2 s; if negative, the files are not watched
	// and only Reload (SIGHUP) re-reads them on a live connection.
	WatchInterval time.Duration
	// ResolvConfPath is the resolver configuration read to auto-detect the
	// host's domain. If empty, /etc/resolv.conf.
	ResolvConfPath string
	// Hostname returns the host name, the fallback source of the detected
	// domain. If nil, os.Hostname.
	Hostname func() (string, error)
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
	def(&o.RenewTimeout, DefaultRenewTimeout)
	def(&o.RenewBackoffMin, DefaultRenewBackoffMin)
	def(&o.RenewBackoffMax, DefaultRenewBackoffMax)
	def(&o.RenewCheckInterval, DefaultRenewCheckInterval)
	if o.WatchInterval == 0 {
		o.WatchInterval = DefaultWatchInterval
	}
	if o.RenewFraction == 0 {
		o.RenewFraction = DefaultRenewFraction
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Logger == nil {
		o.Logger = hclog.NewNullLogger()
	}
	if o.Counters == nil {
		o.Counters = new(relay.Counters)
	}
	return o
}

// validate checks options already filled by withDefaults.
func (o Options) validate() error {
	if !(o.RenewFraction > 0 && o.RenewFraction < 1) { // also rejects NaN
		return fmt.Errorf("tunnel: RenewFraction %v is not in [0, 1)", o.RenewFraction)
	}
	if o.RenewBackoffMax < o.RenewBackoffMin {
		return fmt.Errorf("tunnel: RenewBackoffMax %v is shorter than RenewBackoffMin %v", o.RenewBackoffMax, o.RenewBackoffMin)
	}
	return o.QUIC.Validate()
}

// Agent keeps the tunnel up. Create it with New and call Run once; the other
// methods are safe for concurrent use, during Run and after.
type Agent struct {
	opts    Options
	log     hclog.Logger
	handler *session.Handler
	quic    *quic.Config

	reload chan struct{} // Reload's signal to the live connection

	reportOnce sync.Once // logs the UDP socket report once

	renewFailures atomic.Uint64 // failed renewal attempts since New

	mu        sync.Mutex
	epoch     uint64    // epoch of the routes last advertised
	current   *settings // settings of the live connection; nil while draining
	connected bool
	draining  bool // Run's context ended: no renewal reconnects any more
	// renewStreak counts consecutive failed renewals; renewRetryAt is the
	// earliest time of the next attempt (after a failure or a success).
	renewStreak  int
	renewRetryAt time.Time
}

// New returns an Agent for opts. It returns an error when an option is out
// of range (RenewFraction, RenewBackoffMin/Max, QUIC); it does not read the
// config directory (Run does).
func New(opts Options) (*Agent, error) {
	opts = opts.withDefaults()
	if err := opts.validate(); err != nil {
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

// RenewalFailures returns the number of failed certificate renewal attempts
// since New: refusals by the gateway, timeouts, unusable certificates and
// write errors. Each failure is also logged as a warning. The agent keeps
// running on its current certificate and retries with backoff. It is the
// agent's stand-in for a metric until the agent exports metrics.
func (a *Agent) RenewalFailures() uint64 { return a.renewFailures.Load() }

// Reload asks the agent to re-read its config now: changed routes are
// advertised on the live connection with epoch + 1 (no reconnect). Run
// also calls it when agent.json changes on disk (see WatchInterval).
func (a *Agent) Reload() {
	select {
	case a.reload <- struct{}{}:
	default:
	}
}

// Run connects and reconnects until ctx ends, then drains (see
// DrainTimeout), closes the tunnel with "shutdown" and returns nil. It
// returns an error at once only when the config directory holds no enrolled
// identity; every later failure is logged and retried with backoff. Run
// returns only after every goroutine it started has exited.
func (a *Agent) Run(ctx context.Context) error {
	if _, err := a.loadSettings(); errors.Is(err, ErrNotEnrolled) {
		return err
	}
	a.mu.Lock()
	a.draining = false
	a.mu.Unlock()
	a.handler.SetDraining(false)

	var wg sync.WaitGroup
	wctx, stopWatch := context.WithCancel(ctx)
	defer func() {
		stopWatch()
		wg.Wait()
	}()
	if a.opts.WatchInterval > 0 {
		wg.Go(func() { a.watch(wctx) })
	}

	attempt := 0
	for {
		started := time.Now()
		err := a.connectOnce(ctx)
		if ctx.Err() != nil {
			return nil
		}
		if errors.Is(err, errCertRenewed) {
			a.log.Info("reconnecting with the renewed certificate")
			attempt = 0
			continue
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

// loadSettings reads the config directory with the agent's detection
// options.
func (a *Agent) loadSettings() (*settings, error) {
	return loadSettings(a.opts.ConfigDir, detect.Options{ResolvConf: a.opts.ResolvConfPath, Hostname: a.opts.Hostname})
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
	set, err := a.loadSettings()
	if err != nil {
		return fmt.Errorf("config: %w", err)
	}
	if now := a.opts.Now(); now.After(set.cert.NotAfter) {
		a.log.Error("the agent certificate has expired; the gateway will refuse it: enroll the agent again",
			"not_after", set.cert.NotAfter, "now", now)
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
		transport.Close(conn, dataplane.CloseShutdown)
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
		transport.Close(conn, dataplane.CloseShutdown)
		return fmt.Errorf("route advertisement: %w", err)
	}
	log.Info("tunnel up", "agent_id", set.agentID, "epoch", epoch,
		"subnets", len(set.routes.Subnets), "domains", len(set.domains),
		"cert_not_after", set.cert.NotAfter, "renew_at", renewTime(set.cert, a.opts.RenewFraction))
	logDetection(log, set)

	// The connection's goroutines outlive ctx during a drain: they stop with
	// cctx, when the connection ends.
	cctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	defer cancel()
	answers := newRenewAnswers()
	var wg sync.WaitGroup
	wg.Go(func() { a.readControl(cctx, conn, ctrl, answers, log) })
	wg.Go(func() { a.pace(cctx, conn, w, log) })
	wg.Go(func() { a.acceptSessions(cctx, conn) })
	wg.Go(func() { a.renewLoop(cctx, conn, w, set, answers, log) })

	select {
	case <-ctx.Done():
		a.drain(conn, w, log)
		transport.Close(conn, dataplane.CloseShutdown)
		cancel()
		wg.Wait()
		log.Info("tunnel closed", "reason", dataplane.CloseShutdown)
		return ctx.Err()
	case <-conn.Context().Done():
	}
	cancel()
	wg.Wait()
	err = context.Cause(conn.Context())
	reason, remote, closed := transport.CloseReasonOf(err)
	switch {
	case closed && !remote && reason == dataplane.CloseCertRenewed:
		return errCertRenewed
	case closed && remote:
		switch reason {
		case dataplane.CloseAgentDeleted:
			log.Error("the gateway deleted this agent; enroll it again to reconnect")
		case dataplane.CloseAgentNotAccepted:
			log.Error("the gateway refused this agent's identity (deleted, re-enrolled elsewhere, or another CA)")
		case dataplane.CloseConnectionSuperseded:
			log.Warn("another connection with this agent's identity replaced this one; if this repeats, a copy of this config directory runs elsewhere (enroll each agent separately)")
		}
		return fmt.Errorf("gateway closed the tunnel: %s", reason)
	}
	return err
}

// logDetection logs the outcome of domain auto-detection for set.
func logDetection(log hclog.Logger, set *settings) {
	if set.detected != "" {
		log.Info("advertising the auto-detected domain", "domain", set.detected, "detected", set.detectNote)
	} else {
		log.Debug("no domain auto-detected", "reason", set.detectNote)
	}
}

// drain refuses new sessions, withdraws the agent's routes so the gateway
// routes elsewhere at once, and waits up to DrainTimeout for live sessions.
// Sessions stay refused afterwards: the caller closes the connection.
func (a *Agent) drain(conn *quic.Conn, w *dataplane.ControlWriter, log hclog.Logger) {
	a.handler.SetDraining(true)
	a.mu.Lock()
	a.draining = true
	a.mu.Unlock()
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
	timeout := time.NewTimer(a.opts.DrainTimeout)
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
			transport.Close(conn, dataplane.CloseShutdown)
			return
		}
	}
}

// applyReload re-reads the config; if the routes changed it returns the
// RouteAdvertise with epoch + 1 to send, else nil.
func (a *Agent) applyReload(log hclog.Logger) dataplane.ControlMessage {
	set, err := a.loadSettings()
	if err != nil {
		log.Warn("config reload failed; keeping the current routes", "error", err)
		return nil
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.current == nil {
		return nil // draining: the routes stay withdrawn
	}
	if set.endpoint != a.current.endpoint {
		log.Info("GatewayEndpoint changed; it takes effect at the next reconnect", "new_endpoint", set.endpoint)
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
	logDetection(log, set)
	return advertise(set, a.epoch)
}

// readControl reads the gateway's control messages until the stream ends,
// handing CertRenewalResponses to answers.
func (a *Agent) readControl(ctx context.Context, conn *quic.Conn, ctrl *quic.Stream, answers *renewAnswers, log hclog.Logger) {
	r := dataplane.NewControlReader(ctrl)
	for ctx.Err() == nil {
		msg, err := r.ReadControl()
		if err == nil {
			err = dataplane.CheckVersion(msg.ProtocolVersion())
		}
		if err != nil {
			switch class := dataplane.ClassifyControlError(err); {
			case class == dataplane.ControlBadVersion: // from CheckVersion: msg was read
				log.Warn("ignoring control message", "tag", msg.Tag(), "error", err)
				continue
			case class.Skip():
				log.Warn("skipping control message", "error", err)
				continue
			}
			// The connection's end reaches the stream read before the
			// connection's context: it is not a stream failure.
			if ctx.Err() == nil && conn.Context().Err() == nil && !transport.ConnectionClosed(err) {
				log.Warn("control stream failed; closing the tunnel", "error", err)
				transport.Close(conn, dataplane.CloseShutdown)
			}
			return
		}
		switch m := msg.(type) {
		case *dataplane.HeartbeatAck:
			rtt := time.Since(time.UnixMilli(int64(m.TimestampMs)))
			log.Trace("heartbeat acknowledged", "rtt", rtt)
		case *dataplane.CertRenewalResponse:
			resp := *m // the reader reuses m
			answers.put(&resp)
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
