//go:build !linux

package e2e

import "testing"

// TestNetns needs Linux network namespaces; see netns_linux_test.go.
func TestNetns(t *testing.T) {
	t.Skip("netns suite: needs Linux network namespaces")
}
