// Package recovery keeps a panicking management API handler from taking the
// gateway down: its interceptors turn a panic into an Internal status that
// says nothing of the panic, log the panic with its stack, and count it.
// They guard request handlers only, never the data path.
package recovery

import (
	"context"
	"runtime/debug"

	"github.com/hashicorp/go-hclog"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// Message is what a client reads when its call panicked.
const Message = "internal error: the gateway failed to handle this request; it has been logged"

// Interceptors recover panics in gRPC handlers. The zero value is not
// usable; build it with New. It is safe for concurrent use.
type Interceptors struct {
	log    hclog.Logger
	panics *prometheus.CounterVec
}

// New returns interceptors that log to log (nil: discard) and count panics
// in panics by method (nil: not counted).
func New(log hclog.Logger, panics *prometheus.CounterVec) *Interceptors {
	if log == nil {
		log = hclog.NewNullLogger()
	}
	return &Interceptors{log: log, panics: panics}
}

// recovered is deferred by both interceptors: it turns a panic into err.
func (i *Interceptors) recovered(method string, err *error) {
	v := recover()
	if v == nil {
		return
	}
	i.log.Error("api handler panicked; answered Internal", "method", method, "panic", v, "stack", string(debug.Stack()))
	if i.panics != nil {
		i.panics.WithLabelValues(method).Inc()
	}
	*err = status.Error(codes.Internal, Message)
}

// Unary is a grpc.UnaryServerInterceptor.
func (i *Interceptors) Unary(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (resp any, err error) {
	defer i.recovered(info.FullMethod, &err)
	return handler(ctx, req)
}

// Stream is a grpc.StreamServerInterceptor.
func (i *Interceptors) Stream(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) (err error) {
	defer i.recovered(info.FullMethod, &err)
	return handler(srv, ss)
}
