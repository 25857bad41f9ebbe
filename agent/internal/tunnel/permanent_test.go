package tunnel

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/outposthq/outpost/dataplane"
)

// fastRetry is e.config() with short reconnect delays.
func (e *env) fastRetry() Config {
	cfg := e.config()
	cfg.BackoffMin, cfg.BackoffMax = 10*time.Millisecond, 50*time.Millisecond
	return cfg
}

// checkPermanent checks that err is a *PermanentError wrapping want whose
// text tells to enroll again.
func checkPermanent(t *testing.T, err, want error, action string) {
	t.Helper()
	var pe *PermanentError
	if !errors.Is(err, ErrPermanent) || !errors.As(err, &pe) || !errors.Is(err, want) {
		t.Fatalf("Run: %v (%T), want a *PermanentError wrapping %v", err, err, want)
	}
	if !strings.Contains(err.Error(), action) {
		t.Fatalf("Run: %q does not say %q", err, action)
	}
}

// An agent deleted at the gateway (closed with "agent-deleted", then
// refused with "agent-not-accepted") stops, saying to enroll it again.
func TestDeletedAgentStops(t *testing.T) {
	e := newEnv(t)
	a := start(t, e.fastRetry())
	c := e.gw.nextConn(t)
	expect[*dataplane.RouteAdvertise](t, c)
	c.q.CloseWithError(0, string(dataplane.CloseAgentDeleted))
	c = e.gw.nextConn(t)
	c.q.CloseWithError(0, string(dataplane.CloseAgentNotAccepted))
	checkPermanent(t, a.exit(t), errAgentDeleted, "outpost agent enroll --config-dir "+e.dir)
	if !e.logs.Contains("retrying once") {
		t.Error("the first refusal was not logged as such")
	}
	e.gw.noConn(t, 200*time.Millisecond)
}

// Two refusals in a row stop the agent; a refusal followed by anything else
// does not.
func TestRefusalMustBeConfirmed(t *testing.T) {
	e := newEnv(t)
	a := start(t, e.fastRetry())
	for _, reason := range []dataplane.CloseReason{
		dataplane.CloseAgentNotAccepted,
		dataplane.CloseGatewayUnavailable, // the gateway's store did not answer: not a refusal
		dataplane.CloseAgentNotAccepted,
		dataplane.CloseGatewayFull,
		dataplane.CloseAgentDeleted,
		dataplane.CloseConnectionSuperseded,
	} {
		c := e.gw.nextConn(t)
		expect[*dataplane.RouteAdvertise](t, c)
		c.q.CloseWithError(0, string(reason))
	}
	c := e.gw.nextConn(t)
	expect[*dataplane.RouteAdvertise](t, c)
	a.running(t)
	c.q.CloseWithError(0, string(dataplane.CloseAgentNotAccepted))
	c = e.gw.nextConn(t)
	c.q.CloseWithError(0, string(dataplane.CloseAgentNotAccepted))
	checkPermanent(t, a.exit(t), errNotAccepted, "enroll the agent again")
}

// A config directory that cannot be used fails Run at once, before any
// dial, with a *PermanentError saying what to fix.
func TestStartErrors(t *testing.T) {
	for _, tc := range []struct {
		name   string
		breaks func(e *env)
		want   string // in the error
	}{
		{"not enrolled", func(e *env) { os.Remove(filepath.Join(e.dir, "agent.json")) }, "enroll it first"},
		{"corrupt agent.json", func(e *env) { os.WriteFile(filepath.Join(e.dir, "agent.json"), []byte(`{"Tunnel": {`), 0o600) }, "agent.json, or enroll the agent again"},
		{"unknown field", func(e *env) {
			os.WriteFile(filepath.Join(e.dir, "agent.json"), []byte(`{"Tunnel": {"Enabeld": true}}`), 0o600)
		}, "unknown field"},
		{"key missing", func(e *env) { os.Remove(filepath.Join(e.dir, "certs/agent.key")) }, "agent.key"},
		{"certificate unreadable", func(e *env) { os.WriteFile(filepath.Join(e.dir, "certs/agent.pem"), []byte("junk"), 0o600) }, "restore the file"},
		{"CA missing", func(e *env) { os.Remove(filepath.Join(e.dir, "certs/gateway-ca.pem")) }, "gateway CA"},
		{"disabled", func(e *env) { e.tunnel.Enabled = false; e.saveConfig(t) }, "Tunnel.Enabled"},
		{"bad subnet", func(e *env) { e.tunnel.AdvertiseSubnets = []string{"10.0.0.0/33"}; e.saveConfig(t) }, "AdvertiseSubnets"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t)
			tc.breaks(e)
			a, err := New(e.config())
			if err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
			defer cancel()
			err = a.Run(ctx)
			if !errors.Is(err, ErrPermanent) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Run: %v, want a permanent error saying %q", err, tc.want)
			}
			if tc.name == "not enrolled" && !errors.Is(err, ErrNotEnrolled) {
				t.Fatalf("Run: %v, want ErrNotEnrolled", err)
			}
			e.gw.noConn(t, 50*time.Millisecond)
		})
	}
}

// A key that disappears while the agent runs stops it at the next
// reconnect, once a second attempt confirms it.
func TestIdentityLostWhileRunning(t *testing.T) {
	e := newEnv(t)
	a := start(t, e.fastRetry())
	c := e.gw.nextConn(t)
	expect[*dataplane.RouteAdvertise](t, c)
	if err := os.Remove(filepath.Join(e.dir, "certs/agent.key")); err != nil {
		t.Fatal(err)
	}
	c.q.CloseWithError(0, string(dataplane.CloseShutdown))
	checkPermanent(t, a.exit(t), os.ErrNotExist, "restore the file from a backup, or enroll the agent again")
}

// A valid config change (SIGHUP) still takes effect; a broken one keeps the
// live routes and the agent running.
func TestReloadBrokenConfigKeepsRunning(t *testing.T) {
	e := newEnv(t)
	a := start(t, e.config())
	c := e.gw.nextConn(t)
	first := expect[*dataplane.RouteAdvertise](t, c)
	if err := os.WriteFile(filepath.Join(e.dir, "agent.json"), []byte("{"), 0o600); err != nil {
		t.Fatal(err)
	}
	a.Reload()
	waitFor(t, "the failed reload to be logged", func() bool { return e.logs.Contains("config reload failed") })
	a.running(t)
	e.tunnel.AdvertiseSubnets = []string{"192.168.9.0/24"}
	e.saveConfig(t)
	a.Reload()
	if adv := expect[*dataplane.RouteAdvertise](t, c); adv.Epoch != first.Epoch+1 {
		t.Fatalf("after a valid reload: epoch %d, want %d", adv.Epoch, first.Epoch+1)
	}
}
