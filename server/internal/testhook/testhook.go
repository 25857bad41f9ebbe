// Package testhook lets server/servertest reach a running gateway's agent
// tunnel without the server package exporting it. The server package fills
// the hook at init; nothing but servertest reads it.
package testhook

import (
	"crypto/ecdsa"

	"github.com/outposthq/outpost/server/internal/tunnel"
)

// GatewayTunnel returns the agent tunnel of a *server.Gateway passed as any.
// It is set once, at init of package server, and never changed after.
var GatewayTunnel func(gateway any) *tunnel.Server

// GatewayCAKey returns the CA private key of a *server.Gateway passed as
// any, whichever store holds it. Set once, at init of package server.
var GatewayCAKey func(gateway any) *ecdsa.PrivateKey
