package server

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/grpc-ecosystem/grpc-gateway/v2/runtime"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/reflection"
	"google.golang.org/grpc/status"
	"google.golang.org/grpc/test/bufconn"
	"google.golang.org/protobuf/encoding/protojson"

	"github.com/outposthq/outpost/gen/openapiv2"
	outpostv1 "github.com/outposthq/outpost/gen/outpost/v1"
	"github.com/outposthq/outpost/server/internal/apikey"
	"github.com/outposthq/outpost/server/internal/auth"
	"github.com/outposthq/outpost/server/internal/console"
	"github.com/outposthq/outpost/server/internal/entry"
	"github.com/outposthq/outpost/server/internal/service/agentadmin"
	"github.com/outposthq/outpost/server/internal/service/enrollment"
	"github.com/outposthq/outpost/server/internal/service/recovery"
	"github.com/outposthq/outpost/server/internal/service/routeresolve"
)

// scopePolicy maps every management RPC to the scope it needs (DESIGN.md §6).
// Enroll is public here: its bearer is an enrollment token checked by the service.
var scopePolicy = map[string]string{
	outpostv1.EnrollmentService_CreateEnrollmentToken_FullMethodName: auth.ScopeEnrollCreate,
	outpostv1.EnrollmentService_Enroll_FullMethodName:                auth.Public,
	outpostv1.AgentAdminService_ListAgents_FullMethodName:            auth.ScopeAgentsRead,
	outpostv1.AgentAdminService_GetAgent_FullMethodName:              auth.ScopeAgentsRead,
	outpostv1.AgentAdminService_DeleteAgent_FullMethodName:           auth.ScopeAgentsWrite,
	outpostv1.AgentAdminService_GetApprovedRoutes_FullMethodName:     auth.ScopeAgentsRead,
	outpostv1.AgentAdminService_SetApprovedRoutes_FullMethodName:     auth.ScopeAgentsWrite,
	outpostv1.AgentAdminService_ListGateways_FullMethodName:          auth.ScopeAgentsRead,
	outpostv1.AgentAdminService_ListSessions_FullMethodName:          auth.ScopeSessionsRead,
	outpostv1.RouteResolveService_ResolveTarget_FullMethodName:       auth.ScopeRoutesRead,
	outpostv1.RouteResolveService_CreateSession_FullMethodName:       auth.ScopeSessionsCreate,
}

// publicServices need no key: health checks and reflection (which only describes
// the schema that /openapi.json publishes anyway).
var publicServices = []string{
	"/grpc.health.v1.Health/",
	"/grpc.reflection.v1.ServerReflection/",
	"/grpc.reflection.v1alpha.ServerReflection/",
}

// inProcessBuffer is the bufconn buffer between the REST gateway and gRPC.
const inProcessBuffer = 1 << 20

// apiServer is the management API: one gRPC server reached directly (HTTP/2 with
// application/grpc on the TLS port) and by the REST gateway through an in-process
// connection, so interceptors (auth, metrics) run exactly once per call either way.
type apiServer struct {
	g      *Gateway
	authz  *auth.Authorizer
	grpc   *grpc.Server
	health *health.Server
	bufLn  *bufconn.Listener
	conn   *grpc.ClientConn
	rest   *runtime.ServeMux
	// console is the web console at /ui/, a client of conn.
	console *console.Console
}

func newAPIServer(g *Gateway) (*apiServer, error) {
	authz, err := auth.NewAuthorizer(apikey.Lookup(g.store), scopePolicy, publicServices...)
	if err != nil {
		return nil, err
	}
	a := &apiServer{g: g, health: health.NewServer(), bufLn: bufconn.Listen(inProcessBuffer)}
	rec := recovery.New(g.log.Named("api"), g.metrics.APIPanics)
	a.authz = authz
	a.grpc = grpc.NewServer(
		grpc.MaxRecvMsgSize(int(g.cfg.MaxRequestBytes)),
		// Recovery runs innermost but for metrics, so a panicking handler
		// is counted as Internal and never takes the gateway down.
		grpc.ChainUnaryInterceptor(g.metrics.UnaryInterceptor, rec.Unary, authz.UnaryInterceptor),
		grpc.ChainStreamInterceptor(rec.Stream, authz.StreamInterceptor),
	)
	enroll, err := enrollment.New(g.pki, g.tokens, g.store, enrollment.Config{
		PublicURL:           g.cfg.PublicURL,
		QUICEndpoint:        g.cfg.PublicQUICEndpoint,
		EnrollmentSecret:    g.cfg.EnrollmentSecret,
		ProvisionerAudience: g.cfg.ProvisionerAudience,
		TokenLeeway:         g.cfg.enrollmentTokenLeeway(),
		RateBurst:           g.cfg.EnrollRateLimit,
		Enrollments:         g.metrics.Enrollments,
		Now:                 g.cfg.Now,
		ClientIP:            g.cfg.clientIP(),
		Logger:              g.log.Named("enrollment"),
	})
	if err != nil {
		return nil, err
	}
	outpostv1.RegisterEnrollmentServiceServer(a.grpc, enroll)
	admin, err := agentadmin.New(agentadmin.Config{
		Store:      g.store,
		Live:       g.agents,
		Disconnect: g.tunnel.Disconnect,
		Approvals:  g.book,
		Ambiguity:  g.router,
		Cluster:    g.member,
		Remote:     g.remote(),
		Logger:     g.log.Named("agentadmin"),
	})
	if err != nil {
		return nil, err
	}
	outpostv1.RegisterAgentAdminServiceServer(a.grpc, admin)
	routes, err := routeresolve.New(routeresolve.Config{
		Broker:        g.broker,
		Tokens:        g.tokens,
		Store:         g.store,
		ConnectURL:    g.connectURL(),
		CASPKISHA256:  g.pki.CASPKISHA256(),
		MaxSessionTTL: time.Duration(g.cfg.MaxSessionTTL),
		Logger:        g.log.Named("routes"),

		MaxConnections:     uint32(g.cfg.MaxTokenConnections),
		MaxSessionDuration: time.Duration(g.cfg.MaxSessionDuration),
	})
	if err != nil {
		return nil, err
	}
	outpostv1.RegisterRouteResolveServiceServer(a.grpc, routes)
	healthpb.RegisterHealthServer(a.grpc, a.health)
	reflection.Register(a.grpc)
	for name := range a.grpc.GetServiceInfo() {
		a.health.SetServingStatus(name, healthpb.HealthCheckResponse_SERVING)
	}

	a.conn, err = grpc.NewClient("passthrough:///outpost-in-process",
		grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) { return a.bufLn.DialContext(ctx) }),
		grpc.WithTransportCredentials(insecure.NewCredentials()),
	)
	if err != nil {
		return nil, fmt.Errorf("in-process grpc client: %w", err)
	}
	a.rest = runtime.NewServeMux(
		runtime.WithMarshalerOption(runtime.MIMEWildcard, &runtime.JSONPb{
			MarshalOptions:   protojson.MarshalOptions{UseProtoNames: true, EmitUnpopulated: true},
			UnmarshalOptions: protojson.UnmarshalOptions{},
		}),
		runtime.WithRoutingErrorHandler(routingError),
	)
	ctx := context.Background()
	for _, register := range []func(context.Context, *runtime.ServeMux, *grpc.ClientConn) error{
		outpostv1.RegisterEnrollmentServiceHandler,
		outpostv1.RegisterAgentAdminServiceHandler,
		outpostv1.RegisterRouteResolveServiceHandler,
	} {
		if err := register(ctx, a.rest, a.conn); err != nil {
			return nil, fmt.Errorf("register rest handlers: %w", err)
		}
	}
	a.console, err = console.New(console.Config{
		Conn:        a.conn,
		Keys:        g.store,
		Enrolled:    g.enrolledBy,
		RenewBefore: g.cfg.renewBefore(),
		Now:         g.cfg.Now,
		Logger:      g.log.Named("console"),
	})
	if err != nil {
		return nil, err
	}
	return a, nil
}

// routingError answers a request no REST route takes. A path served for
// other methods only is 405 Method Not Allowed (grpc-gateway would say 501
// Not Implemented, as if the route did not exist yet); the rest is as
// grpc-gateway answers it.
func routingError(ctx context.Context, mux *runtime.ServeMux, m runtime.Marshaler, w http.ResponseWriter, r *http.Request, httpStatus int) {
	if httpStatus != http.StatusMethodNotAllowed {
		runtime.DefaultRoutingErrorHandler(ctx, mux, m, w, r, httpStatus)
		return
	}
	st := status.Newf(codes.Unimplemented, "method %s is not allowed on %s", r.Method, r.URL.Path)
	runtime.HTTPError(ctx, mux, m, w, r, &runtime.HTTPStatusError{HTTPStatus: http.StatusMethodNotAllowed, Err: st.Err()})
}

// run serves the in-process listener until stop or close.
func (a *apiServer) run(context.Context) error {
	// A stop that wins the race against Serve leaves ErrServerStopped: a clean stop.
	if err := a.grpc.Serve(a.bufLn); err != nil && !errors.Is(err, grpc.ErrServerStopped) {
		return fmt.Errorf("in-process grpc: %w", err)
	}
	return nil
}

// stop drains gRPC calls until ctx ends, then cuts the rest.
func (a *apiServer) stop(ctx context.Context) {
	a.health.Shutdown()
	done := make(chan struct{})
	go func() {
		a.grpc.GracefulStop()
		close(done)
	}()
	select {
	case <-done:
	case <-ctx.Done():
		a.grpc.Stop()
		<-done
	}
	a.conn.Close()
}

// close stops everything at once.
func (a *apiServer) close() {
	a.grpc.Stop()
	a.conn.Close()
	a.bufLn.Close()
}

// handler is the TLS port's root handler: gRPC by content type, then the fixed
// endpoints, then the REST gateway.
func (a *apiServer) handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		fmt.Fprintln(w, "ok")
	})
	mux.HandleFunc("GET /readyz", a.readyz)
	mux.HandleFunc("GET /openapi.json", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.Write(openapiv2.JSON)
	})
	if a.g.cfg.MetricsListen == "" {
		// On the public port, /metrics (agent ids, volumes) needs a key
		// with metrics.read; --metrics-listen serves it without one on a
		// separate, usually loopback, listener instead.
		mux.Handle("GET /metrics", a.authz.RequireHTTP(auth.ScopeMetricsRead, a.metricsHandler()))
	}
	mux.Handle("GET "+entry.Path, a.g.entry)
	mux.Handle(console.Path, a.console)
	mux.Handle("/", a.limitBody(a.rest))
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.ProtoMajor == 2 && strings.HasPrefix(r.Header.Get("Content-Type"), "application/grpc") {
			a.grpc.ServeHTTP(w, r)
			return
		}
		mux.ServeHTTP(w, r)
	})
}

func (a *apiServer) metricsHandler() http.Handler {
	return promhttp.HandlerFor(a.g.metrics.Registry, promhttp.HandlerOpts{Registry: a.g.metrics.Registry})
}

// readyzStoreTimeout is how long /readyz waits for the store: a store
// slower than that is not ready.
const readyzStoreTimeout = 3 * time.Second

// readyz answers 200 when the store answers and the listeners are serving,
// else 503 with the reason. A gateway whose store is down is not ready
// (its live agents and sessions go on) and ready again, without a
// restart, once the store answers.
func (a *apiServer) readyz(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	if !a.g.serving.Load() {
		http.Error(w, "not serving", http.StatusServiceUnavailable)
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), readyzStoreTimeout)
	defer cancel()
	if err := a.g.store.Ping(ctx); err != nil {
		http.Error(w, "store unreachable: "+err.Error(), http.StatusServiceUnavailable)
		return
	}
	fmt.Fprintln(w, "ready")
}

// limitBody refuses REST bodies over the configured size: 413 when the declared
// length says so up front, and a read error (400) when a chunked body runs over.
func (a *apiServer) limitBody(next http.Handler) http.Handler {
	limit := a.g.cfg.MaxRequestBytes
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.ContentLength > limit {
			st := status.Newf(codes.InvalidArgument, "request body of %d bytes exceeds the limit of %d bytes", r.ContentLength, limit)
			runtime.HTTPError(r.Context(), a.rest, &runtime.JSONPb{}, w, r, &runtime.HTTPStatusError{HTTPStatus: http.StatusRequestEntityTooLarge, Err: st.Err()})
			return
		}
		r.Body = http.MaxBytesReader(w, r.Body, limit)
		next.ServeHTTP(w, r)
	})
}

// connectURL is the WebSocket URL of the client entry.
func (g *Gateway) connectURL() string {
	u, err := url.Parse(g.cfg.PublicURL)
	if err != nil {
		return ""
	}
	u.Scheme = "wss"
	u.Path = strings.TrimSuffix(u.Path, "/") + entry.Path
	return u.String()
}
