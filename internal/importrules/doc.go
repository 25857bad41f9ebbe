// Package importrules holds no code: its test enforces the dependency rules of
// STYLE.md across the module (the wire codec imports only the standard library,
// dataplane imports neither server nor agent, server and agent never import each
// other).
package importrules
