// Package e2e holds tests that span the gateway and the agent: in-process over
// loopback, as subprocesses of the real binary, and (where root and iproute2
// are available) across network namespaces the tests create.
package e2e
