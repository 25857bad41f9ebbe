package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	outpostv1 "github.com/outposthq/outpost/gen/outpost/v1"
)

// listFlags are the output flags of the listing commands.
type listFlags struct {
	json  bool
	limit int
}

func (l *listFlags) register(fs *flag.FlagSet, what string, limit int) {
	fs.BoolVar(&l.json, "json", false, "print a JSON array (the API's field names) instead of a table")
	fs.IntVar(&l.limit, "limit", limit, "show at most this many "+what+" (0: all)")
}

// pageSize is the page to ask for when limit rows are wanted at most.
func (l *listFlags) pageSize(max int) int32 {
	if l.limit <= 0 || l.limit > max {
		return int32(max)
	}
	return int32(l.limit)
}

// full reports whether n rows are as many as were asked for.
func (l *listFlags) full(n int) bool { return l.limit > 0 && n >= l.limit }

func runAgentsList(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("agents", stderr, "agents --api-key-file F [--ca-file F | --ca-pin HEX] [--gateway URL] [--status S] [--json] [--limit N]")
	var (
		af     adminFlags
		lf     listFlags
		status string
	)
	af.register(fs)
	lf.register(fs, "agents", 0)
	fs.StringVar(&status, "status", "", "only agents with this status: online, unresponsive or offline (default: all)")
	if err := parse(fs, args); err != nil {
		return err
	}
	req := &outpostv1.ListAgentsRequest{PageSize: lf.pageSize(1000)}
	if status != "" {
		v, ok := outpostv1.AgentStatus_value["AGENT_STATUS_"+strings.ToUpper(status)]
		if !ok || v == 0 {
			return fmt.Errorf("%w: --status %q: want online, unresponsive or offline", errUsage, status)
		}
		req.Status = outpostv1.AgentStatus(v)
	}
	conn, err := af.dial()
	if err != nil {
		return err
	}
	defer conn.Close()
	client := outpostv1.NewAgentAdminServiceClient(conn)
	agents, err := pageThrough(ctx, lf, func(ctx context.Context, token string) ([]*outpostv1.Agent, string, error) {
		req.PageToken = token
		resp, err := client.ListAgents(ctx, req)
		return resp.GetAgents(), resp.GetNextPageToken(), err
	})
	if err != nil {
		return af.callErr(ctx, "list agents", err)
	}
	if lf.json {
		return writeJSON(stdout, agents)
	}
	if len(agents) == 0 {
		fmt.Fprintln(stderr, "no agents; enroll one: outpost gateway token create --api-key-file F, then outpost agent up --token - on its machine")
		return nil
	}
	return writeAgentTable(stdout, agents, time.Now())
}

func runGatewaysList(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("gateways", stderr, "gateways --api-key-file F [--ca-file F | --ca-pin HEX] [--gateway URL] [--json]")
	var (
		af   adminFlags
		asJS bool
	)
	af.register(fs)
	fs.BoolVar(&asJS, "json", false, "print a JSON array (the API's field names) instead of a table")
	if err := parse(fs, args); err != nil {
		return err
	}
	conn, err := af.dial()
	if err != nil {
		return err
	}
	defer conn.Close()
	resp, err := outpostv1.NewAgentAdminServiceClient(conn).ListGateways(ctx, &outpostv1.ListGatewaysRequest{})
	if err != nil {
		return af.callErr(ctx, "list gateways", err)
	}
	if asJS {
		return writeJSON(stdout, resp.GetGateways())
	}
	return writeGatewayTable(stdout, resp.GetGateways(), time.Now())
}

// writeGatewayTable prints one line per gateway replica; the one that
// answered is marked with *.
func writeGatewayTable(w io.Writer, gws []*outpostv1.Gateway, now time.Time) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "REPLICA	NAME	STATE	AGENTS	QUIC	API	STARTED	HEARTBEAT")
	for _, g := range gws {
		id := g.GetReplicaId()
		if g.GetSelf() {
			id += " *"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%s\t%s\t%s\t%s\n", id, dash(g.GetName()),
			strings.ToLower(strings.TrimPrefix(g.GetState().String(), "GATEWAY_STATE_")), g.GetAgentCount(),
			dash(g.GetQuicEndpoint()), dash(g.GetApiEndpoint()), ago(g.GetStartedAt(), now), ago(g.GetHeartbeatAt(), now))
	}
	return tw.Flush()
}

// writeAgentTable prints one line per agent.
func writeAgentTable(w io.Writer, agents []*outpostv1.Agent, now time.Time) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tNAME\tSTATUS\tREMOTE\tROUTES\tSESSIONS\tREPLICAS\tLAST SEEN\tCERT EXPIRES")
	for _, a := range agents {
		routes := append([]string{}, a.GetSubnets()...)
		for _, d := range a.GetDomains() {
			routes = append(routes, d.GetDomain())
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%d\t%d\t%s\t%s\n", a.GetAgentId(), a.GetName(),
			strings.ToLower(strings.TrimPrefix(a.GetStatus().String(), "AGENT_STATUS_")),
			dash(a.GetRemoteAddr()), dash(strings.Join(routes, ",")), a.GetActiveSessions(),
			len(a.GetReplicaIds()), ago(a.GetLastSeen(), now), stamp(a.GetCertNotAfter()))
	}
	return tw.Flush()
}

func runSessionsList(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("sessions", stderr, "sessions --api-key-file F [--ca-file F | --ca-pin HEX] [--gateway URL] [--agent ID] [--target H:P] [--outcome O] [--since D | --from T] [--until T] [--json] [--limit N]")
	var (
		af                   adminFlags
		lf                   listFlags
		since                time.Duration
		from, until          string
		agentID, target, out string
	)
	af.register(fs)
	lf.register(fs, "sessions", 50)
	fs.StringVar(&agentID, "agent", "", "only sessions carried by this agent id")
	fs.StringVar(&target, "target", "", "only sessions to this host:port")
	fs.StringVar(&out, "outcome", "", "only sessions with this outcome (closed, reset, refused, …; open for the sessions still running)")
	fs.DurationVar(&since, "since", 0, "only sessions started within this long before now, e.g. 1h")
	fs.StringVar(&from, "from", "", "only sessions started at or after this time (RFC 3339, e.g. 2026-01-02T15:04:05Z)")
	fs.StringVar(&until, "until", "", "only sessions started before this time (RFC 3339)")
	if err := parse(fs, args); err != nil {
		return err
	}
	req := &outpostv1.ListSessionsRequest{PageSize: lf.pageSize(500), AgentId: agentID, Target: target, Outcome: out}
	switch {
	case since < 0:
		return fmt.Errorf("%w: --since %v must be positive", errUsage, since)
	case since > 0 && from != "":
		return fmt.Errorf("%w: give --since or --from, not both", errUsage)
	case since > 0:
		req.StartTime = timestamppb.New(time.Now().Add(-since))
	}
	for _, t := range []struct {
		flag, v string
		into    **timestamppb.Timestamp
	}{{"from", from, &req.StartTime}, {"until", until, &req.EndTime}} {
		if t.v == "" {
			continue
		}
		ts, err := time.Parse(time.RFC3339, t.v)
		if err != nil {
			return fmt.Errorf("%w: --%s %q: want an RFC 3339 time such as 2026-01-02T15:04:05Z", errUsage, t.flag, t.v)
		}
		*t.into = timestamppb.New(ts)
	}
	conn, err := af.dial()
	if err != nil {
		return err
	}
	defer conn.Close()
	client := outpostv1.NewAgentAdminServiceClient(conn)
	sessions, err := pageThrough(ctx, lf, func(ctx context.Context, token string) ([]*outpostv1.Session, string, error) {
		req.PageToken = token
		resp, err := client.ListSessions(ctx, req)
		return resp.GetSessions(), resp.GetNextPageToken(), err
	})
	if err != nil {
		return af.callErr(ctx, "list sessions", err)
	}
	if lf.json {
		return writeJSON(stdout, sessions)
	}
	if len(sessions) == 0 {
		fmt.Fprintln(stderr, "no sessions match")
		return nil
	}
	return writeSessionTable(stdout, sessions)
}

// writeSessionTable prints one line per session, newest first as listed.
func writeSessionTable(w io.Writer, sessions []*outpostv1.Session) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "STARTED\tSESSION\tTARGET\tAGENT\tOUTCOME\tUP\tDOWN\tDURATION\tKEY\tCLIENT\tREASON")
	for _, s := range sessions {
		outcome, duration := s.GetOutcome(), "-"
		if s.GetEndedAt() == nil {
			outcome = "open"
		} else {
			duration = s.GetDuration().AsDuration().Round(time.Millisecond).String()
		}
		agent := s.GetAgentId()
		if agent == "" {
			agent = "direct"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", stamp(s.GetStartedAt()), s.GetSessionId(), s.GetTarget(), agent,
			outcome, size(s.GetBytesUp()), size(s.GetBytesDown()), duration, dash(s.GetKeyId()), dash(s.GetClientAddr()), dash(s.GetReason()))
	}
	return tw.Flush()
}

// pageTimeout bounds the call for one page.
const pageTimeout = 30 * time.Second

// pageThrough calls page with each page token, from the first page, until
// the last page or until it holds lf.limit items, and returns the items,
// at most lf.limit of them.
func pageThrough[T any](ctx context.Context, lf listFlags, page func(ctx context.Context, token string) ([]T, string, error)) ([]T, error) {
	var (
		all   []T
		token string
	)
	for {
		pctx, cancel := context.WithTimeout(ctx, pageTimeout)
		items, next, err := page(pctx, token)
		cancel()
		if err != nil {
			return nil, err
		}
		all = append(all, items...)
		if next == "" || lf.full(len(all)) {
			break
		}
		token = next
	}
	if lf.limit > 0 && len(all) > lf.limit {
		all = all[:lf.limit]
	}
	return all, nil
}

// writeJSON prints msgs as a JSON array, one element a line, with the
// REST API's field names.
func writeJSON[M proto.Message](w io.Writer, msgs []M) error {
	opts := protojson.MarshalOptions{UseProtoNames: true, EmitUnpopulated: true}
	var b strings.Builder
	b.WriteString("[")
	for i, m := range msgs {
		if i > 0 {
			b.WriteString(",")
		}
		j, err := opts.Marshal(m)
		if err != nil {
			return err
		}
		b.WriteString("\n  ")
		b.Write(j)
	}
	if len(msgs) > 0 {
		b.WriteString("\n")
	}
	b.WriteString("]\n")
	_, err := io.WriteString(w, b.String())
	return err
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// stamp is a time as RFC 3339 in UTC, "-" when unset.
func stamp(ts *timestamppb.Timestamp) string {
	if ts == nil {
		return "-"
	}
	return ts.AsTime().UTC().Format(time.RFC3339)
}

// ago is how long before now ts was, to the second: "42s ago".
func ago(ts *timestamppb.Timestamp, now time.Time) string {
	if ts == nil {
		return "-"
	}
	d := now.Sub(ts.AsTime()).Round(time.Second)
	if d < 0 {
		d = 0
	}
	return d.String() + " ago"
}

// size is a byte count as people read it: 512 B, 1.5 KiB, 3.2 MiB.
func size(n uint64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	v, i := float64(n)/unit, 0
	for v >= unit && i < 4 {
		v /= unit
		i++
	}
	return fmt.Sprintf("%.1f %ciB", v, "KMGTP"[i])
}
