package console

import (
	"errors"
	"net/http"
	"strings"

	"github.com/outposthq/outpost/server/internal/auth"
)

// signinData is the sign-in page's data.
type signinData struct {
	Next, Reason string
}

// signedOutReasons are the reasons the sign-in page gives, by the code in
// its query: only these, so a link cannot put words of its own on the page.
var signedOutReasons = map[string]string{
	"expired": "Your session expired",
	"revoked": "The API key of your session was revoked",
}

func (c *Console) signinPage(w http.ResponseWriter, r *http.Request) {
	d := signinData{Next: safeNext(r.URL.Query().Get("next")), Reason: signedOutReasons[r.URL.Query().Get("reason")]}
	c.execute(w, http.StatusOK, "signin", "layout", view{Title: "Sign in", Data: d})
}

// signin exchanges an API key for a session cookie. The key is checked as
// the API checks it; it is kept only in the server's memory.
func (c *Console) signin(w http.ResponseWriter, r *http.Request) {
	r.Body = http.MaxBytesReader(w, r.Body, maxFormBytes)
	if err := r.ParseForm(); err != nil {
		http.Error(w, "the form could not be read", http.StatusBadRequest)
		return
	}
	d := signinData{Next: safeNext(r.PostFormValue("next"))}
	fail := func(code int, msg string) {
		if code == http.StatusUnauthorized {
			c.log.Warn("console sign-in refused", "reason", msg, "remote", r.RemoteAddr)
		}
		c.execute(w, code, "signin", "layout", view{Title: "Sign in", Error: msg, Data: d})
	}
	secret := strings.TrimSpace(r.PostFormValue("key"))
	if secret == "" {
		fail(http.StatusBadRequest, "enter an API key (it starts with "+auth.KeyPrefix+")")
		return
	}
	key, err := c.lookup(r.Context(), auth.HashKey(secret))
	switch {
	case errors.Is(err, auth.ErrUnknownKey):
		fail(http.StatusUnauthorized, "unknown api key")
		return
	case err != nil:
		c.log.Error("api key lookup failed", "error", err)
		fail(http.StatusServiceUnavailable, storeUnavailable)
		return
	case key.Revoked:
		fail(http.StatusUnauthorized, "api key revoked")
		return
	}
	id, _, err := c.sessions.create(secret, c.cfg.Now())
	if err != nil {
		c.log.Error("sign-in failed", "error", err)
		fail(http.StatusInternalServerError, "sign-in failed")
		return
	}
	// A previous session of this browser ends with the new one.
	if old, err := r.Cookie(CookieName); err == nil {
		c.sessions.remove(old.Value)
	}
	http.SetCookie(w, &http.Cookie{
		Name: CookieName, Value: id, Path: "/",
		MaxAge:   int(c.cfg.MaxAge.Seconds()),
		HttpOnly: true, Secure: true, SameSite: http.SameSiteStrictMode,
	})
	c.log.Info("console sign-in", "key_id", key.ID)
	next := d.Next
	if next == "" {
		next = c.home(key)
	}
	http.Redirect(w, r, next, http.StatusSeeOther)
}

// home is the first page a key may see.
func (c *Console) home(k auth.Key) string {
	p := c.permsOf(k)
	switch {
	case p.AgentsRead:
		return "/ui/agents"
	case p.Enroll:
		return "/ui/enroll"
	case p.Resolve:
		return "/ui/connect"
	case p.Sessions:
		return "/ui/sessions"
	}
	return "/ui/account"
}

func (c *Console) signout(rq *request) {
	c.sessions.remove(rq.cookie)
	clearCookie(rq.w)
	http.Redirect(rq.w, rq.r, "/ui/signin", http.StatusSeeOther)
}

// account shows the signed-in key and what it may do.
func (c *Console) account(rq *request) {
	c.render(rq, http.StatusOK, "account", view{Title: "Account", Nav: "account", Data: rq.key})
}

// safeNext keeps a post-sign-in target only if it is a console path on
// this origin.
func safeNext(next string) string {
	if !strings.HasPrefix(next, Path) || strings.HasPrefix(next, "//") || strings.ContainsAny(next, "\\\r\n") {
		return ""
	}
	if strings.HasPrefix(next, "/ui/signin") {
		return ""
	}
	return next
}
