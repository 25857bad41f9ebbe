package console

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/grpc/test/bufconn"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	outpostv1 "github.com/outposthq/outpost/gen/outpost/v1"
	"github.com/outposthq/outpost/internal/testlog"
	"github.com/outposthq/outpost/server/internal/apikey"
	"github.com/outposthq/outpost/server/internal/auth"
	"github.com/outposthq/outpost/server/internal/store"
)

// memKeys is an in-memory KeyStore.
type memKeys struct {
	mu   sync.Mutex
	keys []store.APIKey
}

func (m *memKeys) CreateAPIKey(_ context.Context, k store.APIKey) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.keys = append(m.keys, k)
	return nil
}

func (m *memKeys) APIKeyByHash(_ context.Context, hash []byte) (store.APIKey, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, k := range m.keys {
		if bytes.Equal(k.Hash, hash) {
			return k, nil
		}
	}
	return store.APIKey{}, store.ErrNotFound
}

func (m *memKeys) ListAPIKeys(context.Context) ([]store.APIKey, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return append([]store.APIKey(nil), m.keys...), nil
}

func (m *memKeys) RevokeAPIKey(_ context.Context, id string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	for i := range m.keys {
		if m.keys[i].ID == id {
			now := time.Now()
			m.keys[i].RevokedAt = &now
			return nil
		}
	}
	return store.ErrNotFound
}

// fakeAdmin serves a fixed list of agents and records deletions.
type fakeAdmin struct {
	outpostv1.UnimplementedAgentAdminServiceServer
	agents []*outpostv1.Agent
	// many, when set, makes ListAgents page through that many generated
	// agents instead, and count its calls.
	many  int
	calls atomic.Int32

	mu      sync.Mutex
	deleted []string
}

func (f *fakeAdmin) ListAgents(_ context.Context, req *outpostv1.ListAgentsRequest) (*outpostv1.ListAgentsResponse, error) {
	if f.many == 0 {
		return &outpostv1.ListAgentsResponse{Agents: f.agents}, nil
	}
	f.calls.Add(1)
	size := int(req.GetPageSize())
	if size == 0 || size > 1000 {
		size = 1000
	}
	start := 0
	if req.GetPageToken() != "" {
		var err error
		if start, err = strconv.Atoi(req.GetPageToken()); err != nil {
			return nil, status.Error(codes.InvalidArgument, "bad page token")
		}
	}
	resp := &outpostv1.ListAgentsResponse{}
	for i := start; i < f.many && len(resp.Agents) < size; i++ {
		resp.Agents = append(resp.Agents, &outpostv1.Agent{AgentId: fmt.Sprintf("00000000-0000-4000-8000-%012d", i),
			Name: fmt.Sprintf("agent-%05d", i), Status: outpostv1.AgentStatus_AGENT_STATUS_OFFLINE})
		if i+1 < f.many && len(resp.Agents) == size {
			resp.NextPageToken = strconv.Itoa(i + 1)
		}
	}
	return resp, nil
}

func (f *fakeAdmin) GetAgent(_ context.Context, req *outpostv1.GetAgentRequest) (*outpostv1.GetAgentResponse, error) {
	for _, a := range f.agents {
		if a.GetAgentId() == req.GetAgentId() {
			return &outpostv1.GetAgentResponse{Agent: a}, nil
		}
	}
	return nil, status.Error(codes.NotFound, "no agent "+req.GetAgentId())
}

func (f *fakeAdmin) DeleteAgent(_ context.Context, req *outpostv1.DeleteAgentRequest) (*outpostv1.DeleteAgentResponse, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.deleted = append(f.deleted, req.GetAgentId())
	return &outpostv1.DeleteAgentResponse{}, nil
}

func (f *fakeAdmin) ListSessions(_ context.Context, req *outpostv1.ListSessionsRequest) (*outpostv1.ListSessionsResponse, error) {
	return &outpostv1.ListSessionsResponse{Sessions: []*outpostv1.Session{{
		SessionId: "s1", StartedAt: timestamppb.Now(), Target: "10.1.2.3:22", AgentId: agentID, Decision: "agent",
		BytesUp: 1536, BytesDown: 5 << 20, Duration: durationpb.New(90 * time.Second), Outcome: "ok",
		KeyId: "0123456789abcdef", ClientAddr: "127.0.0.1:5000",
	}}}, nil
}

func (f *fakeAdmin) deletions() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.deleted...)
}

// evilName is an agent name that would run script if it were not escaped.
const evilName = `<img src=x onerror=alert(1)>`

const agentID = "7b0c2d8e-1111-4222-8333-944455556666"

// fixture is a console in front of a gRPC server with the real
// authorizer, over bufconn, served by an httptest TLS server.
type fixture struct {
	t      *testing.T
	srv    *httptest.Server
	keys   *memKeys
	admin  *fakeAdmin
	con    *Console
	client *http.Client
	// skew moves the console's clock ahead of the real one.
	skew atomic.Int64
}

func newFixture(t *testing.T) *fixture {
	t.Helper()
	f := &fixture{t: t, keys: &memKeys{}, admin: &fakeAdmin{agents: []*outpostv1.Agent{{
		AgentId: agentID, Name: evilName, Status: outpostv1.AgentStatus_AGENT_STATUS_ONLINE,
		RemoteAddr: "127.0.0.1:4242", LastSeen: timestamppb.Now(), ReplicaIds: []string{"5f0c2a9e-1111-4aaa-8bbb-0123456789ab"},
		CertNotAfter: timestamppb.New(time.Now().Add(time.Hour)),
		Subnets:      []string{"127.0.0.0/8"}, RejectedSubnets: []string{"192.0.2.0/24"},
	}}}}
	authz, err := auth.NewAuthorizer(apikey.Lookup(f.keys), map[string]string{
		outpostv1.AgentAdminService_ListAgents_FullMethodName:   auth.ScopeAgentsRead,
		outpostv1.AgentAdminService_GetAgent_FullMethodName:     auth.ScopeAgentsRead,
		outpostv1.AgentAdminService_DeleteAgent_FullMethodName:  auth.ScopeAgentsWrite,
		outpostv1.AgentAdminService_ListSessions_FullMethodName: auth.ScopeSessionsRead,
	})
	if err != nil {
		t.Fatal(err)
	}
	gs := grpc.NewServer(grpc.UnaryInterceptor(authz.UnaryInterceptor))
	outpostv1.RegisterAgentAdminServiceServer(gs, f.admin)
	ln := bufconn.Listen(1 << 20)
	go gs.Serve(ln)
	t.Cleanup(gs.Stop)
	conn, err := grpc.NewClient("passthrough:///console-test",
		grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) { return ln.DialContext(ctx) }),
		grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	f.con, err = New(Config{Conn: conn, Keys: f.keys, RenewBefore: 24 * time.Hour, Logger: testlog.Logger(t, "console"),
		Now: func() time.Time { return time.Now().Add(time.Duration(f.skew.Load())) }})
	if err != nil {
		t.Fatal(err)
	}
	f.srv = httptest.NewTLSServer(f.con)
	t.Cleanup(f.srv.Close)
	f.client = f.srv.Client()
	f.client.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	return f
}

// key creates an API key with scopes and returns its secret.
func (f *fixture) key(scopes ...string) string {
	f.t.Helper()
	secret, err := apikey.Create(context.Background(), f.keys, rand.Reader, "test", scopes, time.Now())
	if err != nil {
		f.t.Fatal(err)
	}
	return secret
}

// do sends a request; a non-nil form makes it a same-origin POST.
func (f *fixture) do(method, path, cookie string, form url.Values, hdr map[string]string) (*http.Response, string) {
	f.t.Helper()
	var body io.Reader
	if form != nil {
		body = strings.NewReader(form.Encode())
	}
	req, err := http.NewRequest(method, f.srv.URL+path, body)
	if err != nil {
		f.t.Fatal(err)
	}
	if form != nil {
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		req.Header.Set("Origin", f.srv.URL)
	}
	if cookie != "" {
		req.AddCookie(&http.Cookie{Name: CookieName, Value: cookie})
	}
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	resp, err := f.client.Do(req)
	if err != nil {
		f.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp, string(b)
}

var csrfField = regexp.MustCompile(`name="csrf" value="([^"]+)"`)

// signIn signs in with secret and returns the session cookie and the
// session's CSRF token.
func (f *fixture) signIn(secret string) (cookie, csrf string) {
	f.t.Helper()
	resp, _ := f.do("POST", "/ui/signin", "", url.Values{"key": {secret}}, nil)
	if resp.StatusCode != http.StatusSeeOther {
		f.t.Fatalf("sign-in: %s", resp.Status)
	}
	for _, c := range resp.Cookies() {
		if c.Name == CookieName {
			cookie = c.Value
		}
	}
	_, page := f.do("GET", "/ui/account", cookie, nil, nil)
	m := csrfField.FindStringSubmatch(page)
	if m == nil {
		f.t.Fatalf("no CSRF token on the account page:\n%s", page)
	}
	return cookie, m[1]
}

func TestSecurityHeaders(t *testing.T) {
	f := newFixture(t)
	for _, path := range []string{"/ui/signin", "/ui/static/console.js", "/ui/agents"} {
		resp, _ := f.do("GET", path, "", nil, nil)
		h := resp.Header
		if got := h.Get("Content-Security-Policy"); got != csp {
			t.Errorf("%s: CSP %q", path, got)
		}
		for _, want := range []string{"script-src 'self'", "frame-ancestors 'none'", "default-src 'none'"} {
			if !strings.Contains(h.Get("Content-Security-Policy"), want) {
				t.Errorf("%s: CSP lacks %q", path, want)
			}
		}
		if h.Get("X-Frame-Options") != "DENY" || h.Get("X-Content-Type-Options") != "nosniff" {
			t.Errorf("%s: X-Frame-Options %q, X-Content-Type-Options %q", path, h.Get("X-Frame-Options"), h.Get("X-Content-Type-Options"))
		}
	}
	// No page carries inline script or a handler attribute.
	_, page := f.do("GET", "/ui/signin", "", nil, nil)
	if strings.Contains(page, "<script>") || regexp.MustCompile(`(?i)\son[a-z]+=`).MatchString(page) {
		t.Errorf("inline script on the sign-in page:\n%s", page)
	}
}

func TestSignInCookie(t *testing.T) {
	f := newFixture(t)
	secret := f.key(auth.ScopeAgentsRead)
	resp, _ := f.do("POST", "/ui/signin", "", url.Values{"key": {secret}, "next": {"/ui/agents?status=online"}}, nil)
	if resp.StatusCode != http.StatusSeeOther || resp.Header.Get("Location") != "/ui/agents?status=online" {
		t.Fatalf("sign-in: %s to %q", resp.Status, resp.Header.Get("Location"))
	}
	var ck *http.Cookie
	for _, c := range resp.Cookies() {
		if c.Name == CookieName {
			ck = c
		}
	}
	if ck == nil {
		t.Fatal("no session cookie")
	}
	if !ck.HttpOnly || !ck.Secure || ck.SameSite != http.SameSiteStrictMode || ck.Path != "/" || ck.Domain != "" {
		t.Errorf("cookie flags: %+v", ck)
	}
	if strings.Contains(ck.Value, secret) || len(ck.Value) < 40 {
		t.Errorf("cookie value %q: want a random session id, not the key", ck.Value)
	}
	if resp, _ := f.do("GET", "/ui/agents", ck.Value, nil, nil); resp.StatusCode != http.StatusOK {
		t.Errorf("signed-in agents page: %s", resp.Status)
	}

	for name, tc := range map[string]struct {
		key  string
		code int
		msg  string
	}{
		"unknown": {"opk_nope", http.StatusUnauthorized, "unknown api key"},
		"empty":   {"", http.StatusBadRequest, "enter an API key"},
	} {
		resp, page := f.do("POST", "/ui/signin", "", url.Values{"key": {tc.key}}, nil)
		if resp.StatusCode != tc.code || !strings.Contains(page, tc.msg) || len(resp.Cookies()) > 0 {
			t.Errorf("%s key: %s, cookies %v, page lacks %q", name, resp.Status, resp.Cookies(), tc.msg)
		}
	}
	// An open redirect through next is refused.
	resp, _ = f.do("POST", "/ui/signin", "", url.Values{"key": {secret}, "next": {"//evil.example/ui/"}}, nil)
	if loc := resp.Header.Get("Location"); loc != "/ui/agents" {
		t.Errorf("next=//evil.example: redirected to %q", loc)
	}
}

func TestSignedOutAndSignOut(t *testing.T) {
	f := newFixture(t)
	resp, _ := f.do("GET", "/ui/agents?status=online", "", nil, nil)
	if resp.StatusCode != http.StatusSeeOther || !strings.HasPrefix(resp.Header.Get("Location"), "/ui/signin?next=%2Fui%2Fagents%3Fstatus%3Donline") {
		t.Errorf("signed out: %s to %q", resp.Status, resp.Header.Get("Location"))
	}
	if resp, _ := f.do("GET", "/ui/agents/rows", "bogus", nil, nil); resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("fragment with a bogus session: %s, want 401", resp.Status)
	}
	cookie, csrf := f.signIn(f.key(auth.ScopeAgentsRead))
	if resp, _ := f.do("POST", "/ui/signout", cookie, url.Values{"csrf": {csrf}}, nil); resp.StatusCode != http.StatusSeeOther {
		t.Fatalf("sign-out: %s", resp.Status)
	}
	if resp, _ := f.do("GET", "/ui/agents", cookie, nil, nil); resp.StatusCode != http.StatusSeeOther {
		t.Errorf("after sign-out: %s, want a redirect to sign in", resp.Status)
	}
}

// A page left open polls its fragment, which does not keep the session
// alive: 30 min without a person's request end it.
func TestIdleSessionEnds(t *testing.T) {
	f := newFixture(t)
	cookie, _ := f.signIn(f.key(auth.ScopeAgentsRead))
	for _, skew := range []time.Duration{10 * time.Minute, 20 * time.Minute, 29 * time.Minute} {
		f.skew.Store(int64(skew))
		if resp, _ := f.do("GET", "/ui/agents/rows", cookie, nil, nil); resp.StatusCode != http.StatusOK {
			t.Fatalf("poll after %v: %s", skew, resp.Status)
		}
	}
	f.skew.Store(int64(31 * time.Minute))
	if resp, _ := f.do("GET", "/ui/agents/rows", cookie, nil, nil); resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("poll after 31 min idle: %s, want 401", resp.Status)
	}
	if resp, _ := f.do("GET", "/ui/agents", cookie, nil, nil); resp.StatusCode != http.StatusSeeOther {
		t.Fatalf("page after 31 min idle: %s, want a redirect to sign in", resp.Status)
	}
	// A page view, unlike a poll, counts as use.
	cookie, _ = f.signIn(f.key(auth.ScopeAgentsRead))
	f.skew.Store(int64(60 * time.Minute))
	f.do("GET", "/ui/agents", cookie, nil, nil)
	f.skew.Store(int64(85 * time.Minute))
	if resp, _ := f.do("GET", "/ui/agents", cookie, nil, nil); resp.StatusCode != http.StatusOK {
		t.Fatalf("page 25 min after the last: %s", resp.Status)
	}
}

func TestRevokedKeyEndsSession(t *testing.T) {
	f := newFixture(t)
	cookie, _ := f.signIn(f.key(auth.ScopeAll))
	keys, _ := f.keys.ListAPIKeys(context.Background())
	if err := f.keys.RevokeAPIKey(context.Background(), keys[0].ID); err != nil {
		t.Fatal(err)
	}
	resp, _ := f.do("GET", "/ui/agents", cookie, nil, nil)
	if resp.StatusCode != http.StatusSeeOther || !strings.Contains(resp.Header.Get("Location"), "reason=revoked") {
		t.Fatalf("revoked key: %s to %q", resp.Status, resp.Header.Get("Location"))
	}
	if _, page := f.do("GET", resp.Header.Get("Location"), "", nil, nil); !strings.Contains(page, "The API key of your session was revoked") {
		t.Errorf("the sign-in page does not say the key was revoked:\n%s", page)
	}
	if _, page := f.do("GET", "/ui/signin?reason=Enter+your+key+at+evil.example", "", nil, nil); strings.Contains(page, "evil.example") {
		t.Error("the sign-in page shows a reason from its query")
	}
	if f.con.sessions.len() != 0 {
		t.Errorf("%d sessions left after the key was revoked", f.con.sessions.len())
	}
}

func TestCSRFAndOrigin(t *testing.T) {
	f := newFixture(t)
	cookie, csrf := f.signIn(f.key(auth.ScopeAll))
	path := "/ui/agents/" + agentID + "/delete"
	for name, tc := range map[string]struct {
		form url.Values
		hdr  map[string]string
	}{
		"no token":     {url.Values{}, nil},
		"wrong token":  {url.Values{"csrf": {csrf[:len(csrf)-1] + "x"}}, nil},
		"cross origin": {url.Values{"csrf": {csrf}}, map[string]string{"Origin": "https://evil.example"}},
		"cross site":   {url.Values{"csrf": {csrf}}, map[string]string{"Sec-Fetch-Site": "cross-site"}},
	} {
		resp, _ := f.do("POST", path, cookie, tc.form, tc.hdr)
		if resp.StatusCode != http.StatusForbidden {
			t.Errorf("%s: %s, want 403", name, resp.Status)
		}
	}
	// A cross-site sign-in is refused too (login CSRF).
	if resp, _ := f.do("POST", "/ui/signin", "", url.Values{"key": {"opk_x"}}, map[string]string{"Origin": "https://evil.example"}); resp.StatusCode != http.StatusForbidden {
		t.Errorf("cross-site sign-in: %s, want 403", resp.Status)
	}
	if d := f.admin.deletions(); len(d) != 0 {
		t.Fatalf("refused forms deleted %v", d)
	}
	resp, _ := f.do("POST", path, cookie, url.Values{"csrf": {csrf}, "name": {"x"}}, nil)
	if resp.StatusCode != http.StatusSeeOther {
		t.Fatalf("delete with the token: %s", resp.Status)
	}
	if d := f.admin.deletions(); len(d) != 1 || d[0] != agentID {
		t.Errorf("deletions %v", d)
	}
}

func TestScopes(t *testing.T) {
	f := newFixture(t)
	cookie, csrf := f.signIn(f.key(auth.ScopeAgentsRead))
	_, page := f.do("GET", "/ui/agents/"+agentID, cookie, nil, nil)
	if strings.Contains(page, "Delete") || strings.Contains(page, "/routes\"") {
		t.Error("a read-only key sees Delete or the routes form")
	}
	for _, want := range []string{">Agents<"} {
		if !strings.Contains(page, want) {
			t.Errorf("page lacks %q", want)
		}
	}
	for _, hidden := range []string{"/ui/enroll\"", "/ui/keys\"", "/ui/connect\""} {
		if strings.Contains(page, hidden) {
			t.Errorf("a read-only key sees a link to %s", hidden)
		}
	}
	resp, page := f.do("POST", "/ui/agents/"+agentID+"/delete", cookie, url.Values{"csrf": {csrf}}, nil)
	if resp.StatusCode != http.StatusForbidden || !strings.Contains(page, "agents.write") {
		t.Errorf("forged delete: %s\n%s", resp.Status, page)
	}
	if d := f.admin.deletions(); len(d) != 0 {
		t.Errorf("a read-only key deleted %v", d)
	}
	if resp, _ := f.do("GET", "/ui/", cookie, nil, nil); resp.Header.Get("Location") != "/ui/agents" {
		t.Errorf("/ui/ for a reader goes to %q", resp.Header.Get("Location"))
	}
	enroller, _ := f.signIn(f.key(auth.ScopeEnrollCreate))
	if resp, _ := f.do("GET", "/ui/", enroller, nil, nil); resp.Header.Get("Location") != "/ui/enroll" {
		t.Errorf("/ui/ for an enroll-only key goes to %q", resp.Header.Get("Location"))
	}
	for _, path := range []string{"/ui/keys", "/ui/enroll"} {
		if resp, _ := f.do("GET", path, cookie, nil, nil); resp.StatusCode != http.StatusForbidden {
			t.Errorf("%s with a read-only key: %s", path, resp.Status)
		}
	}
}

func TestEscaping(t *testing.T) {
	f := newFixture(t)
	cookie, _ := f.signIn(f.key(auth.ScopeAll))
	for _, path := range []string{"/ui/agents", "/ui/agents/rows", "/ui/agents/" + agentID, "/ui/agents/" + agentID + "/delete"} {
		resp, page := f.do("GET", path, cookie, nil, nil)
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("%s: %s", path, resp.Status)
		}
		if strings.Contains(page, "<img") || !strings.Contains(page, "&lt;img src=x onerror=alert(1)&gt;") {
			t.Errorf("%s: the agent's name is not escaped:\n%s", path, page)
		}
	}
	_, page := f.do("GET", "/ui/agents", cookie, nil, nil)
	for _, want := range []string{"st-online", "192.0.2.0/24", `class="expiring"`, "127.0.0.1:4242",
		`<code title="5f0c2a9e-1111-4aaa-8bbb-0123456789ab">5f0c2a9e</code>`} {
		if !strings.Contains(page, want) {
			t.Errorf("agents page lacks %q", want)
		}
	}
	if _, page := f.do("GET", "/ui/agents/"+agentID, cookie, nil, nil); !strings.Contains(page, "<code>5f0c2a9e-1111-4aaa-8bbb-0123456789ab</code>") {
		t.Error("the agent's page does not name the replica it is connected to")
	}
}

func TestSessionsPage(t *testing.T) {
	f := newFixture(t)
	cookie, _ := f.signIn(f.key(auth.ScopeAll))
	resp, page := f.do("GET", "/ui/sessions?since=24h&outcome=ok", cookie, nil, nil)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("sessions: %s", resp.Status)
	}
	for _, want := range []string{"10.1.2.3:22", "1.5 KiB", "5.0 MiB", "1 min 30 s", ">01234567<", "127.0.0.1:5000", "&lt;img src=x"} {
		if !strings.Contains(page, want) {
			t.Errorf("sessions page lacks %q", want)
		}
	}
	// A key without sessions.read sees neither the page nor its link.
	cookie, _ = f.signIn(f.key(auth.ScopeAgentsRead))
	if resp, _ := f.do("GET", "/ui/sessions", cookie, nil, nil); resp.StatusCode != http.StatusForbidden {
		t.Errorf("sessions without sessions.read: %s", resp.Status)
	}
	if _, page := f.do("GET", "/ui/agents", cookie, nil, nil); strings.Contains(page, `href="/ui/sessions"`) {
		t.Error("a key without sessions.read sees the Sessions link")
	}
}

// With 10,000 agents a page costs one API call of one page (50 agents);
// the next page goes on from the API's token; a name filter pages through
// the list a thousand agents a call.
func TestAgentsPaging(t *testing.T) {
	f := newFixture(t)
	f.admin.many = 10000
	cookie, _ := f.signIn(f.key(auth.ScopeAgentsRead))
	rows := regexp.MustCompile(`<tr data-agent=`)
	next := regexp.MustCompile(`href="(/ui/agents\?page=[^"]+)">Next page`)

	f.admin.calls.Store(0)
	_, page := f.do("GET", "/ui/agents", cookie, nil, nil)
	if n := len(rows.FindAllString(page, -1)); n != agentsPageSize || f.admin.calls.Load() != 1 {
		t.Fatalf("first page: %d rows in %d calls", n, f.admin.calls.Load())
	}
	m := next.FindStringSubmatch(page)
	if m == nil || !strings.Contains(page, "agent-00049") || strings.Contains(page, "agent-00050") {
		t.Fatal("first page: wrong agents or no next link")
	}
	_, page = f.do("GET", strings.ReplaceAll(m[1], "&amp;", "&"), cookie, nil, nil)
	if !strings.Contains(page, "agent-00050") || !strings.Contains(page, "First page") {
		t.Error("second page: wrong agents or no link to the first")
	}
	// The polled fragment of a page is that page.
	_, frag := f.do("GET", "/ui/agents/rows?page=9950", cookie, nil, nil)
	if n := len(rows.FindAllString(frag, -1)); n != 50 || !strings.Contains(frag, "agent-09999") || strings.Contains(frag, "<html") {
		t.Errorf("last page's fragment: %d rows", n)
	}

	f.admin.calls.Store(0)
	_, page = f.do("GET", "/ui/agents?name=AGENT-09999", cookie, nil, nil)
	if n := len(rows.FindAllString(page, -1)); n != 1 || !strings.Contains(page, "agent-09999") || f.admin.calls.Load() != 10 {
		t.Errorf("name filter: %d rows in %d calls", n, f.admin.calls.Load())
	}
	_, page = f.do("GET", "/ui/agents?name=nobody", cookie, nil, nil)
	if !strings.Contains(page, "No agent matches this filter") {
		t.Error("no empty state for a filter that matches nothing")
	}
}

func TestKeysPage(t *testing.T) {
	f := newFixture(t)
	cookie, csrf := f.signIn(f.key(auth.ScopeAll))
	resp, page := f.do("POST", "/ui/keys", cookie, url.Values{"csrf": {csrf}, "name": {"reader"}, "scope": {auth.ScopeAgentsRead}}, nil)
	m := regexp.MustCompile(`id="new-key" class="copyable">(opk_[^<]+)<`).FindStringSubmatch(page)
	if resp.StatusCode != http.StatusOK || m == nil {
		t.Fatalf("create key: %s\n%s", resp.Status, page)
	}
	k, err := apikey.Lookup(f.keys)(context.Background(), auth.HashKey(m[1]))
	if err != nil || !k.Allows(auth.ScopeAgentsRead) || k.Allows(auth.ScopeAgentsWrite) {
		t.Fatalf("created key: %+v, %v", k, err)
	}
	resp, page = f.do("POST", "/ui/keys", cookie, url.Values{"csrf": {csrf}, "name": {"bad"}, "scope": {"agents.delete"}}, nil)
	if resp.StatusCode != http.StatusBadRequest || !strings.Contains(page, "unknown scope") {
		t.Errorf("bad scope: %s", resp.Status)
	}
	resp, _ = f.do("POST", "/ui/keys/"+k.ID+"/revoke", cookie, url.Values{"csrf": {csrf}}, nil)
	if resp.StatusCode != http.StatusSeeOther {
		t.Fatalf("revoke: %s", resp.Status)
	}
	if k, _ := apikey.Lookup(f.keys)(context.Background(), auth.HashKey(m[1])); !k.Revoked {
		t.Error("key not revoked")
	}
}

func TestSessionTable(t *testing.T) {
	now := time.Unix(1e9, 0)
	tab := newSessionTable(30*time.Minute, 12*time.Hour, 2, rand.Reader)
	a, _, err := tab.create("ka", now)
	if err != nil {
		t.Fatal(err)
	}
	if tab.get(a, now.Add(29*time.Minute), true) == nil {
		t.Fatal("session gone before its idle timeout")
	}
	if tab.get(a, now.Add(58*time.Minute), true) == nil {
		t.Fatal("a used session expired")
	}
	if tab.get(a, now.Add(87*time.Minute), false) == nil {
		t.Fatal("session gone before its idle timeout")
	}
	if tab.get(a, now.Add(89*time.Minute), false) != nil {
		t.Fatal("a session only polled did not expire")
	}
	b, _, _ := tab.create("kb", now)
	c, _, _ := tab.create("kc", now.Add(time.Second))
	d, _, _ := tab.create("kd", now.Add(2*time.Second))
	if tab.len() != 2 || tab.get(b, now.Add(3*time.Second), true) != nil || tab.get(c, now.Add(3*time.Second), true) == nil || tab.get(d, now.Add(3*time.Second), true) == nil {
		t.Errorf("a full table did not drop the least recently used session (len %d)", tab.len())
	}
	e, s, _ := tab.create("ke", now)
	if tab.get(e, now.Add(12*time.Hour+time.Second), true) != nil {
		t.Error("a session outlived its maximum age")
	}
	if !s.validCSRF(s.csrf) || s.validCSRF("") || s.validCSRF(s.csrf+"x") {
		t.Error("validCSRF")
	}
	if _, _, err := newSessionTable(time.Minute, time.Hour, 1, bytes.NewReader(nil)).create("k", now); err == nil {
		t.Error("create with no randomness succeeded")
	}
}

func TestHumanFormats(t *testing.T) {
	for n, want := range map[uint64]string{0: "0 B", 1023: "1023 B", 1024: "1.0 KiB", 1536: "1.5 KiB", 5 << 20: "5.0 MiB", 3 << 30: "3.0 GiB"} {
		if got := humanBytes(n); got != want {
			t.Errorf("humanBytes(%d) = %q, want %q", n, got, want)
		}
	}
	now := time.Unix(1e9, 0)
	c := &Console{cfg: Config{Now: func() time.Time { return now }}}
	for d, want := range map[time.Duration]string{0: "just now", 90 * time.Second: "1 min ago", -2 * time.Hour: "in 2 h", 72 * time.Hour: "3 days ago"} {
		if got := c.relTime(now.Add(-d)); got != want {
			t.Errorf("relTime(now-%v) = %q, want %q", d, got, want)
		}
	}
	for in, want := range map[string]string{"/ui/agents": "/ui/agents", "//evil": "", "https://evil/ui/": "", "/ui/signin": "", "/other": ""} {
		if got := safeNext(in); got != want {
			t.Errorf("safeNext(%q) = %q, want %q", in, got, want)
		}
	}
	if httpStatus(codes.PermissionDenied) != http.StatusForbidden || httpStatus(codes.NotFound) != http.StatusNotFound {
		t.Error("httpStatus")
	}
	if _, err := New(Config{}); err == nil || errors.Is(err, nil) {
		t.Error("New without Conn and Keys succeeded")
	}
}
