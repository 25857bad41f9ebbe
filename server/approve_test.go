package server

import (
	"context"
	"slices"
	"strings"
	"testing"

	"github.com/golang-jwt/jwt/v5"
	"github.com/hashicorp/go-hclog"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	outpostv1 "github.com/outposthq/outpost/gen/outpost/v1"
	"github.com/outposthq/outpost/internal/testlog"
	"github.com/outposthq/outpost/internal/testtls"
)

// Enrollment approves the token's routes narrowed by the request, or the
// request when the token names none — never a route broader than /8 or a
// single label from a request alone. The answer, GetApprovedRoutes and the
// Agent view agree; a malformed requested route is INVALID_ARGUMENT.
func TestEnrollApprovedRoutes(t *testing.T) {
	dir := t.TempDir()
	g, err := newTestGateway(t, Config{
		DataDir: dir, Listen: "127.0.0.1:0", QUICListen: "127.0.0.1:0",
		EnrollmentSecret: "static-secret-0123456789", EnrollRateLimit: 1000,
	}, testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	r := run(t, g)
	conn := r.grpcConn(t)
	enroll := outpostv1.NewEnrollmentServiceClient(conn)
	admin := outpostv1.NewAgentAdminServiceClient(conn)
	ctx := context.Background()
	key := tokenKey(g)
	withRoutes := func(subnets, domains []any) string {
		return craft(t, key, "ENROLLMENT", func(c jwt.MapClaims) {
			c["routes"] = map[string]any{"subnets": subnets, "domains": domains}
		})
	}
	rs := func(subnets, domains []string) *outpostv1.RouteSet {
		return &outpostv1.RouteSet{Subnets: subnets, Domains: domains}
	}
	cases := []struct {
		name                     string
		bearer                   string
		requested                *outpostv1.RouteSet
		wantSubnets, wantDomains []string
	}{
		{"token narrowed by the request", withRoutes([]any{"10.0.0.0/8"}, []any{"corp.example"}),
			rs([]string{"10.1.0.0/16", "11.0.0.0/8"}, []string{"db.corp.example", "other.example"}),
			[]string{"10.1.0.0/16"}, []string{"db.corp.example"}},
		{"token, empty request", withRoutes([]any{"10.0.0.0/8"}, []any{"*.corp.example"}), rs(nil, nil),
			[]string{"10.0.0.0/8"}, []string{"*.corp.example"}},
		{"no token routes: the request, less what is too broad", craft(t, key, "ENROLLMENT", nil),
			rs([]string{"0.0.0.0/0", "10.1.2.3/16"}, []string{"com", "Contoso.Local"}),
			[]string{"10.1.0.0/16"}, []string{"contoso.local"}},
		{"static secret: the request", "static-secret-0123456789",
			rs([]string{"192.0.2.0/24"}, nil), []string{"192.0.2.0/24"}, nil},
		{"nothing", craft(t, key, "ENROLLMENT", nil), nil, nil, nil},
	}
	for i, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			resp, err := enrollCall(ctx, enroll, tc.bearer, &outpostv1.EnrollRequest{
				CsrPem: csrPEM(t, testtls.Key(t), "x"), AgentName: "approved-" + string(rune('a'+i)), RequestedRoutes: tc.requested})
			if err != nil {
				t.Fatal(err)
			}
			check := func(where string, got *outpostv1.RouteSet) {
				t.Helper()
				if !slices.Equal(got.GetSubnets(), tc.wantSubnets) || !slices.Equal(got.GetDomains(), tc.wantDomains) {
					t.Errorf("%s: approved %v %v, want %v %v", where, got.GetSubnets(), got.GetDomains(), tc.wantSubnets, tc.wantDomains)
				}
			}
			check("EnrollResponse", resp.GetApprovedRoutes())
			got, err := admin.GetApprovedRoutes(withKey(ctx, adminKey(t, dir)), &outpostv1.GetApprovedRoutesRequest{AgentId: resp.GetAgentId()})
			if err != nil {
				t.Fatal(err)
			}
			check("GetApprovedRoutes", got.GetRoutes())
			view, err := admin.GetAgent(withKey(ctx, adminKey(t, dir)), &outpostv1.GetAgentRequest{AgentId: resp.GetAgentId()})
			if err != nil {
				t.Fatal(err)
			}
			check("GetAgent", view.GetAgent().GetApprovedRoutes())
		})
	}

	refusals := []struct {
		name   string
		bearer string
		req    *outpostv1.RouteSet
		field  string
	}{
		{"bad requested subnet", craft(t, key, "ENROLLMENT", nil), rs([]string{"10.0.0.0/33"}, nil), "requested_routes.subnets[0]"},
		{"ipv6 requested subnet", craft(t, key, "ENROLLMENT", nil), rs([]string{"10.0.0.0/8", "2001:db8::/32"}, nil), "requested_routes.subnets[1]"},
		{"bad requested domain", craft(t, key, "ENROLLMENT", nil), rs(nil, []string{"a..b"}), "requested_routes.domains[0]"},
		{"bad token route", withRoutes([]any{"nonsense"}, nil), nil, "token routes"},
	}
	for _, tc := range refusals {
		t.Run(tc.name, func(t *testing.T) {
			_, err := enrollCall(ctx, enroll, tc.bearer, &outpostv1.EnrollRequest{CsrPem: csrPEM(t, testtls.Key(t), "x"), AgentName: "refused", RequestedRoutes: tc.req})
			if status.Code(err) != codes.InvalidArgument || !strings.Contains(status.Convert(err).Message(), tc.field) {
				t.Fatalf("got %v, want InvalidArgument naming %s", err, tc.field)
			}
		})
	}
	// A refused request did not spend its token.
	tok := craft(t, key, "ENROLLMENT", nil)
	if _, err := enrollCall(ctx, enroll, tok, &outpostv1.EnrollRequest{CsrPem: csrPEM(t, testtls.Key(t), "x"), AgentName: "spent", RequestedRoutes: rs([]string{"bad"}, nil)}); status.Code(err) != codes.InvalidArgument {
		t.Fatal(err)
	}
	if _, err := enrollCall(ctx, enroll, tok, &outpostv1.EnrollRequest{CsrPem: csrPEM(t, testtls.Key(t), "x"), AgentName: "spent"}); err != nil {
		t.Fatalf("the token was spent by a refused request: %v", err)
	}
}

// SetApprovedRoutes stores the canonical set and GetApprovedRoutes reads it
// back, over gRPC and REST; bad routes, unknown and deleted agents are
// refused with the API's codes.
func TestSetApprovedRoutes(t *testing.T) {
	dir := t.TempDir()
	r := start(t, dir)
	conn := r.grpcConn(t)
	admin := outpostv1.NewAgentAdminServiceClient(conn)
	ctx := withKey(context.Background(), adminKey(t, dir))
	resp, err := enrollCall(context.Background(), outpostv1.NewEnrollmentServiceClient(conn), craft(t, tokenKey(r.g), "ENROLLMENT", nil),
		&outpostv1.EnrollRequest{CsrPem: csrPEM(t, testtls.Key(t), "x"), AgentName: "set-me"})
	if err != nil {
		t.Fatal(err)
	}
	id := resp.GetAgentId()
	set, err := admin.SetApprovedRoutes(ctx, &outpostv1.SetApprovedRoutesRequest{AgentId: id,
		Routes: &outpostv1.RouteSet{Subnets: []string{"10.1.2.3/16", "0.0.0.0/0", "10.1.0.0/16"}, Domains: []string{"COM", "*.Corp.Example"}}})
	if err != nil {
		t.Fatal(err)
	}
	wantSubnets, wantDomains := []string{"0.0.0.0/0", "10.1.0.0/16"}, []string{"com", "*.corp.example"}
	if !slices.Equal(set.GetRoutes().GetSubnets(), wantSubnets) || !slices.Equal(set.GetRoutes().GetDomains(), wantDomains) {
		t.Fatalf("SetApprovedRoutes answered %v", set.GetRoutes())
	}
	code, body := r.rest(t, "GET", "/v1/agents/"+id+"/approved-routes", adminKey(t, dir), nil)
	routes, _ := body["routes"].(map[string]any)
	if code != 200 || routes == nil || len(routes["subnets"].([]any)) != 2 || routes["domains"].([]any)[0] != "com" {
		t.Fatalf("REST GET: %d %v", code, body)
	}
	code, body = r.rest(t, "PUT", "/v1/agents/"+id+"/approved-routes", adminKey(t, dir), strings.NewReader(`{"subnets": [], "domains": ["lab.test"]}`))
	if code != 200 {
		t.Fatalf("REST PUT: %d %v", code, body)
	}
	got, err := admin.GetApprovedRoutes(ctx, &outpostv1.GetApprovedRoutesRequest{AgentId: id})
	if err != nil || len(got.GetRoutes().GetSubnets()) != 0 || !slices.Equal(got.GetRoutes().GetDomains(), []string{"lab.test"}) {
		t.Fatalf("after the REST PUT: %v, %v", got, err)
	}

	many := make([]string, 1025)
	for i := range many {
		many[i] = "10.0.0.0/8"
	}
	refusals := []struct {
		name string
		req  *outpostv1.SetApprovedRoutesRequest
		code codes.Code
		msg  string
	}{
		{"bad id", &outpostv1.SetApprovedRoutesRequest{AgentId: "nope"}, codes.InvalidArgument, "agent_id"},
		{"bad subnet", &outpostv1.SetApprovedRoutesRequest{AgentId: id, Routes: &outpostv1.RouteSet{Subnets: []string{"10.0.0.0/8", "x"}}}, codes.InvalidArgument, "routes.subnets[1]"},
		{"bad domain", &outpostv1.SetApprovedRoutesRequest{AgentId: id, Routes: &outpostv1.RouteSet{Domains: []string{"*"}}}, codes.InvalidArgument, "routes.domains[0]"},
		{"too many", &outpostv1.SetApprovedRoutesRequest{AgentId: id, Routes: &outpostv1.RouteSet{Subnets: many}}, codes.InvalidArgument, "1024"},
		{"unknown agent", &outpostv1.SetApprovedRoutesRequest{AgentId: "00000000-0000-4000-8000-000000000000"}, codes.NotFound, ""},
	}
	for _, tc := range refusals {
		if _, err := admin.SetApprovedRoutes(ctx, tc.req); status.Code(err) != tc.code || !strings.Contains(status.Convert(err).Message(), tc.msg) {
			t.Errorf("%s: %v, want %v mentioning %q", tc.name, err, tc.code, tc.msg)
		}
	}
	if _, err := admin.DeleteAgent(ctx, &outpostv1.DeleteAgentRequest{AgentId: id}); err != nil {
		t.Fatal(err)
	}
	if _, err := admin.SetApprovedRoutes(ctx, &outpostv1.SetApprovedRoutesRequest{AgentId: id}); status.Code(err) != codes.NotFound {
		t.Errorf("deleted agent, set: %v", err)
	}
	if _, err := admin.GetApprovedRoutes(ctx, &outpostv1.GetApprovedRoutesRequest{AgentId: id}); status.Code(err) != codes.NotFound {
		t.Errorf("deleted agent, get: %v", err)
	}
}

// accept_any_routes is announced with a warning at start.
func TestAcceptAnyRoutesWarns(t *testing.T) {
	logs := testlog.New(t)
	g, err := newTestGateway(t, Config{DataDir: t.TempDir(), Listen: "127.0.0.1:0", QUICListen: "127.0.0.1:0", AcceptAnyRoutes: true},
		hclog.New(&hclog.LoggerOptions{Level: hclog.Info, Output: logs}))
	if err != nil {
		t.Fatal(err)
	}
	defer g.Close()
	if !logs.Contains("[WARN]") || !logs.Contains("accept_any_routes is on") {
		t.Fatalf("no warning at start:\n%s", logs)
	}
}
