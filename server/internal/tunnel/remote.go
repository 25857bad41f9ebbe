package tunnel

import (
	"context"
	"fmt"
	"time"

	"github.com/quic-go/quic-go"

	"github.com/outposthq/outpost/dataplane"
	"github.com/outposthq/outpost/dataplane/relay"
)

// Remote reaches agents connected to other gateway replicas of the cluster
// (server/internal/peer): Request uses it for an agent that has no
// connection to this gateway. Implementations are safe for concurrent use.
type Remote interface {
	// Forward opens a stream to a replica that holds agentID, writes on it
	// what that replica needs to pass the session on, then request (the
	// framed ConnectRequest), and returns once the replica has passed the
	// request to the agent, all within ctx; the agent's ConnectResponse
	// follows on the stream. A failure is an *AgentError (ErrNotConnected
	// when no replica holds the agent or none could be reached or took
	// the session, ErrSessionLimit when every one was at the agent's
	// limit, with the reasons), and leaves nothing open.
	Forward(ctx context.Context, agentID string, id dataplane.SessionID, request []byte) (*RemoteStream, error)
}

// RemoteStream is a session stream through another replica, as
// Remote.Forward opened it.
type RemoteStream struct {
	// Conn is the peer link's connection, Stream the session's stream on it.
	Conn   *quic.Conn
	Stream *quic.Stream
	// Replica is the replica's id (Session.Replica); ReplicaName names it
	// in the reasons a client reads.
	Replica, ReplicaName string
	// Done is called once when the session ends or fails to open: the
	// peer link may close when no session uses it.
	Done func()
	// AwaitHeard reads the replica's word that the agent acknowledged the
	// request, which comes before the agent's ConnectResponse; the
	// stream's read deadline bounds it. Until it returns nil the agent
	// shows no sign of life (Pending.Heard).
	AwaitHeard func() error
}

// requestRemote is Request through another replica that holds the agent.
// The session counts against the agent's session limit on that replica,
// not here.
func (s *Server) requestRemote(ctx context.Context, agentID string, id dataplane.SessionID, target string) (*Pending, error) {
	req := dataplane.ConnectRequest{Version: dataplane.ProtocolVersion, SessionID: id, Target: target}
	frame, err := req.AppendFrame(nil)
	if err != nil {
		return nil, &AgentError{AgentID: agentID, Err: err}
	}
	deadline := time.Now().Add(s.cfg.ConnectTimeout)
	octx, cancel := context.WithDeadline(ctx, deadline)
	defer cancel()
	mark := time.Now()
	rs, err := s.cfg.Remote.Forward(octx, agentID, id, frame)
	if err != nil {
		if ctx.Err() == nil && octx.Err() != nil {
			return nil, &AgentError{AgentID: agentID, Err: ErrConnectTimeout,
				Reason: fmt.Sprintf("no replica holding the agent took the session within %v", s.cfg.ConnectTimeout)}
		}
		return nil, err
	}
	s.log.Trace("session forwarded to a peer replica", "agent_id", agentID, "replica", rs.ReplicaName, "took", time.Since(mark))
	return &Pending{
		s: s, agentID: agentID, release: rs.Done, remote: rs,
		conn: rs.Conn, stream: rs.Stream, ep: relay.StreamConn(rs.Stream), id: id,
		deadline: deadline,
	}, nil
}
