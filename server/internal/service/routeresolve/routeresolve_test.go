package routeresolve

import (
	"context"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"

	outpostv1 "github.com/outposthq/outpost/gen/outpost/v1"
	"github.com/outposthq/outpost/server/internal/auth"
	"github.com/outposthq/outpost/server/internal/brokertest"
	"github.com/outposthq/outpost/server/internal/store"
	"github.com/outposthq/outpost/server/internal/token"
)

type noAgents struct{}

func (noAgents) GetAgent(context.Context, string) (store.Agent, error) {
	return store.Agent{}, store.ErrNotFound
}

// newService returns a Service with caps of 10 connections and 2 h, and
// the issuer that verifies its tokens.
func newService(t *testing.T) (*Service, *token.Issuer) {
	t.Helper()
	iss := brokertest.Issuer(t)
	b := brokertest.Direct(t, nil)
	s, err := New(Config{Broker: b, Tokens: iss, Store: noAgents{}, MaxConnections: 10, MaxSessionDuration: 2 * time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	return s, iss
}

// keyContext is the context of a call authorized by API key id.
func keyContext(t *testing.T, id string) context.Context {
	t.Helper()
	authz, err := auth.NewAuthorizer(func(context.Context, []byte) (auth.Key, error) {
		return auth.Key{ID: id, Scopes: []string{auth.ScopeSessionsCreate}}, nil
	}, map[string]string{"/m": auth.ScopeSessionsCreate})
	if err != nil {
		t.Fatal(err)
	}
	ctx := metadata.NewIncomingContext(t.Context(), metadata.Pairs("authorization", "Bearer opk_test"))
	ctx, err = authz.Authorize(ctx, "/m")
	if err != nil {
		t.Fatal(err)
	}
	return ctx
}

func TestCreateSessionCaps(t *testing.T) {
	s, iss := newService(t)
	ctx := keyContext(t, "key-7")
	cases := []struct {
		name     string
		reusable bool
		conns    uint32
		dur      *durationpb.Duration
		// want: the answer's caps and the claims, or an error naming field.
		wantConns, wantClaimConns uint32
		wantDur                   time.Duration
		field                     string
	}{
		{name: "single-use defaults", wantConns: 1, wantDur: 2 * time.Hour},
		{name: "single-use asks for one", conns: 1, wantConns: 1, wantDur: 2 * time.Hour},
		{name: "single-use asks for two", conns: 2, field: "max_connections"},
		{name: "reusable default", reusable: true, wantConns: 10, wantClaimConns: 10, wantDur: 2 * time.Hour},
		{name: "reusable narrower", reusable: true, conns: 3, wantConns: 3, wantClaimConns: 3, wantDur: 2 * time.Hour},
		{name: "reusable at the maximum", reusable: true, conns: 10, wantConns: 10, wantClaimConns: 10, wantDur: 2 * time.Hour},
		{name: "reusable above the maximum", reusable: true, conns: 11, field: "max_connections"},
		{name: "narrower duration", dur: durationpb.New(90 * time.Second), wantConns: 1, wantDur: 90 * time.Second},
		{name: "duration to the ms", dur: durationpb.New(1500*time.Millisecond + 7), wantConns: 1, wantDur: 1500 * time.Millisecond},
		{name: "duration at the maximum", dur: durationpb.New(2 * time.Hour), wantConns: 1, wantDur: 2 * time.Hour},
		{name: "duration above the maximum", dur: durationpb.New(2*time.Hour + time.Millisecond), field: "max_session_duration"},
		{name: "negative duration", dur: durationpb.New(-time.Second), field: "max_session_duration"},
		{name: "sub-millisecond duration", dur: durationpb.New(time.Microsecond), field: "max_session_duration"},
		{name: "invalid duration", dur: &durationpb.Duration{Seconds: 1, Nanos: -1}, field: "max_session_duration"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			resp, err := s.CreateSession(ctx, &outpostv1.CreateSessionRequest{
				Target: "db.example:5432", Reusable: tc.reusable, MaxConnections: tc.conns, MaxSessionDuration: tc.dur,
			})
			if tc.field != "" {
				if status.Code(err) != codes.InvalidArgument || !strings.Contains(err.Error(), tc.field) {
					t.Fatalf("got %v, want INVALID_ARGUMENT naming %s", err, tc.field)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if resp.GetMaxConnections() != tc.wantConns || resp.GetMaxSessionDuration().AsDuration() != tc.wantDur {
				t.Errorf("answer caps %d, %v; want %d, %v", resp.GetMaxConnections(), resp.GetMaxSessionDuration().AsDuration(), tc.wantConns, tc.wantDur)
			}
			c, err := iss.VerifySession(resp.GetToken())
			if err != nil {
				t.Fatal(err)
			}
			if c.KeyID() != "key-7" || c.ID != resp.GetSessionId() || c.Reusable != tc.reusable ||
				c.MaxConnections != tc.wantClaimConns || c.MaxDuration() != tc.wantDur {
				t.Errorf("claims %+v", c)
			}
		})
	}
}

// Without an API key behind the call (no interceptor ran) nothing is
// minted.
func TestCreateSessionNeedsKey(t *testing.T) {
	s, _ := newService(t)
	_, err := s.CreateSession(t.Context(), &outpostv1.CreateSessionRequest{Target: "db.example:5432"})
	if status.Code(err) != codes.Unauthenticated {
		t.Fatalf("got %v, want UNAUTHENTICATED", err)
	}
}
