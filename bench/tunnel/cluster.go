package main

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/sync/errgroup"
	"google.golang.org/grpc"

	"github.com/outposthq/outpost/bench/internal/load"
	"github.com/outposthq/outpost/bench/internal/proc"
	"github.com/outposthq/outpost/client"
	outpostv1 "github.com/outposthq/outpost/gen/outpost/v1"
	"github.com/outposthq/outpost/internal/testlb"
	"github.com/outposthq/outpost/internal/testpg"
	"github.com/outposthq/outpost/server"
)

// The cluster part (issue 17's benchmarks): gateway replicas on one
// PostgreSQL database, each a gateway child of its own (-mode=gateway with
// -store), the server being internal/testpg's throwaway one.
//
//  1. The peer hop: replicas A and B, one agent binary with
//     --ha-connections 1 dialing A's QUIC port. A client library at A
//     (local) and one at B (forwarded over the peer link to A), with the
//     same session token, time session setup and carry single-session
//     transfers; a raw quic-go stream open + echo, timed in the same run,
//     is the QUIC round trip the hop's setup is judged against.
//  2. Re-homing: a third replica, the in-process round-robin UDP balancer
//     (internal/testlb) in front of the three, Settings.ClusterAgents agent
//     binaries with --ha-connections 2 dialing it. Once every agent holds
//     two distinct replicas, the replica holding the most is killed with
//     SIGKILL (and taken out of the balancer at once, as a health check
//     would), and the survivors' API is polled until every agent holds two
//     surviving replicas.
//
// The replicas' QUIC idle timeout is clusterIdleTimeout, so that an agent
// notices a replica that died without a word within seconds (the
// default, 120 s, would outlast the run), as the e2e cluster suite does.
const (
	clusterIdleTimeout = 5 * time.Second
	// clusterReadyLimit bounds the wait for agents to be connected as
	// expected, and clusterRehomeLimit the wait after the kill.
	clusterReadyLimit  = 60 * time.Second
	clusterRehomeLimit = 45 * time.Second
	// clusterPoll is how often the API is polled for agent presence.
	clusterPoll = 100 * time.Millisecond
	// clusterHA is the agents' --ha-connections in the re-homing run.
	clusterHA = 2
	// clusterEnrollers enroll the re-homing run's agents at once.
	clusterEnrollers = 4
	// clusterWarmBytes is the warm-up transfer of each entry and direction.
	clusterWarmBytes = 16 << 20
)

// replica is one gateway child of the cluster.
type replica struct {
	name  string
	dir   string
	gw    gatewayChild
	hello hello
	api   *grpc.ClientConn // its own API, with the first admin key
	id    string           // its replica id, as ListGateways shows it
}

// clusterRun is the cluster part in progress: what it started, stopped by
// close.
type clusterRun struct {
	b        *bench
	dsn      string
	sealKey  string
	replicas []*replica
	agents   []*proc.Child
}

// cluster is the cluster part. Without a PostgreSQL server it records why
// in the results and returns nil: the rest of the run stands.
func (b *bench) cluster(ctx context.Context) error {
	res := &load.ClusterResult{}
	b.res.Cluster = res
	pg, err := testpg.Launch()
	if err != nil {
		res.Skipped = firstLine(err.Error())
		b.log.Warn("cluster part skipped: no PostgreSQL server", "reason", res.Skipped)
		return nil
	}
	defer func() {
		if err := pg.Close(); err != nil {
			b.log.Warn("stop the PostgreSQL server", "error", err)
		}
	}()
	c := &clusterRun{b: b}
	defer c.close()
	if c.dsn, err = pg.NewDatabase(ctx); err != nil {
		return err
	}
	c.sealKey = filepath.Join(b.tmp, "cluster-seal.key")
	if _, err := server.CreateSealKeyFile(c.sealKey); err != nil {
		return err
	}
	if err := c.peerHop(ctx, res); err != nil {
		return fmt.Errorf("cluster, peer hop: %w", err)
	}
	if err := c.rehome(ctx, &res.Rehome); err != nil {
		return fmt.Errorf("cluster, kill -9 of a replica: %w", err)
	}
	return nil
}

// firstLine is s up to its first newline.
func firstLine(s string) string {
	line, _, _ := strings.Cut(s, "\n")
	return line
}

// close stops the agents and the replicas.
func (c *clusterRun) close() {
	c.stopAgents()
	for _, r := range c.replicas {
		if r.api != nil {
			r.api.Close()
		}
		r.gw.Stop()
	}
}

// stopAgents stops the agents started so far, all at once.
func (c *clusterRun) stopAgents() {
	var wg sync.WaitGroup
	for _, a := range c.agents {
		wg.Go(func() { a.Stop(10 * time.Second) })
	}
	wg.Wait()
	c.agents = nil
}

// startReplica starts the next replica on the database. The first one
// creates the cluster's secrets and the first admin key; the others get a
// copy of that key in their data directory, as an operator would give
// them.
func (c *clusterRun) startReplica(ctx context.Context) (*replica, error) {
	b := c.b
	r := &replica{name: fmt.Sprintf("replica-%c", 'A'+len(c.replicas))}
	r.dir = filepath.Join(b.tmp, r.name)
	if err := os.MkdirAll(r.dir, 0o700); err != nil {
		return nil, err
	}
	if len(c.replicas) > 0 {
		key, err := os.ReadFile(filepath.Join(c.replicas[0].dir, "admin.key"))
		if err != nil {
			return nil, err
		}
		if err := os.WriteFile(filepath.Join(r.dir, "admin.key"), key, 0o600); err != nil {
			return nil, err
		}
	}
	child, err := proc.StartCtl(ctx, r.name, b.exe, []string{"-mode=gateway", "-data-dir", r.dir,
		"-store", c.dsn, "-seal-key-file", c.sealKey, "-replica-name", r.name,
		"-quic-idle-timeout", clusterIdleTimeout.String(), "-log-level", b.o.childLogLevel}, &r.hello)
	if err != nil {
		return nil, err
	}
	r.gw = gatewayChild{ctlProcess{child}}
	c.replicas = append(c.replicas, r)
	if r.api, err = dialAPI(r.dir, r.hello.API, []byte(r.hello.CAPEM)); err != nil {
		return nil, err
	}
	gws, err := listGateways(ctx, r.api)
	if err != nil {
		return nil, err
	}
	for _, g := range gws {
		if g.GetSelf() {
			r.id = g.GetReplicaId()
		}
	}
	if r.id == "" {
		return nil, fmt.Errorf("%s: ListGateways shows no replica as itself", r.name)
	}
	b.log.Info("cluster replica up", "name", r.name, "pid", r.gw.PID(), "replica_id", r.id, "api", r.hello.API, "quic", r.hello.QUIC)
	return r, nil
}

// enrollAgent enrolls an agent called name with a token of replica r,
// dialing quicEndpoint, and returns its directory and id.
func (c *clusterRun) enrollAgent(ctx context.Context, r *replica, name, quicEndpoint string) (dir, id string, err error) {
	tok, err := r.gw.enrollToken(ctx, name)
	if err != nil {
		return "", "", err
	}
	dir = filepath.Join(c.b.tmp, name)
	id, err = enrollAgent(ctx, c.b.bin, dir, tok, "--quic-endpoint", quicEndpoint)
	return dir, id, err
}

// runAgent runs the enrolled agent in dir with --ha-connections ha.
func (c *clusterRun) runAgent(name, dir string, ha int) error {
	a, err := proc.Start(name, exec.Command(c.b.bin, "agent", "run", "--config-dir", dir, "--log-level", c.b.o.childLogLevel,
		"--drain-timeout", "1s", "--ha-connections", strconv.Itoa(ha)))
	if err != nil {
		return err
	}
	c.agents = append(c.agents, a)
	return nil
}

// peerHop is the first half: setup and throughput, local vs forwarded.
func (c *clusterRun) peerHop(ctx context.Context, res *load.ClusterResult) error {
	b, s := c.b, c.b.s
	for range 2 {
		if _, err := c.startReplica(ctx); err != nil {
			return err
		}
	}
	ra, rb := c.replicas[0], c.replicas[1]
	dir, id, err := c.enrollAgent(ctx, ra, "hop", ra.hello.QUIC)
	if err != nil {
		return err
	}
	if err := c.runAgent("hop agent", dir, 1); err != nil {
		return err
	}
	// The processes charged with the transfers' CPU (load.ClusterProcesses).
	pids := []int{ra.gw.PID(), rb.gw.PID(), c.agents[0].PID(), os.Getpid()}
	token, err := ra.gw.sessionToken(ctx, id, b.rig.Targets.MuxAddr(), s.Timeout+10*time.Minute)
	if err != nil {
		return err
	}
	var clients [load.NumHops]*client.Client
	for h, r := range []*replica{ra, rb} {
		if clients[h], err = client.New(client.Config{Gateway: "https://" + r.hello.API, Token: token,
			CAPEM: []byte(r.hello.CAPEM), DialTimeout: dialTimeout, Logger: b.log.Named("connect")}); err != nil {
			return err
		}
		defer clients[h].Close()
	}
	// A session at B works once B has heard of the agent's connection to
	// A through the store.
	if err := c.waitSession(ctx, clients[load.HopPeer]); err != nil {
		return err
	}
	holders, err := c.holders(ctx, ra.api)
	if err != nil {
		return err
	}
	if got := holders[id]; !slices.Equal(got, []string{ra.id}) {
		return fmt.Errorf("the hop agent is held by %v, want replica A (%s) alone", got, ra.id)
	}

	b.log.Info("cluster: session setup, local vs peer hop", "sessions", s.Sessions, "warmup", s.Warmup)
	if res.RTT, err = load.QUICSetup(ctx, b.rig.QUICRemote, s.Warmup, s.Sessions); err != nil {
		return fmt.Errorf("raw quic-go round trip: %w", err)
	}
	echo := b.rig.Targets.EchoAddr()
	for h, r := range []*replica{ra, rb} {
		if res.Setup[h], err = load.ClientSetup(ctx, clients[h], s.Warmup, s.Sessions); err != nil {
			return fmt.Errorf("session setup %s: %w", load.Hop(h), err)
		}
		if res.Gateway[h], err = r.gw.Latency(ctx, load.GatewaySessions{AgentID: id, Target: echo, Warmup: s.Warmup, N: s.Sessions}); err != nil {
			return fmt.Errorf("session setup in %s: %w", r.name, err)
		}
		b.log.Info("cluster session setup", "entry", load.Hop(h).String(), "p50", res.Setup[h].P50, "p99", res.Setup[h].P99,
			"in_gateway_p50", res.Gateway[h].P50)
	}

	res.Bytes = s.ClusterBytes
	b.log.Info("cluster: throughput, local vs peer hop", "bytes", res.Bytes, "reps", s.Reps)
	for d := range load.NumDirs {
		for h := range load.NumHops {
			if _, err := load.ClientTransfer(ctx, clients[h], d, clusterWarmBytes); err != nil {
				return fmt.Errorf("warm-up %s %s: %w", load.Hop(h), d, err)
			}
		}
	}
	for rep := range s.Reps {
		for d := range load.NumDirs {
			for h := range load.NumHops {
				before, err := load.TicksOf(pids)
				if err != nil {
					return err
				}
				took, err := load.ClientTransfer(ctx, clients[h], d, res.Bytes)
				if err != nil {
					return fmt.Errorf("%s %s, run %d: %w", load.Hop(h), d, rep+1, err)
				}
				after, err := load.TicksOf(pids)
				if err != nil {
					return err
				}
				cpu := &res.CPU[d][h]
				for i := range pids {
					cpu.Ticks[i] += after[i] - before[i]
				}
				cpu.Bytes += res.Bytes
				rate := float64(res.Bytes) / took.Seconds() / 1e6
				res.MBps[d][h] = append(res.MBps[d][h], rate)
				b.log.Info("cluster transfer", "entry", load.Hop(h).String(), "dir", d.String(), "run", rep+1,
					"took", took.Round(time.Millisecond), "MB/s", fmt.Sprintf("%.0f", rate))
			}
		}
	}
	c.stopAgents()
	return nil
}

// waitSession retries a session through c until one works (bounded:
// clusterReadyLimit).
func (c *clusterRun) waitSession(ctx context.Context, cl *client.Client) error {
	ctx, cancel := context.WithTimeout(ctx, clusterReadyLimit)
	defer cancel()
	for {
		_, err := load.ClientSetup(ctx, cl, 0, 1)
		if err == nil {
			return nil
		}
		if err := sleepCtx(ctx, clusterPoll); err != nil {
			return fmt.Errorf("no session through replica B within %v: %w", clusterReadyLimit, err)
		}
	}
}

// rehome is the second half: the kill -9 of the replica holding the most
// agents, and how soon every agent is back at clusterHA replicas.
func (c *clusterRun) rehome(ctx context.Context, res *load.Rehome) error {
	b := c.b
	if _, err := c.startReplica(ctx); err != nil {
		return err
	}
	var backends []netip.AddrPort
	for _, r := range c.replicas {
		ap, err := netip.ParseAddrPort(r.hello.QUIC)
		if err != nil {
			return err
		}
		backends = append(backends, ap)
	}
	lb, err := testlb.New(backends...)
	if err != nil {
		return err
	}
	defer lb.Close()
	*res = load.Rehome{Agents: b.s.ClusterAgents, K: clusterHA, Replicas: len(c.replicas), Limit: clusterRehomeLimit,
		Poll: clusterPoll, IdleTimeout: clusterIdleTimeout}

	b.log.Info("cluster: enrolling HA agents behind the balancer", "agents", res.Agents, "balancer", lb.Addr())
	dirs, ids := make([]string, res.Agents), make([]string, res.Agents)
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(clusterEnrollers)
	for i := range res.Agents {
		g.Go(func() (err error) {
			dirs[i], ids[i], err = c.enrollAgent(gctx, c.replicas[i%len(c.replicas)], fmt.Sprintf("ha-%d", i), lb.Addr())
			return err
		})
	}
	if err := g.Wait(); err != nil {
		return err
	}
	for i, dir := range dirs {
		if err := c.runAgent(fmt.Sprintf("ha agent %d", i), dir, clusterHA); err != nil {
			return err
		}
	}
	alive := func(string) bool { return true }
	if held, err := c.waitHeld(ctx, c.replicas[0].api, ids, alive, clusterReadyLimit); err != nil {
		return err
	} else if len(held) < len(ids) {
		return fmt.Errorf("%d of %d agents held by %d replicas after %v", len(held), len(ids), clusterHA, clusterReadyLimit)
	}

	victim, err := c.busiest(ctx)
	if err != nil {
		return err
	}
	holders, err := c.holders(ctx, c.replicas[0].api)
	if err != nil {
		return err
	}
	var affected []string
	for _, id := range ids {
		if slices.Contains(holders[id], victim.id) {
			affected = append(affected, id)
		}
	}
	res.Victim, res.Affected = victim.name, len(affected)
	survivor := c.replicas[0]
	if survivor == victim {
		survivor = c.replicas[1]
	}
	b.log.Info("cluster: kill -9 of the replica holding the most agents", "replica", victim.name, "pid", victim.gw.PID(),
		"agents_on_it", len(affected))
	killed := time.Now()
	victim.gw.Kill()
	lb.SetDown(slices.Index(c.replicas, victim))
	alive = func(id string) bool { return id != victim.id }
	seen, err := c.waitHeld(ctx, survivor.api, ids, alive, clusterRehomeLimit)
	if err != nil {
		return err
	}
	back := make(map[string]time.Duration, len(seen))
	for id, at := range seen {
		back[id] = at.Sub(killed)
	}
	res.Times, res.Missing = load.RehomeTimes(affected, back)
	b.log.Info("cluster: agents back at K after the kill", "affected", res.Affected, "missing", res.Missing,
		"p50", res.Times.P50, "max", res.Times.Max)
	c.stopAgents()
	return nil
}

// waitHeld polls api until every agent of ids is held by clusterHA
// replicas for which alive holds, or until limit (then it returns what it
// saw, without error: the caller reports the missing). It returns when
// each agent was first seen so.
func (c *clusterRun) waitHeld(ctx context.Context, api *grpc.ClientConn, ids []string, alive func(string) bool, limit time.Duration) (map[string]time.Time, error) {
	seen := make(map[string]time.Time, len(ids))
	deadline := time.Now().Add(limit)
	var lastErr error
	for {
		holders, err := c.holders(ctx, api)
		now := time.Now()
		if err == nil {
			for _, id := range ids {
				if _, ok := seen[id]; !ok && load.HeldBy(holders[id], alive) >= clusterHA {
					seen[id] = now
				}
			}
			if len(seen) == len(ids) {
				return seen, nil
			}
		} else {
			lastErr = err
		}
		if now.After(deadline) {
			c.b.log.Warn("cluster: agents not held by enough replicas in time", "held", len(seen), "agents", len(ids),
				"limit", limit, "last_error", lastErr)
			if lastErr != nil && len(seen) == 0 {
				return nil, lastErr
			}
			return seen, nil
		}
		if err := c.check(); err != nil {
			return nil, err
		}
		if err := sleepCtx(ctx, clusterPoll); err != nil {
			return nil, err
		}
	}
}

// check fails when an agent of the part has exited.
func (c *clusterRun) check() error {
	for _, a := range c.agents {
		if done, err := a.Exited(); done {
			return fmt.Errorf("the %s process exited: %v", a.Name(), err)
		}
	}
	return nil
}

// busiest is the replica that ListGateways shows with the most agents.
func (c *clusterRun) busiest(ctx context.Context) (*replica, error) {
	gws, err := listGateways(ctx, c.replicas[0].api)
	if err != nil {
		return nil, err
	}
	var best *replica
	var most uint32
	for _, g := range gws {
		i := slices.IndexFunc(c.replicas, func(r *replica) bool { return r.id == g.GetReplicaId() })
		if i >= 0 && (best == nil || g.GetAgentCount() > most) {
			best, most = c.replicas[i], g.GetAgentCount()
		}
	}
	if best == nil {
		return nil, errors.New("ListGateways shows none of the replicas")
	}
	return best, nil
}

// holders maps each agent to the replicas holding a connection of it, as
// api's ListAgents shows them.
func (c *clusterRun) holders(ctx context.Context, api *grpc.ClientConn) (map[string][]string, error) {
	ctx, cancel := context.WithTimeout(ctx, tokenCallTimeout)
	defer cancel()
	out := map[string][]string{}
	req := &outpostv1.ListAgentsRequest{PageSize: 1000}
	for range 100 { // bounded: 100 pages of 1,000
		resp, err := outpostv1.NewAgentAdminServiceClient(api).ListAgents(ctx, req)
		if err != nil {
			return nil, fmt.Errorf("list agents: %w", err)
		}
		for _, a := range resp.GetAgents() {
			out[a.GetAgentId()] = a.GetReplicaIds()
		}
		if resp.GetNextPageToken() == "" {
			return out, nil
		}
		req.PageToken = resp.GetNextPageToken()
	}
	return nil, errors.New("list agents: more than 100 pages")
}

// listGateways is api's ListGateways.
func listGateways(ctx context.Context, api *grpc.ClientConn) ([]*outpostv1.Gateway, error) {
	ctx, cancel := context.WithTimeout(ctx, tokenCallTimeout)
	defer cancel()
	resp, err := outpostv1.NewAgentAdminServiceClient(api).ListGateways(ctx, &outpostv1.ListGatewaysRequest{})
	if err != nil {
		return nil, fmt.Errorf("list gateways: %w", err)
	}
	return resp.GetGateways(), nil
}
