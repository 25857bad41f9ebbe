package recovery

import (
	"context"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/outposthq/outpost/internal/testlog"
)

func TestUnaryPanicBecomesInternal(t *testing.T) {
	panics := prometheus.NewCounterVec(prometheus.CounterOpts{Name: "p"}, []string{"method"})
	i := New(testlog.Logger(t, "api"), panics)
	info := &grpc.UnaryServerInfo{FullMethod: "/outpost.v1.AgentAdminService/ListAgents"}
	resp, err := i.Unary(context.Background(), nil, info, func(context.Context, any) (any, error) {
		var s []int
		return s[-1+len(s)], nil // index out of range
	})
	if resp != nil || status.Code(err) != codes.Internal {
		t.Fatalf("got %v, %v; want Internal", resp, err)
	}
	if msg := status.Convert(err).Message(); msg != Message || strings.Contains(msg, "index out of range") {
		t.Fatalf("message %q leaks the panic or differs from %q", msg, Message)
	}
	if got := testutil.ToFloat64(panics.WithLabelValues(info.FullMethod)); got != 1 {
		t.Fatalf("panics counted %v, want 1", got)
	}
	// A handler that returns normally is untouched.
	resp, err = i.Unary(context.Background(), nil, info, func(context.Context, any) (any, error) {
		return "ok", status.Error(codes.NotFound, "x")
	})
	if resp != "ok" || status.Code(err) != codes.NotFound {
		t.Fatalf("normal call changed: %v, %v", resp, err)
	}
}

func TestStreamPanicBecomesInternal(t *testing.T) {
	i := New(nil, nil)
	err := i.Stream(nil, nil, &grpc.StreamServerInfo{FullMethod: "/x/Y"}, func(any, grpc.ServerStream) error {
		panic("boom")
	})
	if status.Code(err) != codes.Internal || strings.Contains(err.Error(), "boom") {
		t.Fatalf("got %v", err)
	}
}
