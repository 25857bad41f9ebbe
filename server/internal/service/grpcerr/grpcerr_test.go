package grpcerr

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/outposthq/outpost/server/internal/broker"
	"github.com/outposthq/outpost/server/internal/store"
	"github.com/outposthq/outpost/server/internal/token"
)

func TestCode(t *testing.T) {
	wrap := func(err error) error { return fmt.Errorf("doing something: %w", err) }
	cases := []struct {
		err  error
		want codes.Code
	}{
		{nil, codes.OK},
		{&broker.InputError{Field: "target", Reason: "bad"}, codes.InvalidArgument},
		{wrap(ErrInvalid), codes.InvalidArgument},
		{wrap(store.ErrInvalid), codes.InvalidArgument},
		{wrap(store.ErrNotFound), codes.NotFound},
		{wrap(store.ErrNameTaken), codes.AlreadyExists},
		{wrap(store.ErrTokenUsed), codes.PermissionDenied},
		{wrap(token.ErrWrongKind), codes.PermissionDenied},
		{wrap(ErrPermission), codes.PermissionDenied},
		{wrap(ErrUnauthenticated), codes.Unauthenticated},
		{wrap(token.ErrExpired), codes.Unauthenticated},
		{wrap(token.ErrNotYetValid), codes.Unauthenticated},
		{wrap(token.ErrSignature), codes.Unauthenticated},
		{wrap(token.ErrMalformed), codes.Unauthenticated},
		{wrap(ErrRateLimited), codes.ResourceExhausted},
		{wrap(store.ErrUnavailable), codes.Unavailable},
		{wrap(errors.Join(store.ErrUnavailable, context.DeadlineExceeded)), codes.Unavailable},
		{wrap(context.DeadlineExceeded), codes.DeadlineExceeded},
		{wrap(context.Canceled), codes.Canceled},
		{errors.New("disk on fire"), codes.Internal},
	}
	for _, c := range cases {
		if got := Code(c.err); got != c.want {
			t.Errorf("Code(%v) = %v, want %v", c.err, got, c.want)
		}
		if c.err == nil {
			continue
		}
		if got := status.Code(From(c.err)); got != c.want {
			t.Errorf("From(%v) has code %v, want %v", c.err, got, c.want)
		}
	}
}

func TestMessages(t *testing.T) {
	st := status.Convert(From(&broker.InputError{Field: "target", Reason: "missing port"}))
	if st.Message() != "target: missing port" {
		t.Errorf("InputError message %q", st.Message())
	}
	st = status.Convert(Agent("0b5f", fmt.Errorf("get: %w", store.ErrNotFound)))
	if st.Code() != codes.NotFound || st.Message() != "no agent with id 0b5f" || strings.Contains(st.Message(), "store:") {
		t.Errorf("Agent not found: %v %q", st.Code(), st.Message())
	}
	st = status.Convert(Errorf(store.ErrTokenUsed, "enrollment token already used"))
	if st.Code() != codes.PermissionDenied || st.Message() != "enrollment token already used" {
		t.Errorf("Errorf: %v %q", st.Code(), st.Message())
	}
	// A store that cannot be reached: Unavailable, without where the
	// database is.
	st = status.Convert(From(fmt.Errorf("store agent: %w", fmt.Errorf("%w: dial unix /run/pg/.s.PGSQL.5432: connection refused", store.ErrUnavailable))))
	if st.Code() != codes.Unavailable || st.Message() != StoreUnavailableMessage {
		t.Errorf("store unavailable: %v %q", st.Code(), st.Message())
	}
	already := status.Error(codes.Aborted, "x")
	if From(already) != already {
		t.Error("From changed an error that already carries a status")
	}
}
