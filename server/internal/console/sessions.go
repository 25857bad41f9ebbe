package console

import (
	"net/http"
	"net/url"
	"strings"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	outpostv1 "github.com/outposthq/outpost/gen/outpost/v1"
)

// Sessions page sizes: the audit page and an agent's recent sessions.
const (
	sessionsPageSize = 50
	recentSessions   = 10
)

// sinceChoices are the time filters of the Sessions page.
var sinceChoices = []struct{ Value, Label string }{
	{"", "any time"}, {"1h", "last hour"}, {"24h", "last 24 hours"}, {"168h", "last 7 days"}, {"720h", "last 30 days"},
}

// commonOutcomes are offered in the outcome filter; any other is typed.
var commonOutcomes = []string{"open", "ok", "closed", "reset", "error", "connect_failed", "max_duration", "idle_timeout"}

// sessionsQuery is the audit's filter and position.
type sessionsQuery struct {
	Agent, Target, Outcome, Since, Page string
}

func parseSessionsQuery(q url.Values) sessionsQuery {
	s := sessionsQuery{
		Agent: strings.TrimSpace(q.Get("agent")), Target: strings.TrimSpace(q.Get("target")),
		Outcome: strings.TrimSpace(q.Get("outcome")), Since: q.Get("since"), Page: q.Get("page"),
	}
	if _, err := time.ParseDuration(s.Since); err != nil {
		s.Since = ""
	}
	return s
}

// at returns the query string of q at another page.
func (q sessionsQuery) at(page string) string {
	v := url.Values{}
	for k, x := range map[string]string{"agent": q.Agent, "target": q.Target, "outcome": q.Outcome, "since": q.Since, "page": page} {
		if x != "" {
			v.Set(k, x)
		}
	}
	if len(v) == 0 {
		return ""
	}
	return "?" + v.Encode()
}

// sessionRow is one audit record with its agent's name, when known.
type sessionRow struct {
	*outpostv1.Session
	AgentName string
}

// sessionsData is the Sessions page's data (and an agent's recent sessions).
type sessionsData struct {
	Query    sessionsQuery
	Sessions []sessionRow
	NextURL  string
	FirstURL string
	// EmptyText says what to do when there is no session.
	EmptyText string
	Since     []struct{ Value, Label string }
	Outcomes  []string
	// Unavailable is set when the audit could not be read (on an agent's
	// page, which still shows).
	Unavailable string
}

// listSessions reads one page of the audit through ListSessions.
func (c *Console) listSessions(rq *request, q sessionsQuery, size int32) (*sessionsData, error) {
	d := &sessionsData{Query: q, Since: sinceChoices, Outcomes: commonOutcomes,
		EmptyText: "No session yet. Sessions appear here once a client connects with a session token: create one on the Connect page."}
	if q.Agent != "" || q.Target != "" || q.Outcome != "" || q.Since != "" {
		d.EmptyText = "No session matches this filter."
	}
	if q.Page != "" {
		d.FirstURL = "/ui/sessions" + q.at("")
	}
	req := &outpostv1.ListSessionsRequest{PageSize: size, PageToken: q.Page, AgentId: q.Agent, Target: q.Target, Outcome: q.Outcome}
	if since, err := time.ParseDuration(q.Since); err == nil && since > 0 {
		req.StartTime = timestamppb.New(c.cfg.Now().Add(-since))
	}
	resp, err := call(rq, c.agents.ListSessions, req)
	if err != nil {
		return d, err
	}
	if next := resp.GetNextPageToken(); next != "" {
		d.NextURL = "/ui/sessions" + q.at(next)
	}
	names := c.agentNames(rq, resp.GetSessions())
	for _, s := range resp.GetSessions() {
		d.Sessions = append(d.Sessions, sessionRow{Session: s, AgentName: names[s.GetAgentId()]})
	}
	return d, nil
}

// agentNames looks up the names of the agents of sessions, when the key
// may read agents; a deleted agent has none.
func (c *Console) agentNames(rq *request, sessions []*outpostv1.Session) map[string]string {
	names := map[string]string{}
	if !c.permsOf(rq.key).AgentsRead {
		return names
	}
	for _, s := range sessions {
		id := s.GetAgentId()
		if _, done := names[id]; done || id == "" {
			continue
		}
		names[id] = ""
		if resp, err := call(rq, c.agents.GetAgent, &outpostv1.GetAgentRequest{AgentId: id}); err == nil {
			names[id] = resp.GetAgent().GetName()
		}
	}
	return names
}

// recentSessions is an agent's latest sessions, for its page.
func (c *Console) recentSessions(rq *request, agentID string) *sessionsData {
	d, err := c.listSessions(rq, sessionsQuery{Agent: agentID}, recentSessions)
	if err != nil {
		d.Unavailable = errMessage(err)
	}
	d.EmptyText = "No session through this agent yet."
	return d
}

func (c *Console) sessionsPage(rq *request) {
	d, err := c.listSessions(rq, parseSessionsQuery(rq.r.URL.Query()), sessionsPageSize)
	if err != nil {
		c.apiError(rq, err)
		return
	}
	c.render(rq, http.StatusOK, "sessions", view{Title: "Sessions", Nav: "sessions", Data: d})
}
