// Package grpcerr maps the gateway's domain errors to gRPC status codes. It is the
// one place that does so: service handlers and interceptors return From(err),
// or Errorf(cause, …) when the client should read a message of their own
// rather than the error chain, and the code always comes from Code.
package grpcerr

import (
	"context"
	"errors"
	"fmt"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/outposthq/outpost/server/internal/broker"
	"github.com/outposthq/outpost/server/internal/store"
	"github.com/outposthq/outpost/server/internal/token"
)

// Conditions the services share that no other package owns. Wrap them (or
// pass them to Errorf) to choose the code.
var (
	// ErrUnauthenticated: the credential is missing, unknown, revoked or not
	// valid (codes.Unauthenticated).
	ErrUnauthenticated = errors.New("unauthenticated")
	// ErrPermission: the credential is valid but may not do this
	// (codes.PermissionDenied).
	ErrPermission = errors.New("permission denied")
	// ErrRateLimited: too many calls from one source (codes.ResourceExhausted).
	ErrRateLimited = errors.New("rate limited")
	// ErrInvalid: a malformed request (codes.InvalidArgument).
	ErrInvalid = errors.New("invalid argument")
)

// StoreUnavailableMessage is the whole message of an Unavailable status for
// a store that cannot be reached: clients learn to retry, not where the
// database is.
const StoreUnavailableMessage = "the gateway's store is unavailable; nothing could be decided, try again shortly"

// From converts err to a gRPC status error whose message is err's text. An
// error that already carries a status is returned as is; a
// *broker.InputError becomes InvalidArgument naming its field; a store
// that cannot be reached (store.ErrUnavailable) is Unavailable with
// StoreUnavailableMessage; anything else gets Code(err).
func From(err error) error {
	if err == nil {
		return nil
	}
	if _, ok := status.FromError(err); ok {
		return err
	}
	var ie *broker.InputError
	if errors.As(err, &ie) {
		return InvalidArgument(ie.Field, ie.Reason)
	}
	if errors.Is(err, store.ErrUnavailable) {
		return status.Error(codes.Unavailable, StoreUnavailableMessage)
	}
	return status.Error(Code(err), err.Error())
}

// Errorf returns a status with the code of cause (Code) and the formatted
// message alone: for a cause whose own text is not meant for clients
// ("store: not found").
func Errorf(cause error, format string, args ...any) error {
	return status.Error(Code(cause), fmt.Sprintf(format, args...))
}

// Code returns the gRPC code for a domain error; an unknown error is
// Internal.
func Code(err error) codes.Code {
	var ie *broker.InputError
	switch {
	case err == nil:
		return codes.OK
	case errors.As(err, &ie), errors.Is(err, ErrInvalid), errors.Is(err, store.ErrInvalid):
		return codes.InvalidArgument
	case errors.Is(err, store.ErrNotFound):
		return codes.NotFound
	case errors.Is(err, store.ErrNameTaken):
		return codes.AlreadyExists
	case errors.Is(err, store.ErrTokenUsed), errors.Is(err, token.ErrWrongKind), errors.Is(err, ErrPermission):
		return codes.PermissionDenied
	case errors.Is(err, ErrUnauthenticated), errors.Is(err, token.ErrMalformed), errors.Is(err, token.ErrSignature),
		errors.Is(err, token.ErrExpired), errors.Is(err, token.ErrNotYetValid):
		return codes.Unauthenticated
	case errors.Is(err, ErrRateLimited):
		return codes.ResourceExhausted
	case errors.Is(err, store.ErrUnavailable):
		// Before DeadlineExceeded: a store that did not answer in time is
		// unavailable, whoever's deadline ran out.
		return codes.Unavailable
	case errors.Is(err, context.DeadlineExceeded):
		return codes.DeadlineExceeded
	case errors.Is(err, context.Canceled):
		return codes.Canceled
	}
	return codes.Internal
}

// InvalidArgument returns an InvalidArgument status naming the field.
func InvalidArgument(field, reason string) error {
	return status.Errorf(codes.InvalidArgument, "%s: %s", field, reason)
}

// Agent converts an error from reading or changing agent id: NotFound says
// "no agent with id …" (a deleted agent reads as "agent … was deleted" when
// the caller knows it), anything else keeps its chain.
func Agent(id string, err error) error {
	if errors.Is(err, store.ErrNotFound) {
		return Errorf(err, "no agent with id %s", id)
	}
	return From(fmt.Errorf("agent %s: %w", id, err))
}
