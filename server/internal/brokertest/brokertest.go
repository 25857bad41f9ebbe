// Package brokertest helps test the session broker and what stands around
// it — the client entry, the RouteResolve service — on loopback: a broker
// with no agents that dials its targets itself, a session token issuer with
// a fresh key, and loopback TCP targets. It is a test kit: import it from
// _test.go files only.
package brokertest

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"net"
	"net/netip"
	"sync"
	"testing"

	"github.com/outposthq/outpost/dataplane"
	"github.com/outposthq/outpost/internal/testlog"
	"github.com/outposthq/outpost/reach"
	"github.com/outposthq/outpost/server/internal/broker"
	"github.com/outposthq/outpost/server/internal/registry"
	"github.com/outposthq/outpost/server/internal/routing"
	"github.com/outposthq/outpost/server/internal/store"
	"github.com/outposthq/outpost/server/internal/token"
	"github.com/outposthq/outpost/server/internal/tunnel"
)

// Direct returns a broker with no agents that connects to loopback targets
// itself (direct connections allowed to 127.0.0.0/8, named explicitly),
// recording sessions with audit (nil: nowhere) and logging to t.
func Direct(t testing.TB, audit broker.Auditor) *broker.Broker {
	t.Helper()
	if audit == nil {
		audit = discard{}
	}
	reg := registry.New(nil)
	b, err := broker.New(broker.Config{Registry: reg, Router: routing.New(reg), Tunnel: noTunnel{}, Audit: audit,
		Direct: reach.Compile(reach.Routes{Subnets: []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}}),
		Logger: testlog.Logger(t, "broker")})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// Issuer returns a token issuer signing with a fresh P-256 key, on the real
// clock.
func Issuer(t testing.TB) *token.Issuer {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	iss, err := token.NewIssuer(key, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	return iss
}

// Target listens on 127.0.0.1, serves each connection with serve (which
// closes it) in a goroutine of its own until the test ends, and returns its
// address.
func Target(t testing.TB, serve func(net.Conn)) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	t.Cleanup(func() { ln.Close(); wg.Wait() })
	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Go(func() { serve(c) })
		}
	})
	return ln.Addr().String()
}

// noTunnel is the tunnel of a gateway with no agents.
type noTunnel struct{}

func (noTunnel) Request(context.Context, string, dataplane.SessionID, string) (*tunnel.Pending, error) {
	return nil, tunnel.ErrRefused
}

// discard is an audit that records nothing.
type discard struct{}

func (discard) Record(store.SessionRecord) {}
