package console

import "net/http"

// sessionsData is the Sessions page's data.
type sessionsData struct {
	Unavailable bool
}

// recentSessions is an agent's latest sessions, for its page.
func (c *Console) recentSessions(rq *request, agentID string) *sessionsData {
	return &sessionsData{Unavailable: true}
}

func (c *Console) sessionsPage(rq *request) {
	c.render(rq, http.StatusOK, "sessions", view{Title: "Sessions", Nav: "sessions", Data: &sessionsData{Unavailable: true}})
}
