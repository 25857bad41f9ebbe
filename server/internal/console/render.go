package console

import (
	"bytes"
	"fmt"
	"html/template"
	"io/fs"
	"net/http"
	"path"
	"strings"
	"time"

	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	outpostv1 "github.com/outposthq/outpost/gen/outpost/v1"
	"github.com/outposthq/outpost/server/internal/auth"
)

// view is what every page template gets.
type view struct {
	Title string
	// Nav names the active menu entry.
	Nav  string
	CSRF string
	// KeyID is the signed-in key's id; empty on the sign-in page.
	KeyID string
	Can   perms
	// Error is a message to show above the page, usually the API's.
	Error string
	Data  any
}

// perms says which pages and actions the signed-in key may use, so pages
// show only those.
type perms struct {
	AgentsRead, AgentsWrite, Enroll, Resolve, CreateSession, Sessions, Keys bool
}

func (c *Console) permsOf(k auth.Key) perms {
	return perms{
		AgentsRead:    k.Allows(auth.ScopeAgentsRead),
		AgentsWrite:   k.Allows(auth.ScopeAgentsWrite),
		Enroll:        k.Allows(auth.ScopeEnrollCreate),
		Resolve:       k.Allows(auth.ScopeRoutesRead),
		CreateSession: k.Allows(auth.ScopeSessionsCreate),
		Sessions:      k.Allows(auth.ScopeSessionsRead),
		Keys:          k.Allows(auth.ScopeAll),
	}
}

// parseTemplates parses each page with the layout it shares.
func (c *Console) parseTemplates() (map[string]*template.Template, error) {
	funcs := template.FuncMap{
		"rel":      c.relTime,
		"exact":    exactTime,
		"ts":       tsTime,
		"size":     humanBytes,
		"dur":      humanDuration,
		"pbdur":    func(d *durationpb.Duration) string { return humanDuration(d.AsDuration()) },
		"soon":     c.expiresSoon,
		"join":     strings.Join,
		"statusOf": statusOf,
		"domains":  domainNames,
		"decision": decisionText,
		"deref":    func(t *time.Time) time.Time { return *t },
		"short":    shortID,
	}
	names, err := fs.Glob(templateFS, "templates/*.html")
	if err != nil {
		return nil, err
	}
	pages := make(map[string]*template.Template)
	for _, n := range names {
		base := path.Base(n)
		if base == "layout.html" || base == "partials.html" {
			continue
		}
		t, err := template.New(base).Funcs(funcs).ParseFS(templateFS, "templates/layout.html", "templates/partials.html", n)
		if err != nil {
			return nil, fmt.Errorf("console: template %s: %w", base, err)
		}
		pages[strings.TrimSuffix(base, ".html")] = t
	}
	return pages, nil
}

// render writes page (its "layout" template) with status.
func (c *Console) render(rq *request, code int, page string, v view) {
	if rq.s != nil {
		v.CSRF, v.KeyID, v.Can = rq.s.csrf, rq.key.ID, c.permsOf(rq.key)
	}
	c.execute(rq.w, code, page, "layout", v)
}

// renderFragment writes the named template of page alone.
func (c *Console) renderFragment(rq *request, page, name string, v view) {
	v.CSRF, v.KeyID, v.Can = rq.s.csrf, rq.key.ID, c.permsOf(rq.key)
	c.execute(rq.w, http.StatusOK, page, name, v)
}

func (c *Console) execute(w http.ResponseWriter, code int, page, name string, v view) {
	t := c.pages[page]
	var buf bytes.Buffer
	if t == nil {
		c.log.Error("no such page template", "page", page)
		http.Error(w, "internal error", http.StatusInternalServerError)
		return
	}
	if err := t.ExecuteTemplate(&buf, name, v); err != nil {
		c.log.Error("render failed", "page", page, "error", err)
		http.Error(w, "internal error", http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.WriteHeader(code)
	w.Write(buf.Bytes())
}

// errorPage shows msg as a page of its own with status code.
func (c *Console) errorPage(rq *request, code int, msg string) {
	c.render(rq, code, "error", view{Title: http.StatusText(code), Error: msg})
}

// decisionText is a routing decision in words.
func decisionText(d outpostv1.Decision) string {
	switch d {
	case outpostv1.Decision_DECISION_AGENT:
		return "through an agent"
	case outpostv1.Decision_DECISION_DIRECT:
		return "directly from the gateway"
	case outpostv1.Decision_DECISION_REJECTED:
		return "rejected"
	}
	return d.String()
}

// relTime is t relative to now, in words ("3 min ago", "in 2 h").
func (c *Console) relTime(t time.Time) string {
	if t.IsZero() {
		return "never"
	}
	d := c.cfg.Now().Sub(t)
	if d >= 0 {
		if d < 5*time.Second {
			return "just now"
		}
		return roughDuration(d) + " ago"
	}
	return "in " + roughDuration(-d)
}

// roughDuration is d in its largest whole unit.
func roughDuration(d time.Duration) string {
	switch {
	case d < time.Minute:
		return fmt.Sprintf("%d s", int(d/time.Second))
	case d < time.Hour:
		return fmt.Sprintf("%d min", int(d/time.Minute))
	case d < 48*time.Hour:
		return fmt.Sprintf("%d h", int(d/time.Hour))
	default:
		return fmt.Sprintf("%d days", int(d/(24*time.Hour)))
	}
}

// exactTime is t in UTC, to the second, for title attributes.
func exactTime(t time.Time) string {
	if t.IsZero() {
		return ""
	}
	return t.UTC().Format("2006-01-02 15:04:05 UTC")
}

// tsTime converts a protobuf timestamp; unset is the zero time.
func tsTime(ts *timestamppb.Timestamp) time.Time {
	if ts == nil {
		return time.Time{}
	}
	return ts.AsTime()
}

// humanBytes is n bytes in B, KiB, MiB or GiB.
func humanBytes(n uint64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	v, suffix := float64(n)/unit, "KiB"
	for _, s := range []string{"MiB", "GiB", "TiB"} {
		if v < unit {
			break
		}
		v, suffix = v/unit, s
	}
	return fmt.Sprintf("%.1f %s", v, suffix)
}

// humanDuration is d rounded for people: "850 ms", "12.3 s", "4 min 5 s".
func humanDuration(d time.Duration) string {
	switch {
	case d <= 0:
		return "0 s"
	case d < time.Second:
		return fmt.Sprintf("%d ms", d.Milliseconds())
	case d < time.Minute:
		return fmt.Sprintf("%.1f s", d.Seconds())
	case d < time.Hour:
		return fmt.Sprintf("%d min %d s", int(d/time.Minute), int(d%time.Minute/time.Second))
	default:
		return fmt.Sprintf("%d h %d min", int(d/time.Hour), int(d%time.Hour/time.Minute))
	}
}

// expiresSoon reports whether a certificate expiring at t is inside the
// renewal window (or expired).
func (c *Console) expiresSoon(t time.Time) bool {
	return !t.IsZero() && c.cfg.RenewBefore > 0 && t.Sub(c.cfg.Now()) < c.cfg.RenewBefore
}

// shortID is the first 8 characters of a UUID, as a table shows a
// replica: enough to tell the replicas of a cluster apart (the title
// attribute carries the whole id).
func shortID(id string) string {
	if len(id) > 8 {
		return id[:8]
	}
	return id
}
