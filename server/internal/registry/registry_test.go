package registry

import (
	"net/netip"
	"testing"
	"time"

	"github.com/outposthq/outpost/dataplane"
	"github.com/outposthq/outpost/internal/fakeclock"
)

type fakeConn struct{ reason string }

func (f *fakeConn) CloseWithReason(r string) { f.reason = r }

func TestSupersedeKeepsTheNewEntry(t *testing.T) {
	r := New(nil)
	old := &Entry{AgentID: "a", Conn: &fakeConn{}}
	if r.Register(old) != nil {
		t.Fatal("first Register replaced something")
	}
	repl := &Entry{AgentID: "a", Conn: &fakeConn{}}
	if got := r.Register(repl); got != old {
		t.Fatalf("Register returned %v, want the old entry", got)
	}
	if repl.Generation() <= old.Generation() {
		t.Fatal("generation did not increase")
	}
	if r.Unregister(old) {
		t.Fatal("the superseded entry's cleanup removed its successor")
	}
	if e, ok := r.Lookup("a"); !ok || e != repl {
		t.Fatal("successor lost")
	}
	if !r.Unregister(repl) || r.Len() != 0 {
		t.Fatal("Unregister of the live entry failed")
	}
	if _, ok := r.LastSeen("a"); !ok {
		t.Fatal("LastSeen forgot a departed agent")
	}
	r.Forget("a")
	if _, ok := r.LastSeen("a"); ok {
		t.Fatal("Forget did not forget")
	}
}

func TestAdvertiseEpochRules(t *testing.T) {
	r := New(nil)
	var changes []Change
	r.Watch(func(c Change) { changes = append(changes, c) })
	e := &Entry{AgentID: "a", Conn: &fakeConn{}}
	r.Register(e)
	p := func(s string) []netip.Prefix { return []netip.Prefix{netip.MustParsePrefix(s)} }

	if !r.Advertise(e, 5, p("10.0.0.0/8"), nil) {
		t.Fatal("first advertisement of a connection must apply, whatever its epoch")
	}
	if r.Advertise(e, 5, p("10.1.0.0/16"), nil) {
		t.Fatal("equal epoch replaced the routes")
	}
	if r.Advertise(e, 4, p("10.2.0.0/16"), nil) {
		t.Fatal("lower epoch replaced the routes")
	}
	if !r.Advertise(e, 6, p("10.3.0.0/16"), []dataplane.DomainRoute{{Name: "x.test"}}) {
		t.Fatal("higher epoch ignored")
	}
	s, _ := r.Get("a")
	if s.Routes.Epoch != 6 || s.Routes.Subnets[0].String() != "10.3.0.0/16" || s.Routes.Domains[0].Name != "x.test" {
		t.Fatalf("routes %+v", s.Routes)
	}
	// Register, two applied advertisements.
	if len(changes) != 3 || changes[2].Routes.Epoch != 6 {
		t.Fatalf("watchers saw %d changes", len(changes))
	}
	r.Unregister(e)
	if last := changes[len(changes)-1]; last.Entry != nil {
		t.Fatal("departure not reported")
	}
}

func TestStatusThresholds(t *testing.T) {
	c := fakeclock.New(time.Unix(1_000_000, 0))
	r := New(c.Now)
	e := &Entry{AgentID: "a", Conn: &fakeConn{}}
	r.Register(e)
	steps := []struct {
		advance time.Duration
		want    Status
	}{
		{0, Online},
		{45*time.Second - time.Millisecond, Online},
		{time.Millisecond, Unresponsive},
		{45*time.Second - time.Millisecond, Unresponsive},
		{time.Millisecond, Offline},
	}
	for i, s := range steps {
		c.Advance(s.advance)
		if got := r.Status(e); got != s.want {
			t.Fatalf("step %d: %v, want %v", i, got, s.want)
		}
	}
	r.Touch(e)
	if got, _ := r.Get("a"); got.Status != Online {
		t.Fatalf("after Touch: %v", got.Status)
	}
}

// A silent transport makes an agent unresponsive at once and never better;
// a demotion lasts until the agent is heard from.
func TestSilentAndDemoted(t *testing.T) {
	c := fakeclock.New(time.Unix(1000, 0))
	r := New(c.Now)
	e := &Entry{AgentID: "a", Conn: &fakeConn{}}
	r.Register(e)
	if !r.SetSilent(e, true) || r.SetSilent(e, true) {
		t.Fatal("SetSilent does not report the change alone")
	}
	if got, _ := r.Get("a"); r.Status(e) != Unresponsive || got.Status != Unresponsive || !got.Silent {
		t.Fatalf("silent agent: Status %v, snapshot %+v", r.Status(e), got)
	}
	r.Touch(e) // a control message does not outweigh a silent transport
	if r.Status(e) != Unresponsive {
		t.Fatal("Touch cleared a silent transport")
	}
	c.Advance(OfflineAfter)
	if r.Status(e) != Offline {
		t.Fatal("silence made an offline agent look better")
	}
	r.Touch(e)
	if !r.SetSilent(e, false) || r.Status(e) != Online {
		t.Fatal("an agent heard again is not online")
	}

	if e.Demoted() || !r.Demote(e) || r.Demote(e) || !e.Demoted() {
		t.Fatal("Demote does not report the change alone")
	}
	if got, _ := r.Get("a"); !got.Demoted || got.Status != Online {
		t.Fatalf("demoted agent: %+v", got)
	}
	r.Touch(e)
	if e.Demoted() {
		t.Fatal("Touch did not end the demotion")
	}
}

func TestSessionLimit(t *testing.T) {
	e := &Entry{}
	for range 3 {
		if !e.AcquireSession(3) {
			t.Fatal("under the limit refused")
		}
	}
	if e.AcquireSession(3) {
		t.Fatal("limit + 1 accepted")
	}
	e.ReleaseSession()
	if !e.AcquireSession(3) || e.Sessions() != 3 {
		t.Fatal("a released slot was not reusable")
	}
}

// onlyTen approves the subnets inside 10.0.0.0/8 and no domain, or every
// route once open is set.
type onlyTen struct{ open bool }

func (o *onlyTen) Approve(_ string, r Routes) (accepted, rejected Routes) {
	accepted.Epoch, rejected.Epoch = r.Epoch, r.Epoch
	ten := netip.MustParsePrefix("10.0.0.0/8")
	for _, p := range r.Subnets {
		if o.open || (ten.Contains(p.Addr()) && p.Bits() >= 8) {
			accepted.Subnets = append(accepted.Subnets, p)
		} else {
			rejected.Subnets = append(rejected.Subnets, p)
		}
	}
	if o.open {
		accepted.Domains = r.Domains
	} else {
		rejected.Domains = r.Domains
	}
	return accepted, rejected
}

// Only the approved part of an advertisement is routed; the rest is kept
// as rejected; Reapprove applies a changed approval to the live routes.
func TestApproverSplitsAdvertisements(t *testing.T) {
	r := New(nil)
	ap := &onlyTen{}
	r.SetApprover(ap)
	var changes []Change
	r.Watch(func(c Change) { changes = append(changes, c) })
	e := &Entry{AgentID: "a", Conn: &fakeConn{}}
	r.Register(e)
	subnets := []netip.Prefix{netip.MustParsePrefix("10.1.0.0/16"), netip.MustParsePrefix("0.0.0.0/0")}
	domains := []dataplane.DomainRoute{{Name: "com"}}
	adv := r.Apply(e, 1, subnets, domains)
	if !adv.Replaced || adv.Draining {
		t.Fatalf("advertisement %+v", adv)
	}
	if len(adv.Accepted.Subnets) != 1 || adv.Accepted.Subnets[0] != subnets[0] || len(adv.Accepted.Domains) != 0 {
		t.Fatalf("accepted %+v", adv.Accepted)
	}
	if len(adv.Rejected.Subnets) != 1 || adv.Rejected.Subnets[0] != subnets[1] || len(adv.Rejected.Domains) != 1 {
		t.Fatalf("rejected %+v", adv.Rejected)
	}
	if c := changes[len(changes)-1]; len(c.Routes.Subnets) != 1 || len(c.Routes.Domains) != 0 {
		t.Fatalf("watchers saw %+v, want the accepted part", c.Routes)
	}
	snap, _ := r.Get("a")
	if len(snap.Routes.Subnets) != 1 || len(snap.Rejected.Subnets) != 1 || !snap.Advertised {
		t.Fatalf("snapshot %+v", snap)
	}

	n := len(changes)
	if r.Reapprove("a") || len(changes) != n {
		t.Fatal("Reapprove without a change of approval changed something")
	}
	ap.open = true
	if !r.Reapprove("a") || len(changes) != n+1 {
		t.Fatal("Reapprove did not apply the wider approval")
	}
	if snap, _ := r.Get("a"); len(snap.Routes.Subnets) != 2 || len(snap.Routes.Domains) != 1 || len(snap.Rejected.Subnets)+len(snap.Rejected.Domains) != 0 {
		t.Fatalf("after Reapprove: %+v", snap)
	}
	if r.Reapprove("nobody") {
		t.Fatal("Reapprove of an unknown agent")
	}
}

// An empty advertisement after routes marks the agent draining; the first
// advertisement of a connection never does.
func TestDrainingMark(t *testing.T) {
	r := New(nil)
	e := &Entry{AgentID: "a", Conn: &fakeConn{}}
	r.Register(e)
	p := []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")}
	if adv := r.Apply(e, 1, nil, nil); !adv.Replaced || adv.Draining {
		t.Fatalf("first, empty advertisement: %+v", adv)
	}
	if !r.WouldReplace(e, 2) || r.WouldReplace(e, 1) {
		t.Fatal("WouldReplace disagrees with the epoch rules")
	}
	if adv := r.Apply(e, 2, p, nil); adv.Draining {
		t.Fatal("draining with routes")
	}
	if adv := r.Apply(e, 3, nil, nil); !adv.Draining {
		t.Fatal("withdrawing every route is not draining")
	}
	if adv := r.Apply(e, 4, nil, nil); !adv.Draining {
		t.Fatal("a second empty advertisement ended the drain")
	}
	if snap, _ := r.Get("a"); !snap.Draining {
		t.Fatal("snapshot not draining")
	}
	if adv := r.Apply(e, 5, p, nil); adv.Draining {
		t.Fatal("routes again, still draining")
	}
}
