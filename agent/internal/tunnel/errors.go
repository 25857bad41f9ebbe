package tunnel

import (
	"errors"

	"github.com/outposthq/outpost/dataplane"
)

// How Run classifies failures: a *PermanentError cannot go away by itself
// (the config or identity files are unusable, the gateway refuses the
// agent's identity); everything else — the gateway unreachable, a network
// failure, a gateway restart, a full or unavailable gateway — is retried
// with backoff.

// ErrPermanent is matched (errors.Is) by every *PermanentError: a failure
// that retrying cannot fix until someone acts.
var ErrPermanent = errors.New("permanent failure")

// PermanentError is a failure Run gives up on: at start at once, while
// running once the next attempt failed the same way. Error says what is
// wrong and what to do.
type PermanentError struct {
	// Err is what failed; Unwrap returns it.
	Err error
	// Action says what the operator must do, e.g. enroll the agent again.
	Action string
}

func (e *PermanentError) Error() string { return e.Err.Error() + "; " + e.Action }

// Unwrap returns e.Err.
func (e *PermanentError) Unwrap() error { return e.Err }

// Is reports whether target is ErrPermanent.
func (e *PermanentError) Is(target error) bool { return target == ErrPermanent }

// permanent wraps err, a failure retrying cannot fix, with the action that
// fixes it.
func permanent(err error, action string) *PermanentError {
	return &PermanentError{Err: err, Action: action}
}

// enrollAction is the Action of failures that a new enrollment fixes.
func enrollAction(dir string) string {
	return "enroll the agent again with a new token: outpost agent enroll --config-dir " + dir + " --token <jwt|->"
}

// The refusals of the agent's identity, wrapped in a *PermanentError.
var (
	errAgentDeleted = errors.New("this agent was deleted at the gateway (close reason agent-deleted)")
	errNotAccepted  = errors.New("the gateway does not accept this agent's identity (close reason agent-not-accepted): " +
		"the agent was deleted, its certificate expired, or it was enrolled with another gateway")
)

// refused returns the error of a connection the gateway closed with
// reason, when the reason refuses the agent's identity (agent-deleted,
// agent-not-accepted); otherwise nil.
func refused(reason dataplane.CloseReason, dir string) error {
	switch reason {
	case dataplane.CloseAgentDeleted:
		return permanent(errAgentDeleted, enrollAction(dir))
	case dataplane.CloseAgentNotAccepted:
		return permanent(errNotAccepted, enrollAction(dir))
	}
	return nil
}

// confirmed is what Run returns when err2 confirmed err1, two permanent
// failures in a row: err2, unless err1 says the agent was deleted — then
// err2 is the refusal that follows a deletion and err1 says more.
func confirmed(err1, err2 error) error {
	if errors.Is(err1, errAgentDeleted) && errors.Is(err2, errNotAccepted) {
		return err1
	}
	return err2
}

// errGatewayRestarted ends a connection that the gateway reset statelessly
// (RFC 9000 §10.3): a gateway that restarted without closing its
// connections no longer knows this one. Run reconnects at once.
var errGatewayRestarted = errors.New("the gateway restarted (stateless reset)")

// errReplicaLeft ends a connection that a replica of a cluster closed with
// "shutdown": the replica is going away, the others stay. Run dials a
// replacement at once.
var errReplicaLeft = errors.New("the gateway replica shut down")
