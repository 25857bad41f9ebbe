// Package session serves the agent's side of a session stream (DESIGN.md §2,
// §3, §7): for every QUIC bidirectional stream the gateway opens, it reads
// one ConnectRequest, checks the protocol version, validates the target
// against the advertised routes, dials it, answers a ConnectResponse and
// relays bytes both ways until the session ends.
//
// # Target validation
//
// The advertised routes are the agent's security boundary, applied by
// package reach (see there for the rules): an IP target must lie in an
// advertised subnet; a host name covered by an advertised domain may resolve
// to any address; any other host name may reach only those of its addresses
// that lie in advertised subnets. Loopback, link-local, unspecified and
// multicast addresses, the cloud metadata addresses and the addresses of
// this host are refused unless an advertised subnet names them explicitly
// (127.0.0.0/8 or 127.0.0.1/32 open 127.0.0.1; 0.0.0.0/0 does not; an
// address of this host needs its /32). The check runs on the address
// actually being dialed, so DNS rebinding cannot escape it.
//
// # Refusal reasons
//
// A refused session gets a ConnectResponse Error whose reason is one of
// these (stable; tests assert them):
//
//	unsupported protocol version: 2
//	agent draining
//	invalid target "x": missing port        (see ParseTarget and TargetError)
//	target 10.0.0.9:22 is not in advertised subnets
//	target 127.0.0.1:22 is loopback and not explicitly advertised
//	    (also "link-local", "unspecified", "multicast",
//	    "the cloud metadata address", "an address of this host")
//	db.other.test resolves only to addresses outside advertised subnets
//	db.contoso.local resolves only to refused addresses: 127.0.0.1 is loopback and not explicitly advertised
//	cannot resolve db.contoso.local: no such host
//	dial db.other.test:22: could not reach 10.0.0.5; its other addresses are refused by the routes
//	dial 127.0.0.1:1: connection refused
//	dial 10.0.0.5:22: i/o timeout
//
// A stream whose ConnectRequest cannot be read (truncated, malformed, not
// sent within the read timeout) gets no answer: both directions are
// cancelled with relay.ErrorCodeReset.
package session

import (
	"context"
	"net"
	"net/netip"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/quic-go/quic-go"

	"github.com/outposthq/outpost/dataplane"
	"github.com/outposthq/outpost/dataplane/relay"
	"github.com/outposthq/outpost/reach"
)

// Defaults of Config (DESIGN.md §12).
const (
	// DefaultDialTimeout bounds resolving and connecting to a target.
	DefaultDialTimeout = reach.DefaultDialTimeout
	// DefaultReadTimeout bounds the wait for a stream's ConnectRequest.
	DefaultReadTimeout = 10 * time.Second
)

// responseTimeout bounds writing the ConnectResponse: a few bytes on a new
// stream, which only a peer that grants no flow-control credit can block.
const responseTimeout = 10 * time.Second

// ReasonDraining is the ConnectResponse Error reason of a session refused
// because the agent is draining.
const ReasonDraining = "agent draining"

// Config configures a Handler. The zero value is usable: no routes (every
// target refused), default timeouts, no logging, the system resolver, the
// addresses of this host refused unless advertised as /32.
type Config struct {
	// Routes are the initial routes; SetRoutes replaces them.
	Routes reach.Routes
	// DialTimeout bounds resolving and connecting to a target, Happy
	// Eyeballs attempts included. If zero or negative, 20 s.
	DialTimeout time.Duration
	// ReadTimeout bounds the wait for the ConnectRequest once the stream is
	// served. If zero or negative, 10 s.
	ReadTimeout time.Duration
	// Logger receives the handler's logs, under the name "session". If nil,
	// nothing is logged.
	Logger hclog.Logger
	// Counters, if not nil, receives the bytes relayed by every session
	// (shared, live totals). If nil, nothing is counted beyond each
	// session's log line.
	Counters *relay.Counters
	// Resolver resolves host-name targets. The routes are checked on every
	// address it returns, at connect time, so a resolver cannot widen what
	// sessions reach. If nil, net.DefaultResolver.
	Resolver *net.Resolver
	// OwnAddrs lists the addresses of this host, which sessions may reach
	// only when an advertised subnet names them as a /32 (see
	// reach.Table.WithOwnAddrs). It is called by New and by every SetRoutes,
	// so a changed address is picked up with the next routes; on error the
	// failure is logged and no address of this host is refused. If nil,
	// reach.InterfaceAddrs.
	OwnAddrs func() ([]netip.Addr, error)
}

// withDefaults returns a copy of c with zero values replaced by defaults.
func (c Config) withDefaults() Config {
	if c.DialTimeout <= 0 {
		c.DialTimeout = DefaultDialTimeout
	}
	if c.ReadTimeout <= 0 {
		c.ReadTimeout = DefaultReadTimeout
	}
	if c.Logger == nil {
		c.Logger = hclog.NewNullLogger()
	}
	if c.OwnAddrs == nil {
		c.OwnAddrs = reach.InterfaceAddrs
	}
	return c
}

// Handler serves session streams. Create it with New; the zero value must not
// be used. All its methods are safe for concurrent use; Serve is called once
// per stream, typically in a goroutine per stream that the caller tracks.
type Handler struct {
	cfg      Config // with defaults; cfg.Routes is not used after New
	log      hclog.Logger
	routes   atomic.Pointer[reach.Table]
	draining atomic.Bool
	active   atomic.Int64
	// dialer dials targets. Tests set its Control before any Serve, to
	// see an allowed address without sending a packet to it.
	dialer reach.Dialer
}

// New returns a Handler serving with cfg. Entries of cfg.Routes that
// Routes.Validate rejects are ignored (logged as a warning).
func New(cfg Config) *Handler {
	cfg = cfg.withDefaults()
	h := &Handler{
		cfg:    cfg,
		log:    cfg.Logger.Named("session"),
		dialer: reach.Dialer{Timeout: cfg.DialTimeout, Resolver: cfg.Resolver},
	}
	h.SetRoutes(cfg.Routes)
	return h
}

// SetRoutes replaces the routes. Sessions whose ConnectRequest arrives
// afterwards use the new routes; sessions already dialing or relaying are not
// affected. Entries reach.Routes.Validate rejects are ignored, which only
// narrows what sessions may reach; a warning is logged. The addresses of this
// host are listed again (Config.OwnAddrs). Safe concurrently with Serve.
func (h *Handler) SetRoutes(r reach.Routes) {
	if err := r.Validate(); err != nil {
		h.log.Warn("ignoring invalid route entries", "error", err)
	}
	own, err := h.cfg.OwnAddrs()
	if err != nil {
		h.log.Warn("cannot list the addresses of this host; sessions are not kept from reaching them", "error", err)
	}
	h.routes.Store(reach.Compile(r).WithOwnAddrs(own))
}

// SetDraining turns draining on or off. While draining, new sessions are
// answered with ConnectResponse Error "agent draining"; sessions already past
// their ConnectRequest go on.
func (h *Handler) SetDraining(on bool) { h.draining.Store(on) }

// Active returns the number of Serve calls in progress: sessions being set up
// or relayed, as Heartbeat reports them.
func (h *Handler) Active() int { return int(h.active.Load()) }

// Serve serves one session stream to its end: it reads the ConnectRequest,
// answers it and, on success, relays bytes between s and the target until
// both directions are done. It takes ownership of s and returns once the
// session is over, s is closed or cancelled and every goroutine it started
// has exited. The end of ctx aborts the session (both directions cancelled
// with relay.ErrorCodeCanceled, the target connection reset). Outcomes are
// logged; nothing is returned.
func (h *Handler) Serve(ctx context.Context, s *quic.Stream) {
	start := time.Now()
	h.active.Add(1)
	defer h.active.Add(-1)
	log := h.log.With("stream_id", int64(s.StreamID()))

	// The handshake (reading the request, resolving and dialing the
	// target) runs on a goroutine of its own that ends with it: the dial
	// grows a deep stack, which an idle session relayed on the same
	// goroutine would keep for its whole life.
	stop := cancelOnDone(ctx, s)
	shaken := make(chan struct{})
	var conn *net.TCPConn
	var req dataplane.ConnectRequest
	go func() {
		defer close(shaken)
		conn, req = h.handshake(ctx, s, log)
	}()
	<-shaken
	stop()
	if conn == nil {
		return
	}

	// A relayed session keeps its log fields, not a logger of its own.
	fields := []any{"stream_id", int64(s.StreamID()), "session_id", req.SessionID.String(), "target", logSafe(req.Target)}
	dialed := conn.RemoteAddr().String()
	h.log.Debug("session connected", append(fields, "dialed", dialed, "setup", time.Since(start))...)
	stats, err := relay.Relay(ctx, relay.StreamConn(s), relay.TCPConn(conn), relay.Options{Counters: h.cfg.Counters})
	args := []any{
		"dialed", dialed,
		"bytes_to_target", stats.AToB,
		"bytes_from_target", stats.BToA,
		"duration", time.Since(start),
	}
	args = append(fields, args...)
	switch {
	case err == nil:
		h.log.Info("session ended", append(args, "outcome", "closed")...)
	case ctx.Err() != nil:
		h.log.Info("session ended", append(args, "outcome", "canceled", "error", err)...)
	default:
		h.log.Info("session ended", append(args, "outcome", "reset", "error", err)...)
	}
}

// handshake reads the ConnectRequest, validates and dials the target and
// answers. It returns the target connection once Success is written, and
// the request; nil when the session is over (refused, failed or aborted),
// after answering or cancelling s.
func (h *Handler) handshake(ctx context.Context, s *quic.Stream, log hclog.Logger) (*net.TCPConn, dataplane.ConnectRequest) {
	_ = s.SetReadDeadline(time.Now().Add(h.cfg.ReadTimeout)) // quic-go's never fails
	req, err := dataplane.NewSessionReader(s).ReadConnectRequest()
	_ = s.SetReadDeadline(time.Time{})
	if err != nil {
		if ctx.Err() != nil {
			log.Debug("session aborted before its ConnectRequest", "cause", context.Cause(ctx))
			return nil, req
		}
		log.Warn("cannot read ConnectRequest", "error", err)
		cancelStream(s, relay.ErrorCodeReset)
		return nil, req
	}
	log = log.With("session_id", req.SessionID.String(), "target", logSafe(req.Target))

	if err := dataplane.CheckVersion(req.Version); err != nil {
		h.refuse(s, log, err.Error())
		return nil, req
	}
	if h.draining.Load() {
		h.refuse(s, log, ReasonDraining)
		return nil, req
	}
	t, err := dataplane.ParseTarget(req.Target)
	if err != nil {
		h.refuse(s, log, err.Error())
		return nil, req
	}
	conn, err := h.dialer.Dial(ctx, h.routes.Load(), t)
	if err != nil {
		if ctx.Err() != nil {
			log.Debug("session aborted while dialing", "cause", context.Cause(ctx))
			return nil, req
		}
		h.refuse(s, log, err.Error())
		return nil, req
	}
	if err := writeResponse(s, dataplane.ConnectResponse{Version: dataplane.ProtocolVersion, Result: dataplane.ResultSuccess}); err != nil {
		relay.TCPConn(conn).Abort(relay.ErrorCodeReset)
		cancelStream(s, relay.ErrorCodeReset)
		log.Debug("cannot write ConnectResponse", "error", err)
		return nil, req
	}
	return conn, req
}

// refuse answers a ConnectResponse Error with reason and ends the stream.
func (h *Handler) refuse(s *quic.Stream, log hclog.Logger, reason string) {
	log.Info("session refused", "reason", reason)
	err := writeResponse(s, dataplane.ConnectResponse{Version: dataplane.ProtocolVersion, Result: dataplane.ResultError, Reason: reason})
	if err != nil {
		log.Debug("cannot write ConnectResponse", "error", err)
		cancelStream(s, relay.ErrorCodeReset)
		return
	}
	s.CancelRead(relay.ErrorCodeNoError) // nothing more is expected from the gateway
	_ = s.Close()                        // FIN after the response; fails only after a cancel
}

// writeResponse writes one framed ConnectResponse within responseTimeout.
func writeResponse(s *quic.Stream, m dataplane.ConnectResponse) error {
	frame, err := m.AppendFrame(make([]byte, 0, 64))
	if err != nil {
		return err
	}
	_ = s.SetWriteDeadline(time.Now().Add(responseTimeout))
	_, err = s.Write(frame)
	_ = s.SetWriteDeadline(time.Time{})
	return err
}

// logSafe returns s as is when it is printable ASCII without spaces (every
// valid target is) and quoted otherwise, so that a target cannot forge log
// lines or carry terminal escapes.
func logSafe(s string) string {
	for i := 0; i < len(s); i++ {
		if s[i] <= ' ' || s[i] > '~' {
			return strconv.Quote(s)
		}
	}
	return s
}

// cancelStream aborts both directions of s with code.
func cancelStream(s *quic.Stream, code quic.StreamErrorCode) {
	s.CancelRead(code)
	s.CancelWrite(code)
}

// cancelOnDone cancels s with relay.ErrorCodeCanceled when ctx ends, which
// makes a blocked read, write or dial of the handshake return. The returned
// stop ends the watch and waits for a cancellation in progress, so no
// goroutine outlives it.
func cancelOnDone(ctx context.Context, s *quic.Stream) (stop func()) {
	done := make(chan struct{})
	stopWatch := context.AfterFunc(ctx, func() {
		defer close(done)
		cancelStream(s, relay.ErrorCodeCanceled)
	})
	return func() {
		if !stopWatch() {
			<-done
		}
	}
}
