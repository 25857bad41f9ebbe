// Package console is the gateway's web console, served at /ui/ on the API
// port: server-rendered pages (html/template, embedded with go:embed) for
// the fleet of agents, enrollment, routing previews and session tokens, the
// session audit and API keys. A browser signs in once with an API key and
// gets a session cookie; every page then calls the gateway's own gRPC
// services in-process with that key, so the API's authentication, scopes
// and validation apply unchanged. The pages need no JavaScript but a small
// embedded file for polling, countdowns and copy buttons, and run under a
// strict Content-Security-Policy (no inline script, no other origin).
package console

import (
	"cmp"
	"context"
	"crypto/rand"
	"embed"
	"errors"
	"fmt"
	"html/template"
	"io"
	"io/fs"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/hashicorp/go-hclog"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	outpostv1 "github.com/outposthq/outpost/gen/outpost/v1"
	"github.com/outposthq/outpost/server/internal/apikey"
	"github.com/outposthq/outpost/server/internal/auth"
	"github.com/outposthq/outpost/server/internal/store"
)

// Path is where the console is mounted on the API port.
const Path = "/ui/"

// CookieName is the session cookie. The __Host- prefix makes browsers
// insist on Secure, Path=/ and no Domain.
const CookieName = "__Host-outpost-console"

// Defaults of Config.
const (
	DefaultIdleTimeout = 30 * time.Minute
	DefaultMaxAge      = 12 * time.Hour
	DefaultMaxSessions = 1000
)

// maxFormBytes bounds every form a page posts.
const maxFormBytes = 64 << 10

// storeUnavailable is what a page says when the store does not answer.
const storeUnavailable = "the gateway's store is unavailable; try again shortly"

// callTimeout bounds each API call a page makes.
const callTimeout = 15 * time.Second

// csp is the Content-Security-Policy of every response: only this origin's
// own script, style and images; no inline script or style, no framing, no
// form posting elsewhere.
const csp = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; " +
	"form-action 'self'; frame-ancestors 'none'; base-uri 'none'"

//go:embed templates/*.html
var templateFS embed.FS

//go:embed static
var staticFS embed.FS

// KeyStore is what the console needs of the store to check API keys and to
// manage them on the API keys page.
type KeyStore interface {
	apikey.Store
	ListAPIKeys(ctx context.Context) ([]store.APIKey, error)
	RevokeAPIKey(ctx context.Context, id string) error
}

// Config configures a Console. Conn and Keys are required.
type Config struct {
	// Conn reaches the gateway's gRPC services in-process (through the
	// interceptors that authorize API calls). Required.
	Conn grpc.ClientConnInterface
	// Keys is the API key store: sign-in checks keys against it, and the
	// API keys page manages them. Required.
	Keys KeyStore
	// Enrolled returns the id of the agent that enrolled with the
	// enrollment token jti, or "" while none has. Optional: if nil, the
	// enroll page does not notice the new agent.
	Enrolled func(ctx context.Context, jti string) (string, error)
	// RenewBefore is how long before its expiry an agent certificate is
	// renewed: certificates closer to expiry are highlighted. If zero, none
	// is.
	RenewBefore time.Duration
	// IdleTimeout ends a session not used for this long. If zero, 30 min.
	IdleTimeout time.Duration
	// MaxAge ends a session this long after sign-in. If zero, 12 h.
	MaxAge time.Duration
	// MaxSessions bounds the signed-in sessions; signing in past it ends
	// the least recently used one. If zero, 1,000.
	MaxSessions int
	// Now is the clock. If nil, time.Now.
	Now func() time.Time
	// Rand supplies session ids, CSRF tokens and API key secrets. If nil,
	// crypto/rand.
	Rand io.Reader
	// Logger logs refused requests and failures. If nil, nothing is logged.
	Logger hclog.Logger
}

// Console serves the web console. It is an http.Handler, safe for
// concurrent use; it starts no goroutine and needs no Close.
type Console struct {
	cfg      Config
	log      hclog.Logger
	lookup   auth.Lookup
	sessions *sessionTable
	pages    map[string]*template.Template
	handler  http.Handler

	agents  outpostv1.AgentAdminServiceClient
	enroll  outpostv1.EnrollmentServiceClient
	routing outpostv1.RouteResolveServiceClient
}

// New returns a console for cfg. It fails when a required field is missing
// or a template does not parse.
func New(cfg Config) (*Console, error) {
	if cfg.Conn == nil || cfg.Keys == nil {
		return nil, errors.New("console: Conn and Keys are required")
	}
	if cfg.IdleTimeout < 0 || cfg.MaxAge < 0 || cfg.MaxSessions < 0 {
		return nil, errors.New("console: negative IdleTimeout, MaxAge or MaxSessions")
	}
	cfg.IdleTimeout = cmp.Or(cfg.IdleTimeout, DefaultIdleTimeout)
	cfg.MaxAge = cmp.Or(cfg.MaxAge, DefaultMaxAge)
	cfg.MaxSessions = cmp.Or(cfg.MaxSessions, DefaultMaxSessions)
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Rand == nil {
		cfg.Rand = rand.Reader
	}
	log := cfg.Logger
	if log == nil {
		log = hclog.NewNullLogger()
	}
	c := &Console{
		cfg:      cfg,
		log:      log,
		lookup:   apikey.Lookup(cfg.Keys),
		sessions: newSessionTable(cfg.IdleTimeout, cfg.MaxAge, cfg.MaxSessions, cfg.Rand),
		agents:   outpostv1.NewAgentAdminServiceClient(cfg.Conn),
		enroll:   outpostv1.NewEnrollmentServiceClient(cfg.Conn),
		routing:  outpostv1.NewRouteResolveServiceClient(cfg.Conn),
	}
	var err error
	if c.pages, err = c.parseTemplates(); err != nil {
		return nil, err
	}
	c.handler = c.routes()
	return c, nil
}

// ServeHTTP serves the pages under Path.
func (c *Console) ServeHTTP(w http.ResponseWriter, r *http.Request) { c.handler.ServeHTTP(w, r) }

func (c *Console) routes() http.Handler {
	mux := http.NewServeMux()
	static, _ := fs.Sub(staticFS, "static")
	mux.Handle("GET /ui/static/", http.StripPrefix("/ui/static/", http.FileServerFS(static)))
	mux.Handle("GET /ui/{$}", c.page("", func(rq *request) {
		http.Redirect(rq.w, rq.r, c.home(rq.key), http.StatusSeeOther)
	}))
	mux.HandleFunc("GET /ui/signin", c.signinPage)
	mux.HandleFunc("POST /ui/signin", c.signin)
	mux.Handle("POST /ui/signout", c.page("", c.signout))
	mux.Handle("GET /ui/account", c.page("", c.account))

	mux.Handle("GET /ui/agents", c.page(auth.ScopeAgentsRead, c.agentsPage))
	mux.Handle("GET /ui/agents/rows", c.fragment(auth.ScopeAgentsRead, c.agentRows))
	mux.Handle("GET /ui/agents/{id}", c.page(auth.ScopeAgentsRead, c.agentPage))
	mux.Handle("POST /ui/agents/{id}/routes", c.page(auth.ScopeAgentsWrite, c.setRoutes))
	mux.Handle("GET /ui/agents/{id}/delete", c.page(auth.ScopeAgentsWrite, c.deletePage))
	mux.Handle("POST /ui/agents/{id}/delete", c.page(auth.ScopeAgentsWrite, c.deleteAgent))

	mux.Handle("GET /ui/enroll", c.page(auth.ScopeEnrollCreate, c.enrollPage))
	mux.Handle("POST /ui/enroll", c.page(auth.ScopeEnrollCreate, c.createToken))
	mux.Handle("GET /ui/enroll/status", c.fragment(auth.ScopeEnrollCreate, c.enrollStatus))

	mux.Handle("GET /ui/connect", c.page(auth.ScopeRoutesRead, c.connectPage))
	mux.Handle("POST /ui/connect", c.page(auth.ScopeRoutesRead, c.connect))

	mux.Handle("GET /ui/sessions", c.page(auth.ScopeSessionsRead, c.sessionsPage))

	mux.Handle("GET /ui/keys", c.page(auth.ScopeAll, c.keysPage))
	mux.Handle("POST /ui/keys", c.page(auth.ScopeAll, c.createKey))
	mux.Handle("POST /ui/keys/{id}/revoke", c.page(auth.ScopeAll, c.revokeKey))

	// Cross-origin POSTs are refused (Sec-Fetch-Site, else Origin against
	// Host) before any handler runs, sign-in included; the CSRF token then
	// guards every signed-in form.
	cop := http.NewCrossOriginProtection()
	cop.SetDenyHandler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c.log.Warn("refused a cross-origin request", "path", r.URL.Path, "origin", r.Header.Get("Origin"))
		http.Error(w, "cross-origin request refused", http.StatusForbidden)
	}))
	return securityHeaders(cop.Handler(mux))
}

// securityHeaders sets the headers every console response carries.
func securityHeaders(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		h.Set("Content-Security-Policy", csp)
		h.Set("X-Frame-Options", "DENY")
		h.Set("X-Content-Type-Options", "nosniff")
		h.Set("Referrer-Policy", "no-referrer")
		h.Set("Cross-Origin-Opener-Policy", "same-origin")
		h.Set("Cross-Origin-Resource-Policy", "same-origin")
		if strings.HasPrefix(r.URL.Path, "/ui/static/") {
			h.Set("Cache-Control", "no-cache")
		} else {
			h.Set("Cache-Control", "no-store")
		}
		next.ServeHTTP(w, r)
	})
}

// request is a signed-in request being served.
type request struct {
	w   http.ResponseWriter
	r   *http.Request
	ctx context.Context // carries the key for API calls
	s   *session
	key auth.Key
	// cookie is the session cookie's value.
	cookie string
}

// page wraps a signed-in page or action: without a live session a GET goes
// to the sign-in page and a POST is refused (401); a POST needs the
// session's CSRF token (403 without); the key must carry scope (403
// without; "" means any key). The API checks the key again on every call.
func (c *Console) page(scope string, h func(*request)) http.Handler {
	return c.authorized(scope, false, h)
}

// fragment is page for the parts of pages that scripts fetch: 401 instead
// of a redirect when the session is gone, so the script reloads the page.
func (c *Console) fragment(scope string, h func(*request)) http.Handler {
	return c.authorized(scope, true, h)
}

func (c *Console) authorized(scope string, fragment bool, h func(*request)) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		rq, ok := c.signedIn(w, r, fragment)
		if !ok {
			return
		}
		if r.Method == http.MethodPost {
			r.Body = http.MaxBytesReader(w, r.Body, maxFormBytes)
			if err := r.ParseForm(); err != nil {
				c.errorPage(rq, http.StatusBadRequest, "the form could not be read: "+err.Error())
				return
			}
			if !rq.s.validCSRF(r.PostFormValue("csrf")) {
				c.log.Warn("refused a form without a valid CSRF token", "path", r.URL.Path, "key_id", rq.key.ID)
				c.errorPage(rq, http.StatusForbidden, "this form has expired or did not come from this console; reload the page and try again")
				return
			}
		}
		if scope != "" && !rq.key.Allows(scope) {
			c.errorPage(rq, http.StatusForbidden, fmt.Sprintf("API key %s lacks scope %q needed here", rq.key.ID, scope))
			return
		}
		h(rq)
	})
}

// signedIn finds the request's session and checks its key with the store
// (so a revoked key ends its sessions at their next request). It answers
// the request itself when it returns false.
func (c *Console) signedIn(w http.ResponseWriter, r *http.Request, fragment bool) (*request, bool) {
	gone := func(reason string) (*request, bool) {
		clearCookie(w)
		if fragment || r.Method != http.MethodGet {
			http.Error(w, "signed out", http.StatusUnauthorized)
			return nil, false
		}
		q := url.Values{"next": {r.URL.RequestURI()}}
		if reason != "" {
			q.Set("reason", reason)
		}
		http.Redirect(w, r, "/ui/signin?"+q.Encode(), http.StatusSeeOther)
		return nil, false
	}
	ck, err := r.Cookie(CookieName)
	if err != nil || ck.Value == "" {
		return gone("")
	}
	s := c.sessions.get(ck.Value, c.cfg.Now(), !fragment)
	if s == nil {
		return gone("expired")
	}
	key, err := c.lookup(r.Context(), auth.HashKey(s.key))
	switch {
	case errors.Is(err, auth.ErrUnknownKey) || err == nil && key.Revoked:
		c.sessions.removeKey(s.key)
		return gone("revoked")
	case err != nil:
		c.log.Error("api key lookup failed", "error", err)
		http.Error(w, storeUnavailable, http.StatusServiceUnavailable)
		return nil, false
	}
	ctx := metadata.AppendToOutgoingContext(r.Context(), "authorization", "Bearer "+s.key)
	return &request{w: w, r: r, ctx: ctx, s: s, key: key, cookie: ck.Value}, true
}

func clearCookie(w http.ResponseWriter) {
	http.SetCookie(w, &http.Cookie{Name: CookieName, Value: "", Path: "/", MaxAge: -1, HttpOnly: true, Secure: true, SameSite: http.SameSiteStrictMode})
}

// call runs an API call with the request's key, bounded by callTimeout.
func call[Req, Resp any](rq *request, f func(context.Context, Req, ...grpc.CallOption) (Resp, error), req Req) (Resp, error) {
	ctx, cancel := context.WithTimeout(rq.ctx, callTimeout)
	defer cancel()
	return f(ctx, req)
}

// apiError answers a failed API call: the API's own message, with the
// HTTP status of its code. A key the API no longer accepts ends the session.
func (c *Console) apiError(rq *request, err error) {
	st := status.Convert(err)
	if st.Code() == codes.Unauthenticated {
		c.sessions.removeKey(rq.s.key)
		clearCookie(rq.w)
	}
	c.errorPage(rq, httpStatus(st.Code()), st.Message())
}

// httpStatus maps an API status code to the page's HTTP status.
func httpStatus(code codes.Code) int {
	switch code {
	case codes.InvalidArgument, codes.FailedPrecondition, codes.OutOfRange:
		return http.StatusBadRequest
	case codes.Unauthenticated:
		return http.StatusUnauthorized
	case codes.PermissionDenied:
		return http.StatusForbidden
	case codes.NotFound:
		return http.StatusNotFound
	case codes.AlreadyExists, codes.Aborted:
		return http.StatusConflict
	case codes.ResourceExhausted:
		return http.StatusTooManyRequests
	case codes.Unavailable, codes.DeadlineExceeded:
		return http.StatusServiceUnavailable
	default:
		return http.StatusInternalServerError
	}
}

// errMessage is the message of an API error, for showing in a form.
func errMessage(err error) string { return status.Convert(err).Message() }
