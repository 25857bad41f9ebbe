package broker

import (
	"context"
	"errors"

	"github.com/outposthq/outpost/dataplane/relay"
)

// Limit is the cause of a session ended on purpose by a limit: the context
// passed to Serve (or the one Serve derives for MaxDuration) is cancelled
// with it as the cause. The client is then closed with Reason instead of
// being cut without one, and the audit records Outcome and Reason.
type Limit struct {
	// Outcome is the audit outcome ("max_duration", "idle_timeout", …).
	Outcome string
	// Reason is what the client reads and the audit records.
	Reason string
}

func (l *Limit) Error() string { return l.Reason }

// The limits the gateway applies to sessions.
var (
	// ErrMaxDuration ends a session that reached its maximum duration
	// (Request.MaxDuration).
	ErrMaxDuration = &Limit{Outcome: OutcomeMaxDuration, Reason: "maximum session duration reached"}
	// ErrIdle ends a session that carried no byte either way for the
	// entry's idle timeout.
	ErrIdle = &Limit{Outcome: "idle_timeout", Reason: "the session was idle for too long"}
	// ErrClientGone ends a session whose client stopped answering
	// keepalive pings.
	ErrClientGone = &Limit{Outcome: "client_gone", Reason: "the client stopped answering keepalives"}
	// ErrClientClosed ends a session whose client closed it while the
	// target still had data for it: nothing reads that data any more. It
	// is a normal ending, not a failure.
	ErrClientClosed = &Limit{Outcome: "closed", Reason: "the client closed the session"}
)

// OutcomeMaxDuration is the audit outcome of a session ended by
// ErrMaxDuration (the others are "ok", "error", "connect_failed",
// OutcomeReset, and the Outcome of each Limit).
const OutcomeMaxDuration = "max_duration"

// OutcomeReset is the audit outcome of a session that ended because the
// client or the target reset its connection (relay.PeerReset), as some
// programs do after a complete run: not a failure of the gateway.
const OutcomeReset = "reset"

// limitOf returns the Limit that ended ctx, if a Limit did.
func limitOf(ctx context.Context) (*Limit, bool) {
	var l *Limit
	ok := errors.As(context.Cause(ctx), &l)
	return l, ok
}

// limited is the client's stream of a session. The relay aborts both ends
// when ctx ends; when a Limit ended it, the client is closed with the
// limit's reason instead of being cut without one.
type limited struct {
	ClientStream
	ctx context.Context
}

// Abort tells the client the limit's reason when a Limit ends the session,
// and otherwise aborts it.
func (c limited) Abort(code relay.ErrorCode) {
	if l, ok := limitOf(c.ctx); ok {
		c.Fail(l.Reason)
		return
	}
	c.ClientStream.Abort(code)
}

// WaitRead waits for the client's data without a buffer, when its stream
// can (relay.ReadWaiter).
func (c limited) WaitRead() error { return relay.WaitRead(c.ClientStream) }

// limitErr is the Limit that ended ctx, or nil.
func limitErr(ctx context.Context) *Limit {
	l, _ := limitOf(ctx)
	return l
}
