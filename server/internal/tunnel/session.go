package tunnel

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/quic-go/quic-go"

	"github.com/outposthq/outpost/dataplane"
	"github.com/outposthq/outpost/dataplane/relay"
	"github.com/outposthq/outpost/server/internal/registry"
)

// Errors of OpenSession, wrapped in an *AgentError.
var (
	// ErrNotConnected: the agent has no live tunnel.
	ErrNotConnected = errors.New("agent is not connected")
	// ErrSessionLimit: the agent carries its maximum of sessions.
	ErrSessionLimit = errors.New("agent session limit reached")
	// ErrRefused: the agent answered ConnectResponse Error; Reason says why.
	ErrRefused = errors.New("agent refused the session")
	// ErrConnectTimeout: no ConnectResponse within the connect timeout.
	ErrConnectTimeout = errors.New("agent did not answer in time")
	// ErrUnresponsive: the agent's connection went quiet (RequestLocal).
	ErrUnresponsive = errors.New("agent is unresponsive")
)

// AgentError is why a session could not be opened through an agent.
type AgentError struct {
	AgentID string
	// Err is one of the Err* values above, or a transport error.
	Err error
	// Reason is the agent's own text for ErrRefused, else a description.
	Reason string
}

func (e *AgentError) Error() string {
	if errors.Is(e.Err, ErrRefused) {
		return "agent refused connection: " + e.Reason
	}
	if e.Reason != "" {
		return e.Err.Error() + ": " + e.Reason
	}
	return e.Err.Error()
}

func (e *AgentError) Unwrap() error { return e.Err }

// Session is an open session stream to a target through an agent. Its Read,
// Write, CloseWrite, Abort and Close map onto the QUIC stream (it is a
// relay.Endpoint); Close or Abort releases the agent's session slot.
type Session struct {
	*relay.StreamEndpoint
	AgentID string
	ID      dataplane.SessionID
	// Replica is the id of the replica the session runs through, "" for
	// a session on an agent connection of this gateway.
	Replica string
	once    sync.Once
	release func() // frees the session slot (local) or the peer link's hold
}

// Close ends the stream gracefully and frees the session slot.
func (s *Session) Close() error {
	err := s.StreamEndpoint.Close()
	s.done()
	return err
}

// Abort resets the stream and frees the session slot.
func (s *Session) Abort(code relay.ErrorCode) {
	s.StreamEndpoint.Abort(code)
	s.done()
}

func (s *Session) done() { s.once.Do(s.release) }

// OpenSession opens a session to target through the agent: a new stream, a
// ConnectRequest, and the agent's ConnectResponse, all within the connect
// timeout (or ctx, if it ends sooner). Failures are *AgentError. It is
// Request followed by Answer.
func (s *Server) OpenSession(ctx context.Context, agentID string, id dataplane.SessionID, target string) (*Session, error) {
	p, err := s.Request(ctx, agentID, id, target)
	if err != nil {
		return nil, err
	}
	return p.Answer(ctx)
}

// Pending is a session whose ConnectRequest was sent to an agent and whose
// ConnectResponse is awaited: the agent dials the target meanwhile, which may
// take up to its dial timeout (20 s). Heard tells apart an agent that is
// alive and took the request from one that is gone, without any message a
// v1 agent does not know. Answer must be called exactly once. Heard and RTT
// are safe for concurrent use with Answer.
type Pending struct {
	s        *Server
	e        *registry.Entry // the agent's connection; nil through a peer
	agentID  string
	release  func() // frees what the opening holds: the session slot, or the peer link's hold
	remote   *RemoteStream
	heard    atomic.Bool // through a peer: the replica said the agent acknowledged the request
	conn     *quic.Conn
	stream   *quic.Stream
	ep       *relay.StreamEndpoint
	id       dataplane.SessionID
	deadline time.Time // of the whole opening, from the connect timeout
	mark     uint64    // packets received on conn before the request was sent
}

// Request opens a stream to the agent and sends the ConnectRequest, within
// the connect timeout (or ctx, if it ends sooner). It returns as soon as the
// request is written; Answer waits for the agent's response. An agent
// connected to this gateway is always used directly; one that is not is
// reached through another replica that holds it (Config.Remote), if any.
// Failures are *AgentError; on failure nothing is left open.
func (s *Server) Request(ctx context.Context, agentID string, id dataplane.SessionID, target string) (*Pending, error) {
	if _, ok := s.reg.Lookup(agentID); !ok && s.cfg.Remote != nil {
		return s.requestRemote(ctx, agentID, id, target)
	}
	return s.requestLocal(ctx, agentID, id, target)
}

// RequestLocal is Request through this gateway's own connection to the
// agent only, never through another replica: what a replica does for a
// peer that forwards a session to it. Since the peer chose this replica
// without knowing how its connection to the agent fares, an agent that
// this gateway marks unresponsive is refused at once (ErrUnresponsive), so
// that the peer moves on to another replica holding the agent.
func (s *Server) RequestLocal(ctx context.Context, agentID string, id dataplane.SessionID, target string) (*Pending, error) {
	if e, ok := s.reg.Lookup(agentID); ok {
		if st := s.reg.Status(e); st != registry.Online {
			return nil, &AgentError{AgentID: agentID, Err: ErrUnresponsive, Reason: "its connection to this gateway is " + st.String()}
		}
	}
	return s.requestLocal(ctx, agentID, id, target)
}

// requestLocal is Request through this gateway's own connection.
func (s *Server) requestLocal(ctx context.Context, agentID string, id dataplane.SessionID, target string) (*Pending, error) {
	e, ok := s.reg.Lookup(agentID)
	if !ok {
		return nil, &AgentError{AgentID: agentID, Err: ErrNotConnected}
	}
	if !e.AcquireSession(s.cfg.MaxSessionsPerAgent) {
		return nil, &AgentError{AgentID: agentID, Err: ErrSessionLimit, Reason: fmt.Sprintf("%d sessions open", s.cfg.MaxSessionsPerAgent)}
	}
	p, err := s.request(ctx, e, id, target)
	if err != nil {
		e.ReleaseSession()
		return nil, err
	}
	return p, nil
}

func (s *Server) request(ctx context.Context, e *registry.Entry, id dataplane.SessionID, target string) (*Pending, error) {
	req := dataplane.ConnectRequest{Version: dataplane.ProtocolVersion, SessionID: id, Target: target}
	frame, err := req.AppendFrame(nil)
	if err != nil {
		return nil, &AgentError{AgentID: e.AgentID, Err: err}
	}
	p := &Pending{s: s, e: e, agentID: e.AgentID, release: e.ReleaseSession, conn: e.Conn.(*agentConn).q, id: id,
		deadline: time.Now().Add(s.cfg.ConnectTimeout)}
	octx, cancel := context.WithDeadline(ctx, p.deadline)
	defer cancel()
	p.stream, err = p.conn.OpenStreamSync(octx)
	if err != nil {
		if timedOut(ctx, err) {
			return nil, p.fail(ErrConnectTimeout, "no stream credit from the agent")
		}
		return nil, p.fail(err, "")
	}
	p.ep = relay.StreamConn(p.stream)
	p.mark = p.conn.ConnectionStats().PacketsReceived
	err = p.within(ctx, p.stream.SetWriteDeadline, func() error {
		_, err := p.stream.Write(frame)
		return err
	})
	if err != nil {
		p.ep.Abort(relay.ErrorCodeCanceled)
		return nil, p.failure(ctx, err)
	}
	return p, nil
}

// within runs op, which blocks on the stream, under the opening's deadline
// set with setDeadline; ctx ending interrupts it too.
func (p *Pending) within(ctx context.Context, setDeadline func(time.Time) error, op func() error) error {
	_ = setDeadline(p.deadline)
	stop := context.AfterFunc(ctx, func() { _ = setDeadline(time.Now()) })
	err := op()
	stop()
	return err
}

// Send writes early, the client's first bytes, on the stream right after
// the ConnectRequest, before the agent's answer (the optimistic first
// flight, DESIGN.md §9): the stream is ordered and an agent reads exactly one
// framed message before it relays, so the bytes wait in the stream while
// the agent dials and are dropped with the stream if it refuses — they reach
// the target only through an agent that accepted. It is bounded by the
// opening's deadline and ctx, and leaves no write deadline on the stream. It
// may run concurrently with Answer; the caller must not let anything else
// write to the stream before it returns. A failure is an *AgentError.
func (p *Pending) Send(ctx context.Context, early []byte) error {
	err := p.within(ctx, p.stream.SetWriteDeadline, func() error {
		_, err := p.stream.Write(early)
		return err
	})
	_ = p.stream.SetWriteDeadline(time.Time{})
	if err != nil {
		return p.failure(ctx, err)
	}
	return nil
}

// Heard reports whether any packet arrived on the agent's connection since
// the ConnectRequest was sent: an agent that is alive acknowledges the
// request's packet within a round trip, whether or not it has answered yet.
// Through another replica, whether that replica said so of its own
// connection to the agent (while Answer waits).
func (p *Pending) Heard() bool {
	if p.remote != nil {
		return p.heard.Load()
	}
	return p.conn.ConnectionStats().PacketsReceived > p.mark
}

// RTT is the smoothed round-trip time of the agent's connection (or of the
// peer link): Heard can only be true about one RTT after the request was
// sent.
func (p *Pending) RTT() time.Duration { return p.conn.ConnectionStats().SmoothedRTT }

// Answer waits for the agent's ConnectResponse, until the connect timeout
// counted from Request (or ctx, if it ends sooner). On Success it returns the
// open session; otherwise an *AgentError (ErrRefused with the agent's reason,
// ErrConnectTimeout, the cause of ctx, or a transport error), and the stream
// and the session slot are released. Any answer counts as the agent being
// heard from (registry.Registry.Touch).
func (p *Pending) Answer(ctx context.Context) (*Session, error) {
	var resp dataplane.ConnectResponse
	err := p.within(ctx, p.stream.SetReadDeadline, func() error {
		if p.remote != nil {
			if err := p.remote.AwaitHeard(); err != nil {
				return err
			}
			p.heard.Store(true)
		}
		var err error
		resp, err = readResponse(p.stream)
		return err
	})
	if err != nil {
		p.ep.Abort(relay.ErrorCodeCanceled)
		p.release()
		return nil, p.failure(ctx, err)
	}
	if p.e != nil {
		p.s.reg.Touch(p.e)
	}
	if resp.Result != dataplane.ResultSuccess {
		p.ep.Abort(relay.ErrorCodeNoError)
		p.release()
		return nil, p.fail(ErrRefused, resp.Reason)
	}
	_ = p.stream.SetDeadline(time.Time{})
	return p.session(), nil
}

// Detach hands the opened stream over as it is, instead of Answer: the
// agent's ConnectResponse is left unread on it, for a caller that relays
// the stream byte for byte (a replica serving a peer's forwarded session).
// Closing or aborting the Session frees the session slot. Use either Answer
// or Detach, once.
func (p *Pending) Detach() *Session {
	_ = p.stream.SetDeadline(time.Time{})
	return p.session()
}

func (p *Pending) session() *Session {
	s := &Session{StreamEndpoint: p.ep, AgentID: p.agentID, ID: p.id, release: p.release}
	if p.remote != nil {
		s.Replica = p.remote.Replica
	}
	return s
}

func (p *Pending) fail(err error, reason string) error {
	if p.remote != nil && err != ErrRefused {
		reason = strings.TrimSuffix("through replica "+p.remote.ReplicaName+": "+reason, ": ")
	}
	return &AgentError{AgentID: p.agentID, Err: err, Reason: reason}
}

// failure classifies err, from a stream operation of the opening.
func (p *Pending) failure(ctx context.Context, err error) error {
	switch {
	case ctx.Err() != nil:
		return p.fail(context.Cause(ctx), "")
	case timedOut(ctx, err):
		return p.fail(ErrConnectTimeout, fmt.Sprintf("no ConnectResponse within %v", p.s.cfg.ConnectTimeout))
	}
	return p.fail(err, "")
}

// timedOut reports whether err is the opening's own deadline, not ctx's.
func timedOut(ctx context.Context, err error) bool {
	return errors.Is(err, os.ErrDeadlineExceeded) || errors.Is(err, context.DeadlineExceeded) && ctx.Err() == nil
}

// readResponse reads the ConnectResponse and checks its version.
func readResponse(stream io.Reader) (dataplane.ConnectResponse, error) {
	resp, err := dataplane.NewSessionReader(stream).ReadConnectResponse()
	if err != nil {
		return resp, err
	}
	if err := dataplane.CheckVersion(resp.Version); err != nil {
		return resp, err
	}
	return resp, nil
}
