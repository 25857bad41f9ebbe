package console

import (
	"net"
	"net/http"
	"strings"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"

	outpostv1 "github.com/outposthq/outpost/gen/outpost/v1"
	"github.com/outposthq/outpost/internal/shellword"
)

// tokenFile is the file the printed connect commands read the session
// token from: a token given as an argument would show in ps.
const tokenFile = "outpost-session.token"

// connectForm is what the connect form holds.
type connectForm struct {
	Target, AgentID, TTL string
	Reusable             bool
}

// connectData is the connect page's data.
type connectData struct {
	Form    connectForm
	Agents  []*outpostv1.Agent
	Resolve *outpostv1.ResolveTargetResponse
	Session *outpostv1.CreateSessionResponse
	// The commands that use the session token.
	SaveToken, Connect, SSH string
}

func (c *Console) connectPage(rq *request) {
	q := rq.r.URL.Query()
	d := connectData{Form: connectForm{Target: q.Get("target"), AgentID: q.Get("agent"), TTL: "5m"}}
	d.Agents = c.onlineAgents(rq)
	c.render(rq, http.StatusOK, "connect", view{Title: "Connect", Nav: "connect", Data: d})
}

// onlineAgents lists up to one page of online agents for the agent picker,
// or none when the key may not read agents.
func (c *Console) onlineAgents(rq *request) []*outpostv1.Agent {
	if !c.permsOf(rq.key).AgentsRead {
		return nil
	}
	resp, err := call(rq, c.agents.ListAgents, &outpostv1.ListAgentsRequest{PageSize: 1000, Status: outpostv1.AgentStatus_AGENT_STATUS_ONLINE})
	if err != nil {
		return nil
	}
	return resp.GetAgents()
}

// connect previews the route to the form's target and, when asked to,
// mints a session token for it.
func (c *Console) connect(rq *request) {
	f := connectForm{
		Target:   strings.TrimSpace(rq.r.PostFormValue("target")),
		AgentID:  strings.TrimSpace(rq.r.PostFormValue("agent")),
		TTL:      strings.TrimSpace(rq.r.PostFormValue("ttl")),
		Reusable: rq.r.PostFormValue("reusable") != "",
	}
	d := connectData{Form: f, Agents: c.onlineAgents(rq)}
	show := func(code int, msg string) {
		c.render(rq, code, "connect", view{Title: "Connect", Nav: "connect", Error: msg, Data: d})
	}
	res, err := call(rq, c.routing.ResolveTarget, &outpostv1.ResolveTargetRequest{Target: f.Target, AgentId: f.AgentID})
	if err != nil {
		if status.Code(err) == codes.InvalidArgument {
			show(http.StatusBadRequest, errMessage(err))
			return
		}
		c.apiError(rq, err)
		return
	}
	d.Resolve = res
	if rq.r.PostFormValue("action") != "token" {
		show(http.StatusOK, "")
		return
	}
	if !c.permsOf(rq.key).CreateSession {
		show(http.StatusForbidden, "API key "+rq.key.ID+" lacks scope \"sessions.create\" needed for a session token")
		return
	}
	req := &outpostv1.CreateSessionRequest{Target: f.Target, AgentId: f.AgentID, Reusable: f.Reusable}
	if f.TTL != "" {
		ttl, err := time.ParseDuration(f.TTL)
		if err != nil {
			show(http.StatusBadRequest, "token lifetime: want a duration such as 5m or 1h")
			return
		}
		req.Ttl = durationpb.New(ttl)
	}
	sess, err := call(rq, c.routing.CreateSession, req)
	if err != nil {
		code := httpStatus(status.Code(err))
		show(code, errMessage(err))
		return
	}
	c.log.Info("session token minted from the console", "session_id", sess.GetSessionId(), "key_id", rq.key.ID)
	d.Session = sess
	gw := "https" + strings.TrimPrefix(strings.TrimSuffix(sess.GetConnectUrl(), "/v1/connect"), "wss")
	connect := shellword.Join("outpost", "connect", "--gateway", gw, "--ca-pin", sess.GetGatewayCaSpkiSha256(), "--token-file", tokenFile)
	d.SaveToken = "(umask 077; cat > " + tokenFile + ")"
	d.Connect = connect + " " + shellword.Join("--listen", "127.0.0.1:10022")
	d.SSH = "ssh -o " + shellword.Quote("ProxyCommand="+connect+" --stdio") + " " + shellword.Quote(hostOf(f.Target))
	show(http.StatusOK, "")
}

func hostOf(target string) string {
	h, _, err := net.SplitHostPort(target)
	if err != nil {
		return target
	}
	return h
}
