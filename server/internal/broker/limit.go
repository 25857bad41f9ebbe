package broker

import (
	"context"
	"errors"

	"github.com/outposthq/outpost/dataplane/relay"
)

// ErrMaxDuration ends a session that reached its maximum duration
// (Request.MaxDuration). Its text is the reason the client is given and the
// audit records.
var ErrMaxDuration = errors.New("maximum session duration reached")

// OutcomeMaxDuration is the audit outcome of a session ended by
// ErrMaxDuration (the others are "ok", "error" and "connect_failed").
const OutcomeMaxDuration = "max_duration"

// durationLimited is the client's stream of a session with a maximum
// duration. The relay aborts both ends when ctx ends; when it ended
// because the duration passed, the client is closed with ErrMaxDuration as
// the reason instead of being cut without one.
type durationLimited struct {
	ClientStream
	ctx context.Context // the session's, ending with cause ErrMaxDuration
}

// Abort tells the client ErrMaxDuration when that is why the session ends,
// and otherwise aborts it.
func (c durationLimited) Abort(code relay.ErrorCode) {
	if errors.Is(context.Cause(c.ctx), ErrMaxDuration) {
		c.Fail(ErrMaxDuration.Error())
		return
	}
	c.ClientStream.Abort(code)
}
