// Package importrules holds no code: its test enforces the dependency rules of
// DESIGN.md §1 and STYLE.md across the module:
//
//   - the wire codec (dataplane) imports only the standard library; the rest
//     of dataplane only the standard library, quic-go and dataplane itself;
//   - reach imports only the standard library and the wire codec (for the
//     domain-route grammar, itself standard library only);
//   - the client wire formats import only the standard library and their
//     transport library: client/wsstream the WebSocket library,
//     client/muxstream yamux;
//   - leaf helpers under internal/ import no other package of the module;
//   - server and agent never import each other or client (server may use the
//     client wire formats), and only cmd/ imports both server and agent —
//     besides e2e/ and bench/, which compose the real gateway and agent and
//     may use only their public faces (Go's internal rule keeps them out of
//     server/internal and agent/internal);
//   - nothing imports cmd/, e2e/ or bench/ from outside them.
package importrules
