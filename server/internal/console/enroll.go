package console

import (
	"context"
	"net/http"
	"strings"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"

	outpostv1 "github.com/outposthq/outpost/gen/outpost/v1"
)

// defaultTokenTTL is the enroll form's token lifetime.
const defaultTokenTTL = "1h"

// enrollForm is what the enroll form holds.
type enrollForm struct {
	Name, Subnets, Domains, TTL string
}

// enrollData is the enroll page's data: the form, and once a token is
// minted, the token (shown this once) and how to use it.
type enrollData struct {
	Form      enrollForm
	Token     string
	TokenID   string
	ExpiresAt time.Time
	Command   string
	StatusURL string
}

func (c *Console) enrollPage(rq *request) {
	c.render(rq, http.StatusOK, "enroll", view{Title: "Enroll an agent", Nav: "enroll",
		Data: enrollData{Form: enrollForm{TTL: defaultTokenTTL}}})
}

// createToken mints an enrollment token with the form's settings and shows
// it once.
func (c *Console) createToken(rq *request) {
	f := enrollForm{
		Name:    strings.TrimSpace(rq.r.PostFormValue("name")),
		Subnets: rq.r.PostFormValue("subnets"),
		Domains: rq.r.PostFormValue("domains"),
		TTL:     strings.TrimSpace(rq.r.PostFormValue("ttl")),
	}
	fail := func(code int, msg string) {
		c.render(rq, code, "enroll", view{Title: "Enroll an agent", Nav: "enroll", Error: msg, Data: enrollData{Form: f}})
	}
	req := &outpostv1.CreateEnrollmentTokenRequest{AgentName: f.Name}
	if f.TTL != "" {
		ttl, err := time.ParseDuration(f.TTL)
		if err != nil {
			fail(http.StatusBadRequest, "token lifetime: want a duration such as 30m, 1h or 24h")
			return
		}
		req.Ttl = durationpb.New(ttl)
	}
	if s, d := fields(f.Subnets), fields(f.Domains); len(s)+len(d) > 0 {
		req.Routes = &outpostv1.RouteSet{Subnets: s, Domains: d}
	}
	resp, err := call(rq, c.enroll.CreateEnrollmentToken, req)
	if err != nil {
		if status.Code(err) == codes.InvalidArgument {
			fail(http.StatusBadRequest, errMessage(err))
			return
		}
		c.apiError(rq, err)
		return
	}
	c.log.Info("enrollment token minted from the console", "token_id", resp.GetTokenId(), "key_id", rq.key.ID)
	d := enrollData{
		Form:      f,
		Token:     resp.GetToken(),
		TokenID:   resp.GetTokenId(),
		ExpiresAt: resp.GetExpiresAt().AsTime(),
		Command:   "outpost agent up --token -",
		StatusURL: "/ui/enroll/status?jti=" + resp.GetTokenId(),
	}
	c.render(rq, http.StatusOK, "enroll", view{Title: "Enroll an agent", Nav: "enroll", Data: d})
}

// enrollStatusData is what the enroll page's status fragment shows.
type enrollStatusData struct {
	AgentID string
	Agent   *outpostv1.Agent
	Online  bool
	Error   string
}

// enrollStatus tells whether an agent enrolled with the token jti yet, and
// whether it is online.
func (c *Console) enrollStatus(rq *request) {
	var d enrollStatusData
	jti := rq.r.URL.Query().Get("jti")
	if c.cfg.Enrolled != nil && jti != "" {
		ctx, cancel := context.WithTimeout(rq.r.Context(), callTimeout)
		id, err := c.cfg.Enrolled(ctx, jti)
		cancel()
		if err != nil {
			d.Error = "the gateway's store is unavailable; still trying"
		}
		d.AgentID = id
	}
	if d.AgentID != "" && c.permsOf(rq.key).AgentsRead {
		resp, err := call(rq, c.agents.GetAgent, &outpostv1.GetAgentRequest{AgentId: d.AgentID})
		if err != nil {
			d.Error = errMessage(err)
		} else {
			d.Agent = resp.GetAgent()
			d.Online = d.Agent.GetStatus() == outpostv1.AgentStatus_AGENT_STATUS_ONLINE
		}
	}
	c.renderFragment(rq, "enroll", "status", view{Data: d})
}
