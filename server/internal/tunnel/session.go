package tunnel

import (
	"context"
	"errors"
	"fmt"
	"os"
	"sync"
	"time"

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
	release sync.Once
	entry   *registry.Entry
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

func (s *Session) done() { s.release.Do(s.entry.ReleaseSession) }

// OpenSession opens a session to target through the agent: a new stream, a
// ConnectRequest, and the agent's ConnectResponse, all within the connect
// timeout (or ctx, if it ends sooner). Failures are *AgentError.
func (s *Server) OpenSession(ctx context.Context, agentID string, id dataplane.SessionID, target string) (*Session, error) {
	e, ok := s.reg.Lookup(agentID)
	if !ok {
		return nil, &AgentError{AgentID: agentID, Err: ErrNotConnected}
	}
	if !e.AcquireSession(s.cfg.MaxSessionsPerAgent) {
		return nil, &AgentError{AgentID: agentID, Err: ErrSessionLimit, Reason: fmt.Sprintf("%d sessions open", s.cfg.MaxSessionsPerAgent)}
	}
	sess, err := s.openStream(ctx, e, id, target)
	if err != nil {
		e.ReleaseSession()
		return nil, err
	}
	return sess, nil
}

func (s *Server) openStream(ctx context.Context, e *registry.Entry, id dataplane.SessionID, target string) (*Session, error) {
	fail := func(err error, reason string) error {
		return &AgentError{AgentID: e.AgentID, Err: err, Reason: reason}
	}
	req := dataplane.ConnectRequest{Version: dataplane.ProtocolVersion, SessionID: id, Target: target}
	frame, err := req.AppendFrame(nil)
	if err != nil {
		return nil, fail(err, "")
	}
	deadline := time.Now().Add(s.cfg.ConnectTimeout)
	octx, cancel := context.WithDeadline(ctx, deadline)
	defer cancel()
	timedOut := func(err error) bool {
		return errors.Is(err, os.ErrDeadlineExceeded) || errors.Is(err, context.DeadlineExceeded) && ctx.Err() == nil
	}
	conn := e.Conn.(*agentConn).q
	stream, err := conn.OpenStreamSync(octx)
	if err != nil {
		if timedOut(err) {
			return nil, fail(ErrConnectTimeout, "no stream credit from the agent")
		}
		return nil, fail(err, "")
	}
	ep := relay.StreamConn(stream)
	// The caller's cancellation interrupts the wait too.
	_ = stream.SetDeadline(deadline)
	stop := context.AfterFunc(ctx, func() { _ = stream.SetDeadline(time.Now()) })
	resp, err := s.exchange(stream, frame)
	stop()
	if err != nil {
		ep.Abort(relay.ErrorCodeCanceled)
		switch {
		case ctx.Err() != nil:
			return nil, fail(context.Cause(ctx), "")
		case timedOut(err):
			return nil, fail(ErrConnectTimeout, fmt.Sprintf("no ConnectResponse within %v", s.cfg.ConnectTimeout))
		}
		return nil, fail(err, "")
	}
	if resp.Result != dataplane.ResultSuccess {
		ep.Abort(relay.ErrorCodeNoError)
		return nil, fail(ErrRefused, resp.Reason)
	}
	_ = stream.SetDeadline(time.Time{})
	return &Session{StreamEndpoint: ep, AgentID: e.AgentID, ID: id, entry: e}, nil
}

// exchange writes the ConnectRequest frame and reads the ConnectResponse.
func (s *Server) exchange(stream interface {
	Write([]byte) (int, error)
	Read([]byte) (int, error)
}, frame []byte) (dataplane.ConnectResponse, error) {
	if _, err := stream.Write(frame); err != nil {
		return dataplane.ConnectResponse{}, err
	}
	resp, err := dataplane.NewSessionReader(stream).ReadConnectResponse()
	if err != nil {
		return resp, err
	}
	if err := dataplane.CheckVersion(resp.Version); err != nil {
		return resp, err
	}
	return resp, nil
}
