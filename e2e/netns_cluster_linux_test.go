package e2e

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"maps"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/outposthq/outpost/client/wsstream"
	"github.com/outposthq/outpost/dataplane/transport"
	"github.com/outposthq/outpost/internal/testpg"
)

// The cluster lab: one PostgreSQL, three gateway replicas of the real
// binary, each in its own namespace, behind an nftables load balancer;
// agents in an office in front of a private network; clients that reach
// only the balancer and the replicas. Every address lives inside the
// test's namespaces.
//
//	link                one end                  other end
//	datacenter          bridge br0 in dc: lb 10.97.0.1, db 10.97.0.5,
//	                    r1 10.97.0.11, r2 10.97.0.12, r3 10.97.0.13
//	office ↔ lb         office wan 10.96.1.2     lb office 10.96.1.1
//	client ↔ lb         client eth0 10.96.2.2    lb client 10.96.2.1
//	private network     office lan 10.95.0.1     target eth0 10.95.0.10
//
// The balancer's address (the cluster's public name) is 10.96.0.1, on lb's
// loopback. lb forwards between its links and DNATs the balancer's
// address: UDP 4433 (the agents' QUIC) and TCP 7171 (API and client entry)
// each spread over the replicas by "numgen inc mod N". numgen, not jhash:
// round robin over new flows spreads evenly however few flows the test
// makes (a hash of a handful of source ports may well put them all on one
// replica), and a client that retries from a new connection lands on the
// next replica, so a retry loop is bounded by the number of replicas.
// Either keeps a flow on its replica: NAT is decided on a flow's first
// packet and conntrack keeps it. The replicas, office and client route
// through lb; nothing routes to the private network but office, which runs
// the agents: office-a through the balancer, holding two replicas
// (--ha-connections 2), and office-b straight at replica 3 with one
// connection, as a v1 agent (--ha-connections 1). The target runs an echo
// server (:7) and a sink (:9) that answers the SHA-256 of what it read when
// the client half-closes.
//
// Settings kept short for the test: replica heartbeat 1 s, gone after 4 s
// (a loaded 2-core machine delays heartbeats; 4 s leaves room), QUIC idle
// timeout 5 s (how long an agent takes to notice a dead replica).
const (
	clusterVIP        = "10.96.0.1"
	clusterDBIP       = "10.97.0.5"
	clusterDCNet      = "10.97.0.0/24"
	clusterLBInside   = "10.97.0.1"
	clusterPrivSubnet = "10.95.0.0/24"
	clusterTargetIP   = "10.95.0.10"
	clusterEcho       = clusterTargetIP + ":7"
	clusterSink       = clusterTargetIP + ":9"

	clusterHeartbeat = time.Second
	clusterGoneAfter = 4 * time.Second
	clusterBigSize   = 50 << 20

	// clusterHealthEvery and clusterHealthFails are the balancer's health
	// check, which the test plays: a TCP connect to each replica's API port
	// every 250 ms, a replica dropped after 2 failures in a row (so within
	// about 0.5 s of its death).
	clusterHealthEvery = 250 * time.Millisecond
	clusterHealthFails = 2
)

// clusterReplicaIPs are the replicas' own addresses, replica 1 first.
var clusterReplicaIPs = []string{"10.97.0.11", "10.97.0.12", "10.97.0.13"}

// clusterSuite is the state the steps of TestNetnsCluster share.
type clusterSuite struct {
	*netLab
	bin      string
	pg       *testpg.Server
	dsn      string
	sealKey  string
	secret   string // the file of the static enrollment secret every replica accepts
	pin      string // the cluster CA's SPKI SHA-256, hex
	caFile   string
	apiKey   string
	api      *http.Client // from the client namespace
	replicas []*clusterReplica
	agents   map[string]*netnsAgent
	target   *clusterTarget
}

// clusterReplica is one gateway replica.
type clusterReplica struct {
	n       int // 1, 2, 3
	ip, dir string
	conf    string // its JSON config file (the replica_* settings)
	id      string // its replica id, once registered
	proc    *nsProc
}

func (r *clusterReplica) ns() string  { return fmt.Sprintf("r%d", r.n) }
func (r *clusterReplica) url() string { return "https://" + r.ip + ":7171" }

// TestNetnsCluster runs three gateway replicas of the real binary on one
// PostgreSQL, each in its own namespace behind an nftables load balancer,
// with agents and clients in namespaces of their own (see the lab above).
// The steps share one lab and run in order.
func TestNetnsCluster(t *testing.T) {
	requireNetns(t)
	if _, err := exec.LookPath("nft"); err != nil {
		reason := "missing nft (apt-get install -y nftables)"
		if os.Getenv("CI") != "" {
			t.Fatal("netns cluster suite: " + reason)
		}
		skipSuite(t, "netns cluster", reason)
	}
	s := &clusterSuite{netLab: newLab(t), bin: outpostBinary(t), agents: map[string]*netnsAgent{}}
	mustStep(t, "topology", s.topology)
	// These two skip the whole suite where the kernel cannot balance or
	// PostgreSQL is missing: they run on t itself, not in a step.
	s.balancer(t)
	s.database(t)
	mustStep(t, "three replicas start", s.replicasStart)
	mustStep(t, "agent through the balancer", s.agentThroughBalancer)
	mustStep(t, "enrollment through replica 1, admission on replica 3", s.enrollOnOneAdmitOnAnother)
	t.Run("a v1-like agent (one connection) serves clients on every replica", s.v1Agent)
	t.Run("GET /v1/gateways through the balancer: three replicas serving, with their agents", s.listGateways)
	t.Run("one single-use token on two replicas at once: exactly one session", s.singleUseRace)
	t.Run("50 MB with a checksum from a replica without the agent, forwarded, on the first try", s.forwarded)
	t.Run("DeleteAgent on replica 2 closes the agent on replica 3 within 1 s", s.deleteElsewhere)
	t.Run("SIGTERM of a replica: draining, its agent re-homes, never on no replica", s.drained)
	t.Run("kill -9 of a replica during continuous session creation: no setup fails after the kill", s.replicaKilled)
	s.logf(t, "netns cluster suite done")
}

func (s *clusterSuite) topology(t *testing.T) {
	s.addNetns(t, "dc", "lb", "db", "r1", "r2", "r3", "office", "client", "target")
	s.link(t, vethEnd{"lb", "dc", clusterLBInside + "/24"}, vethEnd{"dc", "lb", ""})
	s.link(t, vethEnd{"db", "eth0", clusterDBIP + "/24"}, vethEnd{"dc", "db", ""})
	ports := []string{"lb", "db"}
	for i, ip := range clusterReplicaIPs {
		ns := fmt.Sprintf("r%d", i+1)
		s.link(t, vethEnd{ns, "eth0", ip + "/24"}, vethEnd{"dc", ns, ""})
		s.ip(t, "-n", s.ns(ns), "route", "add", "default", "via", clusterLBInside)
		ports = append(ports, ns)
	}
	s.bridge(t, "dc", "br0", ports...)
	s.link(t, vethEnd{"office", "wan", "10.96.1.2/24"}, vethEnd{"lb", "office", "10.96.1.1/24"})
	s.link(t, vethEnd{"client", "eth0", "10.96.2.2/24"}, vethEnd{"lb", "client", "10.96.2.1/24"})
	s.ip(t, "-n", s.ns("office"), "route", "add", "default", "via", "10.96.1.1")
	s.ip(t, "-n", s.ns("client"), "route", "add", "default", "via", "10.96.2.1")
	s.link(t, vethEnd{"office", "lan", "10.95.0.1/24"}, vethEnd{"target", "eth0", clusterTargetIP + "/24"})
	s.ip(t, "-n", s.ns("lb"), "addr", "add", clusterVIP+"/32", "dev", "lo")
	if err := s.run("lb", 10*time.Second, nil, nil, "sysctl", "-q", "-w", "net.ipv4.ip_forward=1"); err != nil {
		t.Fatal(err)
	}
	s.target = s.startTargets(t, "target", clusterTargetIP)
	if err := s.waitReachable("office", clusterEcho, 10*time.Second); err != nil {
		t.Fatal(err)
	}
	for _, ns := range []string{"lb", "client", "r1"} {
		if ok, _ := s.canReach(ns, clusterEcho, time.Second); ok {
			t.Fatalf("%s reaches %s: the private network is not private", ns, clusterEcho)
		}
	}
	s.logf(t, "namespaces %s{dc,lb,db,r1,r2,r3,office,client,target} up; the target answers from office only", s.prefix)
}

// balancer writes the balancer's rules, or skips the suite (fails it under
// CI) where the kernel cannot.
func (s *clusterSuite) balancer(t *testing.T) {
	if err := s.setBackends(clusterReplicaIPs); err != nil {
		// The nft command is there (TestNetnsCluster checked), so the
		// kernel lacks nf_tables or its NAT.
		reason := fmt.Sprintf("nftables DNAT does not work in a namespace on this kernel: %v", err)
		if os.Getenv("CI") != "" {
			t.Fatal(reason)
		}
		skipSuite(t, "netns cluster", reason)
	}
	s.logf(t, "balancer %s → %v (numgen inc mod 3, UDP 4433 and TCP 7171)", clusterVIP, clusterReplicaIPs)
}

// setBackends (re)writes the balancer's rules in one nft transaction: the
// balancer's address spread over ips, round robin.
func (s *clusterSuite) setBackends(ips []string) error {
	var m []string
	for i, ip := range ips {
		m = append(m, fmt.Sprintf("%d : %s", i, ip))
	}
	spread := fmt.Sprintf("numgen inc mod %d map { %s }", len(ips), strings.Join(m, ", "))
	script := strings.Join([]string{
		"table ip outpost_lb",
		"flush table ip outpost_lb",
		"table ip outpost_lb {",
		"  chain prerouting {",
		"    type nat hook prerouting priority dstnat; policy accept;",
		"    ip daddr " + clusterVIP + " udp dport 4433 dnat to " + spread,
		"    ip daddr " + clusterVIP + " tcp dport 7171 dnat to " + spread,
		"  }",
		"}",
	}, "\n") + "\n"
	return s.run("lb", 10*time.Second, strings.NewReader(script), nil, "nft", "-f", "-")
}

// database runs PostgreSQL in the db namespace, or skips the suite (fails
// it under CI) where PostgreSQL is missing.
func (s *clusterSuite) database(t *testing.T) {
	db := s.ns("db")
	s.pg = testpg.NewServerWith(t, testpg.Options{ListenAddr: clusterDBIP, TrustNet: clusterDCNet,
		// Forked from a thread inside the db namespace: the server's
		// sockets are the namespace's.
		Spawn: func(cmd *exec.Cmd) error {
			_, err := inNetns(db, func() (struct{}, error) { return struct{}{}, cmd.Start() })
			return err
		}})
	s.dsn = s.pg.DSN(t)
	if err := s.waitReachable("r1", clusterDBIP+":5432", 10*time.Second); err != nil {
		t.Fatal(err)
	}
	s.logf(t, "PostgreSQL listens on %s:5432 in db", clusterDBIP)
}

func (s *clusterSuite) replicasStart(t *testing.T) {
	keys := s.t.TempDir()
	s.sealKey, s.secret = filepath.Join(keys, "seal.key"), filepath.Join(keys, "enrollment.secret")
	if err := s.run("db", 20*time.Second, nil, nil, s.bin, "gateway", "seal-key", "create", "--out", s.sealKey); err != nil {
		t.Fatal(err)
	}
	nsWriteFile(t, s.secret, rand.Text()+"\n")
	for i, ip := range clusterReplicaIPs {
		r := &clusterReplica{n: i + 1, ip: ip, dir: s.t.TempDir()}
		r.conf = filepath.Join(r.dir, "replica.json")
		conf, _ := json.Marshal(map[string]string{
			"replica_name":          r.ns(),
			"replica_quic_endpoint": ip + ":4433",
			"replica_api_endpoint":  ip + ":7171",
			"replica_heartbeat":     clusterHeartbeat.String(),
			"replica_gone_after":    clusterGoneAfter.String(),
			"replica_sweep_grace":   "5m", // a gone replica stays listed
		})
		nsWriteFile(t, r.conf, string(conf))
		s.replicas = append(s.replicas, r)
	}
	// Replica 1 creates the cluster's secrets and the first admin key; the
	// others find the secrets in the store and are given its admin key.
	r1 := s.replicas[0]
	s.startReplica(t, r1)
	serving := regexp.MustCompile(`gateway serving.*ca_spki_sha256=([0-9a-f]{64})`)
	pin, err := r1.proc.waitLog(serving, 60*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	s.pin = pin
	key, err := os.ReadFile(filepath.Join(r1.dir, "admin.key"))
	if err != nil {
		t.Fatal(err)
	}
	s.apiKey = strings.TrimSpace(string(key))
	for _, r := range s.replicas[1:] {
		nsWriteFile(t, filepath.Join(r.dir, "admin.key"), string(key))
		s.startReplica(t, r)
	}
	for _, r := range s.replicas[1:] {
		got, err := r.proc.waitLog(serving, 60*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		if got != s.pin {
			t.Fatalf("replica %d serves CA %s, replica 1 %s: not one cluster", r.n, got, s.pin)
		}
	}
	s.caFile = filepath.Join(keys, "ca.pem")
	ca, err := s.fetchCA(r1.ip)
	if err != nil {
		t.Fatal(err)
	}
	nsWriteFile(t, s.caFile, string(ca))
	s.api = s.httpClient(t, "client", ca)
	for _, r := range s.replicas {
		if r.id, err = s.selfID(r.url(), 30*time.Second); err != nil {
			t.Fatal(err)
		}
	}
	s.logf(t, "replicas serving: r1 %s, r2 %s, r3 %s; one CA (pin %s…)", s.replicas[0].id, s.replicas[1].id, s.replicas[2].id, s.pin[:12])
}

// startReplica runs replica r: the balancer's address is its public name,
// its own address the second name of its certificate.
func (s *clusterSuite) startReplica(t *testing.T, r *clusterReplica) {
	t.Helper()
	r.proc = s.startProc(t, r.ns(), "replica-"+r.ns(), nil, s.bin, "gateway", "--config", r.conf,
		"--data-dir", r.dir, "--store", s.dsn, "--seal-key-file", s.sealKey,
		"--listen", r.ip+":7171", "--quic-listen", r.ip+":4433", "--hostname", clusterVIP+","+r.ip,
		"--enrollment-secret-file", s.secret, "--quic-idle-timeout", "5s", "--allow-direct=false", "--log-level", "debug")
}

// fetchCA reads the cluster CA certificate from the chain a replica
// serves, trusting only the pin replica 1 logged.
func (s *clusterSuite) fetchCA(ip string) ([]byte, error) {
	pin, err := transport.ParsePin(s.pin)
	if err != nil {
		return nil, err
	}
	return inNetns(s.ns("client"), func() ([]byte, error) {
		d := &tls.Dialer{NetDialer: &net.Dialer{Timeout: 10 * time.Second}, Config: transport.CAPinnedTLS(ip, pin)}
		c, err := d.Dial("tcp", ip+":7171")
		if err != nil {
			return nil, fmt.Errorf("fetch the CA from %s: %w", ip, err)
		}
		defer c.Close()
		for _, cert := range c.(*tls.Conn).ConnectionState().PeerCertificates {
			if cert.IsCA && pin.Matches(cert) {
				return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: cert.Raw}), nil
			}
		}
		return nil, fmt.Errorf("fetch the CA from %s: no CA certificate with the pin in the chain", ip)
	})
}

func (s *clusterSuite) agentThroughBalancer(t *testing.T) {
	var tok struct{ Token string }
	body := `{"agent_name":"office-a","routes":{"subnets":["` + clusterPrivSubnet + `"]}}`
	if err := s.call("POST", clusterURL(clusterVIP), "/v1/enrollment-tokens", body, &tok); err != nil {
		t.Fatal(err)
	}
	a := &netnsAgent{name: "office-a", ns: "office", dir: s.t.TempDir()}
	a.proc = s.startProc(t, a.ns, "agent-office-a", strings.NewReader(tok.Token+"\n"),
		s.bin, "agent", "up", "--token", "-", "--config-dir", a.dir, "--ha-connections", "2", "--log-level", "debug")
	var err error
	if a.id, err = netnsAgentID(a.dir, 30*time.Second); err != nil {
		t.Fatal(err)
	}
	s.agents[a.name] = a
	held, err := s.waitHeld(a.id, 2, 30*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	s.logf(t, "office-a (%s) enrolled and connected through the balancer to two replicas: %s", a.id, replicaNames(held))
}

func (s *clusterSuite) enrollOnOneAdmitOnAnother(t *testing.T) {
	r1, r3 := s.replicas[0], s.replicas[2]
	b := &netnsAgent{name: "office-b", ns: "office", dir: s.t.TempDir()}
	out, err := s.output(b.ns, 60*time.Second, nil, s.bin, "agent", "enroll", "--secret-file", s.secret,
		"--gateway", r1.url(), "--ca-pin", s.pin, "--name", b.name, "--advertise-subnets", clusterPrivSubnet,
		"--quic-endpoint", r3.ip+":4433", "--config-dir", b.dir)
	if err != nil {
		t.Fatalf("agent enroll at replica 1's own address: %v", err)
	}
	if b.id, err = netnsAgentID(b.dir, 0); err != nil {
		t.Fatal(err)
	}
	s.agents[b.name] = b
	if !strings.Contains(r1.proc.logText(), b.id) {
		t.Errorf("replica 1's log does not mention the agent it enrolled (%s)", b.id)
	}
	// One connection, as a v1 agent keeps: office-b is the suite's v1-like
	// agent (see v1Agent).
	b.proc = s.startProc(t, b.ns, "agent-office-b", nil, s.bin, "agent", "run", "--config-dir", b.dir,
		"--ha-connections", "1", "--log-level", "debug")
	held, err := s.waitHeld(b.id, 1, 30*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if held[0] != r3 {
		t.Fatalf("office-b, pointed at replica 3, connected to replica %d", held[0].n)
	}
	// Replica 2, which saw neither, knows the agent and where it is. (Its
	// status there is its own registry's: offline until routing is
	// cluster-wide.)
	view, err := s.agentView(s.replicas[1].url(), b.id)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(view.ReplicaIDs, []string{r3.id}) {
		t.Fatalf("office-b through replica 2: on %v, want on [%s]", view.ReplicaIDs, r3.id)
	}
	s.logf(t, "office-b (%s) enrolled at replica 1 (%s), admitted by replica 3, seen there through replica 2 (status there %s): %s",
		b.id, r1.ip, view.Status, tailText(out, 200))
}

// v1Agent: office-b keeps one connection (--ha-connections 1, as a v1
// agent that knows nothing of replicas), to replica 3; a client on each
// replica in turn reaches it, the others through the peer link.
func (s *clusterSuite) v1Agent(t *testing.T) {
	b, r3 := s.agents["office-b"], s.replicas[2]
	if held := s.replicasHolding(b.id); len(held) != 1 || held[0] != r3 {
		t.Fatalf("office-b is on %s, want replica 3 only", replicaNames(held))
	}
	tok := s.sessionTokenFor(t, clusterEcho, b.id, true)
	forwarded := regexp.MustCompile(`session open: .*via="agent office-b through replica ` + r3.id + `"`)
	var seen []string
	for _, r := range s.replicas {
		before := len(r.proc.logText())
		addr, p := s.listenVia(t, r.url(), tok)
		err := s.echoVia(addr, 20*time.Second)
		p.stop(5 * time.Second)
		if err != nil {
			t.Fatalf("office-b through replica %d: %v (%s)", r.n, err, connectReason(p))
		}
		if r != r3 && !forwarded.MatchString(r.proc.logText()[before:]) {
			t.Errorf("replica %d served office-b's session, but its log does not say it went through replica r3", r.n)
		}
		seen = append(seen, r.ns())
	}
	s.logf(t, "office-b (one connection, to replica 3) served an echo session to a client on each of %v; r1 and r2 forwarded it to r3", seen)
}

func (s *clusterSuite) listGateways(t *testing.T) {
	want := map[string]string{}
	for _, r := range s.replicas {
		n := 0
		for _, a := range s.agents {
			if a.proc != nil && !a.proc.exited() && slices.Contains(s.replicasHolding(a.id), r) {
				n++
			}
		}
		want[r.id] = fmt.Sprintf("serving/%d", n)
	}
	var got map[string]string
	answered := map[string]bool{}
	deadline := time.Now().Add(10 * time.Second)
	for {
		// Each request is a new connection through the balancer: in
		// turn, every replica answers.
		gws, err := s.gateways(clusterURL(clusterVIP))
		if err == nil {
			got = map[string]string{}
			for _, g := range gws {
				got[g.ReplicaID] = fmt.Sprintf("%s/%d", g.state(), g.AgentCount)
				if g.Self {
					answered[g.ReplicaID] = true
				}
			}
		}
		if err == nil && maps.Equal(got, want) && len(answered) == len(s.replicas) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("GET /v1/gateways through the balancer: %v (%v), want %v, answered by every replica (answered: %v)", got, err, want, answered)
		}
		time.Sleep(100 * time.Millisecond)
	}
	s.logf(t, "GET /v1/gateways through the balancer, answered by each replica in turn: %v", got)
}

func (s *clusterSuite) singleUseRace(t *testing.T) {
	// With the peer link any replica serves the session: replica 1 and
	// replica 3 (which holds office-b).
	ra, rb := s.replicas[0], s.replicas[2]
	tok := s.sessionToken(t, clusterEcho, false)
	type result struct {
		r   *clusterReplica
		out string
		err error
	}
	results := make(chan result, 2)
	var start sync.WaitGroup
	start.Add(1)
	for _, r := range []*clusterReplica{ra, rb} {
		go func() {
			start.Wait()
			out, err := s.output("client", 30*time.Second, strings.NewReader("ping\n"), s.bin, "connect",
				"--gateway", r.url(), "--ca-pin", s.pin, "--token", tok, "--stdio")
			results <- result{r, out, err}
		}()
	}
	start.Done()
	var ok, refused []result
	for range 2 {
		res := <-results
		switch {
		case res.err == nil && res.out == "ping":
			ok = append(ok, res)
		case res.err != nil && strings.Contains(res.err.Error(), "already used (it is single-use)"):
			refused = append(refused, res)
		default:
			t.Errorf("replica %d: %q %v: neither the echo nor the single-use refusal", res.r.n, res.out, res.err)
		}
	}
	if len(ok) != 1 || len(refused) != 1 {
		t.Fatalf("one single-use token on replicas %d and %d at once: %d sessions, %d refused; want exactly one of each", ra.n, rb.n, len(ok), len(refused))
	}
	s.logf(t, "single-use token on replicas %d and %d at once: replica %d served it, replica %d refused it: %s",
		ra.n, rb.n, ok[0].r.n, refused[0].r.n, tailText(refused[0].err.Error(), 200))
}

// forwarded carries 50 MB from the client namespace to the sink, through
// office-a, first from a replica that holds office-a (local), then from the
// replica that does not (forwarded over the peer link), each on the first
// try and checked with the sink's SHA-256.
func (s *clusterSuite) forwarded(t *testing.T) {
	a := s.agents["office-a"]
	held := s.replicasHolding(a.id)
	if len(held) != 2 {
		t.Fatalf("office-a is on %s, want two replicas", replicaNames(held))
	}
	var other *clusterReplica
	for _, r := range s.replicas {
		if !slices.Contains(held, r) {
			other = r
		}
	}
	tok := s.sessionTokenFor(t, clusterSink, a.id, true)
	upload := func(r *clusterReplica, seed uint64) time.Duration {
		t.Helper()
		addr, p := s.listenVia(t, r.url(), tok)
		defer p.stop(5 * time.Second)
		d, err := s.checkedUpload(addr, clusterBigSize, seed, 2*time.Minute)
		if err != nil {
			t.Fatalf("50 MB from a client on replica %d: %v (%s)", r.n, err, connectReason(p))
		}
		return d
	}
	local := upload(held[0], 3)
	before := len(other.proc.logText())
	fwd := upload(other, 5)
	through := regexp.MustCompile(`session open: .*via="agent office-a through replica ([0-9a-f-]{36})"`).FindStringSubmatch(other.proc.logText()[before:])
	if through == nil {
		t.Fatalf("replica %d's log does not say which replica its session went through", other.n)
	}
	if via := s.replicaByID(through[1]); via == nil || !slices.Contains(held, via) {
		t.Fatalf("replica %d forwarded through replica %s, which does not hold office-a (%s)", other.n, through[1], replicaNames(held))
	}
	s.logf(t, "50 MB to the sink through office-a, SHA-256 matches on the first try: from replica %d (holds it) %v, %s; from replica %d (forwarded through replica %s) %v, %s (%.2f × local)",
		held[0].n, local.Round(time.Millisecond), nsRate(clusterBigSize, local),
		other.n, s.replicaByID(through[1]).ns(), fwd.Round(time.Millisecond), nsRate(clusterBigSize, fwd), local.Seconds()/fwd.Seconds())
}

func (s *clusterSuite) deleteElsewhere(t *testing.T) {
	b, r2, r3 := s.agents["office-b"], s.replicas[1], s.replicas[2]
	if held := s.replicasHolding(b.id); len(held) != 1 || held[0] != r3 {
		t.Fatalf("office-b is on %s, not on replica 3 only", replicaNames(held))
	}
	closed := regexp.MustCompile(`agent-deleted`)
	if closed.MatchString(b.proc.logText()) {
		t.Fatal("office-b's log mentions agent-deleted before the delete")
	}
	// From the request: an upper bound, the close may come before the
	// answer.
	deleted := time.Now()
	if err := s.call("DELETE", r2.url(), "/v1/agents/"+b.id, "", nil); err != nil {
		t.Fatal(err)
	}
	if _, err := b.proc.waitLog(closed, 5*time.Second); err != nil {
		t.Fatalf("office-b, on replica 3, deleted through replica 2: %v", err)
	}
	took := time.Since(deleted)
	// The log is polled every 50 ms: a little slack over the 1 s of the
	// issue.
	if took > 1500*time.Millisecond {
		t.Errorf("office-b closed %v after the delete, want within about 1 s", took.Round(time.Millisecond))
	}
	if err := s.waitGateway(r2.url(), r3.id, "serving/0", 5*time.Second); err != nil {
		t.Error(err)
	}
	s.logf(t, "DELETE through replica 2: office-b's connection on replica 3 closed with agent-deleted within %v of the request", took.Round(time.Millisecond))
}

// victim is the replica the failure steps stop: one holding office-a,
// not replica 2 (through which the suite mints its session tokens).
func (s *clusterSuite) victim(t *testing.T) (*clusterReplica, []*clusterReplica) {
	t.Helper()
	a := s.agents["office-a"]
	held, err := s.waitHeld(a.id, 2, 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range held {
		if r != s.replicas[1] {
			return r, held
		}
	}
	t.Fatalf("office-a on %s: no victim but replica 2", replicaNames(held))
	return nil, nil
}

// presenceWatch polls, every 50 ms from replica 2, where office-a is
// connected and what replica 2 says of the replica watched.
type presenceWatch struct {
	cancel context.CancelFunc
	done   chan struct{}

	mu sync.Mutex
	// guarded by mu
	least  int                  // fewest live replicas holding the agent seen
	states map[string]time.Time // the watched replica's states seen, when first
	back   time.Time            // when the agent was first seen back on two live replicas, both not the watched one
	err    error                // the last failure to ask
}

func (s *clusterSuite) watchPresence(t *testing.T, agentID string, watched *clusterReplica) *presenceWatch {
	ctx, cancel := context.WithCancel(context.Background())
	w := &presenceWatch{cancel: cancel, done: make(chan struct{}), least: len(s.replicas), states: map[string]time.Time{}}
	t.Cleanup(w.stop)
	r2 := s.replicas[1]
	go func() {
		defer close(w.done)
		tick := time.NewTicker(50 * time.Millisecond)
		defer tick.Stop()
		for {
			v, err := s.agentView(r2.url(), agentID)
			gws, gerr := s.gateways(r2.url())
			w.mu.Lock()
			w.err = errors.Join(err, gerr)
			if err == nil {
				live, others := 0, 0
				for _, id := range v.ReplicaIDs {
					if r := s.replicaByID(id); r != nil && !r.proc.exited() {
						live++
						if r != watched {
							others++
						}
					}
				}
				w.least = min(w.least, live)
				if others >= 2 && w.back.IsZero() {
					w.back = time.Now()
				}
			}
			for _, g := range gws {
				if _, seen := w.states[g.state()]; g.ReplicaID == watched.id && !seen {
					w.states[g.state()] = time.Now()
				}
			}
			w.mu.Unlock()
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
			}
		}
	}()
	return w
}

// stop ends the watch and waits for it; it is idempotent.
func (w *presenceWatch) stop() {
	w.cancel()
	<-w.done
}

// stateAfter waits up to within for the watched replica listed in state
// and says how long after since that was first seen.
func (w *presenceWatch) stateAfter(state string, since time.Time, within time.Duration) (time.Duration, error) {
	deadline := time.Now().Add(within)
	for {
		w.mu.Lock()
		at, ok := w.states[state]
		err := w.err
		w.mu.Unlock()
		if ok {
			return at.Sub(since), nil
		}
		if time.Now().After(deadline) {
			return 0, fmt.Errorf("not listed %s within %v (%v)", state, within, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// backAfter waits up to within for the agent back on two other replicas
// and says how long after since that was.
func (w *presenceWatch) backAfter(since time.Time, within time.Duration) (time.Duration, error) {
	deadline := time.Now().Add(within)
	for {
		w.mu.Lock()
		back, err := w.back, w.err
		w.mu.Unlock()
		if !back.IsZero() {
			return back.Sub(since), nil
		}
		if time.Now().After(deadline) {
			return 0, fmt.Errorf("not back on two replicas within %v (%v)", within, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// drained: SIGTERM of a replica holding office-a while a client session
// runs through it. The replica shows draining and closes its API port (the
// balancer's health check drops it); the live session keeps working; when
// it ends, the drain is over: the replica closes office-a's connection with
// "shutdown" and office-a dials a replacement at once. The agent is never
// on fewer than one live replica, and is back on two. The replica then
// starts again from its data directory, with the same id.
func (s *clusterSuite) drained(t *testing.T) {
	a := s.agents["office-a"]
	victim, held := s.victim(t)
	addr, p := s.listenVia(t, victim.url(), s.sessionToken(t, "", true))
	defer p.stop(5 * time.Second)
	c, err := s.dial(context.Background(), "client", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(time.Minute))
	echo := func() error {
		if _, err := io.WriteString(c, "ping\n"); err != nil {
			return err
		}
		got := make([]byte, len("ping\n"))
		if _, err := io.ReadFull(c, got); err != nil || string(got) != "ping\n" {
			return fmt.Errorf("echo: %q, %v (%s)", got, err, connectReason(p))
		}
		return nil
	}
	if err := echo(); err != nil {
		t.Fatalf("a session through replica %d: %v", victim.n, err)
	}
	hc := s.startHealthCheck(t)
	defer hc.stop(t)
	w := s.watchPresence(t, a.id, victim)
	defer w.stop()
	agentLog := len(a.proc.logText())

	victim.proc.cmd.Process.Signal(syscall.SIGTERM)
	termed := time.Now()
	draining, err := w.stateAfter("draining", termed, 10*time.Second)
	if err != nil {
		t.Fatalf("replica %d after SIGTERM: %v", victim.n, err)
	}
	if _, err := hc.droppedWithin(victim.ip, 5*time.Second); err != nil {
		t.Fatal(err)
	}
	stillHeld := slices.Contains(s.replicasHolding(a.id), victim)
	if err := echo(); err != nil {
		t.Fatalf("the live session through draining replica %d: %v", victim.n, err)
	}
	ended := time.Now()
	c.Close() // the drain's last session
	if !victim.proc.waitFor(20 * time.Second) {
		t.Fatalf("replica %d did not exit within 20 s of SIGTERM", victim.n)
	}
	exited := time.Since(termed)
	back, err := w.backAfter(termed, 15*time.Second)
	if err != nil {
		t.Fatalf("office-a after SIGTERM of replica %d: %v", victim.n, err)
	}
	if _, err := s.waitHeld(a.id, 2, 10*time.Second); err != nil {
		t.Fatal(err)
	}
	w.stop()
	w.mu.Lock()
	least, states := w.least, slices.Sorted(maps.Keys(w.states))
	w.mu.Unlock()
	if least < 1 {
		t.Errorf("office-a was on no live replica at some point while replica %d drained", victim.n)
	}
	if !strings.Contains(victim.proc.logText(), "gateway stopping") {
		t.Errorf("replica %d's log does not show its graceful stop", victim.n)
	}
	// The agent's own account: when it saw the shutdown close and when
	// its replacement connection was up.
	agentText := a.proc.logText()[agentLog:]
	closedAt, ok1 := logTime(agentText, "the gateway replica shut down; dialing a replacement", 0)
	upAt, ok2 := logTime(agentText, "tunnel up:", strings.Index(agentText, "dialing a replacement"))
	if !ok1 || !ok2 {
		t.Errorf("office-a's log does not show the replacement of the connection replica %d closed with shutdown (%v, %v)", victim.n, ok1, ok2)
	}
	hc.stop(t)
	s.logf(t, "SIGTERM of replica %d (office-a on %s) with a session through it: listed draining after %v (states seen %v), dropped by the balancer after %s, still holding office-a while draining: %v; the live session served on and ended %v after the SIGTERM; the replica exited %v after the SIGTERM",
		victim.n, replicaNames(held), draining.Round(time.Millisecond), states, hc.droppedAfter(victim.ip, termed), stillHeld,
		ended.Sub(termed).Round(time.Millisecond), exited.Round(time.Millisecond))
	s.logf(t, "office-a: on at least %d live replica(s) throughout (polled every 50 ms); by its log, the shutdown close came %v after the SIGTERM and the replacement was up %v later, %v after the SIGTERM (the replica exited %v after it); the store shows it on two others %v after the SIGTERM; now on %s",
		least, closedAt.Sub(termed).Round(time.Millisecond), upAt.Sub(closedAt).Round(time.Millisecond), upAt.Sub(termed).Round(time.Millisecond),
		exited.Round(time.Millisecond), back.Round(time.Millisecond), replicaNames(s.replicasHolding(a.id)))

	// Back: the same replica id from the data directory, and in the
	// balancer again.
	s.startReplica(t, victim)
	if _, err := victim.proc.waitLog(regexp.MustCompile(`gateway serving`), 60*time.Second); err != nil {
		t.Fatal(err)
	}
	if err := s.waitGateway(s.replicas[1].url(), victim.id, "serving/", 15*time.Second); err != nil {
		t.Fatal(err)
	}
	if err := s.setBackends(clusterReplicaIPs); err != nil {
		t.Fatal(err)
	}
}

// clusterSession is one session of replicaKilled's continuous load.
type clusterSession struct {
	n          int
	via        int // which connect listener; -1 for a WebSocket through the balancer
	start, end time.Time
	err        error
}

// describe tells what happened to r, its times from killed.
func (r *clusterSession) describe(killed time.Time) string {
	via := fmt.Sprintf("connect listener %d", r.via)
	if r.via < 0 {
		via = "WebSocket through the balancer"
	}
	return fmt.Sprintf("#%d (%s) started %v from the kill, ended %v: %v", r.n, via,
		r.start.Sub(killed).Round(time.Millisecond), r.end.Sub(killed).Round(time.Millisecond), r.err)
}

// replicaKilled: kill -9 of a replica holding office-a during continuous
// session creation, one new session every 50 ms for 20 s, the kill 5 s in.
// The sessions go through three "outpost connect" listeners, whose standing
// connections the balancer put on the three replicas in turn: the one on
// the killed replica reconnects through the balancer (which drops the dead
// replica after its health check fails) and opens again on the new
// connection a session that had not heard from the gateway. No session
// that starts after the kill may fail; those that fail had been accepted
// by the dead replica before it died, and are reported. Every fifth tick
// also opens a WebSocket session through the balancer, as a browser does,
// without any retry: one that starts after the balancer dropped the dead
// replica must not fail; those before may land on the dead replica, and
// are counted. office-a is back on two live replicas within one reconnect
// backoff of noticing the dead replica (by the QUIC idle timeout, see
// below).
func (s *clusterSuite) replicaKilled(t *testing.T) {
	const (
		every    = 50 * time.Millisecond
		sessions = 400 // 20 s
		killAt   = 100 // 5 s in
		wsEvery  = 5   // ticks
		// idle is the replicas' --quic-idle-timeout.
		idle = 5 * time.Second
	)
	a := s.agents["office-a"]
	dead, held := s.victim(t)
	var survivors []*clusterReplica
	for _, r := range s.replicas {
		if r != dead {
			survivors = append(survivors, r)
		}
	}
	tok := s.sessionToken(t, "", true)
	var addrs []string
	var listeners []*nsProc
	for range len(s.replicas) {
		addr, p := s.listenVia(t, clusterURL(clusterVIP), tok)
		defer p.stop(5 * time.Second)
		// The first session makes the standing connection: one at a
		// time, so that the round robin spreads them.
		if err := s.echoVia(addr, 20*time.Second); err != nil {
			t.Fatalf("connect listener %d: %v (%s)", len(addrs), err, connectReason(p))
		}
		addrs, listeners = append(addrs, addr), append(listeners, p)
	}
	// Sessions accepted before the kill that have not heard from the
	// target: one sink session on each replica, through three more
	// listeners, each sent a little and left open.
	sinkTok := s.sessionToken(t, clusterSink, true)
	sinkLogFrom, logFrom := map[*clusterReplica]int{}, map[*clusterReplica]int{}
	for _, r := range s.replicas {
		sinkLogFrom[r] = len(r.proc.logText())
	}
	var pending []*pendingUpload
	var sinkListeners []*nsProc
	for i := range len(s.replicas) {
		addr, p := s.listenVia(t, clusterURL(clusterVIP), sinkTok)
		defer p.stop(5 * time.Second)
		u, err := s.startUpload(addr, 1<<10, uint64(10+i), 2*time.Minute)
		if err != nil {
			t.Fatalf("sink listener %d: %v (%s)", i, err, connectReason(p))
		}
		defer u.c.Close()
		pending, sinkListeners = append(pending, u), append(sinkListeners, p)
	}
	hc := s.startHealthCheck(t)
	defer hc.stop(t)
	w := s.watchPresence(t, a.id, dead)
	defer w.stop()
	agentLog := len(a.proc.logText())

	var results []*clusterSession
	var wg sync.WaitGroup
	var killed time.Time
	open := func(r *clusterSession) {
		defer wg.Done()
		r.start = time.Now()
		if r.via >= 0 {
			r.err = s.echoVia(addrs[r.via], 15*time.Second)
		} else {
			ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
			r.err = s.wsEcho(ctx, clusterURL(clusterVIP), tok)
			cancel()
		}
		r.end = time.Now()
	}
	tick := time.NewTicker(every)
	for i := range sessions {
		if i == killAt {
			for _, r := range survivors {
				logFrom[r] = len(r.proc.logText())
			}
			killed = time.Now()
			dead.proc.kill()
			s.logf(t, "replica %d (office-a on %s) killed with SIGKILL, %d sessions in", dead.n, replicaNames(held), i)
		}
		r := &clusterSession{n: i, via: i % len(addrs)}
		results = append(results, r)
		wg.Add(1)
		go open(r)
		if i%wsEvery == 0 {
			ws := &clusterSession{n: i, via: -1}
			results = append(results, ws)
			wg.Add(1)
			go open(ws)
		}
		<-tick.C
	}
	tick.Stop()
	wg.Wait()
	loadEnded := time.Since(killed)
	droppedAt, dropErr := hc.droppedWithin(dead.ip, 0)

	var inFlight, after, wsWindow []string
	var total, wsTotal int
	var took []time.Duration // connect sessions that started after the kill and served
	for _, r := range results {
		if r.via >= 0 && r.err == nil && !r.start.Before(killed) {
			took = append(took, r.end.Sub(r.start))
		}
		if r.via < 0 {
			wsTotal++
		} else {
			total++
		}
		if r.err == nil {
			continue
		}
		switch desc := r.describe(killed); {
		case r.start.Before(killed):
			inFlight = append(inFlight, desc)
		case r.via < 0 && dropErr == nil && r.start.Before(droppedAt):
			wsWindow = append(wsWindow, desc)
		default:
			after = append(after, desc)
		}
	}
	for _, d := range inFlight {
		s.logf(t, "failed, in flight at the kill: %s", d)
	}
	// The open sink sessions. The one on the dead replica's standing
	// connection was opened again on the listener's new connection. One
	// that a survivor had forwarded through the dead replica ends: the
	// survivor resets it when its peer link to the dead replica times out
	// (as a session flowing through the dead replica, the client
	// reconnects); the survivors' logs say how many went that way.
	throughDead := 0
	forwardedDead := regexp.MustCompile(`session open: .*target=` + regexp.QuoteMeta(clusterSink) + ` via="agent office-a through replica ` + dead.id + `"`)
	for _, r := range survivors {
		throughDead += len(forwardedDead.FindAllString(r.proc.logText()[sinkLogFrom[r]:], -1))
	}
	var reopened, sinkFailed []string
	for i, u := range pending {
		p := sinkListeners[i]
		if err := u.finish(20 * time.Second); err != nil {
			sinkFailed = append(sinkFailed, fmt.Sprintf("sink listener %d: %v (%s)", i, err, connectReason(p)))
		}
		if n := strings.Count(p.logText(), "opened it again on a new connection"); n > 0 {
			reopened = append(reopened, fmt.Sprintf("sink listener %d (%d time(s))", i, n))
		}
	}
	if len(reopened) == 0 {
		t.Errorf("no sink session opened before the kill was opened again: none was on the killed replica?")
	}
	for _, f := range sinkFailed {
		s.logf(t, "a sink session opened before the kill ended: %s", f)
	}
	if len(sinkFailed) > throughDead {
		t.Errorf("%d sink sessions opened before the kill failed, %d had been forwarded through the dead replica: %s", len(sinkFailed), throughDead, strings.Join(sinkFailed, "; "))
	}
	for _, d := range wsWindow {
		s.logf(t, "failed, a WebSocket before the balancer dropped the dead replica: %s", d)
	}
	if len(after) > 0 {
		t.Errorf("%d session setups that started after the kill failed:\n%s", len(after), strings.Join(after, "\n"))
	}
	// office-a drains only when it is signalled to stop, which this test
	// never does.
	if strings.Contains(a.proc.logText()[agentLog:], "draining: new sessions are refused") {
		t.Errorf("office-a drained during the load: it got SIGTERM or SIGINT from outside the test (its pid is in 00-commands.log)")
	}
	// What the connect listeners went through.
	var lost []string
	for i, p := range listeners {
		text := p.logText()
		lost = append(lost, fmt.Sprintf("listener %d: %d lost, %d failed reconnects, %d sessions opened again", i,
			strings.Count(text, "connection to the gateway lost; reconnecting"),
			strings.Count(text, "cannot connect to the gateway; retrying"),
			strings.Count(text, "opened it again on a new connection")))
	}
	if !slices.ContainsFunc(listeners, func(p *nsProc) bool {
		return strings.Contains(p.logText(), "connection to the gateway lost; reconnecting")
	}) {
		t.Errorf("no connect listener had its standing connection on the killed replica (the round robin did not spread them?): %s", strings.Join(lost, "; "))
	}
	// office-a notices the dead replica after the idle timeout, counted
	// from its last packet from the replica or, if later, from the first
	// packet it sent after that (its keep-alive PING, sent after at most
	// half the idle timeout of silence): within 1.5 × the idle timeout.
	// Its replacement is up within the reconnect delay it drew (and the
	// handshakes: a dial that reaches a replica it holds already is
	// retried after 100 ms).
	back, err := w.backAfter(killed, 15*time.Second)
	if err != nil {
		t.Errorf("office-a after the kill of replica %d: %v", dead.n, err)
	}
	agentText := a.proc.logText()[agentLog:]
	downAt, ok1 := logTime(agentText, "tunnel down; reconnecting", 0)
	upAt, ok2 := logTime(agentText, "tunnel up:", strings.Index(agentText, "tunnel down; reconnecting"))
	delay := time.Duration(-1)
	if m := regexp.MustCompile(`tunnel down; reconnecting.*retry_in=(\S+)`).FindStringSubmatch(agentText); m != nil {
		delay, _ = time.ParseDuration(m[1])
	}
	switch {
	case !ok1 || !ok2 || delay < 0:
		t.Errorf("office-a's log does not show the lost connection and its replacement (%v, %v, retry_in %v)", ok1, ok2, delay)
	case downAt.Sub(killed) > idle*3/2+time.Second:
		t.Errorf("office-a noticed the dead replica %v after the kill, want within 1.5 × the idle timeout (%v)", downAt.Sub(killed).Round(time.Millisecond), idle)
	case upAt.Sub(downAt) > delay+time.Second:
		t.Errorf("office-a's replacement was up %v after it noticed the dead replica, want within its reconnect delay (%v) and a second of handshakes", upAt.Sub(downAt).Round(time.Millisecond), delay)
	}
	// The survivors list it gone after replica_gone_after.
	gone, err := w.stateAfter("gone", killed, clusterGoneAfter+10*time.Second)
	if err != nil {
		t.Errorf("replica 2 on the killed replica %d: %v", dead.n, err)
	}
	w.stop()
	now, err := s.waitHeld(a.id, 2, 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	slices.Sort(took)
	var p50, p99, worst time.Duration
	if n := len(took); n > 0 {
		p50, p99, worst = took[n/2], took[n*99/100], took[n-1]
	}
	slow := len(took) - sort.Search(len(took), func(i int) bool { return took[i] >= time.Second })
	// The survivors' slowest setup after the kill, as their logs tell it.
	var slowest time.Duration
	var slowestLine string
	setup := regexp.MustCompile(`session open: .*setup=(\S+)`)
	for _, r := range survivors {
		for line := range strings.Lines(r.proc.logText()[logFrom[r]:]) {
			if m := setup.FindStringSubmatch(line); m != nil {
				if d, err := time.ParseDuration(m[1]); err == nil && d > slowest {
					slowest, slowestLine = d, r.ns()+": "+strings.TrimSpace(line)
				}
			}
		}
	}
	s.logf(t, "%d sessions through outpost connect, one every %v, and %d WebSocket sessions through the balancer; kill of replica %d %d ticks in; failed: %d after the kill, %d in flight at the kill, %d WebSockets before the balancer dropped the dead replica; connect sessions after the kill took p50 %v, p99 %v, at most %v (echo round trip included), %d of them 1 s or more; the load ended %v after the kill",
		total, every, wsTotal, dead.n, killAt, len(after), len(inFlight), len(wsWindow),
		p50.Round(time.Millisecond), p99.Round(time.Millisecond), worst.Round(time.Millisecond), slow, loadEnded.Round(time.Millisecond))
	s.logf(t, "the survivors' slowest session setup after the kill: %s", tailText(slowestLine, 700))
	s.logf(t, "%d sink sessions opened before the kill, one per replica: %d finished with their SHA-256 after it, %d forwarded by a survivor through the dead replica, %d of them ended; opened again on a new connection: %s",
		len(pending), len(pending)-len(sinkFailed), throughDead, len(sinkFailed), strings.Join(reopened, ", "))
	s.logf(t, "the balancer dropped the dead replica after %s (health check every %v, %d failures); office-a noticed it %v after the kill (QUIC idle timeout %v), drew a reconnect delay of %v, had its replacement up %v after noticing, %v after the kill; the store shows it on two live replicas %v after the kill (now %s); replica 2 listed the dead replica gone after %v; %s",
		hc.droppedAfter(dead.ip, killed), clusterHealthEvery, clusterHealthFails, downAt.Sub(killed).Round(time.Millisecond), idle, delay,
		upAt.Sub(downAt).Round(time.Millisecond), upAt.Sub(killed).Round(time.Millisecond), back.Round(time.Millisecond), replicaNames(now),
		gone.Round(time.Millisecond), strings.Join(lost, "; "))

	// Every survivor lists it gone and keeps serving.
	for _, r := range survivors {
		// Its agent count is its presence rows', which stay until the
		// survivors sweep them (replica_sweep_grace).
		if err := s.waitGateway(r.url(), dead.id, "gone/", clusterGoneAfter+10*time.Second); err != nil {
			t.Fatal(err)
		}
		if err := s.waitGateway(r.url(), r.id, "serving/", 5*time.Second); err != nil {
			t.Error(err)
		}
	}
	// Browser sessions through the balancer, which alternates between the
	// survivors: every one served.
	var failures []string
	for range 2 * len(survivors) {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		if err := s.wsEcho(ctx, clusterURL(clusterVIP), tok); err != nil {
			failures = append(failures, err.Error())
		}
		cancel()
	}
	if len(failures) > 0 {
		t.Errorf("%d of %d WebSocket sessions through the balancer failed after the kill: %s", len(failures), 2*len(survivors), strings.Join(failures, "; "))
	}
}

// Lab helpers.

// logTime is the time stamp of the first line of an hclog text that
// contains what, at or after byte from (none if from is negative).
func logTime(text, what string, from int) (time.Time, bool) {
	if from < 0 {
		return time.Time{}, false
	}
	for line := range strings.Lines(text[from:]) {
		if !strings.Contains(line, what) {
			continue
		}
		stamp, _, _ := strings.Cut(line, " ")
		at, err := time.Parse(time.RFC3339Nano, stamp)
		return at, err == nil
	}
	return time.Time{}, false
}

// clusterURL is the API URL at host (the balancer or a replica).
func clusterURL(host string) string { return "https://" + host + ":7171" }

// call makes an API request from the client namespace with the admin key
// and decodes a 200 answer into out (if not nil).
func (s *clusterSuite) call(method, base, path, body string, out any) error {
	req, err := http.NewRequest(method, base+path, strings.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", "Bearer "+s.apiKey)
	resp, err := s.api.Do(req)
	if err != nil {
		return fmt.Errorf("%s %s%s: %w", method, base, path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 4<<20))
	if err != nil || resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s %s%s: %d %s %v", method, base, path, resp.StatusCode, bytes.TrimSpace(b), err)
	}
	if out != nil {
		if err := json.Unmarshal(b, out); err != nil {
			return fmt.Errorf("%s %s%s: %w: %s", method, base, path, err, b)
		}
	}
	return nil
}

// clusterGateway is one replica as GET /v1/gateways shows it.
type clusterGateway struct {
	ReplicaID  string `json:"replica_id"`
	State      string `json:"state"`
	AgentCount int    `json:"agent_count"`
	Self       bool   `json:"self"`
}

// state is "serving", "draining" or "gone".
func (g clusterGateway) state() string {
	return strings.ToLower(strings.TrimPrefix(g.State, "GATEWAY_STATE_"))
}

func (s *clusterSuite) gateways(base string) ([]clusterGateway, error) {
	var out struct {
		Gateways []clusterGateway `json:"gateways"`
	}
	err := s.call("GET", base, "/v1/gateways", "", &out)
	return out.Gateways, err
}

// selfID waits until the replica at base lists itself and returns its id.
func (s *clusterSuite) selfID(base string, within time.Duration) (string, error) {
	deadline := time.Now().Add(within)
	for {
		gws, err := s.gateways(base)
		for _, g := range gws {
			if g.Self {
				return g.ReplicaID, nil
			}
		}
		if time.Now().After(deadline) {
			return "", fmt.Errorf("%s does not list itself after %v: %v %v", base, within, gws, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// waitGateway waits until the replica at base lists replica id with
// "state/agents" starting with want.
func (s *clusterSuite) waitGateway(base, id, want string, within time.Duration) error {
	deadline := time.Now().Add(within)
	for {
		gws, err := s.gateways(base)
		got := "absent"
		for _, g := range gws {
			if g.ReplicaID == id {
				got = fmt.Sprintf("%s/%d", g.state(), g.AgentCount)
			}
		}
		if strings.HasPrefix(got, want) {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s lists replica %s as %s after %v, want %s (%v)", base, id, got, within, want, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// clusterAgentView is an agent as GET /v1/agents/{id} shows it.
type clusterAgentView struct {
	Status     string   `json:"status"`
	ReplicaIDs []string `json:"replica_ids"`
}

func (s *clusterSuite) agentView(base, id string) (clusterAgentView, error) {
	var out struct {
		Agent clusterAgentView `json:"agent"`
	}
	err := s.call("GET", base, "/v1/agents/"+id, "", &out)
	return out.Agent, err
}

// agentReplicas is the ids of the replicas holding agent id, as a live
// replica reports them.
func (s *clusterSuite) agentReplicas(id string) ([]string, error) {
	var lastErr error
	for _, r := range s.replicas {
		if r.proc.exited() {
			continue
		}
		v, err := s.agentView(r.url(), id)
		if err == nil {
			return v.ReplicaIDs, nil
		}
		lastErr = err
	}
	return nil, lastErr
}

func (s *clusterSuite) replicaByID(id string) *clusterReplica {
	for _, r := range s.replicas {
		if r.id == id {
			return r
		}
	}
	return nil
}

// waitHeld waits until agent id is online on k distinct live replicas,
// by the store (agentReplicas) and by the replicas' own logs
// (replicasHolding, the evidence that does not come from the store), and
// returns them, replica 1 first.
func (s *clusterSuite) waitHeld(id string, k int, within time.Duration) ([]*clusterReplica, error) {
	deadline := time.Now().Add(within)
	for {
		ids, err := s.agentReplicas(id)
		var stored []*clusterReplica
		for _, rid := range ids {
			if r := s.replicaByID(rid); r != nil && !r.proc.exited() && !slices.Contains(stored, r) {
				stored = append(stored, r)
			}
		}
		slices.SortFunc(stored, func(a, b *clusterReplica) int { return a.n - b.n })
		logged := s.replicasHolding(id)
		if err == nil && len(ids) == k && len(stored) == k && slices.Equal(stored, logged) {
			return stored, nil
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("agent %s not held by %d live replicas after %v: replica_ids %v (%v), by the logs on %s", id, k, within, ids, err, replicaNames(logged))
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// replicaNames names rs for a message: "[r1 r3]".
func replicaNames(rs []*clusterReplica) string {
	names := make([]string, len(rs))
	for i, r := range rs {
		names[i] = r.ns()
	}
	return "[" + strings.Join(names, " ") + "]"
}

// connGeneration finds the connection generation in a tunnel log line.
var connGeneration = regexp.MustCompile(`\bgeneration=(\d+)`)

// replicasHolding is the live replicas that hold a connection of agent id
// by their own account: a connection generation their log shows as "agent
// connected" and not yet "agent disconnected" (a superseded connection's
// disconnection may come after its successor's connection). Replica 1
// first.
func (s *clusterSuite) replicasHolding(id string) []*clusterReplica {
	var holders []*clusterReplica
	for _, r := range s.replicas {
		if r.proc.exited() {
			continue
		}
		open := map[string]bool{}
		sc := bufio.NewScanner(strings.NewReader(r.proc.logText()))
		sc.Buffer(nil, 1<<20)
		for sc.Scan() {
			line := sc.Text()
			if !strings.Contains(line, "agent_id="+id) {
				continue
			}
			gen := connGeneration.FindStringSubmatch(line)
			if gen == nil {
				continue
			}
			switch {
			case strings.Contains(line, "agent connected"):
				open[gen[1]] = true
			case strings.Contains(line, "agent disconnected"):
				delete(open, gen[1])
			}
		}
		if len(open) > 0 {
			holders = append(holders, r)
		}
	}
	return holders
}

// sessionToken mints a session token for target (an echo session by
// default), routed by the target, through replica 2's own address, so that
// the balancer's round robin is left to the clients.
func (s *clusterSuite) sessionToken(t *testing.T, target string, reusable bool) string {
	t.Helper()
	return s.sessionTokenFor(t, target, "", reusable)
}

// sessionTokenFor is sessionToken for agent agentID explicitly ("" for
// routing by the target).
func (s *clusterSuite) sessionTokenFor(t *testing.T, target, agentID string, reusable bool) string {
	t.Helper()
	if target == "" {
		target = clusterEcho
	}
	var out struct{ Token string }
	body := fmt.Sprintf(`{"target":%q,"agent_id":%q,"ttl":"300s","reusable":%v}`, target, agentID, reusable)
	if err := s.call("POST", s.replicas[1].url(), "/v1/sessions", body, &out); err != nil {
		t.Fatal(err)
	}
	return out.Token
}

// echoVia opens one session through the connect listener at addr, sends a
// line to the echo target and reads it back.
func (s *clusterSuite) echoVia(addr string, within time.Duration) error {
	ctx, cancel := context.WithTimeout(context.Background(), within)
	defer cancel()
	c, err := s.dial(ctx, "client", addr)
	if err != nil {
		return err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(within))
	if _, err := io.WriteString(c, "ping\n"); err != nil {
		return fmt.Errorf("write: %w", err)
	}
	got := make([]byte, len("ping\n"))
	if _, err := io.ReadFull(c, got); err != nil || string(got) != "ping\n" {
		return fmt.Errorf("echo: %q, %v", got, err)
	}
	return nil
}

// listenVia runs "outpost connect --listen" in the client namespace against
// the API at base and returns the local address it serves: its one
// standing connection, and so every session through it, goes to one
// replica.
func (s *clusterSuite) listenVia(t *testing.T, base, tok string) (string, *nsProc) {
	t.Helper()
	p := s.startProc(t, "client", "connect", strings.NewReader(tok+"\n"),
		s.bin, "connect", "--gateway", base, "--ca-file", s.caFile, "--token", "-", "--listen", "127.0.0.1:0", "--replay-on-loss")
	addr, err := p.waitLog(regexp.MustCompile(`listening on (127\.0\.0\.1:\d+)`), 20*time.Second)
	if err != nil {
		p.kill()
		t.Fatal(err)
	}
	return addr, p
}

// connectReason is the last session failure an "outpost connect" process
// logged (what the gateway answered), or its log's tail.
func connectReason(p *nsProc) string {
	text := p.logText()
	if m := regexp.MustCompile(`(?m)^.*(session (?:failed|refused).*)$`).FindAllStringSubmatch(text, -1); len(m) > 0 {
		return strings.TrimSuffix(strings.TrimSpace(m[len(m)-1][1]), `"`)
	}
	return tailText(text, 300)
}

// wsEcho opens one session with tok at the client entry of base, as a
// browser does (a WebSocket on a connection of its own: through the
// balancer, the next replica in turn), sends a line to the echo target and
// reads it back.
func (s *clusterSuite) wsEcho(ctx context.Context, base, tok string) error {
	ws, resp, err := websocket.Dial(ctx, "wss"+strings.TrimPrefix(base, "https")+"/v1/connect", &websocket.DialOptions{
		HTTPClient: &http.Client{Transport: s.api.Transport},
		HTTPHeader: http.Header{"Authorization": {"Bearer " + tok}},
	})
	if err != nil {
		if resp != nil {
			return fmt.Errorf("entry at %s: HTTP %d: %w", base, resp.StatusCode, err)
		}
		return fmt.Errorf("entry at %s: %w", base, err)
	}
	st := wsstream.New(ctx, ws)
	defer st.Close()
	if _, err := io.WriteString(st, "ping\n"); err != nil {
		return fmt.Errorf("write: %w", err)
	}
	got := make([]byte, len("ping\n"))
	_, err = io.ReadFull(st, got)
	if reason, ok := wsstream.Failure(err); ok {
		return fmt.Errorf("session failed: %s", reason)
	}
	if err != nil || string(got) != "ping\n" {
		return fmt.Errorf("echo: %q, %v", got, err)
	}
	return nil
}

// checkedUpload sends size pseudo-random bytes (from seed) to the sink
// through the connect listener at addr and checks the SHA-256 it answers.
func (s *clusterSuite) checkedUpload(addr string, size int64, seed uint64, within time.Duration) (time.Duration, error) {
	began := time.Now()
	u, err := s.startUpload(addr, size, seed, within)
	if err != nil {
		return 0, err
	}
	if err := u.finish(within); err != nil {
		return 0, err
	}
	return time.Since(began), nil
}

// pendingUpload is a session to the sink, its bytes sent, the sink's
// answer not yet asked for.
type pendingUpload struct {
	c    net.Conn
	hash []byte // the SHA-256 of what was sent
}

// startUpload opens a session to the sink through the connect listener at
// addr and sends it size pseudo-random bytes (from seed), all within
// within.
func (s *clusterSuite) startUpload(addr string, size int64, seed uint64, within time.Duration) (*pendingUpload, error) {
	ctx, cancel := context.WithTimeout(context.Background(), within)
	defer cancel()
	c, err := s.dial(ctx, "client", addr)
	if err != nil {
		return nil, err
	}
	c.SetDeadline(time.Now().Add(within))
	h := sha256.New()
	if n, err := io.Copy(c, io.TeeReader(nsRandomStream(size, seed), h)); err != nil {
		c.Close()
		return nil, fmt.Errorf("after %d bytes: %w", n, err)
	}
	return &pendingUpload{c: c, hash: h.Sum(nil)}, nil
}

// finish half-closes the session, checks the SHA-256 the sink answers
// within within and closes the session.
func (u *pendingUpload) finish(within time.Duration) error {
	defer u.c.Close()
	u.c.SetDeadline(time.Now().Add(within))
	if err := u.c.(*net.TCPConn).CloseWrite(); err != nil {
		return err
	}
	got, err := io.ReadAll(u.c)
	if want := hex.EncodeToString(u.hash); strings.TrimSpace(string(got)) != want {
		return fmt.Errorf("the sink read a SHA-256 of %q (%v), want %s", bytes.TrimSpace(got), err, want)
	}
	return nil
}

// clusterTarget is the echo server (:7) and the sink (:9) on the private
// network, served by the test process from sockets in the target
// namespace.
type clusterTarget struct {
	lns []net.Listener
	wg  sync.WaitGroup

	mu sync.Mutex
	// guarded by mu
	conns  map[net.Conn]struct{}
	closed bool
}

// startTargets listens on ip:7 and ip:9 in namespace ns until the test
// ends.
func (l *netLab) startTargets(t *testing.T, ns, ip string) *clusterTarget {
	t.Helper()
	tg := &clusterTarget{conns: map[net.Conn]struct{}{}}
	l.t.Cleanup(tg.close)
	serve := map[string]func(net.Conn){
		"7": func(c net.Conn) { io.Copy(c, c) },
		"9": func(c net.Conn) {
			h := sha256.New()
			if _, err := io.Copy(h, c); err == nil {
				fmt.Fprintf(c, "%x\n", h.Sum(nil))
			}
		},
	}
	for port, handle := range serve {
		ln, err := inNetns(l.ns(ns), func() (net.Listener, error) { return net.Listen("tcp", net.JoinHostPort(ip, port)) })
		if err != nil {
			t.Fatal(err)
		}
		tg.lns = append(tg.lns, ln)
		tg.wg.Add(1)
		go tg.accept(ln, handle)
	}
	return tg
}

func (tg *clusterTarget) accept(ln net.Listener, handle func(net.Conn)) {
	defer tg.wg.Done()
	for {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		tg.mu.Lock()
		if tg.closed {
			tg.mu.Unlock()
			c.Close()
			return
		}
		tg.conns[c] = struct{}{}
		tg.wg.Add(1)
		tg.mu.Unlock()
		go func() {
			defer tg.wg.Done()
			defer func() {
				tg.mu.Lock()
				delete(tg.conns, c)
				tg.mu.Unlock()
				c.Close()
			}()
			c.SetDeadline(time.Now().Add(5 * time.Minute))
			handle(c)
		}()
	}
}

// close stops the listeners, ends every connection and waits for the
// goroutines.
func (tg *clusterTarget) close() {
	tg.mu.Lock()
	tg.closed = true
	for _, ln := range tg.lns {
		ln.Close()
	}
	for c := range tg.conns {
		c.Close()
	}
	tg.mu.Unlock()
	tg.wg.Wait()
}

// healthCheck plays the balancer's health check (see clusterHealthEvery):
// it drops a replica from the balancer's rules after clusterHealthFails
// failed TCP connects in a row from lb, and never adds one back.
type healthCheck struct {
	cancel context.CancelFunc
	done   chan struct{}

	mu sync.Mutex
	// guarded by mu
	dropped map[string]time.Time // by replica address: when it was dropped
	err     error                // the first failure to rewrite the rules
}

func (s *clusterSuite) startHealthCheck(t *testing.T) *healthCheck {
	ctx, cancel := context.WithCancel(context.Background())
	hc := &healthCheck{cancel: cancel, done: make(chan struct{}), dropped: map[string]time.Time{}}
	t.Cleanup(func() { hc.stop(t) })
	live := slices.Clone(clusterReplicaIPs)
	fails := map[string]int{}
	go func() {
		defer close(hc.done)
		tick := time.NewTicker(clusterHealthEvery)
		defer tick.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
			}
			changed := false
			for _, ip := range slices.Clone(live) {
				if ok, _ := s.canReach("lb", ip+":7171", clusterHealthEvery); ok {
					fails[ip] = 0
					continue
				}
				if fails[ip]++; fails[ip] >= clusterHealthFails && len(live) > 1 {
					live = slices.DeleteFunc(live, func(x string) bool { return x == ip })
					changed = true
					hc.mu.Lock()
					hc.dropped[ip] = time.Now()
					hc.mu.Unlock()
				}
			}
			if changed {
				if err := s.setBackends(live); err != nil {
					hc.mu.Lock()
					hc.err = errors.Join(hc.err, err)
					hc.mu.Unlock()
				}
			}
		}
	}()
	return hc
}

// droppedWithin waits up to within for the replica at ip dropped and
// returns when it was.
func (hc *healthCheck) droppedWithin(ip string, within time.Duration) (time.Time, error) {
	deadline := time.Now().Add(within)
	for {
		hc.mu.Lock()
		at, ok := hc.dropped[ip]
		hc.mu.Unlock()
		if ok {
			return at, nil
		}
		if time.Now().After(deadline) {
			return time.Time{}, fmt.Errorf("the balancer's health check did not drop %s within %v", ip, within)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// droppedAfter says how long after since the replica at ip was dropped.
func (hc *healthCheck) droppedAfter(ip string, since time.Time) string {
	hc.mu.Lock()
	defer hc.mu.Unlock()
	at, ok := hc.dropped[ip]
	if !ok {
		return "never"
	}
	return at.Sub(since).Round(time.Millisecond).String()
}

// stop ends the health check and waits for it; it is idempotent. A failure
// to rewrite the rules fails t.
func (hc *healthCheck) stop(t *testing.T) {
	hc.cancel()
	<-hc.done
	hc.mu.Lock()
	defer hc.mu.Unlock()
	if hc.err != nil {
		t.Errorf("health check: rewriting the balancer's rules: %v", hc.err)
		hc.err = nil
	}
}
