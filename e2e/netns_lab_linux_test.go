package e2e

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// The network-namespace lab: namespaces and veth pairs created with
// iproute2, processes started inside them with "ip netns exec", and sockets
// the test itself opens inside them (inNetns). Nothing here touches the
// host's own interfaces or routes: every veth is created directly inside its
// two namespaces, and every address lives inside a namespace.

// netnsPrefix starts the name of every namespace the suite creates; the
// process id after it lets a later run remove what a killed run left behind.
const netnsPrefix = "outpost-e2e-"

// netnsTools are the programs the suite runs, with the Debian package that
// provides each.
var netnsTools = []struct{ path, pkg string }{
	{"ip", "iproute2"},
	{"tc", "iproute2"},
	{"mount", "mount"},
	{"/usr/sbin/sshd", "openssh-server"},
	{"ssh", "openssh-client"},
	{"ssh-keygen", "openssh-client"},
	{"nginx", "nginx"},
	{"curl", "curl"},
}

// requireNetns skips the test unless it runs as root on a machine where
// network namespaces can be created and the servers it runs are installed.
// When CI is set, missing programs fail the test instead: CI must run it.
func requireNetns(t *testing.T) {
	t.Helper()
	if testing.Short() {
		t.Skip("netns suite: skipped in -short mode")
	}
	if os.Geteuid() != 0 {
		skipSuite(t, "netns", "needs root (network namespaces, veth pairs, sshd); run as root to include it")
	}
	if _, err := exec.LookPath("ip"); err != nil {
		skipSuite(t, "netns", "needs the ip command (apt-get install -y iproute2)")
	}
	var missing, pkgs []string
	for _, tool := range netnsTools {
		if _, err := exec.LookPath(tool.path); err != nil {
			missing = append(missing, tool.path)
			if !strings.Contains(strings.Join(pkgs, " "), tool.pkg) {
				pkgs = append(pkgs, tool.pkg)
			}
		}
	}
	if len(missing) > 0 {
		reason := fmt.Sprintf("missing %s (apt-get install -y %s)", strings.Join(missing, ", "), strings.Join(pkgs, " "))
		if os.Getenv("CI") != "" {
			t.Fatal("netns suite: " + reason)
		}
		skipSuite(t, "netns", reason)
	}
	// A probe namespace: containers without CAP_SYS_ADMIN cannot make one.
	probe := fmt.Sprintf("%s%d-probe", netnsPrefix, os.Getpid())
	if out, err := exec.Command("ip", "netns", "add", probe).CombinedOutput(); err != nil {
		skipSuite(t, "netns", fmt.Sprintf("cannot create a network namespace (a container without CAP_SYS_ADMIN?): %v: %s", err, bytes.TrimSpace(out)))
	}
	exec.Command("ip", "netns", "del", probe).Run()
}

// mustStep runs step name of a suite whose later steps depend on it, and
// ends the suite when it fails.
func mustStep(t *testing.T, name string, step func(t *testing.T)) {
	t.Helper()
	if !t.Run(name, step) {
		t.Fatalf("step %q failed; the later steps depend on it", name)
	}
}

// netLab owns the namespaces and processes of one test. Its cleanup kills
// every process group, dumps the logs when the test failed, and deletes
// every namespace (which destroys the veths in them).
type netLab struct {
	t      *testing.T
	prefix string
	logDir string
	start  time.Time

	mu sync.Mutex
	// guarded by mu
	namespaces []string
	procs      []*nsProc
	seq        int
}

func newLab(t *testing.T) *netLab {
	t.Helper()
	sweepStaleNetns(t)
	l := &netLab{t: t, prefix: fmt.Sprintf("%s%d-", netnsPrefix, os.Getpid()), logDir: t.TempDir(), start: time.Now()}
	t.Cleanup(l.teardown)
	return l
}

// sweepStaleNetns deletes namespaces a killed earlier run left behind: ours
// by prefix, and whose process is gone.
func sweepStaleNetns(t *testing.T) {
	entries, _ := os.ReadDir("/run/netns")
	for _, e := range entries {
		rest, ok := strings.CutPrefix(e.Name(), netnsPrefix)
		if !ok {
			continue
		}
		pidText, _, _ := strings.Cut(rest, "-")
		pid, err := strconv.Atoi(pidText)
		if err != nil || pid == os.Getpid() {
			continue
		}
		if _, err := os.Stat(fmt.Sprintf("/proc/%d", pid)); err == nil {
			continue // that run is still going
		}
		killNetnsPids(e.Name())
		out, err := exec.Command("ip", "netns", "del", e.Name()).CombinedOutput()
		t.Logf("netns: removed stale namespace %s from an earlier run: %v %s", e.Name(), err, bytes.TrimSpace(out))
	}
}

// killNetnsPids kills every process still inside namespace name.
func killNetnsPids(name string) {
	out, _ := exec.Command("ip", "netns", "pids", name).Output()
	for f := range strings.FieldsSeq(string(out)) {
		if pid, err := strconv.Atoi(f); err == nil && pid > 1 {
			syscall.Kill(pid, syscall.SIGKILL)
		}
	}
}

// logf prints a progress line with the time since the lab started.
func (l *netLab) logf(t testing.TB, format string, args ...any) {
	t.Helper()
	t.Logf("[%5.1fs] %s", time.Since(l.start).Seconds(), fmt.Sprintf(format, args...))
}

// ns is the real name of the lab's namespace short.
func (l *netLab) ns(short string) string { return l.prefix + short }

// ip runs "ip args..." (bounded) and fails the test on error.
func (l *netLab) ip(t testing.TB, args ...string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if out, err := exec.CommandContext(ctx, "ip", args...).CombinedOutput(); err != nil {
		t.Fatalf("ip %s: %v: %s", strings.Join(args, " "), err, bytes.TrimSpace(out))
	}
}

// addNetns creates namespaces with their loopback up.
func (l *netLab) addNetns(t testing.TB, shorts ...string) {
	t.Helper()
	for _, s := range shorts {
		l.ip(t, "netns", "add", l.ns(s))
		l.mu.Lock()
		l.namespaces = append(l.namespaces, l.ns(s))
		l.mu.Unlock()
		l.ip(t, "-n", l.ns(s), "link", "set", "lo", "up")
	}
}

// vethEnd is one end of a veth pair: a namespace, an interface name and an
// address in CIDR form ("" for none, e.g. a bridge port).
type vethEnd struct{ ns, dev, cidr string }

// link creates a veth pair between a and b, addresses and brings up both
// ends. The pair never exists in the host's namespace.
func (l *netLab) link(t testing.TB, a, b vethEnd) {
	t.Helper()
	l.ip(t, "link", "add", a.dev, "netns", l.ns(a.ns), "type", "veth", "peer", "name", b.dev, "netns", l.ns(b.ns))
	for _, e := range []vethEnd{a, b} {
		if e.cidr != "" {
			l.ip(t, "-n", l.ns(e.ns), "addr", "add", e.cidr, "dev", e.dev)
		}
		l.ip(t, "-n", l.ns(e.ns), "link", "set", e.dev, "up")
	}
}

// bridge creates bridge dev in ns and attaches ports to it.
func (l *netLab) bridge(t testing.TB, ns, dev string, ports ...string) {
	t.Helper()
	l.ip(t, "-n", l.ns(ns), "link", "add", dev, "type", "bridge")
	l.ip(t, "-n", l.ns(ns), "link", "set", dev, "up")
	for _, p := range ports {
		l.ip(t, "-n", l.ns(ns), "link", "set", p, "master", dev)
	}
}

// route adds a route inside ns.
func (l *netLab) route(t testing.TB, ns, dst, via string) {
	t.Helper()
	l.ip(t, "-n", l.ns(ns), "route", "add", dst, "via", via)
}

// teardown kills every process group, dumps logs after a failure, and
// deletes the namespaces.
func (l *netLab) teardown() {
	l.mu.Lock()
	procs, namespaces := l.procs, l.namespaces
	l.mu.Unlock()
	for _, p := range procs {
		p.kill()
	}
	for _, p := range procs {
		if !p.waitFor(10 * time.Second) {
			l.t.Errorf("netns: %s (pid %d) survived SIGKILL for 10 s", p.name, p.cmd.Process.Pid)
		}
	}
	if l.t.Failed() {
		l.dumpLogs()
	}
	for _, ns := range namespaces {
		killNetnsPids(ns) // anything a process started outside its group
		if out, err := exec.Command("ip", "netns", "del", ns).CombinedOutput(); err != nil {
			l.t.Errorf("netns: delete %s: %v: %s", ns, err, bytes.TrimSpace(out))
		}
	}
}

// dumpLogs writes the tail of every log file to the test log.
func (l *netLab) dumpLogs() {
	const maxLines = 150
	files, _ := filepath.Glob(filepath.Join(l.logDir, "*.log"))
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			continue
		}
		lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
		skipped := ""
		if len(lines) > maxLines {
			skipped = fmt.Sprintf(" (last %d of %d lines)", maxLines, len(lines))
			lines = lines[len(lines)-maxLines:]
		}
		l.t.Logf("==== %s%s ====\n%s", filepath.Base(f), skipped, strings.Join(lines, "\n"))
	}
}

// nsProc is a long-running process inside a namespace, in its own process
// group, its output in a log file.
type nsProc struct {
	name string
	cmd  *exec.Cmd
	log  string
	done chan struct{}
	err  error // set before done is closed
}

// startProc starts args inside namespace ns. stdin may be nil. The process
// belongs to the lab: it is killed when the whole test ends, not when the
// subtest t does.
func (l *netLab) startProc(t testing.TB, ns, name string, stdin io.Reader, args ...string) *nsProc {
	t.Helper()
	l.mu.Lock()
	l.seq++
	logPath := filepath.Join(l.logDir, fmt.Sprintf("%02d-%s.log", l.seq, name))
	l.mu.Unlock()
	f, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	fmt.Fprintf(f, "# netns %s: %s\n", ns, strings.Join(args, " "))
	cmd := exec.Command("ip", append([]string{"netns", "exec", l.ns(ns)}, args...)...)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = stdin, f, f
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", name, err)
	}
	p := &nsProc{name: name, cmd: cmd, log: logPath, done: make(chan struct{})}
	l.appendLog("commands", fmt.Sprintf("# [%s] started %s: pid %d", ns, filepath.Base(logPath), cmd.Process.Pid))
	go func() {
		p.err = cmd.Wait()
		close(p.done)
	}()
	l.mu.Lock()
	l.procs = append(l.procs, p)
	l.mu.Unlock()
	return p
}

// kill sends SIGKILL to the process group.
func (p *nsProc) kill() { syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL) }

// exited reports whether the process has exited.
func (p *nsProc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// waitFor waits up to d for the process to exit.
func (p *nsProc) waitFor(d time.Duration) bool {
	select {
	case <-p.done:
		return true
	case <-time.After(d):
		return false
	}
}

// stop sends SIGTERM and waits up to grace, then kills the group. It returns
// the exit error of a process that stopped by itself.
func (p *nsProc) stop(grace time.Duration) error {
	p.cmd.Process.Signal(syscall.SIGTERM)
	if p.waitFor(grace) {
		p.kill() // children left in the group
		return p.err
	}
	p.kill()
	if !p.waitFor(10 * time.Second) {
		return fmt.Errorf("%s did not stop within %v of SIGTERM, nor within 10 s of SIGKILL", p.name, grace)
	}
	return fmt.Errorf("%s did not stop within %v of SIGTERM; killed", p.name, grace)
}

// logText is what the process wrote so far.
func (p *nsProc) logText() string {
	b, _ := os.ReadFile(p.log)
	return string(b)
}

// waitLog waits up to d for re to match the process's output and returns
// the first submatch (or the whole match).
func (p *nsProc) waitLog(re *regexp.Regexp, d time.Duration) (string, error) {
	deadline := time.Now().Add(d)
	for {
		if m := re.FindStringSubmatch(p.logText()); m != nil {
			return m[len(m)-1], nil
		}
		if p.exited() {
			return "", fmt.Errorf("%s exited (%v) before printing %q", p.name, p.err, re)
		}
		if time.Now().After(deadline) {
			return "", fmt.Errorf("%s did not print %q within %v", p.name, re, d)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// run runs a short command inside ns, bounded by timeout, with stdout going
// to stdout (may be nil). The command line and its stderr go to the
// commands log; an error carries the stderr tail.
func (l *netLab) run(ns string, timeout time.Duration, stdin io.Reader, stdout io.Writer, args ...string) error {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, "ip", append([]string{"netns", "exec", l.ns(ns)}, args...)...)
	var stderr bytes.Buffer
	cmd.Stdin, cmd.Stdout, cmd.Stderr = stdin, stdout, &stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	cmd.WaitDelay = 5 * time.Second
	began := time.Now()
	err := cmd.Run()
	if cmd.Process != nil {
		syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) // e.g. ssh's ProxyCommand
	}
	l.appendLog("commands", fmt.Sprintf("# [%s] %s (%v, %v)\n%s", ns, strings.Join(args, " "), time.Since(began).Round(time.Millisecond), err, stderr.String()))
	if ctx.Err() != nil {
		err = fmt.Errorf("timed out after %v: %w", timeout, err)
	}
	if err != nil {
		return fmt.Errorf("%s: %w: %s", filepath.Base(args[0]), err, tailText(stderr.String(), 2000))
	}
	return nil
}

// output runs a short command and returns its stdout, trimmed.
func (l *netLab) output(ns string, timeout time.Duration, stdin io.Reader, args ...string) (string, error) {
	var out bytes.Buffer
	err := l.run(ns, timeout, stdin, &out, args...)
	return strings.TrimSpace(out.String()), err
}

func (l *netLab) appendLog(name, text string) {
	f, err := os.OpenFile(filepath.Join(l.logDir, "00-"+name+".log"), os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
	if err != nil {
		return
	}
	defer f.Close()
	f.WriteString(strings.TrimRight(text, "\n") + "\n")
}

func tailText(s string, n int) string {
	s = strings.TrimSpace(s)
	if len(s) > n {
		return "…" + s[len(s)-n:]
	}
	return s
}

// inNetns runs fn on an OS thread switched into namespace ns, so that the
// sockets fn creates belong to it (a socket keeps its namespace for life).
// The thread is switched back before it is released; if that fails, it
// stays locked and the runtime discards it when the goroutine exits.
func inNetns[T any](ns string, fn func() (T, error)) (T, error) {
	type result struct {
		v   T
		err error
	}
	ch := make(chan result, 1)
	go func() {
		var zero T
		runtime.LockOSThread()
		orig, err := os.Open("/proc/thread-self/ns/net")
		if err != nil {
			runtime.UnlockOSThread()
			ch <- result{zero, err}
			return
		}
		defer orig.Close()
		target, err := os.Open(filepath.Join("/run/netns", ns))
		if err != nil {
			runtime.UnlockOSThread()
			ch <- result{zero, err}
			return
		}
		defer target.Close()
		if err := setns(target); err != nil {
			runtime.UnlockOSThread()
			ch <- result{zero, fmt.Errorf("setns %s: %w", ns, err)}
			return
		}
		v, err := fn()
		if setns(orig) == nil {
			runtime.UnlockOSThread()
		}
		ch <- result{v, err}
	}()
	r := <-ch
	return r.v, r.err
}

func setns(f *os.File) error {
	return unix.Setns(int(f.Fd()), unix.CLONE_NEWNET)
}

// dial opens a TCP connection from inside namespace ns.
func (l *netLab) dial(ctx context.Context, ns, addr string) (net.Conn, error) {
	return inNetns(l.ns(ns), func() (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "tcp", addr)
	})
}

// canReach reports whether a TCP connection from ns to addr succeeds within
// timeout, with the error when it does not.
func (l *netLab) canReach(ns, addr string, timeout time.Duration) (bool, error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	c, err := l.dial(ctx, ns, addr)
	if err != nil {
		return false, err
	}
	c.Close()
	return true, nil
}

// waitReachable waits until addr accepts TCP connections from ns.
func (l *netLab) waitReachable(ns, addr string, within time.Duration) error {
	deadline := time.Now().Add(within)
	for {
		ok, err := l.canReach(ns, addr, time.Second)
		if ok {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s not reachable from %s within %v: %w", addr, ns, within, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// httpClient is an HTTP client whose connections are made inside ns and
// that trusts caPEM. Its idle connections are closed when the test ends.
func (l *netLab) httpClient(t testing.TB, ns string, caPEM []byte) *http.Client {
	t.Helper()
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(caPEM) {
		t.Fatal("httpClient: no certificate in the CA PEM")
	}
	tr := &http.Transport{
		TLSClientConfig: &tls.Config{RootCAs: pool},
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			return l.dial(ctx, ns, addr)
		},
		DisableKeepAlives: true,
	}
	l.t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr, Timeout: 10 * time.Second}
}
