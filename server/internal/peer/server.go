package peer

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"sync"
	"time"

	"github.com/google/uuid"
	"github.com/hashicorp/go-hclog"
	"github.com/quic-go/quic-go"

	"github.com/outposthq/outpost/dataplane"
	"github.com/outposthq/outpost/dataplane/relay"
	"github.com/outposthq/outpost/server/internal/tunnel"
)

// Defaults of ServerConfig and ClientConfig.
const (
	// DefaultFrameTimeout bounds reading a stream's Forward and
	// ConnectRequest, and writing its Status.
	DefaultFrameTimeout = 10 * time.Second
	// DefaultIdleTimeout is how long a dialed link may carry no session
	// before it is closed.
	DefaultIdleTimeout = time.Minute
	// DefaultStatusTimeout is how long the forwarding side waits for a
	// replica's first answer (Accepted or Refused, sent once the replica
	// opened the agent's stream, so within a round trip when it lives)
	// before it moves on to the next replica holding the agent.
	DefaultStatusTimeout = time.Second
	// suspectFor is how long a replica that did not answer in time is tried
	// after the others.
	suspectFor = 30 * time.Second
)

// Application error codes of peer connections.
const (
	// closeShutdown: the replica stops.
	closeShutdown quic.ApplicationErrorCode = 0x0
	// closeIdle: no session used the link for the idle timeout.
	closeIdle quic.ApplicationErrorCode = 0x1
)

// ServerConfig configures a Server. The zero value is usable.
type ServerConfig struct {
	// FrameTimeout bounds reading the forwarded frames of a stream. If
	// zero, DefaultFrameTimeout.
	FrameTimeout time.Duration
	// Logger may be nil.
	Logger hclog.Logger
}

// Server serves the peer connections other replicas open to this one
// (tunnel.PeerServer): it passes each forwarded session to the agent's
// connection here. Safe for concurrent use.
type Server struct {
	cfg ServerConfig
	log hclog.Logger
}

// NewServer returns a Server.
func NewServer(cfg ServerConfig) *Server {
	if cfg.FrameTimeout <= 0 {
		cfg.FrameTimeout = DefaultFrameTimeout
	}
	if cfg.Logger == nil {
		cfg.Logger = hclog.NewNullLogger()
	}
	return &Server{cfg: cfg, log: cfg.Logger}
}

// ServeConn serves the streams of conn, a connection whose peer
// certificate the handshake verified, passing the sessions on through
// local, until conn or ctx ends; then it closes conn and returns once every
// stream's relay has ended.
func (s *Server) ServeConn(ctx context.Context, conn *quic.Conn, local tunnel.LocalOpener) {
	log := s.log.With("remote", conn.RemoteAddr().String())
	if certs := conn.ConnectionState().TLS.PeerCertificates; len(certs) > 0 {
		log = log.With("replica", certURI(certs[0].URIs))
	}
	log.Debug("peer connected")
	stop := context.AfterFunc(ctx, func() { _ = conn.CloseWithError(closeShutdown, "shutdown") })
	defer stop()
	var wg sync.WaitGroup
	for {
		st, err := conn.AcceptStream(ctx)
		if err != nil {
			break
		}
		wg.Go(func() { s.serveStream(ctx, st, local, log) })
	}
	_ = conn.CloseWithError(closeShutdown, "shutdown")
	wg.Wait()
	log.Debug("peer disconnected", "reason", context.Cause(conn.Context()))
}

// serveStream passes one forwarded session on, or refuses it.
func (s *Server) serveStream(ctx context.Context, st *quic.Stream, local tunnel.LocalOpener, log hclog.Logger) {
	ep := relay.StreamConn(st)
	_ = st.SetDeadline(time.Now().Add(s.cfg.FrameTimeout))
	fwd, err := ReadForward(st)
	if err != nil {
		log.Debug("bad peer stream", "error", err)
		s.refuse(st, ep, CodeBadRequest, err.Error())
		return
	}
	agentID := uuid.UUID(fwd.AgentID).String()
	req, err := dataplane.NewSessionReader(st).ReadConnectRequest()
	if err == nil {
		err = dataplane.CheckVersion(req.Version)
	}
	if err == nil && req.SessionID != fwd.SessionID {
		err = errors.New("the ConnectRequest's session id differs from the Forward's")
	}
	if err != nil {
		log.Debug("bad forwarded request", "agent_id", agentID, "error", err)
		s.refuse(st, ep, CodeBadRequest, err.Error())
		return
	}
	p, err := local.RequestLocal(ctx, agentID, req.SessionID, req.Target)
	if err != nil {
		code := CodeUnavailable
		switch {
		case errors.Is(err, tunnel.ErrNotConnected):
			code = CodeNotHere
		case errors.Is(err, tunnel.ErrSessionLimit):
			code = CodeSessionLimit
		}
		reason := err.Error()
		if ae := (*tunnel.AgentError)(nil); code != CodeUnavailable && errors.As(err, &ae) {
			reason = ae.Reason // the code says the condition, the forwarding side knows the agent
		}
		s.refuse(st, ep, code, reason)
		return
	}
	sess := p.Detach()
	accepted := Status{Version: ProtocolVersion}
	if _, err := st.Write(accepted.AppendFrame(nil)); err != nil {
		sess.Abort(relay.ErrorCodeCanceled)
		ep.Abort(relay.ErrorCodeCanceled)
		return
	}
	_ = st.SetDeadline(time.Time{})
	// Heard goes to the forwarding replica once the agent acknowledged
	// the request, and before any of the agent's bytes: whichever comes
	// first, the watch or the first write towards the peer, sends it.
	heard := sync.OnceValue(func() error {
		h := Status{Version: ProtocolVersion, Heard: true}
		_, err := st.Write(h.AppendFrame(nil))
		return err
	})
	done := make(chan struct{})
	var watch sync.WaitGroup
	watch.Go(func() { watchHeard(p, st.Context(), done, heard) })
	stats, err := relay.Relay(ctx, &heardFirst{StreamEndpoint: ep, heard: heard}, sess, relay.Options{})
	close(done)
	watch.Wait()
	log.Trace("forwarded session ended", "agent_id", agentID, "session_id", req.SessionID,
		"to_agent", stats.AToB, "from_agent", stats.BToA, "error", err)
}

// heardPoll is how often a forwarded session checks whether its agent has
// acknowledged the request: QUIC says when packets arrive, not which.
const heardPoll = 2 * time.Millisecond

// watchHeard calls heard once p's agent showed a sign of life after the
// request (tunnel.Pending.Heard), unless done or stream ends first.
func watchHeard(p *tunnel.Pending, stream context.Context, done <-chan struct{}, heard func() error) {
	t := time.NewTicker(heardPoll)
	defer t.Stop()
	for !p.Heard() {
		select {
		case <-t.C:
		case <-done:
			return
		case <-stream.Done():
			return
		}
	}
	_ = heard() // a failed write fails the relay's next one too
}

// heardFirst is the peer's end of a forwarded session: its first write or
// half-close sends Heard before the agent's bytes (any byte from the agent
// means it was heard).
type heardFirst struct {
	*relay.StreamEndpoint
	heard func() error
}

func (h *heardFirst) Write(p []byte) (int, error) {
	if err := h.heard(); err != nil {
		return 0, err
	}
	return h.StreamEndpoint.Write(p)
}

func (h *heardFirst) CloseWrite() error {
	if err := h.heard(); err != nil {
		return err
	}
	return h.StreamEndpoint.CloseWrite()
}

// refuse answers Refused with code and reason, then closes the stream.
func (s *Server) refuse(st *quic.Stream, ep *relay.StreamEndpoint, code Code, reason string) {
	status := Status{Version: ProtocolVersion, Refused: true, Code: code, Reason: reason}
	if _, err := st.Write(status.AppendFrame(nil)); err != nil {
		ep.Abort(relay.ErrorCodeCanceled)
		return
	}
	st.CancelRead(relay.ErrorCodeNoError)
	_ = st.Close()
}

// certURI is the first URI SAN, for logs.
func certURI(uris []*url.URL) string {
	if len(uris) == 0 {
		return ""
	}
	return fmt.Sprint(uris[0])
}
