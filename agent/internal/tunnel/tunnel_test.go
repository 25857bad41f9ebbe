package tunnel

import (
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/outposthq/outpost/agent/internal/detect"
	"github.com/outposthq/outpost/agent/internal/session"
	"github.com/outposthq/outpost/dataplane"
	"github.com/outposthq/outpost/dataplane/transport"
)

func prefixes(ss ...string) []netip.Prefix {
	var ps []netip.Prefix
	for _, s := range ss {
		ps = append(ps, netip.MustParsePrefix(s))
	}
	return ps
}

// Rewriting agent.json advertises the new routes with epoch + 1 on the live
// connection; a rewrite that keeps the routes advertises nothing.
func TestReloadOnConfigChange(t *testing.T) {
	e := newEnv(t)
	cfg := e.config()
	cfg.WatchInterval = 10 * time.Millisecond
	start(t, cfg)
	c := e.gw.nextConn(t)
	first := expect[*dataplane.RouteAdvertise](t, c)

	e.tunnel.AdvertiseSubnets = []string{"127.0.0.0/8", "10.20.0.0/16"}
	e.tunnel.AdvertiseDomains = []string{"Branch.Contoso.Test"}
	e.saveConfig(t)
	adv := expect[*dataplane.RouteAdvertise](t, c)
	if adv.Epoch != first.Epoch+1 || !slices.Equal(adv.Subnets, prefixes("127.0.0.0/8", "10.20.0.0/16")) ||
		!slices.Equal(adv.Domains, []dataplane.DomainRoute{{Name: "branch.contoso.test"}}) {
		t.Fatalf("after the rewrite: %+v (first epoch %d)", adv, first.Epoch)
	}

	// Same routes, another order of keys in the file: nothing to advertise.
	e.tunnel.AgentName = "renamed"
	e.saveConfig(t)
	c.quiet(t, 200*time.Millisecond)

	// A broken file keeps the current routes.
	e.write(t, "agent.json", []byte("{not json"))
	c.quiet(t, 100*time.Millisecond)
	e.tunnel.AdvertiseSubnets = []string{"10.30.0.0/16"}
	e.saveConfig(t)
	if adv := expect[*dataplane.RouteAdvertise](t, c); adv.Epoch != first.Epoch+2 || !slices.Equal(adv.Subnets, prefixes("10.30.0.0/16")) {
		t.Fatalf("after the fix: %+v", adv)
	}
	e.gw.noConn(t, 50*time.Millisecond)
}

// Reload (SIGHUP) re-reads the config when the file is not watched.
func TestReloadSignal(t *testing.T) {
	e := newEnv(t)
	a := start(t, e.config()) // WatchInterval −1
	c := e.gw.nextConn(t)
	first := expect[*dataplane.RouteAdvertise](t, c)
	e.tunnel.AdvertiseSubnets = []string{"192.168.7.0/24"}
	e.saveConfig(t)
	c.quiet(t, 100*time.Millisecond) // not watched
	a.Reload()
	if adv := expect[*dataplane.RouteAdvertise](t, c); adv.Epoch != first.Epoch+1 || !slices.Equal(adv.Subnets, prefixes("192.168.7.0/24")) {
		t.Fatalf("after Reload: %+v", adv)
	}
}

// The reconnect after a route change keeps counting epochs up.
func TestEpochAcrossReconnect(t *testing.T) {
	e := newEnv(t)
	a := start(t, e.config())
	c := e.gw.nextConn(t)
	first := expect[*dataplane.RouteAdvertise](t, c)
	c.q.CloseWithError(0, "connection-superseded")
	c2 := e.gw.nextConn(t)
	if adv := expect[*dataplane.RouteAdvertise](t, c2); adv.Epoch != first.Epoch {
		t.Fatalf("same routes, new connection: epoch %d, want %d", adv.Epoch, first.Epoch)
	}
	e.tunnel.AdvertiseSubnets = []string{"10.0.0.0/8"}
	e.saveConfig(t)
	a.Reload()
	if adv := expect[*dataplane.RouteAdvertise](t, c2); adv.Epoch != first.Epoch+1 {
		t.Fatalf("epoch %d, want %d", adv.Epoch, first.Epoch+1)
	}
}

// Drain: routes withdrawn with epoch + 1, new sessions refused with "agent
// draining", the live session goes on, then the tunnel closes with
// "shutdown".
func TestDrain(t *testing.T) {
	e := newEnv(t)
	target := echoTarget(t)
	a := start(t, e.config())
	c := e.gw.nextConn(t)
	first := expect[*dataplane.RouteAdvertise](t, c)
	live, resp := c.connect(t, target)
	if resp.Result != dataplane.ResultSuccess {
		t.Fatal(resp.Reason)
	}
	roundTrip(t, live, "before")

	a.cancel()
	adv := expect[*dataplane.RouteAdvertise](t, c)
	if adv.Epoch != first.Epoch+1 || len(adv.Subnets) != 0 || len(adv.Domains) != 0 {
		t.Fatalf("withdrawal: %+v", adv)
	}
	_, resp = c.connect(t, target)
	if resp.Result != dataplane.ResultError || resp.Reason != session.ReasonDraining {
		t.Fatalf("new session while draining: %v %q", resp.Result, resp.Reason)
	}
	roundTrip(t, live, "during the drain")
	// Reload while draining: the routes stay withdrawn.
	a.Reload()
	c.quiet(t, 50*time.Millisecond)
	select {
	case <-c.q.Context().Done():
		t.Fatal("the tunnel closed while a session was live")
	default:
	}
	live.Close()
	if r := c.closeReason(t); r != "shutdown" {
		t.Fatalf("close reason %q", r)
	}
	a.wait(t)
	e.gw.noConn(t, 50*time.Millisecond)
}

// A session that outlives DrainTimeout is cut and the tunnel closed.
func TestDrainTimeout(t *testing.T) {
	e := newEnv(t)
	target := echoTarget(t)
	cfg := e.config()
	cfg.DrainTimeout = 200 * time.Millisecond
	a := start(t, cfg)
	c := e.gw.nextConn(t)
	expect[*dataplane.RouteAdvertise](t, c)
	live, resp := c.connect(t, target)
	if resp.Result != dataplane.ResultSuccess {
		t.Fatal(resp.Reason)
	}
	roundTrip(t, live, "hold")
	began := time.Now()
	a.cancel()
	if r := c.closeReason(t); r != "shutdown" {
		t.Fatalf("close reason %q", r)
	}
	if d := time.Since(began); d < 200*time.Millisecond {
		t.Fatalf("closed after %v, before the drain timeout", d)
	}
	a.wait(t)
	if !e.logs.Contains("drain timeout") {
		t.Fatal("no drain timeout logged")
	}
}

// Without a live session the agent closes at once, withdrawing nothing.
func TestDrainIdle(t *testing.T) {
	e := newEnv(t)
	a := start(t, e.config())
	c := e.gw.nextConn(t)
	expect[*dataplane.RouteAdvertise](t, c)
	a.cancel()
	if r := c.closeReason(t); r != "shutdown" {
		t.Fatalf("close reason %q", r)
	}
	a.wait(t)
}

func TestLoadSettingsDomainDetection(t *testing.T) {
	e := newEnv(t)
	if err := os.WriteFile(e.resolvConf, []byte("search Corp.Detect.Test other.test\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	det := detect.Options{ResolvConf: e.resolvConf, Hostname: func() (string, error) { return "vm", nil }}
	off := false
	on := true
	cases := []struct {
		name             string
		subnets, domains []string
		auto             *bool
		want             []dataplane.DomainRoute
	}{
		{"default on", nil, nil, nil, []dataplane.DomainRoute{{Name: "corp.detect.test", AutoDetected: true}}},
		{"explicitly on", []string{}, []string{}, &on, []dataplane.DomainRoute{{Name: "corp.detect.test", AutoDetected: true}}},
		{"off", nil, nil, &off, nil},
		{"explicit domains turn it off", nil, []string{"contoso.test"}, &on, []dataplane.DomainRoute{{Name: "contoso.test"}}},
		{"explicit subnets turn it off", []string{"127.0.0.0/8"}, nil, &on, nil},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			e.tunnel.AdvertiseSubnets, e.tunnel.AdvertiseDomains, e.tunnel.AutoDetectDomain = tc.subnets, tc.domains, tc.auto
			e.saveConfig(t)
			set, err := loadSettings(e.dir, det)
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(set.domains, tc.want) {
				t.Fatalf("domains %+v, want %+v", set.domains, tc.want)
			}
			var names []string
			for _, d := range tc.want {
				names = append(names, d.Name)
			}
			if !slices.Equal(set.routes.Domains, names) {
				t.Fatalf("session routes %v, want %v", set.routes.Domains, names)
			}
		})
	}
}

// The detected domain is advertised with auto_detected; a change of the
// resolver configuration is picked up live like a change of agent.json.
func TestDetectedDomainLive(t *testing.T) {
	e := newEnv(t)
	if err := os.WriteFile(e.resolvConf, []byte("domain lab.detect.test\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	e.tunnel.AdvertiseSubnets = nil // detection is for an agent with no route configured
	e.saveConfig(t)
	cfg := e.config()
	cfg.WatchInterval = 10 * time.Millisecond
	start(t, cfg)
	c := e.gw.nextConn(t)
	first := expect[*dataplane.RouteAdvertise](t, c)
	if !slices.Equal(first.Domains, []dataplane.DomainRoute{{Name: "lab.detect.test", AutoDetected: true}}) {
		t.Fatalf("domains %+v", first.Domains)
	}
	tmp := filepath.Join(filepath.Dir(e.resolvConf), "resolv.new")
	if err := os.WriteFile(tmp, []byte("search office.detect.test\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, e.resolvConf); err != nil { // as DHCP clients do
		t.Fatal(err)
	}
	adv := expect[*dataplane.RouteAdvertise](t, c)
	if adv.Epoch != first.Epoch+1 || !slices.Equal(adv.Domains, []dataplane.DomainRoute{{Name: "office.detect.test", AutoDetected: true}}) {
		t.Fatalf("after the change: %+v", adv)
	}
}

// An agent that hears nothing from the gateway for IdleHeartbeat sends a
// Heartbeat, a packet long enough to draw a stateless reset from a restarted
// gateway (a bare keep-alive PING is not). The fake gateway answers none,
// and PINGs only every 15 s.
func TestHeartbeatWhenIdle(t *testing.T) {
	e := newEnv(t)
	cfg := e.config() // HeartbeatInterval and AdvertiseInterval 1 h
	cfg.IdleHeartbeat = 50 * time.Millisecond
	start(t, cfg)
	c := e.gw.nextConn(t)
	expect[*dataplane.RouteAdvertise](t, c)
	for range 3 {
		select {
		case m := <-c.msgs:
			if _, ok := m.(*dataplane.Heartbeat); !ok {
				t.Fatalf("got %T, want a Heartbeat", m)
			}
		case <-time.After(testTimeout):
			t.Fatal("no Heartbeat on an idle control stream")
		}
	}
}

// A gateway whose keep-alive PINGs arrive more often than IdleHeartbeat gets
// no idle Heartbeat: the agent's ACKs tell it the agent lives, and the
// PINGs tell the agent the gateway does.
func TestNoHeartbeatWhileGatewayPings(t *testing.T) {
	e := newEnv(t)
	e.gw = startFakeGatewayQUIC(t, e.p, transport.Config{KeepAlivePeriod: 20 * time.Millisecond})
	e.tunnel.GatewayEndpoint = e.gw.ln.Addr().String()
	e.saveConfig(t)
	cfg := e.config()
	cfg.IdleHeartbeat = 300 * time.Millisecond
	start(t, cfg)
	c := e.gw.nextConn(t)
	expect[*dataplane.RouteAdvertise](t, c)
	select {
	case m := <-c.msgs:
		t.Fatalf("got %T while the gateway PINGs every 20 ms", m)
	case <-time.After(10 * cfg.IdleHeartbeat):
	}
}
