// Package grpcerr maps the gateway's domain errors to gRPC status codes. It is the
// one place that does so; service handlers return grpcerr.From(err).
package grpcerr

import (
	"context"
	"errors"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/outposthq/outpost/server/internal/broker"
	"github.com/outposthq/outpost/server/internal/store"
)

// From converts err to a gRPC status error. An error that already carries a status
// is returned as is; known sentinels get their code; anything else is Internal.
// The message keeps the wrapped context so callers see what failed.
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
	return status.Error(Code(err), err.Error())
}

// Code returns the gRPC code for a domain error.
func Code(err error) codes.Code {
	switch {
	case errors.Is(err, store.ErrNotFound):
		return codes.NotFound
	case errors.Is(err, store.ErrNameTaken):
		return codes.AlreadyExists
	case errors.Is(err, store.ErrTokenUsed):
		return codes.PermissionDenied
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
