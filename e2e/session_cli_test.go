//go:build unix

package e2e

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	outpostv1 "github.com/outposthq/outpost/gen/outpost/v1"
	"github.com/outposthq/outpost/internal/testlog"
)

// The commands the CLI prints are run as printed, with one exception: the
// fixed local port they suggest (127.0.0.1:10022, 127.0.0.1:PORT in the
// demo) may be taken on a machine shared with other tests, so the tests
// swap it for 127.0.0.1:0 and read the port from connect's "listening on".

// shellCommand is a printed command line running under sh in its own
// process group, killed when the test ends.
type shellCommand struct {
	listening chan string   // the address from connect's "listening on ADDR"
	done      chan struct{} // closed when the process has exited
	err       error         // its exit status, once done
	stderr    bytes.Buffer  // written until done
}

// runShell runs line with sh -c, as a user pasting it would; stdin and
// stdout may be nil.
func runShell(t *testing.T, line string, stdin io.Reader, stdout io.Writer) *shellCommand {
	t.Helper()
	t.Logf("$ %s", line)
	cmd := exec.Command("sh", "-c", line)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Stdin, cmd.Stdout = stdin, stdout
	pipe, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	s := &shellCommand{listening: make(chan string, 1), done: make(chan struct{})}
	// Reads stderr until every process of the group closed it, then reaps sh.
	go func() {
		defer close(s.done)
		sc := bufio.NewScanner(pipe)
		for sc.Scan() {
			s.stderr.WriteString(sc.Text() + "\n")
			if rest, ok := strings.CutPrefix(sc.Text(), "listening on "); ok {
				select {
				case s.listening <- strings.TrimSuffix(strings.Fields(rest)[0], ";"):
				default:
				}
			}
		}
		s.err = cmd.Wait()
	}()
	t.Cleanup(func() {
		syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		<-s.done
	})
	return s
}

// addr waits for the "listening on" line.
func (s *shellCommand) addr(t *testing.T) string {
	t.Helper()
	select {
	case a := <-s.listening:
		return a
	case <-s.done:
		t.Fatalf("ended before listening: %v\n%s", s.err, s.stderr.String())
	case <-time.After(60 * time.Second):
		t.Fatal("not listening within 60 s")
	}
	return ""
}

// wait waits for the command to end and returns its error.
func (s *shellCommand) wait(t *testing.T) error {
	t.Helper()
	select {
	case <-s.done:
		return s.err
	case <-time.After(60 * time.Second):
		t.Fatal("still running after 60 s")
		return nil
	}
}

// echoThrough sends msg through a local port and expects it back.
func echoThrough(t *testing.T, addr, msg string) {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(30 * time.Second))
	io.WriteString(c, msg)
	c.(*net.TCPConn).CloseWrite()
	got, err := io.ReadAll(c)
	if err != nil || string(got) != msg {
		t.Fatalf("through %s: %q %v, want %q echoed", addr, got, err, msg)
	}
}

// lineAfter returns the indented command line that follows the line of text
// ending in intro.
func lineAfter(t *testing.T, text, intro string) string {
	t.Helper()
	lines := strings.Split(text, "\n")
	for i, l := range lines {
		if strings.HasSuffix(l, intro) && i+1 < len(lines) && strings.HasPrefix(lines[i+1], "  ") {
			return strings.TrimSpace(lines[i+1])
		}
	}
	t.Fatalf("no command after %q in:\n%s", intro, text)
	return ""
}

// anyPort swaps the suggested local port for one the system picks.
func anyPort(t *testing.T, line, port string) string {
	t.Helper()
	if !strings.Contains(line, "127.0.0.1:"+port) {
		t.Fatalf("%q does not listen on 127.0.0.1:%s", line, port)
	}
	return strings.Replace(line, "127.0.0.1:"+port, "127.0.0.1:0", 1)
}

// sessionCLI is a gateway with an online agent serving an echo target, and
// "outpost session create" against it.
type sessionCLI struct {
	gw     *gateway
	target string
}

func newSessionCLI(t *testing.T) *sessionCLI {
	gw := startGateway(t, t.TempDir(), nil)
	dir, id := enrollAgent(t, gw, "office", loopback, nil)
	startAgent(t, fastAgent(dir))
	gw.waitStatus(id, outpostv1.AgentStatus_AGENT_STATUS_ONLINE, 10*time.Second)
	return &sessionCLI{gw: gw, target: tcpServer(t, echo)}
}

// create runs "outpost session create --target T" with extra flags.
func (s *sessionCLI) create(t *testing.T, extra ...string) (stdout, stderr string, err error) {
	t.Helper()
	args := append([]string{"session", "create", "--gateway", s.gw.url, "--api-key-file", filepath.Join(s.gw.cfg.DataDir, "admin.key"),
		"--ca-file", s.gw.caFile(), "--target", s.target}, extra...)
	cmd := exec.Command(outpostBinary(t), args...)
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	err = cmd.Run()
	return out.String(), errOut.String(), err
}

// "session create --token-file F" writes the token only to F (0600), and
// the connect and ssh ProxyCommand lines it prints read it from there and
// work as printed. An existing F is refused unless --force.
func TestSessionCreateTokenFile(t *testing.T) {
	s := newSessionCLI(t)
	dir := filepath.Join(t.TempDir(), "it's here") // quoting matters
	os.Mkdir(dir, 0o700)
	tokFile := filepath.Join(dir, "session.token")

	out, hints, err := s.create(t, "--token-file", tokFile)
	if err != nil {
		t.Fatalf("session create: %v\n%s", err, hints)
	}
	t.Logf("stderr:\n%s", hints)
	if out != "" {
		t.Errorf("stdout %q, want nothing: the token went to the file", out)
	}
	fi, err := os.Stat(tokFile)
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("token file: %v %v, want mode 0600", fi, err)
	}
	raw, _ := os.ReadFile(tokFile)
	tok := strings.TrimSpace(string(raw))
	if strings.Count(tok, ".") != 2 || strings.Contains(hints, tok) {
		t.Fatalf("token %q; hints must not hold it", tok)
	}
	conn := runShell(t, anyPort(t, lineAfter(t, hints, "Connect with:"), "10022"), nil, nil)
	echoThrough(t, conn.addr(t), "through the listen line")
	if err := conn.wait(t); err != nil {
		t.Errorf("connect with a single-use token: %v\n%s", err, conn.stderr.String())
	}

	// The file exists now: refused (usage error, exit 2), file untouched.
	_, hints2, err := s.create(t, "--token-file", tokFile)
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 2 || !strings.Contains(hints2, "exists: remove it, or pass --force to replace it") {
		t.Fatalf("existing token file: %v\n%s", err, hints2)
	}
	if again, _ := os.ReadFile(tokFile); !bytes.Equal(again, raw) {
		t.Error("a refused session create changed the token file")
	}

	// --force replaces it; the ssh ProxyCommand line works as ssh would run it.
	_, hints, err = s.create(t, "--token-file", tokFile, "--force")
	if err != nil {
		t.Fatalf("session create --force: %v\n%s", err, hints)
	}
	if again, _ := os.ReadFile(tokFile); bytes.Equal(again, raw) {
		t.Error("--force did not replace the token")
	}
	sshLine := lineAfter(t, hints, "as its ProxyCommand:")
	args, ok := strings.CutPrefix(sshLine, "ssh ")
	if !ok {
		t.Fatalf("not an ssh line: %q", sshLine)
	}
	// The shell takes the line apart as it would for ssh: $1 is -o, $2 the
	// option, $3 the host.
	opt, err := exec.Command("sh", "-c", `f() { printf '%s' "$2"; }; f `+args).Output()
	if err != nil {
		t.Fatal(err)
	}
	proxy, ok := strings.CutPrefix(string(opt), "ProxyCommand=")
	if !ok {
		t.Fatalf("ssh option %q", opt)
	}
	var got bytes.Buffer
	pc := runShell(t, "exec "+proxy, strings.NewReader("through the ProxyCommand"), &got)
	if err := pc.wait(t); err != nil || got.String() != "through the ProxyCommand" {
		t.Fatalf("ProxyCommand: %q %v\n%s", got.String(), err, pc.stderr.String())
	}
}

// Without --token-file, stdout is the token and nothing else; the hint on
// stderr pipes it into connect (--token -), and works as printed.
func TestSessionCreateStdout(t *testing.T) {
	s := newSessionCLI(t)
	out, hints, err := s.create(t)
	if err != nil {
		t.Fatalf("session create: %v\n%s", err, hints)
	}
	t.Logf("stderr:\n%s", hints)
	tok := strings.TrimSuffix(out, "\n")
	if strings.Count(tok, ".") != 2 || strings.ContainsAny(tok, " \n") || strings.Contains(hints, tok) {
		t.Fatalf("stdout %q: want the token alone, and the hints without it", out)
	}
	line := lineAfter(t, hints, "in one step:")
	if !strings.Contains(line, " | ") || !strings.Contains(line, "--token -") {
		t.Fatalf("one-step line %q", line)
	}
	conn := runShell(t, anyPort(t, line, "10022"), nil, nil)
	echoThrough(t, conn.addr(t), "through the pipe")
}

// connect reads the token from --token-file, and refuses --token with it.
func TestConnectTokenFileFlags(t *testing.T) {
	s := newSessionCLI(t)
	tokFile := filepath.Join(t.TempDir(), "t")
	if _, hints, err := s.create(t, "--token-file", tokFile); err != nil {
		t.Fatalf("%v\n%s", err, hints)
	}
	out, err := exec.Command(outpostBinary(t), "connect", "--gateway", s.gw.url, "--token-file", tokFile, "--token", "x", "--stdio").CombinedOutput()
	if !strings.Contains(string(out), "give --token or --token-file, not both") {
		t.Fatalf("--token with --token-file: %v %s", err, out)
	}
	empty := filepath.Join(t.TempDir(), "empty")
	os.WriteFile(empty, []byte("\n"), 0o600)
	out, err = exec.Command(outpostBinary(t), "connect", "--gateway", s.gw.url, "--token-file", empty, "--stdio").CombinedOutput()
	if !strings.Contains(string(out), "token file "+empty+" is empty") {
		t.Fatalf("empty token file: %v %s", err, out)
	}
}

// "outpost dev" prints commands that work as printed: the session token goes
// to a 0600 file in its data directory, connect reads it from there, and the
// sample page answers through the agent. Nothing printed holds the admin key
// or the token, and the token file goes when dev stops.
func TestDemoCommands(t *testing.T) {
	data := t.TempDir()
	dev := exec.Command(outpostBinary(t), "dev", "--data-dir", data, "--listen", "127.0.0.1:0", "--quic-listen", "127.0.0.1:0")
	out := testlog.New(t)
	dev.Stdout, dev.Stderr = out, testlog.New(t)
	if err := dev.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- dev.Wait() }()
	stopped := false
	t.Cleanup(func() {
		if !stopped {
			dev.Process.Kill()
			<-exited
		}
	})
	deadline := time.Now().Add(60 * time.Second)
	for !out.Contains("Ctrl-C stops everything.") {
		if time.Now().After(deadline) {
			t.Fatalf("outpost dev printed no instructions within 60 s:\n%s", out.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
	var create, connect, page, agents, sessions string
	for _, l := range strings.Split(out.String(), "\n") {
		l = strings.TrimSpace(l)
		switch {
		case strings.Contains(l, " agents --gateway "):
			agents = l
		case strings.Contains(l, " sessions --gateway "):
			sessions = l
		case strings.Contains(l, " session create "):
			create = l
		case strings.Contains(l, " connect --gateway "):
			connect = strings.TrimSuffix(l, " &")
		case strings.HasPrefix(l, "curl http://127.0.0.1:"):
			page = strings.TrimPrefix(l, "curl ")
		}
	}
	if create == "" || connect == "" || page == "" || agents == "" || sessions == "" {
		t.Fatalf("instructions lack the session commands:\n%s", out.String())
	}
	key, err := os.ReadFile(filepath.Join(data, "gateway", "admin.key"))
	if err != nil || strings.Contains(out.String(), strings.TrimSpace(string(key))) {
		t.Fatalf("admin key %v, or printed:\n%s", err, out.String())
	}

	mint := runShell(t, create, nil, nil)
	if err := mint.wait(t); err != nil {
		t.Fatalf("printed session create: %v\n%s", err, mint.stderr.String())
	}
	tokFile := filepath.Join(data, "session.token")
	fi, err := os.Stat(tokFile)
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("session token file: %v %v, want mode 0600 in the data directory", fi, err)
	}
	tok, _ := os.ReadFile(tokFile)
	if strings.Contains(mint.stderr.String(), strings.TrimSpace(string(tok))) {
		t.Error("session create printed the token")
	}
	// Its port was free when dev started; taken since, the test says so.
	conn := runShell(t, connect, nil, nil)
	addr := conn.addr(t)
	if "http://"+addr+"/" != page {
		t.Fatalf("connect listens on %s, the printed curl asks %s", addr, page)
	}
	resp, err := http.Get(page)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if !strings.Contains(string(body), "Hello from the sample target") {
		t.Fatalf("page through the agent: %q", body)
	}

	// The printed agents and sessions lines show the demo agent online and
	// the session just made, with the key that minted it.
	var agentsOut strings.Builder
	if err := runShell(t, agents, nil, &agentsOut).wait(t); err != nil || !strings.Contains(agentsOut.String(), "dev-agent") || !strings.Contains(agentsOut.String(), "online") {
		t.Errorf("printed agents: %v\n%s", err, agentsOut.String())
	}
	_, after, _ := strings.Cut(create, " --target ")
	target := strings.Fields(after)[0]
	for deadline := time.Now().Add(10 * time.Second); ; {
		var sessOut strings.Builder
		err := runShell(t, sessions, nil, &sessOut).wait(t)
		if err == nil && strings.Contains(sessOut.String(), target) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("printed sessions does not show the session to %s: %v\n%s", target, err, sessOut.String())
		}
		time.Sleep(100 * time.Millisecond)
	}

	// Ctrl-C: dev stops and takes the token file with it.
	dev.Process.Signal(os.Interrupt)
	select {
	case err := <-exited:
		stopped = true
		if err != nil {
			t.Errorf("outpost dev after Ctrl-C: %v", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("outpost dev did not stop within 30 s of Ctrl-C")
	}
	if _, err := os.Stat(tokFile); !os.IsNotExist(err) {
		t.Errorf("session token file left after dev stopped: %v", err)
	}
}
