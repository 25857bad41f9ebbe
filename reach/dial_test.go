package reach

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"os"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"

	"github.com/outposthq/outpost/dataplane"
	"github.com/outposthq/outpost/internal/testtarget"
)

// TestGuardControl checks the Control hook on its own: it is what stops a
// name that resolves (or rebinds) to a forbidden address.
func TestGuardControl(t *testing.T) {
	g := &guard{table: Compile(Routes{Subnets: prefixes(t, "10.0.0.0/8")})}
	if err := g.check(t.Context(), "tcp4", "10.1.2.3:22", nil); err != nil {
		t.Fatalf("allowed address refused: %v", err)
	}
	if g.allRefused() != nil {
		t.Fatal("allRefused after an allowed address")
	}
	for _, addr := range []string{"127.0.0.1:22", "192.0.2.1:22", "[::1]:22", "[2001:db8::1]:22", "nonsense"} {
		if err := g.check(t.Context(), "tcp", addr, nil); err == nil {
			t.Errorf("check(%s) allowed", addr)
		}
	}

	g = &guard{table: Compile(Routes{})}
	for _, addr := range []string{"192.0.2.1:22", "198.51.100.1:22"} {
		_ = g.check(t.Context(), "tcp4", addr, nil)
	}
	if got, want := nameRefusal("db.other.test", g.allRefused()), "db.other.test resolves only to addresses outside advertised subnets"; got != want {
		t.Errorf("reason %q, want %q", got, want)
	}
	_ = g.check(t.Context(), "tcp4", "127.0.0.1:22", nil)
	if got, want := nameRefusal("db.other.test", g.allRefused()), "db.other.test resolves only to refused addresses: 127.0.0.1 is loopback and not explicitly advertised"; got != want {
		t.Errorf("reason %q, want %q", got, want)
	}
	if !strings.Contains(g.refused[0].Error(), "192.0.2.1:22") {
		t.Errorf("refusal %q does not name the address", g.refused[0])
	}
}

// TestGuardReason checks the reason chosen for a failed dial from what the
// Control hook saw and the error the dialer returned.
func TestGuardReason(t *testing.T) {
	name := dataplane.Target{Name: "db.other.test", Port: 22}
	ip := dataplane.Target{Addr: netip.MustParseAddr("10.0.0.9"), Port: 22}
	refusedOp := func(g *guard, addr string) error {
		err := g.check(t.Context(), "tcp4", addr, nil)
		return &net.OpError{Op: "dial", Net: "tcp", Addr: net.TCPAddrFromAddrPort(netip.MustParseAddrPort(addr)), Err: err}
	}
	connRefused := func(addr string) error {
		return &net.OpError{Op: "dial", Net: "tcp", Addr: net.TCPAddrFromAddrPort(netip.MustParseAddrPort(addr)),
			Err: os.NewSyscallError("connect", syscall.ECONNREFUSED)}
	}

	t.Run("every address refused", func(t *testing.T) {
		g := &guard{table: Compile(Routes{})}
		err := refusedOp(g, "10.0.0.9:22")
		if got, want := g.reason(ip, err), "target 10.0.0.9:22 is not in advertised subnets"; got != want {
			t.Errorf("IP target: %q, want %q", got, want)
		}
		if got, want := g.reason(name, err), "db.other.test resolves only to addresses outside advertised subnets"; got != want {
			t.Errorf("name target: %q, want %q", got, want)
		}
	})
	t.Run("refusal first, allowed address failed", func(t *testing.T) {
		g := &guard{table: Compile(Routes{Subnets: prefixes(t, "10.1.0.0/16")})}
		err := refusedOp(g, "10.0.0.9:22")
		_ = g.check(t.Context(), "tcp4", "10.1.0.1:22", nil)
		_ = g.check(t.Context(), "tcp4", "10.1.0.2:22", nil)
		if got, want := g.reason(name, err), "dial db.other.test:22: could not reach 10.1.0.1, 10.1.0.2; its other addresses are refused by the routes"; got != want {
			t.Errorf("%q, want %q", got, want)
		}
	})
	t.Run("allowed address failed first", func(t *testing.T) {
		g := &guard{table: Compile(Routes{Subnets: prefixes(t, "10.1.0.0/16")})}
		_ = g.check(t.Context(), "tcp4", "10.1.0.1:22", nil)
		_ = refusedOp(g, "10.0.0.9:22")
		if got, want := g.reason(name, connRefused("10.1.0.1:22")), "dial 10.1.0.1:22: connection refused"; got != want {
			t.Errorf("%q, want %q", got, want)
		}
	})
	t.Run("resolution failed", func(t *testing.T) {
		g := &guard{table: Compile(Routes{})}
		err := &net.OpError{Op: "dial", Net: "tcp", Err: &net.DNSError{Err: "no such host", Name: "db.other.test", IsNotFound: true}}
		if got, want := g.reason(name, err), "cannot resolve db.other.test: no such host"; got != want {
			t.Errorf("%q, want %q", got, want)
		}
	})
	t.Run("timeout", func(t *testing.T) {
		g := &guard{table: Compile(Routes{Subnets: prefixes(t, "10.0.0.0/8")})}
		_ = g.check(t.Context(), "tcp4", "10.0.0.9:22", nil)
		err := &net.OpError{Op: "dial", Net: "tcp", Addr: net.TCPAddrFromAddrPort(netip.MustParseAddrPort("10.0.0.9:22")), Err: os.ErrDeadlineExceeded}
		if got, want := g.reason(ip, err), "dial 10.0.0.9:22: i/o timeout"; got != want {
			t.Errorf("%q, want %q", got, want)
		}
	})
}

// errSuppressed is what the tests' Control hook returns to stop an attempt
// the table allowed.
var errSuppressed = errors.New("test: connect suppressed")

// hostsOnly returns a resolver that answers from /etc/hosts only: its DNS
// server cannot be reached.
func hostsOnly() *net.Resolver {
	return &net.Resolver{PreferGo: true, Dial: func(context.Context, string, string) (net.Conn, error) {
		return nil, errors.New("test: no DNS")
	}}
}

// target parses s as a ConnectRequest target.
func target(t *testing.T, s string) dataplane.Target {
	t.Helper()
	tg, err := dataplane.ParseTarget(s)
	if err != nil {
		t.Fatal(err)
	}
	return tg
}

// TestDial dials through the guard, to 127.0.0.1 and ::1 only.
func TestDial(t *testing.T) {
	ln := testtarget.Listen(t, "127.0.0.1:0", testtarget.Sink(nil))
	port := strconv.Itoa(int(ln.Port()))
	closed := testtarget.ClosedAddr(t)
	loopback := Routes{Subnets: prefixes(t, "127.0.0.0/8")}
	tests := []struct {
		name    string
		routes  *Table // nil: no table at all
		target  string
		control bool   // install a Control hook that suppresses every attempt
		reason  string // "" for a connection to ln
		pattern string // a regexp for the reason instead, when it is not fixed
		refused bool   // the DialError's Refused
	}{
		{name: "IP allowed", routes: Compile(loopback), target: ln.String()},
		{name: "IP explicit /32", routes: Compile(Routes{Subnets: prefixes(t, "127.0.0.1/32")}), target: ln.String()},
		{name: "IP refused", routes: Compile(Routes{Subnets: prefixes(t, "10.0.0.0/8", "0.0.0.0/0")}), target: ln.String(),
			reason: "target " + ln.String() + " is loopback and not explicitly advertised", refused: true},
		{name: "IPv6 loopback refused", routes: Compile(Routes{Subnets: prefixes(t, "0.0.0.0/0", "127.0.0.0/8")}), target: "[::1]:" + port,
			reason: "target [::1]:" + port + " is loopback and not explicitly advertised", refused: true},
		{name: "no table", target: ln.String(),
			reason: "target " + ln.String() + " is loopback and not explicitly advertised", refused: true},
		{name: "connection refused", routes: Compile(loopback), target: closed.String(),
			reason: "dial " + closed.String() + ": connection refused"},
		{name: "control stops an allowed address", routes: Compile(loopback), target: ln.String(), control: true,
			reason: "dial " + ln.String() + ": " + errSuppressed.Error()},
		{name: "name covered by a domain, loopback explicit", routes: Compile(Routes{Subnets: prefixes(t, "127.0.0.0/8"), Domains: []string{"localhost"}}), target: "localhost:" + port},
		{name: "name inside subnets", routes: Compile(loopback), target: "LOCALHOST:" + port},
		{name: "name covered by a domain, loopback not explicit", routes: Compile(Routes{Domains: []string{"localhost"}}), target: "localhost:" + port,
			pattern: `^localhost resolves only to refused addresses: (127\.0\.0\.1|::1) is loopback and not explicitly advertised$`, refused: true},
		{name: "name outside subnets", routes: Compile(Routes{Subnets: prefixes(t, "10.0.0.0/8")}), target: "localhost:" + port,
			pattern: `^localhost resolves only to refused addresses: (127\.0\.0\.1|::1) is loopback and not explicitly advertised$`, refused: true},
		{name: "name not resolved", routes: Compile(Routes{Domains: []string{"test"}}), target: "nowhere.test:" + port,
			pattern: `^cannot resolve nowhere\.test: `},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var (
				mu    sync.Mutex
				dials []string
			)
			d := &Dialer{Resolver: hostsOnly(), Control: func(_, address string, _ syscall.RawConn) error {
				mu.Lock()
				defer mu.Unlock()
				dials = append(dials, address)
				if tc.control {
					return errSuppressed
				}
				return nil
			}}
			tg := target(t, tc.target)
			c, err := d.Dial(t.Context(), tc.routes, tg)
			if tc.reason == "" && tc.pattern == "" {
				if err != nil {
					t.Fatalf("Dial: %v", err)
				}
				defer c.Close()
				if got := c.RemoteAddr().(*net.TCPAddr).AddrPort(); got != ln {
					t.Fatalf("connected to %s, want %s", got, ln)
				}
				return
			}
			if c != nil {
				c.Close()
				t.Fatal("Dial returned a connection")
			}
			var de *DialError
			if !errors.As(err, &de) {
				t.Fatalf("Dial: %T %v, want a *DialError", err, err)
			}
			if tc.pattern != "" && !regexp.MustCompile(tc.pattern).MatchString(de.Reason) {
				t.Fatalf("reason %q, want a match of %s", de.Reason, tc.pattern)
			}
			if tc.pattern == "" && de.Reason != tc.reason {
				t.Fatalf("reason %q, want %q", de.Reason, tc.reason)
			}
			if de.Error() != de.Reason || de.Refused != tc.refused {
				t.Fatalf("Error() %q, Refused %v; want the reason, Refused %v", de.Error(), de.Refused, tc.refused)
			}
			mu.Lock()
			defer mu.Unlock()
			for _, a := range dials {
				if tc.routes == nil {
					t.Errorf("Control ran for %s without a table", a)
					continue
				}
				domain := tg.IsName() && tc.routes.MatchDomain(tg.Name)
				if tc.routes.Check(netip.MustParseAddrPort(a), domain) != nil {
					t.Errorf("Control ran for %s, which the table refuses", a)
				}
			}
			if de.Refused && len(dials) != 0 {
				t.Errorf("refused, yet Control ran for %v", dials)
			}
		})
	}
}

// TestDialCanceled: an abandoned dial's error wraps context.Canceled.
func TestDialCanceled(t *testing.T) {
	ln := testtarget.Listen(t, "127.0.0.1:0", testtarget.Sink(nil))
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	_, err := (&Dialer{}).Dial(ctx, Compile(Routes{Subnets: prefixes(t, "127.0.0.0/8")}), target(t, ln.String()))
	var de *DialError
	if !errors.As(err, &de) || de.Refused || !errors.Is(err, context.Canceled) {
		t.Fatalf("Dial with a canceled context: %v, want a *DialError wrapping context.Canceled", err)
	}
}
