package agentadmin

import (
	"context"
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"

	outpostv1 "github.com/outposthq/outpost/gen/outpost/v1"
	"github.com/outposthq/outpost/server/internal/store"
)

// sessionService is a Service over a real SQLite store holding n sessions
// a minute apart from base: even ones through agentA and ended, odd ones
// direct, the last one open.
func sessionService(t *testing.T, n int, base time.Time) *Service {
	t.Helper()
	ctx := context.Background()
	st, err := store.OpenSQLite(ctx, filepath.Join(t.TempDir(), "outpost.db"), store.Config{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	for i := range n {
		r := store.SessionRecord{ID: fmt.Sprintf("00000000-0000-0000-0000-%012d", i), Target: "db:5432", Decision: "direct",
			StartedAt: base.Add(time.Duration(i) * time.Minute), KeyID: "key-1", ClientAddr: "127.0.0.1:40000"}
		if i%2 == 0 {
			r.AgentID, r.Target, r.Decision = agentA, "10.0.0.1:22", "subnet"
		}
		if err := st.InsertSession(ctx, r); err != nil {
			t.Fatal(err)
		}
		if i < n-1 {
			if err := st.FinishSession(ctx, r.ID, r.StartedAt.Add(1500*time.Millisecond), 10, 20, "closed", "the client closed the session"); err != nil {
				t.Fatal(err)
			}
		}
	}
	s, err := New(Config{Store: st, Live: memLive{}, Disconnect: func(string, string) bool { return false }, Approvals: noApprovals{}})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

const agentA = "0b3e6a52-1c55-4a52-8d5e-3f8a7b1c2d4e"

func TestListSessions(t *testing.T) {
	base := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	s := sessionService(t, 7, base)
	ctx := context.Background()

	// Pages of three, newest first, each session once.
	var got []string
	req := &outpostv1.ListSessionsRequest{PageSize: 3}
	for range 5 {
		resp, err := s.ListSessions(ctx, req)
		if err != nil {
			t.Fatal(err)
		}
		for _, v := range resp.GetSessions() {
			got = append(got, v.GetSessionId()[len(v.GetSessionId())-1:])
		}
		if resp.GetNextPageToken() == "" {
			break
		}
		req.PageToken = resp.GetNextPageToken()
	}
	if fmt.Sprint(got) != "[6 5 4 3 2 1 0]" {
		t.Errorf("pages: %v", got)
	}

	resp, err := s.ListSessions(ctx, &outpostv1.ListSessionsRequest{AgentId: agentA, PageSize: 1})
	if err != nil {
		t.Fatal(err)
	}
	open := resp.GetSessions()[0]
	if open.GetAgentId() != agentA || open.GetEndedAt() != nil || open.GetDuration() != nil || open.GetOutcome() != "" ||
		!open.GetStartedAt().AsTime().Equal(base.Add(6*time.Minute)) || resp.GetNextPageToken() == "" {
		t.Errorf("open session %v, next %q", open, resp.GetNextPageToken())
	}
	resp, err = s.ListSessions(ctx, &outpostv1.ListSessionsRequest{AgentId: agentA, PageToken: resp.GetNextPageToken(), PageSize: 1})
	if err != nil {
		t.Fatal(err)
	}
	ended := resp.GetSessions()[0]
	if ended.GetDuration().AsDuration() != 1500*time.Millisecond || ended.GetBytesUp() != 10 || ended.GetBytesDown() != 20 ||
		ended.GetOutcome() != "closed" || ended.GetKeyId() != "key-1" || ended.GetClientAddr() != "127.0.0.1:40000" ||
		ended.GetTarget() != "10.0.0.1:22" || ended.GetReplicaId() != "" {
		t.Errorf("ended session %v", ended)
	}

	for _, c := range []struct {
		name string
		req  *outpostv1.ListSessionsRequest
		want int
	}{
		{"target", &outpostv1.ListSessionsRequest{Target: "db:5432"}, 3},
		{"open", &outpostv1.ListSessionsRequest{Outcome: OutcomeOpen}, 1},
		{"closed", &outpostv1.ListSessionsRequest{Outcome: "closed"}, 6},
		{"time range", &outpostv1.ListSessionsRequest{StartTime: timestamppb.New(base.Add(time.Minute)), EndTime: timestamppb.New(base.Add(3 * time.Minute))}, 2},
		{"page size capped", &outpostv1.ListSessionsRequest{PageSize: 10_000}, 7},
	} {
		resp, err := s.ListSessions(ctx, c.req)
		if err != nil || len(resp.GetSessions()) != c.want {
			t.Errorf("%s: %d sessions, %v; want %d", c.name, len(resp.GetSessions()), err, c.want)
		}
	}

	for _, c := range []struct {
		name string
		req  *outpostv1.ListSessionsRequest
	}{
		{"negative page size", &outpostv1.ListSessionsRequest{PageSize: -1}},
		{"bad agent", &outpostv1.ListSessionsRequest{AgentId: "agent-a"}},
		{"bad token", &outpostv1.ListSessionsRequest{PageToken: "!!"}},
		{"token without id", &outpostv1.ListSessionsRequest{PageToken: "MTIz"}},
		{"reversed range", &outpostv1.ListSessionsRequest{StartTime: timestamppb.New(base.Add(time.Hour)), EndTime: timestamppb.New(base)}},
		{"invalid time", &outpostv1.ListSessionsRequest{StartTime: &timestamppb.Timestamp{Seconds: -1 << 62}}},
	} {
		if _, err := s.ListSessions(ctx, c.req); status.Code(err) != codes.InvalidArgument {
			t.Errorf("%s: %v, want InvalidArgument", c.name, err)
		}
	}
}

// MaxSessionPageSize bounds a page, and the token continues after it.
func TestListSessionsPageCap(t *testing.T) {
	s := sessionService(t, MaxSessionPageSize+1, time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))
	resp, err := s.ListSessions(context.Background(), &outpostv1.ListSessionsRequest{PageSize: MaxSessionPageSize + 100})
	if err != nil {
		t.Fatal(err)
	}
	if len(resp.GetSessions()) != MaxSessionPageSize || resp.GetNextPageToken() == "" {
		t.Fatalf("%d sessions, next %q", len(resp.GetSessions()), resp.GetNextPageToken())
	}
	resp, err = s.ListSessions(context.Background(), &outpostv1.ListSessionsRequest{PageToken: resp.GetNextPageToken()})
	if err != nil || len(resp.GetSessions()) != 1 || resp.GetNextPageToken() != "" {
		t.Fatalf("last page: %v, %v", resp, err)
	}
}
