package e2e

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/chromedp/cdproto/page"
	"github.com/chromedp/chromedp"

	outpostv1 "github.com/outposthq/outpost/gen/outpost/v1"
	"github.com/outposthq/outpost/internal/testlog"
)

// screenshotsEnv names a directory: when set, the console test saves
// screenshots of the main pages there (docs/screenshots in the repo).
const screenshotsEnv = "OUTPOST_SCREENSHOTS"

// browser is one headless Chromium tab driven by the test. The suite keeps
// to one browser process and one tab, used serially.
type browser struct {
	t    *testing.T
	ctx  context.Context
	base string
	// shots is the screenshot directory, or "".
	shots string
	// dialogs counts JavaScript dialogs (alert, confirm) the pages opened:
	// none ever should.
	dialogs atomic.Int32
}

// chromium returns the Chromium binary, skipping the test without one
// (failing instead when CI is set).
func chromium(t *testing.T) string {
	t.Helper()
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	if os.Getenv("CI") != "" {
		t.Fatal("no chromium: .ci/run installs it (CI is set, so this fails instead of skipping)")
	}
	skipSuite(t, "console browser", "no chromium on this machine (apt-get install -y chromium)")
	return ""
}

func newBrowser(t *testing.T, base string) *browser {
	t.Helper()
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(chromium(t)),
		// The gateway's certificate is from its own test CA.
		chromedp.Flag("ignore-certificate-errors", true),
		chromedp.NoSandbox,
		chromedp.DisableGPU,
		chromedp.WindowSize(1280, 900),
	)
	allocCtx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	b := &browser{t: t, base: base, shots: os.Getenv(screenshotsEnv)}
	ctx, cancel := chromedp.NewContext(allocCtx, chromedp.WithLogf(t.Logf), chromedp.WithListener(func(ev any) {
		if _, ok := ev.(*page.EventJavascriptDialogOpening); ok {
			b.dialogs.Add(1)
		}
	}))
	t.Cleanup(func() {
		cancel()
		cancelAlloc()
	})
	b.ctx = ctx
	// The first run starts the browser; it must not have a timeout, which
	// would stop the browser with it.
	if err := chromedp.Do(ctx, chromedp.Navigate("about:blank")); err != nil {
		t.Fatalf("start chromium: %v", err)
	}
	return b
}

// run performs steps within 30 s, failing the test on error.
func (b *browser) run(steps ...chromedp.Action[chromedp.Void]) {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, 30*time.Second)
	defer cancel()
	if err := chromedp.Do(ctx, steps...); err != nil {
		b.fail(err)
	}
}

// get runs an action that returns a value within 30 s, failing the test
// on error.
func get[T any](b *browser, a chromedp.Action[T]) T {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, 30*time.Second)
	defer cancel()
	v, err := chromedp.Run(ctx, a)
	if err != nil {
		b.fail(err)
	}
	return v
}

func (b *browser) fail(err error) {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, 5*time.Second)
	defer cancel()
	loc, _ := chromedp.Run(ctx, chromedp.Location())
	b.t.Fatalf("browser at %s: %v", loc, err)
}

// open navigates to a console path and waits for the page.
func (b *browser) open(path string) {
	b.t.Helper()
	b.run(chromedp.Navigate(b.base+path), chromedp.WaitReady(chromedp.CSS("body")))
}

// text is the text content of the first element matching sel, or "".
func (b *browser) text(sel string) string {
	b.t.Helper()
	return get(b, chromedp.Evaluate[string](fmt.Sprintf(`(document.querySelector(%q) || {textContent: ""}).textContent`, sel)))
}

// waitText waits until the element sel contains substr.
func (b *browser) waitText(sel, substr string, within time.Duration) {
	b.t.Helper()
	deadline := time.Now().Add(within)
	for {
		got := b.text(sel)
		if strings.Contains(got, substr) {
			return
		}
		if time.Now().After(deadline) {
			b.t.Fatalf("%s does not show %q after %v; it shows %q", sel, substr, within, got)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// fill sets form fields by selector, then clicks submit.
func (b *browser) fill(fields map[string]string, submit string) {
	b.t.Helper()
	var steps []chromedp.Action[chromedp.Void]
	for sel, v := range fields {
		steps = append(steps, chromedp.SetValue(chromedp.CSS(sel), v))
	}
	steps = append(steps, chromedp.Click(chromedp.CSS(submit)))
	b.run(steps...)
}

// post sends a form POST from the page with fetch and returns the status.
func (b *browser) post(path string, form map[string]string) int {
	b.t.Helper()
	var body []string
	for k, v := range form {
		body = append(body, fmt.Sprintf("%q: %s", k, v))
	}
	js := fmt.Sprintf(`fetch(%q, {method: "POST", body: new URLSearchParams({%s})}).then(r => r.status)`, path, strings.Join(body, ", "))
	return get(b, chromedp.Evaluate[int](js, chromedp.EvalAwaitPromise))
}

// shot saves a screenshot of the page as name.png when screenshots are on.
func (b *browser) shot(name string) {
	b.t.Helper()
	if b.shots == "" {
		return
	}
	png := get(b, chromedp.FullScreenshot(100))
	if err := os.WriteFile(filepath.Join(b.shots, name+".png"), png, 0o644); err != nil {
		b.t.Fatal(err)
	}
}

// signIn signs in with key from the sign-in page.
func (b *browser) signIn(key string) {
	b.t.Helper()
	b.open("/ui/")
	b.waitText("h1", "Sign in", 5*time.Second)
	b.fill(map[string]string{"#key": key}, `form[action="/ui/signin"] button`)
	b.run(chromedp.WaitVisible(chromedp.CSS("nav")))
}

func (b *browser) signOut() {
	b.t.Helper()
	b.run(chromedp.Click(chromedp.CSS(".signout button")))
	b.waitText("h1", "Sign in", 5*time.Second)
}

// agentRow is the selector of an agent's row in the agents table.
func agentRow(id string) string { return fmt.Sprintf(`tr[data-agent=%q]`, id) }

// xssName is an agent name that runs script if a page does not escape it.
const xssName = `<img src=x onerror=alert(1)>`

// The console in a real Chromium, against a real gateway and real agents
// on loopback: sign-in, the agents table following an agent online and
// offline, enrollment from the console into a real "outpost agent up",
// a session from the Connect page's command, a read-only key, CSRF and
// cross-site refusals, Delete, and escaping.
func TestConsoleBrowser(t *testing.T) {
	chromium(t)
	// The agent process outlives the subtest that starts it: its logs and
	// cleanup belong to the whole test.
	parent := t
	gw := startGateway(t, t.TempDir(), nil)
	b := newBrowser(t, gw.url)
	target := tcpServer(t, echo)

	t.Run("sign in", func(t *testing.T) {
		b.t = t
		b.open("/ui/agents")
		b.shot("signin")
		b.fill(map[string]string{"#key": "opk_wrong"}, `form[action="/ui/signin"] button`)
		b.waitText(".error", "unknown api key", 5*time.Second)
		b.signIn(gw.adminKey())
		b.waitText("h1", "Agents", 5*time.Second)
		b.waitText("#agent-rows", "No agent is enrolled yet", 5*time.Second)
	})

	var xssID string
	t.Run("agent online, offline, escaped", func(t *testing.T) {
		b.t = t
		dir, id := enrollAgent(t, gw, xssName, loopback, nil)
		xssID = id
		ra := startAgent(t, fastAgent(dir))
		// The table polls: no reload.
		b.waitText(agentRow(id), "online", 15*time.Second)
		b.waitText(agentRow(id), xssName, time.Second)
		imgs := get(b, chromedp.Evaluate[int](`document.querySelectorAll("#agent-rows img").length`))
		if imgs != 0 || b.dialogs.Load() != 0 {
			t.Fatalf("the agent's name became markup: %d img elements, %d dialogs", imgs, b.dialogs.Load())
		}
		ra.stop()
		b.waitText(agentRow(id), "offline", 15*time.Second)
	})

	var agentID string
	var agentCmd *exec.Cmd
	var agentErr *testlog.Writer
	t.Run("enroll from the console", func(t *testing.T) {
		b.t = t
		b.open("/ui/enroll")
		b.shot("enroll-form")
		b.fill(map[string]string{"#name": "browser-agent", "#subnets": "127.0.0.1/32", "#ttl": "10m"}, `form[action="/ui/enroll"] button`)
		b.run(chromedp.WaitVisible(chromedp.CSS("#token")))
		token, command := strings.TrimSpace(b.text("#token")), strings.TrimSpace(b.text("#command"))
		if command != "outpost agent up --token -" {
			t.Fatalf("the page's command is %q", command)
		}
		b.waitText("#enroll-status", "Waiting for the agent", 5*time.Second)
		// The command exactly as shown, the token pasted on its stdin;
		// the config directory comes from the environment.
		args := strings.Fields(command)
		agentCmd = exec.Command(outpostBinary(t), args[1:]...)
		agentCmd.Env = append(os.Environ(), "OUTPOST_AGENT_DIR="+parent.TempDir())
		agentCmd.Stdin = strings.NewReader(token + "\n")
		agentErr = testlog.New(parent)
		agentCmd.Stdout, agentCmd.Stderr = testlog.New(parent), agentErr
		if err := agentCmd.Start(); err != nil {
			t.Fatal(err)
		}
		cmd := agentCmd
		parent.Cleanup(func() {
			cmd.Process.Kill()
			cmd.Wait()
		})
		b.waitText("#enroll-status", "is online", 20*time.Second)
		b.shot("enroll")
		b.run(chromedp.Click(chromedp.CSS("#enroll-status a")))
		b.waitText("h1", "browser-agent", 5*time.Second)
		loc := get(b, chromedp.Location())
		agentID = loc[strings.LastIndex(loc, "/")+1:]
		if v := gw.agentView(agentID); v.GetName() != "browser-agent" {
			t.Fatalf("agent page %s is of %q", loc, v.GetName())
		}
		b.waitText(".details", "127.0.0.1/32", 5*time.Second)
		b.open("/ui/agents")
		b.waitText(agentRow(agentID), "online", 5*time.Second)
		b.shot("agents")
		// At 360 px wide, no page scrolls sideways.
		b.run(chromedp.EmulateViewport(360, 780))
		for _, path := range []string{"/ui/agents", "/ui/agents/" + agentID, "/ui/enroll", "/ui/connect", "/ui/sessions", "/ui/keys"} {
			b.open(path)
			if w := get(b, chromedp.Evaluate[int](`document.documentElement.scrollWidth`)); w > 360 {
				t.Errorf("%s is %d px wide at a 360 px viewport", path, w)
			}
			if path == "/ui/agents" {
				b.shot("agents-360px")
			}
		}
		b.run(chromedp.EmulateViewport(1280, 900))
	})

	t.Run("connect", func(t *testing.T) {
		b.t = t
		b.open("/ui/connect")
		b.fill(map[string]string{"#target": target}, `button[value="resolve"]`)
		b.waitText("#decision", "through an agent", 5*time.Second)
		b.waitText("#decision", "browser-agent", time.Second)
		b.run(chromedp.Click(chromedp.CSS(`button[value="token"]`)), chromedp.WaitVisible(chromedp.CSS("#connect-cmd")))
		b.shot("connect")
		token := strings.TrimSpace(b.text("#session-token"))
		connect := strings.TrimSpace(b.text("#connect-cmd"))
		ssh := strings.TrimSpace(b.text("#ssh-cmd"))
		if !strings.Contains(ssh, "ProxyCommand=outpost connect") || !strings.HasSuffix(ssh, " 127.0.0.1") {
			t.Fatalf("ssh line %q", ssh)
		}
		// The printed connect line, bridged to stdin/stdout instead of a
		// fixed local port, in a directory holding the token file.
		dir := t.TempDir()
		if err := os.WriteFile(filepath.Join(dir, "outpost-session.token"), []byte(token+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		line := strings.Replace(connect, "--listen 127.0.0.1:10022", "--stdio", 1)
		line = outpostBinary(t) + strings.TrimPrefix(line, "outpost")
		cmd := exec.Command("sh", "-c", line)
		cmd.Dir = dir
		cmd.Stdin = strings.NewReader("hello console")
		cmd.Stderr = testlog.New(t)
		out, err := cmd.Output()
		if err != nil || string(out) != "hello console" {
			t.Fatalf("%s: %q, %v", line, out, err)
		}
	})

	t.Run("sessions", func(t *testing.T) {
		b.t = t
		b.open("/ui/account")
		keyID := strings.TrimSpace(b.text(".details dd code"))
		if len(keyID) < 8 {
			t.Fatalf("account page shows key id %q", keyID)
		}
		// The audit row is complete once the session ended on both sides.
		row := `#session-rows tr[data-session]`
		deadline := time.Now().Add(10 * time.Second)
		for {
			b.open("/ui/sessions?since=1h")
			got := b.text(row)
			if strings.Contains(got, "13 B") {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("no finished session with 13 bytes in Sessions after 10 s; the first row shows %q", got)
			}
			time.Sleep(200 * time.Millisecond)
		}
		// The outcome is not checked: a stdio client that ends on EOF is
		// at times audited "error" (the relay's close-write racing the
		// client's close), which is the broker's business, not the page's.
		for _, want := range []string{target, "browser-agent", keyID[:8], "127.0.0.1:"} {
			b.waitText(row, want, time.Second)
		}
		b.shot("sessions")
		b.open("/ui/sessions?outcome=reset")
		b.waitText("#session-rows", "No session matches this filter", 5*time.Second)
		b.open("/ui/agents/" + agentID)
		b.waitText("#session-rows", target, 5*time.Second)
	})

	t.Run("API keys and a read-only key", func(t *testing.T) {
		b.t = t
		b.open("/ui/keys")
		b.run(chromedp.SetValue(chromedp.CSS("#keyname"), "reader"),
			chromedp.Click(chromedp.CSS(`input[value="agents.read"]`)),
			chromedp.Click(chromedp.CSS(`form[action="/ui/keys"] button`)),
			chromedp.WaitVisible(chromedp.CSS("#new-key")))
		reader := strings.TrimSpace(b.text("#new-key"))
		b.shot("keys")
		b.signOut()
		b.signIn(reader)
		b.open("/ui/agents/" + agentID)
		b.waitText("h1", "browser-agent", 5*time.Second)
		if body := b.text("main"); strings.Contains(body, "Delete") || strings.Contains(b.text("nav"), "Enroll") {
			t.Fatalf("a read-only key sees Delete or Enroll:\n%s", body)
		}
		// A forged delete, with this session's own CSRF token: the
		// key's scopes refuse it.
		if st := b.post("/ui/agents/"+agentID+"/delete", map[string]string{"csrf": `document.querySelector("input[name=csrf]").value`}); st != http.StatusForbidden {
			t.Fatalf("forged delete with a read-only key: %d, want 403", st)
		}
		b.signOut()
		b.signIn(gw.adminKey())
		// Without the CSRF token, even the admin's session is refused.
		if st := b.post("/ui/agents/"+agentID+"/delete", map[string]string{"name": `"x"`}); st != http.StatusForbidden {
			t.Fatalf("delete without a CSRF token: %d, want 403", st)
		}
		if gw.agentView(agentID).GetName() != "browser-agent" {
			t.Fatal("the agent is gone")
		}
	})

	t.Run("cross-site POST", func(t *testing.T) {
		b.t = t
		evil := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			fmt.Fprintf(w, `<!doctype html><form id="f" method="post" action="%s/ui/agents/%s/delete"><input name="name" value="x"></form>`+
				`<script>document.getElementById("f").submit()</script>`, gw.url, agentID)
		}))
		defer evil.Close()
		b.run(chromedp.Navigate(evil.URL))
		b.waitText("body", "cross-origin request refused", 10*time.Second)
		if gw.agentView(agentID).GetName() != "browser-agent" {
			t.Fatal("the agent is gone")
		}
	})

	t.Run("approved routes", func(t *testing.T) {
		b.t = t
		b.open("/ui/agents/" + agentID)
		// A malformed route is refused with the API's message, the form
		// keeping what was typed.
		b.fill(map[string]string{"#subnets": "127.0.0.1/32\n10.0.0.0/33"}, `form.routes button`)
		b.waitText(".error", "10.0.0.0/33", 5*time.Second)
		b.fill(map[string]string{"#subnets": "127.0.0.1/32", "#domains": "corp.test"}, `form.routes button`)
		b.waitText("#routes-saved", "saved", 5*time.Second)
		if got := gw.agentView(agentID).GetApprovedRoutes().GetDomains(); len(got) != 1 || got[0] != "corp.test" {
			t.Fatalf("approved domains %v after the form", got)
		}
		b.run(chromedp.WaitVisible(chromedp.CSS("#domains")))
		if v := get(b, chromedp.Value(chromedp.CSS("#domains"))); v != "corp.test" {
			t.Fatalf("the form shows domains %q", v)
		}
	})

	t.Run("delete", func(t *testing.T) {
		b.t = t
		b.open("/ui/agents/" + agentID)
		b.shot("agent")
		b.run(chromedp.Click(chromedp.CSS(`a.danger`)))
		b.waitText("h1", "Delete agent browser-agent?", 5*time.Second)
		b.run(chromedp.Click(chromedp.CSS("#confirm-delete")))
		b.waitText(".notice", "Deleted agent browser-agent", 5*time.Second)
		// Refused at its reconnect, the agent stops for good.
		done := make(chan error, 1)
		go func() { done <- agentCmd.Wait() }()
		select {
		case err := <-done:
			if err == nil || !agentErr.Contains("deleted") {
				t.Fatalf("the deleted agent exited with %v", err)
			}
		case <-time.After(20 * time.Second):
			t.Fatal("the deleted agent still runs after 20 s")
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if _, err := outpostv1.NewAgentAdminServiceClient(gw.conn()).GetAgent(ctx, &outpostv1.GetAgentRequest{AgentId: agentID}); err == nil {
			t.Fatal("the deleted agent is still listed")
		}
		b.waitText(agentRow(xssID), "offline", 5*time.Second)
	})
	if n := b.dialogs.Load(); n != 0 {
		t.Errorf("pages opened %d JavaScript dialogs", n)
	}
}
