// Package routeresolve implements outpost.v1.RouteResolveService: routing
// decisions and session tokens for clients.
package routeresolve

import (
	"context"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	outpostv1 "github.com/outposthq/outpost/gen/outpost/v1"
)

// Service implements RouteResolveService. It is safe for concurrent use.
type Service struct {
	outpostv1.UnimplementedRouteResolveServiceServer
}

var _ outpostv1.RouteResolveServiceServer = (*Service)(nil)

// New returns a Service.
func New() *Service { return &Service{} }

// ResolveTarget is not available yet.
func (s *Service) ResolveTarget(context.Context, *outpostv1.ResolveTargetRequest) (*outpostv1.ResolveTargetResponse, error) {
	return nil, status.Error(codes.Unimplemented, "ResolveTarget is not implemented yet: routing needs the live agent registry (QUIC tunnel)")
}

// CreateSession is not available yet.
func (s *Service) CreateSession(context.Context, *outpostv1.CreateSessionRequest) (*outpostv1.CreateSessionResponse, error) {
	return nil, status.Error(codes.Unimplemented, "CreateSession is not implemented yet: sessions need routing and the client entry")
}
