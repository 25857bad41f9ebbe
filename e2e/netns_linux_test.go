package e2e

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"
)

// The lab (every address lives inside the test's namespaces):
//
//	link               one end                  other end
//	client ↔ gw        client eth0 10.99.0.2    gw client 10.99.0.1
//	office ↔ gw        office wan 10.99.1.2     gw office 10.99.1.1 (the gateway's address)
//	office2 ↔ gw       office2 wan 10.99.3.2    gw office2 10.99.3.1
//	private network    bridge br0 in lan: office 10.99.2.1, office2 10.99.2.2, t1 10.99.2.10
//
// gw runs the gateway, office and office2 the agents, t1 sshd (:22) and
// nginx (:80), client the clients (ssh, curl, outpost connect). gw has no
// route to the private network and does not forward; client and office2
// have a route to the gateway's address only.
const (
	netnsGwIP       = "10.99.1.1"
	netnsPrivSubnet = "10.99.2.0/24"
	netnsOfficeIP   = "10.99.2.1"
	netnsOffice2IP  = "10.99.2.2"
	netnsT1IP       = "10.99.2.10"
	netnsRelayPort  = "4434"

	netnsBigSize  = 50 << 20 // the checksummed transfer
	netnsLossSize = 5 << 20  // the transfer over the lossy link
)

// netnsSuite is the state the steps of TestNetns share.
type netnsSuite struct {
	*netLab
	bin    string
	gwDir  string
	gw     *nsProc
	url    string
	keyF   string
	caF    string
	api    *http.Client
	apiKey string
	ssh    sshdTarget
	web    nginxTarget
	index  string // the content of index.html
	bigSum string
	midSum string
	netem  bool
	relay  *udpRelay // when the kernel has no netem
	agents map[string]*netnsAgent
}

// netnsAgent is one enrolled agent and its current process.
type netnsAgent struct {
	name, ns, ip, dir, id string
	proc                  *nsProc
}

// TestNetns runs the real binary as separate processes in network
// namespaces: a gateway, agents in front of a private network with real
// sshd and nginx, and clients that only reach the gateway. The steps share
// one lab and run in order; each is a subtest named for what it proves.
func TestNetns(t *testing.T) {
	requireNetns(t)
	s := &netnsSuite{netLab: newLab(t), bin: outpostBinary(t), agents: map[string]*netnsAgent{}}

	must := func(name string, f func(t *testing.T)) { t.Helper(); mustStep(t, name, f) }
	must("topology", s.topology)
	must("real servers on the private network", s.servers)
	must("gateway cannot reach the private network", s.isolation)
	must("gateway starts", s.gatewayStarts)
	must("enroll with the CLI", s.enrollCLI)
	must("agent up", s.agentUp)
	t.Run("ssh through connect --stdio runs a command", s.sshHello)
	t.Run("ssh ProxyCommand shows why a session failed", s.sshFailureReason)
	t.Run("routing prefers the most recently connected agent", s.prefersRecent)
	t.Run("curl through connect --listen fetches a page", s.curlPage)
	t.Run("50 MB transfers keep their checksum", s.bigTransfers)
	t.Run("kill -9 of the preferred agent under a session load: none fails or takes over 3 s, the second agent carries on", s.agentKilled)
	t.Run("gateway restart: agents back within 70 s, tokens and agents persisted", s.gatewayRestart)
	t.Run("gateway kill -9 and restart: every agent back within 5 s", s.gatewayCrash)
	t.Run("lossy link (2% loss, 50 ms delay): a transfer completes intact", s.lossyLink)
	t.Run("DeleteAgent: the agent goes offline and cannot reconnect", s.deleteAgent)
	t.Run("direct connections: only inside the allow-list, never the gateway's own addresses", s.directPolicy)
	s.logf(t, "netns suite done")
}

func (s *netnsSuite) topology(t *testing.T) {
	s.addNetns(t, "client", "gw", "office", "office2", "lan", "t1")
	s.link(t, vethEnd{"client", "eth0", "10.99.0.2/24"}, vethEnd{"gw", "client", "10.99.0.1/24"})
	s.link(t, vethEnd{"office", "wan", "10.99.1.2/24"}, vethEnd{"gw", "office", netnsGwIP + "/24"})
	s.link(t, vethEnd{"office2", "wan", "10.99.3.2/24"}, vethEnd{"gw", "office2", "10.99.3.1/24"})
	s.route(t, "client", netnsGwIP+"/32", "10.99.0.1")
	s.route(t, "office2", netnsGwIP+"/32", "10.99.3.1")
	s.link(t, vethEnd{"office", "lan", netnsOfficeIP + "/24"}, vethEnd{"lan", "office", ""})
	s.link(t, vethEnd{"office2", "lan", netnsOffice2IP + "/24"}, vethEnd{"lan", "office2", ""})
	s.link(t, vethEnd{"t1", "eth0", netnsT1IP + "/24"}, vethEnd{"lan", "t1", ""})
	s.bridge(t, "lan", "br0", "office", "office2", "t1")
	// The gateway namespace must not route between its links.
	if b, err := nsOutput(s.netLab, "gw", "cat", "/proc/sys/net/ipv4/ip_forward"); err != nil || strings.TrimSpace(b) != "0" {
		t.Fatalf("ip_forward in gw: %q %v, want 0", b, err)
	}
	s.netem, _ = s.hasNetem("office")
	s.logf(t, "namespaces %s{client,gw,office,office2,lan,t1} and their veths are up (netem in the kernel: %v)", s.prefix, s.netem)
}

// nsOutput runs a short command in ns and returns its stdout.
func nsOutput(l *netLab, ns string, args ...string) (string, error) {
	return l.output(ns, 10*time.Second, nil, args...)
}

func (s *netnsSuite) servers(t *testing.T) {
	s.ssh = s.startSSHD(t, "t1", netnsT1IP)
	s.web = s.startNginx(t, "t1", netnsT1IP)
	s.index = fmt.Sprintf("<h1>outpost netns target t1 (%d)</h1>\n", time.Now().UnixNano())
	nsWriteFile(t, filepath.Join(s.web.www, "index.html"), s.index)
	s.bigSum = nsRandomFile(t, filepath.Join(s.web.www, "big.bin"), netnsBigSize, 1)
	s.midSum = nsRandomFile(t, filepath.Join(s.web.www, "mid.bin"), netnsLossSize, 2)
	for _, ns := range []string{"office", "office2"} {
		for _, addr := range []string{s.ssh.addr, s.web.addr} {
			if err := s.waitReachable(ns, addr, 20*time.Second); err != nil {
				t.Fatal(err)
			}
		}
	}
	s.logf(t, "sshd and nginx listen on %s; both offices reach them", netnsT1IP)
}

func (s *netnsSuite) isolation(t *testing.T) {
	for _, ns := range []string{"gw", "client"} {
		for _, addr := range []string{s.ssh.addr, s.web.addr} {
			ok, err := s.canReach(ns, addr, 3*time.Second)
			if ok {
				t.Fatalf("%s reaches %s directly: the private network is not private", ns, addr)
			}
			s.logf(t, "%s → %s: %v (as it must)", ns, addr, err)
		}
	}
}

func (s *netnsSuite) gatewayArgs() []string {
	return []string{s.bin, "gateway", "--data-dir", s.gwDir, "--listen", netnsGwIP + ":7171", "--quic-listen", netnsGwIP + ":4433",
		"--hostname", netnsGwIP, "--quic-idle-timeout", "5s", "--allow-direct=false", "--log-level", "debug"}
}

func (s *netnsSuite) gatewayStarts(t *testing.T) {
	s.gwDir = s.t.TempDir()
	s.url = "https://" + netnsGwIP + ":7171"
	s.keyF, s.caF = filepath.Join(s.gwDir, "admin.key"), filepath.Join(s.gwDir, "ca.pem")
	s.gw = s.startProc(t, "gw", "gateway", nil, s.gatewayArgs()...)
	if _, err := s.gw.waitLog(regexp.MustCompile(`agent tunnel listening`), 30*time.Second); err != nil {
		t.Fatal(err)
	}
	ca, err := os.ReadFile(s.caF)
	if err != nil {
		t.Fatal(err)
	}
	key, err := os.ReadFile(s.keyF)
	if err != nil {
		t.Fatal(err)
	}
	s.apiKey = strings.TrimSpace(string(key))
	// The first admin key stays in admin.key: the gateway prints its path,
	// never the key (logs end up in journald and container logs).
	if strings.Contains(s.gw.logText(), s.apiKey) {
		t.Error("the gateway printed the first admin key")
	}
	if !strings.Contains(s.gw.logText(), s.keyF) {
		t.Error("the gateway did not say where the first admin key is")
	}
	s.api = s.httpClient(t, "client", ca)
	if err := s.waitReady(30 * time.Second); err != nil {
		t.Fatal(err)
	}
	s.logf(t, "gateway up in gw at %s (QUIC %s:4433), reached from client", s.url, netnsGwIP)
}

// waitReady polls /readyz from the client namespace.
func (s *netnsSuite) waitReady(within time.Duration) error {
	deadline := time.Now().Add(within)
	for {
		code, body, err := s.rest("GET", "/readyz")
		if code == http.StatusOK {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("gateway not ready within %v: %d %s %v", within, code, body, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// admin runs an admin subcommand of the CLI from the client namespace.
func (s *netnsSuite) admin(args ...string) (string, error) {
	full := append([]string{s.bin}, args...)
	full = append(full, "--gateway", s.url, "--api-key-file", s.keyF, "--ca-file", s.caF)
	return s.output("client", 30*time.Second, nil, full...)
}

// enrollToken mints an enrollment token for name, pre-approving the private
// network.
func (s *netnsSuite) enrollToken(t *testing.T, name string) string {
	t.Helper()
	tok, err := s.admin("gateway", "token", "create", "--name", name, "--subnets", netnsPrivSubnet)
	if err != nil {
		t.Fatalf("token create: %v", err)
	}
	return tok
}

// sessionToken mints a session token for target.
func (s *netnsSuite) sessionToken(t *testing.T, target string, extra ...string) string {
	t.Helper()
	tok, err := s.admin(append([]string{"session", "create", "--target", target}, extra...)...)
	if err != nil {
		t.Fatalf("session create: %v", err)
	}
	return tok
}

// netnsAgentID reads the agent id from a config directory, waiting for it
// (agent up writes it after enrolling).
func netnsAgentID(dir string, within time.Duration) (string, error) {
	deadline := time.Now().Add(within)
	for {
		var cfg struct{ Tunnel struct{ AgentId string } }
		b, err := os.ReadFile(filepath.Join(dir, "agent.json"))
		if err == nil && json.Unmarshal(b, &cfg) == nil && cfg.Tunnel.AgentId != "" {
			return cfg.Tunnel.AgentId, nil
		}
		if time.Now().After(deadline) {
			return "", fmt.Errorf("no agent id in %s/agent.json after %v: %v", dir, within, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func (s *netnsSuite) enrollCLI(t *testing.T) {
	a := &netnsAgent{name: "office", ns: "office", ip: netnsOfficeIP, dir: s.t.TempDir()}
	tok := s.enrollToken(t, a.name)
	out, err := s.output(a.ns, 60*time.Second, strings.NewReader(tok+"\n"),
		s.bin, "agent", "enroll", "--token", "-", "--config-dir", a.dir)
	if err != nil {
		t.Fatalf("agent enroll: %v", err)
	}
	if !strings.Contains(out, `enrolled agent "office"`) {
		t.Errorf("agent enroll printed %q", out)
	}
	if a.id, err = netnsAgentID(a.dir, 0); err != nil {
		t.Fatal(err)
	}
	s.agents[a.name] = a
	if st, _, err := s.agentStatus(a.id); err != nil || st != "AGENT_STATUS_OFFLINE" {
		t.Fatalf("enrolled agent: status %q %v, want AGENT_STATUS_OFFLINE", st, err)
	}
	s.logf(t, "enrolled %q (%s) from office with outpost agent enroll: %s", a.name, a.id, out)
}

func (s *netnsSuite) agentUp(t *testing.T) {
	// office2 first, with "agent up" (enroll and run)...
	b := &netnsAgent{name: "office2", ns: "office2", ip: netnsOffice2IP, dir: s.t.TempDir()}
	tok := s.enrollToken(t, b.name)
	b.proc = s.startProc(t, b.ns, "agent-office2", strings.NewReader(tok+"\n"),
		s.bin, "agent", "up", "--token", "-", "--config-dir", b.dir, "--log-level", "debug")
	var err error
	if b.id, err = netnsAgentID(b.dir, 30*time.Second); err != nil {
		t.Fatal(err)
	}
	s.agents[b.name] = b
	if err := s.waitStatus(b.id, "AGENT_STATUS_ONLINE", 30*time.Second); err != nil {
		t.Fatal(err)
	}
	s.logf(t, "office2 (%s) online after outpost agent up", b.id)

	// ...then the agent enrolled in the previous step, with "agent run".
	a := s.agents["office"]
	a.proc = s.startProc(t, a.ns, "agent-office", nil, s.bin, "agent", "run", "--config-dir", a.dir, "--log-level", "debug")
	if err := s.waitStatus(a.id, "AGENT_STATUS_ONLINE", 30*time.Second); err != nil {
		t.Fatal(err)
	}
	s.logf(t, "office (%s) online after outpost agent run", a.id)
}

// sshArgs is the ssh command line running remote through "outpost connect
// --stdio" with tok.
func (s *netnsSuite) sshArgs(tok, remote string) []string {
	proxy := fmt.Sprintf("%s connect --gateway %s --ca-file %s --token %s --stdio", s.bin, s.url, s.caF, tok)
	return []string{"ssh", "-F", "/dev/null", "-i", s.ssh.key,
		"-o", "ProxyCommand=" + proxy,
		"-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null", "-o", "GlobalKnownHostsFile=/dev/null",
		"-o", "BatchMode=yes", "-o", "IdentitiesOnly=yes", "-o", "ConnectTimeout=60", "-o", "LogLevel=ERROR",
		"root@" + netnsT1IP, remote}
}

// sshOutput runs remote on t1 through a fresh single-use session token.
func (s *netnsSuite) sshOutput(t *testing.T, remote string, tokenArgs ...string) (string, error) {
	t.Helper()
	return s.output("client", 90*time.Second, nil, s.sshArgs(s.sessionToken(t, s.ssh.addr, tokenArgs...), remote)...)
}

// sshVia reports the private address the session reached t1 from: which
// agent carried it.
func (s *netnsSuite) sshVia(t *testing.T) (string, error) {
	t.Helper()
	out, err := s.sshOutput(t, "echo $SSH_CLIENT")
	if err != nil {
		return "", err
	}
	from, _, _ := strings.Cut(out, " ")
	return from, nil
}

func (s *netnsSuite) sshHello(t *testing.T) {
	began := time.Now()
	out, err := s.sshOutput(t, "echo hello")
	if err != nil {
		t.Fatal(err)
	}
	if out != "hello" {
		t.Fatalf("ssh printed %q, want hello", out)
	}
	s.logf(t, "ssh -o ProxyCommand='outpost connect --stdio' root@%s echo hello → %q (%v)", netnsT1IP, out, time.Since(began).Round(time.Millisecond))
}

// A session the gateway cannot route fails; the user running ssh must see
// the gateway's reason, which "outpost connect --stdio" prints on stderr.
func (s *netnsSuite) sshFailureReason(t *testing.T) {
	const unrouted = "10.99.9.9:22" // no agent advertises it; direct is off
	tok := s.sessionToken(t, unrouted)
	args := s.sshArgs(tok, "true")
	args[len(args)-2] = "root@10.99.9.9"
	_, err := s.output("client", 60*time.Second, nil, args...)
	if err == nil {
		t.Fatalf("ssh to %s succeeded", unrouted)
	}
	if !strings.Contains(err.Error(), "session failed") {
		// ssh sees stdout close, exits and SIGHUPs its ProxyCommand before
		// the reason is printed.
		t.Fatalf("ssh's stderr lacks the gateway's reason: %v", err)
	}
	s.logf(t, "ssh to an unrouted target fails with the reason: %v", tailText(err.Error(), 300))
}

func (s *netnsSuite) prefersRecent(t *testing.T) {
	from, err := s.sshVia(t)
	if err != nil {
		t.Fatal(err)
	}
	if from != netnsOfficeIP {
		t.Fatalf("session reached t1 from %s, want %s: office connected last and both advertise %s (DESIGN §8: ties → most recently connected first)", from, netnsOfficeIP, netnsPrivSubnet)
	}
	s.logf(t, "session carried by office (t1 saw %s)", from)
}

// listen runs "outpost connect --listen" in the client namespace with tok
// and returns the address it serves.
func (s *netnsSuite) listen(t *testing.T, tok string) (string, *nsProc) {
	t.Helper()
	p := s.startProc(t, "client", "connect-listen", strings.NewReader(tok+"\n"),
		s.bin, "connect", "--gateway", s.url, "--ca-file", s.caF, "--token", "-", "--listen", "127.0.0.1:0")
	addr, err := p.waitLog(regexp.MustCompile(`listening on (127\.0\.0\.1:\d+)`), 20*time.Second)
	if err != nil {
		p.kill()
		t.Fatal(err)
	}
	return addr, p
}

// fetch gets path with curl from the client namespace through addr.
func (s *netnsSuite) fetch(addr, path string, w io.Writer, timeout time.Duration) error {
	return s.run("client", timeout, nil, w, "curl", "-sS", "--fail", "--max-time", strconv.Itoa(int(timeout.Seconds())-5),
		"-o", "-", "http://"+addr+path)
}

func (s *netnsSuite) curlPage(t *testing.T) {
	addr, p := s.listen(t, s.sessionToken(t, s.web.addr, "--reusable"))
	defer p.stop(5 * time.Second)
	var page bytes.Buffer
	if err := s.fetch(addr, "/index.html", &page, 60*time.Second); err != nil {
		t.Fatal(err)
	}
	if page.String() != s.index {
		t.Fatalf("page %q, want %q", page.String(), s.index)
	}
	s.logf(t, "curl http://%s/index.html (outpost connect --listen → %s) → %q", addr, s.web.addr, strings.TrimSpace(page.String()))
}

// hashedFetch downloads path and returns its SHA-256 and size.
func (s *netnsSuite) hashedFetch(addr, path string, timeout time.Duration) (string, int64, error) {
	h := sha256.New()
	cw := &nsCountWriter{w: h}
	err := s.fetch(addr, path, cw, timeout)
	return hex.EncodeToString(h.Sum(nil)), cw.n, err
}

type nsCountWriter struct {
	w io.Writer
	n int64
}

func (c *nsCountWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += int64(n)
	return n, err
}

func nsRate(n int64, d time.Duration) string {
	return fmt.Sprintf("%.1f MB/s", float64(n)/1e6/d.Seconds())
}

func (s *netnsSuite) bigTransfers(t *testing.T) {
	// Download: nginx serves 50 MB of random bytes.
	addr, p := s.listen(t, s.sessionToken(t, s.web.addr, "--reusable"))
	defer p.stop(5 * time.Second)
	began := time.Now()
	sum, n, err := s.hashedFetch(addr, "/big.bin", 120*time.Second)
	if err != nil {
		t.Fatalf("download after %d bytes: %v", n, err)
	}
	if n != netnsBigSize || sum != s.bigSum {
		t.Fatalf("download: %d bytes, sha256 %s; want %d bytes, %s", n, sum, netnsBigSize, s.bigSum)
	}
	s.logf(t, "downloaded 50 MB from nginx, sha256 matches (%v, %s)", time.Since(began).Round(time.Millisecond), nsRate(n, time.Since(began)))

	// Upload: 50 MB into sha256sum over ssh.
	want := sha256.New()
	io.Copy(want, nsRandomStream(netnsBigSize, 3))
	began = time.Now()
	out, err := s.output("client", 120*time.Second, nsRandomStream(netnsBigSize, 3), s.sshArgs(s.sessionToken(t, s.ssh.addr), "sha256sum")...)
	if err != nil {
		t.Fatalf("upload: %v", err)
	}
	if got, _, _ := strings.Cut(out, " "); got != hex.EncodeToString(want.Sum(nil)) {
		t.Fatalf("upload: t1 computed %q, want %x", out, want.Sum(nil))
	}
	s.logf(t, "uploaded 50 MB through ssh into sha256sum on t1, digest matches (%v, %s)", time.Since(began).Round(time.Millisecond), nsRate(netnsBigSize, time.Since(began)))
}

func (s *netnsSuite) gatewayRestart(t *testing.T) {
	b := s.agents["office2"]
	if b.proc == nil || b.proc.exited() {
		t.Fatal("office2 agent is not running")
	}
	// Minted before the restart: a reusable session token and an
	// enrollment token.
	sessTok := s.sessionToken(t, s.ssh.addr, "--reusable", "--ttl", "5m")
	enrollTok := s.enrollToken(t, "office3")
	out, err := s.output("client", 90*time.Second, nil, s.sshArgs(sessTok, "echo before")...)
	if err != nil || out != "before" {
		t.Fatalf("reusable token before the restart: %q %v", out, err)
	}

	if err := s.gw.stop(20 * time.Second); err != nil {
		t.Errorf("gateway stop on SIGTERM: %v", err)
	}
	s.logf(t, "gateway stopped (SIGTERM)")
	began := time.Now()
	s.gw = s.startProc(t, "gw", "gateway", nil, s.gatewayArgs()...)
	if err := s.waitReady(30 * time.Second); err != nil {
		t.Fatal(err)
	}
	s.logf(t, "gateway restarted on the same data dir in %v", time.Since(began).Round(time.Millisecond))
	if err := s.waitStatus(b.id, "AGENT_STATUS_ONLINE", 70*time.Second-time.Since(began)); err != nil {
		t.Fatal(err)
	}
	s.logf(t, "office2 online again %v after the restart", time.Since(began).Round(time.Millisecond))

	list, err := s.listAgents()
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{s.agents["office"].id: "AGENT_STATUS_OFFLINE", b.id: "AGENT_STATUS_ONLINE"}
	for _, a := range list {
		if st, ok := want[a.AgentID]; ok {
			if a.Status != st {
				t.Errorf("after the restart %s (%s) is %s, want %s", a.Name, a.AgentID, a.Status, st)
			}
			delete(want, a.AgentID)
		}
	}
	if len(want) > 0 {
		t.Errorf("agents missing from GET /v1/agents after the restart: %v", want)
	}
	s.logf(t, "GET /v1/agents lists %d agents after the restart", len(list))

	out, err = s.output("client", 90*time.Second, nil, s.sshArgs(sessTok, "echo after")...)
	if err != nil || out != "after" {
		t.Errorf("session token minted before the restart: %q %v", out, err)
	} else {
		s.logf(t, "session token minted before the restart still works")
	}

	// The enrollment token minted before the restart enrolls office3 in the
	// office namespace (whose first agent was killed).
	c := &netnsAgent{name: "office3", ns: "office", ip: netnsOfficeIP, dir: s.t.TempDir()}
	args := []string{s.bin, "agent", "up", "--token", "-", "--config-dir", c.dir, "--log-level", "debug"}
	if !s.netem {
		// No netem in this kernel: office3's tunnel goes through a relay in
		// gw that can impair it like netem would (see lossyLink).
		s.relay = s.startRelay(t, "gw", netnsGwIP+":"+netnsRelayPort, netnsGwIP+":4433")
		args = append(args, "--quic-endpoint", netnsGwIP+":"+netnsRelayPort)
	}
	c.proc = s.startProc(t, c.ns, "agent-office3", strings.NewReader(enrollTok+"\n"), args...)
	if c.id, err = netnsAgentID(c.dir, 30*time.Second); err != nil {
		t.Fatalf("enrollment token minted before the restart: %v", err)
	}
	s.agents[c.name] = c
	if err := s.waitStatus(c.id, "AGENT_STATUS_ONLINE", 30*time.Second); err != nil {
		t.Fatal(err)
	}
	s.logf(t, "enrollment token minted before the restart enrolled office3 (%s), online", c.id)
}

func (s *netnsSuite) lossyLink(t *testing.T) {
	c := s.agents["office3"]
	if c == nil || c.proc.exited() {
		t.Fatal("office3 (enrolled in the restart step) is not running")
	}
	if s.netem {
		if err := s.run("office", 10*time.Second, nil, nil, "tc", "qdisc", "add", "dev", "wan", "root", "netem",
			"loss", strconv.Itoa(netemLossPercent)+"%", "delay", netemDelay.String()); err != nil {
			t.Fatal(err)
		}
		defer s.run("office", 10*time.Second, nil, nil, "tc", "qdisc", "del", "dev", "wan", "root")
		s.logf(t, "tc netem loss %d%% delay %v on office's uplink", netemLossPercent, netemDelay)
	} else {
		s.relay.impaired.Store(true)
		defer s.relay.impaired.Store(false)
		s.logf(t, "this kernel has no sch_netem: the relay on office3's path drops %d%% and delays %v (agent → gateway)", netemLossPercent, netemDelay)
	}
	addr, p := s.listen(t, s.sessionToken(t, s.web.addr, "--agent", c.id, "--reusable", "--ttl", "5m"))
	defer p.stop(5 * time.Second)
	began := time.Now()
	sum, n, err := s.hashedFetch(addr, "/mid.bin", 150*time.Second)
	if err != nil {
		t.Fatalf("download over the lossy link after %d bytes: %v", n, err)
	}
	if n != netnsLossSize || sum != s.midSum {
		t.Fatalf("download over the lossy link: %d bytes, sha256 %s; want %d, %s", n, sum, netnsLossSize, s.midSum)
	}
	d := time.Since(began)
	if s.netem {
		stats, _ := nsOutput(s.netLab, "office", "tc", "-s", "qdisc", "show", "dev", "wan")
		s.logf(t, "netem: %s", strings.Join(strings.Fields(stats), " "))
	} else {
		s.logf(t, "relay: %d datagrams dropped, %d forwarded", s.relay.dropped.Load(), s.relay.forwarded.Load())
	}
	s.logf(t, "%d MB through office3 over the lossy link, sha256 matches (%v, %s)", n>>20, d.Round(time.Millisecond), nsRate(n, d))
}

func (s *netnsSuite) deleteAgent(t *testing.T) {
	b := s.agents["office2"]
	if b.proc == nil || b.proc.exited() {
		t.Fatal("office2 agent is not running (it exited before this step)")
	}
	if st, _, err := s.agentStatus(b.id); err != nil || st != "AGENT_STATUS_ONLINE" {
		t.Fatalf("office2 before the delete: %q %v", st, err)
	}
	// Minted while it is alive, used after the delete.
	pinned := s.sessionToken(t, s.ssh.addr, "--agent", b.id, "--reusable", "--ttl", "5m")
	refusedBefore := s.metric(`outpost_agent_connections_total{outcome="not_accepted"}`)
	code, body, err := s.rest("DELETE", "/v1/agents/"+b.id)
	if err != nil || code != http.StatusOK {
		t.Fatalf("DELETE /v1/agents/%s: %d %s %v", b.id, code, body, err)
	}
	s.logf(t, "DELETE /v1/agents/%s → %d", b.id, code)

	// Gone from the API, and it stays gone while the agent keeps trying:
	// watch for at least 5 s and until the gateway has refused it once.
	observe, deadline := time.Now().Add(5*time.Second), time.Now().Add(30*time.Second)
	refused := false
	for {
		st, code, err := s.agentStatus(b.id)
		if err == nil && st == "AGENT_STATUS_ONLINE" {
			t.Fatalf("deleted agent is online again")
		}
		if code != http.StatusNotFound {
			t.Fatalf("GET /v1/agents/%s after the delete: %d %s %v, want 404", b.id, code, st, err)
		}
		refused = s.metric(`outpost_agent_connections_total{outcome="not_accepted"}`) > refusedBefore
		if refused && time.Now().After(observe) || b.proc.exited() || time.Now().After(deadline) {
			break
		}
		time.Sleep(500 * time.Millisecond)
	}
	switch {
	case refused:
		s.logf(t, "office2 tried to reconnect and the gateway refused it (outpost_agent_connections_total{outcome=\"not_accepted\"} grew)")
	case b.proc.exited():
		s.logf(t, "office2's agent exited after the delete: %v", b.proc.err)
	default:
		t.Errorf("no refused reconnection of the deleted agent within 30 s, and its process still runs")
	}
	if !strings.Contains(b.proc.logText(), "agent-deleted") {
		t.Errorf("office2's agent log does not mention agent-deleted")
	}
	list, err := s.listAgents()
	if err != nil {
		t.Fatal(err)
	}
	for _, a := range list {
		if a.AgentID == b.id {
			t.Errorf("deleted agent still listed: %+v", a)
		}
	}

	// A session that must go through it fails, with a token minted before
	// the delete or after it.
	out, err := s.output("client", 90*time.Second, nil, s.sshArgs(pinned, "echo hello")...)
	if err == nil || out == "hello" {
		t.Errorf("session through the deleted agent (token minted before the delete): %q %v", out, err)
	} else {
		s.logf(t, "session pinned to the deleted agent fails: %v", err)
	}
	if tok, err := s.admin("session", "create", "--target", s.ssh.addr, "--agent", b.id); err == nil {
		out, err := s.output("client", 90*time.Second, nil, s.sshArgs(tok, "echo hello")...)
		if err == nil || out == "hello" {
			t.Errorf("session through the deleted agent (token minted after the delete): %q %v", out, err)
		}
	} else {
		s.logf(t, "a session pinned to the deleted agent is refused at creation: %v", tailText(err.Error(), 300))
	}
	// ...and the others carry on: office3 now serves the subnet.
	from, err := s.sshVia(t)
	if err != nil {
		t.Fatal(err)
	}
	if from != netnsOfficeIP {
		t.Fatalf("after the delete the session reached t1 from %s, want office3 (%s)", from, netnsOfficeIP)
	}
	s.logf(t, "the next session is carried by office3 (t1 saw %s)", from)
}

// REST, from the client namespace.

func (s *netnsSuite) rest(method, path string) (int, string, error) {
	return s.restBody(method, path, "")
}

func (s *netnsSuite) restBody(method, path, body string) (int, string, error) {
	req, err := http.NewRequest(method, s.url+path, strings.NewReader(body))
	if err != nil {
		return 0, "", err
	}
	req.Header.Set("Authorization", "Bearer "+s.apiKey)
	resp, err := s.api.Do(req)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 4<<20))
	return resp.StatusCode, string(b), err
}

type netnsRESTAgent struct {
	AgentID     string    `json:"agent_id"`
	Name        string    `json:"name"`
	Status      string    `json:"status"`
	RemoteAddr  string    `json:"remote_addr"`
	ConnectedAt time.Time `json:"connected_at"`
}

func (s *netnsSuite) listAgents() ([]netnsRESTAgent, error) {
	code, body, err := s.rest("GET", "/v1/agents")
	if err != nil || code != http.StatusOK {
		return nil, fmt.Errorf("GET /v1/agents: %d %s %v", code, body, err)
	}
	var out struct {
		Agents []netnsRESTAgent `json:"agents"`
	}
	if err := json.Unmarshal([]byte(body), &out); err != nil {
		return nil, fmt.Errorf("GET /v1/agents: %v: %s", err, body)
	}
	return out.Agents, nil
}

// agentStatus is the agent's status by GET /v1/agents/{id}, with the HTTP
// code.
func (s *netnsSuite) agentStatus(id string) (string, int, error) {
	a, code, err := s.restAgentCode(id)
	return a.Status, code, err
}

// restAgent is the agent by GET /v1/agents/{id}.
func (s *netnsSuite) restAgent(id string) (netnsRESTAgent, error) {
	a, _, err := s.restAgentCode(id)
	return a, err
}

func (s *netnsSuite) restAgentCode(id string) (netnsRESTAgent, int, error) {
	code, body, err := s.rest("GET", "/v1/agents/"+id)
	if err != nil || code != http.StatusOK {
		return netnsRESTAgent{}, code, fmt.Errorf("GET /v1/agents/%s: %d %s %v", id, code, body, err)
	}
	var out struct {
		Agent netnsRESTAgent `json:"agent"`
	}
	if err := json.Unmarshal([]byte(body), &out); err != nil {
		return netnsRESTAgent{}, code, fmt.Errorf("GET /v1/agents/%s: %v: %s", id, err, body)
	}
	return out.Agent, code, nil
}

// waitStatus polls until the agent has status want.
func (s *netnsSuite) waitStatus(id, want string, within time.Duration) error {
	deadline := time.Now().Add(within)
	for {
		st, _, err := s.agentStatus(id)
		if st == want {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("agent %s is %q after %v, want %s (%v)", id, st, within.Round(time.Second), want, err)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// metric is the value of one sample of the gateway's /metrics (0 when
// absent).
func (s *netnsSuite) metric(sample string) float64 {
	_, body, err := s.rest("GET", "/metrics")
	if err != nil {
		return 0
	}
	sc := bufio.NewScanner(strings.NewReader(body))
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), sample+" "); ok {
			f, _ := strconv.ParseFloat(v, 64)
			return f
		}
	}
	return 0
}

// directPolicy restarts the gateway with direct connections on, allowed only
// to the client link (10.99.0.0/24), where nginx runs in the client
// namespace. A session to it is served by the gateway itself; the gateway's
// own address on that link, its loopback, and a namespace address outside
// the allow-list (office2's WAN end, which the gateway can reach) are
// refused — ResolveTarget says why, the client reads only the generic reason
// and nothing is served.
func (s *netnsSuite) directPolicy(t *testing.T) {
	web := s.startNginx(t, "client", "10.99.0.2")
	nsWriteFile(t, filepath.Join(web.www, "index.html"), "direct from the gateway\n")
	if err := s.gw.stop(20 * time.Second); err != nil {
		t.Errorf("gateway stop on SIGTERM: %v", err)
	}
	args := append(s.gatewayArgs(), "--allow-direct", "--direct-subnets", "10.99.0.0/24")
	s.gw = s.startProc(t, "gw", "gateway-direct", nil, args...)
	if err := s.waitReady(30 * time.Second); err != nil {
		t.Fatal(err)
	}
	resolve := func(target string) (string, string) {
		t.Helper()
		code, body, err := s.restBody("POST", "/v1/routes:resolve", `{"target":"`+target+`"}`)
		if err != nil || code != http.StatusOK {
			t.Fatalf("resolve %s: %d %s %v", target, code, body, err)
		}
		var out struct{ Decision, Reason string }
		if err := json.Unmarshal([]byte(body), &out); err != nil {
			t.Fatal(err)
		}
		return out.Decision, out.Reason
	}
	if d, why := resolve(web.addr); d != "DECISION_DIRECT" {
		t.Fatalf("%s inside the allow-list: %s (%s)", web.addr, d, why)
	}
	addr, p := s.listen(t, s.sessionToken(t, web.addr))
	var page bytes.Buffer
	if err := s.fetch(addr, "/index.html", &page, 30*time.Second); err != nil || page.String() != "direct from the gateway\n" {
		t.Fatalf("direct fetch of %s: %q %v", web.addr, page.String(), err)
	}
	p.stop(5 * time.Second)
	s.logf(t, "inside the allow-list: %s served by the gateway's own dial", web.addr)
	for target, want := range map[string]string{
		"10.99.0.1:7171": "an address of this host",
		"127.0.0.1:7171": "loopback",
		"10.99.3.2:22":   "not in a subnet of the direct allow-list",
		"169.254.0.1:80": "link-local",
		"10.99.0.255:80": "",
	} {
		d, why := resolve(target)
		if target == "10.99.0.255:80" { // inside the list, not special: admitted (never dialed here)
			if d != "DECISION_DIRECT" {
				t.Errorf("%s: %s (%s)", target, d, why)
			}
			continue
		}
		if d != "DECISION_REJECTED" || !strings.Contains(why, want) {
			t.Errorf("%s: %s (%s), want rejected: %s", target, d, why, want)
		}
	}
	// A client trying the gateway's own address gets nothing, and only the
	// generic reason.
	addr, p = s.listen(t, s.sessionToken(t, "10.99.0.1:7171"))
	defer p.stop(5 * time.Second)
	if err := s.fetch(addr, "/healthz", io.Discard, 15*time.Second); err == nil {
		t.Fatal("a session to the gateway's own address was served")
	}
	if _, err := p.waitLog(regexp.MustCompile(`direct connection refused by policy`), 10*time.Second); err != nil {
		t.Errorf("the client did not read the generic refusal: %v", err)
	}
	if strings.Contains(p.logText(), "address of this host") {
		t.Error("the client read the policy's detail")
	}
	s.logf(t, "outside the allow-list, the gateway's own addresses and special ranges: refused, nothing served")
}
