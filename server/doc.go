// Package server is the Outpost gateway: it owns the private CA, the store, the
// management API (gRPC with REST transcoding on one TLS port), health, metrics and
// the OpenAPI document. Its parts live under server/internal; this package wires
// them together behind New, Run and Close.
//
// Naming: a Config configures a long-lived value built by New (or by an
// Open, Dial or LoadOrCreate in the role of New); an Options struct tunes one
// call.
package server
