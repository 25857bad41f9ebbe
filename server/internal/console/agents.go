package console

import (
	"net/http"
	"net/url"
	"strings"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	outpostv1 "github.com/outposthq/outpost/gen/outpost/v1"
)

// Agents page sizes: a page shows agentsPageSize agents; a name filter
// scans the list nameScanPageSize agents per call, at most nameScanPages
// calls per page shown (the next page goes on from there).
const (
	agentsPageSize   = 50
	nameScanPageSize = 1000
	nameScanPages    = 20
)

// agentsQuery is the agents table's filter and position.
type agentsQuery struct {
	Status string // "", "online", "unresponsive" or "offline"
	Name   string // a case-insensitive part of the name
	Page   string // the API's page token; "" for the first page
}

var statusFilters = map[string]outpostv1.AgentStatus{
	"":             outpostv1.AgentStatus_AGENT_STATUS_UNSPECIFIED,
	"online":       outpostv1.AgentStatus_AGENT_STATUS_ONLINE,
	"unresponsive": outpostv1.AgentStatus_AGENT_STATUS_UNRESPONSIVE,
	"offline":      outpostv1.AgentStatus_AGENT_STATUS_OFFLINE,
}

func parseAgentsQuery(q url.Values) agentsQuery {
	a := agentsQuery{Status: q.Get("status"), Name: strings.TrimSpace(q.Get("name")), Page: q.Get("page")}
	if _, ok := statusFilters[a.Status]; !ok {
		a.Status = ""
	}
	return a
}

// with returns the query string of q at another page.
func (q agentsQuery) at(page string) string {
	v := url.Values{}
	if q.Status != "" {
		v.Set("status", q.Status)
	}
	if q.Name != "" {
		v.Set("name", q.Name)
	}
	if page != "" {
		v.Set("page", page)
	}
	if len(v) == 0 {
		return ""
	}
	return "?" + v.Encode()
}

// agentsData is the agents page's data.
type agentsData struct {
	Query   agentsQuery
	Agents  []*outpostv1.Agent
	RowsURL string
	NextURL string
	// FirstURL is set when this is not the first page.
	FirstURL string
	Deleted  string
}

// listAgents reads one page of the table through ListAgents.
func (c *Console) listAgents(rq *request, q agentsQuery) (agentsData, error) {
	d := agentsData{Query: q, RowsURL: "/ui/agents/rows" + q.at(q.Page)}
	if q.Page != "" {
		d.FirstURL = "/ui/agents" + q.at("")
	}
	req := &outpostv1.ListAgentsRequest{PageSize: agentsPageSize, PageToken: q.Page, Status: statusFilters[q.Status]}
	if q.Name == "" {
		resp, err := call(rq, c.agents.ListAgents, req)
		if err != nil {
			return d, err
		}
		d.Agents = resp.GetAgents()
		if next := resp.GetNextPageToken(); next != "" {
			d.NextURL = "/ui/agents" + q.at(next)
		}
		return d, nil
	}
	want := strings.ToLower(q.Name)
	req.PageSize = nameScanPageSize
	d.Agents = []*outpostv1.Agent{}
	for range nameScanPages {
		resp, err := call(rq, c.agents.ListAgents, req)
		if err != nil {
			return d, err
		}
		for _, a := range resp.GetAgents() {
			if strings.Contains(strings.ToLower(a.GetName()), want) {
				d.Agents = append(d.Agents, a)
			}
		}
		req.PageToken = resp.GetNextPageToken()
		if req.PageToken == "" || len(d.Agents) >= agentsPageSize {
			break
		}
	}
	if req.PageToken != "" {
		d.NextURL = "/ui/agents" + q.at(req.PageToken)
	}
	return d, nil
}

func (c *Console) agentsPage(rq *request) {
	d, err := c.listAgents(rq, parseAgentsQuery(rq.r.URL.Query()))
	if err != nil {
		c.apiError(rq, err)
		return
	}
	d.Deleted = rq.r.URL.Query().Get("deleted")
	c.render(rq, http.StatusOK, "agents", view{Title: "Agents", Nav: "agents", Data: d})
}

// agentRows is the table body alone, which the page polls.
func (c *Console) agentRows(rq *request) {
	d, err := c.listAgents(rq, parseAgentsQuery(rq.r.URL.Query()))
	if err != nil {
		http.Error(rq.w, errMessage(err), httpStatus(status.Code(err)))
		return
	}
	c.renderFragment(rq, "agents", "rows", view{Data: d})
}

// agentData is the agent page's data.
type agentData struct {
	Agent    *outpostv1.Agent
	Subnets  string // approved subnets, one per line, for the form
	Domains  string
	Sessions *sessionsData
	// Saved is set right after the approved routes were saved.
	Saved bool
}

func (c *Console) agentPage(rq *request) {
	c.showAgent(rq, http.StatusOK, "")
}

// showAgent renders the agent page, with msg as an error when set.
func (c *Console) showAgent(rq *request, code int, msg string) {
	resp, err := call(rq, c.agents.GetAgent, &outpostv1.GetAgentRequest{AgentId: rq.r.PathValue("id")})
	if err != nil {
		c.apiError(rq, err)
		return
	}
	a := resp.GetAgent()
	d := agentData{
		Agent:   a,
		Subnets: strings.Join(a.GetApprovedRoutes().GetSubnets(), "\n"),
		Domains: strings.Join(a.GetApprovedRoutes().GetDomains(), "\n"),
		Saved:   rq.r.Method == http.MethodGet && rq.r.URL.Query().Get("saved") != "",
	}
	if code == http.StatusOK && c.permsOf(rq.key).Sessions {
		d.Sessions = c.recentSessions(rq, a.GetAgentId())
	}
	if code != http.StatusOK {
		d.Subnets, d.Domains = rq.r.PostFormValue("subnets"), rq.r.PostFormValue("domains")
	}
	c.render(rq, code, "agent", view{Title: a.GetName(), Nav: "agents", Error: msg, Data: d})
}

// setRoutes replaces the agent's approved routes with the form's.
func (c *Console) setRoutes(rq *request) {
	routes := &outpostv1.RouteSet{Subnets: fields(rq.r.PostFormValue("subnets")), Domains: fields(rq.r.PostFormValue("domains"))}
	_, err := call(rq, c.agents.SetApprovedRoutes, &outpostv1.SetApprovedRoutesRequest{AgentId: rq.r.PathValue("id"), Routes: routes})
	if err != nil {
		if status.Code(err) == codes.InvalidArgument {
			c.showAgent(rq, http.StatusBadRequest, errMessage(err))
			return
		}
		c.apiError(rq, err)
		return
	}
	http.Redirect(rq.w, rq.r, "/ui/agents/"+url.PathEscape(rq.r.PathValue("id"))+"?saved=1", http.StatusSeeOther)
}

// deletePage asks to confirm, naming the agent.
func (c *Console) deletePage(rq *request) {
	resp, err := call(rq, c.agents.GetAgent, &outpostv1.GetAgentRequest{AgentId: rq.r.PathValue("id")})
	if err != nil {
		c.apiError(rq, err)
		return
	}
	c.render(rq, http.StatusOK, "delete", view{Title: "Delete " + resp.GetAgent().GetName(), Nav: "agents", Data: resp.GetAgent()})
}

func (c *Console) deleteAgent(rq *request) {
	id := rq.r.PathValue("id")
	name := rq.r.PostFormValue("name")
	if _, err := call(rq, c.agents.DeleteAgent, &outpostv1.DeleteAgentRequest{AgentId: id}); err != nil {
		c.apiError(rq, err)
		return
	}
	c.log.Info("agent deleted from the console", "agent_id", id, "key_id", rq.key.ID)
	if name == "" {
		name = id
	}
	http.Redirect(rq.w, rq.r, "/ui/agents?"+url.Values{"deleted": {name}}.Encode(), http.StatusSeeOther)
}

// fields splits a textarea on newlines, commas and spaces.
func fields(s string) []string {
	return strings.FieldsFunc(s, func(r rune) bool { return r == ',' || r == ' ' || r == '\n' || r == '\r' || r == '\t' })
}

// domainNames lists the names of domain routes.
func domainNames(ds []*outpostv1.DomainRoute) []string {
	out := make([]string, 0, len(ds))
	for _, d := range ds {
		out = append(out, d.GetDomain())
	}
	return out
}

// agentStatus is how a status is shown: a word and a CSS class.
type agentStatus struct{ Text, Class string }

func statusOf(s outpostv1.AgentStatus) agentStatus {
	switch s {
	case outpostv1.AgentStatus_AGENT_STATUS_ONLINE:
		return agentStatus{"online", "st-online"}
	case outpostv1.AgentStatus_AGENT_STATUS_UNRESPONSIVE:
		return agentStatus{"unresponsive", "st-unresponsive"}
	default:
		return agentStatus{"offline", "st-offline"}
	}
}
