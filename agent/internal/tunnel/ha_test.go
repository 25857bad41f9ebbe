package tunnel

import (
	"crypto/ecdsa"
	"crypto/x509"
	"net"
	"net/netip"
	"slices"
	"testing"
	"time"

	"github.com/outposthq/outpost/dataplane"
	"github.com/outposthq/outpost/internal/testlb"
)

// Replica ids of the fake gateways.
const (
	replicaA = "aaaaaaaa-0000-4000-8000-000000000001"
	replicaB = "bbbbbbbb-0000-4000-8000-000000000002"
	replicaC = "cccccccc-0000-4000-8000-000000000003"
)

// haEnv points the test agent at a round-robin UDP balancer in front of
// replicas.
func (e *env) haEnv(t *testing.T, replicas ...*fakeGateway) (*testlb.Balancer, Config) {
	t.Helper()
	var backends []netip.AddrPort
	for _, r := range replicas {
		backends = append(backends, r.ln.Addr().(*net.UDPAddr).AddrPort())
	}
	fw := testlb.Start(t, backends...)
	e.tunnel.GatewayEndpoint = fw.Addr()
	e.saveConfig(t)
	cfg := e.config()
	cfg.HARetryMin = 10 * time.Millisecond
	return fw, cfg
}

// serveEach checks that each connection carries a session to an echo
// target.
func serveEach(t *testing.T, conns ...*gwConn) {
	t.Helper()
	target := echoTarget(t)
	for i, c := range conns {
		s, resp := c.connect(t, target)
		if resp.Result != dataplane.ResultSuccess {
			t.Fatalf("connection %d: session refused: %q", i, resp.Reason)
		}
		roundTrip(t, s, "through every replica")
	}
}

// Two replicas behind one endpoint whose balancer sends the second
// connection to the first replica again: the agent refuses that duplicate
// during the handshake (the replica never completes it), dials again from a
// new port, and ends up with one connection on each replica, both serving
// sessions and both getting the routes of a Reload.
func TestHADistinctReplicas(t *testing.T) {
	e := newEnv(t)
	ga, gb := startReplica(t, e.p, replicaA), startReplica(t, e.p, replicaB)
	_, cfg := e.haEnv(t, ga, ga, gb)
	a := start(t, cfg)
	ca, cb := ga.nextConn(t), gb.nextConn(t)
	advA, advB := expect[*dataplane.RouteAdvertise](t, ca), expect[*dataplane.RouteAdvertise](t, cb)
	if advA.Epoch != advB.Epoch || !slices.Equal(advA.Subnets, advB.Subnets) {
		t.Fatalf("the connections advertise %+v and %+v, want the same routes", advA, advB)
	}
	waitFor(t, "two connections", func() bool { return a.Connections() == 2 })
	if !a.Connected() {
		t.Fatal("Connected is false with two connections")
	}
	ga.noConn(t, 200*time.Millisecond)
	if h, n := ga.hellos.Load(), ga.accepted.Load(); h < 2 || n != 1 {
		t.Fatalf("replica A saw %d handshakes and completed %d, want the duplicate begun and refused (≥ 2, 1)", h, n)
	}
	if !e.logs.Contains("reached a replica this agent already holds") {
		t.Fatal("the duplicate was not logged")
	}
	if !e.logs.Contains("holding tunnel connections to distinct gateway replicas") {
		t.Fatal("reaching K connections was not logged")
	}

	serveEach(t, ca, cb)

	e.tunnel.AdvertiseSubnets = []string{"192.168.7.0/24"}
	e.saveConfig(t)
	a.Reload()
	for _, c := range []*gwConn{ca, cb} {
		if adv := expect[*dataplane.RouteAdvertise](t, c); adv.Epoch != advA.Epoch+1 || !slices.Equal(adv.Subnets, prefixes("192.168.7.0/24")) {
			t.Fatalf("after Reload: %+v", adv)
		}
	}
	gb.noConn(t, 50*time.Millisecond)
}

// A gateway whose certificate names no replica is a cluster of one: the
// agent keeps one connection. HAConnections 1 keeps one connection in
// front of replicas too.
func TestHASingleConnection(t *testing.T) {
	t.Run("gateway without replica id", func(t *testing.T) {
		e := newEnv(t)
		a := start(t, e.config()) // HAConnections 2 by default
		c := e.gw.nextConn(t)
		expect[*dataplane.RouteAdvertise](t, c)
		e.gw.noConn(t, 300*time.Millisecond)
		if n, h := a.Connections(), e.gw.hellos.Load(); n != 1 || h != 1 {
			t.Fatalf("%d connections after %d handshakes, want 1 and 1", n, h)
		}
	})
	t.Run("HAConnections 1", func(t *testing.T) {
		e := newEnv(t)
		ga, gb := startReplica(t, e.p, replicaA), startReplica(t, e.p, replicaB)
		_, cfg := e.haEnv(t, ga, gb)
		cfg.HAConnections = 1
		a := start(t, cfg)
		expect[*dataplane.RouteAdvertise](t, ga.nextConn(t))
		gb.noConn(t, 300*time.Millisecond)
		if n, h := a.Connections(), gb.hellos.Load(); n != 1 || h != 0 {
			t.Fatalf("%d connections, %d handshakes with the other replica; want 1 and 0", n, h)
		}
	})
}

// A replica that dies is replaced by another one; the connection to the
// surviving replica is untouched.
func TestHAReplicaReplaced(t *testing.T) {
	e := newEnv(t)
	ga, gb, gc := startReplica(t, e.p, replicaA), startReplica(t, e.p, replicaB), startReplica(t, e.p, replicaC)
	fw, cfg := e.haEnv(t, ga, gb, gc)
	a := start(t, cfg)
	ca, cb := ga.nextConn(t), gb.nextConn(t)
	expect[*dataplane.RouteAdvertise](t, ca)
	expect[*dataplane.RouteAdvertise](t, cb)

	fw.SetDown(1)
	gb.stop()
	cc := gc.nextConn(t)
	expect[*dataplane.RouteAdvertise](t, cc)
	waitFor(t, "two connections again", func() bool { return a.Connections() == 2 })
	if ca.q.Context().Err() != nil || ga.accepted.Load() != 1 {
		t.Fatal("the connection to the surviving replica was replaced")
	}
	serveEach(t, ca, cc)
}

// beforeRenewalOnTwo runs the agent, a minute before its renewal is due,
// behind a balancer in front of replicas A and B, and returns once it is
// up on both: ca (the primary) on A, cb on B.
func (e *env) beforeRenewalOnTwo(t *testing.T) (ga, gb *fakeGateway, fw *testlb.Balancer, ca, cb *gwConn) {
	t.Helper()
	ga, gb = startReplica(t, e.p, replicaA), startReplica(t, e.p, replicaB)
	fw, cfg := e.haEnv(t, ga, gb)
	e.clock.Set(e.renewAt().Add(-time.Minute))
	start(t, cfg)
	ca, cb = ga.nextConn(t), gb.nextConn(t)
	expect[*dataplane.RouteAdvertise](t, ca)
	expect[*dataplane.RouteAdvertise](t, cb)
	return ga, gb, fw, ca, cb
}

// renewedTo waits for the agent to close c with "cert-renewed" and to
// connect to gw again with the renewed certificate, and returns that
// connection, its RouteAdvertise read.
func (c *gwConn) renewedTo(t *testing.T, gw *fakeGateway, renewed *x509.Certificate) *gwConn {
	t.Helper()
	if r := c.closeReason(t); r != "cert-renewed" {
		t.Fatalf("close reason %q", r)
	}
	next := gw.nextConn(t)
	if !next.cert.Equal(renewed) {
		t.Fatal("reconnected without the renewed certificate")
	}
	expect[*dataplane.RouteAdvertise](t, next)
	return next
}

// Only the primary connection renews the certificate; the other one
// reconnects with the renewed certificate only once the primary is back
// with it, never while it is down.
func TestHARenewalRollsOver(t *testing.T) {
	e := newEnv(t)
	ga, gb, fw, ca, cb := e.beforeRenewalOnTwo(t)

	e.clock.Set(e.renewAt())
	req := expect[*dataplane.CertRenewalRequest](t, ca)
	cb.quiet(t, 100*time.Millisecond) // no second renewal
	// The primary's replica leaves the balancer: the primary cannot come
	// back (it reaches only B, held by the other connection).
	fw.SetDown(0)
	resp, renewed := e.success(t, csrOf(t, req).PublicKey.(*ecdsa.PublicKey), e.clock.Now().Add(-time.Minute))
	send(t, ca, resp)
	if r := ca.closeReason(t); r != "cert-renewed" {
		t.Fatalf("primary close reason %q", r)
	}
	cb.quiet(t, 300*time.Millisecond)
	if cb.q.Context().Err() != nil {
		t.Fatal("the other connection reconnected while the primary was down")
	}

	fw.SetUp(0)
	ca2 := ga.nextConn(t)
	if !ca2.cert.Equal(renewed) {
		t.Fatal("the primary came back without the renewed certificate")
	}
	expect[*dataplane.RouteAdvertise](t, ca2)
	cb2 := cb.renewedTo(t, gb, renewed)
	cb2.quiet(t, 100*time.Millisecond)
	ca2.quiet(t, 100*time.Millisecond)
}

// A refusal of the agent's identity, confirmed by a second attempt of the
// same connection, stops the agent and takes every connection down.
func TestHADeletedAgentStops(t *testing.T) {
	e := newEnv(t)
	ga, gb := startReplica(t, e.p, replicaA), startReplica(t, e.p, replicaB)
	_, cfg := e.haEnv(t, ga, gb)
	cfg.BackoffMin, cfg.BackoffMax = 10*time.Millisecond, 50*time.Millisecond
	a := start(t, cfg)
	ca, cb := ga.nextConn(t), gb.nextConn(t)
	expect[*dataplane.RouteAdvertise](t, ca)
	expect[*dataplane.RouteAdvertise](t, cb)

	ca.q.CloseWithError(0, string(dataplane.CloseAgentDeleted))
	ga.nextConn(t).q.CloseWithError(0, string(dataplane.CloseAgentNotAccepted))
	checkPermanent(t, a.exit(t), errAgentDeleted, "outpost agent enroll --config-dir "+e.dir)
	if r := cb.closeReason(t); r != string(dataplane.CloseShutdown) {
		t.Fatalf("the other connection closed with %q, want shutdown", r)
	}
	if a.Connected() {
		t.Fatal("Connected after Run returned")
	}
}

// A cluster whose endpoint reaches fewer replicas than HAConnections:
// the agent keeps what it can and warns, without ever completing a
// handshake with the replica it holds.
func TestHATooFewReplicas(t *testing.T) {
	e := newEnv(t)
	ga := startReplica(t, e.p, replicaA)
	_, cfg := e.haEnv(t, ga)
	cfg.HAWarnAfter = 200 * time.Millisecond
	cfg.BackoffMax = 50 * time.Millisecond
	a := start(t, cfg)
	expect[*dataplane.RouteAdvertise](t, ga.nextConn(t))
	waitFor(t, "the warning", func() bool { return e.logs.Contains("fewer tunnel connections than wanted") })
	if n, acc, h := a.Connections(), ga.accepted.Load(), ga.hellos.Load(); n != 1 || acc != 1 || h < 2 {
		t.Fatalf("%d connections, %d completed of %d handshakes; want 1, 1 and more than one", n, acc, h)
	}
}

// With the primary connection down (its replica gone, the one left held by
// the other connection), the other connection renews the certificate.
func TestHARenewalWithoutPrimary(t *testing.T) {
	e := newEnv(t)
	ga, gb, fw, _, cb := e.beforeRenewalOnTwo(t)

	fw.SetDown(0)
	ga.stop()
	waitFor(t, "the primary to find only the held replica", func() bool {
		return e.logs.Contains("reached a replica this agent already holds")
	})
	e.clock.Set(e.renewAt())
	req := expect[*dataplane.CertRenewalRequest](t, cb)
	resp, renewed := e.success(t, csrOf(t, req).PublicKey.(*ecdsa.PublicKey), e.clock.Now().Add(-time.Minute))
	send(t, cb, resp)
	if r := cb.closeReason(t); r != "cert-renewed" {
		t.Fatalf("close reason %q", r)
	}
	// The primary, redialing all along, may take B with the old
	// certificate in the moment B is free (it rolls over later): the
	// renewed certificate reaches B within a few connections.
	for i := 0; ; i++ {
		next := gb.nextConn(t)
		if next.cert.Equal(renewed) {
			expect[*dataplane.RouteAdvertise](t, next)
			next.quiet(t, 100*time.Millisecond) // no second renewal
			return
		}
		if i == 3 {
			t.Fatal("B never got a connection with the renewed certificate")
		}
	}
}

// A replica that shuts down (closes with "shutdown") is replaced at once,
// not after the reconnect backoff.
func TestHAReplicaShutdownReplacedAtOnce(t *testing.T) {
	e := newEnv(t)
	ga, gb, gc := startReplica(t, e.p, replicaA), startReplica(t, e.p, replicaB), startReplica(t, e.p, replicaC)
	fw, cfg := e.haEnv(t, ga, gb, gc)
	cfg.BackoffMin, cfg.BackoffMax = time.Minute, time.Minute
	start(t, cfg)
	expect[*dataplane.RouteAdvertise](t, ga.nextConn(t))
	cb := gb.nextConn(t)
	expect[*dataplane.RouteAdvertise](t, cb)

	fw.SetDown(1)
	cb.q.CloseWithError(0, string(dataplane.CloseShutdown))
	select {
	case c := <-gc.conns:
		expect[*dataplane.RouteAdvertise](t, c)
	case <-time.After(3 * time.Second):
		t.Fatal("no replacement within 3 s")
	}
	if !e.logs.Contains("the gateway replica shut down; dialing a replacement") {
		t.Fatal("the replacement was not logged")
	}
}

// Attempts that keep reaching held replicas back off well past BackoffMax
// (a cluster smaller than HAConnections costs few handshakes), never past
// HARetryMax; the first ones retry quickly.
func TestDuplicateBackoff(t *testing.T) {
	var long int
	for range 200 {
		d := jitter(DefaultHARetryMin, DefaultHARetryMax, 25)
		if d <= 0 || d > DefaultHARetryMax {
			t.Fatalf("delay %v outside (0, %v]", d, DefaultHARetryMax)
		}
		if d > DefaultBackoffMax {
			long++
		}
		if d := jitter(DefaultHARetryMin, DefaultHARetryMax, 0); d > DefaultHARetryMin {
			t.Fatalf("first retry after %v, want at most %v", d, DefaultHARetryMin)
		}
	}
	if long < 100 {
		t.Errorf("%d of 200 delays past BackoffMax, want most", long)
	}
}

// A replica that dies without a word (no close, no reset: its host is
// gone) is noticed by its silence and replaced within GatewaySilence, not
// the minutes of the QUIC idle timeout; the connection to the surviving
// replica, which keeps answering, is untouched.
func TestHASilentReplicaReplaced(t *testing.T) {
	e := newEnv(t)
	ga, gb, gc := startReplica(t, e.p, replicaA), startReplica(t, e.p, replicaB), startReplica(t, e.p, replicaC)
	fw, cfg := e.haEnv(t, ga, gb, gc)
	cfg.IdleHeartbeat, cfg.GatewaySilence = 50*time.Millisecond, 300*time.Millisecond
	a := start(t, cfg)
	ca, cb := ga.nextConn(t), gb.nextConn(t)
	expect[*dataplane.RouteAdvertise](t, ca)
	expect[*dataplane.RouteAdvertise](t, cb)

	fw.Blackhole(1)
	start := time.Now()
	cc := gc.nextConn(t)
	expect[*dataplane.RouteAdvertise](t, cc)
	t.Logf("the silent replica was replaced %v after it went silent", time.Since(start).Round(time.Millisecond))
	waitFor(t, "two connections again", func() bool { return a.Connections() == 2 })
	if ca.q.Context().Err() != nil || ga.accepted.Load() != 1 {
		t.Fatal("the connection to the surviving replica was replaced")
	}
	serveEach(t, ca, cc)
}

// A deletion heard on one connection names the agent's end, even when
// another connection confirms the refusal first: that one, coming back, is
// only refused as unknown (agent-not-accepted), which says less.
func TestHADeletionHeardElsewhereNamesTheEnd(t *testing.T) {
	e := newEnv(t)
	ga, gb := startReplica(t, e.p, replicaA), startReplica(t, e.p, replicaB)
	fw, cfg := e.haEnv(t, ga, gb)
	cfg.BackoffMin, cfg.BackoffMax = 10*time.Millisecond, 50*time.Millisecond
	a := start(t, cfg)
	ca, cb := ga.nextConn(t), gb.nextConn(t)
	expect[*dataplane.RouteAdvertise](t, ca)
	expect[*dataplane.RouteAdvertise](t, cb)

	fw.SetDown(0) // connection A, redialing, finds only B, which B's connection holds
	ca.q.CloseWithError(0, string(dataplane.CloseAgentDeleted))
	waitFor(t, "the deletion heard", func() bool { return e.logs.Contains("this agent was deleted at the gateway") })
	cb.q.CloseWithError(0, string(dataplane.CloseAgentNotAccepted))
	gb.nextConn(t).q.CloseWithError(0, string(dataplane.CloseAgentNotAccepted))
	checkPermanent(t, a.exit(t), errAgentDeleted, "outpost agent enroll --config-dir "+e.dir)
}
